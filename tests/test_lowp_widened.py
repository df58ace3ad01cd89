"""Low-precision parameters for the optimizers whose kernels take float32/float64 only
(Muon, Adafactor; issues 11 and 13): a group of bfloat16/float16 parameters is stepped as
"widen, run the float32 step, round" (deepoptim.optim.Optimizer._widened_step), the
definition the elementwise kernels compute in one pass. Held here to that definition bit
for bit, in deepoptim.optim and deepoptim.torch, with master weights, stochastic
rounding, bfloat16 and 8-bit state (widened or dequantized, rounded or quantized back)
and state_dict round trips. L-BFGS iterates 16-bit parameters in float32, with or without
float32 master weights kept from step to step, the same bits in both APIs; its history
stays float32 (state_dtype "bfloat16"/"int8" refused). Every mode of deepoptim.torch's
Muon and Adafactor against deepoptim.optim's is in test_torch_lowp_shaped.py.
"""

from __future__ import annotations

import copy

import ml_dtypes
import numpy as np
import pytest

from deepoptim import functional as F
from deepoptim.optim import Adafactor, Muon
from kernels import assert_same_bits

BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
CASES = [(Adafactor, [(8, 5), (7,), (2, 3, 4)], dict(lr=0.05, weight_decay=0.1)),
         (Muon, [(8, 5), (6, 6)], dict(lr=0.05, weight_decay=0.1))]
IDS = ["Adafactor", "Muon"]


def _same(a, b, what=""):
    """Bit for bit; 16-bit arrays by their bits (their NaNs come from one rounding rule)."""
    if a.dtype.itemsize == 2:
        assert a.dtype == b.dtype and a.shape == b.shape, what
        np.testing.assert_array_equal(a.view(np.uint16), b.view(np.uint16), err_msg=what)
    else:
        assert_same_bits(a, b, what)


def _grads(rng, shapes, dtype):
    return [rng.standard_normal(s).astype(np.float32).astype(dtype) for s in shapes]


@pytest.mark.parametrize("dtype", [BF16, F16], ids=["bf16", "f16"])
@pytest.mark.parametrize("cls,shapes,hp", CASES, ids=IDS)
def test_round_to_nearest_is_widen_step_round(cls, shapes, hp, dtype):
    """Each step equals: widen the 16-bit parameters, one float32 step (with the same
    float32 state), round to nearest even."""
    rng = np.random.default_rng(0)
    ps = _grads(rng, shapes, dtype)
    opt = cls(ps, **hp)
    ref_ps = [p.astype(np.float32) for p in ps]
    ref = cls(ref_ps, **hp)
    for _ in range(4):
        gs = _grads(rng, shapes, dtype)
        opt.step(gs)
        ref.step([g.astype(np.float32) for g in gs])
        for p, r in zip(ps, ref_ps):
            _same(p, r.astype(dtype), "params")
            np.copyto(r, p.astype(np.float32))  # the next float32 step starts from the rounded values
        for name, arrs in opt.state_dict()["state"][0].items():
            if name != "step":
                for a, b in zip(arrs, ref.state_dict()["state"][0][name]):
                    assert a.dtype == np.float32
                    assert_same_bits(a, b, name)


@pytest.mark.parametrize("cls,shapes,hp", CASES, ids=IDS)
def test_master_weights_are_the_float32_trajectory(cls, shapes, hp):
    """With master weights the float32 copies follow the float32 optimizer's trajectory
    exactly, and the parameters are their rounding."""
    rng = np.random.default_rng(1)
    ps = _grads(rng, shapes, BF16)
    opt = cls(ps, master_weights=True, **hp)
    ref_ps = [p.astype(np.float32) for p in ps]
    ref = cls(ref_ps, **hp)
    for _ in range(5):
        gs = _grads(rng, shapes, BF16)
        opt.step(gs)
        ref.step([g.astype(np.float32) for g in gs])
    masters = opt.state_dict()["state"][0]["master_param"]
    for p, m, r in zip(ps, masters, ref_ps):
        assert_same_bits(m, r, "master")
        _same(p, r.astype(BF16), "params")


