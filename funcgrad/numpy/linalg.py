"""funcgrad.numpy.linalg: NumPy's linalg on (stacks of) matrices, built on funcgrad.lax.linalg.

Inputs are promoted as NumPy does (integers to float64; float16 is computed in float32 and cast
back). cholesky and eigh symmetrize their input first (as JAX does), so that for symmetric
(Hermitian) inputs the values are NumPy's and the gradients are symmetric (Hermitian). Everything
differentiable in the primitives (solve, slogdet, cholesky, eigh, thin svd, eig) is
differentiable here, and so is what is composed of them (inv, det, norm, pinv, matrix_power,
lstsq, ...). Complex inputs work throughout; results that are real in NumPy (eigenvalues of eigh,
singular values, norms, log|det|) are real here too.
"""

from __future__ import annotations

import builtins
from typing import NamedTuple

import numpy as np

from .. import lax
from ..core import ConcretizationError, Tracer, is_small_float, user_line
from ..lax import linalg as lax_linalg
from ._core import abs_squared, asarray, broadcast_shapes, broadcast_to, inexact_dtype, result_type

__all__ = [
    "norm", "vector_norm", "matrix_norm", "cond", "inv", "pinv", "solve", "lstsq", "det",
    "slogdet", "cholesky", "qr", "eig", "eigvals", "eigh", "eigvalsh", "svd", "svdvals",
    "matrix_power",
    "matrix_rank", "multi_dot", "tensorsolve", "tensorinv", "LinAlgError",
]

LinAlgError = np.linalg.LinAlgError


class SlogdetResult(NamedTuple):
    sign: object
    logabsdet: object


class EigResult(NamedTuple):
    eigenvalues: object
    eigenvectors: object


class EighResult(NamedTuple):
    eigenvalues: object
    eigenvectors: object


class SVDResult(NamedTuple):
    U: object
    S: object
    Vh: object


class QRResult(NamedTuple):
    Q: object
    R: object


class LstsqResult(NamedTuple):
    x: object
    residuals: object
    rank: object
    s: object


# ---------------------------------------------------------------------------------------------
# Helpers

def _float(x, what, min_ndim=2, square=False):
    """x as an array of its inexact dtype, with NumPy's shape checks. Returns (x, out_dtype)."""
    x = asarray(x)
    if x.ndim < min_ndim:
        raise LinAlgError(f"{x.ndim}-dimensional array given. Array must be at least "
                          f"{min_ndim}-dimensional ({what}){user_line()}")
    if square and x.shape[-1] != x.shape[-2]:
        raise LinAlgError(f"Last 2 dimensions of the array must be square ({what} got shape "
                          f"{tuple(x.shape)}){user_line()}")
    out_dtype = inexact_dtype(x.dtype)
    work = np.dtype(np.float32) if is_small_float(out_dtype) else out_dtype
    if x.dtype != work:
        x = lax.convert_element_type(x, work)
    return x, out_dtype


def _back(x, dtype):
    """x in the output dtype of a function of `dtype` inputs: a real result (eigenvalues,
    singular values, norms) of complex inputs stays real, in the matching precision."""
    if x.dtype.kind != "c" and dtype.kind == "c":
        dtype = lax.real_dtype(dtype)
    return x if x.dtype == dtype else lax.convert_element_type(x, dtype)


def _mT(x):
    n = x.ndim
    return lax.transpose(x, tuple(range(n - 2)) + (n - 1, n - 2))


def _mH(x):
    """The conjugate transpose of the last two axes (the transpose of real x)."""
    return lax.conj(_mT(x)) if x.dtype.kind == "c" else _mT(x)


def _matmul(a, b):
    """(..., n, k) @ (..., k, m) with broadcast batch axes: one dot_general."""
    batch = broadcast_shapes(a.shape[:-2], b.shape[:-2], what="matrix stacks")
    a = broadcast_to(a, batch + tuple(a.shape[-2:]))
    b = broadcast_to(b, batch + tuple(b.shape[-2:]))
    nb = len(batch)
    bd = tuple(range(nb))
    return lax.dot_general(a, b, (((nb + 1,), (nb,)), (bd, bd)))


