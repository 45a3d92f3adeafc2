"""Custom derivative rules: `custom_jvp` and `custom_vjp` (JAX's decorators), and the two
primitives that keep a rule in a program, `custom_jvp_call` and `custom_vjp_call`.

    custom_jvp_call  (*consts, *args; jaxpr, jvp, num_consts)          JVP: the user's rule;
                                                                       VJP: its transpose
    custom_vjp_call  (*consts, *args; jaxpr, fwd, bwd, num_consts)     VJP: fwd, then bwd;
                                                                       JVP: raises (as JAX)

A call of a decorated function with no traced argument runs the function. Under an autodiff
trace that computes values (fg.grad, fg.jvp called eagerly) the rule applies at once: forward
mode calls the JVP rule; reverse mode records one tape entry whose VJP is the user's `bwd`
(custom_vjp) or the transpose of the JVP rule (custom_jvp: the rule is linear in the tangents).
Under every other trace (jit, make_jaxpr, vmap, checkpoint, control-flow bodies) the call becomes
one equation holding the function's program (`jaxpr`, with the values it closes over hoisted to
leading operands, `num_consts`) and the rule, as JAX's custom_jvp_call / custom_vjp_call do. So
the rule survives staging: jvp, grad, vjp and linearize of the program apply it, vmap batches
both the program and the rule, and jit's code generator runs the program alone (the rule only
matters to transforms, see funcgrad/transforms/passes.py `optimize(differentiable=...)`).

As in JAX, a rule is Python code run when a transform needs it: it must not close over values
traced by the staged function, and the function must not close over values being differentiated
or batched (pass them as arguments).
"""

from __future__ import annotations

import functools
import inspect

import numpy as np

from .. import tree_util
from ..core import Primitive, Tracer, as_value, bind, device_namespace, eval_jaxpr, user_line
from ..interpreters import ops
from ..interpreters.batching import BatchTrace, at_front, batch_fun, batch_jaxpr, move_to_front
from ..interpreters.jvp import JvpTrace, NoTangent
from ..interpreters.programs import aval, is_float, trace_flat
from ..interpreters.reverse import GradTrace, trace_vjp
from ._batching import batch_size
from .elementwise import convert_element_type

__all__ = ["custom_jvp", "custom_vjp", "custom_jvp_call_p", "custom_vjp_call_p"]


def _name(fun):
    return getattr(fun, "__name__", None) or type(fun).__name__


def _top_trace(values):
    top = None
    for v in values:
        if type(v) is Tracer and (top is None or v._trace.level > top.level):
            top = v._trace
    return top


def _resolve_args(fun, args, kwargs):
    if not kwargs:
        return tuple(args)
    bound = inspect.signature(fun).bind(*args, **kwargs)
    bound.apply_defaults()
    return tuple(bound.arguments.values())


def _split(args, nondiff_argnums):
    nondiff = tuple(args[i] for i in nondiff_argnums)
    diff = tuple(a for i, a in enumerate(args) if i not in nondiff_argnums)
    return nondiff, diff


def _merge(nondiff, diff, nondiff_argnums, n):
    it_n, it_d = iter(nondiff), iter(diff)
    return tuple(next(it_n) if i in nondiff_argnums else next(it_d) for i in range(n))


def _check_nondiff(kind, fun, nondiff):
    for x in tree_util.tree_leaves(nondiff):
        if type(x) is Tracer:
            raise TypeError(f"{kind} {_name(fun)}: a nondiff_argnums argument is a traced array"
                            f"{user_line()}; nondiff arguments must be static (Python values, "
                            "functions). Pass arrays as differentiable arguments.")


def _rule_unused(flat):
    """Whether no transform that the rule matters to is under these arguments: every tracer
    among them is a vmap's all the way down to plain arrays (eager vmap). Then the function
    runs as it is, as it would with no tracer at all."""
    for x in flat:
        while type(x) is Tracer:
            if not isinstance(x._trace, BatchTrace):
                return False
            x = x.val
    return True


