"""TF preprocessors: tokenisation of scalar and list features, and mC4-style span pairs."""

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


def span_pairs(dataset: tf.data.Dataset, sequence_length: Mapping[str, int], min_span_length: int = 8
               ) -> tf.data.Dataset:
    """Two non-overlapping random spans of one tokenised document (`text`) -> `inputs`, `targets`.

    Each span is at least `min_span_length` and at most its feature length minus one (room for EOS);
    documents shorter than two minimum spans are skipped. The document is split at a random point,
    one span is drawn from each side, and the two are swapped half of the time.
    """
    max_a = sequence_length["inputs"] - 1
    max_b = sequence_length["targets"] - 1
    if min(max_a, max_b) < min_span_length:
        raise ValueError(f"feature lengths {dict(sequence_length)} leave no room for spans of {min_span_length}")
    dataset = dataset.filter(lambda ex: tf.size(ex["text"]) >= 2 * min_span_length)

    @seqio.map_over_dataset(num_seeds=1)
    def cut(example, seed):
        tokens = example["text"]
        n = tf.size(tokens)
        u = tf.random.stateless_uniform([6], seed=seed)
        pick = lambda low, high, r: low + tf.cast(tf.floor(r * tf.cast(high - low + 1, tf.float32)), tf.int32)
        split = tf.minimum(pick(min_span_length, n - min_span_length, u[0]), n - min_span_length)
        len_a = tf.minimum(pick(min_span_length, tf.minimum(max_a, split), u[1]), tf.minimum(max_a, split))
        start_a = tf.minimum(pick(0, split - len_a, u[2]), split - len_a)
        len_b = tf.minimum(pick(min_span_length, tf.minimum(max_b, n - split), u[3]), tf.minimum(max_b, n - split))
        start_b = split + tf.minimum(pick(0, n - split - len_b, u[4]), n - split - len_b)
        first, second = tokens[start_a:start_a + len_a], tokens[start_b:start_b + len_b]
        swap = u[5] < 0.5
        inputs = tf.cond(swap, lambda: second[:max_a], lambda: first)
        targets = tf.cond(swap, lambda: first[:max_b], lambda: second)
        out = {k: v for k, v in example.items() if k != "text"}
        out.update(inputs=inputs, targets=targets)
        return out

    return cut(dataset)
