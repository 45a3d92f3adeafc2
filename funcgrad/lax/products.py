"""dot_general, the one contraction primitive (its shape rule, implementation for every pair
of dtypes, JVP, VJP and batching rule), and the products built on it: `dot`, `batch_matmul`.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ..core import Primitive, ShapedArray, bind, is_small_float
from . import elementwise as ew
from ._batching import move_to_front
from ._util import (
    argsort_short,
    astype,
    check_kind,
    dtype_of,
    shape_error,
    to_operand,
    weak,
)
from .structural import transpose

# ---------------------------------------------------------------------------------------------
# dot_general

def _dot_abstract(lhs, rhs, *, dimension_numbers, preferred_element_type=None):
    (lc, rc), (lb, rb) = dimension_numbers
    check_kind("dot_general", lhs, "iufc")
    check_kind("dot_general", rhs, "iufc")
    dt = _dot_dtype(lhs.dtype, rhs.dtype)
    if len(lc) != len(rc) or len(lb) != len(rb):
        raise shape_error("dot_general", f"bad dimension_numbers {dimension_numbers}")
    for a, b in list(zip(lc, rc)) + list(zip(lb, rb)):
        if not (0 <= a < lhs.ndim and 0 <= b < rhs.ndim) or lhs.shape[a] != rhs.shape[b]:
            raise shape_error(
                "dot_general", f"shapes {lhs.str_short()} and {rhs.str_short()} do not match "
                f"along lhs axis {a} and rhs axis {b} (dimension_numbers {dimension_numbers})")
    batch = tuple(lhs.shape[a] for a in lb)
    lfree = tuple(s for i, s in enumerate(lhs.shape) if i not in lc and i not in lb)
    rfree = tuple(s for i, s in enumerate(rhs.shape) if i not in rc and i not in rb)
    return ShapedArray(batch + lfree + rfree, preferred_element_type or dt, weak((lhs, rhs)))


def _dot_dtype(a, b):
    """The result dtype of a dot_general of operands of dtypes `a` and `b` (as in JAX, they may
    differ: a float32 activation times a bfloat16 or int8 weight is float32, and the weight is
    never converted as a whole in the program, so no converted copy is kept for the backward
    pass)."""
    return a if a == b else np.promote_types(a, b)


@functools.lru_cache(maxsize=256)
def _outer_subscripts(lhs_ndim, rhs_ndim, lb, rb):
    """einsum subscripts for a dot_general without contraction: batch, lhs free, rhs free."""
    letters = iter("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    ls = [next(letters) for _ in range(lhs_ndim)]
    rs = [ls[lb[rb.index(i)]] if i in rb else next(letters) for i in range(rhs_ndim)]
    out = ([ls[i] for i in lb] + [ls[i] for i in range(lhs_ndim) if i not in lb]
           + [rs[i] for i in range(rhs_ndim) if i not in rb])
    return f"{''.join(ls)},{''.join(rs)}->{''.join(out)}"


def _dot_impl(xp, lhs, rhs, *, dimension_numbers, preferred_element_type=None):
    """One matmul on strided views: lhs as (batch..., M, K), rhs as (batch..., K, N), where M,
    K, N each merge their axes into one only where the memory layout allows it without a copy
    (transposes are views; NumPy's matmul calls BLAS once per matrix, transposes folded into
    the call, batch axes at any strides). The result is (batch..., lhs free..., rhs free...)."""
    (lc, rc), (lb, rb) = dimension_numbers
    if not lb and len(lc) == 1 and lhs.ndim == 2 and rhs.ndim == 2:  # a matrix product
        out = xp.matmul(lhs if lc[0] == 1 else lhs.T, rhs if rc[0] == 0 else rhs.T)
        if preferred_element_type is not None:
            out = astype(xp, out, preferred_element_type, copy=False)
        return out
    if not lc:  # no contraction (outer products, per batch)
        lfree = [i for i in range(lhs.ndim) if i not in lb]
        rfree = [i for i in range(rhs.ndim) if i not in rb]
        einsum = getattr(xp, "einsum", None)
        if einsum is not None and lhs.ndim + rhs.ndim <= 52:
            # einsum's outer-product loops beat a broadcasting multiply (stride-0 operands)
            # by about 1.5x: per-example weight gradients are exactly this.
            out = einsum(_outer_subscripts(lhs.ndim, rhs.ndim, lb, rb), lhs, rhs)
            if preferred_element_type is not None:
                out = astype(xp, out, preferred_element_type, copy=False)
            return out
        a = xp.transpose(lhs, list(lb) + lfree)
        b = xp.transpose(rhs, list(rb) + rfree)
        nb = len(lb)
        a = xp.reshape(a, a.shape + (1,) * len(rfree))
        b = xp.reshape(b, b.shape[:nb] + (1,) * len(lfree) + b.shape[nb:])
        out = xp.multiply(a, b)
    else:
        lfree = [i for i in range(lhs.ndim) if i not in lc and i not in lb]
        rfree = [i for i in range(rhs.ndim) if i not in rc and i not in rb]
        lc, rc = _contraction_order(lhs, rhs, lc, rc)
        bshape = tuple(lhs.shape[i] for i in lb)
        lf = tuple(lhs.shape[i] for i in lfree)
        rf = tuple(rhs.shape[i] for i in rfree)
        k = math.prod(lhs.shape[i] for i in lc)
        a = _as_matrices(xp, lhs, list(lb) + lfree + list(lc), bshape + (math.prod(lf), k))
        b = _as_matrices(xp, rhs, list(rb) + list(rc) + rfree, bshape + (k, math.prod(rf)))
        out = xp.matmul(a, b)
        if out.shape != bshape + lf + rf:
            out = xp.reshape(out, bshape + lf + rf)
    if preferred_element_type is not None:
        out = astype(xp, out, preferred_element_type, copy=False)
    return out


def _as_matrices(xp, x, perm, shape):
    """x with axes `perm` as an array of `shape` (batch..., rows, cols): a view where the layout
    allows (NumPy: a copy only where an axis group does not merge, or where BLAS could not read
    the matrices in place)."""
    if list(perm) != list(range(x.ndim)):
        x = xp.transpose(x, perm)
    if x.shape != shape:
        x = xp.reshape(x, shape)
    if type(x) is np.ndarray and not _blas_readable(x):
        x = np.ascontiguousarray(x)
    return x


def _blas_readable(x):
    """Whether BLAS reads each matrix of x (its last two axes) in place: one of the two
    strides is the element size, the other at least the other axis' extent."""
    if x.ndim < 2:
        return True
    (r, c), (sr, sc), it = x.shape[-2:], x.strides[-2:], x.itemsize
    return (sc == it and (sr >= c * it or r == 1)) or (sr == it and (sc >= r * it or c == 1))


