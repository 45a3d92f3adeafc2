"""Timing and memory helpers shared by the benchmarks: medians, interleaving, peak memory."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time


def median_time(fn, repeats, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved(fns: dict, rounds=7, repeats=20, warmup=3):
    """Median seconds per call of each function, measured in alternating rounds (A B A B ...)
    so that load from other processes hits all of them alike. Also returns the spread."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    per = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(repeats):
                fn()
            per[k].append((time.perf_counter() - t0) / repeats)
    return {k: (statistics.median(v), min(v), max(v)) for k, v in per.items()}


def peak_in_subprocess(module, *args):
    """Run `python -m module *args` in a fresh process; it prints `peak_bytes=N` lines."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                         env=env, check=True).stdout
    values = {}
    for line in out.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            values[k.strip()] = v.strip()
    return values


def rss_mib():
    """This process's resident set size now, in MiB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib():
    """This process's peak resident set size so far, in MiB (Linux: ru_maxrss in KiB)."""
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_note():
    try:
        return f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"
    except OSError:
        return ""
