"""Backends: the code generators and interpreters that run programs on NumPy and CuPy.

`compiler_for(xp)` picks jit's code generator for an array namespace; `check_placement` is the
error for a call mixing host (NumPy) and device (CuPy) arrays; `load_cupy` loads the GPU
backend (CuPy with a device) on first use.
"""

from __future__ import annotations

import numpy as np


def gpu_missing(reason):
    return RuntimeError(
        f"GPU requested, but the GPU backend is unavailable: {reason}. funcgrad runs on GPUs "
        "through CuPy: install it with `pip install funcgrad[gpu]` (or the CuPy wheel for your "
        "CUDA version, e.g. `pip install cupy-cuda12x`), or use the CPU: device 'cpu', "
        "FUNCGRAD_BACKEND=cpu.")


def load_cupy():
    """The cupy module with at least one device, registered as an array namespace (the GPU
    backend is loaded here, on first use; a clear error says how to get it when it is missing)."""
    try:
        import cupy
    except ImportError as e:
        raise gpu_missing(f"CuPy is not installed ({e})") from None
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CuPy without a driver or a device
        raise gpu_missing(f"CuPy found no CUDA device ({e})") from None
    if n == 0:
        raise gpu_missing("CuPy found no CUDA device")
    from ..core import register_array_namespace
    from .cupy_backend import namespace_for
    register_array_namespace(cupy.ndarray, namespace_for(cupy))
    return cupy


def compiler_for(xp):
    """jit's code generator for namespace `xp`: `compile_jaxpr(jaxpr, xp=..., donated=...)`."""
    if xp is None or xp is np:
        from .numpy_backend import compile_jaxpr
        return compile_jaxpr
    from .cupy_backend import CupyNamespace
    if isinstance(xp, CupyNamespace):
        from .cupy_backend import compile_jaxpr
        return compile_jaxpr
    from .numpy_backend import compile_jaxpr  # another namespace: the generic interpreter path
    return compile_jaxpr


def check_placement(flat, in_tree, xp, backend=None):
    """The namespace a jitted call runs with, or a ValueError naming the arguments on the host
    and on the GPU when a call mixes NumPy and CuPy arrays (DESIGN invariant 1).

    Python scalars are host constants and go anywhere; so are NumPy arrays when the function
    was jitted with backend="gpu" or the default backend is the GPU (they are copied over each
    call). Constants the function
    captured are not arguments: they are moved once per compiled program.
    """
    if backend == "gpu":
        from .cupy_backend import namespace_for
        return namespace_for(load_cupy())
    if backend == "cpu" and xp is not np:
        raise ValueError("jit(..., backend='cpu') was called with GPU arrays; move them first "
                         "with fg.device_put(x, 'cpu').")
    if xp is np or xp is None:
        return xp
    host = [i for i, x in enumerate(flat) if type(x) is np.ndarray]
    if not host:
        return xp
    from ..core import placement
    if placement.default_xp is xp:  # a GPU default backend: host data goes there (copied per call)
        return xp
    from .. import tree_util
    paths = [tree_util.keystr(p) for p, _ in tree_util.tree_flatten_with_path(
        tree_util.tree_unflatten(in_tree, list(range(len(flat)))))[0]]
    on_host = ", ".join(_arg_name(paths[i]) for i in host)
    on_dev = ", ".join(_arg_name(paths[i]) for i in range(len(flat))
                       if i not in host and hasattr(flat[i], "__cuda_array_interface__"))
    raise ValueError(
        f"This call mixes host and GPU arrays: on the host (NumPy): {on_host}; on the GPU "
        f"(CuPy): {on_dev}. funcgrad runs a call where its arrays are and does not copy "
        "arguments behind your back: move them with fg.device_put(x, 'gpu') (or 'cpu') first, "
        "or jit with backend='gpu' to copy NumPy arguments to the GPU on every call.")


def _arg_name(path):
    """'[0][1]' (args, kwargs tree) -> 'argument 1'; kwargs -> 'keyword argument name'."""
    if path.startswith("[0]"):
        rest = path[3:]
        if rest.startswith("[") and "]" in rest:
            i = rest[1:rest.index("]")]
            tail = rest[rest.index("]") + 1:]
            return f"argument {i}" + (f" at {tail}" if tail else "")
    if path.startswith("[1]"):
        return f"keyword argument {path[3:]}"
    return path or "argument"
