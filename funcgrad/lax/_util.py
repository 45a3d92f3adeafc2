"""Helpers shared by the primitive definitions: shape checks and error messages."""

from __future__ import annotations

import numpy as np

from ..core import ShapedArray, Tracer, user_line
from ..core.avals import numpy_dtype


def shape_error(prim_name, msg):
    return TypeError(f"{prim_name}: {msg}{user_line()}")


def same_dtype(prim_name, avals):
    dt = avals[0].dtype
    for a in avals[1:]:
        if a.dtype != dt:
            types = ", ".join(x.str_short() for x in avals)
            raise shape_error(prim_name, f"operands must have the same dtype, got {types}. "
                              "funcgrad.numpy promotes dtypes for you; at the lax level convert "
                              "first with lax.convert_element_type.")
    return dt


def check_kind(prim_name, aval, kinds, what="operand"):
    if aval.dtype.kind not in kinds:
        names = {"f": "floating", "c": "complex", "i": "signed integer", "u": "unsigned integer",
                 "b": "boolean"}
        allowed = " or ".join(names[k] for k in kinds)
        raise TypeError(f"{prim_name} needs a {allowed} {what}, got {aval.str_short()}"
                        f"{user_line()}.")


def weak(avals):
    return all(a.weak_type for a in avals)


def normalize_axis(axis, ndim, what="axis"):
    if not -ndim <= axis < max(ndim, 1) or (ndim == 0 and axis not in (0, -1)):
        raise ValueError(f"{what} {axis} is out of bounds for an array of rank {ndim}"
                         f"{user_line()}.")
    return axis % ndim if ndim else 0


def aval(shape, dtype, weak_type=False):
    return ShapedArray(shape, dtype, weak_type)


# ---------------------------------------------------------------------------------------------
# Portable array helpers for implementations: NumPy and CuPy arrays carry NumPy dtypes and an
# `astype` method; arrays of an Array API standard namespace (the portability check) carry their
# namespace's dtypes and are cast with the namespace's `astype` function.

def dtype_of(x):
    """The NumPy dtype of array `x`, whatever its namespace."""
    d = x.dtype
    return d if type(d) is np.dtype else numpy_dtype(d)


def astype(xp, x, dtype, copy=True):
    """`x` cast to `dtype` (a NumPy dtype); `copy=False` may return `x` itself."""
    if type(x) is np.ndarray:
        return x.astype(dtype, copy=copy)
    method = getattr(x, "astype", None)
    return method(dtype, copy=copy) if method is not None else xp.astype(x, dtype, copy=copy)


def copy(xp, x):
    """A fresh, writable copy of array `x`."""
    method = getattr(x, "copy", None)
    return method() if method is not None else xp.copy(x)


def to_operand(x):
    """x as something primitives accept: arrays and tracers as they are, scalars as arrays."""
    if isinstance(x, Tracer) or hasattr(x, "shape") and hasattr(x, "dtype") \
            and not isinstance(x, np.generic):
        return x
    return np.asarray(x)


def const_like(value, like):
    return np.array(value, like.dtype)
