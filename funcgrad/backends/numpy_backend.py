"""The "numpy" backend's code generator: an optimized program becomes one straight-line Python
function, the readable reference every other CPU path is checked against.

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
import time

import numpy as np

from ..core import Literal, Var, is_small_float
from ..core.errors import FP_QUIET, fp_quiet_set, fp_reset
from ..core.lowering import single_ufunc
from .codegen import Executable, eqn_names, param_names

# Rank-0 float equations written as Python operators on NumPy scalars (see compile_jaxpr), by
# the NumPy ufunc the equation is.
_SCALAR_OPS = {"add": "{} + {}", "subtract": "{} - {}", "multiply": "{} * {}",
               "true_divide": "{} / {}", "power": "{} ** {}", "negative": "-{}"}

# Primitives whose result is a freshly allocated array (safe to overwrite once dead). Everything
# else may return a view of an input (reshape, transpose, broadcast, slice, ...) or an input
# itself, so its result is never written in place, and its inputs become "shared".
_FRESH = {"dot_general", "reduce_sum", "reduce_max", "reduce_min", "reduce_prod",
          "convert_element_type", "integer_pow", "logistic", "rsqrt", "concatenate", "pad"}


def ufunc_of(eqn):
    """The NumPy ufunc name when the equation is exactly one ufunc of its operands (its
    primitive's lowering, funcgrad.core.lowering), for `out=` and direct calls; else None."""
    prim = eqn.primitive
    if not getattr(prim, "elementwise", False) or len(eqn.outvars) != 1:
        return None
    return single_ufunc(prim, [a.aval.dtype for a in eqn.invars], eqn.params)


def _fresh(eqn):
    return ufunc_of(eqn) is not None or eqn.primitive.name in _FRESH


def _as_array(x):
    return x if type(x) is np.ndarray else np.asarray(x)


def compile_jaxpr(jaxpr, xp=np, donated=(), compile_body=None, special=None, extra_names=None,
                  profile=False, quiet=True):
    """Generate `run(*consts, *args) -> list of outputs` for a Jaxpr: an Executable.

    `donated`: indices of invars whose buffers the caller gives up (they may be overwritten).
    `compile_body(jaxpr, xp=)`: compiles the sub-programs of control flow (jit's pipeline).
    `special(eqn, fn, ins, outs, namespace, reusable) -> lines or None`: another generator's
    code for some equations (the compiled CPU backend's kernels): statements assigning the
    equation's outputs `outs` (their names), written into this function as they are;
    `reusable(aval, taken)` names an input whose buffer an output may take over (see
    `reusable_input`); `extra_names`: the names those statements use.
    `profile`: the function also adds each equation's time (its statements and the `del`
    after them) to `executable.times[k]` (see funcgrad/transforms/profile.py); a callable
    `profile` is the clock to read (default time.perf_counter).
    `quiet`: the function switches NumPy's floating-point errors to "ignore" while it runs
    (inf/NaN without RuntimeWarnings, as the eager `bind` and JAX; see core/errors.py). Bodies
    of control flow, called from inside such a function, are compiled without it.
    """
    compile_body = compile_body or (lambda j, xp=xp, donated=(): compile_jaxpr(j, xp, donated,
                                                                                quiet=False))
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
                 "_fp_reset": fp_reset, "_FP_QUIET": FP_QUIET, **(extra_names or {})}
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
        ufunc = ufunc_of(eqn) if xp is np else None
        target = _inplace_target(eqn, ufunc, dead, owned, shared, out_set)
        if prim.name == "stop_gradient":  # only matters to autodiff, which is done by now
            lines.append(f"    {outs} = {ins[0]}")
            shared.update(a for a in eqn.invars if type(a) is Var)
            shared.update(eqn.outvars)
            if dead:
                lines.append(f"    del {', '.join(names[v] for v in dead)}")
            if profile:
                lines.append(f"    _t1 = _clock(); _times[{k}] += _t1 - _t0; _t0 = _t1")
            continue
        extra = special(eqn, f"{prim.name}_{k}", ins, [names[v] for v in eqn.outvars],
                        namespace, functools.partial(reusable_input, eqn, dead=dead, owned=owned,
                                                     shared=shared, out_set=out_set)) \
            if special else None
        if extra is not None:
            call = None
        elif target is not None:
            fn = f"np_{ufunc}"
            namespace[fn] = getattr(np, ufunc)
            call = f"{fn}({', '.join(ins)}, out={names[target]})"
        elif eqn.outvars and eqn.outvars[0] in implicit:
            call = f"{ins[0]}.reshape({_expanded_shape(eqn)!r})"  # the ufunc broadcasts it
        elif xp is np and (direct := _direct_call(eqn, ins, namespace)) is not None:
            call = direct
        elif ufunc in _SCALAR_OPS and eqn.outvars[0].aval.ndim == 0 \
                and eqn.outvars[0].aval.dtype.kind in "fiu":
            # rank 0 (step counts, bias corrections): a Python operator on NumPy scalars is
            # ~10x cheaper than a ufunc call on 0-d arrays, with the same result (integers wrap
            # silently: the function, or the one whose loop body it is, runs with NumPy's
            # floating-point errors off)
            ops = [scalar_name(a) if type(a) is Literal else n for a, n in zip(eqn.invars, ins)]
            call = _SCALAR_OPS[ufunc].format(*ops)
        elif ufunc is not None and eqn.outvars[0].aval.dtype.kind in "fc":
            fn = f"np_{ufunc}"  # a plain ufunc call: no wrapper in between
            namespace[fn] = getattr(np, ufunc)
            call = f"{fn}({', '.join(ins)})"
            if eqn.outvars[0].aval.ndim == 0:
                call = f"_asarray({call})"
        else:
            fn = f"{prim.name}_{k}"
            compile_rule = getattr(prim, "compile_rule", None)
            if compile_rule is not None:  # e.g. control flow: loops over compiled bodies
                namespace[fn] = compile_rule(xp, compile_body, **eqn.params)
            else:
                namespace[fn] = functools.partial(prim.impl, xp, **eqn.params)
            call = f"{fn}({', '.join(ins)})"
            if not prim.multiple_results and eqn.outvars[0].aval.ndim == 0:
                call = f"_asarray({call})"
        if extra is not None:
            eqn_lines.update((len(lines) + i, eqn) for i in range(len(extra)))
            lines.extend(extra)
        else:
            eqn_lines[len(lines)] = eqn  # body line index (made 1-based source lines below)
            lines.append(f"    {outs} = {call}" if eqn.outvars else f"    {call}")
        fresh = extra is not None or _fresh(eqn)
        if extra is not None:  # a kernel's outputs are new arrays
            owned.update(eqn.outvars)
        elif fresh and not prim.multiple_results:
            owned.add(eqn.outvars[0])
        elif not fresh:
            shared.update(a for a in eqn.invars if type(a) is Var)
        gone = [names[v] for v in dead]
        if gone:
            lines.append(f"    del {', '.join(gone)}")
        if profile:
            lines.append(f"    _t1 = _clock(); _times[{k}] += _t1 - _t0; _t0 = _t1")
    outs = ", ".join(f"_asarray({name_of(v)})" if type(v) is Var and v.aval.ndim == 0
                     else name_of(v) for v in jaxpr.outvars)  # rank 0: arrays, not scalars
    lines.append(f"    return [{outs}]")
    if profile:  # the clock starts with the body
        lines.insert(0, "    _t0 = _clock()")
        eqn_lines = {line + 1: e for line, e in eqn_lines.items()}
        namespace["_clock"] = profile if callable(profile) else time.perf_counter
        namespace["_times"] = times = [0.0] * len(jaxpr.eqns)
    head = [f"def run({', '.join(params)}):",
            f"    # generated by funcgrad from a program of {len(jaxpr.eqns)} equations"]
    if quiet:  # NumPy's floating-point errors off while it runs: inf/NaN, no warnings
        head += ["    _fp = _fp_quiet_set(_FP_QUIET)", "    try:"]
        lines = ["    " + line for line in lines] + ["    finally:", "        _fp_reset(_fp)"]
    source = "\n".join(head + lines) + "\n"
    eqn_lines = {len(head) + 1 + i: eqn for i, eqn in eqn_lines.items()}
    exec(compile(source, "<funcgrad-jit>", "exec"), namespace)
    executable = Executable(namespace["run"], source, eqn_lines)
    if profile:
        executable.times = times
    return executable


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
    if name == "convert_element_type" and out.ndim == 0 and out.dtype.kind == "f" \
            and eqn.invars[0].aval.dtype.kind in "iuf":  # a scalar (bias corrections, counts)
        namespace[f"t_{out.dtype.name}"] = out.dtype.type
        return f"t_{out.dtype.name}({ins[0]})"
    if name == "broadcast_in_dim" and _expanded_shape(eqn) == out.shape:  # only adds 1-axes
        return f"{ins[0]}.reshape({out.shape!r})"
    if name == "dot_general" and out.ndim == 2 and eqn.invars[0].aval.ndim == 2 \
            and eqn.invars[1].aval.ndim == 2 and eqn.params.get("preferred_element_type") is None \
            and not eqn.params["dimension_numbers"][1][0] \
            and not any(is_small_float(v.aval.dtype) for v in eqn.invars):  # one matmul
        # (16-bit floats go through the implementation, which multiplies in float32 tiles)
        (lc, rc), _ = eqn.params["dimension_numbers"]
        namespace["np_matmul"] = np.matmul
        a = ins[0] if lc[0] == 1 else f"{ins[0]}.T"
        b = ins[1] if rc[0] == 0 else f"{ins[1]}.T"
        return f"np_matmul({a}, {b})"
    if name in _REDUCERS and not is_small_float(eqn.invars[0].aval.dtype):
        # (16-bit floats go through the implementation, which accumulates in float32)
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
                if not (ufunc_of(u) is not None and out.dtype.kind in "fc"
                        and out.shape == v.aval.shape and anchored):
                    cands.discard(v)
                    changed = True
                    break
    return cands


def _inplace_target(eqn, ufunc, dead, owned, shared, out_set):
    """The input buffer this elementwise equation (one NumPy `ufunc`) may overwrite, or None."""
    if ufunc is None:
        return None
    out = eqn.outvars[0].aval
    if out.ndim == 0 or out.dtype.kind not in "fc":
        return None
    return reusable_input(eqn, out, dead=dead, owned=owned, shared=shared, out_set=out_set)


def reusable_input(eqn, aval, taken=(), *, dead, owned, shared, out_set):
    """An input of `eqn` whose buffer an output of type `aval` may take over: dead after the
    equation, owned by the program (never a caller's array unless donated), seen by no view,
    not a program output, read once by the equation, of the same shape and dtype."""
    dead_set = set(dead)
    for a in eqn.invars:
        if (type(a) is Var and a in dead_set and a in owned and a not in shared
                and a not in out_set and a not in taken and a.aval.shape == aval.shape
                and a.aval.dtype == aval.dtype and eqn.invars.count(a) == 1):
            return a
    return None
