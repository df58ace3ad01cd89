"""Adafactor (issue 13): the kernel against its NumPy twin bit for bit, the thread count,
the summation orders the twin specifies, refusals, torch 2.13's torch.optim.Adafactor
(100-step trajectories of the twin, the kernel, deepoptim.optim.Adafactor and
deepoptim.torch.Adafactor), and state_dict round trips both ways.

Against torch the trajectories agree to rounding, not to the bit: torch sums rows and
columns as norms (its own order, then squared) and its vectorized loops fuse
multiply-adds. Tolerances: 1e-12 (float64), 1e-5 (float32) of the parameters' scale.
"""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest

from deepoptim import functional as F
from deepoptim import reference as R
from deepoptim.optim import Adafactor
from deepoptim.reference.adafactor import column_sums, lane_sums
from kernels import assert_same_bits
from threads import run_json

SHAPES = [(7,), (33, 5), (2, 3, 4), (4097,), (64, 80), ()]
CASES = [dict(), dict(lr=5e-2, weight_decay=0.1), dict(beta2_decay=-0.5, eps=(1e-20, 1e-2), d=2.0),
         dict(lr=2e-2, maximize=True)]
TOL = {np.float64: 1e-12, np.float32: 1e-5}
IMPLS = [R.adafactor, F.adafactor]


def _state(p):
    if p.ndim >= 2:
        return np.zeros(p.shape[:-1] + (1,), p.dtype), np.zeros(p.shape[:-2] + (1, p.shape[-1]), p.dtype), None
    return None, None, np.zeros_like(p)


def _states(ps):
    return tuple(map(list, zip(*[_state(p) for p in ps])))


def _same(a, b, what):
    if a is None or b is None:
        assert a is None and b is None, what
    else:
        assert_same_bits(a, b, what)


# ------------------------------------------------------------------ kernel vs twin
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(), (1,), (7,), (50000,), (1, 1), (1, 9), (9, 1), (33, 5), (2, 3, 4), (300, 700),
                                   (3, 1000, 9), (1, 70000), (2, 2, 2, 3), (0,), (0, 4), (4, 0)])
@pytest.mark.parametrize("hp", CASES + [dict(eps=(0.0, 0.0), weight_decay=1.0, lr=0.5)],
                         ids=[str(i) for i in range(len(CASES) + 1)])
def test_kernel_matches_twin(shape, dtype, hp):
    rng = np.random.default_rng(3)
    p_t = np.array(rng.standard_normal(shape) * 2.0, dtype=dtype)
    p_k = p_t.copy()
    st_t, st_k = _state(p_t), _state(p_k)
    for step in (1, 2, 3, 10):
        g = np.array(rng.standard_normal(shape) * 10.0 ** rng.integers(-3, 3, shape), dtype=dtype)
        R.adafactor(p_t, g, *st_t, step=step, **hp)
        F.adafactor(p_k, g, *st_k, step=step, **hp)
        assert_same_bits(p_k, p_t, f"params, step {step}")
        for name, a, b in zip(("row_var", "col_var", "variance"), st_k, st_t):
            _same(a, b, f"{name}, step {step}")


@pytest.mark.parametrize("shape,dtype", [((1, 4100, 4100), np.float32), ((16_777_217,), np.float32),
                                         ((2900, 2900), np.float64), ((8_388_609,), np.float64)],
                         ids=["f32-matrix", "f32-vector", "f64-matrix", "f64-vector"])
def test_parameters_above_the_kept_scratch_compute_u_twice_with_the_same_bits(shape, dtype):
    """Above 64 MiB of u the kernel computes u again in the update pass instead of
    keeping it (bounded memory): the same bits as the twin."""
    rng = np.random.default_rng(8)
    p_t = rng.standard_normal(shape, dtype=np.float32).astype(dtype)
    p_k = p_t.copy()
    st_t, st_k = _state(p_t), _state(p_k)
    for step in (1, 2):
        g = rng.standard_normal(shape, dtype=np.float32).astype(dtype)
        R.adafactor(p_t, g, *st_t, step=step, weight_decay=0.1, maximize=step == 2)
        F.adafactor(p_k, g, *st_k, step=step, weight_decay=0.1, maximize=step == 2)
    assert_same_bits(p_k, p_t, "params")
    for a, b in zip(st_k, st_t):
        _same(a, b, "state")


