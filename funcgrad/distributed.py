"""Data-parallel training over processes: MPI (mpi4py) between processes and hosts, NCCL (CuPy)
between GPUs. funcgrad does no networking of its own.

    import funcgrad as fg
    fg.distributed.init()                 # the MPI world under mpiexec; one process otherwise
    params = fg.distributed.broadcast(params)          # rank 0's initial parameters everywhere
    step = fg.distributed.data_parallel(fg.jit(train_step), axis_name="data")
    x, y = fg.distributed.shard((x, y))   # this rank's slice of the global batch

Inside a function run by `data_parallel`, the named-axis collectives (`fg.lax.psum`, `pmean`,
`pmax`, `pmin`, `all_gather`, `axis_index`) over `axis_name` run across processes: an MPI
allreduce/allgather (NCCL for CuPy arrays when available). With one process they are identities,
so the same step runs unchanged on 1 or N processes, and under `fg.vmap(..., axis_name="data")`
it simulates N ranks in one process. Apply `data_parallel` outside `fg.jit`: the axis is bound
while the compiled program runs.

Run with `mpiexec -n 2 python script.py` (`pip install "funcgrad[distributed]"`).
"""

from __future__ import annotations

import os
import sys
import traceback
import zlib

import numpy as np

from . import numpy as fnp
from . import optim as _optim
from . import tree_util as tu
from .core import device_namespace
from .lax import parallel as _parallel
from .transforms.grad import value_and_grad
from .transforms.jit import jit as _jit

__all__ = ["init", "rank", "size", "world", "ProcessGroup", "LocalGroup", "MPIGroup",
           "data_parallel", "shard", "fused_pmean", "broadcast", "checksum", "check_identical",
           "save_checkpoint", "make_train_step"]

_LAUNCHER_VARS = ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")
_world = None


class ProcessGroup:
    """The processes taking part in a collective; backends implement the five methods below."""

    rank: int = 0
    size: int = 1

    def allreduce(self, x, op="sum"):
        """Elementwise `op` ("sum", "max", "min") of x over all processes; same shape and dtype."""
        raise NotImplementedError

    def allgather(self, x):
        """The x of every process, as a list indexed by rank."""
        raise NotImplementedError

    def bcast(self, x, root=0):
        """Root's x on every process (x gives the shape and dtype everywhere)."""
        raise NotImplementedError

    def barrier(self):
        raise NotImplementedError

    def abort(self, code=1):
        raise SystemExit(code)

    def __repr__(self):
        return f"{type(self).__name__}(rank={self.rank}, size={self.size})"


class LocalGroup(ProcessGroup):
    """One process: every collective is the identity."""

    def allreduce(self, x, op="sum"):
        return x

    def allgather(self, x):
        return [x]

    def bcast(self, x, root=0):
        return x

    def barrier(self):
        pass


