"""More of NumPy's API, composed from the rest of funcgrad.numpy: convolution, interpolation and
polynomials, set operations and unique (concrete, or fixed-size with `size=` as in JAX),
histograms, nan-ignoring order statistics, integer and float utilities (gcd, frexp, spacing,
i0), window functions, and Python-level wrappers over vmap (vectorize, apply_along_axis).

Functions whose output shape depends on the data (unique, the set operations, bincount,
trim_zeros) read concrete values eagerly (also under eager grad), and under jit/vmap take
`size=` (and `fill_value=`) or `length=`, as in JAX; otherwise they raise ConcretizationError.
"""

from __future__ import annotations

import builtins
import collections
import math
import operator
import re

import numpy as np

from .. import lax
from ..core import Tracer, to_host, user_line
from ._core import (
    asarray,
    broadcast_shapes,
    broadcast_to,
    canonical_axes,
    canonical_axis,
    convert,
    inexact_dtype,
    is_array,
    promote2,
    result_type,
)
from ._creation import linspace, zeros, zeros_like
from ._indexing import INDEX, _concrete, _is_concrete
from ._nonzero import nonzero
from ._reductions import any as _any
from ._reductions import argmax, argsort, cumsum, diff, quantile, sort
from ._reductions import sum as _sum
from ._shape import (
    concatenate,
    expand_dims,
    moveaxis,
    ravel,
    reshape,
    take_static,
)
from ._sorting import searchsorted
from ._take import take, take_along_axis
from ._ufuncs import _inexact as _inexact_arr
from ._ufuncs import abs as _abs
from ._ufuncs import (
    add,
    cos,
    equal,
    isnan,
    logical_not,
    matmul,
    multiply,
    not_equal,
    remainder,
    subtract,
    true_divide,
    where,
)
from ._ufuncs import clip as _clip

# Dtype aliases NumPy 2 has (object_ is left out: funcgrad arrays hold numbers only).
bool = np.bool_  # noqa: A001 (NumPy's name)
uint = np.uint
cdouble, csingle = np.cdouble, np.csingle


def _static_int(x, what):
    if type(x) is Tracer:
        x = _concrete(x, what)
    return operator.index(np.asarray(x).item()) if np.ndim(x) == 0 else operator.index(x)


def _needs_size(what, x):
    """x's concrete value, or a ConcretizationError that points at size=."""
    return _concrete(x, what, "Under jit/vmap pass a static size (size=..., fill_value=... for "
                              "the padding; length=... for bincount), or call it outside the "
                              "transform.")


# ---------------------------------------------------------------------------------------------
# Convolution, interpolation, polynomials

def _xcorr(x, y, pad_lo, pad_hi):
    """Valid cross-correlation of the zero-padded 1-D x with y: out[k] = sum_j xpad[k+j] y[j]."""
    from ..lax.indexing import gather
    if pad_lo or pad_hi:
        x = lax.pad(x, np.zeros((), x.dtype), [(pad_lo, pad_hi, 0)])
    n, m = x.shape[0], y.shape[0]
    windows = np.arange(n - m + 1)[:, None] + np.arange(m)[None, :]
    return matmul(gather(x, windows[..., None]), y)


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
    """Cross-correlation of two 1-D sequences: c[k] = sum_n a[n+k] v[n] (modes valid/same/full)."""
    return _conv(a, v, mode, "correlate")


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
        if _is_concrete(period) and float(np.asarray(period)) == 0:
            raise ValueError("period must be a non-zero value")
        period = _abs(asarray(period, dt))
        x = remainder(x, period)
        xp = remainder(xp, period)
        xp, fp = lax.indexing.sort(xp, fp, dimension=0)
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
    if z.dtype.kind not in "fc":
        z = convert(z, np.float64)
    if z.shape[0] == 0:
        return 1.0
    a = np.ones((1,), z.dtype)
    for i in range(z.shape[0]):
        a = convolve(a, concatenate([np.ones((1,), z.dtype), reshape(-z[i], (1,))]))
    return a


# ---------------------------------------------------------------------------------------------
# Counting, membership, insertion, assembly

def bincount(x, weights=None, minlength=0, *, length=None):
    """Counts (or summed weights, float64) of each non-negative integer in the 1-D x; under
    jit/vmap pass a static `length` (values outside [0, length) are dropped)."""
    from ..lax.indexing import scatter_add
    x = asarray(x)
    if x.ndim != 1:
        raise ValueError(f"bincount: x must be 1-dimensional, got shape {tuple(x.shape)}")
    if x.dtype.kind not in "iub":
        raise TypeError(f"Cannot cast array data from {x.dtype} to int64 according to the rule "
                        "'safe'")
    minlength = operator.index(minlength)
    if minlength < 0:
        raise ValueError("'minlength' must not be negative")
    if length is None:
        v = _needs_size("bincount", x)
        if v.size and v.min() < 0:
            raise ValueError("'list' argument must have no negative elements")
        length = builtins.max(minlength, int(v.max()) + 1 if v.size else 0)
    length = operator.index(length)
    if weights is None:
        w = lax.full(x.shape, 1, INDEX)
    else:
        w = convert(broadcast_to(asarray(weights), x.shape), np.dtype(np.float64))
    idx = lax.max(convert(x, INDEX), np.zeros((), INDEX))
    return scatter_add(lax.full((length,), 0, w.dtype), lax.expand_dims(idx, (1,)), w)


