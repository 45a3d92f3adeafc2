"""Compiling the CPU kernels with LLVM (llvmlite) and calling them.

`compile_kernels(kernels)` turns llvm_codegen's kernels into callables. A kernel's text without
its name (`Kernel.pattern`) identifies it: every kernel with a pattern compiled before in this
process reuses that function, so a program only compiles the patterns it is the first to use,
all of them in one LLVM module (one optimization and code generation run). Compiled machine code
is also kept on disk, keyed by the module text, LLVM's version and the host CPU, in
`$FUNCGRAD_CACHE_DIR` (default `~/.cache/funcgrad/llvm`; the `kernel_cache` setting turns it
off), so a new process loads it instead of compiling. Writes are atomic; a damaged file is
compiled again.

LLVM stays out of this process where it can (x86-64 Linux): LLVM (`llvm_compiler`) runs in a
compiler process started when a module needs compiling, which exits when idle, and
`llvm_loader` places the object files here. LLVM in the process would hold about 45 MiB for
its lifetime, a sixth of a 4-bit LoRA step of GPT-2 small (issue 21). The `kernel_compiler`
setting "in-process" (the only way elsewhere) compiles and loads with llvmlite here instead.

Each kernel is called as a Python builtin function (METH_FASTCALL, made with
PyCFunction_NewEx around an LLVM wrapper): `fn(*arrays, dims)`, the NumPy arrays themselves
(the kernel reads each array's data pointer, at the fixed offset of CPython's object header,
checked at import against `ndarray.ctypes.data`) and one int64 array of its loop sizes followed
by the range [lo, hi) of its outermost loop (`dims_array`); it returns True, or False
without running when an array is not C-contiguous. A ctypes call converted each
argument at about 0.2 µs apiece (7 µs for an Adam update of 36); this one costs what any
builtin call does. The wrapper releases the GIL while the kernel runs, so `Parallel` runs the
two halves of a large kernel's outermost loop on two threads.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.metadata
import importlib.util
import math
import os
import platform
import struct
import subprocess
import sys
import tempfile
import threading

import numpy as np

from .. import config
from . import llvm_compiler, llvm_loader, llvm_threads

__all__ = ["compile_kernels", "available", "threads", "start_pool", "blas_on_pool",
           "Parallel", "parallel_matmul", "pool_matmul", "pool_numpy", "pool_products",
           "threaded_numpy", "blas_threads", "dims_array",
           "cache_dir", "stats"]

_ENV = None           # llvmlite's binding once set up to load objects in this process
_functions: dict = {}  # pattern -> the kernel's builtin function (this process)
stats = {"modules compiled": 0, "modules loaded": 0, "kernels": 0}  # for tests and profiles
_engines = []          # execution engines holding the compiled code (kept for the process)
_lock = threading.Lock()


def available():
    """None when the compiled CPU backend can run here, else the reason it cannot."""
    # (found, not imported: importing it would load LLVM into this process)
    if importlib.util.find_spec("llvmlite") is None:
        return "llvmlite is not installed; pip install llvmlite"
    if _data_offset() is None or not _flags_where_read():
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


_FLAGS_OFFSET = 64   # an ndarray's flags (int32) inside the array object
_C_CONTIGUOUS = 1    # NPY_ARRAY_C_CONTIGUOUS


def _flags_where_read():
    """Whether an ndarray's C-contiguity flag is where the kernels' call wrappers read it."""
    a = np.arange(12.0).reshape(3, 4)
    return all(bool(ctypes.c_int32.from_address(id(x) + _FLAGS_OFFSET).value & _C_CONTIGUOUS)
               == x.flags.c_contiguous for x in (a, a.T, a[:, 1:], a[1:], np.empty(0, np.int8)))


def _mcjit():
    """llvmlite's binding, set up to load objects into this process with LLVM's own loader
    (MCJIT): where `llvm_loader` cannot (see the module doc)."""
    global _ENV
    if _ENV is None:
        llvm, _, _ = llvm_compiler.target()
        for name in _PYTHON_SYMBOLS:  # what the call wrappers use, from this Python
            llvm.add_symbol(name, ctypes.cast(getattr(ctypes.pythonapi, name),
                                              ctypes.c_void_p).value)
        llvm.add_symbol("_Py_TrueStruct", id(True))
        llvm.add_symbol("_Py_FalseStruct", id(False))
        _ENV = llvm
    for name, address in _symbols.items():  # the pool's (added as they become known)
        _ENV.add_symbol(name, address)
    return _ENV


_symbols: dict = {}  # symbols of this process the objects may use: the native pool's


_PYTHON_SYMBOLS = ("PyEval_SaveThread", "PyEval_RestoreThread", "Py_IncRef")
_WRAPPER_DECLS = ("declare ptr @PyEval_SaveThread()", "declare void @PyEval_RestoreThread(ptr)",
                  "declare void @Py_IncRef(ptr)", "@_Py_TrueStruct = external global i8",
                  "@_Py_FalseStruct = external global i8")


def _call_wrapper(name, kern):
    """`PyObject *name_py(self, args, nargs)`: the METH_FASTCALL entry of kernel `name`:
    args are the kernel's arrays, then the int64 array of its loop sizes, lo and hi. Returns
    True, or False without running when an array is not C-contiguous (the caller then passes
    contiguous copies: one flag test here instead of a Python call per argument). Where the
    native pool is loaded, a second loop-size array after the first runs the two ranges on
    the pool's two threads (`fg_pool_kernel`)."""
    n = kern.inputs + len(kern.outputs)
    one = f"""  call void @{name}(ptr %args, ptr %dv) #2
"""
    if _pool is not None:
        one = f"""  %two = icmp sgt i64 %nargs, {n + 1}
  br i1 %two, label %halves, label %whole
whole:
  call void @{name}(ptr %args, ptr %dv) #2
  br label %done
halves:
  %g2 = getelementptr ptr, ptr %args, i64 {n + 1}
  %dims2 = load ptr, ptr %g2
  %dp2 = getelementptr i8, ptr %dims2, i64 16
  %dv2 = load ptr, ptr %dp2
  call void @fg_pool_kernel(ptr @{name}, ptr %args, ptr %dv, ptr %dv2)
  br label %done
done:
"""
    return f"""define ptr @{name}_py(ptr %self, ptr %args, i64 %nargs) #0 {{
entry:
  %ok = call i1 @fg_contiguous(ptr %args, i64 {n})
  br i1 %ok, label %run, label %refuse
refuse:
  call void @Py_IncRef(ptr @_Py_FalseStruct)
  ret ptr @_Py_FalseStruct
run:
  %g = getelementptr ptr, ptr %args, i64 {n}
  %dims = load ptr, ptr %g
  %dp = getelementptr i8, ptr %dims, i64 16
  %dv = load ptr, ptr %dp
  %ts = call ptr @PyEval_SaveThread()
{one}  call void @PyEval_RestoreThread(ptr %ts)
  call void @Py_IncRef(ptr @_Py_TrueStruct)
  ret ptr @_Py_TrueStruct
}}
"""


