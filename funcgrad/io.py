"""Checkpoints: pytrees of arrays in the safetensors format, written atomically. Never pickle.

    io.save("ckpt.safetensors", params)
    params = io.load("ckpt.safetensors", like=params)           # checked against `like`
    io.save("head.safetensors", params, mask=trainable)         # only the trainable leaves
    params = io.load("head.safetensors", like=params)           # merged into the full tree

Each leaf is one tensor named by its `/`-joined path (`blocks/1/attn/wq`); the file's metadata
holds the tree structure (dicts, lists, tuples, None, holes left by a mask) and a CRC32 of every
tensor, so a truncated or corrupted file raises `CheckpointError` naming the file and tensor.
Other node types (namedtuples, registered classes such as optimizer states or LoRA adapters) are
saved by path too, and rebuilt from `like=`: no code is ever loaded from a file.

A save writes a temporary file in the same folder, fsyncs it and renames it over the target, so
a crash or kill mid-save leaves the previous file intact.

`read_safetensors` / `write_safetensors` read and (atomically) write plain safetensors files,
tensors by name without funcgrad's tree metadata: the files of other tools, such as Hugging Face
checkpoints and PEFT adapters (`funcgrad.models.pretrained`, `lora.save_peft`).
"""

from __future__ import annotations

import json
import os
import tempfile
import zlib

import numpy as np
import safetensors
import safetensors.numpy as st_numpy

from . import masks as _masks
from . import tree_util as tu

__all__ = ["save", "load", "CheckpointError", "read_safetensors", "write_safetensors",
           "atomic_write"]

_FORMAT = "funcgrad.pytree.v1"
_CHUNK = 16 << 20


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, corrupted, or does not match the tree it should fill."""


# ----------------------------------------------------------------------------------------------
# Structure <-> JSON


def _to_host(x, where):
    if hasattr(x, "get") and not isinstance(x, (np.ndarray, np.generic)):  # CuPy array
        x = x.get()
    try:
        a = np.asarray(x)
    except Exception as e:
        raise TypeError(f"io.save: leaf {where!r} is not an array ({type(x).__name__}): {e}") from e
    if a.dtype.kind not in "biufc" and a.dtype.name != "bfloat16":  # ml_dtypes' bfloat16
        raise TypeError(f"io.save: leaf {where!r} has dtype {a.dtype}; only numeric and bool "
                        "arrays can be saved")
    return a if a.flags.c_contiguous else a.copy(order="C")  # (ascontiguousarray: 0-d -> 1-d)


def _encode(x, path, off, tensors):
    """JSON description of `x`; fills `tensors` with its leaves, named by path, except the paths
    in `off` (masked out: recorded as holes)."""
    where = "/".join(path)
    if x is None:
        return {"t": "none"}
    t = type(x)
    if t is dict:
        keys = list(x)
        bad = [k for k in keys if not isinstance(k, (str, int)) or isinstance(k, bool)]
        if bad:
            raise TypeError(f"io.save: dict at {where or '<root>'!r} has key {bad[0]!r}; only str "
                            "and int keys can be saved")
        return {"t": "dict", "k": [["i" if isinstance(k, int) else "s", k] for k in keys],
                "c": [_encode(x[k], path + [str(k)], off, tensors) for k in keys]}
    if t is list or t is tuple:
        return {"t": t.__name__,
                "c": [_encode(c, path + [str(i)], off, tensors) for i, c in enumerate(x)]}
    children = _masks._children(x)
    if children is not None:
        return {"t": "node", "type": t.__name__, "k": [k for k, _ in children],
                "c": [_encode(c, path + [k], off, tensors) for k, c in children]}
    if where in off:
        return {"t": "hole"}
    if where in tensors:
        raise ValueError(f"io.save: two leaves have the path {where!r} (a dict key containing "
                         "'/'?); paths must be unique")
    tensors[where] = _to_host(x, where)
    node = {"t": "leaf", "n": where}
    if t in (bool, int, float, complex):
        node["py"] = t.__name__
    return node


def _decode(node, tensors, fname, path=""):
    t = node["t"]
    if t == "none" or t == "hole":
        return None
    if t == "leaf":
        a = tensors[node["n"]]
        py = node.get("py")
        return {"bool": bool, "int": int, "float": float, "complex": complex}[py](a) if py else a
    if t == "dict":
        return {k: _decode(c, tensors, fname, f"{path}/{k}".lstrip("/"))
                for (_, k), c in zip(node["k"], node["c"])}
    if t in ("list", "tuple"):
        out = [_decode(c, tensors, fname, f"{path}/{i}".lstrip("/"))
               for i, c in enumerate(node["c"])]
        return out if t == "list" else tuple(out)
    raise CheckpointError(f"{fname}: the tree holds a {node.get('type', t)} at "
                          f"{path or '<root>'!r}, which is rebuilt only from a template: call "
                          "io.load(path, like=tree_of_that_structure)")


# ----------------------------------------------------------------------------------------------
# Save


def _write(f, data):
    """Write `data` in chunks (a separate function so tests can interrupt a save midway)."""
    view = memoryview(data)
    for i in range(0, len(view), _CHUNK):
        f.write(view[i:i + _CHUNK])


def _fsync_dir(d):
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save(path, tree, mask=None) -> None:
    """Write `tree` (or its True leaves under `mask`) to `path` atomically."""
    path = os.fspath(path)
    off = set()
    if mask is not None:
        pairs = tu.tree_flatten_with_path(tree)[0]
        on = _masks.leaf_mask(mask, tree, "io.save")
        off = {tu.path_to_str(p) for (p, _), m in zip(pairs, on) if not m}
    tensors: dict[str, np.ndarray] = {}
    structure = _encode(tree, [], off, tensors)
    crc = {k: zlib.crc32(v.reshape(-1).view(np.uint8)) for k, v in tensors.items()}
    meta = {"format": _FORMAT, "tree": structure, "partial": mask is not None, "crc32": crc}
    data = st_numpy.save(tensors, metadata={"funcgrad": json.dumps(meta)})
    atomic_write(path, data)


def atomic_write(path, data):
    """Write the bytes `data` to `path` through a temporary file in the same folder, fsynced and
    renamed over the target: a crash or kill mid-write leaves the previous file intact."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            _write(f, data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.chmod(tmp, os.stat(path).st_mode & 0o777)
        except OSError:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(folder)


