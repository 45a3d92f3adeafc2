"""Static values (node aux data, configs, user metadata) <-> JSON: numbers, strings, bools,
None, tuples, lists, dicts, NumPy dtypes and scalars, and registered dataclasses and
namedtuples (rebuilt by their constructors, so their checks run). Containers are tagged, so
tuples stay tuples and a user dict can never be mistaken for a tag.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .registry import is_namedtuple_class, registered, registered_name
from .safetensors_format import DTYPE_CODES, CheckpointError, numpy_dtype


def _static_fields(v):
    if dataclasses.is_dataclass(v):
        return {f.name: getattr(v, f.name) for f in dataclasses.fields(v)}
    if isinstance(v, tuple) and hasattr(v, "_fields"):
        return dict(zip(v._fields, v))
    return None


def encode_static(v, where):
    """JSON for a static value; TypeError naming `where` for anything else."""
    t = type(v)
    if v is None or t in (bool, int, str):
        return v
    if t is float:
        return v if math.isfinite(v) else {"$": "float", "v": repr(v)}
    if t is list:
        return [encode_static(x, f"{where}[{i}]") for i, x in enumerate(v)]
    if t is tuple:
        return {"$": "tuple", "v": [encode_static(x, f"{where}[{i}]") for i, x in enumerate(v)]}
    if t is dict:
        for k in v:
            if type(k) not in (str, int):
                raise TypeError(f"io: {where} has the key {k!r}; only str and int keys can be "
                                "stored")
        return {"$": "dict", "v": [[k, encode_static(x, f"{where}[{k!r}]")] for k, x in v.items()]}
    if isinstance(v, np.dtype):
        return {"$": "dtype", "v": v.name}
    if isinstance(v, type) and issubclass(v, np.generic):
        return {"$": "scalar_type", "v": np.dtype(v).name}
    if isinstance(v, np.generic) and v.dtype.kind in "biufc":
        return {"$": "scalar", "dtype": v.dtype.name, "v": encode_static(v.item(), where)}
    name = registered_name(t)
    fields = _static_fields(v) if name is not None else None
    if fields is None:
        raise TypeError(f"io: {where} is a {t.__module__}.{t.__qualname__}, which a checkpoint "
                        "cannot store: use numbers, strings, bools, None, tuples, lists, dicts, "
                        "NumPy dtypes, or a dataclass/namedtuple registered with "
                        "io.register_type")
    return {"$": "type", "name": name,
            "fields": {k: encode_static(x, f"{where}.{k}") for k, x in fields.items()}}


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


def raiser(prefix):
    """`fail(msg)` raising CheckpointError(prefix + msg), for the JSON readers."""
    def fail(msg):
        raise CheckpointError(prefix + msg)
    return fail


def decode_static(j, fail, fname):
    """Inverse of `encode_static`; `fail(msg)` raises CheckpointError for malformed JSON."""
    if j is None or type(j) in (bool, int, float, str):
        return j
    if type(j) is list:
        return [decode_static(x, fail, fname) for x in j]
    if type(j) is not dict or not isinstance(j.get("$"), str):
        fail(f"unexpected value {j!r:.100}")
    tag, v = j["$"], j.get("v")
    if tag == "float" and v in ("nan", "inf", "-inf"):
        return float(v)
    if tag == "tuple" and type(v) is list:
        return tuple(decode_static(x, fail, fname) for x in v)
    if tag == "dict" and type(v) is list:
        if not all(type(p) is list and len(p) == 2 and type(p[0]) in (str, int) for p in v):
            fail("a dict's items must be [key, value] pairs with str or int keys")
        return {k: decode_static(x, fail, fname) for k, x in v}
    if tag in ("dtype", "scalar_type", "scalar"):
        code = j.get("dtype") if tag == "scalar" else v
        if not isinstance(code, str) or code not in DTYPE_CODES:
            fail(f"unknown dtype {code!r:.50}")
        dt = numpy_dtype(DTYPE_CODES[code], f"{fname}: ")
        if tag == "dtype":
            return dt
        if tag == "scalar_type":
            return dt.type
        x = decode_static(v, fail, fname)
        if type(x) not in (bool, int, float, complex):
            fail(f"a NumPy scalar holds {x!r:.50}")
        return dt.type(x)
    if tag == "type" and isinstance(j.get("name"), str) and type(j.get("fields")) is dict:
        cls = registered(j["name"], fname)
        if not (dataclasses.is_dataclass(cls) or is_namedtuple_class(cls)):
            fail(f"{j['name']!r} is registered as a pytree node type, not a dataclass or "
                 "namedtuple, so it cannot be a stored value")
        return _construct(j["name"], cls, {k: decode_static(x, fail, fname)
                                           for k, x in j["fields"].items()}, fail)
    fail(f"malformed tagged value {j!r:.100}")
