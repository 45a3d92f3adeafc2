"""Optimizers as pairs of pure functions (Optax's design, names and update formulas).

    tx = optim.chain(optim.clip_by_global_norm(1.0), optim.adamw(1e-3))
    state = tx.init(params)
    updates, state = tx.update(grads, state, params)
    params = optim.apply_updates(params, updates)

Every `update` is written with `funcgrad.numpy` and tree maps, so it runs eagerly on NumPy/CuPy
arrays and traces under `fg.jit`. States are pytrees of arrays (step counters are int32 arrays;
frozen leaves under `masked` are `None` holes). Updates keep each leaf's dtype: scalar factors
(learning rates, bias corrections) are cast to the leaf's dtype before they touch it.

A learning rate is a number or a schedule `f(count) -> lr`, evaluated at the number of updates
done so far (0 on the first update).
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import numpy as np

from . import masks as _masks
from . import numpy as fnp
from . import tree_util as tu
from .devices import inputs_on_default_backend

__all__ = [
    "GradientTransformation", "chain", "identity", "scale", "scale_by_learning_rate",
    "scale_by_schedule", "trace", "scale_by_adam", "scale_by_rms", "scale_by_rss", "scale_by_lion",
    "clip_by_global_norm", "global_norm", "add_decayed_weights", "default_decay_mask", "sgd",
    "momentum", "adam", "adamw", "rmsprop", "adagrad", "lion", "masked", "multi_transform",
    "set_to_zero", "MultiSteps", "apply_updates", "constant_schedule", "linear_schedule",
    "polynomial_schedule", "cosine_decay_schedule", "warmup_cosine_decay_schedule",
    "exponential_decay", "piecewise_constant_schedule", "join_schedules",
]


class GradientTransformation(NamedTuple):
    """`init(params) -> state`; `update(updates, state, params=None) -> (updates, state)`."""

    init: Callable
    update: Callable


def _transformation(init, update):
    """A GradientTransformation whose update takes host or device leaves alike (with a GPU
    default backend, host updates and parameters are copied to the device first)."""
    return GradientTransformation(init, inputs_on_default_backend(update))


class EmptyState(NamedTuple):
    """State of a stateless transformation."""


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


class ScaleByRssState(NamedTuple):
    sum_of_squares: Any


class ScaleByLionState(NamedTuple):
    mu: Any


class MaskedState(NamedTuple):
    inner_state: Any


class MultiTransformState(NamedTuple):
    inner_states: Any


class MultiStepsState(NamedTuple):
    mini_step: Any
    gradient_step: Any
    inner_opt_state: Any
    acc_grads: Any


# ----------------------------------------------------------------------------------------------
# Helpers


def _cast(x, like):
    """Scalar/array `x` in the dtype of the leaf `like` (keeps float32 params float32); a
    Python number becomes a NumPy scalar, which combines with NumPy and CuPy arrays alike."""
    if type(x) in (int, float):
        return np.dtype(like.dtype).type(x)
    return fnp.astype(x, like.dtype)


def _count0():
    return fnp.zeros((), np.int32)


def _inc(count):
    return fnp.astype(count + 1, np.int32)


def _mismatch(who, expected, got):
    d = _masks.first_difference(expected, got, names=("the optimizer state", "the updates"),
                                check_shapes=True)
    detail = d[1] if d else "structures differ"
    return ValueError(f"optim.{who}: the tree passed to update does not match the tree the "
                      f"optimizer was initialised with: {detail}")


def _leafwise(who, f, updates, *others):
    """`f(u, *o)` per leaf of `updates`; `others` must have its structure and leaf shapes."""
    leaves, treedef = tu.tree_flatten(updates)
    cols = []
    for o in others:
        try:
            col = treedef.flatten_up_to(o)
        except ValueError:
            raise _mismatch(who, o, updates) from None
        for u, x in zip(leaves, col):
            if x is not None and np.shape(u) != np.shape(x):
                raise _mismatch(who, o, updates)
        cols.append(col)
    return tu.tree_unflatten(treedef, [f(*xs) for xs in zip(leaves, *cols)])


def _zeros_like(tree):
    return tu.tree_map(fnp.zeros_like, tree)


def _lr_fn(learning_rate):
    return learning_rate if callable(learning_rate) else None


# ----------------------------------------------------------------------------------------------
# Combinators and simple transforms


def chain(*transforms) -> GradientTransformation:
    """Apply transformations in order; the state is the tuple of their states."""

    def init(params):
        return tuple(t.init(params) for t in transforms)

    def update(updates, state, params=None):
        if len(state) != len(transforms):
            raise ValueError(f"optim.chain: state has {len(state)} parts for {len(transforms)} "
                             "transformations (was it made by this optimizer's init?)")
        new = []
        for t, s in zip(transforms, state):
            updates, s = t.update(updates, s, params)
            new.append(s)
        return updates, tuple(new)

    return _transformation(init, update)


def identity() -> GradientTransformation:
    """Pass updates through unchanged."""
    return _transformation(lambda params: EmptyState(),
                                  lambda updates, state, params=None: (updates, state))


def scale(step_size) -> GradientTransformation:
    """u -> step_size * u."""

    def update(updates, state, params=None):
        return tu.tree_map(lambda u: u * _cast(step_size, u), updates), state

    return _transformation(lambda params: EmptyState(), update)


def scale_by_schedule(step_size_fn: Callable) -> GradientTransformation:
    """u -> step_size_fn(count) * u, count = number of updates done before this one."""

    def init(params):
        return ScaleByScheduleState(_count0())

    def update(updates, state, params=None):
        s = step_size_fn(state.count)
        return (tu.tree_map(lambda u: u * _cast(s, u), updates),
                ScaleByScheduleState(_inc(state.count)))

    return _transformation(init, update)


def scale_by_learning_rate(learning_rate, *, flip_sign=True) -> GradientTransformation:
    """u -> -lr * u (descent), for a number or a schedule."""
    m = -1 if flip_sign else 1
    if callable(learning_rate):
        return scale_by_schedule(lambda count: m * learning_rate(count))
    return scale(m * learning_rate)


def trace(decay: float, nesterov: bool = False) -> GradientTransformation:
    """Momentum: t = g + decay * t; the update is t (or g + decay * t with Nesterov)."""

    def init(params):
        return TraceState(_zeros_like(params))

    def update(updates, state, params=None):
        t = _leafwise("trace", lambda g, t: g + decay * t, updates, state.trace)
        if nesterov:
            out = _leafwise("trace", lambda g, t: g + decay * t, updates, t)
        else:
            out = t
        return out, TraceState(t)

    return _transformation(init, update)


def scale_by_adam(b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0) -> GradientTransformation:
    """Adam's scaling: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    u = m_hat / (sqrt(v_hat + eps_root) + eps) with m_hat = m / (1 - b1^t), v_hat = v / (1 - b2^t).
    """

    def init(params):
        return ScaleByAdamState(_count0(), _zeros_like(params), _zeros_like(params))

    def update(updates, state, params=None):
        mu = _leafwise("scale_by_adam", lambda g, m: b1 * m + (1 - b1) * g, updates, state.mu)
        nu = _leafwise("scale_by_adam", lambda g, v: b2 * v + (1 - b2) * (g * g), updates, state.nu)
        count = _inc(state.count)
        bc1, bc2 = 1 - b1 ** count, 1 - b2 ** count

        def step(m, v):
            return (m / _cast(bc1, m)) / (fnp.sqrt(v / _cast(bc2, v) + eps_root) + eps)

        return tu.tree_map(step, mu, nu), ScaleByAdamState(count, mu, nu)

    return _transformation(init, update)


def scale_by_rms(decay=0.9, eps=1e-8, initial_scale=0.0, centered=False):
    """RMSProp's scaling (Optax: eps inside the root): nu = decay nu + (1-decay) g^2;
    u = g / sqrt(nu + eps), or g / sqrt(nu - mu^2 + eps) when centered (mu = EMA of g)."""

    def init(params):
        nu = tu.tree_map(lambda p: fnp.full_like(p, initial_scale), params)
        return ScaleByRmsState(_zeros_like(params) if centered else None, nu)

    def update(updates, state, params=None):
        nu = _leafwise("scale_by_rms", lambda g, n: decay * n + (1 - decay) * (g * g), updates,
                       state.nu)
        if centered:
            mu = _leafwise("scale_by_rms", lambda g, m: decay * m + (1 - decay) * g, updates,
                           state.mu)
            out = tu.tree_map(lambda g, n, m: g / fnp.sqrt(n - m * m + eps), updates, nu, mu)
        else:
            mu = None
            out = tu.tree_map(lambda g, n: g / fnp.sqrt(n + eps), updates, nu)
        return out, ScaleByRmsState(mu, nu)

    return _transformation(init, update)


def scale_by_rss(initial_accumulator_value=0.1, eps=1e-7) -> GradientTransformation:
    """Adagrad's scaling: s = s + g^2; u = g / sqrt(s + eps) (0 where s == 0)."""

    def init(params):
        return ScaleByRssState(tu.tree_map(lambda p: fnp.full_like(p, initial_accumulator_value),
                                           params))

    def update(updates, state, params=None):
        s = _leafwise("scale_by_rss", lambda g, s: s + g * g, updates, state.sum_of_squares)
        out = tu.tree_map(lambda g, s: fnp.where(s > 0, g / fnp.sqrt(s + eps), 0 * g), updates, s)
        return out, ScaleByRssState(s)

    return _transformation(init, update)


