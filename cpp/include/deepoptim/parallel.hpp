// The block partition every kernel uses.
//
// Work is a list of tensors. Each tensor is cut into fixed blocks of kBlock elements
// (the last one shorter); the global sequence of (tensor, block) pairs, in tensor order,
// is cut into one contiguous run per OpenMP thread (a static schedule). One parallel
// region covers the whole list, so a thousand small tensors cost one fork/join, not a
// thousand.
//
// Why results never depend on the thread count: elementwise updates do not depend on the
// partition at all, and reductions (see reduce.hpp, later) combine per-block partials,
// whose boundaries depend only on the sizes, in block order.
#pragma once

#include <algorithm>
#include <cstdint>

#include <omp.h>

#include "deepoptim/dispatch.hpp"

namespace deepoptim::parallel {

// 4096 elements: 16 KiB of float32 per array, so a block of every operand of a kernel
// stays in L1/L2 while it is processed, and a 10K tensor still yields a few blocks.
inline constexpr std::int64_t kBlock = 4096;

// Below this many elements in a call a second thread costs more than it saves.
inline constexpr std::int64_t kMinParallel = std::int64_t{1} << 15;

// True in a process forked (without exec) after OpenMP threads were started.
// GNU libgomp's thread pool does not survive fork(): a child that enters a parallel
// region waits forever for threads that no longer exist. A pthread_atfork child handler
// (installed when the kernels are loaded, parallel.cpp) sets this flag, and from then on
// every kernel runs on the calling thread without entering any OpenMP construct, as
// PyTorch does for its own pool. Results are unchanged: they never depend on the
// partition (see above).
// A child forked before any parallel region ran keeps its threads.
bool in_forked_child() noexcept;
void note_threads_started() noexcept;

// Whether a call touching `elems` elements should open a parallel region.
inline bool use_threads(std::int64_t elems) {
  if (elems < kMinParallel || in_forked_child()) return false;
  note_threads_started();
  return true;
}

inline std::int64_t num_blocks(std::int64_t n) { return (n + kBlock - 1) / kBlock; }

// Total number of blocks of a tensor list: the size of a per-block partials buffer.
template <class SizeOf>
std::int64_t total_blocks(std::int64_t ntensors, SizeOf size_of) {
  std::int64_t total = 0;
  for (std::int64_t t = 0; t < ntensors; ++t) total += num_blocks(size_of(t));
  return total;
}

// Sums inside a block are taken in a fixed order, so that a block's partial has the same
// bits on every ISA clone (an `omp simd reduction` adds in an order that depends on the
// vector width, so AVX-512, AVX2 and SSE2 builds would differ in the last bit). Element i
// of a block goes to lane i % kLanes, added in element order; the lanes are then combined
// as ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)). The NumPy twins specify the same
// order (reference/_blocked.py). The 8-wide inner loop vectorizes at any width.
inline constexpr std::int64_t kLanes = 8;

// Calls f(i, lane) for i in [0, n), lane = i % kLanes, the lanes of a row in one SIMD loop.
template <class F>
DEEPOPTIM_INLINE void for_lanes(std::int64_t n, F&& f) {
  const std::int64_t full = n - n % kLanes;
  for (std::int64_t i = 0; i < full; i += kLanes) {
#pragma omp simd
    for (std::int64_t j = 0; j < kLanes; ++j) f(i + j, j);
  }
  for (std::int64_t i = full; i < n; ++i) f(i, i - full);
}

DEEPOPTIM_INLINE double lanes_total(const double* l) {
  return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

// Calls body(tensor_index, block_index, begin, end) for every block of every tensor;
// block_index counts blocks over the whole list in order (0 .. total_blocks - 1), so a
// reduction can store one partial per block and add them in order afterwards.
// size_of(t) gives the element count of tensor t. The body must only touch elements
// [begin, end) of tensor t.
template <class SizeOf, class Body>
void for_each_block_indexed(std::int64_t ntensors, SizeOf size_of, Body body) {
  std::int64_t total_blocks = 0;
  std::int64_t total_elems = 0;
  for (std::int64_t t = 0; t < ntensors; ++t) {
    total_blocks += num_blocks(size_of(t));
    total_elems += size_of(t);
  }
  if (total_blocks == 0) return;
  if (!use_threads(total_elems)) {  // small calls: no parallel region at all (~1 us saved)
    std::int64_t seen = 0;
    for (std::int64_t t = 0; t < ntensors; ++t) {
      const std::int64_t n = size_of(t);
      const std::int64_t nb = num_blocks(n);
      for (std::int64_t k = 0; k < nb; ++k) body(t, seen + k, k * kBlock, std::min((k + 1) * kBlock, n));
      seen += nb;
    }
    return;
  }

#pragma omp parallel
  {
    const std::int64_t nth = omp_get_num_threads();
    const std::int64_t tid = omp_get_thread_num();
    const std::int64_t lo = total_blocks * tid / nth;
    const std::int64_t hi = total_blocks * (tid + 1) / nth;
    std::int64_t seen = 0;  // blocks of the tensors before t
    for (std::int64_t t = 0; t < ntensors && seen < hi; ++t) {
      const std::int64_t n = size_of(t);
      const std::int64_t nb = num_blocks(n);
      const std::int64_t first = std::max<std::int64_t>(lo - seen, 0);
      const std::int64_t last = std::min<std::int64_t>(hi - seen, nb);
      for (std::int64_t k = first; k < last; ++k) {
        body(t, seen + k, k * kBlock, std::min((k + 1) * kBlock, n));
      }
      seen += nb;
    }
  }
}

// Calls body(tensor_index, begin, end) for every block of every tensor.
template <class SizeOf, class Body>
void for_each_block(std::int64_t ntensors, SizeOf size_of, Body body) {
  for_each_block_indexed(ntensors, size_of,
                         [&](std::int64_t t, std::int64_t, std::int64_t b, std::int64_t e) { body(t, b, e); });
}

// Calls body(i) for i in [0, n) over OpenMP threads, static schedule; `elems` is the
// number of elements the whole loop touches, to decide whether threads pay off. For
// reductions the body writes a partial per i; the caller adds them in i order.
template <class Body>
void for_each_index(std::int64_t n, std::int64_t elems, Body body) {
  if (!use_threads(elems)) {
    for (std::int64_t i = 0; i < n; ++i) body(i);
    return;
  }
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < n; ++i) body(i);
}

}  // namespace deepoptim::parallel