def isin(element, test_elements, assume_unique=False, invert=False, *, kind=None):
    """Elementwise: whether each element of `element` is in test_elements (shape of element)."""
    e = asarray(element)
    t = ravel(asarray(test_elements))
    if t.shape[0] == 0:
        out = lax.full(e.shape, False, np.bool_)
    else:
        out = _any(equal(expand_dims(e, -1), t), axis=-1)
    return logical_not(out) if invert else out


def insert(arr, obj, values, axis=None):
    """arr with `values` inserted before the static indices (int, slice or sequence) `obj`."""
    x = asarray(arr)
    if axis is None:
        x, axis = ravel(x), 0
    ax = canonical_axis(axis, x.ndim)
    n = x.shape[ax]
    if type(obj) is Tracer:
        obj = _concrete(obj, "insert's indices")
    if isinstance(obj, slice):
        indices = np.arange(*obj.indices(n), dtype=INDEX)
    else:
        indices = np.array(obj)
        if indices.dtype == np.bool_:
            raise IndexError("insert: boolean index arrays are not supported")
        if indices.ndim > 1:
            raise ValueError("index array argument obj to insert must be one dimensional or "
                             "scalar")
        indices = indices.astype(INDEX)
    v = asarray(values, x.dtype) if not is_array(values) else convert(asarray(values), x.dtype)
    if v.ndim < x.ndim:
        v = reshape(v, (1,) * (x.ndim - v.ndim) + tuple(v.shape))
    if indices.size == 1:
        index = int(indices.item())
        if not -n <= index <= n:
            raise IndexError(f"index {index} is out of bounds for axis {ax} with size {n}")
        index = index + n if index < 0 else index
        if indices.ndim == 0:
            v = moveaxis(v, 0, ax)
        numnew = v.shape[ax]
        perm = np.concatenate([np.arange(index), n + np.arange(numnew), np.arange(index, n)])
    elif indices.size == 0 and not isinstance(obj, (int, np.integer)):
        return x
    else:
        if np.any((indices < -n) | (indices > n)):
            raise IndexError(f"index out of bounds for axis {ax} with size {n}")
        indices = np.where(indices < 0, indices + n, indices)
        numnew = len(indices)
        order = indices.argsort(kind="mergesort")
        indices[order] += np.arange(numnew)
        perm = np.empty(n + numnew, INDEX)
        old = np.ones(n + numnew, bool)
        old[indices] = False
        perm[indices] = n + np.arange(numnew)
        perm[old] = np.arange(n)
    block_shape = x.shape[:ax] + (numnew,) + x.shape[ax + 1:]
    v = broadcast_to(v, block_shape)
    return take_static(concatenate([x, v], axis=ax), perm, ax)


def _block_depth(a):
    if isinstance(a, tuple):
        raise TypeError("block: arrays is a tuple. Only lists can be used to arrange blocks, and "
                        "np.block does not allow implicit conversion from tuple to ndarray.")
    if isinstance(a, list):
        if not a:
            raise ValueError("block: lists cannot be empty")
        depths = [_block_depth(e) for e in a]
        if any(d != depths[0] for d in depths):
            raise ValueError("block: list depths are mismatched")
        return depths[0] + 1
    return 0


def _block_ndim(a):
    if isinstance(a, list):
        return builtins.max(_block_ndim(e) for e in a)
    return asarray(a).ndim


def block(arrays):
    """Assemble an array from nested lists of blocks (innermost lists join along the last axis)."""
    depth = _block_depth(arrays)
    nd = builtins.max(depth, _block_ndim(arrays))

    def build(a, level):
        if not isinstance(a, list):
            a = asarray(a)
            return reshape(a, (1,) * (nd - a.ndim) + tuple(a.shape))
        return concatenate([build(e, level + 1) for e in a], axis=nd - depth + level)

    return build(arrays, 0)


# ---------------------------------------------------------------------------------------------
# Python-level wrappers over vmap

_DIMS = r"\w+"
_CORE = rf"(?:{_DIMS}(?:,{_DIMS})*)?"
_ARGS = rf"\({_CORE}\)(?:,\({_CORE}\))*"
_SIGNATURE = rf"^{_ARGS}->{_ARGS}$"


def _parse_signature(signature):
    sig = re.sub(r"\s+", "", signature)
    if not re.match(_SIGNATURE, sig):
        raise ValueError(f"not a valid gufunc signature: {signature}")
    ins, outs = sig.split("->")
    parse = lambda s: [tuple(re.findall(_DIMS, arg)) for arg in re.findall(rf"\({_CORE}\)", s)]
    return parse(ins), parse(outs)


