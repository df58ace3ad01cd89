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
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

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
            elif isinstance(orig, Blockwise8):
                orig.codes[...], orig.absmax[...] = quantize(work, orig.signed)
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
            if isinstance(a, Blockwise8):  # only a state slot takes one (operands() checked)
                if pd == np.float64:
                    raise TypeError(f"{labels[t][k]} is a Blockwise8 but {labels[0][0]} has dtype float64; all "
                                    "arrays of one call must share a dtype")
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
                                    f"{_name(pd)}; optimizer state of {_name(pd)} parameters must be float32, "
                                    "bfloat16 or Blockwise8")
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
        a is not None and (isinstance(a, Blockwise8) or a.dtype == BFLOAT16) for row in rows for a in row[2:n])
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
            if isinstance(src, Blockwise8):
                w = src.dequantize()
            else:
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


# ---------------------------------------------------------------- 8-bit blockwise state
# Dettmers, Lewis, Shleifer & Zettlemoyer, "8-bit Optimizers via Block-wise Quantization"
# (ICLR 2022), as bitsandbytes stores optimizer state: blocks of QBLOCK elements, a
# float32 absmax per block, each element an 8-bit index into a 256-entry "dynamic" code
# (create_dynamic_map(signed, max_exponent_bits=7, total_bits=8)): for the decades
# d = 0..6 (scale s_d = 10**(d-6)), the means of linspace(0.1, 1, N_d + 1) times s_d, with
# N_d = 2**d values per sign (signed code) or 2**(d+1) (unsigned code), plus 0 and 1.
# Here each value is computed in float64 and rounded to float32 once.
#
# Quantizing a block x: a = max |x| (NaN if any element is NaN). Where a is positive and
# finite, each element y = x * (1/a) (float32, the reciprocal rounded once) goes to the
# code of the map's own bucket it falls in: its decade d (0.1 s_d <= |y| < s_d), then
# bucket j = floor((|y| - 0.1 s_d) * N_d / (0.9 s_d)) clamped to [0, N_d - 1], all in
# float32 with the constants below; within a decade that is the nearest code. The
# elements with |x| = a go to 1 (the signed code's most negative value where x = -a),
# so the block's largest magnitude is kept exactly; with the signed code |y| < 1e-7 (or
# NaN) goes to 0; the unsigned code sends y <= 0 (or NaN) to 0 and a positive y below
# its smallest code to that code, never to 0 (a second moment rounded to 0 would turn
# Adam's m / (sqrt(v) + eps) into m / eps for an element whose gradient is 1e-4 of its
# block's largest: the failure bitsandbytes' rule has). A block with
# a == 0, NaN or inf stores every element as 0 and a as it is, so that dequantizing
# (code[q] * a, float32) gives 0 for a zero block and NaN for a non-finite one.
QBLOCK = 256
_SCALES = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def _decade_sizes(signed: bool) -> List[int]:
    return [2**d if signed else 2 ** (d + 1) for d in range(7)]


def dynamic_code(signed: bool) -> np.ndarray:
    """The 256 code values (float32, ascending) of the signed or unsigned dynamic map."""
    vals = [0.0, 1.0]
    for s, n in zip(_SCALES, _decade_sizes(signed)):
        for j in range(n):
            v = s * (0.1 + 0.9 * (2 * j + 1) / (2 * n))
            vals += [v, -v] if signed else [v]
    return np.array(sorted(vals), np.float64).astype(np.float32)


def quant_constants(signed: bool) -> Dict[str, Any]:
    """The float32 constants of the bucket computation, per decade: thresholds T = 0.1 s_d
    (|y| >= T[d] is decade d or above; below T[0] = 1e-7 is 0), offsets L = 0.1 s_d,
    factors K = N_d / (0.9 s_d), the largest bucket NMAX = N_d - 1 (as a float), and the
    first position P of the decade among the positive codes."""
    sizes = _decade_sizes(signed)
    f32 = np.float32
    return {
        "T": [f32(0.1 * s) for s in _SCALES],
        "L": [f32(0.1 * s) for s in _SCALES],
        "K": [f32(n / (0.9 * s)) for s, n in zip(_SCALES, sizes)],
        "NMAX": [f32(n - 1) for n in sizes],
        "P": [sum(sizes[:d]) for d in range(7)],
    }


def _code_index(y: np.ndarray, top: np.ndarray, signed: bool) -> np.ndarray:
    """Code indices (int64) of normalized values y (float32), ``top`` where |x| = absmax,
    as the comment above says."""
    c = quant_constants(signed)
    u = np.abs(y)
    L = np.full(y.shape, c["L"][0], np.float32)
    K = np.full(y.shape, c["K"][0], np.float32)
    nmax = np.full(y.shape, c["NMAX"][0], np.float32)
    P = np.zeros(y.shape, np.int64)
    for d in range(1, 7):
        ge = u >= c["T"][d]
        L = np.where(ge, c["L"][d], L)
        K = np.where(ge, c["K"][d], K)
        nmax = np.where(ge, c["NMAX"][d], nmax)
        P = np.where(ge, c["P"][d], P)
    with np.errstate(invalid="ignore"):
        f = ((u - L) * K).astype(np.float32)
        f = np.where(f > np.float32(0), f, np.float32(0))
        f = np.where(f < nmax, f, nmax)
    pos = P + f.astype(np.int64)
    small = ~(u >= c["T"][0])
    one = top
    neg = y < 0
    if signed:
        idx = np.where(neg, 126 - pos, 128 + pos)
        idx = np.where(one, np.where(neg, 0, 255), idx)
        return np.where(small, 127, idx)
    # A positive value below the smallest code keeps that code: a second moment that
    # rounded to 0 would turn Adam's m / (sqrt(v) + eps) into m / eps.
    idx = np.where(one, 255, np.where(small, 1, 1 + pos))
    return np.where(neg | ~(y > 0), 0, idx)


