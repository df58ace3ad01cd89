"""deepoptim.schedules: closed forms against torch.optim.lr_scheduler, purity, properties,
argument checks, and the two metric-driven schedules.

The torch comparisons need the optional `torch` extra and skip without it; everything
else runs on the standard library and NumPy alone."""

from __future__ import annotations

import math
import random
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from deepoptim import schedules as S

LR = 0.1
RTOL = 1e-12  # torch's schedulers are recursive products; ours are closed forms


def torch_lrs(make, n, lr=LR):
    """torch's lr for updates 1..n: get_last_lr()[0] before each scheduler.step()."""
    torch = pytest.importorskip("torch")
    out = []
    with warnings.catch_warnings():
        # Stepping a scheduler with an optimizer that has no gradients is what we mean.
        warnings.simplefilter("ignore", UserWarning)
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
        sched = make(torch.optim.lr_scheduler, opt)
        out.append(sched.get_last_lr()[0])
        for _ in range(n - 1):
            opt.step()
            sched.step()
            out.append(sched.get_last_lr()[0])
    return np.array(out, dtype=np.float64)


def ours(schedule, n):
    return np.array([schedule(k) for k in range(n)], dtype=np.float64)


def assert_matches_torch(schedule, make, n, lr=LR):
    expected = torch_lrs(make, n, lr)
    np.testing.assert_allclose(ours(schedule, n), expected, rtol=RTOL, atol=0)


# ---------------------------------------------------------------------------------------
# Against torch, k = 0..N-1.


@pytest.mark.parametrize("step_size,gamma,n", [(1, 0.5, 80), (7, 0.1, 100), (3, 1.0, 50), (10, 1.5, 120), (30, 0.1, 100)])
def test_step_decay_equals_steplr(step_size, gamma, n):
    assert_matches_torch(
        S.step_decay(LR, step_size, gamma), lambda L, o: L.StepLR(o, step_size, gamma), n
    )


@pytest.mark.parametrize(
    "milestones,gamma",
    [([30, 80], 0.1), ([3, 3, 7], 0.5), ([0, 5], 0.5), ([], 0.1), ([50, 10, 90], 0.3), ([1, 2, 3, 4], 1.0)],
)
def test_multi_step_equals_multisteplr(milestones, gamma):
    assert_matches_torch(
        S.multi_step(LR, milestones, gamma), lambda L, o: L.MultiStepLR(o, milestones, gamma), 120
    )


@pytest.mark.parametrize("gamma,n", [(0.95, 300), (1.0, 50), (0.5, 100), (1.01, 200)])
def test_exponential_equals_exponentiallr(gamma, n):
    assert_matches_torch(S.exponential(LR, gamma), lambda L, o: L.ExponentialLR(o, gamma), n)


@pytest.mark.parametrize("total,power,n", [(100, 1.0, 150), (37, 0.5, 100), (50, 2.0, 80), (1, 1.0, 10), (10, 0.0, 20), (64, 3.0, 64)])
def test_polynomial_equals_polynomiallr(total, power, n):
    assert_matches_torch(
        S.polynomial(LR, total, power), lambda L, o: L.PolynomialLR(o, total_iters=total, power=power), n
    )


@pytest.mark.parametrize(
    "kwargs,n",
    [({}, 20), (dict(start_factor=0.05, total_steps=40), 100), (dict(start_factor=1.0, end_factor=0.1, total_steps=17), 60),
     (dict(start_factor=0.5, end_factor=0.5, total_steps=3), 10), (dict(start_factor=1.0, end_factor=0.0, total_steps=10), 30),
     (dict(start_factor=0.25, end_factor=0.75, total_steps=1), 5)],
)
def test_linear_equals_linearlr(kwargs, n):
    torch_kwargs = {("total_iters" if k == "total_steps" else k): v for k, v in kwargs.items()}
    assert_matches_torch(S.linear(LR, **kwargs), lambda L, o: L.LinearLR(o, **torch_kwargs), n)


def test_linear_defaults_are_torchs():
    s = S.linear(LR)
    assert (s.start_factor, s.end_factor, s.total_steps) == (1.0 / 3, 1.0, 5)


@pytest.mark.parametrize("total,min_lr", [(100, 0.0), (37, 0.01), (1, 0.0), (300, 1e-3), (2, 0.05)])
def test_cosine_equals_cosineannealinglr_up_to_total_steps(total, min_lr):
    # Beyond T torch's recursion turns back up; ours stays at min_lr (tested below).
    assert_matches_torch(
        S.cosine(LR, total, min_lr), lambda L, o: L.CosineAnnealingLR(o, T_max=total, eta_min=min_lr), total + 1
    )


