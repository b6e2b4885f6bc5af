"""polyret's model checkpoint folder: parameters (orbax) + model config + optional vocabulary.

  DIR/model_config.json   {"kind": "dual_encoder" | "colbert", "encoder": {"family": "t5" | "bert" | ...,
                          ...}, ...}   (see retrieval_model.model_config_to_dict)
  DIR/params/             orbax StandardCheckpointer tree of numpy/jax arrays
  DIR/spiece.model        the SentencePiece model, when the model has one (T5 family)
  DIR/tokenizer/          the Hugging Face tokenizer files, when the model has them (BERT-like families)
  DIR/prompts.json        the query and passage prompts, when the model has them (polyret/models/prompts.py)

Writes go to a temporary sibling folder that is renamed into place only when complete, so a failed
or interrupted write never leaves a half-written checkpoint at DIR.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import gin
import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util

from polyret.io.outputs import atomic_output_dir
from polyret.models.encoder_families import encoder_config_from_dict, encoder_config_to_dict
from polyret.models.hf_files import copy_tokenizer_files
from polyret.models.prompts import Prompts, read_prompts, write_prompts
from polyret.models.retrieval_model import check_param_shapes, model_config_from_dict, model_config_to_dict
from polyret.models.towers import ModelConfig

CONFIG_FILE = "model_config.json"
PARAMS_DIR = "params"
SPM_FILE = "spiece.model"
TOKENIZER_DIR = "tokenizer"  # a Hugging Face tokenizer (BERT / XLM-R checkpoints)
LORA_BASE_FILE = "lora_base.json"


def save_model(output_dir: str | os.PathLike, params: Any, config: ModelConfig,
               spm_path: str | os.PathLike | None = None, prompts: Prompts = Prompts()) -> Path:
    """Write a checkpoint folder atomically. `spm_path`: the tokenizer to keep with it (a SentencePiece
    model file or a Hugging Face tokenizer folder; None or "byte" for none); `prompts`: the model's."""
    params = jax.tree_util.tree_map(np.asarray, params)
    with atomic_output_dir(output_dir, "checkpoint") as tmp:
        (tmp / CONFIG_FILE).write_text(json.dumps(model_config_to_dict(config), indent=2))
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(tmp / PARAMS_DIR, params)
        checkpointer.wait_until_finished()
        store_tokenizer(spm_path, tmp)
        write_prompts(tmp, prompts)
    return Path(output_dir)


def store_tokenizer(source: str | os.PathLike | None, folder: Path) -> None:
    """Keep a tokenizer in a checkpoint folder or MODEL_DIR: a Hugging Face tokenizer folder's files go to
    `tokenizer/`, a SentencePiece model to `spiece.model`; None or "byte" (ByT5's bytes) store nothing."""
    if source is None or str(source) == "byte":
        return
    if Path(source).is_dir():
        copy_tokenizer_files(source, folder / TOKENIZER_DIR)
    else:
        shutil.copyfile(source, folder / SPM_FILE)


@gin.configurable
def checkpoint_model_config(path: str = gin.REQUIRED, overrides: dict[str, Any] | None = None) -> ModelConfig:
    """The model config stored with a checkpoint (to train from it as it is: `MODEL_CONFIG =
    @checkpoint_model_config()`), with `overrides` of the fields that config has (e.g. the dual encoder's
    logit_scale; a ColBERT config has none)."""
    root, _ = _locate(Path(path))
    config = model_config_from_dict(json.loads((root / CONFIG_FILE).read_text()))
    fields = {f.name for f in dataclasses.fields(config)}
    return dataclasses.replace(config, **{k: v for k, v in (overrides or {}).items() if k in fields})


def read_model_config_dict(config_file: Path) -> dict[str, Any]:
    """model_config.json as today's code writes it: files written before the encoder's `family` field get
    it filled in (see encoder_family.encoder_config_from_dict), so comparisons see no change."""
    stored = json.loads(config_file.read_text())
    if isinstance(stored.get("encoder"), dict) and "family" not in stored["encoder"]:
        stored["encoder"] = encoder_config_to_dict(encoder_config_from_dict(stored["encoder"]))
    return stored


