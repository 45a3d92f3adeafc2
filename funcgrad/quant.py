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
time (at most `TILE_ELEMENTS` floats) and multiplies it at once, so a float copy of a whole layer
never exists; its derivative with respect to x is the same primitive with the other layout
(W's transpose), which needs only the packed weight. `take(w, ids)` dequantizes just the rows
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
from .core import Primitive, ShapedArray, bind
from .devices import on_default_backend

__all__ = ["NF4_CODE", "DYNAMIC_CODE", "Int8Array", "NF4Array", "quantize_int8",
           "quantize_nf4", "quantize", "dequantize", "dequantize_tree", "is_quantized",
           "linear", "take", "rows", "nbytes", "TILE_ELEMENTS"]

# The 16 NF4 values, as bitsandbytes defines them (QLoRA, appendix E).
NF4_CODE = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], np.float32)


def _dynamic_map():
    """bitsandbytes' signed 8-bit dynamic map (`create_dynamic_map(signed=True)`): for each
    exponent e in 0..6, the midpoints of 2^e + 1 points evenly spaced in [0.1, 1], times
    10^(e - 6), with both signs; plus 0 and 1; sorted (256 values)."""
    values = [0.0, 1.0]
    for e in range(7):
        edges = np.linspace(0.1, 1.0, 2 ** e + 1)
        mids = (edges[:-1] + edges[1:]) / 2 * 10.0 ** (e - 6)
        values += list(mids) + list(-mids)
    return np.array(sorted(values), np.float32)


DYNAMIC_CODE = _dynamic_map()

NF4_BLOCK = 64            # elements per absmax (QLoRA, bitsandbytes' default)
ABSMAX_BLOCK = 256        # absmax constants per second-level scale (double quantization)
# The most float elements one tile of a dequantized weight holds (1 MiB of float32).
TILE_ELEMENTS = 1 << 18

# Byte -> its two NF4 values (high nibble first), as one uint64 per byte: a single gather
# dequantizes two weights.
_byte = np.arange(256)
_NF4_PAIRS = np.stack([NF4_CODE[_byte >> 4], NF4_CODE[_byte & 15]], 1).astype(np.float32)
_NF4_PAIRS_U64 = np.ascontiguousarray(_NF4_PAIRS).view(np.uint64).ravel()


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


def _absmax_values(xp, absmax, scale2, offset):
    """The float32 per-block absmax constants (undoing double quantization)."""
    if np.dtype(absmax.dtype) != np.uint8:
        return absmax
    code = xp.asarray(DYNAMIC_CODE)
    vals = code[absmax.astype(np.int64)]
    idx = xp.arange(absmax.shape[0]) // ABSMAX_BLOCK
    return vals * scale2[idx] + offset


