"""scan (and map over it): the scan primitive with all of its rules and the functions that bind
it; associative_scan.

    scan_p   (*consts, *carry, *xs; jaxpr, length, ...)      VJP: forward scan that stacks the
                                                             residuals of each step, then a
                                                             reverse scan of the body's backward

The body is a ClosedJaxpr param whose constants were hoisted to explicit leading operands, so
every transform sees closed-over values (tracers of an outer grad or vmap) as ordinary inputs.
"""

from __future__ import annotations

import numpy as np

from .. import tree_util
from ..core import ClosedJaxpr, Jaxpr, Primitive, bind, eval_jaxpr, user_line
from ..interpreters.batching import batch_jaxpr
from ..interpreters.jvp import jvp_jaxpr
from ..interpreters.ops import zeros
from ..interpreters.programs import aval, is_float, trace_flat
from ..interpreters.reverse import ResidualsInClosure, dependence, vjp_jaxpr
from ..tree_util import tree_flatten, tree_unflatten
from . import elementwise as ew
from ._batching import at_front, batch_size, move_axis, move_to_front
from ._programs import (
    arrays,
    check_carry,
    compiled,
    ct_or_zero,
    leaf_paths,
    permute_invars,
    promote_weak,
    same_type,
)
from ._util import const_like, normalize_axis, to_operand
from .remat import remat_p
from .slicing import slice_in_dim
from .structural import concatenate, pad, rev

__all__ = ["scan", "map", "scan_p", "associative_scan"]


def _remat_wrapped(closed):
    """The program as one remat_p equation: its reverse mode stores only its inputs."""
    def fun(*args):
        return bind(remat_p, *args, jaxpr=closed, prevent_cse=True, policy=None)
    wrapped, consts = trace_flat(fun, closed.in_avals, "remat")
    assert not consts
    return wrapped


def _linearize(closed, active, keep_inputs):
    """vjp_jaxpr of the body; where a primitive keeps residuals out of its reach, of the body
    wrapped in one checkpoint (its reverse mode stores only the inputs)."""
    try:
        return vjp_jaxpr(closed, active, keep_inputs)
    except ResidualsInClosure:
        return vjp_jaxpr(_remat_wrapped(closed), active, keep_inputs)


# ---------------------------------------------------------------------------------------------
# scan

def _scan_split(args, num_consts, num_carry):
    return (args[:num_consts], args[num_consts:num_consts + num_carry],
            args[num_consts + num_carry:])


def _scan_abstract(*avals, jaxpr, num_consts, num_carry, length, reverse, unroll):
    ins = jaxpr.in_avals
    for k, (a, b) in enumerate(zip(avals, ins)):
        want = b if k < num_consts + num_carry else b.update(shape=(length,) + b.shape)
        if not same_type(a, want):
            raise TypeError(f"scan: operand {k} has type {a.str_short()} but the body expects "
                            f"{want.str_short()}")
    outs = jaxpr.out_avals
    return (list(ins[num_consts:num_consts + num_carry])
            + [a.update(shape=(length,) + a.shape) for a in outs[num_carry:]])


def _run_scan(body, xp, args, num_consts, num_carry, length, reverse, y_avals):
    consts, carry, xs = _scan_split(args, num_consts, num_carry)
    carry = list(carry)
    ys = [xp.empty((length,) + a.shape, a.dtype) for a in y_avals]
    for i in (range(length - 1, -1, -1) if reverse else range(length)):
        outs = body(*consts, *carry, *[x[i, ...] for x in xs])
        carry = list(outs[:num_carry])
        for y, o in zip(ys, outs[num_carry:]):
            y[i, ...] = o
    return carry + ys


def _scan_impl(xp, *args, jaxpr, num_consts, num_carry, length, reverse, unroll):
    def body(*a):
        return eval_jaxpr(jaxpr.jaxpr, (), *a)
    return _run_scan(body, xp, args, num_consts, num_carry, length, reverse,
                     jaxpr.out_avals[num_carry:])


