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


# Texts the exactness check of `prompt_token_ids` glues to a prompt: plain words, digits, CJK, punctuation.
_PROMPT_PROBES = ("x", "Hello world", "1999", "ネットワーク設定", "(a) b", "Über")


def prompt_token_ids(vocabulary: seqio.Vocabulary, prompt: str) -> tuple[list[int], int]:
    """-> (the prompt's token ids, how many start ids precede them) such that, for any text, the ids of
    `prompt + text` are the text's start ids ([CLS] / <s> for BERT-family tokenizers, none for T5 and bytes),
    then these, then the text's own pieces. Training puts prompts in as tokens (the tasks are already
    tokenized); encoding puts them in as text; this check makes the two the same. Tokenizers that split on
    whitespace (SentencePiece, WordPiece, bytes) pass with a prompt that ends in a space or a separator;
    a prompt whose last token would merge with the text is refused."""
    if not prompt:
        return [], 0
    start = len(vocabulary.encode(""))  # the start ids every text gets ([CLS] / <s>), if any
    for candidate in dict.fromkeys([prompt, prompt.rstrip()]):
        ids = list(vocabulary.encode(candidate))[start:]
        if all(list(vocabulary.encode(prompt + probe)) ==
               list(vocabulary.encode(probe))[:start] + ids + list(vocabulary.encode(probe))[start:]
               for probe in _PROMPT_PROBES):
            return ids, start
    raise ValueError(f"prompt {prompt!r}: with this tokenizer ({vocabulary_source(vocabulary)}) its last token merges "
                     "with the text that follows, so it cannot be applied as tokens; end it with a space or "
                     "a separator")


def decodes_losslessly(vocabulary: seqio.Vocabulary) -> bool:
    """Whether tokenizing a text's decoded ids gives those ids back (byte-level BPE, SentencePiece, bytes), so
    that a prompt can be put in front of an already tokenized text as text (`retokenize_with_prompt`)."""
    return all(list(vocabulary.encode(vocabulary.decode(vocabulary.encode(probe)))) == list(vocabulary.encode(probe))
               for probe in _PROMPT_PROBES)