def _closure_error(kind, name, what):
    return TypeError(
        f"{kind} function {name} closes over a value that is being {what}{user_line()}: as in "
        "JAX, its rule cannot account for it. Pass the value as an argument of the function "
        "(and of the rule) instead.")


def _flat_fun(fun, in_tree, box):
    """fun of pytree arguments as a function of flat leaves returning flat leaves."""
    def flat(*leaves):
        out = fun(*tree_util.tree_unflatten(in_tree, list(leaves)))
        out_flat, box["out_tree"] = tree_util.tree_flatten(out)
        return out_flat
    return flat


def _stage(kind, fun, flat_args, in_tree, name):
    """(program of fun with its consts hoisted, consts, out_tree) for a call to be staged."""
    box = {}
    closed, consts = trace_flat(_flat_fun(fun, in_tree, box), [aval(x) for x in flat_args],
                                f"{kind}({name})")
    return closed, consts, box["out_tree"]


def _as_out_array(x, like):
    """A rule's output leaf as an array of the primal output's dtype (Python scalars allowed)."""
    if type(x) is Tracer or hasattr(x, "dtype") and hasattr(x, "shape"):
        return x
    return np.asarray(x, like.dtype)


def _checked_tangents(name, outs, t_outs):
    """The tangent outputs of a JVP rule, each with its primal output's shape and dtype."""
    checked = []
    for k, (o, t) in enumerate(zip(outs, t_outs)):
        oa = aval(o)
        t = _as_out_array(t, oa)
        ta = aval(t)
        if ta.shape != oa.shape:
            raise TypeError(f"custom_jvp {name}: the rule's tangent output {k} has shape "
                            f"{ta.shape} but the primal output has shape {oa.shape}{user_line()}; "
                            "each tangent must have its primal's shape and dtype.")
        if ta.dtype != oa.dtype and is_float(oa):
            t = convert_element_type(t, oa.dtype)
        checked.append(t)
    return checked


# ---------------------------------------------------------------------------------------------
# custom_jvp

class custom_jvp:
    """Decorate a function whose JVP you define: `@f.defjvp def f_jvp(primals, tangents): ...`
    returning `(primal_out, tangent_out)`. Arguments listed in `nondiff_argnums` are passed to the
    rule first, outside `primals`, and are never differentiated. The rule is called with every
    tangent instantiated (zeros where nothing flows in, of the primal's dtype)."""

    def __init__(self, fun, nondiff_argnums=()):
        functools.update_wrapper(self, fun)
        self.fun = fun
        self.nondiff_argnums = tuple(nondiff_argnums)
        self.jvp_rule = None

    def defjvp(self, jvp_rule):
        self.jvp_rule = jvp_rule
        return jvp_rule

    def defjvps(self, *tangent_fns):
        """One function per argument, `t_i(g, ans, *primals) -> contribution`, summed."""
        def rule(primals, tangents):
            ans = self.fun(*primals)
            total = None
            for fn, t in zip(tangent_fns, tangents):
                if fn is None:
                    continue
                c = fn(t, ans, *primals)
                total = c if total is None else tree_util.tree_map(lambda a, b: a + b, total, c)
            return ans, total
        rule.__name__ = f"{_name(self.fun)}_jvps"
        self.jvp_rule = rule

    def __call__(self, *args, **kwargs):
        if self.jvp_rule is None:
            raise AttributeError(f"No JVP defined for custom_jvp function {_name(self.fun)}; "
                                 "call .defjvp(rule) before using it.")
        args = _resolve_args(self.fun, args, kwargs)
        nondiff, diff = _split(args, self.nondiff_argnums)
        _check_nondiff("custom_jvp", self.fun, nondiff)
        flat, in_tree = tree_util.tree_flatten(diff)
        trace = _top_trace(flat)
        n = len(args)

        def fun(*d):
            return self.fun(*_merge(nondiff, d, self.nondiff_argnums, n))

        if trace is None or _rule_unused(flat):
            return fun(*diff)

        def rule(primals, tangents):
            return self.jvp_rule(*nondiff, primals, tangents)

        name = _name(self.fun)
        if isinstance(trace, JvpTrace):
            return _jvp_eager(trace, self, nondiff, rule, flat, in_tree, n, name)
        if isinstance(trace, GradTrace):
            return _grad_eager_jvp(trace, self, fun, nondiff, rule, flat, in_tree, n, name)
        closed, consts, out_tree = _stage("custom_jvp", fun, flat, in_tree, name)
        flat_rule = _flat_jvp_rule(rule, in_tree, out_tree, name,
                                   _name(self.jvp_rule))
        outs = bind(custom_jvp_call_p, *consts, *flat, name=name, jaxpr=closed, jvp=flat_rule,
                    num_consts=len(consts))
        return tree_util.tree_unflatten(out_tree, list(outs))