class MPIGroup(ProcessGroup):
    """Collectives of an mpi4py communicator; CuPy arrays go through NCCL when CuPy has it, else
    through host memory."""

    def __init__(self, comm):
        from mpi4py import MPI
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self._ops = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}
        self._nccl = None

    def allreduce(self, x, op="sum"):
        if _is_cupy(x):
            return self._nccl_call("allreduce", x, op)
        x = np.asarray(x)
        send = np.ascontiguousarray(x).reshape(-1)
        out = np.empty_like(send)
        self.comm.Allreduce(send, out, op=self._ops[op])
        return out.reshape(x.shape)

    def allgather(self, x):
        if _is_cupy(x):
            return list(self._nccl_call("allgather", x, None))
        x = np.asarray(x)
        out = np.empty((self.size,) + x.shape, x.dtype)
        self.comm.Allgather(np.ascontiguousarray(x).reshape(-1), out.reshape(self.size, -1))
        return list(out)

    def bcast(self, x, root=0):
        if _is_cupy(x):
            import cupy
            return cupy.asarray(self.bcast(cupy.asnumpy(x), root))
        buf = np.array(x, copy=True, order="C")
        self.comm.Bcast(buf.reshape(-1), root=root)
        return buf

    def barrier(self):
        self.comm.Barrier()

    def abort(self, code=1):
        self.comm.Abort(code)

    def _nccl_call(self, what, x, op):
        import cupy
        try:
            from cupy.cuda import nccl
        except ImportError:
            nccl = None
        if nccl is None or not nccl.available:  # stage through host memory
            host = cupy.asnumpy(x)
            if what == "allreduce":
                return cupy.asarray(self.allreduce(host, op))
            out = np.stack(self.allgather(host))
            return cupy.asarray(out)
        if self._nccl is None:  # one NCCL communicator per group, its id sent over MPI
            uid = nccl.get_unique_id() if self.rank == 0 else None
            self._nccl = nccl.NcclCommunicator(self.size, self.comm.bcast(uid, root=0), self.rank)
        dtype = {"float16": nccl.NCCL_FLOAT16, "float32": nccl.NCCL_FLOAT32,
                 "float64": nccl.NCCL_FLOAT64, "int32": nccl.NCCL_INT32,
                 "int64": nccl.NCCL_INT64}[x.dtype.name]
        x = cupy.ascontiguousarray(x)
        stream = cupy.cuda.get_current_stream().ptr
        if what == "allreduce":
            out = cupy.empty_like(x)
            ops = {"sum": nccl.NCCL_SUM, "max": nccl.NCCL_MAX, "min": nccl.NCCL_MIN}
            self._nccl.allReduce(x.data.ptr, out.data.ptr, x.size, dtype, ops[op], stream)
            return out
        out = cupy.empty((self.size,) + x.shape, x.dtype)
        self._nccl.allGather(x.data.ptr, out.data.ptr, x.size, dtype, stream)
        return out


def _is_cupy(x):
    return type(x).__module__.startswith("cupy")


def _under_launcher():
    return any(v in os.environ for v in _LAUNCHER_VARS)


def init(abort_on_error=True):
    """The world process group: MPI's COMM_WORLD when run under mpiexec, else one process.

    With `abort_on_error`, an uncaught exception on any rank prints `[rank r]` and its traceback
    and aborts the whole job (exit code 1), so the other ranks never wait forever in a collective.
    Calling it again returns the same group.
    """
    global _world
    if _world is not None:
        return _world
    if not _under_launcher():
        _world = LocalGroup()
        return _world
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError("funcgrad.distributed: running under an MPI launcher but mpi4py is "
                          "not installed; pip install 'funcgrad[distributed]' (mpi4py, mpich)."
                          ) from e
    _world = MPIGroup(MPI.COMM_WORLD)
    if abort_on_error and _world.size > 1:
        group, previous = _world, sys.excepthook

        def hook(kind, value, tb):
            text = "".join(traceback.format_exception(kind, value, tb))
            sys.stderr.write("".join(f"[rank {group.rank}] {line}\n"
                                     for line in text.rstrip("\n").split("\n")))
            sys.stderr.flush()
            if issubclass(kind, KeyboardInterrupt):
                previous(kind, value, tb)
            group.abort(1)

        sys.excepthook = hook
    return _world


def world():
    """The world group (initialized on first use)."""
    return init()


def rank():
    return world().rank


def size():
    return world().size


def data_parallel(f, axis_name="data", group=None):
    """Run `f` with `axis_name` bound to the processes of `group` (default: the world).

    The collectives over `axis_name` in f, eager or compiled by fg.jit, become allreduces and
    allgathers over the group. Wrap a jitted function (data_parallel(fg.jit(step))), not the
    other way round.
    """
    def run(*args, **kwargs):
        g = group if group is not None else world()
        with _parallel.process_axis(axis_name, g):
            return f(*args, **kwargs)

    run.__name__ = f"data_parallel({getattr(f, '__name__', 'f')})"
    run.__wrapped__ = f
    return run


def shard(batch, group=None):
    """This rank's equal, contiguous slice of every leaf of `batch` along its leading axis."""
    g = group if group is not None else world()

    def cut(x):
        n = np.shape(x)[0]
        if n % g.size:
            raise ValueError(f"shard: a leading axis of {n} does not split evenly over {g.size} "
                             "processes; equal shards keep the mean of the per-rank means equal "
                             "to the mean over the whole batch. Trim or pad the batch.")
        k = n // g.size
        return x[g.rank * k:(g.rank + 1) * k]

    return tu.tree_map(cut, batch)


