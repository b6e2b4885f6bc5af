"""A ColBERT checkpoint exported to Hugging Face reads back into polyret unchanged and loads in PyLate (the
`pylate` package) with the same token vectors."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from polyret.models.model_folder import load_model
from polyret.models.conversion import import_checkpoint, save_imported
from polyret.models.retrieval_model import export_hf
from polyret.models.retrieval_model import build_model
from polyret.models.t5 import T5Config
from polyret.models.towers import ColBERTConfig

CFG = ColBERTConfig(encoder=T5Config(vocab_size=96, d_model=32, num_heads=4, d_kv=8, d_ff=64, num_layers=2,
                                     dropout_rate=0.0), projection_dim=16, query_length=12, query_mask_token_id=3,
                    skip_token_ids=(7,))
TOKENS = np.array([[5, 6, 7, 8, 1, 0, 0, 0], [9, 10, 11, 12, 13, 14, 15, 1]], np.int32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_spm):
    model = build_model(CFG)
    params, _ = model.init(jax.random.PRNGKey(0))
    folder = tmp_path_factory.mktemp("colbert") / "hf"
    export_hf(params, CFG, folder, tokenizer=str(tiny_spm), max_seq_length=32)
    return model, params, folder


def test_export_reads_back_to_the_same_model(exported, tmp_path):
    model, params, folder = exported
    imported, config = import_checkpoint(hf_path=str(folder))
    assert config == CFG
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(imported)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    save_imported(imported, config, tmp_path / "ckpt", hf_path=str(folder))
    _, reloaded_config, spm = load_model(tmp_path / "ckpt")
    assert reloaded_config == CFG and spm is not None


def test_pylate_gives_the_same_token_vectors(exported):
    torch = pytest.importorskip("torch")
    pylate_models = pytest.importorskip("pylate.models")
    model, params, folder = exported
    colbert = pylate_models.ColBERT(str(folder), device="cpu")
    with torch.no_grad():
        out = colbert({"input_ids": torch.tensor(TOKENS, dtype=torch.long),
                       "attention_mask": torch.tensor(TOKENS != 0, dtype=torch.long)})
    theirs = torch.nn.functional.normalize(out["token_embeddings"], dim=-1).numpy()
    ours = model.encode_documents(params, jnp.asarray(TOKENS))
    mask = np.asarray(ours.mask)  # padding and the skip id (punctuation) are left out of MaxSim
    assert mask.sum() == np.count_nonzero(TOKENS) - 1
    np.testing.assert_allclose(np.asarray(ours.vectors)[mask], theirs[mask], atol=1e-5)


def test_a_colbert_folder_without_its_projection_is_refused(exported, tmp_path):
    import shutil
    _, _, folder = exported
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    shutil.rmtree(broken / "1_Dense")
    (broken / "modules.json").write_text('[{"idx": 0, "name": "0", "path": "", '
                                         '"type": "sentence_transformers.models.Transformer"}]')
    with pytest.raises(ValueError, match="without its projection"):
        import_checkpoint(hf_path=str(broken))
