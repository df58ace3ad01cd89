// Bindings of batch normalization: check, allocate the outputs, release the GIL, call.
// The documented entry points are deepoptim.functional.batch_norm / batch_norm_backward.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <limits>
#include <string>
#include <vector>

#include "checks.hpp"
#include "deepoptim/norm.hpp"

namespace deepoptim::bind {
namespace {

namespace nm = deepoptim::norm;

// A per-thread workspace that only grows: the kernels write every slot before reading
// it, so there is nothing to zero, and no allocation (nor page faults) per call.
double* workspace(std::int64_t n) {
  thread_local std::vector<double> buf;
  if (buf.size() < static_cast<std::size_t>(n)) buf.resize(static_cast<std::size_t>(n));
  return buf.data();
}

struct Layout {
  nm::Dims dims;
  py::ssize_t channels;
};

Layout layout(const py::array& x, std::int64_t channel_axis) {
  const py::ssize_t nd = x.ndim();
  if (nd < 2) {
    throw py::value_error("x must have at least 2 dimensions (N, C, ...), got shape " + shape_str(x));
  }
  const std::int64_t ax = channel_axis < 0 ? channel_axis + nd : channel_axis;
  if (ax != 1 && ax != nd - 1) {
    throw py::value_error("channel_axis must be 1 (N, C, ...) or -1 (channels-last), got " +
                          std::to_string(channel_axis) + " for x of shape " + shape_str(x));
  }
  std::int64_t before = 1, after = 1;
  for (py::ssize_t i = 0; i < ax; ++i) before *= x.shape(i);
  for (py::ssize_t i = ax + 1; i < nd; ++i) after *= x.shape(i);
  return {{before, static_cast<std::int64_t>(x.shape(ax)), after}, x.shape(ax)};
}

// An optional per-channel array: None, or (C,) of x's dtype, contiguous. Absent arrays
// are py::none(), never a default py::array (which is a valid, empty float64 array).
py::object per_channel(py::handle h, const char* name, DType dt, py::ssize_t C, bool written,
                       std::vector<Span>& spans) {
  if (h.is_none()) return py::none();
  py::array a = require_array(h, name);
  require_dtype(a, dt, name, "x");
  require_shape(a, {C}, name, "one value per channel");
  require_contiguous(a, name);
  if (written) require_writeable(a, name);
  add_span(spans, a, written, name);
  return a;
}

template <class T>
T* ptr_or_null(const py::object& a) {
  return a.is_none() ? nullptr : static_cast<T*>(const_cast<void*>(py::reinterpret_borrow<py::array>(a).data()));
}

py::tuple batch_norm(py::handle x_h, py::handle running_mean, py::handle running_var,
                     py::handle weight, py::handle bias, Flag training_h, py::handle momentum_h,
                     Real eps_h, py::handle num_batches_tracked, Index channel_axis_h) {
  const bool training = flag(training_h, "training");
  const double eps = real(eps_h, "eps");
  py::array x = require_array(x_h, "x");
  const DType dt = float_dtype(x, "x");
  require_contiguous(x, "x");
  const Layout L = layout(x, int_arg(channel_axis_h, "channel_axis"));
  check_finite_gt("eps", eps, 0.0);
  const bool cumulative = momentum_h.is_none();
  double momentum = 0.0;
  if (!cumulative) {
    momentum = real(momentum_h, "momentum");  // refuses bools and arrays, as the twin does
    check_in_range("momentum", momentum, 0.0, 1.0, true);
  }

  std::vector<Span> spans;
  add_span(spans, x, false, "x");
  const py::object rm = per_channel(running_mean, "running_mean", dt, L.channels, training, spans);
  const py::object rv = per_channel(running_var, "running_var", dt, L.channels, training, spans);
  const py::object w = per_channel(weight, "weight", dt, L.channels, false, spans);
  const py::object b = per_channel(bias, "bias", dt, L.channels, false, spans);
  if (rm.is_none() != rv.is_none()) {
    throw py::value_error("running_mean and running_var must both be arrays or both be None");
  }
  if (!training && rm.is_none()) {
    throw py::value_error("running_mean and running_var are required when training=False");
  }
  std::int64_t* nbt = nullptr;
  if (!num_batches_tracked.is_none()) {
    py::array n = require_array(num_batches_tracked, "num_batches_tracked");
    if (!py::isinstance<py::array_t<std::int64_t>>(n) || n.size() != 1) {
      throw py::type_error("num_batches_tracked must be an int64 array holding one value, got " +
                           std::string(py::str(n.dtype())) + " of shape " + shape_str(n));
    }
    require_contiguous(n, "num_batches_tracked");
    if (training) require_writeable(n, "num_batches_tracked");
    add_span(spans, n, training, "num_batches_tracked");
    // data(), not mutable_data(): in eval the count is only read, and may be read-only.
    nbt = static_cast<std::int64_t*>(const_cast<void*>(n.data()));
    // A count: 1/count weighs the cumulative average, and training adds 1 to it.
    const std::int64_t count = *nbt;
    if (count < 0 || (training && count == std::numeric_limits<std::int64_t>::max())) {
      throw py::value_error("num_batches_tracked must hold a count in [0, 2**63 - 1), got " +
                            std::to_string(count));
    }
  }
  if (training && !rm.is_none() && cumulative && !nbt) {
    throw py::value_error("num_batches_tracked is required when momentum=None (cumulative average)");
  }
  if (training && L.dims.count() <= 1) {
    throw py::value_error("Expected more than 1 value per channel when training, got x of shape " +
                          shape_str(x));
  }
  check_aliasing(spans);
  if (training && rm.is_none()) nbt = nullptr;  // nothing tracked, as torch with track_running_stats=False

  std::vector<py::ssize_t> shape(x.shape(), x.shape() + x.ndim());
  py::array y = dt == DType::F32 ? py::array(py::array_t<float>(shape)) : py::array(py::array_t<double>(shape));
  py::array_t<double> save_mean(L.channels), save_invstd(L.channels);
  double* work = workspace(nm::workspace_size(L.dims));

  dispatch(dt, [&](auto tag) {
    using T = decltype(tag);
    nm::ForwardArgs<T> a{static_cast<const T*>(x.data()), static_cast<T*>(y.mutable_data()),
                         ptr_or_null<T>(w), ptr_or_null<T>(b), ptr_or_null<T>(rm), ptr_or_null<T>(rv),
                         nbt, save_mean.mutable_data(), save_invstd.mutable_data(), work,
                         L.dims, training, cumulative, momentum, eps};
    py::gil_scoped_release nogil;
    nm::batch_norm_forward<T>(a);
  });
  return py::make_tuple(y, save_mean, save_invstd);
}

py::tuple batch_norm_backward(py::handle dy_h, py::handle x_h, py::handle mean_h, py::handle invstd_h,
                              py::handle weight, Flag training_h, Index channel_axis_h,
                              Flag need_dweight_h, Flag need_dbias_h) {
  const bool training = flag(training_h, "training");
  const bool need_dweight = flag(need_dweight_h, "need_dweight");
  const bool need_dbias = flag(need_dbias_h, "need_dbias");
  py::array x = require_array(x_h, "x (cache.x)");
  const DType dt = float_dtype(x, "x (cache.x)");
  require_contiguous(x, "x (cache.x)");
  py::array dy = require_array(dy_h, "dy");
  require_dtype(dy, dt, "dy", "the forward's x");
  require_shape(dy, std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()), "dy", "the forward's x shape");
  require_contiguous(dy, "dy");
  const Layout L = layout(x, int_arg(channel_axis_h, "channel_axis"));
  std::vector<Span> spans;
  py::array stats[2];
  const char* names[2] = {"mean (cache.mean)", "invstd (cache.invstd)"};
  py::handle hs[2] = {mean_h, invstd_h};
  for (int i = 0; i < 2; ++i) {
    stats[i] = require_array(hs[i], names[i]);
    require_dtype(stats[i], DType::F64, names[i], "the cache statistics");
    require_shape(stats[i], {L.channels}, names[i], "one value per channel");
    require_contiguous(stats[i], names[i]);
  }
  const py::object w = per_channel(weight, "weight (cache.weight)", dt, L.channels, false, spans);

