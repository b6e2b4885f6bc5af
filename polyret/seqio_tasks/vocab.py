"""Vocabularies: SentencePiece (mT5's `mc4.250000.100extra` or one trained here) and bytes (ByT5)."""

from __future__ import annotations

import os
import string
from pathlib import Path
from typing import Iterable

import gin
import seqio

from polyret.tokens import PAD_ID, T5_EOS_ID as EOS_ID

UNK_ID = 2


@gin.configurable
def get_vocabulary(spm_path: str = gin.REQUIRED, extra_ids: int = 0) -> seqio.Vocabulary:
    """`spm_path` a SentencePiece model file, a Hugging Face tokenizer folder (a BERT / XLM-R checkpoint's,
    or a polyret checkpoint's `tokenizer/`), or "byte" for ByT5's byte vocabulary."""
    if spm_path == "byte":
        return seqio.ByteVocabulary()
    if Path(spm_path).is_dir():
        from polyret.seqio_tasks.hf_vocab import HfVocabulary
        return HfVocabulary(spm_path, extra_ids=extra_ids)
    if not Path(spm_path).is_file():
        raise FileNotFoundError(f"{spm_path}: SentencePiece model not found")
    return seqio.SentencePieceVocabulary(str(spm_path), extra_ids=extra_ids)


def vocabulary_source(vocabulary: seqio.Vocabulary) -> str | None:
    """What `get_vocabulary` was given for `vocabulary`: its SentencePiece model file, its Hugging Face
    tokenizer folder, or None for bytes."""
    return getattr(vocabulary, "sentencepiece_model_file", None) or getattr(vocabulary, "path", None)


def train_sentencepiece(text_files: Iterable[str | os.PathLike], model_prefix: str | os.PathLike,
                        vocab_size: int = 8000, character_coverage: float = 0.9999,
                        input_sentence_size: int = 1_000_000) -> Path:
    """Train a unigram SentencePiece model with T5's special ids (pad 0, eos 1, unk 2) -> the .model path.

    sentencepiece refuses a vocabulary larger than the text supports; the error then says the maximum.
    """
    import sentencepiece as spm

    files = [str(f) for f in text_files]
    for f in files:
        if not Path(f).is_file():
            raise FileNotFoundError(f"{f}: training text not found")
    spm.SentencePieceTrainer.train(
        input=",".join(files), model_prefix=str(model_prefix), vocab_size=vocab_size, model_type="unigram",
        character_coverage=character_coverage, pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1,
        input_sentence_size=input_sentence_size, shuffle_input_sentence=True, minloglevel=2)
    return Path(f"{model_prefix}.model")


def punctuation_token_ids(vocabulary: seqio.Vocabulary) -> tuple[int, ...]:
    """Ids of tokens made only of punctuation (and SentencePiece's word marker): ColBERT's skip list."""
    punct = set(string.punctuation) | set("、。，．！？：；「」『』（）《》…—–¿¡«»")
    ids = []
    for i in range(3, vocabulary.vocab_size):
        try:
            piece = vocabulary.decode([i]).replace("▁", "").strip()
        except Exception:  # ids without a surface form (sentinels, bytes that are not UTF-8 alone)
            continue
        if piece and all(ch in punct for ch in piece):
            ids.append(i)
    return tuple(ids)
