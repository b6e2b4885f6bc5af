"""Retrieval models: the RetrievalModel interface and registry, loss classes, Flax towers over the registered
encoder families (encoder_family.py / encoder_families.py: T5, BERT/XLM-R, DistilBERT), LoRA, and checkpoint
conversion (T5X, Hugging Face, sentence-transformers, PyLate, PLAID-X)."""
