"""Indexing primitives: gather and scatter (one primitive per combining mode), each defined once
with its shape rule, implementation, JVP, VJP and batching rule, and the index helpers the other
indexing-style primitives (dynamic slices, cumulative reductions, sort) build their rules from.

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
from .reductions import reduce_min
from .structural import broadcast_in_dim, concatenate, expand_dims, iota, reshape, reshape_array

__all__ = [
    "gather", "scatter", "scatter_add", "scatter_mul", "scatter_min", "scatter_max",
    "take_along_axis",
    "gather_p", "scatter_p", "scatter_add_p", "scatter_mul_p", "scatter_min_p", "scatter_max_p",
]

INDEX = np.int64  # dtype of the indices the indexing primitives make (argsort, top_k), as NumPy's


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
    lead = operand.shape[:k]
    if xp is np and all(lead) and operand.flags.c_contiguous \
            and np.can_cast(indices.dtype, np.intp):
        # one C call clamps every column and makes the flat position (JAX clamps too), one
        # `take` reads the rows of the flat view: 2k fewer passes than clamping each column
        lin = np.ravel_multi_index(tuple(indices[..., i] for i in range(k)), lead, mode="clip")
        return operand.reshape((math.prod(lead),) + operand.shape[k:]).take(lin, axis=0)
    # minimum/maximum rather than clip: the same clamp, without clip's Python-level overhead
    cols = tuple(xp.minimum(xp.maximum(indices[..., i], 0), operand.shape[i] - 1)
                 for i in range(k))
    if xp is np:
        return operand[cols]
    # Elsewhere one index array per call (all the Array API standard offers): a linear index
    # into the k leading axes, and `take` along the flattened axis.
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


def with_batch_column(indices, size):
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
    return gather(move_to_front(operand, d_op), with_batch_column(indices, size)), 0


gather_p.batch = _gather_batch


def gather(operand, indices):
    """result[b] = operand[tuple(indices[b])]: indices has shape batch + (k,), the result
    batch + operand.shape[k:]. Out-of-range indices are clamped into range."""
    return bind(gather_p, operand, indices)


def take_along_axis(x, indices, axis):
    """x's elements at `indices` along `axis` (indices has x's shape except along axis)."""
    axis = normalize_axis(axis, x.ndim)
    return gather(x, along_axis_indices(indices, axis))


def along_axis_indices(idx, axis):
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


# Up to this many updates of one index, a scatter-add of rows runs as that many indexed adds
# (about 15 µs each for 100 rows of 128) rather than summing each index's rows first
# (np.add.reduceat along the rows: 230-370 µs for 1024 rows of 128, whatever the repeats).
_SCATTER_ROUNDS = 16


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
    elif mode == "add" and len(flat) >= 256:
        # ufunc.at goes element by element and is several times slower: with distinct indices
        # (the cotangent of a gather of distinct positions) one indexed add is the same sum.
        # With repeats of whole rows (embedding gradients): where no index repeats often, one
        # indexed add per round, round r adding each index's r-th update (distinct indices):
        # np.add.at's order, so its result bit for bit; else each index's updates summed first
        order = np.argsort(flat, kind="stable")
        ordered = flat[order]
        new = np.concatenate(([True], ordered[1:] != ordered[:-1]))
        if new.all():
            view[flat] += upd
        elif upd.ndim > 1:
            starts = np.flatnonzero(new)
            repeats = np.diff(starts, append=len(flat))
            if repeats.max() <= _SCATTER_ROUNDS:
                rank = np.arange(len(flat)) - np.repeat(starts, repeats)
                for r in range(int(repeats.max())):
                    taken = order[rank == r]
                    view[flat[taken]] += upd[taken]
            else:
                view[ordered[starts]] += np.add.reduceat(upd[order], starts, axis=0)
        else:
            np.add.at(view, flat, upd)
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
        idx = reshape_array(xp, indices, (n, k))
        upd = reshape_array(xp, updates, (n,) + rest)
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


def _mul_update_weights(operand, indices, updates):
    """d out[p] / d updates[b] for p = indices[b]: operand[p] times the other updates at p.
    Duplicate indices multiply (out[p] = operand[p] * prod of the updates at p; JAX refuses
    their derivative). An update alone at its place gets operand[p] itself (no division, so
    higher derivatives stay exact); a shared place's product without updates[b] is found
    without dividing by a zero: with z zeros among the updates there, a nonzero update's weight
    is prod_nonzero / updates[b] when z == 0 (else 0), a zero update's prod_nonzero when z == 1
    (else 0)."""
    dt = operand.dtype
    none, one = ew.full(updates.shape, 0, dt), ew.full(updates.shape, 1, dt)
    zero = ew.eq(updates, none)
    hits = gather(scatter_add(ew.zeros_like(operand), indices, one), indices)
    zeros_at = gather(scatter_add(ew.zeros_like(operand), indices,
                                  ew.convert_element_type(zero, dt)), indices)
    alone = ew.eq(hits, one)
    # the divisor is 1 where the quotient is not used (no inf/NaN in its derivatives)
    nonzero = ew.select_n(ew.bitwise_or(zero, alone), updates, one)
    prod = gather(scatter_mul(operand, indices, nonzero), indices)
    if_nonzero = ew.select_n(ew.eq(zeros_at, none), none, ew.div(prod, nonzero))
    if_zero = ew.select_n(ew.eq(zeros_at, one), none, prod)
    shared = ew.select_n(zero, if_nonzero, if_zero)
    return ew.select_n(alone, shared, gather(operand, indices))


def _scatter_mul_jvp(primals, tangents, out):
    # out[p] = operand[p] * prod of updates[b] over p = indices[b] (duplicates multiply).
    operand, indices, updates = primals
    t_op, _, t_up = tangents
    terms = []
    if t_op is not None:
        terms.append(scatter_mul(t_op, indices, updates))
    if t_up is not None:
        terms.append(scatter_add(ew.zeros_like(operand), indices,
                                 ew.mul(t_up, _mul_update_weights(operand, indices, updates))))
    return terms[0] if len(terms) == 1 else ew.add(*terms)


def _scatter_mul_vjp(ct, primals, out, active):
    operand, indices, updates = primals
    ct_op = scatter_mul(ct, indices, updates) if active[0] else None
    ct_up = None
    if active[2]:
        ct_up = _mask_updates(_in_bounds(indices, _indexed_dims(operand, indices)),
                              ew.mul(gather(ct, indices),
                                     _mul_update_weights(operand, indices, updates)))
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
        indices = with_batch_column(move_to_front(indices, d_idx), size)
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
