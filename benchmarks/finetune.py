"""Issue 7's fine-tuning figure (`finetune-head` in BENCHMARKS.md): one jitted training step of a
2-block pre-norm transformer classifier, (a) all parameters trained vs (b) only the last block,
the final norm and the head (`fg.grad(..., wrt=mask)` + `optim.masked(adam, mask)`).

    python -m benchmarks.finetune            # funcgrad, and PyTorch when installed
    python -m benchmarks.finetune --quick    # fewer repeats

Model: vocab 256, seq 64, d_model 128, 4 heads, MLP 512, batch 16, mean-pool head, 10 classes;
Adam lr 1e-3. Weights from default_rng(0), data from default_rng(1), float32. The target is
(b) / (a) <= 0.6. PyTorch's ratio (`requires_grad=False` on the frozen part, Adam over the
trainable part only) is printed beside it when torch is installed; both implementations start
from the same arrays and report the same initial loss.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ._common import interleaved, load_note

VOCAB, SEQ, D, HEADS, MLP, BATCH, CLASSES, LAYERS = 256, 64, 128, 4, 512, 16, 10, 2
TRAINABLE = ["blocks/1", "ln_f", "head"]


# ---------------------------------------------------------------------------------------------
# Weights and data (shared by every implementation)


def init_params(seed=0):
    rng = np.random.default_rng(seed)

    def dense(m, n):
        return rng.normal(0, 1 / np.sqrt(m), (m, n)).astype(np.float32)

    def norm():
        return {"scale": np.ones(D, np.float32), "bias": np.zeros(D, np.float32)}

    blocks = [{"ln1": norm(),
               "attn": {"wq": dense(D, D), "wk": dense(D, D), "wv": dense(D, D), "wo": dense(D, D)},
               "ln2": norm(),
               "mlp": {"w1": dense(D, MLP), "b1": np.zeros(MLP, np.float32),
                       "w2": dense(MLP, D), "b2": np.zeros(D, np.float32)}}
              for _ in range(LAYERS)]
    return {"embed": (rng.normal(size=(VOCAB, D)) * 0.02).astype(np.float32),
            "pos": (rng.normal(size=(SEQ, D)) * 0.02).astype(np.float32),
            "blocks": blocks, "ln_f": norm(),
            "head": {"w": dense(D, CLASSES), "b": np.zeros(CLASSES, np.float32)}}


def make_data(seed=1):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, VOCAB, (BATCH, SEQ)).astype(np.int32),
            rng.integers(0, CLASSES, BATCH).astype(np.int32))


# ---------------------------------------------------------------------------------------------
# funcgrad


def fg_loss(params, tokens, labels):
    import funcgrad.numpy as fnp
    from funcgrad import nn

    def layer_norm(x, p):
        mu = fnp.mean(x, axis=-1, keepdims=True)
        var = fnp.mean((x - mu) ** 2, axis=-1, keepdims=True)
        return (x - mu) / fnp.sqrt(var + 1e-5) * p["scale"] + p["bias"]

    def heads(x):
        return fnp.transpose(fnp.reshape(x, (BATCH, SEQ, HEADS, D // HEADS)), (0, 2, 1, 3))

    x = params["embed"][tokens] + params["pos"]
    for blk in params["blocks"]:
        h = layer_norm(x, blk["ln1"])
        a = blk["attn"]
        q, k, v = heads(h @ a["wq"]), heads(h @ a["wk"]), heads(h @ a["wv"])
        # a Python float: an np.float64 scalar would promote the logits to float64 (NEP 50)
        att = nn.softmax(q @ fnp.swapaxes(k, -1, -2) * float(1 / np.sqrt(D // HEADS)), axis=-1)
        o = fnp.reshape(fnp.transpose(att @ v, (0, 2, 1, 3)), (BATCH, SEQ, D))
        x = x + o @ a["wo"]
        h = layer_norm(x, blk["ln2"])
        m = blk["mlp"]
        x = x + nn.gelu(h @ m["w1"] + m["b1"]) @ m["w2"] + m["b2"]
    pooled = fnp.mean(layer_norm(x, params["ln_f"]), axis=1)
    logp = nn.log_softmax(pooled @ params["head"]["w"] + params["head"]["b"])
    return -fnp.mean(fnp.take_along_axis(logp, labels[:, None], axis=1))


def models_loss(params, tokens, labels):
    """The same loss with the project's `funcgrad.models.transformer_classifier` forward."""
    import funcgrad.numpy as fnp
    from funcgrad import models, nn

    logp = nn.log_softmax(models.transformer_classifier.apply(params, tokens, HEADS))
    return -fnp.mean(fnp.take_along_axis(logp, labels[:, None], axis=1))


def fg_steps(params, loss_fn=fg_loss):
    """Jitted steps (a) full and (b) masked, each `(params, state, x, y) -> (params, state, loss)`,
    with their initial optimizer states."""
    import funcgrad as fg
    from funcgrad import masks, optim

    mask = masks.mask_from_paths(params, include=TRAINABLE)
    full_tx = optim.adam(1e-3)
    part_tx = optim.masked(optim.adam(1e-3), mask)

    def make(tx, wrt):
        @fg.jit
        def step(p, s, x, y):
            loss, g = fg.value_and_grad(loss_fn, wrt=wrt)(p, x, y)
            u, s = tx.update(g, s, p)
            return optim.apply_updates(p, u), s, loss
        return step

    return ((make(full_tx, None), full_tx.init(params)),
            (make(part_tx, mask), part_tx.init(params)), masks.count(params, mask),
            masks.count(params))


