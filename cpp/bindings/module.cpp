// The compiled module deepoptim._core: kernels bound family by family, plus build_info.
#include <pybind11/pybind11.h>

#include <omp.h>

#include <Eigen/Core>

#include "deepoptim/dispatch.hpp"
#include "deepoptim/parallel.hpp"
#include "deepoptim/probe.hpp"

#include "checks.hpp"

namespace py = pybind11;

namespace deepoptim::bind {
void bind_optim(py::module_& m);
void bind_norm(py::module_& m);
void bind_dropout(py::module_& m);
void bind_reduce(py::module_& m);
void bind_cast(py::module_& m);
void bind_muon(py::module_& m);
void bind_adafactor(py::module_& m);
}

namespace deepoptim::bind {
namespace {

namespace pr = deepoptim::probe;

// probe(read, update, store): each a list of operands, an operand one array or (list
// form) a list of arrays, one per tensor, as in the kernel being measured.
double probe(py::list read, py::list update, py::list store) {
  std::vector<std::string> names;
  std::vector<py::handle> args;
  std::vector<int> kind;  // 0 read, 1 update, 2 store
  auto add = [&](py::list l, const char* what, int k) {
    for (std::size_t i = 0; i < l.size(); ++i) {
      names.push_back(std::string(what) + "[" + std::to_string(i) + "]");
      args.push_back(l[i]);
      kind.push_back(k);
    }
  };
  add(read, "read", 0);
  add(update, "update", 1);
  add(store, "store", 2);
  if (args.empty()) throw py::value_error("probe needs at least one array");
  std::vector<Operand> ops;
  for (std::size_t i = 0; i < args.size(); ++i) ops.push_back({names[i].c_str(), kind[i] != 0, true});
  const Operands parsed = parse_operands(ops, args);
  double total = 0.0;
  const int nr = int(read.size()), nu = int(update.size()), ns = int(store.size());
  dispatch(parsed.dtype, [&](auto tag) {
    using T = decltype(tag);
    const std::size_t nt = static_cast<std::size_t>(parsed.ntensors);
    std::vector<const T*> r;
    std::vector<T*> u, st;
    std::vector<pr::ProbeTensor<T>> ts(nt);
    for (std::size_t t = 0; t < nt; ++t) {
      for (std::size_t i = 0; i < args.size(); ++i) {
        T* p = parsed.get<T>(static_cast<std::int64_t>(t), i);
        if (kind[i] == 0) r.push_back(p);
        else if (kind[i] == 1) u.push_back(p);
        else st.push_back(p);
      }
    }
    for (std::size_t t = 0; t < nt; ++t) {
      ts[t] = {r.data() + t * nr, u.data() + t * nu, st.data() + t * ns, nr, nu, ns, parsed.sizes[t]};
    }
    py::gil_scoped_release nogil;
    total = pr::probe<T>(ts.data(), parsed.ntensors);
  });
  return total;
}

}  // namespace
}  // namespace deepoptim::bind

#ifdef DEEPOPTIM_TEST_HOOKS
namespace deepoptim::bind {
void bind_testing(py::module_& m);
}
#endif

#ifndef DEEPOPTIM_VERSION
#define DEEPOPTIM_VERSION "0+unknown"
#endif

PYBIND11_MODULE(_core, m) {
  m.doc() = "deepoptim's C++ kernels. Use deepoptim.functional; this module is private.";
  m.attr("__version__") = DEEPOPTIM_VERSION;

  m.def(
      "build_info",
      []() {
        py::dict d;
        d["version"] = DEEPOPTIM_VERSION;
        d["isa"] = deepoptim::active_isa();
        d["dispatch"] = deepoptim::dispatch_mode();
        d["openmp"] = _OPENMP;
        d["max_threads"] = omp_get_max_threads();
        // In a child forked after threads ran, kernels run on one thread (parallel.hpp).
        d["forked_child_single_thread"] = deepoptim::parallel::in_forked_child();
        d["block_size"] = deepoptim::parallel::kBlock;
#if defined(DEEPOPTIM_SANITIZE)
        d["sanitize"] = "address,undefined";
#else
        d["sanitize"] = "";
#endif
        d["eigen"] = std::to_string(EIGEN_WORLD_VERSION) + "." + std::to_string(EIGEN_MAJOR_VERSION) +
                     "." + std::to_string(EIGEN_MINOR_VERSION);
#if defined(__VERSION__)
        d["compiler"] = __VERSION__;
#endif
        return d;
      },
      "How the kernels were built and which instruction set they use on this machine.");

  deepoptim::bind::bind_optim(m);
  deepoptim::bind::bind_norm(m);
  deepoptim::bind::bind_dropout(m);
  deepoptim::bind::bind_reduce(m);
  deepoptim::bind::bind_cast(m);
  deepoptim::bind::bind_muon(m);
  deepoptim::bind::bind_adafactor(m);
  deepoptim::bind::bind_raw(m);
  m.def("probe", &deepoptim::bind::probe,
        "Bandwidth probe for benchmarks: per element r = sum(read); update += r; store = r. "
        "Moves the bytes of a kernel with the same operands. Returns sum(r).",
        py::arg("read"), py::arg("update"), py::arg("store"));
#ifdef DEEPOPTIM_TEST_HOOKS
  deepoptim::bind::bind_testing(m);
#endif

}
