"""polyret's model checkpoint folder: parameters (orbax) + model config + optional vocabulary.

  DIR/model_config.json   {"kind": "dual_encoder" | "colbert", ...}   (see retrieval_model.model_config_to_dict)
  DIR/params/             orbax StandardCheckpointer tree of numpy/jax arrays
  DIR/spiece.model        the SentencePiece model, when the model has one (T5 family)
  DIR/tokenizer/          the Hugging Face tokenizer files, when the model has them (BERT family)

Writes go to a temporary sibling folder that is renamed into place only when complete, so a failed
or interrupted write never leaves a half-written checkpoint at DIR.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util

from polyret.models.retrieval_model import check_param_shapes, model_config_from_dict, model_config_to_dict
from polyret.models.towers import ModelConfig

CONFIG_FILE = "model_config.json"
PARAMS_DIR = "params"
SPM_FILE = "spiece.model"
TOKENIZER_DIR = "tokenizer"  # a Hugging Face tokenizer (BERT / XLM-R checkpoints)
LORA_BASE_FILE = "lora_base.json"


@contextlib.contextmanager
def atomic_output_dir(output_dir: str | os.PathLike, kind: str = "checkpoint") -> Iterator[Path]:
    """Yield a temp folder beside `output_dir`; on success it is swapped in atomically, on error removed.
    Only an earlier output of the same `kind` is replaced (see polyret.io.outputs)."""
    from polyret.io import outputs
    with outputs.atomic_output_dir(output_dir, kind) as tmp:
        yield tmp


def save_model(output_dir: str | os.PathLike, params: Any, config: ModelConfig,
               spm_path: str | os.PathLike | None = None) -> Path:
    params = jax.tree_util.tree_map(np.asarray, params)
    with atomic_output_dir(output_dir) as tmp:
        (tmp / CONFIG_FILE).write_text(json.dumps(model_config_to_dict(config), indent=2))
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(tmp / PARAMS_DIR, params)
        checkpointer.wait_until_finished()
        if spm_path and Path(spm_path).is_dir():
            copy_tokenizer_files(spm_path, tmp / TOKENIZER_DIR)
        elif spm_path:
            shutil.copyfile(spm_path, tmp / SPM_FILE)
    return Path(output_dir)


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


def stored_tokenizer(root: Path) -> Path | None:
    """The tokenizer kept with a checkpoint: its SentencePiece model, its HF tokenizer folder, or None."""
    for candidate in (root / SPM_FILE, root / TOKENIZER_DIR):
        if candidate.exists():
            return candidate
    return None


def copy_tokenizer_files(source: str | os.PathLike, target: Path) -> None:
    """Copy a Hugging Face tokenizer's files (tokenizer.json, vocab.txt, ...) from a checkpoint folder."""
    from polyret.models.hf_bert import TOKENIZER_FILES
    target.mkdir(parents=True, exist_ok=True)
    found = [name for name in TOKENIZER_FILES if (Path(source) / name).is_file()]
    if not found:
        raise FileNotFoundError(f"{source}: no tokenizer files ({', '.join(TOKENIZER_FILES)})")
    for name in found:
        shutil.copyfile(Path(source) / name, target / name)
