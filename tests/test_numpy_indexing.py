"""NumPy indexing through funcgrad: x[idx], x.at[idx].op(v) and the index functions, against
NumPy itself. Each index is run three ways: on traced values whose concrete value is known
(under vjp), inside an abstract program (make_jaxpr, then evaluated), and in its gradient."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numeric import GPU_MODE

import funcgrad as fg
import funcgrad.numpy as fnp
from funcgrad.core import ConcretizationError, eval_jaxpr

X = np.arange(2 * 3 * 4 * 5, dtype=np.float64).reshape(2, 3, 4, 5)


def concrete(f, *args):
    """f applied to concrete tracers (the values are known: vjp's eager trace)."""
    out, _ = fg.vjp(f, *args)
    return np.asarray(out)


def abstract(f, *args):
    """f traced to a program with abstract inputs, then the program evaluated on args."""
    closed = fg.make_jaxpr(f)(*args)
    (out,) = eval_jaxpr(closed.jaxpr, closed.consts, *args)
    return np.asarray(out)


def check_index(x, idx):
    expected = x[idx]
    for run in (concrete, abstract):
        got = run(lambda a: a[idx], x)
        assert got.shape == expected.shape, (idx, run.__name__)
        np.testing.assert_array_equal(got, expected)


BASIC = [
    0, -1, (1, 2), (1, -1, 0, -5), slice(None), slice(None, None, -1), (slice(1, None), 0),
    (Ellipsis, 2), (Ellipsis, None), (None, 0, None), (0, Ellipsis, 1),
    (slice(None), slice(3, 0, -2)),
    (slice(-100, 100), slice(3, 1)), (slice(None, None, 3), slice(None, None, -3)), (),
    (Ellipsis,), (1, None, Ellipsis, None, 2), (slice(0, 0),), (slice(None), slice(None), 3, 4),
]
ADVANCED = [
    [0, 1], [[1, 0], [0, 1]], ([0, 1], [1, 2]), (slice(None), [0, 2], None),
    (0, slice(None), [0, 1]),            # int + array separated by a slice: advanced axes first
    (slice(None), 0, slice(None), [1, 2]),
    ([[0], [1]], slice(None), [0, 1, 2]), ([-1, 0], Ellipsis, [-2]), (Ellipsis, [1, -1]),
    (np.array([1, 0]), np.array([[0], [2]])), (slice(None), [2, 0, 1], [3, 3, 0]),
    ([0], None, [0]), (slice(None), [0], None, [0]), ([], ), (np.array(1),), (Ellipsis, [[4]]),
    (slice(None, None, -1), [1, 2], slice(1, 3), [0, 3]),
]
MASKS = [
    X[:, :, 0, 0] > 5, (slice(None), X[0, :, :, 0] % 2 == 0), (Ellipsis, X[0, 0, 0] > 2),
    True, (False, 0), (X[:, 0, 0, 0] > 0, slice(None), [1, 3]),
]


@pytest.mark.parametrize("idx", BASIC, ids=repr)
def test_basic_indexing(idx):
    check_index(X, idx)


@pytest.mark.parametrize("idx", ADVANCED, ids=repr)
def test_advanced_indexing(idx):
    check_index(X, idx)


@pytest.mark.parametrize("i", range(len(MASKS)))
def test_boolean_masks_when_concrete(i):
    idx = MASKS[i]
    np.testing.assert_array_equal(concrete(lambda a: a[idx], X), X[idx])
    np.testing.assert_array_equal(fnp._getitem(X, idx), X[idx])


def test_boolean_mask_on_abstract_value_says_use_where():
    with pytest.raises(ConcretizationError, match="where"):
        fg.make_jaxpr(lambda a: a[a > 3])(X)


def test_basic_indexing_records_static_slices():
    closed = fg.make_jaxpr(lambda a: a[1, ::-2, None, 1:3])(X)
    names = {e.primitive.name for e in closed.eqns}
    assert names <= {"slice", "rev", "squeeze", "expand_dims"}, names
    assert "gather" not in names


@pytest.mark.parametrize("i", [0, 1, -1, -2])
def test_traced_integer_index_is_a_dynamic_slice(i):
    f = lambda a, k: a[k, 1:, k]
    closed = fg.make_jaxpr(f)(X, np.int64(0))
    assert "dynamic_slice" in {e.primitive.name for e in closed.eqns}
    (out,) = eval_jaxpr(closed.jaxpr, closed.consts, X, np.array(i))
    np.testing.assert_array_equal(out, X[i, 1:, i])


def test_traced_integer_arrays_gather():
    f = lambda a, i, j: a[:, i, :, j]
    i, j = np.array([[0, -1], [2, 1]]), np.array([4, -2])
    np.testing.assert_array_equal(abstract(f, X, i, j), X[:, i, :, j])


# ---------------------------------------------------------------------------------------------
# Hypothesis: random shapes and random mixes of ints, slices (with any steps), None, Ellipsis

@st.composite
def shape_and_index(draw):
    shape = tuple(draw(st.lists(st.integers(0, 5), min_size=1, max_size=4)))
    parts = []
    for n in shape:
        kind = draw(st.sampled_from(["slice", "slice", "int", "none", "array"]))
        if kind == "int" and n > 0:
            parts.append(draw(st.integers(-n, n - 1)))
        elif kind == "array" and n > 0:
            parts.append(draw(st.lists(st.integers(-n, n - 1), min_size=1, max_size=3)))
        elif kind == "none":
            parts.append(None)
            parts.append(slice(None))
        else:
            bound = st.one_of(st.none(), st.integers(-7, 7))
            step = draw(st.one_of(st.none(), st.integers(-3, 3).filter(bool)))
            parts.append(slice(draw(bound), draw(bound), step))
    cut = draw(st.integers(0, len(parts)))
    parts = parts[:cut]
    if draw(st.booleans()) and parts:
        parts.insert(draw(st.integers(0, len(parts))), Ellipsis)
        parts = [p for k, p in enumerate(parts) if k == 0 or p is not Ellipsis or
                 Ellipsis not in parts[:k]]
    return shape, tuple(parts)


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(shape_and_index())
def test_hypothesis_indexing_matches_numpy(case):
    shape, idx = case
    x = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape)
    try:
        expected = x[idx]
    except IndexError:
        with pytest.raises(IndexError):
            fnp._getitem(x, idx)
        return
    np.testing.assert_array_equal(fnp._getitem(x, idx), expected)
    np.testing.assert_array_equal(abstract(lambda a: a[idx], x), expected)
    # x.at[idx].add and set on copies; add accumulates over duplicate indices as np.add.at
    v = np.arange(1, expected.size + 1, dtype=np.float64).reshape(expected.shape)
    ref = x.copy()
    np.add.at(ref, idx, v)
    np.testing.assert_array_equal(abstract(lambda a: a.at[idx].add(v), x), ref)


