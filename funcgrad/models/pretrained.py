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
one such file and one line in `_FAMILIES`. Every weight reaches a matmul through
`layers.linear` (embedding tables through `layers.merged`), the one place where adapted,
quantized or lower-precision weights are handled.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np

from .. import io, quant, random
from .. import numpy as fnp
from .. import tree_util as tu
from ..config import trim_host_memory
from ..devices import default_backend, device_put
from ..io import CheckpointError
from ..transforms.jit import jit
from . import bert, gpt2, llama
from .layers import ParamMaker

__all__ = ["Model", "load", "save", "from_config", "from_tensors", "generate", "load_tokenizer",
           "Tokenizer", "CheckpointError", "supported"]

_FAMILIES = (gpt2, bert, llama)   # the registry: one line per family module

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
_SHARD = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")
_DTYPE_NAMES = {"float32": np.float32, "float16": np.float16, "float64": np.float64,
                "bfloat16": "bfloat16"}


def supported():
    """{model_type: [architectures]} of every registered family."""
    return {t: list(archs) for f in _FAMILIES for t, archs in f.ARCHITECTURES.items()}


def _family(config, where):
    mt = config.get("model_type")
    for fam in _FAMILIES:
        if mt in fam.ARCHITECTURES:
            return fam
    raise CheckpointError(f"{where}: model_type {mt!r} is not supported; supported model types: "
                          f"{sorted(supported())}")


def _bfloat16():
    import ml_dtypes
    return np.dtype(ml_dtypes.bfloat16)


def _as_dtype(dtype):
    if isinstance(dtype, str):
        dtype = _DTYPE_NAMES.get(dtype, dtype)
        if dtype == "bfloat16":
            return _bfloat16()
    return np.dtype(dtype)


def _is_float(dt):
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
    pass through). `save_dtype`: the dtype `save` writes floats in by default."""

    def __init__(self, config, params=None, save_dtype=None):
        self.config = dict(config)
        self._family = _family(self.config, "Model")
        self.family = self._family.__name__.rsplit(".", 1)[-1]
        self.architecture = self._family.architecture(self.config)
        archs = self._family.ARCHITECTURES[self.config["model_type"]]
        if self.architecture not in archs:
            raise CheckpointError(
                f"Model: architecture {self.architecture!r} is not supported for model_type "
                f"{self.config['model_type']!r}; supported: {list(archs)}")
        self.params = params
        self.save_dtype = None if save_dtype is None else _as_dtype(save_dtype)
        self._generate_fns = {}
        family, cfg = self._family, self.config

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
        return self.architecture in self._family.CAUSAL_LM

    def weight_layout(self, name):
        """How the tensor `name` (dotted, or a `/` path) is used: "out_in" (nn.Linear),
        "in_out" (GPT-2's Conv1D), "embedding", or None (not a matrix)."""
        return self._family.weight_layout(name.replace("/", "."))

    def tensor_shapes(self):
        """{dotted name: (shape, dtype)} of the tensors the architecture stores (tied ones
        excluded), from the config alone."""
        return _expected(self._family, self.config)


def _expected(family, config, template=None):
    """{dotted name: (shape, dtype)} that `family.init` makes for `config`."""
    template = _eval_init(family, config) if template is None else template
    return {tu.path_to_str(p, "."): (tuple(s.shape), np.dtype(s.dtype))
            for p, s in tu.tree_flatten_with_path(template)[0]}


def _eval_init(family, config, dtype=np.float32):
    """The parameter tree `family.init` makes for `config`, as `ParamSpec`s (nothing drawn)."""
    return family.init(ParamMaker.SHAPES, config, dtype)


def from_config(config, key, dtype=np.float32):
    """A model with fresh random parameters (the family's Hugging Face initialization) for a
    `config.json` dict, e.g. `gpt2.default_config(n_layer=2, n_embd=64, n_head=4)`."""
    model = Model(config)
    model.params = _placed(model._family.init(key, model.config, dtype=np.dtype(dtype)))
    model.config["dtype"] = np.dtype(dtype).name
    return model


def _placed(params):
    return device_put(params) if default_backend() != "cpu" else params


# ---------------------------------------------------------------------------------------------
# Loading


def _read_json(path, what):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing ({what})") from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not readable JSON ({what}): {e}") from None


