"""funcgrad.lax.indexing, dynamic_slicing, cumulative, sorting: gather, scatter, dynamic slices,
cumulative ops and sort.

Each primitive is checked three ways: eagerly against a NumPy reference over hypothesis-drawn
shapes, by the program make_jaxpr records, and by its rules called directly on float64 NumPy
arrays: the JVP against central finite differences, and the VJP against the JVP through
<ct, J t> == <J^T ct, t>. Set FUNCGRAD_INDEXING_EXAMPLES to draw more examples locally.
"""

from __future__ import annotations

import os
import types

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import funcgrad as fg
from funcgrad import lax
from funcgrad.core import get_aval
from funcgrad.core.staging import trace_to_jaxpr
from funcgrad.lax import cumulative as cum
from funcgrad.lax import dynamic_slicing as dyn
from funcgrad.lax import indexing as ix
from funcgrad.lax import sorting as srt

cases = settings(max_examples=int(os.environ.get("FUNCGRAD_INDEXING_EXAMPLES", "25")),
                 deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ---------------------------------------------------------------------------------------------
# The rule checker

def check_rules(prim, operands, params, wrt, eps=1e-6, rtol=1e-6, atol=1e-8, seed=0):
    """JVP == central differences along a random tangent of the operands in `wrt`; the VJP's
    <J^T ct, t> == <ct, J t>; cotangents of the other operands are None."""
    rng = np.random.default_rng(seed)
    ops = [np.asarray(o) for o in operands]
    multi = prim.multiple_results
    out = prim.bind(*ops, **params)
    outs = list(out) if multi else [out]
    tangents = [rng.normal(size=o.shape) if i in wrt else None for i, o in enumerate(ops)]

    def moved(s):
        r = prim.bind(*[o if t is None else o + s * t for o, t in zip(ops, tangents)], **params)
        return list(r) if multi else [r]

    fd = [(p.astype(float) - m.astype(float)) / (2 * eps) for p, m in zip(moved(eps), moved(-eps))]
    jt = prim.jvp(ops, tangents, out, **params)
    jt = (list(jt) if multi else [jt]) if jt is not None else [None] * len(outs)
    for j, want, o in zip(jt, fd, outs):
        if o.dtype.kind != "f":
            continue
        got = np.zeros(o.shape) if j is None else np.asarray(j)
        assert got.shape == o.shape and got.dtype == o.dtype
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg="JVP vs differences")

    cts = [rng.normal(size=o.shape) if o.dtype.kind == "f" else np.zeros(o.shape, o.dtype)
           for o in outs]
    active = tuple(i in wrt for i in range(len(ops)))
    ct_in = prim.vjp(tuple(cts) if multi else cts[0], ops, out, active, **params)
    assert len(ct_in) == len(ops)
    fwd = sum(float(np.vdot(c, np.asarray(j))) for c, j, o in zip(cts, jt, outs)
              if o.dtype.kind == "f" and j is not None)
    rev, scale = 0.0, abs(fwd) + 1.0
    for i, (c, t) in enumerate(zip(ct_in, tangents)):
        if i not in wrt:
            assert c is None or ops[i].dtype.kind != "f" or not active[i]
            continue
        c = np.asarray(c)
        assert c.shape == ops[i].shape and c.dtype == ops[i].dtype, f"cotangent {i}"
        rev += float(np.vdot(c, t))
        scale += float(np.abs(c * t).sum())
    assert abs(fwd - rev) <= 1e-10 * scale, f"<ct, J t> = {fwd} but <J^T ct, t> = {rev}"


def jaxpr_text(f, *args):
    """The program of f(*args), printed (make_jaxpr at the level of flat arrays)."""
    def flat(*a):
        r = f(*a)
        return list(r) if isinstance(r, tuple) else [r]
    return str(trace_to_jaxpr(flat, [get_aval(a) for a in args]))


# ---------------------------------------------------------------------------------------------
# Strategies

def shapes(min_dims=1, max_dims=3, max_side=4):
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=1, max_side=max_side)


def floats(shape):
    return hnp.arrays(np.float64, shape, elements=st.floats(-3, 3, allow_subnormal=False))


def distinct(shape):
    """Pairwise distinct values at least 0.1 apart (no ties: sort, max and min are smooth)."""
    n = int(np.prod(shape, dtype=np.int64))
    return hnp.arrays(np.int64, shape, elements=st.integers(-4 * n - 8, 4 * n + 8),
                      unique=True).map(lambda a: a * 0.1 + 0.03)


