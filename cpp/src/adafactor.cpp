// Adafactor, as torch 2.13's torch.optim.Adafactor computes it; the math and the
// summation orders are written out in adafactor.hpp and specified by
// python/deepoptim/reference/adafactor.py.
#include "deepoptim/adafactor.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "deepoptim/dispatch.hpp"
#include "deepoptim/parallel.hpp"

#include <omp.h>

namespace deepoptim::adafactor {
namespace {

using parallel::kLanes;

// Columns per task of the column sums: 256 double accumulators (2 KiB) stay in L1 while
// the task walks down its rows.
constexpr std::int64_t kColChunk = 256;

// torch's lerp_(a, b, w) with a scalar weight, w rounded to T first: a + w*(b - a) for
// |w| < 0.5, else b - (b - a)*(1 - w).
template <class T>
struct Lerp {
  T w, one_minus_w;
  bool small;
};

template <class T>
Lerp<T> make_lerp(double w) {
  const T wt = T(w);
  return {wt, T(1) - wt, std::fabs(wt) < T(0.5)};
}

template <class T>
DEEPOPTIM_INLINE T lerp(T a, T b, const Lerp<T>& l) {
  return l.small ? a + l.w * (b - a) : b - (b - a) * l.one_minus_w;
}

// The elementwise part of u = (1/sqrt(max(V, eps1^2))) * g; max keeps a NaN V, as NumPy's.
template <class T>
DEEPOPTIM_INLINE T inv_sqrt_times(T var, T e1sq, T g) {
  const T v = var < e1sq ? e1sq : var;
  return (T(1) / std::sqrt(v)) * g;
}

// sum(x*x) over n values in the lane order (parallel.hpp): a row of g, or a block.
template <class T>
DEEPOPTIM_INLINE double sumsq_impl(const T* __restrict x, std::int64_t n) {
  double acc[kLanes] = {0, 0, 0, 0, 0, 0, 0, 0};
  parallel::for_lanes(n, [&](std::int64_t i, std::int64_t l) {
    const double v = double(x[i]);
    acc[l] += v * v;
  });
  return parallel::lanes_total(acc);
}

// sum(x) over n values in the lane order: the row factors of one matrix.
template <class T>
DEEPOPTIM_INLINE double lane_sum_impl(const T* __restrict x, std::int64_t n) {
  double acc[kLanes] = {0, 0, 0, 0, 0, 0, 0, 0};
  parallel::for_lanes(n, [&](std::int64_t i, std::int64_t l) { acc[l] += double(x[i]); });
  return parallel::lanes_total(acc);
}

// Columns [c0, c0 + len) of one matrix (R x C, g its first entry): each column's g^2
// summed row after row into acc (len doubles), then col_var = lerp(col_var, sum/R, w).
// The rows are swept in memory order, each a contiguous run of len values.
template <class T>
DEEPOPTIM_INLINE void columns_impl(const T* __restrict g, T* __restrict cv, std::int64_t R, std::int64_t C,
                                   std::int64_t c0, std::int64_t len, Lerp<T> l, double* __restrict acc) {
  for (std::int64_t j = 0; j < len; ++j) acc[j] = 0.0;
  for (std::int64_t r = 0; r < R; ++r) {
    const T* __restrict row = g + r * C + c0;
#pragma omp simd
    for (std::int64_t j = 0; j < len; ++j) {
      const double v = double(row[j]);
      acc[j] += v * v;
    }
  }
  const double rd = double(R);
  for (std::int64_t j = 0; j < len; ++j) cv[c0 + j] = lerp(cv[c0 + j], T(acc[j] / rd), l);
}

// What the elementwise passes over a factored parameter read.
template <class T>
struct Factored {
  const T* grad;
  const T* row_var;  // batch*rows
  const T* col_var;  // batch*cols
  const T* den;      // batch: max(mean of the matrix's row_var, eps1)
  std::int64_t rows, cols;
  T e1sq;
  bool maximize;
};

// u for flat elements [b, e) of a factored parameter into out[0, e - b), row segment by
// row segment (each a vector loop over its columns).
template <class T>
DEEPOPTIM_INLINE void factored_u(const Factored<T>& a, std::int64_t b, std::int64_t e, T* __restrict out) {
  const std::int64_t C = a.cols;
  for (std::int64_t i = b; i < e;) {
    const std::int64_t row = i / C, c0 = i - row * C, len = std::min(C - c0, e - i);
    const std::int64_t batch = row / a.rows;
    const T s = a.row_var[row], dn = a.den[batch];
    const T* __restrict cv = a.col_var + batch * C + c0;
    const T* __restrict g = a.grad + i;
    T* __restrict o = out + (i - b);
    const T e1sq = a.e1sq;
    const bool neg = a.maximize;
#pragma omp simd
    for (std::int64_t j = 0; j < len; ++j) {
      const T gj = neg ? -g[j] : g[j];
      o[j] = inv_sqrt_times((s * cv[j]) / dn, e1sq, gj);
    }
    i += len;
  }
}

// The vector case for [b, e): variance = lerp(variance, g*g, w) (unless it was updated
// already: the update pass of a large parameter recomputes u), and u into out.
template <class T, bool UPDATE_VARIANCE>
DEEPOPTIM_INLINE void vector_u(const T* __restrict g, T* __restrict v, std::int64_t b, std::int64_t e, Lerp<T> l,
                               T e1sq, bool neg, T* __restrict out) {
  const std::int64_t n = e - b;
  g += b;
  v += b;
#pragma omp simd
  for (std::int64_t j = 0; j < n; ++j) {
    const T gj = neg ? -g[j] : g[j];
    const T vj = UPDATE_VARIANCE ? lerp(v[j], gj * gj, l) : v[j];
    if (UPDATE_VARIANCE) v[j] = vj;
    out[j] = inv_sqrt_times(vj, e1sq, gj);
  }
}

// p = (p * decay) + scale * u over [b, e), u in u[0, e - b).
template <class T>
DEEPOPTIM_INLINE void apply(T* __restrict p, const T* __restrict u, std::int64_t b, std::int64_t e, T decay,
                            T scale, bool has_decay) {
  const std::int64_t n = e - b;
  p += b;
#pragma omp simd
  for (std::int64_t j = 0; j < n; ++j) {
    const T pj = has_decay ? p[j] * decay : p[j];
    p[j] = pj + scale * u[j];
  }
}

// The per-block entry points, cloned per instruction set (dispatch.hpp).
#define DEEPOPTIM_ADAFACTOR_CLONES(T)                                                                          \
  DEEPOPTIM_CLONES double sumsq(const T* x, std::int64_t n) { return sumsq_impl(x, n); }                      \
  DEEPOPTIM_CLONES double lane_sum(const T* x, std::int64_t n) { return lane_sum_impl(x, n); }                \
  DEEPOPTIM_CLONES void columns(const T* g, T* cv, std::int64_t R, std::int64_t C, std::int64_t c0,           \
                                std::int64_t len, Lerp<T> l, double* acc) {                                    \
    columns_impl(g, cv, R, C, c0, len, l, acc);                                                                \
  }                                                                                                            \
  /* u of [b, e) into u + b (kept: u spans the parameter), or into a block on the stack    */             \
  /* (u null: recomputed by the update); returns the block's partial of |u|^2.              */             \
  DEEPOPTIM_CLONES double factored_block(const Factored<T>& a, T* u, std::int64_t b, std::int64_t e) {        \
    alignas(64) T local[parallel::kBlock];                                                                     \
    T* out = u ? u + b : local;                                                                                \
    factored_u(a, b, e, out);                                                                                  \
    return sumsq_impl(out, e - b);                                                                             \
  }                                                                                                            \
  DEEPOPTIM_CLONES double vector_block(const T* g, T* v, T* u, std::int64_t b, std::int64_t e, Lerp<T> l,      \
                                       T e1sq, bool neg) {                                                     \
    alignas(64) T local[parallel::kBlock];                                                                     \
    T* out = u ? u + b : local;                                                                                \
    vector_u<T, true>(g, v, b, e, l, e1sq, neg, out);                                                          \
    return sumsq_impl(out, e - b);                                                                             \
  }                                                                                                            \
  /* p = p*decay + scale*u over [b, e), u kept (u + b) or recomputed (u null).              */             \
  DEEPOPTIM_CLONES void update_block(T* p, const T* u, std::int64_t b, std::int64_t e, T decay, T scale,       \
                                     bool has_decay, const Factored<T>* a, const T* g, const T* v, T e1sq,     \
                                     bool neg) {                                                               \
    alignas(64) T local[parallel::kBlock];                                                                     \
    if (u == nullptr) {                                                                                        \
      if (a) factored_u(*a, b, e, local);                                                                      \
      else vector_u<T, false>(g, const_cast<T*>(v), b, e, Lerp<T>{}, e1sq, neg, local);                        \
    }                                                                                                          \
    apply(p, u ? u + b : local, b, e, decay, scale, has_decay);                                                \
  }
DEEPOPTIM_FOR_FLOATS(DEEPOPTIM_ADAFACTOR_CLONES)
#undef DEEPOPTIM_ADAFACTOR_CLONES

// Scratch kept per thread and only ever grown: a step allocates nothing once the largest
// parameter has been seen. Use tells the block partials, the divisors, the update u and
// the column sums of a task apart. Computing u is the costly part (two divisions and a
// square root per element), so it is kept between the pass that takes its norm and the
// update, for parameters up to kKeepBytes of u (torch allocates its var_estimate, the
// parameter's size, every step); a larger one computes u twice instead, so that the
// memory kept stays bounded (measured, 10M float32 on one thread: 15 ms kept, 21 ms
// computed twice).
constexpr std::size_t kKeepBytes = std::size_t{64} << 20;
enum class Use { Partials, Divisors, Update, Columns };
template <class T, Use U>
std::vector<T>& scratch() {
  thread_local std::vector<T> ws;
  return ws;
}

// The blocked sum (parallel.hpp) of partial(b, e) over [0, size).
template <class Partial>
double blocked(std::int64_t size, Partial partial) {
  std::vector<double>& parts = scratch<double, Use::Partials>();
  parts.assign(std::size_t(parallel::num_blocks(size)), 0.0);
  parallel::for_each_block_indexed(
      1, [&](std::int64_t) { return size; },
      [&](std::int64_t, std::int64_t k, std::int64_t b, std::int64_t e) { parts[std::size_t(k)] = partial(b, e); });
  double total = 0.0;
  for (double x : parts) total += x;
  return total;
}

template <class T>
void adafactor_one(const Tensor<T>& t, const Hyper& h, double w, double rho) {
  const std::int64_t size = t.batch * t.rows * t.cols;
  if (size == 0) return;
  const double e1 = h.eps1_default ? double(std::numeric_limits<T>::epsilon()) : h.eps1;
  const T e1sq = T(e1 * e1);
  const Lerp<T> l = make_lerp<T>(w);
  const double root_n = std::pow(double(size), 0.5);

  // alpha from p before the decay.
  const double pp = blocked(size, [&](std::int64_t b, std::int64_t e) { return sumsq(t.param + b, e - b); });
  const double alpha = std::max(h.eps2, std::sqrt(pp) / root_n) * rho;
  const T decay = T(1.0 - h.lr * h.weight_decay);
  const bool has_decay = h.weight_decay != 0.0;

  T* u = nullptr;  // null: u is computed twice (a parameter above kKeepBytes)
  if (std::size_t(size) * sizeof(T) <= kKeepBytes) {
    std::vector<T>& uws = scratch<T, Use::Update>();
    if (uws.size() < std::size_t(size)) uws.resize(std::size_t(size));
    u = uws.data();
  }
  double uu = 0.0;
  const Factored<T>* fa = nullptr;
  std::vector<T>& den = scratch<T, Use::Divisors>();
  Factored<T> a{};
  if (t.variance != nullptr) {
    uu = blocked(size, [&](std::int64_t b, std::int64_t e) {
      return vector_block(t.grad, t.variance, u, b, e, l, e1sq, h.maximize);
    });
  } else {
    const std::int64_t B = t.batch, R = t.rows, C = t.cols;
    // Row factors: one row of g per task.
    const double cd = double(C);
    parallel::for_each_index(B * R, size, [&](std::int64_t i) {
      t.row_var[i] = lerp(t.row_var[i], T(sumsq(t.grad + i * C, C) / cd), l);
    });
    // Column factors: a range of columns of one matrix per task, one range per thread (any
    // split gives the same sums: each column is added row after row whoever takes it).
    const std::int64_t nth = std::max<std::int64_t>(1, omp_get_max_threads());
    const std::int64_t width = std::min(C, std::max<std::int64_t>(kColChunk, ((C + nth - 1) / nth + 15) / 16 * 16));
    const std::int64_t chunks = (C + width - 1) / width;
    parallel::for_each_index(B * chunks, size, [&](std::int64_t k) {
      const std::int64_t b = k / chunks, c0 = (k - b * chunks) * width;
      std::vector<double>& acc = scratch<double, Use::Columns>();
      if (acc.size() < std::size_t(width)) acc.resize(std::size_t(width));
      columns(t.grad + b * R * C, t.col_var + b * C, R, C, c0, std::min(width, C - c0), l, acc.data());
    });
    // Each matrix's divisor max(mean(row_var), eps1).
    den.resize(std::size_t(B));
    const T e1t = T(e1);
    for (std::int64_t b = 0; b < B; ++b) {
      const T mean = T(lane_sum(t.row_var + b * R, R) / double(R));
      den[std::size_t(b)] = mean < e1t ? e1t : mean;  // a NaN mean stays NaN
    }
    a = Factored<T>{t.grad, t.row_var, t.col_var, den.data(), R, C, e1sq, h.maximize};
    fa = &a;
    uu = blocked(size, [&](std::int64_t b, std::int64_t e) { return factored_block(a, u, b, e); });
  }
  const double denom = std::max(1.0, std::sqrt(uu) / (root_n * h.d));
  const T scale = T(-alpha / denom);
  parallel::for_each_block(1, [&](std::int64_t) { return size; }, [&](std::int64_t, std::int64_t b, std::int64_t e) {
    update_block(t.param, u, b, e, decay, scale, has_decay, fa, t.grad, t.variance, e1sq, h.maximize);
  });
}

}  // namespace

template <class T>
void adafactor(const Tensor<T>* ts, std::int64_t n, const Hyper& h) {
  const double t = double(h.step);
  const double w = std::pow(t, h.beta2_decay);
  const double rho = std::min(h.lr, 1.0 / std::pow(t, 0.5));
  for (std::int64_t i = 0; i < n; ++i) adafactor_one(ts[i], h, w, rho);
}

template void adafactor<float>(const Tensor<float>*, std::int64_t, const Hyper&);
template void adafactor<double>(const Tensor<double>*, std::int64_t, const Hyper&);

}  // namespace deepoptim::adafactor
