"""LLVM IR for fusion groups: each `fused` body becomes one loop nest that reads its inputs once,
keeps every intermediate in registers, writes its outputs once (or reduces them), and that LLVM
vectorizes. Pure text generation; llvm_runtime.py compiles it.

A kernel is `void K(PyObject *arrays..., i64 dims..., i64 lo, i64 hi)`: the NumPy arrays of the
group's inputs and outputs (their data pointer is read from the array object), the sizes of the
loop nest's dimensions, and the range of the outermost loop this call covers (so that two
threads can split a kernel). The iteration space is the group's element shape with size-1 axes
dropped and neighbouring axes merged wherever every operand agrees (all of them present, or
broadcast along both), so an elementwise chain on any shape is one flat loop, and a bias row or a
keepdims column adds one loop level whose innermost stride is 0 or 1: the shape itself is a
runtime argument, so one compiled kernel serves every shape with the same broadcast pattern.

A group that ends in a reduction (`reduce_sum`/`max`/`min`, see fusion.fuse) reduces over its
trailing loop dimensions (one accumulator per output element: layer norm and softmax
statistics, sums over the last axis) or its leading ones (the outputs accumulate in memory: bias
gradients, sums over the batch).

Each equation's code is its primitive's expression translated by llvm_expr.py
(`Function.value`), with NumPy's semantics per dtype and no fast-math; float sums over the last
axis are reassociated into vector partial sums (as NumPy's pairwise sums, a different order).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math

import numpy as np

from ..core import Literal
from ..core.lowering import elementwise_expr, nodes
from .llvm_expr import (
    REDUCTIONS,
    Function,
    Module,
    UnsupportedOnCPU,
    can_translate,
    cheap_to_recompute,
    ir_const,
    ir_type,
    memory_type,
)

# can_translate, cheap_to_recompute, UnsupportedOnCPU and REDUCTIONS are llvm_expr's, re-exported
# for llvm_backend (the CPU fusion predicates).
__all__ = ["Kernel", "kernel_source", "can_translate", "cheap_to_recompute", "layout",
           "UnsupportedOnCPU", "REDUCTIONS"]


@dataclasses.dataclass
class Kernel:
    """One generated kernel: its IR functions (`ir`: the loop nest, and the entry `name` taking
the array objects) and how the driver calls it.

    inputs: how many array inputs; outputs: (shape, dtype) of each output array the driver
    allocates; dims: the loop sizes (static here, runtime arguments of the kernel); init:
    the outputs' starting value for leading-axis reductions (they accumulate in memory), else
    None; threadable: whether two calls may split the outermost loop [lo, hi)."""

    name: str
    ir: str
    inputs: int
    outputs: list
    dims: tuple
    init: object
    threadable: bool
    work: int          # elements computed (for the driver's threading decision)
    decls: set         # declarations the functions need (intrinsics, C library)
    helpers: dict      # helper functions they call (vector math), by name
    elementwise: bool = True  # no reduction: an output may take over a same-shape input's buffer
    parts: int = 1     # merged independent groups: [lo, hi) ranges over them
    part_work: tuple = ()  # the work of each part (where the driver splits them in two)
    part_of: list = dataclasses.field(default_factory=list)  # per array: the parts using it
    # per output: the inputs read after it is written (a deep chain computed in blocks writes
    # an output at its equation's stage): its buffer must not be one of those
    late_reads: list = dataclasses.field(default_factory=list)
    pattern: str = ""  # the kernel's text without its name: equal patterns share a function


@dataclasses.dataclass(frozen=True)
class _Layout:
    dims: tuple          # loop sizes, outermost first
    present: tuple       # per operand (inputs, then the output space): present per loop dim
    reduced: tuple       # per loop dim: reduced (reduction groups) or not
    kind: str            # "map", "row" or "column"


def layout(in_shapes, space, red_axes=None):
    """The loop nest of a group: its element space `space` with size-1 axes dropped and
    neighbours merged where every operand (and the reduction) agrees."""
    n = len(space)
    keep = [d for d in range(n) if space[d] != 1]
    ops = []
    for s in in_shapes:
        padded = (1,) * (n - len(s)) + tuple(s)
        ops.append([padded[d] == space[d] for d in keep])
    red = [bool(red_axes) and d in red_axes for d in keep]
    out = [not r for r in red]
    cols = [tuple(o[j] for o in ops) + (out[j], red[j]) for j in range(len(keep))]
    dims, present_cols = [], []
    for j, d in enumerate(keep):
        if dims and cols[j] == present_cols[-1]:
            dims[-1] *= space[d]
        else:
            dims.append(space[d])
            present_cols.append(cols[j])
    present = tuple(tuple(c[k] for c in present_cols) for k in range(len(ops) + 1))
    reduced = tuple(c[-1] for c in present_cols)
    if not any(reduced):
        kind = "map"
    elif reduced[-1] and all(reduced[reduced.index(True):]):
        kind = "row"
    elif reduced[0] and not any(reduced[reduced.index(False):]):
        kind = "column"
    else:
        raise UnsupportedOnCPU("a reduction over middle axes")
    return _Layout(tuple(dims), present, reduced, kind)


def _loop_nest(jaxpr, name, module):
    """The function `name` computing one connected fusion group: (IR text, layout, output
    specs, init of column-reduction outputs, work). Its parameters are the data pointers of
    the group's inputs and outputs (noalias: outputs are fresh), the loop sizes, and lo, hi."""
    eqns = list(jaxpr.eqns)
    red = eqns[-1] if eqns and eqns[-1].primitive.name in REDUCTIONS else None
    mapped = red.invars[0] if red is not None else None
    if red is not None:
        eqns = eqns[:-1]
        space = tuple(mapped.aval.shape)
        axes = tuple(red.params["axes"])
    else:
        space = tuple(jaxpr.outvars[0].aval.shape)
        axes = None
    lay = layout([_read_shape(jaxpr, v, len(space)) for v in jaxpr.invars], space, axes)
    if red is None and len(lay.dims) == 1 and len(eqns) >= STAGED_DEPTH:
        return _staged_nest(jaxpr, name, module, lay, space)
    f = Function(module)
    nin, outs = len(jaxpr.invars), list(jaxpr.outvars)
    nd = len(lay.dims)
    ptrs = [f"%p{k}" for k in range(nin + len(outs))]
    dimv = [f"%d{j}" for j in range(nd)]
    f.raw("entry:")

    def strides(present):
        """Runtime strides (elements) of an operand along each loop dim."""
        out, acc = [None] * nd, "1"
        for j in range(nd - 1, -1, -1):
            if present[j]:
                out[j] = acc
                acc = f.emit(f"mul i64 {acc}, {dimv[j]}") if j else acc
            else:
                out[j] = "0"
        return out

    in_strides = [strides(lay.present[k]) for k in range(nin)]
    out_strides = strides(lay.present[nin])
    # -- the element computation, in the innermost loop --
    idx = [f"%i{j}" for j in range(nd)]
    g = Function(module, prefix="v")

    def offset(strd):
        acc = None
        for i, s in zip(idx, strd):
            if s == "0":
                continue
            t = i if s == "1" else g.emit(f"mul i64 {i}, {s}")
            acc = t if acc is None else g.emit(f"add i64 {acc}, {t}")
        return acc or "0"

    names = {}
    for k, v in enumerate(jaxpr.invars):
        ty, mty = ir_type(v.aval.dtype), memory_type(v.aval.dtype)
        p = g.emit(f"getelementptr {mty}, ptr {ptrs[k]}, i64 {offset(in_strides[k])}")
        x = g.emit(f"load {mty}, ptr {p}")
        if ty == "i1":
            x = g.emit(f"icmp ne i8 {x}, 0")
        names[v] = x
    for eqn in eqns:
        if eqn.primitive.name == "broadcast_in_dim":  # its operand, read at broadcast positions
            names[eqn.outvars[0]] = names[eqn.invars[0]]
            continue
        ins, expr = elementwise_expr(eqn.primitive, [a.aval.dtype for a in eqn.invars],
                                     eqn.params)
        vals = {id(n): (ir_const(a.val, a.aval.dtype) if type(a) is Literal else names[a])
                for n, a in zip(ins, eqn.invars)}
        for node in nodes(expr):
            if id(node) not in vals:
                vals[id(node)] = g.value(node, [vals[id(a)] for a in node.args])
        names[eqn.outvars[0]] = vals[id(expr)]

    def value_of(v):
        return ir_const(v.val, v.aval.dtype) if type(v) is Literal else names[v]

    out_specs, init, acc_ty = [], None, "i8"
    if red is None:
        oo = offset(out_strides)
        for k, v in enumerate(outs):
            mty = memory_type(v.aval.dtype)
            val = value_of(v)
            if ir_type(v.aval.dtype) == "i1":
                val = g.emit(f"zext i1 {val} to i8")
            p = g.emit(f"getelementptr {mty}, ptr {ptrs[nin + k]}, i64 {oo}")
            g.raw(f"  store {mty} {val}, ptr {p}")
            out_specs.append((tuple(v.aval.shape), np.dtype(v.aval.dtype)))
    else:
        dtype = np.dtype(mapped.aval.dtype)
        acc_ty = ir_type(dtype)
        kind = {"reduce_sum": "sum", "reduce_max": "max", "reduce_min": "min"}[red.primitive.name]
        val = value_of(mapped)
        out_specs.append((tuple(red.outvars[0].aval.shape), dtype))
        if lay.kind == "row":
            cur = g.emit(f"load {acc_ty}, ptr %acc")
            g.raw(f"  store {acc_ty} {_combine(g, kind, dtype, acc_ty, cur, val, True)}, "
                  "ptr %acc")
        else:  # column: accumulate into the output in memory
            init = _identity_value(kind, dtype)
            p = g.emit(f"getelementptr {acc_ty}, ptr {ptrs[nin]}, i64 {offset(out_strides)}")
            cur = g.emit(f"load {acc_ty}, ptr {p}")
            g.raw(f"  store {acc_ty} {_combine(g, kind, dtype, acc_ty, cur, val, False)}, "
                  f"ptr {p}")
    # -- the loop nest (indices in allocas: LLVM promotes them to registers) --
    f.raw(f"  %acc = alloca {acc_ty}")
    for j in range(nd):
        f.raw(f"  %i{j}.addr = alloca i64")
    lines = []
    first_reduced = lay.reduced.index(True) if lay.kind == "row" else None

    def loop(j):
        if j == nd:
            lines.extend(g.lines)
            return
        start, end = ("%lo", "%hi") if j == 0 else ("0", dimv[j])
        if j == first_reduced:
            lines.append(f"  store {acc_ty} {_identity(kind, dtype)}, ptr %acc")
        lines.append(f"  store i64 {start}, ptr %i{j}.addr")
        lines.append(f"  br label %head{j}")
        lines.append(f"head{j}:")
        lines.append(f"  %i{j} = load i64, ptr %i{j}.addr")
        lines.append(f"  %c{j} = icmp slt i64 %i{j}, {end}")
        lines.append(f"  br i1 %c{j}, label %body{j}, label %exit{j}")
        lines.append(f"body{j}:")
        loop(j + 1)
        lines.append(f"  %n{j} = add i64 %i{j}, 1")
        lines.append(f"  store i64 %n{j}, ptr %i{j}.addr")
        lines.append(f"  br label %head{j}")
        lines.append(f"exit{j}:")
        if j == first_reduced:  # the row's value: store it at the kept indices' position
            off = "0"
            for i, s in zip(idx[:j], out_strides[:j]):
                if s == "0":
                    continue
                t = i if s == "1" else _emit_line(lines, f"mul i64 {i}, {s}", f"%ro{i[2:]}")
                off = t if off == "0" else _emit_line(lines, f"add i64 {off}, {t}",
                                                      f"%ra{i[2:]}")
            lines.append(f"  %accv = load {acc_ty}, ptr %acc")
            lines.append(f"  %accp = getelementptr {acc_ty}, ptr {ptrs[nin]}, i64 {off}")
            lines.append(f"  store {acc_ty} %accv, ptr %accp")

    if nd == 0:
        lines.extend(g.lines)
    else:
        loop(0)
    nptr = nin + len(outs)
    params = ([f"ptr noalias %p{k}" for k in range(nptr)] + [f"i64 %d{j}" for j in range(nd)]
              + ["i64 %lo", "i64 %hi"])
    text = (f"define internal void @{name}({', '.join(params)}) #1 {{\n" + "\n".join(f.lines)
            + "\n" + "\n".join(lines) + "\n  ret void\n}\n")
    work = math.prod(space) * max(1, len(eqns))
    return text, lay, out_specs, init, work


