// Batch normalization forward and backward. Math and layout: deepoptim/norm.hpp; the
// NumPy twin python/deepoptim/reference/norm.py is the specification.
//
// Work units (see plan()): rows path (inner == 1, e.g. (N, C) or channels-last) gives a
// unit a block of rows and all channels, so each row is read as one contiguous SIMD
// vector; channel path (inner > 1, e.g. NCHW) gives a unit a block of rows of ONE
// channel, each row a contiguous run of `inner` values. Per-unit partial sums go to the
// workspace and are added in unit order, so threads never change a result.
// Per-element work runs in double for float32 too: x - mean must not lose the bits that
// a large common offset pushes out of a float.
#include "deepoptim/norm.hpp"

#include <algorithm>
#include <cmath>

#include "deepoptim/dispatch.hpp"
#include "deepoptim/parallel.hpp"

namespace deepoptim::norm {
namespace {

struct Plan {
  bool rows;           // inner == 1
  std::int64_t rpu;    // rows (of outer) per unit
  std::int64_t nrb;    // row blocks
  std::int64_t units;  // nrb (rows path) or nrb * channels
};

// Rows-path units hold ~32K values (8 blocks): their partials are a C-vector each, so
// small units would move as many partial sums as data (a (256, 1024) batch had 64 units
// of 1024 doubles per pass). Either way the split depends only on the shape.
constexpr std::int64_t kRowsUnit = 8 * parallel::kBlock;

Plan plan(const Dims& d) {
  Plan p;
  p.rows = d.inner == 1;
  const std::int64_t per_row = p.rows ? std::max<std::int64_t>(d.channels, 1) : d.inner;
  p.rpu = std::max<std::int64_t>(1, (p.rows ? kRowsUnit : parallel::kBlock) / per_row);
  p.nrb = (d.outer + p.rpu - 1) / p.rpu;
  p.units = p.rows ? p.nrb : p.nrb * d.channels;
  return p;
}

// Per-channel sums of f(row values) for one unit, written to part[rb*C + c] (and to
// part2 for a second quantity). Kinds of sums:
enum class Sum { X, SqDev, DyAndDyDev };

// rows path: one block of rows, all channels.
template <class T, Sum KIND>
DEEPOPTIM_INLINE void sums_rows(const T* __restrict x, const T* __restrict dy,
                                const double* __restrict mean, double* __restrict part,
                                double* __restrict part2, std::int64_t r0, std::int64_t r1,
                                std::int64_t C) {
  for (std::int64_t c = 0; c < C; ++c) part[c] = 0.0;
  if constexpr (KIND != Sum::X) {
    for (std::int64_t c = 0; c < C; ++c) part2[c] = 0.0;
  }
  for (std::int64_t r = r0; r < r1; ++r) {
    const T* xr = x + r * C;
    const T* dyr = dy ? dy + r * C : nullptr;
#pragma omp simd
    for (std::int64_t c = 0; c < C; ++c) {
      if constexpr (KIND == Sum::X) {
        part[c] += double(xr[c]);
      } else if constexpr (KIND == Sum::SqDev) {
        const double dev = double(xr[c]) - mean[c];
        part[c] += dev * dev;
        part2[c] += dev;
      } else {
        const double g = double(dyr[c]);
        part[c] += g;
        part2[c] += g * (double(xr[c]) - mean[c]);
      }
    }
  }
}

// channel path: one block of rows of one channel. The sums run in kLanes fixed lanes
// (element s of a row goes to lane s % kLanes) added in a fixed tree at the end, never
// in `omp simd reduction`, whose grouping follows the vector width: with it the AVX-512,
// AVX2 and SSE2 clones gave statistics that differed in the last bit.
template <class T, Sum KIND>
DEEPOPTIM_INLINE void sums_channel(const T* __restrict x, const T* __restrict dy, double mean,
                                   double* out, double* out2, std::int64_t r0, std::int64_t r1,
                                   std::int64_t c, std::int64_t C, std::int64_t S) {
  double acc[parallel::kLanes] = {}, acc2[parallel::kLanes] = {};
  for (std::int64_t r = r0; r < r1; ++r) {
    const T* xr = x + (r * C + c) * S;
    const T* dyr = dy ? dy + (r * C + c) * S : nullptr;
    if constexpr (KIND == Sum::X) {
      parallel::for_lanes(S, [&](std::int64_t s, std::int64_t l) { acc[l] += double(xr[s]); });
    } else if constexpr (KIND == Sum::SqDev) {
      parallel::for_lanes(S, [&](std::int64_t s, std::int64_t l) {
        const double dev = double(xr[s]) - mean;
        acc[l] += dev * dev;
        acc2[l] += dev;
      });
    } else {
      parallel::for_lanes(S, [&](std::int64_t s, std::int64_t l) {
        const double g = double(dyr[s]);
        acc[l] += g;
        acc2[l] += g * (double(xr[s]) - mean);
      });
    }
  }
  *out = parallel::lanes_total(acc);
  if constexpr (KIND != Sum::X) *out2 = parallel::lanes_total(acc2);
}

template <class T, Sum KIND>
DEEPOPTIM_INLINE void sums_unit(const T* x, const T* dy, const double* mean, double* work,
                                const Dims& d, const Plan& p, std::int64_t u) {
  const std::int64_t C = d.channels;
  double* part2 = work + p.nrb * C;
  if (p.rows) {
    const std::int64_t r0 = u * p.rpu, r1 = std::min(r0 + p.rpu, d.outer);
    sums_rows<T, KIND>(x, dy, mean, work + u * C, part2 + u * C, r0, r1, C);
  } else {
    const std::int64_t rb = u / C, c = u % C;
    const std::int64_t r0 = rb * p.rpu, r1 = std::min(r0 + p.rpu, d.outer);
    sums_channel<T, KIND>(x, dy, mean ? mean[c] : 0.0, work + rb * C + c, part2 + rb * C + c,
                          r0, r1, c, C, d.inner);
  }
}

// y = (x - mean) * scale + shift, per channel, rounded once; for the backward the same
// shape of expression: dx = a*dy + b*(x - mean) + k.
template <class T, bool BACKWARD, bool USE_X>
DEEPOPTIM_INLINE void apply_unit(const T* __restrict x, const T* __restrict dy, T* __restrict out,
                                 const double* __restrict mean, const double* __restrict a,
                                 const double* __restrict b, const double* __restrict k,
                                 const Dims& d, const Plan& p, std::int64_t u) {
  const std::int64_t C = d.channels, S = d.inner;
  if (p.rows) {
    const std::int64_t r0 = u * p.rpu, r1 = std::min(r0 + p.rpu, d.outer);
    for (std::int64_t r = r0; r < r1; ++r) {
      const std::int64_t o = r * C;
#pragma omp simd
      for (std::int64_t c = 0; c < C; ++c) {
        if constexpr (!BACKWARD) {
          out[o + c] = T((double(x[o + c]) - mean[c]) * a[c] + b[c]);
        } else if constexpr (USE_X) {
          out[o + c] = T(a[c] * double(dy[o + c]) + b[c] * (double(x[o + c]) - mean[c]) + k[c]);
        } else {
          out[o + c] = T(a[c] * double(dy[o + c]));
        }
      }
    }
  } else {
    const std::int64_t rb = u / C, c = u % C;
    const std::int64_t r0 = rb * p.rpu, r1 = std::min(r0 + p.rpu, d.outer);
    const double m = mean[c], ac = a[c], bc = b[c], kc = k ? k[c] : 0.0;
    for (std::int64_t r = r0; r < r1; ++r) {
      const std::int64_t o = (r * C + c) * S;
#pragma omp simd
      for (std::int64_t s = 0; s < S; ++s) {
        if constexpr (!BACKWARD) {
          out[o + s] = T((double(x[o + s]) - m) * ac + bc);
        } else if constexpr (USE_X) {
          out[o + s] = T(ac * double(dy[o + s]) + bc * (double(x[o + s]) - m) + kc);
        } else {
          out[o + s] = T(ac * double(dy[o + s]));
        }
      }
    }
  }
}

// The cloned entry points: one per (dtype, kind).
#define DEEPOPTIM_NORM_CLONES(T)                                                                  \
  DEEPOPTIM_CLONES void sum_x(const T* x, double* w, const Dims& d, const Plan& p, std::int64_t u) { \
    sums_unit<T, Sum::X>(x, nullptr, nullptr, w, d, p, u);                                         \
  }                                                                                                \
  DEEPOPTIM_CLONES void sum_sqdev(const T* x, const double* mean, double* w, const Dims& d,        \
                                  const Plan& p, std::int64_t u) {                                 \
    sums_unit<T, Sum::SqDev>(x, nullptr, mean, w, d, p, u);                                        \
  }                                                                                                \
  DEEPOPTIM_CLONES void sum_dy(const T* x, const T* dy, const double* mean, double* w,             \
                               const Dims& d, const Plan& p, std::int64_t u) {                     \
    sums_unit<T, Sum::DyAndDyDev>(x, dy, mean, w, d, p, u);                                        \
  }                                                                                                \
  DEEPOPTIM_CLONES void apply_forward(const T* x, T* y, const double* mean, const double* a,       \
                                      const double* b, const Dims& d, const Plan& p,               \
                                      std::int64_t u) {                                            \
    apply_unit<T, false, true>(x, nullptr, y, mean, a, b, nullptr, d, p, u);                       \
  }                                                                                                \
  DEEPOPTIM_CLONES void apply_backward(const T* x, const T* dy, T* dx, const double* mean,         \
                                       const double* a, const double* b, const double* k,          \
                                       bool use_x, const Dims& d, const Plan& p, std::int64_t u) { \
    if (use_x) apply_unit<T, true, true>(x, dy, dx, mean, a, b, k, d, p, u);                       \
    else apply_unit<T, true, false>(x, dy, dx, mean, a, b, k, d, p, u);                            \
  }

DEEPOPTIM_FOR_FLOATS(DEEPOPTIM_NORM_CLONES)
#undef DEEPOPTIM_NORM_CLONES


// Adds the per-unit partials of quantity q (nrb x C, row-major) in row-block order.
void combine(const double* work, const Plan& p, std::int64_t C, int q, double* out) {
  const double* part = work + q * p.nrb * C;
  for (std::int64_t c = 0; c < C; ++c) out[c] = 0.0;
  for (std::int64_t rb = 0; rb < p.nrb; ++rb) {
    for (std::int64_t c = 0; c < C; ++c) out[c] += part[rb * C + c];
  }
}

}  // namespace

// Layout: two quantities of per-unit partials (2 * nrb * C), then six per-channel
// scratch vectors of C doubles each.
std::int64_t workspace_size(const Dims& d) {
  const Plan p = plan(d);
  return 2 * p.nrb * d.channels + 6 * d.channels;
}

namespace {
double* scratch(double* work, const Plan& p, std::int64_t C, int i) { return work + 2 * p.nrb * C + i * C; }
}  // namespace

// The per-channel statistics and coefficients below are plain loops, not Eigen
// expressions: Eigen picks its packet math from the build's ISA, and in a -march=x86-64-v4
// build its vector lanes and its scalar tail rounded differently, so a channel's bits
// depended on where the buffer's alignment put it (1 and 2 threads differed). Plain loops
// under -ffp-contract=off round the same in any lane.
template <class T>
void batch_norm_forward(const ForwardArgs<T>& a) {
  const Dims& d = a.dims;
  const std::int64_t C = d.channels, total = d.outer * d.channels * d.inner;
  const Plan p = plan(d);
  double* mean = a.save_mean;
  double* invstd = a.save_invstd;
  double* scale = scratch(a.work, p, C, 0);
  double* shift = scratch(a.work, p, C, 1);
  double* sqdev = scratch(a.work, p, C, 2);

  if (a.training) {
    const double n = double(d.count());
    parallel::for_each_index(p.units, total, [&](std::int64_t u) { sum_x(a.x, a.work, d, p, u); });
    combine(a.work, p, C, 0, mean);
    for (std::int64_t c = 0; c < C; ++c) mean[c] /= n;
    parallel::for_each_index(p.units, total, [&](std::int64_t u) { sum_sqdev(a.x, mean, a.work, d, p, u); });
    combine(a.work, p, C, 0, sqdev);
    // Corrected two-pass (Chan, Golub & LeVeque 1983): the sum of the deviations from
    // the first pass's mean measures that mean's rounding error, which is removed from
    // both statistics in the same pass. Without it the error grew with |mean| / std
    // (float64, 4096 values at mean/std ~ 3: 1e-12 off the exact result).
    double* sdev = scratch(a.work, p, C, 3);
    combine(a.work, p, C, 1, sdev);
    for (std::int64_t c = 0; c < C; ++c) {
      mean[c] += sdev[c] / n;
      sqdev[c] = std::max(sqdev[c] - sdev[c] * sdev[c] / n, 0.0);
      invstd[c] = 1.0 / std::sqrt(sqdev[c] / n + a.eps);
    }
    if (a.num_batches_tracked) *a.num_batches_tracked += 1;
    if (a.running_mean) {
      const double f = a.cumulative ? 1.0 / double(*a.num_batches_tracked) : a.momentum;
      for (std::int64_t c = 0; c < C; ++c) {
        a.running_mean[c] = T(f * mean[c] + (1.0 - f) * double(a.running_mean[c]));
        a.running_var[c] = T(f * (sqdev[c] / (n - 1.0)) + (1.0 - f) * double(a.running_var[c]));
      }
    }
  } else {
    for (std::int64_t c = 0; c < C; ++c) {
      mean[c] = double(a.running_mean[c]);
      invstd[c] = 1.0 / std::sqrt(double(a.running_var[c]) + a.eps);
    }
  }
  for (std::int64_t c = 0; c < C; ++c) {
    scale[c] = a.weight ? invstd[c] * double(a.weight[c]) : invstd[c];
    shift[c] = a.bias ? double(a.bias[c]) : 0.0;
  }
  parallel::for_each_index(p.units, total, [&](std::int64_t u) {
    apply_forward(a.x, a.y, mean, scale, shift, d, p, u);
  });
}

template <class T>
void batch_norm_backward(const BackwardArgs<T>& a) {
  const Dims& d = a.dims;
  const std::int64_t C = d.channels, total = d.outer * d.channels * d.inner;
  const Plan p = plan(d);
  const double n = double(d.count());
  parallel::for_each_index(p.units, total,
                           [&](std::int64_t u) { sum_dy(a.x, a.dy, a.mean, a.work, d, p, u); });
  double* sdy = scratch(a.work, p, C, 0);
  double* sdydev = scratch(a.work, p, C, 1);
  double* A = scratch(a.work, p, C, 2);
  double* B = scratch(a.work, p, C, 3);
  double* K = scratch(a.work, p, C, 4);
  combine(a.work, p, C, 0, sdy);
  combine(a.work, p, C, 1, sdydev);
  const double* invstd = a.invstd;
  for (std::int64_t c = 0; c < C; ++c) {
    if (a.dbias) a.dbias[c] = T(sdy[c]);
    if (a.dweight) a.dweight[c] = T(sdydev[c] * invstd[c]);
    A[c] = a.weight ? double(a.weight[c]) * invstd[c] : invstd[c];
    B[c] = 0.0;
    K[c] = 0.0;
    if (a.training) {
      // dx = w*invstd*(dy - mean(dy) - xhat*mean(dy*xhat)), xhat = (x - mean)*invstd
      B[c] = -A[c] * invstd[c] * invstd[c] * sdydev[c] / n;
      K[c] = -A[c] * sdy[c] / n;
    }
  }
  parallel::for_each_index(p.units, total, [&](std::int64_t u) {
    apply_backward(a.x, a.dy, a.dx, a.mean, A, B, K, a.training, d, p, u);
  });
}

template void batch_norm_forward<float>(const ForwardArgs<float>&);
template void batch_norm_forward<double>(const ForwardArgs<double>&);
template void batch_norm_backward<float>(const BackwardArgs<float>&);
template void batch_norm_backward<double>(const BackwardArgs<double>&);

}  // namespace deepoptim::norm
