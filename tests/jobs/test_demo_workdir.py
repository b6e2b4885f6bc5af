"""The demo's work folder records its settings: a resume with another size or languages is refused in one
line (its stages would mix two runs), a folder with other files is not used, and bad flags fail at once."""

import json

import pytest

from polyret.experiments.template_demo import SETTINGS_FILE, _check_workdir
from polyret.io.fingerprint import FingerprintMismatch
from polyret.io.outputs import OutputError
from polyret.jobs import demo as demo_job


def test_resume_with_other_settings_is_refused(tmp_path):
    settings = {"size": {"num_entities": 40, "round1_steps": 60}, "languages": ["en", "de"]}
    _check_workdir(tmp_path, settings)
    assert json.loads((tmp_path / SETTINGS_FILE).read_text()) == settings
    _check_workdir(tmp_path, settings)  # the same demo resumes
    with pytest.raises(FingerprintMismatch, match=r"size.num_entities \(40 -> 200\)"):
        _check_workdir(tmp_path, {**settings, "size": {"num_entities": 200, "round1_steps": 60}})


def test_a_folder_with_other_files_is_not_used(tmp_path):
    (tmp_path / "thesis.tex").write_text("keep")
    with pytest.raises(OutputError, match="not a polyret demo work folder"):
        _check_workdir(tmp_path, {"size": {}, "languages": ["en"]})
    assert [p.name for p in tmp_path.iterdir()] == ["thesis.tex"]


def test_unknown_language_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        demo_job.main(["--workdir", str(tmp_path / "w"), "--languages", "en,xx"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == \
        "polyret demo: argument --languages: xx not among en,de,fr,ru,ja,zh,ar (see --help)"
    assert not (tmp_path / "w").exists()
