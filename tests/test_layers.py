"""deepoptim.layers: BatchNorm and Dropout objects over the functional kernels."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from deepoptim import functional as F
from deepoptim.layers import BatchNorm, Dropout


def _x(shape=(8, 3, 4, 4), seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def test_batchnorm_forward_backward_equal_functional():
    bn = BatchNorm(3)
    bn.weight[:] = [1.0, 2.0, -1.0]
    bn.bias[:] = [0.0, 0.5, 1.0]
    x, dy = _x(), _x(seed=1)
    rm, rv, nbt = np.zeros(3, np.float32), np.ones(3, np.float32), np.zeros((), np.int64)
    y_ref, cache = F.batch_norm(x, rm, rv, bn.weight, bn.bias, num_batches_tracked=nbt)
    dx_ref, dw_ref, db_ref = F.batch_norm_backward(dy, cache)
    y = bn(x)
    dx = bn.backward(dy)
    for a, b in ((y, y_ref), (dx, dx_ref), (bn.grad_weight, dw_ref), (bn.grad_bias, db_ref),
                 (bn.running_mean, rm), (bn.running_var, rv)):
        assert a.tobytes() == b.tobytes()
    assert int(bn.num_batches_tracked) == 1
    assert set(bn.parameters()) == set(bn.gradients()) == {"weight", "bias"}


def test_batchnorm_eval_uses_running_statistics_and_freezes_them():
    bn = BatchNorm(3)
    for s in range(3):
        bn(_x(seed=s) * 2 + 1)
    frozen = bn.state_dict()
    bn.eval()
    x = _x(seed=9)
    y = bn(x)
    expected = (x - frozen["running_mean"][None, :, None, None]) / np.sqrt(frozen["running_var"][None, :, None, None] + 1e-5)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    for k, v in bn.state_dict().items():
        assert v.tobytes() == frozen[k].tobytes(), k
    dx = bn.backward(np.ones_like(y))
    np.testing.assert_allclose(dx, np.broadcast_to(1 / np.sqrt(frozen["running_var"] + 1e-5)[None, :, None, None], x.shape), rtol=1e-6)
    assert bn.train() is bn and bn.training


def test_batchnorm_channels_last_and_without_affine_or_tracking():
    bn = BatchNorm(5, affine=False, track_running_stats=False, channel_axis=-1, dtype=np.float64)
    x = _x((4, 6, 5), dtype=np.float64)
    y = bn(x)
    np.testing.assert_allclose(y.mean(axis=(0, 1)), 0, atol=1e-12)
    assert bn.parameters() == {} and bn.state_dict() == {}
    bn.eval()
    np.testing.assert_array_equal(bn(x), y)  # no running stats: batch statistics in eval too
    assert bn.backward(np.ones_like(y)).shape == x.shape


def test_batchnorm_state_dict_round_trip_and_refusals():
    bn = BatchNorm(3)
    for s in range(4):
        bn(_x(seed=s) + s)
    state = pickle.loads(pickle.dumps(bn.state_dict()))
    other = BatchNorm(3)
    keep = other.running_mean
    other.load_state_dict(state)
    assert other.running_mean is keep  # loaded in place
    other.eval(), bn.eval()
    x = _x(seed=7)
    assert other(x).tobytes() == bn(x).tobytes()

    before = other.state_dict()
    bad = dict(state, running_var=np.ones(4, np.float32))
    with pytest.raises(ValueError, match="running_var has shape"):
        other.load_state_dict(bad)
    with pytest.raises(KeyError, match="missing keys"):
        other.load_state_dict({k: v for k, v in state.items() if k != "bias"})
    for k, v in other.state_dict().items():
        assert v.tobytes() == before[k].tobytes(), k


def test_batchnorm_backward_before_forward():
    with pytest.raises(RuntimeError, match="before forward"):
        BatchNorm(2).backward(np.ones((2, 2), np.float32))


@pytest.mark.parametrize("store_mask", [True, False])
def test_dropout_layer_advances_offset_and_backprops(store_mask):
    d = Dropout(0.5, seed=3, store_mask=store_mask)
    x = np.ones((64, 64), np.float32)
    y1 = d(x)
    dx1 = d.backward(np.ones_like(x))
    np.testing.assert_array_equal(dx1, y1)  # dy = 1: dx is the scaled mask, like y
    assert d.offset == x.size
    y2 = d(x)
    assert y1.tobytes() != y2.tobytes()  # a fresh mask
    ref, _ = F.dropout(x, 0.5, seed=3, offset=x.size)
    assert y2.tobytes() == ref.tobytes()


def test_dropout_state_dict_resumes_the_same_sequence():
    a = Dropout(0.3, seed=11)
    x = np.ones(1000, np.float32)
    a(x)
    b = Dropout(0.3)
    b.load_state_dict(pickle.loads(pickle.dumps(a.state_dict())))
    assert a(x).tobytes() == b(x).tobytes()
    with pytest.raises(ValueError, match="p must be in"):
        b.load_state_dict({"p": 2.0, "seed": 0, "offset": 0})
    assert b.p == 0.3


def test_dropout_eval_and_p_zero_are_identity():
    x = np.ones(10, np.float32)
    d = Dropout(0.5).eval()
    assert d(x) is x and d.backward(x) is x and d.offset == 0
    with pytest.raises(ValueError, match="p must be in"):
        Dropout(1.5)


# ------------------------------------------------------------ impossible states (issue 15)
@pytest.mark.parametrize("key,value,exc,needle", [
    ("running_var", -np.ones(3, np.float32), ValueError, "running_var has negative values"),
    ("num_batches_tracked", np.array(-1, np.int64), ValueError, "num_batches_tracked must be >= 0"),
])
def test_batchnorm_refuses_impossible_state(key, value, exc, needle):
    bn = BatchNorm(3)
    bn.forward(np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32))
    before = {k: v.copy() for k, v in bn.state_dict().items()}
    sd = bn.state_dict()
    sd[key] = value
    with pytest.raises(exc, match=needle):
        bn.load_state_dict(sd)
    assert all(np.array_equal(before[k], v) for k, v in bn.state_dict().items())


@pytest.mark.parametrize("state,needle", [
    ({"p": True, "seed": 0, "offset": 0}, "p must be a number"),
    ({"p": "0.5", "seed": 0, "offset": 0}, "p must be a number"),
    ({"p": 0.5, "seed": 1.5, "offset": 0}, "seed must be an int"),
    ({"p": 0.5, "seed": 0, "offset": True}, "offset must be an int"),
])
def test_dropout_refuses_mistyped_state(state, needle):
    d = Dropout(0.3, seed=4)
    d.forward(np.ones(10, np.float32))
    before = d.state_dict()
    with pytest.raises(TypeError, match=needle):
        d.load_state_dict(state)
    assert d.state_dict() == before