def _scan_compile(xp, compile_jaxpr, *, jaxpr, num_consts, num_carry, length, reverse, unroll):
    body = compiled(compile_jaxpr, xp, jaxpr)
    y_avals = jaxpr.out_avals[num_carry:]

    def run(*args):
        return _run_scan(body, xp, args, num_consts, num_carry, length, reverse, y_avals)
    return run


def _scan_jvp(primals, tangents, out, *, jaxpr, num_consts, num_carry, length, reverse, unroll):
    nc, nk = num_consts, num_carry
    consts, carry, xs = _scan_split(primals, nc, nk)
    tc, tk, tx = _scan_split(tangents, nc, nk)
    c_nz = [t is not None for t in tc]
    x_nz = [t is not None for t in tx]
    k_nz = [t is not None for t in tk]
    ny = len(jaxpr.out_avals) - nk
    while True:
        _, _, o = jvp_jaxpr(jaxpr, c_nz + k_nz + x_nz, [False] * (nk + ny))
        new = [a or (b and is_float(aval(p))) for a, b, p in zip(k_nz, o[:nk], carry)]
        if new == k_nz:
            break
        k_nz = new
    jb, jconsts, o = jvp_jaxpr(jaxpr, c_nz + k_nz + x_nz, k_nz + [False] * ny)
    y_nz = o[nk:]
    nx = len(xs)
    ntc, ntk, ntx = sum(c_nz), sum(k_nz), sum(x_nz)
    ncj = len(jconsts)
    # jb inputs: jconsts, consts, carry, xs, tc, tk, tx -> jconsts, consts, tc, carry, tk, xs, tx
    base = ncj + nc + nk + nx
    order = (list(range(ncj + nc)) + list(range(base, base + ntc))
             + list(range(ncj + nc, ncj + nc + nk)) + list(range(base + ntc, base + ntc + ntk))
             + list(range(ncj + nc + nk, base)) + list(range(base + ntc + ntk,
                                                             base + ntc + ntk + ntx)))
    jb = permute_invars(jb, order)
    # jb outputs: carry, ys, t_carry, t_ys -> carry, t_carry, ys, t_ys
    j = jb.jaxpr
    outv = list(j.outvars)
    nty = sum(y_nz)
    outv = (outv[:nk] + outv[nk + ny:nk + ny + ntk] + outv[nk:nk + ny]
            + outv[nk + ny + ntk:nk + ny + ntk + nty])
    jb = ClosedJaxpr(Jaxpr(j.constvars, j.invars, outv, j.eqns), jb.consts)
    tcs = [t for t in tc if t is not None]
    tks = [ct_or_zero(t, aval(p)) for t, p, nz in zip(tk, carry, k_nz) if nz]
    txs = [t for t in tx if t is not None]
    outs = bind(scan_p, *jconsts, *consts, *tcs, *carry, *tks, *xs, *txs, jaxpr=jb,
                num_consts=ncj + nc + ntc, num_carry=nk + ntk, length=length, reverse=reverse,
                unroll=unroll)
    t_carry = iter(outs[nk:nk + ntk])
    t_ys = iter(outs[nk + ntk + ny:])
    return tuple([next(t_carry) if nz else None for nz in k_nz]
                 + [next(t_ys) if nz else None for nz in y_nz])


