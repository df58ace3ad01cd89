"""The summation order of ``cpp/include/deepoptim/parallel.hpp``, specified in NumPy.

A tensor is cut into blocks of ``BLOCK`` elements. Inside a block, element ``i`` is added
to lane ``i % LANES`` in element order, and the lanes are combined as
``((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))``. A tensor's sum adds its block
partials in block order, starting from 0. The order depends only on the size, never on
the thread count or the SIMD width, so the kernels' reductions have the same bits on
every machine, and these twins reproduce them exactly.
"""

from __future__ import annotations

import numpy as np

BLOCK = 4096
LANES = 8


def blocked_sum(terms: np.ndarray) -> float:
    """The sum of the float64 ``terms`` (one per element of a tensor) in the kernels' order.

    Example:
      >>> blocked_sum(np.arange(10, dtype=np.float64))
      45.0
    """
    terms = np.ascontiguousarray(terms, dtype=np.float64).reshape(-1)
    n = terms.size
    nblocks = -(-n // BLOCK)
    padded = np.zeros(nblocks * BLOCK, np.float64)  # + 0.0 leaves every partial unchanged
    padded[:n] = terms
    # rows of LANES per block, added in order (numpy reduces a leading axis row by row)
    lanes = np.add.reduce(padded.reshape(nblocks, BLOCK // LANES, LANES), axis=1)
    partials = ((lanes[:, 0] + lanes[:, 1]) + (lanes[:, 2] + lanes[:, 3])) + (
        (lanes[:, 4] + lanes[:, 5]) + (lanes[:, 6] + lanes[:, 7]))
    total = 0.0
    for x in partials:
        total += float(x)
    return total
