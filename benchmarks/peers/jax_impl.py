"""JAX (CPU): `jax.jit` of the whole training step with Adam written by hand (optax's formula and
hyperparameters), `jit(vmap(grad))`, `jit(hessian)`, `jit(value_and_grad)` of a `lax.scan` LSTM.
The inputs are put on the device once; each step blocks until its outputs are ready.
"""

from __future__ import annotations

from . import common as C

LIBRARY = "jax"


def _adam():
    """(init, update) over pytrees: the update happens inside the caller's jit."""
    import jax
    import jax.numpy as jnp
    tm = jax.tree_util.tree_map

    def init(params):
        return tm(jnp.zeros_like, params), tm(jnp.zeros_like, params), jnp.zeros((), jnp.int32)

    def update(params, grads, state):
        m, v, t = state
        t = t + 1
        m = tm(lambda m, g: C.B1 * m + (1 - C.B1) * g, m, grads)
        v = tm(lambda v, g: C.B2 * v + (1 - C.B2) * g * g, v, grads)
        c1, c2 = 1 - C.B1 ** t, 1 - C.B2 ** t
        params = tm(lambda p, m, v: p - C.LR * (m / c1) / (jnp.sqrt(v / c2) + C.EPS),
                    params, m, v)
        return params, (m, v, t)
    return init, update


def _train(loss_fn, params, *data):
    """A jitted step (params, opt_state, *data) -> (params, opt_state, loss) and its runner."""
    import jax
    init, update = _adam()

    @jax.jit
    def train_step(params, opt_state, *data):
        loss, grads = jax.value_and_grad(loss_fn)(params, *data)
        params, opt_state = update(params, grads, opt_state)
        return params, opt_state, loss

    params = jax.device_put(params)
    data = jax.device_put(data)
    state = [params, init(params)]

    def step():
        state[0], state[1], loss = jax.block_until_ready(train_step(state[0], state[1], *data))
        return loss
    return step


def _mlp_loss(params, x, y):
    import jax
    import jax.numpy as jnp
    h = x
    for w, b in params[:-1]:
        h = jax.nn.relu(h @ w + b)
    w, b = params[-1]
    logp = jax.nn.log_softmax(h @ w + b)
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


def _mlp(name):
    params, x, y = C.mlp_setup(name)
    return _train(_mlp_loss, params, x, y)


def _per_example():
    import jax
    import jax.numpy as jnp
    params, x, y = C.per_example_setup()

    def loss(params, x, y):
        (w1, b1), (w2, b2) = params
        logp = jax.nn.log_softmax(jax.nn.relu(x @ w1 + b1) @ w2 + b2)
        return -jnp.take(logp, y)

    f = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0, 0)))
    params, x, y = jax.device_put((params, x, y))
    return lambda: jax.block_until_ready(f(params, x, y))


def _transformer_loss(params, tokens, labels):
    """benchmarks/finetune.py's model (tanh GELU, layer norm eps 1e-5), in jax.numpy."""
    import jax
    import jax.numpy as jnp
    k = C.finetune_consts()
    B, T, D, H = k["batch"], k["seq"], k["d"], k["heads"]

    def layer_norm(x, p):
        mu = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean((x - mu) ** 2, axis=-1, keepdims=True)
        return (x - mu) / jnp.sqrt(var + 1e-5) * p["scale"] + p["bias"]

    def heads(x):
        return jnp.transpose(x.reshape(B, T, H, D // H), (0, 2, 1, 3))

    x = params["embed"][tokens] + params["pos"]
    for blk in params["blocks"]:
        h = layer_norm(x, blk["ln1"])
        a = blk["attn"]
        q, kk, v = heads(h @ a["wq"]), heads(h @ a["wk"]), heads(h @ a["wv"])
        att = jax.nn.softmax(q @ jnp.swapaxes(kk, -1, -2) * (1 / (D // H) ** 0.5), axis=-1)
        x = x + jnp.transpose(att @ v, (0, 2, 1, 3)).reshape(B, T, D) @ a["wo"]
        h = layer_norm(x, blk["ln2"])
        m = blk["mlp"]
        x = x + jax.nn.gelu(h @ m["w1"] + m["b1"], approximate=True) @ m["w2"] + m["b2"]
    pooled = jnp.mean(layer_norm(x, params["ln_f"]), axis=1)
    logp = jax.nn.log_softmax(pooled @ params["head"]["w"] + params["head"]["b"])
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))


def _finetune(part):
    import jax
    params, tokens, labels = C.finetune_setup()
    if part == "a":
        step = _train(_transformer_loss, params, tokens, labels)
        return step
    # (b): differentiate (and update) only the trainable part; the rest is a closed-over input.
    trainable = {"block1": params["blocks"][1], "ln_f": params["ln_f"], "head": params["head"]}
    frozen = jax.device_put({"embed": params["embed"], "pos": params["pos"],
                             "block0": params["blocks"][0]})

    def loss(trainable, frozen, tokens, labels):
        full = {"embed": frozen["embed"], "pos": frozen["pos"],
                "blocks": [frozen["block0"], trainable["block1"]],
                "ln_f": trainable["ln_f"], "head": trainable["head"]}
        return _transformer_loss(full, tokens, labels)

    return _train(loss, trainable, frozen, tokens, labels)


def _hessian():
    import jax
    import jax.numpy as jnp
    w, X, y = C.hessian_setup()

    def loss(w, X, y):
        z = X @ w
        return jnp.mean(jax.nn.softplus(z) - y * z)

    h = jax.jit(jax.hessian(loss))
    w, X, y = jax.device_put((w, X, y))
    return lambda: jax.block_until_ready(h(w, X, y))


def _chain(nosin):
    import jax
    import jax.numpy as jnp
    ops = C.chain_ops(jnp.sin, jnp.tanh, jnp.exp, nosin)

    def chain(x):
        for i in range(C.CHAIN_OPS):
            x = ops[i % 5](x)
        return jnp.sum(x)

    f = jax.jit(jax.value_and_grad(chain))
    x = jax.device_put(C.chain_setup())
    return lambda: jax.block_until_ready(f(x))


def _lstm():
    import jax

    from benchmarks.control_flow import jax_lstm_value_and_grad  # jit(value_and_grad), lax.scan
    params, xs, target = jax.device_put(C.lstm_setup())
    f = jax_lstm_value_and_grad()
    return lambda: jax.block_until_ready(f(params, xs, target))


WORKLOADS = {
    "mlp-train": {"": lambda: _mlp("mlp-train")},
    "mlp-small": {"": lambda: _mlp("mlp-small")},
    "per-example": {"": _per_example},
    "finetune-head-a": {"": lambda: _finetune("a")},
    "finetune-head-b": {"": lambda: _finetune("b")},
    "hessian": {"": _hessian},
    "elementwise-chain": {"": lambda: _chain(False)},
    "elementwise-nosin": {"": lambda: _chain(True)},
    "lstm": {"": _lstm},
}
