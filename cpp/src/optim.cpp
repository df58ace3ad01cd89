// Optimizer update kernels. Math and references: see deepoptim/optim.hpp; the NumPy
// twins in python/deepoptim/reference/optim.py are the specification, in this order.
//
// Structure of each kernel:
//   1. coefficients: computed once per call in double, rounded to T;
//   2. a per-block body: one `omp simd` loop, always inlined, specialized by template on
//      the choices that change which arrays are touched;
//   3. a block function per dtype carrying DEEPOPTIM_CLONES (run-time ISA dispatch);
//   4. the driver: parallel::for_each_block over the whole tensor list.
// Loop-invariant flags that only pick an arithmetic path (maximize, weight decay) stay
// as run-time selects: the vectorizer turns them into blends at no measurable cost.
#include "deepoptim/optim.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "deepoptim/dispatch.hpp"
#include "deepoptim/lowp.hpp"
#include "deepoptim/parallel.hpp"
#include "deepoptim/avx512_bf16.hpp"
#include "deepoptim/philox.hpp"

namespace deepoptim::optim {
namespace {

// NaN-propagating max, like numpy.maximum and torch.maximum (std::max drops a NaN in b).
template <class T>
DEEPOPTIM_INLINE T nan_max(T a, T b) {
  return (a > b || a != a) ? a : b;
}

// ---------------------------------------------------------------------------- SGD
template <class T>
struct SgdCoef {
  T lr, mu, one_minus_dampening, one_minus_mu, wd;
  bool has_wd, maximize, first_step, nesterov;
  MomentumForm form;
};

template <class T>
SgdCoef<T> sgd_coef(const SgdHyper& h) {
  return {T(h.lr),           T(h.momentum),     T(1.0 - h.dampening), T(1.0 - h.momentum),
          T(h.weight_decay), h.weight_decay != 0.0, h.maximize,       h.first_step,
          h.nesterov,        h.form};
}

template <class T, MomentumForm FORM, bool HAS_BUF>
DEEPOPTIM_INLINE void sgd_body(T* __restrict p, const T* __restrict g, T* __restrict buf,
                               std::int64_t n, const SgdCoef<T>& c) {
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) {
    T d = c.maximize ? -g[i] : g[i];
    if (c.has_wd) d = d + c.wd * p[i];
    if constexpr (!HAS_BUF) {
      p[i] = p[i] - c.lr * d;
    } else if constexpr (FORM == MomentumForm::Torch) {
      const T b = c.first_step ? d : c.mu * buf[i] + c.one_minus_dampening * d;
      buf[i] = b;
      p[i] = p[i] - c.lr * (c.nesterov ? d + c.mu * b : b);
    } else if constexpr (FORM == MomentumForm::Classical) {
      const T v = c.mu * buf[i] + c.lr * d;
      buf[i] = v;
      p[i] = p[i] - v;
    } else {  // Ema
      const T v = c.mu * buf[i] + c.one_minus_mu * d;
      buf[i] = v;
      p[i] = p[i] - c.lr * v;
    }
  }
}

template <class T>
DEEPOPTIM_INLINE void sgd_block_impl(const SgdTensor<T>& t, std::int64_t b, std::int64_t e,
                                     const SgdCoef<T>& c) {
  T* p = t.param + b;
  const T* g = t.grad + b;
  T* buf = t.momentum_buffer ? t.momentum_buffer + b : nullptr;
  const std::int64_t n = e - b;
  if (!buf) return sgd_body<T, MomentumForm::Torch, false>(p, g, buf, n, c);
  switch (c.form) {
    case MomentumForm::Torch: return sgd_body<T, MomentumForm::Torch, true>(p, g, buf, n, c);
    case MomentumForm::Classical:
      return sgd_body<T, MomentumForm::Classical, true>(p, g, buf, n, c);
    case MomentumForm::Ema: return sgd_body<T, MomentumForm::Ema, true>(p, g, buf, n, c);
  }
}

#define DEEPOPTIM_SGD_BLOCK_CLONES(T) \
  DEEPOPTIM_CLONES void sgd_block(const SgdTensor<T>& t, std::int64_t b, std::int64_t e, const SgdCoef<T>& c) { sgd_block_impl(t, b, e, c); }
DEEPOPTIM_FOR_FLOATS(DEEPOPTIM_SGD_BLOCK_CLONES)
#undef DEEPOPTIM_SGD_BLOCK_CLONES

// ------------------------------------------------------------------------ Adagrad
template <class T>
struct AdagradCoef {
  T clr, wd, eps, init;
  bool has_wd, maximize, first_step;
};

template <class T>
AdagradCoef<T> adagrad_coef(const AdagradHyper& h) {
  const double clr = h.lr / (1.0 + double(h.step - 1) * h.lr_decay);
  return {T(clr), T(h.weight_decay), T(h.eps), T(h.initial_accumulator_value),
          h.weight_decay != 0.0, h.maximize, h.step == 1};
}

template <class T>
DEEPOPTIM_INLINE void adagrad_block_impl(const AdagradTensor<T>& t, std::int64_t b,
                                         std::int64_t e, const AdagradCoef<T>& c) {
  T* __restrict p = t.param + b;
  const T* __restrict g = t.grad + b;
  T* __restrict s = t.state_sum + b;
  const std::int64_t n = e - b;
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) {
    T d = c.maximize ? -g[i] : g[i];
    if (c.has_wd) d = d + c.wd * p[i];
    const T sum = (c.first_step ? c.init : s[i]) + d * d;
    s[i] = sum;
    p[i] = p[i] - c.clr * (d / (std::sqrt(sum) + c.eps));
  }
}

#define DEEPOPTIM_ADAGRAD_BLOCK_CLONES(T) \
  DEEPOPTIM_CLONES void adagrad_block(const AdagradTensor<T>& t, std::int64_t b, std::int64_t e, const AdagradCoef<T>& c) { adagrad_block_impl(t, b, e, c); }
DEEPOPTIM_FOR_FLOATS(DEEPOPTIM_ADAGRAD_BLOCK_CLONES)
#undef DEEPOPTIM_ADAGRAD_BLOCK_CLONES

// ------------------------------------------------------------------------ RMSprop
template <class T>
struct RmspropCoef {
  T lr, alpha, one_minus_alpha, eps, wd, mu;
  bool has_wd, maximize;
};

template <class T>
RmspropCoef<T> rmsprop_coef(const RmspropHyper& h) {
  return {T(h.lr),  T(h.alpha),        T(1.0 - h.alpha),     T(h.eps),
          T(h.weight_decay), T(h.momentum), h.weight_decay != 0.0, h.maximize};
}

template <class T, bool CENTERED, bool MOMENTUM>
DEEPOPTIM_INLINE void rmsprop_body(T* __restrict p, const T* __restrict g, T* __restrict sq,
                                   T* __restrict ga, T* __restrict buf, std::int64_t n,
                                   const RmspropCoef<T>& c) {
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) {
    T d = c.maximize ? -g[i] : g[i];
    if (c.has_wd) d = d + c.wd * p[i];
    const T s = c.alpha * sq[i] + c.one_minus_alpha * (d * d);
    sq[i] = s;
    T var = s;
    if constexpr (CENTERED) {
      const T a = c.alpha * ga[i] + c.one_minus_alpha * d;
      ga[i] = a;
      var = s - a * a;
      // Rounding can push the EMA variance a hair below 0 (torch then returns NaN);
      // a NaN still propagates because NaN < 0 is false.
      var = var < T(0) ? T(0) : var;
    }
    const T q = d / (std::sqrt(var) + c.eps);
    if constexpr (MOMENTUM) {
      const T bnew = c.mu * buf[i] + q;
      buf[i] = bnew;
      p[i] = p[i] - c.lr * bnew;
    } else {
      p[i] = p[i] - c.lr * q;
    }
  }
}

template <class T>
DEEPOPTIM_INLINE void rmsprop_block_impl(const RmspropTensor<T>& t, std::int64_t b,
                                         std::int64_t e, const RmspropCoef<T>& c) {
  T* p = t.param + b;
  const T* g = t.grad + b;
  T* sq = t.square_avg + b;
  T* ga = t.grad_avg ? t.grad_avg + b : nullptr;
  T* buf = t.momentum_buffer ? t.momentum_buffer + b : nullptr;
  const std::int64_t n = e - b;
  if (ga && buf) return rmsprop_body<T, true, true>(p, g, sq, ga, buf, n, c);
  if (ga) return rmsprop_body<T, true, false>(p, g, sq, ga, buf, n, c);
  if (buf) return rmsprop_body<T, false, true>(p, g, sq, ga, buf, n, c);
  return rmsprop_body<T, false, false>(p, g, sq, ga, buf, n, c);
}

#define DEEPOPTIM_RMSPROP_BLOCK_CLONES(T) \
  DEEPOPTIM_CLONES void rmsprop_block(const RmspropTensor<T>& t, std::int64_t b, std::int64_t e, const RmspropCoef<T>& c) { rmsprop_block_impl(t, b, e, c); }
DEEPOPTIM_FOR_FLOATS(DEEPOPTIM_RMSPROP_BLOCK_CLONES)
#undef DEEPOPTIM_RMSPROP_BLOCK_CLONES

// --------------------------------------------------------------------------- Adam
template <class T>
struct AdamCoef {
  T beta1, one_minus_beta1, beta2, one_minus_beta2;
  T step_size;     // lr / bc1
  T inv_bc2_sqrt;  // 1 / sqrt(bc2)
  T inv_bc2;       // 1 / bc2 (eps inside the square root)
  T eps, wd, decay;  // decay = 1 - lr*wd (decoupled)
  bool coupled, decoupled, maximize;
};

