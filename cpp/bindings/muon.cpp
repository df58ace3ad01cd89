// Binding of Muon (cpp/src/muon.cpp): check arguments, release the GIL, call the kernel.
// Arrays or lists of arrays, each 2-D. The documented entry point is deepoptim.functional.muon.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <string>
#include <vector>

#include "checks.hpp"
#include "deepoptim/lowp.hpp"
#include "deepoptim/muon.hpp"

namespace deepoptim::bind {
namespace {

namespace mu = deepoptim::muon;

// ns_coefficients: a tuple or list of three numbers (a, b, c), each finite.
mu::MuonHyper parse_coefficients(py::handle h, mu::MuonHyper hp) {
  if (!(is_list_like(h) && py::len(h) == 3)) {
    throw py::type_error("ns_coefficients must be a tuple of three numbers (a, b, c), got " +
                         std::string(py::repr(h)));
  }
  const auto seq = py::reinterpret_borrow<py::sequence>(h);
  hp.a = real(seq[0], "ns_coefficients[0]");
  hp.b = real(seq[1], "ns_coefficients[1]");
  hp.c = real(seq[2], "ns_coefficients[2]");
  return hp;
}

mu::AdjustLr parse_adjust(py::handle h) {
  if (h.is_none()) return mu::AdjustLr::Original;
  const std::string s = str_arg(h, "adjust_lr_fn");
  if (s == "original") return mu::AdjustLr::Original;
  if (s == "match_rms_adamw") return mu::AdjustLr::MatchRmsAdamw;
  throw py::value_error("adjust_lr_fn must be None, 'original' or 'match_rms_adamw', got '" + s + "'");
}

void muon(py::handle params, py::handle grads, py::handle momentum_buffers, Real lr_h, Real weight_decay_h,
          Real momentum_h, Flag nesterov_h, py::handle ns_coefficients_h, Real eps_h, Index ns_steps_h,
          py::handle adjust_lr_fn_h) {
  mu::MuonHyper h{};
  h.nesterov = flag(nesterov_h, "nesterov");
  h.lr = real(lr_h, "lr");
  h.weight_decay = real(weight_decay_h, "weight_decay");
  h.momentum = real(momentum_h, "momentum");
  h = parse_coefficients(ns_coefficients_h, h);
  h.eps = real(eps_h, "eps");
  h.ns_steps = int_arg(ns_steps_h, "ns_steps");
  h.adjust_lr = parse_adjust(adjust_lr_fn_h);
  check_finite_ge("lr", h.lr, 0.0);
  check_finite_ge("weight_decay", h.weight_decay, 0.0);
  check_finite_ge("momentum", h.momentum, 0.0);
  for (const auto& [name, x] : {std::pair{"ns_coefficients[0]", h.a}, std::pair{"ns_coefficients[1]", h.b},
                                std::pair{"ns_coefficients[2]", h.c}}) {
    if (!std::isfinite(x)) throw py::value_error(std::string(name) + " must be finite, got " + std::string(py::repr(py::float_(x))));
  }
  check_finite_gt("eps", h.eps, 0.0);
  if (lowp::to_bfloat16(float(h.eps)).bits == 0) {
    throw py::value_error("eps rounds to 0 in bfloat16 (the precision of the Newton-Schulz iteration), got " +
                          std::string(py::repr(py::float_(h.eps))));
  }
  if (h.ns_steps < 0 || h.ns_steps >= 100) {
    throw py::value_error("ns_steps must be in [0, 100), got " + std::to_string(h.ns_steps));
  }
  if (is_raw(params)) {
    throw py::type_error("params must be arrays: muon needs each matrix's shape");
  }
  const Operands ops = parse_operands(
      {{"params", true, true}, {"grads", false, true}, {"momentum_buffers", true, true}},
      {params, grads, momentum_buffers});
  // Every array is checked above; each parameter must also be a matrix.
  const bool list_form = is_list_like(params);
  std::vector<std::pair<std::int64_t, std::int64_t>> shapes;
  for (std::int64_t t = 0; t < ops.ntensors; ++t) {
    const py::array a = py::reinterpret_borrow<py::array>(list_form ? py::handle(py::reinterpret_borrow<py::sequence>(params)[t])
                                                                     : params);
    if (a.ndim() != 2) {
      const std::string name = list_form ? "params[" + std::to_string(t) + "]" : std::string("params");
      throw py::value_error(name + " must be 2-D (Muon orthogonalizes matrices; use another optimizer for "
                            "biases, norms and embeddings), got shape " + shape_str(a));
    }
    shapes.emplace_back(a.shape(0), a.shape(1));
  }
  dispatch(ops.dtype, [&](auto tag) {
    using T = decltype(tag);
    std::vector<mu::MuonTensor<T>> ts(static_cast<std::size_t>(ops.ntensors));
    for (std::int64_t t = 0; t < ops.ntensors; ++t) {
      const auto [r, c] = shapes[static_cast<std::size_t>(t)];
      ts[static_cast<std::size_t>(t)] = {ops.get<T>(t, 0), ops.get<T>(t, 1), ops.get<T>(t, 2), r, c};
    }
    py::gil_scoped_release nogil;
    mu::muon<T>(ts.data(), ops.ntensors, h);
  });
}

}  // namespace

void bind_muon(py::module_& m) {
  using py::arg;
  m.def("muon", &muon,
        "Muon (momentum, then Newton-Schulz orthogonalization of each matrix), in place. Arrays or lists of "
        "2-D arrays. See deepoptim.functional.muon.",
        arg("params"), arg("grads"), arg("momentum_buffers"), arg("lr"), arg("weight_decay"), arg("momentum"),
        arg("nesterov"), arg("ns_coefficients"), arg("eps"), arg("ns_steps"), arg("adjust_lr_fn"));
}

}  // namespace deepoptim::bind
