"""Stages 5_round1/ and 7_round2/: one training round through `train_from_gin`
(gin_configs/runs/adapt_dual_encoder.gin)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gin

from polyret.experiments.adapt.config import AdaptConfig, prompt_overrides
from polyret.experiments.adapt.stage_files import stage_file
from polyret.io.fingerprint import checkpoint_step, file_fingerprint
from polyret.models.model_folder import stored_tokenizer
from polyret.seqio_tasks import tasks
from polyret.seqio_tasks.vocab import get_vocabulary
from polyret.training.trainer import train_from_gin

RUN_FILE = "runs/adapt_dual_encoder.gin"


@gin.configurable
def adapt_data_setup(train_file: str = gin.REQUIRED, vocabulary_path: str = gin.REQUIRED,
                     num_negatives: int = 0, mixture: str = "adapt_train", scored: bool = False) -> None:
    """Register `mixture`: the SWIM-IR training pairs (round 1) or, with num_negatives, the mined
    hard-negative rows (round 2; `scored`: with a reranker's scores, for MarginMSE)."""
    vocab = get_vocabulary(vocabulary_path)
    if scored:
        name = tasks.register_scored_task(f"{mixture}_scored", train_file, vocab, num_negatives)
    # With the passages' translation groups: a passage's translations are never another row's negatives.
    elif num_negatives:
        name = tasks.register_hard_negative_task(f"{mixture}_mined", train_file, vocab, num_negatives=num_negatives,
                                                 with_groups=True)
    else:
        name = tasks.register_swim_ir_task(f"{mixture}_pairs", train_file, vocab, with_groups=True)
    tasks.add_mixture(mixture, [(name, 1.0)])


def train_stage(config: AdaptConfig, model_dir: Path, upstream: str, initial: Path, train_file: Path,
                steps: int, num_negatives: int, scored: bool = False) -> dict[str, Any]:
    """One training round through `train_from_gin` (resumes from its checkpoints after a kill). `scored`: the
    rows carry a reranker's scores, and the round trains with MarginMSE on them (GPL)."""
    root = initial if (initial / "model_config.json").is_file() else initial.parent
    tokenizer = stored_tokenizer(root) or stored_tokenizer(Path(initial))
    q, p = config.query_max_length, config.passage_max_length
    if scored:
        # The student's cosine margins at the run's logit scale (20: `paired_scores` applies it) against the
        # reranker's logit margins.
        lengths = ["TASK_FEATURE_LENGTHS={'inputs': %d, 'passages': %d}" % (q, p), "adapt_data_setup.scored=True",
                   "train.loss=@MarginMSELoss()"]
    else:
        lengths = ["TASK_FEATURE_LENGTHS={'inputs': %d, 'targets': %d%s}" % (
            q, p, f", 'negative_targets': {p}" if num_negatives else "")]
    bindings = [f"MODEL_DIR='{model_dir}'", f"INITIAL_CHECKPOINT_PATH='{initial}'", f"TRAIN_STEPS={steps}",
                f"TRAIN_FILE='{train_file}'", f"VOCABULARY='{tokenizer}'", f"NUM_NEGATIVES={num_negatives}",
                f"BATCH_SIZE={config.batch_size}", f"learning_rate_schedule.base_learning_rate={config.learning_rate}",
                f"train.seed={config.seed}", *(f"train.{k}={v!r}" for k, v in prompt_overrides(config).items()),
                *lengths, *config.gin_bindings]
    files = [RUN_FILE, *config.gin_files]
    fingerprint = {"upstream": upstream, "bindings": bindings[2:], "gin_files": [
        file_fingerprint(f) if os.path.isfile(f) else f for f in config.gin_files]}
    model_dir.mkdir(parents=True, exist_ok=True)
    stage_file(model_dir / "adapt_stage.json", fingerprint)
    if checkpoint_step(model_dir) != steps:
        train_from_gin(files, bindings, list(config.gin_search_paths))
    return fingerprint