template <class T>
AdamCoef<T> adam_coef(const AdamHyper& h) {
  double bc1 = 1.0, bc2 = 1.0;
  if (h.bias_correction) {
    bc1 = 1.0 - std::pow(h.beta1, double(h.step));
    bc2 = 1.0 - std::pow(h.beta2, double(h.step));
  }
  const bool has_wd = h.weight_decay != 0.0;
  return {T(h.beta1),
          T(1.0 - h.beta1),
          T(h.beta2),
          T(1.0 - h.beta2),
          T(h.lr / bc1),
          T(1.0 / std::sqrt(bc2)),
          T(1.0 / bc2),
          T(h.eps),
          T(h.weight_decay),
          T(1.0 - h.lr * h.weight_decay),
          has_wd && !h.decoupled_weight_decay,
          has_wd && h.decoupled_weight_decay,
          h.maximize};
}

template <class T, bool AMSGRAD, bool EPS_INSIDE>
DEEPOPTIM_INLINE void adam_body(T* __restrict p, const T* __restrict g, T* __restrict m,
                                T* __restrict v, T* __restrict vmax, std::int64_t n,
                                const AdamCoef<T>& c) {
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) {
    T d = c.maximize ? -g[i] : g[i];
    T pi = p[i];
    if (c.decoupled) pi = pi * c.decay;
    if (c.coupled) d = d + c.wd * pi;
    const T mi = c.beta1 * m[i] + c.one_minus_beta1 * d;
    const T vi = c.beta2 * v[i] + c.one_minus_beta2 * (d * d);
    m[i] = mi;
    v[i] = vi;
    T vh = vi;
    if constexpr (AMSGRAD) {
      vh = nan_max(vmax[i], vi);
      vmax[i] = vh;
    }
    T denom;
    if constexpr (EPS_INSIDE) {
      denom = std::sqrt(vh * c.inv_bc2 + c.eps);
    } else {
      denom = std::sqrt(vh) * c.inv_bc2_sqrt + c.eps;
    }
    p[i] = pi - c.step_size * (mi / denom);
  }
}

template <class T>
DEEPOPTIM_INLINE void adam_block_impl(const AdamTensor<T>& t, std::int64_t b, std::int64_t e,
                                      const AdamCoef<T>& c, bool eps_inside) {
  T* p = t.param + b;
  const T* g = t.grad + b;
  T* m = t.exp_avg + b;
  T* v = t.exp_avg_sq + b;
  T* vmax = t.max_exp_avg_sq ? t.max_exp_avg_sq + b : nullptr;
  const std::int64_t n = e - b;
  if (vmax) {
    if (eps_inside) return adam_body<T, true, true>(p, g, m, v, vmax, n, c);
    return adam_body<T, true, false>(p, g, m, v, vmax, n, c);
  }
  if (eps_inside) return adam_body<T, false, true>(p, g, m, v, vmax, n, c);
  return adam_body<T, false, false>(p, g, m, v, vmax, n, c);
}

#define DEEPOPTIM_ADAM_BLOCK_CLONES(T) \
  DEEPOPTIM_CLONES void adam_block(const AdamTensor<T>& t, std::int64_t b, std::int64_t e, const AdamCoef<T>& c, bool eps_inside) { adam_block_impl(t, b, e, c, eps_inside); }
DEEPOPTIM_FOR_FLOATS(DEEPOPTIM_ADAM_BLOCK_CLONES)
#undef DEEPOPTIM_ADAM_BLOCK_CLONES

// ------------------------------------------- Adam on bfloat16 storage, in one loop
// The common low-precision Adam/AdamW step (bfloat16 parameters and/or bfloat16 state,
// no AMSGrad, eps outside the root, rounding to nearest), converting in registers: the
// chunked path (mixed.hpp) widens into float32 chunks and rounds in separate passes,
// which costs more than the update (0.85 vs about 0.5 ns/element in cache, 1 thread).
// The same float32 operations in the same order as adam_body, so the same bits. The
// options that pick a path are template parameters: GCC does not vectorize a loop mixing
// 16-bit and 32-bit lanes whose selects depend on run-time flags.
DEEPOPTIM_INLINE float bf16_load(std::uint16_t x) { return lowp::float_of(std::uint32_t(x) << 16); }
DEEPOPTIM_INLINE std::uint16_t bf16_store(float f) { return lowp::to_bfloat16(f).bits; }

// MASTER: the parameter is read from the float32 master copy, which is updated, and the
// bfloat16 parameter written as its rounding (master_weights=True).
template <bool P16, bool S16, bool MASTER, int WD, bool MAXIMIZE>  // WD: 0 none, 1 coupled, 2 decoupled
DEEPOPTIM_INLINE void adam_bf16_body(void* pv, const void* gv, void* mv, void* vv, float* __restrict master,
                                     std::int64_t n, const AdamCoef<float> c) {
  using PE = std::conditional_t<P16, std::uint16_t, float>;
  using SE = std::conditional_t<S16, std::uint16_t, float>;
  PE* __restrict p = static_cast<PE*>(pv);
  const PE* __restrict g = static_cast<const PE*>(gv);
  SE* __restrict m = static_cast<SE*>(mv);
  SE* __restrict v = static_cast<SE*>(vv);
  const float b1 = c.beta1, omb1 = c.one_minus_beta1, b2 = c.beta2, omb2 = c.one_minus_beta2;
  const float ss = c.step_size, ib = c.inv_bc2_sqrt, eps = c.eps, wd = c.wd, decay = c.decay;
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) {
    const float gi = P16 ? bf16_load(std::uint16_t(g[i])) : float(g[i]);
    float d = MAXIMIZE ? -gi : gi;
    float pi = MASTER ? master[i] : P16 ? bf16_load(std::uint16_t(p[i])) : float(p[i]);
    if constexpr (WD == 2) pi = pi * decay;
    if constexpr (WD == 1) d = d + wd * pi;
    const float mi = b1 * (S16 ? bf16_load(std::uint16_t(m[i])) : float(m[i])) + omb1 * d;
    const float vi = b2 * (S16 ? bf16_load(std::uint16_t(v[i])) : float(v[i])) + omb2 * (d * d);
    if constexpr (S16) {
      m[i] = bf16_store(mi);
      v[i] = bf16_store(vi);
    } else {
      m[i] = mi;
      v[i] = vi;
    }
    const float denom = std::sqrt(vi) * ib + eps;
    const float pn = pi - ss * (mi / denom);
    if constexpr (MASTER) master[i] = pn;
    if constexpr (P16) {
      p[i] = bf16_store(pn);
    } else {
      p[i] = pn;
    }
  }
}

// The operands of block [b, e) of tensor t, and the weight-decay form and maximize as
// compile-time values: run(std::integral_constant<int, WD>, std::bool_constant<MAXIMIZE>,
// p, g, m, v, master, n).
template <bool P16, bool S16, bool MASTER, class Run>
DEEPOPTIM_INLINE void adam_bf16_dispatch(const AdamTensor<float>& t, float* master, std::int64_t b, std::int64_t e,
                                         const AdamCoef<float>& c, Run run) {
  const std::size_t pe = P16 ? 2 : 4, se = S16 ? 2 : 4;
  void* p = reinterpret_cast<char*>(t.param) + std::size_t(b) * pe;
  const void* g = reinterpret_cast<const char*>(t.grad) + std::size_t(b) * pe;
  void* m = reinterpret_cast<char*>(t.exp_avg) + std::size_t(b) * se;
  void* v = reinterpret_cast<char*>(t.exp_avg_sq) + std::size_t(b) * se;
  float* mp = MASTER ? master + b : nullptr;
  const std::int64_t n = e - b;
  using None = std::integral_constant<int, 0>;
  using Coupled = std::integral_constant<int, 1>;
  using Decoupled = std::integral_constant<int, 2>;
  if (c.maximize) {
    if (c.coupled) return run(Coupled{}, std::true_type{}, p, g, m, v, mp, n);
    if (c.decoupled) return run(Decoupled{}, std::true_type{}, p, g, m, v, mp, n);
    return run(None{}, std::true_type{}, p, g, m, v, mp, n);
  }
  if (c.coupled) return run(Coupled{}, std::false_type{}, p, g, m, v, mp, n);
  if (c.decoupled) return run(Decoupled{}, std::false_type{}, p, g, m, v, mp, n);
  return run(None{}, std::false_type{}, p, g, m, v, mp, n);
}

template <bool P16, bool S16, bool MASTER>
DEEPOPTIM_INLINE void adam_bf16_block_impl(const AdamTensor<float>& t, float* master, std::int64_t b, std::int64_t e,
                                           const AdamCoef<float>& c) {
  adam_bf16_dispatch<P16, S16, MASTER>(t, master, b, e, c, [&](auto wd, auto maximize, auto... operands) {
    adam_bf16_body<P16, S16, MASTER, decltype(wd)::value, decltype(maximize)::value>(operands..., c);
  });
}

// The stochastic rounding of a one-loop step: the draws of the block's element b are
// those of element j0 of stream (seed, stream) (mixed.hpp). Only the AVX512-BF16 loop
// takes it; elsewhere a stochastic step runs the chunked path.
struct SrDraws {
  std::uint64_t seed, stream, j0;
};

#define DEEPOPTIM_ADAM_BF16_CLONES(NAME, P16, S16, MASTER) \
  DEEPOPTIM_CLONES void NAME(const AdamTensor<float>& t, float* mp, std::int64_t b, std::int64_t e, const AdamCoef<float>& c, const SrDraws*) { adam_bf16_block_impl<P16, S16, MASTER>(t, mp, b, e, c); }
