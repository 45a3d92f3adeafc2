"""fg.distributed: process axes for the named-axis collectives, and data-parallel training.

The in-process tests run everywhere (one process, or a fake group standing in for N ranks). The
tests marked `mpi` launch `mpiexec -n 2` on loopback and need mpi4py and an MPI runtime
(`pip install -e ".[distributed]"`); they are skipped with the reason when those are missing.
"""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import funcgrad as fg
import funcgrad.distributed as dist
import funcgrad.numpy as fnp
from funcgrad import lax, models, optim

ROOT = Path(__file__).resolve().parent.parent


class FakeGroup(dist.ProcessGroup):
    """`size` ranks that all hold the same values as this one; records every collective."""

    def __init__(self, size, rank=0):
        self.size, self.rank, self.calls = size, rank, []

    def allreduce(self, x, op="sum"):
        self.calls.append(("allreduce", op, np.shape(x)))
        return x * x.dtype.type(self.size) if op == "sum" else x

    def allgather(self, x):
        self.calls.append(("allgather", np.shape(x)))
        return [x] * self.size

    def bcast(self, x, root=0):
        return x

    def barrier(self):
        pass


def test_one_process_collectives_are_identities():
    x = np.arange(3.0)
    f = dist.data_parallel(lambda x: (lax.psum(x, "data"), lax.pmean(x, "data"),
                                      lax.pmax(x, "data"), lax.all_gather(x, "data"),
                                      lax.axis_index("data")))
    s, m, mx, g, i = f(x)
    np.testing.assert_array_equal(s, x)
    np.testing.assert_array_equal(m, x)
    np.testing.assert_array_equal(mx, x)
    np.testing.assert_array_equal(g, x[None])
    assert int(i) == 0 and dist.size() == 1 and dist.rank() == 0


def test_collectives_call_the_process_group_eagerly_and_under_jit():
    group = FakeGroup(4, rank=2)
    x = np.arange(3, dtype=np.float32)

    def f(x):
        return lax.psum(x, "data"), lax.pmean(x, "data"), lax.all_gather(x, "data", axis=1)[None]

    for fn in (f, fg.jit(f)):
        group.calls.clear()
        s, m, g = dist.data_parallel(fn, "data", group)(x)
        np.testing.assert_allclose(s, 4 * x)
        np.testing.assert_allclose(m, x)
        assert g.shape == (1, 3, 4)
        assert [c[0] for c in group.calls] == ["allreduce", "allreduce", "allgather"]
    idx = dist.data_parallel(lambda: lax.axis_index("data"), "data", group)()
    assert int(idx) == 2


def test_jit_keeps_collectives_in_the_program():
    group = FakeGroup(2)
    const = np.ones(3, np.float32)
    f = fg.jit(lambda x: lax.psum(x * 0 + 1, "data") + lax.pmax(x, "data"))
    step = dist.data_parallel(f, "data", group)
    for _ in range(3):
        np.testing.assert_allclose(step(np.zeros(3, np.float32)), 2 * const)
    assert [c[1] for c in group.calls] == ["sum", "max"] * 3  # every call, in program order
    jaxpr = fg.make_jaxpr(dist.data_parallel(lambda x: lax.psum(x, "data"), "data", group))(const)
    assert "psum[axis_name='data']" in str(jaxpr)


def test_grad_through_a_process_collective():
    group = FakeGroup(3)
    g = dist.data_parallel(fg.grad(lambda w: fnp.sum(lax.psum(w * w, "data"))), "data", group)
    np.testing.assert_allclose(g(np.array([1.0, 2.0])), 3 * 2 * np.array([1.0, 2.0]))
    # psum's transpose is psum (as in JAX): each of the 3 ranks' cotangent 1 is summed


def test_inner_vmap_axis_of_the_same_name_shadows_the_process_axis():
    group = FakeGroup(5)
    f = dist.data_parallel(fg.vmap(lambda x: lax.psum(x, "data"), axis_name="data"), "data", group)
    np.testing.assert_allclose(f(np.arange(3.0)), np.full(3, 3.0))
    assert group.calls == []
    other = dist.data_parallel(fg.vmap(lambda x: lax.psum(x, "data"), axis_name="i"), "data", group)
    np.testing.assert_allclose(other(np.arange(3.0)), 5 * np.arange(3.0))
    assert group.calls == [("allreduce", "sum", (3,))]  # the whole vmapped batch, in one call


def test_unbound_axis_error_names_data_parallel():
    with pytest.raises(NameError, match="unbound axis name 'data'.*data_parallel"):
        lax.psum(np.ones(2), "data")


def test_fused_pmean_is_one_collective_and_matches_per_leaf_pmean():
    tree = {"w": np.arange(24.0).reshape(4, 2, 3), "b": np.arange(4.0).reshape(4, 1),
            "n": np.arange(4, dtype=np.float32)}
    fused = fg.vmap(lambda t: dist.fused_pmean(t, "r"), axis_name="r")(tree)
    each = fg.vmap(lambda t: fg.tree_util.tree_map(lambda v: lax.pmean(v, "r"), t),
                   axis_name="r")(tree)
    for k in tree:
        np.testing.assert_allclose(fused[k], each[k])
        assert fused[k].dtype == tree[k].dtype
    group = FakeGroup(2)
    leaves = {"w": np.ones((2, 3)), "b": np.ones(3), "c": np.ones(())}
    program = fg.make_jaxpr(dist.data_parallel(dist.fused_pmean, "data", group))(leaves)
    assert str(program).count("psum") == 1  # one buffer, one allreduce


def test_shard_broadcast_and_checksum():
    group = FakeGroup(2, rank=1)
    x = np.arange(8).reshape(4, 2)
    np.testing.assert_array_equal(dist.shard({"x": x}, group)["x"], x[2:])
    with pytest.raises(ValueError, match="does not split evenly over 2"):
        dist.shard(np.arange(5), group)
    tree = {"a": np.ones(3, np.float32)}
    assert dist.broadcast(tree) is tree
    assert dist.checksum(tree) == dist.checksum({"a": np.ones(3, np.float32)})
    assert dist.checksum(tree) != dist.checksum({"a": np.full(3, 2, np.float32)})
    dist.check_identical(tree)


