"""generate_sap --prompt_mode summarize_then_ask|direct and --num_shots K (SWIM-X's prompt ablations), against
the scripted localhost chat server: what each prompt holds, and the records the replies give."""

import json
import re

from chat_server import ChatServer, Reply, completion
from sap_helpers import LANGUAGE_NAMES, asked_about, good_query, good_text, write_corpus
from polyret.jobs import generate_sap as job
from polyret.synthesis.exemplars import DEFAULT_EXEMPLARS, exemplars_for, read_exemplars


def _direct(body: dict, attempt: int) -> Reply:
    i, lang = asked_about(body)
    return Reply(body=completion(" " + good_query(i, lang)))


def _run(tmp_path, script, *flags):
    corpus = write_corpus(tmp_path / "corpus.jsonl", n=4)
    out = tmp_path / f"out{len(list(tmp_path.glob('out*.jsonl')))}.jsonl"
    with ChatServer(script) as server:
        rc = job.main(["--corpus", str(corpus), "--languages", "de", "--model", "scripted", "--base_url",
                       server.base_url, "--passages_per_language", "4", "--no_langid", "--output", str(out), *flags])
        requests = list(server.requests)
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()] if rc == 0 else []
    return rc, requests, records


def test_direct_mode_with_k_shots(tmp_path):
    rc, requests, records = _run(tmp_path, _direct, "--prompt_mode", "direct", "--num_shots", "2")
    assert rc == 0 and len(requests) == 4
    shots = exemplars_for(read_exemplars(DEFAULT_EXEMPLARS), "de", "en", DEFAULT_EXEMPLARS)[:2]
    for body in requests:
        user = body["messages"][-1]["content"]
        assert "Summary" not in user and "summary" not in body["messages"][0]["content"]
        assert user.count("Article:") == 3  # two shots and the passage asked about
        assert all(s.query in user for s in shots)
        assert user.rstrip().endswith(f"Query ({LANGUAGE_NAMES['de']}):")
    assert sorted((r["passage_id"], r["query"], r["summary"]) for r in records) == [
        (f"p{i:02d}", good_query(i, "de"), "") for i in range(4)]


def test_summarize_then_ask_shot_count(tmp_path):
    def sap(body, attempt):
        i, lang = asked_about(body)
        return Reply(body=completion(good_text(i, lang)))

    for k in (0, 1):
        rc, requests, records = _run(tmp_path, sap, "--num_shots", str(k))
        assert rc == 0
        for body in requests:
            user = body["messages"][-1]["content"]
            assert user.count("Article:") == k + 1
            # k shots, the open summary of the passage (and the zero-shot format line)
            assert len(re.findall(r"^Summary:", user, re.MULTILINE)) == k + 1 + (k == 0)
        assert all(r["summary"] for r in records) and len(records) == 4


def test_too_many_shots_is_one_line(tmp_path, capsys):
    available = len(exemplars_for(read_exemplars(DEFAULT_EXEMPLARS), "de", "en", DEFAULT_EXEMPLARS))
    rc, requests, _ = _run(tmp_path, _direct, "--num_shots", str(available + 1))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and requests == [] and len(err) == 1 and "--num_shots" in err[0]
