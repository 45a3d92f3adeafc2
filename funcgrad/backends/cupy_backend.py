"""The CuPy backend: the shared interpreter on the GPU, and jit's fused CUDA kernels.

The parts:

* `CupyNamespace`: CuPy's module as the `xp` of every primitive's implementation, with overrides
  only where CuPy differs from NumPy (scatter through `cupyx`, argsort's `kind`). Eager calls and
  `eval_jaxpr` on CuPy arrays use it (registered by `funcgrad.devices`).
* `fused_kernel_source(body, name)`: the CUDA C++ source of one `extern "C" __global__` kernel
  computing a fusion group (an all-elementwise program, see `funcgrad.transforms.passes.fuse`) in
  one pass: one thread per element, every intermediate in registers. Pure string generation, so
  it is tested (and compiled with `nvcc`) on machines without a GPU.
* `fused_reduction_source(body, reduction)`: a fusion group and the reduction it feeds as the
  parts of one `cupy.ReductionKernel` (the group is a `__device__` function in the preamble).
* `compile_jaxpr(jaxpr, xp, donated)`: jit's code generator for CuPy. The program is fused (with
  broadcast operands read in place); each fused group becomes one `cupy.RawKernel`, or with the
  reduction it alone feeds one `cupy.ReductionKernel` (compiled once, cached by source); every
  other equation calls its implementation with CuPy (matmuls go to cuBLAS via `cupy.matmul`).
  The printable source (`fg.jit(f).lower(x).as_text()`) is the Python driver followed by the
  CUDA source of each kernel. A kernel that fails to compile raises `KernelCompileError` showing
  the generated source and the compiler's message.

Host constants a traced function captured (NumPy arrays in the program) are copied to the device
on the first call of the compiled program and kept with it.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math

import numpy as np

from ..core import Literal
from . import numpy_backend
from .numpy_backend import eqn_names, param_names

__all__ = ["CupyNamespace", "KernelSource", "ReductionSource", "KernelCompileError",
           "fused_kernel_source", "fused_reduction_source", "broadcast_index", "compile_jaxpr",
           "UnsupportedInKernel", "CUDA_TYPES"]


# ---------------------------------------------------------------------------------------------
# The namespace

class CupyNamespace:
    """CuPy's module, with funcgrad's few overrides; every other name is CuPy's own."""

    def __init__(self, cupy):
        self._cupy = cupy
        self.__name__ = "cupy"

    def __getattr__(self, name):
        return getattr(self._cupy, name)

    def __repr__(self):
        return "CupyNamespace(cupy)"

    def argsort(self, x, axis=-1, kind=None):
        # CuPy's argsort is a stable (radix/merge) sort whatever `kind` says.
        return self._cupy.argsort(x, axis=axis)

    def astype(self, x, dtype, copy=True):
        return x.astype(dtype, copy=copy)

    def index_accumulate(self, mode, out, cols, updates):
        """Scatter into `out` (already a copy) at index arrays `cols`: "set" or a ufunc name."""
        import cupyx
        cp = self._cupy
        if mode == "set":
            out[cols] = updates  # duplicates: one of them wins (as JAX on GPUs)
            return out
        fn = {"add": cupyx.scatter_add, "maximum": cupyx.scatter_max,
              "minimum": cupyx.scatter_min}.get(mode)
        if fn is not None and out.dtype.name in _CUPYX_SCATTER_DTYPES:
            fn(out, cols, updates)
            return out
        ufunc_at = getattr(getattr(cp, mode, None), "at", None)
        if ufunc_at is not None:  # CuPy >= 13
            ufunc_at(out, cols, updates)
            return out
        # int64 (and other) scatters older CuPy cannot do on the device: done on the host
        host = out.get()
        getattr(np, mode).at(host, tuple(c.get() if hasattr(c, "get") else c for c in cols),
                             updates.get() if hasattr(updates, "get") else updates)
        return cp.asarray(host)


_CUPYX_SCATTER_DTYPES = {"float16", "float32", "float64", "int32", "uint32", "uint64"}


