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

Sharded training (`fg.distributed.make_train_step(..., shard=...)`) runs `update` on each rank's
slice of every leaf. Elementwise rules need nothing for that; a transformation that reduces over
the elements of a tree (a norm, a mean, a count of non-finite values) passes its local result
through `shard_sum`, which adds up the ranks' parts when sharded (as `global_norm` does), and
one whose state or statistics depend on a leaf's whole shape asks `whole_shape` (the sharded step
names the whole leaf behind each parameter slice with `shard_slices`).
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
from typing import Any, Callable, NamedTuple

import numpy as np

from .. import lax as _lax
from .. import masks as _masks
from .. import numpy as fnp
from .. import tree_util as tu
from ..devices import inputs_on_default_backend
from ..transforms.jit import eval_shape
from ..transforms.jit import jit as _jit

__all__ = [
    "GradientTransformation", "chain", "identity", "scale", "scale_by_learning_rate",
    "scale_by_schedule", "trace", "scale_by_adam", "scale_by_rms", "scale_by_rss", "scale_by_lion",
    "clip_by_global_norm", "global_norm", "add_decayed_weights", "default_decay_mask", "sgd",
    "momentum", "adam", "adamw", "rmsprop", "adagrad", "lion", "masked", "multi_transform",
    "set_to_zero", "MultiSteps", "apply_updates", "constant_schedule", "linear_schedule",
    "polynomial_schedule", "cosine_decay_schedule", "warmup_cosine_decay_schedule",
    "exponential_decay", "piecewise_constant_schedule", "join_schedules", "shard_sum",
    "SHARD_AXIS", "shard_slices", "whole_shape", "master_weights", "master_params",
    "dynamic_loss_scale", "loss_scale", "all_finite", "keep_pruned", "pmean_updates",
]


class GradientTransformation(NamedTuple):
    """`init(params) -> state`; `update(updates, state, params=None) -> (updates, state)`."""

    init: Callable
    update: Callable


def checked_transformation(init, update, state_type=None, who=None, inner=(), eager=False):
    """A GradientTransformation whose update checks its inputs and takes host or device leaves
    alike (with a GPU default backend, host updates and parameters are copied to the device
    first). Checked on every call: the updates against the params (structure, shapes, dtypes)
    and, with `state_type`, that the state is one (so a state made by another optimizer is
    named). `who` defaults to the name of the function that defines `update`.

    The update is jitted (it runs as one compiled program, every leaf's update in one fused
    pass; the checks run when a new structure, shape or dtype traces it; under a transform it is
    traced as the formulas are), unless it is `eager` (it calls a schedule: a Python function
    of the step count, checked at every step on concrete values) or a transformation in
    `inner` is."""
    who = who or update.__qualname__.split(".")[0]

    def checked(updates, state, params=None):
        if state_type is not None:
            _state(who, state, state_type)
        if getattr(_checking, "done", False):    # an inner transformation: checked outside
            return update(updates, state, params)
        _check_updates(who, updates, params)
        _checking.done = True
        try:
            return update(updates, state, params)
        finally:
            _checking.done = False

    fn = inputs_on_default_backend(checked)
    if eager or any(not _compiled(t) for t in inner):
        return GradientTransformation(init, fn)
    return GradientTransformation(init, _jit(fn, inline=True))


def _compiled(transformation):
    """Whether a transformation's update is jitted (see checked_transformation)."""
    return callable(getattr(transformation.update, "lower", None))


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


class ScaleByRmsWithCountState(NamedTuple):
    count: Any
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
    return fnp.asarray(x, like.dtype)


def _count0():
    return fnp.zeros((), np.int32)


def _inc(count):
    return fnp.asarray(count + 1, np.int32)


def _leafwise(who, f, updates, *others):
    """`f(u, *o)` per leaf of `updates`; `others` (state trees) must have its structure, leaf
    shapes and dtypes."""
    leaves, treedef = tu.tree_flatten(updates)
    cols = []
    for o in others:
        try:
            col = treedef.flatten_up_to(o)
        except ValueError:
            col = None
        if col is None or any(x is not None and (np.shape(u) != np.shape(x) or
                                                 _dtype(u) != _dtype(x))
                              for u, x in zip(leaves, col)):
            raise _tree_error(who, o, updates, ("the optimizer state", "the updates"),
                              "the tree passed to update does not match the tree the optimizer "
                              "was initialised with")
        cols.append(col)
    return tu.tree_unflatten(treedef, [f(*xs) for xs in zip(leaves, *cols)])


def _zeros_like(tree):
    return tu.tree_map(fnp.zeros_like, tree)


def _lr_fn(learning_rate):
    return learning_rate if callable(learning_rate) else None


# ----------------------------------------------------------------------------------------------
# Validation shared by every transformation: trees against the params, states against the
# transformation that made them, hyperparameters at construction. Errors name the first path
# that differs (masks.first_difference) and the fix.


def _dtype(x):
    d = getattr(x, "dtype", None)
    return None if d is None else np.dtype(d)


def _tree_error(who, a, b, names, what):
    """ValueError (structure, shape) or TypeError (dtype) for the first path where `a` and `b`
    differ."""
    d = _masks.first_difference(a, b, names=names, check_shapes=True)
    if d is not None:
        return ValueError(f"optim.{who}: {what}: {d[1]}")
    for (path, x), y in zip(tu.tree_leaves_with_path(a), tu.tree_leaves(b)):
        if _dtype(x) is not None and _dtype(y) is not None and _dtype(x) != _dtype(y):
            return TypeError(f"optim.{who}: {what}: at {tu.path_to_str(path) or '<root>'!r}: dtype "
                             f"{_dtype(x)} in {names[0]}, {_dtype(y)} in {names[1]} (cast it: "
                             "tree_map(lambda g, p: g.astype(p.dtype), grads, params))")
    return ValueError(f"optim.{who}: {what}")


_checking = threading.local()   # .done: inside an update whose inputs were checked


