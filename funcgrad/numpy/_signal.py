"""Functions of sampled signals: convolve and correlate (1-D, modes full/same/valid), interp
(piecewise-linear interpolation), the window functions (bartlett, blackman, hamming, hanning,
kaiser) and unwrap (phase unwrapping).
"""

from __future__ import annotations

import builtins
import math
import operator

import numpy as np

from .. import lax
from ..core import Tracer, user_line
from ._arithmetic import abs as _abs
from ._arithmetic import add, multiply, remainder, subtract, true_divide
from ._arithmetic import clip as _clip
from ._core import asarray, broadcast_to, canonical_axis, convert, is_array, result_type
from ._float_functions import cos
from ._indexing import concrete_value, is_concrete
from ._logic import equal, where
from ._number_utils import i0
from ._products import matmul
from ._reductions import cumsum, diff
from ._shape import concatenate, take_static
from ._sorting import searchsorted
from ._take import take

__all__ = [
    "convolve", "correlate", "interp", "bartlett", "blackman", "hamming", "hanning", "kaiser",
    "unwrap",
]


def _static_int(x, what):
    if type(x) is Tracer:
        x = concrete_value(x, what)
    return operator.index(np.asarray(x).item()) if np.ndim(x) == 0 else operator.index(x)


# ---------------------------------------------------------------------------------------------
# Convolution, interpolation

def _xcorr(x, y, pad_lo, pad_hi):
    """Valid cross-correlation of the zero-padded 1-D x with y: out[k] = sum_j xpad[k+j] y[j]."""
    if pad_lo or pad_hi:
        x = lax.pad(x, np.zeros((), x.dtype), [(pad_lo, pad_hi, 0)])
    n, m = x.shape[0], y.shape[0]
    windows = np.arange(n - m + 1)[:, None] + np.arange(m)[None, :]
    return matmul(lax.gather(x, windows[..., None]), y)


