"""Translate-Distill training data: candidates, teacher scores, translated collections.

1. candidates: the top-N passages per query from a TREC run file (ours or BM25);
2. teacher scores on the English (query, passage) pairs, from a sentence-transformers cross-encoder or
   bi-encoder in a local folder, or from an LLM that rates relevance; written in the hltcoe layout
   (gzipped JSONL `["qid", ["pid", score], ...]`) that the MTD SeqIO task reads;
3. the English collection translated into each document language by a Hugging Face seq2seq model
   (Marian, NLLB, M2M, mT5, ...) or an LLM, row-aligned with the source (same ids, same order).
Scoring and translation are resumable: a killed run restarted with the same settings continues.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from polyret.io.formats import DataError, read_id_text
from polyret.io.runs import read_trec_run
from polyret.io.languages import language_name
from polyret.synthesis.resumable import ResumableFiles

TEACHER_KINDS = ("auto", "cross_encoder", "bi_encoder")


def candidates_from_run(run_file: str | os.PathLike, top_n: int) -> dict[str, list[str]]:
    """qid -> the run's top `top_n` passage ids (score descending, ties by id), in the file's query order."""
    return {qid: [pid for pid, _ in sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))[:top_n]]
            for qid, docs in read_trec_run(run_file).items()}


# ------------------------------------------------------------------------------------------- teachers

def teacher_kind(path: str | os.PathLike) -> str:
    """'bi_encoder' for a sentence-transformers model folder, 'cross_encoder' for a sequence classifier."""
    path = Path(path)
    if (path / "modules.json").exists() and "Pooling" in (path / "modules.json").read_text():
        return "bi_encoder"
    if (path / "config.json").exists():
        architectures = json.loads((path / "config.json").read_text()).get("architectures") or []
        if any(a.endswith("ForSequenceClassification") for a in architectures):
            return "cross_encoder"
    raise ValueError(f"{path}: neither a sentence-transformers bi-encoder (modules.json with Pooling) nor a "
                     "cross-encoder (config.json with a *ForSequenceClassification architecture); "
                     "pass the kind explicitly")


class SentenceTransformersTeacher:
    """Scores (query, passage) pairs with a local sentence-transformers model.

    cross_encoder: `CrossEncoder.predict` (the model's own activation). bi_encoder: the model's own
    similarity function (`SentenceTransformer.similarity_pairwise`) between query and passage embeddings.
    """

    def __init__(self, path: str | os.PathLike, kind: str = "auto", batch_size: int = 64, device: str | None = None):
        import sentence_transformers as st

        if kind not in TEACHER_KINDS:
            raise ValueError(f"teacher kind must be one of {TEACHER_KINDS}, got {kind!r}")
        self.kind = teacher_kind(path) if kind == "auto" else kind
        self.batch_size = batch_size
        model_class = st.CrossEncoder if self.kind == "cross_encoder" else st.SentenceTransformer
        self.model = model_class(os.fspath(path), device=device)

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        if self.kind == "cross_encoder":
            return np.asarray(self.model.predict(list(pairs), batch_size=self.batch_size, show_progress_bar=False),
                              np.float32).reshape(len(pairs))
        queries = self.model.encode([q for q, _ in pairs], batch_size=self.batch_size, convert_to_tensor=True)
        passages = self.model.encode([p for _, p in pairs], batch_size=self.batch_size, convert_to_tensor=True)
        return self.model.similarity_pairwise(queries, passages).float().cpu().numpy()


class LLMTeacher:
    """Relevance 0-3 from an LLM backend (one prompt per pair); unparsable replies are dropped and counted."""

    PROMPT = ("Rate how well the passage answers the query on a scale from 0 (irrelevant) to 3 (perfectly "
              "relevant). Reply with the number only.\n\nQuery: {query}\nPassage: {passage}\nScore:")

    def __init__(self, backend: Any):
        self.backend = backend
        self.failures = 0

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        prompts = [[{"role": "user", "content": self.PROMPT.format(query=q, passage=p)}] for q, p in pairs]
        scores = []
        for completion in self.backend.generate(prompts):
            match = re.search(r"-?\d+(?:\.\d+)?", completion.text or "")
            if match is None:
                self.failures += 1
            scores.append(float(match.group()) if match else np.nan)
        return np.asarray(scores, np.float32)


def score_candidates(queries: Mapping[str, str], passages: Mapping[str, str],
                     candidates: Mapping[str, Sequence[str]], teacher: Any, output: str | os.PathLike,
                     queries_per_chunk: int = 256, fingerprint: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Writes the hltcoe score file (gzipped JSONL `["qid", ["pid", score], ...]`, pairs in candidate
    order). Pairs the teacher could not score (NaN) are left out and counted."""
    output = Path(output)
    files = ResumableFiles({"scores": output}, output.with_name(output.name + ".state.json"),
                           {"task": "teacher_scores", "queries": len(candidates), **(fingerprint or {})})
    progress = {"done": 0, "pairs": 0, "unscored": 0, **files.progress}
    qids = list(candidates)
    total_pairs = sum(len(candidates[q]) for q in qids)
    with tqdm(total=total_pairs, initial=progress["pairs"] + progress["unscored"], desc="teacher scores",
              unit="pair") as bar:
        for begin in range(progress["done"], len(qids), queries_per_chunk):
            chunk = qids[begin:begin + queries_per_chunk]
            pairs = [(qid, pid) for qid in chunk for pid in candidates[qid]]
            scores = iter(teacher.score([(queries[q], passages[p]) for q, p in pairs]).tolist())
            lines, unscored = [], 0
            for qid in chunk:
                row: list[Any] = [qid]
                for pid in candidates[qid]:
                    score = next(scores)
                    if np.isnan(score):
                        unscored += 1
                    else:
                        row.append([pid, score])
                lines.append(json.dumps(row))
            progress = {"done": begin + len(chunk), "pairs": progress["pairs"] + len(pairs) - unscored,
                        "unscored": progress["unscored"] + unscored}
            files.append({"scores": lines}, progress)
            bar.update(len(pairs))
    files.finish()
    return progress


# ----------------------------------------------------------------------------------------- translation

class Seq2SeqTranslator:
    """A local Hugging Face seq2seq translation model (Marian, NLLB, M2M100, mT5, ...).

    `target_tokens` maps a language code to the token the model needs as the first decoder token
    (NLLB `deu_Latn`, M2M `__de__`); `source_token` sets the tokenizer's `src_lang` (NLLB/M2M);
    `prefix` is prepended to each input (T5-style `translate English to German: `, with `{language}`
    replaced by the target language name).
    """

    def __init__(self, path: str | os.PathLike, target_tokens: Mapping[str, str] | None = None,
                 source_token: str | None = None, prefix: str = "", batch_size: int = 16,
                 max_length: int = 512, num_beams: int = 1, device: str = "cpu"):
        import torch
        import transformers

        self._torch = torch
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(os.fspath(path))
        if source_token:
            self.tokenizer.src_lang = source_token
        self.model = transformers.AutoModelForSeq2SeqLM.from_pretrained(os.fspath(path)).to(device).eval()
        self.target_tokens = dict(target_tokens or {})
        self.prefix, self.batch_size, self.max_length = prefix, batch_size, max_length
        self.num_beams, self.device = num_beams, device

    def translate(self, texts: Sequence[str], language: str) -> list[str | None]:
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_length, "num_beams": self.num_beams}
        if language in self.target_tokens:
            kwargs["forced_bos_token_id"] = self.tokenizer.convert_tokens_to_ids(self.target_tokens[language])
        prefix = self.prefix.replace("{language}", language_name(language))
        out: list[str | None] = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer([prefix + t for t in texts[start:start + self.batch_size]], return_tensors="pt",
                                   padding=True, truncation=True, max_length=self.max_length).to(self.device)
            with self._torch.no_grad():
                generated = self.model.generate(**batch, **kwargs)
            out.extend(self.tokenizer.batch_decode(generated, skip_special_tokens=True))
        return out


