"""Step time of data-parallel training, split into compute and gradient allreduce.

    OMP_NUM_THREADS=1 python benchmarks/data_parallel_scaling.py
    OMP_NUM_THREADS=1 mpiexec -n 2 python benchmarks/data_parallel_scaling.py

For each MLP width: `step` is the full data-parallel step (fg.distributed.make_train_step, jitted,
on this rank's shard of a fixed global batch), `compute` the same step with the collectives made
identities (a one-process group, same shard), `allreduce` one MPI allreduce of a float32 buffer
the size of the gradient (what the fused pmean sends). Medians over the timed steps, rank 0 prints.
"""

import argparse
import functools
import time

import numpy as np

import funcgrad as fg
import funcgrad.distributed as dist
import funcgrad.numpy as fnp
from funcgrad import models, optim


def loss_fn(params, x, y):
    return fnp.mean((models.mlp.apply(params, x) - y) ** 2)


def median_ms(fns, reps, group):
    """Medians in ms of each of `fns`, run interleaved (the machine's drift hits all alike)."""
    times = [[] for _ in fns]
    for _ in range(reps):
        for fn, ts in zip(fns, times):
            group.barrier()
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
    return [1e3 * float(np.median(ts)) for ts in times]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--widths", default="64,256,1024")
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args()
    world = dist.init()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch, 32)).astype(np.float32)
    y = np.sin(x[:, :1])
    xs, ys = dist.shard((x, y))
    if world.rank == 0:
        print(f"{world.size} process(es), global batch {args.batch}")
        print(f"{'width':>6} {'params':>9} {'step ms':>8} {'compute ms':>10} {'allreduce ms':>12}")
    for width in [int(w) for w in args.widths.split(",")]:
        params = models.mlp.init(fg.random.key(0), [32, width, width, 1])
        n = sum(int(np.size(p)) for p in fg.tree_util.tree_leaves(params))
        tx = optim.sgd(1e-3)
        state = tx.init(params)
        full = dist.make_train_step(loss_fn, tx)
        local = dist.make_train_step(loss_fn, tx, group=dist.LocalGroup())
        full(params, state, xs, ys), local(params, state, xs, ys)  # compile
        buf = np.ones(n, np.float32)
        fns = [functools.partial(full, params, state, xs, ys),
               functools.partial(local, params, state, xs, ys),
               functools.partial(world.allreduce, buf)]
        t_step, t_comp, t_red = median_ms(fns, args.reps, world)
        if world.rank == 0:
            print(f"{width:>6} {n:>9} {t_step:>8.2f} {t_comp:>10.2f} {t_red:>12.3f}", flush=True)


if __name__ == "__main__":
    main()
