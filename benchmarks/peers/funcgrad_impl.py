"""funcgrad through its public API, as a user would write it: `fg.jit` of the whole training step
with `funcgrad.optim.adam`, `fg.jit(fg.vmap(fg.grad(loss)))` for per-example gradients,
`fg.value_and_grad(..., wrt=mask)` + `optim.masked` for the frozen fine-tuning,
`fg.hessian`, and `fg.jit(fg.value_and_grad(...))` of `fg.nn.lstm` (a `fg.lax.scan`).
"""

from __future__ import annotations

from . import common as C

LIBRARY = "funcgrad"


def _mlp_loss(params, x, y):
    from benchmarks.autodiff import fg_loss  # the MLP loss every funcgrad suite uses
    return fg_loss(params, x, y)


def _mlp(name):
    import funcgrad as fg
    from funcgrad import optim
    params, x, y = C.mlp_setup(name)
    tx = optim.adam(C.LR, b1=C.B1, b2=C.B2, eps=C.EPS)

    def train_step(params, opt_state, x, y):
        loss, grads = fg.value_and_grad(_mlp_loss)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optim.apply_updates(params, updates), opt_state, loss

    jstep = fg.jit(train_step, donate_argnums=(0, 1))
    state = [params, tx.init(params)]

    def step():
        state[0], state[1], loss = jstep(state[0], state[1], x, y)
        return loss
    return step


def _per_example(jit):
    import funcgrad as fg
    from benchmarks.per_example import fg_example_loss  # the loss of one example
    params, x, y = C.per_example_setup()
    f = fg.vmap(fg.grad(fg_example_loss), in_axes=(None, 0, 0))
    if jit:
        f = fg.jit(f)
    return lambda: f(params, x, y)


def _finetune(part):
    """benchmarks/finetune.py's steps: jit of value_and_grad (`wrt=mask` for (b)) + adam
    (`optim.masked(adam, mask)` for (b)), on funcgrad.models.transformer_classifier."""
    from benchmarks.finetune import fg_loss, fg_steps, models_loss
    params, tokens, labels = C.finetune_setup()
    try:
        from funcgrad import models  # noqa: F401
        loss_fn = models_loss
    except ImportError:
        loss_fn = fg_loss
    full, masked, _, _ = fg_steps(params, loss_fn)
    jstep, opt_state = masked if part == "b" else full
    state = [params, opt_state]

    def step():
        state[0], state[1], loss = jstep(state[0], state[1], tokens, labels)
        return loss
    return step


def _hessian_loss(w, X, y):
    import funcgrad.numpy as fnp
    from funcgrad import nn
    z = X @ w
    return fnp.mean(nn.softplus(z) - y * z)


def _hessian(jit):
    import funcgrad as fg
    w, X, y = C.hessian_setup()
    h = fg.hessian(_hessian_loss)
    if jit:
        h = fg.jit(h)
    return lambda: h(w, X, y)


def chain_value_and_grad(nosin=False):
    """fg.jit(fg.value_and_grad(chain)) of the elementwise chain (benchmarks/jit.py uses it)."""
    import funcgrad as fg
    import funcgrad.numpy as fnp
    ops = C.chain_ops(fnp.sin, fnp.tanh, fnp.exp, nosin)

    def chain(x):
        for i in range(C.CHAIN_OPS):
            x = ops[i % 5](x)
        return fnp.sum(x)

    return fg.jit(fg.value_and_grad(chain))


def _chain(nosin):
    f = chain_value_and_grad(nosin)
    x = C.chain_setup()
    return lambda: f(x)


def _lstm():
    import funcgrad as fg
    from benchmarks.control_flow import fg_lstm_loss  # mean((fg.nn.lstm(params, xs)[0] - t)**2)
    params, xs, target = C.lstm_setup()
    f = fg.jit(fg.value_and_grad(fg_lstm_loss))
    return lambda: f(params, xs, target)


def _with_retained_memory(make):
    """Freed temporaries stay in the process for the next step (fg.config retain_host_memory,
    off by default), as PyTorch's and JAX's own allocators keep theirs."""
    def setup():
        import funcgrad as fg
        fg.config.update("retain_host_memory", True)
        return make()
    return setup


WORKLOADS = {
    "mlp-train": {"": lambda: _mlp("mlp-train")},
    "mlp-small": {"": lambda: _mlp("mlp-small")},
    "per-example": {"": lambda: _per_example(True), "eager": lambda: _per_example(False)},
    "finetune-head-a": {"": lambda: _finetune("a")},
    "finetune-head-b": {"": lambda: _finetune("b")},
    "hessian": {"": lambda: _hessian(True), "eager": lambda: _hessian(False)},
    "elementwise-chain": {"": lambda: _chain(False)},
    "elementwise-nosin": {"": lambda: _chain(True)},
    "lstm": {"": _lstm},
}
WORKLOADS = {w: {k: _with_retained_memory(make) for k, make in impls.items()}
             for w, impls in WORKLOADS.items()}
