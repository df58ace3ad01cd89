"""Bad input: every refusal raises TypeError or ValueError naming the argument, the NumPy
twin refuses the same input with the same exception type, and no array changes."""

from __future__ import annotations

import numpy as np
import pytest

from kernels import KERNELS, NAMES


def _setup(name, n_tensors=3, dtype=np.float32, hp=None):
    kernel = KERNELS[name]
    hp = dict(kernel.defaults) if hp is None else hp
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(n_tensors):
        p = rng.standard_normal(9).astype(dtype)
        rows.append([p] + kernel.make_state(p, hp, fill=0.5))
    grads = [rng.standard_normal(9).astype(dtype) for _ in range(n_tensors)]
    return kernel, hp, rows, grads


def _columns(rows):
    return [[r[k] for r in rows] if rows[0][k] is not None else None for k in range(len(rows[0]))]


def _arrays(rows, grads):
    return [a for r in rows for a in r if a is not None] + [g for g in grads if isinstance(g, np.ndarray)]


def _snapshot(rows, grads):
    return [a.copy() for a in _arrays(rows, grads)]


def _unchanged(rows, grads, snap):
    now = _arrays(rows, grads)
    return len(now) == len(snap) and all(a.tobytes() == b.tobytes() for a, b in zip(now, snap))


def _expect(kernel, exc, needle, params, grads, states, hp, step=1):
    """Both implementations raise `exc` with `needle` in the message."""
    for fn in (kernel.fast, kernel.twin):
        with pytest.raises(exc, match=needle):
            kernel.call(fn, params, grads, states, hp, step)


