"""Metrics from pytrec_eval against an independent written-out reference (trec_eval semantics)."""

import math
import random

import pytest

from llm2vec_search.metrics import METRICS, run_from_rankings, score_run


def reference(run: dict, qrels: dict) -> dict[str, dict[str, float]]:
    """Linear gains, log2 discounts, recall over judged-relevant, MAP over judged-relevant,
    MRR over the top 10 only; a query with no relevant document scores 0 everywhere."""
    out = {}
    for q, judged in qrels.items():
        ranked = [d for d, _ in sorted(run.get(q, {}).items(), key=lambda x: -x[1])]
        rel = {d: r for d, r in judged.items() if r > 0}
        m = {}
        for k in (1, 3, 5, 10, 100):
            dcg = sum(rel.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
            idcg = sum(r / math.log2(i + 2) for i, r in enumerate(sorted(rel.values(), reverse=True)[:k]))
            m[f"ndcg@{k}"] = dcg / idcg if idcg else 0.0
        for k in (10, 100, 1000):
            m[f"recall@{k}"] = len(set(ranked[:k]) & set(rel)) / len(rel) if rel else 0.0
        first = next((i for i, d in enumerate(ranked[:10]) if d in rel), None)
        m["mrr@10"] = 0.0 if first is None else 1 / (first + 1)
        hits, precisions = 0, []
        for i, d in enumerate(ranked[:100]):
            if d in rel:
                hits += 1
                precisions.append(hits / (i + 1))
        m["map@100"] = sum(precisions) / len(rel) if rel else 0.0
        out[q] = m
    return out


def random_case(seed: int):
    rng = random.Random(seed)
    docs = [f"d{i}" for i in range(1500)]
    qrels, run = {}, {}
    for q in range(30):
        judged = rng.sample(docs, rng.randint(1, 40))
        qrels[f"q{q}"] = {d: rng.choice([0, 1, 2, 3, 4]) for d in judged}  # graded; some judged non-relevant
        if q % 7 == 0:
            qrels[f"q{q}"] = {d: 0 for d in judged}  # no relevant document at all
        if q % 5 != 4:  # every fifth query retrieves nothing
            # Relevant documents mostly below rank 10 for some queries (MRR@10 = 0 but recall@100 > 0).
            run[f"q{q}"] = {d: rng.random() for d in rng.sample(docs, rng.randint(1, 1200))}
    run["q-not-judged"] = {"d1": 1.0}  # ignored: only judged queries are scored
    return run, qrels


@pytest.mark.parametrize("seed", range(6))
def test_metrics_equal_reference_on_random_runs(seed):
    run, qrels = random_case(seed)
    aggregate, per_query = score_run(run, qrels)
    expected = reference(run, qrels)
    assert set(per_query) == set(qrels)
    for q in qrels:
        assert set(per_query[q]) == set(METRICS)
        for key, value in expected[q].items():
            assert per_query[q][key] == pytest.approx(value, abs=1e-6), (q, key)
    for key in METRICS:  # the mean over every judged query, empty runs included
        assert aggregate[key] == pytest.approx(sum(e[key] for e in expected.values()) / len(qrels), abs=1e-6)


def test_mrr_is_cut_at_ten_and_empty_query_scores_zero():
    qrels = {"a": {"d11": 1}, "b": {"d0": 2}}
    ranking = {"a": [f"d{i}" for i in range(20)], "b": []}
    aggregate, per_query = score_run(run_from_rankings(ranking), qrels)
    assert per_query["a"]["mrr@10"] == 0.0 and per_query["a"]["recall@100"] == 1.0
    assert per_query["a"]["map@100"] == pytest.approx(1 / 12)
    assert per_query["b"] == dict.fromkeys(METRICS, 0.0)
    assert aggregate["recall@100"] == 0.5


def test_rankings_keep_their_order_where_trec_eval_would_reorder_ties():
    qrels = {"q": {"a": 1}}
    tied = {"q": {"a": 1.0, "b": 1.0}}  # trec_eval breaks the tie by doc id, descending: b first
    assert score_run(tied, qrels)[1]["q"]["mrr@10"] == 0.5
    assert score_run(run_from_rankings({"q": ["a", "b"]}), qrels)[1]["q"]["mrr@10"] == 1.0


def test_no_judged_queries_gives_zeros():
    aggregate, per_query = score_run({"q": {"d": 1.0}}, {})
    assert per_query == {} and aggregate == dict.fromkeys(METRICS, 0.0)
