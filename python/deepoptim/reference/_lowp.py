"""Optimizer steps on low-precision storage, the specification.

A step whose parameters are bfloat16 or float16, or whose state is bfloat16, is the
float32 step on widened copies followed by rounding (``cpp/include/deepoptim/mixed.hpp``
computes exactly this, chunk by chunk)::

    p32 = master if master_params else widen(p);  g32 = widen(g);  s32 = widen(s)
    <the float32 step on p32, g32, s32>
    s = round_nearest_even(s32)
    master = p32;  p = round_nearest_even(p32)          (master_params)
    p = round_stochastic(p32, draws j)                   (stochastic_rounding=(seed, step))
    p = round_nearest_even(p32)                          (otherwise)

Widening is exact; the roundings are those of :mod:`deepoptim.reference.cast`. For
stochastic rounding, element ``j`` (its index in the concatenation of the call's
parameters) uses the 16-bit draw ``j`` of the Philox stream (``seed``, stream ``step``)
(:func:`deepoptim.reference.dropout.random_draws`): the result depends on (seed, step,
j) only, never on threads, so a run resumed from a checkpoint rounds as it would have.

:func:`lowp_step` gives an optimizer twin the keyword arguments ``master_params`` and
``stochastic_rounding``; while it runs, :func:`deepoptim.reference._checks.operands`
checks the original arrays (with the low-precision dtype rules below) and hands the twin
float32 working copies, which are rounded back only once the twin has returned: an error
leaves every array untouched.

Dtype rules (the bindings' ``finish_lowp``): params float32, float64, bfloat16 or
float16, one dtype per call; grads the params' dtype; state float32 or bfloat16
(float64 for float64 params); master_params float32, only for 16-bit params;
stochastic_rounding only for bfloat16 params without master_params.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from typing import Any, Callable, List, Optional, Sequence, Tuple, TypeVar

import numpy as np

from deepoptim.reference.cast import BFLOAT16, _narrow, _widen
from deepoptim.reference.dropout import random_draws

_F = TypeVar("_F", bound=Callable[..., Any])
_STORAGE = (np.dtype(np.float32), np.dtype(np.float64), BFLOAT16, np.dtype(np.float16))
_16BIT = (BFLOAT16, np.dtype(np.float16))


class _Step:
    """The low-precision options of one step and, once its arrays are checked, the
    float32 working copies to round back."""

    def __init__(self, master_params: Any, stochastic_rounding: Any) -> None:
        self.master_params = master_params
        self.stochastic_rounding = stochastic_rounding
        self.writes: List[Tuple[np.ndarray, np.ndarray, str]] = []  # (original, copy, how)
        self.seed = self.stream = 0
        # The checked originals (spec and rows, master_params last if given), for checks
        # that come after operands() (the per-tensor scalar states' aliasing).
        self.checked: Optional[Tuple[List[Any], List[List[Optional[np.ndarray]]]]] = None

    def commit(self) -> None:
        j = 0
        for orig, work, how in self.writes:
            if how == "master":
                master, p = orig
                master[...] = work
                p.reshape(-1)[...] = _narrow(work.reshape(-1), p.dtype)
            elif how == "stochastic":
                u = work.reshape(-1).view(np.uint32).astype(np.uint64)
                r = random_draws(self.seed, j, u.size, self.stream).astype(np.uint64)
                nan = (u & 0x7FFFFFFF) > 0x7F800000
                bits = np.where(nan, ((u >> 16) & 0x8000) | 0x7FC0, (u + r) >> 16).astype(np.uint16)
                orig.reshape(-1).view(np.uint16)[...] = bits
            elif orig.dtype in _16BIT:
                orig.reshape(-1)[...] = _narrow(work.reshape(-1), orig.dtype)
            else:
                orig[...] = work
            if how != "state":
                j += work.size


_CURRENT: contextvars.ContextVar[Optional[_Step]] = contextvars.ContextVar("deepoptim_lowp_step", default=None)


def current() -> Optional[_Step]:
    """The low-precision step being checked, inside a :func:`lowp_step` twin, else None."""
    return _CURRENT.get()


def storage_dtype(a: np.ndarray, label: str) -> np.dtype:
    """float32, float64, bfloat16 or float16 (native order), else TypeError naming it."""
    for dt in _STORAGE:
        if a.dtype == dt:
            return dt
    raise TypeError(f"{label} must have dtype float32, float64, bfloat16 (ml_dtypes) or float16, got {a.dtype}")


def _name(dt: np.dtype) -> str:
    return "bfloat16" if dt == BFLOAT16 else str(dt)


def check_dtypes(step: _Step, spec: Sequence[Tuple[str, bool, bool, Optional[str]]],
                 rows: List[List[Optional[np.ndarray]]], labels: List[List[str]], has_master: bool) -> None:
    """The dtype rules of the module docstring, in the bindings' order."""
    n = len(spec) - (1 if has_master else 0)
    pd = rows[0][0].dtype if rows else np.dtype(np.float32)  # type: ignore[union-attr]
    for t, row in enumerate(rows):
        for k in range(n):
            a = row[k]
            if a is None:
                continue
            dt = a.dtype
            if k == 0 and dt != pd:
                raise TypeError(f"{labels[t][k]} has dtype {_name(dt)} but {labels[0][0]} has dtype {_name(pd)}; "
                                "all arrays of one call must share a dtype")
            if k == 1 and dt != pd:
                raise TypeError(f"{labels[t][k]} has dtype {_name(dt)} but {labels[t][0]} has dtype {_name(pd)}; "
                                "all arrays of one call must share a dtype (gradients have their parameters' dtype)")
            if k >= 2:
                if pd == np.float64 and dt != np.float64:
                    raise TypeError(f"{labels[t][k]} has dtype {_name(dt)} but {labels[0][0]} has dtype float64; "
                                    "all arrays of one call must share a dtype")
                if pd != np.float64 and dt not in (np.dtype(np.float32), BFLOAT16):
                    raise TypeError(f"{labels[t][k]} has dtype {_name(dt)} but {labels[0][0]} has dtype "
                                    f"{_name(pd)}; optimizer state of {_name(pd)} parameters must be float32 "
                                    "or bfloat16")
        if has_master and row[n].dtype != np.float32:  # type: ignore[union-attr]
            raise TypeError(f"{labels[t][n]} must have dtype float32, got {_name(row[n].dtype)}")  # type: ignore[union-attr]
    if has_master and rows and pd not in _16BIT:
        raise ValueError(f"master_params are float32 copies of bfloat16 or float16 params, but {labels[0][0]} "
                         f"has dtype {_name(pd)}")
    sr = step.stochastic_rounding
    if sr is not None:
        from deepoptim.reference import _checks

        if not (isinstance(sr, (list, tuple)) and len(sr) == 2):
            raise TypeError(f"stochastic_rounding must be None or a pair (seed, step) of ints, got {sr!r}")
        step.seed = _checks.uint64(sr[0], "stochastic_rounding seed")
        step.stream = _checks.uint64(sr[1], "stochastic_rounding step")
        if has_master:
            raise ValueError("stochastic_rounding and master_params exclude each other: with float32 master "
                             "weights the parameters are rounded to nearest")
        if rows and pd != BFLOAT16:
            raise ValueError(f"stochastic_rounding rounds bfloat16 parameters, but {labels[0][0]} has dtype "
                             f"{_name(pd)}")


