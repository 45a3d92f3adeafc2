"""jit's cache of compiled programs: one bounded LRU shared by every jitted function, and the
explanations of why a function traced again.

Each jitted function keeps its own table (signature -> compiled program) so that a call is one
dictionary lookup; the bound is global, as JAX's: the `jit_cache_size` setting (default 4096
programs, JAX's tracing-cache size; 0 = unbounded) counts the programs of all functions
together, and when a new one would exceed it the least recently used program is dropped (it is
traced and compiled again if its signature comes back). `clear_cache()` of one function, or
`fg.clear_caches()` for all, drops the programs, and with them their generated code, compiled
kernels and captured constants.

With the `explain_cache_misses` setting, every trace after the first logs why (which argument
changed, from what to what), and a function that has traced many times (8, 16, 32, ...) logs
which arguments vary and what to do about it. Without the setting, a function that traces 32
times logs that once, with how to find out more.
"""

from __future__ import annotations

import itertools
import logging
import weakref

import numpy as np

from .. import config, tree_util

log = logging.getLogger("funcgrad.jit")

__all__ = ["FunctionCache", "clear_caches", "cache_size"]

_clock = itertools.count()
_tables: "weakref.WeakSet[FunctionCache]" = weakref.WeakSet()
_total = [0]          # programs in all tables
_ALWAYS_WARN_AT = 32  # retraces of one function logged without explain_cache_misses


class FunctionCache:
    """The compiled programs of one jitted function, by signature, and its tracing history."""

    def __init__(self, name):
        self.name = name
        self.table = {}        # signature key -> entry (with a `used` tick)
        self.traces = 0        # signatures traced so far (also those evicted since)
        self.seen = {}         # argument path -> distinct descriptions seen ("f32[3]", ...)
        self.last_key = None
        _tables.add(self)

    def __del__(self):
        _total[0] -= len(self.table)

    def get(self, key):
        entry = self.table.get(key)
        if entry is not None:
            entry.used = next(_clock)
        return entry

    def put(self, key, entry):
        entry.used = next(_clock)
        self.table[key] = entry
        _total[0] += 1
        limit = config.read("jit_cache_size")
        if limit and _total[0] > limit:
            _evict(_total[0] - limit)

    def clear(self):
        _total[0] -= len(self.table)
        self.table.clear()
        self.last_key = None

    def __len__(self):
        return len(self.table)

    # -- explanations --
    def record_miss(self, key, leaf_paths, statics):
        """Count a trace, remember what its arguments looked like, and log what
        `explain_cache_misses` asks for."""
        explain = config.read("explain_cache_misses")
        if explain and self.traces:
            log.warning("%s", explain_miss(self.name, self.last_key, key, leaf_paths))
        self.traces += 1
        _, leaves, _, _ = key
        for path, leaf in zip(leaf_paths, leaves):
            self.seen.setdefault(path, set()).add(describe(leaf))
        if statics:
            self.seen.setdefault("static arguments", set()).add(repr(statics))
        n = self.traces
        if explain and n >= 8 and n & (n - 1) == 0 or not explain and n == _ALWAYS_WARN_AT:
            log.warning("%s", self.retrace_summary())
        self.last_key = key

    def retrace_summary(self):
        varying = {p: s for p, s in self.seen.items() if len(s) > 1}
        lines = [f"jit({self.name}) has traced and compiled {self.traces} times, once per new "
                 "input signature."]
        for path, descs in sorted(varying.items(), key=lambda kv: -len(kv[1]))[:5]:
            shown = sorted(descs)[:6]
            more = f", ... ({len(descs)} in all)" if len(descs) > 6 else ""
            lines.append(f"  {path} took {len(descs)} different types: "
                         f"{', '.join(shown)}{more}")
        lines.append(
            "Each new shape, dtype or static value traces the function again. To trace less: "
            "pad inputs to a few bucket sizes (e.g. powers of two, with a mask for the padding); "
            "pass Python values that select the program (sizes, flags) with static_argnums / "
            "static_argnames, and keep them few; keep dtypes fixed (Python scalars never "
            "retrace). Set fg.config.update('explain_cache_misses', True) to see each retrace's "
            "cause; the cache keeps the jit_cache_size most recently used programs.")
        return "\n".join(lines)


def _evict(n):
    """Drop the `n` least recently used programs of all functions."""
    entries = [(e.used, table, key) for table in list(_tables)
               for key, e in table.table.items()]
    entries.sort(key=lambda t: t[0])
    for _, table, key in entries[:n]:
        if table.table.pop(key, None) is not None:
            _total[0] -= 1


def clear_caches():
    """Drop every jitted function's compiled programs (as `jax.clear_caches`)."""
    for table in list(_tables):
        table.clear()


def cache_size():
    """Programs held by all jitted functions together."""
    return _total[0]


def describe(leaf_key):
    """A signature's description of one leaf: 'float32[3, 4]', 'a Python float'."""
    if isinstance(leaf_key, type):
        return f"a Python {leaf_key.__name__}"
    shape, dtype = leaf_key[0], leaf_key[1]
    return f"{np.dtype(dtype).name}{list(shape)}"


def leaf_paths(in_tree):
    """'argument 0', "keyword argument 'x'['w']", ... for each leaf of a call's (args, kwargs)."""
    out = []
    for path, _ in tree_util.tree_flatten_with_path(
            tree_util.tree_unflatten(in_tree, [0] * in_tree.num_leaves))[0]:
        text = tree_util.keystr(path)
        if text.startswith("[0]["):
            rest = text[4:]
            i, tail = rest[:rest.index("]")], rest[rest.index("]") + 1:]
            out.append(f"argument {i}{tail}")
        elif text.startswith("[1]"):
            out.append(f"keyword argument {text[3:]}")
        else:
            out.append(text)
    return out


def explain_miss(name, old, new, paths):
    if old is None:
        return f"jit({name}): tracing for the first time"
    (otree, oleaves, ostat, oplace), (ntree, nleaves, nstat, nplace) = old, new
    reasons = []
    if oplace[:2] != nplace[:2]:
        reasons.append("the default backend changed")
    if oplace[2:] != nplace[2:]:
        reasons.append(f"the named axes bound around the call changed: "
                       f"{[a[:2] for a in oplace[2]]} -> {[a[:2] for a in nplace[2]]}")
    if otree != ntree:
        reasons.append(f"the argument structure changed: {otree} -> {ntree}")
    else:
        for path, a, b in zip(paths, oleaves, nleaves):
            if a != b:
                reasons.append(f"{path} changed from {describe(a)} to {describe(b)}")
    if ostat != nstat:
        reasons.append(f"static arguments changed: {ostat} -> {nstat}")
    return f"jit({name}) traced again because " + "; ".join(reasons or ["of an unknown change"])
