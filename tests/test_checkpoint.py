"""fg.checkpoint / fg.remat: same gradients as without, fewer stored residuals; and
fg.print_saved_residuals."""

import numpy as np
import pytest

import funcgrad as fg
import funcgrad.numpy as fnp
from funcgrad import lax
from funcgrad.transforms.checkpoint import saved_residuals

RNG = np.random.default_rng(0)


def close(a, b, tol=1e-6):
    for x, y in zip(fg.tree_util.tree_leaves(a), fg.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)


def layer(h, w):
    # fnp functions, not @ and +: called eagerly on host arrays, whose results are on the device
    # in GPU mode (CuPy refuses a NumPy operand)
    z = fnp.matmul(h, w)
    return fnp.add(fnp.tanh(z) * fnp.sin(z), h)


def mlp(ws, x, ckpt):
    f = fg.checkpoint(layer) if ckpt else layer
    for w in ws:
        x = f(x, w)
    return fnp.sum(x ** 2)


WS = [RNG.normal(size=(4, 4)) * 0.5 for _ in range(3)]
X = RNG.normal(size=(2, 4))


def test_grad_of_checkpoint_equals_grad():
    ref = fg.grad(mlp, argnums=(0, 1))(WS, X, False)
    close(fg.grad(mlp, argnums=(0, 1))(WS, X, True), ref)
    close(fg.jit(fg.grad(mlp, argnums=(0, 1)), static_argnums=2)(WS, X, True), ref)
    close(fg.remat(layer)(X, WS[0]), layer(X, WS[0]))


def test_higher_order_forward_mode_and_vmap():
    def f(x, ckpt):
        return mlp(WS, x, ckpt)
    v = RNG.normal(size=X.shape)
    hvp = [fg.jvp(fg.grad(f), (X, c), (v, False))[1] for c in (False, True)]
    close(hvp[1], hvp[0])
    gg = [fg.grad(lambda x, c=c: fnp.sum(fg.grad(f)(x, c) ** 2))(X) for c in (False, True)]
    close(gg[1], gg[0])
    xs = RNG.normal(size=(3, 2, 4))
    close(fg.vmap(fg.grad(lambda x: f(x, True)))(xs),
          fg.vmap(fg.grad(lambda x: f(x, False)))(xs))
    close(fg.jvp(lambda x: mlp(WS, x, True), (X,), (v,)),
          fg.jvp(lambda x: mlp(WS, x, False), (X,), (v,)))


def test_saved_residuals_shrink_to_the_inputs():
    full = saved_residuals(lambda ws, x: mlp(ws, x, False), WS, X)
    ck = saved_residuals(lambda ws, x: mlp(ws, x, True), WS, X)
    assert len(ck) < len(full)
    # checkpointed: the arguments, the input of each later layer, and the input of the loss's
    # square; nothing from inside the layers
    assert len(ck) == (len(WS) + 1) + (len(WS) - 1) + 1
    assert all("argument" in w or "output of checkpoint" in w for _, w in ck)


def test_print_saved_residuals_names_lines(capsys):
    def f(x):
        y = fnp.sin(x)
        return fnp.sum(y * y)
    fg.print_saved_residuals(f, np.ones(3, np.float32))
    out = capsys.readouterr().out
    assert "f32[3]" in out and "from the argument" in out
    assert "output of sin" in out and "test_checkpoint.py" in out and "total" in out


def test_jit_keeps_the_recomputation():
    g = fg.jit(fg.grad(lambda x: mlp(WS, x, True)))
    text = str(g.lower(X))
    assert "checkpoint[" in text
    # the backward half recomputes each layer's tanh: not merged with the forward by CSE
    assert text.count("tanh") >= 2 * len(WS)


def test_checkpoint_on_a_scan_body():
    w = RNG.normal(size=(4, 4)) * 0.5

    def f(w, ckpt):
        body = fg.checkpoint(layer) if ckpt else layer
        return fnp.sum(lax.scan(lambda h, _: (body(h, w), None), X, None, length=5)[0] ** 2)
    ref = fg.grad(f)(w, False)
    close(fg.grad(f)(w, True), ref)
    close(fg.jit(fg.grad(f), static_argnums=1)(w, True), ref)
    small = sum(a.size for a, _ in saved_residuals(lambda w: f(w, True), w))
    big = sum(a.size for a, _ in saved_residuals(lambda w: f(w, False), w))
    assert small < big


def test_static_argnums_and_policies():
    f = fg.checkpoint(lambda x, n: x * n, static_argnums=1)
    assert float(fg.grad(f)(2.0, 3)) == 3.0
    everything = fg.checkpoint(layer, policy=fg.transforms.checkpoint.checkpoint_policies
                               .everything_saveable)
    assert everything is layer
    keep_all = fg.checkpoint(layer, policy=lambda *a, **k: True)  # any callable is a policy
    assert callable(keep_all)


# ---------------------------------------------------------------------------------------------
# Saving policies

def _policy_loss(ws, x, policy):
    def block(w, h):
        z = fg.checkpoint_name(h @ w, "pre")
        return fnp.tanh(z) * fnp.sin(z)
    h = x
    for w in ws:
        h = fg.checkpoint(block, policy=policy)(w, h)
    return fnp.sum(h ** 2)


POLICIES = {
    "none": None,
    "dots": fg.checkpoint_policies.dots_saveable,
    "dots_no_batch": fg.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "names": fg.checkpoint_policies.save_only_these_names("pre"),
    "all_but_names": fg.checkpoint_policies.save_anything_except_these_names("pre"),
    "both": fg.checkpoint_policies.save_from_both_policies(
        fg.checkpoint_policies.dots_saveable, fg.checkpoint_policies.save_only_these_names("x")),
}


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_policies_keep_the_gradient_under_every_transform(name):
    r = np.random.default_rng(0)
    ws = [r.normal(0, 0.3, (6, 6)) for _ in range(3)]
    x = r.normal(size=(4, 6))
    policy = POLICIES[name]

    def plain(ws, x):
        h = x
        for w in ws:
            z = h @ w
            h = fnp.tanh(z) * fnp.sin(z)
        return fnp.sum(h ** 2)
    want = fg.grad(plain)(ws, x)
    for got in (fg.grad(_policy_loss)(ws, x, policy),
                fg.jit(fg.grad(_policy_loss), static_argnums=2)(ws, x, policy),
                [g[1] for g in fg.vmap(fg.grad(lambda w, xx: _policy_loss(w, xx, policy)),
                                       (None, 0))(ws, np.stack([-x, x]))]):
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=1e-10)


def test_dots_saveable_keeps_the_matmuls_and_does_not_recompute_them():
    from funcgrad.transforms.checkpoint import saved_residuals
    r = np.random.default_rng(1)
    ws = [r.normal(0, 0.3, (6, 6)) for _ in range(3)]
    x = r.normal(size=(4, 6))

    def kept(policy):
        res = saved_residuals(lambda w: _policy_loss(w, x, policy), ws)
        return sum(a.size for a, what in res if "argument" not in what)

    def dots(policy):
        prog = str(fg.make_jaxpr(fg.grad(lambda w: _policy_loss(w, x, policy)))(ws))
        return prog.count("dot_general")
    assert kept(None) < kept(fg.checkpoint_policies.dots_saveable)  # it keeps the 3 products
    assert kept(fg.checkpoint_policies.dots_saveable) - kept(None) == 3 * 4 * 6
    assert dots(fg.checkpoint_policies.dots_saveable) < dots(None)  # no forward matmul re-run
    with pytest.raises(TypeError, match="policy"):
        fg.checkpoint(lambda a: a, policy="dots")
