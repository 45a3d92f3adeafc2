"""Helpers for batching rules (vmap): the batch size, moving and materializing the batch axis
(from the batching interpreter, funcgrad/interpreters/batching.py), the rule of elementwise ops.

A batching rule gets the operands' values and batch dims (`None` = not batched) and returns the
output and its batch dim. The helpers here keep the rules short and produce the programs a person
would write (a transpose or a broadcast at most, never a loop over examples).
"""

from __future__ import annotations

from ..core import bind
from ..interpreters.batching import at_front, move_axis, move_to_front  # noqa: F401
from . import structural  # circular (structural imports this module): used at call time


def batch_size(vals, dims):
    for v, d in zip(vals, dims):
        if d is not None:
            return v.shape[d]
    raise ValueError("batching rule called with no batched operand")


def elementwise_batch(prim):
    """Batching rule for elementwise primitives, whose operands broadcast like NumPy's.

    Batched operands get their batch axis in front and, if their rank is below the others', size-1
    axes after it, so NumPy's right-aligned broadcasting lines every operand up; unbatched
    operands stay as they are. When every batched operand already has the batch axis at the same
    place and unbatched ones are short enough not to reach it, nothing moves at all.
    """
    def rule(vals, dims, **params):
        logical = [v.ndim - (d is not None) for v, d in zip(vals, dims)]
        rank = max(logical)
        batched = [(d, r) for d, r in zip(dims, logical) if d is not None]
        d0 = batched[0][0]
        if (all(d == d0 and r == rank for d, r in batched)
                and all(r <= rank - d0 for r, d in zip(logical, dims) if d is None)):
            return bind(prim, *vals, **params), d0
        new = []
        for v, d, r in zip(vals, dims, logical):
            if d is not None:
                v = move_to_front(v, d)
                if r < rank:
                    v = structural.reshape(
                        v, (v.shape[0],) + (1,) * (rank - r) + tuple(v.shape[1:]))
            new.append(v)
        return bind(prim, *new, **params), 0

    return rule
