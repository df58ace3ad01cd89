// Argument checks shared by every binding. Nothing here does math.
//
// Every kernel argument that is an array goes through parse_operands(), which checks
// all of them (type, dtype, shape, contiguity, alignment, writeability, aliasing) before
// returning a single pointer; a failed check raises TypeError or ValueError naming the
// argument, so an error always leaves every array untouched. Arrays are never converted
// or copied: a float64 array for a float32 call, a strided view or a read-only array is
// refused instead of silently updated in a temporary.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <cstddef>
#include <vector>

#include "deepoptim/mixed.hpp"

namespace deepoptim::bind {

namespace py = pybind11;

// F32 and F64 are the math dtypes; BF16 (ml_dtypes.bfloat16) and F16 (numpy.float16) are
// storage only, accepted by the optimizer kernels that take low-precision arguments.
// Q8S/Q8U: 8-bit blockwise state (a deepoptim.reference._lowp.Blockwise8: uint8 codes
// into the signed/unsigned dynamic code, float32 absmax per block), state only.
enum class DType { F32, F64, BF16, F16, Q8S, Q8U };

// One array argument of a kernel: params, grads or a state.
struct Operand {
  const char* name;     // argument name, e.g. "exp_avg_sqs"
  bool written;         // the kernel writes it (must be writeable, must not alias)
  bool used;            // false: this call ignores the argument entirely
  const char* needed_because = nullptr;  // for an optional state: "amsgrad=True", ...
};

// The checked arrays of one call: ntensors rows of noperands pointers (null if unused).
struct Operands {
  DType dtype = DType::F32;  // the dtype the math runs in (float32 for 16-bit storage)
  std::int64_t ntensors = 0;
  std::size_t noperands = 0;
  std::vector<void*> ptrs;
  std::vector<std::int64_t> sizes;
  std::vector<std::uint8_t> itemsizes;  // bytes per element of each (tensor, operand), 0 if unused
  // References to every checked array, so that no other Python thread can free one
  // while the kernel runs without the GIL.
  std::vector<py::object> keep_alive;

  // Low-precision storage (parse_operands with LowpArgs): how each operand is stored, the
  // master copies, the stochastic-rounding key; `mx` describes them to the kernel.
  DType param_dtype = DType::F32;
  std::vector<lowp::Kind> kinds;
  std::vector<float*> masters;
  std::vector<std::uint64_t> first;
  std::vector<float*> absmax;  // ntensors x (kernel operands): a Blockwise8 state's absmax
  lowp::Mixed mx;
  bool is_mixed = false;

