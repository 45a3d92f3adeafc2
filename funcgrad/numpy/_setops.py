"""unique and the set operations (isin, union1d, intersect1d, setdiff1d, setxor1d). Output sizes
depend on the data: they read concrete values eagerly (also under eager grad), and under
jit/vmap take a static `size=` (padded with `fill_value`), as in JAX.
"""

from __future__ import annotations

import builtins
import collections
import operator

import numpy as np

from .. import lax
from ..core import Tracer
from ..core.avals import dtype_kind
from ._arithmetic import clip as _clip
from ._arithmetic import subtract
from ._classification import isnan
from ._core import asarray, canonical_axis, convert, is_array, result_type
from ._indexing import INDEX
from ._logic import equal, logical_not, not_equal, where
from ._nonzero import needs_size, nonzero
from ._reductions import any as _any
from ._reductions import argmax, argsort, cumsum
from ._shape import concatenate, expand_dims, ravel, reshape
from ._take import take

__all__ = [
    "isin", "unique", "unique_values", "unique_counts", "unique_inverse", "unique_all",
    "union1d", "intersect1d", "setdiff1d", "setxor1d",
]


# ---------------------------------------------------------------------------------------------
# isin

def isin(element, test_elements, assume_unique=False, invert=False, *, kind=None):
    """Elementwise: whether each element of `element` is in test_elements (shape of element)."""
    e = asarray(element)
    t = ravel(asarray(test_elements))
    if t.shape[0] == 0:
        out = lax.full(e.shape, False, np.bool_)
    else:
        out = _any(equal(expand_dims(e, -1), t), axis=-1)
    return logical_not(out) if invert else out


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
        size = int(np.count_nonzero(needs_size(what, mask)))
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
    if equal_nan and dtype_kind(flat.dtype) in "fc":
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
    inverse = lax.scatter(lax.full((n,), 0, INDEX), lax.expand_dims(perm, (1,)), group, "set") \
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
        v = needs_size("unique", x)
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
