"""Batch normalization on the C++ kernels. Signatures, defaults and semantics are those of
the NumPy twins in :mod:`deepoptim.reference.norm`, whose docstrings carry the math."""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from deepoptim import _core
from deepoptim.reference import norm as _twin
from deepoptim.reference.norm import BatchNormCache


def batch_norm(
    x: np.ndarray,
    running_mean: Optional[np.ndarray],
    running_var: Optional[np.ndarray],
    weight: Optional[np.ndarray] = None,
    bias: Optional[np.ndarray] = None,
    training: bool = True,
    momentum: Optional[float] = 0.1,
    eps: float = 1e-5,
    num_batches_tracked: Optional[np.ndarray] = None,
    channel_axis: int = 1,
) -> Tuple[np.ndarray, BatchNormCache]:
    y, mean, invstd = _core.batch_norm(
        x, running_mean, running_var, weight, bias, training, momentum, eps,
        num_batches_tracked, channel_axis,
    )
    return y, BatchNormCache(x, mean, invstd, weight, bias is not None, bool(training), channel_axis)


def batch_norm_backward(
    dy: np.ndarray, cache: BatchNormCache
) -> Tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
    if not isinstance(cache, BatchNormCache):
        raise TypeError(f"cache must be the BatchNormCache returned by batch_norm, got {type(cache).__name__}")
    return _core.batch_norm_backward(
        dy, cache.x, cache.mean, cache.invstd, cache.weight, cache.training, cache.channel_axis,
        cache.weight is not None, cache.has_bias,
    )


for _fn in (batch_norm, batch_norm_backward):
    _fn.__doc__ = (
        f"C++ kernel; the NumPy twin :func:`deepoptim.reference.{_fn.__name__}` is its "
        f"specification.\n\n{getattr(_twin, _fn.__name__).__doc__}"
    )
del _fn

__all__ = ["batch_norm", "batch_norm_backward"]
