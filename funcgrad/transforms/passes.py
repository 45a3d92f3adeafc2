"""Program-to-program optimization passes: inlining, DCE, CSE, constant folding, algebraic
simplification, and grouping of elementwise equations for fusion.

Every pass takes a `ClosedJaxpr` (or a bare `Jaxpr`, whose constants are then unknown) and returns
a new one of the same kind; the input is never mutated (Var objects are shared). The program's
input and output avals, its `in_tree`/`out_tree`, and the values it computes are unchanged.
Primitives with `effectful = True` are never removed, merged, folded or reordered.

    optimize(closed) = dce ∘ simplify ∘ cse ∘ dce ∘ fold_constants ∘ inline, to a fixed point

`optimize(closed, differentiable=True)` is for a program that is transformed further (jit called
inside grad, vmap, ...): custom derivative rules stay in it and no rewrite changes a derivative.
"""

from __future__ import annotations

import heapq
from typing import NamedTuple

import numpy as np

from ..core import (
    ClosedJaxpr,
    Eqn,
    Jaxpr,
    Literal,
    Primitive,
    Tracer,
    Var,
    device_namespace,
    eval_jaxpr,
    to_host,
)
from ..interpreters.programs import set_optimizer
from ..lax import elementwise as _ew
from ..lax import structural as _st

__all__ = ["inline", "dce", "cse", "fold_constants", "simplify", "fusion_groups", "fuse",
           "optimize", "FusionGroup", "is_elementwise", "fused_p"]


# ---------------------------------------------------------------------------------------------
# Shared helpers

def _effectful(prim) -> bool:
    return bool(getattr(prim, "effectful", False))


def _has_effects(eqn) -> bool:
    """Whether the equation, or a program in its params (a call body), has an effect."""
    if _effectful(eqn.primitive):
        return True
    for v in eqn.params.values():
        t = type(v)
        if t is tuple or t is list:
            if any(type(b) in _PROGRAMS and _body_has_effects(b) for b in v):
                return True
        elif t in _PROGRAMS and _body_has_effects(v):
            return True
    return False


def _body_has_effects(body):
    if type(body) is ClosedJaxpr:
        body = body.jaxpr
    return any(_has_effects(e) for e in body.eqns)


_PROGRAMS = (ClosedJaxpr, Jaxpr)


def _split(program):
    """(jaxpr, consts, rebuild): `rebuild(jaxpr, consts)` gives a program of the input's kind."""
    if isinstance(program, ClosedJaxpr):
        def rebuild(jaxpr, consts):
            return ClosedJaxpr(jaxpr, consts, program.in_tree, program.out_tree)
        return program.jaxpr, list(program.consts), rebuild
    if isinstance(program, Jaxpr):
        return program, [_UNKNOWN] * len(program.constvars), lambda jaxpr, consts: jaxpr
    raise TypeError(f"expected a ClosedJaxpr or a Jaxpr, got {type(program).__name__}")


class _Unknown:
    """The value of a constvar of a bare Jaxpr: not known to the pass."""

    def __repr__(self):
        return "<unknown const>"


_UNKNOWN = _Unknown()


def _known(value) -> bool:
    """Whether a const's value may be computed with (not unknown, not a tracer of a trace)."""
    return value is not _UNKNOWN and type(value) is not Tracer


class _Env:
    """Substitution of atoms for variables, resolved transitively."""

    def __init__(self):
        self.map = {}

    def __setitem__(self, var, atom):
        self.map[var] = atom

    def __call__(self, atom):
        m = self.map
        while type(atom) is Var and atom in m:
            atom = m[atom]
        return atom


def _copy_eqn(eqn, env, **changes):
    return Eqn(changes.get("primitive", eqn.primitive),
               [env(a) for a in changes.get("invars", eqn.invars)],
               changes.get("outvars", eqn.outvars), changes.get("params", eqn.params),
               eqn.source_info)


def _literal_value(lit):
    return np.asarray(lit.val, dtype=lit.aval.dtype)


def _literal_key(lit):
    return ("lit", lit.aval, _literal_value(lit).tobytes())


# ---------------------------------------------------------------------------------------------
# Inlining

def inline(program, keep_custom_rules=False):
    """Replace calls of primitives marked `inline_call = True` (with a ClosedJaxpr `jaxpr` param)
    by the body's equations, renamed, with the body's consts hoisted as new constvars.

    Inlining exposes the body to the other passes (CSE across the call boundary, DCE of unused
    outputs, folding) and leaves the code generator a flat program. Nested calls are inlined too.
    Calls that carry a custom derivative rule (`custom_rule = True`: custom_jvp_call,
    custom_vjp_call) are inlined too, to their primal program, unless `keep_custom_rules` (the
    program will be differentiated).
    """
    jaxpr, consts, rebuild = _split(program)
    if not any(_is_inline_call(e, keep_custom_rules) for e in jaxpr.eqns):
        return rebuild(Jaxpr(jaxpr.constvars, jaxpr.invars, jaxpr.outvars, jaxpr.eqns), consts)
    constvars = list(jaxpr.constvars)
    consts = list(consts)
    env = _Env()
    eqns = []
    for eqn in jaxpr.eqns:
        if not _is_inline_call(eqn, keep_custom_rules):
            eqns.append(_copy_eqn(eqn, env))
            continue
        body = inline(eqn.params["jaxpr"], keep_custom_rules)
        if body.consts and not isinstance(program, ClosedJaxpr):
            raise ValueError("inline: a call body has constants, which a bare Jaxpr cannot hold; "
                             "pass the ClosedJaxpr")
        inner = {}
        for v, c in zip(body.jaxpr.constvars, body.consts):
            nv = Var(v.aval)
            constvars.append(nv)
            consts.append(c)
            inner[v] = nv
        for v, a in zip(body.jaxpr.invars, eqn.invars):
            inner[v] = env(a)

        def read(a, inner=inner):
            return inner[a] if type(a) is Var else a

        for e in body.jaxpr.eqns:
            outs = [Var(v.aval) for v in e.outvars]
            inner.update(zip(e.outvars, outs))
            eqns.append(Eqn(e.primitive, [read(a) for a in e.invars], outs, e.params,
                            e.source_info or eqn.source_info))
        for v, a in zip(eqn.outvars, body.jaxpr.outvars):
            env[v] = read(a)
    outvars = [env(a) for a in jaxpr.outvars]
    return rebuild(Jaxpr(constvars, jaxpr.invars, outvars, eqns), consts)


