"""The retrieval-model interface and its registry: what the trainer, the jobs and the losses talk to.

A `RetrievalModel` wraps a tower config (the Flax modules live in `towers.py`) and owns everything that
depends on what kind of model it is:
  - parameters: `init`, `abstract_params` (shapes + logical axes, nothing allocated);
  - data: `feature_converter(task)` (through its loss) and `loss` / `value_and_grad` (through loss classes);
  - encoding: `represent(params, tokens, side)` -> `Embedded` (one vector per text, or per token with a mask),
    `encode_queries` / `encode_documents`, and `score` / `score_paired` between representations;
  - files: `to_dict` / `from_dict` (model_config.json) and `export_hf` (Hugging Face / sentence-transformers
    or PyLate layout).
Kinds register with `@register`; `build_model(config)` finds the class by the config's type, so no caller
ever branches on the model kind. A new kind plugs in here and nowhere else; a new encoder family plugs in
as its own module listed in `encoder_families.py` (see `encoder_family.py`).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import traverse_util

from polyret.io.outputs import atomic_output_dir
from polyret.models import cross_encoder, hf
from polyret.models import losses as L
from polyret.models import towers
from polyret.models.encoder_families import encoder_config_to_dict
from polyret.models.lora import LORA_A, LORA_B
from polyret.models.prompts import Prompts, write_to_sentence_transformers

if TYPE_CHECKING:  # seqio imports TensorFlow, which encoding, evaluation and planning do not need
    import seqio


class Embedded(NamedTuple):
    """Representations of a batch of texts: vectors [..., D] (dual encoder) or [..., L, D] with a mask
    [..., L] of the token vectors that count (ColBERT)."""

    vectors: jax.Array
    mask: jax.Array | None = None


_REGISTRY: dict[str, type["RetrievalModel"]] = {}


def register(cls: type["RetrievalModel"]) -> type["RetrievalModel"]:
    """Class decorator: make a model kind available to `build_model` and `model_config_from_dict`."""
    _REGISTRY[cls.kind] = cls
    return cls


# Parameters a run creates on top of an imported encoder (so an initial checkpoint may lack them, and a LoRA
# run trains them): projection heads, the learnable logit scale, LoRA adapters.
CREATED_HEADS = ("projection_layer", "logit_scale") + cross_encoder.HEAD


def is_created_parameter(path: tuple[str, ...]) -> bool:
    """Whether the parameter at this flattened path is one a run creates (see CREATED_HEADS)."""
    return path[0] in CREATED_HEADS or path[-1] in (LORA_A, LORA_B)


class RetrievalModel:
    """Base class: a tower config, its Flax module and its loss."""

    kind: ClassVar[str]
    config_class: ClassVar[type]
    module_class: ClassVar[type[nn.Module]]
    default_loss: ClassVar[type[L.Loss]] = L.ContrastiveLoss
    multi_vector: ClassVar[bool] = False  # one vector per token (searched by late interaction)

    def __init__(self, config: Any, loss: L.Loss | None = None):
        self.config = config
        self.loss = loss if loss is not None else self.default_loss()
        self.module = self.module_class(config)

    # ----------------------------------------------------------------------------------------- parameters
    def _init_variables(self, rng: jax.Array) -> Any:
        tokens = jnp.ones((1, 8), jnp.int32)
        return self.module.init(rng, tokens, tokens)

    def init(self, rng: jax.Array) -> tuple[Any, Any]:
        """-> (params, logical PartitionSpec tree) of a fresh model."""
        variables = self._init_variables(rng)
        return nn.unbox(variables)["params"], nn.get_partition_spec(variables)["params"]

    def abstract_params(self) -> tuple[Any, Any]:
        """-> (ShapeDtypeStruct tree, logical PartitionSpec tree), nothing allocated."""
        boxed = jax.eval_shape(self._init_variables, jax.random.PRNGKey(0))
        return nn.unbox(boxed)["params"], nn.get_partition_spec(boxed)["params"]

    # ------------------------------------------------------------------------------------- data and loss
    def feature_converter(self, task: seqio.Task | seqio.Mixture) -> seqio.FeatureConverter:
        return self.loss.feature_converter(task)

    def value_and_grad(self, params: Any, batch: dict[str, jax.Array], rng: jax.Array | None, trainable: Any = None):
        """((loss, metrics), grads) of the model's loss on one batch of model features; `trainable` (a bool tree):
        only those parameters are differentiated (a LoRA run's adapters), the rest get zero gradients."""
        return self.loss.value_and_grad(self, params, batch, rng, trainable)

    def loss_value(self, params: Any, batch: dict[str, jax.Array], rng: jax.Array | None = None,
                   deterministic: bool = False) -> tuple[jax.Array, dict]:
        return self.loss(self, params, batch, rng, deterministic)

    # ------------------------------------------------------------------------------------------ encoding
    def represent(self, params: Any, tokens: jax.Array, side: str, rng: jax.Array | None = None,
                  deterministic: bool = True) -> Embedded:
        """Token ids [..., L] of queries (side 'query') or documents ('document') -> representations.
        Dropout is on only when `rng` is given and `deterministic` is False."""
        raise NotImplementedError

    def encode_queries(self, params: Any, tokens: jax.Array) -> Embedded:
        return self.represent(params, tokens, "query")

    def encode_documents(self, params: Any, tokens: jax.Array) -> Embedded:
        return self.represent(params, tokens, "document")

    def score(self, queries: Embedded, documents: Embedded) -> jax.Array:
        """Every query against every document -> [Bq, Bd] (before the logit scale)."""
        raise NotImplementedError

    def score_paired(self, queries: Embedded, documents: Embedded) -> jax.Array:
        """Each query [B, ...] against its own K documents [B, K, ...] -> [B, K] (before the logit scale)."""
        raise NotImplementedError

    def logit_scale(self, params: Any) -> jax.Array:
        return jnp.asarray(1.0, jnp.float32)

    def paired_scores(self, params: Any, query_tokens: jax.Array, passage_tokens: jax.Array,
                      query_rng: jax.Array | None = None, passage_rng: jax.Array | None = None,
                      deterministic: bool = True) -> jax.Array:
        """Each query [B, Lq] against its own K passages [B, K, Lp] -> [B, K] logits (logit scale applied):
        what the listwise, pointwise and distillation losses train, for every kind of model."""
        queries = self.represent(params, query_tokens, "query", query_rng, deterministic)
        passages = self.represent(params, passage_tokens, "document", passage_rng, deterministic)
        return self.logit_scale(params) * self.score_paired(queries, passages)

    # ---------------------------------------------------------------------------------------------- files
    def to_dict(self) -> dict[str, Any]:
        """model_config.json: the kind, the tower's fields, and the encoder's fields with its family."""
        return {"kind": self.kind, **dataclasses.asdict(self.config),
                "encoder": encoder_config_to_dict(self.config.encoder)}

    def export_hf(self, params: Any, output_dir: Path, tokenizer: str | None, max_seq_length: int,
                  truncate_dim: int | None = None) -> None:
        """Write the Hugging Face layout of this model into the (empty) folder `output_dir`; `truncate_dim`
        (dual encoders): the exported model gives the first that many dimensions (a Matryoshka prefix)."""
        raise NotImplementedError(f"{self.kind} models cannot be exported to Hugging Face yet")

    def _no_truncation(self, truncate_dim: int | None) -> None:
        if truncate_dim is not None:
            raise ValueError(f"truncate_dim applies to dual encoders' single vectors, not to {self.kind} models")


def _module_rngs(rng: jax.Array | None) -> dict[str, jax.Array]:
    return {"dropout": rng} if rng is not None else {}


def _deterministic(deterministic: bool, rng: jax.Array | None) -> bool:
    return deterministic or rng is None  # no dropout key, no dropout


@register
class DualEncoderModel(RetrievalModel):
    """One L2-normalised (optionally projected) vector per text; scores are dot products times the logit scale."""

    kind = "dual_encoder"
    config_class = towers.DualEncoderConfig
    module_class = towers.DualEncoder

    def represent(self, params, tokens, side, rng=None, deterministic=True):
        tower = "left" if side == "query" else "right"
        vectors = self.module.apply({"params": params}, tokens, tower, _deterministic(deterministic, rng),
                                    rngs=_module_rngs(rng),
                                    method=towers.DualEncoder.encode)
        return Embedded(vectors)

    def score(self, queries, documents):
        return towers.dot_scores(queries.vectors, documents.vectors)

    def score_paired(self, queries, documents):
        return jnp.einsum("bd,bkd->bk", queries.vectors, documents.vectors, preferred_element_type=jnp.float32)

    def logit_scale(self, params):
        if self.config.learnable_logit_scale:
            return params["logit_scale"]
        return jnp.asarray(self.config.logit_scale, jnp.float32)

    def export_hf(self, params, output_dir, tokenizer, max_seq_length, truncate_dim=None):
        hf.write_dual_encoder(params, self.config, output_dir, tokenizer, max_seq_length, truncate_dim)


@register
class ColBERTModel(RetrievalModel):
    """Late interaction: one L2-normalised vector per token; scores are MaxSim sums."""

    kind = "colbert"
    multi_vector = True
    config_class = towers.ColBERTConfig
    module_class = towers.ColBERT

    def represent(self, params, tokens, side, rng=None, deterministic=True):
        method = towers.ColBERT.encode_query if side == "query" else towers.ColBERT.encode_document
        lead = tokens.shape[:-1]
        flat = tokens.reshape(-1, tokens.shape[-1])
        vectors, mask = self.module.apply({"params": params}, flat, _deterministic(deterministic, rng),
                                          rngs=_module_rngs(rng), method=method)
        return Embedded(vectors.reshape(lead + vectors.shape[1:]), mask.reshape(lead + mask.shape[1:]))

    def score(self, queries, documents):
        return towers.maxsim_scores(queries.vectors, queries.mask, documents.vectors, documents.mask)

    def score_paired(self, queries, documents):
        return towers.maxsim_paired(queries.vectors, queries.mask, documents.vectors, documents.mask)

    def export_hf(self, params, output_dir, tokenizer, max_seq_length, truncate_dim=None):
        self._no_truncation(truncate_dim)
        hf.write_colbert(params, self.config, output_dir, tokenizer, max_seq_length)


@register
class CrossEncoderModel(RetrievalModel):
    """A reranker: the query and passage read together, one logit per pair (polyret/models/cross_encoder.py).
    It has no per-text representation, so it trains with the losses over each query's own passages
    (ListwiseLoss, PointwiseBCELoss, MarginMSELoss, KLDistillationLoss) and scores with `paired_scores`."""

    kind = "cross_encoder"
    config_class = cross_encoder.CrossEncoderConfig
    module_class = cross_encoder.CrossEncoder
    default_loss = L.ListwiseLoss

    def represent(self, params, tokens, side, rng=None, deterministic=True):
        raise TypeError("a cross-encoder scores query-passage pairs and has no per-text vectors: train it with "
                        "ListwiseLoss, PointwiseBCELoss, MarginMSELoss or KLDistillationLoss, and use it through "
                        "`polyret rerank`, not encode / evaluate / an in-batch loss")

    def paired_scores(self, params, query_tokens, passage_tokens, query_rng=None, passage_rng=None,
                      deterministic=True):
        batch, k = passage_tokens.shape[:2]
        queries = jnp.repeat(query_tokens, k, axis=0)
        passages = passage_tokens.reshape(batch * k, passage_tokens.shape[-1])
        scores = self.module.apply({"params": params}, queries, passages, _deterministic(deterministic, query_rng),
                                   rngs=_module_rngs(query_rng), method=cross_encoder.CrossEncoder.score)
        return scores.reshape(batch, k)

    def export_hf(self, params, output_dir, tokenizer, max_seq_length, truncate_dim=None):
        self._no_truncation(truncate_dim)
        hf.write_cross_encoder(params, self.config, output_dir, tokenizer, max_seq_length)


def build_model(config: Any, loss: L.Loss | None = None) -> RetrievalModel:
    """The registered model for a tower config (found by the config's type)."""
    for cls in _REGISTRY.values():
        if isinstance(config, cls.config_class):
            return cls(config, loss)
    raise TypeError(f"no registered retrieval model takes a {type(config).__name__}; "
                    f"known: {', '.join(c.config_class.__name__ for c in _REGISTRY.values())}")


def export_hf(params: Any, config: Any, output_dir: str | os.PathLike, tokenizer: str | os.PathLike | None = None,
              max_seq_length: int = 512, prompts: Prompts = Prompts(), truncate_dim: int | None = None) -> Path:
    """Write the model's Hugging Face folder (its `RetrievalModel.export_hf` layout), atomically.

    `tokenizer`: a SentencePiece model path, a Hugging Face tokenizer folder, "byte" for ByT5, or None.
    `prompts` go into config_sentence_transformers.json, where `encode_query` / `encode_document` apply them.
    `truncate_dim`: a dual encoder exported to give its first `truncate_dim` dimensions (re-normalised when the
    model normalises), what `polyret encode --truncate_dim` gives.
    """
    with atomic_output_dir(output_dir, kind="hf_export") as tmp:
        build_model(config).export_hf(params, tmp, tokenizer, max_seq_length, truncate_dim)
        write_to_sentence_transformers(tmp, prompts)
    return Path(output_dir)


def init_params(config: Any, rng: jax.Array) -> tuple[Any, Any]:
    """-> (params, logical PartitionSpec tree) of a fresh model for `config`."""
    return build_model(config).init(rng)


def model_config_to_dict(config: Any) -> dict[str, Any]:
    return build_model(config).to_dict()


def model_config_from_dict(d: dict[str, Any]) -> Any:
    """model_config.json -> tower config, by its `kind`."""
    d = dict(d)
    kind = d.pop("kind", None)
    if kind not in _REGISTRY:
        raise ValueError(f"unknown model kind {kind!r} (known: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[kind].config_class.from_dict(d)


def expected_param_shapes(config: Any) -> dict[str, tuple[int, ...]]:
    """'/'-joined parameter path -> shape, without allocating the parameters."""
    shapes = build_model(config).abstract_params()[0]
    return {"/".join(k): tuple(v.shape) for k, v in traverse_util.flatten_dict(shapes).items()}


def check_param_shapes(params: Any, config: Any, source: str) -> None:
    """Raise ValueError naming every parameter that is missing, unexpected or of the wrong shape."""
    expected = expected_param_shapes(config)
    got = {"/".join(k): tuple(np.shape(v)) for k, v in traverse_util.flatten_dict(params).items()}
    problems = [f"{p} is missing (the model config expects shape {expected[p]})" for p in expected if p not in got]
    problems += [f"{p} has shape {got[p]}, the model config expects {expected[p]}" for p in expected
                 if p in got and got[p] != expected[p]]
    problems += [f"{p} (shape {got[p]}) is not in the model config" for p in sorted(set(got) - set(expected))]
    if problems:
        more = f"; and {len(problems) - 6} more" if len(problems) > 6 else ""
        raise ValueError(f"{source}: parameters do not match the model config ({type(config).__name__}, "
                         f"{config.encoder.num_layers} layers; is the variant, e.g. T5 1.0 'wi' vs gated "
                         f"'wi_0'/'wi_1', or the tower layout right?): " + "; ".join(problems[:6]) + more)