# ---------------------------------------------------------------------------------------------
# CUDA source generation for fusion groups

CUDA_TYPES = {
    "bool": "bool", "int8": "signed char", "int16": "short", "int32": "int",
    "int64": "long long", "uint8": "unsigned char", "uint16": "unsigned short",
    "uint32": "unsigned int", "uint64": "unsigned long long", "float32": "float",
    "float64": "double",
}
_UNSIGNED = {"int8": "unsigned char", "int16": "unsigned short", "int32": "unsigned int",
             "int64": "unsigned long long"}


class UnsupportedInKernel(NotImplementedError):
    """An equation (or dtype) the CUDA generator does not translate: the group stays unfused."""


class KernelSource:
    """One generated kernel: its name, CUDA source, and how to call it.

    inputs: (name, dtype, is_scalar) per array argument, in order; outputs: (name, dtype).
    The kernel's parameters are the inputs, then the outputs, then `long long n`.
    """

    def __init__(self, name, source, inputs, outputs):
        self.name = name
        self.source = source
        self.inputs = inputs
        self.outputs = outputs

    def __str__(self):
        return self.source


def _ctype(dtype):
    name = np.dtype(dtype).name
    t = CUDA_TYPES.get(name)
    if t is None:
        raise UnsupportedInKernel(f"dtype {name} has no CUDA kernel translation")
    return t


def _literal(value, dtype):
    dtype = np.dtype(dtype)
    v = np.asarray(value, dtype).item()
    if dtype.kind == "b":
        return "true" if v else "false"
    if dtype.kind in "iu":
        suffix = "ULL" if dtype.kind == "u" else "LL"
        if dtype.kind == "i" and v == np.iinfo(np.int64).min:
            return "(-9223372036854775807LL - 1)"
        return f"(({_ctype(dtype)}){v}{suffix})"
    if dtype.kind == "f":
        f32 = dtype.itemsize == 4
        if math.isnan(v):
            return "__int_as_float(0x7fc00000)" if f32 else \
                "__longlong_as_double(0x7ff8000000000000LL)"
        if math.isinf(v):
            bits = ("0x7f800000", "0xff800000") if f32 else ("0x7ff0000000000000LL",
                                                              "0xfff0000000000000LL")
            fn = "__int_as_float" if f32 else "__longlong_as_double"
            return f"{fn}({bits[v < 0]})"
        text = repr(float(v))
        if "e" not in text and "." not in text:
            text += ".0"
        return f"{text}f" if f32 else text
    raise UnsupportedInKernel(f"literal of dtype {dtype}")


# Unary math: CUDA name (the float32 version adds "f": expf, log1pf, ...).
_MATH1 = {"exp": "exp", "exp2": "exp2", "log": "log", "log1p": "log1p", "expm1": "expm1",
          "sin": "sin", "cos": "cos", "tan": "tan", "asin": "asin", "acos": "acos",
          "atan": "atan", "sinh": "sinh", "cosh": "cosh", "tanh": "tanh", "asinh": "asinh",
          "acosh": "acosh", "atanh": "atanh", "sqrt": "sqrt", "cbrt": "cbrt", "floor": "floor",
          "ceil": "ceil", "round": "rint", "erf": "erf", "erf_inv": "erfinv"}
_MATH2 = {"pow": "pow", "atan2": "atan2", "nextafter": "nextafter", "rem": "fmod"}
_CMP = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
_ARITH = {"add": "+", "sub": "-", "mul": "*"}


def _fn(name, dtype):
    return name + ("f" if np.dtype(dtype) == np.float32 else "")


