"""Fingerprints and the one-line refusals built on them: file identity (checked against hashlib), what
differs between two runs, training resume with another model config, initial checkpoints of another shape."""

import hashlib
import json
import os

import pytest

from polyret.io import fingerprint as F
from polyret.io.fingerprint import FingerprintMismatch


def test_small_files_are_hashed_whole(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b'{"_id": "1", "text": "x"}\n' * 100)
    fp = F.file_fingerprint(path)
    assert fp["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and fp["size"] == path.stat().st_size
    moved = tmp_path / "moved.jsonl"
    os.rename(path, moved)
    F.check_match({"corpus": fp}, {"corpus": F.file_fingerprint(moved)}, "x")  # the path is not compared


def test_big_files_by_size_mtime_head_and_tail(tmp_path, monkeypatch):
    monkeypatch.setattr(F, "WHOLE_FILE_LIMIT", 1000)
    monkeypatch.setattr(F, "PART", 100)
    path = tmp_path / "big.bin"
    data = bytearray(os.urandom(5000))
    path.write_bytes(data)
    before = F.file_fingerprint(path)
    head_tail = hashlib.sha256(bytes(data[:100] + data[-100:])).hexdigest()
    assert before["head_tail_sha256"] == head_tail and before["size"] == 5000
    data[-1] ^= 1
    path.write_bytes(data)
    os.utime(path, ns=(before["mtime_ns"], before["mtime_ns"]))
    with pytest.raises(FingerprintMismatch, match="head_tail_sha256"):
        F.check_match(before, F.file_fingerprint(path), path)
    os.utime(path, ns=(before["mtime_ns"] + 10**9, before["mtime_ns"] + 10**9))
    with pytest.raises(FingerprintMismatch, match="mtime_ns"):
        F.check_match(F.file_fingerprint(path) | {"mtime_ns": before["mtime_ns"]}, F.file_fingerprint(path), path)


def test_mismatch_is_one_line_naming_what_differs():
    recorded = {"settings": {"max_length": 24, "side": "right"}, "corpus": {"sha256": "a" * 64, "count": 60}}
    current = {"settings": {"max_length": 32, "side": "right"}, "corpus": {"sha256": "b" * 64, "count": 60}}
    with pytest.raises(FingerprintMismatch) as info:
        F.check_match(recorded, current, "out/manifest.json", "use a new folder")
    message = str(info.value)
    assert "\n" not in message and message.startswith("out/manifest.json: written by an earlier run")
    assert "corpus.sha256 (aaaaaaaaaaaa -> bbbbbbbbbbbb)" in message and "settings.max_length (24 -> 32)" in message
    assert message.endswith("use a new folder") and "count" not in message and "side" not in message


def test_texts_fingerprint_sees_order_ids_and_text():
    base = F.texts_fingerprint({"a": "x", "b": "y"})
    assert base == F.texts_fingerprint({"a": "x", "b": "y"})
    for other in ({"b": "y", "a": "x"}, {"a": "x", "b": "z"}, {"a": "x", "c": "y"}, {"a": "xb", "": "y"}):
        assert F.texts_fingerprint(other) != base, other


def _config(**changes):
    cfg = {"kind": "dual_encoder", "encoder": {"num_layers": 2, "d_model": 32, "dropout_rate": 0.1},
           "pooling": "mean", "l2_norm": True, "projection_dim": 16}
    cfg.update(changes)
    return cfg


def test_training_resume_with_another_model_config_is_refused(tmp_path):
    (tmp_path / "model_config.json").write_text(json.dumps(_config()))
    with pytest.raises(FingerprintMismatch) as info:
        F.check_training_resume(tmp_path, _config(pooling="first", l2_norm=False))
    message = str(info.value)
    assert message.startswith(f"MODEL_DIR {tmp_path}: its checkpoints were trained with another model config")
    assert "l2_norm (true -> false)" in message and "pooling (mean -> first)" in message
    F.check_training_resume(tmp_path, _config(encoder={"num_layers": 2, "d_model": 32, "dropout_rate": 0.0}))
    F.record_training_settings(tmp_path, {"batch_size": 16, "mixture": "m"})
    with pytest.raises(FingerprintMismatch, match=r"batch_size \(16 -> 32\)"):
        F.check_training_resume(tmp_path, _config(), {"batch_size": 32, "mixture": "m"})
    F.check_training_resume(tmp_path / "new_run", _config(pooling="first"))  # nothing recorded yet: fine


def _shapes(layers: int, prefix: str = "", projection: bool = True) -> dict:
    shapes = {f"{prefix}token_embedder/embedding": (512, 32), f"{prefix}encoder/encoder_norm/scale": (32,)}
    for i in range(layers):
        for name in ("attention/query/kernel", "attention/key/kernel", "mlp/wo/kernel"):
            shapes[f"{prefix}encoder/layers_{i}/{name}"] = (32, 32)
    if projection:
        shapes["projection_layer/kernel"] = (32, 16)
    return shapes


def test_initial_checkpoint_of_another_shape_or_tower_is_refused_by_name():
    run = _shapes(3)
    created = F.check_initial_params("ckpt", _shapes(3, projection=False), run)  # an encoder-only import
    assert created == {"projection_layer/kernel"}
    with pytest.raises(FingerprintMismatch) as info:
        F.check_initial_params("ckpt", _shapes(2), run)
    assert ("missing encoder/layers_2/attention/key/kernel, encoder/layers_2/attention/query/kernel, "
            "encoder/layers_2/mlp/wo/kernel;") in str(info.value)
    with pytest.raises(FingerprintMismatch, match=r"not in the run's model encoder/layers_3/\* \(3\), "
                                                  r"encoder/layers_4/\* \(3\), encoder/layers_5/\* \(3\);"):
        F.check_initial_params("ckpt", _shapes(6), run)
    with pytest.raises(FingerprintMismatch, match="is a colbert checkpoint, the run trains a dual_encoder"):
        F.check_initial_params("ckpt", run, run, loaded_kind="colbert", expected_kind="dual_encoder")
    with pytest.raises(FingerprintMismatch, match=r"missing left_tower/encoder/encoder_norm/scale, left_tower/encoder/layers_0/\* \(3\)"):
        F.check_initial_params("ckpt", run, _shapes(3, prefix="left_tower/"))
    wrong = dict(run, **{"projection_layer/kernel": (32, 8)})
    with pytest.raises(FingerprintMismatch, match=r"projection_layer/kernel has shape \(32, 8\)"):
        F.check_initial_params("ckpt", wrong, run)
