"""Bring external checkpoints (T5X, Hugging Face) into polyret's tower configs and checkpoint folder."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

from polyret.models.checkpoint import save_model
from polyret.models.hf import COLBERT_SETTINGS_FILE, dual_encoder_config_from_hf, load_hf_encoder, load_st_projection
from polyret.models.t5x import infer_t5_config, load_t5x_params
from polyret.models.bert import BertConfig
from polyret.models.retrieval_model import build_model, check_param_shapes
from polyret.models.towers import ColBERTConfig, DualEncoderConfig, ModelConfig

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
        encoder, params = load_hf_encoder(hf_path)
        projection = load_st_projection(hf_path)
        if projection is not None:
            params["projection_layer"] = {"kernel": projection}
        dual = dual_encoder_config_from_hf(hf_path, encoder, projection)
        source = str(hf_path)
    colbert_settings = None
    if hf_path is not None and (Path(hf_path) / COLBERT_SETTINGS_FILE).is_file():
        colbert_settings = json.loads((Path(hf_path) / COLBERT_SETTINGS_FILE).read_text())
    tower = tower or ("colbert" if colbert_settings is not None else "dual_encoder")
    if colbert_settings is not None and tower == "colbert":
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


def save_imported(params: dict[str, Any], config: ModelConfig, output_dir: str | os.PathLike,
                  hf_path: str | None = None, spm_model: str | None = None) -> Path:
    """Write the polyret checkpoint, carrying over an HF folder's tokenizer (SentencePiece model or HF files)."""
    if spm_model is None and hf_path is not None:
        if (Path(hf_path) / "spiece.model").is_file():
            spm_model = str(Path(hf_path) / "spiece.model")
        elif isinstance(config.encoder, BertConfig):
            spm_model = hf_path  # the folder: its HF tokenizer files are kept with the checkpoint
    if spm_model is not None and not Path(spm_model).exists():
        raise FileNotFoundError(f"{spm_model}: tokenizer not found")
    return save_model(output_dir, params, config, spm_model)
