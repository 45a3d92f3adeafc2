"""cupyx, simulated: the scatter functions (unbuffered, as CUDA atomics: duplicates add up).

`scatter_add(a, slices, value)` adds `value` into `a[slices]` in place; an index that appears
twice gets both updates (np.add.at semantics). As in CuPy, index arrays may be device arrays,
lists or NumPy arrays (copied to the device), and value may be a host value when the index is
an array. CuPy's dtype limits for integer-array indices are kept (its atomics exist only for
these types): scatter_add takes int32, uint32, uint64, float16, float32, float64;
scatter_max/min take int32, uint32, uint64, float32, float64. int64 is refused.
"""

from __future__ import annotations

import numpy as np
from cupy import _core

_ADD_DTYPES = {"int32", "uint32", "uint64", "float16", "float32", "float64"}
_MINMAX_DTYPES = {"int32", "uint32", "uint64", "float32", "float64"}


def _scatter(name, ufunc, dtypes, a, slices, value):
    if not isinstance(a, _core.ndarray):
        raise _core.unsupported(a)
    if not _core._is_advanced(slices):   # no array index: an in-place ufunc on the view
        view = a[slices]
        ufunc(view, value, out=view)
        return
    idx = _core.device_index(slices)
    parts = idx if isinstance(idx, tuple) else (idx,)
    if any(np.asarray(k).dtype.kind in "iu" for k in parts if not isinstance(k, slice)) \
            and a.dtype.name not in dtypes:
        raise TypeError(f"{name} only supports {', '.join(sorted(dtypes))} as data type "
                        f"(got {a.dtype})")
    v = np.asarray(_core.host_value(value)).astype(a.dtype)
    ufunc._ufunc.at(a._a, idx, v)


def scatter_add(a, slices, value):
    """a[slices] += value, accumulating duplicate indices (in place)."""
    import cupy
    _scatter("scatter_add", cupy.add, _ADD_DTYPES, a, slices, value)


def scatter_max(a, slices, value):
    """a[slices] = maximum(a[slices], value), over duplicates too (in place)."""
    import cupy
    _scatter("scatter_max", cupy.maximum, _MINMAX_DTYPES, a, slices, value)


def scatter_min(a, slices, value):
    """a[slices] = minimum(a[slices], value), over duplicates too (in place)."""
    import cupy
    _scatter("scatter_min", cupy.minimum, _MINMAX_DTYPES, a, slices, value)
