#include "deepoptim/cast.hpp"

#include <cstring>
#include <vector>

#include "deepoptim/lowp.hpp"
#include "deepoptim/parallel.hpp"
#include "deepoptim/philox.hpp"

namespace deepoptim::cast {
namespace {

using lowp::bfloat16;
using lowp::float16;

// Loads widen exactly: to float, or to double from a double.
DEEPOPTIM_INLINE float wide(float x) { return x; }
DEEPOPTIM_INLINE double wide(double x) { return x; }
DEEPOPTIM_INLINE float wide(bfloat16 x) { return lowp::to_float(x); }
DEEPOPTIM_INLINE float wide(float16 x) { return lowp::to_float(x); }

// Stores round once, to nearest even.
template <class D>
struct Narrow;
template <>
struct Narrow<float> {
  static DEEPOPTIM_INLINE float from(float x) { return x; }
  static DEEPOPTIM_INLINE float from(double x) { return float(x); }
};
template <>
struct Narrow<double> {
  static DEEPOPTIM_INLINE double from(float x) { return double(x); }
  static DEEPOPTIM_INLINE double from(double x) { return x; }
};
template <>
struct Narrow<bfloat16> {
  template <class W>
  static DEEPOPTIM_INLINE bfloat16 from(W x) { return lowp::to_bfloat16(x); }
};
template <>
struct Narrow<float16> {
  template <class W>
  static DEEPOPTIM_INLINE float16 from(W x) { return lowp::to_float16(x); }
};

template <class S, class D>
void run(const Tensor* ts, std::int64_t nt) {
  parallel::for_each_block(
      nt, [&](std::int64_t t) { return ts[t].size; },
      [&](std::int64_t t, std::int64_t b, std::int64_t e) {
        const S* __restrict s = static_cast<const S*>(ts[t].src);
        D* __restrict d = static_cast<D*>(ts[t].dst);
#pragma omp simd
        for (std::int64_t i = b; i < e; ++i) d[i] = Narrow<D>::from(wide(s[i]));
      });
}

template <class S>
void from_source(const Tensor* ts, std::int64_t nt, Type to) {
  switch (to) {
    case Type::F32: return run<S, float>(ts, nt);
    case Type::F64: return run<S, double>(ts, nt);
    case Type::BF16: return run<S, bfloat16>(ts, nt);
    case Type::F16: return run<S, float16>(ts, nt);
  }
}

std::size_t item(Type t) { return t == Type::F64 ? 8 : t == Type::F32 ? 4 : 2; }

}  // namespace

void cast(const Tensor* ts, std::int64_t nt, Type from, Type to) {
  if (from == to) {  // a copy: the bits as they are (NaN payloads included)
    parallel::for_each_block(
        nt, [&](std::int64_t t) { return ts[t].size; },
        [&](std::int64_t t, std::int64_t b, std::int64_t e) {
          const std::size_t w = item(from);
          std::memcpy(static_cast<char*>(ts[t].dst) + b * w, static_cast<const char*>(ts[t].src) + b * w,
                      static_cast<std::size_t>(e - b) * w);
        });
    return;
  }
  switch (from) {
    case Type::F32: return from_source<float>(ts, nt, to);
    case Type::F64: return from_source<double>(ts, nt, to);
    case Type::BF16: return from_source<bfloat16>(ts, nt, to);
    case Type::F16: return from_source<float16>(ts, nt, to);
  }
}

void cast_stochastic(const Tensor* ts, std::int64_t nt, std::uint64_t seed, std::uint64_t offset) {
  std::vector<std::uint64_t> start(static_cast<std::size_t>(nt));  // element index of each tensor's first
  std::uint64_t j = offset;
  for (std::int64_t t = 0; t < nt; ++t) {
    start[static_cast<std::size_t>(t)] = j;
    j += static_cast<std::uint64_t>(ts[t].size);
  }
  parallel::for_each_block(
      nt, [&](std::int64_t t) { return ts[t].size; },
      [&](std::int64_t t, std::int64_t b, std::int64_t e) {
        // Draws of elements j0 .. j0 + (e - b) - 1 start at draws[j0 % 8] (group aligned).
        alignas(64) std::uint16_t draws[parallel::kBlock + 16];
        const std::uint64_t j0 = start[static_cast<std::size_t>(t)] + static_cast<std::uint64_t>(b);
        philox::fill_draws(draws, j0, static_cast<std::uint64_t>(e - b), seed);
        const std::uint16_t* r = draws + (j0 & 7u);
        const float* __restrict s = static_cast<const float*>(ts[t].src);
        bfloat16* __restrict d = static_cast<bfloat16*>(ts[t].dst);
#pragma omp simd
        for (std::int64_t i = b; i < e; ++i) {
          const std::uint32_t u = lowp::bits_of(s[i]);
          const std::uint32_t rounded = (u + r[i - b]) >> 16;  // no wrap: NaNs are replaced below
          const bool nan = (u & 0x7fffffffu) > 0x7f800000u;
          d[i].bits = std::uint16_t(nan ? (((u >> 16) & 0x8000u) | 0x7fc0u) : rounded);
        }
      });
}

}  // namespace deepoptim::cast
