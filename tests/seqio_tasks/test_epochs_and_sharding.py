"""Translate-Distill draws afresh every epoch (from seed, epoch and line), resumes identically, keeps a
query's round-robin copies in one batch, and reads its collections by offset; every training source
splits across 2 and 4 simulated hosts (seqio ShardInfo) with no example read twice or skipped."""

import gzip
import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import seqio

from polyret.io.collection_index import AlignedCollections
from polyret.io.formats import DataError, read_id_text
from polyret.seqio_tasks import dataset as D
from polyret.seqio_tasks import tasks as T
from polyret.seqio_tasks.examples import swim_ir_examples
from polyret.seqio_tasks.feature_converters import DistillationFeatureConverter

BYTES = seqio.ByteVocabulary()
LANGS = ["fa", "ru", "zh"]
NUM_QUERIES = 24


@pytest.fixture(scope="module")
def mtd(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mtd")
    rng = np.random.default_rng(0)
    pids = [str(i) for i in range(60)]  # MS MARCO-style integer ids
    for lang in LANGS:
        (tmp / f"{lang}.tsv").write_text("".join(f"{p}\t{lang}:{p}\n" for p in pids), encoding="utf-8")
    (tmp / "queries.tsv").write_text("".join(f"q{i}\tquery {i}\n" for i in range(NUM_QUERIES)))
    with gzip.open(tmp / "scores.jsonl.gz", "wt") as f:
        for i in range(NUM_QUERIES):
            chosen = rng.choice(pids, 20, replace=False)
            f.write(json.dumps([f"q{i}"] + [[p, float(s)] for p, s in zip(chosen, rng.normal(size=20))]) + "\n")
    return tmp


def _register(tmp, name, **kw):
    return T.register_distillation_task(name, tmp / "scores.jsonl.gz", tmp / "queries.tsv",
                                        {l: tmp / f"{l}.tsv" for l in LANGS}, BYTES, top_n=12, seed=7, **kw)


def _dataset(name, shuffle=True, epochs=3, shard=None, seed=0):
    return seqio.get_mixture_or_task(name).get_dataset({"inputs": 16, "passages": 16}, split="train",
                                                       shuffle=shuffle, seed=seed, num_epochs=epochs,
                                                       shard_info=shard, try_in_mem_cache=False)


def _key(e):
    return (e["query_id"].decode(), tuple(p.decode() for p in e["passage_ids"]), tuple(e["passage_languages"]))


def test_passages_redrawn_every_epoch_and_identical_on_resume(mtd):
    _register(mtd, "t_ep_mix", num_passages=6)
    stream = [_key(e) for e in _dataset("t_ep_mix").as_numpy_iterator()]
    assert len(stream) == 3 * NUM_QUERIES
    epochs = [stream[i * NUM_QUERIES:(i + 1) * NUM_QUERIES] for i in range(3)]
    by_query = [{k[0]: k[1:] for k in e} for e in epochs]
    assert all(set(b) == {f"q{i}" for i in range(NUM_QUERIES)} for b in by_query)  # each epoch: every query once
    changed = [sum(by_query[a][q] != by_query[b][q] for q in by_query[0]) for a, b in ((0, 1), (1, 2), (0, 2))]
    assert all(c >= NUM_QUERIES - 2 for c in changed), changed  # 6 of 12, 3 languages: a repeat is rare
    assert [k[0] for k in epochs[0]] != [k[0] for k in epochs[1]]  # the order is reshuffled too
    # A resumed run builds the dataset again and skips what was consumed: the same stream follows.
    for consumed in (5, NUM_QUERIES, 2 * NUM_QUERIES + 3):
        resumed = [_key(e) for e in _dataset("t_ep_mix").skip(consumed).as_numpy_iterator()]
        assert resumed == stream[consumed:]
    # Draws depend on (seed, epoch, line) only: registering again, or another seqio seed, changes nothing.
    _register(mtd, "t_ep_mix", num_passages=6)
    assert [_key(e) for e in _dataset("t_ep_mix").as_numpy_iterator()] == stream


def test_each_run_seed_draws_its_own_passages(mtd):
    """A study's seeds (DatasetConfig.seed) give each run its own passage draws and order; the same seed, the same."""
    _register(mtd, "t_seeded", num_passages=6)
    draws = {seed: [_key(e) for e in _dataset("t_seeded", epochs=1, seed=seed).as_numpy_iterator()] for seed in (0, 1)}
    assert draws[0] == [_key(e) for e in _dataset("t_seeded", epochs=1, seed=0).as_numpy_iterator()]
    first = {q: rest for q, *rest in draws[0]}
    second = {q: rest for q, *rest in draws[1]}
    assert first.keys() == second.keys()
    assert sum(first[q] != second[q] for q in first) > NUM_QUERIES // 2  # most queries drew other passages
    assert [q for q, *_ in draws[0]] != [q for q, *_ in draws[1]]      # and the epoch's order differs


def test_draw_is_shard_independent(mtd):
    _register(mtd, "t_ep_shard", num_passages=6)
    whole = {(i // NUM_QUERIES, _key(e)[0]): _key(e) for i, e in enumerate(_dataset("t_ep_shard").as_numpy_iterator())}
    for hosts in (2, 4):
        for h in range(hosts):
            part = list(_dataset("t_ep_shard", shard=seqio.ShardInfo(h, hosts)).as_numpy_iterator())
            per_epoch = len(part) // 3
            for i, e in enumerate(part):
                assert whole[(i // per_epoch, _key(e)[0])] == _key(e)


def test_round_robin_copies_share_a_batch(mtd):
    _register(mtd, "t_ep_rr", num_passages=2, strategy="round_robin")
    ds = D.batched_dataset("t_ep_rr", {"inputs": 16, "passages": 16}, batch_size=6,
                           feature_converter=DistillationFeatureConverter(), shuffle=True, seed=3, num_epochs=2)
    batches = list(ds.as_numpy_iterator())
    assert len(batches) == 2 * NUM_QUERIES * 3 // 6
    queries_per_batch = Counter()
    for b in batches:
        left = [tuple(row) for row in b["left_encoder_input_tokens"]]
        for q, n in Counter(left).items():
            assert n == 3  # all three language copies of a query, in the same batch
        langs = b["passage_languages"]
        for i in range(0, 6, 3):
            assert sorted(langs[i:i + 3, 0]) == [0, 1, 2]
        queries_per_batch[len(set(left))] += 1
    assert queries_per_batch == {2: len(batches)}
    with pytest.raises(ValueError, match="not a multiple of 3"):
        D.batched_dataset("t_ep_rr", {"inputs": 16, "passages": 16}, batch_size=4,
                          feature_converter=DistillationFeatureConverter())


def test_collections_read_by_offset_match_the_reader(tmp_path):
    dpr = ('id\ttext\ttitle\n1\t"Aaron ( or ; ""Ahärôn"") is a prophet."\tAaron\n2\tGod at Sinai.\tAaron\n')
    (tmp_path / "en.tsv").write_text(dpr, encoding="utf-8")
    (tmp_path / "de.tsv").write_text(dpr.replace("God at Sinai", "Gott am Sinai"), encoding="utf-8")
    (tmp_path / "fr.jsonl").write_text('\ufeff{"_id": "1", "title": "Aaron", "text": "Aaron est un prophète."}\n'
                                       '{"_id": "2", "title": "Aaron", "text": "Dieu au Sinaï."}\n', encoding="utf-8")
    c = AlignedCollections({"en": tmp_path / "en.tsv", "de": tmp_path / "de.tsv", "fr": tmp_path / "fr.jsonl"})
    for lang, name in (("en", "en.tsv"), ("de", "de.tsv"), ("fr", "fr.jsonl")):
        expected = read_id_text(tmp_path / name)
        assert {c.id_of(r): c.text(lang, r) for r in range(len(c))} == expected
    assert c.row("2") == 1 and c.row("3") is None and c.row("02") is None
    (tmp_path / "ru.tsv").write_text("1\tx\n3\ty\n")
    with pytest.raises(DataError, match=r"ru\.tsv: not row-aligned with .*en\.tsv: record 2 has id '3', expected '2'"):
        AlignedCollections({"en": tmp_path / "en.tsv", "ru": tmp_path / "ru.tsv"})


# ------------------------------------------------------------------------------------ per-host sharding

def _all_examples(name, lengths, shard=None, shuffle=False):
    ds = seqio.get_mixture_or_task(name).get_dataset(lengths, split="train", shuffle=shuffle, seed=0,
                                                     num_epochs=1, shard_info=shard, try_in_mem_cache=False,
                                                     trim_output_features=lengths is not None)
    def value(v):
        v = np.asarray(v)
        return tuple(v.ravel().tolist()) if v.dtype == object else (v.shape, v.tobytes())
    return [tuple(sorted((k, value(v)) for k, v in e.items())) for e in ds.as_numpy_iterator()]


def _documents_task(span_task):
    """The span task's source with nothing after it: span cuts are random per host (seqio seeds them by
    position), so the partition is checked on the documents the spans are cut from."""
    import tensorflow as tf
    name = f"{span_task}_docs"
    feature = seqio.Feature(seqio.PassThroughVocabulary(size=0), add_eos=False, dtype=tf.string, rank=0)
    T._add_task(name, source=seqio.get_mixture_or_task(span_task).source, output_features={"text": feature},
                preprocessors=[])
    return name


def _check_partition(name, lengths, shuffle=False):
    whole = Counter(_all_examples(name, lengths, shuffle=shuffle))
    assert sum(whole.values()) > 8
    for hosts in (2, 4):
        parts = [Counter(_all_examples(name, lengths, seqio.ShardInfo(h, hosts), shuffle)) for h in range(hosts)]
        assert sum(parts, Counter()) == whole, (name, hosts)  # nothing read twice, nothing skipped
        assert all(sum(p.values()) > 0 for p in parts)


def _swim_rows(n):
    return [{"_id": f"{i}#0", "lang": "Hindi", "code": "hn" if i % 2 else "hi", "query": f"प्रश्न {i}",
             "title": f"T{i}", "text": f"passage {i}"} for i in range(n)]


def test_every_source_shards_across_hosts(mtd, tmp_path):
    rows = _swim_rows(22)
    (tmp_path / "swim.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "swim.parquet")
    pair_lengths = {"inputs": 32, "targets": 32}
    for name, path in (("t_sh_swim_jsonl", "swim.jsonl"), ("t_sh_swim_parquet", "swim.parquet")):
        T.register_swim_ir_task(name, tmp_path / path, BYTES)
        _check_partition(name, pair_lengths)
    (tmp_path / "hn.jsonl").write_text("".join(json.dumps({"query": f"q{i}", "positive": f"p{i}",
                                                           "negatives": [f"n{i}a", f"n{i}b"]}) + "\n" for i in range(18)))
    T.register_hard_negative_task("t_sh_hn", tmp_path / "hn.jsonl", BYTES, num_negatives=2)
    _check_partition("t_sh_hn", {"inputs": 16, "targets": 16, "negative_targets": 16})
    (tmp_path / "docs.txt").write_text("".join(f"document number {i} " * 6 + "\n" for i in range(20)))
    T.register_text_span_task("t_sh_spans", [tmp_path / "docs.txt"], BYTES, min_span_length=4)
    _check_partition(_documents_task("t_sh_spans"), None)
    for strategy, k in (("mix_passages", 6), ("mix_entries", 6), ("round_robin", 2)):
        _register(mtd, f"t_sh_mtd_{strategy}", num_passages=k, strategy=strategy)
        _check_partition(f"t_sh_mtd_{strategy}", {"inputs": 16, "passages": 16}, shuffle=True)
    # mC4 (TFDS) is sharded by seqio over the release's files; tfds' mock data ignores shard_info (every
    # shard returns every example), so it cannot be checked here.


def test_swim_ir_parquet_reads_like_jsonl(tmp_path):
    rows = _swim_rows(5)
    (tmp_path / "swim.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "swim.parquet")
    a, b = list(swim_ir_examples(tmp_path / "swim.jsonl")), list(swim_ir_examples(tmp_path / "swim.parquet"))
    assert a == b and {e["language"] for e in a} == {"hi"}  # `hn` (the datacard's Hindi) read as hi
    assert a[1] == {"inputs": "प्रश्न 1", "targets": "T1 passage 1", "query_id": "1#0", "language": "hi"}
    bad = [dict(rows[0], text=None)]
    pq.write_table(pa.Table.from_pylist(bad), tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=r"bad\.parquet:1: field 'text' is null"):
        list(swim_ir_examples(tmp_path / "bad.parquet"))
