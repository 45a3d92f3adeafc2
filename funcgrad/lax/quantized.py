"""Quantized weights' primitives (funcgrad.quant holds the arrays and the user API): the data
types, and three primitive families that dequantize a tile of rows at a time, written against the
array namespace `xp`.

    dequantize_{nf4,int8}        (*arrays; dtype, shape, ...)         the whole weight
    quantized_matmul_{nf4,int8}  (x, *arrays; layout, shape, ...)     x W^T or x W, tile by tile;
                                                                      VJP in x: the other layout
    quantized_take_{nf4,int8}    (ids, *arrays; dtype, shape, ...)    rows of an embedding table

The arrays of a weight are its operands (NF4: packed uint8 codes, absmax codes or float32
constants, the second-level scales and their mean; int8: the codes and the per-channel scales);
its shape, block size, channel axis and layout are static params. No gradient flows to them: the
weights are frozen (LoRA trains adapters beside them).
"""

from __future__ import annotations

import math

import numpy as np

from ..core import Primitive, ShapedArray, bind
from ..core.avals import dtype_kind
from ._batching import move_to_front
from ._util import astype, dtype_of

__all__ = ["NF4_CODE", "DYNAMIC_CODE", "NF4_BLOCK", "ABSMAX_BLOCK", "TILE_ELEMENTS",
           "quantized_dequantize", "quantized_matmul", "quantized_take", "absmax_values"]

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
# Tiles of rows, dequantized with the namespace `xp`

def absmax_values(xp, absmax, scale2, offset):
    """The float32 per-block absmax constants (undoing double quantization)."""
    if dtype_of(absmax) != np.uint8:
        return absmax
    vals = xp.take(xp.asarray(DYNAMIC_CODE), astype(xp, absmax, _INDEX))
    idx = xp.arange(absmax.shape[0]) // ABSMAX_BLOCK
    return vals * xp.take(scale2, idx) + offset


_INDEX = np.dtype(np.int64)
_F32 = np.dtype(np.float32)


def _nf4_codes(xp, chunk):
    """The float32 NF4 values of packed bytes, two per byte (high nibble first): on NumPy one
    gather of a byte -> (value, value) table viewed as uint64; elsewhere two nibble gathers
    (the array standard has no `view`)."""
    if xp is np:
        return _NF4_PAIRS_U64[chunk].view(np.float32)
    code = xp.asarray(NF4_CODE)
    hi = xp.take(code, astype(xp, xp.right_shift(chunk, 4), _INDEX))
    lo = xp.take(code, astype(xp, xp.bitwise_and(chunk, 15), _INDEX))
    return xp.reshape(xp.stack([hi, lo], axis=1), (-1,))


