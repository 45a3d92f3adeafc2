"""Pre-norm transformers: a block, an encoder, a classifier head on it, a decoder-only LM.

Parameter paths (for masks): `embed` (vocab, d), `pos` (max_len, d), `blocks/<i>/ln1/{scale,
bias}`, `blocks/<i>/attn/{wq,wk,wv,wo}`, `blocks/<i>/ln2`, `blocks/<i>/mlp/{w1,b1,w2,b2}`, `ln_f`,
`head/{w,b}`: the layout of the `finetune-head` benchmark.

The encoder, classifier and LM keep their architecture in `params["config"]`, a
`TransformerConfig` (a static pytree node: no leaf), so `apply(params, tokens)` needs no head
count: the weights are (d, d) whatever it is, and a count that happens to divide d_model would
otherwise silently run a different model. `init(key, config)` takes the config, or its fields as
arguments (`init(key, vocab_size, max_len, d_model, d_mlp, num_layers, num_heads=4)`); an
explicit `num_heads` at apply must agree with it. A lone block's head count is an argument of its
`apply` (4 by default, as in the benchmark).
"""

from __future__ import annotations

import numpy as np

from .. import initializers as inits
from .. import nn, random
from .. import numpy as fnp
from .config import TransformerConfig, config_of
from .layers import (
    dropout,
    layer_norm,
    make_layer,
    multi_head_attention,
)

__all__ = ["transformer_block", "transformer_encoder", "transformer_classifier",
           "transformer_lm"]


def _keys(key, n):
    ks = random.split(key, n)
    return [ks[i] for i in range(n)]


def _block_init(key, d_model, d_mlp, *, dtype=np.float32):
    """{"ln1", "attn": {wq, wk, wv, wo}, "ln2", "mlp": {w1, b1, w2, b2}}."""
    ka, k1, k2 = _keys(key, 3)
    w = inits.lecun_normal()
    return {"ln1": layer_norm.init(None, d_model, dtype=dtype),
            "attn": multi_head_attention.init(ka, d_model, dtype=dtype),
            "ln2": layer_norm.init(None, d_model, dtype=dtype),
            "mlp": {"w1": w(k1, (d_model, d_mlp), dtype), "b1": fnp.zeros((d_mlp,), dtype),
                    "w2": w(k2, (d_mlp, d_model), dtype), "b2": fnp.zeros((d_model,), dtype)}}


def _block_apply(params, x, num_heads=4, *, mask=None, causal=False, padding_mask=None,
                 dropout_rate=0.0, key=None, training=False, activation=nn.gelu):
    """x + attn(ln1(x)), then + mlp(ln2(x)) on x (..., T, d). Dropout (when `training`) acts on
    the attention weights and on each residual branch."""
    k_att, k1, k2 = _keys(key, 3) if training and dropout_rate > 0 else (None, None, None)
    h = layer_norm.apply(params["ln1"], x)
    h = multi_head_attention.apply(params["attn"], h, num_heads, mask=mask, causal=causal,
                   padding_mask=padding_mask, dropout_rate=dropout_rate, key=k_att,
                   training=training)
    x = x + dropout(k1, h, dropout_rate, training)
    m = params["mlp"]
    h = layer_norm.apply(params["ln2"], x)
    h = fnp.matmul(activation(fnp.matmul(h, m["w1"]) + m["b1"]), m["w2"]) + m["b2"]
    return x + dropout(k2, h, dropout_rate, training)


transformer_block = make_layer("transformer_block", _block_init, _block_apply)


_FIELDS = ("vocab_size", "max_len", "d_model", "d_mlp", "num_layers")


def _config(who, args, fields, positional=_FIELDS):
    """The TransformerConfig an init was called with: a config, or its fields (positionally in
    the order `positional`, or by name)."""
    if args and isinstance(args[0], TransformerConfig):
        if len(args) > 1 or fields:
            raise TypeError(f"{who}: pass either a TransformerConfig or its fields, not both "
                            f"(use config.replace(...) to change fields)")
        return args[0]
    if len(args) > len(positional):
        raise TypeError(f"{who}: at most {len(positional)} positional fields "
                        f"({', '.join(positional)}), got {len(args)}")
    both = sorted(set(positional[:len(args)]) & set(fields))
    if both:
        raise TypeError(f"{who}: {both} given both by position and by name")
    try:
        return TransformerConfig(**dict(zip(positional, args)), **fields)
    except TypeError as e:
        raise TypeError(f"{who}: {e}") from None


def _heads(params, num_heads, who):
    """The head count to run with: the params' config's (an explicit `num_heads` must agree),
    or `num_heads` (default 4) for a tree without a config."""
    cfg = config_of(params)
    if cfg is None:
        return 4 if num_heads is None else int(num_heads)
    if num_heads is not None and int(num_heads) != cfg.num_heads:
        raise ValueError(f"{who}: num_heads={num_heads}, but these params were made for "
                         f"num_heads={cfg.num_heads} (params['config']); drop the argument")
    return cfg.num_heads


def _encoder_params(key, cfg, dtype):
    ke, kp, *kb = _keys(key, 2 + cfg.num_layers)
    emb = inits.normal(0.02)
    return {"config": cfg,
            "embed": emb(ke, (cfg.vocab_size, cfg.d_model), dtype),
            "pos": emb(kp, (cfg.max_len, cfg.d_model), dtype),
            "blocks": [_block_init(k, cfg.d_model, cfg.d_mlp, dtype=dtype) for k in kb],
            "ln_f": layer_norm.init(None, cfg.d_model, dtype=dtype)}


