"""The kernels as functions on NumPy arrays, updated in place. Each has a NumPy twin of
the same name and signature in :mod:`deepoptim.reference`."""

from deepoptim.functional.optim import adagrad, adam, adamw, rmsprop, sgd

__all__ = ["adagrad", "adam", "adamw", "rmsprop", "sgd"]