def _nf4_flat(xp, packed, absmax_f32, a, b, block):
    """Dequantized flat elements [a, b) of an NF4 array, as float32."""
    ba, bb = a // block, -(-b // block)
    chunk = packed[ba * block // 2: bb * block // 2]
    vals = xp.asarray(_NF4_PAIRS_U64)[chunk.astype(np.int64) if xp is not np else chunk]
    vals = vals.view(np.float32).reshape(bb - ba, block)
    vals = vals * absmax_f32[ba:bb, None]
    return vals.reshape(-1)[a - ba * block: b - ba * block]


def _int8_rows(xp, q2, scale, axis_kind, r0, r1):
    """Rows r0:r1 of an int8 matrix (as 2-D [rows, cols]) in float32."""
    tile = q2[r0:r1].astype(np.float32)
    if axis_kind == "rows":
        return tile * scale[r0:r1, None]
    if axis_kind == "cols":
        return tile * scale[None, :]
    return tile * scale  # a scalar scale (0-d weight): never tiled


class _Rows:
    """Float32 rows of a quantized weight viewed as a matrix [R, C] (its first axis kept, the
    others flattened), for the scheme's arrays `arrays` (the primitive's operands)."""

    def __init__(self, xp, kind, meta, arrays):
        self.shape = meta["shape"]
        self.rows = self.shape[0] if self.shape else 1
        self.cols = math.prod(self.shape[1:]) if len(self.shape) > 1 else 1
        self.kind, self.xp = kind, xp
        if kind == "nf4":
            packed, absmax, scale2, offset = arrays
            self.packed, self.block = packed, meta["block_size"]
            self.absmax = _absmax_values(xp, absmax, scale2, offset)
        else:
            q, scale = arrays
            self.q2 = q.reshape(self.rows, self.cols)
            axis = meta["axis"]
            ndim = len(self.shape)
            self.scale = scale
            if ndim == 0:
                self.axis_kind = "scalar"
            elif axis == 0:
                self.axis_kind = "rows"
            elif ndim == 2:
                self.axis_kind = "cols"
            else:  # a channel axis among the flattened ones: broadcast it over the columns
                rest = self.shape[1:]
                per = np.ones(len(rest), int)
                per[axis - 1] = rest[axis - 1]
                s = xp.broadcast_to(scale.reshape(tuple(per)), rest).reshape(-1)
                self.scale, self.axis_kind = s, "cols"

    def get(self, r0, r1):
        if self.kind == "nf4":
            flat = _nf4_flat(self.xp, self.packed, self.absmax, r0 * self.cols, r1 * self.cols,
                             self.block)
            return flat.reshape(r1 - r0, self.cols)
        return _int8_rows(self.xp, self.q2, self.scale, self.axis_kind, r0, r1)

    def tiles(self):
        step = max(1, TILE_ELEMENTS // max(self.cols, 1))
        for r0 in range(0, self.rows, step):
            yield r0, min(self.rows, r0 + step)


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
    return bind(_DEQUANTIZE[kind], *arrays, dtype=np.dtype(w.dtype), **_static(meta))


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
# Primitives: dequantize, quantized matmul (tiled), gathered rows


def _dequantize_impl(kind):
    def impl(xp, *arrays, dtype, **meta):
        rows = _Rows(xp, kind, meta, arrays)
        out = xp.empty((rows.rows, rows.cols), np.float32)
        for r0, r1 in rows.tiles():
            out[r0:r1] = rows.get(r0, r1)
        return out.reshape(meta["shape"]).astype(dtype, copy=False)
    return impl


def _dequantize_abstract(*arrays, dtype, shape, **meta):
    return ShapedArray(shape, dtype)


_DEQUANTIZE = {}
for _kind in ("nf4", "int8"):
    _DEQUANTIZE[_kind] = Primitive(
        f"dequantize_{_kind}", impl=_dequantize_impl(_kind),
        abstract_eval=_dequantize_abstract, differentiable=False, residuals="none",
        jvp=lambda primals, tangents, out, **p: None,
        vjp=lambda ct, primals, out, active, **p: (None,) * len(primals))


def _matmul_abstract(x, *arrays, layout, shape, **meta):
    rows, cols = shape[0], math.prod(shape[1:])
    contract = rows if layout == "in_out" else cols
    if x.shape[-1:] != (contract,):
        raise TypeError(f"quant.linear: input of shape {x.shape} does not fit a weight of shape "
                        f"{shape} (layout {layout!r}: the input's last axis must have size "
                        f"{contract})")
    if not fnp.issubdtype(x.dtype, fnp.floating):
        raise TypeError(f"quant.linear: the input must be floating, got {x.str_short()}")
    out = cols if layout == "in_out" else rows
    return ShapedArray(x.shape[:-1] + (out,), x.dtype, x.weak_type)


def _matmul_impl(kind):
    def impl(xp, x, *arrays, layout, **meta):
        rows = _Rows(xp, kind, meta, arrays)
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1])
        if x2.dtype != np.float32:
            x2 = x2.astype(np.float32)
        n = x2.shape[0]
        if layout == "in_out":  # y = x @ W: sum over row tiles of W
            y = xp.zeros((n, rows.cols), np.float32)
            for r0, r1 in rows.tiles():
                y += x2[:, r0:r1] @ rows.get(r0, r1)
        else:                   # y = x @ W^T: each row tile of W gives a column slice of y
            y = xp.empty((n, rows.rows), np.float32)
            for r0, r1 in rows.tiles():
                y[:, r0:r1] = x2 @ rows.get(r0, r1).T
        return y.reshape(lead + (y.shape[-1],)).astype(x.dtype, copy=False)
    return impl


_FLIP = {"in_out": "out_in", "out_in": "in_out"}


