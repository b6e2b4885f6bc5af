"""Bring external checkpoints (T5X, Hugging Face) into polyret's tower configs and checkpoint folder."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import linen as nn
from flax import traverse_util

from polyret.models import colbert_x as cx
from polyret.models.encoder_families import family_of
from polyret.models.cross_encoder import CrossEncoderConfig, fresh_head, pair_layout
from polyret.models.hf import (COLBERT_SETTINGS_FILE, CROSS_ENCODER_SETTINGS_FILE, dual_encoder_config_from_hf,
                               load_cross_encoder_head, load_hf_encoder, load_st_projection)
from polyret.models.hf_files import read_hf_config, read_safetensors
from polyret.models.model_folder import save_model
from polyret.models.model_names import resolve_model
from polyret.models.prompts import Prompts, from_sentence_transformers
from polyret.models.retrieval_model import build_model, check_param_shapes
from polyret.models.t5x import infer_t5_config, load_t5x_params
from polyret.models.towers import ColBERTConfig, DualEncoderConfig, ModelConfig, hidden_size, projection_head

# PLAID-X (hltcoe/ColBERT-X) checkpoint folders: HF_ColBERT weights (`roberta.*` / `bert.*` + `linear.weight`,
# the bias-free projection [dim, hidden]) and the ColBERT settings in artifact.metadata (JSON).
PLAIDX_METADATA = "artifact.metadata"

_TOWER_KEYS = ("token_embedder", "encoder", "projection_layer")


def import_checkpoint(*, t5x_path: str | None = None, hf_path: str | None = None, tower: str | None = None,
                      pooling: str | None = None, l2_norm: bool = True, projection_dim: int | None = None
                      ) -> tuple[dict[str, Any], ModelConfig]:
    """Read a T5X or HF checkpoint -> (params, tower config), shapes checked against the config.

    `tower`: 'dual_encoder' or 'colbert'; None reads it off the folder (a ColBERT export carries
    `polyret_colbert.json`, else dual encoder)."""
    if (t5x_path is None) == (hf_path is None):
        raise ValueError("give exactly one of t5x_path / hf_path")
    if t5x_path is not None:
        raw = load_t5x_params(t5x_path)
        params = {k: v for k, v in raw.items() if k in _TOWER_KEYS}
        encoder = infer_t5_config(params)
        projection = params.get("projection_layer", {}).get("kernel")
        dual = DualEncoderConfig(encoder=encoder, projection_dim=None if projection is None else projection.shape[1])
        source = str(t5x_path)
    else:
        hf_path = str(resolve_model(hf_path))
        encoder, params = load_hf_encoder(hf_path)
        projection = load_st_projection(hf_path)
        if projection is not None:
            params["projection_layer"] = {"kernel": projection}
        dual = dual_encoder_config_from_hf(hf_path, encoder, projection)
        source = str(hf_path)
    colbert_settings = None
    if hf_path is not None and (Path(hf_path) / COLBERT_SETTINGS_FILE).is_file():
        colbert_settings = json.loads((Path(hf_path) / COLBERT_SETTINGS_FILE).read_text())
    plaidx = None if hf_path is None or colbert_settings is not None else read_plaidx_settings(hf_path)
    if plaidx is not None and projection is None:
        projection = load_plaidx_projection(hf_path)
    if tower is None and hf_path is not None and _is_sequence_classification(hf_path):
        tower = "cross_encoder"
    tower = tower or ("colbert" if colbert_settings is not None or plaidx is not None else "dual_encoder")
    if tower == "cross_encoder":
        if hf_path is None:
            raise ValueError("a cross-encoder is imported from a Hugging Face folder (--hf)")
        config, params = _cross_encoder_import(params, encoder, hf_path)
        check_param_shapes(params, config, source)
        return params, config
    # ColBERT over an encoder with a Hugging Face tokenizer is built as ColBERT-X (PLAID-X's markers).
    if tower == "colbert" and colbert_settings is None and family_of(encoder).tokenizer_kind == "hf":
        config, params = _colbert_x_import(params, encoder, hf_path, plaidx or {}, projection, projection_dim)
    elif colbert_settings is not None and tower == "colbert":
        if projection is None:
            raise ValueError(f"{hf_path}: a ColBERT export without its projection (1_Dense/model.safetensors "
                             "is missing or modules.json lists no Dense module)")
        config = ColBERTConfig.from_dict({**colbert_settings, "encoder": dataclasses.asdict(encoder)})
    elif tower == "dual_encoder":
        config: ModelConfig = DualEncoderConfig(
            encoder=encoder, pooling=pooling or dual.pooling, l2_norm=l2_norm and dual.l2_norm,
            projection_dim=dual.projection_dim)
    elif tower == "colbert":
        dim = projection.shape[1] if projection is not None else (projection_dim or 128)
        config = ColBERTConfig(encoder=encoder, projection_dim=int(dim),
                               query_mask_token_id=min(250099, encoder.vocab_size - 1))
        if projection is None:  # a fresh head, as when training starts from a plain encoder
            fresh, _ = build_model(config).init(jax.random.PRNGKey(0))
            params["projection_layer"] = jax.tree_util.tree_map(np.asarray, fresh["projection_layer"])
    else:
        raise ValueError(f"tower must be 'dual_encoder' or 'colbert', got {tower!r}")
    check_param_shapes(params, config, source)
    return params, config


def _is_sequence_classification(folder: str | os.PathLike) -> bool:
    return any(a.endswith("ForSequenceClassification") for a in read_hf_config(folder).get("architectures") or [])


def _cross_encoder_import(params: dict[str, Any], encoder: Any, hf_path: str) -> tuple[CrossEncoderConfig, dict]:
    """A `*ForSequenceClassification` folder (a sentence-transformers CrossEncoder), or any encoder with a fresh
    score head (to train a reranker from it); the pair layout is read off its tokenizer."""
    settings_file = Path(hf_path) / CROSS_ENCODER_SETTINGS_FILE
    if settings_file.is_file():
        settings = json.loads(settings_file.read_text())
        settings.pop("max_seq_length", None)
        config = CrossEncoderConfig.from_dict({**settings, "encoder": dataclasses.asdict(encoder)})
    else:
        try:
            head = family_of(encoder).classification_head(encoder)
        except NotImplementedError:  # no Hugging Face head layout (T5): mean pooling, a fresh head
            head = {"pooling": "mean", "activation": "tanh"}
        # Imported here: the vocabulary wrapper needs TensorFlow (seqio), which loading weights does not.
        from polyret.seqio_tasks.vocab import get_vocabulary
        tokenizer = family_of(encoder).hf_tokenizer(hf_path)
        layout = pair_layout(get_vocabulary(tokenizer)) if tokenizer else pair_layout(None)
        config = CrossEncoderConfig(encoder=encoder, pooling=layout.pop("pooling", head["pooling"]),
                                    head_activation=head["activation"], **layout)
    head_params = load_cross_encoder_head(hf_path, encoder) if _is_sequence_classification(hf_path) else None
    if head_params is None:  # a fresh head, as sentence-transformers' CrossEncoder starts from a plain encoder
        head_params = fresh_head(config)
    return config, {**params, **head_params}


def read_plaidx_settings(folder: str | os.PathLike) -> dict[str, Any] | None:
    """PLAID-X's ColBERT settings (artifact.metadata) of a checkpoint folder, or None when it has none."""
    path = Path(folder) / PLAIDX_METADATA
    if not path.is_file():
        return None
    try:
        settings = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from e
    settings = settings.get("config", settings)
    if settings.get("similarity", "cosine") != "cosine":
        raise ValueError(f"{path}: similarity {settings['similarity']!r} is not supported (only 'cosine')")
    return settings


