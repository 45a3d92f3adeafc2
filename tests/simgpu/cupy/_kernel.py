"""cupy.RawKernel, simulated: the CUDA C++ source is compiled with g++ and run on the CPU.

The kernel is compiled as ordinary C++ after a shim header (`SHIM`) that defines CUDA's
qualifiers, the built-in `blockIdx/threadIdx/blockDim/gridDim`, and the device functions C++
lacks (`erfinv`, `rsqrt`, bit casts, atomics). A generated launcher runs the kernel once per
(block, thread), blocks and threads in order, so a grid-stride loop runs exactly the iterations
it would on a GPU and an indexing bug shows up as wrong or missing elements.

Arguments are checked as a GPU cannot: pointer parameters take C-contiguous device arrays whose
dtype matches the pointee type, value parameters take scalars of the size the kernel reads
(CuPy passes a Python float as a double and a Python int as a long long, whatever the kernel
declares). Launch configurations are checked against CUDA's limits.

Not simulated: threads run one after another to completion, so `__syncthreads()` is a no-op
and kernels that need a barrier (shared-memory reductions, warp shuffles) do not run faithfully;
dynamic shared memory (`extern __shared__`), `cuda_fp16.h` and other CUDA headers are absent;
math functions are glibc's (correctly rounded or nearly), not CUDA's (a few ulp), and nvcc's
FMA contraction does not happen.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import subprocess
import tempfile
import threading

import numpy as np

from ._core import PY_SCALARS, ndarray
from .cuda.compiler import CompileException
from .cuda.driver import CUDADriverError

CXX = os.environ.get("SIMGPU_CXX", "g++")
FLAGS = ("-O1", "-std=c++17", "-shared", "-fPIC", "-fno-fast-math")

SHIM = r"""
// funcgrad simgpu: CUDA C++ as CPU C++ (see tests/simgpu/cupy/_kernel.py)
#include <cmath>
#include <math.h>     // libstdc++'s: brings std's float overloads (and isfinite) to ::
#include <cstring>
#include <cstdint>
#include <cstddef>
#include <limits>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __restrict__ __restrict
#define __shared__ static
#define __constant__ static
#define __launch_bounds__(...)

struct uint3 { unsigned int x, y, z; };
struct dim3 {
    unsigned int x, y, z;
    dim3(unsigned int a = 1, unsigned int b = 1, unsigned int c = 1) : x(a), y(b), z(c) {}
};
static thread_local uint3 threadIdx, blockIdx;
static thread_local dim3 blockDim, gridDim;
static const int warpSize = 32;

static inline void __syncthreads() {}   // threads run one by one: barriers are not simulated
static inline void __threadfence() {}

template <typename To, typename From> static inline To _sim_bits(From v) {
    static_assert(sizeof(To) == sizeof(From), "bit cast of different sizes");
    To t; std::memcpy(&t, &v, sizeof t); return t;
}
static inline float __int_as_float(int v) { return _sim_bits<float>(v); }
static inline int __float_as_int(float v) { return _sim_bits<int>(v); }
static inline float __uint_as_float(unsigned int v) { return _sim_bits<float>(v); }
static inline unsigned int __float_as_uint(float v) { return _sim_bits<unsigned int>(v); }
static inline double __longlong_as_double(long long v) { return _sim_bits<double>(v); }
static inline long long __double_as_longlong(double v) { return _sim_bits<long long>(v); }

static inline double rsqrt(double x) { return 1.0 / sqrt(x); }
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline float rsqrt(float x) { return rsqrtf(x); }
// fast intrinsics: macros, as glibc's headers declare (unexported) functions of these names
#define __expf(x) expf(x)
#define __logf(x) logf(x)
#define __sinf(x) sinf(x)
#define __cosf(x) cosf(x)
#define __powf(x, y) powf(x, y)
static inline float __fdividef(float x, float y) { return x / y; }
static inline float __saturatef(float x) { return x != x ? 0.0f : fminf(fmaxf(x, 0.0f), 1.0f); }

