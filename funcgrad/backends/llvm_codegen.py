"""LLVM IR for fusion groups: each `fused` body becomes one loop nest that reads its inputs once,
keeps every intermediate in registers, writes its outputs once (or reduces them), and that LLVM
vectorizes. Pure text generation; llvm_runtime.py compiles it.

A kernel is `void K(PyObject *arrays..., i64 dims..., i64 lo, i64 hi)`: the NumPy arrays of the
group's inputs and outputs (their data pointer is read from the array object), the sizes of the
loop nest's dimensions, and the range of the outermost loop this call covers (so that two
threads can split a kernel). The iteration space is the group's element shape with size-1 axes
dropped and neighbouring axes merged wherever every operand agrees (all of them present, or
broadcast along both), so an elementwise chain on any shape is one flat loop, and a bias row or a
keepdims column adds one loop level whose innermost stride is 0 or 1: the shape itself is a
runtime argument, so one compiled kernel serves every shape with the same broadcast pattern.

A group that ends in a reduction (`reduce_sum`/`max`/`min`, see fusion.fuse) reduces over its
trailing loop dimensions (one accumulator per output element: layer norm and softmax
statistics, sums over the last axis) or its leading ones (the outputs accumulate in memory: bias
gradients, sums over the batch).

Each equation's code is its primitive's expression (funcgrad.core.lowering) translated node by
node by `_Function.value`, with NumPy's semantics per dtype. Floating-point operations are not
contracted or reassociated (no fast-math), so elementwise results equal NumPy's bit for bit,
except the float32 `exp`, `log`, `tanh` written here as vectorizable polynomials (within a few
ulp of NumPy's; see llvm_math.py) and float sums over the last axis, which are reassociated into
vector partial sums (as NumPy's pairwise sums, a different order).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import struct

import numpy as np

from ..core import Literal
from ..core.lowering import Unlowerable, elementwise_expr, nodes
from . import llvm_math

__all__ = ["Kernel", "kernel_source", "can_translate", "cheap_to_recompute", "layout",
           "UnsupportedOnCPU", "REDUCTIONS"]


class UnsupportedOnCPU(Unlowerable):
    """What the LLVM generator does not translate (or does not fuse, being slower fused)."""


REDUCTIONS = ("reduce_sum", "reduce_max", "reduce_min")

_IR_TYPES = {"bool": "i1", "int8": "i8", "int16": "i16", "int32": "i32", "int64": "i64",
             "uint8": "i8", "uint16": "i16", "uint32": "i32", "uint64": "i64",
             "float32": "float", "float64": "double"}


def _ty(dtype):
    t = _TY_CACHE.get(dtype)
    if t is None:
        t = _IR_TYPES.get(np.dtype(dtype).name)
        if t is None:
            raise UnsupportedOnCPU(f"dtype {np.dtype(dtype).name} in a compiled CPU kernel")
        _TY_CACHE[dtype] = t
    return t


_TY_CACHE: dict = {}


def _mem_ty(dtype):
    """The type an array element has in memory (NumPy's bool is a byte)."""
    return "i8" if np.dtype(dtype).kind == "b" else _ty(dtype)


def ir_const(value, dtype):
    """An LLVM IR constant of a NumPy dtype."""
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return "true" if bool(value) else "false"
    if dtype.kind in "iu":
        bits = dtype.itemsize * 8
        v = int(np.asarray(value, dtype).astype(np.int64 if dtype.kind == "i" else np.uint64))
        v &= (1 << bits) - 1
        return str(v - (1 << bits) if v >= 1 << (bits - 1) else v)
    if dtype.kind == "f":
        v = float(np.asarray(value, dtype))
        if math.isnan(v):  # NumPy's quiet NaN, sign kept
            return "0xFFF8000000000000" if np.signbit(v) else "0x7FF8000000000000"
        return "0x%016X" % struct.unpack("<Q", struct.pack("<d", v))[0]
    raise UnsupportedOnCPU(f"constant of dtype {dtype}")


# Float math the generator writes as LLVM intrinsics (exact: IEEE operations, or vectorizable
# bit manipulation), NumPy name -> intrinsic.
_INTRINSIC1 = {"sqrt": "sqrt", "floor": "floor", "ceil": "ceil", "rint": "rint",
               "trunc": "trunc", "absolute": "fabs"}
_INTRINSIC2 = {"copysign": "copysign", "fmax": "maxnum", "fmin": "minnum"}
# Float math from the C library: correct, but one scalar call per element (not vectorized), so
# equations needing it are left to NumPy's SIMD loops (see `can_translate`).
_LIBM1 = {"exp": "exp", "exp2": "exp2", "expm1": "expm1", "log": "log", "log2": "log2",
          "log10": "log10", "log1p": "log1p", "cbrt": "cbrt", "sin": "sin", "cos": "cos",
          "tan": "tan", "arcsin": "asin", "arccos": "acos", "arctan": "atan", "sinh": "sinh",
          "cosh": "cosh", "tanh": "tanh", "arcsinh": "asinh", "arccosh": "acosh",
          "arctanh": "atanh"}
_LIBM2 = {"power": "pow", "arctan2": "atan2", "nextafter": "nextafter", "hypot": "hypot"}
_FCMP = {"equal": "oeq", "not_equal": "une", "less": "olt", "less_equal": "ole",
         "greater": "ogt", "greater_equal": "oge"}
_ICMP_S = {"equal": "eq", "not_equal": "ne", "less": "slt", "less_equal": "sle",
           "greater": "sgt", "greater_equal": "sge"}
_ICMP_U = dict(_ICMP_S, less="ult", less_equal="ule", greater="ugt", greater_equal="uge")


class _Function:
    """The body of one IR function being written: instructions, fresh names, declarations."""

    def __init__(self, module, prefix="t"):
        self.module = module
        self.lines = []
        self.n = 0
        self.prefix = prefix

    def tmp(self):
        self.n += 1
        return f"%{self.prefix}{self.n}"

    def emit(self, text):
        name = self.tmp()
        self.lines.append(f"  {name} = {text}")
        return name

    def raw(self, text):
        self.lines.append(text)

    def intrinsic(self, name, ty, *args):
        suffix = {"float": "f32", "double": "f64"}.get(ty, ty)
        fn = f"llvm.{name}.{suffix}"
        self.module.declare(f"declare {ty} @{fn}({', '.join([ty] * len(args))})")
        return self.emit(f"call {ty} @{fn}({', '.join(f'{ty} {a}' for a in args)})")

    def libm(self, name, ty, *args):
        fn = name + ("f" if ty == "float" else "")
        self.module.declare(f"declare {ty} @{fn}({', '.join([ty] * len(args))})")
        self.module.uses_libm = True
        return self.emit(f"call {ty} @{fn}({', '.join(f'{ty} {a}' for a in args)})")

    def select(self, cond, ty, a, b):
        return self.emit(f"select i1 {cond}, {ty} {a}, {ty} {b}")

    # -- one node of an element's expression --
    def value(self, node, a):
        """The IR value of expression node `node` from its arguments' values `a` (NumPy's
        semantics for the node's dtypes)."""
        op, out = node.op, node.dtype
        t = _ty(out)
        src = node.args[0].dtype if node.args else out
        st = _ty(src)
        kind = src.kind
        x = a[0] if a else None
        y = a[1] if len(a) > 1 else None
        if op == "const":
            return ir_const(node.value, out)
        if op == "astype":
            return self._convert(x, src, out)
        if op == "view":
            return self.emit(f"bitcast {st} {x} to {t}")
        if op == "where":
            return self.select(x, t, y, a[2])
        if kind == "c":
            raise UnsupportedOnCPU("complex values")
        if kind == "f":
            return self._float(op, src, st, x, y)
        return self._integer(op, src, st, t, x, y)

    def _float(self, op, out, t, x, y):
        # out, t: the operands' dtype and IR type (comparisons and predicates give i1)
        if op in ("add", "subtract", "multiply", "true_divide"):
            ins = {"add": "fadd", "subtract": "fsub", "multiply": "fmul",
                   "true_divide": "fdiv"}[op]
            return self.emit(f"{ins} {t} {x}, {y}")
        if op in _FCMP:
            return self.emit(f"fcmp {_FCMP[op]} {t} {x}, {y}")
        if op == "negative":
            return self.emit(f"fneg {t} {x}")
        if op == "positive":
            return x
        if op == "square":
            return self.emit(f"fmul {t} {x}, {x}")
        if op == "reciprocal":
            return self.emit(f"fdiv {t} {ir_const(1, out)}, {x}")
        if op in _INTRINSIC1:
            return self.intrinsic(_INTRINSIC1[op], t, x)
        if op in _INTRINSIC2:
            return self.intrinsic(_INTRINSIC2[op], t, x, y)
        if op in ("maximum", "minimum"):  # NaN wins; ties give y, as NumPy's loops
            cmp = self.emit(f"fcmp {'ogt' if op == 'maximum' else 'olt'} {t} {x}, {y}")
            nan = self.emit(f"fcmp uno {t} {x}, {x}")
            pick = self.emit(f"or i1 {cmp}, {nan}")
            return self.select(pick, t, x, y)
        if op == "sign":
            zero, one = ir_const(0, out), ir_const(1, out)
            pos = self.emit(f"fcmp ogt {t} {x}, {zero}")
            neg = self.emit(f"fcmp olt {t} {x}, {zero}")
            s = self.select(neg, t, ir_const(-1, out), zero)
            s = self.select(pos, t, one, s)
            nan = self.emit(f"fcmp uno {t} {x}, {x}")
            return self.select(nan, t, x, s)
        if op == "isnan":
            return self.emit(f"fcmp uno {t} {x}, {x}")
        if op in ("isinf", "isfinite"):
            m = self.intrinsic("fabs", t, x)
            inf = ir_const(np.inf, out)
            return self.emit(f"fcmp {'oeq' if op == 'isinf' else 'olt'} {t} {m}, {inf}")
        if op == "signbit":
            it = "i32" if t == "float" else "i64"
            bits = self.emit(f"bitcast {t} {x} to {it}")
            return self.emit(f"icmp slt {it} {bits}, 0")
        if op in ("logical_and", "logical_or", "logical_xor"):
            zero = ir_const(0, out)
            bx = self.emit(f"fcmp une {t} {x}, {zero}")
            by = self.emit(f"fcmp une {t} {y}, {zero}")
            return self.emit(f"{ {'logical_and': 'and', 'logical_or': 'or'}.get(op, 'xor')} "
                             f"i1 {bx}, {by}")
        if op == "logical_not":
            return self.emit(f"fcmp oeq {t} {x}, {ir_const(0, out)}")
        if op == "remainder":  # NumPy's: fmod, then the divisor's sign
            m = self.emit(f"frem {t} {x}, {y}")
            zero = ir_const(0, out)
            nz = self.emit(f"fcmp une {t} {m}, {zero}")
            ybelow = self.emit(f"fcmp olt {t} {y}, {zero}")
            mbelow = self.emit(f"fcmp olt {t} {m}, {zero}")
            differ = self.emit(f"xor i1 {ybelow}, {mbelow}")
            fix = self.emit(f"and i1 {nz}, {differ}")
            shifted = self.emit(f"fadd {t} {m}, {y}")
            r = self.select(fix, t, shifted, m)
            signed_zero = self.intrinsic("copysign", t, zero, y)
            r = self.select(nz, t, r, signed_zero)
            ynz = self.emit(f"fcmp une {t} {y}, {zero}")
            return self.select(ynz, t, r, m)
        if op == "fmod":
            return self.emit(f"frem {t} {x}, {y}")
        if op == "ldexp":
            raise UnsupportedOnCPU("ldexp")
        if op == "logaddexp":
            raise UnsupportedOnCPU("logaddexp")
        fast = llvm_math.FUNCTIONS.get((op, t))
        if fast is not None:
            self.module.need_math(fast)
            return self.emit(f"call {t} @{fast}({t} {x})")
        if op in _LIBM1:
            return self.libm(_LIBM1[op], t, x)
        if op in _LIBM2:
            return self.libm(_LIBM2[op], t, x, y)
        raise UnsupportedOnCPU(f"numpy.{op} on floats")

    def _integer(self, op, src, st, t, x, y):
        signed = src.kind == "i"
        boolean = src.kind == "b"
        if op in ("add", "subtract", "multiply"):
            if boolean:
                if op == "subtract":
                    raise UnsupportedOnCPU("numpy.subtract of booleans")
                return self.emit(f"{'or' if op == 'add' else 'and'} i1 {x}, {y}")
            return self.emit(f"{ {'add': 'add', 'subtract': 'sub', 'multiply': 'mul'}[op]} "
                             f"{st} {x}, {y}")
        if op in _ICMP_S:
            table = _ICMP_S if signed else _ICMP_U
            return self.emit(f"icmp {table[op]} {st} {x}, {y}")
        if op in ("bitwise_and", "bitwise_or", "bitwise_xor"):
            return self.emit(f"{op[8:]} {st} {x}, {y}")
        if op in ("logical_and", "logical_or", "logical_xor", "logical_not"):
            bx = self.emit(f"icmp ne {st} {x}, 0")
            if op == "logical_not":
                return self.emit(f"xor i1 {bx}, true")
            by = self.emit(f"icmp ne {st} {y}, 0")
            return self.emit(f"{op[8:]} i1 {bx}, {by}")
        if op == "invert":
            return self.emit(f"xor {st} {x}, {'true' if boolean else -1}")
        if op == "positive":
            return x
        if boolean:
            if op in ("maximum", "square"):
                return self.emit(f"{'or' if op == 'maximum' else 'and'} i1 {x}, "
                                 f"{y if op == 'maximum' else x}")
            if op == "minimum":
                return self.emit(f"and i1 {x}, {y}")
            if op in ("absolute",):
                return x
            raise UnsupportedOnCPU(f"numpy.{op} on booleans")
        if op == "negative":
            return self.emit(f"sub {st} 0, {x}")
        if op == "square":
            return self.emit(f"mul {st} {x}, {x}")
        if op == "absolute":
            if not signed:
                return x
            neg = self.emit(f"sub {st} 0, {x}")
            below = self.emit(f"icmp slt {st} {x}, 0")
            return self.select(below, st, neg, x)
        if op == "sign":
            pos = self.emit(f"icmp {'sgt' if signed else 'ugt'} {st} {x}, 0")
            p = self.emit(f"zext i1 {pos} to {st}")
            if not signed:
                return p
            neg = self.emit(f"icmp slt {st} {x}, 0")
            n = self.emit(f"zext i1 {neg} to {st}")
            return self.emit(f"sub {st} {p}, {n}")
        if op in ("maximum", "minimum"):
            pred = ("sgt" if signed else "ugt") if op == "maximum" else ("slt" if signed else "ult")
            c = self.emit(f"icmp {pred} {st} {x}, {y}")
            return self.select(c, st, x, y)
        if op in ("floor_divide", "remainder", "fmod"):
            return self._divide(op, signed, st, x, y)
        if op in ("left_shift", "right_shift"):
            bits = src.itemsize * 8
            ok = self.emit(f"icmp ult {st} {y}, {bits}")
            if op == "left_shift":
                s = self.emit(f"shl {st} {x}, {y}")
                return self.select(ok, st, s, "0")
            s = self.emit(f"{'ashr' if signed else 'lshr'} {st} {x}, {y}")
            fill = "0"
            if signed:
                below = self.emit(f"icmp slt {st} {x}, 0")
                fill = self.select(below, st, "-1", "0")
            return self.select(ok, st, s, fill)
        if op == "power":
            fn = self.module.need_ipow(st, signed)
            return self.emit(f"call {st} @{fn}({st} {x}, {st} {y})")
        raise UnsupportedOnCPU(f"numpy.{op} on {src.name}")

    def _divide(self, op, signed, st, x, y):
        """NumPy's integer floor_divide / remainder / fmod: 0 for a zero divisor; MIN // -1
        wraps to MIN. The divisor is made safe first (LLVM's division by 0 is undefined)."""
        zero = self.emit(f"icmp eq {st} {y}, 0")
        if not signed:
            safe = self.select(zero, st, "1", y)
            r = self.emit(f"{'udiv' if op == 'floor_divide' else 'urem'} {st} {x}, {safe}")
            return self.select(zero, st, "0", r)
        minus1 = self.emit(f"icmp eq {st} {y}, -1")
        bad = self.emit(f"or i1 {zero}, {minus1}")
        safe = self.select(bad, st, "1", y)
        q = self.emit(f"sdiv {st} {x}, {safe}")
        r = self.emit(f"srem {st} {x}, {safe}")
        if op == "fmod":
            return self.select(bad, st, "0", r)
        rnz = self.emit(f"icmp ne {st} {r}, 0")
        sx = self.emit(f"xor {st} {r}, {y}")
        differ = self.emit(f"icmp slt {st} {sx}, 0")
        fix = self.emit(f"and i1 {rnz}, {differ}")
        if op == "floor_divide":
            q1 = self.emit(f"sub {st} {q}, 1")
            q = self.select(fix, st, q1, q)
            negx = self.emit(f"sub {st} 0, {x}")
            q = self.select(minus1, st, negx, q)
            return self.select(zero, st, "0", q)
        r1 = self.emit(f"add {st} {r}, {y}")
        r = self.select(fix, st, r1, r)
        return self.select(bad, st, "0", r)

    def _convert(self, x, src, out):
        """NumPy's `astype` (C casts; a float out of an integer type's range gives what x86's
        conversion gives, the integer indefinite value, as NumPy's compiled loops do)."""
        st, t = _ty(src), _ty(out)
        if out.kind == "b":
            if src.kind == "f":
                return self.emit(f"fcmp une {st} {x}, {ir_const(0, src)}")
            return x if src.kind == "b" else self.emit(f"icmp ne {st} {x}, 0")
        if src.kind == "b":
            return self.emit(f"{'uitofp' if out.kind == 'f' else 'zext'} i1 {x} to {t}")
        if src.kind == "f" and out.kind == "f":
            if src.itemsize == out.itemsize:
                return x
            return self.emit(f"{'fpext' if out.itemsize > src.itemsize else 'fptrunc'} "
                             f"{st} {x} to {t}")
        if out.kind == "f":
            return self.emit(f"{'sitofp' if src.kind == 'i' else 'uitofp'} {st} {x} to {t}")
        if src.kind == "f":
            return self._float_to_int(x, src, out)
        if src.itemsize == out.itemsize:
            return x
        if out.itemsize < src.itemsize:
            return self.emit(f"trunc {st} {x} to {t}")
        return self.emit(f"{'sext' if src.kind == 'i' else 'zext'} {st} {x} to {t}")

    def _float_to_int(self, x, src, out):
        st, t = _ty(src), _ty(out)
        # x86: a 32-bit conversion for int8/16/32 and uint8/16, 64-bit for the rest; out of
        # range (or NaN) gives the smallest integer of that width.
        wide = 64 if out.itemsize == 8 or (out.kind == "u" and out.itemsize == 4) else 32
        wt = f"i{wide}"
        lo = ir_const(-2.0 ** (wide - 1), src)
        hi = ir_const(2.0 ** (wide - 1), src)
        ge = self.emit(f"fcmp oge {st} {x}, {lo}")
        lt = self.emit(f"fcmp olt {st} {x}, {hi}")
        ok = self.emit(f"and i1 {ge}, {lt}")
        safe = self.select(ok, st, x, ir_const(0, src))
        v = self.emit(f"fptosi {st} {safe} to {wt}")
        v = self.select(ok, wt, v, str(-(1 << (wide - 1))))
        if out.kind == "u" and out.itemsize == 8:
            # x86 compilers convert to uint64 through the 2^63 split: values in [2^63, 2^64)
            big = self.emit(f"fcmp oge {st} {x}, {hi}")
            top = ir_const(2.0 ** 64, src)
            fits = self.emit(f"fcmp olt {st} {x}, {top}")
            inrange = self.emit(f"and i1 {big}, {fits}")
            shifted = self.emit(f"fsub {st} {x}, {hi}")
            safe2 = self.select(inrange, st, shifted, ir_const(0, src))
            w = self.emit(f"fptosi {st} {safe2} to i64")
            w = self.emit(f"xor i64 {w}, {-(1 << 63)}")
            v = self.select(inrange, "i64", w, v)
        if wide == out.itemsize * 8:
            return v
        return self.emit(f"trunc {wt} {v} to {t}")


# ---------------------------------------------------------------------------------------------
# Which equations the CPU kernels take

# Equations whose expression uses these run as NumPy's own SIMD loops instead: a scalar C
# library call per element is slower than NumPy's vectorized function.
def can_translate(eqn):
    """Whether the compiled CPU backend fuses this equation (jit's fusion predicate on the
    CPU): an elementwise equation of at least 2 elements whose expression the generator
    translates into vector code, or a reduction it can fold into the group that feeds it."""
    try:
        name = eqn.primitive.name
        out = eqn.outvars[0].aval
        if name == "broadcast_in_dim":  # read in place by the kernel
            _ty(out.dtype)
            return type(eqn.invars[0]) is not Literal and out.size >= 2
        if name in REDUCTIONS:
            x = eqn.invars[0].aval
            return (x.size > 1 and np.dtype(x.dtype).kind in "iuf" and bool(eqn.params["axes"])
                    and _reduction_kind(x.shape, eqn.params["axes"]) is not None)
        if out.size < 2 or name == "stop_gradient":  # (an alias in the Python code: free)
            return False
        dtypes = tuple(a.aval.dtype for a in eqn.invars)
        try:
            key = (eqn.primitive, dtypes, out.dtype, tuple(sorted(eqn.params.items())))
            verdict = _verdicts.get(key)
        except TypeError:
            key = verdict = None
        if verdict is None:
            verdict = _translates(eqn.primitive, dtypes, out.dtype, eqn.params)
            if key is not None:
                _verdicts[key] = verdict
        return verdict
    except Unlowerable:
        return False


_verdicts: dict = {}


def _translates(prim, dtypes, out_dtype, params):
    """Whether the generator writes vector code for the primitive on these dtypes (no scalar
    C library call per element: NumPy's own SIMD loop is faster for those)."""
    try:
        ins, expr = elementwise_expr(prim, dtypes, params)
        for d in (*dtypes, out_dtype):
            _ty(d)
        probe = _Module("probe")
        f = _Function(probe)
        values = {id(n): f"%x{k}" for k, n in enumerate(ins)}
        for node in nodes(expr):
            if id(node) not in values:
                values[id(node)] = f.value(node, [values[id(a)] for a in node.args])
    except Unlowerable:
        return False
    return not probe.uses_libm


_CHEAP = frozenset({"add", "subtract", "multiply", "negative", "positive", "absolute", "square",
                    "maximum", "minimum", "sign", "copysign", "equal", "not_equal", "less",
                    "less_equal", "greater", "greater_equal", "logical_and", "logical_or",
                    "logical_not", "logical_xor", "bitwise_and", "bitwise_or", "bitwise_xor",
                    "invert", "isnan", "isinf", "isfinite", "floor", "ceil", "rint", "trunc",
                    "input", "const", "where", "astype", "view"})


def cheap_to_recompute(eqn):
    """Whether computing this equation again in another kernel costs less than storing its
    result and reading it back: a few vector operations (no division, root or math function)."""
    if not getattr(eqn.primitive, "elementwise", False) or len(eqn.outvars) != 1:
        return False
    try:
        _, expr = elementwise_expr(eqn.primitive, [a.aval.dtype for a in eqn.invars],
                                   eqn.params)
    except Unlowerable:
        return False
    ops = nodes(expr)
    return len(ops) <= 8 and all(n.op in _CHEAP for n in ops)


def _reduction_kind(shape, axes):
    """"row" when the reduced axes (ignoring size-1 axes) are the trailing ones, "column" when
    they are the leading ones, else None (the kernels' two loop orders)."""
    kept = [d for d in range(len(shape)) if shape[d] != 1]
    red = [d in axes for d in kept]
    if not any(red) or all(red):
        return "row" if any(red) else None
    first = red.index(True)
    if all(red[first:]) and not any(red[:first]):
        return "row"
    last = len(red) - red[::-1].index(True)
    if all(red[:last]) and not any(red[last:]):
        return "column"
    return None


# ---------------------------------------------------------------------------------------------
# Kernels

class _Module:
    """The declarations and helper functions one compiled module needs."""

    def __init__(self, name):
        self.name = name
        self.decls = set()
        self.helpers = {}
        self.uses_libm = False

    def declare(self, text):
        self.decls.add(text)

    def need_math(self, fn):
        self.helpers.setdefault(fn, llvm_math.definition(fn, self))

    def need_ipow(self, st, signed):
        name = f"fg_ipow_{st}{'s' if signed else 'u'}"
        if name not in self.helpers:
            self.helpers[name] = _ipow(name, st, signed)
        return name



def _ipow(name, t, signed):
    """x ** n for integers by repeated squaring (NumPy's loop: a negative exponent gives
    1 for x = 1, +-1 for x = -1 and 0 otherwise, where NumPy raises for arrays)."""
    neg = f"""  %isneg = icmp slt {t} %n, 0
  br i1 %isneg, label %negexp, label %loop
negexp:
  %one = icmp eq {t} %x, 1
  %mone = icmp eq {t} %x, -1
  %odd = and {t} %n, 1
  %isodd = icmp ne {t} %odd, 0
  %mres = select i1 %isodd, {t} -1, {t} 1
  %r0 = select i1 %mone, {t} %mres, {t} 0
  %r1 = select i1 %one, {t} 1, {t} %r0
  ret {t} %r1
""" if signed else "  br label %loop\n"
    return f"""define internal {t} @{name}({t} %x, {t} %n) {{
entry:
{neg}loop:
  %r = phi {t} [1, %entry{', %negexp' if False else ''}], [%r2, %body]
  %b = phi {t} [%x, %entry], [%b2, %body]
  %e = phi {t} [%n, %entry], [%e2, %body]
  %done = icmp eq {t} %e, 0
  br i1 %done, label %exit, label %body
body:
  %bit = and {t} %e, 1
  %set = icmp ne {t} %bit, 0
  %rb = mul {t} %r, %b
  %r2 = select i1 %set, {t} %rb, {t} %r
  %b2 = mul {t} %b, %b
  %e2 = lshr {t} %e, 1
  br label %loop
exit:
  ret {t} %r
}}
"""


@dataclasses.dataclass
class Kernel:
    """One generated kernel: its IR functions (`ir`: the loop nest, and the entry `name` taking
the array objects) and how the driver calls it.

    inputs: how many array inputs; outputs: (shape, dtype) of each output array the driver
    allocates; dims: the loop sizes (static here, runtime arguments of the kernel); init:
    the outputs' starting value for leading-axis reductions (they accumulate in memory), else
    None; threadable: whether two calls may split the outermost loop [lo, hi)."""

    name: str
    ir: str
    inputs: int
    outputs: list
    dims: tuple
    init: object
    threadable: bool
    work: int          # elements computed (for the driver's threading decision)
    decls: set         # declarations the functions need (intrinsics, C library)
    helpers: dict      # helper functions they call (vector math), by name
    elementwise: bool = True  # no reduction: an output may take over a same-shape input's buffer
    parts: int = 1     # merged independent groups: [lo, hi) ranges over them
    part_of: list = dataclasses.field(default_factory=list)  # per array: the parts using it
    # per output: the inputs read after it is written (a deep chain computed in blocks writes
    # an output at its equation's stage): its buffer must not be one of those
    late_reads: list = dataclasses.field(default_factory=list)
    pattern: str = ""  # the kernel's text without its name: equal patterns share a function


@dataclasses.dataclass(frozen=True)
class _Layout:
    dims: tuple          # loop sizes, outermost first
    present: tuple       # per operand (inputs, then the output space): present per loop dim
    reduced: tuple       # per loop dim: reduced (reduction groups) or not
    kind: str            # "map", "row" or "column"


def layout(in_shapes, space, red_axes=None):
    """The loop nest of a group: its element space `space` with size-1 axes dropped and
    neighbours merged where every operand (and the reduction) agrees."""
    n = len(space)
    keep = [d for d in range(n) if space[d] != 1]
    ops = []
    for s in in_shapes:
        padded = (1,) * (n - len(s)) + tuple(s)
        ops.append([padded[d] == space[d] for d in keep])
    red = [bool(red_axes) and d in red_axes for d in keep]
    out = [not r for r in red]
    cols = [tuple(o[j] for o in ops) + (out[j], red[j]) for j in range(len(keep))]
    dims, present_cols = [], []
    for j, d in enumerate(keep):
        if dims and cols[j] == present_cols[-1]:
            dims[-1] *= space[d]
        else:
            dims.append(space[d])
            present_cols.append(cols[j])
    present = tuple(tuple(c[k] for c in present_cols) for k in range(len(ops) + 1))
    reduced = tuple(c[-1] for c in present_cols)
    if not any(reduced):
        kind = "map"
    elif reduced[-1] and all(reduced[reduced.index(True):]):
        kind = "row"
    elif reduced[0] and not any(reduced[reduced.index(False):]):
        kind = "column"
    else:
        raise UnsupportedOnCPU("a reduction over middle axes")
    return _Layout(tuple(dims), present, reduced, kind)


def _loop_nest(jaxpr, name, module):
    """The function `name` computing one connected fusion group: (IR text, layout, output
    specs, init of column-reduction outputs, work). Its parameters are the data pointers of
    the group's inputs and outputs (noalias: outputs are fresh), the loop sizes, and lo, hi."""
    eqns = list(jaxpr.eqns)
    red = eqns[-1] if eqns and eqns[-1].primitive.name in REDUCTIONS else None
    mapped = red.invars[0] if red is not None else None
    if red is not None:
        eqns = eqns[:-1]
        space = tuple(mapped.aval.shape)
        axes = tuple(red.params["axes"])
    else:
        space = tuple(jaxpr.outvars[0].aval.shape)
        axes = None
    lay = layout([_read_shape(jaxpr, v, len(space)) for v in jaxpr.invars], space, axes)
    if red is None and len(lay.dims) == 1 and len(eqns) >= STAGED_DEPTH:
        return _staged_nest(jaxpr, name, module, lay, space)
    f = _Function(module)
    nin, outs = len(jaxpr.invars), list(jaxpr.outvars)
    nd = len(lay.dims)
    ptrs = [f"%p{k}" for k in range(nin + len(outs))]
    dimv = [f"%d{j}" for j in range(nd)]
    f.raw("entry:")

    def strides(present):
        """Runtime strides (elements) of an operand along each loop dim."""
        out, acc = [None] * nd, "1"
        for j in range(nd - 1, -1, -1):
            if present[j]:
                out[j] = acc
                acc = f.emit(f"mul i64 {acc}, {dimv[j]}") if j else acc
            else:
                out[j] = "0"
        return out

    in_strides = [strides(lay.present[k]) for k in range(nin)]
    out_strides = strides(lay.present[nin])
    # -- the element computation, in the innermost loop --
    idx = [f"%i{j}" for j in range(nd)]
    g = _Function(module, prefix="v")

    def offset(strd):
        acc = None
        for i, s in zip(idx, strd):
            if s == "0":
                continue
            t = i if s == "1" else g.emit(f"mul i64 {i}, {s}")
            acc = t if acc is None else g.emit(f"add i64 {acc}, {t}")
        return acc or "0"

    names = {}
    for k, v in enumerate(jaxpr.invars):
        ty, mty = _ty(v.aval.dtype), _mem_ty(v.aval.dtype)
        p = g.emit(f"getelementptr {mty}, ptr {ptrs[k]}, i64 {offset(in_strides[k])}")
        x = g.emit(f"load {mty}, ptr {p}")
        if ty == "i1":
            x = g.emit(f"icmp ne i8 {x}, 0")
        names[v] = x
    for eqn in eqns:
        if eqn.primitive.name == "broadcast_in_dim":  # its operand, read at broadcast positions
            names[eqn.outvars[0]] = names[eqn.invars[0]]
            continue
        ins, expr = elementwise_expr(eqn.primitive, [a.aval.dtype for a in eqn.invars],
                                     eqn.params)
        vals = {id(n): (ir_const(a.val, a.aval.dtype) if type(a) is Literal else names[a])
                for n, a in zip(ins, eqn.invars)}
        for node in nodes(expr):
            if id(node) not in vals:
                vals[id(node)] = g.value(node, [vals[id(a)] for a in node.args])
        names[eqn.outvars[0]] = vals[id(expr)]

    def value_of(v):
        return ir_const(v.val, v.aval.dtype) if type(v) is Literal else names[v]

    out_specs, init, acc_ty = [], None, "i8"
    if red is None:
        oo = offset(out_strides)
        for k, v in enumerate(outs):
            mty = _mem_ty(v.aval.dtype)
            val = value_of(v)
            if _ty(v.aval.dtype) == "i1":
                val = g.emit(f"zext i1 {val} to i8")
            p = g.emit(f"getelementptr {mty}, ptr {ptrs[nin + k]}, i64 {oo}")
            g.raw(f"  store {mty} {val}, ptr {p}")
            out_specs.append((tuple(v.aval.shape), np.dtype(v.aval.dtype)))
    else:
        dtype = np.dtype(mapped.aval.dtype)
        acc_ty = _ty(dtype)
        kind = {"reduce_sum": "sum", "reduce_max": "max", "reduce_min": "min"}[red.primitive.name]
        val = value_of(mapped)
        out_specs.append((tuple(red.outvars[0].aval.shape), dtype))
        if lay.kind == "row":
            cur = g.emit(f"load {acc_ty}, ptr %acc")
            g.raw(f"  store {acc_ty} {_combine(g, kind, dtype, acc_ty, cur, val, True)}, "
                  "ptr %acc")
        else:  # column: accumulate into the output in memory
            init = _identity_value(kind, dtype)
            p = g.emit(f"getelementptr {acc_ty}, ptr {ptrs[nin]}, i64 {offset(out_strides)}")
            cur = g.emit(f"load {acc_ty}, ptr {p}")
            g.raw(f"  store {acc_ty} {_combine(g, kind, dtype, acc_ty, cur, val, False)}, "
                  f"ptr {p}")
    # -- the loop nest (indices in allocas: LLVM promotes them to registers) --
    f.raw(f"  %acc = alloca {acc_ty}")
    for j in range(nd):
        f.raw(f"  %i{j}.addr = alloca i64")
    lines = []
    first_reduced = lay.reduced.index(True) if lay.kind == "row" else None

    def loop(j):
        if j == nd:
            lines.extend(g.lines)
            return
        start, end = ("%lo", "%hi") if j == 0 else ("0", dimv[j])
        if j == first_reduced:
            lines.append(f"  store {acc_ty} {_identity(kind, dtype)}, ptr %acc")
        lines.append(f"  store i64 {start}, ptr %i{j}.addr")
        lines.append(f"  br label %head{j}")
        lines.append(f"head{j}:")
        lines.append(f"  %i{j} = load i64, ptr %i{j}.addr")
        lines.append(f"  %c{j} = icmp slt i64 %i{j}, {end}")
        lines.append(f"  br i1 %c{j}, label %body{j}, label %exit{j}")
        lines.append(f"body{j}:")
        loop(j + 1)
        lines.append(f"  %n{j} = add i64 %i{j}, 1")
        lines.append(f"  store i64 %n{j}, ptr %i{j}.addr")
        lines.append(f"  br label %head{j}")
        lines.append(f"exit{j}:")
        if j == first_reduced:  # the row's value: store it at the kept indices' position
            off = "0"
            for i, s in zip(idx[:j], out_strides[:j]):
                if s == "0":
                    continue
                t = i if s == "1" else _emit_line(lines, f"mul i64 {i}, {s}", f"%ro{i[2:]}")
                off = t if off == "0" else _emit_line(lines, f"add i64 {off}, {t}",
                                                      f"%ra{i[2:]}")
            lines.append(f"  %accv = load {acc_ty}, ptr %acc")
            lines.append(f"  %accp = getelementptr {acc_ty}, ptr {ptrs[nin]}, i64 {off}")
            lines.append(f"  store {acc_ty} %accv, ptr %accp")

    if nd == 0:
        lines.extend(g.lines)
    else:
        loop(0)
    nptr = nin + len(outs)
    params = ([f"ptr noalias %p{k}" for k in range(nptr)] + [f"i64 %d{j}" for j in range(nd)]
              + ["i64 %lo", "i64 %hi"])
    text = (f"define internal void @{name}({', '.join(params)}) #1 {{\n" + "\n".join(f.lines)
            + "\n" + "\n".join(lines) + "\n  ret void\n}\n")
    work = math.prod(space) * max(1, len(eqns))
    return text, lay, out_specs, init, work


# A flat group of at least this many equations is computed in blocks (see _staged_nest).
STAGED_DEPTH = 24
_STAGE_BYTES = 24 << 10    # the block's intermediates: within the L1 cache


def _staged_nest(jaxpr, name, module, lay, space):
    """A deep elementwise chain over a flat iteration space, computed a block of B elements at
    a time: each equation is one vector loop over the block (a small function of its own,
    shared by equal equations), its result kept in a stack buffer (reused once dead) that later
    equations read. One loop per element with the whole chain in registers would be bound by
    the chain's latency (hundreds of dependent operations per element, a few vectors in
    flight); per equation and block, the vectors of a block are independent and the loops run
    at the processor's throughput, while the intermediates stay in the L1 cache instead of
    going to memory as NumPy's would."""
    eqns = list(jaxpr.eqns)
    nin, outs = len(jaxpr.invars), list(jaxpr.outvars)
    if not all(any(v in e.outvars for e in eqns) for v in outs):
        raise UnsupportedOnCPU("a fused output computed by no equation")
    last_use = {}
    for k, eqn in enumerate(eqns):
        for a in eqn.invars:
            if type(a) is not Literal:
                last_use[a] = k
    # buffer slots, reused after a value's last use (per IR type)
    slot_of, free, nslots = {}, {}, 0
    for k, eqn in enumerate(eqns):
        v = eqn.outvars[0]
        ty = _ty(v.aval.dtype)
        if free.get(ty):
            slot_of[v] = free[ty].pop()
        else:
            slot_of[v] = (ty, nslots)
            nslots += 1
        for a in set(a for a in eqn.invars if type(a) is not Literal):
            if last_use.get(a) == k and a in slot_of:
                free.setdefault(slot_of[a][0], []).append(slot_of[a])
    block = max(16, min(512, (_STAGE_BYTES // (4 * max(nslots, 1))) // 16 * 16))
    f = _Function(module)
    f.raw("entry:")
    ptrs = [f"%p{k}" for k in range(nin + len(outs))]
    for ty, k in sorted(set(slot_of.values()), key=lambda t: t[1]):
        f.raw(f"  %buf{k} = alloca [{block} x {ty}], align 64")
    scalars = {}
    for k, v in enumerate(jaxpr.invars):
        if not lay.present[k][0]:  # rank 0 (or size 1): read once
            mty = _mem_ty(v.aval.dtype)
            x = f.emit(f"load {mty}, ptr {ptrs[k]}")
            scalars[v] = f.emit(f"icmp ne i8 {x}, 0") if _ty(v.aval.dtype) == "i1" else x
    f.raw("  %start.addr = alloca i64")
    f.raw("  store i64 %lo, ptr %start.addr")
    f.raw("  br label %block.head")
    f.raw("block.head:")
    f.raw("  %start = load i64, ptr %start.addr")
    f.raw("  %more = icmp slt i64 %start, %hi")
    f.raw("  br i1 %more, label %block.body, label %block.exit")
    f.raw("block.body:")
    f.raw("  %left = sub i64 %hi, %start")
    f.raw(f"  %short = icmp slt i64 %left, {block}")
    f.raw(f"  %n = select i1 %short, i64 %left, i64 {block}")
    out_index = {v: k for k, v in enumerate(outs)}
    for eqn in eqns:
        # the equation's operands: ("v", type) a block of values at a pointer, ("s", type) a
        # scalar, ("c", text) a literal; its result: the block buffer, and an output array
        kinds, args = [], []
        for a in eqn.invars:
            if type(a) is Literal:
                kinds.append(("c", ir_const(a.val, a.aval.dtype), _ty(a.aval.dtype)))
            elif a in scalars:
                kinds.append(("s", None, _ty(a.aval.dtype)))
                args.append(f"{_ty(a.aval.dtype)} {scalars[a]}")
            elif a in slot_of:
                kinds.append(("v", None, _ty(a.aval.dtype)))
                args.append(f"ptr %buf{slot_of[a][1]}")
            else:
                mty = _mem_ty(a.aval.dtype)
                kinds.append(("a", None, _ty(a.aval.dtype)))
                p = f.emit(f"getelementptr {mty}, ptr {ptrs[jaxpr.invars.index(a)]}, i64 %start")
                args.append(f"ptr {p}")
        v = eqn.outvars[0]
        args.append(f"ptr %buf{slot_of[v][1]}")
        if v in out_index:
            mty = _mem_ty(v.aval.dtype)
            p = f.emit(f"getelementptr {mty}, ptr {ptrs[nin + out_index[v]]}, i64 %start")
            args.append(f"ptr {p}")
        fn = _block_function(eqn, kinds, v in out_index, module)
        f.raw(f"  call void @{fn}({', '.join(args + ['i64 %n'])})")
    f.raw(f"  %next = add i64 %start, {block}")
    f.raw("  store i64 %next, ptr %start.addr")
    f.raw("  br label %block.head")
    f.raw("block.exit:")
    params = ([f"ptr noalias %p{k}" for k in range(nin + len(outs))]
              + ["i64 %d0", "i64 %lo", "i64 %hi"])
    text = (f"define internal void @{name}({', '.join(params)}) #1 {{\n" + "\n".join(f.lines)
            + "\n  ret void\n}\n")
    out_specs = [(tuple(v.aval.shape), np.dtype(v.aval.dtype)) for v in outs]
    return text, lay, out_specs, None, math.prod(space) * len(eqns)


def _block_function(eqn, kinds, stored, module):
    """The name of a function computing one equation over a block (`n` elements), defined in
    `module` once per distinct equation; see _staged_nest for the operand kinds."""
    out = eqn.outvars[0]
    ty = _ty(out.aval.dtype)
    params = []
    g = _Function(module, prefix="t")
    for k, (kind, _, aty) in enumerate(kinds):
        if kind == "s":
            params.append(f"{aty} %x{k}")
        elif kind in "va":
            params.append(f"ptr noalias %x{k}")
    params.append("ptr noalias %dst")
    if stored:
        params.append("ptr noalias %out")
    params.append("i64 %n")
    vals = []
    for k, (kind, const, aty) in enumerate(kinds):
        if kind == "c":
            vals.append(const)
        elif kind == "s":
            vals.append(f"%x{k}")
        else:
            mty = "i8" if aty == "i1" else aty
            p = g.emit(f"getelementptr {mty if kind == 'a' else aty}, ptr %x{k}, i64 %j")
            x = g.emit(f"load {mty if kind == 'a' else aty}, ptr {p}")
            vals.append(g.emit(f"icmp ne i8 {x}, 0") if kind == "a" and aty == "i1" else x)
    if eqn.primitive.name == "broadcast_in_dim":
        value = vals[0]
    else:
        ins, expr = elementwise_expr(eqn.primitive, [a.aval.dtype for a in eqn.invars],
                                     eqn.params)
        env = {id(n): x for n, x in zip(ins, vals)}
        for node in nodes(expr):
            if id(node) not in env:
                env[id(node)] = g.value(node, [env[id(a)] for a in node.args])
        value = env[id(expr)]
    p = g.emit(f"getelementptr {ty}, ptr %dst, i64 %j")
    g.raw(f"  store {ty} {value}, ptr {p}")
    if stored:
        mty = _mem_ty(out.aval.dtype)
        val = g.emit(f"zext i1 {value} to i8") if ty == "i1" else value
        q = g.emit(f"getelementptr {mty}, ptr %out, i64 %j")
        g.raw(f"  store {mty} {val}, ptr {q}")
    body = "\n".join(g.lines)
    text = ("(" + ", ".join(params) + ") #2 {\nentry:\n  br label %head\nhead:\n"
            "  %j = phi i64 [0, %entry], [%j1, %body]\n  %c = icmp slt i64 %j, %n\n"
            "  br i1 %c, label %body, label %exit\nbody:\n" + body
            + "\n  %j1 = add i64 %j, 1\n  br label %head\nexit:\n  ret void\n}\n")
    fn = "fgb_" + hashlib.sha1(text.encode()).hexdigest()[:16]
    module.helpers.setdefault(fn, f"define internal void @{fn}" + text)
    return fn


def _read_shape(jaxpr, v, rank):
    """The shape a kernel reads input `v` as, broadcasting NumPy-style to the iteration space:
    its own, or (read through a `broadcast_in_dim` of the group) with 1s on the new axes."""
    seen = set()
    for eqn in jaxpr.eqns:
        if v in eqn.invars:
            if eqn.primitive.name == "broadcast_in_dim":
                shape = [1] * len(eqn.params["shape"])
                for i, d in enumerate(eqn.params["broadcast_dimensions"]):
                    shape[d] = v.aval.shape[i]
                seen.add(tuple(shape))
            else:
                seen.add((1,) * (rank - v.aval.ndim) + tuple(v.aval.shape))
    if len(seen) > 1:
        raise UnsupportedOnCPU("an input read both through a broadcast and directly")
    return seen.pop() if seen else tuple(v.aval.shape)


def _components(jaxpr):
    """The connected parts of a fused body (several when the fusion pass merged independent
    groups, one kernel call for all of them): sub-Jaxprs in program order."""
    parent = {}

    def find(v):
        while parent.get(v, v) is not v:
            v = parent[v]
        return v

    def union(a, b):
        ra, rb = find(a), find(b)
        if ra is not rb:
            parent[ra] = rb

    defined = {v for eqn in jaxpr.eqns for v in eqn.outvars}
    for eqn in jaxpr.eqns:  # connected through values computed in the body (not its inputs)
        for a in eqn.invars:
            if type(a) is not Literal and a in defined:
                union(a, eqn.outvars[0])
    groups = {}
    for eqn in jaxpr.eqns:
        groups.setdefault(find(eqn.outvars[0]), []).append(eqn)
    if len(groups) == 1:
        return [jaxpr]
    comps = []
    for eqns in groups.values():
        defined = {v for e in eqns for v in e.outvars}
        ins = [v for v in jaxpr.invars if any(v in e.invars for e in eqns)]
        outs = [v for v in jaxpr.outvars if v in defined]
        comps.append(type(jaxpr)([], ins, outs, eqns))
    return comps


def kernel_source(body, name):
    """The Kernel of fusion group `body` (a `fused` equation's ClosedJaxpr without consts): the
    loop nest of each connected part, and an entry `name(argv, dv)`, argv the NumPy array
    objects (PyObject *[]) and dv the int64 loop sizes followed by lo and hi, that reads the
    arrays' data pointers and runs the loop nest over [lo, hi) of its outermost loop (one
    part), or runs parts [lo, hi) (several parts; equal parts share one loop nest)."""
    jaxpr = getattr(body, "jaxpr", body)
    if getattr(body, "consts", None):
        raise UnsupportedOnCPU("a fused body with constants")
    module = _Module(name)
    comps = _components(jaxpr)
    arrays = list(jaxpr.invars) + list(jaxpr.outvars)
    nests, calls, out_specs, dims, work, lay0, init = {}, [], [], [], 0, None, None
    position = {v: k for k, v in enumerate(arrays)}
    part_of = [set() for _ in arrays]
    late = {}
    for c, comp in enumerate(comps):
        for v in (*comp.invars, *comp.outvars):
            part_of[position[v]].add(c)
        text, lay, specs, init, w = _loop_nest(comp, f"{name}.nest", module)
        late.update(_late_reads(comp, lay, position))
        key = text
        if key not in nests:
            nests[key] = f"{name}.nest{len(nests)}"
        lay0 = lay0 or lay
        idx = [position[v] for v in (*comp.invars, *comp.outvars)]
        calls.append((nests[key], idx, len(dims), len(lay.dims)))
        dims += lay.dims
        out_specs += specs
        work += w
    if len(comps) > 1 and (init is not None or any(s[0] == () for s in out_specs)):
        raise UnsupportedOnCPU("merged groups with reductions")
    functions = "".join(text.replace(f"@{name}.nest(", f"@{fn}(", 1)
                        for text, fn in nests.items())
    nptr = len(arrays)
    loads = "".join(f"  %g{k} = getelementptr ptr, ptr %argv, i64 {k}\n"
                    f"  %a{k} = load ptr, ptr %g{k}\n"
                    f"  %s{k} = getelementptr i8, ptr %a{k}, i64 16\n"
                    f"  %q{k} = load ptr, ptr %s{k}\n" for k in range(nptr))
    sizes = [f"%d{j}" for j in range(len(dims))] + ["%lo", "%hi"]
    loads += "".join(f"  %e{j} = getelementptr i64, ptr %dv, i64 {j}\n"
                     f"  {v} = load i64, ptr %e{j}\n" for j, v in enumerate(sizes))
    head = f"define void @{name}(ptr %argv, ptr %dv) #0 {{\nentry:\n" + loads
    if len(comps) == 1:
        fn, idx, d0, nd = calls[0]
        args = ([f"ptr %q{k}" for k in idx] + [f"i64 %d{d0 + j}" for j in range(nd)]
                + ["i64 %lo", "i64 %hi"])
        entry = head + f"  call void @{fn}({', '.join(args)})\n  ret void\n}}\n"
    else:  # parts lo <= c < hi
        body_lines = []
        for c, (fn, idx, d0, nd) in enumerate(calls):
            args = ([f"ptr %q{k}" for k in idx] + [f"i64 %d{d0 + j}" for j in range(nd)]
                    + ["i64 0", f"i64 %d{d0}" if nd else "i64 1"])
            body_lines += [f"  %ge{c} = icmp sle i64 %lo, {c}", f"  %lt{c} = icmp sgt i64 %hi, {c}",
                           f"  %in{c} = and i1 %ge{c}, %lt{c}",
                           f"  br i1 %in{c}, label %run{c}, label %next{c}", f"run{c}:",
                           f"  call void @{fn}({', '.join(args)})", f"  br label %next{c}",
                           f"next{c}:"]
        entry = head + "  br label %next_start\nnext_start:\n" + "\n".join(body_lines) \
            + "\n  ret void\n}\n"
        init = None
    ir = functions + entry
    threadable = (len(comps) > 1 or (len(lay0.dims) > 0 and (
        lay0.kind == "map" or (lay0.kind == "row" and not lay0.reduced[0]))))
    return Kernel(name, ir, len(jaxpr.invars), out_specs, tuple(dims), init, threadable, work,
                  module.decls, module.helpers, lay0.kind == "map", parts=len(comps),
                  part_of=[frozenset(p) for p in part_of], pattern=ir.replace(f"@{name}", "@K"),
                  late_reads=[late.get(v, frozenset()) for v in jaxpr.outvars])


def _late_reads(comp, lay, position):
    """{output var: indices of the inputs a staged nest reads after writing it} (see
    _staged_nest: each equation is a stage over the block, and writes its output there)."""
    eqns = list(comp.eqns)
    if not (len(lay.dims) == 1 and not any(lay.reduced) and len(eqns) >= STAGED_DEPTH):
        return {}   # one element at a time: every input is loaded before any output is stored
    last = {}
    for k, eqn in enumerate(eqns):
        for a in eqn.invars:
            if a in position and a in comp.invars:
                last[a] = k
    out = {}
    for k, eqn in enumerate(eqns):
        for v in eqn.outvars:
            if v in comp.outvars:
                out[v] = frozenset(position[a] for a, r in last.items() if r > k)
    return out


def _emit_line(lines, text, name):
    lines.append(f"  {name} = {text}")
    return name


def _identity(kind, dtype):
    return ir_const(_identity_value(kind, dtype), dtype)


def _identity_value(kind, dtype):
    dtype = np.dtype(dtype)
    if kind == "sum":
        return dtype.type(0)
    if dtype.kind == "f":
        return dtype.type(-np.inf if kind == "max" else np.inf)
    info = np.iinfo(dtype)
    return dtype.type(info.min if kind == "max" else info.max)


def _combine(g, kind, dtype, ty, acc, v, vector_sum):
    """acc (+|max|min) v. Float sums over the last axis may be reassociated (vector partial
    sums); max/min propagate NaN (LLVM's maximum/minimum)."""
    if kind == "sum":
        if dtype.kind == "f":
            return g.emit(f"fadd {'reassoc ' if vector_sum else ''}{ty} {acc}, {v}")
        return g.emit(f"add {ty} {acc}, {v}")
    if dtype.kind == "f":
        return g.intrinsic("maximum" if kind == "max" else "minimum", ty, acc, v)
    signed = dtype.kind == "i"
    op = ("smax" if signed else "umax") if kind == "max" else ("smin" if signed else "umin")
    return g.intrinsic(op, ty, acc, v)
