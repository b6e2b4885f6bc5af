"""The cpu studies' Debian data keeps the Translate-Distill teacher it was written with: asking the same data
folder for another teacher stops in one line instead of mixing two teachers' scores."""

import json

import pytest

from polyret.experiments import study_debian


@pytest.mark.parametrize("written, wanted", [("minilm", "/ckpt/ce"), ("cross_encoder:/ckpt/ce", None),
                                             ("cross_encoder:/ckpt/ce", "/ckpt/other")])
def test_another_teacher_for_a_written_data_folder_is_refused(tmp_path, written, wanted):
    (tmp_path / "teacher.json").write_text(json.dumps({"teacher": written}))
    with pytest.raises(ValueError, match=r"Translate-Distill scores are .*another data folder"):
        study_debian._write_mtd(tmp_path, tmp_path / "set", ["en", "de"], wanted)
