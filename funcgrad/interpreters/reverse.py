"""Reverse mode as a trace: `GradTrace` records a tape while the function runs, `backward_pass`
walks it back; and the reverse mode of a whole program, by recomputation (`vjp_recompute`) or
split into a forward program that emits residuals and a backward program (`vjp_jaxpr`).

Called eagerly, the function runs once under a GradTrace: its tracers carry their concrete
values (so Python control flow and print work, DESIGN invariant 2) and each primitive applied to a
value that depends on a differentiated input is written to a tape with just the residuals its VJP
rule needs (`Primitive.residuals`). The backward pass walks the tape in reverse, applying VJP rules
(written with primitives, so the backward pass can itself be traced or differentiated) and drops
each entry and each cotangent right after use. Inputs that are not active are never marked as
depending on anything, so no tape entry, residual or backward work exists for paths that reach
only frozen leaves (DESIGN invariant 6). Inside an outer transform the values are that
transform's tracers, so `make_jaxpr(grad(f))` yields the joint forward+backward program. The
public wrappers (fg.grad, value_and_grad, vjp, jacrev) are in funcgrad/transforms/grad.py.
"""

from __future__ import annotations

import itertools

import numpy as np

from .. import tree_util
from ..core import Trace, Tracer, Var, as_value, bind, eval_jaxpr, float0, get_aval, new_trace
from ..core.avals import dtype_kind, shaped_array
from ..core.trace import current_traces
from . import ops
from .programs import aval_of, eval_each, is_float, trace_flat


class GradTrace(Trace):
    """Concrete trace that records a tape of the primitives on the path to the outputs.

    A tape entry is (prim, params, in_ids, out_ids, ins, outs, active): `prim.vjp(ct, ins, outs,
    active, **params)` gives the input cotangents, with `ins`/`outs` holding the residuals (values
    where the rule needs them, avals elsewhere). A primitive with a `grad_rule(trace, tracers,
    params)` (control flow, custom rules) records its own entry instead.
    """

    concrete = True
    name = "grad"

    def __init__(self, level):
        super().__init__(level)
        self.tape = []
        self._ids = itertools.count()

    def new_arg(self, val, active):
        val = as_value(val)
        return Tracer(self, aval_of(val).strip_weak_type(), val,
                      next(self._ids) if active else None)

    def lift(self, x):
        aval = get_aval(x)
        return Tracer(self, aval, as_value(x), None)

    def process(self, prim, tracers, params):
        rule = getattr(prim, "grad_rule", None)
        if rule is not None and any(t.aux is not None for t in tracers):
            out = rule(self, tracers, params)
            if out is not NotImplemented:
                return out
        vals = [t.val for t in tracers]
        return self._record(prim, tracers, params, vals, bind(prim, *vals, **params))

    def record_known(self, prim, tracers, params, out):
        """`process` for an equation whose output is already known (a value a checkpoint policy
        saved in the forward pass): the tape entry is recorded, nothing is recomputed."""
        return self._record(prim, tracers, params, [t.val for t in tracers], out)

    def _record(self, prim, tracers, params, vals, out):
        active = tuple([t.aux is not None for t in tracers])
        if not prim.differentiable or True not in active:
            if prim.multiple_results:
                return tuple(Tracer(self, aval_of(o), o, None) for o in out)
            return Tracer(self, aval_of(out), out, None)
        if prim.multiple_results:
            out_tracers = tuple(self.out_tracer(o) for o in out)
            out_ids = tuple(t.aux for t in out_tracers)
            if all(i is None for i in out_ids):
                return out_tracers
        else:
            aval = out.aval if type(out) is Tracer else shaped_array(out.shape, out.dtype)
            if dtype_kind(aval.dtype) not in "fc":
                return Tracer(self, aval, out, None)
            out_ids = next(self._ids)
            out_tracers = Tracer(self, aval, out, out_ids)
        kind = prim.residuals
        if kind == "none":  # linear: only shapes are needed (the common case is fast)
            ins = [aval_of(v) for v in vals]
            outs = (tuple(t.aval for t in out_tracers) if prim.multiple_results
                    else out_tracers.aval)
        else:
            ins, outs = _residuals(kind, vals, out, active, prim.multiple_results)
        self.tape.append((prim, params, tuple(t.aux for t in tracers), out_ids, ins, outs,
                          active))
        return out_tracers

    def out_tracer(self, val):
        """A tracer of this trace for an output value: active when it is differentiable (its
        tape entry is the caller's to record)."""
        aval = aval_of(val)
        return Tracer(self, aval, val, next(self._ids) if dtype_kind(aval.dtype) in "fc" else None)


def _residuals(kind, vals, out, active, multiple):
    """What the backward pass keeps of an equation's values (avals stand in for the rest)."""
    if type(kind) is tuple:  # the indices of the inputs to keep
        ins = [v if i in kind else aval_of(v) for i, v in enumerate(vals)]
    elif kind == "in":
        ins = vals
    elif kind == "cross":
        ins = [v if any(a for j, a in enumerate(active) if j != i) else aval_of(v)
               for i, v in enumerate(vals)]
    elif kind == "inout":
        ins = vals
    else:
        ins = [aval_of(v) for v in vals]
    if kind in ("out", "inout"):
        outs = out
    elif multiple:
        outs = tuple(aval_of(o) for o in out)
    else:
        outs = aval_of(out)
    return ins, outs


