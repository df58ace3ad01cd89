// Optimizer steps on low-precision storage: bfloat16/float16 parameters and gradients,
// bfloat16 state, float32 master weights, stochastic rounding.
//
// The update rules are written once, for float32 math (cpp/src/optim.cpp). A step on
// mixed storage runs the same float32 block functions on chunks of kChunk elements:
// each operand stored in 16 bits is widened into a float32 scratch chunk (stack, L1),
// the block function updates the chunk, and every written operand is rounded back
// (to nearest even; the parameters optionally stochastically, see below). Float32
// operands are updated where they lie. Memory is still read and written once per step:
// the scratch never leaves the cache. Because the float32 body is the one the float32
// kernel runs, and widening and rounding are exact integer operations (lowp.hpp), a
// step equals "widen, run the float32 step, round" bit for bit, which is how the twin
// (python/deepoptim/reference/_lowp.py) computes it.
//
// Master weights: where a tensor has a float32 master copy, the block function reads and
// updates the master (in place), and the 16-bit parameter is then its rounding.
// Stochastic rounding (bfloat16 parameters without master weights): element j (its
// index in the concatenation of the call's parameters) rounds up with probability equal
// to its distance from the bfloat16 below, using the 16-bit draw j of the Philox stream
// (seed, step) (philox.hpp): bits = (u + r) >> 16, u the float32 bits, r the draw.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "deepoptim/parallel.hpp"

