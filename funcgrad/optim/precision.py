"""Optimizers for half-precision training: float32 master weights for bfloat16/float16
parameters (`master_weights`, `master_params`) and dynamic loss scaling for float16
(`dynamic_loss_scale`, `loss_scale`, `all_finite`), as PyTorch's `GradScaler`. The dtypes a
model stores and computes in are `fg.mixed_precision`'s.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from .. import numpy as fnp
from .. import tree_util as tu
from .base import GradientTransformation, checked_transformation, zero_count

__all__ = ["MasterWeightsState", "master_weights", "master_params", "DynamicLossScaleState",
           "dynamic_loss_scale", "loss_scale", "all_finite"]


class MasterWeightsState(NamedTuple):
    master: Any       # per leaf: the wide copy of a half-precision parameter, or None
    inner_state: Any


def master_weights(inner: GradientTransformation, dtype=np.float32) -> GradientTransformation:
    """Keep `dtype` (float32) master copies of the parameters stored in a narrower float dtype
    (bfloat16, float16) and run `inner` on them: the gradients are widened, `inner` updates the
    master copies with its state in `dtype`, and the new parameters are the master copies
    rounded to the parameters' dtype. Small updates that rounding to 8 bits of mantissa would
    lose accumulate in the master copy instead of vanishing.

        tx = optim.master_weights(optim.adamw(1e-4))      # params in bfloat16
        updates, state = tx.update(grads, state, params)  # grads in the params' dtypes
        params = optim.apply_updates(params, updates)     # == master rounded to bfloat16

    Leaves already in `dtype` or wider (and integer leaves) pass through to `inner` unchanged,
    with no copy. The updates of the narrow leaves are in `dtype` (the master's new value minus
    the widened parameter), so `apply_updates` rounds the sum once. `update` needs `params`.
    Composes with `masked` (frozen leaves get no master copy), `MultiSteps` (accumulate inside:
    `master_weights(MultiSteps(adam, k))` accumulates float32 gradients) and
    `dynamic_loss_scale` (inside: unscaling happens in float32). Read the master copies with
    `master_params(state, params)`.
    """
    wide = np.dtype(dtype)
    if not fnp.issubdtype(wide, fnp.floating):
        raise TypeError(f"optim.master_weights: dtype must be a float dtype, got {wide}")

    def narrow(x):
        dt = getattr(x, "dtype", None)
        return (dt is not None and fnp.issubdtype(dt, fnp.floating)
                and np.dtype(dt).itemsize < wide.itemsize)

    def views(params, master):
        leaves, treedef = tu.tree_flatten(params)
        ms = treedef.flatten_up_to(master)
        return leaves, treedef, ms

    def init(params):
        leaves, treedef = tu.tree_flatten(params)
        ms = [fnp.asarray(p, wide) if narrow(p) else None for p in leaves]
        view = tu.tree_unflatten(treedef, [p if m is None else m for p, m in zip(leaves, ms)])
        return MasterWeightsState(tu.tree_unflatten(treedef, ms), inner.init(view))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("optim.master_weights: update needs params (the half-precision "
                             "parameters whose master copies it keeps): tx.update(grads, "
                             "state, params)")
        leaves, treedef, ms = views(params, state.master)
        gs = treedef.flatten_up_to(updates)
        view = tu.tree_unflatten(treedef, [p if m is None else m for p, m in zip(leaves, ms)])
        wide_g = tu.tree_unflatten(treedef, [g if m is None or g is None else
                                             fnp.asarray(g, wide) for g, m in zip(gs, ms)])
        new, inner_state = inner.update(wide_g, state.inner_state, view)
        us = treedef.flatten_up_to(new)
        new_ms, out = [], []
        for p, m, u in zip(leaves, ms, us):
            if m is None or u is None:
                new_ms.append(m)
                out.append(u)
                continue
            m = m + u
            new_ms.append(m)
            out.append(m - fnp.asarray(p, wide))
        return (tu.tree_unflatten(treedef, out),
                MasterWeightsState(tu.tree_unflatten(treedef, new_ms), inner_state))

    return checked_transformation(init, update)


def master_params(state, params):
    """The parameters as the optimizer's master copies hold them: `params` with each leaf that
    `master_weights` keeps a copy of replaced by that copy (found anywhere in `state`)."""
    found = _find_states(state, MasterWeightsState)
    if len(found) != 1:
        raise ValueError("optim.master_params: the state holds "
                         f"{len(found) or 'no'} master_weights states; expected one")
    leaves, treedef = tu.tree_flatten(params)
    ms = treedef.flatten_up_to(found[0].master)
    return tu.tree_unflatten(treedef, [p if m is None else m for p, m in zip(leaves, ms)])


class DynamicLossScaleState(NamedTuple):
    scale: Any           # float32 scalar: multiply the loss by it before differentiating
    growth_tracker: Any  # int32: finite steps since the scale last changed
    found_inf: Any       # bool: whether the last update skipped its step
    inner_state: Any


def dynamic_loss_scale(inner: GradientTransformation, init_scale=2.0 ** 16, growth_factor=2.0,
                       backoff_factor=0.5, growth_interval=2000) -> GradientTransformation:
    """Dynamic loss scaling for float16 training, as PyTorch's `torch.amp.GradScaler`.

    Multiply the loss by `loss_scale(state)` before differentiating, so that small gradients of
    float16 activations do not flush to zero; pass the (scaled) gradients to `update`, which
    divides them by the scale (in float32 at least) and then:

    * if every gradient is finite, runs `inner` and counts the step; after `growth_interval`
      finite steps in a row the scale grows by `growth_factor` (if it stays finite);
    * if any is inf or NaN, skips the step (zero updates, `inner`'s state unchanged) and
      shrinks the scale by `backoff_factor`.

        tx = optim.dynamic_loss_scale(optim.adam(1e-3))
        scale = optim.loss_scale(state)
        grads = fg.grad(lambda p: loss(p, batch) * scale)(params)
        updates, state = tx.update(grads, state, params)

    Written with `fnp.where`, so it traces under `fg.jit`. With `MultiSteps`, put it inside
    (`MultiSteps(dynamic_loss_scale(adam), k)`): the scale then stays fixed during an
    accumulation and an overflow in any mini-step skips the whole step, as GradScaler used with
    accumulation does. With bfloat16 or float16 parameters, put it inside `master_weights`, so
    the gradients are unscaled in float32. Under data parallelism the gradients are averaged
    before `update`, so every rank skips the same steps.
    """
    _hyper_positive("dynamic_loss_scale", init_scale=init_scale, growth_factor=growth_factor,
                    backoff_factor=backoff_factor)
    if not 0 < backoff_factor < 1 or not growth_factor > 1:
        raise ValueError("optim.dynamic_loss_scale: need backoff_factor in (0, 1) and "
                         f"growth_factor > 1, got {backoff_factor} and {growth_factor}")
    if int(growth_interval) != growth_interval or growth_interval < 1:
        raise ValueError("optim.dynamic_loss_scale: growth_interval must be a positive int, "
                         f"got {growth_interval!r}")
    growth_interval = int(growth_interval)

    def init(params):
        return DynamicLossScaleState(fnp.asarray(init_scale, np.float32), zero_count(),
                                     fnp.asarray(False), inner.init(params))

    def update(updates, state, params=None):
        inv = 1 / state.scale

        def unscale(g):
            dt = np.promote_types(g.dtype, np.float32)
            return fnp.asarray(fnp.asarray(g, dt) * fnp.asarray(inv, dt), g.dtype)

        grads = tu.tree_map(unscale, updates)
        finite = all_finite(grads)
        new_u, new_inner = inner.update(grads, state.inner_state, params)
        out = tu.tree_map(lambda u: fnp.where(finite, u, fnp.zeros_like(u)), new_u)
        kept = tu.tree_map(lambda a, b: fnp.where(finite, a, b), new_inner, state.inner_state)
        tracker = fnp.where(finite, state.growth_tracker + 1, 0)
        grown = state.scale * np.float32(growth_factor)
        grow = fnp.logical_and(tracker >= growth_interval, fnp.isfinite(grown))
        scale = fnp.where(finite, fnp.where(grow, grown, state.scale),
                          state.scale * np.float32(backoff_factor))
        tracker = fnp.where(tracker >= growth_interval, 0, tracker)
        return out, DynamicLossScaleState(fnp.asarray(scale, np.float32),
                                          fnp.asarray(tracker, np.int32),
                                          fnp.logical_not(finite), kept)

    return checked_transformation(init, update)


def _hyper_positive(who, **values):
    for name, v in values.items():
        if not (isinstance(v, (int, float, np.integer, np.floating)) and math.isfinite(v)
                and v > 0):
            raise ValueError(f"optim.{who}: {name} must be a finite number > 0, got {v!r}")


def loss_scale(state):
    """The current loss scale of the `dynamic_loss_scale` inside an optimizer's state (found
    anywhere in it: under `chain`, `masked`, `MultiSteps`, `master_weights`, ...)."""
    found = _find_states(state, DynamicLossScaleState)
    if len(found) != 1:
        raise ValueError(f"optim.loss_scale: the state holds {len(found) or 'no'} "
                         "dynamic_loss_scale states; expected one (wrap the optimizer with "
                         "optim.dynamic_loss_scale)")
    return found[0].scale


def all_finite(tree):
    """A bool scalar: True when no leaf of `tree` holds an inf or a NaN."""
    ok = fnp.asarray(True)
    for leaf in tu.tree_leaves(tree):
        if leaf is not None and fnp.issubdtype(leaf.dtype, fnp.inexact):
            ok = fnp.logical_and(ok, fnp.all(fnp.isfinite(leaf)))
    return ok


def _find_states(state, cls):
    """Every `cls` instance inside a state tree (tuples, lists, dicts, NamedTuples)."""
    if isinstance(state, cls):
        return [state]
    if isinstance(state, dict):
        children = state.values()
    elif isinstance(state, (tuple, list)):
        children = state
    else:
        return []
    return [s for c in children for s in _find_states(c, cls)]
