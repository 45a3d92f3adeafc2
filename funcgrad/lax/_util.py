"""Helpers shared by the primitive definitions: shape checks and error messages."""

from __future__ import annotations

from ..core import ShapedArray, user_line


def shape_error(prim_name, msg):
    return TypeError(f"{prim_name}: {msg}{user_line()}")


def same_dtype(prim_name, avals):
    dt = avals[0].dtype
    for a in avals[1:]:
        if a.dtype != dt:
            types = ", ".join(x.str_short() for x in avals)
            raise shape_error(prim_name, f"operands must have the same dtype, got {types}. "
                              "funcgrad.numpy promotes dtypes for you; at the lax level convert "
                              "first with lax.convert_element_type.")
    return dt


def check_kind(prim_name, aval, kinds, what="operand"):
    if aval.dtype.kind not in kinds:
        names = {"f": "floating", "c": "complex", "i": "signed integer", "u": "unsigned integer",
                 "b": "boolean"}
        allowed = " or ".join(names[k] for k in kinds)
        raise TypeError(f"{prim_name} needs a {allowed} {what}, got {aval.str_short()}"
                        f"{user_line()}.")


def weak(avals):
    return all(a.weak_type for a in avals)


def normalize_axis(axis, ndim, what="axis"):
    if not -ndim <= axis < max(ndim, 1) or (ndim == 0 and axis not in (0, -1)):
        raise ValueError(f"{what} {axis} is out of bounds for an array of rank {ndim}"
                         f"{user_line()}.")
    return axis % ndim if ndim else 0


def aval(shape, dtype, weak_type=False):
    return ShapedArray(shape, dtype, weak_type)
