// The bandwidth probe of the benchmarks (deepoptim/probe.hpp).
#include "deepoptim/probe.hpp"

#include <vector>

#include "deepoptim/dispatch.hpp"
#include "deepoptim/parallel.hpp"

namespace deepoptim::probe {
namespace {

// One fused loop over every operand, like the kernels it stands in for (streaming the
// arrays one after another runs at half the bandwidth: the prefetchers see one stream).
template <class T, int NR, int NU, int NS>
DEEPOPTIM_INLINE double probe_fused(const ProbeTensor<T>& t, std::int64_t b, std::int64_t e) {
  const T* r[NR + 1];
  T* u[NU + 1];
  T* s[NS + 1];
  for (int k = 0; k < NR; ++k) r[k] = t.read[k] + b;
  for (int k = 0; k < NU; ++k) u[k] = t.update[k] + b;
  for (int k = 0; k < NS; ++k) s[k] = t.store[k] + b;
  const std::int64_t n = e - b;
  if constexpr (NU + NS == 0) {  // read-only: the checksum is what keeps the reads alive
    T acc = T(0);
#pragma omp simd reduction(+ : acc)
    for (std::int64_t i = 0; i < n; ++i) {
      T x = T(1);
      for (int k = 0; k < NR; ++k) x += r[k][i];
      acc += x;
    }
    return double(acc);
  } else {
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) {
      T x = T(1);
      for (int k = 0; k < NR; ++k) x += r[k][i];
      for (int k = 0; k < NU; ++k) u[k][i] += x;
      for (int k = 0; k < NS; ++k) s[k][i] = x;
    }
    return 0.0;
  }
}

// Operand counts of the kernels benchmarked; anything else takes the generic loop.
template <class T>
DEEPOPTIM_INLINE double block_probe(const ProbeTensor<T>& t, std::int64_t b, std::int64_t e) {
  switch (t.nread * 100 + t.nupdate * 10 + t.nstore) {
    case 100: return probe_fused<T, 1, 0, 0>(t, b, e);  // a reduction pass
    case 200: return probe_fused<T, 2, 0, 0>(t, b, e);
    case 101: return probe_fused<T, 1, 0, 1>(t, b, e);  // y = f(x)
    case 201: return probe_fused<T, 2, 0, 1>(t, b, e);  // dx = f(dy, x)
    case 110: return probe_fused<T, 1, 1, 0>(t, b, e);  // sgd
    case 120: return probe_fused<T, 1, 2, 0>(t, b, e);  // momentum, adagrad, rmsprop
    case 130: return probe_fused<T, 1, 3, 0>(t, b, e);  // adam
    case 140: return probe_fused<T, 1, 4, 0>(t, b, e);  // amsgrad, centered rmsprop + momentum
    case 210: return probe_fused<T, 2, 1, 0>(t, b, e);  // lamb's second pass
    case 220: return probe_fused<T, 2, 2, 0>(t, b, e);  // lamb's first pass
    default: break;
  }
  double acc = 0.0;
  for (std::int64_t i = b; i < e; ++i) {
    T x = T(1);
    for (int k = 0; k < t.nread; ++k) x += t.read[k][i];
    for (int k = 0; k < t.nupdate; ++k) t.update[k][i] += x;
    for (int k = 0; k < t.nstore; ++k) t.store[k][i] = x;
    acc += double(x);
  }
  return acc;
}

#define DEEPOPTIM_PROBE_CLONES(T) \
  DEEPOPTIM_CLONES double probe_blk(const ProbeTensor<T>& t, std::int64_t b, std::int64_t e) { return block_probe(t, b, e); }
DEEPOPTIM_FOR_FLOATS(DEEPOPTIM_PROBE_CLONES)
#undef DEEPOPTIM_PROBE_CLONES

}  // namespace

template <class T>
double probe(const ProbeTensor<T>* tensors, std::int64_t ntensors) {
  double total = 0.0;
  std::vector<double> parts;  // the probe is a benchmark tool: an allocation is fine here
  auto size_of = [&](std::int64_t t) { return tensors[t].size; };
  parts.assign(static_cast<std::size_t>(parallel::total_blocks(ntensors, size_of)), 0.0);
  parallel::for_each_block_indexed(ntensors, size_of, [&](std::int64_t t, std::int64_t k, std::int64_t b, std::int64_t e) {
    parts[static_cast<std::size_t>(k)] = probe_blk(tensors[t], b, e);
  });
  for (double v : parts) total += v;
  return total;
}

template double probe<float>(const ProbeTensor<float>*, std::int64_t);
template double probe<double>(const ProbeTensor<double>*, std::int64_t);

}  // namespace deepoptim::probe
