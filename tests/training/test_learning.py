"""Learning is real: tiny runs on the template data lift held-out retrieval above an untrained model's
(contrastive) and raise the student's rank agreement with the teacher (distillation)."""

import json

import jax
import numpy as np
import pytest
from scipy.stats import spearmanr

from polyret.io.formats import read_id_text, read_qrels
from polyret.models.model_folder import load_model
from polyret.models.retrieval_model import init_params
from polyret.retrieval.encode import TowerEncoder
from polyret.retrieval.late_interaction import maxsim
from polyret.retrieval.tokenize import Tokenizer
from polyret.seqio_tasks.template_tasks import teacher_score
from training_helpers import run_training

pytestmark = pytest.mark.slow


def _recall_at_10(encoder, data_dir, lang):
    corpus = read_id_text(data_dir / "corpus" / f"{lang}.jsonl")
    queries = read_id_text(data_dir / "queries" / "test" / f"{lang}.jsonl")
    qrels = read_qrels(data_dir / "qrels" / "test" / f"{lang}.mono.txt")
    doc_ids, query_ids = list(corpus), list(queries)
    d = encoder.encode([corpus[i] for i in doc_ids], "right", 32)
    q = encoder.encode([queries[i] for i in query_ids], "left", 24)
    top = np.argsort(-(q @ d.T), axis=1)[:, :10]
    return float(np.mean([any(doc_ids[j] in qrels[qid] for j in row) for qid, row in zip(query_ids, top)]))


def _trained_and_untrained(tmp_path, data_dir, run, steps, batch):
    """Train a tiny run; -> (encoder of its final checkpoint, encoder of a fresh model of the same config)."""
    run_training(tmp_path / "out.npz", [f"--gin_file=runs/tiny/{run}.gin", f"--gin.MODEL_DIR='{tmp_path}/m'",
                                        f"--gin.DATA_DIR='{data_dir}'", f"--gin.TRAIN_STEPS={steps}",
                                        f"--gin.BATCH_SIZE={batch}", f"--gin.CheckpointConfig.every={steps}"])
    params, config, spm = load_model(tmp_path / "m")
    untrained = init_params(config, jax.random.PRNGKey(1))[0]
    return TowerEncoder(params, config, Tokenizer(spm)), TowerEncoder(untrained, config, Tokenizer(spm))


def test_contrastive_training_lifts_recall(tmp_path, data_dir):
    trained, untrained = _trained_and_untrained(tmp_path, data_dir, "swimx_miracl", 300, 32)
    report = {}
    for lang in ("en", "de", "ja", "ar"):
        report[lang] = (_recall_at_10(untrained, data_dir, lang), _recall_at_10(trained, data_dir, lang))
    print("held-out Recall@10 (untrained, trained):", json.dumps(report))
    for lang, (before, after) in report.items():
        assert after >= before + 0.15, (lang, before, after)


def test_distillation_raises_rank_correlation_with_teacher(tmp_path, data_dir):
    trained, untrained = _trained_and_untrained(tmp_path, data_dir, "mtd_colbert", 800, 16)
    queries = read_id_text(data_dir / "queries" / "test" / "en.jsonl")

    def mean_spearman(encoder, lang):
        """Held-out English queries; candidates in `lang`: the person's three facts and nine other documents,
        scored by the rule the training teacher used (without its noise)."""
        corpus = read_id_text(data_dir / "corpus" / f"{lang}.jsonl")
        doc_ids, rng, values = list(corpus), np.random.default_rng(0), []
        for qid, text in queries.items():
            person = qid.split("-")[1]
            same = [d for d in doc_ids if d.startswith(person + "-")]
            others = list(rng.choice([d for d in doc_ids if not d.startswith(person + "-")], 9, replace=False))
            candidates = same + others
            qv = encoder.encode([text], "left", 16)[0]
            dv = encoder.encode([corpus[d] for d in candidates], "right", 24)
            values.append(spearmanr([maxsim(qv, v) for v in dv], [teacher_score(qid, d) for d in candidates]).statistic)
        return float(np.mean(values))

    before = {lang: mean_spearman(untrained, lang) for lang in ("en", "de")}
    after = {lang: mean_spearman(trained, lang) for lang in ("en", "de")}
    print(f"Spearman with the teacher on held-out queries: untrained {before}, trained {after}")
    assert np.mean(list(after.values())) >= np.mean(list(before.values())) + 0.1
