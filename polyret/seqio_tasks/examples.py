"""Python readers that turn users' files into examples (dicts of strings / numbers) for SeqIO sources.

Each reader validates as it goes (errors name file, line and field) and is deterministic given a seed:
any per-example randomness comes from a generator seeded with (seed, line number) (and the epoch where
examples are redrawn every pass), so the same example is the same whatever the sharding or the order of
reading.
"""

from __future__ import annotations

import contextlib
import os
import zlib
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from polyret.io.formats import (DataError, SkipCounter, iter_jsonl, iter_objects, iter_teacher_scores, open_text,
                                read_id_text, read_qrels)
from polyret.io.languages import check_language

MIXING_STRATEGIES = ("mix_passages", "mix_entries", "round_robin")


class BadRecords:
    """What the training readers do with a bad record, for the run in progress (`bad_record_policy`):
    raise (the default; `error` keeps the DataError so the trainer can report it after checkpointing,
    as it reaches the trainer wrapped by tf.data) or, with `skip`, count it in `skipped` and log the
    first few with their file:line. The readers run in tf.data's threads, hence a process-wide object."""

    def __init__(self):
        self.skip = False
        self.skipped = SkipCounter()
        self.error: DataError | None = None


BAD_RECORDS = BadRecords()


@contextlib.contextmanager
def bad_record_policy(skip: bool, log_first: int = 10) -> Iterator[BadRecords]:
    """Within the block the training readers skip (and count) or raise on bad records; returns the
    policy, whose `skipped` counter the trainer reports in its summary."""
    BAD_RECORDS.skip, BAD_RECORDS.skipped, BAD_RECORDS.error = skip, SkipCounter(), None
    BAD_RECORDS.skipped.log_first = log_first
    try:
        yield BAD_RECORDS
    finally:
        BAD_RECORDS.skip = False


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


def join_title(title: str | None, text: str) -> str:
    return f"{title} {text}" if title else text


NO_GROUP = -1  # a padded negative's group: equal to no passage's


def group_id(group: str) -> int:
    """A passage group (passages that translate one another share it) as a non-negative int32 the loss
    compares: CRC-32, so the same group gets the same id in every process and run."""
    return zlib.crc32(group.encode("utf-8")) & 0x7FFFFFFF


def _row_group(obj: Mapping[str, Any], field: str, fallback: str, path, line_no: int) -> int:
    """The row's `field` (a string or an integer) as a group id; a row without one is its own group, by
    its passage's text (so only identical passages share it)."""
    value = obj.get(field)
    if value is None:
        return group_id(fallback)
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise DataError(path, line_no, f"field {field!r} has type {type(value).__name__} (a string or an integer)")
    return group_id(str(value))


# ------------------------------------------------------------------------------------------------ SWIM-IR

def swim_ir_examples(path: str | os.PathLike, skip_bad: bool = False,
                     skipped: SkipCounter | None = None, groups: bool = False) -> Iterator[dict[str, Any]]:
    """SWIM-IR JSONL or parquet (the Hub release; fields `_id, lang, code, query, title, text`) -> inputs
    (query), targets (title + text), language (`code`, aliases such as the datacard's `hn` mapped).
    `groups`: also passage_group, the id of the row's `group` field (`group_id`), which ContrastiveLoss keeps
    out of the other rows' negatives."""
    fields = {"_id": (str, int), "lang": str, "code": str, "query": str, "title": str, "text": str}
    skip_bad = skip_bad or BAD_RECORDS.skip
    skipped = BAD_RECORDS.skipped if skipped is None and BAD_RECORDS.skip else skipped
    for line_no, obj in iter_objects(path, fields, nonempty=("query", "text"), skip_bad=skip_bad, skipped=skipped):
        try:
            language = check_language(obj["code"], path, line_no, "code")
        except DataError as e:
            if not skip_bad:
                raise
            skipped is not None and skipped.note(e, "unknown language code")
            continue
        example = {"inputs": obj["query"], "targets": join_title(obj["title"], obj["text"]),
                   "query_id": str(obj["_id"]), "language": language}
        if "negatives" in obj:  # mined negatives carried in the same file
            example["negative_targets"] = [n if isinstance(n, str) else join_title(n.get("title"), n["text"])
                                           for n in obj["negatives"]]
        if groups:
            example["passage_group"] = _row_group(obj, "group", example["targets"], path, line_no)
        yield example


