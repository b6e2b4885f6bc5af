"""The end-to-end demo on the embedded template data: train, evaluate against BM25 and an untrained model
per language, mine hard negatives and train a second round, export to Hugging Face and reload it with
sentence-transformers, and print one table. Every stage leaves its outputs in the work folder and is
skipped when they are already there, so an interrupted demo resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import gin
import jax
import numpy as np

from polyret.experiments.study_data import mine_with_encoder
from polyret.io.fingerprint import check_match, read_json
from polyret.io.formats import read_id_text, read_qrels
from polyret.io.outputs import OutputError, atomic_output_dir, atomic_write_text, read_marker
from polyret.models.model_folder import load_model, save_model
from polyret.retrieval import metrics as M
from polyret.retrieval.bm25 import bm25_search
from polyret.retrieval.encode import TowerEncoder
from polyret.retrieval.pipeline import encode_and_search
from polyret.retrieval.tokenize import Tokenizer

METRICS = ("nDCG@10", "R@10")


@dataclasses.dataclass(frozen=True)
class DemoSize:
    num_entities: int = 200
    round1_steps: int = 1500
    round2_steps: int = 500
    batch_size: int = 32


SIZES = {"default": DemoSize(), "ci": DemoSize(num_entities=40, round1_steps=60, round2_steps=20, batch_size=16)}


def _train(model_dir: Path, data_dir: Path, steps: int, batch: int, extra: list[str]) -> None:
    from polyret.training.trainer import train_from_gin
    train_from_gin(["runs/demo.gin"], [f"MODEL_DIR='{model_dir}'", f"DATA_DIR='{data_dir}'", f"TRAIN_STEPS={steps}",
                                       f"BATCH_SIZE={batch}"] + extra)


def _evaluate(encoder: TowerEncoder | None, data_dir: Path, lang: str, section: str) -> dict[str, float]:
    corpus_lang = lang if section == "mono" else "en"
    corpus = read_id_text(data_dir / "corpus" / f"{corpus_lang}.jsonl")
    queries = read_id_text(data_dir / "queries" / "test" / f"{lang}.jsonl")
    qrels = read_qrels(data_dir / "qrels" / "test" / f"{lang}.{section}.txt")
    if encoder is None:
        run = bm25_search(corpus, queries, k=100)
    else:
        run = encode_and_search(encoder, corpus, queries, 100, 32, 48, measure_recall=False).run
    return M.evaluate(qrels, run, METRICS)["all"]


def _cached(path: Path, compute) -> Any:
    if path.exists():
        return json.loads(path.read_text())
    value = compute()
    atomic_write_text(path, json.dumps(value, indent=2))  # a kill mid-write must not leave half a file
    return value


SETTINGS_FILE = "demo_settings.json"


def _check_workdir(work: Path, settings: dict) -> None:
    """A work folder holds one demo: resuming with another size or languages is refused (its stages would
    mix two runs), and so is a folder with other files in it."""
    recorded = read_json(work / SETTINGS_FILE)
    if recorded is None:
        others = sorted(p.name for p in work.iterdir() if p.name != "demo.log") if work.is_dir() else []
        if others:
            raise OutputError(f"{work}: not empty and not a polyret demo work folder (it holds "
                              f"{', '.join(others[:4])}); choose a new or empty --workdir")
        atomic_write_text(work / SETTINGS_FILE, json.dumps(settings, indent=1) + "\n")
        return
    check_match(recorded, settings, work / SETTINGS_FILE, "use another --workdir, or the same --size and --languages")


def _data_stage(data_dir: Path, num_entities: int) -> Path:
    """The template data and its SentencePiece model, written whole or not at all."""
    from polyret.seqio_tasks.template_tasks import template_data_setup
    fingerprint = {"num_entities": num_entities}
    marker = read_marker(data_dir)
    if marker is None or marker["kind"] != "demo_data" or marker.get("fingerprint") != fingerprint:
        with atomic_output_dir(data_dir, "demo_data", fingerprint=fingerprint) as tmp:
            template_data_setup(tmp, num_entities=num_entities)
    return template_data_setup(data_dir, num_entities=num_entities)  # registers the tasks on the final paths


def _st_rankings_match(hf_dir: Path, encoder: TowerEncoder, data_dir: Path, lang: str) -> float:
    """Fraction of demo queries whose top-10 from the exported sentence-transformers model equals the JAX one."""
    from sentence_transformers import SentenceTransformer

    corpus = read_id_text(data_dir / "corpus" / f"{lang}.jsonl")
    queries = read_id_text(data_dir / "queries" / "test" / f"{lang}.jsonl")
    st = SentenceTransformer(str(hf_dir), device="cpu")
    doc_ids, texts = list(corpus), list(queries.values())
    ours = encoder.encode(texts, "left", 32) @ encoder.encode([corpus[d] for d in doc_ids], "right", 48).T
    theirs = st.encode(texts, convert_to_numpy=True) @ st.encode([corpus[d] for d in doc_ids], convert_to_numpy=True).T
    same = [list(np.argsort(-a, kind="stable")[:10]) == list(np.argsort(-b, kind="stable")[:10])
            for a, b in zip(ours, theirs)]
    return float(np.mean(same))


def run_demo(workdir: str | Path, size: str = "default", languages: tuple[str, ...] | None = None) -> dict:
    start = time.time()
    work = Path(workdir).absolute()
    cfg = SIZES[size]
    data_dir = work / "data"
    from polyret.seqio_tasks.templates import LANGUAGES
    languages = list(languages or LANGUAGES)
    _check_workdir(work, {"size": dataclasses.asdict(cfg), "languages": languages})
    spm = _data_stage(data_dir, cfg.num_entities)

    print(f"[1/6] training round 1 ({cfg.round1_steps} steps) -> {work / 'round1'}")
    _train(work / "round1", data_dir, cfg.round1_steps, cfg.batch_size,
           [f"template_data_setup.num_entities={cfg.num_entities}"])
    params, config, _ = load_model(work / "round1")
    untrained_dir = work / "untrained"
    if not untrained_dir.exists():
        from polyret.models.retrieval_model import init_params
        save_model(untrained_dir, init_params(config, jax.random.PRNGKey(123))[0], config, spm)

    print("[2/6] mining hard negatives with round 1")
    round1 = TowerEncoder(params, config, Tokenizer(spm))
    mined_dir = work / "mined"
    if not (mined_dir / "DONE").exists():
        mined_dir.mkdir(exist_ok=True)
        mine_with_encoder(round1, data_dir, mined_dir, languages)  # hard negatives, mono and xling
        atomic_write_text(mined_dir / "DONE", "mined with round 1\n")

    print(f"[3/6] training round 2 on mined negatives ({cfg.round2_steps} steps) -> {work / 'round2'}")
    _train(work / "round2", data_dir, cfg.round2_steps, cfg.batch_size,
           [f"template_data_setup.num_entities={cfg.num_entities}", f"MINED_DIR='{mined_dir}'",
            f"INITIAL_CHECKPOINT_PATH='{work / 'round1'}'", "MIXTURE_OR_TASK_NAME='demo_mined'",
            "DatasetConfig.setup=@demo_round2_setup",
            "TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 48, 'negative_targets': 48}"])

    print("[4/6] evaluating (ScaNN for the dense models, bm25s for BM25)")
    systems = {"untrained": TowerEncoder.from_checkpoint(untrained_dir), "BM25": None, "round 1": round1,
               "round 2 (+mined negatives)": TowerEncoder.from_checkpoint(work / "round2")}
    cache = work / "eval_cache"
    cache.mkdir(exist_ok=True)
    results = {}
    for section in ("mono", "xling"):
        for lang in languages:
            if section == "xling" and lang == "en":
                continue
            for name, encoder in systems.items():
                key = f"{section}/{lang}/{name}"
                file = cache / (key.replace("/", "_").replace(" ", "_").replace("(", "").replace(")", "") + ".json")
                results[key] = _cached(file, lambda: _evaluate(encoder, data_dir, lang, section))

    print("[5/6] exporting round 2 to Hugging Face and reloading it with sentence-transformers")
    hf_dir = work / "hf_export"
    if not (hf_dir / "modules.json").exists():
        from polyret.models.retrieval_model import export_hf
        round2_params, round2_config, _ = load_model(work / "round2")
        export_hf(round2_params, round2_config, hf_dir, tokenizer=spm, max_seq_length=48)
    agreement = {lang: _st_rankings_match(hf_dir, systems["round 2 (+mined negatives)"], data_dir, lang)
                 for lang in languages[:3]}

    print("[6/6] results (held-out people; mono: query and corpus in the language; xling: corpus in English)")
    table = format_demo_table(results, languages)
    print(table)
    print("\nexported model reloaded with sentence-transformers: same top-10 as JAX for "
          + ", ".join(f"{l} {v:.0%}" for l, v in agreement.items()) + " of the queries")
    artefacts = {"data": data_dir, "round 1": work / "round1", "round 2": work / "round2", "untrained": untrained_dir,
                 "mined negatives": mined_dir, "Hugging Face export": hf_dir, "table": work / "results.md",
                 "library messages": work / "demo.log"}
    atomic_write_text(work / "results.md", table + "\n")
    atomic_write_text(work / "results.json", json.dumps({"metrics": results, "st_agreement": agreement}, indent=2))
    print("\nartefacts:\n" + "\n".join(f"  {k:20s} {v}" for k, v in artefacts.items()))
    print(f"total time {time.time() - start:.0f} s")
    return {"metrics": results, "st_agreement": agreement}


def format_demo_table(results: dict, languages: list[str]) -> str:
    systems = ["untrained", "BM25", "round 1", "round 2 (+mined negatives)"]
    lines = ["| section | lang | " + " | ".join(f"{s} {m}" for s in systems for m in METRICS) + " |",
             "|---|---|" + "---:|" * (len(systems) * len(METRICS))]
    for section in ("mono", "xling"):
        for lang in languages:
            if section == "xling" and lang == "en":
                continue
            cells = [f"{results[f'{section}/{lang}/{s}'][m]:.3f}" for s in systems for m in METRICS]
            lines.append(f"| {section} | {lang} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@gin.configurable
def demo_round2_setup(mined_dir: str = gin.REQUIRED, data_dir: str = gin.REQUIRED) -> None:
    """Round 2's data: the mined hard-negative files as one mixture `demo_mined`."""
    import seqio
    from polyret.seqio_tasks import tasks

    vocab = seqio.SentencePieceVocabulary(str(Path(data_dir) / "spm.model"))
    names = [tasks.register_hard_negative_task(f"demo_mined_{p.stem}", p, vocab, num_negatives=3)
             for p in sorted(Path(mined_dir).glob("mined_*.jsonl"))]
    tasks.add_mixture("demo_mined", [(n, 1.0) for n in names])
