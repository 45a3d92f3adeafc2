"""Elementwise functions (NumPy's ufuncs) and products (matmul, dot, ...), composed from lax.

Each function promotes its operands with NumPy 2's rules (NEP 50: Python scalars are weak),
broadcasts them, and applies primitives; result dtypes are NumPy's, including its ufunc loop
choices (float functions of int8 are float16, int / int is float64, floor of an int is an int).
"""

from __future__ import annotations

import builtins
import math

import numpy as np

from .. import lax
from ..core import Tracer, user_line
from ..core.avals import PY_SCALARS
from ._core import (
    asarray,
    broadcast_shapes,
    broadcast_to,
    convert,
    inexact_dtype,
    promote2,
    result_type,
)

_LN2 = math.log(2.0)
_LN10 = math.log(10.0)


def _c(value, like):
    """A rank-0 constant of `like`'s dtype (broadcasts against it in a lax binary op)."""
    return np.array(value, like.dtype)


def _inexact(x):
    t = type(x)
    if (t is Tracer or t is np.ndarray) and x.dtype.kind in "fc":  # the common case, fast
        return x
    x = asarray(x)
    return convert(x, inexact_dtype(x.dtype))


def _named(name, fn, doc):
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = doc
    return fn


def _no_bool(name, x):
    if x.dtype.kind == "b":
        raise TypeError(f"numpy boolean {name} is not supported (as in NumPy){user_line()}; "
                        "use logical_not / logical_xor, or convert to an integer first.")


# ---------------------------------------------------------------------------------------------
# Float functions of one argument: integers and booleans are computed in NumPy's float dtype.

def _float_unary(name, fn, doc):
    def f(x, /):
        return fn(_inexact(x))
    return _named(name, f, doc)


def _log2(x):
    return lax.div(lax.log(x), _c(_LN2, x))


def _log10(x):
    return lax.div(lax.log(x), _c(_LN10, x))


sqrt = _float_unary("sqrt", lax.sqrt, "Square root, elementwise.")
cbrt = _float_unary("cbrt", lax.cbrt, "Cube root, elementwise.")
exp = _float_unary("exp", lax.exp, "e**x, elementwise.")
exp2 = _float_unary("exp2", lax.exp2, "2**x, elementwise.")
expm1 = _float_unary("expm1", lax.expm1, "exp(x) - 1, accurate near 0.")
log = _float_unary("log", lax.log, "Natural logarithm, elementwise.")
log2 = _float_unary("log2", _log2, "Base-2 logarithm, elementwise.")
log10 = _float_unary("log10", _log10, "Base-10 logarithm, elementwise.")
log1p = _float_unary("log1p", lax.log1p, "log(1 + x), accurate near 0.")
sin = _float_unary("sin", lax.sin, "Sine, elementwise.")
cos = _float_unary("cos", lax.cos, "Cosine, elementwise.")
tan = _float_unary("tan", lax.tan, "Tangent, elementwise.")
arcsin = _float_unary("arcsin", lax.asin, "Inverse sine, elementwise.")
arccos = _float_unary("arccos", lax.acos, "Inverse cosine, elementwise.")
arctan = _float_unary("arctan", lax.atan, "Inverse tangent, elementwise.")
sinh = _float_unary("sinh", lax.sinh, "Hyperbolic sine, elementwise.")
cosh = _float_unary("cosh", lax.cosh, "Hyperbolic cosine, elementwise.")
tanh = _float_unary("tanh", lax.tanh, "Hyperbolic tangent, elementwise.")
arcsinh = _float_unary("arcsinh", lax.asinh, "Inverse hyperbolic sine, elementwise.")
arccosh = _float_unary("arccosh", lax.acosh, "Inverse hyperbolic cosine, elementwise.")
arctanh = _float_unary("arctanh", lax.atanh, "Inverse hyperbolic tangent, elementwise.")
deg2rad = _float_unary("deg2rad", lambda x: lax.mul(x, _c(math.pi / 180, x)),
                       "Degrees to radians.")
