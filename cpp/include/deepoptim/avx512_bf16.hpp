// Sixteen-element loads and stores of float32 and bfloat16 with AVX-512 (F, BW, DQ, VL)
// and AVX512-BF16, for the loops that convert in registers (the one-loop bfloat16 Adam in
// optim.cpp, the chunk conversions in mixed.cpp). Compiled where the build may use
// AVX-512 (DEEPOPTIM_AVX512_BF16: always in the run-time-dispatched build, in a pinned or
// native build only when its ISA has AVX-512 BW); callers check the CPU first
// (has_avx512_bf16).
//
// vcvtneps2bf16 rounds sixteen floats to nearest even in one instruction, where the
// portable rounding (lowp::to_bfloat16) takes about twelve. It treats subnormal inputs
// as zero and keeps a NaN's payload, so a vector holding a NaN or a subnormal (vfpclassps
// finds them) is rounded by the integer definition instead: the same bits as
// lowp::to_bfloat16 for all 2^32 floats (checked exhaustively when this was written).
#pragma once

#include "deepoptim/dispatch.hpp"

#if defined(__GNUC__) && defined(__x86_64__) && (DEEPOPTIM_HAS_CLONES || defined(__AVX512BW__))
#define DEEPOPTIM_AVX512_BF16 1
#else
#define DEEPOPTIM_AVX512_BF16 0
#endif

#if DEEPOPTIM_AVX512_BF16
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#define DEEPOPTIM_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16")))

// GCC 12's AVX-512 intrinsics read an "undefined" register they then overwrite.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace deepoptim::avx512 {

inline bool has_avx512_bf16() {
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
                         __builtin_cpu_supports("avx512bf16");
  return ok;
}

// Loads and stores of sixteen elements; FULL: all sixteen live. AMD's masked stores are
// slow, so only a loop's last, partial vector is masked.
template <bool FULL>
DEEPOPTIM_BF16_TARGET DEEPOPTIM_INLINE __m512 f32_load16(__mmask16 live, const void* src) {
  return FULL ? _mm512_loadu_ps(src) : _mm512_maskz_loadu_ps(live, src);
}

template <bool FULL>
DEEPOPTIM_BF16_TARGET DEEPOPTIM_INLINE void f32_store16(__mmask16 live, void* dst, __m512 x) {
  if (FULL) {
    _mm512_storeu_ps(dst, x);
  } else {
    _mm512_mask_storeu_ps(dst, live, x);
  }
}

template <bool FULL>
DEEPOPTIM_BF16_TARGET DEEPOPTIM_INLINE __m512 bf16_load16(__mmask16 live, const void* src) {
  const __m256i h = FULL ? _mm256_loadu_si256(static_cast<const __m256i*>(src)) : _mm256_maskz_loadu_epi16(live, src);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

template <bool FULL>
DEEPOPTIM_BF16_TARGET DEEPOPTIM_INLINE void bf16_store16(__mmask16 live, void* dst, __m512 x) {
  const __m256bh fast = _mm512_cvtneps_pbh(x);
  __m256i r;
  std::memcpy(&r, &fast, sizeof r);
  if (__builtin_expect(_mm512_fpclass_ps_mask(x, 0xA1) != 0, 0)) {  // 0xA1: quiet NaN, signalling NaN, subnormal
    const __m512i u = _mm512_castps_si512(x), hi = _mm512_srli_epi32(u, 16);
    __m512i v = _mm512_srli_epi32(
        _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), _mm512_and_si512(hi, _mm512_set1_epi32(1))), 16);
    const __mmask16 nan =
        _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
    v = _mm512_mask_mov_epi32(v, nan, _mm512_or_si512(_mm512_and_si512(hi, _mm512_set1_epi32(0x8000)), _mm512_set1_epi32(0x7fc0)));
    r = _mm512_cvtepi32_epi16(v);
  }
  if (FULL) {
    _mm256_storeu_si256(static_cast<__m256i*>(dst), r);
  } else {
    _mm256_mask_storeu_epi16(dst, live, r);
  }
}

// Rounds sixteen floats to bfloat16 stochastically with sixteen 16-bit draws r, as
// lowp::narrow_stochastic does: (u + r) >> 16 (infinities stay: their low bits are 0),
// a NaN the quiet NaN of its sign.
template <bool FULL>
DEEPOPTIM_BF16_TARGET DEEPOPTIM_INLINE void bf16_store16_stochastic(__mmask16 live, void* dst, __m512 x,
                                                                    const std::uint16_t* r) {
  const __m512i u = _mm512_castps_si512(x);
  const __m256i r16 = FULL ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r)) : _mm256_maskz_loadu_epi16(live, r);
  __m512i bits = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_cvtepu16_epi32(r16)), 16);
  const __mmask16 nan =
      _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
  bits = _mm512_mask_mov_epi32(
      bits, nan, _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x8000)), _mm512_set1_epi32(0x7fc0)));
  const __m256i h = _mm512_cvtepi32_epi16(bits);
  if (FULL) {
    _mm256_storeu_si256(static_cast<__m256i*>(dst), h);
  } else {
    _mm256_mask_storeu_epi16(dst, live, h);
  }
}

}  // namespace deepoptim::avx512

#pragma GCC diagnostic pop
#endif
