"""Benchmarks as they are published, read into one shape: corpus, queries, qrels, query languages and
(XOR-Retrieve) gold answers.

`load_benchmark(spec)` takes
- an ir_datasets id (`neuclir/1/fa/trec-2022`, `mmarco/v2/de/dev`, `mr-tydi/sw/test`, `hc4/fa/test`,
  `msmarco-passage/dev/small`, `beir/scifact/test`, ...; `irds:` prefix optional): ir_datasets downloads
  and caches the files (set IR_DATASETS_HOME to point it at a local copy);
- a BEIR folder (`corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv` with its header row);
- a MIRACL language folder as released on the Hugging Face Hub (`miracl-v1.0-<lang>/` with
  `topics/topics.miracl-v1.0-<lang>-<split>.tsv` and `qrels/qrels.miracl-v1.0-<lang>-<split>.tsv`), its
  corpus (`miracl-corpus-v1.0-<lang>/docs-*.jsonl.gz` or parquet) beside it or in `corpus/`;
- an XOR-Retrieve folder: the question file (`xor_*_retrieve*.jsonl`: `id, lang, question, answers`) and the
  2019-02-01 English Wikipedia passages the XOR-Retrieve README asks for, `enwiki_20190201_w100.tsv` (its DPR
  baseline's file), or DPR's `psgs_w100.tsv` (2018-12-20); `Benchmark.source["corpus"]` names the one read;
- an XTREME-UP retrieval task folder as released (`retrieval_cross_lang/` or `retrieval_in_lang/`:
  `index.jsonl` `{id, title, context}` and `<split>/<lang>.jsonl` `{id, title, context, question}`, the `id`
  being the gold passage's); query ids are `<lang>-<line>`, one relevant passage each (MRR@10 = `RR@10`);
- a CLEF ad hoc folder in the published layout (ir_datasets has no CLEF 2000-2003 ids): `docs/` (SGML
  `<DOC><DOCNO>...</DOCNO>...</DOC>`, files optionally gzipped), `topics/` (SGML `<top>` with `<num>` and
  language-tagged `<EN-title>`, `<EN-desc>`, `<EN-narr>`) and `qrels/` (TREC qrels).
TREC-style topics (NeuCLIR, HC4, CLEF) are read with `query_field`: title (default), description or
title+description.
Files given one by one (`load_files`) may be JSONL, TSV (with or without header) or parquet.
"""

from __future__ import annotations

import gzip
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping

from polyret.io.formats import (DataError, iter_jsonl, iter_records, read_id_text, read_languages, read_qrels)


class TitledCorpus(Mapping):
    """{docid: "title text"} computed on access from separate titles and texts, so the passage text
    alone (what XOR-Retrieve's R@kt reads) is kept without a second copy of the corpus."""

    def __init__(self, texts: dict[str, str], titles: dict[str, str]):
        self.texts, self.titles = texts, titles

    def __getitem__(self, docid: str) -> str:
        text = self.texts[docid]
        title = self.titles.get(docid)
        return f"{title} {text}" if title else text

    def __iter__(self) -> Iterator[str]:
        return iter(self.texts)

    def __len__(self) -> int:
        return len(self.texts)

    def __contains__(self, docid: object) -> bool:
        return docid in self.texts


class CorpusIds(Mapping):
    """The ids of a corpus read without its texts (evaluate on precomputed vectors needs only the ids);
    asking for a text is an error, never an empty string."""

    def __init__(self, ids: dict[str, None]):
        self.ids = ids

    def __getitem__(self, docid: str) -> str:
        raise KeyError(f"{docid!r}: the corpus was read for its ids only, without texts")

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, docid: object) -> bool:
        return docid in self.ids


@dataclass
class Benchmark:
    name: str
    corpus: TitledCorpus | CorpusIds
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)
    query_languages: dict[str, str] = field(default_factory=dict)
    answers: dict[str, list[str]] = field(default_factory=dict)
    source: dict[str, str] = field(default_factory=dict)  # what was read, for error messages and outputs

    @property
    def passage_texts(self) -> dict[str, str]:
        return self.corpus.texts


