"""Hugging Face tokenizers: `Tokenizer` and `load_tokenizer` (via the `tokenizers` library)."""

from __future__ import annotations

import json
import os

import numpy as np

from ... import io
from ...io import CheckpointError
from .checkpoint import host_array, read_json


class Tokenizer:
    """A Hugging Face `tokenizer.json` (via the `tokenizers` library) with the special tokens
    of `tokenizer_config.json`: `tok(texts, padding=True, truncation=True, max_length=128)`
    gives {"input_ids", "attention_mask"} as int32 arrays [batch, length]; `decode(ids)` and
    `batch_decode` turn ids back into text."""

    def __init__(self, tokenizer, *, pad_token=None, eos_token=None, bos_token=None,
                 unk_token=None, padding_side="right", model_max_length=None):
        self.tokenizer = tokenizer
        self.pad_token, self.eos_token = pad_token, eos_token
        self.bos_token, self.unk_token = bos_token, unk_token
        if padding_side not in ("left", "right"):
            raise ValueError(f"Tokenizer: padding_side must be 'left' or 'right', got "
                             f"{padding_side!r}")
        self.padding_side = padding_side
        self.model_max_length = model_max_length

    def _id(self, token):
        return None if token is None else self.tokenizer.token_to_id(token)

    @property
    def pad_token_id(self):
        return self._id(self.pad_token)

    @property
    def eos_token_id(self):
        return self._id(self.eos_token)

    @property
    def bos_token_id(self):
        return self._id(self.bos_token)

    @property
    def vocab_size(self):
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def __len__(self):
        return self.vocab_size

    def encode(self, text, add_special_tokens=True):
        """The token ids (a list of ints) of one text."""
        return list(self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids)

    def __call__(self, texts, *, padding=False, truncation=False, max_length=None,
                 padding_side=None, add_special_tokens=True):
        """{"input_ids", "attention_mask"}: int32 arrays [batch, length] for a text or a list
        of texts. padding: False (all texts must then have the same length), True / "longest",
        or "max_length"; truncation cuts to `max_length` (default `model_max_length`);
        padding_side defaults to the tokenizer's ("left" for generation with a batch)."""
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        if max_length is None and truncation:
            max_length = self.model_max_length
        if truncation and max_length is None:
            raise ValueError("Tokenizer: truncation needs max_length (the tokenizer has no "
                             "model_max_length)")
        seqs = [self.encode(t, add_special_tokens) for t in texts]
        if truncation:
            seqs = [s[:max_length] for s in seqs]
        lengths = [len(s) for s in seqs]
        if padding in (True, "longest"):
            width = max(lengths)
        elif padding == "max_length":
            if max_length is None:
                raise ValueError("Tokenizer: padding='max_length' needs max_length")
            width = max(max_length, max(lengths))
        elif padding in (False, None, "do_not_pad"):
            if len(set(lengths)) > 1:
                raise ValueError(f"Tokenizer: the texts have different lengths {lengths}; pass "
                                 "padding=True to pad them into one array")
            width = lengths[0]
        else:
            raise ValueError(f"Tokenizer: padding must be True, False, 'longest' or "
                             f"'max_length', got {padding!r}")
        if width > min(lengths) and self.pad_token_id is None:
            raise ValueError("Tokenizer: padding needs a pad token; set tok.pad_token (e.g. to "
                             "tok.eos_token, as is usual for GPT-2)")
        side = padding_side or self.padding_side
        ids = np.full((len(seqs), width), self.pad_token_id or 0, np.int32)
        mask = np.zeros((len(seqs), width), np.int32)
        for i, s in enumerate(seqs):
            sl = slice(width - len(s), width) if side == "left" else slice(0, len(s))
            ids[i, sl] = s
            mask[i, sl] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def decode(self, ids, skip_special_tokens=True):
        """The text of one sequence of ids."""
        ids = [int(i) for i in np.asarray(host_array(ids)).reshape(-1)]
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def batch_decode(self, ids, skip_special_tokens=True):
        return [self.decode(row, skip_special_tokens) for row in np.asarray(host_array(ids))]

    def save(self, path):
        """Write `tokenizer.json` and `tokenizer_config.json` into the folder `path`."""
        folder = os.fspath(path)
        os.makedirs(folder, exist_ok=True)
        io.atomic_write(os.path.join(folder, "tokenizer.json"),
                        self.tokenizer.to_str().encode("utf-8"))
        cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "padding_side": self.padding_side}
        for name in ("pad_token", "eos_token", "bos_token", "unk_token"):
            if getattr(self, name) is not None:
                cfg[name] = getattr(self, name)
        if self.model_max_length is not None:
            cfg["model_max_length"] = self.model_max_length
        io.atomic_write(os.path.join(folder, "tokenizer_config.json"),
                        (json.dumps(cfg, indent=2) + "\n").encode())


def _token_text(v):
    return v.get("content") if isinstance(v, dict) else v


def load_tokenizer(path):
    """The tokenizer of a Hugging Face folder (`tokenizer.json`, plus the special tokens of
    `tokenizer_config.json` / `special_tokens_map.json` when present). Needs the `tokenizers`
    package (`pip install funcgrad[hf]`)."""
    try:
        import tokenizers
    except ImportError:
        raise ImportError("pretrained.load_tokenizer needs the `tokenizers` package: "
                          "pip install tokenizers (or funcgrad[hf])") from None
    folder = os.fspath(path)
    file = os.path.join(folder, "tokenizer.json") if os.path.isdir(folder) else folder
    if not os.path.exists(file):
        raise CheckpointError(f"{file}: missing (load_tokenizer reads the fast tokenizer's "
                              "tokenizer.json; vocab.txt / merges.txt alone are not read)")
    try:
        tok = tokenizers.Tokenizer.from_file(file)
    except Exception as e:
        raise CheckpointError(f"{file}: not a readable tokenizer.json: {e}") from None
    special = {}
    here = os.path.dirname(file)
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        f = os.path.join(here, name)
        if os.path.exists(f):
            special.update(read_json(f, "tokenizer settings"))
    max_len = special.get("model_max_length")
    if not isinstance(max_len, int) or max_len > 1e9:
        max_len = None
    return Tokenizer(tok, pad_token=_token_text(special.get("pad_token")),
                     eos_token=_token_text(special.get("eos_token")),
                     bos_token=_token_text(special.get("bos_token")),
                     unk_token=_token_text(special.get("unk_token")),
                     padding_side=special.get("padding_side", "right"),
                     model_max_length=max_len)
