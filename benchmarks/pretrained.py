"""Issue 17's figures: GPT-2 small (124M parameters, 12 layers, d 768, random weights) in funcgrad
and in PyTorch with `transformers` and `peft`, each in its own process, at 1 and 2 threads.

    python -m benchmarks.pretrained                 # both tasks, 1 and 2 threads
    python -m benchmarks.pretrained --quick         # fewer rounds
    python -m benchmarks.pretrained --threads 1 --tasks lora

Tasks:
  lora      one training step: LoRA r 8 (alpha 16) on every `c_attn`, batch 4 x 128 tokens,
            next-token cross-entropy, Adam on the adapters, frozen base. Targets: step time and
            peak memory at most PyTorch's (+ peft), first call (trace + compile + one step)
            under 2 s.
  generate  greedy decoding of 64 tokens after a 64-token prompt, KV cache, batch 1: ms per
            new token (prefill included), target at most transformers' `generate`.

Both implementations start from the same weights (NumPy default_rng(0), normal * 0.02, GPT-2's
layout) and data (default_rng(1)), and the same LoRA factors; the table shows each one's loss
after the timed steps (they must agree) and a checksum of the generated tokens (they must be
equal). The CPU time ratio (process time per step) is less sensitive than the wall-clock ratio
to other processes on a loaded machine. Memory: the process's peak RSS after the steps minus its
RSS before the first step (weights, data and imports already there): what the step itself
needs at its peak. Rounds
alternate between the processes (A B A B ...), so load from other processes hits both alike;
figures are medians over rounds.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

from ._common import load_note, peak_rss_mib, rss_mib

TAG = "@@pretrained "
VOCAB, POSITIONS, D, LAYERS, HEADS = 50257, 1024, 768, 12, 12
BATCH, SEQ, RANK, ALPHA, LR = 4, 128, 8, 16, 1e-4
PROMPT, NEW = 64, 64


# ---------------------------------------------------------------------------------------------
# Shared weights and data (NumPy, in GPT-2's checkpoint layout)


def gpt2_weights(seed=0):
    """{checkpoint name: float32 array} for GPT-2 small, normal(0, 0.02) weights."""
    import numpy as np
    rng = np.random.default_rng(seed)

    def normal(*shape):
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02)

    w = {"transformer.wte.weight": normal(VOCAB, D), "transformer.wpe.weight": normal(POSITIONS, D),
         "transformer.ln_f.weight": np.ones(D, np.float32),
         "transformer.ln_f.bias": np.zeros(D, np.float32)}
    for i in range(LAYERS):
        p = f"transformer.h.{i}."
        for ln in ("ln_1", "ln_2"):
            w[p + ln + ".weight"] = np.ones(D, np.float32)
            w[p + ln + ".bias"] = np.zeros(D, np.float32)
        for name, shape in (("attn.c_attn", (D, 3 * D)), ("attn.c_proj", (D, D)),
                            ("mlp.c_fc", (D, 4 * D)), ("mlp.c_proj", (4 * D, D))):
            w[p + name + ".weight"] = normal(*shape)
            w[p + name + ".bias"] = np.zeros(shape[1], np.float32)
    return w


def lora_factors(seed=2):
    """{layer: (A [r, d], B [3d, r])} in PEFT's layout; B nonzero so the adapters matter."""
    import numpy as np
    rng = np.random.default_rng(seed)
    return {i: ((rng.uniform(-1, 1, (RANK, D)) / np.sqrt(D)).astype(np.float32),
                rng.normal(0, 0.01, (3 * D, RANK)).astype(np.float32)) for i in range(LAYERS)}


def data(seed=1):
    import numpy as np
    rng = np.random.default_rng(seed)
    return (rng.integers(0, VOCAB, (BATCH, SEQ + 1)).astype(np.int64),
            rng.integers(0, VOCAB, (1, PROMPT)).astype(np.int64))


def config():
    return {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": VOCAB,
            "n_positions": POSITIONS, "n_embd": D, "n_layer": LAYERS, "n_head": HEADS,
            "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
            "attn_pdrop": 0.0, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "tie_word_embeddings": True}


# ---------------------------------------------------------------------------------------------
# funcgrad


