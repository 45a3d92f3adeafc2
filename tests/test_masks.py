"""funcgrad.masks: paths, globs, predicates, partition/combine, counts, and structure errors."""

import numpy as np
import pytest

import funcgrad as fg
import funcgrad.numpy as fnp
from funcgrad import masks
from funcgrad import tree_util as tu


def make_params():
    def block(d):
        return {"attn": {"wq": np.ones((d, d), np.float32), "wk": np.ones((d, d), np.float32)},
                "ln": {"scale": np.ones(d, np.float32), "bias": np.zeros(d, np.float32)}}
    return {"embed": np.ones((10, 4), np.float32), "blocks": [block(4), block(4)],
            "head": {"w": np.ones((4, 3), np.float32), "bias": np.zeros(3, np.float32)}}


def on_paths(params, mask):
    return sorted(p for p, m in zip(masks.paths(params), tu.tree_leaves(mask)) if m)


def test_paths_are_slash_joined_with_list_indices():
    assert "blocks/1/attn/wq" in masks.paths(make_params())


def test_star_matches_within_one_segment():
    p = make_params()
    assert on_paths(p, masks.mask_from_paths(p, include=["blocks/1/attn/*"])) == [
        "blocks/1/attn/wk", "blocks/1/attn/wq"]
    assert on_paths(p, masks.mask_from_paths(p, include=["blocks/*/attn/wq"])) == [
        "blocks/0/attn/wq", "blocks/1/attn/wq"]
    assert on_paths(p, masks.mask_from_paths(p, include=["head/*"])) == ["head/bias", "head/w"]


def test_double_star_matches_across_segments():
    p = make_params()
    assert on_paths(p, masks.mask_from_paths(p, include=["**/bias"])) == [
        "blocks/0/ln/bias", "blocks/1/ln/bias", "head/bias"]
    assert on_paths(p, masks.mask_from_paths(p, include=["blocks/**/wk"])) == [
        "blocks/0/attn/wk", "blocks/1/attn/wk"]


def test_subtree_pattern_and_exclude():
    p = make_params()
    m = masks.mask_from_paths(p, include=["blocks/1", "head"], exclude=["**/ln/*"])
    assert on_paths(p, m) == ["blocks/1/attn/wk", "blocks/1/attn/wq", "head/bias", "head/w"]
    everything_but = masks.mask_from_paths(p, exclude=["embed"])
    assert masks.count(p, everything_but) == masks.count(p) - 40
    assert m["blocks"][0]["attn"]["wq"] is False and m["head"]["w"] is True


def test_empty_glob_match_raises_naming_pattern_and_paths():
    p = make_params()
    with pytest.raises(ValueError, match=r"'blocks/2/\*'.*blocks/0/attn/wk"):
        masks.mask_from_paths(p, include=["blocks/2/*"])
    with pytest.raises(ValueError, match="exclude pattern 'haed'"):
        masks.mask_from_paths(p, exclude=["haed"])


def test_mask_where_gets_path_string_and_leaf():
    p = make_params()
    seen = []
    m = masks.mask_where(p, lambda path, x: seen.append(path) or x.ndim == 2)
    assert "blocks/0/ln/scale" in seen
    assert on_paths(p, m) == sorted(q for q in masks.paths(p) if "attn" in q or q in
                                    ("embed", "head/w"))


def test_partition_and_combine_round_trip():
    p = make_params()
    m = masks.mask_from_paths(p, include=["head"])
    sel, rest = masks.partition(p, m)
    assert sel["embed"] is None and rest["head"]["w"] is None
    assert sel["head"]["w"] is p["head"]["w"]
    assert len(tu.tree_leaves(sel)) == 2
    back = masks.combine(sel, rest)
    assert tu.tree_structure(back) == tu.tree_structure(p)
    for a, b in zip(tu.tree_leaves(back), tu.tree_leaves(p)):
        assert a is b


def test_prefix_masks_are_accepted():
    p = make_params()
    prefix = {"embed": False, "blocks": False, "head": True}
    assert masks.count(p, prefix) == 4 * 3 + 3
    sel, _ = masks.partition(p, prefix)
    assert sel["blocks"][1]["attn"]["wq"] is None
    assert masks.count(p, True) == masks.count(p)


def test_count_counts_scalar_elements():
    p = make_params()
    assert masks.count(p) == 40 + 2 * (16 + 16 + 4 + 4) + 12 + 3
    assert masks.count(p, masks.mask_from_paths(p, include=["blocks/1/attn/*"])) == 32


def test_wrong_mask_structure_names_first_differing_path():
    p = make_params()
    bad = {"embed": True, "blocks": [True, {"attn": True, "norm": True}], "head": True}
    with pytest.raises(ValueError, match="'blocks/1/norm' is in the mask but not in the tree"):
        masks.partition(p, bad)
    with pytest.raises(ValueError, match="blocks"):
        masks.count(p, {"embed": True, "blocks": [True], "head": True})


def test_one_mask_drives_grad_wrt():
    p = make_params()
    m = masks.mask_from_paths(p, include=["head/*"])

    def loss(p):
        h = p["embed"][:2] @ p["blocks"][1]["attn"]["wq"]
        return fnp.sum((h @ p["head"]["w"] + p["head"]["bias"]) ** 2)

    g = fg.grad(loss, wrt=m)(p)
    assert not np.any(g["blocks"][1]["attn"]["wq"])
    assert np.any(g["head"]["w"])