def beir_pair_examples(folder: str | os.PathLike, split: str = "train") -> Iterator[dict[str, Any]]:
    """A BEIR folder's judged pairs of `split` (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv): every query with
    every passage its qrels judge relevant, in query and passage id order -> inputs (query), targets (title +
    text). Judged ids missing from the corpus or queries are a DataError naming the qrels file."""
    from polyret.io.benchmarks import load_beir
    bench = load_beir(folder, split)
    for qid in sorted(bench.qrels):
        for doc, relevance in sorted(bench.qrels[qid].items()):
            if relevance > 0:
                yield {"inputs": bench.queries[qid], "targets": bench.corpus[doc]}


# ----------------------------------------------------------------------------------------- hard negatives

def _passage_text(item: Any, path, line_no: int, field: str) -> str:
    if isinstance(item, str):
        text = item
    elif isinstance(item, dict) and "text" in item:
        text = join_title(item.get("title"), str(item["text"]))
    else:
        raise DataError(path, line_no, f"field {field!r}: expected a string or {{'title', 'text'}} object")
    if not text.strip():
        raise DataError(path, line_no, f"field {field!r} has an empty passage")
    return text


def hard_negative_examples(path: str | os.PathLike, num_negatives: int, seed: int = 0, groups: bool = False
                           ) -> Iterator[dict[str, Any]]:
    """JSONL `{query, positive, negatives: [...]}` or Tevatron `{query, positive_passages, negative_passages}`.

    Emits exactly `num_negatives` negatives: sampled without replacement when more are given, padded
    with empty strings (which tokenise to all-padding rows the loss masks) when fewer. `groups`: also
    passage_group (the row's `group`) and negative_groups (its `negative_groups`, one per negative), as ids
    (`group_id`; NO_GROUP for padding), which ContrastiveLoss keeps out of the other rows' negatives.
    """
    skip = BAD_RECORDS.skip
    for line_no, obj in iter_jsonl(path, {"query": str}, nonempty=("query",), skip_bad=skip,
                                   skipped=BAD_RECORDS.skipped if skip else None):
        try:
            example = _hard_negative_example(path, line_no, obj, num_negatives, seed, groups)
        except DataError as e:
            if not skip:
                raise
            BAD_RECORDS.skipped.note(e)
            continue
        yield example


def scored_examples(path: str | os.PathLike, num_negatives: int) -> Iterator[dict[str, Any]]:
    """JSONL `{query, positive, negatives: [N texts], scores: [N + 1 teacher scores, the positive's first]}`
    (GPL's MarginMSE rows, as `polyret adapt --labels` writes them) -> distillation examples: `passages` is the
    positive then the negatives, `teacher_scores` their scores. Every row has exactly `num_negatives` negatives."""
    for line_no, obj in iter_jsonl(path, {"query": str, "positive": str, "negatives": list, "scores": list},
                                   nonempty=("query",)):
        negatives = [_passage_text(n, path, line_no, "negatives") for n in obj["negatives"]]
        if len(negatives) != num_negatives:
            raise DataError(path, line_no, f"field 'negatives' has {len(negatives)} passages, expected {num_negatives}")
        scores = obj["scores"]
        if len(scores) != num_negatives + 1 or not all(isinstance(x, (int, float)) for x in scores):
            raise DataError(path, line_no, f"field 'scores' must hold {num_negatives + 1} numbers (the positive's, "
                                           "then each negative's)")
        positive = _passage_text(obj["positive"], path, line_no, "positive")
        yield {"inputs": obj["query"], "passages": [positive] + negatives, "teacher_scores": np.asarray(scores, np.float32),
               "passage_languages": np.zeros(num_negatives + 1, np.int32)}


def _hard_negative_example(path, line_no: int, obj: dict, num_negatives: int, seed: int,
                           groups: bool = False) -> dict[str, Any]:
    """One record -> an example (raises DataError naming the line and field)."""
    if "positive_passages" in obj:
        if not obj["positive_passages"]:
            raise DataError(path, line_no, "field 'positive_passages' is empty")
        positive = _passage_text(obj["positive_passages"][0], path, line_no, "positive_passages")
        negatives = obj.get("negative_passages", [])
        neg_field = "negative_passages"
    elif "positive" in obj:
        positive = _passage_text(obj["positive"], path, line_no, "positive")
        negatives, neg_field = obj.get("negatives", []), "negatives"
    else:
        raise DataError(path, line_no, "field 'positive' (or 'positive_passages') is missing")
    negatives = [_passage_text(n, path, line_no, neg_field) for n in negatives]
    negative_groups = None
    if groups:
        given = obj.get("negative_groups")
        if given is not None and (not isinstance(given, list) or len(given) != len(negatives)):
            raise DataError(path, line_no, f"field 'negative_groups' must be a list of one group per negative "
                                           f"({len(negatives)})")
        negative_groups = [_row_group({"negative_groups": g}, "negative_groups", n, path, line_no)
                           for g, n in zip(given or [None] * len(negatives), negatives)]
    keep = range(len(negatives))
    if len(negatives) > num_negatives:
        keep = sorted(_rng(seed, line_no).choice(len(negatives), num_negatives, replace=False))
    pad = num_negatives - len(keep)
    example = {"inputs": obj["query"], "targets": positive,
               "negative_targets": [negatives[i] for i in keep] + [""] * pad}
    if groups:
        example["passage_group"] = _row_group(obj, "group", positive, path, line_no)
        example["negative_groups"] = np.array([negative_groups[i] for i in keep] + [NO_GROUP] * pad, np.int32)
    return example