def _call_rule(rule, in_tree, primals, tangents, name):
    out, t_out = rule(tuple(tree_util.tree_unflatten(in_tree, list(primals))),
                      tuple(tree_util.tree_unflatten(in_tree, list(tangents))))
    out_flat, out_tree = tree_util.tree_flatten(out)
    t_flat, t_tree = tree_util.tree_flatten(t_out)
    if len(t_flat) != len(out_flat):
        raise TypeError(f"custom_jvp {name}: the rule returned a tangent with structure {t_tree} "
                        f"for a primal output with structure {out_tree}{user_line()}; they must "
                        "match.")
    out_flat = [as_value(o) if type(o) is not Tracer else o for o in out_flat]
    return out_flat, out_tree, _checked_tangents(name, out_flat, t_flat)


def _flat_jvp_rule(rule, in_tree, out_tree, name, rule_name):
    """The rule as `jvp(flat_primals, flat_tangents) -> (flat_outs, flat_tangent_outs)`."""
    def jvp(primals, tangents):
        out_flat, tree, t_flat = _call_rule(rule, in_tree, primals, tangents, name)
        if tree != out_tree:
            raise TypeError(f"custom_jvp {name}: the rule's primal output has structure {tree}, "
                            f"but the function returns {out_tree}{user_line()}.")
        return out_flat, t_flat
    jvp.__name__ = rule_name
    return jvp


def _zeros_like(p):
    """Zero tangents for primal `p`, where `p` is (on its device, or traced)."""
    if type(p) is Tracer:
        return ops.zeros(p.aval.strip_weak_type())
    a = aval(p)
    return device_namespace([p]).zeros(a.shape, a.dtype)


def _instantiate(tangents, primals):
    return [_zeros_like(p) if t is None else t for t, p in zip(tangents, primals)]


def _jvp_eager(trace, custom, nondiff, rule, flat, in_tree, n, name):
    """Forward mode with values: the rule, at the level below."""
    tracers = [trace.to_tracer(x) for x in flat]
    primals = [t.val for t in tracers]
    missing = NoTangent.made and next((t.aux for t in tracers if type(t.aux) is NoTangent), None)
    if missing:  # a tangent in is unknown (a custom_vjp output): so are those out
        diff = tree_util.tree_unflatten(in_tree, primals)
        out_flat, out_tree = tree_util.tree_flatten(
            custom(*_merge(nondiff, diff, custom.nondiff_argnums, n)))
        t_flat = [NoTangent(missing.error, aval(o).strip_weak_type()) for o in out_flat]
    else:
        tangents = [t.aux if t.aux is not None else _zeros_like(t.val) for t in tracers]
        out_flat, out_tree, t_flat = _call_rule(rule, in_tree, primals, tangents, name)
    out_flat = [as_value(o) if type(o) is not Tracer else o for o in out_flat]
    return tree_util.tree_unflatten(out_tree, [trace.out_tracer(o, t)
                                               for o, t in zip(out_flat, t_flat)])