def scale_by_lion(b1=0.9, b2=0.99) -> GradientTransformation:
    """Lion's scaling: u = sign((1-b1) g + b1 m); then m = b2 m + (1-b2) g."""

    def init(params):
        return ScaleByLionState(_zeros_like(params))

    def update(updates, state, params=None):
        out = _leafwise("scale_by_lion", lambda g, m: fnp.sign((1 - b1) * g + b1 * m), updates,
                        state.mu)
        mu = tu.tree_map(lambda g, m: b2 * m + (1 - b2) * g, updates, state.mu)
        return out, ScaleByLionState(mu)

    return _transformation(init, update)


def global_norm(tree):
    """sqrt of the sum of squares of every element of every leaf (at least float32)."""
    total = 0.0
    for g in tu.tree_leaves(tree):
        g = fnp.asarray(g, np.promote_types(g.dtype, np.float32))
        total = total + fnp.sum(g * g)
    return fnp.sqrt(total)


def clip_by_global_norm(max_norm: float) -> GradientTransformation:
    """Scale all updates by max_norm / ||u|| when the global norm ||u|| exceeds max_norm."""

    def update(updates, state, params=None):
        if not tu.tree_leaves(updates):
            return updates, state
        norm = global_norm(updates)
        factor = max_norm / fnp.maximum(norm, max_norm)
        return tu.tree_map(lambda u: u * _cast(factor, u), updates), state

    return _transformation(lambda params: EmptyState(), update)