# ---------------------------------------------------------------------------------------------
# x.at[idx]

UPDATE_IDX = [0, (slice(None), 1), (Ellipsis, slice(None, None, -2)), (1, slice(1, 3), None, 2),
              ([0, 1], [2, 0]), (slice(None), [0, 2], slice(1, 4), [1, 1]),
              (X[:, :, 0, 0] > 30,), ([1, 0], Ellipsis, [-1])]


@pytest.mark.parametrize("idx", UPDATE_IDX, ids=repr)
@pytest.mark.parametrize("op", ["set", "add", "multiply", "mul", "min", "max"])
def test_at_updates_match_numpy_in_place(idx, op):
    shape = X[idx].shape
    v = np.random.default_rng(0).normal(size=shape) * 50
    ref = X.copy()
    if op == "set":
        ref[idx] = v
    else:
        ufunc = {"add": np.add, "multiply": np.multiply, "mul": np.multiply, "min": np.minimum,
                 "max": np.maximum}[op]
        ref[idx] = ufunc(ref[idx], v)
    f = lambda a: getattr(a.at[idx], op)(v)
    np.testing.assert_allclose(concrete(f, X), ref)
    if not (isinstance(idx, tuple) and isinstance(idx[0], np.ndarray) and idx[0].dtype == bool):
        np.testing.assert_allclose(abstract(f, X), ref)
    np.testing.assert_array_equal(X, np.arange(X.size).reshape(X.shape))  # input untouched


