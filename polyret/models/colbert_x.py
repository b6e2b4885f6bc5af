"""ColBERT-X's token side as PLAID-X (hltcoe/ColBERT-X, PyPI `plaid-x`) computes it from a checkpoint's
Hugging Face tokenizer, in polyret ids (pad 0; XLM-R's 0 and 1 swapped, see polyret/models/bert.py).

PLAID-X (colbert/modeling/tokenization/*.py, colbert/modeling/colbert.py, hf_colbert.py):
  - markers: the tokens '[unused0]' ([Q]) and '[unused1]' ([D]); a tokenizer that lacks them gets them
    appended, query marker first (`tok.add_tokens`), and the embedding table is resized to the tokenizer;
  - every text is tokenised as '. ' + text (a placeholder), then the first token after [CLS] is overwritten
    by the marker: `[CLS] [Q] <rest of the placeholder's tokens> text [SEP]`, cut to query_maxlen /
    doc_maxlen keeping [SEP];
  - queries are padded to query_maxlen with [MASK] (query augmentation) that the attention mask leaves out
    (`attend_to_mask_tokens=False`), yet every position's vector takes part in MaxSim;
  - documents skip, in MaxSim, the first token of each `string.punctuation` symbol tokenised alone.

polyret's inputs stay the vocabulary's ids of the bare text (`[CLS] text [SEP]`, what every seqio task and
the encode jobs produce); the ColBERT tower inserts `[marker, *marker_suffix_ids]` after [CLS]
(polyret/models/towers.py), which gives PLAID-X's ids whenever the tokenizer splits words at whitespace
(BERT WordPiece, XLM-R's Metaspace), so that '. ' + text tokenises as '. ' followed by the text's tokens.
"""

from __future__ import annotations

import dataclasses
import os
import string
from pathlib import Path

import gin

from polyret.models.encoder_families import family_of
from polyret.models.towers import ColBERTConfig

QUERY_TOKEN = "[unused0]"  # PLAID-X ColBERTConfig.query_token_id
DOCUMENT_TOKEN = "[unused1]"  # PLAID-X ColBERTConfig.doc_token_id
PLACEHOLDER = ". "  # PLAID-X QueryTokenizer/DocTokenizer.tensorize: "add placehold for the [Q]/[D] marker"
_PROBE = "a"


@dataclasses.dataclass(frozen=True)
class ColBERTXTokens:
    """The ids ColBERT-X needs from a tokenizer (polyret numbering)."""

    query_marker_id: int
    document_marker_id: int
    marker_suffix_ids: tuple[int, ...]  # the placeholder's tokens after the one the marker overwrites
    mask_token_id: int
    skip_token_ids: tuple[int, ...]  # PLAID-X's punctuation skip list (empty without mask_punctuation)
    vocab_size: int  # the tokenizer's size once the markers are in it (PLAID-X resizes the embeddings to it)
    added_tokens: tuple[str, ...]  # markers the tokenizer lacked, appended in this order


def colbert_x_tokens(tokenizer_path: str | os.PathLike, query_token: str = QUERY_TOKEN,
                     document_token: str = DOCUMENT_TOKEN, mask_punctuation: bool = True) -> ColBERTXTokens:
    """ColBERT-X ids for the Hugging Face tokenizer in `tokenizer_path` (a checkpoint folder or
    tokenizer.json), computed by PLAID-X's rules."""
    # Imported here: the vocabulary wrapper needs TensorFlow (seqio), which the model itself does not.
    from polyret.seqio_tasks.hf_vocab import HfVocabulary, load_tokenizer
    vocab = HfVocabulary(tokenizer_path)
    tokenizer = load_tokenizer(tokenizer_path)
    if vocab.mask_id is None:
        raise ValueError(f"{tokenizer_path}: the tokenizer has no mask token ([MASK] / <mask>); ColBERT-X pads "
                         "queries with it")
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    added: list[str] = []
    marker_ids = []
    for token in (query_token, document_token):  # PLAID-X adds the query marker first
        hf_id = tokenizer.token_to_id(token)
        if hf_id is None:
            hf_id = size + len(added)
            added.append(token)
        marker_ids.append(vocab.to_polyret(hf_id))

    def pieces(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False).ids

    placeholder, probe = pieces(PLACEHOLDER + _PROBE), pieces(_PROBE)
    if not placeholder or placeholder[-len(probe):] != probe or len(placeholder) == len(probe):
        raise ValueError(f"{tokenizer_path}: {PLACEHOLDER + _PROBE!r} does not tokenise as {PLACEHOLDER!r} followed "
                         f"by {_PROBE!r}; ColBERT-X's marker placement needs a tokenizer that splits at whitespace")
    suffix = tuple(vocab.to_polyret(i) for i in placeholder[1:len(placeholder) - len(probe)])

    skip: list[int] = []
    if mask_punctuation:  # PLAID-X: raw_tokenizer.encode(symbol, add_special_tokens=False)[0]
        for symbol in string.punctuation:
            ids = pieces(symbol)
            if ids and vocab.to_polyret(ids[0]) not in skip:
                skip.append(vocab.to_polyret(ids[0]))
    return ColBERTXTokens(query_marker_id=marker_ids[0], document_marker_id=marker_ids[1],
                          marker_suffix_ids=suffix, mask_token_id=int(vocab.mask_id),
                          skip_token_ids=tuple(sorted(skip)), vocab_size=size + len(added),
                          added_tokens=tuple(added))


def with_colbert_x(config: ColBERTConfig, tokenizer_path: str | os.PathLike, query_token: str = QUERY_TOKEN,
                   document_token: str = DOCUMENT_TOKEN, mask_punctuation: bool = True) -> ColBERTConfig:
    """`config` with the ColBERT-X ids of the tokenizer; the encoder's vocabulary grows to hold markers the
    tokenizer lacked (PLAID-X's `force_resize_embeddings`). Lengths, projection and `attend_to_mask_tokens`
    stay as `config` has them."""
    if family_of(config.encoder).tokenizer_kind != "hf":
        raise ValueError(f"ColBERT-X needs an encoder that reads a Hugging Face tokenizer (BERT / XLM-R, ...); "
                         f"got {type(config.encoder).__name__}")
    if not Path(tokenizer_path).exists():
        raise FileNotFoundError(f"{tokenizer_path}: tokenizer not found (a Hugging Face checkpoint folder)")
    t = colbert_x_tokens(tokenizer_path, query_token, document_token, mask_punctuation)
    encoder = config.encoder
    if encoder.vocab_size < t.vocab_size:
        encoder = dataclasses.replace(encoder, vocab_size=t.vocab_size)
    return dataclasses.replace(config, encoder=encoder, query_marker_id=t.query_marker_id,
                               document_marker_id=t.document_marker_id, marker_suffix_ids=t.marker_suffix_ids,
                               query_mask_token_id=t.mask_token_id, skip_token_ids=t.skip_token_ids)


@gin.configurable
def colbert_x_config(tokenizer: str = gin.REQUIRED, query_token: str = QUERY_TOKEN,
                     document_token: str = DOCUMENT_TOKEN, mask_punctuation: bool = True) -> ColBERTConfig:
    """gin: `MODEL_CONFIG = @colbert_x_config()`. The ColBERTConfig that gin binds (encoder, projection_dim,
    query_length, document_length, attend_to_mask_tokens) with the ColBERT-X ids of `tokenizer` (the
    Hugging Face tokenizer folder, usually %VOCABULARY)."""
    return with_colbert_x(ColBERTConfig(), tokenizer, query_token, document_token, mask_punctuation)
