"""Rematerialization: `checkpoint` (alias `remat`) and `print_saved_residuals`.

`checkpoint(f)` traces f to a program and applies it as one `remat_p` equation
(funcgrad/lax/remat.py). Reverse mode stores only that equation's inputs; its VJP re-runs
f's forward under a fresh reverse-mode trace during the backward pass, then backpropagates, so f's
intermediates live only while its own backward step runs. Under jit the recomputation is part of
the program's backward half; remat_p is not an inline call, so the optimizer does not merge the
recomputed forward with the original one.

`print_saved_residuals(f, *args)` lists what the backward pass of f keeps: each array's type, and
where it came from (an argument, or the user line of the operation that produced it).
"""

from __future__ import annotations

import functools

from .. import tree_util
from ..core import Tracer, as_value, bind, get_aval, is_float, new_trace, user_source_info
from ..interpreters import programs
from ..interpreters.reverse import GradTrace
from ..lax.remat import checkpoint_name, remat_p  # noqa: F401
from ._util import fun_name

__all__ = ["checkpoint", "remat", "print_saved_residuals", "saved_residuals",
           "checkpoint_policies", "checkpoint_name"]


class checkpoint_policies:
    """Saving policies (JAX's names): a policy is called as `policy(prim, *input_avals, **params)`
    for each equation of the checkpointed function and says whether the backward pass keeps its
    output (True) instead of recomputing it. The default (None, `nothing_saveable`) keeps only
    the inputs; `dots_saveable` keeps matmul outputs, so the backward pass recomputes only the
    cheap elementwise work between them."""

    @staticmethod
    def nothing_saveable(*_, **__):
        return False

    @staticmethod
    def everything_saveable(*_, **__):
        return True

    @staticmethod
    def dots_saveable(prim, *_, **__):
        return prim.name == "dot_general"

    checkpoint_dots = dots_saveable

    @staticmethod
    def dots_with_no_batch_dims_saveable(prim, *_, **params):
        return prim.name == "dot_general" and not params["dimension_numbers"][1][0]

    checkpoint_dots_with_no_batch_dims = dots_with_no_batch_dims_saveable

    @staticmethod
    def save_only_these_names(*names):
        """Keep the values labelled with fg.checkpoint_name(x, name) for one of `names`."""
        names = frozenset(names)
        return lambda prim, *_, **params: prim.name == "name" and params["name"] in names

    @staticmethod
    def save_any_names_but_these(*names):
        names = frozenset(names)
        return lambda prim, *_, **params: prim.name == "name" and params["name"] not in names

    @staticmethod
    def save_anything_except_these_names(*names):
        names = frozenset(names)
        return lambda prim, *_, **params: not (prim.name == "name" and params["name"] in names)

    @staticmethod
    def save_from_both_policies(policy_1, policy_2):
        return lambda *a, **k: bool(policy_1(*a, **k)) or bool(policy_2(*a, **k))


def checkpoint(fun=None, *, prevent_cse=True, policy=None, static_argnums=()):
    """Make `fun`'s backward pass recompute its intermediates instead of storing them.

    The gradient is unchanged; the memory a gradient keeps for `fun` shrinks to its inputs, at
    the price of running `fun`'s forward once more during the backward pass. Usable as
    `@fg.checkpoint` or `fg.checkpoint(f, static_argnums=(1,))`. `policy` (see
    `fg.checkpoint_policies`) names values to keep after all, e.g. `dots_saveable`.
    """
    if fun is None:
        return functools.partial(checkpoint, prevent_cse=prevent_cse, policy=policy,
                                 static_argnums=static_argnums)
    if isinstance(static_argnums, int):
        static_argnums = (static_argnums,)
    static_argnums = tuple(static_argnums)
    if policy is checkpoint_policies.everything_saveable:
        return fun
    if policy is checkpoint_policies.nothing_saveable:
        policy = None
    if policy is not None and not callable(policy):
        raise TypeError(f"checkpoint: policy must be None or a callable "
                        f"policy(prim, *avals, **params) -> bool (see fg.checkpoint_policies), "
                        f"got {policy!r}.")

    @functools.wraps(fun)
    def remat_fun(*args, **kwargs):
        n = len(args)
        static = {i % n: args[i] for i in static_argnums if -n <= i < n}
        dyn = [a for i, a in enumerate(args) if i not in static]
        flat, in_tree = tree_util.tree_flatten((dyn, kwargs))
        flat = [as_value(x) if type(x) is not Tracer else x for x in flat]
        box = {}

        def flat_fun(*leaves):
            d, kw = tree_util.tree_unflatten(in_tree, list(leaves))
            it = iter(d)
            full = [static[i] if i in static else next(it) for i in range(n)]
            out_flat, box["tree"] = tree_util.tree_flatten(fun(*full, **kw))
            return out_flat

        closed, consts = programs.trace_flat(flat_fun, [programs.aval(x) for x in flat],
                                     f"checkpoint({fun_name(fun)})")
        outs = bind(remat_p, *consts, *flat, jaxpr=closed, prevent_cse=prevent_cse,
                    policy=policy)
        return tree_util.tree_unflatten(box["tree"], list(outs))

    remat_fun.__name__ = f"checkpoint({fun_name(fun)})"
    return remat_fun


