"""TowerEncoder.remember_rows: a text met again is not encoded again, and the vectors equal a plain encode."""

import numpy as np
import pytest

from polyret.retrieval.encode import TowerEncoder

TEXTS = ["the kernel parameters", "Paketverwaltung mit apt", "the kernel parameters", "ネットワークの設定"]
MORE = ["Paketverwaltung mit apt", "a text not seen before", "ネットワークの設定"]


@pytest.mark.parametrize("fixture", ["dual_checkpoint", "colbert_checkpoint"])
def test_remembered_rows_are_encoded_once_and_match_a_plain_encode(fixture, request):
    checkpoint = request.getfixturevalue(fixture)
    plain = TowerEncoder.from_checkpoint(checkpoint, batch_size=2)
    remembering = TowerEncoder.from_checkpoint(checkpoint, batch_size=2).remember_rows()
    encoded: list[int] = []
    inner = remembering._encode_rows
    remembering._encode_rows = lambda ids, *a: (encoded.append(len(ids)), inner(ids, *a))[1]

    first = remembering.encode(TEXTS, "right", 32)
    second = remembering.encode(MORE, "right", 32)
    queries = remembering.encode(MORE[:1], "left", 32)  # the same text on the other side is another row

    assert encoded == [3, 1, 1]  # three distinct texts, then only the new one, then the query side
    for ours, texts, side in ((first, TEXTS, "right"), (second, MORE, "right"), (queries, MORE[:1], "left")):
        reference = plain.encode(texts, side, 32)
        assert len(ours) == len(reference)
        for a, b in zip(ours, reference):
            np.testing.assert_allclose(a, b, atol=1e-5)
