// Muon's Newton-Schulz iteration: the matrix products, with Eigen's GEMM.
//
// Compiled once per instruction set (CMakeLists.txt: -march=x86-64-v4 / x86-64-v3 /
// x86-64, DEEPOPTIM_MUON_VARIANT=v4 / v3 / base, or one "pinned" build), because Eigen
// chooses its GEMM kernel at compile time and GCC's target_clones does not clone
// templates. Each compilation renames Eigen's namespace (-DEigen=deepoptim_eigen_<variant>)
// so that the three instantiations of Eigen's templates never merge at link time, and
// keeps everything else it defines at internal linkage; muon.cpp picks the variant that
// matches the clones' choice (deepoptim::active_isa()).
//
// The math, the bfloat16 emulation and why it is deterministic: see muon.hpp.
#include <omp.h>

#include <cstdint>
#include <cstring>

#define EIGEN_DONT_PARALLELIZE  // the blocks below are the only parallelism: fixed, so deterministic
#include <Eigen/Core>

#include "deepoptim/muon.hpp"
#include "deepoptim/parallel.hpp"  // only its out-of-line functions are used here

#ifndef DEEPOPTIM_MUON_VARIANT
#error "DEEPOPTIM_MUON_VARIANT must name the instruction-set variant (v4, v3, base or pinned)"
#endif
#define DEEPOPTIM_MUON_CAT2(a, b) a##b
#define DEEPOPTIM_MUON_CAT(a, b) DEEPOPTIM_MUON_CAT2(a, b)

namespace deepoptim::muon::detail {
namespace {

using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatMap = Eigen::Map<Mat>;

// Below this many multiply-adds a product runs on the calling thread.
constexpr double kMinParallelMacs = double(1 << 22);

// float32 -> bfloat16 -> float32, nearest even: the bit operations of lowp::to_bfloat16,
// written again here because this file must not emit inline functions shared with the
// files compiled for other instruction sets.
inline float round_bf16(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) {
    u = (((u >> 16) & 0x8000u) | 0x7fc0u) << 16;
  } else {
    u = ((u + 0x7fffu + ((u >> 16) & 1u)) >> 16) << 16;
  }
  std::memcpy(&f, &u, 4);
  return f;
}

// body(i) for the fixed blocks i in [0, nblocks), statically over the OpenMP threads.
template <class Body>
void for_blocks(std::int64_t nblocks, double macs, Body body) {
  if (nblocks < 2 || macs < kMinParallelMacs || parallel::in_forked_child()) {
    for (std::int64_t i = 0; i < nblocks; ++i) body(i);
    return;
  }
  parallel::note_threads_started();
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < nblocks; ++i) body(i);
}

// One iteration's three products on X (rows x cols, row-major), into Y. When rows > cols
// the logical matrix is X^T (torch transposes it): A = X^T X and Y = a*X + X S^T are the
// transposes of the products on X^T, element for element, with no copy.
template <bool Transposed>
void iterate(float* Xp, float* Yp, float* Ap, float* Sp, std::int64_t rows, std::int64_t cols, NsCoefficients k) {
  const std::int64_t B = kNsBlock;
  const std::int64_t m = Transposed ? cols : rows, n = Transposed ? rows : cols;
  const double mmn = double(m) * double(m) * double(n), mmm = double(m) * double(m) * double(m);
  MatMap X(Xp, rows, cols), Y(Yp, rows, cols), A(Ap, m, m), S(Sp, m, m);
  // A = bf16(X X^T) (logical X), by blocks of rows
  for_blocks((m + B - 1) / B, mmn, [&](std::int64_t i) {
    const std::int64_t r0 = i * B, h = m - r0 < B ? m - r0 : B;
    if (Transposed) {
      A.middleRows(r0, h).noalias() = X.middleCols(r0, h).transpose() * X;
    } else {
      A.middleRows(r0, h).noalias() = X.middleRows(r0, h) * X.transpose();
    }
    float* a = Ap + r0 * m;
    for (std::int64_t j = 0; j < h * m; ++j) a[j] = round_bf16(a[j]);
  });
  // S = bf16(c*(A A) + b*A), by blocks of rows
  for_blocks((m + B - 1) / B, mmm, [&](std::int64_t i) {
    const std::int64_t r0 = i * B, h = m - r0 < B ? m - r0 : B;
    S.middleRows(r0, h).noalias() = A.middleRows(r0, h) * A;
    float* sr = Sp + r0 * m;
    const float* a = Ap + r0 * m;
    for (std::int64_t j = 0; j < h * m; ++j) sr[j] = round_bf16(k.c * sr[j] + k.b * a[j]);
  });
  // Y = bf16(a*X + S X) (logical X), by blocks of X's long side: S, the smaller operand,
  // is what each block repacks
  for_blocks((n + B - 1) / B, mmn, [&](std::int64_t i) {
    const std::int64_t c0 = i * B, w = n - c0 < B ? n - c0 : B;
    if (Transposed) {
      Y.middleRows(c0, w).noalias() = X.middleRows(c0, w) * S.transpose();
      float* y = Yp + c0 * cols;
      const float* x = Xp + c0 * cols;
      for (std::int64_t j = 0; j < w * cols; ++j) y[j] = round_bf16(k.a * x[j] + y[j]);
    } else {
      Y.middleCols(c0, w).noalias() = S * X.middleCols(c0, w);
      for (std::int64_t r = 0; r < rows; ++r) {
        float* y = Yp + r * cols + c0;
        const float* x = Xp + r * cols + c0;
        for (std::int64_t j = 0; j < w; ++j) y[j] = round_bf16(k.a * x[j] + y[j]);
      }
    }
  });
}

}  // namespace

float* DEEPOPTIM_MUON_CAT(newton_schulz_, DEEPOPTIM_MUON_VARIANT)(float* X, float* Y, float* A, float* S,
                                                                std::int64_t rows, std::int64_t cols,
                                                                NsCoefficients k, std::int64_t steps) {
  for (std::int64_t s = 0; s < steps; ++s) {
    if (rows > cols) {
      iterate<true>(X, Y, A, S, rows, cols, k);
    } else {
      iterate<false>(X, Y, A, S, rows, cols, k);
    }
    float* t = X;
    X = Y;
    Y = t;
  }
  return X;
}

}  // namespace deepoptim::muon::detail