// erfinv: an initial guess from M. Giles' single-precision approximation ("Approximating the
// erfinv function", GPU Computing Gems, 2011), then Halley steps: on erf(y) = |x| for
// |x| <= 0.5, and on log(erfc(y)) = log(1 - |x|) beyond (1 - |x| is exact there, and the log
// makes the tail nearly quadratic), so the result keeps full double precision up to +-1.
static inline double erfinv(double x) {
    if (!(x >= -1.0 && x <= 1.0)) return x != x ? x : std::numeric_limits<double>::quiet_NaN();
    if (x == 1.0 || x == -1.0) return x * std::numeric_limits<double>::infinity();
    if (x == 0.0) return x;
    const double a = fabs(x), c = 1.1283791670955126;  // 2 / sqrt(pi)
    double w = -log((1.0 - a) * (1.0 + a)), p;
    if (w < 5.0) {
        w -= 2.5;
        p = 2.81022636e-08;
        p = 3.43273939e-07 + p * w;   p = -3.5233877e-06 + p * w;
        p = -4.39150654e-06 + p * w;  p = 0.00021858087 + p * w;
        p = -0.00125372503 + p * w;   p = -0.00417768164 + p * w;
        p = 0.246640727 + p * w;      p = 1.50140941 + p * w;
    } else {
        w = sqrt(w) - 3.0;
        p = -0.000200214257;
        p = 0.000100950558 + p * w;   p = 0.00134934322 + p * w;
        p = -0.00367342844 + p * w;   p = 0.00573950773 + p * w;
        p = -0.0076224613 + p * w;    p = 0.00943887047 + p * w;
        p = 1.00167406 + p * w;       p = 2.83297682 + p * w;
    }
    double y = p * a;
    if (a <= 0.5) {
        for (int k = 0; k < 2; ++k) {   // f = erf(y) - a, f' = c exp(-y^2), f'' = -2y f'
            const double d = (erf(y) - a) / (c * exp(-y * y));
            y -= d / (1.0 + y * d);
        }
    } else {
        const double lq = log(1.0 - a);
        for (int k = 0; k < 4; ++k) {   // h = log(erfc(y)) - lq, h' = -r, h'' = r (2y - r)
            const double e = erfc(y), r = c * exp(-y * y) / e, d = (lq - log(e)) / r;
            y -= d / (1.0 + 0.5 * d * (2.0 * y - r));
        }
    }
    return copysign(y, x);
}
static inline float erfinvf(float x) { return (float)erfinv((double)x); }
static inline float erfinv(float x) { return erfinvf(x); }

// min/max as CUDA overloads them (floats: fmin/fmax, which ignore a NaN operand)
static inline float max(float a, float b) { return fmaxf(a, b); }
static inline float min(float a, float b) { return fminf(a, b); }
static inline double max(double a, double b) { return fmax(a, b); }
static inline double min(double a, double b) { return fmin(a, b); }
#define _SIM_MINMAX(T) \
    static inline T max(T a, T b) { return a > b ? a : b; } \
    static inline T min(T a, T b) { return a < b ? a : b; }
_SIM_MINMAX(int) _SIM_MINMAX(unsigned int) _SIM_MINMAX(long long) _SIM_MINMAX(unsigned long long)

// atomics: threads run one at a time, so a plain read-modify-write is atomic
#define _SIM_ATOMIC(NAME, T, EXPR) \
    static inline T NAME(T* p, T v) { T old = *p; *p = (EXPR); return old; }
#define _SIM_ATOMIC_ADD(T) _SIM_ATOMIC(atomicAdd, T, old + v) _SIM_ATOMIC(atomicExch, T, v)
#define _SIM_ATOMIC_INT(T) _SIM_ATOMIC_ADD(T) _SIM_ATOMIC(atomicSub, T, old - v) \
    _SIM_ATOMIC(atomicMax, T, old > v ? old : v) _SIM_ATOMIC(atomicMin, T, old < v ? old : v) \
    _SIM_ATOMIC(atomicAnd, T, old & v) _SIM_ATOMIC(atomicOr, T, old | v)
