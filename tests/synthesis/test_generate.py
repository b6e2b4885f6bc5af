"""SAP generation against a real localhost HTTP server speaking the OpenAI chat-completions protocol."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path


from chat_server import ChatServer, Reply, completion
from sap_helpers import OUTCOME, asked_about, good_query, passage_text, scripted, write_corpus
from polyret.jobs import generate_sap as job
from polyret.synthesis.exemplars import read_exemplars
from polyret.synthesis.filters import FilterConfig
from polyret.synthesis.generate import SapConfig, generate_sap
from polyret.synthesis.llm import BackendConfig
from polyret.synthesis.sampling import sample_passages

LANGS = ("de", "fr")
FILTERS = FilterConfig(langid_candidates=("en", "de", "fr"))


def _read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def _expected(corpus, config):
    """Records the scripted replies must produce, in output order (languages, then sample order)."""
    records, rejected = [], []
    for lang in LANGS:
        seen = set()
        for item in sample_passages({l: corpus for l in LANGS}, [lang], config.passages_per_language, config.seed):
            i = int(item["passage_id"][1:])
            outcome = OUTCOME[i]
            query = good_query(0 if i == 10 else i, lang)
            if outcome in (None, "duplicate_of_0"):
                outcome = "duplicate" if query in seen else None
            if outcome is not None:
                rejected.append((item["passage_id"], lang, outcome))
                continue
            seen.add(query)
            records.append({"_id": f"p{i:02d}-{lang}", "lang": {"de": "German", "fr": "French"}[lang],
                            "code": lang, "query": query, "title": f"Item{i:02d}", "text": passage_text(i),
                            "summary": passage_text(0 if i == 10 else i).split(". ")[0] + ".",
                            "passage_id": f"p{i:02d}"})
    return records, rejected


def test_sap_against_scripted_server(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    config = SapConfig(LANGS, passages_per_language=12, seed=5, chunk_size=8)
    with ChatServer(scripted, client_timeout_s=0.8) as server:
        backend = BackendConfig(model="scripted", base_url=server.base_url, max_concurrency=3, max_retries=2,
                                timeout_s=0.8, initial_backoff_s=0.05).build()
        summary = generate_sap({l: corpus for l in LANGS}, read_exemplars(), backend, config,
                               tmp_path / "out.jsonl", FILTERS)
    records, rejected = _expected(corpus, config)
    assert _read_jsonl(tmp_path / "out.jsonl") == records
    got_rejected = [(r["passage_id"], r["code"], r["reason"]) for r in _read_jsonl(tmp_path / "out.jsonl.rejected.jsonl")]
    assert got_rejected == rejected

    # Prompts: system instruction, every German exemplar (passage, summary, query), then the passage.
    first = server.requests[0]
    assert first["model"] == "scripted" and first["messages"][0]["role"] == "system"
    user = first["messages"][-1]["content"]
    exemplars = [e for e in read_exemplars() if e.query_language == asked_about(first)[1]]
    assert len(exemplars) == 3
    for e in exemplars:
        assert e.passage in user and e.summary in user and e.query in user
    i = asked_about(first)[0]
    assert user.endswith(f"Article: Item{i:02d}\n{passage_text(i)}\nSummary:")

    # Retries: 429 once, 500 twice, the malformed body until retries run out, the slow reply once.
    attempts = {}
    for body in server.requests:
        attempts.setdefault(asked_about(body), 0)
        attempts[asked_about(body)] += 1
    for lang in LANGS:
        assert [attempts[(i, lang)] for i in range(12)] == [1, 2, 3, 3, 2, 1, 1, 1, 1, 1, 1, 1]
    assert 2 <= server.max_in_flight <= 3
    usage = summary["usage"]
    assert usage["requests"] == len(server.requests) == 2 * 18
    assert usage["retries"] == 2 * 6 and usage["failures"] == 2
    assert usage["prompt_tokens"] == 10 * 2 * 11 and usage["completion_tokens"] == 5 * 2 * 11
    assert summary["done"] == 24 and summary["kept"] == len(records)
    assert sum(summary["dropped"].values()) == len(rejected)
    # The key is never sent in a log or file, only in the Authorization header.
    assert all(h == "Bearer EMPTY" for h in server.auth_headers)


def test_api_key_from_environment_is_sent_and_never_written(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_LLM_KEY", "sk-secret-123")
    corpus = write_corpus(tmp_path / "corpus.jsonl", n=2)
    with ChatServer(lambda body, attempt: Reply(body=completion(
            f"S.\nQuery (German): {good_query(asked_about(body)[0], 'de')}"))) as server:
        rc = job.main(["--corpus", str(corpus), "--languages", "de", "--model", "m", "--base_url", server.base_url,
                       "--api_key_env", "MY_LLM_KEY", "--langid_languages", "en,de",
                       "--output", str(tmp_path / "out.jsonl")])
    assert rc == 0 and set(server.auth_headers) == {"Bearer sk-secret-123"}
    assert all("sk-secret" not in p.read_text() for p in tmp_path.iterdir() if p.is_file())


def _job_args(corpus, server, output, extra=()):
    return ["--corpus", str(corpus), "--languages", ",".join(LANGS), "--model", "scripted",
            "--base_url", server.base_url, "--output", str(output), "--passages_per_language", "12",
            "--seed", "5", "--chunk_size", "2", "--concurrency", "2", "--max_retries", "2", "--timeout", "0.8",
            "--initial_backoff", "0.05", "--langid_languages", "en,de,fr", *extra]


def test_killed_run_resumes_to_the_same_file(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    with ChatServer(scripted) as server:
        assert job.main(_job_args(corpus, server, tmp_path / "whole.jsonl")) == 0
        cmd = [sys.executable, "-m", "polyret.jobs.generate_sap", *_job_args(corpus, server, tmp_path / "killed.jsonl")]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        state = tmp_path / "killed.jsonl.state.json"
        deadline = time.time() + 60
        while time.time() < deadline:
            if state.exists() and 8 <= json.loads(state.read_text())["progress"].get("done", 0):
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done = json.loads(state.read_text())["progress"]["done"]
        assert 8 <= done < 24, "the run must be killed half way"
        # A torn chunk at the end of the file (written after the last state) must be cut, not kept.
        with open(tmp_path / "killed.jsonl", "a", encoding="utf-8") as f:
            f.write('{"_id": "half-written')
        assert job.main(_job_args(corpus, server, tmp_path / "killed.jsonl")) == 0
    whole = (tmp_path / "whole.jsonl").read_bytes()
    assert whole and (tmp_path / "killed.jsonl").read_bytes() == whole
    assert (tmp_path / "killed.jsonl.rejected.jsonl").read_bytes() == (tmp_path / "whole.jsonl.rejected.jsonl").read_bytes()
    finished = json.loads((tmp_path / "killed.jsonl.state.json").read_text())
    assert finished["complete"] and finished["progress"]["done"] == 24


def test_restart_with_other_settings_is_refused(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    with ChatServer(scripted) as server:
        assert job.main(_job_args(corpus, server, tmp_path / "out.jsonl")) == 0
        before = (tmp_path / "out.jsonl").read_bytes()
        assert job.main(_job_args(corpus, server, tmp_path / "out.jsonl", ["--seed", "6"])) == 2
    assert "different settings or inputs; differs in config.seed (5 -> 6)" in capsys.readouterr().err
    assert (tmp_path / "out.jsonl").read_bytes() == before


def test_server_going_away_stops_the_run_and_keeps_what_was_written(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    answered = []

    def dies_after_six(body, attempt):
        answered.append(1)
        return scripted(body, attempt) if len(answered) <= 6 else Reply(status=0)  # drop the connection

    with ChatServer(dies_after_six) as server:
        assert job.main(_job_args(corpus, server, tmp_path / "out.jsonl")) == 1
    err = capsys.readouterr().err
    assert "cannot reach the LLM server" in err and "run the same command again to resume" in err
    state = json.loads((tmp_path / "out.jsonl.state.json").read_text())
    kept_before = (tmp_path / "out.jsonl").read_bytes()
    assert state["progress"]["done"] >= 2 and not state["complete"]
    with ChatServer(scripted) as server:  # back up: the same command finishes the file
        assert job.main(_job_args(corpus, server, tmp_path / "out.jsonl")) == 0
        assert job.main(_job_args(corpus, server, tmp_path / "whole.jsonl")) == 0
    resumed = (tmp_path / "out.jsonl").read_bytes()
    assert resumed.startswith(kept_before) and resumed == (tmp_path / "whole.jsonl").read_bytes()


def test_unreachable_server_is_a_clear_error(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.jsonl", n=2)
    rc = job.main(["--corpus", str(corpus), "--languages", "de", "--model", "m", "--base_url",
                   "http://127.0.0.1:9/v1", "--max_retries", "1", "--output", str(tmp_path / "out.jsonl")])
    assert rc == 1
    assert "cannot reach the LLM server at http://127.0.0.1:9/v1 after 2 attempts" in capsys.readouterr().err


def test_bad_inputs_name_file_line_and_field(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.jsonl", n=3)
    lines = corpus.read_text().splitlines()
    lines[1] = json.dumps({"_id": "p01", "title": "x", "text": "  "})
    bad_corpus = tmp_path / "bad.jsonl"
    bad_corpus.write_text("\n".join(lines) + "\n")
    base = ["--languages", "de", "--model", "m", "--base_url", "http://127.0.0.1:9/v1"]
    assert job.main(["--corpus", str(bad_corpus), *base, "--output", str(tmp_path / "a.jsonl")]) == 2
    assert f"{bad_corpus}:2: field 'text' is empty (passage 'p01')" in capsys.readouterr().err

    assert job.main(["--corpus", str(corpus), *base, "--languages", "sw", "--output", str(tmp_path / "b.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "no exemplars with 'en' passages and queries in 'sw'" in err and "add a column" in err
    # Nothing is written (and no request is made) when the inputs are bad.
    assert not (tmp_path / "a.jsonl").exists() and not (tmp_path / "b.jsonl").exists()


def test_monolingual_mode_uses_exemplars_in_the_passage_language(tmp_path):
    import csv
    import re

    with open(tmp_path / "miracl.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["S.No.", "Passage", "Summary", "Question", "Language"],
                                 ["1.0", "Der Rhein fließt durch Basel.", "Der Rhein fließt durch Basel.",
                                  "Durch welche Stadt fließt der Rhein?", "German"], ["", "", "", "", ""],
                                 ["1.0", "Le Rhône traverse Lyon.", "", "Quelle ville le Rhône traverse-t-il ?",
                                  "French"]])
    (tmp_path / "dewiki.jsonl").write_text("".join(
        json.dumps({"_id": f"d{i}", "title": f"Ort {i}", "text": f"Der Ort Nummer {i} liegt an einem großen See."}) + "\n"
        for i in range(3)), encoding="utf-8")

    def reply(body, attempt):
        number = re.findall(r"Ort Nummer (\d)", body["messages"][-1]["content"])[-1]
        return Reply(body=completion(f"Der Ort liegt an einem See.\nQuery (German): An welchem Gewässer liegt "
                                     f"der Ort mit der Nummer {number} eigentlich?"))

    with ChatServer(reply) as server:
        rc = job.main(["--mode", "monolingual", "--corpus", f"de={tmp_path / 'dewiki.jsonl'}", "--languages", "de",
                       "--exemplars", str(tmp_path / "miracl.csv"), "--model", "m", "--base_url", server.base_url,
                       "--langid_languages", "en,de,fr", "--output", str(tmp_path / "de.jsonl")])
    assert rc == 0
    user = server.requests[0]["messages"][-1]["content"]
    assert "Durch welche Stadt fließt der Rhein?" in user and "Rhône" not in user and "Query (German):" in user
    records = _read_jsonl(tmp_path / "de.jsonl")
    assert sorted(r["passage_id"] for r in records) == ["d0", "d1", "d2"]
    for r in records:
        assert r["code"] == "de" and r["text"].startswith("Der Ort Nummer " + r["passage_id"][1])
        assert r["query"].endswith(f"Nummer {r['passage_id'][1]} eigentlich?")
