// Batch normalization forward and backward (Ioffe & Szegedy, 2015), as torch's
// F.batch_norm: training normalizes with the biased batch variance and updates the
// running variance with the unbiased one; eval normalizes with the running statistics.
//
// x is viewed as (outer, channels, inner) in C order: (N, C, *spatial) with the channel
// on axis 1 is (N, C, prod(spatial)); channels-last (N, *spatial, C) is (N*prod, C, 1).
// Statistics are accumulated in double for every dtype, in two passes (mean, then the
// centered sum of squares; never E[x^2] - E[x]^2), so a large common offset costs no
// accuracy; normalization also runs in double and rounds once.
//
// Reductions are cut into units (a block of outer rows x one channel, or x all channels
// when inner == 1) whose partial sums land in a caller-provided workspace and are added
// in unit order: the same bits for any thread count.
// The twin is python/deepoptim/reference/norm.py.
#pragma once

#include <cstdint>

namespace deepoptim::norm {

struct Dims {
  std::int64_t outer, channels, inner;
  std::int64_t count() const { return outer * inner; }  // values per channel
};

// Doubles of workspace that batch_norm_forward / batch_norm_backward need for dims.
std::int64_t workspace_size(const Dims& d);

template <class T>
struct ForwardArgs {
  const T* x;              // (outer, channels, inner)
  T* y;                    // same shape
  const T* weight;         // (channels) or null (= 1)
  const T* bias;           // (channels) or null (= 0)
  T* running_mean;         // (channels) or null (training without tracking)
  T* running_var;          // (channels) or null
  std::int64_t* num_batches_tracked;  // scalar or null; incremented in training
  double* save_mean;       // (channels) out: the mean used (batch or running)
  double* save_invstd;     // (channels) out: 1/sqrt(var + eps) used
  double* work;            // workspace_size(dims) doubles
  Dims dims;
  bool training;
  bool cumulative;         // momentum=None: factor 1/num_batches_tracked
  double momentum;
  double eps;
};

template <class T>
void batch_norm_forward(const ForwardArgs<T>& a);

template <class T>
struct BackwardArgs {
  const T* dy;             // (outer, channels, inner)
  const T* x;              // the forward's input
  T* dx;                   // out, same shape
  const T* weight;         // (channels) or null (= 1)
  const double* mean;      // (channels) from the forward
  const double* invstd;    // (channels) from the forward
  T* dweight;              // (channels) out: sum(dy * xhat), or null
  T* dbias;                // (channels) out: sum(dy), or null
  double* work;            // workspace_size(dims) doubles
  Dims dims;
  bool training;           // false: statistics were constants (eval)
};

template <class T>
void batch_norm_backward(const BackwardArgs<T>& a);

}  // namespace deepoptim::norm
