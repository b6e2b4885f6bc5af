"""Thin entry points: each parses its flags and calls library code. Run as `python -m polyret.jobs.<name>`."""
