"""polyret study: bad input stops in one line before training; each shipped study runs at its ci size and writes
its report; a SIGKILL during an arm then a rerun keeps the finished arms' metrics bit-identical; the report's
means, CIs, paired tests, Holm correction and TOST are recomputed from the stored per-query scores in closed
form (numpy + the t distribution) and agree."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import t as t_dist

from polyret.jobs import study as job

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shared_data(tmp_path_factory) -> Path:
    """One template data folder for every ci study of this module (Study.data_dir)."""
    return tmp_path_factory.mktemp("study_data") / "data"


def _run(gin_file: str, out: Path, *bindings: str) -> int:
    return job.main([f"--gin_file={gin_file}", "--size", "ci", "--output_dir", str(out),
                     *[f"--gin.{b}" for b in bindings]])


# ------------------------------------------------------------------------------------------ dry runs

@pytest.mark.parametrize("size", ["ci", "cpu", "paper"])
def test_every_shipped_study_plans_at_every_size_without_data(tmp_path, capsys, size):
    """`--dry_run`: every run's gin parses, equal steps and shared settings hold, and nothing is written; the
    paper sizes included (their data is not here)."""
    for name in ("hard_negatives", "data_size", "pretraining", "mtd_vs_mtt", "mtd_mixing"):
        out = tmp_path / name
        assert job.main([f"--gin_file=studies/{name}.gin", "--size", size, "--output_dir", str(out), "--dry_run"]) == 0, \
            capsys.readouterr().err
        printed = capsys.readouterr().out
        assert f"{name} ({size}): the plan checks out" in printed and "| arm | seeds |" in printed
        assert not out.exists()


# ------------------------------------------------------------------------------------------ bad input

def _bad_study(tmp_path: Path, **lines: str) -> Path:
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "text": "a"}\n')
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "a"}\n')
    (tmp_path / "qrels.txt").write_text("q1 0 d1 1\n")
    body = {
        "Study.name": "'bad'",
        "Study.base_gin": "['runs/tiny/swimx_xor.gin']",
        "Study.bindings": "[\"DATA_DIR = '/nonexistent'\"]",
        "Study.arms": "{'a': [], 'b': ['TRAIN_STEPS = 5']}",
        "Study.baseline": "'a'",
        "Study.claim": "'better'",
        "Study.eval_sets": "{'s': @s/EvalSet()}",
        "s/EvalSet.corpus": f"'{tmp_path / 'corpus.jsonl'}'",
        "s/EvalSet.queries": f"'{tmp_path / 'queries.jsonl'}'",
        "s/EvalSet.qrels": f"'{tmp_path / 'qrels.txt'}'",
    }
    body.update({k.replace("__", "/").replace("_DOT_", "."): v and v.replace("{tmp}", str(tmp_path))
                 for k, v in lines.items()})
    path = tmp_path / "bad.gin"
    path.write_text("".join(f"{k} = {v}\n" for k, v in body.items() if v is not None))
    return path


@pytest.mark.parametrize("change, expected", [
    ({"Study_DOT_arms": "{'a': [], 'b': ['no_such_configurable.x = 1']}"}, "no_such_configurable"),
    ({"Study_DOT_arms": "{}", "Study_DOT_baseline": None}, "has no arms"),
    ({"s__EvalSet_DOT_qrels": None}, "has no qrels"),
    ({"Study_DOT_claim": "'equivalent'"}, "TOST margin"),
    ({"Study_DOT_tost_margin": "0.02", "Study_DOT_paper_effect": "0.016"}, "not smaller than the paper's effect"),
    ({"Study_DOT_reference": "'b'"}, "sets no INITIAL_CHECKPOINT_PATH"),
    ({"s__EvalSet_DOT_corpus": "'{tmp}/queries.jsonl'"}, "document id 'd1' (query 'q1') is not in the corpus"),
    ({"Study_DOT_separate_sets": "['s']"}, "one set at least must stay pooled"),
], ids=["unknown gin name", "no arms", "eval set without qrels", "equivalence without margin",
        "margin wider than the paper's effect", "reference without a starting model", "judged passage not in corpus",
        "every set separate"])
def test_bad_input_stops_in_one_line_before_training(tmp_path, capsys, change, expected):
    study = _bad_study(tmp_path, **change)
    out = tmp_path / "out"
    assert _run(str(study), out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
    assert not (out / "runs").exists()  # nothing trained


def test_reference_arm_is_left_out_of_the_training_checks(tmp_path):
    """The untrained reference arm is not held to Study.equal_steps or Study.shared, nor needs a sweep x."""
    from polyret.experiments.study import Paths, load_study, validate
    study_file = _bad_study(tmp_path, Study_DOT_arms="{'a': [], 'b': [], 'start': ['TRAIN_STEPS = 1']}",
                            Study_DOT_claim="'plateau'", Study_DOT_tost_margin="0.05", Study_DOT_plateau_from="0.5",
                            Study_DOT_sweep="{'a': 1.0, 'b': 0.5}", Study_DOT_equal_steps="True",
                            Study_DOT_shared="['%TRAIN_STEPS']", Study_DOT_reference="'start'",
                            Study_DOT_bindings=f"[\"DATA_DIR = '/nonexistent'\", "
                                               f"\"INITIAL_CHECKPOINT_PATH = '{tmp_path}'\"]")
    study = load_study(str(study_file), "ci")
    _, shared = validate(study, Paths(tmp_path / "out", tmp_path / "data", "ci"))
    assert set(shared) == {"a", "b"}


# ------------------------------------------------------------------------------------------ recomputation

def _per_query(out: Path, report: dict) -> dict[str, np.ndarray]:
    """{arm: seed-averaged per-topic scores} on the report's primary set, read from the stored eval files; with
    several sets a query id asked of several of them is one topic, its scores averaged over them."""
    spec = report["study"]
    sets = report["pooled_sets"] if report["primary_set"] == "all" else [report["primary_set"]]
    by_arm = {}
    for arm in spec["arms"]:
        per_topic: dict[str, list[float]] = {}
        for name in sorted(sets):
            seeds = [json.loads((out / "runs" / arm / f"seed{s}" / "eval" / f"{name}.json").read_text())
                     ["per_query"][spec["metric"]] for s in spec["seeds"]]
            for q in seeds[0]:
                per_topic.setdefault(q, []).append(float(np.mean([s[q] for s in seeds])))
        by_arm[arm] = np.array([np.mean(per_topic[q]) for q in sorted(per_topic)])
    return by_arm


def _holm(p: list[float]) -> list[float]:
    order = np.argsort(p)
    adjusted, running = np.empty(len(p)), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return list(adjusted)


def check_report_statistics(out: Path) -> dict:
    report = json.loads((out / "report.json").read_text())
    spec = report["study"]
    analysis = report["results"][spec["metric"]][report["primary_set"]]
    scores = _per_query(out, report)
    for arm, x in scores.items():
        n = len(x)
        half = t_dist.ppf(0.975, n - 1) * x.std(ddof=1) / np.sqrt(n)
        got = analysis["arms"][arm]
        assert got["mean"] == pytest.approx(x.mean(), abs=1e-12)
        assert (got["ci_low"], got["ci_high"]) == pytest.approx((x.mean() - half, x.mean() + half), abs=1e-9)
    tests = analysis.get("vs_baseline", [])
    raw = []
    for test in tests:
        d = scores[test["arm"]] - scores[spec["baseline"]]
        n, se = len(d), d.std(ddof=1) / np.sqrt(len(d))
        t = d.mean() / se
        raw.append(2 * t_dist.sf(abs(t), n - 1))
        assert test["difference"] == pytest.approx(d.mean(), abs=1e-12)
        assert test["t_statistic"] == pytest.approx(t, rel=1e-9)
        assert test["p_value"] == pytest.approx(raw[-1], rel=1e-7, abs=1e-12)
    for test, adjusted in zip(tests, _holm(raw)):
        assert test["p_adjusted"] == pytest.approx(adjusted, rel=1e-7, abs=1e-12)
    for eq in analysis.get("equivalence", []):
        d = scores[eq["arm"]] - scores[eq["other"]]
        n, se, m = len(d), d.std(ddof=1) / np.sqrt(len(d)), spec["tost_margin"]
        p = max(t_dist.sf((d.mean() + m) / se, n - 1), t_dist.cdf((d.mean() - m) / se, n - 1))
        assert eq["p_value"] == pytest.approx(p, rel=1e-7, abs=1e-12)
        assert eq["equivalent"] == (p < spec["alpha"])
    return report


# ------------------------------------------------------------------------------------------ the studies

@pytest.mark.slow
# Four of the five studies end to end (stages and mined negatives; a sweep with TOST; a pre-training stage; three
# mixing strategies with every pair's TOST); mtd_vs_mtt runs below with a kill. Each takes minutes on 2 cores.
@pytest.mark.parametrize("name", ["hard_negatives", "data_size", "pretraining", "mtd_mixing"])
def test_ci_study_end_to_end(tmp_path, shared_data, capsys, name):
    out = tmp_path / name
    # Three of data_size's four fractions still make a sweep with two TOSTs, a minute sooner.
    fewer_arms = ["Study.arms={'eighth': ['DatasetConfig.subsample_fraction = 0.125'], "
                  "'half': ['DatasetConfig.subsample_fraction = 0.5'], 'all': []}",
                  "Study.sweep={'eighth': 0.125, 'half': 0.5, 'all': 1.0}"] if name == "data_size" else []
    assert _run(f"studies/{name}.gin", out, f"Study.data_dir='{shared_data}'", *fewer_arms) == 0
    printed = capsys.readouterr().out
    report = check_report_statistics(out)
    assert report["verdict"] in ("reproduced", "not reproduced", "inconclusive")
    assert (out / "report.md").read_text().startswith(f"# Study {name}")
    assert (out / "arms.png").stat().st_size > 0
    if name == "data_size":
        assert (out / "sweep.png").stat().st_size > 0
    for arm in report["study"]["arms"]:
        assert f"{arm} seed 0:" in printed
        assert (out / "runs" / arm / "seed0" / "eval").glob("*.trec")
    steps = {a: s["total training steps"] for a, s in report["shared_settings"].items()}
    assert len(set(steps.values())) == 1, steps  # equal total steps (stages included)


@pytest.mark.slow
def test_mtd_vs_mtt_kill_during_an_arm_then_rerun(tmp_path, shared_data, capsys):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    data = f"Study.data_dir='{shared_data}'"
    assert _run("studies/mtd_vs_mtt.gin", reference, data) == 0
    report = check_report_statistics(reference)
    shared = report["shared_settings"]
    assert shared["mtt"] == shared["mtd"] and report["study"]["seeds"] == [0, 1]  # same data, teacher, steps, seeds
    assert "'template_mtd_mix_passages'" == shared["mtt"]["%MIXTURE_OR_TASK_NAME"]

    command = [sys.executable, "-m", "polyret.jobs.study", "--gin_file=studies/mtd_vs_mtt.gin", "--size", "ci",
               "--output_dir", str(killed), f"--gin.{data}"]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"})
    second_arm = killed / "runs" / "mtd" / "seed0"
    deadline = time.time() + 600
    while not (second_arm / "checkpoints").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)  # the first arm is evaluated; the second is training (its first checkpoint written)
    assert proc.poll() is None, "the study ended before the kill"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p.relative_to(killed): p.read_bytes() for p in (killed / "runs" / "mtt" / "seed0" / "eval").glob("*")}
    assert finished and not (second_arm / "eval").exists()

    assert _run("studies/mtd_vs_mtt.gin", killed, data) == 0
    for rel, content in finished.items():  # kept as written before the kill, and equal to the uninterrupted run
        assert (killed / rel).read_bytes() == content == (reference / rel).read_bytes()
    after = check_report_statistics(killed)
    for metric, per_set in report["results"].items():
        for name, analysis in per_set.items():
            assert after["results"][metric][name]["arms"]["mtt"]["seed_means"][0] == \
                analysis["arms"]["mtt"]["seed_means"][0]

    # A changed arm is refused in one line before anything trains.
    capsys.readouterr()
    changed = "Study.arms={'mtt': ['train.loss = @TranslateTrainLoss()', 'train.log_every = 5'], " \
              "'mtd': ['train.loss = @KLDistillationLoss()', 'train.log_every = 5']}"
    before = sorted(p for p in killed.rglob("*") if p.is_file())
    assert _run("studies/mtd_vs_mtt.gin", killed, data, changed) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "study_run.json" in err[0] and "differs" in err[0], err
    assert sorted(p for p in killed.rglob("*") if p.is_file()) == before
