"""cond and switch: the cond primitive with all of its rules, and the functions that bind it.

    cond_p   (index, *ops; branches)                         taken branch; JVP/VJP per branch;
                                                             batched index -> select of branches

Each branch is a ClosedJaxpr param whose constants were hoisted to explicit leading operands, so
every transform sees closed-over values (tracers of an outer grad or vmap) as ordinary inputs.
"""

from __future__ import annotations

import numpy as np

from .. import tree_util
from ..core import ClosedJaxpr, Jaxpr, Primitive, Var, bind, eval_jaxpr, user_line
from ..interpreters.batching import batch_jaxpr
from ..interpreters.jvp import jvp_jaxpr
from ..interpreters.programs import aval, is_float, trace_flat
from ..interpreters.reverse import vjp_recompute
from . import elementwise as ew
from . import structural as st
from ._batching import batch_size, move_to_front
from ._programs import arrays, compiled, concrete, leaf_paths, same_type

__all__ = ["cond", "switch", "cond_p"]


# ---------------------------------------------------------------------------------------------
# cond / switch

def _cond_abstract(index, *ops, branches):
    if index.shape != () or index.dtype.kind not in "iu":
        raise TypeError(f"cond/switch index must be an integer scalar, got {index.str_short()}")
    return list(branches[0].out_avals)


def _clamp_index(i, n):
    return int(min(max(int(i), 0), n - 1))


def _cond_impl(xp, index, *ops, branches):
    b = branches[_clamp_index(index, len(branches))]
    return eval_jaxpr(b.jaxpr, b.consts, *ops)


def _cond_jvp(primals, tangents, out, *, branches):
    index, ops = primals[0], primals[1:]
    nz = [t is not None for t in tangents[1:]]
    union = [False] * len(branches[0].out_avals)
    for b in branches:
        _, _, o = jvp_jaxpr(b, nz, [False] * len(union))
        union = [u or x for u, x in zip(union, o)]
    union = [u and is_float(a) for u, a in zip(union, branches[0].out_avals)]
    jbs, all_consts = [], []
    for b in branches:
        jb, consts, _ = jvp_jaxpr(b, nz, union)
        jbs.append((jb, consts))
        all_consts.extend(consts)
    new = _join_consts(jbs)
    tans = [t for t in tangents[1:] if t is not None]
    outs = bind(cond_p, index, *all_consts, *ops, *tans, branches=new)
    n = len(union)
    t_it = iter(outs[n:])
    return tuple(next(t_it) if u else None for u in union)


def _join_consts(branch_consts):
    """Branches with their own hoisted consts -> branches taking every branch's consts first."""
    all_avals = [[aval(c) for c in consts] for _, consts in branch_consts]
    out = []
    for k, (b, consts) in enumerate(branch_consts):
        before = [a for avs in all_avals[:k] for a in avs]
        after = [a for avs in all_avals[k + 1:] for a in avs]
        j = b.jaxpr
        nc = len(consts)
        invars = ([Var(a) for a in before] + list(j.invars[:nc]) + [Var(a) for a in after]
                  + list(j.invars[nc:]))
        out.append(ClosedJaxpr(Jaxpr([], invars, j.outvars, j.eqns), []))
    return tuple(out)


def _cond_vjp(ct, primals, out, active, *, branches):
    index, ops = primals[0], primals[1:]
    act = list(active[1:])
    outs_avals = branches[0].out_avals
    ct = ct if isinstance(ct, (tuple, list)) else (ct,)
    ct_mask = [is_float(a) for a in outs_avals]
    cts = [c for c, m in zip(ct, ct_mask) if m]
    op_avals = [aval(o) for o in ops]
    ct_avals = [a.strip_weak_type() for a, m in zip(outs_avals, ct_mask) if m]
    n = len(ops)
    bwds = []
    for b in branches:
        def fun(*args, b=b):
            it = iter(args[n:])
            full = [next(it) if m else None for m in ct_mask]
            return [c for c in vjp_recompute(b, args[:n], act, full) if c is not None]
        bwds.append(trace_flat(fun, op_avals + ct_avals, "cond_vjp"))
    consts = [c for _, cs in bwds for c in cs]
    res = bind(cond_p, index, *consts, *ops, *cts, branches=_join_consts(bwds))
    it = iter(res)
    return (None,) + tuple(next(it) if a else None for a in act)


