// Inverted dropout (Srivastava et al., 2014) with a counter-based generator.
//
// Element j of a call (j = offset + flat index) draws 16 bits: half (j mod 2, low half
// first) of word ((j mod 8) / 2) of
// Philox4x32-10(counter = (lo32(j/8), hi32(j/8), 0, 0), key = (lo32(seed), hi32(seed)))
// (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011), and is kept
// iff that draw is >= t = round(p * 2^16) (clamped to 2^16 - 1 for p < 1, 2^16 for p = 1).
// One Philox call serves 8 elements: the generator is the cost of dropout. 16 bits
// realize the drop rate t / 2^16, the nearest multiple of 2^-16 to p (p < 2^-17 drops
// nothing; p < 1 always keeps a share of at least 2^-16), and kept values are scaled by
// 2^16 / (2^16 - t), the inverse of the keep rate actually realized, so that dropout is
// exactly unbiased: E[y] = x. A mask depends only on (seed, offset + index): not on the
// thread count, the block split, or how a long sequence is cut into calls.
//
// Masks are packed bits, little-endian within each byte (numpy.packbits(bitorder=
// "little")): bit k of byte b is element 8b+k.
// The twin is python/deepoptim/reference/dropout.py.
#pragma once

#include <cstdint>

namespace deepoptim::dropout {

// One Philox4x32-10 block: out = philox(counter, key). For tests and the twin.
void philox4x32_10(const std::uint32_t counter[4], const std::uint32_t key[2], std::uint32_t out[4]);

// round(p * 2^16), clamped to [0, 2^16 - 1] for p < 1; 2^16 for p >= 1: an element is
// kept iff its 16-bit draw is >= this.
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
