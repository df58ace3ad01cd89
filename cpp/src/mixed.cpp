// Widening and rounding of chunks for optimizer steps on low-precision storage
// (deepoptim/mixed.hpp). Each loop is one `omp simd` loop over the integer conversions
// of lowp.hpp, cloned per ISA like the kernels.
#include "deepoptim/mixed.hpp"

#include "deepoptim/dispatch.hpp"
#include "deepoptim/lowp.hpp"
#include "deepoptim/philox.hpp"
#include "deepoptim/q8code.hpp"

#include <limits>

// The hand-vectorized 8-bit quantizer, absmax and dequantizer run where the build may use
// AVX-512: always in the run-time-dispatched build (checked on the CPU: AVX-512 F/BW/DQ/VL,
// and VBMI for the dequantizer), in a pinned or native build only when that build's ISA
// has AVX-512 BW.
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
// GCC 12's AVX-512 intrinsics (permutes, masked loads, reductions) read an "undefined"
// register they then mask off or overwrite.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

// The same computation as quantize8_body (code_index), with AVX-512 permutes for the
// per-decade constants. Same float32 operations on every element, so the same codes bit
// for bit (tests: kernel = twin, and the ISA variants' digest, whose x86-64 and v3 builds
// take the portable loop).
//
// The decade d = #{k >= 1 : |y| >= T[k]} comes from |y|'s binary exponent instead of six
// compares: the thresholds are powers of ten, more than an octave apart, so an octave
// [2^E, 2^(E+1)) lies above some number dlo(E) of them and contains at most one more,
// tnext(E): d = dlo(E) + (|y| >= tnext(E)). A permute indexes a 32-entry table by the
// low five bits of the biased exponent, which are E + 31 for E in [-31, 0] (|y| <= 1
// here); below 2^-31 the index wraps, but such a |y| is under T[0] and its code is
// decided by `small`. An octave without a threshold inside has tnext = NaN, so that
// |y| = inf (1/absmax overflowed: absmax subnormal) stays in the top decade, as there.
// The rest is unchanged. Measured on Zen 4, cached data, 1 thread, with the AVX-512
// absmax below: 0.42 vs 0.65 ns/element for the six compares this replaced.
struct OctaveTables {
  alignas(64) float tnext[32];
  alignas(64) std::int32_t dlo[32];
  alignas(64) float t[16], k[16], nmax[16];
  alignas(64) std::int32_t p[16];
};

template <bool SIGNED>
const OctaveTables& octave_tables() {
  static const OctaveTables tables = [] {
    const float* T = SIGNED ? q8::kSignedT : q8::kUnsignedT;
    const float* K = SIGNED ? q8::kSignedK : q8::kUnsignedK;
    const float* NMAX = SIGNED ? q8::kSignedNMAX : q8::kUnsignedNMAX;
    const std::int32_t* P = SIGNED ? q8::kSignedP : q8::kUnsignedP;
    OctaveTables o{};
    for (int e5 = 0; e5 < 32; ++e5) {
      // 2^(e5 - 31) and 2^(e5 - 30), exactly: biased exponents e5 + 96 and e5 + 97.
      const float lo = float_of(std::uint32_t(e5 + 96) << 23), hi = float_of(std::uint32_t(e5 + 97) << 23);
      o.tnext[e5] = std::numeric_limits<float>::quiet_NaN();
      for (int d = 1; d < 7; ++d) {
        if (T[d] <= lo) ++o.dlo[e5];
        else if (T[d] < hi) o.tnext[e5] = T[d];
      }
    }
    for (int d = 0; d < 7; ++d) {
      o.t[d] = T[d];
      o.k[d] = K[d];
      o.nmax[d] = NMAX[d];
      o.p[d] = P[d];
    }
    return o;
  }();
  return tables;
}

