"""TranslateTrainLoss (MTT): n-way cross-entropy with the teacher's best passage of each draw as the positive,
against optax's integer-label softmax cross-entropy and a numpy log-sum-exp."""

import jax.numpy as jnp
import numpy as np
import optax

from polyret.models.losses import TranslateTrainLoss


def test_translate_train_is_cross_entropy_on_the_teachers_best_passage():
    rng = np.random.default_rng(0)
    student = rng.normal(size=(5, 6)).astype(np.float32)
    teacher = rng.normal(size=(5, 6)).astype(np.float32)
    teacher[2, 4] = np.nan  # a padded slot is never the positive
    teacher[2, 1] = 50.0
    labels = np.array([np.nanargmax(row) for row in teacher])
    expected = float(optax.softmax_cross_entropy_with_integer_labels(jnp.asarray(student), jnp.asarray(labels)).mean())
    by_hand = np.mean([np.log(np.exp(s).sum()) - s[l] for s, l in zip(student.astype(np.float64), labels)])
    got = float(TranslateTrainLoss().distill(jnp.asarray(student), jnp.asarray(teacher)))
    assert got == np.float32(expected) or abs(got - expected) < 1e-6
    assert abs(got - by_hand) < 1e-5
