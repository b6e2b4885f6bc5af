"""Tiny randomly initialised Hugging Face models saved to folders, for the local-model code paths."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def save_t5_tokenizer(spm_model: Path, folder: Path):
    """The SentencePiece model as a T5 tokenizer folder (what polyret's HF export writes)."""
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(spm_model, folder / "spiece.model")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "T5Tokenizer", "extra_ids": 0, "eos_token": "</s>", "unk_token": "<unk>",
        "pad_token": "<pad>"}))
    return transformers.AutoTokenizer.from_pretrained(folder)


def tiny_causal_lm(spm_model: Path, folder: Path) -> Path:
    import torch
    import transformers

    tokenizer = save_t5_tokenizer(spm_model, folder)
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                      max_position_embeddings=4096, pad_token_id=0, eos_token_id=1, bos_token_id=1)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def tiny_seq2seq(spm_model: Path, folder: Path) -> Path:
    import torch
    import transformers

    tokenizer = save_t5_tokenizer(spm_model, folder)
    torch.manual_seed(0)
    config = transformers.T5Config(vocab_size=len(tokenizer), d_model=16, d_kv=8, d_ff=32, num_layers=1,
                                   num_decoder_layers=1, num_heads=2, decoder_start_token_id=0,
                                   pad_token_id=0, eos_token_id=1)
    model = transformers.T5ForConditionalGeneration(config)
    model.generation_config.min_new_tokens = 3  # random weights may stop at once
    model.save_pretrained(folder)
    return folder
