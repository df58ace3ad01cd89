"""Optimizers with state over the C++ kernels, shaped like torch.optim.

The base class :class:`Optimizer` owns what every optimizer shares: the parameter
structure (a list of arrays, a dict name -> array, or a list of parameter-group dicts),
per-group hyperparameters and step counts, learning-rate schedules, the non-finite guard,
the gradient-norm-ratio learning rate, decoupled weight decay and L1 regularization, and
``state_dict``/``load_state_dict``. Each optimizer only says which state arrays it needs
and which kernel updates a group (one list-form call per group). No update math lives
here: it is in the kernels of :mod:`deepoptim.functional`. A step, or a state load, that
raises has changed nothing.

Example:
    >>> import numpy as np
    >>> from deepoptim.optim import Adam
    >>> w = np.ones(3, np.float32)
    >>> opt = Adam({"w": w}, lr=0.1)
    >>> opt.step({"w": np.array([1.0, -1.0, 0.0], np.float32)})
    True
    >>> w
    array([0.9, 1.1, 1. ], dtype=float32)
"""

from __future__ import annotations

import bisect
import functools
import math
import threading
import warnings
from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple, Type, TypeVar, Union, cast

import ml_dtypes
import numpy as np

from deepoptim import clip
from deepoptim import functional as F
from deepoptim.reference._lowp import Blockwise8, quantize

Array = np.ndarray
Params = Union[Sequence[Array], Mapping[str, Array], Sequence[Mapping[str, Any]]]
Schedule = Callable[[int], float]
#: Gradients in the structure of the params: a list (None for a parameter without a
#: gradient this step), a dict name -> array, or one such list or dict per group.
Grads = Union[Sequence[Optional[Array]], Mapping[str, Optional[Array]],
              Sequence[Union[Sequence[Optional[Array]], Mapping[str, Optional[Array]]]]]
_F = TypeVar("_F", bound=Callable[..., Any])

BFLOAT16: np.dtype = np.dtype(ml_dtypes.bfloat16)
_PARAM_DTYPES = (np.dtype(np.float32), np.dtype(np.float64), BFLOAT16, np.dtype(np.float16))
_16BIT = (BFLOAT16, np.dtype(np.float16))
_STATE_DTYPES: Dict[str, np.dtype] = {"float32": np.dtype(np.float32), "bfloat16": BFLOAT16, "int8": np.dtype(np.uint8)}
#: With state_dtype="int8", tensors smaller than this keep float32 state (as bitsandbytes:
#: their state is small, and their blocks would be mostly padding).
INT8_MIN_SIZE = 4096

# Keys of a group that are not hyperparameters: the parameters, their names, and the
# base class's bookkeeping (leading underscore: internal, never in a state_dict).
_GROUP_META = ("params", "names", "keyed", "step")


#: Every optimizer class by name, in definition order: what benchmarks, adapters and
#: tests iterate over, so a new optimizer needs no code of its own there.
REGISTRY: Dict[str, Type[Optimizer]] = {}


class NonFiniteGradients(UserWarning):
    """Reported (as a warning) when the non-finite guard skips a step."""


def _locked(method: _F) -> _F:
    """Runs the method under the optimizer's lock (one thread at a time)."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return cast(_F, wrapper)


def _is_group_list(params: object) -> bool:
    return isinstance(params, (list, tuple)) and len(params) > 0 and all(isinstance(g, Mapping) for g in params)


def _span(a: Array) -> Tuple[int, int]:
    start = a.__array_interface__["data"][0]
    return start, start + a.nbytes


def _state_arrays(a: Any) -> List[Array]:
    """The arrays holding one state value: itself, or an 8-bit state's codes and absmax."""
    return [a.codes, a.absmax] if isinstance(a, Blockwise8) else [a]


def _state_copy(a: Any) -> Any:
    """A state value for a state_dict: an array copy, or an 8-bit state as a plain dict."""
    if isinstance(a, Blockwise8):
        return {"codes": a.codes.copy(), "absmax": a.absmax.copy(), "signed": a.signed}
    return a.copy()


def _check_param(a: object, name: str) -> Array:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"parameter {name} must be a numpy.ndarray, got {type(a).__name__}")
    if isinstance(a, np.ma.MaskedArray):
        raise TypeError(f"parameter {name} is a numpy.ma.MaskedArray, whose mask the kernels cannot honour")
    if a.dtype not in _PARAM_DTYPES or not a.dtype.isnative:
        raise TypeError(f"parameter {name} must have dtype float32, float64, bfloat16 or float16, got {a.dtype}")
    if not a.flags.c_contiguous:
        raise ValueError(f"parameter {name} must be C-contiguous (it is updated in place)")
    if not a.flags.aligned:
        raise ValueError(f"parameter {name} is not aligned to its itemsize")
    if not a.flags.writeable:
        raise ValueError(f"parameter {name} is read-only, but it is updated in place")
    return a


def _is_int(x: object) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _is_real(x: object) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