# Eager `.at` on values is NumPy's (fnp.asarray returns CuPy arrays, without `.at`, on a GPU
# default backend: docs/arrays.md).
eager_at = pytest.mark.cpu_only


@eager_at
@pytest.mark.parametrize("idx", UPDATE_IDX, ids=repr)
@pytest.mark.parametrize("op", ["set", "add", "subtract", "multiply", "divide", "power", "min",
                                "max", "apply", "get"])
def test_at_on_values_eagerly_as_under_transforms(idx, op):
    """fnp.asarray(x).at[idx] outside any transform: the same results as under jit and make_jaxpr
    (the same code), every method; x itself is never modified."""
    x = X.copy()
    v = np.random.default_rng(1).uniform(1, 2, size=X[idx].shape)
    args = {"apply": (np.sin,), "get": ()}.get(op, (v,))
    f = lambda a: getattr(fnp.asarray(a).at[idx], op)(*args)  # noqa: E731
    eager = f(x)
    assert type(eager) is fnp.UpdatableArray
    np.testing.assert_allclose(eager, concrete(f, x))
    if not (isinstance(idx, tuple) and isinstance(idx[0], np.ndarray) and idx[0].dtype == bool):
        np.testing.assert_allclose(eager, fg.jit(f)(x))
    np.testing.assert_array_equal(x, X)


@eager_at
def test_at_updates_chain_and_stay_functional():
    x = np.zeros(4)
    y = fnp.asarray(x).at[0].set(1.0).at[1].add(2.0).at[np.array([2, 2])].add(1.0)
    np.testing.assert_array_equal(y, [1.0, 2.0, 2.0, 0.0])
    np.testing.assert_array_equal(x, 0.0)
    z = fnp.array([1, 2, 3]).at[-1].multiply(10)
    np.testing.assert_array_equal(z, [1, 2, 30])
    assert z.dtype == np.int64


# JAX's answers for out-of-bound indices (checked against jax 0.10.2): with x = [0, 1, 2, 3, 4],
# indices [0, 7, -1, -9] (7 and -9 are out of bounds for a size-5 axis)
_OOB = np.array([0, 7, -1, -9])
_MODE_CASES = [
    ("add", "clip", [2.0, 1.0, 2.0, 3.0, 6.0]),       # 7 -> 4, -9 -> 0
    ("add", "drop", [1.0, 1.0, 2.0, 3.0, 5.0]),       # 7 and -9 skipped
    ("add", "fill", [1.0, 1.0, 2.0, 3.0, 5.0]),
    ("add", "promise_in_bounds", [1.0, 1.0, 2.0, 3.0, 5.0]),
    ("set", "drop", [1.0, 1.0, 2.0, 3.0, 1.0]),
    ("max", "clip", [1.0, 1.0, 2.0, 3.0, 4.0]),
    ("get", "clip", [0.0, 4.0, 4.0, 0.0]),
    ("get", "fill", [0.0, np.nan, 4.0, np.nan]),
    ("get", "promise_in_bounds", [0.0, 4.0, 4.0, 0.0]),
]


@pytest.mark.parametrize("op, mode, want", _MODE_CASES, ids=lambda v: str(v)[:20])
def test_at_modes_as_jax(op, mode, want):
    x = np.arange(5.0)
    args = () if op == "get" else (1.0,)

    def f(a):
        return getattr(fnp.asarray(a).at[_OOB], op)(*args, mode=mode)

    for g in ((fg.jit(f), lambda a: concrete(f, a)) if GPU_MODE else
              (f, fg.jit(f), lambda a: concrete(f, a))):
        np.testing.assert_array_equal(g(x), want)
    if op != "get":  # the dropped and clipped updates differentiate like the kept ones
        grad = fg.grad(lambda a: fnp.sum(f(a) * np.arange(1.0, 6.0)))(x)
        assert np.all(np.isfinite(grad))


