// Widening and rounding of chunks for optimizer steps on low-precision storage
// (deepoptim/mixed.hpp). Each loop is one `omp simd` loop over the integer conversions
// of lowp.hpp, cloned per ISA like the kernels.
#include "deepoptim/mixed.hpp"

#include "deepoptim/dispatch.hpp"
#include "deepoptim/lowp.hpp"
#include "deepoptim/philox.hpp"
#include "deepoptim/q8code.hpp"

#include <limits>

namespace deepoptim::lowp {
namespace {

DEEPOPTIM_CLONES void widen_bf16(const bfloat16* __restrict s, float* __restrict d, std::int64_t n) {
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) d[i] = to_float(s[i]);
}

DEEPOPTIM_CLONES void widen_f16(const float16* __restrict s, float* __restrict d, std::int64_t n) {
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) d[i] = to_float(s[i]);
}

DEEPOPTIM_CLONES void narrow_bf16(const float* __restrict s, bfloat16* __restrict d, std::int64_t n) {
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) d[i] = to_bfloat16(s[i]);
}

DEEPOPTIM_CLONES void narrow_f16(const float* __restrict s, float16* __restrict d, std::int64_t n) {
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) d[i] = to_float16(s[i]);
}

DEEPOPTIM_CLONES void narrow_bf16_stochastic(const float* __restrict s, bfloat16* __restrict d, std::int64_t n,
                                             std::uint64_t seed, std::uint64_t stream, std::uint64_t j0) {
  alignas(64) std::uint16_t draws[kChunk + 16];
  philox::fill_draws(draws, j0, std::uint64_t(n), seed, stream);
  const std::uint16_t* r = draws + (j0 & 7u);
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) {
    const std::uint32_t u = bits_of(s[i]);
    const bool nan = (u & 0x7fffffffu) > 0x7f800000u;
    // Infinities stay infinite: their low bits are 0 and a draw < 2**16 cannot carry.
    // A finite value may round up to inf only from above the largest bfloat16, as RNE would.
    d[i].bits = std::uint16_t(nan ? (((u >> 16) & 0x8000u) | 0x7fc0u) : (u + r[i]) >> 16);
  }
}

// ------------------------------------------------------------------ 8-bit state
template <bool SIGNED>
DEEPOPTIM_INLINE void dequantize8_impl(const std::uint8_t* __restrict q, float absmax, float* __restrict d,
                                       std::int64_t n) {
  const float* code = SIGNED ? q8::kSignedCode : q8::kUnsignedCode;
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) d[i] = code[q[i]] * absmax;
}

// The code index of y = x * (1/absmax), top = (|x| == absmax): the bucket of the dynamic
// map it falls in (the twin's _code_index, the same float32 operations in the same order).
template <bool SIGNED>
DEEPOPTIM_INLINE std::int32_t code_index(float y, bool top) {
  const float* T = SIGNED ? q8::kSignedT : q8::kUnsignedT;
  const float* K = SIGNED ? q8::kSignedK : q8::kUnsignedK;
  const float* NMAX = SIGNED ? q8::kSignedNMAX : q8::kUnsignedNMAX;
  const std::int32_t* P = SIGNED ? q8::kSignedP : q8::kUnsignedP;
  const float u = y < 0.0f ? -y : y;
  float lo = T[0], k = K[0], nmax = NMAX[0];
  std::int32_t p = P[0];
  for (int d = 1; d < 7; ++d) {
    const bool ge = u >= T[d];
    lo = ge ? T[d] : lo;
    k = ge ? K[d] : k;
    nmax = ge ? NMAX[d] : nmax;
    p = ge ? P[d] : p;
  }
  float f = (u - lo) * k;
  f = f > 0.0f ? f : 0.0f;  // and a NaN becomes 0 (its index is decided below)
  f = f < nmax ? f : nmax;
  const std::int32_t pos = p + static_cast<std::int32_t>(f);
  const bool small = !(u >= T[0]), one = top, neg = y < 0.0f;
  if constexpr (SIGNED) {
    std::int32_t idx = neg ? 126 - pos : 128 + pos;
    idx = one ? (neg ? 0 : 255) : idx;
    return small ? 127 : idx;
  } else {
    // A positive value below the smallest code keeps that code, never 0 (see the twin).
    const std::int32_t idx = one ? 255 : (small ? 1 : 1 + pos);
    return (neg || !(y > 0.0f)) ? 0 : idx;
  }
}

