"""A character-level transformer LM on the standard library's docstrings, then LoRA on one family.

The text ships with Python: the docstrings of a fixed list of standard-library modules (module,
public classes, their methods, public functions; collected with `inspect` in a fixed order). One
module family (`email.*` by default, see --family) is held out. A small decoder-only transformer
(`funcgrad.models.transformer_lm`, characters as tokens, rare characters mapped to one unknown
id) is pretrained on the docstrings of all the other modules, then adapted to the held-out family:
  * LoRA: low-rank adapters on the attention and MLP matrices of every block (picked with a glob
    mask, `masks.mask_from_paths`); only the adapters train, the pretrained weights stay frozen,
    and `lora.merge` folds them back in for sampling,
  * baselines: the output head only (`fg.value_and_grad(..., wrt=mask)` + `optim.masked`) and
    full fine-tuning.
It prints a table of trainable parameter counts, perplexity on held-out docstrings of the target
family (and of the pretraining modules) before and after each method, and step times; greedy and
temperature samples (fixed key) from the model before and after LoRA; and saves the loss curves.
Indentation and runs of spaces are collapsed. The docstrings differ between Python versions,
so the numbers do too.

    python examples/char_transformer.py            # minutes (6 on a busy 2-core machine)
    python examples/char_transformer.py --quick    # ~15 s (used by the tests)
"""

from __future__ import annotations

import argparse
import collections
import importlib
import inspect
import os
import re
import sys
import warnings

import numpy as np
from _util import Timer, add_common_args, print_table, progress, save_curves

import funcgrad as fg
import funcgrad.numpy as fnp
from funcgrad import lora, masks, models, optim
from funcgrad.losses import softmax_cross_entropy_with_integer_labels as xent_per_example

# ---------------------------------------------------------------------------------------------
# data: docstrings of the standard library

GENERAL = [
    "abc", "argparse", "ast", "base64", "bisect", "calendar", "cmd", "codecs", "collections",
    "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib",
    "dis", "doctest", "enum", "fileinput", "fnmatch", "fractions", "ftplib", "functools",
    "getopt", "gettext", "glob", "gzip", "hashlib", "heapq", "hmac", "imaplib", "inspect",
    "ipaddress", "itertools", "locale", "mailbox", "mimetypes", "numbers", "operator",
    "optparse", "os", "pathlib", "pdb", "pickle", "pkgutil", "platform", "plistlib", "poplib",
    "pprint", "queue", "random", "re", "reprlib", "sched", "secrets", "selectors", "shelve",
    "shlex", "shutil", "smtplib", "socket", "socketserver", "statistics", "string", "struct",
    "subprocess", "sysconfig", "tarfile", "tempfile", "textwrap", "threading", "timeit",
    "tokenize", "trace", "traceback", "types", "typing", "urllib.parse", "urllib.request",
    "uuid", "warnings", "weakref", "zipfile",
]
FAMILIES = {
    "email": ["email", "email.message", "email.parser", "email.feedparser", "email.generator",
              "email.header", "email.headerregistry", "email.utils", "email.charset",
              "email.encoders", "email.errors", "email.iterators", "email.policy",
              "email._policybase", "email.contentmanager", "email._header_value_parser",
              "email.mime.base", "email.mime.multipart", "email.mime.text"],
    "http": ["http", "http.client", "http.server", "http.cookies", "http.cookiejar"],
    "logging": ["logging", "logging.handlers", "logging.config"],
    "asyncio": ["asyncio", "asyncio.base_events", "asyncio.events", "asyncio.futures",
                "asyncio.tasks", "asyncio.streams", "asyncio.queues", "asyncio.locks",
                "asyncio.subprocess", "asyncio.transports", "asyncio.protocols"],
    "unittest": ["unittest", "unittest.case", "unittest.mock", "unittest.result",
                 "unittest.loader", "unittest.suite", "unittest.runner"],
}


def module_docstrings(name):
    """The docstrings of module `name`: the module's, then (by name) those of its public classes
    and functions defined there, each class followed by its methods'. Empty if not importable."""
    try:
        mod = importlib.import_module(name)
    except ImportError:
        return []
    out = [mod.__doc__]
    for attr, obj in sorted(vars(mod).items()):
        if attr.startswith("_") or getattr(obj, "__module__", None) != mod.__name__:
            continue
        if inspect.isclass(obj):
            out.append(obj.__doc__)
            out += [m.__doc__ for n, m in sorted(vars(obj).items())
                    if not n.startswith("_") and inspect.isfunction(m)]
        elif inspect.isfunction(obj):
            out.append(obj.__doc__)
    return [tidy(d) for d in out if isinstance(d, str) and d.strip()]


