"""The model object of a Hugging Face checkpoint: the family registry, `Model`, `from_config`.

`FAMILIES` is the registry of family modules (one line per family); `family_of(config, where)`
picks a config's family by its `model_type`. `as_dtype`, `is_float`, `expected_tensors`,
`eval_init` and `placed` are shared with the checkpoint, generation and tokenizer modules.
"""

from __future__ import annotations

import numpy as np

from ... import tree_util as tu
from ...devices import default_backend, device_put
from ...io import CheckpointError
from .. import bert, gpt2, llama
from ..layers import ParamMaker

FAMILIES = (gpt2, bert, llama)   # the registry: one line per family module

_DTYPE_NAMES = {"float32": np.float32, "float16": np.float16, "float64": np.float64,
                "bfloat16": "bfloat16"}


def supported():
    """{model_type: [architectures]} of every registered family."""
    return {t: list(archs) for f in FAMILIES for t, archs in f.ARCHITECTURES.items()}


def family_of(config, where):
    """The family module of a `config.json` dict (by its `model_type`); `where` names it in
    the error."""
    mt = config.get("model_type")
    for fam in FAMILIES:
        if mt in fam.ARCHITECTURES:
            return fam
    raise CheckpointError(f"{where}: model_type {mt!r} is not supported; supported model types: "
                          f"{sorted(supported())}")


def _bfloat16():
    import ml_dtypes
    return np.dtype(ml_dtypes.bfloat16)


def as_dtype(dtype):
    if isinstance(dtype, str):
        dtype = _DTYPE_NAMES.get(dtype, dtype)
        if dtype == "bfloat16":
            return _bfloat16()
    return np.dtype(dtype)


def is_float(dt):
    dt = np.dtype(dt)
    return dt.kind == "f" or dt.name == "bfloat16"


# ---------------------------------------------------------------------------------------------
# The model object


class Model:
    """A checkpoint's model as funcgrad functions.

    `config`: the `config.json` contents (dict); `family`: "gpt2", "bert" or "llama";
    `architecture`: the Hugging Face class it computes (`config["architectures"][0]`);
    `params`: the parameter tree; `apply(params, input_ids, *, attention_mask=None, **kw)`:
    what that class returns first (logits for LM and classification heads, the last hidden
    state for a bare model), a pure function of `params` (jit, grad, vmap and `lora.apply` work
    on it; family keywords such as `token_type_ids`, `position_ids`, `training=True, key=k`
    pass through). `save_dtype`: the dtype `save` writes floats in by default.
    `family_module`: the family's module (`models.gpt2`, ...); `generate_fns`: the jitted
    prefill and decode step of each sampling setting `generate` has used, {(temperature,
    top_k, top_p): (prefill, step)}."""

    def __init__(self, config, params=None, save_dtype=None):
        self.config = dict(config)
        self.family_module = family_of(self.config, "Model")
        self.family = self.family_module.__name__.rsplit(".", 1)[-1]
        self.architecture = self.family_module.architecture(self.config)
        archs = self.family_module.ARCHITECTURES[self.config["model_type"]]
        if self.architecture not in archs:
            raise CheckpointError(
                f"Model: architecture {self.architecture!r} is not supported for model_type "
                f"{self.config['model_type']!r}; supported: {list(archs)}")
        self.params = params
        self.save_dtype = None if save_dtype is None else as_dtype(save_dtype)
        self.generate_fns = {}
        family, cfg = self.family_module, self.config

        def apply(params, input_ids, *, attention_mask=None, **kwargs):
            return family.apply(params, input_ids, config=cfg, attention_mask=attention_mask,
                                **kwargs)

        apply.__doc__ = family.apply.__doc__
        apply.__name__ = f"{self.family}.apply"
        # `lora.apply(model.apply)` hands over lora.AdaptedWeight leaves: the adapters'
        # low-rank products are computed beside the frozen weights (x A^T B^T), not merged.
        apply.computes_adapters = True
        self.apply = apply

    def __repr__(self):
        n = sum(int(np.prod(np.shape(x))) for x in tu.tree_leaves(self.params)) \
            if self.params is not None else 0
        return (f"Model(family={self.family!r}, architecture={self.architecture!r}, "
                f"parameters={n:,})")

    @property
    def is_causal_lm(self):
        return self.architecture in self.family_module.CAUSAL_LM

    def weight_layout(self, name):
        """How the tensor `name` (dotted, or a `/` path) is used: "out_in" (nn.Linear),
        "in_out" (GPT-2's Conv1D), "embedding", or None (not a matrix)."""
        return self.family_module.weight_layout(name.replace("/", "."))

    def tensor_shapes(self):
        """{dotted name: (shape, dtype)} of the tensors the architecture stores (tied ones
        excluded), from the config alone."""
        return expected_tensors(self.family_module, self.config)


def expected_tensors(family, config, template=None):
    """{dotted name: (shape, dtype)} that `family.init` makes for `config`."""
    template = eval_init(family, config) if template is None else template
    return {tu.path_to_str(p, "."): (tuple(s.shape), np.dtype(s.dtype))
            for p, s in tu.tree_flatten_with_path(template)[0]}


def eval_init(family, config, dtype=np.float32):
    """The parameter tree `family.init` makes for `config`, as `ParamSpec`s (nothing drawn)."""
    return family.init(ParamMaker.SHAPES, config, dtype)


def from_config(config, key, dtype=np.float32):
    """A model with fresh random parameters (the family's Hugging Face initialization) for a
    `config.json` dict, e.g. `gpt2.default_config(n_layer=2, n_embd=64, n_head=4)`."""
    model = Model(config)
    model.params = placed(model.family_module.init(key, model.config, dtype=np.dtype(dtype)))
    model.config["dtype"] = np.dtype(dtype).name
    return model


def placed(params):
    return device_put(params) if default_backend() != "cpu" else params