@st.composite
def gather_case(draw, oob=True):
    """(operand shape, indices): indices batch + (k,), some out of range when `oob`."""
    shape = draw(shapes())
    k = draw(st.integers(0, len(shape)))
    batch = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=3))
    lo, hi = (-2, 2) if oob else (0, 0)
    cols = [draw(hnp.arrays(np.int32, batch, elements=st.integers(lo, shape[i] - 1 + hi)))
            for i in range(k)]
    return shape, np.stack(cols, -1) if k else np.zeros(batch + (0,), np.int32)


@st.composite
def unique_gather_case(draw):
    """(operand shape, indices) with pairwise distinct in-range indices of shape (n, k)."""
    shape = draw(shapes())
    k = draw(st.integers(1, len(shape)))
    positions = int(np.prod(shape[:k]))
    n = draw(st.integers(1, min(positions, 6)))
    flat = draw(st.permutations(range(positions)))[:n]
    return shape, np.stack(np.unravel_index(flat, shape[:k]), -1).astype(np.int32)


def ref_gather(x, idx):
    k = idx.shape[-1]
    out = np.empty(idx.shape[:-1] + x.shape[k:], x.dtype)
    for b in np.ndindex(idx.shape[:-1]):
        out[b] = x[tuple(np.clip(idx[b], 0, np.array(x.shape[:k]) - 1))]
    return out


_COMBINE = {"set": lambda a, u: u, "add": np.add, "mul": np.multiply, "min": np.minimum,
            "max": np.maximum}


def ref_scatter(x, idx, upd, mode):
    out = x.copy()
    k = idx.shape[-1]
    for b in np.ndindex(idx.shape[:-1]):
        i = idx[b]
        if np.all((i >= 0) & (i < np.array(x.shape[:k]))):
            out[tuple(i)] = _COMBINE[mode](out[tuple(i)], upd[b])
    return out


# ---------------------------------------------------------------------------------------------
# gather

@cases
@given(gather_case(), st.data())
def test_gather_matches_numpy_and_clamps(case, data):
    shape, idx = case
    x = data.draw(floats(shape))
    out = ix.gather(x, idx)
    np.testing.assert_array_equal(out, ref_gather(x, idx))
    check_rules(ix.gather_p, (x, idx), {}, wrt=(0,))


def test_gather_program_and_dtypes():
    x = np.arange(12.0).reshape(3, 4)
    idx = np.array([[0, 1], [2, 3]])
    assert "gather" in jaxpr_text(ix.gather, x, idx)
    assert ix.gather(x.astype(np.float32), idx).dtype == np.float32
    np.testing.assert_array_equal(ix.gather(np.arange(5), np.array([[7], [-3]])), [4, 0])


def test_gather_cotangent_goes_to_clamped_position():
    x = np.arange(4.0)
    ct = ix.gather_p.vjp(np.array([1.0, 2.0, 3.0]), (x, np.array([[9], [-1], [1]])),
                         None, (True, False))[0]
    np.testing.assert_array_equal(ct, [2.0, 3.0, 0.0, 1.0])


@cases
@given(st.data())
def test_take_along_axis_matches_numpy(data):
    shape = data.draw(shapes())
    axis = data.draw(st.integers(0, len(shape) - 1))
    x = data.draw(floats(shape))
    idx_shape = shape[:axis] + (data.draw(st.integers(1, 4)),) + shape[axis + 1:]
    idx = data.draw(hnp.arrays(np.int64, idx_shape, elements=st.integers(0, shape[axis] - 1)))
    np.testing.assert_array_equal(ix.take_along_axis(x, idx, axis),
                                  np.take_along_axis(x, idx, axis))


# ---------------------------------------------------------------------------------------------
# scatter

@cases
@given(gather_case(), st.sampled_from(["set", "add", "mul", "min", "max"]), st.data())
def test_scatter_matches_numpy_and_drops_out_of_range(case, mode, data):
    shape, idx = case
    x = data.draw(floats(shape))
    upd = data.draw(floats(idx.shape[:-1] + shape[idx.shape[-1]:]))
    x_before = x.copy()
    out = ix.scatter(x, idx, upd, mode)
    np.testing.assert_array_equal(out, ref_scatter(x, idx, upd, mode))
    np.testing.assert_array_equal(x, x_before)  # inputs are never mutated


