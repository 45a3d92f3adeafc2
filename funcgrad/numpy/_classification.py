"""Classification of values: isnan, isfinite, isinf, isposinf, isneginf; nan_to_num."""

from __future__ import annotations

import numpy as np

from .. import lax
from ..core import user_line
from ..core.avals import dtype_kind
from ._core import asarray, const_like


def isnan(x, /):
    """x != x: True where x is nan."""
    x = asarray(x)
    return lax.ne(x, x)


def isfinite(x, /):
    """True where x is neither inf nor nan (always True for integers); for complex x, where
    both parts are finite."""
    x = asarray(x)
    if dtype_kind(x.dtype) == "c":
        return lax.bitwise_and(lax.is_finite(lax.real(x)), lax.is_finite(lax.imag(x)))
    return lax.is_finite(x) if dtype_kind(x.dtype) == "f" else lax.eq(x, x)


def isinf(x, /):
    """True where x is +inf or -inf; for complex x, where either part is."""
    x = asarray(x)
    if dtype_kind(x.dtype) == "c":
        return lax.bitwise_or(isinf(lax.real(x)), isinf(lax.imag(x)))
    if dtype_kind(x.dtype) != "f":
        return lax.ne(x, x)
    return lax.eq(lax.abs(x), const_like(np.inf, x))


def _no_complex(name, x):
    if x.dtype.kind == "c":
        raise TypeError(f"{name} is not supported for complex values because it would be "
                        f"ambiguous (as in NumPy){user_line()}; apply it to fnp.real(x) or "
                        "fnp.imag(x).")


def isposinf(x, /):
    """True where x is +inf."""
    x = asarray(x)
    _no_complex("isposinf", x)
    return lax.eq(x, const_like(np.inf, x)) if dtype_kind(x.dtype) == "f" else lax.ne(x, x)


def isneginf(x, /):
    """True where x is -inf."""
    x = asarray(x)
    _no_complex("isneginf", x)
    return lax.eq(x, const_like(-np.inf, x)) if dtype_kind(x.dtype) == "f" else lax.ne(x, x)


def nan_to_num(x, copy=True, nan=0.0, posinf=None, neginf=None):
    """Replace nan by `nan`, +inf by `posinf` and -inf by `neginf` (default: the dtype's
    extremes). Complex x has both parts replaced."""
    x = asarray(x)
    if dtype_kind(x.dtype) == "c":
        return lax.complex(*(nan_to_num(part, copy, nan, posinf, neginf)
                             for part in (lax.real(x), lax.imag(x))))
    if dtype_kind(x.dtype) != "f":
        return x
    info = np.finfo(x.dtype)
    big = info.max if posinf is None else posinf
    small = info.min if neginf is None else neginf
    full = lambda v: lax.full(x.shape, v, x.dtype)
    out = lax.select_n(lax.ne(x, x), x, full(nan))
    out = lax.select_n(lax.eq(x, const_like(np.inf, x)), out, full(big))
    return lax.select_n(lax.eq(x, const_like(-np.inf, x)), out, full(small))


__all__ = [n for n, v in list(globals().items())
           if not n.startswith("_") and callable(v) and getattr(v, "__module__", "") == __name__]
__all__ = sorted(set(__all__) - {"annotations"})
