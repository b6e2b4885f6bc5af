"""Synthetic training data: SAP query generation with LLMs, translation and teacher scores for MTD."""
