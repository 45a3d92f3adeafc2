"""Fine-tune a pretrained Hugging Face checkpoint: LoRA, head-only and full fine-tuning of a causal
LM on a text file, and sequence classification with a BERT-family model.

    python examples/finetune_pretrained.py --model DIR --text FILE    # a GPT-2 / Llama folder
    python examples/finetune_pretrained.py --model BERT_DIR           # classify docstrings
    python examples/finetune_pretrained.py                            # makes its own checkpoints
    python examples/finetune_pretrained.py --quick                    # seconds (the tests)

A model folder is what the Hugging Face Hub ships (`config.json`, `model.safetensors` or
shards, `tokenizer.json`); any folder of the GPT-2, BERT or Llama families works, loaded with
`funcgrad.models.pretrained.load` and `load_tokenizer`.

Without --model the example first makes small checkpoints of its own, as a user would find
them: a byte-level BPE tokenizer (the `tokenizers` library) trained on the docstrings of the
standard library, a GPT-2-style causal LM and a BERT masked LM pretrained on those docstrings
with funcgrad, each saved with `pretrained.save` into a folder. Then it loads those folders
exactly as it would load a user's:

  * causal LM (`--task lm`): perplexity on held-out text before and after three ways of
    fine-tuning on the target text (`--text FILE`, by default the docstrings of one module
    family, `email`, that pretraining never saw): LoRA on the blocks' projections (PEFT's
    layout, saved with `lora.save_peft`), the output layer only, and every parameter; greedy
    and sampled continuations before and after LoRA (`pretrained.generate`, KV cache);
  * classification (`--task classify`): the BERT checkpoint loaded as
    `BertForSequenceClassification` (a new head initialized, as transformers does), trained to
    tell which module family a docstring comes from: accuracy before and after LoRA on the
    query/value projections with the classifier trained in full (saved as PEFT's
    `modules_to_save`), the classifier only, and every parameter.

It prints a table per task, samples, and saves the loss curves and the adapters under --out.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import tempfile
import warnings

import numpy as np
from _util import Timer, add_common_args, print_table, progress, save_curves

import funcgrad as fg
import funcgrad.numpy as fnp
from funcgrad import lora, masks, optim
from funcgrad.losses import softmax_cross_entropy_with_integer_labels as token_xent
from funcgrad.models import bert, gpt2, pretrained

# ---------------------------------------------------------------------------------------------
# Data: docstrings of the standard library

PRETRAIN = [
    "abc", "argparse", "ast", "base64", "bisect", "calendar", "collections", "configparser",
    "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "enum",
    "fractions", "functools", "gettext", "glob", "gzip", "heapq", "inspect", "ipaddress",
    "itertools", "locale", "mailbox", "operator", "optparse", "os", "pathlib", "pickle",
    "pprint", "queue", "random", "re", "shlex", "shutil", "socket", "statistics", "string",
    "struct", "subprocess", "tarfile", "tempfile", "textwrap", "threading", "tokenize",
    "traceback", "typing", "urllib.parse", "uuid", "warnings", "weakref", "zipfile",
]
FAMILIES = {
    "email": ["email.message", "email.parser", "email.feedparser", "email.generator",
              "email.header", "email.headerregistry", "email.utils", "email.charset",
              "email.policy", "email._policybase", "email.contentmanager"],
    "http": ["http.client", "http.server", "http.cookies", "http.cookiejar"],
    "logging": ["logging", "logging.handlers", "logging.config"],
    "unittest": ["unittest.case", "unittest.mock", "unittest.result", "unittest.loader"],
}


def docstrings(module):
    """The docstrings of a module, its public classes and their methods, its functions."""
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return []
    out = [mod.__doc__]
    for name, obj in sorted(vars(mod).items()):
        if name.startswith("_") or getattr(obj, "__module__", None) != mod.__name__:
            continue
        out.append(obj.__doc__ if inspect.isclass(obj) or inspect.isfunction(obj) else None)
        if inspect.isclass(obj):
            out += [m.__doc__ for n, m in sorted(vars(obj).items())
                    if not n.startswith("_") and inspect.isfunction(m)]
    return [" ".join(d.split()) for d in out if isinstance(d, str) and len(d.split()) > 3]


def collect(modules):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        docs = [d for m in modules for d in docstrings(m)]
    return list(dict.fromkeys(docs))            # each text once, in order


# ---------------------------------------------------------------------------------------------
# Making our own checkpoints (what a user downloads instead)


def train_tokenizer(texts, vocab_size, bert_style):
    """A byte-level BPE tokenizer trained on `texts` (GPT-2's scheme; for BERT with [CLS] ...
    [SEP] added around each text)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] if bert_style else ["<|endoftext|>"]
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if bert_style:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
        return pretrained.Tokenizer(tok, pad_token="[PAD]", unk_token="[UNK]")
    return pretrained.Tokenizer(tok, pad_token="<|endoftext|>", eos_token="<|endoftext|>",
                                bos_token="<|endoftext|>")


