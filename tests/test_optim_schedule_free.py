"""Schedule-Free AdamW (Defazio et al., 2024): the class against the paper's three
sequences written out, its train()/eval() switch, the torch adapter against the class,
and, where the authors' package is installed (``pip install schedulefree``), 100-step
trajectories against its AdamWScheduleFree."""

from __future__ import annotations

import numpy as np
import pytest

from deepoptim import optim

SHAPES = [(7,), (33, 5), (4097,)]


def _problem(dtype, seed=42):
    rng = np.random.default_rng(seed)
    p0 = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    targets = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    return rng, p0, targets


def _grad(p, target, noise):
    return (p - target) * 0.5 + noise


def _paper(p0, grads_at, steps, lr, betas, eps, wd, warmup, r, power):
    """The three sequences of the paper, stored explicitly (float64; the form of the
    authors' simplified reference): z steps from the gradient at y, x averages z with
    weights c, y interpolates."""
    b1, b2 = betas
    z = [p.astype(np.float64) for p in p0]
    x = [p.copy() for p in z]
    y = [p.copy() for p in z]
    v = [np.zeros_like(p) for p in z]
    lr_max, wsum = -1.0, 0.0
    for k in range(steps):
        lr_t = lr * min(1.0, (k + 1) / warmup) if warmup else lr
        lr_max = max(lr_max, lr_t)
        w = (k + 1) ** r * lr_max ** power
        wsum += w
        c = w / wsum
        g = grads_at(k, y)
        for i in range(len(z)):
            v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i]
            u = g[i] / (np.sqrt(v[i] / (1 - b2 ** (k + 1))) + eps) + wd * y[i]
            z[i] = z[i] - lr_t * u
            x[i] = (1 - c) * x[i] + c * z[i]
            y[i] = (1 - b1) * z[i] + b1 * x[i]
    return x, y, z


@pytest.mark.parametrize("hp", [dict(), dict(weight_decay=0.1, warmup_steps=10), dict(r=1.0, weight_lr_power=0.0),
                                dict(betas=(0.5, 0.99), warmup_steps=3, r=0.5)])
def test_class_follows_the_three_sequences_of_the_paper(hp):
    full = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, warmup_steps=0, r=0.0, weight_lr_power=2.0)
    full.update(hp)
    rng, p0, targets = _problem(np.float64)
    noises = [[rng.standard_normal(s) * 0.1 for s in SHAPES] for _ in range(60)]

    def grads_at(k, ys):
        return [_grad(y, t, n) for y, t, n in zip(ys, targets, noises[k])]

    x, y, z = _paper(p0, grads_at, 60, full["lr"], full["betas"], full["eps"], full["weight_decay"],
                     full["warmup_steps"], full["r"], full["weight_lr_power"])
    ps = [p.copy() for p in p0]
    opt = optim.ScheduleFreeAdamW(ps, **full)
    for k in range(60):
        opt.step(grads_at(k, ps))
    g = opt.param_groups[0]
    assert g["k"] == 60 and g["train_mode"]
    for a, b in zip(ps, y):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    for a, b in zip(g["_state"]["z"], z):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    opt.eval()
    assert not g["train_mode"]
    for a, b in zip(ps, x):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)
    opt.train()
    for a, b in zip(ps, y):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)


def test_modes():
    p = np.linspace(-1, 1, 9).astype(np.float32)
    opt = optim.ScheduleFreeAdamW([p], lr=0.1)
    opt.eval()  # before any step: nothing to move
    np.testing.assert_array_equal(p, np.linspace(-1, 1, 9).astype(np.float32))
    with pytest.raises(RuntimeError, match="eval mode"):
        opt.step([np.ones(9, np.float32)])
    assert opt.param_groups[0]["k"] == 0
    opt.train()
    opt.train()  # idempotent
    opt.step([np.ones(9, np.float32)])
    y = p.copy()
    opt.eval()
    snapshot = p.copy()
    with pytest.raises(RuntimeError, match="call train"):
        opt.step([np.ones(9, np.float32)])
    np.testing.assert_array_equal(p, snapshot)  # a refused step changed nothing
    opt.eval()  # idempotent
    np.testing.assert_array_equal(p, snapshot)
    opt.train()
    np.testing.assert_allclose(p, y, rtol=1e-6, atol=1e-7)
    # betas[0] == 0: the parameters are z, and x cannot be recovered
    q = np.ones(3)
    o2 = optim.ScheduleFreeAdamW([q], betas=(0.0, 0.999))
    o2.step([np.ones(3)])
    with pytest.raises(ValueError, match="betas"):
        o2.eval()
    assert o2.param_groups[0]["train_mode"]


