"""Gin configuration shared by the jobs, the demo and the tests: find gin files (a path, a search path, or
polyret's own gin_configs/), parse them with bindings, and train from the result."""

from __future__ import annotations

import logging
import os
from typing import Any, Sequence

import gin

from polyret import GIN_CONFIGS_DIR


class GinConfigError(ValueError):
    """A gin file that cannot be found or parsed; the message is one line."""


def resolve_gin_file(name: str, search_paths: Sequence[str]) -> str:
    """A gin file as given, or found under a search path or polyret's own gin_configs/."""
    for folder in ["", *search_paths, str(GIN_CONFIGS_DIR)]:
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    raise GinConfigError(f"gin file {name!r} not found (looked in ., "
                         f"{', '.join(list(search_paths) + [str(GIN_CONFIGS_DIR)])})")


def parse_gin(files: Sequence[str], bindings: Sequence[str], search_paths: Sequence[str] | str = ()) -> None:
    """Parse gin files and `NAME=VALUE` bindings, then finalize. Every configurable polyret module is
    registered first, so any job can bind ScannConfig, losses, encoders, ..."""
    if isinstance(search_paths, str):
        search_paths = [p for p in search_paths.split(",") if p]
    search_paths = list(search_paths)
    files = [resolve_gin_file(f, search_paths) for f in files]
    import polyret.models.losses  # noqa: F401  (registers the configurables)
    import polyret.retrieval.index  # noqa: F401
    import polyret.training.trainer  # noqa: F401
    for path in search_paths + [str(GIN_CONFIGS_DIR)]:
        gin.add_config_file_search_path(path)
    # gin logs an error for every search-path miss before it finds a file; a real miss still raises.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.CRITICAL)
    try:
        gin.parse_config_files_and_bindings(files, list(bindings), finalize_config=False)
    except (ValueError, KeyError, IOError, NameError, SyntaxError) as e:
        raise GinConfigError(f"gin configuration error: {str(e).splitlines()[0]}") from None
    finally:
        root.setLevel(level)
    gin.finalize()


def train_from_gin(files: Sequence[str], bindings: Sequence[str], search_paths: Sequence[str] | str = (),
                   **train_kwargs: Any):
    """Parse the gin files and bindings, run `train()`, and clear gin again (returns the TrainResult)."""
    from polyret.training.trainer import train
    gin.clear_config()
    try:
        parse_gin(files, bindings, search_paths)
        return train(**train_kwargs)
    finally:
        gin.clear_config()