DEEPOPTIM_ADAM_BF16_CLONES(adam_block_bf16_bf16, true, true, false)
DEEPOPTIM_ADAM_BF16_CLONES(adam_block_bf16_f32, true, false, false)
DEEPOPTIM_ADAM_BF16_CLONES(adam_block_f32_bf16, false, true, false)
DEEPOPTIM_ADAM_BF16_CLONES(adam_block_bf16_master_f32, true, false, true)
DEEPOPTIM_ADAM_BF16_CLONES(adam_block_bf16_master_bf16, true, true, true)
#undef DEEPOPTIM_ADAM_BF16_CLONES

using AdamBf16Block = void (*)(const AdamTensor<float>&, float*, std::int64_t, std::int64_t, const AdamCoef<float>&,
                               const SrDraws*);

#if DEEPOPTIM_AVX512_BF16
// The same loop with AVX512-BF16 (Zen 4, Sapphire Rapids), rounding with vcvtneps2bf16
// (avx512_bf16.hpp: the same bits as lowp::to_bfloat16), three roundings per element; the
// arithmetic is adam_bf16_body's, operation for operation. Stochastic rounding of the
// parameters (SR) also runs here.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
using namespace avx512;

// r: the parameters' draws where SR (stochastic rounding), else null.
template <bool P16, bool S16, bool MASTER, int WD, bool MAXIMIZE, bool FULL, bool SR>
DEEPOPTIM_BF16_TARGET DEEPOPTIM_INLINE void adam_bf16_vec16(char* p, const char* g, char* m, char* v, float* master,
                                                            __mmask16 live, const AdamCoef<float>& c,
                                                            const std::uint16_t* r) {
  const __m512 gi = P16 ? bf16_load16<FULL>(live, g) : f32_load16<FULL>(live, g);
  __m512 d = MAXIMIZE ? _mm512_xor_ps(gi, _mm512_castsi512_ps(_mm512_set1_epi32(std::int32_t(0x80000000u)))) : gi;
  __m512 pi = MASTER ? f32_load16<FULL>(live, master) : P16 ? bf16_load16<FULL>(live, p) : f32_load16<FULL>(live, p);
  if constexpr (WD == 2) pi = _mm512_mul_ps(pi, _mm512_set1_ps(c.decay));
  if constexpr (WD == 1) d = _mm512_add_ps(d, _mm512_mul_ps(_mm512_set1_ps(c.wd), pi));
  const __m512 m0 = S16 ? bf16_load16<FULL>(live, m) : f32_load16<FULL>(live, m);
  const __m512 v0 = S16 ? bf16_load16<FULL>(live, v) : f32_load16<FULL>(live, v);
  const __m512 mi = _mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(c.beta1), m0), _mm512_mul_ps(_mm512_set1_ps(c.one_minus_beta1), d));
  const __m512 vi = _mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(c.beta2), v0),
                                  _mm512_mul_ps(_mm512_set1_ps(c.one_minus_beta2), _mm512_mul_ps(d, d)));
  if constexpr (S16) {
    bf16_store16<FULL>(live, m, mi);
    bf16_store16<FULL>(live, v, vi);
  } else {
    f32_store16<FULL>(live, m, mi);
    f32_store16<FULL>(live, v, vi);
  }
  const __m512 denom = _mm512_add_ps(_mm512_mul_ps(_mm512_sqrt_ps(vi), _mm512_set1_ps(c.inv_bc2_sqrt)), _mm512_set1_ps(c.eps));
  const __m512 pn = _mm512_sub_ps(pi, _mm512_mul_ps(_mm512_set1_ps(c.step_size), _mm512_div_ps(mi, denom)));
  if constexpr (MASTER) f32_store16<FULL>(live, master, pn);
  if constexpr (SR) {
    bf16_store16_stochastic<FULL>(live, p, pn, r);
  } else if constexpr (P16) {
    bf16_store16<FULL>(live, p, pn);
  } else {
    f32_store16<FULL>(live, p, pn);
  }
}

// Elements [i0, i1) of the block; r: the draws of element i0 (SR).
template <bool P16, bool S16, bool MASTER, int WD, bool MAXIMIZE, bool SR>
DEEPOPTIM_BF16_TARGET DEEPOPTIM_INLINE void adam_bf16_run_avx512(char* p, const char* g, char* m, char* v, float* master,
                                                                 std::int64_t i0, std::int64_t i1,
                                                                 const AdamCoef<float>& c, const std::uint16_t* r) {
  const std::int64_t pe = P16 ? 2 : 4, se = S16 ? 2 : 4;
  std::int64_t i = i0;
  for (; i + 16 <= i1; i += 16) {
    adam_bf16_vec16<P16, S16, MASTER, WD, MAXIMIZE, true, SR>(p + i * pe, g + i * pe, m + i * se, v + i * se,
                                                              MASTER ? master + i : nullptr, 0xffff, c,
                                                              SR ? r + (i - i0) : nullptr);
  }
  if (i < i1) {
    adam_bf16_vec16<P16, S16, MASTER, WD, MAXIMIZE, false, SR>(p + i * pe, g + i * pe, m + i * se, v + i * se,
                                                               MASTER ? master + i : nullptr,
                                                               __mmask16((1u << (i1 - i)) - 1u), c,
                                                               SR ? r + (i - i0) : nullptr);
  }
}

template <bool P16, bool S16, bool MASTER, int WD, bool MAXIMIZE, bool SR>
DEEPOPTIM_BF16_TARGET void adam_bf16_body_avx512(void* pv, const void* gv, void* mv, void* vv, float* master,
                                                 std::int64_t n, const AdamCoef<float> c, const SrDraws* sr) {
  char* p = static_cast<char*>(pv);
  const char* g = static_cast<const char*>(gv);
  char* m = static_cast<char*>(mv);
  char* v = static_cast<char*>(vv);
  if constexpr (SR) {
    // The draws of 256 elements at a time, in L1 (as the chunked path takes them).
    alignas(64) std::uint16_t draws[256 + 16];
    for (std::int64_t cb = 0; cb < n; cb += 256) {
      const std::int64_t len = std::min<std::int64_t>(256, n - cb);
      const std::uint64_t j0 = sr->j0 + std::uint64_t(cb);
      philox::fill_draws(draws, j0, std::uint64_t(len), sr->seed, sr->stream);
      adam_bf16_run_avx512<P16, S16, MASTER, WD, MAXIMIZE, true>(p, g, m, v, master, cb, cb + len, c, draws + (j0 & 7u));
    }
  } else {
    adam_bf16_run_avx512<P16, S16, MASTER, WD, MAXIMIZE, false>(p, g, m, v, master, 0, n, c, nullptr);
  }
}

template <bool P16, bool S16, bool MASTER, bool SR>
DEEPOPTIM_BF16_TARGET void adam_bf16_block_avx512(const AdamTensor<float>& t, float* master, std::int64_t b,
                                                  std::int64_t e, const AdamCoef<float>& c, const SrDraws* sr) {
  adam_bf16_dispatch<P16, S16, MASTER>(t, master, b, e, c, [&](auto wd, auto maximize, auto... operands) {
    adam_bf16_body_avx512<P16, S16, MASTER, decltype(wd)::value, decltype(maximize)::value, SR>(operands..., c, sr);
  });
}
#pragma GCC diagnostic pop

#endif

// The one-loop block function for this call, or null where the chunked path must run.
AdamBf16Block adam_bf16_block(const AdamTensor<float>* ts, std::int64_t nt, const lowp::Mixed& mx, bool eps_inside) {
  if (eps_inside || nt == 0) return nullptr;
  const lowp::Kind pk = mx.kinds[0], sk = mx.kinds[2];
  for (std::int64_t t = 0; t < nt; ++t) {
    const lowp::Kind* k = mx.kinds + t * mx.noperands;
    if (ts[t].max_exp_avg_sq || k[0] != pk || k[1] != pk || k[2] != sk || k[3] != sk) return nullptr;
  }
  using K = lowp::Kind;
#if DEEPOPTIM_AVX512_BF16
  if (has_avx512_bf16()) {
    if (mx.stochastic) {  // bfloat16 parameters without masters (the bindings' rule)
      if (pk != K::BF16 || mx.masters) return nullptr;
      if (sk == K::BF16) return adam_bf16_block_avx512<true, true, false, true>;
      if (sk == K::F32) return adam_bf16_block_avx512<true, false, false, true>;
      return nullptr;
    }
    if (mx.masters) {
      if (pk == K::BF16 && sk == K::F32) return adam_bf16_block_avx512<true, false, true, false>;
      if (pk == K::BF16 && sk == K::BF16) return adam_bf16_block_avx512<true, true, true, false>;
      return nullptr;
    }
    if (pk == K::BF16 && sk == K::BF16) return adam_bf16_block_avx512<true, true, false, false>;
    if (pk == K::BF16 && sk == K::F32) return adam_bf16_block_avx512<true, false, false, false>;
    if (pk == K::F32 && sk == K::BF16) return adam_bf16_block_avx512<false, true, false, false>;
    return nullptr;
  }
#endif
  if (mx.stochastic) return nullptr;
  if (mx.masters) {
    if (pk == K::BF16 && sk == K::F32) return adam_block_bf16_master_f32;
    if (pk == K::BF16 && sk == K::BF16) return adam_block_bf16_master_bf16;
    return nullptr;
  }
  if (pk == K::BF16 && sk == K::BF16) return adam_block_bf16_bf16;
  if (pk == K::BF16 && sk == K::F32) return adam_block_bf16_f32;
  if (pk == K::F32 && sk == K::BF16) return adam_block_f32_bf16;
  return nullptr;
}

// ------------------------------------------------------------------------- Adamax
template <class T>
struct AdamaxCoef {
  T one_minus_beta1, beta2, eps, wd, clr;
  bool has_wd, maximize;
};

