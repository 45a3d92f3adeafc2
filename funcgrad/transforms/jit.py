"""jit: trace once per input signature, optimize the program, run generated code.

The signature of a call is the pytree structure of its arguments, each array leaf's shape,
dtype and weak type, the values of static arguments, and the backend. A new signature goes
through jit's stages (funcgrad/transforms/stages.py): the function is traced abstractly (so
Python control flow on values raises ConcretizationError), the program optimized and fused for
its backend, and the backend generates code (funcgrad/backends); the result is kept in the
function's cache (funcgrad/transforms/jit_cache.py: a bounded LRU shared by all jitted
functions). Later calls with the same signature only flatten the arguments and call that code.
Called with tracers (inside grad, vmap, ...), the optimized program is evaluated primitive by
primitive instead, so every transform applies to it: `grad(jit(f))`, `vmap(jit(f))`.
"""

from __future__ import annotations

import contextlib
import inspect
import logging

import numpy as np

from .. import config, tree_util
from ..backends import backend_for, check_placement
from ..core import Tracer, array_namespace, eval_jaxpr, get_aval, user_line
from ..core import errors as _errors
from ..core import placement as _placement
from ..core import trace as _trace
from ..core.avals import PY_SCALARS, dtype_kind
from . import stages
from ._util import fun_name
from .jit_cache import FunctionCache, leaf_paths

log = logging.getLogger("funcgrad.jit")

Lowered = stages.Lowered


def _leaf_key(x):
    t = type(x)
    if t is np.ndarray:
        return (x.shape, x.dtype)
    if t in PY_SCALARS:
        return t
    if t is Tracer:
        return (x.aval.shape, x.aval.dtype, x.aval.weak_type, "tracer")
    a = get_aval(x)
    return (a.shape, a.dtype, t.__module__)


class _Entry:
    """One signature's stages: the Traced/Lowered program, and the Compiled code once a call
    with concrete arrays needs it (calls with tracers evaluate the optimized program)."""

    __slots__ = ("lowered", "compiled", "traced_args", "used", "traced")

    def __init__(self, lowered, traced_args):
        self.lowered = lowered
        self.compiled = None
        self.traced_args = traced_args
        self.traced = lowered.traced if lowered is not None else None

    def lower(self):
        """The Lowered program (lowered on first use for entries first made by a traced call)."""
        if self.lowered is None:
            self.lowered = self.traced.lower()
        return self.lowered


def _check_argnames(fun, names):
    """static_argnames must name parameters of `fun` (JAX raises too; a typo would silently
    trace the argument instead)."""
    if not names:
        return
    try:
        params = inspect.signature(fun).parameters.values()
    except (TypeError, ValueError):  # no signature (some builtins): nothing to check
        return
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    known = [p.name for p in params if p.kind is not p.POSITIONAL_ONLY]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"jit({fun_name(fun)}): static_argnames {unknown} name no parameter of "
                         f"the function (its keyword parameters: {', '.join(known) or 'none'})"
                         f"{user_line()}")


