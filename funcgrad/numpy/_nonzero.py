"""nonzero and friends (argwhere, flatnonzero, compress, extract): functions whose output shape
depends on the data. They read concrete values eagerly (also under eager grad), and under
jit/vmap take a static `size=` (padded with `fill_value`), as in JAX.
"""

from __future__ import annotations

import numpy as np

from .. import lax
from ..core import Tracer, user_line
from ._core import asarray, canonical_axes
from ._index_tricks import unravel_index
from ._indexing import INDEX, concrete_value
from ._take import normalize_axis, ravel_array, take

__all__ = ["nonzero", "argwhere", "flatnonzero", "compress", "extract", "trim_zeros"]


# ---------------------------------------------------------------------------------------------
# nonzero and friends: data-dependent shapes need concrete values (or size=)

def nonzero(a, *, size=None, fill_value=None):
    """Indices of the nonzero elements, one array per axis. Needs a concrete `a`, unless `size`
    is given: then the first `size` indices are returned, padded with fill_value (default 0)."""
    a = asarray(a)
    if a.ndim == 0:
        raise ValueError("Calling nonzero on 0d arrays is not allowed. Use "
                         "fnp.atleast_1d(a).nonzero() instead.")
    if size is None:
        val = concrete_value(a, "nonzero")
        return tuple(np.asarray(i, INDEX) for i in np.nonzero(val))
    return _nonzero_sized(a, int(size), fill_value)


def _nonzero_sized(a, size, fill_value):
    """The first `size` nonzero coordinates as a fixed-shape traced computation: each nonzero
    element scatters its flat position to the slot given by its rank (a cumsum)."""
    flat = ravel_array(a)
    n = flat.shape[0]
    mask = lax.ne(flat, np.zeros((), flat.dtype))
    rank = lax.sub(lax.cumsum(lax.convert_element_type(mask, INDEX), 0), np.ones((), INDEX))
    slot = lax.select_n(mask, lax.full((n,), size, INDEX), rank)  # zeros: dropped (out of range)
    pos = lax.scatter(lax.full((size,), 0, INDEX), lax.expand_dims(slot, (1,)),
                  lax.iota(INDEX, n), "set")
    count = lax.reduce_sum(lax.convert_element_type(mask, INDEX), (0,))
    valid = lax.lt(lax.iota(INDEX, size), lax.broadcast_in_dim(count, (size,), ()))
    coords = unravel_index(pos, a.shape) if a.ndim > 1 else (pos,)
    fills = fill_value if isinstance(fill_value, tuple) else (fill_value or 0,) * a.ndim
    return tuple(lax.select_n(valid, lax.full((size,), f, INDEX), c)
                 for c, f in zip(coords, fills))


def argwhere(a, *, size=None, fill_value=None):
    """Indices of the nonzero elements as an (N, ndim) array."""
    a = asarray(a)
    if a.ndim == 0:
        val = concrete_value(a, "argwhere") if size is None else None
        n = (1 if bool(val) else 0) if size is None else size
        return np.zeros((n, 0), INDEX)
    parts = nonzero(a, size=size, fill_value=fill_value)
    if all(type(p) is not Tracer for p in parts):
        return np.stack([np.asarray(p) for p in parts], -1)
    return lax.concatenate([lax.expand_dims(asarray(p), (1,)) for p in parts], 1)


def flatnonzero(a, *, size=None, fill_value=None):
    """Flat indices of the nonzero elements of a."""
    return nonzero(ravel_array(a), size=size, fill_value=fill_value)[0]


def compress(condition, a, axis=None, *, size=None, fill_value=0):
    """The slices of a along axis where condition (1-D, concrete) is true."""
    cond = concrete_value(asarray(condition), "compress")
    if cond.ndim != 1:
        raise ValueError("compress: condition must be a 1-d array")
    a = asarray(a)
    if axis is None:
        a, axis = ravel_array(a), 0
    axis = normalize_axis(axis, a.ndim)
    if cond.shape[0] > a.shape[axis]:
        if np.any(cond[a.shape[axis]:]):
            raise IndexError(f"compress: condition of length {cond.shape[0]} selects beyond "
                             f"axis {axis} of size {a.shape[axis]}{user_line()}")
        cond = cond[:a.shape[axis]]
    return take(a, np.nonzero(cond)[0].astype(INDEX), axis=axis)


def extract(condition, arr, *, size=None, fill_value=0):
    """The elements of arr where condition (concrete) is true, flattened."""
    cond = concrete_value(asarray(condition), "extract")
    return take(ravel_array(arr), np.flatnonzero(cond).astype(INDEX))


def needs_size(what, x):
    """x's concrete value, or a ConcretizationError that points at size=."""
    return concrete_value(x, what, "Under jit/vmap pass a static size (size=..., fill_value=... "
                          "for the padding; length=... for bincount), or call it outside the "
                          "transform.")


# ---------------------------------------------------------------------------------------------
# trim_zeros

def trim_zeros(filt, trim="fb", axis=None):
    """filt without its leading ('f') and/or trailing ('b') zeros (needs concrete values)."""
    x = asarray(filt)
    trim = trim.lower()
    if trim not in {"fb", "bf", "f", "b"}:
        raise ValueError(f"unexpected character(s) in `trim`: {trim!r}")
    axes = canonical_axes(axis, x.ndim)
    if not axes:
        return x
    v = concrete_value(x, "trim_zeros")
    nz = np.argwhere(v)
    if nz.size == 0:
        start = stop = np.zeros(x.ndim, INDEX)
    else:
        start, stop = nz.min(axis=0), nz.max(axis=0) + 1
        if "f" not in trim:
            start = (None,) * x.ndim
        if "b" not in trim:
            stop = (None,) * x.ndim
    sl = tuple(slice(start[a], stop[a]) if a in axes else slice(None) for a in range(x.ndim))
    return x[sl]
