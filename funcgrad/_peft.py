"""LoRA adapters in PEFT's folder format (re-exported as `lora.save_peft` / `lora.load_peft`).

A PEFT LoRA folder holds `adapter_config.json` (`peft_type: "LORA"`, `r`, `lora_alpha`,
`target_modules`, `fan_in_fan_out`, `modules_to_save`, `task_type`, ...) and
`adapter_model.safetensors` with, for each adapted module of the base model,
`base_model.model.<module>.lora_A.weight` [r, in] and `lora_B.weight` [out, r] (embeddings:
`lora_embedding_A` [r, num_embeddings], `lora_embedding_B` [dim, r]), plus the full weights of
`modules_to_save` (e.g. a trained classifier) as `base_model.model.<module>.weight`. The update
of W is scale * B @ A with scale = lora_alpha / r (lora_alpha / sqrt(r) with `use_rslora`),
transposed for GPT-2's Conv1D weights, which are stored [in, out] (`fan_in_fan_out`).

funcgrad's `Adapter(a, b)` always has B @ A in W's own shape, so for an nn.Linear weight
[out, in] a is PEFT's A and b its B; for a Conv1D weight [in, out] a = B^T and b = A^T; for an
embedding [num, dim] a = B^T and b = A^T.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter

import numpy as np

from . import io  # (io imports lora, which imports this module: use io.X at call time)
from . import tree_util as tu

PREFIX = "base_model.model."
CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
_TASKS = (("ForCausalLM", "CAUSAL_LM"), ("LMHeadModel", "CAUSAL_LM"),
          ("ForSequenceClassification", "SEQ_CLS"), ("ForTokenClassification", "TOKEN_CLS"),
          ("ForQuestionAnswering", "QUESTION_ANS"))
_LORA_KEY = re.compile(r"^(?P<module>.+)\.(?P<kind>lora_A|lora_B)(\.[^.]+)?\.weight$"
                       r"|^(?P<emodule>.+)\.(?P<ekind>lora_embedding_A|lora_embedding_B)"
                       r"(\.[^.]+)?$")


def _adapter_type():
    from .lora import Adapter
    return Adapter


def _host(x):
    if hasattr(x, "get") and not isinstance(x, np.ndarray):
        x = x.get()
    return np.asarray(x)


def _task_type(architecture):
    for suffix, task in _TASKS:
        if architecture.endswith(suffix):
            return task
    return "FEATURE_EXTRACTION" if architecture.endswith("Model") else None


def _targets(adapted, candidates):
    """PEFT `target_modules` that select exactly `adapted` among `candidates` (module names):
    their last names when those do, else the full names."""
    short = sorted({m.rsplit(".", 1)[-1] for m in adapted})
    chosen = {m for m in candidates
              if any(m == t or m.endswith("." + t) for t in short)}
    return short if chosen == set(adapted) else sorted(adapted)


def save_peft(path, adapters, model, *, params=None, modules_to_save=None,
              base_model_name_or_path=None, task_type="auto"):
    """Write `adapters` (from `lora.init(key, model.params, mask)`, trained) as a PEFT LoRA
    folder at `path`, which `peft.PeftModel.from_pretrained(base, path)` loads onto the same
    base model (transformers' `from_pretrained` of the model's folder) to the same outputs.

    modules_to_save: names of modules trained in full beside the adapters (e.g.
    ["classifier"]); their weights are taken from `params` (the fine-tuned tree; default
    `model.params`) and saved as PEFT does. For sequence classification (task "SEQ_CLS") the
    head is saved by default, since PEFT always loads it from the adapter folder. task_type:
    PEFT's task type, by default from the architecture ("CAUSAL_LM", "SEQ_CLS", ...). Ranks
    and alphas may differ between modules (`rank_pattern`, `alpha_pattern`)."""
    Adapter = _adapter_type()
    folder = os.fspath(path)
    pairs = tu.tree_flatten_with_path(adapters, is_leaf=lambda x: x is None or
                                      isinstance(x, Adapter))[0]
    found = [(tu.path_to_str(p, "."), ad) for p, ad in pairs if isinstance(ad, Adapter)]
    if not found:
        raise ValueError("lora.save_peft: `adapters` holds no Adapter (make them with "
                         "lora.init(key, model.params, mask))")
    shapes = model.tensor_shapes()
    tensors, ranks, alphas, layouts = {}, {}, {}, {}
    for name, ad in found:
        if not name.endswith(".weight") or name not in shapes:
            raise ValueError(f"lora.save_peft: adapter at {name!r} is not on a weight of "
                             f"{model.architecture} (PEFT adapts a module's `weight`)")
        module = name[:-len(".weight")]
        layout = model.weight_layout(name)
        a, b = _host(ad.a), _host(ad.b)
        if (b.shape[0], a.shape[1]) != shapes[name][0]:
            raise ValueError(f"lora.save_peft: adapter factors {b.shape} @ {a.shape} do not fit "
                             f"{name!r} of shape {shapes[name][0]}")
        r = a.shape[0]
        if layout == "out_in":
            tensors[f"{PREFIX}{module}.lora_A.weight"] = a
            tensors[f"{PREFIX}{module}.lora_B.weight"] = b
        elif layout == "in_out":
            tensors[f"{PREFIX}{module}.lora_A.weight"] = b.T
            tensors[f"{PREFIX}{module}.lora_B.weight"] = a.T
        elif layout == "embedding":
            tensors[f"{PREFIX}{module}.lora_embedding_A"] = b.T
            tensors[f"{PREFIX}{module}.lora_embedding_B"] = a.T
        else:
            raise ValueError(f"lora.save_peft: {name!r} is not a weight PEFT can adapt")
        ranks[module], alphas[module], layouts[module] = r, float(ad.scale) * r, layout
    matrix = {lay for lay in layouts.values() if lay != "embedding"}
    if len(matrix) > 1:
        raise ValueError("lora.save_peft: the adapters mix [out, in] and [in, out] (Conv1D) "
                         "weights, which one PEFT config (fan_in_fan_out) cannot describe")
    r = Counter(ranks.values()).most_common(1)[0][0]
    alpha = Counter(alphas.values()).most_common(1)[0][0]
    task = _task_type(model.architecture) if task_type == "auto" else task_type
    if params is None:
        params = model.params
    if modules_to_save is None and task == "SEQ_CLS":
        # PEFT's sequence-classification models always train (and load) the head in full
        top = params if isinstance(params, dict) else {}
        modules_to_save = [m for m in ("classifier", "score") if m in top]
    for module in list(modules_to_save or ()):
        hits = {n: x for n, x in ((tu.path_to_str(p, "."), x)
                                  for p, x in tu.tree_flatten_with_path(params)[0])
                if n.startswith(module + ".") or ("." + module + ".") in n}
        if not hits:
            raise ValueError(f"lora.save_peft: modules_to_save names {module!r}, which params "
                             "does not have")
        for n, x in hits.items():
            tensors[PREFIX + n] = _host(x)
    candidates = [n[:-len(".weight")] for n in shapes
                  if n.endswith(".weight") and model.weight_layout(n) is not None]
    config = {
        "peft_type": "LORA",
        "task_type": task,
        "base_model_name_or_path": base_model_name_or_path,
        "r": int(r),
        "lora_alpha": alpha if alpha != int(alpha) else int(alpha),
        "target_modules": _targets(list(ranks), candidates),
        "fan_in_fan_out": matrix == {"in_out"},
        "bias": "none",
        "lora_dropout": 0.0,
        "modules_to_save": list(modules_to_save) if modules_to_save else None,
        "rank_pattern": {re.escape(m): int(v) for m, v in ranks.items() if v != r},
        "alpha_pattern": {re.escape(m): v for m, v in alphas.items() if v != alpha},
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
    }
    os.makedirs(folder, exist_ok=True)
    io.write_safetensors(os.path.join(folder, WEIGHTS), tensors, {"format": "pt"})
    io.atomic_write(os.path.join(folder, CONFIG),
                    (json.dumps(config, indent=2, sort_keys=True) + "\n").encode())


def _pattern(patterns, module, default):
    """PEFT's rank_pattern / alpha_pattern lookup: the first key matching the module's end."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def _read_config(folder):
    path = os.path.join(folder, CONFIG)
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except FileNotFoundError:
        raise io.CheckpointError(f"{path}: missing (a PEFT adapter folder has {CONFIG} and "
                              f"{WEIGHTS})") from None
    except (OSError, ValueError) as e:
        raise io.CheckpointError(f"{path}: not readable JSON: {e}") from None
    if not isinstance(cfg, dict) or cfg.get("peft_type") != "LORA":
        raise io.CheckpointError(f"{path}: peft_type is {cfg.get('peft_type')!r}; only LoRA "
                              "adapters (peft_type 'LORA') load into funcgrad")
    for field, ok, what in (("use_dora", (False, None), "DoRA"),
                            ("bias", ("none", None), "trained biases (bias != 'none')"),
                            ("lora_bias", (False, None), "LoRA biases"),
                            ("layer_replication", (None,), "layer replication")):
        if cfg.get(field) not in ok:
            raise io.CheckpointError(f"{path}: {what} ({field}={cfg.get(field)!r}) is not "
                                  "supported by funcgrad's LoRA")
    return cfg