def _is_inline_call(eqn, keep_custom_rules=False):
    prim = eqn.primitive
    return ((getattr(prim, "inline_call", False)
             or not keep_custom_rules and getattr(prim, "custom_rule", False))
            and isinstance(eqn.params.get("jaxpr"), ClosedJaxpr))


# ---------------------------------------------------------------------------------------------
# Dead-code elimination

def dce(program):
    """Drop equations none of whose outputs is used (transitively) and constvars no one reads.

    Invars stay, so the signature is unchanged; effectful equations always stay. After grad,
    this removes forward values that only unused outputs needed.
    """
    jaxpr, consts, rebuild = _split(program)
    live = {v for v in jaxpr.outvars if type(v) is Var}
    kept = []
    for eqn in reversed(jaxpr.eqns):
        if _has_effects(eqn) or any(v in live for v in eqn.outvars):
            kept.append(eqn)
            live.update(v for v in eqn.invars if type(v) is Var)
    pairs = [(v, c) for v, c in zip(jaxpr.constvars, consts) if v in live]
    new = Jaxpr([v for v, _ in pairs], jaxpr.invars, jaxpr.outvars, kept[::-1])
    return rebuild(new, [c for _, c in pairs])


# ---------------------------------------------------------------------------------------------
# Common-subexpression elimination

class _Unhashable(Exception):
    pass


def _param_key(value):
    """A hashable, type-aware key for a param value; raises _Unhashable when there is none."""
    if isinstance(value, (tuple, list)):
        return (type(value).__name__,) + tuple(_param_key(x) for x in value)
    if isinstance(value, dict):
        return ("dict",) + tuple((k, _param_key(v)) for k, v in sorted(value.items()))
    if isinstance(value, np.dtype):
        return ("dtype", value.str)
    if isinstance(value, (Jaxpr, ClosedJaxpr)):
        return ("program", id(value))
    try:
        hash(value)
    except TypeError:
        raise _Unhashable from None
    if isinstance(value, np.ndarray):
        raise _Unhashable
    return (type(value), value)


def _const_key(value):
    """Key under which equal constants merge: identity, or contents for small NumPy arrays."""
    if type(value) is np.ndarray and value.size <= 100_000 and value.dtype.kind in "biufc":
        return ("array", value.dtype.str, value.shape, value.tobytes())
    return ("id", id(value))


def cse(program):
    """Merge equations with the same primitive, the same inputs (literals compared by value and
    dtype) and equal params; merge constvars bound to the same (or an equal small) array.

    Traced programs repeat work (the VJP of `sin` recomputes `cos x` the JVP also built, two
    layers broadcast the same bias); computing it once saves time and memory. Equations with
    unhashable params and effectful equations are left alone.
    """
    jaxpr, consts, rebuild = _split(program)
    env = _Env()
    constvars, new_consts, seen_consts = [], [], {}
    for v, c in zip(jaxpr.constvars, consts):
        key = _const_key(c) if _known(c) else ("var", v)
        first = seen_consts.get(key)
        if first is not None and first.aval == v.aval:
            env[v] = first
        else:
            seen_consts.setdefault(key, v)
            constvars.append(v)
            new_consts.append(c)
    seen = {}
    eqns = []
    for eqn in jaxpr.eqns:
        new = _copy_eqn(eqn, env)
        key = None
        if eqn.outvars and not _has_effects(eqn):
            try:
                key = (eqn.primitive,
                       tuple(_literal_key(a) if type(a) is Literal else a for a in new.invars),
                       _param_key(dict(eqn.params)))
                hash(key)
            except (_Unhashable, TypeError):
                key = None
        if key is not None:
            prev = seen.get(key)
            if prev is not None and all(a.aval == b.aval for a, b in zip(prev, eqn.outvars)):
                for v, p in zip(eqn.outvars, prev):
                    env[v] = p
                continue
            seen[key] = eqn.outvars
        eqns.append(new)
    outvars = [env(a) for a in jaxpr.outvars]
    return rebuild(Jaxpr(constvars, jaxpr.invars, outvars, eqns), new_consts)


# ---------------------------------------------------------------------------------------------
# Constant folding

_EXPANDING = frozenset({"broadcast_in_dim", "iota"})


def fold_constants(program, max_size=100_000, max_expand_size=1024):
    """Evaluate equations whose inputs are all literals or known constants, at transform time.

    Results become constvars (rank 0: literals). Results with more than `max_size` elements are
    not folded, nor `broadcast_in_dim`/`iota` results above `max_expand_size`: those are cheap to
    compute and expensive to store. Rank-0 NumPy constants become literals, which the simplifier
    and code generators read directly.
    """
    jaxpr, consts, rebuild = _split(program)
    env = _Env()
    values = {}
    constvars, new_consts = [], []
    for v, c in zip(jaxpr.constvars, consts):
        if isinstance(c, (np.ndarray, np.generic)) and np.ndim(c) == 0 \
                and c.dtype == v.aval.dtype:
            env[v] = Literal(np.asarray(c), v.aval)
            continue
        constvars.append(v)
        new_consts.append(c)
        if _known(c):
            values[v] = c
    eqns = []
    for eqn in jaxpr.eqns:
        new = _copy_eqn(eqn, env)
        outs = _try_fold(new, values, max_size, max_expand_size)
        if outs is None:
            eqns.append(new)
            continue
        for v, out in zip(new.outvars, outs):
            if v.aval.shape == () and type(out) is np.ndarray:
                env[v] = Literal(out, v.aval)
            else:
                constvars.append(v)
                new_consts.append(out)
                values[v] = out
    outvars = [env(a) for a in jaxpr.outvars]
    return rebuild(Jaxpr(constvars, jaxpr.invars, outvars, eqns), new_consts)