# Whether the first n arrays of a call's arguments are all C-contiguous (one copy per module;
# the wrappers call it and the kernels without inlining either: compile time).
_CONTIGUOUS_TEST = f"""define internal i1 @fg_contiguous(ptr %args, i64 %n) #2 {{
entry:
  br label %head
head:
  %i = phi i64 [0, %entry], [%i1, %next]
  %more = icmp slt i64 %i, %n
  br i1 %more, label %test, label %yes
test:
  %g = getelementptr ptr, ptr %args, i64 %i
  %x = load ptr, ptr %g
  %fp = getelementptr i8, ptr %x, i64 {_FLAGS_OFFSET}
  %f = load i32, ptr %fp
  %c = and i32 %f, {_C_CONTIGUOUS}
  %b = icmp ne i32 %c, 0
  %i1 = add i64 %i, 1
  br i1 %b, label %next, label %no
next:
  br label %head
yes:
  ret i1 true
no:
  ret i1 false
}}
"""


class _MethodDef(ctypes.Structure):
    _fields_ = [("ml_name", ctypes.c_char_p), ("ml_meth", ctypes.c_void_p),
                ("ml_flags", ctypes.c_int), ("ml_doc", ctypes.c_char_p)]


_METH_FASTCALL = 0x0080
_method_defs = []  # the builtins' method tables (kept for the process)


