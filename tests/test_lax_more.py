"""funcgrad.lax functions composed from primitives (those that funcgrad/lax/_more.py held) and
funcgrad.scipy.special: each against a NumPy reference, gradients against central finite
differences in float64, and one vmap and one jit check per family."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import funcgrad as fg
import funcgrad.numpy as fnp
import funcgrad.scipy.special as fsp
from funcgrad import lax

rng = np.random.default_rng(0)


def normal(*shape):
    return rng.normal(size=shape)


def check_grad(f, args, argnums=0, eps=1e-6, rtol=1e-6, atol=1e-8, seed=1):
    """grad of <w, f(args)> (a fixed random w) along two random directions == central
    differences, for every argument in argnums."""
    argnums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    r = np.random.default_rng(seed)
    out = np.asarray(f(*args))
    w = r.normal(size=out.shape)

    def loss(*a):  # fnp.multiply, not `*`: in GPU mode f's result is on the device, w is not
        return fnp.sum(fnp.multiply(f(*a), w))

    grads = fg.grad(loss, argnums)(*args)
    for i, g in zip(argnums, grads):
        for _ in range(2):
            u = r.normal(size=np.shape(args[i]))
            plus, minus = list(args), list(args)
            plus[i], minus[i] = args[i] + eps * u, args[i] - eps * u
            fd = (float(loss(*plus)) - float(loss(*minus))) / (2 * eps)
            np.testing.assert_allclose(np.sum(np.asarray(g) * u), fd, rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------------------------
# Products

@pytest.mark.parametrize("shapes", [((3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)),
                                    ((2, 1, 3, 2), (2, 1, 2, 4))])
def test_batch_matmul(shapes):
    a, b = normal(*shapes[0]), normal(*shapes[1])
    np.testing.assert_allclose(lax.batch_matmul(a, b), a @ b, rtol=1e-12)
    check_grad(lax.batch_matmul, (a, b), (0, 1))


def test_batch_matmul_errors():
    with pytest.raises(ValueError, match="at least 2D"):
        lax.batch_matmul(normal(3), normal(3, 2))
    with pytest.raises(ValueError, match="same ndim"):
        lax.batch_matmul(normal(2, 3, 4), normal(4, 5))


@pytest.mark.parametrize("shapes", [((3, 4), (4, 5)), ((3, 4), (4,)), ((4,), (4,)),
                                    ((4,), (4, 2))])
def test_dot(shapes):
    a, b = normal(*shapes[0]), normal(*shapes[1])
    np.testing.assert_allclose(lax.dot(a, b), np.dot(a, b), rtol=1e-12)
    check_grad(lax.dot, (a, b), (0, 1))


def test_dot_options():
    a, b = normal(3, 4).astype(np.float32), normal(4, 2).astype(np.float32)
    out = lax.dot(a, b, preferred_element_type=np.float64)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, a.astype(np.float64) @ b, rtol=1e-6)
    x, y = normal(2, 3, 4), normal(2, 4, 5)
    got = lax.dot(x, y, dimension_numbers=(((2,), (1,)), ((0,), (0,))))
    np.testing.assert_allclose(got, x @ y, rtol=1e-12)
    with pytest.raises(ValueError, match="dimension_numbers"):
        lax.dot(x, y)


def test_products_vmap_jit():
    a, b = normal(5, 3, 4), normal(4, 2)
    np.testing.assert_allclose(fg.vmap(lax.dot, (0, None))(a, b), a @ b, rtol=1e-12)
    c = normal(5, 3, 4, 2)
    np.testing.assert_allclose(fg.jit(lax.batch_matmul)(a, c[:, 0]), a @ c[:, 0], rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# Shapes and slices

@pytest.mark.parametrize("shape,sizes", [((3,), (2,)), ((2, 3), (4, 1)), ((), (3,)),
                                         ((2,), ())])
def test_broadcast(shape, sizes):
    x = normal(*shape)
    got = lax.broadcast(x, sizes)
    np.testing.assert_array_equal(got, np.broadcast_to(x, sizes + shape))
    if x.ndim:
        check_grad(lambda v: lax.broadcast(v, sizes), (x,))


@pytest.mark.parametrize("start,stop", [(0, 2), (1, None), (-2, None), (0, 3), (1, 1), (0, None)])
def test_collapse(start, stop):
    x = normal(2, 3, 4)
    lo, hi, _ = slice(start, stop).indices(3)
    want = x.reshape(x.shape[:lo] + (math.prod(x.shape[lo:hi]),) + x.shape[hi:])
    np.testing.assert_array_equal(lax.collapse(x, start, stop), want)
    with pytest.raises(ValueError):
        lax.collapse(x, 2, 1)


@pytest.mark.parametrize("start,limit,stride,axis", [(0, 2, 1, 0), (1, None, 2, 2),
                                                     (-3, -1, 1, 1), (None, None, 3, -1)])
def test_slice_in_dim(start, limit, stride, axis):
    x = normal(2, 3, 5)
    idx = [slice(None)] * 3
    idx[axis] = slice(start, limit, stride)
    np.testing.assert_array_equal(lax.slice_in_dim(x, start, limit, stride, axis), x[tuple(idx)])
    check_grad(lambda v: lax.slice_in_dim(v, start, limit, stride, axis), (x,))


@pytest.mark.parametrize("index,axis,keepdims", [(0, 0, True), (-1, 1, False), (2, -1, True),
                                                 (4, 2, False)])
def test_index_in_dim(index, axis, keepdims):
    x = normal(2, 3, 5)
    want = np.take(x, index, axis=axis)
    if keepdims:
        want = np.expand_dims(want, axis)
    np.testing.assert_array_equal(lax.index_in_dim(x, index, axis, keepdims), want)
    check_grad(lambda v: lax.index_in_dim(v, index, axis, keepdims), (x,))
    with pytest.raises(IndexError):
        lax.index_in_dim(x, 5, 2)


def _dyn_start(i, size, n):
    """JAX's dynamic start: negative counts from the end, then clamped so that n fit."""
    i = int(i)
    i = i + size if i < 0 else i
    return min(max(i, 0), size - n)


