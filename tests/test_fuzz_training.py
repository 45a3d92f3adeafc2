"""Fuzz of the training API: random parameter trees, masks, adapters, optimizers and checkpoints,
with random structural, shape and dtype mismatches injected (hypothesis, derandomized and
bounded for CI).

The property: every call either returns the right result, or raises a funcgrad error
(ValueError, TypeError, CheckpointError) whose message names the path where the mismatch was
injected. Nothing computes on silently.
"""

import os
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import funcgrad as fg
from funcgrad import io, lora, masks, optim
from funcgrad import tree_util as tu

# CI runs a fixed, bounded set; FUNCGRAD_FUZZ_EXAMPLES=2000 searches deeper with fresh examples.
_DEEP = os.environ.get("FUNCGRAD_FUZZ_EXAMPLES")
SETTINGS = settings(max_examples=int(_DEEP or 60), deadline=None, derandomize=not _DEEP,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SHAPES = [(), (2,), (3,), (2, 3), (3, 2), (4, 4)]
KEYS = "abcwxy"


# ----------------------------------------------------------------------------------------------
# Trees and mutations


@st.composite
def specs(draw, depth=0):
    """A tree of leaf shapes: nested dicts and lists (at least one leaf)."""
    if depth >= 2 or draw(st.integers(0, 2)) == 0:
        return draw(st.sampled_from(SHAPES))
    if draw(st.booleans()):
        keys = draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=3, unique=True))
        return {k: draw(specs(depth + 1)) for k in keys}
    return [draw(specs(depth + 1)) for _ in range(draw(st.integers(1, 3)))]


def materialize(spec, seed):
    rng = np.random.default_rng(seed)
    return tu.tree_map(lambda s: rng.normal(size=s).astype(np.float32), spec,
                       is_leaf=lambda s: isinstance(s, tuple))


def containers(tree, path=()):
    """`(path, node)` of every dict and list in `tree` (the root first)."""
    out = []
    if isinstance(tree, (dict, list)):
        out.append((path, tree))
        items = tree.items() if isinstance(tree, dict) else enumerate(tree)
        for k, c in items:
            out += containers(c, path + (str(k),))
    return out


def leaf_paths(tree):
    return [tuple(p.split("/")) if p else () for p in masks.paths(tree)]


def get(tree, path):
    for k in path:
        tree = tree[int(k)] if isinstance(tree, list) else tree[k]
    return tree


def replaced(tree, path, new):
    """`tree` with the subtree at `path` replaced by `new` (copies along the path only)."""
    if not path:
        return new
    k, rest = path[0], path[1:]
    if isinstance(tree, list):
        out = list(tree)
        out[int(k)] = replaced(tree[int(k)], rest, new)
        return out
    return {**tree, k: replaced(tree[k], rest, new)}


def named(path):
    return "/".join(path) if path else "<root>"


MUTATIONS = ["drop-key", "add-key", "list-for-dict", "longer-list", "shape", "dtype"]


def mutate(tree, kind, pick):
    """`(mutated tree, path)`: the path (a tuple) the error must name; None when `tree` has no
    place for `kind`. `pick(n)` chooses an index below n."""
    dicts = [(p, n) for p, n in containers(tree) if isinstance(n, dict)]
    lists = [(p, n) for p, n in containers(tree) if isinstance(n, list)]
    leaves = leaf_paths(tree)
    if kind in ("drop-key", "add-key", "list-for-dict") and dicts:
        path, node = dicts[pick(len(dicts))]
        if kind == "drop-key":
            k = sorted(node)[pick(len(node))]
            return replaced(tree, path, {j: v for j, v in node.items() if j != k}), path + (k,)
        if kind == "add-key":
            return replaced(tree, path, {**node, "zz": np.ones(2, np.float32)}), path + ("zz",)
        return replaced(tree, path, [node[k] for k in sorted(node)]), path
    if kind == "longer-list" and lists:
        path, node = lists[pick(len(lists))]
        return replaced(tree, path, node + [np.ones(2, np.float32)]), path + (str(len(node)),)
    if kind in ("shape", "dtype") and leaves:
        path = leaves[pick(len(leaves))]
        x = get(tree, path)
        new = np.ones(x.shape + (2,), x.dtype) if kind == "shape" else x.astype(np.float64)
        return replaced(tree, path, new), path
    return None


