"""The named optimizers (Optax's `alias.py`, same names, signatures and formulas): each a chain
of the building blocks of `transform.py` (and `factorized.py`) ending in the learning rate.
"""

from __future__ import annotations

import numpy as np

from .base import GradientTransformation, check_learning_rate
from .combine import chain, chain_as
from .factorized import scale_by_factored_rms
from .transform import (
    add_decayed_weights,
    clip_by_block_rms,
    default_decay_mask,
    ema,
    scale,
    scale_by_adam,
    scale_by_learning_rate,
    scale_by_lion,
    scale_by_param_block_rms,
    scale_by_rms,
    scale_by_rss,
    scale_by_trust_ratio,
    trace,
)

__all__ = ["sgd", "momentum", "adam", "adamw", "rmsprop", "adagrad", "lion", "lamb", "adafactor"]


def sgd(learning_rate, momentum=None, nesterov=False) -> GradientTransformation:
    """Stochastic gradient descent: u = -lr * g, or -lr * trace with momentum."""
    check_learning_rate("sgd", learning_rate)
    parts = [] if momentum is None else [trace(momentum, nesterov)]
    return chain_as("sgd", (*parts, scale_by_learning_rate(learning_rate)))


def momentum(learning_rate, beta=0.9, nesterov=False) -> GradientTransformation:
    """SGD with momentum: t = g + beta * t; u = -lr * t."""
    return sgd(learning_rate, beta, nesterov)


def adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0) -> GradientTransformation:
    """Adam (Kingma & Ba): see `scale_by_adam`, then u = -lr * u."""
    check_learning_rate("adam", learning_rate)
    return chain_as("adam", (scale_by_adam(b1, b2, eps, eps_root),
                             scale_by_learning_rate(learning_rate)))


def adamw(learning_rate, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, weight_decay=1e-4,
          mask=default_decay_mask) -> GradientTransformation:
    """AdamW (decoupled weight decay): u = -lr * (adam_u + weight_decay * p).

    `mask` (bool tree, prefix, or callable of params) says which leaves are decayed; the default
    decays matrices only, not biases or norm scales. `mask=None` decays every leaf.
    """
    check_learning_rate("adamw", learning_rate)
    return chain_as("adamw", (scale_by_adam(b1, b2, eps, eps_root),
                              add_decayed_weights(weight_decay, mask),
                              scale_by_learning_rate(learning_rate)))


def rmsprop(learning_rate, decay=0.9, eps=1e-8, initial_scale=0.0, eps_in_sqrt=True,
            centered=False, momentum=None, nesterov=False,
            bias_correction=False) -> GradientTransformation:
    """RMSProp: u = -lr * g / sqrt(nu + eps) (optionally centered, optionally with momentum;
    Optax's signature: `eps_in_sqrt=False` puts eps outside the root, `bias_correction` debiases
    nu)."""
    check_learning_rate("rmsprop", learning_rate)
    parts = [scale_by_rms(decay, eps, initial_scale, eps_in_sqrt, bias_correction,
                          centered=centered)]
    if momentum is not None:
        parts.append(trace(momentum, nesterov))
    return chain_as("rmsprop", (*parts, scale_by_learning_rate(learning_rate)))


def adagrad(learning_rate, initial_accumulator_value=0.1, eps=1e-7) -> GradientTransformation:
    """Adagrad: s = s + g^2; u = -lr * g / sqrt(s + eps)."""
    check_learning_rate("adagrad", learning_rate)
    return chain_as("adagrad", (scale_by_rss(initial_accumulator_value, eps),
                                scale_by_learning_rate(learning_rate)))


def lion(learning_rate, b1=0.9, b2=0.99, weight_decay=1e-3,
         mask=default_decay_mask) -> GradientTransformation:
    """Lion (Chen et al. 2023): u = -lr * (sign((1-b1) g + b1 m) + weight_decay * p)."""
    check_learning_rate("lion", learning_rate)
    return chain_as("lion", (scale_by_lion(b1, b2), add_decayed_weights(weight_decay, mask),
                             scale_by_learning_rate(learning_rate)))


def lamb(learning_rate, b1=0.9, b2=0.999, eps=1e-6, eps_root=0.0, weight_decay=0.0,
         mask=default_decay_mask) -> GradientTransformation:
    """LAMB (You et al. 2020): Adam's scaling plus decoupled weight decay, each leaf's update
    rescaled by the trust ratio ||p|| / ||u||, then -lr (Optax's chain). `mask` as in `adamw`:
    matrices only by default."""
    return chain(scale_by_adam(b1, b2, eps, eps_root), add_decayed_weights(weight_decay, mask),
                 scale_by_trust_ratio(), scale_by_learning_rate(learning_rate))


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
