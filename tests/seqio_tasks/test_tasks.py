"""SeqIO tasks built through seqio and checked against the input files, read independently here."""

import gzip
import json
from collections import Counter

import numpy as np
import pytest
import seqio
import tensorflow_datasets as tfds

from polyret.seqio_tasks import dataset as D
from polyret.seqio_tasks import tasks as T
from polyret.seqio_tasks.feature_converters import (DistillationFeatureConverter, DualEncoderFeatureConverter,
                                                    HardNegativeFeatureConverter)
from polyret.seqio_tasks.templates import write_template_dataset
from polyret.seqio_tasks.vocab import punctuation_token_ids, train_sentencepiece

BYTES = seqio.ByteVocabulary()


def _decode(ids) -> str:
    return BYTES.decode([int(i) for i in ids if i > 1])


def _examples(name, lengths=None, **kw):
    ds = seqio.get_mixture_or_task(name).get_dataset(lengths or {"inputs": 64, "targets": 64}, split="train",
                                                     shuffle=False, try_in_mem_cache=False, **kw)
    return list(ds.as_numpy_iterator())


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def template_data(tmp_path_factory):
    return write_template_dataset(tmp_path_factory.mktemp("tpl"), num_entities=12)


def test_swim_ir_pairs_match_file_and_shards_partition(template_data):
    path = template_data["train"] / "swim_ir_cross_lingual_de.jsonl"
    rows = [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines()]
    T.register_swim_ir_task("t_swim_de", path, BYTES)
    got = _examples("t_swim_de")
    assert [(_decode(e["inputs"]), _decode(e["targets"])) for e in got] == [(r["query"], r["text"]) for r in rows]
    shards = [_examples("t_swim_de", shard_info=seqio.ShardInfo(i, 3)) for i in range(3)]
    ids = [e["query_id"].decode() for s in shards for e in s]
    assert sorted(ids) == sorted(r["_id"] for r in rows) and len(ids) == len(set(ids))


def test_swim_ir_mixtures_cover_sections(template_data):
    files = {(s, l): template_data["train"] / f"swim_ir_{s}_{l}.jsonl" for s in ("monolingual", "cross_lingual")
             for l in ("en", "ja")}
    names = T.register_swim_ir_tasks(files, BYTES, prefix="t_swim")
    assert set(names) == {f"t_swim_{s}_{l}" for s, l in files}
    mixture = seqio.get_mixture_or_task("t_swim_monolingual")
    assert {t.name for t in mixture.tasks} == {"t_swim_monolingual_en", "t_swim_monolingual_ja"}


@pytest.mark.parametrize("line,message", [
    ('{"_id": "1", "lang": "German", "code": "de", "query": "q", "title": "", "text": "t"', "malformed JSON"),
    ('{"_id": "1", "lang": "German", "code": "de", "title": "", "text": "t"}', "field 'query' is missing"),
    ('{"_id": "1", "lang": "German", "code": "de", "query": "q", "title": "", "text": "  "}', "field 'text' is empty"),
    ('{"_id": "1", "lang": "Klingon", "code": "tlh", "query": "q", "title": "", "text": "t"}',
     "field 'code': unknown language code 'tlh'"),
])
def test_swim_ir_bad_input_names_file_line_field(tmp_path, line, message):
    good = '{"_id": "0", "lang": "German", "code": "de", "query": "q", "title": "", "text": "t"}'
    path = tmp_path / "bad.jsonl"
    path.write_text(good + "\n" + line + "\n")
    T.register_swim_ir_task("t_bad", path, BYTES)
    with pytest.raises(Exception, match=f"{path}:2: {message}"):
        _examples("t_bad")
    from polyret.seqio_tasks.examples import swim_ir_examples
    from polyret.io.formats import SkipCounter
    skipped = SkipCounter()
    assert len(list(swim_ir_examples(path, skip_bad=True, skipped=skipped))) == 1 and sum(skipped.values()) == 1