class JitFunction:
    """A function compiled per input signature (see `jit`)."""

    def __init__(self, fun, static_argnums=(), static_argnames=(), donate_argnums=(),
                 backend=None, inline=False):
        self.fun = fun
        self.inline = inline
        self.static_argnums = _as_tuple(static_argnums)
        self.static_argnames = _as_tuple(static_argnames)
        _check_argnames(fun, self.static_argnames)
        self.donate_argnums = _as_tuple(donate_argnums)
        if backend is not None:
            from ..devices import platform_name
            backend = platform_name(backend, "backend")
        self.backend = backend
        self.__name__ = f"jit({fun_name(fun)})"
        self.__wrapped__ = fun
        self.__doc__ = getattr(fun, "__doc__", None)
        self._cache = FunctionCache(fun_name(fun))
        self._fast_flatten = None   # (flatten function, in_tree) of the last call's structure

    # -- signature --
    def _split(self, args, kwargs):
        n = len(args)
        static_pos = tuple(i % n for i in self.static_argnums if -n <= i < n)
        for i in self.static_argnums:
            if not -n <= i < n:
                raise ValueError(f"jit({fun_name(self.fun)}): static_argnums {i} is out of range "
                                 f"for a call with {n} positional arguments{user_line()}.")
        statics = []
        for i in static_pos:
            statics.append(("arg", i, _check_static(self.fun, f"argument {i}", args[i])))
        dyn_kwargs = {}
        for k, v in kwargs.items():
            if k in self.static_argnames:
                statics.append(("kw", k, _check_static(self.fun, f"argument {k!r}", v)))
            else:
                dyn_kwargs[k] = v
        dyn_args = tuple(a for i, a in enumerate(args) if i not in static_pos)
        return static_pos, tuple(statics), dyn_args, dyn_kwargs

    def _prepare(self, args, kwargs):
        """The cache key of a call (the backend is part of it through each leaf's type, the
        default backend and the CPU code generator)."""
        if kwargs or self.static_argnums:
            static_pos, statics, dyn_args, dyn_kwargs = self._split(args, kwargs)
            flat, in_tree = tree_util.tree_flatten((dyn_args, dyn_kwargs))
        else:  # the common case, kept short: it is paid on every call
            static_pos, statics = (), ()
            fast = self._fast_flatten
            flat = fast[0]((args, _NO_KWARGS)) if fast is not None else None
            if flat is None:  # another structure than the last call's
                flat, in_tree = tree_util.tree_flatten((args, _NO_KWARGS))
                flattener = in_tree.flattener()
                self._fast_flatten = (flattener, in_tree) if flattener is not None else None
            else:
                in_tree = fast[1]
        key = (in_tree, tuple([(x.shape, x.dtype) if type(x) is np.ndarray else _leaf_key(x)
                               for x in flat]), statics,
               (_placement.default_xp, _cpu_backend[0], _trace.axis_env_key()))
        return key, flat, in_tree, static_pos, statics

    # -- trace and lower --
    def _trace(self, flat, in_tree, static_pos, statics, args, xp):
        # the namespace to run with (backend="gpu": CuPy, or a clear error when CuPy or a GPU is
        # missing); a call mixing NumPy and CuPy arrays raises, naming the arguments
        if xp is np and any(hasattr(x, "__cuda_array_interface__") for x in flat):
            _placement.register_device_arrays()  # CuPy arrays made before the GPU backend was used
            xp = array_namespace(flat)
        xp = check_placement(flat, in_tree, xp, self.backend)
        closed, out_tree = stages.trace(
            self.fun, stages.leaf_avals(flat), in_tree,
            {i: v for kind, i, v in statics if kind == "arg"},
            {k: v for kind, k, v in statics if kind == "kw"}, len(args),
            name=f"jit({fun_name(self.fun)})")
        return stages.Traced(self, closed, in_tree, out_tree, backend_for(xp),
                             self._donated_leaves(args, static_pos, in_tree),
                             stages.has_scalars(flat))

    def _donated_leaves(self, args, static_pos, in_tree):
        if not self.donate_argnums:
            return ()
        n = len(args)
        donate = {i % n for i in self.donate_argnums}
        leaf_index, out = 0, []
        for i, a in enumerate(args):
            if i in static_pos:
                continue
            k = len(tree_util.tree_leaves(a))
            if i in donate:
                out.extend(range(leaf_index, leaf_index + k))
            leaf_index += k
        return tuple(out)

    def _entry(self, args, kwargs):
        key, flat, in_tree, static_pos, statics = self._prepare(args, kwargs)
        entry = self._cache.get(key)
        if entry is None:
            self._cache.record_miss(key, leaf_paths(in_tree), statics)
            traced = self._trace(flat, in_tree, static_pos, statics, args, array_namespace(flat))
            if any(type(x) is Tracer for x in flat):
                # inside another transform: its program is evaluated into the outer trace, which
                # is lowered as a whole; no passes, no code
                entry = _Entry(None, True)
                entry.traced = traced
            else:
                entry = _Entry(traced.lower(), False)
            if config.read("log_compiles"):
                log.warning("Compiled %s for %s", fun_name(self.fun), in_tree)
            self._cache.put(key, entry)
        return entry, flat

    # -- call --
    def __call__(self, *args, **kwargs):
        if _jit_disabled:  # fg.disable_jit(): run the Python function itself
            return self.fun(*args, **kwargs)
        if self.inline and _has_tracers(args, kwargs):  # traced into the enclosing program
            return self.fun(*args, **kwargs)
        entry, flat = self._entry(args, kwargs)
        if entry.traced_args and any(type(x) is Tracer for x in flat) or \
                _trace.constant_staging[0] and _trace.constant_stager() is not None:
            # inside another transform (or eval_shape): run it primitive by primitive
            program = entry.traced.jaxpr
            outs = eval_jaxpr(program.jaxpr, program.consts, *flat)
            return tree_util.tree_unflatten(entry.traced.out_tree, outs)
        compiled = entry.compiled
        if compiled is None:
            compiled = entry.compiled = entry.lower().compile()
        return self.run_compiled(compiled, flat)

    def run_compiled(self, compiled, flat):
        """Call compiled code on a call's dynamic leaves (scalars, donations, debug_nans and
        the error context handled here, once for every stage that calls)."""
        if self.donate_argnums:
            flat = _safe_donations(flat, compiled)
        if compiled.has_scalars:
            flat = [np.asarray(x) if type(x) in PY_SCALARS else x for x in flat]
        if _errors.debug_nans:
            return self._call_checking_nans(compiled, flat)
        try:
            outs = compiled.fn(*compiled.consts, *flat)
        except Exception as e:
            self._add_context(e, compiled)
            raise
        return compiled.unflatten(outs)

    def _add_context(self, e, compiled):
        """Name the equation (primitive, input types, the user's line) that raised at run time."""
        eqn = compiled.executable.eqn_of_error(e)
        if eqn is not None:
            outer = _trace.transform_stack_str()
            stack = f"{outer} > {self.__name__}" if outer else self.__name__
            _errors.add_error_context(e, eqn.primitive, [v.aval.str_short() for v in eqn.invars],
                                      eqn.source_info, stack)

    def _call_checking_nans(self, compiled, flat):
        """debug_nans: run the compiled program; if an output holds a NaN or Inf, re-run the
        program op by op (each primitive checked as it runs) to name the first culprit."""
        keep = [x.copy() if type(x) is np.ndarray else x for x in flat] if self.donate_argnums \
            else flat
        try:
            outs = compiled.fn(*compiled.consts, *flat)
        except Exception as e:
            self._add_context(e, compiled)
            raise
        for o in outs:
            dt = getattr(o, "dtype", None)
            if dt is not None and dtype_kind(dt) in "fc" and not bool(np.isfinite(o).all()):
                optimized = compiled.lowered.jaxpr
                try:
                    eval_jaxpr(optimized.jaxpr, optimized.consts, *keep)
                except FloatingPointError as e:
                    e.args = (f"{e.args[0]}\n(found by re-running {self.__name__} op by op)",)
                    raise
                raise FloatingPointError(
                    f"debug_nans: {self.__name__} returned a NaN or Inf, but re-running its "
                    "program op by op produced none (the compiled code computes differently, "
                    f"e.g. in place){user_line()}.")
        return tree_util.tree_unflatten(compiled.out_tree, outs)

    # -- stages --
    def trace(self, *args, **kwargs):
        """The traced program for these arguments' signature (a stages.Traced)."""
        return self._entry(args, kwargs)[0].traced

    def lower(self, *args, **kwargs):
        """The optimized program for these arguments' signature (a stages.Lowered):
        `str()` prints it, `.as_text()` is the generated code, `.compile()` the Compiled."""
        return self._entry(args, kwargs)[0].lower()

    def profile(self, *args, **kwargs):
        """Time each step of the compiled program on these arguments: a table, slowest first,
        with the user's source lines (funcgrad/transforms/profile.py). The arguments are used
        as in a call (donated ones are copied first)."""
        from .profile import profile
        return profile(self, args, kwargs)

    def dynamic_leaves(self, args, kwargs):
        """The leaves of a call's traced (non-static) arguments, as the compiled code takes
        them."""
        return self._prepare(args, kwargs)[1]

    def clear_cache(self):
        """Drop this function's compiled programs (their code, kernels and constants)."""
        self._cache.clear()

    def _cache_size(self):
        return len(self._cache)