class Optimizer:
    r"""Base class: everything an optimizer shares, once.

    A subclass says only which state it keeps and which kernel it calls:

    - ``_state_names(group)``: the names of its per-parameter state arrays (a pure
      function of the group's hyperparameters); ``_init_state(group, name, param)`` their
      initial value (zeros unless overridden); ``_nonnegative_state``: names whose values
      are never negative (checked by :meth:`load_state_dict`).
    - ``_kernel(hp, idx, params, grads, states, lr, step)``: one list-form kernel call on
      the parameters ``idx`` of a group. ``hp`` holds the group's hyperparameters, with
      ``weight_decay`` already set to what the kernel must apply (0 where the base class
      applied decoupled decay itself); ``states`` maps each state name to the arrays of
      those parameters.
    - ``_scalar_state``: names among the state whose value is one number per parameter
      (a 0-d float32 array, as torch's 0-d state tensors), not an array like the parameter.
    - ``_kernel_decouples = True`` where the kernel applies decoupled decay itself.

    The base class owns the parameter structure (a list of arrays, a dict name -> array,
    or a list of parameter-group dicts), per-group hyperparameters and step counts,
    learning-rate schedules, the non-finite guard, the gradient-norm-ratio learning rate,
    decoupled weight decay and L1 regularization, and ``state_dict``/``load_state_dict``.

    Args:
      params: a list of arrays, a dict name -> array, or a list of parameter-group dicts
        (``{"params": list-or-dict, **hyperparameters}``) with per-group hyperparameters.
      defaults: the optimizer's hyperparameters; ``lr`` may be a float or a schedule
        (a callable ``step -> lr``, see :mod:`deepoptim.schedules`).
      decoupled_weight_decay: ``p *= 1 - lr*weight_decay`` before the update instead of
        adding ``weight_decay*p`` to the gradient (Loshchilov & Hutter, 2019).
      l1: L1 penalty strength (``g += l1*sign(p)``, or a proximal soft-threshold after the
        update with ``l1_mode="proximal"``); with ``weight_decay`` an elastic net.
      skip_nonfinite: check all gradients first (one C++ pass) and skip the step, leaving
        parameters and state untouched, if any is NaN or inf; ``state["skipped_steps"]``
        counts the skips.
      grad_norm_ratio: scale the learning rate by ``max(|g_t|^2, eps) / max(|g_{t-1}|^2, eps)``
        (a gradient-norm-ratio rule; global norm over all gradients).
      state_dtype: ``"float32"`` or ``"bfloat16"`` for the state arrays of float32,
        bfloat16 and float16 parameters; None (default) is float32 (float64 for float64
        parameters, whose state is always float64). bfloat16 state halves the state's
        bytes; the update still runs in float32 (see :mod:`deepoptim.reference._lowp`).
      master_weights: for bfloat16/float16 parameters, keep a float32 copy in the state
        (``master_param``), update it, and write the parameter as its rounding in the same
        pass (the ZeRO-Offload pattern): updates far below the parameter's resolution are
        kept.
      stochastic_rounding: for bfloat16 parameters without master weights, round each
        updated parameter up with probability equal to its distance from the bfloat16
        below (Gupta et al. 2015), so that small updates survive on average. The random
        bits are keyed by (``seed``, group, step, element): reproducible from a checkpoint
        and the same for any thread count.
      seed: the stochastic-rounding seed, an int in [0, 2**64).
      int8_min_size: with ``state_dtype="int8"``, parameters with fewer elements keep
        float32 state (default 4096, as bitsandbytes' ``min_8bit_size``).

    Every step is all or nothing: gradients, hyperparameters and learning rates of every
    group are checked before any array is written, so a step that raises has changed
    nothing (parameters, state, step counts, the gradient-norm history).
    """

    _kernel_decouples = False
    #: True where the kernel takes float32/float64 arrays only (Muon, Adafactor): a group of
    #: bfloat16/float16 parameters or bfloat16/8-bit state is stepped on float32 working
    #: copies (or the master weights), then rounded back (:meth:`_widened_step`).
    _widened = False
    _nonnegative_state: Tuple[str, ...] = ()
    #: names of per-parameter state that is one number, kept as a 0-d float32 array (torch
    #: keeps it as a 0-d tensor of its default dtype): NAdam's mu_product, ASGD's eta and mu.
    _scalar_state: Tuple[str, ...] = ()
    #: the :mod:`deepoptim.functional` kernel this optimizer calls (twin: same name in
    #: :mod:`deepoptim.reference`); a class that sets it is listed in :data:`REGISTRY`.
    kernel: str = ""
    #: the torch.optim class this optimizer equals (same arguments, defaults, trajectory).
    torch_name: Optional[str] = None
    #: a representative configuration (benchmarks time it).
    example: Dict[str, Any] = {}

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.__dict__.get("kernel"):
            REGISTRY[cls.__name__] = cls

    def __init__(
        self,
        params: Params,
        defaults: Dict[str, Any],
        *,
        decoupled_weight_decay: bool = False,
        l1: float = 0.0,
        l1_mode: str = "subgradient",
        skip_nonfinite: bool = False,
        grad_norm_ratio: bool = False,
        grad_norm_ratio_eps: float = 1e-12,
        state_dtype: Optional[str] = None,
        master_weights: bool = False,
        stochastic_rounding: bool = False,
        seed: int = 0,
        int8_min_size: int = INT8_MIN_SIZE,
    ) -> None:
        self.defaults = dict(defaults, decoupled_weight_decay=decoupled_weight_decay, l1=l1, l1_mode=l1_mode,
                             state_dtype=state_dtype, master_weights=master_weights,
                             stochastic_rounding=stochastic_rounding, seed=seed, int8_min_size=int8_min_size)
        self.skip_nonfinite = bool(skip_nonfinite)
        self.grad_norm_ratio = bool(grad_norm_ratio)
        if not (_is_real(grad_norm_ratio_eps) and grad_norm_ratio_eps > 0 and math.isfinite(grad_norm_ratio_eps)):
            raise ValueError(f"grad_norm_ratio_eps must be a finite number > 0, got {grad_norm_ratio_eps!r}")
        self.grad_norm_ratio_eps = float(grad_norm_ratio_eps)
        # Steps, loads and new groups from several Python threads run one at a time, each
        # whole: the kernels release the GIL, so two steps could otherwise interleave.
        self._lock = threading.RLock()
        self.param_groups: List[Dict[str, Any]] = []
        self.state: Dict[str, Any] = {"skipped_steps": 0, "prev_grad_sq_norm": None}
        self._written: Tuple[List[int], List[int], List[str]] = ([], [], [])
        self._structure = "groups" if _is_group_list(params) else ("dict" if isinstance(params, Mapping) else "list")
        groups = (cast("List[Mapping[str, Any]]", list(params)) if self._structure == "groups"
                  else [{"params": params}])
        if not groups:
            raise ValueError("params is empty")
        for g in groups:
            self.add_param_group(g)

    # ------------------------------------------------------------ parameter groups
    @_locked
    def add_param_group(self, group: Mapping[str, Any]) -> None:
        """Adds a parameter group (``{"params": list-or-dict, **hyperparameters}``);
        missing hyperparameters take the optimizer's defaults. Once there are several
        groups, :meth:`step` takes one gradient entry (list or dict) per group. A
        parameter may not overlap any other parameter, in this group or another."""
        if not isinstance(group, Mapping) or "params" not in group:
            raise TypeError("a parameter group must be a dict with a 'params' entry")
        unknown = set(group) - set(self.defaults) - {"params"}
        if unknown:
            raise ValueError(f"unknown hyperparameters in parameter group: {sorted(unknown)}")
        gi = len(self.param_groups)
        ps = group["params"]
        if isinstance(ps, np.ndarray):
            raise TypeError("params must be a list or dict of arrays, not a single array (wrap it in a list)")
        if isinstance(ps, Mapping):
            names, arrays = [str(k) for k in ps], list(ps.values())
            keyed = True
        else:
            arrays = list(ps)
            names = [f"{gi}.{i}" if self._structure == "groups" or gi > 0 else str(i) for i in range(len(arrays))]
            keyed = False
        if not arrays:
            raise ValueError(f"parameter group {gi} has no parameters")
        arrays = [_check_param(a, n) for a, n in zip(arrays, names)]
        if len({a.dtype for a in arrays}) != 1:
            raise TypeError(f"parameter group {gi} mixes dtypes; one kernel call per group needs one dtype")
        taken = {n for g in self.param_groups for n in g["names"]}
        dup = [n for n in names if n in taken]
        if keyed and dup:
            raise ValueError(f"parameter name {dup[0]!r} is used by another group")
        self._refuse_overlap(
            [(n, _span(a)) for g in self.param_groups for n, a in zip(g["names"], g["params"])]
            + [(n, _span(a)) for n, a in zip(names, arrays)]
        )
        hyper = {**self.defaults, **{k: v for k, v in group.items() if k != "params"}}
        g: Dict[str, Any] = {"params": arrays, "names": names, "keyed": keyed, **hyper, "step": 0}
        self._prepare_group(g)
        self._check_group(g, f"parameter group {gi}")
        g["_state"] = {name: [self._new_state(g, name, a) for a in arrays] for name in self._all_state_names(g)}
        g["_steps"] = [0] * len(arrays)  # per-parameter step counts (a parameter without a gradient keeps its own)
        g["_scratch"] = None
        self.param_groups.append(g)
        if len(self.param_groups) > 1:
            self._structure = "groups"
        self._index_written()

    @staticmethod
    def _refuse_overlap(named_spans: List[Tuple[str, Tuple[int, int]]]) -> None:
        spans = sorted((s for s in named_spans if s[1][1] > s[1][0]), key=lambda s: s[1][0])
        for (n1, (_, e1)), (n2, (b2, _)) in zip(spans, spans[1:]):
            if b2 < e1:
                raise ValueError(f"parameters {n1} and {n2} share memory; each parameter must be distinct")

    def _index_written(self) -> None:
        # Every array a step writes (parameters and state), sorted by address: a gradient
        # is checked against it in O(log n), before anything is written. The arrays are
        # allocated once and updated in place ever after, so the index stays valid.
        spans = []
        for g in self.param_groups:
            for i, (n, p) in enumerate(zip(g["names"], g["params"])):
                spans.append((_span(p), f"parameter {n}"))
                for name, arrs in g["_state"].items():
                    spans += [(_span(a), f"state {name} of parameter {n}") for a in _state_arrays(arrs[i])]
        spans = sorted((s for s in spans if s[0][1] > s[0][0]), key=lambda s: s[0][0])
        self._written = ([s[0][0] for s in spans], [s[0][1] for s in spans], [s[1] for s in spans])

    # ------------------------------------------------------------ subclass interface
    def _prepare_group(self, group: Dict[str, Any]) -> None:
        """Derives per-group settings (e.g. LAMB's adapt flags) once, when the group is added."""

    def _state_names(self, group: Mapping[str, Any]) -> List[str]:
        """Names of the per-parameter state arrays this group needs (no side effects)."""
        return []

    def _init_state(self, group: Mapping[str, Any], name: str, param: Array) -> Array:
        return np.zeros_like(param)

    def _state_shape(self, group: Mapping[str, Any], name: str, param: Array) -> Tuple[int, ...]:
        """The shape of a state array (the parameter's, unless the optimizer keeps
        something smaller, as Adafactor's factors)."""
        return tuple(param.shape)

    # ------------------------------------------------------------ low precision
    @staticmethod
    def _state_dtype(group: Mapping[str, Any], param_dtype: np.dtype) -> np.dtype:
        """The dtype of the group's state arrays (module docstring: ``state_dtype``)."""
        if param_dtype == np.float64:
            return np.dtype(np.float64)
        return _STATE_DTYPES[group["state_dtype"] or "float32"]

    @staticmethod
    def _is_int8(group: Mapping[str, Any], param: Array) -> bool:
        """Whether a parameter's state is kept in 8 bits (state_dtype="int8", large enough)."""
        int8: bool = group["state_dtype"] == "int8" and param.size >= group["int8_min_size"]
        return int8

    @staticmethod
    def _uses_master(group: Mapping[str, Any]) -> bool:
        return bool(group["master_weights"]) and group["params"][0].dtype in _16BIT

    def _all_state_names(self, group: Mapping[str, Any]) -> List[str]:
        """The optimizer's state names, and ``master_param`` where master weights are kept."""
        return self._state_names(group) + (["master_param"] if self._uses_master(group) else [])

    def _new_state(self, group: Mapping[str, Any], name: str, param: Array) -> Union[Array, Blockwise8]:
        """The initial value of a state array, in the state's dtype (a per-tensor scalar
        state stays a 0-d float32 array; a master copy is the float32 parameter)."""
        if name == "master_param":
            return param.astype(np.float32)
        a = self._init_state(group, name, param)
        if name in self._scalar_state:
            return a
        if group["state_dtype"] == "int8":
            if self._is_int8(group, param):
                return Blockwise8.from_float(a.astype(np.float32), signed=name not in self._nonnegative_state)
            return a.astype(np.float32)
        # Widened from a 16-bit parameter exactly, or rounded to nearest even to bfloat16.
        return a.astype(self._state_dtype(group, param.dtype), copy=False)

    def _lowp_args(self, g: Mapping[str, Any], gi: int, idx: List[int], states: Mapping[str, List[Array]]) -> Dict[str, Any]:
        """The kernel's master_params / stochastic_rounding arguments for one call."""
        if self._uses_master(g):
            return {"master_params": states["master_param"]}
        if g["stochastic_rounding"] and g["params"][0].dtype == BFLOAT16:
            # One Philox key per (seed, group, first parameter of the call), counter by the
            # group's step: element j of the call draws anew at every step.
            key = (int(g["seed"]) + 0x9E3779B97F4A7C15 * (gi + 1) + 0xBF58476D1CE4E5B9 * idx[0]) % 2**64
            return {"stochastic_rounding": (key, g["step"] + 1)}
        return {}

    def _widened_step(self, g: Mapping[str, Any], gi: int, hp: Dict[str, Any], idx: List[int], params: List[Array],
                      grads: List[Array], states: Dict[str, List[Array]], lr: float, step: int) -> Any:
        """A step of a ``_widened`` optimizer on 16-bit parameters or bfloat16/8-bit state:
        "widen, run the float32 step, round", the definition the elementwise kernels
        compute in one pass (:mod:`deepoptim.reference._lowp`), here with float32 copies::

            p32 = master (master_weights) or float32(p);  g32 = float32(g)
            s32 = float32(s) (bfloat16 state) or its dequantized codes (8-bit state)
            <the float32 kernel on p32, g32 and s32>
            s = round_nearest_even(s32) or its 8-bit codes (quantize, as the kernels do)
            p = round_nearest_even(p32), or round_stochastic(p32) (stochastic_rounding)

        The stochastic draws are keyed by (seed, group, first parameter, step), element j
        of the call using draw j (:func:`deepoptim.functional.cast_stochastic`). The 8-bit
        state goes through :class:`deepoptim.reference._lowp.Blockwise8`'s dequantize and
        quantize, the specification the kernels' fused quantizer equals bit for bit."""
        master = self._uses_master(g)
        lowp_params = params[0].dtype in _16BIT
        if master:
            work = list(states["master_param"])
        else:
            work = [p.astype(np.float32) for p in params] if lowp_params else list(params)
        kernel_states: Dict[str, List[Array]] = {}
        narrowed: List[Tuple[Any, Array]] = []  # (stored state, its float32 copy)
        for name, arrs in states.items():
            if name == "master_param":
                continue
            lst = []
            for a in arrs:
                if isinstance(a, Blockwise8) or a.dtype == BFLOAT16:
                    w = a.dequantize() if isinstance(a, Blockwise8) else a.astype(np.float32)
                    narrowed.append((a, w))
                    a = w
                lst.append(a)
            kernel_states[name] = lst
        g32 = [a.astype(np.float32) for a in grads] if lowp_params else grads
        result = self._kernel(hp, idx, work, g32, kernel_states, lr, step)
        for a, w in narrowed:
            if isinstance(a, Blockwise8):
                a.codes[...], a.absmax[...] = quantize(w, a.signed)
            else:
                F.cast(w, a)
        if not lowp_params:
            return result
        if g["stochastic_rounding"] and not master:
            key = self._lowp_args(g, gi, idx, states)["stochastic_rounding"]
            F.cast_stochastic(work, params, seed=(key[0] + 0xD1B54A32D192ED03 * key[1]) % 2**64)
        else:
            F.cast(work, params)
        return result

    def _kernel(self, hp: Mapping[str, Any], idx: List[int], params: List[Array], grads: List[Array],
                states: Dict[str, List[Array]], lr: float, step: int) -> Any:
        """One kernel call updating ``params`` (the parameters ``idx`` of a group) in place."""
        raise NotImplementedError

    def _after_kernel(self, group: Dict[str, Any], idx: List[int], result: Any) -> None:
        """Receives what the kernel returned for the parameters ``idx`` (e.g. trust ratios)."""

    def _advance(self, group: Mapping[str, Any], lr: float) -> Dict[str, Any]:
        """The per-group values a step moves on besides its step count (Schedule-Free's
        averaging sums), computed from the group as it is before the step (``lr``: the
        step's learning rate); the step stores them once the group's kernels have run."""
        return {}

    def _refuse_step(self, groups: Sequence[Mapping[str, Any]]) -> None:
        """Raises (before anything is written) where the optimizer's mode forbids a step."""

    # ------------------------------------------------------------ validation
    def _validate_hyper(self, h: Mapping[str, Any], where: str) -> None:
        # Each hyperparameter keeps the kind of its default: a flag stays a bool, a
        # number a (non-bool) real, a name a str; the kernel's dry run checks the ranges.
        for k, default in self.defaults.items():
            v: Any = h.get(k)  # anything a user set
            if k == "lr":
                if not callable(v) and not (_is_real(v) and math.isfinite(v) and v >= 0):
                    raise ValueError(f"{where}: lr must be a finite number >= 0 or a schedule, got {v!r}")
            elif isinstance(default, bool):
                if not isinstance(v, (bool, np.bool_)):
                    raise TypeError(f"{where}: {k} must be a bool, got {v!r}")
            elif _is_real(default):
                if not _is_real(v):
                    raise TypeError(f"{where}: {k} must be a number, got {v!r}")
            elif isinstance(default, str):
                if not isinstance(v, str):
                    raise TypeError(f"{where}: {k} must be a str, got {v!r}")
            elif isinstance(default, tuple):  # an entry whose default is None may also be None
                if not (isinstance(v, (tuple, list)) and len(v) == len(default)
                        and all(_is_real(x) or (x is None and d is None) for x, d in zip(v, default))):
                    raise TypeError(f"{where}: {k} must be a tuple of {len(default)} numbers, got {v!r}")
        l1 = h["l1"]
        if not (l1 >= 0 and math.isfinite(l1)):
            raise ValueError(f"{where}: l1 must be a finite number >= 0, got {l1!r}")
        if h["l1_mode"] not in ("subgradient", "proximal"):
            raise ValueError(f"{where}: l1_mode must be 'subgradient' or 'proximal', got {h['l1_mode']!r}")

    def _kernel_hyper(self, g: Mapping[str, Any]) -> Dict[str, Any]:
        # Decoupled decay is applied by the base class unless the kernel does it: then the
        # kernel must see no weight decay of its own (applied once, never twice).
        hp = dict(g)
        if g["decoupled_weight_decay"] and not self._kernel_decouples:
            hp["weight_decay"] = 0.0
        return hp

    def _check_group(self, g: Mapping[str, Any], where: str) -> None:
        """Every hyperparameter of ``g`` as the kernel will see it: the kernel itself checks
        them on zero-size arrays of the group's dtype, writing nothing."""
        self._validate_hyper(g, where)
        lr = self._group_lr(g, g["step"] + 1)
        if not (math.isfinite(lr) and lr >= 0):
            raise ValueError(f"{where}: learning rate must be finite and >= 0, got {lr!r}")
        pdt = g["params"][0].dtype
        empty = np.empty(0, np.float32 if self._widened and pdt in _16BIT else pdt)
        self._check_lowp(g, where)
        names = self._all_state_names(g)
        if "_state" in g and set(g["_state"]) != set(names):
            raise ValueError(f"{where}: the hyperparameters need state {sorted(names)} but the group keeps "
                             f"{sorted(g['_state'])}; options that change the state (momentum, amsgrad, centered, "
                             "master_weights) cannot change after construction")
        sdt = self._state_dtype(g, pdt)
        if "_state" in g:
            kept = {np.dtype(np.uint8) if isinstance(a, Blockwise8) else a.dtype
                    for n, arrs in g["_state"].items() if n not in self._scalar_state and n != "master_param"
                    for a in (arrs or []) if a is not None}
            if g["state_dtype"] == "int8":  # 8-bit, and float32 for the small tensors
                kept -= {np.dtype(np.float32)}
            if kept and kept != {sdt}:
                raise ValueError(f"{where}: state_dtype asks for {sdt} state but the group keeps {sorted(map(str, kept))}; "
                                 "state_dtype cannot change after construction")
        try:
            # A zero-size stand-in for parameter 0, so the dtype-dependent checks run too.
            # An empty tensor keeps float32 8-bit state; a widened kernel sees float32 state.
            dry_dt = np.float32 if g["state_dtype"] == "int8" or (self._widened and pdt != np.float64) else sdt
            dry = {n: [self._init_state(g, n, empty) if n in self._scalar_state
                       else np.empty(0, np.float32 if n == "master_param" else dry_dt)] for n in names}
            hp = self._kernel_hyper(g)
            hp["_lowp"] = self._lowp_args(g, 0, [0], dry)
            self._kernel(hp, [0], [empty], [empty], dry, lr, 1)
        except (TypeError, ValueError) as e:
            raise type(e)(f"{where}: {e}") from None

    def _check_lowp(self, g: Mapping[str, Any], where: str) -> None:
        sd, pdt = g["state_dtype"], g["params"][0].dtype
        if sd is not None and sd not in _STATE_DTYPES:
            raise ValueError(f"{where}: state_dtype must be None, 'float32', 'bfloat16' or 'int8', got {sd!r}")
        if sd in ("bfloat16", "int8") and pdt == np.float64:
            raise ValueError(f"{where}: state_dtype={sd!r} does not fit float64 parameters (their state is float64)")
        for k in ("master_weights", "stochastic_rounding"):
            if not isinstance(g[k], (bool, np.bool_)):
                raise TypeError(f"{where}: {k} must be a bool, got {g[k]!r}")
        if g["master_weights"] and pdt not in _16BIT:
            raise ValueError(f"{where}: master_weights=True keeps float32 copies of bfloat16 or float16 parameters; "
                             f"these are {pdt}")
        if g["stochastic_rounding"] and (pdt != BFLOAT16 or g["master_weights"]):
            raise ValueError(f"{where}: stochastic_rounding=True rounds bfloat16 parameters without master weights; "
                             f"these are {pdt}" + (" with master_weights=True" if g["master_weights"] else ""))
        if not (_is_int(g["seed"]) and 0 <= g["seed"] < 2**64):
            raise ValueError(f"{where}: seed must be an int in [0, 2**64), got {g['seed']!r}")
        if not (_is_int(g["int8_min_size"]) and g["int8_min_size"] >= 0):
            raise ValueError(f"{where}: int8_min_size must be an int >= 0, got {g['int8_min_size']!r}")
        if pdt in _16BIT:
            wd = g.get("weight_decay", 0.0)
            if g["decoupled_weight_decay"] and wd and not self._kernel_decouples:
                raise ValueError(f"{where}: decoupled_weight_decay with {pdt} parameters needs an optimizer whose "
                                 "kernel decouples it (AdamW, NAdam, RAdam, Lion, ...)")
            if g["l1"]:
                raise ValueError(f"{where}: l1 regularization takes float32 or float64 parameters, not {pdt}")
            if self.grad_norm_ratio:
                raise ValueError(f"{where}: grad_norm_ratio takes float32 or float64 gradients, not {pdt}")

    # ------------------------------------------------------------ learning rate
    @property
    def lr(self) -> List[float]:
        """The learning rate each group's next step will use (schedules evaluated)."""
        return [self._group_lr(g, g["step"] + 1) for g in self.param_groups]

    @lr.setter
    def lr(self, value: Union[float, Schedule]) -> None:
        for gi, g in enumerate(self.param_groups):
            self._validate_hyper(dict(g, lr=value), f"parameter group {gi}")
        for g in self.param_groups:
            g["lr"] = value

    @staticmethod
    def _group_lr(group: Mapping[str, Any], step: int) -> float:
        lr = group["lr"]
        return float(lr(step - 1)) if callable(lr) else float(lr)

    # ------------------------------------------------------------ stepping
    def _grads_by_group(self, grads: Grads) -> List[List[Optional[Array]]]:
        """Grads in the params' structure -> one list per group (None: no gradient this
        step). Checks every gradient as the kernels will (type, shape, dtype, contiguity,
        alignment, no overlap with any array a step writes) before anything is updated,
        and names the parameter it belongs to."""
        s = self._structure
        if s == "groups" and isinstance(grads, Mapping) and all(g["keyed"] for g in self.param_groups):
            # One flat dict name -> grad (e.g. model.gradients()) for named groups: split by name.
            names = [n for g in self.param_groups for n in g["names"]]
            missing = [n for n in names if n not in grads]
            extra = sorted(set(grads) - set(names))
            if missing or extra:
                raise ValueError(f"grads: missing {missing}, unexpected {extra}")
            grads = [{n: grads[n] for n in g["names"]} for g in self.param_groups]
        if s == "groups":
            if not isinstance(grads, (list, tuple)) or len(grads) != len(self.param_groups):
                raise ValueError(
                    f"grads must be a list with one entry per parameter group ({len(self.param_groups)}), "
                    f"got {type(grads).__name__}" + (f" of length {len(grads)}" if isinstance(grads, (list, tuple)) else "")
                )
            per = list(grads)
        else:
            per = [grads]
        starts, ends, labels = self._written
        out = []
        for gi, (g, gr) in enumerate(zip(self.param_groups, per)):
            if g["keyed"]:
                if not isinstance(gr, Mapping):
                    raise TypeError(f"grads for group {gi} must be a dict like its params, got {type(gr).__name__}")
                missing = [n for n in g["names"] if n not in gr]
                extra = [k for k in gr if k not in set(g["names"])]
                if missing or extra:
                    raise ValueError(f"grads for group {gi}: missing {missing}, unexpected {extra}")
                lst = [gr[n] for n in g["names"]]
            else:
                if isinstance(gr, np.ndarray) or not isinstance(gr, (list, tuple)):
                    raise TypeError(f"grads for group {gi} must be a list like its params, got {type(gr).__name__}")
                if len(gr) != len(g["params"]):
                    raise ValueError(f"grads for group {gi} has {len(gr)} arrays, params has {len(g['params'])}")
                lst = list(gr)
            for n, p, a in zip(g["names"], g["params"], lst):
                if a is None:
                    continue
                if not isinstance(a, np.ndarray):
                    raise TypeError(f"gradient {n} must be a numpy.ndarray or None, got {type(a).__name__}")
                if isinstance(a, np.ma.MaskedArray):
                    raise TypeError(f"gradient {n} is a numpy.ma.MaskedArray, whose mask the kernels cannot honour")
                if a.shape != p.shape:
                    raise ValueError(f"gradient {n} has shape {a.shape}, parameter has {p.shape}")
                if a.dtype != p.dtype:
                    raise TypeError(f"gradient {n} has dtype {a.dtype}, parameter has {p.dtype}")
                if not a.flags.c_contiguous:
                    raise ValueError(f"gradient {n} must be C-contiguous")
                if not a.flags.aligned:
                    raise ValueError(f"gradient {n} is not aligned to its itemsize")
                b, e = _span(a)
                if e > b:
                    k = bisect.bisect_left(starts, e) - 1  # the last written array starting before e
                    if k >= 0 and ends[k] > b:
                        raise ValueError(f"gradient {n} shares memory with {labels[k]}, which the step writes")
            out.append(lst)
        return out

    @_locked
    def step(self, grads: Grads) -> bool:
        """Applies one update to every parameter that has a gradient. ``grads`` has the
        structure of the params (list, dict, or one list/dict per group; with named groups
        also one flat dict); ``None`` for a parameter's gradient skips it this step (its
        state and step count untouched, as torch.optim does for ``grad is None``).

        Returns False if the non-finite guard skipped the step (parameters and state
        untouched), True otherwise. Everything is checked before anything is written: a
        step that raises has changed nothing."""
        self._refuse_step(self.param_groups)
        per_group = self._grads_by_group(grads)
        for gi, g in enumerate(self.param_groups):  # a group's values may have been edited
            self._check_group(g, f"parameter group {gi}")
        flat = [a for lst in per_group for a in lst if a is not None]
        if self.skip_nonfinite and not clip.all_finite(flat):
            self.state["skipped_steps"] += 1
            warnings.warn(f"non-finite gradients: step skipped ({self.state['skipped_steps']} so far)",
                          NonFiniteGradients, stacklevel=2)
            return False
        factor, new_prev = 1.0, self.state["prev_grad_sq_norm"]
        if self.grad_norm_ratio:
            sq = clip.global_norm(flat) ** 2
            if new_prev is not None:
                eps = self.grad_norm_ratio_eps
                factor = max(sq, eps) / max(new_prev, eps)
            new_prev = sq
        lrs = [self._group_lr(g, g["step"] + 1) * factor for g in self.param_groups]
        for gi, lr in enumerate(lrs):
            if not (math.isfinite(lr) and lr >= 0):
                raise ValueError(f"parameter group {gi}: learning rate must be finite and >= 0, got {lr!r}")
        # Nothing below can fail: every check the kernels make was made above.
        for g, gr, lr in zip(self.param_groups, per_group, lrs):
            advanced = self._advance(g, lr)
            self._step_group(g, gr, lr)
            g.update(advanced)
            g["step"] += 1
        self.state["prev_grad_sq_norm"] = new_prev
        return True

    def _step_group(self, g: Dict[str, Any], grads: List[Optional[Array]], lr: float,
                    gi: Optional[int] = None) -> None:
        # Parameters that have a gradient, split by their own step count (one kernel call
        # per distinct count: normally one, more only after steps without some gradients).
        by_step: Dict[int, List[int]] = {}
        for i, a in enumerate(grads):
            if a is not None:
                by_step.setdefault(g["_steps"][i] + 1, []).append(i)
        hp = self._kernel_hyper(g)
        if gi is None:
            gi = next(i for i, x in enumerate(self.param_groups) if x is g)
        wd = g["weight_decay"] if "weight_decay" in g else 0.0
        for t, idx in by_step.items():
            params = [g["params"][i] for i in idx]
            gs = cast("List[Array]", [grads[i] for i in idx])  # idx: the parameters that have a gradient
            if g["decoupled_weight_decay"] and wd and not self._kernel_decouples:
                F.decay(params, lr=lr, weight_decay=wd)
            if g["l1"] and g["l1_mode"] == "subgradient":
                gs = self._penalized(g, idx, gs)
            states = {name: [arrs[i] for i in idx] for name, arrs in g["_state"].items()}
            if self._widened and (params[0].dtype in _16BIT or g["state_dtype"] in ("bfloat16", "int8")):
                result = self._widened_step(g, gi, hp, idx, params, gs, states, lr, t)
            else:
                hp["_lowp"] = self._lowp_args(g, gi, idx, states)
                result = self._kernel(hp, idx, params, gs, states, lr, t)
            self._after_kernel(g, idx, result)
            if g["l1"] and g["l1_mode"] == "proximal":
                F.soft_threshold(params, threshold=lr * g["l1"])
            for i in idx:
                g["_steps"][i] = t

    def _penalized(self, g: Dict[str, Any], idx: List[int], grads: List[Array]) -> List[Array]:
        # The caller's gradient arrays are never modified: the penalty goes into scratch
        # buffers, allocated once per group.
        if g["_scratch"] is None:
            g["_scratch"] = [np.empty_like(p) for p in g["params"]]
        scratch = [g["_scratch"][i] for i in idx]
        for s, a in zip(scratch, grads):
            np.copyto(s, a)
        F.add_penalty(scratch, [g["params"][i] for i in idx], l1=g["l1"])
        return scratch

    # ------------------------------------------------------------ state
    @_locked
    def reset_state(self) -> None:
        """Zeroes every state array and step count, as if no step had been taken."""
        for g in self.param_groups:
            g["step"] = 0
            g["_steps"] = [0] * len(g["params"])
            for name, arrs in g["_state"].items():
                for p, a in zip(g["params"], arrs):
                    new = self._new_state(g, name, p)
                    if isinstance(a, Blockwise8):  # and so is new: the state's kind follows the group
                        new = cast(Blockwise8, new)
                        a.codes[...], a.absmax[...] = new.codes, new.absmax
                    else:
                        a[...] = new
        self.state = {"skipped_steps": 0, "prev_grad_sq_norm": None}

    zero_state = reset_state

    def _hyper_keys(self) -> List[str]:
        return list(self.defaults)

    def state_dict(self) -> Dict[str, Any]:
        """Plain NumPy arrays and Python scalars, all copies (editing the result never
        changes the optimizer): ``{"optimizer", "param_groups": [hyperparameters, step,
        names, shapes, dtype], "state": [{name: [arrays], "step": [per-parameter counts]}],
        "skipped_steps", "prev_grad_sq_norm"}``. A schedule used as lr is saved as None
        (rebuild the optimizer with it; the saved step drives it)."""
        groups, states = [], []
        for g in self.param_groups:
            h = {k: (tuple(g[k]) if isinstance(g[k], list) else g[k]) for k in self._hyper_keys()}
            h["lr"] = None if callable(g["lr"]) else g["lr"]
            h["step"] = g["step"]
            h["names"] = list(g["names"])
            h["shapes"] = [tuple(p.shape) for p in g["params"]]
            h["dtype"] = str(g["params"][0].dtype)
            groups.append(h)
            st: Dict[str, Any] = {name: [_state_copy(a) for a in arrs] for name, arrs in g["_state"].items()}
            st["step"] = list(g["_steps"])
            states.append(st)
        return {
            "optimizer": type(self).__name__,
            "param_groups": groups,
            "state": states,
            "skipped_steps": self.state["skipped_steps"],
            "prev_grad_sq_norm": self.state["prev_grad_sq_norm"],
        }

    @_locked
    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        """Restores a :meth:`state_dict`, all or nothing: the new state is built aside and
        checked as the constructor checks hyperparameters, then swapped in; on any problem
        it raises and the optimizer is unchanged.

        Checked: the optimizer type; exactly the expected keys at every level; the number
        of groups and, per group, the parameter names, shapes and dtype, every
        hyperparameter (type and range, by the kernel itself), the step counts (ints in
        [0, 2**63), a parameter's never above its group's); one state array per parameter
        for exactly the state names the hyperparameters need, each of the parameter's
        shape and dtype, never negative where the optimizer keeps a non-negative quantity
        (Adam's ``exp_avg_sq``, Adagrad's ``sum``, ...). Not checked (it cannot be): that
        the state belongs to these parameters. Two parameters of the same shape in a list
        are told apart only by their position; named (dict) parameters by name.
        Per-group settings derived from the constructor (LAMB's and LARS's ``exclude``)
        stay those of this optimizer."""
        if not isinstance(sd, Mapping):
            raise TypeError(f"state_dict must be a dict, got {type(sd).__name__}")
        keys = {"optimizer", "param_groups", "state", "skipped_steps", "prev_grad_sq_norm"}
        if set(sd) != keys:
            raise ValueError(f"state_dict keys must be {sorted(keys)}: missing {sorted(keys - set(sd))}, "
                             f"unexpected {sorted(set(sd) - keys)}")
        if sd["optimizer"] != type(self).__name__:
            raise ValueError(f"state_dict is for {sd['optimizer']!r}, not {type(self).__name__}")
        groups, states = sd["param_groups"], sd["state"]
        if not isinstance(groups, (list, tuple)) or not isinstance(states, (list, tuple)):
            raise TypeError("state_dict's param_groups and state must be lists")
        if len(groups) != len(self.param_groups) or len(states) != len(self.param_groups):
            raise ValueError(f"state_dict has {len(groups)} parameter groups and {len(states)} states, "
                             f"optimizer has {len(self.param_groups)} groups")
        skipped, prev = sd["skipped_steps"], sd["prev_grad_sq_norm"]
        if not (_is_int(skipped) and 0 <= skipped < 2**63):
            raise ValueError(f"skipped_steps must be an int >= 0, got {skipped!r}")
        if prev is not None and not (_is_real(prev) and math.isfinite(prev) and prev >= 0):
            raise ValueError(f"prev_grad_sq_norm must be None or a finite number >= 0, got {prev!r}")

        new_groups, new_states = [], []
        for gi, (g, h, st) in enumerate(zip(self.param_groups, groups, states)):
            where = f"state_dict parameter group {gi}"
            if not isinstance(h, Mapping) or not isinstance(st, Mapping):
                raise TypeError(f"{where}: param_groups and state entries must be dicts")
            expected = set(self._hyper_keys()) | {"step", "names", "shapes", "dtype"}
            if set(h) != expected:
                raise ValueError(f"{where}: keys missing {sorted(expected - set(h))}, unexpected {sorted(set(h) - expected)}")
            if list(h["names"]) != g["names"] or [tuple(s) for s in h["shapes"]] != [p.shape for p in g["params"]]:
                raise ValueError(f"{where}: names or shapes differ from this optimizer's")
            if h["dtype"] != str(g["params"][0].dtype):
                raise TypeError(f"{where}: dtype {h['dtype']} in state_dict, {g['params'][0].dtype} here")
            step = h["step"]
            if not (_is_int(step) and 0 <= step < 2**63 - 1):
                raise ValueError(f"{where}: step must be an int in [0, 2**63 - 1), got {step!r}")
            trial = dict(g)
            for k in self._hyper_keys():
                trial[k] = g["lr"] if (k == "lr" and h[k] is None) else h[k]
            trial["step"] = int(step)
            for k, default in self.defaults.items():
                if isinstance(default, tuple):
                    trial[k] = tuple(trial[k])
            self._check_group(trial, where)
            names = self._all_state_names(trial)
            present = set(st) - {"step"}
            if present != set(names):
                raise ValueError(f"{where}: state {sorted(present)} in state_dict, the hyperparameters need {sorted(names)}")
            steps = st.get("step", [int(step)] * len(g["params"]))
            if not (isinstance(steps, (list, tuple)) and len(steps) == len(g["params"])
                    and all(_is_int(s) and 0 <= s <= step for s in steps)):
                raise ValueError(f"{where}: state step must hold one int in [0, {step}] per parameter, got {steps!r}")
            arrays = {}
            for name in names:
                lst = st[name]
                if not isinstance(lst, (list, tuple)) or len(lst) != len(g["params"]):
                    raise ValueError(f"{where}: state {name} must hold one array per parameter "
                                     f"({len(g['params'])}), got {len(lst) if isinstance(lst, (list, tuple)) else type(lst).__name__}")
                for n, p, a in zip(g["names"], g["params"], lst):
                    if name not in self._scalar_state and name != "master_param" and self._is_int8(trial, p):
                        self._check_int8_state(a, p, name, n, where, self._state_shape(trial, name, p))
                        continue
                    if not isinstance(a, np.ndarray) or isinstance(a, np.ma.MaskedArray):
                        raise TypeError(f"{where}: state {name} of {n} must be a numpy.ndarray, got {type(a).__name__}")
                    if name in self._scalar_state:
                        if a.shape != () or a.dtype != np.float32:
                            raise ValueError(f"{where}: state {name} of {n} must be a 0-d float32 array, got "
                                             f"shape/dtype {a.shape}/{a.dtype}")
                    elif a.shape != self._state_shape(trial, name, p) or a.dtype != (
                            np.float32 if name == "master_param" or trial["state_dtype"] == "int8"
                            else self._state_dtype(trial, p.dtype)):
                        want = (np.float32 if name == "master_param" or trial["state_dtype"] == "int8"
                                else self._state_dtype(trial, p.dtype))
                        raise ValueError(f"{where}: state {name} of {n} has shape/dtype {a.shape}/{a.dtype}, "
                                         f"expected {self._state_shape(trial, name, p)}/{np.dtype(want)}")
                    if name in self._nonnegative_state and a.size and np.min(a) < 0:
                        raise ValueError(f"{where}: state {name} of {n} has negative values, which no training produces")
                arrays[name] = lst
            new_groups.append((trial, [int(s) for s in steps]))
            new_states.append(arrays)
        # Swap in: copies into the existing arrays (same shapes and dtypes, checked), so
        # nothing below can fail.
        for g, (trial, steps), arrays in zip(self.param_groups, new_groups, new_states):
            for k in self._hyper_keys():
                g[k] = trial[k]
            g["step"] = trial["step"]
            g["_steps"] = steps
            for name, lst in arrays.items():
                for dst, src in zip(g["_state"][name], lst):
                    if isinstance(dst, Blockwise8):
                        np.copyto(dst.codes, src["codes"])
                        np.copyto(dst.absmax, src["absmax"])
                    else:
                        np.copyto(dst, src)
        self.state = {"skipped_steps": int(skipped), "prev_grad_sq_norm": None if prev is None else float(prev)}

    def _check_int8_state(self, a: Any, p: Array, name: str, n: str, where: str, shape: Tuple[int, ...]) -> None:
        """An 8-bit state in a state_dict: {"codes": uint8 of the state's shape (the
        parameter's, or Adafactor's factors'), "absmax": float32, one per block, never
        negative, "signed": the code this state uses}."""
        from deepoptim.reference._lowp import QBLOCK

        signed = name not in self._nonnegative_state
        if not (isinstance(a, Mapping) and set(a) == {"codes", "absmax", "signed"}):
            raise ValueError(f"{where}: state {name} of {n} is kept in 8 bits: it must be a dict with keys "
                             f"codes, absmax, signed, got {type(a).__name__}")
        codes, absmax = a["codes"], a["absmax"]
        nb = -(-int(np.prod(shape, dtype=np.int64)) // QBLOCK)
        if not (isinstance(codes, np.ndarray) and codes.dtype == np.uint8 and codes.shape == shape):
            raise ValueError(f"{where}: state {name} of {n}: codes must be a uint8 array of shape {shape}")
        if not (isinstance(absmax, np.ndarray) and absmax.dtype == np.float32 and absmax.shape == (nb,)):
            raise ValueError(f"{where}: state {name} of {n}: absmax must be a float32 array of shape ({nb},)")
        if a["signed"] is not signed:
            raise ValueError(f"{where}: state {name} of {n}: signed must be {signed} (the code this state uses)")
        if absmax.size and np.nanmin(absmax, initial=0.0) < 0:
            raise ValueError(f"{where}: state {name} of {n} has a negative absmax, which no quantization produces")

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={v!r}" for k, v in self.defaults.items())
        n = sum(len(g["params"]) for g in self.param_groups)
        return f"{type(self).__name__}({n} parameters in {len(self.param_groups)} group(s), {hp})"


# ---------------------------------------------------------------------------- SGD
class SGD(Optimizer):
    r"""Stochastic gradient descent with momentum, as torch.optim.SGD (kernel
    :func:`deepoptim.functional.sgd`, whose docstring has the update).

    ``momentum_form="classical"`` (``v = mu*v + lr*g; p -= v``) and ``"ema"``
    (``v = mu*v + (1-mu)*g; p -= lr*v``) select the two other common momentum forms.
    """

    kernel, torch_name, example = "sgd", "SGD", dict(momentum=0.9)

    def __init__(self, params: Params, lr: Union[float, Schedule] = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False, *,
                 maximize: bool = False, momentum_form: str = "torch", **common: Any) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov, maximize=maximize, momentum_form=momentum_form), **common)

    def _state_names(self, g: Mapping[str, Any]) -> List[str]:
        return ["momentum_buffer"] if (g["momentum"] != 0.0 or g["momentum_form"] != "torch") else []

    def _kernel(self, hp: Mapping[str, Any], idx: List[int], params: List[Array], grads: List[Array],
                states: Dict[str, List[Array]], lr: float, step: int) -> None:
        F.sgd(params, grads, states.get("momentum_buffer"), lr=lr, momentum=hp["momentum"],
              dampening=hp["dampening"], weight_decay=hp["weight_decay"], nesterov=hp["nesterov"],
              maximize=hp["maximize"], first_step=step == 1, momentum_form=hp["momentum_form"], **hp.get("_lowp", {}))


