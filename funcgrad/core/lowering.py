"""What one element of an elementwise primitive computes, as an expression the code generators
translate: every lowering of such a primitive is derived from its one implementation.

An elementwise primitive (`prim.elementwise = True`, see funcgrad/lax/elementwise.py) has one
declaration, its implementation `impl(xp, *operands, **params)`, written with NumPy's names for
the array namespace `xp`. Run with `xp = SYMBOLIC` on `Expr` operands (one scalar each, with a
dtype), the same implementation returns an expression tree over the *vocabulary*: NumPy's
ufuncs by name (`add`, `tanh`, `floor_divide`, `isnan`, ...) plus `where`, `astype`, `view` and
constants. Every lowering comes from that one declaration:

* NumPy (funcgrad/backends/numpy_backend.py): the implementation itself; when its expression is
  one ufunc applied to the operands in order, the generated code calls that ufunc with `out=`.
* Array API (funcgrad/backends/array_api.py): the implementation on the standard's namespace,
  which provides the vocabulary's NumPy names.
* CUDA and the compiled CPU backend (funcgrad/backends/cuda_source.py, llvm_expr.py): each
  translates the vocabulary, with NumPy's semantics per dtype (integer division by zero gives
  0, NaN wins in maximum, ...), so a fused kernel computes what the NumPy path computes.

So a new elementwise primitive written with vocabulary calls gets every lowering without a
table to edit, and a new dtype is one entry per code generator. `elementwise_expr` caches the
expression of each (primitive, operand dtypes, params); a test checks that every generator
translates every primitive's expression for every dtype it accepts.

Dtypes follow NumPy exactly: each ufunc node resolves its loop with `ufunc.resolve_dtypes`
(Python scalars are weak, NEP 50) and casts its operands to the loop's dtypes with explicit
`astype` nodes, so a generator never promotes implicitly.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["Expr", "SYMBOLIC", "elementwise_expr", "single_ufunc", "Unlowerable", "VOCABULARY",
           "nodes"]


class Unlowerable(NotImplementedError):
    """An implementation that leaves the vocabulary (or is not elementwise)."""


# ufuncs the expressions may use, by NumPy name. A code generator implements each (or says
# which it lacks); see funcgrad/backends for the translations.
VOCABULARY = frozenset({
    # arithmetic
    "add", "subtract", "multiply", "true_divide", "floor_divide", "remainder", "fmod", "power",
    "negative", "positive", "absolute", "sign", "reciprocal", "square", "maximum", "minimum",
    "fmax", "fmin", "copysign", "nextafter", "ldexp",
    # float math
    "exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sqrt", "cbrt", "sin", "cos", "tan",
    "arcsin", "arccos", "arctan", "arctan2", "sinh", "cosh", "tanh", "arcsinh", "arccosh",
    "arctanh", "hypot", "logaddexp", "floor", "ceil", "rint", "trunc",
    # predicates and comparisons
    "isnan", "isinf", "isfinite", "signbit", "equal", "not_equal", "less", "less_equal",
    "greater", "greater_equal", "logical_and", "logical_or", "logical_xor", "logical_not",
    # bits
    "bitwise_and", "bitwise_or", "bitwise_xor", "invert", "left_shift", "right_shift",
})
# The other node kinds: "input" (operand k), "const" (a NumPy scalar), "where" (cond, a, b),
# "astype" (a value conversion, NumPy's `astype`), "view" (a reinterpretation of the bits).
_ALIASES = {"divide": "true_divide", "abs": "absolute", "round": "rint", "mod": "remainder",
            "bitwise_not": "invert", "bitwise_invert": "invert", "pow": "power",
            "arctan2": "arctan2", "atan2": "arctan2"}


class Expr:
    """One scalar of an elementwise computation: `op` applied to `args`, of NumPy `dtype`.

    Operators and the NumPy names of `SYMBOLIC` build new nodes; nodes are compared by identity
    (a shared subexpression is one node, which generators compute once)."""

    __slots__ = ("op", "args", "dtype", "value", "__weakref__")
    shape = ()
    ndim = 0
    size = 1

    def __init__(self, op, args, dtype, value=None):
        self.op = op
        self.args = tuple(args)
        self.dtype = np.dtype(dtype)
        self.value = value   # "input": its position; "const": the NumPy scalar

    def __repr__(self):
        if self.op == "input":
            return f"x{self.value}:{self.dtype.name}"
        if self.op == "const":
            return f"{self.value!r}:{self.dtype.name}"
        return f"{self.op}({', '.join(map(repr, self.args))}):{self.dtype.name}"

    __hash__ = object.__hash__

    # -- conversions --
    def astype(self, dtype, copy=True):
        return _astype(self, dtype)

    def view(self, dtype):
        dtype = np.dtype(dtype)
        if dtype.itemsize != self.dtype.itemsize:
            raise Unlowerable(f"view of {self.dtype} as {dtype}: the sizes differ")
        return self if dtype == self.dtype else Expr("view", [self], dtype)

    def __bool__(self):
        raise Unlowerable("Python control flow on an element's value: not elementwise code")

    def __index__(self):
        raise Unlowerable("an element's value used as a Python int")

    __float__ = __int__ = __index__

    # -- operators: NumPy's ufuncs --
    def __add__(self, o): return _ufunc("add", self, o)
    def __radd__(self, o): return _ufunc("add", o, self)
    def __sub__(self, o): return _ufunc("subtract", self, o)
    def __rsub__(self, o): return _ufunc("subtract", o, self)
    def __mul__(self, o): return _ufunc("multiply", self, o)
    def __rmul__(self, o): return _ufunc("multiply", o, self)
    def __truediv__(self, o): return _ufunc("true_divide", self, o)
    def __rtruediv__(self, o): return _ufunc("true_divide", o, self)
    def __floordiv__(self, o): return _ufunc("floor_divide", self, o)
    def __rfloordiv__(self, o): return _ufunc("floor_divide", o, self)
    def __mod__(self, o): return _ufunc("remainder", self, o)
    def __rmod__(self, o): return _ufunc("remainder", o, self)
    def __pow__(self, o): return _ufunc("power", self, o)
    def __rpow__(self, o): return _ufunc("power", o, self)
    def __neg__(self): return _ufunc("negative", self)
    def __pos__(self): return self
    def __abs__(self): return _ufunc("absolute", self)
    def __invert__(self): return _ufunc("invert", self)
    def __and__(self, o): return _ufunc("bitwise_and", self, o)
    def __rand__(self, o): return _ufunc("bitwise_and", o, self)
    def __or__(self, o): return _ufunc("bitwise_or", self, o)
    def __ror__(self, o): return _ufunc("bitwise_or", o, self)
    def __xor__(self, o): return _ufunc("bitwise_xor", self, o)
    def __rxor__(self, o): return _ufunc("bitwise_xor", o, self)
    def __lshift__(self, o): return _ufunc("left_shift", self, o)
    def __rshift__(self, o): return _ufunc("right_shift", self, o)
    def __lt__(self, o): return _ufunc("less", self, o)
    def __le__(self, o): return _ufunc("less_equal", self, o)
    def __gt__(self, o): return _ufunc("greater", self, o)
    def __ge__(self, o): return _ufunc("greater_equal", self, o)
    def __eq__(self, o): return _ufunc("equal", self, o)  # noqa: E704
    def __ne__(self, o): return _ufunc("not_equal", self, o)  # noqa: E704


def _const(value, dtype):
    dtype = np.dtype(dtype)
    with np.errstate(all="ignore"):
        return Expr("const", (), dtype, dtype.type(value))


def _operand(x):
    """An Expr, a Python scalar (weak: passed to resolve_dtypes as its type), or a NumPy
    scalar / 0-d array (strong)."""
    if isinstance(x, Expr):
        return x
    if type(x) in (bool, int, float):
        return x
    if isinstance(x, (np.generic, np.ndarray)) and np.ndim(x) == 0:
        return _const(x, np.asarray(x).dtype)
    raise Unlowerable(f"operand {x!r} of type {type(x).__name__} in an elementwise expression")


def _astype(x, dtype):
    dtype = np.dtype(dtype)
    x = _operand(x)
    if not isinstance(x, Expr):
        return _const(x, dtype)
    if x.dtype == dtype:
        return x
    if x.op == "const":
        with np.errstate(all="ignore"):
            return _const(np.asarray(x.value).astype(dtype), dtype)
    return Expr("astype", [x], dtype)


def _ufunc(name, *args):
    name = _ALIASES.get(name, name)
    if name not in VOCABULARY:
        raise Unlowerable(f"numpy.{name} is not in the elementwise vocabulary")
    ops = [_operand(a) for a in args]
    uf = getattr(np, name)
    if uf.nin != len(ops):
        raise Unlowerable(f"numpy.{name} takes {uf.nin} operands, got {len(ops)}")
    key = tuple(o.dtype if isinstance(o, Expr) else type(o) for o in ops)
    try:
        loop = _resolve(name, key)
    except Exception as e:
        raise Unlowerable(f"numpy.{name} has no loop for {key}: {e}") from None
    ins = [_astype(o, dt) if isinstance(o, Expr) else _const(o, dt) for o, dt in zip(ops, loop)]
    if all(i.op == "const" for i in ins):  # fold: exactly NumPy's value
        with np.errstate(all="ignore"):
            return _const(uf(*[i.value for i in ins]), loop[-1])
    return Expr(name, ins, loop[-1])


_loops: dict = {}


def _resolve(name, key):
    loop = _loops.get((name, key))
    if loop is None:
        loop = _loops[(name, key)] = getattr(np, name).resolve_dtypes(key + (None,))
    return loop


def _where(cond, a, b):
    cond = _astype(_operand(cond), np.bool_)
    a, b = _operand(a), _operand(b)
    dts = [x.dtype if isinstance(x, Expr) else x for x in (a, b)]
    dt = np.result_type(*dts)
    a, b = _astype(a, dt), _astype(b, dt)
    if cond.op == "const":
        return a if cond.value else b
    if a is b:
        return a
    return Expr("where", [cond, a, b], dt)


class _Symbolic:
    """An array namespace whose arrays are `Expr` scalars: implementations of elementwise
    primitives run on it unchanged and return their expression."""

    __name__ = "funcgrad.core.lowering.SYMBOLIC"
    inf = math.inf
    nan = math.nan
    pi = math.pi
    e = math.e

    def __getattr__(self, name):
        if name in _DTYPE_NAMES:
            return np.dtype(name).type
        name = _ALIASES.get(name, name)
        if name in VOCABULARY:
            return lambda *args, **kw: self._call(name, args, kw)
        raise Unlowerable(f"xp.{name} is not in the elementwise vocabulary")

    @staticmethod
    def _call(name, args, kw):
        if kw.pop("out", None) is not None:
            raise Unlowerable("out= in an elementwise expression")
        dtype = kw.pop("dtype", None)
        if kw:
            raise Unlowerable(f"numpy.{name} with {sorted(kw)}")
        if dtype is not None:
            args = [_astype(a, dtype) for a in args]
        return _ufunc(name, *args)

    # -- the non-ufunc names implementations use --
    def where(self, cond, a, b):
        return _where(cond, a, b)

    def choose(self, index, cases):
        out = _operand(cases[0])
        for i in range(1, len(cases)):
            out = _where(_ufunc("equal", index, i), cases[i], out)
        return out

    def clip(self, x, lo, hi):
        return _ufunc("minimum", _ufunc("maximum", x, lo), hi)

    def astype(self, x, dtype, copy=True):
        return _astype(x, dtype)

    def asarray(self, x, dtype=None, copy=None):
        x = _operand(x)
        if dtype is not None:
            return _astype(x, dtype)
        return x if isinstance(x, Expr) else _const(x, np.result_type(x))

    def real(self, x):
        if _operand(x).dtype.kind == "c":
            raise Unlowerable("complex values")
        return x

    def broadcast_to(self, x, shape):
        return x

    def ones_like(self, x):
        return _const(1, x.dtype)

    def zeros_like(self, x):
        return _const(0, x.dtype)

    def full_like(self, x, value):
        return _const(value, x.dtype)


_DTYPE_NAMES = frozenset({"bool_", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                          "uint64", "float16", "float32", "float64", "complex64", "complex128"})

SYMBOLIC = _Symbolic()


# ---------------------------------------------------------------------------------------------
# Expressions of primitives

_cache: dict = {}


def elementwise_expr(prim, in_dtypes, params=None):
    """(input nodes, output node) of elementwise primitive `prim` on operands of `in_dtypes`,
    from its implementation run on SYMBOLIC; raises Unlowerable when it leaves the vocabulary.
    Cached per (primitive, dtypes, params)."""
    params = params or {}
    in_dtypes = tuple(np.dtype(d) for d in in_dtypes)
    try:
        key = (prim, in_dtypes, tuple(sorted(params.items())))
        hash(key)
    except TypeError:
        key = None
    hit = _cache.get(key) if key is not None else None
    if hit is not None:
        if isinstance(hit, Unlowerable):
            raise hit
        return hit
    try:
        if not getattr(prim, "elementwise", False) or prim.multiple_results:
            raise Unlowerable(f"{prim.name} is not an elementwise primitive")
        ins = [Expr("input", (), dt, k) for k, dt in enumerate(in_dtypes)]
        with np.errstate(all="ignore"):
            out = prim.impl(SYMBOLIC, *ins, **params)
        out = _operand(out)
        if not isinstance(out, Expr):
            out = _const(out, np.result_type(out))
        result = (ins, out)
    except Unlowerable as e:
        if key is not None:
            _cache[key] = Unlowerable(f"{prim.name} on {[d.name for d in in_dtypes]}: {e}")
            raise _cache[key] from None
        raise
    if key is not None:
        _cache[key] = result
    return result


def single_ufunc(prim, in_dtypes, params=None):
    """The NumPy ufunc name when `prim` on these dtypes is exactly that ufunc applied to its
    operands in order (so `ufunc(*operands, out=buffer)` computes it in place), else None."""
    try:
        ins, out = elementwise_expr(prim, in_dtypes, params)
    except Unlowerable:
        return None
    if out.op in VOCABULARY and len(out.args) == len(ins) \
            and all(a is b for a, b in zip(out.args, ins)):
        return out.op
    return None


def nodes(out):
    """The nodes of an expression in an order where arguments come first (each once)."""
    order, seen, stack = [], set(), [(out, False)]
    while stack:
        node, done = stack.pop()
        if done:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        for a in reversed(node.args):
            if id(a) not in seen:
                stack.append((a, False))
    return order