def _nf4_flat(xp, packed, absmax_f32, a, b, block):
    """Dequantized flat elements [a, b) of an NF4 array, as float32."""
    ba, bb = a // block, -(-b // block)
    vals = xp.reshape(_nf4_codes(xp, packed[ba * block // 2: bb * block // 2]), (bb - ba, block))
    vals = vals * xp.reshape(absmax_f32[ba:bb], (bb - ba, 1))
    return xp.reshape(vals, (-1,))[a - ba * block: b - ba * block]


def _int8_rows(xp, q2, scale, axis_kind, r0, r1):
    """Rows r0:r1 of an int8 matrix (as 2-D [rows, cols]) in float32."""
    tile = astype(xp, q2[r0:r1, :], _F32)
    if axis_kind == "rows":
        return tile * xp.reshape(scale[r0:r1], (r1 - r0, 1))
    if axis_kind == "cols":
        return tile * xp.reshape(scale, (1, -1))
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
            self.absmax = absmax_values(xp, absmax, scale2, offset)
        else:
            q, scale = arrays
            self.q2 = xp.reshape(q, (self.rows, self.cols))
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
                s = xp.reshape(xp.broadcast_to(xp.reshape(scale, tuple(int(d) for d in per)),
                                               rest), (-1,))
                self.scale, self.axis_kind = s, "cols"

    def get(self, r0, r1):
        if self.kind == "nf4":
            flat = _nf4_flat(self.xp, self.packed, self.absmax, r0 * self.cols, r1 * self.cols,
                             self.block)
            return self.xp.reshape(flat, (r1 - r0, self.cols))
        return _int8_rows(self.xp, self.q2, self.scale, self.axis_kind, r0, r1)

    def tiles(self):
        step = max(1, TILE_ELEMENTS // max(self.cols, 1))
        for r0 in range(0, self.rows, step):
            yield r0, min(self.rows, r0 + step)



# ---------------------------------------------------------------------------------------------
# The primitives

def _dequantize_impl(kind):
    def impl(xp, *arrays, dtype, **meta):
        rows = _Rows(xp, kind, meta, arrays)
        out = xp.empty((rows.rows, rows.cols), dtype=_F32)
        for r0, r1 in rows.tiles():
            out[r0:r1, :] = rows.get(r0, r1)
        return astype(xp, xp.reshape(out, meta["shape"]), dtype, copy=False)
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
    if dtype_kind(x.dtype) != "f":
        raise TypeError(f"quant.linear: the input must be floating, got {x.str_short()}")
    out = cols if layout == "in_out" else rows
    return ShapedArray(x.shape[:-1] + (out,), x.dtype, x.weak_type)


def _matmul_impl(kind):
    def impl(xp, x, *arrays, layout, **meta):
        rows = _Rows(xp, kind, meta, arrays)
        lead = tuple(x.shape[:-1])
        x2 = xp.reshape(x, (-1, x.shape[-1]))
        work = np.dtype(np.float64) if dtype_of(x2) == np.float64 else _F32
        x2 = astype(xp, x2, work, copy=False)  # 16-bit inputs compute in float32
        n = x2.shape[0]
        if layout == "in_out":  # y = x @ W: sum over row tiles of W
            y = xp.zeros((n, rows.cols), dtype=work)
            for r0, r1 in rows.tiles():
                y = y + xp.matmul(x2[:, r0:r1], astype(xp, rows.get(r0, r1), work, copy=False))
        else:                   # y = x @ W^T: each row tile of W gives a column slice of y
            y = xp.empty((n, rows.rows), dtype=work)
            for r0, r1 in rows.tiles():
                y[:, r0:r1] = xp.matmul(x2, astype(xp, rows.get(r0, r1), work, copy=False).T)
        return astype(xp, xp.reshape(y, lead + (y.shape[-1],)), dtype_of(x), copy=False)
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
        x = move_to_front(x, d)
        return bind(p, x, *vals[1:], layout=layout, **meta), 0

    p.jvp, p.vjp, p.batch = jvp, vjp, batch
    return p


_MATMUL = {"nf4": _make_matmul("nf4", 4), "int8": _make_matmul("int8", 2)}


def _take_abstract(ids, *arrays, shape, dtype, **meta):
    return ShapedArray(tuple(ids.shape) + tuple(shape[1:]), dtype)


def _take_impl(kind):
    def impl(xp, ids, *arrays, dtype, **meta):
        rows = _Rows(xp, kind, meta, arrays)
        flat = astype(xp, xp.reshape(ids, (-1,)), _INDEX)
        n = flat.shape[0]
        if kind == "nf4" and rows.cols % rows.block == 0:
            per = rows.cols // rows.block       # whole blocks per row: gather them directly
            packed = xp.take(xp.reshape(rows.packed, (rows.rows, rows.cols // 2)), flat, axis=0)
            vals = xp.reshape(_nf4_codes(xp, xp.reshape(packed, (-1,))), (n, per, rows.block))
            scale = xp.take(xp.reshape(rows.absmax, (rows.rows, per)), flat, axis=0)
            out = xp.reshape(vals * xp.reshape(scale, (n, per, 1)), (n, rows.cols))
        elif kind == "int8":
            tile = astype(xp, xp.take(rows.q2, flat, axis=0), _F32)
            if rows.axis_kind == "rows":
                out = tile * xp.reshape(xp.take(rows.scale, flat), (n, 1))
            else:
                out = tile * xp.reshape(rows.scale, (1, -1))
        else:  # NF4 rows that straddle blocks: the table's floats, then the rows
            out = xp.take(rows.get(0, rows.rows), flat, axis=0)
        shape = tuple(ids.shape) + tuple(meta["shape"][1:])
        return astype(xp, xp.reshape(out, shape), dtype, copy=False)
    return impl


_TAKE = {}
for _kind in ("nf4", "int8"):
    _TAKE[_kind] = Primitive(
        f"quantized_take_{_kind}", impl=_take_impl(_kind), abstract_eval=_take_abstract,
        differentiable=False, residuals="none",
        jvp=lambda primals, tangents, out, **p: None,
        vjp=lambda ct, primals, out, active, **p: (None,) * len(primals))



def quantized_dequantize(kind, arrays, *, dtype, **meta):
    """The float array (in `dtype`) a quantized weight's arrays stand for."""
    return bind(_DEQUANTIZE[kind], *arrays, dtype=np.dtype(dtype), **meta)


def quantized_matmul(x, kind, arrays, *, layout, **meta):
    """x W^T (`layout="out_in"`) or x W (`"in_out"`) for a quantized W, over x's last axis."""
    _matmul_abstract(ShapedArray(tuple(x.shape), x.dtype), layout=layout, **meta)  # checks
    return bind(_MATMUL[kind], x, *arrays, layout=layout, **meta)


def quantized_take(ids, kind, arrays, *, dtype, **meta):
    """Rows `ids` of a quantized table (along axis 0), only those dequantized."""
    return bind(_TAKE[kind], ids, *arrays, dtype=np.dtype(dtype), **meta)


dequantize_nf4_p, dequantize_int8_p = _DEQUANTIZE["nf4"], _DEQUANTIZE["int8"]
quantized_matmul_nf4_p, quantized_matmul_int8_p = _MATMUL["nf4"], _MATMUL["int8"]
quantized_take_nf4_p, quantized_take_int8_p = _TAKE["nf4"], _TAKE["int8"]


def _no_batched_weights(name, dims):
    if any(d is not None for d in dims):
        raise NotImplementedError(f"{name}: vmap over a batch of quantized weights is not "
                                  "supported; map over the inputs only")


def _dequantize_batch(p):
    def rule(vals, dims, **params):
        _no_batched_weights(p.name, dims)
        return bind(p, *vals, **params), None
    return rule


def _take_batch(p):
    def rule(vals, dims, **params):
        _no_batched_weights(p.name, dims[1:])
        ids, d = vals[0], dims[0]
        if d is None:
            return bind(p, *vals, **params), None
        return bind(p, move_to_front(ids, d), *vals[1:], **params), 0   # ids' axes lead
    return rule


for _p in (dequantize_nf4_p, dequantize_int8_p):
    _p.batch = _dequantize_batch(_p)
for _p in (quantized_take_nf4_p, quantized_take_int8_p):
    _p.batch = _take_batch(_p)
