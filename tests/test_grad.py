"""Reverse mode: grad, value_and_grad, vjp, jacrev, hessian, wrt masks, custom rules."""

import numpy as np
import pytest
from numeric import numeric_grad

import funcgrad as fg
import funcgrad.numpy as fnp
from funcgrad import nn

rng = np.random.default_rng(0)


def test_grad_of_sin_is_cos():
    x = rng.normal(size=5)
    np.testing.assert_allclose(fg.grad(lambda x: fnp.sum(fnp.sin(x)))(x), np.cos(x))


def test_grad_scalar_python_float():
    assert np.isclose(fg.grad(lambda x: x * x * x)(2.0), 12.0)


@pytest.mark.cpu_only
def test_value_and_grad_returns_value():
    x = rng.normal(size=4)
    v, g = fg.value_and_grad(lambda x: fnp.sum(x ** 2))(x)
    np.testing.assert_allclose(v, np.sum(x ** 2))
    np.testing.assert_allclose(g, 2 * x)
    assert isinstance(g, np.ndarray)


def mlp_loss(params, x, y):
    # fnp functions, not operators: numeric_grad calls it eagerly on host arrays, whose results
    # are on the device in GPU mode (CuPy refuses a NumPy operand)
    h = x
    for w, b in params[:-1]:
        h = fnp.tanh(fnp.add(fnp.matmul(h, w), b))
    w, b = params[-1]
    return fnp.mean(fnp.subtract(fnp.add(fnp.matmul(h, w), b), y) ** 2)


def make_mlp(sizes, dtype=np.float64):
    return [(rng.normal(0, 1 / np.sqrt(m), (m, n)).astype(dtype), rng.normal(size=n).astype(dtype))
            for m, n in zip(sizes[:-1], sizes[1:])]


def test_mlp_grad_matches_finite_differences():
    params = make_mlp([3, 5, 4, 2])
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(7, 2))
    g = fg.grad(mlp_loss)(params, x, y)
    for layer in range(len(params)):
        for k in range(2):
            def f(v, layer=layer, k=k):
                p = [list(t) for t in params]
                p[layer][k] = v
                return mlp_loss([tuple(t) for t in p], x, y)
            np.testing.assert_allclose(g[layer][k], numeric_grad(f, params[layer][k]),
                                       rtol=1e-6, atol=1e-8)


def test_argnums_tuple_and_pytrees():
    def f(a, b, c):
        return fnp.sum(a["x"] * b[0]) + fnp.sum(c)

    a, b, c = {"x": rng.normal(size=3)}, (rng.normal(size=3),), rng.normal(size=2)
    ga, gc = fg.grad(f, argnums=(0, 2))(a, b, c)
    np.testing.assert_allclose(ga["x"], b[0])
    np.testing.assert_allclose(gc, np.ones(2))
    gb = fg.grad(f, argnums=1)(a, b, c)
    assert isinstance(gb, tuple)
    np.testing.assert_allclose(gb[0], a["x"])
    np.testing.assert_allclose(fg.grad(f, argnums=-1)(a, b, c), np.ones(2))


@pytest.mark.cpu_only
def test_has_aux():
    def f(x):
        return fnp.sum(x ** 2), {"mean": fnp.mean(x)}

    x = rng.normal(size=4)
    g, aux = fg.grad(f, has_aux=True)(x)
    np.testing.assert_allclose(g, 2 * x)
    np.testing.assert_allclose(aux["mean"], x.mean())
    assert isinstance(aux["mean"], np.ndarray)
    (v, aux2), g2 = fg.value_and_grad(f, has_aux=True)(x)
    np.testing.assert_allclose(v, np.sum(x ** 2))


def test_closure_over_outer_values_and_tracers():
    w = rng.normal(size=3)

    def outer(a):
        return fg.grad(lambda x: fnp.sum(a * x * w))(np.ones(3)).sum()

    np.testing.assert_allclose(fg.grad(outer)(2.0), w.sum())


def test_higher_order():
    x = 0.7
    d1 = fg.grad(fnp.sin)
    d2 = fg.grad(d1)
    d3 = fg.grad(d2)
    d4 = fg.grad(d3)
    np.testing.assert_allclose([d1(x), d2(x), d3(x), d4(x)],
                               [np.cos(x), -np.sin(x), -np.cos(x), np.sin(x)])


def test_perturbation_confusion():
    # d/dx [x * d/dy (x + y)] = d/dx [x] = 1 (the classic nested-derivative bug)
    f = lambda x: x * fg.grad(lambda y: x + y)(1.0)
    np.testing.assert_allclose(fg.grad(f)(3.0), 1.0)


