"""GPT-2 (`GPT2LMHeadModel`, `GPT2Model`) as pure functions over a parameter tree that mirrors the
Hugging Face checkpoint: `transformer.h.0.attn.c_attn.weight` is
`params["transformer"]["h"][0]["attn"]["c_attn"]["weight"]`.

    cfg = gpt2.default_config(n_layer=2, n_embd=64, n_head=4, vocab_size=512)
    params = gpt2.init(fg.random.key(0), cfg)
    logits = gpt2.apply(params, input_ids, config=cfg)          # [B, T, vocab]

Learned positions, pre-norm blocks, fused `c_attn` (q, k, v in one [d, 3d] matmul), GPT-2's
`Conv1D` weights stored [in, out] (used as stored: x @ W), GELU with the tanh approximation
(`activation_function`), and an output layer tied to `wte` (no `lm_head` in the tree unless
`tie_word_embeddings` is false). Dropout (`embd_pdrop`, `attn_pdrop`, `resid_pdrop`) applies when
`training=True` with a `key`. Loading and saving folders: `funcgrad.models.pretrained`.
"""

from __future__ import annotations

import math

import numpy as np

from .. import numpy as fnp
from .. import random
from ..transforms.checkpoint import checkpoint
from .layers import (
    ParamMaker,
    activation,
    attention,
    causal_mask,
    dropout,
    embed,
    kv_cache_update,
    layer_norm_fn,
    linear,
    merge_heads,
    split_heads,
    token_ids,
)

__all__ = ["default_config", "init", "apply", "init_cache"]

ARCHITECTURES = {"gpt2": ("GPT2LMHeadModel", "GPT2Model")}
CAUSAL_LM = ("GPT2LMHeadModel",)
BASE_PREFIX = "transformer"
# Buffers some checkpoints carry (the causal mask of old PyTorch versions): not parameters.
IGNORED = (r"(^|\.)attn\.(masked_)?bias$",)
UNEXPECTED_OK = {}

_DEFAULTS = dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
                 n_inner=None, activation_function="gelu_new", resid_pdrop=0.1, embd_pdrop=0.1,
                 attn_pdrop=0.1, layer_norm_epsilon=1e-5, initializer_range=0.02,
                 scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False,
                 reorder_and_upcast_attn=False, tie_word_embeddings=True, bos_token_id=50256,
                 eos_token_id=50256)


def default_config(**overrides):
    """A complete `config.json` dict for GPT-2 (GPT-2 small's sizes, Hugging Face's defaults),
    updated with `overrides`."""
    cfg = dict(_DEFAULTS, model_type="gpt2", architectures=["GPT2LMHeadModel"])
    cfg.update(overrides)
    return cfg


def _get(config, name):
    v = config.get(name, _DEFAULTS.get(name))
    return _DEFAULTS[name] if v is None and name in ("n_embd", "n_layer", "n_head") else v


def architecture(config):
    return (config.get("architectures") or ["GPT2LMHeadModel"])[0]


def tied(config):
    """{tied name: the name it is tied to}: not stored in the tree."""
    if architecture(config) == "GPT2LMHeadModel" and _get(config, "tie_word_embeddings"):
        return {"lm_head.weight": "transformer.wte.weight"}
    return {}


def weight_layout(name):
    """How a 2-D tensor is used: "in_out" (GPT-2's Conv1D, x @ W), "out_in" (nn.Linear),
    "embedding", or None."""
    if name.endswith(("wte.weight", "wpe.weight")):
        return "embedding"
    if name == "lm_head.weight":
        return "out_in"
    if name.endswith(".weight") and (".attn." in name or ".mlp." in name):
        return "in_out"
    return None


def init(key, config, dtype=np.float32):
    """Random parameters (from a key or an int seed) as Hugging Face initializes GPT-2:
    normal(0, initializer_range) weights (c_proj scaled by 1 / sqrt(2 n_layer)), zero biases,
    unit norms."""
    d, n_layer = _get(config, "n_embd"), _get(config, "n_layer")
    inner = _get(config, "n_inner") or 4 * d
    std = _get(config, "initializer_range")
    proj_std = std / math.sqrt(2 * max(n_layer, 1))
    mk = ParamMaker(key, "gpt2.init")

    def ln():
        return {"weight": mk.ones((d,), dtype), "bias": mk.zeros((d,), dtype)}

    def conv(shape, w_std):
        return {"weight": mk.normal(w_std, shape, dtype), "bias": mk.zeros((shape[1],), dtype)}

    base = {"wte": {"weight": mk.normal(std, (_get(config, "vocab_size"), d), dtype)},
            "wpe": {"weight": mk.normal(std, (_get(config, "n_positions"), d), dtype)},
            "h": [{"ln_1": ln(),
                   "attn": {"c_attn": conv((d, 3 * d), std), "c_proj": conv((d, d), proj_std)},
                   "ln_2": ln(),
                   "mlp": {"c_fc": conv((d, inner), std), "c_proj": conv((inner, d), proj_std)}}
                  for _ in range(n_layer)],
            "ln_f": ln()}
    if architecture(config) == "GPT2Model":
        return base
    params = {"transformer": base}
    if not _get(config, "tie_word_embeddings"):
        params["lm_head"] = {"weight": mk.normal(std, (_get(config, "vocab_size"), d), dtype)}
    return params


