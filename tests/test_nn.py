"""fg.nn activations and normalizers: values against NumPy references, gradients against finite
differences, stability at extreme inputs (finite values and gradients), dtypes, jit and vmap."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numeric import numeric_grad

import funcgrad as fg
import funcgrad.numpy as fnp
from funcgrad import nn

rng = np.random.default_rng(0)
erf = np.vectorize(math.erf)




def np_softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def np_logsumexp(x, axis=None, keepdims=False):
    m = np.max(x, axis=axis, keepdims=True)
    out = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)


SQRT2PI = math.sqrt(2 / math.pi)
ELEMENTWISE = {
    "relu": (nn.relu, lambda x: np.maximum(x, 0)),
    "gelu_tanh": (nn.gelu, lambda x: 0.5 * x * (1 + np.tanh(SQRT2PI * (x + 0.044715 * x ** 3)))),
    "gelu_exact": (lambda x: nn.gelu(x, approximate=False),
                   lambda x: 0.5 * x * (1 + erf(x / math.sqrt(2)))),
    "silu": (nn.silu, lambda x: x / (1 + np.exp(-x))),
    "sigmoid": (nn.sigmoid, lambda x: 1 / (1 + np.exp(-x))),
    "softplus": (nn.softplus, lambda x: np.log1p(np.exp(x))),
}


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_elementwise_values_and_grads(name):
    f, ref = ELEMENTWISE[name]
    x = rng.normal(size=(3, 4)) * 2
    x[np.abs(x) < 1e-3] = 0.5  # keep away from relu's kink for the finite differences
    np.testing.assert_allclose(f(x), ref(x), rtol=1e-12, atol=1e-12)
    g = fg.grad(lambda x: fnp.sum(f(x)))(x)
    np.testing.assert_allclose(g, numeric_grad(lambda v: np.sum(ref(v)), x), rtol=1e-6, atol=1e-8)
    x32 = x.astype(np.float32)
    assert f(x32).dtype == np.float32
    # (jit's compiled exp/log/tanh may differ from NumPy's by an ulp: absolute tolerance where
    # 1 + tanh cancels to ~1e-6)
    np.testing.assert_allclose(fg.jit(f)(x32), f(x32), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(fg.vmap(f)(x32), f(x32), rtol=1e-6)


def test_gelu_tanh_rule_agrees_with_the_composed_formula():
    """gelu's own derivative rule gives what differentiating its formula gives, however it is
    staged (grad, jit, vmap, jvp, second order)."""
    x = rng.normal(size=(3, 5)) * 3

    def composed(v):
        return 0.5 * v * (1 + fnp.tanh(SQRT2PI * (v + 0.044715 * v ** 3)))

    w = rng.normal(size=x.shape)
    new, ref = (lambda v: fnp.sum(nn.gelu(v) * w)), (lambda v: fnp.sum(composed(v) * w))
    for g in (fg.grad(new), fg.jit(fg.grad(new)), fg.grad(fg.jit(new))):
        np.testing.assert_allclose(g(x), fg.grad(ref)(x), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(fg.vmap(fg.grad(lambda v: fnp.sum(nn.gelu(v) * w[0])))(x),
                               fg.vmap(fg.grad(lambda v: fnp.sum(composed(v) * w[0])))(x),
                               rtol=1e-12, atol=1e-14)
    t = rng.normal(size=x.shape)
    np.testing.assert_allclose(fg.jvp(new, (x,), (t,))[1], fg.jvp(ref, (x,), (t,))[1],
                               rtol=1e-12)
    flat = lambda f: (lambda v: f(fnp.reshape(v, x.shape)))
    np.testing.assert_allclose(fg.hessian(flat(new))(x.ravel()), fg.hessian(flat(ref))(x.ravel()),
                               rtol=1e-10, atol=1e-12)


def test_relu_derivative_at_zero_is_zero():
    assert fg.grad(lambda x: nn.relu(x))(0.0) == 0.0


@pytest.mark.parametrize("name", ["sigmoid", "softplus", "silu", "gelu_tanh", "gelu_exact"])
def test_elementwise_extreme_inputs_stay_finite(name):
    f, _ = ELEMENTWISE[name]
    x = np.array([-1e4, -100.0, 100.0, 1e4], np.float32)
    y = f(x)
    g = fg.grad(lambda v: fnp.sum(f(v)))(x)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(g)), (y, g)
    np.testing.assert_allclose(g[-1], 1.0 if name != "sigmoid" else 0.0, atol=1e-6)


def test_softplus_sigmoid_limits():
    x = np.array([-1000.0, 0.0, 1000.0])
    np.testing.assert_allclose(nn.softplus(x), [0.0, math.log(2), 1000.0])
    np.testing.assert_allclose(nn.sigmoid(x), [0.0, 0.5, 1.0])


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax_log_softmax_logsumexp(axis):
    x = rng.normal(size=(3, 4, 5))
    np.testing.assert_allclose(nn.softmax(x, axis=axis), np_softmax(x, axis), rtol=1e-12)
    np.testing.assert_allclose(nn.log_softmax(x, axis=axis), np.log(np_softmax(x, axis)),
                               rtol=1e-12)
    np.testing.assert_allclose(nn.logsumexp(x, axis=axis), np_logsumexp(x, axis), rtol=1e-12)
    np.testing.assert_allclose(nn.logsumexp(x, axis=axis, keepdims=True),
                               np_logsumexp(x, axis, True), rtol=1e-12)
    np.testing.assert_allclose(nn.logsumexp(x), np_logsumexp(x), rtol=1e-12)
    np.testing.assert_allclose(np.sum(nn.softmax(x, axis=axis), axis=axis), 1.0)


def test_softmax_family_grads_match_finite_differences():
    x = rng.normal(size=(2, 4))
    w = rng.normal(size=(2, 4))
    cases = [
        (lambda v: fnp.sum(nn.softmax(v) * w), lambda v: np.sum(np_softmax(v) * w)),
        (lambda v: fnp.sum(nn.log_softmax(v, axis=0) * w),
         lambda v: np.sum(np.log(np_softmax(v, 0)) * w)),
        (lambda v: fnp.sum(nn.logsumexp(v, axis=1) * w[:, 0]),
         lambda v: np.sum(np_logsumexp(v, 1) * w[:, 0])),
    ]
    for f, ref in cases:
        np.testing.assert_allclose(fg.grad(f)(x), numeric_grad(ref, x), rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(fg.jvp(f, (x,), (w,))[1],
                                   np.sum(numeric_grad(ref, x) * w), rtol=1e-6)


def test_softmax_family_stable_for_huge_and_infinite_logits():
    x = np.array([[1e30, 0.0, -1e30], [1000.0, 1000.0, -np.inf]])
    s = nn.softmax(x)
    np.testing.assert_allclose(s, [[1, 0, 0], [0.5, 0.5, 0]])
    np.testing.assert_allclose(nn.logsumexp(x, axis=-1), [1e30, 1000 + math.log(2)])
    ls = nn.log_softmax(x)
    np.testing.assert_allclose(ls[1, :2], [-math.log(2)] * 2)
    w = np.array([[1.0, 2.0, 3.0], [1.0, -1.0, 4.0]])
    for f in (lambda v: fnp.sum(nn.softmax(v) * w), lambda v: fnp.sum(nn.logsumexp(v, axis=-1))):
        g = fg.grad(f)(x)
        assert np.all(np.isfinite(g)), g
    g = fg.grad(lambda v: fnp.sum(nn.logsumexp(v, axis=-1)))(x)
    np.testing.assert_allclose(g, s)


def test_softmax_under_jit_and_vmap():
    x = rng.normal(size=(4, 6)).astype(np.float32)
    np.testing.assert_allclose(fg.jit(nn.softmax)(x), nn.softmax(x), rtol=1e-6)
    np.testing.assert_allclose(fg.vmap(nn.log_softmax)(x), nn.log_softmax(x), rtol=1e-6)
    np.testing.assert_allclose(fg.vmap(lambda r: nn.logsumexp(r))(x), nn.logsumexp(x, axis=1),
                               rtol=1e-6)
    assert nn.softmax(x).dtype == np.float32


def test_one_hot():
    y = np.array([[0, 2], [1, 3]])
    oh = nn.one_hot(y, 4)
    assert oh.shape == (2, 2, 4) and oh.dtype == np.float32
    np.testing.assert_array_equal(oh, np.eye(4, dtype=np.float32)[y])
    np.testing.assert_array_equal(nn.one_hot(np.array([1, 5, -1]), 3),
                                  [[0, 1, 0], [0, 0, 0], [0, 0, 0]])  # out of range: all zeros
    np.testing.assert_array_equal(nn.one_hot(y, 4, axis=0), np.moveaxis(np.eye(4)[y], -1, 0))
    np.testing.assert_array_equal(fg.jit(lambda v: nn.one_hot(v, 4))(y), oh)
    assert nn.one_hot(y, 4, dtype=np.int32).dtype == np.int32


def test_normalize():
    x = rng.normal(size=(3, 7)) * 3 + 2
    ref = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(nn.standardize(x), ref, rtol=1e-10)
    np.testing.assert_allclose(nn.normalize(x, axis=0),
                               (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5), rtol=1e-10)
    f = lambda v: fnp.sum(nn.standardize(v) * x)
    np.testing.assert_allclose(
        fg.grad(f)(x),
        numeric_grad(lambda v: np.sum((v - v.mean(-1, keepdims=True))
                                      / np.sqrt(v.var(-1, keepdims=True) + 1e-5) * x), x),
        rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(fg.vmap(nn.standardize)(x), ref, rtol=1e-10)


def test_softplus_and_logaddexp_higher_derivatives_at_ties():
    # softplus'' (0) = sigmoid'(0) = 1/4; a max/abs formulation would give 0 at x == y.
    d2 = fg.grad(fg.grad(fg.nn.softplus))(0.0)
    np.testing.assert_allclose(d2, 0.25, rtol=1e-12)
    d3 = fg.grad(fg.grad(fg.grad(fg.nn.softplus)))(0.0)
    np.testing.assert_allclose(d3, 0.0, atol=1e-12)
    h = fg.hessian(lambda v: fnp.logaddexp(v[0], v[1]))(np.array([0.3, 0.3]))
    np.testing.assert_allclose(h, [[0.25, -0.25], [-0.25, 0.25]], rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# The rest of jax.nn's activations, masks and attention

def _np_sigmoid(v):
    return 1 / (1 + np.exp(-v))


ACTIVATIONS = {
    "celu": lambda v: np.where(v > 0, v, np.expm1(np.minimum(v, 0))),
    "selu": lambda v: 1.0507009873554805 * np.where(v > 0, v, 1.6732632423543772 * np.expm1(
        np.minimum(v, 0))),
    "hard_sigmoid": lambda v: np.clip(v + 3, 0, 6) / 6,
    "hard_silu": lambda v: v * np.clip(v + 3, 0, 6) / 6,
    "hard_tanh": lambda v: np.clip(v, -1, 1),
    "mish": lambda v: v * np.tanh(np.log1p(np.exp(v))),
    "soft_sign": lambda v: v / (1 + np.abs(v)),
    "sparse_plus": lambda v: np.where(v <= -1, 0, np.where(v >= 1, v, (v + 1) ** 2 / 4)),
    "sparse_sigmoid": lambda v: np.clip((v + 1) / 2, 0, 1),
    "squareplus": lambda v: (v + np.sqrt(v * v + 4)) / 2,
    "identity": lambda v: v,
    "tanh": np.tanh,
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_more_activations_match_formulas_and_differentiate(name):
    x = rng.normal(size=(3, 5)) * 2
    fn = getattr(nn, name)
    np.testing.assert_allclose(fn(x), ACTIVATIONS[name](x), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fg.grad(lambda v: fnp.sum(fn(v)))(x),
                               numeric_grad(lambda v: np.sum(ACTIVATIONS[name](v)), x),
                               rtol=1e-5, atol=1e-7)


def test_glu_log1mexp_and_logmeanexp():
    x = rng.normal(size=(4, 6))
    a, g = x[:, :3], x[:, 3:]
    np.testing.assert_allclose(nn.glu(x), a * _np_sigmoid(g), rtol=1e-12)
    np.testing.assert_allclose(nn.glu(x, axis=0), x[:2] * _np_sigmoid(x[2:]), rtol=1e-12)
    p = np.array([1e-8, 0.1, 0.69, 0.7, 5.0, 40.0])
    np.testing.assert_allclose(nn.log1mexp(p), np.log(-np.expm1(-p)), rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(nn.logmeanexp(x, axis=1), np.log(np.mean(np.exp(x), axis=1)),
                               rtol=1e-12)


@np.errstate(divide="ignore")  # the NumPy references take log(0) = -inf on purpose
def test_softmax_where_logsumexp_b_and_sign():
    x = rng.normal(size=(3, 4))
    keep = np.array([[True, False, True, True]] * 3)
    e = np.where(keep, np.exp(x), 0)
    np.testing.assert_allclose(nn.softmax(x, where=keep), e / e.sum(-1, keepdims=True),
                               rtol=1e-12)
    logp = nn.log_softmax(x, where=keep)
    assert np.all(np.isneginf(logp[~keep]))
    np.testing.assert_allclose(logp[keep], np.log(e / e.sum(-1, keepdims=True))[keep],
                               rtol=1e-12)
    b = np.array([1.0, -3.0, 0.5, 0.2])
    val, sign = nn.logsumexp(x, axis=1, b=b, return_sign=True)
    total = np.sum(b * np.exp(x), axis=1)
    np.testing.assert_allclose(val, np.log(np.abs(total)), rtol=1e-12)
    np.testing.assert_array_equal(sign, np.sign(total))
    np.testing.assert_allclose(nn.logsumexp(x, axis=0, where=keep),
                               np.log(np.sum(e, axis=0)), rtol=1e-12)


def _np_attention(q, k, v, keep, scale):
    groups = q.shape[2] // k.shape[2]
    k, v = np.repeat(k, groups, axis=2), np.repeat(v, groups, axis=2)
    logits = np.einsum("btnh,bsnh->bnts", q, k) * scale
    logits = np.where(keep, logits, -np.inf)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    return np.einsum("bnts,bsnh->btnh", w, v)


def test_dot_product_attention_grouped_causal_masked():
    q, k, v = rng.normal(size=(2, 5, 4, 8)), rng.normal(size=(2, 6, 2, 8)), rng.normal(
        size=(2, 6, 2, 8))
    mask = rng.random((2, 1, 5, 6)) > 0.2
    mask[..., 0] = True
    causal = np.tril(np.ones((5, 6), bool))
    got = nn.dot_product_attention(q, k, v, mask=mask, is_causal=True, scale=0.3)
    np.testing.assert_allclose(got, _np_attention(q, k, v, mask & causal, 0.3), rtol=1e-10)
    plain = nn.dot_product_attention(q[0], k[0], v[0])
    np.testing.assert_allclose(plain, _np_attention(q[:1], k[:1], v[:1], True, 8 ** -0.5)[0],
                               rtol=1e-10)
    g = fg.grad(lambda a: fnp.sum(nn.dot_product_attention(a, k, v, is_causal=True) ** 2))(q)
    num = numeric_grad(lambda a: np.sum(_np_attention(a, k, v, causal, 8 ** -0.5) ** 2), q)
    np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="multiple"):
        nn.dot_product_attention(q, k[:, :, :1].repeat(3, axis=2), v[:, :, :1].repeat(3, axis=2))


def test_initializers_are_reachable_where_jax_keeps_them():
    init = fg.nn.initializers.glorot_uniform()
    w = init(fg.random.key(0), (64, 32))
    assert w.shape == (64, 32) and w.dtype == np.float32
    assert np.abs(w).max() <= np.sqrt(6 / (64 + 32))
