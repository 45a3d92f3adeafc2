"""More of jax.lax, composed from the primitives of this package (no new rules).

Each function here is written with existing lax primitives and wrappers only, so it runs
eagerly on arrays and under grad, jvp, vmap and jit with the rules those primitives already
have: the matmul and slicing conveniences, clamp/select/square, sort_key_val,
bitwise reductions and population_count, erfc, reduce_window (pad + strided slices),
associative_scan (the parallel prefix algorithm), and conv_transpose.
"""

from __future__ import annotations

import builtins
import itertools
import math
import operator

import numpy as np

from ..core import Tracer
from ..tree_util import tree_flatten, tree_unflatten
from . import _erf
from . import elementwise as ew
from . import indexing as ix
from ._util import normalize_axis
from .conv import conv_general_dilated, padtype_to_pads
from .structural import (
    broadcast_in_dim,
    concatenate,
    dot_general,
    expand_dims,
    pad,
    reduce_max,
    reduce_min,
    reduce_prod,
    reduce_sum,
    reshape,
    rev,
    slice,
    squeeze,
    transpose,
)

__all__ = [
    "batch_matmul", "broadcast", "clamp", "collapse", "dot", "dynamic_slice_in_dim",
    "dynamic_update_slice_in_dim", "dynamic_index_in_dim", "dynamic_update_index_in_dim",
    "index_in_dim", "slice_in_dim", "full_like", "select", "square", "sort_key_val",
    "reduce_and", "reduce_or", "erfc", "population_count", "reduce_window", "associative_scan",
    "conv_transpose",
]


def _arr(x):
    """x as something primitives accept: arrays and tracers as they are, scalars as arrays."""
    if isinstance(x, Tracer) or hasattr(x, "shape") and hasattr(x, "dtype") \
            and not isinstance(x, np.generic):
        return x
    return np.asarray(x)


def _const(value, like):
    return np.array(value, like.dtype)


def _as_dtype(x, dtype):
    """A scalar or array operand in `dtype`: Python/NumPy values are converted on the host."""
    if isinstance(x, Tracer) or hasattr(x, "shape") and not isinstance(x, np.generic):
        return ew.convert_element_type(x, dtype)
    return np.asarray(x, dtype)


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
    lhs, rhs = _arr(lhs), _arr(rhs)
    if dimension_numbers is None:
        if not (1 <= lhs.ndim <= 2 and 1 <= rhs.ndim <= 2 and lhs.shape[-1] == rhs.shape[0]):
            raise ValueError("lax.dot: dimension_numbers must be given unless this is an "
                             "un-batched matrix-matrix, matrix-vector or vector-vector product; "
                             f"got shapes {tuple(lhs.shape)} and {tuple(rhs.shape)}")
        dimension_numbers = (((lhs.ndim - 1,), (0,)), ((), ()))
    return dot_general(lhs, rhs, dimension_numbers, preferred_element_type=preferred_element_type)


# ---------------------------------------------------------------------------------------------
# Shapes and slices

def broadcast(operand, sizes):
    """operand with new leading axes of the given sizes: shape sizes + operand.shape."""
    operand = _arr(operand)
    sizes = tuple(int(s) for s in sizes)
    if not sizes:
        return operand
    n = len(sizes)
    return broadcast_in_dim(operand, sizes + tuple(operand.shape),
                            tuple(range(n, n + operand.ndim)))


def collapse(operand, start_dimension, stop_dimension=None):
    """Axes [start_dimension, stop_dimension) merged into one (row-major); None: to the end."""
    lo, hi, _ = builtins.slice(start_dimension, stop_dimension).indices(operand.ndim)
    if hi < lo:
        raise ValueError(f"Invalid dimension range passed to collapse: {tuple(operand.shape)}"
                         f"[{start_dimension}:{stop_dimension}]")
    shape = tuple(operand.shape)
    return reshape(operand, shape[:lo] + (math.prod(shape[lo:hi]),) + shape[hi:])


