"""funcgrad.numpy.linalg against numpy.linalg (values, dtypes, batches, gradients) and
funcgrad.numpy.einsum against numpy.einsum (and the program it records)."""

from __future__ import annotations

import numpy as np
import pytest
from numeric import numeric_grad as numerical_grad

import funcgrad as fg
import funcgrad.numpy as fnp
from funcgrad.core import eval_jaxpr

rng = np.random.default_rng(0)
DTYPES = [np.float32, np.float64]
BATCHES = [(), (3,), (2, 2)]


def tol(dtype):
    return dict(rtol=2e-4, atol=2e-4) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-9)


def well_conditioned(batch, n, dtype):
    a = rng.normal(size=batch + (n, n)) + 3 * n ** 0.5 * np.eye(n)
    return a.astype(dtype)


def spd(batch, n, dtype):
    a = rng.normal(size=batch + (n, n))
    return (a @ np.swapaxes(a, -1, -2) + n * np.eye(n)).astype(dtype)


def traced(f, *args):
    """f traced to a program (abstract values), evaluated on args."""
    closed = fg.make_jaxpr(f)(*args)
    outs = eval_jaxpr(closed.jaxpr, closed.consts, *args)
    return outs[0] if len(outs) == 1 else tuple(outs)


def check(got, expected, dtype):
    got = np.asarray(got)
    assert got.dtype == np.asarray(expected).dtype, (got.dtype, np.asarray(expected).dtype)
    np.testing.assert_allclose(got, expected, **tol(dtype))




# ---------------------------------------------------------------------------------------------
# Forward values

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
def test_inv_solve_det_slogdet(dtype, batch):
    a = well_conditioned(batch, 4, dtype)
    b = rng.normal(size=batch + (4, 2)).astype(dtype)
    check(traced(fnp.linalg.inv, a), np.linalg.inv(a), dtype)
    check(traced(fnp.linalg.solve, a, b), np.linalg.solve(a, b), dtype)
    check(traced(fnp.linalg.det, a), np.linalg.det(a), dtype)
    sign, logdet = traced(fnp.linalg.slogdet, a)
    check(sign, np.linalg.slogdet(a)[0], dtype)
    check(logdet, np.linalg.slogdet(a)[1], dtype)
    v = rng.normal(size=(4,)).astype(dtype)
    check(fnp.linalg.solve(a, v), np.linalg.solve(a, v) if not batch else
          np.linalg.solve(a, np.broadcast_to(v[:, None], batch + (4, 1)))[..., 0], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
def test_cholesky_eigh(dtype, batch):
    s = spd(batch, 5, dtype)
    check(traced(fnp.linalg.cholesky, s), np.linalg.cholesky(s), dtype)
    check(fnp.linalg.cholesky(s, upper=True), np.linalg.cholesky(s, upper=True), dtype)
    for uplo in ("L", "U"):
        w, v = traced(lambda m, uplo=uplo: fnp.linalg.eigh(m, UPLO=uplo), s)
        we, ve = np.linalg.eigh(s, UPLO=uplo)
        check(w, we, dtype)
        # eigenvectors are unique up to sign: compare |v| and the reconstruction
        check(np.abs(v), np.abs(ve), dtype)
        check(fnp.linalg.eigvalsh(s, UPLO=uplo), np.linalg.eigvalsh(s, UPLO=uplo), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 4), (5, 3), (3, 5), (2, 5, 3)])
def test_svd_pinv_rank(dtype, shape):
    a = rng.normal(size=shape).astype(dtype)
    for full in (True, False):
        u, s, vh = traced(lambda m, full=full: fnp.linalg.svd(m, full_matrices=full), a)
        ue, se, vhe = np.linalg.svd(a, full_matrices=full)
        assert u.shape == ue.shape and vh.shape == vhe.shape
        check(s, se, dtype)
        k = s.shape[-1]
        check((u[..., :k] * s[..., None, :]) @ vh[..., :k, :], a, dtype)
    check(fnp.linalg.svd(a, compute_uv=False), np.linalg.svd(a, compute_uv=False), dtype)
    check(traced(fnp.linalg.pinv, a), np.linalg.pinv(a), dtype)
    assert int(np.asarray(fnp.linalg.matrix_rank(a)).ravel()[0]) == min(shape[-2:])
    low = rng.normal(size=(5, 2)) @ rng.normal(size=(2, 4))
    assert int(fnp.linalg.matrix_rank(low)) == np.linalg.matrix_rank(low) == 2


