"""Special functions (as jax.scipy.special), composed from funcgrad.lax elementwise primitives.

gammaln: Lanczos' approximation (g = 7, 9 terms, ~1e-15 relative) for x >= 1/2 and the
reflection formula log|Gamma(x)| = log(pi / |sin(pi x)|) - gammaln(1 - x) below.
digamma: shifted by the recurrence psi(x) = psi(x + 10) - sum 1/(x + k) into the range of the
asymptotic (Stirling) series, reflected as psi(x) = psi(1 - x) - pi / tan(pi x) for x < 1/2.

polygamma(n, x), n >= 1: the same recurrence and the asymptotic series of psi^(n), reflected by
the n-th derivative of the reflection formula (a polynomial in cot(pi x)).

All carry custom JVP rules, so derivatives are the exact functions (gammaln' = digamma,
digamma' = polygamma(1, .), polygamma(n, .)' = polygamma(n + 1, .), computed the same way) and
not the derivatives of the approximations.
Integer inputs are computed in float64; float32 stays float32. sin(pi x) and tan(pi x) are
taken of x minus its nearest integer, so the reflection stays accurate for large |x|.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from .. import lax
from .. import numpy as fnp
from ..core.avals import dtype_kind
from ..lax.custom_derivatives import custom_jvp

__all__ = ["gammaln", "digamma", "polygamma"]

_LANCZOS_G = 7.0
_LANCZOS = (0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313,
            -176.61502916214059, 12.507343278686905, -0.13857109526572012,
            9.9843695780195716e-6, 1.5056327351493116e-7)
_SHIFT = 10  # digamma/polygamma: shift x >= 1/2 to x + 10 (+ 2n) before the asymptotic series
# B_2k / (2k) for psi, and the Bernoulli numbers B_2k, k = 1..7
_PSI_SERIES = (1 / 12, -1 / 120, 1 / 252, -1 / 240, 1 / 132, -691 / 32760, 1 / 12)
_BERNOULLI = (1 / 6, -1 / 30, 1 / 42, -1 / 30, 5 / 66, -691 / 2730, 7 / 6)


def _float(x):
    x = fnp.asarray(x)
    if x.dtype.kind in "biu":
        x = lax.convert_element_type(x, np.float64)
    if dtype_kind(x.dtype) != "f":
        raise TypeError(f"expected a real floating (or integer) input, got {x.dtype}")
    return x


def _c(value, like):
    return np.array(value, like.dtype)


def _horner(w, coeffs):
    acc = _c(coeffs[-1], w)
    for c in reversed(coeffs[:-1]):
        acc = lax.add(lax.mul(acc, w), _c(c, w))
    return acc


def _reflected(x):
    """(x_safe, below, x_pos, r, pole) for x with its non-finite entries replaced by 2 (callers
    put them back), so that no branch computes inf - inf or 0 / 0: below = x < 1/2;
    x_pos = 1 - x there, else x (so x_pos >= 1/2); r = x minus its nearest integer where below
    and not a pole (x = 0, -1, ...), else 1/2."""
    x = lax.select_n(lax.is_finite(x), _c(2, x), x)
    below = lax.lt(x, _c(0.5, x))
    x_pos = lax.select_n(below, x, lax.sub(_c(1, x), x))
    r = lax.sub(x, lax.round(x))
    pole = lax.bitwise_and(below, lax.eq(r, _c(0, x)))
    r = lax.select_n(lax.bitwise_and(below, lax.bitwise_not(pole)), _c(0.5, x), r)
    return x, below, x_pos, r, pole


def _lgamma_pos(x):
    """log Gamma(x) for x >= 1/2 (Lanczos)."""
    z = lax.sub(x, _c(1, x))
    a = _c(_LANCZOS[0], x)
    for i, c in enumerate(_LANCZOS[1:], start=1):
        a = lax.add(a, lax.div(_c(c, x), lax.add(z, _c(i, x))))
    t = lax.add(z, _c(_LANCZOS_G + 0.5, x))
    # log t = log(g + 1/2) + log1p(z / (g + 1/2)), and (z + 1/2) log t - t written so that it
    # does not overflow before the result does.
    log_t = lax.add(_c(math.log(_LANCZOS_G + 0.5), x),
                    lax.log1p(lax.div(z, _c(_LANCZOS_G + 0.5, x))))
    main = lax.mul(lax.sub(lax.add(z, _c(0.5, x)), lax.div(t, log_t)), log_t)
    return lax.add(lax.add(_c(0.5 * math.log(2 * math.pi), x), main), lax.log(a))


def _gammaln(x):
    xs, below, x_pos, r, pole = _reflected(x)
    base = _lgamma_pos(x_pos)
    log_sin = lax.log(lax.abs(lax.sin(lax.mul(_c(math.pi, x), r))))
    reflected = lax.sub(lax.sub(_c(math.log(math.pi), x), log_sin), base)
    out = lax.select_n(below, base, reflected)
    out = lax.select_n(pole, out, _c(np.inf, x))
    return lax.select_n(lax.is_finite(x), lax.abs(x), out)  # +-inf -> inf, NaN -> NaN


def _psi_pos(x):
    """psi of x >= 1/2: recurrence to x + 10, asymptotic (Stirling) series."""
    y = lax.add(x, _c(_SHIFT, x))
    inv = lax.div(_c(1, x), y)
    w = lax.mul(inv, inv)
    series = lax.mul(w, _horner(w, _PSI_SERIES))
    out = lax.sub(lax.sub(lax.log(y), lax.mul(_c(0.5, x), inv)), series)
    for k in reversed(range(_SHIFT)):  # recurrence terms, smallest first
        out = lax.sub(out, lax.div(_c(1, x), lax.add(x, _c(k, x))))
    return out


def _polygamma_pos(n, x):
    """psi^(n) of x >= 1/2, n >= 1: psi^(n)(x) = psi^(n)(y) + (-1)^(n+1) n! sum 1/(x+k)^(n+1)
    (k < y - x), and at y the asymptotic series (-1)^(n+1) [(n-1)!/y^n + n!/(2 y^(n+1))
    + sum_k B_2k (2k+n-1)! / ((2k)! y^(2k+n))]. The shift grows with n, which the series'
    terms do."""
    shift = _SHIFT + 2 * n
    y = lax.add(x, _c(shift, x))
    inv = lax.div(_c(1, x), y)
    w = lax.mul(inv, inv)
    coeffs = [math.factorial(2 * k + n - 1) / math.factorial(2 * k) * b
              for k, b in enumerate(_BERNOULLI, start=1)]
    series = lax.mul(w, _horner(w, coeffs))
    lead = lax.add(_c(math.factorial(n - 1), x), lax.mul(_c(math.factorial(n) / 2, x), inv))
    out = lax.mul(lax.pow(inv, _c(n, x)), lax.add(lead, series))
    for k in reversed(range(shift)):  # recurrence terms, smallest first
        out = lax.add(out, lax.mul(_c(math.factorial(n), x),
                                   lax.pow(lax.add(x, _c(k, x)), _c(-(n + 1), x))))
    return out if n % 2 else lax.neg(out)


def _cot_derivative(n):
    """Coefficients (lowest power first) of the polynomial P with d^n/dx^n cot(pi x) =
    P(cot(pi x)): P_0 = c, P_(k+1) = -pi (1 + c^2) P_k'(c)."""
    p = [0.0, 1.0]
    for _ in range(n):
        d = [i * p[i] for i in range(1, len(p))] + [0.0, 0.0]
        p = [-math.pi * (d[i] + (d[i - 2] if i >= 2 else 0.0)) for i in range(len(d))]
    return p


