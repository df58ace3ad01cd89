"""Optimizers with state over the C++ kernels, shaped like torch.optim.

The base class :class:`Optimizer` owns what every optimizer shares: the parameter
structure (a list of arrays, a dict name -> array, or a list of parameter-group dicts),
per-group hyperparameters and step counts, learning-rate schedules, the non-finite guard,
the gradient-norm-ratio learning rate, decoupled weight decay and L1 regularization, and
``state_dict``/``load_state_dict``. Each optimizer only says which state arrays it needs
and which kernel updates a group (one list-form call per group). No update math lives
here: it is in the kernels of :mod:`deepoptim.functional`.

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

import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from deepoptim import functional as F

Array = np.ndarray
Params = Union[Sequence[Array], Mapping[str, Array], Sequence[Mapping[str, Any]]]
Schedule = Callable[[int], float]

# Options every optimizer takes (keyword-only), and their defaults.
_COMMON = dict(
    decoupled_weight_decay=False,  # p *= 1 - lr*weight_decay before the update (AdamW-style)
    l1=0.0,                        # L1 penalty strength (seed 003); elastic net with weight_decay
    l1_mode="subgradient",         # "subgradient": g += l1*sign(p); "proximal": soft-threshold after
)


class NonFiniteGradients(UserWarning):
    """Reported (as a warning) when the non-finite guard skips a step."""


def _is_group_list(params) -> bool:
    return isinstance(params, (list, tuple)) and len(params) > 0 and all(isinstance(g, Mapping) for g in params)


def _check_param(a, name: str) -> Array:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"parameter {name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype not in (np.float32, np.float64) or not a.dtype.isnative:
        raise TypeError(f"parameter {name} must have dtype float32 or float64, got {a.dtype}")
    if not a.flags.c_contiguous:
        raise ValueError(f"parameter {name} must be C-contiguous (it is updated in place)")
    if not a.flags.writeable:
        raise ValueError(f"parameter {name} is read-only, but it is updated in place")
    return a


class Optimizer:
    """Base class. Subclasses set ``defaults`` and implement ``_state_spec`` and ``_update``.

    Args:
      params: a list of arrays, a dict name -> array, or a list of parameter-group dicts
        (``{"params": list-or-dict, **hyperparameters}``) with per-group hyperparameters.
      defaults: the optimizer's hyperparameters; ``lr`` may be a float or a schedule
        (a callable ``step -> lr``, see :mod:`deepoptim.schedules`).
      skip_nonfinite: check all gradients first (one C++ pass) and skip the step, leaving
        parameters and state untouched, if any is NaN or inf; ``state["skipped_steps"]``
        counts the skips.
      grad_norm_ratio: scale the learning rate by ``max(|g_t|^2, eps) / max(|g_{t-1}|^2, eps)``
        (the gradient-norm-ratio rule of seed 004; global norm over all gradients).
    """

    defaults: Dict[str, Any] = {}
    _lr_default: Any = 1e-3

    def __init__(
        self,
        params: Params,
        defaults: Dict[str, Any],
        *,
        skip_nonfinite: bool = False,
        grad_norm_ratio: bool = False,
        grad_norm_ratio_eps: float = 1e-12,
    ) -> None:
        self.defaults = dict(defaults)
        self.skip_nonfinite = bool(skip_nonfinite)
        self.grad_norm_ratio = bool(grad_norm_ratio)
        if not grad_norm_ratio_eps > 0:
            raise ValueError(f"grad_norm_ratio_eps must be > 0, got {grad_norm_ratio_eps!r}")
        self.grad_norm_ratio_eps = float(grad_norm_ratio_eps)
        self.param_groups: List[Dict[str, Any]] = []
        self.state: Dict[str, Any] = {"skipped_steps": 0, "prev_grad_sq_norm": None}
        self._structure = "groups" if _is_group_list(params) else ("dict" if isinstance(params, Mapping) else "list")
        groups = list(params) if self._structure == "groups" else [{"params": params}]
        if not groups:
            raise ValueError("params is empty")
        for g in groups:
            self.add_param_group(g)

    # ------------------------------------------------------------ parameter groups
    def add_param_group(self, group: Mapping[str, Any]) -> None:
        """Adds a parameter group (``{"params": list-or-dict, **hyperparameters}``);
        missing hyperparameters take the optimizer's defaults. Once there are several
        groups, :meth:`step` takes one gradient entry (list or dict) per group."""
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
            names = [f"{gi}.{i}" if self._structure == "groups" else str(i) for i in range(len(arrays))]
            keyed = False
        if not arrays:
            raise ValueError(f"parameter group {gi} has no parameters")
        arrays = [_check_param(a, n) for a, n in zip(arrays, names)]
        if len({a.dtype for a in arrays}) != 1:
            raise TypeError(f"parameter group {gi} mixes dtypes; one kernel call per group needs one dtype")
        seen = {id(a) for g in self.param_groups for a in g["params"]}
        for a, n in zip(arrays, names):
            if id(a) in seen or any(np.shares_memory(a, b) for g in self.param_groups for b in g["params"]):
                raise ValueError(f"parameter {n} appears in more than one place")
            seen.add(id(a))
        if len(set(map(id, arrays))) != len(arrays):
            raise ValueError(f"parameter group {gi} lists an array twice")
        hyper = {**self.defaults, **{k: v for k, v in group.items() if k != "params"}}
        self._validate_hyper(hyper)
        g = {"params": arrays, "names": names, "keyed": keyed, **hyper, "step": 0}
        g["_state"] = {name: [self._new_state(g, name, a) for a in arrays] for name in self._state_spec(g)}
        g["_scratch"] = None
        self._dry_run(g)
        self.param_groups.append(g)
        if len(self.param_groups) > 1:
            self._structure = "groups"

    def _dry_run(self, g: Dict[str, Any]) -> None:
        # The kernel on empty lists checks every hyperparameter and touches nothing, so a
        # bad value fails here, at construction, instead of halfway through a step.
        empty = dict(g, params=[], names=[], _state={k: [] for k in g["_state"]}, adapt=[])
        lr = self._group_lr(g, 1)
        self._update(empty, [], lr, 1)

    def _validate_hyper(self, h: Dict[str, Any]) -> None:
        lr = h["lr"]
        if not callable(lr) and not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr >= 0):
            raise ValueError(f"lr must be a finite number >= 0 or a schedule, got {lr!r}")
        if h.get("l1", 0.0) < 0 or not math.isfinite(h.get("l1", 0.0)):
            raise ValueError(f"l1 must be a finite number >= 0, got {h.get('l1')!r}")
        if h.get("l1_mode", "subgradient") not in ("subgradient", "proximal"):
            raise ValueError(f"l1_mode must be 'subgradient' or 'proximal', got {h.get('l1_mode')!r}")

    # ------------------------------------------------------------ subclass interface
    def _state_spec(self, group: Dict[str, Any]) -> List[str]:
        """Names of the per-parameter state arrays this group needs."""
        return []

    def _new_state(self, group: Dict[str, Any], name: str, param: Array) -> Array:
        return np.zeros_like(param)

    def _update(self, group: Dict[str, Any], grads: List[Array], lr: float, step: int) -> Any:
        """One kernel call updating every parameter of ``group`` in place."""
        raise NotImplementedError


    # ------------------------------------------------------------ learning rate
    @property
    def lr(self) -> List[float]:
        """The learning rate each group's next step will use (schedules evaluated)."""
        return [self._group_lr(g, g["step"] + 1) for g in self.param_groups]

    @lr.setter
    def lr(self, value: Union[float, Schedule]) -> None:
        for g in self.param_groups:
            h = dict(g, lr=value)
            self._validate_hyper(h)
            g["lr"] = value

    @staticmethod
    def _group_lr(group: Dict[str, Any], step: int) -> float:
        lr = group["lr"]
        return float(lr(step - 1)) if callable(lr) else float(lr)

    # ------------------------------------------------------------ stepping
    def _grads_by_group(self, grads) -> List[List[Array]]:
        """Grads in the params' structure -> one list per group; checks shapes and dtypes
        of all of them before anything is updated."""
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
                if not isinstance(a, np.ndarray):
                    raise TypeError(f"gradient {n} must be a numpy.ndarray, got {type(a).__name__}")
                if a.shape != p.shape:
                    raise ValueError(f"gradient {n} has shape {a.shape}, parameter has {p.shape}")
                if a.dtype != p.dtype:
                    raise TypeError(f"gradient {n} has dtype {a.dtype}, parameter has {p.dtype}")
                if not a.flags.c_contiguous:
                    raise ValueError(f"gradient {n} must be C-contiguous")
            out.append(lst)
        return out

    def step(self, grads) -> bool:
        """Applies one update to every parameter. ``grads`` has the structure of the params
        (list, dict, or one list/dict per group; with named groups also one flat dict). Returns False if the non-finite guard
        skipped the step (parameters and state untouched), True otherwise."""
        per_group = self._grads_by_group(grads)
        flat = [a for lst in per_group for a in lst]
        if self.skip_nonfinite and not F.all_finite(flat):
            self.state["skipped_steps"] += 1
            import warnings

            warnings.warn(f"non-finite gradients: step skipped ({self.state['skipped_steps']} so far)",
                          NonFiniteGradients, stacklevel=2)
            return False
        factor = 1.0
        if self.grad_norm_ratio:
            sq = float(np.sum(np.square(F.norms(flat))))
            prev = self.state["prev_grad_sq_norm"]
            if prev is not None:
                eps = self.grad_norm_ratio_eps
                factor = max(sq, eps) / max(prev, eps)
            self.state["prev_grad_sq_norm"] = sq
        lrs = [self._group_lr(g, g["step"] + 1) * factor for g in self.param_groups]
        for gi, lr in enumerate(lrs):  # all checked before any group is touched
            if not (math.isfinite(lr) and lr >= 0):
                raise ValueError(f"parameter group {gi}: learning rate must be finite and >= 0, got {lr!r}")
        for g, gr, lr in zip(self.param_groups, per_group, lrs):
            t = g["step"] + 1
            wd = g.get("weight_decay", 0.0)
            if g.get("decoupled_weight_decay") and wd and not self._kernel_decouples:
                F.scale(g["params"], 1.0 - lr * wd)
            if g.get("l1") and g.get("l1_mode") == "subgradient":
                gr = self._penalized(g, gr)
            self._update(g, gr, lr, t)
            if g.get("l1") and g.get("l1_mode") == "proximal":
                F.soft_threshold(g["params"], threshold=lr * g["l1"])
            g["step"] = t
        return True

    _kernel_decouples = False  # True where the kernel applies decoupled decay itself

    def _penalized(self, g: Dict[str, Any], grads: List[Array]) -> List[Array]:
        # The caller's gradient arrays are never modified: the penalty goes into scratch
        # buffers, allocated once per group.
        if g["_scratch"] is None:
            g["_scratch"] = [np.empty_like(p) for p in g["params"]]
        for s, a in zip(g["_scratch"], grads):
            np.copyto(s, a)
        F.add_penalty(g["_scratch"], g["params"], l1=g["l1"])
        return g["_scratch"]

    def _coupled_wd(self, g: Dict[str, Any]) -> float:
        """Weight decay for the kernel: 0 when the base class applied it decoupled."""
        return 0.0 if g.get("decoupled_weight_decay") else g.get("weight_decay", 0.0)

    # ------------------------------------------------------------ state
    def reset_state(self) -> None:
        """Zeroes every state array and step count, as if no step had been taken."""
        for g in self.param_groups:
            g["step"] = 0
            for name, arrs in g["_state"].items():
                for p, a in zip(g["params"], arrs):
                    a[...] = self._new_state(g, name, p)
        self.state = {"skipped_steps": 0, "prev_grad_sq_norm": None}

    zero_state = reset_state

    def state_dict(self) -> Dict[str, Any]:
        """Plain NumPy arrays and Python scalars (savable with pickle or ``np.savez``):
        ``{"optimizer", "param_groups": [hyperparameters, step, names], "state": [{name:
        [arrays]}], "skipped_steps", "prev_grad_sq_norm"}``. A schedule used as lr is not
        saved (rebuild the optimizer with it; the saved step drives it)."""
        groups, states = [], []
        for g in self.param_groups:
            h = {k: v for k, v in g.items() if not k.startswith("_") and k not in ("params", "keyed")}
            h["lr"] = None if callable(g["lr"]) else g["lr"]
            h["names"] = list(g["names"])
            h["shapes"] = [tuple(p.shape) for p in g["params"]]
            h["dtype"] = str(g["params"][0].dtype)
            groups.append(h)
            states.append({name: [a.copy() for a in arrs] for name, arrs in g["_state"].items()})
        return {
            "optimizer": type(self).__name__,
            "param_groups": groups,
            "state": states,
            "skipped_steps": self.state["skipped_steps"],
            "prev_grad_sq_norm": self.state["prev_grad_sq_norm"],
        }

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        """Restores a :meth:`state_dict`. Everything is checked first (optimizer type,
        groups, names, shapes, dtypes, state arrays); on any mismatch it raises and the
        optimizer is unchanged."""
        if sd.get("optimizer") != type(self).__name__:
            raise ValueError(f"state_dict is for {sd.get('optimizer')!r}, not {type(self).__name__}")
        groups, states = sd["param_groups"], sd["state"]
        if len(groups) != len(self.param_groups) or len(states) != len(self.param_groups):
            raise ValueError(f"state_dict has {len(groups)} parameter groups, optimizer has {len(self.param_groups)}")
        for gi, (g, h, st) in enumerate(zip(self.param_groups, groups, states)):
            if list(h["names"]) != g["names"] or [tuple(s) for s in h["shapes"]] != [p.shape for p in g["params"]]:
                raise ValueError(f"parameter group {gi}: names or shapes differ from the state_dict's")
            if h["dtype"] != str(g["params"][0].dtype):
                raise TypeError(f"parameter group {gi}: dtype {h['dtype']} in state_dict, {g['params'][0].dtype} here")
            if set(st) != set(g["_state"]):
                raise ValueError(f"parameter group {gi}: state {sorted(st)} in state_dict, {sorted(g['_state'])} here")
            for name, arrs in st.items():
                for p, a in zip(g["params"], arrs):
                    a = np.asarray(a)
                    if a.shape != p.shape or a.dtype != p.dtype:
                        raise ValueError(f"parameter group {gi}: state {name} has shape/dtype {a.shape}/{a.dtype}")
            trial = {k: v for k, v in h.items() if k not in ("names", "shapes", "dtype", "step")}
            if trial.get("lr") is None:
                trial["lr"] = g["lr"]
            self._validate_hyper({**g, **trial})
        for g, h, st in zip(self.param_groups, groups, states):
            for k, v in h.items():
                if k in ("names", "shapes", "dtype") or (k == "lr" and v is None):
                    continue
                g[k] = v
            for name, arrs in st.items():
                for dst, src in zip(g["_state"][name], arrs):
                    dst[...] = src
        self.state = {"skipped_steps": int(sd["skipped_steps"]), "prev_grad_sq_norm": sd["prev_grad_sq_norm"]}

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={v!r}" for k, v in self.defaults.items())
        n = sum(len(g["params"]) for g in self.param_groups)
        return f"{type(self).__name__}({n} parameters in {len(self.param_groups)} group(s), {hp})"


