"""threefry2x32: the Threefry-2x32 block cipher as one primitive (JAX's `threefry2x32_p`).

Threefry-2x32 with 20 rounds (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
SC 2011) maps a key (k0, k1) and a block (x0, x1) of uint32 words to two uint32 words. It is the
hash behind fg.random: every random draw is Threefry of a counter under a key. Its four operands
broadcast together like an elementwise primitive's; its two outputs have the broadcast shape.

Written as one primitive rather than composed from add / shift / or / xor, so that its 100-odd
word operations run in place on two buffers (and, on NumPy, a few thousand elements at a time,
inside the cache) instead of allocating an array for each. The outputs are integers: no
derivative. vmap batches it as an elementwise operation.

threefry2x32_iota is the same hash of the counters start, start + 1, ... of a draw (JAX's
`threefry_2x32(key, iota_2x32_shape(shape))`), with the counters made inside: a random draw
under jit then computes nothing of its size while it is traced (an iota, which has no operand,
would be computed at trace time and kept in the program as a constant), and an eager draw never
holds an array of counters.
"""

from __future__ import annotations

import math

import numpy as np

from ..core import Primitive, ShapedArray, bind
from . import structural
from ._batching import elementwise_batch, move_to_front
from ._util import astype, to_operand
from .elementwise import broadcast_shapes

__all__ = ["threefry2x32", "threefry2x32_p", "threefry2x32_iota", "threefry2x32_iota_p"]

_U32 = np.dtype(np.uint32)
ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))  # of x1, by round, alternating per 4 rounds
PARITY = 0x1BD11BDA                               # the key schedule's third word: k0 ^ k1 ^ this
_BLOCK = 1 << 14  # elements per in-cache pass on NumPy (two uint32 buffers and a temporary)


def _check_dtypes(operands, describe):
    for name, a in zip(("k0", "k1", "x0", "x1"), operands):
        if a.dtype != _U32:
            raise TypeError(f"threefry2x32: {name} must be uint32, got {describe(a)} (convert "
                            "with lax.convert_element_type(x, np.uint32))")


def _abstract(k0, k1, x0, x1):
    _check_dtypes((k0, k1, x0, x1), lambda a: a.str_short())
    shape = broadcast_shapes("threefry2x32", k0, k1, x0, x1)
    return ShapedArray(shape, _U32), ShapedArray(shape, _U32)


def _impl(xp, k0, k1, x0, x1):
    shape = np.broadcast_shapes(k0.shape, k1.shape, x0.shape, x1.shape)
    if xp is np and k0.size == 1 and k1.size == 1:
        return _numpy_blocks(shape, int(k0.reshape(())), int(k1.reshape(())), x0, x1)
    # Any namespace (CuPy, the Array API): whole arrays, updated in place with operators.
    ks = (k0, k1, k0 ^ k1 ^ PARITY)
    y0 = xp.zeros(shape, dtype=_U32)
    y0 += x0
    y0 += k0
    y1 = xp.zeros(shape, dtype=_U32)
    y1 += x1
    y1 += k1
    for i in range(5):  # 5 x 4 rounds, a key injection after each 4
        for r in ROTATIONS[i % 2]:
            y0 += y1
            t = y1 << r
            y1 >>= 32 - r
            y1 |= t
            y1 ^= y0
        y0 += ks[(i + 1) % 3]
        y1 += ks[(i + 2) % 3]
        y1 += i + 1
    return y0, y1


def _numpy_blocks(shape, k0, k1, x0, x1):
    """NumPy, one key: the rounds run on blocks of _BLOCK elements, which stay in the cache
    through all 20 rounds, with one temporary for the rotations."""
    y0 = np.add(x0, np.uint32(k0), out=np.empty(shape, _U32))
    y1 = np.add(x1, np.uint32(k1), out=np.empty(shape, _U32))
    f0, f1 = y0.reshape(-1), y1.reshape(-1)
    inject, tmp = _injections(k0, k1), np.empty(min(_BLOCK, f0.size), _U32)
    for start in range(0, f0.size, _BLOCK):
        v0, v1 = f0[start:start + _BLOCK], f1[start:start + _BLOCK]
        _rounds(v0, v1, inject, tmp[:v0.size])
    return y0, y1


def _injections(k0, k1):
    """The key schedule (Python ints): what is added to each word after each 4 rounds."""
    ks = (k0, k1, k0 ^ k1 ^ PARITY)
    return [(np.uint32(ks[(i + 1) % 3]), np.uint32((ks[(i + 2) % 3] + i + 1) & 0xFFFFFFFF))
            for i in range(5)]


def _rounds(v0, v1, inject, t):
    """The 20 rounds on NumPy words v0, v1 that hold x + k already, in place (t: a temporary)."""
    for i in range(5):
        for r in ROTATIONS[i % 2]:
            v0 += v1
            np.left_shift(v1, r, out=t)
            v1 >>= 32 - r
            v1 |= t
            v1 ^= v0
        v0 += inject[i][0]
        v1 += inject[i][1]


def _batch(vals, dims):
    out, d = _elementwise(vals, dims)
    return out, (d, d)


threefry2x32_p = Primitive("threefry2x32", multiple_results=True, impl=_impl,
                           abstract_eval=_abstract, differentiable=False, residuals="none")