namespace deepoptim::lowp {

// How one operand of one tensor is stored. The math type is float32 throughout.
// Q8S / Q8U: 8-bit blockwise state (codes into the signed / unsigned dynamic code, one
// float32 absmax per block of kQBlock elements; see q8code.hpp and the twin's _lowp.py).
enum class Kind : std::uint8_t { F32 = 0, BF16 = 1, F16 = 2, Q8S = 3, Q8U = 4 };

// Elements per block of 8-bit state (one absmax each), as bitsandbytes.
inline constexpr std::int64_t kQBlock = 256;

// A step on mixed storage. The kernel's tensor structs carry the operands' raw
// addresses (their first `noperands` members, reinterpreted as float pointers; they are
// only passed through, never dereferenced as float unless the kind is F32).
struct Mixed {
  std::int64_t noperands = 0;
  const Kind* kinds = nullptr;      // ntensors x noperands
  std::uint32_t written = 0;        // bit k: operand k is updated (written back)
  float* const* masters = nullptr;  // ntensors float32 copies of operand 0, or null
  bool stochastic = false;          // operand 0 (bfloat16) rounded stochastically
  std::uint64_t seed = 0;
  std::uint64_t stream = 0;                  // the step: each step draws afresh
  const std::uint64_t* first = nullptr;      // ntensors: index of each tensor's element 0
  float* const* absmax = nullptr;            // ntensors x noperands: a Q8 operand's absmax
};

// Elements per scratch chunk. Small chunks keep every operand's stream in flight at once
// (the float32 kernels read all their arrays in one loop); measured on 4M-element AdamW,
// bfloat16 everything, 1 thread: 0.9 ns/element at 128-256, 1.4 at 2048, 1.36 at 8192.
inline constexpr std::int64_t kChunk = 256;
static_assert(parallel::kBlock % kChunk == 0, "chunks tile a block");
static_assert(kChunk == kQBlock, "a chunk is one block of 8-bit state");

// Widen n elements of `kind` at src into float32 dst; round n float32 at src into dst
// (nearest even); round stochastically into bfloat16 (draws of elements j0 .. j0+n-1).
void widen(Kind kind, const void* src, float* dst, std::int64_t n);
void narrow(Kind kind, const float* src, void* dst, std::int64_t n);
void narrow_stochastic(const float* src, void* dst, std::int64_t n, std::uint64_t seed, std::uint64_t stream,
                       std::uint64_t j0);
// One block of 8-bit state: dst = code[q] * absmax; and q, *absmax from float32 src.
void dequantize8(bool is_signed, const std::uint8_t* q, float absmax, float* dst, std::int64_t n);
void quantize8(bool is_signed, const float* src, std::uint8_t* q, float* absmax, std::int64_t n);

inline std::size_t elem_size(Kind k) { return k == Kind::F32 ? 4 : (k == Kind::Q8S || k == Kind::Q8U) ? 1 : 2; }
inline bool is_q8(Kind k) { return k == Kind::Q8S || k == Kind::Q8U; }

// Operand k of a kernel tensor struct whose first members are pointers.
template <class Tensor>
void* operand(const Tensor& t, std::int64_t k) {
  void* p;
  std::memcpy(&p, reinterpret_cast<const char*>(&t) + std::size_t(k) * sizeof(void*), sizeof p);
  return p;
}
template <class Tensor>
void set_operand(Tensor& t, std::int64_t k, void* p) {
  std::memcpy(reinterpret_cast<char*>(&t) + std::size_t(k) * sizeof(void*), &p, sizeof p);
}

// One chunk's float32 scratch for every operand (the stack of the block loop, L1).
using Scratch = float[8][kChunk];

// The view of chunk [cb, cb + n) of tensor t (tensor = tensors[t]): a copy of the tensor
// whose operands point at float32 data: float32 operands where they lie (operand 0 at
// its master copy, if any), the others widened or dequantized into scratch.
template <class Tensor>
Tensor load_chunk(const Tensor& tensor, std::int64_t t, const Mixed& mx, std::int64_t cb, std::int64_t n,
                  Scratch& scratch) {
  static_assert(std::is_standard_layout<Tensor>::value, "operands are the leading pointer members");
  const std::int64_t nops = mx.noperands;
  const Kind* kinds = mx.kinds + t * nops;
  float* master = mx.masters ? mx.masters[t] : nullptr;
  Tensor view = tensor;
  for (std::int64_t k = 0; k < nops; ++k) {
    char* base = static_cast<char*>(operand(tensor, k));
    if (!base) continue;
    if (k == 0 && master) {
      set_operand(view, k, master + cb);
    } else if (kinds[k] == Kind::F32) {
      set_operand(view, k, base + std::size_t(cb) * 4);
    } else if (is_q8(kinds[k])) {
      dequantize8(kinds[k] == Kind::Q8S, reinterpret_cast<const std::uint8_t*>(base) + cb,
                  mx.absmax[t * nops + k][cb / kQBlock], scratch[k], n);
      set_operand(view, k, scratch[k]);
    } else {
      widen(kinds[k], base + std::size_t(cb) * 2, scratch[k], n);
      set_operand(view, k, scratch[k]);
    }
  }
  return view;
}

// Writes back the operands mx.written names of a chunk load_chunk gave: rounded (operand 0
// from its master, or stochastically), quantized, or nothing where float32 was updated
// in place.
template <class Tensor>
void store_chunk(const Tensor& tensor, std::int64_t t, const Mixed& mx, std::int64_t cb, std::int64_t n,
                 const Scratch& scratch) {
  const std::int64_t nops = mx.noperands;
  const Kind* kinds = mx.kinds + t * nops;
  float* master = mx.masters ? mx.masters[t] : nullptr;
  for (std::int64_t k = 0; k < nops; ++k) {
    char* base = static_cast<char*>(operand(tensor, k));
    if (!base || !((mx.written >> k) & 1u) || (kinds[k] == Kind::F32 && !(k == 0 && master))) continue;
    const float* src = k == 0 && master ? master + cb : scratch[k];
    void* dst = base + std::size_t(cb) * elem_size(kinds[k]);
    if (k == 0 && mx.stochastic) {
      narrow_stochastic(src, dst, n, mx.seed, mx.stream, mx.first[t] + std::uint64_t(cb));
    } else if (is_q8(kinds[k])) {
      quantize8(kinds[k] == Kind::Q8S, src, static_cast<std::uint8_t*>(dst), &mx.absmax[t * nops + k][cb / kQBlock],
                n);
    } else {
      narrow(kinds[k], src, dst, n);
    }
  }
}

// Calls body(view, t, begin, end) over every block of every tensor, as
// parallel::for_each_block does, with view = tensors[t] when mx is null. With mx, on
// chunks: view is load_chunk's, and the chunk is stored back after the body ran.
template <class Tensor, class Body>
void for_each_tensor_block(const Tensor* tensors, std::int64_t ntensors, const Mixed* mx, Body body) {
  auto size_of = [&](std::int64_t t) { return tensors[t].size; };
  if (!mx) {
    parallel::for_each_block(ntensors, size_of,
                             [&](std::int64_t t, std::int64_t b, std::int64_t e) { body(tensors[t], t, b, e); });
    return;
  }
  parallel::for_each_block(ntensors, size_of, [&](std::int64_t t, std::int64_t b, std::int64_t e) {
    alignas(64) Scratch scratch;
    for (std::int64_t cb = b; cb < e; cb += kChunk) {
      const std::int64_t n = std::min(kChunk, e - cb);
      const Tensor view = load_chunk(tensors[t], t, *mx, cb, n, scratch);
      body(view, t, 0, n);
      store_chunk(tensors[t], t, *mx, cb, n, scratch);
    }
  });
}

// The same, for a body(view, begin, end) that does not need the tensor's index.
template <class Tensor, class Body>
void for_each_block(const Tensor* tensors, std::int64_t ntensors, const Mixed* mx, Body body) {
  for_each_tensor_block(tensors, ntensors, mx,
                        [&](const Tensor& view, std::int64_t, std::int64_t b, std::int64_t e) { body(view, b, e); });
}

// Calls chunk(view, i0, n) for the chunks of one block [b, e) of tensor t, in order (i0:
// the chunk's offset in the block), views as load_chunk's; nothing is written back. A
// reduction's first pass on mixed storage: the body adds to per-block lane partials
// (chunks are whole rows of parallel::kLanes, so each lane sees the block's elements in
// the order the float32 kernels add them).
template <class Tensor, class Chunk>
void read_block(const Tensor& tensor, std::int64_t t, const Mixed& mx, std::int64_t b, std::int64_t e, Chunk chunk) {
  static_assert(kChunk % parallel::kLanes == 0, "chunks keep the lane order");
  alignas(64) Scratch scratch;
  for (std::int64_t cb = b; cb < e; cb += kChunk) {
    const std::int64_t n = std::min(kChunk, e - cb);
    chunk(load_chunk(tensor, t, mx, cb, n, scratch), cb - b, n);
  }
}

}  // namespace deepoptim::lowp
