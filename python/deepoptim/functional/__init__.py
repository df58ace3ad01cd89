"""The kernels as functions on NumPy arrays. Each has a NumPy twin of the same name and
signature in :mod:`deepoptim.reference`; the optimizer, reduction, dropout and cast families
are generated from their twins (:mod:`deepoptim.functional._bind`), so a kernel added to
a twin module's ``KERNELS`` appears here with no further code."""

import importlib as _importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the same signatures: type checkers see the twins
    from deepoptim.reference.dropout import *  # noqa: F401,F403
    from deepoptim.reference.norm import *  # noqa: F401,F403
    from deepoptim.reference.optim import *  # noqa: F401,F403
    from deepoptim.reference.reduce import *  # noqa: F401,F403
    from deepoptim.reference.cast import *  # noqa: F401,F403
    from deepoptim.reference.muon import *  # noqa: F401,F403
    from deepoptim.reference.adafactor import *  # noqa: F401,F403
else:
    from deepoptim.functional.dropout import *  # noqa: F401,F403
    from deepoptim.functional.norm import *  # noqa: F401,F403
    from deepoptim.functional.optim import *  # noqa: F401,F403
    from deepoptim.functional.reduce import *  # noqa: F401,F403
    from deepoptim.functional.cast import *  # noqa: F401,F403
    from deepoptim.functional.muon import *  # noqa: F401,F403
    from deepoptim.functional.adafactor import *  # noqa: F401,F403


def _exports() -> list[str]:
    # The families by module (the dropout function shadows its module's attribute).
    return [name for family in ("optim", "reduce", "norm", "dropout", "cast", "muon", "adafactor")
            for name in _importlib.import_module(f"deepoptim.functional.{family}").__all__]


if not TYPE_CHECKING:  # type checkers take the star-imported names as they are
    __all__ = _exports()
