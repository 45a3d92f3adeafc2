"""NumPy indexing on top of lax: `x[idx]`, `x.at[idx].set/add/...`, and the index functions
(take, take_along_axis, nonzero, diagonal, tril, searchsorted, ...).

An index is parsed once into a per-axis plan. Basic indexing (ints, slices, Ellipsis, None)
becomes static lax.slice / rev / squeeze / expand_dims, a traced integer a dynamic_slice; advanced
(integer array) indexing one gather whose index arrays are broadcast together, with NumPy's rule
for where the advanced axes go. Boolean masks need concrete values: they become integer arrays
through np.nonzero. Updates (`.at[]`) write with dynamic_update_slice for contiguous basic
indices and otherwise scatter at the coordinates the same indexing reads.
"""

from __future__ import annotations

import builtins
import math
import operator

import numpy as np

from .. import lax
from ..core import ConcretizationError, Tracer, device_namespace, to_host, user_line
from ._core import asarray, broadcast_shapes, broadcast_to, promote_args, result_type

__all__ = [
    "take", "take_along_axis", "put_along_axis", "put", "nonzero", "argwhere", "flatnonzero",
    "compress", "extract", "select", "choose", "searchsorted", "digitize", "diag", "diagflat",
    "diagonal", "trace", "tril", "triu", "tril_indices", "triu_indices", "tril_indices_from",
    "triu_indices_from", "diag_indices", "diag_indices_from", "fill_diagonal", "ix_",
    "unravel_index", "ravel_multi_index",
]

INDEX = np.dtype(np.int64)  # NumPy's intp on 64-bit platforms
_slice = builtins.slice


# ---------------------------------------------------------------------------------------------
# Index parsing

def _is_concrete(x):
    """Whether a value can be read at trace time (an array, or a tracer of a concrete trace)."""
    if type(x) is not Tracer:
        return True
    try:
        x.concrete_value("a concrete index")
        return True
    except ConcretizationError:
        return False


_CONCRETE_FIX = ("Under jit/vmap/make_jaxpr use fnp.where(mask, x, 0) (keeps the shape), pass "
                 "size=... where supported (fnp.nonzero(mask, size=n)), or make the mask a "
                 "static argument.")


def _concrete(x, what, fix=_CONCRETE_FIX):
    """x's value as a NumPy array; for an abstract tracer a clear error ending with `fix`."""
    if type(x) is not Tracer:
        return to_host(x)
    try:
        return to_host(x.concrete_value(what))
    except ConcretizationError as e:
        raise ConcretizationError(
            f"{what} needs concrete values, but got an abstract traced array "
            f"{x.aval.str_short()}{user_line()}: its result's shape would depend on the data. "
            + fix) from e


def _float_index_error(what):
    return IndexError(f"only integers, slices (`:`), ellipsis (`...`), numpy.newaxis (`None`) "
                      f"and integer or boolean arrays are valid indices; got {what}{user_line()}. "
                      "Indices must be integers: convert with .astype(int).")


def _classify(item):
    """One index entry as (kind, value): kind in none/ellipsis/slice/int/dyn/array/bool."""
    if item is None:
        return "none", None
    if item is Ellipsis:
        return "ellipsis", None
    if isinstance(item, _slice):
        for part in (item.start, item.stop, item.step):
            if part is not None and not isinstance(part, (int, np.integer)):
                if type(part) is Tracer and part.ndim == 0 and part.dtype.kind in "iu" \
                        and _is_concrete(part):
                    continue
                raise IndexError(f"slice indices must be integers or None, got {item}"
                                 f"{user_line()}; slices with traced bounds are not supported "
                                 "(use lax.dynamic_slice for a traced start and a static size).")
        return "slice", _slice(*(None if p is None else operator.index(p)
                                 for p in (item.start, item.stop, item.step)))
    if isinstance(item, (bool, np.bool_)):
        return "bool", np.asarray(item)
    if isinstance(item, (int, np.integer)):
        return "int", int(item)
    if isinstance(item, (float, complex, np.floating, np.complexfloating)):
        raise _float_index_error(f"{type(item).__name__} {item!r}")
    if isinstance(item, str):
        raise _float_index_error(f"a string {item!r}")
    if type(item) is Tracer:
        kind = item.dtype.kind
        if kind == "b":
            return "bool", _concrete(item, "Boolean mask indexing")
        if kind not in "iu":
            raise _float_index_error(f"an array of dtype {item.dtype}")
        if item.ndim == 0:
            return "dyn", item
        return "array", item
    arr = asarray(item) if isinstance(item, (list, tuple)) else item
    if type(arr) is Tracer:
        return _classify(arr)
    if not hasattr(arr, "dtype"):
        arr = np.asarray(arr)
    if isinstance(item, (list, tuple)) and arr.size == 0:
        arr = arr.astype(INDEX)  # [] indexes nothing: NumPy takes it as an empty int array
    kind = arr.dtype.kind
    if kind == "b":
        return "bool", np.asarray(arr)
    if kind not in "iu":
        raise _float_index_error(f"an array of dtype {arr.dtype}")
    if arr.ndim == 0:
        return "int", int(arr)
    return "array", arr


