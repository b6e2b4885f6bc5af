"""The Beam pipeline on DirectRunner writes the same records as the plain pipeline, with duplicates dropped
per language or left to the caller (`FilterConfig.drop_duplicates=False`, as `polyret adapt` does)."""

import glob
import json

import pytest

from chat_server import ChatServer
from sap_helpers import scripted, write_corpus
from polyret.jobs import generate_sap as job
from polyret.synthesis.exemplars import read_exemplars
from polyret.synthesis.filters import FilterConfig, normalize_query
from polyret.synthesis.generate import SapConfig, generate_sap
from polyret.synthesis.llm import BackendConfig

LANGS = ("de", "fr")


@pytest.mark.parametrize("drop_duplicates", [True, False])
def test_beam_direct_runner_matches_plain_pipeline(tmp_path, capsys, drop_duplicates):
    write_corpus(tmp_path / "all.jsonl")
    lines = (tmp_path / "all.jsonl").read_text().splitlines()
    for s in range(3):  # sharded input
        (tmp_path / f"corpus-{s}.jsonl").write_text("\n".join(lines[s::3]) + "\n")
    filters = FilterConfig(langid_candidates=("en", "de", "fr"), drop_duplicates=drop_duplicates)
    config = SapConfig(LANGS, passages_per_language=9, seed=11, chunk_size=4)
    with ChatServer(scripted) as server:
        backend = BackendConfig(model="scripted", base_url=server.base_url, max_retries=2, timeout_s=0.8,
                                initial_backoff_s=0.05)
        plain = generate_sap({l: tmp_path / "all.jsonl" for l in LANGS}, read_exemplars(), backend.build(), config,
                             tmp_path / "plain.jsonl", filters)
        rc = job.main(["--runner", "beam", "--beam_args=--runner=DirectRunner --direct_num_workers=1",
                       "--num_shards", "2", "--corpus", str(tmp_path / "corpus-*.jsonl"), "--languages", "de,fr",
                       "--passages_per_language", "9", "--seed", "11", "--chunk_size", "4", "--model", "scripted",
                       "--base_url", server.base_url, "--max_retries", "2", "--timeout", "0.8",
                       "--initial_backoff", "0.05", "--langid_languages", "en,de,fr",
                       *([] if drop_duplicates else ["--keep_duplicates"]),
                       "--output", str(tmp_path / "beam" / "sap")])
    assert rc == 0
    counts = json.loads(capsys.readouterr().out.split("SAP (beam): ")[1])
    shards = sorted(glob.glob(str(tmp_path / "beam" / "sap-*-of-00002.jsonl")))
    assert len(shards) == 2
    beam_records = [json.loads(line) for shard in shards for line in open(shard, encoding="utf-8")]
    plain_records = [json.loads(line) for line in open(tmp_path / "plain.jsonl", encoding="utf-8")]
    key = lambda r: r["_id"]
    assert sorted(beam_records, key=key) == sorted(plain_records, key=key) and plain_records
    assert counts.pop("kept") == plain["kept"]
    assert {k.removeprefix("dropped_"): v for k, v in counts.items()} == plain["dropped"]
    queries = [(r["code"], normalize_query(r["query"])) for r in plain_records]
    if drop_duplicates:
        assert plain["dropped"]["duplicate"] > 0 and len(set(queries)) == len(queries)
    else:
        assert "duplicate" not in plain["dropped"] and len(set(queries)) < len(queries)
