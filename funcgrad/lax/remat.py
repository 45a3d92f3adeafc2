"""remat (fg.checkpoint): the checkpoint primitive with all of its rules, saving policies, and
checkpoint_name.

    remat_p  (*args; jaxpr)                                  VJP re-runs the forward, then
                                                             backpropagates (fg.checkpoint)

The public wrapper, fg.checkpoint, is in funcgrad/transforms/checkpoint.py.
"""

from __future__ import annotations

from ..core import Primitive, bind, eval_jaxpr
from ..interpreters.batching import batch_jaxpr
from ..interpreters.jvp import jvp_jaxpr
from ..interpreters.programs import aval, eval_each
from ..interpreters.reverse import vjp_recompute
from ._batching import batch_size, move_to_front
from ._programs import compiled

__all__ = ["remat_p"]


# ---------------------------------------------------------------------------------------------
# remat (fg.checkpoint): its reverse mode stores only the inputs and re-runs the forward

def _remat_abstract(*avals, jaxpr, prevent_cse, policy):
    return list(jaxpr.out_avals)


def _remat_impl(xp, *args, jaxpr, prevent_cse, policy):
    return eval_jaxpr(jaxpr.jaxpr, (), *args)


def _remat_jvp(primals, tangents, out, *, jaxpr, prevent_cse, policy):
    nz = [t is not None for t in tangents]
    jj, consts, o, missing = jvp_jaxpr(jaxpr, nz, [False] * len(jaxpr.out_avals), unknown=True)
    outs = bind(remat_p, *consts, *primals, *[t for t in tangents if t is not None],
                jaxpr=jj, prevent_cse=prevent_cse, policy=policy)
    n = len(jaxpr.out_avals)
    it = iter(outs[n:])
    return tuple(next(it) if z else m for z, m in zip(o, missing))  # m: None or a NoTangent


def _remat_vjp(ct, primals, out, active, *, jaxpr, prevent_cse, policy):
    ct = ct if isinstance(ct, (tuple, list)) else (ct,)
    return tuple(vjp_recompute(jaxpr, list(primals), list(active), list(ct)))


def _remat_batch(vals, dims, *, jaxpr, prevent_cse, policy):
    size = batch_size(vals, dims)
    b = [d is not None for d in dims]
    vals = [move_to_front(v, d) if d is not None else v for v, d in zip(vals, dims)]
    bj, consts, o = batch_jaxpr(jaxpr, b, size, False)
    outs = bind(remat_p, *consts, *vals, jaxpr=bj, prevent_cse=prevent_cse, policy=policy)
    return outs, [0 if x else None for x in o]


def _remat_compile(xp, compile_jaxpr, *, jaxpr, prevent_cse, policy):
    fn = compiled(compile_jaxpr, xp, jaxpr)
    return lambda *args: fn(*args)


remat_p = Primitive("checkpoint", multiple_results=True, impl=_remat_impl,
                    abstract_eval=_remat_abstract, jvp=_remat_jvp, vjp=_remat_vjp,
                    batch=_remat_batch, residuals="in")
remat_p.compile_rule = _remat_compile


# A saving policy (fg.checkpoint(f, policy=...)): the forward pass keeps the outputs of the
# equations the policy names, and the backward pass recomputes everything else around them.

def _policy_saves(policy, eqn):
    if eqn.primitive.multiple_results or len(eqn.outvars) != 1:
        return False
    return bool(policy(eqn.primitive, *[v.aval for v in eqn.invars], **eqn.params))


def _remat_grad(trace, tracers, params):
    """Reverse mode of remat with a saving policy (without one: the generic rule, which keeps
    only the inputs)."""
    policy = params["policy"]
    if policy is None:
        return NotImplemented
    closed = params["jaxpr"]
    vals = [t.val for t in tracers]
    saved = {}

    def run(eqn, ins):
        out = bind(eqn.primitive, *ins, **eqn.params)
        if _policy_saves(policy, eqn):
            saved[eqn.outvars[0]] = out
        return out

    outs = eval_each(closed, vals, run)
    out_tracers = tuple(trace.out_tracer(o) for o in outs)
    out_ids = tuple(t.aux for t in out_tracers)
    if any(i is not None for i in out_ids):
        trace.tape.append((_remat_saved_p, {"jaxpr": closed, "saved": saved},
                           tuple(t.aux for t in tracers), out_ids, tuple(vals),
                           tuple(aval(o) for o in outs),
                           tuple(t.aux is not None for t in tracers)))
    return out_tracers


class _RematSaved:
    """The tape entry of a checkpoint with a policy (never bound): its residuals are the inputs
    and the saved values; its VJP re-runs the rest of the forward, then backpropagates."""

    name = "checkpoint"
    multiple_results = True
    residuals_in_closure = True  # the saved values are a param: vjp_jaxpr cannot substitute them

    @staticmethod
    def vjp(ct, primals, out, active, *, jaxpr, saved):
        ct = ct if isinstance(ct, (tuple, list)) else (ct,)
        return tuple(vjp_recompute(jaxpr, list(primals), list(active), list(ct), saved))


_remat_saved_p = _RematSaved()
remat_p.grad_rule = _remat_grad


def _name_batch(vals, dims, *, name):
    return bind(name_p, vals[0], name=name), dims[0]


name_p = Primitive("name", impl=lambda xp, x, *, name: x, abstract_eval=lambda x, *, name: x,
                   jvp=lambda primals, tangents, out, *, name: tangents[0],
                   vjp=lambda ct, primals, out, active, *, name: (ct,),
                   batch=_name_batch, residuals="none")


def checkpoint_name(x, name):
    """`x`, labelled `name` for checkpoint policies (`save_only_these_names`, ...)."""
    return bind(name_p, x, name=str(name))
