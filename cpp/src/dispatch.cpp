#include "deepoptim/dispatch.hpp"

namespace deepoptim {

const char* active_isa() {
#if DEEPOPTIM_HAS_CLONES
  // Same order as the ifunc resolver GCC emits for target_clones: best first.
  __builtin_cpu_init();
  if (__builtin_cpu_supports("x86-64-v4")) return "x86-64-v4";
  if (__builtin_cpu_supports("x86-64-v3")) return "x86-64-v3";
  return "x86-64";
#elif defined(DEEPOPTIM_NATIVE)
  return "native";
#elif defined(DEEPOPTIM_PINNED_ISA)
  return DEEPOPTIM_PINNED_ISA;
#elif defined(__x86_64__)
  return "x86-64";
#elif defined(__aarch64__)
  return "aarch64";
#else
  return "generic";
#endif
}

const char* dispatch_mode() {
#if DEEPOPTIM_HAS_CLONES
  return "target_clones(x86-64-v4,x86-64-v3,default)";
#elif defined(DEEPOPTIM_NATIVE)
  return "native (-march=native, no clones)";
#elif defined(DEEPOPTIM_PINNED_ISA)
  return "pinned (-march=" DEEPOPTIM_PINNED_ISA ", no clones)";
#else
  return "single (compiler default ISA)";
#endif
}

}  // namespace deepoptim