def _parse(shape, idx):
    """Entries aligned to the axes: a list of (kind, value) with None entries interleaved, bool
    masks expanded to integer arrays, Ellipsis expanded to full slices, and missing trailing
    axes filled with full slices."""
    if not isinstance(idx, tuple):
        idx = (idx,)
    expanded = [_classify(i) for i in idx]
    if any(k == "bool" and v.ndim == 0 for k, v in expanded):
        raise IndexError(f"a 0-d boolean index cannot be combined like this{user_line()}")
    expanded = [("mask", v) if k == "bool" else (k, v) for k, v in expanded]
    n_ellipsis = sum(k == "ellipsis" for k, _ in expanded)
    if n_ellipsis > 1:
        raise IndexError(f"an index can only have a single ellipsis ('...'){user_line()}")
    used = sum(v.ndim if k == "mask" else 1 for k, v in expanded
               if k in ("mask", "int", "dyn", "array", "slice"))
    if used > len(shape):
        raise IndexError(f"too many indices for array: array is {len(shape)}-dimensional, but "
                         f"{used} were indexed{user_line()}")
    out, axis = [], 0
    for kind, val in expanded:
        if kind == "ellipsis":
            for _ in range(len(shape) - used):
                out.append(("slice", _slice(None)))
                axis += 1
        elif kind == "mask":
            dims = shape[axis:axis + val.ndim]
            if tuple(dims) != val.shape:
                bad = next(i for i, (a, b) in enumerate(zip(dims, val.shape)) if a != b)
                raise IndexError(f"boolean index did not match indexed array along axis "
                                 f"{axis + bad}; size of axis is {dims[bad]} but size of "
                                 f"corresponding boolean axis is {val.shape[bad]}{user_line()}")
            for pos in np.nonzero(val):
                out.append(("array", pos.astype(INDEX)))
                axis += 1
        elif kind == "none":
            out.append(("none", None))
        else:
            out.append((kind, val))
            axis += 1
    while axis < len(shape):
        out.append(("slice", _slice(None)))
        axis += 1
    return out


# ---------------------------------------------------------------------------------------------
# Plans: what an index does to each axis

class _Plan:
    """The parsed index. `axes[i]` is the entry for input axis i (after None axes were added as
    size-1 input axes): ("slice", start, stop, step, size), ("int", i), ("dyn", tracer) or
    ("array", array). `new_axes` are the positions of the inserted size-1 axes."""

    def __init__(self, shape, idx):
        entries = _parse_with_scalar_bools(shape, idx)
        self.new_axes = []
        self.shape = []
        axes = []
        dim = 0
        for kind, val in entries:
            if kind in ("none", "none_array"):
                self.new_axes.append(len(axes))
                self.shape.append(1)
                if kind == "none":
                    axes.append(("slice", 0, 1, 1, 1))
                else:
                    axes.append(("array", val))
                continue
            n = shape[dim]
            self.shape.append(n)
            if kind == "slice":
                start, stop, step = val.indices(n)
                axes.append(("slice", start, stop, step, len(range(start, stop, step))))
            elif kind == "int":
                if not -n <= val < n:
                    raise IndexError(f"index {val} is out of bounds for axis {dim} with size {n}"
                                     f"{user_line()}")
                axes.append(("int", val % n))
            elif kind == "dyn":
                axes.append(("dyn", val, n, dim))
            else:
                axes.append(("array", _normalize_array(val, n, dim)))
            dim += 1
        self.shape = tuple(self.shape)
        self.advanced = any(a[0] == "array" for a in axes)
        if self.advanced:  # integers take part in the broadcast of the advanced indices
            axes = [("array", np.asarray(a[1], INDEX)) if a[0] == "int" else
                    ("array", _normalize_array(*a[1:])) if a[0] == "dyn" else a for a in axes]
        self.axes = axes


def _parse_with_scalar_bools(shape, idx):
    """_parse, with x[True]/x[False] turned into a new axis indexed by [0] or []."""
    if not isinstance(idx, tuple):
        idx = (idx,)
    pieces, out = [], []
    for item in idx:
        if isinstance(item, (bool, np.bool_)) or (
                isinstance(item, (np.ndarray, Tracer)) and item.dtype == bool and item.ndim == 0):
            pieces.append(("scalar_bool", bool(_concrete(item, "Boolean mask indexing"))))
        else:
            pieces.append(("item", item))
    if not any(k == "scalar_bool" for k, _ in pieces):
        return _parse(shape, idx)
    plain = tuple(None if k == "scalar_bool" else v for k, v in pieces)
    entries = _parse(shape, plain)
    # Replace the None entries that came from scalar bools, in order.
    kinds = [k == "scalar_bool" for k, v in pieces if k == "scalar_bool" or v is None]
    values = iter(v for k, v in pieces if k == "scalar_bool")
    it = iter(kinds)
    for kind, val in entries:
        if kind == "none" and next(it):
            out.append(("none_array", np.zeros((int(next(values)),), INDEX)))
        else:
            out.append((kind, val))
    return out


def _normalize_array(a, n, dim):
    """Integer index array with negatives wrapped (x + n where x < 0); concrete out-of-bounds
    entries raise IndexError as in NumPy, traced ones are clamped by gather."""
    if type(a) is Tracer:
        if not _is_concrete(a):
            zero = np.zeros((), a.dtype)
            a = lax.select_n(lax.lt(a, zero), a, lax.add(a, np.array(n, a.dtype)))
            return lax.convert_element_type(a, INDEX)
        val = to_host(a.concrete_value("an index"))
        _check_bounds(val, n, dim)
        return lax.convert_element_type(lax.select_n(lax.lt(a, np.zeros((), a.dtype)), a,
                                                     lax.add(a, np.array(n, a.dtype))), INDEX)
    if not hasattr(a, "__cuda_array_interface__"):  # device indices are wrapped where they are
        a = np.asarray(a)
    _check_bounds(a, n, dim)
    return np.where(a < 0, a + n, a).astype(INDEX)


def _check_bounds(a, n, dim):
    if a.size and (a.min() < -n or a.max() >= n):
        bad = a.min() if a.min() < -n else a.max()
        raise IndexError(f"index {bad} is out of bounds for axis {dim} with size {n}"
                         f"{user_line()}")


def _dyn_start(i, n):
    """A traced integer index as a rank-0 start: negatives wrapped."""
    zero = np.zeros((), i.dtype)
    return lax.select_n(lax.lt(i, zero), i, lax.add(i, np.array(n, i.dtype)))


# ---------------------------------------------------------------------------------------------
# x[idx]

