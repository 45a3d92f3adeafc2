"""Hugging Face checkpoint folders in and out, text generation, tokenizers.

    model = pretrained.load("path/to/gpt2")          # config.json + model.safetensors (or shards)
    logits = model.apply(model.params, input_ids, attention_mask=mask)
    out = pretrained.generate(model, model.params, input_ids, 20)    # greedy, KV cache
    pretrained.save("path/to/copy", model, params)   # transformers' from_pretrained reads it
    tok = pretrained.load_tokenizer("path/to/gpt2")  # tokenizer.json, via `tokenizers`

A folder holds `config.json` (its `model_type` picks the family, `architectures[0]` the head)
and the weights as safetensors: `model.safetensors`, or shards listed in
`model.safetensors.index.json`. PyTorch pickles (`pytorch_model.bin`) are never read.

The parameter tree mirrors the tensor names, split at dots, with list indices for layer
numbers: `transformer.h.0.attn.c_attn.weight` is
`params["transformer"]["h"][0]["attn"]["c_attn"]["weight"]`, so
`masks.mask_from_paths(params, include=["transformer/h/11/**"])` and PEFT's `target_modules`
mean what they mean for the checkpoint. A tied output layer (GPT-2's `lm_head`, BERT's decoder)
is not duplicated in the tree.

Dtypes: `dtype=None` keeps float32 and float64 tensors as stored and loads 16-bit floats
(float16, bfloat16) as float32, which NumPy computes fastest; the model remembers the stored
dtype and `save` writes that dtype again. `dtype="bfloat16"` (or float16, float32, float64)
casts every float tensor on load: 16-bit weights halve the memory, and their matmuls run in
float32 tile by tile (see funcgrad.mixed_precision).

Quantized loading (QLoRA): `load(path, quantize="nf4")` (or "int8") quantizes the weights of
the blocks' linear layers (or those `mask` selects) one tensor at a time as it reads them, so
a float copy of the whole model is never in memory (`funcgrad.quant`); LoRA adapters then train
in float32 on top (`lora.init(key, model.params, mask)`), and `save` (after `lora.merge`)
writes a float checkpoint.

Families: one module each (`gpt2`, `bert`, `llama` with its Mistral and Qwen2 variants),
holding its checkpoint names beside its math: `ARCHITECTURES` ({model_type: Hugging Face class
names}), `CAUSAL_LM` (the classes `generate` drives), `BASE_PREFIX` (the base model's attribute,
"transformer" / "bert" / "model"), `IGNORED` (buffers some files carry), `UNEXPECTED_OK` (other
heads' tensors a class skips), optional `RENAMES` (legacy names), and the functions
`default_config`, `architecture`, `tied`, `weight_layout`, `init(key, config, dtype)` and
`apply(params, input_ids, *, config, ...)` (causal LMs also `init_cache`). Adding a family is
one such file and one line in `model.FAMILIES`. Every weight reaches a matmul through
`layers.linear` (embedding tables through `layers.merged`), the one place where adapted,
quantized or lower-precision weights are handled.

One concept a module, their public names re-exported here: `model` (the family registry,
`Model`, `from_config`, `supported`), `checkpoint` (`load`, `from_tensors`, `save`),
`generation` (`generate`) and `tokenizer` (`Tokenizer`, `load_tokenizer`).
"""

from ...io import CheckpointError
from .checkpoint import CONFIG, INDEX, WEIGHTS, from_tensors, load, save  # noqa: F401 (file names)
from .generation import generate
from .model import Model, from_config, supported
from .tokenizer import Tokenizer, load_tokenizer

__all__ = ["Model", "load", "save", "from_config", "from_tensors", "generate", "load_tokenizer",
           "Tokenizer", "CheckpointError", "supported"]
