"""Backends: the code generators that turn an optimized program (one Jaxpr) into code.

jit (funcgrad/transforms/stages.py) traces a function, optimizes the program and runs the fusion
pass with the options of the backend that will run it; the backend only generates code from the
resulting Jaxpr. A `Backend` is that contract:

    backend.fusion                         options for fusion.fuse, or None (no fusion)
    backend.compile(program, donated=(), compile_body=..., profile=False) -> codegen.Executable

`compile_body(jaxpr)` is jit's pipeline for the sub-programs of control flow (a loop body is
optimized and fused like the top level, then compiled by the same backend).

The backends:
  "llvm"   NumPy arrays; fusion groups become compiled loops (llvm_backend.py), everything
           else as "numpy". The default CPU backend.
  "numpy"  NumPy arrays; one straight-line Python function calling each primitive's NumPy
           implementation (numpy_backend.py): the readable reference and the fallback
           (`fg.config.update("cpu_backend", "numpy")`, FUNCGRAD_CPU_BACKEND=numpy).
  "cupy"   CuPy arrays; fusion groups become CUDA kernels (cupy_backend.py).
  other array namespaces (the Array API adapter): the "numpy" generator with that namespace.

`backend_for(xp)` picks the backend of a call; `check_placement` is the error for a call mixing
host (NumPy) and device (CuPy) arrays; `load_cupy` loads the GPU
backend (CuPy with a device) on first use.
"""

from __future__ import annotations

import numpy as np

from .. import config

__all__ = ["Backend", "backend_for", "check_placement", "load_cupy", "CPU_BACKENDS"]

CPU_BACKENDS = ("llvm", "numpy")


class Backend:
    """One code generator: its name, its fusion options and its `compile`."""

    def __init__(self, name, compile_fn, fusion=None, xp=None):
        self.name = name
        self.fusion = fusion
        self.xp = xp
        self._compile = compile_fn

    def compile(self, program, donated=(), compile_body=None, profile=False, quiet=True):
        """An Executable for `program` (a Jaxpr, already optimized and fused); with `profile`,
        one that times each of its steps into `executable.times`. `quiet=False` for the bodies
        of control flow: they run inside a program that already silenced NumPy's
        floating-point warnings (core/errors.py)."""
        kw = {"profile": profile} if profile else {}
        if not quiet:
            kw["quiet"] = False
        return self._compile(program, xp=self.xp, donated=donated,
                             compile_body=compile_body or self._plain_body, **kw)

    def _plain_body(self, jaxpr, xp=None, donated=()):
        return self.compile(jaxpr, donated, quiet=False)

    def __repr__(self):
        return f"Backend({self.name!r})"


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
    from .cupy_namespace import namespace_for
    register_array_namespace(cupy.ndarray, namespace_for(cupy))
    return cupy


_backends: dict = {}


def _numpy(xp=np):
    from .numpy_backend import compile_jaxpr
    return Backend("numpy", compile_jaxpr, None, xp)


def _llvm():
    from . import llvm_runtime
    reason = llvm_runtime.available()
    if reason is not None:  # the NumPy generator computes the same, without compiled kernels
        import logging
        logging.getLogger("funcgrad.jit").warning(
            "funcgrad: jit's compiled CPU kernels are unavailable (%s); using the NumPy code "
            "generator (set FUNCGRAD_CPU_BACKEND=numpy to silence this)", reason)
        return _numpy()
    from . import llvm_backend
    return Backend("llvm", llvm_backend.compile_jaxpr, llvm_backend.FUSION, np)


def backend_for(xp=None, cpu=None):
    """The backend of a call whose arrays live in namespace `xp` (None: NumPy). `cpu` names the
    CPU backend ("llvm" or "numpy"; default: the `cpu_backend` setting)."""
    if xp is None or xp is np:
        name = cpu or config.read("cpu_backend")
        if name not in CPU_BACKENDS:
            raise ValueError(f"cpu_backend {name!r} is not one of {CPU_BACKENDS}; set it with "
                             "fg.config.update('cpu_backend', 'numpy') or FUNCGRAD_CPU_BACKEND.")
        b = _backends.get(name)
        if b is None:
            b = _backends[name] = _llvm() if name == "llvm" else _numpy()
        return b
    from .cupy_namespace import CupyNamespace
    if isinstance(xp, CupyNamespace):
        b = _backends.get(("cupy", id(xp)))
        if b is None:
            from . import cupy_backend
            b = _backends[("cupy", id(xp))] = Backend("cupy", cupy_backend.compile_jaxpr,
                                                      cupy_backend.FUSION, xp)
        return b
    b = _backends.get(("other", id(xp)))  # another namespace: the generic interpreter path
    if b is None:
        b = _backends[("other", id(xp))] = _numpy(xp)
    return b


def check_placement(flat, in_tree, xp, backend=None):
    """The namespace a jitted call runs with, or a ValueError naming the arguments on the host
    and on the GPU when a call mixes NumPy and CuPy arrays (DESIGN invariant 1).

    Python scalars are host constants and go anywhere; so are NumPy arrays when the function
    was jitted with backend="gpu" or the default backend is the GPU (they are copied over each
    call). Constants the function
    captured are not arguments: they are moved once per compiled program.
    """
    if backend == "gpu":
        from .cupy_namespace import namespace_for
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
