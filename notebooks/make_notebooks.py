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
]

NOTEBOOKS["02_per_example_gradients"] = [
    md("""
# Per-example gradients

Many methods need one gradient per example rather than the batch mean: differential privacy
(clip each example's gradient), influence estimates, gradient-noise statistics.
`fg.vmap(fg.grad(loss))` computes them all in one program.
"""),
    code("""
import time

import numpy as np

import funcgrad as fg
import funcgrad.numpy as fnp
from funcgrad import models
from funcgrad.losses import softmax_cross_entropy
from funcgrad.tree_util import tree_leaves, tree_map

rng = np.random.default_rng(1)
x = rng.normal(size=(32, 20)).astype(np.float32)
y = rng.integers(0, 5, 32).astype(np.int32)
params = models.mlp.init(fg.random.key(0), [20, 64, 5])

def loss_one(params, x, y):
    # the loss of a single example; vmap supplies the batch axis
    return softmax_cross_entropy(models.mlp.apply(params, x[None]), y[None])
"""),
    code("""
per_example = fg.jit(fg.vmap(fg.grad(loss_one), in_axes=(None, 0, 0)))
g = per_example(params, x, y)
print(tree_map(lambda a: a.shape, g))      # every leaf gains a leading axis of 32
"""),
    md("Check against a Python loop, and compare the time."),
    code("""
loop = [fg.grad(loss_one)(params, x[i], y[i]) for i in range(len(x))]
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

print(f"vmap(grad): {timeit(lambda: per_example(params, x, y)):.2f} ms")
loop_fn = lambda: [fg.grad(loss_one)(params, x[i], y[i]) for i in range(len(x))]
print(f"loop of grad: {timeit(loop_fn, 1):.2f} ms")
"""),
    md("""
## Clipping, as in DP-SGD

The mean of the per-example gradients is the batch gradient; clipping each one to norm `C`
before averaging bounds any single example's influence.
"""),
    code("""
batch_grad = fg.grad(lambda p: softmax_cross_entropy(models.mlp.apply(p, x), y))(params)
for a, b in zip(tree_leaves(g_np), tree_leaves(fg.device_get(batch_grad))):
    np.testing.assert_allclose(a.mean(0), b, rtol=1e-4, atol=1e-6)

# the clipping runs where the gradients are, with funcgrad.numpy
norms = fnp.sqrt(sum(fnp.sum(a.reshape(len(x), -1) ** 2, axis=1) for a in tree_leaves(g)))
C = float(fnp.median(norms))
factor = fnp.minimum(1.0, C / norms)
clipped = tree_map(lambda a: fnp.mean(a * factor.reshape((-1,) + (1,) * (a.ndim - 1)), axis=0), g)
print("per-example norms: min %.3f  median %.3f  max %.3f"
      % (float(fnp.min(norms)), C, float(fnp.max(norms))))
"""),
]

NOTEBOOKS["03_finetuning_with_masks"] = [
    md("""
# Fine-tuning with masks

A mask is a boolean pytree shaped like the params: `True` means *trainable*. The same mask drives
`fg.grad(..., wrt=mask)` (no backward work for frozen leaves) and `optim.masked` (no update, no
optimizer state). LoRA trains low-rank adapters instead of the weights.
"""),
    code("""
import numpy as np

import funcgrad as fg
from funcgrad import lora, masks, models, optim
from funcgrad.losses import softmax_cross_entropy

params = models.transformer_classifier.init(fg.random.key(0), vocab_size=64, max_len=16,
                                            d_model=32, d_mlp=64, num_layers=2, num_classes=4)
for p in masks.paths(params):
    print(p)
"""),
    md("## Building masks: by path pattern, or by predicate"),
    code("""
head = masks.mask_from_paths(params, include=["head/**"])
last_block_and_head = masks.mask_from_paths(params, include=["head/**", "blocks/1/**"])
matrices = masks.mask_where(params, lambda path, leaf: np.ndim(leaf) == 2)
print("all params        ", masks.count(params))
print("head only         ", masks.count(params, head))
print("last block + head ", masks.count(params, last_block_and_head))
print("2-D weights       ", masks.count(params, matrices))
"""),
    md("## Head-only training"),
    code("""
rng = np.random.default_rng(1)
tokens = rng.integers(0, 64, (32, 16)).astype(np.int32)
labels = (tokens[:, 0] % 4).astype(np.int32)          # a learnable rule: the first token

def loss(p, tokens, labels):
    return softmax_cross_entropy(models.transformer_classifier.apply(p, tokens), labels)

def fit(trainable_mask, steps=30):
    tx = optim.masked(optim.adam(3e-3), trainable_mask)
    grad_fn = fg.value_and_grad(loss, wrt=trainable_mask)

    @fg.jit
    def step(p, s):
        l, g = grad_fn(p, tokens, labels)
        u, s = tx.update(g, s, p)
        return optim.apply_updates(p, u), s, l

    p, s = params, tx.init(params)
    for _ in range(steps):
        p, s, l = step(p, s)
    return p, float(l)

p_head, l_head = fit(head)
print("head only: final loss", l_head)
frozen_same = all(np.array_equal(a, b) for a, b in
                  zip(fg.tree_util.tree_leaves(masks.partition(p_head, head)[1]),
                      fg.tree_util.tree_leaves(masks.partition(params, head)[1])))
print("frozen leaves unchanged:", frozen_same)
"""),
    md("""
## LoRA

`lora.init` puts an adapter (A: rank x in, B: out x rank, B = 0) on each selected 2-D weight;
`lora.apply(apply_fn)` uses `W + scale * B @ A`; we differentiate with respect to the adapters
only, and `lora.merge` folds them back.
"""),
    code("""
attn = masks.mask_where(params, lambda path, w: "attn" in path and np.ndim(w) == 2)
adapters = lora.init(0, params, attn, rank=2, alpha=4)
n_lora = sum(a.size for a in fg.tree_util.tree_leaves(adapters))
print("LoRA trainable params:", n_lora, "of", masks.count(params))

lora_loss = lambda ad, tokens, labels: softmax_cross_entropy(
    lora.apply(models.transformer_classifier.apply)(params, ad, tokens), labels)
tx = optim.adam(1e-2)

@fg.jit
def step(ad, s):
    l, g = fg.value_and_grad(lora_loss)(ad, tokens, labels)
    u, s = tx.update(g, s, ad)
    return optim.apply_updates(ad, u), s, l

s = tx.init(adapters)
for _ in range(30):
    adapters, s, l = step(adapters, s)
print("LoRA: final loss", float(l))
merged = lora.merge(params, adapters)       # the adapted model as plain params again
np.testing.assert_allclose(
    *fg.device_get((loss(merged, tokens, labels), lora_loss(adapters, tokens, labels))),
    rtol=1e-4)
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
