"""Reverse mode: vjp, grad, value_and_grad, jacrev, with `wrt=` masks that prune work.

Called eagerly, the function runs once under a `GradTrace`: its tracers carry their concrete
values (so Python control flow and print work, DESIGN invariant 2) and each primitive applied to a
value that depends on a differentiated input is written to a tape with just the residuals its VJP
rule needs (`Primitive.residuals`). The backward pass walks the tape in reverse, applying VJP rules
(written with primitives, so the backward pass can itself be traced or differentiated) and drops
each entry and each cotangent right after use. Inputs masked out by `wrt` are never marked as
depending on anything, so no tape entry, residual or backward work exists for paths that reach
only frozen leaves (DESIGN invariant 6). Inside an outer transform the values are that
transform's tracers, so `make_jaxpr(grad(f))` yields the joint forward+backward program.
"""

from __future__ import annotations

import itertools

import numpy as np

from .. import tree_util
from ..core import (
    Trace,
    Tracer,
    as_value,
    bind,
    device_namespace,
    float0,
    get_aval,
    new_trace,
    user_line,
)
from ..core.avals import shaped_array
from ..lax import add, stop_gradient, stop_gradient_p  # noqa: F401 (re-exported)
from ._util import arg_name, fun_name, normalize_argnums


def _aval_of(v):
    return v.aval if type(v) is Tracer else shaped_array(v.shape, v.dtype)


_as_value = as_value


class GradTrace(Trace):
    """Concrete trace that records a tape of the primitives on the path to the outputs."""

    concrete = True
    name = "grad"

    def __init__(self, level):
        super().__init__(level)
        self.tape = []
        self._ids = itertools.count()

    def new_arg(self, val, active):
        val = _as_value(val)
        return Tracer(self, _aval_of(val).strip_weak_type(), val,
                      next(self._ids) if active else None)

    def lift(self, x):
        aval = get_aval(x)
        return Tracer(self, aval, _as_value(x), None)

    def process(self, prim, tracers, params):
        rule = getattr(prim, "grad_rule", None)  # control flow records its own tape entry
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
                return tuple(Tracer(self, _aval_of(o), o, None) for o in out)
            return Tracer(self, _aval_of(out), out, None)
        if prim.multiple_results:
            out_tracers = tuple(self._out(o) for o in out)
            out_ids = tuple(t.aux for t in out_tracers)
            if all(i is None for i in out_ids):
                return out_tracers
        else:
            aval = out.aval if type(out) is Tracer else shaped_array(out.shape, out.dtype)
            if aval.dtype.kind not in "fc":
                return Tracer(self, aval, out, None)
            out_ids = next(self._ids)
            out_tracers = Tracer(self, aval, out, out_ids)
        kind = prim.residuals
        if kind == "none":  # linear: only shapes are needed (the common case is fast)
            ins = [_aval_of(v) for v in vals]
            outs = (tuple(t.aval for t in out_tracers) if prim.multiple_results
                    else out_tracers.aval)
        else:
            ins, outs = _residuals(kind, vals, out, active, prim.multiple_results)
        self.tape.append((prim, params, tuple(t.aux for t in tracers), out_ids, ins, outs,
                          active))
        return out_tracers

    def _out(self, val):
        aval = _aval_of(val)
        return Tracer(self, aval, val, next(self._ids) if aval.dtype.kind in "fc" else None)

    def process_custom_jvp(self, fun, jvp_rule, args):
        from .custom import grad_of_custom_jvp
        return grad_of_custom_jvp(self, fun, jvp_rule, args)

    def process_custom_vjp(self, fun, fwd, bwd, args, out_tree):
        from .custom import grad_of_custom_vjp
        return grad_of_custom_vjp(self, fun, fwd, bwd, args)


def _residuals(kind, vals, out, active, multiple):
    """What the backward pass keeps of an equation's values (avals stand in for the rest)."""
    if type(kind) is tuple:  # the indices of the inputs to keep
        ins = [v if i in kind else _aval_of(v) for i, v in enumerate(vals)]
    elif kind == "in":
        ins = vals
    elif kind == "cross":
        ins = [v if any(a for j, a in enumerate(active) if j != i) else _aval_of(v)
               for i, v in enumerate(vals)]
    elif kind == "inout":
        ins = vals
    else:
        ins = [_aval_of(v) for v in vals]
    if kind in ("out", "inout"):
        outs = out
    elif multiple:
        outs = tuple(_aval_of(o) for o in out)
    else:
        outs = _aval_of(out)
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
            out_cts = [_zeros(_aval_of(o)) if c is None else c for c, o in zip(out_cts, outs)]
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
                cts[i] = c if prev is None else add(prev, c)
    return cts


