"""Schedule-Free AdamW on low-precision storage: bfloat16/float16 parameters, z and
exp_avg_sq in bfloat16 or 8 bits, master weights, stochastic rounding, and its
train()/eval() switch on each (float32 math: the master moved and the parameter its
rounding, or the widened parameter moved and rounded to nearest even). Round trips,
state_dict resumes bit for bit across switches, the class on the kernels equal to the
class on the twins, and the torch adapter equal to the class."""

from __future__ import annotations

import io

import numpy as np
import pytest

from deepoptim import functional, optim, reference
from deepoptim.reference._lowp import Blockwise8
from deepoptim.reference.cast import cast as twin_cast
from kernels import BF16, F16, F32, LOWP_MODES

SHAPES = [(7,), (40, 130), (4097,)]
MODES = LOWP_MODES
HP = dict(lr=1e-2, weight_decay=1e-2, warmup_steps=3, r=0.5)


def bits(a: np.ndarray) -> np.ndarray:
    return a.view({1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize])


def _same(a, b, what):
    if isinstance(a, dict):  # an 8-bit state in a state_dict
        np.testing.assert_array_equal(a["codes"], b["codes"], err_msg=what)
        np.testing.assert_array_equal(bits(a["absmax"]), bits(b["absmax"]), err_msg=what)
        return
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, what
    np.testing.assert_array_equal(bits(a), bits(b), err_msg=what)


def _same_state(o1, o2):
    s1, s2 = o1.state_dict(), o2.state_dict()
    for k in ("k", "lr_max", "weight_sum", "train_mode"):
        assert s1["param_groups"][0][k] == s2["param_groups"][0][k], k
    for n, arrs in s1["state"][0].items():
        if n != "step":
            for a, b in zip(arrs, s2["state"][0][n]):
                _same(a, b, n)


def _problem(dt, seed=0):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(np.float32).astype(dt) for s in SHAPES]
    grads = [[(rng.standard_normal(s) * 0.1).astype(np.float32).astype(dt) for s in SHAPES] for _ in range(8)]
    return params, grads


def _run(opt, grads, switch_every=2):
    """Steps, with an eval()/train() round trip after every `switch_every` steps."""
    for k, g in enumerate(grads):
        opt.step(g)
        if k % switch_every == switch_every - 1:
            opt.eval()
            opt.train()


def test_every_mode_is_taken():
    for mode, (dt, kw) in MODES.items():
        optim.ScheduleFreeAdamW([np.zeros(4, dt)], **kw)


@pytest.mark.parametrize("state", ["float32", "bfloat16", "int8"])
@pytest.mark.parametrize("pdt", [BF16, F16], ids=["bf16", "f16"])
def test_master_weights_are_the_float32_run(pdt, state):
    """With master weights the masters follow, bit for bit and across switches, the run on
    float32 parameters fed the same (widened) gradients with the same state storage; the
    parameters are their rounding."""
    params, grads = _problem(pdt)
    p32 = [p.astype(np.float32) for p in params]
    kw = dict(HP, state_dtype=state, int8_min_size=1000)
    o16 = optim.ScheduleFreeAdamW(params, master_weights=True, **kw)
    o32 = optim.ScheduleFreeAdamW(p32, **kw)
    for k, g in enumerate(grads):
        o16.step(g)
        o32.step([a.astype(np.float32) for a in g])
        if k % 3 == 1:
            o16.eval()
            o32.eval()
            for p, q, m in zip(params, p32, o16.param_groups[0]["_state"]["master_param"]):
                _same(m, q, "master in eval mode")
                _same(p, q.astype(pdt), "parameter in eval mode")
            o16.train()
            o32.train()
    for p, q, m in zip(params, p32, o16.param_groups[0]["_state"]["master_param"]):
        _same(m, q, "master")
        _same(p, q.astype(pdt), "parameter")
    s16, s32 = o16.state_dict()["state"][0], o32.state_dict()["state"][0]
    for n in ("z", "exp_avg_sq"):
        for a, b in zip(s16[n], s32[n]):
            _same(a, b, n)


@pytest.mark.parametrize("mode", ["bf16", "f16", "bf16-state", "bf16-stochastic", "bf16-int8-state"])
def test_switch_without_master_is_the_float32_lerp_rounded(mode):
    """Without master weights a switch is the lerp of the widened parameter and z in
    float32, rounded to nearest even (also with stochastic rounding, which rounds steps
    only); a second eval() or train() moves nothing."""
    dt, kw = MODES[mode]
    params, grads = _problem(dt, seed=1)
    opt = optim.ScheduleFreeAdamW(params, **HP, **kw)
    for g in grads[:3]:
        opt.step(g)
    b1 = opt.param_groups[0]["betas"][0]
    for to_train, w in ((False, 1.0 - 1.0 / b1), (True, 1.0 - b1)):
        zs = [a.dequantize() if isinstance(a, Blockwise8) else a.astype(np.float32)
              for a in opt.param_groups[0]["_state"]["z"]]
        want = []
        for p, z in zip(params, zs):
            x = p.astype(np.float32)
            x = x + np.float32(w) * (z - x) if abs(w) < 0.5 else z - (z - x) * np.float32(1.0 - w)
            want.append(x.astype(dt))
        opt.train() if to_train else opt.eval()
        for p, q in zip(params, want):
            _same(p, q, f"to_train={to_train}")
        snapshot = [p.copy() for p in params]
        opt.train() if to_train else opt.eval()
        for p, q in zip(params, snapshot):
            _same(p, q, "idempotent")


