"""The cross-encoder (reranker): any registered encoder family reads a query and a passage as one sequence and a
score head turns the first token's output (or the mean, for families without a classification token) into
one relevance logit, as Hugging Face's `*ForSequenceClassification` with one label does.

The pair is built on token ids, from the query and passage rows the feature converters already make (each its
start ids, its pieces and its end id): query row, then the separator ids the tokenizer puts between two
segments, then the passage row without its start ids, e.g.
  BERT   [CLS] q [SEP] p [SEP]          (passage segment token type 1)
  XLM-R  <s> q </s> </s> p </s>         (one token type)
  T5     q </s> p </s>                  (no start ids; mean pooling)
`pair_layout` reads this layout off a Hugging Face tokenizer's own pair template. Each side is cut to its
own length (TASK_FEATURE_LENGTHS / the rerank job's flags), where Hugging Face cuts the longer side first.

Parameters: the encoder's own (at the top level, as the shared-tower dual encoder has them) and the head,
`score_dense` (hidden -> hidden, then tanh or ReLU) and `score_out` (hidden -> 1).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gin
import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from polyret.models.dropout import Dropout
from polyret.models.encoder_families import encoder_config_from_dict, family_of
from polyret.models.t5 import T5Config
from polyret.models.towers import POOLINGS, pool
from polyret.tokens import PAD_ID

ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu}
HEAD = ("score_dense", "score_out")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class CrossEncoderConfig:
    encoder: Any = T5Config()
    pooling: str = "first"            # 'first' ([CLS] / <s>), 'mean' or 'last'
    head_activation: str = "tanh"     # of score_dense: tanh (BERT, XLM-R), relu (DistilBERT)
    head_dropout: float = 0.1         # before each head layer, in training (as Hugging Face's heads)
    start_length: int = 1             # start ids every text row has ([CLS] / <s>: 1; T5: 0)
    separator_ids: tuple[int, ...] = ()  # polyret ids between the query row and the passage (XLM-R: </s>)
    passage_type_id: int = 0          # token type of the passage segment (BERT: 1)

    def __post_init__(self):
        if self.pooling not in POOLINGS:
            raise ValueError(f"CrossEncoderConfig.pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.head_activation not in ACTIVATIONS:
            raise ValueError(f"CrossEncoderConfig.head_activation must be one of {sorted(ACTIVATIONS)}, got "
                             f"{self.head_activation!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CrossEncoderConfig":
        return cls(**{**d, "encoder": encoder_config_from_dict(d["encoder"]),
                      "separator_ids": tuple(d.get("separator_ids", ()))})


def join_pairs(query_tokens: jax.Array, passage_tokens: jax.Array, cfg: CrossEncoderConfig
               ) -> tuple[jax.Array, jax.Array]:
    """Right-padded query rows [N, Lq] and passage rows [N, Lp] -> (pair ids [N, Lq + Lp + extra], token types).
    Jittable: each passage is written right after its query's last token."""
    body = passage_tokens[:, cfg.start_length:]
    if cfg.separator_ids:
        has_text = jnp.any(passage_tokens != PAD_ID, axis=-1, keepdims=True)
        separators = jnp.where(has_text, jnp.asarray(cfg.separator_ids, body.dtype)[None, :], PAD_ID)
        body = jnp.concatenate([separators.astype(body.dtype), body], axis=1)
    width = query_tokens.shape[1] + body.shape[1]
    pairs = jnp.zeros((query_tokens.shape[0], width), query_tokens.dtype).at[:, :query_tokens.shape[1]].set(query_tokens)
    query_length = jnp.sum(query_tokens != PAD_ID, axis=-1)
    pairs = jax.vmap(lambda row, part, at: jax.lax.dynamic_update_slice(row, part, (at,)))(pairs, body, query_length)
    in_passage = jnp.arange(width)[None, :] >= query_length[:, None]
    types = jnp.where(in_passage & (pairs != PAD_ID), cfg.passage_type_id, 0).astype(jnp.int32)
    return pairs, types


