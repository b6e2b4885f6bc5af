"""Task and mixture registration: mC4 span pairs, SWIM-IR pairs, hard negatives, translated distillation.

Every `register_*` function adds seqio Tasks (replacing any of the same name) and returns their names,
so a gin file or a user script can register data and select it with `MIXTURE_OR_TASK_NAME`.

Offline caching (seqio's Beam cache, `polyret cache_tasks`): every task but Translate-Distill has a
`seqio.CacheDatasetPlaceholder` right after tokenisation, so the cache holds the tokenised examples and
whatever is random per epoch (span crops) runs after it, on every read. Uncached reads skip the
placeholder and are unchanged.
"""

from __future__ import annotations

import functools
import itertools
import os
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import gin
import numpy as np
import seqio
import tensorflow as tf

from polyret.seqio_tasks import examples as ex
from polyret.seqio_tasks import preprocessors
from polyret.seqio_tasks.vocab import get_vocabulary
from polyret.io.formats import open_text

_STR = tf.TensorSpec([], tf.string)
_STRS = tf.TensorSpec([None], tf.string)


def _token_feature(vocabulary: seqio.Vocabulary, rank: int = 1) -> seqio.Feature:
    return seqio.Feature(vocabulary, add_eos=True, rank=rank)


def _value_feature(dtype: tf.DType) -> seqio.Feature:
    return seqio.Feature(seqio.PassThroughVocabulary(size=0), add_eos=False, dtype=dtype, rank=1)


def _stack(values: list, spec: tf.TensorSpec) -> np.ndarray:
    """Stack one feature of a chunk of examples; lists of strings are padded with "" (= padding rows)."""
    if spec.shape.rank == 0:
        return np.array(values, dtype=object if spec.dtype == tf.string else spec.dtype.as_numpy_dtype)
    width = max((len(v) for v in values), default=0)
    fill = "" if spec.dtype == tf.string else 0
    return np.array([list(v) + [fill] * (width - len(v)) for v in values],
                    dtype=object if spec.dtype == tf.string else spec.dtype.as_numpy_dtype).reshape(len(values), width)


def _generator_source(make_examples: Callable[[], Iterator[dict[str, Any]]], signature: Mapping[str, tf.TensorSpec],
                      splits: Sequence[str] = ("train",), chunk_size: int = 512) -> seqio.FunctionDataSource:
    """A seqio source over a Python generator; seqio shards its examples per host (every n-th example).

    Examples cross into TensorFlow in chunks (then unbatched): one crossing per example costs ~0.5 ms.
    """
    chunk_signature = {k: tf.TensorSpec([None, *v.shape], v.dtype) for k, v in signature.items()}

    def chunks() -> Iterator[dict[str, np.ndarray]]:
        buffer: list[dict[str, Any]] = []
        try:
            for example in make_examples():
                buffer.append(example)
                if len(buffer) == chunk_size:
                    yield {k: _stack([e[k] for e in buffer], spec) for k, spec in signature.items()}
                    buffer = []
        except ex.DataError as e:  # tf.data wraps it; the trainer reports the original after checkpointing
            ex.BAD_RECORDS.error = e
            raise
        if buffer:
            yield {k: _stack([e[k] for e in buffer], spec) for k, spec in signature.items()}

    def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
        return tf.data.Dataset.from_generator(chunks, output_signature=chunk_signature).unbatch()

    # Caching permitted: the readers are deterministic (any sampling is seeded by line), so a cache of
    # their tokenised examples is what every uncached read would produce.
    return seqio.FunctionDataSource(dataset_fn, splits=splits, caching_permitted=True)


def _add_task(name: str, **kwargs) -> str:
    if name in seqio.TaskRegistry.names():
        seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(name, **kwargs)
    return name


def add_mixture(name: str, tasks_and_rates: Sequence[tuple[str, float]]) -> str:
    if name in seqio.MixtureRegistry.names():
        seqio.MixtureRegistry.remove(name)
    seqio.MixtureRegistry.add(name, list(tasks_and_rates))
    return name