def _weight_files(folder):
    """The safetensors files of a checkpoint folder: [model.safetensors] or the index's shards."""
    index = os.path.join(folder, INDEX)
    if os.path.exists(os.path.join(folder, WEIGHTS)):
        return [os.path.join(folder, WEIGHTS)], None
    if os.path.exists(index):
        weight_map = _read_json(index, "the shard index").get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index}: no 'weight_map' of tensor names to shard files")
        files = []
        for name in weight_map.values():
            if os.path.basename(name) != name:
                raise CheckpointError(f"{index}: shard {name!r} is not a file in the folder")
            if name not in files:
                files.append(name)
        return [os.path.join(folder, f) for f in files], weight_map
    pickles = [f for f in ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5")
               if os.path.exists(os.path.join(folder, f))]
    hint = (f" It has {pickles[0]}: funcgrad never unpickles files; convert it once with "
            "transformers (`AutoModel.from_pretrained(dir).save_pretrained(dir, "
            "safe_serialization=True)`).") if pickles else ""
    raise CheckpointError(f"{folder}: no {WEIGHTS} or {INDEX}.{hint}")


def _read_weights(folder, lazy=False):
    files, weight_map = _weight_files(folder)
    tensors, origin = {}, {}
    for path in files:
        if not os.path.exists(path):
            raise CheckpointError(f"{path}: missing (listed in {INDEX})")
        if lazy:
            infos, _ = io.read_safetensors_header(path)
            part = {name: _LazyTensor(path, name, info) for name, info in infos.items()}
        else:
            part = io.load_safetensors(path)
        for name, a in part.items():
            if name in tensors:
                raise CheckpointError(f"{path}: tensor {name!r} is also in {origin[name]}")
            tensors[name], origin[name] = a, path
    if weight_map is not None:
        for name, fname in weight_map.items():
            if name not in tensors:
                raise CheckpointError(f"{os.path.join(folder, fname)}: tensor {name!r} listed in "
                                      f"{INDEX} is missing")
    return tensors, origin


def _normalize_names(family, tensors, expected, config):
    """Checkpoint names -> the architecture's names: legacy renames, buffers dropped, tied
    copies dropped, the base model's prefix added or removed as the file needs."""
    out = {}
    for name, a in tensors.items():
        for pattern, repl in getattr(family, "RENAMES", ()):
            name = re.sub(pattern, repl, name)
        if any(re.search(p, name) for p in family.IGNORED):
            continue
        out[name] = a
    prefix = family.BASE_PREFIX + "."
    want_prefixed = any(n.startswith(prefix) for n in expected)
    has_prefixed = any(n.startswith(prefix) for n in out)
    if want_prefixed and not has_prefixed:      # saved from the bare base model
        out = {n if n in expected else prefix + n: a for n, a in out.items()}
    elif not want_prefixed and has_prefixed:    # a head model's file read as the base model
        out = {n[len(prefix):] if n.startswith(prefix) else n: a for n, a in out.items()}
    for name in family.tied(config):
        out.pop(name, None)
    return out


def _check_against(tensors, expected, family, config, where, switching):
    """Missing / unexpected / wrongly shaped tensors -> CheckpointError (unexpected tensors of
    other heads are dropped when `switching` architectures, or when the family says so)."""
    arch = family.architecture(config)
    ok = family.UNEXPECTED_OK.get(arch, ())
    extra = sorted(n for n in tensors if n not in expected
                   and not any(re.search(p, n) for p in ok))
    if extra and not switching:
        raise CheckpointError(
            f"{where}: unexpected tensor {extra[0]!r} (and {len(extra) - 1} more): a {arch} with "
            "this config.json has no such parameter. Does config.json (layer count, "
            "architectures) describe these weights?")
    for name, (shape, _) in expected.items():
        if name in tensors and tuple(tensors[name].shape) != shape:
            raise CheckpointError(
                f"{where}: tensor {name!r} has shape {tuple(tensors[name].shape)} in the file "
                f"but {shape} for {arch} with this config.json (do its sizes match the weights?)")
    return [n for n in expected if n not in tensors]


