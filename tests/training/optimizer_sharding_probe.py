"""Run under 8 simulated devices: place Adam / Adafactor / LoRA-masked optimizer states on a tensor-parallel
mesh and check every state leaf against its own parameter's sharding (printed as JSON for the test)."""

import json
import sys

import jax
import optax
from flax import traverse_util

from polyret.models.lora import LoraConfig
from polyret.models.retrieval_model import build_model
from polyret.models.t5 import T5Config
from polyret.models.towers import DualEncoderConfig
from polyret.training import partitioning as part
from polyret.training.optimizers import lora_trainable


def main() -> None:
    lora = LoraConfig(rank=4) if sys.argv[1] == "lora" else None
    # d_model == heads * d_kv: query/key/value [d, d] on (embed, joined_kv), out [d, d] on (joined_kv, embed).
    encoder = T5Config(vocab_size=128, d_model=128, num_heads=4, d_kv=32, d_ff=256, num_layers=1, lora=lora)
    model = build_model(DualEncoderConfig(encoder=encoder, projection_dim=128))
    mesh = part.create_mesh(data=2, model=4)
    rules = part.logical_axis_rules("tensor_parallel")
    shapes, specs = model.abstract_params()
    param_sharding = part.param_shardings(specs, mesh, rules)
    params = jax.jit(lambda r: model.init(r)[0], out_shardings=param_sharding)(jax.random.PRNGKey(0))
    optimizers = {"adam": optax.adamw(1e-3), "adafactor": optax.adafactor(1e-3, min_dim_size_to_factor=32)}
    trainable = lora_trainable(params, set()) if lora else None
    report = {}
    for name, tx in optimizers.items():
        if trainable is not None:
            labels = jax.tree_util.tree_map(lambda t: "train" if t else "freeze", trainable)
            tx = optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()}, labels)
        opt_shapes = jax.eval_shape(tx.init, shapes)
        opt_sharding = part.optimizer_state_shardings(opt_shapes, shapes, specs, mesh, rules)
        state = jax.jit(tx.init, out_shardings=opt_sharding)(params)
        rows = []
        for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
            rows.append({"path": jax.tree_util.keystr(path), "shape": list(leaf.shape),
                         "spec": [str(a) for a in leaf.sharding.spec]})
        report[name] = rows
    report["params"] = {"/".join(k): [str(a) for a in v.sharding.spec]
                        for k, v in traverse_util.flatten_dict(params).items()}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
