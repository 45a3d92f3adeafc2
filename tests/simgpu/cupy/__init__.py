"""A CPU simulator of the part of CuPy that funcgrad uses, so CuPy code paths run in CI.

Put `tests/simgpu` first on `sys.path` (e.g. `PYTHONPATH=tests/simgpu`) and `import cupy` gets
this package: one simulated device, arrays kept in NumPy, `RawKernel` CUDA sources compiled
with g++ and run thread by thread (`cupy._kernel`), and `ReductionKernel`'s snippets compiled
into a sequential map-reduce loop (`cupy._reduction`). It is strict where a GPU is: host (NumPy)
arrays are refused by device functions and never made implicitly (see `cupy._core`).

Every public NumPy function is available as `cupy.<name>` through a generic wrapper (device
arrays in, device arrays out); dtypes, constants and classes are NumPy's own. The functions
defined here are those whose CuPy behaviour differs from that wrapper.
"""

from __future__ import annotations

import builtins
import sys

import numpy as np

from . import _core, cuda, fft, linalg, random  # noqa: F401  (submodules, as in CuPy)
from ._core import from_numpy, host_value, module_attr, ndarray, poisoned, ufunc
from ._kernel import RawKernel
from ._reduction import ReductionKernel

__version__ = "13.0.0+simgpu"
_this = _core.package = sys.modules[__name__]
__all__ = ["ndarray", "ufunc", "RawKernel", "ReductionKernel", "array", "asarray", "asanyarray",
           "ascontiguousarray", "asfortranarray", "empty", "empty_like", "asnumpy",
           "get_array_module", "result_type", "can_cast", "common_type", "is_available"]


_cache: dict = {}


def __getattr__(name):
    return module_attr(sys.modules[__name__], np, name, _cache)


# -- host to device ---------------------------------------------------------------------------

def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False,
          device=None):
    """A device array from anything NumPy takes, device arrays (also in lists) included."""
    if isinstance(obj, ndarray) and copy is not True and ndmin <= obj.ndim and (
            dtype is None or np.dtype(dtype) == obj.dtype):
        return obj
    if copy is False and not isinstance(obj, ndarray):
        raise ValueError("Unable to avoid copy while creating an array from host data.")
    value = np.array(host_value(obj), dtype=dtype, order=order if order in "CF" else "K",
                     ndmin=ndmin, copy=True)
    if not value.dtype.isnative:
        value = value.astype(value.dtype.newbyteorder("="))
    return from_numpy(value)


def asarray(a, dtype=None, order=None, *, copy=None, blocking=False, device=None):
    """`a` on the device: a device array itself when it is one already (and the dtype fits)."""
    return array(a, dtype, copy=copy, order=order or "K")


asanyarray = asarray


def _device_only(a, fn):
    if not isinstance(a, ndarray):
        raise TypeError(f"Argument 'a' has incorrect type (expected cupy.ndarray, got "
                        f"{type(a).__module__}.{type(a).__qualname__}) in cupy.{fn}")


def ascontiguousarray(a, dtype=None):
    """As CuPy's: device arrays only, and a 0-d array comes back with shape (1,)."""
    _device_only(a, "ascontiguousarray")
    dtype = a.dtype if dtype is None else np.dtype(dtype)
    if dtype == a.dtype and a.flags.c_contiguous and a.ndim:
        return a
    return from_numpy(np.ascontiguousarray(a._a.reshape(a.shape or (1,)), dtype))


def asfortranarray(a, dtype=None):
    _device_only(a, "asfortranarray")
    return from_numpy(np.asfortranarray(a._a, dtype))


def empty(shape, dtype=float, order="C"):
    """Uninitialized memory, poisoned (NaN / 0xA5 bytes) as a GPU's would hold garbage."""
    return from_numpy(poisoned(shape, dtype, order))


def empty_like(prototype, dtype=None, order="K", subok=None, shape=None):
    if not isinstance(prototype, ndarray):
        raise TypeError(f"Unsupported type {type(prototype)}")
    return empty(prototype.shape if shape is None else shape,
                 prototype.dtype if dtype is None else dtype)


# -- device to host, and dtype routines -------------------------------------------------------

def asnumpy(a, stream=None, order="C", out=None, blocking=True):
    """A NumPy array from a device array (copied) or anything NumPy takes."""
    if isinstance(a, ndarray):
        return a.get(order=order, out=out)
    return np.asarray(a, order=order)


def get_array_module(*args):
    """cupy when any argument is a device array, else numpy."""
    return _this if builtins.any(isinstance(a, ndarray) for a in args) else np


def _dtypes(args):
    return [a.dtype if isinstance(a, ndarray) else a for a in args]


def result_type(*arrays_and_dtypes):
    return np.result_type(*_dtypes(arrays_and_dtypes))


def can_cast(from_, to, casting="safe"):
    return np.can_cast(_dtypes([from_])[0], to, casting=casting)


def common_type(*arrays):
    return np.common_type(*[np.empty(0, a.dtype) for a in arrays])


def is_available():
    return True


class _MemoryPool:
    """cupy.get_default_memory_pool(): nothing is pooled in the simulator."""

    def free_all_blocks(self, stream=None):
        pass

    def used_bytes(self):
        return 0

    def total_bytes(self):
        return 0

    def set_limit(self, size=None, fraction=None):
        pass


_pool, _pinned_pool = _MemoryPool(), _MemoryPool()


def get_default_memory_pool():
    return _pool


def get_default_pinned_memory_pool():
    return _pinned_pool



# -- sorting: CuPy sorts with stable algorithms (Thrust/CUB radix sorts), whatever `kind` says --

def sort(a, axis=-1, kind=None):
    """Stable, as CuPy's."""
    return _stable("sort", a, axis)


def argsort(a, axis=-1, kind=None):
    """Stable, as CuPy's: equal keys keep their order."""
    return _stable("argsort", a, axis)


def _stable(name, a, axis):
    if not isinstance(a, ndarray):
        raise TypeError(f"Unsupported type {type(a)}")
    if name == "sort":  # ndarray.sort sorts in place
        out = a.copy()
        out.sort(axis=axis)
        return out
    return a.argsort(axis=axis)
