"""Gin configuration shared by the jobs, the demo and the tests: find gin files (a path, a search path, or
polyret's own gin_configs/), parse them with bindings, and train from the result."""

from __future__ import annotations

import importlib
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


# Modules that define gin configurables: imported before parsing so a config may name any of them.
CONFIGURABLE_MODULES = ("polyret.models.losses", "polyret.retrieval.index", "polyret.training.trainer")


def parse_gin(files: Sequence[str], bindings: Sequence[str], search_paths: Sequence[str] | str = (),
              modules: Sequence[str] = CONFIGURABLE_MODULES) -> None:
    """Parse gin files and `NAME=VALUE` bindings, then finalize. The configurables of `modules` (by default
    every configurable polyret module, so any job can bind ScannConfig, losses, encoders, ...) are
    registered first. A job that needs only a few names them (evaluate on precomputed vectors: the search
    index, without the model code, JAX and TensorFlow that the others import); a config that names a
    configurable outside them still works: every module is then registered and the config parsed again."""
    if isinstance(search_paths, str):
        search_paths = [p for p in search_paths.split(",") if p]
    search_paths = list(search_paths)
    files = [resolve_gin_file(f, search_paths) for f in files]
    for path in search_paths + [str(GIN_CONFIGS_DIR)]:
        gin.add_config_file_search_path(path)
    for module in modules:
        importlib.import_module(module)
    try:
        _parse(files, bindings)
    except GinConfigError as e:
        if "No configurable matching" not in str(e) or set(CONFIGURABLE_MODULES) <= set(modules):
            raise
        for module in CONFIGURABLE_MODULES:
            importlib.import_module(module)
        gin.clear_config()  # drop what the failed parse bound before it stopped
        _parse(files, bindings)
    gin.finalize()


def _parse(files: Sequence[str], bindings: Sequence[str]) -> None:
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
