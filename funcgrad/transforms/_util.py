"""Argument handling shared by the transforms: argnums, argument names, the checks on inputs."""

from __future__ import annotations

import inspect

from ..core import Tracer, as_value, user_line
from ..core.avals import dtype_kind
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


def check_grad_input(fun, i, leaf, path, transform, holomorphic=False, complex_ok=True):
    """Inputs of a derivative must be floating point; complex only where the transform allows it
    (reverse mode does; jacfwd only with holomorphic=True, as in JAX), and complex alone when
    `holomorphic` promises a holomorphic function."""
    dtype = aval_of(as_value(leaf)).dtype
    kind = dtype_kind(dtype)
    if kind in "fc" and not holomorphic and (complex_ok or kind == "f"):
        return  # the common case, without building a message (inspect.signature is slow)
    where = f" at {path}" if path else ""
    what = f"{arg_name(fun, i)}{where} of {fun_name(fun)}"
    if holomorphic and kind != "c":
        raise TypeError(
            f"{transform} with holomorphic=True requires inputs with complex dtype, but {what} "
            f"has dtype {dtype}{user_line()}. Convert it with x.astype(np.complex64), or drop "
            "holomorphic=True for a real-valued input.")
    if kind == "c" and not complex_ok and not holomorphic:
        raise TypeError(
            f"{transform} requires real-valued inputs, but {what} has dtype {dtype}"
            f"{user_line()}. For holomorphic differentiation, pass holomorphic=True. For "
            "differentiation of non-holomorphic functions involving complex inputs, use fg.jvp "
            "directly.")
    if kind not in "fc":
        raise TypeError(
            f"{transform} requires real- or complex-valued (floating point) inputs, but "
            f"{what} has dtype {dtype}{user_line()}. "
            "Convert it with x.astype(np.float32), move it out of argnums, or use fg.vjp, which "
            "gives integer inputs float0 zeros.")


def check_output_dtype(fun, aval, transform, holomorphic):
    """JAX's rule for the outputs of grad / jacrev (and jacfwd with holomorphic=True): complex
    only with holomorphic=True, and then complex only."""
    if holomorphic and aval.dtype.kind != "c":
        raise TypeError(
            f"{transform} with holomorphic=True requires outputs with complex dtype, but "
            f"{fun_name(fun)} returned {aval.str_short()}{user_line()}.")
    if not holomorphic and aval.dtype.kind == "c" and transform != "jacfwd":
        raise TypeError(
            f"{transform} requires real-valued outputs, but {fun_name(fun)} returned "
            f"{aval.str_short()}{user_line()}. For holomorphic differentiation, pass "
            "holomorphic=True. For differentiation of non-holomorphic functions involving "
            "complex outputs, use fg.vjp directly (or take fnp.real / fnp.abs of the output).")


def check_flag(value, name):
    if not isinstance(value, bool) and type(value).__name__ != "bool_":
        raise TypeError(f"{name} must be True or False, got {value!r}; pass masks as wrt=.")
