"""CuPy's module as the `xp` of every primitive's implementation, with overrides only where CuPy
differs from NumPy (scatter through `cupyx`, argsort's `kind`). Eager calls and `eval_jaxpr` on
CuPy arrays use it (registered by `funcgrad.devices`), and so does jit's CuPy code for every
equation that is not a fused kernel.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CupyNamespace", "namespace_for"]


class CupyNamespace:
    """CuPy's module, with funcgrad's few overrides; every other name is CuPy's own."""

    def __init__(self, cupy):
        self._cupy = cupy
        self.__name__ = "cupy"

    def __getattr__(self, name):
        return getattr(self._cupy, name)

    def __repr__(self):
        return "CupyNamespace(cupy)"

    def argsort(self, x, axis=-1, kind=None):
        # CuPy's argsort is a stable (radix/merge) sort whatever `kind` says.
        return self._cupy.argsort(x, axis=axis)

    def astype(self, x, dtype, copy=True):
        return x.astype(dtype, copy=copy)

    def index_accumulate(self, mode, out, cols, updates):
        """Scatter into `out` (already a copy) at index arrays `cols`: "set" or a ufunc name."""
        import cupyx
        cp = self._cupy
        if mode == "set":
            out[cols] = updates  # duplicates: one of them wins (as JAX on GPUs)
            return out
        fn = {"add": cupyx.scatter_add, "maximum": cupyx.scatter_max,
              "minimum": cupyx.scatter_min}.get(mode)
        if fn is not None and out.dtype.name in _CUPYX_SCATTER_DTYPES:
            fn(out, cols, updates)
            return out
        ufunc_at = getattr(getattr(cp, mode, None), "at", None)
        if ufunc_at is not None:  # CuPy >= 13
            ufunc_at(out, cols, updates)
            return out
        # int64 (and other) scatters older CuPy cannot do on the device: done on the host
        host = out.get()
        getattr(np, mode).at(host, tuple(c.get() if hasattr(c, "get") else c for c in cols),
                             updates.get() if hasattr(updates, "get") else updates)
        return cp.asarray(host)


_CUPYX_SCATTER_DTYPES = {"float16", "float32", "float64", "int32", "uint32", "uint64"}

_namespace_cache: dict = {}


def namespace_for(cupy):
    """The one CupyNamespace of a cupy module."""
    ns = _namespace_cache.get(id(cupy))
    if ns is None:
        ns = _namespace_cache[id(cupy)] = CupyNamespace(cupy)
    return ns