def _grad_eager_jvp(trace, custom, fun, nondiff, rule, flat, in_tree, n, name):
    """Reverse mode with values: the primal output from the decorated function at the level
    below (so a trace there keeps the rule too; with plain values below, the function itself),
    and one tape entry whose VJP transposes the rule at these primals."""
    tracers = [trace.to_tracer(x) for x in flat]
    vals = [t.val for t in tracers]
    diff = tree_util.tree_unflatten(in_tree, vals)
    if any(type(v) is Tracer for v in vals):
        out = custom(*_merge(nondiff, diff, custom.nondiff_argnums, n))
    else:
        out = fun(*diff)
    out_flat, out_tree = tree_util.tree_flatten(out)
    active = tuple(t.aux is not None for t in tracers)
    if True not in active:
        return tree_util.tree_unflatten(out_tree, [trace.lift(o) for o in out_flat])
    flat_rule = _flat_jvp_rule(rule, in_tree, out_tree, name, name)
    params = {"jvp": flat_rule, "num_consts": 0}
    return tree_util.tree_unflatten(out_tree, _record(trace, tracers, out_flat, _jvp_entry_p,
                                                      params, tuple(vals)))


def _record(trace, tracers, out_flat, entry, params, residuals):
    """Output tracers of a custom call under `trace`, and its tape entry (when an input is
    active): `entry.vjp` reads `params` and the residuals."""
    out_flat = [as_value(o) if type(o) is not Tracer else o for o in out_flat]
    if not any(t.aux is not None for t in tracers):
        return [trace.lift(o) for o in out_flat]
    out_tracers = [trace.out_tracer(o) for o in out_flat]
    out_ids = tuple(t.aux for t in out_tracers)
    if any(i is not None for i in out_ids):
        trace.tape.append((entry, params, tuple(t.aux for t in tracers), out_ids, residuals,
                           tuple(t.aval for t in out_tracers),
                           tuple(t.aux is not None for t in tracers)))
    return out_tracers


def _transpose_rule(jvp, num_consts, primals, cts, active, name):
    """Cotangents of a custom_jvp call's operands: the VJP, at zero tangents, of the map
    tangents -> the rule's tangent outputs (linear, so this is its transpose)."""
    if any(active[:num_consts]):
        raise _closure_error("custom_jvp", name, "differentiated")
    args, act = list(primals[num_consts:]), active[num_consts:]
    zeros = [_zeros_like(a) for a in args]

    def tangent_map(*tangents):
        return jvp(args, list(tangents))[1]

    _, _, _, backward, _ = trace_vjp(tangent_map, tuple(zeros),
                                     [a and is_float(aval(x)) for a, x in zip(act, args)])
    in_cts = backward(list(cts), consume=True)
    return (None,) * num_consts + tuple(c if a else None for c, a in zip(in_cts, act))


def _entry_vjp(ct, primals, out, active, *, jvp, num_consts):
    cts = ct if isinstance(ct, (tuple, list)) else (ct,)
    return _transpose_rule(jvp, num_consts, primals, cts, active, _name(jvp))


class _TapeEntry:
    """What a tape entry of a custom call applies on the way back (never bound, so not a
    primitive): `vjp` reads the entry's params and residuals."""

    multiple_results = True

    def __init__(self, name, vjp):
        self.name, self.vjp = name, vjp


# The tape entry of an eager custom_jvp call: its residuals are the primals.
_jvp_entry_p = _TapeEntry("custom_jvp_call", _entry_vjp)


# The primitive, for staged calls

def _call_impl(xp, *args, jaxpr, **params):
    return eval_jaxpr(jaxpr.jaxpr, (), *args)


def _call_abstract(*avals, jaxpr, **params):
    return list(jaxpr.out_avals)


