"""Elementwise primitives: unary and binary math, comparisons, logic, select, conversions.

Operands of a binary primitive (and of select_n) share one dtype; their shapes broadcast by
NumPy's rules, so programs read `mul b 2.0:f32[]` or `add c d` with a bias `d:f32[128]`, with no
separate broadcast equation, and eager calls go straight to the NumPy ufunc. The VJP sums a
cotangent back down to each operand's shape. Dtype promotion is funcgrad.numpy's job. Each
primitive is defined once with all of its rules.
"""

from __future__ import annotations

import builtins
import math

import numpy as np

from ..core import Primitive, ShapedArray, bind
from ..core.avals import dtype_kind
from ..interpreters import ops as interpreter_ops
from ..tree_util import tree_map
from . import (
    _erf,
    structural,  # noqa: F401  (circular: used at call time only)
)
from ._batching import elementwise_batch
from ._util import (
    astype,
    check_kind,
    dtype_of,
    same_dtype,
    shape_error,
    small_floats_in_float32,
    weak,
)

FLOAT = "fc"
REAL_FLOAT = "f"
NUMBER = "iufc"
INT = "iu"
INT_OR_BOOL = "iub"
ANY = "iufcb"

# Math that ml_dtypes computes for bfloat16 one element at a time through the C library: on NumPy
# these run in float32 (vectorized) and round back once, which is also what they compute
# natively (arithmetic, comparisons and rounding keep ml_dtypes' own loops, which are fast;
# NumPy's float16 loops are used as they are).
_BFLOAT16_IN_FLOAT32 = frozenset({
    "exp", "exp2", "log", "log1p", "expm1", "sin", "cos", "tan", "asin", "acos", "atan", "sinh",
    "cosh", "tanh", "asinh", "acosh", "atanh", "sqrt", "rsqrt", "cbrt", "logistic", "erf",
    "erf_inv", "pow", "atan2", "rem"})


def _impl_for(name, impl):
    if name in _BFLOAT16_IN_FLOAT32:
        return small_floats_in_float32(impl, dtypes=("bfloat16",))
    return impl


# ---------------------------------------------------------------------------------------------
# Shared pieces of rules

def zeros_like(x):
    """Zeros with x's shape and dtype (an array or an aval)."""
    return full(x.shape, 0, x.dtype)


def full(shape, value, dtype):
    return structural.broadcast_in_dim(np.array(value, dtype), tuple(shape), ())


def _scalar(value, like):
    """A rank-0 constant of `like`'s dtype: broadcasts against `like` in binary primitives."""
    return np.array(value, like.dtype)


def broadcast_shapes(name, *avals):
    """NumPy's broadcast of the operands' shapes, or an error naming them all."""
    shapes = [a.shape for a in avals]
    if all(s == shapes[0] for s in shapes):
        return shapes[0]
    ndim = builtins.max(len(s) for s in shapes)
    out = []
    for i in range(-ndim, 0):
        sizes = {s[i] for s in shapes if len(s) >= -i} - {1}
        if len(sizes) > 1:
            raise shape_error(name, "operand shapes " + " and ".join(a.str_short() for a in avals)
                              + " cannot be broadcast together (axes must be equal or 1, "
                              "counting from the right)")
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def unbroadcast(ct, operand_aval):
    """Sum a cotangent down to the shape of an operand that was broadcast in the primitive."""
    shape = tuple(operand_aval.shape)
    if tuple(ct.shape) == shape:
        return ct
    lead = len(ct.shape) - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(shape)
                                      if s == 1 and ct.shape[lead + i] != 1)
    summed = reductions.reduce_sum(ct, axes) if axes else ct
    return structural.reshape(summed, shape) if tuple(summed.shape) != shape else summed


# ---------------------------------------------------------------------------------------------
# Unary primitives

def _unary_abstract(name, kinds, out_dtype=None):
    def rule(x):
        check_kind(name, x, kinds)
        return ShapedArray(x.shape, out_dtype or x.dtype, x.weak_type and out_dtype is None)
    return rule


def unary(name, impl, deriv=None, kinds=FLOAT, residuals="in", out_dtype=None, linear=False,
          scale=None):
    """Define an elementwise unary primitive from its derivative `deriv(x, out) -> f'(x)`.

    The Jacobian is diagonal, so the JVP multiplies the tangent by f'(x) and the VJP multiplies the
    cotangent by the same factor; `linear` primitives (like neg) apply themselves to the tangent.
    `scale(t, x, out) -> t * f'(x)` may give a cheaper direct formula (log: t / x).
    """
    p = Primitive(name, impl=_impl_for(name, impl),
                  abstract_eval=_unary_abstract(name, kinds, out_dtype),
                  residuals="none" if linear else residuals,
                  differentiable=deriv is not None or linear)
    p.elementwise = True
    p.batch = elementwise_batch(p)
    if linear:
        p.jvp = lambda primals, tangents, out: bind(p, tangents[0])
        p.vjp = lambda ct, primals, out, active: (bind(p, ct),)
    elif scale is not None:
        p.jvp = lambda primals, tangents, out: scale(tangents[0], primals[0], out)
        p.vjp = lambda ct, primals, out, active: (scale(ct, primals[0], out),)
    elif deriv is not None:
        p.jvp = lambda primals, tangents, out: mul(tangents[0], deriv(primals[0], out))
        p.vjp = lambda ct, primals, out, active: (mul(ct, deriv(primals[0], out)),)
    else:
        p.jvp = lambda primals, tangents, out: None
        p.vjp = lambda ct, primals, out, active: (None,)
    return p