def _builtin(name, address):
    """A Python builtin function calling the METH_FASTCALL C function at `address`."""
    new = ctypes.pythonapi.PyCFunction_NewEx
    new.restype, new.argtypes = ctypes.py_object, [ctypes.c_void_p] * 3
    d = _MethodDef(name.encode(), address, _METH_FASTCALL, None)
    _method_defs.append(d)
    return new(ctypes.addressof(d), None, None)


def dims_array(dims, lo, hi):
    """The last argument of a kernel call: its loop sizes and the range [lo, hi)."""
    return np.array([*dims, lo, hi], np.int64)


def cache_dir():
    """Where compiled kernels are kept between processes (None: not kept)."""
    if not config.read("kernel_cache"):
        return None
    d = os.environ.get("FUNCGRAD_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "funcgrad", "llvm")
    return d


def _module_text(kernels, names):
    """The LLVM module of `kernels` (named `names[pattern]`) and their call wrappers, without
    the attribute groups (llvm_compiler adds them for the host CPU)."""
    decls, helpers, bodies = set(_WRAPPER_DECLS), {"fg_contiguous": _CONTIGUOUS_TEST}, []
    if _pool is not None:
        decls.add("declare void @fg_pool_kernel(ptr, ptr, ptr, ptr)")
    for k in kernels:
        decls |= k.decls
        helpers.update(k.helpers)
        bodies.append(k.ir.replace(f"@{k.name}", f"@{names[k.pattern]}"))
        bodies.append(_call_wrapper(names[k.pattern], k))
    return ("\n".join(sorted(decls)) + "\n" + "\n".join(helpers.values()) + "\n"
            + "\n".join(bodies))


def _out_of_process():
    """Whether LLVM runs in the compiler process and objects load through llvm_loader."""
    where = config.read("kernel_compiler")
    if where not in ("process", "in-process"):
        raise ValueError(f"The kernel_compiler setting is {where!r}; use 'process' (LLVM in a "
                         "compiler process of its own, the default) or 'in-process'.")
    return where == "process" and llvm_loader.usable() and bool(sys.executable)


_host = None


def _host_key():
    """What machine code depends on besides its module: LLVM's version (llvmlite's) and the
    CPU, read without loading LLVM (Linux lists the CPU's model and features)."""
    global _host
    if _host is None:
        cpu = ""
        try:
            with open("/proc/cpuinfo") as f:
                lines = f.read().split("\n\n")[0].splitlines()
            cpu = "|".join(line for line in lines if line.split(":")[0].strip() in (
                "vendor_id", "cpu family", "model", "model name", "flags"))
        except OSError:
            pass
        if not cpu:  # elsewhere, as LLVM sees it (LLVM is in this process there anyway)
            llvm, tm, _ = llvm_compiler.target()
            cpu = f"{llvm.get_host_cpu_name()}|{llvm.get_host_cpu_features().flatten()}"
        version = importlib.metadata.version("llvmlite")
        _host = f"llvmlite {version}|{platform.machine()}|{cpu}"
    return _host


def _object_code(text, counted=True):
    """Machine code for a module: from the disk cache, else compiled (and stored); `stats`
    counts it unless `counted` is False (the pool)."""
    digest = hashlib.sha256((_host_key() + "\n" + text).encode()).hexdigest()
    d = cache_dir()
    path = os.path.join(d, digest[:2], digest + ".o") if d else None
    if path is not None:
        try:
            with open(path, "rb") as f:
                blob = f.read()
            if hashlib.sha256(blob[32:]).digest() == blob[:32]:
                stats["modules loaded"] += counted
                return blob[32:]
        except OSError:
            pass
    stats["modules compiled"] += counted
    data = _compiler.compile(text) if _out_of_process() else llvm_compiler.compile_ir(text)
    if path is not None:
        _store(path, hashlib.sha256(data).digest() + data)
    return data


class CompilerProcess:
    """The compiler process (llvm_compiler run as a script), started when a module needs
    compiling; it exits by itself after `idle` seconds without one."""

    def __init__(self, idle=llvm_compiler.IDLE_SECONDS):
        self.idle = idle
        self.process = None
        self.owner = None   # the process that started it (a forked child starts its own)

    def compile(self, text):
        request = text.encode()
        request = struct.pack("<Q", len(request)) + request
        for _ in range(2):  # a second time: it had just left, idle, as the request came
            if self.process is None or self.owner != os.getpid() or \
                    self.process.poll() is not None:
                try:
                    self.process = subprocess.Popen(
                        [sys.executable, llvm_compiler.__file__, str(self.idle)],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
                except OSError:  # this Python cannot start itself: LLVM compiles here
                    return llvm_compiler.compile_ir(text)
                self.owner = os.getpid()
            try:
                self.process.stdin.write(request)
                self.process.stdin.flush()
                head = self.process.stdout.read(8)
            except OSError:
                head = b""
            if len(head) == 8:
                answer = self.process.stdout.read(struct.unpack("<Q", head)[0])
                if answer[:1] == b"o":
                    return answer[1:]
                raise RuntimeError("LLVM could not compile funcgrad's CPU kernels: "
                                   + answer[1:].decode(errors="replace"))
            self.process.wait()
        raise RuntimeError(
            f"funcgrad's kernel compiler process ({sys.executable} {llvm_compiler.__file__}) "
            f"ended without an answer (exit status {self.process.returncode}; its messages are "
            "above). fg.config.update('kernel_compiler', 'in-process') compiles in this process "
            "instead; FUNCGRAD_CPU_BACKEND=numpy runs without compiled kernels.")


_compiler = CompilerProcess()


def _store(path, data):
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError:  # a read-only or full disk: the kernels still run, compiled each time
        pass


def load_object(data):
    """Places object file `data` in this process; returns `address(symbol name)`. By
    llvm_loader, else (another system, or the in-process setting) by LLVM's loader."""
    if _out_of_process():
        try:
            return llvm_loader.load(data, _symbols).__getitem__
        except llvm_loader.Unsupported:
            pass
    llvm = _mcjit()
    _, tm, _ = llvm_compiler.target()
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), tm)
    engine.add_object_file(llvm.ObjectFileRef.from_data(data))
    engine.finalize_object()
    _engines.append(engine)
    # never freed, not even by Python's teardown: native threads may still run its code then
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(engine))
    return engine.get_function_address


