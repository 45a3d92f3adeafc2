"""Collectives over named axes: psum, pmean, pmax, pmin, psum_scatter, all_gather, axis_index.

An axis name is bound by `fg.vmap(..., axis_name=...)`. The collectives are backend-neutral
primitives: under the vmap that binds their name, the batching rule reduces over the batch axis;
a value not batched along the name (a constant across the axis) is handled by the eager
implementation using the axis size from the axis environment.

Process axes: `process_axis(name, group)` (used by fg.distributed.data_parallel) binds a name to a
process group, any object with `rank`, `size`, `allreduce(x, op)` (op: "sum", "max", "min"),
`allgather(x) -> list of arrays` and `reduce_scatter(x)` (for psum_scatter). The eager
implementations then call the group (an MPI or NCCL allreduce/allgather); under jit the collective
stays one equation of the program and the generated code calls the same implementation. Nothing here
knows about MPI. Collectives are `effectful`, so jit's passes never fold (run at compile time),
drop, merge or reorder them: every process must issue the same collectives in the same order.
"""

from __future__ import annotations

import numpy as np

from ..core import JaxprTrace, Primitive, ShapedArray, Tracer, bind, current_traces
from ..core.trace import axis_frame, axis_group, axis_size  # axis_size: also fg.lax's
from ..interpreters.batching import BatchTrace
from . import elementwise as ew
from . import reductions
from . import structural as st
from ._batching import move_axis, move_to_front
from ._util import check_kind
from .dynamic_slicing import dynamic_slice


def process_axis(name, group):
    """Bind axis `name` to a process group for the collectives run inside this context."""
    return axis_frame(name, group.size, group=group)


def _collective(name, eager, reduce, jvp, vjp, residuals="none"):
    def impl(xp, x, *, axis_name):
        group = axis_group(axis_name)
        if group is not None:  # a process axis: every process contributes its x
            return group.allreduce(x, name[1:])
        return eager(x, axis_size(axis_name))

    p = Primitive(name, abstract_eval=lambda x, *, axis_name: x, residuals=residuals,
                  impl=impl, jvp=jvp, vjp=vjp)
    p.collective = p.effectful = True

    def batch(vals, dims, *, frame, axis_name):
        x, d = vals[0], dims[0]
        if frame.axis_name != axis_name:
            return bind(p, x, axis_name=axis_name), d
        return reduce(x, d, frame.axis_size), None

    p.batch = batch
    return p


psum_p = _collective(
    "psum", lambda x, n: x * n,  # a Python int keeps x's dtype (NEP 50)
    lambda x, d, n: reductions.reduce_sum(x, (d,)),
    jvp=lambda primals, tangents, out, *, axis_name: psum(tangents[0], axis_name),
    vjp=lambda ct, primals, out, active, *, axis_name: (psum(ct, axis_name),))
pmax_p = _collective(
    "pmax", lambda x, n: x, lambda x, d, n: reductions.reduce_max(x, (d,)),
    jvp=lambda primals, tangents, out, *, axis_name: psum(
        ew.mul(tangents[0], _winner_weights(primals[0], out, axis_name)), axis_name),
    vjp=lambda ct, primals, out, active, *, axis_name: (
        ew.mul(psum(ct, axis_name), _winner_weights(primals[0], out, axis_name)),),
    residuals="inout")
pmin_p = _collective(
    "pmin", lambda x, n: x, lambda x, d, n: reductions.reduce_min(x, (d,)),
    jvp=pmax_p.jvp, vjp=pmax_p.vjp, residuals="inout")


def _ordered_abstract(name):
    def rule(x, *, axis_name):
        check_kind(name, x, "iufb")  # no order on complex numbers (as reduce_max)
        return x
    return rule


pmax_p.abstract_eval = _ordered_abstract("pmax")
pmin_p.abstract_eval = _ordered_abstract("pmin")


def _winner_weights(x, out, axis_name):
    """d out / d x for pmax/pmin: the lanes holding the extremum, split evenly among ties."""
    hit = ew.convert_element_type(ew.eq(x, out), x.dtype)
    return ew.div(hit, psum(hit, axis_name))