def _leaves_differ(a, b):
    """Shape or dtype differ (leaves without a dtype, Python numbers, compare by shape only)."""
    if type(a) is np.ndarray and type(b) is np.ndarray:
        return a.shape != b.shape or a.dtype != b.dtype
    da, db = _dtype(a), _dtype(b)
    return np.shape(a) != np.shape(b) or (da != db and da is not None and db is not None)


def _check_updates(who, updates, params):
    """The updates (gradients) must have the params' structure, leaf shapes and dtypes (None
    holes where the params have them). Checked once per user call, by the outermost
    transformation."""
    if params is None:
        return
    u, ut = tu.tree_flatten(updates)
    p, pt = tu.tree_flatten(params)
    if ut != pt or any(map(_leaves_differ, u, p)):
        raise _tree_error(who, updates, params, ("the updates", "the params"),
                          "the updates (gradients) do not match the params")


_MADE_BY = {}  # state class -> the transformations that make it, for error messages (filled
#               below the state classes' makers)


def _state(who, state, cls):
    """`state` if it is a `cls`, else a TypeError that says which optimizer made it."""
    if not isinstance(state, cls):
        raise TypeError(f"optim.{who}: the optimizer state is {_made_by(state)}, but this "
                        f"transformation keeps a {cls.__name__}: pass the state that this same "
                        "optimizer's init(params) returned")
    return state


def _made_by(state) -> str:
    t = type(state)
    if t in _MADE_BY:
        return f"a {t.__name__}, made by optim.{_MADE_BY[t]}"
    if t is tuple:
        parts = ", ".join(type(s).__name__ for s in state)
        makers = [_MADE_BY[type(s)] for s in state
                  if type(s) in _MADE_BY and type(s) not in (EmptyState, ScaleByScheduleState)]
        source = f" (a chain holding optim.{makers[0]})" if makers else ""
        return f"the state of a chain of {len(state)}: ({parts}){source}"
    return f"a {t.__name__}"


def _is_number(v):
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(
        v, (bool, np.bool_))


def _hyper(who, name, v, lo=None, hi=None, lo_open=False, hi_open=False, integer=False):
    """Check a hyperparameter: a real number (Python/NumPy, or a 0-d array) within the range;
    a traced or device value (e.g. from inject_hyperparams under jit) is checked for its
    shape only. Returns `v`."""
    rng = (("(" if lo_open else "[") + ("-inf" if lo is None else f"{lo}") + ", " +
           ("inf" if hi is None else f"{hi}") + (")" if hi_open or hi is None else "]"))
    want = "an int" if integer else "a real number"
    if isinstance(v, np.ndarray) and v.shape == () and v.dtype.kind in "iuf":
        v = v[()]
    if not _is_number(v):
        if hasattr(v, "shape") and hasattr(v, "dtype") and not isinstance(v, np.ndarray) and \
                tuple(v.shape) == () and np.dtype(v.dtype).kind in "iuf":
            return v                           # a tracer or a device scalar: not inspected
        raise TypeError(f"optim.{who}: {name} must be {want} in {rng}, got "
                        f"{type(v).__name__} {v!r:.40}")
    if integer and not isinstance(v, (int, np.integer)):
        raise TypeError(f"optim.{who}: {name} must be an int >= {lo}, got {v!r}")
    x = float(v)
    if not (math.isfinite(x) and (lo is None or x > lo or (x == lo and not lo_open))
            and (hi is None or x < hi or (x == hi and not hi_open))):
        raise ValueError(f"optim.{who}: {name} must be in {rng}, got {v!r}")
    return v


def _check_lr_value(who, value, name="learning_rate"):
    """A learning rate (or schedule value) must be finite and >= 0 (for gradient ascent, negate
    the loss); host values are checked, traced ones are not."""
    if isinstance(value, (np.ndarray, np.generic)) and np.shape(value) == () or \
            _is_number(value):
        x = float(value)
        if not (math.isfinite(x) and x >= 0):
            raise ValueError(f"optim.{who}: {name} must be a finite number >= 0 (for gradient "
                             f"ascent, negate the loss), got {value!r}")


def _learning_rate(who, lr):
    """A number >= 0 or a schedule `f(count)`, probed at count 0 (Optax passes an int32
    array count)."""
    if callable(lr):
        _check_lr_value(who, lr(np.asarray(0, np.int32)), "the schedule's value at step 0")
        return lr
    if not (_is_number(lr) or hasattr(lr, "dtype") and tuple(getattr(lr, "shape", ())) == ()
            and np.dtype(lr.dtype).kind in "iuf"):
        raise TypeError(f"optim.{who}: learning_rate must be a number >= 0 or a schedule "
                        f"(a callable of the step count), got {type(lr).__name__} {lr!r:.40}")
    _check_lr_value(who, lr)
    return lr


# ----------------------------------------------------------------------------------------------
# Combinators and simple transforms


def chain(*transforms) -> GradientTransformation:
    """Apply transformations in order; the state is the tuple of their states."""
    return _chain("chain", transforms)


def _chain(who, transforms):
    """`chain`, reporting errors as `optim.<who>` (the optimizer the user called)."""
    for i, t in enumerate(transforms):
        if not (callable(getattr(t, "init", None)) and callable(getattr(t, "update", None))):
            raise TypeError(f"optim.{who}: argument {i} is a {type(t).__name__}, not a "
                            "GradientTransformation (an optimizer such as optim.adam(1e-3))")

    def init(params):
        return tuple(t.init(params) for t in transforms)

    def update(updates, state, params=None):
        if type(state) is not tuple or len(state) != len(transforms):
            raise TypeError(f"optim.{who}: the optimizer state is {_made_by(state)}, but this "
                            f"optimizer chains {len(transforms)} transformations: pass the state "
                            "that this same optimizer's init(params) returned")
        new = []
        for t, s in zip(transforms, state):
            updates, s = t.update(updates, s, params)
            new.append(s)
        return updates, tuple(new)

    return checked_transformation(init, update, who=who, inner=transforms)


