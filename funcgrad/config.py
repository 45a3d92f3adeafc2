"""One place for settings: `fg.config.update(name, value)`, `fg.config.read(name)`.

Each setting can also come from the environment as FUNCGRAD_<NAME> (e.g. FUNCGRAD_DEBUG_NANS=1,
FUNCGRAD_BACKEND=gpu); a value set with `update` wins over the environment.

`retain_host_memory` (off by default) makes the C allocator keep freed memory in the process, see
`_retain_host_memory`: a CPU training step then stops paying the kernel for its large temporaries
on every call.
"""

from __future__ import annotations

import contextlib
import ctypes
import os

_DEFAULTS = {
    "debug_nans": False,             # raise at the first primitive that produces a NaN or Inf
    "explain_cache_misses": False,   # log why jit traced a function again
    "backend": "cpu",                # default backend for new arrays: "cpu" (NumPy) or "gpu"
    "log_compiles": False,           # log each jit trace + compile
    "cpu_backend": "llvm",           # jit's CPU code generator: "llvm" (compiled) or "numpy"
    "jit_cache_size": 4096,          # compiled programs kept by all jitted functions (LRU; 0: all)
    "kernel_cache": True,            # keep compiled CPU kernels on disk (FUNCGRAD_CACHE_DIR)
    "kernel_compiler": "process",    # where LLVM compiles them: "process" (its own) or "in-process"
    "cpu_threads": 0,                # threads for CPU kernels (0: the CPUs, OMP_NUM_THREADS)
    "retain_host_memory": False,     # glibc keeps freed memory for reuse (see below)
}
_values: dict = {}
_watchers: dict = {}   # name -> callbacks told the new value (e.g. the core's debug_nans flag)


_initial: dict = {}    # a watched setting's value when it was first watched (environment)


def watch(name, fn):
    """Call `fn(value)` now and whenever setting `name` changes (for flags read on hot paths).

    A watched setting takes its FUNCGRAD_<NAME> environment value once, when first watched (at
    import); later changes go through update / reset / setting."""
    _check(name)
    if name not in _initial:
        try:
            _initial[name] = read(name)
        except ValueError:
            _initial[name] = _DEFAULTS[name]
    _watchers.setdefault(name, []).append(fn)
    fn(_values.get(name, _initial[name]))


def _notify(name):
    for fn in _watchers.get(name, ()):
        fn(_values.get(name, _initial[name]))


def _parse(name, text):
    default = _DEFAULTS[name]
    if isinstance(default, bool):
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"Environment variable FUNCGRAD_{name.upper()}={text!r} is not a boolean;"
                         " use 1/0, true/false, yes/no or on/off.")
    return type(default)(text)


def _check(name):
    if name not in _DEFAULTS:
        known = ", ".join(sorted(_DEFAULTS))
        raise KeyError(f"Unknown funcgrad setting {name!r}. Known settings: {known}.")


def read(name):
    """The current value: set by update(), else from FUNCGRAD_<NAME>, else the default."""
    _check(name)
    if name in _values:
        return _values[name]
    env = os.environ.get(f"FUNCGRAD_{name.upper()}")
    return _DEFAULTS[name] if env is None else _parse(name, env)


def update(name, value):
    """Set a setting for this process."""
    _check(name)
    default = _DEFAULTS[name]
    if isinstance(default, bool) and not isinstance(value, bool):
        raise TypeError(f"Setting {name!r} takes True or False, got {value!r}.")
    if type(default) is int and (type(value) is not int or value < 0):
        raise TypeError(f"Setting {name!r} takes an integer >= 0, got {value!r}.")
    _values[name] = value
    _notify(name)


def reset(name=None):
    """Forget values set with update() (all of them, or one)."""
    if name is None:
        _values.clear()
        for n in _watchers:
            _notify(n)
    else:
        _check(name)
        _values.pop(name, None)
        _notify(name)


@contextlib.contextmanager
def setting(name, value):
    """Temporarily change a setting: `with fg.config.setting("debug_nans", True): ...`."""
    _check(name)
    had, old = name in _values, _values.get(name)
    update(name, value)
    try:
        yield
    finally:
        if had:
            _values[name] = old
        else:
            _values.pop(name, None)
        _notify(name)


def settings():
    """All settings and their current values."""
    return {name: read(name) for name in _DEFAULTS}


# ---------------------------------------------------------------------------------------------
# retain_host_memory

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3   # mallopt parameters (glibc's malloc.h)
_GLIBC_DEFAULT = 128 * 1024                     # both thresholds' initial value in glibc
_RETAINED = 1 << 30                             # arrays below 1 GiB come from the heap
_retaining = False


def _libc(name):
    """The C library's function `name` (glibc's `mallopt`, `malloc_trim`), or None (another C
    library: what uses it then does nothing)."""
    try:
        return getattr(ctypes.CDLL(None), name, None)
    except OSError:
        return None


def _retain_host_memory(on):
    """The `retain_host_memory` setting, applied to glibc's malloc (process-wide).

    By default glibc gives every block above its mmap threshold (at most 32 MiB) its own
    mapping and unmaps it on free, so a jitted CPU step that makes the same 100 MB temporaries
    (the logits of a language model) on every call pays a page fault per page each time, and
    NumPy's transparent-huge-page advice can add kernel compaction: a GPT-2 LoRA step spent a
    fifth of its time in the kernel. On: blocks below 1 GiB come from the heap and freed memory
    stays there (trim threshold 1 GiB), so the next step reuses the pages, as PyTorch's caching
    allocators and jemalloc do. The peak resident size is unchanged; the process just does not
    shrink below it after a step. Off again: glibc's initial thresholds (128 KiB)."""
    global _retaining
    if bool(on) == _retaining:
        return
    mallopt = _libc("mallopt")
    if mallopt is None:
        return
    size = _RETAINED if on else _GLIBC_DEFAULT
    mallopt(_M_MMAP_THRESHOLD, size)
    mallopt(_M_TRIM_THRESHOLD, size)
    _retaining = bool(on)


watch("retain_host_memory", _retain_host_memory)


def trim_host_memory():
    """Give the C heap's free memory back to the operating system (glibc's `malloc_trim`;
    with another C library, nothing). Freed blocks below glibc's mmap threshold stay in the
    heap, and a few live ones above them keep it from shrinking: loading a checkpoint that is
    quantized as it is read (`pretrained.load(quantize=...)`) leaves the float32 tensors it read
    there, 26 MiB for GPT-2 small, which the training step's peak then carries along."""
    trim = _libc("malloc_trim")
    if trim is not None:
        trim(0)