def assert_names(err, path):
    msg, where = str(err.value), named(path)
    assert where in msg, f"the error does not name {where!r}:\n{msg}"


# ----------------------------------------------------------------------------------------------
# Properties


OPTIMIZERS = {
    "sgd": lambda: optim.sgd(0.1),
    "momentum": lambda: optim.sgd(0.1, momentum=0.9),
    "adam": lambda: optim.adam(1e-2),
    "adamw": lambda: optim.adamw(1e-2, mask=None),
    "clip+rmsprop": lambda: optim.chain(optim.clip_by_global_norm(1.0), optim.rmsprop(1e-2)),
    "lion": lambda: optim.lion(1e-3),
    "multisteps": lambda: optim.MultiSteps(optim.adam(1e-2), 2).gradient_transformation(),
}


@SETTINGS
@given(spec=specs(), seed=st.integers(0, 2**16), opt=st.sampled_from(sorted(OPTIMIZERS)),
       kind=st.sampled_from(MUTATIONS), picks=st.lists(st.integers(0, 99), min_size=3,
                                                       max_size=3), jit=st.booleans())
def test_optimizers_and_apply_updates(spec, seed, opt, kind, picks, jit):
    params = materialize(spec, seed)
    grads = materialize(spec, seed + 1)
    tx = OPTIMIZERS[opt]()
    state = tx.init(params)
    update = fg.jit(tx.update) if jit else tx.update
    u = fg.device_get(update(grads, state, params)[0])
    assert tu.tree_structure(u) == tu.tree_structure(params)
    for a, p in zip(tu.tree_leaves(u), tu.tree_leaves(params)):
        assert a.shape == p.shape and a.dtype == p.dtype and np.all(np.isfinite(a))
    if opt == "sgd":
        for a, g in zip(tu.tree_leaves(u), tu.tree_leaves(grads)):
            np.testing.assert_array_equal(a, np.float32(-0.1) * g)
    new = fg.device_get(optim.apply_updates(params, u))
    for n, p, a in zip(tu.tree_leaves(new), tu.tree_leaves(params), tu.tree_leaves(u)):
        np.testing.assert_array_equal(n, p + a)

    it = iter(picks)
    m = mutate(grads, kind, lambda n: next(it) % n)
    if m is None:
        return
    bad, where = m
    with pytest.raises((ValueError, TypeError)) as err:
        update(bad, state, params)
    assert_names(err, where)
    if opt != "sgd":                                 # without params the state must catch it
        with pytest.raises((ValueError, TypeError)) as err:     # (sgd keeps no per-leaf state)
            tx.update(bad, state)
        assert_names(err, where)
    if kind != "dtype":                                  # apply_updates casts float precision
        with pytest.raises((ValueError, TypeError)) as err:
            optim.apply_updates(params, bad)
        assert_names(err, where)
    else:
        optim.apply_updates(params, bad)


@SETTINGS
@given(spec=specs(), seed=st.integers(0, 2**16), bits=st.lists(st.booleans(), min_size=12,
                                                                max_size=12),
       kind=st.sampled_from(MUTATIONS), picks=st.lists(st.integers(0, 99), min_size=3,
                                                       max_size=3))
def test_masks_and_masked_optimizers(spec, seed, bits, kind, picks):
    params = materialize(spec, seed)
    grads = materialize(spec, seed + 1)
    n = len(tu.tree_leaves(params))
    mask = tu.tree_unflatten(tu.tree_structure(params), bits[:n] + [True] * (n - len(bits)))
    tx = optim.masked(optim.sgd(0.5), mask)
    state = tx.init(params)
    u, state = tx.update(grads, state, params)
    u = fg.device_get(u)
    for a, g, on in zip(tu.tree_leaves(u), tu.tree_leaves(grads), tu.tree_leaves(mask)):
        np.testing.assert_array_equal(a, np.float32(-0.5) * g if on else np.zeros_like(g))
    assert masks.count(params, mask) == sum(x.size for x, on in zip(
        tu.tree_leaves(params), tu.tree_leaves(mask)) if on)

    it = iter(picks)
    m = mutate(grads, kind, lambda n: next(it) % n)
    if m is not None:
        bad, where = m
        with pytest.raises((ValueError, TypeError)) as err:
            tx.update(bad, state, params)
        assert_names(err, where)
    if kind in ("shape", "dtype"):                           # a mask's leaves are bools
        return
    it = iter(picks)
    m = mutate(mask, kind, lambda n: next(it) % n)
    if m is not None:
        bad_mask, where = m
        with pytest.raises((ValueError, TypeError)) as err:
            optim.masked(optim.sgd(0.5), bad_mask).init(params)
        assert_names(err, where)


