"""Shape primitives (broadcast, reshape, transpose, slice, pad, concatenate, ...), reductions and
dot_general, each defined once with its shape rule, implementation, JVP and VJP.
"""

from __future__ import annotations

import builtins
import functools
import math

import numpy as np

from ..core import Primitive, ShapedArray, bind, is_small_float
from ..interpreters import ops as interpreter_ops
from . import elementwise as ew
from ._batching import at_front, batch_size, move_to_front
from ._util import (
    astype,
    check_kind,
    dtype_of,
    normalize_axis,
    same_dtype,
    shape_error,
    small_floats_in_float32,
    to_operand,
    weak,
)

slice_builtin = builtins.slice  # this module defines lax.slice


def _linear(p, fn):
    """A linear primitive: its JVP applies it to the tangent; it keeps no residuals."""
    p.residuals = "none"
    p.jvp = lambda primals, tangents, out, **params: fn(tangents[0], **params)
    return p


# ---------------------------------------------------------------------------------------------
# broadcast_in_dim

def _broadcast_in_dim_abstract(x, *, shape, broadcast_dimensions):
    if len(broadcast_dimensions) != x.ndim:
        raise shape_error("broadcast_in_dim", f"operand {x.str_short()} needs one broadcast "
                          f"dimension per axis, got {broadcast_dimensions}")
    for i, d in enumerate(broadcast_dimensions):
        if not 0 <= d < len(shape) or x.shape[i] not in (1, shape[d]):
            raise shape_error("broadcast_in_dim", f"cannot broadcast {x.str_short()} to shape "
                              f"{tuple(shape)} along dimensions {broadcast_dimensions}")
    return ShapedArray(shape, x.dtype, x.weak_type)


def reshape_array(xp, x, shape):
    """x.reshape for NumPy arrays (the method: no Python-level wrapper), xp.reshape elsewhere."""
    return x.reshape(shape) if type(x) is np.ndarray else xp.reshape(x, shape)


def _broadcast_in_dim_impl(xp, x, *, shape, broadcast_dimensions):
    expanded = [1] * len(shape)
    for i, d in enumerate(broadcast_dimensions):
        expanded[d] = x.shape[i]
    x = reshape_array(xp, x, expanded)
    # np.broadcast_to costs microseconds in Python: skip it when only size-1 axes were added.
    return x if tuple(expanded) == tuple(shape) else xp.broadcast_to(x, shape)


def _broadcast_in_dim_vjp(ct, primals, out, active, *, shape, broadcast_dimensions):
    x = primals[0]
    new_dims = tuple(d for d in range(len(shape)) if d not in broadcast_dimensions)
    stretched = tuple(d for i, d in enumerate(broadcast_dimensions)
                      if x.shape[i] == 1 and shape[d] != 1)
    summed = reduce_sum(ct, tuple(sorted(new_dims + stretched))) if new_dims or stretched else ct
    return (reshape(summed, x.shape) if summed.shape != x.shape else summed,)


broadcast_in_dim_p = _linear(Primitive(
    "broadcast_in_dim", impl=_broadcast_in_dim_impl, abstract_eval=_broadcast_in_dim_abstract,
    vjp=_broadcast_in_dim_vjp), lambda t, **p: broadcast_in_dim(t, **p))


def _broadcast_in_dim_batch(vals, dims, *, shape, broadcast_dimensions):
    x = move_to_front(vals[0], dims[0])
    return broadcast_in_dim(x, (x.shape[0],) + tuple(shape),
                            (0,) + tuple(d + 1 for d in broadcast_dimensions)), 0


broadcast_in_dim_p.batch = _broadcast_in_dim_batch


def broadcast_in_dim(x, shape, broadcast_dimensions):
    """Broadcast x to `shape`; axis i of x becomes axis broadcast_dimensions[i] of the result."""
    return bind(broadcast_in_dim_p, x, shape=tuple(int(s) for s in shape),
                broadcast_dimensions=tuple(int(d) for d in broadcast_dimensions))


def broadcast(operand, sizes):
    """operand with new leading axes of the given sizes: shape sizes + operand.shape."""
    operand = to_operand(operand)
    sizes = tuple(int(s) for s in sizes)
    if not sizes:
        return operand
    n = len(sizes)
    return broadcast_in_dim(operand, sizes + tuple(operand.shape),
                            tuple(range(n, n + operand.ndim)))


# ---------------------------------------------------------------------------------------------
# reshape, transpose, squeeze, expand_dims, rev

def _reshape_abstract(x, *, new_sizes):
    if math.prod(new_sizes) != x.size:
        raise shape_error("reshape", f"cannot reshape {x.str_short()} ({x.size} elements) into "
                          f"shape {tuple(new_sizes)} ({math.prod(new_sizes)} elements)")
    return ShapedArray(new_sizes, x.dtype, x.weak_type)