# ------------------------------------------------------------------------ Adagrad
class Adagrad(Optimizer):
    r"""Adagrad (Duchi et al., 2011), as torch.optim.Adagrad (kernel :func:`deepoptim.functional.adagrad`)."""

    kernel, torch_name, example = "adagrad", "Adagrad", {}

    _nonnegative_state = ("sum",)

    def __init__(self, params: Params, lr: Union[float, Schedule] = 1e-2, lr_decay: float = 0.0,
                 weight_decay: float = 0.0, initial_accumulator_value: float = 0.0, eps: float = 1e-10, *,
                 maximize: bool = False, **common: Any) -> None:
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, eps=eps,
                                      maximize=maximize), **common)

    def _state_names(self, g: Mapping[str, Any]) -> List[str]:
        return ["sum"]

    def _init_state(self, g: Mapping[str, Any], name: str, p: Array) -> Array:
        return np.full_like(p, g["initial_accumulator_value"])

    def _kernel(self, hp: Mapping[str, Any], idx: List[int], params: List[Array], grads: List[Array],
                states: Dict[str, List[Array]], lr: float, step: int) -> None:
        F.adagrad(params, grads, states["sum"], step=step, lr=lr, lr_decay=hp["lr_decay"],
                  weight_decay=hp["weight_decay"], initial_accumulator_value=hp["initial_accumulator_value"],
                  eps=hp["eps"], maximize=hp["maximize"], **hp.get("_lowp", {}))