def _one(x):
    return _scalar(1, x)


neg_p = unary("neg", lambda xp, x: xp.negative(x), kinds=NUMBER, linear=True)
sign_p = unary("sign", lambda xp, x: xp.sign(x), kinds=NUMBER, deriv=None)
floor_p = unary("floor", lambda xp, x: xp.floor(x), kinds=REAL_FLOAT)
ceil_p = unary("ceil", lambda xp, x: xp.ceil(x), kinds=REAL_FLOAT)
round_p = unary("round", lambda xp, x: xp.round(x), kinds=REAL_FLOAT)  # half to even, as NumPy
is_finite_p = unary("is_finite", lambda xp, x: xp.isfinite(x), kinds=REAL_FLOAT, out_dtype=bool)
exp_p = unary("exp", lambda xp, x: xp.exp(x), lambda x, y: y, residuals="out")
exp2_p = unary("exp2", lambda xp, x: xp.exp2(x),
               lambda x, y: mul(y, _scalar(math.log(2), y)), residuals="out")
log_p = unary("log", lambda xp, x: xp.log(x), lambda x, y: div(_one(x), x),
              scale=lambda t, x, y: div(t, x))
log1p_p = unary("log1p", lambda xp, x: xp.log1p(x), lambda x, y: div(_one(x), add(x, _one(x))))
expm1_p = unary("expm1", lambda xp, x: xp.expm1(x), lambda x, y: add(y, _one(y)), residuals="out")
sin_p = unary("sin", lambda xp, x: xp.sin(x), lambda x, y: cos(x))
cos_p = unary("cos", lambda xp, x: xp.cos(x), lambda x, y: neg(sin(x)))
tan_p = unary("tan", lambda xp, x: xp.tan(x), lambda x, y: add(_one(y), mul(y, y)),
              residuals="out")
asin_p = unary("asin", lambda xp, x: xp.arcsin(x), lambda x, y: rsqrt(sub(_one(x), mul(x, x))))
acos_p = unary("acos", lambda xp, x: xp.arccos(x),
               lambda x, y: neg(rsqrt(sub(_one(x), mul(x, x)))))
atan_p = unary("atan", lambda xp, x: xp.arctan(x),
               lambda x, y: div(_one(x), add(_one(x), mul(x, x))))
sinh_p = unary("sinh", lambda xp, x: xp.sinh(x), lambda x, y: cosh(x))
cosh_p = unary("cosh", lambda xp, x: xp.cosh(x), lambda x, y: sinh(x))
tanh_p = unary("tanh", lambda xp, x: xp.tanh(x), lambda x, y: sub(_one(y), mul(y, y)),
               residuals="out")
asinh_p = unary("asinh", lambda xp, x: xp.arcsinh(x), lambda x, y: rsqrt(add(mul(x, x), _one(x))))
acosh_p = unary("acosh", lambda xp, x: xp.arccosh(x),
                lambda x, y: rsqrt(mul(sub(x, _one(x)), add(x, _one(x)))))
atanh_p = unary("atanh", lambda xp, x: xp.arctanh(x),
                lambda x, y: div(_one(x), sub(_one(x), mul(x, x))))
square_p = unary("square", lambda xp, x: xp.square(x), lambda x, y: mul(_scalar(2, x), x),
                 kinds=NUMBER)
sqrt_p = unary("sqrt", lambda xp, x: xp.sqrt(x), lambda x, y: div(_scalar(0.5, y), y),
               residuals="out")
rsqrt_p = unary("rsqrt", lambda xp, x: xp.reciprocal(xp.sqrt(x)),
                lambda x, y: mul(_scalar(-0.5, y), div(y, x)), residuals="inout")
cbrt_p = unary("cbrt", lambda xp, x: xp.cbrt(x),
               lambda x, y: div(_scalar(1 / 3, y), mul(y, y)), residuals="out", kinds=REAL_FLOAT)
logistic_p = unary("logistic", lambda xp, x: _logistic(xp, x),
                   lambda x, y: mul(y, sub(_one(y), y)), residuals="out")
erf_p = unary("erf", lambda xp, x: _erf.erf(xp, x),
              lambda x, y: mul(_scalar(2 / math.sqrt(math.pi), x), exp(neg(mul(x, x)))),
              kinds=REAL_FLOAT)
