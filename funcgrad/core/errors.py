"""Error context and NaN checking: the note that names the primitive, its inputs, the source line
and the live transforms, appended to an error raised inside a primitive; and the `debug_nans`
check. Both are paid only when something goes wrong (or debug_nans is on).
"""

from __future__ import annotations

from .. import config as _config
from .avals import dtype_kind, get_aval
from .jaxpr import user_source_info
from .placement import array_namespace
from .trace import ConcretizationError, LeakedTracerError, Tracer, transform_stack_str

_PASSTHROUGH = (ConcretizationError, LeakedTracerError, KeyboardInterrupt)


def describe(x):
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


debug_nans = False


def _set_debug_nans(value):
    global debug_nans
    debug_nans = bool(value)


def check_nans(prim, args, out, source=None):
    """Raise FloatingPointError if a floating output of `prim` holds a NaN or an Inf."""
    for o in (out if prim.multiple_results else (out,)):
        dt = getattr(o, "dtype", None)
        if dt is None or dtype_kind(dt) not in "fc":
            continue
        if not bool(array_namespace((o,)).isfinite(o).all()):
            kind = "NaN" if bool(array_namespace((o,)).isnan(o).any()) else "Inf"
            msg = (f"debug_nans: {prim.name} produced a {kind} (output {describe(o)})\n"
                   + error_context(prim.name, [describe(a) for a in args], source)
                   + "\nTurn the check off with fg.config.update('debug_nans', False).")
            err = FloatingPointError(msg)
            err._funcgrad_context = True
            raise err


_config.watch("debug_nans", _set_debug_nans)


# ----------------------------------------------------------------------------------------------
# Quiet floating point. Primitives compute inf and NaN silently, as JAX (and CuPy) do: no NumPy
# RuntimeWarning for log(0), x/0, sqrt(-1), overflow, ... `debug_nans` is the way to hear about
# them. The eager `bind` and the top of each jit-generated NumPy function switch NumPy's
# floating-point error state to "ignore" and back:
#     token = fp_quiet_set(FP_QUIET); try: ... finally: fp_reset(token)

try:  # NumPy 2 keeps np.errstate in a context variable: setting it directly costs ~0.3 µs, where
    # `with np.errstate(all="ignore")` costs ~2 µs (it rebuilds the state on every entry)
    from numpy._core._ufunc_config import _extobj_contextvar as _fp_state
    from numpy._core._ufunc_config import _make_extobj

    FP_QUIET = _make_extobj(all="ignore")
    fp_quiet_set, fp_reset = _fp_state.set, _fp_state.reset
except ImportError:  # pragma: no cover  (another NumPy: the public, slower way)
    import numpy as _np

    FP_QUIET = None

    def fp_quiet_set(_):
        state = _np.errstate(all="ignore")
        state.__enter__()
        return state

    def fp_reset(state):
        state.__exit__(None, None, None)