def test_list_form_equals_single_calls():
    rng = np.random.default_rng(5)
    ps = [np.array(rng.standard_normal(s), np.float32) for s in SHAPES]
    qs = [p.copy() for p in ps]
    sp, sq = _states(ps), _states(qs)
    for step in (1, 2):
        gs = [np.array(rng.standard_normal(s), np.float32) for s in SHAPES]
        F.adafactor(ps, gs, *sp, step=step, lr=0.03, weight_decay=0.01)
        for i, (q, g) in enumerate(zip(qs, gs)):
            F.adafactor(q, g, sq[0][i], sq[1][i], sq[2][i], step=step, lr=0.03, weight_decay=0.01)
    for a, b in zip(ps, qs):
        assert_same_bits(a, b, "list form")


def test_nonfinite_gradients_propagate_as_in_the_twin():
    p = np.ones((6, 5), np.float32)
    g = np.ones((6, 5), np.float32)
    g[2, 3], g[4, 1] = np.nan, np.inf
    q, h = p.copy(), g.copy()
    st_t, st_k = _state(p), _state(q)
    R.adafactor(p, g, *st_t, step=1)
    F.adafactor(q, h, *st_k, step=1)
    assert_same_bits(q, p)
    assert np.isnan(q).any()


# ----------------------------------------------------------------- the orders
def test_row_sums_are_in_lane_order_and_column_sums_in_index_order():
    """At step 1 (w = 1) the factors are the means of g*g themselves: a row's sum in the
    8 lanes of the kernels (entry c to lane c % 8, lanes added pairwise), a column's in
    index order, each in float64, divided, rounded once to the dtype."""
    rng = np.random.default_rng(1)
    shape = (3, 17, 29)
    g = (rng.standard_normal(shape) * 10.0 ** rng.integers(-4, 5, shape)).astype(np.float32)
    for fn in IMPLS:
        p = rng.standard_normal(shape).astype(np.float32)
        rv, cv, _ = _state(p)
        fn(p, g, rv, cv, None, step=1)
        for b in range(3):
            for r in range(17):
                lanes = [0.0] * 8
                for c in range(29):
                    lanes[c % 8] += float(g[b, r, c]) ** 2
                total = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]))
                assert rv[b, r, 0] == np.float32(total / 29)
            for c in range(29):
                acc = 0.0
                for r in range(17):
                    acc += float(g[b, r, c]) ** 2
                assert cv[b, 0, c] == np.float32(acc / 17)
    # the helpers themselves, on terms whose sum depends on the order
    terms = np.array([1e16, 1.0, -1e16, 1.0, 3.0, 1e-3, 2.0, 5.0, 1.0], np.float64)
    lanes = [1e16 + 1.0, 1.0, -1e16, 1.0, 3.0, 1e-3, 2.0, 5.0]
    assert lane_sums(terms) == ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]))
    col = np.array([[1e16], [1.0], [-1e16], [1.0]])
    assert column_sums(col)[0] == ((1e16 + 1.0) - 1e16) + 1.0


_THREADS_SCRIPT = r"""
import hashlib, json, sys
import numpy as np
from deepoptim import functional as F
rng = np.random.default_rng(11)
out = {}
for shape in [(300, 700), (700, 300), (3, 200, 90), (100000,), (1, 70000), (70000, 1)]:
    for dtype in (np.float32, np.float64):
        p = rng.standard_normal(shape).astype(dtype)
        st = ((np.zeros(shape[:-1] + (1,), dtype), np.zeros(shape[:-2] + (1, shape[-1]), dtype), None)
              if len(shape) >= 2 else (None, None, np.zeros_like(p)))
        for step in (1, 2):
            F.adafactor(p, rng.standard_normal(shape).astype(dtype), *st, step=step, weight_decay=0.1)
        out[f"{shape}-{dtype.__name__}"] = hashlib.sha256(
            p.tobytes() + b"".join(a.tobytes() for a in st if a is not None)).hexdigest()
print(json.dumps(out))
"""


