"""Reverse mode: vjp, grad, value_and_grad, jacrev, with `wrt=` masks that prune work.

The function runs once under a `GradTrace` (funcgrad/interpreters/reverse.py), which records a
tape; the backward pass walks it back. Inputs masked out by `wrt` are never marked as depending
on anything, so no tape entry, residual or backward work exists for paths that reach only frozen
leaves (DESIGN invariant 6).
"""

from __future__ import annotations

import numpy as np

from .. import tree_util
from ..core import as_value, device_namespace, user_line
from ..core.avals import dtype_kind, is_float
from ..interpreters.programs import aval_of
from ..interpreters.reverse import trace_vjp
from ..lax import reshape, stop_gradient, stop_gradient_p  # noqa: F401 (re-exported)
from ._util import (
    arg_name,
    check_flag,
    check_grad_input,
    check_output_dtype,
    fun_name,
    normalize_argnums,
)
from .vmap import vmap


def _check_cotangent(ct, out, path):
    ca, oa = aval_of(as_value(ct)), aval_of(out)
    if ca.shape != oa.shape or (ca.dtype != oa.dtype and dtype_kind(oa.dtype) in "fc"):
        raise ValueError(f"vjp_fn: the cotangent at {path or 'the output'} must have the output's "
                         f"shape and dtype {oa.str_short()}, got {ca.str_short()}{user_line()}.")


def vjp(fun, *primals, has_aux=False, holomorphic=False):
    """`(out, vjp_fn)` or `(out, vjp_fn, aux)`: vjp_fn(ct) -> a tuple of cotangents, one per
    primal, for the vector-Jacobian product ct^T J. Integer inputs get float0 zeros (as JAX).

    Complex values follow JAX: the cotangent g of an input pairs with its tangent t by
    Re(sum(g * t)), so for a holomorphic function vjp_fn(ct) is ct * f'(z) (no conjugation).
    `holomorphic=True` (not in jax.vjp) only checks that inputs and outputs are complex.
    """
    check_flag(holomorphic, "holomorphic")
    flat = tree_util.tree_leaves(primals)
    if holomorphic:
        for i, p in enumerate(primals):
            for path, leaf in tree_util.tree_flatten_with_path(p)[0]:
                check_grad_input(fun, i, leaf, tree_util.keystr(path), "vjp", holomorphic=True)
    active = [is_float(aval_of(as_value(x)).dtype) for x in flat]
    out_vals, out_tree, aux, backward, in_tree = trace_vjp(fun, primals, active, has_aux)
    if holomorphic:
        for o in out_vals:
            check_output_dtype(fun, aval_of(o), "vjp", holomorphic=True)
    out = tree_util.tree_unflatten(out_tree, out_vals)

    def vjp_fn(ct):
        ct_flat, ct_tree = tree_util.tree_flatten(ct)
        if ct_tree != out_tree:
            raise ValueError(f"vjp_fn: the cotangent must have the structure of the output "
                             f"{out_tree}, got {ct_tree}{user_line()}.")
        paths = [tree_util.keystr(p) for p, _ in tree_util.tree_flatten_with_path(out)[0]]
        for c, o, p in zip(ct_flat, out_vals, paths):
            _check_cotangent(c, o, p)
        cts = backward([as_value(c) for c in ct_flat], consume=False)
        return tuple(tree_util.tree_unflatten(in_tree, cts))

    return (out, vjp_fn, aux) if has_aux else (out, vjp_fn)


def _mask_leaves(fun, arg, mask, i):
    """Expand a (prefix) boolean mask over argument `arg` into one bool per leaf."""
    if mask is None:
        return [True] * len(tree_util.tree_leaves(arg))
    try:
        leaves = tree_util.tree_broadcast_prefix(mask, arg)
    except ValueError as e:
        raise ValueError(f"wrt mask for {arg_name(fun, i)} of {fun_name(fun)} does not match the "
                         f"argument's structure: {e}") from None
    for m in leaves:
        if not isinstance(m, (bool, np.bool_)):
            raise TypeError(f"wrt mask leaves must be True or False, got {m!r} "
                            f"({type(m).__name__}) for {arg_name(fun, i)}.")
    return [bool(m) for m in leaves]


