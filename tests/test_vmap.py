"""vmap: the contract, checked against a Python loop over examples.

  every primitive      vmap(prim) == stacking prim over the examples, for hypothesis-drawn
                       operands (tests/rule_specs.py), in_axes (negative, None) and out_axes;
                       the batched program is the unbatched one plus a bounded number of layout
                       equations (transpose, broadcast_in_dim, ...): never a loop over examples
  programs             a batched matmul is one dot_general, a batched reduction one reduce
  the API              in_axes / out_axes pytrees, axis_size, broadcast of unbatched outputs,
                       keyword arguments, nesting
  compositions         vmap(grad) (per-example gradients), grad(vmap), jvp(vmap), vmap(jvp),
                       vmap(vmap), closures over outer tracers
  collectives          psum, pmean, pmax, pmin, all_gather, axis_index over named axes, nested
                       names, under grad
  errors               inconsistent sizes, in_axes not matching the arguments, axes out of range,
                       Python control flow on a batched value, unknown axis names
"""

from __future__ import annotations

import collections
import importlib
import os
import pkgutil

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from rule_specs import NONDIFF, SPECS

import funcgrad as fg
import funcgrad.lax
from funcgrad import lax
from funcgrad.core import Primitive

try:
    vmap = fg.vmap
except AttributeError:  # not exported yet
    from funcgrad.transforms.vmap import vmap

# FUNCGRAD_VMAP_EXAMPLES=200 draws more examples per test locally.
hyp = settings(max_examples=int(os.environ.get("FUNCGRAD_VMAP_EXAMPLES", "4")), deadline=None,
               derandomize=True, database=None, phases=[Phase.explicit, Phase.generate],
               suppress_health_check=list(HealthCheck))


def _discover():
    prims = {}
    for m in pkgutil.iter_modules(funcgrad.lax.__path__):
        if not m.name.startswith("_"):
            mod = importlib.import_module(f"funcgrad.lax.{m.name}")
            prims.update({v.name: v for v in vars(mod).values() if isinstance(v, Primitive)})
    return prims


PRIMS = _discover()
LINALG = {"solve", "triangular_solve", "cholesky", "slogdet", "eigh", "svd", "qr"}


def test_every_primitive_has_a_batching_rule():
    # iota takes no operands, so it is never batched: vmap binds it as is.
    missing = sorted(n for n, p in PRIMS.items() if p.batch is None and n != "iota")
    assert not missing, f"primitives without a batching rule: {missing}"


# ---------------------------------------------------------------------------------------------
# Every primitive against a loop over examples

def _harness_entries():
    out = []
    for key, s in SPECS.items():
        if s.axis_name is None:  # collectives: see below
            out.append(pytest.param(key, s.name, s.cases, s.apply, id=key))
    for key, s in NONDIFF.items():
        if s.cases is not None and key != "iota":
            out.append(pytest.param(key, s.name, s.cases, None, id=key))
    return out


def _example(x, b, name):
    """Example b of a batch built from the drawn operand x: a different but equally valid value.
    Arrays are rolled (keeps every elementwise domain and the value set), linear algebra inputs
    scaled by a positive factor (keeps them definite and well conditioned), dynamic start indices
    shifted (they are clamped)."""
    x = np.asarray(x)
    if b == 0:
        return x
    if name in LINALG:
        return x * (1 + 0.5 * b)
    if x.ndim == 0:
        if name.startswith("dynamic") and x.dtype.kind in "iu":
            return (x + b).astype(x.dtype)
        return x
    return np.roll(x.reshape(-1), b).reshape(x.shape)


def _apply(prim, apply):
    if apply is not None:
        return lambda *ops, **params: apply(prim, ops, params)
    return lambda *ops, **params: prim.bind(*ops, **params)


def _count(closed):
    return collections.Counter(e.primitive.name for e in closed.jaxpr.eqns)


# Equations a batching rule may add beyond a transpose or a broadcast: the index column of a
# batched gather/scatter, the window indices of batched dynamic slices, the per-example padding.
_LAYOUT = {"transpose", "broadcast_in_dim", "reshape"}  # layout only: no compute per example
_EXTRA = {
    **{n: {"iota", "concatenate"} for n in ["gather", "scatter", "scatter_add", "scatter_mul",
                                           "scatter_min", "scatter_max"]},
    "dynamic_slice": {"gather", "iota", "concatenate", "convert_element_type", "max", "min",
                      "add", "expand_dims"},
    "dynamic_update_slice": {"scatter", "iota", "concatenate", "convert_element_type", "max",
                             "min", "add", "expand_dims"},
    "pad": {"pad", "select_n"},
    # a batched index runs both branches of the spec (sin*w, x*x+w) and selects per lane
    "cond": {"select_n", "ne", "min", "max", "reshape", "sin", "mul", "add"},
}


