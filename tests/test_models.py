"""funcgrad.models: layers are `init(key, ...) -> params` + pure `apply(params, x, ...)`.

  values        every layer against a NumPy reference: conv2d (and conv_general_dilated) against
                a direct loop over stride / padding / dilation / groups / layouts, pooling,
                norms, attention with causal and padding masks, the transformer classifier and
                LM against a NumPy forward pass
  gradients     finite differences on tiny float64 sizes
  transforms    jit and vmap give the eager numbers
  params        dict pytrees with readable `/` paths (blocks/1/attn/wq), deterministic in the key
  initializers  variance and bounds of lecun / he / glorot, normal / uniform / truncated
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from numeric import numeric_grad

import funcgrad as fg
import funcgrad.numpy as fnp
from funcgrad import lax, masks, models, random
from funcgrad import tree_util as tu
from funcgrad.models import initializers as inits

rng = np.random.default_rng(0)
KEY = random.key(0)




def shapes(tree):
    return tu.tree_map(lambda a: tuple(a.shape), tree)


def to64(tree):
    return tu.tree_map(lambda a: np.asarray(a, np.float64), tree)


# ---------------------------------------------------------------------------------------------
# Initializers


@pytest.mark.parametrize("name,var,bound", [
    ("lecun_normal", 1 / 400, None), ("he_normal", 2 / 400, None),
    ("glorot_normal", 2 / 700, None), ("lecun_uniform", 1 / 400, math.sqrt(3 / 400)),
    ("he_uniform", 2 / 400, math.sqrt(6 / 400)), ("glorot_uniform", 2 / 700, math.sqrt(6 / 700)),
])
def test_variance_scaling_initializers(name, var, bound):
    w = getattr(inits, name)()(random.key(1), (400, 300))
    assert w.dtype == np.float32 and w.shape == (400, 300)
    assert abs(w.var() / var - 1) < 0.03 and abs(w.mean()) < 0.02 * math.sqrt(var) * 10
    limit = bound if bound is not None else 2 * math.sqrt(var) / 0.87962566103423978
    assert np.abs(w).max() <= limit * (1 + 1e-6)
    np.testing.assert_array_equal(w, getattr(inits, name)()(random.key(1), (400, 300)))
    assert getattr(inits, name)()(random.key(1), (3, 4), np.float64).dtype == np.float64


def test_conv_fans_and_simple_initializers():
    w = inits.he_normal()(random.key(2), (3, 3, 16, 64))  # fan_in = 3 * 3 * 16
    assert abs(w.var() * 144 / 2 - 1) < 0.05
    t = inits.truncated_normal(0.5)(random.key(3), (10000,))
    assert np.abs(t).max() < 1.0 and abs(t.std() - 0.5 * 0.8796) < 0.02
    assert abs(inits.normal(0.1)(random.key(4), (10000,)).std() - 0.1) < 0.005
    u = inits.uniform(0.2)(random.key(5), (1000,))
    assert 0 <= u.min() and u.max() < 0.2
    np.testing.assert_array_equal(inits.zeros(None, (2, 3)), np.zeros((2, 3), np.float32))
    np.testing.assert_array_equal(inits.ones(None, (2,)), np.ones(2, np.float32))
    np.testing.assert_array_equal(inits.constant(3.0)(None, (2,)), [3.0, 3.0])
    assert inits.glorot_uniform is not None and inits.xavier_uniform is inits.glorot_uniform


# ---------------------------------------------------------------------------------------------
# Dense, MLP, embedding


def test_dense_and_mlp():
    p = models.dense.init(KEY, 3, 4)
    assert shapes(p) == {"w": (3, 4), "b": (4,)} and p["w"].dtype == np.float32
    x = rng.normal(size=(5, 3)).astype(np.float32)
    w, b = np.asarray(p["w"]), np.asarray(p["b"])  # the reference on the host
    np.testing.assert_allclose(models.dense.apply(p, x), x @ w + b, rtol=1e-6)
    np.testing.assert_allclose(models.dense(p, x), models.dense.apply(p, x))
    assert "b" not in models.dense.init(KEY, 3, 4, use_bias=False)
    assert not np.array_equal(models.dense.init(random.key(1), 3, 4)["w"], p["w"])

    mp = models.mlp.init(KEY, [3, 8, 8, 2])
    assert masks.paths(mp) == ["layers/0/b", "layers/0/w", "layers/1/b", "layers/1/w",
                               "layers/2/b", "layers/2/w"]
    h = x
    for i, layer in enumerate(mp["layers"]):
        h = h @ np.asarray(layer["w"]) + np.asarray(layer["b"])
        h = np.tanh(h) if i < 2 else h
    np.testing.assert_allclose(models.mlp.apply(mp, x, activation=fnp.tanh), h, rtol=1e-5)
    np.testing.assert_allclose(fg.jit(models.mlp.apply)(mp, x), models.mlp.apply(mp, x),
                               rtol=1e-6)
    np.testing.assert_allclose(fg.vmap(models.mlp.apply, (None, 0))(mp, x),
                               models.mlp.apply(mp, x), rtol=1e-6)


def test_embedding():
    p = models.embedding.init(KEY, 10, 4)
    ids = np.array([[1, 9], [0, 1]])
    np.testing.assert_array_equal(models.embedding.apply(p, ids), p["table"][ids])
    g = fg.grad(lambda p: fnp.sum(models.embedding.apply(p, ids)))(p)["table"]
    np.testing.assert_array_equal(g[:, 0], [1, 2, 0, 0, 0, 0, 0, 0, 0, 1])


# ---------------------------------------------------------------------------------------------
# Convolution


def same_pads(size, k, s):
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def np_conv(x, w, strides, pads, rhs_dil=(1, 1), lhs_dil=(1, 1), groups=1):
    """Direct NHWC x HWIO convolution (cross-correlation) with a loop over output positions."""
    x, w = np.asarray(x), np.asarray(w)
    n, h, wd, c = x.shape
    kh, kw, cg, o = w.shape
    if lhs_dil != (1, 1):
        xd = np.zeros((n, (h - 1) * lhs_dil[0] + 1, (wd - 1) * lhs_dil[1] + 1, c), x.dtype)
        xd[:, ::lhs_dil[0], ::lhs_dil[1]] = x
        x = xd
    x = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    ekh, ekw = (kh - 1) * rhs_dil[0] + 1, (kw - 1) * rhs_dil[1] + 1
    oh, ow = (x.shape[1] - ekh) // strides[0] + 1, (x.shape[2] - ekw) // strides[1] + 1
    og = o // groups
    out = np.zeros((n, oh, ow, o))
    for i in range(oh):
        for j in range(ow):
            for a in range(kh):
                for b in range(kw):
                    pix = x[:, i * strides[0] + a * rhs_dil[0], j * strides[1] + b * rhs_dil[1]]
                    for g in range(groups):
                        out[:, i, j, g * og:(g + 1) * og] += (
                            pix[:, g * cg:(g + 1) * cg] @ w[a, b, :, g * og:(g + 1) * og])
    return out


CONV_CASES = [  # (input hw, kernel hw, stride, padding, dilation, groups)
    ((6, 7), (3, 3), (1, 1), "SAME", (1, 1), 1),
    ((6, 7), (3, 2), (2, 1), "VALID", (1, 1), 1),
    ((7, 7), (3, 3), (2, 2), "SAME", (1, 1), 2),
    ((8, 6), (2, 3), (1, 2), "SAME", (2, 1), 1),
    ((9, 9), (3, 3), (2, 3), "VALID", (2, 2), 4),
    ((5, 6), (1, 1), (1, 1), "VALID", (1, 1), 4),
    ((6, 5), (3, 3), (1, 1), ((2, 0), (1, 3)), (1, 1), 1),
]


@pytest.mark.parametrize("hw,k,stride,padding,dil,groups", CONV_CASES)
def test_conv2d_matches_direct_loop(hw, k, stride, padding, dil, groups):
    c_in, c_out = 4, 8
    x = rng.normal(size=(2, *hw, c_in))
    p = models.conv2d.init(KEY, c_in, c_out, k, groups=groups, dtype=np.float64)
    assert shapes(p) == {"w": (*k, c_in // groups, c_out), "b": (c_out,)}
    p["b"] = rng.normal(size=c_out)
    y = models.conv2d.apply(p, x, stride=stride, padding=padding, dilation=dil)
    if isinstance(padding, str):
        eff = [(kk - 1) * d + 1 for kk, d in zip(k, dil)]
        pads = [same_pads(s, e, st) if padding == "SAME" else (0, 0)
                for s, e, st in zip(hw, eff, stride)]
    else:
        pads = padding
    ref = np_conv(x, p["w"], stride, pads, dil, groups=groups) + p["b"]
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-12)
    if padding == "SAME":
        assert y.shape[1:3] == tuple(-(-s // st) for s, st in zip(hw, stride))


def test_conv_general_dilated_layouts_and_lhs_dilation():
    x = rng.normal(size=(2, 5, 4, 3))  # NHWC
    w = rng.normal(size=(2, 3, 3, 4))  # HWIO
    y = lax.conv_general_dilated(x, w, (1, 2), ((1, 1), (0, 2)), lhs_dilation=(2, 1),
                                 rhs_dilation=(1, 2), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    ref = np_conv(x, w, (1, 2), ((1, 1), (0, 2)), (1, 2), lhs_dil=(2, 1))
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-12)
    # JAX's default layout (None): NCHW / OIHW / NCHW
    y2 = lax.conv_general_dilated(x.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1), (1, 2),
                                  ((1, 1), (0, 2)), (2, 1), (1, 2), dimension_numbers=None)
    np.testing.assert_allclose(y2, ref.transpose(0, 3, 1, 2), rtol=1e-10, atol=1e-12)
    # 1-d
    y1 = lax.conv_general_dilated(x[:, :, 0], w[0], (2,), "SAME",
                                  dimension_numbers=("NWC", "WIO", "NWC"))
    ref1 = np_conv(x[:, :, :1], w[0][:, None], (2, 1), (same_pads(5, 3, 2), (0, 0)))[:, :, 0]
    np.testing.assert_allclose(y1, ref1, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="feature_group_count"):
        lax.conv_general_dilated(x, w, (1, 1), "SAME", feature_group_count=2,
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
    with pytest.raises(ValueError, match="padding"):
        lax.conv_general_dilated(x, w, (1, 1), "FULL", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def test_conv2d_grads_match_finite_differences():
    x = rng.normal(size=(1, 5, 4, 4))
    p = to64(models.conv2d.init(KEY, 4, 2, 3, groups=2))
    ct = rng.normal(size=(1, 3, 4, 2))

    def loss(p, x):
        return fnp.sum(models.conv2d.apply(p, x, stride=(2, 1), padding="SAME",
                                           dilation=(1, 2)) * ct)

    def np_loss(w, b, x):
        return np.sum((np_conv(x, w, (2, 1), [same_pads(5, 3, 2), same_pads(4, 5, 1)], (1, 2),
                               groups=2) + b) * ct)

    gp, gx = fg.grad(loss, argnums=(0, 1))(p, x)
    np.testing.assert_allclose(gp["w"], numeric_grad(lambda w: np_loss(w, p["b"], x), p["w"]),
                               rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gp["b"], ct.sum((0, 1, 2)), rtol=1e-10)
    np.testing.assert_allclose(gx, numeric_grad(lambda v: np_loss(p["w"], p["b"], v), x),
                               rtol=1e-6, atol=1e-8)
    # forward mode agrees with reverse mode
    t = rng.normal(size=x.shape)
    np.testing.assert_allclose(fg.jvp(lambda v: loss(p, v), (x,), (t,))[1],
                               np.sum(np.asarray(gx) * t),
                               rtol=1e-9)


def test_conv2d_under_jit_and_vmap():
    x = rng.normal(size=(3, 6, 6, 2)).astype(np.float32)
    p = models.conv2d.init(KEY, 2, 4, 3)
    f = lambda p, x: models.conv2d.apply(p, x, stride=2, padding="SAME")
    y = f(p, x)
    assert y.shape == (3, 3, 3, 4) and y.dtype == np.float32
    np.testing.assert_allclose(fg.jit(f)(p, x), y, rtol=1e-5, atol=1e-6)
    per_image = fg.vmap(lambda im: f(p, im[None])[0])(x)
    np.testing.assert_allclose(per_image, y, rtol=1e-5, atol=1e-6)
    # per-example gradients (vmap of grad) through the convolution
    g = fg.vmap(fg.grad(lambda p, im: fnp.sum(f(p, im[None]) ** 2)), (None, 0))(p, x)
    g0 = fg.grad(lambda p: fnp.sum(f(p, x[:1]) ** 2))(p)
    np.testing.assert_allclose(g["w"][0], g0["w"], rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Pooling


def np_pool(x, window, strides, pads, op, fill):
    x = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=fill)
    oh = (x.shape[1] - window[0]) // strides[0] + 1
    ow = (x.shape[2] - window[1]) // strides[1] + 1
    out = np.zeros((x.shape[0], oh, ow, x.shape[3]))
    for i in range(oh):
        for j in range(ow):
            patch = x[:, i * strides[0]:i * strides[0] + window[0],
                      j * strides[1]:j * strides[1] + window[1]]
            out[:, i, j] = op(patch, axis=(1, 2))
    return out


@pytest.mark.parametrize("window,strides,padding", [
    ((2, 2), None, "VALID"), ((3, 3), (2, 2), "SAME"), ((3, 2), (1, 2), "VALID"),
    ((2, 3), (2, 1), "SAME"),
])
def test_pools_match_numpy(window, strides, padding):
    x = rng.normal(size=(2, 7, 6, 3))
    s = window if strides is None else strides
    pads = ([same_pads(n, w, st) for n, w, st in zip((7, 6), window, s)] if padding == "SAME"
            else [(0, 0), (0, 0)])
    np.testing.assert_allclose(models.max_pool(x, window, strides, padding),
                               np_pool(x, window, s, pads, np.max, -np.inf), rtol=1e-12)
    np.testing.assert_allclose(models.avg_pool(x, window, strides, padding),
                               np_pool(x, window, s, pads, np.mean, 0.0), rtol=1e-12)
    counts = np_pool(np.ones((1, 7, 6, 1)), window, s, pads, np.sum, 0.0)
    np.testing.assert_allclose(
        models.avg_pool(x, window, strides, padding, count_include_pad=False),
        np_pool(x, window, s, pads, np.sum, 0.0) / counts, rtol=1e-12)


def test_pool_grads_and_transforms():
    x = rng.normal(size=(1, 4, 4, 2))
    g = fg.grad(lambda v: fnp.sum(models.max_pool(v, 2)))(x)
    ref = np.zeros_like(x)  # 1 at each window's maximum
    for i in range(2):
        for j in range(2):
            for c in range(2):
                win = x[0, 2 * i:2 * i + 2, 2 * j:2 * j + 2, c]
                a, b = np.unravel_index(np.argmax(win), (2, 2))
                ref[0, 2 * i + a, 2 * j + b, c] = 1
    np.testing.assert_array_equal(g, ref)
    ga = fg.grad(lambda v: fnp.sum(models.avg_pool(v, 2)))(x)
    np.testing.assert_allclose(ga, np.full_like(x, 0.25))
    x32 = x.astype(np.float32)
    np.testing.assert_allclose(fg.jit(lambda v: models.max_pool(v, 2))(x32),
                               models.max_pool(x32, 2))


# ---------------------------------------------------------------------------------------------
# Normalization


def test_layer_norm_and_rms_norm():
    x = rng.normal(size=(3, 5, 8)) * 2 + 1
    p = {"scale": rng.normal(size=8), "bias": rng.normal(size=8)}
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    ref = (x - mu) / np.sqrt(var + 1e-5) * p["scale"] + p["bias"]
    np.testing.assert_allclose(models.layer_norm.apply(p, x), ref, rtol=1e-10)
    r = {"scale": rng.normal(size=8)}
    np.testing.assert_allclose(models.rms_norm.apply(r, x),
                               x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-6) * r["scale"],
                               rtol=1e-10)
    ct = rng.normal(size=x.shape)
    g = fg.grad(lambda p: fnp.sum(models.layer_norm.apply(p, x) * ct))(p)
    np.testing.assert_allclose(g["scale"], np.sum((x - mu) / np.sqrt(var + 1e-5) * ct, (0, 1)),
                               rtol=1e-9)
    xs = x[0, :2, :4]
    p4 = {"scale": p["scale"][:4], "bias": p["bias"][:4]}
    gx = fg.grad(lambda v: fnp.sum(models.layer_norm.apply(p4, v) * ct[0, :2, :4]))(xs)

    def np_ln(v):
        m, s = v.mean(-1, keepdims=True), v.var(-1, keepdims=True)
        return np.sum(((v - m) / np.sqrt(s + 1e-5) * p4["scale"] + p4["bias"]) * ct[0, :2, :4])

    np.testing.assert_allclose(gx, numeric_grad(np_ln, xs), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(fg.vmap(lambda v: models.layer_norm.apply(p, v))(x), ref,
                               rtol=1e-10)
    assert shapes(models.layer_norm.init(KEY, 8)) == {"scale": (8,), "bias": (8,)}


def test_batch_norm_train_eval_and_state():
    params, state = models.batch_norm.init(KEY, 3)
    assert shapes(state) == {"mean": (3,), "var": (3,)}
    x = rng.normal(size=(16, 4, 3)) * 3 + 2
    y, new = models.batch_norm.apply(params, state, x, training=True)
    m, v = x.mean((0, 1)), x.var((0, 1))
    np.testing.assert_allclose(y, (x - m) / np.sqrt(v + 1e-5), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(new["mean"], 0.1 * m, rtol=1e-6)
    np.testing.assert_allclose(new["var"], 0.9 + 0.1 * v, rtol=1e-6)
    ye, same = models.batch_norm.apply(params, new, x, training=False)
    np.testing.assert_allclose(ye, (x - np.asarray(new["mean"])) / np.sqrt(new["var"] + 1e-5),
                               rtol=1e-6)
    assert same is new
    # gradients flow to the params only through y (the running statistics are stopped)
    g = fg.grad(lambda p: fnp.sum(models.batch_norm.apply(p, state, x, True)[1]["mean"]))(params)
    np.testing.assert_array_equal(g["scale"], 0)
    # jit, and vmap over examples with the statistics averaged across the named axis
    jy, jstate = fg.jit(models.batch_norm.apply, static_argnums=3)(params, state, x, True)
    np.testing.assert_allclose(jy, y, rtol=1e-5, atol=1e-6)
    vy, vstate = fg.vmap(lambda xi: models.batch_norm.apply(params, state, xi, True,
                                                            axis_name="b"),
                         axis_name="b")(x)
    np.testing.assert_allclose(vy, y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(vstate["mean"][0], new["mean"], rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Dropout


def test_dropout():
    x = np.ones((200, 100), np.float32)
    assert models.dropout(None, x, 0.5, training=False) is x
    y = models.dropout(random.key(0), x, 0.3)
    assert y.dtype == np.float32
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.01
    np.testing.assert_allclose(y[kept], 1 / 0.7, rtol=1e-6)
    np.testing.assert_array_equal(y, models.dropout(random.key(0), x, 0.3))
    assert not np.array_equal(y, models.dropout(random.key(1), x, 0.3))
    np.testing.assert_array_equal(fg.jit(lambda k, v: models.dropout(k, v, 0.3))(KEY, x),
                                  models.dropout(KEY, x, 0.3))
    g = fg.grad(lambda v: fnp.sum(models.dropout(random.key(0), v, 0.3)))(x)
    np.testing.assert_allclose(g, np.where(kept, 1 / 0.7, 0), rtol=1e-6)
    np.testing.assert_array_equal(models.dropout(KEY, x, 1.0), 0)
    with pytest.raises(ValueError, match="key"):
        models.dropout(None, x, 0.5)
    with pytest.raises(ValueError, match="rate"):
        models.dropout(KEY, x, 1.5)


# ---------------------------------------------------------------------------------------------
# Attention


def np_attention(p, x, heads, allowed):
    """Reference multi-head attention; `allowed` (B, Tq, Tk) boolean, masked logits -inf."""
    b, t, d = x.shape
    dh = d // heads

    def split(m):
        return m.reshape(b, t, heads, dh).transpose(0, 2, 1, 3)

    q, k, v = split(x @ p["wq"]), split(x @ p["wk"]), split(x @ p["wv"])
    logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(dh)
    logits = np.where(allowed[:, None], logits, -np.inf)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    o = (w @ v).transpose(0, 2, 1, 3).reshape(b, t, d)
    return o @ p["wo"]


@pytest.mark.parametrize("causal,padded", [(False, False), (True, False), (False, True),
                                           (True, True)])
def test_attention_matches_numpy(causal, padded):
    b, t, d, h = 2, 5, 8, 2
    p = to64(models.multi_head_attention.init(KEY, d))
    assert shapes(p) == {k: (d, d) for k in ("wq", "wk", "wv", "wo")}
    x = rng.normal(size=(b, t, d))
    valid = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool) if padded else np.ones((b, t), bool)
    allowed = np.broadcast_to(valid[:, None, :], (b, t, t)).copy()
    if causal:
        allowed &= np.tril(np.ones((t, t), bool))
    y = models.multi_head_attention.apply(p, x, h, causal=causal,
                                          padding_mask=valid if padded else None)
    np.testing.assert_allclose(y, np_attention(p, x, h, allowed), rtol=1e-10, atol=1e-12)
    # an explicit mask is the same as the flags
    y2 = models.multi_head_attention.apply(p, x, h, mask=allowed[:, None])
    np.testing.assert_allclose(y2, y, rtol=1e-12)
    np.testing.assert_allclose(
        fg.jit(lambda p, x, m: models.multi_head_attention.apply(p, x, h, mask=m))(
            p, x, allowed[:, None]), y, rtol=1e-10)
    np.testing.assert_allclose(
        fg.vmap(lambda xi, m: models.multi_head_attention.apply(p, xi, h, mask=m))(
            x, allowed[:, None]), y, rtol=1e-10)


def test_attention_grads_and_fully_masked_rows():
    t, d, h = 3, 4, 2
    p = to64(models.multi_head_attention.init(KEY, d, use_bias=True))
    p["bq"] = rng.normal(size=d)
    x = rng.normal(size=(t, d))
    ct = rng.normal(size=(t, d))
    attend = lambda p, x: models.multi_head_attention.apply(p, x, h, causal=True)
    # fnp.multiply, not *: numeric_grad calls loss eagerly, next to the host array ct
    loss = lambda p, x: fnp.sum(fnp.multiply(attend(p, x), ct))
    gp, gx = fg.grad(loss, argnums=(0, 1))(p, x)
    for name in ("wq", "wv", "bq"):
        def f(w, name=name):
            return float(loss({**p, name: w}, x))
        np.testing.assert_allclose(gp[name], numeric_grad(f, p[name]), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gx, numeric_grad(lambda v: float(loss(p, v)), x), rtol=1e-6,
                               atol=1e-8)
    # a query that may attend to nothing gives a finite output and finite gradients
    nothing = np.array([[False, False, False], [True, True, False], [True, True, True]])
    f = lambda x: fnp.sum(models.multi_head_attention.apply(p, x, h, mask=nothing))
    assert np.isfinite(f(x)) and np.all(np.isfinite(fg.grad(f)(x)))


def test_attention_dropout_and_bad_heads():
    p = models.multi_head_attention.init(KEY, 8)
    x = rng.normal(size=(4, 8)).astype(np.float32)
    a = models.multi_head_attention.apply(p, x, 2, dropout_rate=0.5, key=KEY, training=True)
    b = models.multi_head_attention.apply(p, x, 2, dropout_rate=0.5, key=KEY, training=False)
    assert not np.allclose(a, b)
    with pytest.raises(ValueError, match="num_heads"):
        models.multi_head_attention.apply(p, x, 3)


# ---------------------------------------------------------------------------------------------
# Transformers


def np_gelu(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def np_layer_norm(p, x):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-5) * p["scale"] + p["bias"]


def np_encoder(p, tokens, heads, causal=False, valid=None):
    b, t = tokens.shape
    x = p["embed"][tokens] + p["pos"][:t]
    allowed = np.ones((b, t, t), bool)
    if causal:
        allowed &= np.tril(np.ones((t, t), bool))
    if valid is not None:
        allowed &= valid[:, None, :]
    for blk in p["blocks"]:
        x = x + np_attention(blk["attn"], np_layer_norm(blk["ln1"], x), heads, allowed)
        m = blk["mlp"]
        h = np_layer_norm(blk["ln2"], x)
        x = x + np_gelu(h @ m["w1"] + m["b1"]) @ m["w2"] + m["b2"]
    return np_layer_norm(p["ln_f"], x)


def test_transformer_classifier_params_and_numpy_reference():
    p = models.transformer_classifier.init(KEY)  # the finetune-head benchmark's model
    assert shapes(p["blocks"][1]) == {
        "ln1": {"scale": (128,), "bias": (128,)}, "ln2": {"scale": (128,), "bias": (128,)},
        "attn": {"wq": (128, 128), "wk": (128, 128), "wv": (128, 128), "wo": (128, 128)},
        "mlp": {"w1": (128, 512), "b1": (512,), "w2": (512, 128), "b2": (128,)}}
    assert shapes(p["head"]) == {"w": (128, 10), "b": (10,)}
    assert shapes(p)["embed"] == (256, 128) and shapes(p)["pos"] == (64, 128)
    assert "blocks/1/attn/wq" in masks.paths(p)
    trainable = masks.mask_from_paths(p, include=["blocks/1", "ln_f", "head"])
    block = 4 * 128 * 128 + 2 * 128 * 512 + 512 + 128 + 2 * 2 * 128
    assert masks.count(p, trainable) == block + 2 * 128 + 128 * 10 + 10
    assert all(x.dtype == np.float32 for x in tu.tree_leaves(p))

    # a small one in float64 against NumPy, with and without padding
    q = to64(models.transformer_classifier.init(random.key(1), 11, 6, 8, 16, 2, 3, num_heads=2))
    tokens = rng.integers(0, 11, (2, 6))
    ref = np_encoder(q, tokens, 2)
    logits = models.transformer_classifier.apply(q, tokens, 2)
    np.testing.assert_allclose(logits, ref.mean(1) @ q["head"]["w"] + q["head"]["b"], rtol=1e-9)
    valid = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], bool)
    ref = np_encoder(q, tokens, 2, valid=valid)
    pooled = (ref * valid[..., None]).sum(1) / valid.sum(1, keepdims=True)
    np.testing.assert_allclose(models.transformer_classifier.apply(q, tokens, 2,
                                                                   padding_mask=valid),
                               pooled @ q["head"]["w"] + q["head"]["b"], rtol=1e-9)


def test_transformer_classifier_grad_jit_vmap():
    q = to64(models.transformer_classifier.init(random.key(2), 7, 4, 4, 8, 1, 3, num_heads=2))
    tokens = rng.integers(0, 7, (3, 4))
    labels = np.array([0, 2, 1])

    def loss(p):
        return fnp.mean(models.losses.softmax_cross_entropy_with_integer_labels(
            models.transformer_classifier.apply(p, tokens, 2), labels))

    g = fg.grad(loss)(q)
    for path in (("blocks", 0, "attn", "wk"), ("blocks", 0, "mlp", "w1"), ("head", "w")):
        w = q
        for k in path:
            w = w[k]

        def f(v, path=path):
            p2 = tu.tree_map(lambda a: a, q)
            node = p2
            for k in path[:-1]:
                node = node[k]
            node[path[-1]] = v
            return float(loss(p2))

        gw = g
        for k in path:
            gw = gw[k]
        np.testing.assert_allclose(gw, numeric_grad(f, w), rtol=1e-5, atol=1e-8)
    p32 = models.transformer_classifier.init(random.key(2), 7, 4, 4, 8, 1, 3, num_heads=2)
    eager = models.transformer_classifier.apply(p32, tokens, 2)
    np.testing.assert_allclose(fg.jit(models.transformer_classifier.apply,
                                      static_argnums=2)(p32, tokens, 2), eager, rtol=1e-5)
    np.testing.assert_allclose(
        fg.vmap(lambda t: models.transformer_classifier.apply(p32, t, 2))(tokens), eager,
        rtol=1e-5, atol=1e-6)


def test_transformer_lm_is_causal_and_trains():
    p = models.transformer_lm.init(random.key(3), 13, 8, 16, 32, 2)
    assert shapes(p["head"]) == {"w": (16, 13)}
    tokens = rng.integers(0, 13, (2, 8))
    logits = models.transformer_lm.apply(p, tokens, 4)
    assert logits.shape == (2, 8, 13) and logits.dtype == np.float32
    changed = tokens.copy()
    changed[:, 5:] = (changed[:, 5:] + 1) % 13
    other = models.transformer_lm.apply(p, changed, 4)
    np.testing.assert_allclose(other[:, :5], logits[:, :5], rtol=1e-5, atol=1e-6)
    assert not np.allclose(other[:, 5:], logits[:, 5:])
    ref = np_encoder(to64(p), tokens, 4, causal=True) @ np.asarray(p["head"]["w"])
    np.testing.assert_allclose(logits, ref, rtol=1e-4, atol=1e-5)
    tied = models.transformer_lm.init(random.key(3), 13, 8, 16, 32, 1, tie_embeddings=True)
    assert "head" not in tied
    assert models.transformer_lm.apply(tied, tokens, 4).shape == (2, 8, 13)

    # next-token prediction of a fixed sequence: a few jitted SGD steps reduce the loss
    seq = np.tile(np.arange(8) % 13, (4, 1))

    def loss(p, key):
        out = models.transformer_lm.apply(p, seq[:, :-1], 4, dropout_rate=0.1, key=key,
                                          training=True)
        xent = models.losses.softmax_cross_entropy_with_integer_labels
        return fnp.mean(xent(out, seq[:, 1:]))

    @fg.jit
    def step(p, key):
        value, g = fg.value_and_grad(loss)(p, key)
        return tu.tree_map(lambda w, d: w - 0.1 * d, p, g), value

    values = []
    for i in range(15):
        p, v = step(p, random.fold_in(KEY, i))
        values.append(float(v))
    assert values[-1] < 0.7 * values[0], values


def test_transformer_block_dropout_uses_key():
    p = models.transformer_block.init(KEY, 8, 16)
    x = rng.normal(size=(2, 3, 8)).astype(np.float32)
    ev = models.transformer_block.apply(p, x, 2)
    np.testing.assert_array_equal(models.transformer_block.apply(p, x, 2, dropout_rate=0.5), ev)
    tr = lambda k: models.transformer_block.apply(p, x, 2, dropout_rate=0.5, key=k,
                                                  training=True)
    np.testing.assert_array_equal(tr(KEY), tr(KEY))
    assert not np.allclose(tr(KEY), tr(random.key(1)))
    assert not np.allclose(tr(KEY), ev)


def test_models_use_only_the_public_api():
    # tests/test_layering.py checks every import against docs/architecture.md's public modules;
    # this is the quick spot check of the internals model code must never reach into.
    import pathlib
    root = pathlib.Path(models.__file__).parent
    for f in root.glob("*.py"):
        text = f.read_text()
        for internal in ("core", "interpreters", "backends", "lax.", "numpy._",
                         "transforms.passes"):
            assert f"from ..{internal}" not in text and f"funcgrad.{internal}" not in text, f


# ---------------------------------------------------------------------------------------------
# One rule for keys: every init takes a key or an int seed (= fg.random.key(seed))

_INITS = [
    ("models.dense.init", lambda k: models.dense.init(k, 3, 4)),
    ("models.mlp.init", lambda k: models.mlp.init(k, [3, 5, 2])),
    ("models.conv2d.init", lambda k: models.conv2d.init(k, 2, 3, 3)),
    ("models.embedding.init", lambda k: models.embedding.init(k, 7, 4)),
    ("models.multi_head_attention.init", lambda k: models.multi_head_attention.init(k, 8)),
    ("models.transformer_lm.init", lambda k: models.transformer_lm.init(k, 11, 4, 8, 16, 1)),
    ("models.transformer_classifier.init",
     lambda k: models.transformer_classifier.init(k, 11, 4, 8, 16, 1, 3)),
    ("nn.lstm_init", lambda k: fg.nn.lstm_init(k, 3, 4)),
    ("nn.rnn_init", lambda k: fg.nn.rnn_init(k, 3, 4)),
    ("lora.init", lambda k: fg.lora.init(k, {"w": np.zeros((4, 3), np.float32)},
                                         {"w": True}, rank=2)),
]


@pytest.mark.parametrize("name,init", _INITS, ids=[n for n, _ in _INITS])
def test_every_init_takes_a_key_or_an_int_seed(name, init):
    from funcgrad import tree_util as tu
    by_seed, by_key = init(5), init(random.key(5))
    for a, b in zip(tu.tree_leaves(by_seed), tu.tree_leaves(by_key)):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(tu.tree_leaves(by_seed),
                                                         tu.tree_leaves(init(6))) if a.size)
    with pytest.raises(TypeError, match=rf"{name}: key must be a key .* or an int seed, got "
                                        r"float .*test_models\.py:\d+"):
        init(1.5)
    with pytest.raises(TypeError, match=r"a batch of keys"):
        init(random.split(random.key(0), 2))


def test_norm_inits_draw_nothing_and_accept_none():
    assert models.layer_norm.init(None, 3)["scale"].tolist() == [1, 1, 1]
    assert models.rms_norm.init(0, 3)["scale"].tolist() == [1, 1, 1]


def test_samplers_take_keys_only_and_say_so():
    with pytest.raises(TypeError, match=r"an int seed: fg\.random\.key\(seed\) makes its key.*"
                                        r"test_models\.py"):
        random.normal(0, (2,))


# ---------------------------------------------------------------------------------------------
# The config travels with the params


def test_transformer_config_travels_with_the_params():
    cfg = models.TransformerConfig(vocab_size=11, max_len=6, d_model=8, d_mlp=16, num_layers=1,
                                   num_heads=2, num_classes=3)
    p = models.transformer_classifier.init(random.key(4), cfg)
    assert p["config"] is cfg and models.config_of(p) == cfg
    same = models.transformer_classifier.init(random.key(4), 11, 6, 8, 16, 1, 3, num_heads=2)
    assert same["config"] == cfg
    for a, b in zip(tu.tree_leaves(p), tu.tree_leaves(same)):
        np.testing.assert_array_equal(a, b)
    # the config is static: no leaf, part of the tree structure
    assert len(tu.tree_leaves(p)) == len(tu.tree_leaves({k: v for k, v in p.items()
                                                         if k != "config"}))
    assert tu.tree_structure(p) != tu.tree_structure(
        models.transformer_classifier.init(random.key(4), cfg.replace(num_heads=4)))
    tokens = rng.integers(0, 11, (2, 6))
    logits = models.transformer_classifier.apply(p, tokens)  # no head count needed
    np.testing.assert_allclose(models.transformer_classifier.apply(p, tokens, 2), logits)
    with pytest.raises(ValueError, match=r"num_heads=4, but these params were made for "
                                         r"num_heads=2"):
        models.transformer_classifier.apply(p, tokens, 4)  # 4 divides 8: it would run
    # grad, an optimizer, masks, LoRA and jit carry it along untouched
    labels = np.array([0, 2])

    def loss(p):
        return fnp.mean(models.losses.softmax_cross_entropy_with_integer_labels(
            models.transformer_classifier.apply(p, tokens), labels))

    head = masks.mask_from_paths(p, include=["head/*"])
    g = fg.grad(loss, wrt=head)(p)
    assert g["config"] is cfg
    tx = fg.optim.masked(fg.optim.adam(1e-2), head)
    u, _ = tx.update(g, tx.init(p), p)
    p2 = fg.optim.apply_updates(p, u)
    assert p2["config"] is cfg and float(loss(p2)) < float(loss(p))
    np.testing.assert_allclose(fg.jit(loss)(p2), loss(p2), rtol=1e-5)
    ad = fg.lora.init(0, p, masks.mask_from_paths(p, include=["blocks/*/attn/wq"]), rank=2)
    assert fg.lora.apply(models.transformer_classifier.apply)(p, ad, tokens).shape == (2, 3)


def test_transformer_config_validation_and_round_trip():
    with pytest.raises(ValueError, match="d_model=10 is not divisible by num_heads=4"):
        models.TransformerConfig(d_model=10)
    with pytest.raises(ValueError, match="num_layers must be a positive int"):
        models.TransformerConfig(num_layers=0)
    with pytest.raises(TypeError, match="transformer_lm.init: .*unexpected keyword"):
        models.transformer_lm.init(0, heads=2)
    cfg = models.TransformerConfig(num_heads=8, tie_embeddings=True)
    assert models.TransformerConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown fields"):
        models.TransformerConfig.from_dict({"n_head": 2})
    # registered with io: a checkpoint stores it by name and fields and rebuilds it alone
    assert tu.tree_structure(cfg).node_data()[0] is models.TransformerConfig
    assert not tu.tree_leaves(cfg)


def test_transformer_params_save_and_load_without_a_template(tmp_path):
    p = models.transformer_lm.init(random.key(2), models.TransformerConfig(
        vocab_size=7, max_len=4, d_model=8, d_mlp=8, num_layers=1, num_heads=2))
    fg.io.save(tmp_path / "lm.safetensors", p)
    q = fg.io.load(tmp_path / "lm.safetensors")  # no like=: the config comes back by name
    assert q["config"] == p["config"]
    tokens = np.array([[1, 2, 3, 4]])
    np.testing.assert_array_equal(models.transformer_lm.apply(q, tokens),
                                  models.transformer_lm.apply(p, tokens))
