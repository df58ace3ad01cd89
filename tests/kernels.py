"""A registry of the optimizer kernels for the tests: how to build each one's state, how
to draw valid hyperparameters, how to call it. A kernel added here gets every test."""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Optional, Tuple

import ml_dtypes
import numpy as np
from hypothesis import strategies as st

from deepoptim import functional, reference

# Sizes that stress the loops: empty, one, around SIMD widths (4/8/16 lanes) and around
# the kernels' block of 4096 elements.
AWKWARD_SIZES = [0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 63, 65, 4095, 4096, 4097, 8191, 8193]

# Relative tolerance per dtype, for the kernels whose twin is not an exact specification
# (batch norm's statistics). The optimizer kernels are held to the bit: see assert_same_bits.
RTOL = {np.dtype(np.float32): 2e-6, np.dtype(np.float64): 1e-13}


def assert_same_bits(actual: np.ndarray, expected: np.ndarray, what: str = "") -> None:
    """Bit for bit, except that any NaN equals any NaN (NumPy and C++ may pick different
    NaN payloads). Kernel and twin perform the same IEEE operations in the same order
    (``-ffp-contract=off``, fixed summation order), so anything else is a bug: a fused
    multiply-add, a reordered sum, or a formula that drifted."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape, (actual.dtype, expected.dtype)
    u = {4: np.uint32, 8: np.uint64}[actual.dtype.itemsize]
    differ = (actual.view(u) != expected.view(u)) & ~(np.isnan(actual) & np.isnan(expected))
    if differ.any():
        i = np.flatnonzero(differ.reshape(-1))[0]
        a, b = actual.reshape(-1)[i], expected.reshape(-1)[i]
        raise AssertionError(f"{what}: {differ.sum()} elements differ in bits, first at {i}: {a!r} vs {b!r}")


def assert_close(actual: np.ndarray, expected: np.ndarray, what: str = "") -> None:
    """|actual - expected| <= rtol * (|expected| + scale) with rtol per dtype, where scale
    is the array's own magnitude (cancellation near 0 is measured against it)."""
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    rtol = RTOL[expected.dtype]
    finite = np.isfinite(expected)
    scale = float(np.max(np.abs(expected[finite]), initial=0.0)) + 1.0
    np.testing.assert_allclose(
        actual, expected, rtol=rtol, atol=rtol * scale, equal_nan=True, err_msg=what
    )


@dataclasses.dataclass(frozen=True)
class Kernel:
    name: str
    states: List[str]                                 # state argument names, in order
    needs: Callable[[dict], Dict[str, bool]]         # which states a config uses
    hyper: Callable[[], st.SearchStrategy]           # valid hyperparameters
    has_step: bool
    defaults: dict = dataclasses.field(default_factory=dict)
    # Configurations whose 100-step trajectories must equal torch.optim's class of the
    # same name (test_optim_torch.py), for optimizers torch has.
    torch_cases: List[dict] = dataclasses.field(default_factory=list)
    # A state's starting value where it is not zero (Rprop's step sizes start at lr).
    state_init: Dict[str, Callable[[dict], float]] = dataclasses.field(default_factory=dict)
    # States holding one number per tensor (NAdam's mu_products, ASGD's mus and etas): a
    # 0-d float32 array each, as torch's 0-d state tensors, whatever the parameters' dtype.
    scalar_states: Tuple[str, ...] = ()

    @property
    def fast(self):
        return getattr(functional, self.name)

    @property
    def twin(self):
        return getattr(reference, self.name)

    def make_state(self, p: np.ndarray, hp: dict, fill: float = 0.0) -> List[Optional[np.ndarray]]:
        need = self.needs(hp)
        return [None if not need[s] else
                np.array(self.state_init[s](hp) if s in self.state_init else 1.0, np.float32) if s in self.scalar_states
                else np.full_like(p, self.state_init[s](hp) if s in self.state_init else fill)
                for s in self.states]

    def kwargs(self, hp: dict, step: int) -> dict:
        # A configuration may carry what only the optimizer class takes (Rprop's lr, the
        # start of its step sizes): the kernel gets the hyperparameters it has.
        import inspect

        takes = inspect.signature(self.twin).parameters
        kw = {k: v for k, v in hp.items() if k in takes or k.startswith("_")}
        if self.has_step:
            kw["step"] = step
        if self.name == "sgd" and kw.get("momentum_form", "torch") == "torch":
            kw["first_step"] = step == 1
        return kw

    def call(self, fn, params, grads, states, hp: dict, step: int):
        return fn(params, grads, *states, **self.kwargs(hp, step))


def _unit(lo=0.0, hi=1.0):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