def temperature_rates(sizes: Mapping[str, float], alpha: float = 0.3) -> dict[str, float]:
    """Sampling rates proportional to size ** alpha, normalised (alpha=1: proportional, 0: uniform)."""
    weights = {k: float(v) ** alpha for k, v in sizes.items()}
    total = sum(weights.values())
    return {k: w / total for k, w in weights.items()}


def _count_lines(path: str | os.PathLike) -> int:
    """Records in a JSONL file (non-blank lines) or a parquet file (rows, from its metadata)."""
    if str(path).endswith(".parquet"):
        import pyarrow.parquet as pq
        return pq.ParquetFile(path).metadata.num_rows
    with open_text(path) as f:
        return sum(1 for line in f if line.strip())


# ---------------------------------------------------------------------------------------- mC4 span pairs

# Contriever / mContriever random cropping (facebookresearch/contriever src/options.py defaults).
CROP_DEFAULTS = {"chunk_length": 256, "ratio_min": 0.1, "ratio_max": 0.5}


def _span_pair_preprocessors(min_span_length: int, crop: Mapping[str, float] | None = None) -> list:
    # The cache holds tokenised documents; the random crops stay after it (new crops every epoch).
    return [functools.partial(seqio.preprocessors.rekey, key_map={"text": "text"}),
            functools.partial(preprocessors.tokenize, also={"text": "targets"}),
            seqio.CacheDatasetPlaceholder(),
            functools.partial(preprocessors.span_pairs, min_span_length=min_span_length,
                              **{**CROP_DEFAULTS, **(crop or {})})]


def _span_pair_features(vocabulary: seqio.Vocabulary) -> dict[str, seqio.Feature]:
    return {"inputs": _token_feature(vocabulary), "targets": _token_feature(vocabulary)}


def register_mc4_tasks(languages: Sequence[str], vocabulary: seqio.Vocabulary, sizes: Mapping[str, float] | None = None,
                       alpha: float = 0.3, tfds_name: str = "c4/multilingual:3.1.0", tfds_data_dir: str | None = None,
                       prefix: str = "mc4_span_pairs", min_span_length: int = 1,
                       crop: Mapping[str, float] | None = None) -> list[str]:
    """One span-pair task per mC4 language (TFDS `c4/multilingual`, split = language code) and a mixture
    `prefix` over them with temperature-scaled rates. `sizes` default to the TFDS split sizes."""
    names = []
    for lang in languages:
        source = seqio.TfdsDataSource(tfds_name=tfds_name, tfds_data_dir=tfds_data_dir,
                                      splits={"train": lang, "validation": f"{lang}-validation"})
        names.append(_add_task(f"{prefix}_{lang}", source=source, output_features=_span_pair_features(vocabulary),
                               preprocessors=_span_pair_preprocessors(min_span_length, crop)))
    if sizes is None:
        import tensorflow_datasets as tfds
        info = tfds.builder(tfds_name, data_dir=tfds_data_dir).info
        sizes = {lang: info.splits[lang].num_examples for lang in languages}
    rates = temperature_rates(sizes, alpha)
    add_mixture(prefix, [(f"{prefix}_{lang}", rates[lang]) for lang in languages])
    return names


def register_text_span_task(name: str, files: Sequence[str | os.PathLike], vocabulary: seqio.Vocabulary,
                            min_span_length: int = 1, crop: Mapping[str, float] | None = None) -> str:
    """Span pairs from local documents: JSONL with a `text` field, or plain text with one document a line."""
    source = _generator_source(lambda: ex.text_documents(files), {"text": _STR})
    return _add_task(name, source=source, output_features=_span_pair_features(vocabulary),
                     preprocessors=_span_pair_preprocessors(min_span_length, crop))


# ------------------------------------------------------------------------------------------ SWIM-IR pairs

def _cached_tokenize() -> list:
    """Tokenise, then the cache point. Lists of strings ([N, T] after tokenising, T varying per example)
    are cached as ragged rows and made dense again after the cache point (seqio's cache stores one fixed
    width per dense feature)."""
    return [preprocessors.tokenize, preprocessors.ragged_rows, seqio.CacheDatasetPlaceholder(),
            preprocessors.dense_rows]


