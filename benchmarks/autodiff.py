"""Issue 3's autodiff figures: eager speed vs autograd, peak memory of grad, masked grad time.

    python -m benchmarks.autodiff            # all three
    python -m benchmarks.autodiff --quick    # fewer repeats

1. `mlp-small` (BENCHMARKS.md, the value_and_grad part): eager value_and_grad of an MLP 64-128-10,
   batch 32, softmax cross-entropy; funcgrad vs autograd (if installed) vs hand-written NumPy.
2. `deep-mlp-memory`: peak memory of the gradient of a 20-layer ReLU MLP (width 1024, batch 256,
   float32), funcgrad vs hand-written NumPy backprop, each in its own process (tracemalloc sees
   every NumPy allocation).
3. Head-only masked gradient (`wrt=`) of that MLP vs the full gradient, interleaved.
"""

from __future__ import annotations

import argparse
import sys
import tracemalloc

import numpy as np

from ._common import interleaved, load_note, peak_in_subprocess

# ---------------------------------------------------------------------------------------------
# Models

def init_mlp(sizes, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return [(rng.normal(0, np.sqrt(2 / m), (m, n)).astype(dtype), np.zeros(n, dtype))
            for m, n in zip(sizes[:-1], sizes[1:])]


def data(batch, n_in, n_out, seed=1, dtype=np.float32):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, n_in)).astype(dtype)
    y = rng.integers(0, n_out, size=batch)
    return x, y


def fg_loss(params, x, y):
    import funcgrad.numpy as fnp
    from funcgrad import nn
    h = x
    for w, b in params[:-1]:
        h = nn.relu(h @ w + b)
    w, b = params[-1]
    logits = h @ w + b
    logp = nn.log_softmax(logits)
    return -fnp.mean(fnp.take_along_axis(logp, y[:, None], axis=1))


def numpy_value_and_grad(params, x, y):
    """Hand-written forward and backward pass: the floor."""
    hs = [x]
    h = x
    for w, b in params[:-1]:
        h = np.maximum(h @ w + b, 0)
        hs.append(h)
    w, b = params[-1]
    logits = h @ w + b
    m = logits.max(axis=1, keepdims=True)
    e = np.exp(logits - m)
    s = e.sum(axis=1, keepdims=True)
    logp = logits - m - np.log(s)
    n = len(y)
    loss = -logp[np.arange(n), y].mean()
    d = e / s
    d[np.arange(n), y] -= 1
    d /= n
    grads = []
    for i in range(len(params) - 1, -1, -1):
        w, b = params[i]
        h_in = hs[i]
        grads.append((h_in.T @ d, d.sum(axis=0)))
        if i > 0:
            d = d @ w.T
            d *= hs[i] > 0
        hs[i] = None
    return loss, grads[::-1]


def autograd_loss_fn():
    import autograd.numpy as anp

    def loss(params, x, y):
        h = x
        for w, b in params[:-1]:
            h = anp.maximum(h @ w + b, 0)
        w, b = params[-1]
        logits = h @ w + b
        m = anp.max(logits, axis=1, keepdims=True)
        logp = logits - m - anp.log(anp.sum(anp.exp(logits - m), axis=1, keepdims=True))
        return -anp.mean(logp[anp.arange(len(y)), y])
    return loss


# ---------------------------------------------------------------------------------------------
# 1. eager speed

def bench_speed(quick):
    import funcgrad as fg
    params = init_mlp([64, 128, 10])
    x, y = data(32, 64, 10)
    vg = fg.value_and_grad(fg_loss)
    ref_loss, _ = numpy_value_and_grad(params, x, y)
    fg_val, _ = vg(params, x, y)
    assert np.allclose(fg_val, ref_loss, rtol=1e-5), (fg_val, ref_loss)
    fns = {"numpy (floor)": lambda: numpy_value_and_grad(params, x, y),
           "funcgrad eager": lambda: vg(params, x, y)}
    try:
        import autograd
        ag = autograd.value_and_grad(autograd_loss_fn())
        ag_val, _ = ag(params, x, y)
        assert np.allclose(ag_val, ref_loss, rtol=1e-5)
        fns["autograd"] = lambda: ag(params, x, y)
    except ImportError:
        print("(autograd is not installed: pip install autograd, or the `benchmarks` extra)")
    res = interleaved(fns, rounds=5 if quick else 11, repeats=20 if quick else 50)
    print(f"\n### value_and_grad, MLP 64-128-10, batch 32 (eager), loss {ref_loss:.6f}")
    print(f"{load_note()}\n")
    print("| implementation | median µs/call | min–max µs | ratio to floor |")
    print("| --- | --- | --- | --- |")
    floor = res["numpy (floor)"][0]
    for k, (med, lo, hi) in res.items():
        print(f"| {k} | {med * 1e6:.0f} | {lo * 1e6:.0f}–{hi * 1e6:.0f} | {med / floor:.2f} |")
    if "autograd" in res:
        print(f"\nfuncgrad / autograd = {res['funcgrad eager'][0] / res['autograd'][0]:.2f}")
    return res


