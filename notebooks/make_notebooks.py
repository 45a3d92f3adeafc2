"""Writes the tutorial notebooks (no outputs: they are run by tests/test_notebooks.py and by
readers). Edit the cells here and re-run `python notebooks/make_notebooks.py`, so the .ipynb
files stay generated, reviewable and output-free in git."""

from __future__ import annotations

import os

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = os.path.dirname(os.path.abspath(__file__))


def md(s):
    return new_markdown_cell(s.strip())


def code(s):
    return new_code_cell(s.strip())


NOTEBOOKS = {}

NOTEBOOKS["01_transforms_tour"] = [
    md("""
# A tour of the transforms

funcgrad traces a Python function into a small typed program, a **jaxpr**, and every transform
(`grad`, `vmap`, `jit`) is a function from a program to a program. Here is one function and the
programs the transforms make of it, side by side.

Inputs can be NumPy arrays: they run on funcgrad's default backend, and results come back as
that backend's arrays (NumPy on the CPU, CuPy with `FUNCGRAD_BACKEND=gpu`). Host-side NumPy
work on results, such as `np.testing`, starts with `fg.device_get`, which fetches a pytree of
results as NumPy arrays (and passes NumPy arrays through).
"""),
    code("""
import numpy as np

import funcgrad as fg
import funcgrad.numpy as fnp

def f(w, x):
    return fnp.sum(fnp.tanh(x @ w))

w = np.ones((3, 2), np.float32)
x = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
print(fg.make_jaxpr(f)(w, x))
"""),
    md("""
## grad

`fg.grad(f)` is a new function; its program holds the forward pass and the backward pass
(the transpose of the chain rule), written with the same primitives.
"""),
    code("""
print(fg.make_jaxpr(fg.grad(f))(w, x))
print(fg.grad(f)(w, x))
"""),
    md("""
## vmap

`fg.vmap` adds a batch axis to every equation: no Python loop, the same primitives on bigger
arrays. Here `x` is batched and `w` is shared (`in_axes=(None, 0)`).
"""),
    code("""
xs = np.stack([x, 2 * x, 3 * x])                       # (3, 4, 3): three batches
print(fg.make_jaxpr(fg.vmap(f, in_axes=(None, 0)))(w, xs))
print(fg.vmap(f, in_axes=(None, 0))(w, xs))
"""),
    md("""
## jit

`fg.jit` traces once per input signature, optimizes the program (dead-code elimination, common
subexpressions, constant folding, fusion) and compiles it. `.lower(...)` shows the optimized
program it runs.
"""),
    code("""
jf = fg.jit(fg.grad(f))
print(jf.lower(w, x))
got, want = fg.device_get((jf(w, x), fg.grad(f)(w, x)))   # NumPy copies, to compare on the host
np.testing.assert_allclose(got, want, rtol=1e-6)
"""),
    md("""
## Side by side, and composed

Transforms compose in any order: the per-example gradient program is `vmap` of `grad`, and
`jit` compiles it.
"""),
    code("""
programs = {
    "f": fg.make_jaxpr(f)(w, x),
    "grad(f)": fg.make_jaxpr(fg.grad(f))(w, x),
    "vmap(f)": fg.make_jaxpr(fg.vmap(f, in_axes=(None, 0)))(w, xs),
    "vmap(grad(f))": fg.make_jaxpr(fg.vmap(fg.grad(f), in_axes=(None, 0)))(w, xs),
}
for name, prog in programs.items():
    n_eqns = len(str(prog).splitlines()) - 3
    print(f"{name:15s} ~{n_eqns} equations")
print(fg.jit(fg.vmap(fg.grad(f), in_axes=(None, 0)))(w, xs).shape)
"""),
    md("""
## A picture: derivatives of any order

`grad` of a scalar function is a function again, so it can be differentiated again, and `vmap`
evaluates each of them on a whole grid at once.
"""),
    code("""
%matplotlib inline
import matplotlib.pyplot as plt

g = lambda t: fnp.sin(3 * t) * fnp.exp(-t * t / 2)
grid = np.linspace(-3, 3, 300)
curves = {"g": g, "grad(g)": fg.grad(g), "grad(grad(g))": fg.grad(fg.grad(g))}
fig, ax = plt.subplots(figsize=(7, 3.5))
for name, fn in curves.items():
    ax.plot(grid, fg.device_get(fg.vmap(fn)(grid)), label=name)
ax.axhline(0, color="gray", lw=0.5)
ax.set_xlabel("t")
ax.legend()
ax.set_title("g(t) = sin(3t) exp(-t²/2) and its derivatives, by fg.vmap(fg.grad(...))")
plt.show()
"""),
]

