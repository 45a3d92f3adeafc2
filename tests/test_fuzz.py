"""Fuzz: random chains of primitives under random nestings of grad, vmap, jit and jvp.

Each example draws a scalar function f: R^3 -> R as a chain of operations (each written twice:
with funcgrad and with plain NumPy), then wraps it in a random stack of transforms, each of which
again gives a scalar function of R^3, so they nest in any order:

    jit    g -> jit(g)
    vmap   g -> x |-> sum(vmap(g)(stack([x, x/2 + 0.1])))
    grad   g -> x |-> grad(g)(x) . w
    jvp    g -> x |-> jvp(g, (x,), (w,))[1]

The reference evaluates the NumPy chain step by step and replaces each derivative by central
finite differences (float64). Derandomized and bounded, so CI runs the same examples each time.
"""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import funcgrad as fg
import funcgrad.numpy as fnp
from funcgrad import lax

W = np.array([0.3, -0.7, 0.5])
H = 1e-3

# (name, funcgrad op, NumPy op): smooth on all of R^3 so finite differences are accurate.
# The funcgrad ops use fnp functions where an operand may be a host array next to a device
# result (FUNCGRAD_BACKEND=gpu: CuPy refuses NumPy operands in operators).
M = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, -0.5], [0.2, 0.0, 1.0]])
OPS = [
    ("sin", fnp.sin, np.sin),
    ("tanh", fnp.tanh, np.tanh),
    ("square", lambda x: x * x, lambda x: x * x),
    ("affine", lambda x: 0.5 * x + 1.0, lambda x: 0.5 * x + 1.0),
    ("exp", lambda x: fnp.exp(0.3 * x), lambda x: np.exp(0.3 * x)),
    ("center", lambda x: fnp.subtract(x, fnp.mean(x)), lambda x: x - np.mean(x)),
    ("reverse", lambda x: x[::-1], lambda x: x[::-1]),
    ("scale-by-sum", lambda x: fnp.multiply(x, fnp.sum(x)), lambda x: x * np.sum(x)),
    ("softplus", lambda x: fnp.log1p(fnp.exp(x)), lambda x: np.log1p(np.exp(x))),
    ("matvec", lambda x: fnp.matmul(M, x), lambda x: M @ x),
    ("cond", lambda x: lax.cond(True, fnp.sin, fnp.cos, x), np.sin),
    ("fori", lambda x: lax.fori_loop(0, 2, lambda i, c: fnp.tanh(c) + x, x),
     lambda x: np.tanh(np.tanh(x) + x) + x),
    ("cumsum", lambda x: fnp.cumsum(x), np.cumsum),
]
REDUCE = (lambda y: fnp.sum(fnp.sin(y)), lambda y: np.sum(np.sin(y)))


def _fd(ref, x, v):
    return (ref(x + H * v) - ref(x - H * v)) / (2 * H)


def _wrap(kind, fn, ref):
    if kind == "jit":
        return fg.jit(fn), ref
    if kind == "vmap":
        return (lambda x: fnp.sum(fg.vmap(fn)(fnp.stack([x, x / 2 + 0.1]))),
                lambda x: ref(x) + ref(x / 2 + 0.1))
    if kind == "grad":
        return (lambda x: fnp.sum(fnp.multiply(fg.grad(fn)(x), W)), lambda x: _fd(ref, x, W))
    if kind == "jvp":
        return lambda x: fg.jvp(fn, (x,), (W,))[1], lambda x: _fd(ref, x, W)
    raise ValueError(kind)


@settings(max_examples=80, derandomize=True, deadline=None,
          suppress_health_check=list(HealthCheck))
@given(ops=st.lists(st.sampled_from(range(len(OPS))), min_size=1, max_size=4),
       transforms=st.lists(st.sampled_from(["jit", "vmap", "grad", "jvp"]), max_size=4),
       x=st.lists(st.floats(-1.5, 1.5), min_size=3, max_size=3))
def test_random_compositions_match_stepwise_and_finite_differences(ops, transforms, x):
    derivs = [t for t in transforms if t in ("grad", "jvp")]
    transforms = [t for t in transforms if t not in ("grad", "jvp")] + derivs[:2]
    rng = np.random.default_rng(len(ops) * 7 + len(transforms))
    rng.shuffle(transforms)  # a random nesting, at most two derivative levels

    def fn(v):
        for i in ops:
            v = OPS[i][1](v)
        return REDUCE[0](v)

    def ref(v):
        for i in ops:
            v = OPS[i][2](v)
        return REDUCE[1](v)

    for kind in transforms:
        fn, ref = _wrap(kind, fn, ref)
    x = np.asarray(x, np.float64)
    got = np.asarray(fn(x))
    want = ref(x)
    assert got.shape == ()
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5,
                               err_msg=f"ops={[OPS[i][0] for i in ops]} transforms={transforms}")


@settings(max_examples=25, derandomize=True, deadline=None,
          suppress_health_check=list(HealthCheck))
@given(ops=st.lists(st.sampled_from(range(len(OPS))), min_size=1, max_size=5))
def test_random_chains_agree_across_modes(ops):
    """grad (reverse), jacfwd (forward) and jit(grad) give the same gradient."""
    def fn(v):
        for i in ops:
            v = OPS[i][1](v)
        return REDUCE[0](v)

    x = np.array([0.2, -0.4, 0.9])
    g = fg.grad(fn)(x)
    np.testing.assert_allclose(fg.jacfwd(fn)(x), g, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fg.jit(fg.grad(fn))(x), g, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fg.vmap(fg.grad(fn))(np.stack([x, x]))[1], g, rtol=1e-10,
                               atol=1e-12)
