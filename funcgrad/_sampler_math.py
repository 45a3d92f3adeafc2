"""The floating-point formulas behind JAX's samplers, evaluated the way XLA's CPU backend does.

`jax.random.normal` is sqrt(2) * erf_inv(u), `truncated_normal` also needs erf, `gumbel` (and
so `categorical`) needs log. XLA evaluates these with its own approximations (not the C
library's), and its CPU code generator contracts each multiply-add into one fused multiply-add
(FMA, rounded once). To draw the same floats as JAX, fg.random evaluates the same formulas in
the same order, with the FMAs emulated:

  float32   an FMA is exact in float64 (the product of two float32 has 48 bits), so
            fma(a, b, c) = float32(float64(a) * b + c) (a double rounding is possible but needs
            the float64 sum to land on a float32 midpoint, about one case in 2**29)
  float64   an FMA from error-free transformations: a * b = p + e exactly (Veltkamp/Dekker
            splitting), p + c = s + t exactly (Knuth's TwoSum), result s + (t + e)

  log       float32: the Cephes polynomial XLA's CPU runtime uses (mantissa in [sqrt(1/2),
            sqrt(2)), degree-8 polynomial in three pieces); float64: the host's log, as XLA calls
            the C library's
  log1p     XLA's: log(1 + x) where |x| >= sqrt(2) - 1, else Cephes' rational approximation
  erf       float32: Eigen's rational approximation (odd degree 9 over even degree 12, clamped
            to +-1 past 3.8325); float64: funcgrad's erf (XLA calls the C library's erf)
  erf_inv   M. Giles' approximations ("Approximating the erfinv function", 2011): one
            polynomial of degree 8 in w - 2.5 or sqrt(w) - 3 for float32, three (w - 3.125,
            sqrt(w) - 3.25, sqrt(w) - 5) for float64, w = -log1p(-x * x)

Every float32 formula here matches JAX 0.10 on the CPU bit for bit. In float64 the C library's
log and erf are not NumPy's to the last bit everywhere, so float64 normals can differ from JAX's
by an ulp in a few cases in ten thousand (see docs/differences.md). float16 and bfloat16 are
computed in float32 and rounded, as XLA's CPU backend does.

Written with lax primitives only, so that every sampler traces under jit, vmap and grad.
"""

from __future__ import annotations

import functools

import numpy as np

from . import lax
from . import numpy as fnp

_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)


def _c(value, x):
    """A rank-0 constant in x's dtype."""
    return np.array(value, x.dtype)


def _select(pred, on_true, on_false):
    return lax.select_n(pred, on_false, on_true)


# ---------------------------------------------------------------------------------------------
# Fused multiply-add

_SPLITTER = 134217729.0  # 2**27 + 1: Veltkamp's constant for float64


def _split(x):
    """x = hi + lo exactly, hi with the top 26 bits of x's mantissa."""
    t = lax.mul(x, _c(_SPLITTER, x))
    hi = lax.sub(t, lax.sub(t, x))
    return hi, lax.sub(x, hi)


def fma(a, b, c, b_parts=None):
    """a * b + c rounded once, in the dtype of the operands (float32 or float64). `b_parts`:
    _split(b), when b is a polynomial's variable split once for all of its steps."""
    dtype = np.dtype(a.dtype)
    if dtype == _F64:
        p = lax.mul(a, b)
        ah, al = _split(a)
        bh, bl = b_parts or _split(b)
        e = lax.add(lax.add(lax.add(lax.sub(lax.mul(ah, bh), p), lax.mul(ah, bl)),
                            lax.mul(al, bh)), lax.mul(al, bl))
        s = lax.add(p, c)
        z = lax.sub(s, p)
        t = lax.add(lax.sub(p, lax.sub(s, z)), lax.sub(c, z))
        return lax.add(s, lax.add(t, e))
    return _fma32(a, b, c)


def _wide(v):
    """A float32 FMA operand in float64, exactly: a float32 array widened, a float64 array taken
    as one widened before (so that a polynomial's variable is widened once, not per step), a
    Python number rounded to float32 first (it is a float32 constant of the formula)."""
    if not hasattr(v, "dtype"):
        return np.array(np.float32(v), _F64)
    return v if np.dtype(v.dtype) == _F64 else lax.convert_element_type(v, _F64)


