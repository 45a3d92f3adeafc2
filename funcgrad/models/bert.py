"""BERT (`BertModel`, `BertForSequenceClassification`, `BertForMaskedLM`, `BertForPreTraining`)
as pure functions over a parameter tree that mirrors the Hugging Face checkpoint:
`bert.encoder.layer.0.attention.self.query.weight` is
`params["bert"]["encoder"]["layer"][0]["attention"]["self"]["query"]["weight"]`.

    cfg = bert.default_config(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                              architectures=["BertForSequenceClassification"], num_labels=3)
    params = bert.init(fg.random.key(0), cfg)
    logits = bert.apply(params, input_ids, config=cfg, attention_mask=mask)   # [B, 3]

Word, position and token-type embeddings, post-norm encoder layers with a padding mask
(`attention_mask`: 1 at real tokens), the tanh pooler on the first token, and the heads: a
classifier on the pooled output, the masked-LM head (dense, activation, LayerNorm, then the word
embeddings transposed plus `cls.predictions.bias`: the decoder is tied and not in the tree).
`apply` returns what the Hugging Face class returns first: the last hidden state for
`BertModel`, the logits otherwise. Dropout (`hidden_dropout_prob`,
`attention_probs_dropout_prob`, `classifier_dropout`) applies when `training=True` with a key.
"""

from __future__ import annotations

import numpy as np

from .. import numpy as fnp
from .. import random
from .layers import (
    ParamMaker,
    activation,
    attention,
    dropout,
    embed,
    layer_norm_fn,
    linear,
    merge_heads,
    split_heads,
    token_ids,
)

__all__ = ["default_config", "init", "apply"]

ARCHITECTURES = {"bert": ("BertModel", "BertForSequenceClassification", "BertForMaskedLM",
                            "BertForPreTraining")}
CAUSAL_LM = ()
BASE_PREFIX = "bert"
IGNORED = (r"(^|\.)embeddings\.position_ids$",)
RENAMES = ((r"LayerNorm\.gamma$", "LayerNorm.weight"), (r"LayerNorm\.beta$", "LayerNorm.bias"))
# Tensors of other heads that checkpoints often carry and a model without them ignores (as
# transformers does): the pooler and the next-sentence head for the masked-LM model.
UNEXPECTED_OK = {"BertForMaskedLM": (r"^bert\.pooler\.", r"^cls\.seq_relationship\.")}

_DEFAULTS = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, hidden_act="gelu", hidden_dropout_prob=0.1,
                 attention_probs_dropout_prob=0.1, max_position_embeddings=512,
                 type_vocab_size=2, initializer_range=0.02, layer_norm_eps=1e-12,
                 pad_token_id=0, position_embedding_type="absolute", classifier_dropout=None,
                 tie_word_embeddings=True)


def default_config(**overrides):
    """A complete `config.json` dict for BERT (bert-base's sizes, Hugging Face's defaults),
    updated with `overrides` (`num_labels=` sets the classifier's size)."""
    cfg = dict(_DEFAULTS, model_type="bert", architectures=["BertModel"])
    cfg.update(overrides)
    n = cfg.pop("num_labels", None)
    if n is not None:
        cfg["id2label"] = {str(i): f"LABEL_{i}" for i in range(n)}
        cfg["label2id"] = {f"LABEL_{i}": i for i in range(n)}
    return cfg


def _get(config, name):
    v = config.get(name)
    return _DEFAULTS.get(name) if v is None else v


def architecture(config):
    return (config.get("architectures") or ["BertModel"])[0]


def num_labels(config):
    """Classifier outputs: `num_labels`, else the size of `id2label`, else 2 (as transformers)."""
    if config.get("num_labels") is not None:
        return int(config["num_labels"])
    return len(config["id2label"]) if config.get("id2label") else 2


def tied(config):
    if architecture(config) in ("BertForMaskedLM", "BertForPreTraining"):
        return {"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
                "cls.predictions.decoder.bias": "cls.predictions.bias"}
    return {}


def weight_layout(name):
    if name.endswith("_embeddings.weight"):
        return "embedding"
    if name.endswith(".weight") and "LayerNorm" not in name:
        return "out_in"
    return None


