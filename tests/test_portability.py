"""Portability check: the shared interpreter runs on any Array API standard namespace.

Every primitive's implementation (`impl(xp, ...)` in funcgrad/lax) is written against an array
namespace. Here that namespace is `array_api_strict`, the standard and nothing more (no NumPy
extras, no methods beyond the standard's), reached through funcgrad/backends/array_api.py. If an
implementation used a NumPy-only call or method, or converted an array to NumPy behind the
caller's back, these tests fail. The CuPy backend reuses the same implementations, so this is
the CPU-side proof that they will run there (DESIGN invariant 8).

Implicit host conversion is made an error for the whole module: `np.asarray(strict_array)`
(`__array__`) raises, so a silent round trip through NumPy cannot pass. Results are brought back
explicitly, through DLPack, to compare with NumPy's.

Primitives the standard cannot express are listed in UNSUPPORTED with the reason.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from rule_specs import NONDIFF, SPECS, SameValueGroup

import funcgrad as fg
import funcgrad.lax as _lax
import funcgrad.numpy as fnp
from funcgrad.backends import array_api
from funcgrad.core import Primitive, eval_jaxpr
from funcgrad.core.trace import axis_frame

# A check of the CPU interpreter on another array namespace: not part of GPU mode's run.
pytestmark = pytest.mark.cpu_only

S = pytest.importorskip("array_api_strict")


def _primitives():
    import importlib
    import pkgutil
    prims = {}
    for m in pkgutil.iter_modules(_lax.__path__):
        if m.name.startswith("_"):
            continue
        for v in vars(importlib.import_module(f"funcgrad.lax.{m.name}")).values():
            if isinstance(v, Primitive):
                prims[v.name] = v
    return prims


PRIMS = _primitives()

# Primitives whose implementation the Array API standard cannot express, and why.
UNSUPPORTED = {
    name: "scatter: the standard has no indexed assignment with index arrays (`x[idx] = v`) and "
          "no way to combine updates at repeated indices (NumPy's ufunc.at, cupyx.scatter_add)"
    for name in ("scatter", "scatter_add", "scatter_mul", "scatter_min", "scatter_max")
}
UNSUPPORTED["eig"] = "eig: the standard's linalg extension has no general (non-symmetric) " \
    "eigensolver"
UNSUPPORTED["bitcast_convert_type"] = ("the standard cannot reinterpret an array's bits as "
                                       "another type (NumPy's and CuPy's `view`)")

KEYS = [k for k, e in list(SPECS.items()) + list(NONDIFF.items())
        if e.cases is not None and e.name in PRIMS]


@pytest.fixture(scope="module", autouse=True)
def strict_namespace():
    """array_api_strict registered as a funcgrad namespace; implicit NumPy conversion refused."""
    ns = array_api.register(S)
    array_type = ns.array_type
    had = "__array__" in vars(array_type)
    old = vars(array_type).get("__array__")

    def refuse(self, *args, **kwargs):
        raise AssertionError("implicit conversion of an array_api_strict array to NumPy "
                             "(__array__): an implementation left the namespace")

    array_type.__array__ = refuse
    try:
        yield ns
    finally:
        if had:
            array_type.__array__ = old
        else:
            del array_type.__array__
        array_api.unregister(ns)


def to_strict(a):
    return S.asarray(np.asarray(a))


def to_numpy(x):
    """A strict array brought back explicitly (DLPack), for comparison."""
    return np.from_dlpack(x)


def check_close(got, want, ns, rtol=1e-6, atol=1e-9):
    assert type(got) is ns.array_type, f"expected an array_api_strict array, got {type(got)}"
    g = to_numpy(got)
    assert g.shape == np.shape(want) and g.dtype == np.asarray(want).dtype, (
        f"{g.dtype}{list(g.shape)} vs NumPy's {np.asarray(want).dtype}{list(np.shape(want))}")
    np.testing.assert_allclose(g, want, rtol=rtol, atol=atol)


port_settings = settings(max_examples=4, deadline=None, derandomize=True, database=None,
                         print_blob=False, suppress_health_check=list(HealthCheck),
                         phases=[Phase.explicit, Phase.generate])  # no slow shrinking


@pytest.mark.parametrize("key", [k for k in KEYS
                                 if (SPECS.get(k) or NONDIFF[k]).name not in UNSUPPORTED])
@port_settings
@given(data=st.data())
def test_primitive_runs_on_the_standard(key, data, strict_namespace):
    """impl(xp, ...) on array_api_strict arrays gives NumPy's result, as a strict array."""
    entry = SPECS.get(key) or NONDIFF[key]
    prim = PRIMS[entry.name]
    case = data.draw(entry.cases, label="case")
    ops = [np.asarray(a) for a in case.operands]
    frame = contextlib.nullcontext()
    axis_name = getattr(entry, "axis_name", None)
    if axis_name is not None:  # a collective: one lane's value, on lane 0 of a process axis
        frame = axis_frame(axis_name, ops[0].shape[0], group=SameValueGroup(ops[0].shape[0]))
        ops = [a[0] for a in ops]
    if not ops:  # no array operands (iota): nothing to run in another namespace
        return
    apply = getattr(entry, "apply", None) or (lambda p, o, kw: p.bind(*o, **kw))
    with frame:
        want = apply(prim, ops, case.params)
        got = apply(prim, [to_strict(a) for a in ops], case.params)
    wants = tuple(want) if isinstance(want, (tuple, list)) else (want,)
    gots = tuple(got) if isinstance(got, (tuple, list)) else (got,)
    assert len(wants) == len(gots)
    for g, w in zip(gots, wants):
        check_close(g, w, strict_namespace)


