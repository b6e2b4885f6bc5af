"""A seqio Vocabulary over the Hugging Face tokenizer that ships with a checkpoint (WordPiece for BERT,
SentencePiece unigram for XLM-R), read from `tokenizer.json` with the `tokenizers` library.

Ids follow polyret's convention (polyret/models/bert.py): pad is 0. BERT's ids are HF's unchanged;
RoBERTa/XLM-R (`<s>`=0, `<pad>`=1 in HF) have ids 0 and 1 swapped, so polyret 0 = `<pad>`, 1 = `<s>`.

`encode(text)` gives the start token ([CLS] / `<s>`) followed by the text's pieces and no end token;
`eos_id` is [SEP] / `</s>`, which seqio's `append_eos(_after_trim)` and polyret's converters append after
trimming, so a text cut to length L reads exactly as `AutoTokenizer(text, truncation=True, max_length=L)`.
A decoder LLM's tokenizer has no [CLS]/[SEP]; its start ids (none, or a BOS) and its end id (the EOS that
last-token pooling reads) are what its own post-processor template puts around a text.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import seqio
import tensorflow as tf

from polyret.tokens import PAD_ID

# Special-token names by role, BERT spelling first; tokenizer_config.json / special_tokens_map.json win.
_DEFAULT_SPECIALS = {"cls_token": ("[CLS]", "<s>"), "sep_token": ("[SEP]", "</s>"), "pad_token": ("[PAD]", "<pad>"),
                     "unk_token": ("[UNK]", "<unk>"), "mask_token": ("[MASK]", "<mask>")}


def load_tokenizer(path: str | os.PathLike):
    """A `tokenizers.Tokenizer` (truncation and padding off) from a tokenizer.json file or a checkpoint folder.

    A folder without tokenizer.json (slow tokenizer files only: vocab.txt, sentencepiece.bpe.model) is
    converted by transformers' AutoTokenizer.
    """
    from tokenizers import Tokenizer

    path = Path(path)
    if path.is_file():
        tokenizer = Tokenizer.from_file(str(path))
    elif (path / "tokenizer.json").is_file():
        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    elif path.is_dir():
        from transformers import AutoTokenizer
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path), use_fast=True).backend_tokenizer
        except Exception as e:
            raise FileNotFoundError(f"{path}: no tokenizer.json and transformers cannot build one: {e}") from e
    else:
        raise FileNotFoundError(f"{path}: tokenizer not found (a checkpoint folder or a tokenizer.json)")
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def _special_tokens(folder: Path | None, tokenizer) -> dict[str, int]:
    """Role ('cls_token', ...) -> HF id, from the folder's tokenizer config files or the usual names."""
    names: dict[str, str] = {}
    if folder is not None:
        for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the latter wins
            f = folder / name
            if f.is_file():
                for role, value in json.loads(f.read_text()).items():
                    if role in _DEFAULT_SPECIALS and value is not None:
                        names[role] = value["content"] if isinstance(value, dict) else value
    ids = {}
    for role, candidates in _DEFAULT_SPECIALS.items():
        for token in ([names[role]] if role in names else list(candidates)):
            token_id = tokenizer.token_to_id(token)
            if token_id is not None:
                ids[role] = token_id
                break
    return ids


def _template_ends(path: Path, tokenizer) -> tuple[list[int], int]:
    """(HF ids before a text, the one HF id after it) from the tokenizer's post-processor template."""
    plain = tokenizer.encode("a", add_special_tokens=False).ids
    full = tokenizer.encode("a", add_special_tokens=True).ids
    start = full.index(plain[0]) if plain and plain[0] in full else -1
    after = full[start + len(plain):] if start >= 0 else []
    if start < 0 or full[start:start + len(plain)] != plain or len(after) != 1:
        raise ValueError(f"{path}: the tokenizer has no [CLS]/[SEP] pair, and its template does not end a text with "
                         f"one token (an EOS) either: 'a' encodes as {full}. Set a post_processor that appends the "
                         "EOS (a TemplateProcessing '$A <eos>') in tokenizer.json")
    return full[:start], after[0]


