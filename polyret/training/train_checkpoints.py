"""Training checkpoints with orbax's CheckpointManager: every N steps, keep the last M, async, resume.

Layout under MODEL_DIR:
  checkpoints/<step>/params/   parameters (orbax StandardCheckpointer; with LoRA only the trained leaves)
  checkpoints/<step>/state/    optimizer state and step
  model_config.json, spiece.model, config.gin, lora_base.json (LoRA runs: the frozen base's path)
`polyret.models.model_folder.load_model(MODEL_DIR or MODEL_DIR/checkpoints/<step>)` reads the parameters back.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import gin
import jax
import orbax.checkpoint as ocp


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
        options = ocp.CheckpointManagerOptions(save_interval_steps=config.every, max_to_keep=config.keep,
                                               enable_async_checkpointing=config.async_save, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("params", "state"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def should_save(self, step: int) -> bool:
        return self.manager.should_save(step)

    def save(self, step: int, params: Any, opt_state: Any, force: bool = False) -> bool:
        return self.manager.save(step, args=ocp.args.Composite(
            params=ocp.args.StandardSave(params), state=ocp.args.StandardSave({"opt_state": opt_state, "step": step})),
            force=force)

    def restore(self, step: int, abstract_params: Any, abstract_opt_state: Any) -> tuple[Any, Any]:
        restored = self.manager.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract_params),
            state=ocp.args.StandardRestore({"opt_state": abstract_opt_state, "step": 0})))
        return restored["params"], restored["state"]["opt_state"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def abstract_like(tree: Any, shardings: Any) -> Any:
    return jax.tree_util.tree_map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