def load_plaidx_projection(folder: str | os.PathLike) -> np.ndarray | None:
    """PLAID-X's projection `linear.weight` [dim, hidden] as our kernel [hidden, dim], or None."""
    weight = read_safetensors(folder).get("linear.weight")
    return None if weight is None else np.asarray(weight, np.float32).T


def _colbert_x_import(params: dict[str, Any], encoder: Any, hf_path: str, plaidx: dict[str, Any],
                      projection: np.ndarray | None, projection_dim: int | None) -> tuple[ColBERTConfig, dict]:
    """A Hugging Face checkpoint (BERT / XLM-R, ...) as ColBERT-X the way PLAID-X builds it: settings from artifact.metadata
    (PLAID-X's defaults otherwise), markers from the tokenizer; markers the tokenizer lacks get new
    embedding rows drawn as transformers' resize_token_embeddings drew them for PLAID-X (normal, std 0.02)."""
    if plaidx and projection is None:
        raise ValueError(f"{hf_path}: a PLAID-X checkpoint without its projection (linear.weight is missing "
                         "from model.safetensors)")
    dim = projection.shape[1] if projection is not None else (projection_dim or int(plaidx.get("dim", 128)))
    base = ColBERTConfig(encoder=encoder, projection_dim=int(dim), query_length=int(plaidx.get("query_maxlen", 32)),
                         document_length=int(plaidx.get("doc_maxlen", 220)),
                         attend_to_mask_tokens=bool(plaidx.get("attend_to_mask_tokens", False)))
    config = cx.with_colbert_x(base, hf_path, plaidx.get("query_token_id", cx.QUERY_TOKEN),
                               plaidx.get("doc_token_id", cx.DOCUMENT_TOKEN), bool(plaidx.get("mask_punctuation", True)))
    flat = traverse_util.flatten_dict(params)
    table_path = family_of(encoder).embedding_path
    table = np.asarray(flat[table_path])
    extra = config.encoder.vocab_size - table.shape[0]
    if extra > 0:
        rows = np.random.default_rng(0).normal(0.0, 0.02, (extra, table.shape[1])).astype(np.float32)
        flat[table_path] = np.concatenate([table, rows])
    params = traverse_util.unflatten_dict(flat)
    if projection is not None:
        params["projection_layer"] = {"kernel": projection}
    else:  # a fresh head, as when PLAID-X starts training from a plain encoder (only the head is initialised)
        head = projection_head(config.encoder, config.projection_dim)
        fresh = head.init(jax.random.PRNGKey(0), np.zeros((1, hidden_size(encoder)), np.float32), True)
        params["projection_layer"] = jax.tree_util.tree_map(np.asarray, nn.unbox(fresh)["params"])
    return config, params


def save_imported(params: dict[str, Any], config: ModelConfig, output_dir: str | os.PathLike,
                  hf_path: str | None = None, spm_model: str | None = None) -> Path:
    """Write the polyret checkpoint, carrying over an HF folder's tokenizer (SentencePiece model or HF files)
    and its sentence-transformers prompts."""
    hf_path = None if hf_path is None else str(resolve_model(hf_path))
    if spm_model is None and hf_path is not None:
        spm_model = family_of(config.encoder).hf_tokenizer(hf_path)
    if spm_model is not None and not Path(spm_model).exists():
        raise FileNotFoundError(f"{spm_model}: tokenizer not found")
    prompts = from_sentence_transformers(hf_path) if hf_path is not None else Prompts()
    return save_model(output_dir, params, config, spm_model, prompts)
