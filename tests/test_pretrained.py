"""funcgrad.models.pretrained and the GPT-2 / BERT / Llama families, against transformers, peft
and torch as oracles, on tiny random models built offline with transformers' config classes and
saved with `save_pretrained` into temporary folders: logits with and without padding,
gradients against torch autograd, the save round trip in both directions, sharded and 16-bit
checkpoints, greedy generation against `generate(do_sample=False)`, reproducible sampling, LoRA
in PEFT's format both ways, tokenizers, and clear errors for bad folders."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the pretrained tests use torch as oracle (dev extra)")
transformers = pytest.importorskip("transformers")

from numeric import GPU_MODE  # noqa: E402

import funcgrad as fg  # noqa: E402
import funcgrad.numpy as fnp  # noqa: E402
from funcgrad import lora, masks  # noqa: E402
from funcgrad import tree_util as tu  # noqa: E402
from funcgrad.io import CheckpointError  # noqa: E402
from funcgrad.models import bert, gpt2, llama, pretrained  # noqa: E402

torch.set_num_threads(1)
transformers.logging.set_verbosity_error()
# On the CuPy simulator (CI's GPU mode) every compiled kernel is built with g++; generation
# compiles a prefill and a decode step per batch shape, minutes there. It runs on the CPU and on
# real GPUs.
SIMULATED = GPU_MODE and os.environ.get("FUNCGRAD_SIMULATE_GPU", "") not in ("", "0")
slow_on_simulator = pytest.mark.skipif(SIMULATED, reason="minutes on the CuPy simulator")
VOCAB = 97
STD = 0.3  # initializer_range: large enough that logits differ visibly between tokens


def tiny(kind):
    """A tiny transformers model of `kind` with random weights (fixed seed)."""
    T = transformers
    torch.manual_seed(0)
    common = dict(vocab_size=VOCAB, initializer_range=STD)
    llama_like = dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=48, max_position_embeddings=128,
                      **common)
    bert_cfg = dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
                    intermediate_size=48, max_position_embeddings=64, **common)
    if kind == "gpt2":
        return T.GPT2LMHeadModel(T.GPT2Config(n_layer=2, n_embd=32, n_head=4, n_positions=64,
                                              bos_token_id=0, eos_token_id=1, **common))
    if kind == "gpt2-untied":
        return T.GPT2LMHeadModel(T.GPT2Config(n_layer=1, n_embd=16, n_head=2, n_positions=32,
                                              tie_word_embeddings=False,
                                              activation_function="gelu", **common))
    if kind == "bert":
        return T.BertModel(T.BertConfig(**bert_cfg))
    if kind == "bert-mlm":
        return T.BertForMaskedLM(T.BertConfig(**bert_cfg))
    if kind == "bert-cls":
        return T.BertForSequenceClassification(T.BertConfig(num_labels=3, **bert_cfg))
    if kind == "llama":
        return T.LlamaForCausalLM(T.LlamaConfig(**llama_like))
    if kind == "llama3-tied":
        return T.LlamaForCausalLM(T.LlamaConfig(
            tie_word_embeddings=True, attention_bias=True,
            rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                             "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                             "original_max_position_embeddings": 16}, **llama_like))
    if kind == "mistral":
        return T.MistralForCausalLM(T.MistralConfig(sliding_window=5, **llama_like))
    if kind == "qwen2":
        return T.Qwen2ForCausalLM(T.Qwen2Config(**llama_like))
    raise ValueError(kind)


KINDS = ["gpt2", "gpt2-untied", "bert", "bert-mlm", "bert-cls", "llama", "llama3-tied",
         "mistral", "qwen2"]
CAUSAL = ["gpt2", "llama", "mistral", "qwen2"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """{kind: (folder, torch model)} saved once for the module."""
    root = tmp_path_factory.mktemp("hf")
    out = {}
    for kind in KINDS:
        m = tiny(kind).eval()
        m.save_pretrained(root / kind)
        out[kind] = (str(root / kind), m)
    return out


def batch(b=3, t=9, seed=0, pad=True):
    """Token ids [b, t] and a left-padding mask (row i has i * 2 padding tokens)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(2, VOCAB, (b, t))
    mask = np.ones((b, t), np.int64)
    if pad:
        for i in range(b):
            mask[i, :2 * i] = 0
    return ids, mask


