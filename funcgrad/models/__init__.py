"""funcgrad.models: ready layers as pairs of pure functions, `init(key, ...) -> params` (a dict
pytree of arrays) and `apply(params, x, ...)`; every layer is a `Layer(init, apply)`:

    import funcgrad as fg
    from funcgrad import models
    params = models.dense.init(fg.random.key(0), 3, 4)     # {"w": (3, 4), "b": (4,)}
    y = models.dense.apply(params, x)                       # or models.dense(params, x)

Every `init` takes a key or an int seed (`fg.random.as_key`). Hyperparameters that are not
arrays (strides, dropout rate, training) are arguments of `apply`; the transformers keep their
architecture (heads included) in `params["config"]`, a `TransformerConfig` that is a static
pytree node (no leaf). `batch_norm.init` returns (params, state) and its apply returns
(y, new_state).
Stateless layers are plain functions (`max_pool`, `avg_pool`, `dropout(key, x, rate, training)`).
Initializers are in `models.initializers`; losses and metrics in `funcgrad.losses` (also
`models.losses`). Pretrained Hugging Face families are `models.gpt2`, `models.bert` and
`models.llama`, over parameter trees named as their checkpoints; `models.pretrained` loads and
saves their folders and generates text. Written with the public API only.
"""

from .. import initializers, losses
from .config import TransformerConfig, config_of
from .layers import (
    Layer,
    attention,
    attention_mask,
    avg_pool,
    batch_norm,
    conv2d,
    dense,
    dropout,
    embedding,
    layer_norm,
    linear,
    max_pool,
    mlp,
    multi_head_attention,
    rms_norm,
)
from .transformer import (
    transformer_block,
    transformer_classifier,
    transformer_encoder,
    transformer_lm,
)

# isort: split
from . import bert, gpt2, llama, pretrained  # noqa: E402  (Hugging Face model families)

__all__ = [
    "Layer", "TransformerConfig", "config_of", "initializers", "losses", "dense", "mlp",
    "conv2d", "max_pool", "avg_pool",
    "layer_norm", "rms_norm", "batch_norm", "embedding", "dropout", "multi_head_attention",
    "attention_mask", "transformer_block", "transformer_encoder", "transformer_classifier",
    "transformer_lm", "linear", "attention", "gpt2", "bert", "llama", "pretrained",
]