def _getitem(x, idx):
    """NumPy's x[idx] with lax primitives (see the module docstring)."""
    x = asarray(x)
    if isinstance(idx, tuple) and not idx:
        return x
    plan = _Plan(x.shape, idx)
    if plan.new_axes:
        x = lax.expand_dims(x, tuple(plan.new_axes))
    x = _apply_slices(x, plan.axes)
    if not plan.advanced:
        drop = tuple(i for i, a in enumerate(plan.axes) if a[0] in ("int", "dyn"))
        x = _apply_dyn(x, plan.axes)
        return lax.squeeze(x, drop) if drop else x
    return _gather_advanced(x, plan.axes)


def _apply_slices(x, axes):
    """Static slicing of every axis with a slice or int entry; other axes are kept whole."""
    start, limit, strides, flip = [], [], [], []
    for d, a in enumerate(axes):
        n = x.shape[d]
        if a[0] == "slice":
            _, lo, hi, step, size = a
            if size == 0:
                start.append(0), limit.append(0), strides.append(1)
            elif step > 0:
                start.append(lo), limit.append(lo + (size - 1) * step + 1), strides.append(step)
            else:
                last = lo + (size - 1) * step
                start.append(last), limit.append(lo + 1), strides.append(-step)
                if size > 1:
                    flip.append(d)
        elif a[0] == "int":
            start.append(a[1]), limit.append(a[1] + 1), strides.append(1)
        else:
            start.append(0), limit.append(n), strides.append(1)
    x = lax.slice(x, start, limit, strides)
    return lax.rev(x, tuple(flip)) if flip else x


def _apply_dyn(x, axes):
    """dynamic_slice of size 1 at each traced integer index."""
    dyn = [d for d, a in enumerate(axes) if a[0] == "dyn"]
    if not dyn:
        return x
    from ..lax.indexing import dynamic_slice
    starts = [_dyn_start(axes[d][1], x.shape[d]) if d in dyn else np.zeros((), INDEX)
              for d in range(x.ndim)]
    starts = [lax.convert_element_type(s, INDEX) for s in starts]
    sizes = [1 if d in dyn else x.shape[d] for d in range(x.ndim)]
    return dynamic_slice(x, *starts, slice_sizes=sizes, allow_negative_indices=False)


def _broadcast_indices(arrays):
    """The advanced index arrays broadcast to one shape and stacked on a last axis (int64)."""
    shape = broadcast_shapes(*(tuple(a.shape) for a in arrays), what="index arrays")
    if all(type(a) is not Tracer for a in arrays):
        xp = device_namespace(arrays)
        return xp.stack([xp.broadcast_to(xp.asarray(a).astype(INDEX, copy=False), shape)
                         for a in arrays], -1)
    parts = [lax.expand_dims(broadcast_to(lax.convert_element_type(asarray(a), INDEX), shape),
                             (len(shape),)) for a in arrays]
    return lax.concatenate(parts, len(shape))


def _gather_advanced(x, axes):
    """Gather along the advanced axes; NumPy puts the broadcast index axes where the first
    advanced axis was if the advanced axes are adjacent, else in front."""
    from ..lax.indexing import gather
    adv = [d for d, a in enumerate(axes) if a[0] == "array"]
    rest = [d for d in range(x.ndim) if d not in adv]
    xt = lax.transpose(x, adv + rest)
    idx = _broadcast_indices([axes[d][1] for d in adv])
    out = gather(xt, idx)
    nb = idx.ndim - 1
    contiguous = adv == list(range(adv[0], adv[-1] + 1))
    if contiguous and adv[0] > 0:
        k = adv[0]  # rest axes before the advanced block
        perm = (tuple(range(nb, nb + k)) + tuple(range(nb)) +
                tuple(range(nb + k, out.ndim)))
        out = lax.transpose(out, perm)
    return out


# ---------------------------------------------------------------------------------------------
# x.at[idx].set(v) and friends

class _IndexUpdateHelper:
    """`x.at[idx]`: functional updates returning new arrays (NumPy's in-place forms)."""

    __slots__ = ("array",)

    def __init__(self, array):
        self.array = array

    def __getitem__(self, idx):
        return _IndexUpdateRef(self.array, idx)

    def __repr__(self):
        return f"_IndexUpdateHelper({self.array!r})"


class _IndexUpdateRef:
    """`x.at[idx]`: set / add / multiply / divide / power / min / max / apply / get. Duplicate
    indices accumulate in add, multiply, min and max (as np.add.at); in set the last wins on
    NumPy (unspecified on other backends, as in JAX)."""

    __slots__ = ("array", "index")

    def __init__(self, array, index):
        self.array = array
        self.index = index

    def get(self, **kwargs):
        return _getitem(self.array, self.index)

    def set(self, values, **kwargs):
        return _update(self.array, self.index, values, "set")

    def add(self, values, **kwargs):
        return _update(self.array, self.index, values, "add")

    def subtract(self, values, **kwargs):
        return _update(self.array, self.index, _negate(values), "add")

    def multiply(self, values, **kwargs):
        return _update(self.array, self.index, values, "mul")

    mul = multiply

    def divide(self, values, **kwargs):
        x = asarray(self.array)
        if x.dtype.kind not in "fc":
            raise TypeError(f"x.at[].divide needs a floating array, got {x.dtype}{user_line()}")
        recip = lax.div(np.ones((), x.dtype), asarray(values, x.dtype))
        return _update(x, self.index, recip, "mul")

    def power(self, values, **kwargs):
        import funcgrad.numpy as fnp
        return self.apply(lambda v: fnp.power(v, values))

    def min(self, values, **kwargs):
        return _update(self.array, self.index, values, "min")

    def max(self, values, **kwargs):
        return _update(self.array, self.index, values, "max")

    def apply(self, func, **kwargs):
        """x with func applied at the indexed places (each place once: for unique indices)."""
        return self.set(func(self.get()))


def _negate(v):
    v = asarray(v)
    return lax.neg(v)