def torch_out(model, ids, mask=None, **kw):
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids),
                    attention_mask=None if mask is None else torch.tensor(mask), **kw)
    return out[0].numpy()


def close(ours, ref, mask=None, rtol=2e-5, atol=2e-5):
    ours = np.asarray(fg.device_get(ours))
    if mask is not None and ours.ndim == 3:   # padded positions' outputs are not defined
        ours, ref = ours[mask.astype(bool)], ref[mask.astype(bool)]
    scale = np.abs(ref).max()
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=atol * max(scale, 1.0))


# ---------------------------------------------------------------------------------------------
# Forward


@pytest.mark.parametrize("kind", KINDS)
def test_outputs_match_transformers_with_and_without_padding(folders, kind):
    path, ref_model = folders[kind]
    model = pretrained.load(path)
    assert model.architecture == ref_model.config.architectures[0]
    ids, mask = batch()
    close(model.apply(model.params, ids), torch_out(ref_model, ids))
    close(model.apply(model.params, ids, attention_mask=mask), torch_out(ref_model, ids, mask),
          mask)
    if kind.startswith("bert"):
        types = (np.arange(9)[None] >= 5).astype(np.int64).repeat(3, 0)
        close(model.apply(model.params, ids, attention_mask=mask, token_type_ids=types),
              torch_out(ref_model, ids, mask, token_type_ids=torch.tensor(types)), mask)


def test_tree_mirrors_the_checkpoint_names(folders):
    model = pretrained.load(folders["gpt2"][0])
    p = model.params
    assert p["transformer"]["h"][1]["attn"]["c_attn"]["weight"].shape == (32, 96)
    assert "lm_head" not in p                                      # tied: not duplicated
    trainable = masks.mask_from_paths(p, include=["transformer/h/1/**"])
    assert masks.count(p, trainable) == sum(
        v.numel() for k, v in folders["gpt2"][1].named_parameters() if ".h.1." in k)
    assert model.weight_layout("transformer/h/0/attn/c_attn/weight") == "in_out"
    llama_p = pretrained.load(folders["llama"][0]).params
    assert llama_p["model"]["layers"][0]["self_attn"]["k_proj"]["weight"].shape == (16, 32)
    assert "lm_head" in llama_p


# ---------------------------------------------------------------------------------------------
# Gradients


def _torch_grads(ref_model, ids, mask, weights):
    ref_model.zero_grad()
    out = ref_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))[0]
    (out * torch.tensor(weights)).sum().backward()
    return {k: v.grad.numpy() for k, v in ref_model.named_parameters()}


@pytest.mark.parametrize("kind", ["gpt2", "llama", "bert-cls"])
def test_gradients_match_torch_autograd(folders, kind):
    path, ref_model = folders[kind]
    model = pretrained.load(path)
    ids, mask = batch(pad=False)
    out_shape = torch_out(ref_model, ids).shape
    weights = np.random.default_rng(1).normal(size=out_shape).astype(np.float32)

    def loss(params):
        return fnp.sum(model.apply(params, ids, attention_mask=mask) * weights)

    grads = fg.grad(loss)(model.params)
    jitted = fg.jit(fg.grad(loss))(model.params)
    ref = _torch_grads(ref_model, ids, mask, weights)
    ours = {tu.path_to_str(p, "."): g for p, g in tu.tree_flatten_with_path(grads)[0]}
    top = max(np.abs(g).max() for g in ref.values())
    for (name, g), j in zip(ours.items(), tu.tree_leaves(jitted)):
        g, j = np.asarray(fg.device_get(g)), np.asarray(fg.device_get(j))
        atol = 1e-4 * np.abs(ref[name]).max() + 1e-6 * top   # (key biases: exactly 0 + noise)
        np.testing.assert_allclose(j, g, rtol=1e-4, atol=atol, err_msg=name)
        np.testing.assert_allclose(g, ref[name], rtol=1e-3, atol=atol, err_msg=name)
    assert set(ours) == set(ref) - set(model.family_module.tied(model.config))


