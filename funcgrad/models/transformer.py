"""Pre-norm transformers: a block, an encoder, a classifier head on it, a decoder-only LM.

Parameter paths (for masks): `embed` (vocab, d), `pos` (max_len, d), `blocks/<i>/ln1/{scale,
bias}`, `blocks/<i>/attn/{wq,wk,wv,wo}`, `blocks/<i>/ln2`, `blocks/<i>/mlp/{w1,b1,w2,b2}`, `ln_f`,
`head/{w,b}`: the layout of the `finetune-head` benchmark. The number of heads is an argument of
`apply` (the weights are (d, d) whatever it is), 4 by default as in that benchmark.
"""

from __future__ import annotations

import numpy as np

from .. import nn, random
from .. import numpy as fnp
from . import initializers as inits
from .layers import (
    _layer_norm_apply,
    _layer_norm_init,
    _mha_apply,
    _mha_init,
    dropout,
    make_layer,
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
    return {"ln1": _layer_norm_init(None, d_model, dtype=dtype),
            "attn": _mha_init(ka, d_model, dtype=dtype),
            "ln2": _layer_norm_init(None, d_model, dtype=dtype),
            "mlp": {"w1": w(k1, (d_model, d_mlp), dtype), "b1": fnp.zeros((d_mlp,), dtype),
                    "w2": w(k2, (d_mlp, d_model), dtype), "b2": fnp.zeros((d_model,), dtype)}}


def _block_apply(params, x, num_heads=4, *, mask=None, causal=False, padding_mask=None,
                 dropout_rate=0.0, key=None, training=False, activation=nn.gelu):
    """x + attn(ln1(x)), then + mlp(ln2(x)) on x (..., T, d). Dropout (when `training`) acts on
    the attention weights and on each residual branch."""
    k_att, k1, k2 = _keys(key, 3) if training and dropout_rate > 0 else (None, None, None)
    h = _layer_norm_apply(params["ln1"], x)
    h = _mha_apply(params["attn"], h, num_heads, mask=mask, causal=causal,
                   padding_mask=padding_mask, dropout_rate=dropout_rate, key=k_att,
                   training=training)
    x = x + dropout(k1, h, dropout_rate, training)
    m = params["mlp"]
    h = _layer_norm_apply(params["ln2"], x)
    h = fnp.matmul(activation(fnp.matmul(h, m["w1"]) + m["b1"]), m["w2"]) + m["b2"]
    return x + dropout(k2, h, dropout_rate, training)


transformer_block = make_layer("transformer_block", _block_init, _block_apply)


def _encoder_init(key, vocab_size=256, max_len=64, d_model=128, d_mlp=512, num_layers=2, *,
                  dtype=np.float32):
    """{"embed", "pos", "blocks": [block, ...], "ln_f"}; embeddings normal with std 0.02."""
    ke, kp, *kb = _keys(key, 2 + num_layers)
    emb = inits.normal(0.02)
    return {"embed": emb(ke, (vocab_size, d_model), dtype),
            "pos": emb(kp, (max_len, d_model), dtype),
            "blocks": [_block_init(k, d_model, d_mlp, dtype=dtype) for k in kb],
            "ln_f": _layer_norm_init(None, d_model, dtype=dtype)}


def _encoder_apply(params, tokens, num_heads=4, *, causal=False, padding_mask=None,
                   dropout_rate=0.0, key=None, training=False):
    """Hidden states ln_f(blocks(embed[tokens] + pos)), shape tokens.shape + (d,)."""
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
    return _layer_norm_apply(params["ln_f"], x)


transformer_encoder = make_layer("transformer_encoder", _encoder_init, _encoder_apply)


def _classifier_init(key, vocab_size=256, max_len=64, d_model=128, d_mlp=512, num_layers=2,
                     num_classes=10, *, dtype=np.float32):
    """The encoder's params plus "head": {"w": (d, classes), "b"}. The defaults are the
    `finetune-head` benchmark's model (d 128, MLP 512, 2 blocks, vocab 256, seq 64, 10 classes;
    4 heads at apply)."""
    k_enc, k_head = _keys(key, 2)
    params = _encoder_init(k_enc, vocab_size, max_len, d_model, d_mlp, num_layers, dtype=dtype)
    params["head"] = {"w": inits.lecun_normal()(k_head, (d_model, num_classes), dtype),
                      "b": fnp.zeros((num_classes,), dtype)}
    return params


def _classifier_apply(params, tokens, num_heads=4, *, padding_mask=None, dropout_rate=0.0,
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


def _lm_init(key, vocab_size=256, max_len=64, d_model=128, d_mlp=512, num_layers=2, *,
             tie_embeddings=False, dtype=np.float32):
    """The encoder's params plus "head": {"w": (d, vocab)} (none when `tie_embeddings`: the
    logits then use embed^T)."""
    k_enc, k_head = _keys(key, 2)
    params = _encoder_init(k_enc, vocab_size, max_len, d_model, d_mlp, num_layers, dtype=dtype)
    if not tie_embeddings:
        params["head"] = {"w": inits.lecun_normal()(k_head, (d_model, vocab_size), dtype)}
    return params


def _lm_apply(params, tokens, num_heads=4, *, padding_mask=None, dropout_rate=0.0, key=None,
              training=False):
    """Next-token logits tokens.shape + (vocab,): causal self-attention, position t sees
    tokens 0..t."""
    h = _encoder_apply(params, tokens, num_heads, causal=True, padding_mask=padding_mask,
                       dropout_rate=dropout_rate, key=key, training=training)
    if "head" in params:
        return fnp.matmul(h, params["head"]["w"])
    return fnp.matmul(h, fnp.swapaxes(params["embed"], 0, 1))


transformer_lm = make_layer("transformer_lm", _lm_init, _lm_apply)
