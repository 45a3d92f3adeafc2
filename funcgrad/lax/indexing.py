"""Indexing primitives: gather, scatter, dynamic slices, cumulative reductions and sort, each
defined once with its shape rule, implementation, JVP and VJP.

Index convention ("gather_nd"): `indices` has shape batch + (k,) with k <= operand.ndim, and
indices[b] names the slice operand[tuple(indices[b])] of shape operand.shape[k:]. As in JAX,
gather clamps out-of-range indices into range and scatter drops out-of-range updates; negative
indices are out of range here (funcgrad.numpy wraps them before calling these).
"""

from __future__ import annotations

import math

import numpy as np

from ..core import Primitive, ShapedArray, bind
from . import elementwise as ew
from ._batching import at_front, batch_size, move_axis, move_to_front
from ._util import astype, check_kind, copy, dtype_of, normalize_axis, same_dtype, shape_error
from .structural import (
    _reshape,
    broadcast_in_dim,
    concatenate,
    expand_dims,
    iota,
    pad,
    reduce_min,
    reshape,
    slice,
)

__all__ = [
    "gather", "scatter", "scatter_add", "scatter_mul", "scatter_min", "scatter_max",
    "dynamic_slice", "dynamic_update_slice", "take_along_axis",
    "cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp", "sort", "argsort", "top_k",
    "gather_p", "scatter_p", "scatter_add_p", "scatter_mul_p", "scatter_min_p", "scatter_max_p",
    "dynamic_slice_p", "dynamic_update_slice_p", "cumsum_p", "cumprod_p", "cummax_p",
    "cummin_p", "cumlogsumexp_p", "sort_p",
]

INDEX = np.int64  # dtype of the indices this module makes (argsort, top_k), as NumPy's argsort


# ---------------------------------------------------------------------------------------------
# Index helpers written with primitives (usable inside rules)

def _check_indices(name, operand, indices):
    check_kind(name, indices, "iu", "indices")
    if indices.ndim < 1 or indices.shape[-1] > operand.ndim:
        raise shape_error(name, f"indices {indices.str_short()} must have shape batch + (k,) with "
                          f"k <= rank of the operand {operand.str_short()}")
    return indices.shape[-1]


def _upper_bounds(indices, dims):
    """dims[i] - 1 along the last axis of `indices`, broadcast to its shape."""
    hi = np.array([d - 1 for d in dims], indices.dtype)
    return broadcast_in_dim(hi, indices.shape, (indices.ndim - 1,))


def _clamp(indices, dims):
    """Indices clamped into range, as gather reads them."""
    lo = ew.max(indices, np.zeros((), indices.dtype))
    return ew.min(lo, _upper_bounds(indices, dims))


def _in_bounds(indices, dims):
    """Boolean mask over the batch: whether every component of indices[b] is in range."""
    if not dims:
        return ew.full(indices.shape[:-1], True, np.bool_)
    ok = ew.bitwise_and(ew.ge(indices, np.zeros((), indices.dtype)),
                        ew.le(indices, _upper_bounds(indices, dims)))
    return reduce_min(ok, (indices.ndim - 1,))


def _mask_updates(mask, x):
    """x (shape batch + rest) with the slices where the batch mask is False set to zero."""
    nb = mask.ndim
    m = broadcast_in_dim(mask, x.shape, tuple(range(nb))) if x.shape != mask.shape else mask
    return ew.select_n(m, ew.zeros_like(x), x)


def _indexed_dims(operand, indices):
    return tuple(operand.shape[:indices.shape[-1]])


# ---------------------------------------------------------------------------------------------
# gather

def _gather_abstract(operand, indices):
    k = _check_indices("gather", operand, indices)
    return ShapedArray(indices.shape[:-1] + operand.shape[k:], operand.dtype, operand.weak_type)