def test_training_mode_dropout_uses_the_key(folders):
    model = pretrained.load(folders["bert-cls"][0])
    ids, mask = batch()
    f = lambda k: np.asarray(fg.device_get(model.apply(   # noqa: E731
        model.params, ids, attention_mask=mask, training=True, key=k)))
    a, b, c = f(fg.random.key(0)), f(fg.random.key(0)), f(fg.random.key(1))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-4
    evaluated = np.asarray(fg.device_get(model.apply(model.params, ids, attention_mask=mask)))
    assert np.abs(a - evaluated).max() > 1e-4


# ---------------------------------------------------------------------------------------------
# Saving


@pytest.mark.parametrize("kind", ["gpt2", "bert-mlm", "llama3-tied", "qwen2"])
def test_save_round_trip_through_transformers(folders, kind, tmp_path):
    path, ref_model = folders[kind]
    model = pretrained.load(path)
    params = tu.tree_map(lambda x: x * 1.5, model.params)        # not the file's weights
    pretrained.save(tmp_path, model, params)
    cls = getattr(transformers, model.architecture)
    back = cls.from_pretrained(tmp_path).eval()
    ids, mask = batch()
    close(model.apply(params, ids, attention_mask=mask), torch_out(back, ids, mask), mask)
    again = pretrained.load(tmp_path)
    for a, b in zip(tu.tree_leaves(again.params), tu.tree_leaves(params)):
        np.testing.assert_array_equal(np.asarray(fg.device_get(a)), np.asarray(fg.device_get(b)))
    assert json.load(open(tmp_path / "config.json"))["architectures"] == [model.architecture]


def test_funcgrad_initialized_models_load_in_transformers(tmp_path):
    for i, cfg in enumerate([
            gpt2.default_config(n_layer=1, n_embd=16, n_head=2, n_positions=16, vocab_size=50),
            bert.default_config(num_hidden_layers=1, hidden_size=16, num_attention_heads=2,
                                intermediate_size=24, vocab_size=50,
                                architectures=["BertForSequenceClassification"], num_labels=4),
            llama.default_config("mistral", num_hidden_layers=1, hidden_size=16,
                                 num_attention_heads=4, num_key_value_heads=1,
                                 intermediate_size=24, vocab_size=50, sliding_window=3)]):
        model = pretrained.from_config(cfg, fg.random.key(i))
        pretrained.save(tmp_path / str(i), model, model.params)
        back = getattr(transformers, model.architecture).from_pretrained(tmp_path / str(i))
        ids, mask = batch(2, 6, pad=True)
        ids = ids % 50
        close(model.apply(model.params, ids, attention_mask=mask),
              torch_out(back.eval(), ids, mask), mask)


def test_sharded_checkpoints_both_ways(folders, tmp_path):
    path, ref_model = folders["llama"]
    ref_model.save_pretrained(tmp_path / "hf", max_shard_size="20KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").exists()
    model = pretrained.load(tmp_path / "hf")
    ids, mask = batch()
    close(model.apply(model.params, ids, attention_mask=mask), torch_out(ref_model, ids, mask),
          mask)
    pretrained.save(tmp_path / "ours", model, model.params, max_shard_size="30KB")
    files = sorted(os.listdir(tmp_path / "ours"))
    shards = [f for f in files if f.startswith("model-")]
    assert len(shards) > 2 and "model.safetensors.index.json" in files
    back = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "ours").eval()
    close(model.apply(model.params, ids, attention_mask=mask), torch_out(back, ids, mask), mask)
    pretrained.save(tmp_path / "ours", model, model.params)       # unsharded: old shards go
    assert sorted(os.listdir(tmp_path / "ours")) == ["config.json", "model.safetensors"]


