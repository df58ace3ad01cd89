"""The list form is the loop of single calls, bit for bit; results do not depend on the
thread count."""

from __future__ import annotations

import numpy as np
import pytest

from kernels import AWKWARD_SIZES, KERNELS, NAMES
from threads import run_json

SIZES = AWKWARD_SIZES + [50_000, 123_457]  # enough elements for the kernels to go parallel


def _rows(kernel, hp, dtype, seed):
    rng = np.random.default_rng(seed)
    rows = []
    for n in SIZES:
        p = rng.standard_normal(n).astype(dtype)
        rows.append([p] + kernel.make_state(p, hp))
    return rows


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_list_form_equals_loop_bitwise(name, dtype):
    kernel = KERNELS[name]
    hp = dict(kernel.defaults)
    looped = _rows(kernel, hp, dtype, 0)
    listed = [[a.copy() if a is not None else None for a in row] for row in looped]
    rng = np.random.default_rng(1)
    for step in range(1, 6):
        grads = [rng.standard_normal(row[0].shape).astype(dtype) for row in looped]
        for row, g in zip(looped, grads):
            kernel.call(kernel.fast, row[0], g, row[1:], hp, step)
        cols = [[row[k] for row in listed] if listed[0][k] is not None else None for k in range(len(listed[0]))]
        kernel.call(kernel.fast, cols[0], grads, cols[1:], hp, step)
    for a_row, b_row in zip(looped, listed):
        for a, b in zip(a_row, b_row):
            if a is not None:
                assert a.tobytes() == b.tobytes()


_SCRIPT = r"""
import hashlib, json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import deepoptim
from test_optim_list_and_threads import _rows
from kernels import KERNELS
out = {"threads": deepoptim.build_info()["max_threads"]}
for name, kernel in sorted(KERNELS.items()):
    for dtype in (np.float32, np.float64):
        hp = dict(kernel.defaults)
        rows = _rows(kernel, hp, dtype, 3)
        rng = np.random.default_rng(4)
        for step in range(1, 8):
            grads = [rng.standard_normal(r[0].shape).astype(dtype) for r in rows]
            cols = [[r[k] for r in rows] if rows[0][k] is not None else None for k in range(len(rows[0]))]
            kernel.call(kernel.fast, cols[0], grads, cols[1:], hp, step)
        h = hashlib.sha256()
        for r in rows:
            for a in r:
                if a is not None:
                    h.update(a.tobytes())
        out[f"{name}-{np.dtype(dtype).name}"] = h.hexdigest()
print(json.dumps(out))
"""


def test_bitwise_identical_with_1_and_2_threads():
    one, two = run_json(_SCRIPT, 1), run_json(_SCRIPT, 2)
    assert one.pop("threads") == 1
    assert two.pop("threads") == 2
    assert len(one) == 2 * len(NAMES)
    assert one == two