def _custom_jvp_jvp(primals, tangents, *, name, jaxpr, jvp, num_consts):
    if any(t is not None for t in tangents[:num_consts]):
        raise _closure_error("custom_jvp", name, "differentiated")
    args = primals[num_consts:]
    outs, t_outs = jvp(list(args), _instantiate(tangents[num_consts:], args))
    return outs, t_outs


def _custom_jvp_vjp(ct, primals, out, active, *, name, jaxpr, jvp, num_consts):
    cts = ct if isinstance(ct, (tuple, list)) else (ct,)
    return _transpose_rule(jvp, num_consts, primals, cts, active, name)


def _batched_operands(vals, dims, num_consts, kind, name):
    if any(d is not None for d in dims[:num_consts]):
        raise _closure_error(kind, name, "batched (vmap)")
    size = batch_size(vals, dims)
    vals = [move_to_front(v, d) if d is not None else v for v, d in zip(vals, dims)]
    return size, vals, [d is not None for d in dims]


def _custom_jvp_batch(vals, dims, *, name, jaxpr, jvp, num_consts):
    """vmap batches the program and, lazily, the rule; every output gets the batch axis in
    front, so that the program's outputs and the rule's always agree."""
    size, vals, in_b = _batched_operands(vals, dims, num_consts, "custom_jvp", name)
    bj, bconsts, _ = batch_jaxpr(jaxpr, in_b, size, True)
    arg_dims = [0 if b else None for b in in_b[num_consts:]]

    def batched_jvp(primals, tangents):
        n = len(primals)
        outs, out_dims = batch_fun(lambda *a: _pair(jvp(list(a[:n]), list(a[n:]))),
                                   list(primals) + list(tangents), arg_dims + arg_dims, size)
        outs = [at_front(o, d, size) for o, d in zip(outs, out_dims)]
        half = len(outs) // 2
        return outs[:half], outs[half:]

    batched_jvp.__name__ = f"vmap({jvp.__name__})"
    outs = bind(custom_jvp_call_p, *bconsts, *vals, name=name, jaxpr=bj, jvp=batched_jvp,
                num_consts=len(bconsts) + num_consts)
    return outs, [0] * len(outs)


def _pair(res):
    outs, t_outs = res
    return list(outs) + list(t_outs)


custom_jvp_call_p = Primitive("custom_jvp_call", multiple_results=True, impl=_call_impl,
                              abstract_eval=_call_abstract, vjp=_custom_jvp_vjp,
                              batch=_custom_jvp_batch, residuals="in")
custom_jvp_call_p.jvp_with_primal = _custom_jvp_jvp
custom_jvp_call_p.jvp = lambda primals, tangents, out, **params: _custom_jvp_jvp(
    primals, tangents, **params)[1]
custom_jvp_call_p.custom_rule = True  # jit's code generator runs `jaxpr` alone (passes.inline)


# ---------------------------------------------------------------------------------------------
# custom_vjp

