"""Forward mode as a trace: `JvpTrace` carries, beside each value, its tangent (`Tracer.aux`;
None is a symbolic zero), and `jvp_jaxpr`, the forward mode of a whole program.

Each primitive's JVP rule computes the output tangent with primitives, at the level below, so
forward mode nests with itself and with reverse mode. The public wrappers (fg.jvp, linearize,
jacfwd, hessian) are in funcgrad/transforms/jvp.py.
"""

from __future__ import annotations

from ..core import Trace, Tracer, as_value, eval_jaxpr, get_aval, new_trace
from ..core.avals import dtype_kind
from . import ops
from .programs import aval_of, trace_flat


class NoTangent:
    """The tangent, of type `aval`, of a value forward mode cannot differentiate: an output of
    a custom_vjp function (its rule is reverse-mode only). Forward mode carries it along (what is
    computed from it is a NoTangent too) and raises `error` only where a tangent is needed: when
    jvp or linearize returns it, or a staged JVP program would have to compute it. So
    forward-over-reverse (jvp of grad, hessian) still works, as JAX's lazily failing
    `custom_lin` allows."""

    __slots__ = ("error", "aval")
    made = False  # set once one exists: until then forward mode does not look for them

    def __init__(self, error, aval):
        self.error = error
        self.aval = aval
        NoTangent.made = True

    def __repr__(self):
        return f"NoTangent({self.aval.str_short()})"


def checked_tangent(t):
    """`t`, or the error of a NoTangent: where a tangent leaves forward mode."""
    if type(t) is NoTangent:
        raise t.error
    return t


class JvpTrace(Trace):
    concrete = True
    name = "jvp"

    def new_arg(self, val, tangent):
        val = as_value(val)
        return Tracer(self, aval_of(val).strip_weak_type(), val, tangent)

    def lift(self, x):
        return Tracer(self, get_aval(x), as_value(x), None)

    def process(self, prim, tracers, params):
        vals = [t.val for t in tracers]
        tangents = [t.aux for t in tracers]
        missing = NoTangent.made and next((t for t in tangents if type(t) is NoTangent), None)
        if missing:  # the outputs' tangents cannot be known either
            out = prim.bind(*vals, **params)
            t_out = (tuple(NoTangent(missing.error, aval_of(o)) for o in out)
                     if prim.multiple_results else NoTangent(missing.error, aval_of(out)))
        elif not prim.differentiable or all(t is None for t in tangents):
            out, t_out = prim.bind(*vals, **params), None
        elif getattr(prim, "jvp_with_primal", None) is not None:
            out, t_out = prim.jvp_with_primal(vals, tangents, **params)  # custom rules
        else:
            out = prim.bind(*vals, **params)
            t_out = prim.jvp(vals, tangents, out, **params)
        if prim.multiple_results:
            t_out = (None,) * len(out) if t_out is None else t_out
            return tuple(self.out_tracer(o, t) for o, t in zip(out, t_out))
        return self.out_tracer(out, t_out)

    def out_tracer(self, val, tangent):
        """A tracer of this trace for an output value and its tangent (dropped for outputs that
        are not differentiable)."""
        aval = aval_of(val)
        if dtype_kind(aval.dtype) not in "fc":
            tangent = None
        return Tracer(self, aval, val, tangent)


def jvp_jaxpr(closed, nonzeros, instantiate, unknown=False):
    """The JVP of a program: inputs (primals, tangents of `nonzeros`), outputs (primals, tangents
    of the outputs that are nonzero or instantiated). Returns (program, consts, out_nonzeros).

    An output whose tangent cannot be known (a NoTangent: it depends on a custom_vjp function)
    raises its error, unless `unknown`: then it is left out of the program, and a fourth result
    lists, per output, its NoTangent or None (the caller hands them on as tangents)."""
    avals = closed.in_avals
    n = len(avals)
    t_avals = [a.strip_weak_type() for a, nz in zip(avals, nonzeros) if nz]
    box = {}

    def fun(*args):
        tans = iter(args[n:])
        with new_trace(JvpTrace) as trace:
            tracers = [trace.new_arg(p, next(tans) if nz else None)
                       for p, nz in zip(args[:n], nonzeros)]
            outs = [trace.to_tracer(o) for o in eval_jaxpr(closed.jaxpr, closed.consts, *tracers)]
            vals = [o.val for o in outs]
            ts = [o.aux for o in outs]
        missing = [t if type(t) is NoTangent else None for t in ts]
        if not unknown and any(m is not None for m in missing):
            raise next(m for m in missing if m is not None).error
        nz_out = [m is None and (t is not None or bool(inst))
                  for t, m, inst in zip(ts, missing, instantiate)]
        box["nz"], box["missing"] = nz_out, missing
        ts = [ops.zeros(o.aval.strip_weak_type()) if t is None else t
              for t, o, nz in zip(ts, outs, nz_out) if nz]
        return vals + ts

    jclosed, consts = trace_flat(fun, list(avals) + t_avals, "jvp")
    if unknown:
        return jclosed, consts, box["nz"], box["missing"]
    return jclosed, consts, box["nz"]