def _zeros(aval):
    return np.zeros(aval.shape, aval.dtype)


def _zero_cotangent(val):
    aval = _aval_of(val)
    if aval.dtype.kind in "fc":
        return np.zeros(aval.shape, aval.dtype)
    return np.zeros(aval.shape, float0)


def trace_vjp(fun, primals, active_leaves, has_aux=False):
    """Run `fun(*primals)` under a GradTrace.

    Returns (out_flat_vals, out_tree, aux, backward) where `backward(out_cts_flat, consume)`
    returns the flat list of input cotangents (zeros for inactive inputs).
    """
    flat, in_tree = tree_util.tree_flatten(primals)
    with new_trace(GradTrace) as trace:
        tracers = [trace.new_arg(x, a) for x, a in zip(flat, active_leaves)]
        out = fun(*tree_util.tree_unflatten(in_tree, tracers))
        aux = None
        if has_aux:
            if not (isinstance(out, (tuple, list)) and len(out) == 2):
                raise TypeError(f"has_aux=True requires {fun_name(fun)} to return a pair "
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
                seeds[i] = c if i not in seeds else add(seeds[i], c)
        cts = backward_pass(tape, seeds, consume)
        return [cts[i] if i is not None and i in cts else _zero_cotangent(v)
                for i, v in zip(in_ids, in_vals)]

    return out_vals, out_tree, aux, backward, in_tree


def _check_cotangent(ct, out, path):
    ca, oa = _aval_of(_as_value(ct)), _aval_of(out)
    if ca.shape != oa.shape or (ca.dtype != oa.dtype and oa.dtype.kind in "fc"):
        raise ValueError(f"vjp_fn: the cotangent at {path or 'the output'} must have the output's "
                         f"shape and dtype {oa.str_short()}, got {ca.str_short()}{user_line()}.")


def vjp(fun, *primals, has_aux=False, holomorphic=False):
    """`(out, vjp_fn)` or `(out, vjp_fn, aux)`: vjp_fn(ct) -> a tuple of cotangents, one per
    primal, for the vector-Jacobian product ct^T J. Integer inputs get float0 zeros (as JAX).

    Complex values follow JAX: the cotangent g of an input pairs with its tangent t by
    Re(sum(g * t)), so for a holomorphic function vjp_fn(ct) is ct * f'(z) (no conjugation).
    `holomorphic=True` (not in jax.vjp) only checks that inputs and outputs are complex.
    """
    flat = tree_util.tree_leaves(primals)
    if holomorphic:
        for i, p in enumerate(primals):
            for path, leaf in tree_util.tree_flatten_with_path(p)[0]:
                _check_grad_input(fun, i, leaf, tree_util.keystr(path), "vjp", holomorphic=True)
    active = [_aval_of(_as_value(x)).dtype.kind in "fc" for x in flat]
    out_vals, out_tree, aux, backward, in_tree = trace_vjp(fun, primals, active, has_aux)
    if holomorphic:
        for o in out_vals:
            _check_output_dtype(fun, _aval_of(o), "vjp", holomorphic=True)
    out = tree_util.tree_unflatten(out_tree, out_vals)

    def vjp_fn(ct):
        ct_flat, ct_tree = tree_util.tree_flatten(ct)
        if ct_tree != out_tree:
            raise ValueError(f"vjp_fn: the cotangent must have the structure of the output "
                             f"{out_tree}, got {ct_tree}{user_line()}.")
        paths = [tree_util.keystr(p) for p, _ in tree_util.tree_flatten_with_path(out)[0]]
        for c, o, p in zip(ct_flat, out_vals, paths):
            _check_cotangent(c, o, p)
        cts = backward([_as_value(c) for c in ct_flat], consume=False)
        return tuple(tree_util.tree_unflatten(in_tree, cts))

    return (out, vjp_fn, aux) if has_aux else (out, vjp_fn)


def _check_grad_input(fun, i, leaf, path, transform, holomorphic=False, complex_ok=True):
    """Inputs of a derivative must be floating point; complex only where the transform allows it
    (reverse mode does; jacfwd only with holomorphic=True, as in JAX), and complex alone when
    `holomorphic` promises a holomorphic function."""
    dtype = _aval_of(_as_value(leaf)).dtype
    where = f" at {path}" if path else ""
    what = f"{arg_name(fun, i)}{where} of {fun_name(fun)}"
    if holomorphic and dtype.kind != "c":
        raise TypeError(
            f"{transform} with holomorphic=True requires inputs with complex dtype, but {what} "
            f"has dtype {dtype}{user_line()}. Convert it with x.astype(np.complex64), or drop "
            "holomorphic=True for a real-valued input.")
    if dtype.kind == "c" and not complex_ok and not holomorphic:
        raise TypeError(
            f"{transform} requires real-valued inputs, but {what} has dtype {dtype}"
            f"{user_line()}. For holomorphic differentiation, pass holomorphic=True. For "
            "differentiation of non-holomorphic functions involving complex inputs, use fg.jvp "
            "directly.")
    if dtype.kind not in "fc":
        raise TypeError(
            f"{transform} requires real- or complex-valued (floating point) inputs, but "
            f"{what} has dtype {dtype}{user_line()}. "
            "Convert it with x.astype(np.float32), move it out of argnums, or use fg.vjp, which "
            "gives integer inputs float0 zeros.")


def _check_output_dtype(fun, aval, transform, holomorphic):
    """JAX's rule for the output of grad / jacrev (and jacfwd with holomorphic=True): complex
    only with holomorphic=True, and then complex only."""
    if holomorphic and aval.dtype.kind != "c":
        raise TypeError(
            f"{transform} with holomorphic=True requires outputs with complex dtype, but "
            f"{fun_name(fun)} returned {aval.str_short()}{user_line()}.")
    if not holomorphic and aval.dtype.kind == "c" and transform != "jacfwd":
        raise TypeError(
            f"{transform} requires real-valued outputs, but {fun_name(fun)} returned "
            f"{aval.str_short()}{user_line()}. For holomorphic differentiation, pass "
            "holomorphic=True. For differentiation of non-holomorphic functions involving "
            "complex outputs, use fg.vjp directly (or take fnp.real / fnp.abs of the output).")


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
    _check_flag(holomorphic, "holomorphic")

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
                    _check_grad_input(fun, i, leaf, tree_util.keystr(path), "grad", holomorphic)
                active.append(on and _aval_of(_as_value(leaf)).dtype.kind in "fc")

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
        oa = _aval_of(out)
        if oa.shape != ():
            raise TypeError(
                f"grad requires a scalar (shape ()) output, but {fun_name(fun)} returned an array "
                f"{oa.str_short()}{user_line()}. Reduce it to a scalar (e.g. .sum() or .mean()), "
                "or use fg.jacrev for the full Jacobian or fg.vjp for a vector-Jacobian product.")
        if oa.dtype.kind not in "fc":
            raise TypeError(f"grad requires a floating-point output, but {fun_name(fun)} returned "
                            f"{oa.str_short()}{user_line()}.")
        _check_output_dtype(fun, oa, "grad", holomorphic)
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
    from .vmap import vmap
    _check_flag(holomorphic, "holomorphic")

    def jac_fun(*args, **kwargs):
        single, nums = normalize_argnums(fun, argnums, len(args), "jacrev")
        diff_args = tuple(args[i] for i in nums)
        for i, a in zip(nums, diff_args):
            for path, leaf in tree_util.tree_flatten_with_path(a)[0]:
                _check_grad_input(fun, i, leaf, tree_util.keystr(path), "jacrev", holomorphic)

        def partial_fun(*dargs):
            full = list(args)
            for i, d in zip(nums, dargs):
                full[i] = d
            return fun(*full, **kwargs)

        n_in = len(tree_util.tree_leaves(diff_args))
        out_vals, out_tree, aux, backward, in_tree = trace_vjp(partial_fun, diff_args,
                                                              [True] * n_in, has_aux)
        in_avals = [_aval_of(_as_value(x)) for x in tree_util.tree_leaves(diff_args)]
        per_out = []
        for o in out_vals:
            _check_output_dtype(fun, _aval_of(o), "jacrev", holomorphic)
        for k, o in enumerate(out_vals):
            oa = _aval_of(o)

            def row(ct, k=k):
                cts = [None] * len(out_vals)
                cts[k] = ct
                return backward(cts, consume=False)

            basis = np.eye(oa.size, dtype=oa.dtype).reshape((oa.size,) + oa.shape)
            rows = vmap(row)(basis) if oa.size else [
                np.zeros((0,) + a.shape, a.dtype) for a in in_avals]
            blocks = [_reshape(r, oa.shape + a.shape) for r, a in zip(rows, in_avals)]
            tree = tree_util.tree_unflatten(in_tree, blocks)
            per_out.append(tree[0] if single else tuple(tree))
        jac = tree_util.tree_unflatten(out_tree, per_out)
        return (jac, aux) if has_aux else jac

    jac_fun.__name__ = f"jacrev({fun_name(fun)})"
    return jac_fun


def _check_flag(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}; pass masks as wrt=.")


def _reshape(x, shape):
    from ..lax import reshape
    return reshape(x, shape)


