"""`polyret cache_tasks` caches a run's tasks (seqio's Beam pipeline, DirectRunner) and training from the
cache gives the losses of training without it; bad folders and uncached tasks fail in one line."""

import json

import numpy as np

from polyret.training.trainer import train_from_gin
from polyret.jobs import cache_tasks, train

ROWS = 16  # = BATCH_SIZE: every batch is the whole data, so the cache's shuffled order cannot change a loss


def _run_flags(tmp_path, spm, mixture, text="the quick brown fox jumps"):
    swim = tmp_path / f"{mixture}.jsonl"
    swim.write_text("".join(json.dumps({"_id": f"q{i}", "lang": "German", "code": "de",
                                        "query": f"wo ist der schnelle hund {i}", "title": f"T{i}",
                                        "text": f"{text} {i} " + "dog " * (i % 3)}) + "\n"
                            for i in range(ROWS)), encoding="utf-8")
    return ["--gin_file=runs/tiny/swimx_xor.gin", f"--gin.DATA_DIR='{tmp_path}/unused'",
            "--gin.DatasetConfig.setup=@swim_ir_data_setup", f"--gin.swim_ir_data_setup.files={{'x': '{swim}'}}",
            f"--gin.swim_ir_data_setup.vocabulary_path='{spm}'", f"--gin.swim_ir_data_setup.mixture='{mixture}'",
            f"--gin.MIXTURE_OR_TASK_NAME='{mixture}'", "--gin.DatasetConfig.shuffle=False",
            f"--gin.BATCH_SIZE={ROWS}", "--gin.TRAIN_STEPS=3"]


def _bindings(flags):
    return [f[len("--gin."):] for f in flags if f.startswith("--gin.")]


def test_cache_then_train_from_cache_gives_the_same_losses(tmp_path, tiny_spm, capsys):
    flags = _run_flags(tmp_path, tiny_spm, "cj_pairs")
    cache = tmp_path / "cache"
    assert cache_tasks.main(flags + ["--output_cache_dir", str(cache), "--num_shards", "2"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("cj_pairs_x: cached in ") and f"{ROWS} train examples in 2 shards" in out[0]
    assert (cache / "cj_pairs_x" / "COMPLETED").exists()

    runs = {}
    for cached in (False, True):
        extra = [f"MODEL_DIR='{tmp_path}/model_{cached}'"]
        if cached:
            extra += ["DatasetConfig.use_cached=True", f"DatasetConfig.cache_dirs=['{cache}']"]
            # Other text in the source file: only a run that reads the cache still sees the original pairs.
            _run_flags(tmp_path, tiny_spm, "cj_pairs", text="a lazy cat sleeps")
        runs[cached] = train_from_gin(["runs/tiny/swimx_xor.gin"], _bindings(flags) + extra, progress=False).losses
    assert len(runs[True]) == 3 and runs[False][0] != runs[False][-1]
    np.testing.assert_allclose(runs[True], runs[False], rtol=1e-5)


def test_uncached_task_and_foreign_folder_fail_in_one_line(tmp_path, tiny_spm, capsys):
    flags = _run_flags(tmp_path, tiny_spm, "cj_other")
    empty = tmp_path / "empty_cache"
    empty.mkdir()
    code = train.main(flags + [f"--gin.MODEL_DIR='{tmp_path}/m'", "--gin.DatasetConfig.use_cached=True",
                               f"--gin.DatasetConfig.cache_dirs=['{empty}']"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("polyret train: task 'cj_other_x' is not cached in ") and str(empty) in err[0]
    assert not (tmp_path / "m" / "checkpoints").exists()

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert cache_tasks.main(flags + ["--output_cache_dir", str(foreign)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("polyret cache_tasks: ") and "refusing to replace it" in err[0]
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
