"""The BERT encoder family (BERT / RoBERTa / XLM-R; Flax modules in polyret/models/bert.py) and its
conversion to and from Hugging Face `BertModel` / `RobertaModel` / `XLMRobertaModel` folders
(config.json + safetensors, PyTorch names).

Import reads the architecture off config.json (`model_type` bert / roberta / xlm-roberta), accepts a
`bert.` / `roberta.` prefix (task-head checkpoints), ignores the pooler and heads, and swaps rows 0 and
`pad_token_id` of the word-embedding table for RoBERTa/XLM-R (polyret pads with 0; see bert.py). Export
writes the inverse (kernels transposed back, rows swapped back), loadable by `AutoModel.from_pretrained`
(which initialises the unused pooler freshly). Only numpy, safetensors and the tokenizers library are used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from flax import traverse_util

from polyret.io.outputs import atomic_output_dir
from polyret.models.bert import (HIDDEN_ACTS, MODEL_TYPES, PRESETS, BertConfig, BertEmbeddings, BertEncoder,
                                 BertStack)
from polyret.models.encoder_family import EncoderFamily, register_family
from polyret.models.hf_files import (copy_tokenizer_files, read_hf_config, read_safetensors, swap_pad_row,
                                     write_hf_folder)
from polyret.models.lora import has_lora, merge_lora

_PREFIXES = ("bert.", "roberta.")
# Heads beside the encoder: MLM / task heads, and PLAID-X's ColBERT projection `linear.weight` (read by conversion).
_IGNORED = ("pooler.", "cls.", "lm_head.", "classifier.", "qa_outputs.", "embeddings.position_ids", "linear.")
_ARCHITECTURES = {"bert": "BertModel", "roberta": "RobertaModel", "xlm-roberta": "XLMRobertaModel"}


def hf_bert_name_map(cfg: BertConfig) -> list[tuple[str, str, bool]]:
    """(our '/'-joined path inside the encoder, HF key without prefix, transpose?) for every parameter."""
    rows = [("embeddings/word_embeddings/embedding", "embeddings.word_embeddings.weight", False),
            ("embeddings/position_embeddings/embedding", "embeddings.position_embeddings.weight", False),
            ("embeddings/token_type_embeddings/embedding", "embeddings.token_type_embeddings.weight", False),
            ("embeddings/layer_norm/scale", "embeddings.LayerNorm.weight", False),
            ("embeddings/layer_norm/bias", "embeddings.LayerNorm.bias", False)]
    for i in range(cfg.num_layers):
        ours, hf = f"encoder/layers_{i}", f"encoder.layer.{i}"
        modules = [("attention/query", "attention.self.query"), ("attention/key", "attention.self.key"),
                   ("attention/value", "attention.self.value"), ("attention/out", "attention.output.dense"),
                   ("mlp/wi", "intermediate.dense"), ("mlp/wo", "output.dense")]
        for our_name, hf_name in modules:
            rows.append((f"{ours}/{our_name}/kernel", f"{hf}.{hf_name}.weight", True))
            rows.append((f"{ours}/{our_name}/bias", f"{hf}.{hf_name}.bias", False))
        for our_name, hf_name in (("attention_layer_norm", "attention.output.LayerNorm"),
                                  ("mlp_layer_norm", "output.LayerNorm")):
            rows.append((f"{ours}/{our_name}/scale", f"{hf}.{hf_name}.weight", False))
            rows.append((f"{ours}/{our_name}/bias", f"{hf}.{hf_name}.bias", False))
    return rows


# ----------------------------------------------------------------------------------------------- import

def bert_config_from_hf(config: dict[str, Any], source: str = "config.json") -> BertConfig:
    """A Hugging Face config.json dict -> BertConfig; unsupported architectures raise one ValueError."""
    model_type = config.get("model_type")
    if model_type not in MODEL_TYPES:
        raise ValueError(f"{source}: model_type {model_type!r} is not a BERT-family encoder polyret reads "
                         f"(one of {', '.join(MODEL_TYPES)})")
    position_type = config.get("position_embedding_type", "absolute")
    if position_type != "absolute":
        raise ValueError(f"{source}: position_embedding_type {position_type!r} is not supported (only 'absolute')")
    hidden_act = config.get("hidden_act", "gelu")
    if hidden_act not in HIDDEN_ACTS:
        raise ValueError(f"{source}: hidden_act {hidden_act!r} is not supported (one of {', '.join(HIDDEN_ACTS)})")
    try:
        return BertConfig(
            model_type=model_type, vocab_size=config["vocab_size"], hidden_size=config["hidden_size"],
            num_layers=config["num_hidden_layers"], num_heads=config["num_attention_heads"],
            intermediate_size=config["intermediate_size"],
            max_position_embeddings=config["max_position_embeddings"],
            type_vocab_size=config.get("type_vocab_size", 2), layer_norm_eps=config.get("layer_norm_eps", 1e-12),
            pad_token_id=config.get("pad_token_id", 0 if model_type == "bert" else 1), hidden_act=hidden_act,
            hidden_dropout_rate=config.get("hidden_dropout_prob", 0.1),
            attention_dropout_rate=config.get("attention_probs_dropout_prob", 0.1))
    except KeyError as e:
        raise ValueError(f"{source}: field {e.args[0]!r} is missing") from e


def check_tokenizer(folder: str | os.PathLike, cfg: BertConfig) -> None:
    """The folder's tokenizer (if any) must fit the embedding table: no id past the table, same pad id."""
    folder = Path(folder)
    if not any((folder / name).is_file() for name in ("tokenizer.json", "vocab.txt", "sentencepiece.bpe.model")):
        return
    from polyret.seqio_tasks.hf_vocab import HfVocabulary

    vocab = HfVocabulary(folder)
    if vocab.vocab_size > cfg.vocab_size:
        raise ValueError(f"{folder}: the tokenizer has {vocab.vocab_size} tokens but the embedding table "
                         f"(config.json vocab_size) has {cfg.vocab_size} rows; tokenizer and weights do not match")
    if vocab.hf_pad_id != cfg.pad_token_id:
        raise ValueError(f"{folder}: the tokenizer's pad id is {vocab.hf_pad_id} but config.json pad_token_id is "
                         f"{cfg.pad_token_id}; tokenizer and weights do not match")


