"""Counting values into bins: bincount, histogram and histogram_bin_edges. bincount's output
length depends on the data: under jit/vmap it takes a static `length=`, as in JAX.
"""

from __future__ import annotations

import builtins
import operator

import numpy as np

from .. import lax
from ..core import Tracer, to_host
from ._arithmetic import add, subtract, true_divide
from ._arithmetic import clip as _clip
from ._core import asarray, broadcast_to, convert, promote2, result_type
from ._creation import linspace
from ._indexing import INDEX, is_concrete
from ._logic import equal, where
from ._nonzero import needs_size
from ._reductions import diff
from ._reductions import sum as _sum
from ._shape import ravel
from ._sorting import searchsorted

__all__ = ["bincount", "histogram", "histogram_bin_edges"]


# ---------------------------------------------------------------------------------------------
# bincount

def bincount(x, weights=None, minlength=0, *, length=None):
    """Counts (or summed weights, float64) of each non-negative integer in the 1-D x; under
    jit/vmap pass a static `length` (values outside [0, length) are dropped)."""
    x = asarray(x)
    if x.ndim != 1:
        raise ValueError(f"bincount: x must be 1-dimensional, got shape {tuple(x.shape)}")
    if x.dtype.kind not in "iub":
        raise TypeError(f"Cannot cast array data from {x.dtype} to int64 according to the rule "
                        "'safe'")
    minlength = operator.index(minlength)
    if minlength < 0:
        raise ValueError("'minlength' must not be negative")
    if length is None:
        v = needs_size("bincount", x)
        if v.size and v.min() < 0:
            raise ValueError("'list' argument must have no negative elements")
        length = builtins.max(minlength, int(v.max()) + 1 if v.size else 0)
    length = operator.index(length)
    if weights is None:
        w = lax.full(x.shape, 1, INDEX)
    else:
        w = convert(broadcast_to(asarray(weights), x.shape), np.dtype(np.float64))
    idx = lax.max(convert(x, INDEX), np.zeros((), INDEX))
    return lax.scatter_add(lax.full((length,), 0, w.dtype), lax.expand_dims(idx, (1,)), w)


# ---------------------------------------------------------------------------------------------
# Histograms

def _range_check(first, last, what):
    if is_concrete(first) and is_concrete(last):
        f, la = float(to_host(first)), float(to_host(last))
        if not (np.isfinite(f) and np.isfinite(la)):
            raise ValueError(f"{what} of [{f}, {la}] is not finite")
        if f > la:
            raise ValueError("max must be larger than min in range parameter.")


def _bin_edges(a, bins, range):  # noqa: A002
    a = ravel(asarray(a))
    if isinstance(bins, str):
        raise NotImplementedError(f"histogram: bins={bins!r} (an estimator name) is not "
                                  "supported; pass a number of bins or the edges.")
    if np.ndim(bins) == 0 and type(bins) is not Tracer:
        nb = operator.index(bins)
        if nb < 1:
            raise ValueError("`bins` must be positive, when an integer")
        if range is None:
            if a.shape[0] == 0:
                first, last = 0.0, 1.0
            else:
                from ._reductions import max as _max
                from ._reductions import min as _min
                first, last = _min(a), _max(a)
            _range_check(first, last, "autodetected range")
        else:
            first, last = range
            _range_check(first, last, "supplied range")
        dt = result_type(first, last, a)
        if dt.kind in "iub":
            dt = np.result_type(dt, float)
        first, last = asarray(first), asarray(last)
        same = equal(first, last)
        first = where(same, subtract(first, 0.5), first)
        last = where(same, add(last, 0.5), last)
        if not (type(first) is Tracer or type(last) is Tracer):
            first, last = first[()], last[()]
        return a, asarray(linspace(first, last, nb + 1, dtype=dt))
    edges = asarray(bins)
    if edges.ndim != 1:
        raise ValueError("`bins` must be 1d, when an array")
    if is_concrete(edges) and np.any(np.diff(to_host(edges)) < 0):
        raise ValueError("`bins` must increase monotonically, when an array")
    return a, edges


def histogram_bin_edges(a, bins=10, range=None, weights=None):  # noqa: A002
    """The bin edges histogram would use (bins an int, or the edges themselves)."""
    return _bin_edges(a, bins, range)[1]


def histogram(a, bins=10, range=None, density=None, weights=None):  # noqa: A002
    """(counts, bin edges) of a (flattened); the last bin includes its right edge. Counts are
    int64, or summed weights (differentiable); density=True normalizes to a density."""
    x, edges = _bin_edges(a, bins, range)
    nb = edges.shape[0] - 1
    idx = subtract(searchsorted(edges, x, side="right"), 1)
    idx = where(equal(x, edges[-1]), nb - 1, idx)
    valid = lax.bitwise_and(lax.ge(*promote2(x, edges[0])), lax.le(*promote2(x, edges[-1])))
    if weights is None:
        w = lax.full(x.shape, 1, INDEX)
    else:
        w = ravel(asarray(weights))
        if w.shape != x.shape:
            raise ValueError("weights should have the same shape as a.")
    w = where(valid, w, np.zeros((), w.dtype))
    idx = _clip(idx, 0, builtins.max(nb - 1, 0))
    counts = lax.scatter_add(lax.full((nb,), 0, w.dtype),
                             lax.expand_dims(convert(idx, INDEX), (1,)), w)
    if density:
        db = convert(diff(edges), np.dtype(np.float64))
        counts = true_divide(true_divide(counts, db), _sum(counts))
    return counts, edges
