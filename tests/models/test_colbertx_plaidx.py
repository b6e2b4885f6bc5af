"""ColBERT-X as PLAID-X builds it, against the `plaid-x` package (hltcoe/ColBERT-X, the MTD authors' code) on
the same random-weight XLM-R checkpoint: the ids the encoder reads (markers, '. ' placeholder, [MASK]
augmentation, truncation), the attention masks, the punctuation skip list, and the query / document token
vectors (max abs diff <= 1e-5).

The checkpoint is made by PLAID-X itself: its `Checkpoint` loads a tiny XLMRobertaModel (random weights, an
XLM-R-style SentencePiece tokenizer trained here), adds the [unused0]/[unused1] markers, resizes the
embeddings, initialises the projection, and `save`s the folder that polyret then imports.

plaid-x is installed without its dependencies (`pip install --no-deps plaid-x gitpython`): it pins an old
faiss and torchvision/torchaudio it does not need for encoding. Two shims make 0.3.3 import and load under
Python 3.11 and transformers 5, and change nothing it computes: Python 3.11 refuses its config dataclass's
unhashable `DefaultVal` defaults (upstream ColBERT gave `DefaultVal` a `__hash__` for the same reason), and
transformers 5 needs `post_init()` at the end of a model's constructor (HF_ColBERT calls `init_weights()`).
Its C++ MaxSim extension (packed search only) is not compiled.
"""

import dataclasses
import importlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import string
import sys
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
try:
    PLAIDX_VERSION = importlib.metadata.version("PLAID-X")
except importlib.metadata.PackageNotFoundError:
    pytest.skip("plaid-x is not installed (pip install --no-deps plaid-x gitpython)", allow_module_level=True)
if importlib.util.find_spec("git") is None:
    pytest.skip("plaid-x needs gitpython (pip install gitpython)", allow_module_level=True)
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")  # plaid-x imports git; no git executable is needed here

from polyret.models.conversion import import_checkpoint, save_imported
from polyret.models.retrieval_model import build_model
from polyret.models.towers import ColBERT as ColBERTModule
from polyret.models.colbert_x import colbert_x_tokens
from polyret.retrieval.tokenize import Tokenizer, pad_batch

LICENSES = Path("/usr/share/common-licenses")
QUERY_MAXLEN, DOC_MAXLEN, DIM = 16, 24, 16

QUERIES = ["free software license", "What may I redistribute?", "  leading spaces, then (parentheses)",
           "a", "patent grant: royalty-free, irrevocable; worldwide! and a query long enough to be cut at the "
                "query length of sixteen tokens",
           "Größenänderung der Partition", "系统初始化的概述"]
DOCUMENTS = ["The licenses for most software are designed to take away your freedom to share and change it.",
             "x", "Copyright (C) 2007 Free Software Foundation, Inc. <https://fsf.org/>",
             "\"Contribution\" shall mean any work of authorship; [including] the original {version}!",
             "Быстрая настройка сети в Debian.", "...,;:!?"]


def _import_plaidx():
    """Import PLAID-X's modules with the two compatibility shims described in the module docstring."""
    if "colbert.modeling.checkpoint" not in sys.modules:
        root = importlib.util.find_spec("colbert").submodule_search_locations[0]
        names = ["colbert", "colbert.infra", "colbert.infra.config"]
        for name in names:  # bare packages, so core_config loads without running the package __init__s
            stub = types.ModuleType(name)
            stub.__path__ = [os.path.join(root, *name.split(".")[1:])]
            sys.modules[name] = stub
        try:
            core = importlib.import_module("colbert.infra.config.core_config")
            core.DefaultVal.__hash__ = object.__hash__
        finally:
            for name in names:
                del sys.modules[name]
        importlib.import_module("colbert.modeling.checkpoint")
    import colbert.modeling.base_colbert as base_colbert
    import colbert.modeling.hf_colbert as hf_colbert
    from colbert.infra import ColBERTConfig
    from colbert.modeling.checkpoint import Checkpoint
    from colbert.modeling.colbert import ColBERT

    if not getattr(base_colbert.class_factory, "polyret_shim", False):
        def class_factory(name_or_path):
            cls = hf_colbert.class_factory(name_or_path)
            init = cls.__init__

            def __init__(self, config, colbert_config):
                init(self, config, colbert_config)
                self.post_init()

            cls.__init__ = __init__
            return cls

        class_factory.polyret_shim = True
        base_colbert.class_factory = class_factory
    ColBERT.loaded_extensions = True  # skip compiling segmented_maxsim.cpp (used by packed search only)
    return Checkpoint, ColBERTConfig


