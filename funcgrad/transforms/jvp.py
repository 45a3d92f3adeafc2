"""Forward mode: jvp, linearize, jacfwd, hessian.

The function runs under a `JvpTrace` (funcgrad/interpreters/jvp.py), which carries each value's
tangent beside it. `linearize` traces the tangent part into a program once: under it the primal
values are concrete, so only tangent work is recorded.
"""

from __future__ import annotations

import numpy as np

from .. import numpy as fnp
from .. import tree_util
from ..core import Tracer, as_value, eval_jaxpr, new_trace, trace_to_jaxpr, user_line
from ..core.avals import dtype_kind, is_float
from ..interpreters.jvp import JvpTrace, checked_tangent
from ..interpreters.programs import aval_of
from ._util import check_flag, check_grad_input, check_output_dtype, fun_name, normalize_argnums
from .grad import jacrev
from .vmap import vmap


def _zeros_like_val(v):
    a = aval_of(v)
    return np.zeros(a.shape, a.dtype)


def jvp(fun, primals, tangents, has_aux=False):
    """`(out, tangent_out)`: the value of fun at `primals` and its directional derivative along
    `tangents` (tuples with the structure of fun's positional arguments)."""
    if not isinstance(primals, (tuple, list)) or not isinstance(tangents, (tuple, list)):
        raise TypeError("jvp: primals and tangents must be tuples (one entry per positional "
                        f"argument), got {type(primals).__name__} and {type(tangents).__name__}.")
    p_flat, p_tree = tree_util.tree_flatten(tuple(primals))
    t_flat, t_tree = tree_util.tree_flatten(tuple(tangents))
    if p_tree != t_tree:
        raise ValueError(f"jvp: tangents must have the structure of primals: {p_tree} vs "
                         f"{t_tree}{user_line()}.")
    for p, t in zip(p_flat, t_flat):
        pa, ta = aval_of(as_value(p)), aval_of(as_value(t))
        if pa.shape != ta.shape:
            raise ValueError(f"jvp: a tangent has shape {ta.shape} but its primal has shape "
                             f"{pa.shape}{user_line()}; each tangent must match its primal.")
        if dtype_kind(pa.dtype) in "fc" and ta.dtype != pa.dtype:
            raise TypeError(f"jvp: a tangent has dtype {ta.dtype} but its primal has dtype "
                            f"{pa.dtype}{user_line()}; tangents must have the primal's dtype.")
    with new_trace(JvpTrace) as trace:
        tracers = [trace.new_arg(p, as_value(t) if is_float(aval_of(as_value(p)).dtype)
                                 else None) for p, t in zip(p_flat, t_flat)]
        out = fun(*tree_util.tree_unflatten(p_tree, tracers))
        aux = None
        if has_aux:
            out, aux = out
            aux = tree_util.tree_map(
                lambda x: x.val if type(x) is Tracer and x._trace is trace else x, aux)
        out_flat, out_tree = tree_util.tree_flatten(out)
        out_tracers = [trace.to_tracer(o) for o in out_flat]
        vals = [t.val for t in out_tracers]
        tans = [checked_tangent(t.aux) if t.aux is not None else _zeros_like_val(t.val)
                for t in out_tracers]
    out = tree_util.tree_unflatten(out_tree, vals)
    t_out = tree_util.tree_unflatten(out_tree, tans)
    return (out, t_out, aux) if has_aux else (out, t_out)


