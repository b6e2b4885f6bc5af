"""polyret's model checkpoint folder: parameters (orbax) + model config + optional vocabulary.

  DIR/model_config.json   {"kind": "dual_encoder" | "colbert", ...}   (see towers.model_config_to_dict)
  DIR/params/             orbax StandardCheckpointer tree of numpy/jax arrays
  DIR/spiece.model        the SentencePiece model, when the model has one

Writes go to a temporary sibling folder that is renamed into place only when complete, so a failed
or interrupted write never leaves a half-written checkpoint at DIR.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import jax
import numpy as np
import orbax.checkpoint as ocp

from polyret.models.towers import ModelConfig, check_param_shapes, model_config_from_dict, model_config_to_dict

CONFIG_FILE = "model_config.json"
PARAMS_DIR = "params"
SPM_FILE = "spiece.model"


@contextlib.contextmanager
def atomic_output_dir(output_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp folder beside `output_dir`; on success it replaces `output_dir`, on error it is removed."""
    output_dir = Path(output_dir).absolute()
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if output_dir.exists():
        shutil.rmtree(output_dir)
    os.rename(tmp, output_dir)


def save_model(output_dir: str | os.PathLike, params: Any, config: ModelConfig,
               spm_path: str | os.PathLike | None = None) -> Path:
    params = jax.tree_util.tree_map(np.asarray, params)
    with atomic_output_dir(output_dir) as tmp:
        (tmp / CONFIG_FILE).write_text(json.dumps(model_config_to_dict(config), indent=2))
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(tmp / PARAMS_DIR, params)
        checkpointer.wait_until_finished()
        if spm_path:
            shutil.copyfile(spm_path, tmp / SPM_FILE)
    return Path(output_dir)


def load_model(checkpoint_dir: str | os.PathLike) -> tuple[Any, ModelConfig, Path | None]:
    """-> (params as numpy, model config, path of the SentencePiece model or None)."""
    checkpoint_dir = Path(checkpoint_dir)
    config_file = checkpoint_dir / CONFIG_FILE
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file}: missing; is {checkpoint_dir} a polyret checkpoint folder?")
    try:
        config = model_config_from_dict(json.loads(config_file.read_text()))
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"{config_file}: not a valid model config: {e}") from e
    params_dir = checkpoint_dir / PARAMS_DIR
    if not params_dir.is_dir():
        raise FileNotFoundError(f"{params_dir}: missing parameter folder")
    try:
        params = ocp.StandardCheckpointer().restore(params_dir.absolute())
    except Exception as e:  # orbax raises several types for damaged folders
        raise ValueError(f"{params_dir}: cannot read parameters: {e}") from e
    params = jax.tree_util.tree_map(np.asarray, params)
    check_param_shapes(params, config, str(params_dir))
    spm = checkpoint_dir / SPM_FILE
    return params, config, (spm if spm.is_file() else None)
