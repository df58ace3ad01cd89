"""All or nothing: a step or a state load that raises has changed nothing (parameters,
state, step counts, the gradient-norm history); a state that loads is one training could
have produced. Also: gradients may be None (skipped, as torch does), and groups may
differ in dtype under the non-finite guard and the gradient-norm ratio."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepoptim import optim
from deepoptim.regularization import is_bias_or_norm


def _unaligned(shape, dtype=np.float64):
    n = int(np.prod(shape))
    buf = np.zeros(n * np.dtype(dtype).itemsize + 1, np.uint8)
    a = np.frombuffer(buf.data, dtype=dtype, count=n, offset=1).reshape(shape)
    assert not a.flags.aligned
    return a


def _snapshot(opt, params):
    return pickle.dumps((opt.state_dict(), [np.asarray(p).tobytes() for p in params]))


def _two_groups(cls=optim.Adam, **kw):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((4, 3)), rng.standard_normal(5)
    opt = cls([{"params": [a]}, {"params": [b], "lr": 0.01}], lr=0.1, **kw)
    return opt, [a, b]


# ------------------------------------------------------------------ step
@pytest.mark.parametrize("fault", ["unaligned", "aliases_param", "aliases_state", "masked"])
def test_fault_in_second_group_changes_nothing(fault):
    opt, (a, b) = _two_groups()
    opt.step([[np.ones_like(a)], [np.ones_like(b)]])
    before = _snapshot(opt, [a, b])
    bad = {"unaligned": lambda: _unaligned(b.shape),
           "aliases_param": lambda: a.reshape(-1)[:5],
           "aliases_state": lambda: opt.param_groups[0]["_state"]["exp_avg"][0].reshape(-1)[:5],
           "masked": lambda: np.ma.masked_array(np.ones(5))}[fault]()
    needle = {"unaligned": "gradient 1.0 is not aligned", "aliases_param": "gradient 1.0 shares memory with parameter 0.0",
              "aliases_state": "gradient 1.0 shares memory with state exp_avg of parameter 0.0",
              "masked": "gradient 1.0 is a numpy.ma.MaskedArray"}[fault]
    with pytest.raises((TypeError, ValueError), match=needle):
        opt.step([[np.ones_like(a)], [bad]])
    assert _snapshot(opt, [a, b]) == before
    assert [g["step"] for g in opt.param_groups] == [1, 1]


def test_decoupled_decay_applied_once_and_never_by_a_failed_step():
    w = np.ones(4)
    opt = optim.SGD([w], lr=0.1, weight_decay=0.5, decoupled_weight_decay=True)
    with pytest.raises(ValueError, match="gradient 0 is not aligned"):
        opt.step([_unaligned((4,))])
    assert np.all(w == 1.0) and opt.param_groups[0]["step"] == 0
    opt.step([np.zeros(4)])
    assert np.all(w == 1.0 - 0.1 * 0.5)  # once, not twice


@pytest.mark.parametrize("cls", [optim.SGD, optim.Adagrad, optim.RMSprop, optim.LAMB, optim.LARS])
def test_decoupled_decay_equals_explicit_scaling(cls):
    """Decay is applied in exactly one place, whatever the subclass: the same as scaling
    the parameters by hand and stepping without decay."""
    rng = np.random.default_rng(1)
    w1 = rng.standard_normal(50)
    w2 = w1.copy()
    o1 = cls([w1], lr=0.05, weight_decay=0.3, decoupled_weight_decay=True)
    o2 = cls([w2], lr=0.05, weight_decay=0.0)
    for _ in range(5):
        g = rng.standard_normal(50)
        o1.step([g])
        w2 *= 1 - 0.05 * 0.3
        o2.step([g])
    assert w1.tobytes() == w2.tobytes()


def test_failed_step_leaves_grad_norm_history():
    opt, (a, b) = _two_groups(grad_norm_ratio=True)
    opt.step([[np.ones_like(a)], [np.ones_like(b)]])
    prev = opt.state["prev_grad_sq_norm"]
    with pytest.raises(ValueError):
        opt.step([[np.full_like(a, 3.0)], [np.ones(6)]])
    assert opt.state["prev_grad_sq_norm"] == prev


def test_hyperparameter_edited_to_a_bad_value_fails_before_any_group_moves():
    opt, (a, b) = _two_groups()
    opt.param_groups[1]["betas"] = (0.9, float("nan"))
    before = _snapshot(opt, [a, b])
    with pytest.raises(ValueError, match="parameter group 1: beta2 must be in"):
        opt.step([[np.ones_like(a)], [np.ones_like(b)]])
    assert _snapshot(opt, [a, b]) == before


def test_state_changing_option_edited_after_construction_is_refused():
    opt, (a, b) = _two_groups()
    opt.param_groups[1]["amsgrad"] = True
    before = _snapshot(opt, [a, b])
    with pytest.raises(ValueError, match="cannot change after construction"):
        opt.step([[np.ones_like(a)], [np.ones_like(b)]])
    assert _snapshot(opt, [a, b]) == before


def test_overlapping_parameters_refused_at_construction():
    w = np.zeros(6)
    with pytest.raises(ValueError, match="parameters 0 and 1 share memory"):
        optim.Adam([w[:4], w[2:]])
    with pytest.raises(ValueError, match="share memory"):
        optim.Adam([{"params": [w[:4]]}, {"params": [w[3:]]}])
    optim.Adam([w[:3], w[3:]])  # adjacent views are fine


# ------------------------------------------------------------------ None gradients
@pytest.mark.parametrize("structure", ["list", "dict"])
def test_none_gradient_skips_the_parameter(structure):
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal(3), rng.standard_normal(4)
    params = [a, b] if structure == "list" else {"a": a, "b": b}
    opt = optim.Adam(params, lr=0.1, weight_decay=0.1, decoupled_weight_decay=True)
    b0 = b.copy()
    grads = [np.ones(3), None] if structure == "list" else {"a": np.ones(3), "b": None}
    assert opt.step(grads) is True
    assert np.array_equal(b, b0)
    st0 = opt.state_dict()["state"][0]
    assert not st0["exp_avg"][1].any() and not st0["exp_avg_sq"][1].any()
    assert st0["step"] == [1, 0]


@pytest.mark.parametrize("tname,cls,hp", [
    ("Adam", optim.Adam, dict(weight_decay=1e-2, amsgrad=True)),
    ("AdamW", optim.AdamW, dict(weight_decay=0.1)),
    ("SGD", optim.SGD, dict(momentum=0.9, dampening=0.1)),
    ("Adagrad", optim.Adagrad, dict(lr_decay=1e-2, initial_accumulator_value=0.1)),
    ("RMSprop", optim.RMSprop, dict(centered=True, momentum=0.5)),
])
def test_none_gradients_follow_torch_per_parameter_steps(tname, cls, hp):
    """A parameter without a gradient keeps its own step count (Adam's bias correction,
    SGD's first-step buffer, Adagrad's lr decay), as torch.optim does."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    ps = [rng.standard_normal((3, 2)), rng.standard_normal(5)]
    tps = [torch.tensor(p.copy(), requires_grad=True) for p in ps]
    ours = cls(ps, lr=0.05, **hp)
    theirs = getattr(torch.optim, tname)(tps, lr=0.05, **hp)
    pattern = [(1, 1), (1, 0), (0, 1), (1, 1), (1, 0), (1, 1)]
    for has in pattern:
        gs = [rng.standard_normal(p.shape) if h else None for p, h in zip(ps, has)]
        ours.step(gs)
        for tp, g in zip(tps, gs):
            tp.grad = None if g is None else torch.tensor(g)
        theirs.step()
    for p, tp in zip(ps, tps):
        np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------ mixed-dtype groups
