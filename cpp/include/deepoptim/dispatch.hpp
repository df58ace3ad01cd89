// Run-time ISA dispatch.
//
// A wheel built here must run on any x86-64 CPU and still use AVX2 or AVX-512 where they
// exist. GCC's target_clones compiles each marked function three times and picks one at
// load time (an ifunc resolver). Only the innermost per-block loops carry the attribute:
// the per-block call through the resolved pointer costs nothing next to 4096 elements.
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(DEEPOPTIM_NATIVE) && \
    !defined(DEEPOPTIM_PINNED_ISA)
#define DEEPOPTIM_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define DEEPOPTIM_HAS_CLONES 1
#else
#define DEEPOPTIM_CLONES
#define DEEPOPTIM_HAS_CLONES 0
#endif

#define DEEPOPTIM_INLINE inline __attribute__((always_inline))

// The one way a per-block entry point is cloned: GCC does not clone templates, so each
// file writes `#define ITS_CLONES(T) DEEPOPTIM_CLONES ret name(params of T) { impl(...); }`
// and expands it once per dtype with DEEPOPTIM_FOR_FLOATS(ITS_CLONES).
#define DEEPOPTIM_FOR_FLOATS(M) M(float) M(double)

namespace deepoptim {

// The instruction set the cloned kernels run with on this machine, e.g. "x86-64-v3".
const char* active_isa();

// How the kernels were compiled: "target_clones(x86-64-v4,x86-64-v3,default)", "native", ...
const char* dispatch_mode();

}  // namespace deepoptim