_COMBINE = {"add": lax.add, "mul": lax.mul, "min": lax.min, "max": lax.max}


def _update(x, idx, values, mode):
    x = asarray(x)
    plan = _Plan(x.shape, idx)
    out_shape = _result_shape(plan)
    v = asarray(values)
    if v.dtype != x.dtype:
        v = lax.convert_element_type(v, x.dtype)
    if tuple(v.shape) != out_shape:
        try:
            v = broadcast_to(v, out_shape)
        except ValueError:
            raise ValueError(f"x.at[...].{mode}: values of shape {tuple(v.shape)} cannot be "
                             f"broadcast to the indexed shape {out_shape}{user_line()}") from None
    if not plan.advanced and all(a[0] != "slice" or abs(a[3]) == 1 or a[4] <= 1
                                 for a in plan.axes):
        return _update_contiguous(x, plan, v, mode)
    from ..lax.indexing import scatter
    coords = _coordinates(x, idx)
    return scatter(x, coords, v, mode)


def _result_shape(plan):
    """The shape of x[idx], from its plan (as _getitem lays the axes out)."""
    kept = [a[4] for a in plan.axes if a[0] == "slice"]
    if not plan.advanced:
        return tuple(kept)
    adv = [d for d, a in enumerate(plan.axes) if a[0] == "array"]
    b = broadcast_shapes(*(tuple(plan.axes[d][1].shape) for d in adv), what="index arrays")
    if adv == list(range(adv[0], adv[-1] + 1)):
        return tuple(kept[:adv[0]]) + b + tuple(kept[adv[0]:])
    return b + tuple(kept)


def _update_contiguous(x, plan, v, mode):
    """Basic indices with unit steps: one dynamic_update_slice (of op(x[region], v))."""
    from ..lax.indexing import dynamic_slice, dynamic_update_slice
    axes = [a for i, a in enumerate(plan.axes) if i not in plan.new_axes]
    starts, sizes, flip, region = [], [], [], []
    for d, a in enumerate(axes):
        if a[0] == "slice":
            _, lo, hi, step, size = a
            first = lo if step > 0 else lo + (size - 1) * step
            starts.append(np.array(first if size else 0, INDEX))
            sizes.append(size)
            if step < 0 and size > 1:
                flip.append(d)
        elif a[0] == "int":
            starts.append(np.array(a[1], INDEX)), sizes.append(1)
        else:
            starts.append(lax.convert_element_type(_dyn_start(a[1], x.shape[d]), INDEX))
            sizes.append(1)
        region.append(sizes[-1])
    v = lax.reshape(v, region)
    if flip:
        v = lax.rev(v, tuple(flip))
    if mode != "set":
        v = _COMBINE[mode](dynamic_slice(x, *starts, slice_sizes=sizes,
                                         allow_negative_indices=False), v)
    return dynamic_update_slice(x, v, *starts, allow_negative_indices=False)


def _coordinates(x, idx):
    """Integer indices (shape x[idx].shape + (ndim,)) of the elements x[idx] reads."""
    grids = []
    for d, n in enumerate(x.shape):
        shape = [1] * x.ndim
        shape[d] = n
        grid = np.broadcast_to(np.arange(n, dtype=INDEX).reshape(shape), x.shape)
        grids.append(_getitem(grid, idx))
    if all(type(g) is not Tracer for g in grids):
        xp = device_namespace(grids)
        return xp.stack([xp.asarray(g) for g in grids], -1)
    nd = grids[0].ndim
    return lax.concatenate([lax.expand_dims(asarray(g), (nd,)) for g in grids], nd)


# ---------------------------------------------------------------------------------------------
# take, take_along_axis, put_along_axis, put

def _normalize_axis(axis, ndim):
    if not -ndim <= axis < max(ndim, 1):
        raise np.exceptions.AxisError(f"axis {axis} is out of bounds for array of dimension "
                                      f"{ndim}{user_line()}")
    return axis % ndim if ndim else 0


def _index_mode(indices, n, mode):
    """Indices adjusted for mode: 'clip' clamps into [0, n-1], 'wrap' takes them mod n; None and
    'raise' wrap negatives (and raise on concrete out-of-range values)."""
    if mode in (None, "raise", "fill", "promise_in_bounds"):
        return indices
    ind = asarray(indices)
    if ind.dtype.kind not in "iu":
        raise _float_index_error(f"an array of dtype {ind.dtype}")
    if mode == "clip":
        if type(ind) is not Tracer:
            return np.clip(ind, 0, n - 1)
        return lax.min(lax.max(ind, np.zeros((), ind.dtype)), np.array(n - 1, ind.dtype))
    if mode == "wrap":
        if type(ind) is not Tracer:
            return np.mod(ind, n)
        r = lax.rem(ind, np.array(n, ind.dtype))
        return lax.select_n(lax.lt(r, np.zeros((), r.dtype)), r, lax.add(r, np.array(n, r.dtype)))
    raise ValueError(f"mode must be one of 'raise', 'clip', 'wrap', got {mode!r}")


def _ravel(a):
    a = asarray(a)
    return lax.reshape(a, (a.size,))


def take(a, indices, axis=None, out=None, mode=None, unique_indices=False,
         indices_are_sorted=False, fill_value=None):
    """Elements of `a` at `indices` along `axis` (the flattened array when None)."""
    if out is not None:
        raise TypeError("take: out= is not supported (arrays are immutable)")
    a = asarray(a)
    if axis is None:
        a, axis = _ravel(a), 0
    axis = _normalize_axis(axis, a.ndim)
    ind = _index_mode(indices if not isinstance(indices, (list, tuple)) else asarray(indices),
                      a.shape[axis], mode)
    ind = asarray(ind)
    if ind.ndim == 0 and type(ind) is not Tracer:
        ind = int(ind)
    return _getitem(a, (_slice(None),) * axis + (ind,))


