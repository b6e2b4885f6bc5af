"""The cpu studies' Debian data keeps the Translate-Distill teacher and the base it was written with: asking the
same data folder for another teacher or another base stops in one line instead of mixing two."""

import json

import pytest

from polyret.experiments import study_debian


@pytest.mark.parametrize("written, wanted", [("minilm", "/ckpt/ce"), ("cross_encoder:/ckpt/ce", None),
                                             ("cross_encoder:/ckpt/ce", "/ckpt/other")])
def test_another_teacher_for_a_written_data_folder_is_refused(tmp_path, written, wanted):
    (tmp_path / "teacher.json").write_text(json.dumps({"teacher": written}))
    with pytest.raises(ValueError, match=r"Translate-Distill scores are .*another data folder"):
        study_debian._write_mtd(tmp_path, tmp_path / "set", ["en", "de"], wanted)


def test_another_base_for_a_written_data_folder_is_refused(tmp_path):
    (tmp_path / "base.json").write_text(json.dumps({"base": "all-MiniLM-L6-v2"}))
    with pytest.raises(ValueError, match=r"written with the base 'all-MiniLM-L6-v2', not 'multilingual-e5-small'"):
        study_debian._import_base(tmp_path, "multilingual-e5-small")
    assert not (tmp_path / "dual_encoder").exists()


def test_a_data_folder_from_before_the_base_record_is_refused(tmp_path):
    (tmp_path / "teacher.json").write_text(json.dumps({"teacher": "minilm"}))
    with pytest.raises(ValueError, match=r"earlier polyret from all-MiniLM-L6-v2 \(no base.json\)"):
        study_debian._import_base(tmp_path, "multilingual-e5-small")
