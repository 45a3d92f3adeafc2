"""jit's stages, each a value to look at (as JAX's `jax.stages`):

    traced = fg.jit(f).trace(*args)   # Traced: the program as traced          (.jaxpr)
    lowered = traced.lower()           # Lowered: optimized, then fused for its backend
    compiled = lowered.compile()       # Compiled: generated code; callable    (.as_text())
    fg.jit(f).lower(*args)             # = fg.jit(f).trace(*args).lower()

Tracing turns the function into a program; lowering runs the optimization passes
(funcgrad/transforms/passes.py) and then the fusion pass (transforms/fusion.py) with the
options of the backend that will run it, so that what a backend receives is one Jaxpr;
compiling is the backend's code generator (funcgrad/backends) and nothing else.
`cost_analysis()` counts flops, transcendental functions and bytes from the program: on a
Lowered per equation, on a Compiled per generated step (a fused group reads its inputs and
writes its outputs once).
"""

from __future__ import annotations

import math

import numpy as np

from .. import tree_util
from ..core import ClosedJaxpr, Literal, Tracer, eval_jaxpr, trace_to_jaxpr
from ..core.avals import PY_SCALARS
from ..core.lowering import Unlowerable, elementwise_expr, nodes
from . import fusion, passes

__all__ = ["Traced", "Lowered", "Compiled", "trace", "lower", "compile_program",
           "cost_analysis"]


# ---------------------------------------------------------------------------------------------
# The three steps

def trace(fun, in_avals, in_tree, static_args, static_kwargs, n_args, name,
          stage_constants=False):
    """(ClosedJaxpr, out_tree) of `fun` on abstract arguments: the dynamic leaves `in_avals`
    (tree `in_tree` of (args, kwargs)) with the static arguments put back in place.
    `stage_constants`: record operations on constants rather than compute them (eval_shape)."""
    out_box = []

    def flat_fun(*leaves):
        d_args, d_kwargs = tree_util.tree_unflatten(in_tree, list(leaves))
        it = iter(d_args)
        full = [static_args[i] if i in static_args else next(it) for i in range(n_args)]
        out = fun(*full, **d_kwargs, **static_kwargs)
        out_flat, out_tree = tree_util.tree_flatten(out)
        out_box.append(out_tree)
        return out_flat

    closed = trace_to_jaxpr(flat_fun, in_avals, name=name, stage_constants=stage_constants)
    return closed, out_box[0]


def lower(closed, backend):
    """(optimized, program): the optimized ClosedJaxpr, and the program the backend compiles
    (the optimized one fused with the backend's options, when it fuses)."""
    optimized = passes.optimize(closed)
    if backend.fusion is None:
        return optimized, optimized
    return optimized, fusion.fuse(optimized, **backend.fusion)


def compile_program(program, backend, donated=(), profile=False):
    """The backend's Executable of a lowered program (a ClosedJaxpr or Jaxpr); with `profile`,
    one that times each step (funcgrad/transforms/profile.py)."""
    jaxpr = getattr(program, "jaxpr", program)
    return backend.compile(jaxpr, donated, compile_body=_body_compiler(backend), profile=profile)


def _body_compiler(backend):
    """jit's pipeline for control flow's sub-programs (already optimized by their primitive):
    fused with the backend's options, then compiled by the same backend."""
    def compile_body(jaxpr, xp=None, donated=()):
        if backend.fusion is not None:
            jaxpr = fusion.fuse(jaxpr, **backend.fusion)
        return backend.compile(jaxpr, donated, compile_body=compile_body, quiet=False)
    return compile_body


# ---------------------------------------------------------------------------------------------
# The stage objects

class Traced:
    """A function traced for one signature: `jaxpr` (ClosedJaxpr), ready to `lower()`."""

    def __init__(self, owner, jaxpr, in_tree, out_tree, backend, donated, has_scalars):
        self.owner = owner          # the JitFunction
        self.jaxpr = jaxpr
        self.in_tree = in_tree
        self.out_tree = out_tree
        self.backend = backend
        self.donated = donated
        self.has_scalars = has_scalars

    def lower(self):
        optimized, program = lower(self.jaxpr, self.backend)
        return Lowered(self, optimized, program)

    def __str__(self):
        return str(self.jaxpr)

    __repr__ = __str__


