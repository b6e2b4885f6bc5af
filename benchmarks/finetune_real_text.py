"""Fine-tune a real pretrained encoder with polyret on the real-text set's train split (benchmarks/real_text_set.py,
Debian Reference sections) and compare BM25, the model zero-shot and fine-tuned on the test split, per language
pair, nDCG@10 and R@100. Also checks that `polyret evaluate --checkpoint` on the imported model gives the same
nDCG@10 as sentence-transformers' own vectors (`encode_query` / `encode_document`, with the model's prompts)
passed through `--query_embeddings/--corpus_embeddings`.

  nice -n 10 python benchmarks/finetune_real_text.py [--base all-MiniLM-L6-v2 | multilingual-e5-small] \
      [--set ~/.cache/polyret/debian_reference_set] [--work /tmp/ft] [--steps 300] [--train_languages de,fr,ja,zh-cn]

`--base` is any name polyret resolves offline (polyret/models/model_names.py) or a folder. Training data: the
cross-lingual (English heading -> section in X) and monolingual (X -> X) train pairs of the `--train_languages`;
the other languages are held out to show what the fine-tuning does where it has no data. The model's prompts
(e5's "query: " / "passage: ") are applied in training and evaluation; `--no_prompts` drops them everywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

METRICS = ("nDCG@10", "R@100")


def evaluate_pair(encoder, folder: Path) -> dict[str, float]:
    from polyret.io.benchmarks import load_beir
    from polyret.retrieval import metrics as M
    from polyret.retrieval.pipeline import encode_and_search
    bench = load_beir(folder)
    found = encode_and_search(encoder, bench.passage_texts, bench.queries, 100, 64, 256, measure_recall=False)
    return M.evaluate(bench.qrels, found.run, list(METRICS))["all"]


def evaluate_job_parity(checkpoint: Path, hf_folder: Path, folder: Path, work: Path, prompts: bool
                        ) -> tuple[float, float]:
    """nDCG@10 of `polyret evaluate --checkpoint` and of sentence-transformers' vectors through the same job."""
    from sentence_transformers import SentenceTransformer
    from polyret.io.benchmarks import load_beir
    from polyret.jobs import evaluate as evaluate_job
    bench = load_beir(folder)
    files = ["--corpus", str(folder / "corpus.jsonl"), "--queries", str(folder / "queries.jsonl"),
             "--qrels", str(folder / "qrels" / "test.tsv"), "--metrics", "nDCG@10"]
    no_prompts = [] if prompts else ["--query_prompt", "", "--passage_prompt", ""]
    evaluate_job.main(["--checkpoint", str(checkpoint), "--output_dir", str(work / "eval_ours"),
                       "--query_max_length", "64", "--passage_max_length", "256"] + no_prompts + files)
    st = SentenceTransformer(str(hf_folder), device="cpu")
    doc_ids, query_ids = list(bench.passage_texts), list(bench.queries)  # evaluate checks every query has one
    docs, queries = [bench.passage_texts[d] for d in doc_ids], [bench.queries[q] for q in query_ids]
    st.max_seq_length = 256
    np.save(work / "c.npy", st.encode_document(docs, batch_size=64) if prompts else st.encode(docs, batch_size=64))
    st.max_seq_length = 64
    np.save(work / "q.npy", st.encode_query(queries, batch_size=64) if prompts else st.encode(queries, batch_size=64))
    (work / "c.ids").write_text("".join(d + "\n" for d in doc_ids))
    (work / "q.ids").write_text("".join(q + "\n" for q in query_ids))
    evaluate_job.main(["--query_embeddings", str(work / "q.npy"), "--query_ids", str(work / "q.ids"),
                       "--corpus_embeddings", str(work / "c.npy"), "--corpus_ids", str(work / "c.ids"),
                       "--output_dir", str(work / "eval_st")] + files)
    read = lambda d: json.loads((d / "metrics.json").read_text())["metrics"]["dense"]["all"]["nDCG@10"]
    return read(work / "eval_ours"), read(work / "eval_st")


def import_base(base: str, work: Path) -> Path:
    """`polyret import_checkpoint` of the model named `base` (resolved offline) into work/base, once."""
    from polyret.jobs import import_checkpoint as import_job
    from polyret.models.model_names import resolve_model
    imported = work / "base"
    if not imported.exists():
        import_job.main(["--hf", str(resolve_model(base)), "--output_dir", str(imported)])
    return imported


def register_train_mixture(name: str, pairs_dir: Path, train_languages: list[str], imported: Path) -> set[str]:
    """The seqio mixture `name` of the cross-lingual (en-X) and monolingual (X-X) train pairs of each language,
    tokenised with the imported model's tokenizer -> the pairs it holds."""
    from polyret.seqio_tasks import tasks
    from polyret.seqio_tasks.hf_vocab import HfVocabulary
    vocab = HfVocabulary(imported / "tokenizer")
    trained_pairs = {pair for lang in train_languages for pair in (f"en-{lang}", f"{lang}-{lang}")}
    rates = []
    for pair in sorted(trained_pairs):  # English alone trains on en-en once
        path = pairs_dir / pair / "train_pairs.jsonl"
        rates.append((tasks.register_swim_ir_task("rts_" + pair.replace("-", "_"), path, vocab),
                      sum(1 for _ in open(path))))
    tasks.add_mixture(name, rates)
    print(f"training on {sum(n for _, n in rates)} pairs of {', '.join(n for n, _ in rates)}")
    return trained_pairs