@pytest.mark.parametrize("t0,mult,min_lr,n", [(10, 1, 0.0, 100), (3, 2, 0.0, 200), (1, 1, 0.0, 20), (5, 3, 0.01, 300), (7, 1, 0.05, 90), (1, 2, 0.0, 70)])
def test_cosine_restarts_equals_cosineannealingwarmrestarts(t0, mult, min_lr, n):
    assert_matches_torch(
        S.cosine_restarts(LR, t0, mult, min_lr),
        lambda L, o: L.CosineAnnealingWarmRestarts(o, T_0=t0, T_mult=mult, eta_min=min_lr),
        n,
    )


ONE_CYCLE_CASES = [
    dict(total_steps=100),
    dict(total_steps=100, anneal="linear"),
    dict(total_steps=100, three_phase=True),
    dict(total_steps=100, anneal="linear", three_phase=True),
    dict(total_steps=37, pct_start=0.25),  # peak between two steps
    dict(total_steps=37, pct_start=0.25, three_phase=True, anneal="linear"),
    dict(total_steps=50, pct_start=0.0),  # no rise: p*N - 1 = -1
    dict(total_steps=50, pct_start=1.0),  # no fall
    dict(total_steps=1),
    dict(total_steps=2),  # p*N = 0.6 < 1
    dict(total_steps=3, three_phase=True),
    dict(total_steps=60, pct_start=0.7, three_phase=True),  # the second phase ends past N - 1
    dict(total_steps=200, pct_start=0.45, div_factor=10.0, final_div_factor=100.0),
]