def test_train_step_on_one_process_is_plain_training():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 1)).astype(np.float32)
    x = rng.normal(size=(8, 3)).astype(np.float32)
    y = x @ np.ones((3, 1), np.float32)
    loss = lambda w, x, y: fnp.mean((x @ w - y) ** 2)
    tx = optim.sgd(0.1)
    step = dist.make_train_step(loss, tx, debug=True)
    p, s = w, tx.init(w)
    for _ in range(3):
        p, s, val = step(p, s, x, y)
    ref = fnp.asarray(w)  # where the step computes (the device when the GPU is the default)
    for _ in range(3):
        ref = ref - 0.1 * fg.grad(loss)(ref, x, y)
    np.testing.assert_allclose(p, ref, rtol=1e-6)


def test_psum_scatter_over_a_process_axis_is_one_reduce_scatter():
    class Group(FakeGroup):
        def reduce_scatter(self, x):
            self.calls.append(("reduce_scatter", np.shape(x)))
            n = x.shape[0] // self.size
            return (x * self.size)[self.rank * n:(self.rank + 1) * n]

    group = Group(3, rank=1)
    x = np.arange(12.0).reshape(6, 2)
    for fn in (lambda x: lax.psum_scatter(x, "data", tiled=True),
               fg.jit(lambda x: lax.psum_scatter(x, "data", tiled=True))):
        group.calls.clear()
        out = dist.data_parallel(fn, "data", group)(x)
        np.testing.assert_allclose(out, 3 * x[2:4])  # block 1 of the sum of 3 equal ranks
        assert group.calls == [("reduce_scatter", (12,))]
    cols = dist.data_parallel(lambda x: lax.psum_scatter(x, "data", scatter_dimension=1),
                              "data", group)(np.arange(6.0).reshape(2, 3))
    np.testing.assert_allclose(cols, 3 * np.array([1.0, 4.0]))
    with pytest.raises(ValueError, match="must be a multiple of the axis size 3"):
        dist.data_parallel(lambda x: lax.psum_scatter(x, "data", tiled=True), "data",
                           group)(np.ones(4))


# ---------------------------------------------------------------------------------------------
# ZeRO sharding: the layout, the sharded step on one process, checkpoints with thread "ranks"

def _mixed_params():
    rng = np.random.default_rng(0)
    return {"emb": rng.normal(size=(7, 5)).astype(np.float32), "temp": np.float32(3.0),
            "stack": rng.normal(size=(3, 300, 300)), "bias": rng.normal(size=(11,)).astype(
                np.float32), "frozen": np.ones((4, 2), np.float32),
            "wide": rng.normal(size=(1, 70000)).astype(np.float32)}


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7])
def test_layout_cuts_every_dtype_evenly_and_round_trips(n):
    params = _mixed_params()
    leaves, _ = fg.tree_util.tree_flatten(params)
    paths = fg.masks.paths(params)
    trainable = [p != "frozen" for p in paths]
    lays = [dist.sharding.build_layout(params, trainable, "gradients", r, n) for r in range(n)]
    lay = lays[0]
    assert lay.axes[paths.index("stack")] == 1  # (3, 300, 300): cut along 300 blocks of 900
    assert lay.axes[paths.index("wide")] == 1   # one row of 70000: cut along its columns
    assert not lay.trainable(paths.index("frozen"))
    for group in lay.groups:
        dtype, idx, length = group
        buf = np.asarray(lay.pack_all(group, leaves))
        assert buf.shape == (n * length,) and buf.dtype == dtype
        blocks = []
        for r, lr in enumerate(lays):
            frags = lr.fragments(leaves)
            for i, x in lr.cut_mine(group, buf[r * length:(r + 1) * length]).items():
                np.testing.assert_array_equal(x, frags[i])
                assert x.ndim == max(np.ndim(leaves[i]), 1)  # slices keep the leaf's rank
            padded = np.asarray(lr.pack_mine(group, frags))
            assert padded.shape == (length,)
            blocks.append(np.asarray(lr.pack_mine(group, frags, pad=False)))
        flat = np.concatenate(blocks)  # what the allgatherv delivers
        for i, x in lay.unpack_flat(group, flat).items():
            assert np.shape(x) == np.shape(leaves[i])
            np.testing.assert_array_equal(x, leaves[i])
            if lay.axes[i] == 0:  # cut along its rows: a view of the gathered buffer
                assert np.shares_memory(x, flat)
        sizes = [sum(lr.fragment_size(i) for i in idx) for lr in lays]
        slab = max(lay.slab(i) for i in idx)
        assert max(sizes) - min(sizes) <= 2 * slab  # each cut is off by at most half a slab
    for lr in lays:  # frozen leaves: empty slices on every rank
        assert lr.fragments(leaves)[paths.index("frozen")].shape == (0, 2)


def _loss(p, x, y):
    q = {k: v for k, v in p.items() if k != "scale"}
    return fnp.mean((models.mlp.apply(q, x) * p["scale"] - y) ** 2)


def _setup():
    params = models.mlp.init(fg.random.key(0), [3, 8, 1])
    params["scale"] = np.float32(1.5)
    rng = np.random.default_rng(1)
    batches = []
    for _ in range(3):
        x = rng.normal(size=(8, 3)).astype(np.float32)
        batches.append((x, np.sin(x.sum(1, keepdims=True))))
    return params, batches