reshape_p = _linear(Primitive(
    "reshape", impl=lambda xp, x, *, new_sizes: reshape_array(xp, x, new_sizes),
    abstract_eval=_reshape_abstract,
    vjp=lambda ct, primals, out, active, *, new_sizes: (reshape(ct, primals[0].shape),)),
    lambda t, **p: reshape(t, **p))
reshape_p.batch = lambda vals, dims, *, new_sizes: (
    reshape(move_to_front(vals[0], dims[0]), (vals[0].shape[dims[0]],) + tuple(new_sizes)), 0)


def reshape(x, new_sizes):
    new_sizes = tuple(int(s) for s in new_sizes)
    if tuple(x.shape) == new_sizes:
        return x
    return bind(reshape_p, x, new_sizes=new_sizes)


def _transpose_abstract(x, *, permutation):
    if sorted(permutation) != list(range(x.ndim)):
        raise shape_error("transpose", f"permutation {permutation} is not a permutation of the "
                          f"axes of {x.str_short()}")
    return ShapedArray(tuple(x.shape[p] for p in permutation), x.dtype, x.weak_type)


transpose_p = _linear(Primitive(
    "transpose", impl=lambda xp, x, *, permutation: xp.transpose(x, permutation),
    abstract_eval=_transpose_abstract,
    vjp=lambda ct, primals, out, active, *, permutation: (
        transpose(ct, _argsort(list(permutation))),)),
    lambda t, **p: transpose(t, **p))
transpose_p.batch = lambda vals, dims, *, permutation: (  # one transpose: batch axis to front
    transpose(vals[0], (dims[0],) + tuple(p + (p >= dims[0]) for p in permutation)), 0)


def transpose(x, permutation):
    permutation = tuple(int(p) for p in permutation)
    if permutation == tuple(range(len(permutation))):
        return x
    return bind(transpose_p, x, permutation=permutation)


def _squeeze_abstract(x, *, dimensions):
    for d in dimensions:
        if not 0 <= d < x.ndim or x.shape[d] != 1:
            raise shape_error("squeeze", f"cannot squeeze axis {d} of {x.str_short()}: only axes "
                              "of size 1 can be squeezed")
    return ShapedArray(tuple(s for i, s in enumerate(x.shape) if i not in dimensions), x.dtype,
                       x.weak_type)


squeeze_p = _linear(Primitive(
    "squeeze", impl=lambda xp, x, *, dimensions: reshape_array(
        xp, x, tuple(s for i, s in enumerate(x.shape) if i not in dimensions)),
    abstract_eval=_squeeze_abstract,
    vjp=lambda ct, primals, out, active, *, dimensions: (reshape(ct, primals[0].shape),)),
    lambda t, **p: squeeze(t, **p))
squeeze_p.batch = lambda vals, dims, *, dimensions: (
    bind(squeeze_p, move_to_front(vals[0], dims[0]), dimensions=tuple(d + 1 for d in dimensions)),
    0)


def squeeze(x, dimensions):
    dimensions = tuple(sorted(normalize_axis(d, x.ndim) for d in dimensions))
    return bind(squeeze_p, x, dimensions=dimensions) if dimensions else x


def _expanded_shape(shape, dimensions):
    out = list(shape)
    for d in sorted(dimensions):
        out.insert(d, 1)
    return tuple(out)


def _expand_dims_abstract(x, *, dimensions):
    n = x.ndim + len(dimensions)
    if any(not 0 <= d < n for d in dimensions) or len(set(dimensions)) != len(dimensions):
        raise shape_error("expand_dims", f"bad dimensions {dimensions} for {x.str_short()}")
    return ShapedArray(_expanded_shape(x.shape, dimensions), x.dtype, x.weak_type)


expand_dims_p = _linear(Primitive(
    "expand_dims", impl=lambda xp, x, *, dimensions: reshape_array(
        xp, x, _expanded_shape(x.shape, dimensions)),
    abstract_eval=_expand_dims_abstract,
    vjp=lambda ct, primals, out, active, *, dimensions: (reshape(ct, primals[0].shape),)),
    lambda t, **p: expand_dims(t, **p))
expand_dims_p.batch = lambda vals, dims, *, dimensions: (
    bind(expand_dims_p, move_to_front(vals[0], dims[0]),
         dimensions=tuple(d + 1 for d in dimensions)), 0)


def expand_dims(x, dimensions):
    n = x.ndim + len(dimensions)
    dimensions = tuple(sorted(normalize_axis(d, n) for d in dimensions))
    return bind(expand_dims_p, x, dimensions=dimensions) if dimensions else x


rev_p = _linear(Primitive(
    "rev", impl=lambda xp, x, *, dimensions: xp.flip(x, dimensions) if dimensions else x,
    abstract_eval=lambda x, *, dimensions: x,
    vjp=lambda ct, primals, out, active, *, dimensions: (rev(ct, dimensions),)),
    lambda t, **p: rev(t, **p))
