"""Gradient accumulation with optim.MultiSteps, together with masks, mixed precision (half-precision
parameters with float32 master weights, loss scaling) and data parallelism: one allreduce per
accumulated step, and the same parameters as one process training on the whole batch."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap

import ml_dtypes
import numpy as np
import pytest

import funcgrad as fg
import funcgrad.numpy as fnp
from funcgrad import distributed as dist
from funcgrad import masks, models, optim
from funcgrad.mixed_precision import cast_floating
from funcgrad.tree_util import tree_leaves

# bfloat16 master weights and MPI processes
pytestmark = pytest.mark.cpu_only


BF16 = np.dtype(ml_dtypes.bfloat16)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
mpi = pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None
                         or shutil.which("mpiexec") is None,
                         reason="MPI unavailable (pip install -e '.[distributed]')")


class CountingGroup(dist.ProcessGroup):
    """A process group of `size` ranks that all hold the same values: an allreduce-sum is
    x * size. Records every collective."""

    def __init__(self, size):
        self.size, self.rank, self.calls = size, 0, []

    def allreduce(self, x, op="sum"):
        self.calls.append(("allreduce", x.shape))
        return x * self.size if op == "sum" else x

    def allgather(self, x):
        return [x] * self.size

    def bcast(self, x, root=0):
        return x

    def barrier(self):
        pass


def _data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4)).astype(np.float32)
    return x, (x[:, :2] * 1.5 - x[:, 2:]).astype(np.float32)


def _loss(p, x, y):
    return fnp.mean(fnp.square(models.mlp.apply(p, x) - y))


def _params():
    return models.mlp.init(fg.random.key(0), [4, 16, 2])


def test_multisteps_runs_the_inner_update_only_on_the_kth_step():
    """Under jit, the inner optimizer (here with a collective in it) runs once per k steps."""
    group = CountingGroup(4)
    params, (x, y) = _params(), _data()
    tx = optim.MultiSteps(optim.chain(optim.pmean_updates("data"), optim.sgd(0.1)), 3)
    state = tx.init(params)

    @fg.jit
    def local_step(params, state, x, y):       # no allreduce here: the optimizer has it
        g = fg.grad(_loss)(params, x, y)
        u, state = tx.update(g, state, params)
        return optim.apply_updates(params, u), state

    step = dist.data_parallel(local_step, "data", group)
    for i in range(6):
        params, state = step(params, state, x[4 * i:4 * i + 4], y[4 * i:4 * i + 4])
        expected = (i + 1) // 3
        assert len(group.calls) == expected, (i, group.calls)   # one fused allreduce each


WORKER = textwrap.dedent("""
    import sys
    import numpy as np
    import funcgrad as fg, funcgrad.distributed as dist, funcgrad.numpy as fnp
    from funcgrad import models, optim

    out = sys.argv[1]
    dist.init()
    loss = lambda p, x, y: fnp.mean((models.mlp.apply(p, x) - y) ** 2)
    params = models.mlp.init(fg.random.key(0), [4, 16, 2])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 16, 4)).astype(np.float32)   # 6 mini-steps of 16 examples
    y = (x[..., :2] * 1.5 - x[..., 2:]).astype(np.float32)
    if dist.size() == 1:   # the reference: plain SGD, one step per 2 mini-batches (32 examples)
        tx = optim.sgd(0.5)
        state = tx.init(params)
        for i in range(0, 6, 2):
            g = fg.grad(loss)(params, x[i:i + 2].reshape(32, 4), y[i:i + 2].reshape(32, 2))
            u, state = tx.update(g, state, params)
            params = optim.apply_updates(params, u)
    else:                  # each rank accumulates its half of each mini-batch, 2 per update
        tx = optim.MultiSteps(optim.chain(optim.pmean_updates("data"), optim.sgd(0.5)), 2)
        state = tx.init(params)

        def local(p, s, xb, yb):
            u, s = tx.update(fg.grad(loss)(p, xb, yb), s, p)
            return optim.apply_updates(p, u), s

        step = dist.data_parallel(fg.jit(local), "data")
        for i in range(6):
            xb, yb = dist.shard((x[i], y[i]))
            params, state = step(params, state, xb, yb)
        dist.check_identical(params)
    np.savez(f"{out}/rank{dist.rank()}_of{dist.size()}.npz", *fg.tree_util.tree_leaves(params))