def backward_pass(tape, seeds, consume):
    """Propagate cotangents from `seeds` ({tape id: ct}) through the tape, newest entry first.

    With `consume` the tape is emptied as it is walked, so every residual is freed right after the
    rule that needed it; otherwise it is kept for another pass (vjp_fn may be called again).
    """
    cts = dict(seeds)
    entries = tape if consume else list(tape)
    while entries:
        prim, params, in_ids, out_ids, ins, outs, active = entries.pop()
        if prim.multiple_results:
            out_cts = [None if i is None else cts.pop(i, None) for i in out_ids]
            if all(c is None for c in out_cts):
                continue
            out_cts = [_host_zeros(aval_of(o)) if c is None else c for c, o in zip(out_cts, outs)]
            ct = tuple(out_cts)
        else:
            ct = cts.pop(out_ids, None)
            if ct is None:
                continue
        in_cts = prim.vjp(ct, ins, outs, active, **params)
        del ct
        for i, c in zip(in_ids, in_cts):
            if i is not None and c is not None:
                prev = cts.get(i)
                cts[i] = c if prev is None else ops.add(prev, c)
    return cts


def _host_zeros(aval):
    return np.zeros(aval.shape, aval.dtype)


def zero_cotangent(val):
    """The cotangent of an input nothing flowed back to: zeros, float0 zeros for integers."""
    aval = aval_of(val)
    if dtype_kind(aval.dtype) in "fc":
        return np.zeros(aval.shape, aval.dtype)
    return np.zeros(aval.shape, float0)


def trace_vjp(fun, primals, active_leaves, has_aux=False):
    """Run `fun(*primals)` under a GradTrace.

    Returns (out_flat_vals, out_tree, aux, backward, in_tree) where `backward(out_cts_flat,
    consume)` returns the flat list of input cotangents (zeros for inactive inputs).
    """
    flat, in_tree = tree_util.tree_flatten(primals)
    with new_trace(GradTrace) as trace:
        tracers = [trace.new_arg(x, a) for x, a in zip(flat, active_leaves)]
        out = fun(*tree_util.tree_unflatten(in_tree, tracers))
        aux = None
        if has_aux:
            if not (isinstance(out, (tuple, list)) and len(out) == 2):
                name = getattr(fun, "__name__", None) or type(fun).__name__
                raise TypeError(f"has_aux=True requires {name} to return a pair "
                                f"(output, aux), got {type(out).__name__}.")
            out, aux = out
            aux = tree_util.tree_map(
                lambda x, t=trace: x.val if type(x) is Tracer and x._trace is t else x, aux)
        out_flat, out_tree = tree_util.tree_flatten(out)
        out_tracers = [trace.to_tracer(o) for o in out_flat]
    out_vals = [t.val for t in out_tracers]
    out_ids = [t.aux for t in out_tracers]
    in_ids = [t.aux for t in tracers]
    in_vals = [t.val for t in tracers]
    tape = trace.tape
    del tracers, out_tracers, trace

    def backward(out_cts, consume):
        seeds = {}
        for i, c in zip(out_ids, out_cts):
            if i is not None and c is not None:
                seeds[i] = c if i not in seeds else ops.add(seeds[i], c)
        cts = backward_pass(tape, seeds, consume)
        return [cts[i] if i is not None and i in cts else zero_cotangent(v)
                for i, v in zip(in_ids, in_vals)]

    return out_vals, out_tree, aux, backward, in_tree


# ---------------------------------------------------------------------------------------------
# Reverse mode of a program

def dependence(jaxpr, active_in):
    """Which outputs depend (differentiably) on the active inputs: the reverse-mode activity."""
    act = {v for v, a in zip(jaxpr.invars, active_in) if a}
    for eqn in jaxpr.eqns:
        if eqn.primitive.differentiable and any(type(v) is Var and v in act for v in eqn.invars):
            act.update(v for v in eqn.outvars if is_float(v.aval))
    return [type(v) is Var and v in act for v in jaxpr.outvars]


