"""deepoptim.clip (public clipping API, gradient accumulation), deepoptim.nn (modules,
losses, minibatches, gradients by finite differences) and an end-to-end training run."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deepoptim import clip, nn
from deepoptim.optim import Adam, SGD


# ------------------------------------------------------------------------ clip
def test_clip_grad_norm_accepts_dicts_and_raises_on_nonfinite():
    g = {"a": np.array([3.0, 4.0]), "b": np.array([0.0])}
    total = clip.clip_grad_norm(g, 1.0)
    assert total == pytest.approx(5.0)
    assert clip.global_norm(g) == pytest.approx(1.0, rel=1e-6)
    bad = {"a": np.array([np.inf, 1.0])}
    with pytest.raises(clip.NonFiniteError, match="non-finite") as info:
        clip.clip_grad_norm(bad, 1.0, error_if_nonfinite=True)
    assert isinstance(info.value, RuntimeError)
    assert bad["a"][1] == 1.0  # untouched
    assert not clip.all_finite(bad) and clip.all_finite(g)


def test_clip_grad_value_and_global_norms():
    g = [np.array([-3.0, 0.5, 2.0]), np.array([np.nan])]
    clip.clip_grad_value(g, 1.0)
    np.testing.assert_array_equal(g[0], [-1.0, 0.5, 1.0])
    assert np.isnan(g[1][0])
    with pytest.raises(ValueError, match="clip_value"):
        clip.clip_grad_value(g, -1.0)
    h = [np.array([1.0, -2.0]), np.array([2.0])]
    assert clip.global_norm(h, 1.0) == 5.0 and clip.global_norm(h, math.inf) == 2.0
    assert clip.global_norm(h, 2.0) == pytest.approx(3.0)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_gradient_accumulation_equals_the_full_batch(reduction):
    """k micro-batches of a mean-squared loss accumulated with mean = one full batch."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((24, 3)), rng.standard_normal(24)
    w = rng.standard_normal(3)

    def grad(xb, yb):
        return {"w": 2 * xb.T @ (xb @ w - yb) / len(yb)}

    acc = clip.GradientAccumulator({"w": w}, steps=4, reduction=reduction)
    done = [acc.add(grad(X[i:i + 6], y[i:i + 6])) for i in range(0, 24, 6)]
    assert done == [False, False, False, True] and acc.ready
    full = grad(X, y)["w"] * (1 if reduction == "mean" else 4)
    np.testing.assert_allclose(acc.grads["w"], full, rtol=1e-12)
    acc.add(grad(X[:6], y[:6]))  # a new round starts from zero
    assert acc.count == 1
    with pytest.raises(ValueError, match="shape"):
        acc.add({"w": np.zeros(4)})


# ------------------------------------------------------------------------ nn
def _fd(f, x, h=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        up = f()
        x[i] = old - h
        down = f()
        x[i] = old
        g[i] = (up - down) / (2 * h)
    return g


@pytest.mark.parametrize("act", [nn.ReLU, nn.Sigmoid, nn.Tanh])
def test_mlp_gradients_match_finite_differences(act):
    rng = np.random.default_rng(1)
    model = nn.Sequential(nn.Linear(4, 6, seed=1, dtype=np.float64), act(),
                          nn.BatchNorm(6, dtype=np.float64), nn.Linear(6, 3, seed=2, dtype=np.float64))
    X = rng.standard_normal((7, 4)) + 0.1
    labels = rng.integers(0, 3, 7)

    def loss():
        return nn.softmax_cross_entropy(model.forward(X), labels)[0]

    _, dlogits = nn.softmax_cross_entropy(model.forward(X), labels)
    dx = model.backward(dlogits)
    grads = {k: v.copy() for k, v in model.gradients().items()}
    for name, p in model.parameters().items():
        np.testing.assert_allclose(grads[name], _fd(loss, p), rtol=1e-5, atol=1e-8, err_msg=name)
    np.testing.assert_allclose(dx, _fd(loss, X), rtol=1e-5, atol=1e-8)


def test_losses_and_their_gradients():
    rng = np.random.default_rng(2)
    pred, target = rng.standard_normal((5, 2)), rng.standard_normal((5, 2))
    loss, d = nn.mse_loss(pred, target)
    assert loss == pytest.approx(np.mean((pred - target) ** 2))
    np.testing.assert_allclose(d, _fd(lambda: nn.mse_loss(pred, target)[0], pred), rtol=1e-6)
    logits = np.array([[1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0]])  # stable log-sum-exp
    loss, d = nn.softmax_cross_entropy(logits, np.array([0, 2]))
    assert np.isfinite(loss) and loss == pytest.approx(math.log(3) / 2)
    np.testing.assert_allclose(d.sum(axis=1), 0, atol=1e-12)
    with pytest.raises(ValueError, match="labels must be in"):
        nn.softmax_cross_entropy(logits, np.array([0, 3]))
    with pytest.raises(TypeError, match="integer class indices"):
        nn.softmax_cross_entropy(logits, np.array([0.0, 1.0]))


def test_minibatches_cover_the_data_once():
    X, y = np.arange(10).reshape(10, 1), np.arange(10)
    for bs, expect in ((None, [10]), (1, [1] * 10), (4, [4, 4, 2])):
        batches = list(nn.minibatches(X, y, bs, shuffle=True, seed=3))
        assert [len(b[1]) for b in batches] == expect
        seen = np.concatenate([b[1] for b in batches])
        assert sorted(seen) == list(range(10))
        assert all((b[0][:, 0] == b[1]).all() for b in batches)
    assert [b[1].tolist() for b in nn.minibatches(X, y, 5, shuffle=False)] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]