erf_inv_p = unary("erf_inv", lambda xp, x: _erf.erf_inv(xp, x),
                  lambda x, y: mul(_scalar(math.sqrt(math.pi) / 2, y), exp(mul(y, y))),
                  kinds=REAL_FLOAT, residuals="out")
not_p = unary("not", lambda xp, x: xp.invert(x), kinds=INT_OR_BOOL)


def _logistic(xp, x):
    if dtype_of(x).kind == "c":
        return xp.reciprocal(1 + xp.exp(-x))
    # exp(-|x|) never overflows: 1/(1+e^-x) for x >= 0 and e^x/(1+e^x) for x < 0.
    e = xp.exp(-xp.abs(x))
    return astype(xp, xp.where(x >= 0, 1 / (1 + e), e / (1 + e)), dtype_of(x), copy=False)


# ---------------------------------------------------------------------------------------------
# Complex numbers: real, imag, complex, conj, and abs (whose output is real for complex input).
#
# Derivatives of complex functions follow JAX: a tangent is the R-linear image of the input
# tangent, and a cotangent pairs with a tangent by Re(sum(ct * t)) (no conjugation). So the VJP
# of a holomorphic function is the cotangent times f'(z), as for real functions (the factories
# above need no change), and only the non-holomorphic primitives here have rules of their own:
# real's VJP is complex(ct, 0), imag's complex(0, -ct), conj's conj(ct).

def real_dtype(dtype):
    """The real dtype of a complex one (complex64 -> float32); other dtypes as they are."""
    dtype = np.dtype(dtype)
    return np.dtype(np.finfo(dtype).dtype) if dtype.kind == "c" else dtype


def complex_dtype(dtype):
    """The complex dtype with `dtype`'s precision (float32 -> complex64, float64 -> complex128)."""
    return np.result_type(dtype, np.complex64)


def _part_abstract(name):
    def rule(x):
        check_kind(name, x, "c")
        return ShapedArray(x.shape, real_dtype(x.dtype), x.weak_type)
    return rule


def _real_zero(x):
    return np.zeros((), real_dtype(x.dtype))


real_p = Primitive("real", impl=lambda xp, x: xp.real(x), abstract_eval=_part_abstract("real"),
                   residuals="none",
                   jvp=lambda primals, tangents, out: real(tangents[0]),
                   vjp=lambda ct, primals, out, active: (complex(ct, _real_zero(primals[0])),))
imag_p = Primitive("imag", impl=lambda xp, x: xp.imag(x), abstract_eval=_part_abstract("imag"),
                   residuals="none",
                   jvp=lambda primals, tangents, out: imag(tangents[0]),
                   vjp=lambda ct, primals, out, active: (
                       complex(_real_zero(primals[0]), neg(ct)),))
conj_p = Primitive("conj", impl=lambda xp, x: xp.conj(x),
                   abstract_eval=_unary_abstract("conj", "c"), residuals="none",
                   jvp=lambda primals, tangents, out: conj(tangents[0]),
                   vjp=lambda ct, primals, out, active: (conj(ct),))


def _no_16_bit_complex(dtype):
    if dtype.itemsize == 2:  # no 16-bit complex type (JAX refuses them too)
        raise TypeError(f"complex: parts of dtype {dtype} have no complex type; convert them to "
                        "float32 first")


def _complex_abstract(x, y):
    dt = same_dtype("complex", (x, y))
    check_kind("complex", x, REAL_FLOAT)
    _no_16_bit_complex(dt)
    return ShapedArray(broadcast_shapes("complex", x, y), complex_dtype(dt), weak((x, y)))


def _complex_impl(xp, x, y):
    make = getattr(xp, "make_complex", None)  # an Array API namespace (backends/array_api.py)
    if make is not None:
        return make(x, y)
    # Set the parts: x + 1j * y would turn an infinite y into a NaN real part.
    out = xp.empty(np.broadcast_shapes(x.shape, y.shape), complex_dtype(dtype_of(x)))
    out.real = x
    out.imag = y
    return out


def _complex_jvp(primals, tangents, out):
    tx, ty = tangents
    x, y = primals
    tx = _scalar(0, x) if tx is None else tx
    ty = _scalar(0, y) if ty is None else ty
    return _broadcast_to_out(complex(tx, ty), out)


def _complex_vjp(ct, primals, out, active):
    x, y = primals
    return (unbroadcast(real(ct), x) if active[0] else None,
            unbroadcast(neg(imag(ct)), y) if active[1] else None)


complex_p = Primitive("complex", impl=_complex_impl, abstract_eval=_complex_abstract,
                      jvp=_complex_jvp, vjp=_complex_vjp, residuals="none")


def _abs_abstract(x):
    check_kind("abs", x, "iufc")
    return ShapedArray(x.shape, real_dtype(x.dtype), x.weak_type)


