"""Hugging Face checkpoint folders in and out: `load`, `from_tensors`, `save`.

`read_json` (a JSON file, errors as `CheckpointError` naming it) and `host_array` (an array on
the host) are shared with the generation and tokenizer modules.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np

from ... import io, quant
from ... import tree_util as tu
from ...config import trim_host_memory
from ...io import CheckpointError
from ..layers import ParamMaker
from .model import Model, as_dtype, eval_init, expected_tensors, family_of, is_float, placed

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
_SHARD = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")


# ---------------------------------------------------------------------------------------------
# Loading


def read_json(path, what):
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
        weight_map = read_json(index, "the shard index").get("weight_map")
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
    config = read_json(os.path.join(folder, CONFIG), "the model's config")
    if not isinstance(config, dict):
        raise CheckpointError(f"{os.path.join(folder, CONFIG)}: not a JSON object")
    config = dict(config)
    if config_updates:
        config.update(config_updates)
        if "num_labels" in config_updates and config.get("model_type") == "bert":
            n = int(config.pop("num_labels"))
            config["id2label"] = {str(i): f"LABEL_{i}" for i in range(n)}
            config["label2id"] = {f"LABEL_{i}": i for i in range(n)}
    family = family_of(config, os.path.join(folder, CONFIG))
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
    family = family_of(config, "from_tensors")
    return _build(family, config, dict(tensors), dtype=dtype, key=None, switching=False,
                  where="from_tensors")


def _build(family, config, tensors, *, dtype, key, switching, where, quantize=None, mask=None):
    """The Model of `config` with parameters from `tensors` (see `load`)."""
    arch = family.architecture(config)
    template = eval_init(family, config)
    expected = expected_tensors(family, config, template)
    tensors = _normalize_names(family, tensors, expected, config)
    missing = _check_against(tensors, expected, family, config, where, switching)
    stored = {np.dtype(a.dtype) for a in tensors.values() if is_float(a.dtype)}
    stored_dtype = stored.pop() if len(stored) == 1 else np.dtype(np.float32)
    if dtype is None:
        target = np.dtype(np.float32) if stored_dtype.itemsize < 4 else stored_dtype
    else:
        target = as_dtype(dtype)
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
            if is_float(a.dtype) and a.dtype != target:
                a = a.astype(target)
        if name in quantized:
            layout = family.weight_layout(name)
            a = quant.quantize_nf4(a, dtype=target) if quantize == "nf4" else \
                quant.quantize_int8(a, axis=1 if layout == "in_out" else 0, dtype=target)
        return a

    params = tu.tree_map_with_path(fill, template)
    return Model(config, placed(params),
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
    from ... import masks
    on = masks.leaf_mask(mask, template, "pretrained.load(mask=...)")
    chosen = {n for n, m in zip(names, on) if m}
    for n, (_, x) in zip(names, pairs):
        if n in chosen and (len(x.shape) < 1 or not is_float(x.dtype)):
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


def host_array(x):
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
    family, config = model.family_module, dict(model.config)
    expected = expected_tensors(family, config)
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
    out_dtype = as_dtype(dtype) if dtype is not None else model.save_dtype
    tensors = {}
    for name, x in names.items():
        a = host_array(x)
        if out_dtype is not None and is_float(a.dtype) and a.dtype != out_dtype:
            a = a.astype(out_dtype)
        tensors[name] = np.ascontiguousarray(a)
    floats = {a.dtype for a in tensors.values() if is_float(a.dtype)}
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