def load(path, *, dtype=None, architecture=None, key=None, config_updates=None, quantize=None,
         mask=None):
    """The model in the Hugging Face folder `path`, with its parameters.

    quantize: None, "nf4" (QLoRA's 4-bit NormalFloat, blocks of 64, double quantization) or
    "int8" (per output channel): the leaves `mask` selects become `funcgrad.quant` arrays,
    each tensor quantized as it is read. `mask`: a bool tree (or prefix) over the parameter tree,
    or a callable of it (it sees ShapedArray leaves); by default the linear layers' weights
    inside the base model (embeddings, norms, biases and the output head stay in `dtype`, as
    bitsandbytes leaves `lm_head`).

    dtype: None keeps float32/float64 tensors and loads float16/bfloat16 ones as float32 (see
    the module docstring; `save` writes the stored dtype back); a float dtype casts every float
    tensor. architecture: another head of the same family than `config["architectures"][0]`
    (e.g. "BertForSequenceClassification" on a BertForMaskedLM checkpoint): tensors of other
    heads are dropped and the new head's are initialized from `key`, as transformers does.
    config_updates: entries to change in the config first (e.g. {"num_labels": 3}).

    Bad folders raise `CheckpointError` naming the file and the tensor: unknown model type or
    architecture (listing the supported ones), missing, unexpected or wrongly shaped tensors,
    a config that disagrees with the weights.
    """
    folder = os.fspath(path)
    if not os.path.isdir(folder):
        raise CheckpointError(f"{folder}: not a folder (a Hugging Face checkpoint is a folder "
                              f"with {CONFIG} and {WEIGHTS})")
    config = _read_json(os.path.join(folder, CONFIG), "the model's config")
    if not isinstance(config, dict):
        raise CheckpointError(f"{os.path.join(folder, CONFIG)}: not a JSON object")
    config = dict(config)
    if config_updates:
        config.update(config_updates)
        if "num_labels" in config_updates and config.get("model_type") == "bert":
            n = int(config.pop("num_labels"))
            config["id2label"] = {str(i): f"LABEL_{i}" for i in range(n)}
            config["label2id"] = {f"LABEL_{i}": i for i in range(n)}
    family = _family(config, os.path.join(folder, CONFIG))
    stored_arch = family.architecture(config)
    if architecture is not None:
        config["architectures"] = [architecture]
    arch = family.architecture(config)
    archs = family.ARCHITECTURES[config["model_type"]]
    if arch not in archs:
        raise CheckpointError(f"{os.path.join(folder, CONFIG)}: architecture {arch!r} is not "
                              f"supported for model_type {config['model_type']!r}; "
                              f"supported: {list(archs)}")
    if quantize not in (None, "nf4", "int8"):
        raise ValueError(f"pretrained.load: quantize must be None, 'nf4' or 'int8', got "
                         f"{quantize!r}")
    tensors, _ = _read_weights(folder, lazy=quantize is not None)
    model = _build(family, config, tensors, dtype=dtype, key=key,
                   switching=arch != stored_arch, where=folder, quantize=quantize, mask=mask)
    if quantize is not None:  # the float32 tensors read and freed: not kept as free heap
        del tensors
        trim_host_memory()
    return model


def from_tensors(config, tensors, *, dtype=None):
    """A model from a `config.json` dict and {checkpoint name: array} (e.g. weights made or
    converted in memory), checked and arranged exactly as `load` does with a folder's files."""
    config = dict(config)
    family = _family(config, "from_tensors")
    return _build(family, config, dict(tensors), dtype=dtype, key=None, switching=False,
                  where="from_tensors")


