"""Adafactor on the C++ kernel.

Built from its NumPy twin in :mod:`deepoptim.reference.adafactor` (see
:mod:`deepoptim.functional._bind`): the same signature, defaults and docstring (the twin
carries the math), calling the compiled kernel. Arrays are updated in place, never
copied; lists of arrays are updated in one GIL-free call.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from deepoptim.functional._bind import bind_family
_twin = importlib.import_module("deepoptim.reference.adafactor")  # the module, not the function of its name

if TYPE_CHECKING:  # the same signatures: type checkers see the twins
    from deepoptim.reference.adafactor import *  # noqa: F401,F403

__all__ = bind_family(_twin, globals())