_elementwise = elementwise_batch(threefry2x32_p)
threefry2x32_p.batch = _batch


# ---------------------------------------------------------------------------------------------
# threefry2x32_iota: Threefry of the counters start, start + 1, ... (JAX's iota_2x32_shape)

def _iota_abstract(k0, k1, *, shape, start):
    _check_dtypes((k0, k1), lambda a: a.str_short())
    keys = broadcast_shapes("threefry2x32_iota", k0, k1)
    return ShapedArray(keys + tuple(shape), _U32), ShapedArray(keys + tuple(shape), _U32)


def _iota_impl(xp, k0, k1, *, shape, start):
    size = math.prod(shape)
    keys = np.broadcast_shapes(k0.shape, k1.shape)
    if xp is np and not keys:
        return _numpy_iota_blocks(shape, int(k0), int(k1), start)
    count = xp.arange(size, dtype=np.uint64)  # any namespace: whole arrays
    if start:
        count = count + start
    hi = xp.reshape(astype(xp, count >> 32, _U32), tuple(shape))
    lo = xp.reshape(astype(xp, count & 0xFFFFFFFF, _U32), tuple(shape))
    k0, k1 = (xp.reshape(k, (1,) * (len(keys) - k.ndim) + tuple(k.shape) + (1,) * len(shape))
              for k in (k0, k1))  # the key axes in front of the draw's
    return _impl(xp, k0, k1, hi, lo)


_ARANGE = np.arange(_BLOCK, dtype=_U32)


def _numpy_iota_blocks(shape, k0, k1, start):
    """NumPy, one key: each block's counters are written straight into the two words (no
    counter array), then the rounds run on it in the cache."""
    size = math.prod(shape)
    y0, y1 = np.empty(size, _U32), np.empty(size, _U32)
    inject, tmp = _injections(k0, k1), np.empty(min(_BLOCK, size), _U32)
    for a in range(0, size, _BLOCK):
        v0, v1 = y0[a:a + _BLOCK], y1[a:a + _BLOCK]
        first, n = start + a, v0.size
        if first >> 32 == (first + n - 1) >> 32:  # one high word for the whole block
            v0.fill((first >> 32) + k0 & 0xFFFFFFFF)
            np.add(_ARANGE[:n], np.uint32(((first & 0xFFFFFFFF) + k1) & 0xFFFFFFFF), out=v1)
        else:
            count = np.arange(first, first + n, dtype=np.uint64)
            np.add((count >> np.uint64(32)).astype(_U32), np.uint32(k0), out=v0)
            np.add((count & np.uint64(0xFFFFFFFF)).astype(_U32), np.uint32(k1), out=v1)
        _rounds(v0, v1, inject, tmp[:n])
    return y0.reshape(shape), y1.reshape(shape)


def _iota_batch(vals, dims, *, shape, start):
    """The key axes come first in the output: each key gets the batch axis in front (a size-1
    one when unbatched) and size-1 axes after it up to the keys' common rank."""
    rank = max(v.ndim - (d is not None) for v, d in zip(vals, dims))
    keys = []
    for v, d in zip(vals, dims):
        v = move_to_front(v, d) if d is not None else structural.reshape(v, (1,) + v.shape)
        keys.append(structural.reshape(v, v.shape[:1] + (1,) * (rank + 1 - v.ndim) + v.shape[1:]))
    return bind(threefry2x32_iota_p, *keys, shape=shape, start=start), (0, 0)


threefry2x32_iota_p = Primitive("threefry2x32_iota", multiple_results=True, impl=_iota_impl,
                                abstract_eval=_iota_abstract, differentiable=False,
                                residuals="none", batch=_iota_batch)


def threefry2x32_iota(k0, k1, shape, start=0):
    """Threefry-2x32 of the 64-bit counters start, start + 1, ... laid out in `shape` (row
    major; high word first, JAX's `iota_2x32_shape`), under the keys (k0, k1): uint32 arrays of
    one shape K (a single key: rank 0). Returns the two output words, of shape K + shape. The
    same as threefry2x32 of the counters, without an array of them: under jit nothing of the
    draw's size is computed at trace time, and eagerly the counters are written block by block
    straight into the words."""
    operands = [to_operand(v) for v in (k0, k1)]
    _check_dtypes(operands, lambda a: f"{np.dtype(a.dtype).name}{list(a.shape)}")
    shape = tuple(int(d) for d in shape)
    if not 0 <= start or start + math.prod(shape) > 2 ** 64:
        raise ValueError(f"threefry2x32_iota: counters {start} .. {start} + {math.prod(shape)} "
                         "do not fit in 64 bits")
    return tuple(bind(threefry2x32_iota_p, *operands, shape=shape, start=int(start)))


def threefry2x32(k0, k1, x0, x1):
    """Threefry-2x32 (20 rounds) of the blocks (x0, x1) under the keys (k0, k1): uint32 arrays
    that broadcast together. Returns the two output words, of the broadcast shape."""
    operands = [to_operand(v) for v in (k0, k1, x0, x1)]
    _check_dtypes(operands, lambda a: f"{np.dtype(a.dtype).name}{list(a.shape)}")
    return tuple(bind(threefry2x32_p, *operands))
