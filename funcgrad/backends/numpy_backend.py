"""Code generation for NumPy: an optimized program becomes one straight-line Python function.

The generated function calls each primitive's implementation directly (no per-equation dispatch,
no tracing), drops every buffer right after its last use (`del`), and computes elementwise
operations in place (`out=`) into a buffer that is dead after the operation and owned by the
program: an intermediate the program allocated itself, never a caller's array unless the caller
donated it, and never a buffer that a view (reshape, transpose, broadcast, slice) may still see.
The source is kept for inspection (`fg.jit(f).lower(*args).as_text()`).
"""

from __future__ import annotations

import functools
import itertools

import numpy as np

from ..core import Literal, Var
from ..core.errors import FP_QUIET, fp_quiet_set, fp_reset
from ..lax import elementwise as ew

# Elementwise primitives whose implementation is one NumPy ufunc: these can write into `out=`.
# (Integer division and remainder are not plain ufuncs here, so only float operands qualify.)
_UFUNCS = {
    ew.neg_p: "negative", ew.exp_p: "exp", ew.exp2_p: "exp2", ew.log_p: "log",
    ew.log1p_p: "log1p", ew.expm1_p: "expm1", ew.sin_p: "sin", ew.cos_p: "cos", ew.tan_p: "tan",
    ew.asin_p: "arcsin", ew.acos_p: "arccos", ew.atan_p: "arctan", ew.sinh_p: "sinh",
    ew.cosh_p: "cosh", ew.tanh_p: "tanh", ew.asinh_p: "arcsinh", ew.acosh_p: "arccosh",
    ew.atanh_p: "arctanh", ew.sqrt_p: "sqrt", ew.cbrt_p: "cbrt", ew.abs_p: "absolute",
    ew.floor_p: "floor", ew.ceil_p: "ceil", ew.sign_p: "sign",
    ew.add_p: "add", ew.sub_p: "subtract", ew.mul_p: "multiply", ew.div_p: "true_divide",
    ew.max_p: "maximum", ew.min_p: "minimum", ew.pow_p: "power", ew.atan2_p: "arctan2",
}

# Rank-0 float equations written as Python operators on NumPy scalars (see compile_jaxpr).
_SCALAR_OPS = {ew.add_p: "{} + {}", ew.sub_p: "{} - {}", ew.mul_p: "{} * {}",
               ew.div_p: "{} / {}", ew.pow_p: "{} ** {}", ew.neg_p: "-{}"}

# Primitives whose result is a freshly allocated array (safe to overwrite once dead). Everything
# else may return a view of an input (reshape, transpose, broadcast, slice, ...) or an input
# itself, so its result is never written in place, and its inputs become "shared".
_FRESH = {"dot_general", "reduce_sum", "reduce_max", "reduce_min", "reduce_prod",
          "convert_element_type", "integer_pow", "logistic", "rsqrt", "concatenate", "pad"}


def _fresh(prim):
    return prim in _UFUNCS or prim.name in _FRESH


class Compiled:
    """A generated Python function plus its source text."""

    def __init__(self, fn, source, eqn_lines=None):
        self.fn = fn
        self.source = source
        self.eqn_lines = eqn_lines or {}  # line of the source -> the equation it runs
        self.code = fn.__code__           # the generated function whose lines those are

    def eqn_of_error(self, exc):
        """The equation whose generated line raised `exc` (for error messages), or None."""
        tb = exc.__traceback__
        found = None
        while tb is not None:
            if tb.tb_frame.f_code is self.code:
                found = self.eqn_lines.get(tb.tb_lineno)
            tb = tb.tb_next
        return found

    def __call__(self, *args):
        return self.fn(*args)


def _as_array(x):
    return x if type(x) is np.ndarray else np.asarray(x)


def param_names(jaxpr, names):
    """Name the generated function's parameters: c<i> for constants, then a<i> for arguments."""
    for i, v in enumerate(jaxpr.constvars):
        names[v] = f"c{i}"
    for i, v in enumerate(jaxpr.invars):
        names[v] = f"a{i}"
    return [names[v] for v in (*jaxpr.constvars, *jaxpr.invars)]


def eqn_names(eqn, name_of, names, counter):
    """(input expressions, assignment target) of one equation; its outputs get new v<n> names."""
    ins = [name_of(a) for a in eqn.invars]
    for v in eqn.outvars:
        names[v] = f"v{next(counter)}"
    outs = ", ".join(names[v] for v in eqn.outvars)
    if eqn.primitive.multiple_results and len(eqn.outvars) == 1:
        outs += ","
    return ins, outs