def _scan_batch(vals, dims, *, jaxpr, num_consts, num_carry, length, reverse, unroll):
    size = batch_size(vals, dims)
    nc, nk = num_consts, num_carry
    consts, carry, xs = _scan_split(vals, nc, nk)
    cd, kd, xd = _scan_split(dims, nc, nk)
    c_b = [d is not None for d in cd]
    x_b = [d is not None for d in xd]
    k_b = [d is not None for d in kd]
    ny = len(jaxpr.out_avals) - nk
    while True:
        _, _, o = batch_jaxpr(jaxpr, c_b + k_b + x_b, size, False)
        new = [a or b for a, b in zip(k_b, o[:nk])]
        if new == k_b:
            break
        k_b = new
    bj, bconsts, o = batch_jaxpr(jaxpr, c_b + k_b + x_b, size, k_b + [False] * ny)
    consts = [move_to_front(c, d) if d is not None else c for c, d in zip(consts, cd)]
    carry = [at_front(c, d, size) if want else c for c, d, want in zip(carry, kd, k_b)]
    xs = [move_axis(x, d, 1) if d is not None else x for x, d in zip(xs, xd)]
    outs = bind(scan_p, *bconsts, *consts, *carry, *xs, jaxpr=bj,
                num_consts=len(bconsts) + nc, num_carry=nk, length=length, reverse=reverse,
                unroll=unroll)
    return outs, [0 if b else None for b in k_b] + [1 if b else None for b in o[nk:]]


class _ScanLinearization:
    """Everything the reverse mode of one scan needs: the activity of consts, carry and xs, the
    forward scan body that also emits residuals, and the backward body."""

    def __init__(self, params, active):
        jaxpr, nc, nk = params["jaxpr"], params["num_consts"], params["num_carry"]
        avals = jaxpr.in_avals
        act = [a and is_float(v) for a, v in zip(active, avals)]
        act_c, act_k, act_x = _scan_split(act, nc, nk)
        act_k = list(act_k)
        while True:
            dep = dependence(jaxpr.jaxpr, list(act_c) + act_k + list(act_x))
            new = [a or b for a, b in zip(act_k, dep[:nk])]
            if new == act_k:
                break
            act_k = new
        self.act = list(act_c) + act_k + list(act_x)
        keep = set(range(nc)) | set(range(nc + nk, len(avals)))
        self.lin = _linearize(jaxpr, self.act, keep)
        self.params = params


def _scan_grad(trace, tracers, params):
    """Reverse mode of scan: a forward scan that also stacks each step's residuals."""
    vals = [t.val for t in tracers]
    active = tuple(t.aux is not None for t in tracers)
    sl = _ScanLinearization(params, active)
    outs, res = _scan_forward(sl, vals)
    out_tracers = tuple(trace.out_tracer(o) for o in outs)
    out_ids = tuple(t.aux for t in out_tracers)
    if any(i is not None for i in out_ids):
        trace.tape.append((_scan_lin_p, {"sl": sl}, tuple(t.aux for t in tracers), out_ids,
                           res, tuple(aval(o) for o in outs), active))
    return out_tracers


def _scan_forward(sl, vals):
    p = sl.params
    nc, nk = p["num_consts"], p["num_carry"]
    lin = sl.lin
    n_extra = sum(1 for s in lin.res_src if s[0] == "out")
    outs = bind(scan_p, *lin.fwd_consts, *vals, jaxpr=lin.fwd,
                num_consts=len(lin.fwd_consts) + nc, num_carry=nk, length=p["length"],
                reverse=p["reverse"], unroll=p["unroll"])
    n_out = len(outs) - n_extra
    stacked = outs[n_out:]
    # residuals: the consts and xs the backward needs (no copies), then the stacked ones
    res = []
    for kind, i in lin.res_src:
        res.append(vals[i] if kind == "in" else stacked[i])
    return list(outs[:n_out]), tuple(res)