class Lowered:
    """The optimized program of one signature (`jaxpr`; `str()` prints it), and `program`, what
    its backend compiles (fused where the backend fuses). `compile()` generates the code;
    `as_text()` is that code."""

    def __init__(self, traced, optimized, program):
        self.traced = traced
        self.jaxpr = optimized
        self.program = program
        self._compiled = None

    @property
    def backend(self):
        return self.traced.backend

    def compile(self):
        if self._compiled is None:
            executable = compile_program(self.program, self.backend, self.traced.donated)
            self._compiled = Compiled(self, executable)
        return self._compiled

    def as_text(self):
        """The generated code (the driver and its kernels)."""
        return self.compile().as_text()

    @property
    def compiled(self):
        """The backend's Executable (`.source`, `.kernels`)."""
        return self.compile().executable

    def cost_analysis(self):
        """flops, transcendentals and bytes accessed of the optimized program, per equation
        (as JAX's Lowered.cost_analysis: before fusion)."""
        return cost_analysis(self.jaxpr)

    def __str__(self):
        return str(self.jaxpr)

    __repr__ = __str__


def _copying(fn, which):
    """fn, with copies of the outputs at indices `which` (arrays it returns on every call)."""
    def call(*args):
        outs = list(fn(*args))
        for i in which:
            outs[i] = outs[i].copy()
        return outs
    return call


class Compiled:
    """Generated code for one signature: callable with the arguments it was lowered for
    (without the static ones, as JAX's), `as_text()`, `cost_analysis()`."""

    __slots__ = ("lowered", "executable", "fn", "consts", "out_tree", "has_scalars",
                 "unflatten")

    def __init__(self, lowered, executable):
        self.lowered = lowered
        self.executable = executable
        self.fn = executable.fn
        self.consts = list(lowered.program.consts) if isinstance(lowered.program, ClosedJaxpr) \
            else []
        self.out_tree = lowered.traced.out_tree
        self.has_scalars = lowered.traced.has_scalars
        self.unflatten = self.out_tree.unflattener()   # outputs -> the function's pytree
        jaxpr = getattr(lowered.program, "jaxpr", lowered.program)
        constants = set(jaxpr.constvars)
        fixed = [i for i, v in enumerate(jaxpr.outvars) if v in constants]
        if fixed:  # the program's own constants: each call returns copies the caller may write
            self.fn = _copying(self.fn, fixed)

    def as_text(self):
        return self.executable.source

    @property
    def kernels(self):
        return self.executable.kernels

    def cost_analysis(self):
        """flops, transcendentals and bytes accessed of the program as compiled: a fused group
        reads its inputs and writes its outputs once."""
        return cost_analysis(self.lowered.program)

    def __call__(self, *args, **kwargs):
        traced = self.lowered.traced
        flat, in_tree = tree_util.tree_flatten((args, kwargs))
        if in_tree != traced.in_tree:
            raise TypeError(f"{traced.owner.__name__}: this compiled program takes arguments "
                            f"structured as {traced.in_tree} (static arguments left out, as "
                            f"JAX's), got {in_tree}.")
        want = traced.jaxpr.in_avals
        for i, (x, a) in enumerate(zip(flat, want)):
            shape, dtype = np.shape(x), getattr(x, "dtype", None)
            if tuple(shape) != a.shape or (dtype is not None and np.dtype(dtype) != a.dtype):
                raise TypeError(f"{traced.owner.__name__}: argument leaf {i} is "
                                f"{np.dtype(dtype).name if dtype is not None else type(x).__name__}"
                                f"{list(shape)}; this program was compiled for "
                                f"{a.str_short()}. Lower and compile again for new types.")
        return traced.owner.run_compiled(self, flat)

    def eval_traced(self, flat):
        """Evaluate the optimized program primitive by primitive (inputs holding tracers)."""
        optimized = self.lowered.jaxpr
        outs = eval_jaxpr(optimized.jaxpr, optimized.consts, *flat)
        return tree_util.tree_unflatten(self.out_tree, outs)


