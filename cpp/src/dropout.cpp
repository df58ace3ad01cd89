// Inverted dropout with Philox4x32-10 masks. Math, mask format and references:
// deepoptim/dropout.hpp; the NumPy twin python/deepoptim/reference/dropout.py.
//
// Each 4096-element block first fills a stack buffer with the 16-bit draws of its
// elements (one Philox call per 8 elements; the group loop vectorizes: every group is
// independent), then applies them. Blocks are multiples of 8 elements, so no mask byte
// is shared by two threads.
#include "deepoptim/dropout.hpp"

#include <algorithm>
#include <cmath>

#include "deepoptim/dispatch.hpp"
#include "deepoptim/parallel.hpp"
#include "deepoptim/philox.hpp"

namespace deepoptim::dropout {
namespace {

static_assert(parallel::kBlock % 8 == 0, "mask bytes must not straddle blocks");
using philox::fill_draws;

struct Coef {
  std::uint32_t threshold;  // up to 2^16 inclusive
  double scale;  // 2^16 / (2^16 - threshold): 1 / the realized keep rate, rounded to T by the users
};

template <class T>
DEEPOPTIM_INLINE void forward_block(const ForwardArgs<T>& a, const Coef& c, std::int64_t b,
                                    std::int64_t e) {
  alignas(64) std::uint16_t draws[parallel::kBlock + 16];
  const std::uint64_t j0 = a.offset + std::uint64_t(b);
  fill_draws(draws, j0, std::uint64_t(e - b), a.seed);
  const std::uint16_t* w = draws + (j0 & 7);
  const T scale = T(c.scale);
  const T* __restrict x = a.x + b;
  T* __restrict y = a.y + b;
  const std::int64_t n = e - b;
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) y[i] = std::uint32_t(w[i]) >= c.threshold ? x[i] * scale : T(0);
  if (a.mask) {
    std::uint8_t* __restrict m = a.mask + b / 8;
    const std::int64_t full = n / 8;
    const std::uint32_t thr = c.threshold;
#pragma omp simd
    for (std::int64_t k = 0; k < full; ++k) {
      unsigned byte = 0;
      for (int bit = 0; bit < 8; ++bit) byte |= unsigned(std::uint32_t(w[8 * k + bit]) >= thr) << bit;
      m[k] = std::uint8_t(byte);
    }
    if (n > 8 * full) {
      unsigned byte = 0;
      for (std::int64_t i = 8 * full; i < n; ++i) byte |= unsigned(std::uint32_t(w[i]) >= thr) << (i - 8 * full);
      m[full] = std::uint8_t(byte);
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
    // One byte, eight elements: the inner loop is a fixed 8-wide vector operation.
    const std::uint8_t* __restrict m = a.mask + b / 8;
    const std::int64_t full = n / 8;
    for (std::int64_t k = 0; k < full; ++k) {
      const unsigned byte = m[k];
#pragma omp simd
      for (int bit = 0; bit < 8; ++bit) dx[8 * k + bit] = ((byte >> bit) & 1u) ? dy[8 * k + bit] * scale : T(0);
    }
    for (std::int64_t i = 8 * full; i < n; ++i) dx[i] = ((m[i >> 3] >> (i & 7)) & 1) ? dy[i] * scale : T(0);
    return;
  }
  alignas(64) std::uint16_t draws[parallel::kBlock + 16];
  const std::uint64_t j0 = a.offset + std::uint64_t(b);
  fill_draws(draws, j0, std::uint64_t(n), a.seed);
  const std::uint16_t* w = draws + (j0 & 7);
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) dx[i] = std::uint32_t(w[i]) >= c.threshold ? dy[i] * scale : T(0);
}

#define DEEPOPTIM_FORWARD_BLK_CLONES(T) \
  DEEPOPTIM_CLONES void forward_blk(const ForwardArgs<T>& a, const Coef& c, std::int64_t b, std::int64_t e) { forward_block(a, c, b, e); }
DEEPOPTIM_FOR_FLOATS(DEEPOPTIM_FORWARD_BLK_CLONES)
#undef DEEPOPTIM_FORWARD_BLK_CLONES
#define DEEPOPTIM_BACKWARD_BLK_CLONES(T) \
  DEEPOPTIM_CLONES void backward_blk(const BackwardArgs<T>& a, const Coef& c, std::int64_t b, std::int64_t e) { backward_block(a, c, b, e); }
DEEPOPTIM_FOR_FLOATS(DEEPOPTIM_BACKWARD_BLK_CLONES)
#undef DEEPOPTIM_BACKWARD_BLK_CLONES

// Scaling by the keep rate the 16-bit draws realize, not by the 1 - p asked for, keeps
// the expectation exact: E[y] = x for every p < 1.
Coef coef(double p) {
  const std::uint64_t t = keep_threshold(p);
  return {std::uint32_t(t), t < 65536 ? 65536.0 / double(65536 - t) : 0.0};
}

}  // namespace

void philox4x32_10(const std::uint32_t counter[4], const std::uint32_t key[2], std::uint32_t out[4]) {
  std::uint32_t c0 = counter[0], c1 = counter[1], c2 = counter[2], c3 = counter[3];
  philox::rounds(c0, c1, c2, c3, key[0], key[1]);
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

std::uint64_t keep_threshold(double p) {
  if (p >= 1.0) return 65536;
  const double t = std::floor(p * 65536.0 + 0.5);  // nearest; p < 1 always keeps some
  return t <= 0.0 ? 0 : (t >= 65535.0 ? 65535 : std::uint64_t(t));
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