rad2deg = _float_unary("rad2deg", lambda x: lax.mul(x, _c(180 / math.pi, x)),
                       "Radians to degrees.")
rint = _float_unary("rint", lax.round, "Round to the nearest integer (half to even), as float.")
fabs = _float_unary("fabs", lax.abs, "Absolute value, as float.")
asin, acos, atan, asinh, acosh, atanh = arcsin, arccos, arctan, arcsinh, arccosh, arctanh
radians, degrees = deg2rad, rad2deg


def sinc(x, /):
    """sin(pi x) / (pi x), with sinc(0) = 1 (safe for gradients at 0)."""
    x = _inexact(x)
    zero = lax.eq(x, _c(0, x))
    one = lax.full(x.shape, 1, x.dtype)
    px = lax.mul(lax.select_n(zero, x, one), _c(math.pi, x))
    return lax.select_n(zero, lax.div(lax.sin(px), px), one)


# ---------------------------------------------------------------------------------------------
# Sign, rounding and magnitude: integers keep their dtype where NumPy's loops do.

def negative(x, /):
    """-x."""
    x = asarray(x)
    _no_bool("negative", x)
    return lax.neg(x)


def positive(x, /):
    """+x (a copy in NumPy; the same value here)."""
    x = asarray(x)
    _no_bool("positive", x)
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
    _no_bool("sign", x)
    return lax.sign(x)


def _int_identity_unary(name, fn, doc):
    def f(x, /):
        x = asarray(x)
        return x if x.dtype.kind in "biu" else fn(x)
    return _named(name, f, doc)


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
    if x.dtype.kind in "biu":
        if decimals >= 0:
            return x
        f = 10 ** (-decimals)
        return lax.mul(lax.convert_element_type(
            lax.round(lax.div(lax.convert_element_type(x, np.float64), np.array(float(f)))),
            x.dtype), _c(f, x))
    if decimals == 0:
        return lax.round(x)
    if decimals > 0:
        f = _c(10.0 ** decimals, x)
        return lax.div(lax.round(lax.mul(x, f)), f)
    f = _c(10.0 ** -decimals, x)
    return lax.mul(lax.round(lax.div(x, f)), f)


around = round


def reciprocal(x, /):
    """1 / x; integers use integer division (as NumPy)."""
    x = asarray(x)
    if x.dtype.kind == "b":
        x = convert(x, np.int8)
    return lax.div(_c(1, x), x)


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
    x, y, shape = _binary_shape(x, y)
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
    x = _inexact(x)
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
        if x.dtype.kind in "fciu" and (x.dtype.kind not in "iu" or y >= 0):
            return lax.integer_pow(x, y)
    x, y = _int_operands(x, y)
    if x.dtype.kind in "fc":
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


def _float_binary_operands(x, y):
    return promote2(x, y, dtype=inexact_dtype(result_type(x, y)))


def arctan2(x1, x2, /):
    """The angle of the point (x2, x1), in (-pi, pi]."""
    return lax.atan2(*_float_binary_operands(x1, x2))


atan2 = arctan2


def hypot(x1, x2, /):
    """sqrt(x1**2 + x2**2) without overflow or underflow in the squares."""
    x, y = _float_binary_operands(x1, x2)
    shape = broadcast_shapes(x.shape, y.shape)
    a, b = broadcast_to(lax.abs(x), shape), broadcast_to(lax.abs(y), shape)
    big, small = lax.max(a, b), lax.min(a, b)
    zero = lax.eq(big, lax.full(shape, 0, big.dtype))
    safe = lax.select_n(zero, big, lax.full(shape, 1, big.dtype))
    r = lax.div(small, safe)
    out = lax.mul(big, lax.sqrt(lax.add(lax.full(shape, 1, r.dtype), lax.mul(r, r))))
    inf = lax.bitwise_or(lax.eq(a, _c(np.inf, a)), lax.eq(b, _c(np.inf, b)))
    return lax.select_n(inf, out, lax.full(shape, np.inf, out.dtype))


