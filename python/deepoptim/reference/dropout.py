"""NumPy twins of the dropout kernels and their generator: the specification of
``cpp/src/dropout.cpp``. Masks match the kernel's bit for bit.

Element ``j = offset + i`` of a call draws 16 bits: half ``j % 2`` (low half first) of
word ``(j % 8) // 2`` of
``philox4x32_10(counter=(lo32(j // 8), hi32(j // 8), 0, 0), key=(lo32(seed), hi32(seed)))``,
and is kept iff the draw is ``>= t = keep_threshold(p)``, the nearest multiple of
``2**-16`` to ``p`` (times ``2**16``). One Philox call serves eight elements (the
generator is what dropout costs). The drop rate realized is ``t / 2**16``: ``p < 2**-17``
drops nothing, and ``p < 1`` always keeps at least ``2**-16``; kept values are scaled by
``2**16 / (2**16 - t)``, the inverse of the keep rate realized, so dropout is exactly
unbiased (``E[y] = x``) for every p. A mask depends only on (seed, offset + index);
advance ``offset`` by the number of elements to get a fresh mask for the next call.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union, cast

import numpy as np

from deepoptim.reference import _checks

_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = 0x9E3779B9, 0xBB67AE85
_LO = np.uint64(0xFFFFFFFF)
_32 = np.uint64(32)


def philox4x32_10(counter: Sequence[Union[int, np.ndarray]], key: Sequence[int]) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Philox4x32-10 (Salmon, Moraes, Dror & Shaw, "Parallel random numbers: as easy as
    1, 2, 3", SC 2011), vectorized over counters.

    Args:
      counter: four words (ints or uint32 arrays of one shape).
      key: two ints.
    Returns:
      The four output words as uint32 arrays.

    Example:
      >>> [hex(int(w)) for w in philox4x32_10((0, 0, 0, 0), (0, 0))]
      ['0x6627e8d5', '0xe169c58d', '0xbc57ac4c', '0x9b00dbd8']
    """
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint64) for c in counter)
    k0, k1 = int(key[0]) & 0xFFFFFFFF, int(key[1]) & 0xFFFFFFFF
    for r in range(10):
        if r:
            k0, k1 = (k0 + _W0) & 0xFFFFFFFF, (k1 + _W1) & 0xFFFFFFFF
        p0, p1 = _M0 * c0, _M1 * c2  # < 2**64: no overflow
        c0, c1, c2, c3 = (p1 >> _32) ^ c1 ^ np.uint64(k0), p1 & _LO, (p0 >> _32) ^ c3 ^ np.uint64(k1), p0 & _LO
    return tuple(c.astype(np.uint32) for c in (c0, c1, c2, c3))  # type: ignore[return-value]


def keep_threshold(p: float) -> int:
    """``round(p * 2**16)`` (halves up), at most ``2**16 - 1`` for ``p < 1``, and ``2**16``
    for ``p == 1``: an element is kept iff its draw is >= this."""
    if p >= 1.0:
        return 2**16
    return min(max(math.floor(p * 65536.0 + 0.5), 0), 2**16 - 1)


def random_draws(seed: int, offset: int, n: int, stream: int = 0) -> np.ndarray:
    """The 16-bit draws (uint16) of elements ``offset .. offset + n - 1`` of the stream
    (``seed``, ``stream``): Philox4x32-10 with key ``seed`` and counter
    ``(lo32(j/8), hi32(j/8), lo32(stream), hi32(stream))`` (dropout uses stream 0)."""
    if n == 0:
        return np.zeros(0, np.uint16)
    g0, g1 = offset >> 3, (offset + n + 7) >> 3
    g = np.arange(g1 - g0, dtype=np.uint64) + np.uint64(g0)
    words = np.stack(philox4x32_10((g & _LO, g >> _32, stream & 0xFFFFFFFF, stream >> 32), (seed & 0xFFFFFFFF, seed >> 32)), axis=1)
    lo = (words & 0xFFFF).astype(np.uint16)
    hi = (words >> 16).astype(np.uint16)
    draws = np.stack([lo, hi], axis=2).reshape(-1)  # word 0 low, word 0 high, word 1 low, ...
    start = offset - 8 * g0
    return draws[start : start + n]