def test_hard_negatives_fixed_count_sampling_and_padding(tmp_path):
    rows = [{"query": "q0", "positive": "p0", "negatives": ["n0", "n1", "n2", "n3", "n4"]},
            {"query": "q1", "positive": {"title": "T", "text": "p1"}, "negatives": ["m0"]}]
    tev = [{"query": "q2", "positive_passages": [{"docid": "d", "title": "", "text": "p2"}],
            "negative_passages": [{"docid": "x", "title": "", "text": "k0"}]}]
    path = _write_jsonl(tmp_path / "neg.jsonl", rows + tev)
    T.register_hard_negative_task("t_neg", path, BYTES, num_negatives=3, seed=7)
    lengths = {"inputs": 16, "targets": 16, "negative_targets": 8}
    got = _examples("t_neg", lengths)
    negs = [[_decode(r) for r in e["negative_targets"]] for e in got]
    assert len(set(negs[0])) == 3 and set(negs[0]) <= set(rows[0]["negatives"])
    assert negs[1] == ["m0", "", ""] and negs[2] == ["k0", "", ""]
    assert _decode(got[1]["targets"]) == "T p1"
    assert negs == [[_decode(r) for r in e["negative_targets"]] for e in _examples("t_neg", lengths)]  # seeded
    ds = seqio.get_dataset("t_neg", lengths, dataset_split="train", shuffle=False, feature_converter=HardNegativeFeatureConverter())
    model = list(ds.as_numpy_iterator())[1]
    negatives = model["right_negative_encoder_input_tokens"]
    assert negatives.shape == (3, 8) and negatives[1:].sum() == 0  # padded rows stay all zero (maskable)
    np.testing.assert_array_equal(negatives[0], list(BYTES.encode("m0")) + [1] + [0] * 5)


def test_passage_groups_ride_along_to_the_model_features(tmp_path):
    """with_groups: each row's `group` (and its negatives' `negative_groups`) reaches the batch as CRC-32 ids
    (zlib here), following the negatives' seeded sampling; a row without a group is its passage text's own;
    padded negatives get -1."""
    import zlib
    crc = lambda s: zlib.crc32(s.encode()) & 0x7FFFFFFF  # noqa: E731
    rows = [{"query": "q0", "positive": "p0", "group": "sec-1", "negatives": ["n0", "n1", "n2"],
             "negative_groups": ["sec-7", "sec-8", "sec-9"]},
            {"query": "q1", "positive": "p1", "negatives": ["m0"]}]
    T.register_hard_negative_task("t_groups", _write_jsonl(tmp_path / "g.jsonl", rows), BYTES, num_negatives=2,
                                  seed=3, with_groups=True)
    lengths = {"inputs": 8, "targets": 8, "negative_targets": 8}
    ds = seqio.get_dataset("t_groups", lengths, dataset_split="train", shuffle=False,
                           feature_converter=HardNegativeFeatureConverter())
    first, second = list(ds.as_numpy_iterator())
    assert first["passage_group"] == crc("sec-1") and second["passage_group"] == crc("p1")
    picked = [_decode(r) for r in first["right_negative_encoder_input_tokens"]]
    assert list(first["negative_groups"]) == [crc("sec-" + {"n0": "7", "n1": "8", "n2": "9"}[n]) for n in picked]
    assert list(second["negative_groups"]) == [crc("m0"), -1]
    pairs = [{"_id": "a", "lang": "de", "code": "en", "query": "q", "title": "", "text": "t", "group": "sec-1"}]
    T.register_swim_ir_task("t_groups_pairs", _write_jsonl(tmp_path / "p.jsonl", pairs), BYTES, with_groups=True)
    ds = seqio.get_dataset("t_groups_pairs", {"inputs": 8, "targets": 8}, dataset_split="train", shuffle=False,
                           feature_converter=DualEncoderFeatureConverter())
    assert next(ds.as_numpy_iterator())["passage_group"] == crc("sec-1")


def test_beir_folder_as_training_pairs(tmp_path):
    """beir_data_setup (gin only, no Python of one's own): every judged-relevant (query, passage) pair of the
    train split, title joined, read back through seqio; a judged id missing from the corpus is one DataError."""
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    _write_jsonl(folder / "corpus.jsonl", [{"_id": "d1", "title": "T", "text": "one"}, {"_id": "d2", "text": "two"},
                                           {"_id": "d3", "text": "three"}])
    _write_jsonl(folder / "queries.jsonl", [{"_id": "q1", "text": "first"}, {"_id": "q2", "text": "second"}])
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq2\td3\t1\nq1\td1\t1\nq1\td2\t0\n"
                                                "q1\td3\t2\n")
    T.beir_data_setup(str(folder), "byte", "t_beir")
    got = [(_decode(e["inputs"]), _decode(e["targets"])) for e in _examples("t_beir")]
    assert got == [("first", "T one"), ("first", "three"), ("second", "three")]
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td9\t1\n")
    T.beir_data_setup(str(folder), "byte", "t_beir_bad")
    with pytest.raises(Exception, match="d9"):
        _examples("t_beir_bad")


