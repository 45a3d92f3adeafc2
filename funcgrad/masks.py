"""Parameter masks: boolean pytrees shaped like the params, where `True` always means *trainable*.

One mask drives `fg.grad(..., wrt=mask)`, `optim.masked(tx, mask)`, `io.save(..., mask=mask)` and
`lora.init(...)`. A prefix tree is accepted wherever a mask is (one bool covers a subtree). Paths
are written `blocks/1/attn/wq`: dict keys, list indices and attribute names joined by `/`.

    mask = masks.mask_from_paths(params, include=["blocks/1/**", "head"])
    trainable, frozen = masks.partition(params, mask)      # None in the holes
    params = masks.combine(trainable, frozen)
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Callable

import numpy as np

from . import tree_util as tu

__all__ = ["mask_from_paths", "mask_where", "partition", "combine", "count", "leaf_mask",
           "paths", "first_difference", "prune_by_magnitude", "apply_pruning", "sparsity"]


def paths(tree) -> list[str]:
    """The `/`-joined path of every leaf of `tree`, in flatten order."""
    return [tu.path_to_str(p) for p, _ in tu.tree_flatten_with_path(tree)[0]]


# ----------------------------------------------------------------------------------------------
# Building masks


def _split(pattern: str) -> list[str]:
    return [s for s in pattern.strip("/").split("/") if s != ""]


def _match(pat: list[str], segs: list[str]) -> bool:
    """Glob match of path segments: `*`/`?`/`[..]` within one segment, `**` across segments."""
    if not pat:
        return not segs
    head = pat[0]
    if head == "**":
        return any(_match(pat[1:], segs[i:]) for i in range(len(segs) + 1))
    return bool(segs) and fnmatchcase(segs[0], head) and _match(pat[1:], segs[1:])


def _matches(pat: list[str], segs: list[str]) -> bool:
    """A pattern selects a leaf when it matches the leaf's path or a subtree above it."""
    return any(_match(pat, segs[:i]) for i in range(1, len(segs) + 1)) or _match(pat, segs)


def _no_match_error(pattern, all_paths, what):
    shown = ", ".join(all_paths[:6]) + (", ..." if len(all_paths) > 6 else "")
    return ValueError(f"mask_from_paths: {what} pattern {pattern!r} matches no path; existing "
                      f"paths include: {shown or '(the tree has no leaves)'}")


def mask_from_paths(params, include=None, exclude=()):
    """Mask that is True for leaves matched by any `include` pattern and by no `exclude` pattern.

    Patterns are globs over `/`-joined paths: `*` matches within one segment (`blocks/*/attn/wq`),
    `**` across segments (`**/bias`); a pattern naming a subtree (`head`, `blocks/1`) selects all
    its leaves. `include=None` means every leaf. A pattern that matches nothing raises, naming
    the pattern and a few existing paths (a typo must not silently freeze or train nothing).
    """
    if isinstance(include, str):
        include = [include]
    if isinstance(exclude, str):
        exclude = [exclude]
    pairs, treedef = tu.tree_flatten_with_path(params)
    strs = [tu.path_to_str(p) for p, _ in pairs]
    segs = [[tu.path_to_str((k,)) for k in p] for p, _ in pairs]

    def select(patterns, what):
        hit = [False] * len(segs)
        for pattern in patterns:
            pat = _split(pattern)
            found = False
            for i, s in enumerate(segs):
                if _matches(pat, s):
                    hit[i] = found = True
            if not found:
                raise _no_match_error(pattern, strs, what)
        return hit

    on = [True] * len(segs) if include is None else select(include, "include")
    off = select(exclude or (), "exclude")
    return tu.tree_unflatten(treedef, [a and not b for a, b in zip(on, off)])


def mask_where(params, pred: Callable[[str, object], bool]):
    """Mask from a predicate `pred(path: str, leaf) -> bool`, e.g. `lambda p, x: x.ndim == 2`."""
    return tu.tree_map_with_path(lambda p, x: bool(pred(tu.path_to_str(p), x)), params)


# ----------------------------------------------------------------------------------------------
# Structure checks


def children(x):
    """`[(segment, child)]` of a container node, or None for a leaf (None is a childless node)."""
    if x is None:
        return []
    pairs, _ = tu.tree_flatten_with_path(x, is_leaf=lambda y: y is not x)
    if len(pairs) == 1 and pairs[0][0] == () and pairs[0][1] is x:
        return None
    return [(tu.path_to_str(p), c) for p, c in pairs]


