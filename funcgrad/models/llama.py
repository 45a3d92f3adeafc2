"""Llama (`LlamaForCausalLM`, `LlamaModel`) and its Mistral / Qwen2 variants as pure functions
over a parameter tree that mirrors the Hugging Face checkpoint:
`model.layers.0.self_attn.q_proj.weight` is
`params["model"]["layers"][0]["self_attn"]["q_proj"]["weight"]`.

    cfg = llama.default_config(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                               num_key_value_heads=2, intermediate_size=128, vocab_size=512)
    params = llama.init(fg.random.key(0), cfg)
    logits = llama.apply(params, input_ids, config=cfg)          # [B, T, vocab]

Pre-norm blocks with RMSNorm (`rms_norm_eps`), rotary position embeddings (`rope_theta`; rope
types "default", "linear" and "llama3"), grouped-query attention (`num_key_value_heads`),
SwiGLU MLP (`down(act(gate(x)) * up(x))`), `tie_word_embeddings`, `attention_bias` /
`mlp_bias`. Mistral adds a sliding attention window (`sliding_window`), Qwen2 biases on
q/k/v and per-layer windows (`layer_types`). Dropout (`attention_dropout`) applies when
`training=True` with a key.
"""

from __future__ import annotations

import math

import numpy as np

from .. import numpy as fnp
from .. import random
from .layers import (
    ParamMaker,
    activation,
    attention,
    causal_mask,
    embed,
    kv_cache_update,
    linear,
    merge_heads,
    rms_norm_fn,
    rotary_cos_sin,
    split_heads,
    token_ids,
)
from .layers import apply_rotary as _rotate

__all__ = ["default_config", "init", "apply", "init_cache", "rope_inv_freq"]

ARCHITECTURES = {"llama": ("LlamaForCausalLM", "LlamaModel"),
                 "mistral": ("MistralForCausalLM", "MistralModel"),
                 "qwen2": ("Qwen2ForCausalLM", "Qwen2Model")}
CAUSAL_LM = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM")
BASE_PREFIX = "model"
IGNORED = (r"(^|\.)rotary_emb\.inv_freq$",)
UNEXPECTED_OK = {}

_DEFAULTS = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                 num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=None,
                 head_dim=None, hidden_act="silu", max_position_embeddings=2048,
                 initializer_range=0.02, rms_norm_eps=1e-6, tie_word_embeddings=False,
                 attention_bias=False, attention_dropout=0.0, mlp_bias=False,
                 sliding_window=None, bos_token_id=1, eos_token_id=2)
_NAMES = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2"}


