"""evaluate on precomputed vectors loads neither TensorFlow nor JAX/Flax (each alone costs more resident memory
than 1M x 128 vectors), keeps only the corpus ids when no text is needed, and still accepts a gin config that
names a configurable of the training code."""

import json
import subprocess
import sys
from pathlib import Path

import gin
import numpy as np
import pytest

from polyret import configuration
from polyret.io.benchmarks import CorpusIds, TitledCorpus, load_files

ROOT = Path(__file__).resolve().parents[2]


def _inputs(tmp_path: Path, n_docs: int = 300, n_queries: int = 20) -> list[str]:
    rng = np.random.default_rng(0)
    np.save(tmp_path / "d.npy", rng.normal(size=(n_docs, 8)).astype(np.float32))
    np.save(tmp_path / "q.npy", rng.normal(size=(n_queries, 8)).astype(np.float32))
    (tmp_path / "d.ids").write_text("".join(f"d{i}\n" for i in range(n_docs)))
    (tmp_path / "q.ids").write_text("".join(f"q{i}\n" for i in range(n_queries)))
    (tmp_path / "corpus.tsv").write_text("".join(f"d{i}\tdocument {i}\n" for i in range(n_docs)))
    (tmp_path / "queries.tsv").write_text("".join(f"q{i}\tquery {i}\n" for i in range(n_queries)))
    (tmp_path / "qrels.txt").write_text("".join(f"q{i} 0 d{i} 1\n" for i in range(n_queries)))
    return ["--query_embeddings", str(tmp_path / "q.npy"), "--query_ids", str(tmp_path / "q.ids"),
            "--corpus_embeddings", str(tmp_path / "d.npy"), "--corpus_ids", str(tmp_path / "d.ids"),
            "--corpus", str(tmp_path / "corpus.tsv"), "--queries", str(tmp_path / "queries.tsv"),
            "--qrels", str(tmp_path / "qrels.txt"), "--output_dir", str(tmp_path / "out"), "--k", "10"]


def test_precomputed_evaluate_imports_no_tensorflow_and_no_jax(tmp_path):
    argv = _inputs(tmp_path) + ["--gin.ScannConfig.brute_force_below=100", "--gin.ScannConfig.recall_target=None"]
    code = ("import json, sys; from polyret.jobs import evaluate; rc = evaluate.main(sys.argv[1:]); "
            "print(json.dumps([rc] + sorted(m for m in ('tensorflow', 'jax', 'flax', 'seqio') if m in sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [0]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["scann"]["brute_force"] is False  # the tree + AH index was built and recall-checked
    assert 0 < metrics["scann"]["recall@10_vs_brute_force"] <= 1


def test_a_gin_binding_outside_the_named_modules_registers_them_all():
    pytest.importorskip("tensorflow")
    gin.clear_config()
    try:
        # EvalConfig lives in the trainer module, which the search-only registration leaves out.
        configuration.parse_gin([], ["EvalConfig.every = 7", "ScannConfig.num_leaves = 12"],
                                modules=("polyret.retrieval.scann_index",))
        assert gin.query_parameter("EvalConfig.every") == 7
        assert gin.query_parameter("ScannConfig.num_leaves") == 12
        with pytest.raises(configuration.GinConfigError, match="No configurable matching 'NoSuchThing'"):
            gin.clear_config()
            configuration.parse_gin([], ["NoSuchThing.x = 1"], modules=("polyret.retrieval.scann_index",))
    finally:
        gin.clear_config()


def test_corpus_read_for_ids_only_has_the_same_ids_and_checks(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "title": "t", "text": f"text {i}"}) + "\n"
                              for i in range(5)))
    (tmp_path / "q.tsv").write_text("q1\tquery\n")
    (tmp_path / "qrels.txt").write_text("q1 0 d3 1\n")
    full = load_files(corpus, tmp_path / "q.tsv", tmp_path / "qrels.txt")
    ids = load_files(corpus, tmp_path / "q.tsv", tmp_path / "qrels.txt", corpus_texts=False)
    assert isinstance(full.corpus, TitledCorpus) and isinstance(ids.corpus, CorpusIds)
    assert list(ids.corpus) == list(full.corpus) and "d3" in ids.corpus and len(ids.corpus) == 5
    with pytest.raises(KeyError, match="ids only"):
        ids.corpus["d3"]
    # The same line checks either way: a duplicate names both lines, a judged document must exist.
    corpus.write_text(corpus.read_text() + json.dumps({"_id": "d1", "text": "again"}) + "\n")
    for texts in (True, False):
        with pytest.raises(ValueError, match=rf"c.jsonl:6: duplicate id 'd1' \(first at {corpus}:2\)"):
            load_files(corpus, tmp_path / "q.tsv", tmp_path / "qrels.txt", corpus_texts=texts)
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": f"text {i}"}) + "\n" for i in range(3)))
    with pytest.raises(ValueError, match="'d3'"):
        load_files(corpus, tmp_path / "q.tsv", tmp_path / "qrels.txt", corpus_texts=False)


def test_precomputed_evaluate_keeps_the_texts_bm25_and_xor_need(tmp_path):
    from polyret.jobs import evaluate as evaluate_job

    argv = _inputs(tmp_path, n_docs=50, n_queries=5)
    q = np.load(tmp_path / "q.npy")
    q[:3] = np.load(tmp_path / "d.npy")[:3]  # queries 0-2 retrieve their document, 3-4 probably not
    np.save(tmp_path / "q.npy", q)
    # Document d{i} says "zq{i}x"; query q{i}'s gold answer is in d{i} only.
    (tmp_path / "corpus.tsv").write_text("".join(f"d{i}\tdocument number {i} zq{i}x\n" for i in range(50)))
    (tmp_path / "answers.jsonl").write_text("".join(json.dumps({"id": f"q{i}", "lang": "de", "answers": [f"zq{i}x"]})
                                                    + "\n" for i in range(5)))
    assert evaluate_job.main(argv + ["--bm25", "--answers", str(tmp_path / "answers.jsonl")]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())["metrics"]
    assert {"dense", "bm25", "dense XOR R@2kt", "bm25 XOR R@5kt"} <= set(metrics)
    # Every document is among a query's 10 retrieved ones at most 10 x 6 tokens = 60 tokens deep: within
    # 2000 tokens, a query is a hit exactly when d{i} was retrieved, which the TREC run tells independently.
    from polyret.io.runs import read_trec_run
    run = read_trec_run(tmp_path / "out" / "dense.trec")
    expected = np.mean([f"d{i}" in run[f"q{i}"] for i in range(5)])
    assert expected >= 0.6
    assert metrics["dense XOR R@2kt"]["de"]["R@2kt"] == pytest.approx(expected)