def identity() -> GradientTransformation:
    """Pass updates through unchanged."""
    return checked_transformation(lambda params: EmptyState(),
                           lambda updates, state, params=None: (updates, state), EmptyState,
                           "identity")


def scale(step_size) -> GradientTransformation:
    """u -> step_size * u."""
    _hyper("scale", "step_size", step_size)

    def update(updates, state, params=None):
        return tu.tree_map(lambda u: u * _cast(step_size, u), updates), state

    return checked_transformation(lambda params: EmptyState(), update, EmptyState)


def scale_by_schedule(step_size_fn: Callable) -> GradientTransformation:
    """u -> step_size_fn(count) * u, count = number of updates done before this one."""

    def init(params):
        return ScaleByScheduleState(_count0())

    if not callable(step_size_fn):
        raise TypeError(f"optim.scale_by_schedule: step_size_fn must be a callable of the step "
                        f"count, got {type(step_size_fn).__name__}")

    def update(updates, state, params=None):
        s = step_size_fn(state.count)
        _hyper("scale_by_schedule", "the schedule's value", s)
        return (tu.tree_map(lambda u: u * _cast(s, u), updates),
                ScaleByScheduleState(_inc(state.count)))

    return checked_transformation(init, update, ScaleByScheduleState, eager=True)


def scale_by_learning_rate(learning_rate, *, flip_sign=True) -> GradientTransformation:
    """u -> -lr * u (descent), for a number or a schedule."""
    m = -1 if flip_sign else 1
    _learning_rate("scale_by_learning_rate", learning_rate)
    if callable(learning_rate):
        def schedule(count):
            lr = learning_rate(count)
            _check_lr_value("scale_by_learning_rate", lr, "the learning-rate schedule's value")
            return m * lr
        return scale_by_schedule(schedule)
    return scale(m * learning_rate)


def trace(decay: float, nesterov: bool = False) -> GradientTransformation:
    """Momentum: t = g + decay * t; the update is t (or g + decay * t with Nesterov)."""
    _hyper("trace", "decay (momentum)", decay, 0, 1, hi_open=True)

    def init(params):
        return TraceState(_zeros_like(params))

    def update(updates, state, params=None):
        t = _leafwise("trace", lambda g, t: g + decay * t, updates, state.trace)
        if nesterov:
            out = _leafwise("trace", lambda g, t: g + decay * t, updates, t)
        else:
            out = t
        return out, TraceState(t)

    return checked_transformation(init, update, TraceState)


def scale_by_adam(b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0) -> GradientTransformation:
    """Adam's scaling: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    u = m_hat / (sqrt(v_hat + eps_root) + eps) with m_hat = m / (1 - b1^t), v_hat = v / (1 - b2^t).
    """
    _hyper("scale_by_adam", "b1", b1, 0, 1, hi_open=True)
    _hyper("scale_by_adam", "b2", b2, 0, 1, hi_open=True)
    _hyper("scale_by_adam", "eps", eps, 0)
    _hyper("scale_by_adam", "eps_root", eps_root, 0)

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
    _hyper("scale_by_rms", "decay", decay, 0, 1, hi_open=True)
    _hyper("scale_by_rms", "eps", eps, 0)
    _hyper("scale_by_rms", "initial_scale", initial_scale, 0)

    def init(params):
        nu = tu.tree_map(lambda p: fnp.full_like(p, initial_scale), params)
        if bias_correction:
            return ScaleByRmsWithCountState(_count0(), nu)
        return ScaleByRmsState(_zeros_like(params) if centered else None, nu)

    def update(updates, state, params=None):
        nu = _leafwise("scale_by_rms", lambda g, n: decay * n + (1 - decay) * (g * g), updates,
                       state.nu)
        if centered:
            mu = _leafwise("scale_by_rms", lambda g, m: decay * m + (1 - decay) * g, updates,
                           state.mu)
            out = tu.tree_map(lambda g, n, m: g / fnp.sqrt(n - m * m + eps), updates, nu, mu)
            return out, ScaleByRmsState(mu, nu)
        nu_hat = nu
        if bias_correction:
            count = _inc(state.count)
            bc = 1 - decay ** count
            nu_hat = tu.tree_map(lambda n: n / _cast(bc, n), nu)
        if eps_in_sqrt:
            out = tu.tree_map(lambda g, n: g / fnp.sqrt(n + eps), updates, nu_hat)
        else:
            out = tu.tree_map(lambda g, n: g / (fnp.sqrt(n) + eps), updates, nu_hat)
        if bias_correction:
            return out, ScaleByRmsWithCountState(count, nu)
        return out, ScaleByRmsState(None, nu)

    return checked_transformation(init, update,
                           ScaleByRmsWithCountState if bias_correction else ScaleByRmsState)


def scale_by_rss(initial_accumulator_value=0.1, eps=1e-7) -> GradientTransformation:
    """Adagrad's scaling: s = s + g^2; u = g / sqrt(s + eps) (0 where s == 0)."""
    _hyper("scale_by_rss", "initial_accumulator_value", initial_accumulator_value, 0)
    _hyper("scale_by_rss", "eps", eps, 0)

    def init(params):
        return ScaleByRssState(tu.tree_map(lambda p: fnp.full_like(p, initial_accumulator_value),
                                           params))

    def update(updates, state, params=None):
        s = _leafwise("scale_by_rss", lambda g, s: s + g * g, updates, state.sum_of_squares)
        out = tu.tree_map(lambda g, s: fnp.where(s > 0, g / fnp.sqrt(s + eps), 0 * g), updates, s)
        return out, ScaleByRssState(s)

    return checked_transformation(init, update, ScaleByRssState)