def _digamma(x):
    xs, below, x_pos, r, pole = _reflected(x)
    base = _psi_pos(x_pos)
    cot = lax.div(_c(math.pi, x), lax.tan(lax.mul(_c(math.pi, x), r)))
    out = lax.select_n(below, base, lax.sub(base, cot))
    # poles (0, -1, -2, ...) give NaN, as jax.scipy.special.digamma; inf -> inf, -inf -> NaN
    out = lax.select_n(pole, out, _c(np.nan, x))
    nonfinite = lax.select_n(lax.eq(x, _c(np.inf, x)), _c(np.nan, x), _c(np.inf, x))
    return lax.select_n(lax.is_finite(x), nonfinite, out)


def _polygamma_impl(n, x):
    """psi^(n)(x), n >= 1. Below 1/2 by the reflection formula differentiated n times:
    psi^(n)(x) = (-1)^n psi^(n)(1 - x) - pi d^n/dx^n cot(pi x). Poles (0, -1, ...): inf for odd
    n, NaN for even n (the sign depends on the side), as jax.scipy.special.polygamma; +inf
    gives the limit 0, -inf and NaN give NaN."""
    xs, below, x_pos, r, pole = _reflected(x)
    base = _polygamma_pos(n, x_pos)
    angle = lax.mul(_c(math.pi, x), r)
    cot = lax.div(lax.cos(angle), lax.sin(angle))
    reflected = lax.sub(base if n % 2 == 0 else lax.neg(base),
                        lax.mul(_c(math.pi, x), _horner(cot, _cot_derivative(n))))
    out = lax.select_n(below, base, reflected)
    out = lax.select_n(pole, out, _c(np.inf if n % 2 else np.nan, x))
    nonfinite = lax.select_n(lax.eq(x, _c(np.inf, x)), _c(np.nan, x), _c(0, x))
    return lax.select_n(lax.is_finite(x), nonfinite, out)