def test_at_modes_with_traced_indices_fill_values_and_slices():
    x = np.arange(12.0).reshape(3, 4)
    f = lambda a, i: fnp.asarray(a).at[i, 1:3].get(mode="fill", fill_value=-1.0)  # noqa: E731
    np.testing.assert_array_equal(fg.jit(f)(x, np.array([0, 3, -4])),
                                  [[1.0, 2.0], [-1.0, -1.0], [-1.0, -1.0]])
    g = lambda a, i: fnp.asarray(a).at[1, i].add(100.0, mode="drop")  # noqa: E731
    want = x.copy()
    want[1, 3] += 100.0
    np.testing.assert_array_equal(fg.jit(g)(x, np.int32(-1)), want)
    np.testing.assert_array_equal(fg.jit(g)(x, np.int32(4)), x)
    ints = np.arange(3, dtype=np.int32)
    assert fg.jit(lambda v: v.at[5].get(mode="fill"))(ints) == np.iinfo(np.int32).min
    with pytest.raises(ValueError, match="mode must be one of"):
        fg.jit(lambda v: v.at[0].set(1.0, mode="wrap"))(x)
    with pytest.raises(IndexError, match="out of bounds"):  # no mode: NumPy's check (static)
        fg.jit(lambda v: v.at[5].set(1.0))(x)


@eager_at
def test_updatable_arrays_stay_contained():
    """Only fnp.asarray / fnp.array (and .at updates) return UpdatableArray: what NumPy and
    funcgrad compute from one is a plain ndarray, and library results never are one."""
    import pickle

    from funcgrad import optim
    x = np.arange(4.0)
    a = fnp.asarray(x)
    assert type(a) is fnp.UpdatableArray and a.base is not None  # a view, no copy
    assert isinstance(a, np.ndarray) and repr(a) == repr(x)
    plain = [a * 2, np.sin(a), np.concatenate([a, a]), a.sum(), fnp.sin(a), fnp.transpose(a),
             fg.jit(lambda v: v * 2)(a), fg.grad(lambda v: fnp.sum(v ** 2))(a),
             pickle.loads(pickle.dumps(a))]
    for r in plain:
        assert type(r) in (np.ndarray, np.float64), type(r)
    params = {"w": fnp.asarray(np.ones(3)), "b": np.zeros(2)}
    tx = optim.adamw(1e-2)
    state = tx.init(params)
    updates, state = tx.update(params, state, params)
    new = optim.apply_updates(params, updates)
    for leaf in fg.tree_util.tree_leaves((updates, state, new)):
        assert type(leaf) is np.ndarray, type(leaf)


def test_at_scalar_values_broadcast_and_get():
    np.testing.assert_array_equal(abstract(lambda a: a.at[:, 1].set(-1.0), X)[:, 1], -1.0)
    np.testing.assert_array_equal(abstract(lambda a: a.at[0, [1, 2]].get(), X), X[0, [1, 2]])


@pytest.mark.parametrize("op, ufunc", [("add", np.add), ("multiply", np.multiply),
                                       ("min", np.minimum), ("max", np.maximum)])
def test_at_duplicate_indices_accumulate(op, ufunc):
    x = np.linspace(-3.0, 3.0, 6)
    idx = np.array([0, 2, 2, 5, 0, 2])
    v = np.array([1.5, -2.0, 4.0, 0.5, 3.0, -1.0])
    ref = x.copy()
    ufunc.at(ref, idx, v)
    np.testing.assert_allclose(abstract(lambda a: getattr(a.at[idx], op)(v), x), ref)


@eager_at
def test_at_power_and_apply_act_once_per_occurrence():
    """A place indexed twice is raised twice (JAX: x ** (y * y)) and gets func twice (NumPy's
    ufunc.at, JAX's scatter_apply), eagerly, under jit and make_jaxpr, with every mode."""
    x = np.linspace(-1.0, 2.0, 6)
    idx = np.array([0, 2, 2, 5, 2])
    powered = x.copy()
    for i in idx:
        powered[i] = powered[i] ** 2.0
    applied = x.copy()
    np.negative.at(applied, idx)
    for mode in (None, "clip", "drop", "promise_in_bounds"):
        pw = lambda a: fnp.asarray(a).at[idx].power(2.0, mode=mode)  # noqa: E731,B023
        ap = lambda a: fnp.asarray(a).at[idx].apply(fnp.negative, mode=mode)  # noqa: E731,B023
        for run in (fg.jit, lambda f: (lambda a: concrete(f, a))):
            np.testing.assert_allclose(run(pw)(x), powered)
            np.testing.assert_allclose(run(ap)(x), applied)
    # x ** 1 at the places not indexed: the negative x there get no NaN derivative.
    pos = np.array([2, 5, 2])

    def total(a, y):
        return fnp.sum(fnp.asarray(a).at[pos].power(y))
    gx, gy = fg.jit(fg.grad(total, argnums=(0, 1)))(x, 2.0)
    np.testing.assert_allclose(gx, [1.0, 1.0, 4 * x[2] ** 3, 1.0, 1.0, 2 * x[5]])
    eps = 1e-6
    fd = (total(x, 2.0 + eps) - total(x, 2.0 - eps)) / (2 * eps)
    np.testing.assert_allclose(gy, fd, rtol=1e-6)


