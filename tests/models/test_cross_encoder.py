"""The cross-encoder against sentence-transformers' CrossEncoder (transformers' *ForSequenceClassification):
a random BERT and a random XLM-R reranker imported from Hugging Face score as `CrossEncoder.predict`, and
polyret's export of them loads in `CrossEncoder` with the same scores (pairs of different lengths, so padding
matters). The reranking losses against their closed forms, and `polyret rerank` end to end."""

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from polyret.jobs import export_hf as export_job
from polyret.jobs import import_checkpoint as import_job

LICENSES = Path("/usr/share/common-licenses")
WORDS = [f"w{i}" for i in range(90)]


def _texts(n: int, seed: int, lo: int, hi: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(lo, hi))) for _ in range(n)]


def _randomise(model):
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return model.eval()


def _bert_folder(folder: Path) -> Path:
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    folder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    transformers.BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
                                     intermediate_size=40, max_position_embeddings=300, type_vocab_size=2,
                                     num_labels=1, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    _randomise(transformers.BertForSequenceClassification(config)).save_pretrained(folder)
    return folder


def _xlmr_folder(folder: Path) -> Path:
    import sentencepiece as spm
    folder.mkdir(parents=True)
    text = folder / "text.txt"
    text.write_text("\n".join(" ".join(WORDS[i:i + 10]) for i in range(0, 90, 3)) * 5)
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(folder / "sp"), vocab_size=40,
                                   model_type="unigram", character_coverage=1.0, minloglevel=2)
    slow = folder.parent / "slow"  # converted by transformers as it converts xlm-roberta's own sentencepiece model
    slow.mkdir()
    (slow / "sentencepiece.bpe.model").write_bytes((folder / "sp.model").read_bytes())
    (slow / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "XLMRobertaTokenizer"}))
    fast = transformers.AutoTokenizer.from_pretrained(str(slow))
    fast.save_pretrained(folder)
    for f in folder.glob("sp.*"):
        f.unlink()
    config = transformers.XLMRobertaConfig(vocab_size=len(fast), hidden_size=24, num_hidden_layers=2,
                                           num_attention_heads=3, intermediate_size=40, max_position_embeddings=300,
                                           type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                                           num_labels=1, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    _randomise(transformers.XLMRobertaForSequenceClassification(config)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=["bert", "xlm-roberta"])
def reranker(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    hf = (_bert_folder if request.param == "bert" else _xlmr_folder)(root / "hf")
    ckpt = root / "ckpt"
    assert import_job.main(["--hf", str(hf), "--output_dir", str(ckpt)]) == 0
    return hf, ckpt


def _pairs():
    return list(zip(_texts(12, 1, 2, 8), _texts(12, 2, 3, 30)))


def _ours(ckpt: Path, pairs) -> np.ndarray:
    from polyret.retrieval.rerank import PairScorer
    scorer = PairScorer.from_checkpoint(ckpt, batch_size=5, query_max_length=48, passage_max_length=160)
    return scorer.score(pairs)


def test_imported_reranker_scores_as_cross_encoder_predict(reranker):
    from sentence_transformers import CrossEncoder
    hf, ckpt = reranker
    assert json.loads((ckpt / "model_config.json").read_text())["kind"] == "cross_encoder"
    pairs = _pairs()
    theirs = CrossEncoder(str(hf), device="cpu", activation_fn=torch.nn.Identity()).predict(pairs, batch_size=4)
    np.testing.assert_allclose(_ours(ckpt, pairs), theirs, atol=1e-5)


def test_export_loads_in_cross_encoder_with_the_same_scores(reranker, tmp_path):
    from sentence_transformers import CrossEncoder
    _, ckpt = reranker
    out = tmp_path / "export"
    assert export_job.main(["--checkpoint", str(ckpt), "--output_dir", str(out)]) == 0
    pairs = _pairs()
    theirs = CrossEncoder(str(out), device="cpu").predict(pairs, batch_size=3)  # activation from the export
    np.testing.assert_allclose(_ours(ckpt, pairs), theirs, atol=1e-5)
    # and back: the export imports to the same scores
    again = tmp_path / "again"
    assert import_job.main(["--hf", str(out), "--output_dir", str(again)]) == 0
    np.testing.assert_allclose(_ours(again, pairs), theirs, atol=1e-5)


class _FixedScores:
    """A stand-in model whose paired scores are given: the losses' arithmetic alone."""

    def __init__(self, scores):
        self.scores = np.asarray(scores, np.float32)

    def paired_scores(self, params, query_tokens, passage_tokens, query_rng=None, passage_rng=None,
                      deterministic=True):
        return self.scores


def test_listwise_and_pointwise_losses_match_their_closed_forms():
    from polyret.models.losses import ListwiseLoss, PointwiseBCELoss
    scores = [[2.0, 0.5, -1.0], [0.1, 0.3, 9.0]]  # second row: its last negative is padding
    batch = {"left_encoder_input_tokens": np.ones((2, 4), np.int32),
             "right_encoder_input_tokens": np.ones((2, 5), np.int32),
             "right_negative_encoder_input_tokens": np.array([[[1] * 5, [1] * 5], [[1] * 5, [0] * 5]], np.int32)}
    model = _FixedScores(scores)
    listwise, _ = ListwiseLoss()(model, None, batch, None)
    row0 = -np.log(np.exp(2.0) / np.exp([2.0, 0.5, -1.0]).sum())
    row1 = -np.log(np.exp(0.1) / np.exp([0.1, 0.3]).sum())
    assert float(listwise) == pytest.approx((row0 + row1) / 2, rel=1e-6)
    pointwise, _ = PointwiseBCELoss()(model, None, batch, None)
    logits = torch.tensor([2.0, 0.5, -1.0, 0.1, 0.3])
    labels = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0])
    reference = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    assert float(pointwise) == pytest.approx(float(reference), rel=1e-6)


