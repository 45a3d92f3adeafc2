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
"""

from __future__ import annotations

import collections
import dataclasses
import importlib
import json
import math
import os
import re
import tempfile
import threading
import time
import zlib
from typing import Any

import numpy as np
import safetensors.numpy as st_numpy

from .. import lora as _lora
from .. import masks as _masks
from .. import optim as _optim
from .. import tree_util as tu

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, so stale temporaries are not swept
    fcntl = None

__all__ = ["save", "load", "CheckpointError", "register_type", "TrainState", "save_train_state",
           "load_train_state", "read_safetensors_header", "load_safetensors", "TensorInfo",
           "write_safetensors", "atomic_write"]

_FORMAT = "funcgrad.pytree.v2"
_OLD_FORMATS = ("funcgrad.pytree.v1",)  # no dtype/shape records, no registered types
_META_CRC = "funcgrad.crc32"          # CRC32 of the metadata JSON (v2): no field goes unnoticed
_CHUNK = 16 << 20
_MAX_HEADER = 100 << 20       # as the safetensors library
_STALE_AFTER_S = 10.0         # a temporary younger than this is never swept (see _sweep)


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, corrupted, or does not match the tree it should fill."""


# ----------------------------------------------------------------------------------------------
# Safetensors files: the header, validated field by field, and the tensors


# safetensors dtype code -> (NumPy dtype name, bits per element)
_ST_DTYPES = {
    "BOOL": ("bool", 8), "U8": ("uint8", 8), "I8": ("int8", 8), "U16": ("uint16", 16),
    "I16": ("int16", 16), "U32": ("uint32", 32), "I32": ("int32", 32), "U64": ("uint64", 64),
    "I64": ("int64", 64), "F16": ("float16", 16), "F32": ("float32", 32), "F64": ("float64", 64),
    "C64": ("complex64", 64), "BF16": ("bfloat16", 16), "F8_E4M3": ("float8_e4m3fn", 8),
    "F8_E5M2": ("float8_e5m2", 8), "F8_E4M3FNUZ": ("float8_e4m3fnuz", 8),
    "F8_E5M2FNUZ": ("float8_e5m2fnuz", 8), "F8_E8M0": ("float8_e8m0fnu", 8),
}
_ST_CODE = {name: code for code, (name, _) in _ST_DTYPES.items()}


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One tensor's header entry: safetensors dtype code (`"F32"`), shape, and byte range
    `(begin, end)` in the data section."""

    dtype: str
    shape: tuple
    data_offsets: tuple

    @property
    def numpy_dtype(self) -> np.dtype:
        return _numpy_dtype(self.dtype)


def _numpy_dtype(code, where=""):
    name = _ST_DTYPES[code][0]
    try:
        return np.dtype(name)
    except TypeError:
        pass
    try:
        import ml_dtypes  # noqa: F401  (registers bfloat16 and the float8 types with NumPy)
    except ImportError:
        raise CheckpointError(f"{where}dtype {code} needs the ml_dtypes package: pip install "
                              "ml_dtypes") from None
    return np.dtype(name)


def _is_int(v):
    return type(v) is int


def read_safetensors_header(path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """`(tensors, metadata)` of a safetensors file: `{name: TensorInfo}` in the header's order
    and the `__metadata__` string dict ({} when absent), with every field checked: the header
    length, JSON, known dtypes, non-negative integer shapes, byte ranges that match each shape
    and tile the data section exactly (no gaps, overlaps or missing bytes). Any violation
    raises `CheckpointError` naming the file and the field. Reads only the header."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: not a safetensors file (truncated or corrupted?): "
                                  f"{size} bytes, shorter than the 8-byte header length")
        n = int.from_bytes(head, "little")
        if n > _MAX_HEADER or 8 + n > size:
            raise CheckpointError(f"{path}: not a safetensors file (truncated or corrupted?): the "
                                  f"header length field says {n} bytes, the file has {size}")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{path}: not a safetensors file (truncated or corrupted?): the "
                              f"header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: the safetensors header is a {type(header).__name__}, "
                              "not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in metadata.items()):
        raise CheckpointError(f"{path}: header field '__metadata__' must map strings to strings")
    tensors = {}
    for name, e in header.items():
        where = f"{path}: header entry {name!r}"
        if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
            raise CheckpointError(f"{where} must have exactly the fields dtype, shape and "
                                  f"data_offsets, got {e!r:.200}")
        code, shape, offs = e["dtype"], e["shape"], e["data_offsets"]
        if code not in _ST_DTYPES:
            raise CheckpointError(f"{where}: unknown or unsupported dtype {code!r} (known: "
                                  f"{', '.join(_ST_DTYPES)})")
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise CheckpointError(f"{where}: shape must be a list of non-negative integers, got "
                                  f"{shape!r:.200}")
        if (not isinstance(offs, list) or len(offs) != 2 or not all(_is_int(o) for o in offs)
                or not 0 <= offs[0] <= offs[1]):
            raise CheckpointError(f"{where}: data_offsets must be two integers 0 <= begin <= "
                                  f"end, got {offs!r:.200}")
        nbytes = math.prod(shape) * _ST_DTYPES[code][1] // 8
        if offs[1] - offs[0] != nbytes:
            raise CheckpointError(f"{where}: data_offsets {offs} span {offs[1] - offs[0]} bytes, "
                                  f"but {code}{shape} needs {nbytes}")
        tensors[name] = TensorInfo(code, tuple(shape), tuple(offs))
    end = 0
    for name, t in sorted(tensors.items(), key=lambda kv: kv[1].data_offsets):
        b, e = t.data_offsets
        if b != end and e > b:
            what = "overlaps the previous tensor" if b < end else f"leaves a gap at byte {end}"
            raise CheckpointError(f"{path}: header entry {name!r}: data_offsets {[b, e]} {what}")
        end = max(end, e)
    if 8 + n + end != size:
        raise CheckpointError(f"{path}: truncated or corrupted: the header describes "
                              f"{8 + n + end} bytes, the file has {size}")
    return tensors, metadata


