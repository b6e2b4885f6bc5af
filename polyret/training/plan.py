"""Memory plan of a training run before a pod is booked: from the run's gin alone (abstract shapes, no
weights, no data), the per-device bytes of parameters, optimizer state, batch and XLA's temporaries
(activations kept for the backward pass plus workspace), for a given mesh, and whether that fits an
accelerator.

The numbers come from XLA itself: the trainer's own step (`trainer.make_train_step`) is jitted with the
trainer's shardings, lowered on abstract arguments and compiled for the mesh; `memory_analysis()` of the
compiled SPMD program is per device. Parameters and optimizer state are also summed from their
shardings (shard shape x itemsize), which must agree with XLA's argument size.

Compiled here on CPU devices (`--xla_force_host_platform_device_count`), so the figures are XLA:CPU's
buffer assignment for the same program; on TPU/GPU fusion differs, and XLA:CPU keeps bf16 matmul
operands in bf16 but may upcast around them. Treat `temp` as an estimate, the state sizes as exact.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Mapping, Sequence

import gin
import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from polyret.configuration import parse_gin
from polyret.models.layer_stack import REMAT_POLICIES
from polyret.models.losses import MatryoshkaLoss
from polyret.models.retrieval_model import build_model, is_created_parameter
from polyret.models.towers import ColBERTConfig, DualEncoderConfig, hidden_size
from polyret.retrieval.scann_index import index_bytes
from polyret.training import partitioning as part
from polyret.training.optimizers import learning_rate_schedule, lora_trainable, make_optimizer
from polyret.training.partitioning import ConfigError
from polyret.training.trainer import make_train_step

GIB = 2 ** 30

# HBM per device (GiB) as the vendors state it; `fits` keeps HEADROOM of it free for the runtime,
# fragmentation and XLA's own reserve.
ACCELERATORS: dict[str, float] = {
    "tpu-v4": 32, "tpu-v5e": 16, "tpu-v5p": 95,
    "a100-40gb": 40, "a100-80gb": 80, "h100-80gb": 80, "h200-141gb": 140,
}
HEADROOM = 0.10
# Rows per query of a per-row feature (hard negatives, distillation passages) when the caller gives none: the
# run's data decides it and the plan has no data, so `polyret plan --rows N` sets it (the paper runs: 7
# negatives for retrofitting, 6 passages for MTD).
DEFAULT_ROWS = 7


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """Per-device memory of one train step on a mesh (bytes)."""

    mesh: Mapping[str, int]
    num_params: int
    params: int
    optimizer: int
    batch: int
    temp: int  # XLA temporaries: saved activations + workspace
    argument: int  # XLA: everything passed in (params + optimizer state + batch + step)
    output: int
    alias: int  # outputs written in place of donated inputs (params, optimizer state)
    generated_code: int
    compile_seconds: float
    # A dual encoder's ScaNN index of `corpus_size` passages at each vector width (the Matryoshka dims too).
    corpus_size: int = 0
    index_bytes: Mapping[int, int] = dataclasses.field(default_factory=dict)

    @property
    def peak(self) -> int:
        """Live bytes at the step's high-water mark: inputs, non-aliased outputs and temporaries."""
        return self.argument + self.output - self.alias + self.temp

    def fits(self, accelerator: str) -> bool:
        return self.peak <= (1 - HEADROOM) * accelerator_bytes(accelerator)

    def summary(self, accelerator: str | None = None) -> str:
        mesh = ",".join(f"{k}={v}" for k, v in self.mesh.items())
        lines = [f"mesh {mesh} ({math.prod(self.mesh.values())} devices); {self.num_params / 1e6:,.2f}M parameters",
                 f"per device: parameters {_gib(self.params)}, optimizer state {_gib(self.optimizer)}, "
                 f"batch {_gib(self.batch)}, activations+temporaries {_gib(self.temp)}",
                 f"peak per device {_gib(self.peak)} (XLA: arguments {_gib(self.argument)} + outputs "
                 f"{_gib(self.output)} - aliased {_gib(self.alias)} + temp {_gib(self.temp)}); "
                 f"compiled in {self.compile_seconds:.0f} s"]
        if self.index_bytes:
            sizes = ", ".join(f"{dim} dims {_gib(size)}" for dim, size in self.index_bytes.items())
            lines.append(f"ScaNN index of {self.corpus_size:,} passages (tree + AH + float32 reorder): {sizes}")
        if accelerator:
            verdict = "fits" if self.fits(accelerator) else "does NOT fit"
            lines.append(f"{accelerator} ({accelerator_bytes(accelerator) / GIB:.0f} GiB, {HEADROOM:.0%} kept free): "
                         f"{verdict}")
        return "\n".join(lines)


