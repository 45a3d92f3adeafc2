"""Gradient accumulation (Optax's `MultiSteps`): apply an optimizer once per k mini-steps, to
the mean of their gradients, under `fg.lax.cond` so that it traces under `fg.jit`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .. import lax as _lax
from .. import numpy as fnp
from .. import tree_util as tu
from ..devices import inputs_on_default_backend
from ..transforms.jit import eval_shape
from .base import (
    MADE_BY,
    GradientTransformation,
    cast_like,
    check_hyper,
    check_state,
    check_updates,
    checked_transformation,
    increment,
    leafwise,
    tree_zeros_like,
    zero_count,
)

__all__ = ["MultiStepsState", "MultiSteps"]


class MultiStepsState(NamedTuple):
    mini_step: Any
    gradient_step: Any
    inner_opt_state: Any
    acc_grads: Any


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
            check_hyper("MultiSteps", "every_k_schedule", every_k_schedule, 1, integer=True)
        self.opt = opt
        self._k_is_schedule = callable(every_k_schedule)
        self.every_k_schedule = (every_k_schedule if callable(every_k_schedule)
                                 else (lambda step, k=int(every_k_schedule): k))

    def init(self, params):
        return MultiStepsState(zero_count(), zero_count(), self.opt.init(params),
                               tree_zeros_like(params))

    @inputs_on_default_backend
    def update(self, updates, state, params=None):
        check_state("MultiSteps", state, MultiStepsState)
        check_updates("MultiSteps", updates, params)
        k = self.every_k_schedule(state.gradient_step)
        n = increment(state.mini_step)
        acc = leafwise("MultiSteps", lambda g, a: a + (g - a) / cast_like(n, a), updates,
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


MADE_BY[MultiStepsState] = "MultiSteps"
