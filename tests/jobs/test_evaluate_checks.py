"""evaluate cross-checks its inputs before any search: precomputed vectors must cover exactly the corpus
and the queries, and be finite; a TREC run never receives `nan`; bad flags are one line, exit 2."""

import numpy as np
import pytest

from polyret.io.formats import read_id_text
from polyret.jobs import evaluate as job
from polyret.jobs import mine_negatives as mine_job
from polyret.retrieval import pipeline as P


@pytest.fixture()
def inputs(tiny_data, tmp_path):
    corpus_path = tiny_data["corpus"] / "de.jsonl"
    queries_path = tiny_data["queries"] / "test" / "de.jsonl"
    qrels_path = tiny_data["qrels"] / "test" / "de.mono.txt"
    rng = np.random.default_rng(0)
    files = {}
    for name, path in (("corpus", corpus_path), ("query", queries_path)):
        ids = list(read_id_text(path))
        np.save(tmp_path / f"{name}.npy", rng.normal(size=(len(ids), 8)).astype(np.float32))
        (tmp_path / f"{name}.ids").write_text("\n".join(ids) + "\n")
        files[name] = ids
    args = ["--corpus", str(corpus_path), "--queries", str(queries_path), "--qrels", str(qrels_path),
            "--corpus_embeddings", str(tmp_path / "corpus.npy"), "--corpus_ids", str(tmp_path / "corpus.ids"),
            "--query_embeddings", str(tmp_path / "query.npy"), "--query_ids", str(tmp_path / "query.ids"),
            "--output_dir", str(tmp_path / "out"), "--k", "10"]
    return args, files, tmp_path


def _err(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0]


def test_complete_inputs_evaluate(inputs, capsys):
    args, _, tmp_path = inputs
    assert job.main(args) == 0
    assert (tmp_path / "out" / "dense.trec").exists()


def test_ids_that_do_not_cover_the_corpus_are_refused(inputs, capsys):
    args, files, tmp_path = inputs
    vectors = np.load(tmp_path / "corpus.npy")
    np.save(tmp_path / "corpus.npy", vectors[:20])  # the embeddings of a third of the corpus
    (tmp_path / "corpus.ids").write_text("\n".join(files["corpus"][:20]) + "\n")
    assert job.main(args) == 2
    err = _err(capsys)
    assert f"{tmp_path / 'corpus.ids'}: 40 of the 60 documents in" in err and "have no vector" in err
    assert not (tmp_path / "out").exists()


def test_ids_of_other_queries_are_refused(inputs, capsys):
    args, files, tmp_path = inputs
    (tmp_path / "query.ids").write_text("\n".join(f"en-{q}" for q in files["query"]) + "\n")
    assert job.main(args) == 2
    assert "have no vector" in _err(capsys) and not (tmp_path / "out").exists()


def test_unjudged_queries_need_no_vector_but_judged_ones_do(inputs, capsys, tmp_path):
    args, files, out = inputs
    qrels = args[args.index("--qrels") + 1]
    judged = sorted({line.split()[0] for line in open(qrels) if line.strip()})
    some = judged[:3]
    (tmp_path / "qrels_some.txt").write_text("".join(l for l in open(qrels) if l.split() and l.split()[0] in some))
    vectors = np.load(out / "query.npy")
    keep = [i for i, q in enumerate(files["query"]) if q in some]
    np.save(out / "query.npy", vectors[keep])  # vectors of the judged queries only (a test split)
    (out / "query.ids").write_text("".join(files["query"][i] + "\n" for i in keep))
    with_some = list(args)
    with_some[args.index("--qrels") + 1] = str(tmp_path / "qrels_some.txt")
    assert job.main(with_some) == 0
    assert {line.split()[0] for line in open(out / "out" / "dense.trec")} == set(some)
    all_judged = list(args)
    all_judged[args.index("--output_dir") + 1] = str(tmp_path / "out_all")
    assert job.main(all_judged) == 2  # every query judged: the missing vectors are refused
    assert f"{len(judged) - len(some)} of the {len(judged)} queries in" in _err(capsys)


@pytest.mark.parametrize("which,value", [("corpus", np.nan), ("query", np.inf)])
def test_non_finite_vectors_are_refused_with_file_and_line(inputs, capsys, which, value):
    args, files, tmp_path = inputs
    vectors = np.load(tmp_path / f"{which}.npy")
    vectors[7, 3] = value
    np.save(tmp_path / f"{which}.npy", vectors)
    assert job.main(args) == 2
    assert f"{tmp_path / (which + '.ids')}:8: the vector of id {files[which][7]!r} is not finite" in _err(capsys)
    assert not (tmp_path / "out").exists()


def test_a_run_with_nan_scores_is_never_written(tmp_path):
    with pytest.raises(ValueError, match="score of document 'd2' for query 'q1' is not finite"):
        P.write_outputs(tmp_path / "out", {"dense": {"q1": {"d1": 1.0, "d2": float("nan")}}}, {})
    assert not (tmp_path / "out").exists()


def test_bad_flags_are_one_line_before_work(inputs, capsys):
    args, _, tmp_path = inputs
    with pytest.raises(SystemExit) as exit_info:
        job.main(args + ["--k", "0"])
    assert exit_info.value.code == 2
    assert _err(capsys) == "polyret evaluate: argument --k: must be at least 1, got 0 (see --help)"
    base = ["--bm25", "--corpus", args[1], "--queries", args[3], "--qrels", args[5], "--output",
            str(tmp_path / "neg.jsonl")]
    for flag, value, message in (("--num_negatives", "-1", "argument --num_negatives: must be at least 1, got -1"),
                                 ("--rank_end", "500", "--rank_end (500) is beyond --depth (100)")):
        with pytest.raises(SystemExit) as exit_info:
            mine_job.main(base + [flag, value])
        assert exit_info.value.code == 2 and message in _err(capsys)
    assert not (tmp_path / "out").exists() and not (tmp_path / "neg.jsonl").exists()