def _logaddexp(x1, x2, log1p_of_exp_neg):
    x, y = _float_binary_operands(x1, x2)
    shape = broadcast_shapes(x.shape, y.shape)
    x, y = broadcast_to(x, shape), broadcast_to(y, shape)
    # big + f(big - small) picked by a select, not built from max/abs: each side is an exact
    # formula for the whole function, so every derivative order is right, also at x == y.
    x_big = lax.ge(x, y)
    big, small = lax.select_n(x_big, y, x), lax.select_n(x_big, x, y)
    out = lax.add(big, log1p_of_exp_neg(lax.sub(big, small)))
    # Equal infinities (d = nan) give that infinity; a nan input stays nan.
    same_inf = lax.bitwise_and(lax.eq(x, y), lax.eq(lax.abs(x), _c(np.inf, x)))
    return lax.select_n(same_inf, out, x)


def logaddexp(x1, x2, /):
    """log(exp(x1) + exp(x2)) without overflow."""
    return _logaddexp(x1, x2, lambda d: lax.log1p(lax.exp(lax.neg(d))))


def logaddexp2(x1, x2, /):
    """log2(2**x1 + 2**x2) without overflow."""
    return _logaddexp(x1, x2, lambda d: lax.div(lax.log1p(lax.exp2(lax.neg(d))), _c(_LN2, d)))


def _binary_shape(x, y):
    shape = broadcast_shapes(x.shape, y.shape)
    return broadcast_to(x, shape), broadcast_to(y, shape), shape


def maximum(x1, x2, /):
    """Elementwise maximum; nan if either is nan."""
    return lax.max(*promote2(x1, x2))


def minimum(x1, x2, /):
    """Elementwise minimum; nan if either is nan."""
    return lax.min(*promote2(x1, x2))


def _nan_ignoring(fn):
    def f(x1, x2, /):
        x, y = promote2(x1, x2)
        if x.dtype.kind not in "fc":
            return fn(x, y)
        x, y, _ = _binary_shape(x, y)
        out = fn(x, y)
        out = lax.select_n(lax.ne(y, y), out, x)
        return lax.select_n(lax.ne(x, x), out, y)
    return f


fmax = _named("fmax", _nan_ignoring(lax.max), "Elementwise maximum, ignoring nans.")
fmin = _named("fmin", _nan_ignoring(lax.min), "Elementwise minimum, ignoring nans.")


def _signbit(x):
    if x.dtype.kind in "bu":
        return lax.ne(x, x)
    if x.dtype.kind == "i":
        return lax.lt(x, _c(0, x))
    # atan2(x, -1) < 0 exactly when x's sign bit is set (it tells -0.0 from +0.0).
    return lax.lt(lax.atan2(x, _c(-1, x)), _c(0, x))


def signbit(x, /):
    """Whether the sign bit is set (True for -0.0)."""
    return _signbit(asarray(x))


def copysign(x1, x2, /):
    """|x1| with the sign of x2."""
    x, y = _float_binary_operands(x1, x2)
    x, y, _ = _binary_shape(x, y)
    flip = lax.ne(_signbit(x), _signbit(y))
    return lax.select_n(flip, x, lax.neg(x))


def nextafter(x1, x2, /):
    """The next representable float after x1 toward x2."""
    return lax.nextafter(*_float_binary_operands(x1, x2))


def heaviside(x1, x2, /):
    """Step function: 0 for x1 < 0, x2 for x1 == 0, 1 for x1 > 0 (nan stays nan)."""
    x, h, shape = _binary_shape(*_float_binary_operands(x1, x2))
    out = lax.select_n(lax.gt(x, _c(0, x)), h, lax.full(shape, 1, x.dtype))
    out = lax.select_n(lax.lt(x, _c(0, x)), out, lax.full(shape, 0, x.dtype))
    return lax.select_n(lax.ne(x, x), out, x)


