"""The array operations the interpreters perform on their own behalf: adding cotangents, making
zeros, moving or materializing a batch axis, summing one out.

They are primitives of funcgrad.lax, the layer above, which registers them here as it defines
them (as JAX's lax registers `add_jaxvals` and `zeros_like` with its interpreters); the
interpreters call them through this module and so import nothing above their layer.
"""

from __future__ import annotations

_NAMES = ("add", "full", "transpose", "broadcast_in_dim", "reduce_sum")

# Filled by register(); each is the funcgrad.lax function of the same name.
add = full = transpose = broadcast_in_dim = reduce_sum = None


def register(**ops):
    """Install lax functions under the names in `_NAMES` (funcgrad.lax calls this)."""
    unknown = sorted(set(ops) - set(_NAMES))
    if unknown:
        raise TypeError(f"interpreters.ops.register: unknown operation(s) {unknown}; the "
                        f"interpreters use {list(_NAMES)}")
    globals().update(ops)


def zeros(aval):
    """Zeros of `aval`'s shape and dtype (weak type dropped): a broadcast of a scalar, which a
    program keeps as one small equation instead of a constant array."""
    return full(aval.shape, 0, aval.dtype)
