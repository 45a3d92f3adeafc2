"""Quantized frozen weights: int8 per channel and 4-bit NF4 (QLoRA's data type), stored packed
and dequantized tile by tile inside the matmul.

    qparams = quant.quantize(params, "nf4", mask=masks.mask_from_paths(params, include=[...]))
    y = quant.linear(x, qparams["w"], layout="in_out")       # x @ W, W never materialized
    params = quant.dequantize_tree(qparams)                  # back to float arrays

**int8** (`quantize_int8`): one float32 scale per channel along `axis`, `q = round(w / s)` with
`s = absmax(channel) / 127` (the absmax "vector-wise" quantization of LLM.int8, without its
outlier decomposition); 1 byte per element.

**NF4** (`quantize_nf4`): as bitsandbytes' `quantize_4bit(quant_type="nf4",
compress_statistics=True)`, used by QLoRA (Dettmers et al. 2023). The tensor is flattened and cut
into blocks of 64; each block is divided by its absolute maximum and every element becomes the
index of the nearest of the 16 NormalFloat values `NF4_CODE` (quantiles of a normal
distribution, normalized to [-1, 1], with an exact zero). Two indices are packed per byte, the
first element in the high nibble. Double quantization: the per-block absmax constants minus their
mean are quantized again, blockwise (256 constants a block), to 8 bits with bitsandbytes'
signed dynamic map (`DYNAMIC_CODE`), keeping one float32 scale per 256 blocks and the mean: about
4.13 bits per weight.

A quantized weight is a pytree (`Int8Array`, `NF4Array`) whose children are its packed arrays and
whose shape, dtype and scheme are static, so it passes through `jit`, `grad` (as a constant: no
gradient reaches it) and `io.save`. `linear(x, w)` is one primitive per scheme: its
implementation (eager, and what `jit`'s generated code calls) dequantizes a tile of rows at a
time (at most `lax.quantized.TILE_ELEMENTS` floats) and multiplies it at once, so a float copy of
a whole layer never exists; its derivative with respect to x is the same primitive with the
other layout (W's transpose), which needs only the packed weight. The primitives are in
funcgrad/lax/quantized.py. `take(w, ids)` dequantizes just the rows
it gathers (embedding tables).

Training: LoRA adapters (float32) on top of the quantized base (`lora.init` accepts quantized
leaves; `lora.merge` folds the adapters into a float checkpoint). Post-training quantization for
deployment: `quantize` a trained model and compare its metric (see examples/compress.py).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from . import lax
from . import numpy as fnp
from . import tree_util as tu
from .devices import on_default_backend

__all__ = ["NF4_CODE", "DYNAMIC_CODE", "Int8Array", "NF4Array", "quantize_int8",
           "quantize_nf4", "quantize", "dequantize", "dequantize_tree", "is_quantized",
           "linear", "take", "rows", "nbytes"]

# The data types, and the primitives that dequantize a tile at a time: funcgrad/lax/quantized.py.
NF4_CODE, DYNAMIC_CODE = lax.quantized.NF4_CODE, lax.quantized.DYNAMIC_CODE
NF4_BLOCK, ABSMAX_BLOCK = lax.quantized.NF4_BLOCK, lax.quantized.ABSMAX_BLOCK


# ---------------------------------------------------------------------------------------------
# The quantized arrays


@dataclasses.dataclass
class Int8Array:
    """A weight quantized to int8 with one float32 scale per channel along `axis`:
    w ~= q * scale (scale broadcast along `axis`). `dtype`: the float dtype it stands for."""

    q: Any
    scale: Any
    axis: int = dataclasses.field(default=0, metadata={"static": True})
    dtype: Any = dataclasses.field(default=np.dtype(np.float32), metadata={"static": True})

    @property
    def shape(self):
        return tuple(self.q.shape)

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def size(self):
        return math.prod(self.shape)

    def __repr__(self):
        return (f"Int8Array(shape={self.shape}, dtype={np.dtype(self.dtype).name}, "
                f"axis={self.axis}, {nbytes(self):,} bytes)")


@dataclasses.dataclass
class NF4Array:
    """A weight quantized to NF4 in blocks of `block_size` (see the module docstring).

    packed: uint8 [padded size / 2]; absmax: uint8 [blocks] (double quantized) or float32;
    absmax_scale: float32 [ceil(blocks / 256)] and absmax_offset: float32 [] (the second-level
    scales and the mean, both empty/zero without double quantization)."""

    packed: Any
    absmax: Any
    absmax_scale: Any
    absmax_offset: Any
    shape: tuple = dataclasses.field(default=(), metadata={"static": True})
    dtype: Any = dataclasses.field(default=np.dtype(np.float32), metadata={"static": True})
    block_size: int = dataclasses.field(default=NF4_BLOCK, metadata={"static": True})

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def size(self):
        return math.prod(self.shape)

    @property
    def double_quant(self):
        return np.dtype(self.absmax.dtype) == np.uint8

    def __repr__(self):
        return (f"NF4Array(shape={self.shape}, dtype={np.dtype(self.dtype).name}, "
                f"block_size={self.block_size}, double_quant={self.double_quant}, "
                f"{nbytes(self):,} bytes)")


tu.register_dataclass(Int8Array)
tu.register_dataclass(NF4Array)

_QUANTIZED = (Int8Array, NF4Array)


def is_quantized(x) -> bool:
    return isinstance(x, _QUANTIZED)


def _host(x):
    get = getattr(x, "get", None)
    return get() if get is not None and not isinstance(x, np.ndarray) else np.asarray(x)


def _float_dtype(w, dtype):
    dt = np.dtype(dtype) if dtype is not None else np.dtype(getattr(w, "dtype", np.float32))
    if not fnp.issubdtype(dt, fnp.floating):
        raise TypeError(f"quant: can only quantize floating weights, got {dt}")
    return dt


# ---------------------------------------------------------------------------------------------
# Quantization (on the host, once: at load time or after training)


def quantize_int8(w, axis=0, dtype=None) -> Int8Array:
    """`w` in int8 with one scale per index along `axis` (absmax / 127, round to nearest).
    `dtype` (default: w's) is the float dtype `dequantize` and `linear` produce."""
    dt = _float_dtype(w, dtype)
    a = _host(w).astype(np.float32)
    axis = axis % a.ndim if a.ndim else 0
    others = tuple(i for i in range(a.ndim) if i != axis)
    absmax = np.max(np.abs(a), axis=others, keepdims=True) if others else np.abs(a)
    scale = (absmax / 127.0).astype(np.float32)
    safe = np.where(scale == 0, 1, scale)
    q = np.clip(np.rint(a / safe), -127, 127).astype(np.int8)
    return _placed(Int8Array(q, scale.reshape(-1) if a.ndim else scale, axis, dt), w)


def _blockwise_absmax(flat, block):
    blocks = flat.reshape(-1, block)
    absmax = np.max(np.abs(blocks), axis=1)
    return blocks, absmax


def _nearest(values, code):
    """Index of the nearest entry of the sorted `code` (ties to the lower one, as bnb)."""
    mids = (code[:-1] + code[1:]) / 2
    return np.searchsorted(mids, values, side="left").astype(np.uint8)


def _quantize_dynamic(x, block=ABSMAX_BLOCK):
    """8-bit blockwise quantization with the dynamic map: (codes uint8, scale per block)."""
    n = x.size
    pad = (-n) % block
    flat = np.concatenate([x, np.zeros(pad, np.float32)]) if pad else x
    blocks, scale = _blockwise_absmax(flat, block)
    safe = np.where(scale == 0, 1, scale)[:, None]
    codes = _nearest(np.clip(blocks / safe, -1, 1).ravel(), DYNAMIC_CODE)[:n]
    return codes, scale.astype(np.float32)


def quantize_nf4(w, block_size=NF4_BLOCK, double_quant=True, dtype=None) -> NF4Array:
    """`w` in NF4, blockwise (see the module docstring); `dtype` (default: w's) is the float
    dtype `dequantize` and `linear` produce."""
    dt = _float_dtype(w, dtype)
    if block_size < 2 or block_size % 2:
        raise ValueError(f"quantize_nf4: block_size must be an even number >= 2, got "
                         f"{block_size}")
    a = _host(w).astype(np.float32).ravel()
    n = a.size
    pad = (-n) % block_size
    flat = np.concatenate([a, np.zeros(pad, np.float32)]) if pad else a
    blocks, absmax = _blockwise_absmax(flat, block_size)
    safe = np.where(absmax == 0, 1, absmax)[:, None]
    idx = _nearest(np.clip(blocks / safe, -1, 1).ravel(), NF4_CODE)
    packed = (idx[0::2] << 4) | idx[1::2]
    absmax = absmax.astype(np.float32)
    if double_quant:
        offset = np.float32(absmax.mean())
        codes, scale2 = _quantize_dynamic((absmax - offset).astype(np.float32))
        return _placed(NF4Array(packed, codes, scale2, np.asarray(offset, np.float32),
                                tuple(np.shape(w)), dt, block_size), w)
    return _placed(NF4Array(packed, absmax, np.zeros(0, np.float32), np.zeros((), np.float32),
                            tuple(np.shape(w)), dt, block_size), w)


def _placed(q, like):
    """The quantized arrays (computed on the host) where `like` is, or on the default backend
    (the GPU under FUNCGRAD_BACKEND=gpu)."""
    return tu.tree_map(lambda a: on_default_backend(a, like=like), q)


def quantize(params, scheme="nf4", mask=None, *, axis=0, block_size=NF4_BLOCK,
             double_quant=True, dtype=None):
    """`params` with the leaves `mask` selects (default: floating leaves with two or more
    dimensions) replaced by quantized arrays. `scheme`: "nf4" or "int8". `axis` (int8): the
    channel axis, an int or `axis(path: str, leaf) -> int` (pretrained models pass their
    weights' layout: the output axis). `dtype`: the float dtype the quantized leaves stand for
    (default: each leaf's own)."""
    if scheme not in ("nf4", "int8"):
        raise ValueError(f"quant.quantize: scheme must be 'nf4' or 'int8', got {scheme!r}")
    pairs, treedef = tu.tree_flatten_with_path(params)
    if mask is None:
        on = [np.ndim(x) >= 2 and fnp.issubdtype(getattr(x, "dtype", np.float32), fnp.floating)
              for _, x in pairs]
    else:
        from . import masks
        on = masks.leaf_mask(mask, params, "quant.quantize")
    out = []
    for (path, x), m in zip(pairs, on):
        if not m:
            out.append(x)
        elif scheme == "nf4":
            out.append(quantize_nf4(x, block_size, double_quant, dtype))
        else:
            ax = axis(tu.path_to_str(path), x) if callable(axis) else axis
            out.append(quantize_int8(x, ax, dtype))
    return tu.tree_unflatten(treedef, out)


# ---------------------------------------------------------------------------------------------
# Dequantization, written against an array namespace (NumPy or CuPy): whole, or rows at a time


def _arrays(w):
    if isinstance(w, NF4Array):
        return "nf4", (w.packed, w.absmax, w.absmax_scale, w.absmax_offset), \
            {"shape": tuple(w.shape), "block_size": w.block_size}
    return "int8", (w.q, w.scale), {"shape": tuple(w.shape), "axis": w.axis % max(w.ndim, 1)}


def dequantize(w):
    """The float array a quantized weight stands for (in its `dtype`); other leaves as they
    are. This materializes the whole weight: use `linear` or `take` to compute with it."""
    if not is_quantized(w):
        return w
    kind, arrays, meta = _arrays(w)
    return lax.quantized_dequantize(kind, arrays, dtype=w.dtype, **_static(meta))


def rows(w, r0, r1):
    """Rows r0:r1 (along axis 0) of a weight, quantized as `w` is, or sliced for a plain array:
    a tile that `dequantize` turns into floats on its own (see `layers.linear_cross_entropy`).
    NF4 rows must start and end on block boundaries (r * prod(shape[1:]) divisible by the block
    size; true for every row when the row length is a multiple of 64); their absmax constants
    come out as float32 (double quantization undone for the tile)."""
    if not is_quantized(w):
        return w[r0:r1]
    shape = (r1 - r0,) + tuple(w.shape[1:])
    if isinstance(w, Int8Array):
        scale = w.scale[r0:r1] if w.axis % max(w.ndim, 1) == 0 else w.scale
        return Int8Array(w.q[r0:r1], scale, w.axis, w.dtype)
    cols = math.prod(w.shape[1:])
    a, b = r0 * cols, r1 * cols
    if a % w.block_size or (b % w.block_size and r1 != w.shape[0]):
        raise ValueError(f"quant.rows: rows {r0}:{r1} of an NF4 array of shape {w.shape} do not "
                         f"start and end on its blocks of {w.block_size}")
    b0, b1 = a // w.block_size, -(-b // w.block_size)
    absmax = w.absmax
    if w.double_quant:
        absmax = fnp.take(fnp.asarray(DYNAMIC_CODE), absmax[b0:b1].astype(np.int32)) * \
            w.absmax_scale[np.arange(b0, b1) // ABSMAX_BLOCK] + w.absmax_offset
    else:
        absmax = absmax[b0:b1]
    return NF4Array(w.packed[b0 * w.block_size // 2: b1 * w.block_size // 2], absmax,
                    np.zeros(0, np.float32), np.zeros((), np.float32), shape, w.dtype,
                    w.block_size)


def dequantize_tree(params):
    """`params` with every quantized leaf dequantized (a float checkpoint, e.g. for
    `pretrained.save`)."""
    return tu.tree_map(dequantize, params, is_leaf=is_quantized)


def nbytes(tree) -> int:
    """Bytes the arrays of `tree` hold (quantized leaves: their packed arrays and scales)."""
    return int(sum(int(np.prod(np.shape(x))) * np.dtype(x.dtype).itemsize
                   for x in tu.tree_leaves(tree) if hasattr(x, "dtype")))


def _static(meta):
    return {k: tuple(v) if isinstance(v, list) else v for k, v in meta.items()}


# ---------------------------------------------------------------------------------------------
# Computing with quantized weights (the primitives: funcgrad/lax/quantized.py)


def linear(x, w, bias=None, *, layout="out_in"):
    """x W^T + b (`layout="out_in"`, W stored [out, in] as PyTorch's nn.Linear) or x W + b
    (`"in_out"`, GPT-2's Conv1D) over the last axis of x, for a quantized W (tile by tile, see
    the module docstring) or a plain one. A weight of more than two dimensions is used as
    [shape[0], prod(shape[1:])]. The result has x's dtype (float32 inside)."""
    if layout not in ("out_in", "in_out"):
        raise ValueError(f"quant.linear: layout must be 'out_in' or 'in_out', got {layout!r}")
    if is_quantized(w):
        kind, arrays, meta = _arrays(w)
        x = fnp.asarray(x)
        y = lax.quantized_matmul(x, kind, arrays, layout=layout, **_static(meta))
    else:  # a plain weight, in its own dtype (dot_general widens it inside the call only)
        x = fnp.asarray(x)
        contract = 0 if layout == "in_out" else 1
        y = lax.dot_general(x, w, (((x.ndim - 1,), (contract,)), ((), ())))
    return y if bias is None else y + bias


def take(w, ids, axis=0):
    """Rows `ids` of a weight along axis 0 (an embedding lookup): for a quantized table only
    the gathered rows are dequantized. Plain arrays use fnp.take."""
    if not is_quantized(w):
        return fnp.take(w, ids, axis=axis)
    if axis != 0:
        raise ValueError("quant.take: quantized tables are gathered along axis 0")
    kind, arrays, meta = _arrays(w)
    ids = fnp.asarray(ids)
    if not fnp.issubdtype(ids.dtype, fnp.integer):
        raise TypeError(f"quant.take: ids must be integers, got {ids.dtype}")
    return lax.quantized_take(ids, kind, arrays, dtype=w.dtype, **_static(meta))


# Checkpoints rebuild quantized weights by name, without a template (io.load(path)).
from . import io as _io  # noqa: E402

_io.register_type(Int8Array, name="funcgrad.quant.Int8Array")
_io.register_type(NF4Array, name="funcgrad.quant.NF4Array")
