"""Reductions (sum, mean, var, max, ...), their nan-ignoring variants, cumulative reductions,
sorting, order statistics (median, quantile) and differences, composed from lax.

Axes are None (all), an int or a tuple, negative counting from the end; `keepdims` keeps reduced
axes with size 1; `where=` masks elements out. Result dtypes are NumPy's: sums of small integers
are int64 (uint64 for unsigned), means and variances of integers are float64.
"""

from __future__ import annotations

import builtins
import math

import numpy as np

from .. import lax
from ..core import Tracer, check_dtype, is_small_float, to_host, user_line
from ..core.avals import dtype_kind
from ._core import (
    abs_squared,
    asarray,
    broadcast_to,
    canonical_axes,
    canonical_axis,
    convert,
    inexact_dtype,
)


def _c(value, like):
    return np.array(value, like.dtype)


def _sum_dtype(dt):
    """NumPy's accumulator dtype for sum/prod/cumsum: small integers widen to 64 bits."""
    if dt.kind == "b" or (dt.kind == "i" and dt.itemsize < 8):
        return np.dtype(np.int64)
    if dt.kind == "u" and dt.itemsize < 8:
        return np.dtype(np.uint64)
    return dt


def _keep(out, axes, keepdims):
    return lax.expand_dims(out, axes) if keepdims and axes else out


def _masked(x, where, fill):
    """x with the elements where `where` is False replaced by `fill`."""
    if where is None or where is True:
        return x
    from ._logic import truth
    w = broadcast_to(truth(where), x.shape)
    return lax.select_n(w, lax.full(x.shape, fill, x.dtype), x)


def _no_out(out, name):
    if out is not None:
        raise TypeError(f"{name}: funcgrad arrays are immutable, so out= is not supported"
                        f"{user_line()}; use the returned value.")


def _count(shape, axes):
    return math.prod(shape[a] for a in axes)


def sum(a, axis=None, dtype=None, out=None, keepdims=False, initial=None, where=None):  # noqa: A001
    """Sum of elements over the given axes."""
    _no_out(out, "sum")
    x = asarray(a)
    axes = canonical_axes(axis, x.ndim)
    dt = _sum_dtype(x.dtype) if dtype is None else np.dtype(dtype)
    x = _masked(convert(x, dt), where, 0)
    res = lax.reduce_sum(x, axes) if axes else x
    if initial is not None:
        res = lax.add(res, _c(initial, res))
    return _keep(res, axes, keepdims)


def prod(a, axis=None, dtype=None, out=None, keepdims=False, initial=None, where=None):
    """Product of elements over the given axes."""
    _no_out(out, "prod")
    x = asarray(a)
    axes = canonical_axes(axis, x.ndim)
    dt = _sum_dtype(x.dtype) if dtype is None else np.dtype(dtype)
    x = _masked(convert(x, dt), where, 1)
    res = lax.reduce_prod(x, axes) if axes else x
    if initial is not None:
        res = lax.mul(res, _c(initial, res))
    return _keep(res, axes, keepdims)


def _extremum(name, reducer, combine):
    def f(a, axis=None, out=None, keepdims=False, initial=None, where=None):
        _no_out(out, name)
        x = asarray(a)
        axes = canonical_axes(axis, x.ndim)
        if where is not None and where is not True:
            if initial is None:
                raise ValueError(f"{name}: reduction with where= needs an initial value"
                                 f"{user_line()}.")
            x = _masked(x, where, initial)
        if axes and _count(x.shape, axes) == 0 and initial is None:
            raise ValueError(f"zero-size array to reduction operation {name} which has no "
                             f"identity{user_line()}; pass initial=.")
        if axes and _count(x.shape, axes) == 0:
            shape = tuple(s for i, s in enumerate(x.shape) if i not in axes)
            res = lax.full(shape, initial, x.dtype)
        else:
            if not axes:
                res = x
            elif x.dtype.kind == "c":
                res = _complex_extremum(x, axes, name == "max")
            else:
                res = reducer(x, axes)
            if initial is not None:
                res = combine(res, _c(initial, res))
        return _keep(res, axes, keepdims)
    f.__name__ = f.__qualname__ = name
    f.__doc__ = (f"The {name}imum over the given axes (nan if any element is nan; complex "
                 "numbers are ordered by the real part, then the imaginary part).")
    return f