def _read_tensors(path, infos, names):
    """The arrays `names` of a file whose header `infos` was validated (writable NumPy arrays)."""
    data_start = None
    out = {}
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        data_start = 8 + n
        for name in names:
            t = infos[name]
            dtype = _numpy_dtype(t.dtype, f"{path}: tensor {name!r}: ")
            a = np.empty(t.shape, dtype.newbyteorder("<") if dtype.itemsize > 1 else dtype)
            f.seek(data_start + t.data_offsets[0])
            buf = a.reshape(-1).view(np.uint8)
            if f.readinto(buf) != buf.size:
                raise CheckpointError(f"{path}: tensor {name!r} is truncated")
            out[name] = a if a.dtype.isnative else a.astype(dtype.newbyteorder("="))
    return out


def load_safetensors(path, names=None) -> dict[str, np.ndarray]:
    """Any safetensors file as a flat `{name: array}` dict (NumPy arrays; `names` picks a
    subset), after `read_safetensors_header`'s checks. No funcgrad metadata is needed or used;
    BF16 and float8 tensors need `ml_dtypes`."""
    path = os.fspath(path)
    infos, _ = read_safetensors_header(path)
    if names is None:
        names = list(infos)
    else:
        names = list(names)
        missing = [n for n in names if n not in infos]
        if missing:
            raise CheckpointError(f"{path}: no tensor {missing[0]!r} (the file holds "
                                  f"{len(infos)}: {', '.join(list(infos)[:5])}, ...)")
    return _read_tensors(path, infos, names)


# ----------------------------------------------------------------------------------------------
# Registered types: stored by name, rebuilt from this process's registry only

_TYPES: dict[str, type] = {}
_NAMES: dict[type, str] = {}


def _is_namedtuple_class(cls):
    return isinstance(cls, type) and issubclass(cls, tuple) and hasattr(cls, "_fields")