def _cond_batch(vals, dims, *, branches):
    size = batch_size(vals, dims)
    index, ops = vals[0], vals[1:]
    op_b = [d is not None for d in dims[1:]]
    ops = [move_to_front(o, d) if d is not None else o for o, d in zip(ops, dims[1:])]
    if dims[0] is None:
        union = [False] * len(branches[0].out_avals)
        for b in branches:
            _, _, o = batch_jaxpr(b, op_b, size, False)
            union = [u or x for u, x in zip(union, o)]
        bbs = [batch_jaxpr(b, op_b, size, union)[:2] for b in branches]
        consts = [c for _, cs in bbs for c in cs]
        outs = bind(cond_p, index, *consts, *ops, branches=_join_consts(bbs))
        return outs, [0 if u else None for u in union]
    # A batched index: every branch runs on the whole batch, then each lane picks its result.
    idx = move_to_front(index, dims[0])
    n = len(branches)
    idx = ew.max(ew.min(idx, np.array(n - 1, idx.dtype)), np.array(0, idx.dtype))
    results = []
    for b in branches:
        bb, consts, _ = batch_jaxpr(b, op_b, size, True)
        results.append(eval_jaxpr(bb.jaxpr, (), *consts, *ops))  # consts lead the inputs
    outs = []
    for k in range(len(results[0])):
        cases = [r[k] for r in results]
        which = st.reshape(idx, (size,) + (1,) * (cases[0].ndim - 1))
        if n == 2:
            which = ew.ne(which, np.array(0, which.dtype))
        outs.append(ew.select_n(which, *cases))
    return outs, [0] * len(outs)


def _cond_compile(xp, compile_jaxpr, *, branches):
    fns = [compiled(compile_jaxpr, xp, b) for b in branches]
    n = len(fns)

    def run(index, *ops):
        return fns[_clamp_index(index, n)](*ops)
    return run


cond_p = Primitive("cond", multiple_results=True, impl=_cond_impl, abstract_eval=_cond_abstract,
                   jvp=_cond_jvp, vjp=_cond_vjp, batch=_cond_batch, residuals="in")
cond_p.compile_rule = _cond_compile


def _check_branch_outs(closeds, trees, what):
    t0 = trees[0]
    for k, t in enumerate(trees[1:], 1):
        if t != t0:
            raise TypeError(f"{what}: branch 0 and branch {k} must return the same pytree "
                            f"structure, got {t0} and {t}{user_line()}.")
    paths = leaf_paths(tree_util.tree_unflatten(t0, [0] * t0.num_leaves))
    a0 = closeds[0].out_avals
    for k, c in enumerate(closeds[1:], 1):
        for p, x, y in zip(paths, a0, c.out_avals):
            if not same_type(x, y):
                raise TypeError(f"{what}: branch outputs must have identical types; the output "
                                f"{p or '(the output)'} is {x.str_short()} in branch 0 but "
                                f"{y.str_short()} in branch {k}{user_line()}.")


def switch(index, branches, *operands):
    """Apply `branches[index](*operands)`; the index is clamped to the valid range (as JAX).

    With a concrete index (eagerly, or under grad/jvp called eagerly) only the taken branch runs
    and is differentiated; under jit and vmap the choice stays in the program (a cond equation).
    """
    branches = list(branches)
    if not branches:
        raise ValueError("switch: branches must be a non-empty sequence of functions")
    idx_val = concrete(index)
    if idx_val is not None and idx_val.shape != ():
        raise TypeError(f"switch/cond: the index (or predicate) must be a scalar, got shape "
                        f"{idx_val.shape}{user_line()}.")
    flat, in_tree = tree_util.tree_flatten(operands)
    avals = [aval(x) for x in flat]
    closeds, consts, trees = [], [], []
    for br in branches:
        box = {}

        def fun(*args, br=br, box=box):
            out = br(*tree_util.tree_unflatten(in_tree, list(args)))
            leaves, box["tree"] = tree_util.tree_flatten(out)
            return leaves

        c, cs = trace_flat(fun, avals, "cond_branch")
        closeds.append(c)
        consts.append(cs)
        trees.append(box["tree"])
    _check_branch_outs(closeds, trees, "cond" if len(branches) == 2 else "switch")
    if idx_val is not None:   # concrete: run the taken branch only
        k = _clamp_index(idx_val, len(branches))
        outs = eval_jaxpr(closeds[k].jaxpr, [], *consts[k], *arrays(flat))
        return tree_util.tree_unflatten(trees[0], outs)
    if aval(index).shape != ():
        raise TypeError(f"switch/cond: the index (or predicate) must be a scalar, got "
                        f"{aval(index).str_short()}{user_line()}. For elementwise choices use "
                        "fnp.where.")
    index = ew.convert_element_type(index, np.int32)
    joined = _join_consts(list(zip(closeds, consts)))
    outs = bind(cond_p, index, *[c for cs in consts for c in cs], *arrays(flat),
                branches=joined)
    return tree_util.tree_unflatten(trees[0], list(outs))


def cond(pred, true_fun, false_fun, *operands):
    """`true_fun(*operands)` if pred else `false_fun(*operands)`, with JAX's semantics: both
    branches are traced and must return the same types; only one runs."""
    if isinstance(pred, (bool, np.bool_)):
        pred = np.asarray(pred)
    pa = aval(pred)
    if pa.shape != ():
        raise TypeError(f"cond: the predicate must be a scalar, got {pa.str_short()}{user_line()}"
                        ". For an elementwise choice use fnp.where(pred, a, b).")
    if pa.dtype.kind != "b":
        pred = ew.ne(pred, np.array(0, pa.dtype))
    return switch(ew.convert_element_type(pred, np.int32), (false_fun, true_fun), *operands)
