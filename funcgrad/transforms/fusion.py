"""Fusion of elementwise equations: groups of equations that one compiled loop computes, each
replaced by a `fused` equation whose body the backend's code generator turns into one kernel
(funcgrad/backends). jit runs it after `passes.optimize`, with the backend's options
(`backend.fusion`). See docs/jit.md for how the groups stay acyclic."""

from __future__ import annotations

import graphlib
import heapq
from typing import NamedTuple

from ..core import ClosedJaxpr, Eqn, Jaxpr, Primitive, Var, eval_jaxpr
from .jaxpr_util import (
    Unhashable as _Unhashable,
)
from .jaxpr_util import (
    has_effects as _has_effects,
)
from .jaxpr_util import (
    is_elementwise,
)
from .jaxpr_util import (
    literal_key as _literal_key,
)
from .jaxpr_util import (
    param_key as _param_key,
)
from .jaxpr_util import (
    split_program as _split,
)

__all__ = ["fusion_groups", "fuse", "FusionGroup", "fused_p"]


class FusionGroup(NamedTuple):
    """Equations (indices, in program order) computable in one pass over `shape`.

    inputs: Vars read by the group and defined outside it (literals stay inline in the eqns);
    outputs: Vars defined in the group and read after it (by other eqns or as program outputs).
    Every other value of the group is an intermediate no one else reads.
    """

    eqns: list
    inputs: list
    outputs: list
    shape: tuple
    recomputed: tuple = ()   # equations of other groups this one computes again (see fuse)