@eager_at
@pytest.mark.parametrize("v", [[2.0, 3.0, 5.0, -1.5], [0.0, 3.0, 5.0, -1.5], [0.0, 0.0, 5.0, 2.0]])
def test_at_multiply_with_duplicate_indices_differentiates_in_the_values(v):
    """out[p] = x[p] * (product of the values at p): each value's derivative is x[p] times the
    others at p, zeros included (the old rule assumed unique indices and gave x[p])."""
    v = np.array(v)
    idx = np.array([2, 2, 0, 2])
    x = np.array([1.5, -2.0, 0.7])

    def f(u):
        return fnp.sum(fnp.asarray(x).at[idx].multiply(u) * np.array([1.0, 2.0, 3.0]))
    want = np.array([3 * x[2] * v[1] * v[3], 3 * x[2] * v[0] * v[3], x[0],
                     3 * x[2] * v[0] * v[1]])
    for g in (fg.grad(f), fg.jit(fg.grad(f)), fg.jacfwd(f)):
        np.testing.assert_allclose(g(v), want, rtol=1e-12, atol=1e-12)


def test_at_with_traced_index():
    f = lambda a, i: a.at[i, 1:3].add(10.0)
    closed = fg.make_jaxpr(f)(X[0, 0], np.int64(0))
    (out,) = eval_jaxpr(closed.jaxpr, closed.consts, X[0, 0], np.array(-1))
    ref = X[0, 0].copy()
    ref[-1, 1:3] += 10
    np.testing.assert_array_equal(out, ref)


def test_gradient_of_indexing_scatters_back():
    idx = (slice(None), [0, 0, 2], slice(None, None, -1), [1, 1, 4])
    w = np.random.default_rng(1).normal(size=X[idx].shape)
    g = fg.grad(lambda a: fnp.sum(a[idx] * w))(X)
    ref = np.zeros_like(X)
    np.add.at(ref, idx, w)
    np.testing.assert_allclose(g, ref)


def test_gradient_of_at_set():
    g = fg.grad(lambda a: fnp.sum(a.at[1:, 2].set(0.0) ** 2))(X)
    ref = 2 * X.copy()
    ref[1:, 2] = 0
    np.testing.assert_allclose(g, ref)


def test_setitem_on_tracer_points_to_at():
    def f(a):
        a[0] = 1.0
        return a
    with pytest.raises(TypeError, match="at"):
        fg.make_jaxpr(f)(X)


# ---------------------------------------------------------------------------------------------
# Errors

@pytest.mark.parametrize("idx, match", [
    ((0, 0, 0, 0, 0), "too many indices"),
    ((2,), "index 2 is out of bounds for axis 0 with size 2"),
    ((0, -4), "index -4 is out of bounds for axis 1 with size 3"), ((1.0,), "integers"),
    ((np.array([0.5]),), "integers"), ((Ellipsis, Ellipsis), "single ellipsis"),
    (([0, 3],), "out of bounds"), ((np.ones(3, bool),), "boolean index did not match"),
])
def test_index_errors(idx, match):
    with pytest.raises(IndexError, match=match):
        fnp._getitem(X, idx)
    with pytest.raises(IndexError, match=match):
        fg.make_jaxpr(lambda a: a[idx])(X)


# ---------------------------------------------------------------------------------------------
# Index functions

