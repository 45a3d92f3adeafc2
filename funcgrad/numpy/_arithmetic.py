"""Arithmetic ufuncs: sign, rounding and magnitude; arithmetic of two arguments (add ... power,
hypot, logaddexp, maximum, copysign, ...); clip. Each promotes with NumPy 2's rules (NEP 50)
and keeps the dtypes of NumPy's ufunc loops (an int stays an int where NumPy's loop does).
"""

from __future__ import annotations

import builtins
import math

import numpy as np

from .. import lax
from ..core import user_line
from ..core.avals import PY_SCALARS, dtype_kind
from ._complex import extremum
from ._core import (
    as_inexact,
    asarray,
    broadcast_pair,
    broadcast_shapes,
    broadcast_to,
    const_like,
    convert,
    float_binary_operands,
    inexact_dtype,
    named,
    promote2,
    reject_bool,
    result_type,
)

_LN2 = math.log(2.0)


# ---------------------------------------------------------------------------------------------
# Sign, rounding and magnitude: integers keep their dtype where NumPy's loops do.

def negative(x, /):
    """-x."""
    x = asarray(x)
    reject_bool("negative", x)
    return lax.neg(x)


def positive(x, /):
    """+x (a copy in NumPy; the same value here)."""
    x = asarray(x)
    reject_bool("positive", x)
    return x


def absolute(x, /):
    """|x|; booleans and unsigned integers are returned unchanged."""
    x = asarray(x)
    if x.dtype.kind in "bu":
        return x
    return lax.abs(x)


abs = absolute  # noqa: A001 (NumPy's name)


def sign(x, /):
    """-1, 0 or 1 by the sign of x (nan for nan)."""
    x = asarray(x)
    reject_bool("sign", x)
    return lax.sign(x)


def _int_identity_unary(name, fn, doc):
    def f(x, /):
        x = asarray(x)
        return x if x.dtype.kind in "biu" else fn(x)
    return named(name, f, doc)


floor = _int_identity_unary("floor", lax.floor, "Largest integer <= x (integers unchanged).")
ceil = _int_identity_unary("ceil", lax.ceil, "Smallest integer >= x (integers unchanged).")
trunc = _int_identity_unary("trunc", lax.round_toward_zero,
                            "x rounded toward zero (integers unchanged).")
fix = _int_identity_unary("fix", lax.round_toward_zero, "x rounded toward zero.")


def round(a, decimals=0, out=None):  # noqa: A001 (NumPy's name)
    """Round half to even to `decimals` places (integers unchanged for decimals >= 0)."""
    if out is not None:
        raise TypeError("funcgrad arrays are immutable: round(..., out=) is not supported.")
    x = asarray(a)
    if x.dtype.kind == "c":  # each part, as NumPy
        return lax.complex(round(lax.real(x), decimals), round(lax.imag(x), decimals))
    if x.dtype.kind in "biu":
        if decimals >= 0:
            return x
        f = 10 ** (-decimals)
        return lax.mul(lax.convert_element_type(
            lax.round(lax.div(lax.convert_element_type(x, np.float64), np.array(float(f)))),
            x.dtype), const_like(f, x))
    if decimals == 0:
        return lax.round(x)
    if decimals > 0:
        f = const_like(10.0 ** decimals, x)
        return lax.div(lax.round(lax.mul(x, f)), f)
    f = const_like(10.0 ** -decimals, x)
    return lax.mul(lax.round(lax.div(x, f)), f)


around = round


def reciprocal(x, /):
    """1 / x; integers use integer division (as NumPy)."""
    x = asarray(x)
    if x.dtype.kind == "b":
        x = convert(x, np.int8)
    return lax.div(const_like(1, x), x)


def square(x, /):
    """x * x (booleans become int8, as NumPy)."""
    x = asarray(x)
    if x.dtype.kind == "b":
        x = convert(x, np.int8)
    return lax.integer_pow(x, 2)


# ---------------------------------------------------------------------------------------------
# Arithmetic of two arguments

def add(x, y, /):
    """x + y (booleans: logical or)."""
    x, y = promote2(x, y)
    if x.dtype.kind == "b":
        return lax.bitwise_or(x, y)
    return lax.add(x, y)