class custom_vjp:
    """Decorate a function whose VJP you define with `f.defvjp(fwd, bwd)`: `fwd(*args) ->
    (out, residuals)`, `bwd(*nondiff, residuals, ct) -> tuple of cotangents, one per
    differentiable argument` (None for a zero one). Forward mode (jvp, jacfwd, linearize) of such
    a function raises, as in JAX: use custom_jvp for a rule that works in both modes."""

    def __init__(self, fun, nondiff_argnums=()):
        functools.update_wrapper(self, fun)
        self.fun = fun
        self.nondiff_argnums = tuple(nondiff_argnums)
        self.fwd = self.bwd = None

    def defvjp(self, fwd, bwd):
        self.fwd, self.bwd = fwd, bwd

    def __call__(self, *args, **kwargs):
        if self.fwd is None:
            raise AttributeError(f"No VJP defined for custom_vjp function {_name(self.fun)}; "
                                 "call .defvjp(fwd, bwd) before using it.")
        args = _resolve_args(self.fun, args, kwargs)
        nondiff, diff = _split(args, self.nondiff_argnums)
        _check_nondiff("custom_vjp", self.fun, nondiff)
        flat, in_tree = tree_util.tree_flatten(diff)
        trace = _top_trace(flat)
        n = len(args)
        name = _name(self.fun)

        def fun(*d):
            return self.fun(*_merge(nondiff, d, self.nondiff_argnums, n))

        if trace is None or _rule_unused(flat):
            return fun(*diff)
        if isinstance(trace, JvpTrace):  # the primal, with tangents that raise where needed
            vals = [trace.to_tracer(x).val for x in flat]
            out = self(*_merge(nondiff, tree_util.tree_unflatten(in_tree, vals),
                               self.nondiff_argnums, n))
            out_flat, out_tree = tree_util.tree_flatten(out)
            error = _forward_mode_error(name)
            return tree_util.tree_unflatten(out_tree, [
                trace.out_tracer(o, NoTangent(error, aval(o).strip_weak_type()))
                for o in (as_value(o) if type(o) is not Tracer else o for o in out_flat)])
        fwd = _flat_fwd(self.fwd, nondiff, self.nondiff_argnums, n, in_tree, name)
        bwd = _flat_bwd(self.bwd, nondiff, in_tree, diff, name)
        if isinstance(trace, GradTrace):
            tracers = [trace.to_tracer(x) for x in flat]
            outs = _grad_custom_vjp(trace, tracers, fwd, bwd, 0, name)
            return tree_util.tree_unflatten(fwd.out_tree, list(outs))
        closed, consts, out_tree = _stage("custom_vjp", fun, flat, in_tree, name)
        fwd.out_tree = out_tree
        outs = bind(custom_vjp_call_p, *consts, *flat, name=name, jaxpr=closed, fwd=fwd,
                    bwd=bwd, num_consts=len(consts))
        return tree_util.tree_unflatten(out_tree, list(outs))


def _forward_mode_error(name):
    return TypeError(f"can't apply forward-mode autodiff (jvp) to the custom_vjp function "
                     f"{name}{user_line()}: it defines only a reverse-mode rule (as in JAX). Use "
                     "fg.custom_jvp for a rule that works in both modes, or reverse mode (grad, "
                     "vjp, jacrev).")


def _describe_cts(cts):
    if isinstance(cts, (tuple, list)):
        return f"{type(cts).__name__} of length {len(cts)}"
    return type(cts).__name__


def _flat_fwd(user_fwd, nondiff, nondiff_argnums, n, in_tree, name):
    """fwd as `fwd(flat_args) -> (flat_outs, residuals)`."""
    def fwd(args):
        d = tree_util.tree_unflatten(in_tree, list(args))
        res = user_fwd(*_merge(nondiff, d, nondiff_argnums, n))
        if not (isinstance(res, (tuple, list)) and len(res) == 2):
            raise TypeError(f"custom_vjp fwd of {name} must return (output, residuals), got "
                            f"{type(res).__name__}{user_line()}.")
        out, residuals = res
        out_flat, out_tree = tree_util.tree_flatten(out)
        if fwd.out_tree is None:
            fwd.out_tree = out_tree
        elif out_tree != fwd.out_tree:
            raise TypeError(f"custom_vjp {name}: fwd's output has structure {out_tree}, but the "
                            f"function returns {fwd.out_tree}{user_line()}.")
        return [as_value(o) if type(o) is not Tracer else o for o in out_flat], residuals
    fwd.out_tree = None
    fwd.__name__ = _name(user_fwd)
    return fwd


