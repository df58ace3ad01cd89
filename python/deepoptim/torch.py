"""torch.optim drop-ins on deepoptim's kernels: change one import line.

    from deepoptim.torch import AdamW        # instead of: from torch.optim import AdamW

Every optimizer of :data:`deepoptim.optim.REGISTRY` is here as a
``torch.optim.Optimizer`` subclass of the same name: the ones torch has (``SGD``,
``Adam``, ``AdamW``, ``Adagrad``, ``RMSprop``, ``Adamax``, ``RAdam``, ``Adadelta``,
``Rprop``, ``NAdam``, ``ASGD``) with exactly torch 2.13's positional and keyword arguments
and defaults, its state names, dtypes and layout (``step``, ``exp_avg``, ``exp_avg_sq``,
``max_exp_avg_sq``, ``momentum_buffer``, ``sum``, ``square_avg``, ``grad_avg``,
``exp_inf``, ..., and the 0-d ``mu_product``, ``eta``, ``mu`` in torch's scalar dtype)
and ``state_dict`` (a torch.optim state_dict
loads here and the reverse); the others (``Lion``, ``ScheduleFreeAdamW``, ``LAMB``, ``LARS``) with deepoptim's
arguments (``ScheduleFreeAdamW`` with its ``train()``/``eval()`` switch).
deepoptim's extra options (``momentum_form``, ``bias_correction``, ``eps_inside_sqrt``,
``decoupled_weight_decay``, ``l1``, ``l1_mode``, ``skip_nonfinite``,
``grad_norm_ratio``, LAMB/LARS's ``exclude``) are keyword-only.

How a step runs: for every parameter group, one GIL-free list-form kernel call per
parameter dtype (and per step count, which differs only after steps where some
parameters had no gradient), directly on the tensors' own memory (NumPy views of CPU
tensors: no copy of a parameter, gradient or state tensor). Everything is checked
before anything is written. ``foreach`` and ``fused`` are accepted and ignored (every
step is one fused pass per group); ``capturable=True`` and ``differentiable=True`` are
refused: they exist for CUDA graphs and for autograd through the step, and this step
runs on the CPU outside autograd.

Under torch.distributed, the engines hand the optimizer what it steps: DDP replicated
parameters, ``ZeroRedundancyOptimizer`` its local shard (optionally as views into one
flat bucket), FSDP2's ``fully_shard`` DTensors, whose local shards are stepped here. The
optimizers that need each parameter whole (LAMB, LARS, Muon, Adafactor, LBFGS) refuse a
sharded DTensor; ``skip_nonfinite`` and ``grad_norm_ratio`` all-reduce their sums over
sharded gradients across the shards' process groups, so every rank decides alike.
"""

from __future__ import annotations

import inspect
import math
import warnings
from typing import TYPE_CHECKING, Any, Callable, DefaultDict, Dict, List, Optional, Tuple, Type

try:
    import torch
except ImportError as e:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "deepoptim.torch needs PyTorch. Install the CPU build deepoptim is tested with: "
        'pip install "torch==2.13.0" (or pip install "deepoptim[torch]")'
    ) from e

import ml_dtypes
import numpy as np
import numpy.typing as npt

from deepoptim import _core, clip
from deepoptim import functional as F
from deepoptim import optim as _np
from deepoptim.reference._lowp import QBLOCK, Blockwise8

if TYPE_CHECKING:  # torch's type of an optimizer's params (torch >= 2.2)
    from torch.optim.optimizer import ParamsT

_TORCH_FLAGS = ("foreach", "fused", "capturable", "differentiable")
_FLOATS = (torch.float32, torch.float64)
_PARAM_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
_NP_DTYPE = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64),
             torch.bfloat16: np.dtype(ml_dtypes.bfloat16), torch.float16: np.dtype(np.float16)}
_TORCH_DTYPE = {v: k for k, v in _NP_DTYPE.items()}
_RAW_NAME = {torch.float32: "float32", torch.float64: "float64", torch.bfloat16: "bfloat16",
             torch.float16: "float16"}


