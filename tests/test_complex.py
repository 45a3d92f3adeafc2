"""Complex numbers: JAX's conventions for derivatives, NumPy's for values and dtypes.

grad of a real-valued f of complex z = x + iy is df/dx - i df/dy (JAX's convention: the
cotangent g pairs with a tangent t by Re(g t)); holomorphic=True gives f'(z) for complex outputs,
which otherwise raise (as in JAX). Values, dtypes and orderings follow NumPy. Every transform and
jit agree. (The per-primitive rules are checked in tests/test_rules.py with complex specs.)
"""

from __future__ import annotations

import numpy as np
import pytest

import funcgrad as fg
import funcgrad.numpy as fnp
from funcgrad import lax


def complex_grad_fd(f, z, eps=1e-6):
    """JAX's gradient of a real-valued f at complex z, by central differences:
    df/dRe - i df/dIm per element."""
    z = np.asarray(z, np.complex128)
    g = np.zeros_like(z)
    for i in np.ndindex(z.shape):
        e = np.zeros_like(z)
        e[i] = eps
        d_re = (float(f(z + e)) - float(f(z - e))) / (2 * eps)
        d_im = (float(f(z + 1j * e)) - float(f(z - 1j * e))) / (2 * eps)
        g[i] = d_re - 1j * d_im
    return g


Z = np.array([3 + 4j, -1 + 0.5j, 0.2 - 2j])


# ---------------------------------------------------------------------------------------------
# grad of real-valued functions of complex inputs


def test_grad_of_abs_squared_is_jax_convention():
    """The issue's example: grad(|z|^2) at 3+4j is 6-8j (2 conj(z)), dtype kept."""
    z = np.array([3 + 4j], np.complex64)
    g = fg.grad(lambda z: (fnp.abs(z) ** 2).sum())(z)
    assert g.dtype == np.complex64
    np.testing.assert_allclose(g, [6 - 8j], rtol=1e-6)
    np.testing.assert_allclose(fg.jit(fg.grad(lambda z: (fnp.abs(z) ** 2).sum()))(z), [6 - 8j],
                               rtol=1e-6)


@pytest.mark.parametrize("f", [
    lambda z: fnp.sum(fnp.abs(z)),
    lambda z: fnp.sum(fnp.real(z * z) + fnp.imag(fnp.exp(z))),
    lambda z: fnp.sum(fnp.angle(z) * fnp.abs(fnp.sin(z))),
    lambda z: fnp.real(fnp.vdot(z, z * (1 + 2j))),
    lambda z: fnp.sum(fnp.abs(fnp.sqrt(z) + fnp.log(z)) ** 2),
    lambda z: fnp.linalg.norm(z) + fnp.var(z),
    lambda z: fnp.real(fnp.prod(z)) + fnp.imag(fnp.cumsum(z)[-1] * fnp.conj(z[0])),
], ids=["abs", "real_imag", "angle", "vdot", "sqrt_log", "norm_var", "prod_cumsum"])
def test_grad_matches_finite_differences(f):
    want = complex_grad_fd(f, Z)
    for g in (fg.grad(f), fg.grad(fg.jit(f)), fg.jit(fg.grad(f))):
        np.testing.assert_allclose(g(Z), want, rtol=1e-6, atol=1e-8)


def test_transforms_agree_on_complex_programs():
    def f(z, w):
        return fnp.sum(fnp.abs(fnp.tanh(z) * w + fnp.conj(z)) ** 2)

    w = np.array([0.5 - 1j, 2j, 1.0 + 0j])
    ref = fg.grad(f, argnums=(0, 1))(Z, w)
    got = [fg.grad(fg.jit(f), argnums=(0, 1))(Z, w),
           fg.jit(fg.grad(f, argnums=(0, 1)))(Z, w),
           fg.grad(lambda z, w: fnp.sum(fg.vmap(f)(z[:, None], w[:, None])),
                   argnums=(0, 1))(Z, w),
           fg.grad(fg.checkpoint(f), argnums=(0, 1))(Z, w)]
    for g in got:
        for a, b in zip(g, ref):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    # forward mode: jvp along a complex tangent gives Re(sum(grad * t))
    t = np.array([1 - 1j, 0.3j, -2.0 + 0j])
    _, tangent = fg.jvp(lambda z: f(z, w), (Z,), (t,))
    np.testing.assert_allclose(tangent, np.sum(np.multiply(ref[0], t)).real, rtol=1e-10)