def _check_betas(betas) -> None:
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2 and all(0.0 <= b < 1.0 for b in betas)):
        raise ValueError(f"betas must be a pair in [0, 1), got {betas!r}")


# ---------------------------------------------------------------------------- SGD
class SGD(Optimizer):
    r"""Stochastic gradient descent with momentum, as torch.optim.SGD (kernel
    :func:`deepoptim.functional.sgd`, whose docstring has the update).

    ``momentum_form="classical"`` (seed 001: ``v = mu*v + lr*g; p -= v``) and ``"ema"``
    (seed 004: ``v = mu*v + (1-mu)*g; p -= lr*v``) select the source documents' forms.
    """

    def __init__(self, params: Params, lr: Union[float, Schedule] = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False, *,
                 maximize: bool = False, momentum_form: str = "torch", **common) -> None:
        opts = {k: common.pop(k) for k in list(common) if k in _COMMON}
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov, maximize=maximize, momentum_form=momentum_form,
                                      **{**_COMMON, **opts}), **common)

    def _state_spec(self, g):
        return ["momentum_buffer"] if (g["momentum"] != 0.0 or g["momentum_form"] != "torch") else []

    def _update(self, g, grads, lr, step):
        bufs = g["_state"].get("momentum_buffer")
        F.sgd(g["params"], grads, bufs, lr=lr, momentum=g["momentum"], dampening=g["dampening"],
              weight_decay=self._coupled_wd(g), nesterov=g["nesterov"], maximize=g["maximize"],
              first_step=step == 1, momentum_form=g["momentum_form"])


