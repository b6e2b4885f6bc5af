"""Corpus encoding, ScaNN search, late interaction, metrics, run files and hard-negative mining."""