def test_bfloat16_and_float16_checkpoints(folders, tmp_path):
    import ml_dtypes
    path, ref_model = folders["gpt2"]
    bf = tiny("gpt2").to(torch.bfloat16)
    bf.save_pretrained(tmp_path / "bf16")
    model = pretrained.load(tmp_path / "bf16")
    leaves = tu.tree_leaves(model.params)
    assert all(x.dtype == np.float32 for x in leaves)               # computed in float32
    assert model.save_dtype == np.dtype(ml_dtypes.bfloat16)
    ids, mask = batch()
    close(model.apply(model.params, ids, attention_mask=mask),
          torch_out(bf.float().eval(), ids, mask), mask)            # the same bf16 weights
    pretrained.save(tmp_path / "again", model, model.params)        # written back as bf16
    from safetensors import safe_open
    with safe_open(str(tmp_path / "again" / "model.safetensors"), "np") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "again")
    for (k, v), (_, w) in zip(back.state_dict().items(), bf.state_dict().items()):
        assert v.dtype == torch.bfloat16 and torch.equal(v, w), k
    half = pretrained.load(path, dtype=np.float16)
    assert all(x.dtype == np.float16 for x in tu.tree_leaves(half.params))
    out = np.asarray(fg.device_get(half.apply(half.params, ids, attention_mask=mask)))
    assert out.dtype == np.float16
    close(out.astype(np.float32), torch_out(ref_model, ids, mask), mask, rtol=0.05, atol=0.02)
    pretrained.save(tmp_path / "half", half, half.params)
    assert json.load(open(tmp_path / "half" / "config.json"))["dtype"] == "float16"
    if fg.default_backend() == "gpu":
        return  # CuPy has no bfloat16 arrays: loading in bfloat16 is for the CPU
    bf_model = pretrained.load(tmp_path / "bf16", dtype="bfloat16")    # computed in bfloat16
    assert all(x.dtype == np.dtype(ml_dtypes.bfloat16) for x in tu.tree_leaves(bf_model.params))
    out = np.asarray(fg.device_get(bf_model.apply(bf_model.params, ids, attention_mask=mask)))
    assert out.dtype == np.dtype(ml_dtypes.bfloat16)
    close(out.astype(np.float32), torch_out(bf.float().eval(), ids, mask), mask, rtol=0.05,
          atol=0.05)


# ---------------------------------------------------------------------------------------------
# Generation


@slow_on_simulator
@pytest.mark.parametrize("kind", CAUSAL)
def test_greedy_generation_matches_transformers(folders, kind):
    path, ref_model = folders[kind]
    model = pretrained.load(path)
    ids, mask = batch(3, 7)
    ids = np.where(mask == 1, ids, 1)
    out = pretrained.generate(model, model.params, ids, 10, attention_mask=mask)
    with torch.no_grad():
        ref = ref_model.generate(torch.tensor(ids), attention_mask=torch.tensor(mask),
                                 max_new_tokens=10, do_sample=False, pad_token_id=1,
                                 eos_token_id=None).numpy()
    np.testing.assert_array_equal(out, ref)
    step = model.generate_fns[(0.0, None, None)][1]
    assert step._cache_size() == 1          # one compiled decode step served every position
    single = pretrained.generate(model, model.params, ids[0], 10)      # 1-D in, 1-D out
    np.testing.assert_array_equal(single, ref[0])


@slow_on_simulator
def test_generation_stops_at_eos_like_transformers(folders):
    path, ref_model = folders["gpt2"]
    model = pretrained.load(path)
    ids, mask = batch(3, 5)
    ids = np.where(mask == 1, ids, 1)
    free = pretrained.generate(model, model.params, ids, 12, attention_mask=mask)
    eos = int(free[0, 7])                  # a token row 0 emits: it finishes there
    out = pretrained.generate(model, model.params, ids, 12, attention_mask=mask,
                              eos_token_id=eos)
    with torch.no_grad():
        ref = ref_model.generate(torch.tensor(ids), attention_mask=torch.tensor(mask),
                                 max_new_tokens=12, do_sample=False, eos_token_id=eos,
                                 pad_token_id=eos).numpy()
    np.testing.assert_array_equal(out, ref)
    assert (out[0, 8:] == eos).all()