INDICES = [0, 2, -1, -3, 7, -9, np.int32(-2), np.int32(1), np.uint8(3)]


@pytest.mark.parametrize("index", INDICES)
def test_dynamic_slice_and_index_in_dim(index):
    x = normal(2, 3, 5)
    s = _dyn_start(index, 5, 2)
    np.testing.assert_array_equal(lax.dynamic_slice_in_dim(x, index, 2, 2), x[:, :, s:s + 2])
    s = _dyn_start(index, 3, 1)
    np.testing.assert_array_equal(lax.dynamic_index_in_dim(x, index, 1), x[:, s:s + 1])
    np.testing.assert_array_equal(lax.dynamic_index_in_dim(x, index, 1, keepdims=False), x[:, s])
    check_grad(lambda v: lax.dynamic_slice_in_dim(v, index, 2, 2), (x,))
    check_grad(lambda v: lax.dynamic_index_in_dim(v, index, 1, False), (x,))


@pytest.mark.parametrize("index", INDICES)
def test_dynamic_update_in_dim(index):
    x, u = normal(2, 3, 5), normal(2, 3, 2)
    s = _dyn_start(index, 5, 2)
    want = x.copy()
    want[:, :, s:s + 2] = u
    np.testing.assert_array_equal(lax.dynamic_update_slice_in_dim(x, u, index, 2), want)
    check_grad(lambda v, w: lax.dynamic_update_slice_in_dim(v, w, index, 2), (x, u), (0, 1))
    r = normal(2, 5)
    s = _dyn_start(index, 3, 1)
    want = x.copy()
    want[:, s] = r
    np.testing.assert_array_equal(lax.dynamic_update_index_in_dim(x, r, index, 1), want)
    np.testing.assert_array_equal(lax.dynamic_update_index_in_dim(x, r[:, None], index, 1), want)
    check_grad(lambda v, w: lax.dynamic_update_index_in_dim(v, w, index, 1), (x, r), (0, 1))


def test_dynamic_in_dim_traced_index_jit_vmap():
    x = normal(4, 6)
    f = fg.jit(lambda v, i: lax.dynamic_slice_in_dim(v, i, 3, axis=1))
    for i in [np.int32(-2), np.int64(1), np.int32(5), np.uint32(2)]:
        s = _dyn_start(i, 6, 3)
        np.testing.assert_array_equal(f(x, i), x[:, s:s + 3])
    idx = np.array([0, -1, 3, -6], np.int32)
    got = fg.vmap(lambda i: lax.dynamic_index_in_dim(x, i, 1, keepdims=False))(idx)
    np.testing.assert_array_equal(got, np.stack([x[:, _dyn_start(i, 6, 1)] for i in idx]))
    got = fg.vmap(lambda v, i: lax.dynamic_update_index_in_dim(v, np.float64(9), i, 0))(x, idx)
    want = x.copy()
    for row, i in enumerate(idx):
        want[row, _dyn_start(i, 6, 1)] = 9
    np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="allow_negative_indices"):
        lax.dynamic_slice_in_dim(x, -1, 2, allow_negative_indices=False)


# ---------------------------------------------------------------------------------------------
# Elementwise

def test_full_like():
    x = normal(2, 3)
    got = lax.full_like(x, 2.5)
    assert got.dtype == x.dtype and got.shape == x.shape and np.all(got == 2.5)
    got = lax.full_like(x, 7, np.int32, (4,))
    assert got.dtype == np.int32 and got.shape == (4,) and np.all(got == 7)
    got = fg.jit(lambda v, c: lax.full_like(v, c))(x.astype(np.float32), np.float64(1.5))
    assert got.dtype == np.float32 and np.all(got == 1.5)
    # the fill value is differentiable when traced
    assert fg.grad(lambda c: fnp.sum(lax.full_like(x, c)))(1.0) == 6.0


@pytest.mark.parametrize("shape", [(), (5,), (2, 3)])
def test_select_and_square(shape):
    x, y = normal(*shape), normal(*shape)
    pred = x > 0
    np.testing.assert_array_equal(lax.select(pred, x, y), np.where(pred, x, y))
    np.testing.assert_array_equal(lax.select(True, x, y), x)
    np.testing.assert_array_equal(lax.square(x), x * x)
    check_grad(lambda a, b: lax.select(pred, a, b), (x, y), (0, 1))
    check_grad(lax.square, (x,))
    np.testing.assert_array_equal(lax.square(np.arange(-3, 4)), np.arange(-3, 4) ** 2)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int8, np.uint32,
                                   np.int64, np.bool_, np.complex64, np.complex128])
