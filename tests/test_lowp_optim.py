"""Optimizer steps on low-precision storage: bfloat16/float16 parameters and gradients,
bfloat16 state, float32 master weights, stochastic rounding. Kernel against twin bit for
bit for every elementwise optimizer and every mode, over multi-step trajectories in the
list and single-array forms; the twin against its definition (widen, the float32 step,
round); stochastic rounding unbiased and independent of the thread count; bad input
refused with every array untouched."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepoptim import functional, reference
from deepoptim.reference._lowp import Blockwise8
from deepoptim.reference.optim import LOWP_KERNELS
from kernels import AWKWARD_SIZES, KERNELS
from threads import run_json

BF16 = np.dtype(ml_dtypes.bfloat16)
INT8 = "int8"  # 8-bit blockwise state (Blockwise8)
F16 = np.dtype(np.float16)
F32 = np.dtype(np.float32)

# (param dtype, state dtype, master weights, stochastic rounding)
MODES = {
    "bf16-params": (BF16, F32, False, False),
    "bf16-params-bf16-state": (BF16, BF16, False, False),
    "f16-params": (F16, F32, False, False),
    "f16-params-bf16-state": (F16, BF16, False, False),
    "f32-params-bf16-state": (F32, BF16, False, False),
    "bf16-master": (BF16, F32, True, False),
    "f16-master-bf16-state": (F16, BF16, True, False),
    "bf16-stochastic": (BF16, F32, False, True),
    "bf16-stochastic-bf16-state": (BF16, BF16, False, True),
    "f32-params-int8-state": (F32, INT8, False, False),
    "bf16-params-int8-state": (BF16, INT8, False, False),
    "f16-master-int8-state": (F16, INT8, True, False),
    "bf16-stochastic-int8-state": (BF16, INT8, False, True),
}
# States that are never negative keep the unsigned code (as deepoptim.optim decides).
NONNEG = ("sq", "square", "sum", "inf", "step_size", "acc")
STEPS = 4


def bits(a: np.ndarray) -> np.ndarray:
    return a.view({1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize])


def assert_same(a, b, what: str) -> None:
    if isinstance(a, Blockwise8):
        assert isinstance(b, Blockwise8) and a.signed == b.signed, what
        np.testing.assert_array_equal(a.codes, b.codes, err_msg=what + " codes")
        assert_same(a.absmax, b.absmax, what + " absmax")
        return
    assert a.dtype == b.dtype and a.shape == b.shape, what
    nan = np.isnan(a.astype(np.float32)) & np.isnan(b.astype(np.float32))
    differ = (bits(a) != bits(b)) & ~nan
    assert not differ.any(), f"{what}: {int(differ.sum())} elements differ, first at {np.flatnonzero(differ)[0]}"


def _state(kernel, p32, hp, sdt):
    out = []
    for name, s in zip(kernel.states, kernel.make_state(p32, hp)):
        if s is None or s.ndim == 0 and s.size == 1 and s.shape == ():
            out.append(s)  # unused, or a per-tensor 0-d state (float32 whatever the params)
        elif sdt == INT8:
            out.append(Blockwise8.from_float(s.astype(np.float32), signed=not any(k in name for k in NONNEG)))
        else:
            out.append(s.astype(sdt))
    return out


def _build(kernel, hp, sizes, pdt, sdt, master, rng):
    rows = []
    for n in sizes:
        p32 = rng.standard_normal(n).astype(np.float32)
        state = _state(kernel, p32, hp, sdt)
        rows.append([p32.astype(pdt)] + state + [p32.copy() if master else None])
    return rows


def _copy(rows):
    def one(a):
        if isinstance(a, Blockwise8):
            return Blockwise8(a.codes.copy(), a.absmax.copy(), a.signed)
        return None if a is None else a.copy()
    return [[one(a) for a in row] for row in rows]


def _step(kernel, fn, rows, grads, hp, step, list_form, stochastic, seed):
    """One step; returns what the calls returned (LAMB's and LARS's trust ratios)."""
    extra = {"stochastic_rounding": (seed, step)} if stochastic else {}
    nstate = len(kernel.states)
    if list_form:
        cols = [[row[k] for row in rows] for k in range(nstate + 2)]
        states = [None if c[0] is None else c for c in cols[1:1 + nstate]]
        masters = cols[-1] if cols[-1][0] is not None else None
        return [fn(cols[0], grads, *states, **kernel.kwargs(hp, step), master_params=masters, **extra)]
    return [fn(row[0], g, *row[1:1 + nstate], **kernel.kwargs(hp, step), master_params=row[-1], **extra)
            for row, g in zip(rows, grads)]


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("name", LOWP_KERNELS)
@settings(max_examples=8, deadline=None)
@given(data=st.data())
def test_kernel_equals_twin(name, mode, data):
    kernel = KERNELS[name]
    pdt, sdt, master, stochastic = MODES[mode]
    hp = data.draw(kernel.hyper(), label="hyper")
    sizes = data.draw(st.lists(st.sampled_from(AWKWARD_SIZES + [513, 1025, 5000]), min_size=1, max_size=3),
                      label="sizes")
    list_form = data.draw(st.booleans(), label="list_form")
    seed = data.draw(st.integers(0, 2**64 - 1), label="seed")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="rng"))
    fast = _build(kernel, hp, sizes, pdt, sdt, master, rng)
    twin = _copy(fast)
    scale = rng.choice([1e-3, 1.0, 1e2])
    for step in range(1, STEPS + 1):
        grads = [(rng.standard_normal(n) * scale).astype(pdt) for n in sizes]
        out_fast = _step(kernel, kernel.fast, fast, grads, hp, step, list_form, stochastic, seed)
        out_twin = _step(kernel, kernel.twin, twin, grads, hp, step, list_form, stochastic, seed)
        for a, b in zip(out_fast, out_twin):  # the trust ratios (LAMB, LARS), else None
            assert (a is None) == (b is None), name
            if a is not None:
                assert_same(np.asarray(a, np.float64), np.asarray(b, np.float64),
                            f"{name} {mode} trust ratios step {step} hp={hp}")
        for t, (rf, rt) in enumerate(zip(fast, twin)):
            for k, (a, b) in enumerate(zip(rf, rt)):
                if b is not None:
                    assert_same(a, b, f"{name} {mode} tensor {t} array {k} step {step} hp={hp}")


@pytest.mark.parametrize("name", ["adam", "sgd", "nadam", "lion", "lamb", "lars"])
def test_twin_is_widen_step_round(name):
    """The twin's low-precision step is the float32 twin on widened copies, rounded back
    to nearest even (the definition in deepoptim.reference._lowp)."""
    kernel = KERNELS[name]
    hp = dict(kernel.defaults)
    rng = np.random.default_rng(3)
    p32 = rng.standard_normal(3000).astype(np.float32)
    p = p32.astype(BF16)
    g = rng.standard_normal(3000).astype(BF16)
    st16 = _state(kernel, p32, hp, BF16)
    st32 = [None if s is None else s.astype(np.float32) if s.shape else s.copy() for s in st16]
    p_ref = p.astype(np.float32)
    kernel.call(kernel.twin, p, g, st16, hp, 1)
    kernel.call(kernel.twin, p_ref, g.astype(np.float32), st32, hp, 1)
    assert_same(p, p_ref.astype(BF16), "params")
    for a, b in zip(st16, st32):
        if a is not None and a.shape:
            assert_same(a, b.astype(BF16), "state")


def test_master_weights_keep_small_updates():
    """With float32 master weights an update far below half a bfloat16 ulp accumulates;
    rounding to nearest without them loses every one (the parameter never moves)."""
    p_rne = np.ones(4096, BF16)
    p_mw, master = np.ones(4096, BF16), np.ones(4096, np.float32)
    g = np.ones(4096, BF16)
    for _ in range(1000):
        functional.sgd(p_rne, g, None, lr=1e-4, momentum=0.0)
        functional.sgd(p_mw, g, None, lr=1e-4, momentum=0.0, master_params=master)
    assert np.all(p_rne.astype(np.float32) == 1.0)
    np.testing.assert_allclose(master, 0.9, rtol=1e-4)
    assert_same(p_mw, master.astype(BF16), "params are the masters rounded")


def test_stochastic_rounding_is_unbiased():
    """E[round(x)] = x: 1000 steps of an update of 1/16 ulp move a bfloat16 weight on
    average by the float32 amount (within 5 sigma), where nearest rounding stays put."""
    n, steps, lr = 8192, 400, 2.0**-12  # bfloat16 ulp at 1 is 2**-7; lr*g = ulp/32
    p = np.ones(n, BF16)
    g = np.full(n, -1.0, BF16)
    for step in range(1, steps + 1):
        functional.sgd(p, g, None, lr=lr, momentum=0.0, stochastic_rounding=(123, step))
    moved = p.astype(np.float64) - 1.0
    expected = steps * lr
    sigma = np.sqrt(steps * (1 / 32) * (31 / 32)) * 2.0**-7 / np.sqrt(n)  # per-step Bernoulli, averaged
    assert abs(moved.mean() - expected) < 5 * sigma + 2.0**-7 * 0.02, (moved.mean(), expected)


def test_stochastic_rounding_depends_on_seed_and_step_not_threads():
    script = r"""
