"""What every generated program shares, whatever the backend: the `Executable` (the generated
function, its printable source, and the map from its lines back to the program's equations for
error messages), and the naming of its parameters and values.
"""

from __future__ import annotations

__all__ = ["Executable", "param_names", "eqn_names", "dels"]


class Executable:
    """A compiled program: `fn(*consts, *args) -> list of outputs`, its source text, and
    `eqn_lines` (line of the generated function `code` -> the equation it runs)."""

    def __init__(self, fn, source, eqn_lines=None, code=None, kernels=()):
        self.fn = fn
        self.source = source
        self.eqn_lines = eqn_lines or {}
        self.code = code if code is not None else fn.__code__
        self.kernels = list(kernels)
        self.times = None   # per equation, when compiled with profile=True

    def eqn_of_error(self, exc):
        """The equation whose generated line raised `exc` (for error messages), or None."""
        tb = exc.__traceback__
        found = None
        while tb is not None:
            if tb.tb_frame.f_code is self.code:
                found = self.eqn_lines.get(tb.tb_lineno)
            tb = tb.tb_next
        return found

    def __call__(self, *args):
        return self.fn(*args)


def param_names(jaxpr, names):
    """Name the generated function's parameters: c<i> for constants, then a<i> for arguments."""
    for i, v in enumerate(jaxpr.constvars):
        names[v] = f"c{i}"
    for i, v in enumerate(jaxpr.invars):
        names[v] = f"a{i}"
    return [names[v] for v in (*jaxpr.constvars, *jaxpr.invars)]


def eqn_names(eqn, name_of, names, counter):
    """(input expressions, assignment target) of one equation; its outputs get new v<n> names."""
    ins = [name_of(a) for a in eqn.invars]
    for v in eqn.outvars:
        names[v] = f"v{next(counter)}"
    outs = ", ".join(names[v] for v in eqn.outvars)
    if eqn.primitive.multiple_results and len(eqn.outvars) == 1:
        outs += ","
    return ins, outs


def dels(dead, names, indent="    "):
    """The `del` line freeing the values that die after an equation (none: no line)."""
    gone = [names[v] for v in dead if v in names]
    return [f"{indent}del {', '.join(gone)}"] if gone else []