# ------------------------------------------------------------------------ Adagrad
class Adagrad(Optimizer):
    r"""Adagrad (Duchi et al., 2011), as torch.optim.Adagrad (kernel :func:`deepoptim.functional.adagrad`)."""

    def __init__(self, params: Params, lr: Union[float, Schedule] = 1e-2, lr_decay: float = 0.0,
                 weight_decay: float = 0.0, initial_accumulator_value: float = 0.0, eps: float = 1e-10, *,
                 maximize: bool = False, **common) -> None:
        opts = {k: common.pop(k) for k in list(common) if k in _COMMON}
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, eps=eps,
                                      maximize=maximize, **{**_COMMON, **opts}), **common)

    def _state_spec(self, g):
        return ["sum"]

    def _new_state(self, g, name, p):
        return np.full_like(p, g["initial_accumulator_value"])

    def _update(self, g, grads, lr, step):
        F.adagrad(g["params"], grads, g["_state"]["sum"], step=step, lr=lr, lr_decay=g["lr_decay"],
                  weight_decay=self._coupled_wd(g), initial_accumulator_value=g["initial_accumulator_value"],
                  eps=g["eps"], maximize=g["maximize"])


# ------------------------------------------------------------------------ RMSprop
class RMSprop(Optimizer):
    r"""RMSprop, as torch.optim.RMSprop (kernel :func:`deepoptim.functional.rmsprop`)."""

    def __init__(self, params: Params, lr: Union[float, Schedule] = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False, *,
                 maximize: bool = False, **common) -> None:
        opts = {k: common.pop(k) for k in list(common) if k in _COMMON}
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                                      centered=centered, maximize=maximize, **{**_COMMON, **opts}), **common)

    def _state_spec(self, g):
        return ["square_avg"] + (["grad_avg"] if g["centered"] else []) + (["momentum_buffer"] if g["momentum"] > 0 else [])

    def _update(self, g, grads, lr, step):
        s = g["_state"]
        F.rmsprop(g["params"], grads, s["square_avg"], s.get("grad_avg"), s.get("momentum_buffer"), lr=lr,
                  alpha=g["alpha"], eps=g["eps"], weight_decay=self._coupled_wd(g), momentum=g["momentum"],
                  centered=g["centered"], maximize=g["maximize"])


