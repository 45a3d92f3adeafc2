"""Traces, the trace stack, the axis environment, and the one `Tracer` class.

A transform is a kind of trace: each live transform is one `Trace` on the stack, one level above
the traces that were live when it started, and the values it follows are `Tracer`s of that trace.
`Trace` and `Tracer` refer to each other (a trace lifts values into its tracers, a tracer asks its
trace whether it is still alive and concrete), so they live in one module. The axis environment
(named axes bound by vmap and by process groups) is part of the same dynamic state.
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np

from .jaxpr import user_line


class ConcretizationError(TypeError):
    """A Python value (bool, int, float, NumPy array) was asked of an abstract traced value."""


class LeakedTracerError(Exception):
    """A tracer was used after the transform that created it had returned."""


# ---------------------------------------------------------------------------------------------
# Traces and the trace stack

_trace_stack: list = []


class Trace:
    """One level of tracing. Subclasses define how primitives are processed.

    concrete: tracers of this trace know their value, so Python control flow may read them.
    staging: the trace records a program (make_jaxpr, jit, eval_shape); `stages_constants`: it
      also records the operations none of whose operands is a tracer (see `constant_stager`).
    """

    concrete = False
    staging = False
    stages_constants = False
    name = "trace"

    def __init__(self, level):
        self.level = level
        self.alive = True

    def to_tracer(self, x):
        if type(x) is Tracer:
            if x._trace is self:
                return x
            if not x._trace.alive or x._trace.level >= self.level:
                raise leak_error(x._trace)
        return self.lift(x)

    def lift(self, x):
        raise NotImplementedError

    def process(self, prim, tracers, params):
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}(level={self.level})"


def current_traces():
    return tuple(_trace_stack)


constant_staging = [0]  # live traces with stages_constants (eval_shape's), in any thread
_thread = threading.local()  # .staging: this thread's live staging traces, innermost last


def constant_stager():
    """The trace that records an operation on constants only (no tracer among its operands), or
    None: run it now. Such operations are recorded by fg.eval_shape's trace, so that a function
    of constants (`eval_shape(lambda: model.init(0))`) computes nothing, while a transform
    started inside it that is not a program (grad, vmap) keeps it in effect. A program traced
    inside it (jit's, a control-flow body's) computes its constants at trace time, as jit
    always does: its program, cached or compiled, never holds a tracer of eval_shape's. Per
    thread: an eval_shape in one thread leaves the eager operations of the others alone."""
    if not constant_staging[0]:
        return None
    staging = getattr(_thread, "staging", None)
    if staging and staging[-1].stages_constants:
        return staging[-1]
    return None


def runs_now(values):
    """Whether an operation on `values` runs at once (rather than being recorded): no tracer
    among them, and no eval_shape recording operations on constants."""
    return not any(type(v) is Tracer for v in values) and constant_stager() is None


@contextlib.contextmanager
def staging_constants(trace):
    """Within the block, `trace` (a staging trace) records the operations on constants too."""
    trace.stages_constants = True
    constant_staging[0] += 1
    try:
        yield
    finally:
        constant_staging[0] -= 1
        trace.stages_constants = False


def transform_stack_str():
    """'jit > vmap > grad' style description of the live transforms, outermost first."""
    return " > ".join(t.name for t in _trace_stack)


@contextlib.contextmanager
def new_trace(trace_type, *args, **kwargs):
    """Start a trace one level above every live trace; it dies (tracers leak) on exit."""
    trace = trace_type(len(_trace_stack) + 1, *args, **kwargs)
    _trace_stack.append(trace)
    staging = _thread.__dict__.setdefault("staging", []) if trace.staging else None
    if staging is not None:
        staging.append(trace)
    try:
        yield trace
    finally:
        _trace_stack.remove(trace)
        if staging is not None:
            staging.remove(trace)
        trace.alive = False


def leak_error(trace):
    created = getattr(trace, "created_at", None)
    where = f" The transform was applied at {created}." if created else ""
    return LeakedTracerError(
        f"A tracer of a {trace.name} transform was used after that transform returned{user_line()}."
        f"{where} This happens when a traced value escapes the function, e.g. stored in a global, "
        "a list outside the function, or an object attribute. Return it from the function instead.")


# Named axes bound by vmap (and by multi-process runs), innermost last. A collective over a
# name whose value is not batched along it sees the axis here (e.g. psum of a constant = x * size).
# A frame bound by fg.distributed.data_parallel also carries its process group, an opaque object
# the collectives' implementations call into (see funcgrad/lax/parallel.py).
_axis_env: list = []


@contextlib.contextmanager
def axis_frame(name, size, group=None):
    if name is None:
        yield
        return
    _axis_env.append((name, size, group))
    try:
        yield
    finally:
        _axis_env.pop()


def _find_frame(name):
    for frame in reversed(_axis_env):
        if frame[0] == name:
            return frame
    bound = ", ".join(repr(f[0]) for f in _axis_env) or "none"
    raise NameError(f"unbound axis name {name!r}{user_line()}: collectives need an axis bound by "
                    f"an enclosing fg.vmap(..., axis_name={name!r}) or "
                    f"fg.distributed.data_parallel(..., axis_name={name!r}) (bound here: {bound}).")


def axis_env_key():
    """The bound axes (names, sizes, process groups) as a hashable key: a program traced under
    them (collectives, `axis_size`) is only valid under the same ones (jit's cache key)."""
    if not _axis_env:
        return ()
    return tuple((name, size, id(group)) for name, size, group in _axis_env)


def axis_size(name):
    """The number of lanes (or processes) of the named axis; NameError if it is not bound."""
    return _find_frame(name)[1]


def axis_group(name):
    """The process group bound to the innermost axis `name`, or None for a vmap axis."""
    return _find_frame(name)[2]


# ---------------------------------------------------------------------------------------------
# The one tracer class. Its array methods forward to funcgrad.numpy (installed by set_array_api),
# so that the core does not depend on the layers above it.

_array_api = None   # funcgrad.numpy: methods and operators call its functions by name
_hooks = {}         # what NumPy's protocols and indexing call: see set_array_api


def set_array_api(module, *, getitem, index_update, array_ufunc, array_function):
    """Install the array API tracers forward to: `module` (funcgrad.numpy) for methods and
    operators, and the functions behind `x[idx]`, `x.at[idx]` and NumPy's `__array_ufunc__` /
    `__array_function__` protocols."""
    global _array_api
    _array_api = module
    _hooks.update(getitem=getitem, index_update=index_update, array_ufunc=array_ufunc,
                  array_function=array_function)


class Tracer:
    """A value being traced: its abstract value, and (in concrete traces) its value.

    `val` holds the value at the level below (an array, or a tracer of an outer transform) when the
    trace computes values; `aux` is the trace's own data (a program Var, a tangent, a tape id...).
    """

    __slots__ = ("_trace", "aval", "val", "aux", "__weakref__")
    __array_priority__ = 1000

    def __init__(self, trace, aval, val=None, aux=None):
        self._trace = trace
        self.aval = aval
        self.val = val
        self.aux = aux

    shape = property(lambda self: self.aval.shape)
    dtype = property(lambda self: self.aval.dtype)
    ndim = property(lambda self: len(self.aval.shape))
    size = property(lambda self: self.aval.size)
    weak_type = property(lambda self: self.aval.weak_type)

    # -- Python values: allowed on concrete tracers only (DESIGN invariant 2) --
    def concrete_value(self, what):
        trace = self._trace
        if trace.concrete and trace.alive:
            v = self.val
            return v.concrete_value(what) if type(v) is Tracer else v
        if not trace.alive:
            raise leak_error(trace)
        raise concretization_error(self, what)

    def __bool__(self):
        return bool(self.concrete_value("bool()"))

    def __int__(self):
        return int(self.concrete_value("int()"))

    def __float__(self):
        return float(self.concrete_value("float()"))

    def __complex__(self):
        return complex(self.concrete_value("complex()"))

    def __index__(self):
        v = self.concrete_value("an index (__index__)")
        return int(np.asarray(v).item()) if np.asarray(v).dtype.kind in "iub" else v.__index__()

    def __array__(self, dtype=None, copy=None):
        v = np.asarray(self.concrete_value("np.asarray()"))
        return v if dtype is None else v.astype(dtype)

    def item(self):
        return np.asarray(self.concrete_value(".item()")).item()

    def tolist(self):
        return np.asarray(self.concrete_value(".tolist()")).tolist()

    def __hash__(self):
        raise TypeError(f"Traced arrays are unhashable (got {self.aval.str_short()}). Use a "
                        "static argument (static_argnums) for values used as dict keys or cache "
                        "keys.")

    def __len__(self):
        if not self.shape:
            raise TypeError("len() of a 0-d traced array")
        return self.shape[0]

    def __iter__(self):
        if not self.shape:
            raise TypeError("iteration over a 0-d traced array")
        return (self[i] for i in range(self.shape[0]))

    def __repr__(self):
        if self._trace.concrete and self._trace.alive:
            try:
                return f"Traced<{self.aval.str_short()}>(value={self.concrete_value('repr')!r})"
            except ConcretizationError:
                pass
        return f"Traced<{self.aval.str_short()}>with<{self._trace.name}>"

    def __str__(self):
        if self._trace.concrete and self._trace.alive:
            try:
                return str(self.concrete_value("str"))
            except ConcretizationError:
                pass
        return repr(self)

    def __format__(self, spec):
        if spec and self._trace.concrete:
            return format(np.asarray(self.concrete_value("format")).item(), spec)
        return str(self)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return _hooks["array_ufunc"](ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        return _hooks["array_function"](func, args, kwargs)

    def __getitem__(self, idx):
        return _hooks["getitem"](self, idx)

    def __setitem__(self, idx, value):
        raise TypeError("Traced arrays are immutable: use x = x.at[idx].set(value) instead of "
                        "x[idx] = value.")

    @property
    def at(self):
        return _hooks["index_update"](self)

    @property
    def T(self):
        return _array_api.transpose(self)

    @property
    def mT(self):
        return _array_api.matrix_transpose(self)

    @property
    def real(self):
        return _array_api.real(self)

    @property
    def imag(self):
        return _array_api.imag(self)


def _binop(name, reflected=False):
    if reflected:
        def op(self, other):
            return getattr(_array_api, name)(other, self)
    else:
        def op(self, other):
            return getattr(_array_api, name)(self, other)
    return op


def _method(name):
    def method(self, *args, **kwargs):
        return getattr(_array_api, name)(self, *args, **kwargs)
    method.__name__ = name
    return method


for _dunder, _fn in [("add", "add"), ("sub", "subtract"), ("mul", "multiply"),
                     ("truediv", "true_divide"), ("floordiv", "floor_divide"), ("mod", "mod"),
                     ("pow", "power"), ("matmul", "matmul"), ("and", "bitwise_and"),
                     ("or", "bitwise_or"), ("xor", "bitwise_xor"), ("lshift", "left_shift"),
                     ("rshift", "right_shift"), ("divmod", "divmod")]:
    setattr(Tracer, f"__{_dunder}__", _binop(_fn))
    setattr(Tracer, f"__r{_dunder}__", _binop(_fn, reflected=True))
for _dunder, _fn in [("lt", "less"), ("le", "less_equal"), ("gt", "greater"),
                     ("ge", "greater_equal"), ("eq", "equal"), ("ne", "not_equal")]:
    setattr(Tracer, f"__{_dunder}__", _binop(_fn))
for _dunder, _fn in [("neg", "negative"), ("pos", "positive"), ("abs", "abs"),
                     ("invert", "invert")]:
    setattr(Tracer, f"__{_dunder}__", _method(_fn))
for _name in ["reshape", "astype", "sum", "mean", "max", "min", "prod", "argmax", "argmin",
              "transpose", "squeeze", "flatten", "ravel", "var", "std", "any", "all", "cumsum",
              "cumprod", "clip", "dot", "round", "conj", "conjugate", "swapaxes", "repeat",
              "take", "sort", "argsort", "nonzero", "trace", "diagonal", "copy"]:
    setattr(Tracer, _name, _method(_name))
del _dunder, _fn, _name


def concretization_error(tracer, what):
    trace = tracer._trace
    stack = transform_stack_str() or trace.name
    return ConcretizationError(
        f"{what} was called on an abstract traced value {tracer.aval.str_short()} inside "
        f"{stack}{user_line()}. Under jit, vmap and make_jaxpr values are abstract (shape and "
        "dtype "
        "only), so Python control flow and conversions cannot depend on them. Fixes: use "
        "fnp.where(cond, a, b) for elementwise choices, fg.lax.cond / fg.lax.while_loop for "
        "branches and loops that stay in the program, or mark the argument static "
        "(static_argnums / static_argnames) if it is a configuration value.")