def _abs_complex_scale(x, out):
    """conj(x) / |x| (0 where x is 0), the factor of abs's derivative at complex x."""
    safe = select_n(eq(out, _scalar(0, out)), out, _one(out))
    return div(conj(x), convert_element_type(safe, x.dtype))


def _abs_jvp(primals, tangents, out):
    (x,), (t,) = primals, tangents
    if x.dtype.kind == "c":
        return real(mul(t, _abs_complex_scale(x, out)))
    # d|x|/dx is 1 at x = 0 (JAX's convention: the slope of the x >= 0 side), not sign(0) = 0.
    return mul(t, select_n(ge(x, _scalar(0, x)), _scalar(-1, x), _one(x)))


def _abs_vjp(ct, primals, out, active):
    x = primals[0]
    if x.dtype.kind == "c":  # |x| is recomputed: the real case (most uses) keeps only x
        return (mul(convert_element_type(ct, x.dtype), _abs_complex_scale(x, abs(x))),)
    return (mul(ct, select_n(ge(x, _scalar(0, x)), _scalar(-1, x), _one(x))),)


abs_p = Primitive("abs", impl=lambda xp, x: xp.abs(x), abstract_eval=_abs_abstract,
                  jvp=_abs_jvp, vjp=_abs_vjp, residuals="in")
abs_p.elementwise = True  # fused and lowered as the others (a complex operand is not lowered)

for _p in (real_p, imag_p, conj_p, complex_p, abs_p):
    _p.batch = elementwise_batch(_p)


def _integer_pow_abstract(x, *, y):
    check_kind("integer_pow", x, NUMBER)
    return ShapedArray(x.shape, x.dtype, x.weak_type)


def _integer_pow_impl(xp, x, *, y):
    if y < 0 and dtype_of(x).kind in "iu":
        raise ValueError("integer_pow: negative exponent of an integer array")
    n = -y if y < 0 else y
    if n <= 4:  # repeated products: many times faster than a general power for small exponents
        if n == 0:
            out = xp.ones_like(x)
        elif n == 1:
            out = xp.multiply(x, 1)
        else:
            sq = x * x
            if n == 2:
                out = sq
            elif xp is np and sq.ndim:  # the square is ours: reuse its buffer
                out = np.multiply(sq, x if n == 3 else sq, out=sq)
            else:
                out = sq * x if n == 3 else sq * sq
    else:
        out = xp.power(x, n)  # a Python int: x's dtype is kept (NEP 50)
    return xp.reciprocal(out) if y < 0 else out


def _integer_pow_deriv(x, y):
    if y == 0:
        return zeros_like(x)
    if y == 1:
        return full(x.shape, 1, x.dtype)
    return mul(_scalar(y, x), integer_pow(x, y - 1) if y - 1 != 1 else x)


integer_pow_p = Primitive(
    "integer_pow", impl=_integer_pow_impl, abstract_eval=_integer_pow_abstract,
    jvp=lambda primals, tangents, out, y: mul(tangents[0], _integer_pow_deriv(primals[0], y)),
    vjp=lambda ct, primals, out, active, y: (mul(ct, _integer_pow_deriv(primals[0], y)),))
integer_pow_p.elementwise = True
integer_pow_p.batch = elementwise_batch(integer_pow_p)


# ---------------------------------------------------------------------------------------------
# Binary primitives

def _binary_abstract(name, kinds, out_dtype=None):
    def rule(x, y):
        dt = same_dtype(name, (x, y))
        check_kind(name, x, kinds)
        shape = broadcast_shapes(name, x, y)
        return ShapedArray(shape, out_dtype or dt, weak((x, y)) and out_dtype is None)
    return rule


def binary(name, impl, partials=None, kinds=NUMBER, residuals="in", out_dtype=None, jvp=None,
           vjp=None):
    """Define an elementwise binary primitive from its partial derivatives.

    `partials(x, y, out) -> (df/dx, df/dy)` (either may be None for a zero derivative) gives both
    the JVP (sum of partial * tangent) and the VJP (cotangent * partial, summed down to a rank-0
    operand). `jvp`/`vjp` override them where a direct formula is cheaper.
    """
    p = Primitive(name, impl=_impl_for(name, impl),
                  abstract_eval=_binary_abstract(name, kinds, out_dtype),
                  residuals=residuals, differentiable=partials is not None or vjp is not None)
    p.elementwise = True
    p.batch = elementwise_batch(p)

    def default_jvp(primals, tangents, out):
        dx, dy = partials(primals[0], primals[1], out)
        terms = [mul(t, d) for t, d in zip(tangents, (dx, dy)) if t is not None and d is not None]
        if not terms:
            return None
        total = terms[0] if len(terms) == 1 else add(terms[0], terms[1])
        return _broadcast_to_out(total, out)

    def default_vjp(ct, primals, out, active):
        x, y = primals
        dx, dy = partials(x, y, out)
        return (unbroadcast(mul(ct, dx), x) if active[0] and dx is not None else None,
                unbroadcast(mul(ct, dy), y) if active[1] and dy is not None else None)

    if partials is None and jvp is None:
        p.jvp = lambda primals, tangents, out: None
        p.vjp = lambda ct, primals, out, active: (None, None)
    else:
        p.jvp = jvp or default_jvp
        p.vjp = vjp or default_vjp
    return p


