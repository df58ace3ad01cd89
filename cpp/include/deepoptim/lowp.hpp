// Low-precision storage types: bfloat16 and IEEE float16, stored as their 16 bits.
//
// The math always runs in float32 (or float64); these types only load and store. Every
// conversion is written with integer operations on the bits, so that it is the same on
// every ISA and equal bit for bit to the NumPy twin (python/deepoptim/reference/cast.py),
// which performs the same integer operations. Rounding is to nearest, ties to even, as
// ml_dtypes and NumPy round; a NaN becomes the canonical quiet NaN of its sign (bfloat16
// 0x7fc0, float16 0x7e00; payloads are not kept, as hardware converters differ on them).
#pragma once

#include <cstdint>
#include <cstring>

#include "deepoptim/dispatch.hpp"

namespace deepoptim::lowp {

struct bfloat16 {
  std::uint16_t bits;
};
struct float16 {
  std::uint16_t bits;
};
static_assert(sizeof(bfloat16) == 2 && sizeof(float16) == 2, "16-bit storage");

DEEPOPTIM_INLINE std::uint32_t bits_of(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
DEEPOPTIM_INLINE float float_of(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
DEEPOPTIM_INLINE std::uint64_t bits_of(double d) {
  std::uint64_t u;
  std::memcpy(&u, &d, 8);
  return u;
}
DEEPOPTIM_INLINE double double_of(std::uint64_t u) {
  double d;
  std::memcpy(&d, &u, 8);
  return d;
}

// ---------------------------------------------------------------- widening (exact)
DEEPOPTIM_INLINE float to_float(bfloat16 h) { return float_of(std::uint32_t(h.bits) << 16); }

DEEPOPTIM_INLINE float to_float(float16 h) {
  const std::uint32_t sign = std::uint32_t(h.bits & 0x8000u) << 16;
  const std::uint32_t e = (h.bits >> 10) & 0x1fu, m = h.bits & 0x3ffu;
  std::uint32_t u;
  if (e == 0x1fu) {
    u = sign | 0x7f800000u | (m << 13);  // inf, or a NaN (payload moved up: still a NaN)
  } else if (e != 0) {
    u = sign | ((e + 112u) << 23) | (m << 13);  // rebias 15 -> 127
  } else {
    // Zero or subnormal: m * 2**-24, exact in float32.
    u = sign | bits_of(float(m) * 5.9604644775390625e-08f);
  }
  return float_of(u);
}

// ---------------------------------------------------------------- narrowing (RNE)
DEEPOPTIM_INLINE bfloat16 to_bfloat16(float f) {
  const std::uint32_t u = bits_of(f);
  const bool nan = (u & 0x7fffffffu) > 0x7f800000u;
  // Round to nearest even at bit 16; a carry into the exponent is the right answer
  // (up to the next binade, or to inf from the largest finite values). Both results
  // are computed and one selected: no branch, so the conversion loops vectorize.
  const std::uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return {std::uint16_t(nan ? (((u >> 16) & 0x8000u) | 0x7fc0u) : rounded)};
}

DEEPOPTIM_INLINE float16 to_float16(float f) {
  const std::uint32_t u = bits_of(f);
  const std::uint32_t sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
  std::uint32_t h;
  if (a > 0x7f800000u) {
    h = 0x7e00u;  // NaN
  } else if (a >= 0x477ff000u) {
    h = 0x7c00u;  // >= 65520 (halfway above the largest float16, 65504): inf
  } else if (a >= 0x38800000u) {
    // Normal float16 (|f| >= 2**-14): round to nearest even at bit 13, then rebias.
    h = ((a + 0xfffu + ((a >> 13) & 1u)) >> 13) - (112u << 10);
  } else {
    // Subnormal float16, multiples of 2**-24: adding 0.5 puts the value in a binade whose
    // ulp is 2**-24, so the float addition itself rounds to nearest even; the low bits
    // are then the float16 mantissa (0x400 when it rounds up to the smallest normal).
    h = bits_of(float_of(a) + 0.5f) - 0x3f000000u;
  }
  return {std::uint16_t(sign | h)};
}

// double -> float rounding to odd: truncate toward zero, then set the last bit if
// anything was cut off. Rounding that to bfloat16/float16 (to nearest even) equals
// rounding the double directly, since float keeps more than 2 extra bits (Boldo &
// Melquiond 2008): no double rounding.
DEEPOPTIM_INLINE float round_to_odd(double d) {
  const double a = d < 0 ? -d : d;
  if (!(a <= 3.4028234663852886e+38) || a == 0.0) return float(d);  // NaN, inf, beyond float, 0
  float f = float(d);                                                // nearest even
  std::uint32_t u = bits_of(f);
  const float fa = f < 0 ? -f : f;
  if (double(fa) != a) {
    if (double(fa) > a) u -= 1;  // rounded away from zero: step back toward zero
    u |= 1u;
  }
  return float_of(u);
}
// Beyond float's range, float(d) is inf; rounding inf gives inf, which is also the
// double's correctly rounded bfloat16/float16 value (their ranges end below float's).

DEEPOPTIM_INLINE bfloat16 to_bfloat16(double d) { return to_bfloat16(round_to_odd(d)); }
DEEPOPTIM_INLINE float16 to_float16(double d) { return to_float16(round_to_odd(d)); }

}  // namespace deepoptim::lowp
