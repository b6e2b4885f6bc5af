"""Optimizer-state shardings follow each parameter's logical axes by tree path, never by shape.

In this model the attention query/key/value kernels and the out kernel are all [128, 128] but lie on
(embed, joined_kv) and (joined_kv, embed): under tensor parallelism they are sharded on different
dimensions, so any shape-based placement gives some moments the wrong layout.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = Path(__file__).parent / "optimizer_sharding_probe.py"


def _probe(variant: str) -> dict:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    proc = subprocess.run([sys.executable, str(PROBE), variant], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _param_path(state_path: str) -> str:
    """`.inner_states['train'].inner_state[0].mu['encoder']['layers_0']...` -> 'encoder/layers_0/...'."""
    return "/".join(re.findall(r"\['([^']+)'\]", state_path.split(".")[-1]))


@pytest.mark.parametrize("variant", ["plain", "lora"])
def test_every_moment_is_sharded_like_its_parameter(variant):
    report = _probe(variant)
    params = report["params"]
    attention = {k: v for k, v in params.items() if "/attention/" in k and k.endswith("/kernel")}
    assert attention["encoder/layers_0/attention/out/kernel"] != attention["encoder/layers_0/attention/key/kernel"]
    checked = 0
    for row in report["adam"]:
        field = row["path"].split(".")[-1].split("[")[0]
        if field in ("mu", "nu"):
            assert row["spec"] == params[_param_path(row["path"])], row
            checked += 1
        else:
            assert row["shape"] == [] and row["spec"] == [], row  # counters: replicated scalars
    expected = len([k for k in params if variant == "plain" or k.endswith(("lora_a", "lora_b"))])
    assert checked == 2 * expected
    shapes = {_param_path(r["path"]): r["shape"] for r in report["adam"] if ".mu[" in r["path"] or "mu[" in r["path"]}
    for row in report["adafactor"]:
        field = row["path"].split(".")[-1].split("[")[0]
        if row["shape"] in ([], [1]):
            continue  # counters and placeholders of unfactored statistics
        full = params[_param_path(row["path"])]
        if field == "v":
            assert row["spec"] == full, row
        elif field in ("v_row", "v_col"):
            # optax.adafactor reduces v_row over the largest dimension and v_col over the second largest
            # (numpy argsort order); the statistic keeps the other dimension's axis.
            order = sorted(range(2), key=lambda i: shapes[_param_path(row["path"])][i])
            kept = order[0] if field == "v_row" else order[1]
            assert _strip(row["spec"]) == _strip([full[kept]]), row


def _strip(spec: list[str]) -> list[str]:
    while spec and spec[-1] == "None":
        spec = spec[:-1]
    return spec
