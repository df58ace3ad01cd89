#include "checks.hpp"

#include <pybind11/stl.h>

#include <algorithm>
#include <limits>
#include <sstream>

namespace deepoptim::bind {
std::string type_name(py::handle h) { return py::str(py::type::handle_of(h).attr("__name__")); }

namespace {

std::string dtype_name(const py::array& a) { return py::str(a.dtype()); }

}  // namespace

std::string shape_str(const py::array& a) {
  std::ostringstream s;
  s << "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s << (i ? ", " : "") << a.shape(i);
  s << (a.ndim() == 1 ? ",)" : ")");
  return s.str();
}

namespace {

std::string fmt(double x) { return py::repr(py::float_(x)); }

}  // namespace

bool is_list_like(py::handle h) { return py::isinstance<py::list>(h) || py::isinstance<py::tuple>(h); }

// Two arrays may share memory only if the kernel writes neither (two reads of one grad).
void check_aliasing(std::vector<Span>& spans, const SpanNamer& name_of) {
  // Sort indices, not the spans: a span carries a string, and a call may have thousands.
  std::vector<std::uint32_t> order(spans.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = static_cast<std::uint32_t>(i);
  std::sort(order.begin(), order.end(), [&](std::uint32_t a, std::uint32_t b) { return spans[a].begin < spans[b].begin; });
  auto label = [&](const Span& sp) { return sp.name.empty() && name_of ? name_of(sp.k, sp.t) : sp.name; };
  const Span* reach_any = nullptr;      // of the spans seen so far, the one ending last
  const Span* reach_written = nullptr;  // the same among written spans
  for (std::uint32_t i : order) {
    const Span& s = spans[i];
    const Span* other = nullptr;
    if (reach_written && s.begin < reach_written->end) other = reach_written;
    else if (s.written && reach_any && s.begin < reach_any->end) other = reach_any;
    if (other) {
      throw py::value_error(label(*other) + " and " + label(s) +
                            " share memory; every array the kernel writes must be distinct "
                            "from all the others");
    }
    if (!reach_any || s.end > reach_any->end) reach_any = &s;
    if (s.written && (!reach_written || s.end > reach_written->end)) reach_written = &s;
  }
}

void add_span(std::vector<Span>& spans, const py::array& a, bool written, const std::string& name) {
  if (a.nbytes() <= 0) return;
  const auto begin = reinterpret_cast<std::uintptr_t>(a.data());
  spans.push_back({begin, begin + static_cast<std::uintptr_t>(a.nbytes()), written, name, 0, 0});
}

const char* dtype_str(DType dt) {
  switch (dt) {
    case DType::F32: return "float32";
    case DType::F64: return "float64";
    case DType::BF16: return "bfloat16";
    case DType::F16: return "float16";
    case DType::Q8S: return "int8 (signed dynamic code)";
    case DType::Q8U: return "int8 (unsigned dynamic code)";
  }
  return "?";
}

namespace {

std::size_t item_size(DType dt) {
  return dt == DType::F64 ? 8 : dt == DType::F32 ? 4 : (dt == DType::Q8S || dt == DType::Q8U) ? 1 : 2;
}

// deepoptim.reference._lowp.Blockwise8, looked up once (leaked on purpose: module lifetime).
PyObject* blockwise8_type() {
  static PyObject* t = py::object(py::module_::import("deepoptim.reference._lowp").attr("Blockwise8")).release().ptr();
  return t;
}

bool is_blockwise8(py::handle h) { return PyObject_IsInstance(h.ptr(), blockwise8_type()) == 1; }

// The checked arrays of a Blockwise8 state of a parameter of `shape`: codes (uint8, the
// parameter's shape) and absmax (float32, one per block), both contiguous and, where the
// kernel writes the state, writeable. Spans for the aliasing check are added for both.
struct Q8Parsed {
  DType dt;
  void* codes;
  float* absmax;
  py::array codes_arr, absmax_arr;
};

template <class NameFn>
Q8Parsed parse_blockwise8(py::handle h, const py::array& param, bool written, NameFn name) {
  const py::object codes_o = h.attr("codes"), absmax_o = h.attr("absmax"), signed_o = h.attr("signed");
  if (!py::isinstance<py::array>(codes_o) || !py::isinstance<py::array>(absmax_o)) {
    throw py::type_error(name() + " (Blockwise8) must hold numpy arrays codes and absmax");
  }
  refuse_masked(codes_o, name() + ".codes");
  refuse_masked(absmax_o, name() + ".absmax");
  const auto codes = py::reinterpret_borrow<py::array>(codes_o);
  const auto absmax = py::reinterpret_borrow<py::array>(absmax_o);
  if (!py::isinstance<py::array_t<std::uint8_t>>(codes) || codes.dtype().num() != py::detail::npy_api::NPY_UBYTE_) {
    throw py::type_error(name() + ".codes must have dtype uint8, got " + std::string(py::str(codes.dtype())));
  }
  if (absmax.dtype().num() != py::detail::npy_api::NPY_FLOAT_ || !absmax.dtype().attr("isnative").cast<bool>()) {
    throw py::type_error(name() + ".absmax must have dtype float32, got " + std::string(py::str(absmax.dtype())));
  }
  if (!PyBool_Check(signed_o.ptr())) throw py::type_error(name() + ".signed must be a bool");
  if (codes.ndim() != param.ndim() || !std::equal(codes.shape(), codes.shape() + codes.ndim(), param.shape())) {
    throw py::value_error(name() + ".codes has shape " + shape_str(codes) + " but the parameter has shape " +
                          shape_str(param));
  }
  const py::ssize_t nb = (param.size() + lowp::kQBlock - 1) / lowp::kQBlock;
  if (absmax.ndim() != 1 || absmax.shape(0) != nb) {
    throw py::value_error(name() + ".absmax must have shape (" + std::to_string(nb) + ",) (one per block of " +
                          std::to_string(lowp::kQBlock) + "), got " + shape_str(absmax));
  }
  require_contiguous(codes, name() + ".codes");
  require_contiguous(absmax, name() + ".absmax");
  if (written) {
    require_writeable(codes, name() + ".codes");
    require_writeable(absmax, name() + ".absmax");
  }
  return {signed_o.ptr() == Py_True ? DType::Q8S : DType::Q8U, const_cast<void*>(codes.data()),
          static_cast<float*>(const_cast<void*>(absmax.data())), codes, absmax};
}

// ml_dtypes.bfloat16's type number, registered with NumPy at run time.
int bfloat16_num() {
  static const int num = py::dtype::from_args(py::module_::import("ml_dtypes").attr("bfloat16")).num();
  return num;
}

// Whether a dtype's bytes are in this machine's order.
bool native_order(const py::dtype& d) {
  const char order = d.byteorder();
  return order == '=' || order == '|' || (order == '<' && PY_LITTLE_ENDIAN) || (order == '>' && !PY_LITTLE_ENDIAN);
}

// float32, float64, float16 or bfloat16 in native byte order (the optimizer steps that
// take low-precision storage), else TypeError naming the array.
template <class NameFn>
DType storage_dtype(const py::array& a, NameFn name) {
  const py::dtype d = a.dtype();
  const int num = d.num();
  const bool native = native_order(d);
  if (native) {
    if (num == py::detail::npy_api::NPY_FLOAT_) return DType::F32;
    if (num == py::detail::npy_api::NPY_DOUBLE_) return DType::F64;
    if (num == 23) return DType::F16;  // NPY_HALF
    if (d.itemsize() == 2 && num == bfloat16_num()) return DType::BF16;
  }
  throw py::type_error(name() + " must have dtype float32, float64, bfloat16 (ml_dtypes) or float16, got " +
                       std::string(py::str(d)));
}

lowp::Kind kind_of(DType dt) {
  switch (dt) {
    case DType::BF16: return lowp::Kind::BF16;
    case DType::F16: return lowp::Kind::F16;
    case DType::Q8S: return lowp::Kind::Q8S;
    case DType::Q8U: return lowp::Kind::Q8U;
    default: return lowp::Kind::F32;
  }
}

bool is_16bit(DType dt) { return dt == DType::BF16 || dt == DType::F16; }

// The low-precision rules of an optimizer step, applied to the parsed dtypes dts[t][k]
// (row-major, ntensors x ops.size()); `nstate_ops` operands belong to the kernel, an
// extra last one (has_master) is master_params. Fills out's low-precision fields.
template <class NameFn>
void finish_lowp(Operands& out, const std::vector<Operand>& ops, const std::vector<DType>& dts, bool has_master,
                 const LowpArgs& lp, NameFn name) {
  const std::size_t nops = ops.size();
  const std::size_t n = nops - (has_master ? 1 : 0);
  const auto nt = static_cast<std::size_t>(out.ntensors);
  const DType pd = nt ? dts[0] : DType::F32;
  for (std::size_t t = 0; t < nt; ++t) {
    for (std::size_t k = 0; k < n; ++k) {
      if (!ops[k].used) continue;
      const DType dt = dts[t * nops + k];
      const auto tt = static_cast<std::int64_t>(t);
      if (k == 0 && dt != pd) {
        throw py::type_error(name(k, tt) + " has dtype " + dtype_str(dt) + " but " + name(0, 0) + " has dtype " +
                             dtype_str(pd) + "; all arrays of one call must share a dtype");
      }
      if (k < 2 && (dt == DType::Q8S || dt == DType::Q8U)) {
        throw py::type_error(name(k, tt) + " is a Blockwise8; only optimizer state may be kept in 8 bits");
      }
      if (k == 1 && dt != pd) {
        throw py::type_error(name(k, tt) + " has dtype " + dtype_str(dt) + " but " + name(0, tt) + " has dtype " +
                             dtype_str(pd) + "; all arrays of one call must share a dtype (gradients have "
                             "their parameters' dtype)");
      }
      if (k >= 2) {
        if (pd == DType::F64 && dt != DType::F64) {
          throw py::type_error(name(k, tt) + " has dtype " + dtype_str(dt) + " but " + name(0, 0) +
                               " has dtype float64; all arrays of one call must share a dtype");
        }
        if (pd != DType::F64 && dt != DType::F32 && dt != DType::BF16 && dt != DType::Q8S && dt != DType::Q8U) {
          throw py::type_error(name(k, tt) + " has dtype " + dtype_str(dt) + " but " + name(0, 0) + " has dtype " +
                               dtype_str(pd) + "; optimizer state of " + dtype_str(pd) +
                               " parameters must be float32, bfloat16 or Blockwise8");
        }
      }
    }
    if (has_master && dts[t * nops + n] != DType::F32) {
      if (dts[t * nops + n] == DType::Q8S || dts[t * nops + n] == DType::Q8U) {
        throw py::type_error(name(n, static_cast<std::int64_t>(t)) + " must be a float32 array, got a Blockwise8");
      }
      throw py::type_error(name(n, static_cast<std::int64_t>(t)) + " must have dtype float32, got " +
                           dtype_str(dts[t * nops + n]));
    }
  }
  if (has_master && nt && !is_16bit(pd)) {
    throw py::value_error(std::string("master_params are float32 copies of bfloat16 or float16 params, but ") +
                          name(0, 0) + " has dtype " + dtype_str(pd));
  }
  bool stochastic = false;
  std::uint64_t seed = 0, stream = 0;
  if (!lp.stochastic_rounding.is_none()) {
    if (!(is_list_like(lp.stochastic_rounding) && py::len(lp.stochastic_rounding) == 2)) {
      throw py::type_error("stochastic_rounding must be None or a pair (seed, step) of ints, got " +
                           std::string(py::repr(lp.stochastic_rounding)));
    }
    const auto pair = py::reinterpret_borrow<py::sequence>(lp.stochastic_rounding);
    seed = as_u64(pair[0], "stochastic_rounding seed");
    stream = as_u64(pair[1], "stochastic_rounding step");
    if (has_master) {
      throw py::value_error("stochastic_rounding and master_params exclude each other: with float32 master "
                            "weights the parameters are rounded to nearest");
    }
    if (nt && pd != DType::BF16) {
      throw py::value_error(std::string("stochastic_rounding rounds bfloat16 parameters, but ") + name(0, 0) +
                            " has dtype " + dtype_str(pd));
    }
    stochastic = true;
  }
  out.dtype = pd == DType::F64 ? DType::F64 : DType::F32;
  out.param_dtype = pd;
  bool mixed = is_16bit(pd) || stochastic || has_master;
  out.kinds.assign(nt * n, lowp::Kind::F32);
  for (std::size_t t = 0; t < nt; ++t) {
    for (std::size_t k = 0; k < n; ++k) {
      if (!ops[k].used) continue;
      out.kinds[t * n + k] = kind_of(dts[t * nops + k]);
      mixed = mixed || out.kinds[t * n + k] != lowp::Kind::F32;
    }
  }
  if (!mixed || nt == 0) return;
  out.is_mixed = true;
  out.mx.noperands = static_cast<std::int64_t>(n);
  out.mx.kinds = out.kinds.data();
  if (!out.absmax.empty()) {
    if (n != nops) {  // collected with master_params as one more operand: drop its column
      std::vector<float*> compact(nt * n);
      for (std::size_t t = 0; t < nt; ++t) {
        for (std::size_t k = 0; k < n; ++k) compact[t * n + k] = out.absmax[t * nops + k];
      }
      out.absmax = std::move(compact);
    }
    out.mx.absmax = out.absmax.data();
  }
  for (std::size_t k = 0; k < n; ++k) {
    if (ops[k].written) out.mx.written |= 1u << k;
  }
  if (has_master) {
    out.masters.resize(nt);
    for (std::size_t t = 0; t < nt; ++t) out.masters[t] = static_cast<float*>(out.ptrs[t * nops + n]);
    out.mx.masters = out.masters.data();
  }
  out.mx.stochastic = stochastic;
  out.mx.seed = seed;
  out.mx.stream = stream;
  out.first.resize(nt);
  std::uint64_t j = 0;
  for (std::size_t t = 0; t < nt; ++t) {
    out.first[t] = j;
    j += static_cast<std::uint64_t>(out.sizes[t]);
  }
  out.mx.first = out.first.data();
}

}  // namespace

// The dtype check of the hot path: the numpy type number and byte order, read from the
// descriptor, with no temporary dtype objects.
template <class NameFn>
DType fast_float_dtype(const py::array& a, NameFn name) {
  const py::dtype d = a.dtype();
  const int num = d.num();
  const bool native = native_order(d);
  if (native && num == py::detail::npy_api::NPY_FLOAT_) return DType::F32;
  if (native && num == py::detail::npy_api::NPY_DOUBLE_) return DType::F64;
  return float_dtype(a, name());
}

py::array require_array(py::handle h, const std::string& name) {
  if (!py::isinstance<py::array>(h)) {
    throw py::type_error(name + " must be a numpy.ndarray, got " + type_name(h));
  }
  refuse_masked(h, name);
  return py::reinterpret_borrow<py::array>(h);
}

DType float_dtype(const py::array& a, const std::string& name) {
  if (py::isinstance<py::array_t<float>>(a)) return DType::F32;
  if (py::isinstance<py::array_t<double>>(a)) return DType::F64;
  throw py::type_error(name + " must have dtype float32 or float64, got " + dtype_name(a));
}

void require_dtype(const py::array& a, DType dt, const std::string& name, const std::string& like) {
  const bool ok = dt == DType::F32 ? py::isinstance<py::array_t<float>>(a) : py::isinstance<py::array_t<double>>(a);
  if (!ok) {
    throw py::type_error(name + " must have the dtype of " + like + " (" + dtype_str(dt) + "), got " +
                         dtype_name(a));
  }
}

void require_contiguous(const py::array& a, const std::string& name) {
  if (!(a.flags() & py::array::c_style)) {
    throw py::value_error(name + " must be C-contiguous (no hidden copies are made); pass "
                          "numpy.ascontiguousarray(...) or the array itself, not a view");
  }
  if (reinterpret_cast<std::uintptr_t>(a.data()) % static_cast<std::uintptr_t>(a.itemsize()) != 0) {
    throw py::value_error(name + " is not aligned to its itemsize");
  }
}

void require_writeable(const py::array& a, const std::string& name) {
  if (!a.writeable()) throw py::value_error(name + " is read-only, but it is updated in place");
}

void require_shape(const py::array& a, const std::vector<py::ssize_t>& shape, const std::string& name,
                   const std::string& why) {
  const bool ok = a.ndim() == static_cast<py::ssize_t>(shape.size()) &&
                  std::equal(shape.begin(), shape.end(), a.shape());
  if (!ok) {
    std::ostringstream want;
    want << "(";
    for (std::size_t i = 0; i < shape.size(); ++i) want << (i ? ", " : "") << shape[i];
    want << (shape.size() == 1 ? ",)" : ")");
    throw py::value_error(name + " must have shape " + want.str() + " (" + why + "), got " + shape_str(a));
  }
}

namespace {

[[noreturn]] void refuse_missing(const Operand& op) {
  throw py::value_error(std::string(op.name) + " is required" +
                        (op.needed_because ? std::string(" when ") + op.needed_because : "") + ", got None");
}

}  // namespace

bool is_raw(py::handle h) { return py::isinstance<RawTensors>(h); }

void bind_raw(py::module_& m) {
  py::class_<RawTensors>(m, "RawTensors",
                         "Tensors' memory for the kernels (deepoptim.torch's fast path); private.")
      .def(py::init([](const std::string& dtype, std::vector<std::uintptr_t> ptrs, std::vector<std::int64_t> sizes,
                       py::object owners) {
             DType dt;
             if (dtype == "float32") dt = DType::F32;
             else if (dtype == "float64") dt = DType::F64;
             else if (dtype == "bfloat16") dt = DType::BF16;
             else if (dtype == "float16") dt = DType::F16;
             else throw py::type_error("dtype must be 'float32', 'float64', 'bfloat16' or 'float16', got '" + dtype + "'");
             if (ptrs.size() != sizes.size()) throw py::value_error("ptrs and sizes must have one entry per tensor");
             for (std::size_t i = 0; i < ptrs.size(); ++i) {
               if (sizes[i] < 0 || (sizes[i] > 0 && ptrs[i] == 0)) {
                 throw py::value_error("tensor " + std::to_string(i) + " has no memory for its size");
               }
             }
             return RawTensors{dt, std::move(ptrs), std::move(sizes),
                               std::move(owners)};
           }),
           py::arg("dtype"), py::arg("ptrs"), py::arg("sizes"), py::arg("owners"))
      .def("__len__", [](const RawTensors& r) { return r.ptrs.size(); });
  m.def("torch_pointers", &torch_pointers, "deepoptim.torch's per-step scan of a parameter list; private.",
        py::arg("params"));
}

// deepoptim.torch's per-step scan, in one call: ([param.data_ptr()], [grad.data_ptr()],
// [grad]) when every parameter has a dense contiguous gradient, else None (the caller
// then takes its general path, which names the fault).
py::object torch_pointers(const py::list& params) {
  static PyObject* grad_s = PyUnicode_InternFromString("grad");  // leaked: module lifetime
  static PyObject* ptr_s = PyUnicode_InternFromString("data_ptr");
  static PyObject* contig_s = PyUnicode_InternFromString("is_contiguous");
  const auto n = static_cast<py::ssize_t>(params.size());
  py::list pptrs(n), gptrs(n), grads(n);
  for (py::ssize_t i = 0; i < n; ++i) {
    PyObject* p = PyList_GET_ITEM(params.ptr(), i);
    py::object g = py::reinterpret_steal<py::object>(PyObject_GetAttr(p, grad_s));
    if (!g) throw py::error_already_set();
    if (g.is_none()) return py::none();
    py::object c = py::reinterpret_steal<py::object>(PyObject_CallMethodNoArgs(g.ptr(), contig_s));
    py::object gp = c && c.ptr() == Py_True
                        ? py::reinterpret_steal<py::object>(PyObject_CallMethodNoArgs(g.ptr(), ptr_s))
                        : py::object();
    if (!gp) {  // not contiguous, or no data pointer (a sparse gradient raises)
      PyErr_Clear();
      return py::none();
    }
    py::object pp = py::reinterpret_steal<py::object>(PyObject_CallMethodNoArgs(p, ptr_s));
    if (!pp) throw py::error_already_set();
    PyList_SET_ITEM(pptrs.ptr(), i, pp.release().ptr());
    PyList_SET_ITEM(gptrs.ptr(), i, gp.release().ptr());
    PyList_SET_ITEM(grads.ptr(), i, g.release().ptr());
  }
  return py::make_tuple(pptrs, gptrs, grads);
}

namespace {

// parse_operands for RawTensors arguments: the same checks, on pointers and counts.
Operands parse_raw(const std::vector<Operand>& ops, const std::vector<py::handle>& args, const LowpArgs* lp,
                   bool has_master) {
  const RawTensors& lead = args[0].cast<const RawTensors&>();
  const auto ntensors = static_cast<std::int64_t>(lead.ptrs.size());
  Operands out;
  out.dtype = lead.dtype;
  out.ntensors = ntensors;
  out.noperands = ops.size();
  out.ptrs.assign(static_cast<std::size_t>(ntensors) * ops.size(), nullptr);
  out.sizes = lead.sizes;
  out.itemsizes.assign(out.ptrs.size(), 0);
  if (!lp && (lead.dtype == DType::BF16 || lead.dtype == DType::F16)) {
    throw py::type_error(std::string(ops[0].name) + " must have dtype float32 or float64, got " +
                         dtype_str(lead.dtype));
  }
  std::vector<DType> dts(static_cast<std::size_t>(ntensors) * ops.size(), DType::F32);
  std::vector<Span> spans;
  for (std::size_t k = 0; k < ops.size(); ++k) {
    if (!ops[k].used) continue;
    if (args[k].is_none()) refuse_missing(ops[k]);
    if (!is_raw(args[k])) {
      throw py::type_error(std::string(ops[k].name) + " must be RawTensors like " + ops[0].name + ", got " +
                           type_name(args[k]));
    }
    const RawTensors& r = args[k].cast<const RawTensors&>();
    const std::uintptr_t item = item_size(r.dtype);
    for (std::int64_t t = 0; t < ntensors; ++t) dts[static_cast<std::size_t>(t) * ops.size() + k] = r.dtype;
    if (!lp && r.dtype != lead.dtype) {
      throw py::type_error(std::string(ops[k].name) + " has dtype " + dtype_str(r.dtype) + " but " + ops[0].name +
                           " has dtype " + dtype_str(lead.dtype) + "; all arrays of one call must share a dtype");
    }
    if (r.sizes != lead.sizes) {
      throw py::value_error(std::string(ops[k].name) + " has tensors of other sizes than " + ops[0].name);
    }
    for (std::int64_t t = 0; t < ntensors; ++t) {
      const std::uintptr_t p = r.ptrs[static_cast<std::size_t>(t)];
      if (p % item != 0) {
        throw py::value_error(std::string(ops[k].name) + "[" + std::to_string(t) + "] is not aligned to its itemsize");
      }
      const auto n = static_cast<std::uintptr_t>(r.sizes[static_cast<std::size_t>(t)]);
      if (n > 0) spans.push_back({p, p + n * item, ops[k].written, {}, k, t});
      out.ptrs[static_cast<std::size_t>(t) * ops.size() + k] = reinterpret_cast<void*>(p);
      out.itemsizes[static_cast<std::size_t>(t) * ops.size() + k] = static_cast<std::uint8_t>(item);
    }
    out.keep_alive.push_back(r.owners);
  }
  auto name = [&](std::size_t k, std::int64_t t) { return std::string(ops[k].name) + "[" + std::to_string(t) + "]"; };
  if (lp) finish_lowp(out, ops, dts, has_master, *lp, name);
  if (spans.size() > 1) {
    // Names are built only for an error: they would cost more than the checks.
    check_aliasing(spans, name);
  }
  return out;
}

}  // namespace

namespace {

Operands parse_arrays(const std::vector<Operand>& ops, const std::vector<py::handle>& args, const LowpArgs* lp,
                      bool has_master);

}  // namespace

Operands parse_operands(const std::vector<Operand>& ops, const std::vector<py::handle>& args, const LowpArgs* lp) {
  if (lp && !lp->master_params.is_none()) {
    // The master copies are checked as one more written operand (shape, contiguity,
    // aliasing), then handed to the kernel apart from its tensor structs.
    std::vector<Operand> ops2 = ops;
    std::vector<py::handle> args2 = args;
    ops2.push_back({"master_params", true, true});
    args2.push_back(lp->master_params);
    if (is_raw(args2[0])) return parse_raw(ops2, args2, lp, true);
    return parse_arrays(ops2, args2, lp, true);
  }
  if (is_raw(args[0])) return parse_raw(ops, args, lp, false);
  return parse_arrays(ops, args, lp, false);
}

namespace {

Operands parse_arrays(const std::vector<Operand>& ops, const std::vector<py::handle>& args, const LowpArgs* lp,
                      bool has_master) {
  const Operand& lead = ops[0];
  const bool list_form = is_list_like(args[0]);
  if (!list_form && !py::isinstance<py::array>(args[0])) {
    throw py::type_error(std::string(lead.name) +
                         " must be a numpy.ndarray or a list/tuple of them, got " +
                         type_name(args[0]));
  }
  const std::int64_t ntensors = list_form ? static_cast<std::int64_t>(py::len(args[0])) : 1;

  // Pass 1: structure (None, list lengths), so that errors name the argument.
  for (std::size_t k = 0; k < ops.size(); ++k) {
    if (!ops[k].used) continue;
    if (args[k].is_none()) refuse_missing(ops[k]);
    if (list_form) {
      if (!is_list_like(args[k])) {
        throw py::type_error(std::string(ops[k].name) + " must be a list or tuple (" + lead.name +
                             " is one), got " + type_name(args[k]));
      }
      const auto n = static_cast<std::int64_t>(py::len(args[k]));
      if (n != ntensors) {
        throw py::value_error(std::string(ops[k].name) + " has " + std::to_string(n) +
                              " arrays but " + lead.name + " has " + std::to_string(ntensors));
      }
    } else if (!py::isinstance<py::array>(args[k]) &&
               !(lp && k >= 2 && k < ops.size() - (has_master ? 1 : 0) && is_blockwise8(args[k]))) {
      throw py::type_error(std::string(ops[k].name) + " must be a numpy.ndarray (" + lead.name +
                           " is one), got " + type_name(args[k]));
    }
  }

  Operands out;
  out.ntensors = ntensors;
  out.noperands = ops.size();
  out.ptrs.assign(static_cast<std::size_t>(ntensors) * ops.size(), nullptr);
  out.sizes.resize(static_cast<std::size_t>(ntensors));
  out.itemsizes.assign(out.ptrs.size(), 0);
  std::vector<Span> spans;
  spans.reserve(static_cast<std::size_t>(ntensors) * ops.size());
  out.keep_alive.reserve(static_cast<std::size_t>(ntensors) * ops.size());

  std::vector<py::list> lists;  // list/tuple -> list once, so indexing is cheap
  if (list_form) {
    for (std::size_t k = 0; k < ops.size(); ++k) {
      lists.push_back(ops[k].used ? py::list(py::reinterpret_borrow<py::object>(args[k])) : py::list());
    }
  }
  auto item = [&](std::size_t k, std::int64_t t) -> py::handle {
    return list_form ? lists[k][static_cast<std::size_t>(t)] : args[k];
  };
  auto arg_name = [&](std::size_t k, std::int64_t t) {
    return list_form ? std::string(ops[k].name) + "[" + std::to_string(t) + "]" : std::string(ops[k].name);
  };

  // Pass 2: every array, checked fully before any pointer is handed out. Argument names
  // are strings built only when an error is raised: they would cost more than the
  // checks themselves on a small call.
  std::size_t lead_k = 0;
  std::vector<DType> dts(lp ? static_cast<std::size_t>(ntensors) * ops.size() : 0, DType::F32);
  for (std::int64_t t = 0; t < ntensors; ++t) {
    py::array p_arr;
    for (std::size_t k = 0; k < ops.size(); ++k) {
      if (!ops[k].used) continue;
      const py::handle h = item(k, t);
      if (lp && k >= 2 && k < ops.size() - (has_master ? 1 : 0) && !py::isinstance<py::array>(h) &&
          is_blockwise8(h)) {
        // 8-bit blockwise state: its codes and absmax, checked against the parameter.
        const Q8Parsed q = parse_blockwise8(h, p_arr, ops[k].written, [&] { return arg_name(k, t); });
        const std::size_t i = static_cast<std::size_t>(t) * ops.size() + k;
        dts[i] = q.dt;
        out.ptrs[i] = q.codes;
        out.itemsizes[i] = 1;
        if (out.absmax.empty()) out.absmax.assign(static_cast<std::size_t>(ntensors) * ops.size(), nullptr);
        out.absmax[i] = q.absmax;
        if (q.codes_arr.nbytes() > 0) {
          const auto b = reinterpret_cast<std::uintptr_t>(q.codes_arr.data());
          spans.push_back({b, b + static_cast<std::uintptr_t>(q.codes_arr.nbytes()), ops[k].written, {}, k, t});
          const auto a = reinterpret_cast<std::uintptr_t>(q.absmax_arr.data());
          spans.push_back({a, a + static_cast<std::uintptr_t>(q.absmax_arr.nbytes()), ops[k].written, {}, k, t});
        }
        out.keep_alive.push_back(q.codes_arr);
        out.keep_alive.push_back(q.absmax_arr);
        continue;
      }
      if (!py::isinstance<py::array>(h)) {
        throw py::type_error(arg_name(k, t) + " must be a numpy.ndarray, got " + type_name(h));
      }
      if (is_masked(h)) refuse_masked(h, arg_name(k, t));
      const auto a = py::reinterpret_borrow<py::array>(h);
      if (lp) {
        dts[static_cast<std::size_t>(t) * ops.size() + k] = storage_dtype(a, [&] { return arg_name(k, t); });
      } else if (const DType dt = fast_float_dtype(a, [&] { return arg_name(k, t); }); t == 0 && k == 0) {
        out.dtype = dt;
        lead_k = k;
      } else if (dt != out.dtype) {
        throw py::type_error(arg_name(k, t) + " has dtype " + dtype_name(a) + " but " + arg_name(lead_k, 0) +
                             " has dtype " + dtype_str(out.dtype) +
                             "; all arrays of one call must share a dtype");
      }
      if (k == 0) {
        p_arr = a;
      } else if (a.ndim() != p_arr.ndim() ||
                 !std::equal(a.shape(), a.shape() + a.ndim(), p_arr.shape())) {
        throw py::value_error(arg_name(k, t) + " has shape " + shape_str(a) + " but " + arg_name(0, t) +
                              " has shape " + shape_str(p_arr));
      }
      const int flags = a.flags();
      const bool aligned = reinterpret_cast<std::uintptr_t>(a.data()) % static_cast<std::uintptr_t>(a.itemsize()) == 0;
      if (!(flags & py::array::c_style) || !aligned) require_contiguous(a, arg_name(k, t));
      if (ops[k].written && !a.writeable()) require_writeable(a, arg_name(k, t));
      if (a.nbytes() > 0) {
        const auto begin = reinterpret_cast<std::uintptr_t>(a.data());
        spans.push_back({begin, begin + static_cast<std::uintptr_t>(a.nbytes()), ops[k].written, {}, k, t});
      }
      out.ptrs[static_cast<std::size_t>(t) * ops.size() + k] = const_cast<void*>(a.data());
      out.itemsizes[static_cast<std::size_t>(t) * ops.size() + k] = static_cast<std::uint8_t>(a.itemsize());
      out.keep_alive.push_back(a);
    }
    out.sizes[static_cast<std::size_t>(t)] = static_cast<std::int64_t>(p_arr.size());
  }
  if (lp) finish_lowp(out, ops, dts, has_master, *lp, arg_name);
  if (spans.size() > 1) {
    check_aliasing(spans, [&](std::size_t k, std::int64_t t) { return arg_name(k, t); });
  }
  return out;
}

}  // namespace

void check_finite_ge(const char* name, double x, double lo) {
  if (!(x >= lo) || !std::isfinite(x)) {
    throw py::value_error(std::string(name) + " must be a finite number >= " + fmt(lo) + ", got " + fmt(x));
  }
}

void check_finite_gt(const char* name, double x, double lo) {
  if (!(x > lo) || !std::isfinite(x)) {
    throw py::value_error(std::string(name) + " must be a finite number > " + fmt(lo) + ", got " + fmt(x));
  }
}

void check_in_range(const char* name, double x, double lo, double hi, bool hi_inclusive) {
  const bool ok = x >= lo && (hi_inclusive ? x <= hi : x < hi);
  if (!ok) {
    throw py::value_error(std::string(name) + " must be in [" + fmt(lo) + ", " + fmt(hi) +
                          (hi_inclusive ? "]" : ")") + ", got " + fmt(x));
  }
}

namespace {

// numpy.integer and numpy.floating, looked up once (leaked on purpose: module lifetime).
PyObject* numpy_type(const char* module, const char* name) {
  return py::object(py::module_::import(module).attr(name)).release().ptr();
}

bool is_numpy_integer(py::handle h) {
  static PyObject* integer = numpy_type("numpy", "integer");
  return PyObject_IsInstance(h.ptr(), integer) == 1;
}

bool is_numpy_number(py::handle h) {
  static PyObject* floating = numpy_type("numpy", "floating");
  return is_numpy_integer(h) || PyObject_IsInstance(h.ptr(), floating) == 1;
}

}  // namespace

double real(py::handle h, const char* name) {
  PyObject* o = h.ptr();
  if (PyFloat_CheckExact(o)) return PyFloat_AS_DOUBLE(o);  // the hot path
  if (PyBool_Check(o) || !(PyFloat_Check(o) || PyLong_Check(o) || is_numpy_number(h))) {
    throw py::type_error(std::string(name) + " must be a number, got " + type_name(h));
  }
  const double x = PyFloat_AsDouble(o);
  if (x == -1.0 && PyErr_Occurred()) {
    PyErr_Clear();  // an int too large for a double
    throw py::value_error(std::string(name) + " must be a finite number, got " + std::string(py::repr(h)));
  }
  return x;
}

std::pair<double, double> pair_arg(py::handle h, const char* name, const char* first, const char* second) {
  if (!(is_list_like(h) && py::len(h) == 2)) {
    throw py::type_error(std::string(name) + " must be a pair (" + first + ", " + second + "), got " +
                         std::string(py::repr(h)));
  }
  const auto seq = py::reinterpret_borrow<py::sequence>(h);
  return {real(seq[0], first), real(seq[1], second)};
}

std::pair<double, double> betas_arg(py::handle h) {
  const auto [b1, b2] = pair_arg(h, "betas", "beta1", "beta2");
  check_in_range("beta1", b1, 0.0, 1.0, false);
  check_in_range("beta2", b2, 0.0, 1.0, false);
  return {b1, b2};
}

std::int64_t step_arg(py::handle h) {
  PyObject* o = h.ptr();
  if (PyBool_Check(o) || !(PyLong_Check(o) || is_numpy_integer(h))) {
    throw py::type_error("step must be an int, got " + type_name(h));
  }
  int overflow = 0;
  const py::int_ v = py::reinterpret_steal<py::int_>(PyNumber_Index(o));
  const long long s = PyLong_AsLongLongAndOverflow(v.ptr(), &overflow);
  if (overflow != 0 || s < 1) {
    throw py::value_error("step must be in [1, 2**63) (the count of updates including this one), got " +
                          std::string(py::str(v)));
  }
  return static_cast<std::int64_t>(s);
}

std::int64_t int_arg(py::handle h, const char* name) {
  PyObject* o = h.ptr();
  if (PyBool_Check(o) || !(PyLong_Check(o) || is_numpy_integer(h))) {
    throw py::type_error(std::string(name) + " must be an int, got " + type_name(h));
  }
  int overflow = 0;
  const py::int_ v = py::reinterpret_steal<py::int_>(PyNumber_Index(o));
  const long long s = PyLong_AsLongLongAndOverflow(v.ptr(), &overflow);
  if (overflow != 0) {
    throw py::value_error(std::string(name) + " is out of range, got " + std::string(py::str(v)));
  }
  return static_cast<std::int64_t>(s);
}

// A Python int in [0, 2^64), else TypeError/ValueError naming it.
std::uint64_t as_u64(py::handle h, const char* name) {
  if (!PyIndex_Check(h.ptr()) || PyBool_Check(h.ptr())) {
    throw py::type_error(std::string(name) + " must be an int, got " +
                         std::string(py::str(py::type::handle_of(h).attr("__name__"))));
  }
  py::int_ v = py::reinterpret_steal<py::int_>(PyNumber_Index(h.ptr()));
  const bool neg = v < py::int_(0);
  const bool big = v >= py::int_(py::reinterpret_steal<py::object>(PyLong_FromUnsignedLongLong(
                            std::numeric_limits<unsigned long long>::max()))) + py::int_(1);
  if (neg || big) {
    throw py::value_error(std::string(name) + " must be in [0, 2**64), got " + std::string(py::str(v)));
  }
  return PyLong_AsUnsignedLongLong(v.ptr());
}

void check_offset_range(std::uint64_t offset, py::ssize_t n) {
  if (offset > std::numeric_limits<std::uint64_t>::max() - static_cast<std::uint64_t>(n)) {
    throw py::value_error("offset must leave room for the call's elements: offset + size must be < 2**64, got "
                          "offset=" + std::to_string(offset) + " and size " + std::to_string(n));
  }
}

bool flag(py::handle h, const char* name) {
  PyObject* o = h.ptr();
  if (o == Py_True) return true;
  if (o == Py_False) return false;
  static PyObject* np_bool = numpy_type("numpy", "bool_");
  if (PyObject_IsInstance(o, np_bool) == 1) return PyObject_IsTrue(o) == 1;
  throw py::type_error(std::string(name) + " must be a bool, got " + type_name(h));
}

std::string str_arg(py::handle h, const char* name) {
  if (!PyUnicode_Check(h.ptr())) throw py::type_error(std::string(name) + " must be a str, got " + type_name(h));
  return h.cast<std::string>();
}

void check_eps_representable(const char* name, double eps, const Operands& ops) {
  if (ops.ntensors > 0 && ops.dtype == DType::F32 && eps > 0.0 && static_cast<float>(eps) == 0.0f) {
    throw py::value_error(std::string(name) + " must not round to 0 in float32 (the parameters' dtype), got " +
                          fmt(eps));
  }
}

bool is_masked(py::handle h) {
  if (Py_TYPE(h.ptr()) == py::detail::npy_api::get().PyArray_Type_) return false;  // the hot path
  static PyObject* masked = numpy_type("numpy.ma", "MaskedArray");
  return PyObject_IsInstance(h.ptr(), masked) == 1;
}

void refuse_masked(py::handle h, const std::string& name) {
  if (is_masked(h)) {
    throw py::type_error(name + " is a numpy.ma.MaskedArray, whose mask the kernels cannot honour; pass "
                         "numpy.ma.filled(...) (the masked entries filled as you intend)");
  }
}

}  // namespace deepoptim::bind