_NO_KWARGS: dict = {}


def _safe_donations(flat, compiled):
    """Donated buffers are written in place; copy any that alias another argument."""
    bases = [id(x) if x.base is None else id(x.base) for x in flat if type(x) is np.ndarray]
    if len(set(bases)) == len(bases):  # the common case: no two arguments share memory
        return flat
    seen = set()
    out = []
    for x in flat:
        if type(x) is np.ndarray:
            key = id(x) if x.base is None else id(x.base)
            if key in seen:
                x = x.copy()
            seen.add(key)
        out.append(x)
    return out


def _as_tuple(x):
    if x is None:
        return ()
    if isinstance(x, (int, str)):
        return (x,)
    return tuple(x)


def _check_static(fun, what, value):
    if isinstance(value, (np.ndarray, Tracer)) or hasattr(value, "__cuda_array_interface__"):
        raise TypeError(f"jit({fun_name(fun)}): static {what} is an array ({type(value).__name__}"
                        f"); static arguments must be hashable Python values (ints, strings, "
                        "tuples). Pass arrays as regular (traced) arguments, or convert a small "
                        f"constant with tuple(x.tolist()){user_line()}.")
    try:
        hash(value)
    except TypeError:
        raise TypeError(f"jit({fun_name(fun)}): static {what} of type {type(value).__name__} is "
                        "not hashable, so it cannot be part of the cache key. Use a tuple instead "
                        "of a list, a frozen dataclass, or pass it as a traced argument"
                        f"{user_line()}.") from None
    return value