# ------------------------------------------------------------------------ RMSprop
class RMSprop(Optimizer):
    r"""RMSprop, as torch.optim.RMSprop (kernel :func:`deepoptim.functional.rmsprop`)."""

    kernel, torch_name, example = "rmsprop", "RMSprop", {}

    _nonnegative_state = ("square_avg",)

    def __init__(self, params: Params, lr: Union[float, Schedule] = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False, *,
                 maximize: bool = False, **common: Any) -> None:
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                                      centered=centered, maximize=maximize), **common)

    def _state_names(self, g: Mapping[str, Any]) -> List[str]:
        return ["square_avg"] + (["grad_avg"] if g["centered"] else []) + (["momentum_buffer"] if g["momentum"] > 0 else [])

    def _kernel(self, hp: Mapping[str, Any], idx: List[int], params: List[Array], grads: List[Array],
                states: Dict[str, List[Array]], lr: float, step: int) -> None:
        F.rmsprop(params, grads, states["square_avg"], states.get("grad_avg"), states.get("momentum_buffer"), lr=lr,
                  alpha=hp["alpha"], eps=hp["eps"], weight_decay=hp["weight_decay"], momentum=hp["momentum"],
                  centered=hp["centered"], maximize=hp["maximize"], **hp.get("_lowp", {}))


# --------------------------------------------------------------------------- Adam
class Adam(Optimizer):
    r"""Adam / AMSGrad (Kingma & Ba, 2015; Reddi et al., 2018), as torch.optim.Adam
    (kernel :func:`deepoptim.functional.adam`). ``bias_correction=False`` and
    ``eps_inside_sqrt=True`` give the textbook variant without bias correction and with
    eps inside the square root."""

    kernel, torch_name, example = "adam", "Adam", {}

    _kernel_decouples = True
    _nonnegative_state = ("exp_avg_sq", "max_exp_avg_sq")

    def __init__(self, params: Params, lr: Union[float, Schedule] = 1e-3,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *, maximize: bool = False,
                 bias_correction: bool = True, eps_inside_sqrt: bool = False, **common: Any) -> None:
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize, bias_correction=bias_correction,
                                      eps_inside_sqrt=eps_inside_sqrt), **common)

    def _state_names(self, g: Mapping[str, Any]) -> List[str]:
        return ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if g["amsgrad"] else [])

    def _kernel(self, hp: Mapping[str, Any], idx: List[int], params: List[Array], grads: List[Array],
                states: Dict[str, List[Array]], lr: float, step: int) -> None:
        F.adam(params, grads, states["exp_avg"], states["exp_avg_sq"], states.get("max_exp_avg_sq"), step=step, lr=lr,
               betas=tuple(hp["betas"]), eps=hp["eps"], weight_decay=hp["weight_decay"], amsgrad=hp["amsgrad"],
               maximize=hp["maximize"], decoupled_weight_decay=hp["decoupled_weight_decay"],
               bias_correction=hp["bias_correction"], eps_inside_sqrt=hp["eps_inside_sqrt"], **hp.get("_lowp", {}))


class AdamW(Adam):
    r"""AdamW (Loshchilov & Hutter, 2019), as torch.optim.AdamW: Adam with decoupled weight
    decay ``p *= 1 - lr*weight_decay`` and ``weight_decay=1e-2`` by default."""

    kernel, torch_name, example = "adamw", "AdamW", {}

    def __init__(self, params: Params, lr: Union[float, Schedule] = 1e-3,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, **kw: Any) -> None:
        kw["decoupled_weight_decay"] = True
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, **kw)


# ------------------------------------------------------------------------- Adamax
class Adamax(Optimizer):
    r"""Adamax (Kingma & Ba, 2015, section 7.1), as torch.optim.Adamax (kernel
    :func:`deepoptim.functional.adamax`, whose docstring has the update)."""

    kernel, torch_name, example = "adamax", "Adamax", {}
    _nonnegative_state = ("exp_inf",)

    def __init__(self, params: Params, lr: Union[float, Schedule] = 2e-3,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, *, maximize: bool = False, **common: Any) -> None:
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      maximize=maximize), **common)

    def _state_names(self, g: Mapping[str, Any]) -> List[str]:
        return ["exp_avg", "exp_inf"]

    def _kernel(self, hp: Mapping[str, Any], idx: List[int], params: List[Array], grads: List[Array],
                states: Dict[str, List[Array]], lr: float, step: int) -> None:
        F.adamax(params, grads, states["exp_avg"], states["exp_inf"], step=step, lr=lr, betas=tuple(hp["betas"]),
                 eps=hp["eps"], weight_decay=hp["weight_decay"], maximize=hp["maximize"], **hp.get("_lowp", {}))


# -------------------------------------------------------------------------- RAdam
class RAdam(Optimizer):
    r"""RAdam (Liu et al., ICLR 2020), as torch.optim.RAdam (kernel
    :func:`deepoptim.functional.radam`, whose docstring has the update): Adam with the
    variance of its adaptive rate rectified, and plain momentum in the first steps."""

    kernel, torch_name, example = "radam", "RAdam", {}
    _kernel_decouples = True
    _nonnegative_state = ("exp_avg_sq",)

    def __init__(self, params: Params, lr: Union[float, Schedule] = 1e-3,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, decoupled_weight_decay: bool = False, *, maximize: bool = False,
                 **common: Any) -> None:
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      maximize=maximize), decoupled_weight_decay=decoupled_weight_decay, **common)

    def _state_names(self, g: Mapping[str, Any]) -> List[str]:
        return ["exp_avg", "exp_avg_sq"]

    def _kernel(self, hp: Mapping[str, Any], idx: List[int], params: List[Array], grads: List[Array],
                states: Dict[str, List[Array]], lr: float, step: int) -> None:
        F.radam(params, grads, states["exp_avg"], states["exp_avg_sq"], step=step, lr=lr, betas=tuple(hp["betas"]),
                eps=hp["eps"], weight_decay=hp["weight_decay"], decoupled_weight_decay=hp["decoupled_weight_decay"],
                maximize=hp["maximize"], **hp.get("_lowp", {}))


