"""Array namespaces and placement: which array module (`xp`) a call computes with, and where
host data goes.

Backends register their array types here; `bind` asks `array_namespace` for the namespace of an
eager call, and the placement helpers (`as_value`, `on_default_backend`, `to_host`) read the same
state, so that the default backend is decided in one place.
"""

from __future__ import annotations

import numpy as np

from .trace import Tracer

# ---------------------------------------------------------------------------------------------
# Array namespaces: NumPy by default; backends register others (CuPy) by their array type.
#
# Host data (NumPy arrays, Python and NumPy scalars) runs on the default backend: NumPy, or
# CuPy's namespace when the default backend is "gpu" (FUNCGRAD_BACKEND=gpu), where host inputs
# are copied to the device as JAX copies them to its default device. Device arrays always run
# where they are.

namespaces: dict = {}
default_xp = np        # the namespace host data runs with (or the error saying why it cannot)
routing = False          # True when eager calls must look for device arrays or move host data


def _update_route():
    global routing
    routing = bool(namespaces) or default_xp is not np


def register_array_namespace(array_type, xp):
    """Arrays of `array_type` compute with namespace `xp` (CuPy's module, or an adapter such as
    funcgrad.backends.array_api.ArrayAPINamespace). NumPy arrays need no registration."""
    namespaces[array_type] = xp
    _update_route()


def unregister_array_namespace(array_type):
    namespaces.pop(array_type, None)
    _update_route()


device_hook = None  # set by funcgrad.devices: registers CuPy's namespace (the layer above)


def register_device_arrays():
    """Register the namespace of device arrays that arrive before their backend was first used
    (CuPy arrays made with cupy itself), through the hook funcgrad.devices installs."""
    if device_hook is not None:
        device_hook()


def set_default_namespace(xp):
    """The namespace host data runs with (funcgrad.devices sets it from the backend setting);
    an exception instead of a namespace is raised at the first call that needs it."""
    global default_xp
    default_xp = xp
    _update_route()


def default_namespace():
    """The namespace host data runs with, or the error saying why the default backend is
    unavailable."""
    if isinstance(default_xp, Exception):
        raise default_xp
    return default_xp


def array_namespace(args):
    """The array module (`xp`) of a call: that of its first device (non-NumPy) array, else the
    default backend's."""
    xp = device_namespace(args)
    if xp is not np or default_xp is np:
        return xp
    return default_namespace()


def device_namespace(args):
    """The namespace of the first device (non-NumPy) array among `args`, else NumPy: for code
    that builds index arrays and other host values next to its inputs."""
    if namespaces:
        for a in args:
            xp = namespaces.get(type(a))
            if xp is not None:
                return xp
    return np


def as_value(x):
    """A concrete value for a transform's tracer: arrays and tracers as they are, Python and
    NumPy scalars as 0-d arrays; with a GPU default backend, host data goes to the device (as
    JAX puts the inputs of its transforms on the default device)."""
    if type(x) is np.ndarray and default_xp is np or type(x) is Tracer:
        return x  # the common case first: it is paid per argument of every transform
    if hasattr(x, "__cuda_array_interface__"):
        return x
    if default_xp is np:
        return np.asarray(x)  # scalars, lists, ndarray subclasses: a plain array
    return default_namespace().asarray(x)


def on_default_backend(x, like=None):
    """A new host array `x` (made by fnp.zeros, arange, ...) placed where new arrays go: on the
    device of `like` when that is a device array, else on the default backend."""
    if like is not None and hasattr(like, "__cuda_array_interface__"):
        if type(like) not in namespaces:
            register_device_arrays()
        return device_namespace([like]).asarray(x)
    if default_xp is np or type(x) is not np.ndarray:
        return x
    return default_namespace().asarray(x)


def to_host(x):
    """x's value as a NumPy array, copied from the device when it is a CuPy array: the one
    explicit device-to-host copy funcgrad makes (for values that decide shapes, control flow
    or literals of a program)."""
    if hasattr(x, "__cuda_array_interface__") and hasattr(x, "get"):
        return x.get()
    return np.asarray(x)


def device_args(args):
    """(xp, args) for an eager call when other namespaces are registered: NumPy arrays and
    scalars among arguments of another namespace are host constants, moved over with
    `xp.asarray` (as JAX moves NumPy constants to the device)."""
    xp = array_namespace(args)
    if xp is np:
        return xp, args
    return xp, tuple(xp.asarray(a) if isinstance(a, (np.ndarray, np.generic)) else a
                     for a in args)
