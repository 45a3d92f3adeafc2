"""Shape manipulation (reshape, transpose, stack, split, tile, pad, roll, ...), composed from the
lax shape primitives, plus shape/dtype queries (ndim, shape, result_type, finfo, ...).

Sizes, axes, repeats and shifts are static (Python ints or NumPy arrays), as in JAX: they decide
the shapes of the program.
"""

from __future__ import annotations

import builtins
import math
import operator

import numpy as np

from .. import lax
from ..core import Tracer, to_host, user_line
from ._core import asarray, canonical_axes, canonical_axis, convert, is_array
from ._core import broadcast_shapes as _broadcast_shapes
from ._core import broadcast_to as _broadcast_to
from ._core import result_type as _result_type
from ._indexing import INDEX, concrete_value

# ---------------------------------------------------------------------------------------------
# Queries


def ndim(a):
    """The number of axes of a."""
    return len(np.shape(a)) if type(a) is not Tracer else a.ndim


def shape(a):
    """The shape of a, as a tuple."""
    return a.shape if type(a) is Tracer else np.shape(a)


def size(a, axis=None):
    """The number of elements of a (along `axis` if given)."""
    s = shape(a)
    if axis is None:
        return int(np.prod(s, dtype=np.int64))
    return s[canonical_axis(axis, len(s))]


def result_type(*arrays_and_dtypes):
    """The dtype NumPy 2 gives an operation on these arrays, scalars and dtypes."""
    return _result_type(*arrays_and_dtypes)


def promote_types(type1, type2):
    """The smallest dtype both dtypes can be cast to safely."""
    return np.promote_types(type1, type2)


def _dtype_of(x):
    return x.dtype if type(x) is Tracer else x


def can_cast(from_, to, casting="safe"):
    """Whether a dtype (or an array's dtype) can be cast to `to` under the casting rule."""
    f = _dtype_of(from_)
    if isinstance(f, np.ndarray):
        f = f.dtype
    return np.can_cast(f, to, casting)


def iinfo(int_type):
    """Machine limits of an integer dtype (or of an array's dtype)."""
    return np.iinfo(_dtype_of(int_type))


def finfo(dtype):
    """Machine limits of a float dtype (or of an array's dtype)."""
    return np.finfo(_dtype_of(dtype))


def astype(x, dtype, /, *, copy=True, device=None):
    """x converted to `dtype`."""
    return convert(asarray(x), np.dtype(dtype))


# ---------------------------------------------------------------------------------------------
# Reshaping and axis order

def _shape_arg(shape_, more):
    if more:
        return (shape_,) + tuple(more)
    if isinstance(shape_, (int, np.integer)) or type(shape_) is Tracer:
        return (shape_,)
    return tuple(shape_)


def _resolve_shape(old, new):
    size_ = math.prod(old)
    new = [operator.index(s) for s in new]
    unknown = [i for i, s in enumerate(new) if s == -1]
    known = math.prod(s for s in new if s != -1)
    if len(unknown) > 1:
        raise ValueError(f"can only specify one unknown dimension (-1), got {tuple(new)}")
    if unknown:
        if known == 0 or size_ % known:
            raise ValueError(f"cannot reshape an array of shape {tuple(old)} (size {size_}) "
                             f"into shape {tuple(new)}{user_line()}")
        new[unknown[0]] = size_ // known
    elif known != size_:
        raise ValueError(f"cannot reshape an array of shape {tuple(old)} (size {size_}) into "
                         f"shape {tuple(new)}{user_line()}")
    return tuple(new)


def reshape(a, shape=None, *more, order="C", newshape=None, copy=None):
    """a with a new shape of the same size; one axis may be -1 (inferred). Also accepts the
    method form x.reshape(2, 3)."""
    if shape is None:
        shape = newshape
    if more and isinstance(more[-1], str):  # np.reshape(a, shape, "F")
        order, more = more[-1], more[:-1]
    x = asarray(a)
    new = _resolve_shape(x.shape, _shape_arg(shape, more))
    if order == "F":
        xt = lax.transpose(x, tuple(reversed(range(x.ndim))))
        return lax.transpose(lax.reshape(xt, new[::-1]), tuple(reversed(range(len(new)))))
    if order not in ("C", "A"):
        raise NotImplementedError(f"reshape order {order!r}")
    return lax.reshape(x, new)