@cases
@given(gather_case(), st.sampled_from(["set", "add"]), st.data())
def test_scatter_set_and_add_rules_with_duplicates(case, mode, data):
    shape, idx = case
    x = data.draw(floats(shape))
    upd = data.draw(floats(idx.shape[:-1] + shape[idx.shape[-1]:]))
    prim = ix.scatter_p if mode == "set" else ix.scatter_add_p
    wrt = data.draw(st.sampled_from([(0,), (2,), (0, 2)]))
    check_rules(prim, (x, idx, upd), {}, wrt=wrt)


def test_scatter_set_duplicates_last_wins_and_losers_get_no_cotangent():
    x = np.zeros(3)
    idx = np.array([[1], [1], [5]])
    upd = np.array([10.0, 20.0, 30.0])
    np.testing.assert_array_equal(ix.scatter(x, idx, upd), [0.0, 20.0, 0.0])
    ct_x, _, ct_u = ix.scatter_p.vjp(np.array([1.0, 2.0, 3.0]), (x, idx, upd), None,
                                     (True, False, True))
    np.testing.assert_array_equal(ct_x, [1.0, 0.0, 3.0])
    np.testing.assert_array_equal(ct_u, [0.0, 2.0, 0.0])  # loser and dropped update: zero


@pytest.mark.parametrize("vocab", [256, 8, 1])
def test_scatter_add_of_many_rows_is_np_add_at(vocab):
    # NumPy's fast paths for >= 256 updates (an embedding gradient): distinct indices, a few
    # repeats each (one indexed add per repeat: np.add.at's order, so its result bit for bit),
    # many repeats (each index's rows summed first: the same sum to rounding)
    rng = np.random.default_rng(vocab)
    table = rng.normal(size=(256, 16)).astype(np.float32)
    idx = rng.integers(0, vocab, (300, 1))
    upd = rng.normal(size=(300, 16)).astype(np.float32)
    want = table.copy()
    np.add.at(want, idx[:, 0], upd)
    got = np.asarray(ix.scatter_add(table, idx, upd))
    if vocab == 256:  # at most a few repeats
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    distinct = rng.permutation(256)[:, None]
    want = table.copy()
    want[distinct[:, 0]] += upd[:256]
    np.testing.assert_array_equal(np.asarray(ix.scatter_add(table, distinct, upd[:256])), want)


@cases
@given(unique_gather_case(), st.data())
def test_scatter_mul_rules_unique_indices(case, data):
    shape, idx = case
    x = data.draw(floats(shape))
    upd = data.draw(floats(idx.shape[:-1] + shape[idx.shape[-1]:]))
    check_rules(ix.scatter_mul_p, (x, idx, upd), {}, wrt=(0, 2))


@cases
@given(gather_case(), st.sampled_from(["min", "max"]), st.data())
def test_scatter_min_max_rules_without_ties(case, mode, data):
    shape, idx = case
    u_shape = idx.shape[:-1] + shape[idx.shape[-1]:]
    n = int(np.prod(shape))
    vals = data.draw(distinct((n + int(np.prod(u_shape)),)))
    x, upd = vals[:n].reshape(shape), vals[n:].reshape(u_shape)
    prim = ix.scatter_min_p if mode == "min" else ix.scatter_max_p
    check_rules(prim, (x, idx, upd), {}, wrt=(0, 2))


def test_scatter_max_ties_split_the_derivative():
    x = np.array([1.0, 5.0])
    idx = np.array([[0], [0], [1]])
    upd = np.array([1.0, 0.0, 7.0])  # position 0: operand and update 0 tie at 1.0
    out = ix.scatter_max(x, idx, upd)
    np.testing.assert_array_equal(out, [1.0, 7.0])
    ct_x, _, ct_u = ix.scatter_max_p.vjp(np.array([1.0, 1.0]), (x, idx, upd), out,
                                         (True, False, True))
    np.testing.assert_array_equal(ct_x, [0.5, 0.0])
    np.testing.assert_array_equal(ct_u, [0.5, 0.0, 1.0])


def test_scatter_programs_name_their_mode():
    x, idx, u = np.zeros(4), np.array([[1], [2]]), np.ones(2)
    for mode, name in [("set", "scatter "), ("add", "scatter_add"), ("mul", "scatter_mul"),
                       ("min", "scatter_min"), ("max", "scatter_max")]:
        assert name in jaxpr_text(lambda a, b, c, m=mode: ix.scatter(a, b, c, m), x, idx, u)
    with pytest.raises(ValueError, match="mode"):
        ix.scatter(x, idx, u, "sub")
    with pytest.raises(TypeError, match="updates"):
        jaxpr_text(ix.scatter, x, idx, np.ones(3))