def _contraction_order(lhs, rhs, lc, rc):
    """The contraction axis pairs in an order in which both operands' contracted axes merge
    into one without a copy, if there is one (they are summed in any order)."""
    if len(lc) < 2 or type(lhs) is not np.ndarray or type(rhs) is not np.ndarray:
        return lc, rc
    pairs = list(zip(lc, rc))
    for key in (lambda p: -lhs.strides[p[0]], lambda p: -rhs.strides[p[1]]):
        order = sorted(pairs, key=key)
        if _merges(lhs, [p[0] for p in order]) and _merges(rhs, [p[1] for p in order]):
            return tuple(p[0] for p in order), tuple(p[1] for p in order)
    return lc, rc


def _merges(x, axes):
    """Whether axes `axes` of x, in this order, are one axis in memory (a reshape is a view)."""
    axes = [a for a in axes if x.shape[a] != 1]
    return all(x.strides[a] == x.strides[b] * x.shape[b] for a, b in zip(axes, axes[1:]))


def _dot_jvp(primals, tangents, out, *, dimension_numbers, preferred_element_type=None):
    lhs, rhs = primals
    tl, tr = tangents
    kw = dict(dimension_numbers=dimension_numbers, preferred_element_type=preferred_element_type)
    terms = []
    if tl is not None:
        terms.append(bind(dot_general_p, tl, rhs, **kw))
    if tr is not None:
        terms.append(bind(dot_general_p, lhs, tr, **kw))
    return terms[0] if len(terms) == 1 else ew.add(*terms)


def _dot_transpose_lhs(ct, lhs_aval, rhs, dimension_numbers):
    """Cotangent of the lhs of dot_general: contract ct with rhs over rhs's free axes."""
    (lc, rc), (lb, rb) = dimension_numbers
    x_ndim, y_ndim = len(lhs_aval.shape), rhs.ndim
    x_kept = [i for i in range(x_ndim) if i not in lc and i not in lb]
    y_kept = [i for i in range(y_ndim) if i not in rc and i not in rb]
    nb = len(lb)
    # ct's axes are batch, lhs free (x_kept), rhs free (y_kept).
    ans_y = list(range(nb + len(x_kept), nb + len(x_kept) + len(y_kept)))
    dims = ((tuple(ans_y), tuple(y_kept)), (tuple(range(nb)), tuple(rb)))
    res = bind(dot_general_p, ct, rhs, dimension_numbers=dims, preferred_element_type=None)
    # res axes: batch (lb order), x_kept (increasing), then rhs contracting axes in increasing rhs
    # order, which pair with lhs axes lc in that same order.
    rc_sorted = sorted(rc)
    lc_by_rc = [lc[list(rc).index(r)] for r in rc_sorted]
    src_order = list(lb) + x_kept + lc_by_rc
    perm = argsort_short(src_order)
    res = transpose(res, perm)
    if res.dtype != lhs_aval.dtype:
        res = ew.convert_element_type(res, lhs_aval.dtype)
    return res