def scale_by_lion(b1=0.9, b2=0.99) -> GradientTransformation:
    """Lion's scaling: u = sign((1-b1) g + b1 m); then m = b2 m + (1-b2) g."""
    _hyper("scale_by_lion", "b1", b1, 0, 1)
    _hyper("scale_by_lion", "b2", b2, 0, 1)

    def init(params):
        return ScaleByLionState(_zeros_like(params))

    def update(updates, state, params=None):
        out = _leafwise("scale_by_lion", lambda g, m: fnp.sign((1 - b1) * g + b1 * m), updates,
                        state.mu)
        mu = tu.tree_map(lambda g, m: b2 * m + (1 - b2) * g, updates, state.mu)
        return out, ScaleByLionState(mu)

    return checked_transformation(init, update, ScaleByLionState)


# The process axis over which a sharded train step splits every leaf between ranks.
SHARD_AXIS = "optim_shards"


def _sharded():
    try:
        _lax.axis_size(SHARD_AXIS)
    except NameError:
        return False
    return True


def shard_sum(x):
    """`x` summed over the ranks of a sharded train step, each of which updates a slice of every
    leaf (fg.distributed.make_train_step(..., shard=...) binds `SHARD_AXIS`); `x` itself
    otherwise. Reductions over the elements of the updates go through it to stay exact."""
    return _lax.psum(x, SHARD_AXIS) if _sharded() else x


def _leaf_mean(x):
    """fnp.mean(x) of a whole leaf; under a sharded step, over every rank's slice of it."""
    if not _sharded():
        return fnp.mean(x)
    wide = np.promote_types(x.dtype, np.float32)  # the element count, exact enough
    total = shard_sum(fnp.stack([fnp.sum(x, dtype=wide), fnp.asarray(x.size, wide)]))
    return fnp.asarray(total[0] / total[1], x.dtype)


_slices = threading.local()  # .known: the stack of shard_slices contexts


@contextlib.contextmanager
def shard_slices(slices, wholes):
    """Within this context each array of `slices` (the parameter slices a sharded train step
    passes to `init` and `update`) is known as a slice of a whole leaf: `wholes` gives, per
    slice, (the whole leaf's shape, the axis it is cut along, or None for a leaf passed whole).
    Transformations ask `whole_shape(param)`."""
    stack = _slices.__dict__.setdefault("known", [])
    stack.append({id(x): (x, tuple(shape), axis) for x, (shape, axis) in zip(slices, wholes)})
    try:
        yield
    finally:
        stack.pop()


def whole_shape(param):
    """(the shape of the whole leaf that `param` is a slice of, the axis it is cut along or None):
    `(param.shape, None)` outside a sharded train step. A transformation whose state or
    statistics depend on a leaf's shape (Adafactor's factoring) decides from the whole shape."""
    stack = getattr(_slices, "known", None)
    if not stack:
        return tuple(np.shape(param)), None
    for known in reversed(stack):
        hit = known.get(id(param))
        if hit is not None and hit[0] is param:
            return hit[1], hit[2]
    raise ValueError(
        f"optim: a parameter of shape {tuple(np.shape(param))} reached a transformation under a "
        "sharded train step, but it is not one of the parameter slices the step passed in (a "
        "transformation replaced the params it hands on); transformations that depend on a "
        "leaf's whole shape (scale_by_factored_rms) need the params as given")


def _whole_mean(x, axis, cut, size, keepdims=False):
    """fnp.mean(x, axis) of the whole array that `x` is a slice of, cut along axis `cut`
    (None: x is whole) and `size` long along `axis`: over the ranks' slices (`shard_sum`) when
    the cut is along `axis`."""
    if cut != axis:
        return fnp.mean(x, axis=axis, keepdims=keepdims)
    wide = np.promote_types(x.dtype, np.float32)
    total = shard_sum(fnp.sum(x, axis=axis, keepdims=keepdims, dtype=wide))
    return fnp.asarray(total / size, x.dtype)


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
    _hyper("clip_by_global_norm", "max_norm", max_norm, 0, lo_open=True)

    def update(updates, state, params=None):
        if not tu.tree_leaves(updates):
            return updates, state
        norm = global_norm(updates)
        factor = max_norm / fnp.maximum(norm, max_norm)
        return tu.tree_map(lambda u: u * _cast(factor, u), updates), state

    return checked_transformation(lambda params: EmptyState(), update, EmptyState)


def default_decay_mask(params):
    """Weight decay for matrices and kernels only (ndim >= 2): biases and norm scales/offsets
    (vectors and scalars) are not decayed."""
    return tu.tree_map(lambda p: len(np.shape(p)) >= 2, params)


def add_decayed_weights(weight_decay: float = 0.0, mask=None) -> GradientTransformation:
    """u -> u + weight_decay * p on the leaves where `mask` is True (all leaves when None).

    Unlike `masked`, leaves outside this mask keep their update: they are just not decayed.
    """
    _hyper("add_decayed_weights", "weight_decay", weight_decay, 0)

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("optim.add_decayed_weights needs params: call "
                             "tx.update(grads, state, params)")
        on = (None if mask is None
              else _masks.leaf_mask(mask, params, "optim.add_decayed_weights"))
        leaves, treedef = tu.tree_flatten(updates)
        ps = treedef.flatten_up_to(params)          # (the structures were checked on entry)
        out = [u if (on is not None and not on[i]) or p is None
               else u + _cast(weight_decay, u) * fnp.asarray(p, u.dtype)
               for i, (u, p) in enumerate(zip(leaves, ps))]
        return tu.tree_unflatten(treedef, out), state

    return checked_transformation(lambda params: EmptyState(), update, EmptyState)


# ----------------------------------------------------------------------------------------------
# Optimizers


def sgd(learning_rate, momentum=None, nesterov=False) -> GradientTransformation:
    """Stochastic gradient descent: u = -lr * g, or -lr * trace with momentum."""
    _learning_rate("sgd", learning_rate)
    parts = [] if momentum is None else [trace(momentum, nesterov)]
    return _chain("sgd", (*parts, scale_by_learning_rate(learning_rate)))


