// Widening and rounding of chunks for optimizer steps on low-precision storage
// (deepoptim/mixed.hpp). Each loop is one `omp simd` loop over the integer conversions
// of lowp.hpp, cloned per ISA like the kernels.
#include "deepoptim/mixed.hpp"

#include "deepoptim/dispatch.hpp"
#include "deepoptim/lowp.hpp"
#include "deepoptim/philox.hpp"
#include "deepoptim/q8code.hpp"

#include <limits>

// The hand-vectorized 8-bit quantizer runs where the build may use AVX-512: always in the
// run-time-dispatched build (checked on the CPU), in a pinned or native build only when
// that build's ISA has it.
#if defined(__GNUC__) && defined(__x86_64__) && \
    (DEEPOPTIM_HAS_CLONES || defined(__AVX512BW__))
#define DEEPOPTIM_Q8_AVX512 1
#include <immintrin.h>
#else
#define DEEPOPTIM_Q8_AVX512 0
#endif

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

// max |x| of a block (NaN if any element is NaN).
DEEPOPTIM_INLINE float block_absmax(const float* __restrict x, std::int64_t n) {
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
  return a;
}

// The codes of a block whose absmax a is positive and finite.
template <bool SIGNED>
DEEPOPTIM_INLINE void quantize8_body(const float* __restrict x, std::uint8_t* __restrict q, float a, std::int64_t n) {
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
DEEPOPTIM_CLONES float absmax_cloned(const float* x, std::int64_t n) { return block_absmax(x, n); }
DEEPOPTIM_CLONES void quantize8_signed(const float* x, std::uint8_t* q, float a, std::int64_t n) {
  quantize8_body<true>(x, q, a, n);
}
DEEPOPTIM_CLONES void quantize8_unsigned(const float* x, std::uint8_t* q, float a, std::int64_t n) {
  quantize8_body<false>(x, q, a, n);
}

#if DEEPOPTIM_Q8_AVX512
// The same computation as quantize8_body (code_index), written with AVX-512 permutes for
// the per-decade constants where the compiler blends seven-way selects and spills: 0.64
// vs 0.79 ns/element on Zen 4 (cached data, 1 thread). Same float32 operations on every
// element, so the same codes bit for bit (tests: kernel = twin, and the ISA variants'
// digest, whose x86-64 and v3 builds take the portable loop).
// GCC 12's _mm512_permutexvar_ps reads an "undefined" register it then masks off.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
template <bool SIGNED>
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"))) void quantize8_avx512(
    const float* __restrict x, std::uint8_t* __restrict q, float a, std::int64_t n) {
  const float* T = SIGNED ? q8::kSignedT : q8::kUnsignedT;
  const float* K = SIGNED ? q8::kSignedK : q8::kUnsignedK;
  const float* NMAX = SIGNED ? q8::kSignedNMAX : q8::kUnsignedNMAX;
  const std::int32_t* P = SIGNED ? q8::kSignedP : q8::kUnsignedP;
  alignas(64) float t16[16] = {}, k16[16] = {}, n16[16] = {};
  alignas(64) std::int32_t p16[16] = {};
  for (int d = 0; d < 7; ++d) {
    t16[d] = T[d];
    k16[d] = K[d];
    n16[d] = NMAX[d];
    p16[d] = P[d];
  }
  const __m512 tt = _mm512_load_ps(t16), kt = _mm512_load_ps(k16), nt = _mm512_load_ps(n16);
  const __m512i pt = _mm512_load_si512(p16);
  const __m512 inv = _mm512_set1_ps(1.0f / a), av = _mm512_set1_ps(a), zero = _mm512_setzero_ps();
  const __m512 absmask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
  const __m512i one_i = _mm512_set1_epi32(1);
  for (std::int64_t i = 0; i < n; i += 16) {
    const __mmask16 live = n - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - i)) - 1u);
    const __m512 v = _mm512_maskz_loadu_ps(live, x + i);
    const __m512 u = _mm512_and_ps(v, absmask);
    const __m512 y = _mm512_mul_ps(v, inv);
    const __m512 uy = _mm512_and_ps(y, absmask);
    __m512i d = _mm512_setzero_si512();
    for (int k = 1; k < 7; ++k) {
      d = _mm512_mask_add_epi32(d, _mm512_cmp_ps_mask(uy, _mm512_set1_ps(T[k]), _CMP_GE_OQ), d, one_i);
    }
    const __m512 lo = _mm512_permutexvar_ps(d, tt), kk = _mm512_permutexvar_ps(d, kt);
    const __m512 nmax = _mm512_permutexvar_ps(d, nt);
    __m512 f = _mm512_mul_ps(_mm512_sub_ps(uy, lo), kk);
    f = _mm512_max_ps(f, zero);  // f > 0 ? f : 0 (a NaN gives the second operand, 0)
    f = _mm512_min_ps(f, nmax);  // f < nmax ? f : nmax
    const __m512i pos = _mm512_add_epi32(_mm512_cvttps_epi32(f), _mm512_permutexvar_epi32(d, pt));
    const __mmask16 small = _knot_mask16(_mm512_cmp_ps_mask(uy, _mm512_set1_ps(T[0]), _CMP_GE_OQ));
    const __mmask16 top = _mm512_cmp_ps_mask(u, av, _CMP_GE_OQ);
    const __mmask16 neg = _mm512_cmp_ps_mask(y, zero, _CMP_LT_OQ);
    __m512i idx;
    if constexpr (SIGNED) {
      idx = _mm512_add_epi32(pos, _mm512_set1_epi32(128));
      idx = _mm512_mask_sub_epi32(idx, neg, _mm512_set1_epi32(126), pos);
      idx = _mm512_mask_mov_epi32(idx, top, _mm512_mask_mov_epi32(_mm512_set1_epi32(255), neg, _mm512_setzero_si512()));
      idx = _mm512_mask_mov_epi32(idx, small, _mm512_set1_epi32(127));
    } else {
      idx = _mm512_add_epi32(pos, one_i);
      idx = _mm512_mask_mov_epi32(idx, small, one_i);
      idx = _mm512_mask_mov_epi32(idx, top, _mm512_set1_epi32(255));
      const __mmask16 pos_y = _mm512_cmp_ps_mask(y, zero, _CMP_GT_OQ);
      idx = _mm512_mask_mov_epi32(idx, _knot_mask16(pos_y) | neg, _mm512_setzero_si512());
    }
    _mm512_mask_cvtepi32_storeu_epi8(q + i, live, idx);
  }
}

#pragma GCC diagnostic pop

bool use_avx512() {
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  return ok;
}
#endif

}  // namespace

void dequantize8(bool is_signed, const std::uint8_t* q, float absmax, float* dst, std::int64_t n) {
  if (is_signed) return dequantize8_signed(q, absmax, dst, n);
  return dequantize8_unsigned(q, absmax, dst, n);
}

void quantize8(bool is_signed, const float* src, std::uint8_t* q, float* absmax, std::int64_t n) {
  const float a = absmax_cloned(src, n);
  *absmax = a;
  if (!(a > 0.0f) || a == std::numeric_limits<float>::infinity()) {  // zero, NaN or inf: every code 0
    for (std::int64_t i = 0; i < n; ++i) q[i] = is_signed ? 127 : 0;
    return;
  }
#if DEEPOPTIM_Q8_AVX512
  if (use_avx512()) {
    if (is_signed) return quantize8_avx512<true>(src, q, a, n);
    return quantize8_avx512<false>(src, q, a, n);
  }
#endif
  if (is_signed) return quantize8_signed(src, q, a, n);
  return quantize8_unsigned(src, q, a, n);
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
