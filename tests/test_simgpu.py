"""The CuPy simulator (tests/simgpu): its strictness about the host, its RawKernel (CUDA source
compiled with g++, run thread by thread), and funcgrad's generated kernels run on it.

The simulator is imported by a module fixture that puts tests/simgpu first on sys.path and
takes it off again afterwards (with the cupy modules), so the rest of the session still sees
"no CuPy". Skipped where a real CuPy is installed (the simulator would shadow it) or g++ is
missing (for the kernel tests).
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import numpy
import numpy as np
import pytest

import funcgrad as fg
import funcgrad.numpy as fnp
from funcgrad.backends.cuda_source import fused_kernel_source
from funcgrad.core import eval_jaxpr
from funcgrad.core.placement import unregister_array_namespace
from funcgrad.transforms.fusion import fuse
from funcgrad.transforms.passes import optimize

SIM = Path(__file__).resolve().parent / "simgpu"


def _real_cupy_installed():
    spec = importlib.util.find_spec("cupy")
    return spec is not None and SIM not in Path(spec.origin).resolve().parents


pytestmark = pytest.mark.skipif(_real_cupy_installed(),
                                reason="a real CuPy is installed (the simulator would shadow it)")
needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not found")


@pytest.fixture(scope="module")
def cp():
    before = set(sys.modules)
    added = str(SIM) not in sys.path
    if added:
        sys.path.insert(0, str(SIM))
    import cupy
    assert SIM in Path(cupy.__file__).resolve().parents
    yield cupy
    if added:   # put things back: funcgrad forgets the simulator's arrays, `import cupy` fails
        unregister_array_namespace(cupy.ndarray)
        sys.path.remove(str(SIM))
        for name in set(sys.modules) - before:
            if name.split(".")[0] in ("cupy", "cupyx"):
                del sys.modules[name]


@pytest.fixture(scope="module")
def cupyx(cp):
    import cupyx
    return cupyx


# ---------------------------------------------------------------------------------------------
# Strictness: what a GPU refuses, the simulator refuses

# These two use the real NumPy module as `numpy`: in GPU mode (FUNCGRAD_BACKEND=gpu) conftest
# swaps the test modules' `np` for a NumPy that fetches device arrays first.

def test_no_implicit_host_conversion(cp):
    x = cp.arange(3)
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        numpy.asarray(x)
    assert not isinstance(x, numpy.ndarray) and type(x.get()) is numpy.ndarray
    assert cp.asnumpy(x).tolist() == [0, 1, 2]
    with pytest.raises(TypeError, match="Unsupported type <class 'numpy.ndarray'>"):
        cp.exp(numpy.ones(3))
    with pytest.raises(TypeError, match="Unsupported type <class 'numpy.ndarray'>"):
        x + numpy.ones(3)
    with pytest.raises(TypeError, match="Unsupported type <class 'numpy.ndarray'>"):
        numpy.ones(3) * x
    with pytest.raises(TypeError, match="Unsupported type <class 'numpy.ndarray'>"):
        cp.concatenate([x, numpy.ones(3)])
    with pytest.raises(TypeError, match="Unsupported type"):
        numpy.sum(x) + numpy.zeros(1)
    with pytest.raises(TypeError, match="cupy.ascontiguousarray"):
        cp.ascontiguousarray(numpy.ones(2))  # CuPy's ascontiguousarray takes device arrays only


def test_numpy_calls_dispatch_to_the_device(cp):
    x = cp.asarray(numpy.arange(6.0).reshape(2, 3))
    for out in (numpy.exp(x), numpy.sum(x, axis=0), numpy.where(x > 2, x, 0.0),
                numpy.linalg.norm(x), x @ x.T, -x, abs(x), x + numpy.float32(1) + 2):
        assert isinstance(out, cp.ndarray)
    numpy.testing.assert_allclose(numpy.exp(x).get(), numpy.exp(x.get()))
    assert cp.any(x) and cp.all(x >= 0)   # (cupy.any must not shadow the builtin inside cupy)
    assert cp.get_array_module(x) is cp and cp.get_array_module(numpy.ones(1)) is numpy
    assert cp.result_type(x, numpy.float32) == numpy.float64 and cp.float32 is numpy.float32
    assert cp.pi == numpy.pi and cp.newaxis is None and cp.finfo is numpy.finfo
    assert cp.cuda.runtime.getDeviceCount() == 1 and cp.cuda.get_current_stream().ptr == 0
    with pytest.raises(ImportError):
        from cupy.cuda import nccl  # noqa: F401


def test_reductions_and_scalar_indexing_give_0d_device_arrays(cp):
    x = cp.asarray([[1.0, 2.0], [3.0, 4.0]])
    for r in (x.sum(), cp.max(x), x.mean(), x[1, 0], cp.linalg.det(x), x.argmax()):
        assert isinstance(r, cp.ndarray) and r.shape == ()
    assert float(x.sum()) == 10.0 and int(x.argmax()) == 3 and x[1, 1].item() == 4.0
    v = x[0, 1]
    v[...] = 7.0          # a 0-d view, as in CuPy
    assert x.get()[0, 1] == 7.0 and x[0].base is not None
    assert repr(cp.asarray([1.0, 2.0])) == "array([1., 2.])"
    assert [float(e) for e in cp.asarray([1.0, 2.0])] == [1.0, 2.0]


def test_indexing_with_device_and_host_index_arrays(cp):
    x = cp.arange(10.0)
    idx = cp.asarray([1, 3, 3])
    assert x[idx].get().tolist() == [1.0, 3.0, 3.0]
    assert x[np.array([0, 9])].get().tolist() == [0.0, 9.0]  # CuPy copies host indices
    assert x[x > 7].get().tolist() == [8.0, 9.0]
    x[idx] = cp.asarray([-1.0, -2.0, -3.0])
    x[np.array([0])] = np.array([5.0])                        # advanced index: host value ok
    x[2:4] = 0.5
    assert x.get()[:4].tolist() == [5.0, -1.0, 0.5, 0.5]
    with pytest.raises(ValueError, match="non-scalar numpy.ndarray cannot be used for fill"):
        x[4:6] = np.ones(2)                                  # as CuPy: basic index + host array
    x[4:6] = cp.ones(2)
    assert x.get()[4:6].tolist() == [1.0, 1.0]


def test_empty_is_poisoned_like_device_memory(cp):
    assert np.isnan(cp.empty(4).get()).all()
    assert (cp.empty(3, cp.int32).get() != 0).all()


def test_scatter_accumulates_duplicates(cp, cupyx):
    a = cp.zeros(5, cp.float32)
    cupyx.scatter_add(a, cp.asarray([0, 2, 2, 4]), cp.asarray([1.0, 2.0, 3.0, 4.0], cp.float32))
    assert a.get().tolist() == [1.0, 0.0, 5.0, 0.0, 4.0]
    m = cp.zeros((2, 3))
    cupyx.scatter_max(m, (cp.asarray([0, 0, 1]), slice(None)), cp.asarray([[1.0], [5.0], [2.0]]))
    cupyx.scatter_min(m, (1, cp.asarray([2, 2])), cp.asarray([-1.0, -4.0]))
    assert m.get().tolist() == [[5.0, 5.0, 5.0], [2.0, 2.0, -4.0]]
    with pytest.raises(TypeError, match="scatter_add only supports"):
        cupyx.scatter_add(cp.zeros(3, cp.int64), cp.asarray([0]), 1)  # no int64 atomics


def test_random_and_linalg(cp):
    cp.random.seed(0)
    s = cp.random.normal(size=(3, 2), dtype=np.float32)
    assert isinstance(s, cp.ndarray) and s.dtype == np.float32 and s.shape == (3, 2)
    assert cp.random.default_rng(1).standard_normal(4).shape == (4,)
    bad = cp.linalg.cholesky(cp.asarray([[1.0, 2.0], [2.0, 1.0]]))  # no LinAlgError on a GPU
    assert np.isnan(bad.get()).all()


# ---------------------------------------------------------------------------------------------
# RawKernel

SAXPY = r"""
extern "C" __global__ void saxpy_NAME(const T* __restrict__ x, T* __restrict__ y, T a,
                                      long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        y[i] = a * x[i] + y[i];
    }
}
"""


@pytest.fixture(scope="module")
def saxpy(cp):
    return {t: cp.RawKernel(SAXPY.replace("NAME", t).replace("T", t), f"saxpy_{t}")
            for t in ("float", "double")}


@needs_gxx
@pytest.mark.parametrize("ctype, dtype", [("float", np.float32), ("double", np.float64)])
@pytest.mark.parametrize("grid, block", [(3, 64), ((40,), (32, 1, 1)), (1, 1)])
def test_saxpy_grid_stride(cp, saxpy, ctype, dtype, grid, block):
    n = 1003   # not a multiple of any block: the loop's tail and its bound both matter
    x = np.random.default_rng(0).normal(size=n).astype(dtype)
    y = cp.ones(n, dtype)
    saxpy[ctype](grid, block, (cp.asarray(x), y, dtype(2.5), n))
    np.testing.assert_array_equal(y.get(), (dtype(2.5) * x + 1).astype(dtype))


@needs_gxx
def test_kernel_argument_checks(cp, saxpy):
    k, x, y = saxpy["float"], cp.ones(4, cp.float32), cp.ones(4, cp.float32)
    with pytest.raises(TypeError, match="takes 4 arguments"):
        k(1, 32, (x, y, np.float32(1)))
    with pytest.raises(TypeError, match="float64 array, but the kernel reads float"):
        k(1, 32, (x.astype(cp.float64), y, np.float32(1), 4))
    with pytest.raises(TypeError, match="CuPy passes this float as float64"):
        k(1, 32, (x, y, 1.0, 4))                 # a Python float is a double on the GPU
    with pytest.raises(TypeError, match="int32 .4 bytes. but the kernel reads long long"):
        k(1, 32, (x, y, np.float32(1), np.int32(4)))
    with pytest.raises(ValueError, match="not C-contiguous"):
        k(1, 32, (cp.ones(8, cp.float32)[::2], y, np.float32(1), 4))
    with pytest.raises(TypeError, match="takes a cupy.ndarray"):
        k(1, 32, (np.ones(4, np.float32), y, np.float32(1), 4))
    with pytest.raises(cp.cuda.driver.CUDADriverError, match="block"):
        k(1, 2048, (x, y, np.float32(1), 4))
    with pytest.raises(cp.cuda.driver.CUDADriverError, match="grid"):
        k((1, 70000), 32, (x, y, np.float32(1), 4))
    k(1, (8, 8, 16), (x, y, np.float32(1), 4))  # 1024 threads: the limit itself is fine


@needs_gxx
def test_compile_error_shows_the_compiler_message(cp):
    k = cp.RawKernel('extern "C" __global__ void bad(float* x) { x[0] = no_such_fn(x[0]); }',
                     "bad")
    with pytest.raises(cp.cuda.compiler.CompileException, match="no_such_fn"):
        k.compile()
    with pytest.raises(cp.cuda.driver.CUDADriverError, match="named symbol not found"):
        cp.RawKernel(SAXPY, "other_name")(1, 1, ())


ERFINV = r"""
extern "C" __global__ void erfinv_test(const double* x, double* y, const float* xf, float* yf,
                                       long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        y[i] = erfinv(x[i]);
        yf[i] = erfinvf(xf[i]);
    }
}
"""


@needs_gxx
def test_erfinv_in_the_shim(cp):
    from math import erf, erfc
    rng = np.random.default_rng(0)
    tail = np.logspace(-16, -1, 300)
    x = np.concatenate([rng.uniform(-1, 1, 3000), 1 - tail, tail - 1, np.logspace(-300, -1, 50),
                        [np.nextafter(1.0, 0.0), 0.5, -0.0, 1.0, -1.0, 1.5, np.nan]])
    y, yf = cp.empty(x.size), cp.empty(x.size, cp.float32)
    cp.RawKernel(ERFINV, "erfinv_test")(64, 128, (cp.asarray(x), y, cp.asarray(x, cp.float32),
                                                  yf, x.size))
    y, yf = y.get(), yf.get()
    assert y[-5] == 0 and np.signbit(y[-5]) and y[-4] == np.inf and y[-3] == -np.inf
    assert np.isnan(y[-2:]).all() and np.isnan(yf[-2:]).all()
    fin = np.isfinite(y) & (np.abs(x) < 1)
    back = np.array([erf(v) if abs(v) < 1 else np.sign(v) * (1 - erfc(abs(v))) for v in y[fin]])
    # erf(erfinv(x)) = x to rounding; near +-1 compare 1 - |x| (erfc keeps its precision)
    big = np.abs(x[fin]) > 0.5
    np.testing.assert_allclose(back[~big], x[fin][~big], rtol=4e-16, atol=1e-300)
    np.testing.assert_allclose([erfc(v) for v in np.abs(y[fin][big])], 1 - np.abs(x[fin][big]),
                               rtol=1e-14)
    special = pytest.importorskip("scipy.special")
    np.testing.assert_allclose(y[fin], special.erfinv(x[fin]), rtol=1e-15, atol=0)
    xf = x.astype(np.float32)   # erfinvf: the double result rounded (CUDA's is within 2 ulp)
    np.testing.assert_array_max_ulp(yf, special.erfinv(xf.astype(np.float64)).astype(np.float32),
                                    maxulp=1)


@needs_gxx
def test_reduction_kernel(cp):
    ssq = cp.ReductionKernel(
        "float32 x, T w", "float32 out0", "sq(x) * w", "a + b", "out0 = a", "0.0f", "ssq",
        reduce_type="float", preamble="__device__ __forceinline__ float sq(float v) "
                                      "{ return v * v; }")
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    gx, w = cp.asarray(x), cp.asarray(np.float32(0.5))
    for axis in (None, 1, (0, 2), -1):
        got = ssq(gx, w, axis=axis)
        assert isinstance(got, cp.ndarray)
        np.testing.assert_allclose(got.get(), np.sum(x * x * 0.5, axis=axis), rtol=1e-6)
    assert ssq(gx, w, axis=1, keepdims=True).shape == (2, 1, 4)
    assert ssq(cp.zeros((0, 3), cp.float32), w, axis=0).get().tolist() == [0.0] * 3
    nanmax = cp.ReductionKernel("T x", "T m", "x", "(a > b || a != a) ? a : b", "m = a",
                                "-INFINITY", "nanmax")
    assert np.isnan(float(nanmax(cp.asarray([1.0, np.nan, 3.0]))))
    with pytest.raises(TypeError, match="Type is mismatched"):
        ssq(gx.astype(cp.float64), w)
    with pytest.raises(TypeError, match="Unsupported type"):
        ssq(x, w)


# ---------------------------------------------------------------------------------------------
# funcgrad's generated kernels, run in the simulator against funcgrad's NumPy interpreter

N = 1000
_rng = np.random.default_rng(1)


def _data(aval):
    """Inputs with the awkward values: NaN, +-inf, +-0, shifts beyond the bit width."""
    shape, dtype = aval.shape, np.dtype(aval.dtype)
    if dtype.kind == "f":
        x = _rng.normal(0, 3, shape).astype(dtype)
        if x.ndim:   # at other places in each input, so that one NaN meets a number
            x[_rng.choice(x.size, 8, replace=False)] = [np.nan, np.inf, -np.inf, 0.0, -0.0,
                                                         1e-30, -1.0, 1.0]
        return x
    if dtype.kind == "b":
        return _rng.random(shape) < 0.5
    lo = 0 if dtype.kind == "u" else -40
    return _rng.integers(lo, 40, shape).astype(dtype)


def _f32(x):
    return x.astype(np.float32)


PROGRAMS = {
    "chain_f32": (lambda x, y: fnp.tanh(x * 2.0 + y) - fnp.exp(-x), (np.float32,) * 2),
    "chain_f64": (lambda x, y: fnp.tanh(x * 2.0 + y) - fnp.exp(-x), (np.float64,) * 2),
    "special": (lambda x: fg.nn.sigmoid(x) + fg.lax.erf(x) + fg.lax.erf_inv(x / 10)
                + fg.lax.rsqrt(fnp.abs(x) + 1), (np.float32,)),
    "select_nan": (lambda x, y: (fnp.where(x > 0, x, 0.01 * y) * 2, fnp.maximum(x, y) * 2,
                                 fnp.minimum(x, 0.5) * 2, fnp.sign(x) * 2), (np.float64,) * 2),
    "powers": (lambda x, y: x ** 3 + (fnp.abs(y) + 1) ** -2 + fnp.isfinite(x), (np.float32,) * 2),
    "int_ops": (lambda i, j: (i * 3 + j) // 7 + (i % 5) - fnp.abs(j) + fnp.maximum(i, j)
                + i ** 2, (np.int32,) * 2),
    "shifts": (lambda i, j: (i << j) ^ (i >> j) ^ fg.lax.shift_right_logical(i, j),
               (np.int32,) * 2),
    "shifts_u64": (lambda i, j: (i << j) | (i >> j), (np.uint64,) * 2),
    "casts": (lambda x, i: (x > 0).astype(np.float32) + _f32(i) * x
              + fg.lax.logistic(x.astype(np.float64)).astype(np.float32), (np.float32, np.int64)),
    "scalar_input": (lambda x, s: x * s + s / 3.0, (np.float32, "scalar")),
}


def _bodies(name):
    fn, kinds = PROGRAMS[name]
    args = [np.float32(1.5) if k == "scalar" else np.zeros(N, k) for k in kinds]
    closed = fuse(optimize(fg.make_jaxpr(fn)(*args)))
    return [e.params["jaxpr"] for e in closed.jaxpr.eqns if e.primitive.name == "fused"]


@needs_gxx
@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_generated_kernel_matches_numpy(cp, name):
    bodies = _bodies(name)
    assert bodies, f"{name}: nothing fused"
    for k, body in enumerate(bodies):
        src = fused_kernel_source(body, f"{name}_{k}")
        raw = cp.RawKernel(src.source, src.name)
        inputs = [_data(v.aval) for v in body.jaxpr.invars]
        with np.errstate(all="ignore"):
            want = eval_jaxpr(body.jaxpr, body.consts, *inputs)
        for grid, block in ((3, 64), (16, 256)):   # grid-stride loop, then one thread per element
            outs = [cp.empty(N, dt) for _, dt in src.outputs]
            raw(grid, block, (*[cp.asarray(np.ravel(a)) for a in inputs], *outs, np.int64(N)))
            for got, w in zip(outs, want):   # (device arrays when FUNCGRAD_BACKEND=gpu)
                w = np.broadcast_to(w.get() if isinstance(w, cp.ndarray) else np.asarray(w), (N,))
                assert got.dtype == w.dtype
                if w.dtype.kind == "f":
                    tol = 2e-6 if w.dtype == np.float32 else 1e-13
                    np.testing.assert_allclose(got.get(), w, rtol=tol, atol=tol,
                                               err_msg=f"{src.name}\n{src.source}")
                else:
                    np.testing.assert_array_equal(got.get(), w, err_msg=src.source)


@needs_gxx
def test_jit_runs_its_kernels_on_the_simulator(cp):
    def f(x, y):   # an elementwise chain: one RawKernel
        return fnp.tanh(x * 2.0 + y) - fnp.exp(-x) * 0.5

    def g(x, y):   # chains feeding reductions: ReductionKernels
        return fnp.sum(fnp.exp(x) * y, axis=1) + fnp.max(fnp.tanh(x) + 1.0, axis=1)

    x, y = np.random.default_rng(2).normal(size=(2, 30, 10)).astype(np.float32)
    want_f = np.tanh(x * 2 + y) - np.exp(-x) * 0.5
    want_g = np.sum(np.exp(x) * y, axis=1) + np.max(np.tanh(x) + 1, axis=1)
    gx, gy = fg.device_put(x, "gpu"), fg.device_put(y, "gpu")
    for fn, want, tol in ((f, want_f, 2e-6), (g, want_g, 1e-5)):
        out = fg.jit(fn)(gx, gy)
        assert isinstance(out, cp.ndarray)
        np.testing.assert_allclose(out.get(), want, rtol=tol, atol=tol)


@needs_gxx
def test_jit_grad_of_a_scaled_layer_norm_on_the_simulator(cp):
    # Regression: the CuPy fusion pass (broadcast operands) raised "fusion groups form a cycle"
    # on this gradient: a group entered at one member and left at another was not a path.
    def layer_norm(x):
        mu = fnp.mean(x, axis=-1, keepdims=True)
        xc = x - mu
        return xc * fg.lax.rsqrt(fnp.mean(xc * xc, axis=-1, keepdims=True) + 1e-5)

    f = fg.grad(lambda x, g: fnp.sum(layer_norm(x) * g), argnums=(0, 1))
    rng = np.random.default_rng(3)
    x, g = rng.normal(size=(4, 8)).astype(np.float32), rng.normal(size=8).astype(np.float32)
    want = f(x, g)
    got = fg.jit(f)(fg.device_put(x, "gpu"), fg.device_put(g, "gpu"))
    for a, b in zip(got, want):
        assert isinstance(a, cp.ndarray)
        np.testing.assert_allclose(a.get(), b, rtol=1e-5, atol=1e-5)
