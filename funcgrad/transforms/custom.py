"""User-defined derivative rules: `custom_jvp` and `custom_vjp`, with JAX's decorator protocol.

A call finds the highest-level trace among its arguments and hands itself to that trace:
forward mode applies the JVP rule; reverse mode records one tape entry whose VJP is the user's
`bwd` (custom_vjp) or the transpose of the user's JVP rule (custom_jvp: the rule is linear in
the tangents, so its VJP at zero tangents is that transpose). Other traces (make_jaxpr, vmap)
trace through the function itself.
"""

from __future__ import annotations

import functools
import inspect

import numpy as np

from .. import tree_util
from ..core import Primitive, Tracer, user_line
from ..interpreters.jvp import JvpTrace
from ..interpreters.programs import aval_of
from ..interpreters.reverse import GradTrace, trace_vjp
from ._util import fun_name, top_trace


def _describe_cts(cts):
    if isinstance(cts, (tuple, list)):
        return f"{type(cts).__name__} of length {len(cts)}"
    return type(cts).__name__


def _resolve_args(fun, args, kwargs):
    if not kwargs:
        return tuple(args)
    sig = inspect.signature(fun)
    bound = sig.bind(*args, **kwargs)
    bound.apply_defaults()
    return tuple(bound.arguments.values())


def _split(args, nondiff_argnums):
    nondiff = tuple(args[i] for i in nondiff_argnums)
    diff = tuple(a for i, a in enumerate(args) if i not in nondiff_argnums)
    return nondiff, diff


def _merge(nondiff, diff, nondiff_argnums, n):
    it_n, it_d = iter(nondiff), iter(diff)
    return tuple(next(it_n) if i in nondiff_argnums else next(it_d) for i in range(n))


class custom_jvp:
    """Decorate a function whose JVP you define: `@f.defjvp def f_jvp(primals, tangents): ...`
    returning `(primal_out, tangent_out)`. Arguments listed in `nondiff_argnums` are passed to the
    rule first, outside `primals`, and are never differentiated."""

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
        self.jvp_rule = rule

    def __call__(self, *args, **kwargs):
        if self.jvp_rule is None:
            raise AttributeError(f"No JVP defined for custom_jvp function {fun_name(self.fun)}; "
                                 "call .defjvp(rule) before using it.")
        args = _resolve_args(self.fun, args, kwargs)
        nondiff, diff = _split(args, self.nondiff_argnums)
        for x in tree_util.tree_leaves(nondiff):
            if type(x) is Tracer:
                raise TypeError(f"custom_jvp {fun_name(self.fun)}: a nondiff_argnums argument is a "
                                "traced array; nondiff arguments must be static (Python values, "
                                "functions).")
        trace = top_trace(tree_util.tree_leaves(diff))
        n = len(args)

        def fun(*d):
            return self.fun(*_merge(nondiff, d, self.nondiff_argnums, n))

        def rule(primals, tangents):
            return self.jvp_rule(*nondiff, primals, tangents)

        if isinstance(trace, JvpTrace):
            return jvp_of_custom_jvp(trace, fun, rule, diff)
        if isinstance(trace, GradTrace):
            return grad_of_custom_jvp(trace, fun, rule, diff)
        return fun(*diff)


class custom_vjp:
    """Decorate a function whose VJP you define with `f.defvjp(fwd, bwd)`: `fwd(*args) ->
    (out, residuals)`, `bwd(*nondiff, residuals, ct) -> tuple of cotangents, one per
    differentiable argument`."""

    def __init__(self, fun, nondiff_argnums=()):
        functools.update_wrapper(self, fun)
        self.fun = fun
        self.nondiff_argnums = tuple(nondiff_argnums)
        self.fwd = self.bwd = None

    def defvjp(self, fwd, bwd):
        self.fwd, self.bwd = fwd, bwd

    def __call__(self, *args, **kwargs):
        if self.fwd is None:
            raise AttributeError(f"No VJP defined for custom_vjp function {fun_name(self.fun)}; "
                                 "call .defvjp(fwd, bwd) before using it.")
        args = _resolve_args(self.fun, args, kwargs)
        nondiff, diff = _split(args, self.nondiff_argnums)
        trace = top_trace(tree_util.tree_leaves(diff))
        n = len(args)

        def fun(*d):
            return self.fun(*_merge(nondiff, d, self.nondiff_argnums, n))

        def fwd(*d):
            return self.fwd(*_merge(nondiff, d, self.nondiff_argnums, n))

        def bwd(res, ct):
            cts = self.bwd(*nondiff, res, ct)
            if not isinstance(cts, (tuple, list)) or len(cts) != len(diff):
                raise TypeError(
                    f"custom_vjp {fun_name(self.fun)}: bwd must return a tuple with one cotangent "
                    f"per differentiable argument ({len(diff)}), got "
                    f"{_describe_cts(cts)}.")
            for k, (c, a) in enumerate(zip(cts, diff)):
                ct_tree = tree_util.tree_structure(c) if c is not None else None
                a_tree = tree_util.tree_structure(a)
                if c is not None and ct_tree != a_tree:
                    raise TypeError(f"custom_vjp {fun_name(self.fun)}: bwd's cotangent {k} has "
                                    f"structure {ct_tree}, but the argument has {a_tree}.")
            return tuple(cts)

        if isinstance(trace, JvpTrace):
            raise TypeError(f"can't apply forward-mode autodiff (jvp) to the custom_vjp function "
                            f"{fun_name(self.fun)}{user_line()}: it defines only a reverse-mode "
                            "rule. Use fg.custom_jvp for a rule that works in both modes, or "
                            "reverse mode (grad, vjp, jacrev).")
        if isinstance(trace, GradTrace):
            return grad_of_custom_vjp(trace, fun, fwd, bwd, diff)
        return fun(*diff)