def _gather_impl(xp, operand, indices):
    k = indices.shape[-1]
    if k == 0:  # every batch element reads the whole operand
        return xp.broadcast_to(operand, indices.shape[:-1] + operand.shape)
    # minimum/maximum rather than clip: the same clamp, without clip's Python-level overhead
    cols = tuple(xp.minimum(xp.maximum(indices[..., i], 0), operand.shape[i] - 1)
                 for i in range(k))
    if xp is np:
        return operand[cols]
    # Elsewhere one index array per call (all the Array API standard offers): a linear index
    # into the k leading axes, and `take` along the flattened axis.
    lead = operand.shape[:k]
    lin = astype(xp, cols[0], np.int64)
    for i in range(1, k):
        lin = lin * lead[i] + astype(xp, cols[i], np.int64)
    flat = xp.reshape(operand, (math.prod(lead),) + operand.shape[k:])
    out = xp.take(flat, xp.reshape(lin, (-1,)), axis=0)
    return xp.reshape(out, indices.shape[:-1] + operand.shape[k:])


def _gather_vjp(ct, primals, out, active, **params):
    operand, indices = primals
    dims = _indexed_dims(operand, indices)
    # Gather read the clamped positions, so that is where the cotangent goes back to.
    return scatter_add(ew.zeros_like(operand), _clamp(indices, dims), ct), None


gather_p = Primitive("gather", impl=_gather_impl, abstract_eval=_gather_abstract,
                     jvp=lambda primals, tangents, out: gather(tangents[0], primals[1])
                     if tangents[0] is not None else None,
                     vjp=_gather_vjp, residuals="cross")


def _with_batch_column(indices, size):
    """Indices (size,) + batch + (k,) with an iota column in front: (size,) + batch + (k+1,), so
    that example i reads (or writes) only slice i of an operand batched along axis 0."""
    col = iota(indices.dtype, indices.shape[:-1] + (1,), 0)
    if indices.shape[-1] == 0:
        return col
    return concatenate([col, indices], indices.ndim - 1)


def _gather_batch(vals, dims):
    operand, indices = vals
    d_op, d_idx = dims
    if d_idx is None:
        # The batch axis of the operand becomes an unindexed axis: one gather reads every example.
        k = indices.shape[-1]
        return gather(move_axis(operand, d_op, k), indices), indices.ndim - 1
    indices = move_to_front(indices, d_idx)
    if d_op is None:
        return gather(operand, indices), 0
    size = indices.shape[0]
    return gather(move_to_front(operand, d_op), _with_batch_column(indices, size)), 0


gather_p.batch = _gather_batch


def gather(operand, indices):
    """result[b] = operand[tuple(indices[b])]: indices has shape batch + (k,), the result
    batch + operand.shape[k:]. Out-of-range indices are clamped into range."""
    return bind(gather_p, operand, indices)


def take_along_axis(x, indices, axis):
    """x's elements at `indices` along `axis` (indices has x's shape except along axis)."""
    axis = normalize_axis(axis, x.ndim)
    return gather(x, _along_axis_indices(indices, axis))


def _along_axis_indices(idx, axis):
    """Full gather_nd indices (shape idx.shape + (ndim,)) for positions idx along `axis`."""
    parts = [idx if d == axis else iota(idx.dtype, idx.shape, d) for d in range(idx.ndim)]
    return concatenate([expand_dims(p, (idx.ndim,)) for p in parts], idx.ndim)


# ---------------------------------------------------------------------------------------------
# scatter: one primitive per combining mode, so that each keeps only the residuals it needs

def _scatter_abstract(name):
    def rule(operand, indices, updates):
        k = _check_indices(name, operand, indices)
        same_dtype(name, (operand, updates))
        want = indices.shape[:-1] + operand.shape[k:]
        if updates.shape != want:
            raise shape_error(name, f"updates {updates.str_short()} must have shape {want} "
                              f"(indices batch + operand.shape[k:]) for operand "
                              f"{operand.str_short()} and indices {indices.str_short()}")
        return ShapedArray(operand.shape, operand.dtype, operand.weak_type)
    return rule