_SIM_ATOMIC_INT(int) _SIM_ATOMIC_INT(unsigned int) _SIM_ATOMIC_ADD(unsigned long long)
_SIM_ATOMIC_ADD(float) _SIM_ATOMIC_ADD(double)
_SIM_ATOMIC(atomicMax, long long, old > v ? old : v)
_SIM_ATOMIC(atomicMin, long long, old < v ? old : v)
template <typename T> static inline T atomicCAS(T* p, T cmp, T v) {
    T old = *p; if (old == cmp) *p = v; return old;
}
"""

# C types of kernel parameters -> the NumPy dtype of the same bytes (Linux: long is 64-bit)
C_TYPES = {
    "bool": "bool", "char": "int8", "signed char": "int8", "unsigned char": "uint8",
    "short": "int16", "short int": "int16", "unsigned short": "uint16", "int": "int32",
    "signed": "int32", "signed int": "int32", "unsigned": "uint32", "unsigned int": "uint32",
    "long": "int64", "long int": "int64", "unsigned long": "uint64", "long long": "int64",
    "long long int": "int64", "unsigned long long": "uint64", "size_t": "uint64",
    "ptrdiff_t": "int64", "float": "float32", "double": "float64", "int8_t": "int8",
    "int16_t": "int16", "int32_t": "int32", "int64_t": "int64", "uint8_t": "uint8",
    "uint16_t": "uint16", "uint32_t": "uint32", "uint64_t": "uint64",
}
C_NAMES = {"bool": "bool", "int8": "signed char", "uint8": "unsigned char", "int16": "short",
           "uint16": "unsigned short", "int32": "int", "uint32": "unsigned int",
           "int64": "long long", "uint64": "unsigned long long", "float32": "float",
           "float64": "double"}   # NumPy dtype -> the C type CuPy uses for it
_QUALIFIERS = re.compile(r"\b(const|volatile|__restrict__|__restrict|restrict)\b")


class Param:
    """One kernel parameter: its declared type (without qualifiers on the pointer), name, and
    whether it is a pointer; `dtype` is the NumPy dtype of the value or pointee (None: void)."""

    def __init__(self, text):
        m = re.fullmatch(r"(.*?)\s*\b([A-Za-z_]\w*)\s*", text, re.S)
        if m is None or not m.group(1):
            raise CompileException(f"cannot parse kernel parameter {text!r}")
        decl, self.name = m.group(1), m.group(2)
        self.pointer = "*" in decl
        if decl.count("*") > 1:
            raise CompileException(f"parameter {self.name}: pointers to pointers are not "
                                   "supported by the simulator")
        base = " ".join(_QUALIFIERS.sub(" ", decl.replace("*", " ")).split())
        self.ctype = base
        self.cast = decl.replace("__restrict__", "").replace("__restrict", "").strip()
        if base == "void" and self.pointer:
            self.dtype = None
        elif base in C_TYPES:
            self.dtype = np.dtype(C_TYPES[base])
        else:
            raise CompileException(f"parameter {self.name}: type {base!r} is not supported by "
                                   "the simulator")

    def __repr__(self):
        return f"{self.ctype}{'*' if self.pointer else ''} {self.name}"


def parse_signature(code, name):
    """The parameters of `extern "C" __global__ void name(...)` in `code`."""
    code_nc = re.sub(r"//[^\n]*|/\*.*?\*/", " ", code, flags=re.S)
    m = re.search(r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?'
                  + re.escape(name) + r"\s*\(([^)]*)\)", code_nc)
    if m is None:
        raise CUDADriverError(f"CUDA_ERROR_NOT_FOUND: named symbol not found: no "
                              f'extern "C" __global__ void {name}(...) in the source')
    body = m.group(1).strip()
    if body in ("", "void"):
        return []
    return [Param(p) for p in body.split(",")]


def launcher(name, params):
    """C++ of `_sim_launch`: every block, every thread, in order, each calling the kernel."""
    args = ", ".join(f"*({p.cast}*)args[{i}]" for i, p in enumerate(params))
    return f"""