def ldexp(x1, x2, /):
    """x1 * 2**x2 (x2 an integer array)."""
    x = asarray(x1)
    dt = inexact_dtype(x.dtype) if type(x1) not in PY_SCALARS else np.dtype(np.float64)
    x = convert(x, dt)
    e = convert(asarray(x2), dt)
    x, e, _ = _binary_shape(x, e)
    return lax.mul(x, lax.exp2(e))


# ---------------------------------------------------------------------------------------------
# Classification

def isnan(x, /):
    """x != x: True where x is nan."""
    x = asarray(x)
    return lax.ne(x, x)


def isfinite(x, /):
    """True where x is neither inf nor nan (always True for integers)."""
    x = asarray(x)
    return lax.is_finite(x) if x.dtype.kind == "f" else lax.eq(x, x)


def isinf(x, /):
    """True where x is +inf or -inf."""
    x = asarray(x)
    if x.dtype.kind != "f":
        return lax.ne(x, x)
    return lax.eq(lax.abs(x), _c(np.inf, x))


def isposinf(x, /):
    """True where x is +inf."""
    x = asarray(x)
    return lax.eq(x, _c(np.inf, x)) if x.dtype.kind == "f" else lax.ne(x, x)


def isneginf(x, /):
    """True where x is -inf."""
    x = asarray(x)
    return lax.eq(x, _c(-np.inf, x)) if x.dtype.kind == "f" else lax.ne(x, x)


def nan_to_num(x, copy=True, nan=0.0, posinf=None, neginf=None):
    """Replace nan by `nan`, +inf by `posinf` and -inf by `neginf` (default: the dtype's
    extremes)."""
    x = asarray(x)
    if x.dtype.kind != "f":
        return x
    info = np.finfo(x.dtype)
    big = info.max if posinf is None else posinf
    small = info.min if neginf is None else neginf
    full = lambda v: lax.full(x.shape, v, x.dtype)
    out = lax.select_n(lax.ne(x, x), x, full(nan))
    out = lax.select_n(lax.eq(x, _c(np.inf, x)), out, full(big))
    return lax.select_n(lax.eq(x, _c(-np.inf, x)), out, full(small))


def real(val, /):
    """The real part (real arrays are returned unchanged)."""
    x = asarray(val)
    _real_only("real", x)
    return x


def imag(val, /):
    """The imaginary part (zeros for real arrays)."""
    x = asarray(val)
    _real_only("imag", x)
    return lax.full(x.shape, 0, x.dtype)


def conj(x, /):
    """The complex conjugate (real arrays are returned unchanged; booleans become int8)."""
    x = asarray(x)
    _real_only("conj", x)
    return convert(x, np.int8) if x.dtype.kind == "b" else x


conjugate = conj


def angle(z, deg=False):
    """The argument of z: 0 for non-negative reals, pi for negatives."""
    x = _inexact(z)
    _real_only("angle", x)
    a = lax.select_n(lax.lt(x, _c(0, x)), lax.full(x.shape, 0, x.dtype),
                     lax.full(x.shape, 180.0 if deg else math.pi, x.dtype))
    return a


def _real_only(name, x):
    if x.dtype.kind == "c":
        raise NotImplementedError(f"{name} of a complex array is not supported yet (lax has no "
                                  f"real/imag/complex primitives){user_line()}.")


# ---------------------------------------------------------------------------------------------
# Comparisons and logic

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


def _comparison(name, fn, doc):
    def f(x1, x2, /):
        return fn(*_compare_operands(x1, x2))
    return _named(name, f, doc)


equal = _comparison("equal", lax.eq, "x1 == x2, elementwise.")
not_equal = _comparison("not_equal", lax.ne, "x1 != x2, elementwise.")
less = _comparison("less", lax.lt, "x1 < x2, elementwise.")
less_equal = _comparison("less_equal", lax.le, "x1 <= x2, elementwise.")
greater = _comparison("greater", lax.gt, "x1 > x2, elementwise.")
greater_equal = _comparison("greater_equal", lax.ge, "x1 >= x2, elementwise.")


