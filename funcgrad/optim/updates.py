"""Applying updates to parameters: `apply_updates`, p + u per leaf in the parameter's dtype,
refusing updates that do not match the params or that the parameter's dtype would truncate.
"""

from __future__ import annotations

import functools

import numpy as np

from .. import numpy as fnp
from .. import tree_util as tu
from ..devices import inputs_on_default_backend
from ..transforms.jit import jit as _jit
from .base import dtype_of, tree_mismatch

__all__ = ["apply_updates"]


_HOLE = object()   # a None update, as a leaf, when locating a mismatch


def _truncating(dp, du):
    """A `du` update would lose information in a `dp` parameter (float -> int, complex -> real)."""
    return (dp.kind in "biu" and du.kind in "fc") or (dp.kind == "f" and du.kind == "c")


def _apply_updates_error(params, updates, us):
    if us is not None:
        paths = [tu.path_to_str(p) or "<root>" for p, _ in tu.tree_flatten_with_path(params)[0]]
        for where, p, u in zip(paths, tu.tree_leaves(params), us):
            if u is not None and np.shape(u) == np.shape(p) and dtype_of(u) is not None and \
                    dtype_of(p) is not None and _truncating(dtype_of(p), dtype_of(u)):
                return TypeError(f"optim.apply_updates: at {where!r}: an update of dtype "
                                 f"{dtype_of(u)} for a parameter of dtype {dtype_of(p)} would be "
                                 "truncated; leave such leaves out of training (optim.masked) "
                                 "or make the parameter floating")
    holes = tu.tree_map(lambda u: _HOLE if u is None else u, updates, is_leaf=lambda x: x is None)
    return tree_mismatch("apply_updates", holes, params, ("the updates", "the params"),
                         "the updates do not match the params (no broadcasting)")


@functools.partial(_jit, inline=True)
@inputs_on_default_backend
def apply_updates(params, updates):
    """p + u per leaf, cast back to p's dtype; a None update leaves p unchanged.

    `updates` must have the params' structure and each update its parameter's shape (no
    broadcasting); a floating update for an integer or bool parameter, or a complex one for a
    real parameter, is refused rather than truncated.
    """
    leaves, treedef = tu.tree_flatten(params)
    us, utree = tu.tree_flatten(updates)
    if utree != treedef:                              # None updates, or a mismatch
        try:
            us = treedef.flatten_up_to(updates)
        except ValueError:
            raise _apply_updates_error(params, updates, None) from None
    out = []
    for p, u in zip(leaves, us):
        if u is None:
            out.append(p)
            continue
        dp = getattr(p, "dtype", None)
        if dp is None:
            if np.shape(u) != np.shape(p):
                raise _apply_updates_error(params, updates, us)
            out.append(p + u)
            continue
        du = getattr(u, "dtype", dp)
        if (u.shape if hasattr(u, "shape") else np.shape(u)) != p.shape or (
                du != dp and _truncating(np.dtype(dp), np.dtype(du))):
            raise _apply_updates_error(params, updates, us)
        out.append(fnp.asarray(p + u, dp))
    return tu.tree_unflatten(treedef, out)