def slice_in_dim(operand, start_index, limit_index, stride=1, axis=0):
    """operand[..., start:limit:stride, ...] along `axis` (static bounds; None and negative
    indices as in Python, without clipping)."""
    operand = _arr(operand)
    axis = normalize_axis(int(axis), operand.ndim)
    n = operand.shape[axis]
    start = 0 if start_index is None else int(start_index)
    limit = n if limit_index is None else int(limit_index)
    start, limit = start + n if start < 0 else start, limit + n if limit < 0 else limit
    starts, limits, strides = [0] * operand.ndim, list(operand.shape), [1] * operand.ndim
    starts[axis], limits[axis], strides[axis] = start, limit, int(stride)
    return slice(operand, starts, limits, strides)


def index_in_dim(operand, index, axis=0, keepdims=True):
    """operand[..., index, ...] along `axis` (a static index; negative counts from the end)."""
    operand = _arr(operand)
    axis = normalize_axis(int(axis), operand.ndim)
    index, size = int(index), operand.shape[axis]
    wrapped = index + size if index < 0 else index
    if not 0 <= wrapped < size:
        raise IndexError(f"index {index} is out of bounds for axis {axis} with size {size}")
    out = slice_in_dim(operand, wrapped, wrapped + 1, 1, axis)
    return out if keepdims else squeeze(out, (axis,))


def _wrap_start(index, size, allow_negative):
    """A rank-0 start index with negative values counted from the end (as JAX does before
    clamping); Python ints are wrapped here, traced ones with a select."""
    if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
        index = int(index)
        if index < 0:
            if not allow_negative:
                raise ValueError(f"Index {index} is out of bounds for dimension {size} if "
                                 "allow_negative_indices=False")
            index += size
        return np.asarray(index, ix.INDEX)
    index = _arr(index)
    if index.dtype.kind not in "iu":
        raise TypeError(f"start index must be an integer, got {index.dtype}")
    if index.shape != ():
        raise TypeError(f"start index must be a scalar, got shape {tuple(index.shape)}")
    if not allow_negative or index.dtype.kind == "u":
        return index
    return ew.select_n(ew.lt(index, _const(0, index)), index,
                       ew.add(index, _const(size, index)))


def _starts_along(operand, start, axis):
    zero = np.zeros((), start.dtype)
    return [start if i == axis else zero for i in range(operand.ndim)]


def dynamic_slice_in_dim(operand, start_index, slice_size, axis=0, *,
                         allow_negative_indices=True):
    """operand[..., start:start + slice_size, ...] along `axis` with a possibly traced start
    (negative counts from the end; then clamped so that the slice fits, as dynamic_slice)."""
    operand = _arr(operand)
    axis = normalize_axis(int(axis), operand.ndim)
    start = _wrap_start(start_index, operand.shape[axis], allow_negative_indices)
    sizes = list(operand.shape)
    sizes[axis] = int(slice_size)
    return ix.dynamic_slice(operand, _starts_along(operand, start, axis), sizes,
                            allow_negative_indices=False)  # wrapped above, once


def dynamic_index_in_dim(operand, index, axis=0, keepdims=True, *, allow_negative_indices=True):
    """operand[..., index, ...] along `axis` with a possibly traced index (clamped)."""
    out = dynamic_slice_in_dim(operand, index, 1, axis,
                               allow_negative_indices=allow_negative_indices)
    return out if keepdims else squeeze(out, (normalize_axis(int(axis), out.ndim),))


def dynamic_update_slice_in_dim(operand, update, start_index, axis, *,
                                allow_negative_indices=True):
    """operand with `update` written from `start_index` along `axis` (other axes from 0)."""
    operand, update = _arr(operand), _arr(update)
    axis = normalize_axis(int(axis), operand.ndim)
    start = _wrap_start(start_index, operand.shape[axis], allow_negative_indices)
    return ix.dynamic_update_slice(operand, update, *_starts_along(operand, start, axis),
                                   allow_negative_indices=False)  # wrapped above, once


