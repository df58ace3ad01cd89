// Binding of the cast kernel: check every array (both lists whole) before any is
// written, release the GIL, call.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "checks.hpp"
#include "deepoptim/cast.hpp"

namespace deepoptim::bind {
namespace {

namespace ct = deepoptim::cast;

const char* type_str(ct::Type t) {
  switch (t) {
    case ct::Type::F32: return "float32";
    case ct::Type::F64: return "float64";
    case ct::Type::BF16: return "bfloat16";
    case ct::Type::F16: return "float16";
  }
  return "?";
}

// float32, float64, float16 (NumPy's) or bfloat16 (ml_dtypes'), in native byte order.
ct::Type cast_type(const py::array& a, const std::string& name) {
  const py::dtype d = a.dtype();
  const bool native = d.attr("isnative").cast<bool>();
  if (native) {
    switch (d.num()) {
      case 11: return ct::Type::F32;  // NPY_FLOAT
      case 12: return ct::Type::F64;  // NPY_DOUBLE
      case 23: return ct::Type::F16;  // NPY_HALF
      default: break;
    }
    if (d.itemsize() == 2 && py::str(d.attr("name")).cast<std::string>() == "bfloat16") return ct::Type::BF16;
  }
  throw py::type_error(name + " must have dtype float32, float64, float16 or bfloat16 (ml_dtypes), got " +
                       std::string(py::str(d)));
}

void cast(py::handle src_h, py::handle out_h) {
  const bool list_form = is_list_like(src_h);
  if (list_form != is_list_like(out_h)) {
    throw py::type_error(std::string("src and out must both be arrays or both be lists of arrays, got ") +
                         type_name(src_h) + " and " + type_name(out_h));
  }
  std::vector<py::handle> srcs, outs;
  if (list_form) {
    for (py::handle h : py::reinterpret_borrow<py::sequence>(src_h)) srcs.push_back(h);
    for (py::handle h : py::reinterpret_borrow<py::sequence>(out_h)) outs.push_back(h);
    if (srcs.size() != outs.size()) {
      throw py::value_error("out has " + std::to_string(outs.size()) + " arrays but src has " +
                            std::to_string(srcs.size()));
    }
  } else {
    srcs.push_back(src_h);
    outs.push_back(out_h);
  }
  auto name = [&](const char* what, std::size_t i) {
    return list_form ? std::string(what) + "[" + std::to_string(i) + "]" : std::string(what);
  };
  const std::size_t n = srcs.size();
  std::vector<py::array> s(n), o(n);
  ct::Type from = ct::Type::F32, to = ct::Type::F32;
  std::vector<Span> spans;
  for (std::size_t i = 0; i < n; ++i) {
    s[i] = require_array(srcs[i], name("src", i));
    o[i] = require_array(outs[i], name("out", i));
    const ct::Type fi = cast_type(s[i], name("src", i)), ti = cast_type(o[i], name("out", i));
    if (i == 0) {
      from = fi;
      to = ti;
    } else if (fi != from || ti != to) {
      throw py::type_error(name(fi != from ? "src" : "out", i) + " must have the dtype of " +
                           (fi != from ? "src[0] (" + std::string(type_str(from)) : "out[0] (" + std::string(type_str(to))) +
                           "), got " + type_str(fi != from ? fi : ti));
    }
    require_contiguous(s[i], name("src", i));
    require_contiguous(o[i], name("out", i));
    require_writeable(o[i], name("out", i));
    require_shape(o[i], std::vector<py::ssize_t>(s[i].shape(), s[i].shape() + s[i].ndim()), name("out", i),
                  "that of " + name("src", i));
    add_span(spans, s[i], false, name("src", i));
    add_span(spans, o[i], true, name("out", i));
  }
  check_aliasing(spans);
  std::vector<ct::Tensor> ts(n);
  for (std::size_t i = 0; i < n; ++i) {
    ts[i] = {s[i].data(), const_cast<void*>(o[i].data()), static_cast<std::int64_t>(s[i].size())};
  }
  py::gil_scoped_release nogil;
  ct::cast(ts.data(), static_cast<std::int64_t>(n), from, to);
}

}  // namespace

void bind_cast(py::module_& m) {
  m.def("cast", &cast,
        "out = src rounded to out's dtype (float32, float64, float16, bfloat16), nearest even; "
        "NaN becomes the quiet NaN of its sign.",
        py::arg("src"), py::arg("out"));
}

}  // namespace deepoptim::bind
