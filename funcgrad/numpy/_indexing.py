"""NumPy indexing on top of lax: `x[idx]` and `x.at[idx].set/add/...`.

An index is parsed once into a per-axis plan. Basic indexing (ints, slices, Ellipsis, None)
becomes static lax.slice / rev / squeeze / expand_dims, a traced integer a dynamic_slice; advanced
(integer array) indexing one gather whose index arrays are broadcast together, with NumPy's rule
for where the advanced axes go. Boolean masks need concrete values: they become integer arrays
through np.nonzero. Updates (`.at[]`) write with dynamic_update_slice for contiguous basic
indices and otherwise scatter at the coordinates the same indexing reads.
"""

from __future__ import annotations

import builtins
import operator

import numpy as np

from .. import lax
from ..core import ConcretizationError, Tracer, device_namespace, to_host, user_line
from ..core.avals import dtype_kind
from ._core import asarray, broadcast_shapes, broadcast_to

INDEX = np.dtype(np.int64)  # NumPy's intp on 64-bit platforms
_slice = builtins.slice


# ---------------------------------------------------------------------------------------------
# Index parsing

def is_concrete(x):
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


def concrete_value(x, what, fix=_CONCRETE_FIX):
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


def float_index_error(what):
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
                        and is_concrete(part):
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
        raise float_index_error(f"{type(item).__name__} {item!r}")
    if isinstance(item, str):
        raise float_index_error(f"a string {item!r}")
    if type(item) is Tracer:
        kind = item.dtype.kind
        if kind == "b":
            return "bool", concrete_value(item, "Boolean mask indexing")
        if kind not in "iu":
            raise float_index_error(f"an array of dtype {item.dtype}")
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
        raise float_index_error(f"an array of dtype {arr.dtype}")
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
                axes.append(("array", normalize_index_array(val, n, dim)))
            dim += 1
        self.shape = tuple(self.shape)
        self.advanced = any(a[0] == "array" for a in axes)
        if self.advanced:  # integers take part in the broadcast of the advanced indices
            axes = [("array", np.asarray(a[1], INDEX)) if a[0] == "int" else
                    ("array", normalize_index_array(*a[1:])) if a[0] == "dyn" else a for a in axes]
        self.axes = axes


def _parse_with_scalar_bools(shape, idx):
    """_parse, with x[True]/x[False] turned into a new axis indexed by [0] or []."""
    if not isinstance(idx, tuple):
        idx = (idx,)
    pieces, out = [], []
    for item in idx:
        if isinstance(item, (bool, np.bool_)) or (
                isinstance(item, (np.ndarray, Tracer)) and item.dtype == bool and item.ndim == 0):
            pieces.append(("scalar_bool", bool(concrete_value(item, "Boolean mask indexing"))))
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


def normalize_index_array(a, n, dim):
    """Integer index array with negatives wrapped (x + n where x < 0); concrete out-of-bounds
    entries raise IndexError as in NumPy, traced ones are clamped by gather."""
    if type(a) is Tracer:
        if not is_concrete(a):
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

def getitem(x, idx):
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
    starts = [_dyn_start(axes[d][1], x.shape[d]) if d in dyn else np.zeros((), INDEX)
              for d in range(x.ndim)]
    starts = [lax.convert_element_type(s, INDEX) for s in starts]
    sizes = [1 if d in dyn else x.shape[d] for d in range(x.ndim)]
    return lax.dynamic_slice(x, *starts, slice_sizes=sizes, allow_negative_indices=False)


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
    adv = [d for d, a in enumerate(axes) if a[0] == "array"]
    rest = [d for d in range(x.ndim) if d not in adv]
    xt = lax.transpose(x, adv + rest)
    idx = _broadcast_indices([axes[d][1] for d in adv])
    out = lax.gather(xt, idx)
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

class IndexUpdateHelper:
    """`x.at[idx]`: functional updates returning new arrays (NumPy's in-place forms).

    With `wrap` (the eager `.at` of fnp.asarray's arrays, see _updatable.py) results are wrapped
    the same way, so that updates chain: x.at[0].set(1).at[1].add(2)."""

    __slots__ = ("array", "wrap")

    def __init__(self, array, wrap=None):
        self.array = array
        self.wrap = wrap

    def __getitem__(self, idx):
        return _IndexUpdateRef(self.array, idx, self.wrap)

    def __repr__(self):
        return f"IndexUpdateHelper({self.array!r})"


