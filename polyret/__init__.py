"""polyret: train and evaluate multilingual retrievers (SWIM-X, MTD ColBERT-X, retrofitting) in JAX/Flax."""

from pathlib import Path

GIN_CONFIGS_DIR = Path(__file__).parent / "gin_configs"
