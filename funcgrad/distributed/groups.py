"""Process groups: the processes taking part in a collective, and the world group of a job.

`init()` returns MPI's COMM_WORLD as an `MPIGroup` under an MPI launcher (`mpiexec`), one
process (`LocalGroup`) otherwise. Every collective of an MPIGroup is watched (see faults.py): a
rank that leaves the job, by any path, ends the whole job with a non-zero status instead of
leaving the others waiting in a collective forever.
"""

from __future__ import annotations

import os

import numpy as np

from . import faults

LAUNCHER_VARS = ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")
_world = None


class ProcessGroup:
    """The processes taking part in a collective; backends implement the methods below.

    `allreduce`, `allgather`, `bcast` and `barrier` are required; `reduce_scatter` has a default
    built on allreduce (a backend with a real reduce-scatter sends half the bytes).
    """

    rank: int = 0
    size: int = 1

    def allreduce(self, x, op="sum"):
        """Elementwise `op` ("sum", "max", "min") of x over all processes; same shape and dtype."""
        raise NotImplementedError

    def allgather(self, x):
        """The x of every process, indexed by rank: a list, or one array with a leading axis."""
        raise NotImplementedError

    def reduce_scatter(self, x):
        """Block `rank` of the sum over all processes of the 1-D x, whose length is a multiple of
        `size` (block r is x[r * n : (r + 1) * n], n = len(x) // size)."""
        n = x.shape[0] // self.size
        return self.allreduce(x)[self.rank * n:(self.rank + 1) * n]

    def allgatherv(self, x, counts):
        """The 1-D x of every process laid end to end (rank r's has counts[r] elements), in a
        new buffer. It pads to the longest and allgathers: MPICH's own MPI_Allgatherv was 50
        times slower than MPI_Allgather here (its default algorithm for large messages), and
        NCCL has none."""
        from ..core import device_namespace
        xp = device_namespace([x])
        pad = max(counts) - x.shape[0]
        got = self.allgather(xp.concatenate([x, xp.zeros(pad, x.dtype)]) if pad else x)
        return xp.concatenate([got[r][:counts[r]] for r in range(self.size)])

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

    def reduce_scatter(self, x):
        return x

    def allgatherv(self, x, counts):
        return x

    def bcast(self, x, root=0):
        return x

    def barrier(self):
        pass


class MPIGroup(ProcessGroup):
    """Collectives of an mpi4py communicator; CuPy arrays go through NCCL when CuPy has it, else
    through host memory. Each call is watched by the job's fault handling (faults.watch)."""

    def __init__(self, comm):
        from mpi4py import MPI
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self._ops = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}
        self._nccl = None
        self.key = faults.group_key(comm)  # the same on every member: its world ranks

    def allreduce(self, x, op="sum"):
        if is_cupy(x):
            return self._nccl_call("allreduce", x, op)
        x = np.asarray(x)
        send = np.ascontiguousarray(x).reshape(-1)
        out = np.empty_like(send)
        with faults.watch(self, "allreduce"):
            self.comm.Allreduce(send, out, op=self._ops[op])
        return out.reshape(x.shape)

    def allgather(self, x):
        if is_cupy(x):
            return self._nccl_call("allgather", x, None)
        x = np.asarray(x)
        out = np.empty((self.size,) + x.shape, x.dtype)
        with faults.watch(self, "allgather"):
            self.comm.Allgather(np.ascontiguousarray(x).reshape(-1), out.reshape(self.size, -1))
        return out

    def reduce_scatter(self, x):
        if is_cupy(x):
            return self._nccl_call("reduce_scatter", x, "sum")
        send = np.ascontiguousarray(x).reshape(-1)
        out = np.empty(send.shape[0] // self.size, send.dtype)
        with faults.watch(self, "reduce_scatter"):
            self.comm.Reduce_scatter_block(send, out, op=self._ops["sum"])
        return out

    def bcast(self, x, root=0):
        if is_cupy(x):
            import cupy
            return cupy.asarray(self.bcast(cupy.asnumpy(x), root))
        buf = np.array(x, copy=True, order="C")
        with faults.watch(self, "bcast"):
            self.comm.Bcast(buf.reshape(-1), root=root)
        return buf

    def barrier(self):
        with faults.watch(self, "barrier"):
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
            if what == "reduce_scatter":
                return cupy.asarray(self.reduce_scatter(host))
            return cupy.asarray(self.allgather(host))
        if self._nccl is None:  # one NCCL communicator per group, its id sent over MPI
            uid = nccl.get_unique_id() if self.rank == 0 else None
            self._nccl = nccl.NcclCommunicator(self.size, self.comm.bcast(uid, root=0), self.rank)
        dtype = {"float16": nccl.NCCL_FLOAT16, "float32": nccl.NCCL_FLOAT32,
                 "float64": nccl.NCCL_FLOAT64, "int32": nccl.NCCL_INT32,
                 "int64": nccl.NCCL_INT64}[x.dtype.name]
        x = cupy.ascontiguousarray(x)
        stream = cupy.cuda.get_current_stream()
        ops = {"sum": nccl.NCCL_SUM, "max": nccl.NCCL_MAX, "min": nccl.NCCL_MIN}
        with faults.watch(self, f"nccl {what}"):
            if what == "allreduce":
                out = cupy.empty_like(x)
                self._nccl.allReduce(x.data.ptr, out.data.ptr, x.size, dtype, ops[op], stream.ptr)
            elif what == "reduce_scatter":
                out = cupy.empty(x.size // self.size, x.dtype)
                self._nccl.reduceScatter(x.data.ptr, out.data.ptr, out.size, dtype, ops[op],
                                         stream.ptr)
            else:
                out = cupy.empty((self.size,) + x.shape, x.dtype)
                self._nccl.allGather(x.data.ptr, out.data.ptr, x.size, dtype, stream.ptr)
            stream.synchronize()  # a stuck NCCL collective blocks here, inside the watch
        return out


def is_cupy(x):
    return type(x).__module__.startswith("cupy")


def _under_launcher():
    return any(v in os.environ for v in LAUNCHER_VARS)


def init(abort_on_error=True, timeout=None):
    """The world process group: MPI's COMM_WORLD when run under mpiexec, else one process.

    With several processes, funcgrad makes sure a rank that leaves the job early ends the whole
    job with a non-zero status (see `funcgrad.distributed.faults`):

    - an uncaught exception on any rank prints `[rank r]` and its traceback and aborts the job
      (exit code 1), unless `abort_on_error=False`;
    - a rank that ends (`sys.exit`, the end of the script, `os._exit`) while another rank still
      waits for it, or later calls, a collective makes that rank abort the job, naming it;
    - a collective that waits longer than `timeout` seconds aborts the job, naming the
      operation (default 600 s, or the environment variable FUNCGRAD_COLLECTIVE_TIMEOUT;
      None or 0 waits forever).

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
    if _world.size > 1:
        faults.install(_world, abort_on_error=abort_on_error, timeout=timeout)
    return _world


def world():
    """The world group (initialized on first use)."""
    return init()


def rank():
    return world().rank


def size():
    return world().size
