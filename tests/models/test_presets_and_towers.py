"""Presets (golden shapes, HF shapes, gin files), tower behaviour, LoRA, and bad-input errors."""

import json
import os
from pathlib import Path

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shared_paths import T5X_FIXTURE
from polyret import GIN_CONFIGS_DIR
from polyret.models.model_folder import load_model, save_model
from polyret.models.conversion import import_checkpoint
from polyret.models.hf import load_hf_encoder
from polyret.models.hf_t5 import hf_name_map
from polyret.models.lora import LoraConfig, lora_trainable_mask, merge_lora
from polyret.models.t5 import PRESETS, T5Config, T5Encoder
from polyret.models.retrieval_model import expected_param_shapes, export_hf, init_params
from polyret.models.towers import ColBERT, ColBERTConfig, DualEncoder, DualEncoderConfig

GOLDEN = Path(__file__).parent / "golden" / "param_shapes.json"


def test_preset_shapes_match_golden_file():
    got = {name: expected_param_shapes(DualEncoderConfig(encoder=cfg)) for name, cfg in PRESETS.items()}
    got = {name: {k: list(v) for k, v in shapes.items()} for name, shapes in got.items()}
    if os.environ.get("POLYRET_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True))
    assert got == json.loads(GOLDEN.read_text())


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_shapes_match_transformers(name):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    cfg = PRESETS[name]
    hf_cls = transformers.MT5Config if cfg.gated else transformers.T5Config
    hf_cfg = hf_cls(vocab_size=cfg.vocab_size, d_model=cfg.d_model, d_kv=cfg.d_kv, d_ff=cfg.d_ff,
                    num_layers=cfg.num_layers, num_heads=cfg.num_heads, feed_forward_proj=cfg.activation)
    with torch.device("meta"):
        model = (transformers.MT5EncoderModel if cfg.gated else transformers.T5EncoderModel)(hf_cfg)
    hf_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    ours = expected_param_shapes(DualEncoderConfig(encoder=cfg))
    for path, hf_key, transpose in hf_name_map(cfg):
        shape = ours[path][::-1] if transpose else ours[path]
        assert shape == hf_shapes[hf_key], (path, hf_key)


@pytest.mark.parametrize("gin_file", sorted(p.name for p in (GIN_CONFIGS_DIR / "models").glob("*.gin")))
def test_model_gin_files_parse(gin_file):
    gin.clear_config()
    try:
        gin.parse_config_file(str(GIN_CONFIGS_DIR / "models" / gin_file))  # its own imports only
        if gin_file in ("colbert.gin", "colbert_x.gin"):  # tower files, no encoder preset
            return
        gin.parse_config_file(str(GIN_CONFIGS_DIR / "models" / "colbert.gin"))
        cfg = ColBERTConfig()
        from polyret.models.encoder_families import families
        presets = {name: p for family in families().values() for name, p in family.presets.items()}
        preset = presets[gin_file[:-4]]
        assert cfg.encoder == preset and cfg.projection_dim == 128
        assert DualEncoderConfig().encoder == preset
    finally:
        gin.clear_config()


TINY = PRESETS["mt5_tiny"]


def _tokens():
    return jnp.array([[5, 6, 7, 8, 1, 0], [9, 10, 1, 0, 0, 0]])


def test_pooling_projection_norm_and_separate_towers():
    tokens = _tokens()
    for cfg in (DualEncoderConfig(encoder=TINY, pooling="first", projection_dim=12, l2_norm=False),
                DualEncoderConfig(encoder=TINY, shared_towers=False, projection_dim=12)):
        params, _ = init_params(cfg, jax.random.PRNGKey(0))
        model = DualEncoder(cfg)
        out = model.apply({"params": params}, tokens, tokens)
        hidden_params = params if cfg.shared_towers else params["left_tower"]
        hidden = T5Encoder(TINY).apply({"params": {k: hidden_params[k] for k in ("token_embedder", "encoder")}},
                                       tokens)
        if cfg.pooling == "first":
            expected = hidden[:, 0] @ params["projection_layer"]["kernel"]
        else:
            mask = (tokens != 0)[..., None]
            pooled = (hidden * mask).sum(1) / mask.sum(1)
            expected = pooled @ params["projection_layer"]["kernel"]
            expected = expected / jnp.linalg.norm(expected, axis=-1, keepdims=True)
            assert not np.allclose(out["left"], out["right"])  # separate towers differ
        np.testing.assert_allclose(out["left"], expected, atol=1e-5)


def test_learnable_logit_scale_is_a_parameter():
    cfg = DualEncoderConfig(encoder=TINY, learnable_logit_scale=True, logit_scale=20.0)
    params, _ = init_params(cfg, jax.random.PRNGKey(0))
    assert float(params["logit_scale"]) == 20.0


def test_colbert_query_augmentation_and_document_masks():
    cfg = ColBERTConfig(encoder=TINY, projection_dim=16, query_length=8, query_mask_token_id=3, skip_token_ids=(7,))
    params, _ = init_params(cfg, jax.random.PRNGKey(0))
    model = ColBERT(cfg)
    q, q_mask = model.apply({"params": params}, _tokens(), method=ColBERT.encode_query)
    assert q.shape == (2, 8, 16) and bool(q_mask.all())
    # A query given already padded with the mask token encodes identically.
    padded = jnp.pad(_tokens(), ((0, 0), (0, 2)))
    padded = jnp.where(padded == 0, 3, padded)
    q2, _ = model.apply({"params": params}, padded, method=ColBERT.encode_query)
    np.testing.assert_allclose(q, q2, atol=1e-6)
    np.testing.assert_allclose(jnp.linalg.norm(q, axis=-1), 1.0, atol=1e-5)
    d, d_mask = model.apply({"params": params}, _tokens(), method=ColBERT.encode_document)
    np.testing.assert_array_equal(d_mask, (_tokens() != 0) & (_tokens() != 7))
    assert float(jnp.abs(d[~d_mask]).max()) == 0.0


def test_lora_zero_b_is_exact_and_merge_agrees():
    lora = LoraConfig(rank=4, alpha=8.0, target_regex=r"(attention/(query|value)|projection_layer)/kernel$")
    base_cfg = DualEncoderConfig(encoder=TINY, projection_dim=8)
    lora_cfg = DualEncoderConfig(encoder=T5Config(**{**TINY.to_dict(), "lora": lora}), projection_dim=8)
    params, _ = init_params(lora_cfg, jax.random.PRNGKey(0))
    mask = lora_trainable_mask(params)
    flat_mask = jax.tree_util.tree_leaves_with_path(mask)
    trainable = {jax.tree_util.keystr(p) for p, m in flat_mask if m}
    assert any("projection_layer" in t for t in trainable) and any("layers_1" in t and "value" in t for t in trainable)
    assert not any("key" in t for t in trainable)
    base_params = merge_lora(params, lora)  # B == 0: merging changes nothing
    tokens = _tokens()
    with_lora = DualEncoder(lora_cfg).apply({"params": params}, tokens, method=DualEncoder.encode)
    base = DualEncoder(base_cfg).apply({"params": base_params}, tokens, method=DualEncoder.encode)
    np.testing.assert_array_equal(with_lora, base)
    # Train-like update of the adapters, then merged and unmerged agree.
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map_with_path(
        lambda p, v: v + rng.normal(size=v.shape) * 0.3 if "lora_b" in jax.tree_util.keystr(p) else v, params)
    unmerged = DualEncoder(lora_cfg).apply({"params": params}, tokens, method=DualEncoder.encode)
    merged = DualEncoder(base_cfg).apply({"params": merge_lora(params, lora)}, tokens, method=DualEncoder.encode)
    assert not np.allclose(unmerged, base, atol=1e-3)
    np.testing.assert_allclose(unmerged, merged, atol=1e-5)


def test_save_load_roundtrip_and_lora_export(tmp_path):
    lora = LoraConfig(rank=2, alpha=2.0)
    cfg = DualEncoderConfig(encoder=T5Config(**{**TINY.to_dict(), "lora": lora}), projection_dim=8)
    params, _ = init_params(cfg, jax.random.PRNGKey(0))
    save_model(tmp_path / "ckpt", params, cfg)
    loaded, loaded_cfg, spm = load_model(tmp_path / "ckpt")
    assert loaded_cfg == cfg and spm is None
    jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, jax.tree_util.tree_map(np.asarray, params))
    export_hf(loaded, loaded_cfg, tmp_path / "hf")
    _, enc = load_hf_encoder(tmp_path / "hf")
    assert "lora_a" not in json.dumps(jax.tree_util.tree_map(lambda x: 0, enc))


