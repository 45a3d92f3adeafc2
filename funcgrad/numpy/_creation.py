"""Array creation (array, zeros, arange, linspace, eye, ...), constants and dtype names.

Arrays made from static values (shapes, Python numbers) are built at once with NumPy: they are
constants of any program that uses them, exactly as a NumPy array passed in would be. Only values
computed from traced inputs (fill values, linspace endpoints, lists of tracers) go through lax.
Default dtypes are NumPy's: float64 for zeros/ones/eye, int64 for arange of ints.

New arrays go where new arrays go (`_new`): on the default backend (the GPU under
FUNCGRAD_BACKEND=gpu), and `*_like` functions on the device of their prototype.
"""

from __future__ import annotations

import sys

import numpy as np

from .. import lax
from ..core import Tracer, check_dtype, to_host
from ..core import placement as _placement
from ..core.placement import on_default_backend
from ._core import asarray as _asarray
from ._core import broadcast_to, contains_tracer, convert, result_type
from ._updatable import updatable

# Constants and dtype names, re-exported from NumPy.
pi, e, inf, nan, euler_gamma = np.pi, np.e, np.inf, np.nan, np.euler_gamma
newaxis = None
bool_ = np.bool_
int8, int16, int32, int64 = np.int8, np.int16, np.int32, np.int64
uint8, uint16, uint32, uint64 = np.uint8, np.uint16, np.uint32, np.uint64
float16, float32, float64 = np.float16, np.float32, np.float64
complex64, complex128 = np.complex64, np.complex128
half, single, double = np.half, np.single, np.double
intp, uintp, int_ = np.intp, np.uintp, np.int_
dtype, generic, number, integer, signedinteger, unsignedinteger = (
    np.dtype, np.generic, np.number, np.integer, np.signedinteger, np.unsignedinteger)
inexact, floating, complexfloating = np.inexact, np.floating, np.complexfloating
ndarray = np.ndarray
isscalar = np.isscalar
# Dtype aliases NumPy 2 has (object_ is left out: funcgrad arrays hold numbers only).
bool = np.bool_  # noqa: A001 (NumPy's name)
uint = np.uint
cdouble, csingle = np.cdouble, np.csingle

_CONSTANTS = ["pi", "e", "inf", "nan", "euler_gamma", "newaxis", "bool_", "int8", "int16",
              "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "float32",
              "float64", "complex64", "complex128", "half", "single", "double", "intp", "uintp",
              "int_", "dtype", "generic", "number", "integer", "signedinteger",
              "unsignedinteger", "inexact", "floating", "complexfloating", "ndarray",
              "issubdtype", "isdtype", "isscalar", "bool", "uint", "cdouble",
              "csingle"]


def _is_bfloat16(x):
    """Whether `x` (a dtype, scalar type or name) is ml_dtypes' bfloat16, without importing it."""
    if isinstance(x, str):
        return x == "bfloat16"
    return getattr(x, "__name__", None) == "bfloat16" or (
        isinstance(x, np.dtype) and x.name == "bfloat16")


_BFLOAT16_SUPERTYPES = (np.floating, np.inexact, np.number, np.generic)


def issubdtype(arg1, arg2):
    """np.issubdtype, with bfloat16 a floating type (as jnp.issubdtype): NumPy files ml_dtypes'
    types under np.generic only."""
    if _is_bfloat16(arg1):
        return _is_bfloat16(arg2) or arg2 in _BFLOAT16_SUPERTYPES
    if _is_bfloat16(arg2):
        return False
    return np.issubdtype(arg1, arg2)


def isdtype(dtype, kind):
    """np.isdtype, with bfloat16 a "real floating" dtype (as jnp.isdtype)."""
    if _is_bfloat16(dtype):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        return any(k in ("real floating", "numeric") or _is_bfloat16(k) for k in kinds)
    return np.isdtype(dtype, kind)


def _new(x, like=None):
    """A new array built with NumPy, placed on the default backend (or on `like`'s device)."""
    if _placement.default_xp is np and (like is None or type(like) is np.ndarray):
        return x  # the common case: NumPy stays NumPy
    return on_default_backend(x, like)


def _on_device(x):
    return hasattr(x, "__cuda_array_interface__") or (
        type(x) not in (np.ndarray, Tracer) and hasattr(x, "__array_namespace__"))


def _is_traced(*xs):
    return any(type(x) is Tracer for x in xs)


def _shape(shape):
    return (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)


def asarray(a, dtype=None, order=None, *, copy=None, device=None):
    """a as an array: tracers stay tracers, lists of tracers are stacked. Called from user code,
    a NumPy result is an UpdatableArray (a zero-copy view with JAX's `.at`, see _updatable.py),
    so that fnp.asarray(x).at[i].set(v) works outside transforms as inside; funcgrad's own
    modules get the plain array."""
    out = _asarray(a, None if dtype is None else check_dtype(dtype))
    if type(out) is Tracer:
        return out
    out = _new(out, a)
    return updatable(out) if _user_caller() else out