# ---------------------------------------------------------------------------------------------
# How the autodiff traces process custom rules.

def _closure_vjp(cts, primals, outs, active, *, backward):
    return backward(cts, active)


custom_rule_p = Primitive("custom_rule", multiple_results=True, vjp=_closure_vjp)
custom_rule_p.residuals_in_closure = True


def jvp_of_custom_jvp(trace, fun, rule, args):
    flat, tree = tree_util.tree_flatten(args)
    tracers = [trace.to_tracer(x) for x in flat]
    primals = tree_util.tree_unflatten(tree, [t.val for t in tracers])
    tangents = tree_util.tree_unflatten(tree, [
        t.aux if t.aux is not None else np.zeros(t.aval.shape, t.aval.dtype) for t in tracers])
    out, t_out = rule(tuple(primals), tuple(tangents))
    out_flat, out_tree = tree_util.tree_flatten(out)
    t_flat = tree_util.tree_leaves(t_out)
    if len(t_flat) != len(out_flat):
        raise TypeError(f"custom_jvp rule returned a tangent with structure "
                        f"{tree_util.tree_structure(t_out)} for an output with structure "
                        f"{out_tree}{user_line()}.")
    return tree_util.tree_unflatten(out_tree, [trace.out_tracer(o, t)
                                               for o, t in zip(out_flat, t_flat)])


def grad_of_custom_jvp(trace, fun, rule, args):
    flat, tree = tree_util.tree_flatten(args)
    tracers = [trace.to_tracer(x) for x in flat]
    vals = [t.val for t in tracers]
    out = fun(*tree_util.tree_unflatten(tree, vals))
    out_flat, out_tree = tree_util.tree_flatten(out)
    active = tuple(t.aux is not None for t in tracers)
    if True not in active:
        return tree_util.tree_unflatten(out_tree, [trace.lift(o) for o in out_flat])
    primals = tuple(tree_util.tree_unflatten(tree, vals))

    def backward(cts, act):
        # The rule's tangent output is linear in the tangents: its VJP (taken at zero tangents)
        # is the transpose we need.
        zeros = [np.zeros(aval_of(v).shape, aval_of(v).dtype) for v in vals]

        def tangent_map(*t_flat):
            _, t_out = rule(primals, tuple(tree_util.tree_unflatten(tree, list(t_flat))))
            return tree_util.tree_leaves(t_out)

        _, _, _, back, _ = trace_vjp(tangent_map, tuple(zeros),
                                     [a and aval_of(v).dtype.kind in "fc"
                                      for a, v in zip(act, vals)])
        return back(list(cts), consume=True)

    return _record(trace, tracers, out_flat, out_tree, backward)


def grad_of_custom_vjp(trace, fun, fwd, bwd, args):
    flat, tree = tree_util.tree_flatten(args)
    tracers = [trace.to_tracer(x) for x in flat]
    vals = tree_util.tree_unflatten(tree, [t.val for t in tracers])
    res = fwd(*vals)
    if not (isinstance(res, (tuple, list)) and len(res) == 2):
        raise TypeError(f"custom_vjp fwd of {fun_name(fun)} must return (output, residuals), got "
                        f"{type(res).__name__}.")
    out, residuals = res
    out_flat, out_tree = tree_util.tree_flatten(out)
    if True not in (t.aux is not None for t in tracers):
        return tree_util.tree_unflatten(out_tree, [trace.lift(o) for o in out_flat])

    def backward(cts, act):
        ct_tree = tree_util.tree_unflatten(out_tree, list(cts))
        in_cts = bwd(residuals, ct_tree)
        flat_cts = []
        for c, a in zip(in_cts, vals):
            if c is None:
                flat_cts.extend([None] * len(tree_util.tree_leaves(a)))
            else:
                flat_cts.extend(tree_util.tree_leaves(c))
        return flat_cts

    return _record(trace, tracers, out_flat, out_tree, backward)


def _record(trace, tracers, out_flat, out_tree, backward):
    out_tracers = [trace.out_tracer(o) for o in out_flat]
    trace.tape.append((custom_rule_p, {"backward": backward}, tuple(t.aux for t in tracers),
                       tuple(t.aux for t in out_tracers), None, tuple(out_flat),
                       tuple(t.aux is not None for t in tracers)))
    return tree_util.tree_unflatten(out_tree, out_tracers)