import json, sys
import numpy as np, ml_dtypes
from deepoptim import functional
rng = np.random.default_rng(0)
p = rng.standard_normal(300_000).astype(ml_dtypes.bfloat16)
g = rng.standard_normal(300_000).astype(ml_dtypes.bfloat16)
m = np.zeros(300_000, np.float32); v = np.zeros(300_000, np.float32)
for step in range(1, 4):
    functional.adamw([p[:1000], p[1000:]], [g[:1000], g[1000:]], [m[:1000], m[1000:]], [v[:1000], v[1000:]],
                     step=step, lr=1e-3, stochastic_rounding=(99, step))
print(json.dumps({"p": p.view(np.uint16).tobytes().hex()[:4000], "h": int(p.view(np.uint16).astype(np.int64).sum())}))
"""
    one, two = run_json(script, 1), run_json(script, 2)
    assert one == two
    p = np.zeros(10, BF16) + BF16.type(1.0)
    q = p.copy()
    g = np.full(10, 1e-3, BF16)
    functional.sgd(p, g, None, lr=1.0, momentum=0.0, stochastic_rounding=(1, 1))
    functional.sgd(q, g, None, lr=1.0, momentum=0.0, stochastic_rounding=(1, 2))
    r = np.zeros(10, BF16) + BF16.type(1.0)
    functional.sgd(r, g, None, lr=1.0, momentum=0.0, stochastic_rounding=(1, 1))
    assert_same(p, r, "same seed and step: same bits")
    assert not np.array_equal(bits(p), bits(q)), "another step draws other bits"


def _adam_args(pdt, sdt, n=64):
    p = np.ones(n, pdt)
    return [p, np.ones(n, pdt), np.zeros(n, sdt), np.zeros(n, sdt)]


BAD = [
    ("grads of another dtype", lambda: ([np.ones(8, BF16), np.ones(8, F32), np.zeros(8, F32), np.zeros(8, F32)], {}),
     TypeError, "grads"),
    ("float16 state", lambda: (_adam_args(BF16, F16), {}), TypeError, "exp_avgs"),
    ("float32 state of float64 params", lambda: (_adam_args(np.float64, F32), {}), TypeError, "exp_avgs"),
    ("bfloat16 state of float64 params", lambda: (_adam_args(np.float64, BF16), {}), TypeError, "exp_avgs"),
    ("master of float32 params", lambda: (_adam_args(F32, F32), {"master_params": np.ones(64, F32)}),
     ValueError, "master_params"),
    ("bfloat16 master", lambda: (_adam_args(BF16, F32), {"master_params": np.ones(64, BF16)}),
     TypeError, "master_params"),
    ("master of another shape", lambda: (_adam_args(BF16, F32), {"master_params": np.ones(63, F32)}),
     ValueError, "master_params"),
    ("stochastic rounding of float16", lambda: (_adam_args(F16, F32), {"stochastic_rounding": (1, 1)}),
     ValueError, "stochastic_rounding"),
    ("stochastic rounding of float32", lambda: (_adam_args(F32, F32), {"stochastic_rounding": (1, 1)}),
     ValueError, "stochastic_rounding"),
    ("stochastic rounding and master", lambda: (_adam_args(BF16, F32), {"stochastic_rounding": (1, 1),
                                                                       "master_params": np.ones(64, F32)}),
     ValueError, "exclude"),
    ("stochastic rounding not a pair", lambda: (_adam_args(BF16, F32), {"stochastic_rounding": 7}),
     TypeError, "stochastic_rounding"),
    ("negative seed", lambda: (_adam_args(BF16, F32), {"stochastic_rounding": (-1, 1)}), ValueError, "seed"),
    ("int8 params", lambda: ([np.ones(8, np.int8), np.ones(8, np.int8), np.zeros(8, F32), np.zeros(8, F32)], {}),
     TypeError, "params"),
]


@pytest.mark.parametrize("case", BAD, ids=lambda c: c[0])
@pytest.mark.parametrize("impl", ["fast", "twin"])
def test_bad_input_is_refused_untouched(case, impl):
    what, make, exc, word = case
    arrays, kw = make()
    fn = functional.adam if impl == "fast" else reference.adam
    before = [a.copy() for a in arrays] + [np.array(v, copy=True) for v in kw.values() if isinstance(v, np.ndarray)]
    with pytest.raises(exc, match=word):
        fn(*arrays, step=1, **kw)
    after = arrays + [v for v in kw.values() if isinstance(v, np.ndarray)]
    for a, b in zip(after, before):
        assert_same(a, b, what)


def test_master_aliasing_a_state_is_refused():
    p, g, m, v = _adam_args(BF16, F32)
    for fn in (functional.adam, reference.adam):
        with pytest.raises(ValueError, match="share memory"):
            fn(p, g, m, v, step=1, master_params=m)


def test_read_only_master_is_refused():
    p, g, m, v = _adam_args(BF16, F32)
    master = np.ones(64, F32)
    master.flags.writeable = False
    for fn in (functional.adam, reference.adam):
        with pytest.raises(ValueError, match="master_params is read-only"):
            fn(p, g, m, v, step=1, master_params=master)


@pytest.mark.parametrize("name", ["add_penalty", "soft_threshold", "decay"])
def test_kernels_without_low_precision_say_so(name):
    """The helpers the optimizers call outside their kernels stay float32/float64 (the
    optimizers refuse the options that need them on 16-bit parameters), and say so
    instead of computing on something else."""
    p = np.ones(16, BF16)
    fn = getattr(functional, name)
    with pytest.raises(TypeError, match="float32 or float64"):
        if name == "add_penalty":
            fn(p.copy(), p, l2=0.1)
        elif name == "soft_threshold":
            fn(p, threshold=0.1)
        else:
            fn(p, lr=0.1, weight_decay=0.1)
    assert np.all(p.astype(np.float32) == 1.0)


@pytest.mark.parametrize("name", ["lamb", "lars"])
def test_trust_ratio_norms_do_not_depend_on_threads(name):
    """LAMB's and LARS's norms on mixed storage add fixed-order block partials, as in
    float32: the same trust ratios and bits with 1 and 2 threads (bfloat16 params with
    master weights and 8-bit state; bfloat16 params rounded stochastically)."""
    script = r"""
