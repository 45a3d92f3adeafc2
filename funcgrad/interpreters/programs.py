"""Programs as the interpreters handle them: the abstract value of anything a transform meets,
tracing a function of flat values to a program whose constants are hoisted to leading inputs,
evaluating a program one equation at a time, and the program optimizer that jit registers.
"""

from __future__ import annotations

from ..core import ClosedJaxpr, Jaxpr, ShapedArray, Tracer, Var, get_aval, trace_to_jaxpr
from ..core.avals import dtype_kind, shaped_array


def aval(x):
    """The abstract value of a tracer, a ShapedArray (itself), an array or a Python scalar."""
    if type(x) is Tracer:
        return x.aval
    if isinstance(x, ShapedArray):
        return x
    return get_aval(x)


def aval_of(v):
    """The abstract value of a tracer or an array (the fast path of `aval`, paid per primitive)."""
    return v.aval if type(v) is Tracer else shaped_array(v.shape, v.dtype)


def is_float(a):
    """Whether values of aval `a` are differentiable (floating or complex)."""
    return dtype_kind(a.dtype) in "fc"


def hoist(closed):
    """(program with its constants turned into leading inputs, the constant values)."""
    j = closed.jaxpr
    return ClosedJaxpr(Jaxpr([], list(j.constvars) + list(j.invars), j.outvars, j.eqns), []), \
        list(closed.consts)


def trace_flat(fun, avals, name):
    """Trace `fun(*flat) -> flat list` to a program without constants, plus the hoisted consts
    (closed-over values, tracers of outer transforms included, become ordinary operands)."""
    return hoist(trace_to_jaxpr(fun, avals, name=name))


def eval_each(closed, args, run):
    """Evaluate a program with `run(eqn, inputs) -> output(s)` for each equation."""
    jaxpr = closed.jaxpr
    env = dict(zip(jaxpr.constvars, closed.consts))
    env.update(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
        out = run(eqn, [env[v] if type(v) is Var else v.val for v in eqn.invars])
        if eqn.primitive.multiple_results:
            env.update(zip(eqn.outvars, out))
        else:
            env[eqn.outvars[0]] = out
    return [env[v] if type(v) is Var else v.val for v in jaxpr.outvars]


# ---------------------------------------------------------------------------------------------
# The program optimizer. jit's passes (funcgrad/transforms/passes.py, above the primitives)
# register it here, so that a primitive compiling a sub-program (a loop body, a branch) optimizes
# it like the top level without importing upward.

_optimizer = None


def set_optimizer(fn):
    """Install `fn(closed, **options) -> closed` as the program optimizer (passes.optimize)."""
    global _optimizer
    _optimizer = fn


def optimize(closed, **options):
    """The registered optimizer applied to `closed` (unchanged when none is registered)."""
    return closed if _optimizer is None else _optimizer(closed, **options)