remat = checkpoint


# ---------------------------------------------------------------------------------------------
# What the backward pass keeps

class _SourceGradTrace(GradTrace):
    """A GradTrace that also notes which operation (and user line) produced each value."""

    def __init__(self, level):
        super().__init__(level)
        self.sources = {}
        self.entry_sources = {}

    def process(self, prim, tracers, params):
        n = len(self.tape)
        out = super().process(prim, tracers, params)
        src = user_source_info()
        for o in (out if isinstance(out, tuple) else (out,)):
            if type(o) is Tracer:
                self.sources[id(o.val)] = (prim.name, src)
        for entry in self.tape[n:]:
            self.entry_sources[id(entry)] = (prim.name, src)
        return out


def _arrays_in(x, out):
    if isinstance(x, (tuple, list)):
        for y in x:
            _arrays_in(y, out)
    elif hasattr(x, "shape") and hasattr(x, "dtype") and not hasattr(x, "str_short"):
        out.append(x)


def saved_residuals(fun, *args, **kwargs):
    """[(ShapedArray, description)] for every array the backward pass of `fun` keeps, each once.

    All floating-point leaves of `args` are differentiated (as fg.vjp does)."""
    flat, in_tree = tree_util.tree_flatten(args)
    paths = [tree_util.keystr(p) for p, _ in tree_util.tree_flatten_with_path(args)[0]]
    with new_trace(_SourceGradTrace) as trace:
        tracers = [trace.new_arg(x, is_float(get_aval(as_value(x)).dtype)) for x in flat]
        fun(*tree_util.tree_unflatten(in_tree, tracers), **kwargs)
    arg_ids = {id(t.val): p for t, p in zip(tracers, paths)}
    sources = trace.sources
    found, seen = [], set()
    for entry in trace.tape:
        arrays = []
        _arrays_in(entry[4], arrays)
        _arrays_in(entry[5], arrays)
        _arrays_in(list(entry[1].get("saved", {}).values()), arrays)  # a checkpoint policy's
        for a in arrays:
            if id(a) in seen:
                continue
            seen.add(id(a))
            aval = get_aval(a)
            if id(a) in arg_ids:
                what = f"from the argument {arg_ids[id(a)] or 'x'}"
            elif id(a) in sources:
                prim, src = sources[id(a)]
                what = f"output of {prim}" + (f" from {src}" if src else "")
            else:
                prim, src = trace.entry_sources.get(id(entry), ("an operation", None))
                what = f"kept by {prim}" + (f" from {src}" if src else "")
                if aval.shape and prim == "scan":
                    what = f"per-step values stacked by scan from {src}"
                elif id(a) in {id(v) for v in entry[1].get("saved", {}).values()}:
                    what = f"saved by the checkpoint policy from {src}" if src else \
                        "saved by the checkpoint policy"
            found.append((aval, what))
    return found


def print_saved_residuals(fun, *args, **kwargs):
    """Print what the backward pass of `fun` keeps: type and origin of each residual, then the
    total, so the memory of a gradient can be understood before optimizing it."""
    res = saved_residuals(fun, *args, **kwargs)
    total = 0
    for aval, what in res:
        total += aval.nbytes
        print(f"{aval.str_short():<20} {what}")
    print(f"total: {len(res)} arrays, {total / 2**20:.2f} MiB")
