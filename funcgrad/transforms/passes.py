"""Program-to-program optimization passes: inlining, DCE, CSE, constant folding and algebraic
simplification (the fusion of elementwise equations, run after them by jit, is in fusion.py).

Every pass takes a `ClosedJaxpr` (or a bare `Jaxpr`, whose constants are then unknown) and returns
a new one of the same kind; the input is never mutated (Var objects are shared). The program's
input and output avals, its `in_tree`/`out_tree`, and the values it computes are unchanged.
Primitives with `effectful = True` are never removed, merged, folded or reordered.

    optimize(closed) = dce ∘ simplify ∘ cse ∘ dce ∘ fold_constants ∘ inline, to a fixed point

`optimize(closed, differentiable=True)` is for a program that is transformed further (jit called
inside grad, vmap, ...): custom derivative rules stay in it and no rewrite changes a derivative.
"""

from __future__ import annotations

import numpy as np

from ..core import (
    ClosedJaxpr,
    Eqn,
    Jaxpr,
    Literal,
    Tracer,
    Var,
    device_namespace,
    to_host,
)
from ..interpreters.programs import set_optimizer
from ..lax import elementwise as _ew
from ..lax import structural as _st
from .jaxpr_util import (
    UNKNOWN as _UNKNOWN,
)
from .jaxpr_util import (
    Unhashable as _Unhashable,
)
from .jaxpr_util import (
    has_effects as _has_effects,
)
from .jaxpr_util import (
    is_elementwise,
)
from .jaxpr_util import (
    literal_key as _literal_key,
)
from .jaxpr_util import (
    literal_value as _literal_value,
)
from .jaxpr_util import (
    param_key as _param_key,
)
from .jaxpr_util import (
    split_program as _split,
)

__all__ = ["inline", "dce", "cse", "fold_constants", "simplify", "optimize"]


# ---------------------------------------------------------------------------------------------
# Shared helpers

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