def test_hf_import_roundtrip_restores_projection_and_pooling(tmp_path):
    cfg = DualEncoderConfig(encoder=TINY, projection_dim=8, pooling="first")
    params, _ = init_params(cfg, jax.random.PRNGKey(0))
    export_hf(params, cfg, tmp_path / "hf")
    imported, imported_cfg = import_checkpoint(hf_path=str(tmp_path / "hf"))
    assert imported_cfg.pooling == "first" and imported_cfg.projection_dim == 8
    np.testing.assert_array_equal(imported["projection_layer"]["kernel"], params["projection_layer"]["kernel"])


@pytest.mark.skipif(not T5X_FIXTURE.is_dir(), reason="T5X fixture not found")
def test_t5x_orbax_layout_imports_like_msgpack(tmp_path):
    import orbax.checkpoint as ocp
    params, _ = import_checkpoint(t5x_path=str(T5X_FIXTURE))
    ckptr = ocp.PyTreeCheckpointer()
    ckptr.save(tmp_path / "checkpoint_1000", {"target": params, "state": {"step": np.int32(1000)}})
    again, cfg = import_checkpoint(t5x_path=str(tmp_path / "checkpoint_1000"))
    assert cfg.encoder.activation == "relu"
    jax.tree_util.tree_map(np.testing.assert_array_equal, again, params)


# ---------------------------------------------------------------------------------------------- bad input