A = np.random.default_rng(2).normal(size=(3, 4, 5))


@pytest.mark.parametrize("axis", [None, 0, 1, -1])
@pytest.mark.parametrize("mode", [None, "clip", "wrap"])
def test_take(axis, mode):
    ind = np.array([[0, 2], [-1, 1]]) if mode is None else np.array([[0, 7], [-1, -9]])
    expected = np.take(A, ind, axis=axis, mode=mode or "raise")
    np.testing.assert_array_equal(abstract(lambda a: fnp.take(a, ind, axis=axis, mode=mode), A),
                                  expected)
    np.testing.assert_array_equal(fnp.take(A, 2, axis=axis), np.take(A, 2, axis=axis))


@pytest.mark.parametrize("axis", [0, 1, 2, -1, None])
def test_take_and_put_along_axis(axis):
    rng = np.random.default_rng(3)
    shape = list(A.shape) if axis is not None else [A.size]
    if axis is not None:
        shape[axis] = 3
    ind = rng.integers(-A.shape[axis or 0] if axis is not None else -A.size,
                       A.shape[axis] if axis is not None else A.size, size=shape)
    np.testing.assert_array_equal(abstract(lambda a: fnp.take_along_axis(a, ind, axis), A),
                                  np.take_along_axis(A, ind, axis))
    ind_u = np.argsort(rng.normal(size=A.shape), axis=axis if axis is not None else -1)
    if axis is None:
        ind_u = np.argsort(rng.normal(size=A.size))[:7]
    vals = rng.normal(size=ind_u.shape)
    ref = A.copy()
    np.put_along_axis(ref, ind_u, vals, axis)
    np.testing.assert_array_equal(
        abstract(lambda a: fnp.put_along_axis(a, ind_u, vals, axis, inplace=False), A), ref)


def test_take_along_axis_broadcasts():
    ind = np.array([[[1], [0], [1]]])  # (1, 3, 1) against (3, 2, 5) along axis 1
    a = A[:, :2, :]
    np.testing.assert_array_equal(fnp.take_along_axis(a, ind, 1), np.take_along_axis(a, ind, 1))


def test_nonzero_family():
    m = np.array([[0, 1, 0], [2, 0, 3]])
    for got, exp in zip(concrete(lambda a: fnp.stack(fnp.nonzero(a)), m.astype(float)),
                        np.nonzero(m)):
        np.testing.assert_array_equal(got, exp)
    np.testing.assert_array_equal(fnp.argwhere(m), np.argwhere(m))
    np.testing.assert_array_equal(fnp.flatnonzero(m), np.flatnonzero(m))
    with pytest.raises(ConcretizationError, match="size="):
        fg.make_jaxpr(fnp.nonzero)(m)
    # size= makes nonzero traceable: padded with fill_value
    f = lambda a: fnp.nonzero(a, size=5, fill_value=-1)
    closed = fg.make_jaxpr(f)(m)
    rows, cols = eval_jaxpr(closed.jaxpr, closed.consts, m)
    np.testing.assert_array_equal(rows, [0, 1, 1, -1, -1])
    np.testing.assert_array_equal(cols, [1, 0, 2, -1, -1])
    np.testing.assert_array_equal(fnp.nonzero(m, size=2)[1], [1, 0])


def test_compress_extract():
    c = np.array([True, False, True])
    np.testing.assert_array_equal(fnp.compress(c, A, axis=0), np.compress(c, A, axis=0))
    np.testing.assert_array_equal(fnp.compress([0, 1], A, axis=2), np.compress([0, 1], A, axis=2))
    np.testing.assert_array_equal(fnp.extract(A > 0, A), np.extract(A > 0, A))


def test_select_choose():
    x = np.arange(-4, 5)
    conds, choices = [x < -2, x > 2], [x * 10, x.astype(np.float32)]
    got = abstract(lambda a: fnp.select([a < -2, a > 2], [a * 10, a.astype(np.float32)]), x)
    exp = np.select(conds, choices)
    np.testing.assert_array_equal(got, exp)
    assert got.dtype == exp.dtype
    idx = np.array([0, 2, 1, 1])
    chs = [np.arange(4), np.arange(4) * 10, np.full((4,), -1)]
    np.testing.assert_array_equal(fnp.choose(idx, chs), np.choose(idx, chs))
    for mode in ("clip", "wrap"):
        bad = np.array([0, 5, -1, 2])
        np.testing.assert_array_equal(fnp.choose(bad, chs, mode=mode),
                                      np.choose(bad, chs, mode=mode))


