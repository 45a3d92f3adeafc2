"""Data-parallel training at 1, 2 and 4 processes: step time, ZeRO memory, kill-and-resume.

    OMP_NUM_THREADS=1 python benchmarks/data_parallel_scaling.py --part all      # everything
    OMP_NUM_THREADS=1 mpiexec -n 2 python benchmarks/data_parallel_scaling.py    # --part scaling

Parts (`--part`):

- `scaling` (default; under mpiexec or not): for each MLP width, `step` is the replicated
  data-parallel step (fg.distributed.make_train_step, jitted, on this rank's shard of a fixed
  global batch), `compute` the same step with the collectives made identities (a one-process
  group, same shard), `allreduce` one MPI allreduce of a float32 buffer the size of the gradient.
- `zero` (under mpiexec -n N): an MLP 32-W-W-1 (W = 2048: 4.3 M parameters) with Adam; the
  replicated step and ZeRO stages 1 (`shard="optimizer"`) and 2 (`shard="gradients"`), timed
  interleaved in one job, and the bytes per rank of `fg.distributed.memory_report`.
- `rss` (under mpiexec -n N, one `--shard` per job): the peak RSS per rank of a few steps, above
  the RSS before the model is built (each mode in a fresh job: peak RSS only grows; the driver
  sets MALLOC_MMAP_THRESHOLD_ so that freed arrays leave the RSS at once, and takes the median
  of 3 jobs).
- `kills` (driver): trains under `mpiexec -n 2` with a sharded checkpoint every 2 steps and
  kills a random rank (SIGKILL) at a random moment, `--kills` times, resuming each time from the
  latest checkpoint. Every checkpoint left on disk must load (on one process, resharded) and
  hold the parameters of the uninterrupted run at its step, bit for bit, and the run that
  finishes must end where the uninterrupted run ends.
- `all` (driver): `zero` and `rss` at 1, 2 and 4 processes, then `kills`.

Medians; rank 0 prints. On a machine with fewer cores than processes the ranks share cores:
say so with the figures.
"""

import argparse
import functools
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

import funcgrad as fg
import funcgrad.distributed as dist
import funcgrad.numpy as fnp
from funcgrad import models, optim

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# glibc returns freed blocks above this size to the system at once (no dynamic threshold), so
# the peak RSS follows the arrays alive rather than what malloc kept from earlier steps.
_EXACT_RSS = {"MALLOC_MMAP_THRESHOLD_": "131072"}
SHARDS = (None, "optimizer", "gradients")


def loss_fn(params, x, y):
    return fnp.mean((models.mlp.apply(params, x) - y) ** 2)


def median_ms(fns, reps, group):
    """Medians in ms of each of `fns`, run interleaved (the machine's drift hits all alike)."""
    times = [[] for _ in fns]
    for _ in range(reps):
        for fn, ts in zip(fns, times):
            group.barrier()
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
    return [1e3 * float(np.median(ts)) for ts in times]


def batch(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 32)).astype(np.float32)
    return x, np.sin(x[:, :1])


def init_params(width):
    """The parameters of models.mlp for 32-W-W-1, drawn with NumPy (default_rng(0)): fg.random
    peaks at ~90 bytes per parameter, which would make the setup, not the training, the peak
    RSS measured."""
    rng = np.random.default_rng(0)
    sizes = [32, width, width, 1]
    return {"layers": [{"w": (rng.normal(size=(a, b)) / np.sqrt(a)).astype(np.float32),
                        "b": np.zeros(b, np.float32)} for a, b in zip(sizes, sizes[1:])]}


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def part_scaling(args, world):
    xs, ys = dist.shard(batch(args.batch))
    if world.rank == 0:
        print(f"{world.size} process(es), global batch {args.batch}")
        print(f"{'width':>6} {'params':>9} {'step ms':>8} {'compute ms':>10} {'allreduce ms':>12}")
    for width in [int(w) for w in args.widths.split(",")]:
        params = models.mlp.init(fg.random.key(0), [32, width, width, 1])
        n = sum(int(np.size(p)) for p in fg.tree_util.tree_leaves(params))
        tx = optim.sgd(1e-3)
        state = tx.init(params)
        full = dist.make_train_step(loss_fn, tx)
        local = dist.make_train_step(loss_fn, tx, group=dist.LocalGroup())
        full(params, state, xs, ys), local(params, state, xs, ys)  # compile
        buf = np.ones(n, np.float32)
        fns = [functools.partial(full, params, state, xs, ys),
               functools.partial(local, params, state, xs, ys),
               functools.partial(world.allreduce, buf)]
        t_step, t_comp, t_red = median_ms(fns, args.reps, world)
        if world.rank == 0:
            print(f"{width:>6} {n:>9} {t_step:>8.2f} {t_comp:>10.2f} {t_red:>12.3f}", flush=True)