def make_gpt2_checkpoint(folder, texts, args):
    """Pretrain a small GPT-2 on `texts` with funcgrad and save it as a Hugging Face folder."""
    tok = train_tokenizer(texts, args.vocab, bert_style=False)
    cfg = gpt2.default_config(n_layer=args.layers, n_embd=args.d, n_head=4, n_positions=128,
                              vocab_size=tok.vocab_size, bos_token_id=tok.eos_token_id,
                              eos_token_id=tok.eos_token_id, resid_pdrop=0.0, embd_pdrop=0.0,
                              attn_pdrop=0.0)
    model = pretrained.from_config(cfg, fg.random.key(args.seed))
    ids = token_stream(tok, texts)
    params, losses, _ = train(lm_loss(model), model.params, None, lambda rng: windows(
        ids, args.seq, args.batch, rng), args.pretrain_steps, 3e-3, "pretrain GPT-2", args)
    pretrained.save(folder, model, params)
    tok.save(folder)
    return losses


def make_bert_checkpoint(folder, texts, args):
    """Pretrain a small BERT masked LM on `texts` and save it as a Hugging Face folder."""
    tok = train_tokenizer(texts, args.vocab, bert_style=True)
    cfg = bert.default_config(num_hidden_layers=args.layers, hidden_size=args.d,
                              num_attention_heads=4, intermediate_size=2 * args.d,
                              max_position_embeddings=128, vocab_size=tok.vocab_size,
                              architectures=["BertForMaskedLM"], hidden_dropout_prob=0.0,
                              attention_probs_dropout_prob=0.0)
    model = pretrained.from_config(cfg, fg.random.key(args.seed + 1))
    mask_id = tok.tokenizer.token_to_id("[MASK]")

    def batch(rng):
        pick = rng.choice(len(texts), args.batch)
        enc = tok([texts[i] for i in pick], padding=True, truncation=True, max_length=args.seq)
        ids, att = enc["input_ids"], enc["attention_mask"]
        hide = (rng.random(ids.shape) < 0.15) & (att == 1) & (ids > 4)
        return np.where(hide, mask_id, ids), att, ids, hide.astype(np.float32)

    def loss(params, frozen, x, att, y, weight):
        logits = model.apply(params, x, attention_mask=att)
        per = token_xent(logits, y)                       # one value per token
        return fnp.sum(per * weight) / fnp.maximum(fnp.sum(weight), 1.0)

    params, losses, _ = train(loss, model.params, None, batch, args.pretrain_steps, 2e-3,
                              "pretrain BERT (masked LM)", args)
    pretrained.save(folder, model, params)
    tok.save(folder)
    return losses


# ---------------------------------------------------------------------------------------------
# Training and evaluation


def token_stream(tok, texts):
    eos = tok.eos_token_id
    ids = [i for t in texts for i in tok.encode(t) + ([eos] if eos is not None else [])]
    return np.array(ids, np.int32)


def windows(ids, seq, batch, rng):
    starts = rng.integers(0, len(ids) - seq - 1, batch)[:, None] + np.arange(seq)
    return ids[starts], ids[starts + 1]


def lm_loss(model, adapted=False):
    """Next-token cross-entropy: loss(trainable, frozen, x, y), trainable being the params (or
    the adapters, with the base params frozen)."""
    def loss(trainable, frozen, x, y):
        logits = (lora.apply(model.apply)(frozen, trainable, x) if adapted
                  else model.apply(trainable, x))
        return fnp.mean(token_xent(logits, y))
    return loss


