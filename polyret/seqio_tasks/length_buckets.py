"""Length buckets (`DatasetConfig.length_buckets`): each batch's token features cut to the smallest bucket
that holds the batch's longest row, so a step on short texts runs at a short length, with one compiled
step per bucket instead of one per batch shape.

Only padding columns are cut (a bucket is never shorter than the longest row), so every example keeps its
tokens and a model computes the same vectors and losses on it (the encoders mask padding keys, T5's bias
depends on relative positions only, RoBERTa's positions count real tokens). The cut is a function of the
batch alone, so a resumed run sees the same shapes as an uninterrupted one. Several hosts must agree on
each step's lengths: the trainer takes the maximum of the hosts' longest rows (`longest_rows` per host)
before calling `cut_to_buckets`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def check_buckets(buckets: Sequence[int]) -> tuple[int, ...]:
    """Positive, strictly increasing lengths; ValueError naming DatasetConfig.length_buckets otherwise."""
    buckets = tuple(buckets)
    if any(not isinstance(b, (int, np.integer)) or b < 1 for b in buckets) or list(buckets) != sorted(set(buckets)):
        raise ValueError(f"DatasetConfig.length_buckets must be strictly increasing positive lengths, got {buckets}")
    return buckets


def longest_row(tokens: np.ndarray) -> int:
    """Last non-padding position + 1 over all rows of [..., L] token ids (0 = padding); 0 if all padding."""
    used = np.any(tokens.reshape(-1, tokens.shape[-1]) != 0, axis=0)
    return int(used.nonzero()[0][-1]) + 1 if used.any() else 0


def longest_rows(batch: Mapping[str, np.ndarray], token_features: Sequence[str]) -> np.ndarray:
    """The longest row of each token feature, in `token_features`' order (int64 array)."""
    return np.array([longest_row(batch[name]) for name in token_features], np.int64)


def bucket_length(longest: int, buckets: Sequence[int], full: int) -> int:
    """The smallest bucket >= `longest`, never above the feature's own (padded) length `full`."""
    return min([b for b in buckets if b >= max(longest, 1)] + [full])


def cut_to_buckets(batch: Mapping[str, np.ndarray], token_features: Sequence[str], longest: Sequence[int],
                   buckets: Sequence[int]) -> dict[str, np.ndarray]:
    """`batch` with each token feature cut (last axis) to the bucket of its longest row `longest[i]` (the
    maximum over all hosts); other features unchanged."""
    out = dict(batch)
    for name, n in zip(token_features, longest):
        out[name] = batch[name][..., :bucket_length(int(n), buckets, batch[name].shape[-1])]
    return out