def _scatter_numpy(mode, out, idx, upd, lead):
    """NumPy's fast path: one flat index (np.ravel_multi_index checks the range in C) into
    the fresh copy `out`; None when some index is out of range (the caller filters those)."""
    try:
        flat = np.ravel_multi_index(tuple(idx[:, i] for i in range(idx.shape[1])), lead)
    except ValueError:
        return None
    view = out.reshape((math.prod(lead),) + out.shape[len(lead):])  # contiguous: a view
    if mode == "set":
        view[flat] = upd  # the last duplicate wins
    else:
        getattr(np, mode).at(view, flat, upd)
    return out


def _scatter_impl(mode):
    def impl(xp, operand, indices, updates):
        k = indices.shape[-1]
        if k == 0:  # every update applies to the whole operand: index a new leading axis of 1
            zero = xp.zeros(indices.shape[:-1] + (1,), indices.dtype)
            return impl(xp, xp.reshape(operand, (1,) + operand.shape), zero, updates)[0, ...]
        out = copy(xp, operand)
        rest = operand.shape[k:]
        n = math.prod(indices.shape[:-1])  # (not -1: a zero-size `rest` makes -1 ambiguous)
        idx = _reshape(xp, indices, (n, k))
        upd = _reshape(xp, updates, (n,) + rest)
        if xp is np:
            fast = _scatter_numpy(mode, out, idx, upd, operand.shape[:k])
            if fast is not None:
                return fast
        # Drop out-of-range updates, as JAX does (one vectorized test; filter only if needed).
        ok = xp.all((idx >= 0) & (idx < xp.asarray(operand.shape[:k], dtype=dtype_of(idx))),
                    axis=1)
        if xp is not np or not bool(ok.all()):  # (off NumPy, no host round trip to ask)
            idx, upd = idx[ok], upd[ok]
        cols = tuple(idx[:, i] for i in range(k))
        if xp is not np:  # the namespace's own scatter (CuPy: cupyx.scatter_add, ...)
            return xp.index_accumulate(mode, out, cols, upd)
        if mode == "set":
            out[cols] = upd  # NumPy: the last duplicate wins
        else:
            getattr(np, mode).at(out, cols, upd)
        return out
    return impl


def _scatter_jvp(primals, tangents, out):
    operand, indices, updates = primals
    t_op, _, t_up = tangents
    if t_op is None and t_up is None:
        return None
    t_op = ew.zeros_like(operand) if t_op is None else t_op
    t_up = ew.zeros_like(updates) if t_up is None else t_up
    return scatter(t_op, indices, t_up)


def _scatter_winners(operand, indices):
    """Boolean mask over the batch: which updates were written (in range, and the last of their
    duplicates): scatter each update's id, then read back which id landed where."""
    batch = indices.shape[:-1]
    n = math.prod(batch)
    ids = reshape(iota(INDEX, (n,)), batch)
    board = scatter(ew.full(_indexed_dims(operand, indices), -1, INDEX), indices, ids)
    return ew.eq(gather(board, indices), ids)


def _scatter_vjp(ct, primals, out, active):
    operand, indices, updates = primals
    ct_op = ct_up = None
    if active[0]:
        ct_op = scatter(ct, indices, ew.zeros_like(updates))
    if active[2]:
        ct_up = _mask_updates(_scatter_winners(operand, indices), gather(ct, indices))
    return ct_op, None, ct_up


def _scatter_add_jvp(primals, tangents, out):
    operand, indices, updates = primals
    t_op, _, t_up = tangents
    if t_up is None:
        return t_op
    return scatter_add(ew.zeros_like(operand) if t_op is None else t_op, indices, t_up)


def _scatter_add_vjp(ct, primals, out, active):
    operand, indices, updates = primals
    ct_up = None
    if active[2]:
        ct_up = _mask_updates(_in_bounds(indices, _indexed_dims(operand, indices)),
                              gather(ct, indices))
    return ct if active[0] else None, None, ct_up


