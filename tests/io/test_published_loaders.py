"""The loaders added for the papers' benchmarks (XTREME-UP, CLEF, XOR-Retrieve's 2019 Wikipedia, topic fields),
each on a fixture written here in the published layout: what they read scores a run exactly as ir_measures
does on the same qrels and run, and a malformed file stops with `file:line: what is wrong`."""

import json

import ir_measures
import pytest

from polyret.io.benchmarks import load_benchmark, load_ir_datasets
from polyret.io.formats import DataError
from polyret.retrieval.metrics import evaluate


def write(path, text: str, encoding: str = "utf-8"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def jsonl(rows) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def reference(qrels: dict, run: dict, measures: list[str]) -> dict[str, float]:
    """ir_measures' own aggregate over every judged query (a judged query missing from the run scores 0)."""
    judged_run = {q: run.get(q, {}) for q in qrels}
    per_query = {str(m): [] for m in map(ir_measures.parse_measure, measures)}
    for m in per_query:
        values = {r.query_id: r.value for r in ir_measures.iter_calc([ir_measures.parse_measure(m)], qrels, run)}
        per_query[m] = [values.get(q, 0.0) for q in judged_run]
    return {m: sum(v) / len(v) for m, v in per_query.items()}


# ------------------------------------------------------------------------------------------------ XTREME-UP

XTREME_INDEX = [{"id": "p1", "title": "Kilimanjaro", "context": "Kilimanjaro ni mlima mrefu zaidi Afrika."},
                {"id": "p2", "title": "Nairobi", "context": "Nairobi ni mji mkuu wa Kenya."},
                {"id": "p3", "title": "", "context": "Lagos is the largest city in Nigeria."}]


def xtreme_up(root):
    task = root / "retrieval_cross_lang"
    write(task / "index.jsonl", jsonl(XTREME_INDEX))
    write(task / "validation" / "sw.jsonl", jsonl([
        {"id": "p1", "title": "Kilimanjaro", "context": XTREME_INDEX[0]["context"],
         "question": "Mlima mrefu zaidi Afrika ni upi?"},
        {"id": "p2", "title": "Nairobi", "context": XTREME_INDEX[1]["context"], "question": "Mji mkuu wa Kenya?"}]))
    write(task / "validation" / "yo.jsonl", jsonl([
        {"id": "p3", "title": "", "context": XTREME_INDEX[2]["context"], "question": "Ilu wo lo tobi julo ni Naijiria?"}]))
    write(task / "train" / "sw.jsonl", jsonl([{"id": "t9", "title": "x", "context": "y", "question": "z"}]))
    return task


def test_xtreme_up_task_folder_scores_mrr_as_ir_measures(tmp_path):
    bench = load_benchmark(str(xtreme_up(tmp_path)))
    assert bench.corpus["p1"] == "Kilimanjaro Kilimanjaro ni mlima mrefu zaidi Afrika."
    assert bench.corpus["p3"] == "Lagos is the largest city in Nigeria."  # no title: candidate is the context
    assert bench.queries == {"sw-1": "Mlima mrefu zaidi Afrika ni upi?", "sw-2": "Mji mkuu wa Kenya?",
                             "yo-1": "Ilu wo lo tobi julo ni Naijiria?"}
    assert bench.qrels == {"sw-1": {"p1": 1}, "sw-2": {"p2": 1}, "yo-1": {"p3": 1}}
    assert bench.query_languages == {"sw-1": "sw", "sw-2": "sw", "yo-1": "yo"}
    run = {"sw-1": {"p2": 3.0, "p1": 2.0}, "sw-2": {"p2": 1.0}, "yo-1": {"p1": 5.0, "p2": 4.0}}
    table = evaluate(bench.qrels, run, ["RR@10"], bench.query_languages)
    assert table["all"]["RR@10"] == pytest.approx(reference(bench.qrels, run, ["RR@10"])["RR@10"])
    assert table["all"]["RR@10"] == pytest.approx((1 / 2 + 1 + 0) / 3)  # XTREME-UP's compute_mrr by hand
    # Its training split's golds are not in the index (the index holds validation and test candidates only).
    with pytest.raises(DataError, match=r"train/sw\.jsonl:1: field 'id': gold passage 't9' is not in"):
        load_benchmark(str(tmp_path / "retrieval_cross_lang"), split="train")


def test_xtreme_up_malformed_line_names_file_and_line(tmp_path):
    task = xtreme_up(tmp_path)
    write(task / "validation" / "yo.jsonl", '{"id": "p3", "title": "", "context": "c", "question": "q"}\n{"id": "p1"\n')
    with pytest.raises(DataError, match=r"validation/yo\.jsonl:2: malformed JSON"):
        load_benchmark(str(task))


# ------------------------------------------------------------------------------------------------------ CLEF

CLEF_DOCS = """<DOC>
<DOCNO>LA010194-0001</DOCNO>
<DOCID>1</DOCID>
<HEADLINE>
<P>Pesticides found in baby food</P>
</HEADLINE>
<TEXT>
<P>Traces of pesticides were found in several brands of baby food.</P>
</TEXT>
</DOC>
<DOC>
<DOCNO>LA010194-0002</DOCNO>
<TEXT>
<P>The city council met on Tuesday.</P>
</TEXT>
</DOC>
"""
CLEF_DOCS_DE = """<DOC>
<DOCNO>FR940104-000001</DOCNO>
<TITLE>Pestizide in Babynahrung</TITLE>
<TEXT>Rückstände von Pestiziden in Babynahrung gefunden.</TEXT>
</DOC>
"""
CLEF_TOPICS = """<top>
<num> C041 </num>
<EN-title> Pesticides in Baby Food </EN-title>
<EN-desc> Find reports on pesticides in baby food. </EN-desc>
<EN-narr> Relevant documents give information on the discovery of pesticides in baby food. </EN-narr>
</top>

<top>
<num> C042 </num>
<EN-title> City Councils </EN-title>
<EN-desc> Find documents on meetings of city councils. </EN-desc>
<EN-narr> Any city council meeting is relevant. </EN-narr>
</top>
"""
CLEF_QRELS = "41 0 LA010194-0001 1\n41 0 FR940104-000001 1\n41 0 LA010194-0002 0\n42 0 LA010194-0002 1\n"


def clef(root, docs_de=CLEF_DOCS_DE, encoding="utf-8"):
    write(root / "docs" / "latimes" / "la010194", CLEF_DOCS)
    write(root / "docs" / "fr" / "fr940104.gz", "")
    import gzip
    with gzip.open(root / "docs" / "fr" / "fr940104.gz", "wb") as f:
        f.write(docs_de.encode(encoding))
    write(root / "topics" / "Top-en01.txt", CLEF_TOPICS)
    write(root / "qrels" / "qrels_2001.txt", CLEF_QRELS)
    return root


def test_clef_published_layout_and_topic_fields(tmp_path):
    bench = load_benchmark(str(clef(tmp_path / "clef2001")))
    assert bench.corpus["LA010194-0001"] == ("Pesticides found in baby food Traces of pesticides were found in "
                                             "several brands of baby food.")
    assert bench.corpus["FR940104-000001"] == "Pestizide in Babynahrung Rückstände von Pestiziden in Babynahrung gefunden."
    assert bench.corpus["LA010194-0002"] == "The city council met on Tuesday."
    assert bench.queries == {"41": "Pesticides in Baby Food", "42": "City Councils"}
    assert bench.qrels == {"41": {"LA010194-0001": 1, "FR940104-000001": 1, "LA010194-0002": 0},
                           "42": {"LA010194-0002": 1}}
    described = load_benchmark(str(tmp_path / "clef2001"), query_field="title+description")
    assert described.queries["41"] == "Pesticides in Baby Food Find reports on pesticides in baby food."
    assert load_benchmark(str(tmp_path / "clef2001"), query_field="description").queries["42"] == (
        "Find documents on meetings of city councils.")
    run = {"41": {"LA010194-0002": 9.0, "FR940104-000001": 8.0, "LA010194-0001": 1.0}}
    measures = ["nDCG@20", "AP", "Judged@10"]
    table = evaluate(bench.qrels, run, measures)
    expected = reference(bench.qrels, run, measures)
    assert table["all"] == pytest.approx(expected)
    assert table["all"]["nDCG@20"] < 1 and expected["AP"] > 0


def test_clef_malformed_files_name_file_and_line(tmp_path):
    clef(tmp_path / "a", docs_de="<DOC>\n<TITLE>no docno</TITLE>\n<TEXT>x</TEXT>\n</DOC>\n")
    with pytest.raises(DataError, match=r"fr940104\.gz:1: <DOC> without a <DOCNO>"):
        load_benchmark(str(tmp_path / "a"))
    clef(tmp_path / "b", docs_de="<DOC>\n<DOCNO>X1</DOCNO>\n<TEXT>never closed\n")
    with pytest.raises(DataError, match=r"fr940104\.gz:1: <DOC> is never closed"):
        load_benchmark(str(tmp_path / "b"))
    clef(tmp_path / "c", docs_de=CLEF_DOCS_DE, encoding="latin-1")
    with pytest.raises(DataError, match=r"fr940104\.gz:4: not utf-8: byte 0xfc"):
        load_benchmark(str(tmp_path / "c"))
    clef(tmp_path / "d")
    write(tmp_path / "d" / "topics" / "Top-en01.txt", CLEF_TOPICS.replace("<EN-desc> Find documents on meetings "
                                                                          "of city councils. </EN-desc>\n", ""))
    with pytest.raises(DataError, match=r"Top-en01\.txt:8: topic 'C042' has no <EN-desc>"):
        load_benchmark(str(tmp_path / "d"), query_field="description")


# ------------------------------------------------------------------------------------------- XOR-Retrieve

XOR_QUESTIONS = ('{"id": "-1000013638352439925", "lang": "ja", "question": "アーロンの兄弟は誰？", '
                 '"answers": ["Moses"]}\n')


def test_xor_retrieve_prefers_the_2019_wikipedia_and_says_which_it_read(tmp_path, capsys):
    folder = tmp_path / "xor"
    write(folder / "xor_dev_retrieve_eng_span_v1_1.jsonl", XOR_QUESTIONS)
    write(folder / "psgs_w100.tsv", "id\ttext\ttitle\n1\tAaron is the brother of Moses (2018 dump).\tAaron\n")
    old = load_benchmark(str(folder))
    assert old.source["corpus"].endswith("psgs_w100.tsv") and "2019-02-01" in capsys.readouterr().err
    write(folder / "enwiki_20190201_w100.tsv", "id\ttext\ttitle\n1\tAaron is the brother of Moses.\tAaron\n"
                                               "2\tGod at Sinai granted Aaron the priesthood.\tAaron\n")
    bench = load_benchmark(str(folder))
    assert bench.source["corpus"].endswith("enwiki_20190201_w100.tsv") and capsys.readouterr().err == ""
    assert bench.passage_texts == {"1": "Aaron is the brother of Moses.", "2": "God at Sinai granted Aaron the priesthood."}
    write(folder / "enwiki_20190201_w100.tsv", "id\ttext\ttitle\n1\tAaron\tAaron\n1\tagain\tAaron\n")
    with pytest.raises(DataError, match=r"enwiki_20190201_w100\.tsv:3: duplicate id '1'"):
        load_benchmark(str(folder))


# ------------------------------------------------------------------------- TREC topics through ir_datasets

def test_ir_datasets_topics_by_query_field(tmp_path):
    """TREC-style topics (title, description, narrative) read by ir_datasets' own TREC topic parser, as
    NeuCLIR and HC4 topics are: the field is chosen by query_field."""
    import ir_datasets
    from ir_datasets.datasets.base import Dataset
    from ir_datasets.formats import TrecQrels, TrecQueries, TsvDocs
    from ir_datasets.util import LocalDownload

    docs = write(tmp_path / "docs.tsv", "d1\tPesticides were found in baby food.\nd2\tThe council met.\n")
    topics = write(tmp_path / "topics.txt", "<top>\n<num> Number: 401\n<title> pesticides baby food\n\n<desc> "
                   "Description:\nFind reports on pesticides in baby food.\n\n<narr> Narrative:\nAny report.\n</top>\n")
    qrels = write(tmp_path / "qrels.txt", "401 0 d1 1\n401 0 d2 0\n")
    name = "polyret-test/trec-topics"
    if name not in ir_datasets.registry._registered:  # noqa: SLF001
        ir_datasets.registry.register(name, Dataset(TsvDocs(LocalDownload(docs)), TrecQueries(LocalDownload(topics)),
                                                    TrecQrels(LocalDownload(qrels), {0: "not", 1: "relevant"})))
    assert load_ir_datasets(name).queries == {"401": "pesticides baby food"}
    assert load_ir_datasets(name, "description").queries == {"401": "Find reports on pesticides in baby food."}
    assert load_ir_datasets(name, "title+description").queries == {
        "401": "pesticides baby food Find reports on pesticides in baby food."}
    with pytest.raises(ValueError, match="query_field must be one of"):
        load_benchmark(name, query_field="narrative+title")


# ------------------------------------------------------------------------------------- polyret evaluate flags

def test_evaluate_reads_clef_with_query_field_and_scoring_convention(tmp_path):
    """`polyret evaluate --dataset <CLEF folder> --query_field description --score_convention run` on
    precomputed vectors: the metrics are ir_measures.calc_aggregate's on the run it wrote, Judged@10 sits beside
    nDCG@20, and metrics.json says which files were read and how queries were scored."""
    import numpy as np

    from polyret.io.runs import read_trec_run
    from polyret.jobs import evaluate as evaluate_job

    folder = clef(tmp_path / "clef2001")
    doc_ids = ["LA010194-0001", "LA010194-0002", "FR940104-000001"]
    rng = np.random.default_rng(0)
    np.save(tmp_path / "d.npy", rng.normal(size=(3, 8)).astype(np.float32))
    np.save(tmp_path / "q.npy", rng.normal(size=(2, 8)).astype(np.float32))
    (tmp_path / "d.ids").write_text("\n".join(doc_ids) + "\n")
    (tmp_path / "q.ids").write_text("41\n42\n")
    out = tmp_path / "eval"
    evaluate_job.main(["--query_embeddings", str(tmp_path / "q.npy"), "--query_ids", str(tmp_path / "q.ids"),
                       "--corpus_embeddings", str(tmp_path / "d.npy"), "--corpus_ids", str(tmp_path / "d.ids"),
                       "--dataset", str(folder), "--query_field", "description", "--score_convention", "run",
                       "--output_dir", str(out), "--k", "2", "--metrics", "nDCG@20,AP"])
    written = json.loads((out / "metrics.json").read_text())
    ours = written["metrics"]["dense"]["all"]
    assert list(ours) == ["nDCG@20", "Judged@10", "AP"]
    run = read_trec_run(out / "dense.trec")
    bench = load_benchmark(str(folder))
    theirs = ir_measures.calc_aggregate([ir_measures.parse_measure(m) for m in ours], bench.qrels, run)
    assert ours == pytest.approx({str(m): v for m, v in theirs.items()})
    assert written["score_convention"] == "run" and written["source"]["corpus"] == str(folder / "docs")
