"""Data-parallel training over MPI: the same script runs on 1 process or N.

    python examples/data_parallel.py                 # one process, ~7 s
    mpiexec -n 2 python examples/data_parallel.py    # two processes, each on half of each batch
    mpiexec -n 2 python examples/data_parallel.py --shard gradients --save run/ckpt
    python examples/data_parallel.py --quick         # 20 steps (used by the tests)

Needs `pip install "funcgrad[distributed]"` (mpi4py and the mpich runtime) for mpiexec.
Each rank builds its own random initial parameters; rank 0's are broadcast, so all ranks start
equal. Every step each rank differentiates its shard of the batch, the gradients are averaged
with one fused allreduce, and all ranks apply the same Adam update. With `--shard optimizer` or
`--shard gradients` (ZeRO stage 1 or 2) each rank keeps and updates the Adam state of 1/N of the
parameters only. `--save DIR` writes a sharded checkpoint (one file per rank) at the end, and a
later run with the same `--save DIR` resumes from it, on any number of processes. Rank 0 alone
prints the table (processes, batch, final loss, step time) and the memory per rank, and saves
the plot of the loss.
"""

import argparse
import os
import time

import numpy as np
from _util import add_common_args, print_table, progress, save_curves

import funcgrad as fg
import funcgrad.distributed as dist
import funcgrad.numpy as fnp
from funcgrad import models, optim


def loss_fn(params, x, y):
    pred = models.mlp.apply(params, x)
    return fnp.mean((pred - y) ** 2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=256, help="global batch, split over the ranks")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--shard", choices=["optimizer", "gradients"], default=None,
                    help="ZeRO stage 1 (optimizer) or 2 (gradients)")
    ap.add_argument("--save", default=None, help="checkpoint folder (resumed from if present)")
    ap.add_argument("--debug", action="store_true", help="check parameters are equal each step")
    add_common_args(ap)
    args = ap.parse_args()
    if args.quick:
        args.steps = 20

    dist.init()
    r, n = dist.rank(), dist.size()
    # Different on every rank on purpose: broadcast makes rank 0's the common start.
    params = models.mlp.init(fg.random.key(args.seed + r), [1, args.width, args.width, 1])
    params = dist.broadcast(params)
    step = dist.make_train_step(loss_fn, optim.adam(1e-2), axis_name="data", debug=args.debug,
                                shard=args.shard)
    state = {"params": params, "opt_state": step.init(params), "step": 0}
    if args.save and dist.latest_checkpoint(args.save):
        state = dist.load_checkpoint(args.save, state)  # resharded onto this many ranks
    params, opt_state, first = state["params"], state["opt_state"], state["step"]

    losses = []
    start = time.perf_counter()
    bar = progress(range(first, first + args.steps), f"rank {r}", args.quiet or r != 0)
    for i in bar:
        data = np.random.default_rng(i)  # the same global batch on every rank, by step
        x = data.uniform(-2, 2, (args.batch, 1)).astype(np.float32)
        y = np.sin(2 * x)
        params, opt_state, loss = step(params, opt_state, *dist.shard((x, y)))
        losses.append(float(loss))
        bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
    report = step.memory_report(params, opt_state)  # a collective: every rank calls it
    if r == 0:
        ms = 1e3 * (time.perf_counter() - start) / max(args.steps, 1)
        print_table([[n, args.batch, args.steps, losses[0], losses[-1], ms]],
                    ["processes", "global batch", "steps", "first loss", "final loss",
                     "ms/step"], title="Data-parallel Adam on sin(2x)")
        print(report, flush=True)
        save_curves(os.path.join(args.out, "data_parallel.png"),
                    {f"{n} process(es)": losses}, ylabel="loss (mean over the global batch)",
                    title="data-parallel training", logy=True)
    if args.save:
        dist.save_checkpoint(args.save, {"params": params, "opt_state": opt_state,
                                         "step": first + args.steps})


if __name__ == "__main__":
    main()
