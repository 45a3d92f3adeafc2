"""cond/switch, while_loop, fori_loop, scan: values against Python loops, gradients against
finite differences, and every composition with vmap, jit, jvp and grad."""

import numpy as np
import pytest

import funcgrad as fg
import funcgrad.numpy as fnp
from funcgrad import lax

RNG = np.random.default_rng(0)


def rand(*shape):
    return RNG.normal(size=shape)


def fd_grad(f, x, eps=1e-6):
    """Central finite differences of a scalar function of one float64 array."""
    x = np.asarray(x, np.float64)
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        g[i] = (float(f(xp)) - float(f(xm))) / (2 * eps)
    return g


def close(a, b, tol=1e-6):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


def tree_close(a, b, tol=1e-6):
    la, lb = fg.tree_util.tree_leaves(a), fg.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        close(x, y, tol)


# ---------------------------------------------------------------------------------------------
# scan

def cell(carry, x, w):
    h, n = carry
    h = fnp.tanh(fnp.add(fnp.matmul(h, w), x))  # fnp, not @ and +: eager with host w and x
    return (h, n + 1), {"h": h, "s": fnp.sum(h * h)}


def scan_model(w, h0, xs, reverse=False):
    (h, n), ys = lax.scan(lambda c, x: cell(c, x, w), (h0, 0), xs, reverse=reverse)
    return fnp.sum(h) + fnp.sum(ys["s"]) * 0.5 + fnp.sum(ys["h"][1])


def loop_model(w, h0, xs, reverse=False):
    c = (h0, 0)
    hs, ss = [], []
    order = range(len(xs) - 1, -1, -1) if reverse else range(len(xs))
    outs = {}
    for t in order:
        c, y = cell(c, xs[t], w)
        outs[t] = y
    hs = [outs[t]["h"] for t in range(len(xs))]
    ss = [outs[t]["s"] for t in range(len(xs))]
    return fnp.sum(c[0]) + sum(ss) * 0.5 + fnp.sum(hs[1])


W, H0, XS = rand(3, 3) * 0.5, rand(3), rand(5, 3)


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_values_and_pytrees(reverse):
    (h, n), ys = lax.scan(lambda c, x: cell(c, x, W), (H0, 0), XS, reverse=reverse)
    c = (H0, 0)
    order = range(4, -1, -1) if reverse else range(5)
    hs = {}
    for t in order:
        c, y = cell(c, XS[t], W)
        hs[t] = y["h"]
    close(h, c[0])
    assert int(n) == 5
    close(ys["h"], np.stack([hs[t] for t in range(5)]))
    assert ys["s"].shape == (5,)


def test_scan_length_without_xs_and_errors():
    c, ys = lax.scan(lambda c, _: (c * 2.0, c), np.float64(1.0), None, length=4)
    assert float(c) == 16.0 and ys.tolist() == [1, 2, 4, 8]
    with pytest.raises(ValueError, match="length"):
        lax.scan(lambda c, x: (c, x), 0.0, None)
    with pytest.raises(ValueError, match="leading axes"):
        lax.scan(lambda c, x: (c, x), 0.0, (np.ones(3), np.ones(4)))


def test_scan_carry_type_error_names_the_leaf():
    def bad(c, x):
        return {"a": c["a"], "b": fnp.concatenate([c["b"], c["b"]])}, None
    with pytest.raises(TypeError, match=r"\['b'\].*f64\[2\].*f64\[4\]"):
        lax.scan(bad, {"a": np.ones(2), "b": np.ones(2)}, np.ones(3))
    with pytest.raises(TypeError, match="structure"):
        lax.scan(lambda c, x: ((c, c), None), np.ones(2), np.ones(3))


def test_scan_weak_init_takes_body_dtype():
    c, _ = lax.scan(lambda c, x: (c + x, None), 0.0, np.ones(3, np.float32))
    assert c.dtype == np.float32 and float(c) == 3.0


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_grad_matches_loop_and_finite_differences(reverse):
    for argnum, x in ((0, W), (1, H0), (2, XS)):
        def f(v, argnum=argnum, model=scan_model):
            args = [W, H0, XS]
            args[argnum] = v
            return model(*args, reverse=reverse)
        g = fg.grad(f)(x)
        close(g, fg.grad(lambda v: f(v, model=loop_model))(x))
        close(g, fd_grad(f, x), 1e-5)


def test_scan_grad_under_jit_is_a_reverse_scan():
    g = fg.grad(scan_model, argnums=(0, 1, 2))
    jaxpr = str(fg.make_jaxpr(g)(W, H0, XS))
    assert jaxpr.count("scan[") == 2 and "reverse=True" in jaxpr
    assert jaxpr.count("tanh") == 1   # not unrolled: one tanh, in the forward body
    tree_close(fg.jit(g)(W, H0, XS), g(W, H0, XS))