def default_config(model_type="llama", **overrides):
    """A complete `config.json` dict for `model_type` ("llama", "mistral", "qwen2") with
    Hugging Face's defaults (Llama 2 7B's sizes), updated with `overrides`."""
    cfg = dict(_DEFAULTS, model_type=model_type,
               architectures=[f"{_NAMES[model_type]}ForCausalLM"],
               rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    if model_type == "qwen2":
        cfg.update(use_sliding_window=False, max_window_layers=28)
    cfg.update(overrides)
    return cfg


def _get(config, name):
    v = config.get(name)
    return _DEFAULTS.get(name) if v is None else v


def architecture(config):
    default = f"{_NAMES.get(config.get('model_type'), 'Llama')}ForCausalLM"
    return (config.get("architectures") or [default])[0]


def _sizes(config):
    d, heads = _get(config, "hidden_size"), _get(config, "num_attention_heads")
    kv = _get(config, "num_key_value_heads") or heads
    return d, heads, kv, _get(config, "head_dim") or d // heads


def _qkv_bias(config):
    return config.get("model_type") == "qwen2" or bool(_get(config, "attention_bias"))


def _is_base(config):
    return architecture(config).endswith("Model")


def tied(config):
    if not _is_base(config) and _get(config, "tie_word_embeddings"):
        return {"lm_head.weight": "model.embed_tokens.weight"}
    return {}


def weight_layout(name):
    if name.endswith("embed_tokens.weight"):
        return "embedding"
    if name.endswith("_proj.weight") or name == "lm_head.weight":
        return "out_in"
    return None


def rope_inv_freq(config):
    """Rotary inverse frequencies [head_dim / 2] (float32) for the config's rope type:
    "default" (theta^(-2i/d)), "linear" (divided by `factor`) or "llama3" (Llama 3.1's
    wavelength-dependent scaling)."""
    rope = dict(config.get("rope_scaling") or {})
    rope.update(config.get("rope_parameters") or {})
    theta = rope.get("rope_theta", config.get("rope_theta", 10000.0))
    kind = rope.get("rope_type", rope.get("type", "default"))
    dim = _sizes(config)[3]
    inv = 1.0 / (float(theta) ** (np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / dim))
    if kind == "default":
        return inv.astype(np.float32)
    if kind == "linear":
        return (inv / rope["factor"]).astype(np.float32)
    if kind == "llama3":
        factor, lo, hi = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
        old = rope["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > old / lo, inv / factor, inv)
        smooth = (old / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old / hi) & ~(wavelen > old / lo)
        return np.where(medium, smoothed, scaled).astype(np.float32)
    raise ValueError(f"llama: rope type {kind!r} is not supported (supported: 'default', "
                     "'linear', 'llama3')")


def _windows(config, n_layer):
    """The sliding window of each layer (None: full causal attention)."""
    window = config.get("sliding_window")
    if config.get("layer_types"):
        return [window if kind == "sliding_attention" else None for kind in config["layer_types"]]
    if config.get("model_type") == "qwen2":
        use = config.get("use_sliding_window") and window is not None
        first = config.get("max_window_layers", 28)
        return [window if use and i >= first else None for i in range(n_layer)]
    return [window if config.get("model_type") == "mistral" else None] * n_layer


def init(key, config, dtype=np.float32):
    """Random parameters (from a key or an int seed) as Hugging Face initializes Llama:
    normal(0, initializer_range) weights, zero biases, unit RMSNorm weights."""
    d, heads, kv, hd = _sizes(config)
    n_layer, inner = _get(config, "num_hidden_layers"), _get(config, "intermediate_size")
    vocab = _get(config, "vocab_size")
    std = _get(config, "initializer_range")
    mk = ParamMaker(key, "llama.init")
    qkv_bias, o_bias = _qkv_bias(config), bool(_get(config, "attention_bias"))
    mlp_bias = bool(_get(config, "mlp_bias"))

    def proj(n_in, n_out, bias):
        p = {"weight": mk.normal(std, (n_out, n_in), dtype)}
        if bias:
            p["bias"] = mk.zeros((n_out,), dtype)
        return p

    base = {"embed_tokens": {"weight": mk.normal(std, (vocab, d), dtype)},
            "layers": [{"input_layernorm": {"weight": mk.ones((d,), dtype)},
                        "self_attn": {"q_proj": proj(d, heads * hd, qkv_bias),
                                      "k_proj": proj(d, kv * hd, qkv_bias),
                                      "v_proj": proj(d, kv * hd, qkv_bias),
                                      "o_proj": proj(heads * hd, d, o_bias)},
                        "post_attention_layernorm": {"weight": mk.ones((d,), dtype)},
                        "mlp": {"gate_proj": proj(d, inner, mlp_bias),
                                "up_proj": proj(d, inner, mlp_bias),
                                "down_proj": proj(inner, d, mlp_bias)}}
                       for _ in range(n_layer)],
            "norm": {"weight": mk.ones((d,), dtype)}}
    if _is_base(config):
        return base
    params = {"model": base}
    if not _get(config, "tie_word_embeddings"):
        params["lm_head"] = {"weight": mk.normal(std, (vocab, d), dtype)}
    return params


def init_cache(config, batch, length, dtype=np.float32):
    """An empty key/value cache for `length` positions: one {"k", "v": [B, Hkv, L, D]} per
    layer."""
    _, _, kv, hd = _sizes(config)
    shape = (batch, kv, length, hd)
    return [{"k": fnp.zeros(shape, dtype), "v": fnp.zeros(shape, dtype)}
            for _ in range(_get(config, "num_hidden_layers"))]


def apply(params, input_ids, *, config, attention_mask=None, position_ids=None, cache=None,
          cache_index=0, training=False, key=None):
    """Logits [B, T, vocab] (`*ForCausalLM`) or the last hidden state [B, T, d] (`*Model`) for
    integer `input_ids` [B, T].

    attention_mask [B, S]: 1 at real tokens (S = T, or the cache length with a cache);
    position_ids [B, T] (the rotary positions) default to cache_index + 0..T-1. With a `cache`
    (from `init_cache`) the new keys and values are written at `cache_index` and
    `(output, new_cache)` is returned."""
    base = params if _is_base(config) else params["model"]
    input_ids = token_ids(input_ids, "llama.apply")
    b, t = input_ids.shape
    _, heads, kv_heads, hd = _sizes(config)
    eps = _get(config, "rms_norm_eps")
    act = activation(_get(config, "hidden_act"))
    n_layer = len(base["layers"])
    drop = training and key is not None and _get(config, "attention_dropout") > 0
    keys = list(random.split(key, n_layer)) if drop else [None] * n_layer
    rate = _get(config, "attention_dropout") if drop else 0.0

    x = embed(base["embed_tokens"]["weight"], input_ids)
    if position_ids is None:
        position_ids = (fnp.arange(t, dtype=np.int32) + cache_index)[None]
    cos, sin = rotary_cos_sin(position_ids, rope_inv_freq(config), x.dtype)

    s = t if cache is None else cache[0]["k"].shape[2]
    q_pos = fnp.arange(t, dtype=np.int32) + cache_index
    pad = None
    if attention_mask is not None:
        pad = fnp.asarray(attention_mask).astype(bool)[:, None, None, :]
    masks = {}
    for w in set(_windows(config, n_layer)):
        m = causal_mask(q_pos, s, window=w)[None, None]
        masks[w] = m if pad is None else fnp.logical_and(m, pad)

    def proj(p, h):
        return linear(h, p["weight"], p.get("bias"))

    new_cache = []
    for i, (layer, window) in enumerate(zip(base["layers"], _windows(config, n_layer))):
        a = layer["self_attn"]
        h = rms_norm_fn(x, layer["input_layernorm"]["weight"], eps)
        q = _rotate(split_heads(proj(a["q_proj"], h), heads), cos, sin)
        k = _rotate(split_heads(proj(a["k_proj"], h), kv_heads), cos, sin)
        v = split_heads(proj(a["v_proj"], h), kv_heads)
        if cache is not None:
            c = kv_cache_update(cache[i], k, v, cache_index)
            new_cache.append(c)
            k, v = c["k"], c["v"]
        h = merge_heads(attention(q, k, v, mask=masks[window], scale=hd ** -0.5,
                                  dropout_rate=rate, key=keys[i], training=drop))
        x = x + proj(a["o_proj"], h)
        m = layer["mlp"]
        h = rms_norm_fn(x, layer["post_attention_layernorm"]["weight"], eps)
        x = x + proj(m["down_proj"], act(proj(m["gate_proj"], h)) * proj(m["up_proj"], h))
    x = rms_norm_fn(x, base["norm"]["weight"], eps)
    if not _is_base(config):
        head = params["lm_head"]["weight"] if "lm_head" in params else \
            base["embed_tokens"]["weight"]
        x = linear(x, head)
    return x if cache is None else (x, new_cache)
