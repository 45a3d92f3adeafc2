"""Pretrain on digits 0-4, adapt to digits 5-9 three ways: head only, full fine-tuning, LoRA.

An MLP and a small CNN are trained on the handwritten digits 0-4 of the UCI 8x8 digits set
(1797 images, in examples/data), then adapted to the digits 5-9 (a new 5-way head) by
  * head only: a mask selects the head; `fg.grad(..., wrt=mask)` and `optim.masked` skip the rest,
  * full fine-tuning: every parameter trains,
  * LoRA: low-rank adapters on the 2-D weights of the body (plus the new head) train; the
    pretrained weights stay frozen.
It prints a table of test accuracy, trainable parameter count and median step time for each, and
saves a plot of the test accuracy on 5-9 along the adaptation. With --mnist DIR it reads MNIST
IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-..., optionally .gz) instead
of the digits set.

    python examples/digits_finetune.py            # ~40 s on a busy 2-core machine
    python examples/digits_finetune.py --quick    # ~10 s (used by the tests)
"""

from __future__ import annotations

import argparse
import gzip
import os
import struct

import numpy as np
from _util import Timer, add_common_args, load_digits, print_table, progress, save_curves

import funcgrad as fg
import funcgrad.numpy as fnp
from funcgrad import lora, masks, models, optim
from funcgrad.losses import softmax_cross_entropy_with_integer_labels as xent_per_example

# ---------------------------------------------------------------------------------------------
# data


