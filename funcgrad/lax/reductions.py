"""Reductions: reduce_sum, reduce_max, reduce_min, reduce_prod, argmax and argmin, each
defined once with its shape rule, implementation, JVP, VJP and batching rule.
"""

from __future__ import annotations

import math

import numpy as np

from ..core import Primitive, ShapedArray, bind
from ..interpreters import ops as interpreter_ops
from . import elementwise as ew
from ._batching import move_to_front
from ._util import (
    argsort_short,
    astype,
    check_kind,
    linear_primitive,
    normalize_axis,
    shape_error,
    small_floats_in_float32,
)
from .structural import broadcast_in_dim, concatenate, reshape, slice, transpose

# ---------------------------------------------------------------------------------------------
# Reductions

def _reduce_abstract(name, kinds):
    def rule(x, *, axes):
        check_kind(name, x, kinds)
        for a in axes:
            if not 0 <= a < x.ndim:
                raise shape_error(name, f"axis {a} is out of bounds for {x.str_short()}")
        return ShapedArray(tuple(s for i, s in enumerate(x.shape) if i not in axes), x.dtype,
                           x.weak_type)
    return rule


def _keep_dims_broadcast(ct, x_shape, axes):
    kept = tuple(i for i in range(len(x_shape)) if i not in axes)
    return broadcast_in_dim(ct, x_shape, kept)


reduce_sum_p = linear_primitive(Primitive(
    "reduce_sum",
    impl=small_floats_in_float32(lambda xp, x, *, axes: xp.sum(x, axis=axes, dtype=x.dtype)),
    abstract_eval=_reduce_abstract("reduce_sum", "iufc"),
    vjp=lambda ct, primals, out, active, *, axes: (
        _keep_dims_broadcast(ct, primals[0].shape, axes),)),
    lambda t, **p: reduce_sum(t, **p))


def _minmax_chooser_jvp(primals, tangents, out, *, axes):
    x = primals[0]
    weights = _chooser_weights(x, out, axes)
    return reduce_sum(ew.mul(tangents[0], weights), axes)


def _minmax_chooser_vjp(ct, primals, out, active, *, axes):
    x = primals[0]
    return (ew.mul(_keep_dims_broadcast(ct, x.shape, axes), _chooser_weights(x, out, axes)),)


def _chooser_weights(x, out, axes):
    # The derivative goes to the elements equal to the extremum, split evenly among ties.
    hit = ew.convert_element_type(ew.eq(x, _keep_dims_broadcast(out, x.shape, axes)), x.dtype)
    counts = reduce_sum(hit, axes)
    return ew.div(hit, _keep_dims_broadcast(counts, x.shape, axes))


reduce_max_p = Primitive("reduce_max", impl=lambda xp, x, *, axes: xp.max(x, axis=axes),
                         abstract_eval=_reduce_abstract("reduce_max", "iufb"),
                         jvp=_minmax_chooser_jvp, vjp=_minmax_chooser_vjp, residuals="inout")
reduce_min_p = Primitive("reduce_min", impl=lambda xp, x, *, axes: xp.min(x, axis=axes),
                         abstract_eval=_reduce_abstract("reduce_min", "iufb"),
                         jvp=_minmax_chooser_jvp, vjp=_minmax_chooser_vjp, residuals="inout")


def _prod_others(x, axes):
    """For each element, the product of the other elements of its reduction group.

    Computed from exclusive prefix and suffix products, so zeros in x are handled exactly
    (out / x would divide by zero).
    """
    from .cumulative import cumprod
    kept = [i for i in range(x.ndim) if i not in axes]
    perm = kept + list(axes)
    xt = transpose(x, perm)
    lead = tuple(xt.shape[:len(kept)])
    n = math.prod([x.shape[a] for a in axes])
    flat = reshape(xt, lead + (n,))
    ones = ew.full(lead + (1,), 1, x.dtype)
    pre = concatenate([ones, slice(cumprod(flat, axis=len(lead)), (0,) * len(lead) + (0,),
                                   lead + (n - 1,))], len(lead))
    suf = concatenate([slice(cumprod(flat, axis=len(lead), reverse=True),
                             (0,) * len(lead) + (1,), lead + (n,)), ones], len(lead))
    others = reshape(ew.mul(pre, suf), xt.shape)
    return transpose(others, argsort_short(list(perm)))


reduce_prod_p = Primitive(
    "reduce_prod",
    impl=small_floats_in_float32(lambda xp, x, *, axes: xp.prod(x, axis=axes, dtype=x.dtype)),
    abstract_eval=_reduce_abstract("reduce_prod", "iufc"), residuals="in",
    jvp=lambda primals, tangents, out, *, axes: reduce_sum(
        ew.mul(tangents[0], _prod_others(primals[0], axes)), axes),
    vjp=lambda ct, primals, out, active, *, axes: (
        ew.mul(_keep_dims_broadcast(ct, primals[0].shape, axes),
               _prod_others(primals[0], axes)),))


def _reducer(p):
    def reduce(x, axes):
        axes = tuple(sorted(normalize_axis(a, x.ndim) for a in axes))
        return bind(p, x, axes=axes)
    return reduce


reduce_sum = _reducer(reduce_sum_p)
reduce_max = _reducer(reduce_max_p)
reduce_min = _reducer(reduce_min_p)
reduce_prod = _reducer(reduce_prod_p)

# The interpreters sum out batch axes with this (funcgrad/interpreters/ops.py).
interpreter_ops.register(reduce_sum=reduce_sum)


def _reduce_batch(p):
    def rule(vals, dims, *, axes):
        x = move_to_front(vals[0], dims[0])
        return bind(p, x, axes=tuple(a + 1 for a in axes)), 0
    return rule


for _p in (reduce_sum_p, reduce_max_p, reduce_min_p, reduce_prod_p):
    _p.batch = _reduce_batch(_p)


def _arg_abstract(name):
    def rule(x, *, axis, index_dtype):
        check_kind(name, x, "iufb")
        if not 0 <= axis < x.ndim:
            raise shape_error(name, f"axis {axis} is out of bounds for {x.str_short()}")
        if x.shape[axis] == 0:
            raise ValueError(f"{name} of an empty axis {axis} of {x.str_short()}")
        return ShapedArray(tuple(s for i, s in enumerate(x.shape) if i != axis), index_dtype)
    return rule


argmax_p = Primitive("argmax", abstract_eval=_arg_abstract("argmax"), differentiable=False,
                     impl=lambda xp, x, *, axis, index_dtype: astype(xp, xp.argmax(x, axis=axis),
                         index_dtype))
argmin_p = Primitive("argmin", abstract_eval=_arg_abstract("argmin"), differentiable=False,
                     impl=lambda xp, x, *, axis, index_dtype: astype(xp, xp.argmin(x, axis=axis),
                         index_dtype))


def argmax(x, axis, index_dtype=np.int64):
    return bind(argmax_p, x, axis=normalize_axis(axis, x.ndim), index_dtype=np.dtype(index_dtype))


def argmin(x, axis, index_dtype=np.int64):
    return bind(argmin_p, x, axis=normalize_axis(axis, x.ndim), index_dtype=np.dtype(index_dtype))


def _arg_batch(p):
    def rule(vals, dims, *, axis, index_dtype):
        x = move_to_front(vals[0], dims[0])
        return bind(p, x, axis=axis + 1, index_dtype=index_dtype), 0
    return rule


argmax_p.batch = _arg_batch(argmax_p)
argmin_p.batch = _arg_batch(argmin_p)

