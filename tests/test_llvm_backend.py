"""The compiled CPU backend ("llvm"): agreement with the NumPy generator on whole programs, the
kernel cache (in the process, by pattern, and on disk), threads, merged groups, and copy-free
matmuls. tests/test_lowering.py checks every primitive's kernel against NumPy one by one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

import funcgrad as fg
import funcgrad.numpy as fnp
from funcgrad.backends import llvm_compiler, llvm_loader, llvm_runtime, llvm_threads
from funcgrad.lax import products

pytestmark = [pytest.mark.cpu_only,
              pytest.mark.skipif(llvm_runtime.available() is not None,
                                 reason=str(llvm_runtime.available()))]

rng = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _on_the_llvm_backend():
    """These tests are about the llvm backend: also when the suite runs on the NumPy one
    (FUNCGRAD_CPU_BACKEND=numpy)."""
    with fg.config.setting("cpu_backend", "llvm"):
        yield


def on(backend, f, *args):
    with fg.config.setting("cpu_backend", backend):
        jf = fg.jit(f)
        return jf(*args), jf.lower(*args).as_text()


def mlp_loss(params, x, y):
    h = x
    for w, b in params[:-1]:
        h = fg.nn.relu(h @ w + b)
    w, b = params[-1]
    logp = fg.nn.log_softmax(h @ w + b)
    return -fnp.mean(fnp.take_along_axis(logp, y[:, None], axis=1))


def layer_norm(x, scale, bias):
    mu = fnp.mean(x, axis=-1, keepdims=True)
    var = fnp.mean((x - mu) ** 2, axis=-1, keepdims=True)
    return (x - mu) / fnp.sqrt(var + 1e-5) * scale + bias


def _deep_chain(x, s):
    for i in range(12):
        x = fnp.tanh(x * s + 0.1) if i % 3 else fnp.exp(-x * x) * s
    return fnp.sum(fnp.where(x > 0.5, x, 0.5 * x))


def _rotary(x, angles):
    x = fnp.transpose(x, (0, 2, 1, 3))
    half = x.shape[-1] // 2
    rotated = fnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * fnp.cos(angles) + rotated * fnp.sin(angles)


PROGRAMS = {
    "mlp_grad": (fg.value_and_grad(mlp_loss),
                 ([(rng.normal(size=(16, 32)).astype(np.float32), np.zeros(32, np.float32)),
                   (rng.normal(size=(32, 5)).astype(np.float32), np.zeros(5, np.float32))],
                  rng.normal(size=(8, 16)).astype(np.float32), rng.integers(0, 5, 8))),
    "layer_norm_grad": (fg.grad(lambda x, s, b: fnp.sum(layer_norm(x, s, b) ** 2),
                                argnums=(0, 1, 2)),
                        (rng.normal(size=(6, 40)).astype(np.float32),
                         rng.normal(size=40).astype(np.float32),
                         rng.normal(size=40).astype(np.float32))),
    "gelu_chain": (lambda x: fg.nn.gelu(x) * fnp.exp(-x * x) + fnp.log(fnp.abs(x) + 1.0),
                   (rng.normal(size=(3, 50)).astype(np.float32),)),
    "softmax": (lambda x: fg.nn.softmax(x, axis=-1), (rng.normal(size=(4, 3, 9)) * 5,)),
    "deep_chain_grad": (fg.value_and_grad(_deep_chain, argnums=(0, 1)),
                        (rng.normal(size=3001).astype(np.float32), np.float32(0.7))),
    # NumPy results laid out as their transposed operands (neg, concatenate) read by a kernel
    "rotary_on_a_transposed_view": (_rotary, (rng.normal(size=(3, 9, 4, 8)).astype(np.float32),
                                              rng.normal(size=(9, 8)).astype(np.float32))),
    "scaled_layer_norm_grad": (fg.grad(lambda x, g: fnp.sum(layer_norm(x, 1.0, 0.0) * g),
                                       argnums=(0, 1)),
                               (rng.normal(size=(4, 8)).astype(np.float32),
                                rng.normal(size=8).astype(np.float32))),
    "ints_and_bools": (lambda i, j: fnp.where((i % 3 == 0) | (j > i), i * j - 7, i // (j + 100)),
                       (rng.integers(-50, 50, 30), rng.integers(-50, 50, 30))),
}


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_llvm_and_numpy_backends_agree(name):
    f, args = PROGRAMS[name]
    got, text = on("llvm", f, *args)
    want, _ = on("numpy", f, *args)
    assert "compiled kernel" in text
    for g, w in zip(fg.tree_util.tree_leaves(got), fg.tree_util.tree_leaves(want)):
        assert g.dtype == w.dtype and g.shape == w.shape
        if w.dtype.kind == "f":  # exp/log/tanh within ulps, sums in another order
            np.testing.assert_allclose(g, w, rtol=3e-5, atol=1e-6)
        else:
            np.testing.assert_array_equal(g, w)


def test_equal_kernels_compile_once_whatever_the_shapes():
    def f(x, b):
        return fnp.maximum(x * 2.0 + b, 0.0)

    f(np.ones((3, 4), np.float32), np.ones(4, np.float32))  # (warm: eager)
    fg.jit(f)(np.ones((3, 4), np.float32), np.ones(4, np.float32))
    before = dict(llvm_runtime.stats)
    out = fg.jit(f)(np.ones((50, 7), np.float32), np.ones(7, np.float32))  # another shape
    assert llvm_runtime.stats["kernels"] == before["kernels"]  # the same compiled kernel
    np.testing.assert_array_equal(out, np.full((50, 7), 3.0, np.float32))


def test_kernels_are_kept_on_disk_for_new_processes(tmp_path):
    code = ("import numpy as np, funcgrad as fg, funcgrad.numpy as fnp\n"
            "from funcgrad.backends import llvm_runtime as r\n"
            "f = fg.jit(lambda x: fnp.tanh(x * 3.0 - 1.0) * x + 0.5)\n"
            "print(float(f(np.linspace(-1, 1, 64, dtype=np.float32)).sum()),\n"
            "      r.stats['modules compiled'], r.stats['modules loaded'])\n")
    env = dict(os.environ, FUNCGRAD_CACHE_DIR=str(tmp_path), FUNCGRAD_CPU_BACKEND="llvm")
    runs = [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                           check=True).stdout.split() for _ in range(2)]
    assert runs[0][1:] == ["1", "0"] and runs[1][1:] == ["0", "1"]  # compiled, then loaded
    assert runs[0][0] == runs[1][0]
    files = list(tmp_path.rglob("*.o"))
    assert len(files) == 1 + llvm_threads.supported()  # the kernels (and the pool)
    for file in files:  # a damaged file is compiled again
        file.write_bytes(file.read_bytes()[:-10])
    again = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                           text=True, check=True).stdout.split()
    assert again == runs[0]


_FRESH_PROCESS = """\
import sys, numpy as np, funcgrad as fg, funcgrad.numpy as fnp
from funcgrad.backends import llvm_runtime as r
f = fg.jit(lambda x: fnp.tanh(x * 3.0 - 1.0) * fnp.exp(-x) + 0.5)
x = np.linspace(-1, 1, 1000, dtype=np.float32)
print(f(x).tobytes().hex(), r.stats['modules compiled'], 'llvmlite' in sys.modules)
"""


@pytest.mark.parametrize("where", ["process", "in-process"])
def test_llvm_runs_in_its_own_process_unless_told(tmp_path, where):
    # LLVM (~45 MiB resident) stays out of the process that runs the kernels: a compiler
    # process makes the object file, llvm_loader places it (x86-64 Linux)
    env = dict(os.environ, FUNCGRAD_CACHE_DIR=str(tmp_path), FUNCGRAD_CPU_BACKEND="llvm",
               FUNCGRAD_KERNEL_COMPILER=where)
    out, compiled, llvm_here = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS], env=env, capture_output=True, text=True,
        check=True).stdout.split()
    assert compiled == "1"
    assert llvm_here == str(where == "in-process" or not llvm_loader.usable())
    x = np.linspace(-1, 1, 1000, dtype=np.float32)
    want = fg.jit(lambda x: fnp.tanh(x * 3.0 - 1.0) * fnp.exp(-x) + 0.5)(x)
    assert bytes.fromhex(out) == want.tobytes()  # the same machine code, however placed


def test_the_compiler_process_comes_back_after_leaving_idle():
    compiler = llvm_runtime.CompilerProcess(idle=0.2)
    text = ("define i64 @fgk_test(i64 %a) #0 {\n  %b = mul i64 %a, 3\n  ret i64 %b\n}\n")
    first = compiler.compile(text)
    old = compiler.process
    old.wait(timeout=30)  # it leaves when idle
    assert compiler.compile(text) == first and compiler.process is not old
    with pytest.raises(RuntimeError, match="could not compile(.|\n)*%nothing"):
        compiler.compile("define i64 @fgk_broken() #0 {\n  ret i64 %nothing\n}\n")
    compiler.process.stdin.close()  # (it leaves when its input ends)
    compiler.process.wait(timeout=30)


@pytest.mark.skipif(not llvm_loader.usable(), reason="llvm_loader places x86-64 Linux objects")
def test_the_loader_places_code_as_llvm_does():
    import ctypes

    text = ("@table = internal constant [4 x double] [double 1.5, double -2.0, double 0.25, "
            "double 8.0]\n"
            "declare double @fmod(double, double)\n"
            "define double @fgk_pick(i64 %i, double %x) #0 {\n"
            "  %p = getelementptr [4 x double], ptr @table, i64 0, i64 %i\n"
            "  %t = load double, ptr %p\n"
            "  %y = fmul double %t, %x\n"
            "  %r = call double @fmod(double %y, double 3.0)\n"
            "  ret double %r\n}\n")
    data = llvm_compiler.compile_ir(text)
    pick = ctypes.CFUNCTYPE(ctypes.c_double, ctypes.c_int64, ctypes.c_double)(
        llvm_loader.load(data)["fgk_pick"])
    assert [pick(i, 5.0) for i in range(4)] == [np.fmod(t * 5.0, 3.0)
                                                for t in (1.5, -2.0, 0.25, 8.0)]
    # what it does not handle, it refuses (the runtime then loads with LLVM's loader)
    writable = "@count = global i64 0\ndefine i64 @fgk_n() #0 {\n  ret i64 1\n}\n"
    with pytest.raises(llvm_loader.Unsupported, match="writable"):
        llvm_loader.load(llvm_compiler.compile_ir(writable))
    assert ctypes.CFUNCTYPE(ctypes.c_int64)(
        llvm_runtime.load_object(llvm_compiler.compile_ir(writable))("fgk_n"))() == 1
    for damaged in (b"not an object file", data[:-50], data[:100]):
        with pytest.raises(llvm_loader.Unsupported):
            llvm_loader.load(damaged)


def test_two_threads_split_large_kernels_with_the_same_result():
    def f(x, y):
        return fnp.tanh(x * y + 1.0) * x - y, fnp.sum(fnp.exp(x - 1.0) * y, axis=1)

    x = rng.normal(size=(512, 1024)).astype(np.float32)
    y = rng.normal(size=(512, 1024)).astype(np.float32)
    with fg.config.setting("cpu_threads", 1):
        one, text1 = on("llvm", f, x, y)
    with fg.config.setting("cpu_threads", 2):
        two, text2 = on("llvm", f, x, y)
    assert "Parallel" not in text1
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)
    prog = fg.jit(f)
    with fg.config.setting("cpu_threads", 2):
        prog(x, y)
        namespace = _namespace(prog, x, y)
    # two loop ranges (the native pool's two threads), else the Python helper
    fn = [k for k, v in namespace.items()
          if k.startswith("dims2_") or isinstance(v, llvm_runtime.Parallel)]
    assert fn, "no kernel split across threads"


@pytest.mark.parametrize("a_shape,b_shape,transpose", [
    ((128, 300), (300, 96), False),       # rows of a split
    ((1, 300), (300, 96), False),         # one row: the columns of b split
    ((6, 33, 40), (6, 40, 17), False),    # the batch axis split
    ((1, 33, 40), (1, 40, 17), True),     # one batch: rows, a read transposed
])
def test_parallel_matmul_is_np_matmul(a_shape, b_shape, transpose):
    a = rng.normal(size=a_shape).astype(np.float32)
    b = rng.normal(size=b_shape).astype(np.float32)
    if transpose:
        a = np.ascontiguousarray(np.swapaxes(a, -1, -2)).swapaxes(-1, -2)
    np.testing.assert_array_equal(llvm_runtime.parallel_matmul(a, b), np.matmul(a, b))


def test_split_runs_every_part_once_and_reports_errors():
    seen = []
    llvm_runtime._split(seen.append, *[(i,) for i in range(7)])
    assert sorted(seen) == list(range(7))

    def fail(i):
        if i == 0:
            raise ValueError("part 0")
    for _ in range(5):  # whichever thread runs the failing part, the caller sees the error
        with pytest.raises(ValueError, match="part 0"):
            llvm_runtime._split(fail, (1,), (0,))
    llvm_runtime._split(seen.append, (8,), (9,))  # and the helper still works afterwards
    assert sorted(seen[-2:]) == [8, 9]


needs_pool = pytest.mark.skipif(not llvm_threads.supported(),
                                reason="the native pool runs on Linux x86-64 only")


@needs_pool
def test_pool_runs_every_part_once_on_either_thread():
    """fg_pool_run: every part exactly once, whichever thread takes it, also when the parts
    are more than the threads and when called again and again."""
    import ctypes
    import threading
    assert llvm_runtime.start_pool()
    part = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64)
    run = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                           ctypes.c_int32)(llvm_runtime._pool["fg_pool_run"])
    seen = []

    @part
    def record(data, k):
        seen.append(k)

    for n in (0, 1, 2, 7, 2, 2, 2, 2, 2, 2, 2, 2):
        del seen[:]
        run(ctypes.cast(record, ctypes.c_void_p), None, n, 0)
        assert sorted(seen) == list(range(n))

    # together: each part on a thread of its own, all at once (as OpenBLAS's parts need)
    arrived, ids = [], set()
    barrier = threading.Barrier(3, timeout=60)

    @part
    def meet(data, k):
        ids.add(threading.get_ident())
        arrived.append(k)
        barrier.wait()

    run(ctypes.cast(meet, ctypes.c_void_p), None, 3, 1)
    assert sorted(arrived) == [0, 1, 2] and len(ids) == 3

    # ... also inside a part of another job (OpenBLAS called while the pool is in use): on
    # threads started for them, never waiting for the pool
    del arrived[:]
    ids.clear()

    @part
    def outer(data, k):
        if k == 0:
            run(ctypes.cast(meet, ctypes.c_void_p), None, 3, 1)

    run(ctypes.cast(outer, ctypes.c_void_p), None, 2, 0)
    assert sorted(arrived) == [0, 1, 2] and len(ids) == 3


@needs_pool
def test_split_kernels_from_several_threads_and_a_fork():
    """Two Python threads calling split kernels at once (the second runs its halves itself),
    and a fork's child (the helper did not come along): the same results as one thread."""
    import threading

    def f(x):
        return fnp.tanh(x * 3.0 - 1.0) * x + 0.5

    x = rng.normal(size=(1024, 1024)).astype(np.float32)
    with fg.config.setting("cpu_threads", 1):
        want = fg.jit(f)(x)
    with fg.config.setting("cpu_threads", 2):
        jf = fg.jit(f)
        jf(x)
        assert any(k.startswith("dims2_") for k in _namespace(jf, x))
    results = []

    def work():
        for _ in range(20):
            results.append(jf(x))

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 40
    for r in results:
        np.testing.assert_array_equal(r, want)
    pid = os.fork()
    if pid == 0:  # the child: exit status 0 when its results are right
        ok = all(np.array_equal(jf(x), want) for _ in range(3))
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.skipif(not llvm_runtime.pool_products(),
                    reason="no native pool or no OpenBLAS with 64-bit-integer cblas here")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batches_of_small_products_split_on_the_pool_as_numpy_computes_them(dtype):
    """pool_matmul: half the batch on each thread, each product NumPy's own BLAS call, so the
    result is np.matmul's bit for bit, whichever way each operand is laid out; other cases
    are np.matmul's. The attention step uses it at two threads, with the same result."""
    def heads(b, t, h, d):  # [b, t, h, d] projections seen as [b, h, t, d]
        return rng.normal(size=(b, t, h, d)).astype(dtype).transpose(0, 2, 1, 3)

    q, k, v = heads(4, 16, 3, 8), heads(4, 16, 3, 8), heads(4, 16, 3, 8)
    att = rng.normal(size=(4, 3, 16, 16)).astype(dtype)
    cases = [(q, k.swapaxes(-1, -2)), (att, v), (att.swapaxes(-1, -2), q),
             (q.swapaxes(-1, -2), att),
             (rng.normal(size=(5, 7, 9)).astype(dtype), rng.normal(size=(5, 9, 3)).astype(dtype))]
    for a, b in cases:
        assert llvm_runtime._gemm_plan(a, b) is not None
        np.testing.assert_array_equal(llvm_runtime.pool_matmul(a, b), np.matmul(a, b))
    same = np.ascontiguousarray(q)  # a @ a^T of one buffer: NumPy's (a symmetric update)
    assert llvm_runtime._gemm_plan(same, same.swapaxes(-1, -2)) is None
    np.testing.assert_array_equal(llvm_runtime.pool_matmul(same, same.swapaxes(-1, -2)),
                                  np.matmul(same, same.swapaxes(-1, -2)))
    a, b = q[..., ::2, :], k.swapaxes(-1, -2)[..., ::2]  # every other row: read in place
    np.testing.assert_array_equal(llvm_runtime.pool_matmul(a, b), np.matmul(a, b))
    for a, b in [(q[..., ::2], k.swapaxes(-1, -2)[..., ::2, :]),  # neither rows nor columns
                 (q.astype(np.int64), k.swapaxes(-1, -2).astype(np.int64)),
                 (rng.normal(size=(2, 80, 70)), rng.normal(size=(2, 70, 60)))]:  # large
        assert llvm_runtime._gemm_plan(a, b) is None
        np.testing.assert_array_equal(llvm_runtime.pool_matmul(a, b), np.matmul(a, b))

    def attention(q, k, v):
        return fnp.sum(fg.nn.softmax(q @ fnp.swapaxes(k, -1, -2), axis=-1) @ v)

    q, k, v = heads(16, 64, 4, 32), heads(16, 64, 4, 32), heads(16, 64, 4, 32)
    with fg.config.setting("cpu_threads", 1):
        want, text1 = on("llvm", fg.grad(attention, argnums=(0, 1, 2)), q, k, v)
    with fg.config.setting("cpu_threads", 2):
        got, text2 = on("llvm", fg.grad(attention, argnums=(0, 1, 2)), q, k, v)
    assert "batch on two threads" not in text1 and "batch on two threads" in text2
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


