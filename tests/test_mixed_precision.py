"""Mixed precision: policies, float32 master weights, dynamic loss scaling (against PyTorch's
GradScaler), and their compositions with masks, LoRA and MultiSteps gradient accumulation."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import funcgrad as fg
import funcgrad.numpy as fnp
from funcgrad import lora, masks, models, optim
from funcgrad.mixed_precision import Policy, cast_floating, get_policy
from funcgrad.tree_util import tree_leaves, tree_map

# bfloat16 has no CuPy dtype; float16 training on the GPU: tests/test_gpu.py
pytestmark = pytest.mark.cpu_only


BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
F32 = np.dtype(np.float32)


def _data(seed=0, n=32):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6)).astype(np.float32)
    y = (x[:, :3] * 2 - x[:, 3:]).astype(np.float32)
    return x, y


def _params(dtype=np.float32):
    return cast_floating(models.mlp.init(fg.random.key(0), [6, 32, 3]), dtype)


def _loss(apply, params, x, y):
    return fnp.mean(fnp.square(apply(params, x) - y))


# ---------------------------------------------------------------------------------------------
# Policies

def test_policy_dtypes_and_names():
    p = Policy("float32", "bf16", np.float32)
    assert (p.param_dtype, p.compute_dtype, p.output_dtype) == (F32, BF16, F32)
    assert str(p) == "params=float32,compute=bfloat16,output=float32"
    assert get_policy(str(p)) == p
    assert get_policy("p=f32,c=half,o=f32") == Policy(F32, F16, F32)
    assert get_policy("bfloat16") == Policy(BF16, BF16, BF16)
    assert p.with_output_dtype("bf16").output_dtype == BF16
    with pytest.raises(ValueError, match="not a float dtype name"):
        Policy("float32", "bfloat17", "float32")
    with pytest.raises(TypeError, match="must be a float dtype"):
        Policy(np.int32, F32, F32)
    with pytest.raises(ValueError, match="cannot read"):
        get_policy("params=f32,kompute=bf16")


def test_casts_touch_floating_leaves_only():
    tree = {"w": np.ones(2, F32), "ids": np.arange(3), "flag": True, "s": 2.0}
    out = Policy(F32, BF16, F32).cast_to_compute(tree)
    assert out["w"].dtype == BF16 and out["ids"].dtype == tree["ids"].dtype
    assert out["flag"] is True and out["s"] == 2.0
    assert Policy().cast_to_compute(tree)["w"] is tree["w"]  # no copy when nothing changes


@pytest.mark.parametrize("compute", [BF16, F16], ids=str)
def test_policy_apply_computes_in_half_and_differentiates_in_param_dtype(compute):
    policy = Policy(F32, compute, F32)
    params, (x, y) = _params(), _data()
    seen = []

    def apply(p, x):
        seen.append((p["layers"][0]["w"].dtype, x.dtype))
        return models.mlp.apply(p, x)

    wrapped = policy.apply(apply)
    out = wrapped(params, x)
    assert seen[-1] == (compute, compute) and out.dtype == F32
    jaxpr = str(fg.make_jaxpr(lambda p: _loss(wrapped, p, x, y))(params))
    assert f"{'bf16' if compute == BF16 else 'f16'}[32,32]" in jaxpr
    g = fg.grad(lambda p: _loss(wrapped, p, x, y))(params)
    g32 = fg.grad(lambda p: _loss(models.mlp.apply, p, x, y))(params)
    for a, b in zip(tree_leaves(g), tree_leaves(g32)):
        assert a.dtype == F32
        np.testing.assert_allclose(a, b, rtol=0.1, atol=0.05 * np.abs(b).max())
    jg = fg.jit(fg.grad(lambda p: _loss(wrapped, p, x, y)))(params)
    for a, b in zip(tree_leaves(jg), tree_leaves(g)):
        np.testing.assert_allclose(a, b, rtol=0.05, atol=1e-3)


def test_usual_policy_trains_like_float32():
    """float32 params, bfloat16 compute, float32 loss: 60 Adam steps land within a few percent
    of float32 training."""
    x, y = _data()
    losses = {}
    for name, policy in (("f32", Policy()), ("mixed", get_policy("p=f32,c=bf16,o=f32"))):
        params = _params()
        tx = optim.adam(1e-2)
        state = tx.init(params)
        loss = lambda p, policy=policy: _loss(policy.apply(models.mlp.apply), p, x, y)  # noqa: E731
        step = fg.jit(fg.value_and_grad(loss))
        for _ in range(60):
            value, g = step(params)
            u, state = tx.update(g, state, params)
            params = optim.apply_updates(params, u)
        losses[name] = float(loss(params))
    assert losses["mixed"] < 0.2 * float(_loss(models.mlp.apply, _params(), x, y))
    assert abs(losses["mixed"] - losses["f32"]) <= 0.05 * losses["f32"] + 2e-3, losses


def test_policy_with_lora_and_a_mask():
    """policy.apply(lora.apply(f)): the adapters are an argument, so they compute in bfloat16
    too; their gradients come back in float32, and a mask freezes one adapter."""
    policy = get_policy("p=f32,c=bf16,o=f32")
    params, (x, y) = _params(), _data()
    adapters = lora.init(0, params, masks.mask_from_paths(params, include=["layers/*/w"]),
                         rank=2)
    adapters = tree_map(lambda a: a, adapters)
    adapters["layers"][0]["w"].b = np.full_like(adapters["layers"][0]["w"].b, 0.1)
    f = policy.apply(lora.apply(models.mlp.apply))
    mask = masks.mask_from_paths(adapters, include=["layers/1/**"])
    g = fg.grad(lambda ad: fnp.mean(fnp.square(f(params, ad, x) - y)), wrt=mask)(adapters)
    first, second = g["layers"][0]["w"], g["layers"][1]["w"]
    assert first.a.dtype == F32 and second.a.dtype == F32
    assert not np.any(first.a) and not np.any(first.b)
    assert np.any(second.b)


# ---------------------------------------------------------------------------------------------
# Master weights

def _sgd_steps(tx, params, grads, n):
    state = tx.init(params)
    for _ in range(n):
        u, state = tx.update(grads, state, params)
        params = optim.apply_updates(params, u)
    return params, state


def test_master_weights_keep_updates_that_bfloat16_rounding_loses():
    """1 + 100 x 1e-3 in bfloat16 stays 1 (each update is below half an ulp); the float32
    master copy reaches 1.1, and the stored parameter is that rounded."""
    params = {"w": np.ones(4, BF16), "b": np.zeros(2, F32)}
    grads = {"w": np.full(4, -1.0, BF16), "b": np.full(2, -1.0, F32)}
    plain, _ = _sgd_steps(optim.sgd(1e-3), params, grads, 100)
    assert np.all(plain["w"] == 1)
    tx = optim.master_weights(optim.sgd(1e-3))
    new, state = _sgd_steps(tx, params, grads, 100)
    master = optim.master_params(state, new)
    assert master["w"].dtype == F32 and master["b"] is new["b"]
    np.testing.assert_allclose(master["w"], 1.1, rtol=1e-5)
    assert new["w"].dtype == BF16
    np.testing.assert_array_equal(new["w"], master["w"].astype(BF16))
    np.testing.assert_allclose(new["b"], 0.1, rtol=1e-5)
    assert state.master["b"] is None  # float32 leaves get no copy


def test_master_weights_adam_state_is_float32_and_jit_agrees():
    params = {"w": (np.arange(6).reshape(2, 3) / 7).astype(BF16)}
    grads = {"w": np.full((2, 3), 0.25, BF16)}
    tx = optim.master_weights(optim.adam(1e-2))
    state = tx.init(params)
    adam_state = state.inner_state[0]
    assert adam_state.mu["w"].dtype == F32
    eager = optim.apply_updates(params, tx.update(grads, state, params)[0])

    @fg.jit
    def step(params, state):
        u, state = tx.update(grads, state, params)
        return optim.apply_updates(params, u), state

    jitted, _ = step(params, state)
    np.testing.assert_array_equal(jitted["w"].view(np.uint16), eager["w"].view(np.uint16))
    with pytest.raises(ValueError, match="needs params"):
        tx.update(grads, state)


def test_master_weights_with_mask_and_multisteps():
    """masked(master_weights(MultiSteps(sgd, 2))): frozen leaves get no master copy and never
    move; float32 gradients accumulate over two mini-steps before one update."""
    params = {"frozen": np.ones(3, BF16), "train": np.ones(3, BF16)}
    mask = {"frozen": False, "train": True}
    inner = optim.MultiSteps(optim.sgd(1.0), 2).gradient_transformation()
    tx = optim.masked(optim.master_weights(inner), mask)
    state = tx.init(params)
    mw = state.inner_state
    assert tree_leaves(mw.master) == [mw.master["train"]]
    assert mw.inner_state.acc_grads["train"].dtype == F32
    for g, expect in ((0.25, 1.0), (0.75, 0.5)):
        grads = {"frozen": np.full(3, g, BF16), "train": np.full(3, g, BF16)}
        u, state = tx.update(grads, state, params)
        params = optim.apply_updates(params, u)
        np.testing.assert_array_equal(params["train"], np.full(3, expect, BF16))
        np.testing.assert_array_equal(params["frozen"], np.ones(3, BF16))


# ---------------------------------------------------------------------------------------------
# Dynamic loss scaling, against torch.amp.GradScaler

def _torch_scaler_run(grad_seq, kw):
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.ones(3, dtype=torch.float32))
    opt = torch.optim.SGD([p], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", **kw)
    scales, values = [], []
    for g in grad_seq:
        opt.zero_grad()
        loss = (p * torch.tensor(np.asarray(g, np.float32))).sum()  # gradient g
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        scales.append(float(scaler.get_scale()))
        values.append(p.detach().numpy().copy())
    return scales, values


def test_dynamic_loss_scale_matches_torch_grad_scaler():
    kw = dict(init_scale=2.0 ** 10, growth_factor=2.0, backoff_factor=0.5, growth_interval=3)
    rng = np.random.default_rng(0)
    seq = [rng.standard_normal(3) for _ in range(12)]
    seq[4] = np.array([np.inf, 0, 0])
    seq[5] = np.array([0, np.nan, 1])
    seq[9] = np.array([1e36, 1e36, 1e36])  # finite, but inf once scaled in float32
    want_scales, want_values = _torch_scaler_run(seq, kw)

    tx = optim.dynamic_loss_scale(optim.sgd(0.1), **kw)
    params = np.ones(3, np.float32)
    state = tx.init(params)
    step = fg.jit(lambda g, s, p: tx.update(g, s, p))
    for g, ws, wv in zip(seq, want_scales, want_values):
        scaled = (np.asarray(g, np.float32) * np.float32(optim.loss_scale(state)))
        u, state = step(scaled.astype(np.float32), state, params)
        params = optim.apply_updates(params, u)
        assert float(optim.loss_scale(state)) == ws
        np.testing.assert_allclose(params, wv, rtol=1e-6)
    assert not bool(state.found_inf)


def test_float16_training_needs_the_scale():
    """A gradient of 1e-8 (two factors of 1e-4 in the backward pass) flushes to zero in
    float16; scaled by 2^14 it survives, and the float32 master update recovers it."""
    w = np.full(4, 1.0, F16)

    def loss(w, scale):
        y = (w * np.float16(1e-4)) * np.float16(1e-4)
        return fnp.sum(y).astype(np.float32) * scale

    assert not np.any(fg.grad(loss)(w, np.float32(1.0)))
    tx = optim.master_weights(optim.dynamic_loss_scale(optim.sgd(1e4), init_scale=2.0 ** 14))
    state = tx.init(w)
    g = fg.grad(loss)(w, optim.loss_scale(state))
    assert np.all(g > 0)
    u, state = tx.update(g, state, w)
    master = optim.master_params(state, w)
    np.testing.assert_allclose(1 - master, 1e-4, rtol=0.05)  # lr 1e4 x 1e-8


def test_loss_scale_with_multisteps_skips_the_whole_accumulated_step():
    tx = optim.MultiSteps(optim.dynamic_loss_scale(optim.sgd(1.0), init_scale=8.0), 2)
    params = np.zeros(2, np.float32)
    state = tx.init(params)
    assert float(optim.loss_scale(state)) == 8.0
    seq = [np.array([8.0, 8.0]), np.array([np.inf, 8.0]),   # overflow: the step is skipped
           np.array([4.0, 4.0]), np.array([4.0, 4.0])]      # scale now 4: one unit per step
    history = []
    for g in seq:
        u, state = tx.update(g.astype(np.float32), state, params)
        params = optim.apply_updates(params, u)
        history.append((params.copy(), float(optim.loss_scale(state))))
    assert history[1][1] == 4.0 and np.all(history[1][0] == 0)
    np.testing.assert_array_equal(history[3][0], [-1.0, -1.0])
    assert history[3][1] == 4.0


def test_dynamic_loss_scale_arguments_are_checked():
    with pytest.raises(ValueError, match="backoff_factor"):
        optim.dynamic_loss_scale(optim.sgd(1.0), backoff_factor=2.0)
    with pytest.raises(ValueError, match="growth_interval"):
        optim.dynamic_loss_scale(optim.sgd(1.0), growth_interval=0)
    with pytest.raises(ValueError, match="no dynamic_loss_scale"):
        optim.loss_scale(optim.adam(1.0).init(np.ones(2)))
    assert bool(optim.all_finite({"a": np.ones(2), "b": None}))
    assert not bool(optim.all_finite([np.ones(2), np.array([np.nan])]))