def test_feature_converter_trims_appends_eos_and_pads(tmp_path):
    path = _write_jsonl(tmp_path / "p.jsonl", [{"_id": "1", "lang": "en", "code": "en", "query": "abcdefghij",
                                               "title": "", "text": "xy"}])
    T.register_swim_ir_task("t_conv", path, BYTES)
    ds = seqio.get_dataset("t_conv", {"inputs": 5, "targets": 6}, dataset_split="train", shuffle=False,
                           feature_converter=DualEncoderFeatureConverter())
    ex = next(ds.as_numpy_iterator())
    np.testing.assert_array_equal(ex["left_encoder_input_tokens"], list(BYTES.encode("abcd")) + [1])
    np.testing.assert_array_equal(ex["right_encoder_input_tokens"], list(BYTES.encode("xy")) + [1, 0, 0, 0])


# ------------------------------------------------------------------------------------------------ MTD

@pytest.fixture()
def mtd_files(tmp_path):
    rng = np.random.default_rng(0)
    langs = ["fa", "ru", "zh"]
    pids = [f"p{i}" for i in range(30)]
    for lang in langs:
        (tmp_path / f"{lang}.tsv").write_text("".join(f"{p}\t{lang}:{p}\n" for p in pids), encoding="utf-8")
    (tmp_path / "queries.tsv").write_text("".join(f"q{i}\tquery {i}\n" for i in range(40)))
    scores = {}
    with gzip.open(tmp_path / "scores.jsonl.gz", "wt") as f:
        for i in range(40):
            chosen = rng.choice(pids, 12, replace=False)
            s = rng.normal(size=12).round(4)
            scores[f"q{i}"] = dict(zip(chosen, s))
            f.write(json.dumps([f"q{i}"] + [[p, float(v)] for p, v in zip(chosen, s)]) + "\n")
    return tmp_path, langs, scores


def _mtd(tmp, langs, name, **kw):
    T.register_distillation_task(name, tmp / "scores.jsonl.gz", tmp / "queries.tsv",
                                 {l: tmp / f"{l}.tsv" for l in langs}, BYTES, **kw)
    return _examples(name, {"inputs": 16, "passages": 16})


def test_mtd_top_k_scores_and_order(mtd_files):
    tmp, langs, scores = mtd_files
    got = _mtd(tmp, langs, "t_mtd_top", num_passages=4, top_n=8, sampling="top", strategy="mix_entries")
    for e in got:
        qid = e["query_id"].decode()
        expected = sorted(scores[qid].items(), key=lambda kv: -kv[1])[:4]
        assert [p.decode() for p in e["passage_ids"]] == [p for p, _ in expected]
        np.testing.assert_allclose(e["teacher_scores"], [s for _, s in expected], rtol=1e-6)
        texts = [_decode(r) for r in e["passages"]]
        lang = langs[e["passage_languages"][0]]
        assert texts == [f"{lang}:{p}" for p, _ in expected]  # one language for the whole entry


def test_mtd_random_sampling_within_top_n_and_deterministic(mtd_files):
    tmp, langs, scores = mtd_files
    a = _mtd(tmp, langs, "t_mtd_rand", num_passages=6, top_n=8, sampling="random", strategy="mix_passages", seed=3)
    b = _mtd(tmp, langs, "t_mtd_rand", num_passages=6, top_n=8, sampling="random", strategy="mix_passages", seed=3)
    assert all(np.array_equal(x["passages"], y["passages"]) for x, y in zip(a, b))
    counts = Counter()
    for e in a:
        top8 = {p for p, _ in sorted(scores[e["query_id"].decode()].items(), key=lambda kv: -kv[1])[:8]}
        assert {p.decode() for p in e["passage_ids"]} <= top8
        assert list(e["teacher_scores"]) == sorted(e["teacher_scores"], reverse=True)
        for p, lang_id, text in zip(e["passage_ids"], e["passage_languages"], e["passages"]):
            assert _decode(text) == f"{langs[lang_id]}:{p.decode()}"
        counts.update(e["passage_languages"].tolist())
    # 240 draws over 3 languages: each share within 4 standard errors of 1/3.
    total = sum(counts.values())
    assert all(abs(c / total - 1 / 3) < 4 * np.sqrt(2 / 9 / total) for c in counts.values())
    assert sum(len(set(e["passage_languages"])) > 1 for e in a) > len(a) * 0.5  # mixed within a set