@pytest.mark.parametrize("mode", sorted(MODES))
def test_round_trip_comes_back_within_rounding(mode):
    """eval() then train() returns to y: exactly as float32 does with master weights (the
    masters make the trip), within an ulp or two of the parameter's dtype otherwise."""
    dt, kw = MODES[mode]
    params, grads = _problem(dt, seed=2)
    opt = optim.ScheduleFreeAdamW(params, **HP, **kw)
    opt.eval()  # before any step: nothing to move
    opt.train()
    for g in grads[:4]:
        opt.step(g)
    y = [p.astype(np.float64) for p in params]
    opt.eval()
    x = [p.astype(np.float64) for p in params]
    assert any(np.abs(a - b).max() > 0 for a, b in zip(x, y))
    opt.train()
    eps = float(np.finfo(np.float32).eps) if dt == F32 else (2.0**-7 if dt == BF16 else 2.0**-10)
    for p, a in zip(params, y):
        np.testing.assert_allclose(p.astype(np.float64), a, rtol=4 * eps, atol=1e-6)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_state_dict_resumes_bit_for_bit_across_switches(mode):
    """A checkpoint taken in eval mode (parameters at x) resumes bit for bit: train(),
    steps, eval() on the restored optimizer give the original's bits."""
    dt, kw = MODES[mode]
    params, grads = _problem(dt, seed=3)
    opt = optim.ScheduleFreeAdamW(params, **HP, **kw)
    _run(opt, grads[:3])
    opt.eval()
    sd = opt.state_dict()
    saved = [p.copy() for p in params]
    opt.train()
    _run(opt, grads[3:])
    opt.eval()
    opt2 = optim.ScheduleFreeAdamW(saved, **HP, **kw)
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["train_mode"] is False
    with pytest.raises(RuntimeError, match="train"):
        opt2.step(grads[3])
    opt2.train()
    _run(opt2, grads[3:])
    opt2.eval()
    for p, q in zip(params, saved):
        _same(p, q, "parameter")
    _same_state(opt, opt2)


@pytest.mark.parametrize("mode", ["bf16", "bf16-master", "f16-master-bf16-state", "bf16-stochastic-int8-state",
                                  "f32-int8-state"])
def test_class_on_kernels_equals_class_on_twins(mode, monkeypatch):
    """The same run (steps and switches) with the compiled kernels and with their NumPy
    twins gives the same bits."""
    dt, kw = MODES[mode]
    params, grads = _problem(dt, seed=4)
    twin_params = [p.copy() for p in params]
    fast = optim.ScheduleFreeAdamW(params, **HP, **kw)
    _run(fast, grads)
    fast.eval()
    monkeypatch.setattr(functional, "schedule_free_adamw", reference.schedule_free_adamw)
    monkeypatch.setattr(functional, "cast", twin_cast)
    twin = optim.ScheduleFreeAdamW(twin_params, **HP, **kw)
    _run(twin, grads)
    twin.eval()
    for p, q in zip(params, twin_params):
        _same(p, q, "parameter")
    _same_state(fast, twin)


def test_refused_switch_and_step_change_nothing():
    params, grads = _problem(BF16, seed=5)
    opt = optim.ScheduleFreeAdamW(params, betas=(0.0, 0.999), master_weights=True, state_dtype="int8",
                                  int8_min_size=0)
    opt.step(grads[0])
    before = [p.copy() for p in params]
    sd = opt.state_dict()
    with pytest.raises(ValueError, match="betas"):
        opt.eval()
    for p, q in zip(params, before):
        _same(p, q, "parameter")
    after = opt.state_dict()
    for n, arrs in sd["state"][0].items():
        if n != "step":
            for a, b in zip(arrs, after["state"][0][n]):
                _same(a, b, n)
    assert opt.param_groups[0]["train_mode"]


# ------------------------------------------------------------------ torch
@pytest.mark.parametrize("mode", ["bf16", "bf16-master", "f16-master-bf16-state", "bf16-stochastic",
                                  "bf16-int8-state", "bf16-master-int8-state"])
def test_torch_adapter_equals_the_class_across_switches_and_checkpoints(mode):
    torch = pytest.importorskip("torch")
    from deepoptim import torch as dt_

    dt, kw = MODES[mode]
    tdt = {BF16: torch.bfloat16, F16: torch.float16}[dt]
    params, grads = _problem(dt, seed=6)
    ts = [torch.nn.Parameter(torch.from_numpy(p.astype(np.float32)).to(tdt)) for p in params]
    ours = dt_.ScheduleFreeAdamW(ts, **HP, **kw)
    ref = optim.ScheduleFreeAdamW(params, **HP, **kw)
    for k, g in enumerate(grads):
        for t, a in zip(ts, g):
            t.grad = torch.from_numpy(a.astype(np.float32)).to(tdt)
        ours.step()
        ref.step(g)
        if k % 3 == 2:
            ours.eval()
            ref.eval()
            for t, p in zip(ts, params):
                _same(dt_._view(t), p, "eval mode")
            buf = io.BytesIO()
            torch.save(ours.state_dict(), buf)
            buf.seek(0)
            ours.load_state_dict(torch.load(buf))
            ours.train()
            ref.train()
    for t, p in zip(ts, params):
        _same(dt_._view(t), p, "train mode")
