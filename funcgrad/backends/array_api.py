"""The NumPy-named array calls of funcgrad's primitives, over any Array API standard namespace.

Each primitive's implementation (`impl(xp, ...)` in funcgrad/lax) is written against an array
namespace `xp` with NumPy's names (`xp.arccos`, `xp.concatenate`, `xp.power`, ...), which NumPy and
CuPy both provide. `ArrayAPINamespace(std)` gives the same names for a namespace that follows the
Python Array API standard (https://data-apis.org/array-api/), built only from the standard's
functions, so that the interpreter runs on such arrays unchanged.

Its main use is the portability check (tests/test_portability.py): with `array_api_strict` (a
standard namespace with nothing beyond the standard, that refuses implicit conversions) as the
namespace, every primitive's implementation runs, which proves it uses only portable array calls
and never takes values to the host behind the caller's back.

    import array_api_strict
    from funcgrad.backends.array_api import register
    register(array_api_strict)      # strict arrays in -> strict arrays out, through the interpreter

Every NumPy name of the elementwise vocabulary (funcgrad.core.lowering.VOCABULARY, the calls an
elementwise primitive's implementation may make) is here; tests/test_lowering.py checks it.

Dtypes: funcgrad describes dtypes with NumPy's (avals, params); the adapter maps them to the
namespace's dtypes by name (`np.float32` -> `std.float32`) and back.
"""

from __future__ import annotations

import math

import numpy as np

from ..core import avals as _avals
from ..core import placement as _placement

__all__ = ["ArrayAPINamespace", "register", "Unsupported"]


class Unsupported(NotImplementedError):
    """An operation the Array API standard has no portable way to express."""


_DTYPE_NAMES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                "float32", "float64", "complex64", "complex128")


class _Linalg:
    """NumPy's `linalg` names over the standard's optional `linalg` extension."""

    def __init__(self, ns):
        self._ns = ns
        self._std = ns._std

    def _ext(self, name):
        lin = getattr(self._std, "linalg", None)
        fn = getattr(lin, name, None) if lin is not None else None
        if fn is None:
            raise Unsupported(f"linalg.{name}: this array namespace has no linalg extension "
                              f"with {name}")
        return fn

    def solve(self, a, b):
        return self._ext("solve")(a, b)

    def cholesky(self, a):
        return self._ext("cholesky")(a)

    def slogdet(self, a):
        res = self._ext("slogdet")(a)
        return res[0], res[1]

    def eigh(self, a, UPLO="L"):
        # The standard reads a symmetric (Hermitian) matrix; NumPy reads one triangle. Mirror
        # that triangle (conjugated, for complex matrices).
        ns = self._ns
        tri = ns.tril(a) if UPLO == "L" else ns.triu(a)
        strict = ns.tril(a, -1) if UPLO == "L" else ns.triu(a, 1)
        sym = tri + self._std.conj(self._std.matrix_transpose(strict))
        res = self._ext("eigh")(sym)
        return res[0], res[1]

    def eig(self, a):
        raise Unsupported("linalg.eig: the Array API standard has no eigensolver for general "
                          "(non-symmetric) matrices")

    def svd(self, a, full_matrices=True, compute_uv=True):
        if not compute_uv:
            return self._ext("svdvals")(a)
        res = self._ext("svd")(a, full_matrices=full_matrices)
        return res[0], res[1], res[2]

    def qr(self, a, mode="reduced"):
        res = self._ext("qr")(a, mode=mode)
        return res[0], res[1]


class _FFT:
    """NumPy's `fft` names over the standard's optional `fft` extension."""

    def __init__(self, ns):
        self._std = ns._std

    def _ext(self, name):
        mod = getattr(self._std, "fft", None)
        fn = getattr(mod, name, None) if mod is not None else None
        if fn is None:
            raise Unsupported(f"fft.{name}: this array namespace has no fft extension with "
                              f"{name}")
        return fn

    def fftn(self, x, s=None, axes=None):
        return self._ext("fftn")(x, s=s, axes=axes)

    def ifftn(self, x, s=None, axes=None):
        return self._ext("ifftn")(x, s=s, axes=axes)

    def rfftn(self, x, s=None, axes=None):
        return self._ext("rfftn")(x, s=s, axes=axes)

    def irfftn(self, x, s=None, axes=None):
        return self._ext("irfftn")(x, s=s, axes=axes)


