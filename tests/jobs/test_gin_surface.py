"""One config surface: every job takes --gin_file / --gin.NAME=VALUE (here: the evaluate job's ScaNN index)."""

import json

import numpy as np

from polyret.jobs import evaluate as evaluate_job


def test_evaluate_gin_binding_changes_the_scann_index(tmp_path):
    rng = np.random.default_rng(0)
    docs = rng.normal(size=(400, 16)).astype(np.float32)
    queries = docs[:20] + 0.01 * rng.normal(size=(20, 16)).astype(np.float32)
    np.save(tmp_path / "d.npy", docs)
    np.save(tmp_path / "q.npy", queries)
    (tmp_path / "d.ids").write_text("".join(f"d{i}\n" for i in range(400)))
    (tmp_path / "q.ids").write_text("".join(f"q{i}\n" for i in range(20)))
    (tmp_path / "corpus.tsv").write_text("".join(f"d{i}\tdoc {i}\n" for i in range(400)))
    (tmp_path / "queries.tsv").write_text("".join(f"q{i}\tquery {i}\n" for i in range(20)))
    (tmp_path / "qrels.txt").write_text("".join(f"q{i} 0 d{i} 1\n" for i in range(20)))
    leaves = {}
    for num_leaves in (8, 16):
        out = tmp_path / f"eval{num_leaves}"
        rc = evaluate_job.main([
            "--query_embeddings", str(tmp_path / "q.npy"), "--query_ids", str(tmp_path / "q.ids"),
            "--corpus_embeddings", str(tmp_path / "d.npy"), "--corpus_ids", str(tmp_path / "d.ids"),
            "--corpus", str(tmp_path / "corpus.tsv"), "--queries", str(tmp_path / "queries.tsv"),
            "--qrels", str(tmp_path / "qrels.txt"), "--output_dir", str(out),
            "--gin.ScannConfig.brute_force_below=10", f"--gin.ScannConfig.num_leaves={num_leaves}",
            "--k", "10", "--gin.ScannConfig.recall_target=None"])
        assert rc == 0
        leaves[num_leaves] = json.loads((out / "metrics.json").read_text())["scann"]["num_leaves"]
    assert leaves == {8: 8, 16: 16}