def _unbatched_weight(name, i):
    """A quantized weight's arrays are not mapped over (vmap refuses a batch of quantized
    weights with the fix, tests/test_quant.py): only the input x or the ids are."""
    return name.startswith("dequantize_") or (name.startswith("quantized_") and i >= 1)


@pytest.mark.parametrize("key, name, cases, apply", _harness_entries())
@hyp
@given(data=st.data())
def test_batching_rule_matches_loop(key, name, cases, apply, data):
    prim = PRIMS[name]
    case = data.draw(cases, label="case")
    f = _apply(prim, apply)
    size = data.draw(st.integers(1, 3), label="batch size")
    ops = [np.asarray(o) for o in case.operands]
    in_axes = tuple(data.draw(st.none() if _unbatched_weight(name, i) else
                              st.one_of(st.none(), st.integers(-o.ndim - 1, o.ndim)),
                              label=f"in_axes[{i}]") for i, o in enumerate(ops))
    examples = [[_example(o, b, name) if a is not None else o for o, a in zip(ops, in_axes)]
                for b in range(size)]
    args = [o if a is None else np.stack([ex[i] for ex in examples], axis=a)
            for i, (o, a) in enumerate(zip(ops, in_axes))]
    loop = [f(*ex, **case.params) for ex in examples]
    multi = isinstance(loop[0], tuple)
    outs = list(zip(*loop)) if multi else [loop]
    want = [np.stack([np.asarray(o) for o in per], axis=0) for per in outs]
    out_axes = [data.draw(st.integers(-w.ndim, w.ndim - 1), label="out_axes") for w in want]
    want = [np.moveaxis(w, 0, a) for w, a in zip(want, out_axes)]

    g = lambda *xs: f(*xs, **case.params)
    batched = vmap(g, in_axes=in_axes, out_axes=tuple(out_axes) if multi else out_axes[0],
                   axis_size=size if all(a is None for a in in_axes) else None)
    got = batched(*args)
    got = list(got) if multi else [got]
    tol = dict(rtol=1e-8, atol=1e-10) if name in LINALG else dict(rtol=1e-12, atol=1e-13)
    for gi, wi in zip(got, want):
        assert gi.shape == wi.shape and gi.dtype == wi.dtype, (gi.shape, gi.dtype, wi.dtype)
        np.testing.assert_allclose(gi, wi, equal_nan=True, **tol)

    # The program: the unbatched one, plus layout equations (and bounded index arithmetic).
    if apply is None and not all(a is None for a in in_axes):
        plain = _count(fg.make_jaxpr(g)(*examples[0]))
        prog = _count(fg.make_jaxpr(batched)(*args))
        extra = prog - plain
        if name not in _LAYOUT:  # (wrappers may drop a no-op: fewer is fine)
            assert prog[name] <= plain[name], (plain, prog)
        assert set(extra) <= _LAYOUT | _EXTRA.get(name, set()), (name, plain, prog)
        assert sum(extra.values()) <= 4 * len(ops) + 4 * max(o.ndim for o in ops) + 4, prog


def _check_against_loop(f, args, in_axes):
    """vmap(f, in_axes)(*args) == stacking f over the examples (axis 0 of the output)."""
    size = next(np.shape(a)[ax] for a, ax in zip(args, in_axes) if ax is not None)
    loop = [f(*[a if ax is None else np.take(a, b, axis=ax) for a, ax in zip(args, in_axes)])
            for b in range(size)]
    got = vmap(f, in_axes=in_axes)(*args)
    if isinstance(got, tuple):
        for i, g in enumerate(got):
            np.testing.assert_array_equal(g, np.stack([np.asarray(o[i]) for o in loop]))
    else:
        np.testing.assert_array_equal(got, np.stack([np.asarray(o) for o in loop]))


_IN_AXES = [(0, None), (None, 0), (0, 0), (-1, 1), (2, -1)]
_IN_AXES3 = [(0, None, None), (None, 0, None), (None, None, 0), (0, 0, None), (None, 1, 0),
             (1, 0, -1), (0, 0, 0)]