def _scalar_dtype() -> torch.dtype:
    """The dtype torch.optim gives 0-d state (NAdam's mu_product, ASGD's eta and mu)."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _local(t: torch.Tensor) -> torch.Tensor:
    """The tensor whose memory a step updates: the local shard of a DTensor (FSDP2)."""
    return t.to_local() if hasattr(t, "to_local") and hasattr(t, "device_mesh") else t


def _shard_groups(t: torch.Tensor) -> Tuple[Any, ...]:
    """The process groups across which a DTensor (FSDP2) is split into local shards: one
    per device-mesh dimension it is sharded on; () for a plain or a replicated tensor."""
    mesh = getattr(t, "device_mesh", None)
    if mesh is None or not hasattr(t, "placements"):
        return ()
    return tuple(mesh.get_group(i) for i, pl in enumerate(t.placements) if pl.is_shard() and mesh.size(i) > 1)


# What these optimizers compute over a whole parameter (or over all of them). Under FSDP2 a
# rank holds one shard of each parameter, and the same computation on the shard is another
# quantity: the step would be silently wrong, so a sharded parameter is refused instead.
_WHOLE_TENSOR = {
    "LAMB": "its trust ratio divides the norm of the whole parameter by that of its whole update",
    "LARS": "its trust ratio divides the norm of the whole parameter by that of its whole gradient",
    "Muon": "its Newton-Schulz iteration orthogonalizes the whole matrix",
    "Adafactor": ("its second moments are row and column means of the whole gradient, and its step is "
                  "scaled by the whole parameter's RMS"),
    "LBFGS": "its directions come from inner products of all the parameters' whole gradients",
}


def _refuse_sharded(optimizer: str, p: torch.Tensor, name: str) -> None:
    """Refuses a sharded parameter (a DTensor split across ranks) for an optimizer that
    needs each parameter whole."""
    reason = _WHOLE_TENSOR.get(optimizer)
    if reason is not None and _shard_groups(p):
        placements = tuple(getattr(p, "placements", ()))
        raise ValueError(
            f"parameter {name} is sharded across ranks (a DTensor with placements {placements}, as FSDP2 "
            f"makes it); {optimizer} needs it whole ({reason}), and a rank holds only its shard. Step sharded "
            "parameters with an elementwise optimizer (SGD, Adam, AdamW, Lion, ...), or pass these parameters to "
            "fully_shard as ignored_params (FSDP2 then neither shards them nor reduces their gradients: average "
            "those yourself before the step)")


def _all_reduced(value: float, op: Any, groups: Tuple[Any, ...]) -> float:
    """``value`` reduced with ``op`` across each process group in turn (every rank calls
    this at the same point of its step, as FSDP2's collectives require)."""
    t = torch.tensor([value], dtype=torch.float64)
    for pg in groups:
        torch.distributed.all_reduce(t, op=op, group=pg)
    return float(t.item())


def _view(t: torch.Tensor) -> np.ndarray:
    """A NumPy view of a CPU tensor's own memory (no copy)."""
    t = _local(t)
    if t.dtype == torch.bfloat16:  # NumPy has no bfloat16: the same bits, as ml_dtypes'
        return t.detach().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    try:
        return t.numpy()
    except RuntimeError:  # requires_grad (a Parameter) or a conjugate/neg view
        return t.detach().numpy()


class _LowpState:
    """How deepoptim.torch keeps a parameter's state in the storage the
    :mod:`deepoptim.optim` class ``self._spec`` asks for (``state_dtype``,
    ``master_weights``): float32 master copies (``master_param``), float32 or bfloat16
    state, or 8-bit state as two tensors, ``<name>`` (uint8 codes) and ``<name>_absmax``
    (float32, one per 256-element block). The values are made by the class itself
    (``_spec._new_state``) and handed to it as NumPy views of the tensors (or a Blockwise8
    of them): one definition of each state's storage, in deepoptim.optim. Shared by the
    elementwise adapters and by Muon and Adafactor."""

    if TYPE_CHECKING:  # from torch.optim.Optimizer and the adapter, the other bases
        _spec: _np.Optimizer
        param_groups: List[Dict[str, Any]]
        state: DefaultDict[torch.Tensor, Any]

    def _state_dtype(self, hyper: Dict[str, Any], p: torch.Tensor, name: str) -> torch.dtype:
        """The dtype of state tensor ``name`` of parameter ``p``: float32 for a master copy;
        with ``state_dtype="int8"``, uint8 codes and their float32 ``<name>_absmax`` for a
        parameter of at least ``int8_min_size`` elements (float32 state for a smaller
        one); else the group's state dtype (deepoptim.optim's ``state_dtype``: float32 by
        default for float32/bfloat16/float16 parameters, where torch.optim would keep the
        parameter's dtype; float64 for float64 parameters)."""
        t = _local(p)
        if name == "master_param":
            return torch.float32
        if hyper.get("state_dtype") == "int8":
            if self._int8(hyper, p):
                return torch.float32 if name.endswith("_absmax") else torch.uint8
            return torch.float32
        return _TORCH_DTYPE[self._spec._state_dtype(hyper, _NP_DTYPE[t.dtype])]

    @staticmethod
    def _int8(hyper: Dict[str, Any], p: torch.Tensor) -> bool:
        return hyper.get("state_dtype") == "int8" and _local(p).numel() >= hyper.get("int8_min_size", _np.INT8_MIN_SIZE)

    def _state_value(self, hyper: Dict[str, Any], p: torch.Tensor, st: Dict[str, Any], n: str) -> Any:
        """What the kernel takes for state ``n``: a NumPy view, or for 8-bit state a
        Blockwise8 of views of the codes and ``<n>_absmax`` tensors."""
        if n not in self._spec._scalar_state and n != "master_param" and self._int8(hyper, p):
            return Blockwise8(_view(st[n]), _view(st[n + "_absmax"]), n not in self._spec._nonnegative_state)
        return _view(st[n])

    @staticmethod
    def _put_state(st: Dict[str, Any], n: str, value: Any) -> None:
        """Puts a state value as deepoptim.optim makes it (an array, or a Blockwise8) into
        the torch state ``st``, as tensors sharing its memory."""
        if isinstance(value, Blockwise8):
            st[n] = torch.from_numpy(value.codes)
            st[n + "_absmax"] = torch.from_numpy(value.absmax)
        elif value.dtype == np.dtype(ml_dtypes.bfloat16):  # torch reads no ml_dtypes array: the same bits
            st[n] = torch.from_numpy(value.view(np.int16)).view(torch.bfloat16)
        else:
            st[n] = torch.from_numpy(value)

    def _check_saved_state(self, where: str, pid: Any, n: str, st: Dict[str, Any], hyper: Dict[str, Any],
                           p: torch.Tensor, shape: Tuple[int, ...]) -> None:
        """State ``n`` of a saved parameter state ``st`` (a state_dict being loaded): a
        tensor of ``shape``; for 8-bit state uint8 codes and a float ``<n>_absmax`` of
        one non-negative value per block; else floating point, and never negative where
        the optimizer keeps a non-negative quantity."""
        t = st[n]
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape:
            raise ValueError(f"{where}: state {n} of parameter {pid} must be a tensor of shape {shape} "
                             f"(from the parameter's shape {tuple(p.shape)})")
        if n != "master_param" and self._int8(hyper, p):
            a = st.get(n + "_absmax")
            nb = -(-math.prod(shape) // QBLOCK)
            if t.dtype != torch.uint8 or not (isinstance(a, torch.Tensor) and a.is_floating_point()
                                              and tuple(a.shape) == (nb,)):
                raise ValueError(f"{where}: state {n} of parameter {pid} is kept in 8 bits: uint8 codes "
                                 f"and a float tensor {n}_absmax of shape ({nb},)")
            if bool((_local(a) < 0).any()):
                raise ValueError(f"{where}: state {n}_absmax of parameter {pid} has negative values")
            return
        if not t.is_floating_point():
            raise ValueError(f"{where}: state {n} of parameter {pid} must be a float tensor, got {t.dtype} "
                             f"(state_dtype={hyper.get('state_dtype')!r})")
        if n in self._spec._nonnegative_state and t.numel() and bool((_local(t) < 0).any()):
            raise ValueError(f"{where}: state {n} of parameter {pid} has negative values, "
                             "which no training produces")

    def _restore_saved(self, groups: List[Dict[str, Any]], saved_state: Dict[Any, Any],
                       hypers: List[Dict[str, Any]]) -> None:
        """After torch.optim's ``load_state_dict``, which casts every floating state tensor
        to its parameter's dtype (in the base class; no hook is called for it) and would
        turn float32 state and master weights of bfloat16 parameters into bfloat16, uint8
        codes into the parameter's dtype, and a 0-d float32 mu_product into the
        parameter's dtype: each state tensor is set again from the saved tensor itself
        (not from the cast), in the dtype this optimizer keeps (``hypers``: each group's
        hyperparameters as deepoptim.optim names them)."""
        for saved, group, hyper in zip(groups, self.param_groups, hypers):
            for pid, p in zip(saved["params"], group["params"]):
                st, mine = saved_state.get(pid), self.state.get(p)
                if not st or not mine:
                    continue
                for n, t in st.items():
                    if n == "step" or not isinstance(t, torch.Tensor):
                        continue
                    if n in self._spec._scalar_state:
                        want = t.dtype if t.dtype in _FLOATS else _scalar_dtype()
                    else:
                        want = self._state_dtype(hyper, p, n)
                    mine[n] = t.detach().to(dtype=want, memory_format=torch.contiguous_format, copy=True)


class _Adapter(_LowpState, torch.optim.Optimizer):
    """The base of every optimizer here: torch.optim's machinery (param groups, state,
    hooks, ``state_dict``, ``zero_grad``) over deepoptim's kernels. A subclass only names
    the :mod:`deepoptim.optim` class it adapts (``_np_cls``); that class says which state
    it keeps and which kernel it calls."""

    _np_cls: Type[_np.Optimizer] = _np.Optimizer
    _signature: inspect.Signature

    def __init__(self, params: ParamsT, *args: Any, **kwargs: Any) -> None:
        bound = self._signature.bind(self, params, *args, **kwargs)
        bound.apply_defaults()
        given = dict(bound.arguments)
        given.pop("self")
        params = given.pop("params")
        flags = {k: given.pop(k) for k in _TORCH_FLAGS if k in given}
        if flags.get("capturable"):
            raise ValueError("capturable=True is for CUDA graphs; deepoptim.torch steps CPU tensors and does not take it")
        if flags.get("differentiable"):
            raise ValueError("differentiable=True (autograd through the step) is not supported: "
                             "deepoptim's kernels update tensors in place, outside autograd")
        lr = given.get("lr")
        if isinstance(lr, torch.Tensor):
            given["lr"] = float(lr)
        guard = {k: given.pop(k) for k in ("skip_nonfinite", "grad_norm_ratio", "grad_norm_ratio_eps") if k in given}
        # The deepoptim.optim class, built on a stand-in parameter, checks every argument
        # (the kernel's own dry run) and supplies the per-group machinery.
        # (master weights and stochastic rounding need 16-bit parameters: a bfloat16
        # stand-in then; each group is checked again with its own dtype when added.)
        lowp = given.get("master_weights") or given.get("stochastic_rounding")
        stand_in = np.zeros(1, ml_dtypes.bfloat16 if lowp else np.float32)
        self._spec = self._np_cls([stand_in], **given, **guard)
        self._guard = self._spec.skip_nonfinite, self._spec.grad_norm_ratio, self._spec.grad_norm_ratio_eps
        self._hyper_keys = list(self._spec.defaults)
        # state["step"]: kept where the update uses it, and wherever torch keeps it (every
        # torch optimizer but SGD), so that state_dicts have torch's layout.
        from deepoptim import reference
        uses_step = "step" in inspect.signature(getattr(reference, self._np_cls.kernel)).parameters
        # Stochastic rounding draws by step: an optimizer that keeps no step otherwise (SGD,
        # Lion, LARS) keeps one then, so that a resumed run draws as the original would.
        self._has_step = (uses_step or self._np_cls.torch_name not in (None, "SGD")
                          or bool(given.get("stochastic_rounding")))
        self._views: Dict[int, Dict[str, Any]] = {}
        self._fast: Dict[int, Dict[str, Any]] = {}
        self._prev_grad_sq_norm: Optional[float] = None
        self._guard_pg: Any = None  # reduce_guard_over's process group
        defaults = dict(self._spec.defaults)
        defaults.update({k: v for k, v in flags.items()})
        super().__init__(params, defaults)

    # ------------------------------------------------------------ groups
    def _hyper(self, group: Dict[str, Any]) -> Dict[str, Any]:
        """The group's hyperparameters as deepoptim names them (a 0-d tensor lr, as torch
        allows, becomes a float; keys a loaded torch state_dict lacks take the defaults)."""
        h = {k: group.get(k, self.defaults[k]) for k in self._hyper_keys}
        if isinstance(h["lr"], torch.Tensor):
            h["lr"] = float(h["lr"])
        if isinstance(h.get("betas"), (tuple, list)):
            h["betas"] = tuple(float(b) if isinstance(b, torch.Tensor) else b for b in h["betas"])
        return h

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        """torch's ``add_param_group``, plus deepoptim's checks before anything is added:
        CPU tensors of float32 or float64, contiguous, and valid hyperparameters."""
        gi = len(self.param_groups)
        param_group = dict(param_group)
        params = param_group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        param_group["params"] = params
        if params and isinstance(params[0], tuple):  # named parameters: torch handles them
            names = [n for n, _ in params]
            tensors = [p for _, p in params]
        else:
            names, tensors = [f"{gi}.{i}" for i in range(len(params))], params
        for n, p in zip(names, tensors):
            self._check_param(p, n)
            _refuse_sharded(self._np_cls.__name__, p, n)
        trial = {k: param_group.get(k, self.defaults[k]) for k in self._hyper_keys}
        if trial["stochastic_rounding"] and not self._has_step:
            raise ValueError(f"parameter group {gi}: stochastic_rounding=True in a group needs it at construction "
                             f"too ({self._np_cls.__name__} then keeps a step count to draw by)")
        dtype = _NP_DTYPE[_local(tensors[0]).dtype] if tensors else np.float32
        self._spec._check_group(self._np_group_stub(trial, dtype), f"parameter group {gi}")
        super().add_param_group(param_group)
        self._views.clear()
        self._fast.clear()

    @staticmethod
    def _check_param(p: torch.Tensor, name: str) -> None:
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"parameter {name} must be a torch.Tensor, got {type(p).__name__}")
        t = _local(p)
        if t.device.type != "cpu":
            raise ValueError(f"parameter {name} is on {t.device}; deepoptim.torch steps CPU tensors "
                             "(keep the optimizer state on the CPU, e.g. with FSDP2's CPUOffloadPolicy)")
        if t.dtype not in _PARAM_DTYPES:
            raise TypeError(f"parameter {name} has dtype {t.dtype}; deepoptim.torch takes float32, float64, "
                            "bfloat16 or float16")
        if t.is_sparse or not t.is_contiguous():
            raise ValueError(f"parameter {name} must be a dense contiguous tensor (it is updated in place)")

    def _np_group_stub(self, hyper: Dict[str, Any], dtype: npt.DTypeLike) -> Dict[str, Any]:
        g = dict(hyper, params=[np.zeros(1, dtype)], names=["0"], keyed=False, step=0)
        self._spec._prepare_group(g)
        return g

    # ------------------------------------------------------------ views
    def _group_views(self, gi: int, group: Dict[str, Any]) -> Dict[str, Any]:
        """The deepoptim.optim view of a torch group: NumPy views of the parameters and
        their state, rebuilt whenever a parameter's memory changed (``model.double()``,
        ``.to()``, a swapped ``.data``) so a step always reaches the model."""
        params = group["params"]
        key = tuple((_local(p).data_ptr(), _local(p).dtype) for p in params)
        cached = self._views.get(gi)
        if cached is not None and cached["key"] == key and cached["params_ref"] is params:
            return cached
        names = group.get("param_names") or [f"{gi}.{i}" for i in range(len(params))]
        for n, p in zip(names, params):
            self._check_param(p, n)
            _refuse_sharded(self._np_cls.__name__, p, n)
            # State follows its parameter (model.double(), .to(...)): the state dtype that
            # goes with the parameter's, same layout.
            st = self.state.get(p)
            if st:
                hyper = self._hyper(group)
                for k, t in st.items():
                    if k == "step" or k in self._spec._scalar_state or k.endswith("_absmax"):
                        continue  # 0-d state keeps its own dtype; an 8-bit state's absmax is per block
                    want = self._state_dtype(hyper, p, k)
                    if isinstance(t, torch.Tensor) and (t.dtype != want or t.shape != p.shape):
                        if t.shape != p.shape:
                            raise ValueError(f"parameter {n} changed shape from {tuple(t.shape)} to "
                                             f"{tuple(p.shape)}; its optimizer state no longer fits")
                        st[k] = t.to(dtype=want).contiguous()
        v = {"key": key, "params_ref": params, "names": list(names), "tensors": list(params),
             "np_params": [_view(p) for p in params]}
        self._views[gi] = v
        return v

    def _state_views(self, group_np: Dict[str, Any], tensors: List[torch.Tensor], state_names: List[str],
                     pending: Dict[int, Dict[str, Any]]) -> Tuple[Dict[str, List[Any]], List[int]]:
        """Per-state-name lists of NumPy views (None where a parameter has no state yet and
        no gradient), and the per-parameter step counts. New state goes to ``pending``
        and enters ``self.state`` only once the whole step is known to succeed."""
        views: Dict[str, List[Any]] = {n: [] for n in state_names}
        hyper = {k: group_np[k] for k in self._hyper_keys}
        steps: List[int] = []
        for i, p in enumerate(tensors):
            st = self.state.get(p)
            fresh = not st
            if fresh:
                st = pending.get(id(p))
            if not st:
                for n in state_names:
                    views[n].append(None)
                steps.append(0)
                continue
            for n in state_names:
                views[n].append(self._state_value(hyper, p, st, n))
            # Without a step entry (SGD), state that exists has seen a step; new state has not.
            steps.append(int(st["step"]) if "step" in st else (0 if fresh else 1))
        return views, steps

    def _new_state(self, hyper: Dict[str, Any], p: torch.Tensor, state_names: List[str]) -> Dict[str, Any]:
        st: Dict[str, Any] = {"step": torch.tensor(0.0, dtype=torch.float32)} if self._has_step else {}
        np_p = _view(p)
        for n in state_names:
            if n in self._spec._scalar_state:  # a 0-d tensor of torch's scalar dtype, as torch keeps it
                st[n] = torch.tensor(float(self._spec._init_state(hyper, n, np_p)), dtype=_scalar_dtype())
            else:  # in the storage deepoptim.optim keeps it in (master copy, float, bfloat16 or 8-bit)
                self._put_state(st, n, self._spec._new_state(hyper, n, np_p))
        return st

    # ------------------------------------------------------------ step
    def reduce_guard_over(self, process_group: Any) -> None:
        """Makes ``skip_nonfinite`` and ``grad_norm_ratio`` decide on the gradients of every
        rank of ``process_group`` (a ``torch.distributed`` process group whose ranks' optimizers
        each hold a different part of the model, as under ``ZeroRedundancyOptimizer``): the
        non-finite flag is max-reduced and the sum of squares sum-reduced across it, so every
        rank skips the same steps and scales its rate by the same factor. Every rank of the
        group must then call :meth:`step` together. ``None`` undoes it. Under FSDP2 nothing
        is needed (the sharded DTensors name their groups), and the two are not combined::

            zero = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=deepoptim.torch.AdamW,
                                           lr=1e-3, skip_nonfinite=True)
            zero.optim.reduce_guard_over(zero.process_group)
        """
        if process_group is not None and not isinstance(process_group, torch.distributed.ProcessGroup):
            raise TypeError(f"process_group must be a torch.distributed.ProcessGroup or None, "
                            f"got {type(process_group).__name__}")
        self._guard_pg = process_group

    def _guard_groups(self) -> Tuple[Any, ...]:
        """The process groups ``skip_nonfinite`` and ``grad_norm_ratio`` reduce over: the
        one :meth:`reduce_guard_over` set, or those the parameters are sharded across
        (FSDP2); () for none."""
        found = {_shard_groups(p) for group in self.param_groups for p in group["params"]} - {()}
        if self._guard_pg is not None:
            if found:
                raise ValueError("reduce_guard_over is for optimizers whose ranks hold whole parameters "
                                 "(ZeroRedundancyOptimizer); these parameters are sharded DTensors (FSDP2), "
                                 "across whose groups skip_nonfinite and grad_norm_ratio reduce already")
            return (self._guard_pg,)
        if len(found) > 1:
            raise ValueError("skip_nonfinite and grad_norm_ratio need the sharded parameters on one device mesh, "
                             "sharded the same way; these are sharded over different meshes or dimensions")
        return next(iter(found), ())

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        """One update of every parameter that has a gradient; returns the closure's loss.
        Refused before anything is written: a sparse, non-CPU or non-contiguous gradient
        (the message names the parameter), a bad hyperparameter in any group."""
        self._spec._refuse_step(self.param_groups)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self._fast_step():
            return loss
        plans, pending = [], {}
        for gi, group in enumerate(self.param_groups):
            hyper = self._hyper(group)
            v = self._group_views(gi, group)
            tensors = v["tensors"]
            grads: List[Optional[np.ndarray]] = []
            for n, p in zip(v["names"], tensors):
                g = p.grad
                if g is None:
                    grads.append(None)
                    continue
                if g.is_sparse:
                    raise ValueError(f"parameter {n} has a sparse gradient; deepoptim.torch takes dense gradients")
                gl = _local(g)
                if gl.device.type != "cpu":
                    raise ValueError(f"parameter {n} has its gradient on {gl.device}; deepoptim.torch takes CPU tensors")
                if not gl.is_contiguous():
                    raise ValueError(f"parameter {n} has a non-contiguous gradient; pass grad.contiguous()")
                grads.append(_view(gl))
            dtype = v["np_params"][0].dtype if v["np_params"] else np.dtype(np.float32)
            g_np = self._np_group_stub(hyper, dtype)
            state_names = self._spec._all_state_names(g_np)
            for p, g in zip(tensors, grads):
                if g is not None and not self.state.get(p) and (state_names or self._has_step):
                    pending[id(p)] = self._new_state(hyper, p, state_names)
            states, steps = self._state_views(g_np, tensors, state_names, pending)
            g_np.update(params=v["np_params"], names=v["names"], step=max(steps, default=0),
                        _state=states, _steps=steps, _scratch=None)
            self._spec._prepare_group(g_np)
            # Groups may mix dtypes here (torch allows it): one kernel call per dtype.
            for dt in {a.dtype for a in v["np_params"]}:
                idx = [i for i, a in enumerate(v["np_params"]) if a.dtype == dt]
                sub = dict(g_np, params=[g_np["params"][i] for i in idx], names=[g_np["names"][i] for i in idx],
                           _state={k: [s[i] for i in idx] for k, s in states.items()},
                           _steps=[steps[i] for i in idx])
                if "adapt" in g_np:
                    sub["adapt"] = [g_np["adapt"][i] for i in idx]
                self._spec._check_group(dict(sub, _state={k: None for k in states}), f"parameter group {gi}")
                plans.append((gi, sub, [grads[i] for i in idx], [tensors[i] for i in idx]))
        flat = [g for _, _, gs, _ in plans for g in gs if g is not None]
        skip_nonfinite, ratio, ratio_eps = self._guard
        # Under FSDP2 (or reduce_guard_over) the guard decides on the whole model's gradients,
        # the same on every rank: its sums over sharded gradients are all-reduced across the
        # shards' groups.
        # With reduce_guard_over every rank holds its own part, so every sum is reduced.
        shard_pgs = self._guard_groups() if skip_nonfinite or ratio else ()
        per_rank = self._guard_pg is not None
        sharded = [g for _, _, gs, ts in plans for g, t in zip(gs, ts)
                   if g is not None and (per_rank or _shard_groups(t))]
        whole = [g for _, _, gs, ts in plans for g, t in zip(gs, ts)
                 if g is not None and not (per_rank or _shard_groups(t))]
        if skip_nonfinite:
            finite = clip.all_finite(flat)
            if shard_pgs:
                finite = _all_reduced(0.0 if finite else 1.0, torch.distributed.ReduceOp.MAX, shard_pgs) == 0.0
            if not finite:
                self._spec.state["skipped_steps"] += 1
                warnings.warn(f"non-finite gradients: step skipped ({self._spec.state['skipped_steps']} so far)",
                              _np.NonFiniteGradients, stacklevel=2)
                return loss
        factor, new_prev = 1.0, self._prev_grad_sq_norm
        if ratio:
            sq = clip.global_norm(sharded) ** 2 if sharded else 0.0
            if shard_pgs:
                sq = _all_reduced(sq, torch.distributed.ReduceOp.SUM, shard_pgs)
            sq += clip.global_norm(whole) ** 2 if whole else 0.0
            if new_prev is not None:
                factor = max(sq, ratio_eps) / max(new_prev, ratio_eps)
            new_prev = sq
        lrs = []
        for gi, sub, _, _ in plans:
            lr = float(sub["lr"]) * factor
            if not (math.isfinite(lr) and lr >= 0):
                raise ValueError(f"parameter group {gi}: learning rate must be finite and >= 0, got {lr!r}")
            lrs.append(lr)
        # Per-group values the step moves on (Schedule-Free's sums), from the groups as they are.
        advanced = [self._spec._advance(self._hyper(group), float(self._hyper(group)["lr"]) * factor)
                    for group in self.param_groups]
        # Nothing below can fail: every check the kernels make was made above.
        self.state.update({p: pending[id(p)] for _, _, _, ts in plans for p in ts if id(p) in pending})
        for (gi, sub, grads, tensors), lr in zip(plans, lrs):
            self._spec._step_group(sub, grads, lr, gi)
            stepped = [p for p, g in zip(tensors, grads) if g is not None]
            if self._has_step:
                for p, t, g in zip(tensors, sub["_steps"], grads):
                    if g is not None:
                        self.state[p]["step"].fill_(float(t))
            if stepped:
                torch.autograd.graph.increment_version([_local(p) for p in stepped])
        for group, adv in zip(self.param_groups, advanced):
            group.update(adv)
        self._prev_grad_sq_norm = new_prev
        for gi, group in enumerate(self.param_groups):
            self._build_fast(gi, group)
        return loss

    # ------------------------------------------------------------ the fast path
    # The common step (every parameter has a dense contiguous gradient, state exists and
    # all its counts agree, no L1 or guard options) skips NumPy views altogether: the
    # kernels get the tensors' data pointers (_core.RawTensors, checked there for size,
    # alignment and aliasing like arrays), and the step counts live in one buffer per
    # group whose 0-d views are the state's "step" tensors. Anything else, and the first
    # step, takes the general path above, which also names every fault.
    def _build_fast(self, gi: int, group: Dict[str, Any]) -> None:
        self._fast.pop(gi, None)
        params = group["params"]
        if not params or any(hasattr(p, "device_mesh") for p in params):
            return
        dtypes = {p.dtype for p in params}
        if len(dtypes) != 1:
            return
        hyper = self._hyper(group)
        if hyper["l1"] or hyper["state_dtype"] == "int8":  # 8-bit state: the general path
            return
        dtype = _NP_DTYPE[params[0].dtype]
        stub = self._np_group_stub(hyper, dtype)
        stub.update(names=list(group.get("param_names") or [f"{gi}.{i}" for i in range(len(params))]),
                    params=[_view(p) for p in params])
        self._spec._prepare_group(stub)
        names = self._spec._all_state_names(stub)
        states: List[Any] = [self.state.get(p) for p in params]  # torch's state values are untyped dicts
        if (names or self._has_step) and not all(states):
            return
        steps = {int(st["step"]) for st in states if st and "step" in st} if self._has_step else {1}
        arrays = [n for n in names if n not in self._spec._scalar_state]
        want = {n: self._state_dtype(hyper, params[0], n) for n in arrays}
        if len(steps) != 1 or any(st and any(st[n].dtype != want[n] for n in arrays) for st in states):
            return
        (step,) = steps
        sizes = [p.numel() for p in params]
        dname = _RAW_NAME[params[0].dtype]

        def raw(ts: List[torch.Tensor]) -> _core.RawTensors:
            return _core.RawTensors(_RAW_NAME[ts[0].dtype] if ts else dname, [t.data_ptr() for t in ts], sizes, ts)

        buf = None
        if self._has_step:
            buf = torch.full((len(params),), float(step), dtype=torch.float32)
            for i, st in enumerate(states):
                st["step"] = buf[i]
        self._fast[gi] = {
            "params_ref": params, "pptrs": [p.data_ptr() for p in params], "dname": dname, "sizes": sizes,
            "params": raw(params),
            # 0-d state (any float dtype) as NumPy views of the tensors; the rest as raw pointers
            "states": {n: ([_view(st[n]) for st in states] if n in self._spec._scalar_state
                           else raw([st[n] for st in states])) for n in names},
            "state_ids": [id(st[n]) for st in states for n in names], "adapt": stub.get("adapt"),
            "step": step, "buf": buf, "stub": stub, "gi": gi,
        }

    def _fast_step(self) -> bool:
        skip, ratio, _ = self._guard
        if skip or ratio or len(self._fast) != len(self.param_groups):
            return False
        plans = []
        for gi, group in enumerate(self.param_groups):
            fc = self._fast.get(gi)
            params = group["params"]
            if fc is None or fc["params_ref"] is not params:
                return False
            scan = _core.torch_pointers(params)  # None: a missing, sparse or strided gradient
            if scan is None or scan[0] != fc["pptrs"]:  # or a parameter moved: the general path
                return False
            _, gptrs, gtensors = scan
            hyper = self._hyper(group)
            if hyper["l1"]:
                return False
            g = dict(fc["stub"], **hyper, step=fc["step"])
            g["adapt"] = fc["adapt"]
            if hyper != fc.get("checked"):  # the kernel's own dry run, once per distinct setting
                self._spec._check_group(g, f"parameter group {gi}")
                fc["checked"] = hyper
            lr = float(hyper["lr"])
            plans.append((fc, g, _core.RawTensors(fc["dname"], gptrs, fc["sizes"], gtensors), lr,
                          group, self._spec._advance(g, lr)))
        # Nothing below can fail: checked above, and _core checks the pointers first.
        everyone = []
        for fc, g, grads, lr, group, adv in plans:
            t = fc["step"] + 1
            if g["decoupled_weight_decay"] and g["weight_decay"] and not self._spec._kernel_decouples:
                F.decay(fc["params"], lr=lr, weight_decay=g["weight_decay"])
            n = len(fc["sizes"])
            hp = self._spec._kernel_hyper(g)
            hp["_lowp"] = self._spec._lowp_args(g, fc["gi"], list(range(n)), fc["states"])
            # RawTensors (the tensors' pointers) where the kernels also take lists of arrays:
            self._spec._kernel(hp, list(range(n)), fc["params"], grads, fc["states"], lr, t)  # type: ignore[arg-type]
            fc["step"] = t
            if fc["buf"] is not None:
                fc["buf"].add_(1.0)
            group.update(adv)
            everyone.extend(fc["params_ref"])
        torch.autograd.graph.increment_version(everyone)
        return True

    def state_dict(self) -> Dict[str, Any]:
        """torch's ``state_dict``; the step counts are copies (here they are views of one
        buffer per group)."""
        sd = super().state_dict()
        sd["state"] = {k: {n: (v.clone() if n == "step" and isinstance(v, torch.Tensor) else v)
                           for n, v in st.items()} for k, st in sd["state"].items()}
        return sd

    # ------------------------------------------------------------ state
    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """torch's ``load_state_dict`` (a torch.optim state_dict of the same optimizer
        loads too), after checking every saved group's hyperparameters as the constructor
        does; keys deepoptim adds that a torch state_dict lacks take this optimizer's
        defaults."""
        groups = state_dict.get("param_groups", [])
        if len(groups) != len(self.param_groups):
            raise ValueError(f"state_dict has {len(groups)} parameter groups, the optimizer has {len(self.param_groups)}")
        saved_state = state_dict.get("state", {})
        for gi, (saved, group) in enumerate(zip(groups, self.param_groups)):
            where = f"state_dict parameter group {gi}"
            trial = {k: saved.get(k, self.defaults[k]) for k in self._hyper_keys}
            if isinstance(trial.get("lr"), torch.Tensor):
                trial["lr"] = float(trial["lr"])
            ptypes = {_local(p).dtype for p in group["params"]}
            pdt = ptypes.pop() if len(ptypes) == 1 else torch.float32
            stub = self._np_group_stub(trial, _NP_DTYPE.get(pdt, np.dtype(np.float32)))
            self._spec._check_group(stub, where)
            names = self._spec._all_state_names(stub)
            if len(saved.get("params", [])) != len(group["params"]):
                raise ValueError(f"{where} has {len(saved.get('params', []))} parameters, the optimizer's has "
                                 f"{len(group['params'])}")
            for pid, p in zip(saved["params"], group["params"]):
                st = saved_state.get(pid)
                if not st:
                    continue
                missing = [n for n in names if n not in st] + (["step"] if self._has_step and "step" not in st else [])
                if missing:
                    raise ValueError(f"{where}: the state of parameter {pid} lacks {missing}")
                step = float(st.get("step", 1))
                if not (step >= 0 and step == int(step)):
                    raise ValueError(f"{where}: parameter {pid} has step {step!r}; a step count is an int >= 0")
                for n in names:
                    t = st[n]
                    if n in self._spec._scalar_state:
                        if not (isinstance(t, torch.Tensor) and t.dim() == 0 and t.dtype in _FLOATS):
                            raise ValueError(f"{where}: state {n} of parameter {pid} must be a 0-d float32 or "
                                             "float64 tensor")
                    else:
                        self._check_saved_state(where, pid, n, st, trial, p, tuple(p.shape))
        super().load_state_dict(state_dict)
        self._restore_saved(groups, saved_state, [self._hyper(group) for group in self.param_groups])
        for group in self.param_groups:
            for k in self._hyper_keys:
                group.setdefault(k, self.defaults[k])
        self._views.clear()
        self._fast.clear()


class _EvalPoint:
    """``train()`` and ``eval()`` for an optimizer whose parameters hold a different point
    in each mode (Schedule-Free: y in train mode, the average x in eval mode); the weights
    of the switch come from the :mod:`deepoptim.optim` class."""

    if TYPE_CHECKING:  # from _Adapter, the other base of every class that uses this one
        param_groups: List[Dict[str, Any]]
        state: DefaultDict[torch.Tensor, Any]
        _spec: _np.ScheduleFreeAdamW

        def _hyper(self, group: Dict[str, Any]) -> Dict[str, Any]: ...

        def _state_value(self, hyper: Dict[str, Any], p: torch.Tensor, st: Dict[str, Any], n: str) -> Any: ...

    def _set_mode(self, to_train: bool) -> None:
        moves = []
        for group in self.param_groups:  # every check first: a switch that raises has moved nothing
            if bool(group.get("train_mode", True)) != to_train:
                moves.append((group, self._spec._switch_weight(self._hyper(group), to_train)))
        touched = []
        for group, w in moves:
            hyper = self._hyper(group)
            for p in group["params"]:
                st = self.state.get(p)
                if st and "z" in st:  # z exists once the parameter has taken a step
                    master = _view(st["master_param"]) if "master_param" in st else None
                    _np._switch_(_view(p), self._state_value(hyper, p, st, "z"), w, master)
                    touched.append(_local(p))
            group["train_mode"] = to_train
        if touched:
            torch.autograd.graph.increment_version(touched)

    @torch.no_grad()
    def train(self) -> None:
        """Train mode: the parameters hold y, where gradients are taken."""
        self._set_mode(True)

    @torch.no_grad()
    def eval(self) -> None:
        """Eval mode: the parameters hold the average x, the point to evaluate and save."""
        self._set_mode(False)


def _make(np_cls: Type[_np.Optimizer]) -> type:
    """The torch.optim.Optimizer subclass for a deepoptim.optim class: torch's signature
    (when torch has the optimizer) plus deepoptim's extra options, keyword-only."""
    ours = inspect.signature(np_cls.__init__)
    extras = [p.replace(kind=p.KEYWORD_ONLY) for k, p in ours.parameters.items()
              if k not in ("self", "params") and p.kind is not p.VAR_KEYWORD]
    common = [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v) for k, v in (
        ("decoupled_weight_decay", False), ("l1", 0.0), ("l1_mode", "subgradient"), ("skip_nonfinite", False),
        ("grad_norm_ratio", False), ("grad_norm_ratio_eps", 1e-12), ("state_dtype", None),
        ("master_weights", False), ("stochastic_rounding", False), ("seed", 0), ("int8_min_size", 4096))]
    if np_cls.torch_name:
        theirs = inspect.signature(getattr(torch.optim, np_cls.torch_name).__init__)
        base = list(theirs.parameters.values())
        have = set(theirs.parameters)
        doc = (f"torch.optim.{np_cls.torch_name} on deepoptim's kernel "
               f":func:`deepoptim.functional.{np_cls.kernel}` (its NumPy twin carries the math).\n\n"
               "Same arguments and defaults as torch 2.13's class; ``foreach`` and ``fused`` are accepted "
               "and ignored, ``capturable`` and ``differentiable`` must stay False. deepoptim's options are "
               "keyword-only:\n\n" + (np_cls.__doc__ or ""))
    else:
        base = [ours.parameters["self"], ours.parameters["params"]] + [
            p for k, p in ours.parameters.items() if k not in ("self", "params") and p.kind is not p.VAR_KEYWORD]
        have = set(ours.parameters)
        extras = []
        doc = (f"{np_cls.__name__} for torch tensors, on deepoptim's kernel "
               f":func:`deepoptim.functional.{np_cls.kernel}`.\n\n" + (np_cls.__doc__ or ""))
    params = [p for p in base if p.kind is not p.VAR_KEYWORD]
    names = {p.name for p in params}
    params += [p for p in extras + common if p.name not in names and p.name not in have]
    positional = [p for p in params if p.kind is not p.KEYWORD_ONLY]
    keyword = [p for p in params if p.kind is p.KEYWORD_ONLY]
    sig = inspect.Signature(positional + keyword)
    def __init__(self: _Adapter, params: ParamsT, *args: Any, **kwargs: Any) -> None:
        _Adapter.__init__(self, params, *args, **kwargs)

    __init__.__signature__ = sig  # type: ignore[attr-defined]
    __init__.__doc__ = doc
    bases = (_EvalPoint, _Adapter) if hasattr(np_cls, "_switch_weight") else (_Adapter,)
    return type(np_cls.__name__, bases, {"_np_cls": np_cls, "_signature": sig, "__doc__": doc,
                                               "__init__": __init__, "__module__": __name__,
                                               "__qualname__": np_cls.__name__})