def subtract(x, y, /):
    """x - y."""
    x, y = promote2(x, y)
    if x.dtype.kind == "b":
        raise TypeError("numpy boolean subtract (the - operator) is not supported, as in NumPy"
                        f"{user_line()}: use logical_xor or bitwise_xor.")
    return lax.sub(x, y)


def multiply(x, y, /):
    """x * y (booleans: logical and)."""
    x, y = promote2(x, y)
    if x.dtype.kind == "b":
        return lax.bitwise_and(x, y)
    return lax.mul(x, y)


def _true_divide_dtype(x, y):
    dt = result_type(x, y)
    return np.dtype(np.float64) if dt.kind in "biu" else dt


def true_divide(x, y, /):
    """x / y; integers divide in float64 (as NumPy)."""
    x, y = promote2(x, y, dtype=_true_divide_dtype(x, y))
    return lax.div(x, y)


divide = true_divide


def _int_operands(x, y):
    dt = result_type(x, y)
    if dt.kind == "b":
        dt = np.dtype(np.int8)
    return promote2(x, y, dtype=dt)


def _floor_divmod(x, y):
    """Floor quotient and remainder with the divisor's sign, as NumPy computes them."""
    if x.dtype.kind == "u":
        return lax.div(x, y), lax.rem(x, y)
    x, y, shape = broadcast_pair(x, y)
    zero = lax.full(shape, 0, x.dtype)
    if x.dtype.kind == "i":
        q, r = lax.div(x, y), lax.rem(x, y)
        adjust = lax.bitwise_and(lax.ne(r, zero), lax.ne(lax.lt(r, zero), lax.lt(y, zero)))
        q = lax.sub(q, lax.convert_element_type(adjust, x.dtype))
        return q, lax.add(r, lax.select_n(adjust, zero, y))
    # Floats: NumPy's npy_divmod (fmod-based, then corrected), so results agree bit for bit.
    one = lax.full(shape, 1, x.dtype)
    fmod_ = lax.rem(x, y)
    div = lax.div(lax.sub(x, fmod_), y)
    adjust = lax.bitwise_and(lax.ne(fmod_, zero), lax.ne(lax.lt(y, zero), lax.lt(fmod_, zero)))
    mod = lax.select_n(adjust, fmod_, lax.add(fmod_, y))
    div = lax.select_n(adjust, div, lax.sub(div, one))
    fl = lax.floor(div)
    fl = lax.select_n(lax.gt(lax.sub(div, fl), lax.full(shape, 0.5, x.dtype)), fl,
                      lax.add(fl, one))
    # Exact zeros take a sign as in C: copysign(0, y) for the remainder, copysign(0, x / y) for
    # the quotient; division by zero gives x / y and fmod(x, 0).
    quotient = lax.div(x, y)
    mod = lax.select_n(lax.eq(fmod_, zero), mod, lax.mul(zero, lax.sign(y)))
    fl = lax.select_n(lax.eq(div, zero), fl, lax.mul(zero, quotient))
    by_zero = lax.eq(y, zero)
    return lax.select_n(by_zero, fl, quotient), lax.select_n(by_zero, mod, fmod_)


def floor_divide(x, y, /):
    """x // y, rounding toward -inf (NumPy's floor semantics)."""
    return _floor_divmod(*_int_operands(x, y))[0]


def remainder(x, y, /):
    """x % y, with the sign of y (NumPy's floor semantics)."""
    return _floor_divmod(*_int_operands(x, y))[1]


mod = remainder


def divmod(x, y, /):  # noqa: A001 (NumPy's name)
    """(x // y, x % y)."""
    return _floor_divmod(*_int_operands(x, y))


def fmod(x, y, /):
    """C fmod: the remainder with the sign of x."""
    return lax.rem(*_int_operands(x, y))


def modf(x, /):
    """(fractional part, integral part), both with x's sign."""
    x = as_inexact(x)
    t = lax.round_toward_zero(x)
    return lax.sub(x, t), t