def test_sequential_state_dict_round_trip():
    make = lambda: nn.Sequential(nn.Linear(3, 4, seed=0), nn.BatchNorm(4), nn.ReLU(), nn.Dropout(0.2, seed=1),
                                 nn.Linear(4, 2, seed=2))
    a, b = make(), make()
    X = np.random.default_rng(4).standard_normal((8, 3)).astype(np.float32)
    a(X)
    b.modules[0].weight[...] = 0
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()
    assert a(X).tobytes() == b(X).tobytes()


def _rings(n, seed):
    from deepoptim.demo import synthetic_rings

    return synthetic_rings(n, seed)


def _train(model, X, y, steps, lr=3e-3):
    opt = Adam(model.parameters(), lr=lr)
    step, epoch = 0, 0
    while step < steps:
        for xb, yb in nn.minibatches(X, y, 64, seed=epoch):
            loss, d = nn.softmax_cross_entropy(model(xb), yb)
            model.backward(d)
            opt.step(model.gradients())
            step += 1
            if step == steps:
                return loss
        epoch += 1
    return loss


def test_end_to_end_mlp_with_batchnorm_and_dropout_trains():
    """A 10-64-64-3 MLP with BatchNorm and Dropout trained with Adam for 300 steps of
    batch 64 on concentric rings reaches at least 90% held-out accuracy (measured: 95%),
    where a linear model stays near chance (measured: 34%)."""
    Xtr, ytr = _rings(3000, 0)
    Xte, yte = _rings(1000, 1)
    model = nn.Sequential(
        nn.Linear(10, 64, seed=1), nn.BatchNorm(64), nn.ReLU(), nn.Dropout(0.2, seed=2),
        nn.Linear(64, 64, seed=3), nn.BatchNorm(64), nn.ReLU(), nn.Dropout(0.2, seed=4),
        nn.Linear(64, 3, seed=5),
    )
    loss = _train(model, Xtr, ytr, 300)
    model.eval()
    assert nn.accuracy(model(Xte), yte) >= 0.90
    assert math.isfinite(loss)
    linear = nn.Sequential(nn.Linear(10, 3, seed=0))
    _train(linear, Xtr, ytr, 300, lr=1e-2)
    assert nn.accuracy(linear(Xte), yte) < 0.5  # the problem needs the hidden layers


def test_sgd_on_linear_regression_reaches_least_squares():
    """The three flavours of gradient descent on y = 3x + 2 + noise: full batch, mini-batch, stochastic."""
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, (200, 1))
    y = 3 * x[:, 0] + 2 + 0.1 * rng.standard_normal(200)
    A = np.hstack([x, np.ones((200, 1))])
    w_ls = np.linalg.lstsq(A, y, rcond=None)[0]
    for bs, epochs, lr in ((None, 500, 0.3), (20, 100, 0.1), (1, 20, 0.02)):
        w = {"w": np.zeros(2)}
        opt = SGD(w, lr=lr, momentum=0.9 if bs else 0.0)
        for e in range(epochs):
            for xb, yb in nn.minibatches(A, y, bs, seed=e):
                _, d = nn.mse_loss(xb @ w["w"], yb)
                opt.step({"w": xb.T @ d})
        np.testing.assert_allclose(w["w"], w_ls, atol=0.05 if bs != 1 else 0.1)
