"""The DistilBERT encoder family against transformers' PyTorch DistilBertModel (random weights, padded rows),
both directions through the jobs: `polyret import_checkpoint --hf` of a DistilBertModel folder, and
`polyret export_hf` of polyret-initialised parameters, loaded back by `AutoModel`."""

import json

import jax
import numpy as np
import pytest
from flax import traverse_util

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from polyret.jobs import export_hf as export_job
from polyret.jobs import import_checkpoint as import_job
from polyret.models.distilbert import DistilBertConfig, DistilBertEncoder
from polyret.models.model_folder import load_model, save_model
from polyret.models.retrieval_model import build_model, init_params
from polyret.models.towers import DualEncoderConfig

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(94)]  # 99 ids, [PAD] = 0


def _tokenizer(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    transformers.DistilBertTokenizer(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    return folder


def _ids() -> np.ndarray:
    """[CLS] pieces [SEP] then [PAD]: rows of 30, 17 and 5 tokens (HF's ids = polyret's: [PAD] is 0)."""
    rng = np.random.default_rng(1)
    rows = [[2, *rng.integers(5, 99, size=n - 2), 3] + [0] * (30 - n) for n in (30, 17, 5)]
    return np.asarray(rows, np.int32)


def _hf_hidden(model, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids).long(),
                     attention_mask=torch.tensor(ids != 0).long()).last_hidden_state.numpy()


def _ours(config, params, ids) -> np.ndarray:
    encoder = {k: params[k] for k in ("embeddings", "encoder")}
    return np.asarray(DistilBertEncoder(config.encoder).apply({"params": encoder}, ids))


@pytest.mark.parametrize("sinusoidal", [False, True])
def test_import_from_transformers(tmp_path, sinusoidal):
    torch.manual_seed(0)
    model = transformers.DistilBertModel(transformers.DistilBertConfig(
        vocab_size=99, dim=24, n_layers=2, n_heads=3, hidden_dim=40, max_position_embeddings=40,
        sinusoidal_pos_embds=sinusoidal, dropout=0.0, attention_dropout=0.0))
    # Randomise every trained weight (HF starts LayerNorms at 1/0); a sinusoidal table stays the formula's.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not (sinusoidal and "position_embeddings" in name):
                p.copy_(torch.randn_like(p) * 0.3)
    model.eval().save_pretrained(tmp_path / "hf", safe_serialization=True)
    _tokenizer(tmp_path / "hf")

    assert import_job.main(["--hf", str(tmp_path / "hf"), "--output_dir", str(tmp_path / "ckpt")]) == 0
    stored = json.loads((tmp_path / "ckpt/model_config.json").read_text())
    assert stored["encoder"]["family"] == "distilbert" and stored["encoder"]["sinusoidal_positions"] == sinusoidal
    params, config, tokenizer = load_model(tmp_path / "ckpt")
    assert tokenizer.name == "tokenizer" and (tokenizer / "vocab.txt").read_text().split() == VOCAB

    ids = _ids()
    expected = _hf_hidden(model, ids)
    np.testing.assert_allclose(_ours(config, params, ids), expected, atol=1e-5, rtol=0)  # padding included
    # The dual-encoder tower (found through the family registry) mean-pools the same hidden states.
    mask = (ids != 0)[..., None]
    pooled = (expected * mask).sum(1) / mask.sum(1)
    vectors = np.asarray(build_model(config).encode_documents(params, ids).vectors)
    np.testing.assert_allclose(vectors, pooled / np.linalg.norm(pooled, axis=-1, keepdims=True), atol=1e-5)

    # And back out: the export reloads in transformers with the original weights.
    assert export_job.main(["--checkpoint", str(tmp_path / "ckpt"), "--output_dir", str(tmp_path / "back")]) == 0
    reloaded = transformers.AutoModel.from_pretrained(tmp_path / "back").eval()
    assert type(reloaded) is transformers.DistilBertModel
    original = model.state_dict()
    for key, value in reloaded.state_dict().items():
        np.testing.assert_allclose(value.numpy(), original[key].numpy(), atol=1e-7, rtol=0, err_msg=key)


@pytest.mark.parametrize("sinusoidal", [False, True])
def test_export_to_transformers(tmp_path, sinusoidal):
    encoder = DistilBertConfig(vocab_size=99, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=24,
                               max_position_embeddings=32, sinusoidal_positions=sinusoidal, hidden_act="relu")
    config = DualEncoderConfig(encoder=encoder)
    params, _ = init_params(config, jax.random.PRNGKey(3))
    # polyret starts LayerNorms at 1/0 too; move them so every parameter matters.
    rng = np.random.default_rng(4)
    params = traverse_util.unflatten_dict({k: (np.asarray(v) + 0.1 * rng.normal(size=v.shape)).astype(np.float32)
                                           for k, v in traverse_util.flatten_dict(params).items()})
    save_model(tmp_path / "ckpt", params, config, _tokenizer(tmp_path / "tok"))
    assert export_job.main(["--checkpoint", str(tmp_path / "ckpt"), "--output_dir", str(tmp_path / "hf")]) == 0
    hf = transformers.AutoModel.from_pretrained(tmp_path / "hf").eval()
    assert type(hf) is transformers.DistilBertModel and hf.config.sinusoidal_pos_embds == sinusoidal
    ids = _ids()
    np.testing.assert_allclose(_ours(config, params, ids), _hf_hidden(hf, ids), atol=1e-5, rtol=0)
