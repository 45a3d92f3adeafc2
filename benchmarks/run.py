"""One entry point for the benchmark suites: each runs in its own process, one after another.

    python -m benchmarks                     # every suite
    python -m benchmarks --quick             # fewer repeats
    python -m benchmarks --only jit,finetune
    python -m benchmarks --list

Each suite prints its own Markdown tables (medians, ratios to the NumPy floor measured in the
same run, peers such as autograd / PyTorch when installed); this script runs them in fresh
processes and reports the wall time of each. Workloads are defined in BENCHMARKS.md.
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
}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated suites (default: all): " + ", ".join(SUITES))
    ap.add_argument("--quick", action="store_true", help="fewer repeats (passed to each suite)")
    ap.add_argument("--list", action="store_true", help="list the suites and exit")
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
    failed = []
    for name in names:
        print(f"\n## {name}: {SUITES[name]}\n", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, "-m", f"benchmarks.{name}"]
                             + (["--quick"] if args.quick else []), cwd=ROOT, env=env)
        print(f"\n({name}: {time.perf_counter() - t0:.0f} s, exit code {rc})", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"\nfailed suites: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