def test_select_n_picks_bit_patterns(dtype):
    """select_n returns the chosen operand's exact bits (NaN payloads, -0.0, inf), for predicates
    and operands of shapes that broadcast, eagerly and under jit."""
    r = np.random.default_rng(1)
    bits = r.integers(0, 256, (3, 4, np.dtype(dtype).itemsize), dtype=np.uint8)
    a = bits.view(dtype).reshape(3, 4) if dtype != np.bool_ else bits[..., 0] > 127
    b = np.roll(a, 1)
    for pred, c0, c1 in [(r.random((3, 4)) < 0.5, a, b), (r.random((3, 1)) < 0.5, a[0], b),
                         (r.random(4) < 0.5, a[0, 0], b[1, 1]), (r.random((2, 3, 4)) < 0.5, a, b)]:
        want = np.where(pred, c1, c0)
        for got in (lax.select_n(pred, c0, c1), fg.jit(lax.select_n)(pred, c0, c1)):
            got = np.asarray(got)
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int32, np.uint32, np.int64, np.uint64])
def test_shifts_by_a_scalar_amount(dtype):
    """A rank-0 shift amount (in range or not) gives what the same amount per element gives."""
    info = np.iinfo(dtype)
    x = np.random.default_rng(2).integers(info.min, info.max, 40, dtype=dtype, endpoint=True)
    for amount in range(info.bits + 2):
        for f in (lax.shift_left, lax.shift_right_logical, lax.shift_right_arithmetic):
            want = f(x, np.full(x.shape, amount, dtype))
            got = f(x, np.array(amount, dtype))
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(lax.shift_right_logical(np.array([-8], np.int8), np.int8(1)),
                                  [124])


def test_bitcast_convert_type():
    """NumPy's `view` with JAX's shape rule: the same width keeps the shape, a narrower type adds a
    trailing axis of pieces, a wider one consumes the last axis; no derivative; jit and vmap."""
    x = np.array([[1.0, -2.5, np.inf], [0.0, -0.0, 3.0]], np.float32)
    np.testing.assert_array_equal(lax.bitcast_convert_type(x, np.uint32), x.view(np.uint32))
    pieces = lax.bitcast_convert_type(x, np.uint8)
    assert pieces.shape == (2, 3, 4)
    np.testing.assert_array_equal(pieces.reshape(2, 12), x.view(np.uint8))
    np.testing.assert_array_equal(lax.bitcast_convert_type(pieces, np.float32), x)
    np.testing.assert_array_equal(lax.bitcast_convert_type(np.float64(3.0), np.uint32),
                                  np.array([3.0]).view(np.uint32))
    np.testing.assert_array_equal(lax.bitcast_convert_type(x.T, np.int16).reshape(3, 4),
                                  np.ascontiguousarray(x.T).view(np.int16))
    f = fg.jit(lambda v: lax.bitcast_convert_type(lax.bitcast_convert_type(v, np.int32) + 1,
                                                  np.float32))
    np.testing.assert_array_equal(f(x), (x.view(np.int32) + 1).view(np.float32))
    batched = fg.vmap(lambda v: lax.bitcast_convert_type(v, np.uint16), in_axes=1)(x)
    np.testing.assert_array_equal(batched, np.moveaxis(x, 1, 0).copy().view(np.uint16).reshape(
        3, 2, 2))
    assert fg.grad(lambda v: fnp.sum(lax.bitcast_convert_type(
        lax.bitcast_convert_type(v, np.int32), np.float32)))(x[0]).tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(TypeError, match="last axis"):
        fg.jit(lambda v: lax.bitcast_convert_type(v, np.float64))(x)
    with pytest.raises(TypeError, match="bool"):
        fg.jit(lambda v: lax.bitcast_convert_type(v, np.bool_))(np.zeros(3, np.int8))


@pytest.mark.parametrize("bounds", [(-0.5, 0.5), ("array", "array"), (-0.9, "array")])
def test_clamp(bounds):
    x = normal(3, 4)
    lo, hi = (np.full(x.shape, -0.4) if b == "array" else b for b in bounds)
    if isinstance(hi, np.ndarray):
        hi = hi + 0.8 + 0.1 * normal(3, 4)
    np.testing.assert_array_equal(lax.clamp(lo, x, hi), np.minimum(np.maximum(x, lo), hi))
    arrays = [i for i, b in enumerate((lo, x, hi)) if isinstance(b, np.ndarray)]
    check_grad(lambda *a: lax.clamp(*a), (np.asarray(lo), x, np.asarray(hi)), arrays)


def test_clamp_derivative_follows_jax():
    # to x strictly inside, to min below it, to max above it, and zero at the ties.
    lo, hi = np.full(5, 0.5), np.full(5, 1.5)
    x = np.array([0.0, 0.5, 1.0, 1.5, 2.0])
    g = fg.grad(lambda a, b, c: fnp.sum(lax.clamp(a, b, c)), (0, 1, 2))(lo, x, hi)
    np.testing.assert_array_equal(g[0], [1, 0, 0, 0, 0])
    np.testing.assert_array_equal(g[1], [0, 0, 1, 0, 0])
    np.testing.assert_array_equal(g[2], [0, 0, 0, 0, 1])
    # scalar bounds get the summed derivative
    assert fg.grad(lambda a: fnp.sum(lax.clamp(a, x, 1.5)))(np.float64(0.7)) == 2.0
    np.testing.assert_array_equal(lax.clamp(1, np.arange(6), 3), np.clip(np.arange(6), 1, 3))


def test_elementwise_vmap_jit():
    x = normal(4, 3)
    np.testing.assert_array_equal(fg.vmap(lambda v: lax.clamp(-0.1, v, 0.2))(x),
                                  np.clip(x, -0.1, 0.2))
    np.testing.assert_array_equal(fg.jit(lambda v: lax.select(v > 0, lax.square(v), v))(x),
                                  np.where(x > 0, x * x, x))


