"""The two scoring conventions the papers use, against ir_measures: "judged" (trec_eval -c: a judged query
with no results scores 0) and "run" (ir_measures.calc_aggregate, which PLAID-X's search script prints:
plaid-x 0.3.3, colbert/scripts/search.py), plus Judged@10 beside nDCG@20."""

import ir_measures
import pytest

from polyret.retrieval.metrics import evaluate, with_judged

QRELS = {"q1": {"d1": 2, "d2": 0, "d3": 1}, "q2": {"d4": 1}, "q3": {"d5": 1, "d6": 1}}
RUN = {"q1": {"d9": 5.0, "d3": 4.0, "d2": 3.0, "d1": 1.0}, "q2": {"d4": 2.0, "d8": 1.0}}  # q3: no results
MEASURES = ["nDCG@20", "Judged@10", "AP", "RR@10"]


def test_run_convention_is_ir_measures_calc_aggregate():
    ours = evaluate(QRELS, RUN, MEASURES, convention="run")["all"]
    theirs = {str(m): v for m, v in ir_measures.calc_aggregate(list(map(ir_measures.parse_measure, MEASURES)),
                                                                 QRELS, RUN).items()}
    assert ours == pytest.approx(theirs)


def test_judged_convention_counts_a_query_without_results_as_zero():
    ours = evaluate(QRELS, RUN, MEASURES)["all"]
    for measure in MEASURES:
        per_query = {r.query_id: r.value for r in ir_measures.iter_calc([ir_measures.parse_measure(measure)],
                                                                        QRELS, RUN)}
        assert per_query.get("q3", 0.0) == 0.0  # ir_measures lists q3 for some measures, always at 0
        assert ours[measure] == pytest.approx(sum(per_query.values()) / len(QRELS))  # q3 counts as 0
    with pytest.raises(ValueError, match="unknown scoring convention"):
        evaluate(QRELS, RUN, MEASURES, convention="trec")


def test_judged_at_10_goes_beside_ndcg_at_20():
    assert with_judged(["nDCG@10", "nDCG@20", "AP"]) == ["nDCG@10", "nDCG@20", "Judged@10", "AP"]
    assert with_judged(["nDCG@10"]) == ["nDCG@10"]
    assert with_judged(["Judged@10", "nDCG@20"]) == ["Judged@10", "nDCG@20"]
    # q1 alone: d9 unjudged among the 4 retrieved, so 3 of 4 judged (fewer than 10 retrieved: divided by 4).
    only_q1 = evaluate({"q1": QRELS["q1"]}, {"q1": RUN["q1"]}, ["Judged@10"], convention="run")["all"]["Judged@10"]
    assert only_q1 == pytest.approx(3 / 4)