def test_group_state_is_saved_and_checked():
    p = np.ones(4)
    opt = optim.ScheduleFreeAdamW([p], lr=0.1, warmup_steps=3)
    for _ in range(2):
        opt.step([np.full(4, 0.5)])
    sd = opt.state_dict()
    h = sd["param_groups"][0]
    assert h["k"] == 2 and h["lr_max"] == pytest.approx(0.2 / 3) and h["weight_sum"] > 0
    bad = dict(sd, param_groups=[dict(h, k=-1)])
    with pytest.raises(ValueError, match="k"):
        opt.load_state_dict(bad)
    with pytest.raises(ValueError, match="weight_sum"):
        opt.load_state_dict(dict(sd, param_groups=[dict(h, weight_sum=-1.0)]))
    for name, value in (("warmup_steps", -1), ("warmup_steps", 2.5), ("r", float("nan")), ("weight_lr_power", -1.0)):
        with pytest.raises(ValueError, match=name):
            optim.ScheduleFreeAdamW([np.ones(2)], **{name: value})
    assert opt.param_groups[0]["k"] == 2
    opt.reset_state()
    assert (opt.param_groups[0]["k"], opt.param_groups[0]["lr_max"], opt.param_groups[0]["weight_sum"]) == (0, -1.0, 0.0)


def test_z_starts_where_the_parameter_is_at_its_first_step():
    p = np.zeros(3)
    opt = optim.ScheduleFreeAdamW([p], lr=0.1)
    p[...] = 5.0  # e.g. weights loaded after the optimizer was built
    opt.step([np.zeros(3)])
    np.testing.assert_array_equal(opt.param_groups[0]["_state"]["z"][0], np.full(3, 5.0))
    np.testing.assert_array_equal(p, np.full(3, 5.0))


# ------------------------------------------------------------------ torch
torch = pytest.importorskip("torch")


def test_torch_adapter_equals_the_class_across_modes_and_state_dicts():
    from deepoptim import torch as dt

    rng, p0, targets = _problem(np.float64, seed=3)
    ts = [torch.tensor(p) for p in p0]
    ps = [p.copy() for p in p0]
    hp = dict(lr=1e-2, weight_decay=1e-2, warmup_steps=4, r=0.5)
    ours = dt.ScheduleFreeAdamW(ts, **hp)
    ref = optim.ScheduleFreeAdamW(ps, **hp)
    for k in range(30):
        noise = [rng.standard_normal(s) * 0.1 for s in SHAPES]
        for t, tg, n in zip(ts, targets, noise):
            t.grad = torch.from_numpy(_grad(t.numpy(), tg, n))
        ref.step([_grad(p, tg, n) for p, tg, n in zip(ps, targets, noise)])
        ours.step()
        if k % 7 == 6:
            ours.eval()
            ref.eval()
            for t, p in zip(ts, ps):
                assert t.numpy().tobytes() == p.tobytes()
            sd = ours.state_dict()
            assert sd["param_groups"][0]["k"] == k + 1 and sd["param_groups"][0]["train_mode"] is False
            assert set(sd["state"][0]) == {"step", "z", "exp_avg_sq"}
            ours.load_state_dict(sd)
            with pytest.raises(RuntimeError, match="train"):
                ours.step()
            ours.train()
            ref.train()
    for t, p in zip(ts, ps):
        assert t.numpy().tobytes() == p.tobytes()


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("hp", [dict(lr=1e-2), dict(lr=1e-2, weight_decay=0.1, warmup_steps=20),
                                dict(lr=5e-3, betas=(0.8, 0.99), eps=1e-6, r=1.0, weight_lr_power=1.0, warmup_steps=5)])
