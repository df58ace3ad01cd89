"""Packaging: version defined once, build info, the stub and py.typed ship, doctests run,
functional and reference stay twins."""

from __future__ import annotations

import doctest
import inspect
import re
from importlib import metadata, resources

import pytest

import deepoptim
from deepoptim import _core, functional, reference


def test_version_is_the_distributions():
    assert deepoptim.__version__ == metadata.version("deepoptim") == _core.__version__


def test_build_info_reports_the_isa():
    info = deepoptim.build_info()
    assert info["isa"] in {"x86-64-v4", "x86-64-v3", "x86-64-v2", "x86-64", "native", "aarch64", "generic"}
    assert info["max_threads"] >= 1
    assert info["block_size"] == 4096
    assert re.fullmatch(r"3\.\d+\.\d+", info["eigen"])


def test_stub_and_py_typed_ship_with_the_package():
    files = resources.files("deepoptim")
    assert files.joinpath("py.typed").is_file()
    stub = files.joinpath("_core.pyi").read_text()
    public = [n for n in dir(_core) if not n.startswith("_")]
    assert public, "the compiled module exports nothing"
    for name in public:
        assert re.search(rf"^(def|class) {name}\b", stub, re.M), f"_core.{name} missing from _core.pyi"


@pytest.mark.parametrize("name", functional.__all__)
def test_functional_and_reference_are_twins(name):
    fast, twin = getattr(functional, name), getattr(reference, name)
    assert inspect.signature(fast) == inspect.signature(twin)
    assert fast is not twin and fast.__module__.startswith("deepoptim.functional")


@pytest.mark.parametrize("name", sorted(__import__("kernels").KERNELS))
def test_each_hyperparameter_reaches_the_kernel_parameter_of_its_name(name):
    """The fast functions are generated from the twins' signatures (functional/_bind.py):
    a bad value for each numeric hyperparameter must be refused by the C++ kernel under
    that very name, so no argument is routed to the wrong parameter."""
    import numpy as np
    from kernels import KERNELS

    kernel = KERNELS[name]
    sig = inspect.signature(kernel.twin)
    keyword = [p for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY]
    numeric = [p.name for p in keyword if isinstance(p.default, float)]
    pairs = [p.name for p in keyword if isinstance(p.default, tuple)]
    assert numeric or pairs
    for k in numeric + pairs:
        hp = dict(kernel.defaults, **{k: "bad"})
        p = np.ones(3, np.float32)
        needle = rf"^{k} must be a number, got str" if k in numeric else rf"^{k} must be a pair"
        with pytest.raises(TypeError, match=needle):
            kernel.call(kernel.fast, p, p.copy(), kernel.make_state(p, kernel.defaults), hp, 1)


def test_bind_twin_refuses_a_twin_that_disagrees_with_the_binding():
    from deepoptim.functional._bind import bind_twin

    def adam(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs=None, *, step, learning_rate=1e-3):
        """A twin that names a parameter differently."""

    with pytest.raises(RuntimeError, match=r"disagree.*also takes \['learning_rate'\]"):
        bind_twin(adam, _core.adam, "x")


@pytest.mark.parametrize(
    "module", ["deepoptim.reference.optim", "deepoptim.reference.norm", "deepoptim.reference.dropout", "deepoptim.layers"]
)
def test_docstring_examples_run(module):
    import importlib

    mod = importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


def test_reference_does_not_import_the_compiled_module():
    import deepoptim.reference.optim as ref

    src = inspect.getsource(ref) + inspect.getsource(__import__("deepoptim.reference._checks", fromlist=["x"]))
    assert not re.search(r"^\s*(from|import)\s.*_core", src, re.M)


def test_ci_runs_the_readmes_test_command():
    import pathlib

    root = pathlib.Path(__file__).resolve().parent.parent
    steps = [ln for ln in (root / ".ci" / "run").read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#") and not ln.startswith(("set ", "cd "))]
    ci = steps[0]  # the README's command comes first; the build variants follow it
    readme = (root / "README.md").read_text()
    assert ci.startswith("pip install") and "pytest" in ci
    assert f"```bash\n{ci}\n```" in readme
    assert steps[1:] == ["python .ci/variants.py", "python .ci/wheel.py"], steps


def _readme_python_blocks() -> list:
    import pathlib

    readme = (pathlib.Path(__file__).resolve().parent.parent / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", readme, re.S)


def test_readme_has_python_examples():
    assert _readme_python_blocks()


@pytest.mark.parametrize("i", range(len(_readme_python_blocks())))
def test_readme_python_examples_run(i):
    block = _readme_python_blocks()[i]
    if re.search(r"^\s*(import torch|from torch|import deepoptim\.torch|from deepoptim\.torch)", block, re.M):
        # The README says so: with ".[test]" alone (no torch extra) the torch parts skip.
        pytest.importorskip("torch", reason="the torch extra is not installed (pip install '.[test,torch]')")
    exec(compile(block, f"README.md python block {i}", "exec"), {})
