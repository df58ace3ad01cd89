// Bindings of the optimizer kernels: check arguments, release the GIL, call the kernel.
// Each function takes either one array per argument or lists/tuples of arrays (one
// kernel call, one parallel region, for the whole list). The math lives in
// cpp/src/optim.cpp; the documented Python entry points are in deepoptim.functional.
#include <pybind11/pybind11.h>

#include <pybind11/numpy.h>

#include <cmath>
#include <string>
#include <vector>

#include "checks.hpp"
#include "deepoptim/optim.hpp"

namespace deepoptim::bind {
namespace {

namespace o = deepoptim::optim;

// The hyperparameters of Adam's family (Adam, Adamax, RAdam, LAMB), parsed and checked in
// the order the twins check them.
struct AdamLike {
  std::int64_t step;
  double lr, beta1, beta2, eps, weight_decay;
};

AdamLike adam_like(Index step_h, Real lr_h, RealPair betas_h, Real eps_h, Real weight_decay_h) {
  const std::int64_t step = step_arg(step_h);
  const double lr = real(lr_h, "lr");
  const auto [beta1, beta2] = betas_arg(betas_h);
  const double eps = real(eps_h, "eps");
  const double weight_decay = real(weight_decay_h, "weight_decay");
  check_finite_ge("lr", lr, 0.0);
  check_finite_gt("eps", eps, 0.0);
  check_finite_ge("weight_decay", weight_decay, 0.0);
  return {step, lr, beta1, beta2, eps, weight_decay};
}

// ---------------------------------------------------------------------------- SGD
o::MomentumForm parse_form(const std::string& form) {
  if (form == "torch") return o::MomentumForm::Torch;
  if (form == "classical") return o::MomentumForm::Classical;
  if (form == "ema") return o::MomentumForm::Ema;
  throw py::value_error("momentum_form must be 'torch', 'classical' or 'ema', got '" + form + "'");
}

void sgd(py::handle params, py::handle grads, py::handle momentum_buffers, Real lr_h,
         Real momentum_h, Real dampening_h, Real weight_decay_h, Flag nesterov_h, Flag maximize_h,
         Flag first_step_h, Str momentum_form_h,
    py::handle master_params, py::handle stochastic_rounding) {
  const bool nesterov = flag(nesterov_h, "nesterov");
  const bool maximize = flag(maximize_h, "maximize");
  const bool first_step = flag(first_step_h, "first_step");
  const std::string momentum_form = str_arg(momentum_form_h, "momentum_form");
  const double lr = real(lr_h, "lr");
  const double momentum = real(momentum_h, "momentum");
  const double dampening = real(dampening_h, "dampening");
  const double weight_decay = real(weight_decay_h, "weight_decay");
  o::SgdHyper h;
  h.form = parse_form(momentum_form);
  check_finite_ge("lr", lr, 0.0);
  check_finite_ge("momentum", momentum, 0.0);
  check_in_range("dampening", dampening, 0.0, 1.0, true);
  check_finite_ge("weight_decay", weight_decay, 0.0);
  if (nesterov && (momentum <= 0.0 || dampening != 0.0)) {
    throw py::value_error("nesterov=True requires momentum > 0 and dampening == 0, got momentum=" +
                          std::string(py::repr(py::float_(momentum))) +
                          ", dampening=" + std::string(py::repr(py::float_(dampening))));
  }
  if (h.form != o::MomentumForm::Torch) {
    if (nesterov || dampening != 0.0) {
      throw py::value_error("momentum_form='" + momentum_form +
                            "' takes neither nesterov nor dampening (they belong to 'torch')");
    }
    if (h.form == o::MomentumForm::Ema) check_in_range("momentum", momentum, 0.0, 1.0, true);
  }
  const bool uses_buffer = h.form != o::MomentumForm::Torch || momentum != 0.0;
  const char* why = h.form == o::MomentumForm::Torch ? "momentum != 0" : "momentum_form is not 'torch'";
  const LowpArgs lp{master_params, stochastic_rounding};
  const Operands ops = parse_operands(
      {{"params", true, true}, {"grads", false, true}, {"momentum_buffers", true, uses_buffer, why}},
      {params, grads, momentum_buffers}, &lp);
  h.lr = lr;
  h.momentum = momentum;
  h.dampening = dampening;
  h.weight_decay = weight_decay;
  h.nesterov = nesterov;
  h.maximize = maximize;
  h.first_step = first_step;
  dispatch(ops.dtype, [&](auto tag) {
    using T = decltype(tag);
    auto ts = rows<o::SgdTensor, T, 3>(ops);
    py::gil_scoped_release nogil;
    o::sgd<T>(ts.data(), ops.ntensors, h, ops.mixed());
  });
}

// ------------------------------------------------------------------------ Adagrad
void adagrad(py::handle params, py::handle grads, py::handle state_sums, Index step_h,
             Real lr_h, Real lr_decay_h, Real weight_decay_h, Real initial_accumulator_value_h,
             Real eps_h, Flag maximize_h,
    py::handle master_params, py::handle stochastic_rounding) {
  const bool maximize = flag(maximize_h, "maximize");
  const std::int64_t step = step_arg(step_h);
  const double lr = real(lr_h, "lr");
  const double lr_decay = real(lr_decay_h, "lr_decay");
  const double weight_decay = real(weight_decay_h, "weight_decay");
  const double initial_accumulator_value = real(initial_accumulator_value_h, "initial_accumulator_value");
  const double eps = real(eps_h, "eps");
  check_finite_ge("lr", lr, 0.0);
  check_finite_ge("lr_decay", lr_decay, 0.0);
  check_finite_ge("weight_decay", weight_decay, 0.0);
  check_finite_ge("initial_accumulator_value", initial_accumulator_value, 0.0);
  check_finite_gt("eps", eps, 0.0);
  const LowpArgs lp{master_params, stochastic_rounding};
  const Operands ops = parse_operands(
      {{"params", true, true}, {"grads", false, true}, {"state_sums", true, true}},
      {params, grads, state_sums}, &lp);
  check_eps_representable("eps", eps, ops);
  o::AdagradHyper h;
  h.lr = lr;
  h.lr_decay = lr_decay;
  h.weight_decay = weight_decay;
  h.initial_accumulator_value = initial_accumulator_value;
  h.eps = eps;
  h.step = step;
  h.maximize = maximize;
  dispatch(ops.dtype, [&](auto tag) {
    using T = decltype(tag);
    auto ts = rows<o::AdagradTensor, T, 3>(ops);
    py::gil_scoped_release nogil;
    o::adagrad<T>(ts.data(), ops.ntensors, h, ops.mixed());
  });
}

// ------------------------------------------------------------------------ RMSprop
void rmsprop(py::handle params, py::handle grads, py::handle square_avgs, py::handle grad_avgs,
             py::handle momentum_buffers, Real lr_h, Real alpha_h, Real eps_h,
             Real weight_decay_h, Real momentum_h, Flag centered_h, Flag maximize_h,
    py::handle master_params, py::handle stochastic_rounding) {
  const bool centered = flag(centered_h, "centered");
  const bool maximize = flag(maximize_h, "maximize");
  const double lr = real(lr_h, "lr");
  const double alpha = real(alpha_h, "alpha");
  const double eps = real(eps_h, "eps");
  const double weight_decay = real(weight_decay_h, "weight_decay");
  const double momentum = real(momentum_h, "momentum");
  check_finite_ge("lr", lr, 0.0);
  check_in_range("alpha", alpha, 0.0, 1.0, true);
  check_finite_gt("eps", eps, 0.0);
  check_finite_ge("weight_decay", weight_decay, 0.0);
  check_finite_ge("momentum", momentum, 0.0);
  const LowpArgs lp{master_params, stochastic_rounding};
  const Operands ops = parse_operands({{"params", true, true},
                                       {"grads", false, true},
                                       {"square_avgs", true, true},
                                       {"grad_avgs", true, centered, "centered=True"},
                                       {"momentum_buffers", true, momentum > 0.0, "momentum > 0"}},
                                      {params, grads, square_avgs, grad_avgs, momentum_buffers}, &lp);
  check_eps_representable("eps", eps, ops);
  o::RmspropHyper h;
  h.lr = lr;
  h.alpha = alpha;
  h.eps = eps;
  h.weight_decay = weight_decay;
  h.momentum = momentum;
  h.centered = centered;
  h.maximize = maximize;
  dispatch(ops.dtype, [&](auto tag) {
    using T = decltype(tag);
    auto ts = rows<o::RmspropTensor, T, 5>(ops);
    py::gil_scoped_release nogil;
    o::rmsprop<T>(ts.data(), ops.ntensors, h, ops.mixed());
  });
}

// --------------------------------------------------------------------------- Adam
void adam(py::handle params, py::handle grads, py::handle exp_avgs, py::handle exp_avg_sqs,
          py::handle max_exp_avg_sqs, Index step_h, Real lr_h, RealPair betas_h,
          Real eps_h, Real weight_decay_h, Flag amsgrad_h, Flag maximize_h,
          Flag decoupled_weight_decay_h, Flag bias_correction_h, Flag eps_inside_sqrt_h,
    py::handle master_params, py::handle stochastic_rounding) {
  const bool amsgrad = flag(amsgrad_h, "amsgrad");
  const bool maximize = flag(maximize_h, "maximize");
  const bool decoupled_weight_decay = flag(decoupled_weight_decay_h, "decoupled_weight_decay");
  const bool bias_correction = flag(bias_correction_h, "bias_correction");
  const bool eps_inside_sqrt = flag(eps_inside_sqrt_h, "eps_inside_sqrt");
  const auto [step, lr, beta1, beta2, eps, weight_decay] = adam_like(step_h, lr_h, betas_h, eps_h, weight_decay_h);
  const LowpArgs lp{master_params, stochastic_rounding};
  const Operands ops = parse_operands({{"params", true, true},
                                       {"grads", false, true},
                                       {"exp_avgs", true, true},
                                       {"exp_avg_sqs", true, true},
                                       {"max_exp_avg_sqs", true, amsgrad, "amsgrad=True"}},
                                      {params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs}, &lp);
  check_eps_representable("eps", eps, ops);
  o::AdamHyper h;
  h.lr = lr;
  h.beta1 = beta1;
  h.beta2 = beta2;
  h.eps = eps;
  h.weight_decay = weight_decay;
  h.step = step;
  h.amsgrad = amsgrad;
  h.maximize = maximize;
  h.decoupled_weight_decay = decoupled_weight_decay;
  h.bias_correction = bias_correction;
  h.eps_inside_sqrt = eps_inside_sqrt;
  dispatch(ops.dtype, [&](auto tag) {
    using T = decltype(tag);
    auto ts = rows<o::AdamTensor, T, 5>(ops);
    py::gil_scoped_release nogil;
    o::adam<T>(ts.data(), ops.ntensors, h, ops.mixed());
  });
}

// ------------------------------------------------------------------------- Adamax
void adamax(py::handle params, py::handle grads, py::handle exp_avgs, py::handle exp_infs, Index step_h,
            Real lr_h, RealPair betas_h, Real eps_h, Real weight_decay_h, Flag maximize_h,
    py::handle master_params, py::handle stochastic_rounding) {
  const bool maximize = flag(maximize_h, "maximize");
  const auto [step, lr, beta1, beta2, eps, weight_decay] = adam_like(step_h, lr_h, betas_h, eps_h, weight_decay_h);
  const LowpArgs lp{master_params, stochastic_rounding};
  const Operands ops = parse_operands(
      {{"params", true, true}, {"grads", false, true}, {"exp_avgs", true, true}, {"exp_infs", true, true}},
      {params, grads, exp_avgs, exp_infs}, &lp);
  check_eps_representable("eps", eps, ops);
  const o::AdamaxHyper h{lr, beta1, beta2, eps, weight_decay, step, maximize};
  dispatch(ops.dtype, [&](auto tag) {
    using T = decltype(tag);
    auto ts = rows<o::AdamaxTensor, T, 4>(ops);
    py::gil_scoped_release nogil;
    o::adamax<T>(ts.data(), ops.ntensors, h, ops.mixed());
  });
}

// -------------------------------------------------------------------------- RAdam
void radam(py::handle params, py::handle grads, py::handle exp_avgs, py::handle exp_avg_sqs, Index step_h,
           Real lr_h, RealPair betas_h, Real eps_h, Real weight_decay_h, Flag decoupled_weight_decay_h,
           Flag maximize_h,
    py::handle master_params, py::handle stochastic_rounding) {
  const bool decoupled_weight_decay = flag(decoupled_weight_decay_h, "decoupled_weight_decay");
  const bool maximize = flag(maximize_h, "maximize");
  const auto [step, lr, beta1, beta2, eps, weight_decay] = adam_like(step_h, lr_h, betas_h, eps_h, weight_decay_h);
  const LowpArgs lp{master_params, stochastic_rounding};
  const Operands ops = parse_operands(
      {{"params", true, true}, {"grads", false, true}, {"exp_avgs", true, true}, {"exp_avg_sqs", true, true}},
      {params, grads, exp_avgs, exp_avg_sqs}, &lp);
  check_eps_representable("eps", eps, ops);
  const o::RadamHyper h{lr, beta1, beta2, eps, weight_decay, step, decoupled_weight_decay, maximize};
  dispatch(ops.dtype, [&](auto tag) {
    using T = decltype(tag);
    auto ts = rows<o::RadamTensor, T, 4>(ops);
    py::gil_scoped_release nogil;
    o::radam<T>(ts.data(), ops.ntensors, h, ops.mixed());
  });
}

// --------------------------------------------------------------------------- Lion
void lion(py::handle params, py::handle grads, py::handle exp_avgs, Real lr_h, RealPair betas_h,
          Real weight_decay_h, Flag maximize_h,
    py::handle master_params, py::handle stochastic_rounding) {
  const bool maximize = flag(maximize_h, "maximize");
  const double lr = real(lr_h, "lr");
  const auto [beta1, beta2] = betas_arg(betas_h);
  const double weight_decay = real(weight_decay_h, "weight_decay");
  check_finite_ge("lr", lr, 0.0);
  check_finite_ge("weight_decay", weight_decay, 0.0);
  const LowpArgs lp{master_params, stochastic_rounding};
  const Operands ops = parse_operands({{"params", true, true}, {"grads", false, true}, {"exp_avgs", true, true}},
                                      {params, grads, exp_avgs}, &lp);
  const o::LionHyper h{lr, beta1, beta2, weight_decay, maximize};
  dispatch(ops.dtype, [&](auto tag) {
    using T = decltype(tag);
    auto ts = rows<o::LionTensor, T, 3>(ops);
    py::gil_scoped_release nogil;
    o::lion<T>(ts.data(), ops.ntensors, h, ops.mixed());
  });
}

// ----------------------------------------------------------- Schedule-Free AdamW
void schedule_free_adamw(py::handle params, py::handle grads, py::handle zs, py::handle exp_avg_sqs, Index step_h,
                         Real lr_h, Real ckp1_h, RealPair betas_h, Real eps_h, Real weight_decay_h,
    py::handle master_params, py::handle stochastic_rounding) {
  const auto [step, lr, beta1, beta2, eps, weight_decay] = adam_like(step_h, lr_h, betas_h, eps_h, weight_decay_h);
  const double ckp1 = real(ckp1_h, "ckp1");
  check_in_range("ckp1", ckp1, 0.0, 1.0, true);
  const LowpArgs lp{master_params, stochastic_rounding};
  const Operands ops = parse_operands(
      {{"params", true, true}, {"grads", false, true}, {"zs", true, true}, {"exp_avg_sqs", true, true}},
      {params, grads, zs, exp_avg_sqs}, &lp);
  check_eps_representable("eps", eps, ops);
  const o::ScheduleFreeAdamwHyper h{lr, ckp1, beta1, beta2, eps, weight_decay, step};
  dispatch(ops.dtype, [&](auto tag) {
    using T = decltype(tag);
    auto ts = rows<o::ScheduleFreeAdamwTensor, T, 4>(ops);
    py::gil_scoped_release nogil;
    o::schedule_free_adamw<T>(ts.data(), ops.ntensors, h, ops.mixed());
  });
}

// ----------------------------------------------------------------------- Adadelta
void adadelta(py::handle params, py::handle grads, py::handle square_avgs, py::handle acc_deltas, Real lr_h,
              Real rho_h, Real eps_h, Real weight_decay_h, Flag maximize_h,
    py::handle master_params, py::handle stochastic_rounding) {
  const bool maximize = flag(maximize_h, "maximize");
  const double lr = real(lr_h, "lr");
  const double rho = real(rho_h, "rho");
  const double eps = real(eps_h, "eps");
  const double weight_decay = real(weight_decay_h, "weight_decay");
  check_finite_ge("lr", lr, 0.0);
  check_in_range("rho", rho, 0.0, 1.0, true);
  check_finite_gt("eps", eps, 0.0);
  check_finite_ge("weight_decay", weight_decay, 0.0);
  const LowpArgs lp{master_params, stochastic_rounding};
  const Operands ops = parse_operands(
      {{"params", true, true}, {"grads", false, true}, {"square_avgs", true, true}, {"acc_deltas", true, true}},
      {params, grads, square_avgs, acc_deltas}, &lp);
  check_eps_representable("eps", eps, ops);
  const o::AdadeltaHyper h{lr, rho, eps, weight_decay, maximize};
  dispatch(ops.dtype, [&](auto tag) {
    using T = decltype(tag);
    auto ts = rows<o::AdadeltaTensor, T, 4>(ops);
    py::gil_scoped_release nogil;
    o::adadelta<T>(ts.data(), ops.ntensors, h, ops.mixed());
  });
}

// -------------------------------------------------------------------------- Rprop
void rprop(py::handle params, py::handle grads, py::handle prevs, py::handle state_step_sizes, RealPair etas_h,
           RealPair step_sizes_h, Flag maximize_h,
    py::handle master_params, py::handle stochastic_rounding) {
  const bool maximize = flag(maximize_h, "maximize");
  const auto [etaminus, etaplus] = pair_arg(etas_h, "etas", "etaminus", "etaplus");
  const auto [step_min, step_max] = pair_arg(step_sizes_h, "step_sizes", "min_step", "max_step");
  if (!(0.0 < etaminus && etaminus < 1.0 && 1.0 < etaplus && std::isfinite(etaplus))) {
    throw py::value_error("etas must satisfy 0 < etaminus < 1 < etaplus (finite), got (" +
                          std::string(py::repr(py::float_(etaminus))) + ", " +
                          std::string(py::repr(py::float_(etaplus))) + ")");
  }
  check_finite_ge("min_step", step_min, 0.0);
  check_finite_ge("max_step", step_max, step_min);
  const LowpArgs lp{master_params, stochastic_rounding};
  const Operands ops = parse_operands(
      {{"params", true, true}, {"grads", false, true}, {"prevs", true, true}, {"state_step_sizes", true, true}},
      {params, grads, prevs, state_step_sizes}, &lp);
  const o::RpropHyper h{etaminus, etaplus, step_min, step_max, maximize};
  dispatch(ops.dtype, [&](auto tag) {
    using T = decltype(tag);
    auto ts = rows<o::RpropTensor, T, 4>(ops);
    py::gil_scoped_release nogil;
    o::rprop<T>(ts.data(), ops.ntensors, h, ops.mixed());
  });
}

// ------------------------------------------------ per-tensor scalar state operands
// NAdam's mu_products, ASGD's mus and etas: per tensor, one array holding exactly one
// float32 or float64 element (torch's 0-d state tensors), whatever the parameters' dtype.
// Checked after the array operands and like them (type, dtype, size, contiguity,
// writeability), and refused if one shares memory with any array of the call.
struct ScalarArg {
  const char* name;
  py::handle arg;
};

struct ScalarStates {
  std::vector<std::vector<o::ScalarState>> states;  // [argument][tensor]
  std::vector<py::object> keep_alive;               // held while the kernel runs without the GIL
};

ScalarStates scalar_states(const std::vector<Operand>& spec, const std::vector<py::handle>& operand_args,
                           const Operands& ops, const std::vector<ScalarArg>& args) {
  const bool list_form = is_list_like(operand_args[0]) || is_raw(operand_args[0]);
  const char* lead = spec[0].name;
  const std::int64_t n = ops.ntensors;
  auto label = [&](const char* name, std::int64_t t) {
    return list_form ? std::string(name) + "[" + std::to_string(t) + "]" : std::string(name);
  };
  ScalarStates out;
  std::vector<Span> spans;
  for (std::size_t k = 0; k < ops.noperands; ++k) {  // with master_params, if given
    for (std::int64_t t = 0; t < n; ++t) {
      const std::size_t i = static_cast<std::size_t>(t) * ops.noperands + k;
      const auto begin = reinterpret_cast<std::uintptr_t>(ops.ptrs[i]);
      const auto bytes = static_cast<std::uintptr_t>(ops.sizes[static_cast<std::size_t>(t)]) * ops.itemsizes[i];
      const bool written = k < spec.size() ? spec[k].written : true;
      if (begin && bytes) spans.push_back({begin, begin + bytes, written, {}, k, t});
    }
  }
  if (!ops.absmax.empty() && n > 0) {  // 8-bit states: their absmax arrays too
    const std::size_t stride = ops.absmax.size() / static_cast<std::size_t>(n);
    for (std::int64_t t = 0; t < n; ++t) {
      const auto nb = static_cast<std::uintptr_t>((ops.sizes[static_cast<std::size_t>(t)] + lowp::kQBlock - 1) /
                                                  lowp::kQBlock);
      for (std::size_t k = 0; k < stride; ++k) {
        const auto begin = reinterpret_cast<std::uintptr_t>(ops.absmax[static_cast<std::size_t>(t) * stride + k]);
        if (begin && nb) spans.push_back({begin, begin + nb * 4, true, {}, k, t});
      }
    }
  }
  for (const ScalarArg& a : args) {
    if (a.arg.is_none()) throw py::value_error(std::string(a.name) + " is required, got None");
    py::list items;
    if (list_form) {
      if (!is_list_like(a.arg)) {
        throw py::type_error(std::string(a.name) + " must be a list or tuple (" + lead + " is one), got " +
                             type_name(a.arg));
      }
      items = py::list(py::reinterpret_borrow<py::object>(a.arg));
      if (static_cast<std::int64_t>(items.size()) != n) {
        throw py::value_error(std::string(a.name) + " has " + std::to_string(items.size()) + " arrays but " + lead +
                              " has " + std::to_string(n));
      }
    } else {
      if (!py::isinstance<py::array>(a.arg)) {
        throw py::type_error(std::string(a.name) + " must be a numpy.ndarray (" + lead + " is one), got " +
                             type_name(a.arg));
      }
      items.append(a.arg);
    }
    std::vector<o::ScalarState> row;
    for (std::int64_t t = 0; t < n; ++t) {
      const std::string name = label(a.name, t);
      const py::array arr = require_array(items[static_cast<std::size_t>(t)], name);
      const DType dt = float_dtype(arr, name);
      if (arr.size() != 1) {
        throw py::value_error(name + " must hold one element (a per-tensor scalar state), got shape " +
                              shape_str(arr));
      }
      require_contiguous(arr, name);
      require_writeable(arr, name);
      add_span(spans, arr, true, name);
      row.push_back({const_cast<void*>(arr.data()), dt == DType::F64});
      out.keep_alive.push_back(arr);
    }
    out.states.push_back(std::move(row));
  }
  if (spans.size() > 1) {
    check_aliasing(spans, [&](std::size_t k, std::int64_t t) {
      return label(k < spec.size() ? spec[k].name : "master_params", t);
    });
  }
  return out;
}

// -------------------------------------------------------------------------- NAdam
void nadam(py::handle params, py::handle grads, py::handle exp_avgs, py::handle exp_avg_sqs, py::handle mu_products,
           Index step_h, Real lr_h, RealPair betas_h, Real eps_h, Real weight_decay_h, Real momentum_decay_h,
           Flag decoupled_weight_decay_h, Flag maximize_h,
    py::handle master_params, py::handle stochastic_rounding) {
  const bool decoupled_weight_decay = flag(decoupled_weight_decay_h, "decoupled_weight_decay");
  const bool maximize = flag(maximize_h, "maximize");
  const auto [step, lr, beta1, beta2, eps, weight_decay] = adam_like(step_h, lr_h, betas_h, eps_h, weight_decay_h);
  const double momentum_decay = real(momentum_decay_h, "momentum_decay");
  check_finite_ge("momentum_decay", momentum_decay, 0.0);
  const std::vector<Operand> spec{
      {"params", true, true}, {"grads", false, true}, {"exp_avgs", true, true}, {"exp_avg_sqs", true, true}};
  const std::vector<py::handle> args{params, grads, exp_avgs, exp_avg_sqs};
  const LowpArgs lp{master_params, stochastic_rounding};
  const Operands ops = parse_operands(spec, args, &lp);
  const ScalarStates sc = scalar_states(spec, args, ops, {{"mu_products", mu_products}});
  check_eps_representable("eps", eps, ops);
  const o::NadamHyper h{lr, beta1, beta2, eps, weight_decay, momentum_decay, step, decoupled_weight_decay, maximize};
  dispatch(ops.dtype, [&](auto tag) {
    using T = decltype(tag);
    std::vector<o::NadamTensor<T>> ts(static_cast<std::size_t>(ops.ntensors));
    for (std::int64_t t = 0; t < ops.ntensors; ++t) {
      const auto i = static_cast<std::size_t>(t);
      ts[i] = {ops.get<T>(t, 0), ops.get<T>(t, 1), ops.get<T>(t, 2), ops.get<T>(t, 3), ops.sizes[i], sc.states[0][i]};
    }
    py::gil_scoped_release nogil;
    o::nadam<T>(ts.data(), ops.ntensors, h, ops.mixed());
  });
}

// --------------------------------------------------------------------------- ASGD
void asgd(py::handle params, py::handle grads, py::handle axs, py::handle mus, py::handle etas, Index step_h,
          Real lr_h, Real lambd_h, Real alpha_h, Real t0_h, Real weight_decay_h, Flag maximize_h,
    py::handle master_params, py::handle stochastic_rounding) {
  const bool maximize = flag(maximize_h, "maximize");
  const std::int64_t step = step_arg(step_h);
  const double lr = real(lr_h, "lr");
  const double lambd = real(lambd_h, "lambd");
  const double alpha = real(alpha_h, "alpha");
  const double t0 = real(t0_h, "t0");
  const double weight_decay = real(weight_decay_h, "weight_decay");
  check_finite_ge("lr", lr, 0.0);
  check_finite_ge("lambd", lambd, 0.0);
  check_finite_ge("alpha", alpha, 0.0);
  check_finite_ge("t0", t0, 0.0);
  check_finite_ge("weight_decay", weight_decay, 0.0);
  const std::vector<Operand> spec{{"params", true, true}, {"grads", false, true}, {"axs", true, true}};
  const std::vector<py::handle> args{params, grads, axs};
  const LowpArgs lp{master_params, stochastic_rounding};
  const Operands ops = parse_operands(spec, args, &lp);
  const ScalarStates sc = scalar_states(spec, args, ops, {{"mus", mus}, {"etas", etas}});
  const o::AsgdHyper h{lr, lambd, alpha, t0, weight_decay, step, maximize};
  dispatch(ops.dtype, [&](auto tag) {
    using T = decltype(tag);
    std::vector<o::AsgdTensor<T>> ts(static_cast<std::size_t>(ops.ntensors));
    for (std::int64_t t = 0; t < ops.ntensors; ++t) {
      const auto i = static_cast<std::size_t>(t);
      ts[i] = {ops.get<T>(t, 0), ops.get<T>(t, 1), ops.get<T>(t, 2), ops.sizes[i], sc.states[0][i], sc.states[1][i]};
    }
    py::gil_scoped_release nogil;
    o::asgd<T>(ts.data(), ops.ntensors, h, ops.mixed());
  });
}

// ------------------------------------------------------------------ LAMB and LARS
// `adapt`: None (every tensor), one bool (single form) or one bool per tensor: False
// excludes a tensor (typically biases and normalization parameters) from the trust
// ratio and from weight decay.
std::vector<char> parse_adapt(py::handle adapt, std::int64_t ntensors, bool list_form) {
  std::vector<char> out(static_cast<std::size_t>(ntensors), 1);
  if (adapt.is_none()) return out;
  if (!list_form) {
    if (!PyBool_Check(adapt.ptr())) throw py::type_error("adapt must be a bool or None for a single array");
    out[0] = adapt.ptr() == Py_True;
    return out;
  }
  if (!(py::isinstance<py::list>(adapt) || py::isinstance<py::tuple>(adapt))) {
    throw py::type_error("adapt must be a list/tuple of bools (one per tensor) or None");
  }
  const auto seq = py::reinterpret_borrow<py::sequence>(adapt);
  if (static_cast<std::int64_t>(py::len(seq)) != ntensors) {
    throw py::value_error("adapt has " + std::to_string(py::len(seq)) + " entries but params has " +
                          std::to_string(ntensors));
  }
  for (std::int64_t t = 0; t < ntensors; ++t) {
    const py::handle h = seq[static_cast<std::size_t>(t)];
    if (!PyBool_Check(h.ptr())) throw py::type_error("adapt[" + std::to_string(t) + "] must be a bool");
    out[static_cast<std::size_t>(t)] = h.ptr() == Py_True;
  }
  return out;
}

py::object trust_result(const std::vector<double>& trust, bool list_form) {
  if (!list_form) return py::float_(trust[0]);
  py::array_t<double> res(static_cast<py::ssize_t>(trust.size()));
  std::copy(trust.begin(), trust.end(), res.mutable_data());
  return std::move(res);
}

// Runs a trust-ratio kernel (LAMB, LARS) over checked operands: parses `adapt`, gives
// kernel(tensors, work, trust) its workspace without the GIL, returns the per-tensor ratios.
template <template <class> class Tensor, std::size_t N, class Kernel>
py::object run_trust(const Operands& ops, py::handle params, py::handle adapt, Kernel kernel) {
  const bool list_form = is_list_like(params) || is_raw(params);
  const std::vector<char> ad = parse_adapt(adapt, ops.ntensors, list_form);
  std::vector<double> work(static_cast<std::size_t>(o::trust_workspace(ops.sizes.data(), ops.ntensors)));
  std::vector<double> trust(static_cast<std::size_t>(ops.ntensors));
  dispatch(ops.dtype, [&](auto tag) {
    using T = decltype(tag);
    auto ts = rows<Tensor, T, N>(ops);
    for (std::size_t t = 0; t < ts.size(); ++t) ts[t].adapt = ad[t] != 0;
    py::gil_scoped_release nogil;
    kernel(ts.data(), work.data(), trust.data(), ops.mixed());
  });
  return trust_result(trust, list_form);
}

py::object lamb(py::handle params, py::handle grads, py::handle exp_avgs, py::handle exp_avg_sqs,
                Index step_h, Real lr_h, RealPair betas_h, Real eps_h,
                Real weight_decay_h, Flag bias_correction_h, py::handle adapt, py::handle master_params,
                py::handle stochastic_rounding) {
  const bool bias_correction = flag(bias_correction_h, "bias_correction");
  const auto [step, lr, beta1, beta2, eps, weight_decay] = adam_like(step_h, lr_h, betas_h, eps_h, weight_decay_h);
  const LowpArgs lp{master_params, stochastic_rounding};
  const Operands ops = parse_operands(
      {{"params", true, true}, {"grads", false, true}, {"exp_avgs", true, true}, {"exp_avg_sqs", true, true}},
      {params, grads, exp_avgs, exp_avg_sqs}, &lp);
  check_eps_representable("eps", eps, ops);
  o::LambHyper h;
  h.lr = lr;
  h.beta1 = beta1;
  h.beta2 = beta2;
  h.eps = eps;
  h.weight_decay = weight_decay;
  h.step = step;
  h.bias_correction = bias_correction;
  return run_trust<o::LambTensor, 4>(
      ops, params, adapt,
      [&](auto* ts, double* work, double* trust, const lowp::Mixed* mx) {
        o::lamb(ts, ops.ntensors, h, work, trust, mx);
      });
}

py::object lars(py::handle params, py::handle grads, py::handle momentum_buffers, Real lr_h,
                Real momentum_h, Real weight_decay_h, Real trust_coefficient_h, Real eps_h,
                py::handle adapt, py::handle master_params, py::handle stochastic_rounding) {
  const double lr = real(lr_h, "lr");
  const double momentum = real(momentum_h, "momentum");
  const double weight_decay = real(weight_decay_h, "weight_decay");
  const double trust_coefficient = real(trust_coefficient_h, "trust_coefficient");
  const double eps = real(eps_h, "eps");
  check_finite_ge("lr", lr, 0.0);
  check_finite_ge("momentum", momentum, 0.0);
  check_finite_ge("weight_decay", weight_decay, 0.0);
  check_finite_gt("trust_coefficient", trust_coefficient, 0.0);
  check_finite_ge("eps", eps, 0.0);
  const LowpArgs lp{master_params, stochastic_rounding};
  const Operands ops = parse_operands(
      {{"params", true, true}, {"grads", false, true}, {"momentum_buffers", true, momentum != 0.0, "momentum != 0"}},
      {params, grads, momentum_buffers}, &lp);
  o::LarsHyper h;
  h.lr = lr;
  h.momentum = momentum;
  h.weight_decay = weight_decay;
  h.trust_coefficient = trust_coefficient;
  h.eps = eps;
  return run_trust<o::LarsTensor, 3>(
      ops, params, adapt,
      [&](auto* ts, double* work, double* trust, const lowp::Mixed* mx) {
        o::lars(ts, ops.ntensors, h, work, trust, mx);
      });
}

// ----------------------------------------------------------------- regularization
void add_penalty(py::handle grads, py::handle params, Real l1_h, Real l2_h) {
  const double l1 = real(l1_h, "l1");
  const double l2 = real(l2_h, "l2");
  check_finite_ge("l1", l1, 0.0);
  check_finite_ge("l2", l2, 0.0);
  const Operands ops = parse_operands({{"grads", true, true}, {"params", false, true}}, {grads, params});
  dispatch(ops.dtype, [&](auto tag) {
    using T = decltype(tag);
    auto ts = rows<o::PenaltyTensor, T, 2>(ops);
    py::gil_scoped_release nogil;
    o::add_penalty<T>(ts.data(), ops.ntensors, l1, l2);
  });
}

void soft_threshold(py::handle params, Real threshold_h) {
  const double threshold = real(threshold_h, "threshold");
  check_finite_ge("threshold", threshold, 0.0);
  const Operands ops = parse_operands({{"params", true, true}}, {params});
  if (ops.ntensors > 0 && ops.dtype == DType::F32 && !std::isfinite(static_cast<float>(threshold))) {
    // inf would make |p| - threshold NaN for an infinite p.
    throw py::value_error("threshold must be finite in float32 (the params' dtype), got " +
                          std::string(py::repr(py::float_(threshold))));
  }
  dispatch(ops.dtype, [&](auto tag) {
    using T = decltype(tag);
    std::vector<T*> ps(static_cast<std::size_t>(ops.ntensors));
    for (std::int64_t t = 0; t < ops.ntensors; ++t) ps[static_cast<std::size_t>(t)] = ops.get<T>(t, 0);
    py::gil_scoped_release nogil;
    o::soft_threshold<T>(ps.data(), ops.sizes.data(), ops.ntensors, threshold);
  });
}

void decay(py::handle params, Real lr_h, Real weight_decay_h) {
  const double lr = real(lr_h, "lr");
  const double weight_decay = real(weight_decay_h, "weight_decay");
  check_finite_ge("lr", lr, 0.0);
  check_finite_ge("weight_decay", weight_decay, 0.0);
  const Operands ops = parse_operands({{"params", true, true}}, {params});
  dispatch(ops.dtype, [&](auto tag) {
    using T = decltype(tag);
    std::vector<T*> ps(static_cast<std::size_t>(ops.ntensors));
    for (std::int64_t t = 0; t < ops.ntensors; ++t) ps[static_cast<std::size_t>(t)] = ops.get<T>(t, 0);
    py::gil_scoped_release nogil;
    o::decay<T>(ps.data(), ops.sizes.data(), ops.ntensors, lr, weight_decay);
  });
}

}  // namespace

void bind_optim(py::module_& m) {
  using py::arg;
  m.def("sgd", &sgd,
        "SGD with momentum, in place. Arrays or lists of arrays. See deepoptim.functional.sgd.",
        arg("params"), arg("grads"), arg("momentum_buffers"), arg("lr"), arg("momentum"), arg("dampening"),
        arg("weight_decay"), arg("nesterov"), arg("maximize"),
        arg("first_step"), arg("momentum_form"), arg("master_params"),
        arg("stochastic_rounding"));
  m.def("adagrad", &adagrad,
        "Adagrad, in place. Arrays or lists of arrays. See deepoptim.functional.adagrad.",
        arg("params"), arg("grads"), arg("state_sums"), arg("step"),
        arg("lr"), arg("lr_decay"), arg("weight_decay"),
        arg("initial_accumulator_value"), arg("eps"), arg("maximize"), arg("master_params"),
        arg("stochastic_rounding"));
  m.def("rmsprop", &rmsprop,
        "RMSprop, in place. Arrays or lists of arrays. See deepoptim.functional.rmsprop.",
        arg("params"), arg("grads"), arg("square_avgs"), arg("grad_avgs"),
        arg("momentum_buffers"), arg("lr"), arg("alpha"),
        arg("eps"), arg("weight_decay"), arg("momentum"),
        arg("centered"), arg("maximize"), arg("master_params"),
        arg("stochastic_rounding"));
  m.def("adam", &adam,
        "Adam / AdamW / AMSGrad, in place. Arrays or lists of arrays. See "
        "deepoptim.functional.adam.",
        arg("params"), arg("grads"), arg("exp_avgs"), arg("exp_avg_sqs"),
        arg("max_exp_avg_sqs"), arg("step"), arg("lr"),
        arg("betas"), arg("eps"), arg("weight_decay"),
        arg("amsgrad"), arg("maximize"), arg("decoupled_weight_decay"),
        arg("bias_correction"), arg("eps_inside_sqrt"), arg("master_params"),
        arg("stochastic_rounding"));
  m.def("adamax", &adamax, "Adamax, in place. Arrays or lists of arrays. See deepoptim.functional.adamax.",
        arg("params"), arg("grads"), arg("exp_avgs"), arg("exp_infs"), arg("step"), arg("lr"), arg("betas"),
        arg("eps"), arg("weight_decay"), arg("maximize"), arg("master_params"),
        arg("stochastic_rounding"));
  m.def("radam", &radam, "RAdam, in place. Arrays or lists of arrays. See deepoptim.functional.radam.",
        arg("params"), arg("grads"), arg("exp_avgs"), arg("exp_avg_sqs"), arg("step"), arg("lr"), arg("betas"),
        arg("eps"), arg("weight_decay"), arg("decoupled_weight_decay"), arg("maximize"), arg("master_params"),
        arg("stochastic_rounding"));
  m.def("lion", &lion, "Lion, in place. Arrays or lists of arrays. See deepoptim.functional.lion.",
        arg("params"), arg("grads"), arg("exp_avgs"), arg("lr"), arg("betas"), arg("weight_decay"), arg("maximize"), arg("master_params"),
        arg("stochastic_rounding"));
  m.def("schedule_free_adamw", &schedule_free_adamw,
        "Schedule-Free AdamW, in place. Arrays or lists of arrays. See deepoptim.functional.schedule_free_adamw.",
        arg("params"), arg("grads"), arg("zs"), arg("exp_avg_sqs"), arg("step"), arg("lr"), arg("ckp1"),
        arg("betas"), arg("eps"), arg("weight_decay"), arg("master_params"),
        arg("stochastic_rounding"));
  m.def("adadelta", &adadelta, "Adadelta, in place. See deepoptim.functional.adadelta.", arg("params"),
        arg("grads"), arg("square_avgs"), arg("acc_deltas"), arg("lr"), arg("rho"), arg("eps"), arg("weight_decay"),
        arg("maximize"), arg("master_params"),
        arg("stochastic_rounding"));
  m.def("rprop", &rprop, "Rprop, in place. See deepoptim.functional.rprop.", arg("params"), arg("grads"),
        arg("prevs"), arg("state_step_sizes"), arg("etas"), arg("step_sizes"), arg("maximize"), arg("master_params"),
        arg("stochastic_rounding"));
  m.def("nadam", &nadam, "NAdam, in place (mu_products too). See deepoptim.functional.nadam.", arg("params"),
        arg("grads"), arg("exp_avgs"), arg("exp_avg_sqs"), arg("mu_products"), arg("step"), arg("lr"), arg("betas"),
        arg("eps"), arg("weight_decay"), arg("momentum_decay"), arg("decoupled_weight_decay"), arg("maximize"), arg("master_params"),
        arg("stochastic_rounding"));
  m.def("asgd", &asgd, "ASGD, in place (mus and etas too). See deepoptim.functional.asgd.", arg("params"),
        arg("grads"), arg("axs"), arg("mus"), arg("etas"), arg("step"), arg("lr"), arg("lambd"), arg("alpha"),
        arg("t0"), arg("weight_decay"), arg("maximize"), arg("master_params"),
        arg("stochastic_rounding"));
  m.def("lamb", &lamb,
        "LAMB, in place; returns the trust ratios. See deepoptim.functional.lamb.", arg("params"),
        arg("grads"), arg("exp_avgs"), arg("exp_avg_sqs"), arg("step"), arg("lr"),
        arg("betas"), arg("eps"), arg("weight_decay"),
        arg("bias_correction"), arg("adapt"), arg("master_params"), arg("stochastic_rounding"));
  m.def("lars", &lars,
        "LARS, in place; returns the local learning rates. See deepoptim.functional.lars.",
        arg("params"), arg("grads"), arg("momentum_buffers"), arg("lr"),
        arg("momentum"), arg("weight_decay"), arg("trust_coefficient"),
        arg("eps"), arg("adapt"), arg("master_params"), arg("stochastic_rounding"));
  m.def("add_penalty", &add_penalty, "grads += l1*sign(params) + l2*params, in place.",
        arg("grads"), arg("params"), arg("l1"), arg("l2"));
  m.def("soft_threshold", &soft_threshold, "params = sign(params)*max(|params| - threshold, 0).",
        arg("params"), arg("threshold"));
  m.def("decay", &decay, "Decoupled weight decay, params *= 1 - lr*weight_decay. See deepoptim.functional.decay.",
        arg("params"), arg("lr"), arg("weight_decay"));
}

}  // namespace deepoptim::bind
