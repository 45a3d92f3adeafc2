"""Magnitude pruning: masks.prune_by_magnitude (global and per layer, against PyTorch's pruning
utilities), fine-tuning that keeps the pruned weights at zero, and the sparsity report."""

from __future__ import annotations

import numpy as np
import pytest

import funcgrad as fg
import funcgrad.numpy as fnp
from funcgrad import masks, models, optim
from funcgrad.tree_util import tree_leaves


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return {"l1": {"w": rng.standard_normal((8, 16)).astype(np.float32),
                   "b": rng.standard_normal(16).astype(np.float32)},
            "l2": {"w": (rng.standard_normal((16, 4)) * 3).astype(np.float32),
                   "b": rng.standard_normal(4).astype(np.float32)}}


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_prune_by_magnitude_matches_torch(scope):
    torch = pytest.importorskip("torch")
    prune = pytest.importorskip("torch.nn.utils.prune")
    params = _params()
    keep = masks.prune_by_magnitude(params, 0.6, scope=scope)
    assert keep["l1"]["b"] is True and keep["l2"]["b"] is True  # biases are not pruned
    mods = {k: torch.nn.Linear(1, 1, bias=False) for k in ("l1", "l2")}
    for k, m in mods.items():
        m.weight = torch.nn.Parameter(torch.tensor(params[k]["w"]))
    if scope == "global":
        prune.global_unstructured([(m, "weight") for m in mods.values()],
                                  pruning_method=prune.L1Unstructured, amount=0.6)
    else:
        for m in mods.values():
            prune.l1_unstructured(m, "weight", amount=0.6)
    for k, m in mods.items():
        np.testing.assert_array_equal(keep[k]["w"], m.weight_mask.numpy().astype(bool))
    n = 8 * 16 + 16 * 4
    pruned = sum(int((~keep[k]["w"]).sum()) for k in mods)
    if scope == "global":
        assert pruned == round(0.6 * n)
    else:
        assert int((~keep["l1"]["w"]).sum()) == round(0.6 * 128)
        assert int((~keep["l2"]["w"]).sum()) == round(0.6 * 64)


def test_global_pruning_ranks_all_layers_together():
    params = _params()  # l2's weights are 3x larger: global pruning takes more of l1
    keep = masks.prune_by_magnitude(params, 0.5)
    thr = max(np.abs(params[k]["w"][~keep[k]["w"]]).max() for k in ("l1", "l2"))
    for k in ("l1", "l2"):
        assert np.all(np.abs(params[k]["w"][keep[k]["w"]]) >= thr)
    assert (~keep["l1"]["w"]).mean() > (~keep["l2"]["w"]).mean()


def test_prune_edges_and_errors():
    params = _params()
    assert np.all(masks.prune_by_magnitude(params, 0.0)["l1"]["w"])
    assert not np.any(masks.prune_by_magnitude(params, 1.0)["l2"]["w"])
    only = masks.prune_by_magnitude(params, 0.5, mask={"l1": True, "l2": False})
    assert only["l2"]["w"] is True and (~only["l1"]["b"]).sum() == 8  # l1's bias too
    with pytest.raises(ValueError, match="sparsity must be in"):
        masks.prune_by_magnitude(params, 1.5)
    with pytest.raises(ValueError, match="scope"):
        masks.prune_by_magnitude(params, 0.5, scope="row")
    with pytest.raises(TypeError, match="not a floating"):
        masks.prune_by_magnitude({"ids": np.arange(6).reshape(2, 3)}, 0.5, mask=True)


def _data(n=64, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 8)).astype(np.float32)
    return x, (np.sin(x[:, :1]) + x[:, 1:2] ** 2).astype(np.float32)


def _loss(p, x, y):
    return fnp.mean(fnp.square(models.mlp.apply(p, x) - y))


@pytest.mark.parametrize("zero_first", [True, False])
def test_fine_tuning_keeps_pruned_weights_at_zero(zero_first):
    params = models.mlp.init(fg.random.key(0), [8, 32, 32, 1])
    x, y = _data()
    keep = masks.prune_by_magnitude(params, 0.7)
    if zero_first:
        params = masks.apply_pruning(params, keep)
        assert abs(masks.sparsity(params, keep)["overall"] - 0.7) < 0.01
    tx = optim.keep_pruned(optim.chain(optim.clip_by_global_norm(1.0), optim.adamw(1e-2)), keep)
    state = tx.init(params)

    @fg.jit
    def step(params, state):
        loss, g = fg.value_and_grad(_loss)(params, x, y)
        u, state = tx.update(g, state, params)
        return optim.apply_updates(params, u), state, loss

    first = None
    for _ in range(40):
        params, state, loss = step(params, state)
        first = first if first is not None else float(loss)
    report = masks.sparsity(params, keep)
    assert abs(report["overall"] - 0.7) < 0.01
    for k, w in zip(("layers/0/w", "layers/1/w", "layers/2/w"),
                    (params["layers"][i]["w"] for i in range(3))):
        assert np.all(w[~keep["layers"][int(k.split("/")[1])]["w"]] == 0), k
        assert k in report
    assert float(loss) < 0.7 * first


def test_keep_pruned_with_a_mask_and_multisteps():
    params = models.mlp.init(fg.random.key(1), [8, 16, 1])
    x, y = _data()
    keep = masks.prune_by_magnitude(params, 0.5)
    params = masks.apply_pruning(params, keep)
    frozen = masks.mask_from_paths(params, include=["layers/1/**"])
    inner = optim.MultiSteps(optim.masked(optim.sgd(0.1), frozen), 2).gradient_transformation()
    tx = optim.keep_pruned(inner, keep)
    state = tx.init(params)
    before = params["layers"][0]["w"].copy()
    for _ in range(4):
        g = fg.grad(_loss)(params, x, y)
        u, state = tx.update(g, state, params)
        params = optim.apply_updates(params, u)
    np.testing.assert_array_equal(params["layers"][0]["w"], before)  # frozen by the mask
    w1 = params["layers"][1]["w"]
    assert np.all(w1[~keep["layers"][1]["w"]] == 0) and np.any(w1 != 0)
    assert masks.sparsity(params)["overall"] >= 0.5
    assert all(leaf.dtype == np.float32 for leaf in tree_leaves(params))
