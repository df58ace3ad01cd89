// Optimizer update kernels, in the order of python/deepoptim/reference/optim.py's KERNELS:
// SGD (torch's form, classical and EMA momentum), Adagrad, RMSprop, Adam/AdamW/AMSGrad,
// LAMB, LARS, and the L1/L2 penalty and proximal L1 steps.
//
// Every kernel updates a list of tensors in place, in one parallel region over all
// (tensor, block) pairs; the single-tensor form is a list of one. Each element is read
// and written once per step. Hyperparameters arrive as double; the per-call coefficients
// (bias corrections, step sizes) are computed once, in double, then rounded to T.
// Every elementwise kernel also runs on low-precision storage (bfloat16/float16
// parameters, bfloat16 state, master weights, stochastic rounding) when given a
// lowp::Mixed description (mixed.hpp): the float32 block functions on float32 chunks.
// Kernels never validate: the bindings have checked every argument before they are
// called. The NumPy twins in python/deepoptim/reference/optim.py compute the same
// operations in the same order and define what each kernel must return.
#pragma once

#include <cstdint>

#include "deepoptim/mixed.hpp"

namespace deepoptim::optim {

// ---------------------------------------------------------------------------- SGD
// torch:     buf = g (first step) | mu*buf + (1-dampening)*g;  d = nesterov ? g + mu*buf : buf;  p -= lr*d
// classical: v = mu*v + lr*g;       p -= v        (Sutskever et al. 2013's form; v starts at 0)
// ema:       v = mu*v + (1-mu)*g;   p -= lr*v     (an EMA of the gradients; v starts at 0)
// In every form g is first negated when maximizing, then g += weight_decay*p.
enum class MomentumForm : int { Torch = 0, Classical = 1, Ema = 2 };

struct SgdHyper {
  double lr{};
  double momentum{};
  double dampening{};
  double weight_decay{};
  bool nesterov{};
  bool maximize{};
  bool first_step{};  // torch form: buffers hold no history yet, so buf = g
  MomentumForm form = MomentumForm::Torch;
};

template <class T>
struct SgdTensor {
  T* param;
  const T* grad;
  T* momentum_buffer;  // null when the torch form runs with momentum == 0
  std::int64_t size;
};

template <class T>
void sgd(const SgdTensor<T>* tensors, std::int64_t ntensors, const SgdHyper& h,
          const lowp::Mixed* mixed = nullptr);

// ------------------------------------------------------------------------ Adagrad
// clr = lr / (1 + (step-1)*lr_decay);  sum += g*g;  p -= clr * g / (sqrt(sum) + eps)
// At step 1 the sum starts from initial_accumulator_value, as torch initializes it.
struct AdagradHyper {
  double lr{};
  double lr_decay{};
  double weight_decay{};
  double initial_accumulator_value{};
  double eps{};
  std::int64_t step{};
  bool maximize{};
};

template <class T>
struct AdagradTensor {
  T* param;
  const T* grad;
  T* state_sum;
  std::int64_t size;
};

template <class T>
void adagrad(const AdagradTensor<T>* tensors, std::int64_t ntensors, const AdagradHyper& h,
          const lowp::Mixed* mixed = nullptr);

// ------------------------------------------------------------------------ RMSprop
// sq = alpha*sq + (1-alpha)*g*g;  centered: ga = alpha*ga + (1-alpha)*g, var = sq - ga*ga
// avg = sqrt(var) + eps;  momentum: buf = mu*buf + g/avg, p -= lr*buf;  else p -= lr*g/avg
struct RmspropHyper {
  double lr{};
  double alpha{};
  double eps{};
  double weight_decay{};
  double momentum{};
  bool centered{};
  bool maximize{};
};

template <class T>
struct RmspropTensor {
  T* param;
  const T* grad;
  T* square_avg;
  T* grad_avg;         // null unless centered
  T* momentum_buffer;  // null unless momentum > 0
  std::int64_t size;
};

template <class T>
void rmsprop(const RmspropTensor<T>* tensors, std::int64_t ntensors, const RmspropHyper& h,
          const lowp::Mixed* mixed = nullptr);

// --------------------------------------------------------------------------- Adam
// coupled decay (Adam):      g += wd*p          decoupled (AdamW):  p *= 1 - lr*wd
// m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g*g;  amsgrad: vmax = max(vmax, v), v^ = vmax
// denom = sqrt(v^)/sqrt(bc2) + eps   (eps_inside_sqrt: sqrt(v^/bc2 + eps))
// p -= lr/bc1 * m/denom,  bc_i = 1 - b_i^step (1 when bias_correction is off)
struct AdamHyper {
  double lr{};
  double beta1{};
  double beta2{};
  double eps{};
  double weight_decay{};
  std::int64_t step{};
  bool amsgrad{};
  bool maximize{};
  bool decoupled_weight_decay{};
  bool bias_correction{};
  bool eps_inside_sqrt{};
};

template <class T>
struct AdamTensor {
  T* param;
  const T* grad;
  T* exp_avg;
  T* exp_avg_sq;
  T* max_exp_avg_sq;  // null unless amsgrad
  std::int64_t size;
};

template <class T>
void adam(const AdamTensor<T>* tensors, std::int64_t ntensors, const AdamHyper& h,
          const lowp::Mixed* mixed = nullptr);

// ------------------------------------------------------------------------- Adamax
// Kingma & Ba, "Adam: A Method for Stochastic Optimization" (ICLR 2015), section 7.1,
// as torch.optim.Adamax: g += wd*p;  m = m + (1-b1)*(g - m);  u = max(b2*u, |g| + eps);
// p -= (lr / (1 - b1^step)) * m / u   (NaN in u propagates).
struct AdamaxHyper {
  double lr{};
  double beta1{};
  double beta2{};
  double eps{};
  double weight_decay{};
  std::int64_t step{};
  bool maximize{};
};

template <class T>
struct AdamaxTensor {
  T* param;
  const T* grad;
  T* exp_avg;
  T* exp_inf;
  std::int64_t size;
};

template <class T>
void adamax(const AdamaxTensor<T>* tensors, std::int64_t ntensors, const AdamaxHyper& h,
          const lowp::Mixed* mixed = nullptr);

// -------------------------------------------------------------------------- RAdam
// Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond" (ICLR 2020), as
// torch.optim.RAdam: g += wd*p (or p *= 1 - lr*wd, decoupled); m = m + (1-b1)*(g - m);
// v = b2*v + (1-b2)*g*g; rho_inf = 2/(1-b2) - 1, rho_t = rho_inf - 2 t b2^t / (1 - b2^t);
// rho_t > 5: p -= ((m/bc1)*lr) * (sqrt(bc2)/(sqrt(v) + eps)) * rect; else p -= (m/bc1)*lr.
struct RadamHyper {
  double lr{};
  double beta1{};
  double beta2{};
  double eps{};
  double weight_decay{};
  std::int64_t step{};
  bool decoupled_weight_decay{};
  bool maximize{};
};

template <class T>
struct RadamTensor {
  T* param;
  const T* grad;
  T* exp_avg;
  T* exp_avg_sq;
  std::int64_t size;
};

template <class T>
void radam(const RadamTensor<T>* tensors, std::int64_t ntensors, const RadamHyper& h,
          const lowp::Mixed* mixed = nullptr);

// --------------------------------------------------------------------------- Lion
// Chen et al., "Symbolic Discovery of Optimization Algorithms" (NeurIPS 2023):
// p *= 1 - lr*wd;  p -= lr * sign(b1*m + (1-b1)*g);  m = b2*m + (1-b2)*g.
// sign keeps 0 and NaN as they are.
struct LionHyper {
  double lr{};
  double beta1{};
  double beta2{};
  double weight_decay{};
  bool maximize{};
};

template <class T>
struct LionTensor {
  T* param;
  const T* grad;
  T* exp_avg;
  std::int64_t size;
};

template <class T>
void lion(const LionTensor<T>* tensors, std::int64_t ntensors, const LionHyper& h,
          const lowp::Mixed* mixed = nullptr);

// ----------------------------------------------------------- Schedule-Free AdamW
// Defazio et al., "The Road Less Scheduled" (NeurIPS 2024), as the authors' reference
// implementation (facebookresearch/schedule_free, AdamWScheduleFree). The parameter
// holds y (the gradient's evaluation point), the state z (the base iterate) and v:
//   v = v*b2 + (1-b2)*g*g;  u = g / (sqrt(v / (1 - b2^step)) + eps) + wd*y;
//   y = lerp(y, z, ckp1) + lr*(b1*(1 - ckp1) - 1)*u;  z = z - lr*u.
// lr is the scheduled (warmed-up) rate, ckp1 the averaging weight c_{t+1} in [0, 1]
// (the optimizer class keeps the per-group sums that give it).
struct ScheduleFreeAdamwHyper {
  double lr{};
  double ckp1{};
  double beta1{};
  double beta2{};
  double eps{};
  double weight_decay{};
  std::int64_t step{};
};

template <class T>
struct ScheduleFreeAdamwTensor {
  T* param;
  const T* grad;
  T* z;
  T* exp_avg_sq;
  std::int64_t size;
};

template <class T>
void schedule_free_adamw(const ScheduleFreeAdamwTensor<T>* tensors, std::int64_t ntensors,
                         const ScheduleFreeAdamwHyper& h,
          const lowp::Mixed* mixed = nullptr);

// ----------------------------------------------------------------------- Adadelta
// Zeiler, "ADADELTA: An Adaptive Learning Rate Method" (2012), as torch.optim.Adadelta:
// g += wd*p;  sq = rho*sq + (1-rho)*g*g;  delta = (sqrt(acc + eps) / sqrt(sq + eps)) * g;
// acc = rho*acc + (1-rho)*delta*delta;  p -= lr*delta.
struct AdadeltaHyper {
  double lr{};
  double rho{};
  double eps{};
  double weight_decay{};
  bool maximize{};
};

template <class T>
struct AdadeltaTensor {
  T* param;
  const T* grad;
  T* square_avg;
  T* acc_delta;
  std::int64_t size;
};

template <class T>
void adadelta(const AdadeltaTensor<T>* tensors, std::int64_t ntensors, const AdadeltaHyper& h,
          const lowp::Mixed* mixed = nullptr);

// -------------------------------------------------------------------------- Rprop
// Riedmiller & Braun, "A Direct Adaptive Method for Faster Backpropagation Learning: The
// RPROP Algorithm" (1993), as torch.optim.Rprop: s = sign(g*prev) mapped to etaplus (>0),
// etaminus (<0), 1 (=0); step = clamp(step*s, min, max); g = 0 where s == etaminus;
// p -= sign(g)*step; prev = g.
struct RpropHyper {
  double etaminus{};
  double etaplus{};
  double step_min{};
  double step_max{};
  bool maximize{};
};

template <class T>
struct RpropTensor {
  T* param;
  const T* grad;
  T* prev;
  T* step_size;
  std::int64_t size;
};

template <class T>
void rprop(const RpropTensor<T>* tensors, std::int64_t ntensors, const RpropHyper& h,
          const lowp::Mixed* mixed = nullptr);

// --------------------------------------------------- per-tensor scalar state
// State torch keeps as one 0-d tensor per parameter (NAdam's mu_product, ASGD's eta and
// mu): float32 (torch's default scalar dtype), or float64 (after torch's load_state_dict
// casts state to float64 parameters), whatever the parameters' dtype. Read before the
// update, rewritten once per tensor after it; every new value is rounded to its dtype.
struct ScalarState {
  void* ptr = nullptr;
  bool f64 = false;
  double get() const { return f64 ? *static_cast<const double*>(ptr) : double(*static_cast<const float*>(ptr)); }
  // Stores x (rounded to float32 first where the state is float32).
  void set(double x) const {
    if (f64) {
      *static_cast<double*>(ptr) = x;
    } else {
      *static_cast<float*>(ptr) = float(x);
    }
  }
};

// -------------------------------------------------------------------------- NAdam
// Dozat, "Incorporating Nesterov Momentum into Adam" (ICLR 2016 workshop), as
// torch.optim.NAdam: g += wd*p (or p *= 1 - lr*wd, decoupled); mu_t = b1*(1 - 0.5*0.96^(t*psi)),
// mu_{t+1} likewise; mu_product *= mu_t (in its own dtype); m = m + (1-b1)*(g - m);
// v = v*b2 + (1-b2)*g*g; denom = sqrt(v / (1 - b2^t)) + eps;
// p += (-lr*(1-mu_t)/(1-mu_product)) * g / denom;
// p += (-lr*mu_{t+1}/(1-mu_product*mu_{t+1})) * m / denom.
struct NadamHyper {
  double lr{};
  double beta1{};
  double beta2{};
  double eps{};
  double weight_decay{};
  double momentum_decay{};
  std::int64_t step{};
  bool decoupled_weight_decay{};
  bool maximize{};
};

template <class T>
struct NadamTensor {
  T* param;
  const T* grad;
  T* exp_avg;
  T* exp_avg_sq;
  std::int64_t size;
  ScalarState mu_product;  // the product of mu_1..mu_{t-1}; becomes that of mu_1..mu_t
};

template <class T>
void nadam(const NadamTensor<T>* tensors, std::int64_t ntensors, const NadamHyper& h,
          const lowp::Mixed* mixed = nullptr);

// --------------------------------------------------------------------------- ASGD
// Polyak & Juditsky, "Acceleration of Stochastic Approximation by Averaging" (1992), as
// torch.optim.ASGD: g += wd*p; p *= 1 - lambd*eta; p -= eta*g; ax = p if mu == 1, else
// ax += (p - ax)*mu; then, for the next step, eta = lr / (1 + lambd*lr*t)^alpha and
// mu = 1 / max(1, t - t0), each rounded to float32 (torch builds them as default-dtype
// tensors) and stored in its own dtype.
struct AsgdHyper {
  double lr{};
  double lambd{};
  double alpha{};
  double t0{};
  double weight_decay{};
  std::int64_t step{};
  bool maximize{};
};

template <class T>
struct AsgdTensor {
  T* param;
  const T* grad;
  T* ax;
  std::int64_t size;
  ScalarState mu;
  ScalarState eta;
};

template <class T>
void asgd(const AsgdTensor<T>* tensors, std::int64_t ntensors, const AsgdHyper& h,
          const lowp::Mixed* mixed = nullptr);

// --------------------------------------------------------------------------- LAMB
// You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76 minutes"
// (ICLR 2020). m, v as Adam; r = (m/bc1) / (sqrt(v/bc2) + eps) + wd*p;
// trust = ||p|| / ||r|| (1 when either norm is 0 or the tensor is excluded);
// p -= lr * trust * r. Excluded tensors (adapt == false) get no weight decay either.
// Two passes: update m, v and add up both norms per block; then apply.
struct LambHyper {
  double lr{};
  double beta1{};
  double beta2{};
  double eps{};
  double weight_decay{};
  std::int64_t step{};
  bool bias_correction{};
};

template <class T>
struct LambTensor {
  T* param;
  const T* grad;
  T* exp_avg;
  T* exp_avg_sq;
  std::int64_t size;
  bool adapt{true};
};

// Doubles of workspace lamb() and lars() need: two partials per block, two sums per tensor.
std::int64_t trust_workspace(const std::int64_t* sizes, std::int64_t ntensors);

// trust: one double per tensor (out). mixed: low-precision storage (float32 math only), as
// for the elementwise steps; the norms are those of the float32 values the step computes
// on (the master copies where there are any).
template <class T>
void lamb(const LambTensor<T>* tensors, std::int64_t ntensors, const LambHyper& h, double* work,
          double* trust, const lowp::Mixed* mixed = nullptr);

// --------------------------------------------------------------------------- LARS
// You, Gitman & Ginsburg, "Large Batch Training of Convolutional Networks" (2017).
// local = eta * ||p|| / (||g|| + wd*||p|| + eps) (1 when either norm is 0 or excluded);
// v = mu*v + lr*local*(g + wd*p);  p -= v   (momentum 0: p -= lr*local*(g + wd*p)).
struct LarsHyper {
  double lr{};
  double momentum{};
  double weight_decay{};
  double trust_coefficient{};
  double eps{};
};

template <class T>
struct LarsTensor {
  T* param;
  const T* grad;
  T* momentum_buffer;  // null when momentum == 0
  std::int64_t size;
  bool adapt{true};
};

// work: trust_workspace(...) doubles; trust: one double per tensor (out: local).
template <class T>
void lars(const LarsTensor<T>* tensors, std::int64_t ntensors, const LarsHyper& h, double* work,
          double* trust, const lowp::Mixed* mixed = nullptr);

// ----------------------------------------------------------------- regularization
// Gradients of the L1 / L2 / elastic-net penalties l1*|p|_1 + l2/2*|p|^2:
// g += l1*sign(p) + l2*p, with sign(0) = 0.
template <class T>
struct PenaltyTensor {
  T* grad;
  const T* param;
  std::int64_t size;
};

template <class T>
void add_penalty(const PenaltyTensor<T>* tensors, std::int64_t ntensors, double l1, double l2);

// Proximal step of the L1 penalty: p = sign(p) * max(|p| - threshold, 0).
template <class T>
void soft_threshold(T* const* params, const std::int64_t* sizes, std::int64_t ntensors, double threshold);

// Decoupled weight decay (Loshchilov & Hutter, 2019): p *= 1 - lr*weight_decay, the factor
// computed in double and rounded to T once (as Adam's decoupled path does).
template <class T>
void decay(T* const* params, const std::int64_t* sizes, std::int64_t ntensors, double lr, double weight_decay);

}  // namespace deepoptim::optim
