"""funcgrad.lora: adapter shapes and init, W + scale * B @ A without copying the base tree,
training only the adapters, merging back."""

import numpy as np
import pytest

import funcgrad as fg
import funcgrad.numpy as fnp
from funcgrad import lora, masks, optim
from funcgrad import tree_util as tu


def make_params():
    rng = np.random.default_rng(0)
    return {"l1": {"w": rng.normal(size=(8, 6)).astype(np.float32),
                   "b": np.zeros(8, np.float32)},
            "l2": {"w": rng.normal(size=(3, 8)).astype(np.float32),
                   "b": np.zeros(3, np.float32)}}


def dense(x, layer):                   # PyTorch layout: W of shape (out, in), y = x @ W.T + b
    # fnp, not @ and +: called eagerly on host params next to device results in GPU mode
    return fnp.add(fnp.matmul(x, layer["w"].T), layer["b"])


def model(p, x):
    return dense(fnp.tanh(dense(x, p["l1"])), p["l2"])


WEIGHTS = lambda p: masks.mask_from_paths(p, include=["*/w"])   # noqa: E731


def test_init_shapes_zero_b_and_scale():
    p = make_params()
    ad = lora.init(0, p, WEIGHTS(p), rank=2, alpha=8)
    a1 = ad["l1"]["w"]
    assert ad["l1"]["b"] is None
    assert a1.a.shape == (2, 6) and a1.b.shape == (8, 2)     # A: rank x in, B: out x rank
    assert a1.a.dtype == np.float32 and np.any(a1.a) and not np.any(a1.b)
    assert np.abs(a1.a).max() <= 1 / np.sqrt(6)
    assert a1.scale == 4.0
    assert masks.count(ad) == 2 * 6 + 8 * 2 + 2 * 8 + 3 * 2
    again = lora.init(0, p, WEIGHTS(p), rank=2, alpha=8)
    np.testing.assert_array_equal(again["l2"]["w"].a, ad["l2"]["w"].a)


def test_init_rejects_non_matrices_and_empty_masks():
    p = make_params()
    with pytest.raises(ValueError, match="'l1/b'.*2-D"):
        lora.init(0, p, masks.mask_from_paths(p, include=["l1"]))
    with pytest.raises(ValueError, match="selects no leaf"):
        lora.init(0, p, False)


def test_apply_starts_at_the_base_model_and_uses_w_plus_scaled_ba():
    p = make_params()
    x = np.random.default_rng(1).normal(size=(5, 6)).astype(np.float32)
    ad = lora.init(0, p, WEIGHTS(p), rank=2, alpha=4)
    f = lora.apply(model)
    np.testing.assert_allclose(f(p, ad, x), model(p, x), rtol=1e-6)
    rng = np.random.default_rng(2)
    ad = tu.tree_map(lambda z: rng.normal(size=z.shape).astype(z.dtype), ad)
    w1 = p["l1"]["w"] + 2.0 * ad["l1"]["w"].b @ ad["l1"]["w"].a
    w2 = p["l2"]["w"] + 2.0 * ad["l2"]["w"].b @ ad["l2"]["w"].a
    want = model({"l1": {"w": w1, "b": p["l1"]["b"]}, "l2": {"w": w2, "b": p["l2"]["b"]}}, x)
    np.testing.assert_allclose(f(p, ad, x), want, rtol=1e-5)
    np.testing.assert_allclose(model(lora.merge(p, ad), x), want, rtol=1e-5)


def test_apply_never_copies_or_modifies_the_base_tree():
    p = make_params()
    before = tu.tree_map(np.copy, p)
    ad = lora.init(0, p, masks.mask_from_paths(p, include=["l2/w"]), rank=2)
    seen = {}

    def spy(q, x):
        seen.update(q=q)
        return model(q, x)

    lora.apply(spy)(p, ad, np.ones((1, 6), np.float32))
    assert seen["q"]["l1"]["w"] is p["l1"]["w"]             # not adapted: the base array itself
    assert seen["q"]["l2"]["b"] is p["l2"]["b"]
    for a, b in zip(tu.tree_leaves(p), tu.tree_leaves(before)):
        np.testing.assert_array_equal(a, b)


