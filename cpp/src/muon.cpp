// Muon, as torch 2.13's torch.optim.Muon computes it: the elementwise passes (momentum,
// Nesterov, the rounding to bfloat16 and the Frobenius norm; normalization; decoupled
// decay and the update) and the driver. The products are in muon_ns.cpp; the math is
// written out in muon.hpp and specified by python/deepoptim/reference/muon.py.
#include "deepoptim/muon.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "deepoptim/dispatch.hpp"
#include "deepoptim/lowp.hpp"
#include "deepoptim/parallel.hpp"

namespace deepoptim::muon {
namespace {

DEEPOPTIM_INLINE float round_bf16(float f) { return lowp::to_float(lowp::to_bfloat16(f)); }

// torch's lerp(a, b, w) with a scalar weight: a + w*(b - a) for |w| < 0.5, else
// b - (b - a)*(1 - w) (exact at the end of the interval w is near).
template <class T>
struct MomentumCoef {
  T w_buf, one_minus_w_buf;  // lerp(buf, g, 1 - momentum)
  T w_nes, one_minus_w_nes;  // lerp(g, buf, momentum)
  bool small_buf, small_nes, nesterov;
};

template <class T>
DEEPOPTIM_INLINE T lerp(T a, T b, T w, T one_minus_w, bool small) {
  return small ? a + w * (b - a) : b - (b - a) * one_minus_w;
}

// Pass 1 over [b, e): the momentum buffer, the update U rounded to bfloat16 (double goes
// through float first, as torch's conversion does), and U's sum of squares in the
// kernels' lane order (the block's partial of the Frobenius norm).
template <class T>
DEEPOPTIM_INLINE double momentum_block_impl(const MuonTensor<T>& t, float* __restrict u, std::int64_t b,
                                            std::int64_t e, const MomentumCoef<T>& c) {
  const T* __restrict g = t.grad + b;
  T* __restrict m = t.momentum_buffer + b;
  float* __restrict ub = u + b;
  const std::int64_t n = e - b;
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) {
    const T mi = lerp(m[i], g[i], c.w_buf, c.one_minus_w_buf, c.small_buf);
    m[i] = mi;
    const T ui = c.nesterov ? lerp(g[i], mi, c.w_nes, c.one_minus_w_nes, c.small_nes) : mi;
    ub[i] = round_bf16(float(ui));
  }
  double acc[parallel::kLanes] = {0, 0, 0, 0, 0, 0, 0, 0};
  parallel::for_lanes(n, [&](std::int64_t i, std::int64_t l) { acc[l] += double(ub[i]) * double(ub[i]); });
  return parallel::lanes_total(acc);
}

#define DEEPOPTIM_MUON_MOMENTUM_CLONES(T)                                                                   \
  DEEPOPTIM_CLONES double momentum_block(const MuonTensor<T>& t, float* u, std::int64_t b, std::int64_t e, \
                                         const MomentumCoef<T>& c) {                                      \
    return momentum_block_impl(t, u, b, e, c);                                                            \
  }
DEEPOPTIM_FOR_FLOATS(DEEPOPTIM_MUON_MOMENTUM_CLONES)
#undef DEEPOPTIM_MUON_MOMENTUM_CLONES

// X = bf16(U / d) for elements [b, e), in place.
DEEPOPTIM_CLONES void normalize_block(float* x, std::int64_t b, std::int64_t e, float d) {
  float* __restrict xb = x + b;
  const std::int64_t n = e - b;
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) xb[i] = round_bf16(xb[i] / d);
}

// The last pass over [b, e) of P: decoupled decay, then P += (-adjusted_lr) * O (O in
// P's layout).
template <class T>
DEEPOPTIM_INLINE void update_block_impl(T* p, const float* o, std::int64_t b, std::int64_t e, T decay, T alpha,
                                        bool has_decay) {
  T* __restrict pb = p + b;
  const float* __restrict ob = o + b;
  const std::int64_t n = e - b;
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) {
    const T pi = has_decay ? pb[i] * decay : pb[i];
    pb[i] = pi + alpha * T(ob[i]);
  }
}

#define DEEPOPTIM_MUON_UPDATE_CLONES(T)                                                                    \
  DEEPOPTIM_CLONES void update_block(T* p, const float* o, std::int64_t b, std::int64_t e, T decay, T alpha, \
                                     bool has_decay) {                                                     \
    update_block_impl(p, o, b, e, decay, alpha, has_decay);                                                \
  }
DEEPOPTIM_FOR_FLOATS(DEEPOPTIM_MUON_UPDATE_CLONES)
#undef DEEPOPTIM_MUON_UPDATE_CLONES

