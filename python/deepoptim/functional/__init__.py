"""The kernels as functions on NumPy arrays. Each has a NumPy twin of the same name and
signature in :mod:`deepoptim.reference`."""

from deepoptim.functional.dropout import dropout, dropout_backward
from deepoptim.functional.norm import batch_norm, batch_norm_backward
from deepoptim.functional.optim import adagrad, adam, adamw, rmsprop, sgd

__all__ = [
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
