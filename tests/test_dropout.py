"""Dropout: the Philox generator against published vectors, masks identical to the twin
bit for bit, keep rates within statistical bounds, independence from threads and from
how a sequence is split, both backwards, torch's statistics, and bad input."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from deepoptim import _core
from deepoptim import functional as F
from deepoptim import reference as R
from threads import run_json

twin_module = importlib.import_module("deepoptim.reference.dropout")

# Random123's known-answer vectors for Philox4x32-10 (see docs/build-notes.md).
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_philox_known_answers(counter, key, expected):
    assert _core.philox4x32_10(list(counter), list(key)) == expected
    assert tuple(int(w) for w in twin_module.philox4x32_10(counter, key)) == expected


def _bits(mask, n):
    return np.unpackbits(mask, count=n, bitorder="little").astype(bool)


@given(
    n=st.one_of(st.sampled_from([0, 1, 3, 7, 8, 9, 4095, 4096, 4097, 8200]), st.integers(0, 30000)),
    p=st.one_of(st.sampled_from([0.0, 1e-9, 0.1, 0.5, 0.9, 1.0]), st.floats(0, 1)),
    seed=st.one_of(st.sampled_from([0, 1, 2**32 - 1, 2**32, 2**64 - 1]), st.integers(0, 2**64 - 1)),
    offset=st.one_of(st.sampled_from([0, 1, 3, 4, 2**34 - 5, 2**35 - 67]), st.integers(0, 2**40),
                     st.integers(2**64 - 40000, 2**64 - 1)),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_forward_matches_twin_bitwise(n, p, seed, offset, dtype):
    offset = min(offset, 2**64 - 1 - n)  # offset + size < 2**64: the last element is 2**64 - 2
    x = np.random.default_rng(n).standard_normal(n).astype(dtype)
    y1, m1 = F.dropout(x, p, True, seed, offset)
    y2, m2 = R.dropout(x, p, True, seed, offset)
    assert y1.dtype == y2.dtype == x.dtype
    assert y1.tobytes() == y2.tobytes()
    if p == 0.0:
        assert m1 is None and m2 is None and y1 is x and y2 is x
    else:
        assert m1.dtype == np.uint8 and m1.shape == ((n + 7) // 8,)
        assert m1.tobytes() == m2.tobytes()
        keep = _bits(m1, n)
        scale = np.asarray(_realized_scale(p)).astype(dtype)
        np.testing.assert_array_equal(y1, np.where(keep, x * scale, 0))
        # Bits past n in the last byte are zero.
        assert not np.unpackbits(m1, bitorder="little")[n:].any()


def _realized_scale(p):
    """1 / the keep rate 16-bit draws realize: 1 - round(p * 2**16) / 2**16."""
    if p >= 1:
        return 0.0
    t = min(int(np.floor(p * 65536 + 0.5)), 65535)
    return 65536 / (65536 - t)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_rate_within_statistical_bound(p):
    n = 1_000_000
    _, mask = F.dropout(np.ones(n, np.float32), p, seed=2024)
    kept = _bits(mask, n).mean()
    sigma = np.sqrt(p * (1 - p) / n)
    assert abs(kept - (1 - p)) < 5 * sigma, (kept, 1 - p, sigma)
    # Neighbouring elements are not correlated (a broken counter would repeat words).
    k = _bits(mask, n).astype(np.float64)
    corr = np.corrcoef(k[:-1], k[1:])[0, 1]
    assert abs(corr) < 5 / np.sqrt(n)


def test_scaling_preserves_the_mean():
    x = np.full(1_000_000, 3.0)
    y, _ = F.dropout(x, 0.3, seed=5)
    assert abs(y.mean() - 3.0) < 5 * 3.0 * np.sqrt(0.3 / 0.7 / x.size)


def test_mask_independent_of_how_the_sequence_is_split():
    """One call over n elements = consecutive calls with offsets advanced by their sizes,
    whatever the split points (block boundaries, odd sizes, a mid-group start)."""
    n, seed, start = 20_000, 77, 6
    x = np.random.default_rng(1).standard_normal(n).astype(np.float32)
    whole, _ = F.dropout(x, 0.4, seed=seed, offset=start)
    for cuts in ([4096], [1, 2, 3, 4097, 8191], [4095, 4097 + 4095, 12001]):
        edges = [0, *cuts, n]
        parts = [F.dropout(x[a:b].copy(), 0.4, seed=seed, offset=start + a)[0] for a, b in zip(edges, edges[1:])]
        assert np.concatenate(parts).tobytes() == whole.tobytes()


def test_fresh_masks_for_new_offsets_and_seeds():
    x = np.ones(4096, np.float32)
    a = F.dropout(x, 0.5, seed=1, offset=0)[1]
    b = F.dropout(x, 0.5, seed=1, offset=4096)[1]
    c = F.dropout(x, 0.5, seed=2, offset=0)[1]
    assert a.tobytes() != b.tobytes() and a.tobytes() != c.tobytes()
    agree = (_bits(a, 4096) == _bits(c, 4096)).mean()
    assert 0.45 < agree < 0.55  # unrelated streams agree half the time


@pytest.mark.parametrize("impl", [F, R], ids=["fast", "twin"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_from_mask_and_from_seed(impl, dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((37, 111)).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    for p in (0.25, 0.5, 1.0):
        y, mask = impl.dropout(x, p, seed=9, offset=13)
        dx = impl.dropout_backward(dy, mask, p)
        keep = _bits(mask, x.size).reshape(x.shape)
        scale = np.asarray(_realized_scale(p)).astype(dtype)
        np.testing.assert_array_equal(dx, np.where(keep, dy * scale, 0))
        regenerated = impl.dropout_backward(dy, None, p, seed=9, offset=13)
        assert regenerated.tobytes() == dx.tobytes()
        _, none = impl.dropout(x, p, seed=9, offset=13, return_mask=False)
        assert none is None


@pytest.mark.parametrize("impl", [F, R], ids=["fast", "twin"])
def test_identity_and_all_zero_cases(impl):
    x = np.array([1.0, np.nan, -np.inf, 2.0])
    for y, m in (impl.dropout(x, 0.0), impl.dropout(x, 0.7, training=False)):
        assert y is x and m is None
    assert impl.dropout_backward(x, None, 0.0) is x
    y, m = impl.dropout(x, 1.0)
    np.testing.assert_array_equal(y, np.zeros(4))  # dropped NaN and inf become 0, not NaN
    assert not _bits(m, 4).any()


_THREAD_SCRIPT = r"""
import hashlib, json
import numpy as np
import deepoptim
from deepoptim import functional as F
out = {"threads": deepoptim.build_info()["max_threads"]}
x = np.random.default_rng(0).standard_normal(3_000_001).astype(np.float32)
for p in (0.1, 0.5):
    y, m = F.dropout(x, p, seed=123, offset=5)
    dx = F.dropout_backward(x, None, p, seed=123, offset=5)
    out[str(p)] = hashlib.sha256(y.tobytes() + m.tobytes() + dx.tobytes()).hexdigest()
