"""while_loop and fori_loop: the while primitive with all of its rules, and the functions that
bind it.

    while_p  (*cond_consts, *body_consts, *carry; ...)       JVP by a while over the JVP body;
                                                             reverse mode raises (use scan)

fori_loop with static bounds lowers to a scan (funcgrad/lax/scans.py), which reverse mode can
differentiate; with traced bounds it lowers to a while_loop.
"""

from __future__ import annotations

import numpy as np

from .. import tree_util
from ..core import Primitive, Tracer, bind, eval_jaxpr, user_line
from ..interpreters.batching import batch_jaxpr
from ..interpreters.jvp import jvp_jaxpr
from ..interpreters.programs import aval, is_float, trace_flat
from . import elementwise as ew
from . import reductions
from . import structural as st
from ._batching import at_front, batch_size, move_to_front
from ._programs import (
    arrays,
    check_carry,
    compiled,
    concrete,
    ct_or_zero,
    permute_invars,
    promote_weak,
    with_extra_invars,
)
from .scans import scan

__all__ = ["while_loop", "fori_loop", "while_p"]


# ---------------------------------------------------------------------------------------------
# while_loop

def _while_split(args, cond_nconsts, body_nconsts):
    return (args[:cond_nconsts], args[cond_nconsts:cond_nconsts + body_nconsts],
            args[cond_nconsts + body_nconsts:])


def _while_abstract(*avals, cond_jaxpr, body_jaxpr, cond_nconsts, body_nconsts):
    return list(avals[cond_nconsts + body_nconsts:])


def _while_impl(xp, *args, cond_jaxpr, body_jaxpr, cond_nconsts, body_nconsts):
    cc, bc, carry = _while_split(args, cond_nconsts, body_nconsts)
    while bool(eval_jaxpr(cond_jaxpr.jaxpr, (), *cc, *carry)[0]):
        carry = eval_jaxpr(body_jaxpr.jaxpr, (), *bc, *carry)
    return list(carry)


def _while_compile(xp, compile_jaxpr, *, cond_jaxpr, body_jaxpr, cond_nconsts, body_nconsts):
    cond_fn = compiled(compile_jaxpr, xp, cond_jaxpr)
    body_fn = compiled(compile_jaxpr, xp, body_jaxpr)

    def run(*args):
        cc, bc, carry = _while_split(args, cond_nconsts, body_nconsts)
        while bool(cond_fn(*cc, *carry)[0]):
            carry = body_fn(*bc, *carry)
        return list(carry)
    return run


def _while_jvp(primals, tangents, out, *, cond_jaxpr, body_jaxpr, cond_nconsts, body_nconsts):
    nc, nb = cond_nconsts, body_nconsts
    cc, bc, carry = _while_split(primals, nc, nb)
    _, bct, kt = _while_split(tangents, nc, nb)
    bc_nz = [t is not None for t in bct]
    k_nz = [t is not None and is_float(aval(p)) for t, p in zip(kt, carry)]
    while True:
        _, _, o = jvp_jaxpr(body_jaxpr, bc_nz + k_nz, [False] * len(k_nz))
        new = [a or (b and is_float(aval(p))) for a, b, p in zip(k_nz, o, carry)]
        if new == k_nz:
            break
        k_nz = new
    jb, jconsts, _ = jvp_jaxpr(body_jaxpr, bc_nz + k_nz, k_nz)
    # jb's inputs: bc, carry, bc tangents, carry tangents -> consts first, then the carries
    nbt, nk, nkt = sum(bc_nz), len(carry), sum(k_nz)
    ncj = len(jconsts)
    order = (list(range(ncj + nb)) + list(range(ncj + nb + nk, ncj + nb + nk + nbt))
             + list(range(ncj + nb, ncj + nb + nk)) + list(range(ncj + nb + nk + nbt,
                                                                 ncj + nb + nk + nbt + nkt)))
    jb = permute_invars(jb, order)
    t_avals = [aval(p).strip_weak_type() for p, nz in zip(carry, k_nz) if nz]
    jc = with_extra_invars(cond_jaxpr, t_avals)
    bct_nz = [t for t in bct if t is not None]
    kts = [ct_or_zero(t, aval(p)) for t, p, nz in zip(kt, carry, k_nz) if nz]
    outs = bind(while_p, *cc, *jconsts, *bc, *bct_nz, *carry, *kts, cond_jaxpr=jc,
                body_jaxpr=jb, cond_nconsts=nc, body_nconsts=ncj + nb + nbt)
    it = iter(outs[nk:])
    return tuple(next(it) if nz else None for nz in k_nz)