def test_mtd_round_robin_repeats_query_per_language(mtd_files):
    tmp, langs, _ = mtd_files
    got = _mtd(tmp, langs, "t_mtd_rr", num_passages=2, top_n=8, strategy="round_robin")
    assert len(got) == 40 * len(langs)
    for i in range(0, len(got), 3):
        group = got[i:i + 3]
        assert len({e["query_id"] for e in group}) == 1
        assert [set(e["passage_languages"].tolist()) for e in group] == [{0}, {1}, {2}]
        assert len({tuple(e["passage_ids"]) for e in group}) == 1


def test_mtt_draws_a_judged_positive_first_and_unjudged_negatives_from_the_ranking(mtd_files):
    """Translate-Train's draw (qrels given): the judged passage (one of two for q0) first with score 1, then
    negatives from the ranking's top 8 among the passages not judged relevant, with score 0."""
    tmp, langs, scores = mtd_files
    judged = {f"q{i}": [f"p{(i * 7) % 30}"] for i in range(40)}
    judged["q0"] = ["p3", "p4"]
    (tmp / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{p}\t1\n" for q, ps in judged.items() for p in ps) + "q1\tp29\t0\n")
    got = _mtd(tmp, langs, "t_mtt", num_passages=4, top_n=8, strategy="mix_entries", qrels=tmp / "qrels.tsv")
    assert len(got) == 40
    for e in got:
        qid = e["query_id"].decode()
        ids = [p.decode() for p in e["passage_ids"]]
        unjudged = [p for p, _ in sorted(scores[qid].items(), key=lambda kv: -kv[1]) if p not in judged[qid]][:8]
        assert ids[0] in judged[qid] and set(ids[1:]) <= set(unjudged) and len(set(ids)) == 4
        assert e["teacher_scores"].tolist() == [1.0, 0.0, 0.0, 0.0]
        lang = langs[e["passage_languages"][0]]
        assert [_decode(t) for t in e["passages"]] == [f"{lang}:{p}" for p in ids]
    # A query without a judged-relevant passage: one line naming the score file's line.
    (tmp / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{ps[0]}\t1\n" for q, ps in judged.items() if q != "q5"))
    with pytest.raises(Exception, match=r"scores.jsonl.gz:6: query 'q5' has no judged-relevant passage in .*qrels.tsv"):
        _mtd(tmp, langs, "t_mtt_bad", num_passages=4, top_n=8, qrels=tmp / "qrels.tsv")


def test_mtd_missing_passage_id_names_file_and_line(mtd_files):
    tmp, langs, _ = mtd_files
    with gzip.open(tmp / "scores.jsonl.gz", "at") as f:
        f.write(json.dumps(["q1", ["p1", 1.0], ["nope", 0.5]]) + "\n")
    with pytest.raises(Exception, match=r"scores.jsonl.gz:41: passage id 'nope' is not in the collections"):
        _mtd(tmp, langs, "t_mtd_bad", num_passages=2)


def test_mtd_converter_shapes(mtd_files):
    tmp, langs, _ = mtd_files
    _mtd(tmp, langs, "t_mtd_conv", num_passages=3, top_n=8)
    ds = seqio.get_dataset("t_mtd_conv", {"inputs": 16, "passages": 12}, dataset_split="train", shuffle=False,
                           feature_converter=DistillationFeatureConverter())
    ex = next(ds.as_numpy_iterator())
    assert ex["right_encoder_input_tokens"].shape == (3, 12) and ex["teacher_scores"].shape == (3,)


# ----------------------------------------------------------------------------------------------- mC4

def test_mc4_span_pairs_through_tfds_mock():
    with tfds.testing.mock_data(num_examples=30, policy=tfds.testing.MockPolicy.USE_CODE):
        T.register_mc4_tasks(["en", "de"], BYTES, sizes={"en": 1000, "de": 10}, alpha=0.5, prefix="t_mc4",
                             min_span_length=1, crop={"chunk_length": 16})
        source = seqio.get_mixture_or_task("t_mc4_en").source.get_dataset("train", shuffle=False)
        docs = [BYTES.encode(d["text"].decode()) for d in source.as_numpy_iterator()]
        pairs = _examples("t_mc4_en", {"inputs": 12, "targets": 12}, seed=5)
    assert pairs
    stream = [t for d in docs for t in d]  # documents read as one token stream, as Contriever does
    for e in pairs:  # two independent crops of one chunk (overlap allowed; statistics in test_span_crops.py)
        a, b = list(e["inputs"]), list(e["targets"])
        assert 1 <= len(a) <= 11 and 1 <= len(b) <= 11
        assert any(abs(i - j) < 16 for i in _find(stream, a) for j in _find(stream, b)), "both from one chunk"


def _find(doc, span):
    return [i for i in range(len(doc) - len(span) + 1) if doc[i:i + len(span)] == span]


def test_mixture_rates_follow_temperature(tmp_path):
    sizes = {"en": 1000, "de": 100, "sw": 10}
    rates = T.temperature_rates(sizes, alpha=0.3)
    expected = {k: v ** 0.3 / sum(s ** 0.3 for s in sizes.values()) for k, v in sizes.items()}
    assert rates == pytest.approx(expected)
    # One local span task per language whose text says which language it is, mixed through seqio.
    letters = {"en": "a", "de": "b", "sw": "c"}
    for lang, letter in letters.items():
        (tmp_path / f"{lang}.txt").write_text((letter * 40 + "\n") * 5)
        T.register_text_span_task(f"t_rates_{lang}", [tmp_path / f"{lang}.txt"], BYTES, min_span_length=2)
    T.add_mixture("t_rates", [(f"t_rates_{lang}", rates[lang]) for lang in sizes])
    n = 3000
    ds = seqio.get_mixture_or_task("t_rates").get_dataset({"inputs": 8, "targets": 8}, split="train", shuffle=False,
                                                          seed=0, num_epochs=None, try_in_mem_cache=False)
    counts = Counter(chr(int(e["inputs"][0]) - 3) for e in ds.take(n).as_numpy_iterator())
    for lang, letter in letters.items():
        p = rates[lang]
        assert abs(counts[letter] / n - p) < 4 * np.sqrt(p * (1 - p) / n), (lang, counts)


def test_single_language_batches(template_data):
    files = {("monolingual", l): template_data["train"] / f"swim_ir_monolingual_{l}.jsonl" for l in ("de", "ja")}
    T.register_swim_ir_tasks(files, BYTES, prefix="t_single")
    ds = D.batched_dataset("t_single_monolingual", {"inputs": 48, "targets": 64}, batch_size=4,
                           feature_converter=DualEncoderFeatureConverter(), single_language_batches=True, seed=1)
    for batch in ds.take(10).as_numpy_iterator():
        scripts = {bool(any(ord(c) > 0x3000 for c in _decode(row))) for row in batch["left_encoder_input_tokens"]}
        assert len(scripts) == 1  # every query of a batch is German, or every one Japanese


# -------------------------------------------------------------------------------------- vocab + templates

def test_train_sentencepiece_on_template_text(template_data, tmp_path):
    model = train_sentencepiece([template_data["text"]], tmp_path / "sp", vocab_size=300)
    vocab = seqio.SentencePieceVocabulary(str(model))
    assert vocab.pad_id == 0 and vocab.eos_id == 1 and vocab.unk_id == 2
    assert vocab.decode(vocab.encode("Where does Kamiro live?")) == "Where does Kamiro live?"
    punct = punctuation_token_ids(vocab)
    assert punct and all(vocab.decode([i]).strip("▁ ") in "?.。？،؟!,-—" or not vocab.decode([i]).isalnum()
                         for i in punct)


def test_template_data_needs_more_than_string_match(template_data):
    corpus = {json.loads(l)["_id"]: json.loads(l)["text"] for l in
              (template_data["corpus"] / "en.jsonl").read_text().splitlines()}
    queries = [json.loads(l) for l in (template_data["queries"] / "test" / "en.jsonl").read_text().splitlines()]
    qrels = dict(l.split()[::2] for l in (template_data["qrels"] / "test" / "en.mono.txt").read_text().splitlines())
    words = lambda s: set(s.lower().replace("?", " ").replace(".", " ").replace(",", " ").split())
    correct = 0
    for q in queries:
        overlap = {d: len(words(q["text"]) & words(t)) for d, t in corpus.items()}
        best = max(overlap.values())
        top = [d for d, v in overlap.items() if v == best]
        correct += (qrels[q["_id"]] in top) / len(top)
        same_person = [d for d in corpus if d.split("-")[0] == qrels[q["_id"]].split("-")[0]]
        assert len(same_person) == 3 and all(overlap[d] >= 1 for d in same_person)  # name shared with negatives
    assert correct / len(queries) < 0.75  # word overlap alone is far from solving it