def dynamic_update_index_in_dim(operand, update, index, axis, *, allow_negative_indices=True):
    """operand with `update` written at `index` along `axis`; `update` may lack that axis."""
    operand, update = _arr(operand), _arr(update)
    axis = normalize_axis(int(axis), operand.ndim)
    if update.ndim != operand.ndim:
        if update.ndim + 1 != operand.ndim:
            raise ValueError(f"dynamic_update_index_in_dim: update of rank {update.ndim} for an "
                             f"operand of rank {operand.ndim}")
        update = expand_dims(update, (axis,))
    return dynamic_update_slice_in_dim(operand, update, index, axis,
                                       allow_negative_indices=allow_negative_indices)


# ---------------------------------------------------------------------------------------------
# Elementwise

def full_like(x, fill_value, dtype=None, shape=None):
    """An array of `shape` (default x's) filled with `fill_value`, in `dtype` (default x's)."""
    x = _arr(x)
    dtype = x.dtype if dtype is None else np.dtype(dtype)
    if shape is None:
        shape = tuple(x.shape)
    else:
        shape = (int(shape),) if np.ndim(shape) == 0 else tuple(int(s) for s in shape)
    if isinstance(fill_value, Tracer):
        if fill_value.shape != ():
            raise ValueError("full_like: fill_value must be a scalar")
        return broadcast_in_dim(ew.convert_element_type(fill_value, dtype), shape, ())
    return ew.full(shape, fill_value, dtype)


def select(pred, on_true, on_false):
    """on_true where pred, else on_false (pred a bool scalar or of the cases' shape)."""
    return ew.select_n(_arr(pred), _arr(on_false), _arr(on_true))


def square(x):
    """x * x, elementwise."""
    x = _arr(x)
    return ew.mul(x, x)


def clamp(min, x, max):  # noqa: A002 (lax's argument names)
    """min where x < min, max where x > max, x otherwise; min and max are scalars or of x's
    shape. The derivative follows JAX: to x where min < x < max, to min where x < min < max,
    to max where x > max, and zero at ties."""
    x = _arr(x)
    lo, hi = _as_dtype(min, x.dtype), _as_dtype(max, x.dtype)
    for name, bound in (("min", lo), ("max", hi)):
        if bound.shape not in ((), tuple(x.shape)):
            raise TypeError(f"clamp: {name} must be a scalar or of x's shape "
                            f"{tuple(x.shape)}, got shape {tuple(bound.shape)}")
    value = ew.stop_gradient(ew.min(ew.max(x, lo), hi))
    out = ew.select_n(ew.bitwise_and(ew.gt(lo, x), ew.lt(lo, hi)), value, lo)
    out = ew.select_n(ew.bitwise_and(ew.gt(x, lo), ew.lt(x, hi)), out, x)
    out = ew.select_n(ew.lt(hi, x), out, hi)
    return out


def _poly(w, coeffs):
    """coeffs[0] + w (coeffs[1] + w (...)), Horner's rule with constants of w's dtype."""
    acc = _const(coeffs[-1], w)
    for c in reversed(coeffs[:-1]):
        acc = ew.add(ew.mul(acc, w), _const(c, w))
    return acc


def _clip(a, lo, hi):
    """a limited to [lo, hi] by selects (derivative 1 inside and at the ends; NaN stays)."""
    return ew.select_n(ew.lt(a, lo), ew.select_n(ew.gt(a, hi), a, hi), lo)


def _exp_neg_sq(a):
    """exp(-a^2) without the relative error of rounding a^2 (Cody's splitting, as lax.erf)."""
    h = ew.div(ew.floor(ew.mul(a, _const(16, a))), _const(16, a))
    return ew.mul(ew.exp(ew.neg(ew.mul(h, h))),
                  ew.exp(ew.neg(ew.mul(ew.sub(a, h), ew.add(a, h)))))


