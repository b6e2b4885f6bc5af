"""Offline caches of SeqIO tasks (seqio's Beam transforms) and the checks before training reads them.

`cache_tasks` runs, per task, seqio's own pipeline (`seqio.beam_utils`: PreprocessTask -> global
Reshuffle -> WriteExampleTfRecord, GetInfo and GetStats -> WriteJson, as seqio/scripts/cache_tasks_main.py
wires them) and leaves seqio's layout, which `Task.get_dataset(use_cached=True)` reads without
tokenising:

  DIR/.polyret-output.json                   marks DIR as a polyret task cache (other folders are refused)
  DIR/<task>/train.tfrecord-00000-of-00064   tokenised examples (tf.Example), globally shuffled
  DIR/<task>/info.train.json, stats.train.json, COMPLETED

A local task folder is written beside its place and swapped in whole (polyret.io.outputs), so a killed
run leaves the previous cache or none, never a half one; on a remote filesystem (gs://, ...) seqio's
`COMPLETED` file, written last, is what makes a folder a cache.

`check_cached` is what the trainer calls with `DatasetConfig.use_cached`: every task cached, in a cache
whose shard count is a multiple of the number of hosts (each host then reads its own files: no example
read twice or skipped).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Callable, Sequence

import seqio
import tensorflow as tf

from polyret.io import outputs, preemption
from polyret.seqio_tasks.dataset import CacheError, read_json, run_dataset_config

KIND = "seqio_cache"  # the cache folder
TASK_KIND = "seqio_task_cache"  # one task's folder inside it
DEFAULT_NUM_SHARDS = 64  # seqio's --min_shards: a multiple of every power-of-two host count up to 64


@dataclasses.dataclass(frozen=True)
class CachedTask:
    name: str
    path: str
    examples: dict[str, int]  # split -> examples
    num_shards: int
    seconds: float = 0.0
    skipped: bool = False


def task_names(mixture_or_task_name: str) -> list[str]:
    """The tasks of a registered mixture (sub-mixtures flattened) or [the task]."""
    provider = seqio.get_mixture_or_task(mixture_or_task_name)
    tasks = provider.tasks if isinstance(provider, seqio.Mixture) else [provider]
    return [t.name for t in tasks]


def not_cacheable_reason(task: seqio.Task) -> str | None:
    """Why `task` has no offline cache (None when it can have one)."""
    if not task.supports_caching:
        if not task.source.caching_permitted:
            return ("its source draws its examples afresh every epoch (e.g. Translate-Distill's passages and "
                    "languages), which a cache would freeze")
        return "it has no seqio.CacheDatasetPlaceholder among its preprocessors"
    return None


def task_cache_dir(output_dir: str, name: str) -> str:
    return os.path.join(output_dir, seqio.get_task_dir_from_name(name))


def _is_complete(folder: str) -> bool:
    return tf.io.gfile.exists(os.path.join(folder, "COMPLETED"))


class RegisterTasks:
    """A Beam `setup_fn` (picklable): make sure the tasks are registered in the worker's process. In the
    launching process (DirectRunner) they are; a remote worker parses the run's gin files and calls its
    `DatasetConfig.setup`, as the trainer does."""

    def __init__(self, names: Sequence[str], gin_files: Sequence[str] = (), bindings: Sequence[str] = (),
                 search_paths: Sequence[str] | str = ()):
        self.names, self.gin_files, self.bindings, self.search_paths = (
            list(names), list(gin_files), list(bindings), search_paths)

    def __call__(self) -> None:
        if all(n in seqio.TaskRegistry.names() for n in self.names) or not self.gin_files:
            return
        setup = run_dataset_config(self.gin_files, self.bindings, self.search_paths).setup
        if setup is not None:
            setup()


def _import_beam():
    """apache_beam and seqio.beam_utils; Beam's import logs a root-logger warning about optional Google Cloud
    libraries (bigquery) that would reach the job's console."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        import apache_beam as beam
        from seqio import beam_utils
    finally:
        root.setLevel(level)
    # seqio's PreprocessTask both yields and returns in a FlatMap (harmless here); Beam warns on every
    # pipeline, which would write a log file beside every quiet cache.
    logging.getLogger("apache_beam.transforms.core").addFilter(_quiet_yield_and_return)
    return beam, beam_utils