def test_guard_and_ratio_across_groups_of_different_dtypes():
    a, b = np.ones(3, np.float32), np.ones(4, np.float64)
    opt = optim.SGD([{"params": [a]}, {"params": [b]}], lr=0.1, skip_nonfinite=True, grad_norm_ratio=True)
    assert opt.step([[np.ones(3, np.float32)], [np.ones(4)]]) is True
    assert opt.state["prev_grad_sq_norm"] == pytest.approx(7.0)
    with pytest.warns(optim.NonFiniteGradients):
        assert opt.step([[np.ones(3, np.float32)], [np.array([1.0, np.nan, 1.0, 1.0])]]) is False
    assert opt.state["skipped_steps"] == 1


# ------------------------------------------------------------------ load_state_dict
def _trained(cls=optim.Adam, **kw):
    rng = np.random.default_rng(4)
    params = {"w": rng.standard_normal((3, 4)), "b": rng.standard_normal(3)}
    opt = cls(params, lr=0.1, **kw)
    for _ in range(3):
        opt.step({k: rng.standard_normal(v.shape) for k, v in params.items()})
    return opt, params


def _state_cases():
    def group(sd):
        return sd["param_groups"][0]

    def state(sd):
        return sd["state"][0]

    return {
        "state list too short": (lambda sd: state(sd).update(exp_avg=state(sd)["exp_avg"][:1]), ValueError, "one array per parameter"),
        "state lists empty": (lambda sd: state(sd).update(exp_avg=[], exp_avg_sq=[]), ValueError, "one array per parameter"),
        "missing skipped_steps": (lambda sd: sd.pop("skipped_steps"), ValueError, r"missing \['skipped_steps'\]"),
        "_state key in group": (lambda sd: group(sd).update(_state={}), ValueError, r"unexpected \['_state'\]"),
        "unknown group key": (lambda sd: group(sd).update(bogus=1), ValueError, r"unexpected \['bogus'\]"),
        "step -5": (lambda sd: group(sd).update(step=-5), ValueError, "step must be an int"),
        "step 1.5": (lambda sd: group(sd).update(step=1.5), ValueError, "step must be an int"),
        "step '3'": (lambda sd: group(sd).update(step="3"), ValueError, "step must be an int"),
        "step 2**63": (lambda sd: group(sd).update(step=2**63), ValueError, "step must be an int"),
        "step True": (lambda sd: group(sd).update(step=True), ValueError, "step must be an int"),
        "param step above group step": (lambda sd: state(sd).update(step=[9, 0]), ValueError, "state step"),
        "NaN beta": (lambda sd: group(sd).update(betas=(float("nan"), 0.999)), ValueError, "beta1 must be in"),
        "negative eps": (lambda sd: group(sd).update(eps=-1e-8), ValueError, "eps must be"),
        "NaN eps": (lambda sd: group(sd).update(eps=float("nan")), ValueError, "eps must be"),
        "negative weight decay": (lambda sd: group(sd).update(weight_decay=-0.1), ValueError, "weight_decay must be"),
        "string lr": (lambda sd: group(sd).update(lr="0.1"), ValueError, "lr must be"),
        "amsgrad without max state": (lambda sd: group(sd).update(amsgrad=True), ValueError, "need"),
        "amsgrad as a number": (lambda sd: group(sd).update(amsgrad=1.5), TypeError, "amsgrad must be a bool"),
        "params empty": (lambda sd: group(sd).update(names=[], shapes=[]), ValueError, "names or shapes differ"),
        "negative exp_avg_sq": (lambda sd: state(sd)["exp_avg_sq"][0].__setitem__((0, 0), -1.0), ValueError, "negative values"),
        "state of wrong dtype": (lambda sd: state(sd)["exp_avg"].__setitem__(1, np.zeros(3, np.float32)), ValueError, "shape/dtype"),
        "state not an array": (lambda sd: state(sd)["exp_avg"].__setitem__(1, [0.0, 0.0, 0.0]), TypeError, "must be a numpy.ndarray"),
        "negative skipped_steps": (lambda sd: sd.update(skipped_steps=-1), ValueError, "skipped_steps"),
        "NaN grad-norm history": (lambda sd: sd.update(prev_grad_sq_norm=float("nan")), ValueError, "prev_grad_sq_norm"),
        "wrong optimizer": (lambda sd: sd.update(optimizer="SGD"), ValueError, "is for 'SGD'"),
        "three groups": (lambda sd: sd["param_groups"].append(group(sd)), ValueError, "parameter groups"),
    }