@pytest.mark.parametrize("kwargs", ONE_CYCLE_CASES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_one_cycle_equals_onecyclelr(kwargs):
    torch_kwargs = {("anneal_strategy" if k == "anneal" else k): v for k, v in kwargs.items()}
    assert_matches_torch(
        S.one_cycle(1.5, **kwargs),
        lambda L, o: L.OneCycleLR(o, max_lr=1.5, cycle_momentum=False, **torch_kwargs),
        kwargs["total_steps"],
    )


def test_warmup_equals_sequentiallr_of_linearlr_and_cosine():
    w, t, f = 8, 40, 0.1
    assert_matches_torch(
        S.warmup(S.cosine(LR, t, 0.001), w, f),
        lambda L, o: L.SequentialLR(
            o, [L.LinearLR(o, f, 1.0, w), L.CosineAnnealingLR(o, T_max=t, eta_min=0.001)], milestones=[w]
        ),
        w + t + 1,
    )


@pytest.mark.parametrize("w", [1, 5, 30])
def test_warmup_defaults_equal_torchs_linearlr_defaults(w):
    # Every argument at its default on both sides: start at 1/3 of the rate, not at 0.
    assert S.warmup(S.constant(LR), w).start_factor == 1 / 3
    assert_matches_torch(
        S.warmup(S.cosine(LR, 50), w),
        lambda L, o: L.SequentialLR(o, [L.LinearLR(o, total_iters=w), L.CosineAnnealingLR(o, T_max=50)],
                                    milestones=[w]),
        w + 50,  # to the cosine's end (torch's CosineAnnealingLR climbs again after T_max)
    )
    assert_matches_torch(S.warmup(S.constant(LR), 5), lambda L, o: L.LinearLR(o), 12)  # LinearLR() alone


def test_warmup_first_step_moves_the_parameters():
    s = S.warmup(S.cosine(LR, 100), 10)
    assert s(0) == pytest.approx(LR / 3, rel=1e-15) and s(0) > 0


@pytest.mark.parametrize("w", [2, 3, 10])
def test_warmup_k_plus_one_over_w_form(w):
    # The (k + 1) / W ramp of the docstring, reaching the full rate at step W - 1.
    inner = S.exponential(LR, 0.9)
    s = S.warmup(inner, w - 1, start_factor=1 / w)
    assert [s(k) for k in range(w)] == pytest.approx([LR * (k + 1) / w for k in range(w)], rel=1e-14)
    assert [s(w - 1 + k) for k in range(5)] == [inner(k) for k in range(5)]


def test_join_equals_sequentiallr_of_three_schedulers():
    assert_matches_torch(
        S.join([S.linear(LR, 0.2, 1.0, 5), S.step_decay(LR, 4, 0.5), S.exponential(LR, 0.9)], [5, 21]),
        lambda L, o: L.SequentialLR(
            o, [L.LinearLR(o, 0.2, 1.0, 5), L.StepLR(o, 4, 0.5), L.ExponentialLR(o, 0.9)], milestones=[5, 21]
        ),
        60,
    )


# ---------------------------------------------------------------------------------------
# By hand: values, ends and the departures from torch.


def test_values_by_hand():
    assert S.constant(0.3)(0) == S.constant(0.3)(10**9) == 0.3
    assert [S.step_decay(1.0, 2, 0.5)(k) for k in range(6)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    assert [S.multi_step(1.0, [4, 2, 2], 0.5)(k) for k in range(6)] == [1.0, 1.0, 0.25, 0.25, 0.125, 0.125]
    assert [S.exponential(1.0, 0.5)(k) for k in range(4)] == [1.0, 0.5, 0.25, 0.125]
    assert [S.polynomial(1.0, 4, 2.0, end_lr=0.2)(k) for k in range(6)] == pytest.approx(
        [1.0, 0.65, 0.4, 0.25, 0.2, 0.2], rel=1e-15
    )
    assert [S.linear(1.0, 0.0, 1.0, 4)(k) for k in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert [S.cosine(1.0, 2)(k) for k in range(4)] == pytest.approx([1.0, 0.5, 0.0, 0.0], abs=1e-16)
    assert [S.warmup(S.constant(0.8), 4, start_factor=0.0)(k) for k in range(6)] == pytest.approx(
        [0.0, 0.2, 0.4, 0.6, 0.8, 0.8], rel=1e-15
    )
    assert [S.warmup(S.constant(0.9), 3)(k) for k in range(5)] == pytest.approx([0.3, 0.5, 0.7, 0.9, 0.9], rel=1e-15)
    assert [S.cosine_restarts(1.0, 2, 2)(k) for k in (0, 1, 2, 4, 6, 14)] == pytest.approx(
        [1.0, 0.5, 1.0, 0.5, 1.0, 1.0], rel=1e-15
    )
    j = S.join([S.constant(3.0), S.exponential(1.0, 0.5), S.constant(7.0)], [2, 5])
    assert [j(k) for k in range(7)] == [3.0, 3.0, 1.0, 0.5, 0.25, 7.0, 7.0]


def test_cosine_stays_at_min_lr_after_total_steps():
    s = S.cosine(LR, 10, 0.01)
    assert [s(k) for k in (10, 11, 15, 20, 1000)] == [0.01] * 5


def test_one_cycle_stays_at_its_final_value_after_total_steps():
    for kwargs in ONE_CYCLE_CASES:
        s = S.one_cycle(1.5, **kwargs)
        n = kwargs["total_steps"]
        final = s(n - 1)
        assert [s(n), s(n + 1), s(10 * n)] == [final] * 3, kwargs
    s = S.one_cycle(1.5, 100)
    assert s(99) == pytest.approx(1.5 / 25 / 1e4, rel=1e-15)
    assert max(s(k) for k in range(100)) == s(29) == 1.5  # p*N - 1 = 29 is the peak


def test_warmup_of_zero_steps_is_the_schedule_itself():
    inner = S.cosine(LR, 20)
    w = S.warmup(inner, 0)
    assert [w(k) for k in range(25)] == [inner(k) for k in range(25)]


def test_warmup_shifts_the_inner_schedule():
    inner = S.exponential(1.0, 0.5)
    w = S.warmup(inner, 3, start_factor=0.25)
    assert [w(k) for k in range(6)] == [0.25, 0.5, 0.75, 1.0, 0.5, 0.25]


def test_join_accepts_any_callable():
    j = S.join([lambda k: 1.0 + k, S.constant(0.5)], [3])
    assert [j(k) for k in range(5)] == [1.0, 2.0, 3.0, 0.5, 0.5]


# ---------------------------------------------------------------------------------------
# Purity, types and reprs.

PURE = [
    S.constant(LR),
    S.step_decay(LR, 3, 0.5),
    S.multi_step(LR, [5, 2, 9], 0.3),
    S.exponential(LR, 0.97),
    S.polynomial(LR, 30, 0.5, 0.001),
    S.linear(LR),
    S.cosine(LR, 25, 0.001),
    S.warmup(S.cosine(LR, 25), 5, 0.1),
    S.cosine_restarts(LR, 4, 2, 0.001),
    S.one_cycle(LR, 40, three_phase=True),
    S.join([S.linear(LR, 0.1, 1.0, 5), S.cosine(LR, 20)], [5]),
]


@pytest.mark.parametrize("schedule", PURE, ids=lambda s: type(s).__name__)
def test_pure_schedules_do_not_depend_on_call_order(schedule):
    steps = list(range(80))
    forward = [schedule(k) for k in steps]
    shuffled = steps[:]
    random.Random(0).shuffle(shuffled)
    by_step = {k: schedule(k) for k in shuffled}
    assert [by_step[k] for k in steps] == forward
    assert [schedule(k) for k in reversed(steps)] == forward[::-1]
    assert [schedule(17) for _ in range(5)] == [forward[17]] * 5
    assert all(type(v) is float for v in forward)
    assert schedule(np.int64(17)) == forward[17]


@pytest.mark.parametrize("schedule", PURE, ids=lambda s: type(s).__name__)
def test_pure_schedules_check_the_step(schedule):
    with pytest.raises(ValueError, match="step"):
        schedule(-1)
    for bad in (1.0, 2.5, "3", None, True):
        with pytest.raises(TypeError, match="step"):
            schedule(bad)


@pytest.mark.parametrize("schedule", PURE, ids=lambda s: type(s).__name__)
def test_pure_schedules_are_frozen_values_whose_repr_rebuilds_them(schedule):
    with pytest.raises(AttributeError):
        schedule.lr = 1.0  # type: ignore[misc]
    rebuilt = eval(repr(schedule), {name: getattr(S, name) for name in S.__all__})
    assert rebuilt == schedule
    assert [rebuilt(k) for k in range(50)] == [schedule(k) for k in range(50)]


def test_repr_reads_as_the_call():
    assert repr(S.cosine(0.1, 100)) == "cosine(lr=0.1, total_steps=100, min_lr=0.0)"
    assert repr(S.multi_step(1, [80, 30])) == "multi_step(lr=1.0, milestones=(30, 80), gamma=0.1)"


# ---------------------------------------------------------------------------------------
# Properties.

lrs = st.floats(1e-6, 10.0)


@given(lr=lrs, total=st.integers(1, 500), frac=st.floats(0.0, 1.0), k=st.integers(0, 2000))
def test_cosine_stays_between_min_lr_and_lr_and_never_rises(lr, total, frac, k):
    min_lr = lr * frac
    s = S.cosine(lr, total, min_lr)
    assert min_lr <= s(k) <= lr
    assert s(k + 1) <= s(k)


@given(lr=lrs, size=st.integers(1, 50), gamma=st.floats(1e-3, 0.999), k=st.integers(0, 5000))
def test_step_decay_never_rises_when_gamma_below_one_and_moves_only_every_step_size(lr, size, gamma, k):
    s = S.step_decay(lr, size, gamma)
    assert s(k + 1) <= s(k)
    if (k + 1) % size != 0:
        assert s(k + 1) == s(k)
    elif s(k + 1) > 1e-290:  # subnormals may round two steps alike
        assert s(k + 1) < s(k)


@given(lr=lrs, size=st.integers(1, 20), count=st.integers(0, 10), gamma=st.floats(0.01, 2.0), k=st.integers(0, 300))
def test_multi_step_with_evenly_spaced_milestones_is_step_decay(lr, size, count, gamma, k):
    milestones = [size * (i + 1) for i in range(count)]
    k = min(k, size * (count + 1) - 1)  # past the last milestone step_decay keeps going
    assert S.multi_step(lr, milestones, gamma)(k) == pytest.approx(S.step_decay(lr, size, gamma)(k), rel=1e-12)


@given(lr=lrs, gamma=st.floats(0.5, 1.5), a=st.integers(0, 200), b=st.integers(0, 200))
def test_exponential_composes(lr, gamma, a, b):
    s = S.exponential(lr, gamma)
    assert s(a + b) == pytest.approx(s(a) * gamma**b, rel=1e-12)


@given(lr=lrs, end=lrs, total=st.integers(1, 300), power=st.floats(0.0, 4.0), k=st.integers(0, 600))
def test_polynomial_stays_between_its_ends_and_ends_at_end_lr(lr, end, total, power, k):
    s = S.polynomial(lr, total, power, end)
    lo, hi = min(lr, end), max(lr, end)
    slack = 1e-15 * hi  # (lr - end) + end rounds on the scale of the larger end
    assert lo - slack <= s(k) <= hi + slack
    assert s(0) == pytest.approx(lr, rel=1e-15, abs=slack)
    if power > 0:
        assert s(total + k) == pytest.approx(end, rel=1e-15)


@given(lr=lrs, start=st.floats(0.0, 2.0), end=st.floats(0.0, 2.0), total=st.integers(1, 300), k=st.integers(0, 600))
def test_linear_reaches_end_factor_and_stays(lr, start, end, total, k):
    s = S.linear(lr, start, end, total)
    assert s(0) == pytest.approx(lr * start, rel=1e-15, abs=1e-300)
    # s + (e - s) rounds on the scale of the larger factor.
    assert s(total + k) == pytest.approx(lr * end, rel=1e-12, abs=1e-15 * lr * max(start, end))


@given(lr=lrs, total=st.integers(1, 100), w=st.integers(1, 100), f=st.floats(0.0, 1.0), k=st.integers(0, 300))
def test_warmup_rises_to_schedule_zero_at_warmup_steps(lr, total, w, f, k):
    inner = S.cosine(lr, total)
    s = S.warmup(inner, w, f)
    assert s(w) == inner(0)
    assert s(0) == pytest.approx(f * inner(0), rel=1e-15, abs=1e-300)
    if k < w:
        assert s(k) <= s(k + 1) <= inner(0)
    else:
        assert s(k) == inner(k - w)


@given(lr=lrs, mid_frac=st.floats(0.01, 1.0), t1=st.integers(1, 100), t2=st.integers(1, 100),
       power=st.floats(0.1, 3.0), k=st.integers(0, 400))
def test_join_is_continuous_when_the_pieces_meet(lr, mid_frac, t1, t2, power, k):
    mid = lr * mid_frac
    pieces = [S.polynomial(lr, t1, power, end_lr=mid), S.cosine(mid, t2, 0.0)]
    j = S.join(pieces, [t1])
    assert j(t1) == pieces[0](t1) == mid  # the joint: no jump
    assert j(k) == (pieces[0](k) if k < t1 else pieces[1](k - t1))


def _restarts_by_recursion(t0, mult, n):
    """(T_cur, T_i) for steps 0..n-1, stepped one at a time like a stateful scheduler."""
    out, t_cur, t_i = [], 0, t0
    for _ in range(n):
        out.append((t_cur, t_i))
        t_cur += 1
        if t_cur >= t_i:
            t_cur, t_i = t_cur - t_i, t_i * mult
    return out


@given(t0=st.integers(1, 30), mult=st.integers(1, 4), min_frac=st.floats(0.0, 1.0))
def test_cosine_restarts_closed_form_equals_stepping(t0, mult, min_frac):
    n = 400
    s = S.cosine_restarts(2.0, t0, mult, 2.0 * min_frac)
    for k, (t_cur, t_i) in enumerate(_restarts_by_recursion(t0, mult, n)):
        expected = 2.0 * min_frac + (2.0 - 2.0 * min_frac) * (1 + math.cos(math.pi * t_cur / t_i)) / 2
        assert s(k) == expected
        if t_cur == 0:
            assert s(k) == pytest.approx(2.0, rel=1e-15)


@given(max_lr=lrs, total=st.integers(2, 400), pct=st.floats(0.0, 1.0), three=st.booleans(),
       anneal=st.sampled_from(["cos", "linear"]), div=st.floats(1.0, 100.0), fdiv=st.floats(1.0, 1e4))
def test_one_cycle_stays_within_its_rates(max_lr, total, pct, three, anneal, div, fdiv):
    if float(pct * total) - 1 == 0.0:
        with pytest.raises(ValueError, match="pct_start"):
            S.one_cycle(max_lr, total, pct, anneal, div, fdiv, three)
        return
    s = S.one_cycle(max_lr, total, pct, anneal, div, fdiv, three)
    lr_min = max_lr / div / fdiv
    values = [s(k) for k in range(total)]
    slack = 1e-15 * max_lr  # the linear ramp (b - a) * x + a rounds on the scale of max_lr
    assert min(values) >= lr_min - slack
    assert max(values) <= max_lr + slack
    if not three and pct < 1.0:
        assert values[-1] == pytest.approx(lr_min, rel=1e-12, abs=slack)


# ---------------------------------------------------------------------------------------
# Argument checks.

BAD_ARGS = [
    (lambda: S.constant(-0.1), ValueError, "lr"),
    (lambda: S.constant(float("nan")), ValueError, "lr"),
    (lambda: S.constant("0.1"), TypeError, "lr"),
    (lambda: S.step_decay(0.1, 0), ValueError, "step_size"),
    (lambda: S.step_decay(0.1, 2.0), TypeError, "step_size"),
    (lambda: S.step_decay(0.1, 2, 0.0), ValueError, "gamma"),
    (lambda: S.step_decay(0.1, 2, -0.5), ValueError, "gamma"),
    (lambda: S.multi_step(0.1, [3, -1]), ValueError, r"milestones\[1\]"),
    (lambda: S.multi_step(0.1, 5), TypeError, "milestones"),
    (lambda: S.multi_step(0.1, [2.5]), TypeError, r"milestones\[0\]"),
    (lambda: S.multi_step(0.1, [2], gamma=0), ValueError, "gamma"),
    (lambda: S.exponential(0.1, 0.0), ValueError, "gamma"),
    (lambda: S.exponential(-1.0, 0.5), ValueError, "lr"),
    (lambda: S.polynomial(0.1, 0), ValueError, "total_steps"),
    (lambda: S.polynomial(0.1, 10, power=-1.0), ValueError, "power"),
    (lambda: S.polynomial(0.1, 10, end_lr=-1e-3), ValueError, "end_lr"),
    (lambda: S.linear(0.1, -0.1), ValueError, "start_factor"),
    (lambda: S.linear(0.1, end_factor=-1.0), ValueError, "end_factor"),
    (lambda: S.linear(0.1, total_steps=0), ValueError, "total_steps"),
    (lambda: S.cosine(0.1, 0), ValueError, "total_steps"),
    (lambda: S.cosine(0.1, -5), ValueError, "total_steps"),
    (lambda: S.cosine(0.1, 10, min_lr=-0.1), ValueError, "min_lr"),
    (lambda: S.warmup(0.1, 5), TypeError, "schedule"),
    (lambda: S.warmup(S.constant(0.1), -1), ValueError, "warmup_steps"),
    (lambda: S.warmup(S.constant(0.1), 5, start_factor=1.5), ValueError, "start_factor"),
    (lambda: S.cosine_restarts(0.1, 0), ValueError, "first_period"),
    (lambda: S.cosine_restarts(0.1, 5, 0), ValueError, "period_mult"),
    (lambda: S.cosine_restarts(0.1, 5, 1.5), TypeError, "period_mult"),
    (lambda: S.cosine_restarts(0.1, 5, min_lr=-1.0), ValueError, "min_lr"),
    (lambda: S.one_cycle(-1.0, 10), ValueError, "max_lr"),
    (lambda: S.one_cycle(1.0, 0), ValueError, "total_steps"),
    (lambda: S.one_cycle(1.0, 10, pct_start=1.5), ValueError, "pct_start"),
    (lambda: S.one_cycle(1.0, 10, pct_start=0.1), ValueError, "pct_start"),  # p*N == 1
    (lambda: S.one_cycle(1.0, 10, anneal="exp"), ValueError, "anneal"),
    (lambda: S.one_cycle(1.0, 10, div_factor=0.0), ValueError, "div_factor"),
    (lambda: S.one_cycle(1.0, 10, final_div_factor=-1.0), ValueError, "final_div_factor"),
    (lambda: S.one_cycle(1.0, 10, three_phase="yes"), TypeError, "three_phase"),
    (lambda: S.join([], []), ValueError, "schedules"),
    (lambda: S.join([S.constant(1.0), 2.0], [3]), TypeError, r"schedules\[1\]"),
    (lambda: S.join([S.constant(1.0)] * 2, []), ValueError, "boundaries"),
    (lambda: S.join([S.constant(1.0)] * 3, [5, 5]), ValueError, "boundaries"),
    (lambda: S.join([S.constant(1.0)] * 2, [0]), ValueError, r"boundaries\[0\]"),
    (lambda: S.ReduceOnPlateau(-0.1), ValueError, "lr"),
    (lambda: S.ReduceOnPlateau(0.1, mode="lowest"), ValueError, "mode"),
    (lambda: S.ReduceOnPlateau(0.1, factor=1.0), ValueError, "factor"),
    (lambda: S.ReduceOnPlateau(0.1, factor=0.0), ValueError, "factor"),
    (lambda: S.ReduceOnPlateau(0.1, patience=-1), ValueError, "patience"),
    (lambda: S.ReduceOnPlateau(0.1, threshold=-1e-4), ValueError, "threshold"),
    (lambda: S.ReduceOnPlateau(0.1, threshold_mode="pct"), ValueError, "threshold_mode"),
    (lambda: S.ReduceOnPlateau(0.1, cooldown=-2), ValueError, "cooldown"),
    (lambda: S.ReduceOnPlateau(0.1, min_lr=-1.0), ValueError, "min_lr"),
    (lambda: S.ReduceOnPlateau(0.1, eps=-1.0), ValueError, "eps"),
    (lambda: S.RestartOnThreshold(0.1, 0.5), TypeError, "schedule"),
    (lambda: S.RestartOnThreshold(S.constant(0.1), float("inf")), ValueError, "threshold"),
    (lambda: S.RestartOnThreshold(S.constant(0.1), 0.5, mode="under"), ValueError, "mode"),
    (lambda: S.RestartOnThreshold(S.constant(0.1), 0.5, threshold_decay=0.0), ValueError, "threshold_decay"),
    (lambda: S.RestartOnThreshold(S.constant(0.1), 0.5, min_steps_between=0), ValueError, "min_steps_between"),
]


@pytest.mark.parametrize("make,exc,name", BAD_ARGS, ids=[f"{i}-{c[2]}" for i, c in enumerate(BAD_ARGS)])
def test_bad_arguments_are_refused_by_name(make, exc, name):
    with pytest.raises(exc, match=name):
        make()


# ---------------------------------------------------------------------------------------
# ReduceOnPlateau: the same decisions as torch.optim.lr_scheduler.ReduceLROnPlateau.

PLATEAU_CONFIGS = [
    dict(mode="min", patience=0),
    dict(mode="min", patience=3, threshold_mode="abs", threshold=0.01, cooldown=2),
    dict(mode="max", patience=2, cooldown=1),
    dict(mode="max", patience=0, threshold_mode="abs", threshold=0.05),
    dict(mode="min", patience=5, factor=0.5, min_lr=1e-3),
    dict(mode="min", patience=1, factor=0.9, eps=1e-3),  # eps swallows small reductions
    dict(mode="min", patience=2, threshold=0.0, cooldown=4, factor=0.3),
    dict(),
]


def _metric_sequence(seed, n=200):
    """A noisy, decaying loss with plateaus, exact repeats, a NaN and a negative stretch."""
    rng = np.random.default_rng(seed)
    m = 1.0 / (1.0 + 0.05 * np.arange(n)) + 0.02 * rng.standard_normal(n)
    m[40:70] = m[39]  # exact repeats: improvement must beat the threshold
    m[100:120] = m[99] + rng.uniform(0, 0.01, 20)
    m[130] = float("nan")
    m[150:] -= 1.0  # negative values: the relative threshold flips direction
    return [float(x) for x in m]


def _torch_plateau(metrics, lr, **kwargs):
    torch = pytest.importorskip("torch")
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **kwargs)
    out = []
    for m in metrics:
        sched.step(m)
        out.append(opt.param_groups[0]["lr"])
    return out


@pytest.mark.parametrize("kwargs", PLATEAU_CONFIGS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "defaults")
@pytest.mark.parametrize("seed", [0, 1])
def test_reduce_on_plateau_equals_torch(kwargs, seed):
    metrics = _metric_sequence(seed)
    if kwargs.get("mode") == "max":
        metrics = [-m for m in metrics]
    expected = _torch_plateau(metrics, LR, **kwargs)
    r = S.ReduceOnPlateau(LR, **kwargs)
    got = [r.step(m) for m in metrics]
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=0)
    assert len(set(expected)) > 1, "the sequence must make torch reduce at least once"


@given(metrics=st.lists(st.sampled_from([0.5, 0.6, 0.7, 0.70001, 1.0, -0.2, float("nan")]), min_size=1, max_size=40),
       mode=st.sampled_from(["min", "max"]), threshold_mode=st.sampled_from(["rel", "abs"]),
       patience=st.integers(0, 3), cooldown=st.integers(0, 3))
def test_reduce_on_plateau_equals_torch_on_any_sequence(metrics, mode, threshold_mode, patience, cooldown):
    kwargs = dict(mode=mode, threshold_mode=threshold_mode, patience=patience, cooldown=cooldown, factor=0.5)
    expected = _torch_plateau(metrics, LR, **kwargs)
    r = S.ReduceOnPlateau(LR, **kwargs)
    assert [r.step(m) for m in metrics] == pytest.approx(expected, rel=RTOL)


def test_reduce_on_plateau_by_hand():
    r = S.ReduceOnPlateau(1.0, patience=1, factor=0.5, cooldown=1, threshold=0.0)
    lrs_seen = [r.step(m) for m in [3.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 1.0]]
    # bad steps: -, -, 1, 2 -> reduce; cooldown step; 1, 2 -> reduce; improvement
    assert lrs_seen == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25]
    assert r.lr == r(0) == r(12345) == 0.25
    assert (r.best, r.steps) == (1.0, 8)