def _try_fold(eqn, values, max_size, max_expand_size):
    prim = eqn.primitive
    if prim.impl is None or not eqn.outvars or _has_effects(eqn):
        return None
    limit = max_expand_size if prim.name in _EXPANDING else max_size
    if any(v.aval.size > limit for v in eqn.outvars):
        return None
    args = []
    for a in eqn.invars:
        if type(a) is Literal:
            args.append(_literal_value(a))
        elif a in values:
            args.append(values[a])
        else:
            return None
    try:
        with np.errstate(all="ignore"):
            # on the host (or the device of a device constant), whatever the default backend:
            # folded scalars become literals of the program
            out = prim.impl(device_namespace(args), *args, **eqn.params)
    except Exception:  # leave it to fail (with its proper message) when the program runs
        return None
    outs = list(out) if prim.multiple_results else [out]
    if len(outs) != len(eqn.outvars):
        return None
    outs = [np.asarray(o) if isinstance(o, (np.generic, int, float, bool)) else o for o in outs]
    for o, v in zip(outs, eqn.outvars):
        if type(o) is Tracer or tuple(getattr(o, "shape", ())) != v.aval.shape \
                or getattr(o, "dtype", None) != v.aval.dtype:
            return None
    return outs


# ---------------------------------------------------------------------------------------------
# Algebraic simplification

def simplify(program, differentiable=False):
    """Algebraic rewrites that remove work, mostly left behind by autodiff and broadcasting:

    `x*1`, `1*x`, `x+0`, `0+x`, `x-0` -> x (the one/zero a literal, a broadcast of one, or a
    constant array of ones/zeros: the zero cotangents of unused outputs); `0-x` -> `neg x`;
    `neg (neg x)` -> x; transposes, broadcasts and reshapes of themselves compose into one (or
    none when the result is the identity); a reshape/convert_element_type to the operand's own
    type -> x; `convert(convert(x))` -> one conversion when the first one is exact; one-case or
    same-case `select_n` -> the case; `reduce_sum` over no axes -> x; in binary elementwise
    equations an operand holding one value (equal constants, a broadcast of a scalar) is replaced
    by that rank-0 value when the other operand has the output's shape; a `dot_general` with a
    constant identity matrix -> a transpose of the other operand (or the operand itself).
    `x*0` is kept: it is NaN for x = inf or NaN. A rewrite to an alias needs equal avals, so
    output avals never change. With `differentiable`, rewrites that keep values but not
    derivatives are left out (a select to max/min; checkpoint_name labels, which checkpoint
    policies read).
    """
    jaxpr, consts, rebuild = _split(program)
    env = _Env()
    ctx = _Ctx({v: c for v, c in zip(jaxpr.constvars, consts) if _known(c)}, differentiable)
    eqns = []
    for eqn in jaxpr.eqns:
        new = _copy_eqn(eqn, env)
        if _has_effects(eqn):
            rule = None
        else:
            new = _scalarize_operands(new, ctx)
            rule = _RULES.get(eqn.primitive.name)
        result = rule(new, ctx) if rule is not None and len(new.outvars) == 1 else None
        if result is None:
            eqns.append(new)
            ctx.producers.update((v, new) for v in new.outvars)
        elif isinstance(result, Eqn):
            eqns.append(result)
            ctx.producers[result.outvars[0]] = result
        else:
            env[new.outvars[0]] = result
    outvars = [env(a) for a in jaxpr.outvars]
    return rebuild(Jaxpr(jaxpr.constvars, jaxpr.invars, outvars, eqns), consts)


def _host_const(c, limit):
    """A program constant as NumPy, for the simplifier to inspect: device (CuPy) constants of at
    most `limit` elements are fetched once, at compile time; others are returned as they are."""
    if hasattr(c, "__cuda_array_interface__") and c.size <= limit:
        return to_host(c)
    return c


class _Ctx:
    """What the rewrite rules may look at: constant values and each variable's defining eqn."""

    def __init__(self, consts, differentiable=False):
        self.consts = consts
        self.differentiable = differentiable
        self.producers = {}
        self._uniform = {}

    def producer(self, atom, name):
        eqn = self.producers.get(atom) if type(atom) is Var else None
        return eqn if eqn is not None and eqn.primitive.name == name else None

    def uniform(self, atom):
        """The one value all elements of `atom` hold, if known (else None)."""
        if type(atom) is Literal:
            v = _literal_value(atom)
            return v.reshape(()) if v.size == 1 else None
        if type(atom) is not Var:
            return None
        if atom in self._uniform:
            return self._uniform[atom]
        val = None
        c = _host_const(self.consts.get(atom), 1_000_000)
        if type(c) is np.ndarray and 0 < c.size <= 1_000_000 and c.dtype.kind in "biufc":
            first = c.reshape(-1)[0]
            if np.all(c == first):
                val = first
        elif isinstance(c, np.generic):
            val = c
        else:
            eqn = self.producers.get(atom)
            if eqn is not None and eqn.primitive.name in ("broadcast_in_dim", "reshape"):
                val = self.uniform(eqn.invars[0])
        self._uniform[atom] = val
        return val

    def is_identity(self, atom):
        """Whether `atom` is a known constant square identity matrix."""
        key = ("identity", atom)
        if key not in self._uniform:
            c = _host_const(self.consts.get(atom), 4_000_000) if type(atom) is Var else None
            self._uniform[key] = (
                type(c) is np.ndarray and c.ndim == 2 and c.shape[0] == c.shape[1]
                and c.size <= 4_000_000
                and bool(np.array_equal(c, np.eye(c.shape[0], dtype=c.dtype))))
        return self._uniform[key]

    def equals(self, atom, k):
        v = self.uniform(atom)
        return v is not None and bool(v == k)


def _scalarize_operands(eqn, ctx):
    """In a binary elementwise eqn, read a full-shape operand that holds one value (a constant
    of equal elements, a broadcast of a literal or of a rank-0 value) as that rank-0 value, which
    the primitive broadcasts itself: the big constant or the broadcast can then go."""
    if not is_elementwise(eqn) or eqn.primitive.name == "select_n" or len(eqn.invars) != 2:
        return eqn
    shape = eqn.outvars[0].aval.shape
    if shape == ():
        return eqn
    invars = list(eqn.invars)
    for i in (0, 1):
        a, other = invars[i], invars[1 - i]
        if type(a) is not Var or other.aval.shape != shape:
            continue  # (`other` alone gives the output shape, so `a` may become rank 0)
        value = ctx.uniform(a)
        if value is not None:
            invars[i] = Literal(np.asarray(value, a.aval.dtype),
                                a.aval.update(shape=(), dtype=a.aval.dtype))
            continue
        src = ctx.producer(a, "broadcast_in_dim")
        if src is not None and src.invars[0].aval.shape == () \
                and src.invars[0].aval.dtype == a.aval.dtype:
            invars[i] = src.invars[0]
    if invars == eqn.invars:
        return eqn
    return Eqn(eqn.primitive, invars, eqn.outvars, eqn.params, eqn.source_info)


