"""Slicing along one axis, as jax.lax has it: slice_in_dim, index_in_dim and their dynamic
(traced start) versions, composed from the slice, squeeze, expand_dims and dynamic_slice /
dynamic_update_slice primitives (no rules of their own).
"""

from __future__ import annotations

import numpy as np

from . import elementwise as ew
from ._util import const_like, normalize_axis, to_operand
from .dynamic_slicing import dynamic_slice, dynamic_update_slice
from .indexing import INDEX
from .structural import expand_dims, slice, squeeze

__all__ = [
    "dynamic_slice_in_dim", "dynamic_update_slice_in_dim", "dynamic_index_in_dim",
    "dynamic_update_index_in_dim", "index_in_dim", "slice_in_dim",
]


def slice_in_dim(operand, start_index, limit_index, stride=1, axis=0):
    """operand[..., start:limit:stride, ...] along `axis` (static bounds; None and negative
    indices as in Python, without clipping)."""
    operand = to_operand(operand)
    axis = normalize_axis(int(axis), operand.ndim)
    n = operand.shape[axis]
    start = 0 if start_index is None else int(start_index)
    limit = n if limit_index is None else int(limit_index)
    start, limit = start + n if start < 0 else start, limit + n if limit < 0 else limit
    starts, limits, strides = [0] * operand.ndim, list(operand.shape), [1] * operand.ndim
    starts[axis], limits[axis], strides[axis] = start, limit, int(stride)
    return slice(operand, starts, limits, strides)


def index_in_dim(operand, index, axis=0, keepdims=True):
    """operand[..., index, ...] along `axis` (a static index; negative counts from the end)."""
    operand = to_operand(operand)
    axis = normalize_axis(int(axis), operand.ndim)
    index, size = int(index), operand.shape[axis]
    wrapped = index + size if index < 0 else index
    if not 0 <= wrapped < size:
        raise IndexError(f"index {index} is out of bounds for axis {axis} with size {size}")
    out = slice_in_dim(operand, wrapped, wrapped + 1, 1, axis)
    return out if keepdims else squeeze(out, (axis,))


def _wrap_start(index, size, allow_negative):
    """A rank-0 start index with negative values counted from the end (as JAX does before
    clamping); Python ints are wrapped here, traced ones with a select."""
    if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
        index = int(index)
        if index < 0:
            if not allow_negative:
                raise ValueError(f"Index {index} is out of bounds for dimension {size} if "
                                 "allow_negative_indices=False")
            index += size
        return np.asarray(index, INDEX)
    index = to_operand(index)
    if index.dtype.kind not in "iu":
        raise TypeError(f"start index must be an integer, got {index.dtype}")
    if index.shape != ():
        raise TypeError(f"start index must be a scalar, got shape {tuple(index.shape)}")
    if not allow_negative or index.dtype.kind == "u":
        return index
    return ew.select_n(ew.lt(index, const_like(0, index)), index,
                       ew.add(index, const_like(size, index)))


def _starts_along(operand, start, axis):
    zero = np.zeros((), start.dtype)
    return [start if i == axis else zero for i in range(operand.ndim)]


def dynamic_slice_in_dim(operand, start_index, slice_size, axis=0, *,
                         allow_negative_indices=True):
    """operand[..., start:start + slice_size, ...] along `axis` with a possibly traced start
    (negative counts from the end; then clamped so that the slice fits, as dynamic_slice)."""
    operand = to_operand(operand)
    axis = normalize_axis(int(axis), operand.ndim)
    start = _wrap_start(start_index, operand.shape[axis], allow_negative_indices)
    sizes = list(operand.shape)
    sizes[axis] = int(slice_size)
    return dynamic_slice(operand, _starts_along(operand, start, axis), sizes,
                            allow_negative_indices=False)  # wrapped above, once


def dynamic_index_in_dim(operand, index, axis=0, keepdims=True, *, allow_negative_indices=True):
    """operand[..., index, ...] along `axis` with a possibly traced index (clamped)."""
    out = dynamic_slice_in_dim(operand, index, 1, axis,
                               allow_negative_indices=allow_negative_indices)
    return out if keepdims else squeeze(out, (normalize_axis(int(axis), out.ndim),))


def dynamic_update_slice_in_dim(operand, update, start_index, axis, *,
                                allow_negative_indices=True):
    """operand with `update` written from `start_index` along `axis` (other axes from 0)."""
    operand, update = to_operand(operand), to_operand(update)
    axis = normalize_axis(int(axis), operand.ndim)
    start = _wrap_start(start_index, operand.shape[axis], allow_negative_indices)
    return dynamic_update_slice(operand, update, *_starts_along(operand, start, axis),
                                   allow_negative_indices=False)  # wrapped above, once


def dynamic_update_index_in_dim(operand, update, index, axis, *, allow_negative_indices=True):
    """operand with `update` written at `index` along `axis`; `update` may lack that axis."""
    operand, update = to_operand(operand), to_operand(update)
    axis = normalize_axis(int(axis), operand.ndim)
    if update.ndim != operand.ndim:
        if update.ndim + 1 != operand.ndim:
            raise ValueError(f"dynamic_update_index_in_dim: update of rank {update.ndim} for an "
                             f"operand of rank {operand.ndim}")
        update = expand_dims(update, (axis,))
    return dynamic_update_slice_in_dim(operand, update, index, axis,
                                       allow_negative_indices=allow_negative_indices)
