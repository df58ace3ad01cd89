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

// The checked arrays of a cast: every src and out validated (both lists whole), with
// references held for the GIL-free call.
struct Parsed {
  std::vector<py::array> keep;
  std::vector<ct::Tensor> tensors;
  ct::Type from = ct::Type::F32, to = ct::Type::F32;
  std::int64_t total = 0;
};

Parsed parse(py::handle src_h, py::handle out_h) {
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
  Parsed r;
  std::vector<Span> spans;
  for (std::size_t i = 0; i < n; ++i) {
    py::array s = require_array(srcs[i], name("src", i));
    py::array o = require_array(outs[i], name("out", i));
    const ct::Type fi = cast_type(s, name("src", i)), ti = cast_type(o, name("out", i));
    if (i == 0) {
      r.from = fi;
      r.to = ti;
    } else if (fi != r.from || ti != r.to) {
      const bool src_differs = fi != r.from;
      throw py::type_error(name(src_differs ? "src" : "out", i) + " must have the dtype of " +
                           (src_differs ? "src[0] (" : "out[0] (") + type_str(src_differs ? r.from : r.to) +
                           "), got " + type_str(src_differs ? fi : ti));
    }
    require_contiguous(s, name("src", i));
    require_contiguous(o, name("out", i));
    require_writeable(o, name("out", i));
    require_shape(o, std::vector<py::ssize_t>(s.shape(), s.shape() + s.ndim()), name("out", i),
                  "that of " + name("src", i));
    add_span(spans, s, false, name("src", i));
    add_span(spans, o, true, name("out", i));
    r.tensors.push_back({s.data(), const_cast<void*>(o.data()), static_cast<std::int64_t>(s.size())});
    r.total += static_cast<std::int64_t>(s.size());
    r.keep.push_back(s);
    r.keep.push_back(o);
  }
  check_aliasing(spans);
  return r;
}

void cast(py::handle src_h, py::handle out_h) {
  const Parsed r = parse(src_h, out_h);
  py::gil_scoped_release nogil;
  ct::cast(r.tensors.data(), static_cast<std::int64_t>(r.tensors.size()), r.from, r.to);
}

void cast_stochastic(py::handle src_h, py::handle out_h, py::handle seed_h, py::handle offset_h) {
  const std::uint64_t seed = as_u64(seed_h, "seed");
  const std::uint64_t offset = as_u64(offset_h, "offset");
  const Parsed r = parse(src_h, out_h);
  if (!r.tensors.empty() && (r.from != ct::Type::F32 || r.to != ct::Type::BF16)) {
    throw py::type_error(std::string("stochastic rounding casts float32 to bfloat16, got ") + type_str(r.from) +
                         " to " + type_str(r.to));
  }
  check_offset_range(offset, static_cast<py::ssize_t>(r.total));
  py::gil_scoped_release nogil;
  ct::cast_stochastic(r.tensors.data(), static_cast<std::int64_t>(r.tensors.size()), seed, offset);
}

}  // namespace

void bind_cast(py::module_& m) {
  m.def("cast", &cast,
        "out = src rounded to out's dtype (float32, float64, float16, bfloat16), nearest even; "
        "NaN becomes the quiet NaN of its sign.",
        py::arg("src"), py::arg("out"));
  m.def("cast_stochastic", &cast_stochastic,
        "out (bfloat16) = src (float32) rounded up with probability (low 16 bits) / 2**16, from the "
        "16-bit draws of elements offset.. of the Philox stream seed.",
        py::arg("src"), py::arg("out"), py::arg("seed"), py::arg("offset"));
}

}  // namespace deepoptim::bind