@pytest.mark.parametrize("in_axes", _IN_AXES)
def test_gather_every_batching_branch(in_axes):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 4, 5, 2))  # batch of 3 along each axis named in in_axes
    x = np.moveaxis(x, 0, in_axes[0]) if in_axes[0] is not None else x[0]
    idx = rng.integers(-1, 5, size=(3, 6, 2))  # some out of range: clamped
    idx = np.moveaxis(idx, 0, in_axes[1]) if in_axes[1] is not None else idx[0]
    _check_against_loop(lax.gather, (x, idx), in_axes)


@pytest.mark.parametrize("mode", ["set", "add", "mul", "min", "max"])
@pytest.mark.parametrize("in_axes", _IN_AXES3)
def test_scatter_every_batching_branch(mode, in_axes):
    rng = np.random.default_rng(1)
    args = [rng.normal(size=(3, 4, 5, 2)), rng.integers(-1, 5, size=(3, 6, 2)),
            rng.normal(size=(3, 6, 2))]  # duplicates and out-of-range indices included
    args = [np.moveaxis(a, 0, ax) if ax is not None else a[0] for a, ax in zip(args, in_axes)]
    if mode == "set":  # duplicates: NumPy's last-wins order must be kept per example
        args[1] = args[1] % 3
    _check_against_loop(lambda o, i, u: lax.scatter(o, i, u, mode=mode), args, in_axes)


@pytest.mark.parametrize("in_axes", [(0, None, None), (None, 0, None), (None, None, 0),
                                     (1, 0, 0), (-1, None, 0)])
def test_dynamic_slice_every_batching_branch(in_axes):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 6, 5))
    args = [x, np.array([-1, 0, 2, 9]), np.array([3, 1, 0, 2], np.int32)]
    args = [np.moveaxis(a, 0, ax) if ax is not None else a[0] for a, ax in zip(args, in_axes)]
    f = lambda x, i, j: lax.dynamic_slice(x, i, j, slice_sizes=(3, 2))
    _check_against_loop(f, args, in_axes)
    prog = fg.make_jaxpr(vmap(f, in_axes=in_axes))(*args)
    assert _count(prog)["gather"] + _count(prog)["dynamic_slice"] == 1


@pytest.mark.parametrize("in_axes", [(0, None, None, None), (None, 0, None, None),
                                     (None, None, 0, None), (0, 1, None, 0),
                                     (None, None, None, 0), (1, None, 0, 0)])
def test_dynamic_update_slice_every_batching_branch(in_axes):
    rng = np.random.default_rng(3)
    args = [rng.normal(size=(4, 6, 5)), rng.normal(size=(4, 3, 2)), np.array([-1, 0, 2, 9]),
            np.array([3, 1, 0, 4])]
    args = [np.moveaxis(a, 0, ax) if ax is not None else a[0] for a, ax in zip(args, in_axes)]
    _check_against_loop(lax.dynamic_update_slice, args, in_axes)


@pytest.mark.parametrize("fn", [lax.cumsum, lax.cumprod, lax.cummax, lax.cummin,
                                lax.cumlogsumexp])
def test_cumulative_batching_keeps_the_batch_axis(fn):
    x = np.random.default_rng(4).normal(size=(3, 4, 5))
    for in_axis in (0, 1, 2):
        for axis in (0, 1):
            for reverse in (False, True):
                f = lambda v, axis=axis, reverse=reverse: fn(v, axis, reverse=reverse)
                vals = vmap(f, in_axes=in_axis)(x)
                want = np.stack([f(np.take(x, b, axis=in_axis))
                                 for b in range(x.shape[in_axis])])
                np.testing.assert_allclose(vals, want, rtol=1e-12)
                assert [e.primitive.name for e in fg.make_jaxpr(vmap(f, in_axes=in_axis))(
                    x).jaxpr.eqns][:1] == [fn.__name__]


@pytest.mark.parametrize("in_axes", [(0, None, 0), (1, 1, None), (None, 0, 1), (2, 2, 2)])
def test_sort_batching_with_mixed_operands(in_axes):
    rng = np.random.default_rng(5)
    args = [rng.integers(0, 3, size=(3, 3, 4)).astype(np.float64), rng.normal(size=(3, 3, 4)),
            rng.normal(size=(3, 3, 4))]
    args = [np.moveaxis(a, 0, ax) if ax is not None else a[0] for a, ax in zip(args, in_axes)]
    for dim in (0, 1):
        sort = lambda *o, dim=dim: lax.sort(*o, dimension=dim, num_keys=2)
        _check_against_loop(sort, args, in_axes)


