"""100-step trajectories against torch.optim (the optional `torch` extra, torch==2.13.0).

Each side computes its gradients from its own parameters (a noisy quadratic), so a
difference in any step feeds back into the next ones instead of washing out."""

from __future__ import annotations

import numpy as np
import pytest

from kernels import KERNELS, NAMES

torch = pytest.importorskip("torch")

STEPS = 100
SHAPES = [(7,), (33, 5), (4097,)]

# From the registry: every kernel's torch configurations, against the torch.optim class
# its deepoptim.optim class names.
_TORCH_NAME = {c.kernel: c.torch_name for c in __import__("deepoptim.optim", fromlist=["x"]).REGISTRY.values()}
CASES = [(_TORCH_NAME[name], name, hp) for name in NAMES for hp in KERNELS[name].torch_cases]
assert CASES and all(t for t, _, _ in CASES)

# Tolerance relative to the parameters' scale. float64 differences come only from
# torch's use of lerp/fused multiply-adds where we multiply and add; float32 adds the
# same rounding at 1e-7 accumulated over 100 steps.
TOL = {np.float64: 1e-12, np.float32: 1e-5}


def _grad(p, target, noise):
    return (p - target) * 0.5 + noise


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("torch_name,name,hp", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_trajectory_equals_torch(torch_name, name, hp, dtype):
    kernel = KERNELS[name]
    rng = np.random.default_rng(42)
    p0 = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    targets = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    sign = -1.0 if hp.get("maximize") else 1.0  # ascend on the negated quadratic

    ours = [p.copy() for p in p0]
    fill = hp.get("initial_accumulator_value", 0.0)
    per_param = [kernel.make_state(p, hp, fill=fill) for p in ours]
    states = [[row[k] for row in per_param] if per_param[0][k] is not None else [None] * len(ours)
              for k in range(len(kernel.states))]
    states = [col if col[0] is not None else None for col in states]

    theirs = [torch.tensor(p, requires_grad=False) for p in p0]
    opt = getattr(torch.optim, torch_name)(theirs, **hp)

    for step in range(1, STEPS + 1):
        noise = [rng.standard_normal(s).astype(dtype) * 0.1 for s in SHAPES]
        g_ours = [sign * _grad(p, t, n) for p, t, n in zip(ours, targets, noise)]
        kernel.call(kernel.fast, ours, g_ours, states, hp, step)
        for p, t, n in zip(theirs, targets, noise):
            p.grad = torch.from_numpy(sign * _grad(p.numpy(), t, n))
        opt.step()

    tol = TOL[dtype]
    for k, (a, b) in enumerate(zip(ours, theirs)):
        b = b.detach().numpy()
        assert a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * (1 + np.abs(b).max()), err_msg=f"tensor {k}")
    # The comparison must not be vacuous: the parameters moved away from where they started.
    assert max(float(np.abs(a - p).max()) for a, p in zip(ours, p0)) > 1e-2
