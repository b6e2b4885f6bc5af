"""Fingerprints and the one-line refusals built on them: file identity (checked against hashlib), what
differs between two runs, training resume with another model config, initial checkpoints of another shape."""

import hashlib
import os

import pytest

from polyret.io import fingerprint as F
from polyret.io.fingerprint import FingerprintMismatch


def test_small_files_are_hashed_whole(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b'{"_id": "1", "text": "x"}\n' * 100)
    fp = F.file_fingerprint(path)
    assert fp["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and fp["size"] == path.stat().st_size
    moved = tmp_path / "moved.jsonl"
    os.rename(path, moved)
    F.check_match({"corpus": fp}, {"corpus": F.file_fingerprint(moved)}, "x")  # the path is not compared


def test_big_files_by_size_mtime_head_and_tail(tmp_path, monkeypatch):
    monkeypatch.setattr(F, "WHOLE_FILE_LIMIT", 1000)
    monkeypatch.setattr(F, "PART", 100)
    path = tmp_path / "big.bin"
    data = bytearray(os.urandom(5000))
    path.write_bytes(data)
    before = F.file_fingerprint(path)
    head_tail = hashlib.sha256(bytes(data[:100] + data[-100:])).hexdigest()
    assert before["head_tail_sha256"] == head_tail and before["size"] == 5000
    data[-1] ^= 1
    path.write_bytes(data)
    os.utime(path, ns=(before["mtime_ns"], before["mtime_ns"]))
    with pytest.raises(FingerprintMismatch, match="head_tail_sha256"):
        F.check_match(before, F.file_fingerprint(path), path)
    os.utime(path, ns=(before["mtime_ns"] + 10**9, before["mtime_ns"] + 10**9))
    with pytest.raises(FingerprintMismatch, match="mtime_ns"):
        F.check_match(F.file_fingerprint(path) | {"mtime_ns": before["mtime_ns"]}, F.file_fingerprint(path), path)


def test_mismatch_is_one_line_naming_what_differs():
    recorded = {"settings": {"max_length": 24, "side": "right"}, "corpus": {"sha256": "a" * 64, "count": 60}}
    current = {"settings": {"max_length": 32, "side": "right"}, "corpus": {"sha256": "b" * 64, "count": 60}}
    with pytest.raises(FingerprintMismatch) as info:
        F.check_match(recorded, current, "out/manifest.json", "use a new folder")
    message = str(info.value)
    assert "\n" not in message and message.startswith("out/manifest.json: written by an earlier run")
    assert "corpus.sha256 (aaaaaaaaaaaa -> bbbbbbbbbbbb)" in message and "settings.max_length (24 -> 32)" in message
    assert message.endswith("use a new folder") and "count" not in message and "side" not in message


def test_texts_fingerprint_sees_order_ids_and_text():
    base = F.texts_fingerprint({"a": "x", "b": "y"})
    assert base == F.texts_fingerprint({"a": "x", "b": "y"})
    for other in ({"b": "y", "a": "x"}, {"a": "x", "b": "z"}, {"a": "x", "c": "y"}, {"a": "xb", "": "y"}):
        assert F.texts_fingerprint(other) != base, other