def _complex_arg_extremum(x, axis, largest):
    """Index along `axis` of NumPy's complex max (largest) or min: lexicographic (real part,
    then imaginary part); the first element with a nan in either part wins; first on ties."""
    pick = lax.reduce_max if largest else lax.reduce_min
    re, im = lax.real(x), lax.imag(x)
    nan = lax.bitwise_or(lax.ne(re, re), lax.ne(im, im))
    worst = lax.full(re.shape, -np.inf if largest else np.inf, re.dtype)

    def spread(v):
        return lax.broadcast_in_dim(v, x.shape, tuple(i for i in range(x.ndim) if i != axis))

    re_ok = lax.select_n(nan, re, worst)
    cand = lax.bitwise_and(lax.eq(re_ok, spread(pick(re_ok, (axis,)))), lax.bitwise_not(nan))
    im_ok = lax.select_n(cand, worst, im)
    hit = lax.bitwise_and(cand, lax.eq(im_ok, spread(pick(im_ok, (axis,)))))
    any_nan = spread(lax.reduce_max(nan, (axis,)))
    return lax.argmax(lax.select_n(any_nan, hit, nan), axis, np.int64)


def _complex_extremum(x, axes, largest):
    """max / min of complex x over `axes`, picked by _complex_arg_extremum (a gather, so the
    derivative goes to the chosen element)."""
    from ._take import take_along_axis
    kept = [i for i in range(x.ndim) if i not in axes]
    flat = lax.reshape(lax.transpose(x, tuple(kept) + tuple(axes)),
                       tuple(x.shape[i] for i in kept) + (_count(x.shape, axes),))
    idx = _complex_arg_extremum(flat, flat.ndim - 1, largest)
    picked = take_along_axis(flat, lax.expand_dims(idx, (flat.ndim - 1,)), axis=-1)
    return lax.squeeze(picked, (flat.ndim - 1,))


def _combine_extremum(largest):
    def combine(x, y):
        from ._complex import extremum
        if x.dtype.kind == "c":
            return extremum(x, y, largest)
        return lax.max(x, y) if largest else lax.min(x, y)
    return combine


max = _extremum("max", lax.reduce_max, _combine_extremum(True))  # noqa: A001 (NumPy's name)
min = _extremum("min", lax.reduce_min, _combine_extremum(False))  # noqa: A001 (NumPy's name)
amax, amin = max, min


def _bool_reduce(name, reducer, empty):
    def f(a, axis=None, out=None, keepdims=False, *, where=None):
        _no_out(out, name)
        from ._logic import truth
        x = truth(a)
        axes = canonical_axes(axis, x.ndim)
        x = _masked(x, where, empty)
        if axes and _count(x.shape, axes) == 0:
            shape = tuple(s for i, s in enumerate(x.shape) if i not in axes)
            res = lax.full(shape, empty, np.bool_)
        else:
            res = reducer(x, axes) if axes else x
        return _keep(res, axes, keepdims)
    f.__name__ = f.__qualname__ = name
    return f


all = _bool_reduce("all", lax.reduce_min, True)  # noqa: A001 (NumPy's name)
any = _bool_reduce("any", lax.reduce_max, False)  # noqa: A001 (NumPy's name)
all.__doc__ = "Whether every element (over the given axes) is true."
any.__doc__ = "Whether some element (over the given axes) is true."


def ptp(a, axis=None, out=None, keepdims=False):
    """Peak to peak: max - min over the given axes."""
    _no_out(out, "ptp")
    from ._arithmetic import subtract
    return subtract(max(a, axis, keepdims=keepdims), min(a, axis, keepdims=keepdims))