# A flat group of at least this many equations is computed in blocks (see _staged_nest).
STAGED_DEPTH = 24
_STAGE_BYTES = 24 << 10    # the block's intermediates: within the L1 cache


def _staged_nest(jaxpr, name, module, lay, space):
    """A deep elementwise chain over a flat iteration space, computed a block of B elements at
    a time: each equation is one vector loop over the block (a small function of its own,
    shared by equal equations), its result kept in a stack buffer (reused once dead) that later
    equations read. One loop per element with the whole chain in registers would be bound by
    the chain's latency (hundreds of dependent operations per element, a few vectors in
    flight); per equation and block, the vectors of a block are independent and the loops run
    at the processor's throughput, while the intermediates stay in the L1 cache instead of
    going to memory as NumPy's would."""
    eqns = list(jaxpr.eqns)
    nin, outs = len(jaxpr.invars), list(jaxpr.outvars)
    if not all(any(v in e.outvars for e in eqns) for v in outs):
        raise UnsupportedOnCPU("a fused output computed by no equation")
    last_use = {}
    for k, eqn in enumerate(eqns):
        for a in eqn.invars:
            if type(a) is not Literal:
                last_use[a] = k
    # buffer slots, reused after a value's last use (per IR type)
    slot_of, free, nslots = {}, {}, 0
    for k, eqn in enumerate(eqns):
        v = eqn.outvars[0]
        ty = ir_type(v.aval.dtype)
        if free.get(ty):
            slot_of[v] = free[ty].pop()
        else:
            slot_of[v] = (ty, nslots)
            nslots += 1
        for a in set(a for a in eqn.invars if type(a) is not Literal):
            if last_use.get(a) == k and a in slot_of:
                free.setdefault(slot_of[a][0], []).append(slot_of[a])
    block = max(16, min(512, (_STAGE_BYTES // (4 * max(nslots, 1))) // 16 * 16))
    f = Function(module)
    f.raw("entry:")
    ptrs = [f"%p{k}" for k in range(nin + len(outs))]
    for ty, k in sorted(set(slot_of.values()), key=lambda t: t[1]):
        f.raw(f"  %buf{k} = alloca [{block} x {ty}], align 64")
    scalars = {}
    for k, v in enumerate(jaxpr.invars):
        if not lay.present[k][0]:  # rank 0 (or size 1): read once
            mty = memory_type(v.aval.dtype)
            x = f.emit(f"load {mty}, ptr {ptrs[k]}")
            scalars[v] = f.emit(f"icmp ne i8 {x}, 0") if ir_type(v.aval.dtype) == "i1" else x
    f.raw("  %start.addr = alloca i64")
    f.raw("  store i64 %lo, ptr %start.addr")
    f.raw("  br label %block.head")
    f.raw("block.head:")
    f.raw("  %start = load i64, ptr %start.addr")
    f.raw("  %more = icmp slt i64 %start, %hi")
    f.raw("  br i1 %more, label %block.body, label %block.exit")
    f.raw("block.body:")
    f.raw("  %left = sub i64 %hi, %start")
    f.raw(f"  %short = icmp slt i64 %left, {block}")
    f.raw(f"  %n = select i1 %short, i64 %left, i64 {block}")
    out_index = {v: k for k, v in enumerate(outs)}
    for eqn in eqns:
        # the equation's operands: ("v", type) a block of values at a pointer, ("s", type) a
        # scalar, ("c", text) a literal; its result: the block buffer, and an output array
        kinds, args = [], []
        for a in eqn.invars:
            if type(a) is Literal:
                kinds.append(("c", ir_const(a.val, a.aval.dtype), ir_type(a.aval.dtype)))
            elif a in scalars:
                kinds.append(("s", None, ir_type(a.aval.dtype)))
                args.append(f"{ir_type(a.aval.dtype)} {scalars[a]}")
            elif a in slot_of:
                kinds.append(("v", None, ir_type(a.aval.dtype)))
                args.append(f"ptr %buf{slot_of[a][1]}")
            else:
                mty = memory_type(a.aval.dtype)
                kinds.append(("a", None, ir_type(a.aval.dtype)))
                p = f.emit(f"getelementptr {mty}, ptr {ptrs[jaxpr.invars.index(a)]}, i64 %start")
                args.append(f"ptr {p}")
        v = eqn.outvars[0]
        args.append(f"ptr %buf{slot_of[v][1]}")
        if v in out_index:
            mty = memory_type(v.aval.dtype)
            p = f.emit(f"getelementptr {mty}, ptr {ptrs[nin + out_index[v]]}, i64 %start")
            args.append(f"ptr {p}")
        fn = _block_function(eqn, kinds, v in out_index, module)
        f.raw(f"  call void @{fn}({', '.join(args + ['i64 %n'])})")
    f.raw(f"  %next = add i64 %start, {block}")
    f.raw("  store i64 %next, ptr %start.addr")
    f.raw("  br label %block.head")
    f.raw("block.exit:")
    params = ([f"ptr noalias %p{k}" for k in range(nin + len(outs))]
              + ["i64 %d0", "i64 %lo", "i64 %hi"])
    text = (f"define internal void @{name}({', '.join(params)}) #1 {{\n" + "\n".join(f.lines)
            + "\n  ret void\n}\n")
    out_specs = [(tuple(v.aval.shape), np.dtype(v.aval.dtype)) for v in outs]
    return text, lay, out_specs, None, math.prod(space) * len(eqns)


def _block_function(eqn, kinds, stored, module):
    """The name of a function computing one equation over a block (`n` elements), defined in
    `module` once per distinct equation; see _staged_nest for the operand kinds."""
    out = eqn.outvars[0]
    ty = ir_type(out.aval.dtype)
    params = []
    g = Function(module, prefix="t")
    for k, (kind, _, aty) in enumerate(kinds):
        if kind == "s":
            params.append(f"{aty} %x{k}")
        elif kind in "va":
            params.append(f"ptr noalias %x{k}")
    params.append("ptr noalias %dst")
    if stored:
        params.append("ptr noalias %out")
    params.append("i64 %n")
    vals = []
    for k, (kind, const, aty) in enumerate(kinds):
        if kind == "c":
            vals.append(const)
        elif kind == "s":
            vals.append(f"%x{k}")
        else:
            mty = "i8" if aty == "i1" else aty
            p = g.emit(f"getelementptr {mty if kind == 'a' else aty}, ptr %x{k}, i64 %j")
            x = g.emit(f"load {mty if kind == 'a' else aty}, ptr {p}")
            vals.append(g.emit(f"icmp ne i8 {x}, 0") if kind == "a" and aty == "i1" else x)
    if eqn.primitive.name == "broadcast_in_dim":
        value = vals[0]
    else:
        ins, expr = elementwise_expr(eqn.primitive, [a.aval.dtype for a in eqn.invars],
                                     eqn.params)
        env = {id(n): x for n, x in zip(ins, vals)}
        for node in nodes(expr):
            if id(node) not in env:
                env[id(node)] = g.value(node, [env[id(a)] for a in node.args])
        value = env[id(expr)]
    p = g.emit(f"getelementptr {ty}, ptr %dst, i64 %j")
    g.raw(f"  store {ty} {value}, ptr {p}")
    if stored:
        mty = memory_type(out.aval.dtype)
        val = g.emit(f"zext i1 {value} to i8") if ty == "i1" else value
        q = g.emit(f"getelementptr {mty}, ptr %out, i64 %j")
        g.raw(f"  store {mty} {val}, ptr {q}")
    body = "\n".join(g.lines)
    text = ("(" + ", ".join(params) + ") #2 {\nentry:\n  br label %head\nhead:\n"
            "  %j = phi i64 [0, %entry], [%j1, %body]\n  %c = icmp slt i64 %j, %n\n"
            "  br i1 %c, label %body, label %exit\nbody:\n" + body
            + "\n  %j1 = add i64 %j, 1\n  br label %head\nexit:\n  ret void\n}\n")
    fn = "fgb_" + hashlib.sha1(text.encode()).hexdigest()[:16]
    module.helpers.setdefault(fn, f"define internal void @{fn}" + text)
    return fn


def _read_shape(jaxpr, v, rank):
    """The shape a kernel reads input `v` as, broadcasting NumPy-style to the iteration space:
    its own, or (read through a `broadcast_in_dim` of the group) with 1s on the new axes."""
    seen = set()
    for eqn in jaxpr.eqns:
        if v in eqn.invars:
            if eqn.primitive.name == "broadcast_in_dim":
                shape = [1] * len(eqn.params["shape"])
                for i, d in enumerate(eqn.params["broadcast_dimensions"]):
                    shape[d] = v.aval.shape[i]
                seen.add(tuple(shape))
            else:
                seen.add((1,) * (rank - v.aval.ndim) + tuple(v.aval.shape))
    if len(seen) > 1:
        raise UnsupportedOnCPU("an input read both through a broadcast and directly")
    return seen.pop() if seen else tuple(v.aval.shape)


def _components(jaxpr):
    """The connected parts of a fused body (several when the fusion pass merged independent
    groups, one kernel call for all of them): sub-Jaxprs in program order."""
    parent = {}

    def find(v):
        while parent.get(v, v) is not v:
            v = parent[v]
        return v

    def union(a, b):
        ra, rb = find(a), find(b)
        if ra is not rb:
            parent[ra] = rb

    defined = {v for eqn in jaxpr.eqns for v in eqn.outvars}
    for eqn in jaxpr.eqns:  # connected through values computed in the body (not its inputs)
        for a in eqn.invars:
            if type(a) is not Literal and a in defined:
                union(a, eqn.outvars[0])
    groups = {}
    for eqn in jaxpr.eqns:
        groups.setdefault(find(eqn.outvars[0]), []).append(eqn)
    if len(groups) == 1:
        return [jaxpr]
    comps = []
    for eqns in groups.values():
        defined = {v for e in eqns for v in e.outvars}
        ins = [v for v in jaxpr.invars if any(v in e.invars for e in eqns)]
        outs = [v for v in jaxpr.outvars if v in defined]
        comps.append(type(jaxpr)([], ins, outs, eqns))
    return comps


def kernel_source(body, name):
    """The Kernel of fusion group `body` (a `fused` equation's ClosedJaxpr without consts): the
    loop nest of each connected part, and an entry `name(argv, dv)`, argv the NumPy array
    objects (PyObject *[]) and dv the int64 loop sizes followed by lo and hi, that reads the
    arrays' data pointers and runs the loop nest over [lo, hi) of its outermost loop (one
    part), or runs parts [lo, hi) (several parts; equal parts share one loop nest)."""
    jaxpr = getattr(body, "jaxpr", body)
    if getattr(body, "consts", None):
        raise UnsupportedOnCPU("a fused body with constants")
    module = Module(name)
    comps = _components(jaxpr)
    arrays = list(jaxpr.invars) + list(jaxpr.outvars)
    nests, calls, out_specs, dims, work, lay0, init = {}, [], [], [], 0, None, None
    part_work = []
    position = {v: k for k, v in enumerate(arrays)}
    part_of = [set() for _ in arrays]
    late = {}
    for c, comp in enumerate(comps):
        for v in (*comp.invars, *comp.outvars):
            part_of[position[v]].add(c)
        text, lay, specs, init, w = _loop_nest(comp, f"{name}.nest", module)
        late.update(_late_reads(comp, lay, position))
        key = text
        if key not in nests:
            nests[key] = f"{name}.nest{len(nests)}"
        lay0 = lay0 or lay
        idx = [position[v] for v in (*comp.invars, *comp.outvars)]
        calls.append((nests[key], idx, len(dims), len(lay.dims)))
        dims += lay.dims
        out_specs += specs
        work += w
        part_work.append(w)
    if len(comps) > 1 and (init is not None or any(s[0] == () for s in out_specs)):
        raise UnsupportedOnCPU("merged groups with reductions")
    functions = "".join(text.replace(f"@{name}.nest(", f"@{fn}(", 1)
                        for text, fn in nests.items())
    nptr = len(arrays)
    loads = "".join(f"  %g{k} = getelementptr ptr, ptr %argv, i64 {k}\n"
                    f"  %a{k} = load ptr, ptr %g{k}\n"
                    f"  %s{k} = getelementptr i8, ptr %a{k}, i64 16\n"
                    f"  %q{k} = load ptr, ptr %s{k}\n" for k in range(nptr))
    sizes = [f"%d{j}" for j in range(len(dims))] + ["%lo", "%hi"]
    loads += "".join(f"  %e{j} = getelementptr i64, ptr %dv, i64 {j}\n"
                     f"  {v} = load i64, ptr %e{j}\n" for j, v in enumerate(sizes))
    head = f"define void @{name}(ptr %argv, ptr %dv) #0 {{\nentry:\n" + loads
    if len(comps) == 1:
        fn, idx, d0, nd = calls[0]
        args = ([f"ptr %q{k}" for k in idx] + [f"i64 %d{d0 + j}" for j in range(nd)]
                + ["i64 %lo", "i64 %hi"])
        entry = head + f"  call void @{fn}({', '.join(args)})\n  ret void\n}}\n"
    else:  # parts lo <= c < hi
        body_lines = []
        for c, (fn, idx, d0, nd) in enumerate(calls):
            args = ([f"ptr %q{k}" for k in idx] + [f"i64 %d{d0 + j}" for j in range(nd)]
                    + ["i64 0", f"i64 %d{d0}" if nd else "i64 1"])
            body_lines += [f"  %ge{c} = icmp sle i64 %lo, {c}", f"  %lt{c} = icmp sgt i64 %hi, {c}",
                           f"  %in{c} = and i1 %ge{c}, %lt{c}",
                           f"  br i1 %in{c}, label %run{c}, label %next{c}", f"run{c}:",
                           f"  call void @{fn}({', '.join(args)})", f"  br label %next{c}",
                           f"next{c}:"]
        entry = head + "  br label %next_start\nnext_start:\n" + "\n".join(body_lines) \
            + "\n  ret void\n}\n"
        init = None
    ir = functions + entry
    threadable = (len(comps) > 1 or (len(lay0.dims) > 0 and (
        lay0.kind == "map" or (lay0.kind == "row" and not lay0.reduced[0]))))
    return Kernel(name, ir, len(jaxpr.invars), out_specs, tuple(dims), init, threadable, work,
                  module.decls, module.helpers, lay0.kind == "map", parts=len(comps),
                  part_work=tuple(part_work),
                  part_of=[frozenset(p) for p in part_of], pattern=ir.replace(f"@{name}", "@K"),
                  late_reads=[late.get(v, frozenset()) for v in jaxpr.outvars])


def _late_reads(comp, lay, position):
    """{output var: indices of the inputs a staged nest reads after writing it} (see
    _staged_nest: each equation is a stage over the block, and writes its output there)."""
    eqns = list(comp.eqns)
    if not (len(lay.dims) == 1 and not any(lay.reduced) and len(eqns) >= STAGED_DEPTH):
        return {}   # one element at a time: every input is loaded before any output is stored
    last = {}
    for k, eqn in enumerate(eqns):
        for a in eqn.invars:
            if a in position and a in comp.invars:
                last[a] = k
    out = {}
    for k, eqn in enumerate(eqns):
        for v in eqn.outvars:
            if v in comp.outvars:
                out[v] = frozenset(position[a] for a, r in last.items() if r > k)
    return out


def _emit_line(lines, text, name):
    lines.append(f"  {name} = {text}")
    return name


def _identity(kind, dtype):
    return ir_const(_identity_value(kind, dtype), dtype)


def _identity_value(kind, dtype):
    dtype = np.dtype(dtype)
    if kind == "sum":
        return dtype.type(0)
    if dtype.kind == "f":
        return dtype.type(-np.inf if kind == "max" else np.inf)
    info = np.iinfo(dtype)
    return dtype.type(info.min if kind == "max" else info.max)


def _combine(g, kind, dtype, ty, acc, v, vector_sum):
    """acc (+|max|min) v. Float sums over the last axis may be reassociated (vector partial
    sums); max/min propagate NaN (LLVM's maximum/minimum)."""
    if kind == "sum":
        if dtype.kind == "f":
            return g.emit(f"fadd {'reassoc ' if vector_sum else ''}{ty} {acc}, {v}")
        return g.emit(f"add {ty} {acc}, {v}")
    if dtype.kind == "f":
        return g.intrinsic("maximum" if kind == "max" else "minimum", ty, acc, v)
    signed = dtype.kind == "i"
    op = ("smax" if signed else "umax") if kind == "max" else ("smin" if signed else "umin")
    return g.intrinsic(op, ty, acc, v)