def _scatter_mul_jvp(primals, tangents, out):
    # Assumes unique indices (as JAX): out[p] = operand[p] * updates[b] for p = indices[b].
    operand, indices, updates = primals
    t_op, _, t_up = tangents
    terms = []
    if t_op is not None:
        terms.append(scatter_mul(t_op, indices, updates))
    if t_up is not None:
        terms.append(scatter_add(ew.zeros_like(operand), indices,
                                 ew.mul(t_up, gather(operand, indices))))
    return terms[0] if len(terms) == 1 else ew.add(*terms)


def _scatter_mul_vjp(ct, primals, out, active):
    operand, indices, updates = primals
    ct_op = scatter_mul(ct, indices, updates) if active[0] else None
    ct_up = None
    if active[2]:
        ct_up = _mask_updates(_in_bounds(indices, _indexed_dims(operand, indices)),
                              gather(ew.mul(ct, operand), indices))
    return ct_op, None, ct_up


def _extremum_weights(operand, indices, updates, out):
    """Which inputs attained each output of scatter_min/max, and how many tied there: the
    derivative goes to the winner, split evenly among ties (as lax.max)."""
    dt = operand.dtype
    w_op = ew.convert_element_type(ew.eq(operand, out), dt)
    hit = ew.bitwise_and(ew.eq(updates, gather(out, indices)),
                         _broadcast_batch(_in_bounds(indices, _indexed_dims(operand, indices)),
                                          updates.shape))
    w_up = ew.convert_element_type(hit, dt)
    count = ew.add(w_op, scatter_add(ew.zeros_like(operand), indices, w_up))
    return w_op, w_up, count


def _broadcast_batch(mask, shape):
    return mask if mask.shape == tuple(shape) else broadcast_in_dim(mask, shape,
                                                                   tuple(range(mask.ndim)))


def _scatter_extremum_jvp(primals, tangents, out):
    operand, indices, updates = primals
    t_op, _, t_up = tangents
    w_op, w_up, count = _extremum_weights(operand, indices, updates, out)
    terms = []
    if t_op is not None:
        terms.append(ew.mul(t_op, w_op))
    if t_up is not None:
        terms.append(scatter_add(ew.zeros_like(operand), indices, ew.mul(t_up, w_up)))
    total = terms[0] if len(terms) == 1 else ew.add(*terms)
    return ew.div(total, count)


def _scatter_extremum_vjp(ct, primals, out, active):
    operand, indices, updates = primals
    w_op, w_up, count = _extremum_weights(operand, indices, updates, out)
    share = ew.div(ct, count)
    return (ew.mul(share, w_op) if active[0] else None, None,
            ew.mul(gather(share, indices), w_up) if active[2] else None)


def _scatter_primitive(name, mode, jvp, vjp, residuals):
    return Primitive(name, impl=_scatter_impl(mode), abstract_eval=_scatter_abstract(name),
                     jvp=jvp, vjp=vjp, residuals=residuals)


def _scatter_batch(p):
    def rule(vals, dims):
        operand, indices, updates = vals
        d_op, d_idx, d_up = dims
        size = batch_size(vals, dims)
        nb = indices.ndim - 1 - (d_idx is not None)
        if d_idx is None:
            # Shared indices: the batch axis is an unindexed axis of operand and updates.
            k = indices.shape[-1]
            operand = _insert_batch_axis(operand, d_op, k, size)
            updates = _insert_batch_axis(updates, d_up, nb, size)
            return bind(p, operand, indices, updates), k
        # Per-example indices: an iota column sends example i's updates to operand slice i.
        indices = _with_batch_column(move_to_front(indices, d_idx), size)
        return bind(p, at_front(operand, d_op, size), indices, at_front(updates, d_up, size)), 0
    return rule


def _insert_batch_axis(x, d, pos, size):
    """x with its batch axis at `pos`: moved there, or broadcast there if x is unbatched."""
    if d is not None:
        return move_axis(x, d, pos)
    shape = tuple(x.shape[:pos]) + (size,) + tuple(x.shape[pos:])
    return broadcast_in_dim(x, shape, tuple(i for i in range(len(shape)) if i != pos))