def _gib(n: int) -> str:
    return f"{n / GIB:.2f} GiB" if n >= GIB // 4 else f"{n / 2**20:.1f} MiB"


def accelerator_bytes(name: str) -> int:
    if name not in ACCELERATORS:
        raise ConfigError(f"unknown accelerator {name!r}; known: {', '.join(ACCELERATORS)}")
    return int(ACCELERATORS[name] * GIB)


def parse_mesh(text: str) -> dict[str, int]:
    """'data=8,fsdp=4,model=1' -> {'data': 8, 'fsdp': 4, 'model': 1} (missing axes are 1)."""
    sizes = {axis: 1 for axis in part.MESH_AXES}
    for item in filter(None, (s.strip() for s in text.split(","))):
        axis, _, value = item.partition("=")
        if axis not in sizes or not value.isdigit() or int(value) < 1:
            raise ConfigError(f"mesh {text!r}: {item!r} is not AXIS=SIZE with AXIS in {part.MESH_AXES} and SIZE >= 1")
        sizes[axis] = int(value)
    return sizes


# ------------------------------------------------------------------------------------ reading the run's gin

def _value(name: str) -> Any:
    """A bound gin value, with an evaluated reference (`@fn()`, a macro) called."""
    value = gin.query_parameter(name)
    if isinstance(value, gin.config.ConfigurableReference) and value.evaluate:
        value = value.scoped_configurable_fn()
    return value


def _bound(name: str, default: Any = None) -> Any:
    try:
        return _value(name)
    except ValueError:  # not bound
        return default


def _model_config() -> Any:
    reference = gin.query_parameter("train.model_config")
    try:
        return _value("train.model_config")
    except Exception as e:  # noqa: BLE001  (gin wraps what the configurable raised)
        # ColBERT-X reads its marker ids from the tokenizer folder (%VOCABULARY); shapes do not depend on
        # them, so the plan uses the ColBERTConfig that gin binds.
        if "colbert_x_config" in str(e) or "colbert_x_config" in str(getattr(reference, "selector", "")):
            return gin.get_configurable(ColBERTConfig)()
        raise ConfigError(f"cannot build train.model_config from the gin files: {str(e).splitlines()[0]}") from None


@dataclasses.dataclass(frozen=True)
class RunShapes:
    """What the plan needs from a run: model config, loss, optimizer pieces and the global batch."""

    model_config: Any
    loss: Any
    schedule: Any
    task_feature_lengths: Mapping[str, int]
    batch_size: int
    rows: int  # passages per query (distillation) or hard negatives per query: the data's, not the model's


def read_run(files: Sequence[str], bindings: Sequence[str], search_paths: Sequence[str] = (),
             rows: int | None = None) -> RunShapes:
    """Parse the run's gin without finalising (MODEL_DIR, data paths and other REQUIRED macros that do not
    change shapes may stay unset) and read the pieces that set the memory."""
    parse_gin(files, bindings, search_paths, finalize=False)
    model_config = _model_config()
    loss = _bound("train.loss")
    try:
        schedule = _bound("train.learning_rate") or gin.get_configurable(learning_rate_schedule)()
    except Exception:  # noqa: BLE001  (e.g. TRAIN_STEPS unset; the schedule's values never change memory)
        schedule = optax.constant_schedule(1e-3)
    lengths = dict(_value("DatasetConfig.task_feature_lengths"))
    batch_size = int(_value("DatasetConfig.batch_size"))
    # The MTD recipes name their passages per query in %MTD_PASSAGES; other data: --rows or DEFAULT_ROWS.
    rows = rows or int(_bound("%MTD_PASSAGES", 0) or 0) or DEFAULT_ROWS
    return RunShapes(model_config, loss, schedule, lengths, batch_size, rows)