def _is_pytree_node_class(cls):
    try:
        tu.PyTreeDef.make_from_node_data_and_children((cls, None), ())
    except ValueError:
        return False
    return True


def register_type(cls=None, *, name: str | None = None):
    """Let checkpoints store `cls` by `name` (default `"<module>.<qualname>"`) and rebuild it on
    load without `like=`. Usable as a decorator (`@io.register_type` or
    `@io.register_type(name="my.Config")`); returns `cls`.

    `cls` is a namedtuple, a dataclass, or a pytree node class registered with `fg.tree_util`.
    The name is what the file records, so keep it stable when the class moves. Registering the
    same class under the same name again does nothing; a name taken by another class raises.
    """
    if cls is None:
        return lambda c: register_type(c, name=name)
    if not isinstance(cls, type):
        raise TypeError(f"io.register_type: expected a class, got {cls!r}")
    if not (_is_namedtuple_class(cls) or dataclasses.is_dataclass(cls)
            or _is_pytree_node_class(cls)):
        raise TypeError(f"io.register_type: {cls.__name__} is not a namedtuple, a dataclass or a "
                        "pytree node class (fg.tree_util.register_pytree_node); a checkpoint "
                        "could not rebuild it")
    name = f"{cls.__module__}.{cls.__qualname__}" if name is None else name
    if not isinstance(name, str) or not name:
        raise TypeError(f"io.register_type: name must be a non-empty str, got {name!r}")
    if _TYPES.get(name, cls) is not cls:
        raise ValueError(f"io.register_type: the name {name!r} is already registered for "
                         f"{_TYPES[name].__module__}.{_TYPES[name].__qualname__}; pass "
                         "name='...' to choose another")
    if _NAMES.get(cls, name) != name:
        raise ValueError(f"io.register_type: {cls.__qualname__} is already registered as "
                         f"{_NAMES[cls]!r}")
    _TYPES[name] = cls
    _NAMES[cls] = name
    return cls


def _registered(name, fname):
    """The class registered as `name`; a funcgrad module named by it may register it on import."""
    cls = _TYPES.get(name)
    if cls is None:
        module = name.rpartition(".")[0]
        if re.fullmatch(r"funcgrad(\.[A-Za-z_][A-Za-z0-9_]*)+", module):
            try:
                importlib.import_module(module)
            except Exception:  # no such module, or one that cannot load here: not registered
                pass
            cls = _TYPES.get(name)
    if cls is None:
        raise CheckpointError(f"{fname}: the file holds a {name!r}, which is not a registered "
                              "type in this process: import the module that defines it (it must "
                              "call io.register_type), or pass like= a tree of that structure")
    return cls


def _register_funcgrad_types():
    for v in list(vars(_optim).values()):
        if (_is_namedtuple_class(v) and v.__module__.startswith(_optim.__name__)
                and v is not _optim.GradientTransformation):
            register_type(v, name=f"funcgrad.optim.{v.__name__}")
    register_type(_lora.Adapter, name="funcgrad.lora.Adapter")
    register_type(collections.OrderedDict, name="collections.OrderedDict")


# ----------------------------------------------------------------------------------------------
# Static values (node aux data, configs, user metadata) <-> JSON. Containers are tagged, so
# tuples stay tuples and a user dict can never be mistaken for a tag.


def _static_fields(v):
    if dataclasses.is_dataclass(v):
        return {f.name: getattr(v, f.name) for f in dataclasses.fields(v)}
    if isinstance(v, tuple) and hasattr(v, "_fields"):
        return dict(zip(v._fields, v))
    return None