import json
import numpy as np, ml_dtypes
from deepoptim import functional
from deepoptim.reference._lowp import Blockwise8
bf = ml_dtypes.bfloat16
rng = np.random.default_rng(0)
sizes = [1000, 300_000, 5000]
out = {}
for mode in ("master-int8", "stochastic-bf16"):
    p = [rng.standard_normal(n).astype(bf) for n in sizes]
    g = [rng.standard_normal(n).astype(bf) for n in sizes]
    master = [a.astype(np.float32) for a in p] if mode == "master-int8" else None
    def state(signed):
        if mode == "master-int8":
            return [Blockwise8.from_float(np.zeros(n, np.float32), signed) for n in sizes]
        return [np.zeros(n, bf) for n in sizes]
    trust = []
    if NAME == "lamb":
        m, v = state(True), state(False)
    else:
        buf = state(True)
    for step in range(1, 4):
        sr = (7, step) if mode == "stochastic-bf16" else None
        if NAME == "lamb":
            r = functional.lamb(p, g, m, v, step=step, lr=1e-2, weight_decay=0.01, master_params=master,
                                stochastic_rounding=sr)
        else:
            r = functional.lars(p, g, buf, lr=0.1, weight_decay=1e-4, master_params=master, stochastic_rounding=sr)
        trust += [float(x).hex() for x in r]
    out[mode] = {"trust": trust, "p": [int(a.view(np.uint16).astype(np.int64).sum()) for a in p],
                 "p0": p[1].view(np.uint16)[:2000].tobytes().hex()}
print(json.dumps(out))
""".replace("NAME", repr(name))
    one, two = run_json(script, 1), run_json(script, 2)
    assert one == two