def _eye(n, like):
    e = np.eye(n, dtype=like.dtype)
    if like.ndim == 2:
        return e
    return lax.broadcast_in_dim(e, tuple(like.shape[:-2]) + (n, n), (like.ndim - 2, like.ndim - 1))


def _symmetrize(a):
    """(a + a^H) / 2: symmetric, or Hermitian for complex a."""
    return lax.mul(lax.add(a, _mH(a)), np.array(0.5, a.dtype))


def _abs(x):
    return lax.abs(x)


def _sum(x, axes):
    return lax.reduce_sum(x, tuple(axes))


# ---------------------------------------------------------------------------------------------
# Solving and inverting

def solve(a, b):
    """x with a @ x = b. b is a vector (..., n) only when 1-D (NumPy 2), else (..., n, k);
    batch axes broadcast."""
    a, dt_a = _float(a, "solve", square=True)
    b = asarray(b)
    dtype = inexact_dtype(result_type(a, b))
    dtype = dtype if not is_small_float(dtype) else np.dtype(np.float32)
    a = lax.convert_element_type(a, dtype) if a.dtype != dtype else a
    b = lax.convert_element_type(b, dtype) if b.dtype != dtype else b
    n = a.shape[-1]
    vector = b.ndim == 1
    if vector:
        b = lax.reshape(b, (b.shape[0], 1))
    if b.shape[-2] != n:
        raise ValueError(f"solve: a has shape {tuple(a.shape)} but b has {b.shape[-2]} rows"
                         f"{user_line()}")
    batch = broadcast_shapes(a.shape[:-2], b.shape[:-2], what="solve operands")
    a = broadcast_to(a, batch + (n, n))
    b = broadcast_to(b, batch + tuple(b.shape[-2:]))
    x = lax_linalg.solve(a, b)
    if vector:
        x = lax.reshape(x, batch + (n,))
    return _back(x, inexact_dtype(result_type(dt_a, asarray(b).dtype)))


def inv(a):
    """The inverse of (a stack of) square matrices."""
    a, dtype = _float(a, "inv", square=True)
    return _back(lax_linalg.solve(a, _eye(a.shape[-1], a)), dtype)


def tensorinv(a, ind=2):
    """The inverse of a viewed as a square matrix by its first `ind` axes."""
    a = asarray(a)
    old = tuple(a.shape)
    rows = int(np.prod(old[:ind], dtype=np.int64))
    cols = int(np.prod(old[ind:], dtype=np.int64))
    if rows != cols:
        raise LinAlgError("tensorinv: the product of the first ind axes must equal the rest")
    return lax.reshape(inv(lax.reshape(a, (rows, cols))), old[ind:] + old[:ind])


def tensorsolve(a, b, axes=None):
    """x with tensordot(a, x, x.ndim) = b."""
    a, b = asarray(a), asarray(b)
    if axes is not None:
        axes = [ax % a.ndim for ax in axes]
        order = [d for d in range(a.ndim) if d not in axes] + list(axes)
        a = lax.transpose(a, order)
    out_shape = tuple(a.shape[b.ndim:])
    n = int(np.prod(out_shape, dtype=np.int64))
    m = int(np.prod(a.shape[:b.ndim], dtype=np.int64))
    if n != m:
        raise LinAlgError("tensorsolve: a is not square once reshaped")
    x = solve(lax.reshape(a, (m, n)), lax.reshape(b, (m,)))
    return lax.reshape(x, out_shape)


def slogdet(a):
    """(sign, log|det a|) of (a stack of) square matrices."""
    a, dtype = _float(a, "slogdet", square=True)
    sign, logdet = lax_linalg.slogdet(a)
    return SlogdetResult(_back(sign, dtype), _back(logdet, dtype))


def det(a):
    """The determinant, as sign * exp(log|det|) (differentiable for nonsingular a)."""
    a, dtype = _float(a, "det", square=True)
    sign, logdet = lax_linalg.slogdet(a)
    magnitude = lax.exp(logdet)
    if sign.dtype != magnitude.dtype:  # complex a: a complex sign (phase) and a real magnitude
        magnitude = lax.convert_element_type(magnitude, sign.dtype)
    return _back(lax.mul(sign, magnitude), dtype)