def _alias_if_same(eqn, x):
    """x if it can stand for eqn's output (equal aval), else None."""
    return x if x.aval == eqn.outvars[0].aval else None


def _mul_rule(eqn, ctx):
    x, y = eqn.invars
    if ctx.equals(y, 1) and _alias_if_same(eqn, x) is not None:
        return x
    if ctx.equals(x, 1):
        return _alias_if_same(eqn, y)
    return None


def _add_rule(eqn, ctx):
    x, y = eqn.invars
    if ctx.equals(y, 0) and _alias_if_same(eqn, x) is not None:
        return x
    if ctx.equals(x, 0):
        return _alias_if_same(eqn, y)
    return None


def _sub_rule(eqn, ctx):
    x, y = eqn.invars
    if ctx.equals(y, 0):
        return _alias_if_same(eqn, x)
    if ctx.equals(x, 0) and y.aval == eqn.outvars[0].aval:
        return Eqn(_ew.neg_p, [y], eqn.outvars, {}, eqn.source_info)
    return None


def _neg_rule(eqn, ctx):
    inner = ctx.producer(eqn.invars[0], "neg")
    return _alias_if_same(eqn, inner.invars[0]) if inner is not None else None


def _transpose_rule(eqn, ctx):
    x, perm = eqn.invars[0], tuple(eqn.params["permutation"])
    inner = ctx.producer(x, "transpose")
    if inner is not None:
        x = inner.invars[0]
        p = tuple(inner.params["permutation"])
        perm = tuple(p[q] for q in perm)
    if perm == tuple(range(len(perm))):
        return _alias_if_same(eqn, x)
    if inner is None:
        return None
    return Eqn(eqn.primitive, [x], eqn.outvars, dict(eqn.params, permutation=perm),
               eqn.source_info)


def _broadcast_rule(eqn, ctx):
    x = eqn.invars[0]
    shape, dims = tuple(eqn.params["shape"]), tuple(eqn.params["broadcast_dimensions"])
    inner = ctx.producer(x, "broadcast_in_dim")
    if inner is not None:
        x = inner.invars[0]
        dims = tuple(dims[d] for d in inner.params["broadcast_dimensions"])
    if x.aval.shape == shape and dims == tuple(range(len(shape))):
        return _alias_if_same(eqn, x)
    if inner is None:
        return None
    return Eqn(eqn.primitive, [x], eqn.outvars,
               dict(eqn.params, shape=shape, broadcast_dimensions=dims), eqn.source_info)


def _reshape_rule(eqn, ctx):
    x = eqn.invars[0]
    inner = ctx.producer(x, "reshape")
    if inner is not None:
        x = inner.invars[0]
    if x.aval.shape == eqn.outvars[0].aval.shape:
        return _alias_if_same(eqn, x)
    if inner is None:
        return None
    return Eqn(eqn.primitive, [x], eqn.outvars, eqn.params, eqn.source_info)


def _convert_rule(eqn, ctx):
    x = eqn.invars[0]
    inner = ctx.producer(x, "convert_element_type")
    if inner is not None and _exact_cast(inner.invars[0].aval.dtype, x.aval.dtype):
        x = inner.invars[0]
    else:
        inner = None
    if _alias_if_same(eqn, x) is not None:
        return x
    if inner is None:
        return None
    return Eqn(eqn.primitive, [x], eqn.outvars, eqn.params, eqn.source_info)


def _exact_cast(src, dst) -> bool:
    """Whether converting dtype src to dst keeps every value exactly (so a later cast of the
    result equals the same cast of the original)."""
    src, dst = np.dtype(src), np.dtype(dst)
    if src == dst or src.kind == "b" and dst.kind in "biufc":
        return True
    if src.kind in "iu" and dst.kind in "iu":
        return np.can_cast(src, dst, "safe")
    if src.kind in "iu" and dst.kind in "fc":
        bits = src.itemsize * 8 - (src.kind == "i")
        return np.finfo(dst).nmant + 1 >= bits
    if src.kind == "f" and dst.kind in "fc" or src.kind == "c" and dst.kind == "c":
        return np.finfo(dst).nmant >= np.finfo(src).nmant and \
            np.finfo(dst).maxexp >= np.finfo(src).maxexp
    return False


def _select_rule(eqn, ctx):
    cases = eqn.invars[1:]
    if all(c is cases[0] or _same_literal(c, cases[0]) for c in cases[1:]):
        return _alias_if_same(eqn, cases[0])
    return None if ctx.differentiable else _clamp_rule(eqn, ctx)  # max's derivative differs


# select_n(x <= c, x, c) is max(x, c) and select_n(x >= c, x, c) is min(x, c), NaN included
# (the comparison is False, so x, which max/min propagate); the `>`/`<` forms would not be.
_CLAMPS = {"le": _ew.max_p, "lt": _ew.max_p, "ge": _ew.min_p, "gt": _ew.min_p}


def _clamp_rule(eqn, ctx):
    """relu written as a select becomes one `max` (one pass instead of a compare and a select)."""
    if len(eqn.invars) != 3:
        return None
    pred, x, c = eqn.invars
    cmp = ctx.producers.get(pred) if type(pred) is Var else None
    if cmp is None or cmp.primitive.name not in _CLAMPS or cmp.invars[0] is not x \
            or type(x) is not Var or x.aval != eqn.outvars[0].aval or x.aval.dtype.kind != "f":
        return None
    bound = ctx.uniform(cmp.invars[1])
    if bound is None or ctx.uniform(c) is None or not bool(ctx.uniform(c) == bound) \
            or c.aval.shape != ():
        return None
    return Eqn(_CLAMPS[cmp.primitive.name], [x, c], eqn.outvars, {}, eqn.source_info)


