"""Primitives, `bind`, the trace stack, the one `Tracer` class, and tracing to jaxprs.

Every operation on arrays ends in `bind(primitive, *args, **params)`. With no tracer among the
arguments the primitive's implementation runs at once on the arrays' namespace (`xp`: NumPy or
CuPy). Otherwise the trace of highest level among the arguments processes it; arguments of a lower
level (or plain arrays) are first lifted into that trace as its constants. A transform is a kind
of trace: `JaxprTrace` records equations (make_jaxpr, jit), the autodiff traces in
`funcgrad/transforms` compute values and tangents or record a tape.
"""

from __future__ import annotations

import contextlib
import functools

import numpy as np

from .. import config as _config
from .. import tree_util
from .avals import PY_SCALARS, get_aval
from .jaxpr import (
    ClosedJaxpr,
    Eqn,
    Jaxpr,
    Literal,
    Var,
    _source_override,
    user_line,
    user_source_info,
)


class ConcretizationError(TypeError):
    """A Python value (bool, int, float, NumPy array) was asked of an abstract traced value."""


class LeakedTracerError(Exception):
    """A tracer was used after the transform that created it had returned."""


# ---------------------------------------------------------------------------------------------
# Array namespaces: NumPy by default; backends register others (CuPy) by their array type.
#
# Host data (NumPy arrays, Python and NumPy scalars) runs on the default backend: NumPy, or
# CuPy's namespace when the default backend is "gpu" (FUNCGRAD_BACKEND=gpu), where host inputs
# are copied to the device as JAX copies them to its default device. Device arrays always run
# where they are.

_namespaces: dict = {}
_default_xp = np        # the namespace host data runs with (or the error saying why it cannot)
_route = False          # True when eager calls must look for device arrays or move host data


def _update_route():
    global _route
    _route = bool(_namespaces) or _default_xp is not np


def register_array_namespace(array_type, xp):
    """Arrays of `array_type` compute with namespace `xp` (CuPy's module, or an adapter such as
    funcgrad.backends.array_api.ArrayAPINamespace). NumPy arrays need no registration."""
    _namespaces[array_type] = xp
    _update_route()


def unregister_array_namespace(array_type):
    _namespaces.pop(array_type, None)
    _update_route()


_device_hook = None  # set by funcgrad.devices: registers CuPy's namespace (the layer above)


def register_device_arrays():
    """Register the namespace of device arrays that arrive before their backend was first used
    (CuPy arrays made with cupy itself), through the hook funcgrad.devices installs."""
    if _device_hook is not None:
        _device_hook()


def set_default_namespace(xp):
    """The namespace host data runs with (funcgrad.devices sets it from the backend setting);
    an exception instead of a namespace is raised at the first call that needs it."""
    global _default_xp
    _default_xp = xp
    _update_route()


def default_namespace():
    """The namespace host data runs with, or the error saying why the default backend is
    unavailable."""
    if isinstance(_default_xp, Exception):
        raise _default_xp
    return _default_xp


def array_namespace(args):
    """The array module (`xp`) of a call: that of its first device (non-NumPy) array, else the
    default backend's."""
    xp = device_namespace(args)
    if xp is not np or _default_xp is np:
        return xp
    return default_namespace()


def device_namespace(args):
    """The namespace of the first device (non-NumPy) array among `args`, else NumPy: for code
    that builds index arrays and other host values next to its inputs."""
    if _namespaces:
        for a in args:
            xp = _namespaces.get(type(a))
            if xp is not None:
                return xp
    return np


def as_value(x):
    """A concrete value for a transform's tracer: arrays and tracers as they are, Python and
    NumPy scalars as 0-d arrays; with a GPU default backend, host data goes to the device (as
    JAX puts the inputs of its transforms on the default device)."""
    if type(x) is np.ndarray and _default_xp is np or type(x) is Tracer:
        return x  # the common case first: it is paid per argument of every transform
    if hasattr(x, "__cuda_array_interface__"):
        return x
    if _default_xp is np:
        return np.asarray(x)  # scalars, lists, ndarray subclasses: a plain array
    return default_namespace().asarray(x)


def on_default_backend(x, like=None):
    """A new host array `x` (made by fnp.zeros, arange, ...) placed where new arrays go: on the
    device of `like` when that is a device array, else on the default backend."""
    if like is not None and hasattr(like, "__cuda_array_interface__"):
        if type(like) not in _namespaces:
            register_device_arrays()
        return device_namespace([like]).asarray(x)
    if _default_xp is np or type(x) is not np.ndarray:
        return x
    return default_namespace().asarray(x)


