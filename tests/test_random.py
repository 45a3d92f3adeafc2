"""fg.random: the contract.

  Threefry-2x32     Random123's known-answer vectors; JAX's streams (test_random_streams.py)
  determinism       same key, same numbers; different keys (split, fold_in) differ
  transforms        eager == jit == each row of vmap over a batch of keys, for every function
  statistics        moments of uniform / normal (1e5 samples, fixed keys), chi-square of
                    bucketed bits, frequencies of bernoulli / categorical / randint / choice
  validity          permutations are permutations, choice without replacement is distinct,
                    truncated normals stay inside their bounds, dtypes
  bad input         anything but a uint32[2] key is rejected, naming what is expected
  large draws       eager draws computed a chunk of counters at a time equal the whole draw;
                    their memory beyond the output is bounded by a chunk (tracemalloc)
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from numeric import GPU_MODE

import funcgrad as fg
from funcgrad import random

N = 100_000


def chi2(counts, expected):
    counts = np.asarray(counts, np.float64)
    return float(np.sum((counts - expected) ** 2 / expected))


# ---------------------------------------------------------------------------------------------
# Threefry and the key streams


@pytest.mark.parametrize("key,ctr,out", [
    ((0, 0), (0, 0), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
])
def test_threefry_known_answers(key, ctr, out):
    u = lambda v: np.array([v], np.uint32)
    y0, y1 = random.threefry_2x32(np.uint32(key[0]), np.uint32(key[1]), u(ctr[0]), u(ctr[1]))
    assert (int(y0[0]), int(y1[0])) == out


def test_threefry_under_jit_and_vmap():
    k0, k1 = np.uint32(0x13198A2E), np.uint32(0x03707344)
    x0 = np.array([0x243F6A88, 0, 0xFFFFFFFF], np.uint32)
    x1 = np.array([0x85A308D3, 0, 0xFFFFFFFF], np.uint32)
    eager = random.threefry_2x32(k0, k1, x0, x1)
    jitted = fg.jit(lambda a, b: random.threefry_2x32(k0, k1, a, b))(x0, x1)
    mapped = fg.vmap(lambda a, b: random.threefry_2x32(k0, k1, a, b))(x0, x1)
    for e, j, m in zip(eager, jitted, mapped):
        np.testing.assert_array_equal(e, j)
        np.testing.assert_array_equal(e, m)
    assert (int(eager[0][0]), int(eager[1][0])) == (0xC4923A9C, 0x483DF7A0)


def test_key_from_seed():
    assert random.key(0).dtype == np.uint32 and random.key(0).shape == (2,)
    np.testing.assert_array_equal(random.key(42), [0, 42])
    np.testing.assert_array_equal(random.key(2 ** 32 + 5), [1, 5])
    np.testing.assert_array_equal(random.key(-1), [2 ** 32 - 1, 2 ** 32 - 1])
    np.testing.assert_array_equal(fg.jit(random.key)(np.int64(2 ** 32 + 5)), [1, 5])
    np.testing.assert_array_equal(fg.jit(random.key)(np.int32(7)), [0, 7])
    assert random.PRNGKey is random.key


def test_streams_match_jax():
    """A few values printed by jax.random (JAX 0.10's default, partitionable Threefry); the
    full recorded comparison is tests/test_random_streams.py."""
    np.testing.assert_array_equal(random.split(random.key(0)),
                                  [[1797259609, 2579123966], [928981903, 3453687069]])
    np.testing.assert_array_equal(random.uniform(random.key(0), (3,)),
                                  np.array([0.947667, 0.9785799, 0.33229148], np.float32))
    np.testing.assert_array_equal(random.normal(random.key(0), (3,)),
                                  np.array([1.6226422, 2.0252647, -0.43359444], np.float32))


def test_split_and_fold_in_shapes():
    k = random.key(1)
    assert random.split(k, 5).shape == (5, 2)
    assert random.split(k, (2, 3)).shape == (2, 3, 2)
    assert random.split(k, 5).dtype == np.uint32
    # The first keys of a longer split are not those of a shorter one: the counters halve.
    assert random.fold_in(k, 3).shape == (2,)
    assert random.fold_in(k, 3).dtype == np.uint32


# ---------------------------------------------------------------------------------------------
# Determinism


def _all(k):
    """One draw of every function, as a tuple of arrays."""
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.0], np.float32)
    return (random.bits(k, (5,)), random.bits(k, (3,), np.uint8), random.bits(k, (2,), np.uint64),
            random.uniform(k, (4,)), random.uniform(k, (3,), np.float64, -2.0, 3.0),
            random.normal(k, (2, 3)), random.truncated_normal(k, -1.0, 2.0, (4,)),
            random.bernoulli(k, 0.3, (6,)), random.categorical(k, np.zeros((2, 5))),
            random.randint(k, (6,), -3, 9), random.permutation(k, 7),
            random.permutation(k, np.arange(12.0).reshape(4, 3), axis=1, independent=True),
            random.choice(k, 6, (3,), replace=False), random.choice(k, 5, (4,), p=p),
            random.choice(k, 5, (3,), replace=False, p=p), random.gumbel(k, (3,)),
            random.split(k, 3), random.fold_in(k, 12))


def test_same_key_same_numbers_and_different_keys_differ():
    a, b = _all(random.key(3)), _all(random.key(3))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    c = _all(random.key(4))
    assert sum(not np.array_equal(x, y) for x, y in zip(a, c)) >= len(a) - 3
    k = random.key(5)
    k1, k2 = random.split(k)
    # As in JAX's default ("fold-like") split, key i of a split is fold_in(key, i).
    np.testing.assert_array_equal(k1, random.fold_in(k, 0))
    np.testing.assert_array_equal(random.split(k, 4)[3], random.fold_in(k, 3))
    draws = [random.uniform(kk, (8,)) for kk in (k, k1, k2, random.fold_in(k, 2),
                                                  random.fold_in(k, 7), random.split(k1)[0])]
    for i in range(len(draws)):
        for j in range(i):
            assert not np.array_equal(draws[i], draws[j])


def test_eager_jit_and_vmap_agree():
    keys = random.split(random.key(11), 4)
    jitted = fg.jit(_all)
    mapped = fg.vmap(_all)(keys)
    for i in range(4):
        eager = _all(keys[i])
        for e, j, m in zip(eager, jitted(keys[i]), mapped):
            if e.dtype.kind == "f" and (GPU_MODE or fg.config.read("cpu_backend") == "llvm"):
                # the jitted fused float32 kernel (normal, truncated_normal, gumbel) may differ
                # from eager NumPy / CuPy in the last ulps (the kernels' own exp/log/erfinv)
                np.testing.assert_allclose(e, j, rtol=1e-6)
            else:
                np.testing.assert_array_equal(e, j)
            np.testing.assert_array_equal(e, m[i])
            assert e.dtype == j.dtype == m.dtype


def test_vmap_normal_over_keys_equals_stacking():
    keys = random.split(random.key(0), 4)
    out = fg.vmap(lambda k: random.normal(k, (3, 2)))(keys)
    np.testing.assert_array_equal(out, np.stack([random.normal(k, (3, 2)) for k in keys]))


def test_traced_fold_in_and_seed():
    k = random.key(9)
    f = fg.jit(lambda k, i: random.uniform(random.fold_in(k, i), (3,)))
    np.testing.assert_array_equal(f(k, np.int32(5)), random.uniform(random.fold_in(k, 5), (3,)))
    steps = fg.vmap(lambda i: random.fold_in(k, i))(np.arange(3))
    np.testing.assert_array_equal(steps[2], random.fold_in(k, 2))


# ---------------------------------------------------------------------------------------------
# Statistics (fixed keys: these are deterministic; thresholds are generous, several sigma)


def test_uniform_moments_and_range():
    u = random.uniform(random.key(0), (N,))
    assert u.dtype == np.float32
    assert 0.0 <= u.min() and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.005
    assert abs(u.var() - 1 / 12) < 0.003
    v = random.uniform(random.key(1), (N,), minval=-3.0, maxval=5.0)
    assert -3.0 <= v.min() and v.max() < 5.0 and abs(v.mean() - 1.0) < 0.04


def test_normal_moments():
    x = random.normal(random.key(1), (N,)).astype(np.float64)
    assert x.dtype == np.float64 and np.all(np.isfinite(x))
    assert abs(x.mean()) < 0.02
    assert abs(x.var() - 1) < 0.03
    assert abs(np.mean(x ** 3)) < 0.05
    assert abs(np.mean(x ** 4) - 3) < 0.15
    assert abs(np.mean(np.abs(x) < 1.0) - 0.6827) < 0.01
    d = random.normal(random.key(2), (N,), np.float64)
    assert d.dtype == np.float64 and abs(d.mean()) < 0.02 and abs(d.var() - 1) < 0.03


def test_bits_chi_square():
    """Top and bottom byte of 32-bit words, and 8-bit draws, are uniform over 256 buckets:
    chi-square with 255 degrees of freedom (mean 255, sd 22.6); threshold 400."""
    b = random.bits(random.key(0), (N,))
    assert b.dtype == np.uint32
    expected = N / 256
    assert chi2(np.bincount(b >> 24, minlength=256), expected) < 400
    assert chi2(np.bincount(b & 255, minlength=256), expected) < 400
    b8 = random.bits(random.key(1), (N,), np.uint8)
    assert b8.dtype == np.uint8
    assert chi2(np.bincount(b8, minlength=256), expected) < 400
    b64 = random.bits(random.key(2), (N // 2,), np.uint64)
    assert chi2(np.bincount((b64 >> np.uint64(56)).astype(np.int64), minlength=256),
                N / 2 / 256) < 400
    u = random.uniform(random.key(3), (N,))
    assert chi2(np.histogram(u, 100, (0, 1))[0], N / 100) < 200  # 99 dof


def test_truncated_normal():
    x = random.truncated_normal(random.key(0), -1.0, 2.0, (N,))
    assert x.dtype == np.float32 and x.min() > -1.0 and x.max() < 2.0
    # mean of N(0,1) truncated to (a, b): (phi(a) - phi(b)) / (Phi(b) - Phi(a))
    phi = lambda t: np.exp(-t * t / 2) / np.sqrt(2 * np.pi)
    mean = (phi(-1.0) - phi(2.0)) / (0.97724987 - 0.15865525)
    assert abs(x.mean() - mean) < 0.01
    y = random.truncated_normal(random.key(1), np.array([-1.0, 0.0]), 1.0)
    assert y.shape == (2,) and y[1] > 0


def test_bernoulli_and_categorical_frequencies():
    b = random.bernoulli(random.key(0), 0.3, (N,))
    assert b.dtype == bool and abs(b.mean() - 0.3) < 0.006
    p = np.array([0.1, 0.2, 0.3, 0.4])
    c = random.categorical(random.key(1), np.log(p), shape=(N,))
    assert c.shape == (N,) and c.min() >= 0 and c.max() <= 3
    assert chi2(np.bincount(c, minlength=4), N * p) < 25  # 3 dof
    # batched logits along a non-last axis; an impossible class is never drawn
    with np.errstate(divide="ignore"):
        logits = np.log(np.array([[0.5, 0.0], [0.5, 1.0]]))
    d = random.categorical(random.key(2), logits, axis=0, shape=(1000, 2))
    assert d.shape == (1000, 2) and np.all(d[:, 1] == 1)


def test_randint_range_and_frequencies():
    r = random.randint(random.key(0), (N,), -3, 7)
    assert r.dtype == np.int32 and r.min() == -3 and r.max() == 6
    assert chi2(np.bincount(r + 3, minlength=10), N / 10) < 40  # 9 dof
    r64 = random.randint(random.key(1), (5,), 0, 2 ** 40, np.int64)
    assert r64.dtype == np.int64 and r64.max() < 2 ** 40
    lo = np.array([0, 10, 100])
    r2 = np.asarray(random.randint(random.key(2), (1000, 3), lo, lo + 5))
    assert np.all((r2 >= lo) & (r2 < lo + 5))


def test_permutation_and_choice():
    k = random.key(0)
    p = random.permutation(k, 50)
    assert sorted(p.tolist()) == list(range(50))
    x = np.arange(20.0).reshape(5, 4)
    px = random.permutation(k, x, axis=0)
    assert sorted(map(tuple, px.tolist())) == sorted(map(tuple, x.tolist()))
    ind = random.permutation(k, x, axis=1, independent=True)
    assert all(sorted(row) == sorted(orig) for row, orig in zip(ind.tolist(), x.tolist()))
    # every position is equally likely to hold element 0
    firsts = fg.vmap(lambda k: random.permutation(k, 5))(random.split(k, 5000))
    assert chi2(np.bincount(np.argmax(firsts == 0, axis=1), minlength=5), 1000) < 30

    c = random.choice(k, 10, (8,), replace=False)
    assert len(set(c.tolist())) == 8
    w = np.array([0.5, 0.0, 0.25, 0.25])
    cw = random.choice(random.key(1), 4, (N,), p=w)
    assert np.all(cw != 1) and chi2(np.bincount(cw, minlength=4)[[0, 2, 3]], N * w[[0, 2, 3]]) < 20
    cw2 = random.choice(random.key(2), 4, (3,), replace=False, p=w)
    assert sorted(cw2.tolist()) == [0, 2, 3]
    rows = random.choice(random.key(3), x, (2,), replace=False)
    assert rows.shape == (2, 4) and all(r in x.tolist() for r in rows.tolist())
    with pytest.raises(ValueError, match="without replacement"):
        random.choice(k, 3, (4,), replace=False)


def test_float_dtypes():
    for dt in (np.float16, np.float32, np.float64):
        u = random.uniform(random.key(0), (1000,), dt)
        assert u.dtype == dt and 0 <= u.min() and u.max() < 1
        assert random.normal(random.key(0), (3,), dt).dtype == dt
    with pytest.raises(TypeError, match="floating"):
        random.uniform(random.key(0), (3,), np.int32)


# ---------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("bad", [
    np.array([0.0, 1.0], np.float32),
    np.array([0, 1], np.int32),
    np.array([1, 2, 3], np.uint32),
    np.zeros((4, 2), np.uint32),
    0,
    [0, 1],
    None,
])
def test_keys_that_are_not_keys_are_rejected(bad):
    for fn in (lambda k: random.normal(k, (2,)), lambda k: random.split(k),
               lambda k: random.fold_in(k, 1), lambda k: random.uniform(k),
               lambda k: random.permutation(k, 3)):
        with pytest.raises((TypeError, ValueError), match=r"uint32\[2\]"):
            fn(bad)


def test_batched_key_error_suggests_vmap():
    with pytest.raises(ValueError, match="vmap"):
        random.normal(random.split(random.key(0), 3), (2,))


def test_rejected_under_jit_too():
    with pytest.raises(TypeError, match=r"uint32\[2\]"):
        fg.jit(lambda k: random.normal(k, (2,)))(np.zeros(2, np.float32))


def test_bad_seed():
    with pytest.raises(TypeError):
        random.key(1.5)
    with pytest.raises(ValueError):
        random.key(2 ** 70)


def test_same_numbers_on_the_gpu():
    """Integer streams are exact on every backend; floats agree to rounding (erf_inv)."""
    cp = pytest.importorskip("cupy")
    if not hasattr(fg, "device_put"):
        pytest.skip("no fg.device_put in this build")
    try:
        kg = fg.device_put(random.key(7), "gpu")
    except Exception as e:  # no usable GPU here
        pytest.skip(f"no GPU: {e}")
    kc = random.key(7)
    for f in (lambda k: random.bits(k, (1000,)), lambda k: random.split(k, 3),
              lambda k: random.uniform(k, (1000,)), lambda k: random.permutation(k, 50),
              lambda k: random.randint(k, (100,), 0, 7)):
        np.testing.assert_array_equal(cp.asnumpy(f(kg)), f(kc))
        np.testing.assert_array_equal(cp.asnumpy(fg.jit(f)(kg)), f(kc))
    np.testing.assert_allclose(cp.asnumpy(random.normal(kg, (1000,))),
                               random.normal(kc, (1000,)), rtol=1e-5, atol=1e-6)


def test_dtype_none_means_the_default_as_in_jax():
    k = fg.random.key(3)
    assert fg.random.uniform(k, (2,), None).dtype == np.float32
    assert fg.random.normal(k, (2,), dtype=None).dtype == np.float32
    assert fg.random.truncated_normal(k, -1.0, 1.0, (2,), None).dtype == np.float32
    assert fg.random.randint(k, (2,), 0, 5, dtype=None).dtype == np.int32
    assert fg.random.bits(k, (2,), None).dtype == np.uint32


def test_key_data_and_wrap_key_data():
    """funcgrad's keys are their uint32 data (as JAX's legacy PRNGKey keys): key_data and
    wrap_key_data check and pass them through, so JAX key data (jax.random.key_data) works."""
    k = random.key(42)
    np.testing.assert_array_equal(random.key_data(k), [0, 42])
    keys = random.split(k, 3)
    np.testing.assert_array_equal(random.wrap_key_data(random.key_data(keys)), keys)
    wrapped = random.wrap_key_data(np.array([0, 42], np.uint32), impl="threefry2x32")
    np.testing.assert_array_equal(random.normal(wrapped, (3,)), random.normal(k, (3,)))
    with pytest.raises(TypeError, match=r"uint32\[\.\.\., 2\]"):
        random.key_data(np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="rbg"):
        random.wrap_key_data(np.zeros(2, np.uint32), impl="rbg")


# ---------------------------------------------------------------------------------------------
# Large eager draws: a chunk of counters at a time


def _chunkable(k):
    """Draws of every sampler with scalar operands (the ones drawn in chunks), odd sizes."""
    return {
        "bits8": random.bits(k, (301,), np.uint8), "bits64": random.bits(k, (7, 43), np.uint64),
        "uniform16": random.uniform(k, (300,), np.float16),
        "uniform": random.uniform(k, (3, 101), minval=-3.0, maxval=5.0),
        "uniform64": random.uniform(k, (301,), np.float64, 0.0, 2.0),
        "normal": random.normal(k, (2, 3, 55)), "normal64": random.normal(k, (301,), np.float64),
        "truncated": random.truncated_normal(k, -1.5, 0.5, (301,)),
        "gumbel": random.gumbel(k, (301,)), "bernoulli": random.bernoulli(k, 0.3, (301,)),
        "randint8": random.randint(k, (301,), -100, 100, np.int8),
        "randint64": random.randint(k, (301,), -2 ** 40, 2 ** 40, np.int64),
        "categorical": random.categorical(k, np.zeros(5), shape=(61, )),
        "permutation": random.permutation(k, 300),
    }


def test_eager_draws_in_chunks_equal_the_whole_draw(monkeypatch):
    """An eager draw larger than a chunk is sampled chunk by chunk into its output; every
    element is a function of its own counter, so the numbers are the whole draw's."""
    k = random.key(21)
    whole = _chunkable(k)
    for name in ("_CHUNK", "_DEVICE_CHUNK"):
        monkeypatch.setattr(random, name, 64)
    chunked = _chunkable(k)
    for name, w in whole.items():
        assert chunked[name].dtype == w.dtype and chunked[name].shape == w.shape, name
        np.testing.assert_array_equal(chunked[name], w, err_msg=name)


