"""Benchmarks read as published: each fixture is written here byte for byte in its release's layout,
and ids, texts, qrels and languages must come out as the files say."""

import gzip
import json
import zipfile

import pytest

from polyret.io.benchmarks import load_benchmark, load_files
from polyret.io.formats import DataError, read_qrels
from polyret.io.runs import read_trec_run


def write(path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path


BEIR_CORPUS = ('{"_id": "4983", "title": "Microstructural development of human newborn cerebral white matter", '
               '"text": "Alterations of the architecture of cerebral white matter in the developing human brain.", '
               '"metadata": {}}\n'
               '{"_id": "5836", "title": "Induction of myelodysplasia", "text": "Myelodysplastic syndromes (MDS) are '
               'age-dependent stem cell malignancies.", "metadata": {}}\n'
               '{"_id": "7912", "title": "", "text": "An untitled abstract.", "metadata": {}}\n')
BEIR_QUERIES = ('{"_id": "1", "text": "0-dimensional biomaterials show inductive properties.", "metadata": {}}\n'
                '{"_id": "3", "text": "1,000 genomes project enables mapping of genetic sequence variation.", '
                '"metadata": {}}\n'
                '{"_id": "5", "text": "A train-only query.", "metadata": {}}\n')
BEIR_QRELS = "query-id\tcorpus-id\tscore\n1\t4983\t1\n3\t5836\t1\n3\t7912\t0\n"


def beir_folder(root):
    write(root / "corpus.jsonl", BEIR_CORPUS)
    write(root / "queries.jsonl", BEIR_QUERIES)
    write(root / "qrels" / "test.tsv", BEIR_QRELS)
    return root


def test_beir_folder(tmp_path):
    bench = load_benchmark(str(beir_folder(tmp_path / "scifact")))
    assert sorted(bench.corpus) == ["4983", "5836", "7912"]
    assert bench.corpus["5836"] == ("Induction of myelodysplasia Myelodysplastic syndromes (MDS) are age-dependent "
                                    "stem cell malignancies.")
    assert bench.corpus["7912"] == "An untitled abstract."
    assert bench.passage_texts["4983"].startswith("Alterations")
    assert bench.queries == {"1": "0-dimensional biomaterials show inductive properties.",
                             "3": "1,000 genomes project enables mapping of genetic sequence variation."}
    assert bench.qrels == {"1": {"4983": 1}, "3": {"5836": 1, "7912": 0}}
    with pytest.raises(DataError, match="no qrels for split 'dev'"):
        load_benchmark(str(tmp_path / "scifact"), split="dev")


def test_ir_datasets_id_from_a_local_copy(tmp_path, monkeypatch):
    """ir_datasets' own loader for `beir/scifact/test`, its download replaced by the release zip in
    IR_DATASETS_HOME (where ir_datasets caches it); nothing is fetched."""
    home = tmp_path / "irds"
    (home / "beir" / "scifact").mkdir(parents=True)
    with zipfile.ZipFile(home / "beir" / "scifact" / "source.zip", "w") as z:
        z.writestr("scifact/corpus.jsonl", BEIR_CORPUS)
        z.writestr("scifact/queries.jsonl", BEIR_QUERIES)
        z.writestr("scifact/qrels/test.tsv", BEIR_QRELS)
        z.writestr("scifact/qrels/train.tsv", "query-id\tcorpus-id\tscore\n5\t4983\t1\n")
    monkeypatch.setenv("IR_DATASETS_HOME", str(home))
    bench = load_benchmark("beir/scifact/test")
    local = load_benchmark(str(beir_folder(tmp_path / "scifact")))
    assert dict(bench.corpus) == dict(local.corpus)
    assert bench.qrels == local.qrels
    assert {q: bench.queries[q] for q in local.queries} == local.queries
    assert set(bench.query_languages.values()) == {"en"}
    with pytest.raises(DataError, match="not an ir_datasets id"):
        load_benchmark("no-such/dataset")


def test_miracl_release_layout(tmp_path):
    lang_dir = tmp_path / "miracl" / "miracl-v1.0-sw"
    write(lang_dir / "topics" / "topics.miracl-v1.0-sw-dev.tsv",
          "0\tJe, wanyama wa jamii ya panya wanapatikana Afrika?\n1\tMlima Kilimanjaro una urefu gani?\n")
    write(lang_dir / "qrels" / "qrels.miracl-v1.0-sw-dev.tsv",
          "0\tQ0\t7453#2\t1\n0\tQ0\t7453#3\t0\n1\tQ0\t1194#0\t1\n")
    corpus_dir = tmp_path / "miracl" / "miracl-corpus-v1.0-sw"
    corpus_dir.mkdir(parents=True)
    docs = [{"docid": "7453#2", "title": "Panya", "text": "Panya ni wanyama wadogo."},
            {"docid": "7453#3", "title": "Panya", "text": "Wanapatikana kote duniani."},
            {"docid": "1194#0", "title": "Kilimanjaro", "text": "Kilimanjaro ni mlima mrefu zaidi Afrika."}]
    with gzip.open(corpus_dir / "docs-0.jsonl.gz", "wt", encoding="utf-8") as f:
        for d in docs[:2]:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    with gzip.open(corpus_dir / "docs-1.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(json.dumps(docs[2], ensure_ascii=False) + "\n")
    bench = load_benchmark(str(lang_dir))
    assert bench.corpus["1194#0"] == "Kilimanjaro Kilimanjaro ni mlima mrefu zaidi Afrika."
    assert bench.queries["1"] == "Mlima Kilimanjaro una urefu gani?"
    assert bench.qrels == {"0": {"7453#2": 1, "7453#3": 0}, "1": {"1194#0": 1}}
    assert bench.query_languages == {"0": "sw", "1": "sw"}


def test_miracl_parquet_corpus(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    lang_dir = tmp_path / "miracl-v1.0-yo"
    write(lang_dir / "topics" / "topics.miracl-v1.0-yo-dev.tsv", "7\tTa ni Obafemi Awolowo?\n")
    write(lang_dir / "qrels" / "qrels.miracl-v1.0-yo-dev.tsv", "7\tQ0\t12#0\t1\n")
    (lang_dir / "corpus").mkdir()
    pq.write_table(pa.table({"docid": ["12#0", "12#1"], "title": ["Awolowo", "Awolowo"],
                             "text": ["Obafemi Awolowo je oloselu.", "O bi ni 1909."]}),
                   lang_dir / "corpus" / "train-00000-of-00001.parquet")
    bench = load_benchmark(str(lang_dir))
    assert dict(bench.corpus) == {"12#0": "Awolowo Obafemi Awolowo je oloselu.", "12#1": "Awolowo O bi ni 1909."}
    assert bench.query_languages == {"7": "yo"}


def test_xor_retrieve_folder(tmp_path):
    write(tmp_path / "xor" / "xor_dev_retrieve_eng_span_v1_1.jsonl",
          '{"id": "-1000013638352439925", "lang": "ja", "question": "アーロンの兄弟は誰？", "answers": ["Moses"]}\n'
          '{"id": "-8814537045658787347", "lang": "te", "question": "అతను ప్రవక్తా?", "answers": ["yes"]}\n')
    write(tmp_path / "xor" / "psgs_w100.tsv",
          'id\ttext\ttitle\n'
          '1\t"Aaron Aaron ( or ; ""Ahärôn"") is a prophet, high priest, and the brother of Moses."\tAaron\n'
          '2\tGod at Sinai granted Aaron the priesthood.\tAaron\n')
    bench = load_benchmark(str(tmp_path / "xor"))
    assert list(bench.corpus) == ["1", "2"]
    assert bench.passage_texts["1"] == 'Aaron Aaron ( or ; "Ahärôn") is a prophet, high priest, and the brother of Moses.'
    assert bench.corpus["2"] == "Aaron God at Sinai granted Aaron the priesthood."
    assert bench.answers == {"-1000013638352439925": ["Moses"], "-8814537045658787347": ["yes"]}
    assert bench.query_languages == {"-1000013638352439925": "ja", "-8814537045658787347": "te"}
    assert bench.queries["-1000013638352439925"] == "アーロンの兄弟は誰？"


def test_neuclir_and_hc4_qrels_and_runs(tmp_path):
    # NeuCLIR 2022 qrels: `topic 0 docid grade` (grades 0/1/3); HC4: `topic Q0 docid grade`.
    neuclir = write(tmp_path / "2022-qrels.fa", "0 0 00086c6b-c6e1-4fd0-9c1e-5d2d8e0b6b52 3\n"
                                                 "0 0 001c2c2c-5b36-4d8f-9f0e-3a2e8c5d3c1a 0\n"
                                                 "1 0 00086c6b-c6e1-4fd0-9c1e-5d2d8e0b6b52 1\n")
    assert read_qrels(neuclir) == {"0": {"00086c6b-c6e1-4fd0-9c1e-5d2d8e0b6b52": 3,
                                         "001c2c2c-5b36-4d8f-9f0e-3a2e8c5d3c1a": 0},
                                   "1": {"00086c6b-c6e1-4fd0-9c1e-5d2d8e0b6b52": 1}}
    hc4 = write(tmp_path / "test.qrels.txt", "1001 Q0 a6b7c5d4-1111-2222-3333-444455556666 3\n")
    assert read_qrels(hc4) == {"1001": {"a6b7c5d4-1111-2222-3333-444455556666": 3}}
    run = write(tmp_path / "bm25.fa.trec", "0 Q0 00086c6b-c6e1-4fd0-9c1e-5d2d8e0b6b52 1 14.2031 bm25\n"
                                           "0 Q0 001c2c2c-5b36-4d8f-9f0e-3a2e8c5d3c1a 2 12.5 bm25\n")
    assert read_trec_run(run) == {"0": {"00086c6b-c6e1-4fd0-9c1e-5d2d8e0b6b52": 14.2031,
                                        "001c2c2c-5b36-4d8f-9f0e-3a2e8c5d3c1a": 12.5}}


def test_files_one_by_one_and_bad_judgements(tmp_path):
    corpus = write(tmp_path / "c.tsv", "d1\tfirst passage\nd2\tsecond passage\n")
    queries = write(tmp_path / "q.tsv", "id\ttext\tlang\nq1\tfirst\tde\n")
    qrels = write(tmp_path / "qrels.txt", "q1 0 d9 1\n")
    with pytest.raises(DataError, match="document id 'd9'"):
        load_files(corpus, queries, qrels)
    bench = load_files(corpus, queries, write(tmp_path / "ok.txt", "q1 0 d2 1\n"))
    assert bench.query_languages == {"q1": "de"} and bench.qrels == {"q1": {"d2": 1}}
    with pytest.raises(DataError, match="not a benchmark layout"):
        load_benchmark(str(tmp_path))
