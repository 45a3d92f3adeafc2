"""Elementwise functions of jax.lax composed from the elementwise primitives (no rules of their
own, so grad, jvp, vmap and jit come from those primitives): full_like, select, square, clamp
and erfc (Cody's approximations, written with primitives).
"""

from __future__ import annotations

import numpy as np

from ..core import Tracer
from . import _erf
from . import elementwise as ew
from ._util import _arr, _const
from .structural import broadcast_in_dim

__all__ = ["full_like", "select", "square", "clamp", "erfc"]


def _as_dtype(x, dtype):
    """A scalar or array operand in `dtype`: Python/NumPy values are converted on the host."""
    if isinstance(x, Tracer) or hasattr(x, "shape") and not isinstance(x, np.generic):
        return ew.convert_element_type(x, dtype)
    return np.asarray(x, dtype)


def full_like(x, fill_value, dtype=None, shape=None):
    """An array of `shape` (default x's) filled with `fill_value`, in `dtype` (default x's)."""
    x = _arr(x)
    dtype = x.dtype if dtype is None else np.dtype(dtype)
    if shape is None:
        shape = tuple(x.shape)
    else:
        shape = (int(shape),) if np.ndim(shape) == 0 else tuple(int(s) for s in shape)
    if isinstance(fill_value, Tracer):
        if fill_value.shape != ():
            raise ValueError("full_like: fill_value must be a scalar")
        return broadcast_in_dim(ew.convert_element_type(fill_value, dtype), shape, ())
    return ew.full(shape, fill_value, dtype)


def select(pred, on_true, on_false):
    """on_true where pred, else on_false (pred a bool scalar or of the cases' shape)."""
    return ew.select_n(_arr(pred), _arr(on_false), _arr(on_true))


def square(x):
    """x * x, elementwise."""
    x = _arr(x)
    return ew.mul(x, x)


def clamp(min, x, max):  # noqa: A002 (lax's argument names)
    """min where x < min, max where x > max, x otherwise; min and max are scalars or of x's
    shape. The derivative follows JAX: to x where min < x < max, to min where x < min < max,
    to max where x > max, and zero at ties."""
    x = _arr(x)
    lo, hi = _as_dtype(min, x.dtype), _as_dtype(max, x.dtype)
    for name, bound in (("min", lo), ("max", hi)):
        if bound.shape not in ((), tuple(x.shape)):
            raise TypeError(f"clamp: {name} must be a scalar or of x's shape "
                            f"{tuple(x.shape)}, got shape {tuple(bound.shape)}")
    value = ew.stop_gradient(ew.min(ew.max(x, lo), hi))
    out = ew.select_n(ew.bitwise_and(ew.gt(lo, x), ew.lt(lo, hi)), value, lo)
    out = ew.select_n(ew.bitwise_and(ew.gt(x, lo), ew.lt(x, hi)), out, x)
    out = ew.select_n(ew.lt(hi, x), out, hi)
    return out


def _poly(w, coeffs):
    """coeffs[0] + w (coeffs[1] + w (...)), Horner's rule with constants of w's dtype."""
    acc = _const(coeffs[-1], w)
    for c in reversed(coeffs[:-1]):
        acc = ew.add(ew.mul(acc, w), _const(c, w))
    return acc


def _clip(a, lo, hi):
    """a limited to [lo, hi] by selects (derivative 1 inside and at the ends; NaN stays)."""
    return ew.select_n(ew.lt(a, lo), ew.select_n(ew.gt(a, hi), a, hi), lo)


def _exp_neg_sq(a):
    """exp(-a^2) without the relative error of rounding a^2 (Cody's splitting, as lax.erf)."""
    h = ew.div(ew.floor(ew.mul(a, _const(16, a))), _const(16, a))
    return ew.mul(ew.exp(ew.neg(ew.mul(h, h))),
                  ew.exp(ew.neg(ew.mul(ew.sub(a, h), ew.add(a, h)))))


def erfc(x):
    """1 - erf(x), accurate relatively in the right tail (Cody's erfc approximations, written
    with primitives: 1 - erf(x) for |x| <= 0.5, exp(-x^2) times a rational function beyond)."""
    x = _arr(x)
    if x.dtype.kind != "f":
        raise TypeError(f"erfc needs a floating operand, got {x.dtype}")
    a = ew.abs(x)
    one = _const(1, x)
    # Each branch sees its argument clipped into its own range (no overflow, no 0/0, and no
    # NaN in the derivative of a branch that is not taken).
    m = _clip(a, _const(0.5, x), _const(4.0, x))
    num, den = ew.mul(_const(_erf._C[8], x), m), m
    for i in range(7):
        num = ew.mul(ew.add(num, _const(_erf._C[i], x)), m)
        den = ew.mul(ew.add(den, _const(_erf._D[i], x)), m)
    mid = ew.mul(_exp_neg_sq(m), ew.div(ew.add(num, _const(_erf._C[7], x)),
                                        ew.add(den, _const(_erf._D[7], x))))
    t = _clip(a, _const(4.0, x), _const(30.0, x))
    z = ew.div(one, ew.mul(t, t))
    num, den = ew.mul(_const(_erf._P[5], x), z), z
    for i in range(4):
        num = ew.mul(ew.add(num, _const(_erf._P[i], x)), z)
        den = ew.mul(ew.add(den, _const(_erf._Q[i], x)), z)
    ratio = ew.div(ew.add(num, _const(_erf._P[4], x)), ew.add(den, _const(_erf._Q[4], x)))
    tail = ew.div(ew.mul(_exp_neg_sq(t), ew.sub(_const(_erf._RSQRT_PI, x), ew.mul(z, ratio))), t)
    big = ew.select_n(ew.le(a, _const(4.0, x)), tail, mid)  # erfc(|x|) for |x| > 0.5
    big = ew.select_n(ew.lt(x, _const(0, x)), big, ew.sub(_const(2, x), big))
    small = ew.sub(one, ew.erf(ew.select_n(ew.le(a, _const(0.5, x)), _const(0, x), x)))
    return ew.select_n(ew.le(a, _const(0.5, x)), big, small)