def test_same_bits_with_1_and_2_threads():
    assert run_json(_THREADS_SCRIPT, 1) == run_json(_THREADS_SCRIPT, 2)


# ----------------------------------------------------------------- refusals
_BAD_HYPER = [
    (dict(lr=-1.0), ValueError, "lr"), (dict(lr=float("nan")), ValueError, "lr"), (dict(lr="1"), TypeError, "lr"),
    (dict(beta2_decay=0.5), ValueError, "beta2_decay"), (dict(beta2_decay=-float("inf")), ValueError, "beta2_decay"),
    (dict(d=0.5), ValueError, "d must"), (dict(eps=(None, -1.0)), ValueError, r"eps\[1\]"),
    (dict(eps=(-1.0, 1e-3)), ValueError, r"eps\[0\]"), (dict(eps=1e-3), TypeError, "eps must be a pair"),
    (dict(eps=(None, "x")), TypeError, r"eps\[1\]"), (dict(weight_decay=-1.0), ValueError, "weight_decay"),
    (dict(maximize=1), TypeError, "maximize"), (dict(step=0), ValueError, "step"), (dict(step=1.0), TypeError, "step"),
    (dict(step=True), TypeError, "step"),
]


def _snap(args):
    flat = [a for x in args for a in (x if isinstance(x, list) else [x]) if a is not None]
    return flat, [a.copy() for a in flat]


@pytest.mark.parametrize("fn", IMPLS, ids=["twin", "kernel"])
@pytest.mark.parametrize("bad,exc,match", _BAD_HYPER, ids=[str(b) for b, _, _ in _BAD_HYPER])
def test_bad_hyperparameters_change_nothing(fn, bad, exc, match):
    p = np.ones((3, 4))
    args = (p, np.ones((3, 4)), *_state(p))
    flat, snap = _snap(args)
    kw = dict(dict(step=1), **bad)
    with pytest.raises(exc, match=match):
        fn(*args, **kw)
    for a, s in zip(flat, snap):
        assert_same_bits(a, s)


def _bad_arrays():
    rng = np.random.default_rng(2)
    p = rng.standard_normal((3, 4))
    g = rng.standard_normal((3, 4))
    v = np.ones(5)
    rv, cv, _ = _state(p)
    ro = rv.copy()
    ro.flags.writeable = False
    return [
        ("row_var of the parameter's shape", lambda: ([p], [g], [np.zeros((3, 4))], [cv], [None]), ValueError,
         r"row_vars\[0\] must have shape \(3, 1\)"),
        ("col_var transposed", lambda: ([p], [g], [rv], [cv.T.copy()], [None]), ValueError, r"col_vars\[0\]"),
        ("variance of a matrix", lambda: ([p], [g], [rv], [cv], [np.zeros((3, 4))]), ValueError,
         r"variances\[0\] must be None"),
        ("factors of a vector", lambda: ([v], [v.copy()], [np.zeros(5)], [None], [np.zeros(5)]), ValueError,
         r"row_vars\[0\] must be None"),
        ("missing variance", lambda: ([v], [v.copy()], [None], [None], [None]), TypeError,
         r"variances\[0\] must be a numpy.ndarray"),
        ("missing row_var", lambda: (p, g, None, cv, None), TypeError, "row_vars must be a numpy.ndarray"),
        ("float32 state of float64 params", lambda: (p, g, rv.astype(np.float32), cv, None), TypeError, "row_vars"),
        ("float32 grads", lambda: (p, g.astype(np.float32), rv, cv, None), TypeError, "grads"),
        ("grads shape", lambda: (p, g.T.copy(), rv, cv, None), ValueError, "grads"),
        ("int params", lambda: (np.ones((3, 4), np.int64), g, rv, cv, None), TypeError, "params"),
        ("read-only row_var", lambda: (p, g, ro, cv, None), ValueError, "row_vars"),
        ("strided params", lambda: (np.ones((3, 8))[:, ::2], g, rv, cv, None), ValueError, "params"),
        ("gradient is the parameter", lambda: ([p], [p], [rv], [cv], [None]), ValueError, "share memory"),
        ("col_var aliases row_var", lambda: (np.ones((3, 3)), np.ones((3, 3)), rv, rv.reshape(1, 3), None),
         ValueError, "share memory"),
        ("list lengths", lambda: ([p, v], [g], [rv, None], [cv, None], [None, np.zeros(5)]), ValueError,
         "grads has 1 entries but params has 2"),
        ("list and array", lambda: ([p], g, [rv], [cv], [None]), TypeError, "grads must be a list"),
        ("array and list", lambda: (p, [g], rv, cv, None), TypeError, "grads must be an array"),
        ("second tensor bad", lambda: ([p, v], [g, v.copy()], [rv, None], [cv, None], [None, np.zeros(4)]),
         ValueError, r"variances\[1\]"),
    ]


