"""Reductions and clipping on the C++ kernels. Signatures and semantics are those of the
NumPy twins in :mod:`deepoptim.reference.reduce`, whose docstrings carry the math."""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np

from deepoptim import _core
from deepoptim.reference import reduce as _twin

ArrayOrList = Union[np.ndarray, Sequence[np.ndarray]]


def norms(arrays: ArrayOrList, norm_type: float = 2.0):
    return _core.norms(arrays, norm_type)


def all_finite(arrays: ArrayOrList) -> bool:
    return _core.all_finite(arrays)


def scale(arrays: ArrayOrList, factor: float) -> None:
    _core.scale(arrays, factor)


def clamp(arrays: ArrayOrList, lo: float, hi: float) -> None:
    _core.clamp(arrays, lo, hi)


def clip_grad_norm(grads: ArrayOrList, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False) -> float:
    return _core.clip_grad_norm(grads, max_norm, norm_type, error_if_nonfinite)


for _fn in (norms, all_finite, scale, clamp, clip_grad_norm):
    _fn.__doc__ = (
        f"C++ kernel; the NumPy twin :func:`deepoptim.reference.{_fn.__name__}` is its "
        f"specification.\n\n{getattr(_twin, _fn.__name__).__doc__}"
    )
del _fn
