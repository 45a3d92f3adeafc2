"""The core: abstract values, programs (jaxprs), primitives, traces and tracers."""

from .avals import ShapedArray, check_dtype, dtype_short, float0, get_aval, is_float
from .jaxpr import ClosedJaxpr, Eqn, Jaxpr, Literal, SourceInfo, Var, user_line, user_source_info
from .trace import (
    ConcretizationError,
    JaxprTrace,
    LeakedTracerError,
    Primitive,
    Trace,
    Tracer,
    array_namespace,
    as_value,
    bind,
    current_traces,
    device_namespace,
    eval_jaxpr,
    jaxpr_as_fun,
    make_jaxpr,
    new_trace,
    register_array_namespace,
    set_array_api,
    to_host,
    trace_to_jaxpr,
    transform_stack_str,
)
