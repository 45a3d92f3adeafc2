"""take and put along an axis: take, take_along_axis, put_along_axis, put (NumPy's index-array
reads and writes, with its modes 'clip' / 'wrap'), written with gather and scatter.
"""

from __future__ import annotations

import builtins

import numpy as np

from .. import lax
from ..core import Tracer, device_namespace, user_line
from ._core import asarray, broadcast_shapes, broadcast_to
from ._indexing import INDEX, float_index_error, getitem, normalize_index_array

__all__ = ["take", "take_along_axis", "put_along_axis", "put"]


# ---------------------------------------------------------------------------------------------
# take, take_along_axis, put_along_axis, put

def normalize_axis(axis, ndim):
    if not -ndim <= axis < max(ndim, 1):
        raise np.exceptions.AxisError(f"axis {axis} is out of bounds for array of dimension "
                                      f"{ndim}{user_line()}")
    return axis % ndim if ndim else 0


def index_mode(indices, n, mode):
    """Indices adjusted for mode: 'clip' clamps into [0, n-1], 'wrap' takes them mod n; None and
    'raise' wrap negatives (and raise on concrete out-of-range values)."""
    if mode in (None, "raise", "fill", "promise_in_bounds"):
        return indices
    ind = asarray(indices)
    if ind.dtype.kind not in "iu":
        raise float_index_error(f"an array of dtype {ind.dtype}")
    if mode == "clip":
        if type(ind) is not Tracer:
            return np.clip(ind, 0, n - 1)
        return lax.min(lax.max(ind, np.zeros((), ind.dtype)), np.array(n - 1, ind.dtype))
    if mode == "wrap":
        if type(ind) is not Tracer:
            return np.mod(ind, n)
        r = lax.rem(ind, np.array(n, ind.dtype))
        return lax.select_n(lax.lt(r, np.zeros((), r.dtype)), r, lax.add(r, np.array(n, r.dtype)))
    raise ValueError(f"mode must be one of 'raise', 'clip', 'wrap', got {mode!r}")


def ravel_array(a):
    a = asarray(a)
    return lax.reshape(a, (a.size,))


def take(a, indices, axis=None, out=None, mode=None, unique_indices=False,
         indices_are_sorted=False, fill_value=None):
    """Elements of `a` at `indices` along `axis` (the flattened array when None)."""
    if out is not None:
        raise TypeError("take: out= is not supported (arrays are immutable)")
    a = asarray(a)
    if axis is None:
        a, axis = ravel_array(a), 0
    axis = normalize_axis(axis, a.ndim)
    ind = index_mode(indices if not isinstance(indices, (list, tuple)) else asarray(indices),
                      a.shape[axis], mode)
    ind = asarray(ind)
    if ind.ndim == 0 and type(ind) is not Tracer:
        ind = int(ind)
    return getitem(a, (builtins.slice(None),) * axis + (ind,))


def _along_axis_full(arr, indices, axis):
    """arr and indices broadcast against each other except along axis; indices wrapped and
    turned into gather_nd coordinates."""
    from ..lax.indexing import along_axis_indices
    ind = asarray(indices)
    if ind.dtype.kind not in "iu":
        raise float_index_error(f"an array of dtype {ind.dtype}")
    if ind.ndim != arr.ndim:
        raise ValueError(f"take_along_axis: indices ({ind.ndim}-d) and arr ({arr.ndim}-d) must "
                         f"have the same number of dimensions{user_line()}")
    n = arr.shape[axis]
    shape_a = arr.shape[:axis] + (1,) + arr.shape[axis + 1:]
    shape_i = ind.shape[:axis] + (1,) + ind.shape[axis + 1:]
    b = list(broadcast_shapes(shape_a, shape_i, what="array and indices"))
    b[axis] = n
    arr = broadcast_to(arr, b)
    b[axis] = ind.shape[axis]
    ind = normalize_index_array(broadcast_to(ind, b) if type(ind) is Tracer else
                           np.broadcast_to(ind, b), n, axis)
    ind = asarray(ind)
    if type(ind) is Tracer:
        return arr, along_axis_indices(ind, axis)
    xp = device_namespace([ind])
    grids = list(xp.meshgrid(*[xp.arange(s, dtype=INDEX) for s in ind.shape], indexing="ij"))
    grids[axis] = ind
    return arr, xp.stack(grids, -1) if grids else np.zeros((0,), INDEX)


