"""Products: matmul, dot, vdot, inner, outer, tensordot, kron, cross, vecdot, matvec, vecmat."""

from __future__ import annotations

import builtins

import numpy as np

from .. import lax
from ..core import Tracer, user_line
from ..core.avals import dtype_kind
from ._arithmetic import multiply, negative, subtract
from ._core import (
    asarray,
    broadcast_pair,
    broadcast_shapes,
    broadcast_to,
    const_like,
    convert,
    promote2,
    result_type,
)


def _product_operands(a, b):
    """a and b as arrays of their common dtype; booleans are multiplied as integers."""
    x, y = asarray(a), asarray(b)
    dt = x.dtype if type(x) is type(y) is np.ndarray and x.dtype == y.dtype else result_type(x, y)
    if x.dtype != y.dtype and _mixed_floats_ok(x, y, dt):
        # dot_general takes both as they are and widens the narrower one inside the call only
        # (tile by tile): a float32 activation times a bfloat16 weight keeps no converted copy
        return x, y, dt
    work = np.dtype(np.int64) if dt.kind == "b" else dt
    return convert(x, work), convert(y, work), dt


def _mixed_floats_ok(x, y, dt):
    weak = any(type(v) is Tracer and v.aval.weak_type for v in (x, y))
    return (not weak and dtype_kind(x.dtype) == "f" and dtype_kind(y.dtype) == "f"
            and dt == np.promote_types(x.dtype, y.dtype))
def _conj(x):
    return lax.conj(x) if x.dtype.kind == "c" else x


def _finish_product(out, dt):
    if dt.kind == "b":
        return lax.ne(out, const_like(0, out))
    return out


def _mismatch(name, a, b, detail):
    return ValueError(f"{name}: shapes {tuple(a.shape)} and {tuple(b.shape)} are not aligned"
                      f"{user_line()}: {detail}.")


def matmul(x1, x2, /):
    """Matrix product with NumPy's rules: 1-D operands gain (and lose) an axis; leading axes are
    batch axes that broadcast."""
    x, y, dt = _product_operands(x1, x2)
    if x.ndim == 0 or y.ndim == 0:
        raise ValueError(f"matmul: operands must not be scalars, got shapes {tuple(x.shape)} and "
                         f"{tuple(y.shape)}{user_line()}; use multiply (*) for scalars.")
    xk = x.shape[-1]
    yk = y.shape[0] if y.ndim == 1 else y.shape[-2]
    if xk != yk:
        which = "the only axis" if y.ndim == 1 else "the second-to-last axis"
        raise _mismatch("matmul", x, y, f"the last axis of the first operand ({xk}) must equal "
                        f"{which} of the second ({yk})")
    if y.ndim <= 2:
        # x @ W: contract x's last axis with W's first; no batch axes needed.
        out = lax.dot_general(x, y, (((x.ndim - 1,), (0,)), ((), ())))
        return _finish_product(out, dt)
    squeeze_front = x.ndim == 1
    if squeeze_front:
        x = lax.expand_dims(x, (0,))
    batch = broadcast_shapes(x.shape[:-2], y.shape[:-2], what="matmul batch axes")
    nb = len(batch)
    x = broadcast_to(x, batch + x.shape[-2:])
    y = broadcast_to(y, batch + y.shape[-2:])
    out = lax.dot_general(x, y, (((nb + 1,), (nb,)), (tuple(range(nb)), tuple(range(nb)))))
    if squeeze_front:
        out = lax.squeeze(out, (nb,))
    return _finish_product(out, dt)


def dot(a, b):
    """NumPy's dot: a product for scalars, the sum over a's last axis and b's second-to-last
    (or only) axis otherwise."""
    x, y, dt = _product_operands(a, b)
    if x.ndim == 0 or y.ndim == 0:
        return _finish_product(multiply(x, y), dt)
    yax = 0 if y.ndim == 1 else y.ndim - 2
    if x.shape[-1] != y.shape[yax]:
        raise _mismatch("dot", x, y, f"the last axis of the first operand ({x.shape[-1]}) must "
                        f"equal axis {yax} of the second ({y.shape[yax]})")
    return _finish_product(lax.dot_general(x, y, (((x.ndim - 1,), (yax,)), ((), ()))), dt)


def vdot(a, b, /):
    """The dot product of a and b flattened; a complex a is conjugated first."""
    x, y, dt = _product_operands(a, b)
    x, y = lax.reshape(_conj(x), (x.size,)), lax.reshape(y, (y.size,))
    if x.shape != y.shape:
        raise _mismatch("vdot", asarray(a), asarray(b), "they must have the same size")
    return _finish_product(lax.dot_general(x, y, (((0,), (0,)), ((), ()))), dt)


def inner(a, b, /):
    """The sum over the last axes of a and b (a product for scalars)."""
    x, y, dt = _product_operands(a, b)
    if x.ndim == 0 or y.ndim == 0:
        return _finish_product(multiply(x, y), dt)
    if x.shape[-1] != y.shape[-1]:
        raise _mismatch("inner", x, y, "their last axes must have the same size")
    return _finish_product(lax.dot_general(x, y, (((x.ndim - 1,), (y.ndim - 1,)), ((), ()))),
                           dt)


