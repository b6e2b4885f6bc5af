"""The cpu studies' Debian data keeps the Translate-Distill teacher and the base it was written with: asking the
same data folder for another teacher or another base stops in one line instead of mixing two. The merged
collection (MLIR) holds every language's copy under its own id, each judged for the query of its section."""

import json

import pytest

from polyret.experiments import study_debian


@pytest.mark.parametrize("written, wanted", [("minilm", "/ckpt/ce"), ("cross_encoder:/ckpt/ce", None),
                                             ("cross_encoder:/ckpt/ce", "/ckpt/other")])
def test_another_teacher_for_a_written_data_folder_is_refused(tmp_path, written, wanted):
    (tmp_path / "teacher.json").write_text(json.dumps({"teacher": written}))
    with pytest.raises(ValueError, match=r"Translate-Distill scores are .*another data folder"):
        study_debian._write_mtd(tmp_path, tmp_path / "set", ["en", "de"], wanted)


def test_another_base_for_a_written_data_folder_is_refused(tmp_path):
    (tmp_path / "base.json").write_text(json.dumps({"base": "all-MiniLM-L6-v2"}))
    with pytest.raises(ValueError, match=r"written with the base 'all-MiniLM-L6-v2', not 'multilingual-e5-small'"):
        study_debian._import_base(tmp_path, "multilingual-e5-small")
    assert not (tmp_path / "dual_encoder").exists()


def test_a_data_folder_from_before_the_base_record_is_refused(tmp_path):
    (tmp_path / "teacher.json").write_text(json.dumps({"teacher": "minilm"}))
    with pytest.raises(ValueError, match=r"earlier polyret from all-MiniLM-L6-v2 \(no base.json\)"):
        study_debian._import_base(tmp_path, "multilingual-e5-small")


def test_the_merged_collection_keeps_every_language_copy_and_its_judgements(tmp_path):
    from polyret.retrieval.pipeline import load_eval_inputs
    texts = {"de": {"_a": "Ein Abschnitt", "_b": "Noch einer"}, "ja": {"_a": "セクション"}}
    for lang, docs in texts.items():
        pair = tmp_path / "pairs" / f"en-{lang}"
        (pair / "qrels").mkdir(parents=True)
        (pair / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "title": "", "text": t}, ensure_ascii=False)
                                                   + "\n" for d, t in docs.items()), encoding="utf-8")
        (pair / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q_{d}", "text": f"heading {d}"}) + "\n"
                                                    for d in ("_a", "_b")))
        (pair / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
            f"q_{d}\t{d}\t1\n" for d in docs))
    study_debian._write_mlir(tmp_path, ["de", "ja"])
    corpus, queries, qrels = load_eval_inputs(*(str(tmp_path / "mlir" / f) for f in
                                                ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv")))
    assert dict(corpus) == {"de/_a": "Ein Abschnitt", "de/_b": "Noch einer", "ja/_a": "セクション"}
    assert queries == {"q__a": "heading _a", "q__b": "heading _b"}
    assert qrels == {"q__a": {"de/_a": 1, "ja/_a": 1}, "q__b": {"de/_b": 1}}


def test_a_teacher_worse_than_bm25_on_its_own_queries_is_refused():
    study_debian.check_teacher("/ckpt/ce", 0.896, 0.874)
    with pytest.raises(ValueError, match=r"/ckpt/ce: the cross-encoder scores nDCG@10 0.123 .* below BM25's 0.874"):
        study_debian.check_teacher("/ckpt/ce", 0.123, 0.874)
