"""Polynomials as coefficient arrays (highest power first, as numpy.polyval): polyval, polyadd,
polysub, polymul, polyder, polyint and poly (coefficients from roots).
"""

from __future__ import annotations

import operator

import numpy as np

from ..core.avals import dtype_kind
from ._arithmetic import add, multiply, subtract, true_divide
from ._core import asarray, convert
from ._creation import zeros, zeros_like
from ._shape import concatenate, reshape
from ._signal import convolve

__all__ = ["polyval", "polyadd", "polysub", "polymul", "polyder", "polyint", "poly"]


# ---------------------------------------------------------------------------------------------
# Polynomials

def polyval(p, x):
    """The polynomial with coefficients p (highest power first) at x, by Horner's scheme."""
    p, x = asarray(p), asarray(x)
    y = zeros_like(x)
    for i in range(p.shape[0] if p.ndim else 0):
        y = add(multiply(y, x), p[i])
    return y


def _poly_pair(a1, a2):
    a1, a2 = asarray(a1), asarray(a2)
    a1 = reshape(a1, (1,)) if a1.ndim == 0 else a1
    a2 = reshape(a2, (1,)) if a2.ndim == 0 else a2
    d = a2.shape[0] - a1.shape[0]
    if d > 0:
        a1 = concatenate([zeros(d, a1.dtype), a1])
    elif d < 0:
        a2 = concatenate([zeros(-d, a2.dtype), a2])
    return a1, a2


def polyadd(a1, a2):
    """The sum of two polynomials (coefficient arrays, highest power first)."""
    return add(*_poly_pair(a1, a2))


def polysub(a1, a2):
    """The difference of two polynomials (coefficient arrays, highest power first)."""
    return subtract(*_poly_pair(a1, a2))


def polymul(a1, a2):
    """The product of two polynomials (the convolution of their coefficients)."""
    a1, a2 = asarray(a1), asarray(a2)
    a1 = reshape(a1, (1,)) if a1.ndim == 0 else a1
    a2 = reshape(a2, (1,)) if a2.ndim == 0 else a2
    return convolve(a1, a2)


def polyder(p, m=1):
    """The m-th derivative of a polynomial (coefficients highest power first)."""
    m = operator.index(m)
    if m < 0:
        raise ValueError("Order of derivative must be positive (see polyint)")
    p = asarray(p)
    for _ in range(m):
        n = p.shape[0] - 1
        p = multiply(p[:-1], np.arange(n, 0, -1))
    return p


def polyint(p, m=1, k=None):
    """The m-th antiderivative of a polynomial, with integration constants k (default 0)."""
    m = operator.index(m)
    if m < 0:
        raise ValueError("Order of integral must be positive (see polyder)")
    if k is None:
        k = np.zeros(m, float)
    k = asarray(k)
    k = reshape(k, (1,)) if k.ndim == 0 else k
    if k.shape[0] == 1 and m > 1:
        k = multiply(k[0], np.ones(m, float))
    if k.shape[0] < m:
        raise ValueError("k must be a scalar or a rank-1 array of length 1 or >m.")
    p = asarray(p)
    for i in range(m):
        p = true_divide(p, np.arange(p.shape[0], 0, -1))
        p = concatenate([p, reshape(k[i], (1,))])
    return p


def poly(seq_of_zeros):
    """Coefficients (highest power first) of the monic polynomial with the given 1-D roots."""
    z = asarray(seq_of_zeros)
    z = reshape(z, (1,)) if z.ndim == 0 else z
    if z.ndim != 1:
        raise NotImplementedError("poly: only a 1-D sequence of roots is supported (no matrix "
                                  "argument: funcgrad.numpy.linalg has no eigvals).")
    if dtype_kind(z.dtype) not in "fc":
        z = convert(z, np.float64)
    if z.shape[0] == 0:
        return 1.0
    a = np.ones((1,), z.dtype)
    for i in range(z.shape[0]):
        a = convolve(a, concatenate([np.ones((1,), z.dtype), reshape(-z[i], (1,))]))
    return a