def _expr(eqn, args, in_dtypes, out_dtype):
    """The C expression computing one elementwise equation from argument expressions `args`."""
    name = eqn.primitive.name
    out = np.dtype(out_dtype)
    t = _ctype(out)
    kind = np.dtype(in_dtypes[0]).kind if in_dtypes else out.kind
    a = args[0] if args else None
    b = args[1] if len(args) > 1 else None
    if name in _MATH1 and kind == "f":
        return f"{_fn(_MATH1[name], out)}({a})"
    if name in _MATH2 and kind == "f":
        return f"{_fn(_MATH2[name], out)}({a}, {b})"
    if name in _ARITH:
        return f"(({t})({a} {_ARITH[name]} {b}))"
    if name in _CMP:
        return f"({a} {_CMP[name]} {b})"
    if name == "neg":
        return f"(({t})(-{a}))"
    if name == "stop_gradient":
        return a
    if name == "abs":
        return f"{_fn('fabs', out)}({a})" if kind == "f" else f"(({t})({a} < 0 ? -{a} : {a}))"
    if name == "sign":
        s = f"(({t})(({a} > 0) - ({a} < 0)))"
        return f"({a} != {a} ? {a} : {s})" if kind == "f" else s
    if name == "is_finite":
        return f"isfinite({a})"
    if name == "rsqrt":
        return f"(({t})1 / {_fn('sqrt', out)}({a}))"
    if name == "logistic":
        e = f"{_fn('exp', out)}(-{_fn('fabs', out)}({a}))"
        return f"({a} >= 0 ? ({t})1 / (({t})1 + {e}) : {e} / (({t})1 + {e}))"
    if name == "div":
        if kind == "f":
            return f"({a} / {b})"
        return f"(({t})({b} == 0 ? 0 : {a} / {b}))"  # C truncates toward zero, as lax.div
    if name == "rem" and kind in "iu":
        return f"(({t})({b} == 0 ? 0 : {a} % {b}))"
    if name in ("max", "min"):
        op = ">" if name == "max" else "<"
        if kind == "f":  # NaN wins, as NumPy's maximum/minimum
            return f"(({a} {op} {b} || {a} != {a}) ? {a} : {b})"
        return f"({a} {op} {b} ? {a} : {b})"
    if name in ("and", "or", "xor"):
        if kind == "b":
            return f"({a} {({'and': '&&', 'or': '||', 'xor': '!='})[name]} {b})"
        return f"(({t})({a} {({'and': '&', 'or': '|', 'xor': '^'})[name]} {b}))"
    if name == "not":
        return f"(!{a})" if kind == "b" else f"(({t})(~{a}))"
    if name.startswith("shift_"):
        bits = np.dtype(in_dtypes[0]).itemsize * 8
        big = f"({b} >= {bits} || {b} < 0)"
        if name == "shift_left":
            return f"({big} ? ({t})0 : ({t})({a} << {b}))"
        if name == "shift_right_arithmetic" or kind == "u":
            fill = f"({t})({a} < 0 ? -1 : 0)" if kind == "i" else f"({t})0"
            return f"({big} ? {fill} : ({t})({a} >> {b}))"
        u = _UNSIGNED[np.dtype(in_dtypes[0]).name]
        return f"({big} ? ({t})0 : ({t})(({u}){a} >> {b}))"
    if name == "integer_pow":
        y = eqn.params["y"]
        n = abs(y)
        if n == 0:
            p = f"(({t})1)"
        else:
            p = "(" + " * ".join([a] * n) + ")" if n <= 8 else f"{_fn('pow', out)}({a}, {n})"
        if kind in "iu" and n > 8:
            raise UnsupportedInKernel("integer_pow of an integer with exponent > 8")
        return f"(({t})1 / {p})" if y < 0 else f"(({t}){p})"
    if name == "select_n":
        pred, cases = args[0], args[1:]
        if len(cases) == 1:
            return cases[0]
        if np.dtype(in_dtypes[0]).kind == "b":
            return f"({pred} ? {cases[1]} : {cases[0]})"
        expr = cases[-1]
        for i in range(len(cases) - 2, -1, -1):
            expr = f"({pred} == {i} ? {cases[i]} : {expr})"
        return expr
    if name == "convert_element_type":
        if out.kind == "b":
            return f"({a} != 0)"
        return f"(({t}){a})"
    raise UnsupportedInKernel(f"no CUDA translation for {name} on {np.dtype(in_dtypes[0])}")


