"""A rank that leaves a job early ends the whole job, with a non-zero status, in bounded time.

What MPICH's launcher does by itself: when a process dies or exits without MPI_Finalize,
`mpiexec` kills the others at once (SIGKILL) and returns the status of the one that left. So a
killed rank (any signal) ends the job with a non-zero status, and mpiexec prints its PID and host.
Two paths are not covered: a rank that calls `sys.exit` or reaches the end of its script waits in
MPI_Finalize for the others, which wait for it in their next collective: the job hangs; and a
rank that calls `os._exit(0)` ends the job with status 0 although the others never finished.

What `install` adds, for a world of several processes:

1. **Exceptions.** `sys.excepthook` prints `[rank r]` and the traceback, and aborts the job
   (MPI_Abort, status 1).
2. **Departures.** When a rank's interpreter ends (`sys.exit`, the end of the script, or
   `os._exit`, which is wrapped in the rank's own process), it sends every other rank a notice
   "rank r leaves after n collectives on group G" over a private duplicate of the world
   communicator, then waits for the others to leave too (as MPI_Finalize would). A rank that
   waits in, or starts, a collective that the departed rank will never join (number n + 1 or
   later on a group holding it) aborts the job, naming that rank. A watchdog thread looks for
   notices every 50 ms, so a rank blocked inside a collective aborts within about 0.1 s.
   A rank that left by `os._exit(code)` exits with `code` once the others agree to end; if they
   still needed it, they abort the job and its status is 1.
3. **Stuck collectives.** A collective that blocks longer than `timeout` seconds (default 600 s;
   `init(timeout=...)` or FUNCGRAD_COLLECTIVE_TIMEOUT; 0 for none) aborts the job, naming the
   operation. This also bounds the wait for a rank that vanished without a notice (killed under
   a launcher that does not clean up). A rank that has finished waits for the others without a
   limit, as MPI_Finalize does: the others may still be working alone (evaluating, saving).

Only collectives made through funcgrad's process groups are watched (direct mpi4py calls are not).
The watchdog thread needs MPI_THREAD_MULTIPLE (mpi4py's default); at a lower thread level notices
are read when a collective starts, and neither a rank already blocked in one nor the timeout can be
acted on. Rank 0 prints one line at start-up mapping every rank to its host and PID, so the PID that
mpiexec prints for a killed process names its rank.
"""

from __future__ import annotations

import atexit
import os
import socket
import sys
import threading
import time
import traceback
import zlib

import numpy as np

_POLL_S = 0.05
_FLUSH_S = 0.25
_TAG = 7301
_DEFAULT_TIMEOUT_S = 600.0
_state = None  # the installed _Watch, if any


def group_key(comm):
    """(key, members): a hash of the group's world ranks, the same on every member, and those
    world ranks."""
    from mpi4py import MPI
    world = MPI.COMM_WORLD.Get_group()
    members = tuple(int(r) for r in comm.Get_group().Translate_ranks(
        list(range(comm.Get_size())), world))
    return zlib.crc32(np.asarray(members, np.int64).tobytes()), members


class _Watch:
    """The fault-handling state of this process (one per job)."""

    def __init__(self, group, timeout):
        from mpi4py import MPI
        self.MPI = MPI
        self.group = group
        self.rank = group.rank
        self.pid = os.getpid()
        self.control = group.comm.Dup()  # notices never mix with the program's messages
        self.timeout = timeout
        self.started = {}      # group key -> collectives started on this rank
        self.departed = {}     # world rank -> (how, code, {group key: collectives started})
        self.current = None    # (members, key, op, number, t0) while in a collective
        self.lock = threading.Lock()
        self.leaving = False
        self.sends = []
        self.threaded = False  # a watchdog thread runs (it needs MPI_THREAD_MULTIPLE)

    # -- notices ----------------------------------------------------------------------------
    def poll(self):
        """Receive the departure notices that have arrived (thread-safe)."""
        MPI = self.MPI
        with self.lock:
            status = MPI.Status()
            while self.control.Iprobe(MPI.ANY_SOURCE, _TAG, status):
                buf = np.empty(status.Get_count(MPI.INT64_T), np.int64)
                self.control.Recv(buf, status.Get_source(), _TAG)
                how, code = int(buf[0]), int(buf[1])
                counts = {int(k): int(n) for k, n in buf[2:].reshape(-1, 2)}
                self.departed[status.Get_source()] = (how, code, counts)

    def leave(self, how, code=0):
        """Tell every other rank that this one leaves, then wait until all have left."""
        if self.leaving or os.getpid() != self.pid:
            return
        self.leaving = True
        items = np.asarray(sorted(self.started.items()), np.int64).reshape(-1)
        note = np.concatenate([np.asarray([how, code], np.int64), items])
        others = [r for r in range(self.group.size) if r != self.rank]
        self.sends = [self.control.Isend(note, r, _TAG) for r in others]
        while True:  # like MPI_Finalize: no time limit (the others may still work alone)
            self.poll()
            if all(r in self.departed for r in others):
                break
            time.sleep(0.01)
        self.MPI.Request.Waitall(self.sends)

    # -- collectives ------------------------------------------------------------------------
    def enter(self, group, op):
        key, members = group.key
        number = self.started.get(key, 0) + 1
        self.started[key] = number
        self.current = (members, key, op, number, time.monotonic())
        if not self.threaded:  # else the watchdog thread receives the notices
            self.poll()
        if self.departed:
            self.check()

    def check(self):
        """Abort the job if the collective this rank is in can never complete."""
        cur = self.current
        if cur is None:
            return
        members, key, op, number, t0 = cur
        for r, (how, code, counts) in sorted(self.departed.items()):
            if r in members and counts.get(key, 0) < number:
                done = counts.get(key, 0)
                what = ("ended (sys.exit or the end of its script)" if how == 1
                        else f"called os._exit({code})")
                self.abort(f"rank {r} left the job: it {what} after {done} collective(s) on this "
                           f"group, and rank {self.rank} waits for it in {op} #{number}. Every "
                           "rank must make the same collectives; end all ranks together.")
        waited = time.monotonic() - t0
        if self.timeout and waited > self.timeout:
            self.abort(f"rank {self.rank} waited {waited:.0f} s in {op} #{number} (the limit is "
                       f"{self.timeout:g} s). No rank has left the job: one is stuck (an endless "
                       "loop, a deadlock, a slow disk) or the ranks made different collectives. "
                       "Raise the limit with fg.distributed.init(timeout=...) or "
                       "FUNCGRAD_COLLECTIVE_TIMEOUT.")

    def abort(self, message):
        sys.stderr.write(f"[rank {self.rank}] funcgrad.distributed: {message}\n")
        sys.stderr.flush()
        time.sleep(_FLUSH_S)  # the launcher drops output not yet forwarded when the job aborts
        self.group.abort(1)

    def run_watchdog(self):
        while True:
            time.sleep(_POLL_S)
            try:
                self.poll()
                self.check()
            except Exception as e:  # noqa: BLE001 (the watchdog must never die silently)
                sys.stderr.write(f"[rank {self.rank}] funcgrad.distributed watchdog: {e!r}\n")
                return