def momentum(learning_rate, beta=0.9, nesterov=False) -> GradientTransformation:
    """SGD with momentum: t = g + beta * t; u = -lr * t."""
    return sgd(learning_rate, beta, nesterov)


def adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0) -> GradientTransformation:
    """Adam (Kingma & Ba): see `scale_by_adam`, then u = -lr * u."""
    _learning_rate("adam", learning_rate)
    return _chain("adam", (scale_by_adam(b1, b2, eps, eps_root),
                           scale_by_learning_rate(learning_rate)))


def adamw(learning_rate, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, weight_decay=1e-4,
          mask=default_decay_mask) -> GradientTransformation:
    """AdamW (decoupled weight decay): u = -lr * (adam_u + weight_decay * p).

    `mask` (bool tree, prefix, or callable of params) says which leaves are decayed; the default
    decays matrices only, not biases or norm scales. `mask=None` decays every leaf.
    """
    _learning_rate("adamw", learning_rate)
    return _chain("adamw", (scale_by_adam(b1, b2, eps, eps_root),
                            add_decayed_weights(weight_decay, mask),
                            scale_by_learning_rate(learning_rate)))


def rmsprop(learning_rate, decay=0.9, eps=1e-8, initial_scale=0.0, eps_in_sqrt=True,
            centered=False, momentum=None, nesterov=False,
            bias_correction=False) -> GradientTransformation:
    """RMSProp: u = -lr * g / sqrt(nu + eps) (optionally centered, optionally with momentum;
    Optax's signature: `eps_in_sqrt=False` puts eps outside the root, `bias_correction` debiases
    nu)."""
    _learning_rate("rmsprop", learning_rate)
    parts = [scale_by_rms(decay, eps, initial_scale, eps_in_sqrt, bias_correction,
                          centered=centered)]
    if momentum is not None:
        parts.append(trace(momentum, nesterov))
    return _chain("rmsprop", (*parts, scale_by_learning_rate(learning_rate)))


def adagrad(learning_rate, initial_accumulator_value=0.1, eps=1e-7) -> GradientTransformation:
    """Adagrad: s = s + g^2; u = -lr * g / sqrt(s + eps)."""
    _learning_rate("adagrad", learning_rate)
    return _chain("adagrad", (scale_by_rss(initial_accumulator_value, eps),
                              scale_by_learning_rate(learning_rate)))


def lion(learning_rate, b1=0.9, b2=0.99, weight_decay=1e-3,
         mask=default_decay_mask) -> GradientTransformation:
    """Lion (Chen et al. 2023): u = -lr * (sign((1-b1) g + b1 m) + weight_decay * p)."""
    _learning_rate("lion", learning_rate)
    return _chain("lion", (scale_by_lion(b1, b2), add_decayed_weights(weight_decay, mask),
                           scale_by_learning_rate(learning_rate)))


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
        on = _masks.leaf_mask(mask, updates if params is None else params, "optim.masked")
        sub_p = None if params is None else _select(params, on)
        new, inner_state = inner.update(_select(updates, on), state.inner_state, sub_p)
        leaves, treedef = tu.tree_flatten(updates)
        got = treedef.flatten_up_to(new)
        out = [n if m else fnp.zeros_like(u) for u, n, m in zip(leaves, got, on)]
        return tu.tree_unflatten(treedef, out), MaskedState(inner_state)

    return checked_transformation(init, update, MaskedState, inner=(inner,))


def set_to_zero() -> GradientTransformation:
    """Zero updates and no state: freezes whatever it is applied to (see `multi_transform`)."""
    return checked_transformation(
        lambda params: EmptyState(),
        lambda updates, state, params=None: (_zeros_like(updates), state), EmptyState,
        "set_to_zero")


def multi_transform(transforms: dict, param_labels) -> GradientTransformation:
    """A different transformation per group of leaves: `param_labels` gives each leaf a label
    (a tree of labels, a prefix of one, or a callable of params), `transforms[label]` updates the
    leaves with that label, e.g. `{"backbone": set_to_zero(), "head": adam(1e-3)}`."""
    if not isinstance(transforms, dict) or not transforms:
        raise TypeError("optim.multi_transform: transforms must be a non-empty dict {label: "
                        f"GradientTransformation}}, got {type(transforms).__name__}")

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
        if not isinstance(state.inner_states, dict) or set(state.inner_states) != set(transforms):
            got = sorted(state.inner_states) if isinstance(state.inner_states, dict) else "?"
            raise ValueError(f"optim.multi_transform: the state holds the labels {got}, this "
                             f"optimizer has {sorted(transforms)}: pass the state that this same "
                             "optimizer's init(params) returned")
        labels = labels_of(updates if params is None else params)
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

    return checked_transformation(init, update, MultiTransformState,
                                  inner=tuple(transforms.values()))


