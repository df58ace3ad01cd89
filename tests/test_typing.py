"""``mypy --strict`` over deepoptim's own modules (issue 14: a first user can type-check
their code against deepoptim).

``CHECKED`` lists the modules that pass ``mypy --strict``; the test runs mypy on them with
``--follow-imports=silent``, so the errors of a module outside the list do not count, while
its types are still used where a checked module imports it.

Every module of the package is in ``CHECKED``: ``NOT_YET`` (modules not yet checked, each
with its reason) is empty, and ``MAX_NOT_YET`` keeps it so. A module added to the package
must be typed and put in ``CHECKED`` (:func:`test_every_module_is_listed`).
"""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

from test_stub import STUB, _mypy

CHECKED = (
    "deepoptim",
    "deepoptim.__main__",
    "deepoptim._core",
    "deepoptim.bench",
    "deepoptim.checkpoint",
    "deepoptim.reference._checks",
    "deepoptim.reference._lowp",
    "deepoptim.clip",
    "deepoptim.demo",
    "deepoptim.functional",
    "deepoptim.functional._bind",
    "deepoptim.functional.cast",
    "deepoptim.functional.muon",
    "deepoptim.functional.adafactor",
    "deepoptim.functional.dropout",
    "deepoptim.functional.norm",
    "deepoptim.functional.optim",
    "deepoptim.functional.reduce",
    "deepoptim.layers",
    "deepoptim.nn",
    "deepoptim.optim",
    "deepoptim.reference",
    "deepoptim.reference._parallel",
    "deepoptim.reference.cast",
    "deepoptim.reference.dropout",
    "deepoptim.reference.muon",
    "deepoptim.reference.adafactor",
    "deepoptim.reference.norm",
    "deepoptim.reference.optim",
    "deepoptim.reference.reduce",
    "deepoptim.regularization",
    "deepoptim.schedules",
    "deepoptim.torch",
)

# Module -> why it is not checked yet (see the module docstring). Never add to it.
NOT_YET: dict[str, str] = {}
# The most NOT_YET may hold: lower it when a module moves to CHECKED.
MAX_NOT_YET = 0


def _package_modules() -> set[str]:
    """Every module of the package, by its files (.py, and the stub of the compiled one)."""
    root = STUB.parent
    out = set()
    for path in root.rglob("*.py*"):
        if path.suffix not in (".py", ".pyi") or "__pycache__" in path.parts:
            continue
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out.add(".".join(parts))
    return out


def test_every_module_is_listed():
    assert not set(CHECKED) & set(NOT_YET), "a module is both checked and not yet checked"
    assert set(CHECKED) | set(NOT_YET) == _package_modules(), (
        "put a new module in CHECKED (it passes mypy --strict)"
    )
    assert len(NOT_YET) <= MAX_NOT_YET, "NOT_YET stays empty: type the new module instead"


def test_checked_modules_pass_mypy_strict(tmp_path: pathlib.Path):
    pytest.importorskip("mypy", reason="mypy is not installed (pip install '.[test]')")
    # deepoptim.torch is checked against torch's own types: only where torch is installed
    # (".[test]" without the torch extra checks the rest).
    names = [n for n in CHECKED if n != "deepoptim.torch" or importlib.util.find_spec("torch") is not None]
    modules = [arg for name in names for arg in ("-m", name)]
    result = _mypy(tmp_path, [], "--follow-imports=silent", *modules)
    assert result.returncode == 0, result.stdout + result.stderr
