"""The machinery under funcgrad.numpy: array conversion, NEP 50 dtype promotion, broadcasting.

Every function of funcgrad.numpy turns its arguments into lax operands here: Python scalars are
weak (they take the other operand's dtype, as in NumPy 2), arrays are promoted with NumPy's own
`result_type`, and shapes are broadcast explicitly with `broadcast_in_dim`, so the primitives
always see operands of one dtype and one shape (a rank-0 operand may stay rank 0).
"""

from __future__ import annotations

import operator

import numpy as np

from .. import lax
from ..core import Tracer, check_dtype, user_line
from ..core import placement as _placement
from ..core.avals import PY_SCALARS, dtype_kind

_WEAK_STANDIN = {"b": False, "i": 0, "u": 0, "f": 0.0, "c": 0j}


def is_array(x):
    return isinstance(x, (np.ndarray, Tracer)) or hasattr(x, "__cuda_array_interface__")


def _promotion_item(x):
    t = type(x)
    if t in PY_SCALARS:
        return x
    if t is Tracer:
        return _WEAK_STANDIN[dtype_kind(x.dtype)] if x.aval.weak_type else x.dtype
    if t is np.ndarray or t is np.dtype:
        return x if t is np.dtype else x.dtype
    if isinstance(x, (type, str, np.dtype)):
        return np.dtype(x)
    dtype = getattr(x, "dtype", None)
    if isinstance(dtype, np.dtype):
        return dtype
    return np.asarray(x).dtype


def result_type(*args):
    """The dtype NumPy 2 gives an operation on `args` (NEP 50: Python scalars are weak)."""
    items = [_promotion_item(a) for a in args if a is not None]
    try:
        return np.result_type(*items)
    except TypeError as e:
        raise TypeError(f"Cannot combine dtypes {items}{user_line()}: {e}") from e


def inexact_dtype(dtype):
    """The float dtype NumPy computes a float function of `dtype` in (int32 -> float64, ...)."""
    dtype = np.dtype(dtype)
    return dtype if dtype_kind(dtype) in "fc" else np.result_type(dtype, np.float16)


def asarray(x, dtype=None):
    """x as an array (a NumPy array, or a tracer inside a transform), optionally converted."""
    if type(x) is Tracer:
        return x if dtype is None else lax.convert_element_type(x, check_dtype(dtype))
    if _placement.default_xp is not np:  # GPU default backend: host data goes to the device
        return _on_default_device(x, dtype)
    if isinstance(x, np.ndarray) and type(x) is np.ndarray:
        if dtype is None or x.dtype == dtype:
            check_dtype(x.dtype, "Array of dtype")
            return x
        return x.astype(check_dtype(dtype))
    if hasattr(x, "__cuda_array_interface__"):
        return x if dtype is None else x.astype(dtype)
    if isinstance(x, (list, tuple)) and contains_tracer(x):
        from ._shape import stack
        return stack([asarray(e, dtype) for e in x])
    arr = np.asarray(x, dtype=None if dtype is None else check_dtype(dtype))
    check_dtype(arr.dtype, "Array of dtype")
    return arr


def _on_default_device(x, dtype):
    """asarray when the default backend is the GPU: device arrays stay, host data is copied."""
    if hasattr(x, "__cuda_array_interface__"):
        return x if dtype is None else x.astype(check_dtype(dtype))
    if isinstance(x, (list, tuple)) and contains_tracer(x):
        from ._shape import stack
        return stack([asarray(e, dtype) for e in x])
    host = np.asarray(x, dtype=None if dtype is None else check_dtype(dtype))
    check_dtype(host.dtype, "Array of dtype")
    return _placement.default_namespace().asarray(host)


def contains_tracer(x):
    if type(x) is Tracer:
        return True
    if isinstance(x, (list, tuple)):
        return any(contains_tracer(e) for e in x)
    return False


def shape_of(x):
    return () if type(x) in PY_SCALARS else tuple(np.shape(x)) if type(x) is not Tracer else x.shape


def broadcast_shapes(*shapes, what="operands"):
    """NumPy's broadcast of several shapes, with an error that lists them and the user's line."""
    first = shapes[0] if shapes else ()
    if all(s == first for s in shapes):
        return tuple(first)
    ndim = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(-ndim, 0):
        size = 1
        for s in shapes:
            if len(s) >= -i:
                d = s[i]
                if d != 1:
                    if size != 1 and size != d:
                        listed = " and ".join(str(tuple(s)) for s in shapes)
                        raise ValueError(
                            f"Shapes {listed} of the {what} cannot be broadcast together"
                            f"{user_line()}: axis {ndim + i} has sizes {size} and {d}. Each axis "
                            "must be equal or 1 (counting from the right); reshape or add axes "
                            "with x[:, None] to line them up.")
                    size = d
        out.append(size)
    return tuple(out)


def broadcast_to(x, shape):
    """x broadcast to `shape` by NumPy's rules (prepending axes, stretching size-1 axes)."""
    shape = tuple(int(s) for s in shape)
    x = asarray(x)
    if x.shape == shape:
        return x
    if x.ndim > len(shape) or broadcast_shapes(x.shape, shape, what="array and target") != shape:
        raise ValueError(f"Cannot broadcast an array of shape {x.shape} to shape {shape}"
                         f"{user_line()}.")
    lead = len(shape) - x.ndim
    return lax.broadcast_in_dim(x, shape, tuple(range(lead, len(shape))))


