"""DatasetConfig.max_examples / subsample_fraction: a fixed random subset (by subsample_seed) of the task's
examples, the same whatever the shuffle seed, repeated epoch after epoch; checked against a numpy permutation."""

import numpy as np
import pytest
import tensorflow as tf

from polyret.seqio_tasks.dataset import subsampled_batches


def _examples(n: int) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices({"x": np.arange(n, dtype=np.int64)})


def _seen(ds, batches: int) -> list[int]:
    return [int(v) for b in ds.take(batches).as_numpy_iterator() for v in b["x"]]


def test_subset_is_fixed_by_subsample_seed():
    # Two tasks of 30 and 20 examples: the subset is drawn over both together.
    tasks = [_examples(30), _examples(20).map(lambda e: {"x": e["x"] + 100})]
    all_ids = list(range(30)) + [100 + i for i in range(20)]
    expected = {all_ids[i] for i in np.random.default_rng(7).permutation(50)[:10]}
    for shuffle_seed in (0, 1):
        ds = subsampled_batches(tasks, 5, 10, None, 7, True, shuffle_seed, None)
        seen = _seen(ds, 6)  # three epochs of two batches
        assert set(seen) == expected
        assert all(sorted(seen[i:i + 10]) == sorted(expected) for i in (0, 10, 20))  # each epoch: the subset once
    other = set(_seen(subsampled_batches(tasks, 5, 10, None, 8, False, 0, 1), 2))
    assert other != expected


def test_fraction_and_bad_values():
    ds = subsampled_batches([_examples(40)], 4, None, 0.25, 0, False, 0, 1)
    assert len(_seen(ds, 100)) == 8 and len(set(_seen(ds, 100))) == 8  # 1/4 of 40 = 10, two full batches
    with pytest.raises(ValueError, match="subsample_fraction"):
        subsampled_batches([_examples(40)], 4, None, 1.5, 0, False, 0, 1)
    with pytest.raises(ValueError, match="fewer than one batch"):
        subsampled_batches([_examples(40)], 16, 8, None, 0, False, 0, 1)
