"""Elementwise functions of jax.lax composed from the elementwise primitives (no rules of their
own, so grad, jvp, vmap and jit come from those primitives): full_like, select, square, clamp
and erfc (Cody's approximations, written with primitives).
"""

from __future__ import annotations

import numpy as np

from ..core import Tracer
from ..core.avals import dtype_kind
from . import _erf
from . import elementwise as ew
from ._util import const_like, to_operand
from .structural import broadcast_in_dim

__all__ = ["full_like", "select", "square", "clamp", "erfc"]


def as_dtype(x, dtype):
    """A scalar or array operand in `dtype`: Python/NumPy values are converted on the host."""
    if isinstance(x, Tracer) or hasattr(x, "shape") and not isinstance(x, np.generic):
        return ew.convert_element_type(x, dtype)
    return np.asarray(x, dtype)


def full_like(x, fill_value, dtype=None, shape=None):
    """An array of `shape` (default x's) filled with `fill_value`, in `dtype` (default x's)."""
    x = to_operand(x)
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
    return ew.select_n(to_operand(pred), to_operand(on_false), to_operand(on_true))


def square(x):
    """x * x, elementwise."""
    x = to_operand(x)
    return ew.mul(x, x)


def clamp(min, x, max):  # noqa: A002 (lax's argument names)
    """min where x < min, max where x > max, x otherwise; min and max are scalars or of x's
    shape. The derivative follows JAX: to x where min < x < max, to min where x < min < max,
    to max where x > max, and zero at ties."""
    x = to_operand(x)
    lo, hi = as_dtype(min, x.dtype), as_dtype(max, x.dtype)
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
    acc = const_like(coeffs[-1], w)
    for c in reversed(coeffs[:-1]):
        acc = ew.add(ew.mul(acc, w), const_like(c, w))
    return acc


def _clip(a, lo, hi):
    """a limited to [lo, hi] by selects (derivative 1 inside and at the ends; NaN stays)."""
    return ew.select_n(ew.lt(a, lo), ew.select_n(ew.gt(a, hi), a, hi), lo)


def _exp_neg_sq(a):
    """exp(-a^2) without the relative error of rounding a^2 (Cody's splitting, as lax.erf)."""
    h = ew.div(ew.floor(ew.mul(a, const_like(16, a))), const_like(16, a))
    return ew.mul(ew.exp(ew.neg(ew.mul(h, h))),
                  ew.exp(ew.neg(ew.mul(ew.sub(a, h), ew.add(a, h)))))


def erfc(x):
    """1 - erf(x), accurate relatively in the right tail (Cody's erfc approximations, written
    with primitives: 1 - erf(x) for |x| <= 0.5, exp(-x^2) times a rational function beyond)."""
    x = to_operand(x)
    if dtype_kind(x.dtype) != "f":
        raise TypeError(f"erfc needs a floating operand, got {x.dtype}")
    a = ew.abs(x)
    one = const_like(1, x)
    # Each branch sees its argument clipped into its own range (no overflow, no 0/0, and no
    # NaN in the derivative of a branch that is not taken).
    m = _clip(a, const_like(0.5, x), const_like(4.0, x))
    num, den = ew.mul(const_like(_erf.MID_NUM[8], x), m), m
    for i in range(7):
        num = ew.mul(ew.add(num, const_like(_erf.MID_NUM[i], x)), m)
        den = ew.mul(ew.add(den, const_like(_erf.MID_DEN[i], x)), m)
    mid = ew.mul(_exp_neg_sq(m), ew.div(ew.add(num, const_like(_erf.MID_NUM[7], x)),
                                        ew.add(den, const_like(_erf.MID_DEN[7], x))))
    t = _clip(a, const_like(4.0, x), const_like(30.0, x))
    z = ew.div(one, ew.mul(t, t))
    num, den = ew.mul(const_like(_erf.TAIL_NUM[5], x), z), z
    for i in range(4):
        num = ew.mul(ew.add(num, const_like(_erf.TAIL_NUM[i], x)), z)
        den = ew.mul(ew.add(den, const_like(_erf.TAIL_DEN[i], x)), z)
    ratio = ew.div(ew.add(num, const_like(_erf.TAIL_NUM[4], x)),
                   ew.add(den, const_like(_erf.TAIL_DEN[4], x)))
    tail = ew.div(ew.mul(_exp_neg_sq(t), ew.sub(const_like(_erf.RSQRT_PI, x), ew.mul(z, ratio))), t)
    big = ew.select_n(ew.le(a, const_like(4.0, x)), tail, mid)  # erfc(|x|) for |x| > 0.5
    big = ew.select_n(ew.lt(x, const_like(0, x)), big, ew.sub(const_like(2, x), big))
    small = ew.sub(one, ew.erf(ew.select_n(ew.le(a, const_like(0.5, x)), const_like(0, x), x)))
    return ew.select_n(ew.le(a, const_like(0.5, x)), big, small)