# --------------------------------------------------------------------------- Adam
class Adam(Optimizer):
    r"""Adam / AMSGrad (Kingma & Ba, 2015; Reddi et al., 2018), as torch.optim.Adam
    (kernel :func:`deepoptim.functional.adam`). ``bias_correction=False`` and
    ``eps_inside_sqrt=True`` give the source documents' form."""

    _kernel_decouples = True

    def __init__(self, params: Params, lr: Union[float, Schedule] = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *, maximize: bool = False,
                 bias_correction: bool = True, eps_inside_sqrt: bool = False, **common) -> None:
        _check_betas(betas)
        opts = {k: common.pop(k) for k in list(common) if k in _COMMON}
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize, bias_correction=bias_correction,
                                      eps_inside_sqrt=eps_inside_sqrt, **{**_COMMON, **opts}), **common)

    def _state_spec(self, g):
        return ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if g["amsgrad"] else [])

    def _update(self, g, grads, lr, step):
        s = g["_state"]
        F.adam(g["params"], grads, s["exp_avg"], s["exp_avg_sq"], s.get("max_exp_avg_sq"), step=step, lr=lr,
               betas=g["betas"], eps=g["eps"], weight_decay=g["weight_decay"], amsgrad=g["amsgrad"],
               maximize=g["maximize"], decoupled_weight_decay=bool(g["decoupled_weight_decay"]),
               bias_correction=g["bias_correction"], eps_inside_sqrt=g["eps_inside_sqrt"])


