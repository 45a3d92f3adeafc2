"""`fg.jit(f).profile(*args)`: where a jitted function's time goes.

The function's program is compiled once more with a clock around each of its steps (an
equation, or a fusion group's compiled kernel), run `repeat` times on the arguments, and
reported as a table, slowest first: the median time of each step, its share of the total, what
it computes (primitive and shapes, or the equations of a fusion group) and the user's source
line that created it. Steps the table leaves out are summed in one last row.

    prof = fg.jit(step).profile(params, x, y)
    print(prof)                    # the table
    prof.rows[0]                   # the slowest step: a dict (time, share, what, where, ...)
"""

from __future__ import annotations

import statistics
import time

import numpy as np

__all__ = ["Profile", "profile"]


class Profile:
    """The per-step times of one jitted program (see the module doc)."""

    def __init__(self, name, rows, total, wall, repeat):
        self.name = name
        self.rows = rows          # dicts: time, share, what, where, kind, index
        self.total = total        # sum of the steps' median times (s)
        self.wall = wall          # median time of a whole call (s)
        self.repeat = repeat

    def table(self, top=25):
        """The table as text, the `top` slowest steps."""
        lines = [f"profile of {self.name}: {len(self.rows)} steps, median over {self.repeat} "
                 f"runs; steps sum to {_fmt(self.total)} (a whole call: {_fmt(self.wall)})",
                 "", f"{'time':>10} {'share':>6}  {'what':<58} where"]
        shown = self.rows[:top]
        for r in shown:
            lines.append(f"{_fmt(r['time']):>10} {r['share'] * 100:5.1f}%  {r['what'][:58]:<58} "
                         f"{r['where']}")
        rest = self.rows[top:]
        if rest:
            t = sum(r["time"] for r in rest)
            lines.append(f"{_fmt(t):>10} {t / max(self.total, 1e-30) * 100:5.1f}%  "
                         f"({len(rest)} more steps)")
        return "\n".join(lines)

    def __str__(self):
        return self.table()

    __repr__ = __str__


def _fmt(s):
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    return f"{s * 1e3:.3f} ms" if s < 1 else f"{s:.3f} s"


def _describe(eqn):
    if eqn.primitive.name == "fused":
        body = eqn.params["jaxpr"].jaxpr
        names = [e.primitive.name for e in body.eqns]
        head = ", ".join(names[:5]) + (f", ... ({len(names)})" if len(names) > 5 else "")
        last = body.eqns[-1]
        shape = last.invars[0].aval if last.primitive.name.startswith("reduce") else \
            body.outvars[0].aval
        return f"fused[{head}] {shape.str_short()}"
    ins = ", ".join(v.aval.str_short() for v in eqn.invars[:3])
    outs = ", ".join(v.aval.str_short() for v in eqn.outvars[:2])
    return f"{eqn.primitive.name} {ins} -> {outs}"


def _where(eqn):
    if eqn.primitive.name == "fused":
        lines = []
        for e in eqn.params["jaxpr"].jaxpr.eqns:
            si = e.source_info
            if si is not None and (si.file, si.line) not in lines:
                lines.append((si.file, si.line))
        if not lines:
            return "?"
        first = f"{_short(lines[0][0])}:{lines[0][1]}"
        return first + (f" (+{len(lines) - 1} lines)" if len(lines) > 1 else "")
    si = eqn.source_info
    return f"{_short(si.file)}:{si.line} ({si.function})" if si is not None else "?"


def _short(path):
    parts = path.replace("\\", "/").split("/")
    return "/".join(parts[-2:])


def profile(jit_function, args, kwargs, repeat=20, warmup=2, clock=time.perf_counter):
    """The Profile of `jit_function(*args, **kwargs)` (see the module doc). `clock`: what to
    read around each step (time.perf_counter: wall time; time.thread_time: this thread's CPU
    time, steadier on a loaded machine)."""
    from . import stages
    lowered = jit_function.lower(*args, **kwargs)
    traced = lowered.traced
    executable = stages.compile_program(lowered.program, traced.backend, traced.donated,
                                        profile=clock)
    if executable.times is None:
        raise NotImplementedError(f"profile: the {traced.backend.name} backend does not time "
                                  "its steps")
    compiled = stages.Compiled(lowered, executable)
    flat = jit_function.dynamic_leaves(args, kwargs)
    eqns = getattr(lowered.program, "jaxpr", lowered.program).eqns
    per_step = [[] for _ in eqns]
    walls = []
    for i in range(warmup + repeat):
        if jit_function.donate_argnums:
            flat_i = [x.copy() if isinstance(x, np.ndarray) else x for x in flat]
        else:
            flat_i = flat
        times = executable.times
        for k in range(len(times)):
            times[k] = 0.0
        t0 = clock()
        jit_function.run_compiled(compiled, flat_i)
        wall = clock() - t0
        if i >= warmup:
            walls.append(wall)
            for k, t in enumerate(times):
                per_step[k].append(t)
    medians = [statistics.median(ts) for ts in per_step]
    total = sum(medians)
    rows = [{"time": t, "share": t / total if total else 0.0, "what": _describe(e),
             "where": _where(e), "kind": "fusion group" if e.primitive.name == "fused" else
             "equation", "index": k, "primitive": e.primitive.name}
            for k, (t, e) in enumerate(zip(medians, eqns))]
    rows.sort(key=lambda r: -r["time"])
    return Profile(jit_function.__name__, rows, total, statistics.median(walls), repeat)
