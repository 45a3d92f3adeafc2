"""The building blocks of optimizers (Optax's `transform.py` and `clipping.py`, same names and
formulas): scaling by a step size, a schedule or a learning rate; momentum (`trace`) and moving
averages (`ema`); the second-moment scalings of Adam, RMSProp, Adagrad and Lion; clipping by the
global norm and by each leaf's RMS; weight decay; per-leaf trust ratios (LAMB) and parameter
scales (Adafactor). `optimizers.py` chains them into the named optimizers.

Updates keep each leaf's dtype: scalar factors (learning rates, bias corrections) are cast to the
leaf's dtype before they touch it. A learning rate is a number or a schedule `f(count) -> lr`,
evaluated at the number of updates done so far (0 on the first update).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np

from .. import masks as _masks
from .. import numpy as fnp
from .. import tree_util as tu
from .base import (
    MADE_BY,
    SHARED_STATES,
    EmptyState,
    GradientTransformation,
    cast_like,
    check_hyper,
    check_learning_rate,
    check_lr_value,
    checked_transformation,
    increment,
    leafwise,
    tree_zeros_like,
    zero_count,
)
from .parallel import leaf_mean, shard_sum

__all__ = ["ScaleByScheduleState", "TraceState", "ScaleByAdamState", "ScaleByRmsState",
           "ScaleByRmsWithCountState", "ScaleByRssState", "ScaleByLionState", "EmaState",
           "identity", "set_to_zero", "scale", "scale_by_schedule", "scale_by_learning_rate",
           "trace", "ema", "scale_by_adam", "scale_by_rms", "scale_by_rss", "scale_by_lion",
           "global_norm", "clip_by_global_norm", "clip_by_block_rms", "default_decay_mask",
           "add_decayed_weights", "scale_by_trust_ratio", "scale_by_param_block_rms"]


class ScaleByScheduleState(NamedTuple):
    count: Any


class TraceState(NamedTuple):
    trace: Any


class ScaleByAdamState(NamedTuple):
    count: Any
    mu: Any
    nu: Any


class ScaleByRmsState(NamedTuple):
    mu: Any  # None unless centered
    nu: Any


class ScaleByRmsWithCountState(NamedTuple):
    count: Any
    nu: Any


class ScaleByRssState(NamedTuple):
    sum_of_squares: Any


class ScaleByLionState(NamedTuple):
    mu: Any


class EmaState(NamedTuple):
    count: Any
    ema: Any


# ----------------------------------------------------------------------------------------------
# Scaling, momentum, moving averages


def identity() -> GradientTransformation:
    """Pass updates through unchanged."""
    return checked_transformation(lambda params: EmptyState(),
                                  lambda updates, state, params=None: (updates, state),
                                  EmptyState, "identity")


def set_to_zero() -> GradientTransformation:
    """Zero updates and no state: freezes whatever it is applied to (see `multi_transform`)."""
    return checked_transformation(
        lambda params: EmptyState(),
        lambda updates, state, params=None: (tree_zeros_like(updates), state), EmptyState,
        "set_to_zero")


def scale(step_size) -> GradientTransformation:
    """u -> step_size * u."""
    check_hyper("scale", "step_size", step_size)

    def update(updates, state, params=None):
        return tu.tree_map(lambda u: u * cast_like(step_size, u), updates), state

    return checked_transformation(lambda params: EmptyState(), update, EmptyState)


def scale_by_schedule(step_size_fn: Callable) -> GradientTransformation:
    """u -> step_size_fn(count) * u, count = number of updates done before this one."""

    def init(params):
        return ScaleByScheduleState(zero_count())

    if not callable(step_size_fn):
        raise TypeError(f"optim.scale_by_schedule: step_size_fn must be a callable of the step "
                        f"count, got {type(step_size_fn).__name__}")

    def update(updates, state, params=None):
        s = step_size_fn(state.count)
        check_hyper("scale_by_schedule", "the schedule's value", s)
        return (tu.tree_map(lambda u: u * cast_like(s, u), updates),
                ScaleByScheduleState(increment(state.count)))

    return checked_transformation(init, update, ScaleByScheduleState, eager=True)


def scale_by_learning_rate(learning_rate, *, flip_sign=True) -> GradientTransformation:
    """u -> -lr * u (descent), for a number or a schedule."""
    m = -1 if flip_sign else 1
    check_learning_rate("scale_by_learning_rate", learning_rate)
    if callable(learning_rate):
        def schedule(count):
            lr = learning_rate(count)
            check_lr_value("scale_by_learning_rate", lr, "the learning-rate schedule's value")
            return m * lr
        return scale_by_schedule(schedule)
    return scale(m * learning_rate)


def trace(decay: float, nesterov: bool = False) -> GradientTransformation:
    """Momentum: t = g + decay * t; the update is t (or g + decay * t with Nesterov)."""
    check_hyper("trace", "decay (momentum)", decay, 0, 1, hi_open=True)

    def init(params):
        return TraceState(tree_zeros_like(params))

    def update(updates, state, params=None):
        t = leafwise("trace", lambda g, t: g + decay * t, updates, state.trace)
        if nesterov:
            out = leafwise("trace", lambda g, t: g + decay * t, updates, t)
        else:
            out = t
        return out, TraceState(t)

    return checked_transformation(init, update, TraceState)


def ema(decay, debias=True, accumulator_dtype=None) -> GradientTransformation:
    """Exponential moving average of the updates: e = decay e + (1 - decay) u; the update is e,
    or e / (1 - decay^t) with `debias` (Optax's; compare `trace`: t = decay t + u)."""

    def init(params):
        return EmaState(zero_count(), tu.tree_map(
            lambda p: fnp.zeros_like(p, dtype=accumulator_dtype), params))

    def update(updates, state, params=None):
        # (the accumulator may have its own dtype, so no dtype check against the updates)
        new = tu.tree_map(lambda u, e: (1 - decay) * u + decay * fnp.asarray(e, u.dtype),
                          updates, state.ema)
        count = increment(state.count)
        out = new
        if debias:
            bc = 1 - decay ** count
            out = tu.tree_map(lambda e: e / cast_like(bc, e), new)
        if accumulator_dtype is not None:
            new = tu.tree_map(lambda e: fnp.asarray(e, accumulator_dtype), new)
        return out, EmaState(count, new)

    return checked_transformation(init, update, EmaState)


# ----------------------------------------------------------------------------------------------
# Second moments: Adam, RMSProp, Adagrad, Lion


def scale_by_adam(b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0) -> GradientTransformation:
    """Adam's scaling: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    u = m_hat / (sqrt(v_hat + eps_root) + eps) with m_hat = m / (1 - b1^t), v_hat = v / (1 - b2^t).
    """
    check_hyper("scale_by_adam", "b1", b1, 0, 1, hi_open=True)
    check_hyper("scale_by_adam", "b2", b2, 0, 1, hi_open=True)
    check_hyper("scale_by_adam", "eps", eps, 0)
    check_hyper("scale_by_adam", "eps_root", eps_root, 0)

    def init(params):
        return ScaleByAdamState(zero_count(), tree_zeros_like(params), tree_zeros_like(params))

    def update(updates, state, params=None):
        mu = leafwise("scale_by_adam", lambda g, m: b1 * m + (1 - b1) * g, updates, state.mu)
        nu = leafwise("scale_by_adam", lambda g, v: b2 * v + (1 - b2) * (g * g), updates, state.nu)
        count = increment(state.count)
        bc1, bc2 = 1 - b1 ** count, 1 - b2 ** count

        def step(m, v):
            return (m / cast_like(bc1, m)) / (fnp.sqrt(v / cast_like(bc2, v) + eps_root) + eps)

        return tu.tree_map(step, mu, nu), ScaleByAdamState(count, mu, nu)

    return checked_transformation(init, update, ScaleByAdamState)


def scale_by_rms(decay=0.9, eps=1e-8, initial_scale=0.0, eps_in_sqrt=True, bias_correction=False,
                 *, centered=False):
    """RMSProp's scaling (Optax: eps inside the root): nu = decay nu + (1-decay) g^2;
    u = g / sqrt(nu + eps), or g / sqrt(nu - mu^2 + eps) when centered (mu = EMA of g).
    `eps_in_sqrt=False` gives g / (sqrt(nu) + eps); `bias_correction` divides nu by
    1 - decay^t first (both as Optax's, for the uncentered form). Optax's positional order;
    `centered` (Optax's separate scale_by_stddev) is keyword-only."""
    if bias_correction and centered:
        raise ValueError("optim.scale_by_rms: bias_correction is for the uncentered form")
    check_hyper("scale_by_rms", "decay", decay, 0, 1, hi_open=True)
    check_hyper("scale_by_rms", "eps", eps, 0)
    check_hyper("scale_by_rms", "initial_scale", initial_scale, 0)

    def init(params):
        nu = tu.tree_map(lambda p: fnp.full_like(p, initial_scale), params)
        if bias_correction:
            return ScaleByRmsWithCountState(zero_count(), nu)
        return ScaleByRmsState(tree_zeros_like(params) if centered else None, nu)

    def update(updates, state, params=None):
        nu = leafwise("scale_by_rms", lambda g, n: decay * n + (1 - decay) * (g * g), updates,
                      state.nu)
        if centered:
            mu = leafwise("scale_by_rms", lambda g, m: decay * m + (1 - decay) * g, updates,
                          state.mu)
            out = tu.tree_map(lambda g, n, m: g / fnp.sqrt(n - m * m + eps), updates, nu, mu)
            return out, ScaleByRmsState(mu, nu)
        nu_hat = nu
        if bias_correction:
            count = increment(state.count)
            bc = 1 - decay ** count
            nu_hat = tu.tree_map(lambda n: n / cast_like(bc, n), nu)
        if eps_in_sqrt:
            out = tu.tree_map(lambda g, n: g / fnp.sqrt(n + eps), updates, nu_hat)
        else:
            out = tu.tree_map(lambda g, n: g / (fnp.sqrt(n) + eps), updates, nu_hat)
        if bias_correction:
            return out, ScaleByRmsWithCountState(count, nu)
        return out, ScaleByRmsState(None, nu)

    return checked_transformation(
        init, update, ScaleByRmsWithCountState if bias_correction else ScaleByRmsState)


def scale_by_rss(initial_accumulator_value=0.1, eps=1e-7) -> GradientTransformation:
    """Adagrad's scaling: s = s + g^2; u = g / sqrt(s + eps) (0 where s == 0)."""
    check_hyper("scale_by_rss", "initial_accumulator_value", initial_accumulator_value, 0)
    check_hyper("scale_by_rss", "eps", eps, 0)

    def init(params):
        return ScaleByRssState(tu.tree_map(lambda p: fnp.full_like(p, initial_accumulator_value),
                                           params))

    def update(updates, state, params=None):
        s = leafwise("scale_by_rss", lambda g, s: s + g * g, updates, state.sum_of_squares)
        out = tu.tree_map(lambda g, s: fnp.where(s > 0, g / fnp.sqrt(s + eps), 0 * g), updates, s)
        return out, ScaleByRssState(s)

    return checked_transformation(init, update, ScaleByRssState)


def scale_by_lion(b1=0.9, b2=0.99) -> GradientTransformation:
    """Lion's scaling: u = sign((1-b1) g + b1 m); then m = b2 m + (1-b2) g."""
    check_hyper("scale_by_lion", "b1", b1, 0, 1)
    check_hyper("scale_by_lion", "b2", b2, 0, 1)

    def init(params):
        return ScaleByLionState(tree_zeros_like(params))

    def update(updates, state, params=None):
        out = leafwise("scale_by_lion", lambda g, m: fnp.sign((1 - b1) * g + b1 * m), updates,
                       state.mu)
        mu = tu.tree_map(lambda g, m: b2 * m + (1 - b2) * g, updates, state.mu)
        return out, ScaleByLionState(mu)

    return checked_transformation(init, update, ScaleByLionState)


# ----------------------------------------------------------------------------------------------
# Clipping, weight decay, per-leaf scales (trust ratios, parameter RMS)


def global_norm(tree):
    """sqrt of the sum of squares of every element of every leaf (at least float32); under a
    sharded step, of the whole leaves (see `shard_sum`)."""
    total = 0.0
    for g in tu.tree_leaves(tree):
        g = fnp.asarray(g, np.promote_types(g.dtype, np.float32))
        total = total + fnp.sum(g * g)
    return fnp.sqrt(shard_sum(total))


def clip_by_global_norm(max_norm: float) -> GradientTransformation:
    """Scale all updates by max_norm / ||u|| when the global norm ||u|| exceeds max_norm."""
    check_hyper("clip_by_global_norm", "max_norm", max_norm, 0, lo_open=True)

    def update(updates, state, params=None):
        if not tu.tree_leaves(updates):
            return updates, state
        norm = global_norm(updates)
        factor = max_norm / fnp.maximum(norm, max_norm)
        return tu.tree_map(lambda u: u * cast_like(factor, u), updates), state

    return checked_transformation(lambda params: EmptyState(), update, EmptyState)


def clip_by_block_rms(threshold) -> GradientTransformation:
    """u -> u / max(1, rms(u) / threshold) per leaf (Adafactor's update clipping)."""

    def update(updates, state, params=None):
        def clip(u):
            return u / fnp.maximum(1.0, fnp.sqrt(leaf_mean(u * u)) / threshold).astype(u.dtype)
        return tu.tree_map(clip, updates), state

    return checked_transformation(lambda params: EmptyState(), update)


def default_decay_mask(params):
    """Weight decay for matrices and kernels only (ndim >= 2): biases and norm scales/offsets
    (vectors and scalars) are not decayed."""
    return tu.tree_map(lambda p: len(np.shape(p)) >= 2, params)


def add_decayed_weights(weight_decay: float = 0.0, mask=None) -> GradientTransformation:
    """u -> u + weight_decay * p on the leaves where `mask` is True (all leaves when None).

    Unlike `masked`, leaves outside this mask keep their update: they are just not decayed.
    """
    check_hyper("add_decayed_weights", "weight_decay", weight_decay, 0)

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("optim.add_decayed_weights needs params: call "
                             "tx.update(grads, state, params)")
        on = (None if mask is None
              else _masks.leaf_mask(mask, params, "optim.add_decayed_weights"))
        leaves, treedef = tu.tree_flatten(updates)
        ps = treedef.flatten_up_to(params)          # (the structures were checked on entry)
        out = [u if (on is not None and not on[i]) or p is None
               else u + cast_like(weight_decay, u) * fnp.asarray(p, u.dtype)
               for i, (u, p) in enumerate(zip(leaves, ps))]
        return tu.tree_unflatten(treedef, out), state

    return checked_transformation(lambda params: EmptyState(), update, EmptyState)


def _safe_norm(x, min_norm):
    """max(||x||, min_norm) with a finite gradient at x = 0 (Optax's safe_norm); the norm of the
    whole leaf under a sharded step."""
    norm = fnp.sqrt(shard_sum(fnp.sum(x * x)))
    small = norm <= min_norm
    x = fnp.where(small, fnp.ones_like(x), x)
    return fnp.where(small, fnp.asarray(min_norm, norm.dtype), fnp.sqrt(shard_sum(fnp.sum(x * x))))


def scale_by_trust_ratio(min_norm=0.0, trust_coefficient=1.0, eps=0.0) -> GradientTransformation:
    """u -> u * trust_coefficient * ||p|| / (||u|| + eps) per leaf (LARS/LAMB's layer-wise trust
    ratio), 1 where either norm is 0 (Optax's)."""

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("optim.scale_by_trust_ratio needs params: call "
                             "tx.update(grads, state, params)")

        def one(u, p):
            p_norm = _safe_norm(fnp.asarray(p), min_norm)
            u_norm = _safe_norm(u, min_norm)
            ratio = trust_coefficient * p_norm / (u_norm + eps)
            zero = (p_norm == 0.0) | (u_norm == 0.0)
            return u * cast_like(fnp.where(zero, fnp.ones_like(ratio), ratio), u)

        return leafwise("scale_by_trust_ratio", one, updates, params), state

    return checked_transformation(lambda params: EmptyState(), update)


def _safe_rms(x, min_rms):
    rms = fnp.sqrt(leaf_mean(x * x))
    small = rms <= min_rms
    x = fnp.where(small, fnp.ones_like(x), x)
    return fnp.where(small, fnp.asarray(min_rms, rms.dtype), fnp.sqrt(leaf_mean(x * x)))


def scale_by_param_block_rms(min_scale=1e-3) -> GradientTransformation:
    """u -> u * max(rms(p), min_scale) per leaf (Adafactor's relative step size)."""

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("optim.scale_by_param_block_rms needs params: call "
                             "tx.update(grads, state, params)")
        return leafwise("scale_by_param_block_rms",
                        lambda u, p: u * cast_like(_safe_rms(fnp.asarray(p), min_scale), u),
                        updates, params), state

    return checked_transformation(lambda params: EmptyState(), update)


MADE_BY.update({
    ScaleByScheduleState: "scale_by_schedule (a learning-rate schedule)",
    TraceState: "trace (sgd or momentum with momentum, rmsprop with momentum)",
    ScaleByAdamState: "scale_by_adam (adam, adamw)",
    ScaleByRmsState: "scale_by_rms (rmsprop)",
    ScaleByRssState: "scale_by_rss (adagrad)",
    ScaleByLionState: "scale_by_lion (lion)",
    EmaState: "ema (adafactor with momentum)",
    ScaleByRmsWithCountState: "scale_by_rms with bias_correction (contrib.schedule_free_adamw)",
})
SHARED_STATES.add(ScaleByScheduleState)
