"""fg.random draws JAX's default random streams (JAX 0.10, jax_threefry_partitionable=True).

The expected arrays were recorded with JAX by tests/data/make_jax_random_streams.py (JAX is not
needed here). Every case must match bit for bit, eagerly, under jit, under vmap over a batch of
keys and inside grad; the one documented exception is float64 normal / truncated_normal, where
XLA calls the C library's log (and erf) and funcgrad NumPy's: those may differ by an ulp or two
in a few elements (docs/differences.md).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import funcgrad as fg
import funcgrad.numpy as fnp
from funcgrad import random

DATA = os.path.join(os.path.dirname(__file__), "data")
with open(os.path.join(DATA, "jax_random_streams.json")) as _f:
    META = json.load(_f)
with np.load(os.path.join(DATA, "jax_random_streams.npz"), allow_pickle=False) as _z:
    EXPECTED = {k: _z[k] for k in _z.files}
CASES = META["cases"]
ULP_TOLERANT = {"normal", "truncated_normal"}  # in float64 only


def _value(v):
    if isinstance(v, dict) and "array" in v:
        return np.array(v["array"], v["dtype"])
    if isinstance(v, list):
        return tuple(v)
    return v


def _call(case, key, fn=None):
    if case["fn"] == "key":
        return random.key(case["seed"])
    if case["fn"] == "initializer":  # jax.nn.initializers.<name>(*fargs)(key, shape, dtype)
        name, fargs, shape, dtype = case["args"]
        return getattr(fg.nn.initializers, name)(*fargs)(key, tuple(shape), np.dtype(dtype))
    fn = fn or getattr(random, case["fn"])
    return fn(key, *[_value(a) for a in case["args"]], **case["kwargs"])


def _is_f64_float_case(case, expected):
    return case["fn"] in ULP_TOLERANT and expected.dtype == np.float64


def _assert_matches(case, got, expected):
    got = np.asarray(got)
    if case["fn"] in ("permutation", "choice", "categorical"):
        got = got.astype(expected.dtype)  # NumPy's int64 indices where JAX's are int32
    assert got.shape == expected.shape, (case["id"], got.shape, expected.shape)
    assert got.dtype == expected.dtype, (case["id"], got.dtype, expected.dtype)
    if _is_f64_float_case(case, expected):
        ulps = np.abs(got.view(np.int64) - expected.view(np.int64))
        assert ulps.max() <= 2, (case["id"], ulps.max())
        assert np.mean(ulps != 0) < 0.01, (case["id"], np.mean(ulps != 0))
        return
    np.testing.assert_array_equal(got, expected, err_msg=case["id"])


def test_recorded_with_jax_defaults():
    assert META["threefry_partitionable"] is True
    assert META["jax_version"].startswith("0.10")
    assert {c["fn"] for c in CASES} >= {
        "key", "split", "fold_in", "bits", "uniform", "normal", "randint", "bernoulli",
        "categorical", "permutation", "truncated_normal", "initializer"}


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_eager_matches_jax(case):
    _assert_matches(case, _call(case, random.key(case["seed"])), EXPECTED[case["id"]])


# Under the transforms: a representative case of each function (the full list is slow to jit).
_FIRST_OF_EACH = {}
for _c in CASES:
    if _c["fn"] != "key":
        _FIRST_OF_EACH.setdefault((_c["fn"], _c["id"].endswith("x64")), _c)
_SOME = list(_FIRST_OF_EACH.values()) + [c for c in CASES if c["fn"] in (
    "normal", "truncated_normal", "randint", "categorical") and not c["id"].endswith("x64")]


@pytest.mark.parametrize("case", _SOME, ids=[c["id"] for c in _SOME])
def test_jit_matches_jax(case):
    f = fg.jit(lambda k: _call(case, k))
    _assert_matches(case, f(random.key(case["seed"])), EXPECTED[case["id"]])


@pytest.mark.parametrize("case", _SOME, ids=[c["id"] for c in _SOME])
def test_vmap_over_keys_matches_jax(case):
    """A batch of three keys, the recorded one in the middle: row 1 is the recorded draw."""
    keys = np.stack([random.key(case["seed"] + 1000), random.key(case["seed"]),
                     random.fold_in(random.key(case["seed"]), 5)])
    out = fg.vmap(lambda k: _call(case, k))(keys)
    _assert_matches(case, np.asarray(out)[1], EXPECTED[case["id"]])


@pytest.mark.parametrize("fn", ["uniform", "normal", "truncated_normal", "gumbel"])
def test_inside_grad_matches_jax(fn):
    """Noise drawn inside a differentiated function is the recorded draw: the gradient of
    sum(w * noise) with respect to w is the noise itself, eagerly and under jit."""
    case = next(c for c in CASES if c["fn"] == fn and not c["id"].endswith("x64")
                and c["args"] and c["args"][-1] == "float32")
    expected = EXPECTED[case["id"]]
    key = random.key(case["seed"])

    def loss(w):
        return fnp.sum(w * _call(case, key))

    w = np.ones(expected.shape, np.float32)
    np.testing.assert_array_equal(fg.grad(loss)(w), expected)
    np.testing.assert_array_equal(fg.jit(fg.grad(loss))(w), expected)
