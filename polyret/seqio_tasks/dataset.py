"""What the trainer reads: `DatasetConfig` (the run's data, a gin group as in t5x's data utilities) and
`batched_dataset`, batches of model features from a registered task or mixture, tokenised on the fly or
read from the tasks' offline caches (written by `polyret.seqio_tasks.caching`) a batch at a time.

Training imports this module; nothing here imports training.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any, Callable, Mapping, Sequence

import gin
import numpy as np
import seqio
import tensorflow as tf

from polyret.configuration import parse_gin
from polyret.seqio_tasks.tasks import GROUP_SIZES


@gin.configurable
@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    """The training data: a registered SeqIO task or mixture, its feature lengths and the global batch."""

    mixture_or_task_name: str
    task_feature_lengths: Mapping[str, int]
    batch_size: int = 32
    shuffle: bool = True
    seed: int = 0
    single_language_batches: bool = False
    # Pad each batch only to the smallest of these lengths that holds its longest row (e.g. (64, 128, 256));
    # one compiled step per bucket; () pads every batch to task_feature_lengths (polyret/seqio_tasks/length_buckets.py).
    length_buckets: tuple[int, ...] = ()
    setup: Callable[[], Any] | None = None  # registers the tasks (e.g. mtd_data_setup)
    # Read the tasks' offline caches (pre-tokenised TFRecords written by `polyret cache_tasks`) from
    # `cache_dirs` (added to seqio's global cache dirs) instead of tokenising on the fly.
    use_cached: bool = False
    cache_dirs: tuple[str, ...] = ()
    # A bad record (file:line: field: what is wrong) stops the run after a checkpoint; with
    # skip_bad_records it is skipped, counted and logged, and the run's summary says how many.
    skip_bad_records: bool = False
    # Train on a fixed random subset of the data (data-size sweeps): at most `max_examples` examples, or
    # `subsample_fraction` of them, drawn once by `subsample_seed` (the same subset whatever `seed` is).
    max_examples: int | None = None
    subsample_fraction: float | None = None
    subsample_seed: int = 0


def run_dataset_config(gin_files: Sequence[str], bindings: Sequence[str] = (),
                       search_paths: Sequence[str] | str = ()) -> DatasetConfig:
    """The run's `DatasetConfig` from its gin files, parsed without finalising (as `polyret plan` does):
    MODEL_DIR and other REQUIRED macros that reading data does not need may stay unset. Leaves gin parsed."""
    parse_gin(gin_files, bindings, search_paths, finalize=False)
    return DatasetConfig()  # gin fills the fields the run binds


# ------------------------------------------------------------------------------------------------ batches

def batched_dataset(mixture_or_task_name: str, task_feature_lengths: Mapping[str, int], batch_size: int,
                    feature_converter: seqio.FeatureConverter, split: str = "train", shuffle: bool = True,
                    seed: int | None = 0, shard_info: seqio.ShardInfo | None = None,
                    single_language_batches: bool = False, num_epochs: int | None = None,
                    use_cached: bool = False, max_examples: int | None = None,
                    subsample_fraction: float | None = None, subsample_seed: int = 0) -> tf.data.Dataset:
    """Batches of model features. With `single_language_batches`, every batch comes from one task of the
    mixture (SWIM-X's last 100K pre-training steps), tasks drawn by the mixture's rates; otherwise
    examples of all tasks are mixed within a batch. `use_cached`: read the tasks' offline caches (seqio's
    global cache dirs, written by `polyret.seqio_tasks.caching`). `max_examples` / `subsample_fraction`:
    see `subsampled_batches`."""
    get = functools.partial(seqio.get_dataset, task_feature_lengths=task_feature_lengths, dataset_split=split,
                            shuffle=shuffle, seed=seed, shard_info=shard_info, feature_converter=feature_converter,
                            num_epochs=num_epochs, use_cached=use_cached)
    mixture = seqio.get_mixture_or_task(mixture_or_task_name)
    tasks = mixture.tasks if isinstance(mixture, seqio.Mixture) else [mixture]
    grouped = {t.name: GROUP_SIZES[t.name] for t in tasks if t.name in GROUP_SIZES}
    if grouped:  # a group's examples arrive consecutively; whole groups per batch need aligned batches
        if len(tasks) > 1:
            raise ValueError(f"task(s) {sorted(grouped)} emit groups that must share a batch (round robin): "
                             "train on them alone, not in a mixture")
        size = next(iter(grouped.values()))
        if batch_size % size:
            raise ValueError(f"per-host batch size {batch_size} is not a multiple of {size}, the number of "
                             f"round-robin copies of a query in {mixture_or_task_name!r}: copies would straddle "
                             "two batches")
    rates = np.array([mixture.get_rate(t) if isinstance(mixture, seqio.Mixture) else 1.0 for t in tasks])
    if max_examples is not None or subsample_fraction is not None:
        if single_language_batches or grouped:
            raise ValueError("max_examples / subsample_fraction cannot be combined with single-language or "
                             "round-robin batches")
        one_epoch = [get(t.name, shuffle=False, num_epochs=1) for t in tasks]
        return subsampled_batches(one_epoch, batch_size, max_examples, subsample_fraction, subsample_seed,
                                  shuffle, seed, num_epochs)
    if use_cached:
        names = [t.name for t in tasks]
        if batched_read_supported(names, feature_converter):  # same examples, read a batch at a time
            return cached_batches(names, list(rates), dict(task_feature_lengths), batch_size,
                                          feature_converter, split, shuffle, seed, shard_info, num_epochs,
                                          single_language_batches)
    if not single_language_batches:
        return get(mixture_or_task_name).batch(batch_size, drop_remainder=True)
    batched = [get(t.name).batch(batch_size, drop_remainder=True).repeat() for t in tasks]
    return tf.data.Dataset.sample_from_datasets(batched, weights=list(rates / rates.sum()), seed=seed,
                                                stop_on_empty_dataset=False)


def subsampled_batches(one_epoch: Sequence[tf.data.Dataset], batch_size: int, max_examples: int | None,
                       fraction: float | None, subsample_seed: int, shuffle: bool, seed: int | None,
                       num_epochs: int | None) -> tf.data.Dataset:
    """Batches from a fixed random subset of the examples of `one_epoch` (each task's examples once, in
    file order): `max_examples` of them, or `fraction`, chosen uniformly by `subsample_seed` over all
    tasks together (a mixture's rates are not applied: each task contributes its kept examples), kept
    in memory, reshuffled by `seed` every epoch."""
    if (max_examples is None) == (fraction is None):
        raise ValueError("give one of max_examples and subsample_fraction")
    if max_examples is not None and max_examples < 1:
        raise ValueError(f"max_examples must be at least 1, got {max_examples}")
    if fraction is not None and not 0 < fraction <= 1:
        raise ValueError(f"subsample_fraction must be in (0, 1], got {fraction}")
    full = one_epoch[0]
    for ds in one_epoch[1:]:
        full = full.concatenate(ds)
    total = int(full.reduce(np.int64(0), lambda count, _: count + 1))
    keep = min(max_examples, total) if max_examples is not None else max(1, round(fraction * total))
    if keep < batch_size:
        raise ValueError(f"the subset holds {keep} examples, fewer than one batch of {batch_size}")
    chosen = np.zeros(total, bool)
    chosen[np.random.default_rng(subsample_seed).permutation(total)[:keep]] = True
    mask = tf.constant(chosen)
    subset = full.enumerate().filter(lambda i, _: tf.gather(mask, i)).map(lambda _, x: x).cache()
    if shuffle:
        subset = subset.shuffle(keep, seed=seed, reshuffle_each_iteration=True)
    return subset.repeat(num_epochs).batch(batch_size, drop_remainder=True)


# ------------------------------------------------- cached tasks read a batch at a time

class CacheError(ValueError):
    """A task that cannot be cached or read from a cache; the message names the task (one line)."""


def read_json(path: str) -> dict:
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


_VECTORISABLE_POSTCACHE = {"dense_rows"}


def _postcache_names(task: seqio.Task) -> list[str]:
    after = task.preprocessors[task._cache_step_idx + 1:]  # noqa: SLF001 (seqio keeps the index private)
    return [getattr(getattr(p, "func", p), "__name__", type(p).__name__) for p in after]


def batched_read_supported(task_names_: Sequence[str], feature_converter: seqio.FeatureConverter) -> bool:
    """Whether `cached_batches` can read these tasks (cached, nothing random after the cache point) for
    this converter (polyret's token converters without pass-through features)."""
    token_features = getattr(feature_converter, "TOKEN_FEATURES", None)
    if not token_features or getattr(feature_converter, "PASSTHROUGH", ()):
        return False
    if getattr(feature_converter, "has_prompts", False):  # prompts go in per example
        return False
    for name in task_names_:
        task = seqio.TaskRegistry.get(name)
        if not task.supports_caching or not task.cache_dir:
            return False
        if not set(_postcache_names(task)) <= _VECTORISABLE_POSTCACHE:
            return False
    return True


def _task_records(task: seqio.Task, split: str, shuffle: bool, seed: int | None,
                  shard_info: seqio.ShardInfo | None, num_epochs: int | None) -> tf.data.Dataset:
    """A task's serialized cached examples: this host's files (as seqio shards them), files and records
    shuffled, repeated `num_epochs` times (None: forever)."""
    info = read_json(seqio.get_cached_info_path(task.cache_dir, split))
    files = sorted(tf.io.gfile.glob(f"{seqio.get_cached_tfrecord_prefix(task.cache_dir, split)}-*-of-"
                                    f"{info['num_shards']:05d}"))
    if len(files) != info["num_shards"]:
        raise CacheError(f"task {task.name!r}: the cache {task.cache_dir} has {len(files)} of its "
                         f"{info['num_shards']} TFRecord files")
    if shard_info and shard_info.num_shards > 1:
        if len(files) % shard_info.num_shards:
            raise CacheError(f"task {task.name!r}: the cache {task.cache_dir} has {len(files)} shards, not a "
                             f"multiple of the {shard_info.num_shards} hosts")
        files = files[shard_info.index::shard_info.num_shards]
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        ds = ds.shuffle(len(files), seed=seed)
    # Local files: read in turn (on a loaded 2-core machine parallel reads of 14 tasks' files halved the
    # throughput, all of it thread hand-offs); remote files: in parallel, to hide the latency.
    parallel = tf.data.AUTOTUNE if "://" in task.cache_dir else None
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=16, block_length=16, num_parallel_calls=parallel)
    if num_epochs != 1:
        ds = ds.repeat(num_epochs)
    if shuffle:
        ds = ds.shuffle(task.shuffle_buffer_size or 1000, seed=seed)
    return ds


def _selector(rates: Sequence[float], seed: int | None, block: int = 4096) -> tf.data.Dataset:
    """An endless stream of task indices drawn by `rates`, `block` draws per random op."""
    logits = tf.math.log(tf.constant([list(rates)], tf.float64) / sum(rates))
    base = 0 if seed is None else int(seed)
    return tf.data.Dataset.counter().map(
        lambda i: tf.random.stateless_categorical(logits, block, seed=tf.stack([tf.cast(base, tf.int64), i]))[0]
    ).unbatch()


def _append_eos_pad(rows: tf.RaggedTensor, length: int, eos_id: int) -> tf.Tensor:
    """Ragged [B, None] or [B, N, None] token rows -> [B, length] or [B, N, length]: cut to length - 1,
    0-padded, EOS after every non-empty row (feature_converters.trim_append_eos_pad, a batch at a time)."""
    dense = rows.to_tensor(shape=[None, length - 1] if rows.ragged_rank == 1 else [None, None, length - 1])
    dense = tf.pad(dense, [[0, 0]] * (dense.shape.rank - 1) + [[0, 1]])
    lengths = tf.math.count_nonzero(dense, axis=-1, dtype=tf.int32)  # token ids are never 0 (padding)
    eos = tf.one_hot(lengths, length, dtype=dense.dtype) * tf.cast(lengths > 0, dense.dtype)[..., None]
    return dense + eos_id * eos


def cached_batches(task_names_: Sequence[str], rates: Sequence[float], task_feature_lengths: dict[str, int],
                   batch_size: int, feature_converter: seqio.FeatureConverter, split: str = "train",
                   shuffle: bool = True, seed: int | None = 0, shard_info: seqio.ShardInfo | None = None,
                   num_epochs: int | None = None, single_language_batches: bool = False) -> tf.data.Dataset:
    """Batches of model features read from the tasks' caches (see `batched_read_supported`), mixed by
    `rates`: per example, or per batch with `single_language_batches`. A finite read (num_epochs) ends
    when the first task runs out, as seqio's mixtures do."""
    tasks = [seqio.TaskRegistry.get(n) for n in task_names_]
    eos_id = feature_converter.eos_id
    token_features = list(feature_converter.TOKEN_FEATURES)
    for task_name, _ in token_features:
        if task_name not in task_feature_lengths:
            raise ValueError(f"TASK_FEATURE_LENGTHS has no length for {task_name!r}")
    spec = {}
    for task_name, _ in token_features:
        rank = tasks[0].output_features[task_name].rank
        spec[task_name] = (tf.io.RaggedFeature(tf.int64) if rank == 1 else tf.io.RaggedFeature(
            tf.int64, partitions=[tf.io.RaggedFeature.RowLengths(seqio.utils.tfexample_ragged_length_key(task_name, 0))]))

    def convert(serialized):
        parsed = tf.io.parse_example(serialized, spec)
        return {model: _append_eos_pad(tf.cast(parsed[task], tf.int32), task_feature_lengths[task], eos_id)
                for task, model in token_features}

    def batches(ds):
        return ds.batch(batch_size, drop_remainder=True).map(convert, num_parallel_calls=tf.data.AUTOTUNE)

    records = [_task_records(t, split, shuffle, seed, shard_info, num_epochs) for t in tasks]
    if len(records) == 1:
        ds = batches(records[0])
    elif single_language_batches:
        ds = tf.data.Dataset.sample_from_datasets([batches(r).repeat() for r in records], weights=list(rates),
                                                  seed=seed, stop_on_empty_dataset=False)
    else:
        ds = batches(tf.data.Dataset.choose_from_datasets(records, _selector(rates, seed), stop_on_empty_dataset=True))
    return ds.prefetch(tf.data.AUTOTUNE)