@pytest.fixture(scope="module")
def plaidx_dir(tmp_path_factory) -> Path:
    """A PLAID-X ColBERT-X checkpoint folder written by PLAID-X from a tiny random XLM-R."""
    import sentencepiece as spm

    if not LICENSES.is_dir():
        pytest.skip("no /usr/share/common-licenses")
    Checkpoint, PlaidConfig = _import_plaidx()
    folder = tmp_path_factory.mktemp("colbertx")
    text = folder / "text.txt"
    text.write_text("\n".join((LICENSES / n).read_text() for n in ("GPL-3", "Apache-2.0")) + "\n"
                    + "\n".join(QUERIES[-2:] + DOCUMENTS[-2:]) * 3)
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(folder / "sp"), vocab_size=400,
                                   model_type="unigram", character_coverage=1.0, minloglevel=2)
    slow = folder / "slow"
    slow.mkdir()
    (slow / "sentencepiece.bpe.model").write_bytes((folder / "sp.model").read_bytes())
    (slow / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "XLMRobertaTokenizer"}))
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(slow))
    base = folder / "xlmr"
    tokenizer.save_pretrained(base)
    torch.manual_seed(0)
    model = transformers.XLMRobertaModel(transformers.XLMRobertaConfig(
        vocab_size=len(tokenizer), hidden_size=24, num_hidden_layers=2, num_attention_heads=3, intermediate_size=40,
        max_position_embeddings=QUERY_MAXLEN + DOC_MAXLEN + 2, type_vocab_size=1, pad_token_id=1, bos_token_id=0,
        eos_token_id=2, layer_norm_eps=1e-5, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    with torch.no_grad():  # every weight random and large enough to matter; token vectors stay distinct
        for name, p in model.named_parameters():
            centre = 1.0 if "LayerNorm.weight" in name else 0.0
            p.copy_(centre + torch.randn_like(p) * (0.1 if "LayerNorm" in name else 0.3))
    model.save_pretrained(base)
    settings = PlaidConfig(model_name=str(base), checkpoint=str(base), query_maxlen=QUERY_MAXLEN,
                           doc_maxlen=DOC_MAXLEN, dim=DIM)
    settings.save_for_checkpoint(str(base))  # offline: PLAID-X would otherwise ask the Hub for artifact.metadata
    checkpoint = Checkpoint(str(base), colbert_config=settings)
    with torch.no_grad():
        checkpoint.linear.weight.copy_(torch.randn_like(checkpoint.linear.weight) * 0.3)
    checkpoint.save(str(folder / "plaidx"))
    return folder / "plaidx"


@pytest.fixture(scope="module")
def plaidx(plaidx_dir):
    Checkpoint, PlaidConfig = _import_plaidx()
    return Checkpoint(str(plaidx_dir), colbert_config=PlaidConfig(checkpoint=str(plaidx_dir),
                                                                  model_name=str(plaidx_dir)))


@pytest.fixture(scope="module")
def ours(plaidx_dir):
    params, config = import_checkpoint(hf_path=str(plaidx_dir))
    return build_model(config), params, Tokenizer(plaidx_dir)


def _to_polyret(ids: torch.Tensor) -> np.ndarray:
    """XLM-R ids in polyret's numbering (<s> 0 and <pad> 1 swapped)."""
    ids = ids.numpy()
    return np.where(ids == 1, 0, np.where(ids == 0, 1, ids)).astype(np.int32)


def test_settings_are_plaidx_settings(ours, plaidx):
    model, _, _ = ours
    cfg = model.config
    q_tok, d_tok = plaidx.query_tokenizer, plaidx.doc_tokenizer
    skiplist = sorted(int(_to_polyret(torch.tensor([k]))[0]) for k in plaidx.skiplist if isinstance(k, int))
    assert (cfg.query_marker_id, cfg.document_marker_id) == (q_tok.Q_marker_token_id, d_tok.D_marker_token_id)
    assert (cfg.query_mask_token_id, cfg.skip_token_ids) == (q_tok.mask_token_id, tuple(skiplist))
    assert (cfg.query_length, cfg.document_length, cfg.projection_dim) == (QUERY_MAXLEN, DOC_MAXLEN, DIM)
    assert cfg.attend_to_mask_tokens is False and plaidx.colbert_config.attend_to_mask_tokens is False
    assert cfg.encoder.vocab_size == plaidx.bert.get_input_embeddings().num_embeddings == len(plaidx.raw_tokenizer)
    # This tokenizer splits '. ' into '▁' + '.', so the marker overwrites '▁' and '.' stays (PLAID-X's rule).
    assert len(cfg.marker_suffix_ids) == 1


def _plaidx_queries(plaidx, attend: bool):
    plaidx.query_tokenizer.config.attend_to_mask_tokens = attend
    try:
        ids, mask = plaidx.query_tokenizer.tensorize(QUERIES)
        with torch.no_grad():
            vectors = plaidx.query(ids, mask)
    finally:
        plaidx.query_tokenizer.config.attend_to_mask_tokens = False
    return ids, mask, vectors.numpy()


@pytest.mark.parametrize("attend", [False, True])
def test_query_vectors_equal_plaidx(ours, plaidx, attend):
    model, params, tokenizer = ours
    if attend:
        model = build_model(dataclasses.replace(model.config, attend_to_mask_tokens=True))
    ids, mask, theirs = _plaidx_queries(plaidx, attend)
    tokens = jnp.asarray(pad_batch(tokenizer.encode(QUERIES, QUERY_MAXLEN), max_length=QUERY_MAXLEN))
    our_ids, our_attention = model.module.apply({"params": params}, tokens, method=ColBERTModule.query_inputs)
    np.testing.assert_array_equal(np.asarray(our_ids), _to_polyret(ids))
    np.testing.assert_array_equal(np.asarray(our_attention), mask.numpy().astype(bool))
    if not attend:  # the case must be exercised: mask tokens present and left out of attention
        assert (mask == 0).any() and (ids == plaidx.query_tokenizer.mask_token_id).sum() == (mask == 0).sum()
        assert (mask[:, -1] == 1).any()  # a query cut at query_maxlen (keeps </s> last)
        assert np.abs(theirs - _plaidx_queries(plaidx, True)[2]).max() > 1e-2  # the attention rule matters
    embedded = jax.jit(model.encode_queries)(params, tokens)
    assert np.asarray(embedded.mask).all()  # every position, mask tokens included, takes part in MaxSim
    np.testing.assert_allclose(np.asarray(embedded.vectors), theirs, atol=1e-5, rtol=0)


def test_document_vectors_equal_plaidx(ours, plaidx):
    model, params, tokenizer = ours
    ids, mask = plaidx.doc_tokenizer.tensorize(DOCUMENTS)
    with torch.no_grad():
        theirs, their_mask = plaidx.doc(ids, mask, keep_dims="return_mask")
    theirs, their_mask = theirs.numpy(), their_mask.squeeze(-1).numpy()
    tokens = jnp.asarray(pad_batch(tokenizer.encode(DOCUMENTS, DOC_MAXLEN), max_length=DOC_MAXLEN))
    our_ids = np.asarray(model.module.apply({"params": params}, tokens, method=ColBERTModule.document_inputs))
    width = ids.shape[1]
    np.testing.assert_array_equal(our_ids[:, :width], _to_polyret(ids))
    assert not our_ids[:, width:].any()
    embedded = jax.jit(model.encode_documents)(params, tokens)
    vectors, our_mask = np.asarray(embedded.vectors), np.asarray(embedded.mask)
    np.testing.assert_array_equal(our_mask[:, :width], their_mask)
    assert not our_mask[:, width:].any() and not vectors[:, width:].any()
    np.testing.assert_allclose(vectors[:, :width], theirs, atol=1e-5, rtol=0)
    # The case is exercised: punctuation skipped inside real text, a document cut at doc_maxlen.
    skipped = (mask.numpy() == 1) & ~their_mask
    assert skipped.sum() >= 5 and mask[:, -1].any()
    assert set(our_ids[skipped]) <= set(model.config.skip_token_ids)


def test_skip_list_follows_plaidx_rule(plaidx_dir):
    """The rule itself, written out independently: the first piece of each punctuation symbol alone."""
    tok = transformers.AutoTokenizer.from_pretrained(str(plaidx_dir))
    expected = {tok.encode(s, add_special_tokens=False)[0] for s in string.punctuation}
    expected = {0 if i == 1 else 1 if i == 0 else i for i in expected}
    assert set(colbert_x_tokens(plaidx_dir).skip_token_ids) == expected


def test_checkpoint_round_trip_keeps_colbert_x(ours, plaidx_dir, tmp_path):
    from polyret.models.model_folder import load_model

    model, params, _ = ours
    save_imported(params, model.config, tmp_path / "ckpt", hf_path=str(plaidx_dir))
    _, config, tokenizer = load_model(tmp_path / "ckpt")
    assert config == model.config and tokenizer is not None


def test_a_plaidx_folder_without_its_projection_is_refused(plaidx_dir, tmp_path):
    from safetensors.numpy import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(plaidx_dir, broken)
    tensors = {k: v for k, v in load_file(str(broken / "model.safetensors")).items() if k != "linear.weight"}
    save_file(tensors, str(broken / "model.safetensors"))
    with pytest.raises(ValueError, match=r"broken: a PLAID-X checkpoint without its projection \(linear.weight"):
        import_checkpoint(hf_path=str(broken))


def test_plain_xlmr_import_adds_the_markers_as_plaidx_does(plaidx_dir, tmp_path):
    """A plain XLM-R folder imported as ColBERT: markers appended after the vocabulary (PLAID-X's
    add_tokens order), the embedding table grown to hold them, a fresh projection, PLAID-X's defaults."""
    base = tmp_path / "xlmr"
    shutil.copytree(plaidx_dir.parent / "xlmr", base)
    (base / "artifact.metadata").unlink()  # written for PLAID-X's offline start; a plain XLM-R has none
    from polyret.jobs import import_checkpoint as import_job
    from polyret.models.model_folder import load_model

    assert import_job.main(["--hf", str(base), "--tower", "colbert", "--projection_dim", "8",
                            "--output_dir", str(tmp_path / "ckpt")]) == 0
    params, config, stored_tokenizer = load_model(tmp_path / "ckpt")
    assert stored_tokenizer is not None and stored_tokenizer.is_dir()
    tok = transformers.AutoTokenizer.from_pretrained(str(base))
    n = len(tok)
    assert (config.query_marker_id, config.document_marker_id, config.encoder.vocab_size) == (n, n + 1, n + 2)
    assert params["embeddings"]["word_embeddings"]["embedding"].shape[0] == n + 2
    assert params["projection_layer"]["kernel"].shape == (24, 8)
    assert (config.query_length, config.document_length, config.attend_to_mask_tokens) == (32, 220, False)
    assert config.query_mask_token_id == tok.mask_token_id


def test_mtd_run_builds_colbert_x_from_its_vocabulary(plaidx, plaidx_dir):
    """runs/mtd_colbert.gin: XLM-R encoder, ColBERT-X ids read off %VOCABULARY, PLAID-X's lengths and rules."""
    import gin

    gin.clear_config()  # also unlocks a config an earlier job finalized, before new configurables register
    import polyret.seqio_tasks.template_tasks  # noqa: F401
    import polyret.training.trainer  # noqa: F401
    from polyret import GIN_CONFIGS_DIR
    from polyret.models.colbert_x import colbert_x_config

    try:
        gin.add_config_file_search_path(str(GIN_CONFIGS_DIR))
        gin.parse_config_files_and_bindings([str(GIN_CONFIGS_DIR / "runs" / "mtd_colbert.gin")],
                                            [f"VOCABULARY = '{plaidx_dir}'", "bert_config.preset = 'xlm_roberta_tiny'"],
                                            finalize_config=False)
        assert gin.query_parameter("%MODEL_CONFIG").selector.endswith("colbert_x_config")
        assert (gin.query_parameter("adamw.weight_decay"), gin.query_parameter("make_optimizer.max_grad_norm")) == (
            0.0, 2.0)
        cfg = colbert_x_config()
    finally:
        gin.clear_config()
    assert cfg.encoder.model_type == "xlm-roberta" and cfg.encoder.hidden_size == 32
    assert (cfg.query_marker_id, cfg.document_marker_id, cfg.query_mask_token_id) == (
        plaidx.query_tokenizer.Q_marker_token_id, plaidx.doc_tokenizer.D_marker_token_id,
        plaidx.query_tokenizer.mask_token_id)
    assert (cfg.query_length, cfg.document_length, cfg.projection_dim, cfg.attend_to_mask_tokens) == (
        32, 220, 128, False)


def _same_vectors_as_plaidx(folder: Path, model, params, tokenizer: Tokenizer) -> None:
    """PLAID-X loading `folder` (an export) gives polyret's query and document vectors."""
    Checkpoint, PlaidConfig = _import_plaidx()
    theirs = Checkpoint(str(folder), colbert_config=PlaidConfig(checkpoint=str(folder), model_name=str(folder)))
    cfg = model.config
    assert (theirs.colbert_config.query_maxlen, theirs.colbert_config.doc_maxlen, theirs.colbert_config.dim) == (
        cfg.query_length, cfg.document_length, cfg.projection_dim)
    q = theirs.queryFromText(QUERIES).numpy()
    ours_q = model.encode_queries(params, jnp.asarray(pad_batch(tokenizer.encode(QUERIES, cfg.query_length),
                                                                max_length=cfg.query_length)))
    np.testing.assert_allclose(np.asarray(ours_q.vectors), q, atol=1e-5, rtol=0)
    ids, mask = theirs.doc_tokenizer.tensorize(DOCUMENTS)
    with torch.no_grad():
        d, d_mask = theirs.doc(ids, mask, keep_dims="return_mask")
    ours_d = model.encode_documents(params, jnp.asarray(pad_batch(tokenizer.encode(DOCUMENTS, DOC_MAXLEN))))
    width = ids.shape[1]
    np.testing.assert_array_equal(np.asarray(ours_d.mask)[:, :width], d_mask.squeeze(-1).numpy())
    np.testing.assert_allclose(np.asarray(ours_d.vectors)[:, :width], d.numpy(), atol=1e-5, rtol=0)


def test_export_is_read_by_plaidx_and_polyret(ours, plaidx_dir, tmp_path):
    from polyret.models.retrieval_model import export_hf

    model, params, tokenizer = ours
    export_hf(params, model.config, tmp_path / "export", tokenizer=str(plaidx_dir), max_seq_length=DOC_MAXLEN)
    _same_vectors_as_plaidx(tmp_path / "export", model, params, tokenizer)
    # transformers' AutoModel (what sentence-transformers / PyLate load) reads the `roberta.` weights too.
    encoder = transformers.AutoModel.from_pretrained(str(tmp_path / "export"))
    table = np.asarray(params["embeddings"]["word_embeddings"]["embedding"])
    np.testing.assert_array_equal(encoder.embeddings.word_embeddings.weight.detach().numpy()[2:], table[2:])
    back, config = import_checkpoint(hf_path=str(tmp_path / "export"))
    assert config == model.config
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(back)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_plain_xlmr_as_colbert_x_matches_plaidx_after_export(plaidx_dir, tmp_path):
    """Markers polyret appended on import sit at the ids PLAID-X gives them when it loads the export."""
    from polyret.models.retrieval_model import export_hf

    base = tmp_path / "xlmr"
    shutil.copytree(plaidx_dir.parent / "xlmr", base)
    (base / "artifact.metadata").unlink()
    params, config = import_checkpoint(hf_path=str(base), tower="colbert", projection_dim=8)
    config = dataclasses.replace(config, document_length=DOC_MAXLEN)
    export_hf(params, config, tmp_path / "export", tokenizer=str(base), max_seq_length=DOC_MAXLEN)
    _same_vectors_as_plaidx(tmp_path / "export", build_model(config), params, Tokenizer(base))


def test_maxsim_scores_equal_plaidx(ours, plaidx):
    """Every query against every document: polyret's MaxSim = PLAID-X's colbert_score (cosine similarity)."""
    from colbert.modeling.colbert import colbert_score

    model, params, tokenizer = ours
    q_ids, q_mask = plaidx.query_tokenizer.tensorize(QUERIES)
    d_ids, d_mask = plaidx.doc_tokenizer.tensorize(DOCUMENTS)
    with torch.no_grad():
        q = plaidx.query(q_ids, q_mask)
        d, d_keep = plaidx.doc(d_ids, d_mask, keep_dims="return_mask")
        theirs = np.stack([colbert_score(q[i:i + 1], d, d_keep, config=plaidx.colbert_config).numpy()
                           for i in range(len(QUERIES))])
    queries = model.encode_queries(params, jnp.asarray(pad_batch(tokenizer.encode(QUERIES, QUERY_MAXLEN),
                                                                 max_length=QUERY_MAXLEN)))
    documents = model.encode_documents(params, jnp.asarray(pad_batch(tokenizer.encode(DOCUMENTS, DOC_MAXLEN))))
    np.testing.assert_allclose(np.asarray(model.score(queries, documents)), theirs, atol=1e-4, rtol=0)


def test_colbert_x_trains_under_jit(ours):
    """One KL-distillation gradient (dropout on) through the markers, mask augmentation and skip list."""
    from polyret.models.losses import KLDistillationLoss

    model, params, tokenizer = ours
    cfg = model.config
    model = build_model(dataclasses.replace(cfg, encoder=dataclasses.replace(cfg.encoder, hidden_dropout_rate=0.1)),
                        KLDistillationLoss())
    passages = pad_batch(tokenizer.encode(DOCUMENTS[:4], DOC_MAXLEN), max_length=DOC_MAXLEN)
    batch = {"left_encoder_input_tokens": jnp.asarray(pad_batch(tokenizer.encode(QUERIES[:2], QUERY_MAXLEN),
                                                                max_length=QUERY_MAXLEN)),
             "right_encoder_input_tokens": jnp.asarray(passages.reshape(2, 2, -1)),
             "teacher_scores": jnp.asarray([[3.0, 1.0], [0.0, 2.0]])}
    (loss, _), grads = jax.jit(model.value_and_grad)(params, batch, jax.random.PRNGKey(0))
    table = np.asarray(grads["embeddings"]["word_embeddings"]["embedding"])
    assert np.isfinite(float(loss)) and all(np.isfinite(np.asarray(g)).all() for g in jax.tree_util.tree_leaves(grads))
    for used in (cfg.query_marker_id, cfg.document_marker_id, cfg.query_mask_token_id):
        assert np.abs(table[used]).sum() > 0