def default_decay_mask(params):
    """Weight decay for matrices and kernels only (ndim >= 2): biases and norm scales/offsets
    (vectors and scalars) are not decayed."""
    return tu.tree_map(lambda p: len(np.shape(p)) >= 2, params)


def add_decayed_weights(weight_decay: float = 0.0, mask=None) -> GradientTransformation:
    """u -> u + weight_decay * p on the leaves where `mask` is True (all leaves when None).

    Unlike `masked`, leaves outside this mask keep their update: they are just not decayed.
    """

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("optim.add_decayed_weights needs params: call "
                             "tx.update(grads, state, params)")
        on = (None if mask is None
              else _masks.leaf_mask(mask, params, "optim.add_decayed_weights"))
        leaves, treedef = tu.tree_flatten(updates)
        try:
            ps = treedef.flatten_up_to(params)
        except ValueError:
            raise _mismatch("add_decayed_weights", params, updates) from None
        if on is not None and len(on) != len(leaves):
            raise _mismatch("add_decayed_weights", params, updates)
        out = [u if (on is not None and not on[i]) or p is None
               else u + _cast(weight_decay, u) * fnp.asarray(p, u.dtype)
               for i, (u, p) in enumerate(zip(leaves, ps))]
        return tu.tree_unflatten(treedef, out), state

    return _transformation(lambda params: EmptyState(), update)


