"""One entry point for the benchmarks: the topic suites, then the cross-library comparison, each in
its own process, one after another.

    python -m benchmarks                     # every suite and the peer comparison
    python -m benchmarks --quick             # fewer repeats (a few minutes for the peers)
    python -m benchmarks --only jit,finetune
    python -m benchmarks --only peers --quick --workloads mlp-small,hessian
    python -m benchmarks --only peers --markdown bench.md   # the peer tables, with date and machine
    python -m benchmarks --list

Each topic suite prints its own Markdown tables (medians, ratios to the NumPy floor measured in
the same run, some peers, in one process). `peers` (benchmarks/peers/) runs every workload of
BENCHMARKS.md for hand-written NumPy, funcgrad, and autograd / JAX / PyTorch when installed
(`pip install -e '.[benchmarks]'`), each implementation in its own worker process, interleaved,
and prints one table per workload: median step, ratio to the NumPy floor, first call, peak RSS,
final loss. `--workloads`, `--impls` and `--markdown` go to the peer comparison.

Threads: the peer comparison runs every library with 1 thread unless told otherwise; the topic
suites keep the libraries' defaults unless `--threads N` is given, which sets OMP / OpenBLAS /
MKL thread counts for them too. On a shared machine whose load exceeds its cores, multi-threaded
BLAS spins and is descheduled: pass `--threads 1` for figures that mean something there.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

SUITES = {
    "autodiff": "eager value_and_grad vs autograd, deep-MLP grad memory, masked grad",
    "jit": "mlp-train, mlp-small, elementwise-chain, dispatch, compile time",
    "control_flow": "checkpoint memory/time, LSTM jit(value_and_grad) over a scan",
    "finetune": "finetune-head: all params vs last block + head (and PyTorch)",
    "per_example": "per-example gradients: vmap(grad) eager and jitted vs NumPy, autograd loop",
    "pretrained": "GPT-2 small: LoRA step and KV-cache generation vs PyTorch + transformers + peft",
    "random_draws": "fg.random: large eager draws vs the pre-JAX-streams sampler, GPT-2 init",
    "peers": "every workload for NumPy, funcgrad, autograd, JAX, PyTorch, one process each",
}
PEER_OPTIONS = ("workloads", "impls", "threads", "markdown")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated suites (default: all): " + ", ".join(SUITES))
    ap.add_argument("--quick", action="store_true", help="fewer repeats (passed to each suite)")
    ap.add_argument("--list", action="store_true", help="list the suites and exit")
    ap.add_argument("--workloads", help="peers: comma-separated workloads (default: all; see "
                                        "python -m benchmarks.peers --list)")
    ap.add_argument("--impls", help="peers: comma-separated implementations (default: all "
                                    "installed of numpy, funcgrad, autograd, jax, torch)")
    ap.add_argument("--threads", type=int,
                    help="threads for every library (peers: default 1; suites: the libraries' "
                         "defaults unless given)")
    ap.add_argument("--markdown", metavar="FILE", help="peers: also write the tables to FILE")
    args = ap.parse_args(argv)
    if args.list:
        for name, what in SUITES.items():
            print(f"{name:14s} {what}")
        return 0
    names = args.only.split(",") if args.only else list(SUITES)
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        ap.error(f"unknown suite(s) {unknown}; choose from {list(SUITES)}")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if args.threads:
        env.update({v: str(args.threads) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                   "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")})
    failed = []
    for name in names:
        print(f"\n## {name}: {SUITES[name]}\n", flush=True)
        t0 = time.perf_counter()
        extra = ["--quick"] if args.quick else []
        if name == "peers":
            for opt in PEER_OPTIONS:
                if getattr(args, opt) is not None:
                    extra += [f"--{opt}", str(getattr(args, opt))]
        rc = subprocess.call([sys.executable, "-m", f"benchmarks.{name}"] + extra, cwd=ROOT,
                             env=env)
        print(f"\n({name}: {time.perf_counter() - t0:.0f} s, exit code {rc})", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"\nfailed suites: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
