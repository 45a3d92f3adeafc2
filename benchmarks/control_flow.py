"""Issue 6's figures: checkpointing memory/time, and LSTM training step time on a scan.

    python -m benchmarks.control_flow            # both
    python -m benchmarks.control_flow --quick    # fewer repeats
    python -m benchmarks.control_flow --only lstm

1. `checkpoint`: eager value_and_grad of a 32-layer MLP (width 1024, batch 256, float32, tanh-GELU
   layers `gelu(h @ w + b)`), every layer under fg.checkpoint vs not. Peak memory by tracemalloc,
   each variant in its own process; time interleaved. The peak includes the gradient itself
   (32 x 4 MiB of weight gradients, which no checkpointing can avoid), so it is also reported
   beyond the gradient's own bytes: the activation memory that checkpointing targets.
2. `lstm`: jit(value_and_grad) of an LSTM over 100 steps (batch 32, input 128, hidden 128) built
   on fg.lax.scan, vs a hand-written NumPy BPTT (the floor), vs JAX lax.scan where installed.
"""

from __future__ import annotations

import argparse
import sys
import tracemalloc

import numpy as np

from ._common import interleaved, load_note, peak_in_subprocess

LAYERS, WIDTH, BATCH = 32, 1024, 256


# ---------------------------------------------------------------------------------------------
# 1. checkpointed MLP

def mlp_params(layers=LAYERS, width=WIDTH, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.normal(0, np.sqrt(1 / width), (width, width)).astype(np.float32),
             np.zeros(width, np.float32)) for _ in range(layers)]


def mlp_loss(params, x, ckpt):
    import funcgrad as fg
    import funcgrad.numpy as fnp

    def layer(h, w, b):
        return fg.nn.gelu(h @ w + b)
    f = fg.checkpoint(layer) if ckpt else layer
    h = x
    for w, b in params:
        h = f(h, w, b)
    return fnp.mean(h * h)


def _memory_child(variant):
    import funcgrad as fg
    params = mlp_params()
    x = np.random.default_rng(1).normal(size=(BATCH, WIDTH)).astype(np.float32)
    vg = fg.value_and_grad(mlp_loss)
    ckpt = variant == "checkpoint"
    loss, grads = vg(params, x, ckpt)   # warm-up
    del grads
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    loss, grads = vg(params, x, ckpt)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    grad_bytes = sum(w.nbytes + b.nbytes for w, b in grads)
    print(f"peak_bytes={peak}")
    print(f"grad_bytes={grad_bytes}")
    print(f"loss={float(loss):.8f}")


def bench_checkpoint(quick):
    rows = {v: peak_in_subprocess("benchmarks.control_flow", "--memory-child", v)
            for v in ("plain", "checkpoint")}
    assert rows["plain"]["loss"] == rows["checkpoint"]["loss"], rows
    import funcgrad as fg
    params = mlp_params()
    x = np.random.default_rng(1).normal(size=(BATCH, WIDTH)).astype(np.float32)
    vg = fg.value_and_grad(mlp_loss)
    res = interleaved({"plain": lambda: vg(params, x, False),
                       "checkpoint": lambda: vg(params, x, True)},
                      rounds=3 if quick else 5, repeats=1, warmup=1)
    print(f"\n### {LAYERS}-layer GELU MLP (width {WIDTH}, batch {BATCH}, float32), eager "
          f"value_and_grad, every layer under fg.checkpoint vs not\n{load_note()}\n")
    print("| variant | peak MiB | peak beyond the gradient MiB | median s | min–max s |")
    print("| --- | --- | --- | --- | --- |")
    out = {}
    for v in ("plain", "checkpoint"):
        peak = int(rows[v]["peak_bytes"])
        extra = peak - int(rows[v]["grad_bytes"])
        med, lo, hi = res[v]
        out[v] = (peak, extra, med)
        print(f"| {v} | {peak / 2**20:.1f} | {extra / 2**20:.1f} | {med:.3f} | {lo:.3f}–{hi:.3f} |")
    (p0, e0, t0), (p1, e1, t1) = out["plain"], out["checkpoint"]
    from funcgrad.transforms.checkpoint import saved_residuals
    kept = {}
    for v, ck in (("plain", False), ("checkpoint", True)):
        res = saved_residuals(lambda p, ck=ck: mlp_loss(p, x, ck), params)
        kept[v] = sum(int(np.prod(a.shape)) * a.dtype.itemsize for a, w in res
                      if "argument" not in w)
    print(f"\nresiduals the backward pass keeps (fg.print_saved_residuals, arguments excluded): "
          f"plain {kept['plain'] / 2**20:.1f} MiB, checkpoint {kept['checkpoint'] / 2**20:.1f} "
          f"MiB")
    print(f"\ncheckpoint / plain: peak {p1 / p0:.2f}, peak beyond the gradient {e1 / e0:.2f}, "
          f"kept residuals {kept['checkpoint'] / kept['plain']:.2f}, time {t1 / t0:.2f}")
    return p1 / p0, e1 / e0, t1 / t0