def write_safetensors(path, tensors, metadata=None) -> None:
    """Write a plain safetensors file (the format other tools read: tensors by name, string
    metadata) atomically. `tensors` maps names to arrays (NumPy dtypes, and bfloat16 from
    `ml_dtypes`); nothing else is added to the file."""
    path = os.fspath(path)
    arrays = {name: _to_host(x, name) for name, x in tensors.items()}
    atomic_write(path, st_numpy.save(arrays, metadata=metadata))


# ----------------------------------------------------------------------------------------------
# Load


def read_safetensors(path):
    """(tensors, metadata) of a plain safetensors file: a dict of NumPy arrays by name (bfloat16
    tensors come back as `ml_dtypes.bfloat16` arrays) and the file's string metadata. A file
    that is not readable safetensors raises `CheckpointError` naming it."""
    path = os.fspath(path)
    try:
        with safetensors.safe_open(path, framework="np") as f:
            raw = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except FileNotFoundError:
        raise
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupted?): "
                              f"{e}") from None
    return tensors, raw


def _read(path):
    tensors, raw = read_safetensors(path)
    try:
        meta = json.loads(raw["funcgrad"])
        if meta.get("format") != _FORMAT:
            raise KeyError("format")
    except (KeyError, ValueError, TypeError):
        raise CheckpointError(f"{path}: a safetensors file without funcgrad's tree metadata (or "
                              "with damaged metadata)") from None
    crc = meta.get("crc32", {})
    for name, a in tensors.items():
        if name not in crc:
            raise CheckpointError(f"{path}: tensor {name!r} is not in the file's tree metadata")
        if zlib.crc32(a.reshape(-1).view(np.uint8)) != crc[name]:
            raise CheckpointError(f"{path}: tensor {name!r} is corrupted (checksum mismatch)")
    missing = sorted(set(crc) - set(tensors))
    if missing:
        raise CheckpointError(f"{path}: tensor {missing[0]!r} listed in the metadata is missing")
    return meta, tensors


def load(path, like=None):
    """Read a tree saved by `save`.

    Without `like`, rebuilds the saved structure (dicts, lists, tuples; None in a masked save's
    holes). With `like`, returns a tree of `like`'s structure: every leaf of the file must be a
    leaf of `like` with the same shape and dtype; leaves not in a masked (partial) file keep
    `like`'s values; a full file must provide every leaf. Errors name the path that differs.
    Arrays come back as NumPy arrays.
    """
    path = os.fspath(path)
    meta, tensors = _read(path)
    if like is None:
        return _decode(meta["tree"], tensors, path)
    pairs, treedef = tu.tree_flatten_with_path(like)
    out, seen = [], set()
    for p, x in pairs:
        name = tu.path_to_str(p)
        if name not in tensors:
            if not meta["partial"]:
                raise CheckpointError(f"{path}: missing {name!r}, which `like` has (the file "
                                      f"holds {len(tensors)} tensors)")
            out.append(x)
            continue
        a = tensors[name]
        seen.add(name)
        shape = tuple(np.shape(x))
        if shape != a.shape:
            raise CheckpointError(f"{path}: {name!r} has shape {a.shape} in the file but "
                                  f"{shape} in `like`")
        dtype = getattr(x, "dtype", None)
        if dtype is not None and np.dtype(dtype) != a.dtype:
            raise CheckpointError(f"{path}: {name!r} has dtype {a.dtype} in the file but "
                                  f"{np.dtype(dtype)} in `like`")
        out.append(type(x)(a) if isinstance(x, (bool, int, float, complex)) else a)
    extra = sorted(set(tensors) - seen)
    if extra:
        raise CheckpointError(f"{path}: the file has {extra[0]!r}, which `like` does not")
    return tu.tree_unflatten(treedef, out)