def array(object, dtype=None, *, copy=True, order="K", subok=False, ndmin=0, like=None):  # noqa: A002
    """A new array from `object` (a copy of NumPy arrays; lists of tracers are stacked); called
    from user code, a NumPy result is an UpdatableArray (with JAX's `.at`), as fnp.asarray's."""
    out = _array(object, dtype, copy, ndmin)
    return updatable(out) if _user_caller() else out


def _user_caller():
    """Whether the function calling fnp.asarray / fnp.array (two frames up) is outside the
    funcgrad package. Library code (optimizers, layers, losses, ...) then gets plain arrays, so
    the values it returns and stores stay plain (DESIGN invariant 1) whatever it converts."""
    return not sys._getframe(2).f_globals.get("__name__", "").startswith("funcgrad.")


def _array(object, dtype, copy, ndmin):  # noqa: A002
    if type(object) is Tracer or (isinstance(object, (list, tuple)) and contains_tracer(object)):
        x = _asarray(object, None if dtype is None else check_dtype(dtype))
    elif _on_device(object):  # a device array: copied on its device
        x = object.astype(check_dtype(dtype) if dtype is not None else object.dtype, copy=True)
    else:
        x = _new(np.array(object, dtype=dtype, copy=copy, ndmin=0))
        check_dtype(x.dtype, "Array of dtype")
    if x.ndim < ndmin:
        x = lax.reshape(x, (1,) * (ndmin - x.ndim) + x.shape)
    return x


def asanyarray(a, dtype=None, order=None, *, like=None):
    """Same as asarray."""
    return asarray(a, dtype)


def ascontiguousarray(a, dtype=None, *, like=None):
    """asarray with at least one axis (layout is the backend's business)."""
    x = asarray(a, dtype)
    return lax.reshape(x, (1,)) if x.ndim == 0 else x


def copy(a, order="K", subok=False):
    """A copy of a (tracers are immutable values, returned as they are)."""
    if type(a) is Tracer:
        return a
    if _on_device(a):
        return a.copy()
    return np.array(a, copy=True)


def zeros(shape, dtype=float, order="C", *, like=None):
    """An array of zeros (float64 by default)."""
    return _new(np.zeros(_shape(shape), check_dtype(dtype)))


def ones(shape, dtype=None, order="C", *, like=None):
    """An array of ones (float64 by default)."""
    return _new(np.ones(_shape(shape), check_dtype(dtype or float)))


def empty(shape, dtype=float, order="C", *, like=None):
    """An array of the given shape (filled with zeros, so programs stay deterministic)."""
    return zeros(shape, dtype)


def full(shape, fill_value, dtype=None, order="C", *, like=None):
    """An array filled with fill_value (its dtype by default; a traced fill is broadcast)."""
    shape = _shape(shape)
    if _is_traced(fill_value) or contains_tracer(fill_value):
        v = _asarray(fill_value)
        if dtype is not None:
            v = convert(v, check_dtype(dtype))
        return broadcast_to(v, shape)
    return _new(np.full(shape, fill_value, dtype))


def _like(a, dtype, shape):
    on_device = type(a) is Tracer or _on_device(a)
    dt = check_dtype(dtype) if dtype is not None else (
        a.dtype if on_device else np.asarray(a).dtype)
    s = (a.shape if on_device else np.shape(a)) if shape is None else _shape(shape)
    return dt, s


def _filled_like(a, value, dt, s):
    """`value` in shape s: for a traced `a`, one element broadcast (a read-only view), so that
    a program does not carry an array of zeros as a constant (a masked optimizer update, a
    softmax rule's `where`) and its memory."""
    if type(a) is Tracer:
        return _new(np.broadcast_to(np.array(value, dt), s), a)
    return _new(np.full(s, value, dt), a)


def zeros_like(a, dtype=None, order="K", subok=True, shape=None, *, device=None):
    """Zeros with the shape and dtype of a."""
    dt, s = _like(a, dtype, shape)
    return _filled_like(a, 0, dt, s)


def ones_like(a, dtype=None, order="K", subok=True, shape=None, *, device=None):
    """Ones with the shape and dtype of a."""
    dt, s = _like(a, dtype, shape)
    return _filled_like(a, 1, dt, s)


def empty_like(prototype, dtype=None, order="K", subok=True, shape=None, *, device=None):
    """An array with the shape and dtype of prototype (zeros)."""
    return zeros_like(prototype, dtype, shape=shape)


def full_like(a, fill_value, dtype=None, order="K", subok=True, shape=None, *, device=None):
    """fill_value in the shape and dtype of a."""
    dt, s = _like(a, dtype, shape)
    if _is_traced(fill_value):
        return broadcast_to(convert(_asarray(fill_value), dt), s)
    return _filled_like(a, fill_value, dt, s)