def _broadcast_to_out(t, out):
    """A tangent of a broadcast operand, broadcast to the output's shape."""
    if tuple(t.shape) != tuple(out.shape):
        lead = len(out.shape) - len(t.shape)
        return structural.broadcast_in_dim(t, out.shape, tuple(range(lead, len(out.shape))))
    return t


def _add_jvp(primals, tangents, out):
    tx, ty = tangents
    t = tx if ty is None else ty if tx is None else add(tx, ty)
    return _broadcast_to_out(t, out)


def _sub_jvp(primals, tangents, out):
    tx, ty = tangents
    t = neg(ty) if tx is None else tx if ty is None else sub(tx, ty)
    return _broadcast_to_out(t, out)


add_p = binary("add", lambda xp, x, y: xp.add(x, y), residuals="none", jvp=_add_jvp,
               vjp=lambda ct, p, out, active: (unbroadcast(ct, p[0]) if active[0] else None,
                                              unbroadcast(ct, p[1]) if active[1] else None))
sub_p = binary("sub", lambda xp, x, y: xp.subtract(x, y), residuals="none", jvp=_sub_jvp,
               vjp=lambda ct, p, out, active: (unbroadcast(ct, p[0]) if active[0] else None,
                                              unbroadcast(neg(ct), p[1]) if active[1] else None))
mul_p = binary("mul", lambda xp, x, y: xp.multiply(x, y), lambda x, y, out: (y, x),
               residuals="cross")
def _div_vjp(ct, primals, out, active):
    x, y = primals
    return (unbroadcast(div(ct, y), x) if active[0] else None,
            unbroadcast(neg(mul(ct, div(out, y))), y) if active[1] else None)


div_p = binary("div", lambda xp, x, y: _div_impl(xp, x, y),
               lambda x, y, out: (div(_one(y), y), neg(div(out, y))), residuals="inout",
               vjp=_div_vjp)
rem_p = binary("rem", lambda xp, x, y: xp.fmod(x, y),
               lambda x, y, out: (_one(x), neg(round_toward_zero(div(x, y)))), kinds="iuf")
pow_p = binary("pow", lambda xp, x, y: xp.power(x, y), lambda x, y, out: _pow_partials(x, y, out),
               kinds=FLOAT, residuals="inout")
max_p = binary("max", lambda xp, x, y: xp.maximum(x, y),
               lambda x, y, out: _minmax_partials(gt, x, y), kinds="iufb")
min_p = binary("min", lambda xp, x, y: xp.minimum(x, y),
               lambda x, y, out: _minmax_partials(lt, x, y), kinds="iufb")
atan2_p = binary("atan2", lambda xp, x, y: xp.arctan2(x, y),
                 lambda x, y, out: _atan2_partials(x, y), kinds=REAL_FLOAT)
nextafter_p = binary("nextafter", lambda xp, x, y: xp.nextafter(x, y), kinds=REAL_FLOAT)

eq_p = binary("eq", lambda xp, x, y: xp.equal(x, y), kinds=ANY, out_dtype=bool)
ne_p = binary("ne", lambda xp, x, y: xp.not_equal(x, y), kinds=ANY, out_dtype=bool)
lt_p = binary("lt", lambda xp, x, y: xp.less(x, y), kinds="iufb", out_dtype=bool)
le_p = binary("le", lambda xp, x, y: xp.less_equal(x, y), kinds="iufb", out_dtype=bool)
gt_p = binary("gt", lambda xp, x, y: xp.greater(x, y), kinds="iufb", out_dtype=bool)
ge_p = binary("ge", lambda xp, x, y: xp.greater_equal(x, y), kinds="iufb", out_dtype=bool)
and_p = binary("and", lambda xp, x, y: xp.bitwise_and(x, y), kinds=INT_OR_BOOL)
or_p = binary("or", lambda xp, x, y: xp.bitwise_or(x, y), kinds=INT_OR_BOOL)
xor_p = binary("xor", lambda xp, x, y: xp.bitwise_xor(x, y), kinds=INT_OR_BOOL)
shift_left_p = binary("shift_left", lambda xp, x, y: _shift(xp, x, y, "left"), kinds=INT)
shift_right_logical_p = binary("shift_right_logical",
                               lambda xp, x, y: _shift(xp, x, y, "logical"), kinds=INT)
shift_right_arithmetic_p = binary("shift_right_arithmetic",
                                  lambda xp, x, y: _shift(xp, x, y, "arithmetic"), kinds=INT)


