// The compiled module deepoptim._core: kernels bound family by family, plus build_info.
#include <pybind11/pybind11.h>

#include <omp.h>

#include <Eigen/Core>

#include "deepoptim/dispatch.hpp"
#include "deepoptim/parallel.hpp"

namespace py = pybind11;

namespace deepoptim::bind {
void bind_optim(py::module_& m);
void bind_norm(py::module_& m);
void bind_dropout(py::module_& m);
void bind_reduce(py::module_& m);
}

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
}