# Each case mutates a freshly built list-form call and names what must be blamed. The
# fault is placed in the LAST tensor, so a kernel that validated lazily would already
# have updated the first ones.
def _cases(name):
    kernel = KERNELS[name]
    cases = {}

    def case(f):
        cases[f.__name__] = f
        return f

    @case
    def wrong_dtype(rows, grads, hp):
        rows[-1][0] = rows[-1][0].astype(np.int32)
        return TypeError, r"params\[2\] must have dtype float32(, float64, bfloat16 \(ml_dtypes\) or float16| or float64)"

    @case
    def mixed_dtypes(rows, grads, hp):
        grads[-1] = grads[-1].astype(np.float64)
        return TypeError, r"grads\[2\] has dtype float64 but params\[[02]\] has dtype float32"

    @case
    def byteswapped_dtype(rows, grads, hp):
        grads[-1] = grads[-1].astype(">f4")
        return TypeError, r"grads\[2\] must have dtype float32(, float64, bfloat16 \(ml_dtypes\) or float16| or float64)"

    @case
    def shape_mismatch(rows, grads, hp):
        grads[-1] = np.zeros(8, np.float32)
        return ValueError, r"grads\[2\] has shape \(8,\) but params\[2\] has shape \(9,\)"

    @case
    def state_shape_mismatch(rows, grads, hp):
        rows[-1][1] = np.zeros((3, 3), np.float32)
        return ValueError, rf"{kernel.states[0]}\[2\] has shape \(3, 3\)"

    @case
    def non_contiguous_view(rows, grads, hp):
        rows[-1][0] = np.zeros(18, np.float32)[::2]
        return ValueError, r"params\[2\] must be C-contiguous"

    @case
    def non_contiguous_grad(rows, grads, hp):
        grads[-1] = np.zeros(18, np.float32)[::2]
        return ValueError, r"grads\[2\] must be C-contiguous"

    @case
    def read_only_param(rows, grads, hp):
        rows[-1][0].flags.writeable = False
        return ValueError, r"params\[2\] is read-only"

    @case
    def read_only_state(rows, grads, hp):
        rows[-1][1].flags.writeable = False
        return ValueError, rf"{kernel.states[0]}\[2\] is read-only"

    @case
    def param_is_state(rows, grads, hp):
        rows[-1][1] = rows[-1][0]
        return ValueError, r"share memory"

    @case
    def grad_is_param(rows, grads, hp):
        grads[-1] = rows[-1][0]
        return ValueError, r"share memory"

    @case
    def overlapping_views(rows, grads, hp):
        base = np.zeros(20, np.float32)
        rows[-1][0], rows[-1][1] = base[:9], base[5:14]
        return ValueError, r"share memory"

    @case
    def same_param_twice(rows, grads, hp):
        rows[0][0] = rows[-1][0]
        return ValueError, r"share memory"

    @case
    def list_lengths_differ(rows, grads, hp):
        grads.pop()
        return ValueError, r"grads has 2 arrays but params has 3"

    @case
    def not_an_array(rows, grads, hp):
        grads[-1] = [0.0] * 9
        return TypeError, r"grads\[2\] must be a numpy.ndarray, got list"

    @case
    def negative_lr(rows, grads, hp):
        hp["lr"] = -0.1
        return ValueError, r"lr must be"

    @case
    def nan_lr(rows, grads, hp):
        hp["lr"] = float("nan")
        return ValueError, r"lr must be"

    @case
    def negative_weight_decay(rows, grads, hp):
        hp["weight_decay"] = -1.0
        return ValueError, r"weight_decay must be"

    if name in ("adam", "adamw", "lamb"):
        @case
        def beta1_is_one(rows, grads, hp):
            hp["betas"] = (1.0, 0.999)
            return ValueError, r"beta1 must be in \[0.0, 1.0\)"

        @case
        def beta2_negative(rows, grads, hp):
            hp["betas"] = (0.9, -0.1)
            return ValueError, r"beta2 must be in \[0.0, 1.0\)"

    if name in ("adam", "adamw"):
        @case
        def missing_amsgrad_state(rows, grads, hp):
            for r in rows:
                r[3] = None
            return ValueError, r"max_exp_avg_sqs is required when amsgrad=True"

    if name in ("adam", "adamw", "adagrad", "rmsprop", "lamb"):
        @case
        def eps_zero(rows, grads, hp):
            hp["eps"] = 0.0
            return ValueError, r"eps must be a finite number > 0.0"

        @case
        def eps_negative(rows, grads, hp):
            hp["eps"] = -1e-8
            return ValueError, r"eps must be"

        @case
        def eps_underflows_in_float32(rows, grads, hp):
            hp["eps"] = 1e-300
            return ValueError, r"eps must not round to 0 in float32"

    if kernel.has_step:
        @case
        def step_zero(rows, grads, hp):
            hp["_step"] = 0
            return ValueError, r"step must be in \[1, 2\*\*63\)"

        @case
        def step_too_large(rows, grads, hp):
            hp["_step"] = 2**63
            return ValueError, r"step must be in \[1, 2\*\*63\).*got 9223372036854775808"

        @case
        def step_is_bool(rows, grads, hp):
            hp["_step"] = True
            return TypeError, r"step must be an int, got bool"

        @case
        def step_is_float(rows, grads, hp):
            hp["_step"] = 2.0
            return TypeError, r"step must be an int, got float"

    @case
    def lr_is_bool(rows, grads, hp):
        hp["lr"] = True
        return TypeError, r"lr must be a number, got bool"

    @case
    def lr_is_string(rows, grads, hp):
        hp["lr"] = "0.1"
        return TypeError, r"lr must be a number, got str"

    @case
    def lr_huge_int(rows, grads, hp):
        hp["lr"] = 10**400
        return ValueError, r"lr must be a finite number"

    @case
    def masked_grad(rows, grads, hp):
        grads[-1] = np.ma.masked_array(grads[-1], mask=np.arange(grads[-1].size) % 2 == 0)
        return TypeError, r"grads\[2\] is a numpy.ma.MaskedArray"

    @case
    def masked_param(rows, grads, hp):
        rows[-1][0] = np.ma.masked_array(rows[-1][0])
        return TypeError, r"params\[2\] is a numpy.ma.MaskedArray"

    if name == "sgd":
        @case
        def nesterov_without_momentum(rows, grads, hp):
            hp.update(momentum=0.0, nesterov=True)
            return ValueError, r"nesterov=True requires momentum > 0"

        @case
        def unknown_form(rows, grads, hp):
            hp["momentum_form"] = "heavy"
            return ValueError, r"momentum_form must be"

        @case
        def missing_buffer(rows, grads, hp):
            for r in rows:
                r[1] = None
            return ValueError, r"momentum_buffers is required when momentum != 0"

    if name in ("lamb", "lars"):
        @case
        def adapt_wrong_length(rows, grads, hp):
            hp["adapt"] = [True]
            return ValueError, r"adapt has 1 entries but params has 3"

    if name == "lars":
        @case
        def trust_coefficient_zero(rows, grads, hp):
            hp["trust_coefficient"] = 0.0
            return ValueError, r"trust_coefficient must be a finite number > 0"

    if name == "rprop":
        @case
        def etaminus_above_one(rows, grads, hp):
            hp["etas"] = (1.5, 1.2)
            return ValueError, r"etas must satisfy 0 < etaminus < 1 < etaplus"

        @case
        def etas_not_a_pair(rows, grads, hp):
            hp["etas"] = 0.5
            return TypeError, r"etas must be a pair \(etaminus, etaplus\)"

        @case
        def max_step_below_min(rows, grads, hp):
            hp["step_sizes"] = (1.0, 0.1)
            return ValueError, r"max_step must be a finite number >= 1.0"

        @case
        def step_size_is_bool(rows, grads, hp):
            hp["step_sizes"] = (True, 1.0)
            return TypeError, r"min_step must be a number, got bool"

    if name == "adadelta":
        @case
        def rho_above_one(rows, grads, hp):
            hp["rho"] = 1.5
            return ValueError, r"rho must be in \[0.0, 1.0\]"

    if kernel.scalar_states:
        k_sc = 1 + kernel.states.index(kernel.scalar_states[0])
        sc = kernel.scalar_states[0]

        @case
        def scalar_state_not_one_element(rows, grads, hp):
            rows[-1][k_sc] = np.ones(2, np.float32)
            return ValueError, rf"{sc}\[2\] must hold one element \(a per-tensor scalar state\), got shape \(2,\)"

        @case
        def scalar_state_is_a_numpy_scalar(rows, grads, hp):
            rows[-1][k_sc] = np.float32(1.0)
            return TypeError, rf"{sc}\[2\] must be a numpy.ndarray, got float32"

        @case
        def scalar_state_int_dtype(rows, grads, hp):
            rows[-1][k_sc] = np.ones((), np.int32)
            return TypeError, rf"{sc}\[2\] must have dtype float32 or float64"

        @case
        def scalar_state_read_only(rows, grads, hp):
            rows[-1][k_sc].flags.writeable = False
            return ValueError, rf"{sc}\[2\] is read-only"

        @case
        def scalar_state_shared_by_two_tensors(rows, grads, hp):
            rows[0][k_sc] = rows[-1][k_sc]
            return ValueError, r"share memory"

        @case
        def scalar_state_inside_a_param(rows, grads, hp):
            rows[-1][k_sc] = rows[-1][0][4:5]
            return ValueError, r"share memory"

        @case
        def scalar_state_missing(rows, grads, hp):
            for r in rows:
                r[k_sc] = None
            return ValueError, rf"{sc} is required, got None"

    if name == "nadam":
        @case
        def negative_momentum_decay(rows, grads, hp):
            hp["momentum_decay"] = -1e-3
            return ValueError, r"momentum_decay must be a finite number >= 0.0"

    if name == "asgd":
        @case
        def negative_lambd(rows, grads, hp):
            hp["lambd"] = -1.0
            return ValueError, r"lambd must be a finite number >= 0.0"

        @case
        def infinite_t0(rows, grads, hp):
            hp["t0"] = float("inf")
            return ValueError, r"t0 must be a finite number >= 0.0"

    if name == "schedule_free_adamw":
        @case
        def ckp1_above_one(rows, grads, hp):
            hp["ckp1"] = 1.5
            return ValueError, r"ckp1 must be in \[0.0, 1.0\]"

        @case
        def ckp1_negative(rows, grads, hp):
            hp["ckp1"] = -0.25
            return ValueError, r"ckp1 must be in \[0.0, 1.0\]"

        @case
        def ckp1_nan(rows, grads, hp):
            hp["ckp1"] = float("nan")
            return ValueError, r"ckp1 must be in \[0.0, 1.0\]"

        @case
        def missing_zs(rows, grads, hp):
            for r in rows:
                r[1] = None
            return ValueError, r"zs is required, got None"

    if name == "rmsprop":
        @case
        def alpha_above_one(rows, grads, hp):
            hp["alpha"] = 1.5
            return ValueError, r"alpha must be in \[0.0, 1.0\]"

        @case
        def missing_grad_avgs(rows, grads, hp):
            for r in rows:
                r[2] = None
            return ValueError, r"grad_avgs is required when centered=True"

    # Cases about a hyperparameter apply to the kernels that take it (Rprop has no lr).
    import inspect

    takes = inspect.signature(kernel.twin).parameters
    for hyper in ("weight_decay", "lr"):
        if hyper not in takes:
            cases = {k: f for k, f in cases.items() if hyper not in k}
    return cases