@pytest.mark.parametrize("cls,shapes,hp", CASES, ids=IDS)
def test_stochastic_rounding_resumes_bit_for_bit_and_is_keyed_by_seed(cls, shapes, hp):
    rng = np.random.default_rng(2)
    p0 = _grads(rng, shapes, BF16)
    gs = [_grads(rng, shapes, BF16) for _ in range(6)]

    def run(seed, split):
        ps = [p.copy() for p in p0]
        opt = cls(ps, stochastic_rounding=True, seed=seed, **hp)
        for g in gs[:split]:
            opt.step(g)
        if split < len(gs):
            sd = copy.deepcopy(opt.state_dict())
            ps = [p.copy() for p in ps]
            opt = cls(ps, stochastic_rounding=True, seed=seed, **hp)
            opt.load_state_dict(sd)
            for g in gs[split:]:
                opt.step(g)
        return ps

    whole, resumed, other = run(7, 6), run(7, 3), run(8, 6)
    for a, b in zip(whole, resumed):
        _same(a, b, "resumed")
    assert any(not np.array_equal(a.view(np.uint16), b.view(np.uint16)) for a, b in zip(whole, other)), "the seed changes nothing"
    # Each parameter is one of the two bfloat16 neighbours of the float32 step's result.
    ps = [p.copy() for p in p0]
    opt = cls(ps, stochastic_rounding=True, seed=7, **hp)
    ref_ps = [p.astype(np.float32) for p in p0]
    cls(ref_ps, **hp).step([g.astype(np.float32) for g in gs[0]])
    opt.step(gs[0])
    for p, r in zip(ps, ref_ps):
        lo = r.astype(BF16).astype(np.float32)
        up = np.nextafter(lo.astype(BF16), np.where(r > lo, np.inf, -np.inf).astype(BF16)).astype(np.float32)
        got = p.astype(np.float32)
        assert np.all((got == lo) | (got == up))


def _as_float32_run(sd, master):
    """A copy of a low-precision state_dict as a float32 optimizer's: bfloat16 state
    widened, 8-bit state dequantized, the master copies as the parameters."""
    from deepoptim.reference._lowp import Blockwise8

    sd = copy.deepcopy(sd)
    st = sd["state"][0]
    masters = st.pop("master_param", None)
    for name, arrs in st.items():
        if name != "step":
            st[name] = [Blockwise8(a["codes"], a["absmax"], a["signed"]).dequantize() if isinstance(a, dict)
                        else a.astype(np.float32) for a in arrs]
    grp = sd["param_groups"][0]
    grp.update(state_dtype=None, master_weights=False, stochastic_rounding=False, dtype="float32")
    return sd, (masters if master else None)


STATE_MODES = {
    "bf16-params-bf16-state": (BF16, dict(state_dtype="bfloat16")),
    "f32-params-bf16-state": (np.dtype(np.float32), dict(state_dtype="bfloat16")),
    "bf16-params-int8-state": (BF16, dict(state_dtype="int8", int8_min_size=0)),
    "f32-params-int8-state": (np.dtype(np.float32), dict(state_dtype="int8", int8_min_size=0)),
    "bf16-master-int8-state": (BF16, dict(state_dtype="int8", int8_min_size=0, master_weights=True)),
    "f16-master-bf16-state": (F16, dict(state_dtype="bfloat16", master_weights=True)),
}


@pytest.mark.parametrize("mode", list(STATE_MODES))
@pytest.mark.parametrize("cls,shapes,hp", CASES, ids=IDS)
def test_low_precision_state_is_widen_step_round(cls, shapes, hp, mode):
    """bfloat16 and 8-bit state: each step equals the float32 step from the widened (or
    dequantized) state, its result rounded (or quantized) back, as for the elementwise
    kernels."""
    from deepoptim.reference._lowp import quantize

    pdt, kw = STATE_MODES[mode]
    rng = np.random.default_rng(6)
    ps = _grads(rng, shapes, pdt)
    opt = cls(ps, **kw, **hp)
    for _ in range(3):
        sd32, masters = _as_float32_run(opt.state_dict(), "master_weights" in kw)
        ref_ps = [m.copy() for m in masters] if masters is not None else [p.astype(np.float32) for p in ps]
        ref = cls(ref_ps, **hp)
        ref.load_state_dict(sd32)
        gs = _grads(rng, shapes, pdt)
        opt.step(gs)
        ref.step([g.astype(np.float32) for g in gs])
        got = opt.state_dict()["state"][0]
        for name, arrs in ref.state_dict()["state"][0].items():
            if name == "step":
                continue
            for a, r in zip(got[name], arrs):
                if isinstance(a, dict):
                    codes, absmax = quantize(r, a["signed"])
                    np.testing.assert_array_equal(a["codes"], codes, err_msg=name)
                    assert_same_bits(a["absmax"], absmax, name)
                else:
                    _same(a, r.astype(a.dtype), name)
        for p, r in zip(ps, ref_ps):
            _same(p, r.astype(p.dtype), "params")
        if masters is not None:
            for m, r in zip(got["master_param"], ref_ps):
                assert_same_bits(m, r, "master")