def test_wrong_shape_names_parameter_and_both_shapes(tmp_path):
    cfg = DualEncoderConfig(encoder=TINY)
    params, _ = init_params(cfg, jax.random.PRNGKey(0))
    params = jax.tree_util.tree_map(np.asarray, params)
    params["encoder"]["layers_1"]["mlp"]["wo"]["kernel"] = np.zeros((64, 30), np.float32)
    save_model(tmp_path / "ckpt", params, cfg)
    with pytest.raises(ValueError, match=r"encoder/layers_1/mlp/wo/kernel has shape \(64, 30\).*\(64, 32\)"):
        load_model(tmp_path / "ckpt")


def test_wrong_variant_is_named(tmp_path):
    relu = DualEncoderConfig(encoder=T5Config(**{**TINY.to_dict(), "activation": "relu"}))
    params, _ = init_params(relu, jax.random.PRNGKey(0))
    save_model(tmp_path / "ckpt", params, DualEncoderConfig(encoder=TINY))
    with pytest.raises(ValueError, match=r"mlp/wi_0/kernel is missing"):
        load_model(tmp_path / "ckpt")


def test_missing_and_corrupt_files_name_the_path(tmp_path, capsys):
    from polyret.jobs import export_hf as export_job, import_checkpoint as import_job
    out = tmp_path / "out"

    def fails_naming(job, argv, text):
        assert job.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and text in err, err

    fails_naming(import_job, ["--t5x", str(tmp_path / "nope"), "--output_dir", str(out)], str(tmp_path / "nope"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "checkpoint").write_bytes(b"\x00not msgpack at all")
    fails_naming(import_job, ["--t5x", str(bad), "--output_dir", str(out)], str(bad / "checkpoint"))
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{")
    fails_naming(import_job, ["--hf", str(hf), "--output_dir", str(out)], "config.json: not valid JSON")
    (hf / "config.json").write_text(json.dumps({"model_type": "mt5", "d_model": 8}))
    fails_naming(import_job, ["--hf", str(hf), "--output_dir", str(out)], "field 'vocab_size' is missing")
    (hf / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 8}))
    fails_naming(import_job, ["--hf", str(hf), "--output_dir", str(out)], "model_type 'gpt2' is not supported")
    fails_naming(export_job, ["--checkpoint", str(tmp_path / "nope"), "--output_dir", str(out)], "model_config.json")
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_failed_export_leaves_output_untouched(tmp_path):
    cfg = DualEncoderConfig(encoder=TINY)
    params, _ = init_params(cfg, jax.random.PRNGKey(0))
    with pytest.raises(FileNotFoundError):
        export_hf(params, cfg, tmp_path / "out", tokenizer=tmp_path / "missing.model")
    assert list(tmp_path.iterdir()) == []


def test_bfloat16_activations_track_float32():
    cfg32 = DualEncoderConfig(encoder=TINY)
    cfg16 = DualEncoderConfig(encoder=T5Config(**{**TINY.to_dict(), "dtype": "bfloat16"}))
    params, _ = init_params(cfg32, jax.random.PRNGKey(0))
    hidden16 = T5Encoder(cfg16.encoder).apply({"params": {k: params[k] for k in ("token_embedder", "encoder")}},
                                              _tokens())
    assert hidden16.dtype == jnp.bfloat16
    e32 = DualEncoder(cfg32).apply({"params": params}, _tokens(), method=DualEncoder.encode)
    e16 = DualEncoder(cfg16).apply({"params": params}, _tokens(), method=DualEncoder.encode)
    assert float(jnp.min(jnp.sum(e32 * e16, -1))) > 0.99


def test_byte_vocabulary_export_loads_byt5_tokenizer(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = DualEncoderConfig(encoder=T5Config(**{**TINY.to_dict(), "vocab_size": 384}))
    params, _ = init_params(cfg, jax.random.PRNGKey(0))
    export_hf(params, cfg, tmp_path / "hf", tokenizer="byte")
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert tok("ab").input_ids == [ord("a") + 3, ord("b") + 3, 1]  # ByT5: byte + 3 offset, then EOS


def test_model_config_records_the_family_and_old_files_still_load(tmp_path):
    from polyret.models.bert import PRESETS as BERT_PRESETS
    from polyret.models.model_folder import read_model_config_dict
    from polyret.models.retrieval_model import model_config_from_dict, model_config_to_dict

    for config in (DualEncoderConfig(encoder=TINY), ColBERTConfig(encoder=BERT_PRESETS["bert_tiny"])):
        written = model_config_to_dict(config)
        assert written["encoder"]["family"] == ("t5" if config.encoder is TINY else "bert")
        assert model_config_from_dict(written) == config
        # A file from before the family field: read as before, and seen unchanged by the resume check.
        old = {**written, "encoder": {k: v for k, v in written["encoder"].items() if k != "family"}}
        (tmp_path / "model_config.json").write_text(json.dumps(old))
        assert model_config_from_dict(old) == config
        assert read_model_config_dict(tmp_path / "model_config.json") == json.loads(json.dumps(written))