# ---------------------------------------------------------------------------------------------
# dynamic_slice, dynamic_update_slice

@st.composite
def slice_case(draw):
    shape = draw(shapes())
    sizes = tuple(draw(st.integers(0, n)) for n in shape)
    starts = tuple(draw(st.integers(-3, n + 2)) for n in shape)
    return shape, sizes, starts


def _clamped(starts, shape, sizes):
    """JAX's dynamic_slice: a negative start counts from the end once, then all are clamped."""
    return tuple(slice(b, b + m) for b, m in
                 ((min(max(s + n if s < 0 else s, 0), n - m), m)
                  for s, n, m in zip(starts, shape, sizes)))


@cases
@given(slice_case(), st.data())
def test_dynamic_slice_clamps_and_rules(case, data):
    shape, sizes, starts = case
    x = data.draw(floats(shape))
    s = [np.array(v, np.int32) for v in starts]
    np.testing.assert_array_equal(dyn.dynamic_slice(x, *s, slice_sizes=sizes),
                                  x[_clamped(starts, shape, sizes)])
    np.testing.assert_array_equal(dyn.dynamic_slice(x, list(starts), slice_sizes=sizes),
                                  x[_clamped(starts, shape, sizes)])  # JAX-style sequence
    check_rules(dyn.dynamic_slice_p, (x, *s), {"slice_sizes": sizes}, wrt=(0,))


@cases
@given(slice_case(), st.data())
def test_dynamic_update_slice_clamps_and_rules(case, data):
    shape, sizes, starts = case
    x = data.draw(floats(shape))
    u = data.draw(floats(sizes))
    s = [np.array(v, np.int64) for v in starts]
    want = x.copy()
    want[_clamped(starts, shape, sizes)] = u
    np.testing.assert_array_equal(dyn.dynamic_update_slice(x, u, *s), want)
    check_rules(dyn.dynamic_update_slice_p, (x, u, *s), {}, wrt=data.draw(
        st.sampled_from([(0,), (1,), (0, 1)])))


def test_dynamic_slice_programs_take_traced_starts():
    x = np.arange(10.0)
    text = jaxpr_text(lambda a, i: dyn.dynamic_slice(a, i, slice_sizes=(3,)), x, np.array(2))
    assert "dynamic_slice[slice_sizes=(3,)]" in text
    text = jaxpr_text(lambda a, u, i: dyn.dynamic_update_slice(a, u, i), x, np.ones(2),
                      np.array(2))
    assert "dynamic_update_slice" in text


# ---------------------------------------------------------------------------------------------
# Cumulative reductions

def _ref_cum(name, x, axis, reverse):
    fn = {"cumsum": np.cumsum, "cumprod": np.cumprod,
          "cummax": lambda a, axis: np.maximum.accumulate(a, axis),
          "cummin": lambda a, axis: np.minimum.accumulate(a, axis),
          "cumlogsumexp": lambda a, axis: np.logaddexp.accumulate(a, axis)}[name]
    if reverse:
        return np.flip(fn(np.flip(x, axis), axis=axis), axis)
    return fn(x, axis=axis)


CUMS = ["cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp"]


@cases
@given(st.sampled_from(CUMS), shapes(max_side=6), st.booleans(), st.data())
def test_cumulative_ops_match_numpy_and_rules(name, shape, reverse, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    smooth = name in ("cummax", "cummin")
    x = data.draw(distinct(shape) if smooth else floats(shape))
    out = getattr(cum, name)(x, axis, reverse=reverse)
    np.testing.assert_allclose(out, _ref_cum(name, x, axis, reverse), rtol=1e-13, atol=1e-13)
    assert out.dtype == x.dtype
    prim = getattr(cum, name + "_p")
    check_rules(prim, (x,), {"axis": axis % len(shape), "reverse": reverse}, wrt=(0,))


@pytest.mark.parametrize("name", ["cumsum", "cumprod", "cummax", "cummin"])
def test_cumulative_ops_keep_integer_dtypes(name):
    x = np.array([[3, -1, 4], [1, 5, -9]], np.int32)
    out = getattr(cum, name)(x, 1)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, _ref_cum(name, x, 1, False))


