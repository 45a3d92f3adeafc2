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

This package re-exports its modules' public names, one concept a module:

- `base`: `GradientTransformation`, `checked_transformation` and the checks every transformation
  runs;
- `transform`: the building blocks (scaling, momentum, Adam's/RMSProp's/... second moments,
  clipping, weight decay, trust ratios);
- `factorized`: Adafactor's factored second moments;
- `optimizers`: the named optimizers (`sgd`, `adam`, `adamw`, ..., `lamb`, `adafactor`);
- `combine`: `chain`, `masked`, `multi_transform`, `keep_pruned`;
- `accumulation`: `MultiSteps` (gradient accumulation);
- `updates`: `apply_updates`;
- `precision`: master weights and dynamic loss scaling;
- `schedules`: learning-rate schedules;
- `hyperparams`: `inject_hyperparams`;
- `parallel`: sharded train steps (`shard_sum`, `whole_shape`) and `pmean_updates`;
- `contrib`: Optax's `optax.contrib` (schedule-free learning).
"""

from .accumulation import MultiSteps, MultiStepsState
from .base import EmptyState, GradientTransformation, checked_transformation
from .combine import (
    MaskedState,
    MultiTransformState,
    chain,
    keep_pruned,
    masked,
    multi_transform,
)
from .factorized import FactoredState, scale_by_factored_rms
from .hyperparams import InjectHyperparamsState, inject_hyperparams
from .optimizers import adafactor, adagrad, adam, adamw, lamb, lion, momentum, rmsprop, sgd
from .parallel import SHARD_AXIS, pmean_updates, shard_slices, shard_sum, whole_shape
from .precision import (
    DynamicLossScaleState,
    MasterWeightsState,
    all_finite,
    dynamic_loss_scale,
    loss_scale,
    master_params,
    master_weights,
)
from .schedules import (
    constant_schedule,
    cosine_decay_schedule,
    exponential_decay,
    join_schedules,
    linear_schedule,
    piecewise_constant_schedule,
    polynomial_schedule,
    warmup_constant_schedule,
    warmup_cosine_decay_schedule,
)
from .transform import (
    EmaState,
    ScaleByAdamState,
    ScaleByLionState,
    ScaleByRmsState,
    ScaleByRmsWithCountState,
    ScaleByRssState,
    ScaleByScheduleState,
    TraceState,
    add_decayed_weights,
    clip_by_block_rms,
    clip_by_global_norm,
    default_decay_mask,
    ema,
    global_norm,
    identity,
    scale,
    scale_by_adam,
    scale_by_learning_rate,
    scale_by_lion,
    scale_by_param_block_rms,
    scale_by_rms,
    scale_by_rss,
    scale_by_schedule,
    scale_by_trust_ratio,
    set_to_zero,
    trace,
)
from .updates import apply_updates

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
    "InjectHyperparamsState", "inject_hyperparams", "scale_by_trust_ratio", "lamb", "EmaState",
    "ema", "clip_by_block_rms", "scale_by_param_block_rms", "FactoredState",
    "scale_by_factored_rms", "adafactor", "warmup_constant_schedule", "contrib",
]

from . import contrib  # noqa: E402  (optim.contrib.schedule_free, as Optax's; uses the above)