def train(loss_fn, trainable, frozen, batches, steps, lr, desc, args, wrt=None):
    """AdamW with warmup and cosine decay; `wrt` (a mask) limits what trains. Returns
    (trainable, losses, median step ms)."""
    sched = optim.warmup_cosine_decay_schedule(0.0, lr, max(1, steps // 10), steps, lr / 10)
    tx = optim.chain(optim.clip_by_global_norm(1.0), optim.adamw(sched, weight_decay=0.01))
    if wrt is not None:
        tx = optim.masked(tx, wrt)
    grad_fn = fg.value_and_grad(loss_fn, wrt=wrt)

    @fg.jit
    def step(trainable, state, frozen, *batch):
        loss, grads = grad_fn(trainable, frozen, *batch)
        updates, state = tx.update(grads, state, trainable)
        return optim.apply_updates(trainable, updates), state, loss

    state, rng, losses, timer = tx.init(trainable), np.random.default_rng(args.seed), [], Timer()
    bar = progress(range(steps), desc, args.quiet)
    for i in bar:
        with timer:
            trainable, state, loss = step(trainable, state, frozen, *batches(rng))
            loss = float(loss)
        losses.append(loss)
        if i % 10 == 0:
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
    return trainable, losses, timer.median_ms


def perplexity(model, params, ids, seq, adapters=None):
    n = min((len(ids) - 1) // seq, 64)
    idx = np.arange(n)[:, None] * seq + np.arange(seq)
    apply = fg.jit(lambda p, ad, x: lora.apply(model.apply)(p, ad, x) if ad is not None
                   else model.apply(p, x))
    total = 0.0
    for i in range(0, n, 16):
        logits = apply(params, adapters, ids[idx[i:i + 16]])
        total += float(fnp.sum(fnp.mean(token_xent(logits, ids[idx[i:i + 16] + 1]), axis=-1)))
    return float(np.exp(total / n))


def targets(model, names):
    """A mask of the weights whose module name ends with one of `names`."""
    pats = [f"**/{n}/weight" for n in names if any(
        p.endswith(f"/{n}/weight") for p in masks.paths(model.params))]
    return masks.mask_from_paths(model.params, include=pats)


def output_layer(model):
    """The paths of the final norm and the output matrix (a tied embedding for GPT-2)."""
    paths = masks.paths(model.params)
    heads = [p for p in paths if p.startswith("lm_head/")] or \
        [p for p in paths if p.endswith(("wte/weight", "embed_tokens/weight"))]
    norms = [p for p in paths if p.split("/")[1:2] in (["ln_f"], ["norm"])]
    return masks.mask_from_paths(model.params, include=heads + norms)


def sample(model, params, tok, prompt, args, adapters=None):
    if adapters is not None:
        params = lora.merge(params, adapters)
    ids = np.array([tok.encode(prompt)], np.int32)
    greedy = pretrained.generate(model, params, ids, args.new_tokens,
                                 eos_token_id=tok.eos_token_id)
    hot = pretrained.generate(model, params, ids, args.new_tokens, temperature=0.8, top_p=0.95,
                              key=fg.random.key(args.seed), eos_token_id=tok.eos_token_id)
    return [tok.decode(g[ids.shape[1]:]) for g in (greedy[0], hot[0])]


# ---------------------------------------------------------------------------------------------
# The two tasks


def run_lm(folder, args, curves):
    model = pretrained.load(folder)
    tok = pretrained.load_tokenizer(folder)
    print(f"\nloaded {folder}: {model}")
    if args.text:
        with open(args.text, encoding="utf-8") as f:
            text = f.read()
        cut = int(len(text) * 0.9)
        train_ids, test_ids = token_stream(tok, [text[:cut]]), token_stream(tok, [text[cut:]])
        target = os.path.basename(args.text)
    else:
        docs = collect(FAMILIES[args.family])
        train_ids = token_stream(tok, docs[1::5] + docs[2::5] + docs[3::5] + docs[4::5])
        test_ids = token_stream(tok, docs[0::5])
        target = f"{args.family}.* docstrings"
    seq = min(args.seq, model.config.get("n_positions", model.config.get(
        "max_position_embeddings", args.seq)) - 1)
    if len(test_ids) < seq + 2 or len(train_ids) < seq + 2:
        raise SystemExit(f"the text is too short for windows of {seq} tokens")
    batches = lambda rng: windows(train_ids, seq, args.batch, rng)  # noqa: E731
    base_ppl = perplexity(model, model.params, test_ids, seq)
    prompt = "Return the"
    before = sample(model, model.params, tok, prompt, args)
    rows = []

    # every projection of the blocks (GPT-2's Conv1D, Llama's *_proj), named as PEFT names them
    lora_mask = targets(model, ["c_attn", "c_proj", "c_fc", "q_proj", "k_proj", "v_proj",
                                "o_proj", "gate_proj", "up_proj", "down_proj"])
    adapters = lora.init(fg.random.key(args.seed), model.params, lora_mask, rank=args.rank,
                         alpha=2 * args.rank)
    adapters, losses, ms = train(lm_loss(model, adapted=True), adapters, model.params, batches,
                                 args.steps, 2.5 * args.lr, "LoRA", args)
    curves[f"LoRA r={args.rank}"] = losses
    rows.append([f"LoRA r={args.rank}", masks.count(adapters), base_ppl,
                 perplexity(model, model.params, test_ids, seq, adapters), ms])
    after = sample(model, model.params, tok, prompt, args, adapters)
    peft_dir = os.path.join(args.out, "lora_adapters")
    lora.save_peft(peft_dir, adapters, model, base_model_name_or_path=folder)

    head = output_layer(model)
    params, losses, ms = train(lm_loss(model), model.params, None, batches, args.steps, args.lr,
                               "head only", args, wrt=head)
    curves["head only"] = losses
    rows.append(["head only", masks.count(model.params, head), base_ppl,
                 perplexity(model, params, test_ids, seq), ms])
    params, losses, ms = train(lm_loss(model), model.params, None, batches, args.steps,
                               args.lr / 3, "full", args)
    curves["full"] = losses
    rows.append(["full", masks.count(model.params), base_ppl,
                 perplexity(model, params, test_ids, seq), ms])
    print_table(rows, ["method", "trainable", "ppl before", "ppl after", "step ms"],
                f"causal LM ({model.architecture}), fine-tuned on {target}: perplexity on "
                "held-out text")
    print(f"\nsamples before fine-tuning (prompt {prompt!r}):\n  greedy: {before[0]!r}\n"
          f"  t=0.8:  {before[1]!r}")
    print(f"samples after LoRA:\n  greedy: {after[0]!r}\n  t=0.8:  {after[1]!r}")
    print(f"LoRA adapters saved in PEFT's format: {peft_dir}")


def run_classify(folder, args, curves):
    names = list(FAMILIES)
    texts, labels = [], []
    for i, fam in enumerate(names):
        docs = collect(FAMILIES[fam])[:args.per_class]
        texts += docs
        labels += [i] * len(docs)
    labels = np.array(labels, np.int32)
    order = np.random.default_rng(0).permutation(len(texts))
    test = order[:len(order) // 4]
    train_idx = order[len(order) // 4:]
    model = pretrained.load(folder, architecture="BertForSequenceClassification",
                            config_updates={"num_labels": len(names)},
                            key=fg.random.key(args.seed))
    tok = pretrained.load_tokenizer(folder)
    print(f"\nloaded {folder} with a new {len(names)}-way classifier: {model}")
    enc = tok(texts, padding="max_length", truncation=True, max_length=args.seq)
    ids, att = enc["input_ids"], enc["attention_mask"]

    def batches(rng):
        pick = rng.choice(train_idx, args.batch)
        return ids[pick], att[pick], labels[pick]

    def loss(trainable, frozen, x, a, y, adapted=False):
        logits = (lora.apply(model.apply)(frozen, trainable, x, attention_mask=a) if adapted
                  else model.apply(trainable, x, attention_mask=a))
        return fnp.mean(token_xent(logits, y))

    predict = fg.jit(lambda p, x, a: fnp.argmax(model.apply(p, x, attention_mask=a), axis=-1))

    def accuracy(params):
        pred = np.concatenate([np.asarray(predict(params, ids[test[i:i + 64]],
                                                  att[test[i:i + 64]]))
                               for i in range(0, len(test), 64)])
        return float(np.mean(pred == labels[test]))

    base_acc = accuracy(model.params)
    rows = []
    # LoRA on query/value, the new classifier trained in full beside it (PEFT's modules_to_save)
    head = masks.mask_from_paths(model.params, include=["classifier/*", "bert/pooler/**"])
    adapters = lora.init(fg.random.key(args.seed), model.params,
                         targets(model, ["query", "value"]), rank=args.rank,
                         alpha=2 * args.rank)
    both = {"adapters": adapters, "head": masks.partition(model.params, head)[0]}

    def lora_loss(tr, frozen, x, a, y):
        params = masks.combine(tr["head"], frozen)
        return loss(tr["adapters"], params, x, a, y, adapted=True)

    both, losses, ms = train(lora_loss, both, model.params, batches, args.steps, args.lr,
                             "LoRA + classifier", args)
    tuned = masks.combine(both["head"], model.params)
    curves[f"classify: LoRA r={args.rank} + classifier"] = losses
    rows.append([f"LoRA r={args.rank} + classifier", masks.count(both), base_acc,
                 accuracy(lora.merge(tuned, both["adapters"])), ms])
    peft_dir = os.path.join(args.out, "lora_classifier")
    lora.save_peft(peft_dir, both["adapters"], model, params=tuned,
                   modules_to_save=["classifier"], base_model_name_or_path=folder)
    params, losses, ms = train(loss, model.params, None, batches, args.steps, args.lr,
                               "classifier only", args, wrt=head)
    curves["classify: classifier only"] = losses
    rows.append(["classifier only", masks.count(model.params, head), base_acc,
                 accuracy(params), ms])
    params, losses, ms = train(loss, model.params, None, batches, args.steps, args.lr / 3,
                               "full", args)
    curves["classify: full"] = losses
    rows.append(["full", masks.count(model.params), base_acc, accuracy(params), ms])
    print_table(rows, ["method", "trainable", "accuracy before", "accuracy after", "step ms"],
                f"sequence classification ({model.architecture}): which module family "
                f"({', '.join(names)}) a docstring is from, {len(test)} held-out docstrings")
    print(f"LoRA adapters and classifier saved in PEFT's format: {peft_dir}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a Hugging Face folder (GPT-2, BERT or Llama family); "
                                    "default: make small ones first")
    ap.add_argument("--task", choices=["lm", "classify", "both"],
                    help="default: from the model (both without --model)")
    ap.add_argument("--text", help="causal LM: the text file to fine-tune on")
    ap.add_argument("--family", default="email", choices=list(FAMILIES),
                    help="without --text: the held-out docstrings to fine-tune on")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--pretrain-steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--new-tokens", type=int, default=24)
    ap.add_argument("--per-class", type=int, default=150, help="classification examples/class")
    ap.add_argument("--d", type=int, default=128, help="own checkpoints: model width")
    ap.add_argument("--layers", type=int, default=2, help="own checkpoints: blocks")
    ap.add_argument("--vocab", type=int, default=2000, help="own checkpoints: BPE vocabulary")
    add_common_args(ap)
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.pretrain_steps, args.batch, args.seq = 6, 10, 4, 32
        args.d, args.vocab, args.per_class, args.new_tokens = 32, 300, 12, 6
    os.makedirs(args.out, exist_ok=True)
    curves = {}
    with tempfile.TemporaryDirectory(prefix="funcgrad-ckpt-") as tmp:
        lm_dir = cls_dir = args.model
        task = args.task
        if args.model is None:
            task = task or "both"
            corpus = collect(PRETRAIN)
            if args.quick:
                corpus = corpus[:200]
            print(f"pretraining own checkpoints on {len(corpus)} standard-library docstrings")
            if task in ("lm", "both"):
                lm_dir = os.path.join(tmp, "tiny-gpt2")
                curves["pretrain GPT-2"] = make_gpt2_checkpoint(lm_dir, corpus, args)
            if task in ("classify", "both"):
                cls_dir = os.path.join(tmp, "tiny-bert")
                curves["pretrain BERT"] = make_bert_checkpoint(cls_dir, corpus, args)
        elif task is None:
            task = "classify" if pretrained.load(args.model).family == "bert" else "lm"
        if task in ("lm", "both"):
            run_lm(lm_dir, args, curves)
        if task in ("classify", "both"):
            run_classify(cls_dir, args, curves)
    save_curves(os.path.join(args.out, "finetune_pretrained.png"), curves,
                title="fine-tuning a pretrained checkpoint", ylabel="training loss")


if __name__ == "__main__":
    main()
