"""Searching sorted arrays: searchsorted and digitize.
"""

from __future__ import annotations

import math

import numpy as np

from .. import lax
from ._core import asarray, result_type
from ._indexing import INDEX, _concrete, _is_concrete
from ._take import take

__all__ = ["searchsorted", "digitize"]


# ---------------------------------------------------------------------------------------------
# searchsorted, digitize

def _sort_lt(x, y, inclusive):
    """x < y (or x <= y) in NumPy's sort order, where NaN is larger than every number."""
    base = lax.le(x, y) if inclusive else lax.lt(x, y)
    if x.dtype.kind not in "fc":
        return base
    y_nan = lax.ne(y, y)
    x_nan = lax.ne(x, x)
    if inclusive:
        return lax.bitwise_or(base, y_nan)
    return lax.bitwise_or(base, lax.bitwise_and(y_nan, lax.bitwise_not(x_nan)))


def searchsorted(a, v, side="left", sorter=None, *, method=None):
    """Insertion points of v in the sorted 1-D a (NumPy's searchsorted): a binary search of
    ceil(log2(n + 1)) unrolled gather-and-compare steps, so it traces to a fixed program."""
    from ..lax.indexing import gather
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    a = asarray(a)
    if a.ndim != 1:
        raise ValueError("searchsorted: a must be 1-dimensional")
    if sorter is not None:
        a = take(a, sorter)
    a, v = _promote_pair(a, v)
    n = a.shape[0]
    lo = lax.full(v.shape, 0, INDEX)
    hi = lax.full(v.shape, n, INDEX)
    if n == 0:
        return lo
    steps = math.ceil(math.log2(n + 1))
    for _ in range(steps):
        mid = lax.div(lax.add(lo, hi), np.array(2, INDEX))
        safe = lax.min(mid, np.array(n - 1, INDEX))
        am = gather(a, lax.expand_dims(safe, (safe.ndim,)))
        go_right = lax.bitwise_and(_sort_lt(am, v, side == "right"),
                                   lax.lt(mid, np.array(n, INDEX)))
        lo = lax.select_n(go_right, lo, lax.add(mid, np.ones((), INDEX)))
        hi = lax.select_n(go_right, mid, hi)
    return lo


def _promote_pair(a, v):
    dtype = result_type(a, v)
    a = asarray(a, dtype)
    v = asarray(v, dtype)
    return a, v


def digitize(x, bins, right=False):
    """Indices of the bins each x falls in (NumPy's digitize; monotonic bins)."""
    bins = asarray(bins)
    if bins.ndim != 1:
        raise ValueError("digitize: bins must be 1-dimensional")
    side = "left" if right else "right"
    if bins.shape[0] >= 2 and _is_concrete(bins):
        b = _concrete(bins, "digitize's bins")
        inc, dec = np.all(np.diff(b) >= 0), np.all(np.diff(b) <= 0)
        if not (inc or dec):
            raise ValueError("bins must be monotonically increasing or decreasing")
        if dec and not inc:
            n = bins.shape[0]
            return lax.sub(np.array(n, INDEX),
                           searchsorted(lax.rev(bins, (0,)), x, side=side))
    return searchsorted(bins, x, side=side)
