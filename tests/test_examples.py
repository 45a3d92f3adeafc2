"""The examples run end to end on their --quick settings, as a user would run them (a fresh
process each, from the repository root), print their tables and save their plots."""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="examples need the 'examples' extra (matplotlib)")
pytest.importorskip("tqdm", reason="examples need the 'examples' extra (tqdm)")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "examples"))
                  if f.endswith(".py") and not f.startswith("_"))


def run(name, *args, timeout=120):
    path = os.path.join(ROOT, "examples", f"{name}.py")
    env = dict(os.environ, MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, path, *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=timeout)
    assert proc.returncode == 0, f"{name} {args} failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return proc.stdout


@pytest.mark.parametrize("name", EXAMPLES)
def test_help(name):
    out = run(name, "--help")
    assert "--quick" in out and "--out" in out


def test_every_example_is_listed_here_and_in_the_readme():
    assert len(EXAMPLES) == 9 and {name for name, _, _ in QUICK} == set(EXAMPLES)
    readme = open(os.path.join(ROOT, "README.md")).read()
    for name in EXAMPLES:
        assert f"examples/{name}.py" in readme, name


QUICK = [
    ("demo", ["demo.png"], ["Gradient descent on sin(2x)", "{ lambda"]),
    ("data_parallel", ["data_parallel.png"], ["processes", "final loss"]),
    ("digits_finetune", ["digits_finetune.png"], ["head only", "full", "LoRA"]),
    ("char_transformer", ["char_transformer.png"],
     ["samples before fine-tuning", "samples after LoRA", "ppl email", "LoRA r=", "head only"]),
    ("per_example_grads", ["per_example_grads.png"], ["DP-SGD", "max abs difference"]),
    ("newton_logistic", ["newton_logistic.png"], ["Newton", "gradient descent"]),
    ("adversarial", ["adversarial.png", "adversarial_loss.png"], ["FGSM"]),
    ("compress", ["compress.png"], ["Post-training quantization", "int8 per channel", "NF4",
                                    "Global magnitude pruning", "measured sparsity"]),
    ("finetune_pretrained", ["finetune_pretrained.png", "lora_adapters/adapter_model.safetensors",
                             "lora_classifier/adapter_model.safetensors"],
     ["ppl before", "LoRA r=", "head only", "samples after LoRA", "accuracy after",
      "classifier only"]),
]


@pytest.mark.parametrize("name,plots,expect", QUICK, ids=[q[0] for q in QUICK])
def test_quick_run(name, plots, expect, tmp_path):
    out = run(name, "--quick", "--quiet", "--out", str(tmp_path))
    assert "| " in out  # a Markdown result table
    for word in expect:
        assert word in out
    for plot in plots:
        assert (tmp_path / plot).stat().st_size > 1000


def _write_idx(path, array):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I",
                                                                    *array.shape)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_digits_reads_mnist_idx(tmp_path):
    """--mnist DIR reads IDX files (plain and gzipped), here tiny fake ones of 28x28 images."""
    rng = np.random.default_rng(0)
    for split, n, suffix in (("train", 60, ""), ("t10k", 30, ".gz")):
        labels = np.arange(n) % 10
        images = rng.integers(0, 40, (n, 28, 28))
        for i, d in enumerate(labels):  # a bright bar whose position is the digit: learnable
            images[i, 2 * d:2 * d + 3, 4:24] = 255
        _write_idx(str(tmp_path / f"{split}-images-idx3-ubyte{suffix}"), images)
        _write_idx(str(tmp_path / f"{split}-labels-idx1-ubyte{suffix}"), labels)
    out = run("digits_finetune", "--quick", "--quiet", "--models", "mlp", "--mnist", str(tmp_path),
              "--out",
              str(tmp_path / "out"))
    assert "60 train / 30 test images of shape (28, 28, 1)" in out
    assert "LoRA" in out and (tmp_path / "out" / "digits_finetune.png").exists()


def test_finetune_pretrained_reads_a_transformers_folder(tmp_path):
    """--model DIR --text FILE on a folder as transformers and tokenizers write it."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    text = "\n".join(f"line {i}: the value of x is {i * 7 % 13} and y is {i % 5}."
                     for i in range(300))
    (tmp_path / "train.txt").write_text(text)
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    tok.train_from_iterator([text], tokenizers.trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"],
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet()))
    model_dir = tmp_path / "model"
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=1, n_embd=32, n_head=2, n_positions=64, vocab_size=tok.get_vocab_size(),
        bos_token_id=0, eos_token_id=0)).save_pretrained(model_dir)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                                pad_token="<|endoftext|>")
    fast.save_pretrained(model_dir)
    out = run("finetune_pretrained", "--quick", "--quiet", "--model", str(model_dir), "--text",
              str(tmp_path / "train.txt"), "--out", str(tmp_path / "out"))
    assert "fine-tuned on train.txt" in out and "ppl after" in out and "accuracy" not in out
    assert (tmp_path / "out" / "lora_adapters" / "adapter_config.json").exists()


def test_tables_use_fixed_decimals_per_column(capsys):
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    try:
        from _util import print_table
    finally:
        sys.path.pop(0)
    print_table([["a", 0.9412, 12.5, 1.2e-9], ["bb", 0.98, 3.25, 0.01]],
                ["name", "acc", "ms", "gap"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "| a    | 0.9412 | 12.50 | 1.20e-09 |"
    assert lines[3] == "| bb   | 0.9800 |  3.25 | 1.00e-02 |"
    assert lines[1] == "|------|-------:|------:|---------:|"  # numbers right-aligned


def test_progress_bars_do_not_redraw_on_every_update():
    """tqdm's set_postfix redraws at once unless refresh=False: with a loss shown every step
    that is a redraw per step (and a bar stuck at its first percentage)."""
    for name in EXAMPLES:
        src = open(os.path.join(ROOT, "examples", f"{name}.py")).read()
        for call in src.split("set_postfix(")[1:]:
            assert "refresh=False" in call.split(")")[0] + ")", (name, call[:60])
