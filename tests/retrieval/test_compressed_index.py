"""Compressed late-interaction index against brute-force MaxSim in numpy; save/reload (also by name);
resume after a kill."""

import filecmp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from polyret.retrieval.compressed_index import (CompressedIndexConfig, CompressedLateInteractionIndex,
                                                CompressedSearchConfig, build_compressed_index,
                                                write_token_shards)
from polyret.retrieval.search_index import load_index

DIM, VOCAB = 32, 4000


def _unit(a):
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


def _corpus(num_docs=1500, seed=0):
    """Documents of 'words' (random unit vectors) with per-token context noise, like contextual embeddings."""
    rng = np.random.default_rng(seed)
    vocab = rng.normal(size=(VOCAB, DIM))
    docs = []
    for _ in range(num_docs):
        n = int(rng.integers(4, 50))
        docs.append(_unit(vocab[rng.integers(VOCAB, size=n)] + 0.15 * rng.normal(size=(n, DIM))))
    return [f"d{i}" for i in range(num_docs)], docs


def _queries(docs, num=40, seed=1):
    """Known-item queries: 8 noisy tokens of a target document."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(num):
        t = int(rng.integers(len(docs)))
        out.append((t, _unit(docs[t][rng.integers(len(docs[t]), size=8)] + 0.15 * rng.normal(size=(8, DIM)))))
    return out


def _brute(q, ids, docs):
    """Reference: exact MaxSim of every document, best first, ties by id."""
    return sorted(((i, float((q @ d.T).max(axis=1).sum())) for i, d in zip(ids, docs)), key=lambda x: (-x[1], x[0]))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    ids, docs = _corpus()
    root = tmp_path_factory.mktemp("li")
    write_token_shards(root / "shards", ids, lambda a, b: docs[a:b], shard_size=400, progress=False)
    build_compressed_index(root / "shards", root / "index", progress=False)
    return root, ids, docs


def test_exhaustive_search_with_exact_rerank_is_brute_force(built):
    root, ids, docs = built
    index = CompressedLateInteractionIndex(root / "index", exact_shards=root / "shards")
    everything = CompressedSearchConfig(nprobe=10 ** 6, ndocs=10 ** 6, rerank=10 ** 6)
    for _, q in _queries(docs, 10):
        got = index.search([q], 10, everything).hits(ids)[0]
        brute = _brute(q, ids, docs)[:10]
        assert [g[0] for g in got] == [b[0] for b in brute]
        np.testing.assert_allclose([g[1] for g in got], [b[1] for b in brute], rtol=1e-5)


def test_default_search_is_close_to_exact_maxsim(built):
    root, ids, docs = built
    index = CompressedLateInteractionIndex(root / "index")
    assert index.meta["num_tokens"] == sum(len(d) for d in docs)
    found_exact = found = 0
    ratios, overlaps = [], []
    for target, q in _queries(docs):
        brute = _brute(q, ids, docs)
        exact_scores = dict(brute)
        got = index.search([q], 10).hits(ids)[0]
        found_exact += ids[target] in [b[0] for b in brute[:10]]
        found += ids[target] in [g[0] for g in got]
        # exact MaxSim of what the index returned, against the best possible ten
        ratios.append(sum(exact_scores[g[0]] for g in got) / sum(s for _, s in brute[:10]))
        overlaps.append(len({g[0] for g in got} & {b[0] for b in brute[:10]}) / 10)
    assert found >= found_exact - 2, (found, found_exact)
    assert np.mean(ratios) >= 0.97, np.mean(ratios)
    assert np.mean(overlaps) >= 0.5, np.mean(overlaps)  # the rest of the ten are near-ties here
    # bytes per token: 2-bit residuals (8 bytes at 32 dims) + a 2-byte centroid id + the inverted file
    codes = sum(os.path.getsize(p) for p in (root / "index").glob("part-*.codes.npy"))
    residuals = sum(os.path.getsize(p) for p in (root / "index").glob("part-*.residuals.npy"))
    tokens = index.meta["num_tokens"]
    assert residuals / tokens == pytest.approx(DIM * 2 / 8, rel=0.02)
    assert codes / tokens == pytest.approx(2, rel=0.05)


def test_reload_and_copy_give_identical_results(built, tmp_path):
    import shutil

    root, ids, docs = built
    first = CompressedLateInteractionIndex(root / "index")
    shutil.copytree(root / "index", tmp_path / "moved")
    again = CompressedLateInteractionIndex(tmp_path / "moved")
    for _, q in _queries(docs, 10, seed=3):
        assert first.search([q], 10).hits(ids) == again.search([q], 10).hits(ids)
    queries = [q for _, q in _queries(docs, 8, seed=4)]
    threaded = again.search(queries, 10, CompressedSearchConfig(threads=2))
    one_by_one = [first.search([q], 10, CompressedSearchConfig(threads=1)) for q in queries]
    np.testing.assert_array_equal(threaded.rows, np.concatenate([r.rows for r in one_by_one]))
    np.testing.assert_array_equal(threaded.scores, np.concatenate([r.scores for r in one_by_one]))


def test_built_from_memory_saved_and_reopened_by_name(tmp_path):
    ids, docs = _corpus(num_docs=200, seed=5)
    index = CompressedLateInteractionIndex.build(ids, docs, folder=tmp_path / "built")  # shards in built/tokens
    reopened = load_index(index.save(tmp_path / "saved"))
    assert isinstance(reopened, CompressedLateInteractionIndex) and reopened.ids == ids
    everything = CompressedSearchConfig(nprobe=10 ** 6, ndocs=10 ** 6, rerank=10 ** 6, threads=1)
    queries = [q for _, q in _queries(docs, 5, seed=6)]
    for q, got in zip(queries, reopened.search(queries, 10, everything).hits(ids)):
        brute = _brute(q, ids, docs)[:10]  # exact re-scoring from the shards survives the reload
        assert [g[0] for g in got] == [b[0] for b in brute]
        np.testing.assert_allclose([g[1] for g in got], [b[1] for b in brute], rtol=1e-5)


def _same_files(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir() if p.name != "plan.json")
    assert names == sorted(p.name for p in b.iterdir() if p.name != "plan.json")
    for name in names:
        assert filecmp.cmp(a / name, b / name, shallow=False), name


def test_resume_after_interrupted_build_is_identical(built, tmp_path):
    root, _, _ = built
    partial = tmp_path / "partial"
    build_compressed_index(root / "shards", partial, progress=False)
    # What a kill between shards leaves: later shards missing, no inverted file, a stray temp file.
    for name in ("meta.json", "ivf.npy", "ivf_offsets.npy", "part-00002.ids", "part-00003.ids",
                 "part-00003.codes.npy", "part-00003.residuals.npy"):
        (partial / name).unlink()
    (partial / "part-00003.codes.npy.tmp.npy").write_bytes(b"half")
    build_compressed_index(root / "shards", partial, progress=False)
    assert not list(partial.glob("*.tmp*"))  # the half-written temp file was overwritten and renamed
    _same_files(root / "index", partial)


def test_other_inputs_or_settings_are_refused(built, tmp_path):
    root, ids, docs = built
    with pytest.raises(ValueError, match="config"):
        build_compressed_index(root / "shards", root / "index", CompressedIndexConfig(nbits=4), progress=False)
    with pytest.raises(ValueError, match="doc_ids_sha256"):
        write_token_shards(root / "shards", ids[::-1], lambda a, b: docs[a:b], shard_size=400, progress=False)


@pytest.mark.slow
def test_killed_build_resumes_to_an_identical_index(tmp_path):
    ids, docs = _corpus(num_docs=6000, seed=7)
    write_token_shards(tmp_path / "shards", ids, lambda a, b: docs[a:b], shard_size=300, progress=False)
    build_compressed_index(tmp_path / "shards", tmp_path / "reference", progress=False)
    killed = tmp_path / "killed"
    code = ("import sys; from polyret.retrieval.compressed_index import build_compressed_index as b; "
            f"b({str(tmp_path / 'shards')!r}, {str(killed)!r}, progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    deadline = time.time() + 300
    while not (killed / "part-00005.ids").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the build finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "meta.json").exists()
    build_compressed_index(tmp_path / "shards", killed, progress=False)
    for stray in killed.glob("*.tmp*"):
        stray.unlink()
    _same_files(tmp_path / "reference", killed)
