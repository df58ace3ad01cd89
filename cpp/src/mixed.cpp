// Widening and rounding of chunks for optimizer steps on low-precision storage
// (deepoptim/mixed.hpp). Each loop is one `omp simd` loop over the integer conversions
// of lowp.hpp, cloned per ISA like the kernels.
#include "deepoptim/mixed.hpp"

#include "deepoptim/dispatch.hpp"
#include "deepoptim/lowp.hpp"
#include "deepoptim/philox.hpp"

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

}  // namespace

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
