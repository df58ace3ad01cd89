"""Batch normalization: C++ against the twin on every path, finite-difference gradients,
torch's F.batch_norm and autograd, thread determinism, accuracy under a large offset,
and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from deepoptim import functional as F
from deepoptim import reference as R
from threads import run_json

# Kernel and twin add the same numbers in different orders (blocked vs pairwise sums),
# so they differ by a few ulps of the statistics; float32 outputs round from float64.
TOL = {np.dtype(np.float32): 3e-6, np.dtype(np.float64): 1e-11}


def close(a, b, what=""):
    assert (a is None) == (b is None), what
    if a is None:
        return
    assert a.dtype == b.dtype and a.shape == b.shape, what
    tol = TOL[b.dtype]
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * (1 + np.abs(b).max(initial=0)), err_msg=what)


LAYOUTS = {  # name: (shape maker from (N, C, spatial...), channel_axis)
    "NC": (lambda n, c, s: (n, c), 1),
    "NCL": (lambda n, c, s: (n, c, s[0]), 1),
    "NCHW": (lambda n, c, s: (n, c, s[0], s[1]), 1),
    "NCDHW": (lambda n, c, s: (n, c, s[0], s[1], 2), 1),
    "NLC": (lambda n, c, s: (n, s[0], c), -1),
    "NHWC": (lambda n, c, s: (n, s[0], s[1], c), -1),
}


def make(rng, shape, ax, dtype, affine=(True, True)):
    C = shape[ax]
    x = (rng.standard_normal(shape) * rng.uniform(0.1, 3) + rng.uniform(-2, 2)).astype(dtype)
    w = rng.standard_normal(C).astype(dtype) if affine[0] else None
    b = rng.standard_normal(C).astype(dtype) if affine[1] else None
    rm = rng.standard_normal(C).astype(dtype)
    rv = rng.uniform(0.5, 2, C).astype(dtype)
    return x, w, b, rm, rv


def run_both(x, w, b, rm, rv, dy, **kw):
    outs = []
    for impl in (F, R):
        m, v = (rm.copy(), rv.copy()) if rm is not None else (None, None)
        nbt = np.array(3, np.int64)
        y, cache = impl.batch_norm(x, m, v, w, b, num_batches_tracked=nbt, **kw)
        grads = impl.batch_norm_backward(dy, cache)
        outs.append((y, m, v, int(nbt), cache.mean, cache.invstd, *grads))
    return outs


@given(data=st.data())
def test_matches_twin(data):
    layout = data.draw(st.sampled_from(sorted(LAYOUTS)), label="layout")
    maker, ax = LAYOUTS[layout]
    n = data.draw(st.integers(1, 6), label="N")
    c = data.draw(st.sampled_from([1, 2, 3, 7, 16, 33]), label="C")
    s = data.draw(st.tuples(st.integers(1, 9), st.integers(1, 9)), label="spatial")
    shape = maker(n, c, s)
    dtype = np.dtype(data.draw(st.sampled_from([np.float32, np.float64]), label="dtype"))
    training = data.draw(st.booleans(), label="training")
    momentum = data.draw(st.sampled_from([None, 0.0, 0.1, 1.0]), label="momentum")
    affine = data.draw(st.tuples(st.booleans(), st.booleans()), label="affine")
    track = data.draw(st.booleans(), label="track") or not training
    count = int(np.prod(shape)) // c
    if training and count <= 1:
        return  # refused; see test_one_value_per_channel_in_training
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    x, w, b, rm, rv = make(rng, shape, ax, dtype, affine)
    if not track:
        rm = rv = None
    dy = rng.standard_normal(shape).astype(dtype)
    fast, twin = run_both(x, w, b, rm, rv, dy, training=training, momentum=momentum, eps=1e-5, channel_axis=ax)
    names = ["y", "running_mean", "running_var", "num_batches_tracked", "mean", "invstd", "dx", "dweight", "dbias"]
    for name, a, bb in zip(names, fast, twin):
        if isinstance(bb, int):
            assert a == bb, name
        else:
            close(a, bb, name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_multi_step_running_statistics_match_twin(layout, dtype):
    """Five training steps then eval, momentum None (cumulative) and 0.1."""
    maker, ax = LAYOUTS[layout]
    shape = maker(4, 5, (6, 3))
    rng = np.random.default_rng(5)
    for momentum in (None, 0.1):
        state = {impl: (np.zeros(5, dtype), np.ones(5, dtype), np.zeros((), np.int64)) for impl in (F, R)}
        for step in range(6):
            x = (rng.standard_normal(shape) + step).astype(dtype)
            ys = [impl.batch_norm(x, *state[impl][:2], training=step < 5, momentum=momentum,
                                  num_batches_tracked=state[impl][2], channel_axis=ax)[0] for impl in (F, R)]
            close(ys[0], ys[1], f"y step {step}")
            for a, b in zip(state[F], state[R]):
                close(a, b, f"state step {step}") if a.dtype != np.int64 else np.testing.assert_array_equal(a, b)
        assert int(state[F][2]) == 5


def test_large_common_offset_loses_no_accuracy():
    """x = 1e4 + noise in float32: y and the statistics as accurate as float64 math on
    the same float32 inputs (no E[x^2] - E[x]^2 cancellation)."""
    rng = np.random.default_rng(0)
    x = (1e4 + rng.standard_normal((64, 8, 32))).astype(np.float32)
    rm, rv = np.zeros(8, np.float32), np.ones(8, np.float32)
    y, cache = F.batch_norm(x, rm, rv, momentum=1.0)
    xd = x.astype(np.float64)
    mean = xd.mean(axis=(0, 2))
    var = xd.var(axis=(0, 2))
    y_ref = (xd - mean[:, None]) / np.sqrt(var[:, None] + 1e-5)
    assert np.abs(y - y_ref).max() < 1e-6 * np.abs(y_ref).max()  # ~ one float32 rounding
    np.testing.assert_allclose(cache.mean, mean, rtol=1e-14)
    np.testing.assert_allclose(rv, xd.var(axis=(0, 2), ddof=1), rtol=1e-6)
    # The naive one-pass formula in float32 is off by whole units here: the test can fail.
    x32 = x.astype(np.float32)
    naive = (x32 * x32).mean(axis=(0, 2), dtype=np.float32) - x32.mean(axis=(0, 2), dtype=np.float32) ** 2
    assert np.abs(naive - var).max() > 0.1


def _fd_check(shape, ax, training):
    rng = np.random.default_rng(1)
    x, w, b, rm, rv = make(rng, shape, ax, np.float64)
    R_ = rng.standard_normal(shape)  # loss = sum(y * R_)

    def loss(x_, w_, b_):
        y, _ = F.batch_norm(x_, None if training else rm, None if training else rv, w_, b_,
                            training=training, channel_axis=ax)
        return float((y * R_).sum())

    _, cache = F.batch_norm(x, None if training else rm, None if training else rv, w, b,
                            training=training, channel_axis=ax)
    dx, dw, db = F.batch_norm_backward(R_.copy(), cache)
    h = 1e-6
    for arr, grad, name in ((x, dx, "dx"), (w, dw, "dweight"), (b, db, "dbias")):
        num = np.zeros_like(arr)
        for i in np.ndindex(arr.shape):
            old = arr[i]
            arr[i] = old + h
            up = loss(x, w, b)
            arr[i] = old - h
            down = loss(x, w, b)
            arr[i] = old
            num[i] = (up - down) / (2 * h)
        np.testing.assert_allclose(grad, num, rtol=1e-5, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape,ax", [((5, 3), 1), ((3, 2, 4), 1), ((2, 3, 2, 3), 1), ((2, 2, 3, 3), -1)])
def test_backward_matches_finite_differences(shape, ax, training):
    _fd_check(shape, ax, training)


@pytest.mark.parametrize("impl", [F, R], ids=["fast", "twin"])
def test_one_value_per_channel_in_training(impl):
    rm, rv = np.zeros(3), np.ones(3)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        impl.batch_norm(np.ones((1, 3)), rm, rv)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        impl.batch_norm(np.ones((1, 1, 1, 3)), rm, rv, channel_axis=-1)
    y, _ = impl.batch_norm(np.ones((1, 3)), rm, rv, training=False)  # eval is fine
    assert y.shape == (1, 3)
    np.testing.assert_array_equal(rm, 0)


_THREAD_SCRIPT = r"""
import hashlib, json, sys
import numpy as np
import deepoptim
from deepoptim import functional as F
out = {"threads": deepoptim.build_info()["max_threads"]}
rng = np.random.default_rng(0)
for shape, ax in [((32, 16, 28, 28), 1), ((16, 28, 28, 32), -1), ((512, 300), 1), ((2, 3, 50000), 1)]:
    for dtype in (np.float32, np.float64):
        x = (rng.standard_normal(shape) + 100).astype(dtype)
        C = shape[ax]
        rm, rv = np.zeros(C, dtype), np.ones(C, dtype)
        w, b = rng.standard_normal(C).astype(dtype), rng.standard_normal(C).astype(dtype)
        y, cache = F.batch_norm(x, rm, rv, w, b, channel_axis=ax)
        dx, dw, db = F.batch_norm_backward(rng.standard_normal(shape).astype(dtype), cache)
        h = hashlib.sha256()
        for a in (y, rm, rv, cache.mean, cache.invstd, dx, dw, db):
            h.update(a.tobytes())
        out[f"{shape}-{np.dtype(dtype).name}"] = h.hexdigest()