scatter_p = _scatter_primitive("scatter", "set", _scatter_jvp, _scatter_vjp, "cross")
scatter_add_p = _scatter_primitive("scatter_add", "add", _scatter_add_jvp, _scatter_add_vjp,
                                   "cross")
scatter_mul_p = _scatter_primitive("scatter_mul", "multiply", _scatter_mul_jvp, _scatter_mul_vjp,
                                   "in")
scatter_min_p = _scatter_primitive("scatter_min", "minimum", _scatter_extremum_jvp,
                                   _scatter_extremum_vjp, "inout")
scatter_max_p = _scatter_primitive("scatter_max", "maximum", _scatter_extremum_jvp,
                                   _scatter_extremum_vjp, "inout")
for _p in (scatter_p, scatter_add_p, scatter_mul_p, scatter_min_p, scatter_max_p):
    _p.batch = _scatter_batch(_p)
_SCATTERS = {"set": scatter_p, "add": scatter_add_p, "mul": scatter_mul_p, "min": scatter_min_p,
             "max": scatter_max_p}


def scatter(operand, indices, updates, mode="set"):
    """A copy of operand with updates[b] combined into operand[tuple(indices[b])].

    mode: "set" (duplicates: the last wins on NumPy, unspecified elsewhere), "add", "mul"
    (its derivative assumes unique indices, as JAX's), "min" or "max". Out-of-range updates are
    dropped. indices has shape batch + (k,); updates batch + operand.shape[k:].
    """
    if mode not in _SCATTERS:
        raise ValueError(f"scatter mode must be one of {sorted(_SCATTERS)}, got {mode!r}")
    return bind(_SCATTERS[mode], operand, indices, updates)


def scatter_add(operand, indices, updates):
    return bind(scatter_add_p, operand, indices, updates)


def scatter_mul(operand, indices, updates):
    return bind(scatter_mul_p, operand, indices, updates)


def scatter_min(operand, indices, updates):
    return bind(scatter_min_p, operand, indices, updates)


def scatter_max(operand, indices, updates):
    return bind(scatter_max_p, operand, indices, updates)


# ---------------------------------------------------------------------------------------------
# dynamic_slice, dynamic_update_slice: start indices are rank-0 integer operands (may be traced)

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
    return gather(move_to_front(operand, d_op), _with_batch_column(indices, size)), 0


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
    return scatter(operand, _with_batch_column(indices, size), update), 0


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


# ---------------------------------------------------------------------------------------------
# Cumulative reductions along an axis; `reverse` accumulates from the end.

def _shift(x, d, axis, fill):
    """x moved by d positions along axis (d > 0: toward higher indices), filled with `fill`."""
    config = [(0, 0, 0)] * x.ndim
    config[axis] = (d, -d, 0)
    return pad(x, np.array(fill, x.dtype), config)


def _linear_recurrence(a, b, axis, reverse):
    """s[i] = a[i] * s[i-1] + b[i] along axis with s[-1] = 0 (from the end when reverse), as an
    associative scan over affine maps in ceil(log2 n) doubling steps: exact, no division."""
    n, d, sign = a.shape[axis], 1, -1 if reverse else 1
    while d < n:
        b = ew.add(ew.mul(a, _shift(b, sign * d, axis, 0)), b)
        if 2 * d < n:
            a = ew.mul(a, _shift(a, sign * d, axis, 1))
        d *= 2
    return b


def _accumulate(xp, name, x, axis):
    """ufunc.accumulate where the namespace is NumPy; elsewhere (CuPy's accumulate covers few
    ufuncs) a log-depth scan with the same elementwise function."""
    fn = getattr(xp, name)
    if xp is np:
        return fn.accumulate(x, axis=axis)
    n, d = x.shape[axis], 1
    lead = (np.s_[:],) * axis
    while d < n:
        x = xp.concatenate([x[lead + (np.s_[:d], ...)], fn(x[lead + (np.s_[d:], ...)],
                                                            x[lead + (np.s_[:-d], ...)])],
                           axis=axis)
        d *= 2
    return x


