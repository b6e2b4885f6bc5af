"""Training state set-up: fresh parameters on the mesh, an imported starting checkpoint, LoRA freezing,
the optimizer with its state sharded like the parameters, and resumption from MODEL_DIR.

`setup_state` is everything before the first step; the step itself is `trainer.make_train_step`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import gin
import jax
import numpy as np
import optax
import seqio
from flax import traverse_util
from jax.sharding import Mesh

from polyret.models.model_folder import (CONFIG_FILE, LORA_BASE_FILE, load_model, read_model_config_dict,
                                         store_tokenizer)
from polyret.models.layer_stack import EXECUTION_ONLY_FIELDS
from polyret.models.lora import LORA_A, LORA_B
from polyret.models.prompts import PROMPTS_FILE, Prompts, read_prompts, write_prompts
from polyret.models.retrieval_model import RetrievalModel, is_created_parameter, model_config_to_dict
from polyret.seqio_tasks.vocab import vocabulary_source
from polyret.training import partitioning as part
from polyret.training.train_checkpoints import CheckpointConfig, TrainCheckpointer, abstract_like
from polyret.training.optimizers import lora_trainable, make_optimizer
from polyret.training.partitioning import ConfigError


@dataclasses.dataclass
class TrainState:
    """Everything the loop needs: sharded params and optimizer state, the optimizer, where to resume."""

    params: Any
    opt_state: Any
    step: int
    tx: optax.GradientTransformation
    param_sharding: Any
    opt_sharding: Any
    checkpointer: TrainCheckpointer
    lora: bool
    trainable: Any = None  # LoRA: True for the parameters trained (adapters, fresh heads); None: all

    def saved_params(self) -> Any:
        """What a checkpoint stores: everything, or with LoRA only the adapters and fresh heads' leaves."""
        return split_lora(self.params) if self.lora else self.params


def split_lora(params: Any) -> Any:
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({k: v for k, v in flat.items() if k[-1] in (LORA_A, LORA_B)})


def _initial_params(model: RetrievalModel, fresh: Any, shardings: Any, path: str | None) -> tuple[Any, set]:
    """Lay an imported checkpoint's parameters over a fresh initialisation. Only heads the run creates may
    be missing from the checkpoint; any other difference (layers, towers, shapes) is refused by name.
    Each host reads the file and places only its own shards (works on multi-host meshes)."""
    flat = traverse_util.flatten_dict(fresh)
    if not path:
        return fresh, set(flat)
    loaded, loaded_config, _ = load_model(path)
    if type(loaded_config) is not type(model.config):
        raise ConfigError(f"INITIAL_CHECKPOINT_PATH {path} is a {type(loaded_config).__name__} checkpoint; the run "
                          f"trains a {type(model.config).__name__} (import the encoder with "
                          f"`polyret import_checkpoint --tower ...` to change the tower)")
    loaded_flat = traverse_util.flatten_dict(loaded)
    name = lambda k: "/".join(k)
    unexpected = sorted(name(k) for k in loaded_flat if k not in flat)
    missing = sorted(name(k) for k in flat if k not in loaded_flat and not is_created_parameter(k))
    wrong = [f"{name(k)} {np.shape(v)} (run expects {tuple(flat[k].shape)})" for k, v in loaded_flat.items()
             if k in flat and tuple(np.shape(v)) != tuple(flat[k].shape)]
    if unexpected or missing or wrong:
        problems = [f"{label}: {', '.join(items[:5])}{' ...' if len(items) > 5 else ''}"
                    for label, items in (("not in this model", unexpected), ("missing", missing),
                                         ("wrong shape", wrong)) if items]
        raise ConfigError(f"INITIAL_CHECKPOINT_PATH {path} ({type(loaded_config).__name__}, "
                          f"{loaded_config.encoder.num_layers} layers) does not fit the run's model "
                          f"({type(model.config).__name__}, {model.config.encoder.num_layers} layers): "
                          + "; ".join(problems))
    flat_shardings = traverse_util.flatten_dict(shardings)
    for key, value in loaded_flat.items():
        value = np.asarray(value, flat[key].dtype)
        flat[key] = jax.make_array_from_callback(value.shape, flat_shardings[key], lambda idx, v=value: v[idx])
    return traverse_util.unflatten_dict(flat), {k for k in flat if k not in loaded_flat}