# ---------------------------------------------------------------------------------------------
# Costs

def cost_analysis(program):
    """{"flops", "transcendentals", "bytes accessed"} of a program, from its equations (as
    JAX's cost_analysis keys): a matmul is 2 flops per multiply-add; an elementwise equation
    costs its expression's arithmetic per element, its transcendental functions (exp, log,
    tanh, ...) counted apart; a reduction one flop per input element; bytes are every
    equation's operands and results (a fused group: its inputs and outputs only). Loops count
    their body once per iteration where the trip count is static (scan)."""
    jaxpr = getattr(program, "jaxpr", program)
    total = {"flops": 0.0, "transcendentals": 0.0, "bytes accessed": 0.0}
    for eqn in jaxpr.eqns:
        _eqn_cost(eqn, total)
    return total


_TRANSCENDENTAL = frozenset({
    "exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sin", "cos", "tan", "arcsin",
    "arccos", "arctan", "arctan2", "sinh", "cosh", "tanh", "arcsinh", "arccosh", "arctanh",
    "power", "cbrt", "hypot", "logaddexp"})
_FREE = frozenset({"reshape", "squeeze", "expand_dims", "broadcast_in_dim", "transpose",
                   "stop_gradient", "name", "copy", "convert_element_type", "slice", "rev",
                   "concatenate", "pad", "iota", "gather", "dynamic_slice",
                   "dynamic_update_slice"})


def _nbytes(a):
    return a.aval.nbytes if type(a) is not Literal else 0


def _eqn_cost(eqn, total, count_bytes=True):
    name = eqn.primitive.name
    if count_bytes:
        total["bytes accessed"] += sum(_nbytes(a) for a in (*eqn.invars, *eqn.outvars))
    if name == "fused":
        for inner in eqn.params["jaxpr"].jaxpr.eqns:
            _eqn_cost(inner, total, count_bytes=False)
        return
    if name == "dot_general":
        (lc, _), _ = eqn.params["dimension_numbers"]
        k = math.prod(eqn.invars[0].aval.shape[i] for i in lc)
        total["flops"] += 2.0 * eqn.outvars[0].aval.size * k
        return
    if name.startswith("reduce_") or name.startswith("cum") or name.startswith("arg"):
        total["flops"] += float(eqn.invars[0].aval.size)
        return
    if getattr(eqn.primitive, "elementwise", False):
        size = float(eqn.outvars[0].aval.size)
        try:
            _, out = elementwise_expr(eqn.primitive, [a.aval.dtype for a in eqn.invars],
                                      eqn.params)
        except Unlowerable:
            total["flops"] += size
            return
        for node in nodes(out):
            if node.op in _TRANSCENDENTAL:
                total["transcendentals"] += size
            elif node.op not in ("input", "const", "astype", "view"):
                total["flops"] += size
        return
    if name in _FREE:
        return
    bodies = [v for v in eqn.params.values() if isinstance(v, ClosedJaxpr)]
    for v in eqn.params.values():
        if isinstance(v, (tuple, list)):
            bodies += [b for b in v if isinstance(b, ClosedJaxpr)]
    trips = eqn.params.get("length", 1) if name == "scan" else 1
    for body in bodies:
        inner = cost_analysis(body)
        for k in total:
            total[k] += trips * inner[k]


def leaf_avals(flat):
    """The abstract values of a call's dynamic leaves (Tracers keep theirs)."""
    from ..core import get_aval
    return [x.aval if type(x) is Tracer else get_aval(x) for x in flat]


def has_scalars(flat):
    return any(type(x) in PY_SCALARS for x in flat)