@needs_pool
@pytest.mark.skipif(llvm_runtime.blas_threads_control() is None,
                    reason="NumPy's BLAS is not an OpenBLAS this process can find")
def test_blas_on_the_pool_gives_the_same_products(tmp_path):
    """With two BLAS threads and two kernel threads, OpenBLAS's parts run on the native pool
    (its threading callback): every product as with OpenBLAS's own threads."""
    code = (
        "import numpy as np, funcgrad as fg, funcgrad.numpy as fnp\n"
        "from funcgrad.backends import llvm_runtime as r\n"
        "rng = np.random.default_rng(0)\n"
        "shapes = [((300, 200), (200, 500)), ((64, 513), (513, 130)),\n"
        "          ((8, 97, 64), (8, 64, 120))]\n"
        "ops = [(rng.normal(size=a).astype(t), rng.normal(size=b).astype(t))\n"
        "       for a, b in shapes for t in (np.float32, np.float64)]\n"
        "before = [a @ b for a, b in ops] + [ops[0][0].T @ ops[0][0]]\n"
        "fg.config.update('cpu_threads', 2)\n"
        "fg.jit(lambda x: fnp.tanh(x @ x.T))(ops[0][0])\n"
        "assert r._blas_on_pool\n"
        "after = [a @ b for a, b in ops] + [ops[0][0].T @ ops[0][0]]\n"
        "assert all(np.array_equal(u, v) for u, v in zip(before, after))\n"
        "print('ok')\n")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="2", OMP_NUM_THREADS="2",
               FUNCGRAD_CPU_BACKEND="llvm", FUNCGRAD_CACHE_DIR=str(tmp_path))
    if llvm_runtime._blas_set_callback is None:
        pytest.skip("this OpenBLAS has no threading callback")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and out.stdout.split() == ["ok"], out.stderr


