"""Layers as pairs of pure functions: `init(key, ...) -> params` and `apply(params, x, ...)`.

Params are dicts (and lists) of arrays only, so they go straight into grad, optimizers, masks
(`blocks/1/attn/wq`) and io; hyperparameters that do not live in an array (strides, the number
of heads, the dropout rate) are arguments of `apply`. Everything is written with the public
API, so every layer works under grad, jit and vmap.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import numpy as np

from .. import lax, nn, random, stop_gradient
from .. import numpy as fnp
from ..devices import inputs_on_default_backend
from . import initializers as inits

__all__ = [
    "Layer", "dense", "mlp", "conv2d", "max_pool", "avg_pool", "layer_norm", "rms_norm",
    "batch_norm", "embedding", "dropout", "multi_head_attention",
]


class Layer(NamedTuple):
    """A layer: `init(key, ...) -> params` and a pure `apply(params, x, ...)`; calling the layer
    is `apply`."""
    init: Callable
    apply: Callable

    def __call__(self, params, *args, **kwargs):
        return self.apply(params, *args, **kwargs)


def keyed_init(init, name, unused=False):
    """`init` under funcgrad's one rule for keys (`fg.random.as_key`): the key argument may be a
    key or an int seed; a bad one is a TypeError naming `name` and the user's line. `unused`:
    the init draws nothing (norms), so None is accepted too."""
    @functools.wraps(init)
    def wrapped(key, *args, **kwargs):
        if not (unused and key is None):
            key = random.as_key(key, name)
        return init(key, *args, **kwargs)
    return wrapped


def make_layer(name, init, apply, unused=False):
    """Layer(init under the key rule, apply taking host or device inputs) named models.<name>."""
    return Layer(keyed_init(init, f"models.{name}.init", unused), inputs_on_default_backend(apply))


def _split(key, n):
    ks = random.split(key, n)
    return [ks[i] for i in range(n)]


# ---------------------------------------------------------------------------------------------
# dense, mlp

def _dense_init(key, in_dim, out_dim, *, use_bias=True, w_init=None, b_init=inits.zeros,
                dtype=np.float32):
    """{"w": (in_dim, out_dim), "b": (out_dim,)}; w lecun-normal by default, b zeros."""
    w_init = w_init or inits.lecun_normal()
    kw, kb = _split(key, 2)
    params = {"w": w_init(kw, (in_dim, out_dim), dtype)}
    if use_bias:
        params["b"] = b_init(kb, (out_dim,), dtype)
    return params


def _dense_apply(params, x):
    """x @ w + b over the last axis of x."""
    y = fnp.matmul(x, params["w"])
    return y + params["b"] if "b" in params else y


dense = make_layer("dense", _dense_init, _dense_apply)


def _mlp_init(key, sizes, *, use_bias=True, w_init=None, dtype=np.float32):
    """{"layers": [dense, ...]} for layer sizes [in, hidden..., out]."""
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ValueError(f"mlp: sizes needs at least [in, out], got {sizes}")
    keys = _split(key, len(sizes) - 1)
    return {"layers": [_dense_init(k, a, b, use_bias=use_bias, w_init=w_init, dtype=dtype)
                       for k, a, b in zip(keys, sizes[:-1], sizes[1:])]}


def _mlp_apply(params, x, activation=nn.relu, final_activation=None):
    """Dense layers with `activation` between them (and `final_activation` after the last)."""
    layers = params["layers"]
    for i, p in enumerate(layers):
        x = _dense_apply(p, x)
        if i < len(layers) - 1:
            x = activation(x)
    return final_activation(x) if final_activation is not None else x


mlp = make_layer("mlp", _mlp_init, _mlp_apply)


# ---------------------------------------------------------------------------------------------
# convolution and pooling (NHWC)

def _pair(v, name):
    v = (int(v),) * 2 if np.ndim(v) == 0 else tuple(int(s) for s in v)
    if len(v) != 2:
        raise ValueError(f"{name} must be an int or a pair, got {v}")
    return v


def _conv2d_init(key, in_channels, out_channels, kernel_size, *, groups=1, use_bias=True,
                 w_init=None, dtype=np.float32):
    """{"w": (kh, kw, in_channels // groups, out_channels) (HWIO), "b": (out_channels,)}."""
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"conv2d: channels {in_channels} -> {out_channels} not divisible by "
                         f"groups={groups}")
    w_init = w_init or inits.lecun_normal()
    kh, kw = _pair(kernel_size, "kernel_size")
    k1, k2 = _split(key, 2)
    params = {"w": w_init(k1, (kh, kw, in_channels // groups, out_channels), dtype)}
    if use_bias:
        params["b"] = inits.zeros(k2, (out_channels,), dtype)
    return params


def _conv2d_apply(params, x, stride=1, padding="SAME", dilation=1):
    """2-d convolution of NHWC `x`: stride, padding "SAME"/"VALID"/((lo, hi), (lo, hi)),
    kernel dilation; feature groups are read off the kernel (in_channels / kernel's I)."""
    w = params["w"]
    if x.ndim != 4:
        raise ValueError(f"conv2d: x must be NHWC (rank 4), got shape {tuple(x.shape)}; use "
                         "fg.vmap or add a batch axis for a single image")
    groups = x.shape[-1] // w.shape[2]
    y = lax.conv_general_dilated(x, w, _pair(stride, "stride"), padding,
                                 rhs_dilation=_pair(dilation, "dilation"),
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                 feature_group_count=groups)
    return y + params["b"] if "b" in params else y


conv2d = make_layer("conv2d", _conv2d_init, _conv2d_apply)


def _pool(x, window, strides, padding, init_value, combine):
    """Combine the strided window slices of NHWC `x` (padded with init_value)."""
    if x.ndim != 4:
        raise ValueError(f"pooling: x must be NHWC (rank 4), got shape {tuple(x.shape)}")
    window = _pair(window, "window")
    strides = window if strides is None else _pair(strides, "strides")
    pads = lax.conv.padtype_to_pads(x.shape[1:3], window, strides, padding)
    if any(p for pair in pads for p in pair):
        config = [(0, 0, 0)] + [(lo, hi, 0) for lo, hi in pads] + [(0, 0, 0)]
        x = lax.pad(x, np.array(init_value, x.dtype), config)
    n, h, w, c = x.shape
    oh, ow = (h - window[0]) // strides[0] + 1, (w - window[1]) // strides[1] + 1
    out = None
    for i in range(window[0]):
        for j in range(window[1]):
            s = lax.slice(x, (0, i, j, 0),
                          (n, i + (oh - 1) * strides[0] + 1, j + (ow - 1) * strides[1] + 1, c),
                          (1, strides[0], strides[1], 1))
            out = s if out is None else combine(out, s)
    return out


def max_pool(x, window, strides=None, padding="VALID"):
    """Max over windows of NHWC `x`; strides default to the window (non-overlapping)."""
    x = fnp.asarray(x)
    fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    return _pool(x, window, strides, padding, fill, fnp.maximum)


def avg_pool(x, window, strides=None, padding="VALID", count_include_pad=True):
    """Mean over windows of NHWC `x`; with SAME padding, `count_include_pad=False` averages
    only the real elements of each window."""
    x = fnp.asarray(x)
    total = _pool(x, window, strides, padding, 0, fnp.add)
    window = _pair(window, "window")
    if count_include_pad or padding == "VALID":
        return total / math.prod(window)
    ones = fnp.ones((1,) + tuple(x.shape[1:3]) + (1,), x.dtype)
    return total / _pool(ones, window, strides, padding, 0, fnp.add)


# ---------------------------------------------------------------------------------------------
# normalization

def _layer_norm_init(key, dim, *, use_scale=True, use_bias=True, dtype=np.float32):
    """{"scale": ones(dim), "bias": zeros(dim)} (`key` unused, for a uniform signature)."""
    params = {}
    if use_scale:
        params["scale"] = fnp.ones((dim,), dtype)
    if use_bias:
        params["bias"] = fnp.zeros((dim,), dtype)
    return params


def _layer_norm_apply(params, x, eps=1e-5):
    """(x - mean) / sqrt(var + eps) * scale + bias over the last axis."""
    mu = fnp.mean(x, axis=-1, keepdims=True)
    var = fnp.mean(fnp.square(x - mu), axis=-1, keepdims=True)
    y = (x - mu) * lax.rsqrt(var + eps)
    if "scale" in params:
        y = y * params["scale"]
    return y + params["bias"] if "bias" in params else y


layer_norm = make_layer("layer_norm", _layer_norm_init, _layer_norm_apply, unused=True)


def _rms_norm_init(key, dim, *, dtype=np.float32):
    """{"scale": ones(dim)}."""
    return {"scale": fnp.ones((dim,), dtype)}


def _rms_norm_apply(params, x, eps=1e-6):
    """x / sqrt(mean(x**2) + eps) * scale over the last axis (no centering)."""
    return x * lax.rsqrt(fnp.mean(fnp.square(x), axis=-1, keepdims=True) + eps) * params["scale"]


rms_norm = make_layer("rms_norm", _rms_norm_init, _rms_norm_apply, unused=True)


def _batch_norm_init(key, dim, *, dtype=np.float32):
    """(params, state): params {"scale", "bias"}, state {"mean": zeros, "var": ones}, the running
    statistics, which `apply` takes and returns (they are not trained)."""
    return ({"scale": fnp.ones((dim,), dtype), "bias": fnp.zeros((dim,), dtype)},
            {"mean": fnp.zeros((dim,), dtype), "var": fnp.ones((dim,), dtype)})


def _batch_norm_apply(params, state, x, training, momentum=0.9, eps=1e-5, axis_name=None):
    """Normalize over every axis but the last; returns (y, new_state).

    Training uses the batch statistics (biased variance) and moves the running ones toward them
    by (1 - momentum); evaluation uses the running ones and returns `state` unchanged. Under
    `fg.vmap(..., axis_name=name)` pass `axis_name` to average the statistics over the mapped
    batch too."""
    axes = tuple(range(x.ndim - 1))
    if not training:
        y = (x - state["mean"]) * lax.rsqrt(state["var"] + eps)
        return y * params["scale"] + params["bias"], state
    mean = fnp.mean(x, axis=axes)
    mean_sq = fnp.mean(fnp.square(x), axis=axes)
    if axis_name is not None:
        mean, mean_sq = lax.pmean(mean, axis_name), lax.pmean(mean_sq, axis_name)
    var = fnp.maximum(mean_sq - fnp.square(mean), 0.0)
    y = (x - mean) * lax.rsqrt(var + eps) * params["scale"] + params["bias"]
    m = momentum
    new_state = {"mean": m * state["mean"] + (1 - m) * stop_gradient(mean),
                 "var": m * state["var"] + (1 - m) * stop_gradient(var)}
    return y, new_state


batch_norm = make_layer("batch_norm", _batch_norm_init, _batch_norm_apply, unused=True)


# ---------------------------------------------------------------------------------------------
# embedding, dropout

def _embedding_init(key, num_embeddings, dim, *, w_init=None, dtype=np.float32):
    """{"table": (num_embeddings, dim)}, normal with std 0.02 by default."""
    w_init = w_init or inits.normal(0.02)
    return {"table": w_init(key, (num_embeddings, dim), dtype)}


def _embedding_apply(params, ids):
    """Rows of the table for integer `ids` (any shape): ids.shape + (dim,)."""
    return fnp.take(params["table"], ids, axis=0)


embedding = make_layer("embedding", _embedding_init, _embedding_apply)


def dropout(key, x, rate, training=True):
    """Zero each element with probability `rate` and scale the rest by 1 / (1 - rate), when
    `training`; the identity otherwise (and then `key` may be None)."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"dropout: rate must be in [0, 1], got {rate}")
    if not training or rate == 0.0:
        return x
    if key is None:
        raise ValueError("dropout: training with rate > 0 needs a key")
    x = fnp.asarray(x)
    if rate == 1.0:
        return fnp.zeros_like(x)
    keep = random.bernoulli(key, 1.0 - rate, x.shape)
    return fnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


# ---------------------------------------------------------------------------------------------
# attention

def _mha_init(key, d_model, *, kv_dim=None, use_bias=False, w_init=None, dtype=np.float32):
    """{"wq", "wk", "wv", "wo"}: (d_model, d_model) each (wk, wv: (kv_dim, d_model)), plus
    "bq", "bk", "bv", "bo" when `use_bias`. The number of heads is an argument of apply."""
    w_init = w_init or inits.lecun_normal()
    kv_dim = d_model if kv_dim is None else kv_dim
    ks = _split(key, 4)
    params = {"wq": w_init(ks[0], (d_model, d_model), dtype),
              "wk": w_init(ks[1], (kv_dim, d_model), dtype),
              "wv": w_init(ks[2], (kv_dim, d_model), dtype),
              "wo": w_init(ks[3], (d_model, d_model), dtype)}
    if use_bias:
        for name in ("bq", "bk", "bv", "bo"):
            params[name] = fnp.zeros((d_model,), dtype)
    return params


def attention_mask(q_len, kv_len, *, mask=None, causal=False, padding_mask=None):
    """The boolean "may attend" mask, broadcastable to (..., heads, q_len, kv_len), or None.

    causal: query i sees keys j <= i + (kv_len - q_len) (the last queries line up with the last
    keys); padding_mask (..., kv_len): True at real tokens; mask: any boolean broadcastable to
    (..., heads, q_len, kv_len). All given masks are combined with `and`."""
    out = None
    if causal:
        out = fnp.tril(fnp.ones((q_len, kv_len), bool), k=kv_len - q_len)
    if padding_mask is not None:
        pm = fnp.asarray(padding_mask).astype(bool)
        pm = fnp.expand_dims(fnp.expand_dims(pm, -2), -3)  # (..., 1, 1, kv_len)
        out = pm if out is None else fnp.logical_and(out, pm)
    if mask is not None:
        m = fnp.asarray(mask).astype(bool)
        out = m if out is None else fnp.logical_and(out, m)
    return out


def _heads(x, num_heads):
    """(..., T, D) -> (..., H, T, D / H)."""
    *lead, t, d = x.shape
    if d % num_heads:
        raise ValueError(f"attention: model dim {d} is not divisible by num_heads={num_heads}")
    return fnp.swapaxes(fnp.reshape(x, (*lead, t, num_heads, d // num_heads)), -2, -3)


def _mha_apply(params, x, num_heads, *, kv=None, mask=None, causal=False, padding_mask=None,
               dropout_rate=0.0, key=None, training=False):
    """Multi-head scaled dot-product attention of x (..., T, D) over kv (default x): softmax(q k^T
    / sqrt(d_head)) v, then the output projection. Masked positions get a very negative logit
    (a row with nothing to attend to becomes uniform, not NaN). Dropout applies to the
    attention weights when `training`."""
    kv = x if kv is None else kv

    def proj(name, v):
        y = fnp.matmul(v, params["w" + name])
        return y + params["b" + name] if "b" + name in params else y

    q, k, v = (_heads(proj("q", x), num_heads), _heads(proj("k", kv), num_heads),
               _heads(proj("v", kv), num_heads))
    d_head = q.shape[-1]
    logits = fnp.matmul(q, fnp.swapaxes(k, -1, -2)) * (1.0 / math.sqrt(d_head))
    allowed = attention_mask(x.shape[-2], kv.shape[-2], mask=mask, causal=causal,
                             padding_mask=padding_mask)
    if allowed is not None:
        logits = fnp.where(allowed, logits, np.finfo(logits.dtype).min / 2)
    weights = nn.softmax(logits, axis=-1)
    weights = dropout(key, weights, dropout_rate, training)
    out = fnp.matmul(weights, v)  # (..., H, T, d_head)
    out = fnp.swapaxes(out, -2, -3)
    out = fnp.reshape(out, (*out.shape[:-2], out.shape[-2] * out.shape[-1]))
    return proj("o", out)


multi_head_attention = make_layer("multi_head_attention", _mha_init, _mha_apply)
