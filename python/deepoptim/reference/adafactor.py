"""NumPy twin of the Adafactor kernel (``cpp/src/adafactor.cpp``): the specification of
``deepoptim._core.adafactor``, to the bit.

Adafactor keeps, for a parameter of two or more dimensions, only the row and column
means of the squared gradient (a rank-1 estimate of Adam's second moment), so its state
is O(R + C) per matrix instead of O(R*C). Every sum is in float64 in a fixed order, so
the result does not depend on the thread count (or the SIMD width):

- a row of ``g*g`` (C entries, contiguous) and the R entries of ``row_var`` of a matrix:
  in 8 lanes (entry ``c`` to lane ``c % 8``, in index order), the lanes combined as
  ``((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))`` (:func:`lane_sums`);
- a column of ``g*g`` (R entries, one per row): in index order, row after row
  (:func:`column_sums`), which the kernel runs as a vector add across the columns;
- ``sum(p*p)`` and ``sum(u*u)`` over the whole tensor: the kernels' blocked order
  (:func:`deepoptim.reference._parallel.blocked_sum`).

torch 2.13's ``torch.optim.Adafactor`` computes the same quantities with its own
summation orders (norms of rows and columns, then squared), so its trajectories agree
with this one to rounding, not to the bit (tests/test_optim_adafactor.py).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from deepoptim.reference import _checks
from deepoptim.reference._parallel import LANES, blocked_sum
from deepoptim.reference.muon import _lerp  # torch's lerp_ with a scalar weight, in the arrays' dtype

ArrayOrList = Union[np.ndarray, Sequence[np.ndarray]]
OptArrays = Union[None, np.ndarray, Sequence[Optional[np.ndarray]]]


def lane_sums(terms: np.ndarray) -> np.ndarray:
    """Sums over the last axis of the float64 ``terms`` in the kernels' lane order: entry
    ``c`` to lane ``c % 8`` in index order, the lanes combined pairwise as in
    :func:`deepoptim.reference._parallel.blocked_sum` (one block, however long the axis)."""
    n = terms.shape[-1]
    k = -(-n // LANES)
    padded = np.zeros(terms.shape[:-1] + (k * LANES,), np.float64)  # + 0.0 changes no lane
    padded[..., :n] = terms
    # numpy reduces the (k, 8) rows of each lane one after the other, in order
    lanes = np.add.reduce(padded.reshape(terms.shape[:-1] + (k, LANES)), axis=-2)
    out: np.ndarray = ((lanes[..., 0] + lanes[..., 1]) + (lanes[..., 2] + lanes[..., 3])) + (
        (lanes[..., 4] + lanes[..., 5]) + (lanes[..., 6] + lanes[..., 7]))
    return out


def column_sums(terms: np.ndarray) -> np.ndarray:
    """Sums over the second-to-last axis of the float64 ``terms`` (..., R, C), each
    column's R entries added in index order."""
    acc = np.zeros(terms.shape[:-2] + terms.shape[-1:], np.float64)
    for r in range(terms.shape[-2]):
        acc = acc + terms[..., r, :]
    return acc


def _entry(x: Any, t: int, list_form: bool) -> Any:
    return x[t] if list_form else x


def _name(arg: str, t: int, list_form: bool) -> str:
    return f"{arg}[{t}]" if list_form else arg


def _state_shapes(shape: Tuple[int, ...]) -> Dict[str, Optional[Tuple[int, ...]]]:
    """The state a parameter of this shape keeps (None: must be None)."""
    if len(shape) >= 2:
        return {"row_vars": shape[:-1] + (1,), "col_vars": shape[:-2] + (1, shape[-1]), "variances": None}
    return {"row_vars": None, "col_vars": None, "variances": shape}