@pytest.mark.parametrize("dtype", DTYPES)
def test_matrix_power_multi_dot_lstsq_qr(dtype):
    a = well_conditioned((2,), 3, dtype)
    for n in (-3, -1, 0, 1, 2, 5):
        check(traced(lambda m, n=n: fnp.linalg.matrix_power(m, n), a),
              np.linalg.matrix_power(a, n), dtype)
    mats = [rng.normal(size=s).astype(dtype) for s in [(4,), (4, 6), (6, 2), (2, 3), (3,)]]
    check(fnp.linalg.multi_dot(mats), np.linalg.multi_dot(mats), dtype)
    mats = [rng.normal(size=s).astype(dtype) for s in [(10, 2), (2, 8), (8, 3)]]
    check(fnp.linalg.multi_dot(mats), np.linalg.multi_dot(mats), dtype)
    m = rng.normal(size=(6, 3)).astype(dtype)
    y = rng.normal(size=(6,)).astype(dtype)
    x, res, rank, s = fnp.linalg.lstsq(m, y)
    xe, rese, ranke, se = np.linalg.lstsq(m, y)
    check(x, xe, dtype)
    check(res, rese, dtype)
    assert int(rank) == ranke
    q, r = fnp.linalg.qr(m)
    check(q @ r, m, dtype)
    check(np.abs(r), np.abs(np.linalg.qr(m)[1]), dtype)


VECTOR_ORDS = [None, 1, 2, np.inf, -np.inf, 0, 3, 0.5, -1]
MATRIX_ORDS = ["fro", "nuc", 1, -1, 2, -2, np.inf, -np.inf, None]


@pytest.mark.parametrize("dtype", DTYPES)
def test_norm(dtype):
    x = rng.normal(size=(3, 4, 5)).astype(dtype)
    for ordv in VECTOR_ORDS:
        check(fnp.linalg.norm(x[0, 0], ordv), np.linalg.norm(x[0, 0], ordv), dtype)
        for axis in (0, -1, (1,)):
            for keep in (False, True):
                check(traced(lambda a, o=ordv, ax=axis, k=keep: fnp.linalg.norm(a, o, ax, k), x),
                      np.linalg.norm(x, ordv, axis, keep), dtype)
    for ordv in MATRIX_ORDS:
        check(fnp.linalg.norm(x[0], ordv), np.linalg.norm(x[0], ordv), dtype)
        for axis in ((0, 1), (2, 0), (-1, -2)):
            check(traced(lambda a, o=ordv, ax=axis: fnp.linalg.norm(a, o, ax, True), x),
                  np.linalg.norm(x, ordv, axis, True), dtype)
    check(fnp.linalg.norm(x), np.linalg.norm(x), dtype)
    check(fnp.linalg.norm(np.arange(5)), np.linalg.norm(np.arange(5)), np.float64)
    with pytest.raises(ValueError):
        fnp.linalg.norm(x, "fro", axis=0)
    with pytest.raises(ValueError):
        fnp.linalg.norm(x, 1)


def test_shape_errors():
    with pytest.raises(np.linalg.LinAlgError):
        fnp.linalg.inv(np.ones((2, 3)))
    with pytest.raises(np.linalg.LinAlgError):
        fnp.linalg.det(np.ones(3))


# ---------------------------------------------------------------------------------------------
# Gradients

