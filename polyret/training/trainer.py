"""The train loop: one jitted step over the global batch, sharded by logical axes, checkpointed and resumable.

Everything is configured through gin (see gin_configs/runs/); `train` checks the configuration (mesh,
batch, task, vocabulary) before anything is compiled, so a mistake costs seconds, not a compilation.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
import seqio
from flax import linen as nn
from flax import traverse_util
from tqdm.auto import tqdm

from polyret.models.checkpoint import CONFIG_FILE, LORA_BASE_FILE, SPM_FILE, load_model
from polyret.models.lora import LORA_A, LORA_B
from polyret.models.towers import (ColBERTConfig, ModelConfig, abstract_params, build_model, init_params,
                                   model_config_to_dict)
from polyret.seqio_tasks import feature_converters as fc
from polyret.seqio_tasks import tasks as seqio_tasks
from polyret.training import partitioning as part
from polyret.training.partitioning import ConfigError
from polyret.training.checkpoints import TrainCheckpointer, abstract_like
from polyret.training.grad_cache import grad_cache_loss_and_grads
from polyret.training.objectives import Objective, compute_loss
from polyret.training.optimizers import learning_rate_schedule, lora_trainable, make_optimizer


@dataclasses.dataclass
class TrainResult:
    params: Any
    step: int
    losses: list[float]
    model_dir: Path


def _feature_converter(objective: Objective, task: seqio.Task | seqio.Mixture) -> seqio.FeatureConverter:
    features = set(task.output_features)
    if objective.distillation:
        return fc.DistillationFeatureConverter()
    if "negative_targets" in features:
        return fc.HardNegativeFeatureConverter()
    return fc.DualEncoderFeatureConverter()


def _task_vocabulary(task) -> seqio.Vocabulary:
    return task.output_features["inputs"].vocabulary


def _check_config(mesh, batch_size: int, task_name: str, model_config: ModelConfig, objective: Objective,
                  grad_cache_chunks: int) -> seqio.Task:
    shards = part.batch_size_per_shard(mesh)
    if batch_size % shards:
        raise ConfigError(f"batch size {batch_size} is not divisible by the {shards} batch shards of the mesh "
                          f"{dict(mesh.shape)}; set BATCH_SIZE to a multiple of {shards}")
    if batch_size % jax.process_count():
        raise ConfigError(f"batch size {batch_size} is not divisible by the {jax.process_count()} hosts")
    if grad_cache_chunks and (batch_size // jax.process_count()) % grad_cache_chunks:
        raise ConfigError(f"train.grad_cache_chunks={grad_cache_chunks} does not divide the batch {batch_size}")
    if grad_cache_chunks and isinstance(model_config, ColBERTConfig):
        raise ConfigError("train.grad_cache_chunks is for dual encoders; set it to 0 for ColBERT")
    try:
        task = seqio.get_mixture_or_task(task_name)
    except ValueError as e:
        raise ConfigError(f"MIXTURE_OR_TASK_NAME {task_name!r} is not registered; register it (import your tasks "
                          f"module in the gin file or set train.data_setup) — {e}") from None
    vocab = _task_vocabulary(task)
    if vocab.vocab_size > model_config.encoder.vocab_size:
        raise ConfigError(f"task {task_name!r} uses a vocabulary of {vocab.vocab_size} ids but the model embeds only "
                          f"{model_config.encoder.vocab_size}; set t5_config.vocab_size (or T5Config.vocab_size) to at "
                          f"least {vocab.vocab_size}, or use the model's own vocabulary")
    if objective.distillation != ("passages" in task.output_features):
        raise ConfigError(f"Objective.kind={objective.kind!r} does not fit task {task_name!r} "
                          f"(features {sorted(task.output_features)})")
    return task


def _initial_params(model_config: ModelConfig, fresh: Any, shardings: Any, path: str | None) -> tuple[Any, set]:
    """Lay an imported checkpoint's parameters over a fresh initialisation; what it lacks stays fresh.
    Each host reads the file and places only its own shards (works on multi-host meshes)."""
    flat = traverse_util.flatten_dict(fresh)
    if not path:
        return fresh, set(flat)
    loaded, loaded_config, _ = load_model(path)
    if loaded_config.encoder.vocab_size != model_config.encoder.vocab_size:
        raise ConfigError(f"INITIAL_CHECKPOINT_PATH {path} has vocabulary {loaded_config.encoder.vocab_size}, the "
                          f"model config {model_config.encoder.vocab_size}; use the checkpoint's model preset")
    loaded_flat = traverse_util.flatten_dict(loaded)
    flat_shardings = traverse_util.flatten_dict(shardings)
    for key, value in loaded_flat.items():
        if key not in flat:
            continue
        if tuple(np.shape(value)) != tuple(flat[key].shape):
            raise ConfigError(f"INITIAL_CHECKPOINT_PATH {path}: parameter {'/'.join(key)} has shape "
                              f"{np.shape(value)}, the model config expects {tuple(flat[key].shape)}")
        value = np.asarray(value, flat[key].dtype)
        flat[key] = jax.make_array_from_callback(value.shape, flat_shardings[key], lambda idx, v=value: v[idx])
    return traverse_util.unflatten_dict(flat), {k for k in flat if k not in loaded_flat}


def _write_run_files(model_dir: Path, model_config: ModelConfig, vocab: seqio.Vocabulary,
                     lora_base: str | None) -> None:
    if jax.process_index() != 0:
        return
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / CONFIG_FILE).write_text(json.dumps(model_config_to_dict(model_config), indent=2))
    if isinstance(vocab, seqio.SentencePieceVocabulary):
        shutil.copyfile(vocab.sentencepiece_model_file, model_dir / SPM_FILE)
    if lora_base:
        (model_dir / LORA_BASE_FILE).write_text(json.dumps({"base_checkpoint": str(Path(lora_base).absolute())}))
    (model_dir / "config.gin").write_text(gin.operative_config_str() or gin.config_str())


def _split_lora(params: Any) -> Any:
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({k: v for k, v in flat.items() if k[-1] in (LORA_A, LORA_B)})


@gin.configurable
def train(model_dir: str = gin.REQUIRED, mixture_or_task_name: str = gin.REQUIRED,
          task_feature_lengths: Mapping[str, int] = gin.REQUIRED, train_steps: int = gin.REQUIRED,
          model_config: ModelConfig = gin.REQUIRED, batch_size: int = 32, objective: Objective = Objective(),
          initial_checkpoint_path: str | None = None, learning_rate: optax.Schedule | None = None,
          grad_cache_chunks: int = 0, checkpoint_every: int = 1000, keep_checkpoints: int | None = 3,
          async_checkpointing: bool = True, log_every: int = 10, seed: int = 0, shuffle: bool = True,
          single_language_batches: bool = False, data_setup: Callable[[], Any] | None = None,
          progress: bool = True) -> TrainResult:
    """Train `model_config` on `mixture_or_task_name` for `train_steps` steps; resumes from MODEL_DIR.

    `initial_checkpoint_path`: parameters to start from (polyret checkpoint, e.g. from import_checkpoint);
    heads it lacks are created fresh. With LoRA in the model config, only the adapters and fresh heads
    train and only they are checkpointed (the base is referenced by path).
    """
    start_time = time.time()
    model_dir = Path(model_dir).absolute()
    if data_setup is not None:
        data_setup()
    mesh = part.create_mesh()
    rules = part.logical_axis_rules()
    task = _check_config(mesh, batch_size, mixture_or_task_name, model_config, objective, grad_cache_chunks)
    converter = _feature_converter(objective, task)
    lora = model_config.encoder.lora is not None
    if lora and not initial_checkpoint_path:
        raise ConfigError("LoRA training needs INITIAL_CHECKPOINT_PATH (the frozen base)")

    model = build_model(model_config)
    init_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(seed))
    abstract, logical_specs = abstract_params(model_config)
    param_sharding = part.param_shardings(logical_specs, mesh, rules)
    params = jax.jit(lambda r: init_params(model_config, r)[0], out_shardings=param_sharding)(init_rng)
    params, fresh_paths = _initial_params(model_config, params, param_sharding, initial_checkpoint_path)
    trainable = lora_trainable(params, fresh_paths) if lora else None
    schedule = learning_rate or learning_rate_schedule()
    tx = make_optimizer(schedule, trainable=trainable)
    abstract_opt = jax.eval_shape(tx.init, abstract)
    opt_sharding = part.like_params_shardings(abstract_opt, abstract, param_sharding, mesh)
    opt_state = jax.jit(tx.init, out_shardings=opt_sharding)(params)

    checkpointer = TrainCheckpointer(model_dir, checkpoint_every, keep_checkpoints, async_checkpointing)
    start_step = checkpointer.latest_step() or 0
    if start_step:
        saved = _split_lora(params) if lora else params
        saved_sharding = _split_lora(param_sharding) if lora else param_sharding
        restored, opt_state = checkpointer.restore(start_step, abstract_like(saved, saved_sharding),
                                                   abstract_like(opt_state, opt_sharding))
        if lora:
            flat = traverse_util.flatten_dict(params)
            flat.update(traverse_util.flatten_dict(restored))
            restored = traverse_util.unflatten_dict(flat)
        params = restored
    _write_run_files(model_dir, model_config, _task_vocabulary(task), initial_checkpoint_path if lora else None)

    def loss_and_grads(p, batch, step_rng):
        if grad_cache_chunks:
            return grad_cache_loss_and_grads(model, p, batch, objective, grad_cache_chunks, step_rng)
        return jax.value_and_grad(lambda q: compute_loss(model, q, batch, objective, step_rng), has_aux=True)(p)

    def train_step(p, o, batch, step):
        step_rng = jax.random.fold_in(dropout_rng, step)  # the same key for the same step, resumed or not
        with nn.logical_axis_rules(list(rules)):
            (loss, metrics), grads = loss_and_grads(p, batch, step_rng)
        updates, o = tx.update(grads, o, p)
        p = optax.apply_updates(p, updates)
        metrics = {**metrics, "loss": loss, "grad_norm": optax.global_norm(grads), "learning_rate": schedule(step)}
        return p, o, metrics

    batch_sharding = part.batch_sharding(mesh)
    step_fn = jax.jit(train_step, in_shardings=(param_sharding, opt_sharding, batch_sharding, None),
                      out_shardings=(param_sharding, opt_sharding, None), donate_argnums=(0, 1))

    shard_info = seqio.ShardInfo(jax.process_index(), jax.process_count()) if jax.process_count() > 1 else None
    dataset = seqio_tasks.batched_dataset(mixture_or_task_name, task_feature_lengths,
                                          batch_size // jax.process_count(), converter, shuffle=shuffle, seed=seed,
                                          shard_info=shard_info, single_language_batches=single_language_batches)
    dataset = dataset.skip(start_step)  # resume at the same data position

    from clu import metric_writers
    writer = metric_writers.create_default_writer(str(model_dir / "tensorboard"),
                                                  just_logging=jax.process_index() > 0)
    losses: list[float] = []
    bar = tqdm(total=train_steps, initial=start_step, desc="training", unit="step",
               disable=not progress or jax.process_index() > 0)
    window_start, window_examples, window_tokens = time.time(), 0, 0
    step = start_step
    iterator = dataset.as_numpy_iterator()
    with mesh:
        while step < train_steps:
            local = next(iterator)
            batch = {k: jax.make_array_from_process_local_data(batch_sharding, v) for k, v in local.items()}
            params, opt_state, metrics = step_fn(params, opt_state, batch, jnp.int32(step))
            loss = float(metrics["loss"])
            if not math.isfinite(loss):
                checkpointer.wait()
                good = checkpointer.latest_step()
                raise FloatingPointError(f"step {step + 1}: loss is {loss}; stopped. The last good checkpoint "
                                         f"(step {good}) is kept in {checkpointer.directory}")
            step += 1
            losses.append(loss)
            window_examples += batch_size
            window_tokens += sum(int(np.count_nonzero(v)) for k, v in local.items() if k.endswith("tokens"))
            checkpointer.save(step, _split_lora(params) if lora else params, opt_state, force=step == train_steps)
            if step % log_every == 0 or step == train_steps:
                elapsed = max(time.time() - window_start, 1e-9)
                scalars = {k: float(v) for k, v in metrics.items()}
                scalars.update(examples_per_second=window_examples / elapsed,
                               tokens_per_second=window_tokens * jax.process_count() / elapsed)
                writer.write_scalars(step, scalars)
                bar.set_postfix(loss=f"{loss:.4f}", acc=f"{scalars.get('accuracy', 0):.3f}")
                window_start, window_examples, window_tokens = time.time(), 0, 0
            bar.update(1)
    bar.close()
    checkpointer.wait()
    checkpointer.close()
    writer.flush()
    if jax.process_index() == 0 and progress:
        print(f"trained to step {step} in {time.time() - start_time:.1f} s; checkpoints in {checkpointer.directory}")
    return TrainResult(params, step, losses, model_dir)
