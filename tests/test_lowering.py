"""Every elementwise primitive is lowered on every backend, and the compiled CPU kernels compute
what the NumPy path computes.

A primitive's lowerings all come from its one implementation (funcgrad/core/lowering.py): run
on symbolic scalars it gives an expression that the CUDA and LLVM generators translate. These
tests fail when a primitive (or a dtype it accepts) has no lowering on some backend, when an
equation CuPy could fuse is left out of its kernels, and when a compiled CPU kernel disagrees
with NumPy: bit for bit for arithmetic, comparisons, selects, casts, integer and bool
operations; within a few ulp for the float32 exp and log the kernels compute themselves. Inputs
include NaN, +-inf, +-0, subnormals, and the extremes of every integer type.
"""

from __future__ import annotations

import numpy as np
import pytest

import funcgrad as fg
from funcgrad.backends import cuda_source, cupy_backend, llvm_codegen, llvm_runtime
from funcgrad.core import Primitive, ShapedArray
from funcgrad.core.lowering import elementwise_expr, single_ufunc
from funcgrad.lax import elementwise as ew
from funcgrad.transforms import fusion

pytestmark = pytest.mark.cpu_only

DTYPES = [np.dtype(d) for d in (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8,
                                np.uint16, np.uint32, np.uint64, np.float32, np.float64)]
PRIMS = sorted((p for p in vars(ew).values()
                if isinstance(p, Primitive) and getattr(p, "elementwise", False)),
               key=lambda p: p.name)
PARAMS = {"integer_pow": [{"y": 0}, {"y": 1}, {"y": 2}, {"y": 3}, {"y": 5}, {"y": -2}],
          "convert_element_type": [{"new_dtype": d, "weak_type": False} for d in DTYPES]}
_NEG_EXP_OK = ("f",)  # integer_pow with a negative exponent: floats only


def _arity(prim):
    if prim.name == "select_n":
        return None
    return prim.abstract_eval.__code__.co_argcount


def signatures(prim):
    """(operand dtypes, params) for every dtype (and params) the primitive accepts."""
    out = []
    for dt in DTYPES:
        for params in PARAMS.get(prim.name, [{}]):
            if prim.name == "integer_pow" and params["y"] < 0 and dt.kind not in _NEG_EXP_OK:
                continue
            if prim.name == "select_n":
                cases = [[np.dtype(bool), dt, dt], [np.dtype(np.int32), dt, dt, dt]]
            else:
                cases = [[dt] * _arity(prim)]
            for dts in cases:
                try:
                    prim.abstract_eval(*[ShapedArray((), d) for d in dts], **params)
                except (TypeError, ValueError):
                    continue
                out.append((dts, params))
    return out


CASES = [(p, dts, params) for p in PRIMS for dts, params in signatures(p)]


def _id(case):
    p, dts, params = case
    extra = "".join(f"-{v.name if isinstance(v, np.dtype) else v}" for k, v in params.items()
                    if k != "weak_type")
    return f"{p.name}-{'-'.join(d.name for d in dts)}{extra}"


def test_every_elementwise_primitive_is_checked():
    assert {p.name for p, _, _ in CASES} == {p.name for p in PRIMS}
    assert len(CASES) > 200


# ---------------------------------------------------------------------------------------------
# Every backend has a lowering

def _eqn(prim, dts, params, shape=(7,)):
    """The program applying `prim` once, and that equation (None if tracing folded it away)."""
    closed = fg.make_jaxpr(lambda *xs: prim.bind(*xs, **params))(
        *[np.zeros(shape, d) for d in dts])
    (eqn,) = [e for e in closed.jaxpr.eqns if e.primitive is prim] or [None]
    return closed, eqn


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_every_backend_lowers_it(case):
    prim, dts, params = case
    ins, out = elementwise_expr(prim, dts, params)        # the expression all derive from
    aval = prim.abstract_eval(*[ShapedArray((), d) for d in dts], **params)
    assert out.dtype == aval.dtype
    closed, eqn = _eqn(prim, dts, params)
    if eqn is None:  # the wrapper folded it away (a conversion to the same dtype)
        return
    body = fusion.fuse(closed, fusible=lambda e: True, min_size=1).jaxpr.eqns[0].params["jaxpr"]
    cuda_source.fused_kernel_source(body, "k")           # CUDA
    llvm_codegen.kernel_source(body, "k")                # compiled CPU
    assert cuda_source.can_translate(eqn), f"CuPy would not fuse {_id(case)}"
    # NumPy: the implementation itself; where it is one ufunc, the generator calls it in place
    if len(ins) == 1 and out.op in ("tanh", "exp", "sqrt", "negative"):
        assert single_ufunc(prim, dts, params) == out.op