OPTIMIZERS = {
    "sgd": lambda: optim.sgd(0.05, momentum=0.9, nesterov=True),
    "adam": lambda: optim.adam(1e-2),
    "adamw": lambda: optim.adamw(1e-2, weight_decay=0.1),
    "rmsprop": lambda: optim.rmsprop(1e-2, centered=True, momentum=0.5),
    "adagrad": lambda: optim.adagrad(0.1),
    "lion": lambda: optim.lion(1e-3),
    "clip": lambda: optim.chain(optim.clip_by_global_norm(0.05), optim.adam(1e-2)),
    "schedule": lambda: optim.adam(optim.warmup_cosine_decay_schedule(0.0, 1e-2, 2, 10)),
    "masked": lambda: optim.masked(optim.adam(1e-2), optim.default_decay_mask),
    "multi_transform": lambda: optim.multi_transform(
        {"a": optim.adam(1e-2), "b": optim.sgd(0.1)},
        lambda p: fg.tree_util.tree_map(lambda x: "a" if np.ndim(x) >= 2 else "b", p)),
    "multisteps": lambda: optim.MultiSteps(optim.adam(1e-2), 2),
    "lamb": lambda: optim.lamb(1e-2, weight_decay=0.1),
    "adafactor": lambda: optim.adafactor(1e-2, momentum=0.9, weight_decay_rate=0.01),
    "adafactor_factored": lambda: optim.adafactor(1e-2, min_dim_size_to_factor=3, momentum=0.9,
                                                  weight_decay_rate=0.01),
    "inject_hyperparams": lambda: optim.inject_hyperparams(optim.adam)(
        learning_rate=optim.linear_schedule(1e-2, 1e-3, 5)),
    "schedule_free": lambda: optim.contrib.schedule_free_adamw(1e-2),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("shard", ["optimizer", "gradients"])
def test_sharded_step_on_one_process_is_the_replicated_step(name, shard):
    params, batches = _setup()
    mask = {**fg.tree_util.tree_map(lambda _: True, params), "scale": False}
    for m in (None, mask):
        ref = dist.make_train_step(_loss, OPTIMIZERS[name](), mask=m)
        step = dist.make_train_step(_loss, OPTIMIZERS[name](), shard=shard, mask=m)
        p, s, rp, rs = params, step.init(params), params, ref.init(params)
        assert isinstance(s, dist.ShardedState) and s.layout.size == 1
        for x, y in batches:
            p, s, loss = step(p, s, x, y)
            rp, rs, rloss = ref(rp, rs, x, y)
        np.testing.assert_allclose(loss, rloss, rtol=1e-6)
        for a, b in zip(fg.tree_util.tree_leaves(p), fg.tree_util.tree_leaves(rp)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
        if m is not None:
            assert float(p["scale"]) == 1.5  # frozen: never moves, no optimizer state
            assert s.inner is not None


def test_each_sharded_step_makes_one_reduction_and_one_gather_per_dtype():
    class Recorder(dist.LocalGroup):
        def __init__(self):
            self.calls = []

        def allreduce(self, x, op="sum"):
            self.calls.append(("allreduce", np.shape(x)))
            return x

        def reduce_scatter(self, x):
            self.calls.append(("reduce_scatter", np.shape(x)))
            return x

        def allgatherv(self, x, counts):
            self.calls.append(("allgatherv", np.shape(x)))
            return x

    params, batches = _setup()
    params["half"] = np.ones((3, 2), np.float16)  # a second dtype: a second buffer
    n32 = sum(x.size for x in fg.tree_util.tree_leaves(params) if x.dtype == np.float32)
    loss = lambda p, x, y: _loss({k: v for k, v in p.items() if k != "half"}, x, y) + fnp.sum(
        p["half"] ** 2).astype(np.float32)
    for shard, reduce in (("gradients", "reduce_scatter"), ("optimizer", "allreduce")):
        group = Recorder()
        step = dist.make_train_step(loss, optim.MultiSteps(optim.adam(1e-2), 2), shard=shard,
                                    group=group)
        p, s = params, step.init(params)
        for x, y in batches:
            group.calls.clear()
            p, s, _ = step(p, s, x, y)
            kinds = [c[0] for c in group.calls]
            assert kinds.count(reduce) == 2 + (reduce == "allreduce")  # + the loss's pmean
            assert kinds.count("allgatherv") == 2
            assert (reduce, (n32,)) in group.calls and (reduce, (6,)) in group.calls


def test_state_classification_and_sharded_step_errors():
    params, (batch, *_) = _setup()
    tx = optim.adam(1e-2)
    step = dist.make_train_step(_loss, tx, shard="gradients")
    state = step.init(params)
    names = [p for p in fg.masks.paths(state.inner)]
    owners = dict(zip(names, state.layout.state_params))
    assert owners["0/count"] == -1
    assert owners["0/mu/layers/0/w"] == fg.masks.paths(params).index("layers/0/w")
    with pytest.raises(TypeError, match="opt_state must come from step.init"):
        step(params, tx.init(params), *batch)
    with pytest.raises(ValueError, match="shard='optimizer'.*made by a step with "
                                         "shard='gradients'"):
        dist.make_train_step(_loss, tx, shard="optimizer")(params, state, *batch)
    other = dict(params, scale=np.ones(2, np.float32))
    with pytest.raises(ValueError, match="'scale' is float32\\[2\\]"):
        step(other, state, *batch)
    with pytest.raises(ValueError, match="shard must be None, 'optimizer' or 'gradients'"):
        dist.make_train_step(_loss, tx, shard="params")
    two = dist.make_train_step(_loss, tx, shard="optimizer", group=FakeGroup(2, rank=1))
    with pytest.raises(ValueError, match="rank 1 of 2, but this is rank 0 of 1.*reshards"):
        dist.make_train_step(_loss, tx, shard="optimizer")(params, two.init(params), *batch)

    def flat_init(p):  # state that is neither per element of a leaf nor replicated
        return fnp.concatenate([fnp.ravel(x) for x in fg.tree_util.tree_leaves(p)])

    odd = optim.GradientTransformation(flat_init, lambda u, s, p=None: (u, s))
    with pytest.raises(ValueError, match="neither a slice of one parameter.*shard=None"):
        dist.make_train_step(_loss, odd, shard="optimizer").init(params)


def test_factored_moments_are_sliced_along_the_cut_or_held_by_every_rank():
    # (whole shape, split axis): Adafactor's row means reduce over the largest axis d0, the
    # column means over the second largest d1. Reduced over the cut axis, a statistic is the
    # same on every rank; else it is a slice, cut along its own axis that the cut becomes.
    params = {"down": np.ones((12, 5), np.float32),        # cut along d0 (axis 0)
              "up": np.ones((5, 12), np.float32),          # cut along d1 (axis 0)
              "long": np.ones((2, 70000), np.float32),     # cut along d0 (axis 1)
              "deep": np.ones((3, 6, 5), np.float32),      # cut along neither (axis 0)
              "vec": np.ones((12,), np.float32)}           # not factored
    tx = optim.adafactor(1e-2, min_dim_size_to_factor=2)
    step = dist.make_train_step(_loss, tx, shard="gradients", group=FakeGroup(2, rank=1))
    state = step.init(params)
    lay, paths = state.layout, fg.masks.paths(params)
    leaves = dict(zip(fg.masks.paths(state.inner), fg.tree_util.tree_leaves(state.inner)))
    got = {p: (o, a) for p, o, a in zip(leaves, lay.state_params, lay.state_axes)}
    mine = {p: lay.fragment_shape(i) for i, p in enumerate(paths)}
    sliced = lambda p, axis: (paths.index(p), axis)  # noqa: E731
    expect = {"down": ((-1, -1), sliced("down", 0)), "up": (sliced("up", 0), (-1, -1)),
              "long": ((-1, -1), sliced("long", 0)),
              "deep": (sliced("deep", 0), sliced("deep", 0))}
    for p, (row, col) in expect.items():
        assert (got[f"0/v_row/{p}"], got[f"0/v_col/{p}"]) == (row, col), p
        assert got[f"0/v/{p}"] == (-1, -1) and leaves[f"0/v/{p}"].shape == (1,)
    assert leaves["0/v_row/down"].shape == (5,) and leaves["0/v_col/down"].shape == mine["down"][:1]
    assert leaves["0/v_row/up"].shape == mine["up"][:1] and leaves["0/v_col/up"].shape == (12,)
    assert leaves["0/v_row/long"].shape == (2,)
    assert leaves["0/v_col/long"].shape == mine["long"][1:] != (70000,)
    assert got["0/v/vec"] == sliced("vec", 0)

    # A transformation that replaces the params it hands on hides the whole leaves: refused.
    copying = optim.GradientTransformation(
        lambda p: tx.init(fg.tree_util.tree_map(lambda x: x + 0, p)),
        lambda u, s, p=None: tx.update(u, s, p))
    with pytest.raises(ValueError, match="not one of the parameter slices.*scale_by_factored"):
        dist.make_train_step(_loss, copying, shard="gradients").init(params)
    assert optim.whole_shape(params["up"]) == ((5, 12), None)  # outside a sharded step


def test_master_weights_are_the_optimizer_state_of_low_precision_params():
    params, batches = _setup()
    low = fg.tree_util.tree_map(lambda x: np.asarray(x, np.float16), params)
    step = dist.make_train_step(_loss, optim.adam(1e-2), shard="gradients")
    s = step.init(low, master_dtype=np.float32)
    assert all(x.dtype == np.float32 for x in fg.tree_util.tree_leaves(s.master))
    assert s.inner[0].mu["layers"][0]["w"].dtype == np.float32
    p = low
    for x, y in batches:
        p, s, _ = step(p, s, x.astype(np.float16), y.astype(np.float16))
    for a, m in zip(fg.tree_util.tree_leaves(p), fg.tree_util.tree_leaves(s.master)):
        assert a.dtype == np.float16
        np.testing.assert_array_equal(a, np.asarray(m, np.float16).reshape(np.shape(a)))
    report = step.memory_report(p, s)[0]
    assert report["master"] == 2 * report["params"]  # float32 copies of float16 params


def test_memory_report_counts_what_each_mode_keeps():
    params, _ = _setup()
    n_bytes = sum(x.nbytes for x in fg.tree_util.tree_leaves(params))
    tx = optim.adam(1e-2)
    rows = {}
    for shard in (None, "optimizer", "gradients"):
        step = dist.make_train_step(_loss, tx, shard=shard)
        report = step.memory_report(params, step.init(params))
        rows[shard] = report[0]
        assert report.mode == shard and f"shard={shard!r}" in str(report)
    for row in rows.values():  # one rank: nothing to share
        assert row["params"] == row["gradients"] == n_bytes
        assert row["optimizer"] == 2 * n_bytes + 4  # mu, nu and the int32 count
    # On 4 ranks, rank 1 keeps a quarter of the state (and of the gradient, with "gradients").
    for shard in ("optimizer", "gradients"):
        step = dist.make_train_step(_loss, tx, shard=shard, group=FakeGroup(4, rank=1))
        row = dist.memory_report(params, step.init(params), group=dist.LocalGroup())[0]
        assert abs(row["optimizer"] - (2 * n_bytes / 4 + 4)) <= 2 * 4 * 8  # within a row
        if shard == "optimizer":
            assert row["gradients"] == n_bytes
        else:  # the block received from the reduce-scatter: the largest slice
            assert abs(row["gradients"] - n_bytes / 4) <= 8 * 4


class ThreadGroup(dist.ProcessGroup):
    """`size` ranks as threads of this process (for checkpoints: no named axes involved)."""

    def __init__(self, shared, rank):
        self.shared, self.rank, self.size = shared, rank, shared["size"]

    def _exchange(self, x):
        self.shared["slots"][self.rank] = x
        self.shared["barrier"].wait()
        out = list(self.shared["slots"])
        self.shared["barrier"].wait()
        return out

    def allgather(self, x):
        return self._exchange(np.asarray(x))

    def bcast(self, x, root=0):
        return self._exchange(x)[root]

    def barrier(self):
        self._exchange(None)

    def allreduce(self, x, op="sum"):
        return sum(self._exchange(x))


def _on_ranks(n, fn):
    """fn(group) on n thread ranks; the results in rank order (an error in any rank raises)."""
    import threading
    shared = {"size": n, "slots": [None] * n, "barrier": threading.Barrier(n, timeout=60)}
    out, errors = [None] * n, []

    def run(r):
        try:
            out[r] = fn(ThreadGroup(shared, r))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
            shared["barrier"].abort()

    threads = [threading.Thread(target=run, args=(r,)) for r in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return out


def _cut(lay, owner, axis, whole):
    """This rank's slice of a whole state leaf of parameter `owner`, cut along its `axis`."""
    lo, hi = lay.bounds[owner][lay.rank], lay.bounds[owner][lay.rank + 1]
    return whole[(slice(None),) * axis + (slice(lo, hi),)]


def _known_state(params, tx, shard, group, master=False):
    """A sharded state whose slices are slices of known whole arrays, and those arrays."""
    step = dist.make_train_step(_loss, tx, shard=shard, group=group)
    state = step.init(params, master_dtype=np.float64 if master else None)
    lay = state.layout
    whole = {}
    inner, tree = fg.tree_util.tree_flatten(state.inner)
    for k, (owner, axis) in enumerate(zip(lay.state_params, lay.state_axes)):
        if owner >= 0:
            shape = list(np.shape(inner[k]))
            shape[axis] = lay.bounds[owner][-1]
            whole[k] = np.arange(np.prod(shape), dtype=inner[k].dtype).reshape(shape) + 1000 * k
            inner[k] = _cut(lay, owner, axis, whole[k])
        else:
            inner[k] = np.full_like(inner[k], 7)
    state = dist.ShardedState(fg.tree_util.tree_unflatten(tree, inner), state.master, lay)
    return state, whole


@pytest.mark.parametrize("saved,loaded,name", [
    (4, 2, "adamw"), (4, 1, "adamw"), (1, 4, "adamw"), (3, 2, "adamw"),
    (4, 2, "adafactor"), (2, 3, "adafactor")])
def test_checkpoints_reshard_across_rank_counts(tmp_path, saved, loaded, name):
    params = _mixed_params()
    del params["stack"]  # keep it small
    params["long"] = np.ones((2, 70000), np.float32)  # factored, cut along its second axis
    tx = {"adamw": optim.adamw(1e-2),  # factored moments: row or column statistics, sliced
          "adafactor": optim.adafactor(1e-2, min_dim_size_to_factor=2)}[name]

    def save(group):
        state, whole = _known_state(params, tx, "gradients", group, master=True)
        dist.save_checkpoint(tmp_path, {"params": params, "opt": state, "step": 5}, group=group)
        return whole

    whole = _on_ranks(saved, save)[0]

    def load(group):
        step = dist.make_train_step(_loss, tx, shard="optimizer", group=group)
        like = {"params": fg.tree_util.tree_map(np.zeros_like, params),
                "opt": step.init(params, master_dtype=np.float64), "step": 0}
        return dist.load_checkpoint(tmp_path, like, group=group)

    for r, got in enumerate(_on_ranks(loaded, load)):
        assert got["step"] == 5 and type(got["step"]) is int
        for a, b in zip(fg.tree_util.tree_leaves(got["params"]),
                        fg.tree_util.tree_leaves(params)):
            np.testing.assert_array_equal(a, b)
        lay = got["opt"].layout
        assert (lay.rank, lay.size, lay.mode) == (r, loaded, "optimizer")
        for k, (x, owner, axis) in enumerate(zip(fg.tree_util.tree_leaves(got["opt"].inner),
                                                 lay.state_params, lay.state_axes)):
            if owner < 0:
                assert np.all(np.asarray(x) == 7)
                continue
            np.testing.assert_array_equal(x, _cut(lay, owner, axis, whole[k]))
        if name == "adafactor":  # ("long"'s column means: cut along their axis 0)
            assert any(a != lay.axes[o] for o, a in zip(lay.state_params, lay.state_axes)
                       if o >= 0)
        masters = lay.fragments(fg.tree_util.tree_leaves(params), dtype=np.float64)
        for x, want in zip(fg.tree_util.tree_leaves(got["opt"].master), masters):
            np.testing.assert_array_equal(x, want)


def test_a_save_killed_midway_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    params, _ = _setup()
    step = dist.make_train_step(_loss, optim.adam(1e-2), shard="gradients")
    state = {"params": params, "opt": step.init(params), "step": 1}
    first = dist.save_checkpoint(tmp_path, state)
    assert dist.latest_checkpoint(tmp_path) == first
    real = fg.io.atomic._write

    def dies_in_the_manifest(f, data):  # the commit point: the last file a save writes
        header = bytes(data[8:8 + int.from_bytes(bytes(data[:8]), "little")])
        if b'"json":{' in header:
            real(f, data[:100])
            raise KeyboardInterrupt("killed")
        real(f, data)

    monkeypatch.setattr(fg.io.atomic, "_write", dies_in_the_manifest)
    with pytest.raises(KeyboardInterrupt):
        dist.save_checkpoint(tmp_path, dict(state, step=2))
    monkeypatch.setattr(fg.io.atomic, "_write", real)
    assert dist.latest_checkpoint(tmp_path) == first  # the new folder has no manifest
    like = {"params": params, "opt": step.init(params), "step": 0}
    assert dist.load_checkpoint(tmp_path, like)["step"] == 1
    third = dist.save_checkpoint(tmp_path, dict(state, step=3))
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(third)]  # old and torn ones gone
    assert dist.load_checkpoint(tmp_path, like)["step"] == 3
    kept = dist.save_checkpoint(tmp_path, dict(state, step=4), keep=2)
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(third), os.path.basename(kept)]


def test_a_manifest_without_state_axes_still_loads(tmp_path):
    # Saved before state leaves could be cut along another axis than their parameter's.
    import json
    params, _ = _setup()
    step = dist.make_train_step(_loss, optim.adam(1e-2), shard="gradients")
    state = {"params": params, "opt": step.init(params)}
    folder = dist.save_checkpoint(tmp_path, state)
    path = os.path.join(folder, "manifest.safetensors")
    manifest = json.loads(bytes(fg.io.load(path)["json"]).decode())
    del manifest["sharded"]["opt"]["state_axes"]
    fg.io.save(path, {"json": np.frombuffer(json.dumps(manifest).encode(), np.uint8)})
    got = dist.load_checkpoint(tmp_path, state)
    for a, b in zip(fg.tree_util.tree_leaves(got), fg.tree_util.tree_leaves(state)):
        np.testing.assert_array_equal(a, b)


def test_damaged_checkpoints_are_refused(tmp_path):
    params, _ = _setup()
    step = dist.make_train_step(_loss, optim.adam(1e-2), shard="optimizer")
    like = {"params": params, "opt": step.init(params)}
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        dist.load_checkpoint(tmp_path, like)
    folder = dist.save_checkpoint(tmp_path, like)
    shard_file = os.path.join(folder, "rank-00000-of-00001.safetensors")
    data = bytearray(open(shard_file, "rb").read())
    data[-3] ^= 0xFF
    open(shard_file, "wb").write(bytes(data))
    with pytest.raises(fg.io.CheckpointError, match="corrupted"):
        dist.load_checkpoint(tmp_path, like)
    open(shard_file, "wb").write(bytes(data[:-8]))
    with pytest.raises(fg.io.CheckpointError, match="bytes on disk"):
        dist.load_checkpoint(tmp_path, like)
    dist.save_checkpoint(tmp_path, like)
    plain = dist.make_train_step(_loss, optim.sgd(0.1, momentum=0.9), shard="optimizer")
    with pytest.raises(fg.io.CheckpointError, match="another optimizer"):
        dist.load_checkpoint(tmp_path, {"params": params, "opt": plain.init(params)})
    with pytest.raises(fg.io.CheckpointError, match="sharded states are saved at \\['opt'\\]"):
        dist.load_checkpoint(tmp_path, {"params": params, "opt": optim.adam(1e-2).init(params)})


# ---------------------------------------------------------------------------------------------
# Real processes: mpiexec -n 2 on loopback.

def _mpi_missing():
    if importlib.util.find_spec("mpi4py") is None:
        return "mpi4py is not installed (pip install -e '.[distributed]')"
    if shutil.which("mpiexec") is None:
        return "no mpiexec on PATH (pip install mpich)"
    return None


mpi = pytest.mark.skipif(_mpi_missing() is not None, reason=f"MPI unavailable: {_mpi_missing()}")
TIMEOUT = 120

# One training script for every multi-process test: an MLP with a frozen leaf, clipping (a
# reduction over the whole gradient) and AdamW (decay of the matrices only), run with each
# `shard` mode; it checkpoints every 2 steps and can resume, fail or be killed on purpose.
WORKER = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    import funcgrad as fg, funcgrad.distributed as dist, funcgrad.numpy as fnp
    from funcgrad import models, optim

    out, steps, shards = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
    ckpt, fail = sys.argv[4], sys.argv[5]
    dist.init()
    assert dist.size() == int(sys.argv[6]), (dist.size(), sys.argv[6])
    optimizers = {  # per-leaf norms, RMS and row/column means must see whole leaves
        "clip_adamw": optim.chain(optim.clip_by_global_norm(0.5),
                                  optim.adamw(1e-2, weight_decay=0.1)),
        "lamb": optim.lamb(1e-2, weight_decay=0.1),
        "adafactor": optim.adafactor(1e-2, min_dim_size_to_factor=1024),
        "adafactor_factored": optim.adafactor(1e-2, min_dim_size_to_factor=3, momentum=0.9),
    }

    def loss(p, x, y):
        h = models.mlp.apply(p["mlp"], x)
        return fnp.mean((h * p["scale"] - y) ** 2)

    params = {"mlp": models.mlp.init(fg.random.key(dist.rank()), [3, 16, 16, 1]),
              "scale": np.float32(1.5)}
    params = dist.broadcast(params)  # rank 0's start everywhere
    mask = {"mlp": True, "scale": False}
    if fail == "in_save" and dist.rank() == 1:  # killed while writing its second shard
        real, saves = fg.io.atomic._write, []
        def write(f, data):
            saves.append(1)
            if len(saves) == 2:
                real(f, data[:len(data) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
            real(f, data)
        fg.io.atomic._write = write
    for name, shard in [(t, s) for t in sys.argv[7].split(",") for s in shards]:
        shard = None if shard == "none" else shard
        tx = optimizers[name]
        step = dist.make_train_step(loss, tx, shard=shard, mask=mask, debug=True)
        state = {"params": params, "opt": step.init(params), "step": 0}
        if ckpt != "-" and dist.latest_checkpoint(ckpt):
            state = dist.load_checkpoint(ckpt, state)
        p, s = state["params"], state["opt"]
        for i in range(state["step"], steps):
            x = np.random.default_rng(i).normal(size=(16, 3)).astype(np.float32)
            if fail == f"raise@{i}" and dist.rank() == 1:
                raise ValueError("rank one fails on purpose")
            if fail == f"kill@{i}" and dist.rank() == 1:
                os.kill(os.getpid(), signal.SIGKILL)
            p, s, _ = step(p, s, *dist.shard((x, np.sin(x.sum(1, keepdims=True)))))
            if ckpt != "-" and (i + 1) % 2 == 0:
                dist.save_checkpoint(ckpt, {"params": p, "opt": s, "step": i + 1})
        assert float(p["scale"]) == 1.5
        tag = "" if name == "clip_adamw" else name + "_"
        np.savez(f"{out}/{tag}{shard}_rank{dist.rank()}_of{dist.size()}.npz",
                 *fg.tree_util.tree_leaves(fg.device_get(p)))
""")


def _env():
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return dict(os.environ, PYTHONPATH=path, HYDRA_IFACE="lo", OMP_NUM_THREADS="1",
                OPENBLAS_NUM_THREADS="1")


def _mpiexec(nprocs, args, env, timeout=TIMEOUT):
    if nprocs > 1:
        args = ["mpiexec", "-n", str(nprocs), "-host", "localhost"] + args
    else:  # a one-process run, not under a launcher
        for v in dist._LAUNCHER_VARS:
            env.pop(v, None)
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)


def _launch(out, nprocs, steps=6, shards="none", ckpt="-", fail="-", txs="clip_adamw",
            timeout=TIMEOUT):
    script = out / "worker.py"
    script.write_text(WORKER)
    args = [sys.executable, str(script), str(out), str(steps), shards, str(ckpt), fail,
            str(nprocs), txs]
    return _mpiexec(nprocs, args, _env(), timeout)


def _load(path):
    with np.load(path) as z:
        return [z[k] for k in sorted(z.files, key=lambda k: int(k.split("_")[1]))]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted one-process run (6 steps on the whole batches)."""
    out = tmp_path_factory.mktemp("reference")
    run = _launch(out, 1)
    assert run.returncode == 0, run.stderr
    return _load(out / "None_rank0_of1.npz")


def _close(a, b):
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=2e-5, atol=1e-6)


@mpi
def test_two_processes_match_one_process_replicated_and_sharded(tmp_path, reference):
    run = _launch(tmp_path, 2, shards="none,optimizer,gradients")
    assert run.returncode == 0, run.stderr
    for shard in ("None", "optimizer", "gradients"):
        r0 = _load(tmp_path / f"{shard}_rank0_of2.npz")
        r1 = _load(tmp_path / f"{shard}_rank1_of2.npz")
        for a, b in zip(r0, r1):
            np.testing.assert_array_equal(a, b)  # every rank holds the same parameters
        _close(r0, reference)  # the same trajectory as one process on the whole batches


@mpi
def test_per_leaf_norms_see_whole_leaves_when_sharded(tmp_path):
    """LAMB's trust ratio, Adafactor's update clipping and parameter scale, and its factored
    row and column means reduce over each leaf or one of its axes: sharded, they add up the
    ranks' slices (optim.shard_sum), so the trajectory is the replicated one."""
    names = ("lamb", "adafactor", "adafactor_factored")
    run = _launch(tmp_path, 2, steps=4, shards="none,gradients", txs=",".join(names),
                  timeout=2 * TIMEOUT)  # (6 programs to compile per rank)
    assert run.returncode == 0, run.stderr
    for name in names:
        _close(_load(tmp_path / f"{name}_gradients_rank0_of2.npz"),
               _load(tmp_path / f"{name}_None_rank0_of2.npz"))


# Factored Adafactor on leaves cut every way: along the axis a statistic reduces (d0 or d1), on
# the leading axis or an inner one, and leaves a rank has none of; a frozen leaf; a checkpoint.
FACTORED_WORKER = textwrap.dedent("""
    import sys  # (SHAPES, {name: (shape, dtype)}, is prepended)
    import numpy as np
    import funcgrad as fg, funcgrad.distributed as dist, funcgrad.numpy as fnp
    from funcgrad import optim

    out, steps = sys.argv[1], int(sys.argv[2])
    dist.init()
    rng = np.random.default_rng(0)
    params = {k: rng.normal(size=s).astype(dt) for k, (s, dt) in SHAPES.items()}
    mask = {k: k != "frozen" for k in params}

    def loss(p, x):
        c = fnp.mean(x)
        return sum(fnp.mean(fnp.sin(v * c + 0.3) ** 2).astype(np.float64) for v in p.values())

    for shard in (None, "gradients"):
        tx = optim.adafactor(1e-2, min_dim_size_to_factor=4, momentum=0.9,
                             weight_decay_rate=0.01)
        step = dist.make_train_step(loss, tx, shard=shard, mask=mask, debug=True)
        p, s = params, step.init(params)
        for i in range(steps):
            x = np.random.default_rng(i).normal(size=(12,)).astype(np.float32)
            p, s, _ = step(p, s, *dist.shard((x,)))
            if shard and i == steps // 2 - 1:  # save, load, go on
                dist.save_checkpoint(f"{out}/ckpt", {"params": p, "opt": s})
                got = dist.load_checkpoint(f"{out}/ckpt", {"params": params,
                                                           "opt": step.init(params)})
                p, s = got["params"], got["opt"]
        np.savez(f"{out}/{shard}_rank{dist.rank()}.npz",
                 *fg.tree_util.tree_leaves(fg.device_get(p)))
""")
FACTORED_SHAPES = {"b": ((12,), "float32"), "deep": ((3, 8, 6), "float32"),
                   "flat": ((6, 30), "float32"), "frozen": ((8, 8), "float32"),
                   "tall": ((40, 6), "float32"), "cube": ((2, 260, 260), "float64"),
                   "slab": ((2, 300, 240), "float64")}


@mpi
def test_factored_adafactor_on_three_processes_is_the_replicated_trajectory(tmp_path):
    """Every way a cut meets Adafactor's factored moments, on 3 ranks (two cuts per dtype;
    checked on the layout first), with a frozen leaf and through a checkpoint: the same
    parameters on every rank, and those of the replicated step. (The one-process tests cover
    both modes, with and without a mask; each configuration here costs a compile per rank.)"""
    params = {k: np.zeros(s, dt) for k, (s, dt) in FACTORED_SHAPES.items()}
    trainable = [p != "frozen" for p in fg.masks.paths(params)]
    lay = dist.sharding.build_layout(params, trainable, "gradients", 0, 3)
    seen = set()
    for i, x in enumerate(fg.tree_util.tree_leaves(params)):
        if np.ndim(x) < 2 or not trainable[i]:
            continue
        d1, d0 = np.argsort(np.shape(x), kind="stable")[-2:]  # the factored axes
        parts = [lay.fragment_shape(i, r)[lay.axes[i]] for r in range(3)]
        if 0 < max(parts) < sum(parts):  # truly cut
            seen.add(({d0: "d0", d1: "d1"}.get(lay.axes[i], "other"), lay.axes[i] > 0))
        if min(parts) == 0:
            seen.add("empty")
    assert seen >= {("d0", False), ("d1", False), ("d0", True), ("d1", True), "empty"}
    script = tmp_path / "factored.py"
    script.write_text(f"SHAPES = {FACTORED_SHAPES!r}\n" + FACTORED_WORKER)
    run = _mpiexec(3, [sys.executable, str(script), str(tmp_path), "4"], _env(), timeout=300)
    assert run.returncode == 0, run.stderr
    ref = _load(tmp_path / "None_rank0.npz")
    for r in range(3):
        _close(_load(tmp_path / f"None_rank{r}.npz"), ref)
        _close(_load(tmp_path / f"gradients_rank{r}.npz"), ref)


@mpi
def test_a_failing_rank_ends_the_job_with_its_error(tmp_path):
    run = _launch(tmp_path, 2, fail="raise@2")  # a hang would raise TimeoutExpired
    assert run.returncode != 0
    assert "[rank 1]" in run.stderr and "rank one fails on purpose" in run.stderr


def _pid_of(stderr, rank):
    import re
    return re.search(rf"\b{rank}: \S+ pid (\d+)", stderr).group(1)


@mpi
def test_a_killed_rank_ends_the_job_and_a_restart_continues_the_trajectory(tmp_path, reference):
    ckpt = tmp_path / "ckpt"
    run = _launch(tmp_path, 2, shards="gradients", ckpt=ckpt, fail="kill@3")
    assert run.returncode != 0
    pid = _pid_of(run.stderr, 1)  # rank 1's PID, printed at start, is the one mpiexec names
    assert f"PID {pid}" in run.stdout + run.stderr, run.stdout + run.stderr
    assert os.path.basename(dist.latest_checkpoint(ckpt)) == "ckpt-000001"  # after step 2
    again = _launch(tmp_path, 2, shards="gradients", ckpt=ckpt)  # resumes at step 2
    assert again.returncode == 0, again.stderr
    _close(_load(tmp_path / "gradients_rank0_of2.npz"), reference)
    # The last checkpoint (step 6, saved by 2 ranks) loads on this one process.
    one = _launch(tmp_path, 1, steps=6, shards="optimizer", ckpt=ckpt)
    assert one.returncode == 0, one.stderr
    _close(_load(tmp_path / "optimizer_rank0_of1.npz"), reference)


@mpi
def test_a_rank_killed_mid_save_leaves_the_previous_checkpoint(tmp_path, reference):
    ckpt = tmp_path / "ckpt"
    run = _launch(tmp_path, 2, shards="optimizer", ckpt=ckpt, fail="in_save")
    assert run.returncode != 0
    folders = sorted(os.listdir(ckpt))
    assert folders == ["ckpt-000001", "ckpt-000002"]  # the second save never committed
    assert dist.latest_checkpoint(ckpt).endswith("ckpt-000001")
    again = _launch(tmp_path, 2, shards="optimizer", ckpt=ckpt)  # from step 2
    assert again.returncode == 0, again.stderr
    _close(_load(tmp_path / "optimizer_rank0_of2.npz"), reference)
    assert sorted(os.listdir(ckpt)) == ["ckpt-000004"]  # steps 4 and 6; torn and old swept


EXITS = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    import funcgrad.distributed as dist

    how = sys.argv[1]
    g = dist.init(timeout=2)
    for i in range(4):
        if i == 2 and g.rank == 1:
            if how == "sys.exit(0)":
                sys.exit(0)
            if how == "sys.exit(3)":
                sys.exit(3)
            if how == "os._exit(0)":
                os._exit(0)
            if how == "stuck":
                time.sleep(60)
        g.allreduce(np.ones(3))
    if how == "finishes first" and g.rank == 0:
        time.sleep(3)  # alone, longer than the timeout: not an error
    if how == "ends with 3" and g.rank == 1:
        sys.exit(3)
    print(f"rank {g.rank} done", flush=True)
""")


@mpi
@pytest.mark.parametrize("how,status,says", [
    ("sys.exit(0)", 1, "rank 1 left the job: it ended (sys.exit or the end of its script) after "
                       "2 collective(s) on this group, and rank 0 waits for it in allreduce #3"),
    ("sys.exit(3)", 1, "rank 1 left the job"),
    ("os._exit(0)", 1, "rank 1 left the job: it called os._exit(0) after 2 collective(s)"),
    ("stuck", 1, "rank 0 waited 2 s in allreduce #3 (the limit is 2 s)"),
    ("finishes first", 0, "rank 0 done"),
    ("ends with 3", 3, "rank 0 done"),
])
def test_a_rank_that_leaves_early_ends_the_job(tmp_path, how, status, says):
    script = tmp_path / "exits.py"
    script.write_text(EXITS)
    t0 = time.monotonic()
    run = _mpiexec(2, [sys.executable, str(script), how], _env(), timeout=60)
    assert run.returncode == status, run.stdout + run.stderr
    assert says in run.stdout + run.stderr
    assert time.monotonic() - t0 < 30  # bounded: never the test's timeout


@mpi
def test_example_runs_under_mpiexec(tmp_path):
    env = dict(os.environ, HYDRA_IFACE="lo", OMP_NUM_THREADS="1")
    run = subprocess.run(["mpiexec", "-n", "2", "-host", "localhost", sys.executable,
                          str(ROOT / "examples" / "data_parallel.py"), "--steps", "3", "--debug",
                          "--shard", "gradients", "--save", str(tmp_path / "ckpt"), "--quiet",
                          "--out", str(tmp_path)],
                         env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert run.returncode == 0, run.stderr
    # the table's row: processes, global batch, steps
    assert re.search(r"\|\s+2 \|\s+256 \|\s+3 \|", run.stdout), run.stdout
    assert "shard='gradients'" in run.stdout  # the memory report
    assert (tmp_path / "data_parallel.png").exists()
    assert dist.latest_checkpoint(tmp_path / "ckpt").endswith("ckpt-000001")