def vectorize(pyfunc, *, excluded=frozenset(), signature=None, otypes=None, doc=None,
              cache=False):
    """A function mapping pyfunc over the broadcast leading axes of its array arguments with
    fg.vmap (core axes from a gufunc `signature`; `excluded` positions/names pass through)."""
    from ..transforms.vmap import vmap
    from ..tree_util import tree_map
    excluded = frozenset(excluded)
    in_core = out_core = None
    if signature is not None:
        in_core, out_core = _parse_signature(signature)

    def wrapped(*args, **kwargs):
        pos = [i for i in range(len(args)) if i not in excluded]
        names = [k for k in kwargs if k not in excluded]
        vec = [asarray(args[i]) for i in pos] + [asarray(kwargs[k]) for k in names]
        cores = in_core if in_core is not None else [()] * len(vec)
        if len(cores) != len(vec):
            raise TypeError(f"wrong number of positional arguments: expected {len(cores)}, got "
                            f"{len(vec)}")
        batch_shapes, sizes = [], {}
        for v, core in zip(vec, cores):
            if v.ndim < len(core):
                raise ValueError(f"input with shape {tuple(v.shape)} does not have enough "
                                 f"dimensions for its core dimensions {core}")
            lead = v.ndim - len(core)
            for name, s in zip(core, v.shape[lead:]):
                if sizes.setdefault(name, s) != s:
                    raise ValueError(f"inconsistent size for core dimension {name!r}: "
                                     f"{sizes[name]} vs {s}")
            batch_shapes.append(tuple(v.shape[:lead]))
        batch = broadcast_shapes(*batch_shapes) if batch_shapes else ()
        flat = [reshape(broadcast_to(v, batch + tuple(v.shape[len(b):])),
                        (math.prod(batch),) + tuple(v.shape[len(b):]))
                for v, b in zip(vec, batch_shapes)]

        def call(*vals):
            a, kw = list(args), dict(kwargs)
            for i, val in zip(pos, vals):
                a[i] = val
            for k, val in zip(names, vals[len(pos):]):
                kw[k] = val
            out = pyfunc(*a, **kw)
            return tree_map(asarray, out)

        if not batch:
            out = call(*vec)
        else:
            out = vmap(call)(*flat)
            out = tree_map(lambda o: reshape(o, batch + tuple(o.shape[1:])), out)
        if otypes:
            types = list(otypes) if not isinstance(otypes, str) else list(otypes)
            if isinstance(out, tuple):
                out = tuple(convert(o, np.dtype(t)) for o, t in zip(out, types))
            else:
                out = convert(out, np.dtype(types[0]))
        return out

    wrapped.__name__ = getattr(pyfunc, "__name__", "vectorized")
    wrapped.__doc__ = doc if doc is not None else pyfunc.__doc__
    return wrapped


def apply_along_axis(func1d, axis, arr, *args, **kwargs):
    """func1d applied to every 1-D slice of arr along axis (with fg.vmap); its output axes take
    the place of that axis."""
    from ..transforms.vmap import vmap
    x = asarray(arr)
    ax = canonical_axis(axis, x.ndim)
    xt = moveaxis(x, ax, -1)
    batch = tuple(xt.shape[:-1])
    flat = reshape(xt, (math.prod(batch), xt.shape[-1]))
    out = vmap(lambda r: asarray(func1d(r, *args, **kwargs)))(flat)
    core = tuple(out.shape[1:])
    out = reshape(out, batch + core)
    if core:
        k = len(batch)
        out = moveaxis(out, list(range(k, k + len(core))), list(range(ax, ax + len(core))))
    return out


def apply_over_axes(func, a, axes):
    """func(a, axis) applied over each axis in turn, keeping the reduced axes (size 1)."""
    val = asarray(a)
    n = val.ndim
    for axis in ((axes,) if np.ndim(axes) == 0 else axes):
        axis = axis + n if axis < 0 else axis
        res = asarray(func(val, axis))
        if res.ndim != val.ndim:
            res = expand_dims(res, axis)
            if res.ndim != val.ndim:
                raise ValueError("function is not returning an array of the correct shape")
        val = res
    return val


# ---------------------------------------------------------------------------------------------
# Sorting: partition, lexsort, sort_complex

def _check_kth(kth, n):
    ks = np.asarray(kth)
    if ks.dtype.kind not in "iu":
        raise TypeError("Partition index must be integer")
    if ks.size and (ks.min() < -n or ks.max() >= n):
        raise ValueError(f"kth(={ks.ravel()[0]}) out of bounds ({n})")


def partition(a, kth, axis=-1, kind="introselect", order=None):
    """A partitioned copy: the kth element in sorted position, smaller before, larger after
    (implemented as a full sort, which satisfies NumPy's contract)."""
    x = asarray(a)
    if axis is None:
        x, axis = ravel(x), 0
    _check_kth(kth, x.shape[canonical_axis(axis, x.ndim)])
    return sort(x, axis=axis)


def argpartition(a, kth, axis=-1, kind="introselect", order=None):
    """Indices that partition a (implemented as a stable argsort, which satisfies the contract)."""
    x = asarray(a)
    if axis is None:
        x, axis = ravel(x), 0
    _check_kth(kth, x.shape[canonical_axis(axis, x.ndim)])
    return argsort(x, axis=axis)


def lexsort(keys, axis=-1):
    """Indices sorting by several keys: the last key is the primary one (stable)."""
    from ..lax.indexing import sort as lax_sort
    if isinstance(keys, (list, tuple)):
        ks = [asarray(k) for k in keys]
    else:
        k = asarray(keys)
        ks = [k[i] for i in range(k.shape[0])] if k.ndim else [k]
    if not ks:
        raise TypeError("need sequence of keys with len > 0 in lexsort")
    shape = broadcast_shapes(*(tuple(k.shape) for k in ks))
    if not shape:
        return np.array(0, INDEX)
    ax = canonical_axis(axis, len(shape))
    ks = [broadcast_to(k, shape) for k in ks]
    pos = lax.iota(INDEX, shape, ax)
    return lax_sort(*reversed(ks), pos, dimension=ax, num_keys=len(ks))[-1]


def sort_complex(a):
    """a sorted (by real part, then imaginary part) along its last axis, as a complex array."""
    x = sort(asarray(a))
    if x.dtype.kind == "c":
        return x
    return convert(x, np.dtype(np.complex64 if x.dtype.char in "bhBH" else np.complex128))


