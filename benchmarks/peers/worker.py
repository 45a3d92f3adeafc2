"""Run one implementation of one workload in this process and report JSON.

    python -m benchmarks.peers.worker --impl jax --workload mlp-train --steps 20
    python -m benchmarks.peers.worker --impl funcgrad --workload hessian --variant eager --steps 20

One-shot (`--steps N`): first call (trace + compile + first step), `--warmup` more steps, then N
timed steps; prints one JSON object: first_call_s, median_s, times_s, loss (the last step's
scalar output: the training loss before that step's update, or the function's value), norm
(the 2-norm of all its array outputs: gradients, Hessian), peak_rss_mib (getrusage), the
library version and the thread count.

`--serve` (what benchmarks/peers/driver.py uses): after the first call and the warm-up it prints
a `ready` line, then answers `run N` on stdin with the times of N steps and `done` with the
final result, so that the driver can interleave blocks of steps of several live processes.
Protocol lines on stdout start with `@@peer `; anything else a library prints is ignored.

Threads: `--threads N` (default 1, the only setting that is reproducible on a shared machine: with
more, OpenBLAS and OpenMP threads spin and get descheduled when other processes load the CPUs)
sets OMP/OpenBLAS/MKL thread counts and torch.set_num_threads(N) before
anything is imported, and when N is below the CPU count it restricts the process to N CPUs
(os.sched_setaffinity), which is what bounds XLA's thread pool too.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import statistics
import sys
import time
import traceback

IMPLS = ("numpy", "funcgrad", "autograd", "jax", "torch")
TAG = "@@peer "
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def available_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def set_threads(n):
    """Before numpy / torch / jax are imported."""
    for var in THREAD_VARS:
        os.environ[var] = str(n)
    if n < available_cpus() and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:n])
    if n == 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   " --xla_cpu_multi_thread_eigen=false"
                                   " intra_op_parallelism_threads=1").strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")


def peak_rss_mib():
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / 2**20


def _leaves(out):
    if isinstance(out, dict):
        for k in sorted(out):
            yield from _leaves(out[k])
    elif isinstance(out, (list, tuple)):
        for x in out:
            yield from _leaves(x)
    else:
        yield out


def summarize(out):
    """(loss, norm): the first scalar output, and the 2-norm (float64) of the array outputs."""
    import numpy as np
    loss, sq, any_array = None, 0.0, False
    for leaf in _leaves(out):
        if hasattr(leaf, "detach"):          # torch
            leaf = leaf.detach().cpu().numpy()
        a = np.asarray(leaf)
        if a.size == 1 and a.ndim == 0:
            if loss is None:
                loss = float(a)
        else:
            any_array = True
            sq += float(np.sum(np.square(a.astype(np.float64))))
    return loss, (sq ** 0.5 if any_array else None)


class Runner:
    def __init__(self, impl, workload, variant, threads):
        t0 = time.perf_counter()
        mod = importlib.import_module(f"benchmarks.peers.{impl}_impl")
        lib = importlib.import_module(mod.LIBRARY)
        if impl == "torch":
            lib.set_num_threads(threads)
        self.info = {"impl": impl, "workload": workload, "variant": variant,
                     "version": _version(mod.LIBRARY, lib), "threads": threads,
                     "import_s": time.perf_counter() - t0, "rss_import_mib": peak_rss_mib()}
        variants = mod.WORKLOADS.get(workload)
        if not variants or variant not in variants:
            raise SystemExit(f"{impl} has no workload {workload!r} variant {variant!r}")
        self.step = variants[variant]()
        t0 = time.perf_counter()
        self.out = self.step()
        self.info["first_call_s"] = time.perf_counter() - t0
        self.steps = 1

    def run(self, n):
        step, clock = self.step, time.perf_counter
        times = []
        out = None
        for _ in range(n):
            t0 = clock()
            out = step()
            times.append(clock() - t0)
        if n:
            self.out = out
        self.steps += n
        return times

    def result(self):
        loss, norm = summarize(self.out)
        return dict(self.info, steps=self.steps, loss=loss, norm=norm,
                    peak_rss_mib=peak_rss_mib())


def _version(name, lib):
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:
        return getattr(lib, "__version__", "?")


def _say(obj):
    sys.stdout.write(TAG + json.dumps(obj) + "\n")
    sys.stdout.flush()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--impl", required=True, choices=IMPLS)
    ap.add_argument("--workload", required=True)
    ap.add_argument("--variant", default="", help="a second way to run it (e.g. eager)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps (one-shot mode)")
    ap.add_argument("--warmup", type=int, default=3, help="steps after the first call, untimed")
    ap.add_argument("--threads", type=int, default=1,
                    help="threads for every library (default 1; 0: the CPUs available)")
    ap.add_argument("--serve", action="store_true", help="driver protocol on stdin/stdout")
    args = ap.parse_args(argv)
    threads = args.threads or available_cpus()
    set_threads(threads)
    try:
        runner = Runner(args.impl, args.workload, args.variant, threads)
        runner.run(args.warmup)
    except Exception as e:  # reported to the driver, which prints it in the table
        traceback.print_exc()
        _say({"error": f"{type(e).__name__}: {e}"[:300]})
        return 1
    if not args.serve:
        times = runner.run(args.steps)
        res = runner.result()
        res.update(median_s=statistics.median(times) if times else None, times_s=times)
        print(json.dumps(res))
        return 0
    _say(dict(runner.info, ready=True))
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "run":
            try:
                _say({"times_s": runner.run(int(cmd[1]))})
            except Exception as e:
                traceback.print_exc()
                _say({"error": f"{type(e).__name__}: {e}"[:300]})
                return 1
        elif cmd[0] == "done":
            _say(runner.result())
            return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
