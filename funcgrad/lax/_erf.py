"""erf and its inverse written with array-namespace (`xp`) calls only: NumPy has no erf, and the
same code runs on CuPy. No per-element Python loops, no SciPy.

erf: W. J. Cody's rational Chebyshev approximations ("Rational Chebyshev approximations for the
error function", Math. Comp. 23 (1969); the coefficients of his CALERF routine), accurate to
about 1 ulp in float64:
  |x| <= 0.5      erf(x)  = x P1(x^2) / Q1(x^2)
  0.5 < |x| <= 4  erfc(x) = exp(-x^2) P2(x) / Q2(x)
  |x| > 4         erfc(x) = exp(-x^2) / x (1/sqrt(pi) + R(1/x^2) / x^2)
with exp(-x^2) computed as exp(-h^2) exp(-(x-h)(x+h)), h = x rounded down to 1/16, so that the
rounding of x^2 does not cost relative accuracy in the tails.

erf_inv: M. Giles' single-precision approximation ("Approximating the erfinv function", GPU
Computing Gems, 2011) as a starting point (and, within 5e-8 of +-1 in float64, where that
would be extrapolated, the asymptotic series of erfc), refined by Halley steps on erf(y) = |x| where
|x| <= 0.5 and by Newton steps on log(erfc(y)) = log(1 - |x|) elsewhere (1 - |x| is exact there,
and erfc is accurate relatively, so the inverse stays accurate up to +-1).

Float32 inputs are computed in float32 (Python-float coefficients are weak, NEP 50); float16 in
float32. The output dtype is the input dtype.
"""

from __future__ import annotations

import math

import numpy as np

from ..core import is_small_float
from ._util import astype, dtype_of

_A = (3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02,
      3.20937758913846947e03, 1.85777706184603153e-1)
_B = (2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03,
      2.84423683343917062e03)
MID_NUM = (5.64188496988670089e-1, 8.88314979438837594e00, 6.61191906371416295e01,
      2.98635138197400131e02, 8.81952221241769090e02, 1.71204761263407058e03,
      2.05107837782607147e03, 1.23033935479799725e03, 2.15311535474403846e-8)
MID_DEN = (1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02,
      1.62138957456669019e03, 3.29079923573345963e03, 4.36261909014324716e03,
      3.43936767414372164e03, 1.23033935480374942e03)
TAIL_NUM = (3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1,
      1.60837851487422766e-2, 6.58749161529837803e-4, 1.63153871373020978e-2)
TAIL_DEN = (2.56852019228982242e00, 1.87295284992346725e00, 5.27905102951428412e-1,
      6.05183413124413191e-2, 2.33520497626869185e-3)
RSQRT_PI = 1 / math.sqrt(math.pi)
_TWO_RSQRT_PI = 2 / math.sqrt(math.pi)
_SQRT_PI = math.sqrt(math.pi)


def _working(xp, x):
    """x as an array in the dtype the computation runs in (float16 is widened to float32)."""
    x = xp.asarray(x)
    return astype(xp, x, np.float32) if is_small_float(dtype_of(x)) else x


def _exp_neg_sq(xp, a):
    """exp(-a^2) without the relative error of rounding a^2 (Cody's splitting)."""
    h = xp.floor(a * 16) / 16
    return xp.exp(-h * h) * xp.exp(-(a - h) * (a + h))


def _erf_erfc(xp, a):
    """(erf(a), erfc(a)) for a >= 0 (NaN passes through); the smaller of the two is accurate
    relatively, the other absolutely."""
    # Each branch sees its argument clipped into its own range, so no branch divides by zero or
    # overflows on the elements it does not own.
    s = xp.minimum(a, 0.5)
    s2 = s * s
    num, den = _A[4] * s2, s2
    for i in range(3):
        num, den = (num + _A[i]) * s2, (den + _B[i]) * s2
    erf_small = s * (num + _A[3]) / (den + _B[3])

    m = xp.clip(a, 0.5, 4.0)
    num, den = MID_NUM[8] * m, m
    for i in range(7):
        num, den = (num + MID_NUM[i]) * m, (den + MID_DEN[i]) * m
    erfc_mid = _exp_neg_sq(xp, m) * ((num + MID_NUM[7]) / (den + MID_DEN[7]))

    t = xp.clip(a, 4.0, 30.0)  # erfc(30) underflows to 0 in float64 and float32
    z = 1 / (t * t)
    num, den = TAIL_NUM[5] * z, z
    for i in range(4):
        num, den = (num + TAIL_NUM[i]) * z, (den + TAIL_DEN[i]) * z
    ratio = (num + TAIL_NUM[4]) / (den + TAIL_DEN[4])
    erfc_tail = _exp_neg_sq(xp, t) * ((RSQRT_PI - z * ratio) / t)

    erfc_big = xp.where(a <= 4.0, erfc_mid, erfc_tail)
    small = a <= 0.5
    erf_a = xp.where(small, erf_small, 1 - erfc_big)
    erfc_a = xp.where(small, 1 - erf_small, erfc_big)
    nan = xp.isnan(a)
    return xp.where(nan, a, erf_a), xp.where(nan, a, erfc_a)


