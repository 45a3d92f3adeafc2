"""Helpers shared by the control-flow primitives (cond, while, scan, remat) that need primitives
of their own: Python scalars as arrays, the concrete value of an index or bound, zeros and
cotangents, the checks on a loop's carry, and compiling a sub-program for a backend.

The transforms of sub-programs (jvp_jaxpr, vjp_jaxpr, vjp_recompute, batch_jaxpr) and tracing
with hoisted constants (trace_flat) are the interpreters' (funcgrad/interpreters), below lax.
"""

from __future__ import annotations

import numpy as np

from .. import tree_util
from ..core import ClosedJaxpr, ConcretizationError, Jaxpr, Tracer, Var, user_line
from ..core.placement import to_host
from ..interpreters.ops import zeros
from ..interpreters.programs import optimize
from . import elementwise as ew


def arrays(flat):
    """Python scalars as 0-d arrays (their weak avals were taken before, for tracing)."""
    return [np.asarray(x) if type(x) in (bool, int, float, complex) else x for x in flat]


def permute_invars(closed, order):
    j = closed.jaxpr
    return ClosedJaxpr(Jaxpr(j.constvars, [j.invars[i] for i in order], j.outvars, j.eqns),
                       closed.consts)


def with_extra_invars(closed, avals, front=False):
    """The program with unused inputs of `avals` added (at the end, or at the front)."""
    j = closed.jaxpr
    extra = [Var(a) for a in avals]
    invars = extra + list(j.invars) if front else list(j.invars) + extra
    return ClosedJaxpr(Jaxpr(j.constvars, invars, j.outvars, j.eqns), closed.consts)


def concrete(x):
    """The concrete value of x, or None when it is abstract (under jit, vmap, make_jaxpr)."""
    if type(x) is not Tracer:
        return to_host(x)
    try:
        return to_host(x.concrete_value("control flow"))
    except ConcretizationError:
        return None


def leaf_paths(tree):
    return [tree_util.keystr(p) for p, _ in tree_util.tree_flatten_with_path(tree)[0]]


def same_type(a, b):
    return a.shape == b.shape and a.dtype == b.dtype


def compiled(compile_jaxpr, xp, closed):
    """Compile a sub-program once for the NumPy/CuPy backend (optimized like the top level)."""
    try:
        closed = optimize(closed)
    except Exception:  # the passes are an optimization only
        pass
    fn = compile_jaxpr(closed.jaxpr, xp=xp).fn
    consts = list(closed.consts)
    if consts:
        return lambda *args: fn(*consts, *args)
    return fn


def ct_or_zero(c, aval):
    return zeros(aval.strip_weak_type()) if c is None else c


def check_carry(what, in_tree, out_tree, in_avals, out_avals, example):
    if in_tree != out_tree:
        raise TypeError(f"{what} must return a carry with the same pytree structure as the "
                        f"initial value: got {out_tree}, expected {in_tree}{user_line()}.")
    paths = leaf_paths(example)
    for p, a, b in zip(paths, in_avals, out_avals):
        if not same_type(a, b):
            raise TypeError(f"{what}: the carry must keep its type from one iteration to the "
                            f"next, but the carry leaf {p or '(the carry)'} enters as "
                            f"{a.str_short()} and comes out as {b.str_short()}{user_line()}. "
                            "Cast the initial value or the body's result so they match.")


def promote_weak(init_flat, in_avals, out_avals):
    """Weakly typed initial leaves (Python scalars) take the dtype the body gives them."""
    changed = False
    new = list(init_flat)
    for k, (a, b) in enumerate(zip(in_avals, out_avals)):
        if a.weak_type and a.shape == b.shape and a.dtype != b.dtype:
            x = init_flat[k]
            new[k] = (np.asarray(x, b.dtype) if type(x) in (bool, int, float, complex)
                      else ew.convert_element_type(x, b.dtype))
            changed = True
    return new, changed


