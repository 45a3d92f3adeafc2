"""Helpers shared by the primitive definitions: shape checks and error messages."""

from __future__ import annotations

import numpy as np

from ..core import ShapedArray, Tracer, user_line
from ..core.avals import dtype_kind, numpy_dtype


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
    if dtype_kind(aval.dtype) not in kinds:
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


# ---------------------------------------------------------------------------------------------
# 16-bit floats on NumPy. NumPy has no BLAS for float16 and bfloat16 (ml_dtypes), accumulates
# their sums in 16 bits (float16 overflows at 65504) and computes most of their math one element
# at a time. Implementations wrapped with `small_floats_in_float32` compute such operands in
# float32 and round the results back once, as XLA does on the CPU: the values stored (and the
# memory they take) stay 16-bit, the arithmetic is float32's. Other namespaces (CuPy has float16
# kernels) get the operands as they are.

_F32 = np.dtype(np.float32)


def _is_small(x):
    return type(x) is np.ndarray and x.dtype.itemsize == 2 and dtype_kind(x.dtype) == "f"


_SMALL = frozenset({"float16", "bfloat16"})


def small_floats_in_float32(impl, round_back=lambda small, params: small, dtypes=_SMALL):
    """`impl(xp, *args, **params)` computing 16-bit float operands (of the dtype names `dtypes`)
    in float32 on NumPy; float32 results are rounded to `round_back(small dtype, params)` (the
    operand's dtype by default; None keeps float32, for dot_general's `preferred_element_type`).
    """
    def run(xp, *args, **params):
        if xp is not np:
            return impl(xp, *args, **params)
        small = None
        for a in args:
            if _is_small(a):
                small = a.dtype
                break
        if small is None or small.name not in dtypes:
            return impl(xp, *args, **params)
        out = impl(xp, *(a.astype(_F32) if _is_small(a) else a for a in args), **params)
        target = round_back(small, params)
        if target is None:
            return out
        if isinstance(out, (tuple, list)):
            return type(out)(_round(o, target) for o in out)
        return _round(out, target)
    run.__wrapped__ = impl
    return run


def _round(out, dtype):
    return out.astype(dtype) if getattr(out, "dtype", None) == _F32 else out


def linear_primitive(p, fn):
    """A linear primitive: its JVP applies it to the tangent; it keeps no residuals."""
    p.residuals = "none"
    p.jvp = lambda primals, tangents, out, **params: fn(tangents[0], **params)
    return p


def argsort_short(values):
    """The permutation that sorts a short list of ints (np.argsort costs microseconds here)."""
    return tuple(sorted(range(len(values)), key=values.__getitem__))