@pytest.mark.parametrize("fn", IMPLS, ids=["twin", "kernel"])
@pytest.mark.parametrize("case", range(len(_bad_arrays())), ids=[c[0] for c in _bad_arrays()])
def test_bad_arrays_change_nothing(fn, case):
    _, make, exc, match = _bad_arrays()[case]
    args = make()
    flat, snap = _snap(args)
    with pytest.raises(exc, match=match):
        fn(*args, step=1, lr=0.1)
    for a, s in zip(flat, snap):
        assert_same_bits(a, s)


def test_kernel_and_twin_refuse_with_the_same_message():
    for _, make, exc, _ in _bad_arrays():
        msgs = []
        for fn in IMPLS:
            with pytest.raises(exc) as info:
                fn(*make(), step=1)
            msgs.append(str(info.value))
        assert msgs[0] == msgs[1]


# ------------------------------------------------------------------ torch
try:
    import torch
except ImportError:  # the torch extra is not installed: the torch comparisons skip
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed (pip install '.[torch]')")


def _torch_run(dtype, hp, step_fn, steps=100):
    """100 steps of torch.optim.Adafactor beside step_fn(ours, grads, step) from the same
    start, the gradients computed from each side's own parameters."""
    rng = np.random.default_rng(42)
    p0 = [np.array(rng.standard_normal(s), dtype) for s in SHAPES]
    targets = [np.array(rng.standard_normal(s), dtype) for s in SHAPES]
    sign = -1.0 if hp.get("maximize") else 1.0
    ours = [p.copy() for p in p0]
    theirs = [torch.tensor(p) for p in p0]
    opt = torch.optim.Adafactor(theirs, **hp)
    for step in range(1, steps + 1):
        noise = [np.array(rng.standard_normal(s) * 0.1, dtype) for s in SHAPES]
        step_fn(ours, [np.array(sign * ((p - t) * 0.5 + n), dtype) for p, t, n in zip(ours, targets, noise)], step)
        for p, t, n in zip(theirs, targets, noise):
            p.grad = torch.from_numpy(np.array(sign * ((p.numpy() - t) * 0.5 + n), dtype))
        opt.step()
    tol = TOL[dtype]
    for k, (a, b) in enumerate(zip(ours, theirs)):
        b = b.numpy()
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * (1 + np.abs(b).max()), err_msg=f"tensor {k}")
    assert max(float(np.abs(a - p).max()) for a, p in zip(ours, p0)) > 1e-2
    return opt, theirs


