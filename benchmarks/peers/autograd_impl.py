"""autograd (HIPS): `autograd.value_and_grad` + Adam in NumPy for the training steps, a Python loop
of `autograd.grad` over examples for per-example gradients, `autograd.hessian`, and a Python loop
over time steps for the LSTM. (No fine-tuning: BENCHMARKS.md compares it with JAX and PyTorch.)
"""

from __future__ import annotations

import numpy as np

from . import common as C

LIBRARY = "autograd"


def _mlp_loss(params, x, y):
    from benchmarks.autodiff import autograd_loss_fn  # the same loss as the autodiff suite's
    return autograd_loss_fn()(params, x, y)


def _mlp(name):
    import autograd
    params, x, y = C.mlp_setup(name)
    vg = autograd.value_and_grad(_mlp_loss)
    flat = [a for pair in params for a in pair]
    m, v = [np.zeros_like(a) for a in flat], [np.zeros_like(a) for a in flat]
    t = [0]

    def step():
        loss, grads = vg(params, x, y)
        t[0] += 1
        C.numpy_adam(flat, [g for pair in grads for g in pair], m, v, t[0])  # in place
        return loss
    return step


def _per_example():
    from benchmarks.per_example import autograd_loop_fn  # autograd.grad in a loop over examples
    params, x, y = C.per_example_setup()
    f = autograd_loop_fn()
    return lambda: f(params, x, y)


def _hessian():
    import autograd
    import autograd.numpy as anp
    w, X, y = C.hessian_setup()

    def loss(w):
        z = X @ w
        return anp.mean(anp.logaddexp(0, z) - y * z)

    h = autograd.hessian(loss)
    return lambda: h(w)


def _chain(nosin):
    import autograd
    import autograd.numpy as anp
    ops = C.chain_ops(anp.sin, anp.tanh, anp.exp, nosin)

    def chain(x):
        for i in range(C.CHAIN_OPS):
            x = ops[i % 5](x)
        return anp.sum(x)

    f = autograd.value_and_grad(chain)
    x = C.chain_setup()
    return lambda: f(x)


def _lstm():
    import autograd
    import autograd.numpy as anp
    params, xs, target = C.lstm_setup()
    H = C.LSTM_H

    def sigmoid(x):
        return 0.5 * (anp.tanh(0.5 * x) + 1.0)

    def loss(p):
        wh = p["wh"]
        xw = xs @ p["wx"] + p["b"]
        h = c = np.zeros((xs.shape[1], H), np.float32)
        hs = []
        for t in range(xs.shape[0]):
            z = xw[t] + h @ wh
            i, f = sigmoid(z[:, :H]), sigmoid(z[:, H:2 * H])
            g, o = anp.tanh(z[:, 2 * H:3 * H]), sigmoid(z[:, 3 * H:])
            c = f * c + i * g
            h = o * anp.tanh(c)
            hs.append(h)
        return anp.mean((anp.stack(hs) - target) ** 2)

    f = autograd.value_and_grad(loss)
    return lambda: f(params)


WORKLOADS = {
    "mlp-train": {"": lambda: _mlp("mlp-train")},
    "mlp-small": {"": lambda: _mlp("mlp-small")},
    "per-example": {"": _per_example},
    "hessian": {"": _hessian},
    "elementwise-chain": {"": lambda: _chain(False)},
    "elementwise-nosin": {"": lambda: _chain(True)},
    "lstm": {"": _lstm},
}
