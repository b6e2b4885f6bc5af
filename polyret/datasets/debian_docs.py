"""A real-text cross-lingual retrieval set from the Debian Reference, which Debian ships translated.

Source: the packages `debian-reference-{en,de,es,fr,id,it,ja,pt,zh-cn,zh-tw}` (Osamu Aoki et al., GPL-2+;
translations by the Debian community), fetched with `apt-get download` and unpacked with `dpkg -x` (no
root needed). Their DocBook HTML keeps the same section anchors (`<a id="_stage_1_the_uefi"/>`) in every
language, which aligns the sections across languages without any translation on our side.

The task: a section heading is the query, the section's own prose (its paragraphs, lists and notes,
not its subsections, code blocks or tables) is the relevant document, among all sections of the
document language. Documents carry no title, so the heading is not repeated in its document.
  - cross-lingual `en-X`: English heading -> the section in language X;
  - monolingual `X-X` (and `en-en`): heading in X -> the section in X.
Sections are dropped where the translation is missing (more than half of the prose identical to the
English), where the prose is shorter than 100 characters, or where the heading is ambiguous (the same
heading text for several sections in that language). Train/test: a stable hash of the section anchor
puts each section (query and its document) in one split for every pair, so no test section, in any
language, was seen in training; the corpus of each pair holds all its sections (test queries rank
train sections too, as distractors).

Output (BEIR layout, loadable with `polyret.io.benchmarks.load_beir(OUT/pairs/en-de, split)`):
  OUT/pairs/{q}-{d}/corpus.jsonl     {"_id", "title": "", "text", "lang"}
  OUT/pairs/{q}-{d}/queries.jsonl    {"_id": "q_<anchor>", "text", "lang"}   (train and test queries)
  OUT/pairs/{q}-{d}/qrels/{train,test}.tsv   query-id, corpus-id, score (1)
  OUT/pairs/{q}-{d}/train_pairs.jsonl  SWIM-IR layout (_id, lang, code, query, title, text) of the train split
  OUT/sections.jsonl   the aligned table: anchor, chapter, split, {lang: {"heading", "text"}}
  OUT/sentences/{lang}.txt  every unique sentence of the prose (ANN / encoding benchmarks)
  OUT/stats.json       sizes per pair and split
"""

from __future__ import annotations

import glob
import hashlib
import json
import re
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

LANGUAGES = ("en", "de", "es", "fr", "id", "it", "ja", "pt", "zh-cn", "zh-tw")
PACKAGE = "debian-reference-{lang}"
MIN_TEXT_CHARS = 100
MAX_UNTRANSLATED = 0.5
TEST_FRACTION = 0.4

_HEADING_NUMBER = re.compile(r"^\s*(?:[A-Z]\.)?[\d.]*\d\.?\s+|^\s*[A-Z]\.\s+")
_PROSE_BLOCKS = {"p", "li", "dd", "dt", "td", "th", "blockquote", "title"}
_SKIPPED = {"pre", "script", "style", "table"}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[^\s])|(?<=[。！？])")


# ------------------------------------------------------------------------------------------ fetching

def fetch_package(package: str, cache: str | Path) -> Path:
    """`apt-get download` + `dpkg -x` one package into CACHE/unpacked/PACKAGE (cached) -> that root.

    The same cache layout as benchmarks/real_text_corpus.py (CACHE/debs, CACHE/unpacked/PKG/.done).
    """
    cache = Path(cache)
    root = cache / "unpacked" / package
    if (root / ".done").exists():
        return root
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    if not glob.glob(str(debs / f"{package}_*.deb")):
        result = subprocess.run(["apt-get", "download", package], cwd=debs, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"apt-get download {package} failed: {result.stderr.strip()[-300:]}")
    deb = sorted(glob.glob(str(debs / f"{package}_*.deb")))[-1]
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(["dpkg", "-x", deb, str(root)], check=True, capture_output=True)
    (root / ".done").write_text("")
    return root


def reference_pages(root: Path, lang: str) -> list[Path]:
    """The chapter/appendix pages of one language (not the index, preface or the one-page edition)."""
    pages = sorted((root / "usr/share/debian-reference").glob(f"*.{lang}.html"))
    return [p for p in pages if re.match(r"(ch\d+|ap[a-z])\.", p.name)]


# ------------------------------------------------------------------------------------------ parsing

@dataclass
class Section:
    anchor: str
    heading: str
    chapter: str
    paragraphs: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(self.paragraphs)


