"""Dynamic slicing primitives: dynamic_slice and dynamic_update_slice, whose start indices are
rank-0 integer operands (which may be traced), each defined once with its rules.
"""

from __future__ import annotations

import numpy as np

from ..core import Primitive, ShapedArray, bind
from . import elementwise as ew
from ._batching import at_front, batch_size, move_to_front
from ._util import check_kind, copy, same_dtype, shape_error
from .indexing import INDEX, gather, scatter, with_batch_column
from .structural import broadcast_in_dim, concatenate, expand_dims, iota

__all__ = ["dynamic_slice", "dynamic_update_slice", "dynamic_slice_p", "dynamic_update_slice_p"]


def _check_starts(name, operand, starts):
    if len(starts) != operand.ndim:
        raise shape_error(name, f"needs one start index per axis of {operand.str_short()}, got "
                          f"{len(starts)}")
    for s in starts:
        check_kind(name, s, "iu", "start index")
        if s.shape != ():
            raise shape_error(name, f"start indices must be rank 0, got {s.str_short()}")


def _clamped_starts(starts, shape, sizes):
    """Python ints: each start clamped so that the slice fits (JAX semantics)."""
    return [min(max(int(s), 0), n - m) for s, n, m in zip(starts, shape, sizes)]


def _dynamic_slice_abstract(operand, *starts, slice_sizes):
    _check_starts("dynamic_slice", operand, starts)
    if len(slice_sizes) != operand.ndim or any(
            not 0 <= m <= n for m, n in zip(slice_sizes, operand.shape)):
        raise shape_error("dynamic_slice", f"slice_sizes {slice_sizes} do not fit in "
                          f"{operand.str_short()}")
    return ShapedArray(slice_sizes, operand.dtype, operand.weak_type)


def _dynamic_slice_impl(xp, operand, *starts, slice_sizes):
    begin = _clamped_starts(starts, operand.shape, slice_sizes)
    return operand[tuple(np.s_[b:b + m] for b, m in zip(begin, slice_sizes))]


dynamic_slice_p = Primitive(
    "dynamic_slice", impl=_dynamic_slice_impl, abstract_eval=_dynamic_slice_abstract,
    residuals="cross",
    jvp=lambda primals, tangents, out, *, slice_sizes: None if tangents[0] is None else bind(
        dynamic_slice_p, tangents[0], *primals[1:], slice_sizes=slice_sizes),
    vjp=lambda ct, primals, out, active, *, slice_sizes: (
        dynamic_update_slice(ew.zeros_like(primals[0]), ct, *primals[1:], **_RAW),
    ) + (None,) * (len(primals) - 1))


def _batched_window_indices(starts, dims, shape, sizes, size):
    """Full gather/scatter indices, shape (size,) + sizes + (ndim,), of the window at the clamped
    per-example starts: index [b, i0, i1, ...] = (s0[b] + i0, s1[b] + i1, ...)."""
    window = (size,) + tuple(sizes)
    cols = []
    for j, (s, d, n, m) in enumerate(zip(starts, dims, shape, sizes)):
        s = ew.convert_element_type(s, INDEX)
        s = ew.min(ew.max(s, np.zeros((), INDEX)), np.array(n - m, INDEX))  # clamp: window fits
        s = broadcast_in_dim(s, window, () if d is None else (0,))
        pos = ew.add(s, iota(INDEX, window, j + 1))
        cols.append(expand_dims(pos, (len(window),)))
    return concatenate(cols, len(window)) if len(cols) > 1 else cols[0]


def _dynamic_slice_batch(vals, dims, *, slice_sizes):
    operand, *starts = vals
    d_op, *d_starts = dims
    if all(d is None for d in d_starts):
        # Shared starts: slice the batch axis whole, where it is.
        zero = np.zeros((), starts[0].dtype if starts else INDEX)
        starts.insert(d_op, zero)
        sizes = list(slice_sizes)
        sizes.insert(d_op, operand.shape[d_op])
        return bind(dynamic_slice_p, operand, *starts, slice_sizes=tuple(sizes)), d_op
    # Per-example starts: one gather of every example's window.
    size = batch_size(vals, dims)
    shape = operand.shape if d_op is None else operand.shape[:d_op] + operand.shape[d_op + 1:]
    indices = _batched_window_indices(starts, d_starts, shape, slice_sizes, size)
    if d_op is None:
        return gather(operand, indices), 0
    return gather(move_to_front(operand, d_op), with_batch_column(indices, size)), 0


dynamic_slice_p.batch = _dynamic_slice_batch


def _dus_abstract(operand, update, *starts):
    _check_starts("dynamic_update_slice", operand, starts)
    same_dtype("dynamic_update_slice", (operand, update))
    if update.ndim != operand.ndim or any(m > n for m, n in zip(update.shape, operand.shape)):
        raise shape_error("dynamic_update_slice", f"update {update.str_short()} does not fit in "
                          f"{operand.str_short()}")
    return ShapedArray(operand.shape, operand.dtype, operand.weak_type)


