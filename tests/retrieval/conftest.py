import jax
import pytest

from polyret.models.model_folder import save_model
from polyret.models.t5 import PRESETS
from polyret.models.retrieval_model import init_params
from polyret.models.towers import ColBERTConfig, DualEncoderConfig
from polyret.seqio_tasks.templates import write_template_dataset
from polyret.seqio_tasks.vocab import train_sentencepiece


@pytest.fixture(scope="session")
def template_data(tmp_path_factory):
    return write_template_dataset(tmp_path_factory.mktemp("tpl"), num_entities=40, languages=("en", "de", "ja"))


@pytest.fixture(scope="session")
def template_spm(template_data, tmp_path_factory):
    return train_sentencepiece([template_data["text"]], tmp_path_factory.mktemp("spm") / "sp", vocab_size=400)


@pytest.fixture(scope="session")
def dual_checkpoint(template_spm, tmp_path_factory):
    cfg = DualEncoderConfig(encoder=PRESETS["mt5_tiny"], projection_dim=16)
    params, _ = init_params(cfg, jax.random.PRNGKey(0))
    return save_model(tmp_path_factory.mktemp("ckpt") / "dual", params, cfg, template_spm)


@pytest.fixture(scope="session")
def colbert_checkpoint(template_spm, tmp_path_factory):
    cfg = ColBERTConfig(encoder=PRESETS["mt5_tiny"], projection_dim=16, query_length=16, query_mask_token_id=3)
    params, _ = init_params(cfg, jax.random.PRNGKey(0))
    return save_model(tmp_path_factory.mktemp("ckpt") / "colbert", params, cfg, template_spm)
