"""Factored second moments (Adafactor, Shazeer & Stern 2018; Optax's `factorized.py`): for each
large matrix a row and a column average of the squared gradients instead of a full copy, so
the optimizer state grows as rows + columns. Under a sharded train step the factoring follows
the whole leaf (`parallel.whole_shape`) and means along the axis the ranks cut add up their
slices.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .. import numpy as fnp
from .. import tree_util as tu
from .base import (
    MADE_BY,
    GradientTransformation,
    cast_like,
    checked_transformation,
    increment,
    tree_mismatch,
    zero_count,
)
from .parallel import whole_mean, whole_shape

__all__ = ["FactoredState", "scale_by_factored_rms"]


class FactoredState(NamedTuple):
    """Adafactor's second moments: per leaf a row and a column average (factored leaves; the
    other two are (1,) placeholders) or a full one (the rest)."""
    count: Any
    v_row: Any
    v_col: Any
    v: Any


def _factored_dims(shape, factored, min_dim_size_to_factor):
    """The (second largest, largest) axes of a leaf whose two largest axes are both at least
    min_dim_size_to_factor, or None (then the leaf keeps a full second moment)."""
    if not factored or len(shape) < 2:
        return None
    order = np.argsort(shape, kind="stable")
    if shape[order[-2]] < min_dim_size_to_factor:
        return None
    return int(order[-2]), int(order[-1])


def _decay_rate_pow(step, exponent=0.8):
    """Adafactor's second-moment decay 1 - (step + 1)^-exponent (in float32, as Optax)."""
    return 1.0 - fnp.asarray(step + 1, np.float32) ** (-exponent)


def scale_by_factored_rms(factored=True, decay_rate=0.8, step_offset=0,
                          min_dim_size_to_factor=128, epsilon=1e-30,
                          decay_rate_fn=_decay_rate_pow) -> GradientTransformation:
    """Adafactor's scaling (Shazeer & Stern 2018), Optax's formulas: for a leaf whose two
    largest axes (d1 < d0 in size) are at least `min_dim_size_to_factor`, keep only the row and
    column means of g^2 + epsilon as decayed averages r, c and scale g by
    (r / mean(r))^-1/2 (along d0) * c^-1/2 (along d1); other leaves keep the full average v and
    get g * v^-1/2. The decay is decay_rate_fn(count - step_offset, decay_rate).

    Under a sharded train step the factoring follows the whole leaf (`whole_shape`), and a mean
    along the axis the ranks cut adds up their slices (`shard_sum`): r and c are then slices of
    the whole run's statistics, or (reduced along the cut) the same on every rank."""

    def init(params):
        def one(p):  # (under a sharded step: factored by the whole shape, p's slice of it)
            dims = _factored_dims(whole_shape(p)[0], factored, min_dim_size_to_factor)
            small = fnp.zeros((1,), p.dtype)
            if dims is None:
                return small, small, fnp.zeros_like(p)
            d1, d0 = dims
            return (fnp.zeros(np.delete(np.shape(p), d0), p.dtype),
                    fnp.zeros(np.delete(np.shape(p), d1), p.dtype), small)

        leaves, treedef = tu.tree_flatten(params)
        rows, cols, full = zip(*[one(p) for p in leaves]) if leaves else ((), (), ())
        unflat = lambda xs: tu.tree_unflatten(treedef, list(xs))
        return FactoredState(zero_count(), unflat(rows), unflat(cols), unflat(full))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("optim.scale_by_factored_rms (adafactor) needs params: call "
                             "tx.update(grads, state, params)")
        rate = decay_rate_fn(state.count - step_offset, decay_rate)
        leaves, treedef = tu.tree_flatten(updates)
        try:
            cols_ = [treedef.flatten_up_to(t) for t in (state.v_row, state.v_col, state.v,
                                                        params)]
        except ValueError:
            raise tree_mismatch("scale_by_factored_rms", state.v, updates,
                                ("the optimizer state", "the updates"),
                                "the tree passed to update does not match the tree the optimizer "
                                "was initialised with") from None
        outs, rows, cols, full = [], [], [], []
        for g, vr, vc, v, p in zip(leaves, *cols_):
            dt = p.dtype
            r = fnp.asarray(rate, dt)
            g2 = g * g + cast_like(epsilon, g)
            shape, cut = whole_shape(p)
            dims = _factored_dims(shape, factored, min_dim_size_to_factor)
            small = fnp.zeros((1,), dt)
            if dims is None:
                new_v = fnp.asarray(r * v + (1 - r) * g2, dt)
                outs.append(g * new_v ** -0.5)
                rows.append(small)
                cols.append(small)
                full.append(new_v)
                continue
            d1, d0 = dims  # (sliced along `cut`, the means over it add up the ranks' parts)
            new_r = fnp.asarray(r * vr + (1 - r) * whole_mean(g2, d0, cut, shape[d0]), dt)
            new_c = fnp.asarray(r * vc + (1 - r) * whole_mean(g2, d1, cut, shape[d1]), dt)
            reduced_d1 = d1 - 1 if d1 > d0 else d1
            row_cut = None if cut in (None, d0) else cut - (cut > d0)  # new_r's cut axis
            row_factor = (new_r / whole_mean(new_r, reduced_d1, row_cut, shape[d1],
                                             keepdims=True)) ** -0.5
            col_factor = new_c ** -0.5
            outs.append(g * fnp.expand_dims(row_factor, d0) * fnp.expand_dims(col_factor, d1))
            rows.append(new_r)
            cols.append(new_c)
            full.append(small)
        unflat = lambda xs: tu.tree_unflatten(treedef, xs)
        return unflat(outs), FactoredState(increment(state.count), unflat(rows), unflat(cols),
                                           unflat(full))

    return checked_transformation(init, update, FactoredState)


MADE_BY[FactoredState] = "scale_by_factored_rms (adafactor)"