# ----------------------------------------------------------------------- Adadelta
class Adadelta(Optimizer):
    r"""Adadelta (Zeiler, 2012), as torch.optim.Adadelta (kernel
    :func:`deepoptim.functional.adadelta`, whose docstring has the update)."""

    kernel, torch_name, example = "adadelta", "Adadelta", {}
    _nonnegative_state = ("square_avg", "acc_delta")

    def __init__(self, params: Params, lr: Union[float, Schedule] = 1.0, rho: float = 0.9, eps: float = 1e-6,
                 weight_decay: float = 0.0, *, maximize: bool = False, **common: Any) -> None:
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize), **common)

    def _state_names(self, g: Mapping[str, Any]) -> List[str]:
        return ["square_avg", "acc_delta"]

    def _kernel(self, hp: Mapping[str, Any], idx: List[int], params: List[Array], grads: List[Array],
                states: Dict[str, List[Array]], lr: float, step: int) -> None:
        F.adadelta(params, grads, states["square_avg"], states["acc_delta"], lr=lr, rho=hp["rho"], eps=hp["eps"],
                   weight_decay=hp["weight_decay"], maximize=hp["maximize"], **hp.get("_lowp", {}))


# -------------------------------------------------------------------------- Rprop
class Rprop(Optimizer):
    r"""Rprop (Riedmiller & Braun, 1993), as torch.optim.Rprop (kernel
    :func:`deepoptim.functional.rprop`): per-element step sizes grown by ``etaplus`` while
    the gradient keeps its sign and shrunk by ``etaminus`` when it flips; ``lr`` is the
    initial step size. Meant for full-batch training."""

    kernel, torch_name, example = "rprop", "Rprop", {}
    _nonnegative_state = ("step_size",)

    def __init__(self, params: Params, lr: Union[float, Schedule] = 1e-2, etas: Tuple[float, float] = (0.5, 1.2),
                 step_sizes: Tuple[float, float] = (1e-6, 50.0),
                 *, maximize: bool = False, **common: Any) -> None:
        super().__init__(params, dict(lr=lr, etas=tuple(etas), step_sizes=tuple(step_sizes), weight_decay=0.0,
                                      maximize=maximize), **common)

    def _state_names(self, g: Mapping[str, Any]) -> List[str]:
        return ["prev", "step_size"]

    def _init_state(self, g: Mapping[str, Any], name: str, p: Array) -> Array:
        return np.full_like(p, self._group_lr(g, 1)) if name == "step_size" else np.zeros_like(p)

    def _kernel(self, hp: Mapping[str, Any], idx: List[int], params: List[Array], grads: List[Array],
                states: Dict[str, List[Array]], lr: float, step: int) -> None:
        F.rprop(params, grads, states["prev"], states["step_size"], etas=tuple(hp["etas"]),
                step_sizes=tuple(hp["step_sizes"]), maximize=hp["maximize"], **hp.get("_lowp", {}))


# -------------------------------------------------------------------------- NAdam
class NAdam(Optimizer):
    r"""NAdam (Dozat, 2016, "Incorporating Nesterov Momentum into Adam"), as
    torch.optim.NAdam (kernel :func:`deepoptim.functional.nadam`, whose docstring has the
    update): Adam with Nesterov momentum, the momentum cache
    :math:`\mu_t = \beta_1 (1 - 0.5 \cdot 0.96^{t \psi})` (``momentum_decay`` :math:`\psi`),
    and NAdamW with ``decoupled_weight_decay=True``. Per parameter it keeps ``exp_avg``,
    ``exp_avg_sq`` and ``mu_product`` (:math:`\prod_{i \le t} \mu_i`, a 0-d float32 array
    as torch's 0-d tensor)."""

    kernel, torch_name, example = "nadam", "NAdam", {}
    _kernel_decouples = True
    _nonnegative_state = ("exp_avg_sq", "mu_product")
    _scalar_state = ("mu_product",)

    def __init__(self, params: Params, lr: Union[float, Schedule] = 2e-3,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum_decay: float = 4e-3, decoupled_weight_decay: bool = False, *,
                 maximize: bool = False, **common: Any) -> None:
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      momentum_decay=momentum_decay, maximize=maximize),
                         decoupled_weight_decay=decoupled_weight_decay, **common)

    def _state_names(self, g: Mapping[str, Any]) -> List[str]:
        return ["mu_product", "exp_avg", "exp_avg_sq"]

    def _init_state(self, g: Mapping[str, Any], name: str, p: Array) -> Array:
        return np.ones((), np.float32) if name == "mu_product" else np.zeros_like(p)

    def _kernel(self, hp: Mapping[str, Any], idx: List[int], params: List[Array], grads: List[Array],
                states: Dict[str, List[Array]], lr: float, step: int) -> None:
        F.nadam(params, grads, states["exp_avg"], states["exp_avg_sq"], states["mu_product"], step=step, lr=lr,
                betas=tuple(hp["betas"]), eps=hp["eps"], weight_decay=hp["weight_decay"],
                momentum_decay=hp["momentum_decay"], decoupled_weight_decay=hp["decoupled_weight_decay"],
                maximize=hp["maximize"], **hp.get("_lowp", {}))


# --------------------------------------------------------------------------- ASGD
class ASGD(Optimizer):
    r"""ASGD, averaged SGD (Polyak & Juditsky, 1992, "Acceleration of Stochastic
    Approximation by Averaging"), as torch.optim.ASGD (kernel
    :func:`deepoptim.functional.asgd`, whose docstring has the update): SGD with the
    decaying step :math:`\eta_t = lr / (1 + \lambda \, lr \, t)^\alpha` and, from step
    ``t0`` on, the running average of the iterates in ``ax``. Per parameter it keeps
    ``eta``, ``mu`` (0-d float32 arrays, as torch's 0-d tensors) and ``ax``; the averaged
    parameters are ``group["_state"]["ax"]`` (``optimizer.state[p]["ax"]`` in
    :mod:`deepoptim.torch`)."""

    kernel, torch_name, example = "asgd", "ASGD", {}
    _nonnegative_state = ("eta", "mu")
    _scalar_state = ("eta", "mu")

    def __init__(self, params: Params, lr: Union[float, Schedule] = 1e-2, lambd: float = 1e-4, alpha: float = 0.75,
                 t0: float = 1e6, weight_decay: float = 0.0, *, maximize: bool = False, **common: Any) -> None:
        super().__init__(params, dict(lr=lr, lambd=lambd, alpha=alpha, t0=t0, weight_decay=weight_decay,
                                      maximize=maximize), **common)

    def _state_names(self, g: Mapping[str, Any]) -> List[str]:
        return ["eta", "mu", "ax"]

    def _init_state(self, g: Mapping[str, Any], name: str, p: Array) -> Array:
        if name == "eta":  # torch starts eta at the group's lr
            return np.array(self._group_lr(g, 1), np.float32)
        return np.ones((), np.float32) if name == "mu" else np.zeros_like(p)

    def _kernel(self, hp: Mapping[str, Any], idx: List[int], params: List[Array], grads: List[Array],
                states: Dict[str, List[Array]], lr: float, step: int) -> None:
        F.asgd(params, grads, states["ax"], states["mu"], states["eta"], step=step, lr=lr, lambd=hp["lambd"],
               alpha=hp["alpha"], t0=hp["t0"], weight_decay=hp["weight_decay"], maximize=hp["maximize"], **hp.get("_lowp", {}))


# --------------------------------------------------------------------------- Lion
class Lion(Optimizer):
    r"""Lion (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms"; kernel
    :func:`deepoptim.functional.lion`): the sign of an interpolated momentum, with
    decoupled weight decay. Not in torch.optim; defaults as the authors' code."""

    kernel, torch_name, example = "lion", None, dict(weight_decay=1e-2)
    _kernel_decouples = True  # Lion's decay is decoupled by definition

    def __init__(self, params: Params, lr: Union[float, Schedule] = 1e-4, betas: Tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0, *, maximize: bool = False, **common: Any) -> None:
        common.setdefault("decoupled_weight_decay", True)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay, maximize=maximize),
                         **common)

    def _state_names(self, g: Mapping[str, Any]) -> List[str]:
        return ["exp_avg"]

    def _kernel(self, hp: Mapping[str, Any], idx: List[int], params: List[Array], grads: List[Array],
                states: Dict[str, List[Array]], lr: float, step: int) -> None:
        F.lion(params, grads, states["exp_avg"], lr=lr, betas=tuple(hp["betas"]), weight_decay=hp["weight_decay"],
               maximize=hp["maximize"], **hp.get("_lowp", {}))


# ------------------------------------------------------------- Schedule-Free AdamW
def _lerp_(a: Array, b: Array, weight: float) -> None:
    """``a = lerp(a, b, weight)`` in place, in a's dtype, in torch's two forms."""
    w = float(weight)
    with np.errstate(over="ignore", invalid="ignore"):
        if abs(w) < 0.5:
            a[...] = a + w * (b - a)
        else:
            a[...] = b - (b - a) * (1.0 - w)


def _math_values(a: Any) -> Array:
    """The values a step computes on: a float32 or float64 array itself, a 16-bit one
    widened to float32 (exact), an 8-bit state dequantized."""
    if isinstance(a, Blockwise8):
        out: Array = a.dequantize()
        return out
    return a.astype(np.float32) if a.dtype in _16BIT else a  # type: ignore[no-any-return]


def _store_(dst: Any, src: Array) -> None:
    """``dst = src`` in dst's storage: copied or widened, rounded to nearest even
    (bfloat16/float16, :func:`deepoptim.functional.cast`), or quantized (8-bit state)."""
    if isinstance(dst, Blockwise8):
        dst.codes[...], dst.absmax[...] = quantize(np.asarray(_math_values(src), np.float32), dst.signed)
    else:
        F.cast(np.ascontiguousarray(src), dst)


def _switch_(p: Array, z: Any, weight: float, master: Optional[Array] = None) -> None:
    """Schedule-Free's switch between y and x, ``p = lerp(p, z, weight)``, on any
    storage: the lerp runs on the values the kernel computes on (float32 for 16-bit
    parameters, 16-bit or 8-bit ``z`` widened), on the float32 ``master`` copy where
    there is one (the parameter then becomes its rounding), else on the parameter
    widened, rounded back to nearest even. Never stochastically: a switch is not a
    training step, and the same switch gives the same bits."""
    zv = _math_values(z)
    if master is not None:
        _lerp_(master, zv, weight)
        F.cast(master, p)
    elif p.dtype in _16BIT:
        x = p.astype(np.float32)
        _lerp_(x, zv, weight)
        F.cast(x, p)
    else:
        _lerp_(p, zv, weight)