# ---------------------------------------------------------------------------------------------
# holomorphic=True


def test_holomorphic_grad_jacobians_and_hessian():
    f = lambda z: fnp.sum(z ** 3 + fnp.exp(z))  # noqa: E731
    np.testing.assert_allclose(fg.grad(f, holomorphic=True)(Z), 3 * Z ** 2 + np.exp(Z))
    g = lambda z: z ** 3 * fnp.sin(z)  # noqa: E731
    want = np.diag(3 * Z ** 2 * np.sin(Z) + Z ** 3 * np.cos(Z))
    np.testing.assert_allclose(fg.jacfwd(g, holomorphic=True)(Z), want, rtol=1e-12)
    np.testing.assert_allclose(fg.jacrev(g, holomorphic=True)(Z), want, rtol=1e-12)
    np.testing.assert_allclose(fg.hessian(f, holomorphic=True)(Z), np.diag(6 * Z + np.exp(Z)),
                               rtol=1e-12)
    out, vjp_fn = fg.vjp(g, Z, holomorphic=True)
    np.testing.assert_allclose(vjp_fn(np.ones(3, complex))[0], np.diag(want))


@pytest.mark.parametrize("call, match", [
    (lambda: fg.grad(lambda z: fnp.sum(z * z))(Z), "grad requires real-valued outputs"),
    (lambda: fg.jacrev(lambda z: z * 2)(Z), "jacrev requires real-valued outputs"),
    (lambda: fg.jacfwd(lambda z: fnp.abs(z))(Z), "jacfwd requires real-valued inputs"),
    (lambda: fg.grad(lambda x: fnp.sum(x), holomorphic=True)(np.ones(2)),
     "holomorphic=True requires inputs with complex dtype"),
    (lambda: fg.grad(lambda z: fnp.sum(fnp.abs(z)), holomorphic=True)(Z),
     "holomorphic=True requires outputs with complex dtype"),
    (lambda: fg.jacfwd(lambda z: fnp.abs(z), holomorphic=True)(Z),
     "holomorphic=True requires outputs with complex dtype"),
    (lambda: fg.grad(lambda z: fnp.sum(fnp.abs(z)), 0, False, {"a": True})(Z),
     "holomorphic must be True or False"),
], ids=["grad_out", "jacrev_out", "jacfwd_in", "holo_real_in", "holo_real_out", "jacfwd_out",
        "holo_flag"])
def test_complex_misuse_raises_like_jax(call, match):
    with pytest.raises(TypeError, match=match):
        call()


def test_complex_output_error_names_the_fix():
    with pytest.raises(TypeError, match="holomorphic=True.*fg.vjp"):
        fg.grad(lambda z: fnp.sum(z))(Z)


# ---------------------------------------------------------------------------------------------
# real, imag, conj, angle, abs under every transform


PARTS = {"real": fnp.real, "imag": fnp.imag, "conj": fnp.conj, "angle": fnp.angle,
         "abs": fnp.abs, "angle_deg": lambda z: fnp.angle(z, deg=True)}