# -------------------------------------------------------------------------- L-BFGS
def _state_to_numpy(v: Any) -> Any:
    """torch.optim.LBFGS's state values as :func:`deepoptim.optim._lbfgs_step` keeps them:
    tensors as NumPy views (0-d ones as NumPy scalars of their dtype), lists element-wise."""
    if isinstance(v, torch.Tensor):
        a = v.detach().numpy()
        return a[()] if v.dim() == 0 else a
    if isinstance(v, list):
        return [_state_to_numpy(x) for x in v]
    return v


def _state_as(v: Any, dtype: torch.dtype) -> Any:
    """A copy of a saved torch.optim.LBFGS state value with every floating tensor in
    ``dtype`` (lists element-wise)."""
    if isinstance(v, torch.Tensor):
        return v.detach().to(dtype=dtype, copy=True) if v.is_floating_point() else v.detach().clone()
    if isinstance(v, list):
        return [_state_as(x, dtype) for x in v]
    return v


def _state_to_torch(v: Any) -> Any:
    """The reverse: arrays as tensors sharing their memory, NumPy scalars as 0-d tensors."""
    if isinstance(v, np.ndarray):
        return torch.from_numpy(v)
    if isinstance(v, np.generic):
        return torch.tensor(v)
    if isinstance(v, list):
        return [_state_to_torch(x) for x in v]
    return v


