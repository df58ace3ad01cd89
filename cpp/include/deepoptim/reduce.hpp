// Reductions and clipping over lists of tensors: per-tensor norms and dot products, the
// non-finite check, scaling and clamping (the pieces of clip_grad_norm / clip_grad_value;
// L-BFGS's inner products).
//
// Norms accumulate in double, one partial per block of parallel.hpp's partition, and the
// partials of a tensor are added in block order: the same bits for any thread count.
// The twin is python/deepoptim/reference/reduce.py.
#pragma once

#include <cstdint>

namespace deepoptim::reduce {

enum class Ord : int { L1 = 1, L2 = 2, Inf = 0 };

template <class T>
struct View {
  T* data;
  std::int64_t size;
};

// Doubles of workspace norms() needs: one per block of the list.
std::int64_t norms_workspace(const std::int64_t* sizes, std::int64_t ntensors);

// out[t] = ||x_t||_ord (L1: sum |x|, L2: sqrt(sum x^2), Inf: max |x|; NaN if any NaN).
template <class T>
void norms(const View<const T>* xs, std::int64_t ntensors, Ord ord, double* out, double* work);

// out[t] = sum_i x_t[i] * y_t[i], in double, partials per block added in block order (as
// norms' L2); work has norms_workspace() doubles. x_t and y_t have the same size.
template <class T>
void dots(const View<const T>* xs, const View<const T>* ys, std::int64_t ntensors, double* out, double* work);

// True iff no element of any tensor is NaN or infinite.
template <class T>
bool all_finite(const View<const T>* xs, std::int64_t ntensors);

// x *= T(factor), every element (a NaN factor makes everything NaN, as torch's mul_).
template <class T>
void scale(const View<T>* xs, std::int64_t ntensors, double factor);

// x = min(max(x, lo), hi), NaN kept (torch.clamp).
template <class T>
void clamp(const View<T>* xs, std::int64_t ntensors, double lo, double hi);

}  // namespace deepoptim::reduce
