"""The contract every optimizer keeps, and what each transformation uses to keep it.

A `GradientTransformation` is a pair of pure functions, `init(params) -> state` and
`update(updates, state, params=None) -> (updates, state)`. `checked_transformation` makes one from
the two functions: its update checks the updates against the params and the state against the
transformation that made it, takes host or device leaves, and runs jitted. Here too are what the
transformations of the other modules share: helpers that write an update leaf by leaf in each
leaf's dtype, the checks of hyperparameters and learning rates at construction, and the registry
of which transformation makes which state (`MADE_BY`), so that errors name the first path that
differs, the optimizer a wrong state came from, and the fix.
"""

from __future__ import annotations

import math
import threading
from typing import Callable, NamedTuple

import numpy as np

from .. import masks as _masks
from .. import numpy as fnp
from .. import tree_util as tu
from ..devices import inputs_on_default_backend
from ..transforms.jit import jit as _jit

__all__ = ["GradientTransformation", "checked_transformation", "EmptyState"]


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
            check_state(who, state, state_type)
        if getattr(_checking, "done", False):    # an inner transformation: checked outside
            return update(updates, state, params)
        check_updates(who, updates, params)
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


# ----------------------------------------------------------------------------------------------
# Helpers for writing an update: per leaf, in each leaf's dtype


def cast_like(x, like):
    """Scalar/array `x` in the dtype of the leaf `like` (keeps float32 params float32); a
    Python number becomes a NumPy scalar, which combines with NumPy and CuPy arrays alike."""
    if type(x) in (int, float):
        return np.dtype(like.dtype).type(x)
    return fnp.asarray(x, like.dtype)


def zero_count():
    return fnp.zeros((), np.int32)


def increment(count):
    return fnp.asarray(count + 1, np.int32)


def leafwise(who, f, updates, *others):
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
                                                 dtype_of(u) != dtype_of(x))
                              for u, x in zip(leaves, col)):
            raise tree_mismatch(who, o, updates, ("the optimizer state", "the updates"),
                                "the tree passed to update does not match the tree the optimizer "
                                "was initialised with")
        cols.append(col)
    return tu.tree_unflatten(treedef, [f(*xs) for xs in zip(leaves, *cols)])


def tree_zeros_like(tree):
    return tu.tree_map(fnp.zeros_like, tree)


def float_dtype_of(tree, pick=max):
    """`pick` (max: the widest, min: the narrowest) of the float dtypes of `tree`'s leaves, by
    size; float32 when it has none."""
    dts = [np.dtype(x.dtype) for x in tu.tree_leaves(tree)
           if hasattr(x, "dtype") and fnp.issubdtype(x.dtype, fnp.floating)]
    return pick(dts, key=lambda d: d.itemsize) if dts else np.dtype(np.float32)


# ----------------------------------------------------------------------------------------------
# Validation shared by every transformation: trees against the params, states against the
# transformation that made them, hyperparameters at construction. Errors name the first path
# that differs (masks.first_difference) and the fix.


def dtype_of(x):
    d = getattr(x, "dtype", None)
    return None if d is None else np.dtype(d)


def tree_mismatch(who, a, b, names, what):
    """ValueError (structure, shape) or TypeError (dtype) for the first path where `a` and `b`
    differ."""
    d = _masks.first_difference(a, b, names=names, check_shapes=True)
    if d is not None:
        return ValueError(f"optim.{who}: {what}: {d[1]}")
    for (path, x), y in zip(tu.tree_leaves_with_path(a), tu.tree_leaves(b)):
        if dtype_of(x) is not None and dtype_of(y) is not None and dtype_of(x) != dtype_of(y):
            return TypeError(f"optim.{who}: {what}: at {tu.path_to_str(path) or '<root>'!r}: dtype "
                             f"{dtype_of(x)} in {names[0]}, {dtype_of(y)} in {names[1]} (cast it: "
                             "tree_map(lambda g, p: g.astype(p.dtype), grads, params))")
    return ValueError(f"optim.{who}: {what}")


_checking = threading.local()   # .done: inside an update whose inputs were checked