class MultiSteps:
    """Gradient accumulation: average the gradients of `every_k_schedule` mini-steps, then apply
    `opt` once to the mean; the mini-steps in between emit zero updates.

    The inner update runs under `fg.lax.cond`, so it traces under `fg.jit` and runs only on the
    k-th mini-step: the mini-steps in between cost an addition per gradient. That is what makes
    data-parallel accumulation communicate once per accumulated step: put the gradient
    averaging inside, `MultiSteps(chain(optim.pmean_updates("data"), adam), k)`, and the
    allreduce runs on the k-th mini-step only, on the accumulated gradients (as PyTorch's
    DistributedDataParallel under `no_sync()` for the first k - 1). Masks (`masked`), master
    weights and loss scaling compose: `master_weights(MultiSteps(...))` accumulates float32
    gradients of half-precision parameters; `MultiSteps(dynamic_loss_scale(...))` keeps the loss
    scale fixed during an accumulation and skips the whole step on an overflow.
    """

    def __init__(self, opt: GradientTransformation, every_k_schedule):
        if not (callable(getattr(opt, "init", None)) and callable(getattr(opt, "update", None))):
            raise TypeError(f"optim.MultiSteps: opt is a {type(opt).__name__}, not a "
                            "GradientTransformation (an optimizer such as optim.adam(1e-3))")
        if not callable(every_k_schedule):
            _hyper("MultiSteps", "every_k_schedule", every_k_schedule, 1, integer=True)
        self.opt = opt
        self._k_is_schedule = callable(every_k_schedule)
        self.every_k_schedule = (every_k_schedule if callable(every_k_schedule)
                                 else (lambda step, k=int(every_k_schedule): k))

    def init(self, params):
        return MultiStepsState(_count0(), _count0(), self.opt.init(params), _zeros_like(params))

    @inputs_on_default_backend
    def update(self, updates, state, params=None):
        _state("MultiSteps", state, MultiStepsState)
        _check_updates("MultiSteps", updates, params)
        k = self.every_k_schedule(state.gradient_step)
        n = _inc(state.mini_step)
        acc = _leafwise("MultiSteps", lambda g, a: a + (g - a) / _cast(n, a), updates,
                        state.acc_grads)
        emit = n >= k
        out, new_inner = self._inner(emit, acc, state.inner_opt_state, params)
        acc = tu.tree_map(lambda a: fnp.where(emit, fnp.zeros_like(a), a), acc)
        mini = fnp.asarray(fnp.where(emit, 0, n), np.int32)
        step = fnp.asarray(fnp.where(emit, state.gradient_step + 1, state.gradient_step), np.int32)
        return out, MultiStepsState(mini, step, new_inner, acc)

    def _inner(self, emit, acc, inner_state, params):
        """(updates, inner state): `opt`'s on the k-th mini-step, else zeros and the state as
        it was; only the branch taken runs."""
        def apply(acc, inner_state, params):
            return self.opt.update(acc, inner_state, params)

        def skip(acc, inner_state, params):
            shapes = eval_shape(apply, acc, inner_state, params)[0]
            return (tu.tree_map(lambda s: fnp.zeros(s.shape, s.dtype), shapes), inner_state)

        if isinstance(emit, np.ndarray) or isinstance(emit, (bool, np.bool_)):
            return (apply if bool(emit) else skip)(acc, inner_state, params)  # eager: no trace
        return _lax.cond(emit, apply, skip, acc, inner_state, params)

    def has_updated(self, state):
        """True right after a mini-step that applied the inner optimizer."""
        return state.mini_step == 0

    def gradient_transformation(self) -> GradientTransformation:
        return checked_transformation(self.init, self.update, MultiStepsState, "MultiSteps",
                                      inner=(self.opt,), eager=self._k_is_schedule)


_HOLE = object()   # a None update, as a leaf, when locating a mismatch


def _truncating(dp, du):
    """A `du` update would lose information in a `dp` parameter (float -> int, complex -> real)."""
    return (dp.kind in "biu" and du.kind in "fc") or (dp.kind == "f" and du.kind == "c")


