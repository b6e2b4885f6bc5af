"""The Debian Reference retrieval set: section parsing on a hand-checked DocBook page, alignment and the
split rules, and a build from the real packages (apt-get download; skipped where apt cannot fetch)."""

import json
import shutil
import subprocess

import pytest

from polyret.datasets import debian_docs as dd
from polyret.io.benchmarks import load_beir

PAGE = """<?xml version="1.0" encoding="UTF-8"?>
<html xmlns="http://www.w3.org/1999/xhtml"><head><title>Chapter 3. {chapter}</title></head><body>
<div class="chapter"><div class="titlepage"><h1 class="title"><a id="_chap"/>Chapter 3. {chapter}</h1></div>
<p>Chapter intro is outside every section.</p>
<div class="section"><div class="titlepage"><div><div>
  <h2 class="title"><a id="_overview"/>3.1. {h1}</h2></div></div></div>
  <p>{p1} <code class="literal">apt-get</code> {p1b}</p>
  <pre class="screen">$ sudo apt-get update</pre>
  <div class="table"><p class="title"><b>{caption}</b></p><table><tr><td>cell</td></tr></table></div>
  <div class="section"><div class="titlepage"><div><div>
    <h3 class="title"><a id="_stage_1"/>3.1.1. {h2}</h3></div></div></div>
    <div class="note"><p>{note}</p></div>
    <ul><li><p>{li}</p></li></ul>
  </div>
  <p>{p2}</p>
</div>
<div class="section"><div class="titlepage"><div><div>
  <h2 class="title"><a id="_appendix_like"/>A.2. {h3}</h2></div></div></div>
  <p>{p3}</p>
</div>
</div></body></html>"""

EN = dict(chapter="The system initialization", h1="An overview", p1="The computer runs", p1b="first.",
          caption="Table 3.1. List of loaders", h2="Stage 1: the UEFI", note="UEFI is a firmware interface.",
          li="It starts the boot loader.", p2="After the subsection.", h3="Other", p3="Last words here.")


def test_sections_are_parsed_with_their_own_prose_only():
    sections = dd.parse_sections(PAGE.format(**EN), chapter="ch03")
    assert [(s.anchor, s.heading) for s in sections] == [
        ("_overview", "An overview"), ("_stage_1", "Stage 1: the UEFI"), ("_appendix_like", "Other")]
    # Inline code stays in its sentence; the <pre> block, the table cells and the subsection do not.
    assert sections[0].paragraphs == ["The computer runs apt-get first.", "Table 3.1. List of loaders",
                                      "After the subsection."]
    assert sections[1].paragraphs == ["UEFI is a firmware interface.", "It starts the boot loader."]
    assert sections[2].text == "Last words here." and sections[0].chapter == "ch03"


def _sections(text_by_anchor, heading_by_anchor=None):
    heading_by_anchor = heading_by_anchor or {a: f"Heading {a}" for a in text_by_anchor}
    return {a: dd.Section(a, heading_by_anchor[a], "ch01", list(t)) for a, t in text_by_anchor.items()}


def test_untranslated_short_and_ambiguous_sections_are_dropped():
    long = "x" * 120
    en = _sections({"a": [long + "a"], "b": [long + "b"], "c": ["short"], "d": [long + "d"], "e": [long + "e"]},
                   {"a": "A", "b": "B", "c": "C", "d": "Same", "e": "Same"})
    de = _sections({"a": [long + "A-de"], "b": [long + "b", "kurz"], "c": ["x" * 200], "d": [long + "D"]},
                   {"a": "A", "b": "B", "c": "C", "d": "D"})
    usable = dd.usable_sections({"en": en, "de": de})
    assert sorted(usable["en"]) == ["a", "b"]  # c: too short; d, e: the same English heading
    assert sorted(usable["de"]) == ["a", "d"]  # b: its prose is the English one; c: English too short


def test_split_is_stable_and_about_the_asked_fraction():
    anchors = [f"_section_{i}" for i in range(2000)]
    splits = [dd.split_of(a) for a in anchors]
    assert splits == [dd.split_of(a) for a in anchors]
    assert abs(splits.count("test") / 2000 - dd.TEST_FRACTION) < 0.04


@pytest.fixture(scope="module")
def real_set(tmp_path_factory):
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        pytest.skip("needs apt-get and dpkg (Debian)")
    cache = tmp_path_factory.mktemp("apt_cache")
    out = tmp_path_factory.mktemp("set")
    try:
        stats = dd.build(out, cache, languages=("en", "de", "ja"))
    except (RuntimeError, subprocess.CalledProcessError) as e:
        pytest.skip(f"Debian packages not fetchable here: {e}")
    return out, stats


def test_real_debian_reference_set(real_set):
    out, stats = real_set
    assert set(stats["pairs"]) == {"en-en", "en-de", "en-ja", "de-de", "ja-ja"}
    assert stats["sections_usable"]["en"] > 300 and stats["sections_usable"]["de"] > 300
    sections = [json.loads(line) for line in open(out / "sections.jsonl", encoding="utf-8")]
    by_anchor = {dd.section_id(s["anchor"]): s for s in sections}  # ids: anchors without whitespace
    test_anchors = set()
    for pair in stats["pairs"]:
        q_lang, d_lang = pair.split("-")
        train, test = load_beir(out / "pairs" / pair, "train"), load_beir(out / "pairs" / pair, "test")
        assert len(test.qrels) == stats["pairs"][pair]["test_queries"] > 50
        assert not set(train.qrels) & set(test.qrels)
        for split, bench in (("train", train), ("test", test)):
            for qid, rel in bench.qrels.items():
                (anchor,) = rel
                assert qid == f"q_{anchor}" and anchor in bench.corpus and by_anchor[anchor]["split"] == split
                assert len(qid.split()) == len(anchor.split()) == 1  # TREC run lines carry them
                # The query is the heading in the query language, the document the prose in the document
                # language, both taken from the page of that language.
                assert bench.queries[qid] == by_anchor[anchor][q_lang]["heading"]
                assert bench.corpus[anchor].strip() == by_anchor[anchor][d_lang]["text"].strip()
                assert bench.query_languages[qid] == q_lang
                if split == "test":
                    test_anchors.add(anchor)
    # No test section is a training section in any pair.
    train_anchors = {json.loads(l)["_id"][2:] for p in stats["pairs"]
                     for l in open(out / "pairs" / p / "train_pairs.jsonl", encoding="utf-8")}
    assert train_anchors and not train_anchors & test_anchors
    # Translations really are translations: German prose differs from the English of the same section.
    both = [s for s in sections if "en" in s and "de" in s]
    assert sum(s["en"]["text"] != s["de"]["text"] for s in both) == len(both)
    assert sum(1 for _ in open(out / "sentences" / "ja.txt", encoding="utf-8")) > 1000
