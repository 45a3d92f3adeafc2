"""Weight initializers, as `jax.nn.initializers` (`fg.nn.initializers`, also
`fg.models.initializers`): each is a function `(key, shape, dtype=float32) -> array`; the
factories (`lecun_normal()`, `variance_scaling(...)`) return one.

Fans follow JAX: for a weight of shape (*receptive_field, fan_in, fan_out) (dense (in, out),
conv HWIO) fan_in = in * prod(receptive_field), fan_out = out * prod(receptive_field).
"""

from __future__ import annotations

import math

import numpy as np

from . import numpy as fnp
from . import random

__all__ = [
    "variance_scaling", "lecun_normal", "lecun_uniform", "he_normal", "he_uniform",
    "glorot_normal", "glorot_uniform", "xavier_normal", "xavier_uniform", "kaiming_normal",
    "kaiming_uniform", "truncated_normal", "normal", "uniform", "constant", "zeros", "ones",
]

# std of a standard normal truncated to (-2, 2): dividing by it keeps the requested variance.
_TRUNC_STD = 0.87962566103423978


def _axes_size(shape, axes):
    return shape[axes] if isinstance(axes, int) else math.prod(shape[a] for a in axes)


def _fans(shape, in_axis=-2, out_axis=-1, batch_axis=()):
    """(fan_in, fan_out) as JAX's `_compute_fans`: the sizes of in_axis and out_axis, each times
    the receptive field (the product of the axes that are none of in, out and batch)."""
    if isinstance(in_axis, int) and in_axis == -2 and len(shape) <= 1:
        raise ValueError(f"variance_scaling: cannot compute the fans of a {len(shape)}-d weight "
                         f"of shape {tuple(shape)} with the default in_axis=-2; the weight must "
                         "be at least 2-d, or pass in_axis (and out_axis) explicitly")
    in_size, out_size = _axes_size(shape, in_axis), _axes_size(shape, out_axis)
    batch = _axes_size(shape, batch_axis) if batch_axis != () else 1
    field = math.prod(shape) / in_size / out_size / batch
    return in_size * field, out_size * field


def variance_scaling(scale, mode, distribution, in_axis=-2, out_axis=-1, batch_axis=(),
                     dtype=np.float32):
    """Samples with variance scale / n, n = fan_in, fan_out, their mean or their geometric mean
    (`mode` "fan_in", "fan_out", "fan_avg", "fan_geo_avg"), from a "truncated_normal" (at 2 std,
    rescaled), "normal" or "uniform" (on [-1, 1) times sqrt(3 variance)): JAX's formulas in the
    same dtype, so a key gives JAX's numbers."""
    if mode not in ("fan_in", "fan_out", "fan_avg", "fan_geo_avg"):
        raise ValueError(f"variance_scaling: unknown mode {mode!r} (fan_in, fan_out, fan_avg, "
                         "fan_geo_avg)")
    if distribution not in ("truncated_normal", "normal", "uniform"):
        raise ValueError(f"variance_scaling: unknown distribution {distribution!r} "
                         "(truncated_normal, normal, uniform)")
    default_dtype = dtype

    def init(key, shape, dtype=default_dtype):
        shape = tuple(shape)
        dtype = np.dtype(np.float32 if dtype is None else dtype)
        fan_in, fan_out = _fans(shape, in_axis, out_axis, batch_axis)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2,
             "fan_geo_avg": (fan_in * fan_out) ** 0.5}[mode]
        variance = dtype.type(scale / n)  # NumPy scalars: computed in dtype, as JAX
        if distribution == "truncated_normal":
            std = np.sqrt(variance) / dtype.type(_TRUNC_STD)
            return random.truncated_normal(key, -2, 2, shape, dtype) * std
        if distribution == "normal":
            return random.normal(key, shape, dtype) * np.sqrt(variance)
        return random.uniform(key, shape, dtype, -1) * np.sqrt(dtype.type(3) * variance)

    return init


def lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(), dtype=np.float32):
    return variance_scaling(1.0, "fan_in", "truncated_normal", in_axis, out_axis, batch_axis,
                            dtype)


def lecun_uniform(in_axis=-2, out_axis=-1, batch_axis=(), dtype=np.float32):
    return variance_scaling(1.0, "fan_in", "uniform", in_axis, out_axis, batch_axis, dtype)


def he_normal(in_axis=-2, out_axis=-1, batch_axis=(), dtype=np.float32):
    return variance_scaling(2.0, "fan_in", "truncated_normal", in_axis, out_axis, batch_axis,
                            dtype)


def he_uniform(in_axis=-2, out_axis=-1, batch_axis=(), dtype=np.float32):
    return variance_scaling(2.0, "fan_in", "uniform", in_axis, out_axis, batch_axis, dtype)


def glorot_normal(in_axis=-2, out_axis=-1, batch_axis=(), dtype=np.float32):
    return variance_scaling(1.0, "fan_avg", "truncated_normal", in_axis, out_axis, batch_axis,
                            dtype)


def glorot_uniform(in_axis=-2, out_axis=-1, batch_axis=(), dtype=np.float32):
    return variance_scaling(1.0, "fan_avg", "uniform", in_axis, out_axis, batch_axis, dtype)


xavier_normal, xavier_uniform = glorot_normal, glorot_uniform
kaiming_normal, kaiming_uniform = he_normal, he_uniform


def truncated_normal(stddev=1e-2, dtype=np.float32, lower=-2.0, upper=2.0):
    """stddev * a standard normal truncated to (lower, upper) (not rescaled, as JAX)."""
    default_dtype = dtype

    def init(key, shape, dtype=default_dtype):
        dtype = np.dtype(np.float32 if dtype is None else dtype)
        return random.truncated_normal(key, lower, upper, tuple(shape), dtype) \
            * dtype.type(stddev)
    return init


def normal(stddev=1e-2, dtype=np.float32):
    default_dtype = dtype

    def init(key, shape, dtype=default_dtype):
        dtype = np.dtype(np.float32 if dtype is None else dtype)
        return random.normal(key, tuple(shape), dtype) * dtype.type(stddev)
    return init


def uniform(scale=1e-2, dtype=np.float32):
    """Uniform on [0, scale), as JAX."""
    default_dtype = dtype

    def init(key, shape, dtype=default_dtype):
        dtype = np.dtype(np.float32 if dtype is None else dtype)
        return random.uniform(key, tuple(shape), dtype) * dtype.type(scale)
    return init


def constant(value, dtype=np.float32):
    default_dtype = dtype

    def init(key, shape, dtype=default_dtype):
        return fnp.full(tuple(shape), value, np.float32 if dtype is None else dtype)
    return init


def zeros(key, shape, dtype=np.float32):
    return fnp.zeros(tuple(shape), dtype)


def ones(key, shape, dtype=np.float32):
    return fnp.ones(tuple(shape), dtype)