def _div_impl(xp, x, y):
    dt = dtype_of(x)
    if dt.kind in "iu":  # C-style division truncating toward zero, as lax.div
        q = xp.floor_divide(x, y)
        fix = (xp.remainder(x, y) != 0) & ((x < 0) != (y < 0))
        return astype(xp, q + astype(xp, fix, dt), dt, copy=False)
    return xp.true_divide(x, y)


def _shift(xp, x, y, kind):
    dt = dtype_of(x)
    bits = dt.itemsize * 8
    if xp is np and np.ndim(y) == 0 and 0 <= y < bits:  # one in-range amount: one ufunc
        if kind == "left":
            return np.left_shift(x, y)
        if kind == "arithmetic" or dt.kind == "u":
            return np.right_shift(x, y)
        udt = np.dtype(f"uint{bits}")
        return np.right_shift(x.view(udt), np.asarray(y).astype(udt)).view(dt)
    big = y >= bits
    y_safe = astype(xp, xp.where(big, 0, y), dt, copy=False)
    if kind == "left":
        out = xp.left_shift(x, y_safe)
        return astype(xp, xp.where(big, 0, out), dt, copy=False)
    if kind == "arithmetic" or dt.kind == "u":
        out = xp.right_shift(x, y_safe)
        fill = -astype(xp, x < 0, dt) if dt.kind == "i" else 0  # -1 where negative
        return astype(xp, xp.where(big, fill, out), dt, copy=False)
    udt = np.dtype(f"uint{bits}")
    out = astype(xp, xp.right_shift(astype(xp, x, udt), astype(xp, y_safe, udt)), dt)
    return astype(xp, xp.where(big, 0, out), dt, copy=False)


def _pow_partials(x, y, out):
    # d/dx x**y = y * x**(y-1); d/dy = log(x) * x**y, with log(x) taken as log(1) = 0 where
    # x == 0 (as JAX does): 0 ** y has derivative 0 in y, not 0 * log(0) = NaN.
    dx = mul(y, pow(x, sub(y, _one(y))))
    safe_x = select_n(eq(x, _scalar(0, x)), x, _one(x))
    dy = mul(log(safe_x), out)
    return dx, dy


def _minmax_partials(cmp, x, y):
    # The winner gets the whole derivative; ties split it evenly (as JAX).
    wins_x = select_n(cmp(x, y), select_n(eq(x, y), _scalar(0, x), _scalar(0.5, x)),
                      _scalar(1, x))
    return wins_x, sub(_scalar(1, x), wins_x)


def _atan2_partials(x, y):
    denom = add(mul(x, x), mul(y, y))
    return div(y, denom), neg(div(x, denom))


# ---------------------------------------------------------------------------------------------
# select_n, convert_element_type

def _select_n_abstract(pred, *cases):
    if not cases:
        raise TypeError("select_n needs at least one case")
    dt = same_dtype("select_n", cases)
    shape = broadcast_shapes("select_n", pred, *cases)
    allowed = "iu" if len(cases) > 2 else "biu"
    if dtype_kind(pred.dtype) not in allowed:
        raise TypeError(f"select_n predicate must be bool (2 cases) or integer, got {pred.dtype}")
    return ShapedArray(shape, dt, weak(cases))


def _select_n_impl(xp, pred, *cases):
    if len(cases) == 1:
        # shape arithmetic is host work (CuPy and the array API have no broadcast_shapes)
        return xp.broadcast_to(cases[0], np.broadcast_shapes(pred.shape, cases[0].shape))
    if len(cases) == 2:
        if xp is np:
            fast = _select_with_zero(pred, *cases)
            if fast is None:
                fast = _select_bits(pred, *cases)
            if fast is not None:
                return fast
        return xp.where(pred, cases[1], cases[0])
    return xp.choose(pred, cases)


_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
_SINT = {1: np.int8, 2: np.int16, 4: np.int32, 8: np.int64}


def _select_with_zero(pred, c0, c1):
    """select_n(pred, 0, x) or select_n(pred, x, 0) (relu and its derivative) as a bitwise AND of
    x's bit pattern with an all-ones/all-zeros mask: exact for every value (NaN and inf too),
    and several times faster than np.where in NumPy. None when the pattern does not apply."""
    if pred.dtype != np.bool_:
        return None
    if c0.ndim == 0 and c1.shape == pred.shape and dtype_kind(c1.dtype) == "f" and not c0:
        x, keep_where_true = c1, True
    elif c1.ndim == 0 and c0.shape == pred.shape and dtype_kind(c0.dtype) == "f" and not c1:
        x, keep_where_true = c0, False
    else:
        return None
    size = x.dtype.itemsize
    if size not in _UINT or x.ndim == 0:
        return None
    # True -> all ones (-1) when keeping where pred is True; else False -> all ones (0 - 1).
    mask = (np.negative(pred, dtype=_SINT[size]) if keep_where_true
            else np.subtract(pred, 1, dtype=_SINT[size]))
    return np.bitwise_and(x.view(_UINT[size]), mask.view(_UINT[size])).view(x.dtype)