class ScheduleFreeAdamW(Optimizer):
    r"""Schedule-Free AdamW (Defazio et al., 2024, "The Road Less Scheduled", NeurIPS;
    kernel :func:`deepoptim.functional.schedule_free_adamw`, whose docstring has the
    update), as the authors' reference implementation (facebookresearch/schedule_free,
    ``AdamWScheduleFree``): no learning-rate schedule, an online average instead. Not in
    torch.optim. ``optax.contrib.schedule_free_adamw`` gives the same trajectory without
    warmup (tested where optax is installed); with warmup it lags one step, because its
    inner learning-rate schedule counts from 0 (its first ``z`` step has rate 0).

    Three sequences: :math:`z` (AdamW-like steps, state ``z``), the weighted average
    :math:`x_{t+1} = (1 - c_{t+1}) x_t + c_{t+1} z_{t+1}` (the point to evaluate and
    save), and :math:`y = (1 - \beta_1) z + \beta_1 x`, where gradients are taken. Per
    step, with :math:`k` steps taken so far in the group::

        lr_t    = lr * min(1, (k + 1) / warmup_steps)        (linear warmup)
        lr_max  = max(lr_max, lr_t)
        w       = (k + 1)**r * lr_max**weight_lr_power
        c_{t+1} = w / weight_sum,  weight_sum += w (before)   (0 when weight_sum is 0)

    and the kernel's update with ``lr=lr_t, ckp1=c_{t+1}, step=k+1``. The group keeps
    ``k``, ``lr_max``, ``weight_sum`` and ``train_mode`` beside its hyperparameters (in the
    state_dict too), as the reference keeps them in its param groups.

    Modes: the parameters hold :math:`y` in train mode and :math:`x` in eval mode.
    :meth:`eval` moves them to :math:`x` (``p = lerp(p, z, 1 - 1/b1)``), :meth:`train` back
    to :math:`y` (``p = lerp(p, z, 1 - b1)``); call ``eval()`` before evaluating or saving
    a checkpoint, ``train()`` before training again. :meth:`step` in eval mode raises.

    Low precision: ``z`` and ``exp_avg_sq`` follow ``state_dtype`` as every optimizer's
    state (float32, bfloat16 or 8 bits). The switch computes in float32 as the step does:
    with ``master_weights`` it moves the float32 master copy and writes the parameter as
    its rounding (so a round trip costs what it costs in float32); without, it lerps the
    widened bfloat16/float16 parameter and rounds to nearest even, also with
    ``stochastic_rounding`` (which rounds the steps only: a switch is not an update to
    accumulate, and the same switch always gives the same bits). Each switch of a 16-bit
    parameter without master weights thus rounds once (at most half an ulp of the
    parameter).
    Unlike the reference, which starts in eval mode and must be told ``train()`` before
    its first step, an optimizer here starts in train mode (before the first step the
    two modes hold the same point). Parameters get their ``z`` at their first step (a
    copy of the parameter then).
    """

    kernel, torch_name, example = "schedule_free_adamw", None, dict(weight_decay=1e-2)
    _kernel_decouples = True  # its decay is its own (at y, inside the step)
    _nonnegative_state = ("exp_avg_sq",)
    #: the per-group values each step moves on (the reference's names and starting values)
    _GROUP_STATE = (("k", 0), ("lr_max", -1.0), ("weight_sum", 0.0), ("train_mode", True))

    def __init__(self, params: Params, lr: Union[float, Schedule] = 0.0025,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, warmup_steps: int = 0, r: float = 0.0, weight_lr_power: float = 2.0,
                 **common: Any) -> None:
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      warmup_steps=warmup_steps, r=r, weight_lr_power=weight_lr_power,
                                      **dict(self._GROUP_STATE)), **common)

    def _state_names(self, g: Mapping[str, Any]) -> List[str]:
        return ["z", "exp_avg_sq"]

    def _init_state(self, g: Mapping[str, Any], name: str, p: Array) -> Array:
        return p.copy() if name == "z" else np.zeros_like(p)

    @staticmethod
    def _schedule(g: Mapping[str, Any], lr: float) -> Tuple[float, float, Dict[str, Any]]:
        """(lr_t, c_{t+1}, the group's values after the step), from the group before it."""
        k, warmup, r, power = g["k"], g["warmup_steps"], g["r"], g["weight_lr_power"]
        if not (_is_int(k) and k >= 0):
            raise ValueError(f"k (the steps taken) must be an int >= 0, got {k!r}")
        if not (_is_int(warmup) and warmup >= 0):
            raise ValueError(f"warmup_steps must be an int >= 0, got {warmup!r}")
        for name, x in (("r", r), ("weight_lr_power", power)):
            if not (math.isfinite(x) and x >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {x!r}")
        lr_max0, wsum0 = g["lr_max"], g["weight_sum"]
        if not (math.isfinite(lr_max0) and (lr_max0 >= 0 or lr_max0 == -1.0)):
            raise ValueError(f"lr_max must be -1 (no step yet) or a finite number >= 0, got {lr_max0!r}")
        if not (math.isfinite(wsum0) and wsum0 >= 0):
            raise ValueError(f"weight_sum must be a finite number >= 0, got {wsum0!r}")
        lr_t = lr * ((k + 1) / warmup if k < warmup else 1.0)
        lr_max = max(lr_t, float(lr_max0))
        weight = ((k + 1) ** r) * (lr_max ** power)
        weight_sum = float(wsum0) + weight
        ckp1 = weight / weight_sum if weight_sum != 0 else 0.0
        return lr_t, ckp1, dict(k=int(k) + 1, lr_max=lr_max, weight_sum=weight_sum)

    def _advance(self, g: Mapping[str, Any], lr: float) -> Dict[str, Any]:
        return self._schedule(g, lr)[2]

    def _refuse_step(self, groups: Sequence[Mapping[str, Any]]) -> None:
        for gi, g in enumerate(groups):
            if not g.get("train_mode", True):
                raise RuntimeError(f"parameter group {gi} is in eval mode (the parameters hold the average x): "
                                   "call train() before step()")

    def _kernel(self, hp: Mapping[str, Any], idx: List[int], params: List[Array], grads: List[Array],
                states: Dict[str, List[Array]], lr: float, step: int) -> None:
        lr_t, ckp1, _ = self._schedule(hp, lr)
        if step == 1:  # a parameter's first step: z starts where the parameter is now
            masters: List[Optional[Array]] = (list(states["master_param"]) if "master_param" in states
                                               else [None] * len(params))
            for p, z, master in zip(params, states["z"], masters):
                _store_(z, p if master is None else master)
        F.schedule_free_adamw(params, grads, states["z"], states["exp_avg_sq"], step=hp["k"] + 1, lr=lr_t,
                              ckp1=ckp1, betas=tuple(hp["betas"]), eps=hp["eps"], weight_decay=hp["weight_decay"], **hp.get("_lowp", {}))

    @staticmethod
    def _switch_weight(g: Mapping[str, Any], to_train: bool) -> float:
        b1 = float(g["betas"][0])
        if to_train:
            return 1.0 - b1
        if b1 == 0.0:
            raise ValueError("eval() needs betas[0] > 0: with betas[0] == 0 the parameters are z and the "
                             "average x cannot be recovered from them")
        return 1.0 - 1.0 / b1

    def _set_mode(self, to_train: bool) -> None:
        moves = []
        for g in self.param_groups:  # every check first: a switch that raises has moved nothing
            if bool(g["train_mode"]) != to_train:
                moves.append((g, self._switch_weight(g, to_train)))
        for g, w in moves:
            masters: List[Optional[Array]] = (list(g["_state"]["master_param"]) if "master_param" in g["_state"]
                                               else [None] * len(g["params"]))
            for i, (p, z, master) in enumerate(zip(g["params"], g["_state"]["z"], masters)):
                if g["_steps"][i] > 0:  # z exists once the parameter has taken a step
                    _switch_(p, z, w, master)
            g["train_mode"] = to_train

    @_locked
    def train(self) -> None:
        """Train mode: the parameters hold y, where gradients are taken (a no-op if already there)."""
        self._set_mode(True)

    @_locked
    def eval(self) -> None:
        """Eval mode: the parameters hold the average x, the point to evaluate and save."""
        self._set_mode(False)

    @_locked
    def reset_state(self) -> None:
        super().reset_state()
        for g in self.param_groups:
            g.update({k: v for k, v in self._GROUP_STATE if k != "train_mode"})

    zero_state = reset_state


# ------------------------------------------------------------------ LAMB and LARS
class _TrustRatio(Optimizer):
    """LAMB and LARS: per-tensor trust ratios; ``exclude(name, array)`` keeps chosen
    parameters out of them and of weight decay."""

    def __init__(self, params: Params, defaults: Dict[str, Any],
                 exclude: Optional[Callable[[str, Array], bool]], **common: Any) -> None:
        if exclude is not None and not callable(exclude):
            raise TypeError(f"exclude must be a callable (name, array) -> bool or None, got {type(exclude).__name__}")
        self._exclude = exclude
        super().__init__(params, defaults, **common)

    def _prepare_group(self, g: Dict[str, Any]) -> None:
        ex = self._exclude
        g["adapt"] = [not (ex is not None and ex(n, p)) for n, p in zip(g["names"], g["params"])]
        g["trust_ratio"] = np.ones(len(g["params"]))

    def _after_kernel(self, g: Dict[str, Any], idx: List[int], result: Any) -> None:
        if idx:
            g["trust_ratio"][idx] = result

    def reset_state(self) -> None:
        super().reset_state()
        for g in self.param_groups:
            g["trust_ratio"][:] = 1.0

    zero_state = reset_state


class LAMB(_TrustRatio):
    r"""LAMB (You et al., ICLR 2020; kernel :func:`deepoptim.functional.lamb`): Adam's
    direction plus weight decay, scaled per tensor by the trust ratio ``||p|| / ||r||``
    (1 when either norm is 0).

    Args:
      exclude: ``exclude(name, array) -> bool``; True keeps a parameter out of the trust
        ratio and weight decay (typically biases and normalization parameters, e.g.
        :func:`deepoptim.regularization.is_bias_or_norm`).
    The last step's trust ratios are in ``group["trust_ratio"]``.
    """

    kernel, torch_name, example = "lamb", None, dict(weight_decay=1e-2)

    _nonnegative_state = ("exp_avg_sq",)

    def __init__(self, params: Params, lr: Union[float, Schedule] = 1e-3,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0, *, bias_correction: bool = True,
                 exclude: Optional[Callable[[str, Array], bool]] = None, **common: Any) -> None:
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      bias_correction=bias_correction), exclude, **common)

    def _state_names(self, g: Mapping[str, Any]) -> List[str]:
        return ["exp_avg", "exp_avg_sq"]

    def _kernel(self, hp: Mapping[str, Any], idx: List[int], params: List[Array], grads: List[Array],
                states: Dict[str, List[Array]], lr: float, step: int) -> Any:
        return F.lamb(params, grads, states["exp_avg"], states["exp_avg_sq"], step=step, lr=lr,
                      betas=tuple(hp["betas"]), eps=hp["eps"], weight_decay=hp["weight_decay"],
                      bias_correction=hp["bias_correction"], adapt=[hp["adapt"][i] for i in idx],
                      **hp.get("_lowp", {}))


class LARS(_TrustRatio):
    r"""LARS (You, Gitman & Ginsburg, 2017; kernel :func:`deepoptim.functional.lars`):
    SGD with momentum whose learning rate is scaled per tensor by
    ``trust_coefficient * ||p|| / (||g|| + weight_decay*||p|| + eps)`` (1 when either norm is 0).

    Args:
      exclude: ``exclude(name, array) -> bool``; True keeps a parameter out of the
        layer-wise scaling and weight decay.
    The last step's local learning rates are in ``group["trust_ratio"]``.
    """

    kernel, torch_name, example = "lars", None, dict(weight_decay=1e-4)

    def __init__(self, params: Params, lr: Union[float, Schedule] = 1e-3, momentum: float = 0.9,
                 weight_decay: float = 0.0, trust_coefficient: float = 1e-3, eps: float = 0.0, *,
                 exclude: Optional[Callable[[str, Array], bool]] = None, **common: Any) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      trust_coefficient=trust_coefficient, eps=eps), exclude, **common)

    def _state_names(self, g: Mapping[str, Any]) -> List[str]:
        return ["momentum_buffer"] if g["momentum"] != 0.0 else []

    def _kernel(self, hp: Mapping[str, Any], idx: List[int], params: List[Array], grads: List[Array],
                states: Dict[str, List[Array]], lr: float, step: int) -> Any:
        return F.lars(params, grads, states.get("momentum_buffer"), lr=lr, momentum=hp["momentum"],
                      weight_decay=hp["weight_decay"], trust_coefficient=hp["trust_coefficient"], eps=hp["eps"],
                      adapt=[hp["adapt"][i] for i in idx], **hp.get("_lowp", {}))

# ------------------------------------------------------------------------- Muon
class Muon(Optimizer):
    r"""Muon (Jordan et al., 2024, "Muon: An optimizer for hidden layers in neural
    networks"; kernel :func:`deepoptim.functional.muon`, whose docstring has the math), as
    torch 2.13's ``torch.optim.Muon``: the same arguments, defaults, state
    (``momentum_buffer``) and trajectory. Momentum (an EMA, as torch's code computes it),
    optionally Nesterov, then the Newton-Schulz orthogonalization of each matrix's update
    (in bfloat16, as torch runs it), decoupled weight decay ``p *= 1 - lr*weight_decay``,
    and ``p -= adjusted_lr * O`` with ``adjust_lr_fn`` None / ``"original"``
    (``lr*sqrt(max(1, rows/cols))``) or ``"match_rms_adamw"`` (``lr*0.2*sqrt(max(rows, cols))``).

    Only 2-D parameters (hidden layers' weight matrices): a parameter of any other shape
    is refused with a ValueError naming it; optimize biases, norms and embeddings with
    another optimizer (``AdamW``), as torch's documentation advises. The deepoptim options
    of :class:`Optimizer` (``l1``, ``skip_nonfinite``, ``grad_norm_ratio``) are
    keyword-only; the decay is always decoupled. Parameters may be bfloat16 or float16;
    ``state_dtype``, ``master_weights`` and ``stochastic_rounding`` as for every
    optimizer (the step runs on float32 copies, see :meth:`Optimizer._widened_step`).

    Example:
      >>> import numpy as np
      >>> from deepoptim.optim import Muon
      >>> w = np.eye(4, dtype=np.float32)
      >>> opt = Muon({"w": w}, lr=0.02)
      >>> opt.step({"w": np.ones((4, 4), np.float32)})
      True
    """

    torch_name, example = "Muon", dict(lr=0.02)
    _kernel_decouples = True  # Muon's decay is decoupled by definition
    _widened = True

    def __init__(self, params: Params, lr: Union[float, Schedule] = 1e-3, weight_decay: float = 0.1,
                 momentum: float = 0.95, nesterov: bool = True,
                 ns_coefficients: Tuple[float, float, float] = (3.4445, -4.775, 2.0315), eps: float = 1e-7,
                 ns_steps: int = 5, adjust_lr_fn: Optional[str] = None, **common: Any) -> None:
        common.setdefault("decoupled_weight_decay", True)
        coeffs = tuple(ns_coefficients) if isinstance(ns_coefficients, (tuple, list)) else ns_coefficients
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                                      ns_coefficients=coeffs, eps=eps, ns_steps=ns_steps,
                                      adjust_lr_fn=adjust_lr_fn), **common)

    def _prepare_group(self, g: Dict[str, Any]) -> None:
        for n, p in zip(g["names"], g["params"]):
            if p.ndim != 2:
                raise ValueError(f"Muon only supports 2-D parameters (it orthogonalizes matrices): parameter {n} "
                                 f"has shape {p.shape}; optimize biases, norms and embeddings with another "
                                 "optimizer such as AdamW")

    def _state_names(self, g: Mapping[str, Any]) -> List[str]:
        return ["momentum_buffer"]

    def _kernel(self, hp: Mapping[str, Any], idx: List[int], params: List[Array], grads: List[Array],
                states: Dict[str, List[Array]], lr: float, step: int) -> None:
        # The base class's dry run (hyperparameter checks) passes zero-size 1-D stand-ins.
        def mats(xs: List[Array]) -> List[Array]:
            return [a if a.ndim == 2 else a.reshape(0, 0) for a in xs]

        F.muon(mats(params), mats(grads), mats(states["momentum_buffer"]), lr=lr, weight_decay=hp["weight_decay"],
               momentum=hp["momentum"], nesterov=hp["nesterov"], ns_coefficients=tuple(hp["ns_coefficients"]),
               eps=hp["eps"], ns_steps=hp["ns_steps"], adjust_lr_fn=hp["adjust_lr_fn"])