class AdamW(Adam):
    r"""AdamW (Loshchilov & Hutter, 2019), as torch.optim.AdamW: Adam with decoupled weight
    decay ``p *= 1 - lr*weight_decay`` and ``weight_decay=1e-2`` by default."""

    def __init__(self, params: Params, lr: Union[float, Schedule] = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, **kw) -> None:
        kw["decoupled_weight_decay"] = True
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, **kw)


# ------------------------------------------------------------------ LAMB and LARS
def _adapt_flags(g, exclude) -> List[bool]:
    return [not (exclude is not None and exclude(n, p)) for n, p in zip(g["names"], g["params"])]


class LAMB(Optimizer):
    r"""LAMB (You et al., ICLR 2020; kernel :func:`deepoptim.functional.lamb`): Adam's
    direction plus weight decay, scaled per tensor by the trust ratio ``||p|| / ||r||``
    (1 when either norm is 0).

    Args:
      exclude: ``exclude(name, array) -> bool``; True keeps a parameter out of the trust
        ratio and weight decay (typically biases and normalization parameters, e.g.
        :func:`deepoptim.regularization.is_bias_or_norm`).
    The last step's trust ratios are in ``group["trust_ratio"]``.
    """

    def __init__(self, params: Params, lr: Union[float, Schedule] = 1e-3, betas=(0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0, *, bias_correction: bool = True,
                 exclude: Optional[Callable[[str, Array], bool]] = None, **common) -> None:
        _check_betas(betas)
        self._exclude = exclude
        opts = {k: common.pop(k) for k in list(common) if k in _COMMON}
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      bias_correction=bias_correction, **{**_COMMON, **opts}), **common)

    def _state_spec(self, g):
        g["adapt"] = _adapt_flags(g, self._exclude)
        return ["exp_avg", "exp_avg_sq"]

    def _update(self, g, grads, lr, step):
        s = g["_state"]
        g["trust_ratio"] = F.lamb(g["params"], grads, s["exp_avg"], s["exp_avg_sq"], step=step, lr=lr,
                                  betas=g["betas"], eps=g["eps"], weight_decay=self._coupled_wd(g),
                                  bias_correction=g["bias_correction"], adapt=g["adapt"])