# ---------------------------------------------------------------------------------------------
# 2. peak memory (run in a child process per implementation)

DEEP = [1024] * 21 + [10]


def _memory_child(impl, layers):
    sizes = [1024] * (layers + 1) + [10]
    params = init_mlp(sizes)
    x, y = data(256, 1024, 10)
    if impl == "funcgrad":
        import funcgrad as fg
        run = lambda: fg.value_and_grad(fg_loss)(params, x, y)
    else:
        run = lambda: numpy_value_and_grad(params, x, y)
    loss, grads = run()  # warm-up: imports, caches
    del grads
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    loss, grads = run()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    print(f"peak_bytes={peak}")
    print(f"loss={float(loss):.6f}")


def bench_memory(layers=20):
    rows = {}
    for impl in ("numpy", "funcgrad"):
        rows[impl] = peak_in_subprocess("benchmarks.autodiff", "--memory-child", impl,
                                        str(layers))
    n = int(rows["numpy"]["peak_bytes"])
    f = int(rows["funcgrad"]["peak_bytes"])
    print(f"\n### peak memory of one gradient, {layers}-layer ReLU MLP, width 1024, batch 256, "
          "float32 (tracemalloc, beyond the parameters and data)\n")
    print("| implementation | peak MiB | loss | ratio to NumPy |")
    print("| --- | --- | --- | --- |")
    for k in ("numpy", "funcgrad"):
        p = int(rows[k]["peak_bytes"])
        print(f"| {k} | {p / 2**20:.1f} | {rows[k]['loss']} | {p / n:.2f} |")
    print(f"\nfuncgrad / numpy peak = {f / n:.2f}")
    return f / n


# ---------------------------------------------------------------------------------------------
# 3. masked (head-only) gradient vs full gradient

def bench_masked(quick, layers=20):
    import funcgrad as fg
    params = init_mlp([1024] * (layers + 1) + [10])
    x, y = data(256, 1024, 10)
    head_only = [False] * layers + [True]
    full = fg.value_and_grad(fg_loss)
    masked = fg.value_and_grad(fg_loss, wrt=head_only)
    res = interleaved({"full gradient": lambda: full(params, x, y),
                       "head-only (wrt=mask)": lambda: masked(params, x, y)},
                      rounds=3 if quick else 7, repeats=2 if quick else 3, warmup=1)
    f, m = res["full gradient"][0], res["head-only (wrt=mask)"][0]
    print(f"\n### {layers}-layer MLP gradient, head only vs all parameters\n{load_note()}\n")
    print("| gradient | median ms | min–max ms |")
    print("| --- | --- | --- |")
    for k, (med, lo, hi) in res.items():
        print(f"| {k} | {med * 1e3:.1f} | {lo * 1e3:.1f}–{hi * 1e3:.1f} |")
    print(f"\nhead-only / full = {m / f:.2f}")
    return m / f


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--only", choices=["speed", "memory", "masked"], help="run one part")
    ap.add_argument("--memory-child", nargs=2, metavar=("IMPL", "LAYERS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_child:
        _memory_child(args.memory_child[0], int(args.memory_child[1]))
        return
    ratios = {}
    if args.only in (None, "speed"):
        res = bench_speed(args.quick)
        if "autograd" in res:
            ratios["eager value_and_grad funcgrad/autograd (target <= 1.0)"] = (
                res["funcgrad eager"][0] / res["autograd"][0])
    if args.only in (None, "memory"):
        ratios["grad peak memory funcgrad/numpy (target <= 1.3)"] = bench_memory()
    if args.only in (None, "masked"):
        ratios["head-only/full gradient time (target <= 0.35)"] = bench_masked(args.quick)
    print("\n### summary\n")
    for k, v in ratios.items():
        print(f"- {k}: {v:.2f}")


if __name__ == "__main__":
    sys.exit(main())