def test_reduce_on_plateau_state_dict_round_trip():
    metrics = _metric_sequence(3)
    a = S.ReduceOnPlateau(LR, patience=2, cooldown=3, factor=0.5)
    for m in metrics[:60]:
        a.step(m)
    state = a.state_dict()
    assert all(type(v) in (int, float) for v in state.values()), state
    b = S.ReduceOnPlateau(LR, patience=2, cooldown=3, factor=0.5)
    b.load_state_dict(dict(state))
    assert b.state_dict() == state
    assert [a.step(m) for m in metrics[60:]] == [b.step(m) for m in metrics[60:]]
    with pytest.raises(KeyError, match="best"):
        b.load_state_dict({k: v for k, v in state.items() if k != "best"})
    with pytest.raises(ValueError, match="lr"):
        b.load_state_dict({**state, "lr": -1.0})
    assert b.state_dict() == a.state_dict()  # refused loads changed nothing


# ---------------------------------------------------------------------------------------
# RestartOnThreshold.


def test_restart_on_threshold_by_hand_with_a_decaying_loss():
    inner = S.exponential(1.0, 0.5)
    r = S.RestartOnThreshold(inner, threshold=0.5, threshold_decay=0.5)
    assert r.lr == 1.0 and r.restarts == 0
    losses = [0.9, 0.7, 0.55, 0.45, 0.4, 0.3, 0.24, 0.2, 0.15, 0.12, 0.1]
    seen = [r.step(x) for x in losses]
    # 0.45 <= 0.5: restart, threshold 0.25; 0.24 <= 0.25: restart, threshold 0.125;
    # 0.12 <= 0.125: restart, threshold 0.0625.
    assert seen == [0.5, 0.25, 0.125, 1.0, 0.5, 0.25, 1.0, 0.5, 0.25, 1.0, 0.5]
    assert (r.restarts, r.threshold, r.steps_since_restart, r.steps) == (3, 0.0625, 1, 11)
    assert r(0) == r(999) == r.lr == 0.5


