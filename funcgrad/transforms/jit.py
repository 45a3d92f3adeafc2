"""jit: trace once per input signature, optimize the program, run generated code.

The signature of a call is the pytree structure of its arguments, each array leaf's shape,
dtype and weak type, the values of static arguments, and the backend. A new signature traces
the function abstractly (so Python control flow on values raises ConcretizationError), runs the
optimization passes, and generates one straight-line function (funcgrad/backends); later calls
with the same signature only flatten the arguments and call that function. Called with tracers
(inside grad, vmap, ...), the optimized program is evaluated primitive by primitive instead, so
every transform applies to it: `grad(jit(f))`, `vmap(jit(f))`.
"""

from __future__ import annotations

import contextlib
import inspect
import logging

import numpy as np

from .. import config, tree_util
from ..core import Tracer, array_namespace, eval_jaxpr, get_aval, trace_to_jaxpr, user_line
from ..core import errors as _errors
from ..core import placement as _placement
from ..core import trace as _trace
from ..core.avals import PY_SCALARS
from ._util import fun_name

log = logging.getLogger("funcgrad.jit")


class Lowered:
    """The optimized program of one signature and the Python source generated for it."""

    def __init__(self, closed, compiled):
        self.jaxpr = closed
        self.compiled = compiled

    def as_text(self):
        return self.compiled.source

    def __str__(self):
        return str(self.jaxpr)

    __repr__ = __str__


class _Entry:
    __slots__ = ("closed", "compiled", "consts", "out_tree", "fn", "has_scalars", "traced_args")

    def __init__(self, closed, compiled, out_tree, has_scalars, traced_args):
        self.has_scalars = has_scalars
        self.traced_args = traced_args
        self.closed = closed
        self.compiled = compiled
        self.consts = list(closed.consts)
        self.out_tree = out_tree
        self.fn = compiled.fn


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
                 backend=None):
        self.fun = fun
        self.static_argnums = _as_tuple(static_argnums)
        self.static_argnames = _as_tuple(static_argnames)
        _check_argnames(fun, self.static_argnames)
        self.donate_argnums = _as_tuple(donate_argnums)
        if backend is not None:
            from ..devices import platform_name
            backend = platform_name(backend, "backend")
        self.backend = backend
        self._cache = {}
        self._last_key = None
        self.__name__ = f"jit({fun_name(fun)})"
        self.__wrapped__ = fun
        self.__doc__ = getattr(fun, "__doc__", None)

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
        """The cache key of a call (the backend is part of it through each leaf's type)."""
        if kwargs or self.static_argnums:
            static_pos, statics, dyn_args, dyn_kwargs = self._split(args, kwargs)
            flat, in_tree = tree_util.tree_flatten((dyn_args, dyn_kwargs))
        else:  # the common case, kept short: it is paid on every call
            static_pos, statics = (), ()
            flat, in_tree = tree_util.tree_flatten((args, {}))
        key = (in_tree, tuple([(x.shape, x.dtype) if type(x) is np.ndarray else _leaf_key(x)
                               for x in flat]), statics, _placement.default_xp)
        return key, flat, in_tree, static_pos, statics

    # -- compile --
    def _compile(self, key, flat, in_tree, static_pos, statics, args, xp):
        from ..backends import check_placement, compiler_for
        from .passes import optimize
        # the namespace to run with (backend="gpu": CuPy, or a clear error when CuPy or a GPU is
        # missing); a call mixing NumPy and CuPy arrays raises, naming the arguments
        if xp is np and any(hasattr(x, "__cuda_array_interface__") for x in flat):
            _placement.register_device_arrays()  # CuPy arrays made before the GPU backend was used
            xp = array_namespace(flat)
        xp = check_placement(flat, in_tree, xp, self.backend)
        if config.read("explain_cache_misses") and self._cache:
            log.warning("%s", _explain_miss(self, self._last_key, key, args))
        n_args = len(args)
        static_args = {i: v for kind, i, v in statics if kind == "arg"}
        static_kwargs = {k: v for kind, k, v in statics if kind == "kw"}
        out_box = []

        def flat_fun(*leaves):
            d_args, d_kwargs = tree_util.tree_unflatten(in_tree, list(leaves))
            it = iter(d_args)
            full = [static_args[i] if i in static_args else next(it) for i in range(n_args)]
            out = self.fun(*full, **d_kwargs, **static_kwargs)
            out_flat, out_tree = tree_util.tree_flatten(out)
            out_box.append(out_tree)
            return out_flat

        in_avals = [x.aval if type(x) is Tracer else get_aval(x) for x in flat]
        closed = trace_to_jaxpr(flat_fun, in_avals, name=f"jit({fun_name(self.fun)})")
        # called inside another transform, the program is transformed further: keep its custom
        # derivative rules and derivatives (grad(jit(f)) is grad(f))
        closed = optimize(closed, differentiable=any(type(x) is Tracer for x in flat))
        donated = self._donated_leaves(args, static_pos, in_tree)
        compile_jaxpr = compiler_for(xp)  # the backend's code generator
        compiled = compile_jaxpr(closed.jaxpr, xp=xp if xp is not None else np, donated=donated)
        if config.read("log_compiles"):
            log.warning("Compiled %s for %s", fun_name(self.fun), in_tree)
        return _Entry(closed, compiled, out_box[0], any(type(x) in PY_SCALARS for x in flat),
                      any(type(x) is Tracer for x in flat))

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
            entry = self._compile(key, flat, in_tree, static_pos, statics, args,
                                  array_namespace(flat))
            self._cache[key] = entry
        self._last_key = key
        return entry, flat

    # -- call --
    def __call__(self, *args, **kwargs):
        if _jit_disabled:  # fg.disable_jit(): run the Python function itself
            return self.fun(*args, **kwargs)
        entry, flat = self._entry(args, kwargs)
        if entry.traced_args and any(type(x) is Tracer for x in flat) or \
                _trace.constant_staging[0] and _trace.constant_stager() is not None:
            # inside another transform (or eval_shape): run it primitive by primitive
            outs = eval_jaxpr(entry.closed.jaxpr, entry.consts, *flat)
            return tree_util.tree_unflatten(entry.out_tree, outs)
        if self.donate_argnums:
            flat = _safe_donations(flat, entry.compiled)
        if entry.has_scalars:
            flat = [np.asarray(x) if type(x) in PY_SCALARS else x for x in flat]
        if _errors.debug_nans:
            return self._call_checking_nans(entry, flat)
        try:
            outs = entry.fn(*entry.consts, *flat)
        except Exception as e:
            self._add_context(e, entry)
            raise
        return tree_util.tree_unflatten(entry.out_tree, outs)

    def _add_context(self, e, entry):
        """Name the equation (primitive, input types, the user's line) that raised at run time."""
        eqn = entry.compiled.eqn_of_error(e)
        if eqn is not None:
            outer = _trace.transform_stack_str()
            stack = f"{outer} > {self.__name__}" if outer else self.__name__
            _errors.add_error_context(e, eqn.primitive, [v.aval.str_short() for v in eqn.invars],
                                      eqn.source_info, stack)

    def _call_checking_nans(self, entry, flat):
        """debug_nans: run the compiled program; if an output holds a NaN or Inf, re-run the
        program op by op (each primitive checked as it runs) to name the first culprit."""
        keep = [x.copy() if type(x) is np.ndarray else x for x in flat] if self.donate_argnums \
            else flat
        try:
            outs = entry.fn(*entry.consts, *flat)
        except Exception as e:
            self._add_context(e, entry)
            raise
        for o in outs:
            dt = getattr(o, "dtype", None)
            if dt is not None and dt.kind in "fc" and not bool(np.isfinite(o).all()):
                try:
                    eval_jaxpr(entry.closed.jaxpr, entry.consts, *keep)
                except FloatingPointError as e:
                    e.args = (f"{e.args[0]}\n(found by re-running {self.__name__} op by op)",)
                    raise
                raise FloatingPointError(
                    f"debug_nans: {self.__name__} returned a NaN or Inf, but re-running its "
                    "program op by op produced none (the compiled code computes differently, "
                    f"e.g. in place){user_line()}.")
        return tree_util.tree_unflatten(entry.out_tree, outs)

    def lower(self, *args, **kwargs):
        """The optimized program and generated code for these arguments' signature."""
        entry, _ = self._entry(args, kwargs)
        return Lowered(entry.closed, entry.compiled)

    def clear_cache(self):
        self._cache.clear()

    def _cache_size(self):
        return len(self._cache)