def _build(family, config, tensors, *, dtype, key, switching, where, quantize=None, mask=None):
    """The Model of `config` with parameters from `tensors` (see `load`)."""
    arch = family.architecture(config)
    template = _eval_init(family, config)
    expected = _expected(family, config, template)
    tensors = _normalize_names(family, tensors, expected, config)
    missing = _check_against(tensors, expected, family, config, where, switching)
    stored = {np.dtype(a.dtype) for a in tensors.values() if _is_float(a.dtype)}
    stored_dtype = stored.pop() if len(stored) == 1 else np.dtype(np.float32)
    if dtype is None:
        target = np.dtype(np.float32) if stored_dtype.itemsize < 4 else stored_dtype
    else:
        target = _as_dtype(dtype)
    if missing and not switching:
        raise CheckpointError(
            f"{where}: tensor {missing[0]!r} (and {len(missing) - 1} more) is missing for "
            f"{arch}; the files hold {len(tensors)} tensors (e.g. {sorted(tensors)[:3]})")
    fresh = _fresh(family, config, missing, key, target) if missing else {}
    quantized = _quantized_names(family, config, template, quantize, mask)

    def fill(path, spec):
        name = tu.path_to_str(path, ".")
        if name not in tensors:
            a = fresh[name]
        else:
            a = tensors[name]
            if isinstance(a, _LazyTensor):
                a = a.load()
            if _is_float(a.dtype) and a.dtype != target:
                a = a.astype(target)
        if name in quantized:
            layout = family.weight_layout(name)
            a = quant.quantize_nf4(a, dtype=target) if quantize == "nf4" else \
                quant.quantize_int8(a, axis=1 if layout == "in_out" else 0, dtype=target)
        return a

    params = tu.tree_map_with_path(fill, template)
    return Model(config, _placed(params),
                 save_dtype=stored_dtype if dtype is None else target)


def _quantized_names(family, config, template, quantize, mask):
    """The dotted names of the tensors `load(quantize=...)` quantizes (see `load`)."""
    if quantize is None:
        return set()
    pairs = tu.tree_flatten_with_path(template)[0]
    names = [tu.path_to_str(p, ".") for p, _ in pairs]
    if mask is None:
        prefix = family.BASE_PREFIX + "."
        head = family.architecture(config) not in _BASE_ARCHITECTURES
        return {n for n, (_, x) in zip(names, pairs)
                if family.weight_layout(n) in ("in_out", "out_in") and len(x.shape) == 2
                and (n.startswith(prefix) or not head)}
    from .. import masks
    on = masks.leaf_mask(mask, template, "pretrained.load(mask=...)")
    chosen = {n for n, m in zip(names, on) if m}
    for n, (_, x) in zip(names, pairs):
        if n in chosen and (len(x.shape) < 1 or not _is_float(x.dtype)):
            raise ValueError(f"pretrained.load: mask selects {n!r} of shape {x.shape}; only "
                             "floating weights can be quantized")
    return chosen


_BASE_ARCHITECTURES = {"GPT2Model", "BertModel", "LlamaModel", "MistralModel", "Qwen2Model"}


class _LazyTensor:
    """A tensor of a safetensors file, read when `load()` is called (its shape and dtype come
    from the header): quantized loading reads and quantizes one tensor at a time."""

    def __init__(self, path, name, info):
        self.path, self.name = path, name
        self.shape = tuple(info.shape)
        self.dtype = info.numpy_dtype

    def load(self):
        return io.load_safetensors(self.path, [self.name])[self.name]


def _fresh(family, config, names, key, dtype):
    """{name: newly initialized array} for the tensors `names` only: the family's init in lazy
    mode, so that the random numbers of every other tensor are never drawn."""
    if key is None:
        raise ValueError(f"pretrained.load: {family.architecture(config)} needs tensors that the "
                         f"checkpoint lacks ({names[:3]}): pass key=fg.random.key(0) to "
                         "initialize them")

    lazy = tu.tree_flatten_with_path(family.init(ParamMaker.lazy(key), config, dtype))[0]
    return {tu.path_to_str(p, "."): spec.value() for p, spec in lazy
            if tu.path_to_str(p, ".") in names}


# ---------------------------------------------------------------------------------------------
# Saving


def _parse_size(size):
    if isinstance(size, (int, np.integer)):
        return int(size)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B)\s*", str(size), flags=re.I)
    if not m:
        raise ValueError(f"max_shard_size must be bytes or like '5GB' / '500MB', got {size!r}")
    unit = m.group(2).upper()
    base = 1024 if "I" in unit else 1000
    return int(float(m.group(1)) * base ** "KMG".index(unit[0]) * base)