# ---------------------------------------------------------------------------------------------
# Programs: what a person would write

def _matmul(a, b):
    return lax.dot_general(a, b, (((a.ndim - 1,), (0,)), ((), ())))


def test_batched_matmul_is_one_dot_general():
    xs, w = np.ones((5, 3)), np.ones((3, 4))
    prog = fg.make_jaxpr(vmap(_matmul, in_axes=(0, None)))(xs, w)
    assert [e.primitive.name for e in prog.jaxpr.eqns] == ["dot_general"]
    # Both operands batched: one dot_general with a batch dimension.
    ws = np.ones((5, 3, 4))
    prog = fg.make_jaxpr(vmap(_matmul))(xs, ws)
    (eqn,) = prog.jaxpr.eqns
    assert eqn.primitive.name == "dot_general"
    assert eqn.params["dimension_numbers"][1] == ((0,), (0,))
    np.testing.assert_allclose(vmap(_matmul)(xs, ws), np.einsum("bi,bij->bj", xs, ws))


def test_batched_reduction_is_one_reduce():
    xs = np.arange(24.0).reshape(2, 3, 4)
    f = lambda x: lax.reduce_max(x, (1,))
    prog = fg.make_jaxpr(vmap(f, in_axes=1))(xs)
    counts = _count(prog)
    assert counts["reduce_max"] == 1 and set(counts) <= {"reduce_max", "transpose"}
    np.testing.assert_allclose(vmap(f, in_axes=1)(xs), xs.max(axis=2).T)


def test_equation_count_is_that_of_f_plus_layout():
    def f(x, w):
        h = lax.tanh(_matmul(x, w))
        return lax.reduce_sum(lax.mul(h, h), (0,))

    x, w = np.ones(3), np.ones((3, 4))
    plain = fg.make_jaxpr(f)(x, w)
    for in_axes, args in [((0, None), (np.ones((7, 3)), w)), ((None, 2), (x, np.ones((3, 4, 7)))),
                          ((1, 0), (np.ones((3, 7)), np.ones((7, 3, 4))))]:
        prog = fg.make_jaxpr(vmap(f, in_axes=in_axes))(*args)
        extra = _count(prog) - _count(plain)
        assert not _count(plain) - _count(prog)
        assert set(extra) <= _LAYOUT and sum(extra.values()) <= 2, (in_axes, prog)


def test_program_size_does_not_grow_with_the_batch():
    f = lambda x, i: lax.gather(lax.cumsum(x, 0), i)
    sizes = {len(fg.make_jaxpr(vmap(f))(np.ones((n, 5)), np.zeros((n, 2, 1), np.int32)).jaxpr.eqns)
             for n in (1, 2, 9)}
    assert len(sizes) == 1


def test_numpy_api_functions_batch_into_one_program():
    fnp = pytest.importorskip("funcgrad.numpy")
    rng = np.random.default_rng(0)

    def attention(q, k, v):
        s = fnp.einsum("qd,kd->qk", q, k) / np.sqrt(q.shape[-1])
        w = fnp.exp(s - fnp.max(s, axis=-1, keepdims=True))
        return fnp.matmul(w / fnp.sum(w, axis=-1, keepdims=True), v)  # v: host in the loop

    q, k, v = rng.normal(size=(4, 3, 2)), rng.normal(size=(4, 5, 2)), rng.normal(size=(5, 6))
    got = vmap(attention, in_axes=(0, 0, None))(q, k, v)
    np.testing.assert_allclose(got, np.stack([attention(q[b], k[b], v) for b in range(4)]),
                               rtol=1e-12)
    counts = _count(fg.make_jaxpr(vmap(attention, in_axes=(0, 0, None)))(q, k, v))
    assert counts["dot_general"] == 2 and counts["reduce_max"] == 1

    # Per-example dynamic indices and updates, and fnp.where in place of Python control flow.
    def step(x, i, val):
        return x.at[i].add(val)[i] + x[i + 1] + fnp.where(x[i] > 0, 1.0, -1.0)

    def reference(x, i, val):
        y = x.copy()
        y[i] += val
        return y[i] + x[i + 1] + np.where(x[i] > 0, 1.0, -1.0)

    x, i, val = rng.normal(size=(4, 6)), np.array([0, 2, 4, 1]), rng.normal(size=4)
    np.testing.assert_allclose(vmap(step)(x, i, val),
                               [reference(x[b], i[b], val[b]) for b in range(4)])


