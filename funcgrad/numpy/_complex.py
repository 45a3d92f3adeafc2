"""Complex numbers: real, imag, conj, angle."""

from __future__ import annotations

import math

import numpy as np

from .. import lax
from ..core import user_line
from ._core import as_inexact, asarray, const_like, convert


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
    x = as_inexact(z)
    _real_only("angle", x)
    a = lax.select_n(lax.lt(x, const_like(0, x)), lax.full(x.shape, 0, x.dtype),
                     lax.full(x.shape, 180.0 if deg else math.pi, x.dtype))
    return a


def _real_only(name, x):
    if x.dtype.kind == "c":
        raise NotImplementedError(f"{name} of a complex array is not supported yet (lax has no "
                                  f"real/imag/complex primitives){user_line()}.")


__all__ = [n for n, v in list(globals().items())
           if not n.startswith("_") and callable(v) and getattr(v, "__module__", "") == __name__]
__all__ += ["conjugate"]
__all__ = sorted(set(__all__) - {"annotations"})
