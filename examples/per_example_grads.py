"""DP-SGD style training: per-example gradients with vmap(grad), clipped, summed and noised.

Each example's gradient is computed separately by `fg.vmap(fg.grad(loss), in_axes=(None, 0, 0))`
(one program, no Python loop), clipped to L2 norm <= --clip, summed, and perturbed with Gaussian
noise of standard deviation --noise * --clip before the averaged step. It is compared with plain
minibatch SGD on the same model (an MLP on the UCI 8x8 digits) and checked against a
Python loop of `fg.grad` calls.

    python examples/per_example_grads.py
    python examples/per_example_grads.py --quick
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from _util import Timer, add_common_args, load_digits, print_table, progress, save_curves

import funcgrad as fg
import funcgrad.numpy as fnp
from funcgrad import models
from funcgrad.losses import softmax_cross_entropy_with_integer_labels as xent_per_example
from funcgrad.tree_util import tree_leaves, tree_map


def load_data():
    """The UCI 8x8 digits as (n, 64) vectors in [0, 1], split 75/25 (examples/_util.py)."""
    return load_digits()


def loss_one(params, x, y):
    """The loss of ONE example (x: (64,), y: ()); vmap adds the batch axis."""
    return xent_per_example(models.mlp.apply(params, x), y)


def batch_loss(params, x, y):
    return fnp.mean(xent_per_example(models.mlp.apply(params, x), y))


per_example_grads = fg.vmap(fg.grad(loss_one), in_axes=(None, 0, 0))


def clip_and_noise(grads, clip, noise, key):
    """Clip each example's gradient (the leading axis) to norm <= clip; sum; add noise; average."""
    leaves = tree_leaves(grads)
    n = leaves[0].shape[0]
    sq = sum(fnp.sum(g.reshape(n, -1) ** 2, axis=1) for g in leaves)
    factor = fnp.minimum(1.0, clip / (fnp.sqrt(sq) + 1e-12))           # (n,)
    keys = fg.random.split(key, len(leaves))

    def one(g, k):
        clipped = fnp.sum(g * factor.reshape((n,) + (1,) * (g.ndim - 1)), axis=0)
        return (clipped + noise * clip * fg.random.normal(k, clipped.shape)) / n

    treedef = fg.tree_util.tree_structure(grads)
    return fg.tree_util.tree_unflatten(treedef, [one(g, keys[i]) for i, g in enumerate(leaves)])


@fg.jit
def dp_step(params, x, y, key, lr, clip, noise):
    grads = clip_and_noise(per_example_grads(params, x, y), clip, noise, key)
    return tree_map(lambda p, g: p - lr * g, params, grads)


@fg.jit
def sgd_step(params, x, y, lr):
    return tree_map(lambda p, g: p - lr * g, params, fg.grad(batch_loss)(params, x, y))


def accuracy(params, x, y):
    return float(np.mean(np.argmax(fg.device_get(models.mlp.apply(params, x)), -1) == y))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.5)
    ap.add_argument("--clip", type=float, default=1.0, help="per-example L2 clipping norm C")
    ap.add_argument("--noise", type=float, default=1.0, help="noise multiplier (std = noise*C)")
    ap.add_argument("--hidden", type=int, default=64)
    add_common_args(ap)
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.batch = 15, 16

    x, y, xt, yt = load_data()
    init = models.mlp.init(fg.random.key(args.seed), [64, args.hidden, 10])

    # per-example gradients == a Python loop of single-example gradients
    pe = per_example_grads(init, x[:8], y[:8])
    loop = [fg.grad(loss_one)(init, x[i], y[i]) for i in range(8)]
    pe, loop = fg.device_get((pe, loop))  # NumPy arrays, compared on the host
    err = max(float(np.max(np.abs(a[i] - b)))
              for i, g in enumerate(loop) for a, b in zip(tree_leaves(pe), tree_leaves(g)))
    print(f"vmap(grad) vs a loop of grad over 8 examples: max abs difference {err:.2e}")
    assert err < 1e-5

    rows, curves = [], {}
    for method in ("SGD", "DP-SGD"):
        params, rng, key = init, np.random.default_rng(1), fg.random.key(args.seed + 1)
        steps, losses, timer = [], [], Timer()
        bar = progress(range(args.steps), method, args.quiet)
        for i in bar:
            idx = rng.integers(0, len(x), args.batch)
            with timer:
                if method == "SGD":
                    params = sgd_step(params, x[idx], y[idx], args.lr)
                else:
                    key, sub = fg.random.split(key)
                    params = dp_step(params, x[idx], y[idx], sub, args.lr, args.clip, args.noise)
            if i % 10 == 0 or i == args.steps - 1:
                steps.append(i)
                losses.append(float(batch_loss(params, x, y)))
                bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
        curves[method] = (steps, losses)
        rows.append([method, args.clip if method == "DP-SGD" else "-",
                     args.noise if method == "DP-SGD" else "-", losses[-1],
                     accuracy(params, xt, yt), timer.median_ms])

    print_table(rows, ["method", "clip C", "noise mult.", "train loss", "test acc", "step ms"],
                title=f"MLP on digits, batch {args.batch}, {args.steps} steps")
    save_curves(os.path.join(args.out, "per_example_grads.png"), curves,
                title="SGD vs DP-SGD (per-example clipping via vmap(grad))")
    return rows


if __name__ == "__main__":
    main()