# ---------------------------------------------------------------------------------------------
# nan-ignoring order statistics

def _nanquantile(a, qs, q_item, axis, out, method, keepdims, weights, name, median=False):
    if out is not None:
        raise TypeError(f"{name}: out= is not supported (arrays are immutable)")
    x = asarray(a)
    if x.dtype.kind not in "fc":
        return quantile(x, qs, axis, method=method, keepdims=keepdims, weights=weights)
    if weights is not None or method != "linear":
        raise NotImplementedError(f"{name} supports method='linear' without weights only.")
    if np.any((qs < 0) | (qs > 1)):
        raise ValueError("Quantiles must be in the range [0, 1]")
    dt = inexact_dtype(np.result_type(x.dtype, q_item))
    axes = canonical_axes(axis, x.ndim)
    kept = [i for i in range(x.ndim) if i not in axes]
    n = math.prod(x.shape[i] for i in axes)
    xt = lax.transpose(x, tuple(kept) + axes)
    xt = lax.reshape(xt, tuple(x.shape[i] for i in kept) + (n,))
    xs = convert(sort(xt, axis=-1), dt)  # nans last
    count = _sum(logical_not(isnan(xt)), axis=-1, keepdims=True)  # (kept..., 1), int64
    qf = np.asarray(qs, np.float64).reshape(-1)
    pos = multiply(qf, convert(subtract(count, 1), np.dtype(np.float64)))  # (kept..., nq)
    lo_f = lax.floor(pos)
    lo = _clip(convert(lo_f, INDEX), 0, builtins.max(n - 1, 0))
    hi = _clip(add(lo, 1), 0, lax.max(subtract(count, 1), np.zeros((), INDEX)))
    t = convert(subtract(pos, lo_f), dt)
    vlo, vhi = take_along_axis(xs, lo, -1), take_along_axis(xs, hi, -1)
    from ._reductions import _lerp
    if median:  # NumPy's median: the middle value, or the mean of the two middle values
        res = where(t == 0, vlo, true_divide(add(vlo, vhi), np.array(2, dt)))
    else:
        res = _lerp(vlo, vhi, t)
    res = where(count == 0, np.array(np.nan, dt), res)
    last = res.ndim - 1
    res = lax.transpose(res, (last,) + tuple(range(last)))
    kept_shape = tuple(1 if i in axes else s for i, s in enumerate(x.shape)) if keepdims else \
        tuple(x.shape[i] for i in kept)
    return lax.reshape(res, np.shape(qs) + kept_shape)


def nanquantile(a, q, axis=None, out=None, overwrite_input=False, method="linear",
                keepdims=False, *, weights=None, interpolation=None):
    """quantile ignoring nans (nan for slices that are all nan); q static, in [0, 1]."""
    from ._reductions import _q_item, _static_q
    return _nanquantile(a, _static_q(q, "nanquantile"), _q_item(q), axis, out, method, keepdims,
                        weights, "nanquantile")


def nanpercentile(a, q, axis=None, out=None, overwrite_input=False, method="linear",
                  keepdims=False, *, weights=None, interpolation=None):
    """percentile ignoring nans; q static, in [0, 100]."""
    from ._reductions import _q_item, _static_q
    return _nanquantile(a, _static_q(q, "nanpercentile") / 100, _q_item(q), axis, out, method,
                        keepdims, weights, "nanpercentile")


def nanmedian(a, axis=None, out=None, overwrite_input=False, keepdims=False):
    """median ignoring nans (nan for slices that are all nan)."""
    return _nanquantile(a, np.asarray(0.5), 0.5, axis, out, "linear", keepdims, None,
                        "nanmedian", median=True)


# ---------------------------------------------------------------------------------------------
# Integer and floating-point utilities

def _int_pair(name, x1, x2):
    a, b = promote2(x1, x2)
    a, b = asarray(a), asarray(b)
    if a.dtype.kind not in "iu":
        raise TypeError(f"ufunc '{name}' did not contain a loop with signature matching types "
                        f"({a.dtype}, {b.dtype}){user_line()}")
    shape = broadcast_shapes(tuple(a.shape), tuple(b.shape))
    return broadcast_to(a, shape), broadcast_to(b, shape)


def _gcd(a, b):
    zero = np.zeros((), a.dtype)

    def cond(ab):
        return lax.reduce_max(lax.ne(ab[1], zero), tuple(range(a.ndim)))

    def body(ab):
        x, y = ab
        nz = lax.ne(y, zero)
        safe = lax.select_n(nz, lax.full(y.shape, 1, y.dtype), y)
        return lax.select_n(nz, x, y), lax.select_n(nz, lax.full(y.shape, 0, y.dtype),
                                                     lax.rem(x, safe))

    return lax.while_loop(cond, body, (_abs(a), _abs(b)))[0]


def gcd(x1, x2, /):
    """Greatest common divisor of |x1| and |x2|, elementwise (integers)."""
    return _gcd(*_int_pair("gcd", x1, x2))


def lcm(x1, x2, /):
    """Lowest common multiple of |x1| and |x2|, elementwise (integers; 0 if either is 0)."""
    a, b = _int_pair("lcm", x1, x2)
    g = _gcd(a, b)
    zero = lax.eq(g, np.zeros((), g.dtype))
    safe = lax.select_n(zero, g, lax.full(g.shape, 1, g.dtype))
    return lax.select_n(zero, _abs(lax.mul(lax.div(a, safe), b)), lax.full(g.shape, 0, g.dtype))