class CrossEncoder(nn.Module):
    config: CrossEncoderConfig

    def setup(self):
        cfg = self.config
        family = family_of(cfg.encoder)
        parts = family.parts(cfg.encoder)
        for name, module in parts.items():
            setattr(self, name, module)
        self.part_names = tuple(parts)
        width = family.width(cfg.encoder)
        dtype, pdtype = jnp.dtype(cfg.encoder.dtype), jnp.dtype(cfg.encoder.param_dtype)
        init = nn.with_logical_partitioning(nn.initializers.normal(0.02), ("embed", "mlp"))
        self.score_dense = nn.Dense(width, dtype=dtype, param_dtype=pdtype, kernel_init=init, name="score_dense")
        self.score_out = nn.Dense(1, dtype=jnp.float32, param_dtype=pdtype, name="score_out",
                                  kernel_init=nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                                                           ("embed", None)))
        self.dropout = Dropout(cfg.head_dropout)

    def score(self, query_tokens: jax.Array, passage_tokens: jax.Array, deterministic: bool = True) -> jax.Array:
        """Query rows [N, Lq] and passage rows [N, Lp] -> one logit per pair [N] (float32)."""
        cfg = self.config
        pairs, types = join_pairs(query_tokens, passage_tokens, cfg)
        parts = {name: getattr(self, name) for name in self.part_names}
        hidden = family_of(cfg.encoder).hidden(parts, pairs, pairs != PAD_ID, deterministic, types)
        hidden = nn.with_logical_constraint(hidden, ("batch", "length", "embed"))
        pooled = pool(hidden, pairs != PAD_ID, cfg.pooling)
        x = self.dropout(pooled, deterministic=deterministic)
        x = ACTIVATIONS[cfg.head_activation](self.score_dense(x))
        x = self.dropout(x, deterministic=deterministic)
        return self.score_out(x.astype(jnp.float32))[:, 0]

    def __call__(self, query_tokens: jax.Array, passage_tokens: jax.Array, deterministic: bool = True) -> jax.Array:
        return self.score(query_tokens, passage_tokens, deterministic)


def fresh_head(cfg: CrossEncoderConfig, seed: int = 0) -> dict[str, Any]:
    """A new score head (the initializers of `CrossEncoder.setup`: normal(0.02) kernels, zero biases), without
    initialising the encoder under it."""
    width = family_of(cfg.encoder).width(cfg.encoder)
    rng = np.random.default_rng(seed)
    return {"score_dense": {"kernel": rng.normal(0.0, 0.02, (width, width)).astype(np.float32),
                            "bias": np.zeros(width, np.float32)},
            "score_out": {"kernel": rng.normal(0.0, 0.02, (width, 1)).astype(np.float32),
                          "bias": np.zeros(1, np.float32)}}


def pair_layout(vocabulary: Any) -> dict[str, Any]:
    """The cross-encoder settings for a tokenizer (a polyret HfVocabulary or any seqio vocabulary): start
    length, separator ids and the passage's token type, read off the tokenizer's own pair template (a
    Hugging Face tokenizer), or T5's plain concatenation for SentencePiece and bytes."""
    tokenizer = getattr(vocabulary, "hf_tokenizer", None)
    if tokenizer is None:
        return {"start_length": 0, "separator_ids": (), "passage_type_id": 0, "pooling": "mean"}
    single = tokenizer.encode("a", add_special_tokens=True)
    pair = tokenizer.encode("a", "b", add_special_tokens=True)
    a = tokenizer.encode("a", add_special_tokens=False).ids
    start = single.ids.index(a[0])
    # pair = start ids + a + end id + separators + b + end id
    after_query = start + len(a) + 1
    b_start = pair.ids.index(tokenizer.encode("b", add_special_tokens=False).ids[0], after_query)
    return {"start_length": start, "separator_ids": tuple(vocabulary.to_polyret(i) for i in pair.ids[after_query:b_start]),
            "passage_type_id": int(pair.type_ids[b_start])}