def test_only_adapters_train_under_jit():
    p = make_params()
    rng = np.random.default_rng(3)
    x = rng.normal(size=(32, 6)).astype(np.float32)
    y = rng.normal(size=(32, 3)).astype(np.float32)
    before = tu.tree_map(np.copy, p)
    ad = lora.init(1, p, WEIGHTS(p), rank=2, alpha=2)
    tx = optim.adam(3e-2)
    f = lora.apply(model)

    def loss(adapters, params):
        return fnp.mean(fnp.subtract(f(params, adapters, x), y) ** 2)

    @fg.jit
    def step(adapters, state, params):
        l, g = fg.value_and_grad(loss)(adapters, params)
        u, state = tx.update(g, state, adapters)
        return optim.apply_updates(adapters, u), state, l

    state = tx.init(ad)
    l0 = float(loss(ad, p))
    for _ in range(40):
        ad, state, _ = step(ad, state, p)
    assert float(loss(ad, p)) < 0.8 * l0
    assert np.any(ad["l1"]["w"].b)
    for a, b in zip(tu.tree_leaves(p), tu.tree_leaves(before)):
        np.testing.assert_array_equal(a, b)
    merged = lora.merge(p, ad)
    assert merged["l1"]["w"].dtype == np.float32 and merged["l1"]["b"] is p["l1"]["b"]
    np.testing.assert_allclose(model(merged, x), f(p, ad, x), rtol=1e-4, atol=1e-5)


def test_adapters_for_another_tree_raise():
    p = make_params()
    ad = lora.init(0, p, WEIGHTS(p), rank=2)
    with pytest.raises(ValueError, match="lora.apply"):
        lora.apply(model)({"l1": p["l1"]}, ad, np.ones((1, 6), np.float32))


@pytest.mark.parametrize("kwargs,exc,words", [
    ({"rank": 7}, ValueError, ["rank=7", "min(rows, cols) = 6", "'l1/w'", "(8, 6)"]),
    ({"rank": 0}, ValueError, ["rank must be an int >= 1", "0"]),
    ({"rank": 2.5}, TypeError, ["rank must be an int", "float 2.5"]),
    ({"rank": True}, TypeError, ["rank must be an int", "bool"]),
    ({"rank": 2, "alpha": "16"}, TypeError, ["alpha must be a finite number"]),
    ({"rank": 2, "alpha": float("nan")}, TypeError, ["alpha must be a finite number"]),
])
def test_init_checks_rank_and_alpha(kwargs, exc, words):
    p = make_params()
    with pytest.raises(exc) as info:
        lora.init(0, p, WEIGHTS(p), **kwargs)
    for w in words:
        assert w in str(info.value), f"{w!r} not in {info.value}"
    assert lora.init(0, p, WEIGHTS(p), rank=np.int64(3))["l1"]["w"].a.shape == (3, 6)


def test_init_refuses_integer_weights():
    p = dict(make_params(), emb={"w": np.ones((4, 4), np.int32)})
    with pytest.raises(TypeError, match="'emb/w' has dtype int32; LoRA adapts floating-point"):
        lora.init(0, p, masks.mask_from_paths(p, include=["*/w"]), rank=2)


def test_apply_names_the_path_of_a_mismatched_adapter():
    p = make_params()
    ad = lora.init(0, p, WEIGHTS(p), rank=2)
    swapped = dict(p, l2=dict(p["l2"], w=p["l2"]["w"].T))
    with pytest.raises(ValueError, match=r"lora.merge: at 'l2/w' the adapter factors B \(3, 2\) "
                                         r"@ A \(2, 8\) do not fit a weight of shape \(8, 3\)"):
        lora.merge(swapped, ad)
    with pytest.raises(ValueError, match="lora.merge: the adapters do not match the params' "
                                         "structure: 'l2' is in the adapters but not"):
        lora.merge({"l1": p["l1"]}, ad)
    bad = dict(ad, l1=dict(ad["l1"], w=lora.Adapter(np.ones((2, 6), np.int32),
                                                    np.ones((8, 2), np.float32))))
    with pytest.raises(TypeError, match="'l1/w' adapter factor A is int32"):
        lora.merge(p, bad)
    with pytest.raises(TypeError, match="'l1/w' the adapters hold a ndarray"):
        lora.merge(p, dict(ad, l1=dict(ad["l1"], w=np.ones((8, 6), np.float32))))
