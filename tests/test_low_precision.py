"""bfloat16 (ml_dtypes) and float16: promotion, every primitive, AD and jit in 16-bit floats.

The primitives are drawn from the rule harness's specs (tests/rule_specs.py): each runs on 16-bit
operands, and its value, its JVP and its VJP are compared with float64 on the same (rounded)
operands, eagerly and under jit. NumPy has no fast kernels for these dtypes: matmuls, sums and
bfloat16 math compute in float32 and round once (funcgrad/lax/_util.py), which the exactness
tests below pin down.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rule_specs import NONDIFF, SPECS
from test_rules import PRIMS

import funcgrad as fg
import funcgrad.numpy as fnp
from funcgrad.core import ShapedArray

# NumPy's float32 paths for 16-bit floats; bfloat16 has no CuPy dtype (float16 on the GPU:
# tests/test_gpu.py)
pytestmark = pytest.mark.cpu_only


BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
SMALL = [BF16, F16]
# Relative tolerance against float64 on the rounded operands: a few roundings of 2^-8 (bfloat16)
# or 2^-11 (float16) through the primitive and its derivative.
TOL = {BF16: 0.04, F16: 0.006}

# ---------------------------------------------------------------------------------------------
# Promotion: JAX's rules between floats (bfloat16 and float16 meet in float32); against integers
# bfloat16 sits where NumPy puts float16 (funcgrad follows NumPy for integer-float pairs).

_PROMOTION = {
    "bool": "bfloat16", "int8": "bfloat16", "uint8": "bfloat16", "int16": "float32",
    "uint16": "float32", "int32": "float64", "int64": "float64", "float16": "float32",
    "bfloat16": "bfloat16", "float32": "float32", "float64": "float64",
    "complex64": "complex64", "complex128": "complex128"}


@pytest.mark.parametrize("other", sorted(_PROMOTION))
def test_bfloat16_promotion_table(other):
    expected = np.dtype(_PROMOTION[other]) if other != "bfloat16" else BF16
    o = BF16 if other == "bfloat16" else np.dtype(other)
    assert fnp.result_type(BF16, o) == expected
    assert fnp.result_type(o, BF16) == expected
    x, y = np.ones(2, BF16), np.ones(2, o)
    assert fnp.add(x, y).dtype == expected
    assert fg.jit(fnp.add)(x, y).dtype == expected


@pytest.mark.parametrize("dtype", SMALL, ids=str)
def test_python_scalars_are_weak(dtype):
    x = np.ones(3, dtype)
    for f in (lambda x: x * 2.5, lambda x: x + 1, lambda x: 3 - x, lambda x: x / 2.0,
              lambda x: fnp.maximum(x, 0.0), lambda x: fnp.where(x > 0, x, 0.0)):
        assert f(fnp.asarray(x)).dtype == dtype
        assert fg.jit(f)(x).dtype == dtype
        assert fg.grad(lambda x, f=f: fnp.sum(f(x)).astype(np.float32))(x).dtype == dtype


def test_float16_meets_bfloat16_in_float32():
    a, b = np.ones(2, F16), np.ones(2, BF16)
    assert fnp.result_type(a, b) == np.float32
    assert (fnp.asarray(a) * b).dtype == np.float32
    assert fg.jit(lambda a, b: a * b)(a, b).dtype == np.float32


def test_bfloat16_dtype_queries():
    assert fnp.bfloat16 is ml_dtypes.bfloat16
    assert fnp.issubdtype(fnp.bfloat16, fnp.floating)
    assert fnp.issubdtype(BF16, fnp.inexact) and fnp.issubdtype(BF16, fnp.number)
    assert not fnp.issubdtype(BF16, fnp.integer) and not fnp.issubdtype(np.float32, BF16)
    assert fnp.isdtype(BF16, "real floating") and not fnp.isdtype(BF16, "integral")
    assert fnp.finfo(BF16).eps == 2.0 ** -7
    assert fnp.zeros(3, "bfloat16").dtype == BF16
    assert fnp.asarray([1.5, 2.5], dtype="bfloat16").dtype == BF16
    assert str(fg.make_jaxpr(lambda x: x * 2)(np.ones(2, BF16))).count("bf16[2]") == 2


# ---------------------------------------------------------------------------------------------
# Every primitive in bfloat16 and float16

# Specs whose static params or `apply` hold float64 sub-programs or constants (the control-flow
# primitives, eigh and svd's sign fixing): covered by the direct tests further down.
_FLOAT64_BUILT_IN = {"scan", "cond", "checkpoint", "while", "eigh", "svd", "custom_jvp_call",
                     "custom_vjp_call"}
# bitcast_convert_type reinterprets bits, which no float64 reference shares:
# test_bitcast_of_16_bit_floats.
_BITS = {"bitcast_convert_type"}
# complex of 16-bit parts is refused (no 16-bit complex type; JAX refuses it too):
# test_no_16_bit_complex.
_REFUSED = {"complex"}
# Complex specs (their operands are complex128): there are no 16-bit complex types.
_KEYS = [k for k, e in list(SPECS.items()) + list(NONDIFF.items())
         if e.cases is not None and e.name in PRIMS and getattr(e, "axis_name", None) is None
         and k not in _FLOAT64_BUILT_IN | _BITS | _REFUSED and not getattr(e, "complex", False)]

_settings = settings(max_examples=3, deadline=None, derandomize=True, database=None,
                     suppress_health_check=list(HealthCheck))


def _as_tuple(out):
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _close(actual, expected, dtype, what):
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    if expected.dtype.kind == "b":
        return
    assert actual.shape == expected.shape, what
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    wide = np.complex128 if np.iscomplexobj(expected) else np.float64  # (fft, eig)
    np.testing.assert_allclose(actual.astype(wide), expected, rtol=TOL[dtype],
                               atol=TOL[dtype] * scale, err_msg=what)


@pytest.mark.parametrize("dtype", SMALL, ids=str)
@pytest.mark.parametrize("key", _KEYS)
def test_primitive_in_16_bit_floats(key, dtype):
    """Value (eager and jit) and both derivatives of each primitive on 16-bit operands, against
    float64 on the same rounded operands; dtypes as the shape rule says."""
    entry = SPECS.get(key) or NONDIFF[key]
    prim = PRIMS[entry.name]
    apply = getattr(entry, "apply", None)

    @_settings
    @given(data=st.data())
    def check(data):
        case = data.draw(entry.cases)
        ops = [np.asarray(a) for a in case.operands]
        frozen = getattr(entry, "frozen", ())
        ops = [a.astype(dtype) if a.dtype.kind == "f" and i not in frozen else a
               for i, a in enumerate(ops)]
        wide = [a.astype(np.float64) if a.dtype == dtype else a for a in ops]

        def f(*o):
            out = apply(prim, list(o), case.params) if apply else prim.bind(*o, **case.params)
            return _as_tuple(out)

        outs = f(*ops)
        if apply is None:
            avals = _as_tuple(prim.abstract_eval(*[ShapedArray(a.shape, a.dtype) for a in ops],
                                                 **case.params))
            assert [np.dtype(o.dtype) for o in outs] == [a.dtype for a in avals]
        for o, r in zip(outs, f(*wide)):
            _close(o, r, dtype, f"{key} value")
        for o, j in zip(outs, _as_tuple(fg.jit(f)(*ops))):
            assert j.dtype == o.dtype
            _close(j, o.astype(np.float64) if o.dtype.kind != "b" else o, dtype, f"{key} jit")

        fidx = [i for i, a in enumerate(ops) if a.dtype == dtype and i not in frozen]
        if key not in SPECS or not fidx:
            return

        def g(ops, *diff):
            o = list(ops)
            for i, d in zip(fidx, diff):
                o[i] = d
            return tuple(x for x in f(*o) if fg.core.is_float(x.dtype))

        rng = np.random.default_rng(0)
        primals = [ops[i] for i in fidx]
        tangents = [rng.uniform(-1, 1, a.shape).astype(dtype) for a in primals]
        ys, vjp = fg.vjp(lambda *d: g(ops, *d), *primals)
        cts = [rng.uniform(-1, 1, y.shape).astype(y.dtype) for y in ys]
        _, ts = fg.jvp(lambda *d: g(ops, *d), tuple(primals), tuple(tangents))
        _, ts64 = fg.jvp(lambda *d: g(wide, *d), tuple(wide[i] for i in fidx),
                         tuple(t.astype(np.float64) for t in tangents))
        for t, y, t64 in zip(ts, ys, ts64):
            assert t.dtype == y.dtype
            _close(t, t64, dtype, f"{key} jvp")
        ys64, vjp64 = fg.vjp(lambda *d: g(wide, *d), *[wide[i] for i in fidx])
        for c, p, c64 in zip(vjp(tuple(cts)), primals,
                             vjp64(tuple(c.astype(y.dtype) for c, y in zip(cts, ys64)))):
            assert c.dtype == p.dtype
            _close(c, c64, dtype, f"{key} vjp")

    check()


# ---------------------------------------------------------------------------------------------
# Exact semantics of the float32 paths

@pytest.mark.parametrize("dtype", SMALL, ids=str)
def test_matmul_computes_in_float32_and_rounds_once(dtype):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((5, 7)).astype(dtype)
    b = rng.standard_normal((7, 3)).astype(dtype)
    expected = (a.astype(np.float32) @ b.astype(np.float32)).astype(dtype)
    for out in (fnp.matmul(a, b), fg.jit(fnp.matmul)(a, b), fnp.einsum("ij,jk->ik", a, b)):
        assert out.dtype == dtype
        np.testing.assert_array_equal(out.view(np.uint16), expected.view(np.uint16))
    wide = fg.lax.dot_general(a, b, (((1,), (0,)), ((), ())), preferred_element_type=np.float32)
    assert wide.dtype == np.float32
    np.testing.assert_array_equal(wide, a.astype(np.float32) @ b.astype(np.float32))


def test_dot_with_float32_accumulation_differentiates():
    """A bfloat16 matmul with a float32 result (preferred_element_type): the cotangents come
    back in bfloat16."""
    rng = np.random.default_rng(2)
    a = rng.standard_normal((4, 3)).astype(BF16)
    b = rng.standard_normal((3, 2)).astype(BF16)

    def f(a, b):
        y = fg.lax.dot_general(a, b, (((1,), (0,)), ((), ())), preferred_element_type=np.float32)
        return fnp.sum(y * y)

    ga, gb = fg.grad(f, argnums=(0, 1))(a, b)
    assert ga.dtype == BF16 and gb.dtype == BF16
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    y = a32 @ b32
    np.testing.assert_allclose(ga.astype(np.float32), 2 * y @ b32.T, rtol=0.02, atol=0.02)
    np.testing.assert_allclose(gb.astype(np.float32), 2 * a32.T @ y, rtol=0.02, atol=0.02)
    jga, jgb = fg.jit(fg.grad(f, argnums=(0, 1)))(a, b)
    np.testing.assert_array_equal(jga.view(np.uint16), ga.view(np.uint16))
    np.testing.assert_array_equal(jgb.view(np.uint16), gb.view(np.uint16))


@pytest.mark.parametrize("dtype", SMALL, ids=str)
def test_sums_accumulate_in_float32(dtype):
    """20000 x 0.1: a 16-bit running sum stalls (bfloat16 stops at 32); float32 accumulation
    rounds once."""
    x = np.full((100, 200), 0.1, dtype)
    exact = np.sum(x.astype(np.float32))
    for f in (fnp.sum, fg.jit(fnp.sum), lambda x: fnp.cumsum(x.ravel())[-1]):
        out = f(x)
        assert out.dtype == dtype
        assert out == exact.astype(dtype), (out, exact)
    rows = fg.jit(lambda x: fnp.sum(x, axis=1))(x)
    np.testing.assert_array_equal(rows, np.full(100, np.float32(0.1).astype(dtype)
                                                .astype(np.float32) * 200).astype(dtype))
    assert fnp.mean(x).dtype == dtype and abs(float(fnp.mean(x)) - 0.1) < 1e-3


def test_bfloat16_math_matches_float32_rounded():
    x = np.linspace(-3, 3, 101).astype(BF16)
    for fn, ref in ((fnp.tanh, np.tanh), (fnp.exp, np.exp), (fg.nn.sigmoid, None)):
        out = fn(x)
        assert out.dtype == BF16
        expected = (ref(x.astype(np.float32)) if ref is not None
                    else 1 / (1 + np.exp(-x.astype(np.float32))))
        np.testing.assert_allclose(out.astype(np.float32), expected, rtol=2 ** -8, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# Transforms on 16-bit programs

def _mlp_loss(params, x, y):
    h = fnp.tanh(x @ params["w1"] + params["b1"])
    out = h @ params["w2"]
    return fnp.mean(fnp.square(out - y))


def _mlp(dtype, seed=0):
    rng = np.random.default_rng(seed)
    params = {"w1": rng.standard_normal((6, 16)) * 0.3, "b1": np.zeros(16),
              "w2": rng.standard_normal((16, 3)) * 0.3}
    params = {k: v.astype(dtype) for k, v in params.items()}
    x = rng.standard_normal((8, 6)).astype(dtype)
    y = rng.standard_normal((8, 3)).astype(dtype)
    return params, x, y


@pytest.mark.parametrize("dtype", SMALL, ids=str)
def test_staging_does_not_change_16_bit_gradients(dtype):
    params, x, y = _mlp(dtype)
    g = fg.grad(_mlp_loss)(params, x, y)
    variants = {"jit(grad)": fg.jit(fg.grad(_mlp_loss))(params, x, y),
                "grad(jit)": fg.grad(fg.jit(_mlp_loss))(params, x, y),
                "vmap(grad)": fg.tree_util.tree_map(
                    lambda a: a[0], fg.vmap(fg.grad(_mlp_loss), in_axes=(None, None, 0))(
                        params, x, y[None]))}
    for name, other in variants.items():
        for k in g:
            assert other[k].dtype == dtype, (name, k)
            np.testing.assert_allclose(other[k].astype(np.float32), g[k].astype(np.float32),
                                       rtol=TOL[dtype], atol=TOL[dtype], err_msg=name)
    g32 = fg.grad(_mlp_loss)(*fg.tree_util.tree_map(lambda a: a.astype(np.float32),
                                                    (params, x, y)))
    for k in g:
        np.testing.assert_allclose(g[k].astype(np.float32), g32[k], rtol=0.05,
                                   atol=0.05 * float(np.abs(g32[k]).max()))


@pytest.mark.parametrize("dtype", SMALL, ids=str)
def test_control_flow_carries_16_bit_floats(dtype):
    x = np.linspace(0.1, 1.0, 5).astype(dtype)

    def f(x):
        def body(c, xi):
            c = c * 0.9 + fnp.sin(xi)
            return c, c * 2
        c, ys = fg.lax.scan(body, x[0] * 0, x)
        c = fg.lax.cond(c > 0, lambda c: c * 2, lambda c: -c, c)
        c = fg.lax.fori_loop(0, 3, lambda i, c: c * 0.5 + 1, c)
        return fg.checkpoint(lambda c, ys: fnp.sum(ys) + c)(c, ys)

    out, g = fg.value_and_grad(f)(x)
    assert out.dtype == dtype and g.dtype == dtype
    jout, jg = fg.jit(fg.value_and_grad(f))(x)
    assert jout.dtype == dtype and jg.dtype == dtype
    out64, g64 = fg.value_and_grad(f)(x.astype(np.float64))
    np.testing.assert_allclose(float(out), out64, rtol=0.05)
    np.testing.assert_allclose(g.astype(np.float64), g64, rtol=0.05, atol=0.05)
    np.testing.assert_allclose(jg.astype(np.float64), g64, rtol=0.05, atol=0.05)


def test_no_16_bit_complex():
    for dtype in SMALL:
        with pytest.raises(TypeError, match="no complex type; convert them to float32"):
            fg.lax.complex(np.ones(2, dtype), np.ones(2, dtype))


def test_bitcast_of_16_bit_floats():
    x = np.array([1.0, -2.5, 3.0e-3], BF16)
    bits = fg.lax.bitcast_convert_type(x, np.uint16)
    np.testing.assert_array_equal(bits, x.view(np.uint16))
    np.testing.assert_array_equal(fg.jit(lambda b: fg.lax.bitcast_convert_type(b, BF16))(bits), x)
    h = fg.lax.bitcast_convert_type(bits, np.float16)
    assert h.dtype == np.float16 and h.shape == (3,)


def test_bfloat16_jaxpr_and_lowered_code():
    x = np.ones((2, 3), BF16)
    text = str(fg.make_jaxpr(lambda x: fnp.tanh(x) * 2.0)(x))
    assert "bf16[2,3]" in text and "2.0:bf16[]" in text
    lowered = fg.jit(lambda x: fnp.sum(fnp.tanh(x))).lower(x)
    assert "bf16[]" in str(lowered)


# ---------------------------------------------------------------------------------------------
# dot_general of mixed dtypes (as JAX): a float32 activation times a 16-bit or int8 weight

@pytest.mark.parametrize("wdtype", [BF16, F16, np.dtype(np.int8)], ids=str)
def test_dot_general_of_mixed_dtypes(wdtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 5)).astype(np.float32)
    w = (rng.standard_normal((5, 3)) * (20 if wdtype.kind == "i" else 1)).astype(wdtype)
    dn = (((1,), (0,)), ((), ()))

    def f(x, w):
        return fnp.sum(fnp.tanh(fg.lax.dot_general(x, w, dn)))

    y = fg.lax.dot_general(x, w, dn)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, x @ w.astype(np.float32), rtol=1e-6, atol=1e-6)
    argnums = (0, 1) if wdtype.kind == "f" else 0
    g = fg.grad(f, argnums=argnums)(x, w)
    gx = g[0] if wdtype.kind == "f" else g
    assert gx.dtype == np.float32
    gx64 = fg.grad(f)(x.astype(np.float64), w.astype(np.float64))
    np.testing.assert_allclose(gx, gx64, rtol=1e-5, atol=1e-6)
    if wdtype.kind == "f":
        assert g[1].dtype == wdtype
        gw64 = fg.grad(f, argnums=1)(x.astype(np.float64), w.astype(np.float64))
        np.testing.assert_allclose(g[1].astype(np.float64), gw64, rtol=TOL[wdtype],
                                   atol=TOL[wdtype])
    jg = fg.jit(fg.grad(f, argnums=argnums))(x, w)
    for a, b in zip(fg.tree_util.tree_leaves(jg), fg.tree_util.tree_leaves(g)):
        assert a.dtype == b.dtype
        # (jit's compiled float32 tanh is within an ulp or two of NumPy's: docs/differences.md)
        scale = float(np.max(np.abs(b.astype(np.float64))))
        np.testing.assert_allclose(a.astype(np.float64), b.astype(np.float64), rtol=1e-5,
                                   atol=1e-4 * scale)
    # the program never converts the weight as a whole: only the dot's own call widens it
    text = str(fg.make_jaxpr(fg.grad(f))(x, w))
    assert "convert_element_type" not in text
    batched = fg.vmap(lambda xi: fg.lax.dot_general(xi, w, (((0,), (0,)), ((), ()))))(x)
    np.testing.assert_allclose(batched, y, rtol=1e-6)