def take_along_axis(arr, indices, axis, mode=None, fill_value=None):
    """NumPy's take_along_axis: indices and arr broadcast except along `axis`."""
    arr = asarray(arr)
    if axis is None:
        arr, axis = ravel_array(arr), 0
        indices = ravel_array(indices)
    axis = normalize_axis(axis, arr.ndim)
    if (mode is None and type(indices) is np.ndarray and indices.dtype.kind in "iu"
            and indices.shape[:axis] + indices.shape[axis + 1:]
            == arr.shape[:axis] + arr.shape[axis + 1:]):
        return lax.gather(arr, _concrete_along_axis_coords(indices, arr.shape[axis], axis))
    indices = index_mode(indices, arr.shape[axis], mode)
    arr, coords = _along_axis_full(arr, indices, axis)
    return lax.gather(arr, coords)


def _concrete_along_axis_coords(ind, n, axis):
    """gather coordinates for NumPy indices that need no broadcasting (the common eager case:
    picking each row's label), built with a few NumPy calls instead of traced operations."""
    if ind.size and (ind.min() < -n or ind.max() >= n):
        bad = ind[(ind < -n) | (ind >= n)].flat[0]
        raise IndexError(f"index {bad} is out of bounds for axis {axis} with size {n}"
                         f"{user_line()}")
    coords = np.empty(ind.shape + (ind.ndim,), INDEX)
    for i, s in enumerate(ind.shape):  # (np.ogrid costs more than the rest together)
        if i != axis:
            coords[..., i] = np.arange(s, dtype=INDEX).reshape((-1,) + (1,) * (ind.ndim - 1 - i))
    coords[..., axis] = np.where(ind < 0, ind + n, ind)
    return coords


def put_along_axis(arr, indices, values, axis, inplace=False, mode=None):
    """A copy of arr with `values` written at `indices` along `axis` (NumPy's put_along_axis,
    returning the result instead of writing in place)."""
    if inplace:
        raise ValueError("put_along_axis: arrays are immutable; call it with inplace=False and "
                         "use the returned array.")
    arr = asarray(arr)
    shape = arr.shape
    if axis is None:
        arr, axis = ravel_array(arr), 0
        indices = ravel_array(indices)
    axis = normalize_axis(axis, arr.ndim)
    indices = index_mode(indices, arr.shape[axis], mode)
    ind = asarray(indices)
    barr, coords = _along_axis_full(arr, ind, axis)
    if barr.shape != arr.shape:
        raise ValueError(f"put_along_axis: indices of shape {ind.shape} must not broadcast arr "
                         f"of shape {arr.shape}{user_line()}")
    v = broadcast_to(asarray(values, arr.dtype), coords.shape[:-1])
    return lax.reshape(lax.scatter(arr, coords, v, "set"), shape)


def put(a, ind, v, mode=None, inplace=False):
    """A copy of a with the flat positions `ind` set to v (values repeat as in NumPy)."""
    if inplace:
        raise ValueError("put: arrays are immutable; call it with inplace=False and use the "
                         "returned array.")
    a = asarray(a)
    flat = ravel_array(a)
    ind = index_mode(asarray(ind), flat.shape[0], mode or "raise")
    ind = ravel_array(ind)
    ind = normalize_index_array(ind, flat.shape[0], 0)
    v = ravel_array(asarray(v, a.dtype))
    m = ind.shape[0]
    if v.shape[0] != m and v.shape[0] > 0:
        reps = -(-m // v.shape[0])
        v = lax.slice(lax.concatenate([v] * reps, 0) if reps > 1 else v, (0,), (m,))
    idx = lax.expand_dims(asarray(ind), (1,)) if type(ind) is Tracer else ind[:, None]
    return lax.reshape(lax.scatter(flat, idx, v, "set"), a.shape)
