"""Program helpers shared by the control-flow primitives (cond, while, scan, remat): avals of
pytree leaves, tracing functions of pytrees to programs with hoisted constants, the JVP, batching
and recomputed reverse mode of a sub-program, compiling a sub-program, and the checks on a
loop's carry.

The sub-program transforms need the transforms (JVP, reverse-mode tape, batching), which live in
funcgrad/transforms; they are imported inside the functions (the transforms import this package).
"""

from __future__ import annotations

import numpy as np

from .. import tree_util
from ..core import (
    ClosedJaxpr,
    ConcretizationError,
    Jaxpr,
    ShapedArray,
    Tracer,
    Var,
    bind,
    eval_jaxpr,
    get_aval,
    new_trace,
    trace_to_jaxpr,
    user_line,
)
from ..core.placement import to_host
from . import elementwise as ew
from ._batching import at_front

# ---------------------------------------------------------------------------------------------
# Shared helpers: avals, tracing functions of pytrees, hoisting constants, sub-program transforms

def _aval(x):
    if type(x) is Tracer:
        return x.aval
    if isinstance(x, ShapedArray):
        return x
    return get_aval(x)


def _arrays(flat):
    """Python scalars as 0-d arrays (their weak avals were taken before, for tracing)."""
    return [np.asarray(x) if type(x) in (bool, int, float, complex) else x for x in flat]


def _is_float(aval):
    return aval.dtype.kind in "fc"


def _zeros(aval):
    return ew.full(aval.shape, 0, aval.dtype)


def _hoist(closed):
    """(program with its constants turned into leading inputs, the constant values)."""
    j = closed.jaxpr
    return ClosedJaxpr(Jaxpr([], list(j.constvars) + list(j.invars), j.outvars, j.eqns), []), \
        list(closed.consts)


def _trace_flat(fun, avals, name):
    """Trace `fun(*flat) -> flat list` to a program without constants, plus the hoisted consts."""
    return _hoist(trace_to_jaxpr(fun, avals, name=name))


def _permute_invars(closed, order):
    j = closed.jaxpr
    return ClosedJaxpr(Jaxpr(j.constvars, [j.invars[i] for i in order], j.outvars, j.eqns),
                       closed.consts)


def _with_extra_invars(closed, avals, front=False):
    """The program with unused inputs of `avals` added (at the end, or at the front)."""
    j = closed.jaxpr
    extra = [Var(a) for a in avals]
    invars = extra + list(j.invars) if front else list(j.invars) + extra
    return ClosedJaxpr(Jaxpr(j.constvars, invars, j.outvars, j.eqns), closed.consts)


def _concrete(x):
    """The concrete value of x, or None when it is abstract (under jit, vmap, make_jaxpr)."""
    if type(x) is not Tracer:
        return to_host(x)
    try:
        return to_host(x.concrete_value("control flow"))
    except ConcretizationError:
        return None


def _leaf_paths(tree):
    return [tree_util.keystr(p) for p, _ in tree_util.tree_flatten_with_path(tree)[0]]


def _same_type(a, b):
    return a.shape == b.shape and a.dtype == b.dtype


def _jvp_jaxpr(closed, nonzeros, instantiate):
    """The JVP of a program: inputs (primals, tangents of `nonzeros`), outputs (primals, tangents
    of the outputs that are nonzero or instantiated). Returns (program, out_nonzeros)."""
    from ..transforms.jvp import JvpTrace
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
        nz_out = [t is not None or bool(inst) for t, inst in zip(ts, instantiate)]
        box["nz"] = nz_out
        ts = [(_zeros(o.aval.strip_weak_type()) if t is None else t)
              for t, o, nz in zip(ts, outs, nz_out) if nz]
        return vals + ts

    jclosed, consts = _trace_flat(fun, list(avals) + t_avals, "jvp")
    return jclosed, consts, box["nz"]


def _batch_jaxpr(closed, in_batched, size, instantiate):
    """vmap of a program whose batched inputs carry the batch axis in front. Returns the batched
    program (batched outputs in front), its consts, and which outputs are batched."""
    from ..transforms.vmap import BatchTrace
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

    bclosed, consts = _trace_flat(fun, avals, "vmap")
    return bclosed, consts, box["b"]


