// Reductions and clipping. Math: deepoptim/reduce.hpp; the NumPy twin
// python/deepoptim/reference/reduce.py is the specification.
#include "deepoptim/reduce.hpp"

#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#include "deepoptim/dispatch.hpp"
#include "deepoptim/parallel.hpp"

namespace deepoptim::reduce {
namespace {

// One block's partial of a norm. For Inf the partial is the max, or NaN if a NaN is seen
// (an omp max-reduction would drop it).
template <class T>
DEEPOPTIM_INLINE double block_norm(const T* __restrict x, std::int64_t n, Ord ord) {
  if (ord == Ord::L2) {
    double acc[parallel::kLanes] = {};
    parallel::for_lanes(n, [&](std::int64_t i, std::int64_t l) { acc[l] += double(x[i]) * double(x[i]); });
    return parallel::lanes_total(acc);
  }
  if (ord == Ord::L1) {
    double acc[parallel::kLanes] = {};
    parallel::for_lanes(n, [&](std::int64_t i, std::int64_t l) { acc[l] += std::fabs(double(x[i])); });
    return parallel::lanes_total(acc);
  }
  double m = 0.0;
  int nans = 0;
#pragma omp simd reduction(max : m) reduction(+ : nans)
  for (std::int64_t i = 0; i < n; ++i) {
    const double a = std::fabs(double(x[i]));
    m = a > m ? a : m;
    nans += x[i] != x[i];
  }
  return nans ? std::numeric_limits<double>::quiet_NaN() : m;
}

template <class T>
DEEPOPTIM_INLINE double block_dot(const T* __restrict x, const T* __restrict y, std::int64_t n) {
  double acc[parallel::kLanes] = {};
  parallel::for_lanes(n, [&](std::int64_t i, std::int64_t l) { acc[l] += double(x[i]) * double(y[i]); });
  return parallel::lanes_total(acc);
}

// x*0 is 0 for finite x and NaN for inf or NaN: one multiply-add per element.
template <class T>
DEEPOPTIM_INLINE bool block_finite(const T* __restrict x, std::int64_t n) {
  T acc = T(0);
#pragma omp simd reduction(+ : acc)
  for (std::int64_t i = 0; i < n; ++i) acc += x[i] * T(0);
  return acc == T(0);
}

template <class T>
DEEPOPTIM_INLINE void block_scale(T* __restrict x, std::int64_t n, T f) {
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) x[i] = x[i] * f;
}

template <class T>
DEEPOPTIM_INLINE void block_clamp(T* __restrict x, std::int64_t n, T lo, T hi) {
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) {
    const T v = x[i];
    x[i] = v < lo ? lo : (v > hi ? hi : v);  // NaN fails both tests and stays
  }
}

#define DEEPOPTIM_REDUCE_CLONES(T) \
  DEEPOPTIM_CLONES double norm_blk(const T* x, std::int64_t n, Ord o) { return block_norm(x, n, o); } \
  DEEPOPTIM_CLONES double dot_blk(const T* x, const T* y, std::int64_t n) { return block_dot(x, y, n); } \
  DEEPOPTIM_CLONES bool finite_blk(const T* x, std::int64_t n) { return block_finite(x, n); }   \
  DEEPOPTIM_CLONES void scale_blk(T* x, std::int64_t n, T f) { block_scale(x, n, f); }          \
  DEEPOPTIM_CLONES void clamp_blk(T* x, std::int64_t n, T lo, T hi) { block_clamp(x, n, lo, hi); }

DEEPOPTIM_FOR_FLOATS(DEEPOPTIM_REDUCE_CLONES)
#undef DEEPOPTIM_REDUCE_CLONES

}  // namespace

std::int64_t norms_workspace(const std::int64_t* sizes, std::int64_t ntensors) {
  return parallel::total_blocks(ntensors, [&](std::int64_t t) { return sizes[t]; });
}

template <class T>
void norms(const View<const T>* xs, std::int64_t ntensors, Ord ord, double* out, double* work) {
  auto size_of = [&](std::int64_t t) { return xs[t].size; };
  parallel::for_each_block_indexed(ntensors, size_of, [&](std::int64_t t, std::int64_t k, std::int64_t b, std::int64_t e) {
    work[k] = norm_blk(xs[t].data + b, e - b, ord);
  });
  std::int64_t k = 0;
  for (std::int64_t t = 0; t < ntensors; ++t) {
    double acc = 0.0;
    bool nan = false;
    for (std::int64_t j = 0, nb = parallel::num_blocks(xs[t].size); j < nb; ++j, ++k) {
      if (ord == Ord::Inf) {
        nan = nan || work[k] != work[k];
        acc = work[k] > acc ? work[k] : acc;
      } else {
        acc += work[k];
      }
    }
    out[t] = nan ? std::numeric_limits<double>::quiet_NaN() : (ord == Ord::L2 ? std::sqrt(acc) : acc);
  }
}

template <class T>
void dots(const View<const T>* xs, const View<const T>* ys, std::int64_t ntensors, double* out, double* work) {
  auto size_of = [&](std::int64_t t) { return xs[t].size; };
  parallel::for_each_block_indexed(ntensors, size_of, [&](std::int64_t t, std::int64_t k, std::int64_t b, std::int64_t e) {
    work[k] = dot_blk(xs[t].data + b, ys[t].data + b, e - b);
  });
  std::int64_t k = 0;
  for (std::int64_t t = 0; t < ntensors; ++t) {
    double acc = 0.0;
    for (std::int64_t j = 0, nb = parallel::num_blocks(xs[t].size); j < nb; ++j, ++k) acc += work[k];
    out[t] = acc;
  }
}

template <class T>
bool all_finite(const View<const T>* xs, std::int64_t ntensors) {
  std::atomic<bool> ok{true};
  parallel::for_each_block(ntensors, [&](std::int64_t t) { return xs[t].size; },
                           [&](std::int64_t t, std::int64_t b, std::int64_t e) {
                             if (!finite_blk(xs[t].data + b, e - b)) ok.store(false, std::memory_order_relaxed);
                           });
  return ok.load();
}

template <class T>
void scale(const View<T>* xs, std::int64_t ntensors, double factor) {
  const T f = T(factor);
  parallel::for_each_block(ntensors, [&](std::int64_t t) { return xs[t].size; },
                           [&](std::int64_t t, std::int64_t b, std::int64_t e) { scale_blk(xs[t].data + b, e - b, f); });
}

template <class T>
void clamp(const View<T>* xs, std::int64_t ntensors, double lo, double hi) {
  const T l = T(lo), h = T(hi);
  parallel::for_each_block(ntensors, [&](std::int64_t t) { return xs[t].size; },
                           [&](std::int64_t t, std::int64_t b, std::int64_t e) { clamp_blk(xs[t].data + b, e - b, l, h); });
}

template void norms<float>(const View<const float>*, std::int64_t, Ord, double*, double*);
template void norms<double>(const View<const double>*, std::int64_t, Ord, double*, double*);
template void dots<float>(const View<const float>*, const View<const float>*, std::int64_t, double*, double*);
template void dots<double>(const View<const double>*, const View<const double>*, std::int64_t, double*, double*);
template bool all_finite<float>(const View<const float>*, std::int64_t);
template bool all_finite<double>(const View<const double>*, std::int64_t);
template void scale<float>(const View<float>*, std::int64_t, double);
template void scale<double>(const View<double>*, std::int64_t, double);
template void clamp<float>(const View<float>*, std::int64_t, double, double);
template void clamp<double>(const View<double>*, std::int64_t, double, double);

}  // namespace deepoptim::reduce