template <class T>
AdamaxCoef<T> adamax_coef(const AdamaxHyper& h) {
  const double clr = h.lr / (1.0 - std::pow(h.beta1, double(h.step)));
  return {T(1.0 - h.beta1), T(h.beta2), T(h.eps), T(h.weight_decay), T(clr), h.weight_decay != 0.0, h.maximize};
}

template <class T>
DEEPOPTIM_INLINE void adamax_block_impl(const AdamaxTensor<T>& t, std::int64_t b, std::int64_t e,
                                        const AdamaxCoef<T>& c) {
  T* __restrict p = t.param + b;
  const T* __restrict g = t.grad + b;
  T* __restrict m = t.exp_avg + b;
  T* __restrict u = t.exp_inf + b;
  const std::int64_t n = e - b;
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) {
    T d = c.maximize ? -g[i] : g[i];
    if (c.has_wd) d = d + c.wd * p[i];
    const T mi = m[i] + c.one_minus_beta1 * (d - m[i]);  // torch's lerp(m, g, 1 - b1)
    const T ui = nan_max(c.beta2 * u[i], std::fabs(d) + c.eps);
    m[i] = mi;
    u[i] = ui;
    p[i] = p[i] - (c.clr * mi) / ui;
  }
}

#define DEEPOPTIM_ADAMAX_BLOCK_CLONES(T) \
  DEEPOPTIM_CLONES void adamax_block(const AdamaxTensor<T>& t, std::int64_t b, std::int64_t e, const AdamaxCoef<T>& c) { adamax_block_impl(t, b, e, c); }
DEEPOPTIM_FOR_FLOATS(DEEPOPTIM_ADAMAX_BLOCK_CLONES)
#undef DEEPOPTIM_ADAMAX_BLOCK_CLONES

// -------------------------------------------------------------------------- RAdam
template <class T>
struct RadamCoef {
  T one_minus_beta1, beta2, one_minus_beta2, bc1, lr, sqrt_bc2, eps, rect, wd, decay;
  bool rectify, coupled, decoupled, maximize;
};

template <class T>
RadamCoef<T> radam_coef(const RadamHyper& h) {
  const double t = double(h.step);
  const double bc1 = 1.0 - std::pow(h.beta1, t), bc2 = 1.0 - std::pow(h.beta2, t);
  const double rho_inf = 2.0 / (1.0 - h.beta2) - 1.0;
  const double rho_t = rho_inf - 2.0 * t * std::pow(h.beta2, t) / bc2;
  const bool rectify = rho_t > 5.0;
  const double rect =
      rectify ? std::sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t)) : 1.0;
  const bool has_wd = h.weight_decay != 0.0;
  return {T(1.0 - h.beta1), T(h.beta2), T(1.0 - h.beta2), T(bc1), T(h.lr), T(std::sqrt(bc2)), T(h.eps), T(rect),
          T(h.weight_decay), T(1.0 - h.lr * h.weight_decay), rectify, has_wd && !h.decoupled_weight_decay,
          has_wd && h.decoupled_weight_decay, h.maximize};
}

// RECT is a template parameter: a division under a run-time condition keeps the loop scalar.
template <class T, bool RECT>
DEEPOPTIM_INLINE void radam_body(T* __restrict p, const T* __restrict g, T* __restrict m, T* __restrict v,
                                 std::int64_t n, const RadamCoef<T> c) {  // a copy: its flags cannot alias the arrays
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) {
    T d = c.maximize ? -g[i] : g[i];
    T pi = p[i];
    if (c.decoupled) pi = pi * c.decay;
    if (c.coupled) d = d + c.wd * pi;
    const T mi = m[i] + c.one_minus_beta1 * (d - m[i]);  // torch's lerp(m, g, 1 - b1)
    const T vi = c.beta2 * v[i] + c.one_minus_beta2 * (d * d);
    m[i] = mi;
    v[i] = vi;
    const T step = (mi / c.bc1) * c.lr;
    if constexpr (RECT) {
      p[i] = pi - (step * (c.sqrt_bc2 / (std::sqrt(vi) + c.eps))) * c.rect;
    } else {
      p[i] = pi - step;
    }
  }
}

template <class T>
DEEPOPTIM_INLINE void radam_block_impl(const RadamTensor<T>& t, std::int64_t b, std::int64_t e,
                                       const RadamCoef<T>& c) {
  if (c.rectify) return radam_body<T, true>(t.param + b, t.grad + b, t.exp_avg + b, t.exp_avg_sq + b, e - b, c);
  radam_body<T, false>(t.param + b, t.grad + b, t.exp_avg + b, t.exp_avg_sq + b, e - b, c);
}

#define DEEPOPTIM_RADAM_BLOCK_CLONES(T) \
  DEEPOPTIM_CLONES void radam_block(const RadamTensor<T>& t, std::int64_t b, std::int64_t e, const RadamCoef<T>& c) { radam_block_impl(t, b, e, c); }
DEEPOPTIM_FOR_FLOATS(DEEPOPTIM_RADAM_BLOCK_CLONES)
#undef DEEPOPTIM_RADAM_BLOCK_CLONES

// --------------------------------------------------------------------------- Lion
template <class T>
struct LionCoef {
  T beta1, one_minus_beta1, beta2, one_minus_beta2, lr, decay;
  bool maximize;
};

template <class T>
DEEPOPTIM_INLINE void lion_block_impl(const LionTensor<T>& t, std::int64_t b, std::int64_t e, const LionCoef<T>& c) {
  T* __restrict p = t.param + b;
  const T* __restrict g = t.grad + b;
  T* __restrict m = t.exp_avg + b;
  const std::int64_t n = e - b;
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) {
    const T d = c.maximize ? -g[i] : g[i];
    const T u = c.beta1 * m[i] + c.one_minus_beta1 * d;
    const T s = u > T(0) ? T(1) : (u < T(0) ? T(-1) : u);  // sign, keeping 0 and NaN
    p[i] = p[i] * c.decay - c.lr * s;
    m[i] = c.beta2 * m[i] + c.one_minus_beta2 * d;
  }
}

#define DEEPOPTIM_LION_BLOCK_CLONES(T) \
  DEEPOPTIM_CLONES void lion_block(const LionTensor<T>& t, std::int64_t b, std::int64_t e, const LionCoef<T>& c) { lion_block_impl(t, b, e, c); }
DEEPOPTIM_FOR_FLOATS(DEEPOPTIM_LION_BLOCK_CLONES)
#undef DEEPOPTIM_LION_BLOCK_CLONES

// ----------------------------------------------------------- Schedule-Free AdamW
template <class T>
struct ScheduleFreeAdamwCoef {
  T beta2, one_minus_beta2, bc2, eps, wd, ckp1, one_minus_ckp1, y_coef, lr;
  bool has_wd, small_weight;
};

template <class T>
ScheduleFreeAdamwCoef<T> schedule_free_adamw_coef(const ScheduleFreeAdamwHyper& h) {
  const double bc2 = 1.0 - std::pow(h.beta2, double(h.step));
  return {T(h.beta2), T(1.0 - h.beta2), T(bc2), T(h.eps), T(h.weight_decay), T(h.ckp1), T(1.0 - h.ckp1),
          T(h.lr * (h.beta1 * (1.0 - h.ckp1) - 1.0)), T(h.lr), h.weight_decay != 0.0, h.ckp1 < 0.5};
}

template <class T, bool SmallWeight>
DEEPOPTIM_INLINE void schedule_free_adamw_body(T* __restrict y, const T* __restrict g, T* __restrict z,
                                               T* __restrict v, std::int64_t n, const ScheduleFreeAdamwCoef<T>& c) {
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) {
    const T gi = g[i];
    const T yi = y[i];
    const T zi = z[i];
    const T vi = v[i] * c.beta2 + (c.one_minus_beta2 * gi) * gi;
    T u = gi / (std::sqrt(vi / c.bc2) + c.eps);
    if (c.has_wd) u = u + c.wd * yi;  // decay evaluated at y
    // torch's lerp(y, z, ckp1): the form that is exact at its end of the interval
    const T yl = SmallWeight ? yi + c.ckp1 * (zi - yi) : zi - (zi - yi) * c.one_minus_ckp1;
    v[i] = vi;
    y[i] = yl + c.y_coef * u;
    z[i] = zi - c.lr * u;
  }
}

template <class T>
DEEPOPTIM_INLINE void schedule_free_adamw_block_impl(const ScheduleFreeAdamwTensor<T>& t, std::int64_t b,
                                                     std::int64_t e, const ScheduleFreeAdamwCoef<T>& c) {
  if (c.small_weight) return schedule_free_adamw_body<T, true>(t.param + b, t.grad + b, t.z + b, t.exp_avg_sq + b, e - b, c);
  schedule_free_adamw_body<T, false>(t.param + b, t.grad + b, t.z + b, t.exp_avg_sq + b, e - b, c);
}

#define DEEPOPTIM_SFADAMW_BLOCK_CLONES(T) \
  DEEPOPTIM_CLONES void schedule_free_adamw_block(const ScheduleFreeAdamwTensor<T>& t, std::int64_t b, std::int64_t e, const ScheduleFreeAdamwCoef<T>& c) { schedule_free_adamw_block_impl(t, b, e, c); }
DEEPOPTIM_FOR_FLOATS(DEEPOPTIM_SFADAMW_BLOCK_CLONES)
#undef DEEPOPTIM_SFADAMW_BLOCK_CLONES

// ----------------------------------------------------------------------- Adadelta
template <class T>
struct AdadeltaCoef {
  T lr, rho, one_minus_rho, eps, wd;
  bool has_wd, maximize;
};

