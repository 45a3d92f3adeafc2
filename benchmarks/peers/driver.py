"""Cross-library comparison of the BENCHMARKS.md workloads, each implementation in its own process.

    python -m benchmarks.peers                        # every workload, every installed library
    python -m benchmarks.peers --quick                # fewer rounds and steps (a few minutes)
    python -m benchmarks.peers --workloads mlp-small,hessian --impls numpy,funcgrad,jax
    python -m benchmarks.peers --markdown bench.md    # also write the tables (with date, machine)

For each workload the driver starts one worker process per implementation (numpy, funcgrad, and
autograd / jax / torch when installed; `benchmarks/peers/worker.py`), one after another: each
builds the same arrays, makes its first call (trace + compile + first step, timed) and its
warm-up steps. Then, in rounds, it asks each live process in turn to time a block of steps
(A B C A B C ...), so that load from other processes falls on all of them alike; a row's step
time is the median over rounds of its block's median step, and its ratio to the NumPy floor is
the median over rounds of the per-round ratio. All implementations run the same number of steps,
so the training workloads must end at the same loss: the table prints it and flags a row that
disagrees with the reference (NumPy, else the first row). The two finetune-head workloads run in
one interleaved group, so that (b) / (a) is a per-round ratio too.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.util
import json
import os
import platform
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from . import common as C
from .worker import IMPLS, TAG, available_cpus

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GROUPS = {"finetune-head-a": "finetune-head", "finetune-head-b": "finetune-head"}
WIDE = 0.5  # a row's spread (max - min of the round medians) beyond this fraction is flagged


# ---------------------------------------------------------------------------------------------
# Worker processes


class Worker:
    """One `python -m benchmarks.peers.worker --serve` process: protocol lines arrive on a queue."""

    def __init__(self, impl, variant, workload, warmup, threads):
        self.impl, self.variant, self.workload = impl, variant, workload
        self.label = impl + (f" {variant}" if variant else "")
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.stderr = tempfile.TemporaryFile(mode="w+")
        cmd = [sys.executable, "-m", "benchmarks.peers.worker", "--serve", "--impl", impl,
               "--workload", workload, "--variant", variant, "--warmup", str(warmup),
               "--threads", str(threads)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True, cwd=ROOT, env=env)
        self.lines = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.info, self.error, self.rounds, self.result = {}, None, [], {}

    def _pump(self):
        for line in self.proc.stdout:
            if line.startswith(TAG):
                self.lines.put(json.loads(line[len(TAG):]))
        self.lines.put(None)

    def _stderr_tail(self):
        self.stderr.seek(0)
        lines = [s for s in self.stderr.read().strip().splitlines() if s.strip()]
        return lines[-1][:300] if lines else ""

    def receive(self, timeout):
        """The next protocol message, or None after recording an error."""
        try:
            msg = self.lines.get(timeout=timeout)
        except queue.Empty:
            msg = {"error": f"no answer in {timeout:.0f} s"}
            self.proc.kill()
        if msg is None:
            self.proc.wait()
            msg = {"error": f"exited with code {self.proc.returncode}: {self._stderr_tail()}"}
        if "error" in msg:
            self.error = self.error or msg["error"]
            self.close()
            return None
        return msg

    def send(self, text):
        try:
            self.proc.stdin.write(text + "\n")
            self.proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError) as e:
            self.error = self.error or f"{type(e).__name__}: {self._stderr_tail()}"
            self.close()
            return False

    @property
    def alive(self):
        return self.error is None and self.proc.poll() is None

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def run_group(workloads, rows, rounds, blocks, warmup, threads, timeout, log):
    """Start every (workload, impl, variant) worker of one group, interleave its rounds, collect
    the results. `blocks[workload]` is the steps per block."""
    workers = []
    for w in workloads:
        for impl, variant in rows[w]:
            wk = Worker(impl, variant, w, warmup[w], threads)
            msg = wk.receive(timeout)          # started one at a time: first calls don't overlap
            if msg is not None:
                wk.info = msg
            log(f"  {w}: {wk.label} " + (f"ready (first call {fmt_time(msg['first_call_s'])})"
                                          if msg else f"failed: {wk.error}"))
            workers.append(wk)
    for _ in range(rounds):
        for wk in workers:
            if wk.alive and wk.send(f"run {blocks[wk.workload]}"):
                msg = wk.receive(timeout)
                if msg is not None:
                    wk.rounds.append(statistics.median(msg["times_s"]))
    for wk in workers:
        if wk.alive and wk.send("done"):
            msg = wk.receive(timeout)
            if msg is not None:
                wk.result = msg
                wk.proc.wait()
        wk.close()
    return workers


# ---------------------------------------------------------------------------------------------
# Tables


def fmt_time(s):
    if s is None:
        return "–"
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1e3:.2f} ms" if s < 0.1 else f"{s * 1e3:.0f} ms"
    return f"{s:.2f} s"


def fmt_ratio(r):
    if r is None:
        return "–"
    return f"{r:.2f}" if r < 10 else f"{r:.1f}" if r < 100 else f"{r:.0f}"


def fmt_num(x):
    return "–" if x is None else f"{x:.6g}"


def _paired_ratio(a, b):
    n = min(len(a), len(b))
    return statistics.median(a[i] / b[i] for i in range(n)) if n else None


def _agreement(value, ref, rtol):
    """'' when it agrees with the reference, else a flag."""
    if value is None or ref is None:
        return ""
    rel = abs(value - ref) / max(abs(ref), 1e-30)
    return "" if rel <= rtol else f" ⚠ rel. diff {rel:.1e}"


def workload_table(name, workers, rounds, block, warmup):
    wl = C.WORKLOADS[name]
    ok = [w for w in workers if w.rounds]
    floor = next((w for w in ok if w.impl == "numpy"), None)
    steps = 1 + warmup + rounds * block
    lines = [f"### {name}", "", wl.title + ".", "",
             f"{rounds} rounds × {block} steps after the first call and {warmup} warm-up "
             f"step{'s' if warmup != 1 else ''}; "
             + (f"loss after {steps} steps (the loss of the last step, before its update)."
                if wl.train else f"every implementation evaluates the same function {steps} "
                                 "times; its value and the norm of its outputs are printed."),
             ""]
    has_loss = any(w.result.get("loss") is not None for w in ok)
    has_norm = any(w.result.get("norm") is not None for w in ok)
    head = ["impl", "median step", "ratio to NumPy floor", "round medians min–max", "first call",
            "peak RSS MiB (after import)"]
    if has_loss:
        head.append("loss" if wl.train else "value")
    if has_norm:
        head.append(wl.check or "‖output‖")
    lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    ref = floor if floor is not None and floor.result else next((w for w in ok if w.result), None)
    notes, medians = [], {}
    for w in workers:
        if not w.rounds:
            notes.append(f"- {w.label}: {w.error or 'no result'}")
            lines.append(f"| {w.label} | failed | – | – | – | – |" + " – |" * (len(head) - 6))
            continue
        med = statistics.median(w.rounds)
        medians[w.label] = med
        lo, hi = min(w.rounds), max(w.rounds)
        wide = (hi - lo) / med > WIDE
        ratio = _paired_ratio(w.rounds, floor.rounds) if floor is not None else None
        label = w.label + (" (floor)" if w is floor else "")
        cells = [label, fmt_time(med), fmt_ratio(ratio),
                 f"{fmt_time(lo)}–{fmt_time(hi)}" + (" (wide)" if wide else ""),
                 fmt_time(w.info.get("first_call_s")),
                 f"{w.result['peak_rss_mib']:.0f} ({w.info.get('rss_import_mib', 0):.0f})"
                 if w.result else "–"]
        if w.error:
            notes.append(f"- {w.label}: {w.error} (after {len(w.rounds)} rounds)")
        if has_loss:
            v = w.result.get("loss")
            flag = _agreement(v, ref.result.get("loss"), C.LOSS_RTOL) if w is not ref else ""
            cells.append(fmt_num(v) + flag)
            if flag:
                notes.append(f"- **{w.label} disagrees with {ref.label}**: "
                             f"{'loss' if wl.train else 'value'} {v!r} vs "
                             f"{ref.result.get('loss')!r}")
        if has_norm:
            v = w.result.get("norm")
            flag = _agreement(v, ref.result.get("norm"), C.CHECK_RTOL) if w is not ref else ""
            cells.append(fmt_num(v) + flag)
            if flag:
                notes.append(f"- **{w.label} disagrees with {ref.label}**: {wl.check} {v!r} vs "
                             f"{ref.result.get('norm')!r}")
        lines.append("| " + " | ".join(cells) + " |")
    if notes:
        lines += [""] + notes
    return lines, medians, {w.label: (_paired_ratio(w.rounds, floor.rounds) if floor else None)
                            for w in ok}


def finetune_ratios(workers):
    """Per implementation, the median over rounds of (b) / (a)."""
    by = {}
    for w in workers:
        if w.rounds:
            by.setdefault(w.label, {})[w.workload] = w.rounds
    out = []
    for label, d in by.items():
        if "finetune-head-a" in d and "finetune-head-b" in d:
            r = _paired_ratio(d["finetune-head-b"], d["finetune-head-a"])
            out.append(f"{label} {r:.2f}")
    if not out:
        return []
    return ["", "(b) last block + head / (a) all parameters, per-round ratio: " + ", ".join(out)
            + " (funcgrad's target: <= 0.6)."]


def summary_table(summary, labels):
    lines = ["### summary: ratio to the NumPy floor (median step in brackets where there is no "
             "floor)", "", "| workload | NumPy floor | " + " | ".join(labels) + " |",
             "|" + " --- |" * (len(labels) + 2)]
    for name, (medians, ratios) in summary.items():
        floor = medians.get("numpy")
        cells = [name, fmt_time(floor)]
        for lab in labels:
            if lab not in medians:
                cells.append("–")
            elif ratios.get(lab) is not None:
                cells.append(fmt_ratio(ratios[lab]))
            else:
                cells.append(f"({fmt_time(medians[lab])})")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


# ---------------------------------------------------------------------------------------------
# Machine description


def _uptime():
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True,
                              timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        try:
            return "load average %.2f, %.2f, %.2f" % os.getloadavg()
        except OSError:
            return "?"


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_lines(threads, rounds, quick):
    return [f"- date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
            f"- machine: {platform.platform()}, {_cpu_model()}, {os.cpu_count()} CPUs; "
            f"Python {platform.python_version()}",
            f"- load at start (`uptime`): {_uptime()}",
            f"- threads: {threads} for every implementation (OMP / OpenBLAS / MKL thread counts, "
            "torch.set_num_threads"
            + (", XLA without its multi-threaded Eigen" if threads == 1 else
               ", the process's CPU affinity, which also bounds XLA's pool") + ")",
            f"- {rounds} interleaved rounds per workload{' (--quick)' if quick else ''}; each "
            "implementation in its own process"]


# ---------------------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 rounds of short blocks")
    ap.add_argument("--workloads", help="comma-separated (default: all): " + ", ".join(C.WORKLOADS))
    ap.add_argument("--impls", help="comma-separated (default: all installed): " + ", ".join(IMPLS))
    ap.add_argument("--rounds", type=int, help="interleaved rounds (default 7, --quick 3)")
    ap.add_argument("--threads", type=int, default=1,
                    help="threads for every library (default 1: reproducible on a shared machine)")
    ap.add_argument("--markdown", metavar="FILE", help="also write the tables to FILE")
    ap.add_argument("--timeout", type=float, default=900, help="seconds to wait for a worker")
    ap.add_argument("--list", action="store_true", help="list workloads and implementations")
    args = ap.parse_args(argv)

    names = args.workloads.split(",") if args.workloads else list(C.WORKLOADS)
    bad = [n for n in names if n not in C.WORKLOADS]
    impls = args.impls.split(",") if args.impls else list(IMPLS)
    bad += [i for i in impls if i not in IMPLS]
    if bad:
        ap.error(f"unknown {bad}; workloads: {list(C.WORKLOADS)}; impls: {list(IMPLS)}")
    threads = args.threads or available_cpus()
    rounds = args.rounds or (3 if args.quick else 7)

    mods, notes = {}, []
    for impl in impls:
        mod = importlib.import_module(f"benchmarks.peers.{impl}_impl")
        if importlib.util.find_spec(mod.LIBRARY) is None:
            notes.append(f"- {impl}: not installed, skipped (`pip install -e '.[benchmarks]'` "
                         "installs autograd, jax and torch)")
        else:
            mods[impl] = mod
    if args.list:
        for n, wl in C.WORKLOADS.items():
            have = [i for i in impls if n in importlib.import_module(
                f"benchmarks.peers.{i}_impl").WORKLOADS]
            print(f"{n:18s} {', '.join(have):40s} {wl.title}")
        print("\n".join(notes))
        return 0

    out = ["## Cross-library comparison (benchmarks/peers)", ""] + machine_lines(
        threads, rounds, args.quick) + notes + [""]
    print("\n".join(out), flush=True)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    groups = {}
    for n in names:
        groups.setdefault(GROUPS.get(n, n), []).append(n)
    summary, labels, versions = {}, [], {}
    failed = False
    t_start = time.perf_counter()
    for gname, wls in groups.items():
        rows = {w: [(impl, v) for impl, mod in mods.items() for v in mod.WORKLOADS.get(w, {})]
                for w in wls}
        blocks = {w: C.WORKLOADS[w].quick_block if args.quick else C.WORKLOADS[w].block
                  for w in wls}
        warmup = {w: C.WORKLOADS[w].warmup for w in wls}
        t0 = time.perf_counter()
        log(f"[{gname}] {sum(len(r) for r in rows.values())} processes")
        workers = run_group(wls, rows, rounds, blocks, warmup, threads, args.timeout, log)
        log(f"[{gname}] {time.perf_counter() - t0:.0f} s")
        text = []
        for w in wls:
            ws = [x for x in workers if x.workload == w]
            lines, medians, ratios = workload_table(w, ws, rounds, blocks[w], warmup[w])
            text += lines + [""]
            summary[w] = (medians, ratios)
            for x in ws:
                failed |= x.error is not None
                if x.info:
                    versions[x.impl] = x.info.get("version")
                if x.rounds and x.label not in labels and x.impl != "numpy":
                    labels.append(x.label)
        if gname == "finetune-head":
            text[-1:-1] = finetune_ratios(workers)
        print("\n".join(text), flush=True)
        out += text
    labels.sort(key=lambda lab: (IMPLS.index(lab.split()[0]), lab))
    tail = summary_table(summary, labels) + [
        "", "versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        f"load at the end (`uptime`): {_uptime()}; "
        f"{time.perf_counter() - t_start:.0f} s in all", ""]
    print("\n".join(tail), flush=True)
    out += tail
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("\n".join(out))
        log(f"wrote {args.markdown}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
