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

inline std::uint32_t bf16_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u >> 16;  // exact: f holds a bfloat16 value
}

// One kMr x kNr tile over kp pairs (ap: kp x kMr pairs, bp: kp x kNr pairs); writes (first
// slice) or adds to the mr x nr corner of c.
inline void bf16_tile(const std::uint32_t* ap, const std::uint32_t* bp, std::int64_t kp, float* c, std::int64_t ldc,
                      std::int64_t mr, std::int64_t nr, bool first) {
  __m512 acc[kMr][2];
  for (int i = 0; i < kMr; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (std::int64_t p = 0; p < kp; ++p) {
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(bp + p * kNr);
    const __m512bh b1 = (__m512bh)_mm512_loadu_si512(bp + p * kNr + 16);
#pragma GCC unroll 8
    for (int i = 0; i < kMr; ++i) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32(int(ap[p * kMr + i]));
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

// An operand packed once per product and shared by every block: panel q holds W
// consecutive rows (of L) or columns (of R), i = q*W + w, as pairs (k, k+1) for every pair
// p, at (q*KP + p)*W + w; element (i, k) of the operand is base[i*si + k*sk].
struct Packed {
  std::vector<std::uint32_t> v;
  std::int64_t KP = 0;
};

template <class Blocks>
void pack(Packed& out, std::int64_t W, std::int64_t count, std::int64_t K, const float* base, std::int64_t si,
          std::int64_t sk, Blocks&& blocks) {
  const std::int64_t KP = (K + 1) / 2, panels = (count + W - 1) / W;
  out.KP = KP;
  if (out.v.size() < std::size_t(panels * KP * W)) out.v.resize(std::size_t(panels * KP * W));
  std::uint32_t* d = out.v.data();
  blocks(panels, double(count) * double(K) * 64.0, [&](std::int64_t q) {
    for (std::int64_t p = 0; p < KP; ++p) {
      const std::int64_t k0 = 2 * p, k1 = k0 + 1;
      std::uint32_t* dst = d + (q * KP + p) * W;
      for (std::int64_t w = 0; w < W; ++w) {
        const std::int64_t i = q * W + w;
        std::uint32_t v = 0;
        if (i < count) v = bf16_bits(base[i * si + k0 * sk]) | (k1 < K ? bf16_bits(base[i * si + k1 * sk]) << 16 : 0u);
        dst[w] = v;
      }
    }
  });
}

// C (M x N, row stride ldc) = rows qm0*kMr.. of L times columns qn0*kNr.. of R.
void bf16_block(float* c, std::int64_t ldc, const Packed& L, std::int64_t qm0, std::int64_t M, const Packed& R,
                std::int64_t qn0, std::int64_t N) {
  const std::int64_t KP = L.KP, mp = (M + kMr - 1) / kMr, np = (N + kNr - 1) / kNr;
  if (KP == 0) {
    for (std::int64_t i = 0; i < M; ++i) {
      for (std::int64_t j = 0; j < N; ++j) c[i * ldc + j] = 0.0f;
    }
    return;
  }
  for (std::int64_t p0 = 0; p0 < KP; p0 += kKcPairs) {
    const std::int64_t kp = KP - p0 < kKcPairs ? KP - p0 : kKcPairs;
    for (std::int64_t qn = 0; qn < np; ++qn) {
      const std::int64_t j0 = qn * kNr, nr = N - j0 < kNr ? N - j0 : kNr;
      const std::uint32_t* rp = R.v.data() + ((qn0 + qn) * KP + p0) * kNr;
      for (std::int64_t qm = 0; qm < mp; ++qm) {
        const std::int64_t i0 = qm * kMr, mr = M - i0 < kMr ? M - i0 : kMr;
        bf16_tile(L.v.data() + ((qm0 + qm) * KP + p0) * kMr, rp, kp, c + i0 * ldc + j0, ldc, mr, nr, p0 == 0);
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
void pack(Packed&, std::int64_t, std::int64_t, std::int64_t, const float*, std::int64_t, std::int64_t, Blocks&&) {}
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
  thread_local Packed packed_l, packed_r;
  Packed& PL = packed_l;
  Packed& PR = packed_r;
  const auto static_blocks = [](std::int64_t nb, double macs, auto&& body) { for_blocks(nb, macs, body); };
  if (kBf16Gemm) {  // A: L = logical X's rows, R = the same rows as columns
    pack(PL, kMr, m, n, Xp, Transposed ? 1 : cols, Transposed ? cols : 1, static_blocks);
    pack(PR, kNr, m, n, Xp, Transposed ? 1 : cols, Transposed ? cols : 1, static_blocks);
  }
  // A = bf16(X X^T) (logical X): the lower triangle, by blocks of rows
  for_blocks_largest_first(mb, mmn / 2, [&](std::int64_t i) {
    const std::int64_t r0 = i * B, h = m - r0 < B ? m - r0 : B, e = r0 + h;
    if (kBf16Gemm) {
      bf16_block(Ap + r0 * m, m, PL, r0 / kMr, h, PR, 0, e);
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
  if (kBf16Gemm) {  // S: L = A's rows, R = A's columns
    pack(PL, kMr, m, m, Ap, m, 1, static_blocks);
    pack(PR, kNr, m, m, Ap, 1, m, static_blocks);
  }
  // S = bf16(c*(A A) + b*A): the lower triangle, by blocks of rows
  for_blocks_largest_first(mb, mmm / 2, [&](std::int64_t i) {
    const std::int64_t r0 = i * B, h = m - r0 < B ? m - r0 : B, e = r0 + h;
    if (kBf16Gemm) {
      bf16_block(Sp + r0 * m, m, PL, r0 / kMr, h, PR, 0, e);
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
  if (kBf16Gemm) {  // Y: S times X's columns, or X's rows times S^T
    if (Transposed) {
      pack(PL, kMr, n, m, Xp, cols, 1, static_blocks);
      pack(PR, kNr, m, m, Sp, m, 1, static_blocks);
    } else {
      pack(PL, kMr, m, m, Sp, m, 1, static_blocks);
      pack(PR, kNr, n, m, Xp, 1, cols, static_blocks);
    }
  }
  // Y = bf16(a*X + S X) (logical X), by blocks of X's long side: S, the smaller operand,
  // is what each block repacks
  for_blocks((n + B - 1) / B, mmn, [&](std::int64_t i) {
    const std::int64_t c0 = i * B, w = n - c0 < B ? n - c0 : B;
    if (Transposed) {
      if (kBf16Gemm) {
        bf16_block(Yp + c0 * cols, cols, PL, c0 / kMr, w, PR, 0, m);
      } else {
        Y.middleRows(c0, w).noalias() = X.middleRows(c0, w) * S.transpose();
      }
      float* y = Yp + c0 * cols;
      const float* x = Xp + c0 * cols;
      for (std::int64_t j = 0; j < w * cols; ++j) y[j] = round_bf16(k.a * x[j] + y[j]);
    } else {
      if (kBf16Gemm) {
        bf16_block(Yp + c0, cols, PL, 0, m, PR, c0 / kNr, w);
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