def _check_tensors(params: Any, grads: Any, row_vars: Any, col_vars: Any, variances: Any) -> List[Tuple[Any, ...]]:
    """Every array argument, as the binding checks them (cpp/bindings/adafactor.cpp):
    per tensor, in the order params, grads, row_vars, col_vars, variances; then aliasing."""
    list_form = isinstance(params, (list, tuple))
    args = {"grads": grads, "row_vars": row_vars, "col_vars": col_vars, "variances": variances}
    n = len(params) if list_form else 1
    for name, x in args.items():
        if list_form != isinstance(x, (list, tuple)):
            raise TypeError(f"{name} must be a list or tuple like params (one entry per tensor)" if list_form
                            else f"{name} must be an array or None like params, not a list")
        if list_form and len(x) != n:
            raise ValueError(f"{name} has {len(x)} entries but params has {n}")
    rows: List[Tuple[Any, ...]] = []
    spans: List[Tuple[int, int, bool, str]] = []
    for t in range(n):
        pn = _name("params", t, list_form)
        p = _checks.array(_entry(params, t, list_form), pn)
        dt = _checks.float_dtype(p, pn)
        g = _checks.array(_entry(grads, t, list_form), _name("grads", t, list_form))
        want: Dict[str, Optional[Tuple[int, ...]]] = {"grads": p.shape, **_state_shapes(p.shape)}
        row: List[Optional[np.ndarray]] = [p]
        for arg, shape in want.items():
            an = _name(arg, t, list_form)
            a = g if arg == "grads" else _entry(args[arg], t, list_form)
            if shape is None:
                if a is not None:
                    raise ValueError(f"{an} must be None for a parameter of shape {p.shape} (its second moment is "
                                     + ("factored into row_vars and col_vars)" if p.ndim >= 2 else
                                        "kept whole in variances)"))
                row.append(None)
                continue
            a = _checks.array(a, an)
            if a.dtype != dt:
                raise TypeError(f"{an} must have the dtype of {pn} ({dt}), got {a.dtype}")
            if a.shape != shape:
                raise ValueError(f"{an} must have shape {shape} (from {pn}'s shape {p.shape}), got {a.shape}")
            row.append(a)
        for arg, a in zip(("params", "grads", "row_vars", "col_vars", "variances"), row):
            if a is None:
                continue
            an = _name(arg, t, list_form)
            _checks.contiguous(a, an)
            if arg != "grads":
                _checks.writeable(a, an)
            _checks.add_span(spans, a, arg != "grads", an)
        rows.append(tuple(row))
    _checks.aliasing(spans)
    return rows


