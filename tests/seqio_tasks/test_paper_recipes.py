"""Every paper run's bound hyper-parameters, read through gin, against a table of the published values with
their sources. A value that still differs must be listed in DEVIATIONS with its reason (and is checked to
still differ, so the list cannot go stale)."""

import inspect

import gin
import pytest

from polyret import GIN_CONFIGS_DIR

T5XR = "google-research/t5x_retrieval@e2fbef3"
PLAIDX = "hltcoe/ColBERT-X@7a10921 (PLAID-X)"
CONTRIEVER = "facebookresearch/contriever@39fb220"

SWIMX_FINETUNE = {
    "%TASK_FEATURE_LENGTHS": ({"inputs": 64, "targets": 256}, "arXiv 2311.05800 (query 64 / passage 256)"),
    "learning_rate_schedule.base_learning_rate": (1e-3, f"arXiv 2311.05800; {T5XR} configs/runs/finetune.gin"),
    "learning_rate_schedule.schedule": ("linear", f"{T5XR} finetune.gin factors='linear_decay'"),
    "learning_rate_schedule.warmup_steps": (1000, f"{T5XR} finetune.gin warmup_steps=1000"),
    "t5_config.dropout_rate": (0.1, f"{T5XR} finetune.gin -> t5x/configs/runs/finetune.gin DROPOUT_RATE=0.1"),
    "make_optimizer.optimizer": ("adafactor", f"{T5XR} configs/models/de_mt5_base.gin (Adafactor)"),
    "adafactor.decay_rate": (0.8, f"{T5XR} de_mt5_base.gin decay_rate=0.8"),
    "t5_config.preset": ("mt5_base", "arXiv 2311.05800 (mT5-base)"),
    "DualEncoderConfig.pooling": ("mean", "arXiv 2311.05800"),
    "DualEncoderConfig.projection_dim": (768, f"arXiv 2311.05800; {T5XR} de_mt5_base.gin PROJECTION_DIM=768"),
    "DualEncoderConfig.l2_norm": (True, "arXiv 2311.05800"),
    "DualEncoderConfig.logit_scale": (100.0, "arXiv 2311.05800"),
    "ContrastiveLoss.bidirectional": (True, f"{T5XR} losses.py InBatchCrossEntropyLoss.bidirectional=True"),
    "ContrastiveLoss.bidirectional_reduction": ("sum", f"{T5XR} losses.py: jnp.mean(loss + right_loss), the two "
                                                       "directions' batch means added"),
}
SWIMX_PRETRAIN = {
    **{k: v for k, v in SWIMX_FINETUNE.items() if k not in ("t5_config.dropout_rate", "learning_rate_schedule.warmup_steps")},
    "%BATCH_SIZE": (8192, "arXiv 2311.05800 (mC4 pre-training)"),
    "%TRAIN_STEPS": (500000, "arXiv 2311.05800 (500K mixed-language steps, then 100K single-language)"),
    "DatasetConfig.single_language_batches": (False, "arXiv 2311.05800 (phase 1: mixed-language batches)"),
    "learning_rate_schedule.warmup_steps": (1000, f"{T5XR} configs/runs/pretrain.gin warmup_steps=1000"),
    "learning_rate_schedule.total_steps": (600000, "the decay spans both phases (decay_factor = 1/TRAIN_STEPS)"),
    "learning_rate_schedule.end_factor": (1000 / 600000, f"{T5XR} pretrain.gin linear_decay: lr(T) = base x warmup/T"),
    "t5_config.dropout_rate": (0.0, f"{T5XR} configs/architectures/de_t5_flaxformer.gin DROPOUT_RATE=0.0"),
    "mc4_data_setup.chunk_length": (256, f"{CONTRIEVER} src/options.py --chunk_length 256"),
    "mc4_data_setup.ratio_min": (0.1, f"{CONTRIEVER} src/options.py --ratio_min 0.1"),
    "mc4_data_setup.ratio_max": (0.5, f"{CONTRIEVER} src/options.py --ratio_max 0.5"),
}
MTD = {
    "%TASK_FEATURE_LENGTHS": ({"inputs": 32, "passages": 180}, "arXiv 2405.00977 (query 32 / passage 180)"),
    "%TRAIN_STEPS": (200000, f"{PLAIDX} README --maxsteps 200000"),
    "%BATCH_SIZE": (64, f"{PLAIDX} README --per_device_batch_size 8, on 8 GPUs"),
    "%MTD_PASSAGES": (6, f"{PLAIDX} README --nway 6"),
    "mtd_data_setup.top_n": (50, "arXiv 2405.00977 (teacher's top 50)"),
    "%MTD_STRATEGY": ("mix_passages", "arXiv 2405.00977 (mix passages)"),
    "learning_rate_schedule.base_learning_rate": (5e-6, f"{PLAIDX} README --learning_rate 5e-6"),
    "learning_rate_schedule.schedule": ("constant", f"{PLAIDX} training.py: no scheduler without --warmup"),
    "learning_rate_schedule.warmup_steps": (0, f"{PLAIDX} training.py: no warmup"),
    "make_optimizer.optimizer": ("adamw", f"{PLAIDX} training.py AdamW"),
    "adamw.weight_decay": (0.0, f"{PLAIDX} training.py transformers.AdamW (weight_decay default 0.0)"),
    "adamw.eps": (1e-8, f"{PLAIDX} training.py eps=1e-8"),
    "adamw.b1": (0.9, "transformers.AdamW default betas"),
    "adamw.b2": (0.999, "transformers.AdamW default betas"),
    "make_optimizer.max_grad_norm": (2.0, f"{PLAIDX} colbert/utils/amp.py clip_grad_norm_(..., 2.0)"),
    "ColBERTConfig.projection_dim": (128, f"{PLAIDX} ColBERTConfig dim=128"),
    "ColBERTConfig.query_length": (32, f"{PLAIDX} ColBERTConfig query_maxlen=32"),
    "KLDistillationLoss.teacher_temperature": (1.0, f"{PLAIDX} distillation_alpha=1.0"),
    "bert_config.preset": ("xlm_roberta_large", "model cards of hltcoe/plaidx-large-neuclir-mtd-*; "
                                                f"{PLAIDX} README --model_name xlm-roberta-large"),
    "ColBERTConfig.attend_to_mask_tokens": (False, f"{PLAIDX} ColBERTConfig attend_to_mask_tokens=False"),
}
PUBLISHED = {
    "swimx_xor.gin": {**SWIMX_FINETUNE, "%BATCH_SIZE": (4096, "arXiv 2311.05800"),
                      "DatasetConfig.single_language_batches": (False, "arXiv 2311.05800")},
    "swimx_miracl.gin": {**SWIMX_FINETUNE, "%BATCH_SIZE": (4096, "arXiv 2311.05800"),
                         "DatasetConfig.single_language_batches": (True, "arXiv 2311.05800 (MIRACL model: "
                                                                         "single-language batches)")},
    "swimx_xtreme_up.gin": {**SWIMX_FINETUNE, "%BATCH_SIZE": (1024, "arXiv 2311.05800")},
    "swimx_mc4_pretrain.gin": SWIMX_PRETRAIN,
    "swimx_mc4_pretrain_single_language.gin": {
        **SWIMX_PRETRAIN, "%TRAIN_STEPS": (600000, "arXiv 2311.05800 (600K steps in all)"),
        "DatasetConfig.single_language_batches": (True, "arXiv 2311.05800 (last 100K: single-language batches)")},
    "mtd_colbert.gin": MTD,
    "mtd_colbert_mix_entries.gin": {**MTD, "%MTD_STRATEGY": ("mix_entries", "arXiv 2405.00977 (mix entries)")},
    "mtd_colbert_round_robin.gin": {
        **MTD, "%MTD_STRATEGY": ("round_robin", "arXiv 2405.00977 (round robin)"),
        "%MTD_PASSAGES": (2, "arXiv 2405.00977 (2 passages per language copy)"),
        "%BATCH_SIZE": (192, f"{PLAIDX} MultiLangBatcher: 8 queries x 3 languages per device, 8 GPUs")},
}