def test_grad_det_inv_solve_slogdet():
    a = well_conditioned((), 4, np.float64)
    b = rng.normal(size=(4, 2))
    np.testing.assert_allclose(fg.grad(fnp.linalg.det)(a),
                               np.linalg.det(a) * np.linalg.inv(a).T, rtol=1e-8)
    np.testing.assert_allclose(fg.grad(lambda m: fnp.linalg.slogdet(m)[1])(a),
                               np.linalg.inv(a).T, rtol=1e-8)
    w = rng.normal(size=(4, 2))
    f = lambda m: fnp.sum(fnp.linalg.solve(m, b) * w)
    np.testing.assert_allclose(fg.grad(f)(a), numerical_grad(lambda m: np.sum(
        np.linalg.solve(m, b) * w), a), rtol=1e-6, atol=1e-8)
    w4 = rng.normal(size=(4, 4))
    f = lambda m: fnp.sum(fnp.linalg.inv(m) * w4)
    np.testing.assert_allclose(fg.grad(f)(a), numerical_grad(lambda m: np.sum(
        np.linalg.inv(m) * w4), a), rtol=1e-6, atol=1e-8)


def test_grad_cholesky_eigh_svd_are_symmetric_and_correct():
    x = rng.normal(size=(4, 3))
    w = rng.normal(size=(4, 4))

    def through(decomp, np_decomp):
        f = lambda y: fnp.sum(decomp(y @ y.T + np.eye(4)) * w)
        nf = lambda y: np.sum(np_decomp(y @ y.T + np.eye(4)) * w)
        np.testing.assert_allclose(fg.grad(f)(x), numerical_grad(nf, x), rtol=1e-5, atol=1e-7)

    through(fnp.linalg.cholesky, np.linalg.cholesky)
    # a sign convention (first row positive) makes the eigenvectors unique
    through(lambda m: (lambda v: v * fnp.sign(v[:1]))(fnp.linalg.eigh(m)[1]),
            lambda m: (lambda v: v * np.sign(v[:1]))(np.linalg.eigh(m)[1]))
    through(lambda m: fnp.linalg.eigvalsh(m)[:, None] * fnp.ones((4, 4)),
            lambda m: np.linalg.eigvalsh(m)[:, None] * np.ones((4, 4)))
    s = spd((), 4, np.float64)
    g = fg.grad(lambda m: fnp.sum(fnp.linalg.cholesky(m) * w))(s)
    np.testing.assert_allclose(g, g.T, atol=1e-12)
    y = rng.normal(size=(5, 3))
    np.testing.assert_allclose(
        fg.grad(lambda m: fnp.linalg.norm(m, "nuc"))(y),
        numerical_grad(lambda m: np.linalg.norm(m, "nuc"), y), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(
        fg.grad(lambda m: fnp.sum(fnp.linalg.svd(m, full_matrices=False)[0] ** 3))(y),
        numerical_grad(lambda m: np.sum(np.linalg.svd(m, full_matrices=False)[0] ** 3), y),
        rtol=1e-5, atol=1e-7)


def test_jvp_of_eigh_matches_vjp():
    s = spd((2,), 4, np.float64)
    t = rng.normal(size=s.shape)
    t = t + np.swapaxes(t, -1, -2)
    f = lambda m: fnp.linalg.eigvalsh(m)
    _, tangent = fg.jvp(f, (s,), (t,))
    ct = rng.normal(size=(2, 4))
    _, vjp_fn = fg.vjp(f, s)
    np.testing.assert_allclose(np.sum(ct * np.asarray(tangent)),
                               np.sum(np.asarray(vjp_fn(ct)[0]) * t), rtol=1e-10)


# ---------------------------------------------------------------------------------------------
# einsum

EINSUM_CASES = [
    ("ij,jk->ik", (3, 4), (4, 5)), ("ij,jk", (3, 4), (4, 5)), ("ii->i", (4, 4)), ("ii", (4, 4)),
    ("i,j->ij", (3,), (4,)), ("bij,bjk->bik", (2, 3, 4), (2, 4, 5)),
    ("...ij,...jk->...ik", (2, 3, 4), (4, 5)), ("...ij,...jk", (6, 1, 3, 4), (2, 4, 5)),
    ("ij->", (3, 4)), ("ij->ji", (3, 4)), ("iij->j", (3, 3, 4)), ("iji->ij", (3, 4, 3)),
    ("ij,ij->i", (3, 4), (3, 4)), ("abc,cd,de->abe", (2, 3, 4), (4, 5), (5, 6)),
    ("i,i->", (5,), (5,)), (",i->i", (), (3,)), ("ijk,jil->kl", (3, 4, 5), (4, 3, 6)),
    ("a...,a...->...", (3, 2, 4), (3, 1, 4)), ("...", (2, 3)), ("i,j,k->ijk", (2,), (3,), (4,)),
    ("ij,jk,kl,lm->im", (2, 3), (3, 4), (4, 5), (5, 6)), ("ab,ab,ab->", (3, 4), (3, 4), (3, 4)),
    ("iij,jkk->ik", (2, 2, 3), (3, 4, 4)), ("bhqd,bhkd->bhqk", (2, 3, 4, 5), (2, 3, 6, 5)),
    ("i i -> ", (3, 3)), ("ijk", (2, 3, 4)), ("kji", (2, 3, 4)), ("ba,ca->bc", (2, 3), (4, 3)),
]


@pytest.mark.parametrize("case", EINSUM_CASES, ids=lambda c: c[0])
@pytest.mark.parametrize("optimize", [True, False, "optimal"])
def test_einsum_matches_numpy(case, optimize):
    subscripts, shapes = case[0], case[1:]
    ops = [rng.normal(size=s) for s in shapes]
    expected = np.einsum(subscripts, *ops)
    got = traced(lambda *xs: fnp.einsum(subscripts, *xs, optimize=optimize), *ops)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


def test_einsum_dtypes_follow_numpy():
    a = rng.integers(0, 5, size=(3, 4)).astype(np.int32)
    b = rng.normal(size=(4,)).astype(np.float32)
    for ops in [(a, b), (a, a.T), (b.astype(np.float32), b.astype(np.float32))]:
        sub = "ij,j->i" if ops[1].ndim == 1 and ops[0].ndim == 2 else (
            "ij,jk->ik" if ops[0].ndim == 2 else "i,i->")
        got = fnp.einsum(sub, *ops)
        exp = np.einsum(sub, *ops)
        assert got.dtype == exp.dtype
        np.testing.assert_allclose(got, exp, rtol=1e-5)


def _count(closed, name):
    return sum(e.primitive.name == name for e in closed.eqns)


def test_einsum_matmul_is_one_dot_general():
    a, b = np.ones((3, 4)), np.ones((4, 5))
    closed = fg.make_jaxpr(lambda x, y: fnp.einsum("ij,jk->ik", x, y))(a, b)
    assert _count(closed, "dot_general") == 1
    assert len(closed.eqns) == 1, str(closed)
    closed = fg.make_jaxpr(lambda x, y: fnp.einsum("bij,bjk->bik", x, y))(
        np.ones((2, 3, 4)), np.ones((2, 4, 5)))
    assert _count(closed, "dot_general") == 1
    ops = [np.ones(s) for s in [(2, 3), (3, 4), (4, 5), (5, 6)]]
    closed = fg.make_jaxpr(lambda *xs: fnp.einsum("ij,jk,kl,lm->im", *xs))(*ops)
    assert _count(closed, "dot_general") == 3


def test_einsum_gradient():
    a, b = rng.normal(size=(3, 4)), rng.normal(size=(4, 5))
    ga, gb = fg.grad(lambda x, y: fnp.sum(fnp.einsum("ij,jk->ik", x, y) ** 2), argnums=(0, 1))(
        a, b)
    c = a @ b
    np.testing.assert_allclose(ga, 2 * c @ b.T)
    np.testing.assert_allclose(gb, 2 * a.T @ c)
    g = fg.grad(lambda x: fnp.einsum("ii", x))(rng.normal(size=(3, 3)))
    np.testing.assert_allclose(g, np.eye(3))


def test_einsum_path_matches_numpy():
    ops = [np.ones((2, 3)), np.ones((3, 40)), np.ones((40, 5))]
    path, report = fnp.einsum_path("ij,jk,kl->il", *ops, optimize="greedy")
    assert path == np.einsum_path("ij,jk,kl->il", *ops, optimize="greedy")[0]
    assert isinstance(report, str)


def test_einsum_errors():
    with pytest.raises(ValueError):
        fnp.einsum("ij,jk->ik", np.ones((2, 3)), np.ones((4, 5)))
    with pytest.raises(ValueError):
        fnp.einsum("ij->k", np.ones((2, 3)))
    with pytest.raises(ValueError):
        fnp.einsum("ijk", np.ones((2, 3)))


def test_array_api_linalg_names_match_numpy():
    r = np.random.default_rng(7)
    a, b, c, v = r.random((2, 3, 3)), r.random((2, 3, 3)), r.random((3, 4)), r.random(3)
    la = fnp.linalg
    for got, want in [
        (la.matmul(a, b), np.linalg.matmul(a, b)),
        (la.matrix_transpose(a), np.linalg.matrix_transpose(a)),
        (la.outer(v, v), np.linalg.outer(v, v)),
        (la.tensordot(a, c, axes=1), np.linalg.tensordot(a, c, axes=1)),
        (la.vecdot(a, b), np.linalg.vecdot(a, b)),
        (la.cross(a, b), np.linalg.cross(a, b)),
        (la.diagonal(a, offset=1), np.linalg.diagonal(a, offset=1)),
        (la.trace(a), np.linalg.trace(a)),
    ]:
        np.testing.assert_allclose(got, want, rtol=1e-12)
    g = fg.grad(lambda m: fnp.sum(la.vecdot(m, b) ** 2))(a)
    np.testing.assert_allclose(g, 2 * np.sum(a * b, -1, keepdims=True) * b, rtol=1e-12)


_SUBLIST_CASES = [
    ((2, 3), [0, 1], (3, 4), [1, 2]),
    ((2, 3), [0, 1], (3, 4), [1, 2], [2, 0]),
    ((2, 3, 4), [Ellipsis, 1], (5, 4), [2, 1], [Ellipsis, 2]),
    ((3, 3), [0, 0]),
    ((3, 3), [0, 0], []),
    ((2, 3), [5, 7], (3,), [7], (2,), [5], []),
]


@pytest.mark.parametrize("case", range(len(_SUBLIST_CASES)))
def test_einsum_interleaved_operands_and_sublists(case):
    """einsum(op0, sublist0, op1, sublist1, ..., [out]) as NumPy, eager, jit and in grad."""
    rng = np.random.default_rng(case)
    spec = list(_SUBLIST_CASES[case])
    for i in range(0, len(spec) - (len(spec) % 2), 2):
        spec[i] = rng.normal(size=spec[i])
    want = np.einsum(*spec)
    np.testing.assert_allclose(fnp.einsum(*spec), want, rtol=1e-12)
    ops = spec[0::2][: len(spec) // 2]
    rest = spec[1::2] + ([spec[-1]] if len(spec) % 2 else [])

    def f(*xs):
        args = []
        for x, sub in zip(xs, rest):
            args += [x, sub]
        return fnp.einsum(*args, *rest[len(xs):])

    np.testing.assert_allclose(fg.jit(f)(*ops), want, rtol=1e-12)
    g = fg.grad(lambda x: fnp.sum(f(x, *ops[1:]) ** 2))(ops[0])
    assert g.shape == ops[0].shape
    assert fnp.einsum_path(*spec)[0][0] == "einsum_path"


def test_einsum_sublist_errors_are_clear():
    with pytest.raises(ValueError, match="sublist labels must be integers"):
        fnp.einsum(np.ones(2), [0.5])
    with pytest.raises(TypeError, match="expected a sublist"):
        fnp.einsum(np.ones(2), "i")
