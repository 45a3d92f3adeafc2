"""Linear-algebra primitives: cholesky, triangular_solve, solve, slogdet, eigh, svd, qr, eig.

Each works on a matrix or a stack of matrices (..., m, n) as NumPy's linalg does, and is defined
once with its shape rule, implementation (`xp.linalg`), JVP and VJP; the rules are written with
primitives (solve, triangular_solve, dot_general, ...), so they can be traced and differentiated
again. Decompositions that read one triangle (cholesky, eigh) are differentiated as functions of
that triangle only, which is exactly what their implementations compute; funcgrad.numpy.linalg
symmetrizes the input first, as JAX does, so that gradients come out symmetric.
"""

from __future__ import annotations

import numpy as np

from ..core import Primitive, ShapedArray, bind, to_host
from . import elementwise as ew
from ._batching import move_to_front
from ._util import astype, check_kind, dtype_of, same_dtype, shape_error, small_floats_in_float32
from .products import dot_general
from .reductions import reduce_sum
from .structural import broadcast_in_dim, transpose

__all__ = [
    "cholesky", "triangular_solve", "solve", "slogdet", "eigh", "svd", "qr", "eig",
    "cholesky_p", "triangular_solve_p", "solve_p", "slogdet_p", "eigh_p", "svd_p", "qr_p", "eig_p",
]


# ---------------------------------------------------------------------------------------------
# Matrix helpers written with primitives (used by the rules)

def _T(x):
    """Swap the last two axes."""
    n = x.ndim
    return transpose(x, tuple(range(n - 2)) + (n - 1, n - 2))


def _H(x):
    """The conjugate transpose of the last two axes (the transpose for real x)."""
    return ew.conj(_T(x)) if x.dtype.kind == "c" else _T(x)


def _conj(x):
    return ew.conj(x) if x.dtype.kind == "c" else x


def _re(x):
    """The real part of x (x itself when real)."""
    return ew.real(x) if x.dtype.kind == "c" else x


def _as_dtype_of(x, like):
    """Real x converted to like's (possibly complex) dtype."""
    return ew.convert_element_type(x, like.dtype) if x.dtype != like.dtype else x


def _mm(a, b):
    """Batched matmul (..., n, k) @ (..., k, m) with equal batch axes: one dot_general."""
    nb = a.ndim - 2
    batch = tuple(range(nb))
    return dot_general(a, b, (((nb + 1,), (nb,)), (batch, batch)))


def _const_mask(mask, like):
    """A constant (n, m) mask of like's dtype, broadcast over like's batch axes."""
    m = np.asarray(mask, like.dtype)
    return broadcast_in_dim(m, like.shape, (like.ndim - 2, like.ndim - 1))


def _tri_masks(n, lower, dtype):
    """(triangle incl. diagonal, strict triangle) masks of an n x n matrix."""
    full = np.tril(np.ones((n, n), dtype)) if lower else np.triu(np.ones((n, n), dtype))
    strict = full - np.eye(n, dtype=dtype)
    return full, strict


def _from_triangle(t, lower):
    """The symmetric (Hermitian, for complex t) matrix a decomposition reading one triangle of t
    sees: the triangle, its (conjugate) transpose, and the real part of the diagonal (LAPACK
    ignores the imaginary part of a Hermitian matrix's diagonal)."""
    _, strict = _tri_masks(t.shape[-1], lower, t.dtype)
    off = ew.mul(t, _const_mask(strict, t))
    return ew.add(ew.add(off, _H(off)), _diag_matrix(_as_dtype_of(_re(_diag_part(t)), t)))


def _to_triangle(g, lower):
    """The adjoint of _from_triangle: the strict triangle gets g + g^H there, the diagonal the
    real part of g's diagonal."""
    _, strict = _tri_masks(g.shape[-1], lower, g.dtype)
    off = ew.mul(ew.add(g, _H(g)), _const_mask(strict, g))
    return ew.add(off, _diag_matrix(_as_dtype_of(_re(_diag_part(g)), g)))


def _eye_like(x):
    n = x.shape[-1]
    return _const_mask(np.eye(n), x) if x.ndim >= 2 else np.eye(n, dtype=x.dtype)