def _int_power(x, y, max_exponent=None):
    """x ** y for integer arrays by binary exponentiation, one step per exponent bit."""
    bits = x.dtype.itemsize * 8 if max_exponent is None else builtins.max(
        int(max_exponent).bit_length(), 1)
    shape = broadcast_shapes(x.shape, y.shape)
    x, y = broadcast_to(x, shape), broadcast_to(y, shape)
    one, zero = lax.full(shape, 1, x.dtype), lax.full(shape, 0, x.dtype)
    acc, base = one, x
    for i in range(bits):
        bit = lax.ne(lax.bitwise_and(lax.shift_right_logical(y, lax.full(shape, i, y.dtype)),
                                     one), zero)
        acc = lax.select_n(bit, acc, lax.mul(acc, base))
        if i + 1 < bits:
            base = lax.mul(base, base)
    return acc


def power(x, y, /):
    """x ** y; a Python int exponent uses lax.integer_pow (x ** 2 is x * x)."""
    if type(y) is int and type(x) is not int:
        x = asarray(x)
        if x.dtype.kind == "b":
            x = convert(x, np.int8)
        if x.dtype.kind in "iu" and y < 0:
            raise ValueError("Integers to negative integer powers are not allowed.")
        if dtype_kind(x.dtype) in "fciu" and (dtype_kind(x.dtype) not in "iu" or y >= 0):
            return lax.integer_pow(x, y)
    x, y = _int_operands(x, y)
    if dtype_kind(x.dtype) in "fc":
        return lax.pow(x, y)
    top = None
    if type(y) is np.ndarray:
        if y.size and y.min() < 0:
            raise ValueError("Integers to negative integer powers are not allowed.")
        top = y.max() if y.size else 0
    return _int_power(x, y, top)


pow = power  # noqa: A001 (NumPy 2's name)


def float_power(x, y, /):
    """x ** y computed in float64 (complex128 for complex inputs)."""
    dt = np.result_type(result_type(x, y), np.float64)
    x, y = promote2(x, y, dtype=dt)
    return lax.pow(x, y)


def arctan2(x1, x2, /):
    """The angle of the point (x2, x1), in (-pi, pi]."""
    return lax.atan2(*float_binary_operands(x1, x2))


atan2 = arctan2


def hypot(x1, x2, /):
    """sqrt(x1**2 + x2**2) without overflow or underflow in the squares."""
    x, y = float_binary_operands(x1, x2)
    shape = broadcast_shapes(x.shape, y.shape)
    a, b = broadcast_to(lax.abs(x), shape), broadcast_to(lax.abs(y), shape)
    big, small = lax.max(a, b), lax.min(a, b)
    zero = lax.eq(big, lax.full(shape, 0, big.dtype))
    safe = lax.select_n(zero, big, lax.full(shape, 1, big.dtype))
    r = lax.div(small, safe)
    out = lax.mul(big, lax.sqrt(lax.add(lax.full(shape, 1, r.dtype), lax.mul(r, r))))
    inf = lax.bitwise_or(lax.eq(a, const_like(np.inf, a)), lax.eq(b, const_like(np.inf, b)))
    return lax.select_n(inf, out, lax.full(shape, np.inf, out.dtype))


def _logaddexp(x1, x2, log1p_of_exp_neg):
    x, y = float_binary_operands(x1, x2)
    shape = broadcast_shapes(x.shape, y.shape)
    x, y = broadcast_to(x, shape), broadcast_to(y, shape)
    # big + f(big - small) picked by a select, not built from max/abs: each side is an exact
    # formula for the whole function, so every derivative order is right, also at x == y.
    x_big = lax.ge(x, y)
    big, small = lax.select_n(x_big, y, x), lax.select_n(x_big, x, y)
    out = lax.add(big, log1p_of_exp_neg(lax.sub(big, small)))
    # Equal infinities (d = nan) give that infinity; a nan input stays nan.
    same_inf = lax.bitwise_and(lax.eq(x, y), lax.eq(lax.abs(x), const_like(np.inf, x)))
    return lax.select_n(same_inf, out, x)


def logaddexp(x1, x2, /):
    """log(exp(x1) + exp(x2)) without overflow."""
    return _logaddexp(x1, x2, lambda d: lax.log1p(lax.exp(lax.neg(d))))


def logaddexp2(x1, x2, /):
    """log2(2**x1 + 2**x2) without overflow."""
    return _logaddexp(x1, x2,
                      lambda d: lax.div(lax.log1p(lax.exp2(lax.neg(d))), const_like(_LN2, d)))