class LBFGS(torch.optim.Optimizer):
    """torch.optim.LBFGS on deepoptim's L-BFGS (:class:`deepoptim.optim.LBFGS`, whose
    docstring has the method): torch 2.13's arguments and defaults, ``step(closure)``
    with the same iterations, line search and stopping rules, and torch's state names
    and ``state_dict`` layout (kept in the state of the first parameter), so a
    torch.optim.LBFGS state_dict loads here and the reverse. One parameter group; CPU
    tensors of one dtype: float32 or float64, or bfloat16/float16 iterated in float32
    (each move written back rounded, see :class:`deepoptim.optim.LBFGS`).

    Keyword-only, as :class:`deepoptim.optim.LBFGS` takes them: ``master_weights=True``
    (bfloat16/float16 tensors) keeps the float32 iterate from step to step, one float32
    copy per parameter in ``state[params[0]]["master_param"]`` (made at the first step;
    the parameters are its rounding); ``state_dtype`` takes only None or ``"float32"``
    (the history keeps the iteration's precision; ``"bfloat16"`` and ``"int8"`` are
    refused, saying why). ``load_state_dict`` keeps the history and the master copies in
    float32 for 16-bit tensors, where torch.optim's would cast them to the tensors' dtype
    (a torch.optim.LBFGS state_dict of bfloat16 history is widened)."""

    def __init__(self, params: ParamsT, lr: float = 1, max_iter: int = 20, max_eval: Optional[int] = None,
                 tolerance_grad: float = 1e-7, tolerance_change: float = 1e-9, history_size: int = 100,
                 line_search_fn: Optional[str] = None, *, master_weights: bool = False,
                 state_dtype: Optional[str] = None) -> None:
        if isinstance(lr, torch.Tensor):
            if lr.numel() != 1:
                raise ValueError("Tensor lr must be 1-element")
            lr = float(lr)
        defaults = _np._lbfgs_hyper(lr, max_iter, max_eval, tolerance_grad, tolerance_change, history_size,
                                    line_search_fn)
        super().__init__(params, dict(defaults, master_weights=master_weights))
        if len(self.param_groups) != 1:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")
        self._params = self.param_groups[0]["params"]
        for i, p in enumerate(self._params):
            self._check_param(p, i)
        if len({p.dtype for p in self._params}) != 1:
            raise TypeError("LBFGS's parameters must share one dtype (they form one vector)")
        _np._lbfgs_lowp(master_weights, state_dtype, _NP_DTYPE[self._params[0].dtype])

    def _work_dtype(self) -> torch.dtype:
        """The dtype the iteration (and its history) runs in."""
        dtype: torch.dtype = self._params[0].dtype
        return torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype

    def _grad_view(self, p: torch.Tensor, i: int) -> np.ndarray:
        g = p.grad
        if g is None:
            return np.zeros(p.numel(), _NP_DTYPE[p.dtype])
        if g.is_sparse:
            g = g.to_dense()
        if g.device.type != "cpu":
            raise ValueError(f"parameter {i} has its gradient on {g.device}; deepoptim.torch takes CPU tensors")
        return _view(g.contiguous()).reshape(-1)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any]) -> Any:  # type: ignore[override]
        """Runs up to ``max_iter`` iterations; ``closure`` re-evaluates the model, calls
        ``backward()`` and returns the loss. Returns the closure's first loss."""
        closure = torch.enable_grad()(closure)
        group = self.param_groups[0]
        lr = float(group["lr"]) if isinstance(group["lr"], torch.Tensor) else group["lr"]
        hp = _np._lbfgs_hyper(lr, *(group[k] for k in ("max_iter", "max_eval", "tolerance_grad", "tolerance_change",
                                                       "history_size", "line_search_fn")))
        params = self._params
        for i, p in enumerate(params):
            self._check_param(p, i)
        master = _np._lbfgs_lowp(group.get("master_weights", False), None, _NP_DTYPE[params[0].dtype])
        if not master and "master_param" in self.state.get(params[0], {}):
            raise ValueError("master_weights=False, but the state has master weights; master_weights cannot change "
                             "after construction")
        state = self.state[params[0]]
        if master and "master_param" not in state:  # the first step (or a torch.optim state without them)
            state["master_param"] = [_local(p).detach().to(torch.float32, memory_format=torch.contiguous_format,
                                                           copy=True) for p in params]
        locals_ = [_local(p) for p in params]
        work = {k: _state_to_numpy(v) for k, v in state.items()}
        space = _np._LBFGSSpace(
            [_view(p) for p in params], closure,
            lambda: np.concatenate([self._grad_view(p, i) for i, p in enumerate(params)]),
            lambda: torch.autograd.graph.increment_version(locals_), masters=work.get("master_param"))

        try:
            _np._lbfgs_step(work, hp, space)
        finally:
            loss = work.pop("_loss", None)
            state.clear()
            state.update({k: _state_to_torch(v) for k, v in work.items()})
        return loss

    @staticmethod
    def _check_param(p: torch.Tensor, i: int) -> None:
        _Adapter._check_param(p, str(i))
        _refuse_sharded("LBFGS", p, str(i))

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """torch's ``load_state_dict`` (a torch.optim.LBFGS state_dict loads too), after
        checking the saved hyperparameters and master copies; then every floating state
        tensor is set from the saved one in the dtype the iteration runs in (float32 for
        bfloat16/float16 tensors: torch.optim's base class would cast the float32 history
        and master copies to the tensors' dtype, and the run would not resume)."""
        groups = state_dict.get("param_groups", [])
        if len(groups) != 1:
            raise ValueError(f"state_dict has {len(groups)} parameter groups; LBFGS has one")
        (saved,) = groups
        _np._lbfgs_hyper(*(saved.get(k, self.defaults[k]) for k in ("lr", "max_iter", "max_eval", "tolerance_grad",
                                                                    "tolerance_change", "history_size",
                                                                    "line_search_fn")))
        master = _np._lbfgs_lowp(saved.get("master_weights", self.defaults["master_weights"]), None,
                                 _NP_DTYPE[self._params[0].dtype])
        pids = saved.get("params", [])
        st = state_dict.get("state", {}).get(pids[0]) if pids else None
        masters = (st or {}).get("master_param")
        if masters is not None and not master:
            raise ValueError("state_dict: its state has master_param, which only master_weights=True keeps")
        if masters is not None and not (
                isinstance(masters, (list, tuple)) and len(masters) == len(self._params)
                and all(isinstance(m, torch.Tensor) and m.is_floating_point() and m.shape == p.shape
                        for m, p in zip(masters, self._params))):
            raise ValueError("state_dict: state master_param must hold one float tensor per parameter, of its shape")
        super().load_state_dict(state_dict)
        self.param_groups[0].setdefault("master_weights", master)
        self._params = self.param_groups[0]["params"]
        if st:
            self.state[self._params[0]] = {k: _state_as(v, self._work_dtype()) for k, v in st.items()}


