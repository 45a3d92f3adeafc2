"""Float functions of one argument (NumPy's exp, log, trigonometric and hyperbolic ufuncs, ...):
integers and booleans are computed in NumPy's float dtype for them.
"""

from __future__ import annotations

import math

from .. import lax
from ..core import user_line
from ._core import as_inexact, const_like, named

_LN2 = math.log(2.0)
_LN10 = math.log(10.0)


def _float_unary(name, fn, doc):
    def f(x, /):
        return fn(as_inexact(x))
    return named(name, f, doc)


def _complex_parts(fn, x):
    """fn applied to the real and imaginary parts of a complex x (to x itself otherwise)."""
    if x.dtype.kind == "c":
        return lax.complex(fn(lax.real(x)), fn(lax.imag(x)))
    return fn(x)


def _fabs(x):
    if x.dtype.kind == "c":  # as NumPy's ufunc (and JAX): fabs is for real numbers
        raise TypeError(f"fabs needs a real operand, got {x.dtype}{user_line()}; use abs for "
                        "the modulus of complex numbers.")
    return lax.abs(x)


def _log2(x):
    return lax.div(lax.log(x), const_like(_LN2, x))


def _log10(x):
    return lax.div(lax.log(x), const_like(_LN10, x))


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
deg2rad = _float_unary("deg2rad", lambda x: lax.mul(x, const_like(math.pi / 180, x)),
                       "Degrees to radians.")
rad2deg = _float_unary("rad2deg", lambda x: lax.mul(x, const_like(180 / math.pi, x)),
                       "Radians to degrees.")
rint = _float_unary("rint", lambda x: _complex_parts(lax.round, x),
                    "Round to the nearest integer (half to even), as float (complex: each part).")
fabs = _float_unary("fabs", _fabs, "Absolute value of real numbers, as float (complex raises).")
asin, acos, atan, asinh, acosh, atanh = arcsin, arccos, arctan, arcsinh, arccosh, arctanh
radians, degrees = deg2rad, rad2deg


def sinc(x, /):
    """sin(pi x) / (pi x), with sinc(0) = 1 (safe for gradients at 0)."""
    x = as_inexact(x)
    zero = lax.eq(x, const_like(0, x))
    one = lax.full(x.shape, 1, x.dtype)
    px = lax.mul(lax.select_n(zero, x, one), const_like(math.pi, x))
    return lax.select_n(zero, lax.div(lax.sin(px), px), one)


__all__ = [n for n, v in list(globals().items())
           if not n.startswith("_") and callable(v) and getattr(v, "__module__", "") == __name__]
__all__ += ["asin", "acos", "atan", "asinh", "acosh", "atanh", "radians", "degrees"]
__all__ = sorted(set(__all__) - {"annotations"})