def load_peft(path, model, *, return_params=False):
    """The adapters of a PEFT LoRA folder for `model` (a `pretrained.load` model): a tree
    shaped like `model.params` with an `Adapter` at each adapted weight and None elsewhere, so
    `lora.apply(model.apply)(model.params, adapters, input_ids)` gives what PEFT's model
    gives. With `return_params=True`, returns `(adapters, params)`, params being
    `model.params` with the folder's `modules_to_save` weights (a classifier trained beside
    the adapters) in place; a folder with such weights needs it, so that nothing trained is
    dropped silently."""
    Adapter = _adapter_type()
    folder = os.fspath(path)
    cfg = _read_config(folder)
    wfile = os.path.join(folder, WEIGHTS)
    if not os.path.exists(wfile):
        pickle = os.path.exists(os.path.join(folder, "adapter_model.bin"))
        raise io.CheckpointError(f"{wfile}: missing" + (
            " (the folder has adapter_model.bin: funcgrad never unpickles files; save it with "
            "safe_serialization=True)" if pickle else ""))
    tensors = io.load_safetensors(wfile)
    shapes = model.tensor_shapes()
    prefix = model.family_module.BASE_PREFIX + "."

    def weight_name(module, what):
        for name in (module + what, prefix + module + what,
                     module[len(prefix):] + what if module.startswith(prefix) else None):
            if name in shapes:
                return name
        raise io.CheckpointError(f"{wfile}: {module!r} is not a module of {model.architecture} "
                              "(was the adapter trained on another base model?)")

    factors, full = {}, {}
    for key, arr in tensors.items():
        name = key[len(PREFIX):] if key.startswith(PREFIX) else key
        m = _LORA_KEY.match(name)
        if m is None:
            full[name] = arr
            continue
        module, kind = m.group("module") or m.group("emodule"), m.group("kind") or m.group("ekind")
        factors.setdefault(module, {})[kind[-1]] = (key, arr)
    if full and not return_params:
        raise io.CheckpointError(
            f"{wfile}: holds full weights of modules_to_save ({sorted(full)[:3]}); load them "
            "with lora.load_peft(path, model, return_params=True) -> (adapters, params)")
    base_r, base_alpha = cfg.get("r", 8), cfg.get("lora_alpha", 8)
    chosen = {}
    for module, parts in factors.items():
        if set(parts) != {"A", "B"}:
            raise io.CheckpointError(f"{wfile}: module {module!r} has lora_{next(iter(parts))} "
                                  "but not its pair")
        name = weight_name(module, ".weight")
        (ka, A), (kb, B) = parts["A"], parts["B"]
        r = _pattern(cfg.get("rank_pattern"), module, base_r)
        alpha = _pattern(cfg.get("alpha_pattern"), module, base_alpha)
        if A.shape[0] != r or B.shape[-1] != r:
            raise io.CheckpointError(f"{wfile}: {ka!r} {A.shape} and {kb!r} {B.shape} do not have "
                                  f"rank r={r} of adapter_config.json")
        scale = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
        layout = model.weight_layout(name)
        shape = shapes[name][0]
        if layout == "out_in":
            a, b = A, B
        else:   # Conv1D [in, out] and embeddings [num, dim]: B @ A is W transposed
            a, b = B.T, A.T
        if (b.shape[0], a.shape[1]) != shape:
            raise io.CheckpointError(f"{wfile}: {ka!r} {A.shape} and {kb!r} {B.shape} do not fit "
                                  f"{name!r} of shape {shape}")
        chosen[name] = (a, b, float(scale))

    def build(path, w):
        name = tu.path_to_str(path, ".")
        if name not in chosen:
            return None
        a, b, scale = chosen[name]
        dt = w.dtype if hasattr(w, "dtype") else np.float32
        return Adapter(_like(a.astype(dt), w), _like(b.astype(dt), w), scale)

    adapters = tu.tree_map_with_path(build, model.params)
    if not return_params:
        return adapters
    replaced = {}
    for name, arr in full.items():
        target = weight_name(name.rsplit(".", 1)[0], "." + name.rsplit(".", 1)[1])
        if tuple(arr.shape) != shapes[target][0]:
            raise io.CheckpointError(f"{wfile}: {name!r} has shape {arr.shape} but {target!r} of "
                                  f"{model.architecture} has {shapes[target][0]}")
        replaced[target] = arr

    def swap(path, w):
        name = tu.path_to_str(path, ".")
        return _like(replaced[name].astype(w.dtype), w) if name in replaced else w

    return adapters, tu.tree_map_with_path(swap, model.params)


def _like(x, w):
    from .devices import on_default_backend
    return on_default_backend(np.ascontiguousarray(x), like=w)