def _encoder_init(key, *config, dtype=np.float32, **fields):
    """{"config", "embed", "pos", "blocks": [block, ...], "ln_f"}; embeddings normal with std
    0.02. `config`: a TransformerConfig, or its fields (vocab_size=256, max_len=64, d_model=128,
    d_mlp=512, num_layers=2 by position or name; num_heads=4 by name)."""
    return _encoder_params(key, _config("models.transformer_encoder.init", config, fields),
                           dtype)


def _encoder_apply(params, tokens, num_heads=None, *, causal=False, padding_mask=None,
                   dropout_rate=0.0, key=None, training=False):
    """Hidden states ln_f(blocks(embed[tokens] + pos)), shape tokens.shape + (d,). The head
    count is the config's (`num_heads`, if given, must agree)."""
    num_heads = _heads(params, num_heads, "models.transformer_encoder.apply")
    tokens = fnp.asarray(tokens)
    t = tokens.shape[-1]
    max_len = params["pos"].shape[0]
    if t > max_len:
        raise ValueError(f"transformer: sequence length {t} exceeds max_len {max_len}")
    x = fnp.take(params["embed"], tokens, axis=0) + params["pos"][:t]
    n = len(params["blocks"])
    keys = _keys(key, n) if training and dropout_rate > 0 else [None] * n
    for blk, k in zip(params["blocks"], keys):
        x = _block_apply(blk, x, num_heads, causal=causal, padding_mask=padding_mask,
                         dropout_rate=dropout_rate, key=k, training=training)
    return layer_norm.apply(params["ln_f"], x)


transformer_encoder = make_layer("transformer_encoder", _encoder_init, _encoder_apply)


def _classifier_init(key, *config, dtype=np.float32, **fields):
    """The encoder's params plus "head": {"w": (d, classes), "b"}. `config`: a TransformerConfig
    with num_classes, or its fields (vocab_size=256, max_len=64, d_model=128, d_mlp=512,
    num_layers=2, num_classes=10 by position or name; num_heads=4 by name). The defaults are the
    `finetune-head` benchmark's model (4 heads)."""
    if not (config and isinstance(config[0], TransformerConfig)) and len(config) < 6:
        fields.setdefault("num_classes", 10)
    cfg = _config("models.transformer_classifier.init", config, fields,
                  _FIELDS + ("num_classes",))
    if cfg.num_classes is None:
        raise ValueError("models.transformer_classifier.init: the config needs num_classes")
    k_enc, k_head = _keys(key, 2)
    params = _encoder_params(k_enc, cfg, dtype)
    params["head"] = {"w": inits.lecun_normal()(k_head, (cfg.d_model, cfg.num_classes), dtype),
                      "b": fnp.zeros((cfg.num_classes,), dtype)}
    return params


def _classifier_apply(params, tokens, num_heads=None, *, padding_mask=None, dropout_rate=0.0,
                      key=None, training=False):
    """Class logits (..., classes): the mean over (real, when `padding_mask` is given) positions
    of the encoder's hidden states, then the head."""
    h = _encoder_apply(params, tokens, num_heads, padding_mask=padding_mask,
                       dropout_rate=dropout_rate, key=key, training=training)
    if padding_mask is None:
        pooled = fnp.mean(h, axis=-2)
    else:
        w = fnp.asarray(padding_mask).astype(h.dtype)[..., None]
        pooled = fnp.sum(h * w, axis=-2) / fnp.maximum(fnp.sum(w, axis=-2), 1.0)
    return fnp.matmul(pooled, params["head"]["w"]) + params["head"]["b"]


transformer_classifier = make_layer("transformer_classifier", _classifier_init, _classifier_apply)


def _lm_init(key, *config, dtype=np.float32, **fields):
    """The encoder's params plus "head": {"w": (d, vocab)} (none when `tie_embeddings`: the
    logits then use embed^T). `config`: a TransformerConfig, or its fields (vocab_size=256,
    max_len=64, d_model=128, d_mlp=512, num_layers=2 by position or name; num_heads=4,
    tie_embeddings=False by name)."""
    cfg = _config("models.transformer_lm.init", config, fields)
    k_enc, k_head = _keys(key, 2)
    params = _encoder_params(k_enc, cfg, dtype)
    if not cfg.tie_embeddings:
        params["head"] = {"w": inits.lecun_normal()(k_head, (cfg.d_model, cfg.vocab_size),
                                                    dtype)}
    return params


def _lm_apply(params, tokens, num_heads=None, *, padding_mask=None, dropout_rate=0.0, key=None,
              training=False):
    """Next-token logits tokens.shape + (vocab,): causal self-attention, position t sees
    tokens 0..t."""
    h = _encoder_apply(params, tokens, num_heads, causal=True, padding_mask=padding_mask,
                       dropout_rate=dropout_rate, key=key, training=training)
    if "head" in params:
        return fnp.matmul(h, params["head"]["w"])
    return fnp.matmul(h, fnp.swapaxes(params["embed"], 0, 1))


transformer_lm = make_layer("transformer_lm", _lm_init, _lm_apply)
