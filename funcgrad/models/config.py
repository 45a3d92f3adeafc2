"""Model configurations that travel with the params.

`transformer_lm.init(key, config)` (and the encoder and classifier) puts the config into the
params tree as `params["config"]`: a frozen dataclass registered as a *static* pytree node
(`tree_util.register_static`), so it is no leaf. grad, optimizers, masks, LoRA, jit and io see
only the arrays, while `apply(params, tokens)` reads the head count (and the rest) from the
config instead of an argument, so a saved model carries what is needed to run it. It is
registered with `io.register_type` as "funcgrad.models.TransformerConfig": `io.save` stores it
as that name and its fields, and `io.load` / `io.load_train_state` rebuild it without a `like=`
template and without loading code.
"""

from __future__ import annotations

import dataclasses

from .. import io, tree_util

__all__ = ["TransformerConfig", "config_of"]


@io.register_type(name="funcgrad.models.TransformerConfig")
@tree_util.register_static
@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """The architecture of funcgrad's pre-norm transformers (encoder, classifier, LM).

    vocab_size, max_len (positions), d_model, d_mlp (hidden size of each block's MLP),
    num_layers, num_heads (d_model must divide evenly), num_classes (the classifier's head;
    None otherwise), tie_embeddings (the LM's logits use embed^T instead of a head)."""

    vocab_size: int = 256
    max_len: int = 64
    d_model: int = 128
    d_mlp: int = 512
    num_layers: int = 2
    num_heads: int = 4
    num_classes: int | None = None
    tie_embeddings: bool = False

    def __post_init__(self):
        for f in ("vocab_size", "max_len", "d_model", "d_mlp", "num_layers", "num_heads"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"TransformerConfig: {f} must be a positive int, got {v!r}")
        if self.num_classes is not None and (isinstance(self.num_classes, bool) or not
                                             isinstance(self.num_classes, int) or
                                             self.num_classes < 1):
            raise ValueError(f"TransformerConfig: num_classes must be a positive int or None, "
                             f"got {self.num_classes!r}")
        if self.d_model % self.num_heads:
            raise ValueError(f"TransformerConfig: d_model={self.d_model} is not divisible by "
                             f"num_heads={self.num_heads}")

    def to_dict(self) -> dict:
        """The fields as a JSON-able dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, fields: dict) -> TransformerConfig:
        """The config with these fields (unknown names are an error, missing ones default)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"TransformerConfig.from_dict: unknown fields {unknown}; known: "
                             f"{sorted(known)}")
        return cls(**fields)

    def replace(self, **changes) -> TransformerConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def config_of(params):
    """The config stored in a params tree (`params["config"]`), or None."""
    return params.get("config") if isinstance(params, dict) else None
