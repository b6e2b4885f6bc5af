"""Feature converters: task features -> the model's features, EOS appended, padded to fixed lengths, no packing.

  inputs            -> left_encoder_input_tokens            [L_in]
  targets           -> right_encoder_input_tokens           [L_tgt]
  negative_targets  -> right_negative_encoder_input_tokens  [N, L_neg]   (all-zero rows = padding)
  passages          -> right_encoder_input_tokens           [K, L_psg]   (distillation)
  teacher_scores, passage_languages pass through            [K]
  passage_group, negative_groups pass through, where given   [], [N]  (dual encoder, hard negatives)
Sequences longer than their length are cut to length - 1 and end with the vocabulary's end id (as seqio's
append_eos_after_trim). A model's prompts (`with_prompts`) go in as tokens after each text's start ids, before
the cut, as sentence-transformers tokenizes `prompt + text`; where a tokenizer merges across the prompt's end
(byte-level BPE), `with_text_prompts` tokenizes `prompt + text` itself from the decoded text. The converter is
chosen by the model's loss (`Loss.feature_converter`).
seqio's own validation checks every feature's first dimension against one length, which [N, L] features
cannot pass, so `__call__` checks presence, dtype and rank here and `trim_append_eos_pad` fixes the shapes.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import seqio
import tensorflow as tf

from polyret.tokens import PAD_ID, T5_EOS_ID

Spec = seqio.FeatureConverter.FeatureSpec


def trim_append_eos_pad(tokens: tf.Tensor, length: int, eos_id: int = T5_EOS_ID) -> tf.Tensor:
    """[T] or [N, T] ids (0 = padding) -> [length] or [N, length], each non-empty row ending with `eos_id`."""
    if tokens.shape.rank == 1:
        tokens = tokens[: length - 1]
        tokens = tf.concat([tokens, tf.fill([tf.minimum(tf.size(tokens), 1)], tf.cast(eos_id, tokens.dtype))], 0)
        return tf.reshape(tf.pad(tokens, [[0, length - tf.size(tokens)]]), [length])
    rows = tf.RaggedTensor.from_tensor(tokens, padding=PAD_ID)[:, : length - 1]
    eos = tf.where(rows.row_lengths() > 0, eos_id, 0)
    eos = tf.RaggedTensor.from_tensor(tf.cast(eos, rows.dtype)[:, None], padding=0)
    return tf.concat([rows, eos], axis=1).to_tensor(shape=[None, length])


def insert_prompt(tokens: tf.Tensor, prompt_ids: list[int], start: int) -> tf.Tensor:
    """[T] or [N, T] ids (0 = padding, all-zero rows = no text) -> the same with `prompt_ids` after the first
    `start` ids of every non-empty row."""
    if not prompt_ids:
        return tokens
    prompt = tf.constant(prompt_ids, tokens.dtype)
    if tokens.shape.rank == 1:
        with_prompt = tf.concat([tokens[:start], prompt, tokens[start:]], 0)
        return tf.cond(tf.size(tokens) > 0, lambda: with_prompt, lambda: tokens)
    rows = tf.RaggedTensor.from_tensor(tokens, padding=PAD_ID)
    prompt_lengths = tf.where(rows.row_lengths() > 0, len(prompt_ids), 0)
    prompts = tf.RaggedTensor.from_row_lengths(
        tf.tile(prompt, [tf.cast(tf.reduce_sum(prompt_lengths), tf.int32) // len(prompt_ids)]),
        tf.cast(prompt_lengths, rows.row_splits.dtype))
    return tf.concat([rows[:, :start], prompts, rows[:, start:]], axis=1).to_tensor(default_value=PAD_ID)


def retokenize_with_prompt(tokens: tf.Tensor, vocabulary: seqio.Vocabulary, prompt: str) -> tf.Tensor:
    """[T] or [N, T] ids (0 = padding, all-zero rows = no text) -> the ids of `prompt + text` for every non-empty
    row, the text decoded and tokenized again with the prompt in front. For tokenizers whose merges cross the
    prompt's end (byte-level BPE: "Query: x" is neither "Query: " + "x" nor "Query:" + "x"), where `insert_prompt`
    cannot be exact."""

    def with_prompt(array):
        rows = array.numpy().reshape(-1, array.shape[-1])
        texts = [vocabulary.encode(prompt + vocabulary.decode(row[row != PAD_ID])) if row.any() else []
                 for row in rows]
        out = np.zeros((len(rows), max(map(len, texts), default=0)), np.int32)
        for i, ids in enumerate(texts):
            out[i, :len(ids)] = ids
        return out if array.shape.rank == 2 else out[0]

    out = tf.py_function(with_prompt, [tokens], tf.int32)
    out.set_shape([None] * tokens.shape.rank)
    return tf.cast(out, tokens.dtype)


class _RetrievalConverter(seqio.FeatureConverter):
    """Base: subclasses list their token features as (task name, model name)."""

    TOKEN_FEATURES: tuple[tuple[str, str], ...] = ()
    PASSTHROUGH: tuple[str, ...] = ()
    OPTIONAL_PASSTHROUGH: tuple[str, ...] = ()  # passed through where the task has them
    PACKING_FEATURE_DTYPE = None

    def __init__(self, pack: bool = False, eos_id: int = T5_EOS_ID, **kwargs):
        if pack:
            raise ValueError("retrieval examples are never packed: packing would mix in-batch negatives")
        self.eos_id = eos_id  # the vocabulary's end id (EOS for T5, [SEP] / </s> for BERT / XLM-R)
        self.prompt_ids: dict[str, list[int]] = {}  # task feature -> prompt token ids
        self.prompt_start = 0
        self.text_prompts: dict[str, str] = {}  # task feature -> prompt put in as text (`with_text_prompts`)
        self.vocabulary: seqio.Vocabulary | None = None
        super().__init__(pack=False, **kwargs)

    def with_prompts(self, query_ids: list[int], passage_ids: list[int], start: int) -> "_RetrievalConverter":
        """Put the query prompt's ids in `inputs` and the passage prompt's in every passage feature, after
        `start` ids (see polyret.seqio_tasks.vocab.prompt_token_ids)."""
        self.prompt_ids = {task: query_ids if task == "inputs" else passage_ids for task, _ in self.TOKEN_FEATURES}
        self.prompt_start = start
        return self

    def with_text_prompts(self, query: str, passage: str, vocabulary: seqio.Vocabulary) -> "_RetrievalConverter":
        """The prompts put in as text: each text decoded and tokenized again behind its prompt
        (`retokenize_with_prompt`), for tokenizers where `with_prompts` cannot be exact."""
        self.text_prompts = {task: query if task == "inputs" else passage for task, _ in self.TOKEN_FEATURES}
        self.vocabulary = vocabulary
        return self

    @property
    def has_prompts(self) -> bool:
        return any(self.prompt_ids.values()) or any(self.text_prompts.values())

    def _prompted(self, tokens: tf.Tensor, task: str) -> tf.Tensor:
        if self.text_prompts.get(task):
            return retokenize_with_prompt(tokens, self.vocabulary, self.text_prompts[task])
        return insert_prompt(tokens, self.prompt_ids.get(task, []), self.prompt_start)

    def __call__(self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
        spec = ds.element_spec
        for name, want in self.TASK_FEATURES.items():
            if name not in spec:
                raise ValueError(f"{type(self).__name__}: the task has no feature {name!r} (it has {sorted(spec)})")
            if spec[name].dtype != want.dtype or spec[name].shape.rank != want.rank:
                raise ValueError(f"{type(self).__name__}: feature {name!r} is {spec[name].dtype.name} of rank "
                                 f"{spec[name].shape.rank}, expected {want.dtype.name} of rank {want.rank}")
        for task, _ in self.TOKEN_FEATURES:
            if task not in task_feature_lengths:
                raise ValueError(f"TASK_FEATURE_LENGTHS has no length for {task!r}")
        return self._convert_features(ds, task_feature_lengths)

    def _convert_features(self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
        def fn(ex):
            out = {model: trim_append_eos_pad(self._prompted(ex[task], task), task_feature_lengths[task], self.eos_id)
                   for task, model in self.TOKEN_FEATURES}
            out.update({name: ex[name] for name in self.PASSTHROUGH + self.OPTIONAL_PASSTHROUGH if name in ex})
            return out
        return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)

    def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> Mapping[str, int]:
        return {model: task_feature_lengths[task] for task, model in self.TOKEN_FEATURES}


# Passage groups (passages that translate one another share one), where the task carries them
# (`register_swim_ir_task(with_groups=True)`): [B] and [B, N] ids that ContrastiveLoss masks with.
GROUP_FEATURES = ("passage_group", "negative_groups")


class DualEncoderFeatureConverter(_RetrievalConverter):
    TASK_FEATURES = {"inputs": Spec(dtype=tf.int32), "targets": Spec(dtype=tf.int32)}
    MODEL_FEATURES = {"left_encoder_input_tokens": Spec(dtype=tf.int32),
                      "right_encoder_input_tokens": Spec(dtype=tf.int32)}
    TOKEN_FEATURES = (("inputs", "left_encoder_input_tokens"), ("targets", "right_encoder_input_tokens"))
    OPTIONAL_PASSTHROUGH = GROUP_FEATURES


class HardNegativeFeatureConverter(_RetrievalConverter):
    TASK_FEATURES = {**DualEncoderFeatureConverter.TASK_FEATURES,
                     "negative_targets": Spec(dtype=tf.int32, rank=2)}
    MODEL_FEATURES = {**DualEncoderFeatureConverter.MODEL_FEATURES,
                      "right_negative_encoder_input_tokens": Spec(dtype=tf.int32, rank=2)}
    TOKEN_FEATURES = DualEncoderFeatureConverter.TOKEN_FEATURES + (
        ("negative_targets", "right_negative_encoder_input_tokens"),)
    OPTIONAL_PASSTHROUGH = GROUP_FEATURES


class DistillationFeatureConverter(_RetrievalConverter):
    TASK_FEATURES = {"inputs": Spec(dtype=tf.int32), "passages": Spec(dtype=tf.int32, rank=2),
                     "teacher_scores": Spec(dtype=tf.float32), "passage_languages": Spec(dtype=tf.int32)}
    MODEL_FEATURES = {"left_encoder_input_tokens": Spec(dtype=tf.int32),
                      "right_encoder_input_tokens": Spec(dtype=tf.int32, rank=2),
                      "teacher_scores": Spec(dtype=tf.float32), "passage_languages": Spec(dtype=tf.int32)}
    TOKEN_FEATURES = (("inputs", "left_encoder_input_tokens"), ("passages", "right_encoder_input_tokens"))
    PASSTHROUGH = ("teacher_scores", "passage_languages")
