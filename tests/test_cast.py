"""The cast kernel and the low-precision conversions (cpp/include/deepoptim/lowp.hpp):
kernel equal to its twin bit for bit, and both equal to ml_dtypes' and NumPy's astype for
every non-NaN value (a NaN stays a NaN of its sign). The float32 inputs are stratified
so that every sign, exponent and leading mantissa is paired with every rounding case of
the dropped bits; ``DEEPOPTIM_HUGE=1`` adds all 2**32 float32 patterns."""

from __future__ import annotations

import numpy as np
import pytest

from deepoptim import functional as F
from deepoptim import reference as R
from deepoptim.reference.cast import BFLOAT16

from kernels import AWKWARD_SIZES

F16 = np.dtype(np.float16)
DTYPES = [np.dtype(np.float32), np.dtype(np.float64), F16, BFLOAT16]


def bits(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1).view(f"u{a.itemsize}")


def same_bits_or_both_nan(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """Bit for bit, except that any NaN matches any NaN of the same sign."""
    with np.errstate(all="ignore"):  # NaNs are compared here, not warned about
        g32, w32 = got.astype(np.float64), want.astype(np.float64)
    nan = np.isnan(w32)
    assert (np.isnan(g32) == nan).all(), f"{what}: NaN where there should be none (or the reverse)"
    assert (np.signbit(g32[nan]) == np.signbit(w32[nan])).all(), f"{what}: a NaN lost its sign"
    differ = (bits(got) != bits(want)) & ~nan.reshape(-1)
    if differ.any():
        i = int(np.flatnonzero(differ)[0])
        raise AssertionError(f"{what}: {int(differ.sum())} differ, first at {i}: "
                             f"{bits(got)[i]:#x} vs {bits(want)[i]:#x}")


def stratified_float32() -> np.ndarray:
    """Every (sign, exponent, top 10 mantissa bits) with low-bit patterns that hit each
    rounding case at bit 16 (bfloat16) and bit 13 (float16): 2**19 * 12 values."""
    high = np.arange(2**19, dtype=np.uint32) << np.uint32(13)
    low = np.array([0, 1, 0xFFF, 0x1000, 0x1001, 0x1FFF, 0x7FF, 0x800, 0x801,
                    0x17FF, 0x1800, 0x1801], np.uint32)
    return (high[:, None] | low[None, :]).reshape(-1).view(np.float32)


def _fast_and_twin(src: np.ndarray, dtype: np.dtype):
    fast, twin = np.empty(src.shape, dtype), np.empty(src.shape, dtype)
    F.cast(src, fast)
    R.cast(src, twin)
    return fast, twin


@pytest.mark.parametrize("dtype", [BFLOAT16, F16], ids=["bfloat16", "float16"])
def test_float32_to_16_bits_equals_astype_and_twin(dtype):
    x = stratified_float32()
    fast, twin = _fast_and_twin(x, dtype)
    np.testing.assert_array_equal(bits(fast), bits(twin))  # twin and kernel: the same bits, NaNs too
    with np.errstate(all="ignore"):
        same_bits_or_both_nan(fast, x.astype(dtype), "kernel vs astype")
    nan = np.isnan(x)
    canonical = 0x7FC0 if dtype == BFLOAT16 else 0x7E00
    assert (bits(fast)[nan] & 0x7FFF == canonical).all()


@pytest.mark.parametrize("dtype", [BFLOAT16, F16], ids=["bfloat16", "float16"])
def test_float64_to_16_rounds_once(dtype):
    rng = np.random.default_rng(3)
    x32 = stratified_float32()[::7].astype(np.float64)
    # Exact halfway points of the 16-bit type, nudged by far less than a float32 ulp:
    # rounding through float32 first would land on the halfway point and round to even.
    nudge = np.ldexp(1.0, -40) * np.abs(x32)
    with np.errstate(all="ignore"):
        x = np.concatenate([x32, x32 + nudge, x32 - nudge, rng.standard_normal(100_000) * 10.0 ** rng.integers(-9, 9, 100_000),
                            [0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1e300, -1e300, 5e-324, 65519.99, 65520.0]])
    fast, twin = _fast_and_twin(x, dtype)
    np.testing.assert_array_equal(bits(fast), bits(twin))
    with np.errstate(all="ignore"):
        same_bits_or_both_nan(fast, x.astype(dtype), "kernel vs astype from float64")
    one_plus = np.array([1.0 + 2.0**-8 + 2.0**-40, 1.0 + 2.0**-11 + 2.0**-40])
    f = np.empty(2, dtype)
    F.cast(one_plus, f)
    # 1 + 2**-8 (+ a hair) must round up in bfloat16; through float32 it would round to 1.
    if dtype == BFLOAT16:
        assert f[0] > 1
    else:
        assert f[1] > 1


@pytest.mark.parametrize("src", [BFLOAT16, F16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("dst", DTYPES, ids=lambda d: d.name)
def test_every_16_bit_pattern_converts(src, dst):
    x = np.arange(2**16, dtype=np.uint16).view(src)
    fast, twin = _fast_and_twin(x, dst)
    if src == dst:
        np.testing.assert_array_equal(bits(fast), bits(x))  # a copy keeps every bit
        return
    same_bits_or_both_nan(fast, twin, "kernel vs twin")
    with np.errstate(all="ignore"):
        same_bits_or_both_nan(fast, x.astype(np.float32).astype(dst), "kernel vs astype (exact widening first)")


def test_float32_float64_both_ways():
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.standard_normal(10_000) * 10.0 ** rng.integers(-40, 40, 10_000), [3.5e38, -3.5e38, 1e-46]])
    with np.errstate(over="ignore"):
        x32 = x.astype(np.float32)
    for src, dst in ((x, np.float32), (x32, np.float64)):
        fast, twin = _fast_and_twin(src, np.dtype(dst))
        same_bits_or_both_nan(fast, twin, "kernel vs twin")
        with np.errstate(all="ignore"):
            same_bits_or_both_nan(fast, src.astype(dst), "kernel vs astype")


@pytest.mark.parametrize("n", AWKWARD_SIZES + [100_003])
def test_sizes_shapes_and_the_list_form(n):
    rng = np.random.default_rng(n)
    srcs = [rng.standard_normal(n).astype(np.float32), rng.standard_normal((3, 5)).astype(np.float32)]
    outs = [np.empty(s.shape, BFLOAT16) for s in srcs]
    F.cast(srcs, outs)
    for s, o in zip(srcs, outs):
        single = np.empty(s.shape, BFLOAT16)
        F.cast(s, single)
        np.testing.assert_array_equal(bits(o), bits(single))
        np.testing.assert_array_equal(bits(o), bits(s.astype(BFLOAT16)))
    F.cast([], [])  # nothing to do


def _bad_calls():
    f32 = lambda n=4: np.ones(n, np.float32)  # noqa: E731
    bf = lambda n=4: np.zeros(n, BFLOAT16)  # noqa: E731
    buf = np.zeros(8, np.float32)
    ro = bf()
    ro.flags.writeable = False
    return {
        "src not an array": ([1.0, 2.0], bf(), TypeError),  # a list: the list form, its items are no arrays
        "int src": (np.ones(4, np.int32), bf(), TypeError),
        "byte-swapped src": (np.ones(4, ">f4"), bf(), TypeError),
        "complex out": (f32(), np.zeros(4, np.complex64), TypeError),
        "shape": (f32(4), bf(5), ValueError),
        "strided src": (np.ones(8, np.float32)[::2], bf(), ValueError),
        "read-only out": (f32(), ro, ValueError),
        "overlap": (buf[:4], buf[2:6].view(np.uint32).view(np.float32), ValueError),
        "list lengths": ([f32(), f32()], [bf()], ValueError),
        "mixed src dtypes": ([f32(), np.ones(4)], [bf(), bf()], TypeError),
        "array and list": (f32(), [bf()], TypeError),
    }


@pytest.mark.parametrize("case", list(_bad_calls()))
@pytest.mark.parametrize("impl", ["fast", "twin"])
def test_bad_input_is_refused_and_nothing_changes(case, impl):
    src, out, err = _bad_calls()[case]
    outs = out if isinstance(out, list) else [out]
    before = [o.copy() for o in outs]
    with pytest.raises(err):
        (F.cast if impl == "fast" else R.cast)(src, out)
    for o, b in zip(outs, before):
        np.testing.assert_array_equal(bits(o), bits(b))


@pytest.mark.huge
@pytest.mark.parametrize("dtype", [BFLOAT16, F16], ids=["bfloat16", "float16"])
def test_all_float32_patterns(dtype):
    """All 2**32 float32 bit patterns, in chunks: the kernel equals astype (non-NaN)."""
    step = 1 << 26
    for lo in range(0, 1 << 32, step):
        x = np.arange(lo, lo + step, dtype=np.uint64).astype(np.uint32).view(np.float32)
        fast = np.empty(step, dtype)
        F.cast(x, fast)
        with np.errstate(all="ignore"):
            same_bits_or_both_nan(fast, x.astype(dtype), f"chunk at {lo:#x}")


# ------------------------------------------------------------ stochastic rounding
def test_stochastic_rounding_equals_its_twin_and_ignores_splits():
    rng = np.random.default_rng(9)
    x = rng.standard_normal(50_001).astype(np.float32)
    x[:6] = [np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0]
    fast, twin = np.empty(x.shape, BFLOAT16), np.empty(x.shape, BFLOAT16)
    F.cast_stochastic(x, fast, seed=3, offset=2**33 - 17)
    R.cast_stochastic(x, twin, seed=3, offset=2**33 - 17)
    np.testing.assert_array_equal(bits(fast), bits(twin))
    # Two arrays in one call = the concatenation; two calls at their offsets = one call.
    parts = [np.empty(4097, BFLOAT16), np.empty(x.size - 4097, BFLOAT16)]
    F.cast_stochastic([x[:4097], x[4097:]], parts, seed=3, offset=2**33 - 17)
    np.testing.assert_array_equal(np.concatenate([bits(p) for p in parts]), bits(fast))
    tail = np.empty(x.size - 100, BFLOAT16)
    F.cast_stochastic(x[100:], tail, seed=3, offset=2**33 - 17 + 100)
    np.testing.assert_array_equal(bits(tail), bits(fast)[100:])
    assert (bits(fast)[:4] & 0x7FFF == np.array([0x7FC0, 0x7FC0, 0x7F80, 0x7F80])).all()
    assert list(bits(fast)[4:6]) == [0x0000, 0x8000]
    other = np.empty(x.shape, BFLOAT16)
    F.cast_stochastic(x, other, seed=4, offset=2**33 - 17)
    assert (bits(other) != bits(fast)).any()  # another seed, other draws


@pytest.mark.parametrize("value", [1.0 + 2.0**-10, -(3.0 + 2.0**-9 + 2.0**-12), 2.0**-130 * 1.3])
def test_stochastic_rounding_is_unbiased(value):
    x = np.full(400_000, value, np.float32)
    out = np.empty(x.shape, BFLOAT16)
    F.cast_stochastic(x, out, seed=11)
    y = out.astype(np.float64)
    lo, hi = np.sort(np.unique(y))[[0, -1]]
    assert set(np.unique(y)) <= {lo, hi} and lo <= float(x[0]) <= hi  # only the two neighbours
    p = (float(x[0]) - lo) / (hi - lo)
    sigma = (hi - lo) * np.sqrt(p * (1 - p) / x.size)
    assert abs(y.mean() - float(x[0])) < 6 * sigma


@pytest.mark.parametrize("impl", ["fast", "twin"])
def test_stochastic_rounding_refuses_bad_input(impl):
    fn = F.cast_stochastic if impl == "fast" else R.cast_stochastic
    x, out = np.ones(8, np.float32), np.zeros(8, BFLOAT16)
    with pytest.raises(TypeError):
        fn(x.astype(np.float64), out, seed=0)  # float32 -> bfloat16 only
    with pytest.raises(TypeError):
        fn(x, np.zeros(8, np.float16), seed=0)
    with pytest.raises(ValueError):
        fn(x, out, seed=-1)
    with pytest.raises(TypeError):
        fn(x, out, seed=1.5)
    with pytest.raises(ValueError):
        fn(x, out, seed=0, offset=2**64 - 8)  # the stream would pass 2**64
    assert not bits(out).any()
