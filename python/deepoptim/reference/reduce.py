"""NumPy twins of the reductions and clipping kernels (``cpp/src/reduce.cpp``): per-tensor
norms and dot products, the non-finite check, scaling, clamping and clipping by global
norm."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Dict, List, Sequence, Tuple, Union, cast

import numpy as np

from deepoptim.reference import _checks
from deepoptim.reference._parallel import blocked_sum

ArrayOrList = Union[np.ndarray, Sequence[np.ndarray]]
if TYPE_CHECKING:
    # What _checks.operands returns when every operand is used: no None in the rows.
    _Rows = Tuple[List[List[np.ndarray]], bool]


def _ord(norm_type: float) -> float:
    norm_type = _checks.real("norm_type", norm_type)
    if norm_type not in (1.0, 2.0, math.inf):
        raise ValueError(f"norm_type must be 1, 2 or inf, got {norm_type!r}")
    return norm_type


def _one_norm(a: np.ndarray, ord: float) -> float:
    # Sums in the kernels' order (see reference/_parallel.py), so the bits agree.
    x = np.abs(a.astype(np.float64))
    if ord == 2.0:
        return math.sqrt(blocked_sum(x * x))
    if ord == 1.0:
        return blocked_sum(x)
    return float(np.max(x, initial=0.0)) if not np.isnan(x).any() else math.nan


def norms(arrays: ArrayOrList, norm_type: float = 2.0) -> Union[float, np.ndarray]:
    r"""Per-tensor norms, accumulated in float64::

        1: sum |x|      2: sqrt(sum x**2)      inf: max |x|   (NaN if any element is NaN)

    Returns a float for one array, a float64 array (one norm per tensor) for a list.
    """
    ord = _ord(norm_type)
    rows, list_form = cast("_Rows", _checks.operands([("arrays", False, True, None)], [arrays]))
    out = [_one_norm(a, ord) for (a,) in rows]
    return np.array(out, dtype=np.float64) if list_form else out[0]


def dots(xs: ArrayOrList, ys: ArrayOrList) -> Union[float, np.ndarray]:
    r"""Per-pair dot products, accumulated in float64 in the kernels' fixed order (the
    order of ``norms``' sum of squares, see ``reference/_parallel.py``), so the result
    does not depend on the thread count or the instruction set, as BLAS's may::

        dots(x, y) = sum_i x[i] * y[i]        (each product and sum in float64)

    ``xs`` and ``ys`` are two arrays, or two lists pairing arrays of the same shape and
    dtype. Returns a float for one pair, a float64 array (one per pair) for lists.
    L-BFGS's inner products use it.
    """
    rows, list_form = cast("_Rows", _checks.operands([("xs", False, True, None), ("ys", False, True, None)],
                                                     [xs, ys]))
    out = [blocked_sum(x.astype(np.float64) * y.astype(np.float64)) for x, y in rows]
    return np.array(out, dtype=np.float64) if list_form else out[0]


def all_finite(arrays: ArrayOrList) -> bool:
    """True iff no element of any array is NaN or infinite."""
    rows, _ = cast("_Rows", _checks.operands([("arrays", False, True, None)], [arrays]))
    return all(bool(np.isfinite(a).all()) for (a,) in rows)


def scale(arrays: ArrayOrList, factor: float) -> None:
    """``x *= factor`` in place, the factor rounded to each array's dtype once."""
    factor = _checks.real("factor", factor)
    rows, _ = cast("_Rows", _checks.operands([("arrays", True, True, None)], [arrays]))
    with np.errstate(all="ignore"):
        for (a,) in rows:
            a[...] = a * a.dtype.type(factor)


def clamp(arrays: ArrayOrList, lo: float, hi: float) -> None:
    """``x = min(max(x, lo), hi)`` in place; NaN stays NaN (as torch.clamp)."""
    lo, hi = _checks.real("lo", lo), _checks.real("hi", hi)
    if math.isnan(lo) or math.isnan(hi) or lo > hi:
        raise ValueError(f"clamp needs lo <= hi, got lo={lo!r}, hi={hi!r}")
    rows, _ = cast("_Rows", _checks.operands([("arrays", True, True, None)], [arrays]))
    for (a,) in rows:
        t = a.dtype.type
        a[...] = np.where(a < t(lo), t(lo), np.where(a > t(hi), t(hi), a))


def clip_grad_norm(grads: ArrayOrList, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False) -> float:
    r"""Clips gradients by their global norm, in place, as ``torch.nn.utils.clip_grad_norm_``::

        total = || concat(grads) ||_norm_type        (from per-tensor norms, in tensor order)
        coef  = max_norm / (total + 1e-6)
        grads = grads * coef        when coef < 1 (or NaN: a NaN total poisons the grads, like torch)

    With ``error_if_nonfinite`` and a non-finite total the grads are left untouched (the
    public :func:`deepoptim.clip.clip_grad_norm` then raises). Returns the total norm.
    """
    ord = _ord(norm_type)
    max_norm = _checks.real("max_norm", max_norm)
    _checks.finite_ge("max_norm", max_norm, 0.0)
    rows, _ = cast("_Rows", _checks.operands([("grads", True, True, None)], [grads]))
    per = [_one_norm(g, ord) for (g,) in rows]
    if ord == 2.0:
        total = math.sqrt(sum(n * n for n in per))
    elif ord == 1.0:
        total = sum(per, 0.0)  # a float for an empty list too, as the kernel returns
    else:
        total = math.nan if any(math.isnan(n) for n in per) else max(per, default=0.0)
    if error_if_nonfinite and not math.isfinite(total):
        return total
    coef = max_norm / (total + 1e-6)
    if not coef >= 1.0:
        with np.errstate(all="ignore"):
            for (g,) in rows:
                g[...] = g * g.dtype.type(coef)
    return total


# The kernels of this family, in the order of the C++ file. deepoptim.functional binds each
# to the compiled function of the same name; a variant names the kernel it runs and the
# parameters it fixes.
KERNELS: Tuple[str, ...] = ('norms', 'dots', 'all_finite', 'scale', 'clamp', 'clip_grad_norm')
VARIANTS: Dict[str, Tuple[str, Dict[str, Any]]] = {}
for _name in KERNELS:  # flags are checked first, as the bindings parse them first
    globals()[_name] = _checks.with_flag_checks(globals()[_name])
if not TYPE_CHECKING:  # the package exports the kernels (type checkers see every public name)
    __all__ = list(KERNELS)