# -------------------------------------------------------------------- Adafactor
class Adafactor(Optimizer):
    r"""Adafactor (Shazeer & Stern, 2018, "Adafactor: Adaptive Learning Rates with
    Sublinear Memory Cost"; kernel :func:`deepoptim.functional.adafactor`, whose docstring
    has the math), as torch 2.13's ``torch.optim.Adafactor``: the same arguments, defaults
    and trajectory. Adam-like steps whose second moment of a matrix is kept as its row and
    column means only (state ``row_var`` of shape (..., R, 1) and ``col_var`` of shape
    (..., 1, C) for a parameter of two or more dimensions, ``variance`` of the
    parameter's shape for a vector), a relative step size
    ``max(eps2, rms(p)) * min(lr, 1/sqrt(t))`` and the update's RMS clipped to ``d``.

    A state a parameter does without (``variance`` of a matrix, the factors of a vector)
    is an empty array of shape (0,) in :meth:`state_dict`. The decay is decoupled
    (``p *= 1 - lr*weight_decay``, torch's). Float32 or float64 parameters, or bfloat16 /
    float16 ones; ``state_dtype``, ``master_weights`` and ``stochastic_rounding`` as for
    every optimizer (the step runs on float32 copies, see :meth:`Optimizer._widened_step`;
    eps1 is then float32's epsilon, the precision the math runs in). The deepoptim options of
    :class:`Optimizer` (``l1``, ``skip_nonfinite``, ``grad_norm_ratio``) are keyword-only.

    Example:
      >>> import numpy as np
      >>> from deepoptim.optim import Adafactor
      >>> w, b = np.ones((4, 3), np.float32), np.zeros(3, np.float32)
      >>> opt = Adafactor({"w": w, "b": b})
      >>> opt.step({"w": np.ones((4, 3), np.float32), "b": np.ones(3, np.float32)})
      True
      >>> opt.state_dict()["state"][0]["row_var"][0].shape
      (4, 1)
    """

    torch_name, example = "Adafactor", dict(lr=1e-2)
    _kernel_decouples = True  # Adafactor's decay is its own (p *= 1 - lr*weight_decay)
    _widened = True
    _nonnegative_state = ("row_var", "col_var", "variance")

    def __init__(self, params: Params, lr: Union[float, Schedule] = 1e-2, beta2_decay: float = -0.8,
                 eps: Tuple[Optional[float], float] = (None, 1e-3), d: float = 1.0, weight_decay: float = 0.0, *,
                 maximize: bool = False, **common: Any) -> None:
        common.setdefault("decoupled_weight_decay", True)
        super().__init__(params, dict(lr=lr, beta2_decay=beta2_decay,
                                      eps=tuple(eps) if isinstance(eps, (tuple, list)) else eps, d=d,
                                      weight_decay=weight_decay, maximize=maximize), **common)

    def _state_names(self, g: Mapping[str, Any]) -> List[str]:
        return ["row_var", "col_var", "variance"]

    def _state_shape(self, g: Mapping[str, Any], name: str, p: Array) -> Tuple[int, ...]:
        shape = tuple(p.shape)
        if name not in ("row_var", "col_var", "variance"):  # master_param
            return shape
        if len(shape) >= 2:
            return {"row_var": shape[:-1] + (1,), "col_var": shape[:-2] + (1, shape[-1])}.get(name, (0,))
        return shape if name == "variance" else (0,)

    def _init_state(self, g: Mapping[str, Any], name: str, p: Array) -> Array:
        return np.zeros(self._state_shape(g, name, p), p.dtype)

    def _kernel(self, hp: Mapping[str, Any], idx: List[int], params: List[Array], grads: List[Array],
                states: Dict[str, List[Array]], lr: float, step: int) -> None:
        rv: List[Optional[Array]] = []
        cv: List[Optional[Array]] = []
        v: List[Optional[Array]] = []
        for p, a, b, c in zip(params, states["row_var"], states["col_var"], states["variance"]):
            factored = p.ndim >= 2
            rv.append(a if factored else None)
            cv.append(b if factored else None)
            v.append(None if factored else c)
        F.adafactor(params, grads, rv, cv, v, step=step, lr=lr, beta2_decay=hp["beta2_decay"], eps=tuple(hp["eps"]),
                    d=hp["d"], weight_decay=hp["weight_decay"], maximize=hp["maximize"])



# -------------------------------------------------------------------------- L-BFGS
def _cubic_interpolate(x1: float, f1: float, g1: float, x2: float, f2: float, g2: float,
                       bounds: Optional[Tuple[float, float]] = None) -> float:
    """The minimizer of the cubic through (x1, f1, g1) and (x2, f2, g2), clamped to
    ``bounds`` (default: the interval); the midpoint where the cubic has none (Nocedal &
    Wright, "Numerical Optimization", 2nd ed., eq. 3.59). As torch.optim.lbfgs's."""
    if bounds is not None:
        xmin_bound, xmax_bound = bounds
    else:
        xmin_bound, xmax_bound = (x1, x2) if x1 <= x2 else (x2, x1)
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1**2 - g1 * g2
    if d2_square >= 0:
        d2: float = np.sqrt(d2_square)
        if x1 <= x2:
            min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
        else:
            min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
        return min(max(min_pos, xmin_bound), xmax_bound)
    return (xmin_bound + xmax_bound) / 2.0


def _dot(a: Array, b: Array) -> Any:
    """L-BFGS's inner product on the reduce kernel (:func:`deepoptim.functional.dots`):
    summed in float64 in a fixed order, so the iteration does not depend on the thread
    count or the instruction set (as BLAS's dot may), then given the vectors' dtype, as
    ``a.dot(b)`` would be."""
    return a.dtype.type(F.dots(a, b))


def _max_abs(a: Array) -> Any:
    """max |a| (0 for an empty vector, NaN if any is NaN), on the reduce kernel."""
    return a.dtype.type(F.norms(a, math.inf))


def _strong_wolfe(obj_func: Callable[[List[Array], float, Array], Tuple[float, Array]], x: List[Array], t: float,
                  d: Array, f: float, g: Array, gtd: float, c1: float = 1e-4, c2: float = 0.9,
                  tolerance_change: float = 1e-9, max_ls: int = 25) -> Tuple[float, Array, float, int]:
    """A line search along ``d`` for a step ``t`` meeting the strong Wolfe conditions
    (sufficient decrease ``c1``, curvature ``c2``; Nocedal & Wright, algorithms 3.5 and
    3.6): bracketing, then zooming by cubic interpolation, as torch.optim.lbfgs's
    ``_strong_wolfe`` step for step. Returns (f, g, t, evaluations)."""
    d_norm = _max_abs(d)
    g = g.copy()
    f_new, g_new = obj_func(x, t, d)
    ls_func_evals = 1
    gtd_new = _dot(g_new, d)
    t_prev: float
    t_prev, f_prev, g_prev, gtd_prev = 0, f, g, gtd
    done = False
    ls_iter = 0
    while ls_iter < max_ls:  # bracketing
        if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
            bracket, bracket_f, bracket_g = [t_prev, t], [f_prev, f_new], [g_prev, g_new.copy()]
            bracket_gtd = [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_f, bracket_g = [t], [f_new], [g_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bracket_f, bracket_g = [t_prev, t], [f_prev, f_new], [g_prev, g_new.copy()]
            bracket_gtd = [gtd_prev, gtd_new]
            break
        min_step = t + 0.01 * (t - t_prev)
        max_step = t * 10
        tmp = t
        t = _cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(min_step, max_step))
        t_prev, f_prev, g_prev, gtd_prev = tmp, f_new, g_new.copy(), gtd_new
        f_new, g_new = obj_func(x, t, d)
        ls_func_evals += 1
        gtd_new = _dot(g_new, d)
        ls_iter += 1
    if ls_iter == max_ls:  # reached the maximum number of iterations
        bracket, bracket_f, bracket_g = [0, t], [f, f_new], [g, g_new]
    insuf_progress = False
    low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:  # zoom
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break
        t = _cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0], bracket[1], bracket_f[1], bracket_gtd[1])
        eps = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - t, t - min(bracket)) < eps:
            if insuf_progress or t >= max(bracket) or t <= min(bracket):
                t = max(bracket) - eps if abs(t - max(bracket)) < abs(t - min(bracket)) else min(bracket) + eps
                insuf_progress = False
            else:
                insuf_progress = True
        else:
            insuf_progress = False
        f_new, g_new = obj_func(x, t, d)
        ls_func_evals += 1
        gtd_new = _dot(g_new, d)
        ls_iter += 1
        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low_pos]:
            bracket[high_pos], bracket_f[high_pos] = t, f_new
            bracket_g[high_pos], bracket_gtd[high_pos] = g_new.copy(), gtd_new
            low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high_pos] - bracket[low_pos]) >= 0:
                bracket[high_pos], bracket_f[high_pos] = bracket[low_pos], bracket_f[low_pos]
                bracket_g[high_pos], bracket_gtd[high_pos] = bracket_g[low_pos], bracket_gtd[low_pos]
            bracket[low_pos], bracket_f[low_pos] = t, f_new
            bracket_g[low_pos], bracket_gtd[low_pos] = g_new.copy(), gtd_new
    return bracket_f[low_pos], bracket_g[low_pos], bracket[low_pos], ls_func_evals


