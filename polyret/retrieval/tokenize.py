"""Python-side tokenisation for encoding, identical to the SeqIO pipeline: vocabulary ids, cut to
`max_length - 1`, the vocabulary's end id appended (EOS 1 for T5; [SEP] / </s> for BERT / XLM-R, whose
ids start with [CLS] / <s>); a SentencePiece model, bytes (ids = byte + 3, as ByT5) or a Hugging Face
tokenizer folder (polyret.seqio_tasks.hf_vocab)."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from polyret.seqio_tasks.hf_vocab import HfVocabulary
from polyret.seqio_tasks.vocab import vocabulary_source
from polyret.tokens import T5_EOS_ID as EOS_ID


class Tokenizer:
    def __init__(self, spm_model: str | os.PathLike | None):
        """`spm_model`: a SentencePiece model path, a Hugging Face tokenizer folder, or None / "byte" for
        the byte vocabulary."""
        self.byte = spm_model is None or str(spm_model) == "byte"
        self.hf = None if self.byte or not os.path.isdir(spm_model) else HfVocabulary(spm_model)
        self.eos_id = self.hf.eos_id if self.hf is not None else EOS_ID
        # BERT-family texts start with [CLS] / <s>; T5's, bytes' and most decoder LLMs' with the text itself.
        self.start_ids = self.hf.start_ids if self.hf is not None else []
        if not self.byte and self.hf is None:
            import sentencepiece as spm
            if not os.path.isfile(spm_model):
                raise FileNotFoundError(f"{spm_model}: SentencePiece model not found")
            self.processor = spm.SentencePieceProcessor(model_file=str(spm_model))

    @classmethod
    def for_vocabulary(cls, vocabulary) -> "Tokenizer":
        """The tokenizer of a seqio vocabulary (SentencePiece model file, HF tokenizer, or bytes)."""
        return cls(vocabulary_source(vocabulary))

    def encode(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        if self.byte:
            ids = [[b + 3 for b in t.encode("utf-8")] for t in texts]
        elif self.hf is not None:
            ids = self.hf.encode_batch(list(texts))
        else:
            ids = self.processor.encode(list(texts))
        return [row[: max_length - 1] + [self.eos_id] for row in ids]


def pad_batch(rows: Sequence[Sequence[int]], bucket: int = 16, max_length: int | None = None) -> np.ndarray:
    """Pad to the longest row rounded up to a multiple of `bucket` (few shapes -> few compilations)."""
    longest = max(len(r) for r in rows)
    width = -(-longest // bucket) * bucket
    if max_length is not None:
        width = min(width, max_length)
    out = np.zeros((len(rows), width), np.int32)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out