def fusion_groups(program, fusible=is_elementwise, min_size=2, broadcast_inputs=False):
    """Group elementwise equations (operands of the output's shape or rank 0) into DAGs that a
    code generator can compute in one pass each (a compiled loop, a CUDA kernel). `fusible(eqn)`
    says which equations may join a group (a backend's: what its generator translates).
    With `broadcast_inputs`, operands may also broadcast to the output's shape NumPy-style (a
    bias row, a keepdims statistic): the code generator reads them with broadcast indexing; and
    `broadcast_in_dim` equations may join where `fusible` says so (their operand then becomes
    a group input the generator reads with the broadcast's own axis mapping).

    Equations join the group of an operand's producer (groups of several operands merge) unless
    that would create a cycle through an equation outside the group, so each group can run as a
    unit (see `fuse` for an order). Returns the groups of at least `min_size` equations.
    """
    jaxpr, _, _ = _split(program)
    parent = {}  # group id -> group id (union-find)

    def find(g):
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    # A group runs as one unit: a path into any member and out of any member is a path through
    # it. `reach[v]` holds the groups whose results reach v through equations outside them, as
    # recorded when v was made; `gin[g]` the groups that reach some member of g (directly or
    # through outside equations). Groups grow and merge after a value was recorded, so the
    # groups that reach a value now are the closure of its record under `gin`, taken when asked.
    group_of = {}  # eqn index -> group id
    producer = {}  # var -> eqn index
    reach = {}  # var made outside every group -> group ids
    gin = {}  # group id -> group ids reaching its members

    def closure(ids):
        seen, stack = set(), [find(g) for g in ids]
        while stack:
            g = stack.pop()
            if g not in seen:
                seen.add(g)
                stack.extend(find(h) for h in gin[g])
        return seen

    # A group must not hold back a value an outside equation reads (everything read with it,
    # and everything that reader's readers keep alive, would wait): an equation joins only if
    # every value it reads from outside was made before the first outside read of the group's.
    # (Readers whose results no equation reads, such as a loss value, may wait.)
    final = _final_readers(jaxpr)
    first_read = {}  # group id -> index of the first equation outside it reading one of its values
    last_input = {}  # group id -> index of the last equation outside it whose value it reads

    def outside(a, groups):
        return a in producer and not (
            producer[a] in group_of and find(group_of[producer[a]]) in groups)

    def outside_inputs(ins, groups):
        return max((producer[a] for a in ins if outside(a, groups)), default=-1)

    # Nor may a group keep many values alive that the program would have freed: a group that
    # comes to wait for a value made later keeps the inputs it reads that were made after its
    # first equation and that no one reads after, until then (a sum of terms made one after
    # another, in one group, keeps every term until the last is made). A join may keep at most
    # HOLD_LIMIT bytes so. (Values made before the group's first equation were alive then.)
    last_read = {v: i for i, dead in enumerate(jaxpr.frees()) for v in dead}  # (not outputs)
    inputs = {}  # group id -> values made outside it (by equations) that it reads
    first_member = {}  # group id -> index of its first equation

    def held_bytes(groups, until):
        opened = min(first_member[h] for h in groups)
        held = {a for h in groups for a in inputs[h]
                if opened < producer[a] and last_read.get(a, until) < until
                and outside(a, groups)}
        return sum(a.aval.nbytes for a in held)

    last_effect = frozenset()  # what reached the last effectful equation (effects keep order)
    for i, eqn in enumerate(jaxpr.eqns):
        ins = [a for a in eqn.invars if type(a) is Var]
        direct, recorded = set(), set()
        effect = _has_effects(eqn)
        if effect:
            recorded |= last_effect
        for a in ins:
            j = producer.get(a)
            if j is None:
                continue
            if j in group_of:
                direct.add(find(group_of[j]))
            else:
                recorded |= reach[a]
        # groups with a path to this equation that leaves them (it may not join those)
        through = closure(recorded | {h for d in direct for h in gin[d]})
        out_shape = eqn.outvars[0].aval.shape if len(eqn.outvars) == 1 else None
        target = None
        if out_shape is not None and _fusible(eqn, fusible, broadcast_inputs):
            cands = []
            for a in ins:
                j = producer.get(a)
                if j is not None and j in group_of:
                    g = find(group_of[j])
                    if g not in cands and g not in through \
                            and jaxpr.eqns[j].outvars[0].aval.shape == out_shape:
                        cands.append(g)
            for g in cands:
                joined = {g} if target is None else {target, g}
                if target is not None and (target in closure(gin[g])
                                           or g in closure(gin[target])):
                    continue
                waited = max(last_input[h] for h in joined)
                latest = max(outside_inputs(ins, joined), waited)
                if latest >= min(first_read[h] for h in joined):
                    continue  # it would hold back a value read in between
                if latest > waited and held_bytes(joined, latest) > HOLD_LIMIT:
                    continue  # it would keep too much alive
                if target is None:
                    target = g
                else:
                    parent[g] = target
                    gin[target] = gin[target] | gin[g]
                    first_read[target] = min(first_read[target], first_read[g])
                    last_input[target] = max(last_input[target], last_input[g])
                    inputs[target] = inputs[target] | inputs.pop(g)
                    first_member[target] = min(first_member[target], first_member.pop(g))
            if target is None:
                target = i
                parent[i] = i
                gin[i] = set()
                first_read[i] = len(jaxpr.eqns)
                last_input[i] = -1
                inputs[i] = set()
                first_member[i] = i
            group_of[i] = target
            target = find(target)
            gin[target] = {find(h) for h in gin[target] | recorded | direct} - {target}
            last_input[target] = max(last_input[target], outside_inputs(ins, {target}))
            inputs[target] |= {a for a in ins if outside(a, {target})}
        else:
            for v in eqn.outvars:
                reach[v] = frozenset(recorded | direct)
            if effect:
                last_effect = frozenset(recorded | direct)
        mine = find(group_of[i]) if i in group_of else None
        for a in ins:
            j = producer.get(a)
            if j is not None and j in group_of:
                h = find(group_of[j])
                if h != mine and i not in final:
                    first_read[h] = min(first_read[h], i)
        for v in eqn.outvars:
            producer[v] = i
    members = {}
    for i, g in group_of.items():
        members.setdefault(find(g), []).append(i)
    groups = [sorted(m) for m in members.values() if len(m) >= min_size]
    groups.sort(key=lambda m: m[0])
    readers = {}  # var -> indices of the eqns reading it (None: a program output)
    for i, eqn in enumerate(jaxpr.eqns):
        for a in eqn.invars:
            if type(a) is Var:
                readers.setdefault(a, []).append(i)
    for v in jaxpr.outvars:
        if type(v) is Var:
            readers.setdefault(v, []).append(None)
    return [_describe_group(jaxpr, m, readers) for m in groups]


