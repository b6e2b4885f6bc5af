"""Python-side tokenisation for encoding, identical to the SeqIO pipeline: vocabulary ids, cut to
`max_length - 1`, EOS (1) appended; SentencePiece model or bytes (ids = byte + 3, as ByT5)."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from polyret.tokens import T5_EOS_ID as EOS_ID


class Tokenizer:
    def __init__(self, spm_model: str | os.PathLike | None):
        """`spm_model`: a SentencePiece model path, or None / "byte" for the byte vocabulary."""
        self.byte = spm_model is None or str(spm_model) == "byte"
        if not self.byte:
            import sentencepiece as spm
            if not os.path.isfile(spm_model):
                raise FileNotFoundError(f"{spm_model}: SentencePiece model not found")
            self.processor = spm.SentencePieceProcessor(model_file=str(spm_model))

    @classmethod
    def for_vocabulary(cls, vocabulary) -> "Tokenizer":
        """The tokenizer of a seqio vocabulary (SentencePiece model file or bytes)."""
        return cls(getattr(vocabulary, "sentencepiece_model_file", None))

    def encode(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        if self.byte:
            ids = [[b + 3 for b in t.encode("utf-8")] for t in texts]
        else:
            ids = self.processor.encode(list(texts))
        return [row[: max_length - 1] + [EOS_ID] for row in ids]


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
