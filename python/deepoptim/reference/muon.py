"""NumPy twin of the Muon kernel (``cpp/src/muon.cpp``, ``cpp/src/muon_ns.cpp``): the
specification of ``deepoptim._core.muon``.

Muon's elementwise work (momentum, Nesterov, the rounding to bfloat16, the Frobenius norm
in the kernels' fixed order, the decay and the update) is specified here to the bit. Its
matrix products are not: NumPy's ``matmul`` (BLAS) and the kernel's Eigen GEMM add the
products of a dot product in different orders, so a float32 sum can differ in its last
bit, and where that sum lies near a bfloat16 rounding boundary the rounded entry differs
by one bfloat16 ulp (2**-8 relative). Such a difference in ``A`` or ``S`` grows through
the remaining iterations (coefficients up to ``|b| = 4.775``) to a few ulps of the
result's largest entries. The tests therefore hold kernel and twin to the bit on the
momentum buffer and, on the parameters, to ``2**-3`` of the largest step (observed: at
most 3% on GPT-2-sized matrices; see tests/test_optim_muon.py). torch 2.13's
``torch.optim.Muon`` differs from both in the same way (its bfloat16 GEMM sums in its own
order), and in one more: its update ``p + alpha*u`` is a fused multiply-add in its
vectorized loop (one float32 ulp of ``p``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Dict, Optional, Sequence, Tuple, Union

import ml_dtypes
import numpy as np

from deepoptim.reference import _checks
from deepoptim.reference._parallel import blocked_sum

ArrayOrList = Union[np.ndarray, Sequence[np.ndarray]]

_ADJUST = (None, "original", "match_rms_adamw")


def _bf16(x: Any) -> np.ndarray:
    """float32 -> bfloat16 -> float32, nearest even (float64 goes through float32 first, as
    torch's conversion does)."""
    return np.asarray(x, np.float32).astype(ml_dtypes.bfloat16).astype(np.float32)


def _lerp(a: np.ndarray, b: np.ndarray, w: float) -> np.ndarray:
    """torch's ``lerp(a, b, w)`` with a scalar weight, in the arrays' dtype:
    ``a + w*(b - a)`` for ``|w| < 0.5``, else ``b - (b - a)*(1 - w)``."""
    T = a.dtype.type
    wt = T(w)
    out: np.ndarray = a + wt * (b - a) if abs(wt) < 0.5 else b - (b - a) * (T(1) - wt)
    return out


def adjusted_lr(lr: float, adjust_lr_fn: Optional[str], rows: int, cols: int) -> float:
    """torch's ``_adjust_lr``: ``lr*sqrt(max(1, rows/cols))`` for None and "original"
    (Keller Jordan's scaling), ``lr*0.2*sqrt(max(rows, cols))`` for "match_rms_adamw"
    (Moonshot's, which matches AdamW's update RMS)."""
    if adjust_lr_fn == "match_rms_adamw":
        return lr * (0.2 * math.sqrt(max(rows, cols)))
    return lr * math.sqrt(max(1, rows / cols))


def newton_schulz(x: np.ndarray, ns_coefficients: Tuple[float, float, float], ns_steps: int) -> np.ndarray:
    """The iteration on ``x`` (m x n, float32 holding bfloat16 values, already normalized),
    as torch runs it in bfloat16: each product in float32, each result rounded once."""
    a, b, c = (np.float32(v) for v in ns_coefficients)
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(ns_steps):
            A = _bf16(x @ x.T)
            S = _bf16(c * (A @ A) + b * A)
            x = _bf16(a * x + S @ x)
    return x


def muon(
    params: ArrayOrList,
    grads: ArrayOrList,
    momentum_buffers: ArrayOrList,
    *,
    lr: float = 1e-3,
    weight_decay: float = 0.1,
    momentum: float = 0.95,
    nesterov: bool = True,
    ns_coefficients: Tuple[float, float, float] = (3.4445, -4.775, 2.0315),
    eps: float = 1e-7,
    ns_steps: int = 5,
    adjust_lr_fn: Optional[str] = None,
) -> None:
    r"""Muon (Jordan et al., 2024, "Muon: An optimizer for hidden layers in neural
    networks"), in place, exactly as torch 2.13's ``torch.optim.Muon`` computes it.
    Parameters must be 2-D (use another optimizer for biases, norms and embeddings).

    For a parameter :math:`P` (R x C), gradient :math:`G`, momentum buffer :math:`B`,
    :math:`\mu` = ``momentum``, ``bf16`` rounding to bfloat16 (nearest even)::

        B = lerp(B, G, 1 - mu)                  (an EMA: torch's code, not its docstring's B = mu*B + G)
        U = lerp(G, B, mu) if nesterov else B
        X = bf16(U), seen as its transpose (m x n, m = min(R, C)) when R > C
        X = bf16(X / max(bf16(|X|_F), bf16(eps)))
        ns_steps times, (a, b, c) = ns_coefficients:
            A = bf16(X @ X.T);  S = bf16(c*(A @ A) + b*A);  X = bf16(a*X + S @ X)
        P = P * (1 - lr*weight_decay)           (decoupled decay, with the unadjusted lr)
        P = P + (-adjusted_lr) * X              (X transposed back)

    ``adjusted_lr`` is ``lr*sqrt(max(1, R/C))`` for ``adjust_lr_fn=None`` or
    ``"original"``, ``lr*0.2*sqrt(max(R, C))`` for ``"match_rms_adamw"``.
    ``lerp(a, b, w)`` is ``a + w*(b - a)`` for ``|w| < 0.5``, else ``b - (b - a)*(1 - w)``,
    in the parameters' dtype. The iteration runs in bfloat16 whatever the parameters'
    dtype, as torch's does: products of bfloat16 values in float32, each result rounded to
    bfloat16 once. ``|X|_F`` is summed in float64 in the kernels' blocked order
    (:func:`deepoptim.reference._parallel.blocked_sum`).

    Warning:
        The kernel's products (Eigen) and this twin's (NumPy's BLAS) add in different
        orders: results agree to the bit on the momentum buffer and to a few bfloat16
        ulps of the step on the parameters (see this module's docstring).

    Example:
      >>> import numpy as np
      >>> from deepoptim.reference import muon
      >>> p, b = np.eye(2, dtype=np.float32), np.zeros((2, 2), np.float32)
      >>> muon(p, np.eye(2, dtype=np.float32), b, lr=0.1, weight_decay=0.0)
      >>> b
      array([[0.05, 0.  ],
             [0.  , 0.05]], dtype=float32)
    """
    lr = _checks.real("lr", lr)
    weight_decay = _checks.real("weight_decay", weight_decay)
    momentum = _checks.real("momentum", momentum)
    coeffs = _coefficients(ns_coefficients)
    eps = _checks.real("eps", eps)
    steps = _int("ns_steps", ns_steps)
    if adjust_lr_fn is not None and not isinstance(adjust_lr_fn, str):
        raise TypeError(f"adjust_lr_fn must be a str, got {type(adjust_lr_fn).__name__}")
    if adjust_lr_fn not in _ADJUST:
        raise ValueError(f"adjust_lr_fn must be None, 'original' or 'match_rms_adamw', got {adjust_lr_fn!r}")
    _checks.finite_ge("lr", lr, 0.0)
    _checks.finite_ge("weight_decay", weight_decay, 0.0)
    _checks.finite_ge("momentum", momentum, 0.0)
    for i, v in enumerate(coeffs):
        if not math.isfinite(v):
            raise ValueError(f"ns_coefficients[{i}] must be finite, got {v!r}")
    _checks.finite_gt("eps", eps, 0.0)
    with np.errstate(over="ignore"):  # a huge eps becomes inf in float32, as in C++
        eps_bf16 = float(_bf16(np.float32(eps)))
    if eps_bf16 == 0.0:
        raise ValueError(f"eps rounds to 0 in bfloat16 (the precision of the Newton-Schulz iteration), got {eps!r}")
    if not 0 <= steps < 100:
        raise ValueError(f"ns_steps must be in [0, 100), got {steps}")
    rows, list_form = _checks.operands(
        [("params", True, True, None), ("grads", False, True, None), ("momentum_buffers", True, True, None)],
        [params, grads, momentum_buffers],
    )
    for t, (p, _g, _m) in enumerate(rows):
        if p is not None and p.ndim != 2:
            name = f"params[{t}]" if list_form else "params"
            raise ValueError(f"{name} must be 2-D (Muon orthogonalizes matrices; use another optimizer for "
                             f"biases, norms and embeddings), got shape {p.shape}")
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        for p, g, m in rows:
            assert p is not None and g is not None and m is not None
            R, C = p.shape
            if p.size == 0:
                continue
            T = p.dtype.type
            m[...] = _lerp(m, g, 1.0 - momentum)
            u = _bf16(_lerp(g, m, momentum) if nesterov else m)
            norm = np.float32(_bf16(np.float32(math.sqrt(blocked_sum(u.astype(np.float64) ** 2)))))
            floor = np.float32(eps_bf16)
            d = floor if norm < floor else norm  # a NaN norm stays NaN
            x = _bf16(u / d)
            transposed = R > C
            o = newton_schulz(x.T if transposed else x, coeffs, steps)
            o = o.T if transposed else o
            factor = 1.0 - lr * weight_decay
            if factor != 1.0:
                p[...] = p * T(factor)
            p[...] = p + T(-adjusted_lr(lr, adjust_lr_fn, R, C)) * o.astype(p.dtype)


def _coefficients(x: Any) -> Tuple[float, float, float]:
    if not isinstance(x, (tuple, list)) or len(x) != 3:
        raise TypeError(f"ns_coefficients must be a tuple of three numbers (a, b, c), got {x!r}")
    return (_checks.real("ns_coefficients[0]", x[0]), _checks.real("ns_coefficients[1]", x[1]),
            _checks.real("ns_coefficients[2]", x[2]))


def _int(name: str, x: Any) -> int:
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(x).__name__}")
    v = int(x)
    if not -(2**63) <= v < 2**63:
        raise ValueError(f"{name} is out of range, got {v}")
    return v


# The kernels of this family (deepoptim.functional binds each to the compiled function of
# the same name).
KERNELS = ("muon",)
VARIANTS: Dict[str, Tuple[str, Dict[str, Any]]] = {}
for _name in KERNELS:  # flags are checked first, as the bindings parse them first
    globals()[_name] = _checks.with_flag_checks(globals()[_name])
if not TYPE_CHECKING:  # the package exports the kernels (type checkers see every public name)
    __all__ = list(KERNELS)
