"""Hand-written NumPy (forward and backward by hand, Adam in place): the floor of each workload.

Each builder returns a zero-argument `step()`: one training step (returns the loss, computed
before the update) or one evaluation of the function (returns its outputs).
"""

from __future__ import annotations

import numpy as np

from . import common as C

LIBRARY = "numpy"


def _mlp(name):
    from benchmarks.jit import numpy_step  # forward, manual backprop and Adam, in place
    params, x, y = C.mlp_setup(name)
    flat = [a for pair in params for a in pair]
    state = [params, [np.zeros_like(a) for a in flat], [np.zeros_like(a) for a in flat],
             np.zeros((), np.float32)]

    def step():
        p, m, v, t, loss = numpy_step(*state, x, y)
        state[:] = p, m, v, t
        return loss
    return step


def _per_example():
    from benchmarks.per_example import numpy_per_example  # batched einsum outer products
    params, x, y = C.per_example_setup()
    return lambda: numpy_per_example(params, x, y)


def _hessian():
    """Closed form X^T diag(p (1 - p)) X / n."""
    w, X, y = C.hessian_setup()
    n = np.float32(len(y))

    def step():
        p = 1 / (1 + np.exp(-(X @ w)))
        return (X.T * (p * (1 - p) / n)) @ X
    return step


def chain_value_and_grad(x, nosin):
    """Forward keeping what each derivative needs, then the backward pass by hand."""
    saved = []
    half, tenth = np.float32(0.5), np.float32(0.1)
    for i in range(C.CHAIN_OPS):
        k = i % 5
        if k == 0 and not nosin:
            saved.append(x)
            x = np.sin(x)
        elif k == 1:
            x = x * half
        elif k == 2:
            x = x + tenth
        elif k in (0, 3):
            x = np.tanh(x)
            saved.append(x)
        else:
            x = np.exp(x)
            saved.append(x)
    value = x.sum()
    g = np.ones_like(x)
    for i in range(C.CHAIN_OPS - 1, -1, -1):
        k = i % 5
        if k == 0 and not nosin:
            g *= np.cos(saved.pop())
        elif k == 1:
            g *= half
        elif k in (0, 3):
            y = saved.pop()
            g *= 1 - y * y
        elif k == 4:
            g *= saved.pop()
    return value, g


def _chain(nosin):
    x = C.chain_setup()
    return lambda: chain_value_and_grad(x, nosin)


def _lstm():
    from benchmarks.control_flow import numpy_lstm_value_and_grad  # manual BPTT
    params, xs, target = C.lstm_setup()
    return lambda: numpy_lstm_value_and_grad(params, xs, target)


WORKLOADS = {
    "mlp-train": {"": lambda: _mlp("mlp-train")},
    "mlp-small": {"": lambda: _mlp("mlp-small")},
    "per-example": {"": _per_example},
    "hessian": {"": _hessian},
    "elementwise-chain": {"": lambda: _chain(False)},
    "elementwise-nosin": {"": lambda: _chain(True)},
    "lstm": {"": _lstm},
}
