"""Argument handling shared by the transforms: argnums, argument names, the checks on inputs."""

from __future__ import annotations

import inspect

from ..core import Tracer, as_value, user_line
from ..interpreters.programs import aval_of


def fun_name(fun):
    return getattr(fun, "__name__", None) or type(fun).__name__


def arg_name(fun, i):
    """'argument 0 (x)' for messages: the position and, when known, the parameter's name."""
    try:
        params = list(inspect.signature(fun).parameters)
        if i < len(params):
            return f"argument {i} ({params[i]})"
    except (TypeError, ValueError):
        pass
    return f"argument {i}"


def normalize_argnums(fun, argnums, nargs, transform):
    single = isinstance(argnums, int)
    nums = (argnums,) if single else tuple(argnums)
    if not nums:
        raise ValueError(f"{transform}: argnums is empty; name at least one argument to "
                         "differentiate with respect to.")
    for n in nums:
        if not isinstance(n, int) or isinstance(n, bool):
            raise TypeError(f"{transform}: argnums must be an int or a tuple of ints, got "
                            f"{argnums!r}.")
        if not -nargs <= n < nargs:
            raise ValueError(
                f"{transform}({fun_name(fun)}, argnums={argnums}): argument {n} does not exist, "
                f"the function was called with {nargs} positional argument(s){user_line()}. "
                "argnums counts positional arguments from 0.")
    return single, tuple(n % nargs for n in nums)


def top_trace(values):
    top = None
    for v in values:
        if type(v) is Tracer and (top is None or v._trace.level > top.level):
            top = v._trace
    return top


def check_grad_input(fun, i, leaf, path, transform):
    dtype = aval_of(as_value(leaf)).dtype
    if dtype.kind not in "fc":
        where = f" at {path}" if path else ""
        raise TypeError(
            f"{transform} requires real- or complex-valued (floating point) inputs, but "
            f"{arg_name(fun, i)}{where} of {fun_name(fun)} has dtype {dtype}{user_line()}. "
            "Convert it with x.astype(np.float32), move it out of argnums, or use fg.vjp, which "
            "gives integer inputs float0 zeros.")
