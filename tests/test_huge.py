"""Sizes past 2**31 and 2**32 elements: every size, index, block partition and per-block
partial in the kernels is 64-bit. Opt-in (``DEEPOPTIM_HUGE=1 python -m pytest -m huge``):
the arrays take up to 17 GiB of address space and 10.3 GiB of memory (peak RSS
measured: 10.8 GB; 16 s on 2 cores).

Gradients and inputs are ``np.zeros`` with a few elements set: untouched pages all map
the kernel's zero page, so a 16 GiB operand costs only the pages that were written, and
the values placed just below and above 2**31 and 2**32 show whether an index wrapped."""

from __future__ import annotations

import numpy as np
import pytest

from deepoptim import functional as F, reference

pytestmark = pytest.mark.huge

N31 = 2**31 + 5
N32 = 2**32 + 17
# Indices a 32-bit int or unsigned would wrap or truncate: around 2**31 and 2**32, and
# the first and last elements of the blocks there.
PROBES_31 = [0, 1, 4095, 4096, 2**31 - 4097, 2**31 - 1, 2**31, 2**31 + 1, N31 - 1]
PROBES_32 = PROBES_31[:-1] + [2**32 - 1, 2**32, 2**32 + 1, N32 - 1]


def _chunks(n: int, size: int = 1 << 27):
    for lo in range(0, n, size):
        yield slice(lo, min(lo + size, n))


def test_sgd_with_weight_decay_past_2_31_elements():
    lr, wd = np.float32(0.5), np.float32(0.25)
    p = np.ones(N31, np.float32)
    g = np.zeros(N31, np.float32)
    values = np.arange(1, len(PROBES_31) + 1, dtype=np.float32) * np.float32(8)
    g[PROBES_31] = values
    F.sgd(p, g, None, lr=float(lr), weight_decay=float(wd))
    # The twin on just those elements (SGD is elementwise): same bits.
    want = np.ones(len(PROBES_31), np.float32)
    reference.sgd(want, values.copy(), None, lr=float(lr), weight_decay=float(wd))
    np.testing.assert_array_equal(p[PROBES_31], want)
    # Every other element saw a zero gradient: p = 1 - lr * wd * 1.
    rest = np.ones(1, np.float32)
    reference.sgd(rest, np.zeros(1, np.float32), None, lr=float(lr), weight_decay=float(wd))
    probes = np.zeros(N31, bool)
    probes[PROBES_31] = True
    for s in _chunks(N31):
        ok = (p[s] == rest[0]) | probes[s]
        assert ok.all(), f"element {s.start + int(np.flatnonzero(~ok)[0])} was not stepped"


def test_norms_and_all_finite_past_2_32_elements():
    x = np.zeros(N32, np.float32)
    values = np.arange(1, len(PROBES_32) + 1, dtype=np.float32)
    x[PROBES_32] = values
    for order in (1.0, 2.0, float("inf")):
        got = F.norms([x], order)
        want = reference.norms([values], order)
        np.testing.assert_array_equal(got, want, err_msg=f"norm {order}")
    assert F.all_finite([x])
    x[N32 - 1] = np.nan  # the very last element, past 2**32
    assert not F.all_finite([x])


def test_dropout_mask_past_2_31_elements():
    p, seed = 0.25, 12345
    x = np.zeros(N31, np.float32)
    tail = 1 << 16
    x[-tail:] = 1.0
    y, mask = F.dropout(x, p, seed=seed)
    assert mask.shape == ((N31 + 7) // 8,)
    # Masks do not depend on how a stream is split into calls: the last 2**16 elements
    # on their own, at their offset, must give the same bits and the same outputs.
    y_tail, mask_tail = reference.dropout(np.ones(tail, np.float32), p, seed=seed, offset=N31 - tail)
    np.testing.assert_array_equal(y[-tail:], y_tail)
    bits = np.unpackbits(mask, bitorder="little")[:N31]
    np.testing.assert_array_equal(bits[-tail:], np.unpackbits(mask_tail, bitorder="little")[:tail])
    assert not y[: N31 - tail].any()
    # Keep rate over the whole stream: within 6 sigma of 1 - p.
    kept = int(bits.sum(dtype=np.int64))
    sigma = (N31 * p * (1 - p)) ** 0.5
    assert abs(kept - N31 * (1 - p)) < 6 * sigma