def init(key, config, dtype=np.float32):
    """Random parameters (from a key or an int seed) as Hugging Face initializes BERT:
    normal(0, initializer_range) weights, zero biases, unit norms."""
    if _get(config, "position_embedding_type") != "absolute":
        raise ValueError("bert: only position_embedding_type='absolute' is supported, got "
                         f"{config.get('position_embedding_type')!r}")
    arch = architecture(config)
    d, n_layer = _get(config, "hidden_size"), _get(config, "num_hidden_layers")
    inner = _get(config, "intermediate_size")
    std = _get(config, "initializer_range")
    mk = ParamMaker(key, "bert.init")

    def ln():
        return {"weight": mk.ones((d,), dtype), "bias": mk.zeros((d,), dtype)}

    def dense(n_in, n_out):
        return {"weight": mk.normal(std, (n_out, n_in), dtype), "bias": mk.zeros((n_out,), dtype)}

    base = {"embeddings": {
        "word_embeddings": {"weight": mk.normal(std, (_get(config, "vocab_size"), d), dtype)},
        "position_embeddings": {"weight": mk.normal(
            std, (_get(config, "max_position_embeddings"), d), dtype)},
        "token_type_embeddings": {"weight": mk.normal(
            std, (_get(config, "type_vocab_size"), d), dtype)},
        "LayerNorm": ln()},
        "encoder": {"layer": [
            {"attention": {"self": {"query": dense(d, d), "key": dense(d, d),
                                    "value": dense(d, d)},
                           "output": {"dense": dense(d, d), "LayerNorm": ln()}},
             "intermediate": {"dense": dense(d, inner)},
             "output": {"dense": dense(inner, d), "LayerNorm": ln()}}
            for _ in range(n_layer)]}}
    if arch != "BertForMaskedLM":
        base["pooler"] = {"dense": dense(d, d)}
    if arch == "BertModel":
        return base
    params = {"bert": base}
    if arch == "BertForSequenceClassification":
        params["classifier"] = dense(d, num_labels(config))
    else:  # masked LM (and pre-training) head
        params["cls"] = {"predictions": {
            "transform": {"dense": dense(d, d), "LayerNorm": ln()},
            "bias": mk.zeros((_get(config, "vocab_size"),), dtype)}}
        if arch == "BertForPreTraining":
            params["cls"]["seq_relationship"] = dense(d, 2)
    return params


def apply(params, input_ids, *, config, attention_mask=None, token_type_ids=None,
          position_ids=None, training=False, key=None):
    """The last hidden state [B, T, d] (`BertModel`), class logits [B, num_labels]
    (`BertForSequenceClassification`) or token logits [B, T, vocab] (`BertForMaskedLM`,
    `BertForPreTraining`) for integer `input_ids` [B, T]. attention_mask [B, T]: 1 at real
    tokens; token_type_ids default to 0, position_ids to 0..T-1."""
    arch = architecture(config)
    base = params if arch == "BertModel" else params["bert"]
    input_ids = token_ids(input_ids, "bert.apply")
    b, t = input_ids.shape
    heads, eps = _get(config, "num_attention_heads"), _get(config, "layer_norm_eps")
    act = activation(_get(config, "hidden_act"))
    drop = training and key is not None
    n_layer = len(base["encoder"]["layer"])
    keys = list(random.split(key, 2 + 3 * n_layer)) if drop else [None] * (2 + 3 * n_layer)
    hidden_p = _get(config, "hidden_dropout_prob") if drop else 0.0
    attn_p = _get(config, "attention_probs_dropout_prob") if drop else 0.0

    emb = base["embeddings"]
    n_pos = emb["position_embeddings"]["weight"].shape[0]
    if t > n_pos:
        raise ValueError(f"bert: {t} tokens exceed the model's {n_pos} positions "
                         "(max_position_embeddings); truncate the input")
    if position_ids is None:
        position_ids = fnp.arange(t, dtype=np.int32)[None]
    if token_type_ids is None:
        token_type_ids = fnp.zeros((1, t), np.int32)
    x = (embed(emb["word_embeddings"]["weight"], input_ids)
         + embed(emb["token_type_embeddings"]["weight"], token_type_ids)
         + embed(emb["position_embeddings"]["weight"], position_ids))
    x = layer_norm_fn(x, emb["LayerNorm"]["weight"], emb["LayerNorm"]["bias"], eps)
    x = dropout(keys[0], x, hidden_p, drop)
    mask = None
    if attention_mask is not None:
        mask = fnp.asarray(attention_mask).astype(bool)[:, None, None, :]

    def dense(p, h):
        return linear(h, p["weight"], p["bias"])

    for i, layer in enumerate(base["encoder"]["layer"]):
        k_attn, k1, k2 = keys[1 + 3 * i:4 + 3 * i]
        a = layer["attention"]
        q, k, v = (split_heads(dense(a["self"][n], x), heads) for n in ("query", "key", "value"))
        h = merge_heads(attention(q, k, v, mask=mask, dropout_rate=attn_p, key=k_attn,
                                  training=drop))
        h = dropout(k1, dense(a["output"]["dense"], h), hidden_p, drop)
        ln = a["output"]["LayerNorm"]
        x = layer_norm_fn(h + x, ln["weight"], ln["bias"], eps)
        h = act(dense(layer["intermediate"]["dense"], x))
        h = dropout(k2, dense(layer["output"]["dense"], h), hidden_p, drop)
        ln = layer["output"]["LayerNorm"]
        x = layer_norm_fn(h + x, ln["weight"], ln["bias"], eps)
    if arch == "BertModel":
        return x
    if arch == "BertForSequenceClassification":
        pooled = fnp.tanh(dense(base["pooler"]["dense"], x[:, 0]))
        p = _get(config, "classifier_dropout")
        pooled = dropout(keys[-1], pooled, (hidden_p if p is None else p) if drop else 0.0, drop)
        return dense(params["classifier"], pooled)
    pred = params["cls"]["predictions"]
    h = act(dense(pred["transform"]["dense"], x))
    ln = pred["transform"]["LayerNorm"]
    h = layer_norm_fn(h, ln["weight"], ln["bias"], eps)
    return linear(h, emb["word_embeddings"]["weight"], pred["bias"])