def _dus_impl(xp, operand, update, *starts):
    begin = _clamped_starts(starts, operand.shape, update.shape)
    out = copy(xp, operand)
    out[tuple(np.s_[b:b + m] for b, m in zip(begin, update.shape))] = update
    return out


def _dus_jvp(primals, tangents, out):
    operand, update, *starts = primals
    t_op, t_up = tangents[:2]
    if t_op is None and t_up is None:
        return None
    t_op = ew.zeros_like(operand) if t_op is None else t_op
    t_up = ew.zeros_like(update) if t_up is None else t_up
    return dynamic_update_slice(t_op, t_up, *starts, **_RAW)


def _dus_vjp(ct, primals, out, active):
    operand, update, *starts = primals
    ct_op = dynamic_update_slice(ct, ew.zeros_like(update), *starts, **_RAW) if active[0] \
        else None
    ct_up = dynamic_slice(ct, *starts, slice_sizes=update.shape, **_RAW) if active[1] else None
    return (ct_op, ct_up) + (None,) * len(starts)


dynamic_update_slice_p = Primitive("dynamic_update_slice", impl=_dus_impl,
                                   abstract_eval=_dus_abstract, jvp=_dus_jvp, vjp=_dus_vjp,
                                   residuals="cross")


def _dus_batch(vals, dims):
    operand, update, *starts = vals
    d_op, d_up, *d_starts = dims
    size = batch_size(vals, dims)
    operand, update = at_front(operand, d_op, size), at_front(update, d_up, size)
    if all(d is None for d in d_starts):
        zero = np.zeros((), starts[0].dtype if starts else INDEX)
        return dynamic_update_slice(operand, update, zero, *starts, **_RAW), 0
    # Per-example starts: one scatter of every example's window (clamped, so in range, unique).
    indices = _batched_window_indices(starts, d_starts, operand.shape[1:], update.shape[1:], size)
    return scatter(operand, with_batch_column(indices, size), update), 0


dynamic_update_slice_p.batch = _dus_batch


_RAW = {"allow_negative_indices": False}  # rules pass the primitive's own (clamped) starts


def _starts(start_indices):
    if len(start_indices) == 1 and isinstance(start_indices[0], (list, tuple)):
        start_indices = tuple(start_indices[0])  # JAX style: one sequence of starts
    elif len(start_indices) == 1 and getattr(start_indices[0], "ndim", 0) == 1:
        vec = start_indices[0]  # one 1-D array of starts
        start_indices = tuple(vec[i] for i in range(vec.shape[0]))
    return tuple(np.asarray(s, INDEX) if isinstance(s, int) else s for s in start_indices)


def dynamic_slice(operand, *start_indices, slice_sizes=None, allow_negative_indices=True):
    """operand[s0:s0+m0, s1:s1+m1, ...] for rank-0 integer starts s (which may be traced);
    starts are clamped so that the slice fits. Called as JAX does,
    `dynamic_slice(operand, start_indices, slice_sizes)` with one sequence (or 1-D array) of
    starts, or `dynamic_slice(operand, s0, s1, ..., slice_sizes=...)`."""
    if slice_sizes is None:
        if len(start_indices) != 2:
            raise TypeError("dynamic_slice(operand, start_indices, slice_sizes): give the starts "
                            "as one sequence and the sizes as another (or slice_sizes=...); got "
                            f"{len(start_indices)} positional arguments after the operand.")
        start_indices, slice_sizes = start_indices[:1], start_indices[1]
    starts = _starts(start_indices)
    if allow_negative_indices:
        starts = _wrapped(starts, operand)
    return bind(dynamic_slice_p, operand, *starts,
                slice_sizes=tuple(int(m) for m in slice_sizes))


def dynamic_update_slice(operand, update, *start_indices, allow_negative_indices=True):
    """A copy of operand with `update` written at the (clamped) rank-0 integer starts."""
    starts = _starts(start_indices)
    if allow_negative_indices:
        starts = _wrapped(starts, operand)
    return bind(dynamic_update_slice_p, operand, update, *starts)


def _wrapped(starts, operand):
    """Negative starts count from the end, once (as JAX's wrappers do); the primitive then
    clamps. Static starts are wrapped in Python; traced ones with a select."""
    out = []
    for s, n in zip(starts, np.shape(operand)):
        n = np.asarray(n, s.dtype)
        if type(s) is np.ndarray or isinstance(s, np.generic):
            out.append(s + n if s < 0 else s)
        else:
            out.append(ew.select_n(ew.lt(s, np.zeros((), s.dtype)), s, ew.add(s, n)))
    return tuple(out)
