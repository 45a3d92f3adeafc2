"""`fg.flatten_util.ravel_pytree`, as `jax.flatten_util`: a pytree of arrays as one flat vector
(for optimizers and solvers that want a vector, Hessians of a whole model, ...), and the function
that puts a vector of that length back into the tree."""

from __future__ import annotations

import math

import numpy as np

from . import numpy as fnp
from . import tree_util

__all__ = ["ravel_pytree"]


def ravel_pytree(pytree):
    """(flat, unravel): `flat` is the leaves raveled and concatenated in tree order, in the
    leaves' common dtype (NumPy's promotion); `unravel(flat)` rebuilds the tree, each leaf in its
    own shape and dtype. Both work under grad, jit and vmap. An empty tree gives a float32
    vector of length 0 (as JAX)."""
    leaves, treedef = tree_util.tree_flatten(pytree)
    if not leaves:
        return fnp.zeros((0,), np.float32), lambda flat: tree_util.tree_unflatten(treedef, [])
    leaves = [fnp.asarray(x) for x in leaves]
    shapes = [tuple(x.shape) for x in leaves]
    dtypes = [np.dtype(x.dtype) for x in leaves]
    dtype = np.result_type(*dtypes)
    sizes = [math.prod(s) for s in shapes]
    total = sum(sizes)
    flat = fnp.concatenate([fnp.ravel(x).astype(dtype) for x in leaves])

    def unravel(vector):
        vector = fnp.asarray(vector)
        if tuple(vector.shape) != (total,):
            raise ValueError(f"ravel_pytree's unravel: expected a vector of shape ({total},), "
                             f"got shape {tuple(vector.shape)}")
        if np.dtype(vector.dtype) != dtype:
            raise TypeError(f"ravel_pytree's unravel: expected a vector of dtype {dtype}, got "
                            f"{vector.dtype} (cast it with .astype({dtype.name!r}))")
        out, start = [], 0
        for shape, size, dt in zip(shapes, sizes, dtypes):
            piece = fnp.reshape(vector[start:start + size], shape)
            out.append(piece if dt == dtype else piece.astype(dt))
            start += size
        return tree_util.tree_unflatten(treedef, out)

    return flat, unravel