def _quiet_yield_and_return(record: logging.LogRecord) -> bool:
    return "yield and return" not in record.getMessage()


def _pipeline_options(runner: str, pipeline_options: Sequence[str]):
    from apache_beam.options.pipeline_options import PipelineOptions
    # Beam 2.77's DirectRunner first tries the Prism runner, which downloads a Go binary from GitHub, then
    # falls back to the in-process FnApiRunner: go there directly (no network; the same execution).
    runner = "FnApiRunner" if runner == "DirectRunner" else runner
    return PipelineOptions([f"--runner={runner}", *pipeline_options])


def _run_task_pipeline(task: seqio.Task, folder: str, num_shards: int, runner: str,
                       pipeline_options: Sequence[str], setup_fn: Callable[[], None]) -> None:
    """seqio's caching pipeline for every split of one task, written to `folder` (no COMPLETED)."""
    beam, beam_utils = _import_beam()

    with beam.Pipeline(options=_pipeline_options(runner, pipeline_options)) as pipeline:
        for split in task.splits:
            label = f"{task.name}_{split}"
            examples = (pipeline
                        | f"{label}_pat" >> beam_utils.PreprocessTask(task, split, setup_fn=setup_fn)
                        # as in seqio's cache_tasks_main: shuffles the examples globally across the shards
                        | f"{label}_global_example_shuffle" >> beam.Reshuffle())
            _ = examples | f"{label}_write_tfrecord" >> beam_utils.WriteExampleTfRecord(
                seqio.get_cached_tfrecord_prefix(folder, split), num_shards=num_shards)
            _ = (examples | f"{label}_info" >> beam_utils.GetInfo(num_shards)
                 | f"{label}_write_info" >> beam_utils.WriteJson(seqio.get_cached_info_path(folder, split)))
            _ = (examples | f"{label}_stats" >> beam_utils.GetStats(task.output_features)
                 | f"{label}_write_stats" >> beam_utils.WriteJson(seqio.get_cached_stats_path(folder, split)))


def _finish(task: seqio.Task, folder: str) -> dict[str, int]:
    """Check what the pipeline wrote, then write seqio's COMPLETED; returns examples per split."""
    examples = {}
    for split in task.splits:
        stats = read_json(seqio.get_cached_stats_path(folder, split))
        if not stats.get("examples"):
            raise CacheError(f"task {task.name!r}: split {split!r} has no examples; nothing to cache")
        examples[split] = int(stats["examples"])
    with tf.io.gfile.GFile(os.path.join(folder, "COMPLETED"), "w") as f:
        f.write("")
    return examples