def tidy(doc):
    """A docstring as plain lines: indentation and runs of spaces collapsed to one space (a
    small model with a short context would otherwise spend it on long runs of spaces)."""
    lines = [" ".join(line.split()) for line in inspect.cleandoc(doc).splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def collect(modules, seen):
    """Docstrings of `modules`, in order, each text once (`seen` is shared across calls)."""
    docs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated modules and aliases (typing.io, ...)
        for name in modules:
            for d in module_docstrings(name):
                if d not in seen:
                    seen.add(d)
                    docs.append(d)
    return docs


def split_docs(docs, every):
    """(train text, test text): every `every`-th docstring is held out."""
    test = [d for i, d in enumerate(docs) if i % every == every - 1]
    train = [d for i, d in enumerate(docs) if i % every != every - 1]
    return "\n\n".join(train) + "\n\n", "\n\n".join(test) + "\n\n"


class Vocab:
    """Characters seen at least `min_count` times in `text` (sorted); id 0 is the unknown char."""

    UNK = "\N{REPLACEMENT CHARACTER}"

    def __init__(self, text, min_count):
        counts = collections.Counter(text)
        self.chars = [self.UNK] + sorted(c for c, n in counts.items() if n >= min_count)
        self.index = {c: i for i, c in enumerate(self.chars)}

    def __len__(self):
        return len(self.chars)

    def encode(self, text):
        return np.array([self.index.get(c, 0) for c in text], np.int32)

    def decode(self, ids):
        return "".join(self.chars[int(i)] for i in ids)


def batches(tokens, seq, batch, rng):
    """Random windows: inputs tokens[s:s+seq], targets tokens[s+1:s+seq+1]."""
    starts = rng.integers(0, len(tokens) - seq - 1, batch)[:, None] + np.arange(seq)
    return tokens[starts], tokens[starts + 1]


def windows(tokens, seq, limit):
    """Consecutive non-overlapping windows (at most `limit`) for evaluation."""
    n = min((len(tokens) - 1) // seq, limit)
    idx = np.arange(n)[:, None] * seq + np.arange(seq)
    return tokens[idx], tokens[idx + 1]


# ---------------------------------------------------------------------------------------------
# model, training, evaluation


def make_model(args):
    def apply(params, tokens):
        return models.transformer_lm.apply(params, tokens)  # heads: params["config"]

    def xent(params, x, y):
        return fnp.mean(xent_per_example(apply(params, x), y))

    return apply, xent


def train(loss_fn, trainable, frozen, tokens, args, steps, lr, desc, seed, wrt=None):
    """AdamW (warmup + cosine decay, gradient clipping) on `loss_fn(trainable, frozen, x, y)`;
    `wrt` (a mask over `trainable`) limits which leaves get gradients and updates.
    Returns (trainable, losses, median step ms)."""
    sched = optim.warmup_cosine_decay_schedule(0.0, lr, max(1, steps // 10), steps, lr / 10)
    tx = optim.chain(optim.clip_by_global_norm(1.0), optim.adamw(sched, weight_decay=1e-2))
    if wrt is not None:
        tx = optim.masked(tx, wrt)
    grad_fn = fg.value_and_grad(loss_fn, wrt=wrt)

    @fg.jit
    def step(trainable, state, frozen, x, y):
        loss, grads = grad_fn(trainable, frozen, x, y)
        updates, state = tx.update(grads, state, trainable)
        return optim.apply_updates(trainable, updates), state, loss

    state = tx.init(trainable)
    rng = np.random.default_rng(seed)
    losses, timer = [], Timer()
    bar = progress(range(steps), desc, args.quiet)
    for i in bar:
        x, y = batches(tokens, args.seq, args.batch, rng)
        with timer:
            trainable, state, loss = step(trainable, state, frozen, x, y)
            loss = float(loss)
        losses.append(loss)
        if i % 10 == 0:
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
    return trainable, losses, timer.median_ms


def perplexity(xent, params, data, batch=64):
    """exp(mean next-character cross entropy) over the evaluation windows `data`."""
    x, y = data
    total = 0.0
    for i in range(0, len(x), batch):
        total += float(xent(params, x[i:i + batch], y[i:i + batch])) * len(x[i:i + batch])
    return float(np.exp(total / len(x)))


def sample(logits_fn, params, vocab, prompt, length, seq, temperature, key):
    """`length` characters after `prompt`: greedy (temperature 0) or drawn from
    softmax(logits / temperature) with keys fold_in(key, i). The model sees the last `seq`
    characters, right-padded to `seq` (causal attention: the padding does not reach them), so
    `logits_fn` is traced once."""
    ids = list(vocab.encode(prompt))
    for i in range(length):
        ctx = ids[-seq:]
        window = np.zeros((1, seq), np.int32)
        window[0, :len(ctx)] = ctx
        logits = fg.device_get(logits_fn(params, window))[0, len(ctx) - 1]
        if temperature == 0:
            nxt = int(np.argmax(logits))
        else:
            nxt = int(fg.random.categorical(fg.random.fold_in(key, i), logits / temperature))
        ids.append(nxt)
    return vocab.decode(ids)


def show_samples(title, logits_fn, params, vocab, args):
    print(f"\n--- samples {title} (prompt {args.prompt!r}) ---")
    key = fg.random.key(args.seed)
    for temp in (0.0, 0.8):
        text = sample(logits_fn, params, vocab, args.prompt, args.sample_len, args.seq, temp,
                      key)
        label = "greedy" if temp == 0 else f"T={temp}"
        print(f"[{label}] " + text.replace("\n", "\n    "))


# ---------------------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", default="email", choices=sorted(FAMILIES),
                    help="module family held out of pretraining and fine-tuned on")
    ap.add_argument("--pretrain-steps", type=int, default=800)
    ap.add_argument("--steps", type=int, default=150, help="fine-tuning steps per method")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=64, help="context length (characters)")
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--lr", type=float, default=3e-3, help="peak lr (pretraining, LoRA, head)")
    ap.add_argument("--full-lr", type=float, default=1e-3, help="peak lr of full fine-tuning")
    ap.add_argument("--rank", type=int, default=8, help="LoRA rank")
    ap.add_argument("--eval-windows", type=int, default=256,
                    help="max evaluation windows per held-out text")
    ap.add_argument("--prompt", default="Return the ")
    ap.add_argument("--sample-len", type=int, default=120)
    ap.add_argument("--no-baselines", action="store_true",
                    help="skip the head-only and full fine-tuning baselines")
    add_common_args(ap)
    args = ap.parse_args(argv)
    if args.quick:
        args.pretrain_steps, args.steps, args.batch, args.seq = 30, 10, 8, 32
        args.d_model, args.layers, args.rank, args.eval_windows = 32, 1, 4, 16
        args.sample_len = 40
    if sys.flags.optimize >= 2:
        sys.exit("char_transformer: Python runs with -OO, which strips the docstrings")

    # data: pretraining modules vs the held-out family, each split into train / test docstrings
    seen = set()
    target_docs = collect(FAMILIES[args.family], seen)
    general_mods = GENERAL + [m for f, mods in FAMILIES.items() if f != args.family for m in mods]
    general_docs = collect(general_mods, seen)
    pre_train, pre_test = split_docs(general_docs, 10)
    tgt_train, tgt_test = split_docs(target_docs, 5)
    if len(tgt_test) < 2 * args.seq or len(pre_test) < 2 * args.seq:
        sys.exit(f"char_transformer: too little docstring text ({len(tgt_test)} held-out "
                 f"{args.family} chars); is this Python built without docstrings?")
    vocab = Vocab(pre_train, min_count=20)
    pre_tok, tgt_tok = vocab.encode(pre_train), vocab.encode(tgt_train)
    eval_pre = windows(vocab.encode(pre_test), args.seq, args.eval_windows)
    eval_tgt = windows(vocab.encode(tgt_test), args.seq, args.eval_windows)
    print(f"data: docstrings of {len(general_mods)} standard-library modules for pretraining "
          f"({len(general_docs)} docstrings, {len(pre_train):,} train / {len(pre_test):,} test "
          f"chars); {args.family}.* held out ({len(target_docs)} docstrings, "
          f"{len(tgt_train):,} train / {len(tgt_test):,} test chars); vocabulary "
          f"{len(vocab)} characters (unknown: {np.mean(vocab.encode(tgt_train) == 0):.2%} "
          f"of {args.family} text)")

    apply, xent = make_model(args)
    eval_xent = fg.jit(xent)
    logits_fn = fg.jit(apply)
    config = models.TransformerConfig(vocab_size=len(vocab), max_len=args.seq,
                                      d_model=args.d_model, d_mlp=4 * args.d_model,
                                      num_layers=args.layers, num_heads=args.heads)
    params = models.transformer_lm.init(fg.random.key(args.seed), config)
    n_full = masks.count(params)

    # (0) pretraining on everything but the family
    params, pre_losses, pre_ms = train(lambda p, _, x, y: xent(p, x, y), params, None, pre_tok,
                                       args, args.pretrain_steps, args.lr, "pretrain", args.seed)
    curves = {"pretrain (general)": pre_losses}
    print(f"pretrained: {n_full:,} parameters, {args.pretrain_steps} steps at {pre_ms:.1f} ms/step"
          f", final train loss {np.mean(pre_losses[-20:]):.3f}")
    show_samples("before fine-tuning", logits_fn, params, vocab, args)

    def row(method, p, trainable, ms):
        return [method, trainable, perplexity(eval_xent, p, eval_tgt),
                perplexity(eval_xent, p, eval_pre), ms]

    rows = [row("before fine-tuning", params, 0, "-")]
    off = len(pre_losses)
    ft_steps = np.arange(off, off + args.steps)

    # (1) LoRA on the attention and MLP matrices of every block; the base stays frozen
    chosen = masks.mask_from_paths(params, include=["blocks/*/attn/*", "blocks/*/mlp/w*"])
    adapters = lora.init(fg.random.key(args.seed), params, chosen, rank=args.rank,
                         alpha=2 * args.rank)
    lora_xent = lora.apply(xent)
    adapters, ls, ms = train(lambda a, base, x, y: lora_xent(base, a, x, y), adapters, params,
                             tgt_tok, args, args.steps, args.lr,
                             f"LoRA r={args.rank}", args.seed + 1)
    merged = lora.merge(params, adapters)
    n_lora = sum(np.size(a) for a in fg.tree_util.tree_leaves(adapters))
    probe = eval_tgt[0][:4]
    adapted_logits = fg.jit(lora.apply(apply))(params, adapters, probe)
    merged_logits, adapted_logits = fg.device_get((logits_fn(merged, probe), adapted_logits))
    gap = float(np.max(np.abs(merged_logits - adapted_logits)))
    rows.append(row(f"LoRA r={args.rank}", merged, n_lora, ms))
    curves[f"LoRA r={args.rank} ({args.family})"] = (ft_steps, ls)
    show_samples(f"after LoRA on {args.family}.* (merged weights)", logits_fn, merged, vocab,
                 args)
    print(f"LoRA: merged vs adapted logits, max abs difference {gap:.2e}; the base weights are "
          "unchanged (dropping the adapters gives back the pretrained model)")

    if not args.no_baselines:
        # (2) the output head only: one mask drives grad(..., wrt=mask) and optim.masked
        head = masks.mask_from_paths(params, include=["head/**"])
        p, ls, ms = train(lambda p, _, x, y: xent(p, x, y), params, None, tgt_tok, args,
                          args.steps, args.lr, "head only", args.seed + 1, wrt=head)
        rows.append(row("head only", p, masks.count(params, head), ms))
        curves[f"head only ({args.family})"] = (ft_steps, ls)
        # (3) full fine-tuning
        p, ls, ms = train(lambda p, _, x, y: xent(p, x, y), params, None, tgt_tok, args,
                          args.steps, args.full_lr, "full", args.seed + 1)
        rows.append(row("full", p, n_full, ms))
        curves[f"full ({args.family})"] = (ft_steps, ls)

    print_table(rows, ["method", "trainable params", f"ppl {args.family} (held out)",
                       "ppl pretraining modules (held out)", "step ms"],
                title=f"Fine-tuning the docstring LM on {args.family}.* "
                      f"(pretrained: {n_full:,} params, {pre_ms:.1f} ms/step)")
    save_curves(os.path.join(args.out, "char_transformer.png"), curves,
                ylabel="train loss (nats/char)",
                title=f"char LM: pretrain on stdlib docstrings, fine-tune on {args.family}.*")
    return rows


if __name__ == "__main__":
    main()
