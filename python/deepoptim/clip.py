"""Gradient tools: clipping by value and by global norm, the non-finite check, and
gradient accumulation over micro-batches. The arithmetic runs in the C++ kernels of
:mod:`deepoptim.functional` (norms summed in double in a fixed order, so the total norm
is the same for any thread count).

Gradients may be given as one array, a list of arrays, or a dict name -> array.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Union, cast

import numpy as np

from deepoptim import functional as F

Grads = Union[np.ndarray, Sequence[np.ndarray], Mapping[str, np.ndarray]]


class NonFiniteError(RuntimeError, ArithmeticError):
    """The total gradient norm is NaN or infinite (``error_if_nonfinite=True``). A
    RuntimeError like torch's, and an ArithmeticError by nature."""


def _as_list(grads: Grads) -> List[np.ndarray]:
    if isinstance(grads, np.ndarray):
        return [grads]
    if isinstance(grads, Mapping):
        return list(grads.values())
    if isinstance(grads, (list, tuple)):
        return list(grads)
    raise TypeError(f"grads must be an array, a list/tuple of arrays or a dict of arrays, got {type(grads).__name__}")


def _by_dtype(arrays: List[np.ndarray]) -> List[List[int]]:
    """Indices of ``arrays`` grouped by dtype, in order of first appearance: one kernel
    call takes one dtype, and a model may mix them."""
    groups: Dict[Any, List[int]] = {}
    for i, a in enumerate(arrays):
        groups.setdefault(getattr(a, "dtype", None), []).append(i)
    return list(groups.values())


def tensor_norms(grads: Grads, norm_type: float = 2.0) -> np.ndarray:
    """Per-tensor norms (float64 array, in order) of arrays that may differ in dtype."""
    arrays = _as_list(grads)
    out = np.empty(len(arrays), np.float64)
    for idx in _by_dtype(arrays):
        out[idx] = F.norms([arrays[i] for i in idx], norm_type)
    return out


def combine_norms(per: np.ndarray, norm_type: float = 2.0) -> float:
    """The norm of the concatenation from per-tensor norms, combined in tensor order
    (the same order as the C++ ``clip_grad_norm``)."""
    if norm_type == 2.0:
        return float(np.sqrt(np.sum(np.square(per))))
    if norm_type == 1.0:
        return float(np.sum(per))
    return float(np.max(per, initial=0.0)) if not np.isnan(per).any() else float("nan")


def global_norm(grads: Grads, norm_type: float = 2.0) -> float:
    """The norm of all gradients taken together, ``||concat(grads)||`` (1, 2 or inf);
    the gradients may differ in dtype."""
    return combine_norms(tensor_norms(grads, norm_type), norm_type)


def clip_grad_norm(grads: Grads, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False) -> float:
    r"""Scales all gradients in place so that their global norm is at most ``max_norm``,
    as ``torch.nn.utils.clip_grad_norm_``::

        total = ||concat(grads)||;   grads *= max_norm / (total + 1e-6)   if that is < 1

    One pass for the norm, one for the scale (skipped when nothing is clipped).

    Returns:
      The total norm before clipping.
    Raises:
      NonFiniteError: ``error_if_nonfinite`` and the total is NaN or inf (grads untouched).
    """
    total = F.clip_grad_norm(_as_list(grads), max_norm, norm_type, error_if_nonfinite)
    if error_if_nonfinite and not np.isfinite(total):
        raise NonFiniteError(
            f"the total norm of order {norm_type} of the gradients is non-finite ({total}), so it cannot be clipped"
        )
    return total


def clip_grad_value(grads: Grads, clip_value: float) -> None:
    """Clamps every gradient element to ``[-clip_value, clip_value]`` in place, as
    ``torch.nn.utils.clip_grad_value_`` (NaN stays NaN)."""
    if not clip_value >= 0:
        raise ValueError(f"clip_value must be >= 0, got {clip_value!r}")
    F.clamp(_as_list(grads), -float(clip_value), float(clip_value))


def all_finite(grads: Grads) -> bool:
    """True iff no gradient element is NaN or inf (one pass over all of them); the
    gradients may differ in dtype."""
    arrays = _as_list(grads)
    return all(_all_finite_16([arrays[i] for i in idx]) if _is_16bit(arrays[idx[0]]) else
               F.all_finite([arrays[i] for i in idx]) for idx in _by_dtype(arrays))


# Exponent bits of bfloat16 and float16: all ones is inf or NaN.
_EXP16 = {"bfloat16": 0x7F80, "float16": 0x7C00}


def _is_16bit(a: Any) -> bool:
    return isinstance(a, np.ndarray) and a.dtype.isnative and str(a.dtype) in _EXP16


def _all_finite_16(arrays: List[np.ndarray]) -> bool:
    # 16-bit gradients (bfloat16/float16 training) are checked on their bits: no float
    # conversion, so a float16 inf from an overflowed backward pass is caught as such.
    for a in arrays:
        e = _EXP16[str(a.dtype)]
        if a.size and bool(np.any((np.ascontiguousarray(a).reshape(-1).view(np.uint16) & e) == e)):
            return False
    return True


class GradientAccumulator:
    r"""Accumulates gradients over ``steps`` micro-batches (full-batch behaviour from
    small batches)::

        acc = g_1 + ... + g_k          (reduction="sum")
        acc = (g_1 + ... + g_k) / k    (reduction="mean")

    Example:
        >>> import numpy as np
        >>> acc = GradientAccumulator([np.zeros(2)], steps=2)
        >>> acc.add([np.array([1.0, 2.0])])
        False
        >>> acc.add([np.array([3.0, 4.0])])
        True
        >>> acc.grads
        [array([2., 3.])]
    """

    def __init__(self, like: Grads, steps: int, reduction: str = "mean") -> None:
        if int(steps) < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        self._keys: Optional[List[str]] = list(like.keys()) if isinstance(like, Mapping) else None
        self._buffers = [np.zeros_like(a) for a in _as_list(like)]
        self.steps, self.reduction, self.count = int(steps), reduction, 0

    def add(self, grads: Grads) -> bool:
        """Adds one micro-batch's gradients; True when ``steps`` of them are in (then
        :attr:`grads` is ready and the next :meth:`add` starts a new round)."""
        if self.count == self.steps:
            self.reset()
        # _keys is set only for a mapping (the structure given at construction).
        gl = _as_list(grads) if self._keys is None else [cast("Mapping[str, np.ndarray]", grads)[k] for k in self._keys]
        if len(gl) != len(self._buffers):
            raise ValueError(f"expected {len(self._buffers)} gradients, got {len(gl)}")
        for b, g in zip(self._buffers, gl):
            if g.shape != b.shape:
                raise ValueError(f"gradient of shape {g.shape} for an accumulator of shape {b.shape}")
        for b, g in zip(self._buffers, gl):
            np.add(b, g, out=b)
        self.count += 1
        if self.count == self.steps and self.reduction == "mean" and self.steps > 1:
            F.scale(self._buffers, 1.0 / self.steps)
        return self.count == self.steps

    @property
    def ready(self) -> bool:
        return self.count == self.steps

    @property
    def grads(self) -> Union[Dict[str, np.ndarray], List[np.ndarray]]:
        """The accumulated gradients, in the structure given at construction."""
        if self._keys is not None:
            return dict(zip(self._keys, self._buffers))
        return list(self._buffers)

    def reset(self) -> None:
        for b in self._buffers:
            b.fill(0)
        self.count = 0


__all__ = ["NonFiniteError", "global_norm", "tensor_norms", "combine_norms", "clip_grad_norm", "clip_grad_value", "all_finite", "GradientAccumulator"]
