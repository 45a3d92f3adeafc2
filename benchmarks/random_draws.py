"""fg.random: time and memory of large eager draws against the implementation before JAX's
streams, and GPT-2 small's initialization.

    python -m benchmarks.random_draws                   # 4M values a draw, then GPT-2 small
    python -m benchmarks.random_draws --quick           # 1M values, fewer rounds, no GPT-2
    python -m benchmarks.random_draws --size 4000000 --rounds 7 --only draws
    python -m benchmarks.random_draws --baseline REV    # another baseline (default c612ad1^)

1. `draws`: one eager draw of `--size` values per sampler (float32 unless said), fg.random
   against the baseline, interleaved (A B A B ...): median wall and CPU (process) seconds, the
   ratio fg.random / baseline of each, and the peak of allocations beyond the output
   (tracemalloc, which NumPy reports to). The baseline is funcgrad/random.py as of git revision
   REV (`git show REV:funcgrad/random.py`, the last version before fg.random drew JAX's
   streams), loaded as a module of the current funcgrad: its formulas on today's primitives.
   It draws other numbers (different streams): a timing reference only.
2. `gpt2`: GPT-2 small's 124M parameters (`models.gpt2.init(0, gpt2.default_config())`, normal
   draws as Hugging Face initializes them): seconds and peak allocations beyond the parameters,
   each in its own process, with fg.random and with the baseline's samplers in the initializers
   (the baseline needs ~3 GB there).

Run it with one thread (OPENBLAS_NUM_THREADS=1; the draws are NumPy elementwise work, which is
single-threaded anyway) and read the load average it prints: on a shared machine the CPU
seconds are the steadier figure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
import types

import numpy as np

from ._common import load_note, peak_in_subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASELINE = "c612ad1^"


def load_baseline(rev):
    """funcgrad/random.py at git revision `rev`, as the module funcgrad._random_baseline."""
    src = subprocess.run(["git", "-C", ROOT, "show", f"{rev}:funcgrad/random.py"],
                         capture_output=True, text=True, check=True).stdout
    import funcgrad  # noqa: F401  (the baseline's relative imports resolve in the package)
    mod = types.ModuleType("funcgrad._random_baseline")
    mod.__package__ = "funcgrad"
    sys.modules[mod.__name__] = mod
    exec(compile(src, f"{rev}:funcgrad/random.py", "exec"), mod.__dict__)
    return mod


def draws(n):
    """name -> f(random_module): one draw of n values."""
    return {
        "bits uint32": lambda r: r.bits(r.key(0), (n,)),
        "uniform": lambda r: r.uniform(r.key(0), (n,)),
        "uniform(-1, 1)": lambda r: r.uniform(r.key(0), (n,), minval=-1.0),
        "normal": lambda r: r.normal(r.key(0), (n,)),
        "normal float64": lambda r: r.normal(r.key(0), (n,), np.float64),
        "truncated_normal(-2, 2)": lambda r: r.truncated_normal(r.key(0), -2.0, 2.0, (n,)),
        "gumbel": lambda r: r.gumbel(r.key(0), (n,)),
        "bernoulli(0.5)": lambda r: r.bernoulli(r.key(0), 0.5, (n,)),
        "randint(0, 1000)": lambda r: r.randint(r.key(0), (n,), 0, 1000),
    }


def _peak_beyond_output(fn):
    fn()  # warm-up
    tracemalloc.start()
    try:
        out = fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak - out.nbytes, out.nbytes


def bench_draws(n, rounds, baseline_rev):
    import funcgrad.random as new
    old = load_baseline(baseline_rev)
    impls = {"fg.random": new, "baseline": old}
    print(f"\n### one eager draw of {n:,} values (float32 unless said), fg.random vs the "
          f"baseline ({baseline_rev}), interleaved, {rounds} rounds\n{load_note()}\n")
    print("| draw | wall s | baseline wall s | wall ratio | CPU s | baseline CPU s | CPU ratio "
          "| MiB beyond output | baseline MiB beyond |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    ratios = {}
    for name, f in draws(n).items():
        wall = {k: [] for k in impls}
        cpu = {k: [] for k in impls}
        for r in impls.values():
            f(r)
        for _ in range(rounds):
            for k, r in impls.items():
                t0, c0 = time.perf_counter(), time.process_time()
                f(r)
                wall[k].append(time.perf_counter() - t0)
                cpu[k].append(time.process_time() - c0)
        mem = {k: _peak_beyond_output(lambda r=r, f=f: f(r))[0] for k, r in impls.items()}
        w = {k: statistics.median(v) for k, v in wall.items()}
        c = {k: statistics.median(v) for k, v in cpu.items()}
        ratios[name] = (w["fg.random"] / w["baseline"], c["fg.random"] / c["baseline"])
        print(f"| {name} | {w['fg.random']:.3f} | {w['baseline']:.3f} | {ratios[name][0]:.2f} "
              f"| {c['fg.random']:.3f} | {c['baseline']:.3f} | {ratios[name][1]:.2f} "
              f"| {mem['fg.random'] / 2**20:.1f} | {mem['baseline'] / 2**20:.1f} |")
    return ratios


# ---------------------------------------------------------------------------------------------
# GPT-2 small's initialization

def _gpt2_child(which, baseline_rev):
    import funcgrad as fg
    from funcgrad import initializers
    from funcgrad.models import gpt2
    if which == "baseline":
        initializers.random = load_baseline(baseline_rev)  # the samplers the initializers call
    gpt2.init(0, gpt2.default_config(n_layer=1, n_embd=8, n_head=2, vocab_size=64))  # warm-up
    tracemalloc.start()
    t0, c0 = time.perf_counter(), time.process_time()
    params = gpt2.init(0, gpt2.default_config())
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    leaves = [p for p in fg.tree_util.tree_leaves(params) if hasattr(p, "nbytes")]
    nbytes = sum(p.nbytes for p in leaves)
    print(f"wall={wall}")
    print(f"cpu={cpu}")
    print(f"peak_bytes={peak}")
    print(f"param_bytes={nbytes}")
    print(f"params={sum(p.size for p in leaves)}")


def bench_gpt2(baseline_rev):
    print(f"\n### GPT-2 small's parameters, models.gpt2.init (one process each)\n"
          f"{load_note()}\n")
    print("| samplers | parameters | wall s | CPU s | peak MiB beyond the parameters |")
    print("| --- | --- | --- | --- | --- |")
    out = {}
    for which in ("fg.random", "baseline"):
        v = peak_in_subprocess("benchmarks.random_draws", "--gpt2-child", which,
                               "--baseline", baseline_rev)
        beyond = int(v["peak_bytes"]) - int(v["param_bytes"])
        out[which] = float(v["wall"])
        print(f"| {which} | {int(v['params']):,} | {float(v['wall']):.2f} | "
              f"{float(v['cpu']):.2f} | {beyond / 2**20:.0f} |")
    return out["fg.random"] / out["baseline"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1M values, 3 rounds, no GPT-2")
    ap.add_argument("--size", type=int, help="values a draw (default 4,000,000; quick 1,000,000)")
    ap.add_argument("--rounds", type=int, help="interleaved rounds (default 5; quick 3)")
    ap.add_argument("--only", choices=["draws", "gpt2"], help="run one part")
    ap.add_argument("--baseline", default=BASELINE, help=f"git revision (default {BASELINE})")
    ap.add_argument("--gpt2-child", metavar="WHICH", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.gpt2_child:
        _gpt2_child(args.gpt2_child, args.baseline)
        return
    n = args.size or (1_000_000 if args.quick else 4_000_000)
    rounds = args.rounds or (3 if args.quick else 5)
    summary = {}
    if args.only in (None, "draws"):
        for name, (w, c) in bench_draws(n, rounds, args.baseline).items():
            summary[f"{name}: fg.random / baseline wall, CPU"] = f"{w:.2f}, {c:.2f}"
    if args.only == "gpt2" or args.only is None and not args.quick:
        summary["GPT-2 small init: fg.random / baseline wall"] = f"{bench_gpt2(args.baseline):.2f}"
    print("\n### summary\n")
    for k, v in summary.items():
        print(f"- {k}: {v}")


if __name__ == "__main__":
    sys.exit(main())
