"""NumPy twin of the cast kernel (``cpp/src/cast.cpp``, conversions in
``cpp/include/deepoptim/lowp.hpp``): the specification of how deepoptim rounds to its
low-precision storage types.

The conversions are written as the same integer operations on the bits as the C++, not
as ``astype``, so that the specification does not depend on which converter NumPy or
ml_dtypes happen to use. For every value that is not a NaN they equal ``astype`` (tested
exhaustively over all float32 inputs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Tuple, Union
from typing import cast as _cast  # this module's cast is the kernel

import ml_dtypes
import numpy as np

from deepoptim.reference import _checks
from deepoptim.reference.dropout import random_draws

#: ml_dtypes' bfloat16 (the type JAX and TensorFlow use) as a NumPy dtype.
BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
_TYPES = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16), BFLOAT16)
_FLT_MAX = float(np.finfo(np.float32).max)

ArrayOrList = Union[np.ndarray, List[np.ndarray]]


# ------------------------------------------------------------------- the conversions
def bits_to_bfloat16(u: np.ndarray) -> np.ndarray:
    """float32 bits (uint32) -> bfloat16 bits (uint16): nearest, ties to even; a NaN
    becomes 0x7fc0 with its sign."""
    u = u.astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    return np.where(nan, ((u >> 16) & 0x8000) | 0x7FC0, rounded).astype(np.uint16)


def bits_to_float16(u: np.ndarray) -> np.ndarray:
    """float32 bits (uint32) -> IEEE float16 bits (uint16): nearest, ties to even; a NaN
    becomes 0x7e00 with its sign."""
    u = u.astype(np.int64)
    sign = (u >> 16) & 0x8000
    a = u & 0x7FFFFFFF
    normal = ((a + 0xFFF + ((a >> 13) & 1)) >> 13) - (112 << 10)
    # Below 2**-14: adding 0.5 in float32 rounds |x| to a multiple of 2**-24 (the float16
    # subnormal step), nearest even, and leaves the float16 bits in the low bits.
    with np.errstate(all="ignore"):
        shifted = (a.astype(np.uint32).view(np.float32) + np.float32(0.5)).view(np.uint32).astype(np.int64)
    sub = shifted - 0x3F000000
    h = np.where(a > 0x7F800000, 0x7E00, np.where(a >= 0x477FF000, 0x7C00, np.where(a >= 0x38800000, normal, sub)))
    return (sign | h).astype(np.uint16)


def round_to_odd(d: np.ndarray) -> np.ndarray:
    """float64 -> float32, truncated toward zero with the last bit set when inexact.
    Rounding that to bfloat16/float16 equals rounding the double directly (no double
    rounding: Boldo & Melquiond 2008, "Emulation of FMA and correctly rounded sums")."""
    with np.errstate(all="ignore"):
        f = d.astype(np.float32)
        a = np.abs(d)
        fa = np.abs(f).astype(np.float64)
    inexact = (a <= _FLT_MAX) & (a != 0.0) & (fa != a)
    u = f.view(np.uint32).copy()
    u = np.where(inexact & (fa > a), u - np.uint32(1), u)
    u = np.where(inexact, u | np.uint32(1), u).astype(np.uint32)
    return u.view(np.float32)


def float16_to_float32(h: np.ndarray) -> np.ndarray:
    """IEEE float16 bits (uint16) -> float32, exactly."""
    h = h.astype(np.uint32)
    sign = (h & 0x8000) << 16
    e, m = (h >> 10) & 0x1F, h & 0x3FF
    special = sign | 0x7F800000 | (m << 13)
    normal = sign | ((e + 112) << 23) | (m << 13)
    sub = sign | (m.astype(np.float32) * np.float32(2.0**-24)).view(np.uint32)
    return np.where(e == 0x1F, special, np.where(e != 0, normal, sub)).astype(np.uint32).view(np.float32)


def _widen(src: np.ndarray) -> np.ndarray:
    """The source as float32 (or float64 for a float64 source), exactly."""
    if src.dtype == BFLOAT16:
        return (src.reshape(-1).view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    if src.dtype == np.float16:
        return float16_to_float32(src.reshape(-1).view(np.uint16))
    return src.reshape(-1)


def _narrow(w: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """w (float32 or float64) rounded once to ``dtype``, as a flat array of it."""
    with np.errstate(all="ignore"):  # NaN and overflow are values here, not errors
        if dtype == np.float64:
            return w.astype(np.float64)
        if dtype == np.float32:
            return w.astype(np.float32)  # from float64: nearest even, overflow to inf
    f = round_to_odd(w) if w.dtype == np.float64 else w
    bits = bits_to_bfloat16 if dtype == BFLOAT16 else bits_to_float16
    return bits(f.view(np.uint32)).view(dtype)


def _cast_type(a: np.ndarray, name: str) -> np.dtype:
    if not (a.dtype.isnative and any(a.dtype == t for t in _TYPES)):
        raise TypeError(f"{name} must have dtype float32, float64, float16 or bfloat16 (ml_dtypes), got {a.dtype}")
    return a.dtype


# ------------------------------------------------------------------------- the kernel
def _parse(src: ArrayOrList, out: ArrayOrList) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """The checks of the binding (cpp/bindings/cast.cpp), in its order: both lists whole."""
    list_form = _checks._is_list_like(src)
    if list_form != _checks._is_list_like(out):
        raise TypeError(f"src and out must both be arrays or both be lists of arrays, got "
                        f"{type(src).__name__} and {type(out).__name__}")
    srcs, outs = (list(src), list(out)) if list_form else ([src], [out])
    if len(srcs) != len(outs):
        raise ValueError(f"out has {len(outs)} arrays but src has {len(srcs)}")

    def name(what: str, i: int) -> str:
        return f"{what}[{i}]" if list_form else what

    spans: List[Tuple[int, int, bool, str]] = []
    types = None
    for i, (s, o) in enumerate(zip(srcs, outs)):
        s, o = _checks.array(s, name("src", i)), _checks.array(o, name("out", i))
        fi, ti = _cast_type(s, name("src", i)), _cast_type(o, name("out", i))
        if types is None:
            types = (fi, ti)
        elif (fi, ti) != types:
            which, want, got = ("src", types[0], fi) if fi != types[0] else ("out", types[1], ti)
            raise TypeError(f"{name(which, i)} must have the dtype of {which}[0] ({want}), got {got}")
        _checks.contiguous(s, name("src", i))
        _checks.contiguous(o, name("out", i))
        _checks.writeable(o, name("out", i))
        if o.shape != s.shape:
            raise ValueError(f"{name('out', i)} must have shape {s.shape} (that of {name('src', i)}), got {o.shape}")
        _checks.add_span(spans, s, False, name("src", i))
        _checks.add_span(spans, o, True, name("out", i))
    _checks.aliasing(spans)
    return _cast("List[np.ndarray]", srcs), _cast("List[np.ndarray]", outs)  # each one checked above


def cast(src: ArrayOrList, out: ArrayOrList) -> None:
    r"""Copies ``src`` into ``out``, rounded to ``out``'s dtype::

        out = round(src)      float32, float64, float16 or bfloat16, either way

    Rounding is to nearest, ties to even (as ``astype``); one rounding even from float64
    to bfloat16 or float16 (no double rounding through float32); a NaN becomes the quiet
    NaN of its sign. A copy when the dtypes are equal. ``src`` and ``out`` are arrays of
    the same shape, or lists of them (one call for all); C-contiguous, ``out`` writeable
    and not overlapping any ``src``.

    Example:
      >>> import numpy as np
      >>> from deepoptim.reference.cast import BFLOAT16
      >>> w = np.array([1.0, 1.00390625, 1.01171875, 3.4e38], np.float32)
      >>> out = np.empty(4, BFLOAT16)
      >>> cast(w, out)    # 1 + 2**-8 is halfway: to even, 1; 1 + 3 * 2**-8: up
      >>> out.astype(np.float32)
      array([1.      , 1.      , 1.015625,      inf], dtype=float32)
    """
    srcs, outs = _parse(src, out)
    for s, o in zip(srcs, outs):
        if s.dtype == o.dtype:  # a copy of the bits
            o.reshape(-1).view(f"u{o.itemsize}")[...] = s.reshape(-1).view(f"u{s.itemsize}")
        else:
            o.reshape(-1)[...] = _narrow(_widen(s), o.dtype)


def cast_stochastic(src: ArrayOrList, out: ArrayOrList, *, seed: int, offset: int = 0) -> None:
    r"""Copies float32 ``src`` into bfloat16 ``out`` with stochastic rounding::

        out = (bits(src) + r_j) >> 16        r_j: the 16-bit draw of element j

    that is, rounded up with probability (the dropped 16 bits) / 2**16, so that
    E[out] = src: an update smaller than half a bfloat16 ulp still moves a weight on
    average, where rounding to nearest would drop it every time (Gupta et al. 2015,
    "Deep Learning with Limited Numerical Precision"). ``j = offset + i`` for element i of
    the concatenation of the arrays, and r_j is the draw of the Philox stream ``seed``
    that dropout uses (:func:`deepoptim.reference.dropout.random_draws`): the result
    depends only on (seed, j), never on threads or on how the arrays are split into
    calls. A NaN becomes the quiet NaN of its sign; a value within half an ulp of the
    largest bfloat16 may round up to inf, as rounding up there means.

    Args:
      src: a float32 array, or a list of them.
      out: a bfloat16 array of the shape of ``src``, or a list of them (one per ``src``).
      seed: an int in [0, 2**64).
      offset: an int in [0, 2**64); offset + (total size) must stay below 2**64.
    """
    seed = _checks.uint64(seed, "seed")
    offset = _checks.uint64(offset, "offset")
    srcs, outs = _parse(src, out)
    if srcs and (srcs[0].dtype != np.float32 or outs[0].dtype != BFLOAT16):
        raise TypeError(f"stochastic rounding casts float32 to bfloat16, got {srcs[0].dtype} to {outs[0].dtype}")
    total = sum(int(s.size) for s in srcs)
    if offset + total >= 2**64:
        raise ValueError("offset must leave room for the call's elements: offset + size must be < 2**64, got "
                         f"offset={offset} and size {total}")
    j = offset
    for s, o in zip(srcs, outs):
        u = s.reshape(-1).view(np.uint32).astype(np.uint64)
        r = random_draws(seed, j, s.size).astype(np.uint64)
        rounded = (u + r) >> 16
        nan = (u & 0x7FFFFFFF) > 0x7F800000
        o.reshape(-1).view(np.uint16)[...] = np.where(nan, ((u >> 16) & 0x8000) | 0x7FC0, rounded).astype(np.uint16)
        j += s.size


# The kernels of this family (deepoptim.functional binds each to the compiled function of
# the same name).
KERNELS: Tuple[str, ...] = ("cast", "cast_stochastic")
VARIANTS: Dict[str, Tuple[str, Dict[str, Any]]] = {}
if not TYPE_CHECKING:  # the package exports the kernels (type checkers see every public name)
    __all__ = list(KERNELS) + ["BFLOAT16"]
