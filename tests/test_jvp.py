"""Forward mode: jvp, linearize, jacfwd, and its compositions with reverse mode."""

import numpy as np
import pytest

import funcgrad as fg
import funcgrad.numpy as fnp

rng = np.random.default_rng(1)


def f(x, y):
    return fnp.multiply(fnp.sin(x), y) + fnp.exp(x / 3)  # eager on host y: fnp, not *


def test_jvp_matches_finite_differences():
    x, y = rng.normal(size=4), rng.normal(size=4)
    tx, ty = rng.normal(size=4), rng.normal(size=4)
    out, t = fg.jvp(f, (x, y), (tx, ty))
    eps = 1e-6
    fd = (f(x + eps * tx, y + eps * ty) - f(x - eps * tx, y - eps * ty)) / (2 * eps)
    np.testing.assert_allclose(out, f(x, y))
    np.testing.assert_allclose(t, fd, rtol=1e-6, atol=1e-9)


def test_jvp_pytrees_and_zero_tangent_outputs():
    def g(p):
        return {"a": p["w"] * 2, "const": np.ones(2)}

    out, t = fg.jvp(g, ({"w": np.ones(3)},), ({"w": np.arange(3.0)},))
    np.testing.assert_allclose(t["a"], 2 * np.arange(3.0))
    np.testing.assert_array_equal(t["const"], 0)


def test_jvp_vjp_agree():
    x = rng.normal(size=(3, 4))
    w = rng.normal(size=(4, 2))
    g = lambda x: fnp.tanh(x @ w)
    u, v = rng.normal(size=x.shape), rng.normal(size=(3, 2))
    _, ju = fg.jvp(g, (x,), (u,))
    _, vjp_fn = fg.vjp(g, x)
    (vj,) = vjp_fn(v)
    np.testing.assert_allclose(np.sum(v * np.asarray(ju)), np.sum(np.asarray(vj) * u), rtol=1e-10)


def test_linearize_reuses_the_forward_pass():
    x = rng.normal(size=5)
    out, f_jvp = fg.linearize(lambda x: fnp.sin(x) ** 2, x)
    np.testing.assert_allclose(out, np.sin(x) ** 2)
    t = rng.normal(size=5)
    np.testing.assert_allclose(f_jvp(t), 2 * np.sin(x) * np.cos(x) * t)
    # The linear program does no primal work: no sin, only products with residuals.
    names = {e.primitive.name for e in f_jvp.jaxpr.eqns}
    assert "sin" not in names and "cos" not in names


def test_jacfwd_equals_jacrev():
    a = rng.normal(size=(3, 3))
    h = lambda x: fnp.tanh(a @ x) * x[0]
    x = rng.normal(size=3)
    np.testing.assert_allclose(fg.jacfwd(h)(x), fg.jacrev(h)(x), rtol=1e-10, atol=1e-12)


def test_jacfwd_of_jacrev_pytree():
    def g(p):
        return fnp.sum(p["a"] ** 2 * p["b"][0])

    p = {"a": rng.normal(size=2), "b": (rng.normal(size=2),)}
    h = fg.jacfwd(fg.jacrev(g))(p)
    np.testing.assert_allclose(h["a"]["a"], np.diag(2 * p["b"][0]))
    np.testing.assert_allclose(h["a"]["b"][0], np.diag(2 * p["a"]))


def test_grad_of_jvp_and_jvp_of_grad():
    x = 0.3
    d2 = -np.sin(x)
    _, t = fg.jvp(fg.grad(fnp.sin), (x,), (1.0,))
    np.testing.assert_allclose(t, d2)
    g = fg.grad(lambda x: fg.jvp(fnp.sin, (x,), (1.0,))[1])(x)
    np.testing.assert_allclose(g, d2)


def test_jvp_errors():
    with pytest.raises(ValueError, match="shape"):
        fg.jvp(fnp.sin, (np.ones(3),), (np.ones(2),))
    with pytest.raises(TypeError, match="dtype"):
        fg.jvp(fnp.sin, (np.ones(3),), (np.ones(3, np.float32),))
    with pytest.raises(TypeError, match="tuples"):
        fg.jvp(fnp.sin, np.ones(3), np.ones(3))


def test_custom_vjp_under_jvp_is_a_clear_error():
    @fg.custom_vjp
    def g(x):
        return x

    g.defvjp(lambda x: (x, None), lambda r, c: (c,))
    with pytest.raises(TypeError, match="forward-mode"):
        fg.jvp(g, (1.0,), (1.0,))


@pytest.mark.cpu_only
def test_jacfwd_has_aux_returns_concrete_aux_eagerly_and_under_transforms():
    def f(q):
        return fnp.sin(q), {"s": fnp.sum(q), "n": 3}
    x = np.array([0.5, 1.0])
    jac, aux = fg.jacfwd(f, has_aux=True)(x)
    np.testing.assert_allclose(jac, np.diag(np.cos(x)))
    assert type(aux["s"]) is np.ndarray and float(aux["s"]) == 1.5 and aux["n"] == 3
    jac2, aux2 = fg.jit(fg.jacfwd(f, has_aux=True))(x)
    np.testing.assert_allclose(jac2, jac)
    assert float(aux2["s"]) == 1.5
    _, aux3 = fg.vmap(fg.jacfwd(f, has_aux=True))(np.stack([x, 2 * x]))
    np.testing.assert_allclose(aux3["s"], [1.5, 3.0])
    out, f_jvp, aux4 = fg.linearize(f, x, has_aux=True)
    np.testing.assert_allclose(f_jvp(np.ones(2)), np.cos(x))
    assert float(aux4["s"]) == 1.5