_GROUP = tf.TensorSpec([], tf.int32)
_GROUPS = tf.TensorSpec([None], tf.int32)


def register_swim_ir_task(name: str, path: str | os.PathLike, vocabulary: seqio.Vocabulary,
                          with_negatives: bool = False, skip_bad: bool = False, with_groups: bool = False) -> str:
    """`with_groups`: each row's passage group (its `group` field) rides along as `passage_group`, so passages
    that translate one another are never each other's in-batch negatives (ContrastiveLoss)."""
    signature = {"inputs": _STR, "targets": _STR, "query_id": _STR, "language": _STR}
    features = {"inputs": _token_feature(vocabulary), "targets": _token_feature(vocabulary)}
    if with_negatives:
        signature["negative_targets"] = _STRS
        features["negative_targets"] = _token_feature(vocabulary, rank=2)
    if with_groups:
        signature["passage_group"] = _GROUP
    source = _generator_source(lambda: ex.swim_ir_examples(path, skip_bad=skip_bad, groups=with_groups), signature)
    return _add_task(name, source=source, output_features=features, preprocessors=_cached_tokenize())


def register_swim_ir_tasks(files: Mapping[tuple[str, str], str | os.PathLike], vocabulary: seqio.Vocabulary,
                           prefix: str = "swim_ir") -> list[str]:
    """`files[(section, lang)]` (section: "cross_lingual" | "monolingual"; JSONL or the Hub's parquet)
    -> tasks `{prefix}_{section}_{lang}`,
    mixtures `{prefix}_{section}` and `{prefix}` with rates proportional to the number of pairs."""
    names, by_section = [], {}
    for (section, lang), path in sorted(files.items()):
        name = register_swim_ir_task(f"{prefix}_{section}_{lang}", path, vocabulary)
        names.append(name)
        by_section.setdefault(section, []).append((name, _count_lines(path)))
    for section, rates in by_section.items():
        add_mixture(f"{prefix}_{section}", rates)
    add_mixture(prefix, [r for rates in by_section.values() for r in rates])
    return names


# ----------------------------------------------------------------------------------------- hard negatives

def register_hard_negative_task(name: str, path: str | os.PathLike, vocabulary: seqio.Vocabulary,
                                num_negatives: int, seed: int = 0, with_groups: bool = False) -> str:
    """`with_groups`: the rows' `group` and `negative_groups` ride along (`passage_group`, `negative_groups`),
    so a passage's translations are never another row's negatives (ContrastiveLoss)."""
    signature = {"inputs": _STR, "targets": _STR, "negative_targets": _STRS}
    if with_groups:
        signature.update(passage_group=_GROUP, negative_groups=_GROUPS)
    source = _generator_source(lambda: ex.hard_negative_examples(path, num_negatives, seed, with_groups), signature)
    features = {"inputs": _token_feature(vocabulary), "targets": _token_feature(vocabulary),
                "negative_targets": _token_feature(vocabulary, rank=2)}
    return _add_task(name, source=source, output_features=features, preprocessors=_cached_tokenize())


def register_scored_task(name: str, path: str | os.PathLike, vocabulary: seqio.Vocabulary, num_negatives: int) -> str:
    """Rows with a teacher's scores for the positive and each negative (`examples.scored_examples`), in the
    distillation features (`passages`, `teacher_scores`) that MarginMSELoss / KLDistillationLoss read."""
    signature = {"inputs": _STR, "passages": _STRS, "teacher_scores": tf.TensorSpec([None], tf.float32),
                 "passage_languages": tf.TensorSpec([None], tf.int32)}
    source = _generator_source(lambda: ex.scored_examples(path, num_negatives), signature)
    features = {"inputs": _token_feature(vocabulary), "passages": _token_feature(vocabulary, rank=2),
                "teacher_scores": _value_feature(tf.float32), "passage_languages": _value_feature(tf.int32)}
    return _add_task(name, source=source, output_features=features, preprocessors=_cached_tokenize())


# ------------------------------------------------------------------------------- translated distillation