def _scan_backward(sl, ct, res):
    p = sl.params
    jaxpr, nc, nk, length = p["jaxpr"], p["num_consts"], p["num_carry"], p["length"]
    lin = sl.lin
    avals = jaxpr.in_avals
    out_avals = jaxpr.out_avals
    ny = len(out_avals) - nk
    ct = list(ct) if isinstance(ct, (tuple, list)) else [ct]
    act = sl.act
    act_c, act_k, act_x = _scan_split(act, nc, nk)
    # backward scan operands: consts = bwd consts + loop-invariant residuals; carry = carry
    # cotangents + accumulated const cotangents; xs = per-step residuals + ys cotangents
    inv = [k for k, (kind, i) in enumerate(lin.res_src) if kind == "in" and i < nc]
    per = [k for k in range(len(lin.res_src)) if k not in set(inv)]
    ct_y_mask = lin.out_ct[nk:]
    ct_k = [ct_or_zero(ct[j], out_avals[j]) for j in range(nk) if act_k[j]]
    acc = [zeros(avals[i].strip_weak_type()) for i in range(nc) if act_c[i]]
    ct_ys = [ct_or_zero(ct[nk + j], out_avals[nk + j].update(
        shape=(length,) + out_avals[nk + j].shape)) for j in range(ny) if ct_y_mask[j]]
    n_bc, n_inv, n_ck, n_acc = len(lin.bwd_consts), len(inv), len(ct_k), len(acc)
    n_per = len(per)
    k_pos = [j for j in range(nk) if act_k[j]]

    def body(*args):
        bconsts = args[:n_bc]
        inv_vals = args[n_bc:n_bc + n_inv]
        ck = args[n_bc + n_inv:n_bc + n_inv + n_ck]
        acc_v = args[n_bc + n_inv + n_ck:n_bc + n_inv + n_ck + n_acc]
        rest = args[n_bc + n_inv + n_ck + n_acc:]
        per_vals, cy = rest[:n_per], rest[n_per:]
        res_all = [None] * len(lin.res_src)
        for k, v in zip(inv, inv_vals):
            res_all[k] = v
        for k, v in zip(per, per_vals):
            res_all[k] = v
        ck_full = dict(zip(k_pos, ck))
        cts = [ck_full.get(j) if j < nk else None for j in range(nk)]
        cy_it = iter(cy)
        cts += [next(cy_it) if m else None for m in ct_y_mask]
        cts_in = [c if m else None for c, m in zip(cts, lin.out_ct)]
        cts_in = [ct_or_zero(c, out_avals[j]) for j, c in enumerate(cts_in) if lin.out_ct[j]]
        got = eval_jaxpr(lin.bwd.jaxpr, (), *bconsts, *res_all, *cts_in)
        it = iter(got)
        full = [next(it) if a else None for a in act]
        g_c, g_k, g_x = _scan_split(full, nc, nk)
        new_ck = [g_k[j] for j in k_pos]
        new_acc = [ew.add(a, g) for a, g in zip(acc_v, [g for g in g_c if g is not None])]
        return new_ck + new_acc + [g for g in g_x if g is not None]

    res = list(res)
    inv_vals = [res[k] for k in inv]
    per_vals = [res[k] for k in per]
    in_avals = ([aval(c) for c in lin.bwd_consts] + [aval(v) for v in inv_vals]
                + [aval(v) for v in ct_k] + [aval(v) for v in acc]
                + [aval(v).update(shape=aval(v).shape[1:]) for v in per_vals]
                + [aval(v).update(shape=aval(v).shape[1:]) for v in ct_ys])
    bj, bconsts = trace_flat(body, in_avals, "scan_bwd")
    outs = bind(scan_p, *bconsts, *lin.bwd_consts, *inv_vals, *ct_k, *acc, *per_vals, *ct_ys,
                jaxpr=bj, num_consts=len(bconsts) + n_bc + n_inv, num_carry=n_ck + n_acc,
                length=length, reverse=not p["reverse"], unroll=p["unroll"])
    g_k = iter(outs[:n_ck])
    g_c = iter(outs[n_ck:n_ck + n_acc])
    g_x = iter(outs[n_ck + n_acc:])
    result = [next(g_c) if a else None for a in act_c]
    result += [next(g_k) if a else None for a in act_k]
    result += [next(g_x) if a else None for a in act_x]
    return result


