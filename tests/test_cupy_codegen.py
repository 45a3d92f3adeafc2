"""The CUDA code generator of the CuPy backend, checked without a GPU.

For each fusion test program (elementwise chains with broadcast scalars, float32 and float64,
unary and binary math, select, comparisons, casts, integer and bitwise ops) jit's CuPy code
generator runs as far as it can without CuPy: the program is optimized and fused, every fused
group becomes CUDA source, and the source is

  * checked as text (one kernel per chain, float32 math as `expf`/`tanhf`, literals inline,
    scalars read at [0]), and
  * compiled with `nvcc --ptx` when nvcc is on this machine (CUDA_HOME, /usr/local/cuda or PATH),
    so a kernel that would not compile on a GPU machine fails here, in CI, without a GPU.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest

import funcgrad as fg
import funcgrad.numpy as fnp
from funcgrad.backends import cuda_source as cs
from funcgrad.backends import cupy_backend as cb
from funcgrad.backends import cupy_kernels as ck
from funcgrad.transforms.fusion import fuse
from funcgrad.transforms.passes import optimize


def _find_nvcc():
    for d in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if d and os.path.exists(os.path.join(d, "bin", "nvcc")):
            return os.path.join(d, "bin", "nvcc")
    return shutil.which("nvcc")


NVCC = _find_nvcc()
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not found (CUDA_HOME, /usr/local/cuda "
                                                    "or PATH): CUDA sources not compiled")


def nvcc_compile(sources, tmp_path):
    """Compile CUDA sources to PTX with nvcc; fail with the compiler's message and the source."""
    cu = tmp_path / "kernels.cu"
    cu.write_text("\n".join(sources))
    arch = os.environ.get("FUNCGRAD_NVCC_ARCH", "compute_80")
    proc = subprocess.run([NVCC, "--ptx", f"-arch={arch}", "-std=c++17", *ck.KERNEL_OPTIONS, "-o",
                           str(tmp_path / "kernels.ptx"), str(cu)],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        pytest.fail(f"nvcc failed:\n{proc.stderr}\n--- source ---\n{cu.read_text()}")
    return (tmp_path / "kernels.ptx").read_text()


def kernels_of(f, *args):
    """The CUDA kernels jit's CuPy generator makes for f(*args), and its Python driver."""
    closed = fuse(optimize(fg.make_jaxpr(f)(*args)), **cb.FUSION)  # jit's passes for CuPy
    source, _, kernels, _, _ = cb.generate(closed.jaxpr)
    return kernels, source


rng = np.random.default_rng(0)


def arr(shape, dtype=np.float32):
    return rng.normal(size=shape).astype(dtype)


def ints(shape, dtype=np.int32):
    return rng.integers(-50, 50, size=shape).astype(dtype)


def _gelu(x):
    return 0.5 * x * (1 + fnp.tanh(0.7978845608 * (x + 0.044715 * x ** 3)))


# name -> (function, args, texts the kernel source must contain)
PROGRAMS = {
    "chain_f32": (lambda x, y: fnp.tanh(x * 2.0 + y) - fnp.exp(-x), (arr(8), arr(8)),
                  ["tanhf(", "expf(", "2.0f", "const float"]),
    "chain_f64": (lambda x, y: fnp.tanh(x * 2.0 + y) - fnp.exp(-x),
                  (arr(8, np.float64), arr(8, np.float64)), ["tanh(", "exp(", "const double"]),
    "scalar_broadcast": (lambda x, s: x * s + s / 3.0, (arr((4, 5)), np.float32(1.5)),
                         ["in1[0]", "in0[i]"]),
    "leaky_relu_select": (lambda x: fnp.where(x > 0, x, 0.01 * x) + 1.0, (arr(16),),
                          [" ? ", " > "]),
    "max_min_nan": (lambda x, y: fnp.maximum(x, y) * fnp.minimum(x, 0.5), (arr(6), arr(6)),
                    ["!= "]),
    "casts": (lambda x, y: (x > y).astype(np.float32) + x.astype(np.float64) * 2,
              (arr(7), arr(7)), ["(double)", "const bool"]),
    "gelu": (_gelu, (arr((3, 4)),), ["tanhf("]),
    "unary_f32": (lambda x: (fnp.sin(x) + fnp.cos(x) + fnp.log1p(x * x) + fnp.expm1(x)
                             + fnp.arctan(x) + fnp.sqrt(fnp.abs(x)) + fnp.floor(x)
                             + fnp.ceil(x) + fnp.round(x) + fnp.sign(x) + fnp.cbrt(x)
                             + fnp.sinh(x) + fnp.cosh(x) + fnp.arcsinh(x)),
                  (arr(10),), ["sinf(", "log1pf(", "rintf(", "cbrtf(", "fabsf("]),
    "unary_f64": (lambda x: (fnp.tan(x) + fnp.arcsin(x / 10) + fnp.arccos(x / 10)
                             + fnp.exp2(x) + fnp.log(fnp.abs(x) + 1) + fnp.arctanh(x / 10)
                             + fnp.arccosh(fnp.abs(x) + 1)),
                  (arr(10, np.float64),), ["tan(", "asin(", "acos(", "exp2(", "atanh("]),
    "special": (lambda x: fg.nn.sigmoid(x) + fg.lax.erf(x) + fg.lax.erf_inv(x / 10)
                + fg.lax.rsqrt(fnp.abs(x) + 1), (arr(9),), ["expf(", "copysignf(", "logf("]),
    "powers": (lambda x, y: x ** 3 + (fnp.abs(y) + 1) ** -2 + fnp.power(fnp.abs(x) + 1, y)
               + fnp.arctan2(x, y), (arr(5), arr(5)), ["powf(", "atan2f("]),
    "int_ops": (lambda i, j: (i * 3 + j) // 7 + (i % 5) - fnp.abs(j) + fnp.maximum(i, j),
                (ints(12), ints(12)), ["const int", "%"]),
    "bitwise": (lambda i, j: (i & j) | (i ^ 3) | (~j) | (i << 2) | (i >> 1),
                (ints(12), ints(12)), ["<<", ">>", "~"]),
    "logic": (lambda x, y: fnp.where((x > 0) & ~(y < 0) | (x == y), x, y) * 2,
              (arr(6), arr(6)), ["&&", "!"]),
    "int64_uint8": (lambda i, u: (i.astype(np.int64) * 1000000007) + u.astype(np.int64),
                    (ints(4), ints(4, np.uint8)), ["long long", "unsigned char"]),
    "inf_nan_literals": (lambda x: fnp.where(x > 0, x, -fnp.inf) + fnp.where(x < 5, 0.0, fnp.nan),
                         (arr(4),), ["__int_as_float(0xff800000)",
                                        "__longlong_as_double(0x7ff8000000000000LL)"]),
    "bias_relu": (lambda h, b: fnp.maximum(h + b, 0.0) * 2.0, (arr((4, 5)), arr(5)),
                  ["in1[(i % 5LL)]", "in0[i]"]),
    "keepdims_shift": (lambda x, m: fnp.exp(x - m) * 0.5, (arr((3, 4)), arr((3, 1))),
                       ["in1[(i / 4LL)]"]),
    "broadcast_3d": (lambda x, c: fnp.tanh(x * c) + 1.0, (arr((2, 3, 4)), arr((3, 1))),
                     ["in1[((i / 4LL) % 3LL)]"]),
    "adam_update": (lambda p, g, m, v: p - 0.001 * (0.9 * m + 0.1 * g)
                    / (fnp.sqrt(0.999 * v + 0.001 * g * g) + 1e-8),
                    (arr(32), arr(32), arr(32), np.abs(arr(32))), ["sqrtf("]),
}


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_fused_kernel_source(name):
    fn, args, needles = PROGRAMS[name]
    kernels, driver = kernels_of(fn, *args)
    assert kernels, f"no fused kernel for {name}:\n{driver}"
    for k in kernels:
        assert k.source.startswith(f'extern "C" __global__ void {k.name}(')
        assert "long long n" in k.source and "out0[i] = " in k.source
        assert f"# CUDA kernel {k.name}" in driver  # the driver launches it
    text = "\n".join(k.source for k in kernels)
    for needle in needles:
        assert needle in text, f"{needle!r} missing from the {name} kernel:\n{text}"


def test_an_elementwise_chain_is_one_kernel():
    fn, args, _ = PROGRAMS["adam_update"]
    kernels, driver = kernels_of(fn, *args)
    assert len(kernels) == 1
    assert "fused" in driver and driver.count("# CUDA kernel") == 1
    k = kernels[0]
    assert [dt for _, dt, _ in k.inputs] == [np.dtype(np.float32)] * 4
    assert [dt for _, dt in k.outputs] == [np.dtype(np.float32)]


@pytest.mark.parametrize("in_shape,out_shape", [
    ((4, 5), (4, 5)), ((), (4, 5)), ((5,), (4, 5)), ((4, 1), (4, 5)), ((1, 5), (4, 5)),
    ((3, 1, 5), (2, 3, 4, 5)), ((2, 1, 4, 1), (2, 3, 4, 5)), ((1, 1), (3, 2))])
def test_broadcast_index_matches_numpy(in_shape, out_shape):
    """The C index expression of a broadcast input, evaluated for every output element, reads
    the element NumPy's broadcasting reads."""
    expr = cs.broadcast_index(in_shape, out_shape).replace("LL", "")
    expr = expr.replace("/", "//")
    want = np.broadcast_to(np.arange(max(1, int(np.prod(in_shape)))).reshape(in_shape),
                           out_shape).ravel()
    got = [eval(expr, {"i": i}) for i in range(int(np.prod(out_shape)))]
    assert got == list(want)


def test_matmuls_stay_outside_kernels_and_reductions_fold_into_their_chain():
    def f(x, w):
        h = fnp.tanh(x @ w + 1.0) * 2.0
        return fnp.sum(fnp.exp(h) - 1.0, axis=1)

    kernels, driver = kernels_of(f, arr((4, 3)), arr((3, 5)))
    assert "dot_general" in driver
    assert all("dot_general" not in k.source for k in kernels)
    (red,) = [k for k in kernels if isinstance(k, cs.ReductionSource)]
    assert "# cupy.ReductionKernel" in driver and red.reduce_expr == "a + b"
    assert "expf(" in red.preamble and "tanhf(" in red.preamble
    assert "reduce_sum" not in driver.replace(red.name, "")  # no separate reduction step


REDUCTIONS = {
    "sum_f32": (lambda x, y: fnp.sum(fnp.multiply(fnp.exp(x), y), axis=0),
                (arr((6, 5)), arr((6, 5)))),
    "max_f64_nan": (lambda x: fnp.max(fnp.tanh(x) + 1.0, axis=1), (arr((3, 4), np.float64),)),
    "min_int": (lambda i, j: fnp.min(i * 3 - j, axis=(0, 1)), (ints((4, 5)), ints((4, 5)))),
    "logsumexp_inner": (lambda x: fnp.sum(fnp.exp(x * 2.0 - 1.0), axis=-1), (arr((2, 3, 4)),)),
}


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
def test_reduction_fed_by_a_chain_is_one_reduction_kernel(name):
    fn, args = REDUCTIONS[name]
    kernels, driver = kernels_of(fn, *args)
    (k,) = kernels
    assert isinstance(k, cs.ReductionSource), driver
    assert k.out_dtype == np.asarray(fn(*args)).dtype
    assert k.map_expr.startswith(f"{k.name}_map(") and "__device__" in k.preamble
    if "max" in name:
        neg_inf = "__longlong_as_double(0xfff0000000000000LL)"
        assert "a != a" in k.reduce_expr and k.identity == neg_inf
    if "min_int" in name:
        assert k.identity == "((int)2147483647LL)" and "a != a" not in k.reduce_expr


def test_a_chain_used_twice_is_stored_then_reduced():
    def f(x):
        e = fnp.exp(x) * 2.0
        return fnp.sum(e, axis=0), e

    kernels, driver = kernels_of(f, arr((3, 4)))
    assert not any(isinstance(k, cs.ReductionSource) for k in kernels)
    assert "reduce_sum" in driver


@needs_nvcc
def test_every_fusion_program_compiles_with_nvcc(tmp_path):
    sources = []
    for i, name in enumerate(sorted(PROGRAMS)):
        fn, args, _ = PROGRAMS[name]
        kernels, _ = kernels_of(fn, *args)
        for k in kernels:  # unique names: the programs go into one translation unit
            sources.append(k.source.replace(f" {k.name}(", f" p{i}_{k.name}(", 1))
    ptx = nvcc_compile(sources, tmp_path)
    assert ptx.count(".entry") == len(sources)


@needs_nvcc
def test_every_fused_reduction_compiles_with_nvcc(tmp_path):
    sources = []
    for name in sorted(REDUCTIONS):
        fn, args = REDUCTIONS[name]
        kernels, _ = kernels_of(fn, *args)
        sources += [k.check_source() for k in kernels]
    ptx = nvcc_compile(sources, tmp_path)
    assert ptx.count(".entry") == len(sources)


@needs_nvcc
def test_nvcc_rejects_a_broken_kernel(tmp_path):
    """The compile check is real: a kernel calling an unknown function fails."""
    cu = tmp_path / "bad.cu"
    cu.write_text('extern "C" __global__ void k(float* x) { x[0] = no_such_function(x[0]); }\n')
    proc = subprocess.run([NVCC, "--ptx", "-o", str(tmp_path / "bad.ptx"), str(cu)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "no_such_function" in proc.stderr


def test_kernel_compile_error_shows_source_and_message():
    """A kernel that fails to compile raises with the generated source and the compiler text."""
    fn, args, _ = PROGRAMS["chain_f32"]
    kernels, _ = kernels_of(fn, *args)
    k = kernels[0]

    class FakeRawKernel:
        def __init__(self, source, name, options=()):
            self.source = source

        def compile(self):
            raise RuntimeError("error: identifier \"tanhf\" is undefined (fake NVRTC)")

    class FakeCupy:
        RawKernel = FakeRawKernel

    ck._raw_kernels.pop(k.source, None)
    with pytest.raises(ck.KernelCompileError) as info:
        ck.Launcher(FakeCupy, k, (8,))
    msg = str(info.value)
    assert "fake NVRTC" in msg and k.name in msg
    assert 'extern "C" __global__' in msg and "tanhf(" in msg


def test_unsupported_dtype_leaves_the_group_to_the_interpreter():
    def f(z):
        return z * 2 + 1

    z = (arr(3) + 1j * arr(3)).astype(np.complex64)
    kernels, driver = kernels_of(f, z)
    assert kernels == [] and "fused" in driver


def test_literal_formatting():
    assert cs.c_literal(0.1, np.float32) == f"{float(np.float32(0.1))!r}f"
    assert cs.c_literal(2, np.float64) == "2.0"
    assert cs.c_literal(np.inf, np.float64) == "__longlong_as_double(0x7ff0000000000000LL)"
    assert cs.c_literal(-3, np.int32) == "((int)-3LL)"
    assert cs.c_literal(True, np.bool_) == "true"


@pytest.mark.cpu_only
def test_jit_lowering_on_cpu_is_unchanged():
    """On NumPy inputs jit still uses the NumPy generator (no kernels, no CuPy needed)."""
    f = fg.jit(lambda x: fnp.tanh(x) * 2 + 1)
    text = f.lower(arr(4)).as_text()
    assert "def run(" in text and "__global__" not in text
