"""LoRA: low-rank adapters on chosen weight matrices; only the adapters train.

    adapters = lora.init(key, params, mask, rank=8, alpha=16)   # mask picks 2-D weight leaves
    loss = lambda adapters, x, y: xent(lora.apply(model.apply)(params, adapters, x), y)
    g = fg.grad(loss)(adapters, x, y)                            # no gradient w.r.t. params
    merged = lora.merge(params, adapters)                       # fold back for deployment

A weight W of shape (out, in) gets A of shape (rank, in) (small random) and B of shape
(out, rank) (zeros), and is used as W + (alpha / rank) * B @ A. B starts at zero, so the adapted
model starts out identical to the base model. For `x @ W` layouts (W of shape (in, out)) the
roles of "in" and "out" swap; the update B @ A always has W's shape.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from . import masks as _masks
from . import numpy as fnp
from . import tree_util as tu
from .devices import on_default_backend

__all__ = ["Adapter", "init", "apply", "merge", "delta"]


@dataclasses.dataclass
class Adapter:
    """The factors of one adapted weight; `scale` (alpha / rank) is static pytree metadata."""

    a: Any
    b: Any
    scale: float = dataclasses.field(default=1.0, metadata={"static": True})


tu.register_dataclass(Adapter)


def _is_adapter_leaf(x) -> bool:
    return x is None or isinstance(x, Adapter)


def _rng(key):
    seed = np.asarray(key).ravel()
    if seed.dtype.kind not in "iu":
        raise TypeError(f"lora.init: key must be an int or an integer key array, got {key!r}")
    return np.random.default_rng([int(s) % 2**32 for s in seed])


def init(key, params, mask, rank: int = 8, alpha: float | None = None):
    """Adapters for the True leaves of `mask` (all must be 2-D): a tree shaped like `params`
    with an `Adapter(a, b)` at each chosen leaf and None elsewhere.

    `key` is an int seed or an integer key array; `alpha` defaults to `rank` (scale 1).
    """
    if rank < 1:
        raise ValueError(f"lora.init: rank must be >= 1, got {rank}")
    scale = float(alpha if alpha is not None else rank) / rank
    rng = _rng(key)
    pairs, treedef = tu.tree_flatten_with_path(params)
    on = _masks.leaf_mask(mask, params, "lora.init")
    if not any(on):
        raise ValueError("lora.init: the mask selects no leaf; nothing would be adapted")
    out = []
    for (path, w), m in zip(pairs, on):
        if not m:
            out.append(None)
            continue
        shape = np.shape(w)
        if len(shape) != 2:
            raise ValueError(f"lora.init: {tu.path_to_str(path)!r} has shape {tuple(shape)}; "
                             "LoRA adapts 2-D weight matrices only (leave it out of the mask)")
        dtype = w.dtype if hasattr(w, "dtype") else np.float32
        rows, cols = shape
        bound = 1.0 / np.sqrt(cols)
        a = on_default_backend(rng.uniform(-bound, bound, (rank, cols)).astype(dtype), like=w)
        b = on_default_backend(np.zeros((rows, rank), dtype), like=w)
        out.append(Adapter(a, b, scale))
    return tu.tree_unflatten(treedef, out)


def delta(adapter: Adapter, like):
    """scale * B @ A in the dtype of `like` (the weight it adapts)."""
    scale = adapter.scale
    scale = np.dtype(like.dtype).type(scale) if type(scale) in (int, float) else \
        fnp.astype(scale, like.dtype)
    return fnp.multiply(scale, fnp.matmul(adapter.b, adapter.a))  # host or device factors


def _adapted(params, adapters, who):
    def f(ad, w):
        if ad is None:
            return w  # the base array itself: no copy
        if np.shape(w) != (np.shape(ad.b)[0], np.shape(ad.a)[1]):
            raise ValueError(f"{who}: adapter factors {np.shape(ad.b)} @ {np.shape(ad.a)} do not "
                             f"fit a weight of shape {np.shape(w)}")
        return fnp.add(w, delta(ad, w))

    try:
        return tu.tree_map(f, adapters, params, is_leaf=_is_adapter_leaf)
    except ValueError as e:
        if who in str(e):
            raise
        raise ValueError(f"{who}: the adapters do not match the params' structure ({e}); make "
                         "them with lora.init(key, params, mask)") from None


def apply(apply_fn):
    """`apply_fn(params, *args)` -> `fn(params, adapters, *args)` using W + scale * B @ A.

    Only the adapted leaves get a new array, computed inside the (traced) function so gradients
    flow to A and B; every other leaf is passed as the base array itself. The base tree is never
    copied or modified. Differentiate w.r.t. `adapters` (argnums=1) to train only them.
    """

    def adapted_apply(params, adapters, *args, **kwargs):
        return apply_fn(_adapted(params, adapters, "lora.apply"), *args, **kwargs)

    adapted_apply.__name__ = f"lora({getattr(apply_fn, '__name__', 'apply_fn')})"
    return adapted_apply


def merge(params, adapters):
    """A new params tree with each adapter folded in (W + scale * B @ A, in W's dtype); the
    other leaves are shared with `params`, which is left unchanged."""
    merged = _adapted(params, adapters, "lora.merge")
    return tu.tree_map(lambda m, w: fnp.astype(m, w.dtype) if m is not w and hasattr(w, "dtype")
                       else m, merged, params)