def test_restart_on_threshold_is_level_triggered_and_min_steps_between_spaces_restarts():
    inner = S.linear(1.0, 1.0, 0.0, 10)  # 1.0, 0.9, 0.8, ...
    every = S.RestartOnThreshold(inner, threshold=0.5)
    assert [every.step(0.1) for _ in range(4)] == [1.0] * 4 and every.restarts == 4
    spaced = S.RestartOnThreshold(inner, threshold=0.5, min_steps_between=3)
    assert [spaced.step(0.1) for _ in range(7)] == pytest.approx([0.9, 0.8, 1.0, 0.9, 0.8, 1.0, 0.9], rel=1e-15)
    assert spaced.restarts == 2


def test_restart_on_threshold_above_mode_and_nan():
    r = S.RestartOnThreshold(S.step_decay(1.0, 1, 0.5), threshold=0.8, mode="above", threshold_decay=1.1)
    seen = [r.step(a) for a in [0.5, 0.7, float("nan"), 0.8, 0.85, 0.9]]
    # 0.8 >= 0.8 restarts (threshold -> 0.88); NaN never crosses; 0.9 >= 0.88 restarts.
    assert seen == [0.5, 0.25, 0.125, 1.0, 0.5, 1.0]
    assert r.restarts == 2 and r.threshold == pytest.approx(0.8 * 1.1 * 1.1, rel=1e-15)