# ---------------------------------------------------------------------------------------------
# in_axes, out_axes, axis_size, keyword arguments

def test_in_axes_pytree_prefix():
    params = {"w": np.arange(6.0).reshape(2, 3), "b": np.arange(3.0)}
    xs = np.arange(8.0).reshape(4, 2)
    f = lambda p, x: lax.add(_matmul(x, p["w"]), p["b"])
    got = vmap(f, in_axes=({"w": None, "b": None}, 0))(params, xs)
    np.testing.assert_allclose(got, xs @ params["w"] + params["b"])
    # A prefix: None covers the whole dict.
    np.testing.assert_allclose(vmap(f, in_axes=(None, 0))(params, xs), got)
    # As in JAX, a list is not a prefix of the argument tuple: an error that names the fix.
    with pytest.raises(TypeError, match=r"list \[None, 0\].*in_axes=\(None, 0\)"):
        vmap(f, in_axes=[None, 0])
    # ... but a list inside the tuple is a prefix of a list argument
    got_list = vmap(lambda ab: ab[0] * ab[1], in_axes=([0, None],))([xs, 2.0])
    np.testing.assert_allclose(got_list, xs * 2.0)
    # Mixed: batch the bias only, along its last axis.
    bs = np.arange(12.0).reshape(3, 4)
    got = vmap(f, in_axes=({"w": None, "b": -1}, None))(
        {"w": params["w"], "b": bs}, xs[0])
    np.testing.assert_allclose(got, xs[0] @ params["w"] + bs.T)


def test_out_axes_pytree_and_negative():
    xs = np.arange(24.0).reshape(2, 3, 4)
    f = lambda x: {"same": x, "sum": lax.reduce_sum(x, (0,))}
    got = vmap(f, out_axes={"same": -1, "sum": 0})(xs)
    np.testing.assert_allclose(got["same"], np.moveaxis(xs, 0, -1))
    np.testing.assert_allclose(got["sum"], xs.sum(axis=1))
    got = vmap(lambda x: x, in_axes=-1, out_axes=-2)(xs)
    np.testing.assert_allclose(got, np.moveaxis(np.moveaxis(xs, -1, 0), 0, -2))


def test_unbatched_outputs_are_broadcast():
    xs, c = np.arange(6.0).reshape(3, 2), np.arange(4.0)
    f = lambda x, y: (lax.neg(x), y, 2.0)
    a, b, k = vmap(f, in_axes=(0, None), out_axes=(0, 1, 0))(xs, c)
    np.testing.assert_allclose(a, -xs)
    np.testing.assert_allclose(b, np.broadcast_to(c[:, None], (4, 3)))
    np.testing.assert_allclose(k, np.full(3, 2.0))
    # out_axes=None keeps an unbatched output as it is.
    _, same, _ = vmap(f, in_axes=(0, None), out_axes=(0, None, 0))(xs, c)
    np.testing.assert_allclose(same, c)


def test_axis_size_when_nothing_is_batched():
    got = vmap(lambda x: lax.mul(x, 2.0), in_axes=None, axis_size=5)(np.arange(3.0))
    np.testing.assert_allclose(got, np.broadcast_to(2 * np.arange(3.0), (5, 3)))
    got = vmap(lambda: lax.iota(np.int32, 4), axis_size=2)()
    np.testing.assert_array_equal(got, np.broadcast_to(np.arange(4), (2, 4)))
    # With batched inputs, axis_size must agree with them.
    np.testing.assert_allclose(vmap(lax.neg, axis_size=3)(np.ones(3)), -np.ones(3))


def test_keyword_arguments_are_batched_along_axis_0():
    f = lambda x, *, scale: lax.mul(x, scale)
    xs, s = np.arange(6.0).reshape(3, 2), np.arange(1.0, 7.0).reshape(3, 2)
    np.testing.assert_allclose(vmap(f)(xs, scale=s), xs * s)


# ---------------------------------------------------------------------------------------------
# Nesting and compositions