def working_rows(step: _Step, spec: Sequence[Tuple[str, bool, bool, Optional[str]]],
                 rows: List[List[Optional[np.ndarray]]], has_master: bool) -> List[List[Optional[np.ndarray]]]:
    """The rows the twin computes on: the originals when every array is float32 or
    float64 and no option is set; else float32 copies, registered for :meth:`_Step.commit`."""
    step.checked = (list(spec), rows)
    n = len(spec) - (1 if has_master else 0)
    pd = rows[0][0].dtype if rows else np.dtype(np.float32)  # type: ignore[union-attr]
    mixed = pd in _16BIT or step.stochastic_rounding is not None or has_master or any(
        a is not None and a.dtype == BFLOAT16 for row in rows for a in row[2:n])
    if not mixed:
        return [row[:n] for row in rows]
    out: List[List[Optional[np.ndarray]]] = []
    for row in rows:
        work: List[Optional[np.ndarray]] = []
        for k in range(n):
            a = row[k]
            if a is None:
                work.append(None)
                continue
            src = row[n] if k == 0 and has_master else a
            assert src is not None  # the master of a parameter that has one (checked)
            w = _widen(src).astype(np.float32, copy=True).reshape(a.shape)
            work.append(w)
            if k == 0:
                if has_master:
                    step.writes.append(((row[n], a), w, "master"))  # type: ignore[arg-type]
                elif step.stochastic_rounding is not None:
                    step.writes.append((a, w, "stochastic"))
                else:
                    step.writes.append((a, w, "param"))
            elif spec[k][1]:
                step.writes.append((a, w, "state"))
        out.append(work)
    return out


def lowp_step(fn: _F) -> _F:
    """Makes an optimizer twin take low-precision storage: its keyword arguments
    ``master_params`` (None, or float32 copies of 16-bit params, updated in their place)
    and ``stochastic_rounding`` (None, or ``(seed, step)``: round bfloat16 params
    stochastically), which it declares with default None and never reads itself, are
    handled here; see the module docstring."""
    params = inspect.signature(fn).parameters
    if "master_params" not in params or "stochastic_rounding" not in params:
        raise TypeError(f"{fn.__name__} must declare master_params and stochastic_rounding (keyword-only, "
                        "default None): the signature type checkers and the documentation read")

    @functools.wraps(fn)
    def step(*args: Any, master_params: Any = None, stochastic_rounding: Any = None, **kwargs: Any) -> Any:
        if master_params is None and stochastic_rounding is None and current() is not None:
            return fn(*args, **kwargs)  # a variant's twin calling its base (adamw -> adam)
        call = _Step(master_params, stochastic_rounding)
        token = _CURRENT.set(call)
        try:
            result = fn(*args, **kwargs)
        finally:
            _CURRENT.reset(token)
        call.commit()
        return result

    return step  # type: ignore[return-value]