def _keep(seed: int, offset: int, n: int, p: float) -> np.ndarray:
    return random_draws(seed, offset, n).astype(np.uint32) >= np.uint32(keep_threshold(p))


def _scale(p: float) -> float:
    # 1 / the keep rate the draws realize (not 1 / (1 - p)): E[y] = x exactly.
    t = keep_threshold(p)
    return 65536.0 / (65536 - t) if t < 2**16 else 0.0


def _scaled(x: np.ndarray, keep: np.ndarray, p: float) -> np.ndarray:
    # Only kept elements are multiplied: a dropped inf or NaN gives 0, silently.
    y: np.ndarray = np.multiply(x, _scale(p), out=np.zeros_like(x), where=keep)
    return y


def _output(out: Optional[np.ndarray], x: np.ndarray, xname: str) -> Optional[np.ndarray]:
    # Same checks as the C++ binding: x's shape and dtype, contiguous, writeable, and
    # either x itself (elementwise in place is safe) or not overlapping it at all.
    if out is None:
        return None
    _checks.array(out, "out")
    if out.dtype != x.dtype:
        raise TypeError(f"out must have the dtype of {xname} ({x.dtype}), got {out.dtype}")
    if out.shape != x.shape:
        raise ValueError(f"out must have shape {x.shape} ({xname}'s shape), got {out.shape}")
    _checks.contiguous(out, "out")
    _checks.writeable(out, "out")
    if out.__array_interface__["data"][0] != x.__array_interface__["data"][0]:
        spans: List[Tuple[int, int, bool, str]] = []
        _checks.add_span(spans, x, False, xname)
        _checks.add_span(spans, out, True, "out")
        _checks.aliasing(spans)
    return out


def _check_offset(offset: int, n: int) -> None:
    if offset + n >= 2**64:
        raise ValueError(
            "offset must leave room for the call's elements: offset + size must be < 2**64, got "
            f"offset={offset} and size {n}"
        )


def _check_p(p: float) -> float:
    p = _checks.real("p", p)
    _checks.in_range("p", p, 0.0, 1.0, True)
    return p


def dropout(
    x: np.ndarray,
    p: float = 0.5,
    training: bool = True,
    seed: int = 0,
    offset: int = 0,
    return_mask: bool = True,
    out: Optional[np.ndarray] = None,
) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    r"""Inverted dropout (Srivastava et al., 2014)::

        y = x * keep / q,   keep ~ Bernoulli(q) from (seed, offset + index),
        q = 1 - round(p * 2**16) / 2**16   (the keep rate 16-bit draws realize)

    so ``E[y] = x`` exactly; ``q`` differs from ``1 - p`` by at most ``2**-17``.

    ``p == 0`` or ``training=False`` is the identity: x itself is returned (no copy) and
    the mask is None. ``p == 1`` gives zeros. A dropped element is 0 even where x is NaN
    or inf (torch's multiply would give NaN there).

    Args:
      x: float32 or float64, C-contiguous.
      p: drop probability in [0, 1].
      seed: an int in [0, 2**64), the stream the mask is drawn from.
      offset: an int in [0, 2**64); a call covers the elements
        ``offset .. offset + x.size - 1`` of the stream ``seed``.
      return_mask: False skips building the mask (use ``dropout_backward`` with the seed).
      out: where to write y (x's shape and dtype; may be x itself for in-place dropout).
        Reusing a buffer avoids the page faults of a fresh allocation on every call.

    Returns:
      ``(y, mask)``: mask is the keep pattern packed 8 elements per byte, little-endian
      within a byte (``numpy.packbits(keep.ravel(), bitorder="little")``), or None.

    Example:
      >>> import numpy as np
      >>> y, mask = dropout(np.ones(8, np.float32), p=0.5, seed=1)
      >>> y
      array([0., 2., 0., 2., 0., 2., 2., 2.], dtype=float32)
      >>> np.unpackbits(mask, bitorder="little")
      array([0, 1, 0, 1, 0, 1, 1, 1], dtype=uint8)
    """
    _checks.array(x, "x")
    _checks.float_dtype(x, "x")
    _checks.contiguous(x, "x")
    p = _check_p(p)
    seed = _checks.uint64(seed, "seed")
    offset = _checks.uint64(offset, "offset")
    _check_offset(offset, x.size)
    out = _output(out, x, "x")
    if not training or p == 0.0:
        if out is None:
            return x, None
        out[...] = x
        return out, None
    keep = _keep(seed, offset, x.size, p).reshape(x.shape)
    y = _scaled(x, keep, p)
    mask = np.packbits(keep.reshape(-1), bitorder="little") if return_mask else None
    if out is None:
        return y, mask
    out[...] = y
    return out, mask