def funcgrad_impl(task):
    import numpy as np

    import funcgrad as fg
    import funcgrad.numpy as fnp
    from funcgrad import lora, losses, masks, optim
    from funcgrad import tree_util as tu
    from funcgrad.models import pretrained

    # freed temporaries stay in the process for the next step (fg.config, retain_host_memory)
    fg.config.update("retain_host_memory", os.environ.get("BENCH_RETAIN", "1") == "1")
    model = pretrained.from_tensors(config(), gpt2_weights())
    params = model.params
    train_ids, prompt = data()

    if task == "generate":
        def run():
            return pretrained.generate(model, params, prompt, NEW)

        def compile_both():          # trace and compile the prefill and the decode step
            prefill, step = pretrained.generation.generate_fns(model, 0.0, None, None)
            p = np.zeros((1, PROMPT), np.int32)
            length = pretrained.generation.bucket(PROMPT + NEW)
            cache = model.family_module.init_cache(model.config, 1, length)
            mask = np.ones((1, length), np.int32)
            key = fg.random.key(0)
            prefill.lower(params, p, mask, p, cache, key)
            step.lower(params, cache, p[:, 0], np.int32(PROMPT), mask, p[:, :1], key)

        run.compile = compile_both
        return run, lambda out: int(np.asarray(out)[0, PROMPT:].sum())

    mask = masks.mask_from_paths(params, include=["transformer/h/*/attn/c_attn/weight"])
    adapters = lora.init(0, params, mask, rank=RANK, alpha=ALPHA)
    factors = lora_factors()

    def fill(path, ad):                          # Conv1D: a = PEFT's B^T, b = A^T
        if ad is None:
            return None
        a, b = factors[int(tu.path_to_str(path).split("/")[2])]
        return lora.Adapter(np.ascontiguousarray(b.T), np.ascontiguousarray(a.T), ad.scale)

    adapters = tu.tree_map_with_path(fill, adapters,
                                     is_leaf=lambda x: x is None or isinstance(x, lora.Adapter))
    tx = optim.adam(LR)
    state = {"ad": adapters, "opt": tx.init(adapters)}
    x, y = train_ids[:, :-1].astype(np.int32), train_ids[:, 1:].astype(np.int32)

    def loss_fn(ad, params, x, y):       # as torch's F.cross_entropy: one fused loss
        logits = lora.apply(model.apply)(params, ad, x)
        return fnp.mean(losses.softmax_cross_entropy_with_integer_labels(logits, y))

    @fg.jit
    def step(ad, opt, params, x, y):
        loss, g = fg.value_and_grad(loss_fn)(ad, params, x, y)
        updates, opt = tx.update(g, opt, ad)
        return optim.apply_updates(ad, updates), opt, loss

    def run():
        state["ad"], state["opt"], loss = step(state["ad"], state["opt"], params, x, y)
        return loss

    run.compile = lambda: step.lower(state["ad"], state["opt"], params, x, y)
    return run, float


# ---------------------------------------------------------------------------------------------
# PyTorch + transformers + peft


def torch_impl(task):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = dict(config())
    cfg.pop("model_type"), cfg.pop("architectures")
    with torch.device("meta"):
        model = GPT2LMHeadModel(GPT2Config(**cfg))
    weights = gpt2_weights()
    state = {k: torch.from_numpy(v) for k, v in weights.items()}
    state["lm_head.weight"] = state["transformer.wte.weight"]
    model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    for name, buf in list(model.named_buffers()):
        if buf.is_meta:
            raise SystemExit(f"torch: buffer {name} was not materialized")
    model.eval()
    train_ids, prompt = data()

    if task == "generate":
        prompt_t = torch.from_numpy(prompt)

        def run():
            with torch.no_grad():
                return model.generate(prompt_t, max_new_tokens=NEW, min_new_tokens=NEW,
                                      do_sample=False, pad_token_id=0)
        return run, lambda out: int(out[0, PROMPT:].sum())

    from peft import LoraConfig, get_peft_model
    pm = get_peft_model(model, LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=["c_attn"],
                                          fan_in_fan_out=True, lora_dropout=0.0))
    factors = lora_factors()
    with torch.no_grad():
        for i, (a, b) in factors.items():
            layer = pm.base_model.model.transformer.h[i].attn.c_attn
            layer.lora_A["default"].weight.copy_(torch.from_numpy(a))
            layer.lora_B["default"].weight.copy_(torch.from_numpy(b))
    pm.train()
    for m in pm.modules():                      # same as funcgrad: no dropout
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    opt = torch.optim.Adam([p for p in pm.parameters() if p.requires_grad], lr=LR)
    x = torch.from_numpy(train_ids[:, :-1])
    y = torch.from_numpy(train_ids[:, 1:])

    def run():
        logits = pm(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    return run, float


IMPLS = {"funcgrad": funcgrad_impl, "torch": torch_impl}


# ---------------------------------------------------------------------------------------------
# Worker process


def _say(obj):
    sys.stdout.write(TAG + json.dumps(obj) + "\n")
    sys.stdout.flush()


def worker(impl, task, threads):
    from .peers.worker import set_threads
    set_threads(threads)
    if impl == "torch":
        import torch
        torch.set_num_threads(threads)
    run, summarize = IMPLS[impl](task)
    rss_before = rss_mib()
    t0 = time.perf_counter()
    compile_s = None
    if hasattr(run, "compile"):       # trace + optimize + generate code, without running
        run.compile()
        compile_s = time.perf_counter() - t0
    out = run()
    first = time.perf_counter() - t0
    _say({"ready": True, "first_call_s": first, "compile_s": compile_s,
          "rss_before_mib": rss_before})
    for line in sys.stdin:
        cmd = line.split()
        if cmd and cmd[0] == "run":
            times, cpu = [], []
            for _ in range(int(cmd[1])):
                t0, c0 = time.perf_counter(), time.process_time()
                out = run()
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            _say({"times_s": times, "cpu_s": cpu})
        elif cmd and cmd[0] == "done":
            _say({"result": summarize(out), "peak_mib": peak_rss_mib(),
                  "rss_before_mib": rss_before})
            return 0
    return 0


TUNED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(2**31), "MALLOC_TRIM_THRESHOLD_": str(2**31)}