template <class T>
DEEPOPTIM_INLINE void adadelta_block_impl(const AdadeltaTensor<T>& t, std::int64_t b, std::int64_t e,
                                          const AdadeltaCoef<T> c) {  // a copy: cannot alias the arrays
  T* __restrict p = t.param + b;
  const T* __restrict g = t.grad + b;
  T* __restrict sq = t.square_avg + b;
  T* __restrict acc = t.acc_delta + b;
  const std::int64_t n = e - b;
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) {
    const T pi = p[i];  // loaded unconditionally: a load under a condition keeps the loop scalar
    const T ai = acc[i];
    T d = c.maximize ? -g[i] : g[i];
    if (c.has_wd) d = d + c.wd * pi;
    const T si = c.rho * sq[i] + c.one_minus_rho * (d * d);
    const T delta = (std::sqrt(ai + c.eps) / std::sqrt(si + c.eps)) * d;
    sq[i] = si;
    acc[i] = c.rho * ai + c.one_minus_rho * (delta * delta);
    p[i] = pi - c.lr * delta;
  }
}

#define DEEPOPTIM_ADADELTA_BLOCK_CLONES(T) \
  DEEPOPTIM_CLONES void adadelta_block(const AdadeltaTensor<T>& t, std::int64_t b, std::int64_t e, const AdadeltaCoef<T>& c) { adadelta_block_impl(t, b, e, c); }
DEEPOPTIM_FOR_FLOATS(DEEPOPTIM_ADADELTA_BLOCK_CLONES)
#undef DEEPOPTIM_ADADELTA_BLOCK_CLONES

// -------------------------------------------------------------------------- Rprop
template <class T>
struct RpropCoef {
  T etaminus, etaplus, step_min, step_max;
  bool maximize;
};

// Plain selects on values only (no conditional loads or stores), maximize a template
// parameter: GCC keeps a loop with these nested selects scalar otherwise.
template <class T, bool MAXIMIZE>
DEEPOPTIM_INLINE void rprop_body(T* __restrict p, const T* __restrict g, T* __restrict prev, T* __restrict step,
                                 std::int64_t n, const RpropCoef<T> c) {
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) {
    const T d = MAXIMIZE ? -g[i] : g[i];
    const T gp = d * prev[i];
    const T eq = gp == T(0) ? T(1) : gp;  // NaN stays
    const T lt = gp < T(0) ? c.etaminus : eq;
    const T s = gp > T(0) ? c.etaplus : lt;
    const T raw = step[i] * s;
    const T hi = raw > c.step_max ? c.step_max : raw;
    const T si = raw < c.step_min ? c.step_min : hi;  // NaN stays
    const T gi = s == c.etaminus ? T(0) : d;
    const T neg = gi < T(0) ? T(-1) : gi;
    const T sg = gi > T(0) ? T(1) : neg;
    step[i] = si;
    p[i] = p[i] - sg * si;
    prev[i] = gi;
  }
}

template <class T>
DEEPOPTIM_INLINE void rprop_block_impl(const RpropTensor<T>& t, std::int64_t b, std::int64_t e,
                                       const RpropCoef<T>& c) {
  if (c.maximize) return rprop_body<T, true>(t.param + b, t.grad + b, t.prev + b, t.step_size + b, e - b, c);
  rprop_body<T, false>(t.param + b, t.grad + b, t.prev + b, t.step_size + b, e - b, c);
}

#define DEEPOPTIM_RPROP_BLOCK_CLONES(T) \
  DEEPOPTIM_CLONES void rprop_block(const RpropTensor<T>& t, std::int64_t b, std::int64_t e, const RpropCoef<T>& c) { rprop_block_impl(t, b, e, c); }
DEEPOPTIM_FOR_FLOATS(DEEPOPTIM_RPROP_BLOCK_CLONES)
#undef DEEPOPTIM_RPROP_BLOCK_CLONES

// -------------------------------------------------------------------------- NAdam
template <class T>
struct NadamCoef {
  T one_minus_beta1, beta2, one_minus_beta2, bc2, eps, wd, decay, c_grad, c_avg;
  bool coupled, decoupled, maximize;
};

// What does not depend on the tensor: the momentum cache mu_t, mu_{t+1} and 1 - b2^t.
struct NadamStep {
  double mu, mu_next, bc2;
};

NadamStep nadam_step(const NadamHyper& h) {
  const double t = double(h.step);
  return {h.beta1 * (1.0 - 0.5 * std::pow(0.96, t * h.momentum_decay)),
          h.beta1 * (1.0 - 0.5 * std::pow(0.96, (t + 1.0) * h.momentum_decay)),
          1.0 - std::pow(h.beta2, t)};
}

// The tensor's new mu_product: its old value times mu, in the state's own dtype (torch's
// `mu_product *= mu` on a 0-d tensor rounds mu to that dtype first).
double nadam_product(const ScalarState& s, double mu) {
  return s.f64 ? *static_cast<const double*>(s.ptr) * mu
               : double(*static_cast<const float*>(s.ptr) * float(mu));
}

template <class T>
NadamCoef<T> nadam_coef(const NadamHyper& h, const NadamStep& st, double mu_product) {
  const double c_grad = (-h.lr * (1.0 - st.mu)) / (1.0 - mu_product);
  const double c_avg = (-h.lr * st.mu_next) / (1.0 - mu_product * st.mu_next);
  const bool has_wd = h.weight_decay != 0.0;
  return {T(1.0 - h.beta1), T(h.beta2), T(1.0 - h.beta2), T(st.bc2), T(h.eps), T(h.weight_decay),
          T(1.0 - h.lr * h.weight_decay), T(c_grad), T(c_avg), has_wd && !h.decoupled_weight_decay,
          has_wd && h.decoupled_weight_decay, h.maximize};
}

template <class T>
DEEPOPTIM_INLINE void nadam_block_impl(const NadamTensor<T>& t, std::int64_t b, std::int64_t e,
                                       const NadamCoef<T> c) {  // a copy: cannot alias the arrays
  T* __restrict p = t.param + b;
  const T* __restrict g = t.grad + b;
  T* __restrict m = t.exp_avg + b;
  T* __restrict v = t.exp_avg_sq + b;
  const std::int64_t n = e - b;
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) {
    const T p0 = p[i];
    const T d0 = c.maximize ? -g[i] : g[i];
    const T pi = c.decoupled ? p0 * c.decay : p0;
    const T d = c.coupled ? d0 + c.wd * pi : d0;
    const T mi = m[i] + c.one_minus_beta1 * (d - m[i]);  // torch's lerp(m, g, 1 - b1)
    const T vi = v[i] * c.beta2 + (c.one_minus_beta2 * d) * d;
    const T den = std::sqrt(vi / c.bc2) + c.eps;
    m[i] = mi;
    v[i] = vi;
    const T pg = pi + (c.c_grad * d) / den;  // torch's two addcdiv_, in its order
    p[i] = pg + (c.c_avg * mi) / den;
  }
}

#define DEEPOPTIM_NADAM_BLOCK_CLONES(T) \
  DEEPOPTIM_CLONES void nadam_block(const NadamTensor<T>& t, std::int64_t b, std::int64_t e, const NadamCoef<T>& c) { nadam_block_impl(t, b, e, c); }
DEEPOPTIM_FOR_FLOATS(DEEPOPTIM_NADAM_BLOCK_CLONES)
#undef DEEPOPTIM_NADAM_BLOCK_CLONES

// --------------------------------------------------------------------------- ASGD
template <class T>
struct AsgdCoef {
  T wd, decay, neg_eta, mu;
  bool has_wd, average, maximize;
};

template <class T>
AsgdCoef<T> asgd_coef(const AsgdHyper& h, const AsgdTensor<T>& t) {
  const double eta = t.eta.get(), mu = t.mu.get();
  return {T(h.weight_decay), T(1.0 - h.lambd * eta), T(-eta), T(mu), h.weight_decay != 0.0, mu != 1.0, h.maximize};
}

template <class T>
DEEPOPTIM_INLINE void asgd_block_impl(const AsgdTensor<T>& t, std::int64_t b, std::int64_t e,
                                      const AsgdCoef<T> c) {  // a copy: cannot alias the arrays
  T* __restrict p = t.param + b;
  const T* __restrict g = t.grad + b;
  T* __restrict ax = t.ax + b;
  const std::int64_t n = e - b;
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) {
    const T p0 = p[i];
    const T a0 = ax[i];  // loaded unconditionally: a load under a condition keeps the loop scalar
    const T d0 = c.maximize ? -g[i] : g[i];
    const T d = c.has_wd ? d0 + c.wd * p0 : d0;
    const T pd = p0 * c.decay;
    const T pi = pd + c.neg_eta * d;
    p[i] = pi;
    ax[i] = c.average ? a0 + (pi - a0) * c.mu : pi;
  }
}

#define DEEPOPTIM_ASGD_BLOCK_CLONES(T) \
  DEEPOPTIM_CLONES void asgd_block(const AsgdTensor<T>& t, std::int64_t b, std::int64_t e, const AsgdCoef<T>& c) { asgd_block_impl(t, b, e, c); }
DEEPOPTIM_FOR_FLOATS(DEEPOPTIM_ASGD_BLOCK_CLONES)
#undef DEEPOPTIM_ASGD_BLOCK_CLONES

// --------------------------------------------------------------------------- LAMB
template <class T>
struct LambCoef {
  T beta1, one_minus_beta1, beta2, one_minus_beta2, inv_bc1, inv_bc2, eps, wd;
};

template <class T>
LambCoef<T> lamb_coef(const LambHyper& h) {
  double bc1 = 1.0, bc2 = 1.0;
  if (h.bias_correction) {
    bc1 = 1.0 - std::pow(h.beta1, double(h.step));
    bc2 = 1.0 - std::pow(h.beta2, double(h.step));
  }
  return {T(h.beta1), T(1.0 - h.beta1), T(h.beta2), T(1.0 - h.beta2), T(1.0 / bc1), T(1.0 / bc2),
          T(h.eps),   T(h.weight_decay)};
}