class HfVocabulary(seqio.Vocabulary):
    """seqio Vocabulary over a checkpoint's HF tokenizer, in polyret ids (pad 0)."""

    def __init__(self, path: str | os.PathLike, extra_ids: int = 0):
        """`path`: the checkpoint folder (tokenizer.json + tokenizer_config.json) or a tokenizer.json file."""
        self._path = str(path)
        self._load()
        super().__init__(extra_ids=extra_ids)

    def _load(self) -> None:
        path = Path(self._path)
        self._tokenizer = load_tokenizer(path)
        specials = _special_tokens(path if path.is_dir() else path.parent, self._tokenizer)
        if "pad_token" not in specials:
            raise ValueError(f"{path}: the tokenizer has no pad_token ([PAD]/<pad>, or pad_token in tokenizer_config.json)")
        self._hf_pad_id = specials["pad_token"]
        self._hf_specials = specials
        if "cls_token" in specials and "sep_token" in specials:  # encoders: [CLS] text [SEP]
            self._hf_start, self._hf_end = [specials["cls_token"]], specials["sep_token"]
        else:  # decoder LLMs: what the tokenizer's own template puts around a text, ending with its EOS
            self._hf_start, self._hf_end = _template_ends(path, self._tokenizer)
        if self._hf_end == self._hf_pad_id:
            raise ValueError(f"{path}: the pad token is the token that ends every text (id {self._hf_pad_id}); "
                             "set a pad_token the tokenizer never emits in tokenizer_config.json")
        added = self._tokenizer.get_added_tokens_decoder()
        # Ids that decode() drops: every special added token (pad, cls, sep, mask, ...), in polyret ids.
        self._special_ids = {self.to_polyret(i) for i, t in added.items() if t.special} | {
            self.to_polyret(i) for i in specials.values()}

    def __getstate__(self):  # pickled by path (seqio ships vocabularies to workers)
        return {"_path": self._path, "_extra_ids": self._extra_ids}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._load()

    # -- the id swap ------------------------------------------------------------------------------
    @property
    def path(self) -> str:
        """The checkpoint folder or tokenizer.json this vocabulary reads."""
        return self._path

    @property
    def hf_tokenizer(self):
        """The `tokenizers.Tokenizer` underneath (Hugging Face ids)."""
        return self._tokenizer

    @property
    def hf_pad_id(self) -> int:
        """The pad id in the tokenizer's own numbering (0 for BERT, 1 for RoBERTa/XLM-R)."""
        return self._hf_pad_id

    def to_polyret(self, hf_id: int) -> int:
        """HF id -> polyret id (swaps 0 and the HF pad id; the swap is its own inverse)."""
        if hf_id == self._hf_pad_id:
            return PAD_ID
        return self._hf_pad_id if hf_id == PAD_ID else hf_id

    to_hf = to_polyret

    def _swap_array(self, ids: np.ndarray) -> np.ndarray:
        if self._hf_pad_id == PAD_ID:
            return ids
        return np.where(ids == PAD_ID, self._hf_pad_id, np.where(ids == self._hf_pad_id, PAD_ID, ids))

    # -- seqio.Vocabulary --------------------------------------------------------------------------
    @property
    def _base_vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def eos_id(self) -> int:
        """The id that ends every text ([SEP] / </s>; a decoder LLM's EOS)."""
        return self.to_polyret(self._hf_end)

    @property
    def start_ids(self) -> list[int]:
        """The ids every text starts with ([CLS] / <s>; none or a BOS for decoder LLMs)."""
        return [self.to_polyret(i) for i in self._hf_start]

    @property
    def bos_id(self) -> int | None:
        return self.start_ids[0] if self._hf_start else None

    @property
    def unk_id(self) -> int | None:
        unk = self._hf_specials.get("unk_token")
        return None if unk is None else self.to_polyret(unk)

    @property
    def mask_id(self) -> int | None:
        mask = self._hf_specials.get("mask_token")
        return None if mask is None else self.to_polyret(mask)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Many texts at once (the tokenizers library's parallel path); each as `encode`. Surrounding
        whitespace is dropped first, as sentence-transformers does (for SentencePiece-style tokenizers a
        trailing space would otherwise be a token of its own)."""
        encodings = self._tokenizer.encode_batch([t.strip() for t in texts], add_special_tokens=False)
        start = self.start_ids
        return [start + [self.to_polyret(i) for i in e.ids] for e in encodings]

    def _encode(self, s: str) -> list[int]:
        return self.encode_batch([s])[0]

    def _decode(self, ids: Iterable[int]) -> str:
        kept = [self.to_hf(int(i)) for i in ids if int(i) not in self._special_ids]
        return self._tokenizer.decode(kept, skip_special_tokens=True)

    def _encode_tf(self, s: tf.Tensor) -> tf.Tensor | tf.RaggedTensor:
        """Scalar string -> int32 [n]; 1-D strings -> RaggedTensor [batch, None] (through tf.py_function)."""
        s = tf.convert_to_tensor(s, tf.string)
        if s.shape.rank == 0:
            ids = tf.py_function(lambda t: np.asarray(self._encode(t.numpy().decode("utf-8")), np.int32), [s],
                                 tf.int32)
            ids.set_shape([None])
            return ids

        def encode_many(t):
            rows = self.encode_batch([x.decode("utf-8") for x in t.numpy().reshape(-1)])
            values = np.asarray([i for r in rows for i in r], np.int32)
            return values, np.asarray([len(r) for r in rows], np.int64)

        values, lengths = tf.py_function(encode_many, [s], [tf.int32, tf.int64])
        values.set_shape([None])
        lengths.set_shape([None])
        return tf.RaggedTensor.from_row_lengths(values, lengths)

    def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
        """int ids [..., length] -> strings [...] (through tf.py_function)."""
        ids = tf.convert_to_tensor(ids)

        def decode_many(t):
            array = t.numpy()
            flat = array.reshape(-1, array.shape[-1]) if array.ndim else array.reshape(1, 1)
            out = [self._decode(row).encode("utf-8") for row in flat]
            return np.asarray(out, dtype=object).reshape(array.shape[:-1])

        out = tf.py_function(decode_many, [ids], tf.string)
        out.set_shape(ids.shape[:-1])
        return out

    def __eq__(self, other) -> bool:
        return isinstance(other, HfVocabulary) and self._path == other._path and self.extra_ids == other.extra_ids

    def __hash__(self) -> int:
        return hash((self._path, self.extra_ids))

    def __repr__(self) -> str:
        return f"HfVocabulary({self._path!r}, size={self.vocab_size}, hf_pad_id={self._hf_pad_id})"
