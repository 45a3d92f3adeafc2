"""Checkpoints: pytrees of arrays in the safetensors format, written atomically. Never pickle.

    io.save("ckpt.safetensors", params)
    params = io.load("ckpt.safetensors")                        # the saved structure
    params = io.load("ckpt.safetensors", like=params)           # checked against `like`
    io.save("head.safetensors", params, mask=trainable)         # only the trainable leaves
    params = io.load("head.safetensors", like=params)           # merged into the full tree

    io.save_train_state("run/last.safetensors", io.TrainState(step, params, opt_state, key,
                                                              config, metadata={"loss": 2.1}))
    state = io.load_train_state("run/last.safetensors")        # no template needed

Each leaf is one tensor named by its `/`-joined path (`blocks/1/attn/wq`). The file's metadata
(JSON, never pickle) holds the tree structure (dicts, lists, tuples, None, holes left by a mask,
registered node types), the dtype, shape and CRC32 of every tensor, so an altered header, a
truncated or a corrupted file raises `CheckpointError` naming the file and the tensor or field.

**Registered types.** A checkpoint stores a node type (an optimizer state, a LoRA adapter) or a
static value (a model config) by a registered *name*, and `load` rebuilds it from the class
registered under that name in this process: no code and no class path is ever taken from a file.
funcgrad registers its own types (every NamedTuple state of `funcgrad.optim`, `lora.Adapter`,
`collections.OrderedDict`); register yours once, next to the class:

    @io.register_type                       # stored as "mypkg.models.MyConfig"
    @dataclasses.dataclass(frozen=True)
    class MyConfig: ...

A registered class is a namedtuple, a dataclass, or a pytree node registered with
`fg.tree_util` whose aux data is itself storable (numbers, strings, bools, None, tuples, lists,
dicts, NumPy dtypes and scalars, registered types). Rebuilding calls a dataclass's or
namedtuple's constructor with the stored fields, so `__post_init__` checks run on loaded configs.
A type named `funcgrad.<module>.<Class>` that is not registered yet is looked up by importing
that funcgrad module (only funcgrad's own modules). Other node types are saved by path and
rebuilt from `like=`.

**Plain safetensors files** (written by `safetensors`, Hugging Face tools, PyTorch) load as a flat
`{name: array}` dict, or into `like=` by `/`-joined path. `read_safetensors_header` and
`load_safetensors` are the validated readers that `funcgrad.models.pretrained` builds on;
`write_safetensors` writes such a file (tensors by name, string metadata, nothing of funcgrad's)
atomically, and `atomic_write` any bytes (Hugging Face checkpoints, PEFT adapters, their JSON).

**Atomic writes.** A save writes a temporary file `.<name>.<random>.tmp` in the same folder,
holds an advisory lock on it, fsyncs it and renames it over the target, so a crash or kill
mid-save leaves the previous file intact. The next `save` or `load` of the same path deletes
temporaries of that path that no live process holds (a kill leaves them behind), and leaves other
processes' saves in progress alone. (Without `fcntl`, on Windows, nothing is swept.)

This package re-exports its modules' public names, one concept a module: `checkpoint` (`save`,
`load`), `train_state` (`TrainState` and its files), `trees` (trees <-> JSON), `static_values`
(static values <-> JSON), `registry` (`register_type`), `safetensors_format` (the header, the
tensors, plain files) and `atomic` (atomic writes).
"""

from .atomic import atomic_write
from .checkpoint import load, save
from .registry import register_type
from .safetensors_format import (
    CheckpointError,
    TensorInfo,
    load_safetensors,
    read_safetensors_header,
    write_safetensors,
)
from .train_state import TrainState, load_train_state, save_train_state

__all__ = ["save", "load", "CheckpointError", "register_type", "TrainState", "save_train_state",
           "load_train_state", "read_safetensors_header", "load_safetensors", "TensorInfo",
           "write_safetensors", "atomic_write"]