// r = (m/bc1) / (sqrt(v/bc2) + eps) + wd*p: the same expression in both passes.
template <class T>
DEEPOPTIM_INLINE T lamb_r(T m, T v, T p, const LambCoef<T>& c, T wd) {
  return (m * c.inv_bc1) / (std::sqrt(v * c.inv_bc2) + c.eps) + wd * p;
}

// m' = b1*m + (1-b1)*g and v' = b2*v + (1-b2)*g^2: the same expressions in every pass.
template <class T>
DEEPOPTIM_INLINE T lamb_m(T m, T g, const LambCoef<T>& c) {
  return c.beta1 * m + c.one_minus_beta1 * g;
}
template <class T>
DEEPOPTIM_INLINE T lamb_v(T v, T g, const LambCoef<T>& c) {
  return c.beta2 * v + c.one_minus_beta2 * (g * g);
}

// Pass 1: update m, v; partials of ||p||^2 and ||r||^2.
template <class T>
DEEPOPTIM_INLINE void lamb_pass1_impl(const LambTensor<T>& t, std::int64_t b, std::int64_t e,
                                      const LambCoef<T>& c, double* pn, double* rn) {
  const T* __restrict p = t.param + b;
  const T* __restrict g = t.grad + b;
  T* __restrict m = t.exp_avg + b;
  T* __restrict v = t.exp_avg_sq + b;
  const T wd = t.adapt ? c.wd : T(0);
  // The update in one SIMD loop, r kept in a block-sized buffer; then both sums in the
  // fixed lane order over data still in L1 (fusing them into one loop ran 3x slower).
  alignas(64) T rbuf[parallel::kBlock];
  const std::int64_t n = e - b;
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) {
    const T mi = lamb_m(m[i], g[i], c);
    const T vi = lamb_v(v[i], g[i], c);
    m[i] = mi;
    v[i] = vi;
    rbuf[i] = lamb_r(mi, vi, p[i], c, wd);
  }
  double pacc[parallel::kLanes] = {}, racc[parallel::kLanes] = {};
  parallel::for_lanes(n, [&](std::int64_t i, std::int64_t l) {
    pacc[l] += double(p[i]) * double(p[i]);
    racc[l] += double(rbuf[i]) * double(rbuf[i]);
  });
  *pn = parallel::lanes_total(pacc);
  *rn = parallel::lanes_total(racc);
}

// Pass 2: p -= step * r.
template <class T>
DEEPOPTIM_INLINE void lamb_pass2_impl(const LambTensor<T>& t, std::int64_t b, std::int64_t e,
                                      const LambCoef<T>& c, T step) {
  T* __restrict p = t.param + b;
  const T* __restrict m = t.exp_avg + b;
  const T* __restrict v = t.exp_avg_sq + b;
  const T wd = t.adapt ? c.wd : T(0);
  const std::int64_t n = e - b;
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) p[i] = p[i] - step * lamb_r(m[i], v[i], p[i], c, wd);
}

// --------------------------------------------------------------------------- LARS
template <class T>
DEEPOPTIM_INLINE void lars_norms_impl(const LarsTensor<T>& t, std::int64_t b, std::int64_t e,
                                      double* pn, double* gn) {
  const T* __restrict p = t.param + b;
  const T* __restrict g = t.grad + b;
  double pacc[parallel::kLanes] = {}, gacc[parallel::kLanes] = {};
  parallel::for_lanes(e - b, [&](std::int64_t i, std::int64_t l) {
    pacc[l] += double(p[i]) * double(p[i]);
    gacc[l] += double(g[i]) * double(g[i]);
  });
  *pn = parallel::lanes_total(pacc);
  *gn = parallel::lanes_total(gacc);
}

template <class T>
DEEPOPTIM_INLINE void lars_update_impl(const LarsTensor<T>& t, std::int64_t b, std::int64_t e,
                                       T mu, T scaled_lr, T wd) {
  T* __restrict p = t.param + b;
  const T* __restrict g = t.grad + b;
  T* __restrict buf = t.momentum_buffer ? t.momentum_buffer + b : nullptr;
  const std::int64_t n = e - b;
  if (buf) {
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) {
      const T v = mu * buf[i] + scaled_lr * (g[i] + wd * p[i]);
      buf[i] = v;
      p[i] = p[i] - v;
    }
  } else {
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) p[i] = p[i] - scaled_lr * (g[i] + wd * p[i]);
  }
}

// ------------------------------------------------- LAMB and LARS on mixed storage
// A step on 16-bit or 8-bit storage (lowp::Mixed) runs on float32 chunks (mixed.hpp).
// LAMB's pass 1 then writes nothing: it computes m, v and r of each chunk from the stored
// values and adds the norms; pass 2 computes m and v again from the same stored values
// (the same float32 operations, so the same bits), stores them and updates p. Pass 2
// thus uses the float32 m and v of this step, not their rounding (which the float32
// kernel's pass 2, reading back what pass 1 stored, would see if the state were rounded):
// exactly the twin's "widen, the float32 step, round".

// Pass 1 on one chunk of n elements: lane partials of ||p||^2 and ||r||^2, carried
// across the chunks of a block (lane = element index % kLanes, as for_lanes).
DEEPOPTIM_INLINE void lamb_norms_chunk_impl(const LambTensor<float>& t, std::int64_t n, const LambCoef<float>& c,
                                            double* pacc, double* racc) {
  const float* __restrict p = t.param;
  const float* __restrict g = t.grad;
  const float* __restrict m = t.exp_avg;
  const float* __restrict v = t.exp_avg_sq;
  const float wd = t.adapt ? c.wd : 0.0f;
  alignas(64) float rbuf[lowp::kChunk];
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) {
    const float mi = lamb_m(m[i], g[i], c);
    const float vi = lamb_v(v[i], g[i], c);
    rbuf[i] = lamb_r(mi, vi, p[i], c, wd);
  }
  parallel::for_lanes(n, [&](std::int64_t i, std::int64_t l) {
    pacc[l] += double(p[i]) * double(p[i]);
    racc[l] += double(rbuf[i]) * double(rbuf[i]);
  });
}

// Pass 2 on one chunk: m, v again, stored; p -= step * r.
DEEPOPTIM_INLINE void lamb_update_chunk_impl(const LambTensor<float>& t, std::int64_t n, const LambCoef<float>& c,
                                             float step) {
  float* __restrict p = t.param;
  const float* __restrict g = t.grad;
  float* __restrict m = t.exp_avg;
  float* __restrict v = t.exp_avg_sq;
  const float wd = t.adapt ? c.wd : 0.0f;
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) {
    const float mi = lamb_m(m[i], g[i], c);
    const float vi = lamb_v(v[i], g[i], c);
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] - step * lamb_r(mi, vi, p[i], c, wd);
  }
}

// LARS's norms on one chunk (its update is lars_update on the chunk).
DEEPOPTIM_INLINE void lars_norms_chunk_impl(const LarsTensor<float>& t, std::int64_t n, double* pacc, double* gacc) {
  const float* __restrict p = t.param;
  const float* __restrict g = t.grad;
  parallel::for_lanes(n, [&](std::int64_t i, std::int64_t l) {
    pacc[l] += double(p[i]) * double(p[i]);
    gacc[l] += double(g[i]) * double(g[i]);
  });
}

DEEPOPTIM_CLONES void lamb_norms_chunk(const LambTensor<float>& t, std::int64_t n, const LambCoef<float>& c,
                                       double* pacc, double* racc) {
  lamb_norms_chunk_impl(t, n, c, pacc, racc);
}
DEEPOPTIM_CLONES void lamb_update_chunk(const LambTensor<float>& t, std::int64_t n, const LambCoef<float>& c,
                                        float step) {
  lamb_update_chunk_impl(t, n, c, step);
}
DEEPOPTIM_CLONES void lars_norms_chunk(const LarsTensor<float>& t, std::int64_t n, double* pacc, double* gacc) {
  lars_norms_chunk_impl(t, n, pacc, gacc);
}

// ----------------------------------------------------------------- regularization
template <class T>
DEEPOPTIM_INLINE void penalty_impl(const PenaltyTensor<T>& t, std::int64_t b, std::int64_t e, T l1, T l2) {
  T* __restrict g = t.grad + b;
  const T* __restrict p = t.param + b;
  const std::int64_t n = e - b;
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) {
    const T s = p[i] > T(0) ? T(1) : (p[i] < T(0) ? T(-1) : T(0));
    g[i] = g[i] + l1 * s + l2 * p[i];
  }
}

template <class T>
DEEPOPTIM_INLINE void decay_impl(T* __restrict p, std::int64_t n, T f) {
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) p[i] = p[i] * f;
}

template <class T>
DEEPOPTIM_INLINE void soft_threshold_impl(T* __restrict p, std::int64_t n, T thr) {
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) {
    const T a = std::fabs(p[i]) - thr;
    const T mag = a > T(0) ? a : T(0);
    p[i] = p[i] > T(0) ? mag : (p[i] < T(0) ? -mag : p[i]);  // keeps 0 and NaN as they are
  }
}

