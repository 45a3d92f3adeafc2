"""Helpers for batching rules (vmap): moving and materializing the batch axis.

A batching rule gets the operands' values and batch dims (`None` = not batched) and returns the
output and its batch dim. The helpers here keep the rules short and produce the programs a person
would write (a transpose or a broadcast at most, never a loop over examples).
"""

from __future__ import annotations


def batch_size(vals, dims):
    for v, d in zip(vals, dims):
        if d is not None:
            return v.shape[d]
    raise ValueError("batching rule called with no batched operand")


def move_to_front(x, d):
    """x with its batch axis d moved to position 0."""
    from .structural import transpose
    if d == 0:
        return x
    perm = (d,) + tuple(i for i in range(x.ndim) if i != d)
    return transpose(x, perm)


def move_axis(x, src, dst):
    from .structural import transpose
    if src == dst:
        return x
    order = [i for i in range(x.ndim) if i != src]
    order.insert(dst, src)
    return transpose(x, tuple(order))


def at_front(x, d, size):
    """x with a batch axis of `size` at position 0: moved there, or broadcast if unbatched."""
    from .structural import broadcast_in_dim
    if d is None:
        return broadcast_in_dim(x, (size,) + tuple(x.shape), tuple(range(1, x.ndim + 1)))
    return move_to_front(x, d)


def elementwise_batch(prim, scalar_ok=None):
    """Batching rule for elementwise primitives whose operands share a shape, or are rank 0.

    scalar_ok: the operand positions that may stay rank 0 beside a batched operand (default: all,
    as for binary primitives; select_n allows it for its predicate only).
    """
    from ..core import bind

    def rule(vals, dims, **params):
        logical = [v.ndim - (d is not None) for v, d in zip(vals, dims)]
        batched_dims = {d for d in dims if d is not None}
        batched_ranks = {r for r, d in zip(logical, dims) if d is not None}
        max_rank = max(logical)
        keep = [r == 0 and (scalar_ok is None or i in scalar_ok) for i, r in enumerate(logical)]
        if (len(batched_dims) == 1 and batched_ranks == {max_rank}
                and all(k for k, d in zip(keep, dims) if d is None)):
            return bind(prim, *vals, **params), dims[[d is not None for d in dims].index(True)]
        size = batch_size(vals, dims)
        full = next(tuple(v.shape[1:]) if d == 0 else tuple(s for i, s in enumerate(v.shape)
                                                            if i != d)
                    if d is not None else tuple(v.shape)
                    for v, d, r in zip(vals, dims, logical) if r == max_rank)
        from .structural import broadcast_in_dim
        new = []
        for v, d, r, k in zip(vals, dims, logical, keep):
            if d is None:
                if k:
                    new.append(v)
                else:
                    v = at_front(v, None, size)
                    new.append(v if r == max_rank else broadcast_in_dim(v, (size,) + full, (0,)))
            else:
                v = move_to_front(v, d)
                if r < max_rank:
                    v = broadcast_in_dim(v, (size,) + full, (0,))
                new.append(v)
        return bind(prim, *new, **params), 0

    return rule
