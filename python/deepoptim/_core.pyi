"""Type stub for the compiled module deepoptim._core (C++ kernels; private).

Every array argument takes either one numpy.ndarray (float32 or float64, C-contiguous;
written ones writeable) or a list/tuple of them, one per tensor. The documented entry
points, with the math, are in deepoptim.functional.

Parameter names, order and defaults equal the signature line pybind11 writes into each
function's ``__doc__`` (no defaults: deepoptim.functional passes every argument, and its
NumPy twin's signature holds the defaults); tests/test_stub.py holds the two together.
"""

from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

_Array = npt.NDArray[np.floating[Any]]
_Arrays = Union[_Array, Sequence[_Array]]
# A state argument some tensors do without (Adafactor's factors of a vector): None, or None entries.
_OptArrays = Union[None, _Array, Sequence[Optional[_Array]]]

__version__: str

def build_info() -> dict[str, object]: ...
def sgd(
    params: _Arrays,
    grads: _Arrays,
    momentum_buffers: Optional[_Arrays],
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
    first_step: bool,
    momentum_form: str,
    master_params: Optional[_Arrays],
    stochastic_rounding: Optional[tuple[int, int]],
) -> None: ...
def adagrad(
    params: _Arrays,
    grads: _Arrays,
    state_sums: _Arrays,
    step: int,
    lr: float,
    lr_decay: float,
    weight_decay: float,
    initial_accumulator_value: float,
    eps: float,
    maximize: bool,
    master_params: Optional[_Arrays],
    stochastic_rounding: Optional[tuple[int, int]],
) -> None: ...
def rmsprop(
    params: _Arrays,
    grads: _Arrays,
    square_avgs: _Arrays,
    grad_avgs: Optional[_Arrays],
    momentum_buffers: Optional[_Arrays],
    lr: float,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    centered: bool,
    maximize: bool,
    master_params: Optional[_Arrays],
    stochastic_rounding: Optional[tuple[int, int]],
) -> None: ...
def adam(
    params: _Arrays,
    grads: _Arrays,
    exp_avgs: _Arrays,
    exp_avg_sqs: _Arrays,
    max_exp_avg_sqs: Optional[_Arrays],
    step: int,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    amsgrad: bool,
    maximize: bool,
    decoupled_weight_decay: bool,
    bias_correction: bool,
    eps_inside_sqrt: bool,
    master_params: Optional[_Arrays],
    stochastic_rounding: Optional[tuple[int, int]],
) -> None: ...
def radam(
    params: _Arrays,
    grads: _Arrays,
    exp_avgs: _Arrays,
    exp_avg_sqs: _Arrays,
    step: int,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    maximize: bool,
    master_params: Optional[_Arrays],
    stochastic_rounding: Optional[tuple[int, int]],
) -> None: ...
def lion(
    params: _Arrays,
    grads: _Arrays,
    exp_avgs: _Arrays,
    lr: float,
    betas: tuple[float, float],
    weight_decay: float,
    maximize: bool,
    master_params: Optional[_Arrays],
    stochastic_rounding: Optional[tuple[int, int]],
) -> None: ...
def schedule_free_adamw(
    params: _Arrays,
    grads: _Arrays,
    zs: _Arrays,
    exp_avg_sqs: _Arrays,
    step: int,
    lr: float,
    ckp1: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    master_params: Optional[_Arrays],
    stochastic_rounding: Optional[tuple[int, int]],
) -> None: ...
def adadelta(
    params: _Arrays,
    grads: _Arrays,
    square_avgs: _Arrays,
    acc_deltas: _Arrays,
    lr: float,
    rho: float,
    eps: float,
    weight_decay: float,
    maximize: bool,
    master_params: Optional[_Arrays],
    stochastic_rounding: Optional[tuple[int, int]],
) -> None: ...
def rprop(
    params: _Arrays,
    grads: _Arrays,
    prevs: _Arrays,
    state_step_sizes: _Arrays,
    etas: tuple[float, float],
    step_sizes: tuple[float, float],
    maximize: bool,
    master_params: Optional[_Arrays],
    stochastic_rounding: Optional[tuple[int, int]],
) -> None: ...
def nadam(
    params: _Arrays,
    grads: _Arrays,
    exp_avgs: _Arrays,
    exp_avg_sqs: _Arrays,
    mu_products: _Arrays,
    step: int,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    momentum_decay: float,
    decoupled_weight_decay: bool,
    maximize: bool,
    master_params: Optional[_Arrays],
    stochastic_rounding: Optional[tuple[int, int]],
) -> None: ...
def asgd(
    params: _Arrays,
    grads: _Arrays,
    axs: _Arrays,
    mus: _Arrays,
    etas: _Arrays,
    step: int,
    lr: float,
    lambd: float,
    alpha: float,
    t0: float,
    weight_decay: float,
    maximize: bool,
    master_params: Optional[_Arrays],
    stochastic_rounding: Optional[tuple[int, int]],
) -> None: ...
def adamax(
    params: _Arrays,
    grads: _Arrays,
    exp_avgs: _Arrays,
    exp_infs: _Arrays,
    step: int,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    maximize: bool,
    master_params: Optional[_Arrays],
    stochastic_rounding: Optional[tuple[int, int]],
) -> None: ...
def batch_norm(
    x: _Array,
    running_mean: Optional[_Array],
    running_var: Optional[_Array],
    weight: Optional[_Array],
    bias: Optional[_Array],
    training: bool,
    momentum: Optional[float],
    eps: float,
    num_batches_tracked: Optional[npt.NDArray[np.int64]],
    channel_axis: int,
) -> Tuple[_Array, npt.NDArray[np.float64], npt.NDArray[np.float64]]: ...
def batch_norm_backward(
    dy: _Array,
    x: _Array,
    mean: npt.NDArray[np.float64],
    invstd: npt.NDArray[np.float64],
    weight: Optional[_Array],
    training: bool,
    channel_axis: int,
    need_dweight: bool,
    need_dbias: bool,
) -> Tuple[_Array, Optional[_Array], Optional[_Array]]: ...
def dropout(
    x: _Array,
    p: float,
    training: bool,
    seed: int,
    offset: int,
    return_mask: bool,
    out: Optional[_Array],
) -> Tuple[_Array, Optional[npt.NDArray[np.uint8]]]: ...
def dropout_backward(
    dy: _Array,
    mask: Optional[npt.NDArray[np.uint8]],
    p: float,
    seed: Optional[int],
    offset: int,
    out: Optional[_Array],
) -> _Array: ...
def philox4x32_10(counter: Sequence[int], key: Sequence[int]) -> Tuple[int, int, int, int]: ...
def lamb(
    params: _Arrays,
    grads: _Arrays,
    exp_avgs: _Arrays,
    exp_avg_sqs: _Arrays,
    step: int,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    bias_correction: bool,
    adapt: Union[None, bool, Sequence[bool]],
    master_params: Optional[_Arrays],
    stochastic_rounding: Optional[tuple[int, int]],
) -> Union[float, npt.NDArray[np.float64]]: ...
def lars(
    params: _Arrays,
    grads: _Arrays,
    momentum_buffers: Optional[_Arrays],
    lr: float,
    momentum: float,
    weight_decay: float,
    trust_coefficient: float,
    eps: float,
    adapt: Union[None, bool, Sequence[bool]],
    master_params: Optional[_Arrays],
    stochastic_rounding: Optional[tuple[int, int]],
) -> Union[float, npt.NDArray[np.float64]]: ...
def muon(
    params: _Arrays,
    grads: _Arrays,
    momentum_buffers: _Arrays,
    lr: float,
    weight_decay: float,
    momentum: float,
    nesterov: bool,
    ns_coefficients: tuple[float, float, float],
    eps: float,
    ns_steps: int,
    adjust_lr_fn: Optional[str],
) -> None: ...
def adafactor(
    params: _Arrays,
    grads: _Arrays,
    row_vars: _OptArrays,
    col_vars: _OptArrays,
    variances: _OptArrays,
    step: int,
    lr: float,
    beta2_decay: float,
    eps: tuple[Optional[float], float],
    d: float,
    weight_decay: float,
    maximize: bool,
) -> None: ...
def add_penalty(grads: _Arrays, params: _Arrays, l1: float, l2: float) -> None: ...
def soft_threshold(params: _Arrays, threshold: float) -> None: ...
def decay(params: _Arrays, lr: float, weight_decay: float) -> None: ...
def norms(arrays: _Arrays, norm_type: float) -> Union[float, npt.NDArray[np.float64]]: ...
def dots(xs: _Arrays, ys: _Arrays) -> Union[float, npt.NDArray[np.float64]]: ...
def all_finite(arrays: _Arrays) -> bool: ...
def scale(arrays: _Arrays, factor: float) -> None: ...
def clamp(arrays: _Arrays, lo: float, hi: float) -> None: ...
def clip_grad_norm(grads: _Arrays, max_norm: float, norm_type: float, error_if_nonfinite: bool) -> float: ...
# Any dtype parameter: bfloat16 (ml_dtypes) is not a numpy.floating subtype.
def cast(src: Union[npt.NDArray[Any], Sequence[npt.NDArray[Any]]], out: Union[npt.NDArray[Any], Sequence[npt.NDArray[Any]]]) -> None: ...
def cast_stochastic(src: Union[npt.NDArray[Any], Sequence[npt.NDArray[Any]]], out: Union[npt.NDArray[Any], Sequence[npt.NDArray[Any]]], seed: int, offset: int) -> None: ...
def torch_pointers(params: list[object]) -> Optional[tuple[list[int], list[int], list[object]]]: ...
def probe(read: list[_Arrays], update: list[_Arrays], store: list[_Arrays]) -> float: ...
def set_num_threads(n: int) -> None: ...

class RawTensors:
    """Tensors' memory for the kernels (deepoptim.torch's fast path); private."""

    def __init__(self, dtype: str, ptrs: list[int], sizes: list[int], owners: object) -> None: ...
    def __len__(self) -> int: ...