def _same_literal(a, b):
    return type(a) is Literal and type(b) is Literal and _literal_key(a) == _literal_key(b)


def _reduce_sum_rule(eqn, ctx):
    return _alias_if_same(eqn, eqn.invars[0]) if not eqn.params["axes"] else None


def _dot_general_rule(eqn, ctx):
    """A contraction with a constant identity matrix (jacfwd's and hessian's basis, once vmap
    has batched it) is only a reordering of the other operand's axes: a transpose, or nothing."""
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    out = eqn.outvars[0].aval
    if lb or rb or len(lc) != 1:
        return None
    lhs, rhs = eqn.invars
    for ident_is_rhs, ident, other, oc in ((True, rhs, lhs, lc[0]), (False, lhs, rhs, rc[0])):
        if type(other) is not Var or other.aval.dtype != out.dtype or not ctx.is_identity(ident):
            continue
        free = [i for i in range(other.aval.ndim) if i != oc]
        # the identity's free axis indexes the contracted axis of `other`
        perm = tuple(free + [oc] if ident_is_rhs else [oc] + free)
        if perm == tuple(range(len(perm))):
            return _alias_if_same(eqn, other)
        return Eqn(_st.transpose_p, [other], eqn.outvars, {"permutation": perm},
                   eqn.source_info)
    return None


_RULES = {
    "mul": _mul_rule, "add": _add_rule, "sub": _sub_rule, "neg": _neg_rule,
    "transpose": _transpose_rule, "broadcast_in_dim": _broadcast_rule, "reshape": _reshape_rule,
    "convert_element_type": _convert_rule, "select_n": _select_rule,
    "reduce_sum": _reduce_sum_rule, "dot_general": _dot_general_rule,
    # fg.checkpoint_name labels only matter to checkpoint policies, applied before jit's passes
    "name": lambda eqn, ctx: None if ctx.differentiable else _alias_if_same(eqn, eqn.invars[0]),
}


# ---------------------------------------------------------------------------------------------
# Fusion of elementwise equations

def is_elementwise(eqn) -> bool:
    """Default fusion predicate: the equation's primitive is elementwise (`prim.elementwise`,
    set by funcgrad.lax's elementwise definitions). A backend passes its own predicate to
    `fuse`: the equations its code generator translates (funcgrad/backends)."""
    return getattr(eqn.primitive, "elementwise", False)


class FusionGroup(NamedTuple):
    """Equations (indices, in program order) computable in one pass over `shape`.

    inputs: Vars read by the group and defined outside it (literals stay inline in the eqns);
    outputs: Vars defined in the group and read after it (by other eqns or as program outputs).
    Every other value of the group is an intermediate no one else reads.
    """

    eqns: list
    inputs: list
    outputs: list
    shape: tuple
    recomputed: tuple = ()   # equations of other groups this one computes again (see fuse)


def fusion_groups(program, fusible=is_elementwise, min_size=2, broadcast_inputs=False):
    """Group elementwise equations (operands of the output's shape or rank 0) into DAGs that a
    code generator can compute in one pass each (a compiled loop, a CUDA kernel). `fusible(eqn)`
    says which equations may join a group (a backend's: what its generator translates).
    With `broadcast_inputs`, operands may also broadcast to the output's shape NumPy-style (a
    bias row, a keepdims statistic): the code generator reads them with broadcast indexing; and
    `broadcast_in_dim` equations may join where `fusible` says so (their operand then becomes
    a group input the generator reads with the broadcast's own axis mapping).

    Equations join the group of an operand's producer (groups of several operands merge) unless
    that would create a cycle through an equation outside the group, so each group can run as a
    unit (see `fuse` for an order). Returns the groups of at least `min_size` equations.
    """
    jaxpr, _, _ = _split(program)
    parent = {}  # group id -> group id (union-find)

    def find(g):
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    # A group runs as one unit: a path into any member and out of any member is a path through
    # it. `reach[v]` holds the groups whose results reach v through equations outside them, as
    # recorded when v was made; `gin[g]` the groups that reach some member of g (directly or
    # through outside equations). Groups grow and merge after a value was recorded, so the
    # groups that reach a value now are the closure of its record under `gin`, taken when asked.
    group_of = {}  # eqn index -> group id
    producer = {}  # var -> eqn index
    reach = {}  # var made outside every group -> group ids
    gin = {}  # group id -> group ids reaching its members

    def closure(ids):
        seen, stack = set(), [find(g) for g in ids]
        while stack:
            g = stack.pop()
            if g not in seen:
                seen.add(g)
                stack.extend(find(h) for h in gin[g])
        return seen

    last_effect = frozenset()  # what reached the last effectful equation (effects keep order)
    for i, eqn in enumerate(jaxpr.eqns):
        ins = [a for a in eqn.invars if type(a) is Var]
        direct, recorded = set(), set()
        effect = _has_effects(eqn)
        if effect:
            recorded |= last_effect
        for a in ins:
            j = producer.get(a)
            if j is None:
                continue
            if j in group_of:
                direct.add(find(group_of[j]))
            else:
                recorded |= reach[a]
        # groups with a path to this equation that leaves them (it may not join those)
        through = closure(recorded | {h for d in direct for h in gin[d]})
        out_shape = eqn.outvars[0].aval.shape if len(eqn.outvars) == 1 else None
        target = None
        if out_shape is not None and _fusible(eqn, fusible, broadcast_inputs):
            cands = []
            for a in ins:
                j = producer.get(a)
                if j is not None and j in group_of:
                    g = find(group_of[j])
                    if g not in cands and g not in through \
                            and jaxpr.eqns[j].outvars[0].aval.shape == out_shape:
                        cands.append(g)
            for g in cands:
                if target is None:
                    target = g
                elif target not in closure(gin[g]) and g not in closure(gin[target]):
                    parent[g] = target
                    gin[target] = gin[target] | gin[g]
            if target is None:
                target = i
                parent[i] = i
                gin[i] = set()
            group_of[i] = target
            target = find(target)
            gin[target] = {find(h) for h in gin[target] | recorded | direct} - {target}
        else:
            for v in eqn.outvars:
                reach[v] = frozenset(recorded | direct)
            if effect:
                last_effect = frozenset(recorded | direct)
        for v in eqn.outvars:
            producer[v] = i
    members = {}
    for i, g in group_of.items():
        members.setdefault(find(g), []).append(i)
    groups = [sorted(m) for m in members.values() if len(m) >= min_size]
    groups.sort(key=lambda m: m[0])
    readers = {}  # var -> indices of the eqns reading it (None: a program output)
    for i, eqn in enumerate(jaxpr.eqns):
        for a in eqn.invars:
            if type(a) is Var:
                readers.setdefault(a, []).append(i)
    for v in jaxpr.outvars:
        if type(v) is Var:
            readers.setdefault(v, []).append(None)
    return [_describe_group(jaxpr, m, readers) for m in groups]