using NsFn = float* (*)(float*, float*, float*, float*, std::int64_t, std::int64_t, detail::NsCoefficients,
                        std::int64_t);

// The products' variant for this machine: the instruction set the clones run with.
NsFn newton_schulz() {
#if DEEPOPTIM_HAS_CLONES
  static const NsFn fn = [] {
    const char* isa = active_isa();
    if (std::strcmp(isa, "x86-64-v4") == 0) {
      return __builtin_cpu_supports("avx512bf16") ? &detail::newton_schulz_v4bf16 : &detail::newton_schulz_v4;
    }
    if (std::strcmp(isa, "x86-64-v3") == 0) return &detail::newton_schulz_v3;
    return &detail::newton_schulz_base;
  }();
  return fn;
#else
  return &detail::newton_schulz_pinned;
#endif
}

// Scratch for one call (U/X, Y, A, S), kept per calling thread and only ever grown: a
// step allocates nothing once the largest matrix has been seen. (Eigen's GEMM still
// allocates its packing buffers for large products.)
std::vector<float>& workspace(std::size_t n) {
  thread_local std::vector<float> ws;
  if (ws.size() < n) ws.resize(n);
  return ws;
}

template <class T>
void muon_one(const MuonTensor<T>& t, const MuonHyper& h) {
  const std::int64_t R = t.rows, C = t.cols, size = R * C;
  if (size == 0) return;
  const std::int64_t m = std::min(R, C);
  std::vector<float>& ws = workspace(std::size_t(2 * size + 2 * m * m));
  float* U = ws.data();
  float* Y = U + size;
  float* A = Y + size;
  float* S = A + m * m;

  // Pass 1: momentum, U = bf16(update), and the norm's block partials.
  const double mu = h.momentum, w = 1.0 - h.momentum;
  const MomentumCoef<T> c{T(w), T(1) - T(w), T(mu), T(1) - T(mu), std::fabs(T(w)) < T(0.5),
                          std::fabs(T(mu)) < T(0.5), h.nesterov};
  std::vector<double> partials(std::size_t(parallel::num_blocks(size)));
  parallel::for_each_block_indexed(
      1, [&](std::int64_t) { return size; },
      [&](std::int64_t, std::int64_t k, std::int64_t b, std::int64_t e) {
        partials[std::size_t(k)] = momentum_block(t, U, b, e, c);
      });
  double total = 0.0;
  for (double p : partials) total += p;
  // torch: X / X.norm().clamp(min=eps), in bfloat16
  const float norm = round_bf16(float(std::sqrt(total)));
  const float eps = round_bf16(float(h.eps));
  const float d = std::max(norm, eps);  // a NaN norm stays NaN

  // X = bf16(U / d), in place (in P's layout; the products see it transposed if R > C).
  parallel::for_each_block(1, [&](std::int64_t) { return size; },
                           [&](std::int64_t, std::int64_t b, std::int64_t e) { normalize_block(U, b, e, d); });

  const detail::NsCoefficients k{float(h.a), float(h.b), float(h.c)};
  const float* O = newton_schulz()(U, Y, A, S, R, C, k, h.ns_steps);

  // P = P*(1 - lr*wd) + (-adjusted_lr)*O, each rounded to T as torch's mul_ and add_ are.
  const double wd_factor = 1.0 - h.lr * h.weight_decay;
  const T decay = T(wd_factor), alpha = T(-adjusted_lr(h.lr, h.adjust_lr, R, C));
  const bool has_decay = wd_factor != 1.0;
  parallel::for_each_block(1, [&](std::int64_t) { return size; },
                           [&](std::int64_t, std::int64_t b, std::int64_t e) {
                             update_block(t.param, O, b, e, decay, alpha, has_decay);
                           });
}

}  // namespace

double adjusted_lr(double lr, AdjustLr fn, std::int64_t rows, std::int64_t cols) {
  const double A = double(rows), B = double(cols);
  const double ratio = fn == AdjustLr::MatchRmsAdamw ? 0.2 * std::sqrt(std::max(A, B)) : std::sqrt(std::max(1.0, A / B));
  return lr * ratio;
}

template <class T>
void muon(const MuonTensor<T>* ts, std::int64_t n, const MuonHyper& h) {
  for (std::int64_t i = 0; i < n; ++i) muon_one(ts[i], h);
}

template void muon<float>(const MuonTensor<float>*, std::int64_t, const MuonHyper&);
template void muon<double>(const MuonTensor<double>*, std::int64_t, const MuonHyper&);

}  // namespace deepoptim::muon
