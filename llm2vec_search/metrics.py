"""Retrieval metrics from pytrec_eval (trec_eval semantics), aggregate and per query.

A run is ``{qid: {doc_id: score}}`` and qrels ``{qid: {doc_id: grade}}`` (grade <= 0: not
relevant). Every judged query counts in the average; one the run has no results for scores 0,
as in BEIR (it is not dropped, which would flatter a system that fails on hard queries).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

# pytrec_eval measure -> our key (lowercase, BEIR/MTEB style)
MEASURES = {
    "ndcg_cut_1": "ndcg@1", "ndcg_cut_3": "ndcg@3", "ndcg_cut_5": "ndcg@5", "ndcg_cut_10": "ndcg@10",
    "ndcg_cut_100": "ndcg@100", "recall_10": "recall@10", "recall_100": "recall@100",
    "recall_1000": "recall@1000", "map_cut_100": "map@100",
}
METRICS = (*MEASURES.values(), "mrr@10")  # every key of a score_run result, in display order
_TREC_MEASURES = {"ndcg_cut.1,3,5,10,100", "recall.10,100,1000", "map_cut.100"}

Run = Mapping[str, Mapping[str, float]]
Qrels = Mapping[str, Mapping[str, int]]


def run_from_rankings(rankings: Mapping[str, Sequence[str]]) -> dict[str, dict[str, float]]:
    """Scores that reproduce each ranking exactly.

    trec_eval re-sorts a run by score and breaks ties by document id, which would reorder tied
    scores (frequent with BM25); scoring by rank measures exactly the ranking a user sees.
    """
    return {q: {doc: float(len(docs) - i) for i, doc in enumerate(docs)} for q, docs in rankings.items()}


def score_run(run: Run, qrels: Qrels) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """``(aggregate, per_query)`` for every query in ``qrels``; keys are :data:`METRICS`.

    MRR@10 is pytrec_eval's ``recip_rank`` on the run cut to its top 10 (trec_eval has no
    cut-off for it): a first relevant document at rank 11 or later scores 0.
    """
    import pytrec_eval

    qrels = {q: {d: int(g) for d, g in judged.items()} for q, judged in qrels.items()}
    if not qrels:
        return dict.fromkeys(METRICS, 0.0), {}
    # pytrec_eval leaves out a query the run has nothing for; give it an empty ranking (all 0).
    full_run = {q: {d: float(s) for d, s in run.get(q, {}).items()} for q in qrels}
    per_query = {q: dict.fromkeys(METRICS, 0.0) for q in qrels}
    for q, values in pytrec_eval.RelevanceEvaluator(qrels, _TREC_MEASURES).evaluate(full_run).items():
        for measure, key in MEASURES.items():
            per_query[q][key] = float(values.get(measure, 0.0))
    # Top 10 in trec_eval's own order (score descending, ties by doc id descending).
    top10 = {q: dict(sorted(docs.items(), key=lambda x: (x[1], x[0]), reverse=True)[:10])
             for q, docs in full_run.items()}
    for q, values in pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10).items():
        per_query[q]["mrr@10"] = float(values["recip_rank"])
    aggregate = {key: sum(v[key] for v in per_query.values()) / len(per_query) for key in METRICS}
    return aggregate, per_query