def _diag_part(x):
    """The diagonal of the last two (square) axes: (..., n, n) -> (..., n)."""
    return reduce_sum(ew.mul(x, _eye_like(x)), (x.ndim - 1,))


def _diag_matrix(d):
    """(..., n) -> (..., n, n) with d on the diagonal."""
    n = d.shape[-1]
    e = broadcast_in_dim(d, d.shape + (n,), tuple(range(d.ndim)))
    return ew.mul(e, _const_mask(np.eye(n), e))


def _scale_cols(x, d):
    """x (..., m, n) times d (..., n) along its columns: x @ diag(d)."""
    return ew.mul(x, broadcast_in_dim(d, x.shape, tuple(range(d.ndim - 1)) + (x.ndim - 1,)))


def _check_matrix(name, x, square=True):
    check_kind(name, x, "fc")
    if x.ndim < 2 or (square and x.shape[-1] != x.shape[-2]):
        what = "a square matrix or a stack of them (..., n, n)" if square else (
            "a matrix or a stack of them (..., m, n)")
        raise shape_error(name, f"needs {what}, got {x.str_short()}")


def _batch_leading(p, nout=None):
    """Batching rule for primitives that already act on stacks: move the batch axis to front."""
    def rule(vals, dims, **params):
        size = next(v.shape[d] for v, d in zip(vals, dims) if d is not None)
        args = []
        for v, d in zip(vals, dims):
            if d is None:
                v = broadcast_in_dim(v, (size,) + tuple(v.shape), tuple(range(1, v.ndim + 1)))
            else:
                v = move_to_front(v, d)
            args.append(v)
        out = bind(p, *args, **params)
        return (out, (0,) * len(out)) if p.multiple_results else (out, 0)
    return rule


# ---------------------------------------------------------------------------------------------
# solve: x = a^{-1} b for a (..., n, n) and b (..., n, k) with the same batch axes

def _solve_abstract(a, b):
    _check_matrix("solve", a)
    dt = same_dtype("solve", (a, b))
    if b.ndim != a.ndim or b.shape[:-2] != a.shape[:-2] or b.shape[-2] != a.shape[-1]:
        raise shape_error("solve", f"b {b.str_short()} must be (..., n, k) with the batch axes of "
                          f"a {a.str_short()}; funcgrad.numpy.linalg.solve broadcasts for you")
    return ShapedArray(b.shape, dt)


def _solve_jvp(primals, tangents, out):
    a, _ = primals
    ta, tb = tangents
    rhs = tb
    if ta is not None:
        rhs = ew.neg(_mm(ta, out)) if rhs is None else ew.sub(rhs, _mm(ta, out))
    return solve(a, rhs)


def _solve_vjp(ct, primals, out, active):
    a, _ = primals
    ct_b = solve(_T(a), ct)
    ct_a = ew.neg(_mm(ct_b, _T(out))) if active[0] else None
    return ct_a, ct_b if active[1] else None


solve_p = Primitive("solve", impl=lambda xp, a, b: xp.linalg.solve(a, b),
                    abstract_eval=_solve_abstract, jvp=_solve_jvp, vjp=_solve_vjp,
                    residuals="inout")
solve_p.batch = _batch_leading(solve_p)


def solve(a, b):
    """a^{-1} b for square a (..., n, n) and b (..., n, k) with the same batch axes."""
    return bind(solve_p, a, b)


# ---------------------------------------------------------------------------------------------
# triangular_solve: x = op(tri(a))^{-1} b, op = identity or transpose (left side only)

def _tri_impl(xp, a, b, *, lower, transpose_a):
    t = xp.tril(a) if lower else xp.triu(a)
    if transpose_a:
        t = xp.swapaxes(t, -1, -2)
    return xp.linalg.solve(t, b)


def _tri_abstract(a, b, *, lower, transpose_a):
    _check_matrix("triangular_solve", a)
    dt = same_dtype("triangular_solve", (a, b))
    if b.ndim != a.ndim or b.shape[:-2] != a.shape[:-2] or b.shape[-2] != a.shape[-1]:
        raise shape_error("triangular_solve", f"b {b.str_short()} must be (..., n, k) with the "
                          f"batch axes of a {a.str_short()}")
    return ShapedArray(b.shape, dt)