def _dependence(jaxpr, active_in):
    """Which outputs depend (differentiably) on the active inputs: the reverse-mode activity."""
    act = {v for v, a in zip(jaxpr.invars, active_in) if a}
    for eqn in jaxpr.eqns:
        if eqn.primitive.differentiable and any(type(v) is Var and v in act for v in eqn.invars):
            act.update(v for v in eqn.outvars if _is_float(v.aval))
    return [type(v) is Var and v in act for v in jaxpr.outvars]


def _vjp_recompute(closed, primals, active, cts, saved=None):
    """Cotangents of the active inputs of a program at `primals` for output cotangents `cts`
    (None = zero): its forward is re-run under a reverse-mode trace, then backpropagated.
    `saved` ({outvar: value}, from a checkpoint policy) are outputs not recomputed."""
    from ..transforms.grad import GradTrace, backward_pass
    with new_trace(GradTrace) as trace:
        tracers = [trace.new_arg(p, a) for p, a in zip(primals, active)]
        if saved:
            def run(eqn, ins, trace=trace):
                if eqn.outvars[0] in saved:
                    return trace.record_known(eqn.primitive, [trace.to_tracer(x) for x in ins],
                                              eqn.params, saved[eqn.outvars[0]])
                return bind(eqn.primitive, *ins, **eqn.params)
            outs = [trace.to_tracer(o) for o in _eval_each(closed, tracers, run)]
        else:
            outs = [trace.to_tracer(o)
                    for o in eval_jaxpr(closed.jaxpr, closed.consts, *tracers)]
    seeds = {}
    for o, c in zip(outs, cts):
        if o.aux is not None and c is not None:
            seeds[o.aux] = c if o.aux not in seeds else ew.add(seeds[o.aux], c)
    in_ids = [t.aux for t in tracers]
    tape = trace.tape
    del tracers, outs, trace
    got = backward_pass(tape, seeds, True)
    return [(got[i] if i in got else _zeros(a.strip_weak_type())) if act else None
            for i, act, a in zip(in_ids, active, closed.in_avals)]


def _compiled(compile_jaxpr, xp, closed):
    """Compile a sub-program once for the NumPy/CuPy backend (optimized like the top level)."""
    try:
        from ..transforms.passes import optimize
        closed = optimize(closed)
    except Exception:  # the passes are an optimization only
        pass
    fn = compile_jaxpr(closed.jaxpr, xp=xp).fn
    consts = list(closed.consts)
    if consts:
        return lambda *args: fn(*consts, *args)
    return fn


def _ct_or_zero(c, aval):
    return _zeros(aval.strip_weak_type()) if c is None else c


def _check_carry(what, in_tree, out_tree, in_avals, out_avals, example):
    if in_tree != out_tree:
        raise TypeError(f"{what} must return a carry with the same pytree structure as the "
                        f"initial value: got {out_tree}, expected {in_tree}{user_line()}.")
    paths = _leaf_paths(example)
    for p, a, b in zip(paths, in_avals, out_avals):
        if not _same_type(a, b):
            raise TypeError(f"{what}: the carry must keep its type from one iteration to the "
                            f"next, but the carry leaf {p or '(the carry)'} enters as "
                            f"{a.str_short()} and comes out as {b.str_short()}{user_line()}. "
                            "Cast the initial value or the body's result so they match.")


def _promote_weak(init_flat, in_avals, out_avals):
    """Weakly typed initial leaves (Python scalars) take the dtype the body gives them."""
    changed = False
    new = list(init_flat)
    for k, (a, b) in enumerate(zip(in_avals, out_avals)):
        if a.weak_type and a.shape == b.shape and a.dtype != b.dtype:
            x = init_flat[k]
            new[k] = (np.asarray(x, b.dtype) if type(x) in (bool, int, float, complex)
                      else ew.convert_element_type(x, b.dtype))
            changed = True
    return new, changed


def _eval_each(closed, args, run):
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
