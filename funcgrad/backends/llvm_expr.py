"""LLVM IR for one equation's expression: the IR types and constants of NumPy's dtypes, and
`Function`, the body of an IR function being written, whose `value` translates a primitive's
expression (funcgrad.core.lowering) node by node with NumPy's semantics per dtype; `Module`
collects the declarations and helper functions it needs. `can_translate` and
`cheap_to_recompute` say which equations the compiled CPU kernels take (jit's fusion predicates
on the CPU). llvm_codegen.py builds the kernels of fusion groups from these.

Floating-point operations are not contracted or reassociated (no fast-math), so elementwise
results equal NumPy's bit for bit, except the float32 `exp`, `log`, `tanh` written as
vectorizable polynomials (within a few ulp of NumPy's; see llvm_math.py).
"""

from __future__ import annotations

import math
import struct

import numpy as np

from ..core import Literal
from ..core.lowering import Unlowerable, elementwise_expr, nodes
from . import llvm_math

__all__ = ["Function", "Module", "can_translate", "cheap_to_recompute", "ir_const", "ir_type",
           "memory_type", "UnsupportedOnCPU", "REDUCTIONS"]


class UnsupportedOnCPU(Unlowerable):
    """What the LLVM generator does not translate (or does not fuse, being slower fused)."""


REDUCTIONS = ("reduce_sum", "reduce_max", "reduce_min")

_IR_TYPES = {"bool": "i1", "int8": "i8", "int16": "i16", "int32": "i32", "int64": "i64",
             "uint8": "i8", "uint16": "i16", "uint32": "i32", "uint64": "i64",
             "float32": "float", "float64": "double"}


def ir_type(dtype):
    t = _TY_CACHE.get(dtype)
    if t is None:
        t = _IR_TYPES.get(np.dtype(dtype).name)
        if t is None:
            raise UnsupportedOnCPU(f"dtype {np.dtype(dtype).name} in a compiled CPU kernel")
        _TY_CACHE[dtype] = t
    return t


_TY_CACHE: dict = {}


def memory_type(dtype):
    """The type an array element has in memory (NumPy's bool is a byte)."""
    return "i8" if np.dtype(dtype).kind == "b" else ir_type(dtype)


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


class Function:
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
        t = ir_type(out)
        src = node.args[0].dtype if node.args else out
        st = ir_type(src)
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
        st, t = ir_type(src), ir_type(out)
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
        st, t = ir_type(src), ir_type(out)
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


class Module:
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
            ir_type(out.dtype)
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
            ir_type(d)
        probe = Module("probe")
        f = Function(probe)
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