def _enc(v, where):
    """JSON for a static value; TypeError naming `where` for anything else."""
    t = type(v)
    if v is None or t in (bool, int, str):
        return v
    if t is float:
        return v if math.isfinite(v) else {"$": "float", "v": repr(v)}
    if t is list:
        return [_enc(x, f"{where}[{i}]") for i, x in enumerate(v)]
    if t is tuple:
        return {"$": "tuple", "v": [_enc(x, f"{where}[{i}]") for i, x in enumerate(v)]}
    if t is dict:
        for k in v:
            if type(k) not in (str, int):
                raise TypeError(f"io: {where} has the key {k!r}; only str and int keys can be "
                                "stored")
        return {"$": "dict", "v": [[k, _enc(x, f"{where}[{k!r}]")] for k, x in v.items()]}
    if isinstance(v, np.dtype):
        return {"$": "dtype", "v": v.name}
    if isinstance(v, type) and issubclass(v, np.generic):
        return {"$": "scalar_type", "v": np.dtype(v).name}
    if isinstance(v, np.generic) and v.dtype.kind in "biufc":
        return {"$": "scalar", "dtype": v.dtype.name, "v": _enc(v.item(), where)}
    name = _NAMES.get(t)
    fields = _static_fields(v) if name is not None else None
    if fields is None:
        raise TypeError(f"io: {where} is a {t.__module__}.{t.__qualname__}, which a checkpoint "
                        "cannot store: use numbers, strings, bools, None, tuples, lists, dicts, "
                        "NumPy dtypes, or a dataclass/namedtuple registered with "
                        "io.register_type")
    return {"$": "type", "name": name,
            "fields": {k: _enc(x, f"{where}.{k}") for k, x in fields.items()}}


def _construct(name, cls, fields, fail):
    """An instance of `cls`, registered as `name`, from its stored fields, by its constructor."""
    if dataclasses.is_dataclass(cls):
        declared = {f.name: f for f in dataclasses.fields(cls)}
    else:
        declared = {f: None for f in cls._fields}
    if set(fields) != set(declared):
        fail(f"the stored {name!r} has fields {sorted(fields)}, the class registered under "
             f"that name ({cls.__qualname__}) has {sorted(declared)}")
    init = {k: v for k, v in fields.items() if declared[k] is None or declared[k].init}
    try:
        obj = cls(**init)
        for k in set(fields) - set(init):
            object.__setattr__(obj, k, fields[k])
    except Exception as e:
        fail(f"{cls.__qualname__}(**stored fields) raised {type(e).__name__}: {e}")
    return obj


def _raiser(prefix):
    """`fail(msg)` raising CheckpointError(prefix + msg), for the JSON readers."""
    def fail(msg):
        raise CheckpointError(prefix + msg)
    return fail


def _dec(j, fail, fname):
    """Inverse of `_enc`; `fail(msg)` raises CheckpointError for malformed JSON."""
    if j is None or type(j) in (bool, int, float, str):
        return j
    if type(j) is list:
        return [_dec(x, fail, fname) for x in j]
    if type(j) is not dict or not isinstance(j.get("$"), str):
        fail(f"unexpected value {j!r:.100}")
    tag, v = j["$"], j.get("v")
    if tag == "float" and v in ("nan", "inf", "-inf"):
        return float(v)
    if tag == "tuple" and type(v) is list:
        return tuple(_dec(x, fail, fname) for x in v)
    if tag == "dict" and type(v) is list:
        if not all(type(p) is list and len(p) == 2 and type(p[0]) in (str, int) for p in v):
            fail("a dict's items must be [key, value] pairs with str or int keys")
        return {k: _dec(x, fail, fname) for k, x in v}
    if tag in ("dtype", "scalar_type", "scalar"):
        code = j.get("dtype") if tag == "scalar" else v
        if not isinstance(code, str) or code not in _ST_CODE:
            fail(f"unknown dtype {code!r:.50}")
        dt = _numpy_dtype(_ST_CODE[code], f"{fname}: ")
        if tag == "dtype":
            return dt
        if tag == "scalar_type":
            return dt.type
        x = _dec(v, fail, fname)
        if type(x) not in (bool, int, float, complex):
            fail(f"a NumPy scalar holds {x!r:.50}")
        return dt.type(x)
    if tag == "type" and isinstance(j.get("name"), str) and type(j.get("fields")) is dict:
        cls = _registered(j["name"], fname)
        if not (dataclasses.is_dataclass(cls) or _is_namedtuple_class(cls)):
            fail(f"{j['name']!r} is registered as a pytree node type, not a dataclass or "
                 "namedtuple, so it cannot be a stored value")
        return _construct(j["name"], cls, {k: _dec(x, fail, fname)
                                           for k, x in j["fields"].items()}, fail)
    fail(f"malformed tagged value {j!r:.100}")


