"""Optimizer update rules on the C++ kernels.

Each function has the signature, defaults and semantics of its NumPy twin in
:mod:`deepoptim.reference.optim` (whose docstrings carry the math) and updates the
arrays in place. Pass one array per argument, or lists/tuples of arrays: a list is
updated in one GIL-free call, one parallel region over all tensors.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import numpy as np

from deepoptim import _core
from deepoptim.reference import optim as _twin

ArrayOrList = Union[np.ndarray, Sequence[np.ndarray]]
OptArrayOrList = Optional[ArrayOrList]


def _betas(betas: Tuple[float, float]) -> Tuple[float, float]:
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
        raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    return betas[0], betas[1]


def sgd(
    params: ArrayOrList,
    grads: ArrayOrList,
    momentum_buffers: OptArrayOrList = None,
    *,
    lr: float = 1e-3,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    maximize: bool = False,
    first_step: bool = False,
    momentum_form: str = "torch",
) -> None:
    _core.sgd(params, grads, momentum_buffers, lr, momentum, dampening, weight_decay, nesterov, maximize,
              first_step, momentum_form)


def adagrad(
    params: ArrayOrList,
    grads: ArrayOrList,
    state_sums: ArrayOrList,
    *,
    step: int,
    lr: float = 1e-2,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    initial_accumulator_value: float = 0.0,
    eps: float = 1e-10,
    maximize: bool = False,
) -> None:
    _core.adagrad(params, grads, state_sums, step, lr, lr_decay, weight_decay, initial_accumulator_value, eps,
                  maximize)


def rmsprop(
    params: ArrayOrList,
    grads: ArrayOrList,
    square_avgs: ArrayOrList,
    grad_avgs: OptArrayOrList = None,
    momentum_buffers: OptArrayOrList = None,
    *,
    lr: float = 1e-2,
    alpha: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    centered: bool = False,
    maximize: bool = False,
) -> None:
    _core.rmsprop(params, grads, square_avgs, grad_avgs, momentum_buffers, lr, alpha, eps, weight_decay, momentum,
                  centered, maximize)


def adam(
    params: ArrayOrList,
    grads: ArrayOrList,
    exp_avgs: ArrayOrList,
    exp_avg_sqs: ArrayOrList,
    max_exp_avg_sqs: OptArrayOrList = None,
    *,
    step: int,
    lr: float = 1e-3,
    betas: Tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    maximize: bool = False,
    decoupled_weight_decay: bool = False,
    bias_correction: bool = True,
    eps_inside_sqrt: bool = False,
) -> None:
    if betas.__class__ is not tuple or len(betas) != 2:
        betas = _betas(betas)
    _core.adam(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, step, lr, betas[0], betas[1], eps,
               weight_decay, amsgrad, maximize, decoupled_weight_decay, bias_correction, eps_inside_sqrt)


def adamw(
    params: ArrayOrList,
    grads: ArrayOrList,
    exp_avgs: ArrayOrList,
    exp_avg_sqs: ArrayOrList,
    max_exp_avg_sqs: OptArrayOrList = None,
    *,
    step: int,
    lr: float = 1e-3,
    betas: Tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
    amsgrad: bool = False,
    maximize: bool = False,
    bias_correction: bool = True,
    eps_inside_sqrt: bool = False,
) -> None:
    if betas.__class__ is not tuple or len(betas) != 2:
        betas = _betas(betas)
    _core.adam(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, step, lr, betas[0], betas[1], eps,
               weight_decay, amsgrad, maximize, True, bias_correction, eps_inside_sqrt)


def lamb(
    params: ArrayOrList,
    grads: ArrayOrList,
    exp_avgs: ArrayOrList,
    exp_avg_sqs: ArrayOrList,
    *,
    step: int,
    lr: float = 1e-3,
    betas: Tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    bias_correction: bool = True,
    adapt=None,
):
    beta1, beta2 = _betas(betas)
    return _core.lamb(
        params, grads, exp_avgs, exp_avg_sqs, step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
        weight_decay=weight_decay, bias_correction=bias_correction, adapt=adapt,
    )


def lars(
    params: ArrayOrList,
    grads: ArrayOrList,
    momentum_buffers: OptArrayOrList = None,
    *,
    lr: float = 1e-3,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    trust_coefficient: float = 1e-3,
    eps: float = 0.0,
    adapt=None,
):
    return _core.lars(
        params, grads, momentum_buffers, lr=lr, momentum=momentum, weight_decay=weight_decay,
        trust_coefficient=trust_coefficient, eps=eps, adapt=adapt,
    )


def add_penalty(grads: ArrayOrList, params: ArrayOrList, *, l1: float = 0.0, l2: float = 0.0) -> None:
    _core.add_penalty(grads, params, l1=l1, l2=l2)


def soft_threshold(params: ArrayOrList, *, threshold: float) -> None:
    _core.soft_threshold(params, threshold=threshold)


# One source for the math: each wrapper's docstring is its twin's, introduced as such.
for _fn in (sgd, adagrad, rmsprop, adam, adamw, lamb, lars, add_penalty, soft_threshold):
    _fn.__doc__ = (
        f"C++ kernel; the NumPy twin :func:`deepoptim.reference.{_fn.__name__}` is its "
        f"specification.\n\n{getattr(_twin, _fn.__name__).__doc__}"
    )
del _fn
