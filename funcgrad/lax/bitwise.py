"""Bitwise functions of jax.lax composed from primitives (no rules of their own):
population_count (shift-and-mask bit count) and the bitwise reductions reduce_and / reduce_or
(by halving, with an idempotent op).
"""

from __future__ import annotations

import numpy as np

from . import elementwise as ew
from ._util import normalize_axis, to_operand
from .slicing import slice_in_dim
from .structural import squeeze

__all__ = ["population_count", "reduce_and", "reduce_or"]


_POPCOUNT_MASKS = {bits: (int("01" * (bits // 2), 2), int("0011" * (bits // 4), 2),
                          int("00001111" * (bits // 8), 2)) for bits in (8, 16, 32, 64)}


def population_count(x):
    """The number of set bits of each element (of its two's-complement pattern), in x's dtype:
    the classic shift-and-mask bit count on the unsigned view."""
    x = to_operand(x)
    if x.dtype.kind not in "iu":
        raise TypeError(f"population_count needs an integer operand, got {x.dtype}")
    bits = x.dtype.itemsize * 8
    udt = np.dtype(f"uint{bits}")
    m1, m2, m4 = (np.array(m, udt) for m in _POPCOUNT_MASKS[bits])

    def shr(v, s):
        return ew.shift_right_logical(v, np.array(s, udt))

    u = ew.convert_element_type(x, udt)
    u = ew.sub(u, ew.bitwise_and(shr(u, 1), m1))
    u = ew.add(ew.bitwise_and(u, m2), ew.bitwise_and(shr(u, 2), m2))
    u = ew.bitwise_and(ew.add(u, shr(u, 4)), m4)  # a count per byte
    s = 8
    while s < bits:
        u = ew.add(u, shr(u, s))
        s *= 2
    if bits > 8:
        u = ew.bitwise_and(u, np.array(0x7F, udt))
    return ew.convert_element_type(u, x.dtype)


def _halving_reduce(x, axes, op, identity):
    """Reduce `axes` with an idempotent op (and/or) by halving: each step combines the first
    ceil(n/2) entries with the last ceil(n/2) (overlapping in the middle when n is odd)."""
    axes = sorted({normalize_axis(a, x.ndim) for a in axes}, reverse=True)
    for ax in axes:
        n = x.shape[ax]
        if n == 0:
            shape = list(x.shape)
            shape[ax] = 1
            x = ew.full(shape, identity, x.dtype)
        while x.shape[ax] > 1:
            n = x.shape[ax]
            half = (n + 1) // 2
            x = op(slice_in_dim(x, 0, half, axis=ax), slice_in_dim(x, n - half, n, axis=ax))
        x = squeeze(x, (ax,))
    return x


def _check_bitwise(name, x):
    if x.dtype.kind not in "iub":
        raise TypeError(f"{name} needs a boolean or integer operand, got {x.dtype}")


def reduce_and(operand, axes):
    """Bitwise AND (logical AND for bools) over `axes`."""
    operand = to_operand(operand)
    _check_bitwise("reduce_and", operand)
    ones = True if operand.dtype == np.bool_ else np.array(-1).astype(operand.dtype)
    return _halving_reduce(operand, axes, ew.bitwise_and, ones)


def reduce_or(operand, axes):
    """Bitwise OR (logical OR for bools) over `axes`."""
    operand = to_operand(operand)
    _check_bitwise("reduce_or", operand)
    return _halving_reduce(operand, axes, ew.bitwise_or, 0)
