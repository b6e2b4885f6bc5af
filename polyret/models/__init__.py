"""Retrieval models: the RetrievalModel interface and registry, loss classes, Flax towers over the T5 and
BERT/XLM-R encoder families, LoRA, and checkpoint conversion (T5X, Hugging Face, sentence-transformers, PyLate)."""