def compile_jaxpr(jaxpr, xp=np, donated=(), quiet=True):
    """Generate `run(*consts, *args) -> list of outputs` for a Jaxpr.

    `donated`: indices of invars whose buffers the caller gives up (they may be overwritten).
    `quiet`: the function switches NumPy's floating-point errors to "ignore" while it runs
    (inf/NaN without RuntimeWarnings, as the eager `bind` and JAX; see core/errors.py). Bodies
    of control flow, called from inside such a function, are compiled without it.
    """
    names = {}
    counter = itertools.count()

    def name_of(v):
        if type(v) is Literal:
            key = ("lit", id(v))
            if key not in names:
                names[key] = f"lit{next(counter)}"
                namespace[names[key]] = np.asarray(v.val, v.aval.dtype)
            return names[key]
        return names[v]

    def scalar_name(v):  # a literal as a NumPy scalar, for the rank-0 operator forms
        key = ("scalar", id(v))
        if key not in names:
            names[key] = f"s{next(counter)}"
            namespace[names[key]] = v.aval.dtype.type(v.val)
        return names[key]

    namespace = {"_xp": xp, "_asarray": _as_array, "_fp_quiet_set": fp_quiet_set,
                 "_fp_reset": fp_reset, "_FP_QUIET": FP_QUIET}
    params = param_names(jaxpr, names)

    implicit = _implicit_broadcasts(jaxpr) if xp is np else set()
    owned = {v for i, v in enumerate(jaxpr.invars) if i in donated}
    shared = set()   # buffers some view may still look at: never written in place
    frees = jaxpr.frees()
    out_set = {v for v in jaxpr.outvars if type(v) is Var}
    lines = []
    eqn_lines = {}
    for k, (eqn, dead) in enumerate(zip(jaxpr.eqns, frees)):
        prim = eqn.primitive
        ins, outs = eqn_names(eqn, name_of, names, counter)
        target = _inplace_target(eqn, dead, owned, shared, out_set)
        if prim.name == "stop_gradient":  # only matters to autodiff, which is done by now
            lines.append(f"    {outs} = {ins[0]}")
            shared.update(a for a in eqn.invars if type(a) is Var)
            shared.update(eqn.outvars)
            if dead:
                lines.append(f"    del {', '.join(names[v] for v in dead)}")
            continue
        if target is not None and xp is np:
            fn = f"np_{_UFUNCS[prim]}"
            namespace[fn] = getattr(xp, _UFUNCS[prim])
            call = f"{fn}({', '.join(ins)}, out={names[target]})"
        elif eqn.outvars and eqn.outvars[0] in implicit:
            call = f"{ins[0]}.reshape({_expanded_shape(eqn)!r})"  # the ufunc broadcasts it
        elif xp is np and (direct := _direct_call(eqn, ins, namespace)) is not None:
            call = direct
        elif xp is np and prim in _SCALAR_OPS and eqn.outvars[0].aval.ndim == 0 \
                and eqn.outvars[0].aval.dtype.kind == "f":
            # rank 0 (step counts, bias corrections): a Python operator on NumPy scalars is
            # ~10x cheaper than a ufunc call on 0-d arrays, with the same float32/64 result
            ops = [scalar_name(a) if type(a) is Literal else n for a, n in zip(eqn.invars, ins)]
            call = _SCALAR_OPS[prim].format(*ops)
        elif prim in _UFUNCS and eqn.outvars[0].aval.dtype.kind in "fc" and xp is np:
            fn = f"np_{_UFUNCS[prim]}"  # a plain ufunc call: no wrapper in between
            namespace[fn] = getattr(xp, _UFUNCS[prim])
            call = f"{fn}({', '.join(ins)})"
            if eqn.outvars[0].aval.ndim == 0:
                call = f"_asarray({call})"
        else:
            fn = f"{prim.name}_{k}"
            compile_rule = getattr(prim, "compile_rule", None)
            if compile_rule is not None:  # e.g. control flow: loops over compiled bodies
                namespace[fn] = compile_rule(xp, _compile_body, **eqn.params)
            else:
                namespace[fn] = functools.partial(prim.impl, xp, **eqn.params)
            call = f"{fn}({', '.join(ins)})"
            if not prim.multiple_results and eqn.outvars[0].aval.ndim == 0:
                call = f"_asarray({call})"
        eqn_lines[len(lines)] = eqn  # body line index (made 1-based source lines below)
        lines.append(f"    {outs} = {call}" if eqn.outvars else f"    {call}")
        if _fresh(prim) and not prim.multiple_results:
            owned.add(eqn.outvars[0])
        elif not _fresh(prim):
            shared.update(a for a in eqn.invars if type(a) is Var)
        gone = [names[v] for v in dead]
        if gone:
            lines.append(f"    del {', '.join(gone)}")
    outs = ", ".join(f"_asarray({name_of(v)})" if type(v) is Var and v.aval.ndim == 0
                     else name_of(v) for v in jaxpr.outvars)  # rank 0: arrays, not scalars
    lines.append(f"    return [{outs}]")
    head = [f"def run({', '.join(params)}):",
            f"    # generated by funcgrad from a program of {len(jaxpr.eqns)} equations"]
    if quiet:  # NumPy's floating-point errors off while it runs: inf/NaN, no warnings
        head += ["    _fp = _fp_quiet_set(_FP_QUIET)", "    try:"]
        lines = ["    " + line for line in lines] + ["    finally:", "        _fp_reset(_fp)"]
    source = "\n".join(head + lines) + "\n"
    eqn_lines = {len(head) + 1 + i: eqn for i, eqn in eqn_lines.items()}
    exec(compile(source, "<funcgrad-jit>", "exec"), namespace)
    return Compiled(namespace["run"], source, eqn_lines)