rev_p.batch = lambda vals, dims, *, dimensions: (
    rev(move_to_front(vals[0], dims[0]), tuple(d + 1 for d in dimensions)), 0)


def rev(x, dimensions):
    """Reverse the order of elements along `dimensions`."""
    dimensions = tuple(sorted(normalize_axis(d, x.ndim) for d in dimensions))
    return bind(rev_p, x, dimensions=dimensions) if dimensions else x


def collapse(operand, start_dimension, stop_dimension=None):
    """Axes [start_dimension, stop_dimension) merged into one (row-major); None: to the end."""
    lo, hi, _ = builtins.slice(start_dimension, stop_dimension).indices(operand.ndim)
    if hi < lo:
        raise ValueError(f"Invalid dimension range passed to collapse: {tuple(operand.shape)}"
                         f"[{start_dimension}:{stop_dimension}]")
    shape = tuple(operand.shape)
    return reshape(operand, shape[:lo] + (math.prod(shape[lo:hi]),) + shape[hi:])


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


reduce_sum_p = _linear(Primitive(
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
    return transpose(others, _argsort(list(perm)))


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

# The interpreters move and sum batch axes with these (funcgrad/interpreters/ops.py).
interpreter_ops.register(transpose=transpose, broadcast_in_dim=broadcast_in_dim,
                         reduce_sum=reduce_sum)


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


# ---------------------------------------------------------------------------------------------
# dot_general

def _dot_abstract(lhs, rhs, *, dimension_numbers, preferred_element_type=None):
    (lc, rc), (lb, rb) = dimension_numbers
    check_kind("dot_general", lhs, "iufc")
    check_kind("dot_general", rhs, "iufc")
    dt = _dot_dtype(lhs.dtype, rhs.dtype)
    if len(lc) != len(rc) or len(lb) != len(rb):
        raise shape_error("dot_general", f"bad dimension_numbers {dimension_numbers}")
    for a, b in list(zip(lc, rc)) + list(zip(lb, rb)):
        if not (0 <= a < lhs.ndim and 0 <= b < rhs.ndim) or lhs.shape[a] != rhs.shape[b]:
            raise shape_error(
                "dot_general", f"shapes {lhs.str_short()} and {rhs.str_short()} do not match "
                f"along lhs axis {a} and rhs axis {b} (dimension_numbers {dimension_numbers})")
    batch = tuple(lhs.shape[a] for a in lb)
    lfree = tuple(s for i, s in enumerate(lhs.shape) if i not in lc and i not in lb)
    rfree = tuple(s for i, s in enumerate(rhs.shape) if i not in rc and i not in rb)
    return ShapedArray(batch + lfree + rfree, preferred_element_type or dt, weak((lhs, rhs)))


def _dot_dtype(a, b):
    """The result dtype of a dot_general of operands of dtypes `a` and `b` (as in JAX, they may
    differ: a float32 activation times a bfloat16 or int8 weight is float32, and the weight is
    never converted as a whole in the program, so no converted copy is kept for the backward
    pass)."""
    return a if a == b else np.promote_types(a, b)


@functools.lru_cache(maxsize=256)
def _outer_subscripts(lhs_ndim, rhs_ndim, lb, rb):
    """einsum subscripts for a dot_general without contraction: batch, lhs free, rhs free."""
    letters = iter("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    ls = [next(letters) for _ in range(lhs_ndim)]
    rs = [ls[lb[rb.index(i)]] if i in rb else next(letters) for i in range(rhs_ndim)]
    out = ([ls[i] for i in lb] + [ls[i] for i in range(lhs_ndim) if i not in lb]
           + [rs[i] for i in range(rhs_ndim) if i not in rb])
    return f"{''.join(ls)},{''.join(rs)}->{''.join(out)}"


def _dot_impl(xp, lhs, rhs, *, dimension_numbers, preferred_element_type=None):
    """One matmul on strided views: lhs as (batch..., M, K), rhs as (batch..., K, N), where M,
    K, N each merge their axes into one only where the memory layout allows it without a copy
    (transposes are views; NumPy's matmul calls BLAS once per matrix, transposes folded into
    the call, batch axes at any strides). The result is (batch..., lhs free..., rhs free...)."""
    (lc, rc), (lb, rb) = dimension_numbers
    if not lb and len(lc) == 1 and lhs.ndim == 2 and rhs.ndim == 2:  # a matrix product
        out = xp.matmul(lhs if lc[0] == 1 else lhs.T, rhs if rc[0] == 0 else rhs.T)
        if preferred_element_type is not None:
            out = astype(xp, out, preferred_element_type, copy=False)
        return out
    if not lc:  # no contraction (outer products, per batch)
        lfree = [i for i in range(lhs.ndim) if i not in lb]
        rfree = [i for i in range(rhs.ndim) if i not in rb]
        einsum = getattr(xp, "einsum", None)
        if einsum is not None and lhs.ndim + rhs.ndim <= 52:
            # einsum's outer-product loops beat a broadcasting multiply (stride-0 operands)
            # by about 1.5x: per-example weight gradients are exactly this.
            out = einsum(_outer_subscripts(lhs.ndim, rhs.ndim, lb, rb), lhs, rhs)
            if preferred_element_type is not None:
                out = astype(xp, out, preferred_element_type, copy=False)
            return out
        a = xp.transpose(lhs, list(lb) + lfree)
        b = xp.transpose(rhs, list(rb) + rfree)
        nb = len(lb)
        a = xp.reshape(a, a.shape + (1,) * len(rfree))
        b = xp.reshape(b, b.shape[:nb] + (1,) * len(lfree) + b.shape[nb:])
        out = xp.multiply(a, b)
    else:
        lfree = [i for i in range(lhs.ndim) if i not in lc and i not in lb]
        rfree = [i for i in range(rhs.ndim) if i not in rc and i not in rb]
        lc, rc = _contraction_order(lhs, rhs, lc, rc)
        bshape = tuple(lhs.shape[i] for i in lb)
        lf = tuple(lhs.shape[i] for i in lfree)
        rf = tuple(rhs.shape[i] for i in rfree)
        k = math.prod(lhs.shape[i] for i in lc)
        a = _as_matrices(xp, lhs, list(lb) + lfree + list(lc), bshape + (math.prod(lf), k))
        b = _as_matrices(xp, rhs, list(rb) + list(rc) + rfree, bshape + (k, math.prod(rf)))
        out = xp.matmul(a, b)
        if out.shape != bshape + lf + rf:
            out = xp.reshape(out, bshape + lf + rf)
    if preferred_element_type is not None:
        out = astype(xp, out, preferred_element_type, copy=False)
    return out


def _as_matrices(xp, x, perm, shape):
    """x with axes `perm` as an array of `shape` (batch..., rows, cols): a view where the layout
    allows (NumPy: a copy only where an axis group does not merge, or where BLAS could not read
    the matrices in place)."""
    if list(perm) != list(range(x.ndim)):
        x = xp.transpose(x, perm)
    if x.shape != shape:
        x = xp.reshape(x, shape)
    if type(x) is np.ndarray and not _blas_readable(x):
        x = np.ascontiguousarray(x)
    return x


def _blas_readable(x):
    """Whether BLAS reads each matrix of x (its last two axes) in place: one of the two
    strides is the element size, the other at least the other axis' extent."""
    if x.ndim < 2:
        return True
    (r, c), (sr, sc), it = x.shape[-2:], x.strides[-2:], x.itemsize
    return (sc == it and (sr >= c * it or r == 1)) or (sr == it and (sc >= r * it or c == 1))


def _contraction_order(lhs, rhs, lc, rc):
    """The contraction axis pairs in an order in which both operands' contracted axes merge
    into one without a copy, if there is one (they are summed in any order)."""
    if len(lc) < 2 or type(lhs) is not np.ndarray or type(rhs) is not np.ndarray:
        return lc, rc
    pairs = list(zip(lc, rc))
    for key in (lambda p: -lhs.strides[p[0]], lambda p: -rhs.strides[p[1]]):
        order = sorted(pairs, key=key)
        if _merges(lhs, [p[0] for p in order]) and _merges(rhs, [p[1] for p in order]):
            return tuple(p[0] for p in order), tuple(p[1] for p in order)
    return lc, rc


def _merges(x, axes):
    """Whether axes `axes` of x, in this order, are one axis in memory (a reshape is a view)."""
    axes = [a for a in axes if x.shape[a] != 1]
    return all(x.strides[a] == x.strides[b] * x.shape[b] for a, b in zip(axes, axes[1:]))


def _dot_jvp(primals, tangents, out, *, dimension_numbers, preferred_element_type=None):
    lhs, rhs = primals
    tl, tr = tangents
    kw = dict(dimension_numbers=dimension_numbers, preferred_element_type=preferred_element_type)
    terms = []
    if tl is not None:
        terms.append(bind(dot_general_p, tl, rhs, **kw))
    if tr is not None:
        terms.append(bind(dot_general_p, lhs, tr, **kw))
    return terms[0] if len(terms) == 1 else ew.add(*terms)


def _argsort(values):
    """The permutation that sorts a short list of ints (np.argsort costs microseconds here)."""
    return tuple(sorted(range(len(values)), key=values.__getitem__))


def _dot_transpose_lhs(ct, lhs_aval, rhs, dimension_numbers):
    """Cotangent of the lhs of dot_general: contract ct with rhs over rhs's free axes."""
    (lc, rc), (lb, rb) = dimension_numbers
    x_ndim, y_ndim = len(lhs_aval.shape), rhs.ndim
    x_kept = [i for i in range(x_ndim) if i not in lc and i not in lb]
    y_kept = [i for i in range(y_ndim) if i not in rc and i not in rb]
    nb = len(lb)
    # ct's axes are batch, lhs free (x_kept), rhs free (y_kept).
    ans_y = list(range(nb + len(x_kept), nb + len(x_kept) + len(y_kept)))
    dims = ((tuple(ans_y), tuple(y_kept)), (tuple(range(nb)), tuple(rb)))
    res = bind(dot_general_p, ct, rhs, dimension_numbers=dims, preferred_element_type=None)
    # res axes: batch (lb order), x_kept (increasing), then rhs contracting axes in increasing rhs
    # order, which pair with lhs axes lc in that same order.
    rc_sorted = sorted(rc)
    lc_by_rc = [lc[list(rc).index(r)] for r in rc_sorted]
    src_order = list(lb) + x_kept + lc_by_rc
    perm = _argsort(src_order)
    res = transpose(res, perm)
    if res.dtype != lhs_aval.dtype:
        res = ew.convert_element_type(res, lhs_aval.dtype)
    return res


def _dot_transpose_rhs(ct, lhs, rhs_aval, dimension_numbers):
    """Cotangent of the rhs of dot_general: contract lhs with ct over lhs's free axes.

    Written so that the common matmul case needs no transpose: ct_rhs = lhs^T @ ct directly.
    """
    (lc, rc), (lb, rb) = dimension_numbers
    x_kept = [i for i in range(lhs.ndim) if i not in lc and i not in lb]
    y_kept = [i for i in range(len(rhs_aval.shape)) if i not in rc and i not in rb]
    nb = len(lb)
    ct_x = tuple(range(nb, nb + len(x_kept)))
    dims = ((tuple(x_kept), ct_x), (tuple(lb), tuple(range(nb))))
    res = bind(dot_general_p, lhs, ct, dimension_numbers=dims, preferred_element_type=None)
    # res axes: batch, lhs contracting axes in increasing lhs order (paired with rc), y_kept.
    rc_by_lc = [rc[list(lc).index(a)] for a in sorted(lc)]
    perm = _argsort(list(rb) + rc_by_lc + y_kept)
    res = transpose(res, perm)
    if res.dtype != rhs_aval.dtype:
        res = ew.convert_element_type(res, rhs_aval.dtype)
    return res


def _dot_vjp(ct, primals, out, active, *, dimension_numbers, preferred_element_type=None):
    lhs, rhs = primals
    return (_dot_transpose_lhs(ct, lhs, rhs, dimension_numbers) if active[0] else None,
            _dot_transpose_rhs(ct, lhs, rhs, dimension_numbers) if active[1] else None)


def _dot_impl_any_dtypes(xp, lhs, rhs, *, dimension_numbers, preferred_element_type=None):
    """dot_general on operands of any dtypes: both are computed in their common dtype (widened
    to preferred_element_type, so int8 products accumulate in int32 when asked), in float32 for
    16-bit floats on NumPy (it has no BLAS for them), and the result is rounded once to the
    output dtype. Only the operand being widened is copied, and only here, inside the call."""
    lt, rt = dtype_of(lhs), dtype_of(rhs)
    out = _dot_dtype(lt, rt)
    work = out if preferred_element_type is None else np.promote_types(out, preferred_element_type)
    out = preferred_element_type or out
    if xp is np and is_small_float(work):
        work = _F32
    lhs = lhs if lt == work else astype(xp, lhs, work)
    if rt != work and _tiled(lhs, rhs, dimension_numbers):
        res = _dot_widening_rhs_by_tiles(xp, lhs, rhs, dimension_numbers[0][1][0], work)
    else:
        rhs = rhs if rt == work else astype(xp, rhs, work)
        res = _dot_impl(xp, lhs, rhs, dimension_numbers=dimension_numbers)
    return res if dtype_of(res) == out else astype(xp, res, out, copy=False)


_F32 = np.dtype(np.float32)
# A weight to widen (a bfloat16 or int8 matrix times float32 activations) larger than this many
# elements is widened a tile of rows at a time (1 MiB of float32), never as a whole.
DOT_TILE_ELEMENTS = 1 << 18


def _tiled(lhs, rhs, dimension_numbers):
    (lc, rc), (lb, rb) = dimension_numbers
    return (not lb and rhs.ndim == 2 and len(lc) == 1 and lc[0] == lhs.ndim - 1
            and lhs.ndim >= 1 and rhs.size > DOT_TILE_ELEMENTS)


def _dot_widening_rhs_by_tiles(xp, lhs, rhs, rc, work):
    """lhs (contracted on its last axis) times a 2-D rhs (contracted on axis rc) that must be
    widened to `work`: rows r0:r1 of rhs are widened and multiplied at a time. rc = 0 sums
    the partial products; rc = 1 fills a slice of the output's columns per tile."""
    lead = lhs.shape[:-1]
    x = xp.reshape(lhs, (-1, lhs.shape[-1]))
    rows, cols = rhs.shape
    step = max(1, DOT_TILE_ELEMENTS // max(cols, 1))
    if rc == 0:
        y = xp.zeros((x.shape[0], cols), work)
        for r0 in range(0, rows, step):
            y += x[:, r0:r0 + step] @ astype(xp, rhs[r0:r0 + step], work)
    else:
        y = xp.empty((x.shape[0], rows), work)
        for r0 in range(0, rows, step):
            y[:, r0:r0 + step] = x @ astype(xp, rhs[r0:r0 + step], work).T
    return xp.reshape(y, lead + (y.shape[-1],))
dot_general_p = Primitive("dot_general", impl=_dot_impl_any_dtypes, abstract_eval=_dot_abstract,
                          jvp=_dot_jvp, vjp=_dot_vjp, residuals="cross")


def _dot_batch(vals, dims, *, dimension_numbers, preferred_element_type=None):
    """Both batched: one more batch dimension. One batched: its batch axis is a free axis."""
    (lc, rc), (lb, rb) = dimension_numbers
    lhs, rhs = vals
    ld, rd = dims
    kw = dict(preferred_element_type=preferred_element_type)
    shift = lambda axes: tuple(a + 1 for a in axes)
    if ld is not None and rd is not None:
        lhs, rhs = move_to_front(lhs, ld), move_to_front(rhs, rd)
        dn = ((shift(lc), shift(rc)), ((0,) + shift(lb), (0,) + shift(rb)))
        return bind(dot_general_p, lhs, rhs, dimension_numbers=dn, **kw), 0
    if ld is not None:
        lhs = move_to_front(lhs, ld)
        dn = ((shift(lc), rc), (shift(lb), rb))
        return bind(dot_general_p, lhs, rhs, dimension_numbers=dn, **kw), len(lb)
    rhs = move_to_front(rhs, rd)
    dn = ((lc, shift(rc)), (lb, shift(rb)))
    lhs_free = lhs.ndim - len(lc) - len(lb)
    return bind(dot_general_p, lhs, rhs, dimension_numbers=dn, **kw), len(lb) + lhs_free


dot_general_p.batch = _dot_batch


def dot_general(lhs, rhs, dimension_numbers, preferred_element_type=None):
    """Contract lhs and rhs: dimension_numbers = ((lhs_contract, rhs_contract), (lhs_batch,
    rhs_batch)); the result's axes are batch, lhs free, rhs free (as in XLA/JAX)."""
    (lc, rc), (lb, rb) = dimension_numbers
    dn = ((tuple(int(i) for i in lc), tuple(int(i) for i in rc)),
          (tuple(int(i) for i in lb), tuple(int(i) for i in rb)))
    pet = None if preferred_element_type is None else np.dtype(preferred_element_type)
    return bind(dot_general_p, lhs, rhs, dimension_numbers=dn, preferred_element_type=pet)


# ---------------------------------------------------------------------------------------------
# Products

def batch_matmul(lhs, rhs, precision=None):
    """Matrix products batched over all leading axes: (..., m, k) @ (..., k, n) -> (..., m, n).
    Both operands need the same rank >= 2 (as JAX); `precision` is accepted and ignored."""
    del precision
    if min(lhs.ndim, rhs.ndim) < 2:
        raise ValueError(f"Arguments to batch_matmul must be at least 2D, got {lhs.ndim}, "
                         f"{rhs.ndim}")
    if lhs.ndim != rhs.ndim:
        raise ValueError(f"Arguments to batch_matmul must have same ndim, got {lhs.ndim}, "
                         f"{rhs.ndim}")
    batch = tuple(range(lhs.ndim - 2))
    return dot_general(lhs, rhs, (((lhs.ndim - 1,), (rhs.ndim - 2,)), (batch, batch)))


def dot(lhs, rhs, precision=None, preferred_element_type=None, *, dimension_numbers=None):
    """Vector-vector, matrix-vector or matrix-matrix product (lhs' last axis against rhs' first),
    or any contraction given as `dimension_numbers` (as dot_general). `precision` is ignored."""
    del precision
    lhs, rhs = to_operand(lhs), to_operand(rhs)
    if dimension_numbers is None:
        if not (1 <= lhs.ndim <= 2 and 1 <= rhs.ndim <= 2 and lhs.shape[-1] == rhs.shape[0]):
            raise ValueError("lax.dot: dimension_numbers must be given unless this is an "
                             "un-batched matrix-matrix, matrix-vector or vector-vector product; "
                             f"got shapes {tuple(lhs.shape)} and {tuple(rhs.shape)}")
        dimension_numbers = (((lhs.ndim - 1,), (0,)), ((), ()))
    return dot_general(lhs, rhs, dimension_numbers, preferred_element_type=preferred_element_type)


# ---------------------------------------------------------------------------------------------
# slice, pad, concatenate, iota

def _slice_abstract(x, *, start_indices, limit_indices, strides):
    if not len(start_indices) == len(limit_indices) == x.ndim:
        raise shape_error("slice", f"needs one start and limit per axis of {x.str_short()}, got "
                          f"{start_indices}, {limit_indices}")
    strides = strides or (1,) * x.ndim
    shape = []
    for s, lo, hi, st in zip(x.shape, start_indices, limit_indices, strides):
        if not 0 <= lo <= hi <= s or st < 1:
            raise shape_error("slice", f"start {start_indices} / limit {limit_indices} / strides "
                              f"{strides} out of range for {x.str_short()}")
        shape.append(max(0, -(-(hi - lo) // st)))
    return ShapedArray(shape, x.dtype, x.weak_type)


def _slice_impl(xp, x, *, start_indices, limit_indices, strides):
    strides = strides or (1,) * x.ndim
    return x[tuple(slice_builtin(a, b, c)
                   for a, b, c in zip(start_indices, limit_indices, strides))]


def _slice_vjp(ct, primals, out, active, *, start_indices, limit_indices, strides):
    x = primals[0]
    strides = strides or (1,) * x.ndim
    config = []
    for s, lo, n, st in zip(x.shape, start_indices, ct.shape, strides):
        used = lo + (n - 1) * st + 1 if n else lo
        config.append((lo, s - used, st - 1) if n else (lo, s - lo, 0))
    zero = np.zeros((), ct.dtype)
    return (pad(ct, zero, tuple(config)),)


slice_p = _linear(Primitive("slice", impl=_slice_impl, abstract_eval=_slice_abstract,
                            vjp=_slice_vjp), lambda t, **p: bind(slice_p, t, **p))
slice_p.batch = lambda vals, dims, *, start_indices, limit_indices, strides: (
    bind(slice_p, move_to_front(vals[0], dims[0]), start_indices=(0,) + start_indices,
         limit_indices=(vals[0].shape[dims[0]],) + limit_indices,
         strides=None if strides is None else (1,) + strides), 0)


def slice(x, start_indices, limit_indices, strides=None):  # noqa: A001 (lax's name)
    start = tuple(int(i) for i in start_indices)
    limit = tuple(int(i) for i in limit_indices)
    strides = None if strides is None or all(s == 1 for s in strides) else tuple(
        int(s) for s in strides)
    if start == (0,) * x.ndim and limit == tuple(x.shape) and strides is None:
        return x
    return bind(slice_p, x, start_indices=start, limit_indices=limit, strides=strides)


def _pad_abstract(x, padding_value, *, padding_config):
    if padding_value.shape != () or padding_value.dtype != x.dtype:
        raise shape_error("pad", f"padding value must be a scalar of the operand's dtype "
                          f"{x.dtype}, got {padding_value.str_short()}")
    if len(padding_config) != x.ndim:
        raise shape_error("pad", f"needs one (low, high, interior) per axis of {x.str_short()}")
    shape = []
    for s, (lo, hi, it) in zip(x.shape, padding_config):
        n = lo + hi + s + max(s - 1, 0) * it
        if n < 0 or it < 0:
            raise shape_error("pad", f"padding {padding_config} gives a negative size for "
                              f"{x.str_short()}")
        shape.append(n)
    return ShapedArray(shape, x.dtype, x.weak_type)


def _pad_impl(xp, x, padding_value, *, padding_config):
    # Pad with the non-negative parts (interior included), then crop the negative ones.
    grown = [max(lo, 0) + max(hi, 0) + s + max(s - 1, 0) * it
             for s, (lo, hi, it) in zip(x.shape, padding_config)]
    out = xp.full(grown, padding_value, dtype=x.dtype)
    idx = tuple(slice_builtin(max(lo, 0), max(lo, 0) + s + max(s - 1, 0) * it, it + 1)
                for s, (lo, hi, it) in zip(x.shape, padding_config))
    out[idx] = x
    crop = tuple(slice_builtin(max(-lo, 0), g - max(-hi, 0))
                 for g, (lo, hi, it) in zip(grown, padding_config))
    return out[crop]


def _pad_jvp(primals, tangents, out, *, padding_config):
    tx, tv = tangents
    tx = ew.zeros_like(primals[0]) if tx is None else tx
    tv = np.zeros((), primals[0].dtype) if tv is None else tv
    return pad(tx, tv, padding_config)


def _pad_vjp(ct, primals, out, active, *, padding_config):
    x = primals[0]
    ct_x = ct_v = None
    if active[0]:
        unpadded = pad(ct, np.zeros((), ct.dtype), tuple((-lo, -hi, 0)
                                                         for lo, hi, _ in padding_config))
        ct_x = slice(unpadded, (0,) * x.ndim, unpadded.shape,
                     tuple(it + 1 for _, _, it in padding_config))
    if active[1]:
        total = reduce_sum(ct, tuple(range(ct.ndim)))
        inner = ct_x if ct_x is not None else _pad_vjp(ct, primals, out, (True, False),
                                                       padding_config=padding_config)[0]
        ct_v = ew.sub(total, reduce_sum(inner, tuple(range(inner.ndim))))
    return ct_x, ct_v


pad_p = Primitive("pad", impl=_pad_impl, abstract_eval=_pad_abstract, jvp=_pad_jvp, vjp=_pad_vjp,
                  residuals="none")


def _pad_batch(vals, dims, *, padding_config):
    x, v = vals
    size = batch_size(vals, dims)
    x = at_front(x, dims[0], size)
    config = ((0, 0, 0),) + padding_config
    if dims[1] is None:
        return pad(x, v, config), 0
    # A padding value per example: pad with zeros, then select the value where padding lies.
    from .elementwise import select_n
    inside = pad(ew.full(x.shape[1:], True, np.bool_), np.array(False), padding_config)
    padded = pad(x, np.zeros((), x.dtype), config)
    values = broadcast_in_dim(move_to_front(v, dims[1]), padded.shape, (0,))
    return select_n(broadcast_in_dim(inside, padded.shape, tuple(range(1, padded.ndim))),
                    values, padded), 0


pad_p.batch = _pad_batch


def pad(x, padding_value, padding_config):
    """Pad x with a scalar: per axis (low, high, interior); negative low/high crop."""
    config = tuple((int(lo), int(hi), int(it)) for lo, hi, it in padding_config)
    return bind(pad_p, x, padding_value, padding_config=config)


def _concat_abstract(*xs, dimension):
    dt = same_dtype("concatenate", xs)
    ref = xs[0]
    if not 0 <= dimension < ref.ndim:
        raise shape_error("concatenate", f"dimension {dimension} out of range for "
                          f"{ref.str_short()}")
    for x in xs[1:]:
        if x.ndim != ref.ndim or any(a != b for i, (a, b) in enumerate(zip(x.shape, ref.shape))
                                     if i != dimension):
            raise shape_error("concatenate", "operands must match except along dimension "
                              f"{dimension}, got " + ", ".join(a.str_short() for a in xs))
    shape = list(ref.shape)
    shape[dimension] = sum(x.shape[dimension] for x in xs)
    return ShapedArray(shape, dt, weak(xs))


def _concat_jvp(primals, tangents, out, *, dimension):
    ts = [ew.zeros_like(p) if t is None else t for p, t in zip(primals, tangents)]
    return concatenate(ts, dimension)


def _concat_vjp(ct, primals, out, active, *, dimension):
    res, start = [], 0
    for p, act in zip(primals, active):
        n = p.shape[dimension]
        if act:
            lo = [0] * ct.ndim
            hi = list(ct.shape)
            lo[dimension], hi[dimension] = start, start + n
            res.append(slice(ct, lo, hi))
        else:
            res.append(None)
        start += n
    return tuple(res)


concatenate_p = Primitive("concatenate",
                          impl=lambda xp, *xs, dimension: xp.concatenate(xs, axis=dimension),
                          abstract_eval=_concat_abstract, jvp=_concat_jvp, vjp=_concat_vjp,
                          residuals="none")
concatenate_p.batch = lambda vals, dims, *, dimension: (concatenate(
    [at_front(v, d, batch_size(vals, dims)) for v, d in zip(vals, dims)], dimension + 1), 0)


def concatenate(operands, dimension):
    operands = list(operands)
    if len(operands) == 1:
        return operands[0]
    return bind(concatenate_p, *operands, dimension=int(dimension))


def _iota_impl(xp, *, dtype, shape, dimension):
    r = xp.arange(shape[dimension], dtype=dtype)
    expanded = [1] * len(shape)
    expanded[dimension] = shape[dimension]
    return xp.broadcast_to(xp.reshape(r, expanded), shape)


iota_p = Primitive("iota", impl=_iota_impl, differentiable=False,
                   abstract_eval=lambda *, dtype, shape, dimension: ShapedArray(shape, dtype))


def iota(dtype, size_or_shape, dimension=0):
    """0, 1, 2, ... along `dimension` of an array of the given shape."""
    shape = (int(size_or_shape),) if np.ndim(size_or_shape) == 0 else tuple(
        int(s) for s in size_or_shape)
    return bind(iota_p, dtype=np.dtype(dtype), shape=shape, dimension=int(dimension))
