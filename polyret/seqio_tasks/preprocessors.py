"""TF preprocessors: tokenisation of scalar and list features, and Contriever-style random-crop pairs."""

from __future__ import annotations

from typing import Mapping

import seqio
import tensorflow as tf


def tokenize(dataset: tf.data.Dataset, output_features: Mapping[str, seqio.Feature],
             also: Mapping[str, str] | None = None, batch_size: int = 256) -> tf.data.Dataset:
    """Tokenise every string feature named in output_features; lists of strings become [N, max_len]
    int32 (0-padded; an empty string is an all-zero row). `also` maps further fields to the output
    feature whose vocabulary tokenises them (e.g. {"text": "targets"} before cutting spans).

    Single strings are tokenised a batch at a time when the vocabulary allows it (SentencePiece does,
    several times faster than one by one); the order of examples is kept.
    """
    vocabularies = {name: feature.vocabulary for name, feature in output_features.items()}
    vocabularies.update({field: output_features[like].vocabulary for field, like in (also or {}).items()})
    spec = dataset.element_spec
    strings = {k: v for k, v in vocabularies.items() if k in spec and spec[k].dtype == tf.string}
    batched = {k: v for k, v in strings.items()
               if spec[k].shape.rank == 0 and isinstance(v, seqio.SentencePieceVocabulary)}

    def encode_batch(example):
        out = dict(example)
        for name in batched:
            out[name] = tf.cast(batched[name].encode_tf(example[name]), tf.int32)
        return out

    def encode_rest(example):
        out = dict(example)
        for name in strings.keys() - batched.keys():
            out[name] = _encode(strings[name], example[name])
        return out

    if batched:
        dataset = dataset.batch(batch_size).map(encode_batch, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
    return dataset.map(encode_rest, num_parallel_calls=tf.data.AUTOTUNE)


def _encode(vocabulary: seqio.Vocabulary, text: tf.Tensor) -> tf.Tensor:
    if text.shape.rank == 0:
        return tf.cast(vocabulary.encode_tf(text), tf.int32)
    # Row by row: some vocabularies (bytes) cannot encode a batch of strings of different lengths.
    rows = tf.map_fn(lambda s: tf.cast(vocabulary.encode_tf(s), tf.int32), text,
                     fn_output_signature=tf.RaggedTensorSpec([None], tf.int32))
    return rows.to_tensor()


def span_pairs(dataset: tf.data.Dataset, sequence_length: Mapping[str, int], chunk_length: int = 256,
               ratio_min: float = 0.1, ratio_max: float = 0.5, min_span_length: int = 1) -> tf.data.Dataset:
    """Contrastive pre-training pairs by random cropping, as Contriever / mContriever (whose recipe SWIM-X's
    mC4 pre-training follows) draw them: the tokenised documents (`text`) are read as one stream, cut into
    chunks of `chunk_length` tokens (a last partial chunk is dropped), and each chunk gives two
    *independent* random crops -> `inputs`, `targets`.

    Each crop (facebookresearch/contriever src/data.py `randomcrop`, defaults `--chunk_length 256
    --ratio_min 0.1 --ratio_max 0.5`): ratio ~ U(ratio_min, ratio_max), length = floor(chunk_length *
    ratio), start ~ U{0, ..., chunk_length - length}; the two crops may overlap. A crop longer than its
    feature length minus one (room for EOS) is cut there. Not reproduced: Contriever shifts the chunk
    boundaries by a random offset each epoch.
    """
    max_a = sequence_length["inputs"] - 1
    max_b = sequence_length["targets"] - 1
    if min(max_a, max_b) < min_span_length:
        raise ValueError(f"feature lengths {dict(sequence_length)} leave no room for spans of {min_span_length}")
    if not 0 < ratio_min <= ratio_max <= 1:
        raise ValueError(f"need 0 < ratio_min <= ratio_max <= 1, got {ratio_min}, {ratio_max}")
    if int(chunk_length * ratio_min) < min_span_length:
        raise ValueError(f"chunk_length {chunk_length} x ratio_min {ratio_min} gives crops shorter than "
                         f"min_span_length {min_span_length}")
    chunks = dataset.map(lambda ex: ex["text"]).unbatch().batch(chunk_length, drop_remainder=True)
    chunks = chunks.map(lambda tokens: {"text": tokens})

    def crop(tokens, u_ratio, u_start):
        ratio = ratio_min + u_ratio * (ratio_max - ratio_min)
        length = tf.cast(tf.floor(chunk_length * ratio), tf.int32)
        positions = chunk_length - length + 1
        start = tf.minimum(tf.cast(tf.floor(u_start * tf.cast(positions, tf.float64)), tf.int32), positions - 1)
        return tokens[start:start + length]

    @seqio.map_over_dataset(num_seeds=1)
    def cut(example, seed):
        tokens = example["text"]
        u = tf.random.stateless_uniform([4], seed=seed, dtype=tf.float64)
        return {"inputs": crop(tokens, u[0], u[1])[:max_a], "targets": crop(tokens, u[2], u[3])[:max_b]}

    return cut(chunks)


def ragged_rows(dataset: tf.data.Dataset, output_features: Mapping[str, seqio.Feature]) -> tf.data.Dataset:
    """[N, T] token features (0-padded rows) -> ragged [N, None], for seqio's cache: a cached feature has
    one fixed width in the cache's info file, while the width of a list of tokenised strings varies per
    example. `dense_rows` after the cache point undoes it exactly (token ids are never 0 = padding)."""
    names = [k for k, f in output_features.items() if f.rank == 2 and k in dataset.element_spec]

    def fn(example):
        return {**example, **{k: tf.RaggedTensor.from_tensor(example[k], padding=0) for k in names}}
    return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE) if names else dataset


def dense_rows(dataset: tf.data.Dataset, output_features: Mapping[str, seqio.Feature]) -> tf.data.Dataset:
    """The inverse of `ragged_rows`: ragged [N, None] -> [N, longest row], 0-padded."""
    spec = dataset.element_spec
    names = [k for k, f in output_features.items() if f.rank == 2 and isinstance(spec.get(k), tf.RaggedTensorSpec)]

    def fn(example):
        return {**example, **{k: example[k].to_tensor() for k in names}}
    return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE) if names else dataset
