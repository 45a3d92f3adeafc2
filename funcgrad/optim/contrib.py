"""`funcgrad.optim.contrib`: Optax's `optax.contrib` transformations with the same names and
formulas. Today: schedule-free learning (Defazio et al. 2024).

    tx = optim.contrib.schedule_free_adamw(1e-3, warmup_steps=100)
    state = tx.init(params)
    updates, state = tx.update(grads, state, params)     # params: where gradients are taken (y)
    params = optim.apply_updates(params, updates)
    eval_params = optim.contrib.schedule_free_eval_params(state, params)   # evaluate at x

Schedule-free keeps the base optimizer's iterate z in its state and hands back updates that
move the params to y = b1 x + (1 - b1) z, where x is the running weighted average of z (the
weights grow as max_lr^weight_lr_power): no learning-rate decay schedule is needed. Turn the base
optimizer's momentum off; the interpolation replaces it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .. import numpy as fnp
from .. import tree_util as tu
from .base import checked_transformation, float_dtype_of
from .combine import chain
from .optimizers import sgd
from .schedules import warmup_constant_schedule
from .transform import add_decayed_weights, scale_by_learning_rate, scale_by_rms

__all__ = ["ScheduleFreeState", "schedule_free", "schedule_free_eval_params",
           "schedule_free_sgd", "schedule_free_adamw"]


class ScheduleFreeState(NamedTuple):
    b1: Any
    weight_sum: Any
    step_count: Any
    max_lr: Any
    base_optimizer_state: Any
    z: Any


def schedule_free_eval_params(state, params):
    """The averaged params x = (y - (1 - b1) z) / b1 to evaluate (or save) the model at."""
    b1, z = getattr(state, "b1", None), getattr(state, "z", None)
    if b1 is None or z is None:
        raise ValueError("optim.contrib.schedule_free_eval_params needs the ScheduleFreeState "
                         "of schedule_free (its b1 and z)")
    return tu.tree_map(lambda y, zi: (y - (1.0 - b1) * zi) / b1, params, z)


def schedule_free(base_optimizer, learning_rate, b1=0.9, weight_lr_power=2.0, state_dtype=None):
    """Schedule-free wrapper of `base_optimizer` (Optax's formulas): with lr_t = learning_rate(t)
    (t from 1), c_t = max_lr^p / sum of max_lr^p so far,
        z_{t+1} = z_t + base_update(g(y_t)),
        x_{t+1} = (1 - c_t) x_t + c_t z_{t+1},    y_{t+1} = b1 x_{t+1} + (1 - b1) z_{t+1},
    and the returned update takes the params from y_t to y_{t+1}."""

    def init(params):
        dtype = float_dtype_of(params, min)
        z = params if state_dtype is None else tu.tree_map(
            lambda p: fnp.asarray(p, state_dtype), params)
        z = tu.tree_map(lambda t: fnp.array(t, copy=True), z)
        return ScheduleFreeState(fnp.asarray(b1, dtype), fnp.zeros((), dtype),
                                 fnp.ones((), np.int32), fnp.zeros((), dtype),
                                 base_optimizer.init(params), z)

    def update(grads, state, params=None):
        if params is None:
            raise ValueError("optim.contrib.schedule_free needs params: call "
                             "tx.update(grads, state, params)")
        dtype = state.max_lr.dtype
        lr = learning_rate(state.step_count) if callable(learning_rate) else learning_rate
        lr = fnp.asarray(lr, dtype)
        max_lr = fnp.maximum(state.max_lr, lr)
        weight = max_lr ** weight_lr_power
        total = state.weight_sum + weight
        nan = fnp.isnan(weight) | fnp.isnan(total)
        ck = fnp.where(nan, fnp.full(weight.shape, np.nan, dtype),
                       fnp.nan_to_num(weight / total, nan=0.0, posinf=np.inf))
        base_updates, base_state = base_optimizer.update(grads, state.base_optimizer_state,
                                                         params)
        z = tu.tree_map(lambda zi, u: fnp.asarray(zi + u, zi.dtype), state.z, base_updates)
        prev_x = tu.tree_map(lambda y, zi: (y - (1.0 - b1) * zi) / b1, params, state.z)
        x = tu.tree_map(lambda xi, zi: (1.0 - ck) * xi + ck * zi, prev_x, z)
        new_params = tu.tree_map(lambda xi, zi: b1 * xi + (1.0 - b1) * zi, x, z)
        updates = tu.tree_map(lambda n, p: fnp.asarray(n - p, p.dtype), new_params, params)
        return updates, ScheduleFreeState(state.b1, total, fnp.asarray(state.step_count + 1,
                                                                        np.int32),
                                          max_lr, base_state, z)

    return checked_transformation(init, update)


def _warmup(learning_rate, warmup_steps):
    if warmup_steps is None:
        return learning_rate
    return warmup_constant_schedule(0.0, learning_rate, warmup_steps)


def schedule_free_sgd(learning_rate, warmup_steps=None, b1=0.9, weight_decay=None,
                      weight_lr_power=2.0, state_dtype=None):
    """Schedule-free SGD (Optax's): `schedule_free(sgd(lr))`, with an optional linear warmup and
    weight decay (multiplied by the learning rate)."""
    lr = _warmup(learning_rate, warmup_steps)
    opt = sgd(lr)
    if weight_decay is not None:
        opt = chain(add_decayed_weights(weight_decay), opt)
    return schedule_free(opt, lr, b1, weight_lr_power, state_dtype)


def schedule_free_adamw(learning_rate=0.0025, warmup_steps=None, b1=0.9, b2=0.999, eps=1e-8,
                        weight_decay=0.0, weight_lr_power=2.0, state_dtype=None):
    """Schedule-free AdamW (Optax's): AdamW without its momentum (a bias-corrected RMS scaling
    with eps outside the root, decoupled weight decay on every leaf, the learning rate) inside
    `schedule_free`."""
    lr = _warmup(learning_rate, warmup_steps)
    opt = chain(scale_by_rms(b2, eps, eps_in_sqrt=False, bias_correction=True),
                add_decayed_weights(weight_decay),
                scale_by_learning_rate(lr))
    return schedule_free(opt, lr, b1, weight_lr_power, state_dtype)