def erfc(x):
    """1 - erf(x), accurate relatively in the right tail (Cody's erfc approximations, written
    with primitives: 1 - erf(x) for |x| <= 0.5, exp(-x^2) times a rational function beyond)."""
    x = _arr(x)
    if x.dtype.kind != "f":
        raise TypeError(f"erfc needs a floating operand, got {x.dtype}")
    a = ew.abs(x)
    one = _const(1, x)
    # Each branch sees its argument clipped into its own range (no overflow, no 0/0, and no
    # NaN in the derivative of a branch that is not taken).
    m = _clip(a, _const(0.5, x), _const(4.0, x))
    num, den = ew.mul(_const(_erf._C[8], x), m), m
    for i in range(7):
        num = ew.mul(ew.add(num, _const(_erf._C[i], x)), m)
        den = ew.mul(ew.add(den, _const(_erf._D[i], x)), m)
    mid = ew.mul(_exp_neg_sq(m), ew.div(ew.add(num, _const(_erf._C[7], x)),
                                        ew.add(den, _const(_erf._D[7], x))))
    t = _clip(a, _const(4.0, x), _const(30.0, x))
    z = ew.div(one, ew.mul(t, t))
    num, den = ew.mul(_const(_erf._P[5], x), z), z
    for i in range(4):
        num = ew.mul(ew.add(num, _const(_erf._P[i], x)), z)
        den = ew.mul(ew.add(den, _const(_erf._Q[i], x)), z)
    ratio = ew.div(ew.add(num, _const(_erf._P[4], x)), ew.add(den, _const(_erf._Q[4], x)))
    tail = ew.div(ew.mul(_exp_neg_sq(t), ew.sub(_const(_erf._RSQRT_PI, x), ew.mul(z, ratio))), t)
    big = ew.select_n(ew.le(a, _const(4.0, x)), tail, mid)  # erfc(|x|) for |x| > 0.5
    big = ew.select_n(ew.lt(x, _const(0, x)), big, ew.sub(_const(2, x), big))
    small = ew.sub(one, ew.erf(ew.select_n(ew.le(a, _const(0.5, x)), _const(0, x), x)))
    return ew.select_n(ew.le(a, _const(0.5, x)), big, small)


