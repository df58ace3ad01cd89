// Muon: momentum, then the Newton-Schulz orthogonalization of each 2-D update.
//
// Jordan et al., 2024, "Muon: An optimizer for hidden layers in neural networks"
// (kellerjordan.github.io/posts/muon), exactly as torch 2.13's torch.optim.Muon computes
// it (torch/optim/_muon.py), which is what the NumPy twin python/deepoptim/reference/muon.py
// specifies. For a parameter P (R x C) with gradient G and momentum buffer B, mu = momentum:
//
//   B = lerp(B, G, 1 - mu)                     (torch's code: an EMA, not B = mu*B + G)
//   U = nesterov ? lerp(G, B, mu) : B
//   X = bf16(U), seen transposed (m x n, m = min(R, C)) when R > C, as torch transposes it
//   X = bf16(X / max(bf16(|X|_F), bf16(eps)))
//   ns_steps times, with (a, b, c) = ns_coefficients:
//     A = bf16(X X^T);  S = bf16(c*(A A) + b*A);  X = bf16(a*X + S X)
//   P = P * (1 - lr*weight_decay)              (decoupled decay with the unadjusted lr)
//   P = P + (-adjusted_lr) * X (transposed back)
//
// torch runs the iteration in bfloat16: its matrix products take bfloat16 operands,
// accumulate in float32 and round each result to bfloat16 once. Here too: X, A and S
// hold bfloat16 values (in float32 arrays), the products are Eigen's float32 GEMM (a
// product of two bfloat16 values is exact in float32, so only the summation order can
// differ from torch's), and every result is rounded to bfloat16 (nearest even) as torch's
// is. adjusted_lr = lr*sqrt(max(1, R/C)) ("original", the default) or lr*0.2*sqrt(max(R, C))
// ("match_rms_adamw").
//
// Work: A and S are symmetric, so only their lower triangles are multiplied out (then
// mirrored): per iteration m*m*n/2 + m*m*m/2 + m*m*n multiply-adds instead of torch's
// 2*m*m*n + m*m*m.
//
// Determinism: the products are split into fixed blocks of rows or columns (kNsBlock),
// each computed by one thread with Eigen's single-threaded GEMM (which thread takes a
// block never changes its bits); the Frobenius norm sums per-block partials in double in
// block order (parallel.hpp). So the bits do not depend on the thread count. They may
// depend on the instruction set: Eigen's depth blocking depends on its register block,
// and so on the SIMD width.
//
// Why the products are compiled separately (muon_ns.cpp): Eigen picks its GEMM kernel
// at compile time, and target_clones cannot clone templates, so that file is compiled
// once per instruction set (x86-64-v4, v3, baseline) with Eigen's namespace renamed in
// each, and the elementwise kernel here picks one at run time, as the clones do. A fourth
// variant, for CPUs with AVX512-BF16, multiplies with vdpbf16ps instead of Eigen (a small
// packed GEMM in muon_ns.cpp): bfloat16 pairs into float32 lanes at twice the float32 FMA
// rate, the instruction torch's oneDNN bfloat16 GEMM uses; its sums run in another (still
// fixed) order, so its bits differ from the Eigen variants' by the same bfloat16 flips.
#pragma once

#include <cstdint>

namespace deepoptim::muon {

// Rows (or columns) of a product's result per block: a fixed partition, the same for any
// thread count. 128 rows keep Eigen's repacking of the shared operand near 10% of a block.
inline constexpr std::int64_t kNsBlock = 128;

enum class AdjustLr { Original, MatchRmsAdamw };

struct MuonHyper {
  double lr, weight_decay, momentum;
  bool nesterov;
  double a, b, c;  // ns_coefficients
  double eps;
  std::int64_t ns_steps;
  AdjustLr adjust_lr;
};

template <class T>
struct MuonTensor {
  T* param;            // (rows, cols)
  const T* grad;       // (rows, cols)
  T* momentum_buffer;  // (rows, cols)
  std::int64_t rows, cols;
};

// torch's _adjust_lr, in double.
double adjusted_lr(double lr, AdjustLr fn, std::int64_t rows, std::int64_t cols);

template <class T>
void muon(const MuonTensor<T>* ts, std::int64_t n, const MuonHyper& h);

namespace detail {

struct NsCoefficients {
  float a, b, c;
};

// The Newton-Schulz iteration on X (rows x cols, row-major, bfloat16 values held in
// float32; the logical matrix is X^T when rows > cols, as torch transposes it),
// ping-ponging between X and Y (same shape); A and S are m x m scratch, m = min(rows,
// cols). Returns X or Y, whichever holds the result. One definition per instruction set
// (muon_ns.cpp).
#define DEEPOPTIM_MUON_NS_DECL(variant)                                                                  \
  float* newton_schulz_##variant(float* X, float* Y, float* A, float* S, std::int64_t rows, std::int64_t cols, \
                                 NsCoefficients k, std::int64_t steps);
DEEPOPTIM_MUON_NS_DECL(v4bf16)
DEEPOPTIM_MUON_NS_DECL(v4)
DEEPOPTIM_MUON_NS_DECL(v3)
DEEPOPTIM_MUON_NS_DECL(base)
DEEPOPTIM_MUON_NS_DECL(pinned)
#undef DEEPOPTIM_MUON_NS_DECL

}  // namespace detail
}  // namespace deepoptim::muon
