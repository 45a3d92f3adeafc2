"""Issue 21's figures: the memory and time of a fine-tuning step of GPT-2 small (124M parameters,
12 layers, d 768, random weights) with float32, bfloat16, int8 and NF4 base weights, and the loss
curve of a small fine-tuning run in each precision.

    python -m benchmarks.memory                    # every variant, 1 and 2 threads, and the curve
    python -m benchmarks.memory --quick            # fewer steps
    python -m benchmarks.memory --threads 1 --variants lora-f32,lora-nf4 --no-curve
    python -m benchmarks.memory --impls funcgrad,torch   # PyTorch (+ bitsandbytes) too

The step: batch 4 x 128 tokens, next-token cross-entropy, AdamW (lr 1e-4), `jit` of the whole
step with the trained state donated. Every variant uses the same memory techniques, which QLoRA
also uses: each block recomputed in the backward pass (`gpt2.apply(remat=True)`, transformers'
gradient checkpointing), and the [512, 50257] logits never exist at once: the LoRA steps use
`layers.linear_cross_entropy` (the tied output layer and the loss over vocabulary tiles of 2048
rows, each dequantized once per pass), full fine-tuning (whose table trains) computes them 64
tokens at a time under `fg.checkpoint`.

  full-f32    every parameter trained, float32
  lora-f32    LoRA r 8 (alpha 16) on every `c_attn`, float32 adapters, float32 base
  lora-bf16   the same on a bfloat16 base (every parameter stored and computed in bfloat16, as
              transformers' torch_dtype=bfloat16; PEFT-style float32 adapters)
  lora-int8   the 2-D weights (linear layers and embeddings) int8 per output channel, computing
              in float32 (`quant.linear` dequantizes tile by tile), norms and biases float32
  lora-nf4    the 2-D weights NF4 with double quantization (QLoRA's data type), else as int8

Each variant runs in its own process, which loads the checkpoint with `pretrained.load` (dtype,
quantize: one tensor at a time, so no float copy of the model is made), then steps. Reported:
the peak RSS of the whole process (Python, NumPy, the weights, the step: its lifetime maximum),
the RSS of a process that only imported the libraries, the median step time over the rounds
(interleaved across processes: A B C A B C ...), and ratios to lora-f32. Goal: lora-nf4 at
<= 0.35x lora-f32's peak memory and <= 1.5x its step time.

The curve (`--curve`): a 4-layer GPT-2 (d 128, byte vocabulary) is pretrained in float32 on the
docstrings of some standard-library modules, then LoRA-tuned for 200 steps on others with each
base precision, same data and adapters; reported: the largest and the mean relative difference of
the per-step training loss from float32's (goal: within 2%).

PyTorch (`--impls ...,torch`): the same steps with transformers + peft (gradient checkpointing,
the same chunked loss); int8 and NF4 through bitsandbytes (`BitsAndBytesConfig`) where it runs
on this CPU; a variant that fails to start is reported with its error.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from ._common import load_note, peak_rss_mib, rss_mib
from .pretrained import BATCH, SEQ, VOCAB, D, config, gpt2_weights

TAG = "@@memory "
RANK, ALPHA, LR = 8, 16, 1e-4
CHUNK = 64   # tokens per chunk of the vocabulary projection and loss
VARIANTS = ("full-f32", "lora-f32", "lora-bf16", "lora-int8", "lora-nf4")


# ---------------------------------------------------------------------------------------------
# The checkpoint both implementations load (written once per run)


def write_checkpoint(folder):
    import numpy as np

    from funcgrad.models import pretrained
    model = pretrained.from_tensors(config(), gpt2_weights())
    pretrained.save(folder, model, model.params, dtype=np.float32)


def batch_data(seed=1):
    import numpy as np
    ids = np.random.default_rng(seed).integers(0, VOCAB, (BATCH, SEQ + 1))
    return ids[:, :-1].astype(np.int32), ids[:, 1:].astype(np.int32)


# ---------------------------------------------------------------------------------------------
# funcgrad


def _load_kwargs(variant):
    if variant == "lora-bf16":
        return {"dtype": "bfloat16"}
    if variant in ("lora-int8", "lora-nf4"):
        def two_d(params):  # every matrix: the linear layers and both embedding tables
            from funcgrad import masks
            return masks.mask_where(params, lambda path, x: len(x.shape) == 2)
        return {"quantize": variant.split("-")[1], "mask": two_d}
    return {}


def funcgrad_step(folder, variant, steps_seed=1):
    """(run, summarize): one jitted training step of `variant` (see the module docstring)."""
    import numpy as np

    import funcgrad as fg
    import funcgrad.numpy as fnp
    from funcgrad import lora, masks, optim
    from funcgrad.models import gpt2, layers, pretrained

    model = pretrained.load(folder, **_load_kwargs(variant))
    params = model.params
    base_cfg = dict(model.config, architectures=["GPT2Model"])
    x, y = batch_data(steps_seed)

    def hidden(p, ids):
        return gpt2.apply(p["transformer"], ids, config=base_cfg, remat=True)

    hidden.computes_adapters = True   # lora.apply hands over the adapters, kept on their path

    def lm_loss(h, table, labels):
        if variant == "full-f32":   # the table trains too: logits 64 tokens at a time
            h = h.reshape(-1, h.shape[-1])
            labels = labels.reshape(-1)
            total = 0.0
            for i in range(0, h.shape[0], CHUNK):
                total = total + fg.checkpoint(chunk_loss)(h[i:i + CHUNK], table,
                                                          labels[i:i + CHUNK])
            return total / h.shape[0]
        return fnp.mean(layers.linear_cross_entropy(h, table, labels))

    def chunk_loss(h, table, labels):
        logits = layers.linear(h, table).astype(np.float32)   # [CHUNK, vocab]
        picked = fnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
        return fnp.sum(fg.nn.logsumexp(logits, axis=-1) - picked)

    def wte(p):
        return p["transformer"]["wte"]["weight"]

    tx = optim.adamw(LR)
    if variant == "full-f32":
        def loss_fn(p, ids, labels):
            return lm_loss(hidden(p, ids), wte(p), labels)

        state = {"train": params, "opt": tx.init(params)}

        def step(train, opt, ids, labels):
            loss, g = fg.value_and_grad(loss_fn)(train, ids, labels)
            u, opt = tx.update(g, opt, train)
            return optim.apply_updates(train, u), opt, loss

        fixed = ()
    else:
        mask = masks.mask_from_paths(params, include=["transformer/h/*/attn/c_attn/weight"])
        adapters = lora.init(0, params, mask, rank=RANK, alpha=ALPHA)

        def loss_fn(ad, p, ids, labels):
            return lm_loss(lora.apply(hidden)(p, ad, ids), wte(p), labels)

        state = {"train": adapters, "opt": tx.init(adapters)}

        def step(train, opt, p, ids, labels):
            loss, g = fg.value_and_grad(loss_fn)(train, p, ids, labels)
            u, opt = tx.update(g, opt, train)
            return optim.apply_updates(train, u), opt, loss

        fixed = (params,)
    jstep = fg.jit(step, donate_argnums=(0, 1))

    def run():
        state["train"], state["opt"], loss = jstep(state["train"], state["opt"], *fixed, x, y)
        return loss

    run.compile = lambda: jstep.lower(state["train"], state["opt"], *fixed, x, y)
    from funcgrad import quant
    run.base_bytes = quant.nbytes(params)
    return run, float


# ---------------------------------------------------------------------------------------------
# PyTorch + transformers + peft (+ bitsandbytes)


def torch_step(folder, variant, steps_seed=1):
    import torch
    import torch.utils.checkpoint as tcp
    from transformers import GPT2LMHeadModel

    kw = {}
    if variant == "lora-bf16":
        kw["torch_dtype"] = torch.bfloat16
    elif variant in ("lora-int8", "lora-nf4"):
        from transformers import BitsAndBytesConfig
        if variant == "lora-nf4":
            kw["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.float32)
        else:
            kw["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        kw["device_map"] = "cpu"
    model = GPT2LMHeadModel.from_pretrained(folder, **kw)
    model.config.use_cache = False
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    x_np, y_np = batch_data(steps_seed)
    x, y = torch.from_numpy(x_np).long(), torch.from_numpy(y_np).long()

    def chunk_loss(h, table, labels):
        logits = (h @ table.t()).float()
        return torch.nn.functional.cross_entropy(logits, labels, reduction="sum")

    def loss_of(transformer, table):
        h = transformer(input_ids=x).last_hidden_state.reshape(-1, D)
        labels = y.reshape(-1)
        total = 0.0
        for i in range(0, h.shape[0], CHUNK):
            total = total + tcp.checkpoint(chunk_loss, h[i:i + CHUNK], table,
                                           labels[i:i + CHUNK], use_reentrant=False)
        return total / h.shape[0]

    if variant == "full-f32":
        net, trainable = model, list(model.parameters())
        transformer = model.transformer
    else:
        from peft import LoraConfig, get_peft_model
        if variant in ("lora-int8", "lora-nf4"):
            from peft import prepare_model_for_kbit_training
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
        net = get_peft_model(model, LoraConfig(r=RANK, lora_alpha=ALPHA,
                                               target_modules=["c_attn"], fan_in_fan_out=True,
                                               lora_dropout=0.0))
        trainable = [p for p in net.parameters() if p.requires_grad]
        transformer = net.base_model.model.transformer
    net.train()
    for m in net.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    opt = torch.optim.AdamW(trainable, lr=LR, weight_decay=1e-4)
    table = transformer.wte.weight

    def run():
        loss = loss_of(transformer, table)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    run.base_bytes = sum(p.numel() * p.element_size() for p in model.parameters()) + sum(
        b.numel() * b.element_size() for b in model.buffers())
    return run, float


IMPLS = {"funcgrad": funcgrad_step, "torch": torch_step}


# ---------------------------------------------------------------------------------------------
# Worker processes (one per implementation and variant)


def _reset_peak():
    """Start the kernel's peak-RSS counter (VmHWM) again from the current RSS (Linux)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _hwm_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _say(obj):
    sys.stdout.write(TAG + json.dumps(obj) + "\n")
    sys.stdout.flush()