# ----------------------------------------------------------------------------------------------
# Optimizers


def sgd(learning_rate, momentum=None, nesterov=False) -> GradientTransformation:
    """Stochastic gradient descent: u = -lr * g, or -lr * trace with momentum."""
    parts = [] if momentum is None else [trace(momentum, nesterov)]
    return chain(*parts, scale_by_learning_rate(learning_rate))


def momentum(learning_rate, beta=0.9, nesterov=False) -> GradientTransformation:
    """SGD with momentum: t = g + beta * t; u = -lr * t."""
    return sgd(learning_rate, beta, nesterov)


def adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0) -> GradientTransformation:
    """Adam (Kingma & Ba): see `scale_by_adam`, then u = -lr * u."""
    return chain(scale_by_adam(b1, b2, eps, eps_root), scale_by_learning_rate(learning_rate))


def adamw(learning_rate, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, weight_decay=1e-4,
          mask=default_decay_mask) -> GradientTransformation:
    """AdamW (decoupled weight decay): u = -lr * (adam_u + weight_decay * p).

    `mask` (bool tree, prefix, or callable of params) says which leaves are decayed; the default
    decays matrices only, not biases or norm scales. `mask=None` decays every leaf.
    """
    return chain(scale_by_adam(b1, b2, eps, eps_root), add_decayed_weights(weight_decay, mask),
                 scale_by_learning_rate(learning_rate))


def rmsprop(learning_rate, decay=0.9, eps=1e-8, initial_scale=0.0, centered=False,
            momentum=None, nesterov=False) -> GradientTransformation:
    """RMSProp: u = -lr * g / sqrt(nu + eps) (optionally centered, optionally with momentum)."""
    parts = [scale_by_rms(decay, eps, initial_scale, centered)]
    if momentum is not None:
        parts.append(trace(momentum, nesterov))
    return chain(*parts, scale_by_learning_rate(learning_rate))


def adagrad(learning_rate, initial_accumulator_value=0.1, eps=1e-7) -> GradientTransformation:
    """Adagrad: s = s + g^2; u = -lr * g / sqrt(s + eps)."""
    return chain(scale_by_rss(initial_accumulator_value, eps),
                 scale_by_learning_rate(learning_rate))


def lion(learning_rate, b1=0.9, b2=0.99, weight_decay=1e-3,
         mask=default_decay_mask) -> GradientTransformation:
    """Lion (Chen et al. 2023): u = -lr * (sign((1-b1) g + b1 m) + weight_decay * p)."""
    return chain(scale_by_lion(b1, b2), add_decayed_weights(weight_decay, mask),
                 scale_by_learning_rate(learning_rate))


# ----------------------------------------------------------------------------------------------
# Masks, labels, accumulation


def _select(tree, on):
    """`tree` with the leaves where `on` is False replaced by None."""
    leaves, treedef = tu.tree_flatten(tree)
    return tu.tree_unflatten(treedef, [x if m else None for x, m in zip(leaves, on)])


def masked(inner: GradientTransformation, mask) -> GradientTransformation:
    """Run `inner` on the trainable (True) leaves of `mask` only; freeze the False leaves.

    Frozen leaves get zero updates (in their dtype), have no optimizer state (None holes), get no
    weight decay and are left out of the inner chain's global-norm clipping. `mask` is a bool
    tree, a prefix of one, or a callable `mask(params)`.

    This deliberately differs from `optax.masked`, which passes the *raw gradients* through on
    masked-out leaves, so that `apply_updates` moves frozen params by +grad unless the user adds
    `set_to_zero` (optax#159). In funcgrad a mask always means trainable.
    """

    def init(params):
        on = _masks.leaf_mask(mask, params, "optim.masked")
        return MaskedState(inner.init(_select(params, on)))

    def update(updates, state, params=None):
        on = _masks.leaf_mask(mask, updates, "optim.masked")
        sub_p = None if params is None else _select(params, on)
        new, inner_state = inner.update(_select(updates, on), state.inner_state, sub_p)
        leaves, treedef = tu.tree_flatten(updates)
        got = treedef.flatten_up_to(new)
        out = [n if m else fnp.zeros_like(u) for u, n, m in zip(leaves, got, on)]
        return tu.tree_unflatten(treedef, out), MaskedState(inner_state)

    return _transformation(init, update)


