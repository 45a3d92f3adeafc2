"""Weight initializers, as `jax.nn.initializers`: each is a function `(key, shape, dtype=float32)
-> array`; the factories (`lecun_normal()`, `variance_scaling(...)`) return one.

Fans follow JAX: for a weight of shape (*receptive_field, fan_in, fan_out) (dense (in, out),
conv HWIO) fan_in = in * prod(receptive_field), fan_out = out * prod(receptive_field).
"""

from __future__ import annotations

import math

import numpy as np

from .. import numpy as fnp
from .. import random

__all__ = [
    "variance_scaling", "lecun_normal", "lecun_uniform", "he_normal", "he_uniform",
    "glorot_normal", "glorot_uniform", "xavier_normal", "xavier_uniform", "kaiming_normal",
    "kaiming_uniform", "truncated_normal", "normal", "uniform", "constant", "zeros", "ones",
]

# std of a standard normal truncated to (-2, 2): dividing by it keeps the requested variance.
_TRUNC_STD = 0.87962566103423978


def _fans(shape, in_axis=-2, out_axis=-1):
    if len(shape) < 2:
        n = shape[0] if shape else 1
        return n, n
    in_axis, out_axis = in_axis % len(shape), out_axis % len(shape)
    field = math.prod(s for i, s in enumerate(shape) if i not in (in_axis, out_axis))
    return shape[in_axis] * field, shape[out_axis] * field


def variance_scaling(scale, mode, distribution, in_axis=-2, out_axis=-1):
    """Samples with variance scale / n, n = fan_in, fan_out or their mean (`mode` "fan_in",
    "fan_out", "fan_avg"), from a "truncated_normal" (at 2 std), "normal" or "uniform"."""
    if mode not in ("fan_in", "fan_out", "fan_avg"):
        raise ValueError(f"variance_scaling: unknown mode {mode!r}")
    if distribution not in ("truncated_normal", "normal", "uniform"):
        raise ValueError(f"variance_scaling: unknown distribution {distribution!r}")

    def init(key, shape, dtype=np.float32):
        shape = tuple(shape)
        fan_in, fan_out = _fans(shape, in_axis, out_axis)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
        variance = scale / max(1.0, n)
        if distribution == "truncated_normal":
            std = math.sqrt(variance) / _TRUNC_STD
            return random.truncated_normal(key, -2.0, 2.0, shape, dtype) * np.dtype(dtype).type(std)
        if distribution == "normal":
            return random.normal(key, shape, dtype) * np.dtype(dtype).type(math.sqrt(variance))
        lim = math.sqrt(3 * variance)
        return random.uniform(key, shape, dtype, -lim, lim)

    return init


def lecun_normal(in_axis=-2, out_axis=-1):
    return variance_scaling(1.0, "fan_in", "truncated_normal", in_axis, out_axis)


def lecun_uniform(in_axis=-2, out_axis=-1):
    return variance_scaling(1.0, "fan_in", "uniform", in_axis, out_axis)


def he_normal(in_axis=-2, out_axis=-1):
    return variance_scaling(2.0, "fan_in", "truncated_normal", in_axis, out_axis)


def he_uniform(in_axis=-2, out_axis=-1):
    return variance_scaling(2.0, "fan_in", "uniform", in_axis, out_axis)


def glorot_normal(in_axis=-2, out_axis=-1):
    return variance_scaling(1.0, "fan_avg", "truncated_normal", in_axis, out_axis)


def glorot_uniform(in_axis=-2, out_axis=-1):
    return variance_scaling(1.0, "fan_avg", "uniform", in_axis, out_axis)


xavier_normal, xavier_uniform = glorot_normal, glorot_uniform
kaiming_normal, kaiming_uniform = he_normal, he_uniform


def truncated_normal(stddev=1e-2, lower=-2.0, upper=2.0):
    """stddev * a standard normal truncated to (lower, upper) (not rescaled, as JAX)."""
    def init(key, shape, dtype=np.float32):
        return random.truncated_normal(key, lower, upper, tuple(shape), dtype) \
            * np.dtype(dtype).type(stddev)
    return init


def normal(stddev=1e-2):
    def init(key, shape, dtype=np.float32):
        return random.normal(key, tuple(shape), dtype) * np.dtype(dtype).type(stddev)
    return init


def uniform(scale=1e-2):
    """Uniform on [0, scale), as JAX."""
    def init(key, shape, dtype=np.float32):
        return random.uniform(key, tuple(shape), dtype, 0.0, scale)
    return init


def constant(value):
    def init(key, shape, dtype=np.float32):
        return fnp.full(tuple(shape), value, dtype)
    return init


def zeros(key, shape, dtype=np.float32):
    return fnp.zeros(tuple(shape), dtype)


def ones(key, shape, dtype=np.float32):
    return fnp.ones(tuple(shape), dtype)