def _fusible(eqn, fusible, broadcast_inputs=False):
    if eqn.primitive.multiple_results or len(eqn.outvars) != 1 or _has_effects(eqn):
        return False
    if broadcast_inputs and eqn.primitive.name == "broadcast_in_dim":
        return bool(fusible(eqn))  # the group reads its operand with broadcast indexing
    if not is_elementwise(eqn) or not fusible(eqn):
        return False
    shape = eqn.outvars[0].aval.shape
    if broadcast_inputs:
        return all(broadcasts_to(a.aval.shape, shape) for a in eqn.invars)
    return all(a.aval.shape in (shape, ()) for a in eqn.invars)


def broadcasts_to(shape, target):
    """Whether `shape` broadcasts to `target` NumPy-style without changing `target`."""
    if len(shape) > len(target):
        return False
    return all(s in (1, t) for s, t in zip(shape[::-1], target[::-1]))


def _describe_group(jaxpr, idx, readers):
    inside = set(idx)
    defined = {v for i in idx for v in jaxpr.eqns[i].outvars}
    inputs = []
    for i in idx:
        for a in jaxpr.eqns[i].invars:
            if type(a) is Var and a not in defined and a not in inputs:
                inputs.append(a)
    outputs = [v for i in idx for v in jaxpr.eqns[i].outvars
               if any(r is None or r not in inside for r in readers.get(v, ()))]
    return FusionGroup(idx, inputs, outputs, jaxpr.eqns[idx[0]].outvars[0].aval.shape)


def _fused_impl(xp, *args, jaxpr):
    return eval_jaxpr(jaxpr.jaxpr, jaxpr.consts, *args)


fused_p = Primitive("fused", multiple_results=True, impl=_fused_impl,
                    abstract_eval=lambda *avals, jaxpr: list(jaxpr.out_avals),
                    differentiable=False)
fused_p.inline_call = True  # inline() undoes fuse()


def fuse(program, fusible=is_elementwise, min_size=2, broadcast_inputs=False, reductions=False,
         horizontal=False, singles=None, recompute=None):
    """The program with each fusion group replaced by one `fused[jaxpr=...]` equation, placed in
    a valid order (the groups' members need not be consecutive in the input).
    `fusible`, `broadcast_inputs`: see `fusion_groups`. With `reductions`, a reduction
    (`reduce_sum`, `reduce_max`, `reduce_min`, for which `fusible` holds) that is the only
    reader of a group's only output, not itself a program output, joins the group as its last
    equation: the code generator reduces the group's values without storing them (a single
    elementwise equation feeding a reduction, `sum(x * x)`, makes such a group too).

    With `horizontal`, groups of which neither needs the other's results become one `fused`
    equation whose body holds them side by side (one kernel call runs them all) when they
    compute the same equations on operands of their own shape (the same activation on several
    tensors), or when only the program's caller reads their results (an optimizer's update of
    every parameter and state). Groups ending in a reduction stay apart.
    `singles(eqn)`: a lone equation also makes a group where it says so (one whose NumPy
    implementation takes several passes, compiled into one).
    `recompute(eqn)`: says which equations are cheap enough to compute twice. A value a group
    computes for other groups only (a forward activation's by-products the backward pass reads)
    is then computed again inside each of those groups from the first group's inputs, instead of
    being stored and read back: fewer arrays written, read and kept alive.

    The annotated program is what a code generator walks: a `fused` body is all elementwise,
    but for that final reduction. `inline` turns it back into the flat program.
    """
    jaxpr, consts, rebuild = _split(program)
    groups = fusion_groups(program, fusible, 1 if reductions or singles else min_size,
                           broadcast_inputs)
    if reductions:
        groups = _absorb_reductions(jaxpr, groups, fusible, min_size if singles is None else 1)
    if singles is not None:
        groups = [g for g in groups if len(g.eqns) >= min_size or jaxpr.eqns[g.eqns[-1]]
                  .primitive.name in _REDUCTIONS or singles(jaxpr.eqns[g.eqns[0]])]
        if reductions:  # a reduction of a value no group computes: a group of its own
            taken = {i for g in groups for i in g.eqns}
            for i, eqn in enumerate(jaxpr.eqns):
                if (i not in taken and eqn.primitive.name in _REDUCTIONS
                        and len(eqn.invars) == 1 and type(eqn.invars[0]) is Var
                        and eqn.params.get("axes") and fusible(eqn) and singles(eqn)):
                    groups.append(FusionGroup([i], [eqn.invars[0]], list(eqn.outvars),
                                              eqn.invars[0].aval.shape))
            groups.sort(key=lambda g: g.eqns[0])
    if recompute is not None:
        groups = _recompute_cheap(jaxpr, groups, recompute)
    if horizontal:
        groups = _merge_parallel(jaxpr, groups)
    unit_of = {}
    for gi, g in enumerate(groups):
        for i in g.eqns:
            unit_of[i] = ("g", gi)
    units = {}
    for i in range(len(jaxpr.eqns)):
        units.setdefault(unit_of.get(i, ("e", i)), []).append(i)
    producer = {v: unit_of.get(i, ("e", i)) for i, e in enumerate(jaxpr.eqns) for v in e.outvars}
    deps = {u: set() for u in units}
    last_effect = None
    for i, eqn in enumerate(jaxpr.eqns):
        u = unit_of.get(i, ("e", i))
        deps[u].update(producer[a] for a in eqn.invars if type(a) is Var and a in producer)
        if _has_effects(eqn):
            if last_effect is not None:
                deps[u].add(last_effect)
            last_effect = u
    for gi, g in enumerate(groups):  # what a group computes again, it reads the inputs of
        inside = {v for i in (*g.eqns, *g.recomputed) for v in jaxpr.eqns[i].outvars}
        for i in g.recomputed:
            deps[("g", gi)].update(producer[a] for a in jaxpr.eqns[i].invars
                                   if type(a) is Var and a in producer and a not in inside)
    for u in deps:
        deps[u].discard(u)
    users = {u: [] for u in units}
    for u, ds in deps.items():
        for d in ds:
            users[d].append(u)
    pending = {u: len(ds) for u, ds in deps.items()}
    ready = [(units[u][0], u) for u, n in pending.items() if n == 0]
    heapq.heapify(ready)
    eqns, done = [], 0
    while ready:
        _, u = heapq.heappop(ready)
        done += 1
        if u[0] == "e":
            eqns.append(jaxpr.eqns[u[1]])
        elif groups[u[1]].outputs:  # (a group without outputs is computed where it is read)
            eqns.append(_fused_eqn(jaxpr, groups[u[1]]))
        for w in users[u]:
            pending[w] -= 1
            if pending[w] == 0:
                heapq.heappush(ready, (units[w][0], w))
    assert done == len(units), "fusion groups form a cycle"
    return rebuild(Jaxpr(jaxpr.constvars, jaxpr.invars, jaxpr.outvars, eqns), consts)


