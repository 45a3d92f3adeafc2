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