class _IndexUpdateRef:
    """`x.at[idx]`: set / add / subtract / multiply / divide / power / min / max / apply / get.

    Duplicate indices accumulate in add, multiply, divide, power, min and max (as np.add.at),
    and apply runs func once per occurrence when the index is concrete (a traced index is
    taken as unique there); in set the last wins on NumPy (unspecified on other backends, as
    in JAX). multiply's derivative in the values is exact with duplicates too (JAX refuses
    it). `mode` is JAX's out-of-bound mode: None (funcgrad's default: indices known when
    tracing must be in bounds, as in NumPy; traced ones are clamped by get and dropped by
    updates), "promise_in_bounds" (the same, unchecked),
    "clip" (clamped into range), "drop" / "fill" (updates skip them; get returns fill_value,
    NaN for floats by default). indices_are_sorted and unique_indices are accepted hints."""

    __slots__ = ("array", "index", "wrap")

    def __init__(self, array, index, wrap=None):
        self.array = array
        self.index = index
        self.wrap = wrap

    def _done(self, out):
        return out if self.wrap is None or type(out) is Tracer else self.wrap(out)

    def get(self, *, indices_are_sorted=False, unique_indices=False, mode=None, fill_value=None):
        if mode is None and fill_value is None:
            return self._done(getitem(self.array, self.index))
        return self._done(_get_with_mode(self.array, self.index, mode or "fill", fill_value))

    def _apply_update(self, values, kind, mode):
        if mode is None:
            return self._done(_update(self.array, self.index, values, kind))
        return self._done(_update_with_mode(self.array, self.index, values, kind, mode))

    def set(self, values, *, indices_are_sorted=False, unique_indices=False, mode=None):
        return self._apply_update(values, "set", mode)

    def add(self, values, *, indices_are_sorted=False, unique_indices=False, mode=None):
        return self._apply_update(values, "add", mode)

    def subtract(self, values, *, indices_are_sorted=False, unique_indices=False, mode=None):
        return self._apply_update(_negate(values), "add", mode)

    def multiply(self, values, *, indices_are_sorted=False, unique_indices=False, mode=None):
        return self._apply_update(values, "mul", mode)

    mul = multiply

    def divide(self, values, *, indices_are_sorted=False, unique_indices=False, mode=None):
        x = asarray(self.array)
        if dtype_kind(x.dtype) not in "fc":
            raise TypeError(f"x.at[].divide needs a floating array, got {x.dtype}{user_line()}")
        recip = lax.div(np.ones((), x.dtype), asarray(values, x.dtype))
        return self._apply_update(recip, "mul", mode)

    def power(self, values, *, indices_are_sorted=False, unique_indices=False, mode=None):
        """x ** e, e the product of the values at each place (1 elsewhere), as JAX: a place
        indexed twice is raised twice. Places not indexed keep x (and get no NaN derivative
        from log(x) of a negative x, which JAX's x ** 1 gives there)."""
        import funcgrad.numpy as fnp
        x = asarray(self.array)
        ones = lax.full(x.shape, 1, x.dtype)
        exps = _IndexUpdateRef(ones, self.index)._apply_update(values, "mul", mode)
        hit = _IndexUpdateRef(lax.full(x.shape, False, np.dtype(bool)), self.index) \
            ._apply_update(True, "set", mode)
        raised = fnp.power(lax.select_n(hit, ones, x), exps)
        if raised.dtype != x.dtype:
            raised = lax.convert_element_type(raised, x.dtype)
        return self._done(lax.select_n(hit, x, raised))

    def min(self, values, *, indices_are_sorted=False, unique_indices=False, mode=None):
        return self._apply_update(values, "min", mode)

    def max(self, values, *, indices_are_sorted=False, unique_indices=False, mode=None):
        return self._apply_update(values, "max", mode)

    def apply(self, func, *, indices_are_sorted=False, unique_indices=False, mode=None):
        """x with the elementwise func applied at the indexed places, once per occurrence of a
        place in the index (as NumPy's ufunc.at and JAX's scatter_apply). The occurrences are
        counted when the index is concrete (a NumPy array, a constant under jit); a traced index
        is taken as unique, func applied once per place (docs/differences.md)."""
        hits = None if unique_indices else _hit_counts(self.array, self.index, mode)
        if hits is not None and hits.size and hits.max() > 1:
            out = asarray(self.array)
            for r in range(int(hits.max())):
                new = asarray(func(out))
                if new.dtype != out.dtype:
                    new = lax.convert_element_type(new, out.dtype)
                out = lax.select_n(hits > r, out, new)
            return self._done(out)
        if mode is None:
            return self.set(func(getitem(self.array, self.index)))
        read = "clip" if mode == "clip" else "fill"
        return self.set(func(_get_with_mode(self.array, self.index, read, None)), mode=mode)


def _hit_counts(x, index, mode):
    """How many times the index names each place of x (a NumPy int array), or None when a part
    of the index is traced (not known before the program runs)."""
    parts = index if isinstance(index, tuple) else (index,)
    host = []
    for part in parts:
        if type(part) is Tracer:
            if not is_concrete(part):
                return None
            part = concrete_value(part, "an index")
        host.append(part)
    host = tuple(host) if isinstance(index, tuple) else host[0]
    zeros = np.zeros(np.shape(x), np.int32)
    if mode is None:
        return to_host(_update(zeros, host, np.int32(1), "add"))
    return to_host(_update_with_mode(zeros, host, np.int32(1), "add", mode))