def _flat_bwd(user_bwd, nondiff, in_tree, diff, name):
    """bwd as `bwd(residuals, flat_cts) -> flat input cotangents (None for zero)`."""
    leaf_counts = [len(tree_util.tree_leaves(a)) for a in diff]

    def bwd(residuals, cts, out_tree):
        cts = bwd_checked(user_bwd(*nondiff, residuals,
                                   tree_util.tree_unflatten(out_tree, list(cts))))
        flat = []
        for c, k in zip(cts, leaf_counts):
            flat.extend([None] * k if c is None else tree_util.tree_leaves(c))
        return flat

    def bwd_checked(cts):
        if not isinstance(cts, (tuple, list)) or len(cts) != len(diff):
            raise TypeError(
                f"custom_vjp {name}: bwd must return a tuple with one cotangent per "
                f"differentiable argument ({len(diff)}), got {_describe_cts(cts)}.")
        for k, (c, a) in enumerate(zip(cts, diff)):
            if c is None:
                continue
            ct_tree, a_tree = tree_util.tree_structure(c), tree_util.tree_structure(a)
            if ct_tree != a_tree:
                raise TypeError(f"custom_vjp {name}: bwd's cotangent {k} has structure "
                                f"{ct_tree}, but the argument has {a_tree}.")
        return cts

    bwd.__name__ = _name(user_bwd)
    return bwd


def _grad_custom_vjp(trace, tracers, fwd, bwd, num_consts, name):
    """Reverse mode of a custom_vjp call: fwd at the level below, one tape entry holding the
    residuals (as its `ins`, where vjp_jaxpr can find and substitute them), bwd on the way back."""
    if any(t.aux is not None for t in tracers[:num_consts]):
        raise _closure_error("custom_vjp", name, "differentiated")
    vals = [t.val for t in tracers]
    outs, residuals = fwd(vals[num_consts:])
    res_leaves, res_tree = tree_util.tree_flatten(residuals)
    params = {"bwd": bwd, "res_tree": res_tree, "out_tree": fwd.out_tree,
              "num_consts": num_consts}
    return tuple(_record(trace, tracers, outs, _bwd_entry_p, params, tuple(res_leaves)))


def _bwd_vjp(ct, residuals, out, active, *, bwd, res_tree, out_tree, num_consts):
    cts = ct if isinstance(ct, (tuple, list)) else (ct,)
    in_cts = bwd(tree_util.tree_unflatten(res_tree, list(residuals)), cts, out_tree)
    return (None,) * num_consts + tuple(c if a else None
                                        for c, a in zip(in_cts, active[num_consts:]))


# The tape entry of a custom_vjp call: its residuals are fwd's residuals.
_bwd_entry_p = _TapeEntry("custom_vjp_call", _bwd_vjp)


def _custom_vjp_grad(trace, tracers, params):
    return _grad_custom_vjp(trace, tracers, params["fwd"], params["bwd"], params["num_consts"],
                            params["name"])


def _custom_vjp_vjp(ct, primals, out, active, *, name, jaxpr, fwd, bwd, num_consts):
    """The VJP from the primal operands alone (fwd is re-run)."""
    if any(active[:num_consts]):
        raise _closure_error("custom_vjp", name, "differentiated")
    _, residuals = fwd(list(primals[num_consts:]))
    cts = ct if isinstance(ct, (tuple, list)) else (ct,)
    in_cts = bwd(residuals, cts, fwd.out_tree)
    return (None,) * num_consts + tuple(c if a else None
                                        for c, a in zip(in_cts, active[num_consts:]))


def _custom_vjp_jvp(primals, tangents, out, *, name, jaxpr, **params):
    """Forward mode has no rule to apply: the outputs' tangents are NoTangent, which raise
    JAX's error where a tangent is needed (jvp of the function), not in forward-over-reverse."""
    error = _forward_mode_error(name)
    return tuple(NoTangent(error, a.strip_weak_type()) for a in jaxpr.out_avals)


def _custom_vjp_jvp_with_primal(primals, tangents, **params):
    outs = bind(custom_vjp_call_p, *primals, **params)
    return outs, _custom_vjp_jvp(primals, tangents, outs, **params)


