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

// The same for blocks whose cost grows with i (a triangle's rows): largest first, handed
// out one at a time. Which thread runs a block never changes the block's bits.
template <class Body>
void for_blocks_largest_first(std::int64_t nblocks, double macs, Body body) {
  if (nblocks < 2 || macs < kMinParallelMacs || parallel::in_forked_child()) {
    for (std::int64_t i = nblocks - 1; i >= 0; --i) body(i);
    return;
  }
  parallel::note_threads_started();
#pragma omp parallel for schedule(dynamic, 1)
  for (std::int64_t j = 0; j < nblocks; ++j) body(nblocks - 1 - j);
}

// M (m x m, row-major) = its lower triangle mirrored: M[i][j] = M[j][i] for j > i.
void mirror_lower(float* M, std::int64_t m) {
  const std::int64_t B = kNsBlock;
  for_blocks((m + B - 1) / B, double(m) * double(m) * 64.0, [&](std::int64_t b) {
    const std::int64_t r1 = (b + 1) * B < m ? (b + 1) * B : m;
    for (std::int64_t i = b * B; i < r1; ++i) {
      for (std::int64_t j = i + 1; j < m; ++j) M[i * m + j] = M[j * m + i];
    }
  });
}

// One iteration's three products on X (rows x cols, row-major), into Y. When rows > cols
// the logical matrix is X^T (torch transposes it): A = X^T X and Y = a*X + X S^T are the
// transposes of the products on X^T, element for element, with no copy.
//
// A = X X^T and S = c*A A + b*A are symmetric: only their lower triangles are computed
// (row block I against rows 0 .. end of I), then mirrored, which halves those products'
// work. The lower triangle is the definition; a full product would give the upper one
// the same value up to the summation order of a dot product.
template <bool Transposed>
void iterate(float* Xp, float* Yp, float* Ap, float* Sp, std::int64_t rows, std::int64_t cols, NsCoefficients k) {
  const std::int64_t B = kNsBlock;
  const std::int64_t m = Transposed ? cols : rows, n = Transposed ? rows : cols;
  const std::int64_t mb = (m + B - 1) / B;
  const double mmn = double(m) * double(m) * double(n), mmm = double(m) * double(m) * double(m);
  MatMap X(Xp, rows, cols), Y(Yp, rows, cols), A(Ap, m, m), S(Sp, m, m);
  // A = bf16(X X^T) (logical X): the lower triangle, by blocks of rows
  for_blocks_largest_first(mb, mmn / 2, [&](std::int64_t i) {
    const std::int64_t r0 = i * B, h = m - r0 < B ? m - r0 : B, e = r0 + h;
    if (Transposed) {
      A.block(r0, 0, h, e).noalias() = X.middleCols(r0, h).transpose() * X.leftCols(e);
    } else {
      A.block(r0, 0, h, e).noalias() = X.middleRows(r0, h) * X.topRows(e).transpose();
    }
    for (std::int64_t r = r0; r < e; ++r) {
      float* a = Ap + r * m;
      for (std::int64_t j = 0; j < e; ++j) a[j] = round_bf16(a[j]);
    }
  });
  mirror_lower(Ap, m);
  // S = bf16(c*(A A) + b*A): the lower triangle, by blocks of rows
  for_blocks_largest_first(mb, mmm / 2, [&](std::int64_t i) {
    const std::int64_t r0 = i * B, h = m - r0 < B ? m - r0 : B, e = r0 + h;
    S.block(r0, 0, h, e).noalias() = A.middleRows(r0, h) * A.leftCols(e);
    for (std::int64_t r = r0; r < e; ++r) {
      float* sr = Sp + r * m;
      const float* a = Ap + r * m;
      for (std::int64_t j = 0; j < e; ++j) sr[j] = round_bf16(k.c * sr[j] + k.b * a[j]);
    }
  });
  mirror_lower(Sp, m);
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
