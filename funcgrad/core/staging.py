"""Tracing functions to programs and running programs: `JaxprTrace` records each primitive as an
equation (make_jaxpr, jit), and `eval_jaxpr` runs a program by binding its equations, so that a
program evaluated inside a transform is transformed too.
"""

from __future__ import annotations

import contextlib

from .avals import PY_SCALARS, get_aval
from .jaxpr import ClosedJaxpr, Eqn, Jaxpr, Literal, Var, source_override, user_source_info
from .placement import to_host
from .primitive import bind
from .trace import Trace, Tracer, new_trace, staging_constants


class JaxprTrace(Trace):
    """Records each primitive as an equation; tracers are abstract (shape and dtype only)."""

    name = "make_jaxpr"
    staging = True

    def __init__(self, level, name=None):
        super().__init__(level)
        if name:
            self.name = name
        self.eqns = []
        self.invars = []
        self.constvars = []
        self.consts = []
        self._const_tracers = {}
        self.created_at = user_source_info(3)

    def new_arg(self, aval):
        var = Var(aval)
        self.invars.append(var)
        return Tracer(self, aval, None, var)

    def lift(self, x):
        key = id(x)
        t = self._const_tracers.get(key)
        if t is not None:
            return t
        if type(x) in PY_SCALARS or (getattr(x, "ndim", None) == 0 and type(x) is not Tracer):
            aval = get_aval(x)
            val = x if type(x) in PY_SCALARS else to_host(x)
            return Tracer(self, aval, None, Literal(val, aval))
        aval = get_aval(x) if type(x) is not Tracer else x.aval
        var = Var(aval)
        self.constvars.append(var)
        self.consts.append(x)
        t = Tracer(self, aval, None, var)
        self._const_tracers[key] = t
        return t

    def process(self, prim, tracers, params):
        out_avals = prim.abstract_eval(*[t.aval for t in tracers], **params)
        if not prim.multiple_results:
            var = Var(out_avals)
            self.eqns.append(Eqn(prim, [t.aux for t in tracers], [var], params,
                                 user_source_info(3)))
            return Tracer(self, out_avals, None, var)
        outvars = [Var(a) for a in out_avals]
        self.eqns.append(Eqn(prim, [t.aux for t in tracers], outvars, params, user_source_info(3)))
        return tuple(Tracer(self, v.aval, None, v) for v in outvars)

    def to_jaxpr(self, out_tracers):
        outvars = [self.to_tracer(t).aux for t in out_tracers]
        jaxpr = Jaxpr(self.constvars, self.invars, outvars, self.eqns)
        return ClosedJaxpr(jaxpr, self.consts)


def trace_to_jaxpr(fun, in_avals, name="make_jaxpr", stage_constants=False):
    """Trace `fun(*flat_tracers) -> flat list` abstractly into a ClosedJaxpr. `stage_constants`:
    record the operations on constants too, rather than computing them (fg.eval_shape)."""
    with new_trace(JaxprTrace, name) as trace:
        with staging_constants(trace) if stage_constants else contextlib.nullcontext():
            args = [trace.new_arg(a) for a in in_avals]
            outs = fun(*args)
            return trace.to_jaxpr(outs)


def make_jaxpr(fun, static_argnums=()):
    """`make_jaxpr(f)(*args)` returns the program f computes, as a printable ClosedJaxpr."""
    if isinstance(static_argnums, int):
        static_argnums = (static_argnums,)
    static_argnums = tuple(static_argnums)

    from .. import tree_util

    def make(*args, **kwargs):
        static = {i: args[i] for i in static_argnums}
        dyn = [a for i, a in enumerate(args) if i not in static]
        flat, in_tree = tree_util.tree_flatten((dyn, kwargs))
        in_avals = [x.aval if type(x) is Tracer else _arg_aval(x) for x in flat]
        out_tree_box = []

        def flat_fun(*flat_tracers):
            d, kw = tree_util.tree_unflatten(in_tree, list(flat_tracers))
            it = iter(d)
            full = [static[i] if i in static else next(it) for i in range(len(args))]
            out = fun(*full, **kw)
            out_flat, out_tree = tree_util.tree_flatten(out)
            out_tree_box.append(out_tree)
            return out_flat

        closed = trace_to_jaxpr(flat_fun, in_avals)
        closed.in_tree = in_tree
        closed.out_tree = out_tree_box[0]
        return closed

    make.__name__ = f"make_jaxpr({getattr(fun, '__name__', 'fun')})"
    return make


def _arg_aval(x):
    aval = get_aval(x)
    if type(x) in PY_SCALARS:
        return aval  # weakly typed, like JAX
    return aval


def eval_jaxpr(jaxpr: Jaxpr, consts, *args):
    """Run a program by binding each equation in turn, freeing each value after its last use.

    Binding (rather than calling implementations) means a program evaluated inside a transform is
    transformed too: this is how transforms of programs fall out of transforms of functions.
    """
    env = {}
    for v, x in zip(jaxpr.constvars, consts):
        env[v] = x
    for v, x in zip(jaxpr.invars, args):
        env[v] = x
    frees = jaxpr.frees()
    saved = source_override[0]
    try:
        for eqn, dead in zip(jaxpr.eqns, frees):
            source_override[0] = eqn.source_info or saved
            ins = [env[v] if type(v) is Var else v.val for v in eqn.invars]
            out = bind(eqn.primitive, *ins, **eqn.params)
            if eqn.primitive.multiple_results:
                for v, o in zip(eqn.outvars, out):
                    env[v] = o
            else:
                env[eqn.outvars[0]] = out
            for v in dead:
                del env[v]
    finally:
        source_override[0] = saved
    return [env[v] if type(v) is Var else v.val for v in jaxpr.outvars]


def jaxpr_as_fun(closed: ClosedJaxpr):
    """A Python function of the program's flat inputs returning its flat outputs."""
    return lambda *args: eval_jaxpr(closed.jaxpr, closed.consts, *args)
