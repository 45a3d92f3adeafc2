"""Safetensors files: the header, validated field by field; the tensors read from it; plain files
written (tensors by name and string metadata, nothing of funcgrad's), as Hugging Face tools,
PyTorch and the `safetensors` package write and read them. `CheckpointError` is every reader's
error: it names the file and the field or tensor.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
import safetensors.numpy as st_numpy

from .atomic import atomic_write_as

__all__ = ["CheckpointError", "TensorInfo", "read_safetensors_header", "load_safetensors",
           "write_safetensors"]


_MAX_HEADER = 100 << 20       # as the safetensors library


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, corrupted, or does not match the tree it should fill."""


# safetensors dtype code -> (NumPy dtype name, bits per element)
_ST_DTYPES = {
    "BOOL": ("bool", 8), "U8": ("uint8", 8), "I8": ("int8", 8), "U16": ("uint16", 16),
    "I16": ("int16", 16), "U32": ("uint32", 32), "I32": ("int32", 32), "U64": ("uint64", 64),
    "I64": ("int64", 64), "F16": ("float16", 16), "F32": ("float32", 32), "F64": ("float64", 64),
    "C64": ("complex64", 64), "BF16": ("bfloat16", 16), "F8_E4M3": ("float8_e4m3fn", 8),
    "F8_E5M2": ("float8_e5m2", 8), "F8_E4M3FNUZ": ("float8_e4m3fnuz", 8),
    "F8_E5M2FNUZ": ("float8_e5m2fnuz", 8), "F8_E8M0": ("float8_e8m0fnu", 8),
}
DTYPE_CODES = {name: code for code, (name, _) in _ST_DTYPES.items()}


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One tensor's header entry: safetensors dtype code (`"F32"`), shape, and byte range
    `(begin, end)` in the data section."""

    dtype: str
    shape: tuple
    data_offsets: tuple

    @property
    def numpy_dtype(self) -> np.dtype:
        return numpy_dtype(self.dtype)


def numpy_dtype(code, where=""):
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


def is_int(v):
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
        if not isinstance(shape, list) or not all(is_int(d) and d >= 0 for d in shape):
            raise CheckpointError(f"{where}: shape must be a list of non-negative integers, got "
                                  f"{shape!r:.200}")
        if (not isinstance(offs, list) or len(offs) != 2 or not all(is_int(o) for o in offs)
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


def read_tensors(path, infos, names):
    """The arrays `names` of a file whose header `infos` was validated (writable NumPy arrays)."""
    data_start = None
    out = {}
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        data_start = 8 + n
        for name in names:
            t = infos[name]
            dtype = numpy_dtype(t.dtype, f"{path}: tensor {name!r}: ")
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
    return read_tensors(path, infos, names)


def host_array(x, where):
    if hasattr(x, "get") and not isinstance(x, (np.ndarray, np.generic)):  # CuPy array
        x = x.get()
    try:
        a = np.asarray(x)
    except Exception as e:
        raise TypeError(f"io.save: leaf {where!r} is not an array ({type(x).__name__}): {e}") from e
    if a.dtype.kind not in "biufcV" or a.dtype.name not in DTYPE_CODES:
        raise TypeError(f"io.save: leaf {where!r} has dtype {a.dtype}; a checkpoint stores "
                        f"{', '.join(DTYPE_CODES)} (cast it, e.g. complex128 -> two float64 "
                        "arrays)")
    return a if a.flags.c_contiguous else a.copy(order="C")  # (ascontiguousarray: 0-d -> 1-d)


def write_safetensors(path, tensors, metadata=None) -> None:
    """Write a plain safetensors file atomically: `tensors` ({name: array}, NumPy or CuPy; the
    dtypes safetensors stores, bfloat16 included) and string `metadata`, nothing else, as other
    tools (transformers, PEFT) write and read them."""
    path = os.fspath(path)
    arrays = {name: host_array(x, name) for name, x in tensors.items()}
    atomic_write_as(path, st_numpy.save(arrays, metadata=metadata), "io.write_safetensors")