def test_scan_grad_of_grad():
    def f(w):
        return fnp.sum(lax.scan(lambda c, x: (fnp.sin(c * w) + x, c), 0.3, XS[:, 0])[0] ** 2)

    def f_loop(w):
        c = 0.3
        for x in XS[:, 0]:
            c = fnp.sin(c * w) + x
        return fnp.sum(c ** 2)
    close(fg.grad(fg.grad(f))(0.7), fg.grad(fg.grad(f_loop))(0.7))
    close(fg.jit(fg.grad(fg.grad(f)))(0.7), fg.grad(fg.grad(f_loop))(0.7))
    close(fg.hessian(f)(0.7), fg.grad(fg.grad(f_loop))(0.7))


def test_scan_jvp_and_linearize():
    t = rand(3, 3)
    out, tan = fg.jvp(lambda w: scan_model(w, H0, XS), (W,), (t,))
    ref, ref_t = fg.jvp(lambda w: loop_model(w, H0, XS), (W,), (t,))
    close(out, ref)
    close(tan, ref_t)
    close(fg.jacfwd(lambda w: scan_model(w, H0, XS))(W), fg.grad(scan_model)(W, H0, XS))


def test_scan_vmap_each_operand_and_jit():
    ws = rand(4, 3, 3) * 0.5
    hs = rand(4, 3)
    xss = rand(4, 5, 3)
    for in_axes, args in (((0, None, None), (ws, H0, XS)), ((None, 0, None), (W, hs, XS)),
                          ((None, None, 0), (W, H0, xss)), ((0, 0, 0), (ws, hs, xss))):
        ref = np.stack([loop_model(*[a[i] if ax == 0 else a for a, ax in zip(args, in_axes)])
                        for i in range(4)])
        close(fg.vmap(scan_model, in_axes)(*args), ref)
        close(fg.jit(fg.vmap(scan_model, in_axes))(*args), ref)
        g = fg.vmap(fg.grad(scan_model), in_axes)(*args)
        ref_g = np.stack([fg.grad(loop_model)(*[a[i] if ax == 0 else a
                                                for a, ax in zip(args, in_axes)])
                          for i in range(4)])
        close(g, ref_g)


def test_scan_vmap_xs_on_other_axis_and_ys_out():
    xs = rand(5, 4, 2)   # batch on axis 1
    f = fg.vmap(lambda xs: lax.scan(lambda c, x: (c + x, c * x), np.zeros(2), xs), in_axes=1)
    c, ys = f(xs)
    assert c.shape == (4, 2) and ys.shape == (4, 5, 2)
    close(c, xs.sum(0))


def test_scan_grad_of_closure_and_consts():
    # the body closes over the differentiated value: it becomes an operand of the scan
    def f(a):
        return fnp.sum(lax.scan(lambda c, x: (c * a + x, None), np.zeros(3), XS)[0])
    close(fg.grad(f)(0.9), fd_grad(lambda a: f(a), np.float64(0.9)), 1e-5)
    close(fg.jit(fg.grad(f))(0.9), fg.grad(f)(0.9))


def test_nested_scan_grad_and_jit():
    def f(w):
        def outer(c, x):
            inner, _ = lax.scan(lambda d, y: (fnp.tanh(d * w + y), None), c, x)
            return inner, fnp.sum(inner)
        return fnp.sum(lax.scan(outer, 0.1, XS)[1])

    def f_loop(w):
        c, tot = 0.1, 0.0
        for x in XS:
            for y in x:
                c = fnp.tanh(c * w + y)
            tot = tot + c
        return tot
    close(f(0.8), f_loop(0.8))
    close(fg.grad(f)(0.8), fg.grad(f_loop)(0.8))
    close(fg.jit(fg.grad(f))(0.8), fg.grad(f_loop)(0.8))


def test_scan_over_custom_jvp_body_falls_back_to_recompute():
    def f(x):
        return fnp.sum(lax.scan(lambda c, v: (fg.nn.logsumexp(fnp.stack([c, v])), c), 0.0,
                                x)[1])
    x = rand(6)
    close(fg.grad(f)(x), fd_grad(f, x), 1e-5)
    close(fg.jit(fg.grad(f))(x), fg.grad(f)(x))


def test_lax_map():
    close(lax.map(lambda x: x ** 2, np.arange(4.0)), np.arange(4.0) ** 2)


# ---------------------------------------------------------------------------------------------
# cond / switch

def branches():
    return (lambda x, y: fnp.sin(x) * y, lambda x, y: x * x + y)


def cond_ref(p, x, y):
    return x * x + y if p else np.sin(x) * y