def read_idx(path):
    """One IDX file (MNIST's format): big-endian magic 0x0000 <dtype=0x08> <ndim>, dims, data."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {data[:4].hex()})")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find(directory, stem):
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
        p = os.path.join(directory, name)
        if os.path.exists(p):
            return p
    raise FileNotFoundError(f"--mnist: no {stem}[.gz] in {directory}")


def load_mnist(directory, limit):
    """(x_train, y_train, x_test, y_test); images float32 in [0, 1], shape (n, 28, 28, 1)."""
    parts = []
    for split in ("train", "t10k"):
        x = read_idx(_find(directory, f"{split}-images-idx3-ubyte"))[:limit]
        y = read_idx(_find(directory, f"{split}-labels-idx1-ubyte"))[:limit]
        parts += [(x[..., None] / 255.0).astype(np.float32), y.astype(np.int32)]
    return tuple(parts)


def task(x, y, digits):
    """The examples of the given digits, relabelled 0..len(digits)-1."""
    keep = np.isin(y, digits)
    return x[keep], (y[keep] - min(digits)).astype(np.int32)


# ---------------------------------------------------------------------------------------------
# models: params are dicts, the classifier head is params["head"]


def mlp_init(key, image_shape, classes, hidden=128):
    k1, k2 = fg.random.split(key)
    return {"body": models.mlp.init(k1, [int(np.prod(image_shape)), hidden, hidden]),
            "head": models.dense.init(k2, hidden, classes)}


def mlp_apply(params, x):
    h = fg.nn.relu(models.mlp.apply(params["body"], x.reshape(x.shape[0], -1)))
    return models.dense.apply(params["head"], h)


def cnn_init(key, image_shape, classes, hidden=64):
    k1, k2, k3, k4 = fg.random.split(key, 4)
    h, w, c = image_shape
    flat = (h // 4) * (w // 4) * 16
    return {"conv1": models.conv2d.init(k1, c, 8, 3),
            "conv2": models.conv2d.init(k2, 8, 16, 3),
            "fc": models.dense.init(k3, flat, hidden),
            "head": models.dense.init(k4, hidden, classes)}


def cnn_apply(params, x):
    x = models.max_pool(fg.nn.relu(models.conv2d.apply(params["conv1"], x)), 2)
    x = models.max_pool(fg.nn.relu(models.conv2d.apply(params["conv2"], x)), 2)
    h = fg.nn.relu(models.dense.apply(params["fc"], x.reshape(x.shape[0], -1)))
    return models.dense.apply(params["head"], h)


MODELS = {"mlp": (mlp_init, mlp_apply), "cnn": (cnn_init, cnn_apply)}

# ---------------------------------------------------------------------------------------------
# training


def train(loss_fn, trainable, frozen, x, y, steps, lr, batch, seed, desc, quiet, wrt=None,
          evaluate=None):
    """Adam on `loss_fn(trainable, frozen, xb, yb)`; `wrt` (a mask over `trainable`) limits
    which leaves get gradients and updates. `evaluate(trainable) -> accuracy` is called about
    20 times along the way (and at the end). Returns (trainable, losses, median step ms,
    (steps, accuracies))."""
    tx = optim.adam(lr) if wrt is None else optim.masked(optim.adam(lr), wrt)
    grad_fn = fg.value_and_grad(loss_fn, wrt=wrt)

    @fg.jit
    def step(trainable, state, frozen, xb, yb):
        loss, grads = grad_fn(trainable, frozen, xb, yb)
        updates, state = tx.update(grads, state, trainable)
        return optim.apply_updates(trainable, updates), state, loss

    state = tx.init(trainable)
    rng = np.random.default_rng(seed)
    losses, timer, evals = [], Timer(), ([], [])
    every = max(1, steps // 20)
    bar = progress(range(steps), desc, quiet)
    for i in bar:
        if evaluate is not None and i % every == 0:
            evals[0].append(i)
            evals[1].append(evaluate(trainable))
        idx = rng.integers(0, len(x), batch)
        with timer:
            trainable, state, loss = step(trainable, state, frozen, x[idx], y[idx])
            loss = float(loss)
        losses.append(loss)
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
    if evaluate is not None:
        evals[0].append(steps)
        evals[1].append(evaluate(trainable))
    return trainable, losses, timer.median_ms, evals


def accuracy(apply, params, x, y):
    logits = fg.jit(apply)(params, x)
    return float(np.mean(np.argmax(fg.device_get(logits), -1) == y))


def adapt(name, apply, pre, x, y, xt, yt, args, classes, key):
    """The three ways of adapting `pre` to the new task; one result row each."""
    new_head = mlp_init(key, x.shape[1:], classes)["head"] if name == "mlp" else \
        cnn_init(key, x.shape[1:], classes)["head"]
    start = dict(pre, head=new_head)
    xent = lambda logits, labels: fnp.mean(xent_per_example(logits, labels))
    common = dict(x=x, y=y, steps=args.steps, batch=args.batch, seed=1, quiet=args.quiet)
    rows, curves = [], {}
    test_acc = lambda p: accuracy(apply, p, xt, yt)

    # (1) head only: one mask drives grad(..., wrt=mask) and optim.masked
    head = masks.mask_from_paths(start, include=["head/**"])
    loss = lambda p, _, xb, yb: xent(apply(p, xb), yb)
    p, ls, ms, acc = train(loss, start, None, lr=args.lr, desc=f"{name} head", wrt=head,
                           evaluate=test_acc, **common)
    rows.append([name, "head only", acc[1][-1], masks.count(start, head), ms])
    curves[f"{name} head only"] = acc

    # (2) full fine-tuning
    p, ls, ms, acc = train(loss, start, None, lr=args.lr, desc=f"{name} full",
                           evaluate=test_acc, **common)
    rows.append([name, "full", acc[1][-1], masks.count(start), ms])
    curves[f"{name} full"] = acc

    # (3) LoRA on the 2-D weights of the body, plus the new head; the base stays frozen
    body_2d = masks.mask_where(start, lambda path, w: np.ndim(w) == 2
                               and not path.startswith("head"))
    adapters = lora.init(fg.random.key(args.seed), start, body_2d, rank=args.rank,
                         alpha=2 * args.rank)
    lora_apply = lora.apply(apply)

    def lora_loss(trainable, base, xb, yb):
        adapters, head = trainable
        return xent(lora_apply(dict(base, head=head), adapters, xb), yb)

    def lora_acc(trainable):
        adapters, head = trainable
        return test_acc(lora.merge(dict(start, head=head), adapters))

    (adapters, head_p), ls, ms, acc = train(lora_loss, (adapters, new_head), start,
                                            lr=args.lr, desc=f"{name} lora", evaluate=lora_acc,
                                            **common)
    n_lora = sum(a.size for a in fg.tree_util.tree_leaves((adapters, head_p)))
    rows.append([name, f"LoRA r={args.rank}", acc[1][-1], n_lora, ms])
    curves[f"{name} LoRA r={args.rank}"] = acc
    return rows, curves


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="mlp,cnn", help="comma-separated: mlp, cnn")
    ap.add_argument("--pretrain-steps", type=int, default=300)
    ap.add_argument("--steps", type=int, default=150, help="adaptation steps per method")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--rank", type=int, default=4, help="LoRA rank")
    add_common_args(ap)
    ap.add_argument("--mnist", metavar="DIR", help="read MNIST IDX files from DIR instead")
    ap.add_argument("--limit", type=int, default=10000, help="max MNIST examples per split")
    args = ap.parse_args(argv)
    if args.quick:
        args.pretrain_steps, args.steps, args.batch = 20, 10, 32

    x, y, xt, yt = load_mnist(args.mnist, args.limit) if args.mnist else \
        load_digits(images=True)
    print(f"data: {'MNIST ' + args.mnist if args.mnist else 'UCI 8x8 digits'}, "
          f"{len(x)} train / {len(xt)} test images of shape {x.shape[1:]}")
    x_pre, y_pre = task(x, y, [0, 1, 2, 3, 4])
    x_new, y_new = task(x, y, [5, 6, 7, 8, 9])
    xt_pre, yt_pre = task(xt, yt, [0, 1, 2, 3, 4])
    xt_new, yt_new = task(xt, yt, [5, 6, 7, 8, 9])

    rows, curves = [], {}
    for name in args.models.split(","):
        init, apply = MODELS[name]
        k_pre, k_head = fg.random.split(fg.random.key(args.seed))
        params = init(k_pre, x.shape[1:], 5)
        loss = lambda p, _, xb, yb, apply=apply: fnp.mean(xent_per_example(apply(p, xb), yb))
        params, ls, _, _ = train(loss, params, None, x_pre, y_pre, args.pretrain_steps,
                                 args.lr, args.batch, args.seed, f"{name} pretrain 0-4",
                                 args.quiet)
        acc_pre = accuracy(apply, params, xt_pre, yt_pre)
        acc_new = accuracy(apply, params, xt_new, yt_new)
        print(f"{name}: pretrained on 0-4, test accuracy {acc_pre:.3f} | "
              f"before adapting, on 5-9: {acc_new:.3f}")
        r, c = adapt(name, apply, params, x_new, y_new, xt_new, yt_new, args, 5, k_head)
        rows += r
        curves.update(c)

    print_table(rows, ["model", "method", "test acc (5-9)", "trainable params", "step ms"],
                title="Adapting to digits 5-9")
    save_curves(os.path.join(args.out, "digits_finetune.png"), curves, xlabel="adaptation step",
                ylabel="test accuracy on 5-9", title="digits: pretrained on 0-4, adapted to 5-9")
    return rows


if __name__ == "__main__":
    main()