@cases
@given(shapes(max_side=6), st.booleans(), st.data())
def test_cumprod_derivative_is_exact_with_zeros(shape, reverse, data):
    x = data.draw(hnp.arrays(np.float64, shape, elements=st.sampled_from([0.0, 0.0, -1.5, 0.5,
                                                                          2.0, 1.25])))
    axis = data.draw(st.integers(0, len(shape) - 1))
    check_rules(cum.cumprod_p, (x,), {"axis": axis, "reverse": reverse}, wrt=(0,))


def test_cummax_ties_give_the_derivative_to_the_first_record():
    x = np.array([1.0, 3.0, 3.0, 2.0, 5.0])
    t = np.eye(5)
    out = cum.cummax(x, 0)
    rows = [cum.cummax_p.jvp((x,), (t[j],), out, axis=0, reverse=False) for j in range(5)]
    np.testing.assert_array_equal(np.array(rows).T, [[1, 0, 0, 0, 0], [0, 1, 0, 0, 0],
                                                      [0, 1, 0, 0, 0], [0, 1, 0, 0, 0],
                                                      [0, 0, 0, 0, 1]])
    rev = cum.cummax(x, 0, reverse=True)
    ct = cum.cummax_p.vjp(np.ones(5), (x,), rev, (True,), axis=0, reverse=True)[0]
    np.testing.assert_array_equal(ct, [0, 0, 0, 0, 5])


def test_cumlogsumexp_is_stable_for_large_and_spread_values():
    x = np.array([-1000.0, 0.0, 1000.0, 1000.0])
    np.testing.assert_allclose(cum.cumlogsumexp(x, 0), [-1000.0, 0.0, 1000.0, 1000 + np.log(2)])
    check_rules(cum.cumlogsumexp_p, (x,), {"axis": 0, "reverse": False}, wrt=(0,))


@pytest.mark.parametrize("name", ["maximum", "minimum", "logaddexp"])
def test_log_depth_scan_matches_accumulate(name):
    # The path for array namespaces without ufunc.accumulate (CuPy), run here on NumPy arrays.
    other_xp = types.SimpleNamespace(**{n: getattr(np, n) for n in
                                        ("maximum", "minimum", "logaddexp", "concatenate")})
    x = np.random.default_rng(1).normal(size=(3, 11, 2))
    for axis in range(3):
        np.testing.assert_allclose(cum._accumulate(other_xp, name, x, axis),
                                   getattr(np, name).accumulate(x, axis=axis), rtol=1e-14)


def test_cumulative_programs():
    x = np.ones((2, 3))
    for name in CUMS:
        text = jaxpr_text(lambda a, fn=getattr(cum, name): fn(a, 1, reverse=True), x)
        assert f"{name}[axis=1 reverse=True]" in text


# ---------------------------------------------------------------------------------------------
# sort, argsort, top_k

@cases
@given(shapes(), st.integers(1, 3), st.data())
def test_sort_matches_numpy_lexicographic_order(shape, n_ops, data):
    dim = data.draw(st.integers(0, len(shape) - 1))
    num_keys = data.draw(st.integers(1, n_ops))
    # Small integer-valued keys: plenty of ties, so secondary keys and stability matter.
    ops = [data.draw(hnp.arrays(np.float64, shape, elements=st.integers(0, 2).map(float)))
           for _ in range(n_ops)]
    out = srt.sort(list(ops), dimension=dim, num_keys=num_keys)  # a list: always a tuple back
    moved = [np.moveaxis(o, dim, -1) for o in ops]
    perm = np.lexsort(moved[:num_keys][::-1], axis=-1)
    for o, m in zip(out, moved):
        np.testing.assert_array_equal(o, np.moveaxis(np.take_along_axis(m, perm, -1), -1, dim))


@cases
@given(shapes(), st.integers(1, 2), st.data())
def test_sort_rules(shape, n_ops, data):
    dim = data.draw(st.integers(0, len(shape) - 1))
    keys = data.draw(distinct(shape))
    ops = [keys] + [data.draw(floats(shape)) for _ in range(n_ops - 1)]
    wrt = tuple(data.draw(st.lists(st.integers(0, n_ops - 1), min_size=1, unique=True)))
    check_rules(srt.sort_p, ops, {"dimension": dim, "is_stable": True, "num_keys": 1}, wrt=wrt)