def _along_axis_full(arr, indices, axis):
    """arr and indices broadcast against each other except along axis; indices wrapped and
    turned into gather_nd coordinates."""
    from ..lax.indexing import _along_axis_indices
    ind = asarray(indices)
    if ind.dtype.kind not in "iu":
        raise _float_index_error(f"an array of dtype {ind.dtype}")
    if ind.ndim != arr.ndim:
        raise ValueError(f"take_along_axis: indices ({ind.ndim}-d) and arr ({arr.ndim}-d) must "
                         f"have the same number of dimensions{user_line()}")
    n = arr.shape[axis]
    shape_a = arr.shape[:axis] + (1,) + arr.shape[axis + 1:]
    shape_i = ind.shape[:axis] + (1,) + ind.shape[axis + 1:]
    b = list(broadcast_shapes(shape_a, shape_i, what="array and indices"))
    b[axis] = n
    arr = broadcast_to(arr, b)
    b[axis] = ind.shape[axis]
    ind = _normalize_array(broadcast_to(ind, b) if type(ind) is Tracer else
                           np.broadcast_to(ind, b), n, axis)
    ind = asarray(ind)
    if type(ind) is Tracer:
        return arr, _along_axis_indices(ind, axis)
    xp = device_namespace([ind])
    grids = list(xp.meshgrid(*[xp.arange(s, dtype=INDEX) for s in ind.shape], indexing="ij"))
    grids[axis] = ind
    return arr, xp.stack(grids, -1) if grids else np.zeros((0,), INDEX)


def take_along_axis(arr, indices, axis, mode=None, fill_value=None):
    """NumPy's take_along_axis: indices and arr broadcast except along `axis`."""
    from ..lax.indexing import gather
    arr = asarray(arr)
    if axis is None:
        arr, axis = _ravel(arr), 0
        indices = _ravel(indices)
    axis = _normalize_axis(axis, arr.ndim)
    if (mode is None and type(indices) is np.ndarray and indices.dtype.kind in "iu"
            and indices.shape[:axis] + indices.shape[axis + 1:]
            == arr.shape[:axis] + arr.shape[axis + 1:]):
        return gather(arr, _concrete_along_axis_coords(indices, arr.shape[axis], axis))
    indices = _index_mode(indices, arr.shape[axis], mode)
    arr, coords = _along_axis_full(arr, indices, axis)
    return gather(arr, coords)


def _concrete_along_axis_coords(ind, n, axis):
    """gather coordinates for NumPy indices that need no broadcasting (the common eager case:
    picking each row's label), built with a few NumPy calls instead of traced operations."""
    if ind.size and (ind.min() < -n or ind.max() >= n):
        bad = ind[(ind < -n) | (ind >= n)].flat[0]
        raise IndexError(f"index {bad} is out of bounds for axis {axis} with size {n}"
                         f"{user_line()}")
    coords = np.empty(ind.shape + (ind.ndim,), INDEX)
    for i, s in enumerate(ind.shape):  # (np.ogrid costs more than the rest together)
        if i != axis:
            coords[..., i] = np.arange(s, dtype=INDEX).reshape((-1,) + (1,) * (ind.ndim - 1 - i))
    coords[..., axis] = np.where(ind < 0, ind + n, ind)
    return coords


def put_along_axis(arr, indices, values, axis, inplace=False, mode=None):
    """A copy of arr with `values` written at `indices` along `axis` (NumPy's put_along_axis,
    returning the result instead of writing in place)."""
    from ..lax.indexing import scatter
    if inplace:
        raise ValueError("put_along_axis: arrays are immutable; call it with inplace=False and "
                         "use the returned array.")
    arr = asarray(arr)
    shape = arr.shape
    if axis is None:
        arr, axis = _ravel(arr), 0
        indices = _ravel(indices)
    axis = _normalize_axis(axis, arr.ndim)
    indices = _index_mode(indices, arr.shape[axis], mode)
    ind = asarray(indices)
    barr, coords = _along_axis_full(arr, ind, axis)
    if barr.shape != arr.shape:
        raise ValueError(f"put_along_axis: indices of shape {ind.shape} must not broadcast arr "
                         f"of shape {arr.shape}{user_line()}")
    v = broadcast_to(asarray(values, arr.dtype), coords.shape[:-1])
    return lax.reshape(scatter(arr, coords, v, "set"), shape)