def _bind(prim, x, **params):
    """bind, except that a collective over a process axis whose operand is a constant (no
    tracer) inside a function being traced for jit is staged into that program: every call must
    make it, on every rank alike. Evaluated once at trace time, it would bake one result into
    the program, and a rank whose operand happens to be traced would make calls that no other
    rank matches. (A constant along a vmap axis is handled by the eager implementations.)"""
    if type(x) is not Tracer and axis_group(params["axis_name"]) is not None:
        stagers = [t for t in current_traces() if isinstance(t, JaxprTrace)]
        if stagers:
            return stagers[-1].process(prim, [stagers[-1].to_tracer(x)], params)
    return bind(prim, x, **params)


def psum(x, axis_name):
    """Sum of x over the named axis; every lane gets the total."""
    return _bind(psum_p, x, axis_name=axis_name)


def pmean(x, axis_name):
    """Mean of x over the named axis."""
    total = psum(x, axis_name)
    return ew.div(total, np.array(axis_size(axis_name), total.dtype))


def pmax(x, axis_name):
    return _bind(pmax_p, x, axis_name=axis_name)


def pmin(x, axis_name):
    return _bind(pmin_p, x, axis_name=axis_name)


def _all_gather_abstract(x, *, axis_name, axis):
    shape = list(x.shape)
    shape.insert(axis, axis_size(axis_name))
    return ShapedArray(shape, x.dtype, x.weak_type)


def _all_gather_batch(vals, dims, *, frame, axis_name, axis):
    x, d = vals[0], dims[0]
    if frame.axis_name != axis_name:
        return bind(all_gather_p, move_to_front(x, d), axis_name=axis_name, axis=axis + 1), 0
    return move_axis(x, d, axis), None


def _all_gather_eager(xp, x, *, axis_name, axis):
    group = axis_group(axis_name)
    if group is not None:
        got = group.allgather(x)  # a list, or one array with the ranks along axis 0
        if isinstance(got, (list, tuple)):
            return xp.stack(got, axis=axis)
        order = list(range(1, got.ndim))
        order.insert(axis, 0)
        return xp.transpose(got, order)
    n = axis_size(axis_name)
    return xp.stack([x] * n, axis=axis)


def _all_gather_vjp(ct, primals, out, active, *, axis_name, axis):
    total = psum(ct, axis_name)
    idx = axis_index(axis_name)
    starts = [np.zeros((), np.int64)] * total.ndim
    starts[axis] = idx
    sizes = list(total.shape)
    sizes[axis] = 1
    piece = dynamic_slice(total, *starts, slice_sizes=tuple(sizes), allow_negative_indices=False)
    return (st.squeeze(piece, (axis,)),)


all_gather_p = Primitive("all_gather", impl=_all_gather_eager, abstract_eval=_all_gather_abstract,
                         residuals="none", vjp=_all_gather_vjp,
                         jvp=lambda primals, tangents, out, *, axis_name, axis: all_gather(
                             tangents[0], axis_name, axis=axis))
all_gather_p.collective = all_gather_p.effectful = True
all_gather_p.batch = _all_gather_batch


def all_gather(x, axis_name, axis=0):
    """The values of x from every lane of the named axis, stacked along `axis`."""
    return _bind(all_gather_p, x, axis_name=axis_name, axis=int(axis))