# ---------------------------------------------------------------------------------------------
# Explicit out-of-bound modes (JAX's `mode=` of x.at[]): the index is rewritten axis by axis.
# "clip" clamps each integer index into range (after wrapping negatives). "drop"/"fill" send
# out-of-range ones to an extra slot padded onto the end of their axis: a read there gives the
# fill value, a write lands in the pad, which is cut off again. The ordinary indexing then runs.

_MODES = ("promise_in_bounds", "clip", "drop", "fill")


def _check_mode(mode):
    if mode not in _MODES:
        raise ValueError(f"x.at[]: mode must be one of {_MODES} (or None), got {mode!r}"
                         f"{user_line()}")


def _default_fill(dtype):
    """JAX's fill value for out-of-bound reads: NaN, the lowest signed or highest unsigned
    integer, True."""
    if dtype.kind in "fc":
        return np.nan
    if dtype.kind == "i":
        return np.iinfo(dtype).min
    if dtype.kind == "u":
        return np.iinfo(dtype).max
    return True


def _remap(v, n, clip):
    """An integer index (int, array or tracer) for an axis of size n, negatives wrapped, then
    clamped into [0, n - 1] (clip) or with out-of-range entries moved to n (the pad slot)."""
    if type(v) is not Tracer and not hasattr(v, "__cuda_array_interface__"):
        w = np.where(np.asarray(v) < 0, np.asarray(v) + n, v)
        w = np.clip(w, 0, n - 1) if clip else np.where((w < 0) | (w >= n), n, w)
        return int(w) if isinstance(v, (int, np.integer)) else w.astype(INDEX)
    zero = np.zeros((), v.dtype)  # traced (or device) indices: the same with primitives
    w = lax.select_n(lax.lt(v, zero), v, lax.add(v, np.array(n, v.dtype)))
    hi = np.array(n - 1, v.dtype)
    if clip:
        return lax.max(lax.min(w, hi), zero)
    outside = lax.bitwise_or(lax.lt(w, zero), lax.gt(w, hi))
    return lax.select_n(outside, w, np.array(n, v.dtype))


def _rewrite(x, idx, clip):
    """(index with integer entries remapped, axes that need a pad slot)."""
    if any(isinstance(i, (bool, np.bool_)) for i in (idx if isinstance(idx, tuple) else (idx,))):
        raise NotImplementedError(f"x.at[] with mode= does not take scalar booleans in the "
                                  f"index{user_line()}")
    entries = _parse(x.shape, idx)
    out, padded, dim = [], [], 0
    for kind, val in entries:
        if kind == "none":
            out.append(None)
            continue
        if kind == "slice":
            out.append(val)
        else:  # int, dyn or array (boolean masks arrive as in-range integer arrays)
            out.append(_remap(val, x.shape[dim], clip))
            if not clip:
                padded.append(dim)
        dim += 1
    return tuple(out), padded


def _pad_axes(x, axes, value):
    if not axes:
        return x
    config = tuple((0, 1 if d in axes else 0, 0) for d in range(x.ndim))
    return lax.pad(x, np.asarray(value, x.dtype), config)


def _get_with_mode(x, idx, mode, fill_value):
    _check_mode(mode)
    x = asarray(x)
    idx, padded = _rewrite(x, idx, clip=mode in ("clip", "promise_in_bounds"))
    fill = _default_fill(x.dtype) if fill_value is None else fill_value
    return getitem(_pad_axes(x, padded, fill), idx)


def _update_with_mode(x, idx, values, kind, mode):
    _check_mode(mode)
    x = asarray(x)
    idx, padded = _rewrite(x, idx, clip=mode == "clip")
    out = _update(_pad_axes(x, padded, 0), idx, values, kind)
    return lax.slice(out, (0,) * x.ndim, tuple(x.shape)) if padded else out


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
    coords = _coordinates(x, idx)
    return lax.scatter(x, coords, v, mode)


def _result_shape(plan):
    """The shape of x[idx], from its plan (as getitem lays the axes out)."""
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
        v = _COMBINE[mode](lax.dynamic_slice(x, *starts, slice_sizes=sizes,
                                         allow_negative_indices=False), v)
    return lax.dynamic_update_slice(x, v, *starts, allow_negative_indices=False)


def _coordinates(x, idx):
    """Integer indices (shape x[idx].shape + (ndim,)) of the elements x[idx] reads."""
    grids = []
    for d, n in enumerate(x.shape):
        shape = [1] * x.ndim
        shape[d] = n
        grid = np.broadcast_to(np.arange(n, dtype=INDEX).reshape(shape), x.shape)
        grids.append(getitem(grid, idx))
    if all(type(g) is not Tracer for g in grids):
        xp = device_namespace(grids)
        return xp.stack([xp.asarray(g) for g in grids], -1)
    nd = grids[0].ndim
    return lax.concatenate([lax.expand_dims(asarray(g), (nd,)) for g in grids], nd)
