"""funcgrad in one screen: a program, its gradient, and a few steps of training.

Run: python examples/demo.py
"""

import numpy as np

import funcgrad as fg
import funcgrad.numpy as fnp


def predict(params, x):
    w1, b1, w2, b2 = params
    h = fnp.tanh(x @ w1 + b1)
    return h @ w2 + b2


def loss(params, x, y):
    return fnp.mean((predict(params, x) - y) ** 2)


def main():
    rng = np.random.default_rng(0)
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
    for step in range(301):
        value, grads = value_and_grad(params, x, y)
        params = [p - 0.1 * g for p, g in zip(params, grads)]
        if step % 100 == 0:
            print(f"step {step:3d}  loss {float(value):.4f}")


if __name__ == "__main__":
    main()
