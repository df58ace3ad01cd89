"""Adafactor's NumPy specification (deepoptim.reference.optim.adafactor; its kernel is to
come) against torch.optim.Adafactor: 100-step trajectories, factored (2-D and 3-D) and
unfactored (vector) parameters, float32 and float64, the options that change the math."""

from __future__ import annotations

import numpy as np
import pytest

from deepoptim.reference.optim import adafactor

torch = pytest.importorskip("torch")

SHAPES = [(7,), (33, 5), (2, 3, 4), (4097,), (64, 80)]
CASES = [dict(), dict(lr=5e-2, weight_decay=0.1), dict(beta2_decay=-0.5, eps=(1e-20, 1e-2), d=2.0),
         dict(lr=2e-2, maximize=True)]
TOL = {np.float64: 1e-12, np.float32: 1e-5}


def _state(p):
    if p.ndim >= 2:
        return np.zeros(p.shape[:-1] + (1,), p.dtype), np.zeros(p.shape[:-2] + (1, p.shape[-1]), p.dtype), None
    return None, None, np.zeros_like(p)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("hp", CASES, ids=[str(i) for i in range(len(CASES))])
def test_trajectory_equals_torch(hp, dtype):
    rng = np.random.default_rng(42)
    p0 = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    targets = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    sign = -1.0 if hp.get("maximize") else 1.0
    ours = [p.copy() for p in p0]
    rvs, cvs, vs = map(list, zip(*[_state(p) for p in ours]))
    theirs = [torch.tensor(p) for p in p0]
    opt = torch.optim.Adafactor(theirs, **hp)
    for step in range(1, 101):
        noise = [rng.standard_normal(s).astype(dtype) * 0.1 for s in SHAPES]
        adafactor(ours, [sign * ((p - t) * 0.5 + n) for p, t, n in zip(ours, targets, noise)], rvs, cvs, vs,
                  step=step, **hp)
        for p, t, n in zip(theirs, targets, noise):
            p.grad = torch.from_numpy(sign * ((p.numpy() - t) * 0.5 + n))
        opt.step()
    tol = TOL[dtype]
    for k, (a, b) in enumerate(zip(ours, theirs)):
        b = b.numpy()
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * (1 + np.abs(b).max()), err_msg=f"tensor {k}")
        st = opt.state[theirs[k]]
        if a.ndim >= 2:
            np.testing.assert_allclose(rvs[k], st["row_var"].numpy(), rtol=tol * 10)
            np.testing.assert_allclose(cvs[k], st["col_var"].numpy(), rtol=tol * 10)
        else:
            np.testing.assert_allclose(vs[k], st["variance"].numpy(), rtol=tol * 10, atol=1e-30)
    assert max(float(np.abs(a - p).max()) for a, p in zip(ours, p0)) > 1e-2


def test_refusals_change_nothing():
    p = np.ones((3, 4))
    g = np.ones((3, 4))
    rv, cv, _ = _state(p)
    for kw, needle in ((dict(lr=-1.0), "lr"), (dict(beta2_decay=0.5), "beta2_decay"), (dict(d=0.5), "d must"),
                       (dict(eps=(None, -1.0)), r"eps\[1\]"), (dict(weight_decay=-1.0), "weight_decay")):
        with pytest.raises(ValueError, match=needle):
            adafactor([p], [g], [rv], [cv], [None], step=1, **kw)
    with pytest.raises(ValueError, match="row_vars"):
        adafactor([p], [g], [np.zeros((3, 4))], [cv], [None], step=1)
    with pytest.raises(ValueError, match="variances"):
        adafactor([p], [g], [rv], [cv], [np.zeros((3, 4))], step=1)
    with pytest.raises(ValueError, match="distinct"):
        adafactor([p], [p], [rv], [cv], [None], step=1)  # the gradient is the parameter
    assert (p == 1).all() and (rv == 0).all() and (cv == 0).all()


def test_row_and_column_sums_are_in_index_order():
    """At step 1 (w = 1) the factors are the means of g*g themselves: each a float64 sum
    in index order, divided, rounded once to the dtype."""
    rng = np.random.default_rng(1)
    p = rng.standard_normal((3, 17, 9)).astype(np.float32)
    g = (rng.standard_normal((3, 17, 9)) * 10.0 ** rng.integers(-3, 4, (3, 17, 9))).astype(np.float32)
    rv, cv, _ = _state(p)
    adafactor([p], [g], [rv], [cv], [None], step=1)
    for b in range(3):
        for r in range(17):
            acc = 0.0
            for c in range(9):
                acc += float(g[b, r, c]) ** 2
            assert rv[b, r, 0] == np.float32(acc / 9)
        for c in range(9):
            acc = 0.0
            for r in range(17):
                acc += float(g[b, r, c]) ** 2
            assert cv[b, 0, c] == np.float32(acc / 17)