# ---------------------------------------------------------------------------------------------
# PyTorch (optional)


def torch_steps(params):
    import torch
    torch.set_num_threads(torch.get_num_threads())

    def tensors(trainable_paths):
        from funcgrad import masks
        from funcgrad import tree_util as tu
        mask = masks.mask_from_paths(params, include=trainable_paths) if trainable_paths else True
        leaves = masks.leaf_mask(mask, params)
        flat, treedef = tu.tree_flatten(params)
        ts = [torch.tensor(x, requires_grad=m) for x, m in zip(flat, leaves)]
        return tu.tree_unflatten(treedef, ts), [t for t in ts if t.requires_grad]

    def loss_fn(p, tokens, labels):
        F = torch.nn.functional
        x = p["embed"][tokens] + p["pos"]
        for blk in p["blocks"]:
            h = F.layer_norm(x, (D,), blk["ln1"]["scale"], blk["ln1"]["bias"], 1e-5)
            a = blk["attn"]

            def heads(t):
                return t.reshape(BATCH, SEQ, HEADS, D // HEADS).transpose(1, 2)

            q, k, v = heads(h @ a["wq"]), heads(h @ a["wk"]), heads(h @ a["wv"])
            att = torch.softmax(q @ k.transpose(-1, -2) / np.sqrt(D // HEADS), dim=-1)
            x = x + (att @ v).transpose(1, 2).reshape(BATCH, SEQ, D) @ a["wo"]
            h = F.layer_norm(x, (D,), blk["ln2"]["scale"], blk["ln2"]["bias"], 1e-5)
            m = blk["mlp"]
            x = x + F.gelu(h @ m["w1"] + m["b1"], approximate="tanh") @ m["w2"] + m["b2"]
        pooled = F.layer_norm(x, (D,), p["ln_f"]["scale"], p["ln_f"]["bias"], 1e-5).mean(1)
        return F.cross_entropy(pooled @ p["head"]["w"] + p["head"]["b"], labels)

    def make(trainable_paths):
        p, train = tensors(trainable_paths)
        opt = torch.optim.Adam(train, lr=1e-3)

        def step(tokens, labels):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(p, tokens, labels)
            loss.backward()
            opt.step()
            return loss.detach()
        return step

    return make(None), make(TRAINABLE)


# ---------------------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    args = ap.parse_args(argv)
    rounds, repeats = (3, 3) if args.quick else (7, 5)

    params = init_params()
    tokens, labels = make_data()
    (full, s_full), (part, s_part), n_train, n_all = fg_steps(params)
    steps = [("full", full, s_full), ("masked", part, s_part)]
    try:
        (m_full, m_s_full), (m_part, m_s_part), _, _ = fg_steps(params, models_loss)
        steps += [("models full", m_full, m_s_full), ("models masked", m_part, m_s_part)]
    except ImportError:
        pass

    first = {}
    box = {}
    for name, step, s in steps:
        t0 = time.perf_counter()
        p, s, loss0 = step(params, s, tokens, labels)
        first[name] = time.perf_counter() - t0
        box[name] = [p, s, float(loss0)]

    def runner(name, step):
        def run():
            b = box[name]
            b[0], b[1], _ = step(b[0], b[1], tokens, labels)
        return run

    fns = {f"funcgrad {name}": runner(name, step) for name, step, _ in steps}
    torch_note = ""
    try:
        import torch
        t_full, t_part = torch_steps(params)
        tt, tl = torch.tensor(tokens.astype(np.int64)), torch.tensor(labels.astype(np.int64))
        torch_loss = float(t_full(tt, tl))
        t_part(tt, tl)
        fns["torch full"] = lambda: t_full(tt, tl)
        fns["torch frozen"] = lambda: t_part(tt, tl)
    except ImportError:
        torch_loss = None
        torch_note = "(PyTorch is not installed: its requires_grad=False ratio is not measured)"

    res = interleaved(fns, rounds=rounds, repeats=repeats, warmup=2)
    print(f"\n### finetune-head: jitted training step, 2-block transformer (d_model {D}, {HEADS} "
          f"heads, seq {SEQ}, batch {BATCH}), Adam")
    print(f"{load_note()}; trainable {n_train:,} of {n_all:,} parameters "
          f"({', '.join(TRAINABLE)})")
    print("initial loss: " + ", ".join(f"funcgrad {k} {b[2]:.6f}" for k, b in box.items())
          + (f", torch {torch_loss:.6f}" if torch_loss is not None else ""))
    print("first call (trace + compile + step): "
          + ", ".join(f"{k} {v:.2f} s" for k, v in first.items()) + "\n")
    print("| step | median ms | min–max ms |")
    print("| --- | --- | --- |")
    for k, (med, lo, hi) in res.items():
        print(f"| {k} | {med * 1e3:.1f} | {lo * 1e3:.1f}–{hi * 1e3:.1f} |")
    ratio = res["funcgrad masked"][0] / res["funcgrad full"][0]
    print(f"\nfuncgrad masked / full = {ratio:.2f} (target <= 0.6)")
    if "funcgrad models full" in res:
        print(f"funcgrad masked / full with funcgrad.models.transformer_classifier = "
              f"{res['funcgrad models masked'][0] / res['funcgrad models full'][0]:.2f}")
    if "torch full" in res:
        print(f"torch requires_grad=False / full = "
              f"{res['torch frozen'][0] / res['torch full'][0]:.2f}")
    elif torch_note:
        print(torch_note)
    return ratio


if __name__ == "__main__":
    main()