@pytest.mark.parametrize("side", ["left", "right"])
def test_searchsorted_and_digitize(side):
    a = np.array([1.0, 2.0, 2.0, 3.0, 5.0, 8.0, np.nan])
    v = np.array([[-1.0, 1.0, 2.0, 2.5], [5.0, 8.0, 9.0, np.nan]])
    got = abstract(lambda s, q: fnp.searchsorted(s, q, side=side), a, v)
    np.testing.assert_array_equal(got, np.searchsorted(a, v, side=side))
    assert got.dtype == np.int64
    for n in range(0, 6):
        s = np.arange(n) * 2.0
        q = np.arange(-1, 2 * n + 1) * 1.0
        np.testing.assert_array_equal(fnp.searchsorted(s, q, side=side),
                                      np.searchsorted(s, q, side=side))
    perm = np.array([3, 0, 2, 1])
    unsorted = np.array([4.0, 1.0, 3.0, 2.0])
    np.testing.assert_array_equal(fnp.searchsorted(unsorted, 2.5, sorter=perm),
                                  np.searchsorted(unsorted, 2.5, sorter=perm))
    bins = np.array([0.0, 1.0, 2.5, 4.0])
    x = np.array([-1.0, 0.0, 1.0, 3.0, 4.0, 7.0])
    right = side == "right"
    np.testing.assert_array_equal(fnp.digitize(x, bins, right), np.digitize(x, bins, right))
    np.testing.assert_array_equal(fnp.digitize(x, bins[::-1], right),
                                  np.digitize(x, bins[::-1], right))


@pytest.mark.parametrize("offset", [-3, -1, 0, 1, 2, 6])
def test_diagonal_trace_diag(offset):
    for axes in [(0, 1), (1, 2), (2, 0), (-1, -2)]:
        np.testing.assert_array_equal(abstract(lambda a, ax=axes: fnp.diagonal(a, offset, *ax), A),
                                      np.diagonal(A, offset, *axes))
        np.testing.assert_allclose(fnp.trace(A, offset, *axes), np.trace(A, offset, *axes))
    v = np.arange(1.0, 4.0)
    np.testing.assert_array_equal(abstract(lambda a: fnp.diag(a, offset), v), np.diag(v, offset))
    np.testing.assert_array_equal(fnp.diag(A[0], offset), np.diag(A[0], offset))


@pytest.mark.parametrize("k", [-2, 0, 1, 5])
def test_tril_triu(k):
    for m in (A, A[0], A[0, 0]):
        np.testing.assert_array_equal(abstract(lambda a: fnp.tril(a, k), m), np.tril(m, k))
        np.testing.assert_array_equal(abstract(lambda a: fnp.triu(a, k), m), np.triu(m, k))
    for got, exp in zip(fnp.tril_indices(4, k, 5), np.tril_indices(4, k, 5)):
        np.testing.assert_array_equal(got, exp)
    for got, exp in zip(fnp.triu_indices(4, k), np.triu_indices(4, k)):
        np.testing.assert_array_equal(got, exp)


def test_tril_gradient_is_masked():
    g = fg.grad(lambda a: fnp.sum(fnp.tril(a)))(A[0])
    np.testing.assert_array_equal(g, np.tril(np.ones_like(A[0])))


def test_ix_diag_indices():
    rows, cols = fnp.ix_([0, 2], [1, 3, 4])  # on the default backend: index an array there
    np.testing.assert_array_equal(fnp.asarray(A[0])[rows, cols], A[0][np.ix_([0, 2], [1, 3, 4])])
    np.testing.assert_array_equal(abstract(lambda a: a[fnp.ix_([0, 2], [1, 3, 4])], A[0]),
                                  A[0][np.ix_([0, 2], [1, 3, 4])])
    for got, exp in zip(fnp.diag_indices(3, 3), np.diag_indices(3, 3)):
        np.testing.assert_array_equal(got, exp)
    sq = np.arange(16.0).reshape(4, 4)
    ref = sq.copy()
    np.fill_diagonal(ref, -1)
    np.testing.assert_array_equal(fnp.fill_diagonal(sq, -1, inplace=False), ref)