def worker(impl, variant, threads, folder):
    from .peers.worker import set_threads
    set_threads(threads)
    if impl == "torch":
        import torch
        torch.set_num_threads(threads)
    else:
        import funcgrad  # noqa: F401
    imports_mib = rss_mib()
    try:
        run, summarize = IMPLS[impl](folder, variant)
    except Exception as e:  # e.g. bitsandbytes without a CPU kernel for this variant
        _say({"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"})
        return 0
    import gc
    gc.collect()                 # what loading left for the collector (tracing garbage)
    loaded_mib = rss_mib()
    reset = _reset_peak()        # from here on VmHWM is the peak of the steps (and compiling)
    t0 = time.perf_counter()
    if hasattr(run, "compile"):
        run.compile()
    out = run()
    first = time.perf_counter() - t0
    _say({"ready": True, "first_call_s": first, "imports_mib": imports_mib,
          "loaded_mib": loaded_mib, "base_bytes": run.base_bytes, "step_peak_reset": reset})
    for line in sys.stdin:
        cmd = line.split()
        if cmd and cmd[0] == "run":
            times = []
            for _ in range(int(cmd[1])):
                t0 = time.perf_counter()
                out = run()
                times.append(time.perf_counter() - t0)
            _say({"times_s": times, "loss": summarize(out)})
        elif cmd and cmd[0] == "done":
            _say({"loss": summarize(out), "process_peak_mib": peak_rss_mib(),
                  "peak_mib": _hwm_mib()})
            return 0
    return 0