_ERFC_POINTS = np.concatenate([np.linspace(-6, 6, 97), [-30.0, -0.5, 0.0, 0.5, 4.0, 10.0, 26.5,
                                                        27.5, 30.0, 40.0]])


def test_erfc():
    want = np.array([math.erfc(v) for v in _ERFC_POINTS])
    np.testing.assert_allclose(lax.erfc(_ERFC_POINTS), want, rtol=1e-13, atol=0)
    np.testing.assert_allclose(lax.erfc(_ERFC_POINTS.astype(np.float32)),
                               want.astype(np.float32), rtol=2e-6, atol=1e-37)
    assert lax.erfc(_ERFC_POINTS.astype(np.float32)).dtype == np.float32
    special = lax.erfc(np.array([np.inf, -np.inf, np.nan]))
    np.testing.assert_array_equal(special, [0.0, 2.0, np.nan])
    with pytest.raises(TypeError):
        lax.erfc(np.arange(3))


def test_erfc_grad_vmap_jit():
    x = np.linspace(-5, 5, 41)
    g = fg.vmap(fg.grad(lax.erfc))(x)
    np.testing.assert_allclose(g, -2 / np.sqrt(np.pi) * np.exp(-x * x), rtol=1e-12, atol=1e-300)
    check_grad(lax.erfc, (np.array([-1.2, -0.3, 0.2, 0.7, 3.0, 4.5]),))
    np.testing.assert_allclose(fg.jit(lax.erfc)(x), [math.erfc(v) for v in x], rtol=1e-13)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32,
                                   np.int64, np.uint64])
def test_population_count(dtype):
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max, size=(4, 25), dtype=dtype, endpoint=True)
    x.flat[:4] = [info.min, info.max, 0, -1 if info.min < 0 else 1]
    bits = info.bits
    want = np.array([bin(int(v) & ((1 << bits) - 1)).count("1") for v in x.ravel()]).reshape(
        x.shape).astype(dtype)
    got = lax.population_count(x)
    assert got.dtype == x.dtype
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(fg.vmap(lax.population_count)(x), want)
    np.testing.assert_array_equal(fg.jit(lax.population_count)(x), want)


def test_population_count_rejects_floats():
    with pytest.raises(TypeError):
        lax.population_count(np.ones(3))


# ---------------------------------------------------------------------------------------------
# Sorting

@pytest.mark.parametrize("shape,dimension", [((7,), -1), ((3, 7), -1), ((4, 3), 0)])
def test_sort_key_val(shape, dimension):
    keys = rng.integers(0, 3, size=shape).astype(np.float64)
    vals = normal(*shape)
    k, v = lax.sort_key_val(keys, vals, dimension)
    perm = np.argsort(keys, axis=dimension, kind="stable")
    np.testing.assert_array_equal(k, np.take_along_axis(keys, perm, dimension))
    np.testing.assert_array_equal(v, np.take_along_axis(vals, perm, dimension))
    check_grad(lambda b: lax.sort_key_val(keys, b, dimension)[1], (vals,))


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int32, np.uint8])
@pytest.mark.parametrize("k", [0, 1, 3, 7])
def test_top_k(dtype, k):
    x = rng.integers(0, 4, size=(3, 7)).astype(dtype)  # many ties: lower index first
    vals, idx = lax.top_k(x, k)
    want = np.argsort(-x.astype(np.float64), axis=-1, kind="stable")[:, :k]
    assert idx.dtype == np.int32 and vals.dtype == x.dtype
    np.testing.assert_array_equal(idx, want)
    np.testing.assert_array_equal(vals, np.take_along_axis(x, want, -1))


def test_top_k_axis_grad_vmap_jit():
    x = normal(5, 4)
    vals, idx = lax.top_k(x, 2, axis=0)
    want = np.argsort(-x, axis=0, kind="stable")[:2]
    np.testing.assert_array_equal(idx, want)
    np.testing.assert_array_equal(vals, np.take_along_axis(x, want, 0))
    check_grad(lambda v: lax.top_k(v, 3)[0], (x,))
    np.testing.assert_array_equal(fg.vmap(lambda v: lax.top_k(v, 2)[1])(x), lax.top_k(x, 2)[1])
    np.testing.assert_array_equal(fg.jit(lambda v: lax.sort_key_val(v, -v)[1])(x), -np.sort(x))
    with pytest.raises(ValueError):
        lax.top_k(x, -1)


# ---------------------------------------------------------------------------------------------
# Bitwise reductions

@pytest.mark.parametrize("axes", [(0,), (1, 2), (0, 1, 2), (), (-1,)])
@pytest.mark.parametrize("dtype", [np.bool_, np.int32, np.uint8, np.int64])
def test_reduce_and_or(axes, dtype):
    if dtype == np.bool_:
        x = rng.integers(0, 2, size=(3, 4, 5)).astype(bool)
        x[0] = True
    else:
        info = np.iinfo(dtype)
        x = rng.integers(info.min, info.max, size=(3, 4, 5), dtype=dtype, endpoint=True)
        x[1] |= dtype(0x5)
    ax = tuple(a % 3 for a in axes)
    np.testing.assert_array_equal(lax.reduce_and(x, axes), np.bitwise_and.reduce(x, axis=ax)
                                  if ax else x)
    np.testing.assert_array_equal(lax.reduce_or(x, axes), np.bitwise_or.reduce(x, axis=ax)
                                  if ax else x)
    assert lax.reduce_and(x, axes).dtype == x.dtype