def _fusible(eqn, fusible, broadcast_inputs=False):
    if eqn.primitive.multiple_results or len(eqn.outvars) != 1 or _has_effects(eqn):
        return False
    if broadcast_inputs and eqn.primitive.name == "broadcast_in_dim":
        return bool(fusible(eqn))  # the group reads its operand with broadcast indexing
    if not is_elementwise(eqn) or not fusible(eqn):
        return False
    shape = eqn.outvars[0].aval.shape
    if broadcast_inputs:
        return all(broadcasts_to(a.aval.shape, shape) for a in eqn.invars)
    return all(a.aval.shape in (shape, ()) for a in eqn.invars)


def broadcasts_to(shape, target):
    """Whether `shape` broadcasts to `target` NumPy-style without changing `target`."""
    if len(shape) > len(target):
        return False
    return all(s in (1, t) for s, t in zip(shape[::-1], target[::-1]))


def _describe_group(jaxpr, idx, readers):
    inside = set(idx)
    defined = {v for i in idx for v in jaxpr.eqns[i].outvars}
    inputs = []
    for i in idx:
        for a in jaxpr.eqns[i].invars:
            if type(a) is Var and a not in defined and a not in inputs:
                inputs.append(a)
    outputs = [v for i in idx for v in jaxpr.eqns[i].outvars
               if any(r is None or r not in inside for r in readers.get(v, ()))]
    return FusionGroup(idx, inputs, outputs, jaxpr.eqns[idx[0]].outvars[0].aval.shape)


def _fused_impl(xp, *args, jaxpr):
    return eval_jaxpr(jaxpr.jaxpr, jaxpr.consts, *args)


fused_p = Primitive("fused", multiple_results=True, impl=_fused_impl,
                    abstract_eval=lambda *avals, jaxpr: list(jaxpr.out_avals),
                    differentiable=False)
fused_p.inline_call = True  # inline() undoes fuse()