def _cumulative(name, kinds, fn, residuals):
    def impl(xp, x, *, axis, reverse):
        if reverse:
            return xp.flip(fn(xp, xp.flip(x, axis), axis), axis)
        return fn(xp, x, axis)

    def abstract(x, *, axis, reverse):
        check_kind(name, x, kinds)
        if not 0 <= axis < x.ndim:
            raise shape_error(name, f"axis {axis} is out of bounds for {x.str_short()}")
        return x

    p = Primitive(name, impl=impl, abstract_eval=abstract, residuals=residuals)
    # The batch axis stays where it is; the scan axis shifts past it.
    p.batch = lambda vals, dims, *, axis, reverse: (
        bind(p, vals[0], axis=axis + (dims[0] <= axis), reverse=reverse), dims[0])
    return p


cumsum_p = _cumulative("cumsum", "iufc", lambda xp, x, axis: xp.cumsum(x, axis=axis,
                                                                      dtype=x.dtype), "none")
cumprod_p = _cumulative("cumprod", "iufc", lambda xp, x, axis: xp.cumprod(x, axis=axis,
                                                                         dtype=x.dtype), "inout")
cummax_p = _cumulative("cummax", "iuf", lambda xp, x, axis: _accumulate(xp, "maximum", x, axis),
                       "inout")
cummin_p = _cumulative("cummin", "iuf", lambda xp, x, axis: _accumulate(xp, "minimum", x, axis),
                       "inout")
cumlogsumexp_p = _cumulative("cumlogsumexp", "f",
                             lambda xp, x, axis: _accumulate(xp, "logaddexp", x, axis), "inout")

cumsum_p.jvp = lambda primals, tangents, out, **p: cumsum(tangents[0], **p)
cumsum_p.vjp = lambda ct, primals, out, active, *, axis, reverse: (
    cumsum(ct, axis, reverse=not reverse),)


def _cumprod_jvp(primals, tangents, out, *, axis, reverse):
    # t_out[i] = sum_{j<=i} t[j] * prod_{l<=i, l!=j} x[l] = x[i] * t_out[i-1] + excl[i] * t[i],
    # with excl[i] = prod_{l<i} x[l]: a linear recurrence, exact when x has zeros.
    x, t = primals[0], tangents[0]
    excl = _shift(out, -1 if reverse else 1, axis, 1)
    return _linear_recurrence(x, ew.mul(excl, t), axis, reverse)


def _cumprod_vjp(ct, primals, out, active, *, axis, reverse):
    # ct_x[j] = excl[j] * g[j], g[j] = ct[j] + x[j+1] * g[j+1]: the transposed recurrence.
    x = primals[0]
    step = -1 if reverse else 1
    excl = _shift(out, step, axis, 1)
    g = _linear_recurrence(_shift(x, -step, axis, 0), ct, axis, not reverse)
    return (ew.mul(excl, g),)


cumprod_p.jvp, cumprod_p.vjp = _cumprod_jvp, _cumprod_vjp


def _cumlogsumexp_jvp(primals, tangents, out, *, axis, reverse):
    # t_out[i] = sum_{j<=i} t[j] exp(x[j] - out[i])
    #          = exp(out[i-1] - out[i]) t_out[i-1] + exp(x[i] - out[i]) t[i]: factors <= 1.
    x, t = primals[0], tangents[0]
    a = ew.exp(ew.sub(_shift(out, -1 if reverse else 1, axis, -np.inf), out))
    return _linear_recurrence(a, ew.mul(ew.exp(ew.sub(x, out)), t), axis, reverse)


