"""T5/mT5 encoders, retrieval towers, losses, LoRA and checkpoint conversion."""