class watch:
    """`with watch(group, op):` runs one collective of `group` under the job's fault handling
    (nothing happens when none is installed, or once this rank is leaving)."""

    __slots__ = ("on",)

    def __init__(self, group, op):
        self.on = _state is not None and not _state.leaving and hasattr(group, "key")
        if self.on:
            _state.enter(group, op)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.on:
            _state.current = None
        return False


def _timeout(timeout):
    if timeout is None:
        env = os.environ.get("FUNCGRAD_COLLECTIVE_TIMEOUT")
        try:
            timeout = _DEFAULT_TIMEOUT_S if env is None else float(env)
        except ValueError:
            raise ValueError(f"FUNCGRAD_COLLECTIVE_TIMEOUT={env!r} is not a number of seconds"
                             ) from None
    if timeout < 0:
        raise ValueError(f"init: timeout must be >= 0 seconds (0: no limit), got {timeout}")
    return float(timeout)


def install(group, abort_on_error=True, timeout=None):
    """Set up the fault handling described above for the world `group` (several processes)."""
    global _state
    if _state is not None:
        return
    _state = w = _Watch(group, _timeout(timeout))

    if abort_on_error:
        previous = sys.excepthook

        def hook(kind, value, tb):
            text = "".join(traceback.format_exception(kind, value, tb))
            sys.stderr.write("".join(f"[rank {group.rank}] {line}\n"
                                     for line in text.rstrip("\n").split("\n")))
            sys.stderr.flush()
            time.sleep(_FLUSH_S)
            if issubclass(kind, KeyboardInterrupt):
                previous(kind, value, tb)
            group.abort(1)

        sys.excepthook = hook

    atexit.register(w.leave, 1)  # runs before mpi4py's MPI_Finalize
    real_exit = os._exit

    def _exit(code):
        w.leave(2, int(code))
        real_exit(code)

    _exit.__wrapped__ = real_exit
    _exit.__doc__ = ("os._exit, wrapped by funcgrad.distributed: the rank first tells the others "
                     "that it leaves the job (see funcgrad.distributed.faults).")
    os._exit = _exit

    w.threaded = w.MPI.Query_thread() >= w.MPI.THREAD_MULTIPLE
    if w.threaded:
        threading.Thread(target=w.run_watchdog, name="funcgrad-distributed-watchdog",
                         daemon=True).start()

    me = np.zeros(72, np.uint8)  # host name (up to 64 bytes) and PID of every rank, no pickle
    me[:64] = np.frombuffer(socket.gethostname().encode()[:64].ljust(64, b"\0"), np.uint8)
    me[64:] = np.frombuffer(np.int64(os.getpid()).tobytes(), np.uint8)
    table = np.empty((group.size, 72), np.uint8)
    group.comm.Allgather(me, table)
    if group.rank == 0:
        hosts = [bytes(t[:64]).rstrip(b"\0").decode(errors="replace") for t in table]
        pids = [int(t[64:].view(np.int64)[0]) for t in table]
        listing = ", ".join(f"{r}: {h} pid {p}" for r, (h, p) in enumerate(zip(hosts, pids)))
        sys.stderr.write(f"funcgrad.distributed: {group.size} ranks ({listing})\n")
        sys.stderr.flush()