def compile_kernels(kernels):
    """{kernel name: builtin function `fn(*arrays, dims_array(dims, lo, hi)) -> bool`} for
    llvm_codegen Kernels (see the module doc; False: an array was not C-contiguous, nothing
    ran)."""
    with _lock:
        names, new = {}, []
        for k in kernels:
            if k.pattern in _functions or k.pattern in names:
                continue
            names[k.pattern] = f"fgk_{hashlib.sha1(k.pattern.encode()).hexdigest()[:16]}"
            new.append(k)
        if new:
            _load_pool()
            address = load_object(_object_code(_module_text(new, names)))
            for k in new:
                _functions[k.pattern] = _builtin(names[k.pattern],
                                                 address(names[k.pattern] + "_py"))
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


class _Job:
    """Parts of one call, taken one at a time by whichever thread is free: the caller takes
    them as well as the helper, so a helper that is slow to start (the machine's other cores
    busy) costs a part's time at most, never a wait."""

    __slots__ = ("fn", "parts", "running", "error")

    def __init__(self, fn, parts):
        self.fn = fn
        self.parts = parts
        self.running = threading.Lock()  # held while the helper works on this job
        self.error = None

    def work(self):
        fn, parts = self.fn, self.parts
        while True:
            try:
                args = parts.pop()  # atomic (the GIL): each part is taken once
            except IndexError:
                return
            fn(*args)