def outer(a, b):
    """out[i, j] = a.ravel()[i] * b.ravel()[j]."""
    x, y = asarray(a), asarray(b)
    dt = result_type(x, y)
    x, y = convert(x, dt), convert(y, dt)
    x = lax.reshape(x, (x.size, 1))
    y = lax.reshape(y, (1, y.size))
    return multiply(x, y)


def tensordot(a, b, axes=2):
    """Sum of products over the last `axes` axes of a and the first of b (or given axis lists)."""
    x, y, dt = _product_operands(a, b)
    if isinstance(axes, (int, np.integer)):
        n = int(axes)
        ax, bx = tuple(range(x.ndim - n, x.ndim)), tuple(range(n))
    else:
        ax, bx = axes
        ax = (ax,) if isinstance(ax, (int, np.integer)) else tuple(ax)
        bx = (bx,) if isinstance(bx, (int, np.integer)) else tuple(bx)
        ax = tuple(int(i) % x.ndim for i in ax)
        bx = tuple(int(i) % y.ndim for i in bx)
    if len(ax) != len(bx) or any(x.shape[i] != y.shape[j] for i, j in zip(ax, bx)):
        raise _mismatch("tensordot", x, y, f"axes {ax} and {bx} do not match in size")
    return _finish_product(lax.dot_general(x, y, ((ax, bx), ((), ()))), dt)


def kron(a, b):
    """The Kronecker product: blocks a[i, j] * b."""
    x, y = asarray(a), asarray(b)
    dt = result_type(x, y)
    x, y = convert(x, dt), convert(y, dt)
    nd = builtins.max(x.ndim, y.ndim)
    xs = (1,) * (nd - x.ndim) + x.shape
    ys = (1,) * (nd - y.ndim) + y.shape
    x, y = lax.reshape(x, xs), lax.reshape(y, ys)
    inter = tuple(d for pair in zip(xs, ys) for d in pair)
    xb = lax.broadcast_in_dim(x, inter, tuple(range(0, 2 * nd, 2)))
    yb = lax.broadcast_in_dim(y, inter, tuple(range(1, 2 * nd, 2)))
    out = multiply(xb, yb)
    return lax.reshape(out, tuple(p * q for p, q in zip(xs, ys)))


def cross(a, b, axisa=-1, axisb=-1, axisc=-1, axis=None):
    """The cross product of 3-vectors (or the z component for 2-vectors) along an axis."""
    from ._shape import moveaxis
    if axis is not None:
        axisa = axisb = axisc = axis
    x, y = promote2(asarray(a), asarray(b))
    x, y = moveaxis(x, axisa, -1), moveaxis(y, axisb, -1)
    if x.shape[-1] not in (2, 3) or y.shape[-1] not in (2, 3):
        raise ValueError(f"cross: incompatible vector sizes {x.shape[-1]} and {y.shape[-1]} "
                         f"(must be 2 or 3){user_line()}")

    def comp(v, i):
        if i >= v.shape[-1]:
            return None
        return lax.squeeze(lax.slice(v, (0,) * (v.ndim - 1) + (i,), v.shape[:-1] + (i + 1,)),
                           (v.ndim - 1,))

    x0, x1, x2 = (comp(x, i) for i in range(3))
    y0, y1, y2 = (comp(y, i) for i in range(3))
    z = subtract(multiply(x0, y1), multiply(x1, y0))
    if x2 is None and y2 is None:
        return z
    if x2 is None:
        cx, cy = multiply(x1, y2), negative(multiply(x0, y2))
    elif y2 is None:
        cx, cy = negative(multiply(x2, y1)), multiply(x2, y0)
    else:
        cx = subtract(multiply(x1, y2), multiply(x2, y1))
        cy = subtract(multiply(x2, y0), multiply(x0, y2))
    from ._shape import stack
    return stack([cx, cy, z], axis=axisc if x.ndim > 0 else 0)


def vecdot(x1, x2, /, *, axis=-1):
    """The dot product of vectors along `axis` (broadcasting the other axes); a complex x1 is
    conjugated first."""
    x, y = promote2(asarray(x1), asarray(x2))
    x, y, _ = broadcast_pair(_conj(x), y)
    from ._reductions import sum as _sum
    return _sum(multiply(x, y), axis=axis)


def matvec(x1, x2, /):
    """Matrix-vector products over broadcast batch axes: (..., m, n) x (..., n) -> (..., m)."""
    y = asarray(x2)
    out = matmul(x1, lax.expand_dims(y, (y.ndim,)))
    return lax.squeeze(out, (out.ndim - 1,))


def vecmat(x1, x2, /):
    """Vector-matrix products over broadcast batch axes: (..., n) x (..., n, m) -> (..., m);
    a complex vector is conjugated first."""
    x = _conj(asarray(x1))
    out = matmul(lax.expand_dims(x, (x.ndim - 1,)), x2)
    return lax.squeeze(out, (out.ndim - 2,))


__all__ = [n for n, v in list(globals().items())
           if not n.startswith("_") and callable(v) and getattr(v, "__module__", "") == __name__]
__all__ = sorted(set(__all__) - {"annotations"})
