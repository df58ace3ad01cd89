"""Reductions and clipping on the C++ kernels.

Each function is built from its NumPy twin in :mod:`deepoptim.reference.reduce` (see
:mod:`deepoptim.functional._bind`): the same signature, defaults and docstring (the twin
carries the math), calling the compiled kernel. Arrays are updated in place, never
copied; lists of arrays are updated in one GIL-free call, one parallel region.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from deepoptim.functional._bind import bind_family
from deepoptim.reference import reduce as _twin

if TYPE_CHECKING:  # the same signatures: type checkers see the twins
    from deepoptim.reference.reduce import *  # noqa: F401,F403

__all__ = bind_family(_twin, globals())
