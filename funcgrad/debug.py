"""Printing and callbacks from inside transformed code: `fg.debug.print`, `fg.debug.callback`.

    fg.debug.print("step {} loss {:.3f}", i, loss)   # works eagerly, under jit, vmap, grad

Both bind one `debug_callback` primitive that returns nothing. It is effectful, so jit keeps it
(DCE, CSE and folding never touch it) and it runs every time the compiled program runs, with
the concrete NumPy values of its arguments. Its rules:
- jit / make_jaxpr: recorded as an equation; runs when the program runs, in program order.
- vmap: one call per lane (in lane order; nested vmaps give outer-lane-major order), each with
  that lane's values; unbatched arguments are passed unchanged to every lane.
- jvp / grad: not differentiated; it sees the forward (primal) values, once per forward pass.
  A `checkpoint`ed function runs its forward twice, and so prints twice.
"""

from __future__ import annotations

import numpy as np

from . import tree_util
from .core import Primitive, Tracer, bind
from .core.staging import JaxprTrace
from .core.trace import current_traces

__all__ = ["print", "callback", "debug_callback_p"]

_print = print


def _to_numpy(x):
    if hasattr(x, "__cuda_array_interface__") and hasattr(x, "get"):
        return x.get()  # CuPy: show host values
    return x


def _impl(xp, *vals, callback):
    callback(*[_to_numpy(v) for v in vals])
    return ()


debug_callback_p = Primitive("debug_callback", multiple_results=True, impl=_impl,
                             abstract_eval=lambda *avals, **params: (), differentiable=False,
                             residuals="none")
debug_callback_p.effectful = True


class _PerLane:
    """The callback of a vmapped debug_callback: splits the batch and calls once per lane."""

    def __init__(self, callback, dims):
        self.callback = callback
        self.dims = tuple(dims)
        self.__name__ = getattr(callback, "__name__", "callback")

    def __call__(self, *vals):
        size = next(np.shape(v)[d] for v, d in zip(vals, self.dims) if d is not None)
        for i in range(size):
            self.callback(*[v if d is None else np.take(v, i, axis=d)
                            for v, d in zip(vals, self.dims)])


def _batch_rule(vals, dims, *, callback):
    return bind(debug_callback_p, *vals, callback=_PerLane(callback, dims)), ()


debug_callback_p.batch = _batch_rule
debug_callback_p.jvp = lambda primals, tangents, out, **params: ()
debug_callback_p.vjp = lambda ct, primals, out, active, **params: [None] * len(primals)


def _is_dynamic(x):
    return type(x) is Tracer or isinstance(x, (np.ndarray, np.generic)) or hasattr(
        x, "__cuda_array_interface__")


def callback(fn, *args, **kwargs):
    """Call `fn(*args, **kwargs)` with concrete values, eagerly or whenever the (transformed,
    compiled) program runs. Arguments are pytrees; array leaves (traced or not) are passed as
    NumPy arrays, other leaves as they are. Returns None. See the module docstring for how it
    behaves under vmap (per lane) and grad (forward values)."""
    leaves, tree = tree_util.tree_flatten((args, kwargs))
    dyn_pos = [i for i, x in enumerate(leaves) if _is_dynamic(x)]
    dyn = [leaves[i] for i in dyn_pos]

    def run(*vals):
        full = list(leaves)
        for i, v in zip(dyn_pos, vals):
            full[i] = v
        a, kw = tree_util.tree_unflatten(tree, full)
        fn(*a, **kw)

    run.__name__ = getattr(fn, "__name__", "callback")
    if not any(type(x) is Tracer for x in dyn):
        # No traced argument: stage it into the innermost program being traced (so a jitted
        # function prints on every run), else run it now.
        stagers = [t for t in current_traces() if isinstance(t, JaxprTrace)]
        if stagers:
            stagers[-1].process(debug_callback_p, [stagers[-1].to_tracer(x) for x in dyn],
                                {"callback": run})
            return None
    bind(debug_callback_p, *dyn, callback=run)
    return None


def print(fmt: str, *args, **kwargs):  # noqa: A001 (JAX's name)
    """`print(fmt.format(*args, **kwargs))` with the concrete values of traced arrays, eagerly
    and inside jit, vmap (one line per lane) and grad (forward values)."""
    def _format(*a, **kw):
        _print(fmt.format(*a, **kw))

    _format.__name__ = "print"
    callback(_format, *args, **kwargs)
