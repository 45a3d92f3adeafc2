"""Integer and floating-point utilities: gcd and lcm, frexp and spacing, i0 (the modified Bessel
function of order 0), and the type tests iscomplex, isreal, iscomplexobj, isrealobj, iterable.
"""

from __future__ import annotations

import builtins
import math

import numpy as np

from .. import lax
from ..core import user_line
from ._arithmetic import abs as _abs
from ._core import as_inexact as _inexact_arr
from ._core import asarray, broadcast_shapes, broadcast_to, convert, promote2

__all__ = [
    "gcd", "lcm", "frexp", "spacing", "i0", "iscomplex", "isreal", "iscomplexobj", "isrealobj",
    "iterable",
]


# ---------------------------------------------------------------------------------------------
# Integer and floating-point utilities

def _int_pair(name, x1, x2):
    a, b = promote2(x1, x2)
    a, b = asarray(a), asarray(b)
    if a.dtype.kind not in "iu":
        raise TypeError(f"ufunc '{name}' did not contain a loop with signature matching types "
                        f"({a.dtype}, {b.dtype}){user_line()}")
    shape = broadcast_shapes(tuple(a.shape), tuple(b.shape))
    return broadcast_to(a, shape), broadcast_to(b, shape)


def _gcd(a, b):
    zero = np.zeros((), a.dtype)

    def cond(ab):
        return lax.reduce_max(lax.ne(ab[1], zero), tuple(range(a.ndim)))

    def body(ab):
        x, y = ab
        nz = lax.ne(y, zero)
        safe = lax.select_n(nz, lax.full(y.shape, 1, y.dtype), y)
        return lax.select_n(nz, x, y), lax.select_n(nz, lax.full(y.shape, 0, y.dtype),
                                                     lax.rem(x, safe))

    return lax.while_loop(cond, body, (_abs(a), _abs(b)))[0]


def gcd(x1, x2, /):
    """Greatest common divisor of |x1| and |x2|, elementwise (integers)."""
    return _gcd(*_int_pair("gcd", x1, x2))


def lcm(x1, x2, /):
    """Lowest common multiple of |x1| and |x2|, elementwise (integers; 0 if either is 0)."""
    a, b = _int_pair("lcm", x1, x2)
    g = _gcd(a, b)
    zero = lax.eq(g, np.zeros((), g.dtype))
    safe = lax.select_n(zero, g, lax.full(g.shape, 1, g.dtype))
    return lax.select_n(zero, _abs(lax.mul(lax.div(a, safe), b)), lax.full(g.shape, 0, g.dtype))


def _scale2(x, e):
    """x * 2**-e exactly (in two steps, so that no power of two over- or underflows)."""
    h = lax.div(e, np.array(2, e.dtype))
    for k in (h, lax.sub(e, h)):
        x = lax.mul(x, lax.exp2(convert(lax.neg(k), x.dtype)))
    return x


def frexp(x, /):
    """(mantissa, exponent) with x = mantissa * 2**exponent and 0.5 <= |mantissa| < 1."""
    x = _inexact_arr(x)
    one = lax.full(x.shape, 1, x.dtype)
    ok = lax.bitwise_and(lax.is_finite(x), lax.ne(x, np.zeros((), x.dtype)))
    xs = lax.select_n(ok, one, x)
    e = lax.add(lax.floor(lax.div(lax.log(lax.abs(xs)), np.array(math.log(2), x.dtype))), one)
    e = lax.convert_element_type(e, np.int32)
    for _ in range(2):  # the float log2 can be one off near powers of two: fix it up exactly
        am = lax.abs(_scale2(xs, e))
        up = lax.ge(am, np.ones((), x.dtype))
        down = lax.lt(am, np.array(0.5, x.dtype))
        e = lax.add(e, lax.sub(convert(up, np.int32), convert(down, np.int32)))
    m = _scale2(xs, e)
    return lax.select_n(ok, x, m), lax.select_n(ok, lax.full(x.shape, 0, np.int32), e)


def spacing(x, /):
    """The distance from x to the next float away from zero (the ulp), keeping x's sign."""
    x = _inexact_arr(x)
    toward = lax.select_n(lax.lt(x, np.zeros((), x.dtype)), lax.full(x.shape, np.inf, x.dtype),
                          lax.full(x.shape, -np.inf, x.dtype))
    return lax.sub(lax.nextafter(x, toward), x)