NOTEBOOKS["02_per_example_gradients"] = [
    md("""
# Per-example gradients

Many methods need one gradient per example rather than the batch mean: differential privacy
(clip each example's gradient), influence estimates, gradient-noise statistics.
`fg.vmap(fg.grad(loss))` computes them all in one program. The data: the UCI 8x8 handwritten
digits (1797 images, in `examples/data`).
"""),
    code("""
%matplotlib inline
import os
import time

import matplotlib.pyplot as plt
import numpy as np

import funcgrad as fg
import funcgrad.numpy as fnp
from funcgrad import models
from funcgrad.losses import softmax_cross_entropy_with_integer_labels as xent
from funcgrad.tree_util import tree_leaves, tree_map

# the notebook runs in notebooks/ (as Jupyter starts it); the digits are in examples/data
with np.load(os.path.join("..", "examples", "data", "digits.npz")) as z:
    images, digits = z["images"].astype(np.float32) / 16, z["labels"].astype(np.int32)
x, y = images[:1500], digits[:1500]
params = models.mlp.init(fg.random.key(0), [64, 64, 10])

def loss_one(params, x, y):
    # the loss of a single example (x: (64,), y: ()); vmap supplies the batch axis
    return xent(models.mlp.apply(params, x), y)
"""),
    code("""
per_example = fg.jit(fg.vmap(fg.grad(loss_one), in_axes=(None, 0, 0)))
xb, yb = x[:32], y[:32]
g = per_example(params, xb, yb)
print(tree_map(lambda a: a.shape, g))      # every leaf gains a leading axis of 32
"""),
    md("Check against a Python loop, and compare the time."),
    code("""
loop = [fg.grad(loss_one)(params, xb[i], yb[i]) for i in range(len(xb))]
g_np, loop_np = fg.device_get((g, loop))   # NumPy copies of the results, to compare on the host
for i, gi in enumerate(loop_np):
    for a, b in zip(tree_leaves(g_np), tree_leaves(gi)):
        np.testing.assert_allclose(a[i], b, rtol=1e-4, atol=1e-6)

def timeit(fn, n=5):
    fg.block_until_ready(fn())              # GPU work is asynchronous: wait for it to finish
    t0 = time.perf_counter()
    for _ in range(n):
        fg.block_until_ready(fn())
    return (time.perf_counter() - t0) / n * 1e3

print(f"vmap(grad): {timeit(lambda: per_example(params, xb, yb)):.2f} ms")
loop_fn = lambda: [fg.grad(loss_one)(params, xb[i], yb[i]) for i in range(len(xb))]
print(f"loop of grad: {timeit(loop_fn, 1):.2f} ms")
"""),
    md("""
## The per-example gradient norms

The mean of the per-example gradients is the batch gradient. Their norms differ a lot from
example to example: a few examples dominate the batch gradient. Clipping each one to norm `C`
before averaging (as DP-SGD does) bounds any single example's influence.
"""),
    code("""
batch_grad = fg.grad(lambda p: fnp.mean(xent(models.mlp.apply(p, xb), yb)))(params)
for a, b in zip(tree_leaves(g_np), tree_leaves(fg.device_get(batch_grad))):
    np.testing.assert_allclose(a.mean(0), b, rtol=1e-4, atol=1e-6)

def norms_of(g):
    # one norm per example, over all leaves, computed where the gradients are
    return fnp.sqrt(sum(fnp.sum(a.reshape(a.shape[0], -1) ** 2, axis=1) for a in tree_leaves(g)))

norms = fg.device_get(norms_of(per_example(params, x, y)))
C = float(np.median(norms))
fig, ax = plt.subplots(figsize=(7, 3.5))
ax.hist(norms, bins=50)
ax.axvline(C, color="k", ls="--", label=f"clipping norm C = median = {C:.2f}")
ax.set_xlabel("per-example gradient norm (1500 digits, untrained MLP)")
ax.set_ylabel("examples")
ax.legend()
plt.show()
"""),
    md("""
## Training with clipped per-example gradients

SGD on the batch mean against the clipped version (DP-SGD without its noise, to isolate the
effect of clipping): with each example's pull bounded, the spikes that a few large gradients
cause in plain SGD disappear, at the price of a slightly slower descent.
"""),
    code("""
def clipped_mean(g, C):
    factor = fnp.minimum(1.0, C / norms_of(g))
    return tree_map(lambda a: fnp.mean(a * factor.reshape((-1,) + (1,) * (a.ndim - 1)), 0), g)

@fg.jit
def sgd_step(p, xb, yb):
    return tree_map(lambda w, d: w - 0.5 * d,
                    p, fg.grad(lambda p: fnp.mean(xent(models.mlp.apply(p, xb), yb)))(p))

@fg.jit
def clipped_step(p, xb, yb):
    return tree_map(lambda w, d: w - 0.5 * d, p, clipped_mean(per_example(p, xb, yb), C))

full_loss = fg.jit(lambda p: fnp.mean(xent(models.mlp.apply(p, x), y)))
rng = np.random.default_rng(0)
curves = {"SGD": [], f"clipped at C = {C:.2f}": []}
for name, step in zip(curves, (sgd_step, clipped_step)):
    p = params
    for _ in range(150):
        idx = rng.integers(0, len(x), 32)
        p = step(p, x[idx], y[idx])
        curves[name].append(float(full_loss(p)))
fig, ax = plt.subplots(figsize=(7, 3.5))
for name, ls in curves.items():
    ax.plot(ls, label=name)
ax.set_xlabel("step")
ax.set_ylabel("training loss (all 1500 examples)")
ax.set_yscale("log")
ax.legend()
plt.show()
"""),
]

