"""Data sets polyret builds itself from real text fetched through package registries."""
