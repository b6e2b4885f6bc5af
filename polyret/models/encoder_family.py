"""The encoder-family interface and its registry: everything that depends on which transformer encoder a
tower runs. Towers, Hugging Face import/export, checkpoint import and the jobs ask the family record and
never branch on the family themselves.

A family is a class of class attributes and classmethods (as `RetrievalModel` is), registered with
`@register_family` in its own module and listed, one import line per family, in `encoder_families.py`:
  - config: `config_class` (a frozen dataclass with `vocab_size`, `num_layers`, `lora`, `dtype`,
    `param_dtype`, `scan_layers`, `remat_policy`, `to_dict` / `from_dict`), `presets`, `width(cfg)`;
  - Flax: `parts(cfg)` (the submodules a shared tower holds at its top level, keyed by parameter name:
    `part_names`), `hidden(parts, tokens, attention_mask, deterministic)`, `tower` (the stand-alone module
    of separate towers), `embedding_path` (the word-embedding table, e.g. grown for ColBERT-X markers);
  - Hugging Face: `hf_model_types` (config.json `model_type`s it reads), `load_hf(folder)`,
    `hf_tensors` / `hf_config` / `write_hf`, `hf_prefix` (the encoder's prefix inside task-head
    checkpoints such as PLAID-X's) and `plaidx_model_name`;
  - tokenizer: `tokenizer_kind` ('hf': a Hugging Face tokenizer folder; 'sentencepiece': a .model file or
    bytes), `write_tokenizer` (into an export) and `hf_tokenizer` (what an import keeps).
model_config.json records the family's `name` in the encoder's dict (`encoder_config_to_dict`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import jax
import numpy as np
from flax import linen as nn

from polyret.models import hf_files


class EncoderFamily:
    """Base record; the defaults suit a Hugging Face family with a tokenizer folder (BERT-like)."""

    name: ClassVar[str]
    config_class: ClassVar[type]
    tower: ClassVar[type[nn.Module]]
    part_names: ClassVar[tuple[str, ...]]
    embedding_path: ClassVar[tuple[str, ...]]
    presets: ClassVar[dict[str, Any]] = {}
    hf_model_types: ClassVar[tuple[str, ...]] = ()
    tokenizer_kind: ClassVar[str] = "hf"

    # ------------------------------------------------------------------------------------------ Flax
    @classmethod
    def parts(cls, cfg: Any) -> dict[str, nn.Module]:
        raise NotImplementedError

    @classmethod
    def hidden(cls, parts: dict[str, nn.Module], tokens: jax.Array, attention_mask: jax.Array,
               deterministic: bool, token_type_ids: jax.Array | None = None) -> jax.Array:
        """Last hidden states; `token_type_ids` (segments of a query-passage pair) for families that have them."""
        raise NotImplementedError

    @classmethod
    def width(cls, cfg: Any) -> int:
        """The encoder's output size (hidden / d_model)."""
        raise NotImplementedError

    @classmethod
    def encoder_params(cls, tower_params: dict[str, Any]) -> dict[str, Any]:
        """The encoder's own parameters out of a tower's (projection heads left out)."""
        return {name: tower_params[name] for name in cls.part_names}

    # ------------------------------------------------------------------------------------ Hugging Face
    @classmethod
    def load_hf(cls, folder: Path) -> tuple[Any, dict[str, Any]]:
        """A Hugging Face folder of this family -> (encoder config, encoder params keyed by `part_names`)."""
        raise NotImplementedError

    @classmethod
    def hf_tensors(cls, params: dict[str, Any], cfg: Any) -> dict[str, np.ndarray]:
        """Encoder params -> the Hugging Face state dict (no prefix), float32."""
        raise NotImplementedError

    @classmethod
    def hf_config(cls, cfg: Any) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def write_hf(cls, out: Path, params: dict[str, Any], cfg: Any, tokenizer: str | os.PathLike | None) -> None:
        """A folder `AutoModel.from_pretrained` loads: weights, config.json and the tokenizer."""
        hf_files.write_hf_folder(out, cls.hf_tensors(params, cfg), cls.hf_config(cfg))
        cls.write_tokenizer(out, tokenizer)

    @classmethod
    def write_tokenizer(cls, out: Path, tokenizer: str | os.PathLike | None) -> None:
        if tokenizer is not None and Path(tokenizer).is_dir():
            hf_files.copy_tokenizer_files(tokenizer, out, required=False)

    @classmethod
    def hf_tokenizer(cls, folder: str | os.PathLike) -> str | None:
        """The tokenizer an import of `folder` keeps with the checkpoint (a file or folder), or None."""
        return str(folder) if hf_files.has_tokenizer_files(folder) else None

    @classmethod
    def hf_prefix(cls, cfg: Any) -> str:
        """The encoder's key prefix inside a task-head checkpoint (`bert.`, `roberta.`, ...)."""
        raise NotImplementedError(f"{cls.name} encoders have no task-head checkpoint layout")

    @classmethod
    def classification_head(cls, cfg: Any) -> dict[str, str]:
        """How Hugging Face's `*ForSequenceClassification` of this family names its score head (a cross-
        encoder's): {'architecture', 'dense' (key prefix of the hidden->hidden layer), 'out' (hidden->labels),
        'activation' ('tanh' or 'relu'), 'pooling' ('first' or 'mean')}."""
        raise NotImplementedError(f"{cls.name} encoders have no Hugging Face sequence-classification layout")

    @classmethod
    def plaidx_model_name(cls, cfg: Any) -> str:
        """A Hub id of the same architecture, from which PLAID-X picks its model class."""
        raise NotImplementedError(f"PLAID-X has no model class for {cls.name} encoders")