def _scale2(x, e):
    """x * 2**-e exactly (in two steps, so that no power of two over- or underflows)."""
    h = lax.div(e, np.array(2, e.dtype))
    for k in (h, lax.sub(e, h)):
        x = lax.mul(x, lax.exp2(convert(lax.neg(k), x.dtype)))
    return x


def frexp(x, /):
    """(mantissa, exponent) with x = mantissa * 2**exponent and 0.5 <= |mantissa| < 1."""
    x = _inexact_arr(x)
    one = lax.full(x.shape, 1, x.dtype)
    ok = lax.bitwise_and(lax.is_finite(x), lax.ne(x, np.zeros((), x.dtype)))
    xs = lax.select_n(ok, one, x)
    e = lax.add(lax.floor(lax.div(lax.log(lax.abs(xs)), np.array(math.log(2), x.dtype))), one)
    e = lax.convert_element_type(e, np.int32)
    for _ in range(2):  # the float log2 can be one off near powers of two: fix it up exactly
        am = lax.abs(_scale2(xs, e))
        up = lax.ge(am, np.ones((), x.dtype))
        down = lax.lt(am, np.array(0.5, x.dtype))
        e = lax.add(e, lax.sub(convert(up, np.int32), convert(down, np.int32)))
    m = _scale2(xs, e)
    return lax.select_n(ok, x, m), lax.select_n(ok, lax.full(x.shape, 0, np.int32), e)


def spacing(x, /):
    """The distance from x to the next float away from zero (the ulp), keeping x's sign."""
    x = _inexact_arr(x)
    toward = lax.select_n(lax.lt(x, np.zeros((), x.dtype)), lax.full(x.shape, np.inf, x.dtype),
                          lax.full(x.shape, -np.inf, x.dtype))
    return lax.sub(lax.nextafter(x, toward), x)


_I0A = [  # Cephes' Chebyshev coefficients, as NumPy's i0
    -4.4153416464793395e-18, 3.3307945188222384e-17, -2.431279846547955e-16,
    1.715391285555133e-15, -1.1685332877993451e-14, 7.676185498604936e-14,
    -4.856446783111929e-13, 2.95505266312964e-12, -1.726826291441556e-11,
    9.675809035373237e-11, -5.189795601635263e-10, 2.6598237246823866e-09,
    -1.300025009986248e-08, 6.046995022541919e-08, -2.670793853940612e-07,
    1.1173875391201037e-06, -4.4167383584587505e-06, 1.6448448070728896e-05,
    -5.754195010082104e-05, 0.00018850288509584165, -0.0005763755745385824,
    0.0016394756169413357, -0.004324309995050576, 0.010546460394594998, -0.02373741480589947,
    0.04930528423967071, -0.09490109704804764, 0.17162090152220877, -0.3046826723431984,
    0.6767952744094761,
]
_I0B = [  # Cephes' Chebyshev coefficients, as NumPy's i0
    -7.233180487874754e-18, -4.830504485944182e-18, 4.46562142029676e-17,
    3.461222867697461e-17, -2.8276239805165836e-16, -3.425485619677219e-16,
    1.7725601330565263e-15, 3.8116806693526224e-15, -9.554846698828307e-15,
    -4.150569347287222e-14, 1.54008621752141e-14, 3.8527783827421426e-13,
    7.180124451383666e-13, -1.7941785315068062e-12, -1.3215811840447713e-11,
    -3.1499165279632416e-11, 1.1889147107846439e-11, 4.94060238822497e-10,
    3.3962320257083865e-09, 2.266668990498178e-08, 2.0489185894690638e-07,
    2.8913705208347567e-06, 6.889758346916825e-05, 0.0033691164782556943, 0.8044904110141088,
]


def _chbevl(x, coefs):
    b0, b1, b2 = lax.full(x.shape, coefs[0], x.dtype), lax.full(x.shape, 0, x.dtype), None
    for c in coefs[1:]:
        b2, b1 = b1, b0
        b0 = lax.add(lax.sub(lax.mul(x, b1), b2), np.array(c, x.dtype))
    return lax.mul(lax.sub(b0, b2), np.array(0.5, x.dtype))


def i0(x):
    """The modified Bessel function of the first kind, order 0 (NumPy's Chebyshev series)."""
    x = asarray(x)
    if x.dtype.kind == "c":
        raise TypeError("i0 not supported for complex values")
    x = _abs(_inexact_arr(x))
    c = lambda v: np.array(v, x.dtype)
    small = lax.le(x, c(8.0))
    xs = lax.select_n(small, lax.full(x.shape, 8.0, x.dtype), x)  # each branch sees safe values
    xl = lax.select_n(small, x, lax.full(x.shape, 9.0, x.dtype))
    f_small = lax.mul(lax.exp(xs), _chbevl(lax.sub(lax.div(xs, c(2.0)), c(2.0)), _I0A))
    f_large = lax.div(lax.mul(lax.exp(xl), _chbevl(lax.sub(lax.div(c(32.0), xl), c(2.0)), _I0B)),
                      lax.sqrt(xl))
    return lax.select_n(small, f_large, f_small)


def _real_dtype_check(x, name):
    """x's concrete value if it is complex (lax has no imag primitive), else None."""
    return _concrete(x, name) if x.dtype.kind == "c" else None