@pytest.mark.parametrize("name", sorted(PARTS))
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_parts_eager_jit_vmap(name, dtype):
    fn = PARTS[name]
    np_fn = {"real": np.real, "imag": np.imag, "conj": np.conj, "angle": np.angle,
             "abs": np.abs, "angle_deg": lambda z: np.angle(z, deg=True)}[name]
    z = (Z * np.array([1, 2, 3])[:, None]).astype(dtype)
    want = np_fn(z)
    for got in (fn(z), fg.jit(fn)(z), fg.vmap(fn)(z)):
        assert np.asarray(got).dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-6)
    rx = np.array([-1.5, 0.0, 2.0])  # real inputs: NumPy's answers too
    for got in (fn(rx), fg.jit(fn)(rx)):
        np.testing.assert_allclose(got, np_fn(rx))


@pytest.mark.parametrize("name", sorted(PARTS))
def test_parts_derivatives(name):
    fn = PARTS[name]

    def loss(z):
        out = fn(z)
        return fnp.sum(fnp.real(out * (0.3 + 0.7j)) if out.dtype.kind == "c" else out * 1.3)

    want = complex_grad_fd(loss, Z)
    np.testing.assert_allclose(fg.grad(loss)(Z), want, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(fg.jit(fg.grad(loss))(Z), want, rtol=1e-6, atol=1e-8)
    rows = fg.vmap(fg.grad(loss))(np.stack([Z, 2 * Z]))
    np.testing.assert_allclose(rows[0], want, rtol=1e-6, atol=1e-8)


def test_lax_complex_keeps_infinities():
    out = lax.complex(np.array([1.0, np.inf]), np.array([np.inf, -2.0]))
    assert out.dtype == np.complex128
    assert out[0].real == 1.0 and out[0].imag == np.inf and out[1].real == np.inf
    assert lax.complex(np.float32(1), np.float32(2)).dtype == np.complex64


# ---------------------------------------------------------------------------------------------
# NumPy's dtypes, orderings and complex semantics


@pytest.mark.parametrize("a, b", [
    (np.ones(2, np.float32), 1j), (np.ones(2, np.float64), 1j), (np.ones(2, np.int32), 1j),
    (np.ones(2, np.complex64), np.ones(2, np.float64)), (np.ones(2, np.complex64), 2.5),
    (np.ones(2, np.int8), np.ones(2, np.complex64)),
])
def test_promotion_follows_numpy(a, b):
    want = (a * b).dtype
    assert fnp.multiply(a, b).dtype == want
    assert fg.jit(lambda x, y: x * y)(a, b).dtype == want


def test_orderings_are_lexicographic_as_numpy():
    z = np.array([1 + 2j, 1 - 1j, -1 + 5j, 1 + 2j, 0.5 + 0j])
    w = z[::-1]
    for name in ["less", "less_equal", "greater", "greater_equal", "maximum", "minimum",
                 "fmax", "fmin"]:
        for fn in (getattr(fnp, name), fg.jit(getattr(fnp, name))):
            np.testing.assert_array_equal(fn(z, w), getattr(np, name)(z, w))
    for name in ["max", "min", "argmax", "argmin", "sort", "argsort"]:
        for fn in (getattr(fnp, name), fg.jit(getattr(fnp, name))):
            np.testing.assert_array_equal(fn(z), getattr(np, name)(z))
    m = np.stack([z, w, z * 1j])
    for axis in (0, 1):
        np.testing.assert_array_equal(fg.jit(lambda x, a=axis: fnp.max(x, axis=a))(m),
                                      np.max(m, axis=axis))
        np.testing.assert_array_equal(fg.jit(lambda x, a=axis: fnp.argmin(x, axis=a))(m),
                                      np.argmin(m, axis=axis))
    nan = np.array([1 + 1j, complex(np.nan, 0), 3 + 0j])
    assert np.isnan(fnp.max(nan)) and fnp.argmax(nan) == np.argmax(nan)
    np.testing.assert_array_equal(fnp.nanmax(nan), np.nanmax(nan))
    np.testing.assert_array_equal(fnp.clip(z, 0, 1 + 1j), np.clip(z, 0, 1 + 1j))


def test_max_derivative_goes_to_the_winner():
    z = np.array([1 + 2j, 3 - 1j, 3 - 2j])
    g = fg.grad(lambda z: fnp.abs(fnp.max(z)))(z)
    np.testing.assert_allclose(g, [0, (3 + 1j) / abs(3 - 1j), 0])


@pytest.mark.parametrize("name", ["var", "std", "nanvar", "mean", "nanmean", "isfinite",
                                  "isinf", "isnan", "round", "rint", "iscomplex", "isreal",
                                  "sign", "nan_to_num", "cov", "corrcoef"])
def test_statistics_and_classification_as_numpy(name):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(3, 4)) + 1j * rng.normal(size=(3, 4))
    if name.startswith("is") or name == "nan_to_num":
        z[0, 1] = complex(np.inf, 1)
        z[1, 2] = complex(2, np.nan)
    for fn in (getattr(fnp, name), fg.jit(getattr(fnp, name))):
        got, want = fn(z), getattr(np, name)(z)
        assert np.asarray(got).dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_conjugating_products_as_numpy():
    a, b = Z, Z[::-1] * 1j
    m = np.outer(Z, Z[::-1])
    for name, args in [("vdot", (a, b)), ("vecdot", (m, m)), ("vecmat", (a, m)),
                       ("matvec", (m, a)), ("inner", (a, b)), ("dot", (a, b))]:
        np.testing.assert_allclose(fg.jit(getattr(fnp, name))(*args), getattr(np, name)(*args))
    np.testing.assert_allclose(fnp.linalg.vecdot(m, m), np.linalg.vecdot(m, m))