def matrix_power(a, n):
    """a @ a @ ... (n times) by repeated squaring; n < 0 uses inv(a); n == 0 the identity."""
    a = asarray(a)
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise LinAlgError(f"matrix_power needs square matrices, got shape {tuple(a.shape)}")
    n = int(n)
    if n == 0:
        return _eye(a.shape[-1], a)
    if n < 0:
        a, n = inv(a), -n
    result, base = None, a
    while n:
        if n & 1:
            result = base if result is None else _matmul(result, base)
        n >>= 1
        if n:
            base = _matmul(base, base)
    return result


def multi_dot(arrays):
    """The product of a chain of matrices, in the cheapest order (NumPy's dynamic program);
    the first and last may be 1-D."""
    arrays = [asarray(a) for a in arrays]
    if len(arrays) < 2:
        raise ValueError("multi_dot needs at least two arrays")
    first_vec, last_vec = arrays[0].ndim == 1, arrays[-1].ndim == 1
    if first_vec:
        arrays[0] = lax.reshape(arrays[0], (1, arrays[0].shape[0]))
    if last_vec:
        arrays[-1] = lax.reshape(arrays[-1], (arrays[-1].shape[0], 1))
    for a in arrays:
        if a.ndim != 2:
            raise ValueError("multi_dot: inner arrays must be 2-D")
    dtype = result_type(*arrays)
    arrays = [a if a.dtype == dtype else lax.convert_element_type(a, dtype) for a in arrays]
    order = _chain_order([a.shape for a in arrays])

    def product(i, j):
        if i == j:
            return arrays[i]
        k = order[i][j]
        return _matmul(product(i, k), product(k + 1, j))

    out = product(0, len(arrays) - 1)
    if first_vec and last_vec:
        return lax.reshape(out, ())
    if first_vec:
        return lax.reshape(out, (out.shape[1],))
    if last_vec:
        return lax.reshape(out, (out.shape[0],))
    return out


def _chain_order(shapes):
    """split[i][j]: where to split the product of matrices i..j (minimal multiplications)."""
    n = len(shapes)
    p = [shapes[0][0]] + [s[1] for s in shapes]
    cost = [[0] * n for _ in range(n)]
    split = [[0] * n for _ in range(n)]
    for length in range(1, n):
        for i in range(n - length):
            j = i + length
            cost[i][j] = None
            for k in range(i, j):
                c = cost[i][k] + cost[k + 1][j] + p[i] * p[k + 1] * p[j + 1]
                if cost[i][j] is None or c < cost[i][j]:
                    cost[i][j], split[i][j] = c, k
    return split


# ---------------------------------------------------------------------------------------------
# Decompositions

def cholesky(a, upper=False, *, symmetrize_input=True):
    """The lower (or upper, L^H) Cholesky factor of (a stack of) positive definite (Hermitian)
    matrices."""
    a, dtype = _float(a, "cholesky", square=True)
    if symmetrize_input:
        a = _symmetrize(a)
    L = lax_linalg.cholesky(a)
    return _back(_mH(L) if upper else L, dtype)


def eigh(a, UPLO="L", *, symmetrize_input=True):
    """(eigenvalues ascending, eigenvectors as columns) of (a stack of) symmetric matrices."""
    if UPLO not in ("L", "U"):
        raise ValueError("UPLO argument must be 'L' or 'U'")
    a, dtype = _float(a, "eigh", square=True)
    if symmetrize_input:
        a = _symmetrize(a)
    w, v = lax_linalg.eigh(a, lower=UPLO == "L")
    return EighResult(_back(w, dtype), _back(v, dtype))


def eig(a):
    """(eigenvalues, right eigenvectors as unit columns) of (a stack of) square matrices.

    Always complex, also for real a (as JAX; NumPy returns a real dtype when every eigenvalue
    happens to be real, which a traced program cannot know). The eigenvalues are differentiable;
    the eigenvectors are not (as in JAX): use eigvals, or eigh for symmetric matrices."""
    a, _ = _float(a, "eig", square=True)
    w, v = lax_linalg.eig(a)
    return EigResult(w, v)


def eigvals(a):
    """The eigenvalues of (a stack of) square matrices, complex (see eig); differentiable where
    they are distinct."""
    a, _ = _float(a, "eigvals", square=True)
    return lax_linalg.eig(a, compute_eigenvectors=False)