def iscomplex(x):
    """Elementwise: whether the imaginary part is nonzero (always False for real dtypes)."""
    x = asarray(x)
    v = _real_dtype_check(x, "iscomplex of a complex array")
    return np.asarray(v.imag != 0) if v is not None else lax.full(x.shape, False, np.bool_)


def isreal(x):
    """Elementwise: whether the imaginary part is zero (always True for real dtypes)."""
    x = asarray(x)
    v = _real_dtype_check(x, "isreal of a complex array")
    return np.asarray(v.imag == 0) if v is not None else lax.full(x.shape, True, np.bool_)


def iscomplexobj(x):
    """Whether x has a complex dtype (a Python bool)."""
    dt = getattr(x, "dtype", None)
    if not isinstance(dt, np.dtype):
        dt = np.asarray(x).dtype
    return builtins.bool(dt.kind == "c")


def isrealobj(x):
    """Whether x does not have a complex dtype (a Python bool)."""
    return not iscomplexobj(x)


def iterable(y):
    """Whether y can be iterated over (0-d arrays cannot)."""
    try:
        iter(y)
    except TypeError:
        return False
    return True


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
# piecewise, trim_zeros

def piecewise(x, condlist, funclist, *args, **kw):
    """Evaluate funclist[i] (a callable of x, or a constant) where condlist[i] holds, later
    conditions winning; an extra function covers where no condition holds. The result has x's
    dtype. Callables see the whole x (so they should be elementwise)."""
    x = asarray(x)
    # NumPy's rule: a single condition (not a sequence of arrays) is wrapped in a list.
    seq = isinstance(condlist, (list, tuple))
    first = condlist[0] if (seq or np.ndim(condlist)) and len(condlist) else None
    first_is_array = isinstance(first, (list, np.ndarray)) or (
        type(first) is Tracer and (seq or first.ndim > 0))
    if np.isscalar(condlist) or (not first_is_array and x.ndim != 0):
        conds = [asarray(condlist)]
    else:
        cl = asarray(condlist) if not seq else condlist
        conds = [asarray(cl[i]) for i in range(len(cl))] if seq or cl.ndim else [cl]
    conds = [broadcast_to(convert(c, np.dtype(np.bool_)), x.shape) for c in conds]
    n2 = len(funclist)
    if len(conds) == n2 - 1:
        other = conds[0]
        for c in conds[1:]:
            other = lax.bitwise_or(other, c)
        conds.append(lax.bitwise_not(other))
    elif len(conds) != n2:
        raise ValueError(f"with {len(conds)} condition(s), either {len(conds)} or "
                         f"{len(conds) + 1} functions are expected")
    y = lax.full(x.shape, 0, x.dtype)
    for c, fn in zip(conds, funclist):
        val = fn(x, *args, **kw) if callable(fn) else fn
        val = broadcast_to(convert(asarray(val), x.dtype) if is_array(val) else
                           np.asarray(val).astype(x.dtype), x.shape)
        y = lax.select_n(c, y, val)
    return y


def trim_zeros(filt, trim="fb", axis=None):
    """filt without its leading ('f') and/or trailing ('b') zeros (needs concrete values)."""
    x = asarray(filt)
    trim = trim.lower()
    if trim not in {"fb", "bf", "f", "b"}:
        raise ValueError(f"unexpected character(s) in `trim`: {trim!r}")
    axes = canonical_axes(axis, x.ndim)
    if not axes:
        return x
    v = _concrete(x, "trim_zeros")
    nz = np.argwhere(v)
    if nz.size == 0:
        start = stop = np.zeros(x.ndim, INDEX)
    else:
        start, stop = nz.min(axis=0), nz.max(axis=0) + 1
        if "f" not in trim:
            start = (None,) * x.ndim
        if "b" not in trim:
            stop = (None,) * x.ndim
    sl = tuple(slice(start[a], stop[a]) if a in axes else slice(None) for a in range(x.ndim))
    return x[sl]


# ---------------------------------------------------------------------------------------------
# unique and set operations: concrete sizes eagerly, or a static size= (padded with fill_value)

UniqueAllResult = collections.namedtuple("UniqueAllResult",
                                         ["values", "indices", "inverse_indices", "counts"])
UniqueCountsResult = collections.namedtuple("UniqueCountsResult", ["values", "counts"])
UniqueInverseResult = collections.namedtuple("UniqueInverseResult",
                                             ["values", "inverse_indices"])


def _compact(mask, size, what):
    """Positions of the True entries of the 1-D mask, padded with len(mask) to `size` entries
    (size None: exactly as many as there are, which needs a concrete mask)."""
    if size is None:
        size = int(np.count_nonzero(_needs_size(what, mask)))
    size = operator.index(size)
    return nonzero(mask, size=size, fill_value=mask.shape[0])[0]


def _sorted_groups(flat, equal_nan):
    """flat sorted (stably), its permutation, and the mask of the first element of each run of
    equal values (nans are one run when equal_nan)."""
    perm = argsort(flat)
    s = take(flat, perm)
    n = flat.shape[0]
    if n == 0:
        return s, perm, lax.full((0,), True, np.bool_)
    neq = not_equal(s[1:], s[:-1])
    if equal_nan and flat.dtype.kind in "fc":
        neq = lax.bitwise_and(neq, logical_not(lax.bitwise_and(isnan(s[1:]), isnan(s[:-1]))))
    return s, perm, concatenate([np.ones((1,), np.bool_), neq])