class _BatchedResiduals:
    """How a batched fwd's residuals fit together: the batch dims of its array leaves, the other
    leaves (static Python values), and the pytree structure. A leaf of the residual pytree
    itself, so that the batched bwd reads it back."""

    def __init__(self, tree, leaves, dynamic, dims):
        self.tree, self.dims, self.dynamic = tree, dims, dynamic
        self.static = [None if k in dynamic else x for k, x in enumerate(leaves)]

    def rebuild(self, values):
        leaves = list(self.static)
        for k, v in zip(self.dynamic, values):
            leaves[k] = v
        return tree_util.tree_unflatten(self.tree, leaves)


def _is_array(x):
    return type(x) is Tracer or hasattr(x, "shape") and hasattr(x, "dtype")


def _custom_vjp_batch(vals, dims, *, name, jaxpr, fwd, bwd, num_consts):
    """vmap batches the program, and fwd and bwd lazily: fwd's outputs get the batch axis in
    front, its residuals keep theirs; the cotangent of an unbatched operand is summed over the
    batch (each example's VJP contributes to it)."""
    size, vals, in_b = _batched_operands(vals, dims, num_consts, "custom_vjp", name)
    bj, bconsts, _ = batch_jaxpr(jaxpr, in_b, size, True)
    arg_b = in_b[num_consts:]
    arg_dims = [0 if b else None for b in arg_b]

    def batched_fwd(args):
        box = {}

        def flat(*a):
            outs, res = fwd(list(a))
            leaves, tree = tree_util.tree_flatten(res)
            dynamic = [k for k, x in enumerate(leaves) if _is_array(x)]
            box.update(n=len(outs), tree=tree, leaves=leaves, dynamic=dynamic)
            return list(outs) + [leaves[k] for k in dynamic]

        got, got_dims = batch_fun(flat, list(args), arg_dims, size)
        n = box["n"]
        outs = [at_front(o, d, size) for o, d in zip(got[:n], got_dims[:n])]
        meta = _BatchedResiduals(box["tree"], box["leaves"], box["dynamic"], got_dims[n:])
        return outs, (list(got[n:]), meta)

    def batched_bwd(residuals, cts, out_tree):
        res_vals, meta = residuals
        n_res = len(res_vals)

        def flat(*a):
            in_cts = bwd(meta.rebuild(a[:n_res]), list(a[n_res:]), out_tree)
            return [ops.zeros(aval(x).update(shape=aval(x).shape[1:] if b else aval(x).shape))
                    if c is None else c for c, x, b in zip(in_cts, args_avals, arg_b)]

        got, got_dims = batch_fun(flat, list(res_vals) + list(cts),
                                  list(meta.dims) + [0] * len(cts), size)
        in_cts = []
        for c, d, b in zip(got, got_dims, arg_b):
            c = at_front(c, d, size)
            in_cts.append(c if b else ops.reduce_sum(c, (0,)))
        return in_cts

    args_avals = [aval(v) for v in vals[num_consts:]]
    batched_fwd.out_tree = fwd.out_tree
    batched_fwd.__name__ = f"vmap({fwd.__name__})"
    batched_bwd.__name__ = f"vmap({bwd.__name__})"
    outs = bind(custom_vjp_call_p, *bconsts, *vals, name=name, jaxpr=bj, fwd=batched_fwd,
                bwd=batched_bwd, num_consts=len(bconsts) + num_consts)
    return outs, [0] * len(outs)


custom_vjp_call_p = Primitive("custom_vjp_call", multiple_results=True, impl=_call_impl,
                              abstract_eval=_call_abstract, jvp=_custom_vjp_jvp,
                              vjp=_custom_vjp_vjp, batch=_custom_vjp_batch, residuals="in")
custom_vjp_call_p.jvp_with_primal = _custom_vjp_jvp_with_primal
custom_vjp_call_p.grad_rule = _custom_vjp_grad
custom_vjp_call_p.custom_rule = True  # jit's code generator runs `jaxpr` alone (passes.inline)