class _SectionParser(HTMLParser):
    """DocBook XHTML -> sections: heading text from `<hN class="title"><a id=.../>`, prose of each
    `<div class="section">` excluding its nested sections, code (`pre`) and tables."""

    def __init__(self, chapter: str):
        super().__init__(convert_charrefs=True)
        self.chapter = chapter
        self.sections: list[Section] = []
        self.div_stack: list[Section | None] = []  # one entry per open <div>: its Section or None
        self.skip = 0
        self.in_heading: Section | None = None
        self.heading_depth = 0
        self.buffer: list[str] = []

    def _current(self) -> Section | None:
        for entry in reversed(self.div_stack):
            if entry is not None:
                return entry
        return None

    def _flush(self) -> None:
        text = " ".join("".join(self.buffer).split())
        self.buffer = []
        section = self._current()
        if text and section is not None and not self.in_heading:
            section.paragraphs.append(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "div":
            self._flush()
            if attrs.get("class") == "section":
                section = Section(anchor="", heading="", chapter=self.chapter)
                self.sections.append(section)
                self.div_stack.append(section)
            else:
                self.div_stack.append(None)
            return
        if tag in _SKIPPED:
            self._flush()
            self.skip += 1
        elif re.fullmatch(r"h[1-6]", tag) and attrs.get("class") == "title":
            self._flush()
            section = self._current()
            if section is not None and not section.anchor:
                self.in_heading = section
        elif tag == "a" and self.in_heading is not None and "id" in attrs and not self.in_heading.anchor:
            self.in_heading.anchor = attrs["id"]
        elif tag in _PROSE_BLOCKS or tag == "br":
            self._flush()

    def handle_endtag(self, tag):
        if tag == "div":
            self._flush()
            if self.div_stack:
                self.div_stack.pop()
        elif tag in _SKIPPED:
            self.skip = max(0, self.skip - 1)
            self.buffer = []
        elif re.fullmatch(r"h[1-6]", tag) and self.in_heading is not None:
            self.in_heading.heading = _HEADING_NUMBER.sub("", " ".join("".join(self.buffer).split()))
            self.buffer = []
            self.in_heading = None
        elif tag in _PROSE_BLOCKS:
            self._flush()

    def handle_data(self, data):
        if not self.skip:
            self.buffer.append(data)


def parse_sections(html: str, chapter: str = "") -> list[Section]:
    """Every anchored section of one DocBook page, in document order."""
    parser = _SectionParser(chapter)
    parser.feed(html)
    parser.close()
    return [s for s in parser.sections if s.anchor and s.heading]


def read_language(root: Path, lang: str) -> dict[str, Section]:
    sections: dict[str, Section] = {}
    for page in reference_pages(root, lang):
        for s in parse_sections(page.read_text(encoding="utf-8"), chapter=page.name.split(".")[0]):
            sections.setdefault(s.anchor, s)
    return sections


# ------------------------------------------------------------------------------------------ aligning

def untranslated_fraction(section: Section, english: Section) -> float:
    """Share of the section's prose (in characters) made of paragraphs identical to the English ones."""
    same = set(english.paragraphs)
    total = sum(len(p) for p in section.paragraphs)
    return sum(len(p) for p in section.paragraphs if p in same) / max(total, 1)


def split_of(anchor: str, test_fraction: float = TEST_FRACTION) -> str:
    """A stable split from the anchor alone (the same in every language and every run)."""
    bucket = int(hashlib.sha256(anchor.encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if bucket < test_fraction else "train"


def usable_sections(by_lang: Mapping[str, Mapping[str, Section]]) -> dict[str, dict[str, Section]]:
    """lang -> anchor -> section, keeping translated sections with enough prose and unambiguous headings."""
    english = by_lang["en"]
    out: dict[str, dict[str, Section]] = {}
    for lang, sections in by_lang.items():
        kept = {}
        for anchor, s in sections.items():
            if anchor not in english or len(s.text) < MIN_TEXT_CHARS or len(english[anchor].text) < MIN_TEXT_CHARS:
                continue
            if lang != "en" and untranslated_fraction(s, english[anchor]) > MAX_UNTRANSLATED:
                continue
            kept[anchor] = s
        headings: dict[str, int] = {}
        for s in kept.values():
            headings[s.heading.casefold()] = headings.get(s.heading.casefold(), 0) + 1
        out[lang] = {a: s for a, s in kept.items() if headings[s.heading.casefold()] == 1}
    return out


def sentences(text: str) -> Iterator[str]:
    """Sentences of prose: split after . ! ? (followed by space) and after CJK full stops."""
    for paragraph in text.split("\n"):
        for s in _SENTENCE_END.split(paragraph):
            s = s.strip()
            if len(s) >= 10:
                yield s


# ------------------------------------------------------------------------------------------ writing

def _write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def section_id(anchor: str) -> str:
    """A section's id in the files: its anchor with whitespace as '_' (a few DocBook anchors hold a space,
    which TREC run and qrels lines cannot carry). The split stays a hash of the anchor itself."""
    return "_".join(anchor.split())


def write_pair(out: Path, query_lang: str, doc_lang: str, usable: Mapping[str, Mapping[str, Section]],
               test_fraction: float = TEST_FRACTION) -> dict[str, int]:
    """One language pair in BEIR layout -> its sizes."""
    docs, queries_src = usable[doc_lang], usable[query_lang]
    folder = out / "pairs" / f"{query_lang}-{doc_lang}"
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    n_docs = _write_jsonl(folder / "corpus.jsonl", ({"_id": section_id(a), "title": "", "text": s.text,
                                                     "lang": doc_lang} for a, s in docs.items()))
    anchors = [a for a in queries_src if a in docs]
    _write_jsonl(folder / "queries.jsonl", ({"_id": f"q_{section_id(a)}", "text": queries_src[a].heading,
                                             "lang": query_lang} for a in anchors))
    sizes = {"corpus": n_docs}
    for split in ("train", "test"):
        chosen = [a for a in anchors if split_of(a, test_fraction) == split]
        with open(folder / "qrels" / f"{split}.tsv", "w", encoding="utf-8") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            for a in chosen:
                f.write(f"q_{section_id(a)}\t{section_id(a)}\t1\n")
        sizes[f"{split}_queries"] = len(chosen)
    _write_jsonl(folder / "train_pairs.jsonl", (
        {"_id": f"q_{section_id(a)}", "lang": doc_lang, "code": query_lang, "query": queries_src[a].heading, "title": "",
         "text": docs[a].text} for a in anchors if split_of(a, test_fraction) == "train"))
    return sizes


def default_pairs(languages: Sequence[str]) -> list[tuple[str, str]]:
    """en-en, then en-X and X-X for every other language."""
    others = [l for l in languages if l != "en"]
    return [("en", "en")] + [("en", l) for l in others] + [(l, l) for l in others]


def build(out: str | Path, cache: str | Path, languages: Sequence[str] = LANGUAGES,
          pairs: Sequence[tuple[str, str]] | None = None, test_fraction: float = TEST_FRACTION) -> dict:
    """Fetch, parse, align and write the set (see the module docstring) -> stats (also OUT/stats.json)."""
    if "en" not in languages:
        raise ValueError("languages must include 'en' (the English original aligns the translations)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    by_lang = {lang: read_language(fetch_package(PACKAGE.format(lang=lang), cache), lang) for lang in languages}
    usable = usable_sections(by_lang)
    anchors = [a for a in by_lang["en"] if any(a in usable[l] for l in languages)]
    _write_jsonl(out / "sections.jsonl", (
        {"anchor": a, "chapter": by_lang["en"][a].chapter, "split": split_of(a, test_fraction),
         **{l: {"heading": usable[l][a].heading, "text": usable[l][a].text} for l in languages if a in usable[l]}}
        for a in anchors))
    (out / "sentences").mkdir(exist_ok=True)
    sentence_counts = {}
    for lang in languages:
        seen = dict.fromkeys(s for sec in by_lang[lang].values() for s in sentences(sec.text))
        (out / "sentences" / f"{lang}.txt").write_text("".join(s + "\n" for s in seen), encoding="utf-8")
        sentence_counts[lang] = len(seen)
    stats = {"source": [PACKAGE.format(lang=l) for l in languages], "test_fraction": test_fraction,
             "sections_parsed": {l: len(by_lang[l]) for l in languages},
             "sections_usable": {l: len(usable[l]) for l in languages}, "sentences": sentence_counts,
             "pairs": {f"{q}-{d}": write_pair(out, q, d, usable, test_fraction)
                       for q, d in (pairs or default_pairs(languages))}}
    (out / "stats.json").write_text(json.dumps(stats, indent=2))
    return stats