@slow_on_simulator
def test_sampling_is_reproducible_from_the_key(folders):
    model = pretrained.load(folders["llama"][0])
    ids, mask = batch(2, 6)
    kw = dict(attention_mask=mask, temperature=0.9, top_k=20, top_p=0.9)
    a = pretrained.generate(model, model.params, ids, 8, key=fg.random.key(3), **kw)
    b = pretrained.generate(model, model.params, ids, 8, key=fg.random.key(3), **kw)
    c = pretrained.generate(model, model.params, ids, 8, key=fg.random.key(4), **kw)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()
    greedy = pretrained.generate(model, model.params, ids, 8, attention_mask=mask)
    top1 = pretrained.generate(model, model.params, ids, 8, attention_mask=mask,
                               temperature=1.0, top_k=1, key=fg.random.key(0))
    np.testing.assert_array_equal(top1, greedy)
    tiny_p = pretrained.generate(model, model.params, ids, 8, attention_mask=mask,
                                 temperature=1.0, top_p=1e-6, key=fg.random.key(0))
    np.testing.assert_array_equal(tiny_p, greedy)        # only the most likely token is left
    with pytest.raises(ValueError, match="key"):
        pretrained.generate(model, model.params, ids, 2, temperature=1.0)
    with pytest.raises(ValueError, match="pad them on the left"):
        pretrained.generate(model, model.params, ids, 2, attention_mask=mask[:, ::-1])
    with pytest.raises(ValueError, match="causal language model"):
        bert_model = pretrained.load(folders["bert"][0])
        pretrained.generate(bert_model, bert_model.params, ids, 2)


# ---------------------------------------------------------------------------------------------
# LoRA in PEFT's format


def _perturbed(adapters, seed=0):
    rng = np.random.default_rng(seed)
    return tu.tree_map(lambda x: fnp.add(x, 0.2 * rng.normal(size=x.shape).astype(x.dtype)),
                       adapters)


@pytest.mark.parametrize("kind,targets", [
    ("gpt2", ["transformer/h/*/attn/c_attn/weight", "transformer/h/1/mlp/c_fc/weight"]),
    ("llama", ["model/layers/*/self_attn/q_proj/weight", "model/layers/*/self_attn/v_proj/weight"]),
    ("bert-cls", ["bert/encoder/layer/*/attention/self/query/weight"]),
])
def test_adapters_saved_by_funcgrad_load_in_peft(folders, kind, targets, tmp_path):
    peft = pytest.importorskip("peft")
    path, _ = folders[kind]
    model = pretrained.load(path)
    adapters = _perturbed(lora.init(fg.random.key(0), model.params,
                                    masks.mask_from_paths(model.params, include=targets),
                                    rank=4, alpha=8))
    ids, mask = batch()
    ours = lora.apply(model.apply)(model.params, adapters, ids, attention_mask=mask)
    merged = model.apply(lora.merge(model.params, adapters), ids, attention_mask=mask)
    close(ours, np.asarray(fg.device_get(merged)), mask)         # low-rank path == merged W
    lora.save_peft(tmp_path, adapters, model)
    cfg = json.load(open(tmp_path / "adapter_config.json"))
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 4 and cfg["lora_alpha"] == 8
    assert cfg["fan_in_fan_out"] == (kind == "gpt2")
    base = getattr(transformers, model.architecture).from_pretrained(path)
    peft_model = peft.PeftModel.from_pretrained(base, tmp_path).eval()
    close(ours, torch_out(peft_model, ids, mask), mask)
    if kind == "bert-cls":             # PEFT's classifier travels with the adapters
        back, params = lora.load_peft(tmp_path, model, return_params=True)
    else:
        back, params = lora.load_peft(tmp_path, model), model.params
    close(lora.apply(model.apply)(params, back, ids, attention_mask=mask),
          np.asarray(fg.device_get(ours)), mask)


@pytest.mark.parametrize("kind,targets", [("gpt2", ["c_attn", "c_proj"]),
                                          ("llama", ["q_proj", "k_proj", "down_proj"]),
                                          ("bert-cls", ["query", "value"])])
