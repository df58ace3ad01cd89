"""NumPy twins of every kernel: plain, readable, and the specification the C++ kernels are
tested against. Same names and signatures as :mod:`deepoptim.functional`. This package
never imports the compiled module."""

from deepoptim.reference.dropout import dropout, dropout_backward
from deepoptim.reference.norm import BatchNormCache, batch_norm, batch_norm_backward
from deepoptim.reference.optim import (
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
from deepoptim.reference.reduce import all_finite, clamp, clip_grad_norm, norms, scale

__all__ = [
    "BatchNormCache",
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
