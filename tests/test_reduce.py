"""Reductions, clipping and regularization kernels: against their twins, torch's
clip_grad_norm_ / clip_grad_value_, thread determinism and bad input; LAMB and LARS
checked by hand on top of the registry's twin tests."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from deepoptim import functional as F
from deepoptim import reference as R
from kernels import AWKWARD_SIZES
from threads import run_json

ORDS = [1.0, 2.0, math.inf]


def _arrays(rng, sizes, dtype, scale=1.0):
    return [(rng.standard_normal(n) * scale).astype(dtype) for n in sizes]


@given(
    sizes=st.lists(st.sampled_from(AWKWARD_SIZES + [50_000]), min_size=0, max_size=5),
    dtype=st.sampled_from([np.float32, np.float64]),
    ord=st.sampled_from(ORDS),
    seed=st.integers(0, 2**32 - 1),
)
def test_norms_match_twin(sizes, dtype, ord, seed):
    xs = _arrays(np.random.default_rng(seed), sizes, dtype, scale=10.0)
    a, b = F.norms(xs, ord), R.norms(xs, ord)
    assert a.dtype == np.float64 and a.shape == (len(xs),)
    assert a.tobytes() == b.tobytes()  # the same summation order: the same bits
    if xs:
        assert isinstance(F.norms(xs[0], ord), float)


@given(
    sizes=st.lists(st.sampled_from(AWKWARD_SIZES + [50_000]), min_size=0, max_size=5),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**32 - 1),
)
def test_dots_match_twin(sizes, dtype, seed):
    rng = np.random.default_rng(seed)
    xs, ys = _arrays(rng, sizes, dtype, scale=10.0), _arrays(rng, sizes, dtype)
    a, b = F.dots(xs, ys), R.dots(xs, ys)
    assert a.dtype == np.float64 and a.shape == (len(xs),)
    assert a.tobytes() == b.tobytes()  # the same summation order: the same bits
    for x, y, d in zip(xs, ys, a):
        assert isinstance(F.dots(x, y), float) and F.dots(x, y) == d
        assert d == pytest.approx(float(np.dot(x.astype(np.float64), y.astype(np.float64))), rel=1e-12, abs=1e-9)
    if xs:  # a dot with itself is the squared L2 norm, summed in the same order
        assert F.dots(xs[0], xs[0]) == pytest.approx(F.norms(xs[0], 2) ** 2, rel=1e-15)


def test_dots_refuse_mismatched_pairs_naming_the_argument():
    x, y = np.ones(5), np.ones(4)
    with pytest.raises(ValueError, match="ys"):
        F.dots(x, y)
    with pytest.raises(TypeError, match="ys"):
        F.dots(x, np.ones(5, np.float32))
    with pytest.raises(ValueError):
        F.dots([x], [x, x])
    assert F.dots([], []).shape == (0,)


@pytest.mark.parametrize("ord", ORDS)
def test_norms_of_nonfinite(ord):
    x = np.array([1.0, np.inf, -2.0])
    assert F.norms(x, ord) == R.norms(x, ord) == math.inf
    x[0] = np.nan
    assert math.isnan(F.norms(x, ord)) and math.isnan(R.norms(x, ord))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_all_finite(dtype):
    xs = _arrays(np.random.default_rng(0), [10, 5000, 3], dtype)
    assert F.all_finite(xs) and R.all_finite(xs)
    for bad in (np.nan, np.inf, -np.inf):
        ys = [x.copy() for x in xs]
        ys[1][4097] = bad
        assert not F.all_finite(ys) and not R.all_finite(ys)
    assert F.all_finite([]) and F.all_finite(np.zeros(0, dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("max_norm", [0.0, 0.5, 3.0, 1e6])
@pytest.mark.parametrize("ord", ORDS)
def test_clip_grad_norm_matches_twin(dtype, max_norm, ord):
    rng = np.random.default_rng(1)
    a = _arrays(rng, [7, 4097, 1], dtype)
    b = [x.copy() for x in a]
    ta, tb = F.clip_grad_norm(a, max_norm, ord), R.clip_grad_norm(b, max_norm, ord)
    assert ta == tb
    for x, y in zip(a, b):
        assert x.tobytes() == y.tobytes()
    clipped = R.norms(a, ord)
    total = max(clipped) if ord == math.inf else (clipped.sum() if ord == 1 else math.sqrt((clipped ** 2).sum()))
    assert total <= max_norm * (1 + 1e-6) + 1e-12 or ta <= max_norm


def test_clip_grad_norm_nonfinite():
    g = [np.array([1.0, np.nan])]
    assert math.isnan(F.clip_grad_norm(g, 1.0, error_if_nonfinite=True))
    assert np.isnan(g[0][1]) and g[0][0] == 1.0  # untouched when the caller will raise
    assert math.isnan(F.clip_grad_norm(g, 1.0))
    assert np.isnan(g[0]).all()  # torch semantics: a NaN total poisons every gradient


_THREAD_SCRIPT = r"""
import hashlib, json, math
import numpy as np
import deepoptim
from deepoptim import functional as F
out = {"threads": deepoptim.build_info()["max_threads"]}
rng = np.random.default_rng(0)
xs = [rng.standard_normal(n).astype(np.float32) * 1e3 for n in (3, 100_003, 1_000_001, 4096)]
for ord in (1.0, 2.0, math.inf):
    out[f"norms{ord}"] = F.norms(xs, ord).tobytes().hex()