def promote_args(*args, dtype=None):
    """Operands of one dtype (NEP 50) and one broadcast shape; rank-0 operands stay rank 0."""
    dtype = result_type(*args) if dtype is None else np.dtype(dtype)
    shape = broadcast_shapes(*(shape_of(a) for a in args))
    out = []
    for a in args:
        if type(a) in PY_SCALARS:
            out.append(_scalar(a, dtype))
            continue
        a = asarray(a)
        if a.dtype != dtype:
            a = lax.convert_element_type(a, dtype)
        if a.shape != shape and a.ndim:
            a = broadcast_to(a, shape)
        out.append(a)
    if shape and all(o.ndim == 0 for o in out):
        out[0] = broadcast_to(out[0], shape)
    return out


def _scalar(value, dtype):
    try:
        return np.array(value, dtype)
    except OverflowError as e:
        raise OverflowError(f"Python integer {value} is out of bounds for {dtype}{user_line()}"
                            ) from e


def promote_inexact(*args):
    """Like promote_args, but integers and booleans become floats (as NumPy's float ufuncs)."""
    return promote_args(*args, dtype=inexact_dtype(result_type(*args)))


_PY_NUMBERS = (int, float)


def promote2(x, y, dtype=None):
    """Two operands converted to their common dtype (NEP 50), shapes left to broadcast.

    Binary primitives broadcast like NumPy, so only the dtypes are made to agree here (and the
    shapes are checked, for an error that names both and the user's line). Fast paths cover the
    common eager cases: two NumPy arrays, and a NumPy array with a Python number.
    """
    tx, ty = type(x), type(y)
    if (tx is np.ndarray or tx is Tracer) and (ty is np.ndarray or ty is Tracer):
        if x.dtype == y.dtype and (dtype is None or x.dtype == dtype):
            if x.shape != y.shape:
                broadcast_shapes(x.shape, y.shape)
            return x, y
    elif tx is Tracer and ty in _PY_NUMBERS and not x.aval.weak_type:
        dt = np.result_type(x.dtype, y) if dtype is None else dtype
        return (x if x.dtype == dt else lax.convert_element_type(x, dt)), _scalar(y, dt)
    if tx is np.ndarray:
        if ty in _PY_NUMBERS:
            dt = np.result_type(x.dtype, y) if dtype is None else dtype
            return (x if x.dtype == dt else lax.convert_element_type(x, dt)), _scalar(y, dt)
    elif ty is np.ndarray and tx in _PY_NUMBERS:
        dt = np.result_type(y.dtype, x) if dtype is None else dtype
        return _scalar(x, dt), (y if y.dtype == dt else lax.convert_element_type(y, dt))
    dtype = result_type(x, y) if dtype is None else np.dtype(dtype)
    out = []
    for a in (x, y):
        if type(a) in PY_SCALARS:
            out.append(_scalar(a, dtype))
            continue
        a = asarray(a)
        out.append(a if a.dtype == dtype else lax.convert_element_type(a, dtype))
    if out[0].shape != out[1].shape:
        broadcast_shapes(out[0].shape, out[1].shape)
    return out[0], out[1]


def canonical_axis(axis, ndim, what="axis"):
    """An axis in range(ndim) (negative counts from the end), or a clear error."""
    a = operator.index(axis)
    if not -ndim <= a < ndim:
        raise np.exceptions.AxisError(f"{what} {axis} is out of bounds for an array of rank {ndim}"
                                      f"{user_line()}.")
    return a % ndim


def canonical_axes(axis, ndim):
    """axis=None / int / tuple as a sorted tuple of distinct axes in range(ndim)."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (tuple, list)):
        axes = tuple(canonical_axis(a, ndim) for a in axis)
        if len(set(axes)) != len(axes):
            raise ValueError(f"repeated axis in {tuple(axis)}{user_line()}")
        return tuple(sorted(axes))
    return (canonical_axis(axis, ndim),)


def convert(x, dtype):
    """x (already an array or tracer) in `dtype`; no-op when it already has it."""
    return x if x.dtype == dtype else lax.convert_element_type(x, dtype)


# ---------------------------------------------------------------------------------------------
# Helpers shared by the elementwise functions

def const_like(value, like):
    """A rank-0 constant of `like`'s dtype (broadcasts against it in a lax binary op)."""
    return np.array(value, like.dtype)


def abs_squared(x):
    """|x|**2 elementwise, real (x * x for real x): var, std and the norms of complex arrays."""
    if x.dtype.kind == "c":
        re, im = lax.real(x), lax.imag(x)
        return lax.add(lax.mul(re, re), lax.mul(im, im))
    return lax.mul(x, x)


def as_inexact(x):
    t = type(x)
    if (t is Tracer or t is np.ndarray) and dtype_kind(x.dtype) in "fc":  # the common case, fast
        return x
    x = asarray(x)
    return convert(x, inexact_dtype(x.dtype))


def named(name, fn, doc):
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = doc
    return fn


def reject_bool(name, x):
    if x.dtype.kind == "b":
        raise TypeError(f"numpy boolean {name} is not supported (as in NumPy){user_line()}; "
                        "use logical_not / logical_xor, or convert to an integer first.")


def float_binary_operands(x, y):
    return promote2(x, y, dtype=inexact_dtype(result_type(x, y)))


def broadcast_pair(x, y):
    shape = broadcast_shapes(x.shape, y.shape)
    return broadcast_to(x, shape), broadcast_to(y, shape), shape