def value_and_grad(fun, argnums=0, has_aux=False, holomorphic=False, allow_int=False,
                   wrt=None):
    """`(value, grad)` (or `((value, aux), grad)`) of a function with a scalar float output.

    `wrt` is a boolean pytree (or prefix) shaped like the differentiated argument (a tuple of them
    when argnums is a tuple): `False` leaves get zero gradients and cost no backward work.

    Complex inputs follow JAX's convention: for a real-valued f of z = x + iy the gradient is
    df/dx - i df/dy (grad of |z|**2 at 3+4j is 6-8j). A complex output raises unless
    `holomorphic=True` promises a holomorphic f of complex inputs, whose gradient is then f'(z).
    """
    check_flag(holomorphic, "holomorphic")

    def value_and_grad_fun(*args, **kwargs):
        single, nums = normalize_argnums(fun, argnums, len(args), "grad")
        masks = (wrt,) if single else (wrt if wrt is not None else (None,) * len(nums))
        if len(masks) != len(nums):
            raise ValueError(f"wrt must have one mask per differentiated argument ({len(nums)}), "
                             f"got {len(masks)}.")
        diff_args = tuple(args[i] for i in nums)
        active = []
        for i, a, m in zip(nums, diff_args, masks):
            leaf_mask = _mask_leaves(fun, a, m, i)
            for (path, leaf), on in zip(tree_util.tree_flatten_with_path(a)[0], leaf_mask):
                if on and (not allow_int or holomorphic):
                    check_grad_input(fun, i, leaf, tree_util.keystr(path), "grad", holomorphic)
                active.append(on and is_float(aval_of(as_value(leaf)).dtype))

        def partial_fun(*dargs):
            full = list(args)
            for i, d in zip(nums, dargs):
                full[i] = d
            return fun(*full, **kwargs)

        out_vals, out_tree, aux, backward, in_tree = trace_vjp(partial_fun, diff_args, active,
                                                              has_aux)
        if out_tree.num_leaves != 1 or not tree_util.treedef_is_leaf(out_tree):
            raise TypeError(f"grad requires {fun_name(fun)} to return a single scalar, got a "
                            f"{out_tree}{user_line()}. Use fg.jacrev or fg.vjp for several "
                            "outputs, or has_aux=True to return extra values beside the loss.")
        out = out_vals[0]
        oa = aval_of(out)
        if oa.shape != ():
            raise TypeError(
                f"grad requires a scalar (shape ()) output, but {fun_name(fun)} returned an array "
                f"{oa.str_short()}{user_line()}. Reduce it to a scalar (e.g. .sum() or .mean()), "
                "or use fg.jacrev for the full Jacobian or fg.vjp for a vector-Jacobian product.")
        if dtype_kind(oa.dtype) not in "fc":
            raise TypeError(f"grad requires a floating-point output, but {fun_name(fun)} returned "
                            f"{oa.str_short()}{user_line()}.")
        check_output_dtype(fun, oa, "grad", holomorphic)
        seed = device_namespace([out]).ones((), oa.dtype)  # where the output is
        cts = backward([seed], consume=True)
        grads = tree_util.tree_unflatten(in_tree, cts)
        g = grads[0] if single else tuple(grads)
        value = (out, aux) if has_aux else out
        return value, g

    value_and_grad_fun.__name__ = f"value_and_grad({fun_name(fun)})"
    return value_and_grad_fun


def grad(fun, argnums=0, has_aux=False, holomorphic=False, allow_int=False, wrt=None):
    """The gradient of a scalar-valued function with respect to argument(s) `argnums` (see
    value_and_grad for `wrt` masks and complex numbers)."""
    vg = value_and_grad(fun, argnums, has_aux, holomorphic, allow_int, wrt)

    def grad_fun(*args, **kwargs):
        (value, g) = vg(*args, **kwargs)
        return (g, value[1]) if has_aux else g

    grad_fun.__name__ = f"grad({fun_name(fun)})"
    return grad_fun


def jacrev(fun, argnums=0, has_aux=False, holomorphic=False):
    """The Jacobian by reverse mode: one forward pass, then the backward pass vmapped over the
    rows of an identity (one batched backward pass per output leaf, no Python loop).

    The result has, for each output leaf and each input leaf, shape out.shape + in.shape.
    Complex outputs need `holomorphic=True` (as in JAX), which gives df/dz.
    """
    check_flag(holomorphic, "holomorphic")

    def jac_fun(*args, **kwargs):
        single, nums = normalize_argnums(fun, argnums, len(args), "jacrev")
        diff_args = tuple(args[i] for i in nums)
        for i, a in zip(nums, diff_args):
            for path, leaf in tree_util.tree_flatten_with_path(a)[0]:
                check_grad_input(fun, i, leaf, tree_util.keystr(path), "jacrev", holomorphic)

        def partial_fun(*dargs):
            full = list(args)
            for i, d in zip(nums, dargs):
                full[i] = d
            return fun(*full, **kwargs)

        n_in = len(tree_util.tree_leaves(diff_args))
        out_vals, out_tree, aux, backward, in_tree = trace_vjp(partial_fun, diff_args,
                                                              [True] * n_in, has_aux)
        in_avals = [aval_of(as_value(x)) for x in tree_util.tree_leaves(diff_args)]
        for o in out_vals:
            check_output_dtype(fun, aval_of(o), "jacrev", holomorphic)
        per_out = []
        for k, o in enumerate(out_vals):
            oa = aval_of(o)

            def row(ct, k=k):
                cts = [None] * len(out_vals)
                cts[k] = ct
                return backward(cts, consume=False)

            basis = np.eye(oa.size, dtype=oa.dtype).reshape((oa.size,) + oa.shape)
            rows = vmap(row)(basis) if oa.size else [
                np.zeros((0,) + a.shape, a.dtype) for a in in_avals]
            blocks = [reshape(r, oa.shape + a.shape) for r, a in zip(rows, in_avals)]
            tree = tree_util.tree_unflatten(in_tree, blocks)
            per_out.append(tree[0] if single else tuple(tree))
        jac = tree_util.tree_unflatten(out_tree, per_out)
        return (jac, aux) if has_aux else jac

    jac_fun.__name__ = f"jacrev({fun_name(fun)})"
    return jac_fun