def _to_host_array(x):
    if hasattr(x, "get") and not isinstance(x, np.ndarray):  # a device array
        x = x.get()
    return np.asarray(x)


def save(path, model, params, *, dtype=None, max_shard_size="5GB"):
    """Write `params` as a Hugging Face folder at `path` (created if needed): `config.json`
    and `model.safetensors`, or shards of at most `max_shard_size` bytes with
    `model.safetensors.index.json` (as `save_pretrained` does), each file written atomically.
    transformers' `from_pretrained(path)` reads it to the same outputs. Floats are written in
    `dtype`, by default `model.save_dtype` (the dtype the loaded checkpoint had), else as they
    are. Stale shards of an earlier save to the same folder are removed."""
    folder = os.fspath(path)
    os.makedirs(folder, exist_ok=True)
    family, config = model._family, dict(model.config)
    expected = _expected(family, config)
    params = quant.dequantize_tree(params)  # quantized weights are written as floats
    pairs = tu.tree_flatten_with_path(params)[0]
    names = {tu.path_to_str(p, "."): x for p, x in pairs}
    for name in names:
        if name not in expected:
            raise ValueError(f"pretrained.save: params has {name!r}, which {model.architecture} "
                             "does not (pass the model's parameter tree, e.g. lora.merge(params, "
                             "adapters), not adapters or optimizer state)")
    for name, (shape, _) in expected.items():
        if name not in names:
            raise ValueError(f"pretrained.save: params lacks {name!r}")
        if tuple(np.shape(names[name])) != shape:
            raise ValueError(f"pretrained.save: {name!r} has shape {np.shape(names[name])}, "
                             f"but {shape} for this config")
    out_dtype = _as_dtype(dtype) if dtype is not None else model.save_dtype
    tensors = {}
    for name, x in names.items():
        a = _to_host_array(x)
        if out_dtype is not None and _is_float(a.dtype) and a.dtype != out_dtype:
            a = a.astype(out_dtype)
        tensors[name] = np.ascontiguousarray(a)
    floats = {a.dtype for a in tensors.values() if _is_float(a.dtype)}
    if len(floats) == 1:
        name = floats.pop().name
        config["dtype"] = name
        if "torch_dtype" in config:
            config["torch_dtype"] = name

    limit = _parse_size(max_shard_size)
    shards, current, size = [], {}, 0
    for name in sorted(tensors):
        nbytes = tensors[name].nbytes
        if current and size + nbytes > limit:
            shards.append(current)
            current, size = {}, 0
        current[name] = tensors[name]
        size += nbytes
    shards.append(current)

    written = set()
    if len(shards) == 1:
        io.write_safetensors(os.path.join(folder, WEIGHTS), shards[0], {"format": "pt"})
        written.add(WEIGHTS)
    else:
        weight_map = {}
        for i, shard in enumerate(shards):
            fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            io.write_safetensors(os.path.join(folder, fname), shard, {"format": "pt"})
            weight_map.update({n: fname for n in shard})
            written.add(fname)
        index = {"metadata": {"total_size": sum(a.nbytes for a in tensors.values())},
                 "weight_map": dict(sorted(weight_map.items()))}
        io.atomic_write(os.path.join(folder, INDEX), json.dumps(index, indent=2).encode())
        written.add(INDEX)
    io.atomic_write(os.path.join(folder, CONFIG),
                    (json.dumps(config, indent=2, sort_keys=True) + "\n").encode())
    for f in os.listdir(folder):
        if f not in written and (f in (WEIGHTS, INDEX) or _SHARD.match(f)):
            os.remove(os.path.join(folder, f))


# ---------------------------------------------------------------------------------------------
# Generation


