"""A study's evaluation: the reference arm (the same starting model for every seed) is retrieved once, and a
passage in several evaluation corpora is encoded once per model; the scores equal a plain evaluation's."""

from __future__ import annotations

from types import SimpleNamespace

import jax

from beir_folder import write_beir
from polyret.experiments import study as study_module
from polyret.experiments.study import EvalSet, Paths
from polyret.models.model_folder import save_model
from polyret.models.retrieval_model import init_params
from polyret.models.t5 import PRESETS
from polyret.models.towers import DualEncoderConfig
from polyret.retrieval import metrics as M
from polyret.retrieval.encode import TowerEncoder
from polyret.retrieval.pipeline import load_eval_inputs, retrieve


def test_reference_arm_is_retrieved_once_and_shared_passages_encoded_once(tiny_spm, tmp_path, monkeypatch):
    cfg = DualEncoderConfig(encoder=PRESETS["mt5_tiny"], projection_dim=16)
    params, _ = init_params(cfg, jax.random.PRNGKey(0))
    start = save_model(tmp_path / "start", params, cfg, tiny_spm)
    texts = ["the quick brown fox jumps over the lazy dog", "der schnelle braune fuchs springt über den hund",
             "le renard brun rapide saute par dessus le chien", "быстрая коричневая лиса прыгает через собаку",
             "retrieval models encode queries and passages", "multilingual dense retrieval with synthetic queries"]
    queries = {"q0": texts[0][:20], "q1": texts[3][:20]}
    qrels = {"test": {"q0": {"p0": 1}, "q1": {"p3": 1}}}
    small = {f"p{i}": t for i, t in enumerate(texts[:4])}
    large = {**small, "p4": texts[4], "p5": texts[5]}   # the small corpus and two passages more
    sets = {}
    for name, corpus in (("small", small), ("large", large)):
        folder = write_beir(tmp_path / name, corpus, queries, qrels)
        sets[name] = EvalSet(corpus=str(folder / "corpus.jsonl"), queries=str(folder / "queries.jsonl"),
                             qrels=str(folder / "qrels" / "test.tsv"), query_max_length=16, passage_max_length=32)
    study = SimpleNamespace(eval_sets=sets, metrics=["nDCG@10", "R@10"])

    loads, encoded = [], []
    from_checkpoint, encode_rows = TowerEncoder.from_checkpoint, TowerEncoder._encode_rows
    monkeypatch.setattr(TowerEncoder, "from_checkpoint",
                        classmethod(lambda cls, *a, **k: (loads.append(a), from_checkpoint(*a, **k))[1]))
    monkeypatch.setattr(TowerEncoder, "_encode_rows", lambda self, ids, side, *a: (
        encoded.append((side, len(ids))), encode_rows(self, ids, side, *a))[1])
    cache: dict = {}
    specs = [SimpleNamespace(folder=tmp_path / "runs" / "start" / f"seed{s}", name="start", seed=s) for s in (0, 1)]
    scores = [study_module._evaluate(spec, study, Paths(tmp_path, tmp_path / "data", "cpu"), cache, str(start))
              for spec in specs]

    assert len(loads) == 1
    # small: its 4 passages and the 2 queries; large: only its 2 new passages (the queries are remembered too)
    assert encoded == [("right", 4), ("left", 2), ("right", 2)]
    assert scores[0] == scores[1]
    for spec in specs:
        assert {p.name for p in (spec.folder / "eval").iterdir()} == {"small.json", "small.trec", "large.json",
                                                                       "large.trec"}
    monkeypatch.undo()
    plain = TowerEncoder.from_checkpoint(start)
    for name, es in sets.items():
        corpus, qs, judgements = load_eval_inputs(es.corpus, es.queries, es.qrels)
        run = retrieve(plain, corpus, qs, len(corpus), 16, 32)
        assert scores[0][name] == M.per_query(judgements, run, ["nDCG@10", "R@10"])