def test_adapters_saved_by_peft_load_in_funcgrad(folders, kind, targets, tmp_path):
    peft = pytest.importorskip("peft")
    path, ref_model = folders[kind]
    base = type(ref_model).from_pretrained(path)
    torch.manual_seed(1)
    peft_model = peft.get_peft_model(base, peft.LoraConfig(
        r=3, lora_alpha=5, target_modules=targets, init_lora_weights=False,
        fan_in_fan_out=kind == "gpt2", rank_pattern={"k_proj": 2} if kind == "llama" else {},
        alpha_pattern={"k_proj": 7} if kind == "llama" else {},
        task_type="SEQ_CLS" if kind == "bert-cls" else None))
    if kind == "bert-cls":
        with torch.no_grad():
            peft_model.base_model.model.classifier.modules_to_save["default"].weight.mul_(3)
    peft_model.save_pretrained(tmp_path)
    ids, mask = batch()
    ref = torch_out(peft_model.eval(), ids, mask)
    model = pretrained.load(path)
    if kind == "bert-cls":
        with pytest.raises(CheckpointError, match="return_params=True"):
            lora.load_peft(tmp_path, model)
        adapters, params = lora.load_peft(tmp_path, model, return_params=True)
    else:
        adapters, params = lora.load_peft(tmp_path, model), model.params
    close(lora.apply(model.apply)(params, adapters, ids, attention_mask=mask), ref, mask)
    merged = lora.merge(params, adapters)             # merged weights as a full checkpoint
    pretrained.save(tmp_path / "merged", model, merged)
    back = getattr(transformers, model.architecture).from_pretrained(tmp_path / "merged")
    close(torch_out(back.eval(), ids, mask), ref, mask)