@pytest.mark.parametrize("cls,shapes,hp", CASES, ids=IDS)
def test_refusals_of_the_base_class_hold(cls, shapes, hp):
    with pytest.raises(ValueError, match="stochastic_rounding"):
        cls([np.ones(s, F16) for s in shapes], stochastic_rounding=True, **hp)
    with pytest.raises(ValueError, match="master_weights"):
        cls([np.ones(s, np.float32) for s in shapes], master_weights=True, **hp)


@pytest.mark.parametrize("cls,shapes,hp", CASES, ids=IDS)
def test_a_missing_gradient_skips_its_16bit_parameter(cls, shapes, hp):
    rng = np.random.default_rng(3)
    ps = _grads(rng, shapes, BF16)
    before = [p.copy() for p in ps]
    opt = cls(ps, master_weights=True, **hp)
    gs = _grads(rng, shapes, BF16)
    gs[1] = None
    opt.step(gs)
    _same(ps[1], before[1])
    assert not np.array_equal(ps[0].view(np.uint16), before[0].view(np.uint16))
    assert opt.state_dict()["state"][0]["step"] == [1, 0] + [1] * (len(shapes) - 2)


def test_functional_kernels_still_refuse_16bit():
    p = np.ones((4, 4), BF16)
    with pytest.raises(TypeError, match="params"):
        F.muon(p, p.copy(), np.zeros((4, 4), np.float32))
    with pytest.raises(TypeError, match="params"):
        F.adafactor(p, p.copy(), np.zeros((4, 1), np.float32), np.zeros((1, 4), np.float32), None, step=1)


# ------------------------------------------------------------------ torch
torch = pytest.importorskip("torch")


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("name,shapes", [("Adafactor", [(8, 5), (7,)]), ("Muon", [(8, 5), (6, 6)])])
def test_torch_adapters_take_16bit_parameters(name, shapes, dtype):
    """deepoptim.torch.Muon/Adafactor on bfloat16/float16 tensors: the same bits as
    deepoptim.optim's class (float32 state, widen, step, round to nearest)."""
    import deepoptim.torch as dt
    from deepoptim import optim

    tdt = getattr(torch, dtype)
    ndt = BF16 if dtype == "bfloat16" else F16
    rng = np.random.default_rng(4)
    p0 = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    tps = [torch.tensor(p).to(tdt) for p in p0]
    nps = [p.astype(ndt) for p in p0]
    topt = getattr(dt, name)(tps, lr=0.05)
    nopt = getattr(optim, name)(nps, lr=0.05)
    for _ in range(3):
        gs = [rng.standard_normal(s).astype(np.float32).astype(ndt) for s in shapes]
        for t, g in zip(tps, gs):
            t.grad = torch.tensor(g.astype(np.float32)).to(tdt)
        topt.step()
        nopt.step(gs)
    for t, p in zip(tps, nps):
        assert t.dtype == tdt
        np.testing.assert_array_equal(t.view(torch.int16).numpy().view(np.uint16), p.view(np.uint16))
    assert all(v.dtype == torch.float32 for v in topt.state[tps[0]].values())
    # a torch.optim state_dict (its state in the parameter's dtype) loads, as float32
    theirs = getattr(torch.optim, name)([t.detach().clone() for t in tps], lr=0.05)
    for t in theirs.param_groups[0]["params"]:
        t.grad = torch.ones_like(t)
    theirs.step()
    topt.load_state_dict(theirs.state_dict())
    for t in tps:
        t.grad = torch.ones_like(t)
    topt.step()
    assert all(v.dtype == torch.float32 for v in topt.state[tps[0]].values())