class WhileReverseModeError(TypeError, NotImplementedError):
    """Reverse-mode differentiation of a while_loop (not supported, as in JAX)."""


def _while_grad(trace, tracers, params):
    raise WhileReverseModeError(
        f"Reverse-mode differentiation (grad, vjp, jacrev) does not work through "
        f"fg.lax.while_loop{user_line()}: the number of iterations is only known at run time, so "
        "the values of every step cannot be stored for the backward pass (JAX raises the same "
        "error). Use fg.lax.fori_loop with static (Python int) bounds, which lowers to a scan, or "
        "fg.lax.scan with a fixed length; forward mode (fg.jvp, fg.jacfwd) works through "
        "while_loop.")


def _while_vjp(ct, primals, out, active, **params):
    _while_grad(None, None, params)


def _while_batch(vals, dims, *, cond_jaxpr, body_jaxpr, cond_nconsts, body_nconsts):
    size = batch_size(vals, dims)
    nc, nb = cond_nconsts, body_nconsts
    vals = [move_to_front(v, d) if d is not None else v for v, d in zip(vals, dims)]
    b = [d is not None for d in dims]
    cc_b, bc_b, k_b = _while_split(b, nc, nb)
    cc, bc, carry = _while_split(vals, nc, nb)
    k_b = list(k_b)
    while True:
        _, _, o = batch_jaxpr(body_jaxpr, list(bc_b) + k_b, size, False)
        _, _, p = batch_jaxpr(cond_jaxpr, list(cc_b) + k_b, size, False)
        new = [x or y for x, y in zip(k_b, o)]
        if p[0]:   # a batched predicate: every lane's carry is batched
            new = [True] * len(k_b)
        if new == k_b:
            break
        k_b = new
    carry = [at_front(c, 0 if was else None, size) if want and not was else c
             for c, was, want in zip(carry, _while_split(b, nc, nb)[2], k_b)]
    bb, bconsts, _ = batch_jaxpr(body_jaxpr, list(bc_b) + k_b, size, k_b)
    cb, cconsts, pred_b = batch_jaxpr(cond_jaxpr, list(cc_b) + k_b, size, False)
    out_dims = [0 if x else None for x in k_b]
    if not pred_b[0]:
        outs = bind(while_p, *cconsts, *cc, *bconsts, *bc, *carry, cond_jaxpr=cb, body_jaxpr=bb,
                    cond_nconsts=len(cconsts) + nc, body_nconsts=len(bconsts) + nb)
        return outs, out_dims
    # Batched predicate: loop while any lane is running; finished lanes keep their carry.
    ncc, nbc = len(cconsts) + nc, len(bconsts) + nb
    k_avals = [aval(c) for c in carry]
    c_avals = [aval(c) for c in list(cconsts) + list(cc)]
    b_avals = [aval(c) for c in list(bconsts) + list(bc)]

    def any_cond(*args):
        p = eval_jaxpr(cb.jaxpr, (), *args)[0]
        return [reductions.reduce_max(p, (0,))]

    def masked_body(*args):
        cargs, bargs, ks = args[:ncc], args[ncc:ncc + nbc], args[ncc + nbc:]
        p = eval_jaxpr(cb.jaxpr, (), *cargs, *ks)[0]
        new = eval_jaxpr(bb.jaxpr, (), *bargs, *ks)
        return [ew.select_n(st.reshape(p, (size,) + (1,) * (len(aval(k).shape) - 1)), k, n)
                for k, n in zip(ks, new)]

    any_j, any_consts = trace_flat(any_cond, c_avals + k_avals, "while_cond")
    body_j, body_consts = trace_flat(masked_body, c_avals + b_avals + k_avals, "while_body")
    outs = bind(while_p, *any_consts, *cconsts, *cc, *body_consts, *cconsts, *cc, *bconsts, *bc,
                *carry, cond_jaxpr=any_j, body_jaxpr=body_j,
                cond_nconsts=len(any_consts) + ncc, body_nconsts=len(body_consts) + ncc + nbc)
    return outs, [0] * len(outs)