def _kind(x) -> str:
    if x is None:
        return "None"
    if children(x) is None:
        shape = getattr(x, "shape", None)
        return f"a leaf of shape {tuple(shape)}" if shape is not None else "a leaf"
    return f"a {type(x).__name__}"


def first_difference(a, b, *, names=("the first tree", "the second"), a_is_prefix=False,
                     check_shapes=False):
    """`(path, message)` for the first place trees `a` and `b` differ, or None when they match.

    With `a_is_prefix`, a leaf of `a` covers any subtree of `b` (prefix masks, labels).
    """

    def walk(x, y, path):
        where = "/".join(path) or "<root>"
        cx, cy = children(x), children(y)
        if a_is_prefix and cx is None:
            return None
        if cx is None and cy is None:
            if check_shapes:
                sx, sy = getattr(x, "shape", None), getattr(y, "shape", None)
                if sx is not None and sy is not None and tuple(sx) != tuple(sy):
                    return where, (f"at {where!r}: shape {tuple(sx)} in {names[0]}, "
                                   f"{tuple(sy)} in {names[1]}")
            return None
        if cx is None or cy is None or type(x) is not type(y):
            return where, f"at {where!r}: {_kind(x)} in {names[0]}, {_kind(y)} in {names[1]}"
        kx, ky = [k for k, _ in cx], [k for k, _ in cy]
        if kx != ky:
            for k in kx:
                if k not in ky:
                    p = "/".join(path + [k])
                    return p, f"{p!r} is in {names[0]} but not in {names[1]}"
            for k in ky:
                if k not in kx:
                    p = "/".join(path + [k])
                    return p, f"{p!r} is in {names[1]} but not in {names[0]}"
            return where, f"at {where!r}: children {kx} vs {ky}"
        for (k, c), (_, d) in zip(cx, cy):
            r = walk(c, d, path + [k])
            if r is not None:
                return r
        return None

    return walk(a, b, [])


def leaf_mask(mask, tree, who: str = "mask") -> list[bool]:
    """One bool per leaf of `tree` from a (prefix) mask or a callable `mask(tree) -> mask`."""
    if callable(mask):
        mask = mask(tree)
    if isinstance(mask, (bool, np.bool_)):
        return [bool(mask)] * len(tu.tree_leaves(tree))
    try:
        leaves = tu.tree_broadcast_prefix(mask, tree)
    except ValueError:
        d = first_difference(mask, tree, names=("the mask", "the tree"), a_is_prefix=True)
        detail = d[1] if d else "structures differ"
        raise ValueError(f"{who}: the mask does not match the tree's structure: {detail}") from None
    for m in leaves:
        if not isinstance(m, (bool, np.bool_)):
            raise TypeError(f"{who}: mask leaves must be True or False, got {m!r}")
    return [bool(m) for m in leaves]


# ----------------------------------------------------------------------------------------------
# partition / combine / count


def partition(tree, mask):
    """`(selected, rest)`: the True leaves and the False leaves, each with None in the holes."""
    leaves, treedef = tu.tree_flatten(tree)
    on = leaf_mask(mask, tree, "partition")
    sel = [x if m else None for x, m in zip(leaves, on)]
    rest = [None if m else x for x, m in zip(leaves, on)]
    return tu.tree_unflatten(treedef, sel), tu.tree_unflatten(treedef, rest)


def combine(*trees):
    """Merge trees with None holes (as from `partition`): each leaf from the first tree that has
    one there."""
    if not trees:
        raise TypeError("combine needs at least one tree")

    def first(*xs):
        for x in xs:
            if x is not None:
                return x
        return None

    return tu.tree_map(first, *trees, is_leaf=lambda x: x is None)


def count(params, mask=None) -> int:
    """Number of scalar elements in the True leaves of `mask` (all leaves when mask is None)."""
    leaves = tu.tree_leaves(params)
    on = [True] * len(leaves) if mask is None else leaf_mask(mask, params, "count")
    return int(sum(int(np.prod(np.shape(x))) for x, m in zip(leaves, on) if m))


# ----------------------------------------------------------------------------------------------
# Magnitude pruning: masks of kept weights (arrays of bools, one per element)


def _default_prunable(params):
    """Weight matrices and kernels: floating leaves with two or more dimensions."""
    return tu.tree_map(lambda x: bool(np.ndim(x) >= 2 and _is_floating(x)), params)


def _is_floating(x):
    dt = getattr(x, "dtype", None)
    return dt is not None and (np.dtype(dt).kind == "f" or np.dtype(dt).name == "bfloat16")


def _host_abs(x):
    get = getattr(x, "get", None)  # a CuPy array
    a = get() if get is not None and not isinstance(x, np.ndarray) else np.asarray(x)
    return np.abs(a.astype(np.float32, copy=False))