def test_lora_gradients_are_the_same_on_both_paths(folders):
    model = pretrained.load(folders["gpt2"][0])
    mask = masks.mask_from_paths(model.params, include=["transformer/h/*/attn/c_attn/weight"])
    adapters = _perturbed(lora.init(0, model.params, mask, rank=2))
    ids, _ = batch(2, 5, pad=False)

    def loss(apply):
        return lambda ad: fnp.sum(fnp.sin(apply(model.params, ad, ids)))

    native = fg.jit(fg.grad(loss(lora.apply(model.apply))))(adapters)
    generic = fg.grad(loss(lambda p, ad, x: model.apply(lora.merge(p, ad), x)))(adapters)
    for a, b in zip(tu.tree_leaves(native), tu.tree_leaves(generic)):
        np.testing.assert_allclose(np.asarray(fg.device_get(a)), np.asarray(fg.device_get(b)),
                                   rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Architectures, tokenizers, errors


def test_switching_heads_keeps_the_body_and_initializes_the_new_head(folders):
    path, mlm = folders["bert-mlm"]
    model = pretrained.load(path, architecture="BertForSequenceClassification",
                            config_updates={"num_labels": 5}, key=fg.random.key(0))
    assert model.params["classifier"]["weight"].shape == (5, 32)
    assert "cls" not in model.params
    ref = transformers.BertForSequenceClassification.from_pretrained(path, num_labels=5)
    for name, w in ref.bert.state_dict().items():
        if not name.startswith("pooler"):
            node = model.params["bert"]
            for part in name.split("."):
                node = node[int(part)] if part.isdigit() else node[part]
            np.testing.assert_array_equal(np.asarray(fg.device_get(node)), w.numpy())
    with pytest.raises(ValueError, match="key="):
        pretrained.load(path, architecture="BertForSequenceClassification")


def test_tokenizer_trained_locally(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    texts = ["the quick brown fox jumps over the lazy dog", "pure functions of arrays",
             "a tokenizer trained on a few sentences", "the dog sleeps"] * 5
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.decoder = tokenizers.decoders.BPEDecoder()
    tok.train_from_iterator(texts, tokenizers.trainers.BpeTrainer(
        vocab_size=120, special_tokens=["<pad>", "<unk>", "<eos>"], end_of_word_suffix="</w>"))
    pretrained.Tokenizer(tok, pad_token="<pad>", eos_token="<eos>").save(tmp_path)
    ours = pretrained.load_tokenizer(tmp_path)
    assert ours.pad_token_id == 0 and ours.eos_token_id == 2 and len(ours) == ours.vocab_size
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    batch_texts = ["the lazy fox", "pure functions of the dog jumps", "dog"]
    for side in ("right", "left"):
        enc = ours(batch_texts, padding=True, padding_side=side)
        hf.padding_side = side
        ref = hf(batch_texts, padding=True, return_tensors="np")
        np.testing.assert_array_equal(enc["input_ids"], ref["input_ids"])
        np.testing.assert_array_equal(enc["attention_mask"], ref["attention_mask"])
    hf.padding_side = "right"
    enc = ours(batch_texts, padding="max_length", truncation=True, max_length=4)
    ref = hf(batch_texts, padding="max_length", truncation=True, max_length=4,
             return_tensors="np")
    np.testing.assert_array_equal(enc["input_ids"], ref["input_ids"])
    assert ours.decode(ours("the lazy fox")["input_ids"][0]) == "the lazy fox"
    assert ours.batch_decode(enc["input_ids"]) == hf.batch_decode(ref["input_ids"],
                                                                  skip_special_tokens=True)
    with pytest.raises(ValueError, match="padding=True"):
        ours(batch_texts)


def _write(folder, config=None, tensors=None, **files):
    folder.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    if tensors is not None:
        fg.io.write_safetensors(folder / "model.safetensors", tensors)
    for name, text in files.items():
        (folder / name.replace("__", ".")).write_text(text)
    return folder


def test_bad_folders_get_clear_errors(folders, tmp_path):
    path, _ = folders["gpt2"]
    cfg = json.load(open(os.path.join(path, "config.json")))
    good = fg.io.load_safetensors(os.path.join(path, "model.safetensors"))
    with pytest.raises(CheckpointError, match="not a folder"):
        pretrained.load(tmp_path / "nothing")
    with pytest.raises(CheckpointError, match="config.json: missing"):
        pretrained.load(_write(tmp_path / "a", tensors=good))
    with pytest.raises(CheckpointError, match="model_type 't5'.*supported model types"):
        pretrained.load(_write(tmp_path / "b", dict(cfg, model_type="t5"), good))
    with pytest.raises(CheckpointError, match="GPT2ForTokenClassification.*GPT2LMHeadModel"):
        pretrained.load(_write(tmp_path / "c", dict(cfg, architectures=[
            "GPT2ForTokenClassification"]), good))
    missing = {k: v for k, v in good.items() if "h.1.mlp.c_fc.bias" not in k}
    with pytest.raises(CheckpointError, match="'transformer.h.1.mlp.c_fc.bias'.*missing"):
        pretrained.load(_write(tmp_path / "d", cfg, missing))
    with pytest.raises(CheckpointError, match="unexpected tensor 'transformer.h.1.*layer count"):
        pretrained.load(_write(tmp_path / "e", dict(cfg, n_layer=1), good))
    with pytest.raises(CheckpointError, match=r"'transformer.wte.weight' has shape \(97, 32\) "
                                              r"in the file but \(98, 32\)"):
        pretrained.load(_write(tmp_path / "f", dict(cfg, vocab_size=98), good))
    with pytest.raises(CheckpointError, match="never unpickles"):
        pretrained.load(_write(tmp_path / "g", cfg, pytorch_model__bin="not read"))
    with pytest.raises(CheckpointError, match="not readable JSON"):
        pretrained.load(_write(tmp_path / "h", tensors=good, config__json="{oops"))
    index = {"weight_map": {k: "model-00001-of-00002.safetensors" for k in good}}
    with pytest.raises(CheckpointError, match="model-00001-of-00002.safetensors: missing"):
        pretrained.load(_write(tmp_path / "i", cfg, model__safetensors__index__json=json.dumps(
            index)))
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "model.safetensors").write_bytes(b"\x10\x00\x00\x00garbage")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        pretrained.load(_write(tmp_path / "j", cfg))
    model = pretrained.load(path)
    with pytest.raises(ValueError, match=r"input_ids .* \[batch, length\].*ids\[None\]"):
        model.apply(model.params, np.arange(5))
    with pytest.raises(ValueError, match="exceed the model's 64 positions"):
        model.apply(model.params, np.zeros((1, 65), np.int32))
    with pytest.raises(ValueError, match="not adapters"):
        pretrained.save(tmp_path / "k", model, {"transformer": {"oops": np.zeros(3)}})
    with pytest.raises(CheckpointError, match="peft_type"):
        lora.load_peft(_write(tmp_path / "l", adapter_config__json='{"peft_type": "IA3"}'),
                       model)