def _make_matmul(kind, n_arrays):
    p = Primitive(f"quantized_matmul_{kind}", impl=_matmul_impl(kind),
                  abstract_eval=_matmul_abstract,
                  residuals=tuple(range(1, 1 + n_arrays)))

    def jvp(primals, tangents, out, *, layout, **meta):
        if tangents[0] is None:
            return None
        return bind(p, tangents[0], *primals[1:], layout=layout, **meta)

    def vjp(ct, primals, out, active, *, layout, **meta):
        dx = bind(p, ct, *primals[1:], layout=_FLIP[layout], **meta) if active[0] else None
        return (dx,) + (None,) * n_arrays

    def batch(vals, dims, *, layout, **meta):
        if any(d is not None for d in dims[1:]):
            raise NotImplementedError("quant.linear: vmap over a batch of quantized weights is "
                                      "not supported; map over the inputs only")
        x, d = vals[0], dims[0]
        if d is None:
            return bind(p, *vals, layout=layout, **meta), None
        x = fnp.moveaxis(x, d, 0)
        return bind(p, x, *vals[1:], layout=layout, **meta), 0

    p.jvp, p.vjp, p.batch = jvp, vjp, batch
    return p


_MATMUL = {"nf4": _make_matmul("nf4", 4), "int8": _make_matmul("int8", 2)}


def linear(x, w, bias=None, *, layout="out_in"):
    """x W^T + b (`layout="out_in"`, W stored [out, in] as PyTorch's nn.Linear) or x W + b
    (`"in_out"`, GPT-2's Conv1D) over the last axis of x, for a quantized W (tile by tile, see
    the module docstring) or a plain one. A weight of more than two dimensions is used as
    [shape[0], prod(shape[1:])]. The result has x's dtype (float32 inside)."""
    if layout not in _FLIP:
        raise ValueError(f"quant.linear: layout must be 'out_in' or 'in_out', got {layout!r}")
    if is_quantized(w):
        kind, arrays, meta = _arrays(w)
        x = fnp.asarray(x)
        _matmul_abstract(ShapedArray(tuple(x.shape), x.dtype), layout=layout, **meta)  # checks
        y = bind(_MATMUL[kind], x, *arrays, layout=layout, **_static(meta))
    else:  # a plain weight, in its own dtype (dot_general widens it inside the call only)
        x = fnp.asarray(x)
        contract = 0 if layout == "in_out" else 1
        y = lax.dot_general(x, w, (((x.ndim - 1,), (contract,)), ((), ())))
    return y if bias is None else y + bias


def _take_abstract(ids, *arrays, shape, dtype, **meta):
    return ShapedArray(tuple(ids.shape) + tuple(shape[1:]), dtype)


def _take_impl(kind):
    def impl(xp, ids, *arrays, dtype, **meta):
        rows = _Rows(xp, kind, meta, arrays)
        flat = ids.reshape(-1).astype(np.int64)
        if kind == "nf4" and rows.cols % rows.block == 0:
            per = rows.cols // rows.block       # whole blocks per row: gather them directly
            packed = rows.packed.reshape(rows.rows, rows.cols // 2)[flat]
            vals = xp.asarray(_NF4_PAIRS_U64)[packed if xp is np else packed.astype(np.int64)]
            vals = vals.view(np.float32).reshape(flat.shape[0], per, rows.block)
            vals = vals * rows.absmax.reshape(rows.rows, per)[flat][:, :, None]
            out = vals.reshape(flat.shape[0], rows.cols)
        else:
            out = xp.stack([rows.get(int(r), int(r) + 1)[0] for r in _host(flat)]) \
                if flat.shape[0] else xp.zeros((0, rows.cols), np.float32)
        shape = tuple(ids.shape) + tuple(meta["shape"][1:])
        return out.reshape(shape).astype(dtype, copy=False)
    return impl


_TAKE = {}
for _kind in ("nf4", "int8"):
    _TAKE[_kind] = Primitive(
        f"quantized_take_{_kind}", impl=_take_impl(_kind), abstract_eval=_take_abstract,
        differentiable=False, residuals="none",
        jvp=lambda primals, tangents, out, **p: None,
        vjp=lambda ct, primals, out, active, **p: (None,) * len(primals))


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
    return bind(_TAKE[kind], ids, *arrays, dtype=np.dtype(w.dtype), **_static(meta))


# Checkpoints rebuild quantized weights by name, without a template (io.load(path)).
from . import io as _io  # noqa: E402

_io.register_type(Int8Array, name="funcgrad.quant.Int8Array")
_io.register_type(NF4Array, name="funcgrad.quant.NF4Array")
