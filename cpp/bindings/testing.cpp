// Deliberate faults, compiled only with -DDEEPOPTIM_TEST_HOOKS=ON (CI's sanitizer build).
// They exist to prove that the sanitizer run is live: if calling one of them does not
// abort that build with a sanitizer report, the sanitizer would not catch a real fault
// either, and .ci/variants.py fails. Never part of a release build.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <limits>
#include <memory>

namespace py = pybind11;

namespace deepoptim::bind {

void bind_testing(py::module_& m) {
  py::module_ t = m.def_submodule("_testing", "Deliberate faults for the sanitizer live check.");
  t.def(
      "heap_overflow",
      [](std::int64_t n) {
        // volatile: the compiler may not prove the index out of bounds and drop the store.
        std::unique_ptr<float[]> a(new float[static_cast<std::size_t>(n)]);
        volatile std::int64_t i = n;
        a[i] = 1.0f;  // one past the end
        return static_cast<double>(a[0]);
      },
      py::arg("n"), "Writes one element past the end of a heap array of n floats.");
  t.def(
      "signed_overflow",
      [](std::int64_t x) {
        volatile std::int64_t big = std::numeric_limits<std::int64_t>::max();
        return big + x;  // undefined for x > 0
      },
      py::arg("x"), "Adds x to INT64_MAX (undefined behaviour for x > 0).");
}

}  // namespace deepoptim::bind