def inputs_on_default_backend(fn):
    """Decorator for library functions that combine their array arguments with Python operators
    (`x @ params["w"] + params["b"]`): with a GPU default backend, host (NumPy) arrays among the
    arguments are copied to the device first, since CuPy's operators refuse NumPy operands.
    With the CPU default it costs one check per call."""

    @functools.wraps(fn)
    def call(*args, **kwargs):
        if _default_xp is not np:
            args = tuple(_host_leaves_moved(a) for a in args)
            kwargs = {k: _host_leaves_moved(v) for k, v in kwargs.items()}
        return fn(*args, **kwargs)
    return call


def _host_leaves_moved(tree):
    """`tree` with its NumPy leaves on the default backend; itself when it has none (so an
    argument passed through, like an eval-mode batch-norm state, keeps its identity)."""
    if not any(type(a) is np.ndarray for a in tree_util.tree_leaves(tree)):
        return tree
    xp = default_namespace()
    return tree_util.tree_map(lambda a: xp.asarray(a) if type(a) is np.ndarray else a, tree)


def to_host(x):
    """x's value as a NumPy array, copied from the device when it is a CuPy array: the one
    explicit device-to-host copy funcgrad makes (for values that decide shapes, control flow
    or literals of a program)."""
    if hasattr(x, "__cuda_array_interface__") and hasattr(x, "get"):
        return x.get()
    return np.asarray(x)


def _device_args(args):
    """(xp, args) for an eager call when other namespaces are registered: NumPy arrays and
    scalars among arguments of another namespace are host constants, moved over with
    `xp.asarray` (as JAX moves NumPy constants to the device)."""
    xp = array_namespace(args)
    if xp is np:
        return xp, args
    return xp, tuple(xp.asarray(a) if isinstance(a, (np.ndarray, np.generic)) else a
                     for a in args)


# ---------------------------------------------------------------------------------------------
# Primitives

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
    if top is None:
        if _route:  # a CuPy (or other) array among the arguments, or a GPU default backend?
            xp, args = _device_args(args)
        else:
            xp = np
        try:
            out = prim.impl(xp, *args, **params)
        except Exception as e:
            add_error_context(e, prim, [_describe(a) for a in args])
            raise
        if prim.multiple_results:
            out = tuple(o if type(o) is np.ndarray else _as_array(o) for o in out)
        elif type(out) is not np.ndarray:
            out = _as_array(out)
        if _debug_nans:
            check_nans(prim, args, out)
        return out
    if not top.alive:
        raise _leak_error(top)
    tracers = [top.to_tracer(a) for a in args]
    try:
        return top.process(prim, tracers, params)
    except Exception as e:
        add_error_context(e, prim, [t.aval.str_short() for t in tracers])
        raise


def _as_array(x):
    if isinstance(x, np.generic) or type(x) in PY_SCALARS:
        return np.asarray(x)
    if not _namespaces and hasattr(x, "__cuda_array_interface__"):
        register_device_arrays()
    return x


# ---------------------------------------------------------------------------------------------
# Error context and NaN checking: paid only when something goes wrong (or debug_nans is on).

_PASSTHROUGH = (ConcretizationError, LeakedTracerError, KeyboardInterrupt)


def _describe(x):
    try:
        return (x.aval if type(x) is Tracer else get_aval(x)).str_short()
    except Exception:
        return type(x).__name__


def error_context(prim_name, in_descs, source=None, stack=None):
    """' in <prim> with inputs f32[3], f32[4] at <file:line> (inside jit > vmap)'."""
    if source is None:
        source = user_source_info(3)
    where = f" at {source}" if source is not None else ""
    if stack is None:
        stack = transform_stack_str()
    inside = f" (inside {stack})" if stack else ""
    ins = ", ".join(in_descs) if in_descs else "no array inputs"
    return f"[funcgrad] in {prim_name} with inputs {ins}{where}{inside}"


def add_error_context(e, prim, in_descs, source=None, stack=None):
    """Append where the error happened to an exception's message, once (the innermost primitive
    wins), keeping its type and traceback so `except ValueError` still catches it."""
    if isinstance(e, _PASSTHROUGH) or getattr(e, "_funcgrad_context", False):
        return
    try:
        note = error_context(prim.name, in_descs, source, stack)
        if e.args and isinstance(e.args[0], str):
            e.args = (f"{e.args[0]}\n{note}",) + tuple(e.args[1:])
        elif not e.args:
            e.args = (note,)
        else:
            e.add_note(note)
        e._funcgrad_context = True
    except Exception:  # an exception type that refuses new attributes: leave it as it is
        pass


