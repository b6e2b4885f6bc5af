"""What every job shares: t5x-style gin flags (`--gin_file`, `--gin.NAME=VALUE`, `--gin_search_paths`),
multi-host start-up, and one error path (bad input: one line naming the file/flag, exit 2; anything
unexpected: the traceback)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable

import gin

from polyret import GIN_CONFIGS_DIR


class UsageError(ValueError):
    """A bad flag or flag combination; the message names the flag."""


def add_gin_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gin_file", action="append", default=[], help="gin file (repeatable)")
    parser.add_argument("--gin_search_paths", default="", help="comma-separated folders to find gin files in")


def parse_args_with_gin(parser: argparse.ArgumentParser, argv: list[str] | None) -> tuple[argparse.Namespace,
                                                                                           list[str]]:
    """argparse flags plus `--gin.NAME=VALUE` bindings (returned in order)."""
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    bindings = []
    for item in rest:
        if not item.startswith("--gin."):
            parser.error(f"unknown flag {item!r} (gin bindings are written --gin.NAME=VALUE)")
        bindings.append(item[len("--gin."):])
    return args, bindings


def resolve_gin_file(name: str, search_paths: list[str]) -> str:
    """A gin file as given, or found under a search path or polyret's own gin_configs/."""
    for folder in ["", *search_paths, str(GIN_CONFIGS_DIR)]:
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    raise UsageError(f"--gin_file {name!r} not found (looked in ., "
                     f"{', '.join(search_paths + [str(GIN_CONFIGS_DIR)])})")


def parse_gin(files: list[str], bindings: list[str], search_paths: list[str] | str = ()) -> None:
    """Parse gin files and bindings (gin's own errors become one-line UsageErrors), then finalize."""
    if isinstance(search_paths, str):
        search_paths = [p for p in search_paths.split(",") if p]
    search_paths = list(search_paths)
    files = [resolve_gin_file(f, search_paths) for f in files]
    import polyret.retrieval.index  # noqa: F401  (ScannConfig: reachable from every job's --gin flags)
    for path in search_paths + [str(GIN_CONFIGS_DIR)]:
        gin.add_config_file_search_path(path)
    # gin logs an error for every search-path miss before it finds a file; a real miss still raises.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.CRITICAL)
    try:
        gin.parse_config_files_and_bindings(files, bindings, finalize_config=False)
    except (ValueError, KeyError, IOError, NameError, SyntaxError) as e:
        raise UsageError(f"gin configuration error: {str(e).splitlines()[0]}") from None
    finally:
        root.setLevel(level)
    gin.finalize()


def initialize_distributed(multihost: bool, coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
    if not (multihost or coordinator_address):
        return
    import jax
    # CPU hosts need a collectives backend (no effect on TPU/GPU); must be set before the backend starts.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)


def expected_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input or configuration (reported in one line), not a bug."""
    from polyret.io.formats import DataError
    from polyret.training.partitioning import ConfigError
    return (UsageError, DataError, ConfigError, FileNotFoundError)


def run_main(job: str, body: Callable[[], int | None]) -> int:
    """Run a job's body: expected errors print `job: message` and return 2; the rest propagate."""
    try:
        return body() or 0
    except expected_errors() as e:
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"polyret {job}: {message}", file=sys.stderr)
        return 2