# -------------------------------------------------------------------------------- translated distillation

class DistillationData:
    """Multilingual Translate-Distill data: the teacher score file joined with the queries and one
    row-aligned passage collection per language.

    Per query: the teacher's top `top_n` passages; each pass over the data (epoch) takes `num_passages`
    of them (`sampling`: "random" without replacement, or "top"), ordered by teacher score, and chooses
    their languages by `strategy`: mix_passages (a random language per passage), mix_entries (one random
    language for the set) or round_robin (the query repeated once per language, consecutively). The draw
    depends only on (seed, epoch, line of the score file), as PLAID-X redraws on every pass, so it is the
    same whatever the sharding, and a resumed run sees what an uninterrupted one saw. Teacher scores are
    on English pairs and apply to every translation of a passage.

    With `qrels` (a TREC or BEIR qrels file), the draw is Translate-Train's instead (MTT, MTD's baseline, as
    PLAID-X trains it on MS MARCO's judged triples): one of the query's judged-relevant passages first, then
    `num_passages - 1` drawn as above from the ranking's passages that are not judged relevant (the
    first-stage negatives), and `teacher_scores` hold the judgements: 1 for the positive, 0 for the rest.

    Memory: the collections are read through an offset index over a memory map
    (polyret.io.collection_index); the score file is held as arrays (row indices and float32 scores).
    """

    def __init__(self, score_file: str | os.PathLike, queries_file: str | os.PathLike,
                 collections: Mapping[str, str | os.PathLike], num_passages: int = 6, top_n: int = 50,
                 sampling: str = "random", strategy: str = "mix_passages", seed: int = 0,
                 qrels: str | os.PathLike | None = None):
        from polyret.io.collection_index import AlignedCollections

        if strategy not in MIXING_STRATEGIES:
            raise ValueError(f"strategy must be one of {MIXING_STRATEGIES}, got {strategy!r}")
        if sampling not in ("random", "top"):
            raise ValueError(f"sampling must be 'random' or 'top', got {sampling!r}")
        if not 0 < num_passages <= top_n:
            raise ValueError(f"need 0 < num_passages <= top_n, got {num_passages} and {top_n}")
        for lang in collections:
            check_language(lang, "collections", None, "language")
        self.num_passages, self.top_n, self.sampling, self.strategy, self.seed = (
            num_passages, top_n, sampling, strategy, seed)
        self.queries = read_id_text(queries_file, with_title=False)
        self.collections = AlignedCollections(collections)
        self.languages = self.collections.languages
        judged = None if qrels is None else {q: sorted(d for d, rel in docs.items() if rel > 0)
                                             for q, docs in read_qrels(qrels).items()}
        self.positives: list[np.ndarray] = []  # with qrels: each query's judged-relevant rows
        qids, lines, rows, scores = [], [], [], []
        for line_no, qid, pairs in iter_teacher_scores(score_file):
            if qid not in self.queries:
                raise DataError(score_file, line_no, f"query id {qid!r} is not in {queries_file}")
            ranked = sorted(pairs, key=lambda p: -p[1])
            needed = num_passages
            if judged is not None:
                self.positives.append(self._judged_rows(judged, qid, qrels, score_file, line_no))
                ranked = [p for p in ranked if p[0] not in judged[qid]]  # negatives: never a judged passage
                needed = num_passages - 1
            ranked = ranked[:top_n]
            if len(ranked) < needed:
                what = "unjudged scored passages" if judged is not None else "scored passages"
                raise DataError(score_file, line_no, f"query {qid!r} has {len(ranked)} {what}, "
                                                     f"fewer than {needed} (num_passages={num_passages})")
            row = np.full(top_n, -1, np.int32)
            for i, (pid, _) in enumerate(ranked):
                r = self.collections.row(pid)
                if r is None:
                    raise DataError(score_file, line_no, f"passage id {pid!r} is not in the collections")
                row[i] = r
            qids.append(qid)
            lines.append(line_no)
            rows.append(row)
            scores.append(np.array([sc for _, sc in ranked] + [np.nan] * (top_n - len(ranked)), np.float32))
        if not qids:
            raise DataError(score_file, None, "no records")
        self.qids, self.lines = qids, np.array(lines, np.int64)
        self.rows, self.scores = np.stack(rows), np.stack(scores)
        self.counts = (self.rows >= 0).sum(axis=1)

    def _judged_rows(self, judged: Mapping[str, Sequence[str]], qid: str, qrels: str | os.PathLike,
                     score_file: str | os.PathLike, line_no: int) -> np.ndarray:
        if not judged.get(qid):
            raise DataError(score_file, line_no, f"query {qid!r} has no judged-relevant passage in {qrels}")
        rows = [self.collections.row(pid) for pid in judged[qid]]
        missing = [pid for pid, r in zip(judged[qid], rows) if r is None]
        if missing:
            raise DataError(qrels, None, f"query {qid!r}: judged passage {missing[0]!r} is not in the collections")
        return np.array(rows, np.int32)

    @property
    def copies(self) -> int:
        """Examples per query line (round robin: one per language)."""
        return len(self.languages) if self.strategy == "round_robin" else 1

    def __len__(self) -> int:
        return len(self.qids) * self.copies

    def order(self, epoch: int, shuffle: bool, run_seed: int = 0) -> np.ndarray:
        """Positions of the query lines in this epoch's order (a permutation from (seed + run_seed, epoch))."""
        n = len(self.qids)
        return np.random.default_rng([self.seed + run_seed, epoch]).permutation(n) if shuffle else np.arange(n)

    def examples(self, epoch: int = 0, shard_index: int = 0, num_shards: int = 1, shuffle: bool = False,
                 run_seed: int = 0) -> Iterator[dict[str, Any]]:
        """One epoch's examples for host `shard_index` of `num_shards` (every num_shards-th query of the
        epoch's order; a query's round-robin copies stay together, consecutive). `run_seed` (the training
        run's data seed) is added to the task's seed, so each seed of a study draws its own passages."""
        for position in self.order(epoch, shuffle, run_seed)[shard_index::num_shards]:
            yield from self._query_examples(int(position), epoch, run_seed)

    def _query_examples(self, position: int, epoch: int, run_seed: int = 0) -> Iterator[dict[str, Any]]:
        rng = _rng(self.seed + run_seed, epoch, int(self.lines[position]))
        count, k = int(self.counts[position]), self.num_passages
        if self.positives:  # Translate-Train: a judged positive, then k - 1 first-stage negatives
            positive = int(rng.choice(self.positives[position]))
            k -= 1
        chosen = sorted(rng.choice(count, k, replace=False)) if self.sampling == "random" else range(k)
        rows = [int(self.rows[position, i]) for i in chosen]
        scores = self.scores[position, list(chosen)]
        if self.positives:
            rows, scores = [positive, *rows], np.array([1.0] + [0.0] * k, np.float32)
            k += 1
        languages = self.languages
        if self.strategy == "round_robin":
            language_sets = [[lang] * k for lang in languages]
        elif self.strategy == "mix_entries":
            language_sets = [[languages[rng.integers(len(languages))]] * k]
        else:
            language_sets = [[languages[i] for i in rng.integers(len(languages), size=k)]]
        qid = self.qids[position]
        passage_ids = [self.collections.id_of(r) for r in rows]
        for langs in language_sets:
            yield {"inputs": self.queries[qid], "query_id": qid,
                   "passages": [self.collections.text(lang, r) for r, lang in zip(rows, langs)],
                   "passage_ids": passage_ids,
                   "teacher_scores": scores.copy(),
                   "passage_languages": np.array([languages.index(lang) for lang in langs], np.int32)}



def text_documents(paths: Sequence[str | os.PathLike], text_field: str = "text") -> Iterator[dict[str, Any]]:
    """Local documents for span-pair pre-training: JSONL (`text` field) or plain text (one document a line)."""
    for path in paths:
        if ".jsonl" in str(path):
            for _, obj in iter_jsonl(path, {text_field: str}):
                if obj[text_field].strip():
                    yield {"text": obj[text_field]}
        else:
            with open_text(path) as f:
                for line in f:
                    if line.strip():
                        yield {"text": line.rstrip("\n")}