def ravel(a, order="C"):
    """a flattened to 1-D."""
    x = asarray(a)
    if order == "F":
        x = lax.transpose(x, tuple(reversed(range(x.ndim))))
    return lax.reshape(x, (x.size,))


def flatten(a, order="C"):
    """a flattened to 1-D (the ndarray.flatten method)."""
    return ravel(a, order)


def transpose(a, axes=None, *more):
    """a with its axes permuted (reversed by default); also x.transpose(1, 0)."""
    x = asarray(a)
    if more:
        axes = (axes,) + more
    if axes is None:
        return lax.transpose(x, tuple(reversed(range(x.ndim))))
    axes = tuple(canonical_axis(ax, x.ndim) for ax in axes)
    if len(axes) != x.ndim or len(set(axes)) != x.ndim:
        raise ValueError(f"axes {axes} don't match an array of rank {x.ndim}{user_line()}")
    return lax.transpose(x, axes)


permute_dims = transpose


def matrix_transpose(x, /):
    """x with its last two axes swapped."""
    x = asarray(x)
    if x.ndim < 2:
        raise ValueError(f"matrix_transpose needs at least 2 axes, got shape {x.shape}")
    return swapaxes(x, -1, -2)


def swapaxes(a, axis1, axis2):
    """a with two axes interchanged."""
    x = asarray(a)
    i, j = canonical_axis(axis1, x.ndim), canonical_axis(axis2, x.ndim)
    perm = list(range(x.ndim))
    perm[i], perm[j] = perm[j], perm[i]
    return lax.transpose(x, perm)


