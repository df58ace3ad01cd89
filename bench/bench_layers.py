"""Batch norm and dropout, training forward + backward: deepoptim beside the NumPy twin
and torch (autograd), interleaved, median of repeats, ratios taken in the same run.

    python bench/bench_layers.py [--repeat 11] [--no-numpy]

The full harness (probe, sizes, JSON, plots) is deepoptim.bench, issue 5.
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
except ImportError:
    torch = None


def bn_case(shape, ax):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    C = shape[ax]
    w, b = np.ones(C, np.float32), np.zeros(C, np.float32)
    rm, rv = np.zeros(C, np.float32), np.ones(C, np.float32)

    def run(impl):
        def f():
            y, cache = impl.batch_norm(x, rm, rv, w, b, channel_axis=ax)
            return impl.batch_norm_backward(dy, cache)
        return f

    impls = {"deepoptim": run(F), "numpy twin": run(R)}
    if torch is not None:
        tx = torch.from_numpy(x)
        tdy = torch.from_numpy(dy)
        if ax == -1:  # channels-last memory, NCHW logical shape, as torch users write it
            tx = tx.permute(0, 3, 1, 2)
            tdy = tdy.permute(0, 3, 1, 2)
        tw, tb = torch.ones(C, requires_grad=True), torch.zeros(C, requires_grad=True)
        trm, trv = torch.zeros(C), torch.ones(C)

        def tf():
            xx = tx.detach().requires_grad_(True)
            y = torch.nn.functional.batch_norm(xx, trm, trv, tw, tb, training=True)
            y.backward(tdy)
        impls["torch"] = tf
    return impls


def dropout_case(n, p=0.5):
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)

    def run(impl):
        def f():
            y, mask = impl.dropout(x, p, seed=1)
            return impl.dropout_backward(y, mask, p)
        return f

    def numpy_plain():  # what a NumPy user writes: np.random mask, float mask kept
        keep = np.random.default_rng(1).random(n, dtype=np.float32) >= p
        y = x * keep / (1 - p)
        return y * keep / (1 - p)

    impls = {"deepoptim": run(F), "numpy twin": run(R), "numpy (np.random)": numpy_plain}
    if torch is not None:
        tx = torch.from_numpy(x)

        def tf():
            xx = tx.detach().requires_grad_(True)
            y = torch.nn.functional.dropout(xx, p, training=True)
            y.backward(y.detach())
        impls["torch"] = tf
    return impls


def time_all(title, impls, repeat):
    times = {k: [] for k in impls}
    for f in impls.values():
        f()
    for _ in range(repeat):
        for k, f in impls.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    ref = "torch" if "torch" in times else "deepoptim"
    ref_med = statistics.median(times[ref])
    print(f"\n{title}: median of {repeat}")
    print(f"{'impl':<20}{'median ms':>11}{'min ms':>9}{'vs ' + ref:>14}")
    for k, ts in times.items():
        print(f"{k:<20}{statistics.median(ts) * 1e3:>11.2f}{min(ts) * 1e3:>9.2f}{ref_med / statistics.median(ts):>13.2f}x")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=11)
    ap.add_argument("--no-numpy", action="store_true")
    a = ap.parse_args()
    cases = [
        ("BatchNorm train fwd+bwd (32,64,56,56) NCHW", bn_case((32, 64, 56, 56), 1)),
        ("BatchNorm train fwd+bwd (32,56,56,64) channels-last", bn_case((32, 56, 56, 64), -1)),
        ("BatchNorm train fwd+bwd (256,1024)", bn_case((256, 1024), 1)),
        ("Dropout p=0.5 fwd+bwd 10M", dropout_case(10_000_000)),
    ]
    for title, impls in cases:
        if a.no_numpy:
            impls = {k: v for k, v in impls.items() if not k.startswith("numpy")}
        time_all(title, impls, a.repeat)


if __name__ == "__main__":
    main()