def eigvalsh(a, UPLO="L", *, symmetrize_input=True):
    """The eigenvalues (ascending) of (a stack of) symmetric matrices."""
    return eigh(a, UPLO, symmetrize_input=symmetrize_input).eigenvalues


def svd(a, full_matrices=True, compute_uv=True, hermitian=False):
    """(U, S, Vh) with a = U @ diag(S) @ Vh, or S alone (descending). Gradients need
    full_matrices=False (or square a) and distinct singular values."""
    a, dtype = _float(a, "svd")
    if not compute_uv:
        return _back(lax_linalg.svd(a, compute_uv=False), dtype)
    u, s, vh = lax_linalg.svd(a, full_matrices=full_matrices)
    return SVDResult(_back(u, dtype), _back(s, dtype), _back(vh, dtype))


def svdvals(x):
    """The singular values of (a stack of) matrices, descending."""
    return svd(x, compute_uv=False)


def qr(a, mode="reduced"):
    """(Q, R) with a = Q @ R ('reduced' or 'complete'), or R alone ('r'). Forward only."""
    if mode not in ("reduced", "complete", "r"):
        raise ValueError(f"qr: unsupported mode {mode!r} (use 'reduced', 'complete' or 'r')")
    a, dtype = _float(a, "qr")
    q, r = lax_linalg.qr(a, full_matrices=mode == "complete")
    if mode == "r":
        return _back(r, dtype)
    return QRResult(_back(q, dtype), _back(r, dtype))


def pinv(a, rcond=None, hermitian=False, *, rtol=None):
    """The Moore-Penrose pseudo-inverse via the thin svd; singular values below
    rcond * largest are treated as zero (NumPy's default rcond=1e-15)."""
    a, dtype = _float(a, "pinv")
    if rcond is None:
        rcond = 1e-15 if rtol is None else rtol
    u, s, vh = lax_linalg.svd(a, full_matrices=False)
    rcond = asarray(rcond, s.dtype)
    top = lax.reduce_max(s, (s.ndim - 1,))
    cutoff = lax.mul(lax.broadcast_in_dim(rcond, top.shape, ()) if rcond.ndim == 0 else
                     broadcast_to(rcond, top.shape), top)
    large = lax.gt(s, lax.broadcast_in_dim(cutoff, s.shape, tuple(range(s.ndim - 1))))
    one = lax.full(s.shape, 1, s.dtype)
    s_inv = lax.select_n(large, lax.full(s.shape, 0, s.dtype),
                         lax.div(one, lax.select_n(large, one, s)))
    s_inv = lax.convert_element_type(s_inv, u.dtype)
    scaled = lax.mul(_mH(u), lax.broadcast_in_dim(s_inv, s.shape + (u.shape[-2],),
                                                  tuple(range(s.ndim))))
    return _back(_matmul(_mH(vh), scaled), dtype)


def lstsq(a, b, rcond=None):
    """(x, residuals, rank, s): the least-squares solution of a @ x = b, through pinv."""
    a, out_dtype = _float(a, "lstsq")
    b = asarray(b)
    dtype = inexact_dtype(np.result_type(out_dtype, b.dtype))  # the result's
    work = inexact_dtype(result_type(a, b))
    a, b = (v if v.dtype == work else lax.convert_element_type(v, work) for v in (a, b))
    m, n = a.shape
    if rcond is None:
        rcond = np.finfo(a.dtype).eps * max(m, n)
    vector = b.ndim == 1
    b2 = lax.reshape(b, (m, 1)) if vector else b
    x = _matmul(pinv(a, rcond), b2)
    s = lax_linalg.svd(a, compute_uv=False)
    rank = matrix_rank(a, tol=lax.mul(lax.reduce_max(s, (0,)), np.array(rcond, s.dtype)))
    known = type(rank) is not Tracer or _is_concrete(rank)
    full_rank = m > n and (not known or int(rank) == n)
    if full_rank:
        r = lax.sub(b2, _matmul(a, x))
        residuals = _sum(abs_squared(r), (0,))
    else:
        residuals = np.zeros((0,), lax.real_dtype(a.dtype))
    if vector:
        x = lax.reshape(x, (n,))
    return LstsqResult(_back(x, dtype), residuals, lax.convert_element_type(rank, np.int32), s)