def moveaxis(a, source, destination):
    """a with the `source` axes moved to positions `destination`."""
    x = asarray(a)
    src = (source,) if isinstance(source, (int, np.integer)) else tuple(source)
    dst = (destination,) if isinstance(destination, (int, np.integer)) else tuple(destination)
    if len(src) != len(dst):
        raise ValueError("moveaxis: source and destination must have the same number of axes")
    src = tuple(canonical_axis(s, x.ndim, "source") for s in src)
    dst = tuple(canonical_axis(d, x.ndim, "destination") for d in dst)
    order = [i for i in range(x.ndim) if i not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return lax.transpose(x, order)


def rollaxis(a, axis, start=0):
    """a with `axis` moved to before position `start`."""
    x = asarray(a)
    axis = canonical_axis(axis, x.ndim)
    if not -x.ndim <= start <= x.ndim:
        raise np.exceptions.AxisError(f"start {start} out of range for rank {x.ndim}")
    start = start % (x.ndim + 1) if start < 0 else start
    if axis < start:
        start -= 1
    return moveaxis(x, axis, start) if axis != start else x


def expand_dims(a, axis):
    """a with new size-1 axes at the positions `axis` (of the result)."""
    x = asarray(a)
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    n = x.ndim + len(axes)
    return lax.expand_dims(x, canonical_axes(axes, n))


def squeeze(a, axis=None):
    """a without size-1 axes (only the given ones, which must have size 1)."""
    x = asarray(a)
    if axis is None:
        axes = tuple(i for i, s in enumerate(x.shape) if s == 1)
    else:
        axes = canonical_axes(axis, x.ndim)
        bad = [i for i in axes if x.shape[i] != 1]
        if bad:
            raise ValueError(f"cannot select an axis to squeeze out which has size not equal to "
                             f"one (axis {bad[0]} of shape {x.shape}){user_line()}")
    return lax.squeeze(x, axes) if axes else x


def _atleast(nd, arys):
    outs = []
    for a in arys:
        x = asarray(a)
        if x.ndim < nd:
            if nd == 3 and x.ndim == 2:
                x = lax.reshape(x, x.shape + (1,))
            elif nd == 3 and x.ndim == 1:
                x = lax.reshape(x, (1,) + x.shape + (1,))
            else:
                x = lax.reshape(x, (1,) * (nd - x.ndim) + x.shape)
        outs.append(x)
    return outs[0] if len(outs) == 1 else tuple(outs)


def atleast_1d(*arys):
    """Each input as an array of rank >= 1."""
    return _atleast(1, arys)


def atleast_2d(*arys):
    """Each input as an array of rank >= 2 (1-D (n,) becomes (1, n))."""
    return _atleast(2, arys)


def atleast_3d(*arys):
    """Each input as an array of rank >= 3 ((n,) -> (1, n, 1), (m, n) -> (m, n, 1))."""
    return _atleast(3, arys)


def broadcast_to(array, shape):
    """array broadcast to `shape` by NumPy's rules."""
    return _broadcast_to(array, (shape,) if isinstance(shape, (int, np.integer)) else shape)


def broadcast_arrays(*args):
    """The inputs broadcast against each other."""
    xs = [asarray(a) for a in args]
    s = _broadcast_shapes(*(x.shape for x in xs))
    return tuple(_broadcast_to(x, s) for x in xs)


def broadcast_shapes(*shapes):
    """The shape that arrays of these shapes broadcast to."""
    return _broadcast_shapes(*(tuple(s) if not isinstance(s, int) else (s,) for s in shapes))


# ---------------------------------------------------------------------------------------------
# Joining and splitting

def _promoted(arrays, dtype=None):
    xs = [asarray(a) for a in arrays]
    if not xs:
        raise ValueError("need at least one array to concatenate")
    dt = result_type(*arrays) if dtype is None else np.dtype(dtype)
    return [convert(x, dt) for x in xs]


def concatenate(arrays, axis=0, out=None, *, dtype=None, casting="same_kind"):
    """The arrays joined along an existing axis (flattened first for axis=None)."""
    if out is not None:
        raise TypeError("concatenate: out= is not supported (funcgrad arrays are immutable)")
    xs = _promoted(list(arrays), dtype)
    if axis is None:
        xs = [lax.reshape(x, (x.size,)) for x in xs]
        axis = 0
    nd = xs[0].ndim
    if nd == 0:
        raise ValueError("zero-dimensional arrays cannot be concatenated")
    ax = canonical_axis(axis, nd)
    for x in xs[1:]:
        if x.ndim != nd or builtins.any(a != b for i, (a, b) in enumerate(zip(x.shape, xs[0].shape))
                                        if i != ax):
            raise ValueError("concatenate: all the input array dimensions except for the "
                             f"concatenation axis {ax} must match exactly, got shapes "
                             f"{', '.join(str(tuple(y.shape)) for y in xs)}{user_line()}")
    return lax.concatenate(xs, ax)


concat = concatenate


def stack(arrays, axis=0, out=None, *, dtype=None, casting="same_kind"):
    """The arrays (of one shape) joined along a new axis."""
    if out is not None:
        raise TypeError("stack: out= is not supported (funcgrad arrays are immutable)")
    xs = _promoted(list(arrays), dtype)
    s = xs[0].shape
    if builtins.any(x.shape != s for x in xs):
        raise ValueError("all input arrays must have the same shape, got "
                         f"{', '.join(str(tuple(x.shape)) for x in xs)}{user_line()}")
    ax = canonical_axis(axis, len(s) + 1)
    return lax.concatenate([lax.expand_dims(x, (ax,)) for x in xs], ax)


def vstack(tup, *, dtype=None, casting="same_kind"):
    """Arrays stacked vertically (along axis 0, 1-D inputs as rows)."""
    return concatenate(_as_tuple(atleast_2d(*tup)), axis=0, dtype=dtype)


row_stack = vstack


def hstack(tup, *, dtype=None, casting="same_kind"):
    """Arrays stacked horizontally (axis 1; axis 0 for 1-D inputs)."""
    xs = _as_tuple(atleast_1d(*tup))
    return concatenate(xs, axis=0 if xs[0].ndim == 1 else 1, dtype=dtype)


def dstack(tup):
    """Arrays stacked along the third axis."""
    return concatenate(_as_tuple(atleast_3d(*tup)), axis=2)


def column_stack(tup):
    """1-D arrays as columns of a 2-D array (2-D arrays joined along axis 1)."""
    xs = []
    for a in tup:
        x = asarray(a)
        xs.append(lax.reshape(x, (x.size, 1)) if x.ndim < 2 else x)
    return concatenate(xs, axis=1)


def _as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


def unstack(x, /, *, axis=0):
    """The slices of x along an axis, as a tuple."""
    x = asarray(x)
    ax = canonical_axis(axis, x.ndim)
    return tuple(lax.squeeze(_slice_axis(x, ax, i, i + 1), (ax,)) for i in range(x.shape[ax]))


def _slice_axis(x, ax, lo, hi, step=1):
    start = [0] * x.ndim
    stop = list(x.shape)
    strides = [1] * x.ndim
    start[ax], stop[ax], strides[ax] = lo, hi, step
    return lax.slice(x, start, stop, strides)


def array_split(ary, indices_or_sections, axis=0):
    """ary split into pieces along an axis: n nearly equal pieces, or at the given indices."""
    x = asarray(ary)
    ax = canonical_axis(axis, x.ndim)
    n = x.shape[ax]
    if isinstance(indices_or_sections, (int, np.integer)):
        k = int(indices_or_sections)
        if k <= 0:
            raise ValueError("number sections must be larger than 0.")
        each, extra = divmod(n, k)
        sizes = [each + 1] * extra + [each] * (k - extra)
        bounds = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    else:
        bounds = [0] + [int(i) for i in indices_or_sections] + [n]
    outs = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        lo, hi = _clip_index(lo, n), _clip_index(hi, n)
        outs.append(_slice_axis(x, ax, lo, builtins.max(lo, hi)))
    return outs


def _clip_index(i, n):
    if i < 0:
        i += n
    return builtins.min(builtins.max(i, 0), n)


def split(ary, indices_or_sections, axis=0):
    """ary split into equal pieces (or at the given indices) along an axis."""
    if isinstance(indices_or_sections, (int, np.integer)):
        n = shape(ary)[canonical_axis(axis, ndim(ary))]
        if n % int(indices_or_sections):
            raise ValueError("array split does not result in an equal division")
    return array_split(ary, indices_or_sections, axis)


def hsplit(ary, indices_or_sections):
    """split along axis 1 (axis 0 for 1-D arrays)."""
    if ndim(ary) == 0:
        raise ValueError("hsplit only works on arrays of 1 or more dimensions")
    return split(ary, indices_or_sections, axis=1 if ndim(ary) > 1 else 0)


def vsplit(ary, indices_or_sections):
    """split along axis 0 (arrays of rank >= 2)."""
    if ndim(ary) < 2:
        raise ValueError("vsplit only works on arrays of 2 or more dimensions")
    return split(ary, indices_or_sections, axis=0)


def dsplit(ary, indices_or_sections):
    """split along axis 2 (arrays of rank >= 3)."""
    if ndim(ary) < 3:
        raise ValueError("dsplit only works on arrays of 3 or more dimensions")
    return split(ary, indices_or_sections, axis=2)


def append(arr, values, axis=None):
    """values appended to arr (both flattened for axis=None)."""
    if axis is None:
        return concatenate([ravel(arr), ravel(values)])
    return concatenate([arr, values], axis=axis)


def take_static(x, idx, axis):
    """x's slices at the static integer positions `idx` (a 1-D NumPy array) along `axis`."""
    idx = np.asarray(idx, np.int64).reshape(-1)
    if idx.size and np.array_equal(idx, np.arange(idx[0], idx[0] + idx.size)):
        return _slice_axis(x, axis, int(idx[0]), int(idx[0]) + idx.size)
    xt = lax.transpose(x, (axis,) + tuple(i for i in range(x.ndim) if i != axis))
    out = lax.gather(xt, idx.reshape(-1, 1))
    perm = list(range(1, x.ndim))
    perm.insert(axis, 0)
    return lax.transpose(out, tuple(perm))


def delete(arr, obj, axis=None):
    """arr without the entries at the static indices (or slice) `obj` along an axis."""
    x = asarray(arr)
    if axis is None:
        x, axis = ravel(x), 0
    ax = canonical_axis(axis, x.ndim)
    keep = np.delete(np.arange(x.shape[ax]), obj)
    return take_static(x, keep, ax)


def resize(a, new_shape):
    """a's elements repeated (in order) to fill `new_shape`."""
    x = ravel(a)
    new = (new_shape,) if isinstance(new_shape, (int, np.integer)) else tuple(new_shape)
    total = int(np.prod(new, dtype=np.int64))
    if x.size == 0 or total == 0:
        return lax.full(new, 0, x.dtype)
    return lax.reshape(take_static(x, np.arange(total) % x.size, 0), new)


# ---------------------------------------------------------------------------------------------
# Repetition, reversal, rotation, padding

def tile(A, reps):
    """A repeated `reps` times along each axis."""
    x = asarray(A)
    reps = (reps,) if isinstance(reps, (int, np.integer)) else tuple(int(r) for r in reps)
    nd = builtins.max(x.ndim, len(reps))
    reps = (1,) * (nd - len(reps)) + reps
    xs = (1,) * (nd - x.ndim) + x.shape
    x = lax.reshape(x, xs)
    inter = tuple(d for pair in zip(reps, xs) for d in pair)
    out = lax.broadcast_in_dim(x, inter, tuple(range(1, 2 * nd, 2)))
    return lax.reshape(out, tuple(r * s for r, s in zip(reps, xs)))


def repeat(a, repeats, axis=None):
    """Each element of a repeated (along an axis; flattened for axis=None); repeats is a static
    int or a static array of per-element counts."""
    x = asarray(a)
    if axis is None:
        x, axis = ravel(x), 0
    ax = canonical_axis(axis, x.ndim)
    if type(repeats) is Tracer:
        repeats = to_host(repeats.concrete_value("repeat's repeats"))
    r = np.asarray(repeats)
    if r.ndim == 0 or r.size == 1:
        k = int(r.reshape(()))
        shp = x.shape[:ax + 1] + (k,) + x.shape[ax + 1:]
        dims = tuple(range(ax + 1)) + tuple(range(ax + 2, x.ndim + 1))
        out = lax.broadcast_in_dim(x, shp, dims)
        return lax.reshape(out, x.shape[:ax] + (x.shape[ax] * k,) + x.shape[ax + 1:])
    if r.shape != (x.shape[ax],):
        raise ValueError(f"repeat: repeats of shape {r.shape} don't match axis {ax} of an array "
                         f"of shape {x.shape}{user_line()}")
    return take_static(x, np.repeat(np.arange(x.shape[ax]), r), ax)


def flip(m, axis=None):
    """m with the order of elements reversed along the given axes (all by default)."""
    x = asarray(m)
    return lax.rev(x, canonical_axes(axis, x.ndim))


def fliplr(m):
    """m reversed along axis 1."""
    x = asarray(m)
    if x.ndim < 2:
        raise ValueError("Input must be >= 2-d.")
    return lax.rev(x, (1,))


def flipud(m):
    """m reversed along axis 0."""
    x = asarray(m)
    if x.ndim < 1:
        raise ValueError("Input must be >= 1-d.")
    return lax.rev(x, (0,))


def rot90(m, k=1, axes=(0, 1)):
    """m rotated by 90 degrees k times in the plane of `axes` (from the first toward the
    second)."""
    x = asarray(m)
    a0, a1 = canonical_axis(axes[0], x.ndim), canonical_axis(axes[1], x.ndim)
    if a0 == a1:
        raise ValueError("Axes must be different.")
    k %= 4
    if k == 0:
        return x
    if k == 2:
        return lax.rev(x, (a0, a1))
    perm = list(range(x.ndim))
    perm[a0], perm[a1] = perm[a1], perm[a0]
    if k == 1:
        return lax.transpose(lax.rev(x, (a1,)), perm)
    return lax.rev(lax.transpose(x, perm), (a1,))


def roll(a, shift, axis=None):
    """a with elements shifted (cyclically) by `shift` along the given axes (static shifts)."""
    x = asarray(a)
    if axis is None:
        return lax.reshape(roll(ravel(x), shift, 0), x.shape)
    shifts = np.atleast_1d(np.asarray(shift))
    axes = np.atleast_1d(np.asarray(axis))
    shifts, axes = np.broadcast_arrays(shifts, axes)
    total = {}
    for s, ax in zip(shifts.tolist(), axes.tolist()):
        ax = canonical_axis(ax, x.ndim)
        total[ax] = total.get(ax, 0) + int(s)
    for ax, s in total.items():
        n = x.shape[ax]
        if n == 0:
            continue
        s %= n
        if s:
            x = lax.concatenate([_slice_axis(x, ax, n - s, n), _slice_axis(x, ax, 0, n - s)], ax)
    return x


def _pad_widths(pad_width, nd):
    w = np.asarray(pad_width)
    if w.dtype.kind not in "iu":
        raise TypeError("pad_width must be of integral type.")
    w = np.broadcast_to(w, (nd, 2)) if w.ndim <= 1 or w.shape == (1, 2) else w
    if w.shape != (nd, 2) or np.any(w < 0):
        raise ValueError(f"pad_width {pad_width!r} does not fit an array of rank {nd}")
    return [(int(lo), int(hi)) for lo, hi in w]


def _pad_source_index(mode, n, lo, hi):
    """For each output position along an axis, the input position it copies (static)."""
    p = np.arange(-lo, n + hi)
    if mode == "edge":
        return np.clip(p, 0, n - 1)
    if mode == "wrap":
        return p % n
    if mode == "symmetric":
        j = p % (2 * n)
        return np.where(j < n, j, 2 * n - 1 - j)
    if mode == "reflect":
        if n == 1:
            return np.zeros_like(p)
        period = 2 * (n - 1)
        j = p % period
        return np.where(j < n, j, period - j)
    raise NotImplementedError(f"pad mode {mode!r}: supported modes are constant, edge, wrap, "
                              "reflect and symmetric")


def pad(array, pad_width, mode="constant", **kwargs):
    """array padded along each axis: mode 'constant' (constant_values), 'edge', 'wrap',
    'reflect' or 'symmetric'."""
    x = asarray(array)
    widths = _pad_widths(pad_width, x.ndim)
    if mode == "constant":
        values = kwargs.get("constant_values", 0)
        if type(values) is Tracer or np.ndim(values) == 0:
            v = convert(asarray(values), x.dtype)
            return lax.pad(x, v, [(lo, hi, 0) for lo, hi in widths])
        vals = np.broadcast_to(np.asarray(values), (x.ndim, 2))
        for ax, (lo, hi) in enumerate(widths):
            cfg = [(0, 0, 0)] * x.ndim
            cfg[ax] = (lo, 0, 0)
            x = lax.pad(x, np.array(vals[ax, 0], x.dtype), cfg)
            cfg[ax] = (0, hi, 0)
            x = lax.pad(x, np.array(vals[ax, 1], x.dtype), cfg)
        return x
    for ax, (lo, hi) in enumerate(widths):
        if lo == hi == 0:
            continue
        n = x.shape[ax]
        if n == 0:
            raise ValueError(f"can't pad an empty axis with mode {mode!r}")
        x = take_static(x, _pad_source_index(mode, n, lo, hi), ax)
    return x


# ---------------------------------------------------------------------------------------------
# Grids

def meshgrid(*xi, copy=True, sparse=False, indexing="xy"):
    """Coordinate arrays from coordinate vectors ('xy': Cartesian, 'ij': matrix indexing)."""
    if indexing not in ("xy", "ij"):
        raise ValueError("Valid values for `indexing` are 'xy' and 'ij'.")
    xs = [ravel(x) for x in xi]
    nd = len(xs)
    sizes = [x.size for x in xs]
    pos = list(range(nd))
    if indexing == "xy" and nd > 1:
        sizes[0], sizes[1] = sizes[1], sizes[0]
        pos[0], pos[1] = 1, 0
    out = []
    for x, p in zip(xs, pos):
        if sparse:
            s = [1] * nd
            s[p] = x.size
            out.append(lax.reshape(x, s))
        else:
            out.append(lax.broadcast_in_dim(x, sizes, (p,)))
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# Insertion and assembly: insert, block

def insert(arr, obj, values, axis=None):
    """arr with `values` inserted before the static indices (int, slice or sequence) `obj`."""
    x = asarray(arr)
    if axis is None:
        x, axis = ravel(x), 0
    ax = canonical_axis(axis, x.ndim)
    n = x.shape[ax]
    if type(obj) is Tracer:
        obj = concrete_value(obj, "insert's indices")
    if isinstance(obj, slice):
        indices = np.arange(*obj.indices(n), dtype=INDEX)
    else:
        indices = np.array(obj)
        if indices.dtype == np.bool_:
            raise IndexError("insert: boolean index arrays are not supported")
        if indices.ndim > 1:
            raise ValueError("index array argument obj to insert must be one dimensional or "
                             "scalar")
        indices = indices.astype(INDEX)
    v = asarray(values, x.dtype) if not is_array(values) else convert(asarray(values), x.dtype)
    if v.ndim < x.ndim:
        v = reshape(v, (1,) * (x.ndim - v.ndim) + tuple(v.shape))
    if indices.size == 1:
        index = int(indices.item())
        if not -n <= index <= n:
            raise IndexError(f"index {index} is out of bounds for axis {ax} with size {n}")
        index = index + n if index < 0 else index
        if indices.ndim == 0:
            v = moveaxis(v, 0, ax)
        numnew = v.shape[ax]
        perm = np.concatenate([np.arange(index), n + np.arange(numnew), np.arange(index, n)])
    elif indices.size == 0 and not isinstance(obj, (int, np.integer)):
        return x
    else:
        if np.any((indices < -n) | (indices > n)):
            raise IndexError(f"index out of bounds for axis {ax} with size {n}")
        indices = np.where(indices < 0, indices + n, indices)
        numnew = len(indices)
        order = indices.argsort(kind="mergesort")
        indices[order] += np.arange(numnew)
        perm = np.empty(n + numnew, INDEX)
        old = np.ones(n + numnew, bool)
        old[indices] = False
        perm[indices] = n + np.arange(numnew)
        perm[old] = np.arange(n)
    block_shape = x.shape[:ax] + (numnew,) + x.shape[ax + 1:]
    v = _broadcast_to(v, block_shape)
    return take_static(concatenate([x, v], axis=ax), perm, ax)


def _block_depth(a):
    if isinstance(a, tuple):
        raise TypeError("block: arrays is a tuple. Only lists can be used to arrange blocks, and "
                        "np.block does not allow implicit conversion from tuple to ndarray.")
    if isinstance(a, list):
        if not a:
            raise ValueError("block: lists cannot be empty")
        depths = [_block_depth(e) for e in a]
        if any(d != depths[0] for d in depths):
            raise ValueError("block: list depths are mismatched")
        return depths[0] + 1
    return 0


def _block_ndim(a):
    if isinstance(a, list):
        return builtins.max(_block_ndim(e) for e in a)
    return asarray(a).ndim


def block(arrays):
    """Assemble an array from nested lists of blocks (innermost lists join along the last axis)."""
    depth = _block_depth(arrays)
    nd = builtins.max(depth, _block_ndim(arrays))

    def build(a, level):
        if not isinstance(a, list):
            a = asarray(a)
            return reshape(a, (1,) * (nd - a.ndim) + tuple(a.shape))
        return concatenate([build(e, level + 1) for e in a], axis=nd - depth + level)

    return build(arrays, 0)


__all__ = sorted({n for n, v in list(globals().items())
                  if not n.startswith("_") and callable(v)
                  and getattr(v, "__module__", "") == __name__} - {"take_static"})
