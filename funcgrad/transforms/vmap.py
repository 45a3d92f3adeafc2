"""vmap: vectorizing a function over an axis of its arguments.

The function runs once under a `BatchTrace` (funcgrad/interpreters/batching.py), which applies
each primitive's batching rule to whole batches: a batched matmul is one dot_general with a batch
dimension, never a loop. Tracers are abstract to Python: a batch of values has no single truth
value, so `if x > 0` raises ConcretizationError.
"""

from __future__ import annotations

import numpy as np

from .. import tree_util
from ..core import Tracer, as_value, new_trace, user_line
from ..core.trace import axis_frame
from ..interpreters.batching import BatchTrace, move_axis
from ..lax import broadcast_in_dim
from ._util import fun_name


def _flat_axes(axes, tree, what, fun):
    """One axis (or None) per leaf of `tree`, from an int/None or a pytree prefix of it."""
    if axes is None or isinstance(axes, int):
        return [axes] * tree.num_leaves
    try:
        return tree_util.tree_broadcast_prefix(axes, tree_util.tree_unflatten(
            tree, [0] * tree.num_leaves))
    except ValueError as e:
        raise ValueError(f"vmap({fun_name(fun)}): {what} must be an int, None, or a pytree "
                         f"prefix of the {'arguments' if what == 'in_axes' else 'outputs'}: "
                         f"{e}") from None


def vmap(fun, in_axes=0, out_axes=0, axis_size=None, axis_name=None):
    """Vectorize `fun` over a new leading (or `in_axes`) axis of its arguments.

    in_axes: an int, None (not batched), or a pytree prefix of the positional arguments (a
    tuple with one entry per argument; a list is an error, as in JAX). out_axes likewise for
    the outputs; an unbatched output is broadcast when out_axes asks for a batch axis.
    axis_size is needed when no input is batched; axis_name names the axis for collectives
    (fg.lax.psum, pmean, ...).
    """
    if isinstance(in_axes, list):  # as JAX: a list is never a prefix of the argument tuple
        raise TypeError(f"vmap({fun_name(fun)}): in_axes must be an int, None, or a tuple with "
                        f"one entry per positional argument, got the list {in_axes!r}"
                        f"{user_line()}; write it as a tuple: in_axes={tuple(in_axes)!r}")

    def batched_fun(*args, **kwargs):
        if isinstance(in_axes, tuple) and len(in_axes) != len(args):
            raise ValueError(f"vmap({fun_name(fun)}): in_axes is a tuple of length "
                             f"{len(in_axes)} but the function was called with {len(args)} "
                             f"positional arguments{user_line()}; give one entry per argument "
                             "(None for an unbatched one).")
        flat, in_tree = tree_util.tree_flatten(args)
        axes = _flat_axes(in_axes if isinstance(in_axes, tuple) else in_axes, in_tree,
                          "in_axes", fun)
        paths = [tree_util.keystr(p) for p, _ in tree_util.tree_flatten_with_path(args)[0]]
        norm, sizes = [], []
        for x, a, path in zip(flat, axes, paths):
            if a is None:
                norm.append(None)
                continue
            if not isinstance(a, int) or isinstance(a, bool):
                raise TypeError(f"vmap: in_axes entries must be ints or None, got {a!r} for "
                                f"argument {path}.")
            ndim = np.ndim(x) if type(x) is not Tracer else x.ndim
            if not -ndim <= a < ndim:
                raise ValueError(f"vmap({fun_name(fun)}): in_axes {a} is out of range for "
                                 f"argument {path} of rank {ndim}{user_line()}.")
            a %= ndim
            norm.append(a)
            sizes.append((path, a, (np.shape(x) if type(x) is not Tracer else x.shape)[a]))
        kw_flat, kw_tree = tree_util.tree_flatten(kwargs)
        for (p, _), x in zip(tree_util.tree_flatten_with_path(kwargs)[0], kw_flat):
            shape = np.shape(x) if type(x) is not Tracer else x.shape
            if not shape:  # keyword arguments are batched along axis 0, as in JAX
                raise ValueError(f"vmap({fun_name(fun)}): keyword argument "
                                 f"{tree_util.keystr(p)} is rank 0, but keyword arguments are "
                                 f"batched along axis 0{user_line()}; pass it positionally "
                                 "with in_axes None to leave it unbatched.")
            sizes.append((f"{tree_util.keystr(p)} (keyword)", 0, shape[0]))
        size = _axis_size(fun, sizes, axis_size)
        with axis_frame(axis_name, size), new_trace(BatchTrace, size, axis_name) as trace:
            tracers = [trace.new_arg(as_value(x), a) for x, a in zip(flat, norm)]
            kw_tracers = [trace.new_arg(as_value(x), 0) for x in kw_flat]
            out = fun(*tree_util.tree_unflatten(in_tree, tracers),
                      **tree_util.tree_unflatten(kw_tree, kw_tracers))
            out_flat, out_tree = tree_util.tree_flatten(out)
            o_axes = _flat_axes(out_axes, out_tree, "out_axes", fun)
            results = []
            for o, oa in zip(out_flat, o_axes):
                t = trace.to_tracer(o)
                results.append(_place_out(t.val, t.aux, oa, size, fun))
        return tree_util.tree_unflatten(out_tree, results)

    batched_fun.__name__ = f"vmap({fun_name(fun)})"
    return batched_fun


def _axis_size(fun, sizes, axis_size):
    distinct = {s for _, _, s in sizes}
    if axis_size is not None:
        distinct.add(int(axis_size))
    if not distinct:
        raise ValueError(f"vmap({fun_name(fun)}): no argument is batched (all in_axes are None), "
                         "so the batch size is unknown: pass axis_size=N.")
    if len(distinct) > 1:
        listing = "; ".join(f"argument {p} has size {s} along axis {a}" for p, a, s in sizes)
        extra = f"; axis_size={axis_size}" if axis_size is not None else ""
        raise ValueError(f"vmap({fun_name(fun)}) got inconsistent sizes for the mapped axis: "
                         f"{listing}{extra}{user_line()}. All batched arguments must have the "
                         "same size along their in_axes.")
    return distinct.pop()


def _place_out(val, dim, out_axis, size, fun):
    if out_axis is None:
        if dim is not None:
            raise ValueError(f"vmap({fun_name(fun)}): out_axes=None for an output that depends "
                             "on the batched inputs; only unbatched outputs can have out_axes "
                             "None.")
        return val
    ndim = (val.ndim if hasattr(val, "ndim") else np.ndim(val)) + (dim is None)
    if not isinstance(out_axis, int) or isinstance(out_axis, bool):
        raise TypeError(f"vmap({fun_name(fun)}): out_axes entries must be ints or None, got "
                        f"{out_axis!r}.")
    if not -ndim <= out_axis < ndim:
        raise ValueError(f"vmap({fun_name(fun)}): out_axes {out_axis} is out of range for an "
                         f"output of rank {ndim} (batch axis included).")
    out_axis %= ndim
    if dim is None:
        shape = tuple(np.shape(val) if type(val) is not Tracer else val.shape)
        new_shape = shape[:out_axis] + (size,) + shape[out_axis:]
        dims = tuple(i for i in range(len(new_shape)) if i != out_axis)
        return broadcast_in_dim(val, new_shape, dims)
    return move_axis(val, dim, out_axis)
