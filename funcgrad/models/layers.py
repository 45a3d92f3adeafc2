"""Layers as pairs of pure functions: `init(key, ...) -> params` and `apply(params, x, ...)`,
and the functions of arrays the pretrained families are built from (`linear`, `attention` with
masks and a key/value cache, norms, rotary embeddings).

Params are dicts (and lists) of arrays only, so they go straight into grad, optimizers, masks
(`blocks/1/attn/wq`) and io; hyperparameters that do not live in an array (strides, the number
of heads, the dropout rate) are arguments of `apply`. Everything is written with the public
API, so every layer works under grad, jit and vmap.
"""

from __future__ import annotations

import functools
import math
from functools import partial
from typing import Callable, NamedTuple

import numpy as np

from .. import initializers as inits
from .. import lax, nn, quant, random
from .. import numpy as fnp
from ..devices import inputs_on_default_backend
from ..lora import AdaptedWeight
from ..transforms.checkpoint import checkpoint

__all__ = [
    "Layer", "dense", "mlp", "conv2d", "max_pool", "avg_pool", "layer_norm", "rms_norm",
    "batch_norm", "embedding", "dropout", "multi_head_attention", "attention_mask",
    # pieces of the pretrained families (gpt2, bert, llama)
    "ParamMaker", "ParamSpec", "merged", "token_ids", "linear", "layer_norm_fn", "rms_norm_fn",
    "activation", "causal_mask", "attention", "split_heads", "merge_heads", "kv_cache_update",
    "rotary_cos_sin", "apply_rotary", "embed", "linear_cross_entropy",
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
    """x @ w + b over the last axis of x (w may be quantized: funcgrad.quant)."""
    w = params["w"]
    y = quant.linear(x, w, layout="in_out") if quant.is_quantized(w) else fnp.matmul(x, w)
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
    pads = lax.padtype_to_pads(x.shape[1:3], window, strides, padding)
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
    fill = -np.inf if fnp.issubdtype(x.dtype, fnp.floating) else np.iinfo(x.dtype).min
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
    return layer_norm_fn(x, params.get("scale"), params.get("bias"), eps)


layer_norm = make_layer("layer_norm", _layer_norm_init, _layer_norm_apply, unused=True)


def _rms_norm_init(key, dim, *, dtype=np.float32):
    """{"scale": ones(dim)}."""
    return {"scale": fnp.ones((dim,), dtype)}


def _rms_norm_apply(params, x, eps=1e-6):
    """x / sqrt(mean(x**2) + eps) * scale over the last axis (no centering)."""
    return rms_norm_fn(x, params["scale"], eps)


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
    new_state = {"mean": m * state["mean"] + (1 - m) * lax.stop_gradient(mean),
                 "var": m * state["var"] + (1 - m) * lax.stop_gradient(var)}
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
    allowed = attention_mask(x.shape[-2], kv.shape[-2], mask=mask, causal=causal,
                             padding_mask=padding_mask)
    out = attention(q, k, v, mask=allowed, dropout_rate=dropout_rate, key=key,
                    training=training)  # (..., H, T, d_head)
    out = fnp.swapaxes(out, -2, -3)
    out = fnp.reshape(out, (*out.shape[:-2], out.shape[-2] * out.shape[-1]))
    return proj("o", out)


multi_head_attention = make_layer("multi_head_attention", _mha_init, _mha_apply)


# ---------------------------------------------------------------------------------------------
# Pieces of pretrained transformers (funcgrad.models.gpt2, bert, llama): functions of arrays,
# so that each family keeps its checkpoint's parameter names and layout.

class ParamSpec:
    """A parameter's shape and dtype, nothing drawn (a leaf of `ParamMaker.SHAPES` trees)."""

    def __init__(self, shape, dtype, make=None):
        self.shape, self.dtype, self._make = tuple(shape), np.dtype(dtype), make

    def value(self):
        """The array itself (lazy trees only)."""
        return self._make()


class ParamMaker:
    """Makes a family's parameters: the i-th `normal(std, shape, dtype)` draws from
    fold_in(key, i), `zeros` and `ones` are constants. `key` may be a key or an int seed, or
    `ParamMaker.SHAPES` (every leaf a `ParamSpec`, nothing drawn: a config's layout at once,
    whatever the model's size), or `ParamMaker.lazy(key)` (every leaf a `ParamSpec` whose
    `value()` draws it: a few new tensors of a big model without drawing the others)."""

    SHAPES = object()

    class lazy:  # noqa: N801  (a marker, used as ParamMaker.lazy(key))
        def __init__(self, key):
            self.key = key

    def __init__(self, key, who):
        self.mode = "shapes" if key is ParamMaker.SHAPES else \
            "lazy" if isinstance(key, ParamMaker.lazy) else "arrays"
        raw = key.key if self.mode == "lazy" else key
        self.key = None if self.mode == "shapes" else random.as_key(raw, who)
        self.count = 0

    def _leaf(self, shape, dtype, make):
        if self.mode == "arrays":
            return make()
        return ParamSpec(shape, dtype, make if self.mode == "lazy" else None)

    def normal(self, std, shape, dtype):
        k = None if self.key is None else random.fold_in(self.key, self.count)
        self.count += 1
        return self._leaf(shape, dtype, lambda: inits.normal(std)(k, shape, dtype))

    def zeros(self, shape, dtype):
        return self._leaf(shape, dtype, lambda: fnp.zeros(shape, dtype))

    def ones(self, shape, dtype):
        return self._leaf(shape, dtype, lambda: fnp.ones(shape, dtype))


def token_ids(input_ids, who):
    """`input_ids` as an integer array [batch, length], or a clear error naming `who`."""
    ids = fnp.asarray(input_ids)
    if ids.ndim != 2 or np.dtype(ids.dtype).kind not in "iu":
        fix = "add a batch axis: ids[None]" if ids.ndim == 1 else \
            "token ids are integers: ids.astype(np.int32)" if ids.ndim == 2 else "reshape them"
        raise ValueError(f"{who}: input_ids must be integer token ids of shape [batch, length], "
                         f"got {ids.dtype} {tuple(ids.shape)} ({fix})")
    return ids


def merged(w):
    """The array a weight stands for: W itself, or W + scale * B @ A for a `lora.AdaptedWeight`
    (used where a weight is not multiplied by `linear`, e.g. an embedding table); a quantized
    weight is dequantized whole (`embed` gathers rows of one without that)."""
    if not isinstance(w, AdaptedWeight):
        return quant.dequantize(w)
    ad = w.adapter
    dt = w.weight.dtype
    a, b = fnp.asarray(ad.a).astype(dt), fnp.asarray(ad.b).astype(dt)
    return quant.dequantize(w.weight) + ad.scale * fnp.matmul(b, a)


def embed(table, ids):
    """Rows `ids` of an embedding table [vocab, d]: `fnp.take`, only the gathered rows of a
    quantized table dequantized (funcgrad.quant.take), an adapted table merged first."""
    if isinstance(table, AdaptedWeight):
        table = merged(table)
    return quant.take(table, ids, axis=0)


def linear(x, weight, bias=None, *, layout="out_in"):
    """x W^T + b for a weight stored [out, in] (PyTorch's `nn.Linear`, layout "out_in"), or
    x W + b for [in, out] (GPT-2's `Conv1D`, layout "in_out"), over the last axis of x.

    The one place where model weights reach a matmul: the weight is contracted in its stored
    layout (no transposed copy), and a `lora.AdaptedWeight` adds its low-rank path here."""
    if isinstance(weight, AdaptedWeight):
        ad = weight.adapter
        y = linear(x, weight.weight, bias, layout=layout)
        # B @ A has W's shape: for [out, in], A is [r, in] and B [out, r]; for [in, out] the
        # roles swap (B [in, r], A [r, out]).
        dt = weight.weight.dtype
        a, b = fnp.asarray(ad.a).astype(dt), fnp.asarray(ad.b).astype(dt)
        first, second = (a, b) if layout == "out_in" else (b, a)
        low = linear(linear(x, first, layout=layout), second, layout=layout)
        return y + (ad.scale * low).astype(y.dtype)
    contract = 1 if layout == "out_in" else 0
    if layout not in ("out_in", "in_out"):
        raise ValueError(f"linear: layout must be 'out_in' or 'in_out', got {layout!r}")
    if quant.is_quantized(weight):  # dequantized tile by tile inside the matmul
        return quant.linear(x, weight, bias, layout=layout)
    if x.shape[-1] != weight.shape[contract]:
        raise ValueError(f"linear: input of shape {tuple(x.shape)} does not fit a weight of "
                         f"shape {tuple(weight.shape)} (layout {layout!r}: "
                         f"{'[out, in]' if contract else '[in, out]'})")
    y = lax.dot_general(x, weight, (((x.ndim - 1,), (contract,)), ((), ())))
    return y if bias is None else y + bias


def linear_cross_entropy(h, weight, labels, *, tile_rows=2048):
    """Per-token cross-entropy `logsumexp(h W^T) - (h W^T)[label]` of an output layer W stored
    [vocab, d] (an LM head, or a tied embedding table; plain, 16-bit or quantized), without the
    [tokens, vocab] logits: the vocabulary is visited `tile_rows` rows of W at a time with a
    running logsumexp, each step under `checkpoint`, so the backward pass recomputes one tile at
    a time (and a quantized W is dequantized once per tile and pass). h [..., d], integer labels
    [...] -> float32 losses [...]. As Liger-Kernel's fused linear cross-entropy, this takes the
    largest activation of a language model's training step out of memory."""
    lead = tuple(h.shape[:-1])
    h32 = fnp.asarray(fnp.reshape(h, (-1, h.shape[-1])), np.float32)
    labels = fnp.reshape(fnp.asarray(labels), (-1,))
    carry = None
    n = weight.shape[0]
    for r0 in range(0, n, tile_rows):
        r1 = min(n, r0 + tile_rows)
        step = checkpoint(partial(_lce_tile, r0=r0, r1=r1, first=carry is None))
        carry = step(h32, quant.rows(weight, r0, r1), labels, carry)
    m, s, picked = carry
    return fnp.reshape(m + fnp.log(s) - picked, lead)


def _lce_tile(h32, w, labels, carry, *, r0, r1, first):
    """One vocabulary tile: the running (max, sum of exp, label logit) updated with its logits."""
    z = h32 @ fnp.asarray(quant.dequantize(w), np.float32).T     # [N, tile] logits
    zmax = lax.stop_gradient(fnp.max(z, axis=1))  # a shift: the result does not depend on it
    inside = fnp.logical_and(labels >= r0, labels < r1)
    idx = fnp.clip(labels - r0, 0, r1 - r0 - 1)
    hit = fnp.where(inside, fnp.take_along_axis(z, idx[:, None], axis=1)[:, 0], 0.0)
    if first:
        return zmax, fnp.sum(fnp.exp(z - zmax[:, None]), axis=1), hit
    m, s, picked = carry
    new = fnp.maximum(m, zmax)
    s = s * fnp.exp(m - new) + fnp.sum(fnp.exp(z - new[:, None]), axis=1)
    return new, s, picked + hit


def layer_norm_fn(x, weight, bias, eps):
    """(x - mean) / sqrt(var + eps) * weight + bias over the last axis (weight/bias may be None)."""
    mu = fnp.mean(x, axis=-1, keepdims=True)
    xc = x - mu
    y = xc * lax.rsqrt(fnp.mean(fnp.square(xc), axis=-1, keepdims=True) + eps)
    if weight is not None:
        y = y * weight
    return y if bias is None else y + bias


def rms_norm_fn(x, weight, eps):
    """x / sqrt(mean(x**2) + eps) * weight over the last axis, computed in at least float32 (as
    Llama's RMSNorm) and returned in x's dtype."""
    h = x if np.dtype(x.dtype).itemsize >= 4 else x.astype(np.float32)
    h = h * lax.rsqrt(fnp.mean(fnp.square(h), axis=-1, keepdims=True) + eps)
    return weight * h.astype(x.dtype)


def activation(name):
    """The activation function a Hugging Face config names (`hidden_act`,
    `activation_function`)."""
    table = {"gelu": lambda x: nn.gelu(x, approximate=False),
             "gelu_new": nn.gelu, "gelu_pytorch_tanh": nn.gelu, "gelu_fast": nn.gelu,
             "quick_gelu": lambda x: x * nn.sigmoid(1.702 * x),
             "relu": nn.relu, "silu": nn.silu, "swish": nn.silu, "tanh": fnp.tanh}
    if name not in table:
        raise ValueError(f"unsupported activation {name!r}; supported: {sorted(table)}")
    return table[name]


def causal_mask(q_positions, kv_len, *, window=None):
    """Boolean [T, S] "may attend" mask for queries at the (possibly traced) integer positions
    `q_positions` [T] over keys 0..kv_len-1: key j is visible from query i when j <= i and, with
    a sliding `window`, j > i - window (Mistral's convention)."""
    kv = lax.iota(np.int32, (kv_len,))
    q = fnp.asarray(q_positions).astype(np.int32)[:, None]
    ok = kv[None, :] <= q
    if window is not None:
        ok = fnp.logical_and(ok, kv[None, :] > q - window)
    return ok


def attention(q, k, v, *, mask=None, scale=None, dropout_rate=0.0, key=None, training=False):
    """softmax(q k^T * scale, masked) v with heads before positions: q [..., Hq, T, D], k and v
    [..., Hkv, S, D], Hq a multiple of Hkv (grouped-query attention: query head h reads key/value
    head h // (Hq / Hkv), as Hugging Face's `repeat_kv`). `mask`: boolean, broadcastable to
    [..., Hq, T, S], True where a query may attend. `scale` defaults to 1 / sqrt(D). The softmax
    is computed in at least float32; masked logits get the dtype's lowest value, so a row with
    nothing to attend to is uniform, not NaN. Dropout (when `training`) acts on the attention
    weights. Returns [..., Hq, T, D]."""
    *lead, hq, t, d = q.shape
    hkv, s = k.shape[-3], k.shape[-2]
    if hq % hkv or tuple(k.shape[:-3]) != tuple(lead) or v.shape != k.shape:
        raise ValueError(f"attention: query {tuple(q.shape)}, key {tuple(k.shape)} and value "
                         f"{tuple(v.shape)} must be [..., Hq, T, D], [..., Hkv, S, D] twice, "
                         "with Hq a multiple of Hkv")
    g, n = hq // hkv, math.prod(lead)
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    # heads h = kv * g + j share key/value head kv: one batched matmul per key/value head
    qg = fnp.reshape(q, (n, hkv, g * t, d))
    kf, vf = fnp.reshape(k, (n, hkv, s, d)), fnp.reshape(v, (n, hkv, s, d))
    logits = lax.dot_general(qg, kf, (((3,), (3,)), ((0, 1), (0, 1))))  # [n, Hkv, G*T, S]
    logits = fnp.reshape(logits, (*lead, hq, t, s))
    if np.dtype(logits.dtype).itemsize < 4:
        logits = logits.astype(np.float32)
    logits = logits * scale
    if mask is not None:
        logits = fnp.where(fnp.asarray(mask).astype(bool), logits,
                           np.finfo(logits.dtype).min)
    weights = nn.softmax(logits, axis=-1).astype(q.dtype)
    weights = dropout(key, weights, dropout_rate, training)
    out = lax.dot_general(fnp.reshape(weights, (n, hkv, g * t, s)), vf,
                          (((3,), (2,)), ((0, 1), (0, 1))))  # [n, Hkv, G*T, D]
    return fnp.reshape(out, (*lead, hq, t, d))


def split_heads(x, num_heads):
    """[B, T, H * D] -> [B, H, T, D]."""
    b, t, hd = x.shape
    return fnp.transpose(fnp.reshape(x, (b, t, num_heads, hd // num_heads)), (0, 2, 1, 3))


def merge_heads(x):
    """[B, H, T, D] -> [B, T, H * D]."""
    b, h, t, d = x.shape
    return fnp.reshape(fnp.transpose(x, (0, 2, 1, 3)), (b, t, h * d))


def kv_cache_update(cache, k, v, index):
    """Write k and v [B, H, T, D] into a fixed-size cache {"k", "v": [B, H, L, D]} at position
    `index` (a traced integer is fine: the shapes never change, so one compiled decode step
    serves every position). Returns the new cache."""
    zero = np.zeros((), np.int32)
    idx = fnp.asarray(index).astype(np.int32)
    return {"k": lax.dynamic_update_slice(cache["k"], k.astype(cache["k"].dtype), zero, zero,
                                          idx, zero),
            "v": lax.dynamic_update_slice(cache["v"], v.astype(cache["v"].dtype), zero, zero,
                                          idx, zero)}


def rotary_cos_sin(position_ids, inv_freq, dtype=np.float32):
    """cos and sin [B, T, D] of rotary embeddings for integer `position_ids` [B, T] and inverse
    frequencies [D / 2] (halves repeated, as Hugging Face's `rotate_half` convention), computed
    in float32."""
    freqs = fnp.asarray(position_ids).astype(np.float32)[..., None] * \
        fnp.asarray(inv_freq, np.float32)
    emb = fnp.concatenate([freqs, freqs], axis=-1)
    return fnp.cos(emb).astype(dtype), fnp.sin(emb).astype(dtype)


def apply_rotary(x, cos, sin):
    """Rotate x [B, H, T, D] by cos/sin [B, T, D]: x cos + rotate_half(x) sin, with
    rotate_half(x) = [-x2, x1] for the halves x1, x2 of the last axis."""
    half = x.shape[-1] // 2
    rotated = fnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos[:, None] + rotated * sin[:, None]