def _by_dtype(leaves):
    groups = {}
    for i, x in enumerate(leaves):
        groups.setdefault(np.dtype(x.dtype), []).append(i)
    return groups.values()


def fused_pmean(tree, axis_name="data"):
    """The mean of every leaf over `axis_name`, with one collective per dtype (usually one):
    the leaves are flattened into one buffer, reduced, and cut back into the tree's shapes.

    Written with funcgrad.numpy and fg.lax.pmean, so it runs eagerly, under fg.jit (one pmean
    equation in the program) and under fg.vmap(..., axis_name=...) (simulated ranks).
    """
    leaves, treedef = tu.tree_flatten(tree)
    out = list(leaves)
    for idx in _by_dtype(leaves):
        buf = fnp.concatenate([fnp.ravel(leaves[i]) for i in idx])
        buf = _parallel.pmean(buf, axis_name)
        start = 0
        for i in idx:
            n = int(np.prod(np.shape(leaves[i]), dtype=np.int64))
            out[i] = fnp.reshape(buf[start:start + n], np.shape(leaves[i]))
            start += n
    return tu.tree_unflatten(treedef, out)


def broadcast(tree, root=0, group=None):
    """Rank `root`'s values of every leaf on every rank (one fused broadcast per dtype)."""
    g = group if group is not None else world()
    leaves, treedef = tu.tree_flatten(tree)
    if g.size == 1:
        return tree
    out = list(leaves)
    for idx in _by_dtype(leaves):
        xp = device_namespace([leaves[i] for i in idx])  # device leaves: a device buffer
        buf = g.bcast(xp.concatenate([xp.ravel(xp.asarray(leaves[i])) for i in idx]), root)
        start = 0
        for i in idx:
            n = int(np.prod(np.shape(leaves[i]), dtype=np.int64))
            out[i] = buf[start:start + n].reshape(np.shape(leaves[i]))
            start += n
    return tu.tree_unflatten(treedef, out)


def checksum(tree):
    """A CRC32 of the bytes of every leaf, in tree order: equal trees give equal checksums."""
    crc = 0
    for x in tu.tree_leaves(tree):
        x = x.get() if _is_cupy(x) else np.asarray(x)
        crc = zlib.crc32(np.ascontiguousarray(x).tobytes(), crc)
    return crc


def check_identical(tree, group=None, what="parameters"):
    """Raise RuntimeError on every rank unless all ranks hold bit-identical `tree`s."""
    g = group if group is not None else world()
    sums = [int(s) for s in g.allgather(np.asarray(checksum(tree), np.int64))]
    if len(set(sums)) > 1:
        listing = ", ".join(f"rank {r}: {s:08x}" for r, s in enumerate(sums))
        raise RuntimeError(f"data parallel: the {what} differ across ranks ({listing}). Every "
                           "rank must start from the same values (fg.distributed.broadcast) and "
                           "apply the same averaged gradients.")


def save_checkpoint(path, tree, group=None, mask=None):
    """fg.io.save from rank 0 only; the other ranks wait until the file is written."""
    from . import io
    g = group if group is not None else world()
    if g.rank == 0:
        io.save(path, tree, mask=mask)
    g.barrier()


def make_train_step(loss_fn, optimizer, axis_name="data", group=None, jit=True, debug=False):
    """`step(params, opt_state, *batch) -> (params, opt_state, loss)` for data-parallel training.

    Each rank differentiates `loss_fn(params, *batch)` on its shard, the gradients are averaged
    with one fused allreduce (`fused_pmean`), and every rank applies the same optimizer update, so
    parameters stay identical. The loss returned is the mean over ranks. `debug` checks after
    every step, with a checksum, that all ranks hold the same parameters.
    """
    def step(params, opt_state, *batch):
        loss, grads = value_and_grad(loss_fn)(params, *batch)
        grads = fused_pmean(grads, axis_name)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return _optim.apply_updates(params, updates), opt_state, _parallel.pmean(loss, axis_name)

    inner = data_parallel(_jit(step) if jit else step, axis_name, group)
    if not debug:
        return inner

    def checked(params, opt_state, *batch):
        params, opt_state, loss = inner(params, opt_state, *batch)
        check_identical(params, group)
        return params, opt_state, loss

    return checked