class Proc:
    def __init__(self, impl, variant, threads, folder):
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        self.name = f"{impl} {variant}"
        self.p = subprocess.Popen([sys.executable, "-m", "benchmarks.memory", "--worker", impl,
                                   "--variants", variant, "--threads", str(threads),
                                   "--folder", folder],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  env=env, cwd=root)

    def ask(self, cmd=None):
        if cmd is not None:
            self.p.stdin.write(cmd + "\n")
            self.p.stdin.flush()
        for line in self.p.stdout:
            if line.startswith(TAG):
                return json.loads(line[len(TAG):])
        raise RuntimeError(f"{self.name} worker exited with code {self.p.wait()}")


def measure(impls, variants, threads, rounds, block, folder):
    """Every (impl, variant) started in turn (first calls do not overlap), then `rounds` rounds
    of `block` steps each, interleaved across the processes."""
    procs = []
    for impl in impls:
        for v in variants:
            p = Proc(impl, v, threads, folder)
            p.info = p.ask()
            p.times, p.final = [], None
            if "error" in p.info:
                p.p.wait()
            procs.append(p)
    live = [p for p in procs if "error" not in p.info]
    for _ in range(rounds):
        for p in live:
            p.times.append(statistics.median(p.ask(f"run {block}")["times_s"]))
    for p in live:
        p.final = p.ask("done")
        p.p.wait()
    return procs