template <bool SIGNED>
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"))) void quantize8_avx512(
    const float* __restrict x, std::uint8_t* __restrict q, float a, std::int64_t n) {
  const OctaveTables& o = octave_tables<SIGNED>();
  const __m512 tn0 = _mm512_load_ps(o.tnext), tn1 = _mm512_load_ps(o.tnext + 16);
  const __m512i dl0 = _mm512_load_si512(o.dlo), dl1 = _mm512_load_si512(o.dlo + 16);
  const __m512 tt = _mm512_load_ps(o.t), kt = _mm512_load_ps(o.k), nt = _mm512_load_ps(o.nmax);
  const __m512i pt = _mm512_load_si512(o.p);
  const __m512 inv = _mm512_set1_ps(1.0f / a), av = _mm512_set1_ps(a), zero = _mm512_setzero_ps();
  const __m512 t0 = _mm512_set1_ps(o.t[0]);
  const __m512i one_i = _mm512_set1_epi32(1), zero_i = _mm512_setzero_si512();
  for (std::int64_t i = 0; i < n; i += 16) {
    const __mmask16 live = n - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - i)) - 1u);
    const __m512 v = _mm512_maskz_loadu_ps(live, x + i);
    const __m512 u = _mm512_abs_ps(v);
    const __m512 y = _mm512_mul_ps(v, inv);
    const __m512 uy = _mm512_abs_ps(y);
    const __m512i e = _mm512_srli_epi32(_mm512_castps_si512(uy), 23);
    const __m512 tn = _mm512_permutex2var_ps(tn0, e, tn1);
    const __m512i dl = _mm512_permutex2var_epi32(dl0, e, dl1);
    const __m512i d = _mm512_mask_add_epi32(dl, _mm512_cmp_ps_mask(uy, tn, _CMP_GE_OQ), dl, one_i);
    const __m512 lo = _mm512_permutexvar_ps(d, tt), kk = _mm512_permutexvar_ps(d, kt);
    const __m512 nmax = _mm512_permutexvar_ps(d, nt);
    __m512 f = _mm512_mul_ps(_mm512_sub_ps(uy, lo), kk);
    f = _mm512_max_ps(f, zero);  // f > 0 ? f : 0 (a NaN gives the second operand, 0)
    f = _mm512_min_ps(f, nmax);  // f < nmax ? f : nmax
    const __m512i pos = _mm512_add_epi32(_mm512_cvttps_epi32(f), _mm512_permutexvar_epi32(d, pt));
    const __mmask16 small = _mm512_cmp_ps_mask(uy, t0, _CMP_NGE_UQ);  // !(|y| >= T[0]), NaN included
    const __mmask16 top = _mm512_cmp_ps_mask(u, av, _CMP_GE_OQ);
    const __mmask16 neg = _mm512_cmp_ps_mask(y, zero, _CMP_LT_OQ);
    __m512i idx;
    if constexpr (SIGNED) {
      idx = _mm512_add_epi32(pos, _mm512_set1_epi32(128));
      idx = _mm512_mask_sub_epi32(idx, neg, _mm512_set1_epi32(126), pos);
      idx = _mm512_mask_mov_epi32(idx, top, _mm512_mask_mov_epi32(_mm512_set1_epi32(255), neg, zero_i));
      idx = _mm512_mask_mov_epi32(idx, small, _mm512_set1_epi32(127));
    } else {
      idx = _mm512_add_epi32(pos, one_i);
      idx = _mm512_mask_mov_epi32(idx, small, one_i);
      idx = _mm512_mask_mov_epi32(idx, top, _mm512_set1_epi32(255));
      const __mmask16 pos_y = _mm512_cmp_ps_mask(y, zero, _CMP_GT_OQ);
      idx = _mm512_mask_mov_epi32(idx, _knot_mask16(pos_y) | neg, zero_i);
    }
    _mm512_mask_cvtepi32_storeu_epi8(q + i, live, idx);
  }
}

// block_absmax with integer maxima of the magnitudes' bits: for floats with the sign
// cleared, integer order is float order, and every NaN is above +inf, so one vpmaxud per
// vector finds max |x| and NaN alike (a NaN is returned as the quiet NaN, as there).
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"))) float absmax_avx512(const float* __restrict x,
                                                                                  std::int64_t n) {
  const __m512i mag = _mm512_set1_epi32(0x7fffffff);
  __m512i m0 = _mm512_setzero_si512(), m1 = _mm512_setzero_si512();
  std::int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    m0 = _mm512_max_epu32(m0, _mm512_and_si512(_mm512_loadu_si512(x + i), mag));
    m1 = _mm512_max_epu32(m1, _mm512_and_si512(_mm512_loadu_si512(x + i + 16), mag));
  }
  for (; i < n; i += 16) {
    const __mmask16 live = n - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - i)) - 1u);
    m0 = _mm512_max_epu32(m0, _mm512_and_si512(_mm512_maskz_loadu_epi32(live, x + i), mag));
  }
  const std::uint32_t b = _mm512_reduce_max_epu32(_mm512_max_epu32(m0, m1));
  return b > 0x7f800000u ? std::numeric_limits<float>::quiet_NaN() : float_of(b);
}

