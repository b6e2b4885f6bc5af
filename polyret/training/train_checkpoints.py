"""Training checkpoints with orbax's CheckpointManager: every N steps, keep the last M, async, resume.

Layout under MODEL_DIR:
  checkpoints/<step>/params/   parameters (orbax StandardCheckpointer; with LoRA only the trained leaves)
  checkpoints/<step>/state/    optimizer state and step
  model_config.json, spiece.model, config.gin, lora_base.json (LoRA runs: the frozen base's path)
`polyret.models.model_folder.load_model(MODEL_DIR or MODEL_DIR/checkpoints/<step>)` reads the parameters back.

Faults (README, "Outputs are never lost"): orbax writes a step into a temp folder and renames it when
complete, so a kill or a full disk never replaces a good step with a half-written one. A full disk stops
the run with `DiskFull` (the folder, the bytes the checkpoint needed; the failed step's temp folder is
removed, the earlier steps are intact). A damaged step (a file truncated or missing, as a crashed copy
leaves it) is moved to MODEL_DIR/damaged_checkpoints/<step> with a warning naming the file, and the run
resumes from the previous good step; with no good step left it refuses in one line (never from scratch).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

import gin
import jax
import numpy as np
import orbax.checkpoint as ocp

from polyret.errors import DiskFull
from polyret.io.disk_space import disk_full_reported

log = logging.getLogger(__name__)
DAMAGED_DIR = "damaged_checkpoints"


class DamagedCheckpoint(ValueError):
    """No checkpoint step under MODEL_DIR can be read back; the message names the file."""


@gin.configurable
@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """How often to checkpoint (steps), how many to keep (None: all), whether to write in the background."""

    every: int = 1000
    keep: int | None = 3
    async_save: bool = True


class TrainCheckpointer:
    def __init__(self, model_dir: str | os.PathLike, config: CheckpointConfig = CheckpointConfig()):
        self.directory = Path(model_dir).absolute() / "checkpoints"
        self._pending: tuple[int, int] | None = None  # (step, bytes) of a save that may still be writing
        options = ocp.CheckpointManagerOptions(save_interval_steps=config.every, max_to_keep=config.keep,
                                               enable_async_checkpointing=config.async_save, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("params", "state"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def should_save(self, step: int) -> bool:
        return self.manager.should_save(step)

    def reached_preemption(self, step: int) -> bool:
        """Multi-process runs: whether `step` is the step all hosts agreed to save at after a SIGTERM
        (JAX's preemption sync point; orbax's `should_save` saves there). Single process: False."""
        return self.manager.reached_preemption(step)

    def save(self, step: int, params: Any, opt_state: Any, force: bool = False) -> bool:
        if not (force or self.manager.should_save(step)) or step in self.manager.all_steps():
            return False
        self.wait()  # a full disk during the previous (async) save is reported as that step's
        self._pending = (step, _nbytes((params, opt_state)))
        with self._disk_full():
            return self.manager.save(step, args=ocp.args.Composite(
                params=ocp.args.StandardSave(params),
                state=ocp.args.StandardSave({"opt_state": opt_state, "step": step})), force=True)

    def restore(self, step: int, abstract_params: Any, abstract_opt_state: Any) -> tuple[Any, Any]:
        restored = self.manager.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract_params),
            state=ocp.args.StandardRestore({"opt_state": abstract_opt_state, "step": 0})))
        return restored["params"], restored["state"]["opt_state"]

    def restore_latest(self, abstract_params: Any, abstract_opt_state: Any) -> tuple[int, Any, Any]:
        """The newest step that reads back -> (step, params, opt_state). Later steps that do not read back
        (a file truncated or missing) are moved to MODEL_DIR/damaged_checkpoints with a warning naming the
        file. If no step reads back (damage, or a run configured differently), nothing is moved and
        `DamagedCheckpoint` names the newest step's file."""
        failed = []
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                params, opt_state = self.restore(step, abstract_params, abstract_opt_state)
                error = None
            except Exception as e:  # noqa: BLE001 (orbax/TensorStore raise several types for a bad file)
                error = e
            if not _agree(error is None):  # every host resumes from the same step
                failed.append((step, _damage(self.directory / str(step), error)))
                continue
            for bad, problem in failed:
                target = self._move_aside(bad)
                log.warning("%s; moved the step to %s and resumed from step %d", problem, target, step)
            return step, params, opt_state
        raise DamagedCheckpoint(f"{failed[0][1]}; no checkpoint in {self.directory} reads back (damaged, or "
                                "written by a run configured differently); restore the files or use a new MODEL_DIR")

    def _move_aside(self, step: int) -> Path:
        damaged = self.directory.parent / DAMAGED_DIR
        target, n = damaged / str(step), 1
        while target.exists():  # an earlier run's damaged copy of the same step is kept too
            target, n = damaged / f"{step}.{n}", n + 1
        if jax.process_index() == 0:
            damaged.mkdir(exist_ok=True)
            shutil.move(str(self.directory / str(step)), target)
        _barrier(f"polyret_damaged_{step}")
        self.manager.reload()
        return target

    def wait(self) -> None:
        with self._disk_full():
            self.manager.wait_until_finished()
        self._pending = None

    @contextlib.contextmanager
    def _disk_full(self) -> Iterator[None]:
        step, needed = self._pending or (None, 0)
        good = [s for s in self.manager.all_steps() if s != step]
        kept = f"the checkpoint of step {max(good)} is intact" if good else "no earlier checkpoint was written"
        try:
            with disk_full_reported(self.directory, needed, "a checkpoint" if step is None
                                    else f"the checkpoint of step {step}", kept):
                yield
        except DiskFull:
            self._pending = None
            self._stop_writing()
            self.remove_failed_temp()
            raise

    def _stop_writing(self) -> None:
        """After a failed save: let orbax's background writers end (they fail too on a full disk) so that
        nothing writes into the temp folder once it is removed and no error surfaces after ours."""
        try:
            self.manager.close()
        except Exception:  # noqa: BLE001 (the same full disk, already reported)
            pass

    def remove_failed_temp(self) -> None:
        """Remove what a failed save left (orbax's temp step folders), freeing the space it took."""
        if jax.process_index() != 0 or not self.directory.is_dir():
            return
        # A writer that has not noticed the failure yet (orbax's `_sharding` metadata, written after the manager
        # is closed) can recreate a temp folder just removed: remove until none is seen for a second (<= 10 s).
        deadline, quiet_since = time.monotonic() + 10, None
        while time.monotonic() < deadline:
            temps = [p for p in self.directory.iterdir() if ".orbax-checkpoint-tmp" in p.name]
            for p in temps:
                shutil.rmtree(p, ignore_errors=True)
            if temps:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= 1:
                return
            time.sleep(0.1)

    def close(self) -> None:
        self.manager.close()


