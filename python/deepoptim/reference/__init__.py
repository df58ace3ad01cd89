"""NumPy twins of every kernel: plain, readable, and the specification the C++ kernels are
tested against. Same names and signatures as :mod:`deepoptim.functional`. This package
never imports the compiled module. Each family module lists its kernels in ``KERNELS``;
the package exports them, so a new kernel needs no line here."""

import importlib as _importlib

from deepoptim.reference.dropout import *  # noqa: F401,F403
from deepoptim.reference.norm import BatchNormCache, batch_norm, batch_norm_backward  # noqa: F401
from deepoptim.reference.optim import *  # noqa: F401,F403
from deepoptim.reference.reduce import *  # noqa: F401,F403
from deepoptim.reference.cast import *  # noqa: F401,F403
from deepoptim.reference.muon import *  # noqa: F401,F403
from deepoptim.reference.adafactor import *  # noqa: F401,F403

from typing import TYPE_CHECKING as _TYPE_CHECKING


def _exports() -> list[str]:
    return ["BatchNormCache", "batch_norm", "batch_norm_backward"] + [
        name for family in ("optim", "reduce", "dropout", "cast", "muon", "adafactor")
        for name in _importlib.import_module(f"deepoptim.reference.{family}").__all__
    ]


if not _TYPE_CHECKING:  # type checkers take the star-imported names as they are
    __all__ = _exports()