def _max(x, y):
    return extremum(x, y, True) if x.dtype.kind == "c" else lax.max(x, y)


def _min(x, y):
    return extremum(x, y, False) if x.dtype.kind == "c" else lax.min(x, y)


def maximum(x1, x2, /):
    """Elementwise maximum; nan if either is nan (complex: lexicographic, as NumPy)."""
    return _max(*promote2(x1, x2))


def minimum(x1, x2, /):
    """Elementwise minimum; nan if either is nan (complex: lexicographic, as NumPy)."""
    return _min(*promote2(x1, x2))


def _nan_ignoring(fn):
    def f(x1, x2, /):
        x, y = promote2(x1, x2)
        if dtype_kind(x.dtype) not in "fc":
            return fn(x, y)
        x, y, _ = broadcast_pair(x, y)
        out = fn(x, y)
        out = lax.select_n(lax.ne(y, y), out, x)
        return lax.select_n(lax.ne(x, x), out, y)
    return f


fmax = named("fmax", _nan_ignoring(_max), "Elementwise maximum, ignoring nans.")
fmin = named("fmin", _nan_ignoring(_min), "Elementwise minimum, ignoring nans.")


def _signbit(x):
    if x.dtype.kind in "bu":
        return lax.ne(x, x)
    if x.dtype.kind == "i":
        return lax.lt(x, const_like(0, x))
    # atan2(x, -1) < 0 exactly when x's sign bit is set (it tells -0.0 from +0.0).
    return lax.lt(lax.atan2(x, const_like(-1, x)), const_like(0, x))


def signbit(x, /):
    """Whether the sign bit is set (True for -0.0)."""
    return _signbit(asarray(x))


def copysign(x1, x2, /):
    """|x1| with the sign of x2."""
    x, y = float_binary_operands(x1, x2)
    x, y, _ = broadcast_pair(x, y)
    flip = lax.ne(_signbit(x), _signbit(y))
    return lax.select_n(flip, x, lax.neg(x))


def nextafter(x1, x2, /):
    """The next representable float after x1 toward x2."""
    return lax.nextafter(*float_binary_operands(x1, x2))


def heaviside(x1, x2, /):
    """Step function: 0 for x1 < 0, x2 for x1 == 0, 1 for x1 > 0 (nan stays nan)."""
    x, h, shape = broadcast_pair(*float_binary_operands(x1, x2))
    out = lax.select_n(lax.gt(x, const_like(0, x)), h, lax.full(shape, 1, x.dtype))
    out = lax.select_n(lax.lt(x, const_like(0, x)), out, lax.full(shape, 0, x.dtype))
    return lax.select_n(lax.ne(x, x), out, x)


def ldexp(x1, x2, /):
    """x1 * 2**x2 (x2 an integer array)."""
    x = asarray(x1)
    dt = inexact_dtype(x.dtype) if type(x1) not in PY_SCALARS else np.dtype(np.float64)
    x = convert(x, dt)
    e = convert(asarray(x2), dt)
    x, e, _ = broadcast_pair(x, e)
    return lax.mul(x, lax.exp2(e))


def clip(a, a_min=None, a_max=None, out=None, *, min=None, max=None):  # noqa: A002
    """a limited to [a_min, a_max] (either may be None); nan stays nan."""
    if out is not None:
        raise TypeError("funcgrad arrays are immutable: clip(..., out=) is not supported.")
    lo = a_min if a_min is not None else min
    hi = a_max if a_max is not None else max
    if lo is None and hi is None:
        return asarray(a)
    args = [v for v in (a, lo, hi) if v is not None]
    dt = result_type(*args)
    x = a
    if lo is not None:
        x = _max(*promote2(x, lo, dtype=dt))
    if hi is not None:
        x = _min(*promote2(x, hi, dtype=dt))
    return convert(asarray(x), dt)


__all__ = [n for n, v in list(globals().items())
           if not n.startswith("_") and callable(v) and getattr(v, "__module__", "") == __name__]
__all__ += ["abs", "around", "divide", "mod", "pow", "atan2", "fmax", "fmin"]
__all__ = sorted(set(__all__) - {"annotations"})
