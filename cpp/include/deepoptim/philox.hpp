// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011)
// and the 16-bit draw stream built on it, shared by dropout and stochastic rounding:
// element j of stream (`seed`, `stream`) draws 16 bits, half (j mod 2, low half first) of
// word ((j mod 8) / 2) of Philox4x32-10(counter = (lo32(j/8), hi32(j/8), lo32(stream),
// hi32(stream)), key = (lo32(seed), hi32(seed))). Dropout and cast_stochastic use stream 0;
// an optimizer's stochastic rounding uses the step, so every step draws afresh. The twin is random_draws() in
// python/deepoptim/reference/dropout.py.
#pragma once

#include <cstdint>

#include "deepoptim/dispatch.hpp"

namespace deepoptim::philox {

constexpr std::uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
constexpr std::uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;

// The ten rounds on counter (c0..c3) and key (k0, k1); the result replaces the counter.
DEEPOPTIM_INLINE void rounds(std::uint32_t& c0, std::uint32_t& c1, std::uint32_t& c2,
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

// draws[j - 8*g0] for every element j in [j0, j0 + count) of the sequence, g0 = j0 / 8:
// the four words of group g, each split low half first (little-endian order of the
// halves). count >= 1 and j0 + count <= 2^64 (the bindings refuse more); the last group
// is computed from the last element, so nothing wraps even at the end of the sequence.
// draws holds 8 draws per group.
// Dispatched at run time: AVX-512 eight groups at a time where the CPU has it (cpp/src/
// philox.cpp), else fill_draws_portable; the same words either way.
void fill_draws(std::uint16_t* draws, std::uint64_t j0, std::uint64_t count, std::uint64_t seed,
                std::uint64_t stream = 0);

// The portable definition of fill_draws, one group per iteration.
DEEPOPTIM_INLINE void fill_draws_portable(std::uint16_t* __restrict draws, std::uint64_t j0,
                                          std::uint64_t count, std::uint64_t seed,
                                          std::uint64_t stream = 0) {
  const std::uint64_t g0 = j0 >> 3, g1 = ((j0 + (count - 1)) >> 3) + 1;
  const std::uint32_t k0 = std::uint32_t(seed), k1 = std::uint32_t(seed >> 32);
  const std::int64_t ng = std::int64_t(g1 - g0);
#pragma omp simd
  for (std::int64_t i = 0; i < ng; ++i) {
    const std::uint64_t g = g0 + std::uint64_t(i);
    std::uint32_t c0 = std::uint32_t(g), c1 = std::uint32_t(g >> 32), c2 = std::uint32_t(stream),
                  c3 = std::uint32_t(stream >> 32);
    rounds(c0, c1, c2, c3, k0, k1);
    draws[8 * i + 0] = std::uint16_t(c0);
    draws[8 * i + 1] = std::uint16_t(c0 >> 16);
    draws[8 * i + 2] = std::uint16_t(c1);
    draws[8 * i + 3] = std::uint16_t(c1 >> 16);
    draws[8 * i + 4] = std::uint16_t(c2);
    draws[8 * i + 5] = std::uint16_t(c2 >> 16);
    draws[8 * i + 6] = std::uint16_t(c3);
    draws[8 * i + 7] = std::uint16_t(c3 >> 16);
  }
}

}  // namespace deepoptim::philox
