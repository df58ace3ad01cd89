"""The benchmark engine behind ``deepoptim bench`` and ``bench/run.py``.

Every case checks deepoptim's result against its NumPy twin before timing anything, then
times, interleaved (one call of each implementation per round, so that machine drift hits
all of them alike):

- ``deepoptim``: the kernel through :mod:`deepoptim.functional`;
- ``probe``: the in-place bandwidth probe (``_core.probe``), a trivial C++ loop reading,
  updating and storing the same arrays as the kernel, the same way: the memory-bound
  ceiling;
- ``numpy``: the NumPy twin (skipped above 10M elements: seconds per call);
- ``torch fused`` / ``torch foreach`` / ``torch loop``: torch's implementations, when
  torch is installed.

Reported per implementation: median and min time per call, bytes moved per element, GB/s,
``of probe`` (probe time / time: the fraction of the probe's bandwidth reached) and
``x torch`` (torch's best fused-or-default time / time). Ratios are taken within one run.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import json
import os
import platform
import re
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Tuple, Type, Union

import ml_dtypes
import numpy as np
import numpy.typing as npt

import deepoptim
from deepoptim import _core
from deepoptim import functional as F
from deepoptim import optim
from deepoptim import reference as R
from deepoptim.reference._lowp import QBLOCK, Blockwise8
from deepoptim.reference import norm as R_norm

try:  # optional: the torch comparisons
    import torch  # type: ignore[import-not-found, unused-ignore]  # (absent with '.[test]' alone)
except ImportError:  # pragma: no cover - exercised where torch is absent
    torch = None  # type: ignore[assignment, unused-ignore]

_NUMPY_MAX = 10_000_000

# name -> zero-argument callable: the implementations one case times.
Impls = Dict[str, Callable[[], object]]
# One result row (JSON-ready): case, kernel, size, impl, times, ratios.
Row = Dict[str, Any]
Arrays = List[np.ndarray]
# What _core.probe takes per operand: an array, or a list of them.
ProbeArg = Union[npt.NDArray[np.floating[Any]], Sequence[npt.NDArray[np.floating[Any]]]]


@dataclasses.dataclass
class Case:
    """One benchmark: ``setup()`` allocates the data and returns the implementations
    (name -> zero-argument callable), after checking deepoptim against the twin."""

    name: str
    kernel: str
    size: int
    bytes_per_elem: float
    setup: Callable[[], Impls]


def _fmt_size(n: int) -> str:
    for unit, v in (("M", 1_000_000), ("K", 1_000)):
        if n >= v and n % v == 0:
            return f"{n // v}{unit}"
    return str(n)


def _check(a: Any, b: Any, what: str) -> None:
    for x, y in zip(a if isinstance(a, (list, tuple)) else [a], b if isinstance(b, (list, tuple)) else [b]):
        if x is None and y is None:
            continue
        np.testing.assert_allclose(x, y, rtol=2e-5, atol=2e-5 * (1 + float(np.max(np.abs(y), initial=0))),
                                   err_msg=f"{what}: deepoptim disagrees with its twin")


# ---------------------------------------------------------------------------- optimizers
# Every optimizer in deepoptim.optim.REGISTRY gets a case: its kernel, its twin, the
# state its representative configuration (``example``) keeps, and the torch.optim class
# it equals. Only the kernels that take more than one pass over memory say how, so that
# the probe moves the same bytes the same way: (bytes per float32 element, probe).
_MULTIPASS: Dict[str, Tuple[int, Callable[[Arrays, Arrays, List[ProbeArg]], object]]] = {
    # LAMB: update m, v reading p and g (and summing norms); then update p reading m, v.
    "lamb": (40, lambda p, g, st: (_core.probe([g, p], st, []), _core.probe(st, [p], []))),
    # LARS: the norms of p and g; then the momentum update.
    "lars": (28, lambda p, g, st: (_core.probe([p, g], [], []), _core.probe([g], [p] + st, []))),
}


def _optimizers() -> List[Type[optim.Optimizer]]:
    """The classes of ``optim.REGISTRY``."""
    return list(optim.REGISTRY.values())


def _spec(name: str) -> Tuple[Type[optim.Optimizer], List[bool], bool, List[Optional[float]]]:
    """(class, which state operands of the twin the example uses, has_step, and for each
    used one its starting value if it is a per-tensor scalar state (NAdam's mu_product,
    ASGD's eta and mu: one number per tensor, moving no bytes per element) else None)."""
    cls = next(c for c in _optimizers() if c.kernel == name)
    sig = inspect.signature(getattr(R, name))
    operands = [k for k, p in sig.parameters.items() if p.kind is p.POSITIONAL_OR_KEYWORD][2:]
    probe_opt = cls([np.zeros(1, np.float32)], **cls.example)
    kept = probe_opt._state_names(probe_opt.param_groups[0])  # type: ignore[no-untyped-call, unused-ignore]
    used = [any(op in (s + "s", f"state_{s}s") for s in kept) for op in operands]
    assert sum(used) == len(kept), (name, operands, kept)
    group = probe_opt.param_groups[0]
    scalars = [float(probe_opt._init_state(group, op[:-1], group["params"][0]))  # type: ignore[no-untyped-call, unused-ignore]
               if op[:-1] in cls._scalar_state
               else None for op, u in zip(operands, used) if u]
    return cls, used, "step" in sig.parameters, scalars


def _optim_case(name: str, ntensors: int, each: int, with_numpy: bool) -> Case:
    cls, used, has_step, scalars = _spec(name)
    kw = dict(cls.example)
    nstate = sum(1 for x in scalars if x is None)  # the states of the parameter's size
    nbytes, multipass = _MULTIPASS.get(name, (4 * (3 + 2 * nstate), None))

    def setup() -> Impls:
        rng = np.random.default_rng(0)
        p: Arrays = [rng.standard_normal(each).astype(np.float32) for _ in range(ntensors)]
        g: Arrays = [rng.standard_normal(each).astype(np.float32) * 0.1 for _ in range(ntensors)]
        cols: List[Arrays] = [[np.zeros(each, np.float32) if x is None else np.array(x, np.float32) for _ in range(ntensors)]
                for x in scalars]
        st: List[ProbeArg] = [c for c, x in zip(cols, scalars) if x is None]  # what the probe moves
        fast, twin = getattr(F, name), getattr(R, name)
        extra: Callable[[int], Dict[str, int]] = (lambda s: {"step": s}) if has_step else (lambda s: {})

        def operands(states: List[Arrays]) -> List[Optional[Arrays]]:
            it = iter(states)
            return [next(it) if u else None for u in used]

        # Check: one step of each from the same start agrees.
        p2, st2 = [a.copy() for a in p], [[a.copy() for a in col] for col in cols]
        fast(p, g, *operands(cols), **kw, **extra(1))
        twin(p2, g, *operands(st2), **kw, **extra(1))
        _check(p, p2, name)
        counter = {"t": 1}
        ops = operands(cols)

        def ours() -> None:
            counter["t"] += 1
            fast(p, g, *ops, **kw, **extra(counter["t"]))

        # The probe moves the kernel's traffic the way the kernel does: one pass reading g
        # and updating p and the states (or the passes _MULTIPASS describes).
        if multipass is None:
            impls: Impls = {"deepoptim": ours, "probe": lambda: _core.probe([g], [p] + st, [])}
        else:
            impls = {"deepoptim": ours, "probe": lambda: multipass(p, g, st)}
        if with_numpy and ntensors * each <= _NUMPY_MAX:
            ops2 = operands(st2)
            impls["numpy"] = lambda: twin(p2, g, *ops2, **kw, **extra(2))
        tname = cls.torch_name
        if torch is not None and tname is not None:
            variants: Dict[str, Dict[str, bool]] = {"fused": dict(fused=True), "foreach": dict(foreach=True), "loop": dict(foreach=False)}
            tcls = getattr(torch.optim, tname)
            if "fused" not in inspect.signature(tcls).parameters:
                del variants["fused"]  # torch 2.13 has a fused CPU path for SGD, Adam(W), Adagrad only
            for vname, vkw in variants.items():
                tp = [torch.from_numpy(a.copy()) for a in p]
                for t, a in zip(tp, g):
                    t.grad = torch.from_numpy(a)
                opt = tcls(tp, **kw, **vkw)
                opt.step()  # creates the state outside the timing
                impls[f"torch {vname}"] = opt.step
        return impls

    label = f"{name}/{_fmt_size(each)}" if ntensors == 1 else f"{name}/{ntensors}x{_fmt_size(each)}"
    return Case(label, name, ntensors * each, nbytes, setup)


# ---------------------------------------------------------------------------- low precision
# AdamW on low-precision storage: (parameter dtype, state dtype, master weights, stochastic
# rounding). Each case is timed beside torch's fused AdamW on float32 and on bfloat16
# tensors (torch keeps bfloat16 state for bfloat16 parameters); "x torch" is against the
# one the target names: float32 where our parameters are float32 or have float32
# master weights, else bfloat16.
_LOWP_MODES = {
    "f32-params-bf16-state": ("float32", "bfloat16", False, False),
    "bf16-params-bf16-state": ("bfloat16", "bfloat16", False, False),
    "bf16-params-f32-state": ("bfloat16", "float32", False, False),
    "bf16-params-master": ("bfloat16", "float32", True, False),
    "bf16-params-stochastic-bf16-state": ("bfloat16", "bfloat16", False, True),
    "f32-params-int8-state": ("float32", "int8", False, False),
    "bf16-params-int8-state": ("bfloat16", "int8", False, False),
}


def _same_bytes_probe(total_bytes: float) -> Callable[[], object]:
    """A probe for a step on mixed storage: float32 AdamW's access pattern (one array read,
    three updated in one pass), sized to move ``total_bytes``. The probe takes one dtype
    and one size; splitting 16-bit and 8-bit arrays into float32 pieces to mimic the step
    exactly would add streams the step does not have (measured: half the bandwidth)."""
    k = max(int(total_bytes / 28), 1)
    g, p, m, v = (np.zeros(k, np.float32) for _ in range(4))
    return lambda: _core.probe([g], [p, m, v], [])


def _add_deepspeed_bf16(impls: Impls, p32: npt.NDArray[np.float32], g: npt.NDArray[Any], fp32_states: bool) -> None:
    """DeepSpeed's CPU Adam (AdamW mode) on a bfloat16 parameter, its bfloat16-parameter
    mode: float32 moments (``fp32_optimizer_states``, its default) or bfloat16 ones, where
    DeepSpeed is installed and builds its CPU op. A peer, never a requirement."""
    try:
        from deepspeed.ops.adam import DeepSpeedCPUAdam  # type: ignore[import-not-found, unused-ignore]

        tp = torch.from_numpy(p32.copy()).to(torch.bfloat16)
        tp.grad = torch.from_numpy(g.astype(np.float32)).to(torch.bfloat16)
        ds = DeepSpeedCPUAdam([tp], lr=1e-3, weight_decay=1e-2, adamw_mode=True, fp32_optimizer_states=fp32_states)
        ds.step()
    except Exception:  # noqa: BLE001 - not installed, or its CPU op does not build here
        return
    impls["deepspeed cpu_adam bfloat16"] = ds.step


def _lowp_case(mode: str, n: int) -> Case:
    pdt, sdt, master, stochastic = _LOWP_MODES[mode]
    ps, ss = (2 if pdt == "bfloat16" else 4), {"bfloat16": 2, "int8": 1, "float32": 4}[sdt]
    # p written (and read unless the master is), g read, m and v updated, master updated;
    # 8-bit state adds a float32 absmax per 256 elements (read and written) per state.
    nbytes = (ps if master else 2 * ps) + ps + 4 * ss + (8 if master else 0) + (2 * 2 * 4 / 256 if sdt == "int8" else 0)

    def setup() -> Impls:
        bf16 = np.dtype(ml_dtypes.bfloat16)
        dt = {"float32": np.dtype(np.float32), "bfloat16": bf16}
        rng = np.random.default_rng(0)
        p32 = (rng.standard_normal(n) * 0.02).astype(np.float32)
        p = p32.astype(dt[pdt])
        g = (rng.standard_normal(n) * 1e-3).astype(np.float32).astype(dt[pdt])
        m: Any
        v: Any
        if sdt == "int8":
            nb = -(-n // QBLOCK)
            m = Blockwise8(np.full(n, 127, np.uint8), np.zeros(nb, np.float32), True)
            v = Blockwise8(np.zeros(n, np.uint8), np.zeros(nb, np.float32), False)
        else:
            m, v = np.zeros(n, dt[sdt]), np.zeros(n, dt[sdt])
        mp = p32.copy() if master else None
        counter = {"t": 0}

        def ours() -> None:
            counter["t"] += 1
            F.adamw(p, g, m, v, step=counter["t"], lr=1e-3, master_params=mp,
                    stochastic_rounding=(7, counter["t"]) if stochastic else None)

        # Check: a step of the kernel and of its twin from the same start, bit for bit.
        k = min(n, 100_000)
        sr = (7, 1) if stochastic else None
        def head(a: Any) -> Any:  # the first k elements, copied (an 8-bit state: its first blocks)
            if isinstance(a, Blockwise8):
                return Blockwise8(a.codes[:k].copy(), a.absmax[: -(-k // QBLOCK)].copy(), a.signed)
            return a[:k].copy()

        def raw(a: Any) -> List[npt.NDArray[Any]]:
            return [a.codes, a.absmax] if isinstance(a, Blockwise8) else [a]

        fast = [head(a) for a in (p, g, m, v)] + ([mp[:k].copy()] if mp is not None else [])
        twin = [head(a) for a in fast]
        F.adamw(fast[0], fast[1], fast[2], fast[3], step=1, lr=1e-3, master_params=fast[4] if master else None,
                stochastic_rounding=sr)
        R.adamw(twin[0], twin[1], twin[2], twin[3], step=1, lr=1e-3, master_params=twin[4] if master else None,
                stochastic_rounding=sr)
        for a, b in zip(fast, twin):
            for x, y in zip(raw(a), raw(b)):
                if not np.array_equal(x.view(np.uint8), y.view(np.uint8)):
                    raise AssertionError(f"lowp-adamw/{mode}: deepoptim disagrees with its twin")
        ours()
        impls: Impls = {"deepoptim": ours, "probe": _same_bytes_probe(nbytes * n)}
        if torch is not None:
            torch_ref = "float32" if pdt == "float32" or master else "bfloat16"
            for tname, tdt in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
                tp = torch.from_numpy(p32.copy()).to(tdt)
                tp.grad = torch.from_numpy(g.astype(np.float32)).to(tdt)
                opt = torch.optim.AdamW([tp], lr=1e-3, fused=True)
                opt.step()
                impls["torch fused" if tname == torch_ref else f"torch fused {tname}"] = opt.step
            if pdt == "bfloat16" and not stochastic and sdt != "int8":
                _add_deepspeed_bf16(impls, p32, g, fp32_states=sdt == "float32")
        return impls

    return Case(f"lowp-adamw/{mode}/{_fmt_size(n)}", "lowp-adamw", n, nbytes, setup)


def _overhead_case() -> Case:
    """A 1K-element Adam step through deepoptim.functional: call overhead plus ~1K elements of work."""

    def setup() -> Impls:
        p, g, m, v = (np.ones(1000, np.float32) for _ in range(4))
        impls: Impls = {"deepoptim": lambda: F.adam(p, g, m, v, step=1), "probe": lambda: _core.probe([g], [p, m, v], [])}
        if torch is not None:
            tp = torch.ones(1000)
            tp.grad = torch.ones(1000)
            opt = torch.optim.Adam([tp], fused=True)
            opt.step()
            impls["torch fused"] = opt.step
        return impls

    return Case("overhead/adam-1K-call", "overhead", 1000, 28, setup)


# ---------------------------------------------------------------------------- Muon
def _muon_case(label: str, shapes: List[Tuple[int, int]]) -> Case:
    """Muon on float32 matrices against torch.optim.Muon. Compute-bound (five
    Newton-Schulz iterations of three matrix products each): the probe and the 20 B/elem
    cover only the elementwise passes, so "of probe" is small by nature. Checked against
    the twin first as the tests check it (tests/test_optim_muon.py): momentum buffers to
    the bit, parameters to 2**-3 of the step (the products sum in another order)."""

    def setup() -> Dict[str, Callable[[], object]]:
        rng = np.random.default_rng(0)
        ps = [(rng.standard_normal(s) * 0.02).astype(np.float32) for s in shapes]
        gs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        bs = [np.zeros_like(p) for p in ps]
        starts = [p.copy() for p in ps]
        ref_p, ref_b = [p.copy() for p in ps], [b.copy() for b in bs]
        F.muon(ps, gs, bs, lr=0.02)
        R.muon(ref_p, gs, ref_b, lr=0.02)
        decay = np.float32(1 - 0.02 * 0.1)  # the default weight_decay, 0.1
        for k, (p, q, b, c, p0) in enumerate(zip(ps, ref_p, bs, ref_b, starts)):
            np.testing.assert_array_equal(b, c, err_msg=f"{label}: momentum buffer {k} disagrees with the twin")
            if float(np.abs(p - q).max()) > 2.0**-3 * float(np.abs(q - p0 * decay).max()):
                raise AssertionError(f"{label}: parameter {k} disagrees with the twin beyond 2**-3 of the step")
        impls: Dict[str, Callable[[], object]] = {
            "deepoptim": lambda: F.muon(ps, gs, bs, lr=0.02),
            # the elementwise traffic alone (read g, update p and the buffer): the memory
            # floor, which the products' arithmetic leaves far behind
            "probe": lambda: _core.probe([gs], [ps, bs], []),
        }
        if sum(int(np.prod(s)) for s in shapes) <= _NUMPY_MAX:
            impls["numpy"] = lambda: R.muon(ref_p, gs, ref_b, lr=0.02)
        if torch is not None:
            tps = [torch.from_numpy(p.copy()) for p in ps]
            for t, g in zip(tps, gs):
                t.grad = torch.from_numpy(g)
            opt = torch.optim.Muon(tps, lr=0.02)
            impls["torch"] = opt.step
        return impls

    return Case(label, "muon", sum(int(np.prod(s)) for s in shapes), 20, setup)


# ------------------------------------------------------------------------- Adafactor
def _adafactor_case(label: str, shapes: List[Tuple[int, ...]]) -> Case:
    """Adafactor on float32 parameters against torch.optim.Adafactor (its default, a loop
    over the tensors on the CPU, and ``foreach=True``). The 12 B/elem and the probe are the
    floor any implementation moves (read g, update p); the kernel reads p once more for
    its norm and g three times more (row sums, column sums, the update's norm), 28 B/elem
    for a matrix, so "of probe" is at most 12/28 = 43% by construction. Checked against
    the twin to the bit first."""

    def setup() -> Dict[str, Callable[[], object]]:
        rng = np.random.default_rng(0)
        ps = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        gs = [rng.standard_normal(s).astype(np.float32) for s in shapes]

        def state(p: np.ndarray) -> Tuple[Optional[np.ndarray], Optional[np.ndarray], Optional[np.ndarray]]:
            if p.ndim >= 2:
                return (np.zeros(p.shape[:-1] + (1,), p.dtype), np.zeros(p.shape[:-2] + (1, p.shape[-1]), p.dtype),
                        None)
            return None, None, np.zeros_like(p)

        rv, cv, v = (list(x) for x in zip(*[state(p) for p in ps]))
        ref = [p.copy() for p in ps]
        rrv, rcv, rv_ = (list(x) for x in zip(*[state(p) for p in ps]))
        F.adafactor(ps, gs, rv, cv, v, step=1)
        R.adafactor(ref, gs, rrv, rcv, rv_, step=1)
        for k, (p, q) in enumerate(zip(ps, ref)):
            _check(p, q, f"{label}: parameter {k}")
        impls: Dict[str, Callable[[], object]] = {
            "deepoptim": lambda: F.adafactor(ps, gs, rv, cv, v, step=2),
            "probe": lambda: _core.probe([gs], [ps], []),
        }
        if sum(int(np.prod(s)) for s in shapes) <= _NUMPY_MAX:
            impls["numpy"] = lambda: R.adafactor(ref, gs, rrv, rcv, rv_, step=2)
        if torch is not None:
            for name, foreach in (("torch", None), ("torch foreach", True)):
                tps = [torch.from_numpy(p.copy()) for p in ps]
                for t, g in zip(tps, gs):
                    t.grad = torch.from_numpy(g)
                impls[name] = torch.optim.Adafactor(tps, foreach=foreach).step
        return impls

    return Case(label, "adafactor", sum(int(np.prod(s)) for s in shapes), 12, setup)


# ----------------------------------------------------------------------------- L-BFGS
def _lbfgs_case(n: int) -> Case:
    """One L-BFGS step (5 iterations, history 10, strong-Wolfe line search) on the
    quadratic ``0.5 * sum(a * x**2)`` of n float64 parameters, against torch.optim.LBFGS
    with the same settings; each side's closure computes the loss and gradient with its
    own library (NumPy, torch). Every step starts from the same point and history (both
    are reset before each call). Float64, not float32: the line search branches on sums
    of n terms, and in float32 two correct implementations that add in different orders
    take different branches after a few evaluations (measured at 100K: objectives 35189
    and 21752 after one step), so the times would not compare equal work; in float64 the
    two evaluate the same points. Checked first: the same objective to 1e-4."""
    kw = dict(lr=1.0, max_iter=5, history_size=10, line_search_fn="strong_wolfe")

    def setup() -> Dict[str, Callable[[], object]]:
        rng = np.random.default_rng(0)
        a = rng.uniform(0.5, 2.0, n).astype(np.float64)
        x0 = rng.standard_normal(n).astype(np.float64)
        x = x0.copy()
        opt = optim.LBFGS([x], **kw)  # type: ignore[arg-type]

        def closure() -> Tuple[float, List[np.ndarray]]:
            g = a * x
            return float(0.5 * np.dot(g, x)), [g]

        def ours() -> object:
            np.copyto(x, x0)
            opt.state.clear()
            return opt.step(closure)

        impls: Dict[str, Callable[[], object]] = {"deepoptim": ours,
                                                  "probe": lambda: _core.probe([[a]], [[x]], [])}
        if torch is not None:
            ta, tx0 = torch.from_numpy(a), torch.from_numpy(x0)
            tx = tx0.clone().requires_grad_(True)
            topt = torch.optim.LBFGS([tx], **kw)  # type: ignore[arg-type, unused-ignore]  # (unused without torch)

            def tclosure() -> Any:
                topt.zero_grad()
                loss = 0.5 * (ta * tx * tx).sum()
                loss.backward()  # type: ignore[no-untyped-call, unused-ignore]  # (torch's own annotation)
                return loss

            def theirs() -> object:
                with torch.no_grad():
                    tx.copy_(tx0)
                topt.state.clear()
                return topt.step(tclosure)  # type: ignore[no-untyped-call, unused-ignore]  # (torch's own annotation)

            ours()
            theirs()
            f_ours = float(0.5 * np.dot(a, x**2))
            f_torch = float(0.5 * np.dot(a, tx.detach().numpy() ** 2))
            if not abs(f_ours - f_torch) <= 1e-4 * max(f_ours, f_torch):
                raise AssertionError(f"lbfgs: deepoptim's step reaches {f_ours:.6g}, torch's {f_torch:.6g}")
            impls["torch"] = theirs
        return impls

    return Case(f"lbfgs/{_fmt_size(n)}", "lbfgs", n, 16, setup)


def gpt2_small_block_matrices() -> List[Tuple[int, int]]:
    """The 2-D matrices of one GPT-2 small block (what Muon optimizes; the model has 12 such
    blocks, 85M of its 124M parameters; its embeddings go to AdamW)."""
    d = 768
    return [(d, 3 * d), (d, d), (d, 4 * d), (4 * d, d)]


# ---------------------------------------------------------------------------- torch models
def gpt2_small_shapes() -> List[Tuple[int, ...]]:
    """GPT-2 small's parameter shapes (124M parameters in 148 tensors, HF layout)."""
    d, v, ctx, layers = 768, 50257, 1024, 12
    shapes: List[Tuple[int, ...]] = [(v, d), (ctx, d)]
    for _ in range(layers):
        shapes += [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,), (d,), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,)]
    return shapes + [(d,), (d,)]


def resnet50_shapes() -> List[Tuple[int, ...]]:
    """ResNet-50's parameter shapes (25.6M parameters in 161 tensors, torchvision layout)."""
    shapes: List[Tuple[int, ...]] = [(64, 3, 7, 7), (64,), (64,)]
    cin = 64
    for width, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        for b in range(blocks):
            shapes += [(width, cin, 1, 1), (width,), (width,), (width, width, 3, 3), (width,), (width,),
                       (4 * width, width, 1, 1), (4 * width,), (4 * width,)]
            if b == 0:
                shapes += [(4 * width, cin, 1, 1), (4 * width,), (4 * width,)]
            cin = 4 * width
    return shapes + [(1000, 2048), (1000,)]


def _torch_model_case(label: str, shapes: List[Tuple[int, ...]]) -> Case:
    """AdamW on a real model's parameter list through deepoptim.torch, beside torch's
    fused and foreach AdamW and DeepSpeed's CPU Adam where it is installed."""
    n = int(sum(np.prod(s) for s in shapes))

    def setup() -> Impls:
        if torch is None:
            raise RuntimeError("torch is not installed")
        import deepoptim.torch as dt

        gen = torch.Generator().manual_seed(0)

        def params() -> List[Any]:
            ps = [torch.nn.Parameter(torch.randn(s, generator=gen) * 0.02) for s in shapes]
            for p in ps:
                p.grad = torch.randn(p.shape, generator=gen) * 1e-3
            return ps

        impls: Impls = {}
        ours = dt.AdamW(params(), lr=1e-3, weight_decay=1e-2)
        ours.step()  # state outside the timing; the second step is the fast path
        ours.step()
        impls["deepoptim"] = ours.step
        ps = ours.param_groups[0]["params"]
        views = [[t.detach().numpy() for t in col] for col in
                 ([p.grad for p in ps], ps, [ours.state[p]["exp_avg"] for p in ps],
                  [ours.state[p]["exp_avg_sq"] for p in ps])]
        impls["probe"] = lambda: _core.probe([views[0]], [views[1], views[2], views[3]], [])
        vkws: Tuple[Tuple[str, Dict[str, Any]], ...] = (("fused", dict(fused=True)), ("foreach", dict(foreach=True)))
        for vname, vkw in vkws:
            opt = torch.optim.AdamW(params(), lr=1e-3, weight_decay=1e-2, **vkw)
            opt.step()
            impls[f"torch {vname}"] = opt.step
        try:  # a peer, never a requirement
            from deepspeed.ops.adam import DeepSpeedCPUAdam  # type: ignore[import-not-found, unused-ignore]
        except Exception:  # noqa: BLE001 - not installed, or installed without its CPU op
            pass
        else:
            ds = DeepSpeedCPUAdam(params(), lr=1e-3, weight_decay=1e-2, adamw_mode=True)
            ds.step()
            impls["deepspeed cpu_adam"] = ds.step
        return impls

    return Case(label, "torch-adamw", n, 28, setup)


def _torch_lowp_model_case(label: str, shapes: List[Tuple[int, ...]], mode: str) -> Case:
    """AdamW on a real model's parameter list through deepoptim.torch on low-precision
    storage (_LOWP_MODES), beside torch's fused AdamW on float32 and on bfloat16 tensors
    (bfloat16 state); "x torch" against the one _lowp_case names."""
    pdt, sdt, master, stochastic = _LOWP_MODES[mode]
    n = int(sum(np.prod(s) for s in shapes))
    ps, ss = (2 if pdt == "bfloat16" else 4), {"bfloat16": 2, "int8": 1, "float32": 4}[sdt]
    nbytes = (ps if master else 2 * ps) + ps + 4 * ss + (8 if master else 0)

    def setup() -> Impls:
        if torch is None:
            raise RuntimeError("torch is not installed")
        import deepoptim.torch as dt

        gen = torch.Generator().manual_seed(0)

        def params(dtype: Any) -> List[Any]:
            out = [torch.nn.Parameter((torch.randn(s, generator=gen) * 0.02).to(dtype)) for s in shapes]
            for p in out:
                p.grad = (torch.randn(p.shape, generator=gen) * 1e-3).to(dtype)
            return out

        ours_dtype = torch.bfloat16 if pdt == "bfloat16" else torch.float32
        ours = dt.AdamW(params(ours_dtype), lr=1e-3, weight_decay=1e-2, state_dtype=sdt, master_weights=master,
                        stochastic_rounding=stochastic)
        ours.step()
        ours.step()
        impls: Impls = {"deepoptim": ours.step}
        torch_ref = "float32" if pdt == "float32" or master else "bfloat16"
        for tname, tdt in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
            opt = torch.optim.AdamW(params(tdt), lr=1e-3, weight_decay=1e-2, fused=True)
            opt.step()
            impls["torch fused" if tname == torch_ref else f"torch fused {tname}"] = opt.step
        return impls

    return Case(f"{label}/{mode}", "torch-lowp-adamw", n, nbytes, setup)


def _int8_peer_case(n: int) -> Case:
    """AdamW with 8-bit state on one float32 tensor: deepoptim.torch against the 8-bit
    optimizers that run on a CPU (torchao's and bitsandbytes' AdamW8bit, where they are
    installed; never requirements) and torch's fused float32 AdamW."""

    def setup() -> Impls:
        if torch is None:
            raise RuntimeError("torch is not installed")
        import deepoptim.torch as dt

        gen = torch.Generator().manual_seed(0)

        def param() -> Any:
            p = torch.nn.Parameter(torch.randn(n, generator=gen) * 0.02)
            p.grad = torch.randn(n, generator=gen) * 1e-3
            return p

        impls: Impls = {}
        ours = dt.AdamW([param()], lr=1e-3, weight_decay=1e-2, state_dtype="int8")
        ours.step()
        impls["deepoptim"] = ours.step
        impls["probe"] = _same_bytes_probe(16 * n)
        opt = torch.optim.AdamW([param()], lr=1e-3, weight_decay=1e-2, fused=True)
        opt.step()
        impls["torch fused"] = opt.step
        # Peers, never requirements: looked up by name, so that neither the run nor the type
        # check needs them.
        for impl, module in (("torchao AdamW8bit", "torchao.optim"), ("bitsandbytes AdamW8bit", "bitsandbytes.optim")):
            try:
                peer: Any = getattr(importlib.import_module(module), "AdamW8bit")
            except Exception:  # noqa: BLE001 - not installed, or installed without its CPU library
                continue
            popt = peer([param()], lr=1e-3, weight_decay=1e-2)
            popt.step()
            impls[impl] = popt.step
        return impls

    return Case(f"int8-peers/adamw/{_fmt_size(n)}", "int8-peers", n, 16, setup)


def _torch_overhead_case() -> Case:
    """deepoptim.torch's own per-step work: AdamW over 161 one-element tensors (ResNet-50's
    tensor count), where the kernels' arithmetic is negligible."""

    def setup() -> Impls:
        if torch is None:
            raise RuntimeError("torch is not installed")
        import deepoptim.torch as dt

        impls: Impls = {}
        makers: Tuple[Tuple[str, Callable[[List[Any]], Any]], ...] = (
            ("deepoptim", lambda ps: dt.AdamW(ps, lr=1e-3)),
            ("torch fused", lambda ps: torch.optim.AdamW(ps, lr=1e-3, fused=True)))
        for name, make in makers:
            ps = [torch.nn.Parameter(torch.zeros(1)) for _ in range(161)]
            for p in ps:
                p.grad = torch.ones(1)
            opt = make(ps)
            opt.step()
            opt.step()
            impls[name] = opt.step
        return impls

    return Case("overhead/torch-adamw-161-tensors", "overhead", 161, 28, setup)


# ---------------------------------------------------------------------------- layers
def _bn_case(shape: Tuple[int, ...], channel_axis: int, label: str) -> Case:
    # Our passes: forward 2 reads of x (mean, variance), 1 read x + write y; backward
    # 1 read dy, x (sums), 1 read dy, x + write dx: 9 array passes of 4 bytes.
    def setup() -> Impls:
        rng = np.random.default_rng(0)
        x = rng.standard_normal(shape).astype(np.float32)
        dy = rng.standard_normal(shape).astype(np.float32)
        C = shape[channel_axis]
        w, b = np.ones(C, np.float32), np.zeros(C, np.float32)
        rm, rv = np.zeros(C, np.float32), np.ones(C, np.float32)
        y, cache = F.batch_norm(x, rm.copy(), rv.copy(), w, b, channel_axis=channel_axis)
        y2, cache2 = R_norm.batch_norm(x, rm.copy(), rv.copy(), w, b, channel_axis=channel_axis)
        _check(y, y2, "batch_norm")
        _check(list(F.batch_norm_backward(dy, cache)), list(R_norm.batch_norm_backward(dy, cache2)), "batch_norm_backward")
        out = np.empty_like(x)

        def ours() -> None:
            _, c = F.batch_norm(x, rm, rv, w, b, channel_axis=channel_axis)
            F.batch_norm_backward(dy, c)

        def probe() -> None:
            _core.probe([x], [], [])
            _core.probe([x], [], [])
            _core.probe([x], [], [out])
            _core.probe([dy, x], [], [])
            _core.probe([dy, x], [], [out])

        def twin() -> None:
            _, c = R_norm.batch_norm(x, rm, rv, w, b, channel_axis=channel_axis)
            R_norm.batch_norm_backward(dy, c)

        impls: Impls = {"deepoptim": ours, "probe": probe, "numpy": twin}
        if torch is not None:
            tx, tdy = torch.from_numpy(x), torch.from_numpy(dy)
            if channel_axis == -1:  # channels-last memory, logical NCHW, as torch users have it
                tx, tdy = tx.permute(0, 3, 1, 2), tdy.permute(0, 3, 1, 2)
            tw, tb = torch.ones(C, requires_grad=True), torch.zeros(C, requires_grad=True)
            trm, trv = torch.zeros(C), torch.ones(C)

            def tf() -> None:
                xx = tx.detach().requires_grad_(True)
                torch.nn.functional.batch_norm(xx, trm, trv, tw, tb, training=True).backward(tdy)  # type: ignore[no-untyped-call, unused-ignore]

            impls["torch"] = tf
        return impls

    return Case(f"batchnorm/{label}", "batchnorm", int(np.prod(shape)), 36, setup)


def _dropout_case(n: int) -> Case:
    # forward: read x, write y and the mask (1 bit); backward: read dy and the mask, write dx.
    def setup() -> Impls:
        x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
        y, dx = np.empty_like(x), np.empty_like(x)
        a, ma = F.dropout(x, 0.5, seed=1)
        b, mb = R.dropout(x, 0.5, seed=1)
        assert ma is not None and mb is not None  # return_mask=True (the default)
        if a.tobytes() != b.tobytes() or ma.tobytes() != mb.tobytes():
            raise AssertionError("dropout: deepoptim's mask differs from its twin's")
        state = {"offset": 0}

        def ours() -> None:
            _, mask = F.dropout(x, 0.5, seed=1, offset=state["offset"], out=y)
            F.dropout_backward(y, mask, 0.5, out=dx)
            state["offset"] += n

        def numpy_plain() -> np.ndarray:  # what a NumPy user writes: a float keep-mask from np.random
            keep = np.random.default_rng(state["offset"]).random(n, dtype=np.float32) >= 0.5
            yy = x * keep * np.float32(2.0)
            return yy * keep * np.float32(2.0)

        impls: Impls = {
            "deepoptim": ours,
            "probe": lambda: (_core.probe([x], [], [y]), _core.probe([y], [], [dx])),
            "numpy": numpy_plain,
        }
        if torch is not None:
            tx = torch.from_numpy(x)

            def tf() -> None:
                xx = tx.detach().requires_grad_(True)
                yy = torch.nn.functional.dropout(xx, 0.5, training=True)
                yy.backward(yy.detach())  # type: ignore[no-untyped-call, unused-ignore]

            impls["torch"] = tf
        return impls

    return Case(f"dropout/{_fmt_size(n)}", "dropout", n, 16.25, setup)


def suite(quick: bool = False) -> List[Case]:
    """The cases, in run order. ``quick``: a few small sizes, for a smoke run."""
    if quick:
        return [
            _optim_case("adam", 1, 100_000, True),
            _optim_case("adam", 20, 5_000, True),
            _optim_case("sgd", 1, 100_000, True),
            _overhead_case(),
            _lowp_case("bf16-params-bf16-state", 100_000),
            _bn_case((8, 16, 8, 8), 1, "NCHW(8,16,8,8)"),
            _dropout_case(100_000),
            _muon_case("muon/(256,384)+(384,256)", [(256, 384), (384, 256)]),
            _adafactor_case("adafactor/(256,384)+(384,)", [(256, 384), (384,)]),
            _lbfgs_case(100_000),
        ]
    cases = [_optim_case("adam", 1, n, True) for n in (1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000)]
    cases.append(_optim_case("adam", 1000, 10_000, True))
    for name in [c.kernel for c in _optimizers() if c.kernel != "adam"]:
        cases += [_optim_case(name, 1, n, True) for n in (1_000_000, 10_000_000)]
    cases.append(_optim_case("sgd", 1000, 10_000, True))
    cases.append(_overhead_case())
    cases += [_lowp_case(mode, n) for mode in _LOWP_MODES for n in (10_000_000, 100_000_000)]
    cases += [_muon_case("muon/10M", [(2500, 4000)]),
              _muon_case("muon/gpt2-small-block", gpt2_small_block_matrices())]
    cases += [_adafactor_case("adafactor/10M", [(2500, 4000)]), _adafactor_case("adafactor/gpt2-small", gpt2_small_shapes()),
              _lbfgs_case(10_000_000)]
    if torch is not None:
        cases += [_torch_overhead_case(), _torch_model_case("torch-adamw/resnet50", resnet50_shapes()),
                  _torch_model_case("torch-adamw/gpt2-small", gpt2_small_shapes())]
        cases += [_torch_lowp_model_case("torch-lowp-adamw/gpt2-small", gpt2_small_shapes(), mode)
                  for mode in ("bf16-params-bf16-state", "bf16-params-master", "f32-params-int8-state",
                               "f32-params-bf16-state")]
        cases.append(_int8_peer_case(10_000_000))
    cases += [
        _bn_case((32, 64, 56, 56), 1, "NCHW(32,64,56,56)"),
        _bn_case((32, 56, 56, 64), -1, "NHWC(32,56,56,64)"),
        _bn_case((256, 1024), 1, "NC(256,1024)"),
        _dropout_case(10_000_000),
    ]
    return cases


# ---------------------------------------------------------------------------- timing
def _time_case(impls: Impls, repeats: int, min_sample_s: float) -> Dict[str, Dict[str, Any]]:
    # Calibrate: enough calls per sample that a sample lasts min_sample_s (small sizes).
    numbers: Dict[str, int] = {}
    for k, f in impls.items():
        f()  # warm-up
        t0 = time.perf_counter()
        f()
        once = max(time.perf_counter() - t0, 1e-7)
        numbers[k] = max(1, min(10_000, int(min_sample_s / once)))
    samples: Dict[str, List[float]] = {k: [] for k in impls}
    for _ in range(repeats):
        for k, f in impls.items():
            n = numbers[k]
            t0 = time.perf_counter()
            for _ in range(n):
                f()
            samples[k].append((time.perf_counter() - t0) / n)
    return {k: {"median_s": statistics.median(v), "min_s": min(v), "number": numbers[k], "samples": len(v)}
            for k, v in samples.items()}


class _Progress(Protocol):
    def set_description(self, d: str) -> object: ...
    def update(self, k: int) -> object: ...
    def close(self) -> object: ...


def _progress(total: int, enabled: bool) -> Optional[_Progress]:
    if not enabled:
        return None
    try:
        from tqdm import tqdm  # type: ignore[import-untyped, unused-ignore]  # stubs: types-tqdm, optional

        bar: _Progress = tqdm(total=total, unit="case", file=sys.stderr, leave=False)
        return bar
    except ImportError:
        class _Text:
            def __init__(self) -> None:
                self.n = 0

            def set_description(self, d: str) -> None:
                self.d = d

            def update(self, k: int) -> None:
                self.n += k
                print(f"\r[{self.n}/{total}] {getattr(self, 'd', '')}", end="", file=sys.stderr, flush=True)

            def close(self) -> None:
                print(file=sys.stderr)

        return _Text()


def machine() -> Dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.*)", f.read())
            cpu = m.group(1).strip() if m else cpu
    except OSError:
        pass
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": getattr(torch, "__version__", None),
        "deepoptim": dict(deepoptim.build_info()),
        "platform": platform.platform(),
    }


def run(cases: List[Case], repeats: int = 11, min_sample_s: float = 2e-3, progress: bool = True) -> List[Row]:
    """Checks and times every case; one row per (case, implementation)."""
    rows: List[Row] = []
    bar = _progress(len(cases), progress)
    for case in cases:
        if bar is not None:
            bar.set_description(case.name)
        impls = case.setup()
        res = _time_case(impls, repeats, min_sample_s)
        probe = res.get("probe", {}).get("median_s")
        torch_ref = next((res[k]["median_s"] for k in ("torch fused", "torch") if k in res), None)
        for impl, r in res.items():
            med = r["median_s"]
            rows.append({
                "case": case.name, "kernel": case.kernel, "size": case.size, "impl": impl,
                "bytes_per_elem": case.bytes_per_elem, "median_s": med, "min_s": r["min_s"],
                "gbps": case.bytes_per_elem * case.size / med / 1e9,
                "of_probe": probe / med if probe else None,
                "x_torch": torch_ref / med if torch_ref else None,
                "calls_per_sample": r["number"], "samples": r["samples"],
            })
        del impls
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return rows


def table(rows: List[Row]) -> str:
    """A readable table: one block per case."""
    out = []
    for case in dict.fromkeys(r["case"] for r in rows):
        rs = [r for r in rows if r["case"] == case]
        out.append(f"\n{case}  ({rs[0]['size']:,} elements, {rs[0]['bytes_per_elem']:g} B/elem)")
        out.append(f"  {'impl':<15}{'median':>11}{'min':>11}{'GB/s':>8}{'of probe':>10}{'x torch':>9}")
        for r in rs:
            med, mn = r["median_s"], r["min_s"]
            unit, k = ("us", 1e6) if med < 1e-3 else ("ms", 1e3)
            op = f"{r['of_probe']:.0%}" if r["of_probe"] else "-"
            xt = f"{r['x_torch']:.2f}" if r["x_torch"] else "-"
            out.append(f"  {r['impl']:<15}{med * k:>8.2f} {unit}{mn * k:>8.2f} {unit}{r['gbps']:>8.1f}{op:>10}{xt:>9}")
    return "\n".join(out)


def plot(rows: List[Row], path: str, machine_info: Optional[Dict[str, Any]] = None) -> None:
    """Two panels, one above the other (so the chart reads at a page column's width): GB/s
    by size for the kernel measured at the most sizes (Adam in the full suite), one line per
    implementation; and GB/s of deepoptim, the probe, the best torch and NumPy for every case
    at its largest size.

    ``machine_info`` is a ``machine()`` record (as ``--json`` stores it) for the title; by
    default this process's build. ``python -m deepoptim.bench --replot results.json --plot
    results.png`` redraws a stored run."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit('--plot needs matplotlib: pip install "deepoptim[demo]" (or pip install matplotlib)')
    single = [r for r in rows if "x" not in r["case"].split("/")[1] and r["kernel"] != "overhead"]
    sizes_of = {k: {r["size"] for r in single if r["kernel"] == k} for k in dict.fromkeys(r["kernel"] for r in single)}
    main_kernel = max(sizes_of, key=lambda k: len(sizes_of[k])) if sizes_of else None
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 10), gridspec_kw={"height_ratios": [1, 1.15]})
    if main_kernel:
        rs = [r for r in single if r["kernel"] == main_kernel]
        for impl in dict.fromkeys(r["impl"] for r in rs):
            pts = sorted((r["size"], r["gbps"]) for r in rs if r["impl"] == impl)
            ax1.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=impl,
                     linewidth=2.5 if impl == "deepoptim" else 1.2, linestyle="--" if impl == "probe" else "-")
        ax1.set_xscale("log")
        ax1.set_xlabel("elements (one float32 tensor)")
        ax1.set_ylabel("GB/s (bytes moved / time)")
        ax1.set_title(f"{main_kernel}: bandwidth by size")
        ax1.grid(True, alpha=0.3)
        ax1.legend(fontsize=8)
    # Every case at its largest size (and the many-tensor cases), grouped bars.
    cases: List[str] = []
    for case in dict.fromkeys(r["case"] for r in rows):
        k = next(r["kernel"] for r in rows if r["case"] == case)
        if k == "overhead":
            continue
        biggest = max(r["size"] for r in rows if r["kernel"] == k and "x" not in r["case"].split("/")[1]) \
            if any("x" not in r["case"].split("/")[1] for r in rows if r["kernel"] == k) else None
        size = next(r["size"] for r in rows if r["case"] == case)
        if k == "batchnorm" or "x" in case.split("/")[1] or size == biggest:
            cases.append(case)
    groups = ("deepoptim", "probe", "torch (best)", "numpy")
    width = 0.2
    for gi, grp in enumerate(groups):
        vals: List[float] = []
        for case in cases:
            by_impl = {r["impl"]: r for r in rows if r["case"] == case}
            if grp == "torch (best)":
                ts = [r["gbps"] for i, r in by_impl.items() if i.startswith("torch")]
                vals.append(max(ts) if ts else 0.0)
            else:
                vals.append(by_impl[grp]["gbps"] if grp in by_impl else 0.0)
        ax2.bar(np.arange(len(cases)) + (gi - 1.5) * width, vals, width, label=grp)
    ax2.set_xticks(np.arange(len(cases)))
    ax2.set_xticklabels(cases, rotation=35, ha="right", fontsize=8)
    ax2.set_ylabel("GB/s (bytes moved / time)")
    ax2.set_title("every case (largest size): deepoptim vs the probe and its peers")
    ax2.grid(True, axis="y", alpha=0.3)
    ax2.legend(fontsize=8)
    info = (machine_info or {}).get("deepoptim") or deepoptim.build_info()
    fig.suptitle(f"deepoptim {info['version']} ({info['isa']}, {info['max_threads']} threads)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="deepoptim bench", description="Benchmark deepoptim's kernels against "
                                 "NumPy, torch and an in-place bandwidth probe (ratios taken in the same run).")
    ap.add_argument("--quick", action="store_true", help="small sizes, few repeats: a smoke run of a few seconds")
    ap.add_argument("--filter", default=None, help="only cases whose name matches this regular expression")
    ap.add_argument("--threads", type=int, default=None, help="threads for deepoptim and torch")
    ap.add_argument("--repeats", type=int, default=None, help="timed rounds per case (default 11, quick 3)")
    ap.add_argument("--json", default=None, metavar="PATH", help="write the results and machine description here")
    ap.add_argument("--plot", default=None, metavar="PATH", help="write a PNG chart of GB/s by size here")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    ap.add_argument("--replot", default=None, metavar="JSON",
                    help="measure nothing: print the table of a run stored with --json (and chart it with --plot)")
    a = ap.parse_args(argv)
    if a.replot:
        try:
            with open(a.replot) as f:
                stored = json.load(f)
            stored_rows: List[Row] = stored["results"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            ap.error(f"--replot: {a.replot} is not a results file written by --json: {e}")
        print(table(stored_rows))
        if a.plot:
            plot(stored_rows, a.plot, stored.get("machine"))
            print(f"chart: {a.plot}")
        return 0
    if a.threads is not None:
        if a.threads < 1:
            ap.error("--threads must be >= 1")
        _core.set_num_threads(a.threads)
        if torch is not None:
            torch.set_num_threads(a.threads)
    cases = suite(a.quick)
    if a.filter:
        try:
            rx = re.compile(a.filter)
        except re.error as e:
            ap.error(f"--filter is not a valid regular expression: {e}")
        cases = [c for c in cases if rx.search(c.name)]
        if not cases:
            ap.error(f"--filter {a.filter!r} matches no case")
    for path in (a.json, a.plot):
        if path and not os.access(os.path.dirname(os.path.abspath(path)) or ".", os.W_OK):
            ap.error(f"cannot write {path}")
    repeats = a.repeats or (3 if a.quick else 11)
    rows = run(cases, repeats=repeats, min_sample_s=5e-4 if a.quick else 2e-3, progress=not a.no_progress)
    print(table(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": machine(), "config": {"quick": a.quick, "repeats": repeats, "threads": a.threads,
                       "filter": a.filter}, "results": rows}, f, indent=1)
        print(f"\nresults: {a.json}")
    if a.plot:
        plot(rows, a.plot)
        print(f"chart: {a.plot}")
    return 0


__all__ = ["Case", "suite", "run", "table", "plot", "machine", "main"]
