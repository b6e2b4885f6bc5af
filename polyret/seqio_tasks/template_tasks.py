"""The embedded default data as registered SeqIO tasks (demo, tiny runs and tests).

`template_data_setup(data_dir)` writes the template dataset and trains a SentencePiece model on it when
they are missing, then registers:
  template_pairs             SWIM-IR-style pairs, monolingual + cross-lingual, every language
  template_hard_negatives    pairs with 3 hard negatives (same person, other attribute; other person)
  template_mtd_<strategy>    translated distillation: English queries, passages in every language, scores
                             from `teacher_score` plus noise, over the person's 3 facts and 9 other documents
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import gin
import numpy as np
import seqio

from polyret.seqio_tasks import tasks
from polyret.seqio_tasks.examples import MIXING_STRATEGIES
from polyret.seqio_tasks.templates import LANGUAGES, write_template_dataset
from polyret.seqio_tasks.vocab import train_sentencepiece


def teacher_score(query_id: str, passage_id: str) -> float:
    """The template teacher: 10 for the answer, 5 for the person's other facts, 2 for the same fact about
    someone else, 0 otherwise (query ids `q-<person>-<attribute>-<lang>`, passage ids `<person>-<attribute>`)."""
    person, attribute = query_id.split("-")[1:3]
    other_person, other_attribute = passage_id.split("-")[:2]
    if other_person == person:
        return 10.0 if other_attribute == attribute else 5.0
    return 2.0 if other_attribute == attribute else 0.0


def _write_mtd_files(root: Path, languages: tuple[str, ...], seed: int) -> dict:
    mtd = root / "mtd"
    if (mtd / "scores.jsonl.gz").exists():
        return {"score_file": mtd / "scores.jsonl.gz", "queries": mtd / "queries.tsv",
                "collections": {l: mtd / f"{l}.tsv" for l in languages}}
    mtd.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    corpora = {l: [json.loads(x) for x in (root / "corpus" / f"{l}.jsonl").read_text(encoding="utf-8").splitlines()]
               for l in languages}
    for l in languages:  # row-aligned translations: the same passage id in every language
        (mtd / f"{l}.tsv").write_text("".join(f"{d['_id'][:-len(l) - 1]}\t{d['text']}\n" for d in corpora[l]),
                                      encoding="utf-8")
    pids = [d["_id"][:-len(languages[0]) - 1] for d in corpora[languages[0]]]
    queries = [json.loads(x) for x in (root / "queries" / "train" / "en.jsonl").read_text().splitlines()]
    (mtd / "queries.tsv").write_text("".join(f"{q['_id']}\t{q['text']}\n" for q in queries), encoding="utf-8")
    with gzip.open(mtd / "scores.jsonl.gz", "wt") as f:
        for q in queries:
            person, attribute = q["_id"].split("-")[1:3]
            same = [p for p in pids if p.startswith(person + "-")]
            others = list(rng.choice([p for p in pids if p not in same], 9, replace=False))
            scored = [[p, teacher_score(q["_id"], p) + float(rng.normal(0, 0.3))] for p in same + others]
            f.write(json.dumps([q["_id"]] + scored) + "\n")
    return _write_mtd_files(root, languages, seed)


@gin.configurable
def template_data_setup(data_dir: str | os.PathLike = gin.REQUIRED, num_entities: int = 200,
                        languages: tuple[str, ...] = LANGUAGES, vocab_size: int = 500, num_passages: int = 6,
                        seed: int = 0) -> Path:
    """Write (if missing) and register the template tasks; returns the SentencePiece model path."""
    root = Path(data_dir)
    if not (root / "text.txt").exists():
        write_template_dataset(root, num_entities=num_entities, languages=tuple(languages), seed=seed)
    spm = root / "spm.model"
    if not spm.exists():
        train_sentencepiece([root / "text.txt"], root / "spm", vocab_size=vocab_size)
    vocab = seqio.SentencePieceVocabulary(str(spm))
    files = {(section, lang): root / "train" / f"swim_ir_{section}_{lang}.jsonl"
             for section in ("monolingual", "cross_lingual") for lang in languages}
    tasks.register_swim_ir_tasks(files, vocab, prefix="template_pairs")
    negative_tasks = [tasks.register_hard_negative_task(f"template_hard_negatives_{lang}",
                                                        root / "train" / f"hard_negatives_{lang}.jsonl", vocab, 3, seed)
                      for lang in languages]
    tasks.add_mixture("template_hard_negatives", [(t, 1.0) for t in negative_tasks])
    mtd = _write_mtd_files(root, tuple(languages), seed)
    for strategy in MIXING_STRATEGIES:
        tasks.register_distillation_task(f"template_mtd_{strategy}", mtd["score_file"], mtd["queries"],
                                         mtd["collections"], vocab,
                                         num_passages=num_passages,
                                         top_n=12, strategy=strategy, seed=seed)
    return spm


@gin.configurable
def template_span_setup(data_dir: str | os.PathLike = gin.REQUIRED, name: str = "template_spans",
                        min_span_length: int = 3) -> Path:
    """Span pairs (the mC4 pre-training preprocessor) over the template corpus, as task `name`."""
    spm = template_data_setup(data_dir)
    root = Path(data_dir)
    tasks.register_text_span_task(name, sorted((root / "corpus").glob("*.jsonl")),
                                  seqio.SentencePieceVocabulary(str(spm)), min_span_length=min_span_length)
    return spm
