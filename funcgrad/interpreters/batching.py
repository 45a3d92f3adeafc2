"""Batching as a trace: each `BatchTracer` value holds the batched array and where its batch axis
is (`Tracer.aux`; None = not batched), and `batch_jaxpr`, the batching of a whole program.

A `BatchTrace` applies each primitive's batching rule (beside its definition in funcgrad/lax) to
the batched values, so a batched function runs once on whole batches: a batched matmul is one
dot_general with a batch dimension, never a loop. The values live at the level below, so
batching nests with itself and with every other transform. Tracers are abstract to Python: a
batch of values has no single truth value. The public wrapper, fg.vmap, is in
funcgrad/transforms/vmap.py.
"""

from __future__ import annotations

from ..core import Trace, Tracer, as_value, eval_jaxpr, get_aval, new_trace
from . import ops
from .programs import trace_flat


class BatchTrace(Trace):
    name = "vmap"

    def __init__(self, level, axis_size, axis_name):
        super().__init__(level)
        self.axis_size = axis_size
        self.axis_name = axis_name

    def new_arg(self, val, dim):
        aval = get_aval(val) if type(val) is not Tracer else val.aval
        if dim is not None:
            shape = aval.shape[:dim] + aval.shape[dim + 1:]
            aval = aval.update(shape=shape)
        return Tracer(self, aval, val, dim)

    def lift(self, x):
        return Tracer(self, get_aval(x), as_value(x), None)

    def process(self, prim, tracers, params):
        vals = [t.val for t in tracers]
        dims = [t.aux for t in tracers]
        if all(d is None for d in dims):
            out, out_dim = prim.bind(*vals, **params), None
            if prim.multiple_results:
                out_dim = (None,) * len(out)
        else:
            if prim.batch is None:
                raise NotImplementedError(f"vmap: primitive {prim.name} has no batching rule")
            if getattr(prim, "collective", False):
                out, out_dim = prim.batch(vals, dims, frame=self, **params)
            else:
                out, out_dim = prim.batch(vals, dims, **params)
        if prim.multiple_results:
            return tuple(self.out_tracer(o, d) for o, d in zip(out, out_dim))
        return self.out_tracer(out, out_dim)

    def out_tracer(self, val, dim):
        """A tracer of this trace for a batched value with its batch axis at `dim`."""
        aval = get_aval(val) if type(val) is not Tracer else val.aval
        if dim is not None:
            aval = aval.update(shape=aval.shape[:dim] + aval.shape[dim + 1:])
        return Tracer(self, aval, val, dim)


# ---------------------------------------------------------------------------------------------
# Moving the batch axis

def move_to_front(x, d):
    """x with its batch axis d moved to position 0."""
    if d == 0:
        return x
    perm = (d,) + tuple(i for i in range(x.ndim) if i != d)
    return ops.transpose(x, perm)


def move_axis(x, src, dst):
    """x with axis `src` moved to position `dst`."""
    if src == dst:
        return x
    order = [i for i in range(x.ndim) if i != src]
    order.insert(dst, src)
    return ops.transpose(x, tuple(order))


def at_front(x, d, size):
    """x with a batch axis of `size` at position 0: moved there, or broadcast if unbatched."""
    if d is None:
        return ops.broadcast_in_dim(x, (size,) + tuple(x.shape), tuple(range(1, x.ndim + 1)))
    return move_to_front(x, d)


# ---------------------------------------------------------------------------------------------
# Batching a function or a program

def batch_fun(fun, args, dims, size, axis_name=None):
    """Run `fun(*args) -> flat list` batched: args[i] carries its batch axis at dims[i] (None =
    not batched). Returns (outputs, their batch dims)."""
    with new_trace(BatchTrace, size, axis_name) as trace:
        tracers = [trace.new_arg(a, d) for a, d in zip(args, dims)]
        outs = [trace.to_tracer(o) for o in fun(*tracers)]
        return [o.val for o in outs], [o.aux for o in outs]


def batch_jaxpr(closed, in_batched, size, instantiate):
    """vmap of a program whose batched inputs carry the batch axis in front. Returns the batched
    program (batched outputs in front), its consts, and which outputs are batched."""
    avals = [a.update(shape=(size,) + a.shape) if b else a
             for a, b in zip(closed.in_avals, in_batched)]
    if isinstance(instantiate, bool):
        instantiate = [instantiate] * len(closed.out_avals)
    box = {}

    def fun(*args):
        with new_trace(BatchTrace, size, None) as trace:
            tracers = [trace.new_arg(a, 0 if b else None) for a, b in zip(args, in_batched)]
            outs = [trace.to_tracer(o) for o in eval_jaxpr(closed.jaxpr, closed.consts, *tracers)]
            pairs = [(o.val, o.aux) for o in outs]
        res, flags = [], []
        for (v, d), inst in zip(pairs, instantiate):
            if d is None and not inst:
                res.append(v)
                flags.append(False)
            else:
                res.append(at_front(v, d, size))
                flags.append(True)
        box["b"] = flags
        return res

    bclosed, consts = trace_flat(fun, avals, "vmap")
    return bclosed, consts, box["b"]