@functools.lru_cache(maxsize=None)
def _polygamma_fn(n):
    """psi^(n) as a function of x with its custom JVP psi^(n+1), so every derivative is the
    exact function (not the derivative of the approximation)."""
    @custom_jvp
    def polygamma_n(x):
        return _polygamma_impl(n, x)

    @polygamma_n.defjvp
    def polygamma_n_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        return polygamma_n(x), lax.mul(t, _polygamma_fn(n + 1)(x))

    return polygamma_n


@custom_jvp
def _digamma_cj(x):
    return _digamma(x)


@_digamma_cj.defjvp
def _digamma_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return _digamma_cj(x), lax.mul(t, _polygamma_fn(1)(x))


@custom_jvp
def _gammaln_cj(x):
    return _gammaln(x)


@_gammaln_cj.defjvp
def _gammaln_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return _gammaln_cj(x), lax.mul(t, _digamma_cj(x))


def gammaln(x):
    """log|Gamma(x)|, elementwise (scipy.special.gammaln); +inf at 0, -1, -2, ... and at +-inf.
    Its derivative is digamma."""
    return _gammaln_cj(_float(x))


def digamma(x):
    """psi(x) = d/dx log Gamma(x), elementwise (scipy.special.digamma); NaN at 0, -1, -2, ...
    Its derivatives are polygamma(n, x), to any order."""
    return _digamma_cj(_float(x))


def polygamma(n, x):
    """psi^(n)(x), the n-th derivative of digamma, elementwise (jax.scipy.special.polygamma);
    n a non-negative Python int (or a concrete integer scalar); polygamma(0, x) = digamma(x).
    Its derivative in x is polygamma(n + 1, x)."""
    if isinstance(n, (np.ndarray, np.generic)) and n.ndim == 0 and n.dtype.kind in "iu":
        n = int(n)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise TypeError(f"special.polygamma: n must be a non-negative integer (a Python int or a "
                        f"concrete integer scalar), got {n!r}")
    x = _float(x)
    return _digamma_cj(x) if n == 0 else _polygamma_fn(n)(x)


# ---------------------------------------------------------------------------------------------
# The rest of jax.scipy.special's everyday functions, composed from fnp / fg.nn.

def logsumexp(a, axis=None, b=None, keepdims=False, return_sign=False, where=None):
    """log(sum(b * exp(a))) over `axis` without overflow (scipy.special.logsumexp)."""
    from ..nn import logsumexp as _lse
    return _lse(a, axis=axis, b=b, keepdims=keepdims, return_sign=return_sign, where=where)


def erf(x):
    return lax.erf(_float(x))


def erfc(x):
    return lax.erfc(_float(x))


def erfinv(x):
    return lax.erf_inv(_float(x))


def expit(x):
    """1 / (1 + exp(-x)), the logistic sigmoid."""
    return lax.logistic(_float(x))


def logit(x):
    """log(x / (1 - x)), the inverse of expit."""
    x = _float(x)
    return fnp.log(x) - fnp.log1p(-x)


def xlogy(x, y):
    """x * log(y), 0 where x == 0 (also for y == 0)."""
    x, y = _float(x), _float(y)
    return fnp.where(x == 0, fnp.zeros_like(x * y), x * fnp.log(fnp.where(x == 0, 1, y)))


def xlog1py(x, y):
    """x * log1p(y), 0 where x == 0."""
    x, y = _float(x), _float(y)
    return fnp.where(x == 0, fnp.zeros_like(x * y), x * fnp.log1p(fnp.where(x == 0, 0, y)))


def entr(x):
    """-x log x for x > 0, 0 at 0, -inf for x < 0."""
    x = _float(x)
    safe = fnp.where(x > 0, x, 1)
    return fnp.where(x > 0, -x * fnp.log(safe), fnp.where(x == 0, 0.0, -np.inf))


def ndtr(x):
    """The standard normal CDF."""
    x = _float(x)
    return 0.5 * lax.erfc(-x * (1 / math.sqrt(2)))


def ndtri(p):
    """The inverse of ndtr."""
    return math.sqrt(2) * lax.erf_inv(2 * _float(p) - 1)


def log_ndtr(x):
    """log of the standard normal CDF (direct; less accurate far in the left tail than SciPy)."""
    return fnp.log(ndtr(x))


__all__ += ["logsumexp", "erf", "erfc", "erfinv", "expit", "logit", "xlogy", "xlog1py", "entr",
            "ndtr", "ndtri", "log_ndtr"]