def _cumlogsumexp_vjp(ct, primals, out, active, *, axis, reverse):
    # ct_x[j] = exp(x[j] - out[j]) g[j], g[j] = ct[j] + exp(out[j] - out[j+1]) g[j+1].
    x = primals[0]
    step = -1 if reverse else 1
    a = ew.exp(ew.sub(_shift(out, step, axis, -np.inf), out))
    g = _linear_recurrence(_shift(a, -step, axis, 0), ct, axis, not reverse)
    return (ew.mul(ew.exp(ew.sub(x, out)), g),)


cumlogsumexp_p.jvp, cumlogsumexp_p.vjp = _cumlogsumexp_jvp, _cumlogsumexp_vjp


def _running_winner(x, out, axis, reverse, beats):
    """Indices along axis of the element that set each running max/min: the first, in scan order,
    to attain it (later ties do not take over)."""
    step = -1 if reverse else 1
    n = x.shape[axis]
    pos = iota(INDEX, x.shape, axis)
    first = ew.eq(pos, np.array(n - 1 if reverse else 0, INDEX))
    new = ew.bitwise_or(first, beats(x, _shift(out, step, axis, 0)))
    if reverse:  # the winner for position i is the smallest new-record index >= i
        return cummin(ew.select_n(new, ew.full(x.shape, n, INDEX), pos), axis, reverse=True)
    return cummax(ew.select_n(new, ew.full(x.shape, -1, INDEX), pos), axis)


def _cum_extremum_rules(p, beats):
    def jvp(primals, tangents, out, *, axis, reverse):
        r = _running_winner(primals[0], out, axis, reverse, beats)
        return gather(tangents[0], _along_axis_indices(r, axis))

    def vjp(ct, primals, out, active, *, axis, reverse):
        x = primals[0]
        r = _running_winner(x, out, axis, reverse, beats)
        return (scatter_add(ew.zeros_like(x), _along_axis_indices(r, axis), ct),)

    p.jvp, p.vjp = jvp, vjp


_cum_extremum_rules(cummax_p, ew.gt)
_cum_extremum_rules(cummin_p, ew.lt)


def _cumulative_fn(p):
    def fn(x, axis=0, reverse=False):
        return bind(p, x, axis=normalize_axis(axis, x.ndim), reverse=bool(reverse))
    fn.__name__ = p.name
    fn.__doc__ = (f"Running {p.name[3:]} of x along `axis` (from the end when `reverse`); "
                  "the result has x's shape.")
    return fn


cumsum = _cumulative_fn(cumsum_p)
cumprod = _cumulative_fn(cumprod_p)
cummax = _cumulative_fn(cummax_p)
cummin = _cumulative_fn(cummin_p)
cumlogsumexp = _cumulative_fn(cumlogsumexp_p)


# ---------------------------------------------------------------------------------------------
# sort: all operands reordered by the first num_keys of them, lexicographically

def _sort_abstract(*operands, dimension, is_stable, num_keys):
    if not operands or not 1 <= num_keys <= len(operands):
        raise shape_error("sort", f"needs 1 <= num_keys ({num_keys}) <= number of operands "
                          f"({len(operands)})")
    shape = operands[0].shape
    if any(o.shape != shape for o in operands):
        raise shape_error("sort", "operands must have equal shapes, got "
                          + ", ".join(o.str_short() for o in operands))
    if not 0 <= dimension < len(shape):
        raise shape_error("sort", f"dimension {dimension} is out of bounds for "
                          f"{operands[0].str_short()}")
    return tuple(operands)


def _sort_impl(xp, *operands, dimension, is_stable, num_keys):
    # Stable sorts from the least to the most significant key give the lexicographic order.
    # A complex key orders by its real part, then its imaginary part (as NumPy).
    keys = []
    for key in operands[:num_keys]:
        keys += [xp.real(key), xp.imag(key)] if dtype_of(key).kind == "c" else [key]
    perm = xp.argsort(keys[-1], axis=dimension, kind="stable")
    for key in reversed(keys[:-1]):
        order = xp.argsort(xp.take_along_axis(key, perm, axis=dimension), axis=dimension,
                           kind="stable")
        perm = xp.take_along_axis(perm, order, axis=dimension)
    return tuple(xp.take_along_axis(o, perm, axis=dimension) for o in operands)


