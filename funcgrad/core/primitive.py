"""Primitives and `bind`.

Every operation on arrays ends in `bind(primitive, *args, **params)`. With no tracer among the
arguments the primitive's implementation runs at once on the arrays' namespace (`xp`: NumPy or
CuPy), unless fg.eval_shape is tracing (`constant_stager`). Otherwise the trace of highest level
among the arguments processes it; arguments of a lower level (or plain arrays) are first lifted
into that trace as its constants.
"""

from __future__ import annotations

import numpy as np

from . import errors as _errors
from . import placement as _placement
from .avals import PY_SCALARS
from .errors import FP_QUIET, add_error_context, check_nans, describe, fp_quiet_set, fp_reset
from .placement import device_args, namespaces, register_device_arrays
from .trace import Tracer, constant_stager, constant_staging, leak_error


class Primitive:
    """An operation with its rules side by side (see funcgrad/lax for the definitions).

    impl(xp, *args, **params)            -> array(s), computed with the array namespace xp
    abstract_eval(*avals, **params)      -> ShapedArray(s): the shape/dtype rule
    jvp(primals, tangents, out, **params) -> output tangent(s); tangents are never all None,
                                            a None tangent is a symbolic zero
    vjp(ct, primals, out, active, **params) -> one cotangent (or None) per input; `active[i]` says
                                            whether input i needs one; primals and out hold values
                                            where `residuals` keeps them and avals elsewhere
    batch(args, dims, **params)          -> (out, out_dim): the batching rule (vmap)
    compile_rule(xp, compile_jaxpr, **params) -> callable (optional): how jit's code generator
                                            runs it (primitives holding sub-programs compile
                                            their bodies once instead of interpreting them)
    effectful (optional attribute): True for primitives with side effects (fg.debug callbacks,
      collectives): jit's passes never remove, merge, fold or reorder their equations.
    Optional hooks the interpreters (funcgrad/interpreters) and passes look for:
      grad_rule(trace, tracers, params) -> output tracers: reverse mode records its own tape entry
        (control flow, custom_vjp_call); jvp_with_primal(primals, tangents, **params) -> (out,
        tangents): forward mode computes the output too (custom rules); custom_rule: a call
        whose `jaxpr` param jit's code generator may inline (its rule matters only to
        transforms); inline_call: a call the passes always inline; collective: the batching rule
        gets the vmap trace as `frame`; residuals_in_closure (on tape entries): residuals that
        vjp_jaxpr cannot substitute.
    residuals: what a backward pass must keep of this primitive's values: "in", "out", "inout",
      "none" (linear primitives need only shapes) or "cross" (input i kept only when another input
      is active, as for mul and dot_general), or a tuple of the input positions to keep.
    """

    def __init__(self, name, *, multiple_results=False, impl=None, abstract_eval=None, jvp=None,
                 vjp=None, batch=None, residuals="in", differentiable=True):
        self.name = name
        self.multiple_results = multiple_results
        self.impl = impl
        self.abstract_eval = abstract_eval
        self.jvp = jvp
        self.vjp = vjp
        self.batch = batch
        self.residuals = residuals
        self.differentiable = differentiable

    def bind(self, *args, **params):
        return bind(self, *args, **params)

    def __repr__(self):
        return self.name


def bind(prim, *args, **params):
    """Apply a primitive: eagerly on arrays, or through the highest-level trace among the args."""
    top = None
    for a in args:
        if type(a) is Tracer:
            t = a._trace
            if top is None or t.level > top.level:
                top = t
    if top is None and constant_staging[0]:
        top = constant_stager()  # eval_shape: operations on constants are recorded too
    if top is None:
        # a CuPy (or other) array among the arguments, or a GPU default backend?
        if _placement.routing:
            xp, args = device_args(args)
        else:
            xp = np
        fp = fp_quiet_set(FP_QUIET)  # inf/NaN without NumPy warnings (see core/errors.py)
        try:
            out = prim.impl(xp, *args, **params)
        except Exception as e:
            add_error_context(e, prim, [describe(a) for a in args])
            raise
        finally:
            fp_reset(fp)
        if prim.multiple_results:
            out = tuple(o if type(o) is np.ndarray else _as_array(o) for o in out)
        elif type(out) is not np.ndarray:
            out = _as_array(out)
        if _errors.debug_nans:
            check_nans(prim, args, out)
        return out
    if not top.alive:
        raise leak_error(top)
    tracers = [top.to_tracer(a) for a in args]
    try:
        return top.process(prim, tracers, params)
    except Exception as e:
        add_error_context(e, prim, [t.aval.str_short() for t in tracers])
        raise


def _as_array(x):
    if isinstance(x, np.generic) or type(x) in PY_SCALARS:
        return np.asarray(x)
    if isinstance(x, np.ndarray):  # a view of an ndarray subclass input: a plain array
        return x.view(np.ndarray)
    if not namespaces and hasattr(x, "__cuda_array_interface__"):
        register_device_arrays()
    return x