def _leaves_differ(a, b):
    """Shape or dtype differ (leaves without a dtype, Python numbers, compare by shape only)."""
    if type(a) is np.ndarray and type(b) is np.ndarray:
        return a.shape != b.shape or a.dtype != b.dtype
    da, db = dtype_of(a), dtype_of(b)
    return np.shape(a) != np.shape(b) or (da != db and da is not None and db is not None)


def check_updates(who, updates, params):
    """The updates (gradients) must have the params' structure, leaf shapes and dtypes (None
    holes where the params have them). Checked once per user call, by the outermost
    transformation."""
    if params is None:
        return
    u, ut = tu.tree_flatten(updates)
    p, pt = tu.tree_flatten(params)
    if ut != pt or any(map(_leaves_differ, u, p)):
        raise tree_mismatch(who, updates, params, ("the updates", "the params"),
                            "the updates (gradients) do not match the params")


# State class -> the transformations that make it, for error messages; each module adds its own
# states below their makers.
MADE_BY = {EmptyState: "a stateless transformation (scale, clip_by_global_norm, "
                       "add_decayed_weights, set_to_zero, identity, or sgd's constant "
                       "learning rate)"}
# States that many optimizers hold (a stateless part, a schedule's count): the error for a
# chain's state names the optimizer behind its other states instead.
SHARED_STATES = {EmptyState}


def check_state(who, state, cls):
    """`state` if it is a `cls`, else a TypeError that says which optimizer made it."""
    if not isinstance(state, cls):
        raise TypeError(f"optim.{who}: the optimizer state is {made_by(state)}, but this "
                        f"transformation keeps a {cls.__name__}: pass the state that this same "
                        "optimizer's init(params) returned")
    return state


def made_by(state) -> str:
    t = type(state)
    if t in MADE_BY:
        return f"a {t.__name__}, made by optim.{MADE_BY[t]}"
    if t is tuple:
        parts = ", ".join(type(s).__name__ for s in state)
        makers = [MADE_BY[type(s)] for s in state
                  if type(s) in MADE_BY and type(s) not in SHARED_STATES]
        source = f" (a chain holding optim.{makers[0]})" if makers else ""
        return f"the state of a chain of {len(state)}: ({parts}){source}"
    return f"a {t.__name__}"


def is_number(v):
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(
        v, (bool, np.bool_))


def check_hyper(who, name, v, lo=None, hi=None, lo_open=False, hi_open=False, integer=False):
    """Check a hyperparameter: a real number (Python/NumPy, or a 0-d array) within the range;
    a traced or device value (e.g. from inject_hyperparams under jit) is checked for its
    shape only. Returns `v`."""
    rng = (("(" if lo_open else "[") + ("-inf" if lo is None else f"{lo}") + ", " +
           ("inf" if hi is None else f"{hi}") + (")" if hi_open or hi is None else "]"))
    want = "an int" if integer else "a real number"
    if isinstance(v, np.ndarray) and v.shape == () and v.dtype.kind in "iuf":
        v = v[()]
    if not is_number(v):
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


def check_lr_value(who, value, name="learning_rate"):
    """A learning rate (or schedule value) must be finite and >= 0 (for gradient ascent, negate
    the loss); host values are checked, traced ones are not."""
    if isinstance(value, (np.ndarray, np.generic)) and np.shape(value) == () or \
            is_number(value):
        x = float(value)
        if not (math.isfinite(x) and x >= 0):
            raise ValueError(f"optim.{who}: {name} must be a finite number >= 0 (for gradient "
                             f"ascent, negate the loss), got {value!r}")


def check_learning_rate(who, lr):
    """A number >= 0 or a schedule `f(count)`, probed at count 0 (Optax passes an int32
    array count)."""
    if callable(lr):
        check_lr_value(who, lr(np.asarray(0, np.int32)), "the schedule's value at step 0")
        return lr
    if not (is_number(lr) or hasattr(lr, "dtype") and tuple(getattr(lr, "shape", ())) == ()
            and np.dtype(lr.dtype).kind in "iuf"):
        raise TypeError(f"optim.{who}: learning_rate must be a number >= 0 or a schedule "
                        f"(a callable of the step count), got {type(lr).__name__} {lr!r:.40}")
    check_lr_value(who, lr)
    return lr