def prune_by_magnitude(params, sparsity: float, mask=None, scope: str = "global"):
    """A mask of the weights to keep: the largest in magnitude, so that a fraction `sparsity` of
    the selected elements is pruned.

    `mask` selects the leaves to prune (a bool tree or prefix, or a callable of params); by
    default the floating leaves with two or more dimensions (weight matrices, not biases or
    norm scales). `scope="global"` ranks all selected elements together (layers that matter
    less lose more, as `torch.nn.utils.prune.global_unstructured`); `scope="layer"` prunes each
    leaf to `sparsity` on its own (as `l1_unstructured` per module). Exactly
    `round(sparsity * n)` elements are pruned (ties broken by position).

    The result is shaped like `params`: a bool array per pruned leaf (True = kept) and `True`
    for the others. Zero the pruned weights with `apply_pruning(params, keep)`, keep them at
    zero while fine-tuning with `optim.keep_pruned(tx, keep)`, and report with `sparsity`.
    """
    if not 0.0 <= float(sparsity) <= 1.0:
        raise ValueError(f"prune_by_magnitude: sparsity must be in [0, 1], got {sparsity!r}")
    if scope not in ("global", "layer"):
        raise ValueError(f"prune_by_magnitude: scope must be 'global' or 'layer', got {scope!r}")
    leaves, treedef = tu.tree_flatten(params)
    on = leaf_mask(_default_prunable if mask is None else mask, params, "prune_by_magnitude")
    for (path, x), m in zip(tu.tree_flatten_with_path(params)[0], on):
        if m and not _is_floating(x):
            raise TypeError(f"prune_by_magnitude: {tu.path_to_str(path)!r} is not a floating "
                            "array; leave it out of the mask")
    chosen = [i for i, m in enumerate(on) if m]
    keep = [True] * len(leaves)
    if scope == "layer":
        for i in chosen:
            keep[i] = _keep_largest([_host_abs(leaves[i])], sparsity)[0]
    elif chosen:
        for i, k in zip(chosen, _keep_largest([_host_abs(leaves[i]) for i in chosen],
                                              sparsity)):
            keep[i] = k
    return tu.tree_unflatten(treedef, keep)


def _keep_largest(mags, sparsity):
    """Bool arrays (shaped as `mags`) keeping all but the round(sparsity * n) smallest."""
    n = sum(m.size for m in mags)
    k = int(round(float(sparsity) * n))
    if k == 0:
        return [np.ones(m.shape, bool) for m in mags]
    if k >= n:
        return [np.zeros(m.shape, bool) for m in mags]
    flat = np.concatenate([m.ravel() for m in mags])
    order = np.argpartition(flat, k - 1)[:k]   # the k smallest (ties by position)
    kept = np.ones(n, bool)
    kept[order] = False
    out, start = [], 0
    for m in mags:
        out.append(kept[start:start + m.size].reshape(m.shape))
        start += m.size
    return out


def apply_pruning(params, keep):
    """`params` with the pruned elements (False in `keep`) set to zero; leaves whose `keep` is
    a plain `True` are returned as they are."""
    def zero(x, k):
        if k is True or isinstance(k, (bool, np.bool_)) and k:
            return x
        if isinstance(k, (bool, np.bool_)):
            return x * 0
        return x * _like(k, x)
    return tu.tree_map(zero, params, keep)


def _like(k, x):
    """The keep array as 0/1 in x's dtype, on x's device."""
    ones = np.asarray(k).astype(x.dtype)
    if hasattr(x, "__cuda_array_interface__"):
        from .devices import device_put
        return device_put(ones, "gpu")
    return ones


def sparsity(params, keep=None) -> dict:
    """The fraction of zero elements: `{"overall": f, "<path>": f, ...}` over the leaves `keep`
    prunes (with `keep=None`, over the floating leaves with two or more dimensions). Computed
    from the values, so it reports what fine-tuning actually kept at zero."""
    sel = _default_prunable(params) if keep is None else tu.tree_map(
        lambda k: not (isinstance(k, (bool, np.bool_)) and k), keep)
    out, zeros, total = {}, 0, 0
    for (path, x), m in zip(tu.tree_flatten_with_path(params)[0], leaf_mask(sel, params)):
        if not m:
            continue
        z = int(np.count_nonzero(_host_abs(x) == 0))
        out[tu.path_to_str(path)] = z / max(int(np.size(x)), 1)
        zeros += z
        total += int(np.size(x))
    return {"overall": zeros / max(total, 1), **out}
