import sys
from pathlib import Path

# chat_server and sap_helpers live with the synthesis tests; the job tests reuse them.
sys.path.insert(0, str(Path(__file__).parents[1] / "synthesis"))


import gin  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def fresh_gin():
    """Jobs parse (and lock) gin; each test starts from a clear, unlocked configuration."""
    gin.clear_config()
    yield
    gin.clear_config()


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """Template corpora (en, de: the same people, 60 passages each), queries and qrels."""
    from polyret.seqio_tasks.templates import write_template_dataset
    return write_template_dataset(tmp_path_factory.mktemp("tpl"), num_entities=20, languages=("en", "de"))


@pytest.fixture(scope="session")
def tiny_checkpoints(tiny_spm, tmp_path_factory):
    """Two tiny mT5 dual encoders with different weights: {"a": path, "b": path}."""
    import jax
    from polyret.models.model_folder import save_model
    from polyret.models.retrieval_model import init_params
    from polyret.models.t5 import PRESETS
    from polyret.models.towers import DualEncoderConfig

    folder = tmp_path_factory.mktemp("ckpts")
    cfg = DualEncoderConfig(encoder=PRESETS["mt5_tiny"], projection_dim=8)
    return {name: save_model(folder / name, init_params(cfg, jax.random.PRNGKey(seed))[0], cfg, tiny_spm)
            for name, seed in (("a", 0), ("b", 1))}
