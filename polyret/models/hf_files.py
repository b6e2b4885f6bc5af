"""Hugging Face checkpoint files as every encoder family reads and writes them: config.json, safetensors
(single or sharded, bf16/fp16 upcast to float32), tokenizer files, and the pad-row swap between Hugging
Face's ids and polyret's (polyret pads with 0; see polyret/models/bert.py). Only numpy and safetensors."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "sentencepiece.bpe.model", "added_tokens.json")


def read_hf_config(folder: str | os.PathLike) -> dict[str, Any]:
    config_file = Path(folder) / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file}: missing")
    try:
        return json.loads(config_file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{config_file}: not valid JSON: {e}") from e


def read_safetensors(folder: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every tensor of model.safetensors (or a sharded index) as float32 numpy (bf16/fp16 upcast)."""
    folder = Path(folder)
    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        files = sorted({folder / f for f in json.loads(index.read_text())["weight_map"].values()})
    else:
        raise FileNotFoundError(f"{folder}: no model.safetensors or model.safetensors.index.json "
                                "(PyTorch .bin checkpoints: re-save them with safe_serialization=True)")
    tensors = {}
    for f in files:
        try:
            # The flax framework reads bfloat16 too, which numpy cannot.
            with safe_open(str(f), framework="flax") as reader:
                for key in reader.keys():
                    tensors[key] = np.asarray(reader.get_tensor(key).astype("float32"))
        except Exception as e:
            raise ValueError(f"{f}: cannot read safetensors: {e}") from e
    return tensors


def write_hf_folder(out: str | os.PathLike, tensors: dict[str, np.ndarray], config: dict[str, Any]) -> None:
    """model.safetensors (PyTorch names, as `from_pretrained` reads them) + config.json into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2))


def has_tokenizer_files(folder: str | os.PathLike) -> bool:
    return any((Path(folder) / name).is_file() for name in TOKENIZER_FILES)


def copy_tokenizer_files(source: str | os.PathLike, target: str | os.PathLike, required: bool = True) -> None:
    """Copy a Hugging Face tokenizer's files (tokenizer.json, vocab.txt, ...) from one folder to another."""
    found = [name for name in TOKENIZER_FILES if (Path(source) / name).is_file()]
    if not found:
        if required:
            raise FileNotFoundError(f"{source}: no tokenizer files ({', '.join(TOKENIZER_FILES)})")
        return
    Path(target).mkdir(parents=True, exist_ok=True)
    for name in found:
        shutil.copyfile(Path(source) / name, Path(target) / name)


def swap_pad_row(table: np.ndarray, pad_token_id: int) -> np.ndarray:
    """Swap rows 0 and `pad_token_id` (HF <-> polyret ids; its own inverse)."""
    if pad_token_id == 0:
        return table
    out = table.copy()
    out[[0, pad_token_id]] = table[[pad_token_id, 0]]
    return out


def map_tensors(tensors: dict[str, np.ndarray], name_map: list[tuple[str, str, bool]], source: str,
                hint: str) -> dict[tuple[str, ...], np.ndarray]:
    """HF state dict -> our flat parameter dict by a family's name map (ours, hf, transpose?); a missing
    tensor raises one ValueError naming it and `hint` (the config fields that decide which tensors exist)."""
    flat = {}
    for ours, hf, transpose in name_map:
        if hf not in tensors:
            raise ValueError(f"{source}: tensor {hf} (for {ours}) is missing; {hint}")
        value = np.asarray(tensors[hf], np.float32)
        flat[tuple(ours.split("/"))] = value.T if transpose else value
    return flat


def unmap_tensors(flat: dict[str, np.ndarray], name_map: list[tuple[str, str, bool]]) -> dict[str, np.ndarray]:
    """Our '/'-joined flat parameters -> HF state dict by a family's name map, float32, contiguous."""
    out = {}
    for ours, hf, transpose in name_map:
        value = np.asarray(flat[ours], np.float32)
        out[hf] = np.ascontiguousarray(value.T if transpose else value)
    return out
