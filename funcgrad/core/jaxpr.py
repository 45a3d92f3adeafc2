"""Programs: typed variables, literals, equations, jaxprs, and their JAX-style text form."""

from __future__ import annotations

import itertools
import os
import sys
from typing import NamedTuple

import numpy as np

from .avals import ShapedArray, get_aval

_var_ids = itertools.count()


class Var:
    """A typed variable of a program. Names are given only when a program is printed."""

    __slots__ = ("aval", "count")

    def __init__(self, aval: ShapedArray):
        self.aval = aval
        self.count = next(_var_ids)

    def __repr__(self):
        return f"Var(id={self.count}):{self.aval.str_short()}"


class Literal:
    """A scalar constant written inline in a program (like `2.0:f32[]`)."""

    __slots__ = ("val", "aval")

    def __init__(self, val, aval: ShapedArray | None = None):
        self.val = val
        self.aval = get_aval(val) if aval is None else aval

    def __repr__(self):
        v = self.val
        if isinstance(v, np.ndarray):
            v = v.item()
        return f"{v!r}:{self.aval.str_short()}"


class SourceInfo(NamedTuple):
    """Where in the user's code an equation was created."""

    file: str
    line: int
    function: str

    def __str__(self):
        return f"{self.file}:{self.line} ({self.function})"


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
# Set while a program is re-run (eval_jaxpr, backward passes) so that new equations keep the line
# of the user's code that created the original equation instead of pointing into funcgrad.
source_override: list = [None]


def user_source_info(skip: int = 1) -> SourceInfo | None:
    """The innermost stack frame outside the funcgrad package (the user's line)."""
    if source_override[0] is not None:
        return source_override[0]
    frame = sys._getframe(skip)
    while frame is not None:
        fname = frame.f_code.co_filename
        if not fname.startswith(_PACKAGE_DIR) or "/tests/" in fname:
            return SourceInfo(fname, frame.f_lineno, frame.f_code.co_name)
        frame = frame.f_back
    return None


def user_line() -> str:
    """' (at file:line)' for error messages, or '' when no user frame is found."""
    info = user_source_info(2)
    return f" (at {info})" if info is not None else ""


class Eqn:
    """One equation `outvars = primitive[params](invars)` with the user's source line."""

    __slots__ = ("primitive", "invars", "outvars", "params", "source_info")

    def __init__(self, primitive, invars, outvars, params, source_info=None):
        self.primitive = primitive
        self.invars = list(invars)
        self.outvars = list(outvars)
        self.params = dict(params)
        self.source_info = source_info

    def __repr__(self):
        return pp_eqn(self, _Namer(), 0)


class Jaxpr:
    """A typed program: constant vars, input vars, a flat list of equations, output atoms."""

    __slots__ = ("constvars", "invars", "outvars", "eqns", "_frees")

    def __init__(self, constvars, invars, outvars, eqns):
        self.constvars = list(constvars)
        self.invars = list(invars)
        self.outvars = list(outvars)
        self.eqns = list(eqns)
        self._frees = None

    @property
    def in_avals(self):
        return [v.aval for v in self.invars]

    @property
    def out_avals(self):
        return [v.aval for v in self.outvars]

    def frees(self):
        """For each equation, the variables whose last use it is (to free them right after)."""
        if self._frees is None:
            last = {}
            for i, eqn in enumerate(self.eqns):
                for v in eqn.invars:
                    if type(v) is Var:
                        last[v] = i
            for v in self.outvars:
                last.pop(v, None)
            frees = [[] for _ in self.eqns]
            for v, i in last.items():
                frees[i].append(v)
            self._frees = frees
        return self._frees

    def __str__(self):
        return pp_jaxpr(self, _Namer(), 0)

    __repr__ = __str__


class ClosedJaxpr:
    """A jaxpr together with the values of its constant vars."""

    __slots__ = ("jaxpr", "consts", "in_tree", "out_tree")

    def __init__(self, jaxpr: Jaxpr, consts, in_tree=None, out_tree=None):
        self.jaxpr = jaxpr
        self.consts = list(consts)
        self.in_tree = in_tree
        self.out_tree = out_tree

    in_avals = property(lambda self: self.jaxpr.in_avals)
    out_avals = property(lambda self: self.jaxpr.out_avals)
    eqns = property(lambda self: self.jaxpr.eqns)

    def __str__(self):
        return str(self.jaxpr)

    __repr__ = __str__

    def pretty_print(self):
        return str(self.jaxpr)


# ---------------------------------------------------------------------------------------------
# Printing, in JAX's text format.

class _Namer:
    """Gives variables the short names a, b, ..., z, ba, bb, ... in order of appearance."""

    def __init__(self):
        self.names = {}

    def __call__(self, v):
        if type(v) is Literal:
            return repr(v)
        name = self.names.get(v)
        if name is None:
            n = len(self.names)
            name = ""
            while True:
                name = chr(ord("a") + n % 26) + name
                n //= 26
                if n == 0:
                    break
            self.names[v] = name
        return name

    def typed(self, v):
        return f"{self(v)}:{v.aval.str_short()}"


def _pp_param(value, namer, indent):
    if isinstance(value, ClosedJaxpr):
        value = value.jaxpr
    if isinstance(value, Jaxpr):
        return "\n" + " " * (indent + 4) + pp_jaxpr(value, namer, indent + 4)
    if isinstance(value, (tuple, list)) and value and all(
            isinstance(x, (Jaxpr, ClosedJaxpr)) for x in value):
        inner = "".join(_pp_param(x, namer, indent + 2) for x in value)
        return "(" + inner + "\n" + " " * (indent + 2) + ")"
    if isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
        return np.dtype(value).name
    if callable(value) and hasattr(value, "__name__"):
        return value.__name__
    return repr(value)


def pp_eqn(eqn, namer, indent):
    outs = " ".join(namer.typed(v) for v in eqn.outvars) or "_"
    params = " ".join(f"{k}={_pp_param(v, namer, indent)}" for k, v in eqn.params.items()
                      if v is not None)
    params = f"[{params}]" if params else ""
    ins = " ".join(namer(v) for v in eqn.invars)
    return f"{outs} = {eqn.primitive.name}{params} {ins}".rstrip()


def pp_jaxpr(jaxpr, namer, indent):
    consts = " ".join(namer.typed(v) for v in jaxpr.constvars)
    ins = " ".join(namer.typed(v) for v in jaxpr.invars)
    head = f"{{ lambda {consts}; {ins}. let"
    eqns = [pp_eqn(e, namer, indent) for e in jaxpr.eqns]
    outs = ", ".join(namer(v) for v in jaxpr.outvars)
    tail = f"in ({outs}{',' if len(jaxpr.outvars) == 1 else ''}) }}"
    one_line = f"{head} {'; '.join(eqns)}{' ' if eqns else ''}{tail}"
    if len(one_line) <= 100 and "\n" not in one_line:
        return one_line
    pad = " " * (indent + 4)
    body = "".join(f"\n{pad}{e}" for e in eqns)
    return f"{head}{body}\n{' ' * (indent + 2)}{tail}"