def load_hf_bert(folder: str | os.PathLike, check_tokenizer_files: bool = True) -> tuple[BertConfig, dict[str, Any]]:
    """A Hugging Face BERT / XLM-R folder -> (BertConfig, BertEncoder params {'embeddings', 'encoder'})."""
    folder = Path(folder)
    cfg = bert_config_from_hf(read_hf_config(folder), str(folder / "config.json"))
    tensors = read_safetensors(folder)
    stripped = {}
    for key, value in tensors.items():
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
        # Legacy LayerNorm names (old BERT checkpoints, PLAID-X's HF_ColBERT), as transformers reads them.
        if ".LayerNorm." in key:
            key = key.replace(".LayerNorm.gamma", ".LayerNorm.weight").replace(".LayerNorm.beta", ".LayerNorm.bias")
        if not key.startswith(_IGNORED):
            stripped[key] = value
    flat, used = {}, set()
    for ours, hf, transpose in hf_bert_name_map(cfg):
        if hf not in stripped:
            raise ValueError(f"{folder}: tensor {hf} (for {ours}) is missing; num_hidden_layers={cfg.num_layers} "
                             "in config.json")
        value = stripped[hf]
        flat[tuple(ours.split("/"))] = value.T if transpose else value
        used.add(hf)
    unexpected = sorted(set(stripped) - used)
    if unexpected:
        raise ValueError(f"{folder}: tensor {unexpected[0]} is not part of a {cfg.model_type} encoder with "
                         f"num_hidden_layers={cfg.num_layers}")
    embedding = ("embeddings", "word_embeddings", "embedding")
    if flat[embedding].shape[0] != cfg.vocab_size:
        raise ValueError(f"{folder}: embeddings.word_embeddings.weight has {flat[embedding].shape[0]} rows but "
                         f"config.json vocab_size is {cfg.vocab_size}")
    flat[embedding] = swap_pad_row(flat[embedding], cfg.pad_token_id)
    if check_tokenizer_files:
        check_tokenizer(folder, cfg)
    return cfg, traverse_util.unflatten_dict(flat)


# ----------------------------------------------------------------------------------------------- export