def _truth(x):
    x = asarray(x)
    return x if x.dtype.kind == "b" else lax.ne(x, _c(0, x))


def _logical(name, fn, doc):
    def f(x1, x2, /):
        x, y = _truth(x1), _truth(x2)
        x, y, _ = _binary_shape(x, y)
        return fn(x, y)
    return _named(name, f, doc)


logical_and = _logical("logical_and", lax.bitwise_and, "x1 and x2, elementwise (bool).")
logical_or = _logical("logical_or", lax.bitwise_or, "x1 or x2, elementwise (bool).")
logical_xor = _logical("logical_xor", lax.bitwise_xor, "x1 xor x2, elementwise (bool).")


def logical_not(x, /):
    """not x, elementwise (bool)."""
    return lax.bitwise_not(_truth(x))


def _bitwise(name, fn, doc):
    def f(x1, x2, /):
        return fn(*promote2(x1, x2))
    return _named(name, f, doc)


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
    c = _truth(condition)
    x, y = promote2(x, y)
    broadcast_shapes(c.shape, x.shape, y.shape)  # an error naming the shapes, if they clash
    return lax.select_n(c, y, x)  # select_n broadcasts like NumPy


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
        x = lax.max(*promote2(x, lo, dtype=dt))
    if hi is not None:
        x = lax.min(*promote2(x, hi, dtype=dt))
    return convert(asarray(x), dt)


def isclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
    """|a - b| <= atol + rtol * |b| elementwise; infinities are close only to themselves."""
    x, y = _float_binary_operands(a, b)
    x, y, shape = _binary_shape(x, y)
    fin = lax.bitwise_and(lax.is_finite(x), lax.is_finite(y)) if x.dtype.kind == "f" else \
        lax.eq(x, x)
    zero = lax.full(shape, 0, x.dtype)
    # Non-finite entries are replaced by 0 before subtracting (no inf - inf warnings).
    xs, ys = lax.select_n(fin, zero, x), lax.select_n(fin, zero, y)
    tol = lax.add(_c(atol, x), lax.mul(_c(rtol, x), lax.abs(ys)))
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
    x, y, _ = _binary_shape(*promote2(x, y))
    eq = lax.eq(x, y)
    return _python_bool_if_concrete(lax.reduce_min(eq, tuple(range(eq.ndim))) if eq.ndim else eq)


# ---------------------------------------------------------------------------------------------
# Products

def _product_operands(a, b):
    """a and b as arrays of their common dtype; booleans are multiplied as integers."""
    x, y = asarray(a), asarray(b)
    dt = x.dtype if type(x) is type(y) is np.ndarray and x.dtype == y.dtype else result_type(x, y)
    work = np.dtype(np.int64) if dt.kind == "b" else dt
    return convert(x, work), convert(y, work), dt


def _finish_product(out, dt):
    if dt.kind == "b":
        return lax.ne(out, _c(0, out))
    return out


def _mismatch(name, a, b, detail):
    return ValueError(f"{name}: shapes {tuple(a.shape)} and {tuple(b.shape)} are not aligned"
                      f"{user_line()}: {detail}.")


