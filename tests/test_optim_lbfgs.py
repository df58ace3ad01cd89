"""L-BFGS as torch.optim.LBFGS: deepoptim.optim.LBFGS and deepoptim.torch.LBFGS against
torch's class on small problems (Rosenbrock, least squares), with and without the
strong-Wolfe line search; state_dicts both ways; bad input."""

from __future__ import annotations

import copy
import inspect

import numpy as np
import pytest

from deepoptim import optim

torch = pytest.importorskip("torch")
from deepoptim import torch as dt  # noqa: E402

TOL = {torch.float64: 1e-10, torch.float32: 1e-4}


def _rosenbrock(dtype):
    """A chain of 2-D Rosenbrock valleys (one parameter of 6 entries) and a scalar pair."""
    x0 = [torch.tensor([-1.2, 1.0, -0.5, 2.0, 1.5, -1.0], dtype=dtype), torch.tensor([0.3, 0.8], dtype=dtype)]

    def loss_fn(ps):
        out = 0
        for x in ps:
            a, b = x[0::2], x[1::2]
            out = out + ((1 - a) ** 2 + 100 * (b - a * a) ** 2).sum()
        return out

    return x0, loss_fn


def _least_squares(dtype):
    g = torch.Generator().manual_seed(0)
    A = torch.randn(40, 5, generator=g, dtype=dtype)
    b = torch.randn(40, 3, generator=g, dtype=dtype)
    x0 = [torch.zeros(5, 3, dtype=dtype), torch.zeros(3, dtype=dtype)]

    def loss_fn(ps):
        W, c = ps
        return ((A @ W + c - b) ** 2).mean() + 1e-3 * (W * W).sum()

    return x0, loss_fn


PROBLEMS = {"rosenbrock": _rosenbrock, "least_squares": _least_squares}
# Few enough iterations that the runs stay away from convergence, where the stopping rules
# compare the last bits of the loss (torch's dot products and fused multiply-adds round
# differently from NumPy's).
# In float32 the least-squares problem reaches float32's resolution in about 7 iterations:
# one step of at most 5 is compared there.
CASES = [dict(max_iter=5), dict(line_search_fn="strong_wolfe", max_iter=5), dict(lr=0.5, history_size=3, max_iter=5),
         dict(line_search_fn="strong_wolfe", history_size=2, max_iter=5, max_eval=6)]
STEPS = {("rosenbrock", torch.float64): 3, ("rosenbrock", torch.float32): 2,
         ("least_squares", torch.float64): 3, ("least_squares", torch.float32): 1}


def _torch_closure(opt, ps, loss_fn):
    def closure():
        opt.zero_grad()
        loss = loss_fn(ps)
        loss.backward()
        return loss
    return closure


def _close(a, b, dtype, what):
    a, b = np.asarray(a), np.asarray(b)
    tol = TOL[dtype]
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * (1 + np.abs(b).max()), err_msg=what)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("hp", CASES, ids=[str(i) for i in range(len(CASES))])
@pytest.mark.parametrize("problem", sorted(PROBLEMS))
def test_both_apis_equal_torch(problem, hp, dtype):
    x0, loss_fn = PROBLEMS[problem](dtype)
    theirs = [x.clone().requires_grad_() for x in x0]
    ours_t = [x.clone().requires_grad_() for x in x0]
    ours_n = [x.numpy().copy() for x in x0]
    o_theirs = torch.optim.LBFGS(theirs, **hp)
    o_t = dt.LBFGS(ours_t, **hp)
    o_n = optim.LBFGS(ours_n, **hp)

    def np_closure():
        ts = [torch.from_numpy(a.copy()).requires_grad_() for a in ours_n]
        loss = loss_fn(ts)
        loss.backward()
        return float(loss.detach()), [t.grad.numpy() for t in ts]

    for k in range(STEPS[problem, dtype]):
        l1 = o_theirs.step(_torch_closure(o_theirs, theirs, loss_fn))
        l2 = o_t.step(_torch_closure(o_t, ours_t, loss_fn))
        l3 = o_n.step(np_closure)
        _close(float(l2.detach()), float(l1.detach()), dtype, f"loss, step {k}")
        _close(l3, float(l1.detach()), dtype, f"numpy loss, step {k}")
        for a, b, c in zip(ours_t, ours_n, theirs):
            _close(a.detach().numpy(), c.detach().numpy(), dtype, f"deepoptim.torch, step {k}")
            _close(b, c.detach().numpy(), dtype, f"deepoptim.optim, step {k}")
        st_theirs = o_theirs.state[theirs[0]]
        st_ours = o_t.state[ours_t[0]]
        assert set(st_ours) == set(st_theirs)
        assert (st_ours["func_evals"], st_ours["n_iter"]) == (st_theirs["func_evals"], st_theirs["n_iter"])
        assert (o_n.state["func_evals"], o_n.state["n_iter"]) == (st_theirs["func_evals"], st_theirs["n_iter"])
        assert len(st_ours["old_dirs"]) == len(st_theirs["old_dirs"])
    # the comparison is not vacuous: the parameters moved, the loss went down
    assert max(float((a.detach() - b).abs().max()) for a, b in zip(theirs, x0)) > 1e-2
    assert float(loss_fn([t.detach() for t in theirs])) < float(loss_fn([x.clone() for x in x0]))