_debug_nans = False


def _set_debug_nans(value):
    global _debug_nans
    _debug_nans = bool(value)


def check_nans(prim, args, out, source=None):
    """Raise FloatingPointError if a floating output of `prim` holds a NaN or an Inf."""
    for o in (out if prim.multiple_results else (out,)):
        dt = getattr(o, "dtype", None)
        if dt is None or dt.kind not in "fc":
            continue
        if not bool(array_namespace((o,)).isfinite(o).all()):
            kind = "NaN" if bool(array_namespace((o,)).isnan(o).any()) else "Inf"
            msg = (f"debug_nans: {prim.name} produced a {kind} (output {_describe(o)})\n"
                   + error_context(prim.name, [_describe(a) for a in args], source)
                   + "\nTurn the check off with fg.config.update('debug_nans', False).")
            err = FloatingPointError(msg)
            err._funcgrad_context = True
            raise err


# ---------------------------------------------------------------------------------------------
# Traces and the trace stack

_trace_stack: list = []


class Trace:
    """One level of tracing. Subclasses define how primitives are processed.

    concrete: tracers of this trace know their value, so Python control flow may read them.
    """

    concrete = False
    name = "trace"

    def __init__(self, level):
        self.level = level
        self.alive = True

    def to_tracer(self, x):
        if type(x) is Tracer:
            if x._trace is self:
                return x
            if not x._trace.alive or x._trace.level >= self.level:
                raise _leak_error(x._trace)
        return self.lift(x)

    def lift(self, x):
        raise NotImplementedError

    def process(self, prim, tracers, params):
        raise NotImplementedError

    def process_custom_jvp(self, fun, jvp_rule, args):
        """By default a custom_jvp function is traced through (its rule applies under jvp/grad)."""
        return fun(*args)

    def process_custom_vjp(self, fun, fwd, bwd, args, out_tree):
        return fun(*args)

    def __repr__(self):
        return f"{type(self).__name__}(level={self.level})"


def current_traces():
    return tuple(_trace_stack)


def transform_stack_str():
    """'jit > vmap > grad' style description of the live transforms, outermost first."""
    return " > ".join(t.name for t in _trace_stack)


@contextlib.contextmanager
def new_trace(trace_type, *args, **kwargs):
    """Start a trace one level above every live trace; it dies (tracers leak) on exit."""
    trace = trace_type(len(_trace_stack) + 1, *args, **kwargs)
    _trace_stack.append(trace)
    try:
        yield trace
    finally:
        _trace_stack.remove(trace)
        trace.alive = False


def _leak_error(trace):
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


def axis_size(name):
    """The number of lanes (or processes) of the named axis; NameError if it is not bound."""
    return _find_frame(name)[1]


def axis_group(name):
    """The process group bound to the innermost axis `name`, or None for a vmap axis."""
    return _find_frame(name)[2]


# ---------------------------------------------------------------------------------------------
# The one tracer class. Its array methods forward to funcgrad.numpy (installed by set_array_api),
# so that the core does not depend on the layers above it.

_array_api = None


def set_array_api(module):
    global _array_api
    _array_api = module


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
            raise _leak_error(trace)
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
        return _array_api._array_ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        return _array_api._array_function(func, args, kwargs)

    def __getitem__(self, idx):
        return _array_api._getitem(self, idx)

    def __setitem__(self, idx, value):
        raise TypeError("Traced arrays are immutable: use x = x.at[idx].set(value) instead of "
                        "x[idx] = value.")

    @property
    def at(self):
        return _array_api._IndexUpdateHelper(self)

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


# ---------------------------------------------------------------------------------------------
# Tracing to programs

