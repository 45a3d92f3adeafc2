"""Cumulative reductions along an axis (cumsum, cumprod, cummax, cummin, cumlogsumexp), each a
primitive defined once with its rules; `reverse` accumulates from the end.
"""

from __future__ import annotations

import numpy as np

from ..core import Primitive, bind
from . import elementwise as ew
from ._util import check_kind, normalize_axis, shape_error, small_floats_in_float32
from .indexing import INDEX, along_axis_indices, gather, scatter_add
from .structural import iota, pad

__all__ = [
    "cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp",
    "cumsum_p", "cumprod_p", "cummax_p", "cummin_p", "cumlogsumexp_p",
]


def _shift(x, d, axis, fill):
    """x moved by d positions along axis (d > 0: toward higher indices), filled with `fill`."""
    config = [(0, 0, 0)] * x.ndim
    config[axis] = (d, -d, 0)
    return pad(x, np.array(fill, x.dtype), config)


def _linear_recurrence(a, b, axis, reverse):
    """s[i] = a[i] * s[i-1] + b[i] along axis with s[-1] = 0 (from the end when reverse), as an
    associative scan over affine maps in ceil(log2 n) doubling steps: exact, no division."""
    n, d, sign = a.shape[axis], 1, -1 if reverse else 1
    while d < n:
        b = ew.add(ew.mul(a, _shift(b, sign * d, axis, 0)), b)
        if 2 * d < n:
            a = ew.mul(a, _shift(a, sign * d, axis, 1))
        d *= 2
    return b


def _accumulate(xp, name, x, axis):
    """ufunc.accumulate where the namespace is NumPy; elsewhere (CuPy's accumulate covers few
    ufuncs) a log-depth scan with the same elementwise function."""
    fn = getattr(xp, name)
    if xp is np:
        return fn.accumulate(x, axis=axis)
    n, d = x.shape[axis], 1
    lead = (np.s_[:],) * axis
    while d < n:
        x = xp.concatenate([x[lead + (np.s_[:d], ...)], fn(x[lead + (np.s_[d:], ...)],
                                                            x[lead + (np.s_[:-d], ...)])],
                           axis=axis)
        d *= 2
    return x


def _cumulative(name, kinds, fn, residuals):
    def impl(xp, x, *, axis, reverse):
        if reverse:
            return xp.flip(fn(xp, xp.flip(x, axis), axis), axis)
        return fn(xp, x, axis)

    def abstract(x, *, axis, reverse):
        check_kind(name, x, kinds)
        if not 0 <= axis < x.ndim:
            raise shape_error(name, f"axis {axis} is out of bounds for {x.str_short()}")
        return x

    p = Primitive(name, impl=small_floats_in_float32(impl), abstract_eval=abstract,
                  residuals=residuals)
    # The batch axis stays where it is; the scan axis shifts past it.
    p.batch = lambda vals, dims, *, axis, reverse: (
        bind(p, vals[0], axis=axis + (dims[0] <= axis), reverse=reverse), dims[0])
    return p


cumsum_p = _cumulative("cumsum", "iufc", lambda xp, x, axis: xp.cumsum(x, axis=axis,
                                                                      dtype=x.dtype), "none")
cumprod_p = _cumulative("cumprod", "iufc", lambda xp, x, axis: xp.cumprod(x, axis=axis,
                                                                         dtype=x.dtype), "inout")
cummax_p = _cumulative("cummax", "iuf", lambda xp, x, axis: _accumulate(xp, "maximum", x, axis),
                       "inout")
cummin_p = _cumulative("cummin", "iuf", lambda xp, x, axis: _accumulate(xp, "minimum", x, axis),
                       "inout")
cumlogsumexp_p = _cumulative("cumlogsumexp", "f",
                             lambda xp, x, axis: _accumulate(xp, "logaddexp", x, axis), "inout")

cumsum_p.jvp = lambda primals, tangents, out, **p: cumsum(tangents[0], **p)
cumsum_p.vjp = lambda ct, primals, out, active, *, axis, reverse: (
    cumsum(ct, axis, reverse=not reverse),)