def matmul(x1, x2, /):
    """Matrix product with NumPy's rules: 1-D operands gain (and lose) an axis; leading axes are
    batch axes that broadcast."""
    x, y, dt = _product_operands(x1, x2)
    if x.ndim == 0 or y.ndim == 0:
        raise ValueError(f"matmul: operands must not be scalars, got shapes {tuple(x.shape)} and "
                         f"{tuple(y.shape)}{user_line()}; use multiply (*) for scalars.")
    xk = x.shape[-1]
    yk = y.shape[0] if y.ndim == 1 else y.shape[-2]
    if xk != yk:
        which = "the only axis" if y.ndim == 1 else "the second-to-last axis"
        raise _mismatch("matmul", x, y, f"the last axis of the first operand ({xk}) must equal "
                        f"{which} of the second ({yk})")
    if y.ndim <= 2:
        # x @ W: contract x's last axis with W's first; no batch axes needed.
        out = lax.dot_general(x, y, (((x.ndim - 1,), (0,)), ((), ())))
        return _finish_product(out, dt)
    squeeze_front = x.ndim == 1
    if squeeze_front:
        x = lax.expand_dims(x, (0,))
    batch = broadcast_shapes(x.shape[:-2], y.shape[:-2], what="matmul batch axes")
    nb = len(batch)
    x = broadcast_to(x, batch + x.shape[-2:])
    y = broadcast_to(y, batch + y.shape[-2:])
    out = lax.dot_general(x, y, (((nb + 1,), (nb,)), (tuple(range(nb)), tuple(range(nb)))))
    if squeeze_front:
        out = lax.squeeze(out, (nb,))
    return _finish_product(out, dt)


def dot(a, b):
    """NumPy's dot: a product for scalars, the sum over a's last axis and b's second-to-last
    (or only) axis otherwise."""
    x, y, dt = _product_operands(a, b)
    if x.ndim == 0 or y.ndim == 0:
        return _finish_product(multiply(x, y), dt)
    yax = 0 if y.ndim == 1 else y.ndim - 2
    if x.shape[-1] != y.shape[yax]:
        raise _mismatch("dot", x, y, f"the last axis of the first operand ({x.shape[-1]}) must "
                        f"equal axis {yax} of the second ({y.shape[yax]})")
    return _finish_product(lax.dot_general(x, y, (((x.ndim - 1,), (yax,)), ((), ()))), dt)


def vdot(a, b, /):
    """The dot product of a and b flattened."""
    x, y, dt = _product_operands(a, b)
    x, y = lax.reshape(x, (x.size,)), lax.reshape(y, (y.size,))
    if x.shape != y.shape:
        raise _mismatch("vdot", asarray(a), asarray(b), "they must have the same size")
    return _finish_product(lax.dot_general(x, y, (((0,), (0,)), ((), ()))), dt)


def inner(a, b, /):
    """The sum over the last axes of a and b (a product for scalars)."""
    x, y, dt = _product_operands(a, b)
    if x.ndim == 0 or y.ndim == 0:
        return _finish_product(multiply(x, y), dt)
    if x.shape[-1] != y.shape[-1]:
        raise _mismatch("inner", x, y, "their last axes must have the same size")
    return _finish_product(lax.dot_general(x, y, (((x.ndim - 1,), (y.ndim - 1,)), ((), ()))),
                           dt)


def outer(a, b):
    """out[i, j] = a.ravel()[i] * b.ravel()[j]."""
    x, y = asarray(a), asarray(b)
    dt = result_type(x, y)
    x, y = convert(x, dt), convert(y, dt)
    x = lax.reshape(x, (x.size, 1))
    y = lax.reshape(y, (1, y.size))
    return multiply(x, y)


def tensordot(a, b, axes=2):
    """Sum of products over the last `axes` axes of a and the first of b (or given axis lists)."""
    x, y, dt = _product_operands(a, b)
    if isinstance(axes, (int, np.integer)):
        n = int(axes)
        ax, bx = tuple(range(x.ndim - n, x.ndim)), tuple(range(n))
    else:
        ax, bx = axes
        ax = (ax,) if isinstance(ax, (int, np.integer)) else tuple(ax)
        bx = (bx,) if isinstance(bx, (int, np.integer)) else tuple(bx)
        ax = tuple(int(i) % x.ndim for i in ax)
        bx = tuple(int(i) % y.ndim for i in bx)
    if len(ax) != len(bx) or any(x.shape[i] != y.shape[j] for i, j in zip(ax, bx)):
        raise _mismatch("tensordot", x, y, f"axes {ax} and {bx} do not match in size")
    return _finish_product(lax.dot_general(x, y, ((ax, bx), ((), ()))), dt)