def fuse(program, fusible=is_elementwise, min_size=2, broadcast_inputs=False, reductions=False,
         horizontal=False, singles=None, recompute=None):
    """The program with each fusion group replaced by one `fused[jaxpr=...]` equation, placed in
    a valid order (the groups' members need not be consecutive in the input).
    `fusible`, `broadcast_inputs`: see `fusion_groups`. With `reductions`, a reduction
    (`reduce_sum`, `reduce_max`, `reduce_min`, for which `fusible` holds) that is the only
    reader of a group's only output, not itself a program output, joins the group as its last
    equation: the code generator reduces the group's values without storing them (a single
    elementwise equation feeding a reduction, `sum(x * x)`, makes such a group too).

    With `horizontal`, groups of which neither needs the other's results become one `fused`
    equation whose body holds them side by side (one kernel call runs them all) when they
    compute the same equations on operands of their own shape (the same activation on several
    tensors), or when only the program's caller reads their results (an optimizer's update of
    every parameter and state). Groups ending in a reduction stay apart.
    `singles(eqn)`: a lone equation also makes a group where it says so (one whose NumPy
    implementation takes several passes, compiled into one).
    `recompute(eqn)`: says which equations are cheap enough to compute twice. A value a group
    computes for other groups only (a forward activation's by-products the backward pass reads)
    is then computed again inside each of those groups from the first group's inputs, instead of
    being stored and read back: fewer arrays written, read and kept alive.

    The annotated program is what a code generator walks: a `fused` body is all elementwise,
    but for that final reduction. `inline` turns it back into the flat program.
    """
    jaxpr, consts, rebuild = _split(program)
    groups = fusion_groups(program, fusible, 1 if reductions or singles else min_size,
                           broadcast_inputs)
    if reductions:
        groups = _absorb_reductions(jaxpr, groups, fusible, min_size if singles is None else 1)
    if singles is not None:
        groups = [g for g in groups if len(g.eqns) >= min_size or jaxpr.eqns[g.eqns[-1]]
                  .primitive.name in _REDUCTIONS or singles(jaxpr.eqns[g.eqns[0]])]
        if reductions:  # a reduction of a value no group computes: a group of its own
            taken = {i for g in groups for i in g.eqns}
            for i, eqn in enumerate(jaxpr.eqns):
                if (i not in taken and eqn.primitive.name in _REDUCTIONS
                        and len(eqn.invars) == 1 and type(eqn.invars[0]) is Var
                        and eqn.params.get("axes") and fusible(eqn) and singles(eqn)):
                    groups.append(FusionGroup([i], [eqn.invars[0]], list(eqn.outvars),
                                              eqn.invars[0].aval.shape))
            groups.sort(key=lambda g: g.eqns[0])
    if recompute is not None:
        groups = _recompute_cheap(jaxpr, groups, recompute)
    if horizontal:
        groups = _merge_parallel(jaxpr, groups)
    unit_of = {}
    for gi, g in enumerate(groups):
        for i in g.eqns:
            unit_of[i] = ("g", gi)
    units = {}
    for i in range(len(jaxpr.eqns)):
        units.setdefault(unit_of.get(i, ("e", i)), []).append(i)
    # (A group without outputs has its every value computed again by the groups reading it,
    # which depend on its inputs instead (below), not on it.)
    producer = {v: unit_of.get(i, ("e", i)) for i, e in enumerate(jaxpr.eqns) for v in e.outvars
                if i not in unit_of or groups[unit_of[i][1]].outputs}
    deps = {u: set() for u in units}
    again = {("g", gi): {v for i in g.recomputed for v in jaxpr.eqns[i].outvars}
             for gi, g in enumerate(groups) if g.recomputed}
    last_effect = None
    for i, eqn in enumerate(jaxpr.eqns):
        u = unit_of.get(i, ("e", i))
        own = again.get(u, ())   # values the group computes again itself
        deps[u].update(producer[a] for a in eqn.invars
                       if type(a) is Var and a in producer and a not in own)
        if _has_effects(eqn):
            if last_effect is not None:
                deps[u].add(last_effect)
            last_effect = u
    for gi, g in enumerate(groups):  # what a group computes again, it reads the inputs of
        inside = {v for i in (*g.eqns, *g.recomputed) for v in jaxpr.eqns[i].outvars}
        for i in g.recomputed:
            deps[("g", gi)].update(producer[a] for a in jaxpr.eqns[i].invars
                                   if type(a) is Var and a in producer and a not in inside)
    for u in deps:
        deps[u].discard(u)
    users = {u: [] for u in units}
    for u, ds in deps.items():
        for d in ds:
            users[d].append(u)
    # Each unit is placed where the input program could compute it: an equation at its index,
    # a group at its first member or, if later, just after its last input is made (and before
    # the first outside equation reading one of its values). Placed by its first member alone,
    # a group waiting for a late input would let everything ready run ahead of it (a backward
    # pass's weight transposes, say, all at once), and every value that work makes would stay
    # alive until it runs. (A group without outputs emits nothing: it is released when ready.)
    spans = _read_spans(jaxpr, groups)
    place = {u: (ix[0], 0) if u[0] == "e" else min(max((ix[0], 0), (spans[u[1]][0], 1)),
                                                   (spans[u[1]][1], -1))
             if groups[u[1]].outputs else (-1, 0) for u, ix in units.items()}
    pending = {u: len(ds) for u, ds in deps.items()}
    ready = [(place[u], u) for u, n in pending.items() if n == 0]
    heapq.heapify(ready)
    eqns, done = [], 0
    while ready:
        _, u = heapq.heappop(ready)
        done += 1
        if u[0] == "e":
            eqns.append(jaxpr.eqns[u[1]])
        elif groups[u[1]].outputs:  # (a group without outputs is computed where it is read)
            eqns.append(_fused_eqn(jaxpr, groups[u[1]]))
        for w in users[u]:
            pending[w] -= 1
            if pending[w] == 0:
                heapq.heappush(ready, (place[w], w))
    assert done == len(units), "fusion groups form a cycle"
    return rebuild(Jaxpr(jaxpr.constvars, jaxpr.invars, jaxpr.outvars, eqns), consts)


_REDUCTIONS = ("reduce_sum", "reduce_max", "reduce_min")