# ----------------------------------------------------------------------------------------------
# Trees <-> JSON


def _to_host(x, where):
    if hasattr(x, "get") and not isinstance(x, (np.ndarray, np.generic)):  # CuPy array
        x = x.get()
    try:
        a = np.asarray(x)
    except Exception as e:
        raise TypeError(f"io.save: leaf {where!r} is not an array ({type(x).__name__}): {e}") from e
    if a.dtype.kind not in "biufcV" or a.dtype.name not in _ST_CODE:
        raise TypeError(f"io.save: leaf {where!r} has dtype {a.dtype}; a checkpoint stores "
                        f"{', '.join(_ST_CODE)} (cast it, e.g. complex128 -> two float64 arrays)")
    return a if a.flags.c_contiguous else a.copy(order="C")  # (ascontiguousarray: 0-d -> 1-d)


def _encode(x, path, off, tensors, strict):
    """JSON description of `x`; fills `tensors` with its leaves, named by path, except the paths
    in `off` (masked out: recorded as holes). With `strict`, every node type must be
    registered (the file must describe itself)."""
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
                "c": [_encode(x[k], path + [str(k)], off, tensors, strict) for k in keys]}
    if t is list or t is tuple:
        return {"t": t.__name__,
                "c": [_encode(c, path + [str(i)], off, tensors, strict) for i, c in enumerate(x)]}
    pairs, treedef = tu.tree_flatten_with_path(x, is_leaf=lambda y: y is not x)
    if not (len(pairs) == 1 and pairs[0][0] == () and pairs[0][1] is x):   # a container node
        keys = [tu.path_to_str(p) for p, _ in pairs]
        node = {"t": "node", "type": t.__qualname__, "k": keys,
                "c": [_encode(c, path + [k], off, tensors, strict)
                      for k, (_, c) in zip(keys, pairs)]}
        name = _NAMES.get(t)
        if name is not None:
            node["name"] = name
            node["aux"] = _enc(treedef.node_data()[1], f"the aux data of the {t.__qualname__} "
                                                       f"at {where or '<root>'!r}")
        elif strict:
            raise TypeError(f"io.save_train_state: the {t.__qualname__} at {where or '<root>'!r} "
                            "is not a registered type, so the file could not rebuild it: call "
                            f"io.register_type({t.__qualname__}) where the class is defined")
        return node
    if where in off:
        return {"t": "hole"}
    if where in tensors:
        raise ValueError(f"io.save: two leaves have the path {where!r} (a dict key containing "
                         "'/'?); paths must be unique")
    a = tensors[where] = _to_host(x, where)
    node = {"t": "leaf", "n": where, "dtype": a.dtype.name, "shape": list(a.shape)}
    if t in (bool, int, float, complex):
        node["py"] = t.__name__
    elif isinstance(x, np.generic):
        node["py"] = "numpy"                    # a NumPy scalar comes back as one
    return node


_PY = {"bool": bool, "int": int, "float": float, "complex": complex, "numpy": lambda a: a[()]}