def test_python_control_flow_and_print(capsys):
    def f(x):
        print("value", x)
        while float(fnp.sum(x)) < 10:
            x = x * 2
        if fnp.sum(x) > 100:
            return fnp.sum(x)
        return fnp.sum(x ** 2)

    x = np.array([1.0, 2.0])
    g = fg.grad(f)(x)
    # x doubled twice -> 4x, sum 12 < 100 -> d/dx sum((4x)^2) = 32 x
    np.testing.assert_allclose(g, 32 * x)
    assert "value [1. 2.]" in capsys.readouterr().out


def test_data_dependent_shapes_in_eager_grad():
    def f(x):
        pos = x[x > 0]
        return fnp.sum(pos ** 2)

    x = np.array([1.0, -2.0, 3.0])
    np.testing.assert_allclose(fg.grad(f)(x), [2.0, 0.0, 6.0])


def test_vjp_pytree_and_cotangent_checks():
    def f(x, y):
        return {"a": x * y, "b": fnp.sin(x)}

    x, y = rng.normal(size=3), rng.normal(size=3)
    out, vjp_fn = fg.vjp(f, x, y)
    ct = {"a": np.ones(3), "b": np.full(3, 2.0)}
    gx, gy = vjp_fn(ct)
    np.testing.assert_allclose(gx, y + 2 * np.cos(x))
    np.testing.assert_allclose(gy, x)
    gx2, _ = vjp_fn(ct)  # callable again
    np.testing.assert_allclose(gx2, gx)
    with pytest.raises(ValueError, match="shape"):
        vjp_fn({"a": np.ones(4), "b": np.ones(3)})
    with pytest.raises(ValueError, match="structure"):
        vjp_fn([np.ones(3), np.ones(3)])


def test_vjp_integer_input_gets_float0():
    out, vjp_fn = fg.vjp(lambda x, n: x * n, np.ones(3), np.arange(3))
    gx, gn = vjp_fn(np.ones(3))
    np.testing.assert_allclose(gx, np.arange(3))
    assert gn.dtype == fg.float0


def test_jacrev_and_hessian():
    a = rng.normal(size=(3, 4))
    x = rng.normal(size=4)
    jac = fg.jacrev(lambda x: fnp.tanh(a @ x))(x)
    expected = (1 - np.tanh(a @ x) ** 2)[:, None] * a
    np.testing.assert_allclose(jac, expected, rtol=1e-10)
    h = fg.hessian(lambda x: fnp.sum(x ** 3))(x)
    np.testing.assert_allclose(h, np.diag(6 * x), atol=1e-12)


def test_hessian_logistic_regression_closed_form():
    X = rng.normal(size=(32, 5))
    y = (rng.uniform(size=32) > 0.5).astype(np.float64)

    def loss(w):
        z = X @ w
        return fnp.mean(fnp.logaddexp(0.0, z) - y * z)

    w = rng.normal(size=5) * 0.1
    p = 1 / (1 + np.exp(-(X @ w)))
    closed = X.T @ np.diag(p * (1 - p)) @ X / len(X)
    np.testing.assert_allclose(fg.hessian(loss)(w), closed, rtol=1e-8, atol=1e-10)


def test_stop_gradient():
    f = lambda x: fnp.sum(x * fg.stop_gradient(x))
    x = rng.normal(size=3)
    np.testing.assert_allclose(fg.grad(f)(x), x)


# ---------------------------------------------------------------------------------------------
# wrt masks

def test_wrt_mask_zeros_for_frozen_leaves():
    params = {"body": make_mlp([3, 4])[0], "head": make_mlp([4, 2])[0]}
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(5, 2))

    def loss(p):
        return mlp_loss([p["body"], p["head"]], x, y)

    full = fg.grad(loss)(params)
    masked = fg.grad(loss, wrt={"body": False, "head": True})(params)
    np.testing.assert_array_equal(masked["body"][0], 0)
    np.testing.assert_array_equal(masked["body"][1], 0)
    np.testing.assert_allclose(masked["head"][0], full["head"][0])
    # prefix masks per leaf
    m2 = fg.grad(loss, wrt={"body": (True, False), "head": False})(params)
    np.testing.assert_allclose(m2["body"][0], full["body"][0])
    np.testing.assert_array_equal(m2["body"][1], 0)


def _count(jaxpr, name):
    return sum(e.primitive.name == name for e in jaxpr.eqns)


def test_wrt_mask_prunes_backward_program():
    # An MLP whose first two layers are frozen: the joint forward+backward program has the 3
    # forward matmuls and exactly one backward matmul (the head weight's gradient): no matmul
    # produces frozen weights' gradients or propagates into the frozen layers.
    params = make_mlp([8, 16, 16, 4])
    x, y = rng.normal(size=(5, 8)), rng.normal(size=(5, 4))
    mask = [False, False, True]
    jaxpr = fg.make_jaxpr(fg.grad(mlp_loss, wrt=mask))(params, x, y)
    assert _count(jaxpr, "dot_general") == 3 + 1
    full = fg.make_jaxpr(fg.grad(mlp_loss))(params, x, y)
    assert _count(full, "dot_general") == 3 + 2 + 3  # dW for 3 layers, dh for the top 2
    # The tape keeps no activation that only frozen layers needed: no tanh derivative work.
    assert _count(jaxpr, "tanh") == 2 and _count(jaxpr, "mul") < _count(full, "mul")