def _mean_dtypes(x, dtype):
    """(dtype to accumulate in, dtype of the result) for mean/var: 16-bit floats sum in
    float32."""
    if dtype is not None:
        dt = check_dtype(dtype)
        return (np.dtype(np.float32) if is_small_float(dt) else dt), dt
    dt = np.dtype(np.float64) if x.dtype.kind in "biu" else x.dtype
    return (np.dtype(np.float32) if is_small_float(dt) else dt), dt


def _count_where(x, axes, where, dt, keepdims=True):
    if where is None or where is True:
        return np.array(_count(x.shape, axes), dt)
    from ._logic import truth
    w = convert(broadcast_to(truth(where), x.shape), dt)
    n = lax.reduce_sum(w, axes) if axes else w
    return lax.expand_dims(n, axes) if keepdims and axes else n


def mean(a, axis=None, dtype=None, out=None, keepdims=False, *, where=None):
    """Arithmetic mean over the given axes (integers average in float64)."""
    _no_out(out, "mean")
    x = asarray(a)
    axes = canonical_axes(axis, x.ndim)
    acc, dt = _mean_dtypes(x, dtype)
    s = sum(x, axes, dtype=acc, keepdims=keepdims, where=where)
    n = _count_where(x, axes, where, acc, keepdims)
    return convert(lax.div(s, n), dt)


def var(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, *, where=None, mean=None,
        correction=None):
    """Variance: mean squared deviation from the mean, divided by (n - ddof)."""
    _no_out(out, "var")
    if correction is not None:
        ddof = correction
    x = asarray(a)
    axes = canonical_axes(axis, x.ndim)
    acc, dt = _mean_dtypes(x, dtype)
    xf = convert(x, acc)
    if mean is None:
        m = _mean_kept(xf, axes, where, acc)
    else:
        m = convert(asarray(mean), acc)
        if not keepdims and axes:
            m = lax.expand_dims(m, axes) if m.ndim != x.ndim else m
        m = broadcast_to(m, tuple(1 if i in axes else s for i, s in enumerate(x.shape)))
    d = lax.sub(xf, broadcast_to(m, xf.shape))
    ss = sum(abs_squared(d), axes, keepdims=keepdims, where=where)
    n = _count_where(x, axes, where, ss.dtype, keepdims)
    denom = (lax.sub(n, _c(ddof, n)) if type(n) is not np.ndarray
             else np.array(n - ddof, n.dtype))
    return convert(lax.div(ss, denom), lax.real_dtype(dt))


def _mean_kept(xf, axes, where, acc):
    s = sum(xf, axes, keepdims=True, where=where)
    n = _count_where(xf, axes, where, acc, True)
    return lax.div(s, n)


def std(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, *, where=None, mean=None,
        correction=None):
    """Standard deviation: the square root of var."""
    v = var(a, axis, dtype, out, ddof, keepdims, where=where, mean=mean, correction=correction)
    return lax.sqrt(v)


def _arg_reduce(name, lax_fn):
    largest = name == "argmax"

    def arg(x, axis):
        if x.dtype.kind == "c":
            return _complex_arg_extremum(x, axis, largest)
        return lax_fn(x, axis)

    def f(a, axis=None, out=None, *, keepdims=False):
        _no_out(out, name)
        x = asarray(a)
        if axis is None:
            flat = lax.reshape(x, (x.size,))
            res = arg(flat, 0)
            return lax.reshape(res, (1,) * x.ndim) if keepdims else res
        ax = canonical_axis(axis, x.ndim)
        res = arg(x, ax)
        return lax.expand_dims(res, (ax,)) if keepdims else res
    f.__name__ = f.__qualname__ = name
    f.__doc__ = f"Index (int64) of the {name[3:]}imum along an axis (of the flattened array " \
                "for axis=None); the first one on ties."
    return f


argmax = _arg_reduce("argmax", lax.argmax)
argmin = _arg_reduce("argmin", lax.argmin)


def count_nonzero(a, axis=None, *, keepdims=False):
    """The number (int64) of non-zero elements over the given axes."""
    from ._logic import truth
    return sum(truth(a), axis, dtype=np.int64, keepdims=keepdims)