@pytest.mark.parametrize("case", sorted(_state_cases()))
def test_bad_state_dict_refused_and_nothing_changes(case):
    opt, params = _trained()
    before = _snapshot(opt, params.values())
    sd = opt.state_dict()
    mutate, exc, needle = _state_cases()[case]
    mutate(sd)
    with pytest.raises(exc, match=needle):
        opt.load_state_dict(sd)
    assert _snapshot(opt, params.values()) == before


def test_loaded_state_trains_like_the_original():
    opt, params = _trained(amsgrad=True)
    twin_params = {k: v.copy() for k, v in params.items()}
    twin = optim.Adam(twin_params, lr=0.5, amsgrad=True)
    twin.load_state_dict(opt.state_dict())
    rng = np.random.default_rng(5)
    for _ in range(3):
        g = {k: rng.standard_normal(v.shape) for k, v in params.items()}
        opt.step(g)
        twin.step(g)
    for k in params:
        assert params[k].tobytes() == twin_params[k].tobytes()


def test_lamb_state_dict_is_a_copy_and_keeps_the_destination_exclude():
    opt, params = _trained(optim.LAMB, weight_decay=0.1, exclude=is_bias_or_norm)
    assert opt.param_groups[0]["adapt"] == [True, False]
    sd = opt.state_dict()
    sd["state"][0]["exp_avg"][0][...] = 123.0
    assert not np.any(opt.param_groups[0]["_state"]["exp_avg"][0] == 123.0)
    other = optim.LAMB({k: v.copy() for k, v in params.items()}, lr=0.1, weight_decay=0.1)
    other.load_state_dict(opt.state_dict())
    assert other.param_groups[0]["adapt"] == [True, True]  # its own exclude (none), not the source's