def _tri_part(a, lower):
    full, _ = _tri_masks(a.shape[-1], lower, a.dtype)
    return ew.mul(a, _const_mask(full, a))


def _tri_jvp(primals, tangents, out, *, lower, transpose_a):
    a, _ = primals
    ta, tb = tangents
    rhs = tb
    if ta is not None:
        t = _tri_part(ta, lower)
        t = _T(t) if transpose_a else t
        rhs = ew.neg(_mm(t, out)) if rhs is None else ew.sub(rhs, _mm(t, out))
    return triangular_solve(a, rhs, lower=lower, transpose_a=transpose_a)


def _tri_vjp(ct, primals, out, active, *, lower, transpose_a):
    a, _ = primals
    ct_b = triangular_solve(a, ct, lower=lower, transpose_a=not transpose_a)
    ct_a = None
    if active[0]:
        g = _mm(out, _T(ct_b)) if transpose_a else _mm(ct_b, _T(out))
        ct_a = ew.neg(_tri_part(g, lower))
    return ct_a, ct_b if active[1] else None


triangular_solve_p = Primitive("triangular_solve", impl=_tri_impl, abstract_eval=_tri_abstract,
                               jvp=_tri_jvp, vjp=_tri_vjp, residuals="inout")
triangular_solve_p.batch = _batch_leading(triangular_solve_p)


def triangular_solve(a, b, lower=True, transpose_a=False):
    """op(t)^{-1} b where t is the lower (or upper) triangle of a and op transposes it or not;
    the other triangle of a is never read. b is (..., n, k) with a's batch axes."""
    return bind(triangular_solve_p, a, b, lower=bool(lower), transpose_a=bool(transpose_a))


# ---------------------------------------------------------------------------------------------
# cholesky: the lower factor L of the lower triangle of a (as NumPy/LAPACK read it)

def _cholesky_abstract(a):
    _check_matrix("cholesky", a)
    return ShapedArray(a.shape, a.dtype)


def _phi(x):
    """The lower triangle of x with its diagonal halved."""
    n = x.shape[-1]
    return ew.mul(x, _const_mask(np.tril(np.ones((n, n))) - 0.5 * np.eye(n), x))


def _cholesky_jvp(primals, tangents, out):
    # dL = L phi(L^{-1} dA L^{-H}) with dA the Hermitian matrix read from the lower triangle.
    L = out
    da = _from_triangle(tangents[0], lower=True)
    z = triangular_solve(L, da, lower=True)                     # L^{-1} dA
    m = triangular_solve(L, _H(z), lower=True)                  # L^{-1} dA L^{-H} (Hermitian)
    return _mm(L, _phi(m))


def _cholesky_vjp(ct, primals, out, active):
    # The adjoint of the JVP: abar = T^*(L^{-T} phi(L^T Lbar) conj(L)^{-1}).
    L = out
    p = _phi(_mm(_T(L), ct))
    s = triangular_solve(L, p, lower=True, transpose_a=True)                 # L^{-T} P
    s = _T(triangular_solve(_conj(L), _T(s), lower=True, transpose_a=True))  # ... conj(L)^{-1}
    return (_to_triangle(s, lower=True),)


cholesky_p = Primitive("cholesky", impl=lambda xp, a: xp.linalg.cholesky(a),
                       abstract_eval=_cholesky_abstract, jvp=_cholesky_jvp, vjp=_cholesky_vjp,
                       residuals="out")
cholesky_p.batch = _batch_leading(cholesky_p)


def cholesky(a):
    """The lower Cholesky factor of (a stack of) positive definite matrices; reads the lower
    triangle of a only."""
    return bind(cholesky_p, a)


# ---------------------------------------------------------------------------------------------
# slogdet: (sign, log|det a|)

def _slogdet_abstract(a):
    _check_matrix("slogdet", a)
    shape = a.shape[:-2]
    real = np.dtype(a.dtype.char.lower()) if a.dtype.kind == "c" else a.dtype
    return ShapedArray(shape, a.dtype), ShapedArray(shape, real)