class EpochSource(seqio.DataSource):
    """A seqio source over `examples(epoch, shard_index, num_shards, shuffle, run_seed)` (run_seed: the dataset's
    seed, `DatasetConfig.seed`, 0 when unset) whose every pass is a new
    epoch: the dataset counts the passes seqio's `repeat` starts (0, 1, 2, ...), and the example maker
    draws afresh for each. Per-host shards are taken by the maker (so a record's examples stay together
    on one host), and shuffling is its own (a permutation per epoch), so seqio adds no shuffle buffer and
    a resumed run (the same dataset built again, then `skip`) reads the same stream."""

    def __init__(self, examples: Callable[..., Iterator[dict[str, Any]]], signature: Mapping[str, tf.TensorSpec],
                 splits: Sequence[str] = ("train",), chunk_size: int = 256):
        super().__init__(splits=splits, caching_permitted=False, performs_internal_shuffling=True)
        self._examples, self._signature, self._chunk_size = examples, dict(signature), chunk_size

    @property
    def supports_arbitrary_sharding(self) -> bool:
        return True

    def list_shards(self, split: str) -> Sequence[str]:
        return [split]

    def get_dataset(self, split: str = "train", shuffle: bool = True, seed: int | None = None,
                    shard_info: seqio.ShardInfo | None = None, **unused) -> tf.data.Dataset:
        index, count = (shard_info.index, shard_info.num_shards) if shard_info else (0, 1)
        signature = self._signature
        chunk_signature = {k: tf.TensorSpec([None, *v.shape], v.dtype) for k, v in signature.items()}
        passes, lock = itertools.count(), threading.Lock()

        def chunks() -> Iterator[dict[str, np.ndarray]]:
            with lock:  # tf.data starts one generator per pass, in order
                epoch = next(passes)
            buffer: list[dict[str, Any]] = []
            for example in self._examples(epoch, index, count, bool(shuffle), seed or 0):
                buffer.append(example)
                if len(buffer) == self._chunk_size:
                    yield {k: _stack([e[k] for e in buffer], spec) for k, spec in signature.items()}
                    buffer = []
            if buffer:
                yield {k: _stack([e[k] for e in buffer], spec) for k, spec in signature.items()}

        return tf.data.Dataset.from_generator(chunks, output_signature=chunk_signature).unbatch()


# Tasks whose examples come in groups that must share a batch (MTD round robin: one copy per language).
GROUP_SIZES: dict[str, int] = {}


def register_distillation_task(name: str, score_file: str | os.PathLike, queries_file: str | os.PathLike,
                               collections: Mapping[str, str | os.PathLike], vocabulary: seqio.Vocabulary,
                               num_passages: int = 6, top_n: int = 50, sampling: str = "random",
                               strategy: str = "mix_passages", seed: int = 0,
                               qrels: str | os.PathLike | None = None) -> str:
    """MTD task; see `examples.DistillationData` (with `qrels`, Translate-Train's judged draws).
    `passage_languages` index sorted(collections).

    Every pass over the score file (seqio's `num_epochs`) draws its own passages and languages. The files
    are read and checked here, once."""
    signature = {"inputs": _STR, "query_id": _STR, "passages": _STRS, "passage_ids": _STRS,
                 "teacher_scores": tf.TensorSpec([None], tf.float32),
                 "passage_languages": tf.TensorSpec([None], tf.int32)}
    data = ex.DistillationData(score_file, queries_file, dict(collections), num_passages, top_n, sampling,
                               strategy, seed, qrels)
    features = {"inputs": _token_feature(vocabulary), "passages": _token_feature(vocabulary, rank=2),
                "teacher_scores": _value_feature(tf.float32), "passage_languages": _value_feature(tf.int32)}
    if data.copies > 1:
        GROUP_SIZES[name] = data.copies
    else:
        GROUP_SIZES.pop(name, None)
    # Not cacheable (no CacheDatasetPlaceholder; EpochSource forbids caching): the passages and their
    # languages are drawn inside the source, afresh for every (seed, epoch, line), as PLAID-X redraws on
    # every pass; a cache would freeze one epoch's draw. Tokenising is its only step after the source.
    return _add_task(name, source=EpochSource(data.examples, signature), output_features=features,
                     preprocessors=[preprocessors.tokenize], shuffle_buffer_size=None)


