"""NumPy twins of every kernel: plain, readable, and the specification the C++ kernels are
tested against. Same names and signatures as :mod:`deepoptim.functional`. This package
never imports the compiled module."""

from deepoptim.reference.dropout import dropout, dropout_backward
from deepoptim.reference.norm import BatchNormCache, batch_norm, batch_norm_backward
from deepoptim.reference.optim import adagrad, adam, adamw, rmsprop, sgd

__all__ = [
    "BatchNormCache",
    "adagrad",
    "adam",
    "adamw",
    "batch_norm",
    "batch_norm_backward",
    "dropout",
    "dropout_backward",
    "rmsprop",
    "sgd",
]
