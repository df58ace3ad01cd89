"""Python threads calling kernels at once (each releases the GIL) on different arrays give
the same bits as the same calls made one after another."""

from __future__ import annotations

import threading

import numpy as np

from deepoptim import functional as F


def _work(seed: int):
    rng = np.random.default_rng(seed)
    n = 300_000
    p, g = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    x = rng.standard_normal((64, 16, 32)).astype(np.float32)
    rm, rv = np.zeros(16, np.float32), np.ones(16, np.float32)

    def run():
        for step in range(1, 6):
            F.adam(p, g, m, v, step=step, lr=1e-2)
            F.clip_grad_norm([g.copy()], max_norm=1.0)
        y, _ = F.batch_norm(x, rm, rv, None, None, training=True)
        d, mask = F.dropout(x, 0.3, seed=seed)
        return [p, m, v, rm, rv, y, d, mask]

    return run


def test_threads_on_different_arrays_equal_serial_calls():
    serial = [_work(s)() for s in range(4)]
    runs = [_work(s) for s in range(4)]
    results = [None] * 4

    def target(i):
        results[i] = runs[i]()

    threads = [threading.Thread(target=target, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for a, b in zip(serial, results):
        assert b is not None
        assert all(x.tobytes() == y.tobytes() for x, y in zip(a, b))
