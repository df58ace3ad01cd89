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

}  // namespace deepoptim::cast
