"""Adding an index is one class and its registration: a Euclidean-distance index defined in this file (and
nowhere in polyret) is chosen by `polyret evaluate --gin.SearchConfig.index=...`; its run equals scipy's
brute-force nearest neighbours, its metrics equal ir_measures on that run, and its saved folder reopens
through `load_index`."""

import json
from pathlib import Path

import gin
import ir_measures
import numpy as np
import pytest
from scipy.spatial.distance import cdist

from polyret.io.runs import read_trec_run
from polyret.jobs import evaluate as evaluate_job
from polyret.retrieval.search_index import Index, SearchResult, load_index, register_index


@register_index("test_euclidean")
class EuclideanIndex(Index):
    """Nearest documents by Euclidean distance (score: minus the distance), brute force in numpy."""

    def __init__(self, ids, vectors):
        self.ids, self.vectors = list(ids), np.asarray(vectors, np.float32)

    @classmethod
    def build(cls, ids, vectors, k, folder=None, queries=None):
        return cls(ids, vectors)

    def search(self, queries, k):
        queries = np.asarray(queries, np.float32)
        squared = ((queries ** 2).sum(1)[:, None] - 2 * queries @ self.vectors.T + (self.vectors ** 2).sum(1)[None])
        distances = np.sqrt(np.maximum(squared, 0))
        rows = np.argsort(distances, axis=1, kind="stable")[:, :k]
        return SearchResult(rows, -np.take_along_axis(distances, rows, 1))

    @property
    def exact(self):
        return True

    def info(self):
        return {"distance": "euclidean"}

    def write(self, folder):
        np.save(folder / "vectors.npy", self.vectors)
        (folder / "ids.txt").write_text("\n".join(self.ids) + "\n")
        return {}

    @classmethod
    def read(cls, folder, settings):
        return cls((folder / "ids.txt").read_text().splitlines(), np.load(folder / "vectors.npy"))


@pytest.fixture()
def inputs(tmp_path: Path):
    rng = np.random.default_rng(0)
    # Norms that vary a lot: the Euclidean neighbours differ from the inner-product ones ScaNN would return.
    docs = (rng.normal(size=(300, 8)) * rng.uniform(0.2, 3.0, size=(300, 1))).astype(np.float32)
    queries = rng.normal(size=(25, 8)).astype(np.float32)
    np.save(tmp_path / "d.npy", docs)
    np.save(tmp_path / "q.npy", queries)
    doc_ids, query_ids = [f"d{i}" for i in range(300)], [f"q{i}" for i in range(25)]
    (tmp_path / "d.ids").write_text("\n".join(doc_ids) + "\n")
    (tmp_path / "q.ids").write_text("\n".join(query_ids) + "\n")
    (tmp_path / "corpus.tsv").write_text("".join(f"{d}\tdocument {d}\n" for d in doc_ids))
    (tmp_path / "queries.tsv").write_text("".join(f"{q}\tquery {q}\n" for q in query_ids))
    # Graded judgements: a few near and a few random documents per query.
    near = np.argsort(cdist(queries, docs), axis=1)[:, :30]
    qrels = {q: {doc_ids[int(d)]: int(rng.integers(1, 3)) for d in rng.choice(near[i], 4, replace=False)}
             for i, q in enumerate(query_ids)}
    for q in query_ids:
        qrels[q].update({doc_ids[int(d)]: 0 for d in rng.choice(300, 3) if doc_ids[int(d)] not in qrels[q]})
    (tmp_path / "qrels.txt").write_text("".join(f"{q} 0 {d} {r}\n" for q, docs_ in qrels.items()
                                                for d, r in docs_.items()))
    argv = ["--query_embeddings", str(tmp_path / "q.npy"), "--query_ids", str(tmp_path / "q.ids"),
            "--corpus_embeddings", str(tmp_path / "d.npy"), "--corpus_ids", str(tmp_path / "d.ids"),
            "--corpus", str(tmp_path / "corpus.tsv"), "--queries", str(tmp_path / "queries.tsv"),
            "--qrels", str(tmp_path / "qrels.txt"), "--k", "10", "--metrics", "nDCG@10,RR@10,R@10"]
    return argv, docs, queries, doc_ids, query_ids, qrels


def test_an_index_registered_in_a_test_is_chosen_by_gin_and_is_correct(inputs, tmp_path):
    argv, docs, queries, doc_ids, query_ids, qrels = inputs
    out = tmp_path / "out"
    try:
        assert evaluate_job.main(argv + ["--output_dir", str(out), "--save_index",
                                         "--gin.SearchConfig.index='test_euclidean'"]) == 0
    finally:
        gin.clear_config()
    result = json.loads((out / "metrics.json").read_text())
    assert result["index"] == "test_euclidean" and result["test_euclidean"]["distance"] == "euclidean"

    # Reference: scipy's Euclidean distances, brute force.
    distances = cdist(queries.astype(np.float64), docs.astype(np.float64))
    top = np.argsort(distances, axis=1, kind="stable")[:, :10]
    inner_top = np.argsort(-(queries @ docs.T), axis=1, kind="stable")[:, :10]
    assert any(set(a) != set(b) for a, b in zip(top, inner_top))  # the choice of index shows in the run
    run = read_trec_run(out / "dense.trec")
    for i, qid in enumerate(query_ids):
        assert list(run[qid]) == [doc_ids[j] for j in top[i]]
        np.testing.assert_allclose(list(run[qid].values()), -distances[i, top[i]], rtol=1e-4)

    reference_run = {q: {doc_ids[j]: float(-distances[i, j]) for j in top[i]} for i, q in enumerate(query_ids)}
    measures = [ir_measures.nDCG @ 10, ir_measures.RR @ 10, ir_measures.R @ 10]
    expected = ir_measures.calc_aggregate(measures, qrels, reference_run)
    ours = result["metrics"]["dense"]["all"]
    for measure in measures:
        assert ours[str(measure)] == pytest.approx(expected[measure], abs=1e-6), measure

    again = load_index(out / "index")
    assert isinstance(again, EuclideanIndex) and again.ids == doc_ids
    np.testing.assert_array_equal(again.search(queries, 10).rows, top)


def test_an_index_for_other_vectors_or_an_unknown_name_is_one_line(inputs, tmp_path, capsys):
    argv, *_ = inputs
    for name, text in (("maxsim", "indexes token vectors"), ("no_such_index", "unknown index 'no_such_index'")):
        try:
            assert evaluate_job.main(argv + ["--output_dir", str(tmp_path / name),
                                             f"--gin.SearchConfig.index='{name}'"]) == 2
        finally:
            gin.clear_config()
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and text in err, err
