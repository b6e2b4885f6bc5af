"""`polyret evaluate`: the retrieval depth follows the metrics (R@1000 and AP get 1000 documents per query
by default, stated in the output), MAP does not move when the depth grows past the judged documents,
and --dataset reads a benchmark folder."""

import json

import numpy as np
import pytest

from polyret.jobs import evaluate as evaluate_job
from polyret.retrieval.metrics import default_depth


def _write_case(tmp_path, num_docs=1200, num_queries=6, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    docs = rng.normal(size=(num_docs, dim)).astype(np.float32)
    queries = rng.normal(size=(num_queries, dim)).astype(np.float32)
    doc_ids = [f"d{i}" for i in range(num_docs)]
    query_ids = [f"q{i}" for i in range(num_queries)]
    np.save(tmp_path / "d.npy", docs)
    np.save(tmp_path / "q.npy", queries)
    (tmp_path / "d.ids").write_text("\n".join(doc_ids) + "\n")
    (tmp_path / "q.ids").write_text("\n".join(query_ids) + "\n")
    (tmp_path / "corpus.tsv").write_text("".join(f"{d}\tpassage {d}\n" for d in doc_ids))
    (tmp_path / "queries.tsv").write_text("".join(f"{q}\tquery {q}\n" for q in query_ids))
    # Judged documents: some ranked beyond 100 and beyond 1000 for each query (brute-force order).
    order = np.argsort(-(queries @ docs.T), axis=1)
    lines = [f"{q} 0 {doc_ids[order[i, r]]} 1\n" for i, q in enumerate(query_ids) for r in (3, 250, 1100)
             if r < num_docs]
    (tmp_path / "qrels.txt").write_text("".join(lines))
    return ["--query_embeddings", str(tmp_path / "q.npy"), "--query_ids", str(tmp_path / "q.ids"),
            "--corpus_embeddings", str(tmp_path / "d.npy"), "--corpus_ids", str(tmp_path / "d.ids"),
            "--corpus", str(tmp_path / "corpus.tsv"), "--queries", str(tmp_path / "queries.tsv"),
            "--qrels", str(tmp_path / "qrels.txt")]


def _run_lengths(path):
    counts = {}
    for line in path.read_text().splitlines():
        counts[line.split()[0]] = counts.get(line.split()[0], 0) + 1
    return counts


def test_default_depth_rule():
    assert default_depth(["nDCG@10", "RR@10"]) == (100, "minimum 100")
    assert default_depth(["nDCG@10", "R@1000"])[0] == 1000
    assert default_depth(["MAP"]) == (1000, "AP needs 1000")
    assert default_depth(["R@100", "nDCG@20"]) == (100, "R@100 needs 100")


def test_recall_at_1000_gets_1000_documents_by_default(tmp_path, capsys):
    args = _write_case(tmp_path)
    assert evaluate_job.main(args + ["--metrics", "R@1000,AP,nDCG@10", "--output_dir", str(tmp_path / "o")]) == 0
    assert "retrieving k=1000 documents per query (R@1000, AP need 1000" in capsys.readouterr().out
    assert set(_run_lengths(tmp_path / "o" / "dense.trec").values()) == {1000}
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["k"] == 1000
    # Each query has 3 relevant documents at ranks 4, 251 and 1101: R@1000 is exactly 2/3.
    assert metrics["metrics"]["dense"]["all"]["R@1000"] == pytest.approx(2 / 3)
    assert evaluate_job.main(args + ["--metrics", "nDCG@10", "--output_dir", str(tmp_path / "o2")]) == 0
    assert set(_run_lengths(tmp_path / "o2" / "dense.trec").values()) == {100}


def test_map_unchanged_when_depth_grows_past_judged_documents(tmp_path):
    args = _write_case(tmp_path, num_docs=1200)
    ap = {}
    for k in (1150, 1200):  # both past the deepest judged document (rank 1101)
        out = tmp_path / f"k{k}"
        assert evaluate_job.main(args + ["--metrics", "AP", "--k", str(k), "--output_dir", str(out)]) == 0
        ap[k] = json.loads((out / "metrics.json").read_text())["metrics"]["dense"]["all"]["AP"]
    assert ap[1150] == ap[1200]
    # and independently: AP by hand over the three judged ranks (4, 251, 1101)
    assert ap[1200] == pytest.approx((1 / 4 + 2 / 251 + 3 / 1101) / 3)
    out = tmp_path / "k100"
    evaluate_job.main(args + ["--metrics", "AP", "--k", "100", "--output_dir", str(out)])
    assert json.loads((out / "metrics.json").read_text())["metrics"]["dense"]["all"]["AP"] < ap[1200]


def test_evaluate_dataset_folder(tmp_path, capsys):
    """--dataset on a BEIR folder with precomputed vectors; languages and qrels come from the folder."""
    args = _write_case(tmp_path, num_docs=150)
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    doc_ids = (tmp_path / "d.ids").read_text().split()
    (beir / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "title": "", "text": f"passage {d}"}) + "\n"
                                               for d in doc_ids))
    (beir / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": f"query {i}"}) + "\n"
                                                for i in range(6)))
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        line.split()[0] + "\t" + line.split()[2] + "\t1\n" for line in (tmp_path / "qrels.txt").read_text().splitlines()))
    emb = args[:8]
    assert evaluate_job.main(emb + ["--dataset", str(beir), "--metrics", "nDCG@10,R@100",
                                    "--output_dir", str(tmp_path / "o")]) == 0
    table = json.loads((tmp_path / "o" / "metrics.json").read_text())["metrics"]["dense"]["all"]
    same = tmp_path / "same"
    assert evaluate_job.main(emb + ["--corpus", str(beir / "corpus.jsonl"), "--queries", str(beir / "queries.jsonl"),
                                    "--qrels", str(beir / "qrels" / "test.tsv"), "--metrics", "nDCG@10,R@100",
                                    "--output_dir", str(same)]) == 0
    assert json.loads((same / "metrics.json").read_text())["metrics"]["dense"]["all"] == table
    assert evaluate_job.main(emb + ["--dataset", str(tmp_path / "nowhere"), "--output_dir", str(tmp_path / "x")]) == 2
    assert "not an ir_datasets id" in capsys.readouterr().err