def _slogdet_impl(xp, a):
    sign, logdet = xp.linalg.slogdet(a)
    return xp.asarray(sign, a.dtype), xp.asarray(logdet)


def _slogdet_jvp(primals, tangents, out):
    # d log|det a| = Re tr(a^{-1} da); the sign moves only for complex a: d sign = i Im(...) sign.
    a = primals[0]
    t = reduce_sum(_diag_part(solve(a, tangents[0])), (a.ndim - 2,))
    if a.dtype.kind != "c":
        return None, t
    d_logdet = ew.real(t)
    d_sign = ew.mul(ew.sub(t, ew.convert_element_type(d_logdet, t.dtype)), out[0])
    return d_sign, d_logdet


def _slogdet_vjp(ct, primals, out, active):
    a = primals[0]
    inv_t = solve(_T(a), _eye_like(a))                       # a^{-T}
    ct_sign, g = ct
    if a.dtype.kind == "c":  # the adjoint of t -> (i Im(t) sign, Re t)
        g = ew.convert_element_type(g, a.dtype)
        if ct_sign is not None:
            w = ew.mul(ct_sign, out[0])
            g = ew.add(g, ew.sub(w, ew.convert_element_type(ew.real(w), a.dtype)))
    return (ew.mul(inv_t, broadcast_in_dim(g, inv_t.shape, tuple(range(g.ndim)))),)


slogdet_p = Primitive("slogdet", multiple_results=True, impl=_slogdet_impl,
                      abstract_eval=_slogdet_abstract, jvp=_slogdet_jvp, vjp=_slogdet_vjp,
                      residuals="inout")
slogdet_p.batch = _batch_leading(slogdet_p)


def slogdet(a):
    """(sign, log|det a|) of (a stack of) square matrices."""
    return bind(slogdet_p, a)


# ---------------------------------------------------------------------------------------------
# eigh: eigenvalues (ascending) and eigenvectors of the symmetric matrix one triangle defines

def _eigh_abstract(a, *, lower):
    _check_matrix("eigh", a)
    real = np.dtype(a.dtype.char.lower()) if a.dtype.kind == "c" else a.dtype
    return ShapedArray(a.shape[:-1], real), ShapedArray(a.shape, a.dtype)


def _eigh_impl(xp, a, *, lower):
    w, v = xp.linalg.eigh(a, UPLO="L" if lower else "U")
    return w, v


def _gap_inverse(w):
    """F[i, j] = 1 / (w[j] - w[i]) off the diagonal, 0 on it (degenerate pairs give inf)."""
    n = w.shape[-1]
    nd = w.ndim
    wi = broadcast_in_dim(w, w.shape + (n,), tuple(range(nd - 1)) + (nd - 1,))
    wj = broadcast_in_dim(w, w.shape + (n,), tuple(range(nd - 1)) + (nd,))
    eye = _const_mask(np.eye(n), wi)
    return ew.sub(ew.div(_const_mask(np.ones((n, n)), wi), ew.add(ew.sub(wj, wi), eye)), eye)


def _eigh_jvp(primals, tangents, out, *, lower):
    w, v = out
    da = _from_triangle(tangents[0], lower)
    m = _mm(_H(v), _mm(da, v))                                  # V^H dA V
    dw = _re(_diag_part(m))
    dv = _mm(v, ew.mul(_as_dtype_of(_gap_inverse(w), v), m))
    return dw, dv


def _eigh_vjp(ct, primals, out, active, *, lower):
    # The adjoint of the JVP: abar = T^*(conj(V) (diag(wbar) + F o (V^T Vbar)) V^T).
    w, v = out
    ct_w, ct_v = ct
    inner = ew.add(_diag_matrix(_as_dtype_of(ct_w, v)),
                   ew.mul(_as_dtype_of(_gap_inverse(w), v), _mm(_T(v), ct_v)))
    g = _mm(_conj(v), _mm(inner, _T(v)))
    return (_to_triangle(g, lower),)


eigh_p = Primitive("eigh", multiple_results=True, impl=_eigh_impl, abstract_eval=_eigh_abstract,
                   jvp=_eigh_jvp, vjp=_eigh_vjp, residuals="out")
eigh_p.batch = _batch_leading(eigh_p)


