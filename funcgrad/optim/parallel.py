"""Optimizers across processes: the process axis of a sharded train step, and averaging
updates over the data-parallel axis.

Sharded training (`fg.distributed.make_train_step(..., shard=...)`) runs `update` on each rank's
slice of every leaf. Elementwise rules need nothing for that; a transformation that reduces over
the elements of a tree (a norm, a mean, a count of non-finite values) passes its local result
through `shard_sum`, which adds up the ranks' parts when sharded (as `global_norm` does), and
one whose state or statistics depend on a leaf's whole shape asks `whole_shape` (the sharded step
names the whole leaf behind each parameter slice with `shard_slices`); `leaf_mean` and
`whole_mean` are the means over whole leaves built on them. `pmean_updates` averages the
updates over a named (data-parallel) axis.
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np

from .. import lax as _lax
from .. import numpy as fnp
from .. import tree_util as tu
from .base import EmptyState, GradientTransformation, checked_transformation

__all__ = ["SHARD_AXIS", "shard_sum", "shard_slices", "whole_shape", "pmean_updates"]


# The process axis over which a sharded train step splits every leaf between ranks.
SHARD_AXIS = "optim_shards"


def _sharded():
    try:
        _lax.axis_size(SHARD_AXIS)
    except NameError:
        return False
    return True


def shard_sum(x):
    """`x` summed over the ranks of a sharded train step, each of which updates a slice of every
    leaf (fg.distributed.make_train_step(..., shard=...) binds `SHARD_AXIS`); `x` itself
    otherwise. Reductions over the elements of the updates go through it to stay exact."""
    return _lax.psum(x, SHARD_AXIS) if _sharded() else x


def leaf_mean(x):
    """fnp.mean(x) of a whole leaf; under a sharded step, over every rank's slice of it."""
    if not _sharded():
        return fnp.mean(x)
    wide = np.promote_types(x.dtype, np.float32)  # the element count, exact enough
    total = shard_sum(fnp.stack([fnp.sum(x, dtype=wide), fnp.asarray(x.size, wide)]))
    return fnp.asarray(total[0] / total[1], x.dtype)


_slices = threading.local()  # .known: the stack of shard_slices contexts


@contextlib.contextmanager
def shard_slices(slices, wholes):
    """Within this context each array of `slices` (the parameter slices a sharded train step
    passes to `init` and `update`) is known as a slice of a whole leaf: `wholes` gives, per
    slice, (the whole leaf's shape, the axis it is cut along, or None for a leaf passed whole).
    Transformations ask `whole_shape(param)`."""
    stack = _slices.__dict__.setdefault("known", [])
    stack.append({id(x): (x, tuple(shape), axis) for x, (shape, axis) in zip(slices, wholes)})
    try:
        yield
    finally:
        stack.pop()


def whole_shape(param):
    """(the shape of the whole leaf that `param` is a slice of, the axis it is cut along or None):
    `(param.shape, None)` outside a sharded train step. A transformation whose state or
    statistics depend on a leaf's shape (Adafactor's factoring) decides from the whole shape."""
    stack = getattr(_slices, "known", None)
    if not stack:
        return tuple(np.shape(param)), None
    for known in reversed(stack):
        hit = known.get(id(param))
        if hit is not None and hit[0] is param:
            return hit[1], hit[2]
    raise ValueError(
        f"optim: a parameter of shape {tuple(np.shape(param))} reached a transformation under a "
        "sharded train step, but it is not one of the parameter slices the step passed in (a "
        "transformation replaced the params it hands on); transformations that depend on a "
        "leaf's whole shape (scale_by_factored_rms) need the params as given")


def whole_mean(x, axis, cut, size, keepdims=False):
    """fnp.mean(x, axis) of the whole array that `x` is a slice of, cut along axis `cut`
    (None: x is whole) and `size` long along `axis`: over the ranks' slices (`shard_sum`) when
    the cut is along `axis`."""
    if cut != axis:
        return fnp.mean(x, axis=axis, keepdims=keepdims)
    wide = np.promote_types(x.dtype, np.float32)
    total = shard_sum(fnp.sum(x, axis=axis, keepdims=keepdims, dtype=wide))
    return fnp.asarray(total / size, x.dtype)


def pmean_updates(axis_name="data") -> GradientTransformation:
    """Average the updates (gradients) over the named axis: the leaves of each dtype flattened
    into one buffer and averaged with one `lax.pmean` (under `distributed.data_parallel` one MPI
    allreduce per dtype, as `distributed.fused_pmean`). Inside `MultiSteps` it runs once per
    accumulated step, on the accumulated gradients."""

    def update(updates, state, params=None):
        leaves, treedef = tu.tree_flatten(updates)
        out = list(leaves)
        by_dtype = {}
        for i, x in enumerate(leaves):
            by_dtype.setdefault(np.dtype(x.dtype), []).append(i)
        for idx in by_dtype.values():
            buf = _lax.pmean(fnp.concatenate([fnp.ravel(leaves[i]) for i in idx]), axis_name)
            start = 0
            for i in idx:
                n = int(np.prod(np.shape(leaves[i])))
                out[i] = fnp.reshape(buf[start:start + n], np.shape(leaves[i]))
                start += n
        return tu.tree_unflatten(treedef, out), state

    return checked_transformation(lambda params: EmptyState(), update)
