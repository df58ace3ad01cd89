// A benchmark tool, not a kernel users call: the in-place bandwidth probe that
// deepoptim.bench times beside each kernel, moving the same bytes the same way with
// trivial arithmetic, so "of probe" says how close a kernel runs to the memory bandwidth.
#pragma once

#include <cstdint>

namespace deepoptim::probe {

// The bandwidth probe the benchmarks compare against: per element, r = sum of the read
// arrays; every update array gets u += r, every store array s = r. It moves exactly the
// bytes of a kernel that reads, updates and stores those arrays, with no arithmetic to
// speak of. Works block by block through a buffer in L1, so each array is one pass.
// Returns the sum of r (so a read-only probe cannot be optimized away).
template <class T>
struct ProbeTensor {
  const T* const* read;
  T* const* update;
  T* const* store;
  int nread, nupdate, nstore;
  std::int64_t size;
};

template <class T>
double probe(const ProbeTensor<T>* tensors, std::int64_t ntensors);

}  // namespace deepoptim::probe
