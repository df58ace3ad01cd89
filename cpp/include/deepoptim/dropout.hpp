// Inverted dropout (Srivastava et al., 2014) with a counter-based generator.
//
// Element j of a call (j = offset + flat index) draws 16 bits: half (j mod 2, low half
// first) of word ((j mod 8) / 2) of
// Philox4x32-10(counter = (lo32(j/8), hi32(j/8), 0, 0), key = (lo32(seed), hi32(seed)))
// (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011), and is kept
// iff that draw is >= floor(p * 2^16). One Philox call serves 8 elements: the generator is
// the cost of dropout, and 16 bits resolve p to 1/65536 (a keep-rate bias below 1.6e-5).
// A mask depends only on (seed, offset + index): not on the thread count, the block
// split, or how a long sequence is cut into calls. Kept values are scaled by 1/(1-p).
//
// Masks are packed bits, little-endian within each byte (numpy.packbits(bitorder=
// "little")): bit k of byte b is element 8b+k.
// The twin is python/deepoptim/reference/dropout.py.
#pragma once

#include <cstdint>

namespace deepoptim::dropout {

// One Philox4x32-10 block: out = philox(counter, key). For tests and the twin.
void philox4x32_10(const std::uint32_t counter[4], const std::uint32_t key[2], std::uint32_t out[4]);

// floor(p * 2^32), clamped to [0, 2^32]: element kept iff its word >= this.
std::uint64_t keep_threshold(double p);

template <class T>
struct ForwardArgs {
  const T* x;
  T* y;
  std::uint8_t* mask;      // (n + 7) / 8 bytes, or null: no mask kept
  std::int64_t n;
  std::uint64_t seed;
  std::uint64_t offset;
  double p;                // 0 < p <= 1 (p == 0 is the identity; the bindings skip it)
};

template <class T>
void dropout_forward(const ForwardArgs<T>& a);

template <class T>
struct BackwardArgs {
  const T* dy;
  T* dx;
  const std::uint8_t* mask;  // packed mask from the forward, or null: regenerate it
  std::int64_t n;
  std::uint64_t seed;
  std::uint64_t offset;
  double p;
};

template <class T>
void dropout_backward(const BackwardArgs<T>& a);

}  // namespace deepoptim::dropout