def _sort_permutation(primals, dimension, num_keys):
    """Full gather indices of the sorting permutation: sort an iota alongside the keys."""
    keys = primals[:num_keys]
    pos = iota(INDEX, keys[0].shape, dimension)
    perm = bind(sort_p, *keys, pos, dimension=dimension, is_stable=True, num_keys=num_keys)[-1]
    return _along_axis_indices(perm, dimension)


def _sort_jvp(primals, tangents, out, *, dimension, is_stable, num_keys):
    idx = _sort_permutation(primals, dimension, num_keys)
    return tuple(None if t is None else gather(t, idx) for t in tangents)


def _sort_vjp(ct, primals, out, active, *, dimension, is_stable, num_keys):
    idx = _sort_permutation(primals, dimension, num_keys)
    return tuple(scatter_add(ew.zeros_like(p), idx, c)
                 if act and p.dtype.kind in "fc" else None
                 for p, c, act in zip(primals, ct, active))


sort_p = Primitive("sort", multiple_results=True, impl=_sort_impl, abstract_eval=_sort_abstract,
                   jvp=_sort_jvp, vjp=_sort_vjp, residuals="in")


def _sort_batch(vals, dims, *, dimension, is_stable, num_keys):
    batched = {d for d in dims if d is not None}
    if len(batched) == 1 and None not in dims:  # all batched along the same axis: leave it
        d = batched.pop()
    else:
        size = batch_size(vals, dims)
        vals, d = [at_front(v, vd, size) for v, vd in zip(vals, dims)], 0
    out = bind(sort_p, *vals, dimension=dimension + (d <= dimension), is_stable=is_stable,
               num_keys=num_keys)
    return out, (d,) * len(out)


sort_p.batch = _sort_batch


def sort(*operands, dimension=-1, is_stable=True, num_keys=1):
    """Sort operands along `dimension` by the first `num_keys` of them (lexicographically).

    sort(x) returns the sorted array; sort(x, y, ...) or sort([x, y, ...]) a tuple. Sorting is
    always stable (is_stable is accepted for JAX compatibility); NaNs sort last, as NumPy.
    """
    single = len(operands) == 1 and not isinstance(operands[0], (list, tuple))
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    dimension = normalize_axis(dimension, operands[0].ndim)
    out = bind(sort_p, *operands, dimension=dimension, is_stable=bool(is_stable),
               num_keys=int(num_keys))
    return out[0] if single else out


def argsort(x, dimension=-1, is_stable=True):
    """Indices (int64) that sort x along `dimension` (stable: ties keep their order)."""
    dimension = normalize_axis(dimension, x.ndim)
    return sort(x, iota(INDEX, x.shape, dimension), dimension=dimension, is_stable=is_stable)[1]


def top_k(x, k, *, axis=-1):
    """(values, int32 indices) of the k largest entries along `axis` (the last by default, as
    JAX's), largest first; ties go to the lower index. Values are differentiable (a gather)."""
    x = x if hasattr(x, "dtype") else np.asarray(x)
    if x.dtype.kind not in "iuf":
        raise TypeError(f"top_k needs an integer or floating operand, got {x.dtype}")
    axis = normalize_axis(axis, x.ndim)
    k = int(k)
    if not 0 <= k <= x.shape[axis]:
        raise ValueError(f"top_k: k={k} out of range for an axis of size {x.shape[axis]}")
    # Sort by a key that reverses the order: ~x is exact for all integers, -x for floats.
    key = ew.bitwise_not(x) if x.dtype.kind in "iu" else ew.neg(x)
    perm = sort(key, iota(np.int32, x.shape, axis), dimension=axis)[1]
    limit = x.shape[:axis] + (k,) + x.shape[axis + 1:]
    idx = slice(perm, (0,) * x.ndim, limit)
    return take_along_axis(x, idx, axis), idx