#define DEEPOPTIM_EXTRA_CLONES(T)                                                                  \
  DEEPOPTIM_CLONES void lamb_pass1(const LambTensor<T>& t, std::int64_t b, std::int64_t e,         \
                                   const LambCoef<T>& c, double* pn, double* rn) {                 \
    lamb_pass1_impl(t, b, e, c, pn, rn);                                                           \
  }                                                                                                \
  DEEPOPTIM_CLONES void lamb_pass2(const LambTensor<T>& t, std::int64_t b, std::int64_t e,         \
                                   const LambCoef<T>& c, T step) {                                 \
    lamb_pass2_impl(t, b, e, c, step);                                                             \
  }                                                                                                \
  DEEPOPTIM_CLONES void lars_norms(const LarsTensor<T>& t, std::int64_t b, std::int64_t e,         \
                                   double* pn, double* gn) {                                       \
    lars_norms_impl(t, b, e, pn, gn);                                                              \
  }                                                                                                \
  DEEPOPTIM_CLONES void lars_update(const LarsTensor<T>& t, std::int64_t b, std::int64_t e, T mu,  \
                                    T lr, T wd) {                                                  \
    lars_update_impl(t, b, e, mu, lr, wd);                                                         \
  }                                                                                                \
  DEEPOPTIM_CLONES void penalty_blk(const PenaltyTensor<T>& t, std::int64_t b, std::int64_t e,     \
                                    T l1, T l2) {                                                  \
    penalty_impl(t, b, e, l1, l2);                                                                 \
  }                                                                                                \
  DEEPOPTIM_CLONES void soft_threshold_blk(T* p, std::int64_t n, T thr) { soft_threshold_impl(p, n, thr); } \
  DEEPOPTIM_CLONES void decay_blk(T* p, std::int64_t n, T f) { decay_impl(p, n, f); }

DEEPOPTIM_FOR_FLOATS(DEEPOPTIM_EXTRA_CLONES)
#undef DEEPOPTIM_EXTRA_CLONES

// Adds the per-block partials of each tensor in block order.
template <class Tensor>
void per_tensor_sums(const Tensor* ts, std::int64_t ntensors, const double* partial, double* out) {
  std::int64_t k = 0;
  for (std::int64_t t = 0; t < ntensors; ++t) {
    double acc = 0.0;
    for (std::int64_t j = 0, nb = parallel::num_blocks(ts[t].size); j < nb; ++j) acc += partial[k++];
    out[t] = acc;
  }
}

}  // namespace

// -------------------------------------------------------------------------- drivers
template <class T>
void sgd(const SgdTensor<T>* tensors, std::int64_t ntensors, const SgdHyper& h, const lowp::Mixed* mixed) {
  const SgdCoef<T> c = sgd_coef<T>(h);
  lowp::for_each_block(tensors, ntensors, mixed, [&](const auto& tensor, std::int64_t b, std::int64_t e) { sgd_block(tensor, b, e, c); });
}

template <class T>
void adagrad(const AdagradTensor<T>* tensors, std::int64_t ntensors, const AdagradHyper& h, const lowp::Mixed* mixed) {
  const AdagradCoef<T> c = adagrad_coef<T>(h);
  lowp::for_each_block(tensors, ntensors, mixed, [&](const auto& tensor, std::int64_t b, std::int64_t e) { adagrad_block(tensor, b, e, c); });
}

template <class T>
void rmsprop(const RmspropTensor<T>* tensors, std::int64_t ntensors, const RmspropHyper& h, const lowp::Mixed* mixed) {
  const RmspropCoef<T> c = rmsprop_coef<T>(h);
  lowp::for_each_block(tensors, ntensors, mixed, [&](const auto& tensor, std::int64_t b, std::int64_t e) { rmsprop_block(tensor, b, e, c); });
}

template <class T>
void adam(const AdamTensor<T>* tensors, std::int64_t ntensors, const AdamHyper& h, const lowp::Mixed* mixed) {
  const AdamCoef<T> c = adam_coef<T>(h);
  const bool eps_inside = h.eps_inside_sqrt;
  if constexpr (std::is_same<T, float>::value) {
    if (mixed) {
      if (const AdamBf16Block block = adam_bf16_block(tensors, ntensors, *mixed, eps_inside)) {
        parallel::for_each_block(
            ntensors, [&](std::int64_t t) { return tensors[t].size; },
            [&](std::int64_t t, std::int64_t b, std::int64_t e) {
              const SrDraws sr{mixed->seed, mixed->stream, mixed->stochastic ? mixed->first[t] + std::uint64_t(b) : 0};
              block(tensors[t], mixed->masters ? mixed->masters[t] : nullptr, b, e, c, mixed->stochastic ? &sr : nullptr);
            });
        return;
      }
    }
  }
  lowp::for_each_block(tensors, ntensors, mixed, [&](const auto& tensor, std::int64_t b, std::int64_t e) {
        adam_block(tensor, b, e, c, eps_inside);
      });
}

template <class T>
void adamax(const AdamaxTensor<T>* tensors, std::int64_t ntensors, const AdamaxHyper& h, const lowp::Mixed* mixed) {
  const AdamaxCoef<T> c = adamax_coef<T>(h);
  lowp::for_each_block(tensors, ntensors, mixed, [&](const auto& tensor, std::int64_t b, std::int64_t e) { adamax_block(tensor, b, e, c); });
}

template <class T>
void radam(const RadamTensor<T>* tensors, std::int64_t ntensors, const RadamHyper& h, const lowp::Mixed* mixed) {
  const RadamCoef<T> c = radam_coef<T>(h);
  lowp::for_each_block(tensors, ntensors, mixed, [&](const auto& tensor, std::int64_t b, std::int64_t e) { radam_block(tensor, b, e, c); });
}

template <class T>
void lion(const LionTensor<T>* tensors, std::int64_t ntensors, const LionHyper& h, const lowp::Mixed* mixed) {
  const LionCoef<T> c{T(h.beta1), T(1.0 - h.beta1), T(h.beta2), T(1.0 - h.beta2), T(h.lr),
                      T(1.0 - h.lr * h.weight_decay), h.maximize};
  lowp::for_each_block(tensors, ntensors, mixed, [&](const auto& tensor, std::int64_t b, std::int64_t e) { lion_block(tensor, b, e, c); });
}

template <class T>
void schedule_free_adamw(const ScheduleFreeAdamwTensor<T>* tensors, std::int64_t ntensors,
                         const ScheduleFreeAdamwHyper& h, const lowp::Mixed* mixed) {
  const ScheduleFreeAdamwCoef<T> c = schedule_free_adamw_coef<T>(h);
  lowp::for_each_block(tensors, ntensors, mixed, [&](const auto& tensor, std::int64_t b, std::int64_t e) { schedule_free_adamw_block(tensor, b, e, c); });
}

template <class T>
void adadelta(const AdadeltaTensor<T>* tensors, std::int64_t ntensors, const AdadeltaHyper& h, const lowp::Mixed* mixed) {
  const AdadeltaCoef<T> c{T(h.lr), T(h.rho), T(1.0 - h.rho), T(h.eps), T(h.weight_decay), h.weight_decay != 0.0,
                          h.maximize};
  lowp::for_each_block(tensors, ntensors, mixed, [&](const auto& tensor, std::int64_t b, std::int64_t e) { adadelta_block(tensor, b, e, c); });
}

template <class T>
void rprop(const RpropTensor<T>* tensors, std::int64_t ntensors, const RpropHyper& h, const lowp::Mixed* mixed) {
  const RpropCoef<T> c{T(h.etaminus), T(h.etaplus), T(h.step_min), T(h.step_max), h.maximize};
  lowp::for_each_block(tensors, ntensors, mixed, [&](const auto& tensor, std::int64_t b, std::int64_t e) { rprop_block(tensor, b, e, c); });
}

template <class T>
void nadam(const NadamTensor<T>* tensors, std::int64_t ntensors, const NadamHyper& h, const lowp::Mixed* mixed) {
  const NadamStep st = nadam_step(h);
  // Each block reads its tensor's mu_product; all are rewritten once the blocks are done.
  lowp::for_each_block(tensors, ntensors, mixed, [&](const auto& tensor, std::int64_t b, std::int64_t e) {
        nadam_block(tensor, b, e, nadam_coef<T>(h, st, nadam_product(tensor.mu_product, st.mu)));
      });
  for (std::int64_t t = 0; t < ntensors; ++t) tensors[t].mu_product.set(nadam_product(tensors[t].mu_product, st.mu));
}

template <class T>
void asgd(const AsgdTensor<T>* tensors, std::int64_t ntensors, const AsgdHyper& h, const lowp::Mixed* mixed) {
  lowp::for_each_block(tensors, ntensors, mixed, [&](const auto& tensor, std::int64_t b, std::int64_t e) { asgd_block(tensor, b, e, asgd_coef<T>(h, tensor)); });
  // eta and mu of the next step, rounded to float32 as torch's default-dtype tensors.
  const double s = double(h.step);
  const double eta = double(float(h.lr / std::pow(1.0 + h.lambd * h.lr * s, h.alpha)));
  const double mu = double(float(1.0 / std::max(1.0, s - h.t0)));
  for (std::int64_t t = 0; t < ntensors; ++t) {
    tensors[t].eta.set(eta);
    tensors[t].mu.set(mu);
  }
}

std::int64_t trust_workspace(const std::int64_t* sizes, std::int64_t ntensors) {
  return 2 * parallel::total_blocks(ntensors, [&](std::int64_t t) { return sizes[t]; }) + 2 * ntensors;
}