def finetune(imported: Path, out: Path, mixture: str, steps: int, batch_size: int, learning_rate: float,
             bindings: list[str] = ()) -> None:
    """The run of all-MiniLM-L6-v2's own fine-tuning recipe (runs/finetune_minilm.gin), on the imported
    checkpoint's architecture, at logit scale 20; `bindings` on top."""
    from polyret.training.trainer import train_from_gin
    train_from_gin(["runs/finetune_minilm.gin"], [
        f"MODEL_DIR='{out}'", f"MIXTURE_OR_TASK_NAME='{mixture}'", f"TRAIN_STEPS={steps}",
        f"INITIAL_CHECKPOINT_PATH='{imported}'", f"BATCH_SIZE={batch_size}",
        "MODEL_CONFIG=@checkpoint_model_config()", f"checkpoint_model_config.path='{imported}'",
        "checkpoint_model_config.overrides={'logit_scale': 20.0}",
        f"learning_rate_schedule.base_learning_rate={learning_rate}", *bindings])


def add_finetune_flags(ap: argparse.ArgumentParser, work: str) -> None:
    """The set, base model and fine-tuning flags both real-text fine-tuning benchmarks take."""
    ap.add_argument("--set", default=os.path.expanduser("~/.cache/polyret/debian_reference_set"))
    ap.add_argument("--base", default="all-MiniLM-L6-v2", help="model name or folder (resolved offline)")
    ap.add_argument("--work", default=work)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--train_languages", default="de,fr,ja,zh-cn")
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--learning_rate", type=float, default=2e-5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_finetune_flags(ap, "/tmp/ft")
    ap.add_argument("--no_prompts", action="store_true", help="train and evaluate without the model's prompts")
    ap.add_argument("--parity_pair", default="en-de", help="the pair of the evaluate-vs-sentence-transformers check")
    ap.add_argument("--pairs", default=None, help="comma-separated pairs to evaluate (default: all)")
    args = ap.parse_args()
    pairs_dir, work = Path(args.set) / "pairs", Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    train_languages = args.train_languages.split(",")
    start = time.time()

    from polyret.models.model_names import resolve_model
    from polyret.retrieval.encode import TowerEncoder
    hf_folder = resolve_model(args.base)
    imported = import_base(args.base, work)
    trained_pairs = register_train_mixture("rts_train", pairs_dir, train_languages, imported)
    finetuned = work / "finetuned"
    no_prompts = ["train.query_prompt=''", "train.passage_prompt=''"] if args.no_prompts else []
    finetune(imported, finetuned, "rts_train", args.steps, args.batch_size, args.learning_rate, no_prompts)

    baselines = json.loads((Path(args.set) / "baselines.json").read_text())
    overrides = {"query_prompt": "", "passage_prompt": ""} if args.no_prompts else {}
    systems = {"zero-shot": TowerEncoder.from_checkpoint(imported, **overrides),
               "fine-tuned": TowerEncoder.from_checkpoint(finetuned, **overrides)}
    rows = []
    for pair in args.pairs.split(",") if args.pairs else sorted(p.name for p in pairs_dir.iterdir()):
        scores = {name: evaluate_pair(encoder, pairs_dir / pair) for name, encoder in systems.items()}
        covered = pair in trained_pairs
        rows.append((pair, covered, baselines[pair]["bm25"], scores["zero-shot"], scores["fine-tuned"]))
    lines = ["| pair | in training data | BM25 nDCG@10 | BM25 R@100 | zero-shot nDCG@10 | zero-shot R@100 | "
             "fine-tuned nDCG@10 | fine-tuned R@100 |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for pair, covered, bm25, zero, tuned in rows:
        lines.append(f"| {pair} | {'yes' if covered else 'no'} | " + " | ".join(
            f"{s[m]:.3f}" for s in (bm25, zero, tuned) for m in METRICS) + " |")
    print("\n".join(lines))
    (work / "table.md").write_text("\n".join(lines) + "\n")
    ours, theirs = evaluate_job_parity(imported, hf_folder, pairs_dir / args.parity_pair, work, not args.no_prompts)
    print(f"\n{args.parity_pair} zero-shot nDCG@10: polyret evaluate --checkpoint {ours:.4f}, sentence-transformers "
          f"vectors{'' if args.no_prompts else ' (encode_query / encode_document)'} through "
          f"--query_embeddings/--corpus_embeddings {theirs:.4f} (difference {abs(ours - theirs):.4f})")
    print(f"total {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
