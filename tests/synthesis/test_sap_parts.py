"""Exemplar files, prompt parsing, filters, sampling and resumable files, each against a plain reference."""

import csv
import gzip
import heapq
import hashlib
import json
import random

import pytest

from polyret.io.formats import DataError
from polyret.synthesis.exemplars import exemplars_for, read_exemplars
from polyret.synthesis.filters import FilterConfig, QueryFilter
from polyret.synthesis.resumable import ResumableFiles
from polyret.synthesis.sampling import sample_passages
from polyret.synthesis.sap import ParseFailure, build_prompt, parse_reply


def _write_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    return path


def test_our_exemplar_file_covers_eight_languages():
    exemplars = read_exemplars()
    langs = {e.query_language for e in exemplars}
    assert langs == {"en", "de", "fr", "es", "ru", "ja", "zh", "ar"}
    assert all(e.passage_language == "en" and e.title and e.summary for e in exemplars)
    assert len(exemplars_for(exemplars, "ja", "en")) == 3


def test_wide_layout_as_published(tmp_path):
    """XOR-Retrieve / XTREME-UP prompt files: a junk first row, `Name (MT)` columns, empty and '-' cells."""
    path = _write_csv(tmp_path / "xor.csv", [
        ["", "", "18 Languages", "", ""],
        ["Article", "Summary", "English (Verified)", "Bengali (Verified)", "Farsi (MT)"],
        ["Passage one.", "Sum one.", "Q one?", "প্রশ্ন এক?", "-"],
        ["Passage two.", "Sum two.", "Q two?", "", "پرسش دو؟"],
    ])
    got = read_exemplars(path)
    assert [(e.query_language, e.passage, e.query) for e in got] == [
        ("en", "Passage one.", "Q one?"), ("bn", "Passage one.", "প্রশ্ন এক?"),
        ("en", "Passage two.", "Q two?"), ("fa", "Passage two.", "پرسش دو؟")]
    assert all(e.passage_language == "en" and e.title == "" for e in got)


def test_long_layout_as_published(tmp_path):
    """MIRACL prompt file: `S.No., Passage, Summary, Question, Language` with blank separator rows."""
    path = _write_csv(tmp_path / "miracl.csv", [
        ["S.No.", "Passage", "Summary", "Question", "Language"],
        ["1.0", "Ein Text.", "", "Eine Frage?", "German"],
        ["", "", "", "", ""],
        ["1.0", "نص.", "ملخص.", "سؤال؟", "Arabic"],
    ])
    got = read_exemplars(path)
    assert [(e.query_language, e.passage_language, e.summary) for e in got] == [("de", "de", ""), ("ar", "ar", "ملخص.")]
    assert exemplars_for(got, "de", "de")[0].query == "Eine Frage?"
    with pytest.raises(DataError, match="no exemplars with 'en' passages and queries in 'de'"):
        exemplars_for(got, "de", "en")


@pytest.mark.parametrize("rows, message", [
    ([["Article", "Summary", "German"], ["P.", "S.", "F?"], ["", "S.", "F2?"]], r"bad\.csv:3: field 'Article' is empty"),
    ([["Article", "Summary", "Klingon"], ["P.", "S.", "F?"]], r"bad\.csv:1: columns \['Klingon'\] name no known language"),
    ([["Text", "Notes"], ["P.", "S."]], r"bad\.csv: no header row"),
    ([["Passage", "Summary", "Question", "Language"], ["P.", "S.", "Q?", "Elvish"]], r"bad\.csv:2: field 'Language'"),
])
def test_bad_exemplar_files(tmp_path, rows, message):
    with pytest.raises(DataError, match=message):
        read_exemplars(_write_csv(tmp_path / "bad.csv", rows))


@pytest.mark.parametrize("reply, summary, query", [
    (" The lake is deep.\nQuery (German): Wie tief ist der See?", "The lake is deep.", "Wie tief ist der See?"),
    ("Summary: The lake is deep.\nQuery (German): Wie tief ist der See?\n\nArticle: another one\nSummary: x",
     "The lake is deep.", "Wie tief ist der See?"),
    ("**Summary:** It is deep.\n\n**Query (German):** \"Wie tief ist der See?\"", "It is deep.", "Wie tief ist der See?"),
    ("It is deep.\nQuestion:\n  «Quelle est la profondeur ?»", "It is deep.", "Quelle est la profondeur ?"),
    ("```\nA.\nquery: 湖の深さは？\n```", "A.", "湖の深さは？"),
])
def test_parse_reply(reply, summary, query):
    assert parse_reply(reply) == (summary, query)


@pytest.mark.parametrize("reply, reason", [
    ("Just some text without the label.", "no_query"),
    ("Summary.\nQuery (German):   \n\nArticle: next", "empty_query"),
    ("", "no_query"),
])
def test_parse_failures(reply, reason):
    with pytest.raises(ParseFailure) as e:
        parse_reply(reply)
    assert e.value.reason == reason


def test_prompt_shows_exemplars_then_the_open_passage():
    shots = exemplars_for(read_exemplars(), "fr", "en")
    messages = build_prompt(shots, "Title", "Body text.", "fr")
    user = messages[-1]["content"]
    assert user.count("Query (French):") == 3 and user.endswith("Article: Title\nBody text.\nSummary:")
    assert user.index(shots[2].query) < user.index("Body text.")


