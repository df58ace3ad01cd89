"""deepoptim.optim: parameter structures, groups, schedules, state_dict round trips,
the non-finite guard, the gradient-norm-ratio rate, regularization options, against
torch.optim where torch has the optimizer and against the NumPy twins for LAMB/LARS."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from deepoptim import optim, reference as R
from deepoptim.regularization import is_bias_or_norm, param_groups

SHAPES = {"w1": (5, 4), "b1": (5,), "w2": (3, 5), "b2": (3,)}


def named(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()}


def grads_for(params, rng, scale=1.0):
    return {k: (rng.standard_normal(v.shape) * scale).astype(v.dtype) for k, v in params.items()}


ALL = [
    (optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    (optim.SGD, dict(lr=0.05, momentum=0.9, momentum_form="ema")),
    (optim.Adagrad, dict(lr=0.1, lr_decay=1e-3, initial_accumulator_value=0.1)),
    (optim.RMSprop, dict(lr=1e-2, centered=True, momentum=0.5)),
    (optim.Adam, dict(lr=1e-2, amsgrad=True, weight_decay=1e-2)),
    (optim.AdamW, dict(lr=1e-2)),
    (optim.LAMB, dict(lr=1e-2, weight_decay=1e-2, exclude=is_bias_or_norm)),
    (optim.LARS, dict(lr=0.5, weight_decay=1e-4, exclude=is_bias_or_norm)),
    (optim.ScheduleFreeAdamW, dict(lr=1e-2, weight_decay=1e-2, warmup_steps=5, r=0.5)),
]


# ------------------------------------------------------------ against torch.optim
TORCH = [
    ("SGD", optim.SGD, dict(momentum=0.9, dampening=0.1, weight_decay=1e-2)),
    ("SGD", optim.SGD, dict(momentum=0.9, nesterov=True)),
    ("Adagrad", optim.Adagrad, dict(lr_decay=1e-2, initial_accumulator_value=0.2)),
    ("RMSprop", optim.RMSprop, dict(centered=True, momentum=0.9, weight_decay=1e-3)),
    ("Adam", optim.Adam, dict(amsgrad=True, weight_decay=1e-2)),
    ("AdamW", optim.AdamW, dict(weight_decay=0.1, maximize=True)),
]


@pytest.mark.parametrize("tname,cls,hp", TORCH, ids=[f"{t[0]}-{i}" for i, t in enumerate(TORCH)])
def test_groups_trajectory_equals_torch(tname, cls, hp):
    """Two parameter groups with their own learning rates, 100 steps, float64."""
    torch = pytest.importorskip("torch")
    p = named()
    tp = {k: torch.tensor(v.copy()) for k, v in p.items()}
    ours = cls([{"params": {"w1": p["w1"], "b1": p["b1"]}, "lr": 0.05},
                {"params": {"w2": p["w2"], "b2": p["b2"]}, "lr": 0.01}], **hp)
    theirs = getattr(torch.optim, tname)([{"params": [tp["w1"], tp["b1"]], "lr": 0.05},
                                          {"params": [tp["w2"], tp["b2"]], "lr": 0.01}], **hp)
    rng = np.random.default_rng(1)
    for _ in range(100):
        g = grads_for(p, rng)
        ours.step([{"w1": g["w1"], "b1": g["b1"]}, {"w2": g["w2"], "b2": g["b2"]}])
        for k, t in tp.items():
            t.grad = torch.from_numpy(g[k].copy())
        theirs.step()
    for k in p:
        np.testing.assert_allclose(p[k], tp[k].numpy(), rtol=1e-11, atol=1e-12, err_msg=k)


def test_schedule_matches_torch_scheduler():
    torch = pytest.importorskip("torch")
    from deepoptim import schedules

    p = named()
    tp = {k: torch.tensor(v.copy()) for k, v in p.items()}
    ours = optim.SGD(p, lr=schedules.step_decay(0.1, step_size=7, gamma=0.5), momentum=0.9)
    topt = torch.optim.SGD(list(tp.values()), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(topt, step_size=7, gamma=0.5)
    rng = np.random.default_rng(2)
    for _ in range(40):
        assert ours.lr[0] == pytest.approx(sched.get_last_lr()[0], rel=1e-15)
        g = grads_for(p, rng)
        ours.step(g)
        for k, t in tp.items():
            t.grad = torch.from_numpy(g[k].copy())
        topt.step()
        sched.step()
    for k in p:
        np.testing.assert_allclose(p[k], tp[k].numpy(), rtol=1e-12, atol=1e-13)


# ------------------------------------------------------------ LAMB / LARS vs twins
@pytest.mark.parametrize("cls,twin", [(optim.LAMB, "lamb"), (optim.LARS, "lars")])
def test_lamb_lars_trajectories_equal_written_out_reference(cls, twin):
    p = named()
    ref = {k: v.copy() for k, v in p.items()}
    names = list(p)
    adapt = [not is_bias_or_norm(n, p[n]) for n in names]
    opt = cls(p, lr=0.01, weight_decay=1e-2, exclude=is_bias_or_norm)
    m = [np.zeros_like(v) for v in ref.values()]
    v2 = [np.zeros_like(v) for v in ref.values()]
    rng = np.random.default_rng(3)
    for step in range(1, 51):
        g = grads_for(p, rng)
        opt.step(g)
        plist, glist = [ref[n] for n in names], [g[n] for n in names]
        if twin == "lamb":
            R.lamb(plist, glist, m, v2, step=step, lr=0.01, weight_decay=1e-2, adapt=adapt)
        else:
            R.lars(plist, glist, m, lr=0.01, weight_decay=1e-2, adapt=adapt)
    for n in names:
        np.testing.assert_allclose(p[n], ref[n], rtol=1e-12, atol=1e-13, err_msg=n)
    ratios = opt.param_groups[0]["trust_ratio"]
    assert [r == 1.0 for r in ratios] == [not a for a in adapt]  # excluded tensors: ratio 1


# ------------------------------------------------------------ structures
def test_list_dict_and_group_structures_agree():
    base = named()
    rng = np.random.default_rng(4)
    gs = [grads_for(base, rng) for _ in range(5)]
    a, b, c = ({k: v.copy() for k, v in base.items()} for _ in range(3))
    oa = optim.Adam(list(a.values()), lr=0.01)
    ob = optim.Adam(b, lr=0.01)
    oc = optim.Adam([{"params": [c["w1"], c["b1"]]}, {"params": {"w2": c["w2"], "b2": c["b2"]}}], lr=0.01)
    for g in gs:
        oa.step(list(g.values()))
        ob.step(g)
        oc.step([[g["w1"], g["b1"]], {"w2": g["w2"], "b2": g["b2"]}])
    for k in base:
        assert a[k].tobytes() == b[k].tobytes() == c[k].tobytes()


@pytest.mark.parametrize("bad,exc,needle", [
    (lambda g: list(g.values()), TypeError, "must be a dict like its params"),
    (lambda g: {k: v for k, v in g.items() if k != "b2"}, ValueError, r"missing \['b2'\]"),
    (lambda g: {**g, "zz": g["b1"]}, ValueError, r"unexpected \['zz'\]"),
    (lambda g: {**g, "w2": g["w2"].T.copy()}, ValueError, r"gradient w2 has shape \(5, 3\)"),
    (lambda g: {**g, "b2": g["b2"].astype(np.float32)}, TypeError, "gradient b2 has dtype float32"),
    (lambda g: {**g, "w1": g["w1"][:, ::2].repeat(2, axis=1)[:, :4].T.copy().T}, ValueError, "C-contiguous"),
])
def test_mismatched_grads_refused_and_nothing_modified(bad, exc, needle):
    p = named()
    opt = optim.Adam(p, lr=0.1)
    rng = np.random.default_rng(5)
    opt.step(grads_for(p, rng))
    before_p, before_s = pickle.dumps(p), pickle.dumps(opt.state_dict())
    with pytest.raises(exc, match=needle):
        opt.step(bad(grads_for(p, rng)))
    assert pickle.dumps(p) == before_p and pickle.dumps(opt.state_dict()) == before_s


def test_groups_grads_need_one_entry_per_group():
    p = named()
    opt = optim.SGD([{"params": [p["w1"]]}, {"params": [p["w2"]], "lr": 0.5}], lr=0.1)
    with pytest.raises(ValueError, match="one entry per parameter group"):
        opt.step([[np.ones_like(p["w1"])]])
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]


@pytest.mark.parametrize("make,exc,needle", [
    (lambda: optim.Adam([]), ValueError, "has no parameters"),
    (lambda: optim.Adam(np.ones(3)), TypeError, "not a single array"),
    (lambda: optim.Adam([np.ones(3, np.int32)]), TypeError, "must have dtype float32, float64, bfloat16 or float16"),
    (lambda: optim.Adam([np.ones(6)[::2]]), ValueError, "C-contiguous"),
    (lambda: optim.Adam([np.ones(3), np.ones(3, np.float32)]), TypeError, "mixes dtypes"),
    (lambda: (lambda a: optim.Adam([a, a]))(np.ones(3)), ValueError, "parameters 0 and 1 share memory"),
    (lambda: optim.Adam([np.ones(3)], lr=-1.0), ValueError, "lr must be"),
    (lambda: optim.Adam([np.ones(3)], betas=(0.9, 1.0)), ValueError, r"beta2 must be in \[0.0, 1.0\)"),
    (lambda: optim.Adam([{"params": [np.ones(3)], "bogus": 1}]), ValueError, "unknown hyperparameters"),
    (lambda: optim.SGD([np.ones(3)], nesterov=True), ValueError, "nesterov=True requires momentum"),
    (lambda: optim.RMSprop([np.ones(3)], eps=0.0), ValueError, "eps must be"),
    (lambda: optim.SGD([np.ones(3)], l1_mode="lasso"), ValueError, "l1_mode"),
])
def test_construction_refuses_bad_input(make, exc, needle):
    with pytest.raises(exc, match=needle):
        make()


# ------------------------------------------------------------ state_dict
@pytest.mark.parametrize("cls,hp", ALL, ids=[f"{c.__name__}-{i}" for i, (c, _) in enumerate(ALL)])
def test_resume_from_checkpoint_is_bit_identical(cls, hp):
    from deepoptim import schedules

    def make(p):
        return cls(p, **{**hp, "lr": schedules.cosine(hp["lr"], total_steps=15)}, grad_norm_ratio=True)

    rng = np.random.default_rng(6)
    gs = [grads_for(named(), rng) for _ in range(20)]
    straight = named()
    o1 = make(straight)
    for g in gs:
        o1.step(g)

    resumed = named()
    o2 = make(resumed)
    for g in gs[:8]:
        o2.step(g)
    blob = pickle.dumps((resumed, o2.state_dict()))
    params, state = pickle.loads(blob)
    o3 = make(params)
    o3.load_state_dict(state)
    for g in gs[8:]:
        o3.step(g)
    for k in straight:
        assert straight[k].tobytes() == params[k].tobytes(), k


def test_load_state_dict_refuses_mismatches_and_changes_nothing():
    p = named()
    opt = optim.Adam(p, lr=0.1)
    opt.step(grads_for(p, np.random.default_rng(7)))
    good = opt.state_dict()
    before = pickle.dumps(opt.state_dict())
    other = optim.SGD(named(), lr=0.1, momentum=0.9).state_dict()
    with pytest.raises(ValueError, match="is for 'SGD'"):
        opt.load_state_dict(other)
    bad = pickle.loads(pickle.dumps(good))
    bad["state"][0]["exp_avg"][1] = np.zeros(4)
    with pytest.raises(ValueError, match="state exp_avg of b1 has shape"):
        opt.load_state_dict(bad)
    bad = pickle.loads(pickle.dumps(good))
    bad["param_groups"][0]["names"][0] = "renamed"
    with pytest.raises(ValueError, match="names or shapes differ"):
        opt.load_state_dict(bad)
    assert pickle.dumps(opt.state_dict()) == before


def test_state_dict_is_plain_and_savez_compatible(tmp_path):
    p = named()
    opt = optim.Adam(p, lr=0.1, amsgrad=True)
    opt.step(grads_for(p, np.random.default_rng(8)))
    sd = opt.state_dict()
    flat = {f"{n}.{i}": a for n, arrs in sd["state"][0].items() for i, a in enumerate(arrs)}
    np.savez(tmp_path / "s.npz", **flat)
    loaded = np.load(tmp_path / "s.npz")
    assert all(np.array_equal(loaded[k], v) for k, v in flat.items())
    assert sd["param_groups"][0]["step"] == 1 and sd["optimizer"] == "Adam"


def test_add_param_group_reset_and_lr_property():
    p = named()
    opt = optim.SGD({"w1": p["w1"]}, lr=0.1, momentum=0.9)
    opt.add_param_group({"params": {"w2": p["w2"]}, "lr": 0.01})
    assert opt.lr == [0.1, 0.01]
    opt.lr = 0.5
    assert opt.lr == [0.5, 0.5]
    opt.param_groups[1]["lr"] = 0.25
    assert opt.lr == [0.5, 0.25]
    opt.step([{"w1": np.ones((5, 4))}, {"w2": np.ones((3, 5))}])
    assert opt.param_groups[0]["_state"]["momentum_buffer"][0].any()
    opt.reset_state()
    assert not opt.param_groups[0]["_state"]["momentum_buffer"][0].any()
    assert [g["step"] for g in opt.param_groups] == [0, 0]
    with pytest.raises(ValueError, match="share memory"):
        opt.add_param_group({"params": [p["w1"]]})
    opt.param_groups[0]["lr"] = -1.0
    before = pickle.dumps(p)
    with pytest.raises(ValueError, match="parameter group 0: lr must be a finite number >= 0"):
        opt.step([{"w1": np.ones((5, 4))}, {"w2": np.ones((3, 5))}])
    assert pickle.dumps(p) == before


# ------------------------------------------------------------ guard, ratio, regularization
def test_nonfinite_guard_skips_and_counts():
    p = named()
    opt = optim.Adam(p, lr=0.1, skip_nonfinite=True)
    rng = np.random.default_rng(10)
    opt.step(grads_for(p, rng))
    before_p, before_s = pickle.dumps(p), pickle.dumps(opt.state_dict()["state"])
    g = grads_for(p, rng)
    g["b2"][1] = np.nan
    with pytest.warns(optim.NonFiniteGradients, match="step skipped"):
        assert opt.step(g) is False
    g["b2"][1] = np.inf
    with pytest.warns(optim.NonFiniteGradients):
        assert opt.step(g) is False
    assert pickle.dumps(p) == before_p and pickle.dumps(opt.state_dict()["state"]) == before_s
    assert opt.state["skipped_steps"] == 2 and opt.param_groups[0]["step"] == 1
    assert opt.step(grads_for(p, rng)) is True


def test_without_guard_nan_propagates():
    p = named()
    opt = optim.Adam(p, lr=0.1)
    g = grads_for(p, np.random.default_rng(11))
    g["b2"][1] = np.nan
    assert opt.step(g) is True
    assert np.isnan(p["b2"][1]) and np.isfinite(p["w1"]).all()


def test_grad_norm_ratio_learning_rate():
    """The gradient-norm-ratio rate: lr_t = lr * max(|g_t|^2, eps) / max(|g_{t-1}|^2, eps); plain SGD shows it."""
    p = {"w": np.zeros(2)}
    opt = optim.SGD(p, lr=0.1, grad_norm_ratio=True)
    opt.step({"w": np.array([1.0, 0.0])})           # first step: ratio 1
    np.testing.assert_allclose(p["w"], [-0.1, 0.0])
    opt.step({"w": np.array([2.0, 0.0])})           # |g|^2 went 1 -> 4: lr 0.4
    np.testing.assert_allclose(p["w"], [-0.1 - 0.4 * 2.0, 0.0])


def test_decoupled_weight_decay_for_sgd():
    p = {"w": np.array([1.0, -2.0])}
    opt = optim.SGD(p, lr=0.1, weight_decay=0.5, decoupled_weight_decay=True)
    opt.step({"w": np.array([1.0, 1.0])})
    np.testing.assert_allclose(p["w"], np.array([1.0, -2.0]) * (1 - 0.05) - 0.1 * np.array([1.0, 1.0]))


def test_l1_subgradient_and_proximal():
    g = {"w": np.array([0.1, -0.1, 0.0, 0.02])}
    g_before = g["w"].copy()
    p = {"w": np.array([1.0, -1.0, 0.0, 0.01])}
    optim.SGD(p, lr=0.5, l1=0.1).step(g)
    np.testing.assert_allclose(p["w"], [1.0 - 0.5 * 0.2, -1.0 + 0.5 * 0.2, 0.0, 0.01 - 0.5 * 0.12])
    np.testing.assert_array_equal(g["w"], g_before)  # the caller's gradients are untouched
    q = {"w": np.array([1.0, -1.0, 0.0, 0.01])}
    optim.SGD(q, lr=0.5, l1=0.1, l1_mode="proximal").step(g)
    after_sgd = np.array([1.0, -1.0, 0.0, 0.01]) - 0.5 * g["w"]
    np.testing.assert_allclose(q["w"], np.sign(after_sgd) * np.maximum(np.abs(after_sgd) - 0.05, 0))
    assert q["w"][3] == 0.0  # the proximal form produces exact zeros


def test_param_groups_exclude_biases_from_decay():
    p = named()
    groups = param_groups(p, weight_decay=0.1)
    assert [sorted(g["params"]) for g in groups] == [["w1", "w2"], ["b1", "b2"]]
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    by_name = param_groups(p, 0.1, exclude=["w2"])
    assert sorted(by_name[1]["params"]) == ["w2"]
    by_mask = param_groups(p, 0.1, exclude=[True, False, False, False])
    assert sorted(by_mask[1]["params"]) == ["w1"]
    opt = optim.AdamW(groups, lr=0.1)
    b_before = p["b1"].copy()
    opt.step([{"w1": np.zeros((5, 4)), "w2": np.zeros((3, 5))}, {"b1": np.zeros(5), "b2": np.zeros(3)}])
    np.testing.assert_array_equal(p["b1"], b_before)  # zero grads, no decay: unchanged
    assert not np.array_equal(p["w1"], named()["w1"])  # decayed


def test_named_groups_take_one_flat_dict():
    p, q = named(), named()
    groups = lambda d: [{"params": {"w1": d["w1"], "w2": d["w2"]}}, {"params": {"b1": d["b1"], "b2": d["b2"]}, "lr": 0.01}]
    a, b = optim.Adam(groups(p), lr=0.1), optim.Adam(groups(q), lr=0.1)
    g = grads_for(p, np.random.default_rng(12))
    a.step(g)
    b.step([{"w1": g["w1"], "w2": g["w2"]}, {"b1": g["b1"], "b2": g["b2"]}])
    assert all(p[k].tobytes() == q[k].tobytes() for k in p)
    with pytest.raises(ValueError, match=r"missing \['b2'\]"):
        a.step({k: v for k, v in g.items() if k != "b2"})


def test_metric_driven_schedules_plug_into_optimizers():
    from deepoptim import schedules

    plateau = schedules.ReduceOnPlateau(0.1, patience=0, factor=0.5)
    p = {"w": np.zeros(1)}
    opt = optim.SGD(p, lr=plateau)
    for loss in (1.0, 1.0, 1.0):
        opt.step({"w": np.ones(1)})
        plateau.step(loss)
    assert opt.lr == [0.025]  # two non-improving epochs halved it twice
    np.testing.assert_allclose(p["w"], [-(0.1 + 0.1 + 0.05)])

    restart = schedules.RestartOnThreshold(schedules.exponential(1.0, gamma=0.5), threshold=0.1)
    opt = optim.SGD({"w": np.zeros(1)}, lr=restart)
    seen = []
    for loss in (1.0, 0.5, 0.05, 0.9):
        seen.append(opt.lr[0])
        opt.step({"w": np.ones(1)})
        restart.step(loss)
    assert seen == [1.0, 0.5, 0.25, 1.0] and restart.restarts == 1  # crossed 0.1: back to the start