def hf_bert_config_dict(cfg: BertConfig) -> dict[str, Any]:
    d = {
        "architectures": [_ARCHITECTURES[cfg.model_type]], "model_type": cfg.model_type,
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads, "intermediate_size": cfg.intermediate_size,
        "max_position_embeddings": cfg.max_position_embeddings, "type_vocab_size": cfg.type_vocab_size,
        "layer_norm_eps": cfg.layer_norm_eps, "pad_token_id": cfg.pad_token_id, "hidden_act": cfg.hidden_act,
        "hidden_dropout_prob": cfg.hidden_dropout_rate, "attention_probs_dropout_prob": cfg.attention_dropout_rate,
        "position_embedding_type": "absolute", "initializer_range": 0.02, "use_cache": False,
    }
    if cfg.roberta_positions:  # fairseq's <s>=0, <pad>=1, </s>=2
        d.update(bos_token_id=0, eos_token_id=2)
    return d


def bert_to_hf_tensors(params: dict[str, Any], cfg: BertConfig) -> dict[str, np.ndarray]:
    """BertEncoder params -> HF state dict (no prefix, no pooler), float32, LoRA merged first."""
    if cfg.lora is not None and has_lora(params):
        params = merge_lora(params, cfg.lora)
    flat = {"/".join(k): np.asarray(v, np.float32) for k, v in traverse_util.flatten_dict(params).items()}
    tensors = {}
    for ours, hf, transpose in hf_bert_name_map(cfg):
        value = flat[ours].T if transpose else flat[ours]
        if ours == "embeddings/word_embeddings/embedding":
            value = swap_pad_row(value, cfg.pad_token_id)
        tensors[hf] = np.ascontiguousarray(value)
    return tensors


def write_hf_bert(out: str | os.PathLike, params: dict[str, Any], cfg: BertConfig,
                  tokenizer_dir: str | os.PathLike | None = None) -> None:
    """Write model.safetensors + config.json (+ the tokenizer files of `tokenizer_dir`) into the folder `out`."""
    write_hf_folder(out, bert_to_hf_tensors(params, cfg), hf_bert_config_dict(cfg))
    if tokenizer_dir is not None:
        copy_tokenizer_files(tokenizer_dir, out, required=False)


def export_hf_bert(params: dict[str, Any], cfg: BertConfig, output_dir: str | os.PathLike,
                   tokenizer_dir: str | os.PathLike | None = None) -> Path:
    """Write a HF folder atomically (nothing is left at `output_dir` if writing fails)."""
    with atomic_output_dir(output_dir, kind="hf_export") as tmp:
        write_hf_bert(tmp, params, cfg, tokenizer_dir)
    return Path(output_dir)


@register_family
class BertFamily(EncoderFamily):
    """BERT / RoBERTa / XLM-R: parameters `embeddings` and `encoder` at the tower's top level."""

    name = "bert"
    config_class = BertConfig
    tower = BertEncoder
    part_names = ("embeddings", "encoder")
    embedding_path = ("embeddings", "word_embeddings", "embedding")
    presets = PRESETS
    hf_model_types = MODEL_TYPES

    @classmethod
    def parts(cls, cfg):
        return {"embeddings": BertEmbeddings(cfg), "encoder": BertStack(cfg)}

    @classmethod
    def hidden(cls, parts, tokens, attention_mask, deterministic, token_type_ids=None):
        return parts["encoder"](parts["embeddings"](tokens, token_type_ids, deterministic), attention_mask,
                                deterministic)

    @classmethod
    def width(cls, cfg):
        return cfg.hidden_size

    @classmethod
    def load_hf(cls, folder):
        return load_hf_bert(folder)

    @classmethod
    def hf_tensors(cls, params, cfg):
        return bert_to_hf_tensors(params, cfg)

    @classmethod
    def hf_config(cls, cfg):
        return hf_bert_config_dict(cfg)

    @classmethod
    def hf_prefix(cls, cfg):
        return "bert." if cfg.model_type == "bert" else "roberta."

    @classmethod
    def classification_head(cls, cfg):
        if cfg.model_type == "bert":  # BertForSequenceClassification: the pooler, then the classifier
            return {"architecture": "BertForSequenceClassification", "dense": "bert.pooler.dense",
                    "out": "classifier", "activation": "tanh", "pooling": "first"}
        return {"architecture": _ARCHITECTURES[cfg.model_type].replace("Model", "ForSequenceClassification"),
                "dense": "classifier.dense", "out": "classifier.out_proj", "activation": "tanh", "pooling": "first"}

    @classmethod
    def plaidx_model_name(cls, cfg):
        if cfg.model_type in ("bert", "roberta"):
            return {"bert": "bert-base-multilingual-uncased", "roberta": "roberta-base"}[cfg.model_type]
        return "xlm-roberta-large" if cfg.hidden_size == 1024 else "xlm-roberta-base"
