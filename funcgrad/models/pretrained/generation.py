"""Text generation with a key/value cache: `generate`, one jitted prefill and one compiled
decode step per sampling setting (`generate_fns`, cached on the model)."""

from __future__ import annotations

import numpy as np

from ... import numpy as fnp
from ... import random
from ... import tree_util as tu
from ...transforms.jit import jit
from .checkpoint import host_array
from .model import FAMILIES, is_float


def bucket(n, size=32):
    return -(-n // size) * size


def _choose(logits, key, temperature, top_k, top_p):
    """The next token [B] from the last logits [B, V]: argmax when temperature is 0, else a
    sample from softmax(logits / temperature) restricted to the top_k tokens and to the smallest
    set whose probability reaches top_p (Hugging Face's warpers, in that order)."""
    from ... import lax, nn
    if temperature == 0:
        return fnp.argmax(logits, axis=-1).astype(np.int32)
    logits = logits.astype(np.float32) / temperature
    vocab = logits.shape[-1]
    if top_k is not None and top_k < vocab:
        kth = lax.top_k(logits, top_k)[0][:, -1:]
        logits = fnp.where(logits < kth, -np.inf, logits)
    if top_p is not None and top_p < 1.0:
        desc = -fnp.sort(-logits, axis=-1)
        probs = nn.softmax(desc, axis=-1)
        before = fnp.cumsum(probs, axis=-1) - probs          # probability of better tokens
        keep = fnp.logical_or(before < top_p, lax.iota(np.int32, (vocab,))[None] == 0)
        threshold = fnp.min(fnp.where(keep, desc, np.inf), axis=-1, keepdims=True)
        logits = fnp.where(logits < threshold, -np.inf, logits)
    return random.categorical(key, logits, axis=-1).astype(np.int32)


def generate_fns(model, temperature, top_k, top_p):
    """The jitted prefill and decode step for these sampling settings (cached on the model)."""
    spec = (float(temperature), top_k, top_p)
    if spec in model.generate_fns:
        return model.generate_fns[spec]
    family, config = model.family_module, model.config

    def prefill(params, ids, mask, positions, cache, key):
        logits, cache = family.apply(params, ids, config=config, attention_mask=mask,
                                     position_ids=positions, cache=cache, cache_index=0)
        return _choose(logits[:, -1], key, *spec), cache

    def step(params, cache, token, index, mask, positions, key):
        logits, cache = family.apply(params, token[:, None], config=config, attention_mask=mask,
                                     position_ids=positions, cache=cache, cache_index=index)
        return _choose(logits[:, -1], key, *spec), cache

    fns = model.generate_fns[spec] = (jit(prefill), jit(step))
    return fns


def generate(model, params, input_ids, max_new_tokens, *, temperature=0.0, top_k=None,
             top_p=None, key=None, eos_token_id=None, attention_mask=None, pad_token_id=None):
    """The prompt followed by up to `max_new_tokens` new tokens, an integer array
    [batch, prompt + new] (1-D in, 1-D out).

    Greedy when `temperature` is 0 (the same tokens as transformers'
    `generate(do_sample=False)`); otherwise sampled from softmax(logits / temperature) after
    the top_k / top_p filters, reproducibly from `key` (`fg.random.key(seed)`). A batch of
    prompts of different lengths is padded on the left, with `attention_mask` 0 at the padding
    (positions count real tokens only, as transformers does). After a row emits
    `eos_token_id` it continues with `pad_token_id` (default: the eos token) and generation
    stops once every row has finished, so the result may be shorter.

    One jitted prefill writes the prompt into a fixed-size key/value cache; then one jitted
    decode step per token reuses a single compiled program (its shapes never change; the cache
    length is rounded up to a multiple of 32 so nearby lengths share it too)."""
    if not model.is_causal_lm:
        raise ValueError(f"pretrained.generate: {model.architecture} is not a causal language "
                         "model (generate needs one of "
                         f"{[a for f in FAMILIES for a in f.CAUSAL_LM]})")
    if temperature < 0:
        raise ValueError(f"pretrained.generate: temperature must be >= 0, got {temperature}")
    if temperature > 0 and key is None:
        raise ValueError("pretrained.generate: sampling (temperature > 0) needs key="
                         "fg.random.key(seed)")
    if top_k is not None and top_k < 1:
        raise ValueError(f"pretrained.generate: top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"pretrained.generate: top_p must be in (0, 1], got {top_p}")
    ids = np.asarray(host_array(input_ids))
    squeeze = ids.ndim == 1
    if squeeze:
        ids = ids[None]
    if ids.ndim != 2 or ids.dtype.kind not in "iu" or ids.shape[1] == 0:
        raise ValueError(f"pretrained.generate: input_ids must be a non-empty integer array "
                         f"[batch, prompt], got {ids.dtype} {ids.shape}")
    b, p = ids.shape
    mask = np.ones((b, p), np.int32) if attention_mask is None else \
        np.asarray(host_array(attention_mask)).astype(np.int32).reshape(b, p)
    if not mask[:, -1].all():
        raise ValueError("pretrained.generate: the prompts are padded on the right (attention_mask "
                         "is 0 at the end of a row); pad them on the left, e.g. "
                         "tok(texts, padding=True, padding_side='left')")
    limit = model.config.get("n_positions") if model.family == "gpt2" else None
    if limit is not None and p + max_new_tokens > limit:
        raise ValueError(f"pretrained.generate: prompt {p} + {max_new_tokens} new tokens exceed "
                         f"the model's {limit} positions (n_positions)")
    if max_new_tokens <= 0:
        return ids[0] if squeeze else ids
    length = bucket(p + max_new_tokens)
    full_mask = np.zeros((b, length), np.int32)
    full_mask[:, :p] = mask
    full_mask[:, p:] = 1
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0).astype(np.int32)
    next_pos = positions[:, -1:] + 1
    eos = None if eos_token_id is None else np.atleast_1d(eos_token_id)
    pad = pad_token_id if pad_token_id is not None else (None if eos is None else int(eos[0]))
    keys = random.split(key if key is not None else random.key(0), max_new_tokens)

    prefill, step = generate_fns(model, temperature, top_k, top_p)
    dtype = next((x.dtype for x in tu.tree_leaves(params) if is_float(x.dtype)), np.float32)
    cache = model.family_module.init_cache(model.config, b, length, dtype)
    token, cache = prefill(params, ids.astype(np.int32), full_mask, positions, cache, keys[0])
    out = [ids]
    done = np.zeros(b, bool)
    for i in range(max_new_tokens):
        tok = np.asarray(host_array(token)).astype(ids.dtype)
        if eos is not None:
            tok = np.where(done, pad, tok)
            done |= np.isin(tok, eos)
        out.append(tok[:, None])
        if i == max_new_tokens - 1 or (eos is not None and done.all()):
            break
        token, cache = step(params, cache, tok.astype(np.int32), np.int32(p + i), full_mask,
                            (next_pos + i).astype(np.int32), keys[i + 1])
    result = np.concatenate(out, axis=1)
    return result[0] if squeeze else result

