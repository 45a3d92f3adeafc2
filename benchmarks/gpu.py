"""GPU figures (issue 8): jitted training steps on CuPy, against JAX on the same GPU.

    python -m benchmarks.gpu [--quick]

- mlp-train: MLP 784-512-512-10, ReLU, softmax cross-entropy, batch 1024, Adam lr 1e-3; the whole
  step under one fg.jit on CuPy arrays, vs the same step under jax.jit (when JAX with a GPU is
  installed).
- transformer-train: the 2-block transformer classifier of funcgrad.models (d_model 128, 16
  sequences of 64 tokens), Adam step under fg.jit on CuPy.

Every time is the median over repeats, each repeat synchronizing the device, after a warm-up
call (compilation is not counted). Without CuPy or a CUDA device it prints why and exits with 0.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

B1, B2, EPS, LR = 0.9, 0.999, 1e-8, 1e-3


def _gpu_or_reason():
    try:
        import cupy
    except ImportError:
        return None, "CuPy is not installed (pip install funcgrad[gpu])"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        return None, f"CuPy found no CUDA device ({type(e).__name__}: {e})"
    if n == 0:
        return None, "CuPy found no CUDA device"
    return cupy, None


def _time(fn, sync, repeats):
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def init_mlp(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.normal(0, np.sqrt(2 / m), (m, n)).astype(np.float32), np.zeros(n, np.float32))
            for m, n in zip(sizes[:-1], sizes[1:])]


def mlp_data(n=1024, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 784)).astype(np.float32), rng.integers(0, 10, size=n)


def _adam(tree_util, params, grads, m, v, t, sqrt):
    leaves_p, tree = tree_util.tree_flatten(params)
    leaves_g = tree_util.tree_leaves(grads)
    new_p, new_m, new_v = [], [], []
    for p, g, mm, vv in zip(leaves_p, leaves_g, m, v):
        mm = B1 * mm + (1 - B1) * g
        vv = B2 * vv + (1 - B2) * g * g
        mhat = mm / (1 - B1 ** t)
        vhat = vv / (1 - B2 ** t)
        new_p.append(p - LR * mhat / (sqrt(vhat) + EPS))
        new_m.append(mm)
        new_v.append(vv)
    return tree_util.tree_unflatten(tree, new_p), new_m, new_v


def bench_mlp_funcgrad(cupy, repeats):
    import funcgrad as fg
    import funcgrad.numpy as fnp
    from benchmarks.autodiff import fg_loss as loss

    @fg.jit
    def step(params, m, v, t, x, y):
        value, grads = fg.value_and_grad(loss)(params, x, y)
        params, m, v = _adam(fg.tree_util, params, grads, m, v, t, fnp.sqrt)
        return params, m, v, value

    params = fg.device_put(init_mlp([784, 512, 512, 10]), "gpu")
    leaves = fg.tree_util.tree_leaves(params)
    m = [cupy.zeros_like(p) for p in leaves]
    v = [cupy.zeros_like(p) for p in leaves]
    x, y = fg.device_put(mlp_data(), "gpu")
    state = [params, m, v]

    def run():
        state[0], state[1], state[2], _ = step(state[0], state[1], state[2], 1.0, x, y)

    sec = _time(run, cupy.cuda.get_current_stream().synchronize, repeats)
    kernels = step.lower(params, m, v, 1.0, x, y).compiled
    # the same first step on the CPU (NumPy): the GPU's loss must agree to float32 rounding
    host_params = init_mlp([784, 512, 512, 10])
    zeros = [np.zeros_like(p) for p in fg.tree_util.tree_leaves(host_params)]
    host_loss = float(step(host_params, zeros, zeros, 1.0, *mlp_data())[3])
    dev_loss = float(step(params, m, v, 1.0, x, y)[3])
    return sec, len(getattr(kernels, "kernels", [])), (dev_loss, host_loss)


def bench_mlp_jax(repeats):
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None, "JAX is not installed"
    if not any(d.platform == "gpu" for d in jax.devices()):
        return None, "JAX sees no GPU (install jax[cuda12])"

    from benchmarks.peers.jax_impl import _mlp_loss as loss

    @jax.jit
    def step(params, m, v, t, x, y):
        value, grads = jax.value_and_grad(loss)(params, x, y)
        params, m, v = _adam(jax.tree_util, params, grads, m, v, t, jnp.sqrt)
        return params, m, v, value

    params = jax.device_put(init_mlp([784, 512, 512, 10]))
    leaves = jax.tree_util.tree_leaves(params)
    m = [jnp.zeros_like(p) for p in leaves]
    v = [jnp.zeros_like(p) for p in leaves]
    x, y = jax.device_put(mlp_data())
    state = [params, m, v, None]

    def run():
        state[0], state[1], state[2], state[3] = step(state[0], state[1], state[2], 1.0, x, y)

    def sync():
        jax.block_until_ready(state[3])

    return _time(run, sync, repeats), None


def bench_transformer(cupy, repeats):
    import funcgrad as fg
    from benchmarks.jit import transformer_workload

    step, *inputs = transformer_workload()
    step = fg.jit(step)
    params, opt_state, tokens, labels = fg.device_put(inputs, "gpu")
    state = [params, opt_state]

    def run():
        state[0], state[1], _ = step(state[0], state[1], tokens, labels)

    return _time(run, cupy.cuda.get_current_stream().synchronize, repeats)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    args = ap.parse_args(argv)
    cupy, reason = _gpu_or_reason()
    if cupy is None:
        print(f"benchmarks.gpu: skipped: {reason}. Run it on a machine with an NVIDIA GPU and "
              "CuPy installed.")
        return 0
    repeats = 5 if args.quick else 30
    name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
    name = name.decode() if isinstance(name, bytes) else name
    print(f"## GPU benchmarks on {name} (CuPy {cupy.__version__})\n")
    fg_sec, n_kernels, (dev_loss, host_loss) = bench_mlp_funcgrad(cupy, repeats)
    jax_sec, why = bench_mlp_jax(repeats)
    print("### MLP 784-512-512-10 Adam step, batch 1024 (jit, median ms)\n")
    print("| implementation | ms/step |\n| --- | --- |")
    print(f"| funcgrad on CuPy ({n_kernels} fused kernels) | {fg_sec * 1e3:.3f} |")
    print(f"\nfirst-step loss: GPU {dev_loss:.6f}, CPU (NumPy) {host_loss:.6f}, "
          f"relative difference {abs(dev_loss - host_loss) / abs(host_loss):.1e}")
    if jax_sec is not None:
        print(f"| JAX (XLA) | {jax_sec * 1e3:.3f} |")
        print(f"\nfuncgrad / JAX = {fg_sec / jax_sec:.2f}")
    else:
        print(f"\n(JAX not measured: {why})")
    tr = bench_transformer(cupy, repeats)
    print("\n### 2-block transformer classifier Adam step, 16 x 64 tokens (jit, median ms)\n")
    print(f"| funcgrad on CuPy | {tr * 1e3:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