def test_vmap_of_vmap_matches_double_loop():
    x = np.arange(24.0).reshape(2, 3, 4)
    w = np.arange(20.0).reshape(4, 5) / 10
    f = lambda a, b: lax.tanh(_matmul(a, b))
    # Outer over x's axis 2... no: outer over axis 1 of x, inner over axis 0 of the rest.
    got = vmap(vmap(f, in_axes=(0, None)), in_axes=(1, None))(x, w)
    want = np.stack([np.stack([np.tanh(x[i, j] @ w) for i in range(2)]) for j in range(3)])
    np.testing.assert_allclose(got, want)
    # Three levels deep, batching a different operand at each level.
    ws = np.arange(2 * 4 * 5.0).reshape(2, 4, 5) / 10
    got = vmap(vmap(vmap(f, in_axes=(0, None)), in_axes=(1, None)), in_axes=(None, 0))(x, ws)
    want = np.stack([np.stack([np.stack([np.tanh(x[i, j] @ ws[k]) for i in range(2)])
                               for j in range(3)]) for k in range(2)])
    np.testing.assert_allclose(got, want)


def _init_mlp(rng):
    return {"w1": rng.normal(size=(3, 5)), "b1": rng.normal(size=5),
            "w2": rng.normal(size=(5, 2)), "b2": rng.normal(size=2)}


def _mlp_loss(p, x, y):
    h = lax.tanh(lax.add(_matmul(x, p["w1"]), p["b1"]))
    out = lax.add(_matmul(h, p["w2"]), p["b2"])
    d = lax.sub(out, y)
    return lax.reduce_sum(lax.mul(d, d), (0,))


def test_per_example_gradients_of_an_mlp():
    rng = np.random.default_rng(0)
    p = _init_mlp(rng)
    xs, ys = rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
    got = vmap(fg.grad(_mlp_loss), in_axes=(None, 0, 0))(p, xs, ys)
    loop = [fg.grad(_mlp_loss)(p, x, y) for x, y in zip(xs, ys)]
    for k in p:
        np.testing.assert_allclose(got[k], np.stack([g[k] for g in loop]), rtol=1e-12)
    # One program for the whole batch: as many dot_generals as one example's gradient.
    one = _count(fg.make_jaxpr(fg.grad(_mlp_loss))(p, xs[0], ys[0]))
    many = _count(fg.make_jaxpr(vmap(fg.grad(_mlp_loss), in_axes=(None, 0, 0)))(p, xs, ys))
    assert many["dot_general"] == one["dot_general"]


def test_grad_of_vmap():
    rng = np.random.default_rng(1)
    p = _init_mlp(rng)
    xs, ys = rng.normal(size=(4, 3)), rng.normal(size=(4, 2))
    total = lambda p: lax.reduce_sum(vmap(_mlp_loss, in_axes=(None, 0, 0))(p, xs, ys), (0,))
    got = fg.grad(total)(p)
    loop = [fg.grad(_mlp_loss)(p, x, y) for x, y in zip(xs, ys)]
    for k in p:
        np.testing.assert_allclose(got[k], sum(g[k] for g in loop), rtol=1e-12)


def test_jvp_of_vmap_and_vmap_of_jvp():
    f = lambda x: lax.sin(lax.mul(x, x))
    xs, ts = np.linspace(-1, 1, 6).reshape(3, 2), np.linspace(0.5, 2, 6).reshape(3, 2)
    want = (np.sin(xs * xs), np.cos(xs * xs) * 2 * xs * ts)
    out, tan = fg.jvp(vmap(f), (xs,), (ts,))
    np.testing.assert_allclose(out, want[0])
    np.testing.assert_allclose(tan, want[1])
    out, tan = vmap(lambda x, t: fg.jvp(f, (x,), (t,)))(xs, ts)
    np.testing.assert_allclose(out, want[0])
    np.testing.assert_allclose(tan, want[1])
    # Tangents batched along another axis than the primals.
    out, tan = vmap(lambda x, t: fg.jvp(f, (x,), (t,)), in_axes=(0, 1))(xs, ts.T)
    np.testing.assert_allclose(tan, want[1])


def test_vmap_of_hessian_vector_products():
    f = lambda x: lax.reduce_sum(lax.mul(lax.sin(x), x), (0,))
    x = np.linspace(-1, 1, 3)
    vs = np.eye(3)
    hvp = lambda v: fg.jvp(fg.grad(f), (x,), (v,))[1]
    np.testing.assert_allclose(vmap(hvp)(vs), np.stack([hvp(v) for v in vs]), rtol=1e-12)


def test_closures_over_outer_tracers():
    xs, ys = np.arange(3.0), np.arange(4.0) + 1
    # The inner vmap closes over the outer vmap's tracer.
    got = vmap(lambda x: vmap(lambda y: lax.mul(x, y))(ys))(xs)
    np.testing.assert_allclose(got, np.outer(xs, ys))
    # vmap inside grad, closing over the differentiated argument.
    g = fg.grad(lambda w: lax.reduce_sum(vmap(lambda y: lax.sin(lax.mul(w, y)))(ys), (0,)))
    np.testing.assert_allclose(g(0.3), np.sum(ys * np.cos(0.3 * ys)))
    # grad inside vmap, closing over the batched value.
    per = vmap(lambda x: fg.grad(lambda w: lax.mul(lax.mul(w, w), x))(2.0))(xs)
    np.testing.assert_allclose(per, 4.0 * xs)