_REDUCTIONS = ("reduce_sum", "reduce_max", "reduce_min")


def _absorb_reductions(jaxpr, groups, fusible, min_size):
    readers = {}
    for i, eqn in enumerate(jaxpr.eqns):
        for a in eqn.invars:
            if type(a) is Var:
                readers.setdefault(a, []).append(i)
    outs = {v for v in jaxpr.outvars if type(v) is Var}
    kept = []
    for g in groups:
        if len(g.outputs) == 1 and g.outputs[0] not in outs:
            users = readers.get(g.outputs[0], [])
            red = jaxpr.eqns[users[0]] if len(users) == 1 else None
            if red is not None and red.primitive.name in _REDUCTIONS and len(red.invars) == 1 \
                    and red.params.get("axes") and not _has_effects(red) and fusible(red):
                kept.append(FusionGroup(g.eqns + [users[0]], g.inputs, list(red.outvars),
                                        g.shape))
                continue
        if len(g.eqns) >= min_size:
            kept.append(g)
    return kept


def _group_ancestors(jaxpr, groups):
    """Per group, the bit set of the groups with a path to it, each group taken as one unit (a
    path into any member and out of any member goes through it). In program order, to a fixed
    point: a member may come after an outside equation that reads another member."""
    group_of = {i: g for g, grp in enumerate(groups) for i in grp.eqns}
    producer = {v: i for i, e in enumerate(jaxpr.eqns) for v in e.outvars}
    anc = [0] * len(groups)

    def reaching(eqn, reach, anc):
        bits = 0
        for a in eqn.invars:
            j = producer.get(a) if type(a) is Var else None
            if j is not None:
                h = group_of.get(j)
                bits |= reach.get(j, 0) if h is None else anc[h] | 1 << h
        return bits

    while True:
        reach = {}   # outside eqn -> the groups with a path to it
        new = [0] * len(groups)
        last_effect = None   # effects keep their order: each follows the previous one
        for i, eqn in enumerate(jaxpr.eqns):
            g = group_of.get(i)
            if g is None:
                reach[i] = reaching(eqn, reach, anc)
                if _has_effects(eqn):
                    if last_effect is not None:
                        reach[i] |= reach[last_effect]
                    last_effect = i
            else:
                new[g] |= reaching(eqn, reach, anc) & ~(1 << g)
        for g, grp in enumerate(groups):   # (what a group computes again, it reads the inputs
            for i in grp.recomputed:       # of; counted as if stored: a superset of its paths)
                new[g] |= reaching(jaxpr.eqns[i], reach, anc) & ~(1 << g)
        if new == anc:
            return anc
        anc = new


def _merge_parallel(jaxpr, groups):
    """Groups of equal structure and no path between them, merged (see `fuse`)."""
    anc = _group_ancestors(jaxpr, groups)
    buckets = {}   # structure -> [(member group ids, bit set of members)]
    merged_into = {}
    outs = {v for v in jaxpr.outvars if type(v) is Var}
    for g, grp in enumerate(groups):
        if grp.recomputed:
            continue
        if all(v in outs for v in grp.outputs) and all(
                is_elementwise(jaxpr.eqns[i]) for i in grp.eqns):
            key = "final"   # results only the caller reads (new parameters and states)
        else:
            key = _structure(jaxpr, grp)
        if key is None:
            continue
        for members in buckets.setdefault(key, []):
            mask = members[1]
            unit_anc = 0
            for m in members[0]:
                unit_anc |= anc[m]
            if not (anc[g] & mask) and not unit_anc >> g & 1:
                members[0].append(g)
                members[1] |= 1 << g
                merged_into[g] = members[0][0]
                # the merged unit is reached from what reached either part, and so is all
                # that it reaches
                joined, mask = unit_anc | anc[g], members[1]
                for h in range(len(groups)):
                    if anc[h] & mask or mask >> h & 1:
                        anc[h] |= joined | (0 if mask >> h & 1 else mask)
                break
        else:
            buckets[key].append([[g], 1 << g])
    if not merged_into:
        return groups
    members_of = {b[0][0]: b[0] for lists in buckets.values() for b in lists if len(b[0]) > 1}
    out = []
    for g, grp in enumerate(groups):
        if g in members_of:
            parts = [groups[m] for m in members_of[g]]
            ins = [v for p in parts for v in p.inputs]
            out.append(FusionGroup(sorted(i for p in parts for i in p.eqns),
                                   list(dict.fromkeys(ins)),
                                   [v for p in parts for v in p.outputs], grp.shape))
        elif g not in merged_into:
            out.append(grp)
    return out