template <bool SIGNED>
DEEPOPTIM_INLINE void quantize8_impl(const float* __restrict x, std::uint8_t* __restrict q, float* absmax_out,
                                     std::int64_t n) {
  // max |x| is exact in any order; a NaN anywhere makes it NaN. Sixteen lanes, so that
  // the loop vectorizes on every ISA (a bool reduction keeps GCC's scalar).
  constexpr int kL = 16;
  float lane[kL] = {};
  std::int32_t lane_nan[kL] = {};
  const std::int64_t full = n - n % kL;
  for (std::int64_t i = 0; i < full; i += kL) {
#pragma omp simd
    for (int j = 0; j < kL; ++j) {
      const float v = x[i + j];
      const float u = v < 0.0f ? -v : v;
      lane_nan[j] |= (u != u);
      lane[j] = u > lane[j] ? u : lane[j];
    }
  }
  for (std::int64_t i = full; i < n; ++i) {
    const float u = x[i] < 0.0f ? -x[i] : x[i];
    lane_nan[0] |= (u != u);
    lane[0] = u > lane[0] ? u : lane[0];
  }
  float a = 0.0f;
  std::int32_t nan = 0;
  for (int j = 0; j < kL; ++j) {
    a = lane[j] > a ? lane[j] : a;
    nan |= lane_nan[j];
  }
  if (nan) a = std::numeric_limits<float>::quiet_NaN();
  *absmax_out = a;
  if (!(a > 0.0f) || a == std::numeric_limits<float>::infinity()) {
    for (std::int64_t i = 0; i < n; ++i) q[i] = SIGNED ? 127 : 0;
    return;
  }
  const float inv = 1.0f / a;
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    const float u = v < 0.0f ? -v : v;
    q[i] = static_cast<std::uint8_t>(code_index<SIGNED>(v * inv, u >= a));
  }
}

DEEPOPTIM_CLONES void dequantize8_signed(const std::uint8_t* q, float a, float* d, std::int64_t n) {
  dequantize8_impl<true>(q, a, d, n);
}
DEEPOPTIM_CLONES void dequantize8_unsigned(const std::uint8_t* q, float a, float* d, std::int64_t n) {
  dequantize8_impl<false>(q, a, d, n);
}
DEEPOPTIM_CLONES void quantize8_signed(const float* x, std::uint8_t* q, float* a, std::int64_t n) {
  quantize8_impl<true>(x, q, a, n);
}
DEEPOPTIM_CLONES void quantize8_unsigned(const float* x, std::uint8_t* q, float* a, std::int64_t n) {
  quantize8_impl<false>(x, q, a, n);
}

}  // namespace

void dequantize8(bool is_signed, const std::uint8_t* q, float absmax, float* dst, std::int64_t n) {
  if (is_signed) return dequantize8_signed(q, absmax, dst, n);
  return dequantize8_unsigned(q, absmax, dst, n);
}

void quantize8(bool is_signed, const float* src, std::uint8_t* q, float* absmax, std::int64_t n) {
  if (is_signed) return quantize8_signed(src, q, absmax, n);
  return quantize8_unsigned(src, q, absmax, n);
}

void widen(Kind kind, const void* src, float* dst, std::int64_t n) {
  if (kind == Kind::BF16) return widen_bf16(static_cast<const bfloat16*>(src), dst, n);
  return widen_f16(static_cast<const float16*>(src), dst, n);
}

void narrow(Kind kind, const float* src, void* dst, std::int64_t n) {
  if (kind == Kind::BF16) return narrow_bf16(src, static_cast<bfloat16*>(dst), n);
  return narrow_f16(src, static_cast<float16*>(dst), n);
}

void narrow_stochastic(const float* src, void* dst, std::int64_t n, std::uint64_t seed, std::uint64_t stream,
                       std::uint64_t j0) {
  narrow_bf16_stochastic(src, static_cast<bfloat16*>(dst), n, seed, stream, j0);
}

}  // namespace deepoptim::lowp
