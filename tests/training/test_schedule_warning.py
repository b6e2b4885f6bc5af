"""A run whose warmup outlasts its training steps says so, once, with the peak rate it will reach (checked by
evaluating the schedule at every step of the run)."""

import gin
import numpy as np

from polyret.configuration import parse_gin
from polyret.training.optimizers import learning_rate_schedule


def test_swimx_run_shortened_below_its_warmup_warns_with_its_peak(capsys):
    parse_gin(["runs/swimx_miracl.gin"], ["TRAIN_STEPS = 500"],
              modules=("polyret.models.losses", "polyret.training.trainer"), finalize=False)
    try:
        schedule = learning_rate_schedule()  # as the trainer builds it: every value from the run's gin
    finally:
        gin.clear_config()
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("WARNING: learning_rate_schedule: warmup_steps 1000 >= 500")
    peak = max(float(schedule(step)) for step in range(500))
    assert f"peaks at {peak:.3g} " in lines[0] and "(50% of base_learning_rate 0.001)" in lines[0]
    np.testing.assert_allclose(peak, 1e-3 * 499 / 1000, rtol=1e-6)


def test_no_warning_when_the_warmup_fits(capsys):
    learning_rate_schedule(1e-3, "linear", warmup_steps=1000, total_steps=30000)
    learning_rate_schedule(1e-3, "constant", warmup_steps=0, total_steps=10)
    assert capsys.readouterr().err == ""
