"""Fused optimizer updates: `tx.update` and `optim.apply_updates` run as one compiled program
(every leaf's update in one kernel call on the compiled CPU backend), inside or outside `jit`,
with results bit for bit those of the formulas run one operation at a time (`fg.disable_jit`)."""

from __future__ import annotations

import numpy as np
import pytest

import funcgrad as fg
from funcgrad import masks, optim

pytestmark = pytest.mark.cpu_only

rng = np.random.default_rng(0)
PARAMS = {"w": rng.normal(size=(6, 5)).astype(np.float32),
          "b": rng.normal(size=5).astype(np.float32),
          "blocks": [rng.normal(size=(3, 2, 4)).astype(np.float32),
                     rng.normal(size=(7,)).astype(np.float32)]}
MASK = masks.mask_from_paths(PARAMS, include=["w", "blocks/1"])

OPTIMIZERS = {
    "adam": lambda: optim.adam(1e-2),
    "adamw": lambda: optim.adamw(1e-2, weight_decay=0.1),
    "lion": lambda: optim.lion(1e-3, weight_decay=0.01),
    "sgd_momentum": lambda: optim.sgd(0.1, momentum=0.9),
    "sgd_nesterov": lambda: optim.sgd(0.1, momentum=0.9, nesterov=True),
    "masked_adam": lambda: optim.masked(optim.adam(1e-2), MASK),
    "schedule_adamw": lambda: optim.adamw(optim.cosine_decay_schedule(1e-2, 10)),
}


def grads(k):
    r = np.random.default_rng(k)
    return fg.tree_util.tree_map(lambda p: r.normal(size=p.shape).astype(p.dtype), PARAMS)


def run(tx, steps=3):
    params, state = PARAMS, tx.init(PARAMS)
    for k in range(steps):
        updates, state = tx.update(grads(k), state, params)
        params = optim.apply_updates(params, updates)
    return params, state


def assert_same(a, b):
    la, lb = fg.tree_util.tree_leaves(a), fg.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_fused_update_is_bitwise_the_formulas(name):
    tx = OPTIMIZERS[name]()
    fused = run(tx)
    with fg.disable_jit():     # one NumPy operation at a time: the formulas as written
        eager = run(tx)
    assert_same(fused, eager)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_the_same_inside_jit(name):
    tx = OPTIMIZERS[name]()

    @fg.jit
    def step(params, state, g):
        u, state = tx.update(g, state, params)
        return optim.apply_updates(params, u), state

    params, state = PARAMS, tx.init(PARAMS)
    for k in range(3):
        params, state = step(params, state, grads(k))
    assert_same((params, state), run(tx))


@pytest.mark.parametrize("name", ["adam", "adamw", "lion", "sgd_momentum", "masked_adam"])
def test_every_leaf_is_updated_in_one_kernel_call(name):
    tx = OPTIMIZERS[name]()
    state = tx.init(PARAMS)
    with fg.config.setting("cpu_backend", "llvm"):
        text = tx.update.lower(grads(0), state, PARAMS).as_text()
    calls = [line for line in text.splitlines() if "# compiled kernel" in line]
    assert len(calls) == 1, text


def test_a_whole_training_step_with_equal_shaped_leaves():
    """Gradients computed in the same program, several leaves of one shape: the merged update
    must not write one leaf's result over another leaf's gradient it has yet to read."""
    ps = {f"w{i}": rng.normal(size=(4, 4)).astype(np.float32) for i in range(4)}
    x = rng.normal(size=(3, 4)).astype(np.float32)
    tx = optim.adam(1e-1)

    def loss(p):
        h = x
        for i in range(4):
            h = np.float32(0.5) * fg.numpy.tanh(h @ p[f"w{i}"])
        return fg.numpy.sum(h * h)

    def step(p, s):
        g = fg.grad(loss)(p)
        u, s = tx.update(g, s, p)
        return optim.apply_updates(p, u), s

    jstep = fg.jit(step)
    a = b = (ps, tx.init(ps))
    for _ in range(3):
        a = jstep(*a)
        with fg.disable_jit():
            b = step(*b)
    for x_, y_ in zip(fg.tree_util.tree_leaves(a), fg.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(x_, y_, rtol=1e-5, atol=1e-6)