def _scan_lin_vjp(ct, res, outs, active, *, sl):
    got = _scan_backward(sl, ct, res)
    return tuple(g if a else None for g, a in zip(got, active))


def _scan_vjp(ct, primals, out, active, **params):
    """VJP from the primal inputs alone (the tape's scan rule stores residuals instead)."""
    sl = _ScanLinearization(params, active)
    _, res = _scan_forward(sl, list(primals))
    return _scan_lin_vjp(ct, res, out, active, sl=sl)


scan_p = Primitive("scan", multiple_results=True, impl=_scan_impl, abstract_eval=_scan_abstract,
                   jvp=_scan_jvp, vjp=_scan_vjp, batch=_scan_batch, residuals="in")
scan_p.compile_rule = _scan_compile
scan_p.grad_rule = _scan_grad


class _TapeOnly:
    """A scan's reverse-mode tape entry (never bound, so not a primitive of the lax namespace):
    its residuals are the stacked step values, its VJP the reverse scan."""

    name = "scan"
    multiple_results = True
    vjp = staticmethod(_scan_lin_vjp)


_scan_lin_p = _TapeOnly()


def scan(f, init, xs=None, length=None, reverse=False, unroll=1):
    """Loop `carry, y = f(carry, x)` over the leading axis of `xs` (JAX's lax.scan).

    Returns (final carry, stacked ys). `xs` and the ys are pytrees; `length` is required when xs
    is None. The carry must keep its pytree structure and leaf types.
    """
    xs_flat, xs_tree = tree_util.tree_flatten(xs)
    lengths = {int(aval(x).shape[0]) for x in xs_flat if aval(x).shape}
    for p, x in zip(leaf_paths(xs), xs_flat):
        if not aval(x).shape:
            raise ValueError(f"scan: xs leaf {p or '(xs)'} is a scalar; scanned-over values need "
                             f"a leading axis{user_line()}.")
    if length is not None:
        lengths.add(int(length))
    if len(lengths) > 1:
        sizes = ", ".join(f"{p or 'xs'}: {aval(x).shape[0]}"
                          for p, x in zip(leaf_paths(xs), xs_flat))
        raise ValueError(f"scan: the leading axes of xs must all equal the length; got {sizes}"
                         f"{' and length=' + str(length) if length is not None else ''}"
                         f"{user_line()}.")
    if not lengths:
        raise ValueError(f"scan: length must be given when xs is None or empty{user_line()}.")
    length = lengths.pop()
    init_flat, in_tree = tree_util.tree_flatten(init)
    nk = len(init_flat)
    x_avals = [aval(x).update(shape=aval(x).shape[1:], weak_type=False) for x in xs_flat]
    for attempt in range(2):
        c_avals = [aval(x) for x in init_flat]
        box = {}

        def body(*args, box=box):
            c = tree_util.tree_unflatten(in_tree, list(args[:nk]))
            x = tree_util.tree_unflatten(xs_tree, list(args[nk:]))
            out = f(c, x)
            if not (isinstance(out, (tuple, list)) and len(out) == 2):
                raise TypeError(f"scan: the body function must return a pair (carry, y), got "
                                f"{type(out).__name__}{user_line()}.")
            c2, y = out
            c_leaves, box["tree"] = tree_util.tree_flatten(c2)
            y_leaves, box["ytree"] = tree_util.tree_flatten(y)
            box["ny"] = len(y_leaves)
            return c_leaves + y_leaves

        bj, consts = trace_flat(body, c_avals + x_avals, "scan_body")
        if box["tree"] != in_tree:
            raise TypeError(f"scan body function must return a carry with the same pytree "
                            f"structure as init: got {box['tree']}, expected {in_tree}"
                            f"{user_line()}.")
        out_c = bj.out_avals[:nk]
        if attempt == 0:
            init_flat, changed = promote_weak(init_flat, c_avals, out_c)
            if changed:
                continue
        check_carry("scan body function", in_tree, box["tree"], c_avals, out_c,
                     tree_util.tree_unflatten(in_tree, init_flat))
        break
    outs = bind(scan_p, *consts, *arrays(init_flat), *xs_flat, jaxpr=bj, num_consts=len(consts),
                num_carry=nk, length=length, reverse=bool(reverse), unroll=unroll)
    carry = tree_util.tree_unflatten(in_tree, list(outs[:nk]))
    ys = tree_util.tree_unflatten(box["ytree"], list(outs[nk:]))
    return carry, ys


