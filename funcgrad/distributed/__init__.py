"""Data-parallel training over processes: MPI (mpi4py) between processes and hosts, NCCL (CuPy)
between GPUs. funcgrad does no networking of its own.

    import funcgrad as fg
    fg.distributed.init()                 # the MPI world under mpiexec; one process otherwise
    params = fg.distributed.broadcast(params)          # rank 0's initial parameters everywhere
    step = fg.distributed.make_train_step(loss_fn, optim.adam(1e-3), shard="gradients")
    opt_state = step.init(params)         # this rank's slice of the optimizer state (ZeRO)
    params, opt_state, loss = step(params, opt_state, *fg.distributed.shard((x, y)))
    fg.distributed.save_checkpoint("run/ckpt", {"params": params, "opt_state": opt_state})

`make_train_step` averages the gradients across ranks and applies the optimizer: replicated
(`shard=None`), or ZeRO stage 1 (`shard="optimizer"`: each rank keeps and updates the optimizer
state of 1/N of the parameters) or stage 2 (`shard="gradients"`: the gradients are
reduce-scattered too). `save_checkpoint` / `load_checkpoint` write one file per rank and
reshard onto any number of ranks; `memory_report` shows the bytes per rank.

Inside a function run by `data_parallel`, the named-axis collectives (`fg.lax.psum`, `pmean`,
`pmax`, `pmin`, `psum_scatter`, `all_gather`, `axis_index`) over `axis_name` run across
processes: MPI allreduce/reduce-scatter/allgather (NCCL for CuPy arrays when available). With
one process they are identities, so the same step runs unchanged on 1 or N processes, and under
`fg.vmap(..., axis_name="data")` it simulates N ranks in one process. Apply `data_parallel`
outside `fg.jit`: the axis is bound while the compiled program runs.

A rank that leaves the job early, by any path, ends the whole job with a non-zero status in
bounded time (see `funcgrad.distributed.faults`).

Run with `mpiexec -n 2 python script.py` (`pip install "funcgrad[distributed]"`).
"""

from . import faults
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .groups import (
    LAUNCHER_VARS as _LAUNCHER_VARS,  # noqa: F401  (the variables that say "under mpiexec")
)
from .groups import (
    LocalGroup,
    MPIGroup,
    ProcessGroup,
    init,
    rank,
    size,
    world,
)
from .sharding import MemoryReport, ShardedState, ShardLayout
from .training import (
    TrainStep,
    broadcast,
    check_identical,
    checksum,
    data_parallel,
    fused_pmean,
    make_train_step,
    memory_report,
    shard,
)

__all__ = ["init", "rank", "size", "world", "ProcessGroup", "LocalGroup", "MPIGroup",
           "data_parallel", "shard", "fused_pmean", "broadcast", "checksum", "check_identical",
           "make_train_step", "TrainStep", "ShardedState", "ShardLayout", "memory_report",
           "MemoryReport", "save_checkpoint", "load_checkpoint", "latest_checkpoint", "faults"]