def test_cond_values_and_concrete_grad():
    f, t = branches()
    x, y = rand(3), rand(3)
    for p in (True, False):
        close(lax.cond(p, t, f, x, y), cond_ref(p, x, y))
        g = fg.grad(lambda x, p=p: fnp.sum(lax.cond(p, t, f, x, y)))(x)
        close(g, 2 * x if p else np.cos(x) * y)


def test_cond_traced_pred_under_jit_and_grad():
    f, t = branches()
    x, y = rand(3), rand(3)

    def loss(x, y, s):
        return fnp.sum(lax.cond(s > 0, t, f, x, y))
    jaxpr = str(fg.make_jaxpr(fg.grad(loss, argnums=(0, 1)))(x, y, 1.0))
    assert jaxpr.count("cond[") == 2   # forward and backward: a branch, not both
    for s in (1.0, -1.0):
        g = fg.jit(fg.grad(loss, argnums=(0, 1)))(x, y, s)
        ref = fg.grad(lambda x, y, s=s: fnp.sum(x * x + y if s > 0 else fnp.sin(x) * y),
                      argnums=(0, 1))(x, y)
        tree_close(g, ref)
        close(fg.jit(loss)(x, y, s), np.sum(cond_ref(s > 0, x, y)))


def test_cond_vmap_batched_predicate_is_a_select():
    f, t = branches()
    xs, y = rand(6, 3), rand(3)
    ps = np.array([True, False, True, True, False, False])
    out = fg.vmap(lambda p, x: lax.cond(p, t, f, x, y))(ps, xs)
    close(out, np.stack([cond_ref(p, x, y) for p, x in zip(ps, xs)]))
    jaxpr = str(fg.make_jaxpr(fg.vmap(lambda p, x: lax.cond(p, t, f, x, y)))(ps, xs))
    assert "cond[" not in jaxpr and "select_n" in jaxpr
    g = fg.vmap(fg.grad(lambda x, p: fnp.sum(lax.cond(p, t, f, x, y))))(xs, ps)
    close(g, np.stack([2 * x if p else np.cos(x) * y for p, x in zip(ps, xs)]))


def test_cond_vmap_unbatched_predicate_keeps_cond():
    f, t = branches()
    xs, y = rand(6, 3), rand(3)
    fn = fg.jit(fg.vmap(lambda x, p: lax.cond(p > 0, t, f, x, y), in_axes=(0, None)))
    close(fn(xs, 1.0), np.stack([cond_ref(True, x, y) for x in xs]))
    close(fn(xs, -1.0), np.stack([cond_ref(False, x, y) for x in xs]))
    assert "cond[" in str(fn.lower(xs, 1.0))


def test_cond_jvp_traced_and_concrete():
    f, t = branches()
    x, y, tx = rand(3), rand(3), rand(3)
    _, tan = fg.jvp(lambda x: lax.cond(True, t, f, x, y), (x,), (tx,))
    close(tan, 2 * x * tx)
    jv = fg.jit(lambda x, tx, s: fg.jvp(lambda x: lax.cond(s > 0, t, f, x, y), (x,), (tx,)))
    close(jv(x, tx, -1.0)[1], np.cos(x) * y * tx)


def test_switch_clamps_and_checks_types():
    brs = [lambda x: x + 1.0, lambda x: x * 2.0, lambda x: -x]
    for i, ref in ((-3, 3.0), (0, 3.0), (1, 4.0), (2, -2.0), (9, -2.0)):
        assert float(lax.switch(i, brs, 2.0)) == ref
        assert float(fg.jit(lambda i, x: lax.switch(i, brs, x))(i, 2.0)) == ref
    out = fg.vmap(lambda i, x: lax.switch(i, brs, x))(np.array([0, 1, 2, 5]), np.full(4, 2.0))
    close(out, [3.0, 4.0, -2.0, -2.0])
    with pytest.raises(TypeError, match="branch outputs must have identical types"):
        lax.cond(True, lambda x: x, lambda x: x.astype(np.float32), np.ones(2))


def test_cond_inside_scan_grad_under_jit():
    def f(w):
        def body(c, x):
            c = lax.cond(x > 0, lambda c: fnp.sin(c * w), lambda c: c * w * w, c)
            return c, c
        return fnp.sum(lax.scan(body, 0.5, XS[:, 0])[1])

    def f_loop(w):
        c, tot = 0.5, 0.0
        for x in XS[:, 0]:
            c = fnp.sin(c * w) if x > 0 else c * w * w
            tot = tot + c
        return tot
    close(fg.grad(f)(1.1), fg.grad(f_loop)(1.1))
    close(fg.jit(fg.grad(f))(1.1), fg.grad(f_loop)(1.1))


