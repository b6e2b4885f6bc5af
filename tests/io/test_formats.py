"""Readers of users' files: the layouts they come in (header or not, BOM, DPR quoting) and the bad files
that must fail with file:line (issue 15's silent-wrong cases each have a test here)."""

import gzip

import pytest

from polyret.io.formats import DataError, iter_teacher_scores, read_id_text, read_languages, read_qrels
from polyret.io.languages import check_language


def write(path, data: bytes | str):
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


# ------------------------------------------------------------------------------- issue 15 item 4 cases

def test_queries_tsv_with_language_column_uses_text_not_language(tmp_path):
    with_header = write(tmp_path / "q.tsv", "id\ttext\tlang\nq1\two ist die Elbe\tde\nq2\tkimbunga ni nini\tsw\n")
    assert read_id_text(with_header, with_title=False) == {"q1": "wo ist die Elbe", "q2": "kimbunga ni nini"}
    assert read_languages(with_header) == {"q1": "de", "q2": "sw"}
    headerless = write(tmp_path / "q2.tsv", "q1\two ist die Elbe\tde\n")
    assert read_id_text(headerless, with_title=False) == {"q1": "wo ist die Elbe"}
    assert read_languages(headerless) == {"q1": "de"}


def test_column_count_checked_against_header(tmp_path):
    bad = write(tmp_path / "q.tsv", "id\ttext\tlang\nq1\two ist die Elbe\tde\nq2\tonly two\n")
    with pytest.raises(DataError, match=r"q\.tsv:3: 2 columns, but the header \(line 1\) names 3"):
        read_id_text(bad, with_title=False)
    ragged = write(tmp_path / "c.tsv", "d1\tsome text\nd2\tmore text\tTitle\tx\n")
    with pytest.raises(DataError, match=r"c\.tsv:2: 4 columns"):
        read_id_text(ragged)


def test_null_text_is_an_error_naming_file_line_field(tmp_path):
    bad = write(tmp_path / "c.jsonl", '{"_id": "a", "text": "fine"}\n{"_id": "b", "title": "T", "text": null}\n')
    with pytest.raises(DataError, match=r"c\.jsonl:2: field 'text' is null"):
        read_id_text(bad)


def test_duplicate_qrels_with_different_grades_name_both_lines(tmp_path):
    bad = write(tmp_path / "qrels.txt", "q1 0 d1 1\nq1 0 d2 0\nq1 0 d1 2\n")
    with pytest.raises(DataError, match=r"qrels\.txt:3: query 'q1' document 'd1' judged 2 here and 1 on line 1"):
        read_qrels(bad)
    same = write(tmp_path / "same.txt", "q1 0 d1 1\nq1 0 d1 1\n")
    assert read_qrels(same) == {"q1": {"d1": 1}}


def test_utf8_bom_is_stripped(tmp_path):
    jsonl = write(tmp_path / "q.jsonl", b'\xef\xbb\xbf{"_id": "q1", "text": "hello"}\n')
    assert list(read_id_text(jsonl)) == ["q1"]
    tsv = write(tmp_path / "q.tsv", b"\xef\xbb\xbfq1\thello\n")
    assert list(read_id_text(tsv)) == ["q1"]
    qrels = write(tmp_path / "qrels.txt", b"\xef\xbb\xbfq1 0 d1 1\n")
    assert read_qrels(qrels) == {"q1": {"d1": 1}}


def test_non_utf8_byte_names_file_and_line(tmp_path):
    bad = write(tmp_path / "c.tsv", b"d1\tfine\nd2\tLatin-1 caf\xe9\n")
    with pytest.raises(DataError, match=r"c\.tsv:2: not UTF-8: byte 0xe9 at column 15"):
        read_id_text(bad)
    gz = tmp_path / "scores.jsonl.gz"
    gz.write_bytes(gzip.compress(b'["q1", ["p1", 1.0]]\n["q\xff", ["p1", 1.0]]\n'))
    with pytest.raises(DataError, match=r"scores\.jsonl\.gz:2: not UTF-8"):
        list(iter_teacher_scores(gz))


# ------------------------------------------------------------------------------------ published layouts

def test_dpr_passages_with_and_without_header(tmp_path):
    # DPR's psgs_w100.tsv: header `id text title`, csv-quoted text ("" inside quotes).
    dpr = ('id\ttext\ttitle\n'
           '1\t"Aaron Aaron ( or ; ""Ahärôn"") is a prophet, high priest, and the brother of Moses."\tAaron\n'
           '2\tGod at Sinai granted Aaron the priesthood for himself and his male descendants.\tAaron\n')
    with_header = write(tmp_path / "psgs_w100.tsv", dpr)
    corpus = read_id_text(with_header)
    assert list(corpus) == ["1", "2"]  # the header is not a passage
    assert corpus["1"] == 'Aaron Aaron Aaron ( or ; "Ahärôn") is a prophet, high priest, and the brother of Moses.'
    assert corpus["2"].startswith("Aaron God at Sinai")
    headerless = write(tmp_path / "psgs.tsv", dpr.split("\n", 1)[1])
    assert read_id_text(headerless) == corpus
    assert read_id_text(headerless, with_title=False)["2"].startswith("God at Sinai")


def test_ms_marco_collection_keeps_quotes(tmp_path):
    tsv = write(tmp_path / "collection.tsv", '0\tThe "Manhattan Project" was a research project.\n1\t"Quoted" start\n')
    assert read_id_text(tsv) == {"0": 'The "Manhattan Project" was a research project.', "1": '"Quoted" start'}


def test_header_only_and_empty_files_fail_with_file_line(tmp_path):
    header_only = write(tmp_path / "psgs.tsv", "id\ttext\ttitle\n")
    with pytest.raises(DataError, match=r"psgs\.tsv:1: only a header row"):
        read_id_text(header_only)
    beir_qrels = write(tmp_path / "test.tsv", "query-id\tcorpus-id\tscore\n")
    with pytest.raises(DataError, match=r"test\.tsv:1: only a header row"):
        read_qrels(beir_qrels)


def test_wrong_column_count_in_qrels(tmp_path):
    bad = write(tmp_path / "qrels.txt", "q1 0 d1 1\nq1 d2 1\n")
    with pytest.raises(DataError, match=r"qrels\.txt:2: expected 4 columns"):
        read_qrels(bad)


def test_unknown_language_code_and_aliases(tmp_path):
    bad = write(tmp_path / "q.tsv", "id\ttext\tlang\nq1\thello\ten\nq2\thallo\txx\n")
    with pytest.raises(DataError, match=r"q\.tsv:3: field 'lang': unknown language code 'xx'"):
        read_languages(bad)
    assert check_language("hn", "f", 1, "code") == "hi"  # SWIM-IR datacard's Hindi
    assert check_language("iw", "f", 1, "code") == "he"


def test_xor_question_file_reads_as_queries(tmp_path):
    xor = write(tmp_path / "xor_dev_retrieve_eng_span_v1_1.jsonl",
                '{"id": "-1000013638352439925", "lang": "ja", "question": "東京タワーの高さは？", "answers": ["333m"]}\n'
                '{"id": "5467418219432118040", "lang": "te", "question": "ఏ సంవత్సరం?", "answers": ["1956", "yes"]}\n')
    assert read_id_text(xor, with_title=False) == {"-1000013638352439925": "東京タワーの高さは？",
                                                   "5467418219432118040": "ఏ సంవత్సరం?"}
    assert read_languages(xor) == {"-1000013638352439925": "ja", "5467418219432118040": "te"}