def test_reduce_and_or_empty_vmap_jit():
    np.testing.assert_array_equal(lax.reduce_and(np.zeros((2, 0), bool), (1,)), [True, True])
    np.testing.assert_array_equal(lax.reduce_or(np.zeros((2, 0), np.int16), (1,)), [0, 0])
    np.testing.assert_array_equal(lax.reduce_and(np.zeros((2, 0), np.uint8), (1,)), [255, 255])
    x = rng.integers(0, 2, size=(4, 6)).astype(bool)
    np.testing.assert_array_equal(fg.vmap(lambda v: lax.reduce_or(v, (0,)))(x), x.any(1))
    np.testing.assert_array_equal(fg.jit(lambda v: lax.reduce_and(v, (0,)))(x), x.all(0))
    with pytest.raises(TypeError):
        lax.reduce_and(np.ones(3), (0,))


# ---------------------------------------------------------------------------------------------
# reduce_window

_NP_OPS = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}
_IDENTITY = {"add": 0.0, "mul": 1.0, "max": -np.inf, "min": np.inf}


def reduce_window_ref(x, init, op, dims, strides, pads, base, wdil):
    """Direct loops: window positions over the base-dilated, padded operand; padding and holes
    are skipped, init is combined once per window (XLA on the CPU)."""
    n = x.ndim
    dilated = [(s - 1) * b + 1 if s else 0 for s, b in zip(x.shape, base)]
    padded = [d + lo + hi for d, (lo, hi) in zip(dilated, pads)]
    eff = [(d - 1) * w + 1 for d, w in zip(dims, wdil)]
    out_shape = [max((p - e) // s + 1, 0) if p >= e else 0
                 for p, e, s in zip(padded, eff, strides)]
    out = np.empty(out_shape, x.dtype)
    for pos in itertools.product(*(range(o) for o in out_shape)):
        acc = np.asarray(init, x.dtype)
        for offs in itertools.product(*(range(d) for d in dims)):
            src = []
            for i in range(n):
                p = pos[i] * strides[i] + offs[i] * wdil[i] - pads[i][0]
                if p < 0 or p >= dilated[i] or p % base[i]:
                    break
                src.append(p // base[i])
            else:
                acc = _NP_OPS[op](acc, x[tuple(src)])
        out[pos] = acc
    return out


WINDOW_CASES = [
    ((3, 2), (1, 1), "VALID", None, None),
    ((3, 3), (2, 2), "SAME", None, None),
    ((2, 2), (2, 1), [(1, 2), (0, 1)], None, None),
    ((2, 3), (1, 2), "VALID", (2, 1), None),
    ((2, 2), (1, 1), "SAME", None, (2, 3)),
    ((3, 2), (2, 2), [(2, 1), (0, 0)], (2, 2), (1, 2)),
]


def _pads(x, dims, strides, padding, wdil):
    if not isinstance(padding, str):
        return padding
    eff = [(d - 1) * w + 1 for d, w in zip(dims, wdil or (1,) * len(dims))]
    return lax.conv.padtype_to_pads(x.shape, eff, strides, padding)


@pytest.mark.parametrize("case", WINDOW_CASES)
@pytest.mark.parametrize("op", ["add", "mul", "max", "min"])
def test_reduce_window(case, op):
    dims, strides, padding, base, wdil = case
    x = normal(7, 6)
    fn = {"add": lax.add, "mul": lax.mul, "max": lax.max, "min": lax.min}[op]
    pads = _pads(x, dims, strides, padding, wdil)
    nb, nw = base or (1, 1), wdil or (1, 1)
    for init in (_IDENTITY[op], 0.25):
        got = lax.reduce_window(x, init, fn, dims, strides, padding, base, wdil)
        want = reduce_window_ref(x, init, op, dims, strides, pads, nb, nw)
        np.testing.assert_allclose(got, want, rtol=1e-12)
    init = _IDENTITY[op] if op in ("add", "mul") else 0.25  # no all-padding -inf windows
    check_grad(lambda v: lax.reduce_window(v, init, fn, dims, strides, padding, base, wdil),
               (x,))


def test_reduce_window_init_grad_and_ints():
    x = normal(5, 4)
    check_grad(lambda v, c: lax.reduce_window(v, c, lax.add, (2, 2), (1, 1), "SAME"),
               (x, np.float64(0.3)), (0, 1))
    xi = rng.integers(-100, 100, size=(5, 6)).astype(np.int32)
    got = lax.reduce_window(xi, np.int32(np.iinfo(np.int32).min), lax.max, (2, 3), (1, 1), "SAME")
    want = reduce_window_ref(xi, np.iinfo(np.int32).min, "max", (2, 3), (1, 1),
                             _pads(xi, (2, 3), (1, 1), "SAME", None), (1, 1), (1, 1))
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.int32
    # an output of size zero
    assert lax.reduce_window(x, 0.0, lax.add, (6, 1), (1, 1), "VALID").shape == (0, 4)


def test_reduce_window_vmap_jit_and_errors():
    x = normal(3, 6, 5)
    pool = lambda v: lax.reduce_window(v, -np.inf, lax.max, (2, 2), (2, 2), "SAME")  # noqa: E731
    want = np.stack([reduce_window_ref(v, -np.inf, "max", (2, 2), (2, 2),
                                       _pads(v, (2, 2), (2, 2), "SAME", None), (1, 1), (1, 1))
                     for v in x])
    np.testing.assert_array_equal(fg.vmap(pool)(x), want)
    np.testing.assert_array_equal(fg.jit(pool)(x[0]), want[0])
    with pytest.raises(NotImplementedError, match="lax.add"):
        lax.reduce_window(x, 0.0, lambda a, b: a + b, (1, 2, 2), (1, 1, 1), "VALID")
    with pytest.raises(ValueError):
        lax.reduce_window(x, 0.0, lax.add, (2, 2), (1, 1), "VALID")


# ---------------------------------------------------------------------------------------------
# associative_scan

def sequential_scan(fn, elems, reverse, axis):
    """The reference: a Python loop over positions along axis (fn(later, earlier) in reverse)."""
    leaves, treedef = fg.tree_util.tree_flatten(elems)
    n = leaves[0].shape[axis]

    def at(i):
        return fg.tree_util.tree_unflatten(treedef, [np.take(v, [i], axis) for v in leaves])

    order = range(n - 1, -1, -1) if reverse else range(n)
    outs, acc = {}, None
    for i in order:
        acc = at(i) if acc is None else fn(acc, at(i))
        outs[i] = fg.tree_util.tree_leaves(acc)
    cols = [np.concatenate([np.asarray(outs[i][j]) for i in range(n)], axis)
            for j in range(len(leaves))]
    return fg.tree_util.tree_unflatten(treedef, cols)


def affine(a, b):
    """Composition of x -> a0 x + a1 then x -> b0 x + b1 (associative, not commutative)."""
    return (a[0] * b[0], a[1] * b[0] + b[1])


def matmul2(a, b):
    """2x2 matrix products as a dict pytree (associative, not commutative)."""
    return {"a": a["a"] * b["a"] + a["b"] * b["c"], "b": a["a"] * b["b"] + a["b"] * b["d"],
            "c": a["c"] * b["a"] + a["d"] * b["c"], "d": a["c"] * b["b"] + a["d"] * b["d"]}


SCAN_FNS = {
    "add": (lax.add, lambda p: p),
    "mul": (lax.mul, lambda p: p),
    "max": (lax.max, lambda p: p),
    "affine": (affine, lambda p: (p, 0.5 * p + 1)),
    "matmul2": (matmul2, lambda p: {"a": p, "b": p + 1, "c": 0.5 * p, "d": p - 1}),
}


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 11])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("name", list(SCAN_FNS))
def test_associative_scan(n, reverse, axis, name):
    fn, make = SCAN_FNS[name]
    x = normal(n, 3) if axis == 0 else normal(2, n)
    x = 0.5 + 0.5 * np.abs(x) if name in ("mul", "matmul2") else x
    got = lax.associative_scan(fn, make(x), reverse=reverse, axis=axis)
    want = sequential_scan(fn, make(x), reverse, axis)
    for g, w in zip(fg.tree_util.tree_leaves(got), fg.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-12)
    if name != "max" and n in (5, 8):
        check_grad(lambda v: fg.tree_util.tree_leaves(
            lax.associative_scan(fn, make(v), reverse=reverse, axis=axis))[-1], (x,))


