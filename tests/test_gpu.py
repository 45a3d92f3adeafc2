"""The CuPy backend on a GPU: eager calls, grad, vmap, jit with fused kernels, placement.

These run where CuPy and a CUDA device exist (`FUNCGRAD_BACKEND=gpu pytest tests/test_gpu.py`,
or plain pytest on a GPU machine) and skip elsewhere with funcgrad's reason ("CuPy is not
installed", "CuPy found no CUDA device"). The placement checks at the bottom need no GPU and
always run.
"""

from __future__ import annotations

import numpy as np
import pytest
from numeric import gpu_unavailable

import funcgrad as fg
import funcgrad.numpy as fnp
from funcgrad.backends import check_placement
from funcgrad.tree_util import tree_flatten

REASON = gpu_unavailable()
gpu = pytest.mark.skipif(REASON is not None, reason=REASON or "")


@pytest.fixture
def cp():
    import cupy
    return cupy


def put(x):
    return fg.device_put(x, "gpu")


def _mlp(params, x):
    for w, b in params[:-1]:
        x = fg.nn.relu(x @ w + b)
    w, b = params[-1]
    return x @ w + b


def _params(rng, sizes=(8, 16, 4), dtype=np.float32):
    return [(rng.normal(0, 0.3, (m, n)).astype(dtype), np.zeros(n, dtype))
            for m, n in zip(sizes[:-1], sizes[1:])]


@gpu
def test_devices_and_round_trip(cp):
    assert fg.devices("gpu")[0].platform == "gpu"
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    g = put({"x": x})
    assert isinstance(g["x"], cp.ndarray)
    back = fg.device_put(g, "cpu")
    assert type(back["x"]) is np.ndarray and np.array_equal(back["x"], x)


@gpu
def test_eager_ops_stay_on_the_gpu(cp):
    x = np.linspace(-2, 2, 12, dtype=np.float32).reshape(3, 4)
    gx = put(x)
    for f in (lambda m: m.tanh(m.asarray(gx if m is fnp else x)) * 2 + 1,
              lambda m: m.sum(m.exp(gx if m is fnp else x), axis=0),
              lambda m: (gx if m is fnp else x) @ (gx if m is fnp else x).T):
        out = f(fnp)
        assert isinstance(out, cp.ndarray)
        np.testing.assert_allclose(out.get(), f(np), rtol=1e-5, atol=1e-6)


@gpu
def test_grad_vmap_jit_on_the_gpu(cp):
    rng = np.random.default_rng(0)
    params, x = _params(rng), rng.normal(size=(5, 8)).astype(np.float32)

    def loss(p, x):
        return fnp.mean(_mlp(p, x) ** 2)

    want = fg.grad(loss)(params, x)
    for fn in (fg.grad(loss), fg.jit(fg.grad(loss))):
        got = fn(put(params), put(x))
        for g, w in zip(tree_flatten(got)[0], tree_flatten(want)[0]):
            assert isinstance(g, cp.ndarray)
            np.testing.assert_allclose(g.get(), w, rtol=2e-4, atol=1e-6)
    per_example = fg.vmap(lambda xi: loss(params, xi[None]))(put(x))
    assert isinstance(per_example, cp.ndarray) and per_example.shape == (5,)


@gpu
def test_float16_trains_on_the_gpu(cp):
    """float16 runs on CuPy's own float16 kernels (eagerly and under jit) and agrees with the
    CPU, where NumPy computes matmuls and sums in float32 and rounds."""
    rng = np.random.default_rng(0)
    params, x = _params(rng, dtype=np.float16), rng.normal(size=(5, 8)).astype(np.float16)

    def loss(p, x):
        return fnp.mean(_mlp(p, x) ** 2)

    want = fg.grad(loss)(params, x)
    for fn in (fg.grad(loss), fg.jit(fg.grad(loss))):
        got = fn(put(params), put(x))
        for g, w in zip(tree_flatten(got)[0], tree_flatten(want)[0]):
            assert isinstance(g, cp.ndarray) and g.dtype == np.float16
            np.testing.assert_allclose(g.get().astype(np.float32), w.astype(np.float32),
                                       rtol=2e-2, atol=2e-3)