ALL_CASES = [(n, c) for n in NAMES for c in _cases(n)]


@pytest.mark.parametrize("name,case", ALL_CASES)
def test_refused_and_nothing_modified(name, case):
    kernel, hp, rows, grads = _setup(name)
    snap = _snapshot(rows, grads)
    exc, needle = _cases(name)[case](rows, grads, hp)
    step = hp.pop("_step", 1)
    # Snapshot again: the case may have swapped arrays in; all of them must stay intact.
    snap = _snapshot(rows, grads)
    cols = _columns(rows)
    _expect(kernel, exc, needle, cols[0], grads, cols[1:], hp, step)
    assert _unchanged(rows, grads, snap)


@pytest.mark.parametrize("name", NAMES)
def test_single_form_errors_name_the_argument(name):
    kernel, hp, rows, grads = _setup(name, n_tensors=1)
    row = rows[0]
    snap = _snapshot(rows, grads)
    _expect(kernel, TypeError, r"^grads has dtype float64", row[0], grads[0].astype(np.float64), row[1:], hp)
    _expect(kernel, TypeError, r"grads must be a numpy.ndarray \(params is one\), got list", row[0], [grads[0]], row[1:], hp)
    _expect(kernel, TypeError, r"params must be a numpy.ndarray or a list/tuple of them, got float", 1.0, grads[0], row[1:], hp)
    ro = row[0].copy()
    ro.flags.writeable = False
    _expect(kernel, ValueError, r"^params is read-only", ro, grads[0], row[1:], hp)
    assert _unchanged(rows, grads, snap)


