"""reduce_window, as XLA's ReduceWindow: every (strided, dilated) window of an operand reduced
with add, mul, max or min. Composed from pad, strided slices, concatenate and the reductions, so
its gradients come from theirs (no rules of its own).
"""

from __future__ import annotations

import itertools
import operator

import numpy as np

from ..core import Tracer
from ..core.avals import dtype_kind
from . import elementwise as ew
from ._util import to_operand
from .conv import padtype_to_pads
from .elementwise_composite import as_dtype
from .reductions import reduce_max, reduce_min, reduce_prod, reduce_sum
from .structural import broadcast_in_dim, concatenate, expand_dims, pad, slice

__all__ = ["reduce_window"]


def _identity(kind, dtype):
    if kind == "add":
        return 0
    if kind == "mul":
        return 1
    if dtype_kind(dtype) == "f":
        return -np.inf if kind == "max" else np.inf
    if dtype == np.bool_:
        return kind == "min"
    info = np.iinfo(dtype)
    return info.min if kind == "max" else info.max


def _monoid(computation):
    # Functions are recognized by identity: funcgrad.lax's own, NumPy's ufuncs, `operator`'s.
    table = {ew.add: "add", ew.mul: "mul", ew.max: "max", ew.min: "min",
             np.add: "add", np.multiply: "mul", np.maximum: "max", np.minimum: "min",
             operator.add: "add", operator.mul: "mul"}
    try:
        return table.get(computation)
    except TypeError:  # unhashable callable
        return None


_WINDOW_REDUCERS = {"add": (reduce_sum, ew.add), "mul": (reduce_prod, ew.mul),
                    "max": (reduce_max, ew.max), "min": (reduce_min, ew.min)}


def _window_tuple(value, n, name, default=1):
    if value is None:
        return (default,) * n
    value = tuple(int(v) for v in value)
    if len(value) != n:
        raise ValueError(f"reduce_window: {name} needs {n} entries (one per axis), got {value}")
    return value


def reduce_window(operand, init_value, computation, window_dimensions, window_strides=None,
                  padding="VALID", base_dilation=None, window_dilation=None):
    """Reduce every (strided, dilated) window of operand with computation in {lax.add, lax.mul,
    lax.max, lax.min}, as XLA's ReduceWindow: windows over the padded (and base-dilated)
    operand, where padding counts as nothing, each reduced together with init_value.

    Written as one strided slice of the padded operand per window offset, stacked on a new
    axis and reduced, so gradients come from pad, slice, concatenate and the reductions.
    """
    kind = _monoid(computation)
    if kind is None:
        raise NotImplementedError(
            f"reduce_window: computation {getattr(computation, '__name__', computation)!r} is "
            "not supported; use lax.add, lax.mul, lax.max or lax.min (a generic reducer would "
            "need a reduce_window primitive)")
    if isinstance(operand, (list, tuple, dict)):
        raise NotImplementedError("reduce_window: pytrees of operands are not supported; "
                                  "reduce one array at a time")
    x = to_operand(operand)
    n = x.ndim
    dims = _window_tuple(window_dimensions, n, "window_dimensions")
    strides = _window_tuple(window_strides, n, "window_strides")
    base = _window_tuple(base_dilation, n, "base_dilation")
    wdil = _window_tuple(window_dilation, n, "window_dilation")
    if any(v < 1 for v in dims + strides + base + wdil):
        raise ValueError("reduce_window: window dimensions, strides and dilations must be "
                         "positive")
    init = as_dtype(init_value, x.dtype)
    if getattr(init, "shape", ()) != ():
        raise ValueError("reduce_window: init_value must be a scalar")
    eff = [(d - 1) * w + 1 for d, w in zip(dims, wdil)]
    if isinstance(padding, str):
        pads = padtype_to_pads(tuple(x.shape), eff, strides, padding)
    else:
        pads = [(int(lo), int(hi)) for lo, hi in padding]
        if len(pads) != n:
            raise ValueError(f"reduce_window: padding needs {n} (low, high) pairs, got {padding}")
    # Padding and base-dilation holes hold the identity (they do not count), and init_value is
    # combined into each window once, as XLA on the CPU computes it (the XLA spec leaves a
    # non-identity init_value implementation-defined).
    identity = np.array(_identity(kind, x.dtype)).astype(x.dtype)
    config = [(lo, hi, b - 1) for (lo, hi), b in zip(pads, base)]
    if any(v for cfg in config for v in cfg):
        x = pad(x, identity, config)
    out_shape = tuple(max((p - e) // s + 1, 0) if p >= e else 0
                      for p, e, s in zip(x.shape, eff, strides))
    reducer, combine = _WINDOW_REDUCERS[kind]
    if 0 in out_shape:
        return broadcast_in_dim(init, out_shape, ()) if isinstance(init, Tracer) else \
            ew.full(out_shape, init, x.dtype)
    windows = []
    for offs in itertools.product(*(range(d) for d in dims)):
        start = [o * w for o, w in zip(offs, wdil)]
        limit = [st + (o - 1) * s + 1 for st, o, s in zip(start, out_shape, strides)]
        windows.append(expand_dims(slice(x, start, limit, strides), (0,)))
    out = reducer(concatenate(windows, 0), (0,))
    is_identity = isinstance(init, np.ndarray) and bool(init == identity)
    return out if is_identity else combine(out, init)
