"""threefry2x32: the Threefry-2x32 block cipher as one primitive (JAX's `threefry2x32_p`).

Threefry-2x32 with 20 rounds (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
SC 2011) maps a key (k0, k1) and a block (x0, x1) of uint32 words to two uint32 words. It is the
hash behind fg.random: every random draw is Threefry of a counter under a key. Its four operands
broadcast together like an elementwise primitive's; its two outputs have the broadcast shape.

Written as one primitive rather than composed from add / shift / or / xor, so that its 100-odd
word operations run in place on two buffers (and, on NumPy, a few thousand elements at a time,
inside the cache) instead of allocating an array for each. The outputs are integers: no
derivative. vmap batches it as an elementwise operation.
"""

from __future__ import annotations

import numpy as np

from ..core import Primitive, ShapedArray, bind
from ._batching import elementwise_batch
from ._util import _arr
from .elementwise import broadcast_shapes

__all__ = ["threefry2x32", "threefry2x32_p"]

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
    ks = (k0, k1, k0 ^ k1 ^ PARITY)
    inject = [(np.uint32(ks[(i + 1) % 3]), np.uint32((ks[(i + 2) % 3] + i + 1) & 0xFFFFFFFF))
              for i in range(5)]
    f0, f1 = y0.reshape(-1), y1.reshape(-1)
    tmp = np.empty(min(_BLOCK, f0.size), _U32)
    for start in range(0, f0.size, _BLOCK):
        v0, v1 = f0[start:start + _BLOCK], f1[start:start + _BLOCK]
        t = tmp[:v0.size]
        for i in range(5):
            for r in ROTATIONS[i % 2]:
                v0 += v1
                np.left_shift(v1, r, out=t)
                v1 >>= 32 - r
                v1 |= t
                v1 ^= v0
            v0 += inject[i][0]
            v1 += inject[i][1]
    return y0, y1


def _batch(vals, dims):
    out, d = _elementwise(vals, dims)
    return out, (d, d)


threefry2x32_p = Primitive("threefry2x32", multiple_results=True, impl=_impl,
                           abstract_eval=_abstract, differentiable=False, residuals="none")
_elementwise = elementwise_batch(threefry2x32_p)
threefry2x32_p.batch = _batch


def threefry2x32(k0, k1, x0, x1):
    """Threefry-2x32 (20 rounds) of the blocks (x0, x1) under the keys (k0, k1): uint32 arrays
    that broadcast together. Returns the two output words, of the broadcast shape."""
    operands = [_arr(v) for v in (k0, k1, x0, x1)]
    _check_dtypes(operands, lambda a: f"{np.dtype(a.dtype).name}{list(a.shape)}")
    return tuple(bind(threefry2x32_p, *operands))