def jit(fun=None, *, static_argnums=(), static_argnames=(), donate_argnums=(), backend=None,
        inline=False):
    """Compile `fun` per input signature. Usable as `@fg.jit` or `fg.jit(f, static_argnums=1)`.

    inline: called inside another transform (with tracers), run `fun` itself into the enclosing
    trace, as JAX's `jit(..., inline=True)`, instead of tracing it on its own first (calls with
    arrays are compiled as always).

    Unlike JAX (which stages every operation, "omnistaging"), an operation none of whose operands
    depends on the arguments (`fnp.arange(3) * 2`, a draw from a constant key) runs once while
    `fun` is traced, and its result is a constant of the compiled program.

    donate_argnums: arguments whose buffers the function may overwrite (e.g. old parameters in
    an optimizer step). As in JAX, a donated array must not be used after the call: its contents
    are unspecified (NumPy cannot invalidate it, so this is documented, not checked).

    On the CPU the program runs as generated Python calling NumPy, with its fusion groups
    compiled by LLVM (docs/jit.md). Unlike JAX, whose jitted and eager calls both run XLA's
    code, a jitted float32 exp, log or tanh (the kernels' own, within 1 ulp of exact) may differ
    from the eager NumPy result by an ulp or two; see docs/differences.md.
    """
    if fun is None:
        return lambda f: jit(f, static_argnums=static_argnums, static_argnames=static_argnames,
                             donate_argnums=donate_argnums, backend=backend, inline=inline)
    return JitFunction(fun, static_argnums, static_argnames, donate_argnums, backend, inline)


def _has_tracers(args, kwargs):
    for x in tree_util.tree_leaves((args, kwargs)):
        if type(x) is Tracer:
            return True
    return False


# ---------------------------------------------------------------------------------------------
# disable_jit and eval_shape

_jit_disabled = False
_cpu_backend = [None]   # the cpu_backend setting, read on every call (a watched flag)
config.watch("cpu_backend", lambda value: _cpu_backend.__setitem__(0, value))


@contextlib.contextmanager
def disable_jit(disable=True):
    """Within the block, jitted functions run as plain Python (eagerly, op by op), so `print`,
    breakpoints and Python control flow on values work in them (as `jax.disable_jit`)."""
    global _jit_disabled
    old, _jit_disabled = _jit_disabled, bool(disable)
    try:
        yield
    finally:
        _jit_disabled = old


def eval_shape(fun, *args, **kwargs):
    """The shapes and dtypes `fun(*args, **kwargs)` would return, as a pytree of ShapedArray
    (`fg.ShapeDtypeStruct`), found by tracing abstractly: nothing is computed, also not the
    operations on constants (`eval_shape(lambda: model.init(0))` draws no random numbers), as
    in JAX. Arguments may be arrays or ShapeDtypeStructs. Arrays that NumPy-style creation
    functions make (fnp.zeros, ...) are still made: they are not operations."""
    from ..core import ShapedArray
    flat, in_tree = tree_util.tree_flatten((args, kwargs))
    avals = [x if isinstance(x, ShapedArray) else get_aval(x) for x in flat]
    closed, out_tree = stages.trace(lambda *a, **kw: fun(*a, **kw), avals, in_tree, {}, {},
                                    len(args), name=f"eval_shape({fun_name(fun)})",
                                    stage_constants=True)
    return tree_util.tree_unflatten(
        out_tree, [ShapedArray(a.shape, a.dtype, a.weak_type) for a in closed.out_avals])
