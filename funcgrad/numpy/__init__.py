"""funcgrad.numpy: the NumPy API over funcgrad's primitives.

Every function is composed from lax primitives, so it runs eagerly on NumPy arrays (returning
NumPy arrays) and traces, differentiates and batches under transforms. Dtypes follow NumPy 2
(NEP 50: Python scalars are weak). Tracers get their operators and methods from this module
(installed with `funcgrad.core.set_array_api`), and plain NumPy ufuncs and functions applied to
tracers (`np.tanh(x)`, `np.sum(x)`, `ndarray + tracer`) are routed here by `_array_ufunc` and
`_array_function`.
"""

import builtins as _builtins
import sys as _sys

from .. import core as _fg_core
from . import fft, linalg
from ._arithmetic import *
from ._classification import *
from ._complex import *
from ._creation import *
from ._diagonals import *
from ._einsum import einsum, einsum_path
from ._float_functions import *
from ._index_tricks import *
from ._indexing import IndexUpdateHelper as _IndexUpdateHelper  # (for tracers: x.at[...])
from ._indexing import getitem as _getitem  # (for tracers: x[...])
from ._logic import *
from ._logic import where  # ours, even if part B's namespace has one
from ._nonzero import *
from ._products import *
from ._reductions import *
from ._select import *
from ._shape import *
from ._sorting import *
from ._take import *
from ._updatable import UpdatableArray

# ---------------------------------------------------------------------------------------------
# NumPy ufuncs and functions applied to tracers

_REDUCE = {"add": "sum", "multiply": "prod", "maximum": "max", "minimum": "min",
           "logical_and": "all", "logical_or": "any", "fmax": "nanmax", "fmin": "nanmin"}
_ACCUMULATE = {"add": "cumsum", "multiply": "cumprod"}


def _lookup(name, what):
    fn = globals().get(name)
    if fn is None or not callable(fn) or name.startswith("_"):
        raise TypeError(f"{what} is not supported on funcgrad traced arrays (no funcgrad.numpy."
                        f"{name}){_fg_core.user_line()}. Use a funcgrad.numpy function, or "
                        "compute it outside the transform.")
    return fn


def _no_out(kwargs, name):
    out = kwargs.pop("out", None)
    if _builtins.any(o is not None for o in (out if isinstance(out, tuple) else (out,))):
        raise TypeError(f"np.{name}(..., out=...) cannot write into a traced array: funcgrad "
                        f"arrays are immutable{_fg_core.user_line()}. Use the returned value.")


def _array_ufunc(ufunc, method, inputs, kwargs):
    """Route `np.<ufunc>(...)` with a tracer among the inputs to funcgrad.numpy."""
    name = ufunc.__name__
    kwargs = dict(kwargs)
    _no_out(kwargs, name)
    dtype = kwargs.pop("dtype", None)
    if method == "__call__":
        if kwargs.pop("where", True) is not True:
            raise TypeError(f"np.{name}(..., where=...) is not supported on traced arrays; use "
                            "fnp.where to combine results.")
        kwargs.pop("casting", None)
        out = _lookup(name, f"np.{name}")(*inputs, **kwargs)
    elif method == "reduce" and name in _REDUCE:
        kwargs.setdefault("axis", 0)  # NumPy's default for ufunc.reduce
        out = _lookup(_REDUCE[name], f"np.{name}.reduce")(*inputs, **kwargs)
    elif method == "accumulate" and name in _ACCUMULATE:
        kwargs.setdefault("axis", 0)
        out = _lookup(_ACCUMULATE[name], f"np.{name}.accumulate")(*inputs, **kwargs)
    elif method == "outer" and len(inputs) == 2:
        a, b = (asarray(x) for x in inputs)
        a = reshape(a, a.shape + (1,) * b.ndim)
        out = _lookup(name, f"np.{name}.outer")(a, b, **kwargs)
    else:
        raise TypeError(f"np.{name}.{method} is not supported on funcgrad traced arrays"
                        f"{_fg_core.user_line()}.")
    return out if dtype is None else astype(out, dtype)


def _array_function(func, args, kwargs):
    """Route `np.<function>(...)` with a tracer among the arguments to funcgrad.numpy."""
    name = func.__name__
    module = getattr(func, "__module__", "") or ""
    kwargs = dict(kwargs)
    _no_out(kwargs, name)
    for sub, submodule in (("linalg", linalg), ("fft", fft)):
        if module.endswith(sub):
            fn = getattr(submodule, name, None)
            if fn is None:
                raise TypeError(f"np.{sub}.{name} is not supported on funcgrad traced arrays"
                                f"{_fg_core.user_line()}.")
            return fn(*args, **kwargs)
    if module not in ("numpy", "numpy._core.fromnumeric", "numpy._core.multiarray") and \
            module.startswith("numpy.") and module.split(".")[1] not in ("_core", "lib"):
        raise TypeError(f"{module}.{name} is not supported on funcgrad traced arrays"
                        f"{_fg_core.user_line()}.")
    return _lookup(name, f"np.{name}")(*args, **kwargs)


_fg_core.set_array_api(_sys.modules[__name__], getitem=_getitem,
                       index_update=_IndexUpdateHelper, array_ufunc=_array_ufunc,
                       array_function=_array_function)

# Signals, polynomials, vectorize, number utilities, unique and set operations, histograms
from ._creation import bool  # noqa: E402, A004 (NumPy's dtype alias)
from ._histogram import *  # noqa: E402, F403
from ._number_utils import *  # noqa: E402, F403
from ._polynomial import *  # noqa: E402, F403
from ._setops import *  # noqa: E402, F403
from ._signal import *  # noqa: E402, F403
from ._vectorize import *  # noqa: E402, F403


def __getattr__(name):
    # fnp.bfloat16 (as jnp.bfloat16): ml_dtypes' type, imported on first use (it takes most of a
    # second to import, and most programs never need it).
    if name == "bfloat16":
        import ml_dtypes
        return ml_dtypes.bfloat16
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
