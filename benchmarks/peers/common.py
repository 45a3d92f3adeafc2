"""The workloads of ../shared/BENCHMARKS.md and the arrays every implementation starts from.

Weights come from `numpy.random.default_rng(0)`, data from `default_rng(1)`, all float32 (labels
int64). The model definitions are the topic suites' own (benchmarks/jit.py, per_example.py,
finetune.py, control_flow.py), so that a figure here and there means the same workload.
Only NumPy is imported here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Adam, identical in every implementation (Optax / torch.optim.Adam formula:
# p -= lr * m_hat / (sqrt(v_hat) + eps)).
LR, B1, B2, EPS = 1e-3, 0.9, 0.999, 1e-8

MLP_SIZES = {"mlp-train": ((784, 512, 512, 10), 128), "mlp-small": ((64, 128, 10), 32)}
HESS_N, HESS_D = 256, 100
CHAIN_N, CHAIN_OPS = 100_000, 64
LSTM_T, LSTM_B, LSTM_IN, LSTM_H = 100, 32, 128, 128


@dataclass(frozen=True)
class Workload:
    title: str
    train: bool            # a training step (the loss changes step to step) or a pure function
    block: int             # steps per interleaved block (full run)
    quick_block: int       # steps per block with --quick
    warmup: int = 3
    check: str = ""        # what the norm column is: the norm of the non-scalar outputs


WORKLOADS = {
    "mlp-train": Workload("MLP 784-512-512-10, ReLU, softmax cross-entropy, batch 128, Adam "
                          "lr 1e-3: forward + backward + update", True, 20, 8),
    "mlp-small": Workload("MLP 64-128-10, batch 32, Adam (dispatch-bound)", True, 100, 40),
    "per-example": Workload("per-example gradients of mlp-small's loss, batch 64", False, 40, 15,
                            check="‖per-example grads‖"),
    "finetune-head-a": Workload("2-block pre-norm transformer (d_model 128, 4 heads, MLP 512, "
                                "seq 64, batch 16, vocab 256), Adam: (a) all parameters trained",
                                True, 6, 3, warmup=2),
    "finetune-head-b": Workload("the same, (b) last block + final norm + head trained, the rest "
                                "frozen", True, 6, 3, warmup=2),
    "hessian": Workload("full Hessian of a logistic-regression loss, 100 weights, 256 examples",
                        False, 40, 15, check="‖H‖"),
    "elementwise-chain": Workload("value and grad of 64 chained elementwise ops (sin, mul, add, "
                                  "tanh, exp) on 1e5 float32", False, 20, 8, check="‖grad‖"),
    "elementwise-nosin": Workload("the same chain with tanh in place of sin", False, 20, 8,
                                  check="‖grad‖"),
    "lstm": Workload("LSTM, 100 steps, batch 32, input 128, hidden 128, mean squared error: "
                     "value_and_grad", False, 8, 3, warmup=2, check="‖grad‖"),
}

# How close the implementations must come to the reference (NumPy, else the first row): the
# training workloads compare the loss after the same number of Adam steps, float32 throughout.
LOSS_RTOL = 2e-3
CHECK_RTOL = 2e-3


# ---------------------------------------------------------------------------------------------
# Data


def mlp_setup(name):
    """([(w, b), ...], x, y) for mlp-train / mlp-small (benchmarks/jit.py's definitions)."""
    from benchmarks.jit import batch, init_mlp
    sizes, n = MLP_SIZES[name]
    x, y = batch(n, sizes[0], sizes[-1])
    return init_mlp(list(sizes)), x, y.astype(np.int64)


def per_example_setup():
    """([(w1, b1), (w2, b2)], x (64, 64), y (64,)) (benchmarks/per_example.py's definitions)."""
    from benchmarks.per_example import data, init
    x, y = data()
    return init(), x, y.astype(np.int64)


def finetune_setup():
    """(params, tokens (16, 64) int64, labels (16,) int64) (benchmarks/finetune.py's)."""
    from benchmarks.finetune import init_params, make_data
    tokens, labels = make_data()
    return init_params(), tokens.astype(np.int64), labels.astype(np.int64)


FINETUNE_TRAINABLE = ("blocks/1", "ln_f", "head")  # benchmarks/finetune.py's TRAINABLE


def finetune_consts():
    from benchmarks import finetune as f
    return dict(vocab=f.VOCAB, seq=f.SEQ, d=f.D, heads=f.HEADS, mlp=f.MLP, batch=f.BATCH,
                classes=f.CLASSES, layers=f.LAYERS)


def hessian_setup():
    """(w (100,), X (256, 100), y (256,) in {0, 1}); loss(w) = mean(softplus(Xw) - y Xw)."""
    w = np.random.default_rng(0).normal(0, 0.1, HESS_D).astype(np.float32)
    rng = np.random.default_rng(1)
    X = rng.normal(size=(HESS_N, HESS_D)).astype(np.float32)
    y = rng.integers(0, 2, HESS_N).astype(np.float32)
    return w, X, y


def chain_setup():
    """x (1e5,) uniform in [-1, 1] (benchmarks/jit.py's elementwise-chain input)."""
    return np.random.default_rng(1).uniform(-1, 1, CHAIN_N).astype(np.float32)


def chain_ops(sin, tanh, exp, nosin):
    """The five ops the chain cycles through; `nosin` puts tanh in sin's place."""
    half, tenth = np.float32(0.5), np.float32(0.1)
    return [tanh if nosin else sin, lambda x: x * half, lambda x: x + tenth, tanh, exp]


def lstm_setup():
    """(params {"wx", "wh", "b"} as fg.nn.lstm_init lays them out (gates i, f, g, o; uniform in
    ±1/sqrt(H), forget bias 1) from default_rng(0), xs (T, B, in), target (T, B, H))."""
    rng = np.random.default_rng(0)
    s = 1.0 / math.sqrt(LSTM_H)
    b = np.zeros(4 * LSTM_H, np.float32)
    b[LSTM_H:2 * LSTM_H] = 1.0
    params = {"wx": rng.uniform(-s, s, (LSTM_IN, 4 * LSTM_H)).astype(np.float32),
              "wh": rng.uniform(-s, s, (LSTM_H, 4 * LSTM_H)).astype(np.float32), "b": b}
    rng = np.random.default_rng(1)
    xs = rng.normal(size=(LSTM_T, LSTM_B, LSTM_IN)).astype(np.float32)
    target = rng.normal(size=(LSTM_T, LSTM_B, LSTM_H)).astype(np.float32)
    return params, xs, target


def numpy_adam(params, grads, m, v, t):
    """In-place Adam on lists of NumPy arrays (t: the step count after this step)."""
    c1, c2 = 1 - B1 ** t, 1 - B2 ** t
    for p, g, mm, vv in zip(params, grads, m, v):
        mm *= B1
        mm += (1 - B1) * g
        vv *= B2
        vv += (1 - B2) * g * g
        p -= LR * (mm / c1) / (np.sqrt(vv / c2) + EPS)
