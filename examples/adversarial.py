"""FGSM adversarial examples: the gradient of the loss with respect to the INPUT.

An MLP is trained on the UCI 8x8 digits; then each test image is pushed one step of size
eps along the sign of d loss / d image (the fast gradient sign method, Goodfellow et al. 2015):

    x_adv = clip(x + eps * sign(fg.grad(loss, argnums=1)(params, x, y)), 0, 1)

The table shows test accuracy on clean and adversarial images for several eps, against random
sign noise of the same size (which barely hurts); the plot shows the training loss and the
accuracy-versus-eps curves.

    python examples/adversarial.py
    python examples/adversarial.py --quick
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from _util import Timer, add_common_args, load_digits, print_table, progress, save_curves

import funcgrad as fg
import funcgrad.numpy as fnp
from funcgrad import models, optim
from funcgrad.losses import softmax_cross_entropy_with_integer_labels as xent_per_example


def load_data():
    """The UCI 8x8 digits as (n, 64) vectors in [0, 1], split 75/25 (examples/_util.py)."""
    return load_digits()


def loss(params, x, y):
    return fnp.mean(xent_per_example(models.mlp.apply(params, x), y))


# d loss / d x: argnums=1 differentiates with respect to the images, not the weights
input_grad = fg.jit(fg.grad(loss, argnums=1))


def fgsm(params, x, y, eps):
    return np.clip(x + eps * np.sign(fg.device_get(input_grad(params, x, y))), 0.0, 1.0)


def accuracy(params, x, y):
    return float(np.mean(np.argmax(fg.device_get(models.mlp.apply(params, x)), -1) == y))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--eps", default="0.02,0.05,0.1,0.2", help="comma-separated step sizes")
    add_common_args(ap)
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.eps = 30, "0.1"
    eps_list = [float(e) for e in args.eps.split(",")]

    x, y, xt, yt = load_data()
    params = models.mlp.init(fg.random.key(args.seed), [64, args.hidden, args.hidden, 10])
    tx = optim.adam(args.lr)

    @fg.jit
    def step(params, state, xb, yb):
        value, grads = fg.value_and_grad(loss)(params, xb, yb)
        updates, state = tx.update(grads, state, params)
        return optim.apply_updates(params, updates), state, value

    state, rng, losses, timer = tx.init(params), np.random.default_rng(1), [], Timer()
    bar = progress(range(args.steps), "train", args.quiet)
    for i in bar:
        idx = rng.integers(0, len(x), args.batch)
        with timer:
            params, state, value = step(params, state, x[idx], y[idx])
        losses.append(float(value))
        if i % 10 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    print(f"trained {args.steps} steps ({timer.median_ms:.2f} ms/step)")

    noise_rng = np.random.default_rng(2)
    rows = [[0.0, accuracy(params, xt, yt), accuracy(params, xt, yt)]]
    for eps in eps_list:
        x_adv = fgsm(params, xt, yt, eps)
        x_rand = np.clip(xt + eps * noise_rng.choice([-1.0, 1.0], xt.shape), 0, 1)
        rows.append([eps, accuracy(params, x_rand.astype(np.float32), yt),
                     accuracy(params, x_adv.astype(np.float32), yt)])

    print_table(rows, ["eps", "acc, random sign noise", "acc, FGSM"],
                title="test accuracy under perturbations of L-inf size eps")
    eps_axis = [r[0] for r in rows]
    save_curves(os.path.join(args.out, "adversarial_loss.png"), {"train loss": losses},
                title="MLP on digits: training loss")
    save_curves(os.path.join(args.out, "adversarial.png"),
                {"random sign noise": (eps_axis, [r[1] for r in rows]),
                 "FGSM": (eps_axis, [r[2] for r in rows])},
                xlabel="eps", ylabel="test accuracy", title="FGSM vs random noise")
    return rows


if __name__ == "__main__":
    main()
