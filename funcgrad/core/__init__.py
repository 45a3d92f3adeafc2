"""The core: abstract values, programs (jaxprs), primitives, traces and tracers."""

from .avals import (
    ShapedArray,
    check_dtype,
    dtype_kind,
    dtype_short,
    float0,
    get_aval,
    is_float,
    is_small_float,
)
from .jaxpr import ClosedJaxpr, Eqn, Jaxpr, Literal, SourceInfo, Var, user_line, user_source_info
from .placement import (
    array_namespace,
    as_value,
    device_namespace,
    register_array_namespace,
    to_host,
)
from .primitive import Primitive, bind
from .staging import JaxprTrace, eval_jaxpr, jaxpr_as_fun, make_jaxpr, trace_to_jaxpr
from .trace import (
    ConcretizationError,
    LeakedTracerError,
    Trace,
    Tracer,
    constant_stager,
    current_traces,
    new_trace,
    runs_now,
    set_array_api,
    transform_stack_str,
)