@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_unsupported_primitives_say_why(name, strict_namespace):
    """The listed primitives raise Unsupported (a NotImplementedError) on the standard (not a
    wrong answer, not a silent trip through NumPy)."""
    prim = PRIMS[name]
    if name == "bitcast_convert_type":
        with pytest.raises(NotImplementedError, match="Array API standard"):
            prim.bind(to_strict(np.zeros((5, 2))), new_dtype=np.dtype(np.int64))
        return
    with pytest.raises(array_api.Unsupported, match="Array API standard"):
        if name == "eig":
            prim.bind(to_strict(np.eye(2)), compute_eigenvectors=False)
            return
        operand = to_strict(np.zeros((5, 2)))
        indices = to_strict(np.array([[0], [2], [2]], np.int32))
        updates = to_strict(np.ones((3, 2)))
        prim.bind(operand, indices, updates)


def test_implicit_conversion_is_refused(strict_namespace):
    """The guard this module relies on: a strict array cannot silently become a NumPy array."""
    with pytest.raises(AssertionError, match="implicit conversion"):
        np.asarray(S.asarray([1.0, 2.0]))


# ---------------------------------------------------------------------------------------------
# Whole programs: traced once, evaluated by the interpreter on strict arrays

def _mlp_loss(params, x, y):
    h = x
    for w, b in params[:-1]:
        h = fg.nn.relu(h @ w + b)
    w, b = params[-1]
    logits = h @ w + b
    logp = fg.nn.log_softmax(logits, axis=-1)
    return -fnp.mean(fnp.sum(logp * y, axis=-1))


def _mlp_data(dtype=np.float64):
    rng = np.random.default_rng(0)
    sizes = [6, 8, 8, 3]
    params = [(rng.normal(0, 0.5, (m, n)).astype(dtype), rng.normal(0, 0.1, n).astype(dtype))
              for m, n in zip(sizes[:-1], sizes[1:])]
    x = rng.normal(size=(5, 6)).astype(dtype)
    y = np.eye(3, dtype=dtype)[rng.integers(0, 3, 5)]
    return params, x, y


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gradient_program_evaluates_on_the_standard(dtype, strict_namespace):
    """make_jaxpr(value_and_grad(loss)) traced with NumPy, evaluated on strict arrays."""
    params, x, y = _mlp_data(dtype)
    f = fg.value_and_grad(_mlp_loss)
    closed = fg.make_jaxpr(f)(params, x, y)
    flat = fg.tree_util.tree_leaves((params, x, y))
    want = eval_jaxpr(closed.jaxpr, closed.consts, *flat)
    got = eval_jaxpr(closed.jaxpr, closed.consts, *[to_strict(a) for a in flat])
    tol = 1e-5 if dtype == np.float32 else 1e-10
    for g, w in zip(got, want):
        check_close(g, w, strict_namespace, rtol=tol, atol=tol)


def test_numpy_api_programs_on_strict_arrays(strict_namespace):
    """Programs of funcgrad.numpy calls (traced with NumPy inputs), evaluated on strict arrays.

    (funcgrad.numpy itself, the user layer, accepts NumPy and CuPy arrays; it is the interpreter
    below it that must be portable.)"""
    rng = np.random.default_rng(1)
    a = rng.normal(size=(3, 4))
    b = rng.normal(size=(4,))
    cases = [
        lambda m, u, v: m.tanh(u) * v + 1.0,
        lambda m, u, v: m.sum(m.exp(u), axis=0),
        lambda m, u, v: m.where(u > 0, u, 0.5 * u),
        lambda m, u, v: m.concatenate([u, u[:1]], axis=0),
        lambda m, u, v: m.transpose(u)[::2] @ m.ones((3, 2)),
        lambda m, u, v: m.max(u, axis=1) - m.min(u),
        lambda m, u, v: m.cumsum(u, axis=1),
        lambda m, u, v: m.sort(v),
        lambda m, u, v: m.argmax(u, axis=1),
        lambda m, u, v: u[:, [0, 2]],
        lambda m, u, v: m.linalg.norm(u, axis=0) + m.mean(u ** 3, axis=0),
        lambda m, u, v: m.clip(m.round(u * 3), -1, 2).astype(m.int32),
    ]
    for fn in cases:
        closed = fg.make_jaxpr(lambda u, v, fn=fn: fn(fnp, u, v))(a, b)
        got = eval_jaxpr(closed.jaxpr, closed.consts, to_strict(a), to_strict(b))
        check_close(got[0], fn(np, a, b), strict_namespace, rtol=1e-12, atol=1e-12)


def test_vmap_and_control_flow_programs(strict_namespace):
    def body(c, x):
        c = fnp.tanh(c * 0.9 + x)
        return c, c * 2.0

    def f(xs):
        c, ys = fg.lax.scan(body, fnp.zeros(xs.shape[1:]), xs)
        return fg.lax.cond(fnp.sum(c) > 0, lambda: ys.sum(0), lambda: -ys.sum(0))

    xs = np.random.default_rng(2).normal(size=(2, 5, 3))
    g = fg.vmap(f)
    closed = fg.make_jaxpr(g)(xs)
    want = eval_jaxpr(closed.jaxpr, closed.consts, xs)
    got = eval_jaxpr(closed.jaxpr, closed.consts, to_strict(xs))
    for a, b in zip(got, want):
        check_close(a, b, strict_namespace, rtol=1e-12, atol=1e-12)