def average(a, axis=None, weights=None, returned=False, *, keepdims=False):
    """Weighted mean over the given axes; with `returned`, also the sum of the weights."""
    x = asarray(a)
    if weights is None:
        avg = mean(x, axis, keepdims=keepdims)
        if not returned:
            return avg
        axes = canonical_axes(axis, x.ndim)
        n = np.array(_count(x.shape, axes), avg.dtype)
        return avg, broadcast_to(n, avg.shape)
    w = asarray(weights)
    if x.dtype.kind in "biu":
        dt = np.result_type(x.dtype, w.dtype, np.float64)
    else:
        dt = np.result_type(x.dtype, w.dtype)
    x, w = convert(x, dt), convert(w, dt)
    if w.shape != x.shape:
        if axis is None or w.ndim != 1:
            raise TypeError(f"average: weights of shape {w.shape} differ from a's shape "
                            f"{x.shape}; 1-D weights need an axis{user_line()}.")
        ax = canonical_axis(axis, x.ndim)
        if w.shape[0] != x.shape[ax]:
            raise ValueError(f"average: length of weights ({w.shape[0]}) differs from axis {ax} "
                             f"of a (shape {x.shape}){user_line()}.")
        w = lax.broadcast_in_dim(w, x.shape, (ax,))
    wsum = sum(w, axis, keepdims=keepdims)
    avg = lax.div(sum(lax.mul(x, w), axis, keepdims=keepdims), wsum)
    return (avg, wsum) if returned else avg


# ---------------------------------------------------------------------------------------------
# nan-ignoring reductions

def _nan_replaced(a, fill):
    x = asarray(a)
    if dtype_kind(x.dtype) not in "fc":
        return x
    return lax.select_n(lax.ne(x, x), x, lax.full(x.shape, fill, x.dtype))


def nansum(a, axis=None, dtype=None, out=None, keepdims=False, initial=None, where=None):
    """sum treating nans as zero."""
    return sum(_nan_replaced(a, 0), axis, dtype, out, keepdims, initial, where)


def nanprod(a, axis=None, dtype=None, out=None, keepdims=False, initial=None, where=None):
    """prod treating nans as one."""
    return prod(_nan_replaced(a, 1), axis, dtype, out, keepdims, initial, where)


def _nan_extremum(name, fn, fill):
    def f(a, axis=None, out=None, keepdims=False, initial=None, where=None):
        x = asarray(a)
        if dtype_kind(x.dtype) not in "fc":
            return fn(x, axis, out, keepdims, initial, where)
        res = fn(_nan_replaced(x, fill), axis, out, keepdims, initial, where)
        # All-nan slices give nan, as NumPy (which also warns).
        all_nan = _bool_reduce_all(lax.ne(x, x), axis, keepdims)
        return lax.select_n(all_nan, res, lax.full(res.shape, np.nan, res.dtype))
    f.__name__ = f.__qualname__ = name
    f.__doc__ = f"{name[3:]} ignoring nans (nan for slices that are all nan)."
    return f


def _bool_reduce_all(x, axis, keepdims):
    return all(x, axis, keepdims=keepdims)


nanmax = _nan_extremum("nanmax", max, -np.inf)
nanmin = _nan_extremum("nanmin", min, np.inf)


def _nan_arg(name, fn, fill):
    def f(a, axis=None, out=None, *, keepdims=False):
        return fn(_nan_replaced(a, fill), axis, out, keepdims=keepdims)
    f.__name__ = f.__qualname__ = name
    f.__doc__ = f"{name[3:]} ignoring nans."
    return f


nanargmax = _nan_arg("nanargmax", argmax, -np.inf)
nanargmin = _nan_arg("nanargmin", argmin, np.inf)


def _not_nan_count(x, axis, keepdims, dt):
    return sum(lax.eq(x, x), axis, dtype=dt, keepdims=keepdims)