def linearize(fun, *primals, has_aux=False):
    """`(out, f_jvp)`: f_jvp(*tangents) evaluates the linear map t -> J t without re-running the
    forward computation: the tangent computation is traced once into a program. With
    `has_aux`, fun returns `(out, aux)` and linearize `(out, f_jvp, aux)`."""
    p_flat, p_tree = tree_util.tree_flatten(primals)
    t_avals = [aval_of(as_value(p)).strip_weak_type() for p in p_flat]
    box = {}

    def tangent_fun(*t_flat):
        res = jvp(fun, primals, tree_util.tree_unflatten(p_tree, list(t_flat)), has_aux=has_aux)
        out, t_out = res[:2]
        box["out"] = out
        if has_aux:
            box["aux"] = res[2]
        flat, box["tree"] = tree_util.tree_flatten(t_out)
        return flat

    closed = trace_to_jaxpr(tangent_fun, t_avals, name="linearize")
    out, out_tree = box["out"], box["tree"]

    def f_jvp(*tangents):
        t_flat, t_tree = tree_util.tree_flatten(tangents)
        if t_tree != p_tree:
            raise ValueError(f"linearize: f_jvp expects tangents with the structure of the primals"
                             f" {p_tree}, got {t_tree}.")
        res = eval_jaxpr(closed.jaxpr, closed.consts, *t_flat)
        return tree_util.tree_unflatten(out_tree, res)

    f_jvp.jaxpr = closed
    return (out, f_jvp, box["aux"]) if has_aux else (out, f_jvp)


def jacfwd(fun, argnums=0, has_aux=False, holomorphic=False):
    """The Jacobian by forward mode: the tangent map is linearized once, then vmapped over the
    basis vectors of each input leaf. Each output leaf gets shape out.shape + in.shape per input
    leaf. Complex inputs need `holomorphic=True` (as in JAX), which gives df/dz."""
    check_flag(holomorphic, "holomorphic")

    def jac_fun(*args, **kwargs):
        single, nums = normalize_argnums(fun, argnums, len(args), "jacfwd")
        diff_args = tuple(args[i] for i in nums)
        for i, a in zip(nums, diff_args):
            for path, leaf in tree_util.tree_flatten_with_path(a)[0]:
                check_grad_input(fun, i, leaf, tree_util.keystr(path), "jacfwd", holomorphic,
                                 complex_ok=False)
        def partial_fun(*dargs):
            full = list(args)
            for i, d in zip(nums, dargs):
                full[i] = d
            return fun(*full, **kwargs)

        out, f_jvp, *aux = linearize(partial_fun, *diff_args, has_aux=has_aux)
        in_flat, in_tree = tree_util.tree_flatten(diff_args)
        out_flat, out_tree = tree_util.tree_flatten(out)
        in_avals = [aval_of(as_value(x)) for x in in_flat]
        out_avals = [aval_of(as_value(o)) for o in out_flat]
        for oa in out_avals:
            check_output_dtype(fun, oa, "jacfwd", holomorphic)
        zeros = [np.zeros(a.shape, a.dtype) for a in in_avals]
        columns = []  # per input leaf: the flat output tangents, batched over its basis
        for j, a in enumerate(in_avals):
            def column(t, j=j):
                ts = list(zeros)
                ts[j] = t
                return tree_util.tree_leaves(f_jvp(*tree_util.tree_unflatten(in_tree, ts)))

            basis = np.eye(a.size, dtype=a.dtype).reshape((a.size,) + a.shape)
            columns.append(vmap(column)(basis) if a.size else
                           [np.zeros((0,) + o.shape, o.dtype) for o in out_avals])
        per_out = []
        for k, oa in enumerate(out_avals):
            blocks = []
            for j, a in enumerate(in_avals):
                col = columns[j][k]  # (in.size,) + out.shape: move the basis axis last
                col = fnp.moveaxis(col, 0, -1)
                blocks.append(fnp.reshape(col, oa.shape + a.shape))
            tree = tree_util.tree_unflatten(in_tree, blocks)
            per_out.append(tree[0] if single else tuple(tree))
        jac = tree_util.tree_unflatten(out_tree, per_out)
        return (jac, aux[0]) if has_aux else jac

    jac_fun.__name__ = f"jacfwd({fun_name(fun)})"
    return jac_fun


def hessian(fun, argnums=0, has_aux=False, holomorphic=False):
    """The Hessian: forward mode over reverse mode (jacfwd of jacrev), as JAX computes it."""
    return jacfwd(jacrev(fun, argnums, has_aux=has_aux, holomorphic=holomorphic), argnums,
                  has_aux=has_aux, holomorphic=holomorphic)
