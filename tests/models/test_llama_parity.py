"""The decoder-LLM family against transformers' `LlamaModel`, `Qwen2Model` and `Qwen3Model` on random
weights: grouped-query attention, rows padded on the right and on the left, causal and bidirectional, the
hidden states and the last-token pooled, normalised embedding (as sentence-transformers' lasttoken
pooling computes it), import and export both ways, LoRA, scan and remat."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import traverse_util

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from polyret.models.hf_llama import load_hf_llama  # noqa: E402
from polyret.models.encoder_families import family_named  # noqa: E402
from polyret.models.llama import LLM_LORA_TARGETS, LlamaEncoder  # noqa: E402
from polyret.models.lora import LoraConfig  # noqa: E402
from polyret.models.towers import DualEncoder, DualEncoderConfig, pool  # noqa: E402

VOCAB, PAD = 97, 3  # HF's pad id is 3: polyret swaps it with 0
LENGTHS = [9, 5, 1, 7]

_HF = {
    "llama": (transformers.LlamaConfig, transformers.LlamaModel, {}),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2Model, {}),
    "qwen3": (transformers.Qwen3Config, transformers.Qwen3Model, {"head_dim": 12}),
}


def _hf_model(model_type: str, tmp_path_factory):
    config_class, model_class, extra = _HF[model_type]
    config = config_class(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                          rms_norm_eps=1e-6, rope_theta=500.0, pad_token_id=PAD, tie_word_embeddings=False, **extra)
    torch.manual_seed({"llama": 0, "qwen2": 1, "qwen3": 2}[model_type])
    model = model_class(config).eval()
    with torch.no_grad():  # HF initialises norms to one and biases to zero: move them so they are tested
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith(".bias"):
                p.add_(0.1 * torch.randn_like(p))
    folder = tmp_path_factory.mktemp(model_type)
    model.save_pretrained(folder)
    return model, folder


@pytest.fixture(scope="module", params=sorted(_HF))
def hf_and_ours(request, tmp_path_factory):
    model, folder = _hf_model(request.param, tmp_path_factory)
    cfg, params = load_hf_llama(folder)
    return model, folder, cfg, params


def _ids(seed: int = 0) -> np.ndarray:
    """HF ids [4, 9] with no pad id inside the texts; row lengths LENGTHS."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(4, VOCAB, (len(LENGTHS), max(LENGTHS)))
    ids[1, 2] = 0  # HF id 0 is a real token: polyret calls it PAD (=3 in HF numbering)
    return ids


def _polyret_tokens(ids: np.ndarray) -> np.ndarray:
    """Right-padded polyret ids: HF 0 <-> 3 swapped, padding 0."""
    tokens = np.where(ids == 0, PAD, ids)
    for row, n in enumerate(LENGTHS):
        tokens[row, n:] = 0
    return tokens


def _hf_states(model, ids: np.ndarray, left: bool, causal: bool) -> list[np.ndarray]:
    """Each row's real-token states from HF, rows padded on the left or the right."""
    length = ids.shape[1]
    batch = np.full_like(ids, PAD)
    mask = np.zeros_like(ids)
    for row, n in enumerate(LENGTHS):
        cols = slice(length - n, length) if left else slice(0, n)
        batch[row, cols] = ids[row, :n]
        mask[row, cols] = 1
    kwargs = {"attention_mask": torch.tensor(mask)}
    if not causal:  # a 4D boolean mask is used as given: every real token sees every real token
        keys = torch.tensor(mask, dtype=torch.bool)
        kwargs["attention_mask"] = (keys[:, None, :, None] & keys[:, None, None, :]) | torch.eye(length, dtype=torch.bool)
    model.config._attn_implementation = "sdpa"
    with torch.no_grad():
        out = model(input_ids=torch.tensor(batch), **kwargs).last_hidden_state.numpy()
    return [out[row, length - n:] if left else out[row, :n] for row, n in enumerate(LENGTHS)]


