import gin
import pytest


@pytest.fixture(autouse=True)
def fresh_gin():
    """Jobs parse and lock gin; each test starts from a clear, unlocked configuration."""
    gin.clear_config()
    yield
    gin.clear_config()
