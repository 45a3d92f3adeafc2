"""Python-level wrappers over vmap: vectorize (with gufunc signatures), apply_along_axis and
apply_over_axes.
"""

from __future__ import annotations

import math
import re

import numpy as np

from ..interpreters.batching import at_front, batch_fun
from ..tree_util import tree_flatten, tree_map, tree_unflatten
from ._core import asarray, broadcast_shapes, broadcast_to, canonical_axis, convert
from ._shape import expand_dims, moveaxis, reshape

__all__ = ["vectorize", "apply_along_axis", "apply_over_axes"]


# ---------------------------------------------------------------------------------------------
# Python-level wrappers over vmap

_DIMS = r"\w+"
_CORE = rf"(?:{_DIMS}(?:,{_DIMS})*)?"
_ARGS = rf"\({_CORE}\)(?:,\({_CORE}\))*"
_SIGNATURE = rf"^{_ARGS}->{_ARGS}$"


def _parse_signature(signature):
    sig = re.sub(r"\s+", "", signature)
    if not re.match(_SIGNATURE, sig):
        raise ValueError(f"not a valid gufunc signature: {signature}")
    ins, outs = sig.split("->")
    parse = lambda s: [tuple(re.findall(_DIMS, arg)) for arg in re.findall(rf"\({_CORE}\)", s)]
    return parse(ins), parse(outs)


def _map_rows(fun, arrays):
    """fun applied to row i of every array (all of one leading size), as fg.vmap does it: one
    run on whole batches under the batching interpreter; outputs are stacked along axis 0."""
    size = arrays[0].shape[0]
    box = {}

    def flat_fun(*rows):
        leaves, box["tree"] = tree_flatten(fun(*rows))
        return leaves

    outs, dims = batch_fun(flat_fun, list(arrays), [0] * len(arrays), size)
    return tree_unflatten(box["tree"], [at_front(o, d, size) for o, d in zip(outs, dims)])


def vectorize(pyfunc, *, excluded=frozenset(), signature=None, otypes=None, doc=None,
              cache=False):
    """A function mapping pyfunc over the broadcast leading axes of its array arguments with
    vmap's batching (core axes from a gufunc `signature`; `excluded` positions/names pass
    through)."""
    excluded = frozenset(excluded)
    in_core = out_core = None
    if signature is not None:
        in_core, out_core = _parse_signature(signature)

    def wrapped(*args, **kwargs):
        pos = [i for i in range(len(args)) if i not in excluded]
        names = [k for k in kwargs if k not in excluded]
        vec = [asarray(args[i]) for i in pos] + [asarray(kwargs[k]) for k in names]
        cores = in_core if in_core is not None else [()] * len(vec)
        if len(cores) != len(vec):
            raise TypeError(f"wrong number of positional arguments: expected {len(cores)}, got "
                            f"{len(vec)}")
        batch_shapes, sizes = [], {}
        for v, core in zip(vec, cores):
            if v.ndim < len(core):
                raise ValueError(f"input with shape {tuple(v.shape)} does not have enough "
                                 f"dimensions for its core dimensions {core}")
            lead = v.ndim - len(core)
            for name, s in zip(core, v.shape[lead:]):
                if sizes.setdefault(name, s) != s:
                    raise ValueError(f"inconsistent size for core dimension {name!r}: "
                                     f"{sizes[name]} vs {s}")
            batch_shapes.append(tuple(v.shape[:lead]))
        batch = broadcast_shapes(*batch_shapes) if batch_shapes else ()
        flat = [reshape(broadcast_to(v, batch + tuple(v.shape[len(b):])),
                        (math.prod(batch),) + tuple(v.shape[len(b):]))
                for v, b in zip(vec, batch_shapes)]

        def call(*vals):
            a, kw = list(args), dict(kwargs)
            for i, val in zip(pos, vals):
                a[i] = val
            for k, val in zip(names, vals[len(pos):]):
                kw[k] = val
            out = pyfunc(*a, **kw)
            return tree_map(asarray, out)

        if not batch:
            out = call(*vec)
        else:
            out = _map_rows(call, flat)
            out = tree_map(lambda o: reshape(o, batch + tuple(o.shape[1:])), out)
        if otypes:
            types = list(otypes) if not isinstance(otypes, str) else list(otypes)
            if isinstance(out, tuple):
                out = tuple(convert(o, np.dtype(t)) for o, t in zip(out, types))
            else:
                out = convert(out, np.dtype(types[0]))
        return out

    wrapped.__name__ = getattr(pyfunc, "__name__", "vectorized")
    wrapped.__doc__ = doc if doc is not None else pyfunc.__doc__
    return wrapped


def apply_along_axis(func1d, axis, arr, *args, **kwargs):
    """func1d applied to every 1-D slice of arr along axis (batched, as fg.vmap); its output axes
    take the place of that axis."""
    x = asarray(arr)
    ax = canonical_axis(axis, x.ndim)
    xt = moveaxis(x, ax, -1)
    batch = tuple(xt.shape[:-1])
    flat = reshape(xt, (math.prod(batch), xt.shape[-1]))
    out = _map_rows(lambda r: asarray(func1d(r, *args, **kwargs)), [flat])
    core = tuple(out.shape[1:])
    out = reshape(out, batch + core)
    if core:
        k = len(batch)
        out = moveaxis(out, list(range(k, k + len(core))), list(range(ax, ax + len(core))))
    return out


def apply_over_axes(func, a, axes):
    """func(a, axis) applied over each axis in turn, keeping the reduced axes (size 1)."""
    val = asarray(a)
    n = val.ndim
    for axis in ((axes,) if np.ndim(axes) == 0 else axes):
        axis = axis + n if axis < 0 else axis
        res = asarray(func(val, axis))
        if res.ndim != val.ndim:
            res = expand_dims(res, axis)
            if res.ndim != val.ndim:
                raise ValueError("function is not returning an array of the correct shape")
        val = res
    return val