// dequantize8_impl with AVX512-VBMI byte permutes instead of a gather: the code table is
// kept as four 256-byte planes (byte k of every code value), each looked up for 64
// indices at once by two vpermi2b and a blend on the index's top bit; the planes are then
// interleaved into floats by in-lane unpacks. The indices are first permuted (a 4 x 4
// transpose of 4-byte groups, an involution) so that the unpacks' lane order comes out
// as the elements' order. The value is the same code[q] * absmax. Measured on Zen 4,
// cached data, 1 thread: 0.08 vs 0.26 ns/element.
struct CodePlanes {
  alignas(64) std::uint8_t plane[4][256];
  alignas(64) std::uint8_t order[64];
};

template <bool SIGNED>
const CodePlanes& code_planes() {
  static const CodePlanes planes = [] {
    const float* code = SIGNED ? q8::kSignedCode : q8::kUnsignedCode;
    CodePlanes o{};
    for (int i = 0; i < 256; ++i) {
      for (int k = 0; k < 4; ++k) o.plane[k][i] = static_cast<std::uint8_t>(bits_of(code[i]) >> (8 * k));
    }
    for (int lane = 0; lane < 4; ++lane) {
      for (int r = 0; r < 4; ++r) {
        for (int k = 0; k < 4; ++k) o.order[16 * lane + 4 * r + k] = static_cast<std::uint8_t>(16 * r + 4 * lane + k);
      }
    }
    return o;
  }();
  return planes;
}

template <bool SIGNED>
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vbmi"))) void dequantize8_vbmi(
    const std::uint8_t* __restrict q, float a, float* __restrict d, std::int64_t n) {
  const CodePlanes& cp = code_planes<SIGNED>();
  __m512i t[4][4];
  for (int k = 0; k < 4; ++k) {
    for (int j = 0; j < 4; ++j) t[k][j] = _mm512_load_si512(cp.plane[k] + 64 * j);
  }
  const __m512i order = _mm512_load_si512(cp.order);
  const __m512 av = _mm512_set1_ps(a);
  std::int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    const __m512i idx = _mm512_permutexvar_epi8(order, _mm512_loadu_si512(q + i));
    const __mmask64 high = _mm512_movepi8_mask(idx);
    __m512i b[4];
    for (int k = 0; k < 4; ++k) {
      b[k] = _mm512_mask_blend_epi8(high, _mm512_permutex2var_epi8(t[k][0], idx, t[k][1]),
                                    _mm512_permutex2var_epi8(t[k][2], idx, t[k][3]));
    }
    const __m512i w01l = _mm512_unpacklo_epi8(b[0], b[1]), w01h = _mm512_unpackhi_epi8(b[0], b[1]);
    const __m512i w23l = _mm512_unpacklo_epi8(b[2], b[3]), w23h = _mm512_unpackhi_epi8(b[2], b[3]);
    _mm512_storeu_ps(d + i, _mm512_mul_ps(_mm512_castsi512_ps(_mm512_unpacklo_epi16(w01l, w23l)), av));
    _mm512_storeu_ps(d + i + 16, _mm512_mul_ps(_mm512_castsi512_ps(_mm512_unpackhi_epi16(w01l, w23l)), av));
    _mm512_storeu_ps(d + i + 32, _mm512_mul_ps(_mm512_castsi512_ps(_mm512_unpacklo_epi16(w01h, w23h)), av));
    _mm512_storeu_ps(d + i + 48, _mm512_mul_ps(_mm512_castsi512_ps(_mm512_unpackhi_epi16(w01h, w23h)), av));
  }
  const float* code = SIGNED ? q8::kSignedCode : q8::kUnsignedCode;
  for (; i < n; ++i) d[i] = code[q[i]] * a;
}

bool use_vbmi() {
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
                         __builtin_cpu_supports("avx512vbmi");
  return ok;
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
#if DEEPOPTIM_Q8_AVX512
  if (use_vbmi()) {
    if (is_signed) return dequantize8_vbmi<true>(q, absmax, dst, n);
    return dequantize8_vbmi<false>(q, absmax, dst, n);
  }
#endif
  if (is_signed) return dequantize8_signed(q, absmax, dst, n);
  return dequantize8_unsigned(q, absmax, dst, n);
}

void quantize8(bool is_signed, const float* src, std::uint8_t* q, float* absmax, std::int64_t n) {
#if DEEPOPTIM_Q8_AVX512
  const float a = use_avx512() ? absmax_avx512(src, n) : absmax_cloned(src, n);
#else
  const float a = absmax_cloned(src, n);
#endif
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
