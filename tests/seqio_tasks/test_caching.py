"""Offline caches written by seqio's Beam transforms (real DirectRunner): the cached examples are the
uncached ones exactly, span crops stay random after the cache, per-host shards read every example once,
and the checks before training name the task."""

import json
from collections import Counter

import numpy as np
import pytest
import seqio

from polyret.io.outputs import OutputError
from polyret.seqio_tasks import caching
from polyret.seqio_tasks import dataset as D
from polyret.seqio_tasks import tasks as T

BYTES = seqio.ByteVocabulary()
PAIRS = {"inputs": 64, "targets": 64}
NEGATIVES = {"inputs": 64, "targets": 64, "negative_targets": 64}
DOCS = [f"document {i} " + "word " * (3 + i % 5) for i in range(12)]


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def cache(tmp_path_factory, tiny_spm):
    """Four tasks (SentencePiece pairs, byte-level hard negatives of varying count and width, span pairs,
    byte-level pairs) cached into one folder with 4 shards each."""
    tmp = tmp_path_factory.mktemp("cache")
    swim = [{"_id": f"q{i}", "lang": "German", "code": "de", "query": f"wo ist der hund {i}" + " x" * (i % 4),
             "title": f"T{i}", "text": f"the quick brown fox {i}"} for i in range(26)]
    negatives = [{"query": f"q{i}", "positive": f"p{i}", "negatives": [f"n{i}" + "z" * j for j in range(i % 4)]}
                 for i in range(22)]
    (tmp / "docs.txt").write_text("".join(d + "\n" for d in DOCS), encoding="utf-8")
    T.register_swim_ir_task("c_pairs", _write_jsonl(tmp / "swim.jsonl", swim), seqio.SentencePieceVocabulary(str(tiny_spm)))
    T.register_swim_ir_task("c_pairs_bytes", tmp / "swim.jsonl", BYTES)
    T.register_hard_negative_task("c_negs", _write_jsonl(tmp / "neg.jsonl", negatives), BYTES, num_negatives=2, seed=3)
    T.register_text_span_task("c_spans", [tmp / "docs.txt"], BYTES, min_span_length=2,
                              crop={"chunk_length": 16, "ratio_min": 0.2, "ratio_max": 0.6})
    lines = []
    done = caching.cache_tasks(["c_pairs", "c_negs", "c_spans", "c_pairs_bytes"], str(tmp / "out"), num_shards=4,
                               report=lines.append)
    assert [d.examples for d in done] == [{"train": 26}, {"train": 22}, {"train": len(DOCS)}, {"train": 26}]
    assert len(lines) == 4 and lines[0].startswith("c_pairs: cached in ")
    seqio.add_global_cache_dirs([str(tmp / "out")])
    return tmp / "out"


def _examples(name, lengths, use_cached, **kw):
    ds = seqio.get_mixture_or_task(name).get_dataset(lengths, split="train", shuffle=False, use_cached=use_cached,
                                                     try_in_mem_cache=False, **kw)
    return list(ds.as_numpy_iterator())


def _canonical(example):
    """Every feature with its dtype and shape, comparable across a reordering."""
    return tuple(sorted((k, v) if isinstance(v, bytes) else (k, v.dtype.str, v.shape, v.tobytes())
                        for k, v in example.items()))


@pytest.mark.parametrize("name,lengths", [("c_pairs", PAIRS), ("c_negs", NEGATIVES)])
def test_cached_examples_equal_uncached_exactly(cache, name, lengths):
    uncached, cached = _examples(name, lengths, False), _examples(name, lengths, True)
    assert len(cached) == len(uncached) and len(set(map(_canonical, uncached))) == len(uncached)
    assert Counter(map(_canonical, cached)) == Counter(map(_canonical, uncached))  # seqio's cache is shuffled
    assert (cache / name / "COMPLETED").exists() and len(list((cache / name).glob("train.tfrecord-*-of-00004"))) == 4
    if name == "c_negs":  # lists of strings of varying width come back with the uncached shapes
        assert {e["negative_targets"].shape for e in cached} == {e["negative_targets"].shape for e in uncached}
        assert len({e["negative_targets"].shape for e in cached}) > 2


