"""Run training in subprocesses (simulated devices, several hosts, SIGKILL) and read the results."""

import os
import re
import subprocess
import sys
import threading
import time
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


# ------------------------------------------------------------- the train job as a user runs it (faults)

# TQDM_MININTERVAL=0 (tqdm reads TQDM_* defaults from the environment): the bar prints every step, so a
# follower sees each step of a tiny run (by default it refreshes every 0.1 s, a dozen tiny steps apart).
TRAIN_ENV = {"JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3", "TQDM_MININTERVAL": "0"}
_BAR = re.compile(r"training:\s+\d+%\|[^|]*\|\s*(\d+)/\d+")
_OURS = re.compile(r"polyret \w+: ")


def train_argv(model_dir: Path, data_dir: Path, steps: int, *extra: str) -> list[str]:
    """`polyret train` on the tiny config: checkpoints only at the end (every=1000) unless `extra` says."""
    return [sys.executable, "-m", "polyret.jobs.train", "--gin_file=runs/tiny/swimx_xor.gin",
            f"--gin.MODEL_DIR='{model_dir}'", f"--gin.DATA_DIR='{data_dir}'", f"--gin.TRAIN_STEPS={steps}",
            "--gin.CheckpointConfig.every=1000", "--gin.t5_config.dropout_rate=0.1", *extra]


class TrainJob:
    """A `polyret train` process whose progress bar is followed (`step`), so a test can signal it at a
    chosen step."""

    def __init__(self, argv: list[str], devices: int = 1):
        env = {**os.environ, **TRAIN_ENV, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
        self.proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.step, self.stderr, self.stdout = 0, b"", b""
        self._threads = [threading.Thread(target=self._read_err, daemon=True),
                         threading.Thread(target=self._read_out, daemon=True)]
        for t in self._threads:
            t.start()

    def _read_err(self) -> None:
        while chunk := self.proc.stderr.read1(4096):
            self.stderr += chunk
            steps = _BAR.findall(self.stderr[-400:].decode("utf-8", "replace"))
            if steps:
                self.step = max(self.step, int(steps[-1]))

    def _read_out(self) -> None:
        while chunk := self.proc.stdout.read1(4096):
            self.stdout += chunk

    def wait_for_step(self, step: int, timeout: float = 600) -> bool:
        """True once the bar shows `step` (False if the job ended first)."""
        deadline = time.time() + timeout
        while self.step < step:
            if self.proc.poll() is not None or time.time() > deadline:
                return False
            time.sleep(0.01)
        return True

    def finish(self, timeout: float = 600) -> tuple[int, str]:
        self.proc.wait(timeout)
        for t in self._threads:
            t.join(10)
        return self.proc.returncode, self.stderr.decode("utf-8", "replace")


def last_line(stderr: str) -> str:
    """The job's own last line (`polyret <job>: ...`); libraries' warnings may be flushed after it."""
    lines = [line.strip() for line in re.split(r"[\r\n]+", stderr) if line.strip()]
    # Ours may follow a progress bar on the same line (the bar ends without a newline when a run stops).
    ours = [line[match.start():] for line in lines if (match := _OURS.search(line))]
    return (ours or [line for line in lines if not _BAR.search(line)] or [""])[-1]


def checkpoint_steps(model_dir: Path) -> list[int]:
    folder = Path(model_dir) / "checkpoints"
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []


def checkpoint_arrays(model_dir: Path, step: int) -> dict[str, np.ndarray]:
    """Parameters and optimizer state of one step, as numpy (read with orbax directly)."""
    import jax
    import orbax.checkpoint as ocp
    folder = Path(model_dir) / "checkpoints" / str(step)
    out = {}
    for item in ("params", "state"):
        checkpointer = ocp.PyTreeCheckpointer()
        tree = checkpointer.metadata(folder / item).item_metadata.tree
        as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)  # any topology
        for path, value in jax.tree_util.tree_leaves_with_path(checkpointer.restore(folder / item,
                                                                                    restore_args=as_numpy)):
            out[f"{item}{jax.tree_util.keystr(path)}"] = np.asarray(value)
    return out
