r"""Learning-rate schedules: pure functions of the step, plus two metric-driven objects.

Convention: a schedule is a callable ``schedule(step) -> float``. ``step`` counts scheduler
steps from 0, and ``schedule(k)`` is the learning rate of the (k+1)-th optimizer update.
That is exactly what torch reports with ``scheduler.get_last_lr()[0]`` after ``k`` calls
of ``scheduler.step()`` (the optimizer created with ``lr`` equal to the base rate)::

    opt.lr = schedule(0)
    for k in range(n):
        update(lr=schedule(k))

The pure schedules are closed forms, so they hold no state: any step, in any order, gives
the same value, and resuming from a checkpoint needs only the step count. They are small
frozen dataclasses named like functions, because they are used like functions: the repr
reads as the call that built them, and two equal schedules compare equal. They can be
nested wherever a schedule is expected (``warmup``, ``join``, ``RestartOnThreshold``):
any ``Callable[[int], float]`` works there too.

Each closed form is written to match torch's recursive schedulers to rounding (the tests
hold them to ``rtol=1e-12``); where we depart from torch on purpose (clamping after the
end instead of extrapolating or repeating, looser argument ranges that only torch's
recursion needed) the class docstring says so.

``ReduceOnPlateau`` and ``RestartOnThreshold`` depend on the metrics seen so far, so they
are objects with ``step(metric) -> lr``, an ``lr`` attribute and
``state_dict()``/``load_state_dict()``. They are also callable with a step (which they
check and otherwise ignore), so they fit where a schedule is expected.

A step that is negative raises ValueError, one that is not an integer TypeError; a bad
constructor argument raises TypeError (wrong type) or ValueError (out of range), with the
argument's name in the message.
"""

from __future__ import annotations

import math
import numbers
import operator
from bisect import bisect_right
from dataclasses import dataclass, field
from collections.abc import Iterable
from typing import Any, Callable, Dict, Tuple

__all__ = [
    "Schedule",
    "constant",
    "step_decay",
    "multi_step",
    "exponential",
    "polynomial",
    "linear",
    "cosine",
    "warmup",
    "cosine_restarts",
    "one_cycle",
    "join",
    "ReduceOnPlateau",
    "RestartOnThreshold",
]

Schedule = Callable[[int], float]


# ---------------------------------------------------------------------------------------
# Argument checks. Messages name the argument, what was expected and what came.


def _check_step(step: Any) -> int:
    # bool is an int subclass, but True as a step count is always a mistake.
    if isinstance(step, bool):
        raise TypeError(f"step must be an int, got {step!r} (bool)")
    try:
        k = operator.index(step)
    except TypeError:
        raise TypeError(f"step must be an int, got {step!r} ({type(step).__name__})") from None
    if k < 0:
        raise ValueError(f"step must be >= 0, got {k}")
    return k


def _int(name: str, value: Any, lo: int) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {value!r} (bool)")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})") from None
    if v < lo:
        raise ValueError(f"{name} must be >= {lo}, got {v}")
    return v


def _real(
    name: str,
    value: Any,
    lo: float = -math.inf,
    *,
    lo_open: bool = False,
    hi: float = math.inf,
    hi_open: bool = False,
) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v!r}")
    too_low = v <= lo if lo_open else v < lo
    too_high = v >= hi if hi_open else v > hi
    if too_low or too_high:
        parts = []
        if lo != -math.inf:
            parts.append(f"{'>' if lo_open else '>='} {lo!r}")
        if hi != math.inf:
            parts.append(f"{'<' if hi_open else '<='} {hi!r}")
        raise ValueError(f"{name} must be {' and '.join(parts)}, got {v!r}")
    return v


def _choice(name: str, value: Any, options: Tuple[str, ...]) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {value!r} ({type(value).__name__})")
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}, got {value!r}")
    return value


def _callable(name: str, value: Any) -> Any:
    if not callable(value):
        raise TypeError(f"{name} must be a callable step -> lr, got {type(value).__name__}")
    return value


def _set(obj: Any, name: str, value: Any) -> None:
    # The dataclasses are frozen; normalizing their fields in __post_init__ is the one
    # place where writing to them is intended.
    object.__setattr__(obj, name, value)


class _Pure:
    """Base of the pure schedules: checks the step once, then evaluates the closed form."""

    def __call__(self, step: int) -> float:
        return self._at(_check_step(step))

    def _at(self, k: int) -> float:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError


# ---------------------------------------------------------------------------------------
# Pure schedules.


@dataclass(frozen=True)
class constant(_Pure):
    r"""The same learning rate at every step.

    ::

        lr_k = lr

    torch: no scheduler (or ``ConstantLR(factor=1.0)``): a fixed learning rate.

    Args:
      lr: the learning rate, >= 0.
    """

    lr: float

    def __post_init__(self) -> None:
        _set(self, "lr", _real("lr", self.lr, 0.0))

    def _at(self, k: int) -> float:
        return self.lr


@dataclass(frozen=True)
class step_decay(_Pure):
    r"""Multiply the rate by ``gamma`` every ``step_size`` steps.

    ::

        lr_k = lr * gamma ** floor(k / step_size)

    torch: ``StepLR(optimizer, step_size, gamma)``: the classic learning-rate step-down
    (multiply by ``gamma`` every ``step_size`` steps).

    Args:
      lr: the initial rate, >= 0.
      step_size: steps between two decays, >= 1.
      gamma: the factor, > 0 (``gamma > 1`` grows the rate).
    """

    lr: float
    step_size: int
    gamma: float = 0.1

    def __post_init__(self) -> None:
        _set(self, "lr", _real("lr", self.lr, 0.0))
        _set(self, "step_size", _int("step_size", self.step_size, 1))
        _set(self, "gamma", _real("gamma", self.gamma, 0.0, lo_open=True))

    def _at(self, k: int) -> float:
        return self.lr * self.gamma ** (k // self.step_size)


@dataclass(frozen=True)
class multi_step(_Pure):
    r"""Multiply the rate by ``gamma`` at each milestone.

    ::

        lr_k = lr * gamma ** #{m in milestones : m <= k}

    torch: ``MultiStepLR(optimizer, milestones, gamma)``. The milestones are sorted here; a
    milestone listed twice counts twice (torch keeps them in a ``Counter`` and applies
    ``gamma ** count``), and a milestone 0 already applies at step 0, as in torch.

    Args:
      lr: the initial rate, >= 0.
      milestones: steps (ints >= 0) at which the rate is multiplied by ``gamma``; any order.
      gamma: the factor, > 0.
    """

    lr: float
    milestones: Tuple[int, ...]
    gamma: float = 0.1

    def __post_init__(self) -> None:
        _set(self, "lr", _real("lr", self.lr, 0.0))
        if isinstance(self.milestones, (str, bytes)) or not isinstance(self.milestones, Iterable):
            raise TypeError(
                f"milestones must be an iterable of ints, got {type(self.milestones).__name__}"
            )
        ms = tuple(sorted(_int(f"milestones[{i}]", m, 0) for i, m in enumerate(self.milestones)))
        _set(self, "milestones", ms)
        _set(self, "gamma", _real("gamma", self.gamma, 0.0, lo_open=True))

    def _at(self, k: int) -> float:
        return self.lr * self.gamma ** bisect_right(self.milestones, k)


@dataclass(frozen=True)
class exponential(_Pure):
    r"""Multiply the rate by ``gamma`` every step.

    ::

        lr_k = lr * gamma ** k

    torch: ``ExponentialLR(optimizer, gamma)``. (Some tutorials call the *polynomial*
    schedule "exponential decay"; that one is :class:`polynomial`.)

    Args:
      lr: the initial rate, >= 0.
      gamma: the factor per step, > 0.
    """

    lr: float
    gamma: float

    def __post_init__(self) -> None:
        _set(self, "lr", _real("lr", self.lr, 0.0))
        _set(self, "gamma", _real("gamma", self.gamma, 0.0, lo_open=True))

    def _at(self, k: int) -> float:
        return self.lr * self.gamma**k


@dataclass(frozen=True)
class polynomial(_Pure):
    r"""Polynomial decay from ``lr`` to ``end_lr`` over ``total_steps`` steps, then constant.

    ::

        lr_k = (lr - end_lr) * (1 - min(k, T) / T) ** power + end_lr      (T = total_steps)

    torch: ``PolynomialLR(optimizer, total_iters=T, power)``, which has ``end_lr = 0``.

    Names vary: the "exponential decay" ``alpha_t = alpha * (1 - t/T) ** gamma`` of some
    tutorials is this schedule with ``power = gamma``, and "linear decay"
    ``alpha * (1 - t/T)`` is ``power = 1``.

    Args:
      lr: the rate at step 0, >= 0.
      total_steps: T, the step at which ``end_lr`` is reached, >= 1.
      power: the exponent, >= 0. ``power = 0`` gives ``lr`` at every step, T included
        (``0 ** 0 == 1``, as in torch).
      end_lr: the rate from step T on, >= 0; may exceed ``lr`` (a polynomial ramp up).
    """

    lr: float
    total_steps: int
    power: float = 1.0
    end_lr: float = 0.0

    def __post_init__(self) -> None:
        _set(self, "lr", _real("lr", self.lr, 0.0))
        _set(self, "total_steps", _int("total_steps", self.total_steps, 1))
        _set(self, "power", _real("power", self.power, 0.0))
        _set(self, "end_lr", _real("end_lr", self.end_lr, 0.0))

    def _at(self, k: int) -> float:
        t = min(k, self.total_steps)
        decay: float = (1.0 - t / self.total_steps) ** self.power
        return (self.lr - self.end_lr) * decay + self.end_lr


@dataclass(frozen=True)
class linear(_Pure):
    r"""Scale ``lr`` by a factor that moves linearly from ``start_factor`` to ``end_factor``.

    ::

        lr_k = lr * (start_factor + (end_factor - start_factor) * min(k, T) / T)

    torch: ``LinearLR(optimizer, start_factor, end_factor, total_iters=T)``, with the same
    defaults (1/3, 1.0, 5). torch refuses ``start_factor`` outside (0, 1] and
    ``end_factor`` outside [0, 1] because its recursive update divides by the previous
    factor; the closed form needs neither limit, so any factors >= 0 are accepted here
    (``start_factor = 0`` is a warm-up from zero).

    Args:
      lr: the base rate, >= 0.
      start_factor: the factor at step 0, >= 0.
      end_factor: the factor from step T on, >= 0.
      total_steps: T, >= 1.
    """

    lr: float
    start_factor: float = 1.0 / 3
    end_factor: float = 1.0
    total_steps: int = 5

    def __post_init__(self) -> None:
        _set(self, "lr", _real("lr", self.lr, 0.0))
        _set(self, "start_factor", _real("start_factor", self.start_factor, 0.0))
        _set(self, "end_factor", _real("end_factor", self.end_factor, 0.0))
        _set(self, "total_steps", _int("total_steps", self.total_steps, 1))

    def _at(self, k: int) -> float:
        t = min(k, self.total_steps)
        s, e = self.start_factor, self.end_factor
        return self.lr * (s + (e - s) * t / self.total_steps)


@dataclass(frozen=True)
class cosine(_Pure):
    r"""Cosine annealing from ``lr`` to ``min_lr`` over ``total_steps`` steps, then constant.

    ::

        lr_k = min_lr + (lr - min_lr) * (1 + cos(pi * min(k, T) / T)) / 2

    torch: ``CosineAnnealingLR(optimizer, T_max=T, eta_min=min_lr)`` for ``k <= T``.
    After T they differ on purpose: torch's recursive update keeps following the cosine,
    back up to ``lr`` at ``2T`` and down again (a period of ``2T``); here the rate stays at
    ``min_lr``. For restarts use :class:`cosine_restarts`.

    Paper: Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts",
    ICLR 2017 (this is one SGDR cycle without the restart).

    Args:
      lr: the rate at step 0, >= 0.
      total_steps: T, >= 1.
      min_lr: the rate from step T on, >= 0.
    """

    lr: float
    total_steps: int
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        _set(self, "lr", _real("lr", self.lr, 0.0))
        _set(self, "total_steps", _int("total_steps", self.total_steps, 1))
        _set(self, "min_lr", _real("min_lr", self.min_lr, 0.0))

    def _at(self, k: int) -> float:
        if k == 0:
            # min_lr + (lr - min_lr) can round one ulp above lr; torch starts from lr itself.
            return self.lr
        t = min(k, self.total_steps)
        # Same association as torch's closed form, pi * t / T, so the two round alike.
        return self.min_lr + (self.lr - self.min_lr) * (1 + math.cos(math.pi * t / self.total_steps)) / 2


@dataclass(frozen=True)
class warmup(_Pure):
    r"""Linear warm-up joined to any schedule.

    ::

        lr_k = schedule(0) * (f + (1 - f) * k / W)     for k < W      (f = start_factor)
        lr_k = schedule(k - W)                          for k >= W

    The ramp reaches ``schedule(0)`` exactly at ``k = W``, so the joined schedule is
    continuous there, and ``schedule`` sees its own step 0 after the warm-up (it is
    shifted, not cut). ``W = 0`` is ``schedule`` itself.

    The first step already moves the parameters: by default the ramp starts at a third of
    ``schedule(0)``, torch's default ``start_factor`` for ``LinearLR``, so that
    ``warmup(S, W)`` equals torch's
    ``SequentialLR(optimizer, [LinearLR(optimizer, total_iters=W), S], milestones=[W])``
    with every argument left at torch's default. For any ``f > 0`` it equals
    ``SequentialLR(optimizer, [LinearLR(optimizer, f, 1.0, W), S], milestones=[W])``.
    ``start_factor=0`` (a ramp from zero, whose first step does nothing) is accepted on
    request; torch's LinearLR refuses it. The other common form, ``schedule(0) * (k + 1) / W``
    (as in Goyal et al., 2017, "Accurate, Large Minibatch SGD"), reaches the full rate at
    step ``W - 1``; it is ``warmup(S, W - 1, start_factor=1 / W)``.

    Args:
      schedule: any callable step -> lr.
      warmup_steps: W, >= 0.
      start_factor: f, the fraction of ``schedule(0)`` used at step 0, in [0, 1];
        default 1/3 as in torch's LinearLR.
    """

    schedule: Schedule
    warmup_steps: int
    start_factor: float = 1.0 / 3

    def __post_init__(self) -> None:
        _callable("schedule", self.schedule)
        _set(self, "warmup_steps", _int("warmup_steps", self.warmup_steps, 0))
        _set(self, "start_factor", _real("start_factor", self.start_factor, 0.0, hi=1.0))

    def _at(self, k: int) -> float:
        w = self.warmup_steps
        if k >= w:
            return float(self.schedule(k - w))
        f = self.start_factor
        return float(self.schedule(0)) * (f + (1.0 - f) * k / w)


@dataclass(frozen=True)
class cosine_restarts(_Pure):
    r"""Cosine annealing with warm restarts (SGDR), periods growing by ``period_mult``.

    Cycle i lasts ``T_i = first_period * period_mult ** i`` steps; with ``t`` the steps
    since the start of the current cycle::

        lr_k = min_lr + (lr - min_lr) * (1 + cos(pi * t / T_i)) / 2

    so each cycle starts at ``lr`` and the step after its last one restarts at ``lr``
    (``min_lr`` itself is never reached at an integer step).

    torch: ``CosineAnnealingWarmRestarts(optimizer, T_0, T_mult, eta_min)`` stepped once
    per step (no fractional epochs).

    Paper: Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts",
    ICLR 2017.

    Args:
      lr: the rate at the start of every cycle, >= 0.
      first_period: T_0, >= 1.
      period_mult: T_mult, an int >= 1 (integer, as in torch, so cycles end on steps).
      min_lr: the floor of the cosine, >= 0.
    """

    lr: float
    first_period: int
    period_mult: int = 1
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        _set(self, "lr", _real("lr", self.lr, 0.0))
        _set(self, "first_period", _int("first_period", self.first_period, 1))
        _set(self, "period_mult", _int("period_mult", self.period_mult, 1))
        _set(self, "min_lr", _real("min_lr", self.min_lr, 0.0))

    def _at(self, k: int) -> float:
        period = self.first_period
        if self.period_mult == 1:
            t = k % period
        else:
            # Periods grow geometrically, so this runs O(log k) times; integer arithmetic
            # avoids the float log that can put a cycle boundary one step off.
            t = k
            while t >= period:
                t -= period
                period *= self.period_mult
        return self.min_lr + (self.lr - self.min_lr) * (1 + math.cos(math.pi * t / period)) / 2


_ANNEALS = ("cos", "linear")


@dataclass(frozen=True)
class one_cycle(_Pure):
    r"""The one-cycle policy: up from ``max_lr / div_factor`` to ``max_lr``, then down.

    With ``lr0 = max_lr / div_factor`` and ``lr_min = lr0 / final_div_factor``, the
    phases are (``p = pct_start``, ``N = total_steps``; ends are the last step of a phase,
    and each phase starts where the previous one ended)::

        two phases:   lr0 -> max_lr  ending at p*N - 1,   max_lr -> lr_min  ending at N - 1
        three phases: lr0 -> max_lr  ending at p*N - 1,   max_lr -> lr0     ending at 2*p*N - 2,
                      lr0 -> lr_min  ending at N - 1

    Within a phase from ``a`` to ``b`` that runs from step ``s`` to step ``e``, with
    ``x = (k - s) / (e - s)``::

        "cos":     lr_k = b + (a - b) / 2 * (1 + cos(pi * x))
        "linear":  lr_k = a + (b - a) * x

    torch: ``OneCycleLR(optimizer, max_lr, total_steps, pct_start, anneal_strategy=anneal,
    div_factor, final_div_factor, three_phase)``, the phase ends included: they are the
    floats ``p*N - 1`` and ``2*p*N - 2``, so when ``p*N`` is not an integer the peak falls
    between two steps and is not reached exactly, and when ``p*N < 1`` the rise is skipped.
    Differences from torch, on purpose:

    - From step ``N - 1`` on the rate stays at its final value (``lr_min``). torch computes
      one more step, ``k = N``, by extrapolating the last phase past its end (the cosine
      swings back up, the linear ramp goes below ``lr_min``, even below 0), and raises for
      ``k > N``.
    - ``p*N == 1`` is refused here with a ValueError; torch divides by zero (a zero-length
      rise ending at step 0).
    - ``pct_start`` may be any real in [0, 1]; torch insists on a Python float.

    Paper: Smith & Topin, "Super-Convergence: Very Fast Training of Neural Networks Using
    Large Learning Rates", 2017 (arXiv:1708.07120); the two-phase default is fastai's.

    Args:
      max_lr: the peak rate, >= 0.
      total_steps: N, the number of steps in the cycle, >= 1.
      pct_start: p, the fraction of the cycle spent rising, in [0, 1].
      anneal: ``"cos"`` or ``"linear"``.
      div_factor: ``lr0 = max_lr / div_factor``, > 0.
      final_div_factor: ``lr_min = lr0 / final_div_factor``, > 0.
      three_phase: rise, fall back to ``lr0``, then anneal to ``lr_min`` (the paper's form).
    """

    max_lr: float
    total_steps: int
    pct_start: float = 0.3
    anneal: str = "cos"
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    three_phase: bool = False
    # (last step, start rate, end rate) per phase, derived from the fields above.
    _phases: Tuple[Tuple[float, float, float], ...] = field(
        init=False, repr=False, compare=False, default=()
    )

    def __post_init__(self) -> None:
        max_lr = _real("max_lr", self.max_lr, 0.0)
        n = _int("total_steps", self.total_steps, 1)
        p = _real("pct_start", self.pct_start, 0.0, hi=1.0)
        _choice("anneal", self.anneal, _ANNEALS)
        div = _real("div_factor", self.div_factor, 0.0, lo_open=True)
        final_div = _real("final_div_factor", self.final_div_factor, 0.0, lo_open=True)
        if not isinstance(self.three_phase, bool):
            raise TypeError(f"three_phase must be a bool, got {type(self.three_phase).__name__}")
        # The phase ends are computed exactly as torch computes them (floats, p*N first),
        # so the phase a step falls into never differs from torch's at the boundaries.
        rise_end = float(p * n) - 1
        if rise_end == 0.0:
            raise ValueError(
                f"pct_start * total_steps must not be 1 (a rise of zero steps), got "
                f"pct_start={p!r}, total_steps={n}"
            )
        lr0 = max_lr / div
        lr_min = lr0 / final_div
        phases: Tuple[Tuple[float, float, float], ...]
        if self.three_phase:
            phases = (
                (rise_end, lr0, max_lr),
                (float(2 * p * n) - 2, max_lr, lr0),
                (float(n - 1), lr0, lr_min),
            )
        else:
            phases = ((rise_end, lr0, max_lr), (float(n - 1), max_lr, lr_min))
        _set(self, "max_lr", max_lr)
        _set(self, "total_steps", n)
        _set(self, "pct_start", p)
        _set(self, "div_factor", div)
        _set(self, "final_div_factor", final_div)
        _set(self, "_phases", phases)

    def _at(self, k: int) -> float:
        k = min(k, self.total_steps - 1)
        start = 0.0
        last = len(self._phases) - 1
        for i, (end, a, b) in enumerate(self._phases):
            # The last phase takes every later step, even when an earlier phase ended past it.
            if k <= end or i == last:
                x = (k - start) / (end - start)
                if self.anneal == "cos":
                    return b + (a - b) / 2.0 * (math.cos(math.pi * x) + 1)
                return (b - a) * x + a
            start = end
        raise AssertionError("unreachable: the last phase takes every step")


@dataclass(frozen=True)
class join(_Pure):
    r"""Run ``schedules[0]`` until ``boundaries[0]``, then ``schedules[1]``, and so on.

    With ``b_{-1} = 0`` and ``b_i = boundaries[i]``, for ``b_{i-1} <= k < b_i`` (the last
    schedule runs forever)::

        lr_k = schedules[i](k - b_{i-1})

    Each schedule sees its own step count from 0, as in ``optax.join_schedules``. The joint
    is continuous only if the pieces are built to meet (``schedules[i](b_i - b_{i-1})`` ==
    ``schedules[i+1](0)``); nothing is rescaled here.

    torch: ``SequentialLR(optimizer, schedulers, milestones=boundaries)`` behaves like this
    when each later scheduler starts from the optimizer's initial lr (torch restarts it at
    its closed-form step 0 at the milestone).

    Args:
      schedules: one or more callables step -> lr.
      boundaries: ``len(schedules) - 1`` strictly increasing ints >= 1.
    """

    schedules: Tuple[Schedule, ...]
    boundaries: Tuple[int, ...]

    def __post_init__(self) -> None:
        for name, value in (("schedules", self.schedules), ("boundaries", self.boundaries)):
            if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
                raise TypeError(f"{name} must be an iterable, got {type(value).__name__}")
        schedules = tuple(_callable(f"schedules[{i}]", s) for i, s in enumerate(self.schedules))
        if not schedules:
            raise ValueError("schedules must hold at least one schedule, got none")
        bounds = tuple(_int(f"boundaries[{i}]", b, 1) for i, b in enumerate(self.boundaries))
        if len(bounds) != len(schedules) - 1:
            raise ValueError(
                f"boundaries must have len(schedules) - 1 = {len(schedules) - 1} entries, "
                f"got {len(bounds)}"
            )
        for i in range(1, len(bounds)):
            if bounds[i] <= bounds[i - 1]:
                raise ValueError(
                    f"boundaries must be strictly increasing, got boundaries[{i - 1}]="
                    f"{bounds[i - 1]} and boundaries[{i}]={bounds[i]}"
                )
        _set(self, "schedules", schedules)
        _set(self, "boundaries", bounds)

    def _at(self, k: int) -> float:
        i = bisect_right(self.boundaries, k)
        offset = self.boundaries[i - 1] if i else 0
        return float(self.schedules[i](k - offset))


# ---------------------------------------------------------------------------------------
# Metric-driven schedules: objects with state.


def _load_scalars(what: str, target: Dict[str, Any], state: Any) -> Dict[str, Any]:
    """Checks that ``state`` has exactly the keys of ``target`` before anything is loaded."""
    if not isinstance(state, dict):
        raise TypeError(f"{what}.load_state_dict: state must be a dict, got {type(state).__name__}")
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    if missing or unexpected:
        raise KeyError(f"{what}.load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
    return state


class ReduceOnPlateau:
    r"""Divide the rate by ``1 / factor`` when a metric stops improving.

    Each ``step(metric)`` compares the metric with the best seen so far. In ``"min"`` mode
    a value is an improvement when::

        metric < best * (1 - threshold)      threshold_mode "rel"
        metric < best - threshold            threshold_mode "abs"

    (``"max"``: ``metric > best * (1 + threshold)`` or ``metric > best + threshold``). An
    improvement sets ``best`` and clears the count of bad steps; anything else (NaN
    included) adds one. During a cooldown the count is cleared every step. When the count
    exceeds ``patience``::

        new = max(lr * factor, min_lr);   lr = new if lr - new > eps;   cooldown starts

    torch: ``ReduceLROnPlateau(optimizer, mode, factor, patience, threshold,
    threshold_mode, cooldown, min_lr, eps)``, making the same decisions in the same order
    for any metric sequence (the tests check this step by step). torch's
    ``num_bad_epochs`` is ``num_bad_steps`` here: this object counts calls of ``step``.

    Attributes:
      lr: the current learning rate (what ``step`` returns).
      best: the best metric so far (state, also in ``state_dict()``).
      num_bad_steps: the bad steps counted toward the next reduction (state, also in
        ``state_dict()``).
      cooldown_counter: steps of cooldown left (state, also in ``state_dict()``).
      steps: calls of ``step`` so far (state, also in ``state_dict()``).

    Args:
      lr: the initial rate, >= 0.
      mode: ``"min"`` (a loss) or ``"max"`` (an accuracy).
      factor: the multiplier on a reduction, in (0, 1).
      patience: bad steps tolerated before a reduction, >= 0 (0: reduce at the first bad
        step after the first step).
      threshold: the margin an improvement needs, >= 0.
      threshold_mode: ``"rel"`` or ``"abs"``.
      cooldown: steps after a reduction during which bad steps are not counted, >= 0.
      min_lr: the floor of the rate, >= 0.
      eps: reductions smaller than this are skipped, >= 0.
    """

    def __init__(
        self,
        lr: float,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float = 0.0,
        eps: float = 1e-8,
    ) -> None:
        self.lr = _real("lr", lr, 0.0)
        self.mode = _choice("mode", mode, ("min", "max"))
        self.factor = _real("factor", factor, 0.0, lo_open=True, hi=1.0, hi_open=True)
        self.patience = _int("patience", patience, 0)
        self.threshold = _real("threshold", threshold, 0.0)
        self.threshold_mode = _choice("threshold_mode", threshold_mode, ("rel", "abs"))
        self.cooldown = _int("cooldown", cooldown, 0)
        self.min_lr = _real("min_lr", min_lr, 0.0)
        self.eps = _real("eps", eps, 0.0)
        # The worst possible value, so that the first finite metric is an improvement.
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad_steps = 0
        self.cooldown_counter = 0
        self.steps = 0

    def _improves(self, metric: float) -> bool:
        if self.mode == "min":
            if self.threshold_mode == "rel":
                return metric < self.best * (1.0 - self.threshold)
            return metric < self.best - self.threshold
        if self.threshold_mode == "rel":
            return metric > self.best * (1.0 + self.threshold)
        return metric > self.best + self.threshold

    def step(self, metric: float) -> float:
        """Takes one metric value (e.g. a validation loss); returns the new learning rate."""
        m = float(metric)
        self.steps += 1
        if self._improves(m):
            self.best = m
            self.num_bad_steps = 0
        else:
            self.num_bad_steps += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_steps = 0
        if self.num_bad_steps > self.patience:
            new = max(self.lr * self.factor, self.min_lr)
            # Near min_lr the reduction shrinks to rounding noise; eps keeps it from
            # counting as a change.
            if self.lr - new > self.eps:
                self.lr = new
            self.cooldown_counter = self.cooldown
            self.num_bad_steps = 0
        return self.lr

    def __call__(self, step: int) -> float:
        """The current rate, whatever the step: the state, not the step, decides it."""
        _check_step(step)
        return self.lr

    def state_dict(self) -> Dict[str, Any]:
        """The state (not the settings) as plain Python scalars."""
        return {
            "lr": self.lr,
            "best": self.best,
            "num_bad_steps": self.num_bad_steps,
            "cooldown_counter": self.cooldown_counter,
            "steps": self.steps,
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restores a ``state_dict()``; checks every entry before changing anything."""
        state = _load_scalars("ReduceOnPlateau", self.state_dict(), state)
        lr = _real("lr", state["lr"], 0.0)
        best = state["best"]
        if isinstance(best, bool) or not isinstance(best, numbers.Real):
            raise TypeError(f"best must be a real number, got {best!r} ({type(best).__name__})")
        num_bad = _int("num_bad_steps", state["num_bad_steps"], 0)
        cooldown_counter = _int("cooldown_counter", state["cooldown_counter"], 0)
        steps = _int("steps", state["steps"], 0)
        self.lr, self.best = lr, float(best)
        self.num_bad_steps, self.cooldown_counter, self.steps = num_bad, cooldown_counter, steps

    def __repr__(self) -> str:
        return (
            f"ReduceOnPlateau(lr={self.lr!r}, mode={self.mode!r}, factor={self.factor!r}, "
            f"patience={self.patience!r}, threshold={self.threshold!r}, "
            f"threshold_mode={self.threshold_mode!r}, cooldown={self.cooldown!r}, "
            f"min_lr={self.min_lr!r}, eps={self.eps!r}) "
            f"[steps={self.steps}, best={self.best!r}, num_bad_steps={self.num_bad_steps}, "
            f"cooldown_counter={self.cooldown_counter}]"
        )


class RestartOnThreshold:
    r"""Restart a schedule from its step 0 whenever a metric crosses a threshold.

    A "restart learning rate" rule: during training, when the loss reaches a threshold,
    reset the learning rate and continue training (a metric-driven cousin of SGDR's
    scheduled warm restarts, Loshchilov & Hutter, 2017). Precisely, with ``c`` the
    steps since the last restart (0 at the start) and ``thr`` the current threshold,
    each ``step(metric)`` does::

        c = c + 1
        if crossed(metric, thr) and c >= min_steps_between:
            c = 0;  restarts += 1;  thr = thr * threshold_decay
        lr = schedule(c)

    where ``crossed`` is ``metric <= thr`` for ``mode="below"`` (a loss) and
    ``metric >= thr`` for ``mode="above"`` (an accuracy); NaN never crosses. The test is
    on the level, not on the crossing edge: a metric that stays past the threshold
    restarts again as soon as ``min_steps_between`` allows. That is what the two knobs
    are for: ``threshold_decay`` moves the bar after each restart (below 1 for a loss
    asks for a lower loss next time, above 1 for an accuracy a higher one), and
    ``min_steps_between`` lets the schedule run at least that many steps. The defaults
    (1.0 and 1) add neither.

    No torch equivalent.

    Attributes:
      lr: ``schedule(steps_since_restart)``, the current rate.
      restarts: restarts so far (state, also in ``state_dict()``).
      steps_since_restart: steps since the last restart (state, also in ``state_dict()``).
      threshold: the current threshold (state, also in ``state_dict()``).
      steps: calls of ``step`` so far (state, also in ``state_dict()``).

    Args:
      schedule: any callable step -> lr (usually a decaying one).
      threshold: the initial threshold, finite.
      mode: ``"below"`` or ``"above"``.
      threshold_decay: the factor applied to the threshold after each restart, > 0.
      min_steps_between: the fewest steps from one restart (or the start) to the next, >= 1.
    """

    def __init__(
        self,
        schedule: Schedule,
        threshold: float,
        mode: str = "below",
        threshold_decay: float = 1.0,
        min_steps_between: int = 1,
    ) -> None:
        self.schedule = _callable("schedule", schedule)
        self.threshold = _real("threshold", threshold)
        self.mode = _choice("mode", mode, ("below", "above"))
        self.threshold_decay = _real("threshold_decay", threshold_decay, 0.0, lo_open=True)
        self.min_steps_between = _int("min_steps_between", min_steps_between, 1)
        self.restarts = 0
        self.steps_since_restart = 0
        self.steps = 0

    @property
    def lr(self) -> float:
        """The current rate: the inner schedule at the steps since the last restart."""
        return float(self.schedule(self.steps_since_restart))

    def step(self, metric: float) -> float:
        """Takes one metric value; returns the rate for the next update."""
        m = float(metric)
        self.steps += 1
        self.steps_since_restart += 1
        crossed = m <= self.threshold if self.mode == "below" else m >= self.threshold
        if crossed and self.steps_since_restart >= self.min_steps_between:
            self.steps_since_restart = 0
            self.restarts += 1
            self.threshold *= self.threshold_decay
        return self.lr

    def __call__(self, step: int) -> float:
        """The current rate, whatever the step: the state, not the step, decides it."""
        _check_step(step)
        return self.lr

    def state_dict(self) -> Dict[str, Any]:
        """The state (not the settings or the inner schedule) as plain Python scalars."""
        return {
            "steps_since_restart": self.steps_since_restart,
            "restarts": self.restarts,
            "threshold": self.threshold,
            "steps": self.steps,
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restores a ``state_dict()``; checks every entry before changing anything."""
        state = _load_scalars("RestartOnThreshold", self.state_dict(), state)
        since = _int("steps_since_restart", state["steps_since_restart"], 0)
        restarts = _int("restarts", state["restarts"], 0)
        threshold = _real("threshold", state["threshold"])
        steps = _int("steps", state["steps"], 0)
        self.steps_since_restart, self.restarts = since, restarts
        self.threshold, self.steps = threshold, steps

    def __repr__(self) -> str:
        return (
            f"RestartOnThreshold(schedule={self.schedule!r}, threshold={self.threshold!r}, "
            f"mode={self.mode!r}, threshold_decay={self.threshold_decay!r}, "
            f"min_steps_between={self.min_steps_between!r}) "
            f"[steps={self.steps}, restarts={self.restarts}, "
            f"steps_since_restart={self.steps_since_restart}]"
        )