def _sgd_hyper():
    @st.composite
    def draw(d):
        form = d(st.sampled_from(["torch", "torch", "classical", "ema"]))
        hp = dict(
            lr=d(_unit(0.0, 0.5)),
            weight_decay=d(st.sampled_from([0.0, 1e-4, 0.1])),
            maximize=d(st.booleans()),
            momentum_form=form,
        )
        if form == "torch":
            hp["momentum"] = d(st.sampled_from([0.0, 0.5, 0.9, 0.99]))
            nesterov = hp["momentum"] > 0 and d(st.booleans())
            hp["nesterov"] = nesterov
            hp["dampening"] = 0.0 if nesterov else d(st.sampled_from([0.0, 0.1, 0.5]))
        else:
            hp["momentum"] = d(_unit(0.0, 0.99))
        return hp

    return draw()


def _adagrad_hyper():
    return st.fixed_dictionaries(
        dict(
            lr=_unit(0.0, 0.5),
            lr_decay=st.sampled_from([0.0, 1e-3, 0.1]),
            weight_decay=st.sampled_from([0.0, 1e-4, 0.1]),
            initial_accumulator_value=st.sampled_from([0.0, 0.1, 1.0]),
            eps=st.sampled_from([1e-10, 1e-8, 1e-3]),
            maximize=st.booleans(),
        )
    )


def _rmsprop_hyper():
    return st.fixed_dictionaries(
        dict(
            lr=_unit(0.0, 0.1),
            alpha=st.sampled_from([0.0, 0.5, 0.9, 0.99]),
            eps=st.sampled_from([1e-8, 1e-6, 1e-2]),
            weight_decay=st.sampled_from([0.0, 1e-4, 0.1]),
            momentum=st.sampled_from([0.0, 0.5, 0.9]),
            centered=st.booleans(),
            maximize=st.booleans(),
        )
    )


def _adam_hyper(wd_choices):
    return st.fixed_dictionaries(
        dict(
            lr=_unit(0.0, 0.1),
            betas=st.tuples(st.sampled_from([0.0, 0.5, 0.9]), st.sampled_from([0.0, 0.9, 0.999])),
            eps=st.sampled_from([1e-8, 1e-6, 1e-3]),
            weight_decay=st.sampled_from(wd_choices),
            amsgrad=st.booleans(),
            maximize=st.booleans(),
            bias_correction=st.booleans(),
            eps_inside_sqrt=st.booleans(),
        )
    )


def _adam_hyper_full():
    return st.builds(
        lambda hp, dec: {**hp, "decoupled_weight_decay": dec},
        _adam_hyper([0.0, 1e-4, 0.1]),
        st.booleans(),
    )


def _adamax_hyper():
    return st.fixed_dictionaries(
        dict(
            lr=_unit(0.0, 0.1),
            betas=st.tuples(st.sampled_from([0.0, 0.5, 0.9]), st.sampled_from([0.0, 0.9, 0.999])),
            eps=st.sampled_from([1e-8, 1e-3]),
            weight_decay=st.sampled_from([0.0, 1e-2]),
            maximize=st.booleans(),
        )
    )


def _radam_hyper():
    return st.builds(lambda hp, dec: {**hp, "decoupled_weight_decay": dec}, _adamax_hyper(), st.booleans())


def _lion_hyper():
    return st.fixed_dictionaries(
        dict(
            lr=_unit(0.0, 0.1),
            betas=st.tuples(st.sampled_from([0.0, 0.5, 0.9]), st.sampled_from([0.0, 0.9, 0.99])),
            weight_decay=st.sampled_from([0.0, 1e-2, 0.5]),
            maximize=st.booleans(),
        )
    )


def _schedule_free_adamw_hyper():
    return st.fixed_dictionaries(
        dict(
            lr=_unit(0.0, 0.1),
            ckp1=st.one_of(st.sampled_from([0.0, 0.5, 1.0]), _unit(0.0, 1.0)),
            betas=st.tuples(st.sampled_from([0.0, 0.5, 0.9]), st.sampled_from([0.0, 0.9, 0.999])),
            eps=st.sampled_from([1e-8, 1e-3]),
            weight_decay=st.sampled_from([0.0, 1e-2, 0.5]),
        )
    )


def _adadelta_hyper():
    return st.fixed_dictionaries(
        dict(lr=_unit(0.0, 2.0), rho=st.sampled_from([0.0, 0.5, 0.9, 1.0]), eps=st.sampled_from([1e-6, 1e-3]),
             weight_decay=st.sampled_from([0.0, 1e-2]), maximize=st.booleans())
    )


def _rprop_hyper():
    return st.fixed_dictionaries(
        dict(etas=st.sampled_from([(0.5, 1.2), (0.3, 2.0)]), step_sizes=st.sampled_from([(1e-6, 50.0), (1e-3, 0.1)]),
             maximize=st.booleans())
    )