def test_restart_on_threshold_state_dict_round_trip():
    losses = [1.0 / (1 + 0.1 * k) for k in range(80)]
    make = lambda: S.RestartOnThreshold(S.cosine(LR, 10), 0.5, threshold_decay=0.8, min_steps_between=2)  # noqa: E731
    a = make()
    for x in losses[:40]:
        a.step(x)
    assert a.restarts > 0
    state = a.state_dict()
    assert all(type(v) in (int, float) for v in state.values()), state
    b = make()
    b.load_state_dict(dict(state))
    assert b.lr == a.lr
    assert [a.step(x) for x in losses[40:]] == [b.step(x) for x in losses[40:]]
    with pytest.raises(KeyError, match="extra"):
        b.load_state_dict({**state, "extra": 1})
    with pytest.raises(ValueError, match="restarts"):
        b.load_state_dict({**state, "restarts": -1})
    assert b.state_dict() == a.state_dict()


@pytest.mark.parametrize("obj", [S.ReduceOnPlateau(LR), S.RestartOnThreshold(S.constant(LR), 0.5)], ids=lambda o: type(o).__name__)
def test_stateful_schedules_check_the_step_too(obj):
    assert obj(0) == LR
    with pytest.raises(ValueError, match="step"):
        obj(-3)
    with pytest.raises(TypeError, match="step"):
        obj(0.5)