class JaxprTrace(Trace):
    """Records each primitive as an equation; tracers are abstract (shape and dtype only)."""

    name = "make_jaxpr"

    def __init__(self, level, name=None):
        super().__init__(level)
        if name:
            self.name = name
        self.eqns = []
        self.invars = []
        self.constvars = []
        self.consts = []
        self._const_tracers = {}
        self.created_at = user_source_info(3)

    def new_arg(self, aval):
        var = Var(aval)
        self.invars.append(var)
        return Tracer(self, aval, None, var)

    def lift(self, x):
        key = id(x)
        t = self._const_tracers.get(key)
        if t is not None:
            return t
        if type(x) in PY_SCALARS or (getattr(x, "ndim", None) == 0 and type(x) is not Tracer):
            aval = get_aval(x)
            val = x if type(x) in PY_SCALARS else to_host(x)
            return Tracer(self, aval, None, Literal(val, aval))
        aval = get_aval(x) if type(x) is not Tracer else x.aval
        var = Var(aval)
        self.constvars.append(var)
        self.consts.append(x)
        t = Tracer(self, aval, None, var)
        self._const_tracers[key] = t
        return t

    def process(self, prim, tracers, params):
        out_avals = prim.abstract_eval(*[t.aval for t in tracers], **params)
        if not prim.multiple_results:
            var = Var(out_avals)
            self.eqns.append(Eqn(prim, [t.aux for t in tracers], [var], params,
                                 user_source_info(3)))
            return Tracer(self, out_avals, None, var)
        outvars = [Var(a) for a in out_avals]
        self.eqns.append(Eqn(prim, [t.aux for t in tracers], outvars, params, user_source_info(3)))
        return tuple(Tracer(self, v.aval, None, v) for v in outvars)

    def to_jaxpr(self, out_tracers):
        outvars = [self.to_tracer(t).aux for t in out_tracers]
        jaxpr = Jaxpr(self.constvars, self.invars, outvars, self.eqns)
        return ClosedJaxpr(jaxpr, self.consts)


def trace_to_jaxpr(fun, in_avals, name="make_jaxpr"):
    """Trace `fun(*flat_tracers) -> flat list` abstractly into a ClosedJaxpr."""
    with new_trace(JaxprTrace, name) as trace:
        args = [trace.new_arg(a) for a in in_avals]
        outs = fun(*args)
        return trace.to_jaxpr(outs)


def make_jaxpr(fun, static_argnums=()):
    """`make_jaxpr(f)(*args)` returns the program f computes, as a printable ClosedJaxpr."""
    if isinstance(static_argnums, int):
        static_argnums = (static_argnums,)
    static_argnums = tuple(static_argnums)

    from .. import tree_util

    def make(*args, **kwargs):
        static = {i: args[i] for i in static_argnums}
        dyn = [a for i, a in enumerate(args) if i not in static]
        flat, in_tree = tree_util.tree_flatten((dyn, kwargs))
        in_avals = [x.aval if type(x) is Tracer else _arg_aval(x) for x in flat]
        out_tree_box = []

        def flat_fun(*flat_tracers):
            d, kw = tree_util.tree_unflatten(in_tree, list(flat_tracers))
            it = iter(d)
            full = [static[i] if i in static else next(it) for i in range(len(args))]
            out = fun(*full, **kw)
            out_flat, out_tree = tree_util.tree_flatten(out)
            out_tree_box.append(out_tree)
            return out_flat

        closed = trace_to_jaxpr(flat_fun, in_avals)
        closed.in_tree = in_tree
        closed.out_tree = out_tree_box[0]
        return closed

    make.__name__ = f"make_jaxpr({getattr(fun, '__name__', 'fun')})"
    return make


def _arg_aval(x):
    aval = get_aval(x)
    if type(x) in PY_SCALARS:
        return aval  # weakly typed, like JAX
    return aval


def eval_jaxpr(jaxpr: Jaxpr, consts, *args):
    """Run a program by binding each equation in turn, freeing each value after its last use.

    Binding (rather than calling implementations) means a program evaluated inside a transform is
    transformed too: this is how transforms of programs fall out of transforms of functions.
    """
    env = {}
    for v, x in zip(jaxpr.constvars, consts):
        env[v] = x
    for v, x in zip(jaxpr.invars, args):
        env[v] = x
    frees = jaxpr.frees()
    saved = _source_override[0]
    try:
        for eqn, dead in zip(jaxpr.eqns, frees):
            _source_override[0] = eqn.source_info or saved
            ins = [env[v] if type(v) is Var else v.val for v in eqn.invars]
            out = bind(eqn.primitive, *ins, **eqn.params)
            if eqn.primitive.multiple_results:
                for v, o in zip(eqn.outvars, out):
                    env[v] = o
            else:
                env[eqn.outvars[0]] = out
            for v in dead:
                del env[v]
    finally:
        _source_override[0] = saved
    return [env[v] if type(v) is Var else v.val for v in jaxpr.outvars]


def jaxpr_as_fun(closed: ClosedJaxpr):
    """A Python function of the program's flat inputs returning its flat outputs."""
    return lambda *args: eval_jaxpr(closed.jaxpr, closed.consts, *args)


_config.watch("debug_nans", _set_debug_nans)