class LLMTranslator:
    """Translation by an LLM backend; failed requests come back as None."""

    PROMPT = ("Translate the following passage from {source} into {target}. Reply with the translation "
              "only.\n\n{text}")

    def __init__(self, backend: Any, source_language: str = "en"):
        self.backend = backend
        self.source = language_name(source_language)

    def translate(self, texts: Sequence[str], language: str) -> list[str | None]:
        prompts = [[{"role": "user", "content": self.PROMPT.format(source=self.source,
                                                                   target=language_name(language), text=t)}]
                   for t in texts]
        return [None if c.error is not None else c.text for c in self.backend.generate(prompts)]


def translate_collection(collection: Mapping[str, str], language: str, translator: Any,
                         output: str | os.PathLike, chunk_size: int = 64,
                         fingerprint: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Writes `pid<TAB>translation` TSV row-aligned with `collection` (same ids, same order). A passage
    the translator returns empty (or fails on) keeps its source text, so rows stay aligned; counted."""
    output = Path(output)
    files = ResumableFiles({"collection": output}, output.with_name(output.name + ".state.json"),
                           {"task": "translate", "language": language, "passages": len(collection),
                            **(fingerprint or {})})
    progress = {"done": 0, "kept_source": 0, **files.progress}
    pids = list(collection)
    with tqdm(total=len(pids), initial=progress["done"], desc=f"translate -> {language}", unit="passage") as bar:
        for begin in range(progress["done"], len(pids), chunk_size):
            chunk = pids[begin:begin + chunk_size]
            translations = translator.translate([collection[pid] for pid in chunk], language)
            lines, kept_source = [], 0
            for pid, text in zip(chunk, translations):
                text = " ".join((text or "").split())  # one line, no tabs
                if not text:
                    text, kept_source = " ".join(collection[pid].split()), kept_source + 1
                lines.append(f"{pid}\t{text}")
            progress = {"done": begin + len(chunk), "kept_source": progress["kept_source"] + kept_source}
            files.append({"collection": lines}, progress)
            bar.update(len(chunk))
    files.finish()
    if progress["kept_source"]:
        logging.warning("%s: %d passages kept their source text (empty or failed translation)",
                        output, progress["kept_source"])
    return progress


def prepare_distill(queries_file: str | os.PathLike, collection_file: str | os.PathLike,
                    run_file: str | os.PathLike, output_dir: str | os.PathLike, teacher: Any, top_n: int = 50,
                    languages: Sequence[str] = (), translator: Any = None, source_language: str = "en",
                    fingerprint: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """All of MTD's data in `output_dir`: `scores.jsonl.gz` and `collection.<lang>.tsv` per language.

    Returns the paths to bind as MTD_SCORE_FILE, MTD_QUERIES and MTD_COLLECTIONS: one collection per
    language in `languages` (the source collection itself for the source language; with no languages,
    just the source collection).
    """
    output_dir = Path(output_dir)
    queries, collection = read_id_text(queries_file, with_title=False), read_id_text(collection_file)
    candidates = candidates_from_run(run_file, top_n)
    for qid, pids in candidates.items():
        if qid not in queries:
            raise DataError(run_file, None, f"query id {qid!r} is not in {queries_file}")
        missing = next((pid for pid in pids if pid not in collection), None)
        if missing is not None:
            raise DataError(run_file, None, f"passage id {missing!r} (query {qid!r}) is not in the collection")
    scores = output_dir / "scores.jsonl.gz"
    score_candidates(queries, collection, candidates, teacher, scores,
                     fingerprint={"run_file": os.fspath(run_file), "top_n": top_n, **(fingerprint or {})})
    collections = {}
    for lang in languages or [source_language]:
        if lang == source_language:  # documents in the source language (CLEF) are the collection itself
            collections[lang] = os.fspath(collection_file)
            continue
        if translator is None:
            raise ValueError("languages to translate into were given but no translator")
        path = output_dir / f"collection.{lang}.tsv"
        translate_collection(collection, lang, translator, path, fingerprint=fingerprint)
        collections[lang] = os.fspath(path)
    return {"score_file": os.fspath(scores), "queries": os.fspath(queries_file), "collections": collections}
