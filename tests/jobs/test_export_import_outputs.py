"""export_hf and import_checkpoint never delete what is not theirs: a folder with other files, the
training run being exported, a parent folder or a file at --output_dir is refused in one line (exit 2)
before any work; an earlier export is replaced whole; exports follow the umask."""

import os
import stat
from pathlib import Path

import jax
import numpy as np
import pytest

from polyret.jobs import export_hf as export_job
from polyret.jobs import import_checkpoint as import_job
from polyret.models.model_folder import load_model, save_model
from polyret.models.retrieval_model import init_params
from polyret.models.t5 import PRESETS
from polyret.models.towers import DualEncoderConfig


@pytest.fixture(scope="module")
def checkpoints(tiny_spm, tmp_path_factory):
    """Two tiny dual-encoder checkpoints with different weights (A and B) and an HF export of A."""
    folder = tmp_path_factory.mktemp("ckpts")
    cfg = DualEncoderConfig(encoder=PRESETS["mt5_tiny"], projection_dim=8)
    out = {}
    for name, seed in (("a", 0), ("b", 1)):
        params, _ = init_params(cfg, jax.random.PRNGKey(seed))
        out[name] = save_model(folder / name, params, cfg, tiny_spm)
    assert export_job.main(["--checkpoint", str(out["a"]), "--output_dir", str(folder / "hf_a")]) == 0
    out["hf_a"] = folder / "hf_a"
    return out


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _err_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_export_refuses_a_folder_with_other_files(checkpoints, tmp_path, capsys):
    target = tmp_path / "models"
    (target / "my_other_model").mkdir(parents=True)
    (target / "my_other_model" / "weights.bin").write_bytes(b"precious")
    (target / "notes.txt").write_text("mine")
    before = _tree(target)
    assert export_job.main(["--checkpoint", str(checkpoints["a"]), "--output_dir", str(target)]) == 2
    assert f"polyret export_hf: {target}: not empty and not a polyret hf_export output" in _err_line(capsys)
    assert export_job.main(["--checkpoint", str(checkpoints["a"]), "--output_dir", str(target), "--overwrite"]) == 2
    assert "even with --overwrite" in _err_line(capsys)
    assert _tree(target) == before and sorted(p.name for p in tmp_path.iterdir()) == ["models"]


def test_export_refuses_the_checkpoint_itself_and_its_parent(checkpoints, tmp_path, capsys):
    run = tmp_path / "run"
    save_model(run, *load_model(checkpoints["a"])[:2])
    before = _tree(tmp_path)
    for target in (run, tmp_path):
        assert export_job.main(["--checkpoint", str(run), "--output_dir", str(target), "--overwrite"]) == 2
        assert f"contains the input {run}" in _err_line(capsys)
    assert _tree(tmp_path) == before


def test_output_dir_naming_a_file_is_refused_before_work(checkpoints, tmp_path, capsys):
    target = tmp_path / "export.bin"
    target.write_bytes(b"not a folder")
    assert export_job.main(["--checkpoint", str(checkpoints["a"]), "--output_dir", str(target)]) == 2
    assert f"{target}: exists and is a file" in _err_line(capsys)
    assert import_job.main(["--hf", str(checkpoints["hf_a"]), "--output_dir", str(target)]) == 2
    assert f"{target}: exists and is a file" in _err_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.bin"]  # no hidden export left behind
    assert target.read_bytes() == b"not a folder"


def test_import_refuses_a_folder_with_other_files(checkpoints, tmp_path, capsys):
    target = tmp_path / "work"
    target.mkdir()
    (target / "data.jsonl").write_text("{}\n")
    assert import_job.main(["--hf", str(checkpoints["hf_a"]), "--output_dir", str(target)]) == 2
    assert "not empty and not a polyret checkpoint output" in _err_line(capsys)
    assert sorted(p.name for p in target.iterdir()) == ["data.jsonl"]


def test_reexport_replaces_the_earlier_export_whole(checkpoints, tmp_path):
    out = tmp_path / "hf"
    assert export_job.main(["--checkpoint", str(checkpoints["a"]), "--output_dir", str(out)]) == 0
    (out / "leftover.txt").write_text("from an older export")
    assert export_job.main(["--checkpoint", str(checkpoints["b"]), "--output_dir", str(out)]) == 0
    assert export_job.main(["--checkpoint", str(checkpoints["b"]), "--output_dir", str(tmp_path / "fresh")]) == 0
    assert _tree(out) == _tree(tmp_path / "fresh")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh", "hf"]


def test_import_over_an_earlier_import_and_roundtrip(checkpoints, tmp_path):
    out = tmp_path / "imported"
    assert import_job.main(["--hf", str(checkpoints["hf_a"]), "--output_dir", str(out)]) == 0
    assert import_job.main(["--hf", str(checkpoints["hf_a"]), "--output_dir", str(out)]) == 0
    params_a, _, _ = load_model(checkpoints["a"])
    params, _, _ = load_model(out)
    flat = jax.tree_util.tree_leaves_with_path(params_a)
    assert len(flat) == len(jax.tree_util.tree_leaves(params))
    for (path, value), other in zip(flat, jax.tree_util.tree_leaves(params)):
        np.testing.assert_array_equal(value, other, err_msg=str(path))


def test_exports_follow_the_umask(checkpoints, tmp_path):
    previous = os.umask(0o022)
    try:
        assert export_job.main(["--checkpoint", str(checkpoints["a"]), "--output_dir", str(tmp_path / "hf")]) == 0
        assert import_job.main(["--hf", str(tmp_path / "hf"), "--output_dir", str(tmp_path / "ckpt")]) == 0
    finally:
        os.umask(previous)
    for root in (tmp_path / "hf", tmp_path / "ckpt"):
        for p in [root, *root.rglob("*")]:
            mode = stat.S_IMODE(p.stat().st_mode)
            assert mode == (0o755 if p.is_dir() else 0o644), (p, oct(mode))


def test_bad_flags_are_one_line(checkpoints, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        export_job.main(["--checkpoint", str(checkpoints["a"]), "--output_dir", str(tmp_path / "x"),
                         "--max_seq_length", "0"])
    assert exit_info.value.code == 2
    assert "polyret export_hf: argument --max_seq_length: must be at least 1, got 0" in _err_line(capsys)
    assert not (tmp_path / "x").exists()