def cache_tasks(names: Sequence[str], output_dir: str, num_shards: int = DEFAULT_NUM_SHARDS,
                runner: str = "DirectRunner", pipeline_options: Sequence[str] = (),
                setup_fn: Callable[[], None] | None = None, skip_cached: bool = False,
                report: Callable[[str], None] | None = print) -> list[CachedTask]:
    """Cache the registered tasks `names` into `output_dir` (seqio's layout, `num_shards` TFRecord files
    per split), one Beam pipeline per task, one line to `report` per task. Every task is checked before
    anything is written; `skip_cached` keeps tasks already complete there (resuming a long job)."""
    if num_shards < 1:
        raise CacheError(f"num_shards must be at least 1, got {num_shards}")
    tasks = []
    for name in names:
        if name not in seqio.TaskRegistry.names():
            raise CacheError(f"task {name!r} is not registered (is it in the run's mixture? registered tasks "
                             f"are set up by DatasetConfig.setup)")
        task = seqio.TaskRegistry.get(name)
        reason = not_cacheable_reason(task)
        if reason:
            raise CacheError(f"task {name!r} cannot be cached: {reason}")
        tasks.append(task)
    remote = "://" in output_dir
    if not remote:
        root = outputs.check_target(output_dir, KIND)  # a foreign non-empty folder is refused here
        root.mkdir(parents=True, exist_ok=True)
        if outputs.read_marker(root) is None:
            outputs.write_marker(root, KIND)
        output_dir = str(root)
    setup_fn = setup_fn or RegisterTasks(names)
    done = []
    # SIGTERM/SIGINT: the task in flight is cached whole, then the job stops (--skip_cached resumes).
    with preemption.graceful_stop():
        for task in tasks:
            folder = task_cache_dir(output_dir, task.name)
            if skip_cached and _is_complete(folder):
                examples = {s: int(read_json(seqio.get_cached_stats_path(folder, s))["examples"]) for s in task.splits}
                result = CachedTask(task.name, folder, examples,
                                    int(read_json(seqio.get_cached_info_path(folder, task.splits[0]))["num_shards"]),
                                    skipped=True)
            else:
                start = time.time()
                if remote:  # no atomic swap there: COMPLETED, written last, marks a whole cache
                    if tf.io.gfile.exists(folder):
                        tf.io.gfile.rmtree(folder)
                    _run_task_pipeline(task, folder, num_shards, runner, pipeline_options, setup_fn)
                    examples = _finish(task, folder)
                else:
                    with outputs.atomic_output_dir(folder, TASK_KIND, fingerprint={"task": task.name,
                                                                                   "num_shards": num_shards}) as tmp:
                        _run_task_pipeline(task, str(tmp), num_shards, runner, pipeline_options, setup_fn)
                        examples = _finish(task, str(tmp))
                result = CachedTask(task.name, folder, examples, num_shards, time.time() - start)
            done.append(result)
            if report is not None:
                counts = ", ".join(f"{n} {s}" for s, n in result.examples.items())
                verb = "already cached" if result.skipped else f"cached in {result.seconds:.1f} s"
                report(f"{task.name}: {verb}: {counts} examples in {result.num_shards} shards -> {folder}")
            if len(done) < len(tasks):
                preemption.stop_if_requested(f"stopped after {len(done)} of {len(tasks)} tasks; finished "
                                             f"caches are kept in {output_dir}; rerun with --skip_cached "
                                             "to resume")
    return done


def check_cached(mixture_or_task_name: str, cache_dirs: Sequence[str], num_hosts: int = 1,
                 split: str = "train") -> list[str]:
    """Add `cache_dirs` to seqio's global cache dirs and check that every task of the mixture can be read
    from there by `num_hosts` hosts; returns the tasks' cache folders. Raises CacheError (one line)."""
    if cache_dirs:
        seqio.add_global_cache_dirs([str(d) for d in cache_dirs])
    searched = seqio.get_global_cache_dirs()
    if not searched:
        raise CacheError("DatasetConfig.use_cached is set but no cache folder is given: set "
                         "DatasetConfig.cache_dirs to the folder(s) `polyret cache_tasks --output_cache_dir` wrote")
    folders = []
    for name in task_names(mixture_or_task_name):
        task = seqio.TaskRegistry.get(name)
        reason = not_cacheable_reason(task)
        if reason:
            raise CacheError(f"task {name!r} cannot be read from a cache: {reason}; set DatasetConfig.use_cached=False")
        if not task.cache_dir:
            raise CacheError(f"task {name!r} is not cached in {', '.join(searched)} (no "
                             f"{seqio.get_task_dir_from_name(name)}/COMPLETED); run `polyret cache_tasks "
                             f"--gin_file RUN.gin --output_cache_dir DIR` and set DatasetConfig.cache_dirs")
        info_path = seqio.get_cached_info_path(task.cache_dir, split)
        if not tf.io.gfile.exists(info_path):
            raise CacheError(f"task {name!r}: the cache {task.cache_dir} has no split {split!r}")
        shards = int(read_json(info_path)["num_shards"])
        if shards % num_hosts:
            raise CacheError(f"task {name!r}: the cache {task.cache_dir} has {shards} shards, not a multiple of "
                             f"the {num_hosts} hosts (each host reads its own files); cache it again with "
                             f"--num_shards a multiple of {num_hosts}")
        folders.append(task.cache_dir)
    return folders


# ------------------------------------------------------------------------------ reading caches in batches
#
# seqio reads a cache one example at a time: parse a tf.Example, cast, trim, convert, then sample the
# mixture (a random draw per example); on this 2-core machine that tops out near the speed of tokenising
# on the fly. The tasks here need nothing after their cache point but `dense_rows`, so their caches are
# read as serialized records (mixed by rate, shuffled, batched) and parsed, trimmed, given their EOS and
# padded a batch at a time: the same examples and model features, every step vectorised.