while_p = Primitive("while", multiple_results=True, impl=_while_impl,
                    abstract_eval=_while_abstract, jvp=_while_jvp, vjp=_while_vjp,
                    batch=_while_batch, residuals="in")
while_p.compile_rule = _while_compile
while_p.grad_rule = _while_grad


def while_loop(cond_fun, body_fun, init_val):
    """`while cond_fun(val): val = body_fun(val)`, kept in the program (JAX's semantics).

    Forward mode and vmap work through it (a batched predicate runs until every lane is done);
    reverse mode does not (use fori_loop with static bounds or scan)."""
    init_flat, in_tree = tree_util.tree_flatten(init_val)
    for attempt in range(2):
        avals = [aval(x) for x in init_flat]
        box = {}

        def body(*args, box=box):
            out = body_fun(tree_util.tree_unflatten(in_tree, list(args)))
            leaves, box["tree"] = tree_util.tree_flatten(out)
            return leaves

        def cond_f(*args):
            p = cond_fun(tree_util.tree_unflatten(in_tree, list(args)))
            pa = aval(p)
            if pa.shape != () or pa.dtype.kind != "b":
                raise TypeError(f"while_loop: cond_fun must return a boolean scalar, got "
                                f"{pa.str_short()}{user_line()}.")
            return [p]

        bj, bconsts = trace_flat(body, avals, "while_body")
        if attempt == 0:
            init_flat, changed = promote_weak(init_flat, avals, bj.out_avals)
            if changed:
                continue
        check_carry("while_loop body_fun", in_tree, box["tree"], avals, bj.out_avals,
                     tree_util.tree_unflatten(in_tree, init_flat))
        break
    cj, cconsts = trace_flat(cond_f, avals, "while_cond")
    outs = bind(while_p, *cconsts, *bconsts, *arrays(init_flat), cond_jaxpr=cj, body_jaxpr=bj,
                cond_nconsts=len(cconsts), body_nconsts=len(bconsts))
    return tree_util.tree_unflatten(in_tree, list(outs))


def fori_loop(lower, upper, body_fun, init_val, *, unroll=1):
    """`for i in range(lower, upper): val = body_fun(i, val)`. Static (Python int) bounds lower
    to a scan, which reverse mode can differentiate; traced bounds lower to a while_loop.
    Bounds must be integer scalars (as in JAX)."""
    for name, b in (("lower", lower), ("upper", upper)):
        a = aval(b)
        if a.dtype.kind not in "iu" or a.shape != ():
            raise TypeError(f"fori_loop: {name} must be an integer scalar, got "
                            f"{a.str_short()}{user_line()}; pass int bounds, e.g. "
                            "fori_loop(0, int(n), body, init)")
    lo, hi = concrete(lower), concrete(upper)
    static = (lo is not None and hi is not None and type(lower) is not Tracer
              and type(upper) is not Tracer)
    if static:
        n = max(int(hi) - int(lo), 0)

        def step(carry, _):
            i, x = carry
            return (i + 1, body_fun(i, x)), None

        (_, out), _ = scan(step, (lower, init_val), None, length=n, unroll=unroll)
        return out

    def cond_f(c):
        return ew.lt(c[0], c[1])

    def body_f(c):
        i, u, x = c
        return (ew.add(i, np.array(1, aval(i).dtype)), u, body_fun(i, x))

    dt = np.result_type(aval(lower).dtype, aval(upper).dtype)
    lower = ew.convert_element_type(lower, dt) if aval(lower).dtype != dt else lower
    upper = ew.convert_element_type(upper, dt) if aval(upper).dtype != dt else upper
    return while_loop(cond_f, body_f, (lower, upper, init_val))[2]