def _restore_params(params_dir: Path) -> Any:
    try:
        params = ocp.StandardCheckpointer().restore(params_dir.absolute())
    except Exception as e:  # orbax raises several types for damaged folders
        raise ValueError(f"{params_dir}: cannot read parameters: {e}") from e
    return jax.tree_util.tree_map(np.asarray, params)


def _locate(checkpoint_dir: Path) -> tuple[Path, Path]:
    """-> (folder with model_config.json, parameter folder) for a polyret checkpoint, a training
    MODEL_DIR (its latest step) or one step folder MODEL_DIR/checkpoints/<step>."""
    if (checkpoint_dir / PARAMS_DIR).is_dir() and (checkpoint_dir / CONFIG_FILE).is_file():
        return checkpoint_dir, checkpoint_dir / PARAMS_DIR
    steps_dir = checkpoint_dir / "checkpoints"
    if steps_dir.is_dir() and (checkpoint_dir / CONFIG_FILE).is_file():
        steps = sorted(int(p.name) for p in steps_dir.iterdir() if p.name.isdigit() and (p / PARAMS_DIR).is_dir())
        if not steps:
            raise FileNotFoundError(f"{steps_dir}: no finished checkpoint yet")
        return checkpoint_dir, steps_dir / str(steps[-1]) / PARAMS_DIR
    if checkpoint_dir.name.isdigit() and (checkpoint_dir.parent.parent / CONFIG_FILE).is_file():
        return checkpoint_dir.parent.parent, checkpoint_dir / PARAMS_DIR
    raise FileNotFoundError(f"{checkpoint_dir / CONFIG_FILE}: missing; is {checkpoint_dir} a polyret checkpoint "
                            "folder or a training MODEL_DIR?")


def load_model(checkpoint_dir: str | os.PathLike) -> tuple[Any, ModelConfig, Path | None]:
    """-> (params as numpy, model config, tokenizer: SentencePiece model file, HF tokenizer folder or None).

    Accepts a polyret checkpoint folder, a training MODEL_DIR (latest step) or a step folder. A LoRA
    run stores only what it trained: those leaves are laid over the base named in `lora_base.json`.
    """
    root, params_dir = _locate(Path(checkpoint_dir))
    config_file = root / CONFIG_FILE
    try:
        config = model_config_from_dict(json.loads(config_file.read_text()))
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"{config_file}: not a valid model config: {e}") from e
    if not params_dir.is_dir():
        raise FileNotFoundError(f"{params_dir}: missing parameter folder")
    params = _restore_params(params_dir)
    base_file = root / LORA_BASE_FILE
    if base_file.is_file():
        base, _, _ = load_model(json.loads(base_file.read_text())["base_checkpoint"])
        flat = traverse_util.flatten_dict(base)
        flat.update(traverse_util.flatten_dict(params))
        params = traverse_util.unflatten_dict(flat)
    check_param_shapes(params, config, str(params_dir))
    return params, config, stored_tokenizer(root)


def load_prompts(checkpoint_dir: str | os.PathLike) -> Prompts:
    """The prompts kept with a checkpoint (a LoRA run's come from its base unless it has its own)."""
    root, _ = _locate(Path(checkpoint_dir))
    if not (root / "prompts.json").is_file() and (root / LORA_BASE_FILE).is_file():
        return load_prompts(json.loads((root / LORA_BASE_FILE).read_text())["base_checkpoint"])
    return read_prompts(root)


def stored_tokenizer(root: Path) -> Path | None:
    """The tokenizer kept with a checkpoint: its SentencePiece model, its HF tokenizer folder, or None."""
    for candidate in (root / SPM_FILE, root / TOKENIZER_DIR):
        if candidate.exists():
            return candidate
    return None