def _nadam_hyper():
    return st.builds(
        lambda hp, dec, psi: {**hp, "decoupled_weight_decay": dec, "momentum_decay": psi},
        _adamax_hyper(), st.booleans(), st.sampled_from([0.0, 4e-3, 0.1]),
    )


def _asgd_hyper():
    return st.fixed_dictionaries(
        dict(lr=_unit(0.0, 0.1), lambd=st.sampled_from([0.0, 1e-4, 0.1]), alpha=st.sampled_from([0.0, 0.75, 1.0]),
             t0=st.sampled_from([0.0, 3.0, 1e6]), weight_decay=st.sampled_from([0.0, 1e-2]), maximize=st.booleans())
    )


def _lamb_hyper():
    return st.fixed_dictionaries(
        dict(
            lr=_unit(0.0, 0.1),
            betas=st.tuples(st.sampled_from([0.0, 0.5, 0.9]), st.sampled_from([0.0, 0.9, 0.999])),
            eps=st.sampled_from([1e-6, 1e-3]),
            weight_decay=st.sampled_from([0.0, 1e-2, 0.1]),
            bias_correction=st.booleans(),
        )
    )


def _lars_hyper():
    return st.fixed_dictionaries(
        dict(
            lr=_unit(0.0, 0.5),
            momentum=st.sampled_from([0.0, 0.5, 0.9]),
            weight_decay=st.sampled_from([0.0, 1e-4, 1e-2]),
            trust_coefficient=st.sampled_from([1e-3, 0.02, 1.0]),
            eps=st.sampled_from([0.0, 1e-8]),
        )
    )