def report(procs, threads):
    ref = {}
    for p in procs:
        if p.final is not None and p.name.endswith("lora-f32"):
            ref[p.name.split()[0]] = (p.final["peak_mib"], statistics.median(p.times))
    lines = [f"threads {threads}",
             "| implementation | variant | base weights | peak RSS | vs lora-f32 | step | "
             "vs lora-f32 | first call | loss |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for p in procs:
        impl, variant = p.name.split()
        if p.final is None:
            lines.append(f"| {impl} | {variant} | – | – | – | – | – | – | {p.info['error']} |")
            continue
        peak, step = p.final["peak_mib"], statistics.median(p.times)
        rpeak, rstep = ref.get(impl, (None, None))
        lines.append(
            f"| {impl} | {variant} | {p.info['base_bytes'] / 2**20:.0f} MiB | {peak:.0f} MiB | "
            f"{peak / rpeak:.2f}x | {step * 1e3:.0f} ms | {step / rstep:.2f}x | "
            f"{p.info['first_call_s']:.1f} s | {p.final['loss']:.4f} |" if rpeak else
            f"| {impl} | {variant} | {p.info['base_bytes'] / 2**20:.0f} MiB | {peak:.0f} MiB | – | "
            f"{step * 1e3:.0f} ms | – | {p.info['first_call_s']:.1f} s | {p.final['loss']:.4f} |")
    imports = {p.name.split()[0]: p.info["imports_mib"] for p in procs if "imports_mib" in p.info}
    lines.append("RSS after imports only: " + ", ".join(f"{k} {v:.0f} MiB"
                                                         for k, v in imports.items()))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The loss curve of a small fine-tuning run in each precision


CURVE_MODULES_BASE = ["json", "os", "re", "collections", "functools", "itertools", "pathlib",
                      "subprocess", "argparse", "logging", "typing", "dataclasses"]
CURVE_MODULES_TUNE = ["unittest", "email", "http.client", "urllib.parse", "zipfile"]


def _text(modules):
    import importlib
    import inspect
    docs = []
    for name in modules:
        mod = importlib.import_module(name)
        for obj in [mod] + [getattr(mod, n) for n in sorted(dir(mod)) if not n.startswith("_")]:
            doc = inspect.getdoc(obj) if inspect.getmodule(obj) in (mod, None) or obj is mod \
                else None
            if doc and doc not in docs:
                docs.append(doc)
    return "\n\n".join(docs).encode("utf-8", "replace")


def curve(steps=200, pretrain_steps=300, seed=0):
    """{precision: [loss per step]} of LoRA fine-tuning on a pretrained small GPT-2."""
    import numpy as np

    import funcgrad as fg
    import funcgrad.numpy as fnp
    from funcgrad import lora, masks, optim, quant
    from funcgrad.mixed_precision import cast_floating
    from funcgrad.models import gpt2

    cfg = gpt2.default_config(n_layer=4, n_embd=128, n_head=4, vocab_size=256, n_positions=128,
                              embd_pdrop=0.0, resid_pdrop=0.0, attn_pdrop=0.0)
    base_text = np.frombuffer(_text(CURVE_MODULES_BASE), np.uint8).astype(np.int32)
    tune_text = np.frombuffer(_text(CURVE_MODULES_TUNE), np.uint8).astype(np.int32)
    seq, batch = 64, 16
    rng = np.random.default_rng(seed)

    def batches(text, n):
        starts = rng.integers(0, len(text) - seq - 1, (n, batch))
        return [np.stack([text[s:s + seq + 1] for s in row]) for row in starts]

    def xent(logits, ids):
        logp = fg.nn.log_softmax(logits.astype(np.float32))
        return -fnp.mean(fnp.take_along_axis(logp, ids[:, 1:, None], axis=-1))

    params = gpt2.init(fg.random.key(seed), cfg)
    tx = optim.adamw(3e-3)
    opt = tx.init(params)

    @fg.jit
    def pre_step(p, opt, ids):
        loss, g = fg.value_and_grad(lambda p: xent(gpt2.apply(p, ids[:, :-1], config=cfg),
                                                   ids))(p)
        u, opt = tx.update(g, opt, p)
        return optim.apply_updates(p, u), opt, loss

    for ids in batches(base_text, pretrain_steps):
        params, opt, _ = pre_step(params, opt, ids)

    tune = batches(tune_text, steps)
    mask = masks.mask_from_paths(params, include=["transformer/h/*/attn/c_attn/weight",
                                                  "transformer/h/*/mlp/c_fc/weight"])
    two_d = masks.mask_where(params, lambda path, x: np.ndim(x) == 2)
    bases = {"float32": params,
             "bfloat16": cast_floating(params, fnp.bfloat16),
             "int8": quant.quantize(params, "int8", mask=two_d, axis=_out_axis),
             "nf4": quant.quantize(params, "nf4", mask=two_d)}

    def apply(p, ids):
        return gpt2.apply(p, ids, config=cfg)

    apply.computes_adapters = True
    curves = {}
    tune_tx = optim.adamw(1e-3)
    for name, base in bases.items():
        adapters = lora.init(seed, params, mask, rank=8, alpha=16)
        opt = tune_tx.init(adapters)

        @fg.jit
        def step(ad, opt, ids, base=base):
            loss, g = fg.value_and_grad(lambda ad: xent(lora.apply(apply)(base, ad, ids[:, :-1]),
                                                        ids))(ad)
            u, opt = tune_tx.update(g, opt, ad)
            return optim.apply_updates(ad, u), opt, loss

        losses = []
        for ids in tune:
            adapters, opt, loss = step(adapters, opt, ids)
            losses.append(float(loss))
        curves[name] = losses
    return curves


def _out_axis(path, x):
    return 1 if "/h/" in path else 0   # Conv1D [in, out]: output channels on axis 1


def curve_report(curves):
    import numpy as np
    ref = np.array(curves["float32"])
    lines = [f"| base | loss at step 1 | at step {len(ref)} | max rel. diff from float32 | mean |",
             "| --- | --- | --- | --- | --- |"]
    for name, c in curves.items():
        c = np.array(c)
        rel = np.abs(c - ref) / ref
        lines.append(f"| {name} | {c[0]:.4f} | {c[-1]:.4f} | {rel.max() * 100:.2f}% | "
                     f"{rel.mean() * 100:.2f}% |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 rounds of 1 step; a 50-step curve")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--impls", default="funcgrad")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--block", type=int, default=2, help="steps per round")
    ap.add_argument("--no-curve", action="store_true")
    ap.add_argument("--curve-only", action="store_true")
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.variants, int(args.threads), args.folder)
    print(f"benchmarks.memory: {load_note()}")
    if not args.curve_only:
        rounds = args.rounds or (3 if args.quick else 7)
        block = 1 if args.quick else args.block
        with tempfile.TemporaryDirectory() as folder:
            write_checkpoint(folder)
            for threads in [int(t) for t in args.threads.split(",")]:
                procs = measure(args.impls.split(","), args.variants.split(","), threads,
                                rounds, block, folder)
                print(report(procs, threads))
                print(f"({rounds} rounds of {block} steps; {load_note()})", flush=True)
    if not args.no_curve:
        curves = curve(steps=50 if args.quick else 200, pretrain_steps=60 if args.quick else 300)
        print(curve_report(curves))
    return 0


if __name__ == "__main__":
    sys.exit(main())
