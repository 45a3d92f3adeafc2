"""fg.flatten_util.ravel_pytree (as jax.flatten_util) and the fg.Array type."""

from __future__ import annotations

import numpy as np
import pytest

import funcgrad as fg
import funcgrad.numpy as fnp
from funcgrad.flatten_util import ravel_pytree


def test_ravel_and_unravel_round_trip():
    tree = {"a": np.arange(6.0).reshape(2, 3), "b": [np.full(2, 1.5, np.float32), np.arange(3)],
            "c": None}
    flat, unravel = ravel_pytree(tree)
    assert flat.shape == (11,) and flat.dtype == np.float64  # the leaves' common dtype
    np.testing.assert_array_equal(flat, [0, 1, 2, 3, 4, 5, 1.5, 1.5, 0, 1, 2])
    back = unravel(flat)
    assert fg.tree_util.tree_structure(back) == fg.tree_util.tree_structure(tree)
    for x, y in zip(fg.tree_util.tree_leaves(back), fg.tree_util.tree_leaves(tree)):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)
    empty, unravel_empty = ravel_pytree({})
    assert empty.shape == (0,) and empty.dtype == np.float32 and unravel_empty(empty) == {}


def test_ravel_pytree_under_transforms():
    params = {"w": np.arange(6.0).reshape(2, 3), "b": np.ones(3)}
    flat, unravel = ravel_pytree(params)
    g = fg.grad(lambda p: fnp.sum(ravel_pytree(p)[0] ** 2))(params)
    np.testing.assert_allclose(g["w"], 2 * params["w"])
    np.testing.assert_array_equal(fg.jit(lambda p: ravel_pytree(p)[0])(params), flat)
    rows = fg.vmap(lambda v: unravel(v)["w"])(np.stack([flat, 2 * flat]))
    np.testing.assert_array_equal(rows[1], 2 * params["w"])
    # the Hessian of a loss of a whole parameter tree, as one matrix
    loss = lambda v: fnp.sum(unravel(v)["w"] ** 3) + fnp.sum(unravel(v)["b"] ** 2)
    h = fg.hessian(loss)(flat)
    np.testing.assert_allclose(np.diag(h), np.concatenate([2 * np.ones(3),  # "b" sorts first
                                                           6 * params["w"].ravel()]))


def test_unravel_rejects_a_wrong_vector():
    _, unravel = ravel_pytree({"a": np.ones(3)})
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        unravel(np.ones(4))
    with pytest.raises(TypeError, match="dtype float64"):
        unravel(np.ones(3, np.float32))


def test_array_type():
    assert isinstance(np.ones(2), fg.Array) and isinstance(np.array(1.0), fg.Array)
    assert not isinstance(1.0, fg.Array) and not isinstance([1, 2], fg.Array)
    assert not isinstance(np.float32(1), fg.Array)  # a NumPy scalar is ArrayLike, as in JAX
    seen = []
    fg.grad(lambda x: (seen.append(isinstance(x, fg.Array)), fnp.sum(x))[1])(np.ones(2))
    fg.jit(lambda x: (seen.append(isinstance(x, fg.Array)), x)[1])(np.ones(2))
    assert seen == [True, True]

    def annotated(x: fg.Array, y: fg.typing.ArrayLike) -> fg.Array:
        return x * y

    assert annotated.__annotations__["x"] == "fg.Array"
