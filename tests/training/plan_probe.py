"""Plan a tiny run with `polyret.training.plan` and compile the trainer's real step for the same mesh with
real parameters, optimizer state (from `state.setup_state`) and a real batch from the data pipeline; print
both memory analyses as JSON. Run in a subprocess with 4 simulated CPU devices:

  python tests/training/plan_probe.py GIN_FILE DATA_DIR MODEL_DIR data=..,fsdp=..,model=.. [gin bindings...]
"""

import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _device0_bytes(tree) -> int:
    import jax
    device = jax.devices()[0]
    return sum(shard.data.nbytes for leaf in jax.tree_util.tree_leaves(tree)
               for shard in leaf.addressable_shards if shard.device == device)


def real_step(gin_file, bindings, mesh_sizes):
    import gin
    import jax
    import jax.numpy as jnp
    from polyret.configuration import parse_gin
    from polyret.models.retrieval_model import build_model
    from polyret.seqio_tasks.dataset import batched_dataset
    from polyret.training import partitioning as part
    from polyret.training.train_checkpoints import CheckpointConfig
    from polyret.training.state import setup_state
    from polyret.training.trainer import make_train_step
    import seqio

    mesh_bindings = [f"create_mesh.{k}={v}" for k, v in mesh_sizes.items()]
    parse_gin([gin_file], bindings + mesh_bindings)
    q = gin.query_parameter
    value = lambda n: (lambda v: v.scoped_configurable_fn() if isinstance(v, gin.config.ConfigurableReference) else v)(q(n))
    dataset = value("train.dataset")
    dataset.setup()
    mesh, rules = part.create_mesh(), part.logical_axis_rules()
    model = build_model(value("train.model_config"), value("train.loss"))
    task = seqio.get_mixture_or_task(dataset.mixture_or_task_name)
    schedule = value("train.learning_rate")
    state = setup_state(model, mesh, rules, __import__("pathlib").Path(value("train.model_dir")),
                        task.output_features["inputs"].vocabulary, schedule, CheckpointConfig(async_save=False),
                        None, 0)
    sharding = part.batch_sharding(mesh)
    local = next(batched_dataset(dataset.mixture_or_task_name, dataset.task_feature_lengths,
                                             dataset.batch_size, model.feature_converter(task)).as_numpy_iterator())
    batch = {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}
    step = jax.jit(make_train_step(model, state.tx, schedule, rules, jax.random.PRNGKey(1)),
                   in_shardings=(state.param_sharding, state.opt_sharding, sharding, None),
                   out_shardings=(state.param_sharding, state.opt_sharding, None), donate_argnums=(0, 1))
    with jax.set_mesh(mesh):  # as trainer._loop
        stats = step.lower(state.params, state.opt_state, batch, jnp.int32(0)).compile().memory_analysis()
    out = {"params": _device0_bytes(state.params), "optimizer": _device0_bytes(state.opt_state),
           "batch": _device0_bytes(batch), "temp": stats.temp_size_in_bytes,
           "argument": stats.argument_size_in_bytes, "output": stats.output_size_in_bytes,
           "alias": stats.alias_size_in_bytes,
           "batch_shapes": {k: list(v.shape) for k, v in local.items()}}
    state.checkpointer.close()
    gin.clear_config()
    return out


def main():
    gin_file, data_dir, model_dir, mesh_text, *extra = sys.argv[1:]
    from polyret.training.plan import parse_mesh, plan_run, read_run, abstract_batch  # noqa: F401
    mesh = parse_mesh(mesh_text)
    bindings = [f"DATA_DIR='{data_dir}'", f"MODEL_DIR='{model_dir}'"] + extra
    plan = plan_run([gin_file], bindings, mesh)
    planned = {"params": plan.params, "optimizer": plan.optimizer, "batch": plan.batch, "temp": plan.temp,
               "argument": plan.argument, "output": plan.output, "alias": plan.alias, "peak": plan.peak}
    print(json.dumps({"plan": planned, "real": real_step(gin_file, bindings, mesh)}))


if __name__ == "__main__":
    main()