def test_filters():
    f = QueryFilter(FilterConfig(langid_candidates=("en", "de", "fr", "ja")))
    passage = "The castle was built in 1200 by the count of the valley and rebuilt after the great fire of 1650."
    assert f.reject_reason("Wann wurde die Burg gebaut und von wem?", passage, "de") is None
    assert f.reject_reason("When was the castle built and by whom?", passage, "de") == "wrong_language"
    assert f.reject_reason("城はいつ建てられましたか？", passage, "ja") is None
    assert f.reject_reason("the count of the valley and rebuilt after the great fire?", passage, "en") == "copies_passage"
    assert f.reject_reason("Who rebuilt the castle after the great fire?", passage, "en") is None
    assert f.reject_reason("I'm sorry, I cannot write a question.", passage, "en") == "refusal"
    assert f.reject_reason("Wo?", passage, "de") == "too_short"
    assert f.reject_reason("x" * 301, passage, "de") == "too_long"
    assert f.reject_reason("   ", passage, "de") == "empty_query"
    # Languages lingua does not know are not checked.
    assert f.reject_reason("Какой замок построили?", passage, "xx") is None
    assert not f.is_duplicate("Wann wurde die Burg gebaut?", "de")
    assert f.is_duplicate("wann wurde die burg gebaut", "de") and not f.is_duplicate("Wann wurde die Burg gebaut?", "fr")
    unsafe = QueryFilter(FilterConfig(check_language=False), safety=lambda q: "poison" in q)
    assert unsafe.reject_reason("How do I make poison at home?", passage, "en") == "unsafe"


def _corpus(path, n):
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"_id": f"d{i}", "title": "", "text": f"text {i}"}) + "\n")
    return path


def test_sampling_is_the_n_smallest_hash_keys_whatever_the_order(tmp_path):
    corpus = _corpus(tmp_path / "c.jsonl", 500)
    got = sample_passages({"de": corpus, "fr": corpus}, ["de", "fr"], 20, seed=3)
    for lang in ("de", "fr"):
        keys = {f"d{i}": int.from_bytes(hashlib.blake2b(f"3\x1f{lang}\x1fd{i}".encode(), digest_size=8).digest(), "big")
                for i in range(500)}
        expected = [pid for _, pid in heapq.nsmallest(20, ((k, p) for p, k in keys.items()))]
        assert [item["passage_id"] for item in got if item["language"] == lang] == expected
    assert {i["passage_id"] for i in got if i["language"] == "de"} != {i["passage_id"] for i in got if i["language"] == "fr"}
    # Shuffled and split into shards: the same sample.
    lines = (tmp_path / "c.jsonl").read_text().splitlines()
    random.Random(0).shuffle(lines)
    for s in range(3):
        (tmp_path / f"shard-{s}.jsonl").write_text("\n".join(lines[s::3]) + "\n")
    assert sample_passages({"de": str(tmp_path / "shard-*.jsonl"), "fr": corpus}, ["de", "fr"], 20, seed=3) == got
    assert len(sample_passages({"de": corpus}, ["de"], 1000, seed=3)) == 500  # up to N


def test_sampling_is_uniform(tmp_path):
    corpus = _corpus(tmp_path / "c.jsonl", 50)
    counts = [0] * 50
    for seed in range(400):
        for item in sample_passages({"de": corpus}, ["de"], 10, seed):
            counts[int(item["passage_id"][1:])] += 1
    # Each passage is picked with probability 1/5: 80 of 400 draws, sd 8.
    assert all(40 < c < 120 for c in counts)


def test_resumable_files_cut_a_torn_chunk(tmp_path):
    paths = {"a": tmp_path / "a.jsonl", "b": tmp_path / "b.jsonl.gz"}
    files = ResumableFiles(paths, tmp_path / "state.json", {"x": 1})
    files.append({"a": ["1", "2"], "b": ["x"]}, {"done": 2})
    with open(paths["a"], "a") as f:
        f.write("3\n4")  # written after the last state, then the process died
    with open(paths["b"], "ab") as f:
        f.write(gzip.compress(b"torn\n")[:10])
    again = ResumableFiles(paths, tmp_path / "state.json", {"x": 1})
    assert again.progress == {"done": 2} and list(again.lines("a")) == ["1", "2"] and list(again.lines("b")) == ["x"]
    again.append({"a": ["3"], "b": ["y"]}, {"done": 3})
    assert paths["a"].read_text() == "1\n2\n3\n"
    assert gzip.decompress(paths["b"].read_bytes()) == b"x\ny\n"
    with pytest.raises(ValueError, match="different settings"):
        ResumableFiles(paths, tmp_path / "state.json", {"x": 2})
    with pytest.raises(ValueError, match="refusing to append"):
        ResumableFiles({"a": paths["a"]}, tmp_path / "other_state.json", {"x": 1})


def test_filter_fingerprint_of_runs_written_before_drop_duplicates_is_unchanged():
    """A run written before `drop_duplicates` existed recorded the other fields only; it must still resume."""
    import dataclasses
    from polyret.synthesis.filters import filter_fingerprint
    before = {f.name: getattr(FilterConfig(), f.name) for f in dataclasses.fields(FilterConfig)
              if f.name != "drop_duplicates"}
    assert filter_fingerprint(None) == filter_fingerprint(FilterConfig()) == before
    assert filter_fingerprint(FilterConfig(drop_duplicates=False)) == {**before, "drop_duplicates": False}
