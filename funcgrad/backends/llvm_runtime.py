"""Compiling the CPU kernels with LLVM (llvmlite) and calling them.

`compile_kernels(kernels)` turns llvm_codegen's kernels into callables. A kernel's text without
its name (`Kernel.pattern`) identifies it: every kernel with a pattern compiled before in this
process reuses that function, so a program only compiles the patterns it is the first to use,
all of them in one LLVM module (one optimization and code generation run). Compiled machine code
is also kept on disk, keyed by the module text, LLVM's version and the host CPU, in
`$FUNCGRAD_CACHE_DIR` (default `~/.cache/funcgrad/llvm`; the `kernel_cache` setting turns it
off), so a new process loads it instead of compiling. Writes are atomic; a damaged file is
compiled again.

Kernels are called through ctypes with the NumPy arrays themselves (`py_object`: the kernel
reads the array's data pointer, at the fixed offset of CPython's object header, checked at
import against `ndarray.ctypes.data`). ctypes releases the GIL during the call, so `Parallel`
runs the two halves of a large kernel's outermost loop on two threads.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import tempfile
import threading

import numpy as np

from .. import config

__all__ = ["compile_kernels", "available", "threads", "Parallel", "cache_dir", "stats"]

_ENV = None           # (target machine, pass builder options) once LLVM is set up
_functions: dict = {}  # pattern -> ctypes function (this process)
stats = {"modules compiled": 0, "modules loaded": 0, "kernels": 0}  # for tests and profiles
_engines = []          # execution engines holding the compiled code (kept for the process)
_lock = threading.Lock()


def available():
    """None when the compiled CPU backend can run here, else the reason it cannot."""
    try:
        import llvmlite.binding  # noqa: F401
    except ImportError as e:
        return f"llvmlite is not installed ({e}); pip install llvmlite"
    if _data_offset() is None:
        return "this Python's array objects do not have the layout the kernels read"
    return None


def _data_offset():
    """The byte offset of an ndarray's data pointer inside the array object (16 on every
    standard CPython build), or None if it is not where the kernels read it."""
    a = np.arange(3.0)
    b = np.empty((2, 5), np.int8)
    for off in (16,):
        if all(ctypes.c_void_p.from_address(id(x) + off).value == x.ctypes.data
               for x in (a, b, a[1:])):
            return off
    return None


def _setup():
    global _ENV
    if _ENV is None:
        import llvmlite.binding as llvm
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        cpu, features = llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()
        tm = llvm.Target.from_default_triple().create_target_machine(
            cpu=cpu, features=features, opt=3, reloc="default", codemodel="jitdefault")
        # 512-bit vectors where the CPU has them (LLVM's default prefers 256 on x86)
        wide = ('"prefer-vector-width"="512" "min-legal-vector-width"="512" '
                if "+avx512f" in features else "")
        attrs = (f'attributes #0 = {{ nounwind {wide}}}\n'
                 f'attributes #1 = {{ nounwind alwaysinline {wide}}}\n'
                 f'attributes #2 = {{ nounwind noinline {wide}}}\n')
        key = f"{llvm.llvm_version_info}|{cpu}|{features}|{tm.triple}"
        _ENV = (llvm, tm, attrs, key)
    return _ENV


def cache_dir():
    """Where compiled kernels are kept between processes (None: not kept)."""
    if not config.read("kernel_cache"):
        return None
    d = os.environ.get("FUNCGRAD_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "funcgrad", "llvm")
    return d


def _module_text(kernels, names):
    decls, helpers, bodies = set(), {}, []
    for k in kernels:
        decls |= k.decls
        helpers.update(k.helpers)
        bodies.append(k.ir.replace(f"@{k.name}", f"@{names[k.pattern]}"))
    _, _, attrs, _ = _setup()
    return ("\n".join(sorted(decls)) + "\n" + "\n".join(helpers.values()) + "\n"
            + "\n".join(bodies) + attrs)


def _object_code(text):
    """Machine code for a module: from the disk cache, else compiled (and stored)."""
    llvm, tm, _, key = _setup()
    digest = hashlib.sha256((key + "\n" + text).encode()).hexdigest()
    d = cache_dir()
    path = os.path.join(d, digest[:2], digest + ".o") if d else None
    if path is not None:
        try:
            with open(path, "rb") as f:
                blob = f.read()
            if hashlib.sha256(blob[32:]).digest() == blob[:32]:
                stats["modules loaded"] += 1
                return blob[32:]
        except OSError:
            pass
    stats["modules compiled"] += 1
    mod = llvm.parse_assembly(text)
    mod.verify()
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)
    data = tm.emit_object(mod)
    if path is not None:
        _store(path, hashlib.sha256(data).digest() + data)
    return data


def _store(path, data):
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError:  # a read-only or full disk: the kernels still run, compiled each time
        pass


def compile_kernels(kernels):
    """{kernel name: ctypes function} for llvm_codegen Kernels (see the module doc)."""
    with _lock:
        names, new = {}, []
        for k in kernels:
            if k.pattern in _functions or k.pattern in names:
                continue
            names[k.pattern] = f"fgk_{hashlib.sha1(k.pattern.encode()).hexdigest()[:16]}"
            new.append(k)
        if new:
            llvm, tm, _, _ = _setup()
            data = _object_code(_module_text(new, names))
            engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), tm)
            engine.add_object_file(llvm.ObjectFileRef.from_data(data))
            engine.finalize_object()
            _engines.append(engine)
            for k in new:
                address = engine.get_function_address(names[k.pattern])
                n_arrays = k.inputs + len(k.outputs)
                proto = ctypes.CFUNCTYPE(None, *([ctypes.py_object] * n_arrays
                                                 + [ctypes.c_int64] * (len(k.dims) + 2)))
                _functions[k.pattern] = proto(address)
                stats["kernels"] += 1
        return {k.name: _functions[k.pattern] for k in kernels}


# ---------------------------------------------------------------------------------------------
# Threads

def threads():
    """How many threads the kernels may use: the `cpu_threads` setting, else the CPUs this
    process may run on, bounded by OMP_NUM_THREADS when that is set (as BLAS libraries do)."""
    n = config.read("cpu_threads")
    if n:
        return n
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count() or 1
    env = os.environ.get("OMP_NUM_THREADS")
    if env and env.isdigit() and int(env) > 0:
        n = min(n, int(env))
    return max(1, n)


class _Helper(threading.Thread):
    """A worker thread that runs the second half of a split kernel call."""

    def __init__(self):
        super().__init__(daemon=True, name="funcgrad-kernel-helper")
        self.go = threading.Lock()
        self.go.acquire()
        self.done = threading.Lock()
        self.done.acquire()
        self.job = None
        self.error = None

    def run(self):
        while True:
            self.go.acquire()
            fn, args = self.job
            try:
                fn(*args)
            except BaseException as e:  # noqa: BLE001 (reported by the caller)
                self.error = e
            self.done.release()


_helper = None
_helper_lock = threading.Lock()


class Parallel:
    """Calls a kernel over [0, n) of its outermost loop, split in two across threads when
    `split` (the work is large enough to repay the hand-off, see llvm_backend)."""

    __slots__ = ("fn", "n")

    def __init__(self, fn, n):
        self.fn = fn
        self.n = n

    def __call__(self, *args):
        global _helper
        n = self.n
        mid = n // 2
        if not _helper_lock.acquire(blocking=False):  # the helper is busy (another thread)
            self.fn(*args, 0, n)
            return
        try:
            if _helper is None:
                _helper = _Helper()
                _helper.start()
            h = _helper
            h.job = (self.fn, (*args, mid, n))
            h.go.release()
            self.fn(*args, 0, mid)
            h.done.acquire()
            if h.error is not None:
                e, h.error = h.error, None
                raise e
        finally:
            _helper_lock.release()