print(json.dumps(out))
"""


def test_bitwise_identical_with_1_and_2_threads():
    one, two = run_json(_THREAD_SCRIPT, 1), run_json(_THREAD_SCRIPT, 2)
    assert (one.pop("threads"), two.pop("threads")) == (1, 2)
    assert one == two


def test_keep_rate_like_torch():
    """Same distribution as torch's dropout (not the same stream: torch's generator is
    serial and different): both keep 1 - p within statistical noise and scale alike."""
    torch = pytest.importorskip("torch")
    n, p = 1_000_000, 0.3
    x = np.ones(n, np.float32)
    ours, _ = F.dropout(x, p, seed=1)
    torch.manual_seed(0)
    theirs = torch.nn.functional.dropout(torch.from_numpy(x), p).numpy()
    assert set(np.unique(theirs)) == {0.0, np.float32(1 / 0.7)}
    # Ours scales by the keep rate 16-bit draws realize (unbiased), within 2**-16 of torch's.
    assert set(np.unique(ours)) == {0.0, np.float32(_realized_scale(p))}
    assert abs(_realized_scale(p) * 0.7 - 1) < 2**-16
    sigma = np.sqrt(p * (1 - p) / n)
    assert abs((ours > 0).mean() - (theirs > 0).mean()) < 7 * sigma


BAD_FORWARD = [
    (dict(p=-0.1), ValueError, r"p must be in \[0.0, 1.0\]"),
    (dict(p=1.5), ValueError, r"p must be in \[0.0, 1.0\]"),
    (dict(p=float("nan")), ValueError, r"p must be in"),
    (dict(seed=-1), ValueError, r"seed must be in \[0, 2\*\*64\)"),
    (dict(seed=2**64), ValueError, r"seed must be in \[0, 2\*\*64\)"),
    (dict(seed=1.5), TypeError, r"seed must be an int"),
    (dict(offset=-3), ValueError, r"offset must be in"),
    (dict(offset=2**64 - 2), ValueError, r"offset \+ size must be < 2\*\*64"),
    (dict(x=np.ones(10, np.int64)), TypeError, r"x must have dtype float32 or float64"),
    (dict(x=np.ones(20, np.float32)[::2]), ValueError, r"x must be C-contiguous"),
    (dict(x=[1.0, 2.0]), TypeError, r"x must be a numpy.ndarray"),
]


@pytest.mark.parametrize("impl", [F, R], ids=["fast", "twin"])
@pytest.mark.parametrize("kw,exc,needle", BAD_FORWARD)
def test_forward_refuses_bad_input(impl, kw, exc, needle):
    args = dict(x=np.ones(10, np.float32), p=0.5, seed=0, offset=0)
    args.update(kw)
    x = args["x"]
    before = np.array(x, copy=True)
    with pytest.raises(exc, match=needle):
        impl.dropout(args["x"], args["p"], True, args["seed"], args["offset"])
    np.testing.assert_array_equal(np.asarray(x), before)


@pytest.mark.parametrize("impl", [F, R], ids=["fast", "twin"])
def test_backward_refuses_bad_input(impl):
    dy = np.ones(10, np.float32)
    _, mask = impl.dropout(dy, 0.5)
    with pytest.raises(TypeError, match="mask must be a uint8 array"):
        impl.dropout_backward(dy, mask.astype(np.int8), 0.5)
    with pytest.raises(ValueError, match=r"mask must have shape \(2,\)"):
        impl.dropout_backward(dy, np.zeros(3, np.uint8), 0.5)
    with pytest.raises(ValueError, match="needs the mask, or the seed"):
        impl.dropout_backward(dy, None, 0.5)
    with pytest.raises(ValueError, match=r"p must be in"):
        impl.dropout_backward(dy, mask, 2.0)
    with pytest.raises(TypeError, match="dy must have dtype"):
        impl.dropout_backward(dy.astype(np.int32), mask, 0.5)


# ------------------------------------------------------------------ edges (issue 15)
@pytest.mark.parametrize("impl", [F, R], ids=["fast", "twin"])
@pytest.mark.parametrize("p", [0.99999, 1e-5, 0.3, 1 - 2**-16, 2**-16])
def test_unbiased_for_any_p(impl, p):
    """Kept values are scaled by the keep rate the draws realize: the sum of y over n
    elements equals n * x in expectation, within 5 sigma, also for p near 0 and 1."""
    n = 4_000_000 if impl is F else 400_000
    y, mask = impl.dropout(np.ones(n, np.float64), p, seed=11)
    kept = int(_bits(mask, n).sum())
    t = min(int(np.floor(p * 65536 + 0.5)), 65535)
    q = (65536 - t) / 65536  # the realized keep rate
    assert np.all((y == 0) | (y == 1 / q))
    sigma = np.sqrt(n * q * (1 - q)) / q  # std of sum(y)
    assert abs(y.sum() - n) <= 5 * sigma + 1e-9 * n, (y.sum(), n, sigma)
    assert kept == np.count_nonzero(y)


@pytest.mark.parametrize("impl", [F, R], ids=["fast", "twin"])
@pytest.mark.parametrize("n", [1, 7, 8, 9, 4097])
def test_offsets_at_the_end_of_the_sequence(impl, n):
    """The last elements of the 2**64-element sequence: forward, mask and the mask-free
    backward agree, and one element more is refused before anything is written."""
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    for offset in (2**64 - 1 - n, 2**64 - 4 - n, 2**64 - 9 - n):
        offset = max(offset, 0)
        y, mask = impl.dropout(x, 0.5, seed=3, offset=offset)
        assert y.tobytes() == F.dropout(x, 0.5, seed=3, offset=offset)[0].tobytes()
        assert y.tobytes() == R.dropout(x, 0.5, seed=3, offset=offset)[0].tobytes()
        dy = np.ones_like(x)
        from_mask = impl.dropout_backward(dy, mask, 0.5)
        regenerated = impl.dropout_backward(dy, None, 0.5, seed=3, offset=offset)
        assert from_mask.tobytes() == regenerated.tobytes()
        np.testing.assert_array_equal(y != 0, from_mask != 0)
    out = np.full_like(x, 7.0)
    with pytest.raises(ValueError, match="offset"):
        impl.dropout(x, 0.5, seed=3, offset=2**64 - n, out=out)
    with pytest.raises(ValueError, match="offset"):
        impl.dropout_backward(x, None, 0.5, seed=3, offset=2**64 - n, out=out)
    assert np.all(out == 7.0)


@pytest.mark.parametrize("impl", [F, R], ids=["fast", "twin"])
def test_backward_refuses_mask_overlapping_out(impl):
    dy = np.ones(64, np.float32)
    _, mask = F.dropout(dy, 0.5, seed=1)
    out = np.zeros(64, np.float32)
    m = out.view(np.uint8)[:8]
    m[...] = mask
    before = out.copy()
    with pytest.raises(ValueError, match="share memory"):
        impl.dropout_backward(dy, m, 0.5, out=out)
    assert out.tobytes() == before.tobytes()