extern "C" void _sim_launch(unsigned gx, unsigned gy, unsigned gz,
                            unsigned bx, unsigned by, unsigned bz, void** args) {{
    gridDim = dim3(gx, gy, gz);
    blockDim = dim3(bx, by, bz);
    for (unsigned k = 0; k < gz; ++k) for (unsigned j = 0; j < gy; ++j)
    for (unsigned i = 0; i < gx; ++i) {{
        blockIdx = uint3{{i, j, k}};
        for (unsigned z = 0; z < bz; ++z) for (unsigned y = 0; y < by; ++y)
        for (unsigned x = 0; x < bx; ++x) {{
            threadIdx = uint3{{x, y, z}};
            {name}({args});
        }}
    }}
}}
"""


def cache_dir():
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    path = os.path.join(tempfile.gettempdir(), f"funcgrad-simgpu-{uid}")
    os.makedirs(path, exist_ok=True)
    return path


_libraries: dict = {}   # hash -> ctypes.CDLL, shared by every RawKernel with the same build
_lock = threading.Lock()


_LAUNCH_ARGS = [ctypes.c_uint] * 6 + [ctypes.POINTER(ctypes.c_void_p)]


def build(source, flags, entry="_sim_launch", argtypes=_LAUNCH_ARGS):
    """The loaded shared library compiled from `source` (cached on disk and in memory), with
    its entry point `entry` taking `argtypes`."""
    key = hashlib.sha256("\0".join((CXX, *flags, source)).encode()).hexdigest()[:32]
    with _lock:
        lib = _libraries.get(key)
        if lib is not None:
            return lib
        so = os.path.join(cache_dir(), f"k{key}.so")
        if not os.path.exists(so):
            tag = f"{os.getpid()}-{threading.get_ident()}"
            src, tmp = os.path.join(cache_dir(), f"k{key}-{tag}.cpp"), f"{so}.{tag}.tmp"
            with open(src, "w") as f:
                f.write(source)
            try:
                proc = subprocess.run([CXX, *flags, "-o", tmp, src, "-lm"], capture_output=True,
                                      text=True, timeout=300)
                if proc.returncode != 0:
                    raise CompileException(proc.stderr.strip() or proc.stdout.strip())
                os.replace(tmp, so)   # atomic: parallel test processes share the cache
            finally:
                for path in (src, tmp):
                    if os.path.exists(path):
                        os.remove(path)
        lib = _libraries[key] = ctypes.CDLL(so)
        getattr(lib, entry).argtypes = argtypes
        getattr(lib, entry).restype = None
        return lib


def _dims(d, what):
    dims = (d,) if isinstance(d, (int, np.integer)) else tuple(d)
    if not 1 <= len(dims) <= 3:
        raise ValueError(f"{what} must be an int or a tuple of 1 to 3 ints, got {d!r}")
    return tuple(int(v) for v in dims) + (1,) * (3 - len(dims))


def check_launch(grid, block, shared_mem):
    """CUDA's launch limits: what a real launch would refuse with an error."""
    if min(grid + block) < 1:
        raise CUDADriverError(f"CUDA_ERROR_INVALID_VALUE: invalid argument (grid {grid}, "
                              f"block {block}: every dimension must be >= 1)")
    if block[0] > 1024 or block[1] > 1024 or block[2] > 64 or \
            block[0] * block[1] * block[2] > 1024:
        raise CUDADriverError(f"CUDA_ERROR_INVALID_VALUE: invalid argument (block {block}: at "
                              "most 1024 threads, x and y <= 1024, z <= 64)")
    if grid[0] > 2**31 - 1 or grid[1] > 65535 or grid[2] > 65535:
        raise CUDADriverError(f"CUDA_ERROR_INVALID_VALUE: invalid argument (grid {grid}: x < "
                              "2**31, y and z < 65536)")
    if shared_mem > 48 << 10:
        raise CUDADriverError(f"CUDA_ERROR_INVALID_VALUE: invalid argument ({shared_mem} bytes "
                              "of dynamic shared memory; the default limit is 48 KiB)")


def _as_passed(value):
    """The dtype CuPy gives a scalar kernel argument (it does not know the parameter types)."""
    if type(value) is bool:
        return np.dtype(np.bool_)
    if type(value) is int:
        return np.dtype(np.uint64 if value >= 2**63 else np.int64)
    if type(value) is float:
        return np.dtype(np.float64)
    if type(value) is complex:
        return np.dtype(np.complex128)
    return value.dtype