def test_span_cache_holds_tokenised_documents_and_crops_stay_random(cache):
    task = seqio.get_mixture_or_task("c_spans")
    source = task._get_cached_source("train")  # what the cache holds: the documents, tokenised
    stored = sorted(tuple(e["text"]) for e in source.get_dataset("train", shuffle=False).as_numpy_iterator())
    assert stored == sorted(tuple(BYTES.encode(d)) for d in DOCS)
    # Crops are cut after the cache: two epochs of one cached read give different crops.
    crops = [(tuple(e["inputs"]), tuple(e["targets"]))
             for e in _examples("c_spans", {"inputs": 16, "targets": 16}, True, num_epochs=2, seed=1)]
    half = len(crops) // 2
    assert half > 0 and crops[:half] != crops[half:]


@pytest.mark.parametrize("hosts", [2, 4])
def test_per_host_shards_read_every_cached_example_once(cache, hosts):
    whole = Counter(map(_canonical, _examples("c_negs", NEGATIVES, True)))
    parts = [Counter(map(_canonical, _examples("c_negs", NEGATIVES, True, shard_info=seqio.ShardInfo(h, hosts))))
             for h in range(hosts)]
    assert all(parts) and sum(parts, Counter()) == whole
    caching.check_cached("c_negs", [], num_hosts=hosts)  # 4 shards: a multiple of 2 and 4 hosts