def adafactor(
    params: ArrayOrList,
    grads: ArrayOrList,
    row_vars: OptArrays,
    col_vars: OptArrays,
    variances: OptArrays,
    *,
    step: int,
    lr: float = 1e-2,
    beta2_decay: float = -0.8,
    eps: Tuple[Optional[float], float] = (None, 1e-3),
    d: float = 1.0,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> None:
    r"""Adafactor (Shazeer & Stern, 2018, "Adafactor: Adaptive Learning Rates with
    Sublinear Memory Cost"), in place, as torch 2.13's ``torch.optim.Adafactor``.

    A parameter of two or more dimensions, seen as (B, R, C) (its last two axes
    factored), keeps a row factor ``row_var`` of shape (..., R, 1) and a column factor
    ``col_var`` of shape (..., 1, C), and None for ``variance``; a vector (or 0-d
    parameter) keeps ``variance`` of its own shape and None for the factors. With
    :math:`g \leftarrow -g` when ``maximize``, :math:`t` = ``step``,
    :math:`w = t^{\tau}` (``beta2_decay`` :math:`\tau`), :math:`\epsilon_1` the
    dtype's machine epsilon when ``eps[0]`` is None, :math:`n` the parameter's size::

        rho   = min(lr, 1 / t**0.5)
        alpha = max(eps2, sqrt(sum(p*p)) / n**0.5) * rho           (p before the decay)
        p     = p * (1 - lr * weight_decay)
        matrices: row_var = lerp(row_var, sum_c(g*g) / C, w)
                  col_var = lerp(col_var, sum_r(g*g) / R, w)
                  V = row_var * col_var / max(sum_r(row_var) / R, eps1)
        vectors:  variance = lerp(variance, g*g, w);  V = variance
        u     = (1 / sqrt(max(V, eps1*eps1))) * g
        p     = p + (-alpha / max(1, sqrt(sum(u*u)) / (n**0.5 * d))) * u

    Scalars (``rho``, ``alpha``, the sums and the step's factor) are in float64, each
    sum in the fixed order of this module's docstring; each row, column and row-factor
    mean is rounded once to the parameter's dtype after its division. Arrays are
    combined in their dtype. ``lerp(a, b, w)`` is torch's: ``a + w*(b - a)`` for
    ``|w| < 0.5``, else ``b - (b - a)*(1 - w)``, with ``w`` rounded to the dtype. A
    parameter with no elements is left alone (its state too).

    Example:
      >>> import numpy as np
      >>> from deepoptim.reference import adafactor
      >>> p = np.ones((2, 3), np.float32)
      >>> rv, cv = np.zeros((2, 1), np.float32), np.zeros((1, 3), np.float32)
      >>> adafactor(p, np.ones((2, 3), np.float32), rv, cv, None, step=1)
      >>> rv.ravel(), cv.ravel()
      (array([1., 1.], dtype=float32), array([1., 1., 1.], dtype=float32))
      >>> p
      array([[0.99, 0.99, 0.99],
             [0.99, 0.99, 0.99]], dtype=float32)
    """
    step = _checks.step(step)
    lr = _checks.real("lr", lr)
    beta2_decay = _checks.real("beta2_decay", beta2_decay)
    if not isinstance(eps, (tuple, list)) or len(eps) != 2:
        raise TypeError(f"eps must be a pair (eps1 or None, eps2), got {eps!r}")
    eps1 = None if eps[0] is None else _checks.real("eps[0]", eps[0])
    eps2 = _checks.real("eps[1]", eps[1])
    d = _checks.real("d", d)
    weight_decay = _checks.real("weight_decay", weight_decay)
    _checks.finite_ge("lr", lr, 0.0)
    if not (beta2_decay <= 0.0 and math.isfinite(beta2_decay)):
        raise ValueError(f"beta2_decay must be a finite number <= 0, got {beta2_decay!r}")
    if eps1 is not None:
        _checks.finite_ge("eps[0]", eps1, 0.0)
    _checks.finite_ge("eps[1]", eps2, 0.0)
    _checks.finite_ge("d", d, 1.0)
    _checks.finite_ge("weight_decay", weight_decay, 0.0)
    rows = _check_tensors(params, grads, row_vars, col_vars, variances)

    t_ = float(step)
    w = t_**beta2_decay
    rho = min(lr, 1 / (t_**0.5))
    decay = 1.0 - lr * weight_decay
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        for p, g, rv, cv, v in rows:
            n = p.size
            if n == 0:
                continue
            T = p.dtype.type
            e1 = float(np.finfo(p.dtype).eps) if eps1 is None else eps1
            g = -g if maximize else g
            alpha = max(eps2, math.sqrt(blocked_sum(p.astype(np.float64) ** 2)) / (n**0.5)) * rho
            if p.ndim >= 2:
                R, C = p.shape[-2], p.shape[-1]
                sq = g.astype(np.float64) ** 2
                rv[...] = _lerp(rv, (lane_sums(sq) / C).astype(T)[..., None], w)
                cv[...] = _lerp(cv, (column_sums(sq) / R).astype(T)[..., None, :], w)
                rmean = (lane_sums(rv[..., 0].astype(np.float64)) / R).astype(T)[..., None, None]
                var = (rv * cv) / np.maximum(rmean, T(e1))
            else:
                v[...] = _lerp(v, g * g, w)
                var = v
            u = (T(1) / np.sqrt(np.maximum(var, T(e1 * e1)))) * g
            denom = max(1.0, math.sqrt(blocked_sum(u.astype(np.float64) ** 2)) / ((n**0.5) * d))
            if weight_decay != 0.0:
                p[...] = p * T(decay)
            p[...] = p + T(-alpha / denom) * u


# The kernels of this family (deepoptim.functional binds each to the compiled function of
# the same name).
KERNELS = ("adafactor",)
VARIANTS: Dict[str, Tuple[str, Dict[str, Any]]] = {}
for _name_ in KERNELS:  # flags are checked first, as the bindings parse them first
    globals()[_name_] = _checks.with_flag_checks(globals()[_name_])
if not TYPE_CHECKING:  # the package exports the kernels (type checkers see every public name)
    __all__ = list(KERNELS)