def _is_concrete(x):
    try:
        x.concrete_value("lstsq rank")
        return True
    except ConcretizationError:
        return False


def matrix_rank(A, tol=None, hermitian=False, *, rtol=None):
    """The number of singular values above tol (default: largest * max(M, N) * eps)."""
    A = asarray(A)
    if A.ndim < 2:
        nz = lax.ne(A, np.zeros((), A.dtype))
        return lax.convert_element_type(lax.reduce_max(nz, tuple(range(A.ndim))) if A.ndim
                                        else nz, np.int64)
    s = svdvals(A)
    top = lax.reduce_max(s, (s.ndim - 1,))
    if tol is None:
        factor = max(A.shape[-2:]) * np.finfo(s.dtype).eps if rtol is None else rtol
        tol = lax.mul(top, np.array(factor, s.dtype))
    tol = asarray(tol, s.dtype)
    tol = broadcast_to(tol, top.shape)
    big = lax.gt(s, lax.broadcast_in_dim(tol, s.shape, tuple(range(s.ndim - 1))))
    return lax.reduce_sum(lax.convert_element_type(big, np.int64), (s.ndim - 1,))


# ---------------------------------------------------------------------------------------------
# Norms

def _keepdims(r, shape, axes, keepdims):
    if not keepdims:
        return r
    return lax.reshape(r, tuple(1 if d in axes else s for d, s in enumerate(shape)))


def _vector_norm(x, ord, axes):
    if isinstance(ord, str):
        raise ValueError(f"Invalid norm order '{ord}' for vectors")
    if ord is None or ord == 2:
        return lax.sqrt(_sum(abs_squared(x), axes))
    if ord == np.inf:
        return lax.reduce_max(_abs(x), axes)
    if ord == -np.inf:
        return lax.reduce_min(_abs(x), axes)
    real = lax.real_dtype(x.dtype)
    if ord == 0:
        return _sum(lax.convert_element_type(lax.ne(x, np.zeros((), x.dtype)), real), axes)
    if ord == 1:
        return _sum(_abs(x), axes)
    p = np.array(ord, real)
    return lax.pow(_sum(lax.pow(_abs(x), p), axes), np.array(1.0 / ord, real))


def _matrix_norm(x, ord, row, col):
    if ord in ("fro", None):
        return lax.sqrt(_sum(abs_squared(x), (row, col)))
    if ord in (2, -2, "nuc"):
        rest = [d for d in range(x.ndim) if d not in (row, col)]
        s = lax_linalg.svd(lax.transpose(x, rest + [row, col]), compute_uv=False)
        last = (s.ndim - 1,)
        if ord == 2:
            return lax.reduce_max(s, last)
        if ord == -2:
            return lax.reduce_min(s, last)
        return _sum(s, last)
    if ord in (1, -1):
        sums = _sum(_abs(x), (row,))
        c = col - 1 if col > row else col
        return lax.reduce_max(sums, (c,)) if ord == 1 else lax.reduce_min(sums, (c,))
    if ord in (np.inf, -np.inf):
        sums = _sum(_abs(x), (col,))
        r = row - 1 if row > col else row
        return lax.reduce_max(sums, (r,)) if ord == np.inf else lax.reduce_min(sums, (r,))
    raise ValueError(f"Invalid norm order {ord!r} for matrices")


def norm(x, ord=None, axis=None, keepdims=False):
    """NumPy's norm: vector norms (None/2, 1, inf, -inf, 0, p) and matrix norms ('fro', 'nuc',
    1, -1, 2, -2, inf, -inf) over `axis` (an int, a pair, or None)."""
    x, dtype = _float(x, "norm", min_ndim=0)
    shape = tuple(x.shape)
    if axis is None:
        if ord is None:
            axes = tuple(range(x.ndim))
            return _back(_keepdims(lax.sqrt(_sum(abs_squared(x), axes)), shape, axes, keepdims),
                         dtype)
        if x.ndim == 1:
            axis = (0,)
        elif x.ndim == 2:
            axis = (0, 1)
        else:
            raise ValueError("Improper number of dimensions to norm.")
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    axes = tuple(_norm_axis(a, x.ndim) for a in axes)
    if len(axes) == 1:
        r = _vector_norm(x, ord, axes)
    elif len(axes) == 2:
        if axes[0] == axes[1]:
            raise ValueError("Duplicate axes given.")
        r = _matrix_norm(x, ord, *axes)
    else:
        raise ValueError("Improper number of dimensions to norm.")
    return _back(_keepdims(r, shape, axes, keepdims), dtype)


