"""Sorting: the sort primitive (all operands reordered by the first num_keys of them,
lexicographically), defined once with its rules, and what jax.lax composes from it: argsort,
top_k, sort_key_val.
"""

from __future__ import annotations

import numpy as np

from ..core import Primitive, bind
from ..core.avals import dtype_kind
from . import elementwise as ew
from ._batching import at_front, batch_size
from ._util import dtype_of, normalize_axis, shape_error, to_operand
from .indexing import INDEX, along_axis_indices, gather, scatter_add, take_along_axis
from .structural import iota, slice

__all__ = ["sort", "argsort", "top_k", "sort_key_val", "sort_p"]


def _sort_abstract(*operands, dimension, is_stable, num_keys):
    if not operands or not 1 <= num_keys <= len(operands):
        raise shape_error("sort", f"needs 1 <= num_keys ({num_keys}) <= number of operands "
                          f"({len(operands)})")
    shape = operands[0].shape
    if any(o.shape != shape for o in operands):
        raise shape_error("sort", "operands must have equal shapes, got "
                          + ", ".join(o.str_short() for o in operands))
    if not 0 <= dimension < len(shape):
        raise shape_error("sort", f"dimension {dimension} is out of bounds for "
                          f"{operands[0].str_short()}")
    return tuple(operands)


def _sort_impl(xp, *operands, dimension, is_stable, num_keys):
    # Stable sorts from the least to the most significant key give the lexicographic order.
    # A complex key orders by its real part, then its imaginary part (as NumPy).
    keys = []
    for key in operands[:num_keys]:
        keys += [xp.real(key), xp.imag(key)] if dtype_of(key).kind == "c" else [key]
    perm = xp.argsort(keys[-1], axis=dimension, kind="stable")
    for key in reversed(keys[:-1]):
        order = xp.argsort(xp.take_along_axis(key, perm, axis=dimension), axis=dimension,
                           kind="stable")
        perm = xp.take_along_axis(perm, order, axis=dimension)
    return tuple(xp.take_along_axis(o, perm, axis=dimension) for o in operands)


def _sort_permutation(primals, dimension, num_keys):
    """Full gather indices of the sorting permutation: sort an iota alongside the keys."""
    keys = primals[:num_keys]
    pos = iota(INDEX, keys[0].shape, dimension)
    perm = bind(sort_p, *keys, pos, dimension=dimension, is_stable=True, num_keys=num_keys)[-1]
    return along_axis_indices(perm, dimension)


def _sort_jvp(primals, tangents, out, *, dimension, is_stable, num_keys):
    idx = _sort_permutation(primals, dimension, num_keys)
    return tuple(None if t is None else gather(t, idx) for t in tangents)


def _sort_vjp(ct, primals, out, active, *, dimension, is_stable, num_keys):
    idx = _sort_permutation(primals, dimension, num_keys)
    return tuple(scatter_add(ew.zeros_like(p), idx, c)
                 if act and dtype_kind(p.dtype) in "fc" else None
                 for p, c, act in zip(primals, ct, active))


sort_p = Primitive("sort", multiple_results=True, impl=_sort_impl, abstract_eval=_sort_abstract,
                   jvp=_sort_jvp, vjp=_sort_vjp, residuals="in")


def _sort_batch(vals, dims, *, dimension, is_stable, num_keys):
    batched = {d for d in dims if d is not None}
    if len(batched) == 1 and None not in dims:  # all batched along the same axis: leave it
        d = batched.pop()
    else:
        size = batch_size(vals, dims)
        vals, d = [at_front(v, vd, size) for v, vd in zip(vals, dims)], 0
    out = bind(sort_p, *vals, dimension=dimension + (d <= dimension), is_stable=is_stable,
               num_keys=num_keys)
    return out, (d,) * len(out)


sort_p.batch = _sort_batch


def sort(*operands, dimension=-1, is_stable=True, num_keys=1):
    """Sort operands along `dimension` by the first `num_keys` of them (lexicographically).

    sort(x) returns the sorted array; sort(x, y, ...) or sort([x, y, ...]) a tuple. Sorting is
    always stable (is_stable is accepted for JAX compatibility); NaNs sort last, as NumPy.
    """
    single = len(operands) == 1 and not isinstance(operands[0], (list, tuple))
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    dimension = normalize_axis(dimension, operands[0].ndim)
    out = bind(sort_p, *operands, dimension=dimension, is_stable=bool(is_stable),
               num_keys=int(num_keys))
    return out[0] if single else out


def argsort(x, dimension=-1, is_stable=True):
    """Indices (int64) that sort x along `dimension` (stable: ties keep their order)."""
    dimension = normalize_axis(dimension, x.ndim)
    return sort(x, iota(INDEX, x.shape, dimension), dimension=dimension, is_stable=is_stable)[1]


def top_k(x, k, *, axis=-1):
    """(values, int32 indices) of the k largest entries along `axis` (the last by default, as
    JAX's), largest first; ties go to the lower index. Values are differentiable (a gather)."""
    x = x if hasattr(x, "dtype") else np.asarray(x)
    if dtype_kind(x.dtype) not in "iuf":
        raise TypeError(f"top_k needs an integer or floating operand, got {x.dtype}")
    axis = normalize_axis(axis, x.ndim)
    k = int(k)
    if not 0 <= k <= x.shape[axis]:
        raise ValueError(f"top_k: k={k} out of range for an axis of size {x.shape[axis]}")
    # Sort by a key that reverses the order: ~x is exact for all integers, -x for floats.
    key = ew.bitwise_not(x) if x.dtype.kind in "iu" else ew.neg(x)
    perm = sort(key, iota(np.int32, x.shape, axis), dimension=axis)[1]
    limit = x.shape[:axis] + (k,) + x.shape[axis + 1:]
    idx = slice(perm, (0,) * x.ndim, limit)
    return take_along_axis(x, idx, axis), idx


def sort_key_val(keys, values, dimension=-1, is_stable=True):
    """(sorted keys, values permuted alike) along `dimension`."""
    keys, values = to_operand(keys), to_operand(values)
    dimension = normalize_axis(dimension, keys.ndim)
    return tuple(sort(keys, values, dimension=dimension, is_stable=is_stable, num_keys=1))
