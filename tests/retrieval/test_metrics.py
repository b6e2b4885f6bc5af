"""Metrics against pytrec_eval called directly, and XOR Recall@kt against a hand-worked example and a
direct transcription of the official rule."""

import numpy as np
import pytest
import pytrec_eval

from polyret.retrieval.metrics import evaluate, per_query, xor_recall_at_k_tokens


def _random_case(seed):
    rng = np.random.default_rng(seed)
    docs = [f"d{i:03d}" for i in range(60)]
    qrels, run = {}, {}
    for q in range(25):
        qid = f"q{q}"
        rel = rng.choice(docs, rng.integers(1, 6), replace=False)
        qrels[qid] = {d: int(rng.integers(0, 4)) for d in rel}  # graded, some 0s
        if q % 5 == 4:
            continue  # missing from the run
        ret = rng.choice(docs, 40, replace=False)
        scores = rng.integers(0, 8, size=40).astype(float)  # many ties
        run[qid] = {d: float(s) for d, s in zip(ret, scores)}
    return qrels, run


def _trec_order(docs):
    """trec_eval's order: score descending, then document id descending."""
    return [d for d, _ in sorted(docs.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_agree_with_pytrec_eval(seed):
    qrels, run = _random_case(seed)
    ours = per_query(qrels, run, ["nDCG@10", "nDCG@20", "R@100", "AP", "RR@10"])
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10,20", "recall.100", "map"})
    ref = evaluator.evaluate(run)
    for qid in qrels:
        if not any(r > 0 for r in qrels[qid].values()) and qid not in ref:
            continue
        expected = ref.get(qid, {"ndcg_cut_10": 0.0, "ndcg_cut_20": 0.0, "recall_100": 0.0, "map": 0.0})
        assert ours["nDCG@10"][qid] == pytest.approx(expected["ndcg_cut_10"], abs=1e-9)
        assert ours["nDCG@20"][qid] == pytest.approx(expected["ndcg_cut_20"], abs=1e-9)
        assert ours["R@100"][qid] == pytest.approx(expected["recall_100"], abs=1e-9)
        assert ours["AP"][qid] == pytest.approx(expected["map"], abs=1e-9)
        ranked = _trec_order(run.get(qid, {}))[:10]
        rr = next((1 / (i + 1) for i, d in enumerate(ranked) if qrels[qid].get(d, 0) > 0), 0.0)
        assert ours["RR@10"][qid] == pytest.approx(rr, abs=1e-9)
    missing = [q for q in qrels if q not in run]
    assert missing and all(ours["nDCG@10"][q] == 0.0 for q in missing)


def test_per_language_and_macro():
    qrels = {"a": {"d1": 1}, "b": {"d2": 1}, "c": {"d3": 1}}
    run = {"a": {"d1": 2.0, "x": 1.0}, "b": {"x": 2.0, "d2": 1.0}, "c": {"x": 1.0}}
    table = evaluate(qrels, run, ["RR@10"], {"a": "de", "b": "de", "c": "ja"})
    assert table["de"]["RR@10"] == pytest.approx(0.75)
    assert table["ja"]["RR@10"] == 0.0
    assert table["all"]["RR@10"] == pytest.approx(0.5)
    assert table["macro"]["RR@10"] == pytest.approx(0.375)


def test_xor_recall_hand_worked():
    # q1 (ja): answer in the 2nd passage, within 6 tokens -> hit at k=6, miss at k=3.
    # q2 (ja): yes/no only -> not counted. q3 (te): answer never retrieved -> miss.
    ranked = {"q1": ["a b c", "Tokyo is big"], "q2": ["yes it is"], "q3": ["nothing here"]}
    answers = {"q1": ["Tokyo"], "q2": ["yes"], "q3": ["Paris", "no"]}
    langs = {"q1": "ja", "q2": "ja", "q3": "te"}
    assert xor_recall_at_k_tokens(ranked, answers, langs, 6) == {"ja": 1.0, "te": 0.0, "macro": 0.5}
    assert xor_recall_at_k_tokens(ranked, answers, langs, 3) == {"ja": 0.0, "te": 0.0, "macro": 0.0}


def _official(results, gt_answers, max_token_num):
    """Transcription of the XOR-Retrieve evaluation rule, written out independently here."""
    from nltk.tokenize import word_tokenize
    per_lang = {}
    for item in results:
        per_lang.setdefault(item["lang"], {"count": 0, "hit": 0})
        if item["id"] not in gt_answers:
            continue
        span_answers = [a for a in gt_answers[item["id"]] if a not in ["yes", "no"]]
        if not span_answers:
            continue
        per_lang[item["lang"]]["count"] += 1
        tokens = []
        for ctx in item["ctxs"]:
            tokens += word_tokenize(ctx, preserve_line=True)
            if len(tokens) >= max_token_num:
                break
        concat = " ".join(tokens[:max_token_num])
        if any(a in concat for a in span_answers):
            per_lang[item["lang"]]["hit"] += 1
    scores = {l: v["hit"] / v["count"] for l, v in per_lang.items() if v["count"]}
    return scores, float(np.mean(list(scores.values())))


def test_xor_recall_matches_transcription():
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(50)] + ["Kyoto", "New York", "1905", "yes", "no"]
    results, answers, ranked, langs = [], {}, {}, {}
    for q in range(60):
        ctxs = [" ".join(rng.choice(vocab, rng.integers(5, 40))) + "." for _ in range(30)]
        lang = ["ar", "bn", "fi", "ja"][q % 4]
        results.append({"id": f"q{q}", "lang": lang, "ctxs": ctxs})
        answers[f"q{q}"] = list(rng.choice(["Kyoto", "New York", "1905", "yes", "no", "w3 w4"], rng.integers(1, 3)))
        ranked[f"q{q}"], langs[f"q{q}"] = ctxs, lang
    for k in (20, 100, 300):
        scores, macro = _official(results, answers, k)
        ours = xor_recall_at_k_tokens(ranked, answers, langs, k)
        assert ours.pop("macro") == pytest.approx(macro)
        assert ours == pytest.approx(scores)