def abstract_batch(converter_cls: Any, lengths: Mapping[str, int], batch_size: int, rows: int) -> dict[str, Any]:
    """The model features of a global batch as ShapeDtypeStructs (no data): token features [B, L] or
    [B, rows, L]; per-passage floats and ids [B, rows]."""
    batch = {}
    token_length = {model: lengths[task] for task, model in converter_cls.TOKEN_FEATURES if task in lengths}
    for name, spec in converter_cls.MODEL_FEATURES.items():
        dtype = jnp.int32 if spec.dtype.is_integer else jnp.float32
        if name in token_length:
            shape = (batch_size, token_length[name]) if spec.rank == 1 else (batch_size, rows, token_length[name])
        else:  # passthrough features, one value per passage (teacher_scores, passage_languages)
            shape = (batch_size, rows)
        batch[name] = jax.ShapeDtypeStruct(shape, dtype)
    return batch


# ------------------------------------------------------------------------------------------------ the plan

def _sharded_bytes(tree: Any, shardings: Any) -> int:
    total = 0
    for leaf, sharding in zip(jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(shardings)):
        total += math.prod(sharding.shard_shape(tuple(leaf.shape))) * jnp.dtype(leaf.dtype).itemsize
    return total


def plan_memory(run: RunShapes, mesh_sizes: Mapping[str, int], devices: Sequence[jax.Device] | None = None
                ) -> MemoryPlan:
    """Compile the run's train step for the mesh on abstract arguments and read XLA's memory analysis."""
    needed = math.prod(mesh_sizes.values())
    devices = list(devices if devices is not None else jax.devices())
    if len(devices) < needed:
        raise ConfigError(f"the mesh {dict(mesh_sizes)} needs {needed} devices, this process has {len(devices)}; "
                          f"set XLA_FLAGS=--xla_force_host_platform_device_count={needed} (the plan job does)")
    mesh = part.create_mesh(devices=devices[:needed], **mesh_sizes)
    rules = part.logical_axis_rules()
    if run.batch_size % part.batch_size_per_shard(mesh):
        raise ConfigError(f"batch size {run.batch_size} is not divisible by the "
                          f"{part.batch_size_per_shard(mesh)} batch shards of the mesh {dict(mesh_sizes)}")
    model = build_model(run.model_config, run.loss)
    abstract, specs = model.abstract_params()
    param_sharding = part.param_shardings(specs, mesh, rules)
    lora = run.model_config.encoder.lora is not None
    # A LoRA run trains its adapters and the heads it creates (the base checkpoint lacks them).
    fresh = {k for k in traverse_util.flatten_dict(abstract) if is_created_parameter(k)}
    trainable = lora_trainable(abstract, fresh) if lora else None
    tx = make_optimizer(run.schedule, trainable=trainable)
    abstract_opt = jax.eval_shape(tx.init, abstract)
    opt_sharding = part.optimizer_state_shardings(abstract_opt, abstract, specs, mesh, rules)
    batch_sharding = part.batch_sharding(mesh)
    converter = model.loss.converter_class(run.task_feature_lengths)
    batch = abstract_batch(converter, run.task_feature_lengths, run.batch_size, run.rows)

    step = make_train_step(model, tx, run.schedule, rules, jax.random.PRNGKey(0), trainable)
    jitted = jax.jit(step, in_shardings=(param_sharding, opt_sharding, batch_sharding, None),
                     out_shardings=(param_sharding, opt_sharding, None), donate_argnums=(0, 1))
    args = (_with(abstract, param_sharding), _with(abstract_opt, opt_sharding),
            {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_sharding) for k, v in batch.items()},
            jax.ShapeDtypeStruct((), jnp.int32))
    start = time.time()
    # jax.set_mesh, not `with mesh:`: only it defines the mesh flax's logical constraints need (jax 0.10).
    with jax.set_mesh(mesh):
        compiled = jitted.lower(*args).compile()
    seconds = time.time() - start
    stats = compiled.memory_analysis()
    return MemoryPlan(
        mesh=dict(mesh_sizes), num_params=sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(abstract)),
        params=_sharded_bytes(abstract, param_sharding), optimizer=_sharded_bytes(abstract_opt, opt_sharding),
        batch=_sharded_bytes(batch, {k: batch_sharding for k in batch}), temp=int(stats.temp_size_in_bytes),
        argument=int(stats.argument_size_in_bytes), output=int(stats.output_size_in_bytes),
        alias=int(stats.alias_size_in_bytes), generated_code=int(stats.generated_code_size_in_bytes),
        compile_seconds=seconds)


