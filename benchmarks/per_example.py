"""Issue 4's figure, the `per-example` workload of ../shared/BENCHMARKS.md: per-example gradients
of `mlp-small`'s loss (MLP 64-128-10, ReLU, softmax cross-entropy) for a batch of 64.

    python -m benchmarks.per_example [--quick]

funcgrad `vmap(grad)` eagerly and under `jit`, against hand-written batched NumPy (einsum outer
products: the floor) and an autograd Python loop over examples, interleaved in one process.
"""

from __future__ import annotations

import argparse

import numpy as np

from ._common import interleaved, load_note

SIZES = (64, 128, 10)
BATCH = 64


def init(seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.normal(0, np.sqrt(2 / m), (m, n)).astype(np.float32), np.zeros(n, np.float32))
            for m, n in zip(SIZES[:-1], SIZES[1:])]


def data(seed=1):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(BATCH, SIZES[0])).astype(np.float32),
            rng.integers(0, SIZES[-1], size=BATCH))


def fg_example_loss(params, x, y):
    """The loss of one example (x: (64,), y: ()), written for a single example."""
    import funcgrad.numpy as fnp
    from funcgrad import nn
    (w1, b1), (w2, b2) = params
    h = nn.relu(x @ w1 + b1)
    logp = nn.log_softmax(h @ w2 + b2)
    return -fnp.take(logp, y)


def numpy_per_example(params, x, y):
    """Batched forward and backward with per-example outer products (einsum): the floor."""
    (w1, b1), (w2, b2) = params
    z = x @ w1 + b1
    h = np.maximum(z, 0)
    logits = h @ w2 + b2
    m = logits.max(axis=1, keepdims=True)
    e = np.exp(logits - m)
    p = e / e.sum(axis=1, keepdims=True)
    d2 = p
    d2[np.arange(len(y)), y] -= 1
    gw2 = np.einsum("bi,bj->bij", h, d2)
    d1 = (d2 @ w2.T) * (z > 0)
    gw1 = np.einsum("bi,bj->bij", x, d1)
    return [(gw1, d1), (gw2, d2)]


def autograd_loop_fn():
    import autograd
    import autograd.numpy as anp

    def loss(params, x, y):
        (w1, b1), (w2, b2) = params
        h = anp.maximum(x @ w1 + b1, 0)
        logits = h @ w2 + b2
        m = anp.max(logits)
        return -(logits[y] - m - anp.log(anp.sum(anp.exp(logits - m))))

    g = autograd.grad(loss)
    return lambda params, x, y: [g(params, x[i], y[i]) for i in range(len(y))]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    import funcgrad as fg
    params, (x, y) = init(), data()
    eager = fg.vmap(fg.grad(fg_example_loss), in_axes=(None, 0, 0))
    jitted = fg.jit(eager)
    ref = numpy_per_example(params, x, y)
    for got in (eager(params, x, y), jitted(params, x, y)):
        for (gw, gb), (rw, rb) in zip(got, ref):
            assert np.allclose(gw, rw, atol=1e-5) and np.allclose(gb, rb, atol=1e-5)
    fns = {"numpy batched (floor)": lambda: numpy_per_example(params, x, y),
           "funcgrad vmap(grad) eager": lambda: eager(params, x, y),
           "funcgrad jit(vmap(grad))": lambda: jitted(params, x, y)}
    try:
        loop = autograd_loop_fn()
        loop(params, x, y)
        fns["autograd loop"] = lambda: loop(params, x, y)
    except ImportError:
        print("(autograd is not installed: pip install autograd)")
    res = interleaved(fns, rounds=5 if args.quick else 9, repeats=5 if args.quick else 20)
    print(f"\n### per-example gradients, MLP 64-128-10, batch 64\n{load_note()}\n")
    print("| implementation | median µs | min–max µs | ratio to floor |")
    print("| --- | --- | --- | --- |")
    floor = res["numpy batched (floor)"][0]
    for k, (med, lo, hi) in res.items():
        print(f"| {k} | {med * 1e6:.0f} | {lo * 1e6:.0f}–{hi * 1e6:.0f} | {med / floor:.2f} |")
    print("\n### summary\n")
    print(f"- vmap(grad) eager / floor (target <= 1.5): "
          f"{res['funcgrad vmap(grad) eager'][0] / floor:.2f}")
    print(f"- jit(vmap(grad)) / floor: {res['funcgrad jit(vmap(grad))'][0] / floor:.2f}")
    if "autograd loop" in res:
        print(f"- autograd loop / vmap(grad) eager (target >= 10): "
              f"{res['autograd loop'][0] / res['funcgrad vmap(grad) eager'][0]:.1f}")


if __name__ == "__main__":
    main()
