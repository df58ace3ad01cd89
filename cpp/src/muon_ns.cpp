// Muon's Newton-Schulz iteration: the matrix products, with Eigen's GEMM.
//
// Compiled once per instruction set (CMakeLists.txt: -march=x86-64-v4 (+avx512bf16) /
// x86-64-v4 / x86-64-v3 / x86-64, DEEPOPTIM_MUON_VARIANT=v4bf16 / v4 / v3 / base, or one
// "pinned" build), because Eigen
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
#include <vector>

#if defined(__AVX512BF16__)
#include <immintrin.h>
#endif

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

#if defined(__AVX512BF16__)
// The products on AVX512-BF16 (the "v4bf16" variant, or a native build on such a CPU):
// vdpbf16ps multiplies pairs of bfloat16 values and adds them to float32 lanes at twice
// the rate of float32 FMAs, which is what torch's oneDNN bfloat16 GEMM uses. Eigen has
// no such kernel, so this is a small one: C (M x N, row stride ldc) = L * R over K, with
// L(i, k) = l[i*li + k*lk] and R(k, j) = r[k*rk + j*rj] holding bfloat16 values in float32.
// Each output sums its products in an order that depends only on K: pairs (k, k+1) in
// order (the instruction adds k+1's product, then k's, each rounded; subnormal inputs
// count as 0), in slices of kKcPairs pairs added to C in order.
constexpr std::int64_t kMr = 8, kNr = 32, kKcPairs = 192;

// One kMr x kNr tile over kp pairs (ap: kMr rows of a kNr-wide panel, so pair p of row i
// is ap[p*kNr + i]; bp: kp x kNr pairs); writes (first slice) or adds to the mr x nr corner
// of c.
inline void bf16_tile(const std::uint32_t* ap, const std::uint32_t* bp, std::int64_t kp, float* c, std::int64_t ldc,
                      std::int64_t mr, std::int64_t nr, bool first) {
  __m512 acc[kMr][2];
  for (int i = 0; i < kMr; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (std::int64_t p = 0; p < kp; ++p) {
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(bp + p * kNr);
    const __m512bh b1 = (__m512bh)_mm512_loadu_si512(bp + p * kNr + 16);
#pragma GCC unroll 8
    for (int i = 0; i < kMr; ++i) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32(int(ap[p * kNr + i]));
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], a, b0);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], a, b1);
    }
  }
  if (nr == kNr) {  // a full-width tile: the same adds, sixteen lanes at a time
    for (std::int64_t i = 0; i < mr; ++i) {
      float* ci = c + i * ldc;
      if (first) {
        _mm512_storeu_ps(ci, acc[i][0]);
        _mm512_storeu_ps(ci + 16, acc[i][1]);
      } else {
        _mm512_storeu_ps(ci, _mm512_add_ps(_mm512_loadu_ps(ci), acc[i][0]));
        _mm512_storeu_ps(ci + 16, _mm512_add_ps(_mm512_loadu_ps(ci + 16), acc[i][1]));
      }
    }
    return;
  }
  alignas(64) float row[kNr];
  for (std::int64_t i = 0; i < mr; ++i) {
    _mm512_store_ps(row, acc[i][0]);
    _mm512_store_ps(row + 16, acc[i][1]);
    float* ci = c + i * ldc;
    if (first) {
      for (std::int64_t j = 0; j < nr; ++j) ci[j] = row[j];
    } else {
      for (std::int64_t j = 0; j < nr; ++j) ci[j] = ci[j] + row[j];
    }
  }
}

// An operand packed once per product and shared by every block: panel q holds W = kNr
// consecutive rows (of L) or columns (of R), i = q*W + w, as pairs (k, k+1) for every pair
// p, at (q*KP + p)*W + w. One layout for both sides, so a product whose two sides are the
// same matrix (A = X X^T, and S from the symmetric A) packs it once. Packing only moves
// bits (each value is a bfloat16 held in float32: its high half), so how it is done never
// changes a result.
struct Packed {
  std::vector<std::uint32_t> v;
  std::int64_t KP = 0;
};