def init_cache(config, batch, length, dtype=np.float32):
    """An empty key/value cache for `length` positions: one {"k", "v": [B, H, L, D]} per block."""
    h, d = _get(config, "n_head"), _get(config, "n_embd")
    shape = (batch, h, length, d // h)
    return [{"k": fnp.zeros(shape, dtype), "v": fnp.zeros(shape, dtype)}
            for _ in range(_get(config, "n_layer"))]


def apply(params, input_ids, *, config, attention_mask=None, position_ids=None, cache=None,
          cache_index=0, training=False, key=None, remat=False):
    """Logits [B, T, vocab] (`GPT2LMHeadModel`) or the last hidden state [B, T, d] (`GPT2Model`)
    for integer `input_ids` [B, T].

    attention_mask [B, S]: 1 at real tokens, 0 at padding (S = T, or the cache length with a
    cache); position_ids [B, T] default to cache_index + 0..T-1 (as Hugging Face, also with
    padding). With a `cache` (from `init_cache`), the new keys and values are written at
    `cache_index` and `(output, new_cache)` is returned. `training=True` with a `key` turns on
    dropout. `remat=True` recomputes each block's activations in the backward pass instead of
    storing them (`fg.checkpoint` per block, as transformers' `gradient_checkpointing_enable`):
    a backward pass then holds one block's activations at a time."""
    arch = architecture(config)
    base = params if arch == "GPT2Model" else params["transformer"]
    input_ids = token_ids(input_ids, "gpt2.apply")
    b, t = input_ids.shape
    n_head, eps = _get(config, "n_head"), _get(config, "layer_norm_epsilon")
    act = activation(_get(config, "activation_function"))
    drop = training and key is not None
    n_layer = len(base["h"])
    keys = list(random.split(key, 1 + 3 * n_layer)) if drop else [None] * (1 + 3 * n_layer)
    rate = (lambda name: _get(config, name)) if drop else (lambda name: 0.0)

    n_pos = base["wpe"]["weight"].shape[0]
    if position_ids is None:
        if (cache[0]["k"].shape[2] if cache is not None else t) > n_pos:
            raise ValueError(f"gpt2: {t} tokens (or a cache of that length) exceed the model's "
                             f"{n_pos} positions (n_positions)")
        position_ids = (fnp.arange(t, dtype=np.int32) + cache_index)[None]
    x = embed(base["wte"]["weight"], input_ids) + \
        embed(base["wpe"]["weight"], position_ids)
    x = dropout(keys[0], x, rate("embd_pdrop"), drop)

    s = t if cache is None else cache[0]["k"].shape[2]
    q_pos = fnp.arange(t, dtype=np.int32) + cache_index
    mask = causal_mask(q_pos, s)[None, None]                      # [1, 1, T, S]
    if attention_mask is not None:
        pad = fnp.asarray(attention_mask).astype(bool)[:, None, None, :]
        mask = fnp.logical_and(mask, pad)
    new_cache = []
    for i, blk in enumerate(base["h"]):
        k_attn, k_res1, k_res2 = keys[1 + 3 * i:4 + 3 * i]
        scale = 1.0 / math.sqrt(x.shape[-1] // n_head) if _get(config, "scale_attn_weights") \
            else 1.0
        if _get(config, "scale_attn_by_inverse_layer_idx"):
            scale /= i + 1

        def block(x, blk, mask, k_attn, k_res1, k_res2, i=i, scale=scale):
            return _block(x, blk, mask, k_attn, k_res1, k_res2, i, scale, n_head, eps, act, rate,
                          drop, cache, cache_index, new_cache)

        if remat and cache is None:
            x = checkpoint(block)(x, blk, mask, k_attn, k_res1, k_res2)
        else:
            x = block(x, blk, mask, k_attn, k_res1, k_res2)
    x = layer_norm_fn(x, base["ln_f"]["weight"], base["ln_f"]["bias"], eps)
    if arch == "GPT2LMHeadModel":
        head = params["lm_head"]["weight"] if "lm_head" in params else base["wte"]["weight"]
        x = linear(x, head)
    return x if cache is None else (x, new_cache)


def _block(x, blk, mask, k_attn, k_res1, k_res2, i, scale, n_head, eps, act, rate, drop, cache,
           cache_index, new_cache):
    """One pre-norm transformer block (appends its keys and values to `new_cache`)."""
    h = layer_norm_fn(x, blk["ln_1"]["weight"], blk["ln_1"]["bias"], eps)
    a = blk["attn"]
    qkv = linear(h, a["c_attn"]["weight"], a["c_attn"]["bias"], layout="in_out")
    q, k, v = (split_heads(z, n_head) for z in fnp.split(qkv, 3, axis=-1))
    if cache is not None:
        c = kv_cache_update(cache[i], k, v, cache_index)
        new_cache.append(c)
        k, v = c["k"], c["v"]
    h = merge_heads(attention(q, k, v, mask=mask, scale=scale,
                              dropout_rate=rate("attn_pdrop"), key=k_attn, training=drop))
    h = linear(h, a["c_proj"]["weight"], a["c_proj"]["bias"], layout="in_out")
    x = x + dropout(k_res1, h, rate("resid_pdrop"), drop)
    m = blk["mlp"]
    h = layer_norm_fn(x, blk["ln_2"]["weight"], blk["ln_2"]["bias"], eps)
    h = act(linear(h, m["c_fc"]["weight"], m["c_fc"]["bias"], layout="in_out"))
    h = linear(h, m["c_proj"]["weight"], m["c_proj"]["bias"], layout="in_out")
    x = x + dropout(k_res2, h, rate("resid_pdrop"), drop)
    return x