def _safe_donations(flat, compiled):
    """Donated buffers are written in place; copy any that alias another argument."""
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


def _explain_miss(jf, old, new, args):
    name = fun_name(jf.fun)
    if old is None:
        return f"jit({name}): tracing for the first time"
    (otree, oleaves, ostat, oxp), (ntree, nleaves, nstat, nxp) = old, new
    reasons = [] if oxp is nxp else ["the default backend changed"]
    if otree != ntree:
        reasons.append(f"the argument structure changed: {otree} -> {ntree}")
    else:
        dyn_paths = [tree_util.keystr(p) for p, _ in tree_util.tree_flatten_with_path(
            tree_util.tree_unflatten(ntree, [0] * ntree.num_leaves))[0]]
        for path, a, b in zip(dyn_paths, oleaves, nleaves):
            if a != b:
                reasons.append(f"argument {path} changed from {_describe(a)} to {_describe(b)}")
    if ostat != nstat:
        reasons.append(f"static arguments changed: {ostat} -> {nstat}")
    return f"jit({name}) traced again because " + "; ".join(reasons or ["of an unknown change"])


def _describe(key):
    if isinstance(key, type):
        return f"a Python {key.__name__}"
    shape, dtype = key[0], key[1]
    return f"{np.dtype(dtype).name}{list(shape)}"


def jit(fun=None, *, static_argnums=(), static_argnames=(), donate_argnums=(), backend=None):
    """Compile `fun` per input signature. Usable as `@fg.jit` or `fg.jit(f, static_argnums=1)`.

    Unlike JAX (which stages every operation, "omnistaging"), an operation none of whose operands
    depends on the arguments (`fnp.arange(3) * 2`, a draw from a constant key) runs once while
    `fun` is traced, and its result is a constant of the compiled program.

    donate_argnums: arguments whose buffers the function may overwrite (e.g. old parameters in
    an optimizer step). As in JAX, a donated array must not be used after the call: its contents
    are unspecified (NumPy cannot invalidate it, so this is documented, not checked).
    """
    if fun is None:
        return lambda f: jit(f, static_argnums=static_argnums, static_argnames=static_argnames,
                             donate_argnums=donate_argnums, backend=backend)
    return JitFunction(fun, static_argnums, static_argnames, donate_argnums, backend)


# ---------------------------------------------------------------------------------------------
# disable_jit and eval_shape

_jit_disabled = False


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
    box = {}

    def flat_fun(*leaves):
        a, kw = tree_util.tree_unflatten(in_tree, list(leaves))
        out_flat, box["tree"] = tree_util.tree_flatten(fun(*a, **kw))
        return out_flat

    closed = trace_to_jaxpr(flat_fun, avals, name=f"eval_shape({fun_name(fun)})",
                            stage_constants=True)
    return tree_util.tree_unflatten(
        box["tree"], [ShapedArray(a.shape, a.dtype, a.weak_type) for a in closed.out_avals])
