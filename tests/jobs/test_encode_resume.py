"""encode records what produced its shards: another corpus, checkpoint or settings in the same folder is
refused in one line naming what differs (no silent mix of two runs' rows); --overwrite replaces the old
embeddings only once the new ones are complete."""

import shutil
from pathlib import Path

import numpy as np

from polyret.jobs import encode as job
from polyret.retrieval.encode import TowerEncoder, load_embeddings
from polyret.io.formats import read_id_text


def _args(ckpt, corpus, out, *extra):
    return ["--checkpoint", str(ckpt), "--corpus", str(corpus), "--output_dir", str(out), "--shard_size", "16",
            "--max_length", "24", *extra]


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _err(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0]


def test_another_corpus_into_the_same_folder_is_refused(tiny_data, tiny_checkpoints, tmp_path, capsys):
    de, en = tiny_data["corpus"] / "de.jsonl", tiny_data["corpus"] / "en.jsonl"
    out = tmp_path / "emb"
    assert job.main(_args(tiny_checkpoints["a"], de, out)) == 0
    german = _tree(out)
    capsys.readouterr()
    assert job.main(_args(tiny_checkpoints["a"], en, out)) == 2  # same count (60): the old manifest matched
    err = _err(capsys)
    assert err.startswith(f"polyret encode: {out / 'manifest.json'}: written by an earlier run") and \
        "fingerprint.corpus.sha256" in err and "--overwrite" in err
    assert _tree(out) == german


def test_resume_with_another_checkpoint_is_refused(tiny_data, tiny_checkpoints, tmp_path, capsys):
    de = tiny_data["corpus"] / "de.jsonl"
    out = tmp_path / "emb"
    assert job.main(_args(tiny_checkpoints["a"], de, out)) == 0
    for shard in sorted(out.glob("shard-*"))[4:]:  # as if killed half way
        shard.unlink()
    half = _tree(out)
    capsys.readouterr()
    assert job.main(_args(tiny_checkpoints["b"], de, out)) == 2
    assert "fingerprint.model.params_sha256" in _err(capsys)
    assert _tree(out) == half
    assert job.main(_args(tiny_checkpoints["a"], de, out, "--max_length", "32")) == 2
    assert "max_length (24 -> 32)" in _err(capsys)


def test_overwrite_replaces_with_exactly_a_fresh_run(tiny_data, tiny_checkpoints, tmp_path):
    de, en = tiny_data["corpus"] / "de.jsonl", tiny_data["corpus"] / "en.jsonl"
    out, fresh = tmp_path / "emb", tmp_path / "fresh"
    assert job.main(_args(tiny_checkpoints["a"], de, out)) == 0
    assert job.main(_args(tiny_checkpoints["b"], en, out, "--overwrite")) == 0
    assert job.main(_args(tiny_checkpoints["b"], en, fresh)) == 0
    assert _tree(out) == _tree(fresh)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb", "fresh"]  # no staging folder left
    ids, vectors = load_embeddings(out)
    encoder = TowerEncoder.from_checkpoint(tiny_checkpoints["b"])
    corpus = read_id_text(en)
    expected = encoder.encode([corpus[i] for i in ids], "right", 24)
    np.testing.assert_allclose(vectors, expected, rtol=1e-5, atol=1e-6)
    assert sorted(ids) == sorted(corpus)


def test_resume_after_a_kill_is_identical(tiny_data, tiny_checkpoints, tmp_path):
    de = tiny_data["corpus"] / "de.jsonl"
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    assert job.main(_args(tiny_checkpoints["a"], de, full)) == 0
    shutil.copytree(full, resumed)
    (resumed / "shard-00002.ids").unlink()
    (resumed / "shard-00002.tmp.npy").write_bytes(b"half written")  # a kill inside np.save
    (resumed / "shard-00003.npy").unlink()
    (resumed / "shard-00003.ids").unlink()
    assert job.main(_args(tiny_checkpoints["a"], de, resumed)) == 0
    assert _tree(resumed) == _tree(full)


def test_bad_flags_and_foreign_folders_fail_before_work(tiny_data, tiny_checkpoints, tmp_path, capsys):
    de = tiny_data["corpus"] / "de.jsonl"
    import pytest
    with pytest.raises(SystemExit) as exit_info:
        job.main(_args(tiny_checkpoints["a"], de, tmp_path / "x", "--shard_size", "0"))
    assert exit_info.value.code == 2
    assert "polyret encode: argument --shard_size: must be at least 1, got 0" in _err(capsys)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert job.main(_args(tiny_checkpoints["a"], de, tmp_path / "mine")) == 2
    assert "not empty and not a polyret encode output" in _err(capsys)
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]
    assert not (tmp_path / "x").exists()
