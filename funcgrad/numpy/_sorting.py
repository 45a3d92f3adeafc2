"""Sorting and searching beyond sort/argsort (which are in _reductions): searchsorted and digitize,
partition/argpartition, lexsort, sort_complex, and the nan-ignoring order statistics
(nanquantile, nanpercentile, nanmedian).
"""

from __future__ import annotations

import builtins
import math

import numpy as np

from .. import lax
from ..core.avals import dtype_kind
from ._arithmetic import add, multiply, subtract, true_divide
from ._arithmetic import clip as _clip
from ._classification import isnan
from ._core import (
    asarray,
    broadcast_shapes,
    broadcast_to,
    canonical_axes,
    canonical_axis,
    convert,
    inexact_dtype,
    result_type,
)
from ._indexing import INDEX, concrete_value, is_concrete
from ._logic import logical_not, where
from ._reductions import argsort, quantile, sort
from ._reductions import sum as _sum
from ._shape import ravel
from ._take import take, take_along_axis

__all__ = [
    "searchsorted", "digitize", "partition", "argpartition", "lexsort", "sort_complex",
    "nanquantile", "nanpercentile", "nanmedian",
]


# ---------------------------------------------------------------------------------------------
# searchsorted, digitize

def _sort_lt(x, y, inclusive):
    """x < y (or x <= y) in NumPy's sort order, where NaN is larger than every number."""
    base = lax.le(x, y) if inclusive else lax.lt(x, y)
    if dtype_kind(x.dtype) not in "fc":
        return base
    y_nan = lax.ne(y, y)
    x_nan = lax.ne(x, x)
    if inclusive:
        return lax.bitwise_or(base, y_nan)
    return lax.bitwise_or(base, lax.bitwise_and(y_nan, lax.bitwise_not(x_nan)))


def searchsorted(a, v, side="left", sorter=None, *, method=None):
    """Insertion points of v in the sorted 1-D a (NumPy's searchsorted): a binary search of
    ceil(log2(n + 1)) unrolled gather-and-compare steps, so it traces to a fixed program."""
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
        am = lax.gather(a, lax.expand_dims(safe, (safe.ndim,)))
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
    if bins.shape[0] >= 2 and is_concrete(bins):
        b = concrete_value(bins, "digitize's bins")
        inc, dec = np.all(np.diff(b) >= 0), np.all(np.diff(b) <= 0)
        if not (inc or dec):
            raise ValueError("bins must be monotonically increasing or decreasing")
        if dec and not inc:
            n = bins.shape[0]
            return lax.sub(np.array(n, INDEX),
                           searchsorted(lax.rev(bins, (0,)), x, side=side))
    return searchsorted(bins, x, side=side)


# ---------------------------------------------------------------------------------------------
# Sorting: partition, lexsort, sort_complex

def _check_kth(kth, n):
    ks = np.asarray(kth)
    if ks.dtype.kind not in "iu":
        raise TypeError("Partition index must be integer")
    if ks.size and (ks.min() < -n or ks.max() >= n):
        raise ValueError(f"kth(={ks.ravel()[0]}) out of bounds ({n})")


def partition(a, kth, axis=-1, kind="introselect", order=None):
    """A partitioned copy: the kth element in sorted position, smaller before, larger after
    (implemented as a full sort, which satisfies NumPy's contract)."""
    x = asarray(a)
    if axis is None:
        x, axis = ravel(x), 0
    _check_kth(kth, x.shape[canonical_axis(axis, x.ndim)])
    return sort(x, axis=axis)


def argpartition(a, kth, axis=-1, kind="introselect", order=None):
    """Indices that partition a (implemented as a stable argsort, which satisfies the contract)."""
    x = asarray(a)
    if axis is None:
        x, axis = ravel(x), 0
    _check_kth(kth, x.shape[canonical_axis(axis, x.ndim)])
    return argsort(x, axis=axis)


def lexsort(keys, axis=-1):
    """Indices sorting by several keys: the last key is the primary one (stable)."""
    if isinstance(keys, (list, tuple)):
        ks = [asarray(k) for k in keys]
    else:
        k = asarray(keys)
        ks = [k[i] for i in range(k.shape[0])] if k.ndim else [k]
    if not ks:
        raise TypeError("need sequence of keys with len > 0 in lexsort")
    shape = broadcast_shapes(*(tuple(k.shape) for k in ks))
    if not shape:
        return np.array(0, INDEX)
    ax = canonical_axis(axis, len(shape))
    ks = [broadcast_to(k, shape) for k in ks]
    pos = lax.iota(INDEX, shape, ax)
    return lax.sort(*reversed(ks), pos, dimension=ax, num_keys=len(ks))[-1]