def test_batched_indexing_under_grad():
    # Gradients flow through the batched gather / dynamic_slice / sort rules.
    xs = np.arange(12.0).reshape(3, 4) / 7
    starts = np.array([0, 1, 3])

    def f(x, s):
        window = lax.dynamic_slice(x, s, slice_sizes=(2,))
        return lax.reduce_sum(lax.mul(lax.sort(window), np.array([1.0, 2.0])), (0,))

    got = vmap(fg.grad(f))(xs, starts)
    want = np.stack([fg.grad(f)(x, s) for x, s in zip(xs, starts)])
    np.testing.assert_allclose(got, want)


# ---------------------------------------------------------------------------------------------
# Collectives over named axes

def test_collectives_reduce_over_the_named_axis():
    xs = np.array([[1.0, 5.0], [4.0, 2.0], [3.0, 3.0]])
    run = lambda f: vmap(f, axis_name="i")(xs)
    every = lambda v: np.broadcast_to(v, (3, 2))
    np.testing.assert_allclose(run(lambda x: lax.psum(x, "i")), every(xs.sum(0)))
    np.testing.assert_allclose(run(lambda x: lax.pmean(x, "i")), every(xs.mean(0)))
    np.testing.assert_allclose(run(lambda x: lax.pmax(x, "i")), every(xs.max(0)))
    np.testing.assert_allclose(run(lambda x: lax.pmin(x, "i")), every(xs.min(0)))
    np.testing.assert_allclose(run(lambda x: lax.all_gather(x, "i")),
                               np.broadcast_to(xs, (3, 3, 2)))
    np.testing.assert_allclose(run(lambda x: lax.all_gather(x, "i", axis=1)),
                               np.broadcast_to(xs.T, (3, 2, 3)))
    np.testing.assert_array_equal(run(lambda x: lax.axis_index("i")), np.arange(3))
    # A batch axis that is not the leading one.
    got = vmap(lambda x: lax.sub(x, lax.pmean(x, "i")), in_axes=1, out_axes=1, axis_name="i")(xs)
    np.testing.assert_allclose(got, xs - xs.mean(1, keepdims=True))


def test_collective_of_an_unbatched_value():
    # A value constant across the axis: psum multiplies by the axis size.
    got = vmap(lambda x: lax.psum(np.float64(2.0), "i"), axis_name="i")(np.ones(4))
    np.testing.assert_allclose(got, np.full(4, 8.0))


def test_nested_named_axes():
    xs = np.arange(6.0).reshape(2, 3)

    def f(x):
        return (lax.psum(x, "inner"), lax.psum(x, "outer"),
                lax.psum(lax.psum(x, "inner"), "outer"),
                lax.add(lax.mul(lax.axis_index("outer"), 10), lax.axis_index("inner")))

    a, b, c, d = vmap(vmap(f, axis_name="inner"), axis_name="outer")(xs)
    np.testing.assert_allclose(a, np.broadcast_to(xs.sum(1, keepdims=True), (2, 3)))
    np.testing.assert_allclose(b, np.broadcast_to(xs.sum(0), (2, 3)))
    np.testing.assert_allclose(c, np.full((2, 3), xs.sum()))
    np.testing.assert_array_equal(d, 10 * np.arange(2)[:, None] + np.arange(3))


def test_collectives_under_grad():
    xs = np.array([1.0, 2.0, 4.0])
    # Per-lane loss (x - mean)^2 with a collective inside: d/dx_i of sum_j (x_j - m)^2 is
    # 2 (x_i - m) since sum_j (x_j - m) = 0.
    centered = lambda x: lax.integer_pow(lax.sub(x, lax.pmean(x, "i")), 2)
    total = lambda xs: lax.reduce_sum(vmap(centered, axis_name="i")(xs), (0,))
    np.testing.assert_allclose(fg.grad(total)(xs), 2 * (xs - xs.mean()))
    # vmap of grad: psum's transpose is a psum (as in JAX), so each lane gets the gradient of
    # the sum over lanes of L_j = S x_j with S = psum(x): dS/dx_i * sum_j x_j + S = 2 S.
    per = vmap(fg.grad(lambda x: lax.mul(lax.psum(x, "i"), x)), axis_name="i")(xs)
    np.testing.assert_allclose(per, np.full(3, 2 * xs.sum()))
    # all_gather under grad: its VJP psums the cotangent and picks this lane's slice with a
    # batched dynamic_slice.
    w = np.array([1.0, 10.0, 100.0])
    per = vmap(fg.grad(lambda x: lax.reduce_sum(lax.mul(lax.all_gather(x, "i"), w), (0,))),
               axis_name="i")(xs)
    np.testing.assert_allclose(per, 3 * w)