// Packs an operand stored k-major: element (i, k) is base[i + k*sk]. A pair's W lanes are
// then the high halves of W consecutive floats of rows k and k+1 of the storage: two
// loads, a shift, a mask, an or, a store (masked at the edges, zero beyond them).
template <class Blocks>
void pack(Packed& out, std::int64_t count, std::int64_t K, const float* base, std::int64_t sk, Blocks&& blocks) {
  constexpr std::int64_t W = kNr;
  const std::int64_t KP = (K + 1) / 2, panels = (count + W - 1) / W;
  out.KP = KP;
  if (out.v.size() < std::size_t(panels * KP * W)) out.v.resize(std::size_t(panels * KP * W));
  std::uint32_t* d = out.v.data();
  const __m512i high = _mm512_set1_epi32(int(0xffff0000u));
  blocks(panels, double(count) * double(K) * 64.0, [&](std::int64_t q) {
    const std::int64_t i0 = q * W, here = count - i0 < W ? count - i0 : W;
    for (std::int64_t p = 0; p < KP; ++p) {
      const float* r0 = base + 2 * p * sk + i0;
      const float* r1 = 2 * p + 1 < K ? r0 + sk : nullptr;
      std::uint32_t* dst = d + (q * KP + p) * W;
      for (std::int64_t w = 0; w < W; w += 16) {
        const std::int64_t lanes = here - w <= 0 ? 0 : (here - w < 16 ? here - w : 16);
        const __mmask16 m = __mmask16((1u << lanes) - 1u);
        const __m512i a = _mm512_maskz_loadu_epi32(m, r0 + w);
        const __m512i b = r1 ? _mm512_maskz_loadu_epi32(m, r1 + w) : _mm512_setzero_si512();
        _mm512_storeu_si512(dst + w, _mm512_or_si512(_mm512_srli_epi32(a, 16), _mm512_and_si512(b, high)));
      }
    }
  });
}

// After the four interleaving rounds below, register j holds the tile's column
// kTransposeColumn[j] (rows in order): the 64-bit round swaps columns 1 and 2 of each four.
constexpr int kTransposeColumn[16] = {0, 2, 1, 3, 4, 6, 5, 7, 8, 10, 9, 11, 12, 14, 13, 15};