def _write_run_files(model_dir: Path, model: RetrievalModel, vocab: seqio.Vocabulary, lora_base: str | None,
                     resuming: bool, prompts: Prompts) -> None:
    """model_config.json and prompts.json (refusing to change either under existing checkpoints), vocabulary,
    gin config."""
    if jax.process_index() != 0:
        return
    model_dir.mkdir(parents=True, exist_ok=True)
    config_file = model_dir / CONFIG_FILE
    config = model_config_to_dict(model.config)
    if resuming and config_file.is_file():
        old = read_model_config_dict(config_file)
        changed = _dict_diff(old, json.loads(json.dumps(config)))
        # How the layers execute (scan, remat) does not change the parameters: a run may switch on resume.
        changed = [c for c in changed if c.split(":")[0].split(".")[-1] not in EXECUTION_ONLY_FIELDS]
        if changed:
            raise ConfigError(f"{config_file}: the run's model config differs from the checkpoints' "
                              f"({'; '.join(changed[:4])}); use a new MODEL_DIR or restore the settings")
    if resuming and (model_dir / PROMPTS_FILE).is_file() and read_prompts(model_dir) != prompts:
        raise ConfigError(f"{model_dir / PROMPTS_FILE}: the checkpoints were trained with the prompts "
                          f"{read_prompts(model_dir)}, this run has {prompts}; use a new MODEL_DIR or restore them "
                          "(train.query_prompt / train.passage_prompt)")
    config_file.write_text(json.dumps(config, indent=2))
    (model_dir / PROMPTS_FILE).unlink(missing_ok=True)
    write_prompts(model_dir, prompts)
    store_tokenizer(vocabulary_source(vocab), model_dir)
    if lora_base:
        (model_dir / LORA_BASE_FILE).write_text(json.dumps({"base_checkpoint": str(Path(lora_base).absolute())}))
    (model_dir / "config.gin").write_text(gin.operative_config_str() or gin.config_str())


def _dict_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _dict_diff(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


def setup_state(model: RetrievalModel, mesh: Mesh, rules: part.Rules, model_dir: Path, vocab: seqio.Vocabulary,
                schedule: optax.Schedule, checkpointing: CheckpointConfig, initial_checkpoint_path: str | None,
                seed: int, prompts: Prompts = Prompts()) -> TrainState:
    """Initialise (or import, or resume) the parameters and optimizer state, sharded over `mesh`; the run's
    `prompts` are kept in MODEL_DIR with its model config."""
    lora = model.config.encoder.lora is not None
    if lora and not initial_checkpoint_path:
        raise ConfigError("LoRA training needs INITIAL_CHECKPOINT_PATH (the frozen base)")
    abstract, logical_specs = model.abstract_params()
    param_sharding = part.param_shardings(logical_specs, mesh, rules)
    init_rng = jax.random.PRNGKey(seed)
    params = jax.jit(lambda r: model.init(r)[0], out_shardings=param_sharding)(init_rng)
    params, fresh_paths = _initial_params(model, params, param_sharding, initial_checkpoint_path)
    trainable = lora_trainable(params, fresh_paths) if lora else None
    tx = make_optimizer(schedule, trainable=trainable)
    abstract_opt = jax.eval_shape(tx.init, abstract)
    opt_sharding = part.optimizer_state_shardings(abstract_opt, abstract, logical_specs, mesh, rules)
    opt_state = jax.jit(tx.init, out_shardings=opt_sharding)(params)

    checkpointer = TrainCheckpointer(model_dir, checkpointing)
    state = TrainState(params, opt_state, checkpointer.latest_step() or 0, tx, param_sharding, opt_sharding,
                       checkpointer, lora, trainable)
    _write_run_files(model_dir, model, vocab, initial_checkpoint_path if lora else None, resuming=state.step > 0,
                     prompts=prompts)
    if state.step:
        saved_sharding = split_lora(param_sharding) if lora else param_sharding
        # The newest step that reads back; a damaged later one is moved aside with a warning.
        state.step, restored, state.opt_state = checkpointer.restore_latest(
            abstract_like(state.saved_params(), saved_sharding), abstract_like(opt_state, opt_sharding))
        flat = traverse_util.flatten_dict(params)
        flat.update(traverse_util.flatten_dict(restored))
        state.params = traverse_util.unflatten_dict(flat)
    return state
