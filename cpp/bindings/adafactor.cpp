// Binding of Adafactor (cpp/src/adafactor.cpp): check arguments, release the GIL, call the
// kernel. Arrays or lists of arrays; a parameter's state is its row and column factors
// (two or more dimensions) or its variance (a vector), the other entries None. The checks
// and their order are those of python/deepoptim/reference/adafactor.py. The documented
// entry point is deepoptim.functional.adafactor.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <array>
#include <cmath>
#include <string>
#include <vector>

#include "checks.hpp"
#include "deepoptim/adafactor.hpp"

namespace deepoptim::bind {
namespace {

namespace af = deepoptim::adafactor;

constexpr std::array<const char*, 5> kArgs = {"params", "grads", "row_vars", "col_vars", "variances"};

struct Checked {
  DType dtype = DType::F32;
  std::vector<std::array<py::array, 5>> arrays;
  std::vector<std::array<bool, 5>> present;  // false for a None entry (arrays[t][k] is then unused)
  std::vector<std::array<std::int64_t, 3>> dims;  // batch, rows, cols
};

std::string entry_name(const char* arg, std::size_t t, bool list_form) {
  return list_form ? std::string(arg) + "[" + std::to_string(t) + "]" : std::string(arg);
}

std::vector<py::ssize_t> shape_of(const py::array& a) { return {a.shape(), a.shape() + a.ndim()}; }

Checked check_tensors(const std::array<py::handle, 5>& args) {
  const bool list_form = is_list_like(args[0]);
  const std::size_t n = list_form ? py::len(args[0]) : 1;
  for (std::size_t k = 1; k < 5; ++k) {
    if (list_form != is_list_like(args[k])) {
      throw py::type_error(std::string(kArgs[k]) + (list_form ? " must be a list or tuple like params (one entry per tensor)"
                                                              : " must be an array or None like params, not a list"));
    }
    if (list_form && py::len(args[k]) != n) {
      throw py::value_error(std::string(kArgs[k]) + " has " + std::to_string(py::len(args[k])) +
                            " entries but params has " + std::to_string(n));
    }
  }
  auto entry = [&](std::size_t k, std::size_t t) -> py::handle {
    return list_form ? py::handle(py::reinterpret_borrow<py::sequence>(args[k])[t]) : args[k];
  };
  Checked out;
  out.arrays.resize(n);
  out.present.assign(n, {true, true, true, true, true});
  out.dims.resize(n);
  std::vector<Span> spans;
  for (std::size_t t = 0; t < n; ++t) {
    const std::string pn = entry_name("params", t, list_form);
    const py::array p = require_array(entry(0, t), pn);
    const DType dt = float_dtype(p, pn);
    if (t == 0) out.dtype = dt;
    const std::vector<py::ssize_t> shape = shape_of(p);
    const bool factored = p.ndim() >= 2;
    std::array<py::array, 5>& row = out.arrays[t];
    row[0] = p;
    row[1] = require_array(entry(1, t), entry_name("grads", t, list_form));
    for (std::size_t k = 1; k < 5; ++k) {
      const std::string an = entry_name(kArgs[k], t, list_form);
      std::vector<py::ssize_t> want = shape;
      bool present = true;
      if (k == 2 || k == 3) {
        present = factored;
        if (factored) want[shape.size() - (k == 2 ? 1 : 2)] = 1;
      } else if (k == 4) {
        present = !factored;
      }
      const py::handle h = k == 1 ? py::handle(row[1]) : entry(k, t);
      if (!present) {
        out.present[t][k] = false;
        if (!h.is_none()) {
          throw py::value_error(an + " must be None for a parameter of shape " + shape_str(p) +
                                (factored ? " (its second moment is factored into row_vars and col_vars)"
                                          : " (its second moment is kept whole in variances)"));
        }
        continue;
      }
      const py::array a = require_array(h, an);
      require_dtype(a, dt, an, pn);
      require_shape(a, want, an, "from " + pn + "'s shape " + shape_str(p));
      row[k] = a;
    }
    for (std::size_t k = 0; k < 5; ++k) {
      if (!out.present[t][k]) continue;
      const std::string an = entry_name(kArgs[k], t, list_form);
      require_contiguous(row[k], an);
      if (k != 1) require_writeable(row[k], an);
      add_span(spans, row[k], k != 1, an);
    }
    std::int64_t batch = 1;
    if (factored) {
      for (std::size_t i = 0; i + 2 < shape.size(); ++i) batch *= shape[i];
      out.dims[t] = {batch, shape[shape.size() - 2], shape[shape.size() - 1]};
    } else {
      out.dims[t] = {1, 1, static_cast<std::int64_t>(p.size())};
    }
  }
  check_aliasing(spans);
  return out;
}

void adafactor(py::handle params, py::handle grads, py::handle row_vars, py::handle col_vars, py::handle variances,
               Index step_h, Real lr_h, Real beta2_decay_h, py::handle eps_h, Real d_h, Real weight_decay_h,
               Flag maximize_h) {
  af::Hyper h{};
  h.maximize = flag(maximize_h, "maximize");
  h.step = step_arg(step_h);
  h.lr = real(lr_h, "lr");
  h.beta2_decay = real(beta2_decay_h, "beta2_decay");
  if (!(is_list_like(eps_h) && py::len(eps_h) == 2)) {
    throw py::type_error("eps must be a pair (eps1 or None, eps2), got " + std::string(py::repr(eps_h)));
  }
  const auto eps = py::reinterpret_borrow<py::sequence>(eps_h);
  h.eps1_default = py::handle(eps[0]).is_none();
  h.eps1 = h.eps1_default ? 0.0 : real(eps[0], "eps[0]");
  h.eps2 = real(eps[1], "eps[1]");
  h.d = real(d_h, "d");
  h.weight_decay = real(weight_decay_h, "weight_decay");
  check_finite_ge("lr", h.lr, 0.0);
  if (!(h.beta2_decay <= 0.0 && std::isfinite(h.beta2_decay))) {
    throw py::value_error("beta2_decay must be a finite number <= 0, got " + std::string(py::repr(py::float_(h.beta2_decay))));
  }
  if (!h.eps1_default) check_finite_ge("eps[0]", h.eps1, 0.0);
  check_finite_ge("eps[1]", h.eps2, 0.0);
  check_finite_ge("d", h.d, 1.0);
  check_finite_ge("weight_decay", h.weight_decay, 0.0);
  if (is_raw(params)) throw py::type_error("params must be arrays: adafactor needs each parameter's shape");
  const Checked c = check_tensors({params, grads, row_vars, col_vars, variances});
  dispatch(c.dtype, [&](auto tag) {
    using T = decltype(tag);
    std::vector<af::Tensor<T>> ts(c.arrays.size());
    for (std::size_t t = 0; t < ts.size(); ++t) {
      const auto& a = c.arrays[t];
      // every written array was checked writeable above
      auto ptr = [&](std::size_t k) {
        return c.present[t][k] ? static_cast<T*>(const_cast<void*>(a[k].data())) : nullptr;
      };
      ts[t] = {ptr(0), static_cast<const T*>(a[1].data()), ptr(2), ptr(3), ptr(4), c.dims[t][0], c.dims[t][1],
               c.dims[t][2]};
    }
    py::gil_scoped_release nogil;
    af::adafactor<T>(ts.data(), static_cast<std::int64_t>(ts.size()), h);
  });
}

}  // namespace

void bind_adafactor(py::module_& m) {
  using py::arg;
  m.def("adafactor", &adafactor,
        "Adafactor (factored second moments of matrices, whole ones of vectors), in place. Arrays or lists of "
        "arrays. See deepoptim.functional.adafactor.",
        arg("params"), arg("grads"), arg("row_vars"), arg("col_vars"), arg("variances"), arg("step"), arg("lr"),
        arg("beta2_decay"), arg("eps"), arg("d"), arg("weight_decay"), arg("maximize"));
}

}  // namespace deepoptim::bind