@pytest.mark.parametrize("name", NAMES)
def test_list_form_refuses_ndarray_for_list_argument(name):
    kernel, hp, rows, grads = _setup(name)
    cols = _columns(rows)
    snap = _snapshot(rows, grads)
    _expect(kernel, TypeError, r"grads must be a list or tuple \(params is one\), got ndarray",
            cols[0], np.stack(grads), cols[1:], hp)
    assert _unchanged(rows, grads, snap)


@pytest.mark.parametrize("name", NAMES)
def test_empty_list_and_empty_arrays_are_noops(name):
    """An empty list and size-0 arrays are valid calls that touch nothing; both the
    kernel and its twin return the same (None, or no trust ratios for LAMB/LARS)."""
    kernel = KERNELS[name]
    hp = dict(kernel.defaults)
    results = []
    for fn in (kernel.fast, kernel.twin):
        empty_states = [[] if used else None for used in kernel.needs(hp).values()]
        listed = kernel.call(fn, [], [], empty_states, hp, 1)
        p = np.zeros(0, np.float32)
        states = kernel.make_state(p, hp)
        single = kernel.call(fn, p, p.copy(), states, hp, 1)
        assert p.shape == (0,) and all(s is None or s.shape == (() if n in kernel.scalar_states else (0,))
                                       for n, s in zip(kernel.states, states))
        results.append((type(listed), None if listed is None else np.asarray(listed).tolist(),
                         type(single), single))
    assert results[0] == results[1]  # the same types and values from kernel and twin
    if name in ("lamb", "lars"):  # trust ratios: none for no tensor, 1 for an empty one
        assert results[0][1] == [] and results[0][3] == 1.0
    else:
        assert results[0] == (type(None), None, type(None), None)


def test_read_only_grads_are_accepted():
    from deepoptim import functional as F

    p, g = np.ones(5), np.full(5, 2.0)
    g.flags.writeable = False
    F.sgd(p, g, lr=0.5)
    np.testing.assert_array_equal(p, np.zeros(5))


def test_one_grad_shared_by_two_params_is_allowed():
    from deepoptim import functional as F

    p1, p2, g = np.ones(4), np.ones(4), np.ones(4)
    F.sgd([p1, p2], [g, g], lr=1.0)
    np.testing.assert_array_equal(p1, np.zeros(4))
    np.testing.assert_array_equal(p2, np.zeros(4))


def test_float64_takes_an_eps_that_float32_cannot():
    """eps=1e-300 is representable in float64: refused only where it rounds to 0."""
    for name in ("adam", "adagrad", "rmsprop", "lamb"):
        kernel, hp, rows, grads = _setup(name, dtype=np.float64)
        hp["eps"] = 1e-300
        cols = _columns(rows)
        kernel.call(kernel.fast, cols[0], grads, cols[1:], hp, 1)
        assert all(np.isfinite(p).all() for p in cols[0])