def _absorb_reductions(jaxpr, groups, fusible, min_size):
    readers = {}
    for i, eqn in enumerate(jaxpr.eqns):
        for a in eqn.invars:
            if type(a) is Var:
                readers.setdefault(a, []).append(i)
    outs = {v for v in jaxpr.outvars if type(v) is Var}
    kept = []
    for g in groups:
        if len(g.outputs) == 1 and g.outputs[0] not in outs:
            users = readers.get(g.outputs[0], [])
            red = jaxpr.eqns[users[0]] if len(users) == 1 else None
            if red is not None and red.primitive.name in _REDUCTIONS and len(red.invars) == 1 \
                    and red.params.get("axes") and not _has_effects(red) and fusible(red):
                kept.append(FusionGroup(g.eqns + [users[0]], g.inputs, list(red.outvars),
                                        g.shape))
                continue
        if len(g.eqns) >= min_size:
            kept.append(g)
    return kept


def _group_ancestors(jaxpr, groups):
    """Per group, the bit set of the groups with a path to it, each group taken as one unit (a
    path into any member and out of any member goes through it). In program order, to a fixed
    point: a member may come after an outside equation that reads another member."""
    group_of = {i: g for g, grp in enumerate(groups) for i in grp.eqns}
    producer = {v: i for i, e in enumerate(jaxpr.eqns) for v in e.outvars}
    anc = [0] * len(groups)

    def reaching(eqn, reach, anc):
        bits = 0
        for a in eqn.invars:
            j = producer.get(a) if type(a) is Var else None
            if j is not None:
                h = group_of.get(j)
                bits |= reach.get(j, 0) if h is None else anc[h] | 1 << h
        return bits

    while True:
        reach = {}   # outside eqn -> the groups with a path to it
        new = [0] * len(groups)
        last_effect = None   # effects keep their order: each follows the previous one
        for i, eqn in enumerate(jaxpr.eqns):
            g = group_of.get(i)
            if g is None:
                reach[i] = reaching(eqn, reach, anc)
                if _has_effects(eqn):
                    if last_effect is not None:
                        reach[i] |= reach[last_effect]
                    last_effect = i
            else:
                new[g] |= reaching(eqn, reach, anc) & ~(1 << g)
        for g, grp in enumerate(groups):   # (what a group computes again, it reads the inputs
            for i in grp.recomputed:       # of; counted as if stored: a superset of its paths)
                new[g] |= reaching(jaxpr.eqns[i], reach, anc) & ~(1 << g)
        if new == anc:
            return anc
        anc = new


def _merge_parallel(jaxpr, groups):
    """Groups of equal structure and no path between them, merged (see `fuse`)."""
    anc = _group_ancestors(jaxpr, groups)
    buckets = {}   # structure -> [(member group ids, bit set of members, span)]
    merged_into = {}
    outs = {v for v in jaxpr.outvars if type(v) is Var}
    spans = _read_spans(jaxpr, groups)
    for g, grp in enumerate(groups):
        if grp.recomputed:
            continue
        if all(v in outs for v in grp.outputs) and all(
                is_elementwise(jaxpr.eqns[i]) for i in grp.eqns):
            key = "final"   # results only the caller reads (new parameters and states)
        else:
            key = _structure(jaxpr, grp)
        if key is None:
            continue
        for members in buckets.setdefault(key, []):
            mask = members[1]
            unit_anc = 0
            for m in members[0]:
                unit_anc |= anc[m]
            last_input = max(members[2][0], spans[g][0])
            first_read = min(members[2][1], spans[g][1])
            if not (anc[g] & mask) and not unit_anc >> g & 1 and last_input < first_read:
                members[0].append(g)
                members[1] |= 1 << g
                members[2] = (last_input, first_read)
                merged_into[g] = members[0][0]
                # the merged unit is reached from what reached either part, and so is all
                # that it reaches
                joined, mask = unit_anc | anc[g], members[1]
                for h in range(len(groups)):
                    if anc[h] & mask or mask >> h & 1:
                        anc[h] |= joined | (0 if mask >> h & 1 else mask)
                break
        else:
            buckets[key].append([[g], 1 << g, spans[g]])
    if not merged_into:
        return groups
    members_of = {b[0][0]: b[0] for lists in buckets.values() for b in lists if len(b[0]) > 1}
    out = []
    for g, grp in enumerate(groups):
        if g in members_of:
            parts = [groups[m] for m in members_of[g]]
            ins = [v for p in parts for v in p.inputs]
            out.append(FusionGroup(sorted(i for p in parts for i in p.eqns),
                                   list(dict.fromkeys(ins)),
                                   [v for p in parts for v in p.outputs], grp.shape))
        elif g not in merged_into:
            out.append(grp)
    return out


