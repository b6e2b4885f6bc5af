"""SIGKILL export_hf, import_checkpoint, encode, generate_sap and the demo at random moments (one kill at a
uniform moment of the run, one while the job writes): the output is the previous one intact or the new one
complete (or a consistent resumable part), never neither; the rerun ends identical to an uninterrupted run
with no temp folder left. benchmarks/kill_jobs.py runs the same harness 20 times per job."""

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

_spec = importlib.util.spec_from_file_location(
    "kill_jobs", Path(__file__).resolve().parents[2] / "benchmarks" / "kill_jobs.py")
kill_jobs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kill_jobs)


@pytest.mark.parametrize("job,kills", [("export_hf", 1), ("import_checkpoint", 1), ("encode", 1),
                                       ("generate_sap", 2), ("demo", 1)])
def test_killed_job_loses_nothing_and_resumes_identically(job, kills, tmp_path):
    result = kill_jobs.run_case(job, kills, tmp_path, seed=1, log=lambda line: None)
    assert result["failures"] == [], result
    assert sum(result["states"].values()) == kills
    assert set(result["states"]) <= {"previous", "new", "partial", "finished"}, result