def part_zero(args, world):
    xs, ys = dist.shard(batch(args.batch))
    params = init_params(args.width)
    fns, rows = [], []
    for shard in SHARDS:
        step = dist.make_train_step(loss_fn, optim.adam(1e-4), shard=shard)
        state = step.init(params)
        step(params, state, xs, ys)  # compile
        fns.append(functools.partial(step, params, state, xs, ys))
        rows.append(step.memory_report(params, state))
    times = median_ms(fns, args.reps, world)
    if world.rank == 0:
        out = {"n": world.size, "times": times,
               "bytes": [[dict(r) for r in report.ranks] for report in rows]}
        print("RESULT " + json.dumps(out), flush=True)


def part_rss(args, world):
    shard = None if args.shard == "none" else args.shard
    xs, ys = dist.shard(batch(args.batch))
    base = rss_bytes()
    params = init_params(args.width)
    step = dist.make_train_step(loss_fn, optim.adam(1e-4), shard=shard)
    state = step.init(params)
    for _ in range(3):
        params, state, _ = step(params, state, xs, ys)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    peaks = [int(p) for p in np.asarray(world.allgather(np.asarray(peak, np.int64))).ravel()]
    if world.rank == 0:
        print("RESULT " + json.dumps({"n": world.size, "shard": args.shard, "peaks": peaks}),
              flush=True)


def part_train(args, world):
    """The kill-and-resume job: resumes from `--ckpt` if it holds a checkpoint."""
    with open(os.path.join(args.out, f"pid.{world.rank}"), "w") as f:
        f.write(str(os.getpid()))
    params = models.mlp.init(fg.random.key(0), [32, 256, 256, 1])
    step = dist.make_train_step(loss_fn, optim.adamw(1e-3), shard="gradients")
    state = {"params": params, "opt": step.init(params), "step": 0}
    if dist.latest_checkpoint(args.ckpt):
        state = dist.load_checkpoint(args.ckpt, state)
    p, s = state["params"], state["opt"]
    for i in range(state["step"], args.steps):
        p, s, _ = step(p, s, *dist.shard(batch(256, seed=i)))
        if (i + 1) % 2 == 0:
            dist.save_checkpoint(args.ckpt, {"params": p, "opt": s, "step": i + 1})
            if args.record and world.rank == 0:
                np.savez(os.path.join(args.out, f"ref_{i + 1}.npz"), *fg.tree_util.tree_leaves(p))


# ----------------------------------------------------------------------------------------------
# The driver: launches the parts under mpiexec


def _env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
                HYDRA_IFACE="lo", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")


def _cmd(n, *args):
    cmd = [sys.executable, os.path.abspath(__file__), *args]
    return (["mpiexec", "-n", str(n), "-host", "localhost"] + cmd) if n > 1 else cmd