@gpu
def test_quantized_weights_on_the_gpu(cp):
    """int8 and NF4 weights quantized from a device array live on the device; quant.linear,
    take and dequantize run there (the array-standard path of funcgrad/lax/quantized.py) and
    agree with the CPU."""
    from funcgrad import quant
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((96, 160)) * 0.05).astype(np.float32)
    x = rng.standard_normal((4, 160)).astype(np.float32)
    ids = np.array([0, 5, 95])
    for scheme in ("nf4", "int8"):
        make = quant.quantize_nf4 if scheme == "nf4" else quant.quantize_int8
        q_cpu, q_gpu = make(w), make(put(w))
        assert all(isinstance(a, cp.ndarray) for a in tree_flatten(q_gpu)[0])

        def f(x, q):
            return fnp.sum(fnp.tanh(quant.linear(x, q)))

        for fn in (fg.grad(f), fg.jit(fg.grad(f))):
            got = fn(put(x), q_gpu)
            assert isinstance(got, cp.ndarray)
            np.testing.assert_allclose(got.get(), fg.grad(f)(x, q_cpu), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(quant.take(q_gpu, put(ids)).get(), quant.take(q_cpu, ids),
                                   rtol=1e-6)
        np.testing.assert_allclose(quant.dequantize(q_gpu).get(), quant.dequantize(q_cpu),
                                   rtol=1e-6)


@gpu
def test_bfloat16_stays_on_the_cpu_with_a_clear_error(cp):
    import ml_dtypes
    with pytest.raises(TypeError, match="CuPy has no bfloat16"):
        put(np.ones(3, ml_dtypes.bfloat16))


@gpu
def test_jit_fuses_elementwise_chains_into_kernels(cp):
    def f(x, y):
        return fnp.tanh(x * 2.0 + y) - fnp.exp(-x) * 0.5

    x, y = np.random.default_rng(1).normal(size=(2, 1000)).astype(np.float32)
    jf = fg.jit(f)
    out = jf(put(x), put(y))
    assert isinstance(out, cp.ndarray)
    np.testing.assert_allclose(out.get(), f(x, y), rtol=1e-5, atol=1e-6)
    text = jf.lower(put(x), put(y)).as_text()
    assert '__global__' in text and "CUDA kernel" in text


@gpu
def test_kernels_read_broadcast_operands_in_place(cp):
    """A bias row, a keepdims column and a 3-d broadcast join their chain's kernel."""
    def f(h, b, x, c):
        z = fnp.maximum(h + b, 0.0) * 2.0                         # bias + relu: one kernel
        e = fnp.exp(h - fnp.max(h, axis=1, keepdims=True)) * 0.5  # shifted exp: one kernel
        return z, e, fnp.tanh(x * c) + 1.0

    rng = np.random.default_rng(3)
    args = [rng.normal(size=s).astype(np.float32) for s in [(37, 19), (19,), (2, 3, 40), (3, 1)]]
    jf = fg.jit(f)
    outs = jf(*put(args))
    h, b, x, c = args
    want = [np.maximum(h + b, 0) * 2, np.exp(h - h.max(axis=1, keepdims=True)) * 0.5,
            np.tanh(x * c) + 1]
    for o, w in zip(outs, want):
        np.testing.assert_allclose(o.get(), w, rtol=2e-6, atol=1e-6)
    text = jf.lower(*put(args)).as_text()
    driver = text.split("/* fused")[0]
    assert " = add_" not in driver and " = sub_" not in driver, driver  # inside the kernels
    assert "% 19LL" in text and "/ 19LL" in text


@gpu
def test_jit_folds_a_reduction_into_the_chain_that_feeds_it(cp):
    def f(x, i):
        return (fnp.sum(fnp.exp(x * 2.0 - 1.0), axis=-1),        # float sum over the last axis
                fnp.max(fnp.tanh(x) + 1.0, axis=0),               # NaN propagates, as NumPy
                fnp.min(i * 3 - 7, axis=(0, 1)))                  # integer, full reduction

    x = np.random.default_rng(2).normal(size=(64, 33)).astype(np.float32)
    x[5, 7] = np.nan
    i = np.arange(24, dtype=np.int32).reshape(4, 6)
    jf = fg.jit(f)
    outs = jf(put(x), put(i))
    want = f(x, i) if not fg.default_backend() == "gpu" else [o.get() for o in f(put(x), put(i))]
    for o, w in zip(outs, want):
        assert isinstance(o, cp.ndarray)
        np.testing.assert_allclose(o.get(), w, rtol=2e-6, atol=1e-6)
    text = jf.lower(put(x), put(i)).as_text()
    assert text.count("# cupy.ReductionKernel") == 3, text


@gpu
def test_gpu_default_backend_places_host_data_and_new_arrays_on_the_device(cp):
    with fg.config.setting("backend", "gpu"):
        assert fg.default_backend() == "gpu"
        assert isinstance(fnp.zeros(3), cp.ndarray) and isinstance(fnp.arange(4), cp.ndarray)
        out = fnp.tanh(np.ones(3))                      # host input: runs on the device
        assert isinstance(out, cp.ndarray)
        g = fg.grad(lambda w: fnp.sum(w * w))(np.arange(3.0))
        assert isinstance(g, cp.ndarray) and np.allclose(g.get(), [0, 2, 4])
        j = fg.jit(lambda a, b: a * b)(put(np.ones(2)), np.full(2, 3.0))  # mixed: fine here
        assert isinstance(j, cp.ndarray) and np.allclose(j.get(), 3.0)
    host = np.ones(2)
    assert isinstance(fnp.zeros_like(put(host)), cp.ndarray)  # a device prototype: its device
    if fg.default_backend() == "cpu":
        assert type(fnp.zeros_like(host)) is np.ndarray       # a host one: the default backend


@gpu
def test_captured_host_constants_move_once(cp):
    table = np.arange(10, dtype=np.float32)
    jf = fg.jit(lambda x: x * table + 1)
    a = jf(put(np.ones(10, np.float32)))
    b = jf(put(np.full(10, 2, np.float32)))
    np.testing.assert_allclose(b.get(), 2 * table + 1)
    assert isinstance(a, cp.ndarray)


@pytest.mark.cpu_only
@gpu
def test_mixing_host_and_gpu_arguments_is_an_error(cp):
    jf = fg.jit(lambda a, b: a + b)
    with pytest.raises(ValueError, match=r"host \(NumPy\): argument 1.*GPU \(CuPy\): argument 0"):
        jf(put(np.ones(3)), np.ones(3))


@gpu
def test_jit_backend_gpu_moves_numpy_arguments(cp):
    out = fg.jit(lambda a: a * 2, backend="gpu")(np.ones(3, np.float32))
    assert isinstance(out, cp.ndarray)


@gpu
def test_scatter_add_on_the_gpu(cp):
    from funcgrad.numpy import _IndexUpdateHelper
    x = put(np.zeros(5, np.float32))
    out = _IndexUpdateHelper(x)[put(np.array([0, 2, 2]))].add(put(np.ones(3, np.float32)))
    assert isinstance(out, cp.ndarray)
    assert out.get().tolist() == [1, 0, 2, 0, 0]


# ---------------------------------------------------------------------------------------------
# No GPU needed

class _FakeDeviceArray:
    """Stands in for a CuPy array: what check_placement looks at is the CUDA array interface."""
    __cuda_array_interface__ = {}


def test_mixing_error_names_the_arguments():
    flat, tree = tree_flatten(((_FakeDeviceArray(), {"w": np.ones(2)}), {"scale": 2.0}))
    with pytest.raises(ValueError) as info:
        check_placement(flat, tree, xp=object())
    msg = str(info.value)
    assert "host (NumPy): argument 1 at ['w']" in msg
    assert "GPU (CuPy): argument 0" in msg
    assert "device_put" in msg


@pytest.mark.cpu_only
def test_python_scalars_and_numpy_calls_need_no_gpu():
    flat, tree = tree_flatten(((np.ones(2), 3.0), {}))
    assert check_placement(flat, tree, xp=np) is np


@pytest.mark.skipif(REASON is None, reason="a GPU is present")
def test_without_a_gpu_the_errors_say_how_to_install():
    with pytest.raises(RuntimeError, match=r"pip install funcgrad\[gpu\]"):
        fg.device_put(np.ones(2), "gpu")
    with pytest.raises(RuntimeError, match=r"pip install funcgrad\[gpu\]"):
        fg.jit(lambda a: a + 1, backend="gpu")(np.ones(2))
    with pytest.raises(RuntimeError, match="CuPy"):
        fg.devices("gpu")


@gpu
def test_a_reduction_kernel_that_fails_to_compile_shows_its_source(cp):
    from funcgrad.backends import cuda_source, cupy_kernels
    bad = cuda_source.ReductionSource(
        "broken_reduction", "__device__ float broken_reduction_map(const float x0) {\n"
        "    return no_such_function(x0);\n}\n", "float32 in0", "float32 out0",
        "broken_reduction_map(in0)", "a + b", "out0 = a", "0.0f", "float", np.dtype(np.float32),
        (0,))
    with pytest.raises(cupy_kernels.KernelCompileError) as info:
        cupy_kernels.Reducer(cp, bad)(put(np.ones(4, np.float32)))
    msg = str(info.value)
    assert "no_such_function" in msg and "broken_reduction" in msg and "cupy.ReductionKernel" in msg
