"""Our Flax encoder against transformers' PyTorch MT5EncoderModel / T5EncoderModel, both conversion ways."""

import numpy as np
import pytest
import jax

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from polyret.models.hf import load_hf_encoder
from polyret.models.t5 import T5Config, T5Encoder
from polyret.models.retrieval_model import export_hf, init_params
from polyret.models.towers import DualEncoderConfig

CONFIGS = {
    # gated GELU, several layers and heads, d_kv != d_model / heads
    "mt5_gated": T5Config(vocab_size=120, d_model=24, num_heads=3, d_kv=5, d_ff=40, num_layers=3, dropout_rate=0.0,
                          relative_attention_num_buckets=16, relative_attention_max_distance=20),
    "t5_relu": T5Config(vocab_size=90, d_model=16, num_heads=2, d_kv=8, d_ff=32, num_layers=2, activation="relu",
                        dropout_rate=0.0),
}


def _tokens(vocab: int, padded: bool) -> np.ndarray:
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, vocab, size=(3, 30))
    if padded:
        tokens[1, 17:] = 0
        tokens[2, 5:] = 0
    return tokens


def _hf_hidden(model, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = model(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(tokens != 0).long())
    return out.last_hidden_state.numpy()


def _our_hidden(cfg: T5Config, encoder_params, tokens: np.ndarray) -> np.ndarray:
    return np.asarray(T5Encoder(cfg).apply({"params": encoder_params}, tokens))


def _hf_class(cfg: T5Config):
    return transformers.MT5EncoderModel if cfg.gated else transformers.T5EncoderModel


@pytest.mark.parametrize("name,padded", [("mt5_gated", False), ("t5_relu", False), ("mt5_gated", True),
                                         ("t5_relu", True)])
def test_import_from_hf_matches_pytorch(tmp_path, name, padded):
    cfg = CONFIGS[name]
    hf_cfg_cls = transformers.MT5Config if cfg.gated else transformers.T5Config
    hf_cfg = hf_cfg_cls(vocab_size=cfg.vocab_size, d_model=cfg.d_model, d_kv=cfg.d_kv, d_ff=cfg.d_ff,
                        num_layers=cfg.num_layers, num_heads=cfg.num_heads, feed_forward_proj=cfg.activation,
                        relative_attention_num_buckets=cfg.relative_attention_num_buckets,
                        relative_attention_max_distance=cfg.relative_attention_max_distance, dropout_rate=0.0)
    torch.manual_seed(0)
    model = _hf_class(cfg)(hf_cfg).eval()
    # HF initialises layer norms to 1 and some weights tiny; randomise everything so every weight matters.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    model.save_pretrained(tmp_path)
    imported_cfg, params = load_hf_encoder(tmp_path)
    assert imported_cfg.activation == cfg.activation and imported_cfg.d_kv == cfg.d_kv
    tokens = _tokens(cfg.vocab_size, padded)
    ours = _our_hidden(imported_cfg, params, tokens)
    theirs = _hf_hidden(model, tokens)
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,padded", [("mt5_gated", True), ("t5_relu", False)])
def test_export_to_hf_matches_ours(tmp_path, name, padded):
    cfg = CONFIGS[name]
    model_cfg = DualEncoderConfig(encoder=cfg)
    params, _ = init_params(model_cfg, jax.random.PRNGKey(1))
    # Layer-norm scales start at one; perturb them so a wrong mapping cannot hide.
    params = jax.tree_util.tree_map_with_path(
        lambda path, v: v * (1 + 0.3 * np.random.default_rng(len(str(path))).standard_normal(v.shape)), params)
    export_hf(params, model_cfg, tmp_path / "hf")
    model = _hf_class(cfg).from_pretrained(tmp_path / "hf").eval()
    tokens = _tokens(cfg.vocab_size, padded)
    ours = _our_hidden(cfg, {"token_embedder": params["token_embedder"], "encoder": params["encoder"]}, tokens)
    np.testing.assert_allclose(ours, _hf_hidden(model, tokens), atol=1e-5, rtol=1e-5)