def kron(a, b):
    """The Kronecker product: blocks a[i, j] * b."""
    x, y = asarray(a), asarray(b)
    dt = result_type(x, y)
    x, y = convert(x, dt), convert(y, dt)
    nd = builtins.max(x.ndim, y.ndim)
    xs = (1,) * (nd - x.ndim) + x.shape
    ys = (1,) * (nd - y.ndim) + y.shape
    x, y = lax.reshape(x, xs), lax.reshape(y, ys)
    inter = tuple(d for pair in zip(xs, ys) for d in pair)
    xb = lax.broadcast_in_dim(x, inter, tuple(range(0, 2 * nd, 2)))
    yb = lax.broadcast_in_dim(y, inter, tuple(range(1, 2 * nd, 2)))
    out = multiply(xb, yb)
    return lax.reshape(out, tuple(p * q for p, q in zip(xs, ys)))


def cross(a, b, axisa=-1, axisb=-1, axisc=-1, axis=None):
    """The cross product of 3-vectors (or the z component for 2-vectors) along an axis."""
    from ._shape import moveaxis
    if axis is not None:
        axisa = axisb = axisc = axis
    x, y = promote2(asarray(a), asarray(b))
    x, y = moveaxis(x, axisa, -1), moveaxis(y, axisb, -1)
    if x.shape[-1] not in (2, 3) or y.shape[-1] not in (2, 3):
        raise ValueError(f"cross: incompatible vector sizes {x.shape[-1]} and {y.shape[-1]} "
                         f"(must be 2 or 3){user_line()}")

    def comp(v, i):
        if i >= v.shape[-1]:
            return None
        return lax.squeeze(lax.slice(v, (0,) * (v.ndim - 1) + (i,), v.shape[:-1] + (i + 1,)),
                           (v.ndim - 1,))

    x0, x1, x2 = (comp(x, i) for i in range(3))
    y0, y1, y2 = (comp(y, i) for i in range(3))
    z = subtract(multiply(x0, y1), multiply(x1, y0))
    if x2 is None and y2 is None:
        return z
    if x2 is None:
        cx, cy = multiply(x1, y2), negative(multiply(x0, y2))
    elif y2 is None:
        cx, cy = negative(multiply(x2, y1)), multiply(x2, y0)
    else:
        cx = subtract(multiply(x1, y2), multiply(x2, y1))
        cy = subtract(multiply(x2, y0), multiply(x0, y2))
    from ._shape import stack
    return stack([cx, cy, z], axis=axisc if x.ndim > 0 else 0)


def vecdot(x1, x2, /, *, axis=-1):
    """The dot product of vectors along `axis` (broadcasting the other axes)."""
    x, y = promote2(asarray(x1), asarray(x2))
    x, y, _ = _binary_shape(x, y)
    from ._reductions import sum as _sum
    return _sum(multiply(x, y), axis=axis)


def matvec(x1, x2, /):
    """Matrix-vector products over broadcast batch axes: (..., m, n) x (..., n) -> (..., m)."""
    y = asarray(x2)
    out = matmul(x1, lax.expand_dims(y, (y.ndim,)))
    return lax.squeeze(out, (out.ndim - 1,))


def vecmat(x1, x2, /):
    """Vector-matrix products over broadcast batch axes: (..., n) x (..., n, m) -> (..., m)."""
    x = asarray(x1)
    out = matmul(lax.expand_dims(x, (x.ndim - 1,)), x2)
    return lax.squeeze(out, (out.ndim - 2,))


__all__ = [n for n, v in list(globals().items())
           if not n.startswith("_") and callable(v) and getattr(v, "__module__", "") == __name__]
__all__ += ["abs", "asin", "acos", "atan", "asinh", "acosh", "atanh", "radians", "degrees",
            "around", "divide", "mod", "pow", "atan2", "conjugate", "bitwise_not",
            "bitwise_invert", "bitwise_left_shift", "bitwise_right_shift", "fmax", "fmin"]
__all__ = sorted(set(__all__) - {"annotations"})