def _nbytes(tree: Any) -> int:
    return int(sum(np.prod(x.shape) * x.dtype.itemsize for x in jax.tree_util.tree_leaves(tree)
                   if hasattr(x, "shape")))


def _agree(ok: bool) -> bool:
    """True only if `ok` on every host (one small all-gather; only at start-up)."""
    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils
    return bool(np.all(multihost_utils.process_allgather(np.array([ok], np.int32))))


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


_PATH = re.compile(r"(/[^\s'\"]+)")


def _damage(step_dir: Path, error: BaseException | None) -> str:
    """`<file>: damaged checkpoint (<what>)`: the first file under the step folder the error names,
    else the first file that is missing or empty, else the step folder."""
    if error is None:  # another host could not read it
        return f"{step_dir}: damaged checkpoint (unreadable on another host)"
    text = str(error)
    named = [m for m in _PATH.findall(text) if str(step_dir) in m]
    reason = " ".join(text.split())[:200]
    if named:
        return f"{named[0].rstrip('.,:;)')}: damaged checkpoint step ({reason})"
    empty = sorted(p for p in step_dir.rglob("*") if p.is_file() and p.stat().st_size == 0)
    where = empty[0] if empty else step_dir
    return f"{where}: damaged checkpoint step ({reason})"


def abstract_like(tree: Any, shardings: Any) -> Any:
    return jax.tree_util.tree_map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
