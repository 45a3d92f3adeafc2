"""Devices and placement: `fg.devices()`, `fg.default_backend()`, `fg.device_put(x, device)`.

"cpu" (NumPy) is always there; "gpu" (CuPy) only when CuPy imports and sees a CUDA device. The
default backend is the `backend` setting (`FUNCGRAD_BACKEND=gpu` or
`fg.config.update("backend", "gpu")`).
"""

from __future__ import annotations

import functools

import numpy as np

from . import config, tree_util
from .backends import load_cupy
from .core import placement
from .core.placement import on_default_backend  # noqa: F401 (public)

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


def platform_name(name, what="device"):
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
    return platform_name(config.read("backend"), "backend (the FUNCGRAD_BACKEND setting)")


def _set_default_backend(value):
    """Point the core at the default backend's namespace. A GPU default without CuPy or a device
    (or an unknown name) is remembered as the error, raised by the first call that needs it, so
    that `import funcgrad` itself works everywhere."""
    from .core import placement
    try:
        platform = platform_name(value, "backend (the FUNCGRAD_BACKEND setting)")
        if platform == "cpu":
            placement.set_default_namespace(np)
        else:
            from .backends.cupy_namespace import namespace_for
            placement.set_default_namespace(namespace_for(load_cupy()))
    except (ValueError, RuntimeError) as e:
        placement.set_default_namespace(e)


def devices(backend=None):
    """The devices of a backend (default: the default backend), e.g. [CpuDevice(id=0)]."""
    platform = default_backend() if backend is None else platform_name(backend, "backend")
    if platform == "cpu":
        return [Device("cpu", 0)]
    cupy = load_cupy()
    return [Device("gpu", i) for i in range(cupy.cuda.runtime.getDeviceCount())]


def device_put(x, device=None):
    """Copy the arrays of pytree `x` to `device` ("cpu", "gpu", or a Device; default: the
    default backend). Leaves already there are returned as they are."""
    platform = default_backend() if device is None else platform_name(device)
    if platform == "cpu":
        from .core import to_host
        return tree_util.tree_map(to_host, x)
    cupy = load_cupy()
    dev_id = device.id if isinstance(device, Device) else 0
    with cupy.cuda.Device(dev_id):
        return tree_util.tree_map(lambda a: cupy.asarray(_gpu_dtype_checked(a)), x)


def _gpu_dtype_checked(a):
    """`a`, or a TypeError for the one funcgrad dtype CuPy cannot hold: bfloat16."""
    if getattr(getattr(a, "dtype", None), "name", None) == "bfloat16":
        raise TypeError("device_put: CuPy has no bfloat16 arrays, so bfloat16 data stays on the "
                        "CPU. On the GPU store 16-bit floats as float16 (a.astype(np.float16), "
                        "or mixed_precision.Policy with float16), or use float32.")
    return a


def inputs_on_default_backend(fn):
    """Decorator for the public entry points of training and model code (a model layer, an
    optimizer's update), which combine their array arguments with Python operators
    (`x @ params["w"] + params["b"]`): with a GPU default backend, host (NumPy) arrays among the
    arguments are copied to the device once, at the call, since CuPy's operators refuse NumPy
    operands. With the CPU default it costs one check per call."""

    @functools.wraps(fn)
    def call(*args, **kwargs):
        if placement.default_xp is not np:
            args = tuple(_host_leaves_moved(a) for a in args)
            kwargs = {k: _host_leaves_moved(v) for k, v in kwargs.items()}
        return fn(*args, **kwargs)
    return call


def _host_leaves_moved(tree):
    """`tree` with its NumPy leaves on the default backend; itself when it has none (so an
    argument passed through, like an eval-mode batch-norm state, keeps its identity)."""
    if not any(type(a) is np.ndarray for a in tree_util.tree_leaves(tree)):
        return tree
    xp = placement.default_namespace()
    return tree_util.tree_map(lambda a: xp.asarray(a) if type(a) is np.ndarray else a, tree)


config.watch("backend", _set_default_backend)


def _install_device_hook():
    from .core import placement
    placement.device_hook = load_cupy


_install_device_hook()
