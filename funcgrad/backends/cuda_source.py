"""CUDA C++ source for fusion groups: pure string generation, tested (and compiled with `nvcc`)
on machines without a GPU.

* `fused_kernel_source(body, name)`: one `extern "C" __global__` kernel computing an
  all-elementwise fusion group (a `fused` equation's body, see `funcgrad.transforms.fusion.fuse`)
  in one pass: one thread per element, every intermediate in registers.
* `fused_reduction_source(body, name)`: a fusion group that ends in the reduction it feeds, as the
  parts of one `cupy.ReductionKernel` (the elementwise part is a `__device__` function in the
  preamble).

Each equation's C code is its primitive's expression (`funcgrad.core.lowering`: the
implementation run on symbolic scalars) translated node by node by `c_expr`, with NumPy's
semantics per dtype: integer division by zero gives 0, `maximum` lets NaN win, shifts by the
bit width or more give 0 (or -1), ...
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..core import Literal
from ..core.lowering import Unlowerable, elementwise_expr, nodes

__all__ = ["CUDA_TYPES", "KernelSource", "ReductionSource", "UnsupportedInKernel",
           "fused_kernel_source", "fused_reduction_source", "broadcast_index", "c_expr",
           "c_literal", "can_translate", "REDUCTIONS"]

CUDA_TYPES = {
    "bool": "bool", "int8": "signed char", "int16": "short", "int32": "int",
    "int64": "long long", "uint8": "unsigned char", "uint16": "unsigned short",
    "uint32": "unsigned int", "uint64": "unsigned long long", "float32": "float",
    "float64": "double",
}
_UNSIGNED = {"int8": "unsigned char", "int16": "unsigned short", "int32": "unsigned int",
             "int64": "unsigned long long"}

# Reductions a fusion group can end in, inside one ReductionKernel.
REDUCTIONS = {"reduce_sum": "sum", "reduce_max": "max", "reduce_min": "min"}


class UnsupportedInKernel(Unlowerable):
    """An equation (or dtype) the CUDA generator does not translate: the group stays unfused."""


@dataclasses.dataclass
class KernelSource:
    """One generated kernel: its name, CUDA source, and how to call it.

    inputs: (name, dtype, is_scalar) per array argument, in order; outputs: (name, dtype).
    The kernel's parameters are the inputs, then the outputs, then `long long n`.
    """

    name: str
    source: str
    inputs: list
    outputs: list

    def __str__(self):
        return self.source


def _ctype(dtype):
    name = np.dtype(dtype).name
    t = CUDA_TYPES.get(name)
    if t is None:
        raise UnsupportedInKernel(f"dtype {name} has no CUDA kernel translation")
    return t


def c_literal(value, dtype):
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


# ---------------------------------------------------------------------------------------------
# The vocabulary in C

# float math: NumPy name -> C name (float32 adds "f": expf, log1pf, ...)
_MATH1 = {"exp": "exp", "exp2": "exp2", "expm1": "expm1", "log": "log", "log2": "log2",
          "log10": "log10", "log1p": "log1p", "sqrt": "sqrt", "cbrt": "cbrt", "sin": "sin",
          "cos": "cos", "tan": "tan", "arcsin": "asin", "arccos": "acos", "arctan": "atan",
          "sinh": "sinh", "cosh": "cosh", "tanh": "tanh", "arcsinh": "asinh",
          "arccosh": "acosh", "arctanh": "atanh", "floor": "floor", "ceil": "ceil",
          "rint": "rint", "trunc": "trunc", "absolute": "fabs"}
_MATH2 = {"power": "pow", "arctan2": "atan2", "nextafter": "nextafter", "fmod": "fmod",
          "copysign": "copysign", "hypot": "hypot", "fmax": "fmax", "fmin": "fmin"}
_CMP = {"equal": "==", "not_equal": "!=", "less": "<", "less_equal": "<=", "greater": ">",
        "greater_equal": ">="}
_ARITH = {"add": "+", "subtract": "-", "multiply": "*"}
_BITS = {"bitwise_and": "&", "bitwise_or": "|", "bitwise_xor": "^"}
_LOGIC = {"logical_and": "&&", "logical_or": "||", "logical_xor": "!="}


def _fn(name, dtype):
    return name + ("f" if np.dtype(dtype) == np.float32 else "")


def c_expr(node, a):
    """The C expression of one node of an element's expression, from the C expressions `a` of
    its arguments (NumPy's semantics for the node's dtypes). Raises UnsupportedInKernel."""
    op = node.op
    out = node.dtype
    t = _ctype(out)
    src = node.args[0].dtype if node.args else out
    kind = src.kind
    x = a[0] if a else None
    y = a[1] if len(a) > 1 else None
    if op == "const":
        return c_literal(node.value, out)
    if op == "astype":
        if out.kind == "b":
            return f"({x} != 0)"
        return f"(({t}){x})"
    if op == "view":
        return f"fg_bitcast<{t}>({x})"
    if op == "where":
        return f"({x} ? {y} : {a[2]})"
    if kind == "c":
        raise UnsupportedInKernel("complex values")
    if op in _MATH1 and kind == "f":
        return f"{_fn(_MATH1[op], out)}({x})"
    if op in _MATH2 and kind == "f":
        return f"{_fn(_MATH2[op], out)}({x}, {y})"
    if op in _CMP:
        return f"({x} {_CMP[op]} {y})"
    if op in _ARITH:
        if kind == "b":
            if op == "subtract":
                raise UnsupportedInKernel("numpy.subtract of booleans")
            return f"({x} {'||' if op == 'add' else '&&'} {y})"
        return f"(({t})({x} {_ARITH[op]} {y}))"
    if op in _LOGIC:
        return f"(({x} != 0) {_LOGIC[op]} ({y} != 0))"
    if op == "logical_not":
        return f"(!{x})"
    if op == "negative":
        return f"(({t})(-{x}))"
    if op == "positive":
        return x
    if op == "absolute":
        return x if kind in "ub" else f"(({t})({x} < 0 ? -{x} : {x}))"
    if op == "sign":
        s = f"(({t})(({x} > 0) - ({x} < 0)))"
        return f"({x} != {x} ? {x} : {s})" if kind == "f" else s
    if op == "square":
        return f"(({t})({x} * {x}))" if kind != "b" else f"({x} && {x})"
    if op == "reciprocal" and kind == "f":
        return f"(({t})1 / {x})"
    if op == "true_divide" and kind == "f":
        return f"({x} / {y})"
    if op in ("maximum", "minimum"):
        cmp = ">" if op == "maximum" else "<"
        nan = f" || {x} != {x}" if kind == "f" else ""   # NaN wins, as NumPy's
        return f"(({x} {cmp} {y}{nan}) ? {x} : {y})"
    if op == "isnan":
        return f"({x} != {x})" if kind == "f" else "false"
    if op == "isinf":
        return f"isinf({x})" if kind == "f" else "false"
    if op == "isfinite":
        return f"isfinite({x})" if kind == "f" else "true"
    if op == "signbit":
        return f"signbit({x})" if kind == "f" else (f"({x} < 0)" if kind == "i" else "false")
    if op == "ldexp" and kind == "f":
        return f"{_fn('ldexp', out)}({x}, (int){y})"
    if op == "logaddexp" and kind == "f":
        return f"fg_logaddexp({x}, {y})"
    if kind in "iu":
        r = _integer(op, t, src, x, y)
        if r is not None:
            return r
    if op in _BITS:
        if kind == "b":
            return f"({x} {_LOGIC[op.replace('bitwise', 'logical')]} {y})"
        return f"(({t})({x} {_BITS[op]} {y}))"
    if op == "invert":
        return f"(!{x})" if kind == "b" else f"(({t})(~{x}))"
    raise UnsupportedInKernel(f"no CUDA translation of numpy.{op} on {src.name}")


def _integer(op, t, src, x, y):
    """NumPy's integer semantics for division, remainder, power and shifts (C leaves division
    by zero and over-wide shifts undefined; NumPy gives 0)."""
    signed = src.kind == "i"
    minus1 = f" || {y} == -1" if signed else ""
    if op == "floor_divide":
        if not signed:
            return f"(({t})({y} == 0 ? 0 : {x} / {y}))"
        # C truncates toward zero; step down where the remainder has the other sign
        q = f"({x} / {y} - (({x} % {y} != 0) && (({x} < 0) != ({y} < 0))))"
        return f"(({t})({y} == 0 ? 0 : ({y} == -1 ? -{x} : {q})))"
    if op == "remainder":
        if not signed:
            return f"(({t})({y} == 0 ? 0 : {x} % {y}))"
        r = f"({x} % {y} + (({x} % {y} != 0) && (({x} % {y} < 0) != ({y} < 0))) * {y})"
        return f"(({t})({y} == 0{minus1} ? 0 : {r}))"
    if op == "fmod":
        return f"(({t})({y} == 0{minus1} ? 0 : {x} % {y}))"
    if op == "power":
        return f"fg_ipow<{t}>({x}, {y})"
    bits = src.itemsize * 8
    if op == "left_shift":
        return f"(({t})((unsigned long long){y} < {bits}ULL ? ({t})({x} << {y}) : 0))"
    if op == "right_shift":
        fill = f"({x} < 0 ? -1 : 0)" if signed else "0"
        return f"(({t})((unsigned long long){y} < {bits}ULL ? ({x} >> {y}) : {fill}))"
    return None


# Helpers a kernel's preamble defines when its code uses them.
_HELPERS = {
    "fg_bitcast<": "template <typename T, typename S> __device__ __forceinline__ T "
                   "fg_bitcast(S s) { T t; memcpy(&t, &s, sizeof(T)); return t; }\n",
    "fg_ipow<": "template <typename T> __device__ __forceinline__ T fg_ipow(T a, T b) {\n"
                "    T r = 1; if (b < 0) return a == 1 ? 1 : (a == -1 ? ((b & 1) ? -1 : 1) : 0);\n"
                "    while (b) { if (b & 1) r *= a; a *= a; b >>= 1; } return r; }\n",
    "fg_logaddexp(": "template <typename T> __device__ __forceinline__ T fg_logaddexp(T a, T b)"
                     " {\n    if (a == b) return a + (T)0.6931471805599453;\n"
                     "    T d = a - b;\n    if (d > 0) return a + log1p(exp(-d));\n"
                     "    if (d <= 0) return b + log1p(exp(d));\n    return d; }\n",
}


def _preamble(code):
    return "".join(text for key, text in _HELPERS.items() if key in code)


def _eqn_lines(eqn, arg, names, counter, indent):
    """The C statements computing one elementwise equation; names its output."""
    if len(eqn.outvars) != 1:
        raise UnsupportedInKernel(f"{eqn.primitive.name} has several results")
    ins, out = elementwise_expr(eqn.primitive, [a.aval.dtype for a in eqn.invars], eqn.params)
    if out.dtype != eqn.outvars[0].aval.dtype:
        raise UnsupportedInKernel(f"{eqn.primitive.name}: expression dtype {out.dtype}")
    code = {id(n): arg(v) for n, v in zip(ins, eqn.invars)}
    lines = []
    for node in nodes(out):
        if id(node) in code:
            continue
        expr = c_expr(node, [code[id(a)] for a in node.args])
        if node.op == "const":
            code[id(node)] = expr
            continue
        name = f"v{next(counter)}"
        lines.append(f"{indent}const {_ctype(node.dtype)} {name} = {expr};")
        code[id(node)] = name
    lines[-1:] = [lines[-1] + f"  // {eqn.primitive.name}"] if lines else []
    names[eqn.outvars[0]] = code[id(out)]
    return lines


def _chain_lines(jaxpr, names, indent="        "):
    """The C statements computing a fusion group's elementwise equations from the inputs
    already named in `names`; returns (lines, arg) where `arg(v)` is the C expression of a
    variable or literal."""
    counter = iter(range(1 << 30))

    def arg(a):
        if type(a) is Literal:
            return c_literal(a.val, a.aval.dtype)
        return names[a]

    lines = []
    for eqn in jaxpr.eqns:
        lines += _eqn_lines(eqn, arg, names, counter, indent)
    return lines, arg


def can_translate(eqn):
    """Whether the CUDA generator translates this equation (the CuPy backend's fusion test)."""
    try:
        if eqn.primitive.name in REDUCTIONS:
            return len(eqn.invars) == 1 and bool(eqn.params["axes"]) \
                and np.dtype(eqn.outvars[0].aval.dtype).kind in "iuf"
        _eqn_lines(eqn, lambda a: "x", {}, iter(range(1 << 30)), "")
        for v in (*eqn.invars, *eqn.outvars):
            _ctype(v.aval.dtype)
        return True
    except Unlowerable:
        return False


def _group_jaxpr(body):
    jaxpr = getattr(body, "jaxpr", body)
    if getattr(body, "consts", None):
        raise UnsupportedInKernel("a fused body with constants")
    return jaxpr


def fused_kernel_source(body, name="fused_kernel"):
    """CUDA source of one kernel computing the all-elementwise program `body` in one pass.

    `body`: a Jaxpr (or ClosedJaxpr without consts) whose equations are elementwise and whose
    inputs have the output shape or broadcast to it (a fusion group, `fusion.fuse`'s `fused`
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
    body_text = "\n".join(lines)
    source = (_preamble(body_text) +
              f'extern "C" __global__ void {name}(\n    {sig})\n{{\n'
              "    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;\n"
              "         i += (long long)blockDim.x * gridDim.x) {\n"
              + body_text + "\n    }\n}\n")
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


# ---------------------------------------------------------------------------------------------
# Reductions fed by a fusion group

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
    axes: tuple = ()

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


def fused_reduction_source(body, name="fused_reduction"):
    """The ReductionSource of a fusion group `body` whose last equation is a reduce_sum,
    reduce_max or reduce_min of the group's only other result, computed without storing that
    result. Float sums accumulate in the output's type, as JAX's GPU reductions do; max/min
    propagate NaN, as NumPy's do."""
    jaxpr = _group_jaxpr(body)
    if not jaxpr.eqns or jaxpr.eqns[-1].primitive.name not in REDUCTIONS \
            or len(jaxpr.outvars) != 1 or jaxpr.outvars[0] is not jaxpr.eqns[-1].outvars[0]:
        raise UnsupportedInKernel("not a fusion group ending in its one reduction")
    red = jaxpr.eqns[-1]
    mapped = red.invars[0]
    dtype = np.dtype(mapped.aval.dtype)
    if dtype.kind not in "iuf":
        raise UnsupportedInKernel(f"{red.primitive.name} of {dtype.name} in a fused reduction")
    t = _ctype(dtype)
    names = {v: f"x{k}" for k, v in enumerate(jaxpr.invars)}
    elementwise = type(jaxpr)(jaxpr.constvars, jaxpr.invars, [mapped], jaxpr.eqns[:-1])
    lines, arg = _chain_lines(elementwise, names, indent="    ")
    fn = f"{name}_map"
    params = ", ".join(f"const {_ctype(v.aval.dtype)} x{k}" for k, v in enumerate(jaxpr.invars))
    body_text = "".join(line + "\n" for line in lines)
    preamble = (_preamble(body_text) + f"__device__ __forceinline__ {t} {fn}({params}) {{\n"
                + body_text + f"    return {arg(mapped)};\n}}\n")
    in_params = ", ".join(f"{np.dtype(v.aval.dtype).name} in{k}"
                          for k, v in enumerate(jaxpr.invars))
    map_expr = f"{fn}({', '.join(f'in{k}' for k in range(len(jaxpr.invars)))})"
    kind = REDUCTIONS[red.primitive.name]
    if kind == "sum":
        reduce_expr, identity = "a + b", c_literal(0, dtype)
    else:
        op = ">" if kind == "max" else "<"
        nan = " || a != a" if dtype.kind == "f" else ""
        reduce_expr = f"(a {op} b{nan}) ? a : b"
        if dtype.kind == "f":
            identity = c_literal(-np.inf if kind == "max" else np.inf, dtype)
        else:
            info = np.iinfo(dtype)
            identity = c_literal(info.min if kind == "max" else info.max, dtype)
    return ReductionSource(name, preamble, in_params, f"{dtype.name} out0", map_expr,
                           reduce_expr, "out0 = a", identity, t, np.dtype(dtype),
                           tuple(red.params["axes"]))
