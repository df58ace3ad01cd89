// Inverted dropout with Philox4x32-10 masks. Math, mask format and references:
// deepoptim/dropout.hpp; the NumPy twin python/deepoptim/reference/dropout.py.
//
// Each 4096-element block first fills a stack buffer with the Philox words of its
// elements (one Philox call per 4 elements; the group loop vectorizes: every group is
// independent), then applies them. Blocks are multiples of 8 elements, so no mask byte
// is shared by two threads.
#include "deepoptim/dropout.hpp"

#include <algorithm>
#include <cmath>

#include "deepoptim/dispatch.hpp"
#include "deepoptim/parallel.hpp"

namespace deepoptim::dropout {
namespace {

constexpr std::uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
constexpr std::uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
static_assert(parallel::kBlock % 8 == 0, "mask bytes must not straddle blocks");

DEEPOPTIM_INLINE void philox(std::uint32_t& c0, std::uint32_t& c1, std::uint32_t& c2,
                             std::uint32_t& c3, std::uint32_t k0, std::uint32_t k1) {
  for (int r = 0; r < 10; ++r) {
    if (r > 0) {
      k0 += kW0;
      k1 += kW1;
    }
    const std::uint64_t p0 = std::uint64_t(kM0) * c0;
    const std::uint64_t p1 = std::uint64_t(kM1) * c2;
    const std::uint32_t n0 = std::uint32_t(p1 >> 32) ^ c1 ^ k0;
    const std::uint32_t n1 = std::uint32_t(p1);
    const std::uint32_t n2 = std::uint32_t(p0 >> 32) ^ c3 ^ k1;
    const std::uint32_t n3 = std::uint32_t(p0);
    c0 = n0;
    c1 = n1;
    c2 = n2;
    c3 = n3;
  }
}

// words[j - 4*g0] for every element j in [j0, j1) of the sequence, g0 = j0 / 4.
DEEPOPTIM_INLINE void fill_words(std::uint32_t* __restrict words, std::uint64_t j0,
                                 std::uint64_t j1, std::uint64_t seed) {
  const std::uint64_t g0 = j0 >> 2, g1 = (j1 + 3) >> 2;
  const std::uint32_t k0 = std::uint32_t(seed), k1 = std::uint32_t(seed >> 32);
  const std::int64_t ng = std::int64_t(g1 - g0);
#pragma omp simd
  for (std::int64_t i = 0; i < ng; ++i) {
    const std::uint64_t g = g0 + std::uint64_t(i);
    std::uint32_t c0 = std::uint32_t(g), c1 = std::uint32_t(g >> 32), c2 = 0, c3 = 0;
    philox(c0, c1, c2, c3, k0, k1);
    words[4 * i + 0] = c0;
    words[4 * i + 1] = c1;
    words[4 * i + 2] = c2;
    words[4 * i + 3] = c3;
  }
}

struct Coef {
  std::uint64_t threshold;
  double scale;  // 1/(1-p) in double, rounded to T by the users
};

template <class T>
DEEPOPTIM_INLINE void forward_block(const ForwardArgs<T>& a, const Coef& c, std::int64_t b,
                                    std::int64_t e) {
  alignas(64) std::uint32_t words[parallel::kBlock + 8];
  const std::uint64_t j0 = a.offset + std::uint64_t(b);
  fill_words(words, j0, j0 + std::uint64_t(e - b), a.seed);
  const std::uint32_t* w = words + (j0 & 3);
  const T scale = T(c.scale);
  const T* __restrict x = a.x + b;
  T* __restrict y = a.y + b;
  const std::int64_t n = e - b;
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) y[i] = std::uint64_t(w[i]) >= c.threshold ? x[i] * scale : T(0);
  if (a.mask) {
    std::uint8_t* __restrict m = a.mask + b / 8;
    const std::int64_t nbytes = (n + 7) / 8;
    for (std::int64_t k = 0; k < nbytes; ++k) {
      std::uint8_t byte = 0;
      const std::int64_t lim = std::min<std::int64_t>(8, n - 8 * k);
      for (std::int64_t bit = 0; bit < lim; ++bit) {
        byte |= std::uint8_t((std::uint64_t(w[8 * k + bit]) >= c.threshold) << bit);
      }
      m[k] = byte;
    }
  }
}

template <class T>
DEEPOPTIM_INLINE void backward_block(const BackwardArgs<T>& a, const Coef& c, std::int64_t b,
                                     std::int64_t e) {
  const T scale = T(c.scale);
  const T* __restrict dy = a.dy + b;
  T* __restrict dx = a.dx + b;
  const std::int64_t n = e - b;
  if (a.mask) {
    const std::uint8_t* __restrict m = a.mask + b / 8;
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) dx[i] = ((m[i >> 3] >> (i & 7)) & 1) ? dy[i] * scale : T(0);
    return;
  }
  alignas(64) std::uint32_t words[parallel::kBlock + 8];
  const std::uint64_t j0 = a.offset + std::uint64_t(b);
  fill_words(words, j0, j0 + std::uint64_t(n), a.seed);
  const std::uint32_t* w = words + (j0 & 3);
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) dx[i] = std::uint64_t(w[i]) >= c.threshold ? dy[i] * scale : T(0);
}

DEEPOPTIM_CLONES void forward_blk(const ForwardArgs<float>& a, const Coef& c, std::int64_t b, std::int64_t e) {
  forward_block(a, c, b, e);
}
DEEPOPTIM_CLONES void forward_blk(const ForwardArgs<double>& a, const Coef& c, std::int64_t b, std::int64_t e) {
  forward_block(a, c, b, e);
}
DEEPOPTIM_CLONES void backward_blk(const BackwardArgs<float>& a, const Coef& c, std::int64_t b, std::int64_t e) {
  backward_block(a, c, b, e);
}
DEEPOPTIM_CLONES void backward_blk(const BackwardArgs<double>& a, const Coef& c, std::int64_t b, std::int64_t e) {
  backward_block(a, c, b, e);
}

Coef coef(double p) { return {keep_threshold(p), p < 1.0 ? 1.0 / (1.0 - p) : 0.0}; }

}  // namespace

void philox4x32_10(const std::uint32_t counter[4], const std::uint32_t key[2], std::uint32_t out[4]) {
  std::uint32_t c0 = counter[0], c1 = counter[1], c2 = counter[2], c3 = counter[3];
  philox(c0, c1, c2, c3, key[0], key[1]);
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

std::uint64_t keep_threshold(double p) {
  const double t = std::floor(p * 4294967296.0);
  return t <= 0.0 ? 0 : (t >= 4294967296.0 ? (std::uint64_t(1) << 32) : std::uint64_t(t));
}

template <class T>
void dropout_forward(const ForwardArgs<T>& a) {
  const Coef c = coef(a.p);
  parallel::for_each_block(
      1, [&](std::int64_t) { return a.n; },
      [&](std::int64_t, std::int64_t b, std::int64_t e) { forward_blk(a, c, b, e); });
}

template <class T>
void dropout_backward(const BackwardArgs<T>& a) {
  const Coef c = coef(a.p);
  parallel::for_each_block(
      1, [&](std::int64_t) { return a.n; },
      [&](std::int64_t, std::int64_t b, std::int64_t e) { backward_blk(a, c, b, e); });
}

template void dropout_forward<float>(const ForwardArgs<float>&);
template void dropout_forward<double>(const ForwardArgs<double>&);
template void dropout_backward<float>(const BackwardArgs<float>&);
template void dropout_backward<double>(const BackwardArgs<double>&);

}  // namespace deepoptim::dropout