def test_rerank_job_orders_by_the_cross_encoder_and_resumes(reranker, tmp_path, capsys):
    from sentence_transformers import CrossEncoder
    from polyret.io.runs import read_trec_run
    from polyret.jobs import rerank as rerank_job
    hf, ckpt = reranker
    passages = _texts(15, 3, 3, 20)
    queries = _texts(5, 4, 2, 6)
    (tmp_path / "corpus.tsv").write_text("".join(f"d{i}\t{t}\n" for i, t in enumerate(passages)))
    (tmp_path / "queries.tsv").write_text("".join(f"q{i}\t{t}\n" for i, t in enumerate(queries)))
    rng = np.random.default_rng(5)
    first = {f"q{i}": {f"d{j}": float(s) for j, s in zip(rng.choice(15, 10, replace=False), rng.random(10))}
             for i in range(5)}
    (tmp_path / "first.trec").write_text("".join(f"{q} Q0 {d} 0 {s} bm25\n" for q, h in first.items()
                                                 for d, s in h.items()))
    (tmp_path / "qrels.txt").write_text("".join(f"q{i} 0 {next(iter(first[f'q{i}']))} 1\n" for i in range(5)))
    args = ["--checkpoint", str(ckpt), "--corpus", str(tmp_path / "corpus.tsv"), "--queries",
            str(tmp_path / "queries.tsv"), "--run", str(tmp_path / "first.trec"), "--output_dir", str(tmp_path / "out"),
            "--qrels", str(tmp_path / "qrels.txt"), "--query_max_length", "48", "--passage_max_length", "160",
            "--queries_per_part", "2"]
    assert rerank_job.main(args + ["--top_k", "6"]) == 0
    reranked = read_trec_run(tmp_path / "out" / "reranked.trec")
    model = CrossEncoder(str(hf), device="cpu", activation_fn=torch.nn.Identity())
    tops = {}
    for q, hits in first.items():
        order = [d for d, _ in sorted(hits.items(), key=lambda x: (-x[1], x[0]))]
        top, tail = order[:6], order[6:]
        tops[q] = top
        theirs = model.predict([(queries[int(q[1:])], passages[int(d[1:])]) for d in top])
        np.testing.assert_allclose([reranked[q][d] for d in top], theirs, atol=1e-5)
        # Below the reranked top 6: the first stage's other passages, in its order.
        assert sorted(reranked[q], key=lambda d: -reranked[q][d]) == sorted(top, key=lambda d: -reranked[q][d]) + tail
    assert len(list((tmp_path / "out").glob("part-*.trec"))) == 3
    # A rerun keeps the finished parts; the same output comes back.
    (tmp_path / "out" / "reranked.trec").unlink()
    (tmp_path / "out" / "part-00002.trec").unlink()
    assert rerank_job.main(args + ["--top_k", "6"]) == 0
    assert read_trec_run(tmp_path / "out" / "reranked.trec") == reranked
    assert rerank_job.main(args + ["--top_k", "6", "--only_top_k", "--fuse_first_stage", "0.3"]) == 0
    assert read_trec_run(tmp_path / "out" / "reranked.trec") == {q: {d: reranked[q][d] for d in tops[q]}
                                                                for q in first}
    # Fusion: 0.3 x the first stage's z-scores + 0.7 x the reranker's (scipy's zscore), over each top 6.
    fused = read_trec_run(tmp_path / "out" / "fused.trec")
    for q, top in tops.items():
        expected = (0.3 * stats.zscore([first[q][d] for d in top])
                    + 0.7 * stats.zscore([reranked[q][d] for d in top]))
        np.testing.assert_allclose([fused[q][d] for d in top], expected, atol=1e-5)
    assert "fused (first stage 0.3)" in json.loads((tmp_path / "out" / "metrics.json").read_text())["metrics"]
    # Other settings into the same folder: one line.
    capsys.readouterr()
    assert rerank_job.main(args + ["--top_k", "3"]) == 2
    # A passage the corpus lacks: one line naming the run file and the id.
    (tmp_path / "bad.trec").write_text("q0 Q0 nope 1 1.0 x\n")
    bad = args.copy()
    bad[bad.index("--run") + 1] = str(tmp_path / "bad.trec")
    bad[bad.index("--output_dir") + 1] = str(tmp_path / "out2")
    capsys.readouterr()
    assert rerank_job.main(bad + ["--top_k", "6"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.trec" in err[0] and "'nope'" in err[0]


def test_polyret_cross_encoder_is_a_prepare_distill_teacher(reranker, tmp_path):
    """`prepare_distill --teacher CKPT` scores the candidates in JAX: the hltcoe score file holds
    `CrossEncoder.predict`'s logits of the same pairs."""
    import gzip
    from sentence_transformers import CrossEncoder
    from polyret.jobs import prepare_distill as distill_job
    hf, ckpt = reranker
    passages, queries = _texts(8, 6, 3, 20), _texts(3, 7, 2, 6)
    (tmp_path / "collection.tsv").write_text("".join(f"p{i}\t{t}\n" for i, t in enumerate(passages)))
    (tmp_path / "queries.tsv").write_text("".join(f"q{i}\t{t}\n" for i, t in enumerate(queries)))
    (tmp_path / "run.trec").write_text("".join(f"q{i} Q0 p{j} {j + 1} {10 - j} bm25\n" for i in range(3)
                                               for j in range(8)))
    assert distill_job.main(["--queries", str(tmp_path / "queries.tsv"), "--collection",
                             str(tmp_path / "collection.tsv"), "--run", str(tmp_path / "run.trec"), "--top_n", "5",
                             "--teacher", str(ckpt), "--output_dir", str(tmp_path / "mtd")]) == 0
    rows = [json.loads(line) for line in gzip.open(tmp_path / "mtd" / "scores.jsonl.gz", "rt")]
    model = CrossEncoder(str(hf), device="cpu", activation_fn=torch.nn.Identity())
    for row in rows:
        qid, scored = row[0], row[1:]
        theirs = model.predict([(queries[int(qid[1:])], passages[int(pid[1:])]) for pid, _ in scored])
        np.testing.assert_allclose([s for _, s in scored], theirs, atol=1e-4)


def test_listwise_loss_takes_positives_and_negatives_cut_to_different_buckets():
    """With length buckets the positive and negative features arrive at different widths; the loss pads them
    to one (zero rows and columns are padding), giving the value of the equal-width batch."""
    from polyret.models.losses import ListwiseLoss

    class Echo:
        def paired_scores(self, params, query_tokens, passage_tokens, query_rng=None, passage_rng=None,
                          deterministic=True):
            return passage_tokens.sum(-1).astype(np.float32) / 100.0

    rng = np.random.default_rng(0)
    positives, negatives = rng.integers(1, 9, (2, 8)), rng.integers(1, 9, (2, 3, 12))
    narrow = {"left_encoder_input_tokens": np.ones((2, 4), np.int32), "right_encoder_input_tokens": positives,
              "right_negative_encoder_input_tokens": negatives}
    wide = {**narrow, "right_encoder_input_tokens": np.pad(positives, ((0, 0), (0, 4)))}
    assert float(ListwiseLoss()(Echo(), None, narrow, None)[0]) == pytest.approx(
        float(ListwiseLoss()(Echo(), None, wide, None)[0]))
