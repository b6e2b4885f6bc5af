"""The one gin parser: find gin files (a path, a search path, or polyret's own gin_configs/) and parse them
with `NAME=VALUE` bindings. Every job, the trainer, `plan`, `cache_tasks`, the experiments and the tests
parse through `parse_gin`; this module sits at the bottom of the layers and imports nothing of polyret's
but the package root."""

from __future__ import annotations

import importlib
import logging
import os
from typing import Any, Sequence

import gin

from polyret import GIN_CONFIGS_DIR


class GinConfigError(ValueError):
    """A gin file that cannot be found or parsed; the message is one line."""


# The modules that define gin configurables, named as strings so this bottom layer imports none of them:
# registering them is the caller's request (`modules`), the way gin's own `external_configurable` works.
ALL_CONFIGURABLE_MODULES = ("polyret.models.losses", "polyret.retrieval.pipeline", "polyret.training.trainer")


def resolve_gin_file(name: str, search_paths: Sequence[str]) -> str:
    """A gin file as given, or found under a search path or polyret's own gin_configs/."""
    for folder in ["", *search_paths, str(GIN_CONFIGS_DIR)]:
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    raise GinConfigError(f"gin file {name!r} not found (looked in ., "
                         f"{', '.join(list(search_paths) + [str(GIN_CONFIGS_DIR)])})")


def split_search_paths(search_paths: Sequence[str] | str) -> list[str]:
    """`--gin_search_paths` as given on a command line (comma-separated) or as a list."""
    if isinstance(search_paths, str):
        return [p for p in search_paths.split(",") if p]
    return list(search_paths)


def parse_gin(files: Sequence[str], bindings: Sequence[str] = (), search_paths: Sequence[str] | str = (),
              modules: Sequence[str] = ALL_CONFIGURABLE_MODULES, finalize: bool = True) -> None:
    """Clear gin, then parse gin files and `NAME=VALUE` bindings (and finalize unless `finalize=False`, which
    lets REQUIRED macros a caller does not need stay unset, as `plan` and `cache_tasks` read a run).

    The configurables of `modules` are registered first. A caller that needs only a few names them
    (evaluate on precomputed vectors: the search index, without the model code, JAX and TensorFlow); a
    config that names a configurable outside them still works: every module is then registered and the
    config parsed again."""
    search_paths = split_search_paths(search_paths)
    files = [resolve_gin_file(f, search_paths) for f in files]
    for path in search_paths + [str(GIN_CONFIGS_DIR)]:
        gin.add_config_file_search_path(path)
    gin.clear_config()
    for module in modules:
        importlib.import_module(module)
    try:
        _parse(files, bindings)
    except GinConfigError as e:
        if "No configurable matching" not in str(e) or set(ALL_CONFIGURABLE_MODULES) <= set(modules):
            raise
        for module in ALL_CONFIGURABLE_MODULES:
            importlib.import_module(module)
        gin.clear_config()  # drop what the failed parse bound before it stopped
        _parse(files, bindings)
    if finalize:
        gin.finalize()


def bound_value(binding: str) -> Any:
    """What the parsed config binds to `binding` ('train.model_dir'), a macro (%MODEL_DIR) resolved to its
    value; None when nothing is bound."""
    try:
        value = gin.query_parameter(binding)
    except ValueError:
        return None
    if isinstance(value, gin.config.ConfigurableReference) and value.evaluate:
        return value.scoped_configurable_fn()
    return value


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
