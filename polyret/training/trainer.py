"""The train loop: one jitted step over the global batch, sharded by logical axes, checkpointed and resumable.

Read top to bottom: `train` checks the configuration, builds the model from the registry, sets up the
state (`state.setup_state`), makes the step (`make_train_step`: the model's loss and gradients, then
the optax update), and loops: data -> step -> checkpoint; metrics reach the host only at log steps, and
an optional dev-set evaluation (`EvalConfig`) runs every N steps. Configured with gin in groups, as t5x:
`DatasetConfig`, `CheckpointConfig`, `EvalConfig`, the mesh (`create_mesh`, `logical_axis_rules`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
import seqio
from flax import linen as nn
from tqdm.auto import tqdm

from polyret.configuration import parse_gin
from polyret.io import preemption
from polyret.models.losses import Loss
from polyret.models.model_folder import load_prompts
from polyret.models.prompts import Prompts, choose_prompts
from polyret.models.retrieval_model import RetrievalModel, build_model
from polyret.models.towers import ModelConfig
from polyret.seqio_tasks.dataset import DatasetConfig, batched_dataset
from polyret.seqio_tasks.length_buckets import check_buckets, cut_to_buckets, longest_rows
from polyret.seqio_tasks.examples import BAD_RECORDS, bad_record_policy
from polyret.seqio_tasks.vocab import decodes_losslessly, prompt_token_ids
from polyret.training import partitioning as part
from polyret.training.train_checkpoints import CheckpointConfig
from polyret.training.optimizers import learning_rate_schedule
from polyret.training.partitioning import ConfigError
from polyret.training.state import TrainState, setup_state


@gin.configurable
@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """A dev set evaluated through the retrieval pipeline every `every` steps (0: never)."""

    every: int = 0
    corpus: str | None = None
    queries: str | None = None
    qrels: str | None = None
    metrics: tuple[str, ...] = ("nDCG@10",)
    query_max_length: int = 64
    passage_max_length: int = 256


@dataclasses.dataclass
class TrainResult:
    params: Any
    step: int
    losses: list[float]  # the loss at every log step
    model_dir: Path
    skipped_records: int = 0  # bad records skipped (DatasetConfig.skip_bad_records), all hosts


def make_train_step(model: RetrievalModel, tx: optax.GradientTransformation, schedule: optax.Schedule,
                    rules: part.Rules, dropout_rng: jax.Array, trainable: Any = None) -> Callable:
    """(params, opt_state, batch, step) -> (params, opt_state, metrics): the model's loss and gradients,
    then the optimizer update. Not jitted here; the caller jits it with the mesh's shardings. `trainable`: the
    parameters a LoRA run trains (the frozen base is not differentiated)."""

    def train_step(params, opt_state, batch, step):
        step_rng = jax.random.fold_in(dropout_rng, step)  # the same key for the same step, resumed or not
        with nn.logical_axis_rules(list(rules)):
            (loss, metrics), grads = model.value_and_grad(params, batch, step_rng, trainable)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics = {**metrics, "loss": loss, "grad_norm": optax.tree.norm(grads), "learning_rate": schedule(step)}
        return params, opt_state, metrics

    return train_step


def _check_config(mesh, dataset: DatasetConfig, model: RetrievalModel, train_steps: int) -> seqio.Task:
    if train_steps <= 0:
        raise ConfigError(f"TRAIN_STEPS must be positive, got {train_steps}")
    shards = part.batch_size_per_shard(mesh)
    if dataset.batch_size <= 0:
        raise ConfigError(f"BATCH_SIZE must be positive, got {dataset.batch_size}")
    if dataset.batch_size % shards:
        raise ConfigError(f"batch size {dataset.batch_size} is not divisible by the {shards} batch shards of the "
                          f"mesh {dict(mesh.shape)}; set BATCH_SIZE to a multiple of {shards}")
    if dataset.batch_size % jax.process_count():
        raise ConfigError(f"batch size {dataset.batch_size} is not divisible by the {jax.process_count()} hosts")
    chunks = getattr(model.loss, "num_chunks", 0)
    if chunks and (dataset.batch_size // jax.process_count()) % chunks:
        raise ConfigError(f"CachedLoss.num_chunks={chunks} does not divide the batch {dataset.batch_size}")
    try:
        task = seqio.get_mixture_or_task(dataset.mixture_or_task_name)
    except ValueError as e:
        raise ConfigError(f"MIXTURE_OR_TASK_NAME {dataset.mixture_or_task_name!r} is not registered; register it "
                          f"(import your tasks module in the gin file or set DatasetConfig.setup) — {e}") from None
    vocab = task.output_features["inputs"].vocabulary
    if vocab.vocab_size > model.config.encoder.vocab_size:
        raise ConfigError(f"task {task.name!r} uses a vocabulary of {vocab.vocab_size} ids but the model embeds only "
                          f"{model.config.encoder.vocab_size}; set the encoder's vocab_size (e.g. "
                          f"t5_config.vocab_size) to at least {vocab.vocab_size}, or use the model's own vocabulary")
    try:
        check_buckets(dataset.length_buckets)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    needed = set(model.feature_converter(task).TASK_FEATURES)
    if not needed <= set(task.output_features):
        raise ConfigError(f"the loss {type(model.loss).__name__} needs task features {sorted(needed)}; task "
                          f"{task.name!r} has {sorted(task.output_features)}")
    return task


def _converter_with_prompts(converter: seqio.FeatureConverter, vocab: seqio.Vocabulary,
                            prompts: Prompts) -> seqio.FeatureConverter:
    if not prompts:
        return converter
    try:
        (query_ids, start), (passage_ids, _) = (prompt_token_ids(vocab, p) for p in (prompts.query, prompts.passage))
    except ValueError as e:
        # A byte-level BPE merges the prompt's end into the text: the texts are tokenized again behind it.
        if decodes_losslessly(vocab):
            logging.info("train: prompts go in as text (%s)", e)
            return converter.with_text_prompts(prompts.query, prompts.passage, vocab)
        raise ConfigError(f"train: {e}") from None
    return converter.with_prompts(query_ids, passage_ids, start)


class _DevEvaluation:
    """The retrieval pipeline on a dev set with the current parameters -> {metric: value}."""

    def __init__(self, config: EvalConfig, model: RetrievalModel, vocab: seqio.Vocabulary, prompts: Prompts):
        from polyret.retrieval.pipeline import load_eval_inputs
        from polyret.retrieval.tokenize import Tokenizer
        self.config, self.model, self.prompts = config, model, prompts
        self.corpus, self.queries, self.qrels = load_eval_inputs(config.corpus, config.queries, config.qrels)
        self.tokenizer = Tokenizer.for_vocabulary(vocab)

    def __call__(self, params: Any) -> dict[str, float]:
        from polyret.retrieval import metrics as M
        from polyret.retrieval.encode import TowerEncoder
        from polyret.retrieval.pipeline import retrieve
        cfg = self.config
        encoder = TowerEncoder(jax.device_get(params), self.model.config, self.tokenizer, prompts=self.prompts)
        k = max([100] + [int(m.params.get("cutoff") or 0) for m in M.parse_metrics(cfg.metrics)])
        run = retrieve(encoder, self.corpus, self.queries, k, cfg.query_max_length, cfg.passage_max_length)
        table = M.evaluate(self.qrels, run, list(cfg.metrics))
        return {f"dev/{name}": value for name, value in table["all"].items()}


@gin.configurable
def train(model_dir: str = gin.REQUIRED, train_steps: int = gin.REQUIRED, model_config: ModelConfig = gin.REQUIRED,
          dataset: DatasetConfig = gin.REQUIRED, loss: Loss | None = None,
          checkpointing: CheckpointConfig = CheckpointConfig(), evaluation: EvalConfig = EvalConfig(),
          initial_checkpoint_path: str | None = None, learning_rate: optax.Schedule | None = None,
          log_every: int = 10, seed: int = 0, progress: bool = True, query_prompt: str | None = None,
          passage_prompt: str | None = None) -> TrainResult:
    """Train `model_config` with `loss` on `dataset` for `train_steps` steps; resumes from MODEL_DIR.

    `initial_checkpoint_path`: parameters to start from (a polyret checkpoint, e.g. from import_checkpoint);
    only heads the run creates may be missing from it. With LoRA in the encoder config, only the adapters
    and fresh heads train and only they are checkpointed (the base is referenced by path).
    The starting checkpoint's prompts are put before every query and passage (kept in MODEL_DIR for
    evaluation and export); `query_prompt` / `passage_prompt` replace them ('' for none).
    """
    start_time = time.time()
    model_dir = Path(model_dir).absolute()
    if dataset.setup is not None:
        dataset.setup()
    mesh, rules = part.create_mesh(), part.logical_axis_rules()
    model = build_model(model_config, loss)
    task = _check_config(mesh, dataset, model, train_steps)
    if dataset.use_cached:
        from polyret.seqio_tasks.caching import CacheError, check_cached
        try:
            check_cached(dataset.mixture_or_task_name, dataset.cache_dirs, jax.process_count())
        except CacheError as e:
            raise ConfigError(str(e)) from None
    vocab = task.output_features["inputs"].vocabulary
    prompts = choose_prompts(load_prompts(initial_checkpoint_path) if initial_checkpoint_path else Prompts(),
                             query_prompt, passage_prompt, "train")
    converter = _converter_with_prompts(model.feature_converter(task), vocab, prompts)
    schedule = learning_rate or learning_rate_schedule()
    state = setup_state(model, mesh, rules, model_dir, vocab, schedule, checkpointing, initial_checkpoint_path, seed,
                        prompts)
    dev = _DevEvaluation(evaluation, model, vocab, prompts) if evaluation.every else None

    batch_sharding = part.batch_sharding(mesh)
    step_fn = jax.jit(make_train_step(model, state.tx, schedule, rules, jax.random.PRNGKey(seed + 1), state.trainable),
                      in_shardings=(state.param_sharding, state.opt_sharding, batch_sharding, None),
                      out_shardings=(state.param_sharding, state.opt_sharding, None), donate_argnums=(0, 1))
    shard_info = seqio.ShardInfo(jax.process_index(), jax.process_count()) if jax.process_count() > 1 else None
    data = batched_dataset(
        dataset.mixture_or_task_name, dataset.task_feature_lengths, dataset.batch_size // jax.process_count(),
        converter, shuffle=dataset.shuffle, seed=dataset.seed, shard_info=shard_info,
        single_language_batches=dataset.single_language_batches, use_cached=dataset.use_cached,
        max_examples=dataset.max_examples, subsample_fraction=dataset.subsample_fraction,
        subsample_seed=dataset.subsample_seed)
    batches = data.skip(state.step).as_numpy_iterator()  # resume at the same data position
    if dataset.length_buckets:
        token_features = [name for _, name in converter.TOKEN_FEATURES]
        batches = _bucketed(batches, tuple(dataset.length_buckets), token_features)

    # SIGTERM/SIGINT: finish the step, checkpoint it, stop (multi-process: at the step all hosts agree on).
    with preemption.graceful_stop(forward_sigint_to_sigterm=jax.process_count() > 1), \
            bad_record_policy(dataset.skip_bad_records) as bad_records:
        losses = _loop(state, step_fn, batches, batch_sharding, mesh, train_steps, dataset.batch_size, model_dir,
                       log_every, dev, progress)
    skipped = _sum_over_hosts(sum(bad_records.skipped.values()))
    if jax.process_index() == 0 and progress:
        print(f"trained to step {state.step} in {time.time() - start_time:.1f} s; checkpoints in "
              f"{state.checkpointer.directory}"
              + (f"; skipped {skipped} bad record{'s' * (skipped != 1)} ({bad_records.skipped.report()} on "
                 "host 0; see the log)"
                 if dataset.skip_bad_records else ""))
    return TrainResult(state.params, state.step, losses, model_dir, skipped)


def _sum_over_hosts(n: int) -> int:
    if jax.process_count() == 1:
        return n
    from jax.experimental import multihost_utils
    return int(np.sum(multihost_utils.process_allgather(np.array([n], np.int64))))


@jax.jit
def _track_nonfinite(first: tuple[jax.Array, jax.Array], loss: jax.Array, step: jax.Array
                     ) -> tuple[jax.Array, jax.Array]:
    """(first step with a non-finite loss or -1, that loss), updated on the device: the loop reads it
    only at log and checkpoint steps, yet reports the exact step."""
    new = (first[0] < 0) & ~jnp.isfinite(loss)
    return jnp.where(new, step, first[0]), jnp.where(new, loss, first[1]).astype(jnp.float32)


def _loop(state: TrainState, step_fn: Callable, batches, batch_sharding, mesh, train_steps: int, batch_size: int,
          model_dir: Path, log_every: int, dev: _DevEvaluation | None, progress: bool) -> list[float]:
    from clu import metric_writers
    writer = metric_writers.create_default_writer(str(model_dir / "tensorboard"),
                                                  just_logging=jax.process_index() > 0)
    bar = tqdm(total=train_steps, initial=state.step, desc="training", unit="step",
               disable=not progress or jax.process_index() > 0)
    losses: list[float] = []
    window_start, window_steps, window_tokens = time.time(), 0, 0
    postfix: dict[str, str] = {}
    nonfinite = (jnp.int32(-1), jnp.float32(0))
    multi_process = jax.process_count() > 1
    # jax.set_mesh (not `with mesh:`, which no longer defines the mesh flax reads): without it every
    # nn.with_logical_constraint in the models is a no-op and FSDP replicates the activations' batch.
    # The bar is closed however the loop ends, so a stop's one-line message starts on its own line.
    with jax.set_mesh(mesh), bar:
        while state.step < train_steps:
            try:
                local = next(batches)
            except Exception as e:  # noqa: BLE001 (a bad record reaches us wrapped by tf.data)
                _stop_on_bad_record(e, state, nonfinite)
            batch = {k: jax.make_array_from_process_local_data(batch_sharding, v) for k, v in local.items()}
            state.params, state.opt_state, metrics = step_fn(state.params, state.opt_state, batch,
                                                             jnp.int32(state.step))
            state.step += 1
            nonfinite = _track_nonfinite(nonfinite, metrics["loss"], jnp.int32(state.step))
            window_steps += 1
            window_tokens += sum(int(np.count_nonzero(v)) for k, v in local.items() if k.endswith("tokens"))
            last = state.step == train_steps
            # A stop was asked (SIGTERM/SIGINT): this step is checkpointed and the run stops. Several
            # processes agree on the step through JAX's preemption sync point (no collective per step).
            preempted = (state.checkpointer.reached_preemption(state.step) if multi_process
                         else preemption.requested() is not None) and not last  # the last step ends normally
            # The only device -> host sync of the loop: at log steps, and before a checkpoint is written
            # so that a non-finite loss never replaces the last good checkpoint.
            if state.step % log_every == 0 or last or preempted or state.checkpointer.should_save(state.step):
                _stop_if_not_finite(nonfinite, state)
                scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
                elapsed = max(time.time() - window_start, 1e-9)
                scalars.update(examples_per_second=window_steps * batch_size / elapsed,
                               tokens_per_second=window_tokens * jax.process_count() / elapsed)
                writer.write_scalars(state.step, scalars)
                losses.append(scalars["loss"])
                postfix.update(loss=f"{scalars['loss']:.4f}", acc=f"{scalars.get('accuracy', 0):.3f}")
                window_start, window_steps, window_tokens = time.time(), 0, 0
            state.checkpointer.save(state.step, state.saved_params(), state.opt_state, force=last or preempted)
            if preempted:
                state.checkpointer.wait()  # committed before we say so
                writer.flush()
                preemption.stop_here(f"preempted at step {state.step}; checkpoint written; rerun the same "
                                     "command to resume")
            if dev is not None and (state.step % dev.config.every == 0 or last):
                dev_scores = dev(state.params)
                writer.write_scalars(state.step, dev_scores)
                postfix.update({k.split("/", 1)[1]: f"{v:.3f}" for k, v in dev_scores.items()})
            bar.set_postfix(postfix, refresh=False)
            bar.update(1)
    state.checkpointer.wait()
    state.checkpointer.close()
    writer.flush()
    return losses


def _bucketed(batches, buckets: tuple[int, ...], token_features: list[str]):
    """Host batches cut to length buckets; every host cuts to the same lengths (the hosts' longest rows,
    maximum over hosts: one small all-gather per step), so the global batch has one shape."""
    for local in batches:
        longest = longest_rows(local, token_features)
        if jax.process_count() > 1:
            longest = np.max(multihost_utils.process_allgather(longest), axis=0)
        yield cut_to_buckets(local, token_features, longest, buckets)


def _stop_if_not_finite(nonfinite: tuple[jax.Array, jax.Array], state: TrainState) -> None:
    step = int(jax.device_get(nonfinite[0]))
    if step < 0:
        return
    state.checkpointer.wait()
    good = state.checkpointer.latest_step()
    raise FloatingPointError(f"step {step}: loss is {float(jax.device_get(nonfinite[1]))}; stopped at step "
                             f"{state.step}. The last good checkpoint (step {good}) is kept in "
                             f"{state.checkpointer.directory}")


def _stop_on_bad_record(error: Exception, state: TrainState, nonfinite: tuple[jax.Array, jax.Array]) -> None:
    """The data failed: a bad record (found by a reader, `file:line: field: what is wrong`) stops the run
    after checkpointing the step reached; anything else is re-raised. Several processes: the others
    cannot join a save now, so the last periodic checkpoint is what is kept."""
    bad = BAD_RECORDS.error
    if bad is None:
        raise error
    if jax.process_count() == 1 and state.step > 0:
        _stop_if_not_finite(nonfinite, state)
        state.checkpointer.save(state.step, state.saved_params(), state.opt_state, force=True)
        state.checkpointer.wait()
        kept = f"stopped at step {state.step} (checkpoint written)"
    else:
        kept = f"stopped at step {state.step} (the checkpoint of step {state.checkpointer.latest_step()} is kept)"
    bad.args = (f"{bad}; {kept}; fix the record or set --gin.DatasetConfig.skip_bad_records=True, then run "
                "the same command again to resume",)
    raise bad from None


def train_from_gin(files: Sequence[str], bindings: Sequence[str], search_paths: Sequence[str] | str = (),
                   **train_kwargs: Any) -> TrainResult:
    """Parse the gin files and bindings, run `train()`, and clear gin again."""
    try:
        parse_gin(files, bindings, search_paths)
        return train(**train_kwargs)
    finally:
        gin.clear_config()
