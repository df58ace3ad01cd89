"""The type stub of the compiled module: valid Python, the same functions as ``_core``,
the same parameters in the same order with the same defaults as pybind11's signature
lines, and usable by ``mypy --strict`` (README examples and calls into ``_core``)."""

from __future__ import annotations

import ast
import importlib.util
import os
import pathlib
import re
import site
import subprocess
import sys
import sysconfig
from importlib import resources

import pytest

from deepoptim import _core

STUB = pathlib.Path(str(resources.files("deepoptim").joinpath("_core.pyi")))
README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
_NO_DEFAULT = object()


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets: ``a: list[int, str], b`` -> two parts."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def doc_signature(func) -> tuple[list[str], dict[str, object], set[str]]:
    """(names in order, defaults by name, keyword-only names) from the first line of
    pybind11's ``__doc__``: ``name(arg: type = default, ...) -> ret``."""
    first = (func.__doc__ or "").splitlines()[0]
    m = re.fullmatch(rf"{func.__name__}\((.*)\) -> .+", first)
    assert m, f"_core.{func.__name__}: no pybind11 signature line in __doc__: {first!r}"
    names, defaults, kwonly, star = [], {}, set(), False
    for part in _split_top_level(m.group(1)):
        if part == "*":
            star = True
            continue
        if part == "/":
            continue
        name = part.split(":", 1)[0].strip()
        names.append(name)
        if star:
            kwonly.add(name)
        # The default follows the last top-level " = " (types never contain one).
        if " = " in part:
            defaults[name] = ast.literal_eval(part.rsplit(" = ", 1)[1])
    return names, defaults, kwonly


def stub_functions() -> dict[str, list[ast.FunctionDef]]:
    tree = ast.parse(STUB.read_text(), filename=str(STUB))
    out: dict[str, list[ast.FunctionDef]] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            out.setdefault(node.name, []).append(node)
    return out


def stub_params(fn: ast.FunctionDef) -> tuple[list[str], dict[str, object], set[str]]:
    a = fn.args
    positional = a.posonlyargs + a.args
    pos_defaults = [_NO_DEFAULT] * (len(positional) - len(a.defaults)) + list(a.defaults)
    names = [p.arg for p in positional] + [p.arg for p in a.kwonlyargs]
    defaults = {}
    for p, d in zip(positional, pos_defaults):
        if d is not _NO_DEFAULT:
            defaults[p.arg] = ast.literal_eval(d)
    for p, d in zip(a.kwonlyargs, a.kw_defaults):
        if d is not None:
            defaults[p.arg] = ast.literal_eval(d)
    assert a.vararg is None and a.kwarg is None, f"{fn.name}: *args/**kwargs in the stub"
    return names, defaults, {p.arg for p in a.kwonlyargs}


def public_callables() -> list[str]:
    return sorted(n for n in dir(_core) if not n.startswith("_") and callable(getattr(_core, n))
                  and not isinstance(getattr(_core, n), type))


def test_stub_declares_the_module_classes():
    tree = ast.parse(STUB.read_text())
    classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    assert classes == {n for n in dir(_core) if not n.startswith("_") and isinstance(getattr(_core, n), type)}


def test_stub_is_valid_python():
    ast.parse(STUB.read_text(), filename=str(STUB))


def test_stub_and_module_have_the_same_functions():
    assert set(stub_functions()) == set(public_callables())