def _dot_transpose_rhs(ct, lhs, rhs_aval, dimension_numbers):
    """Cotangent of the rhs of dot_general: contract lhs with ct over lhs's free axes.

    Written so that the common matmul case needs no transpose: ct_rhs = lhs^T @ ct directly.
    """
    (lc, rc), (lb, rb) = dimension_numbers
    x_kept = [i for i in range(lhs.ndim) if i not in lc and i not in lb]
    y_kept = [i for i in range(len(rhs_aval.shape)) if i not in rc and i not in rb]
    nb = len(lb)
    ct_x = tuple(range(nb, nb + len(x_kept)))
    dims = ((tuple(x_kept), ct_x), (tuple(lb), tuple(range(nb))))
    res = bind(dot_general_p, lhs, ct, dimension_numbers=dims, preferred_element_type=None)
    # res axes: batch, lhs contracting axes in increasing lhs order (paired with rc), y_kept.
    rc_by_lc = [rc[list(lc).index(a)] for a in sorted(lc)]
    perm = argsort_short(list(rb) + rc_by_lc + y_kept)
    res = transpose(res, perm)
    if res.dtype != rhs_aval.dtype:
        res = ew.convert_element_type(res, rhs_aval.dtype)
    return res


def _dot_vjp(ct, primals, out, active, *, dimension_numbers, preferred_element_type=None):
    lhs, rhs = primals
    return (_dot_transpose_lhs(ct, lhs, rhs, dimension_numbers) if active[0] else None,
            _dot_transpose_rhs(ct, lhs, rhs, dimension_numbers) if active[1] else None)


def _dot_impl_any_dtypes(xp, lhs, rhs, *, dimension_numbers, preferred_element_type=None):
    """dot_general on operands of any dtypes: both are computed in their common dtype (widened
    to preferred_element_type, so int8 products accumulate in int32 when asked), in float32 for
    16-bit floats on NumPy (it has no BLAS for them), and the result is rounded once to the
    output dtype. Only the operand being widened is copied, and only here, inside the call."""
    lt, rt = dtype_of(lhs), dtype_of(rhs)
    out = _dot_dtype(lt, rt)
    work = out if preferred_element_type is None else np.promote_types(out, preferred_element_type)
    out = preferred_element_type or out
    if xp is np and is_small_float(work):
        work = _F32
    lhs = lhs if lt == work else astype(xp, lhs, work)
    if rt != work and _tiled(lhs, rhs, dimension_numbers):
        res = _dot_widening_rhs_by_tiles(xp, lhs, rhs, dimension_numbers[0][1][0], work)
    else:
        rhs = rhs if rt == work else astype(xp, rhs, work)
        res = _dot_impl(xp, lhs, rhs, dimension_numbers=dimension_numbers)
    return res if dtype_of(res) == out else astype(xp, res, out, copy=False)


_F32 = np.dtype(np.float32)
# A weight to widen (a bfloat16 or int8 matrix times float32 activations) larger than this many
# elements is widened a tile of rows at a time (1 MiB of float32), never as a whole.
DOT_TILE_ELEMENTS = 1 << 18


def _tiled(lhs, rhs, dimension_numbers):
    (lc, rc), (lb, rb) = dimension_numbers
    return (not lb and rhs.ndim == 2 and len(lc) == 1 and lc[0] == lhs.ndim - 1
            and lhs.ndim >= 1 and rhs.size > DOT_TILE_ELEMENTS)