def test_checks_before_training_name_the_task(cache, tmp_path):
    with pytest.raises(caching.CacheError, match=r"task 'c_negs': the cache .* has 4 shards, not a multiple of the "
                                                 r"3 hosts .* --num_shards a multiple of 3"):
        caching.check_cached("c_negs", [], num_hosts=3)
    T.register_swim_ir_task("c_uncached", _write_jsonl(tmp_path / "s.jsonl", [
        {"_id": "1", "lang": "English", "code": "en", "query": "q", "title": "", "text": "t"}]), BYTES)
    with pytest.raises(caching.CacheError, match=rf"task 'c_uncached' is not cached in .*{cache}.*polyret cache_tasks"):
        caching.check_cached("c_uncached", [str(cache)])
    with pytest.raises(caching.CacheError, match="task 'no_such_task' is not registered"):
        caching.cache_tasks(["c_uncached", "no_such_task"], str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()  # every task is checked before anything is written


def test_translate_distill_is_not_cacheable(tmp_path):
    import gzip
    (tmp_path / "en.tsv").write_text("".join(f"p{i}\tpassage {i}\n" for i in range(4)))
    (tmp_path / "q.tsv").write_text("q0\tquery\n")
    with gzip.open(tmp_path / "s.jsonl.gz", "wt") as f:
        f.write(json.dumps(["q0"] + [[f"p{i}", float(i)] for i in range(4)]) + "\n")
    T.register_distillation_task("c_mtd", tmp_path / "s.jsonl.gz", tmp_path / "q.tsv", {"en": tmp_path / "en.tsv"},
                                 BYTES, num_passages=2, top_n=4)
    with pytest.raises(caching.CacheError, match="task 'c_mtd' cannot be cached: its source draws its examples "
                                                 "afresh every epoch"):
        caching.cache_tasks(["c_mtd"], str(tmp_path / "out"))
    with pytest.raises(caching.CacheError, match="c_mtd' cannot be read from a cache"):
        caching.check_cached("c_mtd", [str(tmp_path)])


def test_foreign_folder_refused_and_a_cache_replaced_whole(cache, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError, match="not empty and not a polyret seqio_cache output"):
        caching.cache_tasks(["c_pairs"], str(foreign))
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    # Caching again into the same cache replaces the task's folder whole; skip_cached keeps it.
    [again] = caching.cache_tasks(["c_spans"], str(cache), num_shards=2, report=None)
    assert again.num_shards == 2 and len(list((cache / "c_spans").glob("train.tfrecord-*-of-00002"))) == 2
    assert not list((cache / "c_spans").glob("*-of-00004"))
    assert not [p for p in cache.iterdir() if "polyret-tmp" in p.name]  # no temp folder left beside it
    [kept] = caching.cache_tasks(["c_spans"], str(cache), num_shards=4, skip_cached=True, report=None)
    assert kept.skipped and kept.num_shards == 2


# ------------------------------------------------------------ the trainer's batched read of the caches

def _rows(ds):
    """Model-feature rows of a batched dataset, comparable across a reordering."""
    return Counter(tuple((k, b[k][i].shape, b[k][i].tobytes()) for k in sorted(b))
                   for b in ds.as_numpy_iterator() for i in range(next(iter(b.values())).shape[0]))


@pytest.mark.parametrize("name,lengths,converter,batch", [
    ("c_pairs", {"inputs": 8, "targets": 6}, "DualEncoderFeatureConverter", 13),
    ("c_negs", {"inputs": 4, "targets": 4, "negative_targets": 3}, "HardNegativeFeatureConverter", 11)])
def test_batched_cache_read_gives_the_uncached_model_features(cache, name, lengths, converter, batch):
    from polyret.seqio_tasks import feature_converters as fc
    conv = getattr(fc, converter)()
    assert D.batched_read_supported([name], conv)
    cached = D.batched_dataset(name, lengths, batch, conv, shuffle=True, seed=5, num_epochs=1, use_cached=True)
    reference = seqio.get_dataset(name, lengths, conv, use_cached=False, shuffle=False)  # seqio, tokenising
    rows = _rows(cached)
    assert sum(rows.values()) == 2 * batch and rows == _rows(reference.batch(1))  # short rows cut, EOS, padding


@pytest.mark.parametrize("hosts", [2, 4])
def test_batched_cache_read_splits_across_hosts(cache, hosts):
    from polyret.seqio_tasks.feature_converters import HardNegativeFeatureConverter
    conv, lengths = HardNegativeFeatureConverter(), {"inputs": 8, "targets": 8, "negative_targets": 8}
    whole = _rows(D.batched_dataset("c_negs", lengths, 1, conv, shuffle=False, num_epochs=1, use_cached=True))
    parts = [_rows(D.batched_dataset("c_negs", lengths, 1, conv, shuffle=True, num_epochs=1, use_cached=True,
                                     shard_info=seqio.ShardInfo(h, hosts))) for h in range(hosts)]
    assert sum(whole.values()) == 22 and all(parts) and sum(parts, Counter()) == whole


def test_batched_cache_read_mixes_by_rate(cache):
    from polyret.seqio_tasks.feature_converters import DualEncoderFeatureConverter
    T.add_mixture("c_mix", [("c_pairs", 3.0), ("c_pairs_bytes", 1.0)])
    ds = D.batched_dataset("c_mix", {"inputs": 8, "targets": 8}, 8, DualEncoderFeatureConverter(), seed=2,
                           use_cached=True).take(100)
    first = np.concatenate([b["left_encoder_input_tokens"][:, 0] for b in ds.as_numpy_iterator()])
    from_bytes = np.mean(first == BYTES.encode("w")[0])  # queries "wo ist ..."; SentencePiece ids are < 80
    assert len(first) == 800 and abs(from_bytes - 0.25) < 4 * np.sqrt(0.25 * 0.75 / 800)


def test_batched_cache_read_is_reproducible_and_keeps_single_language_batches(cache):
    from polyret.seqio_tasks.feature_converters import DualEncoderFeatureConverter
    T.add_mixture("c_mix1", [("c_pairs", 1.0), ("c_pairs_bytes", 1.0)])
    lengths, conv = {"inputs": 8, "targets": 8}, DualEncoderFeatureConverter()

    def first(single, skip=0):
        ds = D.batched_dataset("c_mix1", lengths, 4, conv, seed=3, use_cached=True, single_language_batches=single)
        return [b["left_encoder_input_tokens"] for b in ds.skip(skip).take(12).as_numpy_iterator()]

    a, b = first(False), first(False)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))  # a resumed run (`skip`) sees the same stream
    assert all(np.array_equal(x, y) for x, y in zip(first(False, skip=5), a[5:]))
    for batch in first(True):
        from_bytes = batch[:, 0] == BYTES.encode("w")[0]
        assert from_bytes.all() or not from_bytes.any()  # every batch from one task