def _static_number(x, what):
    if type(x) is Tracer:
        v = to_host(x.concrete_value(what))
        return v.item() if v.ndim == 0 else v
    return x


def arange(start=None, stop=None, step=None, dtype=None, *, device=None, like=None):
    """Evenly spaced values in [start, stop) (int64 for integer arguments, as NumPy)."""
    args = [_static_number(v, "arange's arguments") for v in (start, stop, step)]
    args = [a for a in args if a is not None]
    return _new(np.arange(*args, dtype=dtype))


def linspace(start, stop, num=50, endpoint=True, retstep=False, dtype=None, axis=0, *,
             device=None):
    """num evenly spaced samples from start to stop (traced endpoints are differentiable)."""
    num = int(num)
    if num < 0:
        raise ValueError(f"Number of samples, {num}, must be non-negative.")
    if not _is_traced(start, stop):
        out = np.linspace(start, stop, num, endpoint, retstep, dtype, axis)
        return (_new(out[0]), np.asarray(out[1])) if retstep else _new(out)
    from ._arithmetic import add, multiply, subtract, true_divide
    from ._shape import moveaxis
    dt = np.result_type(result_type(start, stop), 1.0)
    a, b = convert(_asarray(start), dt), convert(_asarray(stop), dt)
    div = (num - 1) if endpoint else num
    delta = subtract(b, a)
    shape = np.broadcast_shapes(a.shape, b.shape)
    steps = np.arange(num, dtype=dt).reshape((num,) + (1,) * len(shape))
    if div > 0:
        step = true_divide(delta, div)
        y = add(multiply(steps, step), a)
        if endpoint and num > 1:
            last = broadcast_to(b, (1,) + tuple(shape))
            y = lax.concatenate([lax.slice(y, (0,) * y.ndim, (num - 1,) + tuple(shape)), last],
                                0)
    else:
        step = np.array(np.nan, dt)
        y = add(multiply(steps, delta), a)
    y = moveaxis(y, 0, axis)
    if dtype is not None:
        y = convert(y, np.dtype(dtype))
    return (y, step) if retstep else y


def logspace(start, stop, num=50, endpoint=True, base=10.0, dtype=None, axis=0):
    """base ** linspace(start, stop)."""
    if not _is_traced(start, stop, base):
        return _new(np.logspace(start, stop, num, endpoint, base, dtype, axis))
    from ._arithmetic import power
    y = power(base, linspace(start, stop, num, endpoint, axis=axis))
    return y if dtype is None else convert(y, np.dtype(dtype))


def geomspace(start, stop, num=50, endpoint=True, dtype=None, axis=0):
    """Samples evenly spaced on a log scale from start to stop (positive endpoints)."""
    if not _is_traced(start, stop):
        return _new(np.geomspace(start, stop, num, endpoint, dtype, axis))
    from ._float_functions import exp, log
    y = exp(linspace(log(start), log(stop), num, endpoint, axis=axis))
    return y if dtype is None else convert(y, np.dtype(dtype))


def eye(N, M=None, k=0, dtype=float, order="C", *, device=None, like=None):
    """A 2-D array with ones on the k-th diagonal."""
    return _new(np.eye(int(N), None if M is None else int(M), int(k), check_dtype(dtype)))


def identity(n, dtype=None, *, like=None):
    """The n x n identity matrix."""
    return _new(np.identity(int(n), check_dtype(dtype or float)))


def tri(N, M=None, k=0, dtype=float, *, like=None):
    """Ones at and below the k-th diagonal."""
    return _new(np.tri(int(N), None if M is None else int(M), int(k), check_dtype(dtype)))


def indices(dimensions, dtype=int, sparse=False):
    """Index grids for an array of shape `dimensions`."""
    return np.indices(_shape(dimensions), dtype, sparse)


def fromfunction(function, shape, *, dtype=float, like=None, **kwargs):
    """function(*index_grids) for an array of the given shape."""
    return function(*np.indices(_shape(shape), dtype=dtype), **kwargs)


def vander(x, N=None, increasing=False):
    """The Vandermonde matrix: columns are powers of x (decreasing unless `increasing`)."""
    v = _asarray(x)
    if v.ndim != 1:
        raise ValueError("x must be a one-dimensional array or sequence.")
    n = v.shape[0] if N is None else int(N)
    dt = np.promote_types(v.dtype, np.int64)
    v = convert(v, dt)
    cols = [lax.full(v.shape, 1, dt)] + [v if p == 1 else lax.integer_pow(v, p)
                                          for p in range(1, n)]
    if not increasing:
        cols = cols[::-1]
    cols = cols[:n]
    return lax.concatenate([lax.expand_dims(c, (1,)) for c in cols], 1) if cols else \
        np.zeros((v.shape[0], 0), dt)


__all__ = sorted({n for n, v in list(globals().items())
                  if not n.startswith("_") and callable(v)
                  and getattr(v, "__module__", "") == __name__} | set(_CONSTANTS))