_I0A = [  # Cephes' Chebyshev coefficients, as NumPy's i0
    -4.4153416464793395e-18, 3.3307945188222384e-17, -2.431279846547955e-16,
    1.715391285555133e-15, -1.1685332877993451e-14, 7.676185498604936e-14,
    -4.856446783111929e-13, 2.95505266312964e-12, -1.726826291441556e-11,
    9.675809035373237e-11, -5.189795601635263e-10, 2.6598237246823866e-09,
    -1.300025009986248e-08, 6.046995022541919e-08, -2.670793853940612e-07,
    1.1173875391201037e-06, -4.4167383584587505e-06, 1.6448448070728896e-05,
    -5.754195010082104e-05, 0.00018850288509584165, -0.0005763755745385824,
    0.0016394756169413357, -0.004324309995050576, 0.010546460394594998, -0.02373741480589947,
    0.04930528423967071, -0.09490109704804764, 0.17162090152220877, -0.3046826723431984,
    0.6767952744094761,
]
_I0B = [  # Cephes' Chebyshev coefficients, as NumPy's i0
    -7.233180487874754e-18, -4.830504485944182e-18, 4.46562142029676e-17,
    3.461222867697461e-17, -2.8276239805165836e-16, -3.425485619677219e-16,
    1.7725601330565263e-15, 3.8116806693526224e-15, -9.554846698828307e-15,
    -4.150569347287222e-14, 1.54008621752141e-14, 3.8527783827421426e-13,
    7.180124451383666e-13, -1.7941785315068062e-12, -1.3215811840447713e-11,
    -3.1499165279632416e-11, 1.1889147107846439e-11, 4.94060238822497e-10,
    3.3962320257083865e-09, 2.266668990498178e-08, 2.0489185894690638e-07,
    2.8913705208347567e-06, 6.889758346916825e-05, 0.0033691164782556943, 0.8044904110141088,
]


def _chbevl(x, coefs):
    b0, b1, b2 = lax.full(x.shape, coefs[0], x.dtype), lax.full(x.shape, 0, x.dtype), None
    for c in coefs[1:]:
        b2, b1 = b1, b0
        b0 = lax.add(lax.sub(lax.mul(x, b1), b2), np.array(c, x.dtype))
    return lax.mul(lax.sub(b0, b2), np.array(0.5, x.dtype))


def i0(x):
    """The modified Bessel function of the first kind, order 0 (NumPy's Chebyshev series)."""
    x = asarray(x)
    if x.dtype.kind == "c":
        raise TypeError("i0 not supported for complex values")
    x = _abs(_inexact_arr(x))
    c = lambda v: np.array(v, x.dtype)
    small = lax.le(x, c(8.0))
    xs = lax.select_n(small, lax.full(x.shape, 8.0, x.dtype), x)  # each branch sees safe values
    xl = lax.select_n(small, x, lax.full(x.shape, 9.0, x.dtype))
    f_small = lax.mul(lax.exp(xs), _chbevl(lax.sub(lax.div(xs, c(2.0)), c(2.0)), _I0A))
    f_large = lax.div(lax.mul(lax.exp(xl), _chbevl(lax.sub(lax.div(c(32.0), xl), c(2.0)), _I0B)),
                      lax.sqrt(xl))
    return lax.select_n(small, f_large, f_small)


def iscomplex(x):
    """Elementwise: whether the imaginary part is nonzero (always False for real dtypes)."""
    x = asarray(x)
    if x.dtype.kind == "c":
        im = lax.imag(x)
        return lax.ne(im, np.zeros((), im.dtype))
    return lax.full(x.shape, False, np.bool_)


def isreal(x):
    """Elementwise: whether the imaginary part is zero (always True for real dtypes)."""
    x = asarray(x)
    if x.dtype.kind == "c":
        im = lax.imag(x)
        return lax.eq(im, np.zeros((), im.dtype))
    return lax.full(x.shape, True, np.bool_)


def iscomplexobj(x):
    """Whether x has a complex dtype (a Python bool)."""
    dt = getattr(x, "dtype", None)
    if not isinstance(dt, np.dtype):
        dt = np.asarray(x).dtype
    return builtins.bool(dt.kind == "c")


def isrealobj(x):
    """Whether x does not have a complex dtype (a Python bool)."""
    return not iscomplexobj(x)


def iterable(y):
    """Whether y can be iterated over (0-d arrays cannot)."""
    try:
        iter(y)
    except TypeError:
        return False
    return True