def test_wrt_mask_structure_mismatch_names_path():
    params = {"a": np.ones(2), "b": {"c": np.ones(2)}}
    with pytest.raises(ValueError, match="b"):
        fg.grad(lambda p: fnp.sum(p["a"]), wrt={"a": True, "x": False})(params)


# ---------------------------------------------------------------------------------------------
# Errors

def test_non_scalar_output_error():
    with pytest.raises(TypeError, match=r"scalar.*f64\[3\].*jacrev"):
        fg.grad(lambda x: x * 2)(np.ones(3))


def test_integer_input_error_names_argument():
    def f(x, n):
        return fnp.sum(x)
    with pytest.raises(TypeError, match=r"argument 0 \(x\).*int64"):
        fg.grad(f)(np.arange(3), 1)


def test_argnums_out_of_range():
    with pytest.raises(ValueError, match="argnums"):
        fg.grad(lambda x: x, argnums=2)(1.0)


def test_leaked_tracer_error():
    saved = []

    def f(x):
        saved.append(x)
        return fnp.sum(x)

    fg.grad(f)(np.ones(2))
    with pytest.raises(fg.LeakedTracerError, match="escapes"):
        fnp.sin(saved[0]) + 1


# ---------------------------------------------------------------------------------------------
# Custom rules

def test_custom_vjp():
    @fg.custom_vjp
    def clip_grad(x):
        return x

    clip_grad.defvjp(lambda x: (x, None), lambda res, g: (fnp.clip(g, -1, 1),))
    g = fg.grad(lambda x: fnp.sum(clip_grad(x) * 5.0))(np.ones(3))
    np.testing.assert_allclose(g, np.ones(3))


def test_custom_vjp_nondiff_argnums_and_bad_bwd():
    @fg.custom_vjp
    def f(x, y):
        return x * y

    f.defvjp(lambda x, y: (x * y, (x, y)), lambda res, g: (g * res[1],))  # one missing
    with pytest.raises(TypeError, match="one cotangent per differentiable argument"):
        fg.grad(f)(2.0, 3.0)

    from functools import partial

    @partial(fg.custom_vjp, nondiff_argnums=(0,))
    def scale(k, x):
        return k * x

    scale.defvjp(lambda k, x: (k * x, None), lambda k, res, g: (k * g * 10,))
    np.testing.assert_allclose(fg.grad(lambda x: scale(3.0, x))(1.0), 30.0)


def test_custom_jvp_in_reverse_and_forward_mode():
    @fg.custom_jvp
    def f(x):
        return fnp.sin(x)

    @f.defjvp
    def f_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        return fnp.sin(x), 2 * t  # a deliberately "wrong" derivative, to see it is used

    np.testing.assert_allclose(fg.grad(lambda x: fnp.sum(f(x)))(np.ones(2)), [2.0, 2.0])
    _, t = fg.jvp(f, (np.ones(2),), (np.ones(2),))
    np.testing.assert_allclose(t, [2.0, 2.0])


def test_logsumexp_softmax_nan_free_at_extremes():
    x = np.array([1000.0, -1000.0, 0.0])
    g = fg.grad(lambda x: nn.logsumexp(x))(x)
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, [1.0, 0.0, 0.0])
    g2 = fg.grad(lambda x: nn.softmax(x)[0])(x)
    assert np.all(np.isfinite(g2))
    g3 = fg.grad(lambda x: fnp.sum(nn.log_softmax(x * 1e30)))(x)
    assert np.all(np.isfinite(g3))
    big = np.array([-np.inf, 0.0, 1.0])
    assert np.all(np.isfinite(fg.grad(lambda x: nn.logsumexp(x))(big)))


def test_abs_slope_at_zero_and_lax_stop_gradient_follow_jax():
    # JAX's convention: d|x|/dx = 1 at 0 (the x >= 0 side), not sign(0) = 0.
    g = fg.grad(lambda a: fnp.sum(fnp.abs(a)))(np.array([0.0, -2.0, 3.0]))
    np.testing.assert_array_equal(g, [1.0, -1.0, 1.0])
    g = fg.grad(lambda a: fnp.sum(a * fg.lax.stop_gradient({"k": a})["k"]))(np.array([2.0, 3.0]))
    np.testing.assert_array_equal(g, [2.0, 3.0])