def test_sort_with_integer_payload_rules():
    x = np.array([[0.3, -1.0, 2.0], [5.0, 4.0, 3.0]])
    payload = np.array([[0, 1, 2], [0, 1, 2]])
    check_rules(srt.sort_p, (x, payload), {"dimension": 1, "is_stable": True, "num_keys": 1},
                wrt=(0,))


def test_sort_calling_conventions_and_program():
    x = np.array([3.0, np.nan, 1.0, 2.0])
    np.testing.assert_array_equal(srt.sort(x), [1.0, 2.0, 3.0, np.nan])  # NaN last, as NumPy
    a, b = srt.sort([x, np.arange(4.0)])
    np.testing.assert_array_equal(b, [2.0, 3.0, 0.0, 1.0])
    text = jaxpr_text(lambda v: srt.sort(v, np.arange(4.0), num_keys=1), x)
    assert "sort[dimension=0 is_stable=True num_keys=1]" in text


@cases
@given(shapes(), st.data())
def test_argsort_matches_numpy_stable(shape, data):
    x = data.draw(hnp.arrays(np.float64, shape, elements=st.integers(-2, 2).map(float)))
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    got = srt.argsort(x, dim)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, np.argsort(x, axis=dim, kind="stable"))


@cases
@given(shapes(), st.sampled_from([np.float64, np.int32, np.uint8]), st.data())
def test_top_k_matches_numpy(shape, dtype, data):
    x = data.draw(hnp.arrays(dtype, shape, elements=st.integers(0, 5)))
    k = data.draw(st.integers(0, shape[-1]))
    vals, idx = srt.top_k(x, k)
    # Largest first, ties to the lower index: a stable sort of -x.
    want_idx = np.argsort(-x.astype(np.float64), axis=-1, kind="stable")[..., :k]
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_array_equal(vals, np.take_along_axis(x, want_idx, -1))
    assert vals.dtype == x.dtype


# ---------------------------------------------------------------------------------------------
# Through the transforms (the rules, re-traced and composed)

def total(x):
    return lax.reduce_sum(x, tuple(range(x.ndim)))


def test_grad_through_indexing_ops():
    x = np.array([0.5, 0.0, 2.0, -1.0])

    def f(x):
        y = cum.cumprod(x, 0)
        z = ix.gather(y, np.array([[3], [1]]))
        s = srt.sort(ix.scatter_add(x, np.array([[0]]), lax.slice(z, (0,), (1,))))
        return lax.add(total(lax.mul(s, np.arange(1.0, 5.0))), total(z))

    g = fg.grad(f)(x)
    eps = 1e-6
    fd = np.array([(f(x + eps * e) - f(x - eps * e)) / (2 * eps) for e in np.eye(4)])
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)


def test_second_order_through_cumprod_and_cumlogsumexp():
    x = np.array([0.3, -0.7, 1.1, 0.0])

    def f(x):
        return lax.add(total(lax.integer_pow(cum.cumprod(x, 0), 2)),
                       total(cum.cumlogsumexp(lax.mul(x, x), 0)))

    g = fg.grad(f)
    eps = 1e-5
    for e in np.eye(4):
        fd = (g(x + eps * e) - g(x - eps * e)) / (2 * eps)
        fwd = fg.jvp(g, (x,), (e,))[1]  # forward over reverse
        rev = fg.grad(lambda y, e=e: total(lax.mul(g(y), e)))(x)  # reverse over reverse
        np.testing.assert_allclose(fwd, fd, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(rev, fd, rtol=1e-6, atol=1e-7)


def test_dynamic_slice_takes_jax_positional_signature():
    x = np.arange(20.0).reshape(4, 5)
    want = x[1:3, 2:4]
    np.testing.assert_array_equal(fg.lax.dynamic_slice(x, (1, 2), (2, 2)), want)
    np.testing.assert_array_equal(fg.lax.dynamic_slice(x, np.array([1, 2]), (2, 2)), want)
    np.testing.assert_array_equal(fg.lax.dynamic_slice(x, 1, 2, slice_sizes=(2, 2)), want)
    g = fg.grad(lambda a: (fg.lax.dynamic_slice(a, (1, 2), (2, 2)) ** 2).sum())(x)
    np.testing.assert_array_equal(g, np.pad(2 * want, ((1, 1), (2, 1))))
    with pytest.raises(TypeError, match="slice_sizes"):
        fg.lax.dynamic_slice(x, 1, 2, 3)