# ---------------------------------------------------------------------------------------------
# 2. LSTM training step

T, B, D, HID = 100, 32, 128, 128


def lstm_data(seed=0):
    import funcgrad as fg
    rng = np.random.default_rng(seed)
    params = fg.nn.lstm_init(seed, D, HID)
    xs = rng.normal(size=(T, B, D)).astype(np.float32)
    target = rng.normal(size=(T, B, HID)).astype(np.float32)
    return params, xs, target


def fg_lstm_loss(params, xs, target):
    import funcgrad as fg
    import funcgrad.numpy as fnp
    hs, _ = fg.nn.lstm(params, xs)
    return fnp.mean((hs - target) ** 2)


def _sigmoid(x):
    return 0.5 * (np.tanh(0.5 * x) + 1.0)


def numpy_lstm_value_and_grad(params, xs, target):
    """Hand-written forward and backpropagation through time: the floor."""
    wx, wh, b = params["wx"], params["wh"], params["b"]
    H = wh.shape[0]
    steps, batch = xs.shape[:2]
    xw = (xs.reshape(-1, xs.shape[-1]) @ wx + b).reshape(steps, batch, 4 * H)
    h = np.zeros((batch, H), xs.dtype)
    c = np.zeros((batch, H), xs.dtype)
    hs = np.empty((steps, batch, H), xs.dtype)
    saved = []
    for t in range(steps):
        z = xw[t] + h @ wh
        i, f = _sigmoid(z[:, :H]), _sigmoid(z[:, H:2 * H])
        g, o = np.tanh(z[:, 2 * H:3 * H]), _sigmoid(z[:, 3 * H:])
        c_prev, h_prev = c, h
        c = f * c + i * g
        tc = np.tanh(c)
        h = o * tc
        hs[t] = h
        saved.append((i, f, g, o, c_prev, tc, h_prev))
    diff = hs - target
    loss = np.mean(diff * diff)
    dhs = diff * (2.0 / diff.size)
    dwh = np.zeros_like(wh)
    dxw = np.empty_like(xw)
    dh_next = np.zeros((batch, H), xs.dtype)
    dc_next = np.zeros((batch, H), xs.dtype)
    for t in range(steps - 1, -1, -1):
        i, f, g, o, c_prev, tc, h_prev = saved.pop()
        dh = dhs[t] + dh_next
        dc = dc_next + dh * o * (1 - tc * tc)
        dz = dxw[t]
        dz[:, :H] = dc * g * i * (1 - i)
        dz[:, H:2 * H] = dc * c_prev * f * (1 - f)
        dz[:, 2 * H:3 * H] = dc * i * (1 - g * g)
        dz[:, 3 * H:] = dh * tc * o * (1 - o)
        dc_next = dc * f
        dwh += h_prev.T @ dz
        dh_next = dz @ wh.T
    flat = dxw.reshape(-1, 4 * H)
    grads = {"wx": xs.reshape(-1, xs.shape[-1]).T @ flat, "wh": dwh, "b": flat.sum(0)}
    return loss, grads