# What a group may keep alive beyond the program's order: values it reads that the program
# would have freed before the group can run (fusion_groups), or, computing another group's
# value again, what that value is computed from, less the value (_recompute_cheap). Below it,
# fusing saves passes over memory for little memory; above it, the memory counts for more (one
# group summing 24 vocabulary tiles' terms kept 34 MiB alive in a 66 MiB training step).
HOLD_LIMIT = 16 << 20


def _final_readers(jaxpr):
    """Indices of the equations whose results no equation reads (program outputs): delaying
    one holds back nothing else."""
    read = {a for eqn in jaxpr.eqns for a in eqn.invars if type(a) is Var}
    return {i for i, eqn in enumerate(jaxpr.eqns) if not any(v in read for v in eqn.outvars)}


def _read_spans(jaxpr, groups):
    """Per group, (the index of the last equation outside it whose value it reads, the index of
    the first equation outside it reading one of its values). Groups merged side by side run
    as one unit, so a merge must keep the first below the second, or the unit would hold back
    a value read in between (see `fusion_groups`)."""
    producer = {v: i for i, e in enumerate(jaxpr.eqns) for v in e.outvars}
    readers = {}
    for i, eqn in enumerate(jaxpr.eqns):
        for a in eqn.invars:
            if type(a) is Var:
                readers.setdefault(a, []).append(i)
    final = _final_readers(jaxpr)
    spans = []
    for g in groups:
        inside = set(g.eqns) | set(g.recomputed)
        last = max((producer[a] for a in g.inputs if a in producer), default=-1)
        first = min((r for v in g.outputs for r in readers.get(v, ())
                     if r not in inside and r not in final), default=len(jaxpr.eqns))
        spans.append((last, first))
    return spans


def _structure(jaxpr, group):
    """A key equal for groups computing the same equations on operands of their own shape (or
    rank 0), or None for a group that broadcasts an operand or reduces."""
    index, key = {}, []
    for v in group.inputs:
        if v.aval.shape not in (group.shape, ()):
            return None
        index[v] = ("in", len(index), v.aval.ndim == 0, str(v.aval.dtype))
    for n, i in enumerate(group.eqns):
        eqn = jaxpr.eqns[i]
        if not is_elementwise(eqn) or eqn.outvars[0].aval.shape != group.shape:
            return None
        try:
            params = _param_key(dict(eqn.params))
        except _Unhashable:
            return None
        args = tuple(index[a] if type(a) is Var else _literal_key(a) for a in eqn.invars)
        key.append((eqn.primitive.name, params, args, str(eqn.outvars[0].aval.dtype)))
        index[eqn.outvars[0]] = ("eqn", n)
    return tuple(key), tuple(index[v] for v in group.outputs)