  template <class T>
  T* get(std::int64_t t, std::size_t k) const {
    return static_cast<T*>(ptrs[static_cast<std::size_t>(t) * noperands + k]);
  }
  // The kernel's low-precision description, or null for plain float32/float64 storage.
  const lowp::Mixed* mixed() const { return is_mixed ? &mx : nullptr; }
};

// The low-precision options of an optimizer call (keyword arguments of every elementwise
// optimizer binding): float32 master copies of 16-bit params (None: none), and
// stochastic rounding of bfloat16 params, None or a pair (seed, step) of ints.
struct LowpArgs {
  py::handle master_params;
  py::handle stochastic_rounding;
};

// The one way a binding picks the kernel's dtype: fn(float{}) or fn(double{}) for the
// checked dtype. fn prepares the kernel's arguments with the GIL held, then releases it
// (`py::gil_scoped_release nogil;`) for the kernel call alone.
template <class Fn>
decltype(auto) dispatch(DType dt, Fn&& fn) {
  if (dt == DType::F32) return fn(float{});
  return fn(double{});
}

// One kernel tensor per checked row: Tensor<T>{operand 0, ..., operand N-1, size}.
template <template <class> class Tensor, class T, std::size_t N>
std::vector<Tensor<T>> rows(const Operands& ops);

// The memory of tensors that are not NumPy arrays (deepoptim.torch's CPU tensors), for
// the list form: one pointer and element count per tensor, one dtype, and the Python
// objects that own the memory (held for the call). Built by deepoptim.torch from
// data_ptr()s it has checked (contiguous CPU tensors); parse_operands checks the rest
// (counts, sizes, alignment, aliasing) exactly as for arrays. Private: `_core.RawTensors`.
struct RawTensors {
  DType dtype;
  std::vector<std::uintptr_t> ptrs;
  std::vector<std::int64_t> sizes;
  py::object owners;
};
bool is_raw(py::handle h);
py::object torch_pointers(const py::list& params);
void bind_raw(py::module_& m);

// Parses arguments that are either all single arrays or all lists/tuples of arrays
// (the list form). args[k] belongs to ops[k]; args[0] must be the params.
// Without `lowp` every array is float32, or every one float64. With it (an optimizer
// step: ops[0] params, ops[1] grads, the rest its state) params may also be bfloat16 or
// float16, grads share the params' dtype, and state is float32 or bfloat16 (float64
// with float64 params); lowp's master_params and stochastic_rounding are checked too.
Operands parse_operands(const std::vector<Operand>& ops, const std::vector<py::handle>& args,
                        const LowpArgs* lowp = nullptr);

// Lower-level checks for kernels whose arguments are not an optimizer's (param, grad,
// state) rows. Each raises TypeError/ValueError naming `name`.
py::array require_array(py::handle h, const std::string& name);         // ndarray, else TypeError
DType float_dtype(const py::array& a, const std::string& name);         // float32/64, else TypeError
void require_dtype(const py::array& a, DType dt, const std::string& name, const std::string& like);
void require_contiguous(const py::array& a, const std::string& name);   // C order and aligned
void require_writeable(const py::array& a, const std::string& name);
void require_shape(const py::array& a, const std::vector<py::ssize_t>& shape, const std::string& name,
                   const std::string& why);
std::string shape_str(const py::array& a);
const char* dtype_str(DType dt);

template <template <class> class Tensor, class T, std::size_t... K>
Tensor<T> row(const Operands& ops, std::int64_t t, std::index_sequence<K...>) {
  return Tensor<T>{ops.get<T>(t, K)..., ops.sizes[static_cast<std::size_t>(t)]};
}

template <template <class> class Tensor, class T, std::size_t N>
std::vector<Tensor<T>> rows(const Operands& ops) {
  std::vector<Tensor<T>> out(static_cast<std::size_t>(ops.ntensors));
  for (std::int64_t t = 0; t < ops.ntensors; ++t) {
    out[static_cast<std::size_t>(t)] = row<Tensor, T>(ops, t, std::make_index_sequence<N>{});
  }
  return out;
}

// True for a list or tuple (the list form of an array argument).
bool is_list_like(py::handle h);
// The name of h's type, for messages.
std::string type_name(py::handle h);

// Refuses any two of `arrays` that overlap where at least one is written.
struct Span {
  std::uintptr_t begin, end;
  bool written;
  std::string name;   // or, on the hot path, left empty and built on demand from
  std::size_t k = 0;  //   the operand index and
  std::int64_t t = 0; //   the tensor index, by check_aliasing's name_of
};
using SpanNamer = std::function<std::string(std::size_t k, std::int64_t t)>;
void add_span(std::vector<Span>& spans, const py::array& a, bool written, const std::string& name);
// name_of(k, t) names a span whose name is empty; it runs only to build an error.
void check_aliasing(std::vector<Span>& spans, const SpanNamer& name_of = nullptr);

// Hyperparameter checks: ValueError "<name> must be <what>, got <value>". NaN fails all.
void check_finite_ge(const char* name, double x, double lo);           // lo <= x < inf
void check_finite_gt(const char* name, double x, double lo);           // lo <  x < inf
void check_in_range(const char* name, double x, double lo, double hi,  // lo <= x < hi (or <= hi)
                    bool hi_inclusive);

// Scalar arguments arrive as these handles (any object; the signature, and so the type
// stub, shows `float` / `int`) and are parsed by real() / step_arg() below, so that the
// error names the argument instead of pybind11's "incompatible function arguments".
inline bool accept_any(PyObject*) { return true; }
class Real : public py::object {
 public:
  PYBIND11_OBJECT_DEFAULT(Real, object, accept_any)
};
class Index : public py::object {
 public:
  PYBIND11_OBJECT_DEFAULT(Index, object, accept_any)
};
class RealPair : public py::object {
 public:
  PYBIND11_OBJECT_DEFAULT(RealPair, object, accept_any)
};
class Flag : public py::object {
 public:
  PYBIND11_OBJECT_DEFAULT(Flag, object, accept_any)
};
class Str : public py::object {
 public:
  PYBIND11_OBJECT_DEFAULT(Str, object, accept_any)
};

// Scalar arguments, parsed the way the NumPy twins' checks (reference/_checks.py) parse
// them, so that kernel and twin refuse the same things the same way:
// a hyperparameter is an int, float, numpy.integer or numpy.floating, never a bool
// (TypeError naming it);
double real(py::handle h, const char* name);
// `betas`: a tuple or list of two numbers, each in [0, 1) (named beta1, beta2).
std::pair<double, double> betas_arg(py::handle h);
// A pair of numbers `name` = (first, second): TypeError unless a tuple/list of two numbers.
std::pair<double, double> pair_arg(py::handle h, const char* name, const char* first, const char* second);
// `step` is an int (not a bool) in [1, 2**63): TypeError / ValueError naming it.
std::int64_t step_arg(py::handle h);
// An int or numpy.integer (not a bool) that fits in int64: TypeError / ValueError naming it.
std::int64_t int_arg(py::handle h, const char* name);
// A seed or offset: an int in [0, 2**64), else TypeError/ValueError naming it.
std::uint64_t as_u64(py::handle h, const char* name);
// A counter-based stream of `n` elements starting at `offset` must not pass 2**64.
void check_offset_range(std::uint64_t offset, py::ssize_t n);
// A yes/no option: True, False or a numpy.bool_, nothing else (an int or a str that
// pybind11 would take as truthy is a TypeError naming it).
bool flag(py::handle h, const char* name);
// A str (not bytes): TypeError naming it.
std::string str_arg(py::handle h, const char* name);
// An eps that rounds to 0 in the dtype the math runs in would turn 0/0 into NaN.
void check_eps_representable(const char* name, double eps, const Operands& ops);

// numpy.ma.MaskedArray is an ndarray whose mask the kernels cannot honour: refused.
bool is_masked(py::handle h);
void refuse_masked(py::handle h, const std::string& name);

}  // namespace deepoptim::bind

namespace pybind11::detail {
template <>
struct handle_type_name<deepoptim::bind::Real> {
  static constexpr auto name = const_name("float");
};
template <>
struct handle_type_name<deepoptim::bind::Index> {
  static constexpr auto name = const_name("int");
};
template <>
struct handle_type_name<deepoptim::bind::RealPair> {
  static constexpr auto name = const_name("tuple[float, float]");
};
template <>
struct handle_type_name<deepoptim::bind::Flag> {
  static constexpr auto name = const_name("bool");
};
template <>
struct handle_type_name<deepoptim::bind::Str> {
  static constexpr auto name = const_name("str");
};
}  // namespace pybind11::detail