def _fma32(a, b, c):
    """The float32 fma(a, b, c) (operands as _wide takes them), in float64: the product of two
    float32 is exact there, so only the sum rounds (see the module docstring)."""
    return lax.convert_element_type(lax.add(lax.mul(_wide(a), _wide(b)), _wide(c)), _F32)


def _fma_const(a, b, c):
    """fma with Python-number operands taken in a's dtype (as rank-0 constants: they broadcast)."""
    if np.dtype(a.dtype) != _F64:
        return _fma32(a, b, c)
    b = b if hasattr(b, "dtype") else _c(b, a)
    c = c if hasattr(c, "dtype") else _c(c, a)
    return fma(a, b, c)


def _in_float32(fn, x):
    """fn evaluated in float32 for a narrower float x (as XLA's CPU backend), rounded back."""
    if np.dtype(x.dtype).itemsize >= 4:
        return fn(x)
    return lax.convert_element_type(fn(lax.convert_element_type(x, _F32)), x.dtype)


# ---------------------------------------------------------------------------------------------
# log, log1p

_LOG_P = (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
          1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
          3.3333331174e-1)
_LOG_Q1, _LOG_Q2 = -2.12194440e-4, 0.693359375  # ln 2 = Q2 - Q1, split for exact products


def _log_f32(x, finite_positive=False):
    """XLA's CPU float32 log: x = m * 2**e with m in [sqrt(1/2), sqrt(2)), log(m) by Cephes'
    polynomial in f = m - 1, plus e * ln 2 in two exact pieces; then inf, 0, negatives and NaN
    (no-ops, skipped, when the caller knows x is finite and positive)."""
    m, e = _frexp_normal(lax.max(x, _c(np.finfo(np.float32).tiny, x)))  # denormals: tiny
    one = _c(1.0, x)
    below = lax.lt(m, _c(0.707106781186547524, x))
    f = lax.add(lax.sub(m, one), _select(below, m, _c(0.0, x)))  # 2m - 1 or m - 1
    e = lax.sub(e, _select(below, one, _c(0.0, x)))
    f2 = lax.mul(f, f)
    f3 = lax.mul(f2, f)
    p = _LOG_P
    wf, wf3 = _wide(f), _wide(f3)  # the polynomial's variables, widened once for its FMAs
    y = _fma32(wf, p[0], p[1])
    y1 = _fma32(wf, p[3], p[4])
    y2 = _fma32(wf, p[6], p[7])
    y = _fma32(y, wf, p[2])
    y1 = _fma32(y1, wf, p[5])
    y2 = _fma32(y2, wf, p[8])
    y = _fma32(y, wf3, y1)
    y = _fma32(y, wf3, y2)
    y = _fma32(y, wf3, lax.mul(_c(_LOG_Q1, x), e))
    r = lax.sub(f, lax.mul(_c(0.5, x), f2))
    r = lax.add(r, y)
    r = lax.add(r, lax.mul(_c(_LOG_Q2, x), e))
    if finite_positive:
        return r
    r = _select(lax.eq(x, _c(np.inf, x)), x, r)
    r = _select(lax.eq(x, _c(0.0, x)), _c(-np.inf, x), r)
    return _select(lax.lt(x, _c(0.0, x)), lax.mul(x, _c(np.nan, x)), _select(lax.ne(x, x), x, r))


def _frexp_normal(x):
    """(m, e), both float32, with x = m * 2**e and m in [0.5, 1), for x a positive normal
    float32 (frexp, read off the bits; inf and NaN give finite junk that the caller replaces)."""
    b = lax.bitcast_convert_type(x, np.uint32)
    biased = lax.shift_right_logical(b, np.array(23, np.uint32))
    e = lax.sub(lax.convert_element_type(biased, _F32), _c(126.0, x))
    m = lax.bitwise_or(lax.bitwise_and(b, np.array(0x007FFFFF, np.uint32)),
                       np.array(0x3F000000, np.uint32))  # the exponent of [0.5, 1)
    return lax.bitcast_convert_type(m, _F32), e