def test_a_fusible_op_is_fused_on_cupy():
    """Each primitive beside another elementwise op becomes one fused group with CuPy's options:
    nothing that CUDA translates falls out of the kernels."""
    for prim, dts, params in CASES:
        closed = fg.make_jaxpr(lambda *xs, p=prim, kw=params: _twice(p.bind(*xs, **kw)))(
            *[np.zeros((5,), d) for d in dts])
        fused = fusion.fuse(closed, **cupy_backend.FUSION)
        outside = [e.primitive.name for e in fused.jaxpr.eqns
                   if getattr(e.primitive, "elementwise", False)]
        assert not outside, (_id((prim, dts, params)), fused)


def _twice(y):
    return fg.lax.select_n(np.ones((), bool), y, y)  # a second elementwise equation


# ---------------------------------------------------------------------------------------------
# The compiled CPU kernels agree with NumPy

def special_values(dt, n=64):
    rng = np.random.default_rng(0)
    dt = np.dtype(dt)
    if dt.kind == "b":
        return rng.integers(0, 2, n).astype(bool)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        edge = [info.min, info.max, 0, 1, 2, 7, info.max - 1]
        if dt.kind == "i":
            edge += [-1, -2, -7, info.min + 1]
        rand = rng.integers(info.min, info.max, n - len(edge), dtype=dt, endpoint=True)
        return np.concatenate([np.array(edge, dt), rand])
    info = np.finfo(dt)
    edge = [np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0, 88.7, -88.7,
            89.0, -104.0, 710.0, info.tiny, -info.tiny, info.tiny / 8, info.max, -info.max,
            info.eps, 1e-30, 3.0, -3.0, 1e10, -1e10]
    rand = np.concatenate([rng.normal(0, 3, (n - len(edge)) // 2),
                           rng.uniform(-1e3, 1e3, n - len(edge) - (n - len(edge)) // 2)])
    return np.concatenate([np.array(edge, np.float64), rand]).astype(dt)


def _operands(prim, dts, params):
    vals = [special_values(d) for d in dts]
    if prim.name == "select_n" and dts[0].kind in "iu":
        vals[0] = (np.abs(vals[0].astype(np.int64)) % (len(dts) - 1)).astype(dts[0])
    if len(vals) == 2:  # every pair of the special values
        a, b = np.meshgrid(vals[0], vals[1], indexing="ij")
        return [a.ravel(), b.ravel()]
    if len(vals) > 2:
        return [np.resize(v, 64 * 64) for v in vals]
    return vals


def _run_kernel(prim, dts, params, operands):
    closed, eqn = _eqn(prim, dts, params, operands[0].shape)
    body = fusion.fuse(closed, fusible=lambda e: True, min_size=1).jaxpr.eqns[0].params["jaxpr"]
    kern = llvm_codegen.kernel_source(body, "kernel_under_test")
    fn = llvm_runtime.compile_kernels([kern])[kern.name]
    outs = [np.empty(s, d) for s, d in kern.outputs]
    fn(*[np.ascontiguousarray(o) for o in operands], *outs,
       llvm_runtime.dims_array(kern.dims, 0, kern.dims[0] if kern.dims else 1))
    return outs[0]


# The float32 functions the kernels compute themselves: within 1 ulp of the correctly rounded
# result (checked here against float64), and so within this many ulp of NumPy's own SIMD loops
# (NumPy's float32 log is itself up to 3 ulp off).
ULP = {"exp": 2, "log": 4, "tanh": 2}


def ulp_distance(a, b):
    """Distance in units in the last place between float arrays (0 for equal NaNs)."""
    it = np.int32 if a.dtype.itemsize == 4 else np.int64
    top = np.iinfo(it).max

    def lex(x):  # float bits as integers ordered as the floats (-0 and +0 both 0)
        i = x.view(it)
        return np.where(i < 0, -(i & top).astype(np.int64), i.astype(np.int64))

    d = np.abs(lex(a) - lex(b))
    return np.where(np.isnan(a) & np.isnan(b), 0, d)


@pytest.mark.skipif(llvm_runtime.available() is not None, reason=str(llvm_runtime.available()))
@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_compiled_kernel_agrees_with_numpy(case):
    prim, dts, params = case
    closed, eqn = _eqn(prim, dts, params)
    if eqn is None or not llvm_codegen.can_translate(eqn):
        pytest.skip("not fused on the CPU: NumPy computes it")
    operands = _operands(prim, dts, params)
    if prim.name == "convert_element_type" and params["new_dtype"].kind == "u" \
            and dts[0].kind == "f":  # out of range is undefined in C (and NumPy's loops differ)
        info = np.iinfo(params["new_dtype"])
        operands = [np.where((operands[0] >= 0) & (operands[0] < info.max), operands[0], 1)]
    with np.errstate(all="ignore"):
        want = np.asarray(prim.impl(np, *operands, **params))
        got = _run_kernel(prim, dts, params, operands)
    assert got.dtype == want.dtype and got.shape == want.shape
    ulp = max((ULP.get(n.op, 0) for n in _expr_nodes(prim, dts, params)), default=0)
    if want.dtype.kind == "f" and ulp:
        d = ulp_distance(got, want)
        bad = (d > ulp) | (np.signbit(got) != np.signbit(want)) & ~np.isnan(want)
        assert not bad.any(), (operands[0][bad][:5], got[bad][:5], want[bad][:5], d.max())
    else:
        same = (got == want) | (np.isnan(got) & np.isnan(want)) if want.dtype.kind == "f" \
            else got == want
        if want.dtype.kind == "f":  # bit for bit, signed zeros included
            same &= (np.signbit(got) == np.signbit(want)) | np.isnan(want)
        bad = ~same
        assert not bad.any(), ([o[bad][:5] for o in operands], got[bad][:5], want[bad][:5])


def _expr_nodes(prim, dts, params):
    from funcgrad.core.lowering import nodes
    return nodes(elementwise_expr(prim, dts, params)[1])


@pytest.mark.skipif(llvm_runtime.available() is not None, reason=str(llvm_runtime.available()))
@pytest.mark.parametrize("shape,other,axes", [
    ((6, 5), (5,), None), ((6, 5), (6, 1), None), ((2, 3, 4), (3, 1), None),
    ((4, 1, 5), (1, 3, 1), None), ((7, 9), (), None),
    ((6, 5), (5,), (1,)), ((6, 5), (6, 1), (1,)), ((3, 4, 5), (5,), (1, 2)),
    ((6, 5), (5,), (0,)), ((3, 4, 5), (4, 5), (0, 1)), ((8, 3), (3,), (0, 1))])
def test_broadcasts_and_reductions_agree_with_numpy(shape, other, axes):
    rng = np.random.default_rng(1)
    x = rng.normal(size=shape).astype(np.float32)
    y = rng.normal(size=other).astype(np.float32)

    def f(x, y):
        z = (x * 0.5 - y) * y + 1.0
        return z if axes is None else fg.numpy.sum(fg.numpy.exp(z), axis=axes)

    with fg.config.setting("cpu_backend", "numpy"):
        want = fg.jit(f)(x, y)
    with fg.config.setting("cpu_backend", "llvm"):
        jf = fg.jit(f)
        got = jf(x, y)
        assert "compiled kernel" in jf.lower(x, y).as_text()
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6)
    if axes is None:  # the same operations in the same order: equal bits
        np.testing.assert_array_equal(got, want)


@pytest.mark.skipif(llvm_runtime.available() is not None, reason=str(llvm_runtime.available()))
@pytest.mark.parametrize("name", ["exp", "log", "tanh"])
def test_kernel_float32_math_is_within_one_ulp_of_the_exact_result(name):
    """The kernels' own float32 exp, log and tanh, over their whole range (subnormals to
    overflow), against the float64 result rounded to float32."""
    prim = {"exp": ew.exp_p, "log": ew.log_p, "tanh": ew.tanh_p}[name]
    r = np.random.default_rng(3)
    x = np.concatenate([r.normal(0, 4, 200_000), r.uniform(-104, 89, 200_000),
                        np.geomspace(1e-45, 3e38, 100_000), -np.geomspace(1e-45, 100, 50_000)])
    if name == "log":
        x = np.abs(x)
    x = x.astype(np.float32)
    with np.errstate(all="ignore"):
        exact = getattr(np, name)(x.astype(np.float64)).astype(np.float32)
        got = _run_kernel(prim, [np.dtype(np.float32)], {}, [x])
    assert ulp_distance(got, exact).max() <= 1


def test_every_vocabulary_name_has_an_array_api_lowering():
    """Implementations may call any name of the vocabulary: the Array API adapter provides each
    (the CUDA and LLVM generators are checked per primitive above)."""
    S = pytest.importorskip("array_api_strict")
    from funcgrad.backends.array_api import ArrayAPINamespace
    from funcgrad.core.lowering import VOCABULARY
    ns = ArrayAPINamespace(S)
    assert [n for n in sorted(VOCABULARY) if not callable(getattr(ns, n, None))] == []