class _Helper(threading.Thread):
    """The thread that works on split calls beside the caller (see `_split`)."""

    def __init__(self):
        super().__init__(daemon=True, name="funcgrad-kernel-helper")
        self.wake = threading.Lock()  # released to wake the helper
        self.wake.acquire()
        self.job = None

    def run(self):
        while True:
            self.wake.acquire()
            job = self.job
            with job.running:
                try:
                    job.work()
                except BaseException as e:  # noqa: BLE001 (reported by the caller)
                    job.error = e


_helper = None
_helper_lock = threading.Lock()


def _split(fn, *parts):
    """fn(*part) for each part, on this thread and the helper thread together; returns when
    all are done. Parts are taken from the end. Without the helper (another thread of the
    program is using it) all run on this thread."""
    global _helper
    if not _helper_lock.acquire(blocking=False):
        for args in parts:
            fn(*args)
        return
    try:
        if _helper is None:
            _helper = _Helper()
            _helper.start()
        job = _helper.job = _Job(fn, list(parts))
        try:
            _helper.wake.release()
        except RuntimeError:  # still released: the helper has not woken for the last job
            pass
        job.work()
        with job.running:  # the part the helper may still be working on
            pass
        if job.error is not None:
            raise job.error
    finally:
        _helper_lock.release()


_pool = None  # {name: address} of the native pool's functions (llvm_threads), once loaded
# The pool's state (llvm_threads.POOL_FIELDS), in memory of this process's own: the loader
# keeps objects' pages read-only, and the objects find it as the symbol `fg_pool_state`.
# (Pages of their own that outlive Python's teardown: the pool's threads may still read them.)
_pool_state = None


