"""Injected hyperparameters (Optax's `inject_hyperparams`): an optimizer whose numeric
hyperparameters live in its state, evaluated from schedules before each update, readable for
logging and replaceable between updates.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np

from .. import numpy as fnp
from .base import MADE_BY, checked_transformation, float_dtype_of, increment, zero_count

__all__ = ["InjectHyperparamsState", "inject_hyperparams"]


class InjectHyperparamsState(NamedTuple):
    """State of `inject_hyperparams`: the update count, the hyperparameter values of the last
    update (`hyperparams["learning_rate"]` for logging; a numeric one may be overwritten between
    updates), and the inner transformation's state."""
    count: Any
    hyperparams: Any
    inner_state: Any


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
            dtype = hyperparam_dtype or float_dtype_of(params)
            count = zero_count()
            hp = {k: cast(v, dtype) for k, v in numeric.items()}
            hp.update({k: cast(f(count), dtype) for k, f in scheduled.items()})
            return InjectHyperparamsState(count, hp, inner_factory(**other, **hp).init(params))

        def update(updates, state, params=None):
            dtype = hyperparam_dtype or float_dtype_of(updates)
            hp = {k: cast(v, dtype) for k, v in state.hyperparams.items()}
            hp.update({k: cast(f(state.count), dtype) for k, f in scheduled.items()})
            updates, inner_state = inner_factory(**other, **hp).update(
                updates, state.inner_state, params)
            return updates, InjectHyperparamsState(increment(state.count), hp, inner_state)

        return checked_transformation(init, update, InjectHyperparamsState)

    factory.__name__ = f"inject_hyperparams({inner_factory.__name__})"
    factory.__doc__ = inner_factory.__doc__
    return factory


MADE_BY[InjectHyperparamsState] = "inject_hyperparams"