def _bucket(n, size=32):
    return -(-n // size) * size


def _choose(logits, key, temperature, top_k, top_p):
    """The next token [B] from the last logits [B, V]: argmax when temperature is 0, else a
    sample from softmax(logits / temperature) restricted to the top_k tokens and to the smallest
    set whose probability reaches top_p (Hugging Face's warpers, in that order)."""
    from .. import lax, nn
    if temperature == 0:
        return fnp.argmax(logits, axis=-1).astype(np.int32)
    logits = logits.astype(np.float32) / temperature
    vocab = logits.shape[-1]
    if top_k is not None and top_k < vocab:
        kth = lax.top_k(logits, top_k)[0][:, -1:]
        logits = fnp.where(logits < kth, -np.inf, logits)
    if top_p is not None and top_p < 1.0:
        desc = -fnp.sort(-logits, axis=-1)
        probs = nn.softmax(desc, axis=-1)
        before = fnp.cumsum(probs, axis=-1) - probs          # probability of better tokens
        keep = fnp.logical_or(before < top_p, lax.iota(np.int32, (vocab,))[None] == 0)
        threshold = fnp.min(fnp.where(keep, desc, np.inf), axis=-1, keepdims=True)
        logits = fnp.where(logits < threshold, -np.inf, logits)
    return random.categorical(key, logits, axis=-1).astype(np.int32)


def _generate_fns(model, temperature, top_k, top_p):
    """The jitted prefill and decode step for these sampling settings (cached on the model)."""
    spec = (float(temperature), top_k, top_p)
    if spec in model._generate_fns:
        return model._generate_fns[spec]
    family, config = model._family, model.config

    def prefill(params, ids, mask, positions, cache, key):
        logits, cache = family.apply(params, ids, config=config, attention_mask=mask,
                                     position_ids=positions, cache=cache, cache_index=0)
        return _choose(logits[:, -1], key, *spec), cache

    def step(params, cache, token, index, mask, positions, key):
        logits, cache = family.apply(params, token[:, None], config=config, attention_mask=mask,
                                     position_ids=positions, cache=cache, cache_index=index)
        return _choose(logits[:, -1], key, *spec), cache

    fns = model._generate_fns[spec] = (jit(prefill), jit(step))
    return fns


def generate(model, params, input_ids, max_new_tokens, *, temperature=0.0, top_k=None,
             top_p=None, key=None, eos_token_id=None, attention_mask=None, pad_token_id=None):
    """The prompt followed by up to `max_new_tokens` new tokens, an integer array
    [batch, prompt + new] (1-D in, 1-D out).

    Greedy when `temperature` is 0 (the same tokens as transformers'
    `generate(do_sample=False)`); otherwise sampled from softmax(logits / temperature) after
    the top_k / top_p filters, reproducibly from `key` (`fg.random.key(seed)`). A batch of
    prompts of different lengths is padded on the left, with `attention_mask` 0 at the padding
    (positions count real tokens only, as transformers does). After a row emits
    `eos_token_id` it continues with `pad_token_id` (default: the eos token) and generation
    stops once every row has finished, so the result may be shorter.

    One jitted prefill writes the prompt into a fixed-size key/value cache; then one jitted
    decode step per token reuses a single compiled program (its shapes never change; the cache
    length is rounded up to a multiple of 32 so nearby lengths share it too)."""
    if not model.is_causal_lm:
        raise ValueError(f"pretrained.generate: {model.architecture} is not a causal language "
                         "model (generate needs one of "
                         f"{[a for f in _FAMILIES for a in f.CAUSAL_LM]})")
    if temperature < 0:
        raise ValueError(f"pretrained.generate: temperature must be >= 0, got {temperature}")
    if temperature > 0 and key is None:
        raise ValueError("pretrained.generate: sampling (temperature > 0) needs key="
                         "fg.random.key(seed)")
    if top_k is not None and top_k < 1:
        raise ValueError(f"pretrained.generate: top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"pretrained.generate: top_p must be in (0, 1], got {top_p}")
    ids = np.asarray(_to_host_array(input_ids))
    squeeze = ids.ndim == 1
    if squeeze:
        ids = ids[None]
    if ids.ndim != 2 or ids.dtype.kind not in "iu" or ids.shape[1] == 0:
        raise ValueError(f"pretrained.generate: input_ids must be a non-empty integer array "
                         f"[batch, prompt], got {ids.dtype} {ids.shape}")
    b, p = ids.shape
    mask = np.ones((b, p), np.int32) if attention_mask is None else \
        np.asarray(_to_host_array(attention_mask)).astype(np.int32).reshape(b, p)
    if not mask[:, -1].all():
        raise ValueError("pretrained.generate: the prompts are padded on the right (attention_mask "
                         "is 0 at the end of a row); pad them on the left, e.g. "
                         "tok(texts, padding=True, padding_side='left')")
    limit = model.config.get("n_positions") if model.family == "gpt2" else None
    if limit is not None and p + max_new_tokens > limit:
        raise ValueError(f"pretrained.generate: prompt {p} + {max_new_tokens} new tokens exceed "
                         f"the model's {limit} positions (n_positions)")
    if max_new_tokens <= 0:
        return ids[0] if squeeze else ids
    length = _bucket(p + max_new_tokens)
    full_mask = np.zeros((b, length), np.int32)
    full_mask[:, :p] = mask
    full_mask[:, p:] = 1
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0).astype(np.int32)
    next_pos = positions[:, -1:] + 1
    eos = None if eos_token_id is None else np.atleast_1d(eos_token_id)
    pad = pad_token_id if pad_token_id is not None else (None if eos is None else int(eos[0]))
    keys = random.split(key if key is not None else random.key(0), max_new_tokens)

    prefill, step = _generate_fns(model, temperature, top_k, top_p)
    dtype = next((x.dtype for x in tu.tree_leaves(params) if _is_float(x.dtype)), np.float32)
    cache = model._family.init_cache(model.config, b, length, dtype)
    token, cache = prefill(params, ids.astype(np.int32), full_mask, positions, cache, keys[0])
    out = [ids]
    done = np.zeros(b, bool)
    for i in range(max_new_tokens):
        tok = np.asarray(_to_host_array(token)).astype(ids.dtype)
        if eos is not None:
            tok = np.where(done, pad, tok)
            done |= np.isin(tok, eos)
        out.append(tok[:, None])
        if i == max_new_tokens - 1 or (eos is not None and done.all()):
            break
        token, cache = step(params, cache, tok.astype(np.int32), np.int32(p + i), full_mask,
                            (next_pos + i).astype(np.int32), keys[i + 1])
    result = np.concatenate(out, axis=1)
    return result[0] if squeeze else result


# ---------------------------------------------------------------------------------------------
# Tokenizers


class Tokenizer:
    """A Hugging Face `tokenizer.json` (via the `tokenizers` library) with the special tokens
    of `tokenizer_config.json`: `tok(texts, padding=True, truncation=True, max_length=128)`
    gives {"input_ids", "attention_mask"} as int32 arrays [batch, length]; `decode(ids)` and
    `batch_decode` turn ids back into text."""

    def __init__(self, tokenizer, *, pad_token=None, eos_token=None, bos_token=None,
                 unk_token=None, padding_side="right", model_max_length=None):
        self.tokenizer = tokenizer
        self.pad_token, self.eos_token = pad_token, eos_token
        self.bos_token, self.unk_token = bos_token, unk_token
        if padding_side not in ("left", "right"):
            raise ValueError(f"Tokenizer: padding_side must be 'left' or 'right', got "
                             f"{padding_side!r}")
        self.padding_side = padding_side
        self.model_max_length = model_max_length

    def _id(self, token):
        return None if token is None else self.tokenizer.token_to_id(token)

    @property
    def pad_token_id(self):
        return self._id(self.pad_token)

    @property
    def eos_token_id(self):
        return self._id(self.eos_token)

    @property
    def bos_token_id(self):
        return self._id(self.bos_token)

    @property
    def vocab_size(self):
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def __len__(self):
        return self.vocab_size

    def encode(self, text, add_special_tokens=True):
        """The token ids (a list of ints) of one text."""
        return list(self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids)

    def __call__(self, texts, *, padding=False, truncation=False, max_length=None,
                 padding_side=None, add_special_tokens=True):
        """{"input_ids", "attention_mask"}: int32 arrays [batch, length] for a text or a list
        of texts. padding: False (all texts must then have the same length), True / "longest",
        or "max_length"; truncation cuts to `max_length` (default `model_max_length`);
        padding_side defaults to the tokenizer's ("left" for generation with a batch)."""
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        if max_length is None and truncation:
            max_length = self.model_max_length
        if truncation and max_length is None:
            raise ValueError("Tokenizer: truncation needs max_length (the tokenizer has no "
                             "model_max_length)")
        seqs = [self.encode(t, add_special_tokens) for t in texts]
        if truncation:
            seqs = [s[:max_length] for s in seqs]
        lengths = [len(s) for s in seqs]
        if padding in (True, "longest"):
            width = max(lengths)
        elif padding == "max_length":
            if max_length is None:
                raise ValueError("Tokenizer: padding='max_length' needs max_length")
            width = max(max_length, max(lengths))
        elif padding in (False, None, "do_not_pad"):
            if len(set(lengths)) > 1:
                raise ValueError(f"Tokenizer: the texts have different lengths {lengths}; pass "
                                 "padding=True to pad them into one array")
            width = lengths[0]
        else:
            raise ValueError(f"Tokenizer: padding must be True, False, 'longest' or "
                             f"'max_length', got {padding!r}")
        if width > min(lengths) and self.pad_token_id is None:
            raise ValueError("Tokenizer: padding needs a pad token; set tok.pad_token (e.g. to "
                             "tok.eos_token, as is usual for GPT-2)")
        side = padding_side or self.padding_side
        ids = np.full((len(seqs), width), self.pad_token_id or 0, np.int32)
        mask = np.zeros((len(seqs), width), np.int32)
        for i, s in enumerate(seqs):
            sl = slice(width - len(s), width) if side == "left" else slice(0, len(s))
            ids[i, sl] = s
            mask[i, sl] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def decode(self, ids, skip_special_tokens=True):
        """The text of one sequence of ids."""
        ids = [int(i) for i in np.asarray(_to_host_array(ids)).reshape(-1)]
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def batch_decode(self, ids, skip_special_tokens=True):
        return [self.decode(row, skip_special_tokens) for row in np.asarray(_to_host_array(ids))]

    def save(self, path):
        """Write `tokenizer.json` and `tokenizer_config.json` into the folder `path`."""
        folder = os.fspath(path)
        os.makedirs(folder, exist_ok=True)
        io.atomic_write(os.path.join(folder, "tokenizer.json"),
                        self.tokenizer.to_str().encode("utf-8"))
        cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "padding_side": self.padding_side}
        for name in ("pad_token", "eos_token", "bos_token", "unk_token"):
            if getattr(self, name) is not None:
                cfg[name] = getattr(self, name)
        if self.model_max_length is not None:
            cfg["model_max_length"] = self.model_max_length
        io.atomic_write(os.path.join(folder, "tokenizer_config.json"),
                        (json.dumps(cfg, indent=2) + "\n").encode())