""")


@mpi
def test_two_processes_accumulating_match_one_process_on_the_whole_batch(tmp_path):
    """2 ranks x MultiSteps(k=2) with the allreduce inside: the parameters of plain SGD on the
    32 examples of each accumulated step."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
               HYDRA_IFACE="lo", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    one_env = {k: v for k, v in env.items() if k not in dist._LAUNCHER_VARS}
    one = subprocess.run([sys.executable, str(script), str(tmp_path)], env=one_env,
                         capture_output=True, text=True, timeout=120)
    assert one.returncode == 0, one.stderr
    two = subprocess.run(["mpiexec", "-n", "2", "-host", "localhost", sys.executable,
                          str(script), str(tmp_path)], env=env, capture_output=True, text=True,
                         timeout=120)
    assert two.returncode == 0, two.stderr
    with np.load(tmp_path / "rank0_of1.npz") as ref, np.load(tmp_path / "rank0_of2.npz") as r0:
        for k in ref.files:
            np.testing.assert_allclose(r0[k], ref[k], rtol=1e-5, atol=1e-6)


def test_accumulation_with_masks_master_weights_and_loss_scaling():
    """bfloat16 parameters with float32 master weights, the first layer frozen by a mask,
    dynamic loss scaling, 2 mini-steps per update, data parallel over 2 (fake) ranks: the
    master weights follow float32 training on the whole batch."""
    group = CountingGroup(2)
    params32, (x, y) = _params(), _data(16)
    params = cast_floating(params32, BF16)
    trainable = masks.mask_from_paths(params, include=["layers/1/**"])
    inner = optim.MultiSteps(optim.chain(optim.pmean_updates("data"),
                                         optim.dynamic_loss_scale(optim.adam(1e-2),
                                                                  init_scale=2.0 ** 8)), 2)
    tx = optim.masked(optim.master_weights(inner.gradient_transformation()), trainable)
    state = tx.init(params)
    scale = float(optim.loss_scale(state))

    @fg.jit
    def local_step(p, s, xb, yb):
        g = fg.grad(lambda p: _loss(p, xb, yb) * scale, wrt=trainable)(p)
        u, s = tx.update(g, s, p)
        return optim.apply_updates(p, u), s

    step = dist.data_parallel(local_step, "data", group)
    ref = params32
    ref_tx = optim.masked(optim.adam(1e-2), trainable)
    ref_state = ref_tx.init(ref)
    for i in range(4):
        xb, yb = x[4 * i:4 * i + 4], y[4 * i:4 * i + 4]
        params, state = step(params, state, xb, yb)
        if i % 2 == 1:                          # the reference: one step per 8 examples
            xa, ya = x[4 * i - 4:4 * i + 4], y[4 * i - 4:4 * i + 4]
            g = fg.grad(_loss)(cast_floating(ref, BF16), xa, ya)
            u, ref_state = ref_tx.update(cast_floating(g, np.float32), ref_state, ref)
            ref = optim.apply_updates(ref, u)
    assert len(group.calls) == 2                # one allreduce per accumulated step
    assert all(leaf.dtype == BF16 for leaf in tree_leaves(params))
    np.testing.assert_array_equal(params["layers"][0]["w"], params32["layers"][0]["w"]
                                  .astype(BF16))  # frozen
    master = optim.master_params(state, params)
    assert master["layers"][1]["w"].dtype == np.float32
    np.testing.assert_allclose(master["layers"][1]["w"], ref["layers"][1]["w"], rtol=0.02,
                               atol=2e-3)
    np.testing.assert_array_equal(params["layers"][1]["w"],
                                  master["layers"][1]["w"].astype(BF16))


@pytest.mark.parametrize("k", [1, 3])
def test_multisteps_eager_and_jit_agree(k):
    params, (x, y) = _params(), _data()
    tx = optim.MultiSteps(optim.adamw(1e-2), k)

    def run(step):
        p, s = params, tx.init(params)
        for i in range(6):
            p, s = step(p, s, x[4 * i:4 * i + 4], y[4 * i:4 * i + 4])
        return p

    def step(p, s, xb, yb):
        u, s = tx.update(fg.grad(_loss)(p, xb, yb), s, p)
        return optim.apply_updates(p, u), s

    for a, b in zip(tree_leaves(run(step)), tree_leaves(run(fg.jit(step)))):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
