"""Activations and normalizers (`fg.nn`), composed from funcgrad.numpy.

`logsumexp`, `softmax` and `log_softmax` subtract the maximum before exponentiating, and
`logsumexp`/`softmax` carry custom JVP rules so their derivatives stay finite for huge or
infinite inputs (the naive derivative of a shifted formula would produce inf - inf).
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np

from . import (
    initializers,  # noqa: F401  (fg.nn.initializers, as jax.nn.initializers)
    lax,
)
from . import numpy as fnp
from .core.avals import dtype_kind
from .lax import stop_gradient
from .lax.custom_derivatives import custom_jvp


def relu(x):
    """max(x, 0), with derivative 0 at 0 (as JAX) and NaN kept NaN: a select, whose derivative
    is a select (cheaper under eager grad than a custom rule)."""
    x = fnp.asarray(x)
    return fnp.where(x <= 0, 0, x)


def relu6(x):
    return fnp.minimum(relu(x), 6.0)


def sigmoid(x):
    """1 / (1 + exp(-x)), computed without overflow."""
    x = fnp.asarray(x)
    if dtype_kind(x.dtype) not in "fc":
        x = fnp.asarray(x, np.float64)
    return lax.logistic(x)


def log_sigmoid(x):
    return -softplus(-fnp.asarray(x))


@custom_jvp
def _softplus(x):
    return fnp.maximum(x, 0) + fnp.log1p(fnp.exp(-fnp.abs(x)))


@_softplus.defjvp
def _softplus_jvp(primals, tangents):
    # The stable formula has kinks (max, abs) at 0 whose higher derivatives are wrong; the
    # rule says what softplus' is, sigmoid, so every order is exact and the program is short.
    (x,), (t,) = primals, tangents
    return _softplus(x), t * lax.logistic(x)


def softplus(x):
    """log(1 + exp(x)), stable for large |x|; its derivative is sigmoid(x) at every order."""
    x = fnp.asarray(x)
    if dtype_kind(x.dtype) not in "fc":
        x = fnp.asarray(x, np.float64)
    return _softplus(x)


def silu(x):
    x = fnp.asarray(x)
    return x * sigmoid(x)


swish = silu


def gelu(x, approximate=True):
    """Gaussian error linear unit; the tanh approximation by default (as JAX)."""
    x = fnp.asarray(x)
    if dtype_kind(x.dtype) != "f":
        x = fnp.asarray(x, np.float64)
    if approximate:
        return _gelu_tanh(x)
    return 0.5 * x * (1 + lax.erf(x * (1 / math.sqrt(2))))


_GELU_C, _GELU_K = math.sqrt(2 / math.pi), 0.044715


def _gelu_tanh_parts(x):
    """x^2, t = tanh(c (x + k x^3)) and x / 2, in the one form the function and its rule share
    (so that jit's common-subexpression pass computes them once for both)."""
    u = x * x
    return u, fnp.tanh(x * (_GELU_C + (_GELU_C * _GELU_K) * u)), 0.5 * x


@custom_jvp
def _gelu_tanh(x):
    """0.5 x (1 + tanh(c (x + k x^3))), c = sqrt(2 / pi), k = 0.044715."""
    _, t, h = _gelu_tanh_parts(x)
    return h + h * t


@_gelu_tanh.defjvp
def _gelu_tanh_jvp(primals, tangents):
    """The derivative 0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 k x^2) from the function's own t: a
    transformer's MLP activation is one of the largest arrays of a step, and the composed rules
    take about a dozen backward passes over it and keep four such arrays for the backward pass;
    this is one product with the derivative."""
    (x,), (tx,) = primals, tangents
    u, t, h = _gelu_tanh_parts(x)
    d = (0.5 + 0.5 * t) + h * (1 - t * t) * (_GELU_C + (3 * _GELU_C * _GELU_K) * u)
    return h + h * t, d * tx


def elu(x, alpha=1.0):
    x = fnp.asarray(x)
    return fnp.where(x > 0, x, alpha * fnp.expm1(fnp.where(x > 0, 0.0, x)))


def leaky_relu(x, negative_slope=0.01):
    x = fnp.asarray(x)
    return fnp.where(x >= 0, x, negative_slope * x)


def _float(x):
    x = fnp.asarray(x)
    return x if dtype_kind(x.dtype) in "fc" else fnp.asarray(x, np.float64)


def identity(x):
    return fnp.asarray(x)


def tanh(x):
    return fnp.tanh(x)


def celu(x, alpha=1.0):
    """max(x, 0) + alpha * min(expm1(x / alpha), 0)."""
    x = _float(x)
    return fnp.where(x > 0, x, alpha * fnp.expm1(fnp.where(x > 0, 0.0, x) / alpha))


_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def selu(x):
    """scale * elu(x, alpha) with the self-normalizing constants."""
    return _SELU_SCALE * elu(_float(x), _SELU_ALPHA)


def glu(x, axis=-1):
    """Gated linear unit: the first half of `axis` times sigmoid of the second half."""
    x = _float(x)
    a, g = fnp.split(x, 2, axis=axis)
    return a * sigmoid(g)


def hard_sigmoid(x):
    """relu6(x + 3) / 6."""
    return relu6(_float(x) + 3.0) / 6.0


def hard_silu(x):
    """x * hard_sigmoid(x)."""
    x = _float(x)
    return x * hard_sigmoid(x)


hard_swish = hard_silu


def hard_tanh(x):
    """x clipped to [-1, 1]."""
    x = _float(x)
    return fnp.where(x > 1, 1.0, fnp.where(x < -1, -1.0, x))


def log1mexp(x):
    """log(1 - exp(-x)) for x > 0, accurate for small and large x."""
    x = _float(x)
    return fnp.where(x < math.log(2), fnp.log(-fnp.expm1(-x)), fnp.log1p(-fnp.exp(-x)))


def mish(x):
    """x * tanh(softplus(x))."""
    x = _float(x)
    return x * fnp.tanh(softplus(x))


def soft_sign(x):
    """x / (1 + |x|)."""
    x = _float(x)
    return x / (1 + fnp.abs(x))


def sparse_plus(x):
    """0 for x <= -1, (x + 1)^2 / 4 for |x| < 1, x for x >= 1."""
    x = _float(x)
    return fnp.where(x <= -1, 0.0, fnp.where(x >= 1, x, (x + 1) ** 2 / 4))


def sparse_sigmoid(x):
    """The derivative of sparse_plus: clip((x + 1) / 2, 0, 1)."""
    x = _float(x)
    return fnp.clip((x + 1) / 2, 0.0, 1.0)


def squareplus(x, b=4):
    """(x + sqrt(x^2 + b)) / 2, a smooth relu."""
    x = _float(x)
    return (x + fnp.sqrt(x * x + b)) / 2


def _axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    return tuple(a % ndim for a in ((axis,) if isinstance(axis, int) else axis))


def _finite_max(x, axis):
    """The max along `axis` (kept), 0 where it is infinite, as a constant for differentiation:
    the shift cancels in every formula that uses it, so no derivative flows through it (and
    stopping the gradient first means no backward work or stored residual for it at all)."""
    m = fnp.max(stop_gradient(x), axis=axis, keepdims=True)
    return fnp.where(fnp.isfinite(m), m, 0)


@partial(custom_jvp, nondiff_argnums=(1, 2))
def _logsumexp(x, axis, keepdims):
    m = _finite_max(x, axis)
    out = fnp.log(fnp.sum(fnp.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else fnp.squeeze(out, axis=axis)


@_logsumexp.defjvp
def _logsumexp_jvp(axis, keepdims, primals, tangents):
    (x,), (t,) = primals, tangents
    out = _logsumexp(x, axis, True)
    # softmax: exactly 0 where x = -inf (so a tangent there, even inf, takes no part), and NaN
    # on a slice that is all -inf, where the softmax, the derivative, is undefined (as JAX's)
    weights = fnp.exp(fnp.subtract(x, out))   # (fnp: inf - inf without a NumPy warning)
    t_out = fnp.sum(weights * fnp.where(weights != 0, t, fnp.zeros_like(t)), axis=axis,
                    keepdims=True)
    if not keepdims:
        out, t_out = fnp.squeeze(out, axis=axis), fnp.squeeze(t_out, axis=axis)
    return out, t_out


def logsumexp(a, axis=None, b=None, keepdims=False, return_sign=False, where=None):
    """log(sum(b * exp(x))) over `axis`, shifted by the maximum so it never overflows.

    As JAX's: `b` scales each term (it may be negative: `return_sign=True` then also returns the
    sign of the sum, and the log is of its magnitude); `where` masks terms out. A slice that is
    all -inf gives -inf, and its gradient (the softmax, undefined there) is NaN, as in JAX and
    PyTorch: a fully masked row shows up instead of passing as zeros."""
    x = fnp.asarray(a)
    if dtype_kind(x.dtype) not in "fc":
        x = fnp.asarray(x, np.float64)
    axes = _axes(axis, x.ndim)
    if b is None and where is None and not return_sign:
        return _logsumexp(x, axes, bool(keepdims))
    if where is not None:
        x = fnp.where(where, x, -np.inf)
    m = _finite_max(x, axes)
    terms = fnp.exp(x - m)
    if b is not None:
        terms = terms * fnp.asarray(b)
    total = fnp.sum(terms, axis=axes, keepdims=True)
    sign = fnp.sign(total)
    out = fnp.log(fnp.abs(total)) + m
    if not keepdims:
        out, sign = fnp.squeeze(out, axis=axes), fnp.squeeze(sign, axis=axes)
    if return_sign:
        return out, sign
    return fnp.where(sign < 0, np.nan, out)  # the log of a negative sum, as JAX: NaN


def logmeanexp(x, axis=None, where=None, keepdims=False):
    """log(mean(exp(x))) over `axis` (terms outside `where` left out), without overflow."""
    x = fnp.asarray(x)
    if dtype_kind(x.dtype) not in "fc":
        x = fnp.asarray(x, np.float64)
    axes = _axes(axis, x.ndim)
    if where is None:
        count = math.prod(x.shape[a] for a in axes)
    else:
        count = fnp.sum(fnp.broadcast_to(where, x.shape), axis=axes, keepdims=keepdims)
    return logsumexp(x, axis=axes, keepdims=keepdims, where=where) - fnp.log(count)


@partial(custom_jvp, nondiff_argnums=(1,))
def _softmax(x, axis):
    unnormalized = fnp.exp(x - _finite_max(x, axis))
    return fnp.divide(unnormalized, fnp.sum(unnormalized, axis=axis, keepdims=True))


@_softmax.defjvp
def _softmax_jvp(axis, primals, tangents):
    (x,), (t,) = primals, tangents
    y = _softmax(x, axis)
    t = fnp.where(y != 0, t, 0)  # 0 where x = -inf; NaN rows stay NaN
    return y, y * (t - fnp.sum(y * t, axis=axis, keepdims=True))


def softmax(x, axis=-1, where=None):
    """exp(x) / sum(exp(x)) along `axis`, stable for large inputs; entries outside `where`
    take no part and come out 0 (as JAX)."""
    x = fnp.asarray(x)
    if dtype_kind(x.dtype) not in "fc":
        x = fnp.asarray(x, np.float64)
    if where is not None:
        return fnp.where(where, _softmax(fnp.where(where, x, -np.inf), _axes(axis, x.ndim)), 0)
    return _softmax(x, _axes(axis, x.ndim))


def log_softmax(x, axis=-1, where=None):
    """x - logsumexp(x) along `axis`, computed from the max-shifted input; entries outside
    `where` take no part and come out -inf (as JAX)."""
    x = fnp.asarray(x)
    if dtype_kind(x.dtype) not in "fc":
        x = fnp.asarray(x, np.float64)
    axes = _axes(axis, x.ndim)
    if where is not None:
        x = fnp.where(where, x, -np.inf)
    shifted = x - _finite_max(x, axes)
    return fnp.subtract(shifted, fnp.log(fnp.sum(fnp.exp(shifted), axis=axes, keepdims=True)))


def dot_product_attention(query, key, value, bias=None, mask=None, *, scale=None,
                          is_causal=False):
    """softmax(q k^T * scale + bias, masked) v, with JAX's layout: query (B, T, N, H) or
    (T, N, H), key and value (B, S, K, H) with N a multiple of K (grouped-query attention);
    `bias` and boolean `mask` broadcast to (B, N, T, S); `scale` defaults to 1/sqrt(H);
    `is_causal` masks keys after each query position. Returns the query's shape."""
    q, k, v = fnp.asarray(query), fnp.asarray(key), fnp.asarray(value)
    unbatched = q.ndim == 3
    if unbatched:
        q, k, v = q[None], k[None], v[None]
    if q.ndim != 4 or k.ndim != 4 or v.shape != k.shape:
        raise ValueError(f"dot_product_attention: query {tuple(query.shape)}, key "
                         f"{tuple(key.shape)} and value {tuple(value.shape)} must be (B, T, N, H),"
                         " (B, S, K, H) and (B, S, K, H) (or all without B).")
    B, T, N, H = q.shape
    S, K = k.shape[1], k.shape[2]
    if N % K:
        raise ValueError(f"dot_product_attention: {N} query heads is not a multiple of {K} "
                         "key/value heads.")
    scale = 1.0 / math.sqrt(H) if scale is None else scale
    qg = fnp.reshape(q, (B, T, K, N // K, H))
    logits = fnp.einsum("btkgh,bskh->bkgts", qg, k) * scale
    logits = fnp.reshape(logits, (B, N, T, S))
    if bias is not None:
        bias = fnp.asarray(bias)
        logits = logits + (bias[None] if unbatched and bias.ndim == 4 else bias)
    keep = None
    if mask is not None:
        keep = fnp.asarray(mask, bool)
    if is_causal:
        causal = np.tril(np.ones((T, S), bool))  # query i sees keys j <= i (as JAX)
        keep = causal if keep is None else fnp.logical_and(keep, causal)
    weights = softmax(logits, axis=-1, where=keep) if keep is not None else softmax(logits, -1)
    out = fnp.einsum("bkgts,bskh->btkgh", fnp.reshape(weights, (B, K, N // K, T, S)), v)
    out = fnp.reshape(out, (B, T, N, H))
    return out[0] if unbatched else out


def one_hot(x, num_classes, dtype=np.float32, axis=-1):
    """1 where `x` equals the class index along a new axis, else 0 (float32 by default)."""
    dtype = np.float32 if dtype is None else dtype
    x = fnp.asarray(x)
    out_ndim = x.ndim + 1
    axis = axis % out_ndim
    classes = lax.iota(np.int64, (num_classes,))
    shape = [1] * out_ndim
    shape[axis] = num_classes
    expanded = fnp.expand_dims(x, axis)
    return (expanded == fnp.reshape(classes, shape)).astype(dtype)


def standardize(x, axis=-1, mean=None, variance=None, epsilon=1e-5):
    """(x - mean) / sqrt(variance + epsilon) along `axis`."""
    x = fnp.asarray(x)
    if mean is None:
        mean = fnp.mean(x, axis=axis, keepdims=True)
    if variance is None:
        variance = fnp.mean(fnp.square(x - mean), axis=axis, keepdims=True)
    return (x - mean) * lax.rsqrt(variance + epsilon)


normalize = standardize


# ---------------------------------------------------------------------------------------------
# Recurrent layers, built on fg.lax.scan (one program however long the sequence).

def _uniform_init(key, caller, shapes, scale, dtype):
    """Arrays of `shapes`, uniform in +-scale, from the parts of split(key) (the key rule:
    fg.random.as_key)."""
    from . import random  # the user API's random module (funcgrad.random imports this one)

    keys = random.split(random.as_key(key, caller), len(shapes))
    return [random.uniform(keys[i], shape, dtype, -scale, scale) for i, shape in
            enumerate(shapes)]


def rnn_init(key, n_in, n_hidden, dtype=np.float32):
    """Parameters of `rnn`: {"wx": (n_in, H), "wh": (H, H), "b": (H,)}, uniform in
    ±1/sqrt(H) (as PyTorch). `key`: a key or an int seed (fg.random.as_key)."""
    s = 1.0 / math.sqrt(n_hidden)
    wx, wh = _uniform_init(key, "nn.rnn_init", [(n_in, n_hidden), (n_hidden, n_hidden)], s,
                           dtype)
    return {"wx": wx, "wh": wh, "b": fnp.zeros((n_hidden,), dtype)}


def rnn(params, xs, h0=None, activation=None):
    """Elman RNN over time-major `xs` (T, ..., n_in): h_t = tanh(x_t wx + h_{t-1} wh + b).

    Returns (hs of shape (T, ..., H), final h). The input projection of all steps is one matmul
    before the scan; the scan carries only h."""
    act = fnp.tanh if activation is None else activation
    xs = fnp.asarray(xs)
    wx, wh, b = (fnp.asarray(params[k]) for k in ("wx", "wh", "b"))
    if h0 is None:
        h0 = fnp.zeros(tuple(xs.shape[1:-1]) + (wh.shape[0],), xs.dtype)
    xw = xs @ wx + b

    def step(h, xw_t):
        h = act(xw_t + h @ wh)
        return h, h

    h, hs = lax.scan(step, h0, xw)
    return hs, h


def lstm_init(key, n_in, n_hidden, dtype=np.float32, forget_bias=1.0):
    """Parameters of `lstm`: {"wx": (n_in, 4H), "wh": (H, 4H), "b": (4H,)} with gates ordered
    input, forget, cell, output; uniform in ±1/sqrt(H) and the forget gate's bias at
    `forget_bias` (1.0, as Keras' unit_forget_bias). `key`: a key or an int seed."""
    s = 1.0 / math.sqrt(n_hidden)
    wx, wh = _uniform_init(key, "nn.lstm_init",
                           [(n_in, 4 * n_hidden), (n_hidden, 4 * n_hidden)], s, dtype)
    gate = lax.iota(np.int64, 4 * n_hidden) // n_hidden
    b = fnp.where(gate == 1, forget_bias, 0.0).astype(dtype)
    return {"wx": wx, "wh": wh, "b": b}


def lstm(params, xs, h0=None, c0=None):
    """LSTM over time-major `xs` (T, ..., n_in). Returns (hs of shape (T, ..., H), (h, c)).

    i, f, g, o = split(x_t wx + h wh + b); c = sigmoid(f) c + sigmoid(i) tanh(g);
    h = sigmoid(o) tanh(c). The input projection of all steps is one matmul before the scan."""
    xs = fnp.asarray(xs)
    wx, wh, b = (fnp.asarray(params[k]) for k in ("wx", "wh", "b"))
    n_hidden = wh.shape[0]
    batch = tuple(xs.shape[1:-1])
    if h0 is None:
        h0 = fnp.zeros(batch + (n_hidden,), xs.dtype)
    if c0 is None:
        c0 = fnp.zeros(batch + (n_hidden,), xs.dtype)
    xw = xs @ wx + b
    H = n_hidden

    def step(carry, xw_t):
        h, c = carry
        z = xw_t + h @ wh
        i = sigmoid(z[..., :H])
        f = sigmoid(z[..., H:2 * H])
        g = fnp.tanh(z[..., 2 * H:3 * H])
        o = sigmoid(z[..., 3 * H:])
        c = f * c + i * g
        h = o * fnp.tanh(c)
        return (h, c), h

    (h, c), hs = lax.scan(step, (h0, c0), xw)
    return hs, (h, c)