def _structure(jaxpr, group):
    """A key equal for groups computing the same equations on operands of their own shape (or
    rank 0), or None for a group that broadcasts an operand or reduces."""
    index, key = {}, []
    for v in group.inputs:
        if v.aval.shape not in (group.shape, ()):
            return None
        index[v] = ("in", len(index), v.aval.ndim == 0, str(v.aval.dtype))
    for n, i in enumerate(group.eqns):
        eqn = jaxpr.eqns[i]
        if not is_elementwise(eqn) or eqn.outvars[0].aval.shape != group.shape:
            return None
        try:
            params = _param_key(dict(eqn.params))
        except _Unhashable:
            return None
        args = tuple(index[a] if type(a) is Var else _literal_key(a) for a in eqn.invars)
        key.append((eqn.primitive.name, params, args, str(eqn.outvars[0].aval.dtype)))
        index[eqn.outvars[0]] = ("eqn", n)
    return tuple(key), tuple(index[v] for v in group.outputs)


def _recompute_cheap(jaxpr, groups, cheap, limit=12):
    """Groups whose by-products for other groups are computed again there (see `fuse`)."""
    group_of = {i: g for g, grp in enumerate(groups) for i in grp.eqns}
    producer = {v: i for i, e in enumerate(jaxpr.eqns) for v in e.outvars}
    readers = {}
    for i, eqn in enumerate(jaxpr.eqns):
        for a in eqn.invars:
            if type(a) is Var:
                readers.setdefault(a, set()).add(i)
    program_outs = {v for v in jaxpr.outvars if type(v) is Var}
    extra = [set(grp.recomputed) for grp in groups]
    outputs = [list(grp.outputs) for grp in groups]
    changed = False
    for g, grp in enumerate(groups):
        owned = set(grp.eqns)
        members = owned | extra[g]   # (what it computes again itself: its cones go through)
        for v in grp.outputs:
            outside = readers.get(v, set()) - owned
            if v in program_outs or not outside or any(
                    group_of.get(r) in (None, g) or groups[group_of[r]].shape != grp.shape
                    for r in outside):
                continue
            cone, stored = _cone(jaxpr, v, members, producer, cheap, limit)
            if cone is None:
                continue
            for r in outside:
                extra[group_of[r]] |= cone
            outputs[g].remove(v)
            outputs[g] += [t for t in stored if t not in outputs[g]]
            changed = True
    if not changed:
        return groups
    out = []
    for g, grp in enumerate(groups):
        rec = tuple(sorted(extra[g] - set(grp.eqns)))
        body = set(grp.eqns) | set(rec)
        defined = {v for i in body for v in jaxpr.eqns[i].outvars}
        inputs = []
        for i in sorted(body):
            for a in jaxpr.eqns[i].invars:
                if type(a) is Var and a not in defined and a not in inputs:
                    inputs.append(a)
        out.append(FusionGroup(grp.eqns, inputs, outputs[g], grp.shape, rec))
    return out


def _cone(jaxpr, v, members, producer, cheap, limit):
    """(equations computing v from its group's inputs, values they read that the group must
    still store), or (None, None) when that is not cheap: a transcendental function's result
    is stored rather than computed again."""
    cone, stored, stack = set(), [], [v]
    while stack:
        x = stack.pop()
        i = producer.get(x)
        if i is None or i not in members or i in cone:
            continue
        eqn = jaxpr.eqns[i]
        if not cheap(eqn):
            if x is v:
                return None, None
            stored.append(x)
            continue
        cone.add(i)
        if len(cone) > limit:
            return None, None
        stack.extend(a for a in eqn.invars if type(a) is Var)
    return cone, stored


def _fused_eqn(jaxpr, group):
    if group.recomputed or len(group.outputs) < len({v for i in group.eqns
                                                      for v in jaxpr.eqns[i].outvars}):
        # members whose values another group computes again may be dead here: only what the
        # outputs need is kept, and the inputs are what that reads
        need, keep = set(group.outputs), []
        for i in sorted(set(group.eqns) | set(group.recomputed), reverse=True):
            eqn = jaxpr.eqns[i]
            if any(v in need for v in eqn.outvars):
                keep.append(eqn)
                need.update(a for a in eqn.invars if type(a) is Var)
        keep.reverse()
        defined = {v for e in keep for v in e.outvars}
        inputs = [v for v in group.inputs if v in need and v not in defined]
        body = Jaxpr([], inputs, group.outputs, keep)
        return Eqn(fused_p, inputs, group.outputs, {"jaxpr": ClosedJaxpr(body, [])},
                   jaxpr.eqns[group.eqns[0]].source_info)
    body = Jaxpr([], group.inputs, group.outputs, [jaxpr.eqns[i] for i in group.eqns])
    first = jaxpr.eqns[group.eqns[0]]
    return Eqn(fused_p, group.inputs, group.outputs, {"jaxpr": ClosedJaxpr(body, [])},
               first.source_info)


# ---------------------------------------------------------------------------------------------
# The pipeline

def optimize(program, max_rounds=4, differentiable=False):
    """inline, then dce ∘ simplify ∘ cse ∘ dce ∘ fold_constants until nothing changes (at most
    `max_rounds` rounds). The result computes the same values with the same signature; with
    `differentiable` (a program transformed further) also the same derivatives, custom rules
    included."""
    program = inline(program, keep_custom_rules=differentiable)
    for _ in range(max_rounds):
        new = dce(simplify(cse(dce(fold_constants(program))), differentiable))
        if _fingerprint(new) == _fingerprint(program):
            return new
        program = new
    return program


# Primitives that compile a sub-program (loop bodies, branches) optimize it with this pipeline;
# they reach it through the interpreters' hook, below them (funcgrad/interpreters/programs.py).
set_optimizer(optimize)


def _fingerprint(program):
    """A cheap summary that changes whenever a pass changed the program: the equations'
    primitives, their input and output variables (by identity: passes build new Vars for what
    they rewrite) and literal values, and the constants."""
    jaxpr, consts, _ = _split(program)
    eqns = tuple((e.primitive.name, tuple(id(v) if type(v) is Var else repr(v) for v in e.invars),
                  tuple(id(v) for v in e.outvars)) for e in jaxpr.eqns)
    outs = tuple(id(v) if type(v) is Var else repr(v) for v in jaxpr.outvars)
    return eqns, outs, tuple(id(v) for v in jaxpr.constvars), tuple(id(c) for c in consts)