class Proc:
    def __init__(self, impl, task, threads, tuned_malloc=False, no_retain=False):
        env = dict(os.environ, **(TUNED_MALLOC if tuned_malloc else {}),
                   BENCH_RETAIN="0" if no_retain else "1")
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        self.impl = impl
        self.p = subprocess.Popen([sys.executable, "-m", "benchmarks.pretrained", "--worker",
                                   impl, "--tasks", task, "--threads", str(threads)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  env=env, cwd=root)

    def ask(self, cmd=None):
        if cmd is not None:
            self.p.stdin.write(cmd + "\n")
            self.p.stdin.flush()
        for line in self.p.stdout:
            if line.startswith(TAG):
                return json.loads(line[len(TAG):])
        raise RuntimeError(f"{self.impl} worker exited with code {self.p.wait()}")


def measure(task, threads, rounds, block, impls, tuned_malloc=False, no_retain=False):
    procs = []
    for impl in impls:                       # started one at a time: first calls don't overlap
        p = Proc(impl, task, threads, tuned_malloc, no_retain)
        p.info = p.ask()
        p.rounds, p.cpu = [], []
        procs.append(p)
    for _ in range(rounds):
        for p in procs:
            msg = p.ask(f"run {block}")
            p.rounds.append(statistics.median(msg["times_s"]))
            p.cpu.append(statistics.median(msg["cpu_s"]))
    for p in procs:
        p.final = p.ask("done")
        p.p.wait()
    return procs


def fmt_s(s):
    return f"{s * 1e3:.0f} ms" if s < 10 else f"{s:.1f} s"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 rounds of 1 step")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--tasks", default="lora,generate")
    ap.add_argument("--impls", default="funcgrad,torch")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--tuned-malloc", action="store_true",
                    help="glibc keeps freed memory (MALLOC_MMAP_THRESHOLD_ / _TRIM_THRESHOLD_ "
                         "2 GiB) in both processes: large temporaries stop costing page faults")
    ap.add_argument("--no-retain", action="store_true",
                    help="funcgrad without fg.config 'retain_host_memory' (on by default here: "
                         "freed temporaries stay in the process for the next step)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.tasks, int(args.threads))
    impls = args.impls.split(",")
    missing = [m for m in ("torch", "transformers", "peft") if importlib.util.find_spec(m) is None]
    if "torch" in impls and missing:
        print(f"torch + transformers + peft not installed ({', '.join(missing)} missing: pip "
              "install -e '.[benchmarks]'): funcgrad only\n")
        impls = [i for i in impls if i != "torch"]
    rounds = args.rounds or (3 if args.quick else 5)
    print(f"GPT-2 small (124M), {load_note()}; {rounds} interleaved rounds, medians"
          + ("; glibc malloc tuned (--tuned-malloc)" if args.tuned_malloc else "")
          + ("; funcgrad without retain_host_memory" if args.no_retain else
             "; funcgrad with fg.config retain_host_memory") + "\n")
    for threads in (int(t) for t in args.threads.split(",")):
        for task in args.tasks.split(","):
            block = 1 if task == "generate" or args.quick else 2
            procs = measure(task, threads, rounds, block, impls, args.tuned_malloc,
                            args.no_retain)
            ref = next((p for p in procs if p.impl == "torch"), procs[-1])
            unit = "ms / token" if task == "generate" else "step"
            print(f"### {task}, {threads} thread{'s' * (threads > 1)}\n")
            print(f"| impl | {unit} | ratio to {ref.impl} | CPU time ratio | first call | of "
                  "which trace + compile | peak RSS MiB | step peak beyond weights MiB | " +
                  ("token checksum" if task == "generate" else "loss") + " |")
            print("|" + " --- |" * 9)
            for p in procs:
                med = statistics.median(p.rounds)
                ratio = statistics.median(a / b for a, b in zip(p.rounds, ref.rounds))
                cpu_ratio = statistics.median(a / b for a, b in zip(p.cpu, ref.cpu))
                shown = f"{med / NEW * 1e3:.1f}" if task == "generate" else fmt_s(med)
                comp = p.info.get("compile_s")
                print(f"| {p.impl} | {shown} | {ratio:.2f} | {cpu_ratio:.2f} | "
                      f"{fmt_s(p.info['first_call_s'])} | "
                      f"{'–' if comp is None else fmt_s(comp)} | {p.final['peak_mib']:.0f} | "
                      f"{p.final['peak_mib'] - p.final['rss_before_mib']:.0f} | "
                      f"{p.final['result']} |")
            print(flush=True)
    print(f"({load_note()} at the end)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