@needs_torch
@pytest.mark.parametrize("fn", IMPLS, ids=["twin", "kernel"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("hp", CASES, ids=[str(i) for i in range(len(CASES))])
def test_functional_trajectory_equals_torch(fn, hp, dtype):
    state = {}

    def step(ours, grads, t):
        if not state:
            state["s"] = _states(ours)
        fn(ours, grads, *state["s"], step=t, **hp)

    opt, theirs = _torch_run(dtype, hp, step)
    rvs, cvs, vs = state["s"]
    for k, p in enumerate(theirs):
        st = opt.state[p]
        if p.dim() >= 2:
            np.testing.assert_allclose(rvs[k], st["row_var"].numpy(), rtol=TOL[dtype] * 10)
            np.testing.assert_allclose(cvs[k], st["col_var"].numpy(), rtol=TOL[dtype] * 10)
        else:
            np.testing.assert_allclose(vs[k], st["variance"].numpy(), rtol=TOL[dtype] * 10, atol=1e-30)


@needs_torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("hp", CASES, ids=[str(i) for i in range(len(CASES))])
def test_optimizer_trajectory_equals_torch(hp, dtype):
    holder = {}

    def step(ours, grads, t):
        if not holder:
            holder["opt"] = Adafactor(ours, **hp)
        assert holder["opt"].step(grads)

    _torch_run(dtype, hp, step)


@needs_torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("hp", CASES, ids=[str(i) for i in range(len(CASES))])
def test_torch_adapter_trajectory_equals_torch(hp, dtype):
    import deepoptim.torch as dt

    holder = {}

    def step(ours, grads, t):
        if not holder:
            holder["ts"] = [torch.from_numpy(p) for p in ours]  # the same memory as ours
            holder["opt"] = dt.Adafactor(holder["ts"], **hp)
        for p, g in zip(holder["ts"], grads):
            p.grad = torch.from_numpy(g)
        holder["opt"].step()

    opt, theirs = _torch_run(dtype, hp, step)
    mine = holder["opt"].state_dict()["state"]
    for k, p in enumerate(theirs):
        assert set(mine[k]) == set(opt.state[p]), "state names as torch's"
        assert float(mine[k]["step"]) == 100.0 and mine[k]["step"].dtype == torch.float32


# ----------------------------------------------------------------- optimizers
def _train(opt, ps, rng, steps, skip=None):
    for t in range(steps):
        grads = [np.array(rng.standard_normal(p.shape), p.dtype) for p in ps]
        if skip is not None and t == skip:
            grads[1] = None  # a parameter without a gradient this step
        opt.step(grads)


def test_state_dict_resumes_bit_for_bit_and_skips_missing_gradients():
    rng = np.random.default_rng(9)
    ps = [np.array(rng.standard_normal(s), np.float32) for s in SHAPES]
    opt = Adafactor(ps, lr=0.03, weight_decay=0.01)
    _train(opt, ps, np.random.default_rng(1), 5, skip=2)
    sd = copy.deepcopy(opt.state_dict())
    assert sd["state"][0]["step"] == [5, 4, 5, 5, 5, 5]
    qs = [p.copy() for p in ps]
    other = Adafactor(qs, lr=0.03, weight_decay=0.01)
    other.load_state_dict(sd)
    _train(opt, ps, np.random.default_rng(2), 3)
    _train(other, qs, np.random.default_rng(2), 3)
    for a, b in zip(ps, qs):
        assert_same_bits(a, b, "resumed")
    shapes = {k: [a.shape for a in v] for k, v in sd["state"][0].items() if k != "step"}
    assert shapes["row_var"][1] == (33, 1) and shapes["col_var"][1] == (1, 5) and shapes["variance"][1] == (0,)
    assert shapes["variance"][0] == (7,) and shapes["row_var"][0] == (0,)


def test_load_state_dict_refuses_bad_state_and_changes_nothing():
    rng = np.random.default_rng(9)
    ps = [np.array(rng.standard_normal(s), np.float32) for s in SHAPES]
    opt = Adafactor(ps)
    _train(opt, ps, rng, 2)
    before = copy.deepcopy(opt.state_dict())
    for name, k, bad in (("row_var", 1, np.zeros((33, 5), np.float32)), ("variance", 0, np.zeros((6,), np.float32)),
                         ("col_var", 2, -np.ones((2, 1, 4), np.float32))):
        sd = copy.deepcopy(before)
        sd["state"][0][name][k] = bad
        with pytest.raises(ValueError, match=name):
            opt.load_state_dict(sd)
        after = opt.state_dict()
        for n in ("row_var", "col_var", "variance"):
            for a, b in zip(after["state"][0][n], before["state"][0][n]):
                assert_same_bits(a, b)


@pytest.mark.parametrize("kw", [dict(state_dtype="float16"), dict(master_weights=True), dict(beta2_decay=0.1),
                                dict(eps=(None, -1.0)), dict(d=0.0), dict(eps=("a", 1e-3))])
def test_optimizer_refusals(kw):
    p = np.ones((4, 3), np.float32)
    with pytest.raises((ValueError, TypeError)):
        Adafactor([p], **kw)


@needs_torch
def test_torch_adapter_state_dict_round_trips_with_torch():
    import deepoptim.torch as dt

    rng = np.random.default_rng(4)
    p0 = [torch.tensor(np.array(rng.standard_normal(s), np.float32)) for s in SHAPES]

    def run(opt, ps, seed, steps):
        r = np.random.default_rng(seed)
        for _ in range(steps):
            for p in ps:
                p.grad = torch.tensor(np.array(r.standard_normal(tuple(p.shape)), np.float32))
            opt.step()

    a = [p.clone() for p in p0]
    b = [p.clone() for p in p0]
    ours, theirs = dt.Adafactor(a, lr=0.02), torch.optim.Adafactor(b, lr=0.02)
    run(ours, a, 1, 4)
    run(theirs, b, 1, 4)
    # torch's state into ours, ours into torch's: both continue as torch would
    c, d = [p.clone() for p in b], [p.clone() for p in a]
    ours2, theirs2 = dt.Adafactor(c, lr=0.02), torch.optim.Adafactor(d, lr=0.02)
    ours2.load_state_dict(copy.deepcopy(theirs.state_dict()))
    theirs2.load_state_dict(copy.deepcopy(ours.state_dict()))
    for opt, ps in ((ours2, c), (theirs2, d), (theirs, b)):
        run(opt, ps, 2, 3)
    for x, y, z in zip(c, d, b):
        np.testing.assert_allclose(x.numpy(), z.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(y.numpy(), z.numpy(), rtol=1e-5, atol=1e-6)


@needs_torch
def test_torch_adapter_refusals_change_nothing():
    import deepoptim.torch as dt

    p = torch.ones(4, 3)
    with pytest.raises(ValueError, match="beta2_decay"):
        dt.Adafactor([p], beta2_decay=0.5)
    with pytest.raises(TypeError, match="dtype torch.int64"):
        dt.Adafactor([torch.ones(4, 3, dtype=torch.int64)])
    q = torch.ones(5)
    opt = dt.Adafactor([p, q])
    p.grad = torch.ones(4, 3)
    q.grad = torch.ones(10)[::2]  # not contiguous: nothing may move, not even p
    with pytest.raises(ValueError, match="parameter 0.1"):
        opt.step()
    assert (p == 1).all() and not opt.state
    opt.param_groups[0]["d"] = 0.5
    q.grad = torch.ones(5)
    with pytest.raises(ValueError, match="d must"):
        opt.step()
    assert (p == 1).all() and (q == 1).all() and not opt.state
    opt.param_groups[0]["d"] = 1.0
    opt.step()
    assert set(opt.state[p]) == {"step", "row_var", "col_var"} and set(opt.state[q]) == {"step", "variance"}


def test_all_configurations_of_the_optimizer_match_the_functional_kernel():
    """deepoptim.optim.Adafactor is the kernel with its own step counting: the same bits."""
    for hp, dtype in itertools.product(CASES, (np.float32, np.float64)):
        rng = np.random.default_rng(0)
        ps = [np.array(rng.standard_normal(s), dtype) for s in SHAPES]
        qs = [p.copy() for p in ps]
        opt = Adafactor(ps, **hp)
        st = _states(qs)
        for t in range(1, 4):
            gs = [np.array(rng.standard_normal(s), dtype) for s in SHAPES]
            opt.step(gs)
            F.adafactor(qs, gs, *st, step=t, **hp)
        for a, b in zip(ps, qs):
            assert_same_bits(a, b, str(hp))
