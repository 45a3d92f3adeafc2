"""What the program passes share: effects, a program's parts, and hashable keys of literals and
params (for CSE and for fusion's structure keys), and the default fusion predicate."""

from __future__ import annotations

import numpy as np

from ..core import ClosedJaxpr, Jaxpr


def _effectful(prim) -> bool:
    return bool(getattr(prim, "effectful", False))


def has_effects(eqn) -> bool:
    """Whether the equation, or a program in its params (a call body), has an effect."""
    if _effectful(eqn.primitive):
        return True
    for v in eqn.params.values():
        t = type(v)
        if t is tuple or t is list:
            if any(type(b) in _PROGRAMS and _body_has_effects(b) for b in v):
                return True
        elif t in _PROGRAMS and _body_has_effects(v):
            return True
    return False


def _body_has_effects(body):
    if type(body) is ClosedJaxpr:
        body = body.jaxpr
    return any(has_effects(e) for e in body.eqns)


_PROGRAMS = (ClosedJaxpr, Jaxpr)


def split_program(program):
    """(jaxpr, consts, rebuild): `rebuild(jaxpr, consts)` gives a program of the input's kind."""
    if isinstance(program, ClosedJaxpr):
        def rebuild(jaxpr, consts):
            return ClosedJaxpr(jaxpr, consts, program.in_tree, program.out_tree)
        return program.jaxpr, list(program.consts), rebuild
    if isinstance(program, Jaxpr):
        return program, [UNKNOWN] * len(program.constvars), lambda jaxpr, consts: jaxpr
    raise TypeError(f"expected a ClosedJaxpr or a Jaxpr, got {type(program).__name__}")


class _Unknown:
    """The value of a constvar of a bare Jaxpr: not known to the pass."""

    def __repr__(self):
        return "<unknown const>"


UNKNOWN = _Unknown()


def literal_value(lit):
    return np.asarray(lit.val, dtype=lit.aval.dtype)


def literal_key(lit):
    return ("lit", lit.aval, literal_value(lit).tobytes())


class Unhashable(Exception):
    pass


def param_key(value):
    """A hashable, type-aware key for a param value; raises Unhashable when there is none."""
    if isinstance(value, (tuple, list)):
        return (type(value).__name__,) + tuple(param_key(x) for x in value)
    if isinstance(value, dict):
        return ("dict",) + tuple((k, param_key(v)) for k, v in sorted(value.items()))
    if isinstance(value, np.dtype):
        return ("dtype", value.str)
    if isinstance(value, (Jaxpr, ClosedJaxpr)):
        return ("program", id(value))
    try:
        hash(value)
    except TypeError:
        raise Unhashable from None
    if isinstance(value, np.ndarray):
        raise Unhashable
    return (type(value), value)


def is_elementwise(eqn) -> bool:
    """Default fusion predicate: the equation's primitive is elementwise (`prim.elementwise`,
    set by funcgrad.lax's elementwise definitions). A backend passes its own predicate to
    `fuse`: the equations its code generator translates (funcgrad/backends)."""
    return getattr(eqn.primitive, "elementwise", False)