def _with(tree: Any, shardings: Any) -> Any:
    return jax.tree_util.tree_map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def with_remat_policy(run: RunShapes, policy: str) -> RunShapes:
    """The run with its encoder's `remat_policy` replaced (execution only: parameters do not change)."""
    model_config = run.model_config
    encoder = dataclasses.replace(model_config.encoder, remat_policy=policy)
    return dataclasses.replace(run, model_config=dataclasses.replace(model_config, encoder=encoder))


def cheapest_remat_policy(run: RunShapes, mesh_sizes: Mapping[str, int], accelerator: str,
                          devices: Sequence[jax.Device] | None = None) -> tuple[str | None, dict[str, MemoryPlan]]:
    """Plan the run under each remat policy, cheapest in compute first (layer_stack.REMAT_POLICIES), and
    stop at the first that fits `accelerator` -> (that policy or None, {policy: plan} of those tried).

    The plan compiles for CPU devices, where host memory is the device's: 'offload_dots' shows no saving
    here (its offloaded activations still count as temporaries), so it is chosen only when its figure fits."""
    accelerator_bytes(accelerator)  # an unknown name fails before any compile
    plans: dict[str, MemoryPlan] = {}
    for policy in REMAT_POLICIES:
        plans[policy] = plan_memory(with_remat_policy(run, policy), mesh_sizes, devices)
        if plans[policy].fits(accelerator):
            return policy, plans
    return None, plans


def vector_widths(run: RunShapes) -> tuple[int, ...]:
    """The widths a dual encoder's vectors are searched at: the full one and, under a MatryoshkaLoss (also
    wrapped, e.g. in a CachedLoss), each of its dims; () for other models."""
    if not isinstance(run.model_config, DualEncoderConfig):
        return ()
    width = run.model_config.projection_dim or hidden_size(run.model_config.encoder)
    loss = run.loss
    while loss is not None and not isinstance(loss, MatryoshkaLoss):
        loss = getattr(loss, "loss", None)
    return tuple(sorted({width, *(d for d in (loss.dims if loss else ()) if d <= width)}, reverse=True))


def plan_run(files: Sequence[str], bindings: Sequence[str], mesh_sizes: Mapping[str, int],
             search_paths: Sequence[str] = (), rows: int | None = None, remat_policy: str | None = None,
             accelerator: str | None = None, corpus_size: int = 1_000_000
             ) -> MemoryPlan | tuple[str | None, dict[str, MemoryPlan]]:
    """`read_run` + `plan_memory`, leaving gin cleared. `remat_policy`: plan with that policy instead of the
    run's; 'auto' (needs `accelerator`): `cheapest_remat_policy` -> (policy or None, plans). A dual encoder's
    plan also gives the ScaNN index bytes of `corpus_size` passages at each `vector_widths`."""
    try:
        run = read_run(files, bindings, search_paths, rows)
        if remat_policy == "auto":
            if accelerator is None:
                raise ConfigError("remat_policy 'auto' needs an accelerator to fit")
            return cheapest_remat_policy(run, mesh_sizes, accelerator)
        if remat_policy is not None:
            run = with_remat_policy(run, remat_policy)
        return dataclasses.replace(plan_memory(run, mesh_sizes), corpus_size=corpus_size,
                                   index_bytes={w: index_bytes(corpus_size, w) for w in vector_widths(run)})
    finally:
        gin.clear_config()