def test_isposinf_of_complex_raises_as_numpy():
    with pytest.raises(TypeError, match="complex"):
        fnp.isposinf(Z)


@pytest.mark.parametrize("mode", ["valid", "same", "full"])
def test_correlate_conjugates_its_second_argument_as_numpy(mode):
    v = np.array([1 + 2j, 3 - 1j])
    for a, b in [(Z, v), (v, Z), (Z.real, v), (v, Z.real)]:
        np.testing.assert_allclose(fnp.correlate(a, b, mode), np.correlate(a, b, mode))
        np.testing.assert_allclose(fg.jit(fnp.correlate, static_argnums=2)(a, b, mode),
                                   np.correlate(a, b, mode))

    def loss(z):
        return fnp.sum(fnp.abs(fnp.correlate(z, z[::-1] * 1j, mode)) ** 2)
    np.testing.assert_allclose(fg.grad(loss)(Z), complex_grad_fd(loss, Z), rtol=1e-6)


def test_fabs_of_complex_raises_as_numpy():
    for fn in (fnp.fabs, fg.jit(fnp.fabs)):
        with pytest.raises(TypeError, match="fabs needs a real operand.*use abs"):
            fn(Z)


# ---------------------------------------------------------------------------------------------
# power(0, y): the derivative in y is 0 (as JAX), for scalars and arrays, every transform


def test_power_of_zero_has_zero_derivative_in_the_exponent():
    g = fg.grad(lambda y: fnp.power(0.0, y))
    assert g(2.0) == 0.0
    assert fg.jit(g)(2.0) == 0.0
    np.testing.assert_array_equal(
        fg.grad(lambda y: fnp.sum(fnp.power(np.zeros(3), y)))(np.array([1.0, 2.0, 3.0])), 0.0)
    _, t = fg.jvp(lambda y: fnp.power(np.float64(0.0), y), (1.5,), (1.0,))
    assert t == 0.0
    # d/dx of x**y at x = 0 is unchanged: y * 0**(y-1)
    assert fg.grad(lambda x: fnp.power(x, 2.0))(0.0) == 0.0


# ---------------------------------------------------------------------------------------------
# Complex linear algebra (the primitives' rules are checked in tests/test_rules.py)