@pytest.mark.parametrize("direction", ["torch->deepoptim", "deepoptim->torch"])
def test_state_dict_switches_both_ways(direction):
    dtype = torch.float64
    x0, loss_fn = _rosenbrock(dtype)
    hp = dict(line_search_fn="strong_wolfe", history_size=5, max_iter=5)
    first_cls, second_cls = (torch.optim.LBFGS, dt.LBFGS) if direction == "torch->deepoptim" else \
        (dt.LBFGS, torch.optim.LBFGS)
    ps = [x.clone().requires_grad_() for x in x0]
    o1 = first_cls(ps, **hp)
    for _ in range(2):
        o1.step(_torch_closure(o1, ps, loss_fn))
    ref = [p.detach().clone().requires_grad_() for p in ps]
    o_ref = first_cls(ref, **hp)
    o_ref.load_state_dict(copy.deepcopy(o1.state_dict()))  # loads share tensors: prev_flat_grad is updated in place
    switched = [p.detach().clone().requires_grad_() for p in ps]
    o2 = second_cls(switched, **hp)
    o2.load_state_dict(copy.deepcopy(o1.state_dict()))
    for _ in range(2):
        o_ref.step(_torch_closure(o_ref, ref, loss_fn))
        o2.step(_torch_closure(o2, switched, loss_fn))
    for a, b in zip(switched, ref):
        _close(a.detach().numpy(), b.detach().numpy(), dtype, direction)


def test_signature_is_torchs():
    """torch's arguments and defaults, then deepoptim's low-precision options,
    keyword-only (master_weights; state_dtype, which only says the history stays float32)."""
    theirs = [(k, p.default) for k, p in inspect.signature(torch.optim.LBFGS.__init__).parameters.items()]
    for cls in (dt.LBFGS, optim.LBFGS):
        ours = inspect.signature(cls.__init__).parameters
        assert [(k, p.default) for k, p in ours.items()][: len(theirs)] == theirs
        extra = list(ours.values())[len(theirs):]
        assert [(p.name, p.default, p.kind) for p in extra] == [
            ("master_weights", False, inspect.Parameter.KEYWORD_ONLY), ("state_dtype", None, inspect.Parameter.KEYWORD_ONLY)]


@pytest.mark.parametrize("kw,exc,needle", [
    (dict(lr=-1.0), ValueError, "lr"), (dict(max_iter=0), ValueError, "max_iter"),
    (dict(history_size=0), ValueError, "history_size"), (dict(tolerance_grad=-1.0), ValueError, "tolerance_grad"),
    (dict(tolerance_change=float("nan")), ValueError, "tolerance_change"),
    (dict(line_search_fn="armijo"), ValueError, "line_search_fn"), (dict(max_eval=0), ValueError, "max_eval"),
])
def test_bad_hyperparameters_are_refused(kw, exc, needle):
    with pytest.raises(exc, match=needle):
        optim.LBFGS([np.ones(2)], **kw)
    with pytest.raises(exc, match=needle):
        dt.LBFGS([torch.ones(2)], **kw)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="parameter groups"):
        dt.LBFGS([{"params": [torch.ones(2)]}, {"params": [torch.ones(2)], "lr": 0.1}])
    with pytest.raises(ValueError, match="parameter groups"):
        optim.LBFGS([{"params": [np.ones(2)]}])
    with pytest.raises(TypeError, match="one dtype"):
        optim.LBFGS([np.ones(2), np.ones(2, np.float32)])
    with pytest.raises(TypeError, match="dtype"):
        dt.LBFGS([torch.ones(2, dtype=torch.int64)])
    x = np.ones(3)
    opt = optim.LBFGS([x])
    with pytest.raises(ValueError, match="gradients"):
        opt.step(lambda: (1.0, [np.ones(3), np.ones(3)]))
    with pytest.raises(ValueError, match="shape"):
        opt.step(lambda: (1.0, [np.ones(2)]))
    np.testing.assert_array_equal(x, np.ones(3))  # refused at the first evaluation: nothing moved


def test_dict_params_and_missing_gradients():
    x = {"a": np.array([3.0, -1.0]), "b": np.array([0.5])}
    opt = optim.LBFGS(x, line_search_fn="strong_wolfe")
    opt.step(lambda: (float(x["a"] @ x["a"]), {"a": 2 * x["a"], "b": None}))
    np.testing.assert_allclose(x["a"], 0.0, atol=1e-8)
    assert x["b"][0] == 0.5  # no gradient: treated as zero, never moved
    sd = opt.state_dict()
    o2 = optim.LBFGS({"a": x["a"].copy(), "b": x["b"].copy()}, line_search_fn="strong_wolfe")
    o2.load_state_dict(sd)
    assert o2.state["n_iter"] == opt.state["n_iter"]
