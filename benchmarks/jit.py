"""Issue 5's jit figures (workloads in ../shared/BENCHMARKS.md), each against hand-written NumPy
measured in the same run, interleaved:

    python -m benchmarks.jit [--quick] [--only NAME]

- mlp-train: MLP 784-512-512-10, ReLU, softmax cross-entropy, batch 128, Adam lr 1e-3; the whole
  step (forward, backward, update) under one fg.jit, parameters donated.
- mlp-small: the same with 64-128-10, batch 32 (dispatch-bound).
- elementwise-chain: value and grad of 64 chained elementwise ops on 1e5 float32; time and peak
  memory (tracemalloc, in child processes).
- dispatch: a cached jit call with 10 small array arguments vs calling its generated function.
- compile: first call (trace + passes + codegen + run) of the 2-block transformer training step.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from ._common import interleaved, load_note, peak_in_subprocess
from .peers import common as C
from .peers.funcgrad_impl import chain_value_and_grad as fg_chain_value_and_grad
from .peers.numpy_impl import chain_value_and_grad as numpy_chain

# ---------------------------------------------------------------------------------------------
# MLP training step with Adam

def init_mlp(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.normal(0, np.sqrt(2 / m), (m, n)).astype(np.float32), np.zeros(n, np.float32))
            for m, n in zip(sizes[:-1], sizes[1:])]


def batch(n, n_in, n_out, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, n_in)).astype(np.float32), rng.integers(0, n_out, size=n)


B1, B2, EPS, LR = 0.9, 0.999, 1e-8, 1e-3


def fg_step_fn():
    import funcgrad as fg
    import funcgrad.numpy as fnp

    from .autodiff import fg_loss as loss

    def step(params, m, v, t, x, y):
        value, grads = fg.value_and_grad(loss)(params, x, y)
        t = t + 1
        new_p, new_m, new_v = [], [], []
        for p, g, mm, vv in zip(fg.tree_util.tree_leaves(params), fg.tree_util.tree_leaves(grads),
                                m, v):
            mm = B1 * mm + (1 - B1) * g
            vv = B2 * vv + (1 - B2) * g * g
            mhat = mm / (1 - B1 ** t)
            vhat = vv / (1 - B2 ** t)
            new_p.append(p - LR * mhat / (fnp.sqrt(vhat) + EPS))
            new_m.append(mm)
            new_v.append(vv)
        tree = fg.tree_util.tree_structure(params)
        return fg.tree_util.tree_unflatten(tree, new_p), new_m, new_v, t, value

    return fg.jit(step, donate_argnums=(0, 1, 2))


def numpy_step(params, m, v, t, x, y):
    """Hand-written forward, backward and Adam update: the floor."""
    hs = [x]
    h = x
    for w, b in params[:-1]:
        h = np.maximum(h @ w + b, 0)
        hs.append(h)
    w, b = params[-1]
    logits = h @ w + b
    mx = logits.max(axis=1, keepdims=True)
    e = np.exp(logits - mx)
    s = e.sum(axis=1, keepdims=True)
    n = len(y)
    loss = -(logits - mx - np.log(s))[np.arange(n), y].mean()
    d = e / s
    d[np.arange(n), y] -= 1
    d /= n
    grads = []
    for i in range(len(params) - 1, -1, -1):
        w, b = params[i]
        grads.append((hs[i].T @ d, d.sum(axis=0)))
        if i:
            d = (d @ w.T) * (hs[i] > 0)
    grads = grads[::-1]
    t = t + 1
    flat_p = [a for pair in params for a in pair]
    flat_g = [a for pair in grads for a in pair]
    c1, c2 = 1 - B1 ** t, 1 - B2 ** t
    for p, g, mm, vv in zip(flat_p, flat_g, m, v):
        mm *= B1
        mm += (1 - B1) * g
        vv *= B2
        vv += (1 - B2) * g * g
        p -= LR * (mm / c1) / (np.sqrt(vv / c2) + EPS)
    return params, m, v, t, loss


def bench_mlp(sizes, n, quick, label):
    fg_step = fg_step_fn()
    x, y = batch(n, sizes[0], sizes[-1])

    def fresh():
        params = init_mlp(sizes)
        flat = [a for pair in params for a in pair]
        return params, [np.zeros_like(a) for a in flat], [np.zeros_like(a) for a in flat]

    # Same loss after 5 steps from the same start: a fast wrong answer is not a result.
    p1, m1, v1 = fresh()
    p2, m2, v2 = fresh()
    t1 = t2 = np.zeros((), np.float32)  # the step count, float32 so bias corrections stay f32
    t0 = time.perf_counter()
    p1, m1, v1, t1, l1 = fg_step(p1, m1, v1, t1, x, y)
    first = time.perf_counter() - t0
    p2, m2, v2, t2, l2 = numpy_step(p2, m2, v2, t2, x, y)
    for _ in range(4):
        p1, m1, v1, t1, l1 = fg_step(p1, m1, v1, t1, x, y)
        p2, m2, v2, t2, l2 = numpy_step(p2, m2, v2, t2, x, y)
    assert np.allclose(float(l1), float(l2), rtol=1e-4), (l1, l2)
    state = {"fg": (p1, m1, v1, t1), "np": (p2, m2, v2, t2)}

    def run_fg():
        p, m, v, t = state["fg"]
        p, m, v, t, _ = fg_step(p, m, v, t, x, y)
        state["fg"] = (p, m, v, t)

    def run_np():
        p, m, v, t = state["np"]
        p, m, v, t, _ = numpy_step(p, m, v, t, x, y)
        state["np"] = (p, m, v, t)

    res = interleaved({"numpy (floor)": run_np, "funcgrad jit": run_fg},
                      rounds=5 if quick else 9, repeats=10 if quick else 30)
    ratio = res["funcgrad jit"][0] / res["numpy (floor)"][0]
    print(f"\n### {label}: MLP {'-'.join(map(str, sizes))}, batch {n}, Adam, one jitted step "
          f"(loss after 5 steps {float(l1):.5f} both)\n{load_note()}\n")
    _table(res, "numpy (floor)", unit=1e6, unit_name="µs")
    print(f"\nfirst call (trace + optimize + codegen + step): {first * 1e3:.0f} ms")
    return ratio


def _table(res, floor_key, unit=1e3, unit_name="ms"):
    print(f"| implementation | median {unit_name} | min–max | ratio to floor |")
    print("| --- | --- | --- | --- |")
    floor = res[floor_key][0]
    for k, (med, lo, hi) in res.items():
        print(f"| {k} | {med * unit:.1f} | {lo * unit:.1f}–{hi * unit:.1f} | {med / floor:.2f} |")


# ---------------------------------------------------------------------------------------------
# Elementwise chain

def numpy_chain_value_and_grad(x):
    """Forward keeping what each derivative needs, then the backward pass by hand."""
    return numpy_chain(x, nosin=False)


def _chain_child(impl):
    x = C.chain_setup()
    fn = fg_chain_value_and_grad() if impl == "funcgrad" else numpy_chain_value_and_grad
    fn(x)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    value, g = fn(x)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    print(f"peak_bytes={peak}")
    print(f"value={float(value):.4f}")


def bench_chain(quick):
    x = C.chain_setup()
    fg_vg = fg_chain_value_and_grad()
    v1, g1 = fg_vg(x)
    v2, g2 = numpy_chain_value_and_grad(x)
    assert np.allclose(v1, v2, rtol=1e-4) and np.allclose(g1, g2, rtol=1e-3, atol=1e-6)
    res = interleaved({"numpy (floor)": lambda: numpy_chain_value_and_grad(x),
                       "funcgrad jit": lambda: fg_vg(x)},
                      rounds=5 if quick else 9, repeats=5 if quick else 15)
    print(f"\n### elementwise-chain: value and grad of 64 ops on 1e5 float32 (value {v1:.4f})\n"
          f"{load_note()}\n")
    _table(res, "numpy (floor)")
    mem = {k: peak_in_subprocess("benchmarks.jit", "--chain-child", k)
           for k in ("numpy", "funcgrad")}
    print("\n| implementation | peak MiB (tracemalloc) |\n| --- | --- |")
    for k, v in mem.items():
        print(f"| {k} | {int(v['peak_bytes']) / 2**20:.2f} |")
    mem_ratio = int(mem["funcgrad"]["peak_bytes"]) / int(mem["numpy"]["peak_bytes"])
    return res["funcgrad jit"][0] / res["numpy (floor)"][0], mem_ratio


# ---------------------------------------------------------------------------------------------
# Dispatch overhead and compile latency

def bench_dispatch(quick):
    import funcgrad as fg

    def f(*xs):
        return xs[0] + xs[9]

    jf = fg.jit(f)
    args = [np.ones(3, np.float32) for _ in range(10)]
    jf(*args)
    entry, _ = jf._entry(args, {})
    direct = entry.fn
    consts = entry.consts
    res = interleaved({"generated function": lambda: direct(*consts, *args),
                       "jit call": lambda: jf(*args)}, rounds=7, repeats=2000 if quick else 5000)
    extra = (res["jit call"][0] - res["generated function"][0]) * 1e6
    print(f"\n### dispatch: a cached call with 10 small array arguments\n{load_note()}\n")
    print("| call | median µs |\n| --- | --- |")
    for k, (med, _, _) in res.items():
        print(f"| {k} | {med * 1e6:.2f} |")
    print(f"\njit dispatch overhead: {extra:.1f} µs")
    return extra


def transformer_workload():
    """The 2-block transformer classifier's Adam training step (not jitted) and its inputs on
    the host: (step, params, opt_state, tokens, labels). Shared with benchmarks/gpu.py."""
    import funcgrad as fg
    import funcgrad.numpy as fnp
    from funcgrad import losses, models, optim
    init, apply = models.transformer_classifier.init, models.transformer_classifier.apply
    params = init(fg.random.key(0))
    tx = optim.adam(1e-3)
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, 256, size=(16, 64))
    labels = rng.integers(0, 10, size=16)

    def step(params, opt_state, tokens, labels):
        def loss(p):
            logits = apply(p, tokens)
            return fnp.mean(losses.softmax_cross_entropy_with_integer_labels(logits, labels))
        value, grads = fg.value_and_grad(loss)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optim.apply_updates(params, updates), opt_state, value

    return step, params, tx.init(params), tokens, labels


def bench_compile():
    import funcgrad as fg
    try:
        step, params, opt_state, tokens, labels = transformer_workload()
    except (ImportError, AttributeError):
        print("\n(compile latency needs funcgrad.models.transformer_classifier: skipped)")
        return None
    t0 = time.perf_counter()
    fg.jit(step)(params, opt_state, tokens, labels)
    first = time.perf_counter() - t0
    print(f"\n### compile: first call of the 2-block transformer training step: "
          f"{first:.2f} s (trace + passes + codegen + one step)")
    return first


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", choices=["mlp-train", "mlp-small", "chain", "dispatch", "compile"])
    ap.add_argument("--chain-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.chain_child:
        _chain_child(args.chain_child)
        return
    summary = {}
    if args.only in (None, "mlp-train"):
        summary["mlp-train jit/numpy (target <= 1.15)"] = bench_mlp(
            [784, 512, 512, 10], 128, args.quick, "mlp-train")
    if args.only in (None, "mlp-small"):
        summary["mlp-small jit/numpy (target <= 1.5)"] = bench_mlp(
            [64, 128, 10], 32, args.quick, "mlp-small")
    if args.only in (None, "chain"):
        t, m = bench_chain(args.quick)
        summary["elementwise-chain time jit/numpy (target <= 1.0)"] = t
        summary["elementwise-chain peak memory jit/numpy (target <= 1.2)"] = m
    if args.only in (None, "dispatch"):
        summary["dispatch overhead µs (target <= 20)"] = bench_dispatch(args.quick)
    if args.only in (None, "compile"):
        c = bench_compile()
        if c is not None:
            summary["transformer step first call s (target < 0.5)"] = c
    print("\n### summary\n")
    for k, v in summary.items():
        print(f"- {k}: {v:.2f}")


if __name__ == "__main__":
    main()