def read_corpus(paths: list[Path] | Path, texts: bool = True) -> TitledCorpus | CorpusIds:
    """One corpus from one or more files (shards); duplicate ids and empty texts are errors. With
    `texts=False` only the ids are kept (the files are still checked line by line)."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    kept: dict[str, str | None] = {}
    titles: dict[str, str] = {}
    for path in paths:
        for line_no, r in iter_records(path, "corpus"):
            docid = r["id"]
            if not r["text"].strip():
                raise DataError(path, line_no, f"field 'text' is empty (id {docid!r})")
            if docid in kept:
                raise DataError(path, line_no, f"duplicate id {docid!r} (first at {_first_line(paths, docid)})")
            kept[docid] = r["text"] if texts else None
            if texts and r["title"]:
                titles[docid] = r["title"]
    if not kept:
        raise DataError(paths[0], None, "no records")
    return TitledCorpus(kept, titles) if texts else CorpusIds(kept)


def _first_line(paths: list[Path], docid: str) -> str:
    """`path:line` of the first record with this id (looked up again only for the error message, so
    reading a corpus keeps no per-line positions)."""
    for path in paths:
        for line_no, r in iter_records(path, "corpus"):
            if r["id"] == docid:
                return f"{path}:{line_no}"
    return "?"


def read_answers(path: str | os.PathLike) -> tuple[dict[str, list[str]], dict[str, str]]:
    """XOR-Retrieve question file (JSONL `id, lang, question, answers`) -> ({qid: answers}, {qid: lang})."""
    from polyret.io.languages import check_language

    answers, langs = {}, {}
    for line_no, obj in iter_jsonl(path, {"id": (str, int), "lang": str, "answers": list}):
        if not all(isinstance(a, str) for a in obj["answers"]):
            raise DataError(path, line_no, "field 'answers': expected a list of strings")
        answers[str(obj["id"])] = obj["answers"]
        langs[str(obj["id"])] = check_language(obj["lang"], path, line_no, "lang")
    return answers, langs


def check_judgements(qrels: Mapping[str, Mapping[str, int]], queries: Mapping[str, str], corpus_ids,
                     qrels_path: str | os.PathLike) -> None:
    """Every judged query and document must exist; otherwise metrics would silently be wrong."""
    for qid, docs in qrels.items():
        if qid not in queries:
            raise DataError(qrels_path, None, f"query id {qid!r} is not in the queries file")
        for doc in docs:
            if doc not in corpus_ids:
                raise DataError(qrels_path, None, f"document id {doc!r} (query {qid!r}) is not in the corpus")


def load_files(corpus: str | os.PathLike, queries: str | os.PathLike, qrels: str | os.PathLike | None = None,
               answers: str | os.PathLike | None = None, name: str = "files", corpus_texts: bool = True) -> Benchmark:
    """A benchmark from separate files: corpus and queries (JSONL / TSV / parquet), TREC or BEIR qrels,
    XOR-Retrieve answers. Query languages come from the queries' language column, else the answers file.
    `corpus_texts=False` keeps only the corpus ids (`CorpusIds`)."""
    bench = Benchmark(name, read_corpus(Path(corpus), corpus_texts), read_id_text(queries, with_title=False),
                      source={"corpus": os.fspath(corpus), "queries": os.fspath(queries)})
    bench.query_languages = read_languages(queries)
    if qrels:
        bench.qrels = read_qrels(qrels)
        bench.source["qrels"] = os.fspath(qrels)
        check_judgements(bench.qrels, bench.queries, bench.corpus, qrels)
    if answers:
        bench.answers, langs = read_answers(answers)
        bench.source["answers"] = os.fspath(answers)
        for qid, lang in langs.items():
            bench.query_languages.setdefault(qid, lang)
    return bench


# ------------------------------------------------------------------------------------------ local layouts

def load_beir(folder: str | os.PathLike, split: str = "test") -> Benchmark:
    folder = Path(folder)
    qrels = folder / "qrels" / f"{split}.tsv"
    if not qrels.is_file():
        found = sorted(p.stem for p in (folder / "qrels").glob("*.tsv"))
        raise DataError(qrels, None, f"no qrels for split {split!r} (found: {', '.join(found) or 'none'})")
    bench = load_files(folder / "corpus.jsonl", folder / "queries.jsonl", qrels, name=f"beir:{folder.name}/{split}")
    # BEIR's queries.jsonl lists every split's queries: keep the judged ones.
    bench.queries = {q: t for q, t in bench.queries.items() if q in bench.qrels}
    return bench


_MIRACL_DIR = re.compile(r"^miracl-v1\.0-([a-z]+)$")


def _miracl_corpus_files(folder: Path, lang: str) -> list[Path]:
    for candidate in (folder / "corpus", folder.parent / f"miracl-corpus-v1.0-{lang}",
                      folder.parent.parent / "miracl-corpus" / f"miracl-corpus-v1.0-{lang}"):
        files = sorted(candidate.glob("docs-*.jsonl*")) + sorted(candidate.glob("*.parquet"))
        if files:
            return files
    raise DataError(folder, None, f"no MIRACL corpus found (looked for docs-*.jsonl.gz in {folder / 'corpus'} "
                                  f"and {folder.parent / f'miracl-corpus-v1.0-{lang}'})")


def load_miracl(folder: str | os.PathLike, split: str = "dev") -> Benchmark:
    """MIRACL as released: topics (`qid<TAB>query`, no header), qrels (`qid Q0 docid rel`), and the
    corpus shards (`{"docid": "<article>#<passage>", "title", "text"}`)."""
    from polyret.io.languages import check_language

    folder = Path(folder)
    m = _MIRACL_DIR.match(folder.name)
    if not m:
        raise DataError(folder, None, "a MIRACL folder is named miracl-v1.0-<lang>")
    lang = check_language(m.group(1), folder, None, "folder name")
    topics = folder / "topics" / f"topics.miracl-v1.0-{m.group(1)}-{split}.tsv"
    qrels = folder / "qrels" / f"qrels.miracl-v1.0-{m.group(1)}-{split}.tsv"
    bench = Benchmark(f"miracl:{m.group(1)}/{split}", read_corpus(_miracl_corpus_files(folder, m.group(1))),
                      read_id_text(topics, with_title=False), source={"queries": str(topics)})
    if qrels.is_file():  # test topics were released without qrels
        bench.qrels = read_qrels(qrels)
        bench.source["qrels"] = str(qrels)
        check_judgements(bench.qrels, bench.queries, bench.corpus, qrels)
    bench.query_languages = {q: lang for q in bench.queries}
    return bench


# XOR-Retrieve's passages, preferred first: the 2019-02-01 Wikipedia its README asks for, then DPR's 2018-12-20.
XOR_CORPUS_FILES = ("enwiki_20190201_w100.tsv", "enwiki_20190201_w100.tsv.gz", "psgs_w100.tsv", "psgs_w100.tsv.gz")


def load_xor(folder: str | os.PathLike, split: str = "dev") -> Benchmark:
    """XOR-Retrieve: the question file of `split` (`xor_<split>_retrieve*.jsonl`) and the passages, the first of
    XOR_CORPUS_FILES present (`source["corpus"]` names it; a warning line says when DPR's older dump is used)."""
    folder = Path(folder)
    questions = sorted(folder.glob(f"xor_{split}_retrieve*.jsonl"))
    if len(questions) != 1:
        raise DataError(folder, None, f"expected one xor_{split}_retrieve*.jsonl, found {len(questions)}")
    corpus = next((folder / name for name in XOR_CORPUS_FILES if (folder / name).is_file()), None)
    if corpus is None:
        raise DataError(folder, None, "no passages: enwiki_20190201_w100.tsv (the 2019-02-01 Wikipedia the "
                                      "XOR-Retrieve README asks for) or DPR's psgs_w100.tsv")
    if corpus.name.startswith("psgs_w100"):
        print(f"note: {corpus} is DPR's 2018-12-20 Wikipedia; XOR-Retrieve's README asks for the 2019-02-01 dump "
              "(enwiki_20190201_w100.tsv)", file=sys.stderr)
    return load_files(corpus, questions[0], answers=questions[0], name=f"xor:{split}")


def load_xtreme_up(folder: str | os.PathLike, split: str = "validation") -> Benchmark:
    """An XTREME-UP retrieval task folder as released (see the module docstring). The index holds the
    validation and test candidates, so only those splits can be scored."""
    folder = Path(folder)
    index, split_dir = folder / "index.jsonl", folder / split
    files = sorted(split_dir.glob("*.jsonl"))
    if not files:
        found = sorted(p.name for p in folder.iterdir() if p.is_dir())
        raise DataError(split_dir, None, f"no <lang>.jsonl files for split {split!r} (found: {', '.join(found)})")
    texts, titles = {}, {}
    for line_no, obj in iter_jsonl(index, {"id": (str, int), "title": str, "context": str}, nonempty=("context",)):
        docid = str(obj["id"])
        if docid in texts:
            raise DataError(index, line_no, f"duplicate id {docid!r}")
        texts[docid] = obj["context"]
        if obj["title"]:
            titles[docid] = obj["title"]
    bench = Benchmark(f"xtreme_up:{folder.name}/{split}", TitledCorpus(texts, titles), {},
                      source={"corpus": str(index), "queries": str(split_dir)})
    for path in files:
        lang = path.stem  # XTREME-UP's own codes (some outside ISO 639-1), kept as the file names them
        for line_no, obj in iter_jsonl(path, {"id": (str, int), "question": str}, nonempty=("question",)):
            qid, gold = f"{lang}-{line_no}", str(obj["id"])
            if gold not in texts:
                raise DataError(path, line_no, f"field 'id': gold passage {gold!r} is not in {index}")
            bench.queries[qid], bench.qrels[qid], bench.query_languages[qid] = obj["question"], {gold: 1}, lang
    return bench


# ------------------------------------------------------------------------------------------------- CLEF

QUERY_FIELDS = ("title", "description", "title+description")
_SGML_TAG = re.compile(r"<(/?)([A-Za-z][\w-]*)[^>]*>")
_TITLE_TAGS = {"HEADLINE", "TITLE", "TI", "HD"}
_SKIP_TAGS = {"DOCNO", "DOCID", "DATE", "ID"}


def _decoded_lines(path: Path, encoding: str) -> Iterator[tuple[int, str]]:
    with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
        for line_no, raw in enumerate(f, 1):
            try:
                yield line_no, raw.decode(encoding)
            except UnicodeDecodeError as e:
                raise DataError(path, line_no, f"not {encoding}: byte 0x{raw[e.start]:02x} (older CLEF collections "
                                               "are Latin-1: pass encoding='latin-1')") from None


def _sgml_blocks(path: Path, tag: str, encoding: str) -> Iterator[tuple[int, str]]:
    """(first line, inner text) of every <tag>...</tag> block of an SGML file; a block left open, or text
    outside any block, is an error naming its line."""
    open_re, close_re = re.compile(rf"<{tag}>", re.I), re.compile(rf"</{tag}>", re.I)
    start, body = None, []
    for line_no, line in _decoded_lines(path, encoding):
        while line:
            if start is None:
                m = open_re.search(line)
                if m is None:
                    if line.strip():
                        raise DataError(path, line_no, f"text outside a <{tag}> block: {line.strip()[:40]!r}")
                    break
                if line[:m.start()].strip():
                    raise DataError(path, line_no, f"text before <{tag}>: {line[:m.start()].strip()[:40]!r}")
                start, line = line_no, line[m.end():]
            m = close_re.search(line)
            if m is None:
                if open_re.search(line):
                    raise DataError(path, line_no, f"<{tag}> inside the <{tag}> opened at line {start}")
                body.append(line)
                break
            body.append(line[:m.start()])
            yield start, "".join(body)
            start, body, line = None, [], line[m.end():]
    if start is not None:
        raise DataError(path, start, f"<{tag}> is never closed")


def _sgml_fields(block: str) -> list[tuple[str, str]]:
    """[(TAG, text)] of the top-level elements of a block, in order, their inner tags (<P>) dropped; an element
    without a closing tag runs, as in TREC topics, to the next tag."""
    fields, at = [], 0
    while (m := _SGML_TAG.search(block, at)) is not None:
        if m.group(1):  # a closing tag with no element open at this level
            at = m.end()
            continue
        close = re.compile(rf"</{re.escape(m.group(2))}\s*>", re.I).search(block, m.end())
        following = _SGML_TAG.search(block, m.end())
        end = close.start() if close else (following.start() if following else len(block))
        fields.append((m.group(2).upper(), " ".join(_SGML_TAG.sub(" ", block[m.end():end]).split())))
        at = close.end() if close else end
    return fields


def read_clef_docs(paths: list[Path], encoding: str = "utf-8") -> TitledCorpus:
    texts, titles, where = {}, {}, {}
    for path in paths:
        for line_no, block in _sgml_blocks(path, "DOC", encoding):
            fields = _sgml_fields(block)
            docno = next((text for tag, text in fields if tag == "DOCNO"), "")
            if not docno:
                raise DataError(path, line_no, "<DOC> without a <DOCNO>")
            if docno in texts:
                raise DataError(path, line_no, f"duplicate DOCNO {docno!r} (first at {where[docno]})")
            title = " ".join(text for tag, text in fields if tag in _TITLE_TAGS and text)
            body = " ".join(text for tag, text in fields if tag not in _TITLE_TAGS | _SKIP_TAGS and text)
            if not (body or title):
                raise DataError(path, line_no, f"document {docno!r} has no text")
            texts[docno], where[docno] = body or title, f"{path}:{line_no}"
            if title and body:
                titles[docno] = title
    if not texts:
        raise DataError(paths[0] if paths else "docs", None, "no <DOC> records")
    return TitledCorpus(texts, titles)


def _topic_id(num: str) -> str:
    """CLEF topic numbers as the qrels and topics write them ('C041', '041', '41') -> '41'."""
    stripped = num.strip().upper().removeprefix("C").lstrip("0")
    return stripped or "0"


def read_clef_topics(path: Path, language: str = "en", query_field: str = "title",
                     encoding: str = "utf-8") -> dict[str, str]:
    """CLEF SGML topics: `<num>` and language-tagged fields (`<EN-title>`, `<EN-desc>`; a plain `<title>` /
    `<desc>` too) -> {topic id: text} for `query_field` (title, description or title+description)."""
    if query_field not in QUERY_FIELDS:
        raise ValueError(f"query_field must be one of {QUERY_FIELDS}, got {query_field!r}")
    wanted = {"title": ["TITLE"], "description": ["DESC"], "title+description": ["TITLE", "DESC"]}[query_field]
    prefix = f"{language.upper()}-"
    topics = {}
    for line_no, block in _sgml_blocks(path, "top", encoding):
        fields = dict((tag.removeprefix(prefix), text) for tag, text in _sgml_fields(block)
                      if tag.startswith(prefix) or "-" not in tag)
        if not fields.get("NUM"):
            raise DataError(path, line_no, "topic without <num>")
        parts = [fields.get(tag, "").removeprefix("Description:").strip() for tag in wanted]
        if not all(parts):
            missing = [f"<{prefix}{tag.lower()}>" for tag, part in zip(wanted, parts) if not part]
            raise DataError(path, line_no, f"topic {fields['NUM']!r} has no {' or '.join(missing)}")
        qid = _topic_id(fields["NUM"])
        if qid in topics:
            raise DataError(path, line_no, f"duplicate topic {fields['NUM']!r}")
        topics[qid] = " ".join(parts)
    if not topics:
        raise DataError(path, None, "no <top> records")
    return topics


def load_clef(folder: str | os.PathLike, query_field: str = "title", language: str = "en",
              encoding: str = "utf-8") -> Benchmark:
    """A CLEF ad hoc folder in the published layout (module docstring): every file under docs/, every topic
    file under topics/ and every qrels file under qrels/. Topic ids lose their 'C' and leading zeros, in the
    topics and the qrels alike, so 'C041' and '41' meet."""
    folder = Path(folder)
    files = {part: sorted(p for p in (folder / part).rglob("*") if p.is_file()) for part in ("docs", "topics", "qrels")}
    for part, found in files.items():
        if not found:
            raise DataError(folder / part, None, "no files (a CLEF folder holds docs/, topics/ and qrels/)")
    corpus = read_clef_docs(files["docs"], encoding)
    queries = {}
    for path in files["topics"]:
        queries.update(read_clef_topics(path, language, query_field, encoding))
    bench = Benchmark(f"clef:{folder.name}", corpus, queries, source={"corpus": str(folder / "docs"),
                                                                       "queries": str(folder / "topics")})
    for path in files["qrels"]:
        for qid, docs in read_qrels(path).items():
            bench.qrels.setdefault(_topic_id(qid), {}).update(docs)
        check_judgements(bench.qrels, queries, corpus, path)
    bench.source["qrels"] = str(folder / "qrels")
    bench.query_languages = {q: language for q in queries}
    return bench


# ------------------------------------------------------------------------------------------- ir_datasets

def load_ir_datasets(dataset_id: str, query_field: str | None = None) -> Benchmark:
    """Any ir_datasets id with docs and queries. Query text: `query_field` (title, description,
    title+description, or any field name), else the query's `text`, else its `title` (TREC-style topics such
    as NeuCLIR and HC4). Document title kept apart from the text."""
    import ir_datasets

    try:
        ds = ir_datasets.load(dataset_id)
    except KeyError:
        raise DataError(dataset_id, None, "not an ir_datasets id (see ir-datasets.com) nor an existing path") from None
    if not (ds.has_docs() and ds.has_queries()):
        raise DataError(dataset_id, None, "this ir_datasets id has no documents or no queries; use a split such "
                                          "as .../dev or .../test")
    texts, titles = {}, {}
    for doc in ds.docs_iter():
        texts[doc.doc_id] = getattr(doc, "text", None) or doc.default_text()
        if getattr(doc, "title", None):
            titles[doc.doc_id] = doc.title
    queries = {}
    for q in ds.queries_iter():
        if query_field == "title+description":
            parts = [getattr(q, f, None) for f in ("title", "description")]
            text = " ".join(p.strip() for p in parts if p) if all(parts) else None
            fields = ["title and description"]
        else:
            fields = [query_field] if query_field else ["text", "title"]
            text = next((getattr(q, f) for f in fields if getattr(q, f, None)), None)
        if text is None:
            raise DataError(dataset_id, None, f"query {q.query_id!r} has no {' or '.join(fields)} field")
        queries[q.query_id] = text
    bench = Benchmark(f"irds:{dataset_id}", TitledCorpus(texts, titles), queries, source={"ir_datasets": dataset_id})
    if ds.has_qrels():
        for qrel in ds.qrels_iter():
            docs = bench.qrels.setdefault(qrel.query_id, {})
            if qrel.doc_id in docs and docs[qrel.doc_id] != qrel.relevance:
                raise DataError(dataset_id, None, f"qrels judge query {qrel.query_id!r} document {qrel.doc_id!r} "
                                                  f"both {docs[qrel.doc_id]} and {qrel.relevance}")
            docs[qrel.doc_id] = qrel.relevance
        check_judgements(bench.qrels, queries, texts, dataset_id)
    lang = ds.queries_lang() if hasattr(ds, "queries_lang") else None
    if lang:
        from polyret.io.languages import check_language
        lang = check_language({"eng": "en", "fas": "fa", "rus": "ru", "zho": "zh"}.get(lang, lang), dataset_id,
                              None, "queries_lang")
        bench.query_languages = {q: lang for q in queries}
    return bench


# -------------------------------------------------------------------------------------------- dispatch

def load_benchmark(spec: str, split: str | None = None, query_field: str | None = None) -> Benchmark:
    """A benchmark from an ir_datasets id or a local folder (BEIR, MIRACL, XOR-Retrieve, XTREME-UP, CLEF); see
    the module docstring. `split` picks qrels/topics where a folder holds several (defaults: BEIR test, MIRACL
    dev, XOR dev, XTREME-UP validation); `query_field` picks the topic field of TREC-style topics."""
    if query_field is not None and query_field not in QUERY_FIELDS:
        raise ValueError(f"query_field must be one of {QUERY_FIELDS}, got {query_field!r}")
    if spec.startswith("irds:"):
        return load_ir_datasets(spec[len("irds:"):], query_field)
    path = Path(spec)
    if not path.exists():
        return load_ir_datasets(spec, query_field)
    if path.is_dir():
        if (path / "index.jsonl").is_file():
            return load_xtreme_up(path, split or "validation")
        if all((path / part).is_dir() for part in ("docs", "topics", "qrels")):
            return load_clef(path, query_field or "title")
        if (path / "corpus.jsonl").is_file() and (path / "qrels").is_dir():
            return load_beir(path, split or "test")
        if _MIRACL_DIR.match(path.name):
            return load_miracl(path, split or "dev")
        if any(path.glob("xor_*_retrieve*.jsonl")):
            return load_xor(path, split or "dev")
    raise DataError(path, None, "not a benchmark layout polyret knows (a BEIR folder, a MIRACL "
                                "miracl-v1.0-<lang> folder, an XOR-Retrieve, XTREME-UP or CLEF folder) nor an "
                                "ir_datasets id")