def _recompute_cheap(jaxpr, groups, cheap, limit=12):
    """Groups whose by-products for other groups are computed again there (see `fuse`)."""
    group_of = {i: g for g, grp in enumerate(groups) for i in grp.eqns}
    producer = {v: i for i, e in enumerate(jaxpr.eqns) for v in e.outvars}
    readers = {}
    for i, eqn in enumerate(jaxpr.eqns):
        for a in eqn.invars:
            if type(a) is Var:
                readers.setdefault(a, set()).add(i)
    program_outs = {v for v in jaxpr.outvars if type(v) is Var}
    extra = [set(grp.recomputed) for grp in groups]
    outputs = [list(grp.outputs) for grp in groups]
    changed = False
    for g in _producers_first(groups, group_of, producer):
        grp = groups[g]
        owned = set(grp.eqns)
        members = owned | extra[g]   # (what it computes again itself: its cones go through)
        for v in grp.outputs:
            outside = readers.get(v, set()) - owned
            if v in program_outs or not outside or any(
                    group_of.get(r) in (None, g) or groups[group_of[r]].shape != grp.shape
                    for r in outside):
                continue
            cone, stored = _cone(jaxpr, v, members, producer, cheap, limit)
            if cone is None or _kept_for(jaxpr, cone, readers, producer, program_outs,
                                         max(outside)) > v.aval.nbytes + HOLD_LIMIT:
                continue  # (it would keep much more alive than the value it saves storing)
            for r in outside:
                extra[group_of[r]] |= cone
            outputs[g].remove(v)
            outputs[g] += [t for t in stored if t not in outputs[g]]
            changed = True
    if not changed:
        return groups
    out = []
    for g, grp in enumerate(groups):
        rec = tuple(sorted(extra[g] - set(grp.eqns)))
        body = set(grp.eqns) | set(rec)
        defined = {v for i in body for v in jaxpr.eqns[i].outvars}
        inputs = []
        for i in sorted(body):
            for a in jaxpr.eqns[i].invars:
                if type(a) is Var and a not in defined and a not in inputs:
                    inputs.append(a)
        out.append(FusionGroup(grp.eqns, inputs, outputs[g], grp.shape, rec))
    return out


def _kept_for(jaxpr, cone, readers, producer, program_outs, until):
    """Bytes of the values `cone` reads that would be kept alive for it: computing it again
    at equation `until` keeps what it reads until then, where no one else reads it that late."""
    made = {v for i in cone for v in jaxpr.eqns[i].outvars}
    read = {a for i in cone for a in jaxpr.eqns[i].invars if type(a) is Var and a not in made}
    return sum(a.aval.nbytes for a in read if a in producer and a not in program_outs
               and max(readers[a] - cone, default=-1) < until)


def _producers_first(groups, group_of, producer):
    """Group indices, each after the groups whose values it reads: a group's cones may go
    through what it computes again of those groups, so that must be complete first."""
    reads = {g: {group_of[producer[a]] for a in grp.inputs if producer.get(a) in group_of} - {g}
             for g, grp in enumerate(groups)}
    return list(graphlib.TopologicalSorter(reads).static_order())


def _cone(jaxpr, v, members, producer, cheap, limit):
    """(equations computing v from its group's inputs, values they read that the group must
    still store), or (None, None) when that is not cheap: a transcendental function's result
    is stored rather than computed again."""
    cone, stored, stack = set(), [], [v]
    while stack:
        x = stack.pop()
        i = producer.get(x)
        if i is None or i not in members or i in cone:
            continue
        eqn = jaxpr.eqns[i]
        if not cheap(eqn):
            if x is v:
                return None, None
            stored.append(x)
            continue
        cone.add(i)
        if len(cone) > limit:
            return None, None
        stack.extend(a for a in eqn.invars if type(a) is Var)
    return cone, stored


def _fused_eqn(jaxpr, group):
    if group.recomputed or len(group.outputs) < len({v for i in group.eqns
                                                      for v in jaxpr.eqns[i].outvars}):
        # members whose values another group computes again may be dead here: only what the
        # outputs need is kept, and the inputs are what that reads
        need, keep = set(group.outputs), []
        for i in sorted(set(group.eqns) | set(group.recomputed), reverse=True):
            eqn = jaxpr.eqns[i]
            if any(v in need for v in eqn.outvars):
                keep.append(eqn)
                need.update(a for a in eqn.invars if type(a) is Var)
        keep.reverse()
        defined = {v for e in keep for v in e.outvars}
        inputs = [v for v in group.inputs if v in need and v not in defined]
        body = Jaxpr([], inputs, group.outputs, keep)
        return Eqn(fused_p, inputs, group.outputs, {"jaxpr": ClosedJaxpr(body, [])},
                   jaxpr.eqns[group.eqns[0]].source_info)
    body = Jaxpr([], group.inputs, group.outputs, [jaxpr.eqns[i] for i in group.eqns])
    first = jaxpr.eqns[group.eqns[0]]
    return Eqn(fused_p, group.inputs, group.outputs, {"jaxpr": ClosedJaxpr(body, [])},
               first.source_info)