# ---------------------------------------------------------------------------------------------
# Errors

def test_error_inconsistent_batch_sizes():
    f = lambda a, b: lax.add(a, b)
    with pytest.raises(ValueError) as e:
        vmap(f, in_axes=(0, 1))(np.ones((3, 2)), np.ones((2, 4)))
    msg = str(e.value)
    assert "inconsistent sizes" in msg
    assert "argument [0] has size 3 along axis 0" in msg
    assert "argument [1] has size 4 along axis 1" in msg
    with pytest.raises(ValueError, match="axis_size=5"):
        vmap(lax.neg, axis_size=5)(np.ones(3))
    with pytest.raises(ValueError, match=r"argument \['s'\] \(keyword\) has size 4 along axis 0"):
        vmap(lambda x, *, s: lax.mul(x, s))(np.ones(3), s=np.ones(4))


def test_error_in_axes_do_not_match_the_arguments():
    args = ({"a": np.ones(3), "b": [np.ones(3), np.ones(3)]},)
    f = lambda d: d["a"]
    with pytest.raises(ValueError) as e:
        vmap(f, in_axes=({"a": 0, "c": 0},))(*args)
    assert "[0]" in str(e.value) and "'c'" in str(e.value) and "'b'" in str(e.value)
    with pytest.raises(ValueError) as e:
        vmap(f, in_axes=({"a": 0, "b": [0, 0, 0]},))(*args)
    assert "[0]['b']" in str(e.value) and "length 3" in str(e.value)
    with pytest.raises(ValueError, match="tuple of length 2 .* 1 positional"):
        vmap(f, in_axes=(0, 0))(*args)
    with pytest.raises(TypeError, match="ints or None"):
        vmap(f, in_axes=({"a": 0, "b": "x"},))(*args)


def test_error_axis_out_of_range():
    with pytest.raises(ValueError, match=r"in_axes 2 is out of range for argument \[0\] of rank 2"):
        vmap(lax.neg, in_axes=2)(np.ones((3, 2)))
    with pytest.raises(ValueError, match="in_axes -2 .* rank 1"):
        vmap(lax.neg, in_axes=-2)(np.ones(3))
    with pytest.raises(ValueError, match="in_axes 0 is out of range .* rank 0"):
        vmap(lax.neg)(np.float64(1.0))
    with pytest.raises(ValueError, match="out_axes 2 is out of range .* rank 2"):
        vmap(lax.neg, out_axes=2)(np.ones((3, 2)))
    with pytest.raises(ValueError, match="out_axes=None"):
        vmap(lax.neg, out_axes=None)(np.ones(3))
    with pytest.raises(ValueError, match="axis_size"):
        vmap(lax.neg, in_axes=None)(np.ones(3))


def test_error_python_control_flow_on_a_batched_value():
    def f(x):
        if lax.gt(x, 0.0):
            return x
        return lax.neg(x)

    with pytest.raises(fg.ConcretizationError) as e:
        vmap(f)(np.arange(3.0))
    msg = str(e.value)
    assert "vmap" in msg and "fnp.where" in msg and "lax.cond" in msg
    assert "test_vmap.py" in msg  # points at the user's line
    with pytest.raises(fg.ConcretizationError):
        vmap(lambda x: float(x))(np.arange(3.0))


def test_error_unknown_axis_name():
    with pytest.raises(NameError, match="unbound axis name 'j'.*bound here: 'i'"):
        vmap(lambda x: lax.psum(x, "j"), axis_name="i")(np.ones(3))
    with pytest.raises(NameError, match="unbound axis name 'j'"):
        vmap(lambda x: lax.axis_index("j"))(np.ones(3))
    with pytest.raises(NameError, match="unbound axis name 'j'"):
        vmap(lambda x: lax.all_gather(x, "j"), axis_name="i")(np.ones(3))