def _scatter_shape(shape, n, d, tiled, who="psum_scatter"):
    if not 0 <= d < len(shape):
        raise ValueError(f"{who}: scatter_dimension={d} is out of range for an operand of shape "
                         f"{tuple(shape)}")
    if tiled:
        if shape[d] % n:
            raise ValueError(f"{who}: with tiled=True, dimension {d} of shape {tuple(shape)} "
                             f"must be a multiple of the axis size {n}")
        return tuple(shape[:d]) + (shape[d] // n,) + tuple(shape[d + 1:])
    if shape[d] != n:
        raise ValueError(f"{who}: dimension {d} of shape {tuple(shape)} must equal the axis size "
                         f"{n} (or pass tiled=True to split it into {n} blocks)")
    return tuple(shape[:d]) + tuple(shape[d + 1:])


def _psum_scatter_abstract(x, *, axis_name, scatter_dimension, tiled):
    shape = _scatter_shape(x.shape, axis_size(axis_name), scatter_dimension, tiled)
    return ShapedArray(shape, x.dtype, x.weak_type)


def _psum_scatter_eager(xp, x, *, axis_name, scatter_dimension, tiled):
    group = axis_group(axis_name)
    if group is None:  # unreachable: psum_scatter makes the operand vary along a vmap axis
        raise NameError(f"psum_scatter({axis_name!r}) needs an enclosing vmap over that axis")
    n, d = group.size, scatter_dimension
    out_shape = _scatter_shape(x.shape, n, d, tiled)
    order = [d] + [a for a in range(x.ndim) if a != d]
    moved = xp.transpose(x, order)
    mine = group.reduce_scatter(xp.reshape(moved, (-1,)))  # block i of the flat buffer: lane i's
    if not tiled:
        return xp.reshape(mine, out_shape)
    back = [order.index(a) for a in range(x.ndim)]
    return xp.transpose(xp.reshape(mine, (out_shape[d],) + tuple(moved.shape[1:])), back)


def _psum_scatter_batch(vals, dims, *, frame, axis_name, scatter_dimension, tiled):
    x, b = vals[0], dims[0]
    if frame.axis_name != axis_name:
        return bind(psum_scatter_p, move_to_front(x, b), axis_name=axis_name,
                    scatter_dimension=scatter_dimension + 1, tiled=tiled), 0
    total = reductions.reduce_sum(x, (b,))  # the sum over lanes; lane i keeps block i of it
    n, d = frame.axis_size, scatter_dimension
    _scatter_shape(total.shape, n, d, tiled)
    if tiled:
        shape = tuple(total.shape)
        total = st.reshape(total, shape[:d] + (n, shape[d] // n) + shape[d + 1:])
    return total, d


def _psum_scatter_vjp(ct, primals, out, active, *, axis_name, scatter_dimension, tiled):
    full = all_gather(ct, axis_name, axis=scatter_dimension)
    if tiled:
        shape = tuple(full.shape)
        d = scatter_dimension
        full = st.reshape(full, shape[:d] + (shape[d] * shape[d + 1],) + shape[d + 2:])
    return (full,)


psum_scatter_p = Primitive(
    "psum_scatter", impl=_psum_scatter_eager, abstract_eval=_psum_scatter_abstract,
    residuals="none", vjp=_psum_scatter_vjp,
    jvp=lambda primals, tangents, out, *, axis_name, scatter_dimension, tiled: psum_scatter(
        tangents[0], axis_name, scatter_dimension=scatter_dimension, tiled=tiled))
psum_scatter_p.collective = psum_scatter_p.effectful = True
psum_scatter_p.batch = _psum_scatter_batch


def _batched_along(x, axis_name):
    """Whether x is a value of the vmap that binds `axis_name`, batched along it."""
    return (isinstance(x, Tracer) and getattr(x._trace, "axis_name", None) == axis_name
            and x.aux is not None)


def psum_scatter(x, axis_name, *, scatter_dimension=0, tiled=False):
    """The sum of x over the named axis, of which each lane keeps one block (a reduce-scatter, as
    jax.lax.psum_scatter): lane i gets block i along `scatter_dimension`. That dimension must
    equal the axis size (and is dropped), or with `tiled=True` be a multiple of it (and shrinks
    by that factor). Over a process axis this is one reduce-scatter: half the traffic of psum.
    """
    d = int(scatter_dimension)
    if axis_group(axis_name) is None and not _batched_along(x, axis_name):
        # Lanes differ in the block they keep: a value constant along the axis varies first.
        dtype = x.dtype if hasattr(x, "dtype") else np.result_type(x)
        lane = ew.convert_element_type(axis_index(axis_name), dtype)
        x = ew.add(x, ew.mul(lane, np.zeros((), dtype)))
    return _bind(psum_scatter_p, x, axis_name=axis_name, scatter_dimension=d, tiled=bool(tiled))


def axis_index(axis_name):
    """This lane's position along the named axis (0 ... size-1), as an int32 scalar."""
    for trace in reversed(current_traces()):
        if isinstance(trace, BatchTrace) and trace.axis_name == axis_name:
            idx = st.iota(np.int32, trace.axis_size)
            return Tracer(trace, ShapedArray((), np.int32), idx, 0)
    group = axis_group(axis_name)  # raises the unbound-name error
    if group is not None:
        return np.asarray(group.rank, np.int32)
    raise NameError(f"axis_index({axis_name!r}) needs an enclosing vmap over that axis")