def test_associative_scan_matches_cumulative_and_vmap_jit():
    x = normal(10, 4)
    np.testing.assert_allclose(lax.associative_scan(lax.add, x, axis=-2), np.cumsum(x, 0),
                               rtol=1e-12)
    bits = rng.integers(0, 2, size=(9,)).astype(bool)
    np.testing.assert_array_equal(lax.associative_scan(lax.bitwise_or, bits),
                                  np.logical_or.accumulate(bits))
    np.testing.assert_allclose(fg.vmap(lambda v: lax.associative_scan(lax.add, v))(x),
                               np.cumsum(x, 1), rtol=1e-12)
    got = fg.jit(lambda v: lax.associative_scan(affine, (v, v), reverse=True))(x)
    want = sequential_scan(affine, (x, x), True, 0)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-12)
    with pytest.raises(ValueError, match="same first dimension"):
        lax.associative_scan(affine, (x, x[:3]))


# ---------------------------------------------------------------------------------------------
# conv_transpose

_X1, _W1 = np.array([1.0, 2, 3]).reshape(1, 3, 1), np.array([1.0, 10, 100]).reshape(3, 1, 1)
# (padding, stride) -> (output, output with transpose_kernel), as jax.lax.conv_transpose gives.
CONV_T_1D = {
    ("SAME", 1): ([210, 321, 32], [12, 123, 230]),
    ("SAME", 2): ([100, 10, 201, 20, 302, 30], [1, 10, 102, 20, 203, 30]),
    ("VALID", 1): ([100, 210, 321, 32, 3], [1, 12, 123, 230, 300]),
    ("VALID", 2): ([100, 10, 201, 20, 302, 30, 3], [1, 10, 102, 20, 203, 30, 300]),
    (((1, 0),), 1): ([210, 321], [12, 123]),
    (((1, 0),), 2): ([10, 201, 20, 302], [10, 102, 20, 203]),
}


@pytest.mark.parametrize("key", list(CONV_T_1D))
def test_conv_transpose_1d_values(key):
    padding, stride = key
    want, want_t = CONV_T_1D[key]
    np.testing.assert_array_equal(lax.conv_transpose(_X1, _W1, (stride,), padding).ravel(), want)
    np.testing.assert_array_equal(
        lax.conv_transpose(_X1, _W1, (stride,), padding, transpose_kernel=True).ravel(), want_t)


