"""The real T5X checkpoint in shared/fixtures: import, a numpy forward pass from the raw files, export."""

import gzip
import json
import math

import numpy as np
import pytest
from flax import serialization

from shared_paths import T5X_FIXTURE
from polyret.jobs import export_hf as export_job
from polyret.jobs import import_checkpoint as import_job
from polyret.models.model_folder import load_model
from polyret.models.towers import DualEncoder

pytestmark = pytest.mark.skipif(not T5X_FIXTURE.is_dir(), reason=f"T5X fixture not found at {T5X_FIXTURE}")


def _read_zarr(folder) -> np.ndarray:
    """Plain zarr v2 reader: gzip chunks named 'i.j', C order; edge chunks may be full size or cropped."""
    meta = json.loads((folder / ".zarray").read_text())
    shape, chunks = meta["shape"], meta["chunks"]
    out = np.zeros(shape, np.dtype(meta["dtype"]))
    for f in folder.iterdir():
        if f.name.startswith("."):
            continue
        idx = [int(i) for i in f.name.split(".")]
        start = [i * c for i, c in zip(idx, chunks)]
        extent = [min(c, s - st) for c, s, st in zip(chunks, shape, start)]
        data = np.frombuffer(gzip.decompress(f.read_bytes()), out.dtype)
        block = data.reshape(chunks if data.size == np.prod(chunks) else extent)
        out[tuple(slice(st, st + e) for st, e in zip(start, extent))] = block[tuple(slice(0, e) for e in extent)]
    return out


def _raw_params() -> dict:
    tree = serialization.msgpack_restore((T5X_FIXTURE / "checkpoint").read_bytes())["optimizer"]["target"]

    def resolve(node):
        if isinstance(node, dict) and "kvstore" in node:
            return _read_zarr(T5X_FIXTURE / node["kvstore"]["path"])
        if isinstance(node, dict):
            return {k: resolve(v) for k, v in node.items()}
        return np.asarray(node)
    return resolve(tree)


def _bucket(relative: int, num_buckets: int, max_distance: int = 128) -> int:
    """Mesh TensorFlow's bidirectional bucket for memory_position - query_position, scalar form."""
    ret, n = 0, -relative
    num_buckets //= 2
    if n < 0:
        ret += num_buckets
        n = -n
    max_exact = num_buckets // 2
    if n < max_exact:
        return ret + n
    val = max_exact + int(math.log(n / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact))
    return ret + min(val, num_buckets - 1)


def _numpy_dual_encoder(p: dict, tokens: np.ndarray) -> np.ndarray:
    """T5 1.0 encoder + mean pooling + projection + L2, from the raw arrays."""
    enc = p["encoder"]
    heads, buckets = enc["relpos_bias"]["rel_embedding"].shape
    batch, length = tokens.shape
    rms = lambda x, s: x / np.sqrt(np.mean(x * x, -1, keepdims=True) + 1e-6) * s
    mask = tokens != 0
    pos = np.array([[_bucket(j - i, buckets) for j in range(length)] for i in range(length)])
    bias = enc["relpos_bias"]["rel_embedding"][:, pos][None] + np.where(mask, 0.0, -1e9)[:, None, None, :]
    x = p["token_embedder"]["embedding"][tokens].astype(np.float64)
    n_layers = len([k for k in enc if k.startswith("layers_")])
    for i in range(n_layers):
        layer = enc[f"layers_{i}"]
        att = layer["attention"]
        h = rms(x, layer["pre_attention_layer_norm"]["scale"])
        q, k, v = (h @ att[n]["kernel"] for n in ("query", "key", "value"))
        split = lambda t: t.reshape(batch, length, heads, -1).transpose(0, 2, 1, 3)
        logits = split(q) @ split(k).transpose(0, 1, 3, 2) + bias
        w = np.exp(logits - logits.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        o = (w @ split(v)).transpose(0, 2, 1, 3).reshape(batch, length, -1)
        x = x + o @ att["out"]["kernel"]
        h = rms(x, layer["pre_mlp_layer_norm"]["scale"])
        x = x + np.maximum(h @ layer["mlp"]["wi"]["kernel"], 0) @ layer["mlp"]["wo"]["kernel"]
    x = rms(x, enc["encoder_norm"]["scale"])
    pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    proj = pooled @ p["projection_layer"]["kernel"]
    return proj / np.linalg.norm(proj, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    out = tmp_path_factory.mktemp("imported") / "ckpt"
    assert import_job.main(["--t5x", str(T5X_FIXTURE), "--output_dir", str(out)]) == 0
    return out


def test_imported_dual_encoder_matches_numpy_forward(imported):
    params, config, _ = load_model(imported)
    assert config.encoder.activation == "relu" and config.projection_dim == 768 and config.encoder.num_layers == 2
    tokens = np.array([[37, 1024, 5, 32000, 1, 0, 0], [8, 9, 10, 11, 12, 13, 1]])
    ours = np.asarray(DualEncoder(config).apply({"params": params}, tokens, method=DualEncoder.encode))
    np.testing.assert_allclose(ours, _numpy_dual_encoder(_raw_params(), tokens), atol=1e-5, rtol=0)


def test_exported_fixture_loads_in_sentence_transformers(imported, tmp_path, tiny_spm):
    from sentence_transformers import SentenceTransformer

    out = tmp_path / "hf"
    assert export_job.main(["--checkpoint", str(imported), "--output_dir", str(out), "--spm_model", str(tiny_spm)]) == 0
    st = SentenceTransformer(str(out), device="cpu")
    texts = ["the quick brown fox", "der schnelle braune fuchs springt", "быстрая лиса"]
    theirs = st.encode(texts, convert_to_numpy=True, batch_size=8)
    tokens = st.tokenize(texts)["input_ids"].numpy()
    params, config, _ = load_model(imported)
    ours = np.asarray(DualEncoder(config).apply({"params": params}, tokens, method=DualEncoder.encode))
    cosine = np.sum(ours * theirs, -1) / np.linalg.norm(ours, axis=-1) / np.linalg.norm(theirs, axis=-1)
    assert cosine.min() >= 0.99999, cosine
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