def log(x, finite_positive=False):
    """The natural log as JAX computes it on the CPU. `finite_positive`: the caller guarantees
    x > 0 and finite (gumbel's arguments), so the special cases are left out."""
    if np.dtype(x.dtype) == _F64:
        return lax.log(x)
    return _in_float32(functools.partial(_log_f32, finite_positive=finite_positive), x)


_LOG1P_NUM = (4.5270000862445199635215e-5, 4.9854102823193375972212e-1,
              6.5787325942061044846969e0, 2.9911919328553073277375e1,
              6.0949667980987787057556e1, 5.7112963590585538103336e1,
              2.0039553499201281259648e1)
_LOG1P_DEN = (1.0, 1.5062909083469192043167e1, 8.3047565967967209469434e1,
              2.2176239823732856465394e2, 3.0909872225312059774938e2,
              2.1642788614495947685003e2, 6.0118660497603843919306e1)


def _horner(x, coeffs):
    """coeffs[0] x^n + ... + coeffs[n], one FMA a step."""
    if np.dtype(x.dtype) == _F32:
        wx = _wide(x)  # widened once for all the steps
        p = coeffs[0]
        for c in coeffs[1:]:
            p = _fma32(p, wx, c)
        return p
    parts = _split(x)
    p = _c(coeffs[0], x)
    for c in coeffs[1:]:
        p = fma(p, x, _c(c, x), parts)
    return p


def _log1p(x):
    large = log(lax.add(x, _c(1.0, x)))
    x2 = lax.mul(x, x)
    small = lax.div(_horner(x, _LOG1P_NUM), _horner(x, _LOG1P_DEN))
    small = lax.mul(lax.mul(x, x2), small)
    small = lax.add(lax.mul(_c(-0.5, x), x2), small)
    small = lax.add(x, small)
    return _select(lax.lt(lax.abs(x), _c(0.41421356237309504880, x)), small, large)


def log1p(x):
    """log(1 + x) as JAX computes it on the CPU."""
    return _in_float32(_log1p, x)


# ---------------------------------------------------------------------------------------------
# erf, erf_inv

_ERF_ALPHA = (0.00022905065861350646, 0.0034082910107109506, 0.050955695062380861,
              0.18520832239976145, 1.128379143519084)
_ERF_BETA = (-1.1791602954361697e-7, 0.000023547966471313185, 0.0010179625278914885,
             0.014070470171167667, 0.11098505178285362, 0.49746925110067538, 1.0)


def _erf_f32(x):
    x2 = lax.mul(x, x)
    p = lax.mul(x, _horner(x2, _ERF_ALPHA))
    q = _horner(x2, _ERF_BETA)
    clamp = lax.le(_c(3.832506856900711, x), lax.abs(x))
    return _select(clamp, fnp.copysign(_c(1.0, x), x), lax.div(p, q))


def erf(x):
    """The error function as JAX computes it on the CPU (float32 exactly; float64 to an ulp)."""
    if np.dtype(x.dtype) == _F64:
        return lax.erf(x)
    return _in_float32(_erf_f32, x)


_ERFINV_F32 = (  # w < 5: in w - 2.5; else in sqrt(w) - 3
    (2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087,
     -0.00125372503, -0.00417768164, 0.246640727, 1.50140941),
    (-0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773,
     -0.0076224613, 0.00943887047, 1.00167406, 2.83297682))