def _conv(a, v, mode, name):
    dt = result_type(a, v)
    x, y = convert(asarray(a), dt), convert(asarray(v), dt)
    if x.ndim != 1 or y.ndim != 1:
        raise ValueError(f"{name}() only supports 1-dimensional inputs, got shapes "
                         f"{tuple(x.shape)} and {tuple(y.shape)}{user_line()}.")
    if x.shape[0] == 0:
        raise ValueError("a cannot be empty")
    if y.shape[0] == 0:
        raise ValueError("v cannot be empty")
    reverse_out = False
    if name == "correlate":
        if x.shape[0] < y.shape[0]:
            x, y, reverse_out = y, x, True
    else:
        if x.shape[0] < y.shape[0]:
            x, y = y, x
        y = lax.rev(y, (0,))
    m = y.shape[0]
    pads = {"valid": (0, 0), "same": (m // 2, m - m // 2 - 1), "full": (m - 1, m - 1)}
    if mode not in pads:
        raise ValueError(f"mode must be one of 'valid', 'same' or 'full', got {mode!r}")
    out = _xcorr(x, y, *pads[mode])
    return lax.rev(out, (0,)) if reverse_out else out


def convolve(a, v, mode="full"):
    """Discrete linear convolution of two 1-D sequences (modes full, same, valid)."""
    return _conv(a, v, mode, "convolve")


def correlate(a, v, mode="valid"):
    """Cross-correlation of two 1-D sequences: c[k] = sum_n a[n+k] conj(v[n]) (modes
    valid/same/full), as NumPy (v is conjugated when complex)."""
    v = asarray(v)
    return _conv(a, lax.conj(v) if v.dtype.kind == "c" else v, mode, "correlate")


def interp(x, xp, fp, left=None, right=None, period=None):
    """Piecewise-linear interpolation of (xp, fp) at x, in float64 as NumPy (differentiable)."""
    dt = np.dtype(np.float64)
    x, xp, fp = convert(asarray(x), dt), convert(asarray(xp), dt), convert(asarray(fp), dt)
    if xp.ndim != 1 or fp.ndim != 1:
        raise ValueError("Data points must be 1-D sequences")
    if xp.shape[0] != fp.shape[0]:
        raise ValueError("fp and xp are not of the same length")
    if xp.shape[0] == 0:
        raise ValueError("array of sample points is empty")
    if period is not None:
        if is_concrete(period) and float(np.asarray(period)) == 0:
            raise ValueError("period must be a non-zero value")
        period = _abs(asarray(period, dt))
        x = remainder(x, period)
        xp = remainder(xp, period)
        xp, fp = lax.sort(xp, fp, dimension=0)
        xp = concatenate([subtract(xp[-1:], period), xp, add(xp[:1], period)])
        fp = concatenate([fp[-1:], fp, fp[:1]])
        left = right = None
    n = xp.shape[0]
    if n == 1:
        out = broadcast_to(fp[0], x.shape)
    else:
        i = _clip(searchsorted(xp, x, side="right"), 1, n - 1)
        x0, x1 = take(xp, i - 1), take(xp, i)
        f0, f1 = take(fp, i - 1), take(fp, i)
        dx = subtract(x1, x0)
        flat = _abs(dx) <= np.spacing(np.finfo(dt).eps)  # no nan gradients at repeated xp
        slope = true_divide(subtract(f1, f0), where(flat, 1.0, dx))
        out = where(flat, f0, add(f0, multiply(subtract(x, x0), slope)))
    if period is None:
        out = where(x < xp[0], fp[0] if left is None else asarray(left, dt), out)
        out = where(x > xp[-1], fp[-1] if right is None else asarray(right, dt), out)
    return convert(asarray(out), dt)


# ---------------------------------------------------------------------------------------------
# Window functions (M static; the window is a constant, kaiser's beta may be traced)

def _window_n(M):
    M = _static_int(M, "the window length")
    if M < 1:
        return M, None
    return M, np.arange(1 - M, M, 2)


def _cosine_window(name, coefs):
    def f(M):
        M, n = _window_n(M)
        if n is None:
            return np.array([], np.float64)
        if M == 1:
            return np.ones(1, np.float64)
        out = coefs[0]
        for k, a in enumerate(coefs[1:], 1):
            out = add(out, multiply(a, cos(true_divide(multiply(k * math.pi, n), M - 1))))
        return out
    f.__name__ = f.__qualname__ = name
    f.__doc__ = f"The {name} window of M points (float64)."
    return f


hamming = _cosine_window("hamming", (0.54, 0.46))
hanning = _cosine_window("hanning", (0.5, 0.5))
blackman = _cosine_window("blackman", (0.42, 0.5, 0.08))


def bartlett(M):
    """The Bartlett (triangular) window of M points (float64)."""
    M, n = _window_n(M)
    if n is None:
        return np.array([], np.float64)
    if M == 1:
        return np.ones(1, np.float64)
    r = true_divide(n, M - 1)
    return where(n <= 0, add(1, r), subtract(1, r))


def kaiser(M, beta):
    """The Kaiser window of M points with shape parameter beta (float64; differentiable in beta)."""
    M = _static_int(M, "the window length")
    if M < 1:
        return np.array([], np.float64)
    if M == 1:
        return np.ones(1, np.float64)
    beta = convert(asarray(beta), np.dtype(np.float64))
    n = np.arange(0, M)
    alpha = (M - 1) / 2.0
    r = np.sqrt(1 - ((n - alpha) / alpha) ** 2.0)
    return true_divide(i0(multiply(beta, r)), i0(beta))


# ---------------------------------------------------------------------------------------------
# unwrap

def unwrap(p, discont=None, axis=-1, *, period=2 * math.pi):
    """p with jumps larger than discont (default period/2) along axis replaced by their
    complement modulo period (phase unwrapping)."""
    p = asarray(p)
    ax = canonical_axis(axis, p.ndim)
    dd = diff(p, axis=ax)
    if discont is None:
        discont = period / 2
    dt = result_type(dd, period)
    if dt.kind in "iu":
        interval_high, rem = builtins.divmod(period, 2)
        boundary_ambiguous = rem == 0
    else:
        interval_high = period / 2
        boundary_ambiguous = True
    interval_low = -interval_high
    ddmod = add(remainder(subtract(dd, interval_low), period), interval_low)
    if boundary_ambiguous:
        ddmod = where(lax.bitwise_and(equal(ddmod, interval_low), dd > 0),
                      asarray(interval_high, ddmod.dtype) if not is_array(interval_high)
                      else interval_high, ddmod)
    correct = subtract(ddmod, dd)
    correct = where(_abs(dd) < discont, np.zeros((), correct.dtype), correct)
    up = convert(p, dt)
    rest = add(take_static(p, np.arange(1, p.shape[ax]), ax), cumsum(correct, axis=ax))
    return concatenate([take_static(up, np.arange(1), ax), convert(rest, dt)], axis=ax)