@SETTINGS
@given(spec=specs(), seed=st.integers(0, 2**16), kind=st.sampled_from(MUTATIONS),
       picks=st.lists(st.integers(0, 99), min_size=3, max_size=3), rank=st.integers(1, 3))
def test_lora_adapters(spec, seed, kind, picks, rank):
    params = materialize(spec, seed)
    matrices = masks.mask_where(params, lambda p, x: x.ndim == 2)
    if not any(tu.tree_leaves(matrices)):
        with pytest.raises(ValueError, match="selects no leaf"):
            lora.init(seed, params, matrices, rank=rank)
        return
    small = min(min(x.shape) for x, on in zip(tu.tree_leaves(params), tu.tree_leaves(matrices))
                if on)
    if rank > small:
        with pytest.raises(ValueError, match=f"rank={rank} exceeds"):
            lora.init(seed, params, matrices, rank=rank)
        return
    ad = lora.init(seed, params, matrices, rank=rank)
    ad = tu.tree_map(lambda a: None if a is None else lora.Adapter(a.a, a.b + np.float32(0.1),
                                                                     a.scale),
                     ad, is_leaf=lambda x: x is None or isinstance(x, lora.Adapter))
    ad, merged = fg.device_get((ad, lora.merge(params, ad)))
    for path, on in zip(leaf_paths(params), tu.tree_leaves(matrices)):
        w, got = get(params, path), get(merged, path)
        if on:
            a = get(ad, path)
            np.testing.assert_allclose(got, w + a.scale * (a.b @ a.a), rtol=1e-5, atol=1e-6)
        else:
            np.testing.assert_array_equal(got, w)

    it = iter(picks)
    m = mutate(params, kind, lambda n: next(it) % n)
    if m is None:
        return
    bad, where = m
    if kind not in ("shape", "dtype") or (kind == "shape" and get(matrices, where)):
        with pytest.raises((ValueError, TypeError)) as err:
            lora.merge(bad, ad)
        assert_names(err, where)
    else:
        lora.merge(bad, ad)                  # another dtype, or a leaf no adapter touches: fine


@SETTINGS
@given(spec=specs(), seed=st.integers(0, 2**16), kind=st.sampled_from(MUTATIONS),
       picks=st.lists(st.integers(0, 99), min_size=3, max_size=3),
       flip=st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)))
def test_checkpoints(spec, seed, kind, picks, flip):
    params = materialize(spec, seed)
    tx = optim.adam(1e-2)
    state = fg.device_get(tx.init(params))
    with tempfile.TemporaryDirectory() as d:
        f = os.path.join(d, "ck.safetensors")
        io.save(f, {"params": params, "opt": state})
        back = io.load(f)
        assert tu.tree_structure(back) == tu.tree_structure({"params": params, "opt": state})
        for a, b in zip(tu.tree_leaves(back), tu.tree_leaves({"params": params, "opt": state})):
            np.testing.assert_array_equal(a, b)
            assert a.dtype == b.dtype

        it = iter(picks)
        m = mutate(params, kind, lambda n: next(it) % n)
        if m is not None:
            bad, where = m
            with pytest.raises(io.CheckpointError) as err:
                io.load(f, like={"params": bad, "opt": state})
            assert_names(err, ("params",) + where)

        raw = bytearray(open(f, "rb").read())                # one damaged byte anywhere
        pos = int(flip[0] * len(raw))
        raw[pos] ^= flip[1]
        open(f, "wb").write(bytes(raw))
        try:
            again = io.load(f)
        except io.CheckpointError as e:
            assert "ck.safetensors" in str(e)
            return
        assert tu.tree_structure(again) == tu.tree_structure(back)   # (a harmless byte)
        for a, b in zip(tu.tree_leaves(again), tu.tree_leaves(back)):
            np.testing.assert_array_equal(a, b)
            assert a.dtype == b.dtype