def nanmean(a, axis=None, dtype=None, out=None, keepdims=False, *, where=None):
    """mean over the elements that are not nan."""
    x = asarray(a)
    if dtype_kind(x.dtype) not in "fc":
        return mean(x, axis, dtype, out, keepdims, where=where)
    acc, dt = _mean_dtypes(x, dtype)
    s = sum(_nan_replaced(x, 0), axis, dtype=acc, keepdims=keepdims, where=where)
    n = sum(lax.bitwise_and(lax.eq(x, x), broadcast_to(_where_mask(where), x.shape)), axis,
            dtype=acc, keepdims=keepdims)
    return convert(lax.div(s, n), dt)


def _where_mask(where):
    from ._logic import truth
    return np.array(True) if where is None or where is True else truth(where)


def nanvar(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, *, where=None,
           mean=None, correction=None):
    """var over the elements that are not nan."""
    x = asarray(a)
    if dtype_kind(x.dtype) not in "fc":
        return var(x, axis, dtype, out, ddof, keepdims, where=where, correction=correction)
    if correction is not None:
        ddof = correction
    acc, dt = _mean_dtypes(x, dtype)
    xf = convert(x, acc)
    valid = lax.bitwise_and(lax.eq(xf, xf), broadcast_to(_where_mask(where), x.shape))
    m = nanmean(xf, axis, keepdims=True, where=where)
    d = lax.sub(xf, broadcast_to(m, xf.shape))
    d = lax.select_n(valid, lax.full(xf.shape, 0, acc), d)
    ss = sum(abs_squared(d), axis, keepdims=keepdims)
    n = sum(valid, axis, dtype=ss.dtype, keepdims=keepdims)
    return convert(lax.div(ss, lax.sub(n, _c(ddof, n))), lax.real_dtype(dt))


def nanstd(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, *, where=None,
           mean=None, correction=None):
    """std over the elements that are not nan."""
    return lax.sqrt(nanvar(a, axis, dtype, out, ddof, keepdims, where=where,
                           correction=correction))


# ---------------------------------------------------------------------------------------------
# Cumulative reductions

def _cumulative(name, lax_name, fill=None):
    def f(a, axis=None, dtype=None, out=None):
        _no_out(out, name)
        x = asarray(a)
        if fill is not None and dtype_kind(x.dtype) in "fc":
            x = _nan_replaced(x, fill)
        if axis is None:
            x = lax.reshape(x, (x.size,))
            axis = 0
        ax = canonical_axis(axis, x.ndim) if x.ndim else 0
        if x.ndim == 0:
            x = lax.reshape(x, (1,))
        x = convert(x, _sum_dtype(x.dtype) if dtype is None else np.dtype(dtype))
        return getattr(lax, lax_name)(x, ax)
    f.__name__ = f.__qualname__ = name
    f.__doc__ = f"Running {lax_name[3:]} along an axis (of the flattened array for axis=None)."
    return f


cumsum = _cumulative("cumsum", "cumsum")
cumprod = _cumulative("cumprod", "cumprod")
nancumsum = _cumulative("nancumsum", "cumsum", 0)
nancumprod = _cumulative("nancumprod", "cumprod", 1)


def _cumulative_v2(name, fn, identity):
    def f(x, /, *, axis=None, dtype=None, out=None, include_initial=False):
        a = asarray(x)
        if axis is None:
            if a.ndim > 1:
                raise ValueError(f"{name}: axis is required for arrays of rank > 1"
                                 f"{user_line()}.")
            axis = 0
        res = fn(a, axis, dtype, out)
        if include_initial:
            ax = canonical_axis(axis, res.ndim)
            shape = res.shape[:ax] + (1,) + res.shape[ax + 1:]
            res = lax.concatenate([lax.full(shape, identity, res.dtype), res], ax)
        return res
    f.__name__ = f.__qualname__ = name
    f.__doc__ = f"The array API's {name}: {fn.__name__} with an optional leading identity."
    return f


cumulative_sum = _cumulative_v2("cumulative_sum", cumsum, 0)
cumulative_prod = _cumulative_v2("cumulative_prod", cumprod, 1)