def _dot_widening_rhs_by_tiles(xp, lhs, rhs, rc, work):
    """lhs (contracted on its last axis) times a 2-D rhs (contracted on axis rc) that must be
    widened to `work`: rows r0:r1 of rhs are widened and multiplied at a time. rc = 0 sums
    the partial products; rc = 1 fills a slice of the output's columns per tile."""
    lead = lhs.shape[:-1]
    x = xp.reshape(lhs, (-1, lhs.shape[-1]))
    rows, cols = rhs.shape
    step = max(1, DOT_TILE_ELEMENTS // max(cols, 1))
    if rc == 0:
        y = xp.zeros((x.shape[0], cols), work)
        for r0 in range(0, rows, step):
            y += x[:, r0:r0 + step] @ astype(xp, rhs[r0:r0 + step], work)
    else:
        y = xp.empty((x.shape[0], rows), work)
        for r0 in range(0, rows, step):
            y[:, r0:r0 + step] = x @ astype(xp, rhs[r0:r0 + step], work).T
    return xp.reshape(y, lead + (y.shape[-1],))
dot_general_p = Primitive("dot_general", impl=_dot_impl_any_dtypes, abstract_eval=_dot_abstract,
                          jvp=_dot_jvp, vjp=_dot_vjp, residuals="cross")


def _dot_batch(vals, dims, *, dimension_numbers, preferred_element_type=None):
    """Both batched: one more batch dimension. One batched: its batch axis is a free axis."""
    (lc, rc), (lb, rb) = dimension_numbers
    lhs, rhs = vals
    ld, rd = dims
    kw = dict(preferred_element_type=preferred_element_type)
    shift = lambda axes: tuple(a + 1 for a in axes)
    if ld is not None and rd is not None:
        lhs, rhs = move_to_front(lhs, ld), move_to_front(rhs, rd)
        dn = ((shift(lc), shift(rc)), ((0,) + shift(lb), (0,) + shift(rb)))
        return bind(dot_general_p, lhs, rhs, dimension_numbers=dn, **kw), 0
    if ld is not None:
        lhs = move_to_front(lhs, ld)
        dn = ((shift(lc), rc), (shift(lb), rb))
        return bind(dot_general_p, lhs, rhs, dimension_numbers=dn, **kw), len(lb)
    rhs = move_to_front(rhs, rd)
    dn = ((lc, shift(rc)), (lb, shift(rb)))
    lhs_free = lhs.ndim - len(lc) - len(lb)
    return bind(dot_general_p, lhs, rhs, dimension_numbers=dn, **kw), len(lb) + lhs_free


dot_general_p.batch = _dot_batch


def dot_general(lhs, rhs, dimension_numbers, preferred_element_type=None):
    """Contract lhs and rhs: dimension_numbers = ((lhs_contract, rhs_contract), (lhs_batch,
    rhs_batch)); the result's axes are batch, lhs free, rhs free (as in XLA/JAX)."""
    (lc, rc), (lb, rb) = dimension_numbers
    dn = ((tuple(int(i) for i in lc), tuple(int(i) for i in rc)),
          (tuple(int(i) for i in lb), tuple(int(i) for i in rb)))
    pet = None if preferred_element_type is None else np.dtype(preferred_element_type)
    return bind(dot_general_p, lhs, rhs, dimension_numbers=dn, preferred_element_type=pet)


# ---------------------------------------------------------------------------------------------
# Products

def batch_matmul(lhs, rhs, precision=None):
    """Matrix products batched over all leading axes: (..., m, k) @ (..., k, n) -> (..., m, n).
    Both operands need the same rank >= 2 (as JAX); `precision` is accepted and ignored."""
    del precision
    if min(lhs.ndim, rhs.ndim) < 2:
        raise ValueError(f"Arguments to batch_matmul must be at least 2D, got {lhs.ndim}, "
                         f"{rhs.ndim}")
    if lhs.ndim != rhs.ndim:
        raise ValueError(f"Arguments to batch_matmul must have same ndim, got {lhs.ndim}, "
                         f"{rhs.ndim}")
    batch = tuple(range(lhs.ndim - 2))
    return dot_general(lhs, rhs, (((lhs.ndim - 1,), (rhs.ndim - 2,)), (batch, batch)))


def dot(lhs, rhs, precision=None, preferred_element_type=None, *, dimension_numbers=None):
    """Vector-vector, matrix-vector or matrix-matrix product (lhs' last axis against rhs' first),
    or any contraction given as `dimension_numbers` (as dot_general). `precision` is ignored."""
    del precision
    lhs, rhs = to_operand(lhs), to_operand(rhs)
    if dimension_numbers is None:
        if not (1 <= lhs.ndim <= 2 and 1 <= rhs.ndim <= 2 and lhs.shape[-1] == rhs.shape[0]):
            raise ValueError("lax.dot: dimension_numbers must be given unless this is an "
                             "un-batched matrix-matrix, matrix-vector or vector-vector product; "
                             f"got shapes {tuple(lhs.shape)} and {tuple(rhs.shape)}")
        dimension_numbers = (((lhs.ndim - 1,), (0,)), ((), ()))
    return dot_general(lhs, rhs, dimension_numbers, preferred_element_type=preferred_element_type)