def _token_text(v):
    return v.get("content") if isinstance(v, dict) else v


def load_tokenizer(path):
    """The tokenizer of a Hugging Face folder (`tokenizer.json`, plus the special tokens of
    `tokenizer_config.json` / `special_tokens_map.json` when present). Needs the `tokenizers`
    package (`pip install funcgrad[hf]`)."""
    try:
        import tokenizers
    except ImportError:
        raise ImportError("pretrained.load_tokenizer needs the `tokenizers` package: "
                          "pip install tokenizers (or funcgrad[hf])") from None
    folder = os.fspath(path)
    file = os.path.join(folder, "tokenizer.json") if os.path.isdir(folder) else folder
    if not os.path.exists(file):
        raise CheckpointError(f"{file}: missing (load_tokenizer reads the fast tokenizer's "
                              "tokenizer.json; vocab.txt / merges.txt alone are not read)")
    try:
        tok = tokenizers.Tokenizer.from_file(file)
    except Exception as e:
        raise CheckpointError(f"{file}: not a readable tokenizer.json: {e}") from None
    special = {}
    here = os.path.dirname(file)
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        f = os.path.join(here, name)
        if os.path.exists(f):
            special.update(_read_json(f, "tokenizer settings"))
    max_len = special.get("model_max_length")
    if not isinstance(max_len, int) or max_len > 1e9:
        max_len = None
    return Tokenizer(tok, pad_token=_token_text(special.get("pad_token")),
                     eos_token=_token_text(special.get("eos_token")),
                     bos_token=_token_text(special.get("bos_token")),
                     unk_token=_token_text(special.get("unk_token")),
                     padding_side=special.get("padding_side", "right"),
                     model_max_length=max_len)