def eigh(a, lower=True):
    """(w, v): eigenvalues in ascending order and eigenvectors (columns) of the symmetric
    matrix defined by the lower (or upper) triangle of a. Derivatives assume distinct
    eigenvalues; eigenvector signs are LAPACK's."""
    return bind(eigh_p, a, lower=bool(lower))


# ---------------------------------------------------------------------------------------------
# svd: (u, s, vh) or s alone; the thin (full_matrices=False) factors are differentiable

def _svd_abstract(a, *, full_matrices, compute_uv):
    _check_matrix("svd", a, square=False)
    *batch, m, n = a.shape
    k = min(m, n)
    real = np.dtype(a.dtype.char.lower()) if a.dtype.kind == "c" else a.dtype
    s = ShapedArray(tuple(batch) + (k,), real)
    if not compute_uv:
        return (s,)
    mu, nv = (m, n) if full_matrices else (k, k)
    return (ShapedArray(tuple(batch) + (m, mu), a.dtype), s,
            ShapedArray(tuple(batch) + (nv, n), a.dtype))


def _svd_impl(xp, a, *, full_matrices, compute_uv):
    if not compute_uv:
        return (xp.linalg.svd(a, compute_uv=False),)
    u, s, vh = xp.linalg.svd(a, full_matrices=full_matrices)
    return u, s, vh


def _svd_thin(a):
    return bind(svd_p, a, full_matrices=False, compute_uv=True)


def _svd_gaps(s):
    """F[i, j] = 1 / (s_j^2 - s_i^2) off the diagonal, 0 on it, and 1 / s (0 where s is 0)."""
    k = s.shape[-1]
    si = broadcast_in_dim(s, s.shape + (k,), tuple(range(s.ndim - 1)) + (s.ndim - 1,))
    sj = broadcast_in_dim(s, s.shape + (k,), tuple(range(s.ndim - 1)) + (s.ndim,))
    eye = _const_mask(np.eye(k), si)
    f = ew.sub(ew.div(_const_mask(np.ones((k, k)), si),
                      ew.add(ew.mul(ew.add(sj, si), ew.sub(sj, si)), eye)), eye)
    zero = ew.convert_element_type(ew.eq(s, np.zeros((), s.dtype)), s.dtype)
    s_inv = ew.sub(ew.div(np.ones((), s.dtype), ew.add(s, zero)), zero)
    return f, si, sj, s_inv


def _check_svd_derivative(a, full_matrices, compute_uv):
    if compute_uv and full_matrices and a.shape[-1] != a.shape[-2]:
        raise NotImplementedError(
            "The derivative of svd(full_matrices=True) of a non-square matrix is not defined "
            "(the extra singular vectors are not unique): use full_matrices=False.")


def _svd_jvp(primals, tangents, out, *, full_matrices, compute_uv):
    # JAX's svd_jvp_rule. For complex a, the phase of each singular pair (u_i, v_i) is fixed by
    # Im(u_i^H du_i) = Im(ds_ii) / s_i and v_i^H dv_i = 0, as in JAX.
    a, da = primals[0], tangents[0]
    _check_svd_derivative(a, full_matrices, compute_uv)
    u, s, vh = out if compute_uv else _svd_thin(a)
    v = _H(vh)
    ds_mat = _mm(_H(u), _mm(da, v))                             # U^H dA V
    ds = _re(_diag_part(ds_mat))
    if not compute_uv:
        return (ds,)
    f, si, sj, s_inv = _svd_gaps(s)
    f = _as_dtype_of(f, a)
    dss = ew.mul(_as_dtype_of(sj, a), ds_mat)                   # dS diag(s)
    sds = ew.mul(_as_dtype_of(si, a), ds_mat)                   # diag(s) dS
    inner_u = ew.mul(f, ew.add(dss, _H(dss)))
    if a.dtype.kind == "c":                                     # i Im(dS_ii) / s_i
        half = ew.mul(np.asarray(0.5, a.dtype), ew.sub(ds_mat, _H(ds_mat)))
        inner_u = ew.add(inner_u, ew.mul(half, _diag_matrix(_as_dtype_of(s_inv, a))))
    du = _mm(u, inner_u)
    dv = _mm(v, ew.mul(f, ew.add(sds, _H(sds))))
    m, n = a.shape[-2:]
    s_inv_c = _as_dtype_of(s_inv, a)
    if m > n:
        dav = _mm(da, v)
        du = ew.add(du, _scale_cols(ew.sub(dav, _mm(u, _mm(_H(u), dav))), s_inv_c))
    if n > m:
        dahu = _mm(_H(da), u)
        dv = ew.add(dv, _scale_cols(ew.sub(dahu, _mm(v, _mm(vh, dahu))), s_inv_c))
    return du, ds, _H(dv)


