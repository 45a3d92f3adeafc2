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
from pathlib import Path

import numpy as np
import pytest

import funcgrad as fg
import funcgrad.distributed as dist
import funcgrad.numpy as fnp
from funcgrad import lax, optim

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


def test_shard_broadcast_checksum_and_checkpoint(tmp_path):
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
    dist.save_checkpoint(tmp_path / "p.safetensors", tree)
    np.testing.assert_array_equal(fg.io.load(tmp_path / "p.safetensors")["a"], tree["a"])


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

WORKER = textwrap.dedent("""
    import sys
    import numpy as np
    import funcgrad as fg, funcgrad.distributed as dist, funcgrad.numpy as fnp
    from funcgrad import models, optim

    out, steps, fail_at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    dist.init()
    expected = int(sys.argv[4])
    assert dist.size() == expected, (dist.size(), expected)
    loss = lambda p, x, y: fnp.mean((models.mlp.apply(p, x) - y) ** 2)
    params = dist.broadcast(models.mlp.init(fg.random.key(dist.rank()), [3, 16, 1]))
    tx = optim.adam(1e-2)
    state = tx.init(params)
    step = dist.make_train_step(loss, tx, debug=True)
    rng = np.random.default_rng(0)
    for i in range(steps):
        x = rng.normal(size=(32, 3)).astype(np.float32)
        y = np.sin(x.sum(1, keepdims=True))
        if i == fail_at and dist.rank() == 1:
            raise ValueError("rank one fails on purpose")
        params, state, _ = step(params, state, *dist.shard((x, y)))
    leaves = fg.tree_util.tree_leaves(params)
    np.savez(f"{out}/rank{dist.rank()}_of{dist.size()}.npz", *leaves)
""")


def _launch(tmp_path, nprocs, steps=5, fail_at=-1):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=path, HYDRA_IFACE="lo", OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1")
    args = [sys.executable, str(script), str(tmp_path), str(steps), str(fail_at), str(nprocs)]
    if nprocs > 1:
        args = ["mpiexec", "-n", str(nprocs), "-host", "localhost"] + args
    else:  # the one-process reference run, not under a launcher
        for v in dist._LAUNCHER_VARS:
            env.pop(v, None)
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=TIMEOUT)


def _load(path):
    with np.load(path) as z:
        return [z[k] for k in sorted(z.files, key=lambda k: int(k.split("_")[1]))]


@mpi
def test_two_processes_match_one_process_on_the_full_batch(tmp_path):
    one = _launch(tmp_path, 1)
    assert one.returncode == 0, one.stderr
    two = _launch(tmp_path, 2)
    assert two.returncode == 0, two.stderr
    ref = _load(tmp_path / "rank0_of1.npz")
    r0, r1 = _load(tmp_path / "rank0_of2.npz"), _load(tmp_path / "rank1_of2.npz")
    for a, b, c in zip(r0, r1, ref):
        np.testing.assert_array_equal(a, b)  # every rank holds the same parameters, bit for bit
        np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-6)


@mpi
def test_a_failing_rank_ends_the_job_with_its_error(tmp_path):
    run = _launch(tmp_path, 2, steps=5, fail_at=2)  # a hang would raise TimeoutExpired
    assert run.returncode != 0
    assert "[rank 1]" in run.stderr and "rank one fails on purpose" in run.stderr


@mpi
def test_example_runs_under_mpiexec(tmp_path):
    env = dict(os.environ, HYDRA_IFACE="lo", OMP_NUM_THREADS="1")
    run = subprocess.run(["mpiexec", "-n", "2", "-host", "localhost", sys.executable,
                          str(ROOT / "examples" / "data_parallel.py"), "--steps", "3", "--debug",
                          "--save", str(tmp_path / "p.safetensors"), "--quiet",
                          "--out", str(tmp_path)],
                         env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert run.returncode == 0, run.stderr
    # the table's row: processes, global batch, steps
    assert re.search(r"\|\s+2 \|\s+256 \|\s+3 \|", run.stdout), run.stdout
    assert (tmp_path / "p.safetensors").exists() and (tmp_path / "data_parallel.png").exists()