# ---------------------------------------------------------------------------------------------
# Sorting and order statistics

def sort(a, axis=-1, kind=None, order=None, *, stable=None):
    """A sorted copy along an axis (flattened for axis=None); nans sort last. Always stable."""
    x = asarray(a)
    if axis is None:
        x, axis = lax.reshape(x, (x.size,)), 0
    if x.ndim == 0:
        return x
    return lax.sort(x, dimension=canonical_axis(axis, x.ndim))


def argsort(a, axis=-1, kind=None, order=None, *, stable=None):
    """Indices (int64) that sort `a` along an axis; ties keep their order (stable)."""
    x = asarray(a)
    if axis is None:
        x, axis = lax.reshape(x, (x.size,)), 0
    if x.ndim == 0:
        return lax.convert_element_type(lax.full((), 0, np.int64), np.int64)
    return lax.argsort(x, dimension=canonical_axis(axis, x.ndim))


def static_quantiles(q, name):
    if type(q) is Tracer:
        try:
            return to_host(q.concrete_value(f"{name}'s q"))
        except TypeError as e:
            raise TypeError(f"{name}: q must be known when tracing (a Python number or NumPy "
                            f"array){user_line()}.") from e
    return np.asarray(q)


def lerp(a, b, t):
    """a + (b - a) * t, computed from the nearer end as NumPy's quantile does."""
    diff = lax.sub(b, a)
    lo = lax.add(a, lax.mul(diff, t))
    hi = lax.sub(b, lax.mul(diff, lax.sub(_c(1, t), t)))
    return lax.select_n(lax.ge(t, _c(0.5, t)), lo, hi)


def _take_static(x, idx, axis):
    from ._shape import take_static
    return take_static(x, idx, axis)


def quantile_item(q):
    """q for dtype promotion: a Python scalar stays weak, a list or array is strong."""
    if type(q) in (int, float):
        return q
    return static_quantiles(q, "quantile").dtype


def quantile(a, q, axis=None, out=None, overwrite_input=False, method="linear",
             keepdims=False, *, weights=None, interpolation=None):
    """The q-th quantiles (q in [0, 1], static) along the given axes, with linear
    interpolation between order statistics (NumPy's default method)."""
    return _quantile(a, static_quantiles(q, "quantile"), quantile_item(q), axis, out, method,
                     keepdims, weights, interpolation)


def percentile(a, q, axis=None, out=None, overwrite_input=False, method="linear",
               keepdims=False, *, weights=None, interpolation=None):
    """quantile with q in percent."""
    qs = static_quantiles(q, "percentile")
    return _quantile(a, qs / 100, quantile_item(q), axis, out, method, keepdims, weights,
                     interpolation)


