"""Devices and placement: `fg.devices()`, `fg.default_backend()`, `fg.device_put(x, device)`.

"cpu" (NumPy) is always there; "gpu" (CuPy) only when CuPy imports and sees a CUDA device. The
default backend is the `backend` setting (`FUNCGRAD_BACKEND=gpu` or
`fg.config.update("backend", "gpu")`).
"""

from __future__ import annotations

import numpy as np

from . import config, tree_util
from .core.placement import inputs_on_default_backend, on_default_backend  # noqa: F401 (public)

__all__ = ["Device", "devices", "default_backend", "device_put"]

_BACKENDS = ("cpu", "gpu")
_ALIASES = {"cpu": "cpu", "numpy": "cpu", "gpu": "gpu", "cuda": "gpu", "cupy": "gpu"}


class Device:
    """One device: `platform` is "cpu" or "gpu", `id` its index."""

    def __init__(self, platform, id=0):
        self.platform = platform
        self.id = id

    def __repr__(self):
        return f"{'Cpu' if self.platform == 'cpu' else 'Gpu'}Device(id={self.id})"

    def __eq__(self, other):
        return isinstance(other, Device) and (self.platform, self.id) == (other.platform, other.id)

    def __hash__(self):
        return hash((self.platform, self.id))


def _gpu_missing(reason):
    return RuntimeError(
        f"GPU requested, but the GPU backend is unavailable: {reason}. funcgrad runs on GPUs "
        "through CuPy: install it with `pip install funcgrad[gpu]` (or the CuPy wheel for your "
        "CUDA version, e.g. `pip install cupy-cuda12x`), or use the CPU: device 'cpu', "
        "FUNCGRAD_BACKEND=cpu.")


def _cupy():
    """The cupy module with at least one device, registered as an array namespace."""
    try:
        import cupy
    except ImportError as e:
        raise _gpu_missing(f"CuPy is not installed ({e})") from None
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CuPy without a driver or a device
        raise _gpu_missing(f"CuPy found no CUDA device ({e})") from None
    if n == 0:
        raise _gpu_missing("CuPy found no CUDA device")
    from .backends.cupy_namespace import namespace_for
    from .core import register_array_namespace
    register_array_namespace(cupy.ndarray, namespace_for(cupy))
    return cupy


def _platform(name, what="device"):
    if isinstance(name, Device):
        return name.platform
    key = _ALIASES.get(str(name).lower()) if isinstance(name, str) else None
    if key is None:
        raise ValueError(f"Unknown {what} {name!r}: use 'cpu' or 'gpu' (or a Device from "
                         "fg.devices()).")
    return key


def default_backend():
    """The platform new arrays go to, and host (NumPy) data runs on, by default: the `backend`
    setting ("cpu" or "gpu")."""
    return _platform(config.read("backend"), "backend (the FUNCGRAD_BACKEND setting)")


def _set_default_backend(value):
    """Point the core at the default backend's namespace. A GPU default without CuPy or a device
    (or an unknown name) is remembered as the error, raised by the first call that needs it, so
    that `import funcgrad` itself works everywhere."""
    from .core import placement
    try:
        platform = _platform(value, "backend (the FUNCGRAD_BACKEND setting)")
        if platform == "cpu":
            placement.set_default_namespace(np)
        else:
            from .backends.cupy_namespace import namespace_for
            placement.set_default_namespace(namespace_for(_cupy()))
    except (ValueError, RuntimeError) as e:
        placement.set_default_namespace(e)


def devices(backend=None):
    """The devices of a backend (default: the default backend), e.g. [CpuDevice(id=0)]."""
    platform = default_backend() if backend is None else _platform(backend, "backend")
    if platform == "cpu":
        return [Device("cpu", 0)]
    cupy = _cupy()
    return [Device("gpu", i) for i in range(cupy.cuda.runtime.getDeviceCount())]


def device_put(x, device=None):
    """Copy the arrays of pytree `x` to `device` ("cpu", "gpu", or a Device; default: the
    default backend). Leaves already there are returned as they are."""
    platform = default_backend() if device is None else _platform(device)
    if platform == "cpu":
        from .core import to_host
        return tree_util.tree_map(to_host, x)
    cupy = _cupy()
    dev_id = device.id if isinstance(device, Device) else 0
    with cupy.cuda.Device(dev_id):
        return tree_util.tree_map(cupy.asarray, x)


config.watch("backend", _set_default_backend)


def _install_device_hook():
    from .core import placement
    placement._device_hook = _cupy


_install_device_hook()