class _Decoder:
    """Rebuilds a tree from its JSON description, turning every malformed field into a
    CheckpointError that names the file, the tree path and the field."""

    def __init__(self, fname, tensors, rebuild_nodes=True):
        self.fname, self.tensors, self.used = fname, tensors, set()
        self.rebuild_nodes = rebuild_nodes   # False: only check (the caller fills `like=`)

    def fail(self, where, msg):
        raise CheckpointError(f"{self.fname}: damaged funcgrad metadata at tree path "
                              f"{where or '<root>'!r}: {msg}")

    def field(self, node, key, typ, where):
        v = node.get(key)
        if not isinstance(v, typ):
            self.fail(where, f"field {key!r} is {v!r:.80}, expected a {typ.__name__}")
        return v

    def children(self, node, where, n=None):
        c = self.field(node, "c", list, where)
        if n is not None and len(c) != n:
            self.fail(where, f"{n} keys but {len(c)} children")
        return c

    def decode(self, node, where=""):
        if not isinstance(node, dict):
            self.fail(where, f"a tree node is {node!r:.80}, expected a JSON object")
        t = self.field(node, "t", str, where)
        if t in ("none", "hole"):
            return None
        if t == "leaf":
            return self.leaf(node, where)
        sub = lambda k: f"{where}/{k}".lstrip("/")
        if t == "dict":
            keys = self.field(node, "k", list, where)
            for k in keys:
                if not (isinstance(k, list) and len(k) == 2 and
                        ((k[0] == "s" and type(k[1]) is str) or (k[0] == "i" and _is_int(k[1])))):
                    self.fail(where, f"dict key entry {k!r:.80} is not ['s', str] or ['i', int]")
            if len({k[1] for k in keys}) != len(keys):
                self.fail(where, "duplicate dict keys")
            kids = self.children(node, where, len(keys))
            return {k: self.decode(c, sub(k)) for (_, k), c in zip(keys, kids)}
        if t in ("list", "tuple"):
            out = [self.decode(c, sub(i)) for i, c in enumerate(self.children(node, where))]
            return out if t == "list" else tuple(out)
        if t == "node":
            return self.node(node, where, sub)
        self.fail(where, f"unknown node kind {t!r:.40}")

    def leaf(self, node, where):
        name = self.field(node, "n", str, where)
        if name not in self.tensors:
            self.fail(where, f"the tensor {name!r} it names is not in the file")
        if name in self.used:
            self.fail(where, f"the tensor {name!r} is named by two leaves")
        self.used.add(name)
        a = self.tensors[name]
        if "dtype" in node or "shape" in node:          # v2 records (v1 files have none)
            dtype = self.field(node, "dtype", str, where)
            shape = self.field(node, "shape", list, where)
            if dtype != a.dtype.name:
                raise CheckpointError(
                    f"{self.fname}: tensor {name!r} is {a.dtype.name} in the safetensors "
                    f"header but was saved as {dtype} (the header was altered or damaged)")
            if tuple(shape) != a.shape:
                raise CheckpointError(
                    f"{self.fname}: tensor {name!r} has shape {a.shape} in the safetensors "
                    f"header but was saved with shape {tuple(shape)} (the header was altered)")
        py = node.get("py")
        if py is None:
            return a
        if py not in _PY or a.shape != ():
            self.fail(where, f"field 'py' is {py!r:.40} for a tensor of shape {a.shape}")
        return _PY[py](a)

    def node(self, node, where, sub):
        keys = self.field(node, "k", list, where)
        kids = self.children(node, where, len(keys))
        if not all(type(k) is str for k in keys):
            self.fail(where, "node keys must be strings")
        if not self.rebuild_nodes:
            return [self.decode(c, sub(k)) for k, c in zip(keys, kids)]
        name = node.get("name")
        if name is None:
            tname = node.get("type", "node")
            raise CheckpointError(f"{self.fname}: the tree holds a {tname} at "
                                  f"{where or '<root>'!r}, which is not a registered type, so it "
                                  "is rebuilt only from a template: call io.load(path, "
                                  "like=tree_of_that_structure)")
        if not isinstance(name, str):
            self.fail(where, f"field 'name' is {name!r:.80}, expected str")
        cls = _registered(name, self.fname)
        fail = lambda msg: self.fail(where, f"{name}: {msg}")
        aux = _dec(node.get("aux"), fail, self.fname)
        values = [self.decode(c, sub(k)) for k, c in zip(keys, kids)]
        leaf = tu.tree_structure(0)
        try:
            treedef = tu.PyTreeDef.make_from_node_data_and_children((cls, aux), [leaf] * len(kids))
            obj = treedef.unflatten(values)
            pairs, again = tu.tree_flatten_with_path(obj, is_leaf=lambda y: y is not obj)
            got = [tu.path_to_str(p) for p, _ in pairs]
            same_aux = again.node_data() == (cls, aux)
        except CheckpointError:
            raise
        except Exception as e:
            fail(f"rebuilding it from the stored aux data and {len(kids)} children raised "
                 f"{type(e).__name__}: {e}")
        if got != keys:
            fail(f"the file's node has children {keys}, the registered class gives {got}")
        if not same_aux:
            fail(f"the stored aux data {aux!r:.80} does not survive a rebuild (the registered "
                 "class changed?)")
        return obj


