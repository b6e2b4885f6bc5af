"""Jobs keep compiled programs on disk even when the cache folder holds entries that a JAX process without a
size cap wrote (no `-atime` file: jax-ml/jax#39880 makes every capped write fail on them)."""

import os
import subprocess
import sys
from pathlib import Path

COMPILE = "import jax, jax.numpy as jnp; jax.jit(lambda x: jnp.sin(x) * {k})(jnp.ones(3)).block_until_ready()"


def _python(code: str, cache: Path) -> None:
    """`code` in a fresh Python whose JAX keeps every program in `cache`, with JAX's default of no size cap."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": str(cache),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    env.pop("JAX_COMPILATION_CACHE_MAX_SIZE", None)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Error writing persistent compilation cache entry" not in proc.stderr, proc.stderr[-3000:]


def test_a_job_caches_its_programs_beside_entries_written_without_a_cap(tmp_path):
    cache = tmp_path / "xla"
    _python(COMPILE.format(k=2), cache)  # JAX's default: no cap, so no access-time files
    uncapped = set(cache.glob("*-cache"))
    assert uncapped and not list(cache.glob("*-atime"))
    _python("from polyret.jobs.common import enable_compilation_cache; enable_compilation_cache(); "
            + COMPILE.format(k=3), cache)
    written = set(cache.glob("*-cache")) - uncapped
    assert written, "the job's program was not cached"
    for entry in written | uncapped:
        assert entry.with_name(entry.name.removesuffix("-cache") + "-atime").exists(), entry