KERNELS: Dict[str, Kernel] = {
    k.name: k
    for k in [
        Kernel(
            "sgd", ["momentum_buffers"],
            lambda hp: {"momentum_buffers": hp.get("momentum_form", "torch") != "torch"
                        or hp.get("momentum", 0.0) != 0.0},
            _sgd_hyper, has_step=False, defaults={"momentum": 0.9},
            torch_cases=[dict(lr=1e-2), dict(lr=1e-2, momentum=0.9), dict(lr=1e-2, momentum=0.9, nesterov=True),
                         dict(lr=1e-2, momentum=0.9, dampening=0.3),
                         dict(lr=1e-2, momentum=0.9, weight_decay=0.01, nesterov=True),
                         dict(lr=1e-2, momentum=0.5, maximize=True)],
        ),
        Kernel(
            "adagrad", ["state_sums"], lambda hp: {"state_sums": True},
            _adagrad_hyper, has_step=True,
            torch_cases=[dict(lr=0.1), dict(lr=0.1, lr_decay=0.01, weight_decay=0.01),
                         dict(lr=0.1, initial_accumulator_value=0.5, eps=1e-6, maximize=True)],
        ),
        Kernel(
            "rmsprop", ["square_avgs", "grad_avgs", "momentum_buffers"],
            lambda hp: {"square_avgs": True, "grad_avgs": bool(hp.get("centered")),
                        "momentum_buffers": hp.get("momentum", 0.0) > 0},
            _rmsprop_hyper, has_step=False, defaults={"centered": True, "momentum": 0.5},
            torch_cases=[dict(lr=1e-3), dict(lr=1e-3, centered=True), dict(lr=1e-3, momentum=0.9),
                         dict(lr=1e-3, centered=True, momentum=0.9, weight_decay=0.01),
                         dict(lr=1e-3, alpha=0.9, maximize=True)],
        ),
        Kernel(
            "adam", ["exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs"],
            lambda hp: {"exp_avgs": True, "exp_avg_sqs": True, "max_exp_avg_sqs": bool(hp.get("amsgrad"))},
            _adam_hyper_full, has_step=True, defaults={"amsgrad": True},
            torch_cases=[dict(lr=1e-2), dict(lr=1e-2, weight_decay=0.1), dict(lr=1e-2, amsgrad=True),
                         dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, maximize=True)],
        ),
        Kernel(
            "adamw", ["exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs"],
            lambda hp: {"exp_avgs": True, "exp_avg_sqs": True, "max_exp_avg_sqs": bool(hp.get("amsgrad"))},
            lambda: _adam_hyper([0.0, 1e-2, 0.1]), has_step=True, defaults={"amsgrad": True},
            torch_cases=[dict(lr=1e-2), dict(lr=1e-2, weight_decay=0.5, amsgrad=True), dict(lr=1e-2, maximize=True)],
        ),
        Kernel(
            "adamax", ["exp_avgs", "exp_infs"], lambda hp: {"exp_avgs": True, "exp_infs": True},
            _adamax_hyper, has_step=True,
            torch_cases=[dict(lr=1e-2), dict(lr=1e-2, weight_decay=0.1), dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, maximize=True)],
        ),
        Kernel(
            "radam", ["exp_avgs", "exp_avg_sqs"], lambda hp: {"exp_avgs": True, "exp_avg_sqs": True},
            _radam_hyper, has_step=True,
            torch_cases=[dict(lr=1e-2), dict(lr=1e-2, weight_decay=0.1), dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True),
                         dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, maximize=True)],
        ),
        Kernel(
            "adadelta", ["square_avgs", "acc_deltas"], lambda hp: {"square_avgs": True, "acc_deltas": True},
            _adadelta_hyper, has_step=False,
            torch_cases=[dict(lr=1.0), dict(lr=0.5, rho=0.8, weight_decay=1e-2), dict(lr=1.0, eps=1e-4, maximize=True)],
        ),
        Kernel(
            "rprop", ["prevs", "state_step_sizes"], lambda hp: {"prevs": True, "state_step_sizes": True},
            _rprop_hyper, has_step=False, state_init={"state_step_sizes": lambda hp: hp.get("lr", 1e-2)},
            torch_cases=[dict(lr=1e-2), dict(lr=1e-3, etas=(0.3, 2.0), step_sizes=(1e-4, 0.1)),
                         dict(lr=1e-2, maximize=True)],
        ),
        Kernel(
            "nadam", ["exp_avgs", "exp_avg_sqs", "mu_products"],
            lambda hp: {"exp_avgs": True, "exp_avg_sqs": True, "mu_products": True},
            _nadam_hyper, has_step=True, scalar_states=("mu_products",),
            torch_cases=[dict(lr=1e-2), dict(lr=1e-2, weight_decay=0.1),
                         dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True),
                         dict(lr=1e-2, momentum_decay=0.05, betas=(0.8, 0.99), eps=1e-6, maximize=True)],
        ),
        Kernel(
            "asgd", ["axs", "mus", "etas"], lambda hp: {"axs": True, "mus": True, "etas": True},
            _asgd_hyper, has_step=True, scalar_states=("mus", "etas"),
            state_init={"etas": lambda hp: hp.get("lr", 1e-2)},
            torch_cases=[dict(lr=1e-2), dict(lr=5e-2, lambd=1e-2, alpha=0.5, t0=10.0, weight_decay=0.1),
                         dict(lr=1e-2, t0=0.0), dict(lr=2e-2, lambd=0.1, t0=30.0, maximize=True)],
        ),
        Kernel("lion", ["exp_avgs"], lambda hp: {"exp_avgs": True}, _lion_hyper, has_step=False),
        Kernel(
            "schedule_free_adamw", ["zs", "exp_avg_sqs"], lambda hp: {"zs": True, "exp_avg_sqs": True},
            _schedule_free_adamw_hyper, has_step=True, defaults={"ckp1": 0.3, "weight_decay": 1e-2},
        ),
        Kernel(
            "lamb", ["exp_avgs", "exp_avg_sqs"], lambda hp: {"exp_avgs": True, "exp_avg_sqs": True},
            _lamb_hyper, has_step=True, defaults={"weight_decay": 0.01},
        ),
        Kernel(
            "lars", ["momentum_buffers"], lambda hp: {"momentum_buffers": hp.get("momentum", 0.9) != 0.0},
            _lars_hyper, has_step=False, defaults={"weight_decay": 1e-4},
        ),
    ]
}

NAMES = sorted(KERNELS)


# The storage modes of the optimizer classes' low-precision options: the parameters'
# dtype and the constructor's keywords (tests of deepoptim.optim's classes take each).
BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
F32 = np.dtype(np.float32)
LOWP_MODES: Dict[str, Tuple[np.dtype, Dict[str, object]]] = {
    "bf16": (BF16, {}),
    "bf16-state": (BF16, {"state_dtype": "bfloat16"}),
    "f16": (F16, {}),
    "bf16-master": (BF16, {"master_weights": True}),
    "f16-master-bf16-state": (F16, {"master_weights": True, "state_dtype": "bfloat16"}),
    "bf16-stochastic": (BF16, {"stochastic_rounding": True, "seed": 11}),
    "f32-bf16-state": (F32, {"state_dtype": "bfloat16"}),
    "f32-int8-state": (F32, {"state_dtype": "int8"}),
    "bf16-int8-state": (BF16, {"state_dtype": "int8"}),
    "bf16-master-int8-state": (BF16, {"state_dtype": "int8", "master_weights": True}),
    "bf16-stochastic-int8-state": (BF16, {"state_dtype": "int8", "stochastic_rounding": True, "seed": 3}),
}
