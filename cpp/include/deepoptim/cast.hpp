// cast: copies arrays into arrays of another floating dtype (float32, float64, bfloat16,
// float16), rounding to nearest even (deepoptim/lowp.hpp). The conversion a low-precision
// optimizer step ends with, on its own: a float32 master copy to bfloat16 weights, a
// checkpoint's float32 state to float16, ...
#pragma once

#include <cstdint>

namespace deepoptim::cast {

enum class Type { F32, F64, BF16, F16 };

struct Tensor {
  const void* src;
  void* dst;
  std::int64_t size;
};

// dst[i] = round(src[i]) for every tensor, one parallel region over all blocks.
void cast(const Tensor* tensors, std::int64_t ntensors, Type from, Type to);

// float32 -> bfloat16 with stochastic rounding: dst = (bits(src) + r) >> 16, r the 16-bit
// draw of element j = offset + (index in the concatenation of the tensors) of stream
// `seed` (deepoptim/philox.hpp). Rounds up with probability (low 16 bits) / 2**16, so
// E[dst] = src: updates smaller than half a bfloat16 ulp survive on average. NaN -> the
// quiet NaN of its sign. The result depends only on (seed, j): not on threads or splits.
void cast_stochastic(const Tensor* tensors, std::int64_t ntensors, std::uint64_t seed, std::uint64_t offset);

}  // namespace deepoptim::cast