A = np.array([[2.0 + 1j, 0.5 - 0.2j, 0.1j], [0.3, 1.5 - 0.5j, 0.2 + 0.1j],
              [-0.4j, 0.2, -1.0 + 0.3j]])


@pytest.mark.parametrize("f", [
    lambda a: fnp.abs(fnp.linalg.det(a)),
    lambda a: fnp.linalg.slogdet(a)[1],
    lambda a: fnp.linalg.norm(a, "nuc") + fnp.linalg.norm(a, 2),
    lambda a: fnp.sum(fnp.abs(fnp.linalg.inv(a)) ** 2),
    lambda a: fnp.sum(fnp.linalg.eigvalsh(fnp.matmul(a, fnp.conj(a.T))) ** 2),
    lambda a: fnp.sum(fnp.abs(fnp.linalg.cholesky(fnp.matmul(a, fnp.conj(a.T)) + fnp.eye(3))) ** 2),
    lambda a: fnp.sum(fnp.abs(fnp.linalg.svd(a)[0][:, 0] * fnp.conj(fnp.linalg.svd(a)[2][0]))),
    lambda a: fnp.sum(fnp.real(fnp.linalg.eigvals(a)) * fnp.imag(fnp.linalg.eigvals(a))),
], ids=["det", "slogdet", "norms", "inv", "eigvalsh", "cholesky", "svd_vectors", "eigvals"])
def test_complex_linalg_gradients(f):
    want = complex_grad_fd(f, A)
    np.testing.assert_allclose(fg.grad(f)(A), want, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(fg.jit(fg.grad(f))(A), want, rtol=1e-5, atol=1e-7)


def test_eig_values_and_vectors():
    real = np.array([[2.0, 1.0, 0.0], [-1.0, 2.0, 0.5], [0.0, 0.3, 1.0]])  # complex pair
    for a in (real, A):
        w, v = fnp.linalg.eig(a)
        assert w.dtype == v.dtype == np.complex128  # always complex, as JAX
        np.testing.assert_allclose(np.matmul(a, v), np.multiply(v, w[None, :]), atol=1e-12)
        np.testing.assert_allclose(np.sort_complex(fg.jit(fnp.linalg.eigvals)(a)),
                                   np.sort_complex(np.linalg.eigvals(a)), atol=1e-12)
    g = fg.grad(lambda a: fnp.sum(fnp.abs(fnp.linalg.eigvals(a)) ** 2))(real)
    assert g.dtype == np.float64
    np.testing.assert_allclose(
        g, complex_grad_fd(lambda a: np.sum(np.abs(np.linalg.eigvals(a.real)) ** 2), real).real,
        rtol=1e-6)
    with pytest.raises(NotImplementedError, match="eigenvectors.*eigvals"):
        fg.grad(lambda a: fnp.sum(fnp.abs(fnp.linalg.eig(a)[1])))(A)


def test_mixed_real_and_complex_operands_of_linalg_under_jit():
    """Found by the JAX differential fuzz: solve(real a, complex b) traced with the operands in
    different dtypes (eagerly NumPy promoted them); lstsq dropped b's imaginary part."""
    a = np.array([[2.0, 0.3, 0.0], [0.1, 1.5, -0.2], [0.0, 0.4, 1.0]])
    b = np.array([1 + 1j, 2.0, 3j])
    for fn in (fnp.linalg.solve, fg.jit(fnp.linalg.solve)):
        np.testing.assert_allclose(fn(a, b), np.linalg.solve(a, b))
    tall = np.vstack([a, [[1.0, 2.0, 0.5]]])
    rhs = np.append(b, 1 - 1j)
    want = np.linalg.lstsq(tall, rhs)
    for got in (fnp.linalg.lstsq(tall, rhs), fg.jit(lambda m, v: fnp.linalg.lstsq(m, v))(tall,
                                                                                         rhs)):
        np.testing.assert_allclose(got[0], want[0])
        np.testing.assert_allclose(got[1], want[1])
