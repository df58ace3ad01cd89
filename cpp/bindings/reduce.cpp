// Bindings of the reductions and clipping kernels: check, release the GIL, call.
// The documented entry points are in deepoptim.functional (reduce) and deepoptim.clip.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <omp.h>

#include <cmath>
#include <string>
#include <limits>
#include <type_traits>
#include <vector>

#include "checks.hpp"
#include "deepoptim/reduce.hpp"

namespace deepoptim::bind {
namespace {

namespace rd = deepoptim::reduce;

rd::Ord parse_ord(double ord) {
  if (ord == 2.0) return rd::Ord::L2;
  if (ord == 1.0) return rd::Ord::L1;
  if (std::isinf(ord) && ord > 0) return rd::Ord::Inf;
  throw py::value_error("norm_type must be 1, 2 or inf, got " + std::string(py::repr(py::float_(ord))));
}

// Views of operand 0 of every tensor; T may be const-qualified for read-only kernels.
template <class T>
std::vector<rd::View<T>> views(const Operands& ops) {
  using U = std::remove_const_t<T>;
  std::vector<rd::View<T>> v(static_cast<std::size_t>(ops.ntensors));
  for (std::int64_t t = 0; t < ops.ntensors; ++t) {
    v[static_cast<std::size_t>(t)] = {ops.get<U>(t, 0), ops.sizes[static_cast<std::size_t>(t)]};
  }
  return v;
}

// Per-tensor norms of an already-parsed list, without the GIL.
std::vector<double> tensor_norms(const Operands& ops, rd::Ord ord) {
  std::vector<double> out(static_cast<std::size_t>(ops.ntensors));
  std::vector<double> work(static_cast<std::size_t>(rd::norms_workspace(ops.sizes.data(), ops.ntensors)));
  dispatch(ops.dtype, [&](auto tag) {
    using T = decltype(tag);
    auto v = views<const T>(ops);
    py::gil_scoped_release nogil;
    rd::norms<T>(v.data(), ops.ntensors, ord, out.data(), work.data());
  });
  return out;
}

// Combines per-tensor norms into the norm of the concatenation, in tensor order.
double total_norm(const std::vector<double>& norms, rd::Ord ord) {
  double acc = 0.0;
  bool nan = false;
  for (double n : norms) {
    if (ord == rd::Ord::L2) acc += n * n;
    else if (ord == rd::Ord::L1) acc += n;
    else {
      nan = nan || n != n;
      acc = n > acc ? n : acc;
    }
  }
  if (nan) return std::numeric_limits<double>::quiet_NaN();
  return ord == rd::Ord::L2 ? std::sqrt(acc) : acc;
}

// One value per tensor: a float for a single array, a float64 array for a list (the form
// the first array argument came in).
py::object per_tensor(py::handle first, const std::vector<double>& out) {
  if (!(is_list_like(first) || is_raw(first))) return py::float_(out[0]);
  py::array_t<double> res(static_cast<py::ssize_t>(out.size()));
  std::copy(out.begin(), out.end(), res.mutable_data());
  return std::move(res);
}

py::object norms(py::handle arrays, Real norm_type_h) {
  const double norm_type = real(norm_type_h, "norm_type");
  const rd::Ord ord = parse_ord(norm_type);
  const Operands ops = parse_operands({{"arrays", false, true}}, {arrays});
  return per_tensor(arrays, tensor_norms(ops, ord));
}

py::object dots(py::handle xs, py::handle ys) {
  const Operands ops = parse_operands({{"xs", false, true}, {"ys", false, true}}, {xs, ys});
  std::vector<double> out(static_cast<std::size_t>(ops.ntensors));
  std::vector<double> work(static_cast<std::size_t>(rd::norms_workspace(ops.sizes.data(), ops.ntensors)));
  dispatch(ops.dtype, [&](auto tag) {
    using T = decltype(tag);
    std::vector<rd::View<const T>> x(static_cast<std::size_t>(ops.ntensors)), y(x.size());
    for (std::int64_t t = 0; t < ops.ntensors; ++t) {
      const auto i = static_cast<std::size_t>(t);
      x[i] = {ops.get<T>(t, 0), ops.sizes[i]};
      y[i] = {ops.get<T>(t, 1), ops.sizes[i]};
    }
    py::gil_scoped_release nogil;
    rd::dots<T>(x.data(), y.data(), ops.ntensors, out.data(), work.data());
  });
  return per_tensor(xs, out);
}

bool all_finite(py::handle arrays) {
  const Operands ops = parse_operands({{"arrays", false, true}}, {arrays});
  return dispatch(ops.dtype, [&](auto tag) {
    using T = decltype(tag);
    auto v = views<const T>(ops);
    py::gil_scoped_release nogil;
    return rd::all_finite<T>(v.data(), ops.ntensors);
  });
}

void scale_parsed(const Operands& ops, double factor) {
  dispatch(ops.dtype, [&](auto tag) {
    using T = decltype(tag);
    auto v = views<T>(ops);
    py::gil_scoped_release nogil;
    rd::scale<T>(v.data(), ops.ntensors, factor);
  });
}

void scale(py::handle arrays, Real factor_h) {
  const double factor = real(factor_h, "factor");
  const Operands ops = parse_operands({{"arrays", true, true}}, {arrays});
  scale_parsed(ops, factor);
}

void clamp(py::handle arrays, Real lo_h, Real hi_h) {
  const double lo = real(lo_h, "lo");
  const double hi = real(hi_h, "hi");
  if (std::isnan(lo) || std::isnan(hi) || lo > hi) {
    throw py::value_error("clamp needs lo <= hi, got lo=" + std::string(py::repr(py::float_(lo))) +
                          ", hi=" + std::string(py::repr(py::float_(hi))));
  }
  const Operands ops = parse_operands({{"arrays", true, true}}, {arrays});
  dispatch(ops.dtype, [&](auto tag) {
    using T = decltype(tag);
    auto v = views<T>(ops);
    py::gil_scoped_release nogil;
    rd::clamp<T>(v.data(), ops.ntensors, lo, hi);
  });
}

// torch.nn.utils.clip_grad_norm_: total = ||concat(grads)||; coef = max_norm/(total + 1e-6);
// grads *= coef when coef < 1 (or NaN). With error_if_nonfinite and a non-finite total the
// grads are left alone and the caller raises. Returns the total norm.
double clip_grad_norm(py::handle grads, Real max_norm_h, Real norm_type_h, Flag error_if_nonfinite_h) {
  const bool error_if_nonfinite = flag(error_if_nonfinite_h, "error_if_nonfinite");
  const double max_norm = real(max_norm_h, "max_norm");
  const double norm_type = real(norm_type_h, "norm_type");
  const rd::Ord ord = parse_ord(norm_type);
  check_finite_ge("max_norm", max_norm, 0.0);
  const Operands ops = parse_operands({{"grads", true, true}}, {grads});
  const double total = total_norm(tensor_norms(ops, ord), ord);
  if (error_if_nonfinite && !std::isfinite(total)) return total;
  const double coef = max_norm / (total + 1e-6);
  if (!(coef >= 1.0)) scale_parsed(ops, coef);
  return total;
}

}  // namespace

void bind_reduce(py::module_& m) {
  m.def(
      "set_num_threads", [](int n) {
        if (n < 1) throw py::value_error("n must be >= 1, got " + std::to_string(n));
        omp_set_num_threads(n);
      },
      "Threads for the following kernel calls (omp_set_num_threads).", py::arg("n"));
  using py::arg;
  m.def("norms", &norms, "Per-tensor norms (float for one array, float64 array for a list).",
        arg("arrays"), arg("norm_type"));
  m.def("dots", &dots, "Per-pair dot products in float64 (float for one pair, float64 array for lists).",
        arg("xs"), arg("ys"));
  m.def("all_finite", &all_finite, "True iff no element is NaN or infinite.", arg("arrays"));
  m.def("scale", &scale, "arrays *= factor, in place.", arg("arrays"), arg("factor"));
  m.def("clamp", &clamp, "arrays = clamp(arrays, lo, hi), in place; NaN kept.", arg("arrays"),
        arg("lo"), arg("hi"));
  m.def("clip_grad_norm", &clip_grad_norm, "Clip by global norm in place; returns the total norm.",
        arg("grads"), arg("max_norm"), arg("norm_type"), arg("error_if_nonfinite"));
}

}  // namespace deepoptim::bind