_ERFINV_F64 = (  # w < 6.25: in w - 3.125; w < 16: in sqrt(w) - 3.25; else in sqrt(w) - 5
    (-3.6444120640178196996e-21, -1.685059138182016589e-19, 1.2858480715256400167e-18,
     1.115787767802518096e-17, -1.333171662854620906e-16, 2.0972767875968561637e-17,
     6.6376381343583238325e-15, -4.0545662729752068639e-14, -8.1519341976054721522e-14,
     2.6335093153082322977e-12, -1.2975133253453532498e-11, -5.4154120542946279317e-11,
     1.051212273321532285e-09, -4.1126339803469836976e-09, -2.9070369957882005086e-08,
     4.2347877827932403518e-07, -1.3654692000834678645e-06, -1.3882523362786468719e-05,
     0.0001867342080340571352, -0.00074070253416626697512, -0.0060336708714301490533,
     0.24015818242558961693, 1.6536545626831027356),
    (2.2137376921775787049e-09, 9.0756561938885390979e-08, -2.7517406297064545428e-07,
     1.8239629214389227755e-08, 1.5027403968909827627e-06, -4.013867526981545969e-06,
     2.9234449089955446044e-06, 1.2475304481671778723e-05, -4.7318229009055733981e-05,
     6.8284851459573175448e-05, 2.4031110387097893999e-05, -0.0003550375203628474796,
     0.00095328937973738049703, -0.0016882755560235047313, 0.0024914420961078508066,
     -0.0037512085075692412107, 0.005370914553590063617, 1.0052589676941592334,
     3.0838856104922207635),
    (-2.7109920616438573243e-11, -2.5556418169965252055e-10, 1.5076572693500548083e-09,
     -3.7894654401267369937e-09, 7.6157012080783393804e-09, -1.4960026627149240478e-08,
     2.9147953450901080826e-08, -6.7711997758452339498e-08, 2.2900482228026654717e-07,
     -9.9298272942317002539e-07, 4.5260625972231537039e-06, -1.9681778105531670567e-05,
     7.5995277030017761139e-05, -0.00021503011930044477347, -0.00013871931833623122026,
     1.0103004648645343977, 4.8499064014085844221))


def _piecewise_horner(t, branch, tables):
    """The polynomial tables[i] in t where branch == i: one Horner pass whose coefficients are
    picked per element (shorter tables padded with leading zeros, which change nothing: fma(0,
    t, 0) = 0), as XLA evaluates it."""
    n = max(len(c) for c in tables)
    padded = [(0.0,) * (n - len(c)) + tuple(c) for c in tables]
    picks = [lax.eq(branch, np.array(i, np.int32)) for i in range(1, len(tables))]
    f32 = np.dtype(t.dtype) == _F32  # float32 FMAs run in float64: coefficients picked there

    def coefficient(k):
        value = _wide if f32 else (lambda v: _c(v, t))
        coeff = value(padded[0][k])
        for i, pick in enumerate(picks, 1):
            if padded[i][k] != padded[0][k]:
                coeff = _select(pick, value(padded[i][k]), coeff)
        return coeff

    if f32:
        wt = _wide(t)
        p = lax.convert_element_type(coefficient(0), _F32)
        for k in range(1, n):
            p = _fma32(p, wt, coefficient(k))
    else:
        parts = _split(t)
        p = coefficient(0)
        for k in range(1, n):
            p = fma(p, t, coefficient(k), parts)
    return _broadcast_to(p, t.shape)


def _broadcast_to(x, shape):
    if tuple(x.shape) == tuple(shape):
        return x
    return lax.broadcast_in_dim(x, tuple(shape), tuple(range(len(shape) - x.ndim, len(shape))))


def _erf_inv(x):
    w = lax.neg(log1p(lax.mul(x, lax.neg(x))))
    sq = lax.sqrt(w)
    if np.dtype(x.dtype) == _F64:
        branch = lax.add(lax.convert_element_type(lax.ge(w, _c(6.25, w)), np.int32),
                         lax.convert_element_type(lax.ge(w, _c(16.0, w)), np.int32))
        t = _select(lax.lt(w, _c(6.25, w)), lax.add(w, _c(-3.125, w)),
                    lax.sub(sq, _select(lax.lt(w, _c(16.0, w)), _c(3.25, w), _c(5.0, w))))
        p = _piecewise_horner(t, branch, _ERFINV_F64)
    else:
        small = lax.lt(w, _c(5.0, w))
        t = _select(small, lax.sub(w, _c(2.5, w)), lax.sub(sq, _c(3.0, w)))
        p = _piecewise_horner(t, lax.convert_element_type(lax.bitwise_not(small), np.int32),
                              _ERFINV_F32)
    out = lax.mul(p, x)
    return _select(lax.eq(lax.abs(x), _c(1.0, x)), lax.mul(x, _c(np.inf, x)), out)


def erf_inv(x):
    """The inverse error function as JAX computes it on the CPU."""
    return _in_float32(_erf_inv, x)