def quantize(x: np.ndarray, signed: bool) -> Tuple[np.ndarray, np.ndarray]:
    """(codes uint8 of x's shape, absmax float32 per block of QBLOCK) for float32 x."""
    flat = np.ascontiguousarray(x, np.float32).reshape(-1)
    n = flat.size
    nb = -(-n // QBLOCK)
    padded = np.zeros(nb * QBLOCK, np.float32)
    padded[:n] = flat
    blocks = padded.reshape(nb, QBLOCK)
    absmax = np.max(np.abs(blocks), axis=1) if nb else np.zeros(0, np.float32)  # NaN propagates
    ok = (absmax > 0) & np.isfinite(absmax)
    with np.errstate(all="ignore"):
        inv = (np.float32(1) / np.where(ok, absmax, np.float32(1))).astype(np.float32)
        y = (blocks * inv[:, None]).astype(np.float32)
    top = np.abs(blocks) >= absmax[:, None]
    idx = _code_index(y, top, signed)
    idx = np.where(ok[:, None], idx, 127 if signed else 0)
    return idx.reshape(-1)[:n].astype(np.uint8).reshape(x.shape), absmax.astype(np.float32)


def dequantize(codes: np.ndarray, absmax: np.ndarray, signed: bool) -> np.ndarray:
    """float32 values code[q] * absmax of their block."""
    code = dynamic_code(signed)
    q = codes.reshape(-1)
    a = np.repeat(absmax, QBLOCK)[: q.size] if q.size else np.zeros(0, np.float32)
    with np.errstate(invalid="ignore"):
        out: np.ndarray = (code[q] * a).astype(np.float32).reshape(codes.shape)
    return out


class Blockwise8:
    """An optimizer state kept in 8 bits: ``codes`` (uint8, the parameter's shape), one
    float32 ``absmax`` per block of :data:`QBLOCK` elements, and which code (``signed``
    for a first moment or momentum, unsigned for a quantity that is never negative).
    Passed where an optimizer kernel takes a state array; the kernel dequantizes,
    updates and requantizes it in its one pass over memory."""

    __slots__ = ("codes", "absmax", "signed")

    def __init__(self, codes: np.ndarray, absmax: np.ndarray, signed: bool) -> None:
        self.codes = codes
        self.absmax = absmax
        self.signed = signed

    @classmethod
    def from_float(cls, x: np.ndarray, signed: bool) -> "Blockwise8":
        codes, absmax = quantize(x, signed)
        return cls(codes, absmax, signed)

    def dequantize(self) -> np.ndarray:
        return dequantize(self.codes, self.absmax, self.signed)

    def __repr__(self) -> str:
        return f"Blockwise8(shape={self.codes.shape}, blocks={self.absmax.size}, signed={self.signed})"


def check_blockwise8(q: Blockwise8, param: np.ndarray, written: bool, label: str) -> None:
    """The checks the bindings make on a Blockwise8 state of ``param`` (parse_blockwise8)."""
    from deepoptim.reference import _checks

    if not isinstance(q.codes, np.ndarray) or not isinstance(q.absmax, np.ndarray):
        raise TypeError(f"{label} (Blockwise8) must hold numpy arrays codes and absmax")
    _checks.not_masked(q.codes, f"{label}.codes")
    _checks.not_masked(q.absmax, f"{label}.absmax")
    if q.codes.dtype != np.uint8:
        raise TypeError(f"{label}.codes must have dtype uint8, got {q.codes.dtype}")
    if q.absmax.dtype != np.float32 or not q.absmax.dtype.isnative:
        raise TypeError(f"{label}.absmax must have dtype float32, got {q.absmax.dtype}")
    if not isinstance(q.signed, bool):
        raise TypeError(f"{label}.signed must be a bool")
    if q.codes.shape != param.shape:
        raise ValueError(f"{label}.codes has shape {q.codes.shape} but the parameter has shape {param.shape}")
    nb = -(-param.size // QBLOCK)
    if q.absmax.shape != (nb,):
        raise ValueError(f"{label}.absmax must have shape ({nb},) (one per block of {QBLOCK}), got {q.absmax.shape}")
    _checks.contiguous(q.codes, f"{label}.codes")
    _checks.contiguous(q.absmax, f"{label}.absmax")
    if written:
        _checks.writeable(q.codes, f"{label}.codes")
        _checks.writeable(q.absmax, f"{label}.absmax")