_FAMILIES: dict[str, type[EncoderFamily]] = {}


def register_family(cls: type[EncoderFamily]) -> type[EncoderFamily]:
    """Class decorator: make an encoder family available by name, by config type and by HF model_type."""
    _FAMILIES[cls.name] = cls
    return cls


def families() -> dict[str, type[EncoderFamily]]:
    return dict(_FAMILIES)


def family_of(cfg: Any) -> type[EncoderFamily]:
    """The registered family of an encoder config (found by the config's type)."""
    for family in _FAMILIES.values():
        if type(cfg) is family.config_class:
            return family
    raise TypeError(f"no registered encoder family takes a {type(cfg).__name__}; known: "
                    f"{', '.join(f.config_class.__name__ for f in _FAMILIES.values())}")


def family_named(name: str) -> type[EncoderFamily]:
    if name not in _FAMILIES:
        raise ValueError(f"unknown encoder family {name!r} (known: {', '.join(sorted(_FAMILIES))})")
    return _FAMILIES[name]


def family_for_hf(model_type: str | None, source: str) -> type[EncoderFamily]:
    """The family that reads a Hugging Face config.json's `model_type`."""
    for family in _FAMILIES.values():
        if model_type in family.hf_model_types:
            return family
    supported = [t for f in _FAMILIES.values() for t in f.hf_model_types]
    raise ValueError(f"{source}: model_type {model_type!r} is not supported (supported: {', '.join(supported)})")


def encoder_config_to_dict(cfg: Any) -> dict[str, Any]:
    """The encoder's dict in model_config.json: its fields and its family's name."""
    return {"family": family_of(cfg).name, **cfg.to_dict()}


# model_config.json files written before the `family` field held a T5 or a BERT encoder, told apart by
# BERT's `hidden_size` field (T5 has `d_model`); they keep loading as they did.
def _legacy_family(d: dict[str, Any]) -> str:
    return "bert" if "hidden_size" in d else "t5"


def encoder_config_from_dict(d: dict[str, Any]) -> Any:
    d = dict(d)
    name = d.pop("family", None) or _legacy_family(d)
    return family_named(name).config_class.from_dict(d)