def marshal(i, param, value):
    """The ctypes object holding argument `i` as the kernel reads it, or a clear error."""
    where = f"argument {i} ({param!r})"
    if param.pointer:
        if not isinstance(value, ndarray):
            raise TypeError(f"{where} is a pointer: it takes a cupy.ndarray, got {type(value)}")
        if not value.flags.c_contiguous:
            raise ValueError(f"{where}: the array is not C-contiguous (shape {value.shape}, "
                             f"strides {value.strides}); the kernel would read the wrong "
                             "elements. Pass cupy.ascontiguousarray(x).")
        want = param.dtype
        if want is not None and value.dtype != want and not (
                value.dtype.itemsize == want.itemsize and value.dtype.kind in "biu"
                and want.kind in "biu"):
            raise TypeError(f"{where}: got a {value.dtype} array, but the kernel reads "
                            f"{param.ctype} ({want.itemsize} bytes each): a GPU would read "
                            "garbage")
        return ctypes.c_void_p(value.data.ptr)
    if isinstance(value, ndarray):
        raise TypeError(f"{where} is a value parameter, got a cupy.ndarray (CuPy would pass "
                        "its pointer)")
    if not (type(value) in PY_SCALARS or isinstance(value, np.generic)):
        raise TypeError(f"Unsupported type {type(value)} for {where}")
    passed, want = _as_passed(value), param.dtype
    if passed != want:
        ints = passed.kind in "iu" and want.kind in "iu"
        if not ints or passed.itemsize < want.itemsize:
            raise TypeError(
                f"{where}: CuPy passes this {type(value).__name__} as {passed} "
                f"({passed.itemsize} bytes) but the kernel reads {param.ctype} "
                f"({want.itemsize} bytes): a GPU would reinterpret the bytes. Pass "
                f"numpy.{want}(value).")
        info = np.iinfo(want)
        if not info.min <= int(value) <= info.max:
            raise OverflowError(f"{where}: {value} does not fit in {param.ctype}; a GPU would "
                                "read its low bytes only")
    return np.ctypeslib.as_ctypes_type(want)(np.asarray(value).astype(want).item())


class RawKernel:
    """cupy.RawKernel(code, name): a CUDA kernel from source, run on the CPU (module doc)."""

    def __init__(self, code, name, options=(), backend="nvrtc", translate_cucomplex=False,
                 *, enable_cooperative_groups=False, jitify=False):
        self.code = code
        self.name = name
        self.options = tuple(options)
        self.backend = backend
        self._lib = None
        self._params = None

    max_threads_per_block = 1024
    num_regs = 32
    shared_size_bytes = 0

    @property
    def attributes(self):
        return {"max_threads_per_block": 1024, "shared_size_bytes": 0, "num_regs": 32,
                "max_dynamic_shared_size_bytes": 48 << 10}

    @property
    def params(self):
        if self._params is None:
            self._params = parse_signature(self.code, self.name)
        return self._params

    def compile(self, log_stream=None):
        """Compile now (the first call compiles otherwise); raises CompileException."""
        if self._lib is None:
            defines = tuple(o for o in self.options if o.startswith("-D"))
            source = (SHIM + f'\n#line 1 "{self.name}.cu"\n' + self.code + "\n"
                      + launcher(self.name, self.params))
            self._lib = build(source, FLAGS + defines)
        return self

    def __call__(self, grid, block, args, *, shared_mem=0, stream=None,
                 enable_cooperative_groups=False):
        grid, block = _dims(grid, "grid"), _dims(block, "block")
        check_launch(grid, block, shared_mem)
        params = self.params
        if not isinstance(args, (tuple, list)):
            raise TypeError(f"args must be a tuple, got {type(args)}")
        if len(args) != len(params):
            raise TypeError(f"kernel {self.name} takes {len(params)} arguments "
                            f"({', '.join(map(repr, params))}), got {len(args)}")
        values = [marshal(i, p, a) for i, (p, a) in enumerate(zip(params, args))]
        ptrs = (ctypes.c_void_p * max(len(values), 1))(
            *[ctypes.cast(ctypes.pointer(v), ctypes.c_void_p) for v in values])
        self.compile()._lib._sim_launch(*grid, *block, ptrs)

    def __repr__(self):
        return f"<RawKernel {self.name} (simulated)>"