def _apply_updates_error(params, updates, us):
    if us is not None:
        paths = [tu.path_to_str(p) or "<root>" for p, _ in tu.tree_flatten_with_path(params)[0]]
        for where, p, u in zip(paths, tu.tree_leaves(params), us):
            if u is not None and np.shape(u) == np.shape(p) and _dtype(u) is not None and \
                    _dtype(p) is not None and _truncating(_dtype(p), _dtype(u)):
                return TypeError(f"optim.apply_updates: at {where!r}: an update of dtype "
                                 f"{_dtype(u)} for a parameter of dtype {_dtype(p)} would be "
                                 "truncated; leave such leaves out of training (optim.masked) "
                                 "or make the parameter floating")
    holes = tu.tree_map(lambda u: _HOLE if u is None else u, updates, is_leaf=lambda x: x is None)
    return _tree_error("apply_updates", holes, params, ("the updates", "the params"),
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


_MADE_BY.update({
    EmptyState: "a stateless transformation (scale, clip_by_global_norm, add_decayed_weights, "
                "set_to_zero, identity, or sgd's constant learning rate)",
    ScaleByScheduleState: "scale_by_schedule (a learning-rate schedule)",
    TraceState: "trace (sgd or momentum with momentum, rmsprop with momentum)",
    ScaleByAdamState: "scale_by_adam (adam, adamw)",
    ScaleByRmsState: "scale_by_rms (rmsprop)",
    ScaleByRssState: "scale_by_rss (adagrad)",
    ScaleByLionState: "scale_by_lion (lion)",
    MaskedState: "masked",
    MultiTransformState: "multi_transform",
    MultiStepsState: "MultiSteps",
})


def pmean_updates(axis_name="data") -> GradientTransformation:
    """Average the updates (gradients) over the named axis: the leaves of each dtype flattened
    into one buffer and averaged with one `lax.pmean` (under `distributed.data_parallel` one MPI
    allreduce per dtype, as `distributed.fused_pmean`). Inside `MultiSteps` it runs once per
    accumulated step, on the accumulated gradients."""

    def update(updates, state, params=None):
        leaves, treedef = tu.tree_flatten(updates)
        out = list(leaves)
        by_dtype = {}
        for i, x in enumerate(leaves):
            by_dtype.setdefault(np.dtype(x.dtype), []).append(i)
        for idx in by_dtype.values():
            buf = _lax.pmean(fnp.concatenate([fnp.ravel(leaves[i]) for i in idx]), axis_name)
            start = 0
            for i in idx:
                n = int(np.prod(np.shape(leaves[i])))
                out[i] = fnp.reshape(buf[start:start + n], np.shape(leaves[i]))
                start += n
        return tu.tree_unflatten(treedef, out), state

    return checked_transformation(lambda params: EmptyState(), update)


def keep_pruned(inner: GradientTransformation, keep) -> GradientTransformation:
    """Fine-tune a pruned model: `keep` (from `masks.prune_by_magnitude`: a bool array per
    pruned leaf, True for kept elements, and True for whole leaves) holds the pruned weights
    at exactly zero. Their gradients are zeroed before `inner` (so clipping norms and Adam's
    moments see only the kept weights, as under PyTorch's pruning reparametrization), and
    their update is `-p`, so `apply_updates` puts an exact zero there even where the params
    were not zeroed first (`masks.apply_pruning`). `update` needs `params`."""

    def pruned(k):
        return not (isinstance(k, (bool, np.bool_)) and k)

    def init(params):
        return inner.init(params)

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("optim.keep_pruned: update needs params: tx.update(grads, state, "
                             "params)")
        g = tu.tree_map(lambda u, k: fnp.where(k, u, fnp.zeros_like(u)) if pruned(k) else u,
                        updates, keep)
        new, state = inner.update(g, state, params)
        out = tu.tree_map(lambda u, p, k: fnp.where(k, u, -fnp.asarray(p, u.dtype))
                          if pruned(k) else u, new, params, keep)
        return out, state

    return checked_transformation(init, update)


# ----------------------------------------------------------------------------------------------
# Precision: float32 master weights for half-precision parameters, dynamic loss scaling


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
        return DynamicLossScaleState(fnp.asarray(init_scale, np.float32), _count0(),
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


# ----------------------------------------------------------------------------------------------
# Injected hyperparameters, trust ratios (LAMB), factored second moments (Adafactor): Optax
# 0.2.8's transformations of the same names and formulas. (Schedule-free: `optim.contrib`.)


class InjectHyperparamsState(NamedTuple):
    """State of `inject_hyperparams`: the update count, the hyperparameter values of the last
    update (`hyperparams["learning_rate"]` for logging; a numeric one may be overwritten between
    updates), and the inner transformation's state."""
    count: Any
    hyperparams: Any
    inner_state: Any


def _highest_float_dtype(tree):
    dts = [np.dtype(x.dtype) for x in tu.tree_leaves(tree)
           if hasattr(x, "dtype") and fnp.issubdtype(x.dtype, fnp.floating)]
    return max(dts, key=lambda d: d.itemsize) if dts else np.dtype(np.float32)


def inject_hyperparams(inner_factory: Callable, static_args=(), hyperparam_dtype=None):
    """`inner_factory` (e.g. `optim.adam`) with its numeric hyperparameters kept in the state,
    as Optax's: `inject_hyperparams(adam)(learning_rate=schedule, b1=0.9)` evaluates each
    schedule (a callable of the update count) before every update and rebuilds the inner
    transformation with the values, so `state.hyperparams["learning_rate"]` is the rate the
    last update used, and a numeric hyperparameter can be changed between updates by replacing
    it in `state.hyperparams`. Booleans, `static_args` and non-numeric arguments stay fixed.
    Values are cast to `hyperparam_dtype` (default: the params' widest float dtype)."""
    import inspect

    static = {static_args} if isinstance(static_args, str) else set(static_args)
    signature = inspect.signature(inner_factory)
    if not static <= set(signature.parameters):
        raise ValueError(f"optim.inject_hyperparams: static_args {sorted(static)} must be "
                         f"parameters of {inner_factory.__name__} "
                         f"({list(signature.parameters)})")

    def factory(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        numeric, scheduled, other = {}, {}, {}
        for name, value in bound.arguments.items():
            if name in static or isinstance(value, bool):
                other[name] = value
            elif callable(value):
                scheduled[name] = value
            elif isinstance(value, (int, float, np.ndarray, np.generic)) or (
                    hasattr(value, "dtype") and hasattr(value, "shape")):
                numeric[name] = value
            else:
                other[name] = value

        def cast(v, dtype):
            v = fnp.asarray(v)
            return v.astype(dtype) if v.dtype.kind == "f" else v

        def init(params):
            dtype = hyperparam_dtype or _highest_float_dtype(params)
            count = _count0()
            hp = {k: cast(v, dtype) for k, v in numeric.items()}
            hp.update({k: cast(f(count), dtype) for k, f in scheduled.items()})
            return InjectHyperparamsState(count, hp, inner_factory(**other, **hp).init(params))

        def update(updates, state, params=None):
            dtype = hyperparam_dtype or _highest_float_dtype(updates)
            hp = {k: cast(v, dtype) for k, v in state.hyperparams.items()}
            hp.update({k: cast(f(state.count), dtype) for k, f in scheduled.items()})
            updates, inner_state = inner_factory(**other, **hp).update(
                updates, state.inner_state, params)
            return updates, InjectHyperparamsState(_inc(state.count), hp, inner_state)

        return checked_transformation(init, update, InjectHyperparamsState)

    factory.__name__ = f"inject_hyperparams({inner_factory.__name__})"
    factory.__doc__ = inner_factory.__doc__
    return factory


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
            return u * _cast(fnp.where(zero, fnp.ones_like(ratio), ratio), u)

        return _leafwise("scale_by_trust_ratio", one, updates, params), state

    return checked_transformation(lambda params: EmptyState(), update)


def lamb(learning_rate, b1=0.9, b2=0.999, eps=1e-6, eps_root=0.0, weight_decay=0.0,
         mask=default_decay_mask) -> GradientTransformation:
    """LAMB (You et al. 2020): Adam's scaling plus decoupled weight decay, each leaf's update
    rescaled by the trust ratio ||p|| / ||u||, then -lr (Optax's chain). `mask` as in `adamw`:
    matrices only by default."""
    return chain(scale_by_adam(b1, b2, eps, eps_root), add_decayed_weights(weight_decay, mask),
                 scale_by_trust_ratio(), scale_by_learning_rate(learning_rate))


class EmaState(NamedTuple):
    count: Any
    ema: Any


def ema(decay, debias=True, accumulator_dtype=None) -> GradientTransformation:
    """Exponential moving average of the updates: e = decay e + (1 - decay) u; the update is e,
    or e / (1 - decay^t) with `debias` (Optax's; compare `trace`: t = decay t + u)."""

    def init(params):
        return EmaState(_count0(), tu.tree_map(
            lambda p: fnp.zeros_like(p, dtype=accumulator_dtype), params))

    def update(updates, state, params=None):
        # (the accumulator may have its own dtype, so no dtype check against the updates)
        new = tu.tree_map(lambda u, e: (1 - decay) * u + decay * fnp.asarray(e, u.dtype),
                          updates, state.ema)
        count = _inc(state.count)
        out = new
        if debias:
            bc = 1 - decay ** count
            out = tu.tree_map(lambda e: e / _cast(bc, e), new)
        if accumulator_dtype is not None:
            new = tu.tree_map(lambda e: fnp.asarray(e, accumulator_dtype), new)
        return out, EmaState(count, new)

    return checked_transformation(init, update, EmaState)


def clip_by_block_rms(threshold) -> GradientTransformation:
    """u -> u / max(1, rms(u) / threshold) per leaf (Adafactor's update clipping)."""

    def update(updates, state, params=None):
        def clip(u):
            return u / fnp.maximum(1.0, fnp.sqrt(_leaf_mean(u * u)) / threshold).astype(u.dtype)
        return tu.tree_map(clip, updates), state

    return checked_transformation(lambda params: EmptyState(), update)


def _safe_rms(x, min_rms):
    rms = fnp.sqrt(_leaf_mean(x * x))
    small = rms <= min_rms
    x = fnp.where(small, fnp.ones_like(x), x)
    return fnp.where(small, fnp.asarray(min_rms, rms.dtype), fnp.sqrt(_leaf_mean(x * x)))


def scale_by_param_block_rms(min_scale=1e-3) -> GradientTransformation:
    """u -> u * max(rms(p), min_scale) per leaf (Adafactor's relative step size)."""

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("optim.scale_by_param_block_rms needs params: call "
                             "tx.update(grads, state, params)")
        return _leafwise("scale_by_param_block_rms",
                         lambda u, p: u * _cast(_safe_rms(fnp.asarray(p), min_scale), u),
                         updates, params), state

    return checked_transformation(lambda params: EmptyState(), update)


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
        return FactoredState(_count0(), unflat(rows), unflat(cols), unflat(full))

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
            raise _tree_error("scale_by_factored_rms", state.v, updates,
                              ("the optimizer state", "the updates"),
                              "the tree passed to update does not match the tree the optimizer "
                              "was initialised with") from None
        outs, rows, cols, full = [], [], [], []
        for g, vr, vc, v, p in zip(leaves, *cols_):
            dt = p.dtype
            r = fnp.asarray(rate, dt)
            g2 = g * g + _cast(epsilon, g)
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
            new_r = fnp.asarray(r * vr + (1 - r) * _whole_mean(g2, d0, cut, shape[d0]), dt)
            new_c = fnp.asarray(r * vc + (1 - r) * _whole_mean(g2, d1, cut, shape[d1]), dt)
            reduced_d1 = d1 - 1 if d1 > d0 else d1
            row_cut = None if cut in (None, d0) else cut - (cut > d0)  # new_r's cut axis
            row_factor = (new_r / _whole_mean(new_r, reduced_d1, row_cut, shape[d1],
                                              keepdims=True)) ** -0.5
            col_factor = new_c ** -0.5
            outs.append(g * fnp.expand_dims(row_factor, d0) * fnp.expand_dims(col_factor, d1))
            rows.append(new_r)
            cols.append(new_c)
            full.append(small)
        unflat = lambda xs: tu.tree_unflatten(treedef, xs)
        return unflat(outs), FactoredState(_inc(state.count), unflat(rows), unflat(cols),
                                           unflat(full))

    return checked_transformation(init, update, FactoredState)


def adafactor(learning_rate=None, min_dim_size_to_factor=128, decay_rate=0.8, decay_offset=0,
              multiply_by_parameter_scale=True, clipping_threshold=1.0, momentum=None,
              dtype_momentum=np.float32, weight_decay_rate=None, eps=1e-30, factored=True,
              weight_decay_mask=None) -> GradientTransformation:
    """Adafactor (Shazeer & Stern 2018), Optax's chain: factored second moments
    (`scale_by_factored_rms`: O(rows + cols) memory for each large matrix instead of Adam's two
    full copies), update clipping at `clipping_threshold` RMS, the learning rate (none: 1),
    scaling by the parameter's RMS (`multiply_by_parameter_scale`, at least 1e-3), optional
    momentum (an EMA) and weight decay, then descent."""
    parts = [scale_by_factored_rms(factored, decay_rate, decay_offset, min_dim_size_to_factor,
                                   eps)]
    if clipping_threshold is not None:
        parts.append(clip_by_block_rms(clipping_threshold))
    if learning_rate is not None:
        parts.append(scale_by_learning_rate(learning_rate, flip_sign=False))
    if multiply_by_parameter_scale:
        parts.append(scale_by_param_block_rms())
    if momentum is not None:
        parts.append(ema(momentum, debias=False, accumulator_dtype=dtype_momentum))
    if weight_decay_rate is not None:
        parts.append(add_decayed_weights(weight_decay_rate, mask=weight_decay_mask))
    parts.append(scale(-1))
    return chain(*parts)


def warmup_constant_schedule(init_value, peak_value, warmup_steps):
    """Linear warmup from init_value to peak_value over warmup_steps, then peak_value."""
    return linear_schedule(init_value, peak_value, warmup_steps)


_MADE_BY.update({
    InjectHyperparamsState: "inject_hyperparams",
    EmaState: "ema (adafactor with momentum)",
    FactoredState: "scale_by_factored_rms (adafactor)",
    ScaleByRmsWithCountState: "scale_by_rms with bias_correction (contrib.schedule_free_adamw)",
})

__all__ += ["InjectHyperparamsState", "inject_hyperparams", "scale_by_trust_ratio", "lamb",
            "EmaState", "ema", "clip_by_block_rms", "scale_by_param_block_rms", "FactoredState",
            "scale_by_factored_rms", "adafactor", "warmup_constant_schedule"]