def _load_pool():
    """Load the native pool (llvm_threads; compiled once, then kept on disk like the kernels)
    where it runs, and make `fg_pool_kernel` known to the kernels' modules."""
    global _pool
    if _pool is not None or not llvm_threads.supported():
        return
    global _pool_state
    if _pool_state is None:
        _pool_state = np.ctypeslib.as_array(
            (ctypes.c_int64 * (llvm_threads.POOL_STATE_BYTES // 8)).from_address(
                llvm_loader.pages(llvm_threads.POOL_STATE_BYTES)))
    _symbols["fg_pool_state"] = _pool_state.ctypes.data
    address = load_object(_object_code(llvm_threads.POOL_IR, counted=False))
    _pool = {name: address(name) for name in (
        "fg_pool_start", "fg_pool_run", "fg_pool_kernel", "fg_blas_callback", "fg_pool_gemm")}
    _symbols["fg_pool_kernel"] = _pool["fg_pool_kernel"]
    if _ENV is not None:  # LLVM's loader in use: it learns the new symbols
        _mcjit()


def start_pool():
    """Load the native pool (llvm_threads) and start its helper thread; True when it runs
    (kernels then split across two threads by being given two loop-range arrays, see
    `_call_wrapper`)."""
    with _lock:
        _load_pool()
    if _pool is None:
        return False
    ctypes.CFUNCTYPE(None)(_pool["fg_pool_start"])()
    return True


def _forget_pool():
    """In a fork's child: the helper threads did not come along; the next use starts new
    ones."""
    if _pool_state is None:
        return
    words = _pool_state.view(np.int32)
    for field in ("helpers", "busy", "sleeping"):
        words[llvm_threads.POOL_FIELDS[field] // 4] = 0


os.register_at_fork(after_in_child=_forget_pool)
_blas_on_pool = False


def blas_on_pool():
    """Give OpenBLAS's threaded parts to the native pool (its caller-managed threading
    callback), where BLAS has two threads, as the pool has: its own idle thread would
    otherwise spin on the second core beside the pool's helper. OpenBLAS splits each product
    as before, so results do not change. Process-wide and kept once made; True when in
    effect."""
    global _blas_on_pool
    if not _blas_on_pool and blas_threads() == 2 and _blas_set_callback is not None \
            and start_pool():
        _blas_set_callback(_pool["fg_blas_callback"])
        _blas_on_pool = True
    return _blas_on_pool


class Parallel:
    """Calls a kernel over [0, n) of its outermost loop in two halves, on two threads, with
    the Python helper thread (`_split`): where the native pool does not run (used where the
    work is large enough to repay the hand-off, see llvm_backend): `(*arrays)`."""

    __slots__ = ("fn", "low", "high")

    def __init__(self, fn, dims, n):
        self.fn = fn
        self.low = dims_array(dims, 0, n // 2)
        self.high = dims_array(dims, n // 2, n)

    def __call__(self, *args):
        _split(self.fn, (*args, self.high), (*args, self.low))


def parallel_matmul(a, b):
    """np.matmul(a, b) computed in two halves on two threads, each half one single-threaded
    BLAS call into its part of the result: the halves of the leading batch axis, else of
    the rows of `a`, else of the columns of `b` (every element is the same dot product, in
    the same order, as in one call). Operands as np.matmul takes them (at least 2-D)."""
    shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
    out = np.empty(shape, np.result_type(a, b))
    if a.ndim > 2 and a.shape[0] >= 2 and a.shape[:-2] == b.shape[:-2]:
        mid = a.shape[0] // 2
        halves = (a[:mid], b[:mid], out[:mid]), (a[mid:], b[mid:], out[mid:])
    elif a.shape[-2] >= 2:
        mid = a.shape[-2] // 2
        halves = ((a[..., :mid, :], b, out[..., :mid, :]),
                  (a[..., mid:, :], b, out[..., mid:, :]))
    elif b.shape[-1] >= 2:
        mid = b.shape[-1] // 2
        halves = ((a, b[..., :mid], out[..., :mid]), (a, b[..., mid:], out[..., mid:]))
    else:
        return np.matmul(a, b, out=out)
    _split(np.matmul, *halves[::-1])
    return out


def pool_products():
    """Whether pool_matmul can split batches of products here (the pool runs, and NumPy's BLAS
    is an OpenBLAS with 64-bit-integer cblas_sgemm/dgemm)."""
    with _lock:
        _load_pool()
    blas_threads_control()
    return _pool is not None and bool(_blas_gemm)


def pool_matmul(a, b):
    """np.matmul(a, b) of a batch of small matrices (attention's heads), half the batch on each
    of the native pool's two threads, each product the single BLAS call NumPy's matmul makes
    for it (`cblas_?gemm`, row-major, each operand read in place or transposed), so the result
    is NumPy's. Anything else (other dtypes or layouts, large matrices, which BLAS threads
    itself) is np.matmul."""
    plan = _gemm_plan(a, b)
    if plan is None:
        return np.matmul(a, b)
    offsets, head, shape = plan
    out = np.empty(shape, a.dtype)
    job = np.array(head + (offsets.ctypes.data, a.ctypes.data, b.ctypes.data, out.ctypes.data),
                   np.int64)
    _pool_gemm(job.ctypes.data)
    return out


_GEMM_PLANS: dict = {}
SMALL_GEMM = 1 << 18  # multiply-adds up to which OpenBLAS runs a product on the calling thread


def _gemm_plan(a, b):
    """(byte offsets of each product's operands, the job's fixed fields, the result's shape)
    for pool_matmul, or None where it is np.matmul's to do."""
    if type(a) is not np.ndarray or type(b) is not np.ndarray:
        return None
    key = (a.shape, a.strides, b.shape, b.strides, a.dtype, b.dtype)
    plan = _GEMM_PLANS.get(key, False)
    if plan is False:
        plan = _GEMM_PLANS[key] = _make_gemm_plan(a, b)
    if plan is not None and a.ctypes.data == b.ctypes.data:
        return None  # NumPy may make this a symmetric rank-k update
    return plan


def _make_gemm_plan(a, b):
    gemm = _blas_gemm.get(a.dtype)
    if (gemm is None or _pool is None or a.dtype != b.dtype or a.ndim < 3
            or a.ndim != b.ndim or a.shape[:-2] != b.shape[:-2]):
        return None
    (m, k), (k2, n) = a.shape[-2:], b.shape[-2:]
    batch = a.shape[:-2]
    if k != k2 or min(m, n, k) < 2 or m * n * k > SMALL_GEMM or math.prod(batch) < 2:
        return None
    size = a.itemsize
    layouts = [_blas_layout(x, size) for x in (a, b)]
    if None in layouts:
        return None
    (ta, lda), (tb, ldb) = layouts
    out_strides = np.empty(batch + (m, n), a.dtype).strides
    idx = np.indices(batch).reshape(len(batch), -1).T
    offsets = np.ascontiguousarray(np.stack(
        [idx @ np.array(x[:len(batch)], np.int64) for x in (a.strides, b.strides, out_strides)],
        axis=1), np.int64)
    head = (gemm, int(a.dtype == np.float64), ta, tb, m, n, k, lda, ldb, n, len(idx))
    return offsets, head, batch + (m, n)


_NO_TRANS, _TRANS = 111, 112  # CBLAS_TRANSPOSE


def _blas_layout(x, size):
    """(transpose, leading dimension) as NumPy's matmul passes matrix x (its last two axes) to
    BLAS: rows contiguous (not transposed), else columns contiguous (transposed); None
    otherwise."""
    (r, c), (sr, sc) = x.shape[-2:], x.strides[-2:]
    if sc == size and sr % size == 0 and sr // size >= c:
        return _NO_TRANS, sr // size
    if sr == size and sc % size == 0 and sc // size >= r:
        return _TRANS, sc // size
    return None


def _pool_gemm(job_address):
    global _pool_gemm
    _pool_gemm = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(_pool["fg_pool_gemm"])
    _pool_gemm(job_address)


class _PoolNumPy:
    """The NumPy namespace with `matmul` splitting batches of small products on the pool
    (pool_matmul): what the llvm backend gives dot_general's implementation for them."""

    matmul = staticmethod(pool_matmul)

    def __getattr__(self, name):
        return getattr(np, name)


pool_numpy = _PoolNumPy()


class _ThreadedNumPy:
    """The NumPy namespace with `matmul` split across two threads (parallel_matmul): what the
    llvm backend gives dot_general's implementation for large products."""

    matmul = staticmethod(parallel_matmul)

    def __getattr__(self, name):
        return getattr(np, name)


threaded_numpy = _ThreadedNumPy()


# ---------------------------------------------------------------------------------------------
# The BLAS library's own threads

def _find_blas_threads():
    """(get, set) of the OpenBLAS library NumPy uses, its process-wide thread count; None
    when NumPy's BLAS is not an OpenBLAS found in this process's mappings (Linux). Also finds
    its threading callback setter (`_blas_set_callback`) where it has one."""
    global _blas_set_callback
    try:
        with open("/proc/self/maps") as f:
            paths = {parts[-1] for parts in map(str.split, f)
                     if len(parts) == 6 and "openblas" in os.path.basename(parts[-1]).lower()}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("scipy_openblas", "64_"), ("scipy_openblas", ""),
                               ("openblas", "64_"), ("openblas", "")):
            get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
            put = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
            if get is not None and put is not None:
                get.restype, get.argtypes = ctypes.c_int, []
                put.restype, put.argtypes = None, [ctypes.c_int]
                setter = getattr(lib, f"{prefix}_set_threads_callback_function{suffix}", None)
                if setter is not None:
                    setter.restype, setter.argtypes = None, [ctypes.c_void_p]
                    _blas_set_callback = setter
                cblas = prefix.replace("openblas", "cblas")
                gemms = [getattr(lib, f"{cblas}_{t}gemm{suffix}", None) for t in "sd"]
                if suffix == "64_" and None not in gemms:  # 64-bit integer arguments
                    for dtype, fn in zip((np.float32, np.float64), gemms):
                        _blas_gemm[np.dtype(dtype)] = ctypes.cast(fn, ctypes.c_void_p).value
                return get, put
    return None


_blas = False  # not looked up yet
_blas_set_callback = None  # OpenBLAS's openblas_set_threads_callback_function, when it has one
_blas_gemm = {}  # dtype -> address of OpenBLAS's cblas_?gemm with 64-bit integers


def blas_threads_control():
    """(get, set) for the BLAS library's thread count, or None where it cannot be set."""
    global _blas
    if _blas is False:
        _blas = _find_blas_threads()
    return _blas


def blas_threads():
    """The BLAS library's thread count now, or None where it cannot be read."""
    control = blas_threads_control()
    return None if control is None else control[0]()