// T (cols x rows, row-major) = X^T for X (rows x cols, row-major), in 16 x 16 tiles
// transposed in registers, so that an operand read along X's rows can be packed k-major.
template <class Blocks>
void transpose(std::vector<float>& T, const float* X, std::int64_t rows, std::int64_t cols, Blocks&& blocks) {
  if (T.size() < std::size_t(rows * cols)) T.resize(std::size_t(rows * cols));
  float* t = T.data();
  constexpr std::int64_t kT = 16;
  const std::int64_t strips = (rows + kT - 1) / kT;
  blocks(strips, double(rows) * double(cols) * 64.0, [&](std::int64_t s) {
    const std::int64_t r0 = s * kT, h = rows - r0 < kT ? rows - r0 : kT;
    for (std::int64_t c0 = 0; c0 < cols; c0 += kT) {
      const std::int64_t w = cols - c0 < kT ? cols - c0 : kT;
      if (h < kT || w < kT) {
        for (std::int64_t i = 0; i < h; ++i) {
          for (std::int64_t j = 0; j < w; ++j) t[(c0 + j) * rows + r0 + i] = X[(r0 + i) * cols + c0 + j];
        }
        continue;
      }
      __m512 r[16];
      for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(X + (r0 + i) * cols + c0);
      // Four rounds of interleaving: 32-bit, 64-bit, 128-bit, 256-bit lanes.
      __m512 u[16];
      for (int i = 0; i < 16; i += 2) {
        u[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        u[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
      }
      for (int i = 0; i < 16; i += 4) {
        for (int j = 0; j < 2; ++j) {
          r[i + j] = _mm512_castpd_ps(
              _mm512_unpacklo_pd(_mm512_castps_pd(u[i + j]), _mm512_castps_pd(u[i + j + 2])));
          r[i + j + 2] = _mm512_castpd_ps(
              _mm512_unpackhi_pd(_mm512_castps_pd(u[i + j]), _mm512_castps_pd(u[i + j + 2])));
        }
      }
      for (int i = 0; i < 16; i += 8) {
        for (int j = 0; j < 4; ++j) {
          u[i + j] = _mm512_shuffle_f32x4(r[i + j], r[i + j + 4], 0x88);
          u[i + j + 4] = _mm512_shuffle_f32x4(r[i + j], r[i + j + 4], 0xdd);
        }
      }
      for (int j = 0; j < 8; ++j) {
        r[j] = _mm512_shuffle_f32x4(u[j], u[j + 8], 0x88);
        r[j + 8] = _mm512_shuffle_f32x4(u[j], u[j + 8], 0xdd);
      }
      for (int j = 0; j < 16; ++j) _mm512_storeu_ps(t + (c0 + kTransposeColumn[j]) * rows + r0, r[j]);
    }
  });
}

// C (M x N, row stride ldc) = rows i0.. of L times columns j0.. of R (i0 a multiple of
// kMr, j0 of kNr).
void bf16_block(float* c, std::int64_t ldc, const Packed& L, std::int64_t i0, std::int64_t M, const Packed& R,
                std::int64_t j0, std::int64_t N) {
  const std::int64_t KP = L.KP, mp = (M + kMr - 1) / kMr, np = (N + kNr - 1) / kNr;
  if (KP == 0) {
    for (std::int64_t i = 0; i < M; ++i) {
      for (std::int64_t j = 0; j < N; ++j) c[i * ldc + j] = 0.0f;
    }
    return;
  }
  // Rows in groups of kMcTiles tiles, so that a group's slice of L (about 100 KB) stays in
  // L2 while every column panel passes over it. Each C tile still takes its slices in
  // order, so the loop order never changes a sum.
  constexpr std::int64_t kMcTiles = 16;
  for (std::int64_t p0 = 0; p0 < KP; p0 += kKcPairs) {
    const std::int64_t kp = KP - p0 < kKcPairs ? KP - p0 : kKcPairs;
    for (std::int64_t qm0 = 0; qm0 < mp; qm0 += kMcTiles) {
      const std::int64_t qm1 = mp - qm0 < kMcTiles ? mp : qm0 + kMcTiles;
      for (std::int64_t qn = 0; qn < np; ++qn) {
        const std::int64_t cj = qn * kNr, nr = N - cj < kNr ? N - cj : kNr;
        const std::uint32_t* rp = R.v.data() + ((j0 / kNr + qn) * KP + p0) * kNr;
        for (std::int64_t qm = qm0; qm < qm1; ++qm) {
          const std::int64_t ci = qm * kMr, mr = M - ci < kMr ? M - ci : kMr, row = i0 + ci;
          const std::uint32_t* lp = L.v.data() + ((row / kNr) * KP + p0) * kNr + row % kNr;
          bf16_tile(lp, rp, kp, c + ci * ldc + cj, ldc, mr, nr, p0 == 0);
        }
      }
    }
  }
}
constexpr bool kBf16Gemm = true;
#else
constexpr bool kBf16Gemm = false;
struct Packed {
  std::int64_t KP = 0;
};
constexpr std::int64_t kMr = 8, kNr = 32;
template <class Blocks>
void pack(Packed&, std::int64_t, std::int64_t, const float*, std::int64_t, Blocks&&) {}
template <class Blocks>
void transpose(std::vector<float>&, const float*, std::int64_t, std::int64_t, Blocks&&) {}
void bf16_block(float*, std::int64_t, const Packed&, std::int64_t, std::int64_t, const Packed&, std::int64_t,
                std::int64_t) {}
#endif

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
  // The bf16 path's operands, packed once per product; the blocks below run on other
  // threads, so they must reach this thread's buffers through these references.
  thread_local Packed packed_l, packed_r;  // for A and S, one operand: packed_r
  thread_local std::vector<float> transposed;
  Packed& PL = packed_l;
  Packed& PR = packed_r;
  const auto static_blocks = [](std::int64_t nb, double macs, auto&& body) { for_blocks(nb, macs, body); };
  // The packer reads operands k-major (element (i, k) at base[i + k*sk]). A and S are
  // symmetric (mirrored below), so they are k-major either way; X is k-major for one of
  // the two products that read it, and its transpose, made once per iteration, serves
  // the other.
  if (kBf16Gemm) {  // A: L = logical X's rows, R = the same rows as columns
    const float* xk = Xp;
    std::int64_t sk = cols;
    if (!Transposed) {
      transpose(transposed, Xp, rows, cols, static_blocks);
      xk = transposed.data();
      sk = rows;
    }
    pack(PR, m, n, xk, sk, static_blocks);
  }
  // A = bf16(X X^T) (logical X): the lower triangle, by blocks of rows
  for_blocks_largest_first(mb, mmn / 2, [&](std::int64_t i) {
    const std::int64_t r0 = i * B, h = m - r0 < B ? m - r0 : B, e = r0 + h;
    if (kBf16Gemm) {
      bf16_block(Ap + r0 * m, m, PR, r0, h, PR, 0, e);
    } else if (Transposed) {
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
  if (kBf16Gemm) {  // S: L = A's rows, R = A's columns (A symmetric: both k-major)
    pack(PR, m, m, Ap, m, static_blocks);
  }
  // S = bf16(c*(A A) + b*A): the lower triangle, by blocks of rows
  for_blocks_largest_first(mb, mmm / 2, [&](std::int64_t i) {
    const std::int64_t r0 = i * B, h = m - r0 < B ? m - r0 : B, e = r0 + h;
    if (kBf16Gemm) {
      bf16_block(Sp + r0 * m, m, PR, r0, h, PR, 0, e);
    } else {
      S.block(r0, 0, h, e).noalias() = A.middleRows(r0, h) * A.leftCols(e);
    }
    for (std::int64_t r = r0; r < e; ++r) {
      float* sr = Sp + r * m;
      const float* a = Ap + r * m;
      for (std::int64_t j = 0; j < e; ++j) sr[j] = round_bf16(k.c * sr[j] + k.b * a[j]);
    }
  });
  mirror_lower(Sp, m);
  if (kBf16Gemm) {  // Y: S times X's columns, or X's rows times S^T (S symmetric)
    if (Transposed) {
      transpose(transposed, Xp, rows, cols, static_blocks);
      pack(PL, n, m, transposed.data(), rows, static_blocks);
      pack(PR, m, m, Sp, m, static_blocks);
    } else {
      pack(PL, m, m, Sp, m, static_blocks);
      pack(PR, n, m, Xp, cols, static_blocks);
    }
  }
  // Y = bf16(a*X + S X) (logical X), by blocks of X's long side: S, the smaller operand,
  // is what each block repacks
  for_blocks((n + B - 1) / B, mmn, [&](std::int64_t i) {
    const std::int64_t c0 = i * B, w = n - c0 < B ? n - c0 : B;
    if (Transposed) {
      if (kBf16Gemm) {
        bf16_block(Yp + c0 * cols, cols, PL, c0, w, PR, 0, m);
      } else {
        Y.middleRows(c0, w).noalias() = X.middleRows(c0, w) * S.transpose();
      }
      float* y = Yp + c0 * cols;
      const float* x = Xp + c0 * cols;
      for (std::int64_t j = 0; j < w * cols; ++j) y[j] = round_bf16(k.a * x[j] + y[j]);
    } else {
      if (kBf16Gemm) {
        bf16_block(Yp + c0, cols, PL, 0, m, PR, c0, w);
      } else {
        Y.middleCols(c0, w).noalias() = S * X.middleCols(c0, w);
      }
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