def test_stub_declares_the_module_attributes():
    tree = ast.parse(STUB.read_text())
    declared = {n.target.id for n in tree.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    assert "__version__" in declared and isinstance(_core.__version__, str)


@pytest.mark.parametrize("name", public_callables())
def test_stub_parameters_match_the_binding(name):
    doc_names, doc_defaults, doc_kwonly = doc_signature(getattr(_core, name))
    overloads = stub_functions()[name]
    has_overload = len(overloads) > 1
    if has_overload:
        for fn in overloads:
            assert any(isinstance(d, ast.Name) and d.id == "overload" for d in fn.decorator_list), (
                f"{name}: several definitions in the stub without @overload"
            )
    covered: set[str] = set()
    for fn in overloads:
        names, defaults, kwonly = stub_params(fn)
        assert names == doc_names, f"{name}: stub parameters {names} != binding {doc_names}"
        for arg, value in defaults.items():
            assert arg in doc_defaults, f"{name}({arg}): a default in the stub, none in the binding"
            assert value == doc_defaults[arg] and type(value) is type(doc_defaults[arg]), (
                f"{name}({arg}): stub default {value!r} != binding {doc_defaults[arg]!r}"
            )
        covered |= set(defaults)
        assert doc_kwonly <= kwonly, f"{name}: keyword-only in the binding, not in the stub"
        if not has_overload:
            # One signature must say exactly what the binding accepts.
            assert set(defaults) == set(doc_defaults), f"{name}: defaults differ: {defaults} vs {doc_defaults}"
            assert kwonly == doc_kwonly, f"{name}: keyword-only {kwonly} vs binding {doc_kwonly}"
    # Overloads together must offer every default the binding has.
    assert covered == set(doc_defaults), f"{name}: defaults {covered} vs binding {set(doc_defaults)}"


def test_doc_signature_parser():
    # Nested brackets and commas inside types do not split a parameter; defaults and a
    # keyword-only marker are read (the bindings have none today, a future one may).
    def fake():
        pass

    fake.__doc__ = (
        "fake(a: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex], "
        "b: dict[str, int] = None, *, c: str = 'torch', d: float = 0.001) -> tuple\n\nDoc."
    )
    names, defaults, kwonly = doc_signature(fake)
    assert names == ["a", "b", "c", "d"]
    assert defaults == {"b": None, "c": "torch", "d": 0.001} and kwonly == {"c", "d"}
    names, defaults, kwonly = doc_signature(_core.philox4x32_10)
    assert names == ["counter", "key"] and defaults == {} and kwonly == set()


# ---- mypy --strict over the README's examples and over calls into _core --------------

# Calls that a user writes against the compiled module; each must type-check.
_GOOD_CALLS = """
import numpy as np
from deepoptim import _core

p = np.zeros(8, np.float32)
g, m, v, vmax = np.ones_like(p), np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
_core.adam(p, g, m, v, None, 1, 1e-3, (0.9, 0.999), 1e-8, 0.0, False, False, False, True, False, None, None)
_core.adam([p], [g], [m], [v], [vmax], 2, 1e-3, (0.9, 0.999), 1e-8, 0, True, False, True, True, False, None, (1, 2))
_core.sgd(p, g, None, lr=0.1, momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=False,
          maximize=False, first_step=True, momentum_form="torch", master_params=None, stochastic_rounding=None)
_core.add_penalty(g, p, 1e-4, 1e-3)
_core.soft_threshold(p, 1e-3)
total: float = _core.clip_grad_norm([g], 1.0, 2.0, False)
y, mean, invstd = _core.batch_norm(np.ones((4, 3), np.float32), None, None, None, None, True, 0.1, 1e-5, None, 1)
h, mask = _core.dropout(y, 0.5, True, 0, 0, True, None)
version: str = _core.__version__
"""

# Calls the binding refuses; mypy must refuse them too (so this check can fail).
_BAD_CALLS = {
    "adam without its hyperparameters": "_core.adam(p, g, m, v, None, 1)",
    "step not an int": "_core.adam(p, g, m, v, None, 1.5, 1e-3, (0.9, 0.999), 1e-8, 0.0, False, False, False, True, False, "
                       "None, None)",
    "unknown keyword": "_core.scale(p, scale=2.0)",
    "missing function": "_core.adamax(p, g)",
}


def _mypy(tmp_path: pathlib.Path, files: list[pathlib.Path], *flags: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    root = STUB.parent.parent.resolve()
    installed = {pathlib.Path(d).resolve() for d in site.getsitepackages()}
    installed |= {pathlib.Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib")}
    # An installed package is found by mypy through its py.typed (and mypy refuses
    # site-packages on MYPYPATH); an editable install's import hook is invisible to mypy,
    # so there the checkout's package folder is named explicitly.
    if root not in installed:
        env["MYPYPATH"] = str(root)
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--cache-dir", str(tmp_path / "cache"),
         *flags, *map(str, files)],
        capture_output=True, text=True, env=env, timeout=300,
    )


@pytest.fixture(scope="module")
def mypy_available():
    pytest.importorskip("mypy", reason="mypy is not installed (pip install '.[test]')")


def test_mypy_strict_accepts_the_readme_examples_and_core_calls(tmp_path, mypy_available):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "no python examples in README.md"
    if importlib.util.find_spec("torch") is None:  # ".[test]" without the torch extra
        blocks = [b for b in blocks if not re.search(r"^\s*(import|from) (deepoptim\.)?torch\b", b, re.M)]
    files = []
    for i, block in enumerate(blocks):  # one module per block: each is a script of its own
        files.append(tmp_path / f"readme_example_{i}.py")
        files[-1].write_text(block)
    files.append(tmp_path / "core_calls.py")
    files[-1].write_text(_GOOD_CALLS)
    # --allow-untyped-calls: the PyTorch example calls torch's own unannotated
    # Tensor.backward, which --strict refuses (deepoptim.nn is annotated now).
    result = _mypy(tmp_path, files, "--allow-untyped-calls")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_refuses_wrong_calls_into_core(tmp_path, mypy_available):
    header = "import numpy as np\nfrom deepoptim import _core\n\np = g = m = v = np.zeros(8, np.float32)\n"
    files = []
    for i, call in enumerate(_BAD_CALLS.values()):
        files.append(tmp_path / f"bad_{i}.py")
        files[-1].write_text(header + call + "\n")
    result = _mypy(tmp_path, files)
    assert result.returncode == 1, result.stdout + result.stderr  # 1: type errors found; 2: mypy itself failed
    for i, what in enumerate(_BAD_CALLS):
        assert re.search(rf"bad_{i}\.py:5: error", result.stdout), f"mypy accepted {what}:\n{result.stdout}"