@pytest.mark.skipif(llvm_runtime.blas_threads_control() is None,
                    reason="NumPy's BLAS is not an OpenBLAS this process can find")
def test_two_kernel_threads_split_large_matmuls_where_blas_is_single_threaded():
    """With BLAS at one thread and two kernel threads, the large products run on the kernel
    threads (parallel_matmul) with the same result; BLAS's thread count is left as it was."""
    get, put = llvm_runtime.blas_threads_control()

    def f(x, w1, w2):
        h = fnp.maximum(x @ w1, 0.0)
        return fnp.sum(fnp.tanh(h @ w2) * 2.0, axis=1)

    x = rng.normal(size=(256, 200)).astype(np.float32)
    w1 = rng.normal(size=(200, 300)).astype(np.float32) / 14
    w2 = rng.normal(size=(300, 100)).astype(np.float32) / 17
    before = get()
    put(1)  # as with OPENBLAS_NUM_THREADS=1
    try:
        with fg.config.setting("cpu_threads", 1):
            one, text1 = on("llvm", f, x, w1, w2)
        with fg.config.setting("cpu_threads", 2):
            two, text2 = on("llvm", f, x, w1, w2)
        assert get() == 1
    finally:
        put(before)
    assert "on two threads" not in text1
    assert text2.count("on two threads") == 2
    np.testing.assert_array_equal(one, two)