def jax_lstm_value_and_grad():
    import jax
    import jax.numpy as jnp

    def loss(params, xs, target):
        wh = params["wh"]
        H = wh.shape[0]
        xw = xs @ params["wx"] + params["b"]

        def step(carry, xw_t):
            h, c = carry
            z = xw_t + h @ wh
            i, f = jax.nn.sigmoid(z[:, :H]), jax.nn.sigmoid(z[:, H:2 * H])
            g, o = jnp.tanh(z[:, 2 * H:3 * H]), jax.nn.sigmoid(z[:, 3 * H:])
            c = f * c + i * g
            h = o * jnp.tanh(c)
            return (h, c), h
        z = jnp.zeros((xs.shape[1], H), xs.dtype)
        _, hs = jax.lax.scan(step, (z, z), xw)
        return jnp.mean((hs - target) ** 2)
    return jax.jit(jax.value_and_grad(loss))


def bench_lstm(quick):
    import funcgrad as fg
    params, xs, target = lstm_data()
    step = fg.jit(fg.value_and_grad(fg_lstm_loss))
    loss, g = step(params, xs, target)
    ref_loss, ref_g = numpy_lstm_value_and_grad(params, xs, target)
    assert np.allclose(loss, ref_loss, rtol=1e-5), (loss, ref_loss)
    for k in g:
        assert np.allclose(g[k], ref_g[k], rtol=1e-3, atol=1e-6), k
    fns = {"numpy BPTT (floor)": lambda: numpy_lstm_value_and_grad(params, xs, target),
           "funcgrad jit(value_and_grad)": lambda: step(params, xs, target)}
    try:
        jstep = jax_lstm_value_and_grad()
        jstep(params, xs, target)[0].block_until_ready()
        fns["jax lax.scan"] = lambda: jstep(params, xs, target)[0].block_until_ready()
        jax_note = ""
    except ImportError:
        jax_note = "(JAX is not installed, so there is no JAX column: pip install jax)"
    res = interleaved(fns, rounds=3 if quick else 7, repeats=3 if quick else 10, warmup=2)
    print(f"\n### LSTM training step: jit(value_and_grad), {T} steps, batch {B}, input {D}, "
          f"hidden {HID}, float32; loss {ref_loss:.6f}\n{load_note()}\n")
    if jax_note:
        print(jax_note + "\n")
    print("| implementation | median ms/step | min–max ms | ratio to floor |")
    print("| --- | --- | --- | --- |")
    floor = res["numpy BPTT (floor)"][0]
    for k, (med, lo, hi) in res.items():
        print(f"| {k} | {med * 1e3:.2f} | {lo * 1e3:.2f}–{hi * 1e3:.2f} | {med / floor:.2f} |")
    return res["funcgrad jit(value_and_grad)"][0] / floor


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--only", choices=["checkpoint", "lstm"], help="run one part")
    ap.add_argument("--memory-child", metavar="VARIANT", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_child:
        _memory_child(args.memory_child)
        return
    summary = {}
    if args.only in (None, "checkpoint"):
        peak, extra, time_ratio = bench_checkpoint(args.quick)
        summary["checkpoint/plain peak memory (target <= 0.4)"] = peak
        summary["checkpoint/plain peak beyond the gradient"] = extra
        summary["checkpoint/plain time (target <= 1.5)"] = time_ratio
    if args.only in (None, "lstm"):
        summary["LSTM jit(value_and_grad) / NumPy BPTT time"] = bench_lstm(args.quick)
    print("\n### summary\n")
    for k, v in summary.items():
        print(f"- {k}: {v:.2f}")


if __name__ == "__main__":
    sys.exit(main())
