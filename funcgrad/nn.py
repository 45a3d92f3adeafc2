"""Activations and normalizers (`fg.nn`), composed from funcgrad.numpy.

`logsumexp`, `softmax` and `log_softmax` subtract the maximum before exponentiating, and
`logsumexp`/`softmax` carry custom JVP rules so their derivatives stay finite for huge or
infinite inputs (the naive derivative of a shifted formula would produce inf - inf).
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np

from . import lax
from . import numpy as fnp
from .transforms.custom import custom_jvp
from .transforms.grad import stop_gradient


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
    if x.dtype.kind not in "fc":
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
    if x.dtype.kind not in "fc":
        x = fnp.asarray(x, np.float64)
    return _softplus(x)


def silu(x):
    x = fnp.asarray(x)
    return x * sigmoid(x)


swish = silu


def gelu(x, approximate=True):
    """Gaussian error linear unit; the tanh approximation by default (as JAX)."""
    x = fnp.asarray(x)
    if x.dtype.kind != "f":
        x = fnp.asarray(x, np.float64)
    if approximate:
        c = math.sqrt(2 / math.pi)
        return 0.5 * x * (1 + fnp.tanh(c * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + lax.erf(x * (1 / math.sqrt(2))))


def elu(x, alpha=1.0):
    x = fnp.asarray(x)
    return fnp.where(x > 0, x, alpha * fnp.expm1(fnp.where(x > 0, 0.0, x)))


def leaky_relu(x, negative_slope=0.01):
    x = fnp.asarray(x)
    return fnp.where(x >= 0, x, negative_slope * x)


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
    weights = fnp.exp(x - out)  # softmax; exactly 0 where x = -inf
    t_out = fnp.sum(weights * fnp.where(weights > 0, t, fnp.zeros_like(t)), axis=axis,
                    keepdims=True)
    if not keepdims:
        out, t_out = fnp.squeeze(out, axis=axis), fnp.squeeze(t_out, axis=axis)
    return out, t_out


def logsumexp(x, axis=None, keepdims=False):
    """log(sum(exp(x))) over `axis`, shifted by the maximum so it never overflows."""
    x = fnp.asarray(x)
    if x.dtype.kind not in "fc":
        x = fnp.asarray(x, np.float64)
    return _logsumexp(x, _axes(axis, x.ndim), bool(keepdims))


@partial(custom_jvp, nondiff_argnums=(1,))
def _softmax(x, axis):
    unnormalized = fnp.exp(x - _finite_max(x, axis))
    return unnormalized / fnp.sum(unnormalized, axis=axis, keepdims=True)


@_softmax.defjvp
def _softmax_jvp(axis, primals, tangents):
    (x,), (t,) = primals, tangents
    y = _softmax(x, axis)
    t = fnp.where(y > 0, t, fnp.zeros_like(t))
    return y, y * (t - fnp.sum(y * t, axis=axis, keepdims=True))


def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along `axis`, stable for large inputs."""
    x = fnp.asarray(x)
    if x.dtype.kind not in "fc":
        x = fnp.asarray(x, np.float64)
    return _softmax(x, _axes(axis, x.ndim))


def log_softmax(x, axis=-1):
    """x - logsumexp(x) along `axis`, computed from the max-shifted input."""
    x = fnp.asarray(x)
    if x.dtype.kind not in "fc":
        x = fnp.asarray(x, np.float64)
    axes = _axes(axis, x.ndim)
    shifted = x - _finite_max(x, axes)
    return shifted - fnp.log(fnp.sum(fnp.exp(shifted), axis=axes, keepdims=True))


def one_hot(x, num_classes, dtype=np.float32, axis=-1):
    """1 where `x` equals the class index along a new axis, else 0 (float32 by default)."""
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

def _init_rng(key):
    if isinstance(key, np.random.Generator):
        return key
    return np.random.default_rng(np.asarray(key).ravel().tolist())


def rnn_init(key, n_in, n_hidden, dtype=np.float32):
    """Parameters of `rnn`: {"wx": (n_in, H), "wh": (H, H), "b": (H,)}, uniform in
    ±1/sqrt(H) (as PyTorch). `key`: an int seed, a NumPy Generator or a uint32 key array."""
    rng = _init_rng(key)
    s = 1.0 / math.sqrt(n_hidden)
    return {"wx": rng.uniform(-s, s, (n_in, n_hidden)).astype(dtype),
            "wh": rng.uniform(-s, s, (n_hidden, n_hidden)).astype(dtype),
            "b": np.zeros(n_hidden, dtype)}


def rnn(params, xs, h0=None, activation=None):
    """Elman RNN over time-major `xs` (T, ..., n_in): h_t = tanh(x_t wx + h_{t-1} wh + b).

    Returns (hs of shape (T, ..., H), final h). The input projection of all steps is one matmul
    before the scan; the scan carries only h."""
    act = fnp.tanh if activation is None else activation
    xs = fnp.asarray(xs)
    wh = params["wh"]
    if h0 is None:
        h0 = fnp.zeros(tuple(xs.shape[1:-1]) + (wh.shape[0],), xs.dtype)
    xw = xs @ params["wx"] + params["b"]

    def step(h, xw_t):
        h = act(xw_t + h @ wh)
        return h, h

    h, hs = lax.scan(step, h0, xw)
    return hs, h


def lstm_init(key, n_in, n_hidden, dtype=np.float32, forget_bias=1.0):
    """Parameters of `lstm`: {"wx": (n_in, 4H), "wh": (H, 4H), "b": (4H,)} with gates ordered
    input, forget, cell, output; uniform in ±1/sqrt(H) and the forget gate's bias at
    `forget_bias` (1.0, as Keras' unit_forget_bias)."""
    rng = _init_rng(key)
    s = 1.0 / math.sqrt(n_hidden)
    b = np.zeros(4 * n_hidden, dtype)
    b[n_hidden:2 * n_hidden] = forget_bias
    return {"wx": rng.uniform(-s, s, (n_in, 4 * n_hidden)).astype(dtype),
            "wh": rng.uniform(-s, s, (n_hidden, 4 * n_hidden)).astype(dtype),
            "b": b}


def lstm(params, xs, h0=None, c0=None):
    """LSTM over time-major `xs` (T, ..., n_in). Returns (hs of shape (T, ..., H), (h, c)).

    i, f, g, o = split(x_t wx + h wh + b); c = sigmoid(f) c + sigmoid(i) tanh(g);
    h = sigmoid(o) tanh(c). The input projection of all steps is one matmul before the scan."""
    xs = fnp.asarray(xs)
    wh = params["wh"]
    n_hidden = wh.shape[0]
    batch = tuple(xs.shape[1:-1])
    if h0 is None:
        h0 = fnp.zeros(batch + (n_hidden,), xs.dtype)
    if c0 is None:
        c0 = fnp.zeros(batch + (n_hidden,), xs.dtype)
    xw = xs @ params["wx"] + params["b"]
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