@pytest.mark.skipif(llvm_runtime.blas_threads_control() is None,
                    reason="NumPy's BLAS is not an OpenBLAS this process can find")
@pytest.mark.parametrize("blas", [2, 4])
def test_a_threaded_blas_keeps_the_products(blas):
    """Where BLAS has threads of its own, products stay BLAS's, its thread count untouched (on
    a quiet machine OpenBLAS's two threads are faster than our split)."""
    get, put = llvm_runtime.blas_threads_control()
    before = get()
    x = rng.normal(size=(256, 200)).astype(np.float32)
    w = rng.normal(size=(200, 300)).astype(np.float32)
    put(blas)
    try:
        with fg.config.setting("cpu_threads", 2):
            got, text = on("llvm", lambda x, w: fnp.tanh(x @ w), x, w)
        assert get() == blas
    finally:
        put(before)
    assert "on two threads" not in text
    want, _ = on("numpy", lambda x, w: fnp.tanh(x @ w), x, w)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_strided_inputs_are_read_through_contiguous_copies():
    """A kernel tests its arrays' contiguity itself and refuses (False, nothing written) a
    strided one; the generated code then passes contiguous copies: the same result as NumPy."""
    def f(x, y):
        return fnp.maximum(x * 2.0, 0.5) + fnp.transpose(y) * x

    x = rng.normal(size=(6, 10)).astype(np.float32)[:, ::2]    # strided argument
    y = rng.normal(size=(5, 6)).astype(np.float32)             # a transposed view inside
    got, text = on("llvm", f, x, y)
    want, _ = on("numpy", f, x, y)
    np.testing.assert_array_equal(got, want)
    assert " or fused_" in text
    got2, _ = on("llvm", f, np.ascontiguousarray(x), y)
    np.testing.assert_array_equal(got2, want)

    from funcgrad.backends import llvm_codegen
    from funcgrad.transforms import fusion
    closed = fg.make_jaxpr(lambda a: fnp.maximum(a, 0.0) * 3.0)(np.ones((4, 4), np.float32))
    group = fusion.fuse(closed, fusible=lambda e: True, min_size=1).jaxpr.eqns[0]
    kern = llvm_codegen.kernel_source(group.params["jaxpr"], "refusing")
    fn = llvm_runtime.compile_kernels([kern])[kern.name]
    a = rng.normal(size=(4, 8)).astype(np.float32)
    out = np.zeros((4, 4), np.float32)
    dims = llvm_runtime.dims_array(kern.dims, 0, kern.dims[0])
    assert fn(a[:, ::2], out, dims) is False and not out.any()
    assert fn(np.ascontiguousarray(a[:, ::2]), out, dims) is True
    np.testing.assert_array_equal(out, np.maximum(a[:, ::2], 0) * np.float32(3.0))


