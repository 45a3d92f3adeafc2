"""Comparisons, logic and bitwise ufuncs, where, and the closeness/equality tests (isclose,
allclose, array_equal, array_equiv).
"""

from __future__ import annotations

import numpy as np

from .. import lax
from ..core import Tracer
from ._classification import isfinite
from ._complex import lexicographic
from ._core import (
    asarray,
    broadcast_pair,
    broadcast_shapes,
    const_like,
    float_binary_operands,
    named,
    promote2,
    result_type,
)


def _compare_operands(x, y):
    """Promote for a comparison; a Python int outside the array's range compares exactly."""
    for a, b in ((x, y), (y, x)):
        if type(a) is int and type(b) is not int:
            dt = result_type(b)
            if dt.kind in "iu" and not np.iinfo(dt).min <= a <= np.iinfo(dt).max:
                wide = np.dtype(np.int64 if -2 ** 63 <= a < 2 ** 63 and dt != np.uint64
                                else np.float64)
                return promote2(x, y, dtype=wide)
    return promote2(x, y)


def _comparison(name, fn, doc, ordered=False):
    def f(x1, x2, /):
        x, y = _compare_operands(x1, x2)
        if ordered and x.dtype.kind == "c":  # lexicographic, as NumPy and JAX
            return lexicographic(fn, x, y)
        return fn(x, y)
    return named(name, f, doc)


equal = _comparison("equal", lax.eq, "x1 == x2, elementwise.")
not_equal = _comparison("not_equal", lax.ne, "x1 != x2, elementwise.")
_ORDER = " Complex numbers compare by the real part, then the imaginary part."
less = _comparison("less", lax.lt, "x1 < x2, elementwise." + _ORDER, True)
less_equal = _comparison("less_equal", lax.le, "x1 <= x2, elementwise." + _ORDER, True)
greater = _comparison("greater", lax.gt, "x1 > x2, elementwise." + _ORDER, True)
greater_equal = _comparison("greater_equal", lax.ge, "x1 >= x2, elementwise." + _ORDER, True)


def truth(x):
    x = asarray(x)
    return x if x.dtype.kind == "b" else lax.ne(x, const_like(0, x))


def _logical(name, fn, doc):
    def f(x1, x2, /):
        x, y = truth(x1), truth(x2)
        x, y, _ = broadcast_pair(x, y)
        return fn(x, y)
    return named(name, f, doc)


logical_and = _logical("logical_and", lax.bitwise_and, "x1 and x2, elementwise (bool).")
logical_or = _logical("logical_or", lax.bitwise_or, "x1 or x2, elementwise (bool).")
logical_xor = _logical("logical_xor", lax.bitwise_xor, "x1 xor x2, elementwise (bool).")


def logical_not(x, /):
    """not x, elementwise (bool)."""
    return lax.bitwise_not(truth(x))


def _bitwise(name, fn, doc):
    def f(x1, x2, /):
        return fn(*promote2(x1, x2))
    return named(name, f, doc)


bitwise_and = _bitwise("bitwise_and", lax.bitwise_and, "x1 & x2 (integers and booleans).")
bitwise_or = _bitwise("bitwise_or", lax.bitwise_or, "x1 | x2 (integers and booleans).")
bitwise_xor = _bitwise("bitwise_xor", lax.bitwise_xor, "x1 ^ x2 (integers and booleans).")


def invert(x, /):
    """~x: bitwise not of integers, logical not of booleans."""
    return lax.bitwise_not(asarray(x))


bitwise_not = bitwise_invert = invert


def left_shift(x1, x2, /):
    """x1 << x2 (0 once the shift reaches the bit width)."""
    x, y = promote2(x1, x2)
    return lax.shift_left(x, y)


def right_shift(x1, x2, /):
    """x1 >> x2: arithmetic for signed integers, logical for unsigned."""
    x, y = promote2(x1, x2)
    if x.dtype.kind == "i":
        return lax.shift_right_arithmetic(x, y)
    return lax.shift_right_logical(x, y)


bitwise_left_shift, bitwise_right_shift = left_shift, right_shift


def where(condition, x=None, y=None, /):
    """x where condition is true, else y (broadcast together, dtypes promoted); with only the
    condition, the indices where it is true (as nonzero)."""
    if x is None and y is None:
        from ._nonzero import nonzero
        return nonzero(condition)
    if x is None or y is None:
        raise ValueError("where: either both or neither of x and y should be given")
    c = truth(condition)
    x, y = promote2(x, y)
    broadcast_shapes(c.shape, x.shape, y.shape)  # an error naming the shapes, if they clash
    return lax.select_n(c, y, x)  # select_n broadcasts like NumPy


def isclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
    """|a - b| <= atol + rtol * |b| elementwise; infinities are close only to themselves."""
    x, y = float_binary_operands(a, b)
    x, y, shape = broadcast_pair(x, y)
    fin = lax.bitwise_and(isfinite(x), isfinite(y))
    zero = lax.full(shape, 0, x.dtype)
    # Non-finite entries are replaced by 0 before subtracting (no inf - inf warnings).
    xs, ys = lax.select_n(fin, zero, x), lax.select_n(fin, zero, y)
    mag = lax.abs(ys)  # real, also for complex operands
    tol = lax.add(const_like(atol, mag), lax.mul(const_like(rtol, mag), mag))
    close = lax.select_n(fin, lax.eq(x, y), lax.le(lax.abs(lax.sub(xs, ys)), tol))
    if equal_nan:
        close = lax.bitwise_or(close, lax.bitwise_and(lax.ne(x, x), lax.ne(y, y)))
    return close


def _python_bool_if_concrete(x):
    return bool(x) if type(x) is not Tracer else x


def allclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
    """Whether all of isclose(a, b) holds: a Python bool eagerly, a traced bool under tracing."""
    c = isclose(a, b, rtol, atol, equal_nan)
    return _python_bool_if_concrete(lax.reduce_min(c, tuple(range(c.ndim))) if c.ndim else c)


def array_equal(a1, a2, equal_nan=False):
    """Whether a1 and a2 have the same shape and elements (a Python bool eagerly)."""
    x, y = asarray(a1), asarray(a2)
    if x.shape != y.shape:
        return False
    x, y = promote2(x, y)
    eq = lax.eq(x, y)
    if equal_nan:
        eq = lax.bitwise_or(eq, lax.bitwise_and(lax.ne(x, x), lax.ne(y, y)))
    return _python_bool_if_concrete(lax.reduce_min(eq, tuple(range(eq.ndim))) if eq.ndim else eq)


def array_equiv(a1, a2):
    """Whether a1 and a2 are equal after broadcasting (False if they cannot broadcast)."""
    x, y = asarray(a1), asarray(a2)
    try:
        broadcast_shapes(x.shape, y.shape)
    except ValueError:
        return False
    x, y, _ = broadcast_pair(*promote2(x, y))
    eq = lax.eq(x, y)
    return _python_bool_if_concrete(lax.reduce_min(eq, tuple(range(eq.ndim))) if eq.ndim else eq)


__all__ = [n for n, v in list(globals().items())
           if not n.startswith("_") and callable(v) and getattr(v, "__module__", "") == __name__]
__all__ += ["bitwise_not", "bitwise_invert", "bitwise_left_shift", "bitwise_right_shift"]
__all__ = sorted(set(__all__) - {"annotations"})