def test_conv_transpose_2d_values():
    x, w = np.arange(1.0, 5).reshape(1, 2, 2, 1), np.arange(1.0, 5).reshape(2, 2, 1, 1)
    np.testing.assert_array_equal(lax.conv_transpose(x, w, (2, 2), "SAME")[0, :, :, 0],
                                  [[4, 3, 8, 6], [2, 1, 4, 2], [12, 9, 16, 12], [6, 3, 8, 4]])
    got = lax.conv_transpose(x, w, (2, 1), "VALID", rhs_dilation=(1, 2))[0, :, :, 0]
    np.testing.assert_array_equal(got, [[4, 8, 3, 6], [2, 4, 1, 2], [12, 16, 9, 12],
                                        [6, 8, 3, 4]])


@pytest.mark.parametrize("strides,k,dilation", [((1, 1), 3, None), ((2, 2), 3, None),
                                                ((2, 3), 3, None), ((2, 1), 2, (2, 1)),
                                                ((3, 2), 4, None)])
def test_conv_transpose_is_the_conv_gradient(strides, k, dilation):
    # With transpose_kernel and VALID padding, conv_transpose is the VJP of the forward conv
    # (when the strides tile the input exactly).
    dil = dilation or (1, 1)
    eff = [(k - 1) * d + 1 for d in dil]
    in_sp = [e + 2 * s for e, s in zip(eff, strides)]
    x, w = normal(2, *in_sp, 3), normal(k, k, 3, 4)
    dn = ("NHWC", "HWIO", "NHWC")

    def fwd(v):
        return lax.conv_general_dilated(v, w, strides, "VALID", rhs_dilation=dilation,
                                        dimension_numbers=dn)

    y, vjp = fg.vjp(fwd, x)
    ct = normal(*y.shape)
    got = lax.conv_transpose(ct, w, strides, "VALID", rhs_dilation=dilation,
                             dimension_numbers=dn, transpose_kernel=True)
    np.testing.assert_allclose(got, vjp(ct)[0], rtol=1e-10, atol=1e-12)