def test_trajectory_equals_the_authors_schedulefree(hp, dtype):
    schedulefree = pytest.importorskip("schedulefree")
    from deepoptim import torch as dt

    rng, p0, targets = _problem(dtype)
    theirs = [torch.tensor(p) for p in p0]
    ours = [torch.tensor(p) for p in p0]
    o_theirs = schedulefree.AdamWScheduleFree(theirs, **hp)
    o_ours = dt.ScheduleFreeAdamW(ours, **hp)
    o_theirs.train()
    o_ours.train()
    for _ in range(100):
        noise = [rng.standard_normal(s).astype(dtype) * 0.1 for s in SHAPES]
        for ts in (theirs, ours):
            for t, tg, n in zip(ts, targets, noise):
                t.grad = torch.from_numpy(_grad(t.numpy(), tg, n))
        o_theirs.step()
        o_ours.step()
    tol = {np.float64: 1e-12, np.float32: 1e-5}[dtype]
    for mode in ("train", "eval"):
        if mode == "eval":
            o_theirs.eval()
            o_ours.eval()
        for a, b, p in zip(ours, theirs, p0):
            a, b = a.numpy(), b.numpy()
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol * (1 + np.abs(b).max()), err_msg=mode)
            assert np.abs(a - p).max() > 1e-2
        for k in ("k", "lr_max", "weight_sum"):
            assert o_ours.param_groups[0][k] == pytest.approx(o_theirs.param_groups[0][k], rel=1e-15), k


@pytest.mark.parametrize("hp", [dict(lr=1e-2), dict(lr=1e-2, weight_decay=0.1),
                                dict(lr=5e-3, betas=(0.8, 0.99), eps=1e-6, weight_lr_power=1.0)])
def test_trajectory_equals_optax_contrib_without_warmup(hp):
    """optax.contrib.schedule_free_adamw (float32, as jax computes by default): the same
    y and x after 100 steps, to float32 rounding. With warmup the two differ by design of
    optax: its inner learning-rate schedule counts from 0 while its averaging counts from 1,
    so its first z step has lr 0; the authors' (and ours) use (k+1)/warmup for both (that
    case is checked against the authors' package above)."""
    optax = pytest.importorskip("optax")
    jnp = pytest.importorskip("jax.numpy")
    rng, p0, targets = _problem(np.float32, seed=3)
    ours = [p.copy() for p in p0]
    opt = optim.ScheduleFreeAdamW(ours, **hp)
    b1, b2 = hp.get("betas", (0.9, 0.999))
    tx = optax.contrib.schedule_free_adamw(learning_rate=hp["lr"], b1=b1, b2=b2, eps=hp.get("eps", 1e-8),
                                           weight_decay=hp.get("weight_decay", 0.0),
                                           weight_lr_power=hp.get("weight_lr_power", 2.0))
    q = [jnp.asarray(p) for p in p0]
    state = tx.init(q)
    for _ in range(100):
        noise = [(rng.standard_normal(s) * 0.1).astype(np.float32) for s in SHAPES]
        opt.step([_grad(p, t, n) for p, t, n in zip(ours, targets, noise)])
        upd, state = tx.update([jnp.asarray(_grad(np.asarray(p), t, n)) for p, t, n in zip(q, targets, noise)],
                               state, q)
        q = optax.apply_updates(q, upd)
    theirs_x = optax.contrib.schedule_free_eval_params(state, q)
    for label, a_list, b_list in (("y", ours, q), ("x", None, theirs_x)):
        if a_list is None:
            opt.eval()
            a_list = ours
        for a, b, p in zip(a_list, b_list, p0):
            b = np.asarray(b)
            moved = np.abs(a - p).max()
            assert moved > 1e-2, label
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * (1 + np.abs(b).max()), err_msg=label)