# (run or "*", binding) -> why the bound value still differs from the published one.
DEVIATIONS: dict = {}


def _deviation(run, key):
    for (pattern, binding), reason in DEVIATIONS.items():
        if binding == key and (pattern == run or (pattern.endswith("*") and run.startswith(pattern[:-1]))):
            return reason
    return None


def _bound_value(key):
    """What the parsed run binds for `key`, else the configurable's own default (what the run would use)."""
    try:
        value = gin.query_parameter(key)
    except ValueError:
        selector, name = key.rsplit(".", 1)
        # gin has no public lookup of an unbound parameter's default: read the configurable's signature.
        configurable = gin.config._REGISTRY.get_match(selector)  # noqa: SLF001
        default = inspect.signature(configurable.wrapped).parameters[name].default
        if default is inspect.Parameter.empty:
            raise
        return default
    if isinstance(value, gin.config.ConfigurableReference):
        return value.selector.split(".")[-1]
    return value


@pytest.fixture()
def parsed():
    import polyret.models.losses  # noqa: F401
    import polyret.seqio_tasks.template_tasks  # noqa: F401
    import polyret.training.trainer  # noqa: F401

    def parse(run):
        gin.clear_config()
        gin.add_config_file_search_path(str(GIN_CONFIGS_DIR))
        gin.parse_config_files_and_bindings([str(GIN_CONFIGS_DIR / "runs" / run)], [], finalize_config=False)

    yield parse
    gin.clear_config()


@pytest.mark.parametrize("run", sorted(PUBLISHED))
def test_run_binds_the_published_values(run, parsed):
    parsed(run)
    wrong = []
    for key, (published, source) in PUBLISHED[run].items():
        bound = _bound_value(key)
        same = bound == pytest.approx(published, rel=1e-9) if isinstance(published, float) else bound == published
        reason = _deviation(run, key)
        if reason is None and not same:
            wrong.append(f"{key} = {bound!r}, published {published!r} ({source})")
        if reason is not None and same:
            wrong.append(f"{key} now matches the published {published!r}: remove it from DEVIATIONS")
    assert not wrong, f"{run}:\n" + "\n".join(wrong)


def test_every_paper_run_is_in_the_table():
    """Every SWIM-X and MTD run file (the papers' recipes) has its published values here."""
    runs = {p.name for p in (GIN_CONFIGS_DIR / "runs").glob("*.gin") if p.name.startswith(("swimx_", "mtd_"))}
    assert runs == set(PUBLISHED)


def test_each_run_file_cites_its_sources():
    for run in ("swimx_xor.gin", "swimx_mc4_pretrain.gin", "mtd_colbert.gin"):
        text = (GIN_CONFIGS_DIR / "runs" / run).read_text()
        assert "arXiv" in text and "@" in text, run  # the paper and a pinned released config
