"""deepoptim.optim with low-precision storage: bfloat16/float16 parameters, state_dtype,
master_weights and stochastic_rounding on every optimizer that takes them; state_dict
round trips that resume bit for bit; refusals that name the option and change nothing."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from deepoptim import optim
from deepoptim.optim import REGISTRY
from kernels import BF16, F16, LOWP_MODES

LOWP_CLASSES = [n for n, c in REGISTRY.items() if c.kernel in __import__(
    "deepoptim.reference.optim", fromlist=["LOWP_KERNELS"]).LOWP_KERNELS]
MODES = LOWP_MODES


def bits(a):
    return a.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize])


def _params(dt, rng):
    return {"w": rng.standard_normal((40, 130)).astype(dt), "b": np.zeros(7, dt)}


def _grads(dt, rng):
    return {"w": (rng.standard_normal((40, 130)) * 0.1).astype(dt), "b": np.full(7, 0.5, dt)}


def test_lowp_classes_are_the_elementwise_ones():
    assert set(LOWP_CLASSES) >= {"SGD", "Adam", "AdamW", "Adagrad", "RMSprop", "Adamax", "RAdam", "Adadelta",
                                 "Rprop", "NAdam", "ASGD", "Lion", "LAMB", "LARS",
                                 "ScheduleFreeAdamW"}


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("name", LOWP_CLASSES)
def test_state_dict_resumes_bit_for_bit(name, mode):
    dt, kw = MODES[mode]
    cls = REGISTRY[name]
    rng = np.random.default_rng(1)
    p = _params(dt, rng)
    grads = [_grads(dt, rng) for _ in range(5)]
    opt = cls(p, lr=1e-2, **kw)
    for g in grads[:3]:
        assert opt.step(g)
    saved = {k: v.copy() for k, v in p.items()}
    sd = opt.state_dict()
    for g in grads[3:]:
        opt.step(g)
    q = {k: v.copy() for k, v in saved.items()}
    opt2 = cls(q, lr=1e-2, **kw)
    opt2.load_state_dict(sd)
    for g in grads[3:]:
        opt2.step(g)
    for k in p:
        assert p[k].dtype == dt
        np.testing.assert_array_equal(bits(p[k]), bits(q[k]), err_msg=k)
    st1, st2 = opt.state_dict()["state"][0], opt2.state_dict()["state"][0]
    for n in st1:
        if n != "step":
            for a, b in zip(st1[n], st2[n]):
                if isinstance(a, dict):  # 8-bit state
                    np.testing.assert_array_equal(a["codes"], b["codes"], err_msg=n)
                    np.testing.assert_array_equal(bits(a["absmax"]), bits(b["absmax"]), err_msg=n)
                else:
                    np.testing.assert_array_equal(bits(np.asarray(a)), bits(np.asarray(b)), err_msg=n)
    sdt = {"bf16-state": BF16, "f32-bf16-state": BF16, "f16-master-bf16-state": BF16}.get(mode, np.dtype(np.float32))
    for n, arrs in st1.items():
        if n == "step" or n in cls._scalar_state:
            continue
        if kw.get("state_dtype") == "int8" and n != "master_param":
            # 8-bit for the (40, 130) weight, float32 for the 7 biases (below INT8_MIN_SIZE)
            assert isinstance(arrs[0], dict) and arrs[0]["codes"].dtype == np.uint8, n
            assert arrs[1].dtype == np.float32, n
            continue
        want = np.dtype(np.float32) if n == "master_param" else sdt
        assert all(a.dtype == want for a in arrs), (n, arrs[0].dtype, want)


@pytest.mark.parametrize("name", ["SGD", "Adam", "Lion"])
def test_master_weights_track_the_parameters(name):
    rng = np.random.default_rng(2)
    p = _params(BF16, rng)
    opt = REGISTRY[name](p, lr=1e-3, master_weights=True)
    for _ in range(4):
        opt.step(_grads(BF16, rng))
    masters = opt.state_dict()["state"][0]["master_param"]
    for m, k in zip(masters, ["w", "b"]):
        np.testing.assert_array_equal(bits(m.astype(BF16)), bits(p[k]))


def test_small_updates_survive_with_master_or_stochastic_rounding():
    """lr*g at 1/64 of a bfloat16 ulp: nearest rounding never moves the weights; master
    weights and stochastic rounding move them by the float32 amount (on average)."""
    def run(**kw):
        w = np.ones(20000, BF16)
        opt = optim.SGD([w], lr=2.0**-13, **kw)
        for _ in range(256):
            opt.step([np.full(20000, -1.0, BF16)])
        return w.astype(np.float64).mean() - 1.0
    assert run() == 0.0
    expected = 256 * 2.0**-13
    assert abs(run(master_weights=True) - expected) < 2.0**-7  # within one ulp (the rounding of the master)
    assert abs(run(stochastic_rounding=True, seed=5) - expected) < 0.05 * expected


def test_skip_nonfinite_catches_float16_overflow():
    w = np.ones(10, F16)
    opt = optim.Adam([w], lr=0.1, skip_nonfinite=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        g = np.full(10, 60000, F16) * np.float16(2)  # overflows to inf, as a float16 backward pass can
    before = opt.state_dict()
    with pytest.warns(optim.NonFiniteGradients):
        assert opt.step([g]) is False
    assert np.all(w == 1)
    after = opt.state_dict()
    for a, b in zip(before["state"][0]["exp_avg"], after["state"][0]["exp_avg"]):
        np.testing.assert_array_equal(a, b)
    assert opt.step([np.full(10, 0.5, F16)]) is True
    assert np.all(w < 1)


@pytest.mark.parametrize("make, exc, word", [
    (lambda: optim.Adam([np.ones(4)], state_dtype="bfloat16"), ValueError, "state_dtype"),
    (lambda: optim.Adam([np.ones(4, np.float32)], state_dtype="float16"), ValueError, "state_dtype"),
    (lambda: optim.Adam([np.ones(4, np.float32)], master_weights=True), ValueError, "master_weights"),
    (lambda: optim.Adam([np.ones(4, F16)], stochastic_rounding=True), ValueError, "stochastic_rounding"),
    (lambda: optim.Adam([np.ones(4, BF16)], stochastic_rounding=True, master_weights=True), ValueError,
     "stochastic_rounding"),
    (lambda: optim.Adam([np.ones(4, BF16)], seed=-1), ValueError, "seed"),
    (lambda: optim.SGD([np.ones(4, BF16)], weight_decay=0.1, decoupled_weight_decay=True), ValueError,
     "decoupled_weight_decay"),
    (lambda: optim.Adam([np.ones(4, BF16)], l1=0.1), ValueError, "l1"),
    (lambda: optim.Adam([np.ones(4, np.int8)]), TypeError, "dtype"),
])
def test_bad_options_are_refused(make, exc, word):
    with pytest.raises(exc, match=word):
        make()


def test_state_dtype_cannot_change_and_bad_state_is_refused_untouched():
    w = np.ones(64, BF16)
    opt = optim.Adam([w], lr=0.1, state_dtype="bfloat16")
    opt.step([np.ones(64, BF16)])
    opt.param_groups[0]["state_dtype"] = "float32"
    with pytest.raises(ValueError, match="state_dtype cannot change"):
        opt.step([np.ones(64, BF16)])
    opt.param_groups[0]["state_dtype"] = "bfloat16"
    sd = opt.state_dict()
    sd["state"][0]["exp_avg"] = [a.astype(np.float32) for a in sd["state"][0]["exp_avg"]]
    before = w.copy()
    with pytest.raises(ValueError, match="exp_avg"):
        opt.load_state_dict(sd)
    np.testing.assert_array_equal(bits(w), bits(before))