out["dots"] = F.dots(xs, [x[::-1].copy() for x in xs]).tobytes().hex()
g = [x.copy() for x in xs]
out["clip"] = [F.clip_grad_norm(g, 1.0), hashlib.sha256(b"".join(a.tobytes() for a in g)).hexdigest()]
# L-BFGS on a quadratic: its inner products and norms on the reduce kernels
from deepoptim.optim import LBFGS
A = rng.standard_normal((200, 200)).astype(np.float32)
A = A @ A.T / 200 + np.eye(200, dtype=np.float32)
p = [rng.standard_normal(300_000).astype(np.float32) * 0.01, rng.standard_normal(200).astype(np.float32)]
opt = LBFGS(p, history_size=5, line_search_fn="strong_wolfe")
def closure():
    r = A @ p[1]
    return float(p[0] @ p[0] + p[1] @ r), [2 * p[0], 2 * r]
for _ in range(3):
    opt.step(closure)
out["lbfgs"] = hashlib.sha256(b"".join(a.tobytes() for a in p)).hexdigest()
print(json.dumps(out))
"""


def test_norms_bitwise_identical_with_1_and_2_threads():
    one, two = run_json(_THREAD_SCRIPT, 1), run_json(_THREAD_SCRIPT, 2)
    assert (one.pop("threads"), two.pop("threads")) == (1, 2)
    assert one == two


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scale_and_clamp_match_twin(dtype):
    rng = np.random.default_rng(2)
    a = _arrays(rng, [1, 33, 4097], dtype, scale=3.0)
    a[1][5] = np.nan
    b = [x.copy() for x in a]
    F.scale(a, 0.37)
    R.scale(b, 0.37)
    F.clamp(a, -1.5, 2.0)
    R.clamp(b, -1.5, 2.0)
    for x, y in zip(a, b):
        assert x.tobytes() == y.tobytes()
    assert np.isnan(a[1][5]) and np.nanmax(a[2]) <= 2.0 and np.nanmin(a[2]) >= -1.5


def test_clip_against_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    for dtype, tol in ((np.float64, 1e-12), (np.float32, 2e-6)):
        for ord in ORDS:
            for max_norm in (0.1, 5.0, 1e3):
                g = _arrays(rng, [10, 300, 4097], dtype)
                ts = [torch.zeros(len(x), dtype=torch.float64 if dtype == np.float64 else torch.float32,
                                  requires_grad=True) for x in g]
                for t, x in zip(ts, g):
                    t.grad = torch.from_numpy(x.copy())
                total_t = float(torch.nn.utils.clip_grad_norm_(ts, max_norm, norm_type=ord))
                total = F.clip_grad_norm(g, max_norm, ord)
                assert total == pytest.approx(total_t, rel=tol)
                for x, t in zip(g, ts):
                    np.testing.assert_allclose(x, t.grad.numpy(), rtol=tol, atol=tol * np.abs(x).max())
        g = _arrays(rng, [100], dtype, scale=3)
        t = torch.zeros(100, dtype=torch.float64 if dtype == np.float64 else torch.float32, requires_grad=True)
        t.grad = torch.from_numpy(g[0].copy())
        torch.nn.utils.clip_grad_value_([t], 1.25)
        F.clamp(g, -1.25, 1.25)
        np.testing.assert_array_equal(g[0], t.grad.numpy())


@given(
    size=st.sampled_from(AWKWARD_SIZES),
    dtype=st.sampled_from([np.float32, np.float64]),
    l1=st.sampled_from([0.0, 1e-3, 0.5]),
    l2=st.sampled_from([0.0, 1e-2, 2.0]),
    thr=st.sampled_from([0.0, 0.1, 1.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_penalty_and_soft_threshold_match_twin(size, dtype, l1, l2, thr, seed):
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(size).astype(dtype)
    p[rng.random(size) < 0.1] = 0.0
    g = rng.standard_normal(size).astype(dtype)
    ga, gb = g.copy(), g.copy()
    F.add_penalty(ga, p, l1=l1, l2=l2)
    R.add_penalty(gb, p, l1=l1, l2=l2)
    assert ga.tobytes() == gb.tobytes()
    np.testing.assert_allclose(ga, g + l1 * np.sign(p) + l2 * p, rtol=1e-6)
    pa, pb = p.copy(), p.copy()
    F.soft_threshold(pa, threshold=thr)
    R.soft_threshold(pb, threshold=thr)
    assert pa.tobytes() == pb.tobytes()
    np.testing.assert_allclose(pa, np.sign(p) * np.maximum(np.abs(p) - dtype(thr), 0), rtol=1e-6)


def test_lamb_one_step_by_hand_and_exclusion():
    p = [np.array([3.0, 4.0]), np.array([1.0, -1.0])]
    g = [np.array([0.5, -0.5]), np.array([2.0, 2.0])]
    m = [np.zeros(2), np.zeros(2)]
    v = [np.zeros(2), np.zeros(2)]
    trust = F.lamb(p, g, m, v, step=1, lr=0.1, weight_decay=0.1, adapt=[True, False])
    # step 1 with bias correction: r = g/(|g| + eps) + wd*p = sign(g) (almost) + 0.1*p
    r0 = np.array([0.5, -0.5]) / (np.abs([0.5, -0.5]) + 1e-6) + 0.1 * np.array([3.0, 4.0])
    ratio = 5.0 / np.linalg.norm(r0)
    assert trust[0] == pytest.approx(ratio, rel=1e-12) and trust[1] == 1.0
    np.testing.assert_allclose(p[0], np.array([3.0, 4.0]) - 0.1 * ratio * r0, rtol=1e-12)
    r1 = np.array([2.0, 2.0]) / (2.0 + 1e-6)  # excluded: no weight decay, no trust ratio
    np.testing.assert_allclose(p[1], np.array([1.0, -1.0]) - 0.1 * r1, rtol=1e-12)


def test_lars_one_step_by_hand_and_zero_norms():
    p = [np.array([3.0, 4.0]), np.zeros(2), np.array([1.0, 1.0])]
    g = [np.array([0.0, 1.0]), np.array([1.0, 0.0]), np.zeros(2)]
    buf = [np.zeros(2) for _ in p]
    local = F.lars(p, g, buf, lr=0.5, momentum=0.9, weight_decay=0.01, trust_coefficient=0.02)
    expect0 = 0.02 * 5.0 / (1.0 + 0.01 * 5.0)
    np.testing.assert_allclose(local, [expect0, 1.0, 1.0], rtol=1e-14)  # 1 when ||p|| or ||g|| is 0
    np.testing.assert_allclose(p[0], np.array([3.0, 4.0]) - 0.5 * expect0 * (np.array([0.0, 1.0]) + 0.01 * np.array([3.0, 4.0])), rtol=1e-14)
    np.testing.assert_allclose(p[1], -0.5 * np.array([1.0, 0.0]), rtol=1e-14)


BAD = [
    (lambda: F.norms([np.ones(3)], 3.0), ValueError, "norm_type must be 1, 2 or inf"),
    (lambda: F.clip_grad_norm([np.ones(3)], -1.0), ValueError, "max_norm must be"),
    (lambda: F.clip_grad_norm([np.ones(3, np.int32)], 1.0), TypeError, r"grads\[0\] must have dtype"),
    (lambda: F.clip_grad_norm([np.ones(3)[::2]], 1.0), ValueError, r"grads\[0\] must be C-contiguous"),
    (lambda: F.scale([np.ones(3), np.ones(3, np.float32)], 2.0), TypeError, "share a dtype"),
    (lambda: F.clamp([np.ones(3)], 2.0, 1.0), ValueError, "lo <= hi"),
    (lambda: F.add_penalty([np.ones(3)], [np.ones(4)], l1=1.0), ValueError, r"params\[0\] has shape"),
    (lambda: F.add_penalty([np.ones(3)], [np.ones(3)], l1=-1.0), ValueError, "l1 must be"),
    (lambda: F.soft_threshold([np.ones(3)], threshold=-0.1), ValueError, "threshold must be"),
]


@pytest.mark.parametrize("call,exc,needle", BAD)
def test_bad_input(call, exc, needle):
    with pytest.raises(exc, match=needle):
        call()


def test_refused_clip_changes_nothing():
    g = [np.full(4, 10.0), np.full(3, 10.0)]
    ro = np.full(2, 10.0)
    ro.flags.writeable = False
    for impl in (F, R):
        with pytest.raises(ValueError, match="read-only"):
            impl.clip_grad_norm(g + [ro], 1.0)
        assert all((x == 10.0).all() for x in g)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_decay_matches_twin_bitwise_and_refuses_bad_input(dtype):
    rng = np.random.default_rng(3)
    a = _arrays(rng, [7, 4097, 0, 1], dtype)
    b = [x.copy() for x in a]
    F.decay(a, lr=0.03, weight_decay=0.7)
    R.decay(b, lr=0.03, weight_decay=0.7)
    for x, y in zip(a, b):
        assert x.tobytes() == y.tobytes()
    before = [x.copy() for x in a]
    for impl in (F, R):
        with pytest.raises(ValueError, match="weight_decay must be a finite number >= 0"):
            impl.decay(a, lr=0.1, weight_decay=-1.0)
        with pytest.raises(TypeError, match="lr must be a number, got bool"):
            impl.decay(a, lr=True, weight_decay=0.1)
    assert all(x.tobytes() == y.tobytes() for x, y in zip(a, before))
