"""Complex numbers: real, imag, conj, angle."""

from __future__ import annotations

import math

import numpy as np

from .. import lax
from ._core import as_inexact, asarray, broadcast_pair, const_like, convert


def real(val, /):
    """The real part (real arrays are returned unchanged)."""
    x = asarray(val)
    return lax.real(x) if x.dtype.kind == "c" else x


def imag(val, /):
    """The imaginary part (zeros for real arrays)."""
    x = asarray(val)
    return lax.imag(x) if x.dtype.kind == "c" else lax.full(x.shape, 0, x.dtype)


def conj(x, /):
    """The complex conjugate (real arrays are returned unchanged; booleans become int8, as in
    NumPy)."""
    x = asarray(x)
    if x.dtype.kind == "c":
        return lax.conj(x)
    return convert(x, np.int8) if x.dtype.kind == "b" else x


conjugate = conj


def angle(z, deg=False):
    """The argument of z in (-pi, pi] (degrees with deg=True): arctan2(imag(z), real(z))."""
    x = as_inexact(z)
    if x.dtype.kind == "c":
        re, im = lax.real(x), lax.imag(x)
    else:
        re, im = x, lax.full(x.shape, 0, x.dtype)
    a = lax.atan2(im, re)
    return lax.mul(a, const_like(180 / math.pi, a)) if deg else a


# ---------------------------------------------------------------------------------------------
# Ordering: NumPy (and JAX) order complex numbers lexicographically, by the real part and then
# the imaginary part.

def lexicographic(compare, x, y):
    """compare (lax.lt, le, gt or ge) of complex x and y, lexicographically (False with a nan)."""
    rx, ry = lax.real(x), lax.real(y)
    return lax.select_n(lax.eq(rx, ry), compare(rx, ry), compare(lax.imag(x), lax.imag(y)))


def extremum(x, y, largest):
    """NumPy's maximum (largest) or minimum of complex x and y: lexicographic, and a nan (in
    either part) wins, x's first."""
    x, y, _ = broadcast_pair(x, y)
    keep_x = lexicographic(lax.ge if largest else lax.le, x, y)
    keep_x = lax.bitwise_or(keep_x, lax.ne(x, x))
    keep_x = lax.bitwise_and(keep_x, lax.bitwise_not(lax.bitwise_and(lax.ne(y, y),
                                                                       lax.eq(x, x))))
    return lax.select_n(keep_x, y, x)


__all__ = [n for n, v in list(globals().items())
           if not n.startswith("_") and callable(v) and getattr(v, "__module__", "") == __name__]
__all__ += ["conjugate"]
__all__ = [n for n in __all__ if n not in ("lexicographic", "extremum")]
__all__ = sorted(set(__all__) - {"annotations"})