def _select_bits(pred, c0, c1):
    """select_n(pred, c0, c1) on NumPy as c0 ^ ((c0 ^ c1) & mask) on the bit patterns, mask all
    ones where pred: exact for every value, and without np.where's branch per element, which
    costs 5-10 ns an element when pred is unpredictable (a random mask), against ~1 ns here.
    None where the pattern does not apply (a rank-0 or non-bool pred, 16-byte items)."""
    if pred.dtype != np.bool_ or pred.ndim == 0 or type(c0) is not np.ndarray \
            or type(c1) is not np.ndarray or c0.dtype.itemsize not in _UINT:
        return None
    udt = _UINT[c0.dtype.itemsize]
    a = c0.view(udt)
    mask = np.negative(pred, dtype=_SINT[c0.dtype.itemsize]).view(udt)
    out = np.bitwise_and(np.bitwise_xor(a, c1.view(udt)), mask)  # fresh, of the result's shape
    return np.bitwise_xor(out, a, out=out).view(c0.dtype)


def _select_n_jvp(primals, tangents, out):
    pred = primals[0]
    if all(t is None for t in tangents[1:]):
        return None
    ts = [np.zeros((), c.dtype) if t is None else t for c, t in zip(primals[1:], tangents[1:])]
    return _broadcast_to_out(select_n(pred, *ts), out)


def _select_n_vjp(ct, primals, out, active):
    pred = primals[0]
    zero = np.zeros((), ct.dtype)
    res = [None]
    for i in range(1, len(primals)):
        if active[i]:
            picks = [zero] * (len(primals) - 1)
            picks[i - 1] = ct
            res.append(unbroadcast(select_n(pred, *picks), primals[i]))
        else:
            res.append(None)
    return tuple(res)


select_n_p = Primitive("select_n", impl=_select_n_impl, abstract_eval=_select_n_abstract,
                       jvp=_select_n_jvp, vjp=_select_n_vjp, residuals=(0,))
select_n_p.elementwise = True
select_n_p.batch = elementwise_batch(select_n_p)


def _convert_abstract(x, *, new_dtype, weak_type=False):
    return ShapedArray(x.shape, new_dtype, weak_type)


def _convert_impl(xp, x, *, new_dtype, weak_type=False):
    if dtype_of(x).kind == "c" and np.dtype(new_dtype).kind != "c":
        x = xp.real(x)
    return astype(xp, x, new_dtype)


def _float_path(a, b):
    return dtype_kind(np.dtype(a)) in "fc" and dtype_kind(np.dtype(b)) in "fc"


convert_element_type_p = Primitive(
    "convert_element_type", impl=_convert_impl, abstract_eval=_convert_abstract, residuals="none",
    jvp=lambda primals, tangents, out, new_dtype, weak_type=False: (
        convert_element_type(tangents[0], new_dtype)
        if _float_path(primals[0].dtype, new_dtype) else None),
    vjp=lambda ct, primals, out, active, new_dtype, weak_type=False: (
        convert_element_type(ct, primals[0].dtype)
        if _float_path(primals[0].dtype, new_dtype) else None,))
convert_element_type_p.elementwise = True
convert_element_type_p.batch = elementwise_batch(convert_element_type_p)