def _namespace(jf, *args):
    fn = jf.lower(*args).compile().executable.fn
    return getattr(fn, "__wrapped__", fn).__globals__


def test_independent_equal_groups_are_one_kernel_call():
    def step(ps, gs):
        return [p - 0.1 * fnp.sign(g) * fnp.abs(p) for p, g in zip(ps, gs)]

    ps = [rng.normal(size=s).astype(np.float32) for s in [(3, 4), (7,), (2, 5, 6)]]
    gs = [rng.normal(size=p.shape).astype(np.float32) for p in ps]
    text = fg.jit(step).lower(ps, gs).as_text()
    assert text.count("# compiled kernel") == 1
    got = fg.jit(step)(ps, gs)
    with fg.disable_jit():
        want = step(ps, gs)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_merged_parts_split_where_the_halves_do_equal_work():
    """An optimizer update's leaves differ in size: the two threads get about equal work, and
    the update is the same as on one thread."""
    from funcgrad.backends import llvm_backend
    assert llvm_backend._balanced_split((1, 1)) == 1
    assert llvm_backend._balanced_split((10, 1, 1, 1)) == 1
    assert llvm_backend._balanced_split((1, 1, 1, 10)) == 3
    assert llvm_backend._balanced_split((3, 3, 3, 3)) == 2

    def step(ps, gs):
        return [p - 0.1 * fnp.sign(g) * fnp.abs(p) for p, g in zip(ps, gs)]

    ps = [rng.normal(size=s).astype(np.float32) for s in [(512, 300), (7,), (64, 9), (300,)]]
    gs = [rng.normal(size=p.shape).astype(np.float32) for p in ps]
    with fg.config.setting("cpu_threads", 1):
        want = fg.jit(step)(ps, gs)
    with fg.config.setting("cpu_threads", 2):
        jf = fg.jit(step)
        got = jf(ps, gs)
        namespace = _namespace(jf, ps, gs)
    if llvm_threads.supported():
        (name,) = [k[6:] for k in namespace if k.startswith("dims2_")]
        assert namespace["dims_" + name][-2:].tolist() == [0, 1]  # the large leaf alone
        assert namespace["dims2_" + name][-2:].tolist() == [1, 4]
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("lhs,rhs,dims", [
    ((16, 4, 64, 32), (16, 4, 32, 64), (((3,), (2,)), ((0, 1), (0, 1)))),   # q @ k^T
    ((16, 4, 64, 64), (16, 4, 64, 32), (((3,), (2,)), ((0, 1), (0, 1)))),   # att @ v
    ((16, 64, 128), (16, 64, 512), (((0, 1), (0, 1)), ((), ()))),           # dW = x^T g
    ((16, 64, 512), (128, 512), (((2,), (1,)), ((), ()))),                  # dx = g W^T
])
def test_dot_general_makes_no_copies(lhs, rhs, dims):
    """Every contraction is one matmul on views: the only new memory is the result, also for
    the attention shapes, whose heads come from a transposed view of the projections."""
    def heads(shape):
        if len(shape) == 4:  # [b, t, h, d] projections seen as [b, h, t, d]
            b, h, t, d = shape
            return rng.normal(size=(b, t, h, d)).astype(np.float32).transpose(0, 2, 1, 3)
        return rng.normal(size=shape).astype(np.float32)

    a, b = heads(lhs), heads(rhs)
    if len(rhs) == 4 and dims[0][1] == (2,) and rhs[2] == lhs[3]:
        b = np.swapaxes(heads(rhs[:2] + rhs[2:][::-1]), -1, -2)  # k^T: a view of k
    products._dot_impl(np, a, b, dimension_numbers=dims)  # warm up
    tracemalloc.start()
    out = products._dot_impl(np, a, b, dimension_numbers=dims)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak <= out.nbytes + 4096, (peak, out.nbytes)
    want = np.einsum(_subscripts(a.ndim, b.ndim, dims), a, b)
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)


