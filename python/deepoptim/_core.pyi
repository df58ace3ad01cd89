"""Type stub for the compiled module deepoptim._core (C++ kernels; private).

Every array argument takes either one numpy.ndarray (float32 or float64, C-contiguous;
written ones writeable) or a list/tuple of them, one per tensor. The documented entry
points, with the math, are in deepoptim.functional.
"""

from typing import Optional, Sequence, Tuple, Union

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
def batch_norm(
    x: npt.NDArray[np.floating],
    running_mean: Optional[npt.NDArray[np.floating]],
    running_var: Optional[npt.NDArray[np.floating]],
    weight: Optional[npt.NDArray[np.floating]] = None,
    bias: Optional[npt.NDArray[np.floating]] = None,
    training: bool = True,
    momentum: Optional[float] = 0.1,
    eps: float = 1e-5,
    num_batches_tracked: Optional[npt.NDArray[np.int64]] = None,
    channel_axis: int = 1,
) -> Tuple[npt.NDArray[np.floating], npt.NDArray[np.float64], npt.NDArray[np.float64]]: ...
def batch_norm_backward(
    dy: npt.NDArray[np.floating],
    x: npt.NDArray[np.floating],
    mean: npt.NDArray[np.float64],
    invstd: npt.NDArray[np.float64],
    weight: Optional[npt.NDArray[np.floating]] = None,
    training: bool = True,
    channel_axis: int = 1,
    need_dweight: bool = True,
    need_dbias: bool = True,
) -> Tuple[npt.NDArray[np.floating], Optional[npt.NDArray[np.floating]], Optional[npt.NDArray[np.floating]]]: ...
def dropout(
    x: npt.NDArray[np.floating],
    p: float = 0.5,
    training: bool = True,
    seed: int = 0,
    offset: int = 0,
    return_mask: bool = True,
    out: Optional[npt.NDArray[np.floating]] = None,
) -> Tuple[npt.NDArray[np.floating], Optional[npt.NDArray[np.uint8]]]: ...
def dropout_backward(
    dy: npt.NDArray[np.floating],
    mask: Optional[npt.NDArray[np.uint8]],
    p: float = 0.5,
    seed: Optional[int] = None,
    offset: int = 0,
    out: Optional[npt.NDArray[np.floating]] = None,
) -> npt.NDArray[np.floating]: ...
def philox4x32_10(counter: Sequence[int], key: Sequence[int]) -> Tuple[int, int, int, int]: ...
def lamb(
    params: _Arrays,
    grads: _Arrays,
    exp_avgs: _Arrays,
    exp_avg_sqs: _Arrays,
    step: int,
    lr: float = 1e-3,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    bias_correction: bool = True,
    adapt: Union[None, bool, Sequence[bool]] = None,
) -> Union[float, npt.NDArray[np.float64]]: ...
def lars(
    params: _Arrays,
    grads: _Arrays,
    momentum_buffers: Optional[_Arrays] = None,
    lr: float = 1e-3,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    trust_coefficient: float = 1e-3,
    eps: float = 0.0,
    adapt: Union[None, bool, Sequence[bool]] = None,
) -> Union[float, npt.NDArray[np.float64]]: ...
def add_penalty(grads: _Arrays, params: _Arrays, *, l1: float = 0.0, l2: float = 0.0) -> None: ...
def soft_threshold(params: _Arrays, *, threshold: float) -> None: ...
def norms(arrays: _Arrays, norm_type: float = 2.0) -> Union[float, npt.NDArray[np.float64]]: ...
def all_finite(arrays: _Arrays) -> bool: ...
def scale(arrays: _Arrays, factor: float) -> None: ...
def clamp(arrays: _Arrays, lo: float, hi: float) -> None: ...
def clip_grad_norm(grads: _Arrays, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False) -> float: ...
def probe(read: Sequence[_Arrays], update: Sequence[_Arrays], store: Sequence[_Arrays]) -> float: ...
def set_num_threads(n: int) -> None: ...
