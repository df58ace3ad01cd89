// Bindings of dropout: check, allocate the outputs, release the GIL, call.
// The documented entry points are deepoptim.functional.dropout / dropout_backward.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "checks.hpp"
#include "deepoptim/dropout.hpp"

namespace deepoptim::bind {
namespace {

namespace dr = deepoptim::dropout;

void check_p(double p) { check_in_range("p", p, 0.0, 1.0, true); }

py::array like(const py::array& x, DType dt) {
  std::vector<py::ssize_t> shape(x.shape(), x.shape() + x.ndim());
  return dt == DType::F32 ? py::array(py::array_t<float>(shape)) : py::array(py::array_t<double>(shape));
}

// The output array: `out` checked (x's shape and dtype, contiguous, writeable; it may be
// x itself, since every element is read before it is written, but may not partly
// overlap it), or a new array.
py::array output(py::handle out_h, const py::array& x, DType dt, const char* xname) {
  if (out_h.is_none()) return like(x, dt);
  py::array out = require_array(out_h, "out");
  require_dtype(out, dt, "out", xname);
  require_shape(out, std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()), "out", std::string(xname) + "'s shape");
  require_contiguous(out, "out");
  require_writeable(out, "out");
  if (out.data() != x.data()) {
    std::vector<Span> spans;
    add_span(spans, x, false, xname);
    add_span(spans, out, true, "out");
    check_aliasing(spans);
  }
  return out;
}

py::tuple dropout(py::handle x_h, Real p_h, Flag training_h, py::handle seed_h, py::handle offset_h,
                  Flag return_mask_h, py::handle out_h) {
  const bool training = flag(training_h, "training");
  const bool return_mask = flag(return_mask_h, "return_mask");
  const double p = real(p_h, "p");
  py::array x = require_array(x_h, "x");
  const DType dt = float_dtype(x, "x");
  require_contiguous(x, "x");
  check_p(p);
  const std::uint64_t seed = as_u64(seed_h, "seed");
  const std::uint64_t offset = as_u64(offset_h, "offset");
  check_offset_range(offset, x.size());
  py::array y = output(out_h, x, dt, "x");
  if (!training || p == 0.0) {  // the identity: x itself, or a copy into out
    if (out_h.is_none()) return py::make_tuple(x, py::none());
    if (y.data() != x.data()) std::memcpy(y.mutable_data(), x.data(), static_cast<std::size_t>(x.nbytes()));
    return py::make_tuple(y, py::none());
  }

  py::array_t<std::uint8_t> mask(return_mask ? (x.size() + 7) / 8 : 0);
  dispatch(dt, [&](auto tag) {
    using T = decltype(tag);
    dr::ForwardArgs<T> a{static_cast<const T*>(x.data()), static_cast<T*>(y.mutable_data()),
                         return_mask ? mask.mutable_data() : nullptr,
                         static_cast<std::int64_t>(x.size()), seed, offset, p};
    py::gil_scoped_release nogil;
    dr::dropout_forward<T>(a);
  });
  return py::make_tuple(y, return_mask ? py::object(mask) : py::object(py::none()));
}

py::array dropout_backward(py::handle dy_h, py::handle mask_h, Real p_h, py::handle seed_h,
                           py::handle offset_h, py::handle out_h) {
  const double p = real(p_h, "p");
  py::array dy = require_array(dy_h, "dy");
  const DType dt = float_dtype(dy, "dy");
  require_contiguous(dy, "dy");
  check_p(p);
  const std::uint64_t offset = as_u64(offset_h, "offset");
  check_offset_range(offset, dy.size());
  const std::uint8_t* mask = nullptr;
  py::array mask_arr;
  std::uint64_t seed = 0;
  if (!mask_h.is_none()) {
    py::array m = require_array(mask_h, "mask");
    if (!py::isinstance<py::array_t<std::uint8_t>>(m)) {
      throw py::type_error("mask must be a uint8 array (the packed mask from dropout), got " +
                           std::string(py::str(m.dtype())));
    }
    require_shape(m, {(dy.size() + 7) / 8}, "mask", "one bit per element of dy");
    require_contiguous(m, "mask");
    mask = static_cast<const std::uint8_t*>(m.data());
    mask_arr = m;
  } else if (!seed_h.is_none()) {
    seed = as_u64(seed_h, "seed");
  } else if (p != 0.0) {
    throw py::value_error("dropout_backward needs the mask, or the seed (and offset) to regenerate it");
  }
  py::array dx = output(out_h, dy, dt, "dy");
  if (mask && !out_h.is_none()) {  // out is written while the mask is read
    std::vector<Span> spans;
    add_span(spans, mask_arr, false, "mask");
    add_span(spans, dx, true, "out");
    check_aliasing(spans);
  }
  if (p == 0.0) {  // the forward was the identity
    if (out_h.is_none()) return dy;
    if (dx.data() != dy.data()) std::memcpy(dx.mutable_data(), dy.data(), static_cast<std::size_t>(dy.nbytes()));
    return dx;
  }

  dispatch(dt, [&](auto tag) {
    using T = decltype(tag);
    dr::BackwardArgs<T> a{static_cast<const T*>(dy.data()), static_cast<T*>(dx.mutable_data()), mask,
                          static_cast<std::int64_t>(dy.size()), seed, offset, p};
    py::gil_scoped_release nogil;
    dr::dropout_backward<T>(a);
  });
  return dx;
}

py::tuple philox(const std::vector<std::uint32_t>& counter, const std::vector<std::uint32_t>& key) {
  if (counter.size() != 4) throw py::value_error("counter must hold 4 words");
  if (key.size() != 2) throw py::value_error("key must hold 2 words");
  std::uint32_t out[4];
  dr::philox4x32_10(counter.data(), key.data(), out);
  return py::make_tuple(out[0], out[1], out[2], out[3]);
}

}  // namespace

void bind_dropout(py::module_& m) {
  using py::arg;
  m.def("dropout", &dropout,
        "Inverted dropout forward. Returns (y, packed mask or None). See deepoptim.functional.dropout.",
        arg("x"), arg("p"), arg("training"), arg("seed"), arg("offset"),
        arg("return_mask"), arg("out"));
  m.def("dropout_backward", &dropout_backward,
        "Dropout backward from the packed mask, or from (seed, offset) with mask=None. See "
        "deepoptim.functional.dropout_backward.",
        arg("dy"), arg("mask"), arg("p"), arg("seed"), arg("offset"),
        arg("out"));
  m.def("philox4x32_10", &philox, "One Philox4x32-10 block (Salmon et al., 2011): 4 output words.",
        arg("counter"), arg("key"));
}

}  // namespace deepoptim::bind
