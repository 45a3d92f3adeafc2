"""PyTorch eager (CPU): `loss.backward()` + `torch.optim.Adam` (same lr, betas, eps) for the
training steps, `requires_grad_(False)` on the frozen part of the fine-tuning,
`torch.func.vmap(grad)` for per-example gradients, `torch.func.hessian`, `torch.autograd.grad`
for the chain and a Python loop over time steps for the LSTM.
"""

from __future__ import annotations

from . import common as C

LIBRARY = "torch"


def _t(a, requires_grad=False):
    import torch
    return torch.from_numpy(a.copy()).requires_grad_(requires_grad)


def _train(loss_fn, params, trainable, *data):
    """An eager step: zero_grad, loss, backward, Adam over the `trainable` tensors."""
    import torch
    opt = torch.optim.Adam(trainable, lr=C.LR, betas=(C.B1, C.B2), eps=C.EPS)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(params, *data)
        loss.backward()
        opt.step()
        return loss.detach()
    return step


def _mlp_loss(params, x, y):
    import torch
    import torch.nn.functional as F
    h = x
    for w, b in params[:-1]:
        h = torch.relu(h @ w + b)
    w, b = params[-1]
    return F.cross_entropy(h @ w + b, y)


def _mlp(name):
    params, x, y = C.mlp_setup(name)
    params = [(_t(w, True), _t(b, True)) for w, b in params]
    return _train(_mlp_loss, params, [a for pair in params for a in pair], _t(x), _t(y))


def _per_example():
    import torch
    from torch.func import grad, vmap
    params, x, y = C.per_example_setup()

    def loss(params, x, y):
        (w1, b1), (w2, b2) = params
        logp = torch.log_softmax(torch.relu(x @ w1 + b1) @ w2 + b2, dim=-1)
        return -torch.gather(logp, 0, y.unsqueeze(0)).squeeze(0)

    f = vmap(grad(loss), in_dims=(None, 0, 0))
    params = [(_t(w), _t(b)) for w, b in params]
    x, y = _t(x), _t(y)
    return lambda: f(params, x, y)


def _transformer_loss(p, tokens, labels):
    """benchmarks/finetune.py's model (tanh GELU, layer norm eps 1e-5) in torch."""
    import torch
    import torch.nn.functional as F
    k = C.finetune_consts()
    B, T, D, H = k["batch"], k["seq"], k["d"], k["heads"]

    def heads(t):
        return t.reshape(B, T, H, D // H).transpose(1, 2)

    x = p["embed"][tokens] + p["pos"]
    for blk in p["blocks"]:
        h = F.layer_norm(x, (D,), blk["ln1"]["scale"], blk["ln1"]["bias"], 1e-5)
        a = blk["attn"]
        q, kk, v = heads(h @ a["wq"]), heads(h @ a["wk"]), heads(h @ a["wv"])
        att = torch.softmax(q @ kk.transpose(-1, -2) * (1 / (D // H) ** 0.5), dim=-1)
        x = x + (att @ v).transpose(1, 2).reshape(B, T, D) @ a["wo"]
        h = F.layer_norm(x, (D,), blk["ln2"]["scale"], blk["ln2"]["bias"], 1e-5)
        m = blk["mlp"]
        x = x + F.gelu(h @ m["w1"] + m["b1"], approximate="tanh") @ m["w2"] + m["b2"]
    pooled = F.layer_norm(x, (D,), p["ln_f"]["scale"], p["ln_f"]["bias"], 1e-5).mean(1)
    return F.cross_entropy(pooled @ p["head"]["w"] + p["head"]["b"], labels)


def _finetune(part):
    params, tokens, labels = C.finetune_setup()
    trainable = []

    def convert(tree, path):
        if isinstance(tree, dict):
            return {k: convert(v, f"{path}/{k}" if path else k) for k, v in tree.items()}
        if isinstance(tree, list):
            return [convert(v, f"{path}/{i}") for i, v in enumerate(tree)]
        train = part == "a" or any(path == p or path.startswith(p + "/")
                                   for p in C.FINETUNE_TRAINABLE)
        t = _t(tree, True).requires_grad_(train)  # frozen: requires_grad_(False)
        if train:
            trainable.append(t)
        return t

    p = convert(params, "")
    return _train(_transformer_loss, p, trainable, _t(tokens), _t(labels))


def _hessian():
    import torch.nn.functional as F
    from torch.func import hessian
    w, X, y = C.hessian_setup()

    def loss(w, X, y):
        z = X @ w
        return (F.softplus(z) - y * z).mean()

    h = hessian(loss)
    w, X, y = _t(w), _t(X), _t(y)
    return lambda: h(w, X, y)


def _chain(nosin):
    import torch
    ops = C.chain_ops(torch.sin, torch.tanh, torch.exp, nosin)
    x = _t(C.chain_setup(), True)

    def step():
        h = x
        for i in range(C.CHAIN_OPS):
            h = ops[i % 5](h)
        value = h.sum()
        (g,) = torch.autograd.grad(value, x)
        return value.detach(), g
    return step


def _lstm():
    import torch
    params, xs, target = C.lstm_setup()
    p = {k: _t(v, True) for k, v in params.items()}
    xs, target = _t(xs), _t(target)
    H = C.LSTM_H

    def step():
        wh = p["wh"]
        xw = xs @ p["wx"] + p["b"]
        h = c = torch.zeros(xs.shape[1], H)
        hs = []
        for t in range(xs.shape[0]):
            z = xw[t] + h @ wh
            i, f = torch.sigmoid(z[:, :H]), torch.sigmoid(z[:, H:2 * H])
            g, o = torch.tanh(z[:, 2 * H:3 * H]), torch.sigmoid(z[:, 3 * H:])
            c = f * c + i * g
            h = o * torch.tanh(c)
            hs.append(h)
        loss = ((torch.stack(hs) - target) ** 2).mean()
        grads = torch.autograd.grad(loss, list(p.values()))
        return loss.detach(), dict(zip(p, grads))
    return step


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
