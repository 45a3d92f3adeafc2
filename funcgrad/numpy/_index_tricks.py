"""Building index arrays: ix_ (open meshes), unravel_index and ravel_multi_index (flat <->
multi-dimensional indices).
"""

from __future__ import annotations

import numpy as np

from .. import lax
from ..core import Tracer, device_namespace
from ._core import asarray, broadcast_shapes, broadcast_to
from ._indexing import INDEX, concrete_value
from ._take import index_mode

__all__ = ["ix_", "unravel_index", "ravel_multi_index"]


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
            a = np.nonzero(concrete_value(a, "ix_ with a boolean array"))[0].astype(INDEX)
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
        p = asarray(index_mode(p, n, "clip" if md == "raise" else md))
        term = lax.mul(p, np.array(s, INDEX))
        total = term if total is None else lax.add(total, term)
    return total


# ---------------------------------------------------------------------------------------------
# r_ and c_: concatenation by index notation

class _AxisConcatenator:
    """NumPy's r_ / c_: `r_[items]` concatenates arrays, scalars and slices along an axis.

    A slice start:stop:step becomes arange(start, stop, step), or with an imaginary step (5j)
    linspace(start, stop, 5) including stop; scalars and arrays get at least `ndmin` axes (new
    ones placed by `trans1d`, as NumPy); a leading string 'axis[,ndmin[,trans1d]]' sets these.
    Slices must be static; arrays may be traced. NumPy's matrix directives ('r', 'c') are not
    supported (there is no matrix type).
    """

    def __init__(self, axis, ndmin, trans1d):
        self.axis, self.ndmin, self.trans1d = axis, ndmin, trans1d

    def __getitem__(self, key):
        from ._core import result_type
        from ._creation import arange, linspace
        from ._shape import concatenate
        items = key if isinstance(key, tuple) else (key,)
        axis, ndmin, trans1d = self.axis, self.ndmin, self.trans1d
        objs, dtype_sources = [], []
        for k, item in enumerate(items):
            if isinstance(item, str):
                if k != 0:
                    raise ValueError("r_ / c_: a string directive must come first")
                axis, ndmin, trans1d = self._directive(item, ndmin, trans1d)
                continue
            if isinstance(item, slice):
                start = 0 if item.start is None else item.start
                step = 1 if item.step is None else item.step
                if isinstance(step, complex):
                    new = linspace(start, item.stop, num=int(abs(step)))
                else:
                    new = arange(start, item.stop, step)
                new = self._expand(new, ndmin, trans1d, 1)
                dtype_sources.append(new)
            else:
                new = asarray(item)
                dtype_sources.append(item if np.ndim(item) == 0 and not hasattr(item, "dtype")
                                     else new)
                new = self._expand(new, ndmin, trans1d, new.ndim)
            objs.append(new)
        if not objs:
            return asarray(np.zeros((0,)))
        dtype = result_type(*dtype_sources)
        objs = [o if o.dtype == dtype else lax.convert_element_type(o, dtype) for o in objs]
        return concatenate(objs, axis=axis)

    @staticmethod
    def _directive(text, ndmin, trans1d):
        if text in ("r", "c"):
            raise ValueError("r_ / c_: the matrix directives 'r' and 'c' are not supported "
                             "(funcgrad has no matrix type); use 'axis,ndmin,trans1d' strings")
        try:
            parts = [int(p) for p in text.split(",")]
        except ValueError:
            raise ValueError(f"r_ / c_: unknown directive {text!r} (use 'axis[,ndmin[,trans1d]]'"
                             ")") from None
        if not 1 <= len(parts) <= 3:
            raise ValueError(f"r_ / c_: directive {text!r} has too many numbers")
        axis = parts[0]
        ndmin = parts[1] if len(parts) > 1 else ndmin
        trans1d = parts[2] if len(parts) > 2 else trans1d
        return axis, ndmin, trans1d

    @staticmethod
    def _expand(x, ndmin, trans1d, item_ndim):
        """x with at least ndmin axes: new axes in front, then NumPy's trans1d placement of the
        original ones."""
        if x.ndim >= ndmin:
            return x
        x = lax.reshape(x, (1,) * (ndmin - x.ndim) + tuple(x.shape))
        if trans1d != -1 and item_ndim < ndmin:
            k2 = ndmin - item_ndim
            k1 = trans1d + k2 + 1 if trans1d < 0 else trans1d
            order = list(range(ndmin))
            axes = order[:k1] + order[k2:] + order[k1:k2]
            x = lax.transpose(x, tuple(axes))
        return x

    def __len__(self):
        return 0


class RClass(_AxisConcatenator):
    """Row-wise (first axis) concatenation by index notation: fnp.r_[1:4, 0, a]."""

    def __init__(self):
        super().__init__(axis=0, ndmin=1, trans1d=-1)


class CClass(_AxisConcatenator):
    """Column-wise (last axis) concatenation, 1-D items as columns: fnp.c_[a, b]."""

    def __init__(self):
        super().__init__(axis=-1, ndmin=2, trans1d=0)


r_ = RClass()
c_ = CClass()
__all__ += ["r_", "c_"]