NOTEBOOKS["03_finetuning_with_masks"] = [
    md("""
# Fine-tuning with masks

A mask is a boolean pytree shaped like the params: `True` means *trainable*. The same mask drives
`fg.grad(..., wrt=mask)` (no backward work for frozen leaves) and `optim.masked` (no update, no
optimizer state). LoRA trains low-rank adapters instead of the weights. First the masks, on a
transformer; then a real task, where head-only, LoRA and full fine-tuning compete.
"""),
    code("""
%matplotlib inline
import os

import matplotlib.pyplot as plt
import numpy as np

import funcgrad as fg
import funcgrad.numpy as fnp
from funcgrad import lora, masks, models, optim
from funcgrad.losses import softmax_cross_entropy_with_integer_labels as xent

config = models.TransformerConfig(vocab_size=64, max_len=16, d_model=32, d_mlp=64,
                                  num_layers=2, num_heads=4, num_classes=4)
params = models.transformer_classifier.init(fg.random.key(0), config)
print(params["config"])           # the architecture travels with the params (no leaf)
for p in masks.paths(params):
    print(p)
"""),
    md("## Building masks: by path pattern, or by predicate"),
    code("""
head = masks.mask_from_paths(params, include=["head/**"])
last_block_and_head = masks.mask_from_paths(params, include=["head/**", "blocks/1/**"])
matrices = masks.mask_where(params, lambda path, leaf: np.ndim(leaf) == 2)
attn = masks.mask_where(params, lambda path, w: "attn" in path and np.ndim(w) == 2)
print("all params        ", masks.count(params))
print("head only         ", masks.count(params, head))
print("last block + head ", masks.count(params, last_block_and_head))
print("2-D weights       ", masks.count(params, matrices))
adapters = lora.init(fg.random.key(1), params, attn, rank=2, alpha=4)
print("LoRA r=2 on attn  ", sum(a.size for a in fg.tree_util.tree_leaves(adapters)))
"""),
    md("""
## A real task: digits 0-4, then 5-9

An MLP is pretrained on the handwritten digits 0-4 (the UCI 8x8 digits, in `examples/data`),
then given a new 5-way head and adapted to the digits 5-9 three ways:

* **head only**: a mask selects the head; the body gets no gradient and no update;
* **LoRA**: rank-4 adapters on the body's matrices (plus the new head) train, the pretrained
  weights stay frozen;
* **full**: every parameter trains.
"""),
    code("""
with np.load(os.path.join("..", "examples", "data", "digits.npz")) as z:
    images, digits = z["images"].astype(np.float32) / 16, z["labels"].astype(np.int32)
order = np.random.default_rng(0).permutation(len(digits))
images, digits = images[order], digits[order]
n = len(digits) * 3 // 4

def task(classes, train):
    x, y = (images[:n], digits[:n]) if train else (images[n:], digits[n:])
    keep = np.isin(y, classes)
    return x[keep], y[keep] - min(classes)

def apply(p, x):
    h = fg.nn.relu(models.mlp.apply(p["body"], x))
    return models.dense.apply(p["head"], h)

def fit(loss, trainable, x, y, steps, wrt=None, evaluate=None, lr=3e-3):
    tx = optim.adam(lr) if wrt is None else optim.masked(optim.adam(lr), wrt)
    grad_fn = fg.value_and_grad(loss, wrt=wrt)

    @fg.jit
    def step(t, s, xb, yb):
        value, g = grad_fn(t, xb, yb)
        u, s = tx.update(g, s, t)
        return optim.apply_updates(t, u), s, value

    s, rng, losses, accs = tx.init(trainable), np.random.default_rng(1), [], []
    for i in range(steps):
        idx = rng.integers(0, len(y), 64)
        trainable, s, value = step(trainable, s, x[idx], y[idx])
        losses.append(float(value))
        if evaluate is not None and (i % 10 == 9 or i == steps - 1):
            accs.append((i + 1, evaluate(trainable)))
    return trainable, losses, accs

def accuracy(p, x, y):
    return float(np.mean(np.argmax(fg.device_get(fg.jit(apply)(p, x)), -1) == y))

k_body, k_head, k_new, k_lora = fg.random.split(fg.random.key(0), 4)
pre = {"body": models.mlp.init(k_body, [64, 128, 128]), "head": models.dense.init(k_head, 128, 5)}
x_pre, y_pre = task([0, 1, 2, 3, 4], True)
loss = lambda p, xb, yb: fnp.mean(xent(apply(p, xb), yb))
pre, pre_losses, _ = fit(loss, pre, x_pre, y_pre, 200)
print(f"pretrained on 0-4: test accuracy {accuracy(pre, *task([0, 1, 2, 3, 4], False)):.3f}")
"""),
    code("""
x_new, y_new = task([5, 6, 7, 8, 9], True)
xt_new, yt_new = task([5, 6, 7, 8, 9], False)
start = dict(pre, head=models.dense.init(k_new, 128, 5))    # a new head for the new classes
results = {}

# head only: one mask drives grad(..., wrt=mask) and optim.masked
head_mask = masks.mask_from_paths(start, include=["head/**"])
p, ls, acc = fit(loss, start, x_new, y_new, 150, wrt=head_mask,
                 evaluate=lambda p: accuracy(p, xt_new, yt_new))
results["head only"] = (masks.count(start, head_mask), ls, acc)

# LoRA on the body's matrices, plus the new head; the pretrained weights stay frozen
body = masks.mask_where(start, lambda path, w: path.startswith("body") and np.ndim(w) == 2)
adapters = lora.init(k_lora, start, body, rank=4, alpha=8)
lora_apply = lora.apply(apply)

def lora_loss(t, xb, yb):
    ad, head = t
    return fnp.mean(xent(lora_apply(dict(start, head=head), ad, xb), yb))

def lora_accuracy(t):
    ad, head = t
    return accuracy(lora.merge(dict(start, head=head), ad), xt_new, yt_new)

t, ls, acc = fit(lora_loss, (adapters, start["head"]), x_new, y_new, 150,
                 evaluate=lora_accuracy)
results["LoRA r=4"] = (sum(a.size for a in fg.tree_util.tree_leaves(t)), ls, acc)

# full fine-tuning
p, ls, acc = fit(loss, start, x_new, y_new, 150, evaluate=lambda p: accuracy(p, xt_new, yt_new))
results["full"] = (masks.count(start), ls, acc)

print("| method    | trainable params | test accuracy (5-9) |")
print("|-----------|-----------------:|--------------------:|")
for name, (count, _, acc) in results.items():
    print(f"| {name:9s} | {count:16d} | {acc[-1][1]:19.3f} |")
"""),
    code("""
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
for name, (count, ls, acc) in results.items():
    label = f"{name} ({count:,} trainable)"
    left.plot(ls, label=label)
    right.plot(*zip(*acc), marker=".", label=label)
left.set(xlabel="step", ylabel="training loss", yscale="log", title="adapting to 5-9")
right.set(xlabel="step", ylabel="test accuracy on 5-9", title="adapting to 5-9")
right.legend()
plt.show()
"""),
]

