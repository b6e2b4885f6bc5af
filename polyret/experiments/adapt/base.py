"""Stage base/: the base model as a polyret checkpoint (imported from Hugging Face, or used in place)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from polyret.experiments.adapt.config import AdaptConfig, default_base, prompt_overrides
from polyret.experiments.adapt.stage_files import stage_dir
from polyret.io.fingerprint import folder_fingerprint
from polyret.models.conversion import import_checkpoint, save_imported
from polyret.models.model_names import resolve_model


def import_base(config: AdaptConfig, out: Path, languages: Sequence[str]) -> tuple[Path, dict[str, Any]]:
    """-> (polyret checkpoint of the base, its fingerprint). A polyret checkpoint is used where it is; a
    Hugging Face / sentence-transformers folder (or a model name, `default_base(languages)` when none is
    given) is imported into out/base."""
    name = config.base or default_base(languages)
    try:
        source = resolve_model(name)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"--base {e}" if config.base else f"--base not given; the default for these "
                                f"languages: {e}") from None
    fingerprint = {"base": folder_fingerprint(source), **({"prompts": prompt_overrides(config)}
                                                           if prompt_overrides(config) else {})}
    if (source / "model_config.json").is_file():
        return source, fingerprint
    if not (source / "config.json").is_file():
        raise ValueError(f"--base {source}: neither a polyret checkpoint (model_config.json) nor a Hugging Face "
                         "folder (config.json)")

    def build(tmp: Path) -> None:
        params, model_config = import_checkpoint(hf_path=str(source))
        save_imported(params, model_config, tmp / "checkpoint", str(source))

    stage_dir(out / "base", "adapt_base", fingerprint, build)
    return out / "base" / "checkpoint", fingerprint