def _bitcast_abstract(x, *, new_dtype):
    old, new = np.dtype(x.dtype), np.dtype(new_dtype)
    for d in (old, new):
        if dtype_kind(d) not in "iufc":   # bfloat16 is a float (its NumPy kind is 'V')
            raise TypeError(f"bitcast_convert_type: cannot reinterpret the bits of {d} "
                            f"(operand {x.str_short()}, new_dtype {new}); integer, float and "
                            "complex types only")
    if new.itemsize <= old.itemsize:
        extra = () if new.itemsize == old.itemsize else (old.itemsize // new.itemsize,)
        return ShapedArray(tuple(x.shape) + extra, new)
    ratio = new.itemsize // old.itemsize
    if not x.shape or x.shape[-1] != ratio:
        raise shape_error("bitcast_convert_type", f"to the wider {new}, the operand's last axis "
                          f"must hold the {ratio} {old} of one {new}; got {x.str_short()}")
    return ShapedArray(tuple(x.shape[:-1]), new)


def _bitcast_impl(xp, x, *, new_dtype):
    new, old = np.dtype(new_dtype), dtype_of(x)
    if not hasattr(x, "view"):
        raise NotImplementedError(f"bitcast_convert_type: arrays of {xp!r} cannot reinterpret "
                                  "their bits (the Array API standard has no bitcast)")
    if new.itemsize == old.itemsize:
        return x.view(new)
    shape = tuple(x.shape)
    x = xp.ascontiguousarray(x)  # (rank >= 1)
    if new.itemsize < old.itemsize:  # each element becomes a trailing axis of narrower ones
        return x.reshape(shape + (1,)).view(new)
    return x.view(new).reshape(shape[:-1])


def _bitcast_batch(vals, dims, *, new_dtype):
    x, d = vals[0], dims[0]
    if np.dtype(new_dtype).itemsize != dtype_of(x).itemsize:
        x, d = structural.transpose(x, (d,) + tuple(i for i in range(x.ndim) if i != d)), 0
    return bind(bitcast_convert_type_p, x, new_dtype=new_dtype), d


bitcast_convert_type_p = Primitive("bitcast_convert_type", impl=_bitcast_impl,
                                   abstract_eval=_bitcast_abstract, differentiable=False,
                                   residuals="none", batch=_bitcast_batch)


stop_gradient_p = Primitive("stop_gradient", impl=lambda xp, x: x, abstract_eval=lambda x: x,
                            differentiable=False, jvp=lambda primals, tangents, out: None,
                            vjp=lambda ct, primals, out, active: (None,))
stop_gradient_p.elementwise = True
stop_gradient_p.batch = elementwise_batch(stop_gradient_p)


def stop_gradient(x):
    """The identity on a pytree of arrays, with a zero derivative: no gradient flows through
    it (`fg.stop_gradient`, `fg.lax.stop_gradient`)."""
    return tree_map(lambda leaf: bind(stop_gradient_p, leaf), x)


# ---------------------------------------------------------------------------------------------
# The lax-level functions: thin wrappers that bind.

def _unary_fn(p):
    return lambda x: bind(p, x)


def _binary_fn(p):
    return lambda x, y: bind(p, x, y)


neg, sign, floor, ceil, round, is_finite = map(_unary_fn, (neg_p, sign_p, floor_p, ceil_p, round_p,
                                                           is_finite_p))
exp, exp2, log, log1p, expm1 = map(_unary_fn, (exp_p, exp2_p, log_p, log1p_p, expm1_p))
sin, cos, tan, asin, acos, atan = map(_unary_fn, (sin_p, cos_p, tan_p, asin_p, acos_p, atan_p))
sinh, cosh, tanh, asinh, acosh, atanh = map(_unary_fn, (sinh_p, cosh_p, tanh_p, asinh_p, acosh_p,
                                                        atanh_p))
sqrt, rsqrt, cbrt, logistic, erf, erf_inv, abs, bitwise_not, square = map(
    _unary_fn, (sqrt_p, rsqrt_p, cbrt_p, logistic_p, erf_p, erf_inv_p, abs_p, not_p, square_p))
add, sub, mul, div, rem, pow, max, min, atan2, nextafter = map(
    _binary_fn, (add_p, sub_p, mul_p, div_p, rem_p, pow_p, max_p, min_p, atan2_p, nextafter_p))
eq, ne, lt, le, gt, ge = map(_binary_fn, (eq_p, ne_p, lt_p, le_p, gt_p, ge_p))
bitwise_and, bitwise_or, bitwise_xor = map(_binary_fn, (and_p, or_p, xor_p))
shift_left, shift_right_logical, shift_right_arithmetic = map(
    _binary_fn, (shift_left_p, shift_right_logical_p, shift_right_arithmetic_p))
real, imag, conj = map(_unary_fn, (real_p, imag_p, conj_p))


def complex(x, y):  # noqa: A001 (lax's name)
    """x + i y elementwise, from real operands of one dtype (float32 -> complex64)."""
    _no_16_bit_complex(dtype_of(x))
    return bind(complex_p, x, y)

# The interpreters add cotangents and make zeros with these (funcgrad/interpreters/ops.py).
interpreter_ops.register(add=add, full=full)


def integer_pow(x, y: int):
    return bind(integer_pow_p, x, y=int(y))


def select_n(which, *cases):
    """cases[which] elementwise: `which` is bool for two cases, an integer index otherwise."""
    return bind(select_n_p, which, *cases)


def convert_element_type(x, new_dtype, weak_type=False):
    new_dtype = np.dtype(new_dtype)
    if getattr(x, "dtype", None) == new_dtype and not weak_type:
        return x
    return bind(convert_element_type_p, x, new_dtype=new_dtype, weak_type=weak_type)


def bitcast_convert_type(operand, new_dtype):
    """The bits of each element read as `new_dtype` (JAX's lax.bitcast_convert_type, NumPy's
    `view`): same shape for a type of the same width; a narrower type adds a trailing axis of
    the pieces of each element, a wider one consumes the operand's last axis. No derivative."""
    new_dtype = np.dtype(new_dtype)
    if getattr(operand, "dtype", None) == new_dtype:
        return operand
    return bind(bitcast_convert_type_p, operand, new_dtype=new_dtype)


def round_toward_zero(x):
    return select_n(lt(x, _scalar(0, x)), floor(x), ceil(x))


# Reductions build on this module and on structural.py: bound once they are loaded (the
# transposes of broadcasting operations sum with reduce_sum at call time).
from . import reductions  # noqa: E402
