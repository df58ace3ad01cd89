"""Optimizer step timings: deepoptim's kernels beside the NumPy twin and torch's CPU
implementations (when installed), interleaved so that machine drift hits all alike.

    python bench/bench_optim.py [--size 10000000] [--tensors 1] [--repeat 15] [--kernels adam,sgd]

Checks the kernel against its twin first, then reports the median and min of the
repeats, bytes moved per element, GB/s, and every time as a ratio to torch fused (or
to the kernel when torch is absent). The full harness (probe, sizes, JSON, plots) is
deepoptim.bench, issue 5.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from deepoptim import functional as F
from deepoptim import reference as R

try:
    import torch
except ImportError:  # the comparisons are optional
    torch = None

# name: (bytes moved per float32 element: reads + writes, states, deepoptim kwargs, torch class, torch kwargs)
KERNELS = {
    "adam": (28, 2, dict(lr=1e-3), "Adam", dict(lr=1e-3)),
    "adamw": (28, 2, dict(lr=1e-3), "AdamW", dict(lr=1e-3)),
    "sgd": (20, 1, dict(lr=1e-3, momentum=0.9), "SGD", dict(lr=1e-3, momentum=0.9)),
    "adagrad": (20, 1, dict(lr=1e-2), "Adagrad", dict(lr=1e-2)),
    "rmsprop": (20, 1, dict(lr=1e-2), "RMSprop", dict(lr=1e-2)),
}


def _call(module, name, params, grads, states, kw, step):
    fn = getattr(module, name)
    if name in ("adam", "adamw", "adagrad"):
        fn(params, grads, *states, step=step, **kw)
    else:
        fn(params, grads, *states, **kw)


def bench(name, size, ntensors, repeat, with_numpy):
    nbytes, nstates, kw, tname, tkw = KERNELS[name]
    rng = np.random.default_rng(0)
    n = size // ntensors
    params = [rng.standard_normal(n).astype(np.float32) for _ in range(ntensors)]
    grads = [rng.standard_normal(n).astype(np.float32) for _ in range(ntensors)]
    states = [[np.zeros(n, np.float32) for _ in range(ntensors)] for _ in range(nstates)]

    # Check before timing: one step of the kernel equals one step of the twin.
    pc, sc = [p.copy() for p in params], [[s.copy() for s in col] for col in states]
    _call(F, name, params, grads, states, kw, 1)
    _call(R, name, pc, grads, sc, kw, 1)
    for a, b in zip(params, pc):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)

    impls = {"deepoptim": lambda s: _call(F, name, params, grads, states, kw, s)}
    if with_numpy:
        impls["numpy twin"] = lambda s: _call(R, name, params, grads, states, kw, s)
    if torch is not None:
        tp = [torch.from_numpy(p.copy()) for p in params]
        for p, g in zip(tp, grads):
            p.grad = torch.from_numpy(g)
        variants = {"fused": dict(fused=True), "foreach": dict(foreach=True), "loop": dict(foreach=False)}
        if tname == "RMSprop":
            del variants["fused"]  # torch has no fused RMSprop
        for vname, extra in variants.items():
            opt = getattr(torch.optim, tname)(tp, **tkw, **extra)
            impls[f"torch {vname}"] = (lambda o: (lambda s: o.step()))(opt)

    times = {k: [] for k in impls}
    step = 2
    for _ in range(2):  # warm-up
        for f in impls.values():
            f(step)
    for _ in range(repeat):
        for k, f in impls.items():
            t0 = time.perf_counter()
            f(step)
            times[k].append(time.perf_counter() - t0)
        step += 1

    ref = "torch fused" if "torch fused" in times else "deepoptim"
    ref_med = statistics.median(times[ref])
    print(f"\n{name}: {ntensors} tensor(s) x {n:,} float32, {nbytes} B/elem, median of {repeat}")
    print(f"{'impl':<14}{'median ms':>11}{'min ms':>9}{'GB/s':>8}{'vs ' + ref:>18}")
    for k, ts in times.items():
        med = statistics.median(ts)
        gbs = nbytes * size / med / 1e9
        print(f"{k:<14}{med * 1e3:>11.3f}{min(ts) * 1e3:>9.3f}{gbs:>8.1f}{ref_med / med:>17.2f}x")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=10_000_000)
    ap.add_argument("--tensors", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--kernels", default="adam,adamw,sgd,adagrad,rmsprop")
    ap.add_argument("--no-numpy", action="store_true", help="skip the (slow) NumPy twin")
    a = ap.parse_args()
    for name in a.kernels.split(","):
        bench(name, a.size, a.tensors, a.repeat, not a.no_numpy)


if __name__ == "__main__":
    main()