# ---------------------------------------------------------------------------------------------
# while_loop / fori_loop

def collatz_like(x):
    return lax.while_loop(lambda c: c[0] < 10.0, lambda c: (c[0] * 1.5 + 1.0, c[1] + 1), (x, 0))


def collatz_ref(x):
    n = 0
    while x < 10.0:
        x, n = x * 1.5 + 1.0, n + 1
    return x, n


def test_while_values_jit_and_printing():
    for x in (0.5, 3.0, 12.0):
        tree_close(collatz_like(x), collatz_ref(x))
        tree_close(fg.jit(collatz_like)(x), collatz_ref(x))
    text = str(fg.make_jaxpr(collatz_like)(1.0))
    assert "while[" in text and "cond_jaxpr=\n" in text and "\n        " in text


def test_while_vmap_batched_predicate_masks_finished_lanes():
    xs = np.array([0.5, 3.0, 12.0, 9.0])
    ref = [collatz_ref(x) for x in xs]
    for fn in (fg.vmap(collatz_like), fg.jit(fg.vmap(collatz_like))):
        x, n = fn(xs)
        close(x, [r[0] for r in ref])
        assert n.tolist() == [r[1] for r in ref]


def test_while_vmap_unbatched_predicate():
    def f(x, k):
        return lax.while_loop(lambda c: c[1] < k, lambda c: (c[0] * 2.0, c[1] + 1), (x, 0))[0]
    close(fg.vmap(f, in_axes=(0, None))(np.arange(3.0), 3), np.arange(3.0) * 8)


def test_while_forward_mode_and_reverse_mode_error():
    def f(x):
        return lax.while_loop(lambda c: c[1] < 4, lambda c: (fnp.sin(c[0]) * 1.3, c[1] + 1),
                              (x, 0))[0]

    def f_ref(x):
        for _ in range(4):
            x = np.sin(x) * 1.3
        return x
    _, t = fg.jvp(f, (0.4,), (1.0,))
    close(t, fd_grad(f_ref, np.float64(0.4)), 1e-6)
    close(fg.jacfwd(f)(0.4), t)
    with pytest.raises(TypeError, match="fori_loop with static"):
        fg.grad(f)(0.4)


def test_fori_loop_static_is_a_scan_and_differentiable():
    def f(x):
        return lax.fori_loop(0, 5, lambda i, c: c * fnp.cos(c) + i, x)

    def f_ref(x):
        for i in range(5):
            x = x * np.cos(x) + i
        return x
    close(f(0.3), f_ref(0.3))
    assert "scan[" in str(fg.make_jaxpr(f)(0.3))
    close(fg.grad(f)(0.3), fd_grad(f_ref, np.float64(0.3)), 1e-6)
    close(fg.jit(fg.grad(f))(0.3), fg.grad(f)(0.3))


def test_fori_loop_traced_bounds_is_a_while():
    f = fg.jit(lambda n, x: lax.fori_loop(0, n, lambda i, c: c + i * 1.0, x))
    assert float(f(5, 0.0)) == 10.0 and float(f(0, 1.0)) == 1.0
    assert "while[" in str(f.lower(5, 0.0))
    # i is weakly typed, so float32 carries stay float32
    assert lax.fori_loop(0, 3, lambda i, c: c * i, np.float32(1.0)).dtype == np.float32


# ---------------------------------------------------------------------------------------------
# recurrent layers

def test_lstm_gradient_against_finite_differences():
    p = fg.nn.lstm_init(0, 3, 4, dtype=np.float64)
    xs = rand(6, 2, 3)

    def loss(p):
        hs, (h, c) = fg.nn.lstm(p, xs)
        return fnp.sum(hs ** 2) + fnp.sum(c)
    g = fg.grad(loss)(p)
    for k in ("wx", "wh", "b"):
        def f(v, k=k):
            return loss({**p, k: v})
        close(g[k], fd_grad(f, p[k]), 1e-6)
    tree_close(fg.jit(fg.grad(loss))(p), g)


def test_rnn_matches_python_loop():
    p = fg.nn.rnn_init(1, 3, 4, dtype=np.float64)
    xs = rand(5, 3)
    hs, h = fg.nn.rnn(p, xs)
    ref, ph = np.zeros(4), fg.device_get(p)  # the reference loop runs on the host
    for x in xs:
        ref = np.tanh(x @ ph["wx"] + ref @ ph["wh"] + ph["b"])
    close(h, ref)
    close(hs[-1], ref)
    g = fg.grad(lambda p: fnp.sum(fg.nn.rnn(p, xs)[0]))(p)
    close(g["wh"], fd_grad(lambda v: np.sum(fg.nn.rnn({**p, "wh": v}, xs)[0]), p["wh"]), 1e-6)