def _subscripts(nl, nr, dims):
    (lc, rc), (lb, rb) = dims
    ls = list("abcdefgh"[:nl])
    rs = list("ijklmnop"[:nr])
    for x, y in zip(lc, rc):
        rs[y] = ls[x]
    for x, y in zip(lb, rb):
        rs[y] = ls[x]
    out = [ls[i] for i in lb] + [ls[i] for i in range(nl) if i not in lc and i not in lb] + \
        [rs[i] for i in range(nr) if i not in rc and i not in rb]
    return f"{''.join(ls)},{''.join(rs)}->{''.join(out)}"


def test_attention_gradients_agree_with_the_numpy_backend():
    def attention(q, k, v):
        s = fg.nn.softmax(q @ fnp.swapaxes(k, -1, -2) * 0.25, axis=-1)
        return fnp.sum((s @ v) ** 2)

    q, k, v = (rng.normal(size=(2, 3, 8, 4)).astype(np.float32) for _ in range(3))
    got, _ = on("llvm", fg.grad(attention, argnums=(0, 1, 2)), q, k, v)
    want, _ = on("numpy", fg.grad(attention, argnums=(0, 1, 2)), q, k, v)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_a_deep_chain_runs_in_blocks():
    """A long elementwise chain is computed block by block (each equation one vector loop over
    a block held in the L1 cache), which is what makes it faster than NumPy's passes."""
    f = fg.jit(fg.value_and_grad(_deep_chain))
    x = rng.normal(size=5000).astype(np.float32)
    with fg.config.setting("cpu_backend", "llvm"):
        text = f.lower(x, np.float32(0.3)).as_text()
    assert "block.head" in text
    for n in (1, 17, 1000, 5000):  # block remainders
        got, _ = on("llvm", fg.value_and_grad(_deep_chain), x[:n], np.float32(0.3))
        want, _ = on("numpy", fg.value_and_grad(_deep_chain), x[:n], np.float32(0.3))
        np.testing.assert_allclose(got[1], want[1], rtol=2e-5, atol=1e-6)


def test_a_deep_chain_does_not_write_over_an_input_it_still_reads():
    # A chain computed in blocks writes each output at its own stage; an output that took over
    # a dead input's buffer (in place) overwrote values the later stages still read.
    def f(a, w):
        x = a @ w                       # a temporary, dead after the group
        c = x * 1.0001 + 0.5
        early = c                       # an output written at the group's first stages
        for _ in range(40):
            c = c * 1.0001 + 0.5
        return early @ w, (c - x) @ w   # x read again at the last stage

    a = rng.normal(size=(64, 64)).astype(np.float32)
    w = np.eye(64, dtype=np.float32)
    got, text = on("llvm", f, a, w)
    want, _ = on("numpy", f, a, w)
    assert "compiled kernel" in text
    for g, v in zip(got, want):
        np.testing.assert_array_equal(g, v)
