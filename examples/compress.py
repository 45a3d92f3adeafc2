"""Compress a trained model for deployment: post-training quantization and magnitude pruning.

An MLP is trained on the 8x8 digits (examples/data/digits.npz, all ten classes), then
  * quantized after training (no retraining): int8 per output channel and 4-bit NF4 (QLoRA's
    data type, blocks of 64 with double quantization), with `funcgrad.quant`; bfloat16 storage
    with `mixed_precision.cast_floating`. The table gives each one's test accuracy, its change
    from float32, the bytes of the weights and the time of a jitted forward pass;
  * pruned by magnitude (`masks.prune_by_magnitude`, one global ranking) to several sparsities,
    then fine-tuned with the pruned weights held at zero (`optim.keep_pruned`). The table gives
    the accuracy right after pruning and after fine-tuning, and the sparsity actually measured
    in the weights (`masks.sparsity`).

    python examples/compress.py            # ~30 seconds on 2 CPU cores
    python examples/compress.py --quick    # a few seconds (used by the tests)
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from _util import Timer, add_common_args, load_digits, print_table, save_curves

import funcgrad as fg
import funcgrad.numpy as fnp
from funcgrad import masks, models, optim, quant
from funcgrad.losses import softmax_cross_entropy
from funcgrad.mixed_precision import cast_floating


def accuracy(params, x, y):
    logits = models.mlp.apply(params, x)
    return float(np.mean(np.asarray(fg.device_get(fnp.argmax(logits, axis=-1))) == y))


def loss_fn(params, x, y):
    logits = models.mlp.apply(params, x)
    return fnp.mean(softmax_cross_entropy(logits, fg.nn.one_hot(y, 10)))


def train(params, tx, x, y, steps, batch, rng):
    state = tx.init(params)

    @fg.jit
    def step(p, s, xb, yb):
        loss, g = fg.value_and_grad(loss_fn)(p, xb, yb)
        u, s = tx.update(g, s, p)
        return optim.apply_updates(p, u), s, loss

    losses = []
    for _ in range(steps):
        i = rng.integers(0, len(x), batch)
        params, state, loss = step(params, state, x[i], y[i])
        losses.append(float(loss))
    return params, losses


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(ap)
    ap.add_argument("--width", type=int, default=256, help="hidden width of the MLP")
    args = ap.parse_args(argv)
    steps, tune = (100, 20) if args.quick else (1500, 300)
    rng = np.random.default_rng(args.seed)
    x, y, xt, yt = load_digits()

    params = models.mlp.init(fg.random.key(args.seed), [64, args.width, args.width, 10])
    params, losses = train(params, optim.adam(2e-3), x, y, steps, 64, rng)
    base_acc = accuracy(params, xt, yt)

    # --- post-training quantization ---------------------------------------------------------
    weights = masks.mask_where(params, lambda path, w: np.ndim(w) == 2)
    variants = {"float32": params,
                "bfloat16": cast_floating(params, fnp.bfloat16),
                "int8 per channel": quant.quantize(params, "int8", mask=weights, axis=1),
                "NF4 (double quant.)": quant.quantize(params, "nf4", mask=weights)}
    rows = []
    for name, p in variants.items():
        acc = accuracy(p, xt, yt)
        forward = fg.jit(lambda p, x: models.mlp.apply(p, x))
        timer = Timer()
        for _ in range(8):
            with timer:
                np.asarray(forward(p, xt))
        rows.append([name, acc, f"{(acc - base_acc) * 100:+.2f} pt", quant.nbytes(p),
                     f"{timer.median_ms:.2f} ms"])
    print_table(rows, ["weights", "test accuracy", "change", "bytes", "forward (jit)"],
                title=f"Post-training quantization ({len(xt)} test digits)")

    # --- magnitude pruning, then fine-tuning with the pruned weights held at zero ------------
    rows, curves = [], {"dense training": losses}
    for sparsity in (0.5, 0.9) if args.quick else (0.5, 0.8, 0.9, 0.95):
        keep = masks.prune_by_magnitude(params, sparsity)
        pruned = masks.apply_pruning(params, keep)
        before = accuracy(pruned, xt, yt)
        tuned, tune_losses = train(pruned, optim.keep_pruned(optim.adam(1e-3), keep), x, y,
                                   tune, 64, rng)
        report = masks.sparsity(tuned, keep)
        rows.append([f"{sparsity:.0%}", before, accuracy(tuned, xt, yt),
                     f"{report['overall']:.1%}",
                     ", ".join(f"{v:.0%}" for k, v in report.items() if k != "overall")])
        curves[f"fine-tuning at {sparsity:.0%} sparsity"] = (
            list(range(steps, steps + tune)), tune_losses)
    print_table(rows, ["target sparsity", "accuracy pruned", "after fine-tuning",
                       "measured sparsity", "per layer"],
                title=f"Global magnitude pruning (float32 accuracy {base_acc:.4f}; "
                      f"{tune} fine-tuning steps)")
    curves["dense training"] = (list(range(steps)), losses)
    save_curves(os.path.join(args.out, "compress.png"), curves, ylabel="training loss",
                title="MLP on digits: training, then fine-tuning after pruning", logy=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