def put(a, ind, v, mode=None, inplace=False):
    """A copy of a with the flat positions `ind` set to v (values repeat as in NumPy)."""
    from ..lax.indexing import scatter
    if inplace:
        raise ValueError("put: arrays are immutable; call it with inplace=False and use the "
                         "returned array.")
    a = asarray(a)
    flat = _ravel(a)
    ind = _index_mode(asarray(ind), flat.shape[0], mode or "raise")
    ind = _ravel(ind)
    ind = _normalize_array(ind, flat.shape[0], 0)
    v = _ravel(asarray(v, a.dtype))
    m = ind.shape[0]
    if v.shape[0] != m and v.shape[0] > 0:
        reps = -(-m // v.shape[0])
        v = lax.slice(lax.concatenate([v] * reps, 0) if reps > 1 else v, (0,), (m,))
    idx = lax.expand_dims(asarray(ind), (1,)) if type(ind) is Tracer else ind[:, None]
    return lax.reshape(scatter(flat, idx, v, "set"), a.shape)


# ---------------------------------------------------------------------------------------------
# nonzero and friends: data-dependent shapes need concrete values (or size=)

def nonzero(a, *, size=None, fill_value=None):
    """Indices of the nonzero elements, one array per axis. Needs a concrete `a`, unless `size`
    is given: then the first `size` indices are returned, padded with fill_value (default 0)."""
    a = asarray(a)
    if a.ndim == 0:
        raise ValueError("Calling nonzero on 0d arrays is not allowed. Use "
                         "fnp.atleast_1d(a).nonzero() instead.")
    if size is None:
        val = _concrete(a, "nonzero")
        return tuple(np.asarray(i, INDEX) for i in np.nonzero(val))
    return _nonzero_sized(a, int(size), fill_value)


def _nonzero_sized(a, size, fill_value):
    """The first `size` nonzero coordinates as a fixed-shape traced computation: each nonzero
    element scatters its flat position to the slot given by its rank (a cumsum)."""
    from ..lax.indexing import cumsum, scatter
    flat = _ravel(a)
    n = flat.shape[0]
    mask = lax.ne(flat, np.zeros((), flat.dtype))
    rank = lax.sub(cumsum(lax.convert_element_type(mask, INDEX), 0), np.ones((), INDEX))
    slot = lax.select_n(mask, lax.full((n,), size, INDEX), rank)  # zeros: dropped (out of range)
    pos = scatter(lax.full((size,), 0, INDEX), lax.expand_dims(slot, (1,)),
                  lax.iota(INDEX, n), "set")
    count = lax.reduce_sum(lax.convert_element_type(mask, INDEX), (0,))
    valid = lax.lt(lax.iota(INDEX, size), lax.broadcast_in_dim(count, (size,), ()))
    coords = unravel_index(pos, a.shape) if a.ndim > 1 else (pos,)
    fills = fill_value if isinstance(fill_value, tuple) else (fill_value or 0,) * a.ndim
    return tuple(lax.select_n(valid, lax.full((size,), f, INDEX), c)
                 for c, f in zip(coords, fills))


def argwhere(a, *, size=None, fill_value=None):
    """Indices of the nonzero elements as an (N, ndim) array."""
    a = asarray(a)
    if a.ndim == 0:
        val = _concrete(a, "argwhere") if size is None else None
        n = (1 if bool(val) else 0) if size is None else size
        return np.zeros((n, 0), INDEX)
    parts = nonzero(a, size=size, fill_value=fill_value)
    if all(type(p) is not Tracer for p in parts):
        return np.stack([np.asarray(p) for p in parts], -1)
    return lax.concatenate([lax.expand_dims(asarray(p), (1,)) for p in parts], 1)


def flatnonzero(a, *, size=None, fill_value=None):
    """Flat indices of the nonzero elements of a."""
    return nonzero(_ravel(a), size=size, fill_value=fill_value)[0]


def compress(condition, a, axis=None, *, size=None, fill_value=0):
    """The slices of a along axis where condition (1-D, concrete) is true."""
    cond = _concrete(asarray(condition), "compress")
    if cond.ndim != 1:
        raise ValueError("compress: condition must be a 1-d array")
    a = asarray(a)
    if axis is None:
        a, axis = _ravel(a), 0
    axis = _normalize_axis(axis, a.ndim)
    if cond.shape[0] > a.shape[axis]:
        if np.any(cond[a.shape[axis]:]):
            raise IndexError(f"compress: condition of length {cond.shape[0]} selects beyond "
                             f"axis {axis} of size {a.shape[axis]}{user_line()}")
        cond = cond[:a.shape[axis]]
    return take(a, np.nonzero(cond)[0].astype(INDEX), axis=axis)


def extract(condition, arr, *, size=None, fill_value=0):
    """The elements of arr where condition (concrete) is true, flattened."""
    cond = _concrete(asarray(condition), "extract")
    return take(_ravel(arr), np.flatnonzero(cond).astype(INDEX))


# ---------------------------------------------------------------------------------------------
# select, choose

def select(condlist, choicelist, default=0):
    """Elementwise: the choice of the first true condition, else default."""
    if len(condlist) != len(choicelist):
        raise ValueError("select: list of cases must be same length as list of conditions")
    if not condlist:
        raise ValueError("select with an empty condition list is not possible")
    dtype = result_type(*choicelist, default)
    conds = [asarray(c) for c in condlist]
    for c in conds:
        if c.dtype != np.bool_:
            raise TypeError(f"select: condlist entries must be boolean arrays, got {c.dtype}"
                            f"{user_line()}")
    vals = promote_args(*choicelist, default, dtype=dtype)
    shape = broadcast_shapes(*(tuple(v.shape) for v in conds + vals))
    conds = [broadcast_to(c, shape) for c in conds]
    vals = [broadcast_to(v, shape) for v in vals]
    out = vals[-1]
    for c, v in zip(reversed(conds), reversed(vals[:-1])):
        out = lax.select_n(c, out, v)
    return out


def choose(a, choices, out=None, mode="raise"):
    """choices[a] elementwise, all broadcast together (mode: raise / clip / wrap)."""
    if out is not None:
        raise TypeError("choose: out= is not supported (arrays are immutable)")
    n = len(choices)
    a = asarray(a)
    if a.dtype.kind not in "iu":
        raise TypeError(f"choose: the index array must be integer, got {a.dtype}")
    if mode == "raise":
        if _is_concrete(a):
            v = _concrete(a, "choose's index array")
            if v.size and (v.min() < 0 or v.max() >= n):
                raise ValueError("invalid entry in choice array")
        else:
            mode = "clip"
    a = _index_mode(a, n, mode if mode != "raise" else None)
    vals = promote_args(*choices)
    shape = broadcast_shapes(tuple(np.shape(a)) if type(a) is not Tracer else a.shape,
                             *(tuple(v.shape) for v in vals))
    vals = [broadcast_to(v, shape) for v in vals]
    a = broadcast_to(asarray(a), shape)
    if n == 1:
        return vals[0]
    if n == 2:
        return lax.select_n(lax.ne(a, np.zeros((), a.dtype)), vals[0], vals[1])
    return lax.select_n(lax.convert_element_type(a, np.int32), *vals)


# ---------------------------------------------------------------------------------------------
# searchsorted, digitize

def _sort_lt(x, y, inclusive):
    """x < y (or x <= y) in NumPy's sort order, where NaN is larger than every number."""
    base = lax.le(x, y) if inclusive else lax.lt(x, y)
    if x.dtype.kind not in "fc":
        return base
    y_nan = lax.ne(y, y)
    x_nan = lax.ne(x, x)
    if inclusive:
        return lax.bitwise_or(base, y_nan)
    return lax.bitwise_or(base, lax.bitwise_and(y_nan, lax.bitwise_not(x_nan)))


def searchsorted(a, v, side="left", sorter=None, *, method=None):
    """Insertion points of v in the sorted 1-D a (NumPy's searchsorted): a binary search of
    ceil(log2(n + 1)) unrolled gather-and-compare steps, so it traces to a fixed program."""
    from ..lax.indexing import gather
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    a = asarray(a)
    if a.ndim != 1:
        raise ValueError("searchsorted: a must be 1-dimensional")
    if sorter is not None:
        a = take(a, sorter)
    a, v = _promote_pair(a, v)
    n = a.shape[0]
    lo = lax.full(v.shape, 0, INDEX)
    hi = lax.full(v.shape, n, INDEX)
    if n == 0:
        return lo
    steps = math.ceil(math.log2(n + 1))
    for _ in range(steps):
        mid = lax.div(lax.add(lo, hi), np.array(2, INDEX))
        safe = lax.min(mid, np.array(n - 1, INDEX))
        am = gather(a, lax.expand_dims(safe, (safe.ndim,)))
        go_right = lax.bitwise_and(_sort_lt(am, v, side == "right"),
                                   lax.lt(mid, np.array(n, INDEX)))
        lo = lax.select_n(go_right, lo, lax.add(mid, np.ones((), INDEX)))
        hi = lax.select_n(go_right, mid, hi)
    return lo


def _promote_pair(a, v):
    dtype = result_type(a, v)
    a = asarray(a, dtype)
    v = asarray(v, dtype)
    return a, v


def digitize(x, bins, right=False):
    """Indices of the bins each x falls in (NumPy's digitize; monotonic bins)."""
    bins = asarray(bins)
    if bins.ndim != 1:
        raise ValueError("digitize: bins must be 1-dimensional")
    side = "left" if right else "right"
    if bins.shape[0] >= 2 and _is_concrete(bins):
        b = _concrete(bins, "digitize's bins")
        inc, dec = np.all(np.diff(b) >= 0), np.all(np.diff(b) <= 0)
        if not (inc or dec):
            raise ValueError("bins must be monotonically increasing or decreasing")
        if dec and not inc:
            n = bins.shape[0]
            return lax.sub(np.array(n, INDEX),
                           searchsorted(lax.rev(bins, (0,)), x, side=side))
    return searchsorted(bins, x, side=side)


# ---------------------------------------------------------------------------------------------
# Diagonals and triangles

def _diag_positions(n1, n2, offset):
    start, stop = max(0, -offset), min(n1, n2 - offset)
    rows = np.arange(start, max(start, stop), dtype=INDEX)
    return rows, rows + offset


def diagonal(a, offset=0, axis1=0, axis2=1):
    """The diagonal along axis1/axis2, as the last axis of the result (as NumPy)."""
    a = asarray(a)
    if a.ndim < 2:
        raise ValueError("diagonal requires an array of at least two dimensions")
    axis1, axis2 = _normalize_axis(axis1, a.ndim), _normalize_axis(axis2, a.ndim)
    if axis1 == axis2:
        raise ValueError("axis1 and axis2 cannot be the same")
    rest = [d for d in range(a.ndim) if d not in (axis1, axis2)]
    at = lax.transpose(a, rest + [axis1, axis2])
    rows, cols = _diag_positions(a.shape[axis1], a.shape[axis2], int(offset))
    return _getitem(at, (Ellipsis, rows, cols))


def trace(a, offset=0, axis1=0, axis2=1, dtype=None, out=None):
    """Sum along a diagonal (NumPy's dtype rules, through fnp.sum)."""
    import funcgrad.numpy as fnp
    if out is not None:
        raise TypeError("trace: out= is not supported (arrays are immutable)")
    return fnp.sum(diagonal(a, offset, axis1, axis2), axis=-1, dtype=dtype)


def diag(v, k=0):
    """The k-th diagonal of a 2-D array, or a 2-D array with the 1-D v on its k-th diagonal."""
    from ..lax.indexing import scatter
    v = asarray(v)
    if v.ndim == 2:
        return diagonal(v, k)
    if v.ndim != 1:
        raise ValueError("diag: input must be 1- or 2-d")
    n = v.shape[0] + builtins.abs(int(k))
    rows = np.arange(v.shape[0], dtype=INDEX) + max(-int(k), 0)
    coords = np.stack([rows, rows + int(k)], -1)
    return scatter(lax.full((n, n), 0, v.dtype), coords, v, "add")


def diagflat(v, k=0):
    return diag(_ravel(v), k)


def _tri_mask(n, m, k, lower):
    mask = np.tri(n, m, k, dtype=bool)
    return mask if lower else ~np.tri(n, m, k - 1, dtype=bool)


def _masked(m, k, lower):
    m = asarray(m)
    if m.ndim < 1:
        raise ValueError("tril/triu: input must be at least 1-d")
    n_rows, n_cols = (m.shape[-2], m.shape[-1]) if m.ndim >= 2 else (m.shape[0], m.shape[0])
    mask = _tri_mask(n_rows, n_cols, int(k), lower)
    shape = m.shape if m.ndim >= 2 else mask.shape
    m = broadcast_to(m, shape)
    maskb = lax.broadcast_in_dim(mask, shape, (len(shape) - 2, len(shape) - 1))
    return lax.select_n(maskb, lax.full(shape, 0, m.dtype), m)


def tril(m, k=0):
    """m with the elements above the k-th diagonal zeroed (last two axes)."""
    return _masked(m, k, lower=True)


def triu(m, k=0):
    """m with the elements below the k-th diagonal zeroed (last two axes)."""
    return _masked(m, k, lower=False)


def tril_indices(n, k=0, m=None):
    return tuple(i.astype(INDEX) for i in np.tril_indices(n, k, m))


def triu_indices(n, k=0, m=None):
    return tuple(i.astype(INDEX) for i in np.triu_indices(n, k, m))


def tril_indices_from(arr, k=0):
    shape = np.shape(arr) if type(arr) is not Tracer else arr.shape
    if len(shape) != 2:
        raise ValueError("input array must be 2-d")
    return tril_indices(shape[-2], k, shape[-1])


def triu_indices_from(arr, k=0):
    shape = np.shape(arr) if type(arr) is not Tracer else arr.shape
    if len(shape) != 2:
        raise ValueError("input array must be 2-d")
    return triu_indices(shape[-2], k, shape[-1])


def diag_indices(n, ndim=2):
    return (np.arange(n, dtype=INDEX),) * ndim


def diag_indices_from(arr):
    shape = np.shape(arr) if type(arr) is not Tracer else arr.shape
    if len(shape) < 2 or len(set(shape)) != 1:
        raise ValueError("All dimensions of input must be of equal length")
    return diag_indices(shape[0], len(shape))


def fill_diagonal(a, val, wrap=False, *, inplace=False):
    """A copy of a with its main diagonal set to val (NumPy's fill_diagonal, not in place)."""
    from ..lax.indexing import scatter
    if inplace:
        raise ValueError("fill_diagonal: arrays are immutable; call it with inplace=False and "
                         "use the returned array.")
    a = asarray(a)
    if a.ndim < 2:
        raise ValueError("array must be at least 2-d")
    if a.ndim > 2 and len(set(a.shape)) != 1:
        raise ValueError("All dimensions of input must be of equal length")
    if a.ndim == 2:
        n_rows, n_cols = a.shape
        step = n_cols + 1
        end = a.size if wrap else min(a.size, n_cols * n_cols)
        flat_pos = np.arange(0, end, step, dtype=INDEX)
    else:
        flat_pos = np.ravel_multi_index(diag_indices(a.shape[0], a.ndim), a.shape).astype(INDEX)
    v = _ravel(asarray(val, a.dtype))
    m = flat_pos.shape[0]
    if v.shape[0] != m:
        reps = -(-m // max(v.shape[0], 1))
        v = lax.slice(lax.concatenate([v] * reps, 0) if reps > 1 else v, (0,), (m,))
    return lax.reshape(scatter(_ravel(a), flat_pos[:, None], v, "set"), a.shape)


# ---------------------------------------------------------------------------------------------
# ix_, unravel_index, ravel_multi_index

def ix_(*args):
    """Open-mesh index arrays: the k-th of N 1-D sequences reshaped to put its values on axis k."""
    out = []
    n = len(args)
    for k, a in enumerate(args):
        a = asarray(a)
        if a.ndim != 1:
            raise ValueError("Cross index must be 1 dimensional")
        if a.dtype == np.bool_:
            a = np.nonzero(_concrete(a, "ix_ with a boolean array"))[0].astype(INDEX)
        shape = (1,) * k + (a.shape[0],) + (1,) * (n - k - 1)
        out.append(np.reshape(a, shape) if type(a) is not Tracer else lax.reshape(a, shape))
    return tuple(out)


def unravel_index(indices, shape):
    """The coordinate arrays of flat `indices` in an array of `shape` (C order). Traced indices
    are wrapped if negative and clamped into range (NumPy raises on concrete bad ones)."""
    shape = tuple(int(s) for s in (shape if np.ndim(shape) else (shape,)))
    ind = asarray(indices)
    if ind.dtype.kind not in "iu":
        raise TypeError(f"only int indices permitted, got {ind.dtype}")
    if type(ind) is not Tracer:
        xp = device_namespace([ind])
        return tuple(xp.asarray(i).astype(INDEX, copy=False)
                     for i in xp.unravel_index(ind, shape))
    total = int(np.prod(shape, dtype=np.int64))
    ind = lax.convert_element_type(ind, INDEX)
    ind = lax.select_n(lax.lt(ind, np.zeros((), INDEX)), ind, lax.add(ind, np.array(total, INDEX)))
    ind = lax.min(lax.max(ind, np.zeros((), INDEX)), np.array(max(total - 1, 0), INDEX))
    out = []
    for s in reversed(shape):
        out.append(lax.rem(ind, np.array(s, INDEX)))
        ind = lax.div(ind, np.array(s, INDEX))
    return tuple(reversed(out))


def ravel_multi_index(multi_index, dims, mode="raise", order="C"):
    """Flat indices of coordinate arrays in an array of shape dims (C or F order)."""
    dims = tuple(int(d) for d in dims)
    if len(multi_index) != len(dims):
        raise ValueError(f"parameter multi_index must be a sequence of length {len(dims)}")
    parts = [asarray(m) for m in multi_index]
    if all(type(p) is not Tracer for p in parts):
        xp = device_namespace(parts)
        return xp.asarray(xp.ravel_multi_index(tuple(parts), dims, mode=mode, order=order),
                          INDEX)
    if order not in ("C", "F"):
        raise ValueError("order must be 'C' or 'F'")
    strides = [int(np.prod(dims[i + 1:], dtype=np.int64)) for i in range(len(dims))] \
        if order == "C" else [int(np.prod(dims[:i], dtype=np.int64)) for i in range(len(dims))]
    modes = (mode,) * len(dims) if isinstance(mode, str) else tuple(mode)
    shape = broadcast_shapes(*(tuple(p.shape) for p in parts))
    total = None
    for p, n, s, md in zip(parts, dims, strides, modes):
        if p.dtype.kind not in "iu":
            raise TypeError(f"only int indices permitted, got {p.dtype}")
        p = lax.convert_element_type(broadcast_to(p, shape), INDEX)
        p = asarray(_index_mode(p, n, "clip" if md == "raise" else md))
        term = lax.mul(p, np.array(s, INDEX))
        total = term if total is None else lax.add(total, term)
    return total
