"""Training-state checkpoints: a `TrainState` (step, params, optimizer state, random key,
config, metadata) as one self-describing file that loads back without a template.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from .atomic import atomic_write_as
from .checkpoint import decode_checked, fill_like, read_checked, serialize
from .safetensors_format import CheckpointError
from .static_values import decode_static, encode_static, raiser

__all__ = ["TrainState", "save_train_state", "load_train_state"]


@dataclasses.dataclass
class TrainState:
    """Everything needed to resume or use a training run, saved as one self-describing file.

    `step` (int), `params`, `opt_state` and `key` (a `fg.random` key) are pytrees of arrays;
    `config` is a static value (typically the model's registered config dataclass) and
    `metadata` a dict of static values (loss, data position, notes), both stored as JSON.
    """

    step: Any = 0
    params: Any = None
    opt_state: Any = None
    key: Any = None
    config: Any = None
    metadata: dict = dataclasses.field(default_factory=dict)


_STATE_ARRAYS = ("step", "params", "opt_state", "key")


def save_train_state(path, state: TrainState) -> None:
    """Write a `TrainState` atomically to one safetensors file that `load_train_state` reads back
    without a template: every node type in it must be registered (`io.register_type`), and
    `config` / `metadata` storable static values; otherwise TypeError here, not at load time."""
    if not isinstance(state, TrainState):
        raise TypeError(f"io.save_train_state: expected an io.TrainState, got "
                        f"{type(state).__name__}; build one with io.TrainState(step=..., "
                        "params=..., opt_state=..., key=..., config=..., metadata={...})")
    if not isinstance(state.metadata, dict):
        raise TypeError(f"io.save_train_state: metadata must be a dict, got "
                        f"{type(state.metadata).__name__}")
    path = os.fspath(path)
    tree = {k: getattr(state, k) for k in _STATE_ARRAYS}
    extra = {"train_state": {"config": encode_static(state.config, "TrainState.config"),
                             "metadata": encode_static(state.metadata, "TrainState.metadata")}}
    atomic_write_as(path, serialize(tree, None, "io.save_train_state", True, extra),
                    "io.save_train_state")


def load_train_state(path, like: TrainState | None = None) -> TrainState:
    """Read a file written by `save_train_state`. `like` (a TrainState) is needed only for node
    types not registered in this process; its arrays then check shapes and dtypes."""
    path = os.fspath(path)
    meta, tensors = read_checked(path)
    ts = meta.get("train_state") if meta is not None else None
    if ts is None:
        raise CheckpointError(f"{path}: not a training-state checkpoint (no 'train_state' "
                              "metadata); files written by io.save load with io.load")
    if not isinstance(ts, dict) or "config" not in ts or "metadata" not in ts:
        raise CheckpointError(f"{path}: damaged funcgrad metadata: field 'train_state' must "
                              "hold 'config' and 'metadata'")

    prefix = f"{path}: damaged funcgrad metadata: train_state."
    config = decode_static(ts["config"], raiser(prefix + "config: "), path)
    metadata = decode_static(ts["metadata"], raiser(prefix + "metadata: "), path)
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{path}: damaged funcgrad metadata: train_state.metadata is a "
                              f"{type(metadata).__name__}, not a dict")
    if like is None:
        tree = decode_checked(meta, tensors, path)
    else:
        decode_checked(meta, tensors, path, rebuild_nodes=False)
        tree = fill_like(path, tensors, {k: getattr(like, k) for k in _STATE_ARRAYS}, False)
    if not isinstance(tree, dict) or set(tree) != set(_STATE_ARRAYS):
        raise CheckpointError(f"{path}: damaged funcgrad metadata: the tree of a training state "
                              f"must be a dict of {', '.join(_STATE_ARRAYS)}")
    return TrainState(**tree, config=config, metadata=metadata)
