"""LoRA: low-rank adapters on chosen weight matrices; only the adapters train.

    adapters = lora.init(key, params, mask, rank=8, alpha=16)   # mask picks 2-D weight leaves
    loss = lambda adapters, x, y: xent(lora.apply(model.apply)(params, adapters, x), y)
    g = fg.grad(loss)(adapters, x, y)                            # no gradient w.r.t. params
    merged = lora.merge(params, adapters)                       # fold back for deployment

A weight W of shape (out, in) gets A of shape (rank, in) (small random) and B of shape
(out, rank) (zeros), and is used as W + (alpha / rank) * B @ A. B starts at zero, so the adapted
model starts out identical to the base model. For `x @ W` layouts (W of shape (in, out)) the
roles of "in" and "out" swap; the update B @ A always has W's shape.

    lora.save_peft("adapters/", adapters, model)     # PEFT's folder format, for a pretrained
    adapters = lora.load_peft("adapters/", model)    # model (funcgrad.models.pretrained)
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import numpy as np

from . import masks as _masks
from . import numpy as fnp
from . import random
from . import tree_util as tu
from .devices import on_default_backend

__all__ = ["Adapter", "AdaptedWeight", "init", "apply", "merge", "delta", "save_peft",
           "load_peft"]


@dataclasses.dataclass
class Adapter:
    """The factors of one adapted weight; `scale` (alpha / rank) is static pytree metadata."""

    a: Any
    b: Any
    scale: float = dataclasses.field(default=1.0, metadata={"static": True})


tu.register_dataclass(Adapter)


class AdaptedWeight(NamedTuple):
    """A frozen weight and its adapter, as `lora.apply` hands them to a model function that
    computes the low-rank product itself (one that sets `apply_fn.computes_adapters = True`,
    as the pretrained models' `model.apply` does): it adds scale * (x A^T) B^T beside x W^T
    instead of building W + scale * B A, with the same result and gradients."""

    weight: Any
    adapter: Adapter


def _is_adapter_leaf(x) -> bool:
    return x is None or isinstance(x, Adapter)


def init(key, params, mask, rank: int = 8, alpha: float | None = None, dtype=None):
    """Adapters for the True leaves of `mask` (all must be 2-D): a tree shaped like `params`
    with an `Adapter(a, b)` at each chosen leaf and None elsewhere.

    A is uniform in +-1/sqrt(in_features) (PEFT's default, Kaiming-uniform with a = sqrt(5)),
    B is zero, so the adapted model starts as the base model. `key` is a key or an int seed
    (`fg.random.as_key`); the adapter at flat leaf index i draws from fold_in(key, i).
    `alpha` defaults to `rank` (scale 1). `rank` is at most min(rows, cols) of each chosen
    weight (a larger one adds parameters and no expressiveness); chosen weights must be
    floating-point. The factors are in `dtype`, by default the weight's dtype, or float32 for
    a 16-bit float or quantized weight (as PEFT's `autocast_adapter_dtype`): the adapters train
    in float32 on top of a half-precision or quantized base (funcgrad.quant weights count as
    one leaf each).
    """
    key = random.as_key(key, "lora.init")
    if not isinstance(rank, (int, np.integer)) or isinstance(rank, (bool, np.bool_)):
        raise TypeError(f"lora.init: rank must be an int >= 1, got {type(rank).__name__} "
                        f"{rank!r}")
    if rank < 1:
        raise ValueError(f"lora.init: rank must be an int >= 1, got {rank}")
    if alpha is not None and (isinstance(alpha, (bool, np.bool_)) or
                              not isinstance(alpha, (int, float, np.integer, np.floating))
                              or not np.isfinite(alpha)):
        raise TypeError(f"lora.init: alpha must be a finite number (or None for alpha = rank), "
                        f"got {alpha!r}")
    rank = int(rank)
    scale = float(alpha if alpha is not None else rank) / rank
    pairs, treedef = tu.tree_flatten_with_path(params, is_leaf=_quant().is_quantized)
    on = _masks.leaf_mask(_quantized_as_leaves(mask), _shapes_view(params), "lora.init")
    if not any(on):
        raise ValueError("lora.init: the mask selects no leaf; nothing would be adapted")
    out = []
    for i, ((path, w), m) in enumerate(zip(pairs, on)):
        if not m:
            out.append(None)
            continue
        shape, where = np.shape(w), tu.path_to_str(path) or "<root>"
        if len(shape) != 2:
            raise ValueError(f"lora.init: {where!r} has shape {tuple(shape)}; "
                             "LoRA adapts 2-D weight matrices only (leave it out of the mask)")
        wdt = np.dtype(w.dtype) if hasattr(w, "dtype") else np.dtype(np.float32)
        if wdt.kind in "biu":
            raise TypeError(f"lora.init: {where!r} has dtype {wdt}; LoRA adapts "
                            "floating-point weights only (leave it out of the mask, or load the "
                            "weights as floats)")
        dt = _adapter_dtype(w) if dtype is None else np.dtype(dtype)
        rows, cols = shape
        if rank > min(rows, cols):
            raise ValueError(f"lora.init: rank={rank} exceeds min(rows, cols) = "
                             f"{min(rows, cols)} of {where!r} (shape {tuple(shape)}); use "
                             f"rank <= {min(rows, cols)}, or leave that weight out of the mask")
        bound = 1.0 / np.sqrt(cols)
        a = random.uniform(random.fold_in(key, i), (rank, cols), dt, -bound, bound)
        a = on_default_backend(a, like=w)
        b = on_default_backend(np.zeros((rows, rank), dt), like=w)
        out.append(Adapter(a, b, scale))
    return tu.tree_unflatten(treedef, out)


def _quant():
    from . import quant  # quantized weights are leaves here: adapters go on top of them
    return quant


def _shapes_view(params):
    """`params` with each quantized weight as one leaf (a ShapedArray of its shape and dtype),
    so that masks and adapters see it as the matrix it stands for."""
    q = _quant()
    if not any(q.is_quantized(x) for x in tu.tree_leaves(params, is_leaf=q.is_quantized)):
        return params
    return tu.tree_map(lambda x: _Shape(tuple(x.shape), x.dtype) if q.is_quantized(x) else x,
                       params, is_leaf=q.is_quantized)


class _Shape:
    """A stand-in leaf (not a pytree node) with a quantized weight's shape and dtype, for masks
    that look at them."""

    __slots__ = ("shape", "dtype")

    def __init__(self, shape, dtype):
        self.shape, self.dtype = shape, dtype

    @property
    def ndim(self):
        return len(self.shape)


def _quantized_as_leaves(mask):
    """A mask made on a tree with quantized weights (one bool per packed array) as one bool per
    quantized weight: True when all of its arrays are selected."""
    if callable(mask) or isinstance(mask, (bool, np.bool_)):
        return mask
    q = _quant()
    return tu.tree_map(lambda m: all(bool(b) for b in tu.tree_leaves(m)) if q.is_quantized(m)
                       else m, mask, is_leaf=q.is_quantized)


def _adapter_dtype(w):
    dt = getattr(w, "dtype", None)
    if dt is None or not fnp.issubdtype(dt, fnp.floating) or np.dtype(dt).itemsize < 4:
        return np.dtype(np.float32)
    return np.dtype(dt)


def delta(adapter: Adapter, like):
    """scale * B @ A in the dtype of `like` (the weight it adapts)."""
    scale = adapter.scale
    scale = np.dtype(like.dtype).type(scale) if type(scale) in (int, float) else \
        fnp.asarray(scale, like.dtype)
    return fnp.multiply(scale, fnp.matmul(adapter.b, adapter.a))  # host or device factors


def _adapted(params, adapters, who, keep_factors=False):
    """params with each adapted weight replaced by W + scale * B @ A (or, with `keep_factors`,
    by `AdaptedWeight(W, adapter)`), after checking the adapters against the params."""
    def f(path, ad, w):
        if ad is None:
            return w  # the base array itself: no copy
        where = tu.path_to_str(path) or "<root>"
        if not isinstance(ad, Adapter):
            raise TypeError(f"{who}: at {where!r} the adapters hold a {type(ad).__name__}, not "
                            "an Adapter or None; make them with lora.init(key, params, mask)")
        sa, sb = np.shape(ad.a), np.shape(ad.b)
        if len(sa) != 2 or len(sb) != 2 or np.shape(w) != (sb[0], sa[1]) or sa[0] != sb[1]:
            raise ValueError(f"{who}: at {where!r} the adapter factors B {sb} @ A {sa} do not "
                             f"fit a weight of shape {np.shape(w)}")
        for name, x in (("A", ad.a), ("B", ad.b)):
            if np.dtype(x.dtype).kind in "biu":
                raise TypeError(f"{who}: at {where!r} adapter factor {name} is {x.dtype}; "
                                "adapters are floating-point")
        if keep_factors:
            return AdaptedWeight(w, ad)
        if _quant().is_quantized(w):
            if who != "lora.merge":
                raise TypeError(f"{who}: {where!r} is a quantized weight, so W + B A cannot be "
                                "formed in its storage; use a model that adds the adapters on "
                                "their own path (funcgrad.models' families and layers.linear "
                                "do), or lora.merge for a float checkpoint")
            w = _quant().dequantize(w)
        return fnp.add(w, delta(ad, w))

    try:
        return tu.tree_map_with_path(f, adapters, params, is_leaf=_is_adapter_leaf)
    except ValueError as e:
        if who in str(e):
            raise
        slots = tu.tree_map(lambda a: 0, adapters, is_leaf=_is_adapter_leaf)  # one per weight
        d = _masks.first_difference(slots, params, names=("the adapters", "the params"))
        detail = d[1] if d else str(e)
        raise ValueError(f"{who}: the adapters do not match the params' structure: {detail}; "
                         "make them with lora.init(key, params, mask)") from None


def apply(apply_fn):
    """`apply_fn(params, *args)` -> `fn(params, adapters, *args)` using W + scale * B @ A.

    Only the adapted leaves get a new array, computed inside the (traced) function so gradients
    flow to A and B; every other leaf is passed as the base array itself. The base tree is never
    copied or modified. Differentiate w.r.t. `adapters` (argnums=1) to train only them.

    A model function that computes the low-rank products itself says so with
    `apply_fn.computes_adapters = True` (the pretrained models' `model.apply` does); it then
    gets an `AdaptedWeight(W, adapter)` at each adapted leaf instead of W + scale * B @ A.
    """
    keep = bool(getattr(apply_fn, "computes_adapters", False))

    def adapted_apply(params, adapters, *args, **kwargs):
        return apply_fn(_adapted(params, adapters, "lora.apply", keep), *args, **kwargs)

    adapted_apply.__name__ = f"lora({getattr(apply_fn, '__name__', 'apply_fn')})"
    return adapted_apply


def merge(params, adapters):
    """A new params tree with each adapter folded in (W + scale * B @ A, in W's dtype); the
    other leaves are shared with `params`, which is left unchanged. Quantized weights
    (funcgrad.quant) are dequantized, adapted or not, so the result is a float checkpoint."""
    q = _quant()
    merged = _adapted(params, adapters, "lora.merge")
    merged = q.dequantize_tree(merged)
    return tu.tree_map(lambda m, w: fnp.asarray(m, w.dtype) if m is not w and hasattr(w, "dtype")
                       else m, merged, params, is_leaf=q.is_quantized)


# ---------------------------------------------------------------------------------------------
# PEFT's folder format (adapter_config.json + adapter_model.safetensors), in funcgrad/_peft.py

from ._peft import load_peft, save_peft  # noqa: E402