def set_to_zero() -> GradientTransformation:
    """Zero updates and no state: freezes whatever it is applied to (see `multi_transform`)."""
    return _transformation(
        lambda params: EmptyState(),
        lambda updates, state, params=None: (_zeros_like(updates), state))


def multi_transform(transforms: dict, param_labels) -> GradientTransformation:
    """A different transformation per group of leaves: `param_labels` gives each leaf a label
    (a tree of labels, a prefix of one, or a callable of params), `transforms[label]` updates the
    leaves with that label, e.g. `{"backbone": set_to_zero(), "head": adam(1e-3)}`."""

    def labels_of(tree):
        labels = param_labels(tree) if callable(param_labels) else param_labels
        if isinstance(labels, str):
            out = [labels] * len(tu.tree_leaves(tree))
        else:
            try:
                out = tu.tree_broadcast_prefix(labels, tree)
            except ValueError:
                d = _masks.first_difference(labels, tree, names=("param_labels", "the params"),
                                            a_is_prefix=True)
                raise ValueError("optim.multi_transform: param_labels do not match the params: "
                                 f"{d[1] if d else 'structures differ'}") from None
        unknown = sorted({str(x) for x in out if x not in transforms})
        if unknown:
            raise KeyError(f"optim.multi_transform: labels {unknown} have no transformation; "
                           f"known labels: {sorted(transforms)}")
        return out

    def init(params):
        labels = labels_of(params)
        return MultiTransformState({k: t.init(_select(params, [x == k for x in labels]))
                                    for k, t in transforms.items()})

    def update(updates, state, params=None):
        labels = labels_of(updates)
        leaves, treedef = tu.tree_flatten(updates)
        out = list(leaves)
        new_states = {}
        for k, t in transforms.items():
            on = [x == k for x in labels]
            sub_p = None if params is None else _select(params, on)
            new, new_states[k] = t.update(_select(updates, on), state.inner_states[k], sub_p)
            for i, n in enumerate(treedef.flatten_up_to(new)):
                if on[i]:
                    out[i] = n
        return tu.tree_unflatten(treedef, out), MultiTransformState(new_states)

    return _transformation(init, update)


class MultiSteps:
    """Gradient accumulation: average the gradients of `every_k_schedule` mini-steps, then apply
    `opt` once to the mean; the mini-steps in between emit zero updates.

    Written with `fnp.where` instead of Python branches, so it traces under `fg.jit` (the inner
    update is computed every mini-step and selected on the k-th).
    """

    def __init__(self, opt: GradientTransformation, every_k_schedule):
        self.opt = opt
        self.every_k_schedule = (every_k_schedule if callable(every_k_schedule)
                                 else (lambda step, k=int(every_k_schedule): k))

    def init(self, params):
        return MultiStepsState(_count0(), _count0(), self.opt.init(params), _zeros_like(params))

    @inputs_on_default_backend
    def update(self, updates, state, params=None):
        k = self.every_k_schedule(state.gradient_step)
        n = _inc(state.mini_step)
        acc = _leafwise("MultiSteps", lambda g, a: a + (g - a) / _cast(n, a), updates,
                        state.acc_grads)
        emit = n >= k
        inner_u, inner_s = self.opt.update(acc, state.inner_opt_state, params)
        out = tu.tree_map(lambda u: fnp.where(emit, u, fnp.zeros_like(u)), inner_u)
        new_inner = tu.tree_map(lambda a, b: fnp.where(emit, a, b), inner_s,
                                state.inner_opt_state)
        acc = tu.tree_map(lambda a: fnp.where(emit, fnp.zeros_like(a), a), acc)
        mini = fnp.astype(fnp.where(emit, 0, n), np.int32)
        step = fnp.astype(fnp.where(emit, state.gradient_step + 1, state.gradient_step), np.int32)
        return out, MultiStepsState(mini, step, new_inner, acc)

    def has_updated(self, state):
        """True right after a mini-step that applied the inner optimizer."""
        return state.mini_step == 0

    def gradient_transformation(self) -> GradientTransformation:
        return _transformation(self.init, self.update)