NOTEBOOKS["04_writing_a_primitive"] = [
    md("""
# Writing a primitive

A primitive is an operation with all of its rules side by side: the implementation (written
against an array namespace `xp`, NumPy or CuPy), the shape/dtype rule, the JVP (forward mode),
the VJP (reverse mode) and the batching rule (vmap). Once it has them, every transform works on
it, and compositions like `jit(vmap(grad(...)))` too.

We add `softsign(x) = x / (1 + |x|)`, whose derivative is `1 / (1 + |x|)^2`.
"""),
    code("""
import numpy as np

import funcgrad as fg
import funcgrad.numpy as fnp
from funcgrad.core import Primitive, ShapedArray, bind

def _impl(xp, x):
    return x / (1 + xp.abs(x))

def _abstract_eval(x):
    # elementwise: same shape and dtype
    return ShapedArray(x.shape, x.dtype, x.weak_type)

def _deriv(x):
    # written with funcgrad operations, so the rule itself can be differentiated again
    d = 1 + fnp.abs(x)
    return 1 / (d * d)

def _jvp(primals, tangents, out):
    (x,), (t,) = primals, tangents
    return t * _deriv(x)

def _vjp(ct, primals, out, active):
    (x,) = primals
    return (ct * _deriv(x),)

def _batch(args, dims):
    # elementwise: batching is the identity; the batch axis stays where it was
    (x,), (d,) = args, dims
    return softsign(x), d

softsign_p = Primitive("softsign", impl=_impl, abstract_eval=_abstract_eval,
                       jvp=_jvp, vjp=_vjp, batch=_batch, residuals="in")

def softsign(x):
    return bind(softsign_p, x)
"""),
    md("It runs eagerly, and traces into programs as one equation:"),
    code("""
x = np.linspace(-3, 3, 7).astype(np.float32)
print(softsign(x))
print(fg.make_jaxpr(lambda x: fnp.sum(softsign(x) * 2))(x))
"""),
    md("Its derivative comes from the JVP/VJP rules; vmap evaluates both on a grid:"),
    code("""
%matplotlib inline
import matplotlib.pyplot as plt

grid = np.linspace(-6, 6, 200)
fig, ax = plt.subplots(figsize=(7, 3.5))
ax.plot(grid, fg.device_get(softsign(grid)), label="softsign(x) = x / (1 + |x|)")
ax.plot(grid, fg.device_get(fg.vmap(fg.grad(softsign))(grid)), label="fg.grad(softsign)")
ax.plot(grid, fg.device_get(fg.vmap(fg.grad(fg.grad(softsign)))(grid)), ls="--",
        label="fg.grad(fg.grad(softsign))")
ax.set_xlabel("x")
ax.legend()
plt.show()
"""),
    md("## Every transform, checked against finite differences"),
    code("""
f = lambda x: fnp.sum(softsign(x) ** 2)
x64 = np.linspace(-3, 3, 7) + 0.1

def fd(f, x, eps=1e-6):
    # central differences, assembled on the host from NumPy copies of f's results
    e = np.eye(len(x))
    diffs = [f(x + eps * e[i]) - f(x - eps * e[i]) for i in range(len(x))]
    return np.array(fg.device_get(diffs)) / (2 * eps)

def check(actual, desired, **tol):
    np.testing.assert_allclose(*fg.device_get((actual, desired)), **tol)

g = fg.grad(f)(x64)
check(g, fd(f, x64), rtol=1e-6)                                           # reverse mode
_, t = fg.jvp(f, (x64,), (np.ones_like(x64),))
check(t, g.sum(), rtol=1e-6)                                              # forward mode
check(fg.hessian(f)(x64), fd(fg.grad(f), x64), rtol=1e-5, atol=1e-8)
xs = np.stack([x64, 2 * x64])
check(fg.vmap(fg.grad(f))(xs), fnp.stack([g, fg.grad(f)(2 * x64)]))
check(fg.jit(fg.vmap(fg.grad(f)))(xs), fg.vmap(fg.grad(f))(xs))
print("grad, jvp, hessian, vmap and jit all agree")
"""),
    md("""
Inside funcgrad, primitives live in `funcgrad/lax/`, each followed by its rules; for the common
elementwise case a factory (`unary(name, impl, deriv)`) derives the JVP, VJP and batching rule
from the derivative alone.
"""),
]


def main():
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook(cells=cells, metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"}})
        path = os.path.join(HERE, f"{name}.ipynb")
        with open(path, "w") as f:
            nbformat.write(nb, f)
        print("wrote", path)


if __name__ == "__main__":
    main()