_compile_body = functools.partial(compile_jaxpr, quiet=False)


_REDUCERS = {"reduce_sum": "add", "reduce_max": "maximum", "reduce_min": "minimum",
             "reduce_prod": "multiply"}


def _direct_call(eqn, ins, namespace):
    """NumPy calls written straight into the code for shape operations and reductions, whose
    static parameters the program already knows (output shapes, axes): no wrapper function."""
    name = eqn.primitive.name
    if not eqn.outvars:
        return None
    out = eqn.outvars[0].aval
    if name in ("reshape", "expand_dims", "squeeze"):
        return f"{ins[0]}.reshape({out.shape!r})"
    if name == "broadcast_in_dim" and _expanded_shape(eqn) == out.shape:  # only adds 1-axes
        return f"{ins[0]}.reshape({out.shape!r})"
    if name in _REDUCERS:
        fn = f"np_{_REDUCERS[name]}_reduce"
        namespace[fn] = getattr(np, _REDUCERS[name]).reduce
        dtype = eqn.invars[0].aval.dtype
        namespace[f"dt_{dtype.name}"] = dtype
        call = f"{fn}({ins[0]}, axis={eqn.params['axes']!r}, dtype=dt_{dtype.name})"
        return f"_asarray({call})" if out.ndim == 0 else call
    return None


def _expanded_shape(eqn):
    """broadcast_in_dim's operand reshaped to the output's rank (1 on the new axes)."""
    shape = [1] * len(eqn.params["shape"])
    for i, d in enumerate(eqn.params["broadcast_dimensions"]):
        shape[d] = eqn.invars[0].aval.shape[i]
    return tuple(shape)


def _implicit_broadcasts(jaxpr):
    """broadcast_in_dim results that need not be materialized: every use is a float ufunc
    whose output has the broadcast shape and which has another, full-shape operand, so NumPy's
    own broadcasting of the operand (only reshaped) gives the same result, without the call to
    np.broadcast_to (microseconds of Python) and with a loop the ufunc runs as fast."""
    users = {}
    for e in jaxpr.eqns:
        for a in e.invars:
            if type(a) is Var:
                users.setdefault(a, []).append(e)
    outs = {v for v in jaxpr.outvars if type(v) is Var}
    cands = {e.outvars[0] for e in jaxpr.eqns
             if e.primitive.name == "broadcast_in_dim" and e.outvars[0] not in outs
             and e.outvars[0] in users}
    changed = True
    while changed:  # drop candidates with a use that no full-shape operand anchors
        changed = False
        for v in list(cands):
            for u in users[v]:
                out = u.outvars[0].aval
                anchored = any(type(a) is Var and a not in cands and a.aval.shape == out.shape
                               for a in u.invars)
                if not (u.primitive in _UFUNCS and out.dtype.kind in "fc"
                        and out.shape == v.aval.shape and anchored):
                    cands.discard(v)
                    changed = True
                    break
    return cands


def _inplace_target(eqn, dead, owned, shared, out_set):
    """The input buffer this elementwise equation may overwrite, or None."""
    prim = eqn.primitive
    if prim not in _UFUNCS:
        return None
    out = eqn.outvars[0].aval
    if out.ndim == 0 or out.dtype.kind not in "fc":
        return None
    dead_set = set(dead)
    for a in eqn.invars:
        if (type(a) is Var and a in dead_set and a in owned and a not in shared
                and a not in out_set and a.aval.shape == out.shape and a.aval.dtype == out.dtype
                and eqn.invars.count(a) == 1):
            return a
    return None