class LARS(Optimizer):
    r"""LARS (You, Gitman & Ginsburg, 2017; kernel :func:`deepoptim.functional.lars`):
    SGD with momentum whose learning rate is scaled per tensor by
    ``trust_coefficient * ||p|| / (||g|| + weight_decay*||p|| + eps)`` (1 when either norm is 0).

    Args:
      exclude: ``exclude(name, array) -> bool``; True keeps a parameter out of the
        layer-wise scaling and weight decay.
    The last step's local learning rates are in ``group["trust_ratio"]``.
    """

    def __init__(self, params: Params, lr: Union[float, Schedule] = 1e-3, momentum: float = 0.9,
                 weight_decay: float = 0.0, trust_coefficient: float = 1e-3, eps: float = 0.0, *,
                 exclude: Optional[Callable[[str, Array], bool]] = None, **common) -> None:
        self._exclude = exclude
        opts = {k: common.pop(k) for k in list(common) if k in _COMMON}
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      trust_coefficient=trust_coefficient, eps=eps, **{**_COMMON, **opts}), **common)

    def _state_spec(self, g):
        g["adapt"] = _adapt_flags(g, self._exclude)
        return ["momentum_buffer"] if g["momentum"] != 0.0 else []

    def _update(self, g, grads, lr, step):
        g["trust_ratio"] = F.lars(g["params"], grads, g["_state"].get("momentum_buffer"), lr=lr,
                                  momentum=g["momentum"], weight_decay=self._coupled_wd(g),
                                  trust_coefficient=g["trust_coefficient"], eps=g["eps"], adapt=g["adapt"])


__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "LAMB", "LARS", "NonFiniteGradients"]
