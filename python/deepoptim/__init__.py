"""deepoptim: fast CPU optimizer update rules, batch norm and dropout.

C++ kernels (``deepoptim._core``) under a thin Python API; every kernel has a NumPy twin
of the same name and signature in :mod:`deepoptim.reference`, which is its specification.
"""

from __future__ import annotations

from deepoptim import _core, clip, functional, layers, nn, optim, reference, regularization, schedules
from deepoptim.checkpoint import load, save

__version__: str = _core.__version__


def build_info() -> dict[str, object]:
    """How the compiled kernels were built and what they run with on this machine.

    Keys: ``version``, ``isa`` (the instruction set the run-time dispatch picked, e.g.
    ``"x86-64-v3"`` for AVX2), ``dispatch``, ``openmp``, ``max_threads``, ``block_size``,
    ``eigen``, ``compiler``.
    """
    return dict(_core.build_info())


__all__ = [
    "__version__",
    "build_info",
    "clip",
    "functional",
    "layers",
    "load",
    "nn",
    "optim",
    "reference",
    "regularization",
    "save",
    "schedules",
]