# ------------------------------------------------------------------------------------- gin data set-ups

@gin.configurable
def mc4_data_setup(languages: Sequence[str] = gin.REQUIRED, vocabulary_path: str = gin.REQUIRED,
                   alpha: float = 0.3, tfds_data_dir: str | None = None, chunk_length: int = 256,
                   ratio_min: float = 0.1, ratio_max: float = 0.5) -> None:
    """Register the mC4 span-pair tasks and the mixture `mc4_span_pairs` (for `DatasetConfig.setup`); pairs are
    two independent random crops of `ratio_min`..`ratio_max` of a `chunk_length`-token chunk."""
    from polyret.seqio_tasks.vocab import get_vocabulary
    register_mc4_tasks(languages, get_vocabulary(vocabulary_path), alpha=alpha, tfds_data_dir=tfds_data_dir,
                       crop={"chunk_length": chunk_length, "ratio_min": ratio_min, "ratio_max": ratio_max})


@gin.configurable
def swim_ir_data_setup(files: Mapping[str, str] = gin.REQUIRED, vocabulary_path: str = gin.REQUIRED,
                       mixture: str = gin.REQUIRED) -> None:
    """Register SWIM-IR-layout files {name: path} as tasks `{mixture}_{name}` and the mixture `mixture`, rates
    proportional to their sizes (for `DatasetConfig.setup`; the vocabulary may be a checkpoint's tokenizer/)."""
    vocab = get_vocabulary(vocabulary_path)
    add_mixture(mixture, [(register_swim_ir_task(f"{mixture}_{name}", path, vocab), _count_lines(path))
                          for name, path in sorted(files.items())])


@gin.configurable
def beir_data_setup(folder: str = gin.REQUIRED, vocabulary_path: str = gin.REQUIRED, task: str = gin.REQUIRED,
                    split: str = "train") -> None:
    """Register a BEIR folder's judged `split` pairs (`examples.beir_pair_examples`) as the task `task`, for
    `DatasetConfig.setup`: your own data in a run or a study with gin alone (the vocabulary may be a
    checkpoint's tokenizer/)."""
    signature = {"inputs": _STR, "targets": _STR}
    vocab = get_vocabulary(vocabulary_path)
    features = {"inputs": _token_feature(vocab), "targets": _token_feature(vocab)}
    source = _generator_source(lambda: ex.beir_pair_examples(folder, split), signature)
    _add_task(task, source=source, output_features=features, preprocessors=_cached_tokenize())


@gin.configurable
def mined_data_setup(mined_dir: str = gin.REQUIRED, vocabulary_path: str = gin.REQUIRED, task: str = gin.REQUIRED,
                     num_negatives: int = 3) -> None:
    """Register every mined_*.jsonl of `mined_dir` (rows {query, positive, negatives}, as `mine_negatives` and the
    studies' miners write them) as one mixture `task`, for `DatasetConfig.setup`."""
    files = sorted(Path(mined_dir).glob("mined_*.jsonl"))
    if not files:
        raise FileNotFoundError(f"{mined_dir}: no mined_*.jsonl files")
    vocab = get_vocabulary(vocabulary_path)
    add_mixture(task, [(register_hard_negative_task(f"{task}_{p.stem}", p, vocab, num_negatives), 1.0) for p in files])


@gin.configurable
def mtd_data_setup(name: str = gin.REQUIRED, score_file: str = gin.REQUIRED, queries_file: str = gin.REQUIRED,
                   collections: Mapping[str, str] = gin.REQUIRED, vocabulary_path: str = gin.REQUIRED,
                   num_passages: int = 6, top_n: int = 50, strategy: str = "mix_passages", seed: int = 0,
                   qrels: str | None = None) -> None:
    """Register one Translate-Distill task (for `DatasetConfig.setup`); with `qrels` (MS MARCO's, for MTT),
    Translate-Train's judged draws."""
    from polyret.seqio_tasks.vocab import get_vocabulary
    register_distillation_task(name, score_file, queries_file, collections, get_vocabulary(vocabulary_path),
                               num_passages=num_passages, top_n=top_n, strategy=strategy, seed=seed, qrels=qrels)