@pytest.mark.cpu_only  # tracemalloc sees NumPy's allocations
@pytest.mark.parametrize("draw", ["normal", "truncated_normal", "gumbel", "uniform", "bits",
                                  "randint", "bernoulli"])
def test_large_eager_draw_memory_is_bounded(draw):
    """The allocations of an eager draw of 2M values (NumPy reports them to tracemalloc) beyond
    its output stay under the output's size: the sampler's temporaries (a dozen arrays, some
    float64) live a chunk at a time, where a whole draw held ~90 bytes per value."""
    n = 1 << 21
    k = random.key(0)
    fns = {"normal": lambda: random.normal(k, (n,)),
           "truncated_normal": lambda: random.truncated_normal(k, -2.0, 2.0, (n,)),
           "gumbel": lambda: random.gumbel(k, (n,)),
           "uniform": lambda: random.uniform(k, (n,), minval=-1.0),
           "bits": lambda: random.bits(k, (n,)),
           "randint": lambda: random.randint(k, (n,), 0, 1000),
           "bernoulli": lambda: random.bernoulli(k, 0.5, (n,))}
    fns[draw]()  # warm-up: first-call caches are not the draw's
    tracemalloc.start()
    try:
        out = fns[draw]()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    beyond = peak - out.nbytes
    assert beyond <= max(out.nbytes, 8 << 20), (draw, peak, out.nbytes)


def test_threefry_batch_of_keys_equals_one_key_at_a_time():
    """Keys that are arrays (a batch) take the whole-array path of threefry2x32, a single key
    the blockwise in-place one: the same words."""
    keys = np.array([[0], [0x13198A2E], [0xFFFFFFFF]], np.uint32)
    x1 = np.arange(40_000, dtype=np.uint32) * np.uint32(2654435761)
    y0, y1 = random.threefry_2x32(keys, np.uint32(0x03707344), np.uint32(7), x1)
    assert y0.shape == y1.shape == (3, 40_000)
    for i in range(3):
        z0, z1 = random.threefry_2x32(keys[i, 0], np.uint32(0x03707344), np.uint32(7), x1)
        np.testing.assert_array_equal(y0[i], z0)
        np.testing.assert_array_equal(y1[i], z1)
