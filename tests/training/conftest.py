"""Training test fixtures."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """Template data + SentencePiece model, written once (training runs then only register tasks)."""
    from polyret.seqio_tasks.template_tasks import template_data_setup
    folder = tmp_path_factory.mktemp("template_data")
    template_data_setup(folder, num_entities=60)
    return folder