  std::vector<py::ssize_t> shape(x.shape(), x.shape() + x.ndim());
  auto alloc = [&](const std::vector<py::ssize_t>& s) {
    return dt == DType::F32 ? py::array(py::array_t<float>(s)) : py::array(py::array_t<double>(s));
  };
  py::array dx = alloc(shape);
  const py::object dw = need_dweight ? py::object(alloc({L.channels})) : py::object(py::none());
  const py::object db = need_dbias ? py::object(alloc({L.channels})) : py::object(py::none());
  double* work = workspace(nm::workspace_size(L.dims));

  dispatch(dt, [&](auto tag) {
    using T = decltype(tag);
    nm::BackwardArgs<T> a{static_cast<const T*>(dy.data()), static_cast<const T*>(x.data()),
                          static_cast<T*>(dx.mutable_data()), ptr_or_null<T>(w),
                          static_cast<const double*>(stats[0].data()),
                          static_cast<const double*>(stats[1].data()), ptr_or_null<T>(dw),
                          ptr_or_null<T>(db), work, L.dims, training};
    py::gil_scoped_release nogil;
    nm::batch_norm_backward<T>(a);
  });
  return py::make_tuple(dx, dw, db);
}

}  // namespace

void bind_norm(py::module_& m) {
  using py::arg;
  m.def("batch_norm", &batch_norm,
        "Batch norm forward. Returns (y, save_mean, save_invstd). See "
        "deepoptim.functional.batch_norm.",
        arg("x"), arg("running_mean"), arg("running_var"), arg("weight"),
        arg("bias"), arg("training"), arg("momentum"), arg("eps"),
        arg("num_batches_tracked"), arg("channel_axis"));
  m.def("batch_norm_backward", &batch_norm_backward,
        "Batch norm backward. Returns (dx, dweight or None, dbias or None). See "
        "deepoptim.functional.batch_norm_backward.",
        arg("dy"), arg("x"), arg("mean"), arg("invstd"), arg("weight"),
        arg("training"), arg("channel_axis"), arg("need_dweight"),
        arg("need_dbias"));
}

}  // namespace deepoptim::bind
