"""The kernels as functions on NumPy arrays. Each has a NumPy twin of the same name and
signature in :mod:`deepoptim.reference`."""

from deepoptim.functional.dropout import dropout, dropout_backward
from deepoptim.functional.norm import batch_norm, batch_norm_backward
from deepoptim.functional.optim import (
    adagrad,
    adam,
    adamw,
    add_penalty,
    lamb,
    lars,
    rmsprop,
    sgd,
    soft_threshold,
)
from deepoptim.functional.reduce import all_finite, clamp, clip_grad_norm, norms, scale

__all__ = [
    "adagrad",
    "adam",
    "adamw",
    "add_penalty",
    "all_finite",
    "clamp",
    "clip_grad_norm",
    "lamb",
    "lars",
    "norms",
    "scale",
    "soft_threshold",
    "batch_norm",
    "batch_norm_backward",
    "dropout",
    "dropout_backward",
    "rmsprop",
    "sgd",
]