def _cumprod_jvp(primals, tangents, out, *, axis, reverse):
    # t_out[i] = sum_{j<=i} t[j] * prod_{l<=i, l!=j} x[l] = x[i] * t_out[i-1] + excl[i] * t[i],
    # with excl[i] = prod_{l<i} x[l]: a linear recurrence, exact when x has zeros.
    x, t = primals[0], tangents[0]
    excl = _shift(out, -1 if reverse else 1, axis, 1)
    return _linear_recurrence(x, ew.mul(excl, t), axis, reverse)


def _cumprod_vjp(ct, primals, out, active, *, axis, reverse):
    # ct_x[j] = excl[j] * g[j], g[j] = ct[j] + x[j+1] * g[j+1]: the transposed recurrence.
    x = primals[0]
    step = -1 if reverse else 1
    excl = _shift(out, step, axis, 1)
    g = _linear_recurrence(_shift(x, -step, axis, 0), ct, axis, not reverse)
    return (ew.mul(excl, g),)


cumprod_p.jvp, cumprod_p.vjp = _cumprod_jvp, _cumprod_vjp


def _cumlogsumexp_jvp(primals, tangents, out, *, axis, reverse):
    # t_out[i] = sum_{j<=i} t[j] exp(x[j] - out[i])
    #          = exp(out[i-1] - out[i]) t_out[i-1] + exp(x[i] - out[i]) t[i]: factors <= 1.
    x, t = primals[0], tangents[0]
    a = ew.exp(ew.sub(_shift(out, -1 if reverse else 1, axis, -np.inf), out))
    return _linear_recurrence(a, ew.mul(ew.exp(ew.sub(x, out)), t), axis, reverse)


def _cumlogsumexp_vjp(ct, primals, out, active, *, axis, reverse):
    # ct_x[j] = exp(x[j] - out[j]) g[j], g[j] = ct[j] + exp(out[j] - out[j+1]) g[j+1].
    x = primals[0]
    step = -1 if reverse else 1
    a = ew.exp(ew.sub(_shift(out, step, axis, -np.inf), out))
    g = _linear_recurrence(_shift(a, -step, axis, 0), ct, axis, not reverse)
    return (ew.mul(ew.exp(ew.sub(x, out)), g),)


cumlogsumexp_p.jvp, cumlogsumexp_p.vjp = _cumlogsumexp_jvp, _cumlogsumexp_vjp


def _running_winner(x, out, axis, reverse, beats):
    """Indices along axis of the element that set each running max/min: the first, in scan order,
    to attain it (later ties do not take over)."""
    step = -1 if reverse else 1
    n = x.shape[axis]
    pos = iota(INDEX, x.shape, axis)
    first = ew.eq(pos, np.array(n - 1 if reverse else 0, INDEX))
    new = ew.bitwise_or(first, beats(x, _shift(out, step, axis, 0)))
    if reverse:  # the winner for position i is the smallest new-record index >= i
        return cummin(ew.select_n(new, ew.full(x.shape, n, INDEX), pos), axis, reverse=True)
    return cummax(ew.select_n(new, ew.full(x.shape, -1, INDEX), pos), axis)


def _cum_extremum_rules(p, beats):
    def jvp(primals, tangents, out, *, axis, reverse):
        r = _running_winner(primals[0], out, axis, reverse, beats)
        return gather(tangents[0], along_axis_indices(r, axis))

    def vjp(ct, primals, out, active, *, axis, reverse):
        x = primals[0]
        r = _running_winner(x, out, axis, reverse, beats)
        return (scatter_add(ew.zeros_like(x), along_axis_indices(r, axis), ct),)

    p.jvp, p.vjp = jvp, vjp


_cum_extremum_rules(cummax_p, ew.gt)
_cum_extremum_rules(cummin_p, ew.lt)


def _cumulative_fn(p):
    def fn(x, axis=0, reverse=False):
        return bind(p, x, axis=normalize_axis(axis, x.ndim), reverse=bool(reverse))
    fn.__name__ = p.name
    fn.__doc__ = (f"Running {p.name[3:]} of x along `axis` (from the end when `reverse`); "
                  "the result has x's shape.")
    return fn


cumsum = _cumulative_fn(cumsum_p)
cumprod = _cumulative_fn(cumprod_p)
cummax = _cumulative_fn(cummax_p)
cummin = _cumulative_fn(cummin_p)
cumlogsumexp = _cumulative_fn(cumlogsumexp_p)