def _quantile(a, qs, q_item, axis, out, method, keepdims, weights, interpolation):
    _no_out(out, "quantile")
    if weights is not None or method != "linear" or interpolation is not None:
        raise NotImplementedError("quantile supports method='linear' without weights only.")
    x = asarray(a)
    if np.any((qs < 0) | (qs > 1)):
        raise ValueError("Quantiles must be in the range [0, 1]")
    dt = inexact_dtype(np.result_type(x.dtype, q_item))
    axes = canonical_axes(axis, x.ndim)
    kept = [i for i in range(x.ndim) if i not in axes]
    n = _count(x.shape, axes)
    xt = lax.transpose(x, tuple(kept) + axes)
    xt = lax.reshape(xt, tuple(x.shape[i] for i in kept) + (n,))
    xs = convert(sort(xt, axis=-1), dt)
    pos = np.asarray(qs, np.float64).reshape(-1) * (n - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    last = xs.ndim - 1
    vlo, vhi = _take_static(xs, lo, last), _take_static(xs, hi, last)
    t = np.asarray(pos - lo, dt)
    res = lerp(vlo, vhi, lax.broadcast_in_dim(t, vlo.shape, (last,)))
    # The q axes come first, then the kept (or, with keepdims, size-1) axes.
    res = lax.transpose(res, (last,) + tuple(range(last)))
    kept_shape = tuple(1 if i in axes else s for i, s in enumerate(x.shape)) if keepdims else \
        tuple(x.shape[i] for i in kept)
    return lax.reshape(res, np.shape(qs) + kept_shape)


def median(a, axis=None, out=None, overwrite_input=False, keepdims=False):
    """The middle value (mean of the two middle values) along the given axes."""
    return quantile(a, 0.5, axis, out, overwrite_input, keepdims=keepdims)


# ---------------------------------------------------------------------------------------------
# Differences, integrals, statistics of pairs

def diff(a, n=1, axis=-1, prepend=None, append=None):
    """The n-th discrete difference along an axis (booleans: not_equal)."""
    from ._shape import concatenate
    x = asarray(a)
    if n == 0:
        return x
    if n < 0:
        raise ValueError(f"order must be non-negative but got {n}")
    if x.ndim == 0:
        raise ValueError("diff requires input that is at least one dimensional")
    ax = canonical_axis(axis, x.ndim)
    def edge(e):
        e = asarray(e)
        return broadcast_to(e, x.shape[:ax] + (1,) + x.shape[ax + 1:]) if e.ndim == 0 else e

    parts = ([edge(prepend)] if prepend is not None else []) + [x] + (
        [edge(append)] if append is not None else [])
    x = concatenate(parts, axis=ax) if len(parts) > 1 else x
    for _ in range(n):
        m = x.shape[ax]
        start = [0] * x.ndim
        upper = list(x.shape)
        upper[ax] = builtins.max(m - 1, 0)
        start1 = list(start)
        start1[ax] = 1 if m else 0
        hi = lax.slice(x, start1, x.shape)
        lo = lax.slice(x, start, upper)
        x = lax.ne(hi, lo) if x.dtype.kind == "b" else lax.sub(hi, lo)
    return x


def ediff1d(ary, to_end=None, to_begin=None):
    """Differences of consecutive elements of the flattened array, with optional ends."""
    from ._shape import concatenate, ravel
    x = ravel(asarray(ary))
    d = lax.sub(lax.slice(x, (1,), x.shape), lax.slice(x, (0,), (builtins.max(x.size - 1, 0),))) \
        if x.size else x
    parts = []
    if to_begin is not None:
        parts.append(convert(ravel(asarray(to_begin)), d.dtype))
    parts.append(d)
    if to_end is not None:
        parts.append(convert(ravel(asarray(to_end)), d.dtype))
    return concatenate(parts) if len(parts) > 1 else d


def gradient(f, *varargs, axis=None, edge_order=1):
    """Central differences inside, one-sided at the edges (uniform scalar spacings)."""
    x = asarray(f)
    axes = canonical_axes(axis, x.ndim)
    if edge_order != 1:
        raise NotImplementedError("gradient supports edge_order=1 only")
    spacings = list(varargs) or [1.0]
    if len(spacings) == 1:
        spacings = spacings * len(axes)
    if len(spacings) != len(axes) or builtins.any(np.ndim(s) != 0 for s in spacings):
        raise NotImplementedError("gradient supports one scalar spacing per axis only")
    dt = np.dtype(np.float64) if x.dtype.kind in "biu" else x.dtype
    xf = convert(x, dt)
    outs = []
    for ax, h in zip(axes, spacings):
        m = x.shape[ax]
        if m < 2:
            raise ValueError("Shape of array too small to calculate a numerical gradient, at "
                             "least (edge_order + 1) elements are required.")

        def sl(lo, hi, ax=ax):
            start = [0] * xf.ndim
            stop = list(xf.shape)
            start[ax], stop[ax] = lo, hi
            return lax.slice(xf, start, stop)

        hh = np.array(h, dt)
        first = lax.div(lax.sub(sl(1, 2), sl(0, 1)), hh)
        last = lax.div(lax.sub(sl(m - 1, m), sl(m - 2, m - 1)), hh)
        parts = [first]
        if m > 2:
            parts.append(lax.div(lax.sub(sl(2, m), sl(0, m - 2)), np.array(2 * h, dt)))
        parts.append(last)
        outs.append(lax.concatenate(parts, ax))
    return outs[0] if len(outs) == 1 else tuple(outs)


def trapezoid(y, x=None, dx=1.0, axis=-1):
    """Integral of y along an axis by the trapezoidal rule (sample points x, or spacing dx)."""
    from ._arithmetic import multiply, true_divide
    yv = asarray(y)
    ax = canonical_axis(axis, yv.ndim)
    m = yv.shape[ax]

    def sl(v, lo, hi):
        start = [0] * v.ndim
        stop = list(v.shape)
        start[ax], stop[ax] = lo, hi
        return lax.slice(v, start, stop)

    from ._arithmetic import add
    avg = add(sl(yv, 1, m), sl(yv, 0, builtins.max(m - 1, 0)))
    if x is None:
        d = dx
    else:
        xv = asarray(x)
        if xv.ndim == 1:
            d = diff(xv)
            shape = [1] * yv.ndim
            shape[ax] = d.shape[0]
            d = lax.reshape(d, shape)
        else:
            d = diff(xv, axis=ax)
    return true_divide(sum(multiply(d, avg), axis=ax), 2.0)


def cov(m, y=None, rowvar=True, bias=False, ddof=None, fweights=None, aweights=None, *,
        dtype=None):
    """Covariance matrix of the variables in the rows (columns when rowvar=False) of m."""
    if fweights is not None or aweights is not None:
        raise NotImplementedError("cov: fweights/aweights are not supported yet")
    from ._products import matmul
    from ._shape import atleast_2d, concatenate
    x = asarray(m)
    if x.ndim > 2:
        raise ValueError("m has more than 2 dimensions")
    dt = np.result_type(x.dtype, np.float64) if dtype is None else np.dtype(dtype)
    x = convert(atleast_2d(x), dt)
    if not rowvar and x.shape[0] != 1:
        x = lax.transpose(x, (1, 0))
    if y is not None:
        yv = convert(atleast_2d(asarray(y)), dt)
        if not rowvar and yv.shape[0] != 1:
            yv = lax.transpose(yv, (1, 0))
        x = concatenate([x, yv], axis=0)
    if ddof is None:
        ddof = 0 if bias else 1
    n = x.shape[1]
    xc = lax.sub(x, lax.broadcast_in_dim(mean(x, axis=1), x.shape, (0,)))
    xh = lax.transpose(lax.conj(xc) if xc.dtype.kind == "c" else xc, (1, 0))
    c = lax.div(matmul(xc, xh), np.array(n - ddof, dt))
    return lax.reshape(c, ()) if c.shape == (1, 1) else c


def corrcoef(x, y=None, rowvar=True, *, dtype=None):
    """Pearson correlation coefficients of the variables (rows when rowvar)."""
    from ._arithmetic import clip
    c = cov(x, y, rowvar, dtype=dtype)
    if c.ndim == 0:
        return lax.div(c, c)
    d = _diag_of(c)
    d = lax.sqrt(lax.real(d) if d.dtype.kind == "c" else d)
    d = convert(d, c.dtype)
    c = lax.div(c, lax.broadcast_in_dim(d, c.shape, (0,)))
    c = lax.div(c, lax.broadcast_in_dim(d, c.shape, (1,)))
    if c.dtype.kind == "c":  # each part clipped, as NumPy
        return lax.complex(clip(lax.real(c), -1, 1), clip(lax.imag(c), -1, 1))
    return clip(c, -1, 1)


def _diag_of(c):
    n = c.shape[0]
    eye = lax.eq(lax.iota(np.int64, (n, n), 0), lax.iota(np.int64, (n, n), 1))
    return lax.reduce_sum(lax.select_n(eye, lax.full(c.shape, 0, c.dtype), c), (1,))


__all__ = sorted({n for n, v in list(globals().items())
                  if not n.startswith("_") and callable(v)
                  and getattr(v, "__module__", "") == __name__} | {"amax", "amin"})