def _gather_padded(values, pos, fill):
    """values[pos] where pos < len(values), else fill."""
    n = values.shape[0]
    if n == 0:
        return lax.full(pos.shape, 0 if fill is None else fill, values.dtype)
    got = take(values, _clip(pos, 0, n - 1))
    if fill is None:
        fill = values[0] if values.ndim == 1 else 0
    fill = asarray(fill, values.dtype) if not is_array(fill) else convert(asarray(fill),
                                                                           values.dtype)
    return where(pos < n, got, fill)


def _unique_flat(flat, equal_nan, size, fill_value, what):
    """(values, first indices, inverse (flat), counts) of the 1-D flat."""
    from ..lax.indexing import scatter
    n = flat.shape[0]
    s, perm, first = _sorted_groups(flat, equal_nan)
    k = None if size is None else operator.index(size)
    starts = _compact(first, None if k is None else k, what)
    k = starts.shape[0]
    ends = concatenate([starts[1:], np.full((1,), n, INDEX)]) if k else starts
    # a padded start is n, so its count is 0; the last real group ends at n
    ends = where(starts < n, _clip(ends, 0, n), n)
    values = _gather_padded(s, starts, fill_value)
    index = where(starts < n, take(perm, _clip(starts, 0, builtins.max(n - 1, 0))), 0) \
        if n else starts
    counts = subtract(ends, starts)
    group = subtract(cumsum(convert(first, INDEX)), 1) if n else lax.full((0,), 0, INDEX)
    inverse = scatter(lax.full((n,), 0, INDEX), lax.expand_dims(perm, (1,)), group, "set") \
        if n else group
    return values, index, inverse, counts


def unique(ar, return_index=False, return_inverse=False, return_counts=False, axis=None, *,
           equal_nan=True, sorted=True, size=None, fill_value=None):  # noqa: A002
    """The sorted unique elements (and optionally first indices, inverse, counts). Needs
    concrete values unless `size` is given (then padded with fill_value, default the minimum)."""
    x = asarray(ar)
    if axis is not None:
        if size is not None:
            raise NotImplementedError("unique: size= with axis= is not supported")
        v = _needs_size("unique", x)
        ax = canonical_axis(axis, x.ndim)
        _, index, inverse, counts = np.unique(v, True, True, True, axis=ax, equal_nan=equal_nan)
        outs = [take(x, index.astype(INDEX), axis=ax)]
        extras = (index, inverse, counts)
    else:
        vals, index, inverse, counts = _unique_flat(ravel(x), equal_nan, size, fill_value,
                                                    "unique")
        outs = [vals]
        extras = (index, reshape(inverse, x.shape), counts)
    for flag, e in zip((return_index, return_inverse, return_counts), extras):
        if flag:
            outs.append(asarray(e, INDEX) if not isinstance(e, Tracer) else e)
    return outs[0] if len(outs) == 1 else tuple(outs)


def unique_values(x, /, *, size=None, fill_value=None):
    """The unique elements of x (flattened; nans are not merged), sorted."""
    return unique(x, equal_nan=False, size=size, fill_value=fill_value)


def unique_counts(x, /, *, size=None, fill_value=None):
    """(values, counts) of the unique elements of x."""
    return UniqueCountsResult(*unique(x, return_counts=True, equal_nan=False, size=size,
                                      fill_value=fill_value))


def unique_inverse(x, /, *, size=None, fill_value=None):
    """(values, inverse_indices) of the unique elements of x; inverse has x's shape."""
    return UniqueInverseResult(*unique(x, return_inverse=True, equal_nan=False, size=size,
                                       fill_value=fill_value))


def unique_all(x, /, *, size=None, fill_value=None):
    """(values, indices, inverse_indices, counts) of the unique elements of x."""
    return UniqueAllResult(*unique(x, True, True, True, equal_nan=False, size=size,
                                   fill_value=fill_value))


def union1d(ar1, ar2, *, size=None, fill_value=None):
    """The sorted unique elements that are in either array."""
    return unique(concatenate([ravel(asarray(ar1)), ravel(asarray(ar2))]), size=size,
                  fill_value=fill_value)


def _unique_or_all(a, assume_unique):
    """Candidates and which of them are real: the sorted unique elements (padded), or all."""
    flat = ravel(asarray(a))
    n = flat.shape[0]
    if assume_unique:
        return flat, lax.full((n,), True, np.bool_)
    s, _, first = _sorted_groups(flat, True)
    pos = nonzero(first, size=n, fill_value=n)[0] if n else first
    return (_gather_padded(s, pos, None), pos < n) if n else (s, first)


def _select(cand, keep, size, fill_value, what):
    pos = _compact(keep, size, what)
    return _gather_padded(cand, pos, fill_value), pos


def intersect1d(ar1, ar2, assume_unique=False, return_indices=False, *, size=None,
                fill_value=None):
    """The sorted unique elements in both arrays (with first indices into each if asked)."""
    a1, a2 = ravel(asarray(ar1)), ravel(asarray(ar2))
    dt = result_type(a1, a2)
    cand, valid = _unique_or_all(a1, assume_unique and not return_indices)
    keep = lax.bitwise_and(valid, isin(cand, a2))
    vals, pos = _select(convert(cand, dt), keep, size, fill_value, "intersect1d")
    if not return_indices:
        return vals
    ok = pos < a1.shape[0]
    first_in = lambda a: argmax(equal(expand_dims(vals, -1), a), axis=-1) if a.shape[0] else \
        lax.full(vals.shape, 0, INDEX)
    i1, i2 = first_in(a1), first_in(a2)
    zero = lax.full(vals.shape, 0, INDEX)
    return vals, where(ok, i1, zero), where(ok, i2, zero)


