"""NumPy twins of the batch-normalization kernels: the specification of
``cpp/src/norm.cpp`` (same functions, same order: batch_norm, batch_norm_backward).

x is viewed as (outer, C, inner): (N, C, *spatial) with ``channel_axis=1`` is
(N, C, prod(spatial)); channels-last (N, *spatial, C) with ``channel_axis=-1`` is
(N * prod(spatial), C, 1). All statistics and per-element arithmetic run in float64 and
round once to the input dtype.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, List, Optional, Tuple, cast

import numpy as np

from deepoptim.reference import _checks


@dataclasses.dataclass(frozen=True)
class BatchNormCache:
    """What :func:`batch_norm_backward` needs from the forward, and nothing more.

    Attributes:
      x: the forward's input (a reference, not a copy: do not modify it in between).
      mean: float64 (C,), the mean used to normalize (batch statistics in training,
        running ones in eval).
      invstd: float64 (C,), the :math:`1/\\sqrt{\\sigma^2 + \\epsilon}` used to normalize.
      weight: the scale :math:`\\gamma` or None.
      has_bias: whether a shift was given.
      training: whether the statistics came from the batch.
      channel_axis: 1 or -1.
    """

    x: np.ndarray
    mean: np.ndarray
    invstd: np.ndarray
    weight: Optional[np.ndarray]
    has_bias: bool
    training: bool
    channel_axis: int


def _layout(x: np.ndarray, channel_axis: int) -> Tuple[int, int, int]:
    if x.ndim < 2:
        raise ValueError(f"x must have at least 2 dimensions (N, C, ...), got shape {x.shape}")
    if isinstance(channel_axis, bool) or not isinstance(channel_axis, (int, np.integer)):
        raise TypeError(f"channel_axis must be an int, got {type(channel_axis).__name__}")
    ax = channel_axis + x.ndim if channel_axis < 0 else channel_axis
    if ax not in (1, x.ndim - 1):
        raise ValueError(
            f"channel_axis must be 1 (N, C, ...) or -1 (channels-last), got {channel_axis} for x of shape {x.shape}"
        )
    return math.prod(x.shape[:ax]), x.shape[ax], math.prod(x.shape[ax + 1 :])


def _per_channel(a: Optional[np.ndarray], name: str, dtype: np.dtype[Any], C: int, written: bool,
                 spans: List[Tuple[int, int, bool, str]]) -> Optional[np.ndarray]:
    if a is None:
        return None
    _checks.array(a, name)
    if a.dtype != dtype:
        raise TypeError(f"{name} must have the dtype of x ({dtype}), got {a.dtype}")
    if a.shape != (C,):
        raise ValueError(f"{name} must have shape ({C},) (one value per channel), got {a.shape}")
    _checks.contiguous(a, name)
    if written:
        _checks.writeable(a, name)
    _checks.add_span(spans, a, written, name)
    return a


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
    r"""Batch normalization forward (Ioffe & Szegedy, 2015), as torch's ``F.batch_norm``.

    Per channel :math:`c`, over the :math:`n` values of that channel in the batch::

        training:  mu = mean(x),  var = mean((x - mu)**2)         (biased, two passes,
                   the second also correcting mu's rounding: Chan, Golub & LeVeque 1983)
                   running_mean = (1 - f) * running_mean + f * mu
                   running_var  = (1 - f) * running_var  + f * var * n / (n - 1)   (unbiased)
                   f = momentum, or 1 / num_batches_tracked when momentum is None
                   (num_batches_tracked is incremented first)
        eval:      mu = running_mean,  var = running_var
        y = (x - mu) / sqrt(var + eps) * weight + bias

    Args:
      x: (N, C, ...) with ``channel_axis=1``, or channels-last (N, ..., C) with
        ``channel_axis=-1``; float32 or float64, C-contiguous.
      running_mean: (C,) of x's dtype, updated in place in training; may be None in
        training, together with ``running_var`` (no tracking, like
        ``track_running_stats=False``).
      running_var: (C,) of x's dtype, updated in place in training; None exactly when
        ``running_mean`` is.
      weight: (C,) scale, or None (1).
      bias: (C,) shift, or None (0).
      training: batch statistics (and running updates) or running statistics.
      momentum: in [0, 1], or None for a cumulative average.
      eps: > 0, added to the variance.
      num_batches_tracked: int64 array of one value, incremented in place in training
        when running statistics are tracked.

    Returns:
      ``(y, cache)``: y like x; the cache for :func:`batch_norm_backward`.

    Raises:
      ValueError: training with one value per channel (the variance is undefined).

    Example:
      >>> import numpy as np
      >>> from deepoptim.reference import batch_norm
      >>> x = np.array([[1.0, 10.0], [3.0, 30.0]])
      >>> rm, rv = np.zeros(2), np.ones(2)
      >>> y, cache = batch_norm(x, rm, rv)
      >>> y.round(4)
      array([[-1., -1.],
             [ 1.,  1.]])
      >>> rm.round(12), rv.round(12)
      (array([0.2, 2. ]), array([ 1.1, 20.9]))
    """
    _checks.array(x, "x")
    dtype = _checks.float_dtype(x, "x")
    _checks.contiguous(x, "x")
    outer, C, inner = _layout(x, channel_axis)
    eps = _checks.real("eps", eps)
    _checks.finite_gt("eps", eps, 0.0)
    cumulative = momentum is None
    if not cumulative:
        momentum = _checks.real("momentum", momentum)
        _checks.in_range("momentum", momentum, 0.0, 1.0, True)
    spans: List[Tuple[int, int, bool, str]] = []
    _checks.add_span(spans, x, False, "x")
    rm = _per_channel(running_mean, "running_mean", dtype, C, training, spans)
    rv = _per_channel(running_var, "running_var", dtype, C, training, spans)
    w = _per_channel(weight, "weight", dtype, C, False, spans)
    b = _per_channel(bias, "bias", dtype, C, False, spans)
    if (rm is None) != (rv is None):
        raise ValueError("running_mean and running_var must both be arrays or both be None")
    if not training and rm is None:
        raise ValueError("running_mean and running_var are required when training=False")
    nbt = num_batches_tracked
    if nbt is not None:
        _checks.array(nbt, "num_batches_tracked")
        if nbt.dtype != np.int64 or nbt.size != 1:
            raise TypeError(
                f"num_batches_tracked must be an int64 array holding one value, got {nbt.dtype} of shape {nbt.shape}"
            )
        _checks.contiguous(nbt, "num_batches_tracked")
        if training:
            _checks.writeable(nbt, "num_batches_tracked")
        _checks.add_span(spans, nbt, training, "num_batches_tracked")
        # A count: 1/count weighs the cumulative average, and training adds 1 to it.
        count = int(nbt.reshape(-1)[0])
        if count < 0 or (training and count == 2**63 - 1):
            raise ValueError(f"num_batches_tracked must hold a count in [0, 2**63 - 1), got {count}")
    if training and rm is not None and cumulative and nbt is None:
        raise ValueError("num_batches_tracked is required when momentum=None (cumulative average)")
    n = outer * inner
    if training and n <= 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got x of shape {x.shape}")
    _checks.aliasing(spans)

    xd = x.reshape(outer, C, inner).astype(np.float64)
    if training:
        mean = xd.sum(axis=(0, 2)) / n
        dev = xd - mean[:, None]
        sdev = dev.sum(axis=(0, 2))
        # Corrected two-pass (Chan, Golub & LeVeque 1983), as the kernel: sdev measures
        # the first mean's rounding error, which both statistics then drop.
        mean = mean + sdev / n
        sqdev = np.maximum((dev**2).sum(axis=(0, 2)) - sdev * sdev / n, 0.0)
        invstd = 1.0 / np.sqrt(sqdev / n + eps)
        if rm is not None:
            if nbt is not None:
                nbt += 1
            # Checked above: nbt is given when cumulative, momentum a float when not.
            f = 1.0 / float(cast(np.ndarray, nbt).reshape(-1)[0]) if cumulative else cast(float, momentum)
            rm[...] = (f * mean + (1.0 - f) * rm.astype(np.float64)).astype(dtype)
            rv = cast(np.ndarray, rv)  # checked above: both or neither
            rv[...] = (f * (sqdev / (n - 1.0)) + (1.0 - f) * rv.astype(np.float64)).astype(dtype)
    else:
        # Checked above: running statistics are required when not training.
        rm, rv = cast(np.ndarray, rm), cast(np.ndarray, rv)
        mean = rm.astype(np.float64)
        invstd = 1.0 / np.sqrt(rv.astype(np.float64) + eps)
    scale = invstd * w.astype(np.float64) if w is not None else invstd
    shift = b.astype(np.float64) if b is not None else np.zeros(C)
    y = ((xd - mean[:, None]) * scale[:, None] + shift[:, None]).astype(dtype).reshape(x.shape)
    return y, BatchNormCache(x, mean, invstd, w, b is not None, bool(training), channel_axis)


def batch_norm_backward(
    dy: np.ndarray, cache: BatchNormCache
) -> Tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
    r"""Gradients of :func:`batch_norm` from the upstream gradient ``dy``.

    With :math:`\hat{x} = (x - \mu)\,\mathrm{invstd}` and per-channel means over the batch::

        dbias   = sum(dy)
        dweight = sum(dy * xhat)
        training:  dx = weight * invstd * (dy - mean(dy) - xhat * mean(dy * xhat))
        eval:      dx = weight * invstd * dy          (running statistics are constants)

    Returns:
      ``(dx, dweight, dbias)``; dweight (dbias) is None when the forward had no weight
      (bias). All in x's dtype.
    """
    if not isinstance(cache, BatchNormCache):
        raise TypeError(f"cache must be the BatchNormCache returned by batch_norm, got {type(cache).__name__}")
    _checks.flag("training", cache.training)  # the binding takes it as an argument
    x = cache.x
    _checks.array(x, "x (cache.x)")
    dtype = _checks.float_dtype(x, "x (cache.x)")
    _checks.contiguous(x, "x (cache.x)")
    _checks.array(dy, "dy")
    if dy.dtype != dtype:
        raise TypeError(f"dy must have the dtype of the forward's x ({dtype}), got {dy.dtype}")
    if dy.shape != x.shape:
        raise ValueError(f"dy must have shape {x.shape} (the forward's x shape), got {dy.shape}")
    _checks.contiguous(dy, "dy")
    outer, C, inner = _layout(x, cache.channel_axis)
    for name, a in (("mean (cache.mean)", cache.mean), ("invstd (cache.invstd)", cache.invstd)):
        _checks.array(a, name)
        if a.dtype != np.float64:
            raise TypeError(f"{name} must have the dtype of the cache statistics (float64), got {a.dtype}")
        if a.shape != (C,):
            raise ValueError(f"{name} must have shape ({C},) (one value per channel), got {a.shape}")
        _checks.contiguous(a, name)
    w = _per_channel(cache.weight, "weight (cache.weight)", dtype, C, False, [])

    n = outer * inner
    xd = x.reshape(outer, C, inner).astype(np.float64)
    g = dy.reshape(outer, C, inner).astype(np.float64)
    dev = xd - cache.mean[:, None]
    sdy = g.sum(axis=(0, 2))
    sdydev = (g * dev).sum(axis=(0, 2))
    dbias = sdy.astype(dtype) if cache.has_bias else None
    dweight = (sdydev * cache.invstd).astype(dtype) if w is not None else None
    A = (w.astype(np.float64) if w is not None else np.ones(C)) * cache.invstd
    if cache.training:
        B = -A * cache.invstd * cache.invstd * sdydev / n
        K = -A * sdy / n
        dx = A[:, None] * g + B[:, None] * dev + K[:, None]
    else:
        dx = A[:, None] * g
    return dx.astype(dtype).reshape(x.shape), dweight, dbias


# Flags are checked first, as the bindings parse them first.
batch_norm = _checks.with_flag_checks(batch_norm)
batch_norm_backward = _checks.with_flag_checks(batch_norm_backward)
