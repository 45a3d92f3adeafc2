"""Transformations made of others: `chain` (in order), `masked` (on the trainable leaves
only), `multi_transform` (a different one per group of leaves) and `keep_pruned` (around a
pruned model's zeros).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .. import masks as _masks
from .. import numpy as fnp
from .. import tree_util as tu
from .base import MADE_BY, GradientTransformation, checked_transformation, made_by

__all__ = ["MaskedState", "MultiTransformState", "chain", "masked", "multi_transform",
           "keep_pruned"]


class MaskedState(NamedTuple):
    inner_state: Any


class MultiTransformState(NamedTuple):
    inner_states: Any


def chain(*transforms) -> GradientTransformation:
    """Apply transformations in order; the state is the tuple of their states."""
    return chain_as("chain", transforms)


def chain_as(who, transforms):
    """`chain`, reporting errors as `optim.<who>` (the optimizer the user called)."""
    for i, t in enumerate(transforms):
        if not (callable(getattr(t, "init", None)) and callable(getattr(t, "update", None))):
            raise TypeError(f"optim.{who}: argument {i} is a {type(t).__name__}, not a "
                            "GradientTransformation (an optimizer such as optim.adam(1e-3))")

    def init(params):
        return tuple(t.init(params) for t in transforms)

    def update(updates, state, params=None):
        if type(state) is not tuple or len(state) != len(transforms):
            raise TypeError(f"optim.{who}: the optimizer state is {made_by(state)}, but this "
                            f"optimizer chains {len(transforms)} transformations: pass the state "
                            "that this same optimizer's init(params) returned")
        new = []
        for t, s in zip(transforms, state):
            updates, s = t.update(updates, s, params)
            new.append(s)
        return updates, tuple(new)

    return checked_transformation(init, update, who=who, inner=transforms)


def _select(tree, on):
    """`tree` with the leaves where `on` is False replaced by None."""
    leaves, treedef = tu.tree_flatten(tree)
    return tu.tree_unflatten(treedef, [x if m else None for x, m in zip(leaves, on)])


def masked(inner: GradientTransformation, mask) -> GradientTransformation:
    """Run `inner` on the trainable (True) leaves of `mask` only; freeze the False leaves.

    Frozen leaves get zero updates (in their dtype), have no optimizer state (None holes), get no
    weight decay and are left out of the inner chain's global-norm clipping. `mask` is a bool
    tree, a prefix of one, or a callable `mask(params)`.

    This deliberately differs from `optax.masked`, which passes the *raw gradients* through on
    masked-out leaves, so that `apply_updates` moves frozen params by +grad unless the user adds
    `set_to_zero` (optax#159). In funcgrad a mask always means trainable.
    """

    def init(params):
        on = _masks.leaf_mask(mask, params, "optim.masked")
        return MaskedState(inner.init(_select(params, on)))

    def update(updates, state, params=None):
        on = _masks.leaf_mask(mask, updates if params is None else params, "optim.masked")
        sub_p = None if params is None else _select(params, on)
        new, inner_state = inner.update(_select(updates, on), state.inner_state, sub_p)
        leaves, treedef = tu.tree_flatten(updates)
        got = treedef.flatten_up_to(new)
        out = [n if m else fnp.zeros_like(u) for u, n, m in zip(leaves, got, on)]
        return tu.tree_unflatten(treedef, out), MaskedState(inner_state)

    return checked_transformation(init, update, MaskedState, inner=(inner,))


def multi_transform(transforms: dict, param_labels) -> GradientTransformation:
    """A different transformation per group of leaves: `param_labels` gives each leaf a label
    (a tree of labels, a prefix of one, or a callable of params), `transforms[label]` updates the
    leaves with that label, e.g. `{"backbone": set_to_zero(), "head": adam(1e-3)}`."""
    if not isinstance(transforms, dict) or not transforms:
        raise TypeError("optim.multi_transform: transforms must be a non-empty dict {label: "
                        f"GradientTransformation}}, got {type(transforms).__name__}")

    def labels_of(tree):
        labels = param_labels(tree) if callable(param_labels) else param_labels
        if isinstance(labels, str):
            out = [labels] * len(tu.tree_leaves(tree))
        else:
            try:
                out = tu.tree_broadcast_prefix(labels, tree)
            except ValueError:
                d = _masks.first_difference(labels, tree, names=("param_labels", "the params"),
                                            a_is_prefix=True)
                raise ValueError("optim.multi_transform: param_labels do not match the params: "
                                 f"{d[1] if d else 'structures differ'}") from None
        unknown = sorted({str(x) for x in out if x not in transforms})
        if unknown:
            raise KeyError(f"optim.multi_transform: labels {unknown} have no transformation; "
                           f"known labels: {sorted(transforms)}")
        return out

    def init(params):
        labels = labels_of(params)
        return MultiTransformState({k: t.init(_select(params, [x == k for x in labels]))
                                    for k, t in transforms.items()})

    def update(updates, state, params=None):
        if not isinstance(state.inner_states, dict) or set(state.inner_states) != set(transforms):
            got = sorted(state.inner_states) if isinstance(state.inner_states, dict) else "?"
            raise ValueError(f"optim.multi_transform: the state holds the labels {got}, this "
                             f"optimizer has {sorted(transforms)}: pass the state that this same "
                             "optimizer's init(params) returned")
        labels = labels_of(updates if params is None else params)
        leaves, treedef = tu.tree_flatten(updates)
        out = list(leaves)
        new_states = {}
        for k, t in transforms.items():
            on = [x == k for x in labels]
            sub_p = None if params is None else _select(params, on)
            new, new_states[k] = t.update(_select(updates, on), state.inner_states[k], sub_p)
            for i, n in enumerate(treedef.flatten_up_to(new)):
                if on[i]:
                    out[i] = n
        return tu.tree_unflatten(treedef, out), MultiTransformState(new_states)

    return checked_transformation(init, update, MultiTransformState,
                                  inner=tuple(transforms.values()))


def keep_pruned(inner: GradientTransformation, keep) -> GradientTransformation:
    """Fine-tune a pruned model: `keep` (from `masks.prune_by_magnitude`: a bool array per
    pruned leaf, True for kept elements, and True for whole leaves) holds the pruned weights
    at exactly zero. Their gradients are zeroed before `inner` (so clipping norms and Adam's
    moments see only the kept weights, as under PyTorch's pruning reparametrization), and
    their update is `-p`, so `apply_updates` puts an exact zero there even where the params
    were not zeroed first (`masks.apply_pruning`). `update` needs `params`."""

    def pruned(k):
        return not (isinstance(k, (bool, np.bool_)) and k)

    def init(params):
        return inner.init(params)

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("optim.keep_pruned: update needs params: tx.update(grads, state, "
                             "params)")
        g = tu.tree_map(lambda u, k: fnp.where(k, u, fnp.zeros_like(u)) if pruned(k) else u,
                        updates, keep)
        new, state = inner.update(g, state, params)
        out = tu.tree_map(lambda u, p, k: fnp.where(k, u, -fnp.asarray(p, u.dtype))
                          if pruned(k) else u, new, params, keep)
        return out, state

    return checked_transformation(init, update)


MADE_BY.update({MaskedState: "masked", MultiTransformState: "multi_transform"})