# ----------------------------------------------------------------------------------------------
# Atomic writes and stale temporaries

_live: set[str] = set()            # temporaries this process is writing now
_live_lock = threading.Lock()


def _temp_pattern(base):
    return re.compile(r"\." + re.escape(base) + r"\.[A-Za-z0-9_]+\.tmp\Z")


def _sweep(path):
    """Delete temporaries `.<name>.<random>.tmp` of `path` left by killed saves: those no
    process holds locked and older than a few seconds (a save takes its lock right after
    creating the file). Never raises."""
    if fcntl is None:
        return
    folder, base = os.path.split(os.path.abspath(path))
    pattern = _temp_pattern(base)
    try:
        entries = [e for e in os.scandir(folder) if pattern.match(e.name)]
    except OSError:
        return
    now = time.time()
    for e in entries:
        with _live_lock:
            if e.path in _live:
                continue
        try:
            if now - e.stat(follow_symlinks=False).st_mtime < _STALE_AFTER_S:
                continue
            fd = os.open(e.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)                   # a live save holds it
            continue
        try:
            os.unlink(e.path)
        except OSError:
            pass
        finally:
            os.close(fd)


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


def _atomic_write(path, data, who):
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{who}: the folder {folder!r} does not exist (create it first, "
                                f"e.g. os.makedirs({folder!r}, exist_ok=True))")
    _sweep(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    with _live_lock:
        _live.add(tmp)
    try:
        with os.fdopen(fd, "wb") as f:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # held until the rename: a live save
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
    finally:
        with _live_lock:
            _live.discard(tmp)
    _fsync_dir(folder)


def atomic_write(path, data) -> None:
    """Write the bytes `data` to `path` as `save` does: through a temporary file in the same
    (existing) folder, fsynced and renamed over the target."""
    _atomic_write(os.fspath(path), data, "io.atomic_write")


def write_safetensors(path, tensors, metadata=None) -> None:
    """Write a plain safetensors file atomically: `tensors` ({name: array}, NumPy or CuPy; the
    dtypes safetensors stores, bfloat16 included) and string `metadata`, nothing else, as other
    tools (transformers, PEFT) write and read them."""
    path = os.fspath(path)
    arrays = {name: _to_host(x, name) for name, x in tensors.items()}
    _atomic_write(path, st_numpy.save(arrays, metadata=metadata), "io.write_safetensors")


def _serialize(tree, mask, who, strict=False, extra=None):
    off = set()
    if mask is not None:
        pairs = tu.tree_flatten_with_path(tree)[0]
        on = _masks.leaf_mask(mask, tree, who)
        off = {tu.path_to_str(p) for (p, _), m in zip(pairs, on) if not m}
    tensors: dict[str, np.ndarray] = {}
    structure = _encode(tree, [], off, tensors, strict)
    crc = {k: zlib.crc32(v.reshape(-1).view(np.uint8)) for k, v in tensors.items()}
    meta = {"format": _FORMAT, "tree": structure, "partial": mask is not None, "crc32": crc,
            **(extra or {})}
    text = json.dumps(meta)
    return st_numpy.save(tensors, metadata={"funcgrad": text,
                                            _META_CRC: str(zlib.crc32(text.encode()))})


# ----------------------------------------------------------------------------------------------
# Save / load


def save(path, tree, mask=None) -> None:
    """Write `tree` (or its True leaves under `mask`) to `path` atomically.

    The folder must exist. Leaves are numeric or bool arrays (NumPy, CuPy, Python scalars);
    containers are dicts with str/int keys, lists, tuples, None and node types (registered ones
    load back by themselves, others with `like=`).
    """
    path = os.fspath(path)
    _atomic_write(path, _serialize(tree, mask, "io.save"), "io.save")


def _read(path):
    """`(meta or None, tensors)`: the funcgrad metadata (None for a plain safetensors file) and
    every tensor, all checked."""
    _sweep(path)
    infos, file_meta = read_safetensors_header(path)
    tensors = _read_tensors(path, infos, list(infos))
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
    if not isinstance(crc, dict) or not all(_is_int(v) for v in crc.values()):
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


def _decode_checked(meta, tensors, path, rebuild_nodes=True):
    """The tree of a funcgrad file, every field and every tensor's dtype and shape checked."""
    d = _Decoder(path, tensors, rebuild_nodes)
    tree = d.decode(meta["tree"])
    unused = sorted(set(tensors) - d.used)
    if unused:
        raise CheckpointError(f"{path}: damaged funcgrad metadata: tensor {unused[0]!r} is in "
                              "the file but no leaf of the tree names it")
    return tree


def _fill_like(path, tensors, like, partial):
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
    meta, tensors = _read(path)
    if meta is None:
        return tensors if like is None else _fill_like(path, tensors, like, partial=False)
    if like is None:
        return _decode_checked(meta, tensors, path)
    _decode_checked(meta, tensors, path, rebuild_nodes=False)
    return _fill_like(path, tensors, like, meta["partial"])


# ----------------------------------------------------------------------------------------------
# Training-state checkpoints


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
    extra = {"train_state": {"config": _enc(state.config, "TrainState.config"),
                             "metadata": _enc(state.metadata, "TrainState.metadata")}}
    _atomic_write(path, _serialize(tree, None, "io.save_train_state", True, extra),
                  "io.save_train_state")


def load_train_state(path, like: TrainState | None = None) -> TrainState:
    """Read a file written by `save_train_state`. `like` (a TrainState) is needed only for node
    types not registered in this process; its arrays then check shapes and dtypes."""
    path = os.fspath(path)
    meta, tensors = _read(path)
    ts = meta.get("train_state") if meta is not None else None
    if ts is None:
        raise CheckpointError(f"{path}: not a training-state checkpoint (no 'train_state' "
                              "metadata); files written by io.save load with io.load")
    if not isinstance(ts, dict) or "config" not in ts or "metadata" not in ts:
        raise CheckpointError(f"{path}: damaged funcgrad metadata: field 'train_state' must "
                              "hold 'config' and 'metadata'")

    prefix = f"{path}: damaged funcgrad metadata: train_state."
    config = _dec(ts["config"], _raiser(prefix + "config: "), path)
    metadata = _dec(ts["metadata"], _raiser(prefix + "metadata: "), path)
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{path}: damaged funcgrad metadata: train_state.metadata is a "
                              f"{type(metadata).__name__}, not a dict")
    if like is None:
        tree = _decode_checked(meta, tensors, path)
    else:
        _decode_checked(meta, tensors, path, rebuild_nodes=False)
        tree = _fill_like(path, tensors, {k: getattr(like, k) for k in _STATE_ARRAYS}, False)
    if not isinstance(tree, dict) or set(tree) != set(_STATE_ARRAYS):
        raise CheckpointError(f"{path}: damaged funcgrad metadata: the tree of a training state "
                              f"must be a dict of {', '.join(_STATE_ARRAYS)}")
    return TrainState(**tree, config=config, metadata=metadata)


_register_funcgrad_types()