def _svd_vjp(ct, primals, out, active, *, full_matrices, compute_uv):
    a = primals[0]
    _check_svd_derivative(a, full_matrices, compute_uv)
    if not compute_uv:
        u, _, vh = _svd_thin(a)
        return (_mm(_conj(_scale_cols(u, _as_dtype_of(ct[0], u))), _conj(vh)),)
    # The adjoint of the JVP above (Townsend, "Differentiating the SVD"; for complex a, with
    # JAX's pairing Re(sum(ct * t)), so conjugates appear where the real rule has none).
    u, s, vh = out
    ct_u, ct_s, ct_vh = ct
    v, ct_v = _H(vh), _H(ct_vh)
    f, si, sj, s_inv = _svd_gaps(s)
    f = _as_dtype_of(f, a)
    ku = _mm(_T(u), ct_u)                                       # U^T Ubar
    kv = _mm(_T(v), ct_v)                                       # V^T Vbar
    j = ew.mul(f, ew.sub(ku, _H(ku)))
    kk = ew.mul(f, ew.sub(kv, _H(kv)))
    inner = ew.add(ew.add(ew.mul(j, _as_dtype_of(sj, a)), _diag_matrix(_as_dtype_of(ct_s, a))),
                   ew.mul(_as_dtype_of(si, a), kk))
    s_inv_c = _as_dtype_of(s_inv, a)
    if a.dtype.kind == "c":                                     # adjoint of the phase term
        d = _diag_part(ku)
        im = ew.sub(d, ew.convert_element_type(ew.real(d), a.dtype))  # i Im(diag(U^T Ubar))
        inner = ew.add(inner, _diag_matrix(ew.mul(im, s_inv_c)))
    ga = _mm(_conj(u), _mm(inner, _conj(vh)))
    m, n = a.shape[-2:]
    if m > n:
        proj = ew.sub(ct_u, _mm(_conj(u), ku))                  # (I - conj(U) U^T) Ubar
        ga = ew.add(ga, _mm(_scale_cols(proj, s_inv_c), _conj(vh)))
    if n > m:
        proj = ew.sub(ct_v, _mm(_conj(v), kv))                  # (I - conj(V) V^T) Vbar
        ga = ew.add(ga, _mm(_conj(u), _H(_scale_cols(proj, s_inv_c))))
    return (ga,)


svd_p = Primitive("svd", multiple_results=True, impl=_svd_impl, abstract_eval=_svd_abstract,
                  jvp=_svd_jvp, vjp=_svd_vjp, residuals="inout")
svd_p.batch = _batch_leading(svd_p)


def svd(a, full_matrices=True, compute_uv=True):
    """(u, s, vh) with a = u @ diag(s) @ vh, or the singular values s (descending) alone.
    Derivatives need distinct nonzero singular values and full_matrices=False (or square a)."""
    out = bind(svd_p, a, full_matrices=bool(full_matrices), compute_uv=bool(compute_uv))
    return out if compute_uv else out[0]


# ---------------------------------------------------------------------------------------------
# qr (forward only)

def _qr_abstract(a, *, full_matrices):
    _check_matrix("qr", a, square=False)
    *batch, m, n = a.shape
    k = m if full_matrices else min(m, n)
    return (ShapedArray(tuple(batch) + (m, k), a.dtype),
            ShapedArray(tuple(batch) + (k, n), a.dtype))


def _qr_no_derivative(*args, **params):
    raise NotImplementedError("The derivative of qr is not implemented in funcgrad; for least "
                              "squares use funcgrad.numpy.linalg.solve or lstsq, which are "
                              "differentiable.")


