"""NumPy twins of the optimizer kernels: the specification of ``deepoptim._core``.

Each function updates ``params`` and its state arrays in place, exactly as the C++
kernel of the same name does, with the same operations in the same order: scalars are
combined in double (Python floats) and rounded to the array dtype once, arrays are
combined in their own dtype. The C++ kernels in ``cpp/src/optim.cpp`` follow this file
function by function, in the order of ``KERNELS`` at the end of this file.

Every function accepts one array per argument, or lists/tuples of arrays (one entry
per tensor), and validates everything before it touches anything.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, List, Optional, Sequence, Tuple, Union, cast

import numpy as np
import numpy.typing as npt

from deepoptim.reference import _checks, _lowp
from deepoptim.reference._parallel import blocked_sum

# Overflow to inf and NaN from a NaN gradient are the specified IEEE results (the kernels
# produce them silently too), not conditions to warn about.
def _ieee() -> np.errstate:
    return np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore")

ArrayOrList = Union[np.ndarray, Sequence[np.ndarray]]
OptArrayOrList = Optional[ArrayOrList]
if TYPE_CHECKING:
    # What _checks.operands returns when every operand is used: no None in the rows.
    _Rows = Tuple[List[List[np.ndarray]], bool]

_FORMS = ("torch", "classical", "ema")


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
    master_params: OptArrayOrList = None,
    stochastic_rounding: Optional[Tuple[int, int]] = None,
) -> None:
    r"""Stochastic gradient descent with momentum, in place.

    With :math:`g \leftarrow -g` when ``maximize``, then :math:`g \leftarrow g + \lambda p`
    (``weight_decay`` :math:`\lambda`), the three ``momentum_form`` s are:

    ``"torch"`` (default; torch.optim.SGD, Sutskever et al. 2013 with dampening :math:`\tau`)::

        b = g                            on the first step (first_step=True)
        b = mu * b + (1 - tau) * g       afterwards
        d = g + mu * b if nesterov else b      (d = g when momentum == 0)
        p = p - lr * d

    ``"classical"`` (Polyak's heavy ball with the learning rate inside the velocity, the form
    of Sutskever et al., 2013, "On the importance of initialization and momentum in deep
    learning")::

        v = mu * v + lr * g;   p = p - v

    ``"ema"`` (momentum as an exponential moving average of the gradients: Adam's first
    moment without its bias correction)::

        v = mu * v + (1 - mu) * g;   p = p - lr * v

    The last two start from whatever ``momentum_buffers`` hold (zeros for a fresh start),
    take no ``dampening`` or ``nesterov``, and need buffers even when ``momentum == 0``.

    Args:
      params: the parameters (updated).
      grads: their gradients.
      momentum_buffers: :math:`b` or :math:`v` (updated); may be None for the torch form
        with ``momentum == 0``.
      lr: learning rate, >= 0.
      momentum: :math:`\mu`, >= 0 (<= 1 for ``"ema"``).
      dampening: :math:`\tau` in [0, 1].
      weight_decay: :math:`\lambda` >= 0 (coupled, L2).
      nesterov: Nesterov momentum; needs momentum > 0 and dampening == 0.
      maximize: ascend instead of descend.
      first_step: torch form only: the buffers hold no history, so :math:`b = g` is written
        (torch's first step). Set it on the first call after creating the buffers.
      momentum_form: ``"torch"``, ``"classical"`` or ``"ema"``.
      master_params: for bfloat16/float16 ``params`` (and bfloat16 state): their float32
        master copies, updated in place; see :mod:`deepoptim.reference._lowp`.
      stochastic_rounding: for bfloat16 ``params``: ``(seed, step)`` to round them
        stochastically; see :mod:`deepoptim.reference._lowp`.

    Example:
      >>> import numpy as np
      >>> from deepoptim.reference import sgd
      >>> p = np.array([1.0, 2.0], np.float32); g = np.array([0.5, -1.0], np.float32)
      >>> sgd(p, g, lr=0.1)
      >>> p
      array([0.95, 2.1 ], dtype=float32)
    """
    if not isinstance(momentum_form, str):
        raise TypeError(f"momentum_form must be a str, got {type(momentum_form).__name__}")
    if momentum_form not in _FORMS:
        raise ValueError(f"momentum_form must be 'torch', 'classical' or 'ema', got '{momentum_form}'")
    lr, momentum = _checks.real("lr", lr), _checks.real("momentum", momentum)
    dampening = _checks.real("dampening", dampening)
    weight_decay = _checks.real("weight_decay", weight_decay)
    _checks.finite_ge("lr", lr, 0.0)
    _checks.finite_ge("momentum", momentum, 0.0)
    _checks.in_range("dampening", dampening, 0.0, 1.0, True)
    _checks.finite_ge("weight_decay", weight_decay, 0.0)
    if nesterov and (momentum <= 0.0 or dampening != 0.0):
        raise ValueError(
            f"nesterov=True requires momentum > 0 and dampening == 0, got momentum={momentum!r}, "
            f"dampening={dampening!r}"
        )
    if momentum_form != "torch":
        if nesterov or dampening != 0.0:
            raise ValueError(
                f"momentum_form='{momentum_form}' takes neither nesterov nor dampening (they belong to 'torch')"
            )
        if momentum_form == "ema":
            _checks.in_range("momentum", momentum, 0.0, 1.0, True)
    uses_buffer = momentum_form != "torch" or momentum != 0.0
    why = "momentum != 0" if momentum_form == "torch" else "momentum_form is not 'torch'"
    rows, _ = _checks.operands(
        [("params", True, True, None), ("grads", False, True, None), ("momentum_buffers", True, uses_buffer, why)],
        [params, grads, momentum_buffers],
    )
    with _ieee():
        for p, g, buf in rows:
            assert p is not None and g is not None  # buf is None when no buffer is used
            d = -g if maximize else g
            if weight_decay != 0.0:
                d = d + weight_decay * p
            if buf is None:
                p[...] = p - lr * d
            elif momentum_form == "torch":
                b = d if first_step else momentum * buf + (1.0 - dampening) * d
                buf[...] = b
                p[...] = p - lr * (d + momentum * b if nesterov else b)
            elif momentum_form == "classical":
                v = momentum * buf + lr * d
                buf[...] = v
                p[...] = p - v
            else:  # ema
                v = momentum * buf + (1.0 - momentum) * d
                buf[...] = v
                p[...] = p - lr * v


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
    master_params: OptArrayOrList = None,
    stochastic_rounding: Optional[Tuple[int, int]] = None,
) -> None:
    r"""Adagrad (Duchi, Hazan & Singer, 2011), in place, as torch.optim.Adagrad.

    With :math:`g \leftarrow -g` when ``maximize``, then :math:`g \leftarrow g + \lambda p`::

        clr = lr / (1 + (step - 1) * lr_decay)
        s   = s + g * g            (at step 1: s = initial_accumulator_value + g * g)
        p   = p - clr * g / (sqrt(s) + eps)

    At ``step == 1`` the incoming contents of ``state_sums`` are ignored and replaced by
    ``initial_accumulator_value``, which is how torch initializes the state.

    Args:
      params: parameters (updated).
      grads: gradients.
      state_sums: :math:`s` (updated).
      step: the number of this update, counting from 1.
      lr: >= 0.
      lr_decay: >= 0.
      weight_decay: :math:`\lambda` >= 0.
      initial_accumulator_value: >= 0.
      eps: > 0, added outside the square root.
      maximize: ascend instead of descend.
      master_params: for bfloat16/float16 ``params`` (and bfloat16 state): their float32
        master copies, updated in place; see :mod:`deepoptim.reference._lowp`.
      stochastic_rounding: for bfloat16 ``params``: ``(seed, step)`` to round them
        stochastically; see :mod:`deepoptim.reference._lowp`.
    """
    step = _checks.step(step)
    lr, lr_decay = _checks.real("lr", lr), _checks.real("lr_decay", lr_decay)
    weight_decay = _checks.real("weight_decay", weight_decay)
    init = _checks.real("initial_accumulator_value", initial_accumulator_value)
    eps = _checks.real("eps", eps)
    _checks.finite_ge("lr", lr, 0.0)
    _checks.finite_ge("lr_decay", lr_decay, 0.0)
    _checks.finite_ge("weight_decay", weight_decay, 0.0)
    _checks.finite_ge("initial_accumulator_value", init, 0.0)
    _checks.finite_gt("eps", eps, 0.0)
    rows, _ = cast("_Rows", _checks.operands(
        [("params", True, True, None), ("grads", False, True, None), ("state_sums", True, True, None)],
        [params, grads, state_sums],
    ))
    _checks.eps_representable("eps", eps, rows)
    clr = lr / (1.0 + (step - 1) * lr_decay)
    with _ieee():
        for p, g, s in rows:
            d = -g if maximize else g
            if weight_decay != 0.0:
                d = d + weight_decay * p
            total = (init if step == 1 else s) + d * d
            s[...] = total
            p[...] = p - clr * (d / (np.sqrt(total) + eps))


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
    master_params: OptArrayOrList = None,
    stochastic_rounding: Optional[Tuple[int, int]] = None,
) -> None:
    r"""RMSprop (Hinton, Lecture 6e; centered form: Graves, 2013), in place, as torch.optim.RMSprop.

    With :math:`g \leftarrow -g` when ``maximize``, then :math:`g \leftarrow g + \lambda p`::

        s = alpha * s + (1 - alpha) * g * g
        centered:   a = alpha * a + (1 - alpha) * g;   var = max(s - a * a, 0)
        otherwise:  var = s
        q = g / (sqrt(var) + eps)
        momentum > 0:  b = mu * b + q;  p = p - lr * b
        otherwise:     p = p - lr * q

    All state starts from zeros. Unlike torch, a centered variance that rounding pushes
    below zero is clamped to 0 instead of producing NaN.

    Args:
      params: parameters (updated).
      grads: gradients.
      square_avgs: :math:`s` (updated).
      grad_avgs: :math:`a`, needed when ``centered``.
      momentum_buffers: :math:`b`, needed when ``momentum > 0``.
      lr: >= 0.
      alpha: smoothing constant in [0, 1].
      eps: > 0, outside the square root.
      weight_decay: :math:`\lambda` >= 0.
      momentum: :math:`\mu` >= 0.
      master_params: for bfloat16/float16 ``params`` (and bfloat16 state): their float32
        master copies, updated in place; see :mod:`deepoptim.reference._lowp`.
      stochastic_rounding: for bfloat16 ``params``: ``(seed, step)`` to round them
        stochastically; see :mod:`deepoptim.reference._lowp`.
    """
    lr, alpha, eps = _checks.real("lr", lr), _checks.real("alpha", alpha), _checks.real("eps", eps)
    weight_decay = _checks.real("weight_decay", weight_decay)
    momentum = _checks.real("momentum", momentum)
    _checks.finite_ge("lr", lr, 0.0)
    _checks.in_range("alpha", alpha, 0.0, 1.0, True)
    _checks.finite_gt("eps", eps, 0.0)
    _checks.finite_ge("weight_decay", weight_decay, 0.0)
    _checks.finite_ge("momentum", momentum, 0.0)
    rows, _ = _checks.operands(
        [
            ("params", True, True, None),
            ("grads", False, True, None),
            ("square_avgs", True, True, None),
            ("grad_avgs", True, bool(centered), "centered=True"),
            ("momentum_buffers", True, momentum > 0.0, "momentum > 0"),
        ],
        [params, grads, square_avgs, grad_avgs, momentum_buffers],
    )
    _checks.eps_representable("eps", eps, rows)
    with _ieee():
        for p, g, sq, ga, buf in rows:
            assert p is not None and g is not None and sq is not None  # ga, buf: None when unused
            d = -g if maximize else g
            if weight_decay != 0.0:
                d = d + weight_decay * p
            s = alpha * sq + (1.0 - alpha) * (d * d)
            sq[...] = s
            var = s
            if ga is not None:
                a = alpha * ga + (1.0 - alpha) * d
                ga[...] = a
                var = s - a * a
                var = np.where(var < 0, np.zeros_like(var), var)  # NaN stays NaN
            q = d / (np.sqrt(var) + eps)
            if buf is not None:
                b = momentum * buf + q
                buf[...] = b
                p[...] = p - lr * b
            else:
                p[...] = p - lr * q


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
    master_params: OptArrayOrList = None,
    stochastic_rounding: Optional[Tuple[int, int]] = None,
) -> None:
    r"""Adam (Kingma & Ba, 2015), AdamW (Loshchilov & Hutter, 2019) and AMSGrad (Reddi et
    al., 2018), in place, as torch.optim.Adam / AdamW.

    With :math:`g \leftarrow -g` when ``maximize``; then either coupled L2 decay
    :math:`g \leftarrow g + \lambda p` (Adam) or decoupled decay
    :math:`p \leftarrow p (1 - lr\,\lambda)` (``decoupled_weight_decay``, AdamW)::

        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        v^ = max(vmax, v) stored in vmax      (amsgrad; the max of the raw v)   else  v^ = v
        bc1 = 1 - b1**step,  bc2 = 1 - b2**step       (both 1 if not bias_correction)
        denom = sqrt(v^) / sqrt(bc2) + eps            (eps_inside_sqrt: sqrt(v^ / bc2 + eps))
        p = p - (lr / bc1) * m / denom

    Warning:
      Where eps goes is a convention. torch, optax and the paper put it outside the square
      root (the default). Some tutorials write ``p -= lr * m / sqrt(v + eps)`` without
      bias correction: that is ``bias_correction=False, eps_inside_sqrt=True`` (Kingma & Ba,
      2015, Sec. 3, explain why the correction matters in the first steps).

    Args:
      params: parameters (updated).
      grads: gradients.
      exp_avgs: :math:`m` (updated; zeros for a fresh start).
      exp_avg_sqs: :math:`v` (updated; zeros for a fresh start).
      max_exp_avg_sqs: :math:`v_{max}` (updated), needed when ``amsgrad``.
      step: the number of this update, counting from 1 (the same for every tensor).
      lr: >= 0.
      betas: :math:`(b_1, b_2)`, each in [0, 1).
      eps: > 0.
      weight_decay: :math:`\lambda` >= 0.
      master_params: for bfloat16/float16 ``params`` (and bfloat16 state): their float32
        master copies, updated in place; see :mod:`deepoptim.reference._lowp`.
      stochastic_rounding: for bfloat16 ``params``: ``(seed, step)`` to round them
        stochastically; see :mod:`deepoptim.reference._lowp`.

    Example:
      >>> import numpy as np
      >>> from deepoptim.reference import adam
      >>> p = np.ones(3, np.float32); g = np.array([1.0, -2.0, 0.0], np.float32)
      >>> m, v = np.zeros_like(p), np.zeros_like(p)
      >>> adam(p, g, m, v, step=1, lr=0.1)
      >>> p
      array([0.9, 1.1, 1. ], dtype=float32)
    """
    step, lr, b1, b2, eps, weight_decay = _checks.adam_like(step, lr, betas, eps, weight_decay)
    rows, _ = _checks.operands(
        [
            ("params", True, True, None),
            ("grads", False, True, None),
            ("exp_avgs", True, True, None),
            ("exp_avg_sqs", True, True, None),
            ("max_exp_avg_sqs", True, bool(amsgrad), "amsgrad=True"),
        ],
        [params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs],
    )
    _checks.eps_representable("eps", eps, rows)
    bc1 = 1.0 - b1**step if bias_correction else 1.0
    bc2 = 1.0 - b2**step if bias_correction else 1.0
    step_size = lr / bc1
    inv_bc2_sqrt = 1.0 / math.sqrt(bc2)
    inv_bc2 = 1.0 / bc2
    coupled = weight_decay != 0.0 and not decoupled_weight_decay
    decoupled = weight_decay != 0.0 and decoupled_weight_decay
    with _ieee():
        for p, g, m, v, vmax in rows:
            assert p is not None and g is not None and m is not None and v is not None  # vmax: amsgrad only
            d = -g if maximize else g
            pi = p * (1.0 - lr * weight_decay) if decoupled else p
            if coupled:
                d = d + weight_decay * pi
            mi = b1 * m + (1.0 - b1) * d
            vi = b2 * v + (1.0 - b2) * (d * d)
            m[...] = mi
            v[...] = vi
            vh = vi
            if vmax is not None:
                vh = np.maximum(vmax, vi)
                vmax[...] = vh
            if eps_inside_sqrt:
                denom = np.sqrt(vh * inv_bc2 + eps)
            else:
                denom = np.sqrt(vh) * inv_bc2_sqrt + eps
            p[...] = pi - step_size * (mi / denom)


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
    master_params: OptArrayOrList = None,
    stochastic_rounding: Optional[Tuple[int, int]] = None,
) -> None:
    r"""AdamW (Loshchilov & Hutter, 2019): :func:`adam` with decoupled weight decay,
    :math:`p \leftarrow p (1 - lr\,\lambda)` before the Adam step, and torch's default
    ``weight_decay=1e-2``. See :func:`adam` for the update and the arguments.

    Args:
      master_params: for bfloat16/float16 ``params`` (and bfloat16 state): their float32
        master copies, updated in place; see :mod:`deepoptim.reference._lowp`.
      stochastic_rounding: for bfloat16 ``params``: ``(seed, step)`` to round them
        stochastically; see :mod:`deepoptim.reference._lowp`.
    """
    adam(
        params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs,
        step=step, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
        maximize=maximize, decoupled_weight_decay=True, bias_correction=bias_correction,
        eps_inside_sqrt=eps_inside_sqrt,
    )


def adamax(
    params: ArrayOrList,
    grads: ArrayOrList,
    exp_avgs: ArrayOrList,
    exp_infs: ArrayOrList,
    *,
    step: int,
    lr: float = 2e-3,
    betas: Tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    maximize: bool = False,
    master_params: OptArrayOrList = None,
    stochastic_rounding: Optional[Tuple[int, int]] = None,
) -> None:
    r"""Adamax (Kingma & Ba, 2015, section 7.1: Adam with the infinity norm), in place, as
    torch.optim.Adamax. With :math:`g \leftarrow -g` when ``maximize``::

        g = g + weight_decay * p
        m = m + (1 - b1) * (g - m)          (torch's lerp; the paper's b1*m + (1-b1)*g)
        u = max(b2 * u, |g| + eps)          (a NaN in either propagates)
        p = p - ((lr / (1 - b1**step)) * m) / u

    Args:
      params: parameters (updated).
      grads: gradients.
      exp_avgs: :math:`m` (updated; zeros for a fresh start).
      exp_infs: :math:`u` (updated; zeros for a fresh start).
      step: the number of this update, counting from 1.
      lr: >= 0.
      betas: :math:`(b_1, b_2)`, each in [0, 1).
      eps: > 0.
      weight_decay: >= 0.
      master_params: for bfloat16/float16 ``params`` (and bfloat16 state): their float32
        master copies, updated in place; see :mod:`deepoptim.reference._lowp`.
      stochastic_rounding: for bfloat16 ``params``: ``(seed, step)`` to round them
        stochastically; see :mod:`deepoptim.reference._lowp`.

    Example:
      >>> import numpy as np
      >>> from deepoptim.reference import adamax
      >>> p = np.ones(2); m, u = np.zeros(2), np.zeros(2)
      >>> adamax(p, np.array([1.0, -2.0]), m, u, step=1, lr=0.1)
      >>> p.round(6)
      array([0.9, 1.1])
    """
    step, lr, b1, b2, eps, weight_decay = _checks.adam_like(step, lr, betas, eps, weight_decay)
    rows, _ = cast("_Rows", _checks.operands(
        [("params", True, True, None), ("grads", False, True, None), ("exp_avgs", True, True, None),
         ("exp_infs", True, True, None)],
        [params, grads, exp_avgs, exp_infs],
    ))
    _checks.eps_representable("eps", eps, rows)
    clr = lr / (1.0 - b1**step)
    with _ieee():
        for p, g, m, u in rows:
            d = -g if maximize else g
            if weight_decay != 0.0:
                d = d + weight_decay * p
            mi = m + (1.0 - b1) * (d - m)
            ui = np.maximum(b2 * u, np.abs(d) + eps)
            m[...] = mi
            u[...] = ui
            p[...] = p - (clr * mi) / ui


def radam(
    params: ArrayOrList,
    grads: ArrayOrList,
    exp_avgs: ArrayOrList,
    exp_avg_sqs: ArrayOrList,
    *,
    step: int,
    lr: float = 1e-3,
    betas: Tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
    master_params: OptArrayOrList = None,
    stochastic_rounding: Optional[Tuple[int, int]] = None,
) -> None:
    r"""RAdam (Liu et al., 2020, "On the Variance of the Adaptive Learning Rate and
    Beyond"), in place, as torch.optim.RAdam. With :math:`g \leftarrow -g` when
    ``maximize``; weight decay coupled (``g += wd * p``) or decoupled
    (``p *= 1 - lr * wd``)::

        m = m + (1 - b1) * (g - m)          (torch's lerp)
        v = b2 * v + (1 - b2) * g * g
        bc1 = 1 - b1**step,  bc2 = 1 - b2**step
        rho_inf = 2 / (1 - b2) - 1,   rho_t = rho_inf - 2 * step * b2**step / bc2
        rho_t > 5:   rect = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
                     p = p - ((m / bc1) * lr) * (sqrt(bc2) / (sqrt(v) + eps)) * rect
        otherwise:   p = p - (m / bc1) * lr          (SGD with momentum while the variance is unreliable)

    Example:
      >>> import numpy as np
      >>> from deepoptim.reference import radam
      >>> p = np.ones(2); m, v = np.zeros(2), np.zeros(2)
      >>> radam(p, np.array([1.0, -2.0]), m, v, step=1, lr=0.1)
      >>> p
      array([0.9, 1.2])

    Args:
      master_params: for bfloat16/float16 ``params`` (and bfloat16 state): their float32
        master copies, updated in place; see :mod:`deepoptim.reference._lowp`.
      stochastic_rounding: for bfloat16 ``params``: ``(seed, step)`` to round them
        stochastically; see :mod:`deepoptim.reference._lowp`.
    """
    step, lr, b1, b2, eps, weight_decay = _checks.adam_like(step, lr, betas, eps, weight_decay)
    rows, _ = cast("_Rows", _checks.operands(
        [("params", True, True, None), ("grads", False, True, None), ("exp_avgs", True, True, None),
         ("exp_avg_sqs", True, True, None)],
        [params, grads, exp_avgs, exp_avg_sqs],
    ))
    _checks.eps_representable("eps", eps, rows)
    bc1, bc2 = 1.0 - b1**step, 1.0 - b2**step
    rho_inf = 2.0 / (1.0 - b2) - 1.0
    rho_t = rho_inf - 2.0 * step * b2**step / bc2
    rectify = rho_t > 5.0
    rect = math.sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t)) if rectify else 1.0
    coupled = weight_decay != 0.0 and not decoupled_weight_decay
    decoupled = weight_decay != 0.0 and decoupled_weight_decay
    with _ieee():
        for p, g, m, v in rows:
            d = -g if maximize else g
            pi = p * (1.0 - lr * weight_decay) if decoupled else p
            if coupled:
                d = d + weight_decay * pi
            mi = m + (1.0 - b1) * (d - m)
            vi = b2 * v + (1.0 - b2) * (d * d)
            m[...] = mi
            v[...] = vi
            step_ = (mi / bc1) * lr
            if rectify:
                p[...] = pi - (step_ * (math.sqrt(bc2) / (np.sqrt(vi) + eps))) * rect
            else:
                p[...] = pi - step_


def lion(
    params: ArrayOrList,
    grads: ArrayOrList,
    exp_avgs: ArrayOrList,
    *,
    lr: float = 1e-4,
    betas: Tuple[float, float] = (0.9, 0.99),
    weight_decay: float = 0.0,
    maximize: bool = False,
    master_params: OptArrayOrList = None,
    stochastic_rounding: Optional[Tuple[int, int]] = None,
) -> None:
    r"""Lion (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms"), in
    place, as the authors' reference code (google/automl) defines it. With
    :math:`g \leftarrow -g` when ``maximize``::

        p = p * (1 - lr * weight_decay)                  (decoupled decay)
        p = p - lr * sign(b1 * m + (1 - b1) * g)         (sign keeps 0 and NaN)
        m = b2 * m + (1 - b2) * g

    Every coordinate moves by exactly ``lr`` (or not at all): use a learning rate 3-10x
    smaller than AdamW's and a weight decay 3-10x larger, as the paper advises.

    Example:
      >>> import numpy as np
      >>> from deepoptim.reference import lion
      >>> p, m = np.ones(3), np.zeros(3)
      >>> lion(p, np.array([0.5, -2.0, 0.0]), m, lr=0.1)
      >>> p
      array([0.9, 1.1, 1. ])

    Args:
      master_params: for bfloat16/float16 ``params`` (and bfloat16 state): their float32
        master copies, updated in place; see :mod:`deepoptim.reference._lowp`.
      stochastic_rounding: for bfloat16 ``params``: ``(seed, step)`` to round them
        stochastically; see :mod:`deepoptim.reference._lowp`.
    """
    lr = _checks.real("lr", lr)
    b1, b2 = _checks.betas(betas)
    weight_decay = _checks.real("weight_decay", weight_decay)
    _checks.finite_ge("lr", lr, 0.0)
    _checks.finite_ge("weight_decay", weight_decay, 0.0)
    rows, _ = cast("_Rows", _checks.operands(
        [("params", True, True, None), ("grads", False, True, None), ("exp_avgs", True, True, None)],
        [params, grads, exp_avgs],
    ))
    with _ieee():
        for p, g, m in rows:
            d = -g if maximize else g
            u = b1 * m + (1.0 - b1) * d
            one = np.ones_like(u)
            s = np.where(u > 0, one, np.where(u < 0, -one, u))
            p[...] = p * (1.0 - lr * weight_decay) - lr * s
            m[...] = b2 * m + (1.0 - b2) * d


def schedule_free_adamw(
    params: ArrayOrList,
    grads: ArrayOrList,
    zs: ArrayOrList,
    exp_avg_sqs: ArrayOrList,
    *,
    step: int,
    lr: float = 0.0025,
    ckp1: float = 1.0,
    betas: Tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    master_params: OptArrayOrList = None,
    stochastic_rounding: Optional[Tuple[int, int]] = None,
) -> None:
    r"""Schedule-Free AdamW (Defazio et al., 2024, "The Road Less Scheduled", NeurIPS),
    in place, as the authors' reference implementation (facebookresearch/schedule_free,
    ``AdamWScheduleFree``) computes one step. The parameter holds :math:`y`, the point
    where the gradient is evaluated; ``zs`` the base iterates :math:`z`; the average
    :math:`x` (the point to evaluate the model at) is never stored:
    :math:`y = (1 - b_1) z + b_1 x`. With :math:`c` = ``ckp1``::

        v = v * b2 + ((1 - b2) * g) * g
        u = g / (sqrt(v / (1 - b2**step)) + eps)
        u = u + weight_decay * y                     (decay evaluated at y)
        y = lerp(y, z, c) + (lr * (b1 * (1 - c) - 1)) * u
        z = z - lr * u

    where ``lerp(y, z, c)`` is ``y + c*(z - y)`` for :math:`c < 0.5` and
    ``z - (z - y)*(1 - c)`` otherwise (torch's two forms). Both lines on :math:`y` are
    :math:`x_{t+1} = (1 - c) x_t + c z_{t+1}` rewritten in :math:`y`.

    Args:
      params: :math:`y` (updated).
      grads: the gradients at :math:`y`.
      zs: :math:`z` (updated; a copy of the parameters for a fresh start).
      exp_avg_sqs: :math:`v` (updated; zeros for a fresh start).
      step: the number of this update, counting from 1 (bias correction of :math:`v`).
      lr: the scheduled rate :math:`\gamma_t` (warmup applied), >= 0.
      ckp1: the averaging weight :math:`c_{t+1} = w_t / \sum_{i \le t} w_i` in [0, 1],
        with :math:`w_t = t^r \, \max_{i \le t}(\gamma_i)^{p}` (``r``, ``weight_lr_power``
        :math:`p`; :class:`deepoptim.optim.ScheduleFreeAdamW` keeps the sums).
      betas: :math:`(b_1, b_2)`, each in [0, 1).
      eps: > 0.
      weight_decay: >= 0.
      master_params: for bfloat16/float16 ``params`` (and bfloat16 state): their float32
        master copies, updated in place; see :mod:`deepoptim.reference._lowp`.
      stochastic_rounding: for bfloat16 ``params``: ``(seed, step)`` to round them
        stochastically; see :mod:`deepoptim.reference._lowp`.

    Example:
      >>> import numpy as np
      >>> from deepoptim.reference import schedule_free_adamw
      >>> p = np.ones(2); z, v = p.copy(), np.zeros(2)
      >>> schedule_free_adamw(p, np.array([1.0, -2.0]), z, v, step=1, lr=0.1, ckp1=1.0)
      >>> p.round(6), z.round(6)
      (array([0.9, 1.1]), array([0.9, 1.1]))
    """
    step, lr, b1, b2, eps, weight_decay = _checks.adam_like(step, lr, betas, eps, weight_decay)
    ckp1 = _checks.real("ckp1", ckp1)
    _checks.in_range("ckp1", ckp1, 0.0, 1.0, True)
    rows, _ = cast("_Rows", _checks.operands(
        [("params", True, True, None), ("grads", False, True, None), ("zs", True, True, None),
         ("exp_avg_sqs", True, True, None)],
        [params, grads, zs, exp_avg_sqs],
    ))
    _checks.eps_representable("eps", eps, rows)
    bc2 = 1.0 - b2**step
    y_coef = lr * (b1 * (1.0 - ckp1) - 1.0)
    with _ieee():
        for y, g, z, v in rows:
            vi = v * b2 + ((1.0 - b2) * g) * g
            u = g / (np.sqrt(vi / bc2) + eps)
            if weight_decay != 0.0:
                u = u + weight_decay * y
            if ckp1 < 0.5:
                yl = y + ckp1 * (z - y)
            else:
                yl = z - (z - y) * (1.0 - ckp1)
            v[...] = vi
            y[...] = yl + y_coef * u
            z[...] = z - lr * u


def adadelta(
    params: ArrayOrList,
    grads: ArrayOrList,
    square_avgs: ArrayOrList,
    acc_deltas: ArrayOrList,
    *,
    lr: float = 1.0,
    rho: float = 0.9,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    maximize: bool = False,
    master_params: OptArrayOrList = None,
    stochastic_rounding: Optional[Tuple[int, int]] = None,
) -> None:
    r"""Adadelta (Zeiler, 2012, "ADADELTA: An Adaptive Learning Rate Method"), in place,
    as torch.optim.Adadelta. With :math:`g \leftarrow -g` when ``maximize``::

        g = g + weight_decay * p
        sq = rho * sq + (1 - rho) * g * g
        delta = (sqrt(acc + eps) / sqrt(sq + eps)) * g
        acc = rho * acc + (1 - rho) * delta * delta
        p = p - lr * delta

    Example:
      >>> import numpy as np
      >>> from deepoptim.reference import adadelta
      >>> p, sq, acc = np.ones(1), np.zeros(1), np.zeros(1)
      >>> adadelta(p, np.array([1.0]), sq, acc, eps=1e-6)
      >>> p.round(6)
      array([0.996838])

    Args:
      master_params: for bfloat16/float16 ``params`` (and bfloat16 state): their float32
        master copies, updated in place; see :mod:`deepoptim.reference._lowp`.
      stochastic_rounding: for bfloat16 ``params``: ``(seed, step)`` to round them
        stochastically; see :mod:`deepoptim.reference._lowp`.
    """
    lr, rho = _checks.real("lr", lr), _checks.real("rho", rho)
    eps, weight_decay = _checks.real("eps", eps), _checks.real("weight_decay", weight_decay)
    _checks.finite_ge("lr", lr, 0.0)
    _checks.in_range("rho", rho, 0.0, 1.0, True)
    _checks.finite_gt("eps", eps, 0.0)
    _checks.finite_ge("weight_decay", weight_decay, 0.0)
    rows, _ = cast("_Rows", _checks.operands(
        [("params", True, True, None), ("grads", False, True, None), ("square_avgs", True, True, None),
         ("acc_deltas", True, True, None)],
        [params, grads, square_avgs, acc_deltas],
    ))
    _checks.eps_representable("eps", eps, rows)
    with _ieee():
        for p, g, sq, acc in rows:
            d = -g if maximize else g
            if weight_decay != 0.0:
                d = d + weight_decay * p
            si = rho * sq + (1.0 - rho) * (d * d)
            delta = (np.sqrt(acc + eps) / np.sqrt(si + eps)) * d
            sq[...] = si
            acc[...] = rho * acc + (1.0 - rho) * (delta * delta)
            p[...] = p - lr * delta


def rprop(
    params: ArrayOrList,
    grads: ArrayOrList,
    prevs: ArrayOrList,
    state_step_sizes: ArrayOrList,
    *,
    etas: Tuple[float, float] = (0.5, 1.2),
    step_sizes: Tuple[float, float] = (1e-6, 50.0),
    maximize: bool = False,
    master_params: OptArrayOrList = None,
    stochastic_rounding: Optional[Tuple[int, int]] = None,
) -> None:
    r"""Rprop (Riedmiller & Braun, 1993), in place, as torch.optim.Rprop. With
    :math:`g \leftarrow -g` when ``maximize``; ``state_step_sizes`` start at lr::

        s = etaplus if g * prev > 0,  etaminus if g * prev < 0,  1 if g * prev == 0
        step = clamp(step * s, min_step, max_step)
        g = 0 where s == etaminus          (no move after a sign change)
        p = p - sign(g) * step
        prev = g

    Args:
      etas: (etaminus, etaplus), 0 < etaminus < 1 < etaplus.
      step_sizes: (min_step, max_step), 0 <= min_step <= max_step.
      master_params: for bfloat16/float16 ``params`` (and bfloat16 state): their float32
        master copies, updated in place; see :mod:`deepoptim.reference._lowp`.
      stochastic_rounding: for bfloat16 ``params``: ``(seed, step)`` to round them
        stochastically; see :mod:`deepoptim.reference._lowp`.
    """
    etaminus, etaplus = _pair("etas", etas, "etaminus", "etaplus")
    step_min, step_max = _pair("step_sizes", step_sizes, "min_step", "max_step")
    if not (0.0 < etaminus < 1.0 < etaplus and math.isfinite(etaplus)):
        raise ValueError(f"etas must satisfy 0 < etaminus < 1 < etaplus (finite), got ({etaminus!r}, {etaplus!r})")
    _checks.finite_ge("min_step", step_min, 0.0)
    _checks.finite_ge("max_step", step_max, step_min)
    rows, _ = cast("_Rows", _checks.operands(
        [("params", True, True, None), ("grads", False, True, None), ("prevs", True, True, None),
         ("state_step_sizes", True, True, None)],
        [params, grads, prevs, state_step_sizes],
    ))
    with _ieee():
        for p, g, prev, step in rows:
            t = p.dtype.type
            d = -g if maximize else g
            gp = d * prev
            s = np.where(gp > 0, t(etaplus), np.where(gp < 0, t(etaminus), np.where(gp == 0, t(1), gp)))
            raw = step * s
            lo, hi = t(step_min), t(step_max)
            si = np.where(raw < lo, lo, np.where(raw > hi, hi, raw))
            gi = np.where(s == t(etaminus), t(0), d)
            sg = np.where(gi > 0, t(1), np.where(gi < 0, t(-1), gi))
            step[...] = si
            p[...] = p - sg * si
            prev[...] = gi


def nadam(
    params: ArrayOrList,
    grads: ArrayOrList,
    exp_avgs: ArrayOrList,
    exp_avg_sqs: ArrayOrList,
    mu_products: ArrayOrList,
    *,
    step: int,
    lr: float = 2e-3,
    betas: Tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum_decay: float = 4e-3,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
    master_params: OptArrayOrList = None,
    stochastic_rounding: Optional[Tuple[int, int]] = None,
) -> None:
    r"""NAdam (Dozat, 2016, "Incorporating Nesterov Momentum into Adam"), in place, as
    torch.optim.NAdam. With :math:`g \leftarrow -g` when ``maximize``; weight decay
    coupled (``g += wd * p``) or decoupled (``p *= 1 - lr * wd``, NAdamW)::

        mu_t  = b1 * (1 - 0.5 * 0.96**(step * momentum_decay))     (the momentum cache)
        mu_t1 = b1 * (1 - 0.5 * 0.96**((step + 1) * momentum_decay))
        mu_product = mu_product * mu_t      (in mu_product's own dtype, as torch's 0-d tensor)
        m = m + (1 - b1) * (g - m)          (torch's lerp)
        v = v * b2 + ((1 - b2) * g) * g
        denom = sqrt(v / (1 - b2**step)) + eps
        p = p + ((-lr * (1 - mu_t) / (1 - mu_product)) * g) / denom
        p = p + ((-lr * mu_t1 / (1 - mu_product * mu_t1)) * m) / denom

    Args:
      params: parameters (updated).
      grads: gradients.
      exp_avgs: :math:`m` (updated; zeros for a fresh start).
      exp_avg_sqs: :math:`v` (updated; zeros for a fresh start).
      mu_products: per tensor, one array of one float32 or float64 element (torch's 0-d
        state): the product of the momentum caches of the earlier steps, 1 for a fresh
        start (updated).
      step: the number of this update, counting from 1.
      lr: >= 0.
      betas: :math:`(b_1, b_2)`, each in [0, 1).
      eps: > 0.
      weight_decay: >= 0.
      momentum_decay: :math:`\psi`, >= 0.
      master_params: for bfloat16/float16 ``params`` (and bfloat16 state): their float32
        master copies, updated in place; see :mod:`deepoptim.reference._lowp`.
      stochastic_rounding: for bfloat16 ``params``: ``(seed, step)`` to round them
        stochastically; see :mod:`deepoptim.reference._lowp`.

    Example:
      >>> import numpy as np
      >>> from deepoptim.reference import nadam
      >>> p = np.ones(2); m, v, mp = np.zeros(2), np.zeros(2), np.ones((), np.float32)
      >>> nadam(p, np.array([1.0, -2.0]), m, v, mp, step=1, lr=0.1)
      >>> p.round(4)
      array([0.8944, 1.1056])
    """
    step, lr, b1, b2, eps, weight_decay = _checks.adam_like(step, lr, betas, eps, weight_decay)
    momentum_decay = _checks.real("momentum_decay", momentum_decay)
    _checks.finite_ge("momentum_decay", momentum_decay, 0.0)
    spec = [("params", True, True, None), ("grads", False, True, None), ("exp_avgs", True, True, None),
            ("exp_avg_sqs", True, True, None)]
    rows, list_form = cast("_Rows", _checks.operands(spec, [params, grads, exp_avgs, exp_avg_sqs]))
    (mps,) = _checks.scalar_states(spec, rows, list_form, [("mu_products", mu_products)])
    _checks.eps_representable("eps", eps, rows)
    mu = b1 * (1.0 - 0.5 * 0.96 ** (float(step) * momentum_decay))
    mu_next = b1 * (1.0 - 0.5 * 0.96 ** ((float(step) + 1.0) * momentum_decay))
    bc2 = 1.0 - b2 ** float(step)
    coupled = weight_decay != 0.0 and not decoupled_weight_decay
    decoupled = weight_decay != 0.0 and decoupled_weight_decay
    with _ieee():
        for (p, g, m, v), mp in zip(rows, mps):
            mu_product = (mp * mp.dtype.type(mu)).item()  # in the state's dtype, as torch's `mu_product *= mu`
            c_grad = (-lr * (1.0 - mu)) / (1.0 - mu_product)
            c_avg = (-lr * mu_next) / (1.0 - mu_product * mu_next)
            d = -g if maximize else g
            pi = p * (1.0 - lr * weight_decay) if decoupled else p
            if coupled:
                d = d + weight_decay * pi
            mi = m + (1.0 - b1) * (d - m)
            vi = v * b2 + ((1.0 - b2) * d) * d
            den = np.sqrt(vi / bc2) + eps
            m[...] = mi
            v[...] = vi
            pi = pi + (c_grad * d) / den
            p[...] = pi + (c_avg * mi) / den
            mp[...] = mu_product


def asgd(
    params: ArrayOrList,
    grads: ArrayOrList,
    axs: ArrayOrList,
    mus: ArrayOrList,
    etas: ArrayOrList,
    *,
    step: int,
    lr: float = 1e-2,
    lambd: float = 1e-4,
    alpha: float = 0.75,
    t0: float = 1e6,
    weight_decay: float = 0.0,
    maximize: bool = False,
    master_params: OptArrayOrList = None,
    stochastic_rounding: Optional[Tuple[int, int]] = None,
) -> None:
    r"""ASGD, averaged stochastic gradient descent (Polyak & Juditsky, 1992, "Acceleration
    of Stochastic Approximation by Averaging"), in place, as torch.optim.ASGD. With
    :math:`g \leftarrow -g` when ``maximize``, and ``eta``, ``mu`` this tensor's state::

        g = g + weight_decay * p
        p = p * (1 - lambd * eta)
        p = p + (-eta) * g
        ax = p                              if mu == 1
        ax = ax + (p - ax) * mu             otherwise
        eta = lr / (1 + lambd * lr * step)**alpha      (for the next step)
        mu = 1 / max(1, step - t0)

    The new ``eta`` and ``mu`` are rounded to float32 (torch builds them as tensors of
    its default dtype), then stored in their arrays' own dtype.

    Args:
      params: parameters (updated).
      grads: gradients.
      axs: the averaged parameters :math:`\bar{p}` (updated; zeros for a fresh start).
      mus: per tensor, one array of one float32 or float64 element (torch's 0-d state;
        updated): the averaging weight (1 for a fresh start).
      etas: per tensor, one array of one float32 or float64 element (torch's 0-d state;
        updated): the step size (lr for a fresh start).
      step: the number of this update, counting from 1.
      lr: a finite number >= 0.
      lambd: a finite number >= 0.
      alpha: a finite number >= 0.
      t0: a finite number >= 0.
      weight_decay: a finite number >= 0.
      master_params: for bfloat16/float16 ``params`` (and bfloat16 state): their float32
        master copies, updated in place; see :mod:`deepoptim.reference._lowp`.
      stochastic_rounding: for bfloat16 ``params``: ``(seed, step)`` to round them
        stochastically; see :mod:`deepoptim.reference._lowp`.

    Example:
      >>> import numpy as np
      >>> from deepoptim.reference import asgd
      >>> p, ax = np.ones(2), np.zeros(2)
      >>> mu, eta = np.ones((), np.float32), np.full((), 0.5, np.float32)
      >>> asgd(p, np.array([1.0, -2.0]), ax, mu, eta, step=1, lr=0.5, lambd=0.0)
      >>> p, ax
      (array([0.5, 2. ]), array([0.5, 2. ]))
    """
    step = _checks.step(step)
    lr = _checks.real("lr", lr)
    lambd = _checks.real("lambd", lambd)
    alpha = _checks.real("alpha", alpha)
    t0 = _checks.real("t0", t0)
    weight_decay = _checks.real("weight_decay", weight_decay)
    _checks.finite_ge("lr", lr, 0.0)
    _checks.finite_ge("lambd", lambd, 0.0)
    _checks.finite_ge("alpha", alpha, 0.0)
    _checks.finite_ge("t0", t0, 0.0)
    _checks.finite_ge("weight_decay", weight_decay, 0.0)
    spec = [("params", True, True, None), ("grads", False, True, None), ("axs", True, True, None)]
    rows, list_form = cast("_Rows", _checks.operands(spec, [params, grads, axs]))
    mu_arrs, eta_arrs = _checks.scalar_states(spec, rows, list_form, [("mus", mus), ("etas", etas)])
    s = float(step)
    with np.errstate(over="ignore"):  # IEEE, as the kernel's std::pow: a huge alpha gives inf, eta 0
        eta_next = float(np.float32(lr / np.power(np.float64(1.0 + lambd * lr * s), alpha)))
    mu_next = float(np.float32(1.0 / max(1.0, s - t0)))
    with _ieee():
        for (p, g, ax), mu_a, eta_a in zip(rows, mu_arrs, eta_arrs):
            eta, mu = eta_a.item(), mu_a.item()
            d = -g if maximize else g
            if weight_decay != 0.0:
                d = d + weight_decay * p
            pi = p * (1.0 - lambd * eta)
            pi = pi + (-eta) * d
            p[...] = pi
            ax[...] = ax + (pi - ax) * mu if mu != 1.0 else pi
            eta_a[...] = eta_next
            mu_a[...] = mu_next


def _pair(name: str, x: Any, first: str, second: str) -> Tuple[float, float]:
    if not (isinstance(x, (tuple, list)) and len(x) == 2):
        raise TypeError(f"{name} must be a pair ({first}, {second}), got {x!r}")
    return _checks.real(first, x[0]), _checks.real(second, x[1])


def _adapt_flags(adapt: Union[None, bool, Sequence[bool]], n: int, list_form: bool) -> List[bool]:
    if adapt is None:
        return [True] * n
    if not list_form:
        if not isinstance(adapt, bool):
            raise TypeError("adapt must be a bool or None for a single array")
        return [adapt]
    if not isinstance(adapt, (list, tuple)):
        raise TypeError("adapt must be a list/tuple of bools (one per tensor) or None")
    if len(adapt) != n:
        raise ValueError(f"adapt has {len(adapt)} entries but params has {n}")
    for t, a in enumerate(adapt):
        if not isinstance(a, bool):
            raise TypeError(f"adapt[{t}] must be a bool")
    return list(adapt)


def _trust_result(trust: List[float], list_form: bool) -> Union[float, npt.NDArray[np.float64]]:
    return np.array(trust, dtype=np.float64) if list_form else float(trust[0])


def _sq_norm(a: np.ndarray) -> float:
    # Squares in float64, summed in the kernels' order (see reference/_parallel.py).
    return blocked_sum(np.square(a.astype(np.float64)))


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
    adapt: Union[None, bool, Sequence[bool]] = None,
    master_params: OptArrayOrList = None,
    stochastic_rounding: Optional[Tuple[int, int]] = None,
) -> Union[float, npt.NDArray[np.float64]]:
    r"""LAMB (You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76
    minutes", ICLR 2020), in place. Per tensor::

        m = b1 * m + (1 - b1) * g;   v = b2 * v + (1 - b2) * g * g
        r = (m / bc1) / (sqrt(v / bc2) + eps) + wd * p       (bc as in adam)
        trust = ||p|| / ||r||      (1 if either norm is 0, or the tensor is excluded)
        p = p - lr * trust * r

    Norms are summed in float64. ``adapt`` (None, a bool, or one bool per tensor) set to
    False excludes a tensor (biases, normalization parameters) from the trust ratio and
    from weight decay.

    On bfloat16/float16 parameters or bfloat16/8-bit state the step is this one on the
    widened float32 values, rounded once at the end (:mod:`deepoptim.reference._lowp`):
    ``||p||`` is the norm of the float32 values the step updates (the master copies with
    ``master_params``), and ``r`` uses this step's float32 ``m`` and ``v``, not their
    rounding.

    Args:
      master_params, stochastic_rounding: for bfloat16/float16 ``params`` (and bfloat16 or
        8-bit state): float32 master copies updated in place, or ``(seed, step)`` to round
        bfloat16 params stochastically; see :mod:`deepoptim.reference._lowp`.

    Returns:
      The trust ratios: a float for one array, a float64 array for a list.
    """
    step, lr, b1, b2, eps, weight_decay = _checks.adam_like(step, lr, betas, eps, weight_decay)
    rows, list_form = cast("_Rows", _checks.operands(
        [("params", True, True, None), ("grads", False, True, None), ("exp_avgs", True, True, None),
         ("exp_avg_sqs", True, True, None)],
        [params, grads, exp_avgs, exp_avg_sqs],
    ))
    _checks.eps_representable("eps", eps, rows)
    flags = _adapt_flags(adapt, len(rows), list_form)
    bc1 = 1.0 - b1**step if bias_correction else 1.0
    bc2 = 1.0 - b2**step if bias_correction else 1.0
    inv_bc1, inv_bc2 = 1.0 / bc1, 1.0 / bc2
    trust: List[float] = []
    with _ieee():
        for (p, g, m, v), on in zip(rows, flags):
            wd = weight_decay if on else 0.0
            mi = b1 * m + (1.0 - b1) * g
            vi = b2 * v + (1.0 - b2) * (g * g)
            m[...] = mi
            v[...] = vi
            r = (mi * inv_bc1) / (np.sqrt(vi * inv_bc2) + eps) + wd * p
            pn, rn = math.sqrt(_sq_norm(p)), math.sqrt(_sq_norm(r))
            ratio = pn / rn if (on and pn > 0.0 and rn > 0.0) else 1.0
            p[...] = p - (lr * ratio) * r
            trust.append(ratio)
    return _trust_result(trust, list_form)


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
    adapt: Union[None, bool, Sequence[bool]] = None,
    master_params: OptArrayOrList = None,
    stochastic_rounding: Optional[Tuple[int, int]] = None,
) -> Union[float, npt.NDArray[np.float64]]:
    r"""LARS (You, Gitman & Ginsburg, "Large Batch Training of Convolutional Networks",
    2017), in place. Per tensor::

        local = eta * ||p|| / (||g|| + wd * ||p|| + eps)   (1 if either norm is 0, or excluded)
        v = mu * v + lr * local * (g + wd * p);   p = p - v
        (momentum == 0:  p = p - lr * local * (g + wd * p))

    ``eta`` is ``trust_coefficient``. ``adapt`` False excludes a tensor from the local
    learning rate and from weight decay.

    On bfloat16/float16 parameters or bfloat16/8-bit state the step is this one on the
    widened float32 values, rounded once at the end (:mod:`deepoptim.reference._lowp`):
    the norms are those of the widened gradients and of the float32 parameters the step
    updates (the master copies with ``master_params``).

    Args:
      master_params, stochastic_rounding: for bfloat16/float16 ``params`` (and bfloat16 or
        8-bit state): float32 master copies updated in place, or ``(seed, step)`` to round
        bfloat16 params stochastically; see :mod:`deepoptim.reference._lowp`.

    Returns:
      The local learning rates: a float for one array, a float64 array for a list.
    """
    lr, momentum = _checks.real("lr", lr), _checks.real("momentum", momentum)
    weight_decay = _checks.real("weight_decay", weight_decay)
    trust_coefficient = _checks.real("trust_coefficient", trust_coefficient)
    eps = _checks.real("eps", eps)
    _checks.finite_ge("lr", lr, 0.0)
    _checks.finite_ge("momentum", momentum, 0.0)
    _checks.finite_ge("weight_decay", weight_decay, 0.0)
    _checks.finite_gt("trust_coefficient", trust_coefficient, 0.0)
    _checks.finite_ge("eps", eps, 0.0)
    rows, list_form = _checks.operands(
        [("params", True, True, None), ("grads", False, True, None),
         ("momentum_buffers", True, momentum != 0.0, "momentum != 0")],
        [params, grads, momentum_buffers],
    )
    flags = _adapt_flags(adapt, len(rows), list_form)
    trust: List[float] = []
    with _ieee():
        for (p, g, buf), on in zip(rows, flags):
            assert p is not None and g is not None  # buf is None when momentum == 0
            pn, gn = math.sqrt(_sq_norm(p)), math.sqrt(_sq_norm(g))
            local = trust_coefficient * pn / (gn + weight_decay * pn + eps) if (on and pn > 0.0 and gn > 0.0) else 1.0
            wd = weight_decay if on else 0.0
            if buf is not None:
                v = momentum * buf + (lr * local) * (g + wd * p)
                buf[...] = v
                p[...] = p - v
            else:
                p[...] = p - (lr * local) * (g + wd * p)
            trust.append(local)
    return _trust_result(trust, list_form)


def add_penalty(grads: ArrayOrList, params: ArrayOrList, *, l1: float = 0.0, l2: float = 0.0) -> None:
    r"""Adds the gradient of the elastic-net penalty :math:`l_1 \|p\|_1 + \frac{l_2}{2}\|p\|_2^2`
    to ``grads``, in place (L1, L2 and elastic-net regularization; the elastic net is Zou &
    Hastie, 2005)::

        g = g + l1 * sign(p) + l2 * p          (sign(0) = 0)

    That article writes the elastic net as ``lambda/2 * (||p||^2 + ||p||_1)``: that is
    ``l2 = lambda, l1 = lambda / 2`` (its code's ``lambda * (p + sign(p))`` doubles the L1 part).
    """
    l1, l2 = _checks.real("l1", l1), _checks.real("l2", l2)
    _checks.finite_ge("l1", l1, 0.0)
    _checks.finite_ge("l2", l2, 0.0)
    rows, _ = cast("_Rows", _checks.operands([("grads", True, True, None), ("params", False, True, None)], [grads, params]))
    with _ieee():
        for g, p in rows:
            # sign by comparisons, as in the kernel: sign(NaN) = 0 (np.sign would give NaN)
            s = np.where(p > 0, 1, np.where(p < 0, -1, 0)).astype(p.dtype)
            g[...] = g + l1 * s + l2 * p


def _rounds_to_inf_in_float32(x: float) -> bool:
    with np.errstate(over="ignore"):
        return bool(np.isinf(np.float32(x)))


def soft_threshold(params: ArrayOrList, *, threshold: float) -> None:
    r"""The proximal step of the L1 penalty, in place::

        p = sign(p) * max(|p| - threshold, 0)

    With ``threshold = lr * l1`` after a plain gradient step this is proximal gradient
    descent (ISTA) on the L1-regularized loss: it sets small weights exactly to zero,
    which the subgradient form ``add_penalty(l1=...)`` never does.
    """
    threshold = _checks.real("threshold", threshold)
    _checks.finite_ge("threshold", threshold, 0.0)
    rows, _ = cast("_Rows", _checks.operands([("params", True, True, None)], [params]))
    if rows and rows[0][0].dtype == np.float32 and _rounds_to_inf_in_float32(threshold):
        # inf would make |p| - threshold NaN for an infinite p.
        raise ValueError(f"threshold must be finite in float32 (the params' dtype), got {threshold!r}")
    with _ieee():
        for (p,) in rows:
            mag = np.maximum(np.abs(p) - threshold, 0).astype(p.dtype)
            p[...] = np.where(p > 0, mag, np.where(p < 0, -mag, p))



def decay(params: ArrayOrList, *, lr: float, weight_decay: float) -> None:
    r"""Decoupled weight decay (Loshchilov & Hutter, 2019, "Decoupled Weight Decay
    Regularization"), in place::

        p = p * (1 - lr * weight_decay)      (the factor in double, rounded to the dtype once)

    The optimizers apply it before their update when ``decoupled_weight_decay=True``
    (Adam's kernel does it inside its own pass).
    """
    lr, weight_decay = _checks.real("lr", lr), _checks.real("weight_decay", weight_decay)
    _checks.finite_ge("lr", lr, 0.0)
    _checks.finite_ge("weight_decay", weight_decay, 0.0)
    rows, _ = cast("_Rows", _checks.operands([("params", True, True, None)], [params]))
    with _ieee():
        for (p,) in rows:
            p[...] = p * (1.0 - lr * weight_decay)

# The kernels of this family, in the order of the C++ file. deepoptim.functional binds each
# to the compiled function of the same name; a variant names the kernel it runs and the
# parameters it fixes.
KERNELS = ('sgd', 'adagrad', 'rmsprop', 'adam', 'adamw', 'adamax', 'radam', 'adadelta', 'rprop', 'nadam', 'asgd', 'lion', 'schedule_free_adamw', 'lamb', 'lars', 'add_penalty', 'soft_threshold', 'decay')
VARIANTS = {'adamw': ('adam', {'decoupled_weight_decay': True})}
for _name in KERNELS:  # flags are checked first, as the bindings parse them first
    globals()[_name] = _checks.with_flag_checks(globals()[_name])
# The optimizer steps also run on bfloat16/float16 parameters and bfloat16 or 8-bit state,
# with master weights or stochastic rounding (deepoptim.reference._lowp).
LOWP_KERNELS = ('sgd', 'adagrad', 'rmsprop', 'adam', 'adamw', 'adamax', 'radam', 'adadelta', 'rprop', 'nadam',
                'asgd', 'lion', 'schedule_free_adamw', 'lamb', 'lars')
for _name in LOWP_KERNELS:
    globals()[_name] = _lowp.lowp_step(globals()[_name])
if not TYPE_CHECKING:  # the package exports the kernels (type checkers see every public name)
    __all__ = list(KERNELS)