def setdiff1d(ar1, ar2, assume_unique=False, *, size=None, fill_value=None):
    """The unique elements of ar1 that are not in ar2 (sorted unless assume_unique)."""
    cand, valid = _unique_or_all(ar1, assume_unique)
    keep = lax.bitwise_and(valid, isin(cand, ar2, invert=True))
    return _select(cand, keep, size, fill_value, "setdiff1d")[0]


def setxor1d(ar1, ar2, assume_unique=False, *, size=None, fill_value=None):
    """The sorted unique elements that are in exactly one of the arrays."""
    a1, a2 = ravel(asarray(ar1)), ravel(asarray(ar2))
    cand, valid = _unique_or_all(concatenate([a1, a2]), False)
    keep = lax.bitwise_and(valid, lax.bitwise_xor(isin(cand, a1), isin(cand, a2)))
    return _select(cand, keep, size, fill_value, "setxor1d")[0]


# ---------------------------------------------------------------------------------------------
# Histograms

def _range_check(first, last, what):
    if _is_concrete(first) and _is_concrete(last):
        f, la = float(to_host(first)), float(to_host(last))
        if not (np.isfinite(f) and np.isfinite(la)):
            raise ValueError(f"{what} of [{f}, {la}] is not finite")
        if f > la:
            raise ValueError("max must be larger than min in range parameter.")


def _bin_edges(a, bins, range):  # noqa: A002
    a = ravel(asarray(a))
    if isinstance(bins, str):
        raise NotImplementedError(f"histogram: bins={bins!r} (an estimator name) is not "
                                  "supported; pass a number of bins or the edges.")
    if np.ndim(bins) == 0 and type(bins) is not Tracer:
        nb = operator.index(bins)
        if nb < 1:
            raise ValueError("`bins` must be positive, when an integer")
        if range is None:
            if a.shape[0] == 0:
                first, last = 0.0, 1.0
            else:
                from ._reductions import max as _max
                from ._reductions import min as _min
                first, last = _min(a), _max(a)
            _range_check(first, last, "autodetected range")
        else:
            first, last = range
            _range_check(first, last, "supplied range")
        dt = result_type(first, last, a)
        if dt.kind in "iub":
            dt = np.result_type(dt, float)
        first, last = asarray(first), asarray(last)
        same = equal(first, last)
        first = where(same, subtract(first, 0.5), first)
        last = where(same, add(last, 0.5), last)
        if not (type(first) is Tracer or type(last) is Tracer):
            first, last = first[()], last[()]
        return a, asarray(linspace(first, last, nb + 1, dtype=dt))
    edges = asarray(bins)
    if edges.ndim != 1:
        raise ValueError("`bins` must be 1d, when an array")
    if _is_concrete(edges) and np.any(np.diff(to_host(edges)) < 0):
        raise ValueError("`bins` must increase monotonically, when an array")
    return a, edges


def histogram_bin_edges(a, bins=10, range=None, weights=None):  # noqa: A002
    """The bin edges histogram would use (bins an int, or the edges themselves)."""
    return _bin_edges(a, bins, range)[1]


def histogram(a, bins=10, range=None, density=None, weights=None):  # noqa: A002
    """(counts, bin edges) of a (flattened); the last bin includes its right edge. Counts are
    int64, or summed weights (differentiable); density=True normalizes to a density."""
    from ..lax.indexing import scatter_add
    x, edges = _bin_edges(a, bins, range)
    nb = edges.shape[0] - 1
    idx = subtract(searchsorted(edges, x, side="right"), 1)
    idx = where(equal(x, edges[-1]), nb - 1, idx)
    valid = lax.bitwise_and(lax.ge(*promote2(x, edges[0])), lax.le(*promote2(x, edges[-1])))
    if weights is None:
        w = lax.full(x.shape, 1, INDEX)
    else:
        w = ravel(asarray(weights))
        if w.shape != x.shape:
            raise ValueError("weights should have the same shape as a.")
    w = where(valid, w, np.zeros((), w.dtype))
    idx = _clip(idx, 0, builtins.max(nb - 1, 0))
    counts = scatter_add(lax.full((nb,), 0, w.dtype), lax.expand_dims(convert(idx, INDEX), (1,)),
                         w)
    if density:
        db = convert(diff(edges), np.dtype(np.float64))
        counts = true_divide(true_divide(counts, db), _sum(counts))
    return counts, edges


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


__all__ = [
    "apply_along_axis", "apply_over_axes", "argpartition", "bartlett", "bincount", "blackman",
    "block", "bool", "cdouble", "convolve", "correlate", "csingle", "frexp", "gcd", "hamming",
    "hanning", "histogram", "histogram_bin_edges", "i0", "insert", "interp", "intersect1d",
    "iscomplex", "iscomplexobj", "isin", "isreal", "isrealobj", "iterable", "kaiser", "lcm",
    "lexsort", "nanmedian", "nanpercentile", "nanquantile", "partition", "piecewise", "poly",
    "polyadd", "polyder", "polyint", "polymul", "polysub", "polyval", "setdiff1d", "setxor1d",
    "sort_complex", "spacing", "trim_zeros", "uint", "union1d", "unique", "unique_all",
    "unique_counts", "unique_inverse", "unique_values", "unwrap", "vectorize",
]