template <class T>
void lamb(const LambTensor<T>* tensors, std::int64_t ntensors, const LambHyper& h, double* work,
          double* trust, const lowp::Mixed* mixed) {
  const LambCoef<T> c = lamb_coef<T>(h);
  auto size_of = [&](std::int64_t t) { return tensors[t].size; };
  const std::int64_t nb = parallel::total_blocks(ntensors, size_of);
  double* pn = work;            // nb block partials of ||p||^2, then of ||r||^2,
  double* rn = work + nb;       // then ntensors sums of each
  double* psum = work + 2 * nb;
  double* rsum = psum + ntensors;
  if constexpr (std::is_same<T, float>::value) {
    if (mixed) {
      parallel::for_each_block_indexed(ntensors, size_of, [&](std::int64_t t, std::int64_t k, std::int64_t b, std::int64_t e) {
        double pacc[parallel::kLanes] = {}, racc[parallel::kLanes] = {};
        lowp::read_block(tensors[t], t, *mixed, b, e, [&](const LambTensor<float>& view, std::int64_t, std::int64_t n) {
          lamb_norms_chunk(view, n, c, pacc, racc);
        });
        pn[k] = parallel::lanes_total(pacc);
        rn[k] = parallel::lanes_total(racc);
      });
    }
  }
  if (!mixed) {
    parallel::for_each_block_indexed(ntensors, size_of, [&](std::int64_t t, std::int64_t k, std::int64_t b, std::int64_t e) {
      lamb_pass1(tensors[t], b, e, c, pn + k, rn + k);
    });
  }
  per_tensor_sums(tensors, ntensors, pn, psum);
  per_tensor_sums(tensors, ntensors, rn, rsum);
  for (std::int64_t t = 0; t < ntensors; ++t) {
    const double pnorm = std::sqrt(psum[t]), rnorm = std::sqrt(rsum[t]);
    trust[t] = (tensors[t].adapt && pnorm > 0.0 && rnorm > 0.0) ? pnorm / rnorm : 1.0;
  }
  if constexpr (std::is_same<T, float>::value) {
    if (mixed) {
      lowp::for_each_tensor_block(tensors, ntensors, mixed,
                                  [&](const LambTensor<float>& view, std::int64_t t, std::int64_t, std::int64_t n) {
                                    lamb_update_chunk(view, n, c, T(h.lr * trust[t]));
                                  });
      return;
    }
  }
  parallel::for_each_block(ntensors, size_of, [&](std::int64_t t, std::int64_t b, std::int64_t e) {
    lamb_pass2(tensors[t], b, e, c, T(h.lr * trust[t]));
  });
}

template <class T>
void lars(const LarsTensor<T>* tensors, std::int64_t ntensors, const LarsHyper& h, double* work,
          double* trust, const lowp::Mixed* mixed) {
  auto size_of = [&](std::int64_t t) { return tensors[t].size; };
  const std::int64_t nb = parallel::total_blocks(ntensors, size_of);
  double* pn = work;
  double* gn = work + nb;
  double* psum = work + 2 * nb;
  double* gsum = psum + ntensors;
  if constexpr (std::is_same<T, float>::value) {
    if (mixed) {
      parallel::for_each_block_indexed(ntensors, size_of, [&](std::int64_t t, std::int64_t k, std::int64_t b, std::int64_t e) {
        double pacc[parallel::kLanes] = {}, gacc[parallel::kLanes] = {};
        lowp::read_block(tensors[t], t, *mixed, b, e, [&](const LarsTensor<float>& view, std::int64_t, std::int64_t n) {
          lars_norms_chunk(view, n, pacc, gacc);
        });
        pn[k] = parallel::lanes_total(pacc);
        gn[k] = parallel::lanes_total(gacc);
      });
    }
  }
  if (!mixed) {
    parallel::for_each_block_indexed(ntensors, size_of, [&](std::int64_t t, std::int64_t k, std::int64_t b, std::int64_t e) {
      lars_norms(tensors[t], b, e, pn + k, gn + k);
    });
  }
  per_tensor_sums(tensors, ntensors, pn, psum);
  per_tensor_sums(tensors, ntensors, gn, gsum);
  for (std::int64_t t = 0; t < ntensors; ++t) {
    const double pnorm = std::sqrt(psum[t]), gnorm = std::sqrt(gsum[t]);
    trust[t] = (tensors[t].adapt && pnorm > 0.0 && gnorm > 0.0)
                   ? h.trust_coefficient * pnorm / (gnorm + h.weight_decay * pnorm + h.eps)
                   : 1.0;
  }
  const T mu = T(h.momentum);
  lowp::for_each_tensor_block(tensors, ntensors, mixed,
                              [&](const LarsTensor<T>& tensor, std::int64_t t, std::int64_t b, std::int64_t e) {
                                const T wd = tensor.adapt ? T(h.weight_decay) : T(0);
                                lars_update(tensor, b, e, mu, T(h.lr * trust[t]), wd);
                              });
}

template <class T>
void add_penalty(const PenaltyTensor<T>* tensors, std::int64_t ntensors, double l1, double l2) {
  parallel::for_each_block(ntensors, [&](std::int64_t t) { return tensors[t].size; },
                           [&](std::int64_t t, std::int64_t b, std::int64_t e) {
                             penalty_blk(tensors[t], b, e, T(l1), T(l2));
                           });
}

template <class T>
void soft_threshold(T* const* params, const std::int64_t* sizes, std::int64_t ntensors, double threshold) {
  parallel::for_each_block(ntensors, [&](std::int64_t t) { return sizes[t]; },
                           [&](std::int64_t t, std::int64_t b, std::int64_t e) {
                             soft_threshold_blk(params[t] + b, e - b, T(threshold));
                           });
}

template <class T>
void decay(T* const* params, const std::int64_t* sizes, std::int64_t ntensors, double lr, double weight_decay) {
  const T f = T(1.0 - lr * weight_decay);
  parallel::for_each_block(ntensors, [&](std::int64_t t) { return sizes[t]; },
                           [&](std::int64_t t, std::int64_t b, std::int64_t e) { decay_blk(params[t] + b, e - b, f); });
}

template void lamb<float>(const LambTensor<float>*, std::int64_t, const LambHyper&, double*, double*,
                          const lowp::Mixed*);
template void lamb<double>(const LambTensor<double>*, std::int64_t, const LambHyper&, double*, double*,
                           const lowp::Mixed*);
template void lars<float>(const LarsTensor<float>*, std::int64_t, const LarsHyper&, double*, double*,
                          const lowp::Mixed*);
template void lars<double>(const LarsTensor<double>*, std::int64_t, const LarsHyper&, double*, double*,
                           const lowp::Mixed*);
template void add_penalty<float>(const PenaltyTensor<float>*, std::int64_t, double, double);
template void add_penalty<double>(const PenaltyTensor<double>*, std::int64_t, double, double);
template void soft_threshold<float>(float* const*, const std::int64_t*, std::int64_t, double);
template void soft_threshold<double>(double* const*, const std::int64_t*, std::int64_t, double);
template void decay<float>(float* const*, const std::int64_t*, std::int64_t, double, double);
template void decay<double>(double* const*, const std::int64_t*, std::int64_t, double, double);
template void sgd<float>(const SgdTensor<float>*, std::int64_t, const SgdHyper&, const lowp::Mixed*);
template void sgd<double>(const SgdTensor<double>*, std::int64_t, const SgdHyper&, const lowp::Mixed*);
template void adagrad<float>(const AdagradTensor<float>*, std::int64_t, const AdagradHyper&, const lowp::Mixed*);
template void adagrad<double>(const AdagradTensor<double>*, std::int64_t, const AdagradHyper&, const lowp::Mixed*);
template void rmsprop<float>(const RmspropTensor<float>*, std::int64_t, const RmspropHyper&, const lowp::Mixed*);
template void rmsprop<double>(const RmspropTensor<double>*, std::int64_t, const RmspropHyper&, const lowp::Mixed*);
template void adam<float>(const AdamTensor<float>*, std::int64_t, const AdamHyper&, const lowp::Mixed*);
template void adam<double>(const AdamTensor<double>*, std::int64_t, const AdamHyper&, const lowp::Mixed*);
template void adamax<float>(const AdamaxTensor<float>*, std::int64_t, const AdamaxHyper&, const lowp::Mixed*);
template void adamax<double>(const AdamaxTensor<double>*, std::int64_t, const AdamaxHyper&, const lowp::Mixed*);
template void radam<float>(const RadamTensor<float>*, std::int64_t, const RadamHyper&, const lowp::Mixed*);
template void radam<double>(const RadamTensor<double>*, std::int64_t, const RadamHyper&, const lowp::Mixed*);
template void lion<float>(const LionTensor<float>*, std::int64_t, const LionHyper&, const lowp::Mixed*);
template void lion<double>(const LionTensor<double>*, std::int64_t, const LionHyper&, const lowp::Mixed*);
template void schedule_free_adamw<float>(const ScheduleFreeAdamwTensor<float>*, std::int64_t, const ScheduleFreeAdamwHyper&, const lowp::Mixed*);
template void schedule_free_adamw<double>(const ScheduleFreeAdamwTensor<double>*, std::int64_t, const ScheduleFreeAdamwHyper&, const lowp::Mixed*);
template void adadelta<float>(const AdadeltaTensor<float>*, std::int64_t, const AdadeltaHyper&, const lowp::Mixed*);
template void adadelta<double>(const AdadeltaTensor<double>*, std::int64_t, const AdadeltaHyper&, const lowp::Mixed*);
template void rprop<float>(const RpropTensor<float>*, std::int64_t, const RpropHyper&, const lowp::Mixed*);
template void rprop<double>(const RpropTensor<double>*, std::int64_t, const RpropHyper&, const lowp::Mixed*);
template void nadam<float>(const NadamTensor<float>*, std::int64_t, const NadamHyper&, const lowp::Mixed*);
template void nadam<double>(const NadamTensor<double>*, std::int64_t, const NadamHyper&, const lowp::Mixed*);
template void asgd<float>(const AsgdTensor<float>*, std::int64_t, const AsgdHyper&, const lowp::Mixed*);
template void asgd<double>(const AsgdTensor<double>*, std::int64_t, const AsgdHyper&, const lowp::Mixed*);

}  // namespace deepoptim::optim
