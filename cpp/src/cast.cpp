#include "deepoptim/cast.hpp"

#include <cstring>

#include "deepoptim/lowp.hpp"
#include "deepoptim/parallel.hpp"

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

}  // namespace deepoptim::cast