qr_p = Primitive("qr", multiple_results=True,
                 impl=lambda xp, a, *, full_matrices: tuple(
                     xp.linalg.qr(a, mode="complete" if full_matrices else "reduced")),
                 abstract_eval=_qr_abstract, jvp=_qr_no_derivative, vjp=_qr_no_derivative,
                 residuals="none")
qr_p.batch = _batch_leading(qr_p)


def qr(a, full_matrices=False):
    """(q, r) with a = q @ r: q has orthonormal columns, r is upper triangular."""
    return bind(qr_p, a, full_matrices=bool(full_matrices))



# ---------------------------------------------------------------------------------------------
# eig: eigenvalues (and right eigenvectors) of a general square matrix, always complex

def _eig_abstract(a, *, compute_eigenvectors):
    _check_matrix("eig", a)
    cdt = ew.complex_dtype(a.dtype)
    w = ShapedArray(a.shape[:-1], cdt)
    return (w, ShapedArray(a.shape, cdt)) if compute_eigenvectors else (w,)


def _eig_impl(xp, a, *, compute_eigenvectors):
    cdt = ew.complex_dtype(dtype_of(a))
    if getattr(xp.linalg, "eig", None) is None:
        # CuPy before v14 has no general eigensolver: LAPACK on the host, as JAX on a GPU.
        host = np.linalg.eig(to_host(a))
        w, v = (xp.asarray(h.astype(cdt, copy=False)) for h in host)
    else:
        w, v = xp.linalg.eig(a)
        w, v = astype(xp, w, cdt, copy=False), astype(xp, v, cdt, copy=False)
    return (w, v) if compute_eigenvectors else (w,)


def _eig_vectors(a):
    return bind(eig_p, a, compute_eigenvectors=True)[1]


def _no_eigenvector_derivative():
    return NotImplementedError(
        "The derivatives of eig's eigenvectors are not implemented, only of the eigenvalues "
        "(as in JAX): use funcgrad.numpy.linalg.eigvals, or eigh for a symmetric (Hermitian) "
        "matrix.")


def _eig_jvp(primals, tangents, out, *, compute_eigenvectors):
    # dw = diag(V^{-1} dA V) (distinct eigenvalues; Magnus 1985, as JAX).
    if compute_eigenvectors:
        raise _no_eigenvector_derivative()
    a, da = primals[0], tangents[0]
    v = _eig_vectors(a)
    return (_diag_part(_mm(solve(v, _as_dtype_of(da, v)), v)),)


def _eig_vjp(ct, primals, out, active, *, compute_eigenvectors):
    # The adjoint of the JVP: abar = V^{-T} diag(wbar) V^T (its real part for a real a).
    if compute_eigenvectors:
        raise _no_eigenvector_derivative()
    a = primals[0]
    v = _eig_vectors(a)
    g = solve(_T(v), _mm(_diag_matrix(ct[0]), _T(v)))
    return (g if a.dtype.kind == "c" else ew.convert_element_type(ew.real(g), a.dtype),)


eig_p = Primitive("eig", multiple_results=True, impl=_eig_impl, abstract_eval=_eig_abstract,
                  jvp=_eig_jvp, vjp=_eig_vjp, residuals="in")
eig_p.batch = _batch_leading(eig_p)


def eig(a, compute_eigenvectors=True):
    """(w, v): the eigenvalues and right eigenvectors (columns, unit norm) of (a stack of) square
    matrices, complex whatever a's dtype (as JAX: a real matrix may have complex eigenvalues,
    and a program's dtypes cannot depend on values); (w,) without eigenvectors. Eigenvalues are
    differentiable (distinct ones); eigenvectors are not (as in JAX)."""
    out = bind(eig_p, a, compute_eigenvectors=bool(compute_eigenvectors))
    return out if compute_eigenvectors else out[0]


# LAPACK has no 16-bit floats: float16 and bfloat16 matrices are factored in float32 and the
# results rounded back (on NumPy; see lax._util.small_floats_in_float32).
for _p in (solve_p, triangular_solve_p, cholesky_p, slogdet_p, eigh_p, svd_p, qr_p, eig_p):
    _p.impl = small_floats_in_float32(_p.impl)
