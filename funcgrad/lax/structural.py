"""Shape primitives: broadcast_in_dim, reshape, transpose, squeeze, expand_dims, rev, slice,
pad, concatenate and iota, each defined once with its shape rule, implementation, JVP and VJP.
(Reductions: `reductions.py`; dot_general and the products built on it: `products.py`.)
"""

from __future__ import annotations

import builtins
import math

import numpy as np

from ..core import Primitive, ShapedArray, bind
from ..interpreters import ops as interpreter_ops
from . import elementwise as ew
from ._batching import at_front, batch_size, move_to_front
from ._util import (
    argsort_short,
    linear_primitive,
    normalize_axis,
    same_dtype,
    shape_error,
    to_operand,
    weak,
)

slice_builtin = builtins.slice  # this module defines lax.slice


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
    axes = tuple(sorted(new_dims + stretched))
    summed = reductions.reduce_sum(ct, axes) if axes else ct
    return (reshape(summed, x.shape) if summed.shape != x.shape else summed,)


broadcast_in_dim_p = linear_primitive(Primitive(
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


reshape_p = linear_primitive(Primitive(
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


transpose_p = linear_primitive(Primitive(
    "transpose", impl=lambda xp, x, *, permutation: xp.transpose(x, permutation),
    abstract_eval=_transpose_abstract,
    vjp=lambda ct, primals, out, active, *, permutation: (
        transpose(ct, argsort_short(list(permutation))),)),
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


squeeze_p = linear_primitive(Primitive(
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


expand_dims_p = linear_primitive(Primitive(
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


rev_p = linear_primitive(Primitive(
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


# The interpreters move batch axes with these (funcgrad/interpreters/ops.py; reduce_sum:
# reductions.py).
interpreter_ops.register(transpose=transpose, broadcast_in_dim=broadcast_in_dim)


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


slice_p = linear_primitive(Primitive("slice", impl=_slice_impl, abstract_eval=_slice_abstract,
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
        total = reductions.reduce_sum(ct, tuple(range(ct.ndim)))
        inner = ct_x if ct_x is not None else _pad_vjp(ct, primals, out, (True, False),
                                                       padding_config=padding_config)[0]
        ct_v = ew.sub(total, reductions.reduce_sum(inner, tuple(range(inner.ndim))))
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


# The transposes of broadcast_in_dim and pad sum with reduce_sum, and reductions.py builds on
# the shapes above: it loads once they are defined.
from . import reductions  # noqa: E402