def sort_complex(a):
    """a sorted (by real part, then imaginary part) along its last axis, as a complex array."""
    x = sort(asarray(a))
    if x.dtype.kind == "c":
        return x
    return convert(x, np.dtype(np.complex64 if x.dtype.char in "bhBH" else np.complex128))


# ---------------------------------------------------------------------------------------------
# nan-ignoring order statistics

def _nanquantile(a, qs, q_item, axis, out, method, keepdims, weights, name, median=False):
    if out is not None:
        raise TypeError(f"{name}: out= is not supported (arrays are immutable)")
    x = asarray(a)
    if dtype_kind(x.dtype) not in "fc":
        return quantile(x, qs, axis, method=method, keepdims=keepdims, weights=weights)
    if weights is not None or method != "linear":
        raise NotImplementedError(f"{name} supports method='linear' without weights only.")
    if np.any((qs < 0) | (qs > 1)):
        raise ValueError("Quantiles must be in the range [0, 1]")
    dt = inexact_dtype(np.result_type(x.dtype, q_item))
    axes = canonical_axes(axis, x.ndim)
    kept = [i for i in range(x.ndim) if i not in axes]
    n = math.prod(x.shape[i] for i in axes)
    xt = lax.transpose(x, tuple(kept) + axes)
    xt = lax.reshape(xt, tuple(x.shape[i] for i in kept) + (n,))
    xs = convert(sort(xt, axis=-1), dt)  # nans last
    count = _sum(logical_not(isnan(xt)), axis=-1, keepdims=True)  # (kept..., 1), int64
    qf = np.asarray(qs, np.float64).reshape(-1)
    pos = multiply(qf, convert(subtract(count, 1), np.dtype(np.float64)))  # (kept..., nq)
    lo_f = lax.floor(pos)
    lo = _clip(convert(lo_f, INDEX), 0, builtins.max(n - 1, 0))
    hi = _clip(add(lo, 1), 0, lax.max(subtract(count, 1), np.zeros((), INDEX)))
    t = convert(subtract(pos, lo_f), dt)
    vlo, vhi = take_along_axis(xs, lo, -1), take_along_axis(xs, hi, -1)
    from ._reductions import lerp
    if median:  # NumPy's median: the middle value, or the mean of the two middle values
        res = where(t == 0, vlo, true_divide(add(vlo, vhi), np.array(2, dt)))
    else:
        res = lerp(vlo, vhi, t)
    res = where(count == 0, np.array(np.nan, dt), res)
    last = res.ndim - 1
    res = lax.transpose(res, (last,) + tuple(range(last)))
    kept_shape = tuple(1 if i in axes else s for i, s in enumerate(x.shape)) if keepdims else \
        tuple(x.shape[i] for i in kept)
    return lax.reshape(res, np.shape(qs) + kept_shape)


def nanquantile(a, q, axis=None, out=None, overwrite_input=False, method="linear",
                keepdims=False, *, weights=None, interpolation=None):
    """quantile ignoring nans (nan for slices that are all nan); q static, in [0, 1]."""
    from ._reductions import quantile_item, static_quantiles
    return _nanquantile(a, static_quantiles(q, "nanquantile"), quantile_item(q), axis, out,
                        method, keepdims, weights, "nanquantile")


def nanpercentile(a, q, axis=None, out=None, overwrite_input=False, method="linear",
                  keepdims=False, *, weights=None, interpolation=None):
    """percentile ignoring nans; q static, in [0, 100]."""
    from ._reductions import quantile_item, static_quantiles
    return _nanquantile(a, static_quantiles(q, "nanpercentile") / 100, quantile_item(q), axis,
                        out, method, keepdims, weights, "nanpercentile")


def nanmedian(a, axis=None, out=None, overwrite_input=False, keepdims=False):
    """median ignoring nans (nan for slices that are all nan)."""
    return _nanquantile(a, np.asarray(0.5), 0.5, axis, out, "linear", keepdims, None,
                        "nanmedian", median=True)