def _chain_lines(jaxpr, names, indent="        "):
    """The C statements computing a fusion group's equations, one `const T v<n> = ...;` each,
    from the inputs already named in `names`; returns (lines, arg) where `arg(v)` is the C
    expression of a variable or literal."""
    counter = itertools.count()

    def arg(a):
        if type(a) is Literal:
            return _literal(a.val, a.aval.dtype)
        return names[a]

    lines = []
    for eqn in jaxpr.eqns:
        if len(eqn.outvars) != 1:
            raise UnsupportedInKernel(f"{eqn.primitive.name} has several results")
        out = eqn.outvars[0]
        expr = _expr(eqn, [arg(a) for a in eqn.invars], [a.aval.dtype for a in eqn.invars],
                     out.aval.dtype)
        names[out] = f"v{next(counter)}"
        lines.append(f"{indent}const {_ctype(out.aval.dtype)} {names[out]} = {expr};"
                     f"  // {eqn.primitive.name}")
    return lines, arg


def _group_jaxpr(body):
    jaxpr = getattr(body, "jaxpr", body)
    if getattr(body, "consts", None):
        raise UnsupportedInKernel("a fused body with constants")
    return jaxpr


def fused_kernel_source(body, name="fused_kernel"):
    """CUDA source of one kernel computing the all-elementwise program `body` in one pass.

    `body`: a Jaxpr (or ClosedJaxpr without consts) whose equations are elementwise and whose
    inputs have the output shape or broadcast to it (a fusion group, `passes.fuse`'s `fused`
    body). Full-shape inputs are read at the thread's element, rank-0 inputs at [0], other
    broadcast inputs (a bias row, a keepdims column) at the element's broadcast index; literals
    and shapes are written into the code. Raises UnsupportedInKernel for what it cannot
    translate.
    """
    jaxpr = _group_jaxpr(body)
    shape = tuple(jaxpr.outvars[0].aval.shape) if jaxpr.outvars else ()
    names = {}
    inputs, params, lines = [], [], []
    for k, v in enumerate(jaxpr.invars):
        names[v] = f"x{k}"
        scalar = v.aval.ndim == 0
        inputs.append((f"in{k}", v.aval.dtype, scalar))
        params.append(f"const {_ctype(v.aval.dtype)}* __restrict__ in{k}")
        at = broadcast_index(tuple(v.aval.shape), shape)
        lines.append(f"        const {_ctype(v.aval.dtype)} x{k} = in{k}[{at}];")
    chain, arg = _chain_lines(jaxpr, names)
    lines += chain
    outputs = []
    for k, v in enumerate(jaxpr.outvars):
        dt = v.aval.dtype
        outputs.append((f"out{k}", dt))
        params.append(f"{_ctype(dt)}* __restrict__ out{k}")
        lines.append(f"        out{k}[i] = {arg(v)};")
    params.append("long long n")
    sig = ",\n    ".join(params)
    source = (f'extern "C" __global__ void {name}(\n    {sig})\n{{\n'
              "    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;\n"
              "         i += (long long)blockDim.x * gridDim.x) {\n"
              + "\n".join(lines) + "\n    }\n}\n")
    return KernelSource(name, source, inputs, outputs)


def broadcast_index(in_shape, out_shape, i="i"):
    """The C expression of the flat (C-order) index into an input of shape `in_shape` that
    broadcasts NumPy-style to `out_shape`, for the output's flat element `i`."""
    if in_shape == out_shape:
        return i
    if math.prod(in_shape) == 1:
        return "0"
    padded = (1,) * (len(out_shape) - len(in_shape)) + in_shape
    terms = []
    for d, (s, n) in enumerate(zip(padded, out_shape)):
        if s == 1:
            continue
        out_stride = math.prod(out_shape[d + 1:])
        in_stride = math.prod(padded[d + 1:])
        coord = i if out_stride == 1 else f"({i} / {out_stride}LL)"
        if d > 0:
            coord = f"({coord} % {n}LL)"
        terms.append(coord if in_stride == 1 else f"{coord} * {in_stride}LL")
    return " + ".join(terms)


