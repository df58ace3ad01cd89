"""Dropout on the C++ kernels. Signatures, defaults and semantics are those of the NumPy
twins in :mod:`deepoptim.reference.dropout` (same masks, bit for bit)."""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from deepoptim import _core
from deepoptim.reference.dropout import dropout as _twin_forward
from deepoptim.reference.dropout import dropout_backward as _twin_backward


def dropout(
    x: np.ndarray,
    p: float = 0.5,
    training: bool = True,
    seed: int = 0,
    offset: int = 0,
    return_mask: bool = True,
    out: Optional[np.ndarray] = None,
) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    return _core.dropout(x, p, training, seed, offset, return_mask, out)


def dropout_backward(
    dy: np.ndarray,
    mask: Optional[np.ndarray],
    p: float = 0.5,
    seed: Optional[int] = None,
    offset: int = 0,
    out: Optional[np.ndarray] = None,
) -> np.ndarray:
    return _core.dropout_backward(dy, mask, p, seed, offset, out)


# The module reference.dropout is shadowed by the function of that name in the package,
# hence the twins imported by name.
for _fn, _tw in ((dropout, _twin_forward), (dropout_backward, _twin_backward)):
    _fn.__doc__ = (
        f"C++ kernel; the NumPy twin :func:`deepoptim.reference.{_fn.__name__}` is its "
        f"specification.\n\n{_tw.__doc__}"
    )
del _fn, _tw
