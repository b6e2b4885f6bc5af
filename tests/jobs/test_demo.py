"""The demo at CI size: every stage runs, the table is printed, the export reloads with the same rankings,
and a second invocation resumes (nothing is trained again)."""

import json

import pytest

from polyret.jobs import demo as demo_job

pytestmark = pytest.mark.slow


def test_demo_ci_size_runs_and_resumes(tmp_path, capsys):
    assert demo_job.main(["--workdir", str(tmp_path), "--size", "ci", "--languages", "en,de,ja"]) == 0
    out = capsys.readouterr().out
    assert "| xling | ja |" in out and "total time" in out
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["st_agreement"]) == {"en", "de", "ja"}
    assert all(v == 1.0 for v in results["st_agreement"].values())  # exported model ranks exactly as JAX
    steps = sorted(int(p.name) for p in (tmp_path / "round1" / "checkpoints").iterdir() if p.name.isdigit())
    assert steps[-1] == 60
    watched = list((tmp_path / "eval_cache").iterdir()) + [tmp_path / "round1" / "checkpoints" / "60",
                                                          tmp_path / "round2" / "checkpoints" / "20",
                                                          tmp_path / "hf_export" / "model.safetensors"]
    mtimes = {p: p.stat().st_mtime for p in watched}
    assert demo_job.main(["--workdir", str(tmp_path), "--size", "ci", "--languages", "en,de,ja"]) == 0
    assert {p: p.stat().st_mtime for p in watched} == mtimes  # nothing trained, evaluated or exported again
    assert not (tmp_path / "round1" / "checkpoints" / "61").exists()
