"""An LLM server whose error bodies echo the Authorization header must not put the API key anywhere:
not in `<output>.rejected.jsonl`, the job's stderr, its log file or its one-line errors."""

import json

from chat_server import ChatServer, Reply
from sap_helpers import asked_about, scripted, write_corpus
from polyret.jobs import generate_sap as job

KEY = "sk-test-0123456789abcdefSECRET"
ECHO = '{"error": {"message": "bad request from client; headers: Authorization: {authorization}", "type": "x"}}'


def _leaky(body, attempt):
    number, _ = asked_about(body)
    if number == 1:  # a 400 whose body echoes the header: not retried, rejected at once
        return Reply(status=400, body=ECHO, echo_authorization=True)
    if number == 2:  # 500s every time: retried, then given up with the last error
        return Reply(status=500, body=ECHO, echo_authorization=True)
    return scripted(body, attempt)


def test_api_key_echoed_by_the_server_is_redacted_everywhere(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("POLYRET_TEST_API_KEY", KEY)
    corpus = write_corpus(tmp_path / "corpus.jsonl", n=4)
    out = tmp_path / "out.jsonl"
    with ChatServer(_leaky) as server:
        rc = job.main(["--corpus", str(corpus), "--languages", "de", "--model", "scripted", "--base_url",
                       server.base_url, "--api_key_env", "POLYRET_TEST_API_KEY", "--output", str(out),
                       "--passages_per_language", "4", "--max_retries", "1", "--initial_backoff", "0.01",
                       "--langid_languages", "en,de,fr"])
        sent = set(server.auth_headers)
    captured = capsys.readouterr()
    assert rc == 0
    assert sent == {f"Bearer {KEY}"}  # the key really went out, so the server really echoed it
    rejected = [json.loads(line) for line in out.with_name(out.name + ".rejected.jsonl").read_text().splitlines()]
    echoed = [r["error"] for r in rejected if r["reason"] == "llm_error" and "Authorization" in r["error"]]
    assert len(echoed) == 2 and all("Authorization: Bearer [REDACTED]" in e for e in echoed), rejected
    written = {p.name: p.read_text() for p in tmp_path.iterdir() if p.is_file()}
    assert "out.jsonl.log" in written
    for name, text in {**written, "stdout": captured.out, "stderr": captured.err}.items():
        assert KEY not in text, name
    assert "LLM request failed" in captured.err  # the failures were reported, redacted


def test_unreachable_server_error_is_one_redacted_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("POLYRET_TEST_API_KEY", KEY)
    corpus = write_corpus(tmp_path / "corpus.jsonl", n=2)
    with ChatServer(lambda body, attempt: Reply(status=401, body=ECHO, echo_authorization=True)) as server:
        rc = job.main(["--corpus", str(corpus), "--languages", "de", "--model", "m", "--base_url", server.base_url,
                       "--api_key_env", "POLYRET_TEST_API_KEY", "--output", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err
    assert rc == 1 and "refused the API key from $POLYRET_TEST_API_KEY (HTTP 401)" in err
    assert KEY not in err and "Traceback" not in err
