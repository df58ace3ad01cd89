// Adafactor, as torch 2.13's torch.optim.Adafactor computes it.
//
// Shazeer & Stern, 2018, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost".
// The NumPy twin python/deepoptim/reference/adafactor.py specifies it to the bit. With
// g negated when maximizing, t the step, w = t^beta2_decay, n the parameter's size:
//
//   rho   = min(lr, 1/sqrt(t));  alpha = max(eps2, |p|_2 / sqrt(n)) * rho
//   p     = p * (1 - lr*weight_decay)
//   matrix (B, R, C): row_var = lerp(row_var, sum_c(g^2)/C, w)   (B*R values)
//                     col_var = lerp(col_var, sum_r(g^2)/R, w)   (B*C values)
//                     V = row_var[r]*col_var[c] / max(sum_r(row_var)/R, eps1)
//   vector:           variance = lerp(variance, g*g, w);  V = variance
//   u     = (1/sqrt(max(V, eps1^2))) * g
//   p     = p + (-alpha / max(1, |u|_2 / (sqrt(n)*d))) * u
//
// Determinism: every sum is in double in an order fixed by the shapes alone. A row of g^2
// and the row factors of a matrix: 8 lanes (entry c to lane c % 8), combined pairwise
// (parallel.hpp's lane order, one block per row). A column of g^2: row after row, the
// columns side by side in one vector loop. |p|^2 and |u|^2: parallel.hpp's blocks.
// Threads take whole rows, whole column ranges or whole blocks, so the bits never depend
// on the thread count.
//
// Passes over a matrix: |p|^2 (reads p); row sums (g); column sums (g, rows in memory
// order, a range of columns per thread); u and |u|^2 (reads g, writes u to a scratch
// array: two divisions and a square root per element are the costly part, done once);
// the update (u, p). A vector: |p|^2; variance, u and |u|^2 together; the update. The
// scratch array (the size of the largest parameter up to 64 MiB, kept per calling
// thread) is the memory cost; torch allocates its var_estimate of that size every step.
// A parameter whose u would take more computes u again in the update pass instead.
#pragma once

#include <cstdint>

namespace deepoptim::adafactor {

struct Hyper {
  std::int64_t step;
  double lr, beta2_decay;
  bool eps1_default;  // eps1 = the dtype's machine epsilon (torch's eps[0] = None)
  double eps1, eps2, d, weight_decay;
  bool maximize;
};

// A factored parameter has row_var and col_var (variance null); a vector has variance
// (row_var and col_var null). batch*rows*cols = size; a vector is (1, 1, size).
template <class T>
struct Tensor {
  T* param;
  const T* grad;
  T* row_var;   // batch*rows values
  T* col_var;   // batch*cols values
  T* variance;  // size values
  std::int64_t batch, rows, cols;
};

template <class T>
void adafactor(const Tensor<T>* ts, std::int64_t n, const Hyper& h);

}  // namespace deepoptim::adafactor
