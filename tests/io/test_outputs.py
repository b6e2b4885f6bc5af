"""Output folders: atomic swap, refusal of anything that is not an earlier output of the same kind,
--overwrite never removing a parent folder, umask modes, recovery of what killed runs left behind."""

import json
import os
import stat
from pathlib import Path

import pytest

from polyret.io import outputs
from polyret.io.outputs import MARKER, OutputError, atomic_output_dir, check_target


def _write(kind, target, content, **kw):
    with atomic_output_dir(target, kind, **kw) as tmp:
        (tmp / "data.txt").write_text(content)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "x.bin").write_bytes(content.encode())
    return target


def _siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name != folder.name)


def test_new_output_is_complete_and_marked(tmp_path):
    out = _write("hf_export", tmp_path / "out", "one")
    assert (out / "data.txt").read_text() == "one" and (out / "sub" / "x.bin").read_bytes() == b"one"
    assert json.loads((out / MARKER).read_text())["kind"] == "hf_export"
    assert _siblings(out) == []  # no temp folder left beside it


def test_earlier_output_of_the_same_kind_is_replaced_whole(tmp_path):
    out = _write("hf_export", tmp_path / "out", "one")
    (out / "stale.txt").write_text("from the old export")
    _write("hf_export", out, "two")
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER, "data.txt", "sub"])
    assert (out / "data.txt").read_text() == "two" and _siblings(out) == []


def test_failure_while_writing_leaves_the_previous_output(tmp_path):
    out = _write("hf_export", tmp_path / "out", "one")
    with pytest.raises(RuntimeError):
        with atomic_output_dir(out, "hf_export") as tmp:
            (tmp / "data.txt").write_text("half")
            raise RuntimeError("disk full")
    assert (out / "data.txt").read_text() == "one" and _siblings(out) == []


def test_unrelated_files_are_never_replaced(tmp_path):
    home = tmp_path / "home"
    (home / "thesis").mkdir(parents=True)
    (home / "thesis" / "chapter1.tex").write_text("precious")
    (home / "run").mkdir()
    for overwrite in (False, True):
        with pytest.raises(OutputError, match="not empty and not a polyret hf_export output .*even with --overwrite"):
            _write("hf_export", home, "x", overwrite=overwrite)  # a parent folder
    assert (home / "thesis" / "chapter1.tex").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]


def test_a_file_is_refused_and_nothing_is_left_behind(tmp_path):
    target = tmp_path / "model.bin"
    target.write_bytes(b"weights")
    for overwrite in (False, True):
        with pytest.raises(OutputError, match="exists and is a file"):
            _write("hf_export", target, "x", overwrite=overwrite)
    assert target.read_bytes() == b"weights" and sorted(p.name for p in tmp_path.iterdir()) == ["model.bin"]


def test_other_kind_needs_overwrite_and_inputs_are_protected(tmp_path):
    out = _write("checkpoint", tmp_path / "ckpt", "weights")
    with pytest.raises(OutputError, match="holds a polyret checkpoint output, not a hf_export; pass --overwrite"):
        check_target(out, "hf_export")
    check_target(out, "hf_export", overwrite=True)
    with outputs.allow_overwrite(out):  # what a job grants to library code that writes the folder
        _write("hf_export", out, "export")
    assert outputs.read_marker(out)["kind"] == "hf_export"
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for target in (run, tmp_path):  # the checkpoint's own folder, or a folder holding it
        with pytest.raises(OutputError, match="contains the input"):
            check_target(target, "hf_export", overwrite=True, inputs=[run / "checkpoints"])


def test_legacy_layout_is_replaced_only_with_overwrite_and_only_if_nothing_else_is_there(tmp_path):
    old = tmp_path / "old_export"
    old.mkdir()
    (old / "config.json").write_text("{}")
    (old / "model.safetensors").write_bytes(b"x")
    with pytest.raises(OutputError, match="earlier hf_export .*pass --overwrite"):
        check_target(old, "hf_export")
    _write("hf_export", old, "new", overwrite=True)
    assert (old / "data.txt").read_text() == "new" and not (old / "model.safetensors").exists()
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "config.json").write_text("{}")
    (mixed / "notes.md").write_text("mine")
    with pytest.raises(OutputError, match="even with --overwrite"):
        check_target(mixed, "hf_export", overwrite=True)


def test_modes_follow_the_umask(tmp_path):
    from safetensors.numpy import save_file
    import numpy as np

    previous = os.umask(0o027)
    try:
        with atomic_output_dir(tmp_path / "out", "hf_export") as tmp:
            save_file({"a": np.zeros(2, np.float32)}, str(tmp / "model.safetensors"))  # safetensors writes 0600
            (tmp / "sub").mkdir(mode=0o700)
    finally:
        os.umask(previous)
    out = tmp_path / "out"
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [out, out / "model.safetensors", out / "sub"]}
    assert modes == {"out": 0o750, "model.safetensors": 0o640, "sub": 0o750}


def test_what_a_killed_run_left_is_recovered_on_the_next_run(tmp_path):
    out = _write("hf_export", tmp_path / "out", "one")
    host = outputs.socket.gethostname().replace("-", "_")
    dead = 2 ** 22 + 12345  # above the default pid_max: no such process
    stranded = tmp_path / f".out.polyret-tmp-{host}-{dead}-0"
    stranded.mkdir()
    (stranded / "data.txt").write_text("half")
    # Killed between the two renames of the fallback swap: the previous output sits aside, none at the target.
    moved = tmp_path / f".out.polyret-old-{host}-{dead}-1"
    os.rename(out, moved)
    outputs.recover(out)
    assert (out / "data.txt").read_text() == "one" and _siblings(out) == []
    stranded.mkdir()
    _write("hf_export", out, "two")
    assert (out / "data.txt").read_text() == "two" and _siblings(out) == []


def test_fallback_swap_without_renameat2(tmp_path, monkeypatch):
    monkeypatch.setattr(outputs, "_exchange", lambda a, b: False)
    out = _write("hf_export", tmp_path / "out", "one")
    _write("hf_export", out, "two")
    assert (out / "data.txt").read_text() == "two" and _siblings(out) == []