def _norm_axis(a, ndim):
    if not -ndim <= a < builtins.max(ndim, 1):
        raise np.exceptions.AxisError(f"axis {a} is out of bounds for array of dimension {ndim}")
    return a % ndim


def vector_norm(x, /, *, axis=None, keepdims=False, ord=2):
    """The array-API vector norm: over all axes (flattened) when axis is None."""
    x, dtype = _float(x, "vector_norm", min_ndim=0)
    shape = tuple(x.shape)
    if axis is None:
        axes = tuple(range(x.ndim))
        flat = lax.reshape(x, (x.size,))
        r = _vector_norm(flat, ord, (0,))
        return _back(_keepdims(r, shape, axes, keepdims), dtype)
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    axes = tuple(_norm_axis(a, x.ndim) for a in axes)
    rest = [d for d in range(x.ndim) if d not in axes]
    xt = lax.transpose(x, rest + list(axes))
    size = int(np.prod([x.shape[d] for d in axes], dtype=np.int64))
    xt = lax.reshape(xt, tuple(x.shape[d] for d in rest) + (size,))
    r = _vector_norm(xt, ord, (xt.ndim - 1,))
    return _back(_keepdims(r, shape, axes, keepdims), dtype)


def matrix_norm(x, /, *, keepdims=False, ord="fro"):
    """The array-API matrix norm over the last two axes."""
    return norm(x, ord=ord, axis=(-2, -1), keepdims=keepdims)


def cond(x, p=None):
    """The condition number: s_max / s_min for p None/2/-2, else norm(x, p) * norm(inv(x), p)."""
    x, dtype = _float(x, "cond")
    if p in (None, 2, -2):
        s = lax_linalg.svd(x, compute_uv=False)
        last = (s.ndim - 1,)
        hi, lo = lax.reduce_max(s, last), lax.reduce_min(s, last)
        return _back(lax.div(hi, lo) if p != -2 else lax.div(lo, hi), dtype)
    return _back(lax.mul(norm(x, p, axis=(-2, -1)), norm(inv(x), p, axis=(-2, -1))), dtype)


# ---------------------------------------------------------------------------------------------
# The array API's linalg names for functions fnp already has (as jnp.linalg re-exports them)

def matmul(x1, x2, /):
    from . import matmul as _matmul
    return _matmul(x1, x2)


def matrix_transpose(x, /):
    """The last two axes swapped."""
    from . import swapaxes
    return swapaxes(x, -1, -2)


def outer(x1, x2, /):
    from . import outer as _outer
    return _outer(x1, x2)


def tensordot(x1, x2, /, *, axes=2):
    from . import tensordot as _tensordot
    return _tensordot(x1, x2, axes=axes)


def vecdot(x1, x2, /, *, axis=-1):
    """sum(conj(x1) * x2) along `axis` (the array API's vecdot), broadcasting the rest."""
    from . import conj, multiply, sum
    return sum(multiply(conj(x1), x2), axis=axis)


def cross(x1, x2, /, *, axis=-1):
    from . import cross as _cross
    return _cross(x1, x2, axis=axis)


def diagonal(x, /, *, offset=0):
    """The diagonal of each matrix over the last two axes."""
    from . import diagonal as _diagonal
    return _diagonal(x, offset=offset, axis1=-2, axis2=-1)


def trace(x, /, *, offset=0, dtype=None):
    """The trace of each matrix over the last two axes."""
    from . import trace as _trace
    return _trace(x, offset=offset, axis1=-2, axis2=-1, dtype=dtype)


__all__ += ["matmul", "matrix_transpose", "outer", "tensordot", "vecdot", "cross", "diagonal",
            "trace"]