def _result(n, *args, env_extra=None):
    env = dict(_env(), **(env_extra or {}))
    if n == 1:
        for v in dist._LAUNCHER_VARS:
            env.pop(v, None)
    out = subprocess.run(_cmd(n, *args), env=env, capture_output=True, text=True, check=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def _mib(b):
    return b / 2 ** 20


def drive_zero(args):
    ns = [int(n) for n in args.procs.split(",")]
    print(f"## ZeRO: MLP 32-{args.width}-{args.width}-1 ({_params(args.width) / 1e6:.2f} M "
          f"parameters), Adam, global batch {args.batch}, {os.cpu_count()} cores "
          f"({fg_load()})\n")
    print("| procs | shard | step ms | × replicated | optimizer MiB/rank | × replicated | "
          "gradients MiB/rank | peak RSS MiB/rank (max) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for n in ns:
        z = _result(n, "--part", "zero", "--width", str(args.width), "--batch", str(args.batch),
                    "--reps", str(args.reps))
        peaks = {}
        for _ in range(3):  # interleaved fresh jobs; the median of their largest rank
            for s in ("none", "optimizer", "gradients"):
                got = _result(n, "--part", "rss", "--shard", s, "--width", str(args.width),
                              "--batch", str(args.batch), env_extra=_EXACT_RSS)
                peaks.setdefault(s, []).append(max(got["peaks"]))
        peaks = {s: float(np.median(v)) for s, v in peaks.items()}
        for k, shard in enumerate(SHARDS):
            ranks = z["bytes"][k]
            opt = max(r["optimizer"] for r in ranks)
            grads = max(r["gradients"] for r in ranks)
            rep_opt = max(r["optimizer"] for r in z["bytes"][0])
            print(f"| {n} | {shard} | {z['times'][k]:.1f} | {z['times'][k] / z['times'][0]:.2f} "
                  f"| {_mib(opt):.2f} | {opt / rep_opt:.4f} (1/{n} = {1 / n:.4f}) | "
                  f"{_mib(grads):.2f} | {_mib(peaks[str(shard).lower()]):.1f} |", flush=True)


def _params(width):
    return 32 * width + width + width * width + width + width + 1


def fg_load():
    try:
        return f"load average {os.getloadavg()[0]:.2f}"
    except OSError:
        return "load unknown"


def _launch_train(out, ckpt, steps, record=False):
    for f in os.listdir(out):
        if f.startswith("pid."):
            os.unlink(os.path.join(out, f))
    args = ["--part", "train", "--out", out, "--ckpt", ckpt, "--steps", str(steps)]
    proc = subprocess.Popen(_cmd(2, *args, *(["--record"] if record else [])), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    pids = [os.path.join(out, f"pid.{r}") for r in range(2)]
    while proc.poll() is None and not all(os.path.exists(p) for p in pids):
        time.sleep(0.01)
    return proc, time.monotonic()


def drive_kills(args):
    rng = random.Random(args.seed)
    work = tempfile.mkdtemp(prefix="fg-kills-")
    try:
        ref_dir, run_dir = os.path.join(work, "ref"), os.path.join(work, "run")
        os.makedirs(ref_dir)
        os.makedirs(run_dir)
        proc, started = _launch_train(ref_dir, os.path.join(ref_dir, "ckpt"), args.steps, True)
        if proc.wait() != 0:
            raise SystemExit(f"the uninterrupted run failed:\n{proc.stderr.read()}")
        t_train = time.monotonic() - started  # from the ranks' start to the end of the job
        ref = {s: _leaves(os.path.join(ref_dir, f"ref_{s}.npz"))
               for s in range(2, args.steps + 1, 2)}
        ckpt = os.path.join(run_dir, "ckpt")
        kills = torn = corrupted = checked = mismatched = launches = restarts = late = 0
        times = []
        while True:
            latest = dist.latest_checkpoint(ckpt)
            done = _load_one(latest)["step"] if latest else 0
            launches += 1
            proc, started = _launch_train(run_dir, ckpt, args.steps)
            killed = False
            if kills < args.kills:  # a random moment of what is left of the run
                time.sleep(rng.uniform(0, t_train * (1 - done / args.steps) + 0.3))
                victim = rng.randrange(2)
                if proc.poll() is None:
                    with open(os.path.join(run_dir, f"pid.{victim}")) as f:
                        pid = int(f.read())
                    t_kill = time.monotonic()
                    try:
                        os.kill(pid, signal.SIGKILL)
                        killed = True
                    except ProcessLookupError:
                        pass
            _, err = proc.communicate(timeout=120)
            latest = dist.latest_checkpoint(ckpt)
            finished = latest is not None and _load_one(latest)["step"] == args.steps
            if killed and proc.returncode == 0 and finished:
                killed = False  # it landed after the work was done (in MPI_Finalize): no fault
                late += 1
            if killed:
                times.append(time.monotonic() - t_kill)
                if proc.returncode == 0:
                    raise SystemExit(f"a job killed before its end returned 0:\n{err}")
                kills += 1
            elif proc.returncode != 0:
                raise SystemExit(f"an uninterrupted job failed:\n{err}")
            # Every checkpoint on disk loads (on this one process: resharded from 2 ranks) and
            # holds the uninterrupted run's parameters at its step, bit for bit.
            for name in sorted(os.listdir(ckpt)) if os.path.isdir(ckpt) else []:
                folder = os.path.join(ckpt, name)
                if not os.path.exists(os.path.join(folder, "manifest.safetensors")):
                    torn += 1
                    continue
                checked += 1
                try:
                    got = _load_one(folder)
                except Exception as e:  # noqa: BLE001
                    print(f"corrupted: {folder}: {e}")
                    corrupted += 1
                    continue
                if not all(np.array_equal(a, b) for a, b in
                           zip(fg.tree_util.tree_leaves(got["params"]), ref[got["step"]])):
                    mismatched += 1
            if not killed and proc.returncode == 0:
                if kills >= args.kills:
                    break
                restarts += 1  # finished before the kill: train again from scratch
                final = _load_one(dist.latest_checkpoint(ckpt))
                assert final["step"] == args.steps
                shutil.rmtree(ckpt)
        final = _load_one(dist.latest_checkpoint(ckpt))
        same = (final["step"] == args.steps and all(
            np.array_equal(a, b) for a, b in zip(fg.tree_util.tree_leaves(final["params"]),
                                                 ref[args.steps])))
        print(f"\n## Kill and resume: MLP 32-256-256-1, AdamW, shard='gradients', 2 processes, "
              f"{args.steps} steps, a checkpoint every 2 steps ({fg_load()})\n")
        print(f"- {kills} random SIGKILLs of a random rank over {launches} launches "
              f"({restarts} runs finished before their kill, {late} of them killed after their "
              f"last save, with status 0, and started over); an uninterrupted run takes "
              f"{t_train:.1f} s from the ranks' start")
        print(f"- every killed job ended with a non-zero status; seconds from the kill to the "
              f"end of mpiexec: median {np.median(times):.2f}, max {max(times):.2f}")
        print(f"- checkpoint folders checked after each job: {checked} complete ones loaded on "
              f"1 process, {corrupted} corrupted, {mismatched} differing from the "
              f"uninterrupted run; {torn} sightings of a save cut short (no manifest: ignored, "
              "swept by the next save)")
        print(f"- the resumed run ends at step {final['step']}, "
              f"{'bit for bit equal to' if same else 'DIFFERENT from'} the uninterrupted run")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _leaves(path):
    with np.load(path) as z:
        return [z[k] for k in sorted(z.files, key=lambda k: int(k.split("_")[1]))]


def _load_one(folder):
    params = models.mlp.init(fg.random.key(0), [32, 256, 256, 1])
    step = dist.make_train_step(loss_fn, optim.adamw(1e-3), shard="gradients",
                                group=dist.LocalGroup())
    like = {"params": params, "opt": step.init(params), "step": 0}
    return dist.load_checkpoint(folder, like, group=dist.LocalGroup())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", default="scaling",
                    choices=["scaling", "zero", "rss", "train", "kills", "all"])
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--widths", default="64,256,1024")
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--procs", default="1,2,4")
    ap.add_argument("--shard", default="none")
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=".")
    ap.add_argument("--ckpt", default="ckpt")
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    if args.part == "kills":
        return drive_kills(args)
    if args.part == "all":
        drive_zero(args)
        return drive_kills(args)
    world = dist.init()
    {"scaling": part_scaling, "zero": part_zero, "rss": part_rss, "train": part_train}[
        args.part](args, world)


if __name__ == "__main__":
    main()