@inputs_on_default_backend
def apply_updates(params, updates):
    """p + u per leaf, cast back to p's dtype; a None update leaves p unchanged."""

    def add(p, u):
        if u is None:
            return p
        if hasattr(p, "dtype"):
            return fnp.astype(p + u, p.dtype)
        return p + u

    return tu.tree_map(add, params, updates)


# ----------------------------------------------------------------------------------------------
# Schedules: callables of the update count (a Python int, or an int32 array under jit)


def constant_schedule(value):
    """lr(count) = value."""
    return lambda count: value


def polynomial_schedule(init_value, end_value, power, transition_steps, transition_begin=0):
    """(init - end) * (1 - t / transition_steps)^power + end, t = clip(count - begin, 0, steps)."""
    if transition_steps <= 0:
        return constant_schedule(init_value)

    def schedule(count):
        t = fnp.clip(count - transition_begin, 0, transition_steps)
        frac = 1 - t / transition_steps
        return (init_value - end_value) * frac ** power + end_value

    return schedule


def linear_schedule(init_value, end_value, transition_steps, transition_begin=0):
    """Linear ramp from init_value to end_value over transition_steps (after transition_begin)."""
    return polynomial_schedule(init_value, end_value, 1, transition_steps, transition_begin)


def cosine_decay_schedule(init_value, decay_steps, alpha=0.0, exponent=1.0):
    """init * ((1 - alpha) * (0.5 (1 + cos(pi t / decay_steps)))^exponent + alpha),
    t = min(count, decay_steps)."""
    if decay_steps <= 0:
        raise ValueError(f"cosine_decay_schedule: decay_steps must be positive, got {decay_steps}")

    def schedule(count):
        t = fnp.minimum(count, decay_steps)
        cosine = 0.5 * (1 + fnp.cos(math.pi * t / decay_steps))
        return init_value * ((1 - alpha) * cosine ** exponent + alpha)

    return schedule


def join_schedules(schedules, boundaries):
    """schedules[i](count - boundaries[i-1]) for boundaries[i-1] <= count < boundaries[i]."""

    def schedule(count):
        out = schedules[0](count)
        for s, b in zip(schedules[1:], boundaries):
            out = fnp.where(count < b, out, s(count - b))
        return out

    return schedule


def warmup_cosine_decay_schedule(init_value, peak_value, warmup_steps, decay_steps,
                                 end_value=0.0, exponent=1.0):
    """Linear warmup init -> peak over warmup_steps, then cosine decay peak -> end_value, reaching
    it at count = decay_steps (decay_steps includes the warmup, as in Optax)."""
    alpha = 0.0 if peak_value == 0 else end_value / peak_value
    return join_schedules(
        [linear_schedule(init_value, peak_value, warmup_steps),
         cosine_decay_schedule(peak_value, decay_steps - warmup_steps, alpha, exponent)],
        [warmup_steps])


def exponential_decay(init_value, transition_steps, decay_rate, transition_begin=0,
                      staircase=False, end_value=None):
    """init * decay_rate^((count - begin) / transition_steps) (floored when staircase), init
    before transition_begin, clipped at end_value when given."""
    if transition_steps <= 0:
        raise ValueError("exponential_decay: transition_steps must be positive, got "
                         f"{transition_steps}")

    def schedule(count):
        t = count - transition_begin
        p = t / transition_steps
        if staircase:
            p = fnp.floor(p)
        v = fnp.where(t <= 0, init_value, init_value * decay_rate ** p)
        if end_value is not None:
            v = fnp.maximum(v, end_value) if decay_rate < 1 else fnp.minimum(v, end_value)
        return v

    return schedule


def piecewise_constant_schedule(init_value, boundaries_and_scales=None):
    """init_value, multiplied by scales[b] for every boundary b <= count."""
    items = sorted((boundaries_and_scales or {}).items())

    def schedule(count):
        v = init_value
        for b, s in items:
            v = fnp.where(count < b, v, v * s)
        return v

    return schedule