# ------------------------------------------------------------------ property test
CLASSES = [
    (optim.SGD, dict(momentum=0.9)),
    (optim.Adagrad, dict()),
    (optim.RMSprop, dict(centered=True, momentum=0.5)),
    (optim.Adam, dict(amsgrad=True)),
    (optim.AdamW, dict()),
    (optim.LAMB, dict(weight_decay=0.1)),
    (optim.LARS, dict(weight_decay=0.1)),
]
FAULTS = ["grad dtype", "grad shape", "grad unaligned", "grad aliases param", "grad not array",
          "hyper NaN", "hyper negative", "state negative", "state missing", "state shape", "group step"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.integers(0, len(CLASSES) - 1),
    ngroups=st.integers(1, 3),
    sizes=st.lists(st.integers(1, 9), min_size=3, max_size=3),
    fault=st.sampled_from(FAULTS),
    where=st.integers(0, 2),
    seed=st.integers(0, 2**16),
)
def test_any_fault_anywhere_changes_nothing(which, ngroups, sizes, fault, where, seed):
    cls, hp = CLASSES[which]
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(sizes[i]) for i in range(ngroups)]
    opt = cls([{"params": [p]} for p in params], lr=0.01, **hp)
    good = lambda: [[rng.standard_normal(p.shape)] for p in params]  # noqa: E731
    opt.step(good())
    where = where % ngroups
    before = _snapshot(opt, params)
    snapshot_sd = copy.deepcopy(opt.state_dict())
    grads = good()
    if fault.startswith("grad"):
        bad = {"grad dtype": lambda: grads[where][0].astype(np.float32),
               "grad shape": lambda: np.ones(sizes[where] + 1),
               "grad unaligned": lambda: _unaligned(params[where].shape),
               "grad aliases param": lambda: params[(where + 1) % ngroups][: sizes[where]] if ngroups > 1 and sizes[(where + 1) % ngroups] >= sizes[where] else _unaligned(params[where].shape),
               "grad not array": lambda: list(grads[where][0])}[fault]()
        grads[where][0] = bad
        with pytest.raises((TypeError, ValueError)):
            opt.step(grads)
    else:
        sd = copy.deepcopy(snapshot_sd)
        g, s = sd["param_groups"][where], sd["state"][where]
        names = [k for k in s if k != "step"]
        if fault == "hyper NaN":
            g["lr"] = float("nan")
        elif fault == "hyper negative":
            g["weight_decay"] = -1.0
        elif fault == "state negative":
            if not opt._nonnegative_state or opt._nonnegative_state[0] not in s:
                g["step"] = -1
            else:
                s[opt._nonnegative_state[0]][0][...] = -1.0
        elif fault == "state missing":
            if names:
                s.pop(names[0])
            else:
                s["momentum_buffer"] = [np.zeros_like(params[where])]
        elif fault == "state shape":
            if names:
                s[names[0]][0] = np.zeros(sizes[where] + 1)
            else:
                g["shapes"] = [(sizes[where] + 1,)]
        else:
            g["step"] = 2**63
        with pytest.raises((TypeError, ValueError)):
            opt.load_state_dict(sd)
    assert _snapshot(opt, params) == before
    assert pickle.dumps(opt.state_dict()) == pickle.dumps(snapshot_sd)


def test_steps_from_two_threads_are_serialized_and_each_whole():
    """The same optimizer stepped from two Python threads: the steps run one at a time
    (an optimizer lock), so the result equals the same number of serial steps."""
    import threading

    rng = np.random.default_rng(9)
    w1 = rng.standard_normal(300_000).astype(np.float32)
    w2 = w1.copy()
    g = np.full_like(w1, 0.01)
    o1, o2 = optim.Adam([w1], lr=1e-3), optim.Adam([w2], lr=1e-3)
    threads = [threading.Thread(target=lambda: [o1.step([g]) for _ in range(10)]) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for _ in range(20):
        o2.step([g])
    assert o1.param_groups[0]["step"] == 20
    assert w1.tobytes() == w2.tobytes()  # the same gradient every step: order does not matter