# Reductions a fusion group can feed inside one kernel: (reduce_expr, identity of the kind).
_REDUCTIONS = {"reduce_sum": "sum", "reduce_max": "max", "reduce_min": "min"}


@dataclasses.dataclass(frozen=True)
class ReductionSource:
    """A fusion group and the reduction it feeds, as the parts of one `cupy.ReductionKernel`.

    The group becomes a `__device__` function (the preamble) that the kernel maps over the
    elements; the mapped values are reduced in registers and shared memory, so the group's
    full-size result is never written to memory. `source` is the printable CUDA text.
    """

    name: str
    preamble: str
    in_params: str
    out_params: str
    map_expr: str
    reduce_expr: str
    post_map_expr: str
    identity: str
    reduce_type: str
    out_dtype: np.dtype

    @property
    def source(self):
        return (f"{self.preamble}"
                f"// cupy.ReductionKernel {self.name}: in ({self.in_params}) -> "
                f"out ({self.out_params})\n"
                f"//   map: {self.map_expr}; reduce: a = {self.reduce_expr}; "
                f"identity {self.identity}; {self.post_map_expr} ({self.reduce_type} a)\n")

    def check_source(self):
        """A stand-alone CUDA kernel using every part (preamble, map, reduce, post-map), for
        compile checks with nvcc where CuPy's own reduction template is not at hand."""
        ins = [p.split() for p in self.in_params.split(", ")]
        t = self.reduce_type
        out_t = CUDA_TYPES[self.out_dtype.name]
        params = ", ".join(f"const {CUDA_TYPES[d]}* {n}_ptr" for d, n in ins)
        loads = " ".join(f"const {CUDA_TYPES[d]} {n} = {n}_ptr[j];" for d, n in ins)
        return (f"{self.preamble}"
                f'extern "C" __global__ void {self.name}_check({params}, {out_t}* out0_ptr, '
                "long long n) {\n"
                f"    {t} a = ({t})({self.identity});\n"
                f"    for (long long j = 0; j < n; ++j) {{ {loads} const {t} b = ({t})"
                f"({self.map_expr}); a = ({self.reduce_expr}); }}\n"
                f"    {out_t} out0; {self.post_map_expr}; out0_ptr[0] = out0;\n}}\n")

    def __str__(self):
        return self.source


def fused_reduction_source(body, reduction, name="fused_reduction"):
    """The ReductionSource computing `reduction` ("reduce_sum", "reduce_max" or "reduce_min")
    of the single output of fusion group `body` without storing it. Float sums accumulate in
    the output's type, as JAX's GPU reductions do; max/min propagate NaN, as NumPy's do."""
    jaxpr = _group_jaxpr(body)
    if len(jaxpr.outvars) != 1:
        raise UnsupportedInKernel("a fusion group with several outputs feeding a reduction")
    out = jaxpr.outvars[0]
    dtype = np.dtype(out.aval.dtype)
    if dtype.kind not in "iuf":
        raise UnsupportedInKernel(f"{reduction} of {dtype.name} in a fused reduction")
    t = _ctype(dtype)
    names = {v: f"x{k}" for k, v in enumerate(jaxpr.invars)}
    lines, arg = _chain_lines(jaxpr, names, indent="    ")
    fn = f"{name}_map"
    params = ", ".join(f"const {_ctype(v.aval.dtype)} x{k}" for k, v in enumerate(jaxpr.invars))
    preamble = (f"__device__ __forceinline__ {t} {fn}({params}) {{\n"
                + "".join(line + "\n" for line in lines) + f"    return {arg(out)};\n}}\n")
    in_params = ", ".join(f"{np.dtype(v.aval.dtype).name} in{k}"
                          for k, v in enumerate(jaxpr.invars))
    map_expr = f"{fn}({', '.join(f'in{k}' for k in range(len(jaxpr.invars)))})"
    kind = _REDUCTIONS[reduction]
    if kind == "sum":
        reduce_expr, identity = "a + b", _literal(0, dtype)
    else:
        op = ">" if kind == "max" else "<"
        nan = " || a != a" if dtype.kind == "f" else ""
        reduce_expr = f"(a {op} b{nan}) ? a : b"
        if dtype.kind == "f":
            identity = _literal(-np.inf if kind == "max" else np.inf, dtype)
        else:
            info = np.iinfo(dtype)
            identity = _literal(info.min if kind == "max" else info.max, dtype)
    return ReductionSource(name, preamble, in_params, f"{dtype.name} out0", map_expr,
                           reduce_expr, "out0 = a", identity, t, np.dtype(dtype))