def vjp_recompute(closed, primals, active, cts, saved=None):
    """Cotangents of the active inputs of a program at `primals` for output cotangents `cts`
    (None = zero): its forward is re-run under a reverse-mode trace, then backpropagated.
    `saved` ({outvar: value}, from a checkpoint policy) are outputs not recomputed."""
    with new_trace(GradTrace) as trace:
        tracers = [trace.new_arg(p, a) for p, a in zip(primals, active)]
        if saved:
            def run(eqn, ins, trace=trace):
                if eqn.outvars[0] in saved:
                    return trace.record_known(eqn.primitive, [trace.to_tracer(x) for x in ins],
                                              eqn.params, saved[eqn.outvars[0]])
                return bind(eqn.primitive, *ins, **eqn.params)
            outs = [trace.to_tracer(o) for o in eval_each(closed, tracers, run)]
        else:
            outs = [trace.to_tracer(o)
                    for o in eval_jaxpr(closed.jaxpr, closed.consts, *tracers)]
    seeds = {}
    for o, c in zip(outs, cts):
        if o.aux is not None and c is not None:
            seeds[o.aux] = c if o.aux not in seeds else ops.add(seeds[o.aux], c)
    in_ids = [t.aux for t in tracers]
    tape = trace.tape
    del tracers, outs, trace
    got = backward_pass(tape, seeds, True)
    return [(got[i] if i in got else ops.zeros(a.strip_weak_type())) if act else None
            for i, act, a in zip(in_ids, active, closed.in_avals)]


class ResidualsInClosure(Exception):
    """A tape entry keeps residuals where vjp_jaxpr cannot see them (a Python closure, a param):
    differentiate the program by recomputation instead."""


class VjpJaxpr:
    """A program split for reverse mode (`vjp_jaxpr`): `fwd` computes the outputs and the
    residuals, `bwd` maps (residuals, output cotangents) to input cotangents.

    res_src[k] says where residual k of bwd comes from: ("in", i) the program's input i, or
    ("out", j) the fwd program's extra output j. out_ct[j]: bwd takes a cotangent for output j.
    """

    def __init__(self, closed, active, keep_inputs):
        n = len(closed.in_avals)
        box = {}

        def fwd_fun(*args):
            level_trace = current_traces()[-1]
            with new_trace(GradTrace) as trace:
                tracers = [trace.new_arg(a, act) for a, act in zip(args, active)]
                outs = [trace.to_tracer(o)
                        for o in eval_jaxpr(closed.jaxpr, closed.consts, *tracers)]
            tape = trace.tape
            if any(getattr(e[0], "residuals_in_closure", False) for e in tape):
                raise ResidualsInClosure
            arg_pos = {id(a): i for i, a in enumerate(args)}
            res, seen, extra = [], set(), []

            def walk(x):
                if type(x) is Tracer:
                    if x._trace is level_trace and id(x) not in seen:
                        seen.add(id(x))
                        i = arg_pos.get(id(x))
                        if i is not None and i in keep_inputs:
                            res.append((x, ("in", i)))
                        else:
                            res.append((x, ("out", len(extra))))
                            extra.append(x)
                elif isinstance(x, (tuple, list)):
                    for y in x:
                        walk(y)

            for e in tape:
                walk(e[4])
                walk(e[5])
            box.update(tape=tape, in_ids=[t.aux for t in tracers],
                       out_ids=[o.aux for o in outs], res=res)
            return [o.val for o in outs] + extra

        self.fwd, self.fwd_consts = trace_flat(fwd_fun, closed.in_avals, "fwd")
        tape, in_ids, out_ids, res = box["tape"], box["in_ids"], box["out_ids"], box["res"]
        self.res_src = [src for _, src in res]
        self.res_avals = [t.aval for t, _ in res]
        self.n_out = len(closed.out_avals)
        self.out_ct = [i is not None for i in out_ids]
        self.active = list(active)
        out_avals = closed.out_avals
        in_avals = closed.in_avals
        res_keys = [id(t) for t, _ in res]
        ct_avals = [a.strip_weak_type() for a, m in zip(out_avals, self.out_ct) if m]
        n_res = len(res)

        def bwd_fun(*args):
            sub = dict(zip(res_keys, args[:n_res]))
            new_tape = [_subst_entry(e, sub) for e in tape]
            seeds = {}
            for i, c in zip([i for i in out_ids if i is not None], args[n_res:]):
                seeds[i] = c if i not in seeds else ops.add(seeds[i], c)
            got = backward_pass(new_tape, seeds, True)
            return [got[i] if i is not None and i in got else ops.zeros(a.strip_weak_type())
                    for i, a, act in zip(in_ids, in_avals, active) if act]

        self.bwd, self.bwd_consts = trace_flat(bwd_fun, self.res_avals + ct_avals, "bwd")
        self.n_in = n


def vjp_jaxpr(closed, active, keep_inputs):
    """The reverse mode of a program as two programs (a `VjpJaxpr`): a forward one that also
    returns the residuals its backward needs, and the backward one. Inputs in `keep_inputs` are
    residuals read from the inputs rather than copied out. Raises ResidualsInClosure when a
    primitive of the program keeps residuals out of reach (then recompute instead)."""
    return VjpJaxpr(closed, active, keep_inputs)


def _subst(x, sub):
    if type(x) is Tracer:
        return sub.get(id(x), x)
    if isinstance(x, tuple):
        return tuple(_subst(y, sub) for y in x)
    if isinstance(x, list):
        return [_subst(y, sub) for y in x]
    return x


def _subst_entry(entry, sub):
    prim, params, in_ids, out_ids, ins, outs, active = entry
    return (prim, params, in_ids, out_ids, _subst(ins, sub), _subst(outs, sub), active)