print(json.dumps(out))
"""


def test_bitwise_identical_with_1_and_2_threads():
    one, two = run_json(_THREAD_SCRIPT, 1), run_json(_THREAD_SCRIPT, 2)
    assert (one.pop("threads"), two.pop("threads")) == (1, 2)
    assert len(one) == 8 and one == two


# ----------------------------------------------------------------------------- torch
class TestAgainstTorch:
    @pytest.fixture(autouse=True)
    def _torch(self):
        self.torch = pytest.importorskip("torch")

    @pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
    @pytest.mark.parametrize("momentum", [0.1, None])
    @pytest.mark.parametrize("affine", [True, False])
    @pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
    @pytest.mark.parametrize("layout", sorted(LAYOUTS))
    def test_forward_stats_and_gradients(self, layout, training, affine, momentum, dtype):
        torch = self.torch
        maker, ax = LAYOUTS[layout]
        shape = maker(6, 5, (4, 3))
        rng = np.random.default_rng(11)
        x, w, b, rm, rv = make(rng, shape, ax, dtype, (affine, affine))
        dy = rng.standard_normal(shape).astype(dtype)
        nbt = np.array(2, np.int64)

        m, v = rm.copy(), rv.copy()
        y, cache = F.batch_norm(x, m, v, w, b, training=training, momentum=momentum,
                                num_batches_tracked=nbt, channel_axis=ax)
        dx, dw, db = F.batch_norm_backward(dy, cache)

        def to_ncx(a):  # channels-last -> channel on axis 1, as torch wants it
            t = torch.from_numpy(a)
            return t.movedim(-1, 1) if ax == -1 else t

        tx = to_ncx(x.copy()).requires_grad_(True)
        tw = torch.from_numpy(w.copy()).requires_grad_(True) if affine else None
        tb = torch.from_numpy(b.copy()).requires_grad_(True) if affine else None
        tm, tv = torch.from_numpy(rm.copy()), torch.from_numpy(rv.copy())
        factor = (1.0 / 3.0 if training else 0.0) if momentum is None else momentum
        ty = torch.nn.functional.batch_norm(tx, tm, tv, tw, tb, training=training, momentum=factor, eps=1e-5)
        ty.backward(to_ncx(dy))

        tol = 1e-10 if dtype == np.float64 else 2e-5
        back = (lambda t: t.movedim(1, -1)) if ax == -1 else (lambda t: t)

        def same(ours, theirs, what):
            theirs = theirs.detach().numpy()
            np.testing.assert_allclose(ours, theirs, rtol=tol, atol=tol * (1 + np.abs(theirs).max()), err_msg=what)

        same(y, back(ty), "y")
        same(m, tm, "running_mean")
        same(v, tv, "running_var")
        same(dx, back(tx.grad), "dx")
        if affine:
            same(dw, tw.grad, "dweight")
            same(db, tb.grad, "dbias")
        else:
            assert dw is None and db is None
        assert int(nbt) == (3 if training else 2)


# ------------------------------------------------------------------------- bad input
def _fresh():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 3, 5)).astype(np.float32)
    arrays = dict(x=x, running_mean=np.zeros(3, np.float32), running_var=np.ones(3, np.float32),
                  weight=np.ones(3, np.float32), bias=np.zeros(3, np.float32),
                  num_batches_tracked=np.zeros((), np.int64))
    return arrays


BAD = {
    "x int": (lambda a, kw: a.update(x=a["x"].astype(np.int32)), TypeError, "x must have dtype float32 or float64"),
    "x not array": (lambda a, kw: a.update(x=a["x"].tolist()), TypeError, "x must be a numpy.ndarray"),
    "x 1-d": (lambda a, kw: a.update(x=np.ones(3, np.float32)), ValueError, "x must have at least 2 dimensions"),
    "x non-contiguous": (lambda a, kw: a.update(x=np.ones((4, 3, 10), np.float32)[:, :, ::2]), ValueError, "x must be C-contiguous"),
    "running_mean float64": (lambda a, kw: a.update(running_mean=np.zeros(3)), TypeError, "running_mean must have the dtype of x"),
    "running_var wrong shape": (lambda a, kw: a.update(running_var=np.ones(4, np.float32)), ValueError, r"running_var must have shape \(3,\)"),
    "weight wrong shape": (lambda a, kw: a.update(weight=np.ones((3, 1), np.float32)), ValueError, r"weight must have shape \(3,\)"),
    "bias float64": (lambda a, kw: a.update(bias=np.zeros(3)), TypeError, "bias must have the dtype of x"),
    "running_var read-only": (lambda a, kw: a["running_var"].setflags(write=False), ValueError, "running_var is read-only"),
    "running_var only": (lambda a, kw: a.update(running_mean=None), ValueError, "both be arrays or both be None"),
    "running stats alias": (lambda a, kw: a.update(running_var=a["running_mean"]), ValueError, "share memory"),
    "nbt wrong dtype": (lambda a, kw: a.update(num_batches_tracked=np.zeros((), np.int32)), TypeError, "num_batches_tracked must be an int64"),
    "momentum None without nbt": (lambda a, kw: (a.update(num_batches_tracked=None), kw.update(momentum=None)), ValueError, "num_batches_tracked is required"),
    "momentum > 1": (lambda a, kw: kw.update(momentum=1.5), ValueError, r"momentum must be in \[0.0, 1.0\]"),
    "nbt -1 cumulative": (lambda a, kw: (a["num_batches_tracked"].fill(-1), kw.update(momentum=None)), ValueError, r"num_batches_tracked must hold a count in \[0, 2\*\*63 - 1\), got -1"),
    "nbt -2": (lambda a, kw: a["num_batches_tracked"].fill(-2), ValueError, "num_batches_tracked must hold a count"),
    "nbt at int64 max": (lambda a, kw: (a["num_batches_tracked"].fill(2**63 - 1), kw.update(momentum=None)), ValueError, "num_batches_tracked must hold a count"),
    "x masked": (lambda a, kw: a.update(x=np.ma.masked_array(a["x"])), TypeError, "x is a numpy.ma.MaskedArray"),
    "eps bool": (lambda a, kw: kw.update(eps=True), TypeError, "eps must be a number, got bool"),
    "eps zero": (lambda a, kw: kw.update(eps=0.0), ValueError, "eps must be a finite number > 0"),
    "channel_axis 0": (lambda a, kw: kw.update(channel_axis=0), ValueError, "channel_axis must be 1"),
    "eval without stats": (lambda a, kw: (a.update(running_mean=None, running_var=None), kw.update(training=False)), ValueError, "required when training=False"),
}


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("impl", [F, R], ids=["fast", "twin"])
def test_forward_refuses_bad_input_and_changes_nothing(impl, case):
    arrays, kw = _fresh(), {}
    mutate, exc, needle = BAD[case]
    mutate(arrays, kw)
    live = {k: v for k, v in arrays.items() if isinstance(v, np.ndarray)}
    snap = {k: v.copy() for k, v in live.items()}
    args = dict(arrays)
    with pytest.raises(exc, match=needle):
        impl.batch_norm(args.pop("x"), args.pop("running_mean"), args.pop("running_var"),
                        num_batches_tracked=args.pop("num_batches_tracked"), **args, **kw)
    for k, v in live.items():
        assert v.tobytes() == snap[k].tobytes(), f"{k} changed"


@pytest.mark.parametrize("impl", [F, R], ids=["fast", "twin"])
def test_running_statistics_untouched_after_refusal(impl):
    """The running statistics and counter are exactly as before a refused call."""
    a = _fresh()
    rm, rv, nbt = a["running_mean"], a["running_var"], a["num_batches_tracked"]
    rm[:] = [1, 2, 3]
    before = (rm.copy(), rv.copy(), nbt.copy())
    bad_bias = np.zeros(4, np.float32)  # checked after the running stats: they must survive
    with pytest.raises(ValueError):
        impl.batch_norm(a["x"], rm, rv, a["weight"], bad_bias, num_batches_tracked=nbt)
    for now, then in zip((rm, rv, nbt), before):
        assert now.tobytes() == then.tobytes()


@pytest.mark.parametrize("impl", [F, R], ids=["fast", "twin"])
def test_backward_refuses_wrong_cache(impl):
    a = _fresh()
    y, cache = impl.batch_norm(a["x"], a["running_mean"], a["running_var"], a["weight"], a["bias"])
    with pytest.raises(TypeError, match="cache must be the BatchNormCache"):
        impl.batch_norm_backward(y, (cache.mean, cache.invstd))
    with pytest.raises(ValueError, match="dy must have shape"):
        impl.batch_norm_backward(y[:2].copy(), cache)
    with pytest.raises(TypeError, match="dy must have the dtype"):
        impl.batch_norm_backward(y.astype(np.float64), cache)
    import dataclasses

    with pytest.raises(ValueError, match=r"mean \(cache.mean\) must have shape"):
        impl.batch_norm_backward(y, dataclasses.replace(cache, mean=np.zeros(4)))
    with pytest.raises(TypeError, match=r"invstd \(cache.invstd\) must have the dtype"):
        impl.batch_norm_backward(y, dataclasses.replace(cache, invstd=cache.invstd.astype(np.float32)))
