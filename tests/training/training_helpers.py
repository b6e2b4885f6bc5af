"""Run training in subprocesses (simulated devices, several hosts, SIGKILL) and read the results."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

HELPER = Path(__file__).parent / "train_helper.py"
ROOT = Path(__file__).resolve().parents[2]


def run_training(out: Path, flags: list[str], devices: int = 1, env: dict | None = None, timeout: int = 600,
                 check: bool = True) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3",
                "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", **(env or {})}
    proc = subprocess.run([sys.executable, str(HELPER), str(out)] + flags, env=full_env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"training failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def load_result(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    data = np.load(path)
    return data["losses"], {k: data[k] for k in data.files if k not in ("losses", "devices", "processes")}