class _ShapedAdapter(_LowpState, torch.optim.Optimizer):
    """The base of the adapters whose kernels need each parameter's shape (Muon,
    Adafactor): torch's arguments, state names and ``state_dict``, with deepoptim's
    low-precision options keyword-only (``state_dtype``, ``master_weights``,
    ``stochastic_rounding``, ``seed``, ``int8_min_size``, as every deepoptim.torch
    optimizer takes them). A step hands the group, as NumPy views of the tensors and their
    state, to the :mod:`deepoptim.optim` class ``_np_cls`` (``_step_group``): its plain
    kernel call, or on bfloat16/float16 parameters or bfloat16/8-bit state its "widen, run
    the float32 step, round" (:meth:`deepoptim.optim.Optimizer._widened_step`), so every
    mode computes what deepoptim.optim's class computes, bit for bit.

    A subclass defines ``_check_param`` (one parameter), ``_dry_run`` (a group's torch
    hyperparameters, by the kernel itself on empty arrays), ``_hyper`` (a group's
    hyperparameters as the kernel takes them) and ``_state_shapes`` (the state tensors
    torch keeps for a parameter, and their shapes)."""

    _np_cls: Type[_np.Optimizer] = _np.Optimizer
    #: whether torch keeps a ``step`` in each parameter's state (Adafactor does, Muon does
    #: not; with ``stochastic_rounding`` it is kept anyway, to draw by)
    _torch_step = False

    def __init__(self, params: ParamsT, defaults: Dict[str, Any], lowp: Dict[str, Any]) -> None:
        self._dry_run(defaults, type(self).__name__)
        # The deepoptim.optim class, on a stand-in matrix, checks the low-precision options
        # as it does its own (master weights and stochastic rounding need 16-bit parameters:
        # a bfloat16 stand-in then; each group is checked again with its own dtypes).
        lowp16 = lowp["master_weights"] or lowp["stochastic_rounding"]
        stand_in = np.zeros((1, 1), ml_dtypes.bfloat16 if lowp16 else np.float32)
        self._spec = self._np_cls([stand_in], **self._hyper(defaults), **lowp)
        self._has_step = self._torch_step or bool(lowp["stochastic_rounding"])
        super().__init__(params, dict(defaults, **lowp))

    @staticmethod
    def _check_param(p: torch.Tensor, name: str) -> None:
        raise NotImplementedError

    @classmethod
    def _dry_run(cls, group: Dict[str, Any], where: str) -> None:
        raise NotImplementedError

    @staticmethod
    def _hyper(group: Dict[str, Any]) -> Dict[str, Any]:
        raise NotImplementedError

    @staticmethod
    def _state_shapes(p: torch.Tensor) -> Dict[str, Tuple[int, ...]]:
        raise NotImplementedError

    # ------------------------------------------------------------ groups
    def _np_hyper(self, group: Dict[str, Any]) -> Dict[str, Any]:
        """A group's hyperparameters as the deepoptim.optim class names them (the
        low-precision options a torch.optim state_dict lacks take this optimizer's
        defaults)."""
        h = {k: group.get(k, v) for k, v in self._spec.defaults.items()}
        h.update(self._hyper(group))
        return h

    def _stub(self, hyper: Dict[str, Any], dtype: torch.dtype) -> Dict[str, Any]:
        """A deepoptim.optim group of one stand-in matrix of ``dtype``: what its checks and
        its state names take."""
        g = dict(hyper, params=[np.zeros((1, 1), _NP_DTYPE[dtype])], names=["0"], keyed=False, step=0)
        self._spec._prepare_group(g)
        return g

    def _check_group(self, group: Dict[str, Any], dtypes: Any, where: str) -> Dict[str, Any]:
        """Every hyperparameter of a torch group, the kernel's own checks first (torch's
        names), then deepoptim.optim's for each parameter dtype (the low-precision options
        among them, with the same messages); returns the group as deepoptim.optim names it."""
        self._dry_run(group, where)
        hyper = self._np_hyper(group)
        if hyper["stochastic_rounding"] and not self._has_step:
            raise ValueError(f"{where}: stochastic_rounding=True in a group needs it at construction too "
                             f"({type(self).__name__} then keeps a step count to draw by)")
        for dt in dtypes or (torch.float32,):
            self._spec._check_group(self._stub(hyper, dt), where)
        return hyper

    def _kept(self, p: torch.Tensor, names: List[str]) -> Dict[str, Tuple[int, ...]]:
        """The state tensors parameter ``p`` keeps (torch's, and the master copy where
        deepoptim.optim's state names have one), by shape; an 8-bit one also has its
        ``<name>_absmax``."""
        shapes = dict(self._state_shapes(p))
        if "master_param" in names:
            shapes["master_param"] = tuple(p.shape)
        return shapes

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        """torch's ``add_param_group``, after checking the parameters and the group's
        hyperparameters."""
        gi = len(self.param_groups)
        params = param_group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        tensors = [p for _, p in params] if params and isinstance(params[0], tuple) else params
        for i, p in enumerate(tensors):
            self._check_param(p, f"{gi}.{i}")
            _refuse_sharded(type(self).__name__, p, f"{gi}.{i}")
        self._check_group({k: param_group.get(k, v) for k, v in self.defaults.items()},
                          {_local(p).dtype for p in tensors}, f"parameter group {gi}")
        super().add_param_group(dict(param_group, params=params))

    # ------------------------------------------------------------ step
    def _with_grads(self, gi: int, group: Dict[str, Any]) -> List[Tuple[str, torch.Tensor, torch.Tensor]]:
        """(name, parameter, gradient) for each parameter of group ``gi`` that has a
        gradient, each checked (a dense contiguous CPU gradient of its dtype and shape)."""
        out = []
        for i, p in enumerate(group["params"]):
            if p.grad is None:
                continue
            name = f"{gi}.{i}"
            self._check_param(p, name)
            _refuse_sharded(type(self).__name__, p, name)
            g = p.grad
            if g.is_sparse:
                raise ValueError(f"parameter {name} has a sparse gradient; {type(self).__name__} takes dense gradients")
            if g.device.type != "cpu" or g.dtype != p.dtype or g.shape != p.shape or not g.is_contiguous():
                raise ValueError(f"parameter {name} needs a contiguous CPU gradient of its dtype and shape")
            out.append((name, p, g))
        return out

    def _prepared_state(self, stub: Dict[str, Any], names: List[str], name: str, p: torch.Tensor,
                        pending: Dict[torch.Tensor, Dict[str, Any]]) -> Dict[str, Any]:
        """Parameter ``p``'s state, checked: new state is made by deepoptim.optim's class
        in the storage it keeps; state whose float dtype no longer matches (``model.double()``,
        a torch.optim state_dict of bfloat16 state) follows the dtype this optimizer keeps.
        New or converted state goes to ``pending`` (into ``self.state`` once the whole step
        is known to succeed)."""
        state = self.state.get(p)
        if not state:
            st: Dict[str, Any] = {"step": torch.tensor(0.0, dtype=torch.float32)} if self._has_step else {}
            np_p = _view(p)
            for n in self._kept(p, names):
                self._put_state(st, n, self._spec._new_state(stub, n, np_p))
            pending[p] = st
            return st
        if "master_param" in state and "master_param" not in names:
            raise ValueError(f"parameter {name} keeps master weights, which master_weights={stub['master_weights']!r} "
                             "does not use; master_weights cannot change after construction")
        fixed = dict(state)
        for n, shape in self._kept(p, names).items():
            t = state.get(n)
            if not isinstance(t, torch.Tensor):
                raise ValueError(f"parameter {name} has no state {n}, which its hyperparameters need "
                                 "(state_dtype and master_weights cannot change after construction)")
            if tuple(t.shape) != shape:
                raise ValueError(f"parameter {name}: state {n} must be a tensor of shape {shape} "
                                 f"(from the parameter's shape {tuple(p.shape)})")
            want = self._state_dtype(stub, p, n)
            if (want == torch.uint8) != (t.dtype == torch.uint8) or (want == torch.uint8 and n + "_absmax" not in state):
                raise ValueError(f"parameter {name}: state {n} is {t.dtype}, state_dtype={stub['state_dtype']!r} "
                                 f"keeps it as {want}; state_dtype cannot change after construction")
            if t.dtype != want or not t.is_contiguous() or t.device.type != "cpu":
                fixed[n] = t.to(device="cpu", dtype=want).contiguous()  # the state follows its parameter
        if self._has_step:
            step_t = state.get("step")
            if not isinstance(step_t, torch.Tensor) or step_t.numel() != 1:
                raise ValueError(f"parameter {name}: state step must be a one-element tensor")
            if not 0 <= int(step_t.item()) < 2**63 - 1:
                raise ValueError(f"parameter {name}: state step {int(step_t.item())} is out of range")
        if any(fixed[n] is not state[n] for n in fixed):
            pending[p] = fixed
        return fixed

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        """One update of every parameter that has a gradient; returns the closure's loss.
        Everything (every group's hyperparameters, gradients and state) is checked before
        anything is written: a step that raises has changed nothing."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        plans: List[Tuple[int, Dict[str, Any], List[np.ndarray], List[torch.Tensor]]] = []
        pending: Dict[torch.Tensor, Dict[str, Any]] = {}
        for gi, group in enumerate(self.param_groups):
            items = self._with_grads(gi, group)
            by_dtype: Dict[torch.dtype, List[Tuple[str, torch.Tensor, torch.Tensor]]] = {}
            for item in items:
                by_dtype.setdefault(item[1].dtype, []).append(item)
            hyper = self._check_group(group, set(by_dtype), f"parameter group {gi}")
            # The group's step count, as deepoptim.optim keeps it (stochastic rounding draws by it).
            group_step = max((int(self.state[p]["step"].item()) for p in group["params"]
                              if self._has_step and self.state.get(p) and "step" in self.state[p]), default=0)
            for dtype, its in by_dtype.items():  # one deepoptim.optim group per dtype
                stub = self._stub(hyper, dtype)
                names = self._spec._all_state_names(stub)
                g_np = dict(stub, params=[], names=[], step=group_step, _state={n: [] for n in names}, _steps=[],
                            _scratch=None)
                grads = []
                for name, p, g in its:
                    st = self._prepared_state(stub, names, name, p, pending)
                    np_p = _view(p)
                    g_np["params"].append(np_p)
                    g_np["names"].append(name)
                    grads.append(_view(g))
                    for n in names:  # a state torch does not keep (a matrix's variance): deepoptim.optim's empty one
                        g_np["_state"][n].append(self._state_value(stub, p, st, n) if n in st
                                                 else self._spec._new_state(stub, n, np_p))
                    g_np["_steps"].append(int(st["step"].item()) if "step" in st else 0)
                plans.append((gi, g_np, grads, [p for _, p, _ in its]))
        # Nothing below can fail: every check the kernels make was made above.
        for p, st in pending.items():
            self.state[p].update(st)
        for gi, g_np, grads, tensors in plans:
            self._spec._step_group(g_np, list(grads), float(g_np["lr"]), gi)
            if self._has_step:
                for p, t in zip(tensors, g_np["_steps"]):
                    self.state[p]["step"].fill_(float(t))
            torch.autograd.graph.increment_version([_local(p) for p in tensors])
        return loss

    # ------------------------------------------------------------ state
    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """torch's ``load_state_dict`` (a state_dict of the torch.optim class of the same
        name loads too), after checking every saved group's hyperparameters and every saved
        state tensor (its shape; 8-bit codes uint8 with their ``<name>_absmax``); then each
        state tensor is set from the saved one in the dtype this optimizer keeps (torch's
        base class would cast float32 master weights and state, and 8-bit codes, to the
        parameter's dtype). Keys deepoptim adds that a torch state_dict lacks take this
        optimizer's defaults."""
        groups = state_dict.get("param_groups", [])
        if len(groups) != len(self.param_groups):
            raise ValueError(f"state_dict has {len(groups)} parameter groups, the optimizer has {len(self.param_groups)}")
        saved_state = state_dict.get("state", {})
        hypers = []
        for gi, (saved, group) in enumerate(zip(groups, self.param_groups)):
            where = f"state_dict parameter group {gi}"
            trial = {k: saved.get(k, v) for k, v in self.defaults.items()}
            hyper = self._check_group(trial, {_local(p).dtype for p in group["params"]}, where)
            hypers.append(hyper)
            if len(saved.get("params", [])) != len(group["params"]):
                raise ValueError(f"{where} has {len(saved.get('params', []))} parameters, the optimizer's has "
                                 f"{len(group['params'])}")
            for pid, p in zip(saved["params"], group["params"]):
                st = saved_state.get(pid)
                if not st:
                    continue
                kept = self._kept(p, self._spec._all_state_names(self._stub(hyper, _local(p).dtype)))
                missing = [n for n in kept if n not in st] + (["step"] if self._has_step and "step" not in st else [])
                if missing:
                    raise ValueError(f"{where}: the state of parameter {pid} lacks {missing}")
                if self._has_step:
                    step = st["step"]
                    step = float(step) if not isinstance(step, torch.Tensor) or step.numel() == 1 else -1.0
                    if not (0 <= step < 2**63 - 1 and step == int(step)):
                        raise ValueError(f"{where}: parameter {pid} has step {st['step']!r}; a step count is an "
                                         "int >= 0")
                for n, shape in kept.items():
                    self._check_saved_state(where, pid, n, st, hyper, p, shape)
        super().load_state_dict(state_dict)
        self._restore_saved(groups, saved_state, hypers)
        for group in self.param_groups:
            for k, v in self.defaults.items():
                group.setdefault(k, v)


_LOWP_OPTIONS = """

    deepoptim's low-precision options are keyword-only, with the meaning and defaults they
    have for every deepoptim.torch optimizer and for :class:`deepoptim.optim.{name}`
    (whose step this one runs, so every mode gives its bits):

    - ``state_dtype``: None or ``"float32"`` (float32 state for float32, bfloat16 and
      float16 parameters, where torch.optim would keep the parameter's dtype; float64
      state for float64 ones), ``"bfloat16"``, or ``"int8"`` (blockwise 8-bit state, kept
      as two tensors, ``<name>`` of uint8 codes and ``<name>_absmax`` of float32, for a
      parameter of at least ``int8_min_size`` elements; float32 state for a smaller one);
      {state}.
    - ``master_weights=True`` (bfloat16/float16 parameters): a float32 copy of each
      parameter in its state (``master_param``) is what the step updates; the parameter
      is its rounding to nearest even.
    - ``stochastic_rounding=True`` (bfloat16 parameters without master weights): the
      parameter is the float32 result rounded stochastically, the random bits keyed by
      (``seed``, group, step, element){step_note}.
    - ``seed`` (an int in [0, 2**64)) and ``int8_min_size`` (default 4096).

    On bfloat16/float16 parameters, or with bfloat16 or 8-bit state, the step is "widen,
    run the float32 step, round" (:meth:`deepoptim.optim.Optimizer._widened_step`): the
    parameters (or master copies), gradients and state are widened (8-bit state
    dequantized) to float32, the float32 kernel runs, and the state is rounded to nearest
    even (or quantized) and the parameters rounded back. torch.optim's ``load_state_dict``
    would cast float32 state and master weights and uint8 codes to the parameter's dtype;
    here each keeps its dtype, so a checkpoint resumes bit for bit."""


class Muon(_ShapedAdapter):
    """torch.optim.Muon on deepoptim's Muon kernel (:func:`deepoptim.functional.muon`, whose
    docstring has the math): torch 2.13's arguments, defaults, state (``momentum_buffer``
    only, no ``step``, as torch keeps it) and ``state_dict``, so a torch.optim.Muon
    state_dict loads here and the reverse. 2-D CPU tensors, float32, float64, bfloat16 or
    float16; anything else is refused naming the parameter. A step is one GIL-free kernel
    call per group and dtype on the tensors' own memory (on float32 copies for 16-bit
    parameters or state), after every group's hyperparameters and gradients were checked
    (a step that raises has changed nothing)."""

    _np_cls = _np.Muon

    def __init__(self, params: ParamsT, lr: float = 1e-3, weight_decay: float = 0.1, momentum: float = 0.95,
                 nesterov: bool = True, ns_coefficients: Tuple[float, float, float] = (3.4445, -4.775, 2.0315),
                 eps: float = 1e-7, ns_steps: int = 5, adjust_lr_fn: Optional[str] = None, *,
                 state_dtype: Optional[str] = None, master_weights: bool = False, stochastic_rounding: bool = False,
                 seed: int = 0, int8_min_size: int = _np.INT8_MIN_SIZE) -> None:
        if isinstance(lr, torch.Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                        ns_coefficients=ns_coefficients, eps=eps, ns_steps=ns_steps, adjust_lr_fn=adjust_lr_fn)
        super().__init__(params, defaults, dict(state_dtype=state_dtype, master_weights=master_weights,
                                                stochastic_rounding=stochastic_rounding, seed=seed,
                                                int8_min_size=int8_min_size))

    @staticmethod
    def _hyper(group: Dict[str, Any]) -> Dict[str, Any]:
        lr = group["lr"]
        coeffs = group["ns_coefficients"]
        return dict(lr=float(lr) if isinstance(lr, torch.Tensor) else lr, weight_decay=group["weight_decay"],
                    momentum=group["momentum"], nesterov=group["nesterov"],
                    ns_coefficients=tuple(coeffs) if isinstance(coeffs, (tuple, list)) else coeffs,
                    eps=group["eps"], ns_steps=group["ns_steps"], adjust_lr_fn=group["adjust_lr_fn"])

    @classmethod
    def _dry_run(cls, group: Dict[str, Any], where: str) -> None:
        """The kernel's own checks of every hyperparameter, on empty matrices (nothing written)."""
        e = np.empty((0, 0), np.float32)
        try:
            F.muon(e, e.copy(), e.copy(), **cls._hyper(group))
        except (TypeError, ValueError) as err:
            raise type(err)(f"{where}: {err}") from None

    @staticmethod
    def _check_param(p: torch.Tensor, name: str) -> None:
        _Adapter._check_param(p, name)
        if p.dim() != 2:
            raise ValueError(f"Muon only supports 2D parameters whereas parameter {name} has size {tuple(p.shape)}; "
                             "optimize biases, norms and embeddings with another optimizer such as AdamW")

    @staticmethod
    def _state_shapes(p: torch.Tensor) -> Dict[str, Tuple[int, ...]]:
        return {"momentum_buffer": tuple(p.shape)}


class Adafactor(_ShapedAdapter):
    """torch.optim.Adafactor on deepoptim's Adafactor kernel
    (:func:`deepoptim.functional.adafactor`, whose docstring has the math): torch 2.13's
    arguments, defaults, state (``step`` as a float32 0-d tensor, ``row_var`` and
    ``col_var`` for a parameter of two or more dimensions, ``variance`` for a vector) and
    ``state_dict``, so a torch.optim.Adafactor state_dict loads here and the reverse. CPU
    tensors, float32, float64, bfloat16 or float16; ``foreach`` is accepted and ignored.
    A step is one GIL-free kernel call per group, dtype and step count on the tensors' own
    memory (on float32 copies for 16-bit parameters or state), after every group's
    hyperparameters, gradients and state were checked (a step that raises has changed
    nothing)."""

    _np_cls = _np.Adafactor
    _torch_step = True

    def __init__(self, params: ParamsT, lr: float = 1e-2, beta2_decay: float = -0.8,
                 eps: Tuple[Optional[float], float] = (None, 1e-3), d: float = 1.0, weight_decay: float = 0.0, *,
                 foreach: Optional[bool] = None, maximize: bool = False, state_dtype: Optional[str] = None,
                 master_weights: bool = False, stochastic_rounding: bool = False, seed: int = 0,
                 int8_min_size: int = _np.INT8_MIN_SIZE) -> None:
        if isinstance(lr, torch.Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        defaults = dict(lr=lr, beta2_decay=beta2_decay, eps=eps, d=d, weight_decay=weight_decay, foreach=foreach,
                        maximize=maximize)
        super().__init__(params, defaults, dict(state_dtype=state_dtype, master_weights=master_weights,
                                                stochastic_rounding=stochastic_rounding, seed=seed,
                                                int8_min_size=int8_min_size))

    @staticmethod
    def _hyper(group: Dict[str, Any]) -> Dict[str, Any]:
        lr, eps = group["lr"], group["eps"]
        return dict(lr=float(lr) if isinstance(lr, torch.Tensor) else lr, beta2_decay=group["beta2_decay"],
                    eps=tuple(eps) if isinstance(eps, (tuple, list)) else eps, d=group["d"],
                    weight_decay=group["weight_decay"], maximize=group["maximize"])

    @classmethod
    def _dry_run(cls, group: Dict[str, Any], where: str) -> None:
        """The kernel's own checks of every hyperparameter, on an empty vector (nothing written)."""
        e = np.empty(0, np.float32)
        try:
            foreach = group.get("foreach")
            if foreach is not None and not isinstance(foreach, bool):
                raise TypeError(f"foreach must be None or a bool, got {foreach!r}")
            F.adafactor(e, e.copy(), None, None, e.copy(), step=1, **cls._hyper(group))
        except (TypeError, ValueError) as err:
            raise type(err)(f"{where}: {err}") from None

    @staticmethod
    def _check_param(p: torch.Tensor, name: str) -> None:
        _Adapter._check_param(p, name)

    @staticmethod
    def _state_shapes(p: torch.Tensor) -> Dict[str, Tuple[int, ...]]:
        shape = tuple(p.shape)
        if len(shape) >= 2:
            return {"row_var": shape[:-1] + (1,), "col_var": shape[:-2] + (1, shape[-1])}
        return {"variance": shape}


Muon.__doc__ = (Muon.__doc__ or "") + _LOWP_OPTIONS.format(
    name="Muon", state="it keeps the momentum buffer", step_note=" (Muon then keeps a ``step`` in each state, "
    "which torch.optim.Muon does not, so that a resumed run draws what the original would)")
Adafactor.__doc__ = (Adafactor.__doc__ or "") + _LOWP_OPTIONS.format(
    name="Adafactor", state="it keeps the factors ``row_var`` and ``col_var`` (8-bit where the parameter has at "
    "least ``int8_min_size`` elements) and a vector's ``variance``", step_note="")


for _name, _cls in _np.REGISTRY.items():
    globals()[_name] = _make(_cls)

__all__ = list(_np.REGISTRY)
__all__.append("LBFGS")
__all__.append("Muon")
__all__.append("Adafactor")


def __getattr__(name: str) -> "type[_Adapter]":
    # Only reached for names that do not exist; type checkers read the return type as the
    # type of every optimizer generated above (they cannot see the loop).
    raise AttributeError(f"module 'deepoptim.torch' has no attribute {name!r}; it has {__all__}")