def erf(xp, x):
    """The error function, elementwise, in x's dtype."""
    w = _working(xp, x)
    erf_a, _ = _erf_erfc(xp, xp.abs(w))
    return astype(xp, xp.copysign(erf_a, w), dtype_of(xp.asarray(x)), copy=False)


def _giles(xp, a):
    """Giles' single-precision erfinv(a) for 0 <= a < 1 (relative error ~ 4e-7 in its range)."""
    w = -xp.log((1 - a) * (1 + a))
    u = w - 2.5
    p = 2.81022636e-08
    for c in (3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087, -0.00125372503,
              -0.00417768164, 0.246640727, 1.50140941):
        p = c + p * u
    v = xp.sqrt(w) - 3
    q = -0.000200214257
    for c in (0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773, -0.0076224613,
              0.00943887047, 1.00167406, 2.83297682):
        q = c + q * v
    return xp.where(w < 5, p, q) * a


def _tail_guess(xp, c):
    """erfc^-1(c) for tiny c > 0 from the asymptotic series of erfc (relative error < 1e-4):
    y^2 = L - log(sqrt(pi) y) + log(1 - 1/(2y^2) + 3/(4y^4)), L = -log(c), iterated twice."""
    big_l = -xp.log(xp.where(c < 5e-8, c, 5e-8))
    y = xp.sqrt(big_l)
    for _ in range(2):
        inv = 1 / (y * y)
        y = xp.sqrt(big_l - xp.log(_SQRT_PI * y) + xp.log1p(inv * (0.75 * inv - 0.5)))
    return y


def erf_inv(xp, x, steps=None):
    """The inverse error function on [-1, 1] (+-inf at +-1, NaN outside), in x's dtype.

    `steps`: refinement steps (default: enough for full precision); tests set it to 0 to see the
    starting guess."""
    w = _working(xp, x)
    a = xp.abs(w)
    inside = a < 1
    a_safe = xp.where(inside, a, 0)  # keep log() finite on the elements answered below
    c = 1 - a_safe  # exact for a >= 0.5 (Sterbenz), where the refinement uses it
    y = _giles(xp, a_safe)
    wide = dtype_of(w).itemsize >= 8
    if wide:  # beyond float32's range, Giles' guess would be extrapolated
        y = xp.where(c < 5e-8, _tail_guess(xp, c), y)
    if steps is None:  # quadratic/cubic convergence: 1 step for float32, 2 for float64
        steps = 2 if wide else 1
    log_c = xp.log(c)
    small = a_safe <= 0.5
    for _ in range(steps):
        erf_y, erfc_y = _erf_erfc(xp, y)
        d = _TWO_RSQRT_PI * _exp_neg_sq(xp, y)  # erf'(y); erf''(y) = -2 y erf'(y)
        f = erf_y - a_safe
        halley = f / (d + y * f)
        # Above 0.5, Newton on log(erfc(y)) = log(1 - a): nearly linear in y^2 in the tail, where
        # Halley's step on erf would be throttled to about 1/y by its y*f term.
        newton_log = (log_c - xp.log(erfc_y)) * erfc_y / d
        y = y - xp.where(small, halley, newton_log)
    y = xp.where(inside, y, xp.where(a == 1, xp.inf, a * xp.nan))  # (+-1 -> inf, else NaN)
    return astype(xp, xp.copysign(y, w), dtype_of(xp.asarray(x)), copy=False)