_POPCOUNT_MASKS = {bits: (int("01" * (bits // 2), 2), int("0011" * (bits // 4), 2),
                          int("00001111" * (bits // 8), 2)) for bits in (8, 16, 32, 64)}


def population_count(x):
    """The number of set bits of each element (of its two's-complement pattern), in x's dtype:
    the classic shift-and-mask bit count on the unsigned view."""
    x = _arr(x)
    if x.dtype.kind not in "iu":
        raise TypeError(f"population_count needs an integer operand, got {x.dtype}")
    bits = x.dtype.itemsize * 8
    udt = np.dtype(f"uint{bits}")
    m1, m2, m4 = (np.array(m, udt) for m in _POPCOUNT_MASKS[bits])

    def shr(v, s):
        return ew.shift_right_logical(v, np.array(s, udt))

    u = ew.convert_element_type(x, udt)
    u = ew.sub(u, ew.bitwise_and(shr(u, 1), m1))
    u = ew.add(ew.bitwise_and(u, m2), ew.bitwise_and(shr(u, 2), m2))
    u = ew.bitwise_and(ew.add(u, shr(u, 4)), m4)  # a count per byte
    s = 8
    while s < bits:
        u = ew.add(u, shr(u, s))
        s *= 2
    if bits > 8:
        u = ew.bitwise_and(u, np.array(0x7F, udt))
    return ew.convert_element_type(u, x.dtype)


# ---------------------------------------------------------------------------------------------
# Sorting

def sort_key_val(keys, values, dimension=-1, is_stable=True):
    """(sorted keys, values permuted alike) along `dimension`."""
    keys, values = _arr(keys), _arr(values)
    dimension = normalize_axis(dimension, keys.ndim)
    return tuple(ix.sort(keys, values, dimension=dimension, is_stable=is_stable, num_keys=1))


# ---------------------------------------------------------------------------------------------
# Bitwise reductions

def _halving_reduce(x, axes, op, identity):
    """Reduce `axes` with an idempotent op (and/or) by halving: each step combines the first
    ceil(n/2) entries with the last ceil(n/2) (overlapping in the middle when n is odd)."""
    axes = sorted({normalize_axis(a, x.ndim) for a in axes}, reverse=True)
    for ax in axes:
        n = x.shape[ax]
        if n == 0:
            shape = list(x.shape)
            shape[ax] = 1
            x = ew.full(shape, identity, x.dtype)
        while x.shape[ax] > 1:
            n = x.shape[ax]
            half = (n + 1) // 2
            x = op(slice_in_dim(x, 0, half, axis=ax), slice_in_dim(x, n - half, n, axis=ax))
        x = squeeze(x, (ax,))
    return x


def _check_bitwise(name, x):
    if x.dtype.kind not in "iub":
        raise TypeError(f"{name} needs a boolean or integer operand, got {x.dtype}")


def reduce_and(operand, axes):
    """Bitwise AND (logical AND for bools) over `axes`."""
    operand = _arr(operand)
    _check_bitwise("reduce_and", operand)
    ones = True if operand.dtype == np.bool_ else np.array(-1).astype(operand.dtype)
    return _halving_reduce(operand, axes, ew.bitwise_and, ones)


def reduce_or(operand, axes):
    """Bitwise OR (logical OR for bools) over `axes`."""
    operand = _arr(operand)
    _check_bitwise("reduce_or", operand)
    return _halving_reduce(operand, axes, ew.bitwise_or, 0)


# ---------------------------------------------------------------------------------------------
# reduce_window

def _identity(kind, dtype):
    if kind == "add":
        return 0
    if kind == "mul":
        return 1
    if dtype.kind == "f":
        return -np.inf if kind == "max" else np.inf
    if dtype == np.bool_:
        return kind == "min"
    info = np.iinfo(dtype)
    return info.min if kind == "max" else info.max


def _monoid(computation):
    # Functions are recognized by identity: funcgrad.lax's own, NumPy's ufuncs, `operator`'s.
    table = {ew.add: "add", ew.mul: "mul", ew.max: "max", ew.min: "min",
             np.add: "add", np.multiply: "mul", np.maximum: "max", np.minimum: "min",
             operator.add: "add", operator.mul: "mul"}
    try:
        return table.get(computation)
    except TypeError:  # unhashable callable
        return None


_WINDOW_REDUCERS = {"add": (reduce_sum, ew.add), "mul": (reduce_prod, ew.mul),
                    "max": (reduce_max, ew.max), "min": (reduce_min, ew.min)}


def _window_tuple(value, n, name, default=1):
    if value is None:
        return (default,) * n
    value = tuple(int(v) for v in value)
    if len(value) != n:
        raise ValueError(f"reduce_window: {name} needs {n} entries (one per axis), got {value}")
    return value


def reduce_window(operand, init_value, computation, window_dimensions, window_strides=None,
                  padding="VALID", base_dilation=None, window_dilation=None):
    """Reduce every (strided, dilated) window of operand with computation in {lax.add, lax.mul,
    lax.max, lax.min}, as XLA's ReduceWindow: windows over the padded (and base-dilated)
    operand, where padding counts as nothing, each reduced together with init_value.

    Written as one strided slice of the padded operand per window offset, stacked on a new
    axis and reduced, so gradients come from pad, slice, concatenate and the reductions.
    """
    kind = _monoid(computation)
    if kind is None:
        raise NotImplementedError(
            f"reduce_window: computation {getattr(computation, '__name__', computation)!r} is "
            "not supported; use lax.add, lax.mul, lax.max or lax.min (a generic reducer would "
            "need a reduce_window primitive)")
    if isinstance(operand, (list, tuple, dict)):
        raise NotImplementedError("reduce_window: pytrees of operands are not supported; "
                                  "reduce one array at a time")
    x = _arr(operand)
    n = x.ndim
    dims = _window_tuple(window_dimensions, n, "window_dimensions")
    strides = _window_tuple(window_strides, n, "window_strides")
    base = _window_tuple(base_dilation, n, "base_dilation")
    wdil = _window_tuple(window_dilation, n, "window_dilation")
    if any(v < 1 for v in dims + strides + base + wdil):
        raise ValueError("reduce_window: window dimensions, strides and dilations must be "
                         "positive")
    init = _as_dtype(init_value, x.dtype)
    if getattr(init, "shape", ()) != ():
        raise ValueError("reduce_window: init_value must be a scalar")
    eff = [(d - 1) * w + 1 for d, w in zip(dims, wdil)]
    if isinstance(padding, str):
        pads = padtype_to_pads(tuple(x.shape), eff, strides, padding)
    else:
        pads = [(int(lo), int(hi)) for lo, hi in padding]
        if len(pads) != n:
            raise ValueError(f"reduce_window: padding needs {n} (low, high) pairs, got {padding}")
    # Padding and base-dilation holes hold the identity (they do not count), and init_value is
    # combined into each window once, as XLA on the CPU computes it (the XLA spec leaves a
    # non-identity init_value implementation-defined).
    identity = np.array(_identity(kind, x.dtype)).astype(x.dtype)
    config = [(lo, hi, b - 1) for (lo, hi), b in zip(pads, base)]
    if any(v for cfg in config for v in cfg):
        x = pad(x, identity, config)
    out_shape = tuple(max((p - e) // s + 1, 0) if p >= e else 0
                      for p, e, s in zip(x.shape, eff, strides))
    reducer, combine = _WINDOW_REDUCERS[kind]
    if 0 in out_shape:
        return broadcast_in_dim(init, out_shape, ()) if isinstance(init, Tracer) else \
            ew.full(out_shape, init, x.dtype)
    windows = []
    for offs in itertools.product(*(range(d) for d in dims)):
        start = [o * w for o, w in zip(offs, wdil)]
        limit = [st + (o - 1) * s + 1 for st, o, s in zip(start, out_shape, strides)]
        windows.append(expand_dims(slice(x, start, limit, strides), (0,)))
    out = reducer(concatenate(windows, 0), (0,))
    is_identity = isinstance(init, np.ndarray) and bool(init == identity)
    return out if is_identity else combine(out, init)


# ---------------------------------------------------------------------------------------------
# associative_scan

def _interleave(a, b, axis):
    """a[0], b[0], a[1], b[1], ... along axis (len(a) == len(b) or len(b) + 1)."""
    equal = a.shape[axis] == b.shape[axis]
    a_cfg = [(0, 0, 0)] * a.ndim
    b_cfg = [(0, 0, 0)] * b.ndim
    a_cfg[axis] = (0, 1 if equal else 0, 1)
    b_cfg[axis] = (1, 0 if equal else 1, 1)
    op = ew.bitwise_or if a.dtype == np.bool_ else ew.add
    return op(pad(a, _const(0, a), a_cfg), pad(b, _const(0, b), b_cfg))


def associative_scan(fn, elems, reverse=False, axis=0):
    """All prefix combinations fn(...fn(fn(e0, e1), e2)..., ek) along `axis`, for an associative
    `fn` of two pytrees of arrays (applied elementwise to whole slices), computed by the parallel
    prefix algorithm (Blelloch): log2(n) levels of strided slices, fn, pads and concatenates.
    `reverse` scans from the end (fn(later, earlier), as JAX)."""
    flat, tree = tree_flatten(elems)
    flat = [_arr(e) for e in flat]
    if not flat:
        raise ValueError("associative_scan needs at least one array")
    axis = normalize_axis(axis, flat[0].ndim)
    num = flat[0].shape[axis]
    if any(e.shape[axis] != num for e in flat[1:]):
        raise ValueError("Array inputs to associative_scan must have the same first dimension. "
                         f"(saw: {[tuple(e.shape) for e in flat]})")
    if reverse:
        flat = [rev(e, (axis,)) for e in flat]

    def combine(a_flat, b_flat):
        c_flat, c_tree = tree_flatten(fn(tree_unflatten(tree, a_flat),
                                         tree_unflatten(tree, b_flat)))
        if c_tree != tree:
            raise TypeError(f"associative_scan: fn returned a {c_tree}, not the structure of "
                            f"elems, {tree}")
        return [_arr(c) for c in c_flat]

    def sl(e, start, limit, stride=1):
        return slice_in_dim(e, start, limit, stride, axis)

    def scan(elems):
        n = elems[0].shape[axis]
        if n < 2:
            return elems
        # Pairs combined, scanned recursively: the odd positions of the result.
        odd = scan(combine([sl(e, 0, -1, 2) for e in elems], [sl(e, 1, None, 2) for e in elems]))
        # Each even position (after the first) is the odd one before it combined with itself.
        if n % 2 == 0:
            even = combine([sl(e, 0, -1) for e in odd], [sl(e, 2, None, 2) for e in elems])
        else:
            even = combine(odd, [sl(e, 2, None, 2) for e in elems])
        even = [concatenate([sl(e, 0, 1), r], axis) for e, r in zip(elems, even)]
        return [_interleave(e, o, axis) for e, o in zip(even, odd)]

    out = scan(flat)
    if reverse:
        out = [rev(e, (axis,)) for e in out]
    return tree_unflatten(tree, out)


# ---------------------------------------------------------------------------------------------
# conv_transpose

def _conv_transpose_padding(k, s, padding):
    """(low, high) padding of the dilated-input convolution that transposes a forward conv with
    kernel size k, stride s and the given padding (JAX's rule)."""
    if padding == "SAME":
        pad_len = k + s - 2
        pad_a = k - 1 if s > k - 1 else int(np.ceil(pad_len / 2))
    elif padding == "VALID":
        pad_len = k + s - 2 + max(k - s, 0)
        pad_a = k - 1
    elif isinstance(padding, tuple):
        pads = tuple(k - p - 1 for p in padding)
        pad_a, pad_len = pads[0], sum(pads)
    else:
        raise ValueError(f"Invalid padding mode: {padding}")
    return pad_a, pad_len - pad_a


def conv_transpose(lhs, rhs, strides, padding, rhs_dilation=None, dimension_numbers=None,
                   transpose_kernel=False, precision=None, preferred_element_type=None,
                   use_consistent_padding=False):
    """Transposed (fractionally strided) convolution, as jax.lax.conv_transpose: a
    conv_general_dilated with lhs_dilation = strides and the padding JAX computes for
    "SAME"/"VALID" (explicit pairs are used as they are unless use_consistent_padding, which
    reads them as the forward conv's padding). Layouts default to TensorFlow's ("NHWC",
    "HWIO", "NHWC" for 2-d); transpose_kernel flips the kernel's spatial axes and swaps its
    I and O axes (Keras' Conv2DTranspose)."""
    ndims = lhs.ndim
    if ndims != rhs.ndim or ndims < 3:
        raise ValueError(f"conv_transpose: lhs and rhs need the same rank >= 3, got shapes "
                         f"{tuple(lhs.shape)} and {tuple(rhs.shape)}")
    if dimension_numbers is None:
        defaults = {3: ("NHC", "HIO", "NHC"), 4: ("NHWC", "HWIO", "NHWC"),
                    5: ("NHWDC", "HWDIO", "NHWDC")}
        if ndims not in defaults:
            raise ValueError("conv_transpose: no default dimension_numbers for rank "
                             f"{ndims}; pass them")
        dimension_numbers = defaults[ndims]
    rhs_spec = dimension_numbers[1]
    if not isinstance(rhs_spec, str):
        raise NotImplementedError("conv_transpose: dimension_numbers must be layout strings "
                                  "such as ('NHWC', 'HWIO', 'NHWC')")
    spatial = [i for i, c in enumerate(rhs_spec) if c not in "OI"]
    nsp = len(spatial)
    strides = tuple(int(s) for s in strides)
    rhs_dilation = (1,) * nsp if rhs_dilation is None else tuple(int(d) for d in rhs_dilation)
    if use_consistent_padding or (isinstance(padding, str) and padding in ("SAME", "VALID")):
        eff = [(rhs.shape[i] - 1) * d + 1 for i, d in zip(spatial, rhs_dilation)]
        per_dim = [padding] * nsp if isinstance(padding, str) else [tuple(p) for p in padding]
        pads = [_conv_transpose_padding(k, s, p) for k, s, p in zip(eff, strides, per_dim)]
    else:
        pads = padding
    if transpose_kernel:
        rhs = rev(rhs, tuple(spatial))
        o, i = rhs_spec.index("O"), rhs_spec.index("I")
        perm = list(range(ndims))
        perm[o], perm[i] = i, o
        rhs = transpose(rhs, tuple(perm))
    return conv_general_dilated(lhs, rhs, (1,) * nsp, pads, lhs_dilation=strides,
                                rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                                precision=precision,
                                preferred_element_type=preferred_element_type)
