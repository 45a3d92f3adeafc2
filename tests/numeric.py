"""Shared test helpers: central finite differences (float64), the reference for gradients, and
whether the tests run with the GPU as default backend (and whether a GPU is there at all)."""

import numpy as np

import funcgrad as fg

# FUNCGRAD_BACKEND=gpu: results are device (CuPy) arrays (see conftest.py)
GPU_MODE = fg.default_backend() == "gpu"


def gpu_unavailable():
    """Why funcgrad cannot use a GPU here (no CuPy, no device), or None when it can."""
    try:
        fg.devices("gpu")
    except RuntimeError as e:
        return str(e)
    return None


def numeric_grad(f, x, eps=1e-6):
    """d f / d x for scalar-valued f, one central difference per element of x."""
    x = np.asarray(x, np.float64)
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        d = np.zeros_like(x)
        d[i] = eps
        g[i] = float(f(x + d) - f(x - d)) / (2 * eps)
    return g
