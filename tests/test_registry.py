"""The registry holds the layers together: every optimizer class names its kernel, the
kernel's twin and the class agree on every default they share, the class agrees with
the torch.optim class it names, and every registered optimizer reaches the benchmarks,
the kernel tests and the exports with no code of its own."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from deepoptim import bench, functional, optim, reference
from kernels import KERNELS

CLASSES = list(optim.REGISTRY.values())


def _defaults(fn) -> dict:
    return {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not p.empty}


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_class_and_twin_share_their_defaults(cls):
    twin = getattr(reference, cls.kernel)
    ours, theirs = _defaults(cls.__init__), _defaults(twin)
    shared = set(ours) & set(theirs)
    assert len(shared) >= 2, shared  # every optimizer shares its hyperparameters with its kernel
    for k in shared:
        assert ours[k] == theirs[k], f"{cls.__name__}({k}={ours[k]!r}) but reference.{cls.kernel}({k}={theirs[k]!r})"


@pytest.mark.parametrize("cls", [c for c in CLASSES if c.torch_name], ids=lambda c: c.__name__)
def test_class_signature_is_torchs(cls):
    torch = pytest.importorskip("torch")
    tcls = getattr(torch.optim, cls.torch_name)
    ours, theirs = inspect.signature(cls.__init__).parameters, inspect.signature(tcls.__init__).parameters
    positional = lambda ps: [k for k, p in ps.items() if p.kind is p.POSITIONAL_OR_KEYWORD]  # noqa: E731
    ours_pos, theirs_pos = positional(ours), positional(theirs)
    assert ours_pos == theirs_pos[: len(ours_pos)], (ours_pos, theirs_pos)
    for k in ours_pos[1:]:
        assert ours[k].default == theirs[k].default, (k, ours[k].default, theirs[k].default)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_registered_optimizer_is_everywhere(cls):
    assert cls.kernel in functional.__all__ and cls.kernel in reference.__all__
    assert cls.kernel in KERNELS, f"tests/kernels.py has no registry line for {cls.kernel}"
    assert any(c.kernel == cls.kernel for c in bench.suite()), "no benchmark case"
    if cls.torch_name:
        assert KERNELS[cls.kernel].torch_cases, "no torch trajectory configuration"
    # A step through the class runs: the kernel call the class makes fits the kernel.
    p = np.ones(5, np.float32)
    opt = cls([p], **cls.example)
    assert opt.step([np.full(5, 0.5, np.float32)]) is True
    assert not np.array_equal(p, np.ones(5, np.float32))