def test_unravel_and_ravel_multi_index():
    shape = (3, 4, 5)
    flat = np.array([0, 7, 59, 33])
    for got, exp in zip(fnp.unravel_index(flat, shape), np.unravel_index(flat, shape)):
        np.testing.assert_array_equal(got, exp)
    closed = fg.make_jaxpr(lambda i: fnp.unravel_index(i, shape))(flat)
    for got, exp in zip(eval_jaxpr(closed.jaxpr, closed.consts, flat),
                        np.unravel_index(flat, shape)):
        np.testing.assert_array_equal(got, exp)
    coords = np.unravel_index(flat, shape)
    np.testing.assert_array_equal(fnp.ravel_multi_index(coords, shape), flat)
    for order in ("C", "F"):
        closed = fg.make_jaxpr(lambda *c, o=order: fnp.ravel_multi_index(c, shape, order=o))(
            *coords)
        (got,) = eval_jaxpr(closed.jaxpr, closed.consts, *coords)
        np.testing.assert_array_equal(got, np.ravel_multi_index(coords, shape, order=order))
    with pytest.raises(ValueError):
        fnp.unravel_index(np.array([60]), shape)


@pytest.mark.parametrize("index", [
    (np.array([1]), slice(0, 0, 2), 0),                 # an empty slice beside an index array
    (slice(-1, -1, 2), slice(None), np.array([-2, -1])),
])
def test_empty_selections_scatter_and_differentiate(index):
    x = np.arange(12.0).reshape(2, 3, 2)[:, :2, :]
    want = x.copy()
    want[index] += 1.5
    np.testing.assert_array_equal(fg.jit(lambda a: a.at[index].add(1.5))(x), want)
    g = fg.grad(lambda a: fnp.sum(a[index] ** 2))(x)
    np.testing.assert_array_equal(g, np.zeros_like(x))


# ---------------------------------------------------------------------------------------------
# r_ and c_

_A = np.array([1.0, 2.0, 3.0])
_B = np.array([4.0, 5.0, 6.0])
_M = np.arange(6).reshape(2, 3)
R_C_CASES = [
    lambda m: m.r_[1:4, 0, _A], lambda m: m.r_[0:1:5j, 7], lambda m: m.r_[_A, _B],
    lambda m: m.r_[-1:1:0.5], lambda m: m.c_[_A, _B], lambda m: m.c_[_M, _M],
    lambda m: m.r_["0,2", _A, _B], lambda m: m.r_["0,2,0", _A, _B],
    lambda m: m.r_["1,2,0", _A, _B], lambda m: m.r_["-1", _M, _M], lambda m: m.c_[_A, 0:3],
    lambda m: m.r_[np.int32(1), np.array([2, 3], np.int8)], lambda m: m.r_[3, 2.5],
    lambda m: m.r_["0,3,-1", _A], lambda m: m.r_[_M, _M + 1], lambda m: m.c_[1:4],
]


@pytest.mark.parametrize("case", range(len(R_C_CASES)))
def test_r_and_c_match_numpy(case):
    f = R_C_CASES[case]
    want, got = f(np), f(fnp)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_r_and_c_under_transforms():
    g = fg.grad(lambda x: fnp.sum(fnp.r_[x, 2.0 * x, 1.0] ** 2))(_A)
    np.testing.assert_allclose(g, 10 * _A)
    np.testing.assert_array_equal(fg.jit(lambda x: fnp.c_[x, x])(_A), np.c_[_A, _A])
    np.testing.assert_array_equal(fg.vmap(lambda x: fnp.r_[x, 0.0])(np.eye(2)),
                                  [[1, 0, 0], [0, 1, 0]])
    with pytest.raises(ValueError, match="matrix directives"):
        fnp.r_["r", _A]
    with pytest.raises(ValueError, match="must come first"):
        fnp.r_[_A, "0,2"]