def test_conv_transpose_layouts_grad_vmap_jit():
    x, w = normal(2, 5, 4, 3), normal(3, 3, 3, 4)
    base = lax.conv_transpose(x, w, (2, 2), "SAME")
    assert base.shape == (2, 10, 8, 4)
    nchw = lax.conv_transpose(np.transpose(x, (0, 3, 1, 2)), np.transpose(w, (3, 2, 0, 1)),
                              (2, 2), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW"))
    np.testing.assert_allclose(np.transpose(nchw, (0, 2, 3, 1)), base, rtol=1e-12)
    check_grad(lambda a, b: lax.conv_transpose(a, b, (2, 2), "SAME"), (x, w), (0, 1))
    got = fg.vmap(lambda a: lax.conv_transpose(a[None], w, (2, 2), "SAME")[0])(x)
    np.testing.assert_allclose(got, base, rtol=1e-12)
    np.testing.assert_allclose(fg.jit(lambda a: lax.conv_transpose(a, w, (2, 2), "SAME"))(x),
                               base, rtol=1e-12)
    assert lax.conv_transpose(normal(1, 4, 2), normal(3, 2, 5), (2,), "VALID").shape == (1, 9, 5)


# ---------------------------------------------------------------------------------------------
# funcgrad.scipy.special: gammaln, digamma, polygamma

POSITIVE = np.concatenate([[1e-8, 0.01, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 10.0, 100.0, 1e5, 1e10],
                           rng.uniform(0.05, 40, 40)])
NEGATIVE = np.concatenate([[-0.5, -1.5, -2.25, -10.2, -100.3], rng.uniform(-30, 0, 30)])


def test_gammaln_against_math_lgamma():
    for x in (POSITIVE, NEGATIVE):
        want = np.array([math.lgamma(v) for v in x])
        np.testing.assert_allclose(fsp.gammaln(x), want, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(fsp.gammaln(np.arange(1, 8)),
                               [math.lgamma(v) for v in range(1, 8)], atol=1e-13)
    got = fsp.gammaln(np.array([0.0, -1.0, -7.0, np.inf, -np.inf, np.nan]))
    np.testing.assert_array_equal(got, [np.inf, np.inf, np.inf, np.inf, np.inf, np.nan])
    x32 = POSITIVE[:20].astype(np.float32)
    assert fsp.gammaln(x32).dtype == np.float32
    np.testing.assert_allclose(fsp.gammaln(x32), [math.lgamma(v) for v in x32.astype(float)],
                               rtol=1e-5, atol=1e-5)


def test_digamma_against_scipy():
    special = pytest.importorskip("scipy.special")
    for x in (POSITIVE, NEGATIVE):
        np.testing.assert_allclose(fsp.digamma(x), special.digamma(x), rtol=1e-10, atol=1e-13)
    np.testing.assert_array_equal(fsp.digamma(np.array([0.0, -3.0, np.inf, np.nan])),
                                  [np.nan, np.nan, np.inf, np.nan])


def test_digamma_properties():
    # psi(1) = -euler_gamma, psi(x + 1) = psi(x) + 1/x, reflection against the recurrence.
    np.testing.assert_allclose(fsp.digamma(np.array([1.0])), [-np.euler_gamma], rtol=1e-15)
    x = np.concatenate([POSITIVE[1:-3], NEGATIVE])
    np.testing.assert_allclose(fsp.digamma(x + 1), np.asarray(fsp.digamma(x)) + 1 / x, rtol=1e-10,
                               atol=1e-10)


def test_polygamma_against_scipy():
    special = pytest.importorskip("scipy.special")
    x = np.concatenate([POSITIVE[2:-2], NEGATIVE])
    for n in range(7):
        np.testing.assert_allclose(fsp.polygamma(n, x), special.polygamma(n, x), rtol=1e-9,
                                   err_msg=f"n={n}")
    # poles: inf for odd n, NaN for even n (as JAX); +inf: the limit 0
    edge = np.array([0.0, -3.0, np.inf, -np.inf, np.nan])
    np.testing.assert_array_equal(fsp.polygamma(1, edge), [np.inf, np.inf, 0.0, np.nan, np.nan])
    np.testing.assert_array_equal(fsp.polygamma(2, edge), [np.nan, np.nan, 0.0, np.nan, np.nan])
    np.testing.assert_array_equal(fsp.polygamma(0, x), fsp.digamma(x))
    x32 = POSITIVE[2:20].astype(np.float32)
    assert fsp.polygamma(2, x32).dtype == np.float32
    np.testing.assert_allclose(fsp.polygamma(2, x32), special.polygamma(2, x32.astype(float)),
                               rtol=2e-5)
    for bad in (-1, 1.5, True, np.array([1, 2])):
        with pytest.raises(TypeError, match="n must be a non-negative integer"):
            fsp.polygamma(bad, x)


def test_polygamma_derivatives_to_any_order():
    """digamma' = polygamma(1), polygamma(n)' = polygamma(n + 1): the exact functions under
    grad, jit and vmap, to the fourth derivative of digamma."""
    x = np.array([0.3, 1.7, 4.2, -0.6, -2.4])
    d = fsp.digamma
    for n in range(1, 5):
        d = fg.grad(d)
        for g in (fg.vmap(d), fg.jit(fg.vmap(d)), fg.vmap(fg.jit(d))):
            np.testing.assert_allclose(g(x), fsp.polygamma(n, x), rtol=1e-12, err_msg=f"n={n}")
        check_grad(lambda v, n=n: fsp.polygamma(n, v), (x,), rtol=1e-5)

def test_special_derivatives():
    x = np.concatenate([POSITIVE[:-3], NEGATIVE])
    g = fg.vmap(fg.grad(fsp.gammaln))(x)
    np.testing.assert_allclose(g, fsp.digamma(x), rtol=1e-13, atol=1e-13)
    check_grad(fsp.gammaln, (np.array([0.3, 1.7, 4.2, -0.6, -2.4]),))
    check_grad(fsp.digamma, (np.array([0.3, 1.7, 4.2, -0.6, -2.4]),), rtol=1e-5)
    x = x[1:]  # not 1e-8: the recurrence would cancel catastrophically
    trig = fg.vmap(fg.grad(fsp.digamma))(x)  # trigamma: check with the recurrence
    np.testing.assert_allclose(fg.vmap(fg.grad(fsp.digamma))(x + 1), np.asarray(trig) - 1 / x ** 2,
                               rtol=1e-9, atol=1e-9)
    # jvp agrees; the third derivative of gammaln needs polygamma(2, x)
    _, t = fg.jvp(fsp.gammaln, (np.array([2.5]),), (np.array([1.0]),))
    np.testing.assert_allclose(t, fsp.digamma(np.array([2.5])), rtol=1e-15)
    np.testing.assert_allclose(fg.grad(fg.grad(fsp.digamma))(1.5), fsp.polygamma(2, 1.5),
                               rtol=1e-15)


def test_special_vmap_jit():
    x = POSITIVE[:12].reshape(3, 4)
    want = np.array([[math.lgamma(v) for v in row] for row in x])
    np.testing.assert_allclose(fg.vmap(fsp.gammaln)(x), want, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(fg.jit(fsp.gammaln)(x), want, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(fg.jit(fsp.digamma)(x), fsp.digamma(x), rtol=1e-15)
    np.testing.assert_allclose(fg.jit(fg.grad(lambda v: fnp.sum(fsp.gammaln(v))))(x),
                               fsp.digamma(x), rtol=1e-13)


def test_scipy_special_everyday_functions():
    import math

    import funcgrad as fg
    sp = fg.scipy.special
    x = np.linspace(-3, 3, 7)
    p = np.linspace(0.05, 0.95, 7)
    erf = np.vectorize(math.erf)
    np.testing.assert_allclose(sp.erf(x), erf(x), rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(sp.erfc(x), 1 - erf(x), rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(sp.erf(sp.erfinv(2 * p - 1)), 2 * p - 1, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(sp.expit(x), 1 / (1 + np.exp(-x)), rtol=1e-12)
    np.testing.assert_allclose(sp.logit(p), np.log(p / (1 - p)), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(sp.xlogy(np.array([0.0, 2.0]), np.array([0.0, 3.0])),
                               [0.0, 2 * np.log(3)], rtol=1e-12)
    np.testing.assert_allclose(sp.xlog1py(np.array([0.0, 2.0]), np.array([-1.0, 3.0])),
                               [0.0, 2 * np.log(4)], rtol=1e-12)
    np.testing.assert_allclose(sp.entr(np.array([0.0, 0.5, -1.0])),
                               [0.0, 0.5 * np.log(2), -np.inf], rtol=1e-12)
    np.testing.assert_allclose(sp.ndtr(x), 0.5 * (1 + erf(x / np.sqrt(2))), rtol=1e-7)
    np.testing.assert_allclose(sp.ndtr(sp.ndtri(p)), p, rtol=1e-7)
    np.testing.assert_allclose(sp.logsumexp(x, b=p), np.log(np.sum(p * np.exp(x))), rtol=1e-12)
    g = fg.grad(lambda a: fg.numpy.sum(sp.expit(a)))(x)
    np.testing.assert_allclose(g, np.exp(-x) / (1 + np.exp(-x)) ** 2, rtol=1e-10)
