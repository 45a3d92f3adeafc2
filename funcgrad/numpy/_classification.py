"""Classification of values: isnan, isfinite, isinf, isposinf, isneginf; nan_to_num."""

from __future__ import annotations

import numpy as np

from .. import lax
from ._core import asarray, const_like


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
    return lax.eq(lax.abs(x), const_like(np.inf, x))


def isposinf(x, /):
    """True where x is +inf."""
    x = asarray(x)
    return lax.eq(x, const_like(np.inf, x)) if x.dtype.kind == "f" else lax.ne(x, x)


def isneginf(x, /):
    """True where x is -inf."""
    x = asarray(x)
    return lax.eq(x, const_like(-np.inf, x)) if x.dtype.kind == "f" else lax.ne(x, x)


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
    out = lax.select_n(lax.eq(x, const_like(np.inf, x)), out, full(big))
    return lax.select_n(lax.eq(x, const_like(-np.inf, x)), out, full(small))


__all__ = [n for n, v in list(globals().items())
           if not n.startswith("_") and callable(v) and getattr(v, "__module__", "") == __name__]
__all__ = sorted(set(__all__) - {"annotations"})
