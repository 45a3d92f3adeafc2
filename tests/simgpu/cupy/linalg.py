"""cupy.linalg, simulated with numpy.linalg.

As on a GPU (cuSOLVER, with CuPy's default `cupyx.errstate(linalg="ignore")`), a failed
factorization raises nothing: cholesky, inv and solve return NaN where CuPy returns invalid
values, so code relying on LinAlgError is caught here too."""

from __future__ import annotations

import sys

import numpy as np

from ._core import device_function, module_attr

LinAlgError = np.linalg.LinAlgError


_cache: dict = {}


def __getattr__(name):
    return module_attr(sys.modules[__name__], np.linalg, name, _cache)


def _no_raise(name, shape_of):
    fn = device_function(getattr(np.linalg, name), f"cupy.linalg.{name}")

    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except np.linalg.LinAlgError:
            from . import full
            dtype = np.result_type(*[a.dtype for a in args], np.float32)
            return full(shape_of(*args), np.nan, dtype)
    call.__name__ = name
    call.__doc__ = f"Simulated cupy.linalg.{name}: NaN instead of LinAlgError."
    return call


cholesky = _no_raise("cholesky", lambda a: a.shape)
inv = _no_raise("inv", lambda a: a.shape)
solve = _no_raise("solve", lambda a, b: np.linalg.solve(
    np.broadcast_to(np.eye(a.shape[-1]), a.shape), np.zeros(b.shape)).shape)
