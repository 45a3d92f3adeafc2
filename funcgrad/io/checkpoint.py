"""`save` and `load`: a pytree in one safetensors file, each leaf a tensor named by its path,
the structure (`trees.py`), every tensor's dtype, shape and CRC32 in the metadata with a CRC32
of its own, so an altered header, a truncated or a corrupted file raises `CheckpointError`;
written atomically (`atomic.py`). Plain safetensors files load too.
"""

from __future__ import annotations

import json
import os
import zlib

import numpy as np
import safetensors.numpy as st_numpy

from .. import masks as _masks
from .. import tree_util as tu
from .atomic import atomic_write_as, sweep
from .safetensors_format import CheckpointError, is_int, read_safetensors_header, read_tensors
from .trees import TreeDecoder, encode_tree

__all__ = ["save", "load"]


_FORMAT = "funcgrad.pytree.v2"
_OLD_FORMATS = ("funcgrad.pytree.v1",)  # no dtype/shape records, no registered types
_META_CRC = "funcgrad.crc32"          # CRC32 of the metadata JSON (v2): no field goes unnoticed


def serialize(tree, mask, who, strict=False, extra=None):
    off = set()
    if mask is not None:
        pairs = tu.tree_flatten_with_path(tree)[0]
        on = _masks.leaf_mask(mask, tree, who)
        off = {tu.path_to_str(p) for (p, _), m in zip(pairs, on) if not m}
    tensors: dict[str, np.ndarray] = {}
    structure = encode_tree(tree, [], off, tensors, strict)
    crc = {k: zlib.crc32(v.reshape(-1).view(np.uint8)) for k, v in tensors.items()}
    meta = {"format": _FORMAT, "tree": structure, "partial": mask is not None, "crc32": crc,
            **(extra or {})}
    text = json.dumps(meta)
    return st_numpy.save(tensors, metadata={"funcgrad": text,
                                            _META_CRC: str(zlib.crc32(text.encode()))})


def save(path, tree, mask=None) -> None:
    """Write `tree` (or its True leaves under `mask`) to `path` atomically.

    The folder must exist. Leaves are numeric or bool arrays (NumPy, CuPy, Python scalars);
    containers are dicts with str/int keys, lists, tuples, None and node types (registered ones
    load back by themselves, others with `like=`).
    """
    path = os.fspath(path)
    atomic_write_as(path, serialize(tree, mask, "io.save"), "io.save")


def read_checked(path):
    """`(meta or None, tensors)`: the funcgrad metadata (None for a plain safetensors file) and
    every tensor, all checked."""
    sweep(path)
    infos, file_meta = read_safetensors_header(path)
    tensors = read_tensors(path, infos, list(infos))
    bad = lambda field: CheckpointError(f"{path}: damaged funcgrad metadata: {field}")
    if "funcgrad" not in file_meta:
        if _META_CRC in file_meta:
            raise bad(f"{_META_CRC!r} without 'funcgrad'")
        return None, tensors
    try:
        meta = json.loads(file_meta["funcgrad"])
    except ValueError as e:
        raise bad(f"not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise bad("not a JSON object")
    fmt = meta.get("format")
    if fmt != _FORMAT and fmt not in _OLD_FORMATS:
        raise bad(f"field 'format' is {fmt!r:.60}; this funcgrad reads {_FORMAT!r}")
    if fmt == _FORMAT and file_meta.get(_META_CRC) != str(zlib.crc32(
            file_meta["funcgrad"].encode())):
        raise bad(f"its checksum {_META_CRC!r} is missing or does not match (altered or "
                  "corrupted header)")
    crc = meta.get("crc32")
    if not isinstance(crc, dict) or not all(is_int(v) for v in crc.values()):
        raise bad("field 'crc32' must map tensor names to integers")
    if not isinstance(meta.get("partial"), bool):
        raise bad(f"field 'partial' is {meta.get('partial')!r:.40}, expected true or false")
    if not isinstance(meta.get("tree"), dict):
        raise bad("field 'tree' is missing or not a JSON object")
    for name, a in tensors.items():
        if name not in crc:
            raise CheckpointError(f"{path}: tensor {name!r} is not in the file's tree metadata")
        if zlib.crc32(a.reshape(-1).view(np.uint8)) != crc[name]:
            raise CheckpointError(f"{path}: tensor {name!r} is corrupted (checksum mismatch)")
    missing = sorted(set(crc) - set(tensors))
    if missing:
        raise CheckpointError(f"{path}: tensor {missing[0]!r} listed in the metadata is missing")
    return meta, tensors


def decode_checked(meta, tensors, path, rebuild_nodes=True):
    """The tree of a funcgrad file, every field and every tensor's dtype and shape checked."""
    d = TreeDecoder(path, tensors, rebuild_nodes)
    tree = d.decode(meta["tree"])
    unused = sorted(set(tensors) - d.used)
    if unused:
        raise CheckpointError(f"{path}: damaged funcgrad metadata: tensor {unused[0]!r} is in "
                              "the file but no leaf of the tree names it")
    return tree


def fill_like(path, tensors, like, partial):
    pairs, treedef = tu.tree_flatten_with_path(like)
    out, seen = [], set()
    for p, x in pairs:
        name = tu.path_to_str(p)
        if name not in tensors:
            if not partial:
                raise CheckpointError(f"{path}: missing {name or '<root>'!r}, which `like` has "
                                      f"(the file holds {len(tensors)} tensors)")
            out.append(x)
            continue
        a = tensors[name]
        seen.add(name)
        shape = tuple(np.shape(x))
        if shape != a.shape:
            raise CheckpointError(f"{path}: {name or '<root>'!r} has shape {a.shape} in the file "
                                  f"but {shape} in `like`")
        dtype = getattr(x, "dtype", None)
        if dtype is not None and np.dtype(dtype) != a.dtype:
            raise CheckpointError(f"{path}: {name or '<root>'!r} has dtype {a.dtype} in the file "
                                  f"but {np.dtype(dtype)} in `like`")
        out.append(type(x)(a) if isinstance(x, (bool, int, float, complex)) else a)
    extra = sorted(set(tensors) - seen)
    if extra:
        raise CheckpointError(f"{path}: the file has {extra[0]!r}, which `like` does not")
    return tu.tree_unflatten(treedef, out)


def load(path, like=None):
    """Read a tree saved by `save`, or any safetensors file.

    Without `like`, rebuilds the saved structure (dicts, lists, tuples, registered node types;
    None in a masked save's holes); a plain safetensors file (no funcgrad metadata) comes back
    as a flat `{name: array}` dict. With `like`, returns a tree of `like`'s structure: every
    tensor of the file must be a leaf of `like` (by `/`-joined path) with the same shape and
    dtype; leaves not in a masked (partial) file keep `like`'s values; a full file must provide
    every leaf. Errors name the path that differs. Arrays come back as NumPy arrays.
    """
    path = os.fspath(path)
    meta, tensors = read_checked(path)
    if meta is None:
        return tensors if like is None else fill_like(path, tensors, like, partial=False)
    if like is None:
        return decode_checked(meta, tensors, path)
    decode_checked(meta, tensors, path, rebuild_nodes=False)
    return fill_like(path, tensors, like, meta["partial"])
