"""Choosing among arrays elementwise: select and choose.
"""

from __future__ import annotations

import numpy as np

from .. import lax
from ..core import Tracer, user_line
from ._core import (
    asarray,
    broadcast_shapes,
    broadcast_to,
    convert,
    is_array,
    promote_args,
    result_type,
)
from ._indexing import concrete_value, is_concrete
from ._take import index_mode

__all__ = ["select", "choose", "piecewise"]


# ---------------------------------------------------------------------------------------------
# select, choose

def select(condlist, choicelist, default=0):
    """Elementwise: the choice of the first true condition, else default."""
    if len(condlist) != len(choicelist):
        raise ValueError("select: list of cases must be same length as list of conditions")
    if not condlist:
        raise ValueError("select with an empty condition list is not possible")
    dtype = result_type(*choicelist, default)
    conds = [asarray(c) for c in condlist]
    for c in conds:
        if c.dtype != np.bool_:
            raise TypeError(f"select: condlist entries must be boolean arrays, got {c.dtype}"
                            f"{user_line()}")
    vals = promote_args(*choicelist, default, dtype=dtype)
    shape = broadcast_shapes(*(tuple(v.shape) for v in conds + vals))
    conds = [broadcast_to(c, shape) for c in conds]
    vals = [broadcast_to(v, shape) for v in vals]
    out = vals[-1]
    for c, v in zip(reversed(conds), reversed(vals[:-1])):
        out = lax.select_n(c, out, v)
    return out


def choose(a, choices, out=None, mode="raise"):
    """choices[a] elementwise, all broadcast together (mode: raise / clip / wrap)."""
    if out is not None:
        raise TypeError("choose: out= is not supported (arrays are immutable)")
    n = len(choices)
    a = asarray(a)
    if a.dtype.kind not in "iu":
        raise TypeError(f"choose: the index array must be integer, got {a.dtype}")
    if mode == "raise":
        if is_concrete(a):
            v = concrete_value(a, "choose's index array")
            if v.size and (v.min() < 0 or v.max() >= n):
                raise ValueError("invalid entry in choice array")
        else:
            mode = "clip"
    a = index_mode(a, n, mode if mode != "raise" else None)
    vals = promote_args(*choices)
    shape = broadcast_shapes(tuple(np.shape(a)) if type(a) is not Tracer else a.shape,
                             *(tuple(v.shape) for v in vals))
    vals = [broadcast_to(v, shape) for v in vals]
    a = broadcast_to(asarray(a), shape)
    if n == 1:
        return vals[0]
    if n == 2:
        return lax.select_n(lax.ne(a, np.zeros((), a.dtype)), vals[0], vals[1])
    return lax.select_n(lax.convert_element_type(a, np.int32), *vals)


# ---------------------------------------------------------------------------------------------
# piecewise

def piecewise(x, condlist, funclist, *args, **kw):
    """Evaluate funclist[i] (a callable of x, or a constant) where condlist[i] holds, later
    conditions winning; an extra function covers where no condition holds. The result has x's
    dtype. Callables see the whole x (so they should be elementwise)."""
    x = asarray(x)
    # NumPy's rule: a single condition (not a sequence of arrays) is wrapped in a list.
    seq = isinstance(condlist, (list, tuple))
    first = condlist[0] if (seq or np.ndim(condlist)) and len(condlist) else None
    first_is_array = isinstance(first, (list, np.ndarray)) or (
        type(first) is Tracer and (seq or first.ndim > 0))
    if np.isscalar(condlist) or (not first_is_array and x.ndim != 0):
        conds = [asarray(condlist)]
    else:
        cl = asarray(condlist) if not seq else condlist
        conds = [asarray(cl[i]) for i in range(len(cl))] if seq or cl.ndim else [cl]
    conds = [broadcast_to(convert(c, np.dtype(np.bool_)), x.shape) for c in conds]
    n2 = len(funclist)
    if len(conds) == n2 - 1:
        other = conds[0]
        for c in conds[1:]:
            other = lax.bitwise_or(other, c)
        conds.append(lax.bitwise_not(other))
    elif len(conds) != n2:
        raise ValueError(f"with {len(conds)} condition(s), either {len(conds)} or "
                         f"{len(conds) + 1} functions are expected")
    y = lax.full(x.shape, 0, x.dtype)
    for c, fn in zip(conds, funclist):
        val = fn(x, *args, **kw) if callable(fn) else fn
        val = broadcast_to(convert(asarray(val), x.dtype) if is_array(val) else
                           np.asarray(val).astype(x.dtype), x.shape)
        y = lax.select_n(c, y, val)
    return y
