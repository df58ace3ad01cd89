"""Type stub for the compiled module deepoptim._core (C++ kernels; private).

Every array argument takes either one numpy.ndarray (float32 or float64, C-contiguous;
written ones writeable) or a list/tuple of them, one per tensor. The documented entry
points, with the math, are in deepoptim.functional.
"""

from typing import Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

_Array = npt.NDArray[np.floating]
_Arrays = Union[_Array, Sequence[_Array]]

__version__: str

def build_info() -> dict[str, object]: ...
def sgd(
    params: _Arrays,
    grads: _Arrays,
    momentum_buffers: Optional[_Arrays] = None,
    *,
    lr: float = 1e-3,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    maximize: bool = False,
    first_step: bool = False,
    momentum_form: str = "torch",
) -> None: ...
def adagrad(
    params: _Arrays,
    grads: _Arrays,
    state_sums: _Arrays,
    *,
    step: int,
    lr: float = 1e-2,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    initial_accumulator_value: float = 0.0,
    eps: float = 1e-10,
    maximize: bool = False,
) -> None: ...
def rmsprop(
    params: _Arrays,
    grads: _Arrays,
    square_avgs: _Arrays,
    grad_avgs: Optional[_Arrays] = None,
    momentum_buffers: Optional[_Arrays] = None,
    *,
    lr: float = 1e-2,
    alpha: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    centered: bool = False,
    maximize: bool = False,
) -> None: ...
def adam(
    params: _Arrays,
    grads: _Arrays,
    exp_avgs: _Arrays,
    exp_avg_sqs: _Arrays,
    max_exp_avg_sqs: Optional[_Arrays] = None,
    *,
    step: int,
    lr: float = 1e-3,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    maximize: bool = False,
    decoupled_weight_decay: bool = False,
    bias_correction: bool = True,
    eps_inside_sqrt: bool = False,
) -> None: ...
