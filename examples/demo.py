"""funcgrad in one screen: a program, its gradient, and a few steps of training.

A two-layer tanh network learns sin(2x) by gradient descent with `fg.value_and_grad`. It prints
the program funcgrad traces from the loss, a table of the loss along training, and saves a plot
of the data and the fitted curve.

    python examples/demo.py            # ~6 s on a busy 2-core machine
    python examples/demo.py --quick    # fewer steps (used by the tests)
"""

import argparse
import os

import numpy as np
from _util import add_common_args, print_table, save_curves

import funcgrad as fg
import funcgrad.numpy as fnp


def predict(params, x):
    w1, b1, w2, b2 = params
    h = fnp.tanh(x @ w1 + b1)
    return h @ w2 + b2


def loss(params, x, y):
    return fnp.mean((predict(params, x) - y) ** 2)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=0.1)
    add_common_args(ap)
    args = ap.parse_args(argv)
    if args.quick:
        args.steps = 60

    rng = np.random.default_rng(args.seed)
    x = rng.uniform(-2, 2, size=(128, 1)).astype(np.float32)
    y = np.sin(2 * x)
    params = [rng.normal(0, 1, (1, 32)).astype(np.float32), np.zeros(32, np.float32),
              rng.normal(0, 0.2, (32, 1)).astype(np.float32), np.zeros(1, np.float32)]
    # onto the default backend (a no-op on the CPU; with FUNCGRAD_BACKEND=gpu, once to the GPU,
    # so that the update below combines device arrays only)
    params, x, y = fg.device_put((params, x, y))

    print("The program funcgrad traces from `loss`:")
    print(fg.make_jaxpr(loss)(params, x, y))

    value_and_grad = fg.value_and_grad(loss)
    rows = []
    for step in range(args.steps + 1):
        value, grads = value_and_grad(params, x, y)
        params = [p - args.lr * g for p, g in zip(params, grads)]
        if step % (args.steps // 4) == 0:
            rows.append([step, float(value)])
    print_table(rows, ["step", "loss"], title="Gradient descent on sin(2x)")

    grid = np.linspace(-2, 2, 200, dtype=np.float32)[:, None]
    fit = fg.device_get(predict(params, fg.device_put(grid)))
    save_curves(os.path.join(args.out, "demo.png"),
                {"sin(2x)": (grid[:, 0], np.sin(2 * grid[:, 0])),
                 f"network after {args.steps} steps": (grid[:, 0], np.asarray(fit)[:, 0])},
                xlabel="x", ylabel="y", title="a 32-unit tanh network fitted by fg.grad")


if __name__ == "__main__":
    main()
