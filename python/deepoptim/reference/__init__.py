"""NumPy twins of every kernel: plain, readable, and the specification the C++ kernels are
tested against. Same names and signatures as :mod:`deepoptim.functional`. This package
never imports the compiled module."""

from deepoptim.reference.optim import adagrad, adam, adamw, rmsprop, sgd

__all__ = ["adagrad", "adam", "adamw", "rmsprop", "sgd"]