# ------------------------------------------------------------------ L-BFGS
@pytest.mark.parametrize("dtype", [BF16, F16], ids=["bf16", "f16"])
def test_lbfgs_iterates_in_float32_and_writes_rounded_points(dtype):
    """A 16-bit L-BFGS run equals the float32 run whose closure evaluates at the rounded
    point: the same float32 directions, steps and history, the parameters their rounding."""
    from deepoptim.optim import LBFGS

    rng = np.random.default_rng(5)
    a = rng.uniform(0.5, 3.0, 40).astype(np.float32)
    x0 = rng.standard_normal(40).astype(np.float32).astype(dtype)
    x = x0.copy()
    y = x0.astype(np.float32)

    def loss_grad(z):
        return float(0.5 * np.dot(a * z, z)), [a * z]

    ox = LBFGS([x], line_search_fn="strong_wolfe", history_size=5)
    oy = LBFGS([y], line_search_fn="strong_wolfe", history_size=5)
    for _ in range(3):
        lx = ox.step(lambda: loss_grad(x.astype(np.float32)))
        ly = oy.step(lambda: loss_grad(y.astype(dtype).astype(np.float32)))
        assert lx == ly
        _same(x, y.astype(dtype), "params")
        y[...] = x.astype(np.float32)  # each step starts from the stored (rounded) point
    assert np.isfinite(x.astype(np.float32)).all() and lx < 1e-3 * loss_grad(x0.astype(np.float32))[0]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_torch_lbfgs_on_16bit_tensors_converges(dtype):
    """torch.optim.LBFGS on float16 turns the weights into NaN (1 / y's overflows); ours
    iterates in float32."""
    import deepoptim.torch as dt

    t = torch.tensor([3.0, -2.0, 1.0, 0.5], dtype=getattr(torch, dtype), requires_grad=True)
    opt = dt.LBFGS([t], line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (t.float() ** 2 * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum()
        loss.backward()
        return loss

    opt.step(closure)
    assert torch.isfinite(t).all() and float(t.detach().float().abs().max()) < 1e-2


# ------------------------------------------------------------------ L-BFGS: master weights, state_dtype
def _quadratic():
    rng = np.random.default_rng(7)
    return rng.uniform(0.5, 3.0, 40).astype(np.float32), rng.standard_normal(40).astype(np.float32)


@pytest.mark.parametrize("dtype", [BF16, F16], ids=["bf16", "f16"])
def test_lbfgs_master_weights_keep_the_float32_iterate_across_steps(dtype):
    """With master_weights the float32 iterate carries over from step to step: the run
    equals the float32 run whose closure evaluates the rounded point and which is never
    reset to it (without master weights each step restarts from the rounded parameters)."""
    from deepoptim.optim import LBFGS

    a, x0 = _quadratic()
    x, y = x0.astype(dtype), x0.astype(dtype).astype(np.float32)

    def loss_grad(z):
        return float(0.5 * np.dot(a * z, z)), [a * z]

    hp = dict(line_search_fn="strong_wolfe", history_size=5, max_iter=3)
    ox, oy = LBFGS([x], master_weights=True, **hp), LBFGS([y], **hp)
    for _ in range(4):
        assert ox.step(lambda: loss_grad(x.astype(np.float32))) == oy.step(
            lambda: loss_grad(y.astype(dtype).astype(np.float32)))
        _same(x, y.astype(dtype), "params")
        (master,) = ox.state_dict()["state"]["master_param"]
        assert_same_bits(master, y, "master")


def _lbfgs_pair(master, a, x0):
    """The same bfloat16 L-BFGS run through deepoptim.optim and deepoptim.torch, both fed
    the same bfloat16 gradients; returns (numpy params, numpy optimizer, its closure,
    the tensor, the torch optimizer, its closure)."""
    import deepoptim.torch as dt
    from deepoptim.optim import LBFGS

    hp = dict(line_search_fn="strong_wolfe", history_size=4, max_iter=3, master_weights=master)
    x = x0.astype(BF16)
    t = torch.tensor(x0).to(torch.bfloat16)

    def grad(z):
        return (a * z.astype(np.float32)).astype(BF16)

    def np_closure():
        z = x.astype(np.float32)
        return float(0.5 * np.dot(a * z, z)), [grad(x)]

    def torch_closure(t=t):
        z = t.float().numpy()
        t.grad = torch.from_numpy(grad(dt._view(t)).view(np.int16)).view(torch.bfloat16)
        return float(0.5 * np.dot(a * z, z))

    return x, LBFGS([x], **hp), np_closure, t, dt.LBFGS([t], **hp), torch_closure


@pytest.mark.parametrize("master", [False, True], ids=["rounded", "master"])
def test_torch_lbfgs_equals_numpy_and_resumes_bit_for_bit(master):
    """deepoptim.torch.LBFGS gives deepoptim.optim.LBFGS's bits on bfloat16 tensors, with
    and without master weights, and its state_dict resumes through torch.save although
    torch.optim's load_state_dict would cast the float32 history and masters to bfloat16
    (before, a bfloat16 run could not step after a load)."""
    import io

    import deepoptim.torch as dt

    a, x0 = _quadratic()
    x, ox, np_closure, t, ot, torch_closure = _lbfgs_pair(master, a, x0)
    for _ in range(2):
        assert ox.step(np_closure) == ot.step(torch_closure)
        _same(dt._view(t), x, "params")
    if master:
        (m,) = ot.state[t]["master_param"]
        assert m.dtype == torch.float32
        assert_same_bits(m.numpy(), ox.state_dict()["state"]["master_param"][0], "master")
    buf = io.BytesIO()
    torch.save(ot.state_dict(), buf)
    buf.seek(0)
    _, _, _, t2, ot2, closure2 = _lbfgs_pair(master, a, x0)
    t2.copy_(t)
    ot2.load_state_dict(torch.load(buf, weights_only=True))
    floats = [v for v in ot2.state[t2].values() for v in (v if isinstance(v, list) else [v])
              if isinstance(v, torch.Tensor) and v.is_floating_point()]
    assert floats and all(v.dtype == torch.float32 for v in floats)
    for _ in range(2):
        assert ot.step(torch_closure) == ot2.step(closure2) == ox.step(np_closure)
        assert torch.equal(t.view(torch.int16), t2.view(torch.int16))
        _same(dt._view(t2), x, "resumed")


def test_torch_optim_lbfgs_state_of_bfloat16_history_loads_widened():
    import deepoptim.torch as dt

    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    theirs_t = torch.tensor([3.0, -2.0, 1.0, 0.5], dtype=torch.bfloat16, requires_grad=True)
    theirs = torch.optim.LBFGS([theirs_t], max_iter=3)

    def closure(t=theirs_t, opt=theirs):
        opt.zero_grad()
        loss = (t.float() ** 2 * a).sum()
        loss.backward()
        return loss

    theirs.step(closure)
    assert theirs.state[theirs_t]["d"].dtype == torch.bfloat16
    t = theirs_t.detach().clone().requires_grad_(True)
    ours = dt.LBFGS([t], max_iter=3, master_weights=True)
    ours.load_state_dict(theirs.state_dict())
    assert ours.state[t]["d"].dtype == torch.float32 and "master_param" not in ours.state[t]
    ours.step(lambda: closure(t, ours))  # the masters are made from the parameters
    assert ours.state[t]["master_param"][0].dtype == torch.float32 and torch.isfinite(t).all()


@pytest.mark.parametrize("dtype, kw, etype, needle", [
    (BF16, dict(state_dtype="bfloat16"), ValueError, "history"),
    (np.dtype(np.float32), dict(state_dtype="int8"), ValueError, "history"),
    (F16, dict(state_dtype="float16"), ValueError, "state_dtype"),
    (np.dtype(np.float32), dict(master_weights=True), ValueError, "master_weights"),
    (np.dtype(np.float64), dict(master_weights=True), ValueError, "master_weights"),
    (BF16, dict(master_weights=1), TypeError, "master_weights"),
], ids=lambda v: str(v))
def test_lbfgs_low_precision_refusals_are_the_same_in_both_apis(dtype, kw, etype, needle):
    import deepoptim.torch as dt
    from deepoptim.optim import LBFGS

    x = np.arange(4, dtype=np.float32).astype(dtype)
    t = torch.arange(4, dtype=torch.float32).to(dt._TORCH_DTYPE[dtype])
    with pytest.raises(etype, match=needle) as e_np:
        LBFGS([x], **kw)
    with pytest.raises(etype, match=needle) as e_t:
        dt.LBFGS([t], **kw)
    assert str(e_np.value) == str(e_t.value)
    assert torch.equal(t, torch.arange(4, dtype=torch.float32).to(t.dtype))
    LBFGS([x], state_dtype="float32")  # the precision it keeps anyway
    dt.LBFGS([t], state_dtype="float32")


def test_lbfgs_master_weights_cannot_change_after_construction():
    a, x0 = _quadratic()
    x, ox, np_closure, t, ot, torch_closure = _lbfgs_pair(True, a, x0)
    ox.step(np_closure)
    ot.step(torch_closure)
    before_x, before_t = x.copy(), t.clone()
    for opt, closure in ((ox, np_closure), (ot, torch_closure)):
        opt.param_groups[0]["master_weights"] = False
        with pytest.raises(ValueError, match="master_weights cannot change"):
            opt.step(closure)
    _same(x, before_x)
    assert torch.equal(t.view(torch.int16), before_t.view(torch.int16))
    sd = ox.state_dict()
    sd["state"]["master_param"] = [np.zeros(3, np.float32)]
    with pytest.raises(ValueError, match="master_param"):
        ox.load_state_dict(sd)
    sd = ot.state_dict()
    sd["param_groups"][0]["master_weights"] = False
    with pytest.raises(ValueError, match="master_param"):
        ot.load_state_dict(sd)