def map(f, xs):  # noqa: A001 (lax's name)
    """`stack([f(x) for x in xs])` as a scan."""
    return scan(lambda c, x: (c, f(x)), (), xs)[1]


# ---------------------------------------------------------------------------------------------
# associative_scan

def _interleave(a, b, axis):
    """a[0], b[0], a[1], b[1], ... along axis (len(a) == len(b) or len(b) + 1)."""
    equal = a.shape[axis] == b.shape[axis]
    a_cfg = [(0, 0, 0)] * a.ndim
    b_cfg = [(0, 0, 0)] * b.ndim
    a_cfg[axis] = (0, 1 if equal else 0, 1)
    b_cfg[axis] = (1, 0 if equal else 1, 1)
    op = ew.bitwise_or if a.dtype == np.bool_ else ew.add
    return op(pad(a, const_like(0, a), a_cfg), pad(b, const_like(0, b), b_cfg))


def associative_scan(fn, elems, reverse=False, axis=0):
    """All prefix combinations fn(...fn(fn(e0, e1), e2)..., ek) along `axis`, for an associative
    `fn` of two pytrees of arrays (applied elementwise to whole slices), computed by the parallel
    prefix algorithm (Blelloch): log2(n) levels of strided slices, fn, pads and concatenates.
    `reverse` scans from the end (fn(later, earlier), as JAX)."""
    flat, tree = tree_flatten(elems)
    flat = [to_operand(e) for e in flat]
    if not flat:
        raise ValueError("associative_scan needs at least one array")
    axis = normalize_axis(axis, flat[0].ndim)
    num = flat[0].shape[axis]
    if any(e.shape[axis] != num for e in flat[1:]):
        raise ValueError("Array inputs to associative_scan must have the same first dimension. "
                         f"(saw: {[tuple(e.shape) for e in flat]})")
    if reverse:
        flat = [rev(e, (axis,)) for e in flat]

    def combine(a_flat, b_flat):
        c_flat, c_tree = tree_flatten(fn(tree_unflatten(tree, a_flat),
                                         tree_unflatten(tree, b_flat)))
        if c_tree != tree:
            raise TypeError(f"associative_scan: fn returned a {c_tree}, not the structure of "
                            f"elems, {tree}")
        return [to_operand(c) for c in c_flat]

    def sl(e, start, limit, stride=1):
        return slice_in_dim(e, start, limit, stride, axis)

    def scan(elems):
        n = elems[0].shape[axis]
        if n < 2:
            return elems
        # Pairs combined, scanned recursively: the odd positions of the result.
        odd = scan(combine([sl(e, 0, -1, 2) for e in elems], [sl(e, 1, None, 2) for e in elems]))
        # Each even position (after the first) is the odd one before it combined with itself.
        if n % 2 == 0:
            even = combine([sl(e, 0, -1) for e in odd], [sl(e, 2, None, 2) for e in elems])
        else:
            even = combine(odd, [sl(e, 2, None, 2) for e in elems])
        even = [concatenate([sl(e, 0, 1), r], axis) for e, r in zip(elems, even)]
        return [_interleave(e, o, axis) for e, o in zip(even, odd)]

    out = scan(flat)
    if reverse:
        out = [rev(e, (axis,)) for e in out]
    return tree_unflatten(tree, out)
