"""Diagonals and triangles: diagonal, trace, diag, diagflat, tril/triu, the *_indices functions
and fill_diagonal.
"""

from __future__ import annotations

import builtins

import numpy as np

from .. import lax
from ..core import Tracer
from ._core import asarray, broadcast_to
from ._indexing import INDEX, getitem
from ._take import normalize_axis, ravel_array

__all__ = [
    "diag", "diagflat", "diagonal", "trace", "tril", "triu", "tril_indices", "triu_indices",
    "tril_indices_from", "triu_indices_from", "diag_indices", "diag_indices_from",
    "fill_diagonal",
]


# ---------------------------------------------------------------------------------------------
# Diagonals and triangles

def _diag_positions(n1, n2, offset):
    start, stop = max(0, -offset), min(n1, n2 - offset)
    rows = np.arange(start, max(start, stop), dtype=INDEX)
    return rows, rows + offset


def diagonal(a, offset=0, axis1=0, axis2=1):
    """The diagonal along axis1/axis2, as the last axis of the result (as NumPy)."""
    a = asarray(a)
    if a.ndim < 2:
        raise ValueError("diagonal requires an array of at least two dimensions")
    axis1, axis2 = normalize_axis(axis1, a.ndim), normalize_axis(axis2, a.ndim)
    if axis1 == axis2:
        raise ValueError("axis1 and axis2 cannot be the same")
    rest = [d for d in range(a.ndim) if d not in (axis1, axis2)]
    at = lax.transpose(a, rest + [axis1, axis2])
    rows, cols = _diag_positions(a.shape[axis1], a.shape[axis2], int(offset))
    return getitem(at, (Ellipsis, rows, cols))


def trace(a, offset=0, axis1=0, axis2=1, dtype=None, out=None):
    """Sum along a diagonal (NumPy's dtype rules, through fnp.sum)."""
    import funcgrad.numpy as fnp
    if out is not None:
        raise TypeError("trace: out= is not supported (arrays are immutable)")
    return fnp.sum(diagonal(a, offset, axis1, axis2), axis=-1, dtype=dtype)


def diag(v, k=0):
    """The k-th diagonal of a 2-D array, or a 2-D array with the 1-D v on its k-th diagonal."""
    v = asarray(v)
    if v.ndim == 2:
        return diagonal(v, k)
    if v.ndim != 1:
        raise ValueError("diag: input must be 1- or 2-d")
    n = v.shape[0] + builtins.abs(int(k))
    rows = np.arange(v.shape[0], dtype=INDEX) + max(-int(k), 0)
    coords = np.stack([rows, rows + int(k)], -1)
    return lax.scatter(lax.full((n, n), 0, v.dtype), coords, v, "add")


def diagflat(v, k=0):
    return diag(ravel_array(v), k)


def _tri_mask(n, m, k, lower):
    mask = np.tri(n, m, k, dtype=bool)
    return mask if lower else ~np.tri(n, m, k - 1, dtype=bool)


def _masked(m, k, lower):
    m = asarray(m)
    if m.ndim < 1:
        raise ValueError("tril/triu: input must be at least 1-d")
    n_rows, n_cols = (m.shape[-2], m.shape[-1]) if m.ndim >= 2 else (m.shape[0], m.shape[0])
    mask = _tri_mask(n_rows, n_cols, int(k), lower)
    shape = m.shape if m.ndim >= 2 else mask.shape
    m = broadcast_to(m, shape)
    maskb = lax.broadcast_in_dim(mask, shape, (len(shape) - 2, len(shape) - 1))
    return lax.select_n(maskb, lax.full(shape, 0, m.dtype), m)


def tril(m, k=0):
    """m with the elements above the k-th diagonal zeroed (last two axes)."""
    return _masked(m, k, lower=True)


def triu(m, k=0):
    """m with the elements below the k-th diagonal zeroed (last two axes)."""
    return _masked(m, k, lower=False)


def tril_indices(n, k=0, m=None):
    return tuple(i.astype(INDEX) for i in np.tril_indices(n, k, m))


def triu_indices(n, k=0, m=None):
    return tuple(i.astype(INDEX) for i in np.triu_indices(n, k, m))


def tril_indices_from(arr, k=0):
    shape = np.shape(arr) if type(arr) is not Tracer else arr.shape
    if len(shape) != 2:
        raise ValueError("input array must be 2-d")
    return tril_indices(shape[-2], k, shape[-1])


def triu_indices_from(arr, k=0):
    shape = np.shape(arr) if type(arr) is not Tracer else arr.shape
    if len(shape) != 2:
        raise ValueError("input array must be 2-d")
    return triu_indices(shape[-2], k, shape[-1])


def diag_indices(n, ndim=2):
    return (np.arange(n, dtype=INDEX),) * ndim


def diag_indices_from(arr):
    shape = np.shape(arr) if type(arr) is not Tracer else arr.shape
    if len(shape) < 2 or len(set(shape)) != 1:
        raise ValueError("All dimensions of input must be of equal length")
    return diag_indices(shape[0], len(shape))


def fill_diagonal(a, val, wrap=False, *, inplace=False):
    """A copy of a with its main diagonal set to val (NumPy's fill_diagonal, not in place)."""
    if inplace:
        raise ValueError("fill_diagonal: arrays are immutable; call it with inplace=False and "
                         "use the returned array.")
    a = asarray(a)
    if a.ndim < 2:
        raise ValueError("array must be at least 2-d")
    if a.ndim > 2 and len(set(a.shape)) != 1:
        raise ValueError("All dimensions of input must be of equal length")
    if a.ndim == 2:
        n_rows, n_cols = a.shape
        step = n_cols + 1
        end = a.size if wrap else min(a.size, n_cols * n_cols)
        flat_pos = np.arange(0, end, step, dtype=INDEX)
    else:
        flat_pos = np.ravel_multi_index(diag_indices(a.shape[0], a.ndim), a.shape).astype(INDEX)
    v = ravel_array(asarray(val, a.dtype))
    m = flat_pos.shape[0]
    if v.shape[0] != m:
        reps = -(-m // max(v.shape[0], 1))
        v = lax.slice(lax.concatenate([v] * reps, 0) if reps > 1 else v, (0,), (m,))
    return lax.reshape(lax.scatter(ravel_array(a), flat_pos[:, None], v, "set"), a.shape)
