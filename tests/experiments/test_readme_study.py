"""The README's "your own data" study, as written there: its gin block (read from README.md, only the paths, the
step count and the batch changed) runs `polyret study` on a BEIR folder this test writes, with the real
all-MiniLM-L6-v2 imported by `polyret import_checkpoint`; no Python of the user's."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from beir_folder import write_beir

from polyret.io.formats import read_id_text, read_qrels
from polyret.jobs import import_checkpoint as import_job
from polyret.jobs import study as study_job
from polyret.seqio_tasks.templates import write_template_dataset

ROOT = Path(__file__).resolve().parents[2]


def readme_block(marker: str) -> str:
    """The fenced block of README.md whose first line is `marker`."""
    blocks = re.findall(r"```(?:gin|bash)\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    found = [b for b in blocks if b.startswith(marker)]
    assert len(found) == 1, f"README.md: {len(found)} blocks start with {marker!r}"
    return found[0]


def beir_from_template(out: Path, data: dict) -> Path:
    """A BEIR folder with train and test qrels from the template data's English."""
    splits = ("train", "test")
    queries = {q: t for split in splits
               for q, t in read_id_text(data["queries"] / split / "en.jsonl", with_title=False).items()}
    return write_beir(out, read_id_text(data["corpus"] / "en.jsonl", with_title=True), queries,
                      {split: read_qrels(data["qrels"] / split / "en.mono.txt") for split in splits})


@pytest.mark.slow
def test_readme_study_on_a_beir_folder_runs_from_gin_alone(tmp_path, capsys):
    beir = beir_from_template(tmp_path / "my_beir", write_template_dataset(tmp_path / "tpl", num_entities=24,
                                                                    languages=("en",)))
    ckpt = tmp_path / "minilm"
    assert import_job.main(["--hf", "all-MiniLM-L6-v2", "--output_dir", str(ckpt)]) == 0
    study = readme_block("# my_study.gin")
    for old, new in [("/data/my_beir", str(beir)), ("/ckpt/minilm", str(ckpt)),
                     ("'TRAIN_STEPS = 500'", "'TRAIN_STEPS = 3', 'BATCH_SIZE = 4'")]:
        assert old in study, old
        study = study.replace(old, new)
    (tmp_path / "my_study.gin").write_text(study)
    command = readme_block("polyret study --gin_file=my_study.gin").split()
    assert command[:2] == ["polyret", "study"]
    argv = [a.replace("my_study.gin", str(tmp_path / "my_study.gin")).replace("/runs/my_data_size",
                                                                              str(tmp_path / "out"))
            for a in command[2:]]
    # Sized for the suite: one seed, two fractions and the untrained start.
    argv += ["--gin.cpu/Study.seeds=[0]",
             "--gin.cpu/Study.arms={'half': ['DatasetConfig.subsample_fraction = 0.5'], 'all': [], 'start': []}",
             "--gin.Study.sweep={'half': 0.5, 'all': 1.0}"]
    assert study_job.main(argv) == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert set(report["study"]["arms"]) == {"half", "all", "start"}
    assert (tmp_path / "out" / "runs" / "all" / "seed0" / "eval").is_dir()
    # The report speaks of the user's data, not of the Debian set the shipped cpu size uses.
    assert "Debian" not in (tmp_path / "out" / "report.md").read_text()