@pytest.mark.parametrize("left", [False, True], ids=["right_padded", "left_padded"])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
def test_hidden_states_and_pooled_embedding_equal_transformers(hf_and_ours, left, causal):
    model, _, cfg, params = hf_and_ours
    cfg = dataclasses.replace(cfg, causal=causal)
    ids = _ids()
    tokens = _polyret_tokens(ids)
    ours = np.asarray(LlamaEncoder(cfg).apply({"params": params}, jnp.asarray(tokens)))
    theirs = _hf_states(model, ids, left, causal)
    for row, n in enumerate(LENGTHS):
        np.testing.assert_allclose(ours[row, :n], theirs[row], atol=1e-5, rtol=1e-5)
    # Last-token pooling, then L2 normalisation, as a dual encoder computes it ...
    dual = DualEncoder(DualEncoderConfig(encoder=cfg, pooling="last"))
    embedded = np.asarray(dual.apply({"params": params}, jnp.asarray(tokens), method=DualEncoder.encode))
    # ... against the last real token of HF's states, normalised.
    last = np.stack([t[-1] for t in theirs])
    np.testing.assert_allclose(embedded, last / np.linalg.norm(last, axis=1, keepdims=True), atol=1e-5)


def test_export_loads_in_transformers(hf_and_ours, tmp_path):
    model, _, cfg, params = hf_and_ours
    family = family_named("llama")
    family.write_hf(tmp_path / "out", params, cfg, None)
    reloaded = transformers.AutoModel.from_pretrained(tmp_path / "out").eval()
    assert type(reloaded) is type(model)
    ids = _ids(1)
    for a, b in zip(_hf_states(reloaded, ids, False, True), _hf_states(model, ids, False, True)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_lora_on_every_projection_then_merged_export(hf_and_ours, tmp_path):
    """A trained adapter (B non-zero) on the attention and MLP projections survives the merge on export."""
    model, _, cfg, params = hf_and_ours
    lora_cfg = dataclasses.replace(cfg, lora=LoraConfig(rank=2, alpha=4.0, target_regex=LLM_LORA_TARGETS))
    tokens = jnp.asarray(_polyret_tokens(_ids()))
    init = traverse_util.flatten_dict(nn.unbox(LlamaEncoder(lora_cfg).init(jax.random.PRNGKey(0), tokens)["params"]))
    assert sum(k[-1] == "lora_b" for k in init) == 7 * cfg.num_layers  # q, k, v, o, gate, up, down per layer
    base = traverse_util.flatten_dict(params)
    adapted = traverse_util.unflatten_dict({  # the imported weights, and adapters that have trained
        k: base[k] if k in base else (jnp.full_like(v, 0.01) if k[-1] == "lora_b" else v) for k, v in init.items()})
    ours = np.asarray(LlamaEncoder(lora_cfg).apply({"params": adapted}, tokens))
    family_named("llama").write_hf(tmp_path / "merged", adapted, lora_cfg, None)
    reloaded = transformers.AutoModel.from_pretrained(tmp_path / "merged").eval()
    theirs = _hf_states(reloaded, _ids(), False, True)
    for row, n in enumerate(LENGTHS):
        np.testing.assert_allclose(ours[row, :n], theirs[row], atol=1e-5)
    assert not np.allclose(theirs[0], _hf_states(model, _ids(), False, True)[0], atol=1e-3)


def test_scan_and_remat_give_the_loop_states(hf_and_ours):
    _, _, cfg, params = hf_and_ours
    tokens = jnp.asarray(_polyret_tokens(_ids()))
    looped = LlamaEncoder(cfg).apply({"params": params}, tokens)
    scanned = LlamaEncoder(dataclasses.replace(cfg, scan_layers=True, remat_policy="full")).apply(
        {"params": params}, tokens)
    np.testing.assert_allclose(np.asarray(scanned), np.asarray(looped), atol=1e-5)


def test_last_token_pooling_reads_each_rows_last_real_token():
    hidden = jnp.arange(2 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 3)
    mask = jnp.array([[True, True, True, False], [True, False, False, False]])
    np.testing.assert_array_equal(np.asarray(pool(hidden, mask, "last")), np.asarray(hidden)[[0, 1], [2, 0]])