def _lbfgs_hyper(lr: float, max_iter: int, max_eval: Optional[float], tolerance_grad: float,
                 tolerance_change: float, history_size: int, line_search_fn: Optional[str]) -> Dict[str, Any]:
    """L-BFGS's hyperparameters, checked; ``max_eval=None`` is ``max_iter * 5 // 4``."""
    if not (_is_real(lr) and math.isfinite(lr) and lr >= 0):
        raise ValueError(f"lr must be a finite number >= 0, got {lr!r}")
    v: float  # ints first, then reals
    for name, v in (("max_iter", max_iter), ("history_size", history_size)):
        if not (_is_int(v) and v >= 1):
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    if max_eval is None:
        max_eval = max_iter * 5 // 4
    if not (_is_int(max_eval) or (_is_real(max_eval) and math.isfinite(max_eval))) or max_eval < 1:
        raise ValueError(f"max_eval must be None or a number >= 1, got {max_eval!r}")
    for name, v in (("tolerance_grad", tolerance_grad), ("tolerance_change", tolerance_change)):
        if not (_is_real(v) and math.isfinite(v) and v >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    if line_search_fn not in (None, "strong_wolfe"):
        raise ValueError(f"line_search_fn must be None or 'strong_wolfe', got {line_search_fn!r}")
    return dict(lr=float(lr), max_iter=int(max_iter), max_eval=max_eval, tolerance_grad=float(tolerance_grad),
                tolerance_change=float(tolerance_change), history_size=int(history_size),
                line_search_fn=line_search_fn)



def _lbfgs_lowp(master_weights: Any, state_dtype: Any, dtype: np.dtype) -> bool:
    """L-BFGS's low-precision options, checked against the parameters' dtype; returns
    whether float32 master copies are kept. ``master_weights`` as every optimizer's (for
    bfloat16/float16 parameters only); ``state_dtype`` only None or ``"float32"``: the
    history stays in the precision the iteration runs in."""
    if state_dtype not in (None, "float32"):
        raise ValueError(
            f"state_dtype={state_dtype!r} is not supported by LBFGS, which keeps its history (the pairs "
            "s = x_{k+1} - x_k and y = g_{k+1} - g_k, 1/y's, the last direction and gradient) in float32 (float64 "
            "for float64 parameters): every direction comes from inner products of these vectors (y's, y'y, s'q), "
            "and y, a small difference of two gradients, loses those to rounding in 8 significant bits (bfloat16) "
            "or 8-bit codes; in float16 1/y's overflows. state_dtype takes None or 'float32'")
    if not isinstance(master_weights, (bool, np.bool_)):
        raise TypeError(f"master_weights must be a bool, got {master_weights!r}")
    if master_weights and dtype not in _16BIT:
        raise ValueError("master_weights=True keeps float32 copies of bfloat16 or float16 parameters; "
                         f"these are {dtype}")
    return bool(master_weights)

class _FlatSpace(Protocol):
    """The parameters as one vector, as :func:`_lbfgs_step` uses them."""

    def evaluate(self) -> Any: ...
    def flat_grad(self) -> Array: ...
    def add(self, t: float, d: Array) -> None: ...
    def clone(self) -> List[Array]: ...
    def restore(self, x: List[Array]) -> None: ...


def _lbfgs_step(state: Dict[str, Any], hp: Mapping[str, Any], space: _FlatSpace) -> None:
    """One L-BFGS step (up to ``max_iter`` iterations; Nocedal & Wright, algorithm 7.4,
    the two-loop recursion, with torch's initial step, stopping rules and optional
    strong-Wolfe line search), as torch.optim.LBFGS.step computes it, on flat vectors in
    the parameters' dtype. ``space`` gives the parameters as one vector: ``evaluate()``
    (run the closure: the loss as a float; the gradients are then read by ``flat_grad()``),
    ``add(t, d)`` (parameters += t*d), ``clone()`` and ``restore(x)``. ``state`` holds
    torch's state names (``func_evals``, ``n_iter``, ``d``, ``t``, ``old_dirs``,
    ``old_stps``, ``ro``, ``H_diag``, ``prev_flat_grad``, ``prev_loss``, ``al``) with NumPy
    values; returns with the closure's first loss in ``state["_loss"]``."""
    lr, max_iter, max_eval = hp["lr"], hp["max_iter"], hp["max_eval"]
    tolerance_grad, tolerance_change = hp["tolerance_grad"], hp["tolerance_change"]
    line_search_fn, history_size = hp["line_search_fn"], hp["history_size"]
    state.setdefault("func_evals", 0)
    state.setdefault("n_iter", 0)
    orig_loss = space.evaluate()
    state["_loss"] = orig_loss
    loss = float(orig_loss)
    current_evals = 1
    state["func_evals"] += 1
    flat_grad = space.flat_grad()
    if _max_abs(flat_grad) <= tolerance_grad:  # optimal already
        return
    d, t = state.get("d"), state.get("t")
    old_dirs, old_stps, ro = state.get("old_dirs"), state.get("old_stps"), state.get("ro")
    H_diag, prev_flat_grad, prev_loss = state.get("H_diag"), state.get("prev_flat_grad"), state.get("prev_loss")
    n_iter = 0
    while n_iter < max_iter:
        n_iter += 1
        state["n_iter"] += 1
        if state["n_iter"] == 1:  # the first direction: steepest descent
            d = -flat_grad
            old_dirs, old_stps, ro = [], [], []
            H_diag = 1
        else:
            # Set by an earlier iteration (this step's, or a previous step's in ``state``).
            d, old_dirs, old_stps, ro = (cast(Array, d), cast("List[Array]", old_dirs), cast("List[Array]", old_stps),
                                         cast("List[float]", ro))
            y = flat_grad - prev_flat_grad
            s = d * t
            ys = _dot(y, s)
            if ys > 1e-10:  # update the memory (curvature condition)
                if len(old_dirs) == history_size:
                    old_dirs.pop(0)
                    old_stps.pop(0)
                    ro.pop(0)
                old_dirs.append(y)
                old_stps.append(s)
                ro.append(1.0 / ys)
                H_diag = ys / _dot(y, y)
            num_old = len(old_dirs)
            if "al" not in state:
                state["al"] = [None] * history_size
            al = state["al"]
            q = -flat_grad  # the two-loop recursion: d = -H g
            for i in range(num_old - 1, -1, -1):
                al[i] = _dot(old_stps[i], q) * ro[i]
                q += -al[i] * old_dirs[i]
            d = r = q * H_diag
            for i in range(num_old):
                be_i = _dot(old_dirs[i], r) * ro[i]
                r += (al[i] - be_i) * old_stps[i]
        if prev_flat_grad is None:
            prev_flat_grad = flat_grad.copy()
        else:
            np.copyto(prev_flat_grad, flat_grad)
        prev_loss = loss
        t = min(1.0, 1.0 / flat_grad.dtype.type(F.norms(flat_grad, 1))) * lr if state["n_iter"] == 1 else lr
        gtd = _dot(flat_grad, d)
        if gtd > -tolerance_change:  # not a descent direction
            break
        ls_func_evals = 0
        if line_search_fn is not None:
            x_init = space.clone()

            def obj_func(x: List[Array], t: float, d: Array) -> Tuple[float, Array]:
                space.add(t, d)
                f = float(space.evaluate())
                g = space.flat_grad()
                space.restore(x)
                return f, g

            loss, flat_grad, t, ls_func_evals = _strong_wolfe(obj_func, x_init, t, d, loss, flat_grad, gtd,
                                                              max_ls=max_eval - current_evals)
            space.add(t, d)
            opt_cond = _max_abs(flat_grad) <= tolerance_grad
        else:
            space.add(t, d)  # a fixed step
            opt_cond = False
            if n_iter != max_iter:
                loss = float(space.evaluate())
                flat_grad = space.flat_grad()
                opt_cond = _max_abs(flat_grad) <= tolerance_grad
                ls_func_evals = 1
        current_evals += ls_func_evals
        state["func_evals"] += ls_func_evals
        if n_iter == max_iter or current_evals >= max_eval or opt_cond:
            break
        if np.abs(d * t).max() <= tolerance_change:  # lack of progress
            break
        if abs(loss - prev_loss) < tolerance_change:
            break
    state.update(d=d, t=t, old_dirs=old_dirs, old_stps=old_stps, ro=ro, H_diag=H_diag,
                 prev_flat_grad=prev_flat_grad, prev_loss=prev_loss)


class _LBFGSSpace:
    """The parameters as one vector, for :func:`_lbfgs_step`: ``views`` are NumPy arrays
    over the parameters' memory, ``evaluate()`` runs the closure, ``flat_grads()`` returns
    the gradients as one vector. bfloat16/float16 parameters are iterated in float32
    copies and written back rounded to nearest even after every move, so the closure sees
    the rounded point while the directions, step sizes and history stay float32 (in
    float16 the curvature pairs' ``1 / y's`` overflows, as torch's does: NaN weights).
    The copies are made from the parameters at every step, or are ``masters`` (the
    float32 master weights, kept from step to step). ``moved()`` is called after every
    write (torch's version counters)."""

    def __init__(self, views: List[Array], evaluate: Callable[[], Any], flat_grads: Callable[[], Array],
                 moved: Callable[[], None] = lambda: None, masters: Optional[List[Array]] = None) -> None:
        self.views, self._evaluate, self._flat, self._moved = views, evaluate, flat_grads, moved
        self.lowp = views[0].dtype in _16BIT
        self.dtype = np.dtype(np.float32) if self.lowp else views[0].dtype
        if masters is not None:  # master_weights: the float32 copies are the iterate, moved in place
            self.work = masters
        else:
            self.work = [v.astype(np.float32) for v in views] if self.lowp else views

    def evaluate(self) -> Any:
        return self._evaluate()

    def flat_grad(self) -> Array:
        return self._flat().astype(self.dtype, copy=False)

    def _written(self) -> None:
        if self.lowp:
            F.cast(self.work, self.views)
        self._moved()

    def add(self, t: float, d: Array) -> None:
        off = 0
        for w in self.work:
            n = w.size
            w += (t * d[off:off + n]).reshape(w.shape)
            off += n
        self._written()

    def clone(self) -> List[Array]:
        return [w.copy() for w in self.work]

    def restore(self, x: List[Array]) -> None:
        for w, a in zip(self.work, x):
            np.copyto(w, a)
        self._written()


class LBFGS:
    r"""L-BFGS (Liu & Nocedal, 1989, "On the limited memory BFGS method for large scale
    optimization"; Nocedal & Wright, "Numerical Optimization", algorithm 7.4), as
    torch.optim.LBFGS: same arguments, defaults, iterations, stopping rules and optional
    strong-Wolfe line search (``line_search_fn="strong_wolfe"``), so trajectories equal
    torch's. Each :meth:`step` runs up to ``max_iter`` iterations, calling ``closure``
    as often as it needs (at most ``max_eval`` times).

    The memory keeps the last ``history_size`` pairs :math:`s_k = x_{k+1} - x_k`,
    :math:`y_k = g_{k+1} - g_k` (a pair is kept when :math:`y^\top s > 10^{-10}`); the
    direction :math:`d = -H g` comes from the two-loop recursion with
    :math:`H_0 = (y^\top s / y^\top y) I`. Without line search the step is ``lr`` (the
    first one ``min(1, 1/|g|_1) * lr``).

    Args:
      params: a list or dict of arrays of one dtype (one group: L-BFGS treats all
        parameters as one vector), updated in place. bfloat16/float16 parameters are
        iterated in float32 (directions, steps and history), each move written back
        rounded to nearest even, so the closure evaluates the rounded point.
      lr: the step size, as torch.optim.LBFGS's.
      max_iter: iterations per :meth:`step`, as torch.optim.LBFGS's.
      max_eval: closure evaluations per :meth:`step` (default ``max_iter * 5 // 4``), as
        torch.optim.LBFGS's.
      tolerance_grad: as torch.optim.LBFGS's.
      tolerance_change: as torch.optim.LBFGS's.
      history_size: as torch.optim.LBFGS's.
      line_search_fn: None or ``"strong_wolfe"``, as torch.optim.LBFGS's.
      master_weights: for bfloat16/float16 parameters, keep the float32 iterate from step
        to step (``state["master_param"]``, one float32 copy per parameter, made at
        construction): each :meth:`step` continues from it instead of from the rounded
        parameters, so moves below the parameters' resolution add up across steps as they
        do within one. The parameters are its rounding to nearest even. As every
        optimizer's ``master_weights``; refused (ValueError) for float32/float64 ones.
      state_dtype: None or ``"float32"`` only. The history (the pairs ``s``, ``y``,
        ``1/y's``, the last direction and gradient) stays in the precision the iteration
        runs in (float32; float64 for float64 parameters): the directions are inner
        products of these vectors, and ``y``, a small difference of two gradients, loses
        them to rounding in bfloat16 or 8 bits. ``"bfloat16"`` and ``"int8"`` are refused
        with a ValueError that says so.

    Example:
      >>> import numpy as np
      >>> from deepoptim.optim import LBFGS
      >>> x = np.array([3.0, -2.0])
      >>> opt = LBFGS([x], line_search_fn="strong_wolfe")
      >>> loss = opt.step(lambda: (float(x @ x), [2 * x]))
      >>> bool(np.abs(x).max() < 1e-6)
      True
    """

    def __init__(self, params: Union[Sequence[Array], Mapping[str, Array]], lr: float = 1, max_iter: int = 20,
                 max_eval: Optional[int] = None, tolerance_grad: float = 1e-7, tolerance_change: float = 1e-9,
                 history_size: int = 100, line_search_fn: Optional[str] = None, *, master_weights: bool = False,
                 state_dtype: Optional[str] = None) -> None:
        self.defaults = _lbfgs_hyper(lr, max_iter, max_eval, tolerance_grad, tolerance_change, history_size,
                                     line_search_fn)
        if _is_group_list(params):
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")
        if isinstance(params, np.ndarray):
            raise TypeError("params must be a list or dict of arrays, not a single array (wrap it in a list)")
        self._keyed = isinstance(params, Mapping)
        if isinstance(params, Mapping):
            names, arrays = [str(k) for k in params], list(params.values())
        else:
            names, arrays = [str(i) for i in range(len(params))], list(params)
        if not arrays:
            raise ValueError("params is empty")
        arrays = [_check_param(a, n) for a, n in zip(arrays, names)]
        if len({a.dtype for a in arrays}) != 1:
            raise TypeError("LBFGS's parameters must share one dtype (they form one vector)")
        Optimizer._refuse_overlap([(n, _span(a)) for n, a in zip(names, arrays)])
        self.defaults["master_weights"] = _lbfgs_lowp(master_weights, state_dtype, arrays[0].dtype)
        self.param_groups = [dict(self.defaults, params=arrays, names=names)]
        self.state: Dict[str, Any] = {}
        if master_weights:
            self.state["master_param"] = [a.astype(np.float32) for a in arrays]
        self._lock = threading.RLock()

    def _grads(self, grads: Any) -> List[Array]:
        g = self.param_groups[0]
        if self._keyed:
            if not isinstance(grads, Mapping) or set(grads) != set(g["names"]):
                raise ValueError(f"the closure must return gradients for exactly {g['names']}")
            grads = [grads[n] for n in g["names"]]
        elif isinstance(grads, np.ndarray) or not isinstance(grads, (list, tuple)) or len(grads) != len(g["params"]):
            raise ValueError(f"the closure must return a list of {len(g['params'])} gradients")
        out = []
        for n, p, a in zip(g["names"], g["params"], grads):
            if a is None:
                out.append(np.zeros_like(p))  # as torch: a missing gradient counts as zero
                continue
            if not isinstance(a, np.ndarray) or a.shape != p.shape:
                raise ValueError(f"gradient {n} must be an array of shape {p.shape}")
            out.append(a)
        return out

    @_locked
    def step(self, closure: Callable[[], Tuple[float, Any]]) -> float:
        """Runs up to ``max_iter`` iterations. ``closure()`` evaluates the objective at
        the parameters' current values and returns ``(loss, grads)``, the gradients in the
        parameters' structure (list or dict; None counts as zeros). Returns the first
        loss. The hyperparameters are read from ``param_groups[0]``."""
        g = self.param_groups[0]
        hp = _lbfgs_hyper(*(g[k] for k in ("lr", "max_iter", "max_eval", "tolerance_grad", "tolerance_change",
                                            "history_size", "line_search_fn")))
        params = g["params"]
        if _lbfgs_lowp(g["master_weights"], None, params[0].dtype) != ("master_param" in self.state):
            raise ValueError(f"master_weights={g['master_weights']!r}, but the state "
                             f"{'lacks' if g['master_weights'] else 'has'} master weights; master_weights cannot "
                             "change after construction")
        box: Dict[str, Any] = {}

        def evaluate() -> Any:
            loss, grads = closure()
            box["grads"] = self._grads(grads)
            return loss

        space = _LBFGSSpace(params, evaluate, lambda: np.concatenate([a.reshape(-1) for a in box["grads"]]),
                            masters=self.state.get("master_param"))
        try:
            _lbfgs_step(self.state, hp, space)
        finally:
            loss = self.state.pop("_loss", None)
        return cast(float, loss)  # the closure's first loss (set before anything could fail)

    def state_dict(self) -> Dict[str, Any]:
        """Copies of the hyperparameters and the state (torch's names)."""
        import copy

        g = self.param_groups[0]
        return {"optimizer": "LBFGS", "param_groups": [{k: g[k] for k in self.defaults}],
                "state": copy.deepcopy(self.state)}

    @_locked
    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        """Restores a :meth:`state_dict` (hyperparameters checked first; with
        ``master_weights`` one float32 master copy per parameter, of its shape; a state_dict
        saved before ``master_weights`` existed loads as without)."""
        import copy

        if not isinstance(sd, Mapping) or sd.get("optimizer") != "LBFGS":
            raise ValueError("not an LBFGS state_dict")
        (h,) = sd["param_groups"]
        hp = _lbfgs_hyper(*(h[k] for k in ("lr", "max_iter", "max_eval", "tolerance_grad", "tolerance_change",
                                            "history_size", "line_search_fn")))
        params = self.param_groups[0]["params"]
        hp["master_weights"] = _lbfgs_lowp(h.get("master_weights", self.defaults["master_weights"]), None, params[0].dtype)
        masters = sd["state"].get("master_param")
        if hp["master_weights"] != (masters is not None):
            raise ValueError(f"state_dict: master_weights={hp['master_weights']} but its state "
                             f"{'lacks' if hp['master_weights'] else 'has'} master_param")
        if masters is not None and not (
                isinstance(masters, (list, tuple)) and len(masters) == len(params)
                and all(isinstance(m, np.ndarray) and m.dtype == np.float32 and m.shape == p.shape
                        for m, p in zip(masters, params))):
            raise ValueError("state_dict: state master_param must hold one float32 array per parameter, of its shape")
        self.param_groups[0].update(hp)
        self.state = copy.deepcopy(dict(sd["state"]))


__all__ = ["Optimizer", "REGISTRY", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "Adamax", "RAdam", "Adadelta", "Rprop", "NAdam", "ASGD", "Lion", "ScheduleFreeAdamW", "LAMB", "LARS", "Muon", "Adafactor", "LBFGS", "NonFiniteGradients"]