# ---------------------------------------------------------------------------------------------
# Compiling and launching kernels

class KernelCompileError(RuntimeError):
    """A generated kernel did not compile: the message holds the source and the compiler's."""


def compile_error(kernel, message):
    numbered = "\n".join(f"{i + 1:4d}  {line}" for i, line in
                         enumerate(kernel.source.splitlines()))
    return KernelCompileError(
        f"funcgrad could not compile generated CUDA kernel {kernel.name}.\n"
        f"Compiler message:\n{message}\n"
        f"Generated source:\n{numbered}\n"
        "This is a bug in funcgrad's CUDA code generator: please report it with this message. "
        "Meanwhile fg.jit(f, backend='gpu') is unaffected for programs without this kernel, and "
        "eager (un-jitted) calls run without fused kernels.")


_raw_kernels: dict = {}   # source -> cupy.RawKernel, shared by every program that generates it

# No fused multiply-add contraction: each arithmetic operation of a fused chain rounds as it does
# when CuPy runs it alone, so jit and eager calls (and debug_nans' op-by-op re-run) differ only
# where a primitive's kernel formula differs from its CuPy implementation.
KERNEL_OPTIONS = ("--fmad=false",)


class _Launcher:
    """Calls one fused kernel: allocates its outputs and launches one thread per element."""

    def __init__(self, cupy, kernel, shape):
        self.cupy = cupy
        self.kernel = kernel
        self.shape = tuple(shape)
        self.size = math.prod(self.shape)
        self.out_dtypes = [np.dtype(dt) for _, dt in kernel.outputs]
        raw = _raw_kernels.get(kernel.source)
        if raw is None:
            raw = cupy.RawKernel(kernel.source, kernel.name, options=KERNEL_OPTIONS)
            try:
                raw.compile()
            except Exception as e:  # cupy.cuda.compiler.CompileException and friends
                raise compile_error(kernel, str(e)) from None
            _raw_kernels[kernel.source] = raw
        self.raw = raw

    def __call__(self, *args):
        cp = self.cupy
        ins = [cp.ascontiguousarray(a) for a in args]
        outs = [cp.empty(self.shape, dt) for dt in self.out_dtypes]
        if self.size:
            block = 256
            grid = min((self.size + block - 1) // block, 65535 * 8)
            self.raw((grid,), (block,), (*ins, *outs, np.int64(self.size)))
        return outs


class _Reducer:
    """Calls one fused reduction: a `cupy.ReductionKernel` mapping the group over the elements
    and reducing over `axes` (inputs of rank 0 broadcast)."""

    def __init__(self, cupy, kernel, axes):
        self.axes = tuple(axes)
        raw = _raw_kernels.get(kernel.source)
        if raw is None:
            raw = _raw_kernels[kernel.source] = cupy.ReductionKernel(
                kernel.in_params, kernel.out_params, kernel.map_expr, kernel.reduce_expr,
                kernel.post_map_expr, kernel.identity, name=kernel.name,
                reduce_type=kernel.reduce_type, preamble=kernel.preamble,
                options=KERNEL_OPTIONS)
        self.kernel = kernel
        self.raw = raw

    def __call__(self, *args):
        try:
            return self.raw(*args, axis=self.axes)
        except Exception as e:
            if "compil" in type(e).__name__.lower() or "compil" in str(e).lower()[:200]:
                raise compile_error(self.kernel, str(e)) from None
            raise


# ---------------------------------------------------------------------------------------------
# jit's code generator for CuPy

class Compiled(numpy_backend.Compiled):
    """The program's entry `fn` (which moves host values, then calls the generated driver),
    the kernels and the printable source; `eqn_lines` maps lines of the generated `driver` to
    equations, for error messages."""

    def __init__(self, fn, source, kernels, eqn_lines, driver):
        super().__init__(fn, source, eqn_lines)
        self.kernels = kernels
        self.code = driver.__code__


def _kernel_name(body_eqns, k, prefix="fused"):
    names = [e.primitive.name for e in body_eqns][:4]
    return f"{prefix}{k}_" + "_".join(names)


def generate(jaxpr, cupy=None):
    """(python_source, namespace_entries, kernels, number of constants, {source line: eqn}) of
    jit's driver for a program on CuPy.

    Without `cupy` (no GPU) the kernels are generated but not compiled: this is what the
    source tests use.
    """
    from ..transforms.passes import fuse
    closed = fuse(jaxpr, broadcast_inputs=True)
    fused = closed.jaxpr if hasattr(closed, "jaxpr") else closed
    names = {}
    counter = itertools.count()
    namespace = {}
    lines, kernels = [], []
    params = param_names(fused, names)

    def name_of(a):
        if type(a) is Literal:
            key = f"lit{next(counter)}"
            namespace[key] = np.asarray(a.val, a.aval.dtype)  # moved on first use, see run
            return key
        return names[a]

    eqn_lines = {}   # line of the generated source (1-based) -> the equation it runs
    reductions = _fused_reductions(fused)  # fused eqn index -> (reduction's index, its kernel)
    folded = {r for r, _ in reductions.values()}
    frees = fused.frees()
    for k, (eqn, dead) in enumerate(zip(fused.eqns, frees)):
        prim = eqn.primitive
        fn = f"{prim.name}_{k}"
        if k in folded:  # computed with the group that feeds it
            lines += _dels(dead, names)
            continue
        if k in reductions:
            r, kernel = reductions[k]
            red = fused.eqns[r]
            ins = [name_of(a) for a in eqn.invars]
            outs = names[red.outvars[0]] = f"v{next(counter)}"
            kernels.append(kernel)
            namespace[fn] = ("reduction", kernel, red.params["axes"])
            eqn_lines[len(lines) + 3] = red
            lines.append(f"    {outs} = {fn}({', '.join(ins)})  # cupy.ReductionKernel "
                         f"{kernel.name}")
            lines += _dels(dead, names)
            continue
        ins, outs = eqn_names(eqn, name_of, names, counter)
        eqn_lines[len(lines) + 3] = eqn  # + the def line and the comment line
        if prim.name == "fused":
            body = eqn.params["jaxpr"]
            try:
                kernel = fused_kernel_source(body, _kernel_name(body.jaxpr.eqns, len(kernels)))
            except UnsupportedInKernel:
                kernel = None
            if kernel is not None:
                kernels.append(kernel)
                namespace[fn] = ("kernel", kernel, eqn.outvars[0].aval.shape)
                lines.append(f"    {outs} = {fn}({', '.join(ins)})  # CUDA kernel {kernel.name}")
            else:
                namespace[fn] = ("impl", prim, eqn.params)
                lines.append(f"    {outs} = {fn}({', '.join(ins)})")
        else:
            namespace[fn] = ("impl", prim, eqn.params)
            lines.append(f"    {outs} = {fn}({', '.join(ins)})" if eqn.outvars
                         else f"    {fn}({', '.join(ins)})")
        lines += _dels(dead, names)
    lines.append(f"    return [{', '.join(name_of(v) for v in fused.outvars)}]")
    source = (f"def run({', '.join(params)}):\n"
              f"    # generated by funcgrad for CuPy: {len(fused.eqns)} steps, "
              f"{len(kernels)} fused CUDA kernels\n" + "\n".join(lines) + "\n")
    return source, namespace, kernels, len(fused.constvars), eqn_lines


def _fused_reductions(jaxpr):
    """{index of a fused equation: (index of the reduction it feeds, ReductionSource)} for each
    fusion group whose one output is used only by a reduce_sum / reduce_max / reduce_min (and is
    not a program output), and that the CUDA generator translates: the pair becomes one
    ReductionKernel and the group's result is never stored."""
    uses = {}
    for i, eqn in enumerate(jaxpr.eqns):
        for a in eqn.invars:
            if type(a) is not Literal:
                uses.setdefault(a, []).append(i)
    outs = {v for v in jaxpr.outvars if type(v) is not Literal}
    found = {}
    for k, eqn in enumerate(jaxpr.eqns):
        if eqn.primitive.name != "fused" or len(eqn.outvars) != 1:
            continue
        v = eqn.outvars[0]
        users = uses.get(v, [])
        if v in outs or len(users) != 1:
            continue
        red = jaxpr.eqns[users[0]]
        if red.primitive.name not in _REDUCTIONS or len(red.invars) != 1 \
                or not red.params["axes"]:
            continue
        body = eqn.params["jaxpr"]
        try:
            kernel = fused_reduction_source(
                body, red.primitive.name,
                _kernel_name(body.jaxpr.eqns + [red], k, "fusedreduce"))
        except UnsupportedInKernel:
            continue
        found[k] = (users[0], kernel)
    return found


def _dels(dead, names):
    gone = [names[v] for v in dead if v in names]
    return [f"    del {', '.join(gone)}"] if gone else []


def compile_jaxpr(jaxpr, xp=None, donated=()):
    """jit's code generator for CuPy: `run(*consts, *args) -> outputs` (see the module doc)."""
    from . import load_cupy
    cupy = load_cupy()
    xp = xp if isinstance(xp, CupyNamespace) else namespace_for(cupy)
    source, entries, kernels, nconsts, eqn_lines = generate(jaxpr, cupy)
    namespace = {}
    for key, entry in entries.items():
        if isinstance(entry, np.ndarray):
            namespace[key] = cupy.asarray(entry)
        elif entry[0] == "kernel":
            namespace[key] = _Launcher(cupy, entry[1], entry[2])
        elif entry[0] == "reduction":
            namespace[key] = _Reducer(cupy, entry[1], entry[2])
        else:
            _, prim, params = entry
            rule = getattr(prim, "compile_rule", None)
            if rule is not None:
                namespace[key] = rule(xp, compile_jaxpr, **params)
            else:
                namespace[key] = functools.partial(_impl_on_device, prim, xp, cupy, params)
    exec(compile(source, "<funcgrad-jit-cupy>", "exec"), namespace)
    inner = namespace["run"]
    moved = {}   # id of a host constant -> (the constant, its device copy)

    def run(*args):
        # Host (NumPy) values: the program's captured constants, moved once and kept; Python
        # scalars and NumPy arguments when jit(backend="gpu") was asked for, moved per call.
        args = list(args)
        for i, a in enumerate(args):
            if type(a) is np.ndarray or isinstance(a, np.generic):
                if i < nconsts:
                    hit = moved.get(id(a))
                    if hit is None or hit[0] is not a:
                        hit = moved[id(a)] = (a, cupy.asarray(a))
                    args[i] = hit[1]
                else:
                    args[i] = cupy.asarray(a)
        return inner(*args)

    kernel_text = "".join(f"\n// ---- CUDA kernel {k.name} ----\n{k.source}" for k in kernels)
    full = source + ("\n/* fused CUDA kernels */" + kernel_text if kernels else "")
    return Compiled(run, full, kernels, eqn_lines, inner)


def _impl_on_device(prim, xp, cupy, params, *args):
    args = [cupy.asarray(a) if isinstance(a, (np.ndarray, np.generic)) else a for a in args]
    out = prim.impl(xp, *args, **params)
    if prim.multiple_results:
        return [o if isinstance(o, cupy.ndarray) else cupy.asarray(o) for o in out]
    return out if isinstance(out, cupy.ndarray) else cupy.asarray(out)


_namespace_cache: dict = {}


def namespace_for(cupy):
    ns = _namespace_cache.get(id(cupy))
    if ns is None:
        ns = _namespace_cache[id(cupy)] = CupyNamespace(cupy)
    return ns