def dropout_backward(
    dy: np.ndarray,
    mask: Optional[np.ndarray],
    p: float = 0.5,
    seed: Optional[int] = None,
    offset: int = 0,
    out: Optional[np.ndarray] = None,
) -> np.ndarray:
    r"""Gradient of :func:`dropout`: ``dx = dy * keep / q`` (q as in :func:`dropout`).

    The keep pattern comes from ``mask`` (as returned by the forward) or, with
    ``mask=None``, is regenerated from ``(seed, offset)``: then no mask need be stored.
    With ``p == 0`` dy itself is returned (or copied into ``out``). ``out``: where to write
    dx, as in :func:`dropout`.
    """
    _checks.array(dy, "dy")
    _checks.float_dtype(dy, "dy")
    _checks.contiguous(dy, "dy")
    p = _check_p(p)
    offset = _checks.uint64(offset, "offset")
    _check_offset(offset, dy.size)
    n = dy.size
    keep: Optional[np.ndarray]
    if mask is not None:
        _checks.array(mask, "mask")
        if mask.dtype != np.uint8:
            raise TypeError(f"mask must be a uint8 array (the packed mask from dropout), got {mask.dtype}")
        if mask.shape != ((n + 7) // 8,):
            raise ValueError(f"mask must have shape ({(n + 7) // 8},) (one bit per element of dy), got {mask.shape}")
        _checks.contiguous(mask, "mask")
        keep = np.unpackbits(mask, count=n, bitorder="little").astype(bool)
    elif seed is not None:
        seed = _checks.uint64(seed, "seed")
        keep = None if p == 0.0 else _keep(seed, offset, n, p)
    elif p != 0.0:
        raise ValueError("dropout_backward needs the mask, or the seed (and offset) to regenerate it")
    out = _output(out, dy, "dy")
    if mask is not None and out is not None:  # out is written while the mask is read
        spans: List[Tuple[int, int, bool, str]] = []
        _checks.add_span(spans, mask, False, "mask")
        _checks.add_span(spans, out, True, "out")
        _checks.aliasing(spans)
    # p != 0: the mask or the seed gave keep (else the call was refused above).
    dx = dy if p == 0.0 else _scaled(dy, cast(np.ndarray, keep).reshape(dy.shape), p)
    if out is None:
        return dx
    out[...] = dx
    return out


# The kernels of this family, in the order of the C++ file. deepoptim.functional binds each
# to the compiled function of the same name; a variant names the kernel it runs and the
# parameters it fixes.
KERNELS: Tuple[str, ...] = ('dropout', 'dropout_backward')
VARIANTS: Dict[str, Tuple[str, Dict[str, Any]]] = {}
for _name in KERNELS:  # flags are checked first, as the bindings parse them first
    globals()[_name] = _checks.with_flag_checks(globals()[_name])
if not TYPE_CHECKING:  # the package exports the kernels (type checkers see every public name)
    __all__ = list(KERNELS)