class ArrayAPINamespace:
    """NumPy-named functions (the subset funcgrad's primitives call) over a standard namespace.

    Only standard calls are used. Arguments that are NumPy arrays or scalars (host constants,
    such as a program's literals) are moved into the namespace first with `asarray`.
    """

    def __init__(self, std):
        self._std = std
        self.__name__ = f"ArrayAPINamespace({getattr(std, '__name__', std)})"
        self._to_std = {}    # NumPy dtype -> the namespace's dtype
        self._to_np = {}     # the namespace's dtype -> NumPy dtype
        for name in _DTYPE_NAMES:
            d = getattr(std, name, None)
            if d is not None:
                self._to_std[np.dtype(name)] = d
                self._to_np[d] = np.dtype(name)
                setattr(self, name, d)
        self._dtype_type = type(std.float64)
        self.float16 = getattr(std, "float16", _Absent("float16"))
        self.inf = math.inf
        self.nan = math.nan
        self.linalg = _Linalg(self)
        self.fft = _FFT(self)
        self.array_type = type(std.asarray(0))

    def __repr__(self):
        return self.__name__

    # -- dtypes and conversions --
    def dtype(self, dt):
        """The namespace's dtype for a NumPy dtype (or a namespace dtype, returned as is)."""
        if type(dt) is self._dtype_type:
            return dt
        return self._to_std[np.dtype(dt)]

    def np_dtype(self, dt):
        return self._to_np[dt]

    def _in(self, x):
        """A NumPy array or scalar moved into the namespace; anything else as it is."""
        if isinstance(x, (np.ndarray, np.generic)):
            return self._std.asarray(x, dtype=self._to_std[x.dtype])
        return x

    def asarray(self, x, dtype=None, copy=None):
        x = self._in(x)
        if isinstance(x, (list, tuple)):
            x = [self._in(v) for v in x]
        return self._std.asarray(x, dtype=None if dtype is None else self.dtype(dtype), copy=copy)

    def astype(self, x, dtype, copy=True):
        return self._std.astype(self._in(x), self.dtype(dtype), copy=copy)

    def copy(self, x):
        return self._std.asarray(self._in(x), copy=True)

    def real(self, x):
        return self._std.real(x)

    def imag(self, x):
        return self._std.imag(x)

    def conj(self, x):
        return self._std.conj(x)

    def make_complex(self, x, y):
        """x + i y from real arrays (lax.complex): the standard has no constructor, so the parts
        are combined arithmetically (exact for finite parts)."""
        std = self._std
        cdt = std.complex64 if x.dtype == std.float32 else std.complex128
        return std.astype(x, cdt) + std.astype(y, cdt) * std.asarray(1j, dtype=cdt)

    # -- creation --
    def zeros(self, shape, dtype=None):
        return self._std.zeros(tuple(shape), dtype=None if dtype is None else self.dtype(dtype))

    def empty(self, shape, dtype=None):
        return self._std.empty(tuple(shape), dtype=None if dtype is None else self.dtype(dtype))

    def full(self, shape, fill_value, dtype=None):
        dt = None if dtype is None else self.dtype(dtype)
        fill_value = self._in(fill_value)
        if hasattr(fill_value, "shape"):  # a 0-d array: broadcast it (full takes Python scalars)
            return self._std.asarray(self._std.broadcast_to(self._std.astype(fill_value, dt),
                                                            tuple(shape)), copy=True)
        return self._std.full(tuple(shape), fill_value, dtype=dt)

    def ones_like(self, x):
        return self._std.ones_like(x)

    def arange(self, n, dtype=None):
        return self._std.arange(n, dtype=None if dtype is None else self.dtype(dtype))

    # -- elementwise, NumPy name -> standard name --
    def _unary(std_name):
        def fn(self, x):
            return getattr(self._std, std_name)(self._in(x))
        fn.__name__ = std_name
        return fn

    def _binary(std_name):
        def fn(self, x, y):
            return getattr(self._std, std_name)(self._in(x), self._in(y))
        fn.__name__ = std_name
        return fn

    negative = _unary("negative")
    positive = _unary("positive")
    square = _unary("square")
    log2 = _unary("log2")
    log10 = _unary("log10")
    trunc = _unary("trunc")
    rint = _unary("round")
    isinf = _unary("isinf")
    signbit = _unary("signbit")
    logical_not = _unary("logical_not")
    sign = _unary("sign")
    floor = _unary("floor")
    ceil = _unary("ceil")
    round = _unary("round")
    isfinite = _unary("isfinite")
    isnan = _unary("isnan")
    exp = _unary("exp")
    log = _unary("log")
    log1p = _unary("log1p")
    expm1 = _unary("expm1")
    sin = _unary("sin")
    cos = _unary("cos")
    tan = _unary("tan")
    arcsin = _unary("asin")
    arccos = _unary("acos")
    arctan = _unary("atan")
    sinh = _unary("sinh")
    cosh = _unary("cosh")
    tanh = _unary("tanh")
    arcsinh = _unary("asinh")
    arccosh = _unary("acosh")
    arctanh = _unary("atanh")
    sqrt = _unary("sqrt")
    reciprocal = _unary("reciprocal")
    abs = absolute = _unary("abs")
    invert = _unary("bitwise_invert")

    add = _binary("add")
    subtract = _binary("subtract")
    multiply = _binary("multiply")
    true_divide = divide = _binary("divide")
    floor_divide = _binary("floor_divide")
    remainder = _binary("remainder")
    power = _binary("pow")
    maximum = _binary("maximum")
    minimum = _binary("minimum")
    arctan2 = _binary("atan2")
    hypot = _binary("hypot")
    logical_and = _binary("logical_and")
    logical_or = _binary("logical_or")
    logical_xor = _binary("logical_xor")
    nextafter = _binary("nextafter")
    copysign = _binary("copysign")
    logaddexp = _binary("logaddexp")
    equal = _binary("equal")
    not_equal = _binary("not_equal")
    less = _binary("less")
    less_equal = _binary("less_equal")
    greater = _binary("greater")
    greater_equal = _binary("greater_equal")
    bitwise_and = _binary("bitwise_and")
    bitwise_or = _binary("bitwise_or")
    bitwise_xor = _binary("bitwise_xor")
    left_shift = _binary("bitwise_left_shift")
    right_shift = _binary("bitwise_right_shift")
    del _unary, _binary

    def exp2(self, x):
        return self._std.pow(2.0, self._in(x))

    def fmax(self, x, y):
        """NumPy's fmax: the larger, a NaN only where both are NaN."""
        x, y = self._in(x), self._in(y)
        return self._std.where(self._std.isnan(y), x,
                               self._std.where(self._std.isnan(x), y, self._std.maximum(x, y)))

    def fmin(self, x, y):
        x, y = self._in(x), self._in(y)
        return self._std.where(self._std.isnan(y), x,
                               self._std.where(self._std.isnan(x), y, self._std.minimum(x, y)))

    def ldexp(self, x, n):
        x = self._in(x)
        return x * self._std.pow(self._std.asarray(2.0, dtype=x.dtype),
                                 self._std.astype(self._in(n), x.dtype))

    def cbrt(self, x):
        x = self._in(x)
        return self._std.copysign(self._std.pow(self._std.abs(x), 1.0 / 3.0), x)

    def fmod(self, x, y):
        """C's fmod (the sign of x) from the standard's remainder (the sign of y)."""
        x, y = self._in(x), self._in(y)
        std = self._std
        r = std.remainder(x, y)
        fix = std.logical_and(r != 0, (r < 0) != (x < 0))
        return std.where(fix, r - y, r)

    def clip(self, x, lo, hi):
        return self._std.clip(self._in(x), self._in(lo), self._in(hi))

    def where(self, cond, x, y):
        return self._std.where(self._in(cond), self._in(x), self._in(y))

    def choose(self, index, cases):
        out = self._in(cases[0])
        for i in range(1, len(cases)):
            out = self._std.where(index == i, self._in(cases[i]), out)
        return out

    # -- shapes --
    def reshape(self, x, shape):
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        return self._std.reshape(self._in(x), shape)

    def transpose(self, x, axes=None):
        x = self._in(x)
        if axes is None:
            axes = tuple(reversed(range(x.ndim)))
        return self._std.permute_dims(x, tuple(axes))

    def swapaxes(self, x, a, b):
        axes = list(range(x.ndim))
        axes[a], axes[b] = axes[b], axes[a]
        return self._std.permute_dims(x, tuple(axes))

    def broadcast_to(self, x, shape):
        return self._std.broadcast_to(self._in(x), tuple(shape))

    def broadcast_shapes(self, *shapes):
        return self._std.broadcast_shapes(*shapes)

    def concatenate(self, xs, axis=0):
        return self._std.concat([self._in(x) for x in xs], axis=axis)

    def stack(self, xs, axis=0):
        return self._std.stack([self._in(x) for x in xs], axis=axis)

    def flip(self, x, axis=None):
        return self._std.flip(x, axis=axis)

    def tril(self, x, k=0):
        return self._std.tril(x, k=k)

    def triu(self, x, k=0):
        return self._std.triu(x, k=k)

    def take_along_axis(self, x, indices, axis):
        return self._std.take_along_axis(x, indices, axis=axis)

    def matmul(self, a, b):
        return self._std.matmul(self._in(a), self._in(b))

    # -- reductions and scans --
    def _axis(self, axis):
        return tuple(axis) if isinstance(axis, (list, tuple)) else axis

    def sum(self, x, axis=None, dtype=None):
        return self._std.sum(x, axis=self._axis(axis),
                             dtype=None if dtype is None else self.dtype(dtype))

    def prod(self, x, axis=None, dtype=None):
        return self._std.prod(x, axis=self._axis(axis),
                              dtype=None if dtype is None else self.dtype(dtype))

    def max(self, x, axis=None):
        return self._std.max(x, axis=self._axis(axis))

    def min(self, x, axis=None):
        return self._std.min(x, axis=self._axis(axis))

    def all(self, x, axis=None):
        return self._std.all(x, axis=self._axis(axis))

    def any(self, x, axis=None):
        return self._std.any(x, axis=self._axis(axis))

    def argmax(self, x, axis=None):
        return self._std.argmax(x, axis=axis)

    def argmin(self, x, axis=None):
        return self._std.argmin(x, axis=axis)

    def argsort(self, x, axis=-1, kind=None):
        return self._std.argsort(x, axis=axis, stable=True)

    def cumsum(self, x, axis=None, dtype=None):
        return self._std.cumulative_sum(x, axis=axis,
                                        dtype=None if dtype is None else self.dtype(dtype))

    def cumprod(self, x, axis=None, dtype=None):
        fn = getattr(self._std, "cumulative_prod", None)
        if fn is None:
            raise Unsupported("cumprod: cumulative_prod is not in this namespace's standard "
                              "version (2024.12 added it)")
        return fn(x, axis=axis, dtype=None if dtype is None else self.dtype(dtype))

    # -- scatter: no standard call combines duplicate indices --
    def take(self, x, indices, axis=None):
        return self._std.take(x, indices, axis=axis)

    def index_accumulate(self, mode, out, cols, updates):
        """Scatter (`out[cols] = updates`, or combined with ufunc `mode`): not expressible."""
        raise Unsupported(f"scatter ({mode!r}): the Array API standard has no indexed assignment "
                          "with index arrays and no operation combining updates at repeated "
                          "indices (NumPy's ufunc.at, CuPy's cupyx.scatter_add)")


class _Absent:
    """A dtype the namespace lacks: equal to nothing, so `x.dtype == xp.float16` is False."""

    def __init__(self, name):
        self.name = name

    def __eq__(self, other):
        return False

    __hash__ = object.__hash__

    def __repr__(self):
        return f"<{self.name}: not in this namespace>"


def register(std):
    """Run funcgrad's interpreter on the arrays of standard namespace `std` (for instance
    `array_api_strict`): returns the adapter. Eager calls and `eval_jaxpr` on such arrays then
    compute with the adapter as `xp`."""
    ns = ArrayAPINamespace(std)
    _placement.register_array_namespace(ns.array_type, ns)
    _avals.register_dtypes(ns._to_np)
    return ns


def unregister(ns):
    """Undo `register` (tests use this to leave the process as it was)."""
    _placement.unregister_array_namespace(ns.array_type)
    _avals.unregister_dtypes(ns._to_np)
