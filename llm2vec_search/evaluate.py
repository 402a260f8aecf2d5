"""Offline retrieval evaluation on BEIR-format datasets, through the same index and search code
that serves queries, scored with pytrec_eval (trec_eval semantics).

Only queries present in the split's qrels are run; a query that retrieves nothing scores 0
(it is not dropped from the average).
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from .errors import UsageError
from .instructions import instruction_for
from .manifest import library_versions, write_json_atomic, write_text_atomic
from .models import DEFAULT_ENCODER

# pytrec_eval measure -> our key
MEASURES = {
    "ndcg_cut_1": "ndcg@1", "ndcg_cut_3": "ndcg@3", "ndcg_cut_5": "ndcg@5", "ndcg_cut_10": "ndcg@10",
    "ndcg_cut_100": "ndcg@100", "recall_10": "recall@10", "recall_100": "recall@100",
    "recall_1000": "recall@1000", "map_cut_100": "map@100",
}


def load_beir(folder: str | Path, split: str) -> tuple[dict[str, str], dict[str, dict[str, int]], dict[str, int]]:
    """Queries of the split and its qrels; unknown query/document ids are counted, not fatal."""
    folder = Path(folder)
    if not (folder / "corpus.jsonl").is_file() or not (folder / "queries.jsonl").is_file():
        raise UsageError(f"{folder} is not a BEIR dataset (needs corpus.jsonl, queries.jsonl, qrels/<split>.tsv)")
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        splits = sorted(p.stem for p in (folder / "qrels").glob("*.tsv")) if (folder / "qrels").is_dir() else []
        raise UsageError(f"{folder} has no {split!r} split (available: {', '.join(splits) or 'none'})")
    queries = {}
    with open(folder / "queries.jsonl", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    q = json.loads(line)
                    queries[str(q["_id"])] = q["text"]
                except (ValueError, KeyError, TypeError):
                    raise UsageError(f"{folder}/queries.jsonl:{n}: expected an object with _id and text") from None
    doc_ids = set()
    with open(folder / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                doc_ids.add(str(json.loads(line)["_id"]))
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    report = {"unknown_queries": 0, "unknown_documents": 0, "empty_queries": 0}
    with open(qrels_path, encoding="utf-8") as f:
        for n, row in enumerate(csv.reader(f, delimiter="\t"), 1):
            if n == 1 and row and row[0] == "query-id":
                continue
            if len(row) < 3:
                raise UsageError(f"{qrels_path}:{n}: expected query-id, corpus-id, score")
            qid, did, score = row[0], row[1], row[2]
            if qid not in queries:
                report["unknown_queries"] += 1
                continue
            if did not in doc_ids:
                report["unknown_documents"] += 1
                continue
            qrels[qid][did] = int(score)
    for qid in list(qrels):
        if not queries[qid].strip():
            report["empty_queries"] += 1
            del qrels[qid]
    if not qrels:
        raise UsageError(f"{qrels_path}: no judged queries left to evaluate")
    return {q: queries[q] for q in qrels}, dict(qrels), report


def score_run(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]]) -> tuple[dict, dict]:
    """Aggregate and per-query metrics. Every judged query counts; one with no results scores 0."""
    import pytrec_eval

    measures = {"ndcg_cut.1,3,5,10,100", "recall.10,100,1000", "map_cut.100"}
    per_query: dict[str, dict[str, float]] = {q: dict.fromkeys([*MEASURES.values(), "mrr@10"], 0.0) for q in qrels}
    full = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate({q: run.get(q, {}) for q in qrels})
    top10 = {q: dict(sorted(run.get(q, {}).items(), key=lambda x: -x[1])[:10]) for q in qrels}
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    for q, values in full.items():
        for m, key in MEASURES.items():
            per_query[q][key] = values.get(m, 0.0)
    for q, values in rr.items():
        per_query[q]["mrr@10"] = values["recip_rank"]
    keys = [*MEASURES.values(), "mrr@10"]
    aggregate = {k: sum(v[k] for v in per_query.values()) / len(per_query) for k in keys}
    return aggregate, per_query


def evaluate_beir(
    dataset: str | Path,
    split: str = "test",
    *,
    model: str = DEFAULT_ENCODER,
    mode: str = "dense",
    instruction: str | None = None,
    k: int = 1000,
    ignore_identical_ids: bool = False,
    index_dir: str | Path | None = None,
    out: str | Path | None = None,
    encoder_overrides: dict[str, Any] | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Index (cached), search and score one split. Returns the metrics.json content."""
    from .index import build_index
    from .search import SearchIndex

    dataset = Path(dataset)
    t0 = time.perf_counter()
    queries, qrels, report = load_beir(dataset, split)
    instruction = instruction if instruction is not None else instruction_for(dataset.name)
    encoder = None
    if mode != "bm25":
        from .encoder import load_encoder

        encoder = load_encoder(model, **(encoder_overrides or {}))
        name = f"eval-{dataset.name}-{encoder.fingerprint[:10]}"
    else:
        name = f"eval-{dataset.name}-bm25"
    folder = build_index(dataset, name, index_dir, model, encoder=encoder, show_progress=show_progress,
                         bm25=True, dense=mode != "bm25")
    t_index = time.perf_counter() - t0
    idx = SearchIndex.open(name, index_dir)
    qids = list(queries)
    t1 = time.perf_counter()
    depth = k + 1 if ignore_identical_ids else k
    hits = idx.search([queries[q] for q in qids], depth, encoder=encoder, instruction=instruction, mode=mode)
    t_search = time.perf_counter() - t1
    run = {}  # qid -> [(doc, score)] in rank order
    for qid, qhits in zip(qids, hits):
        run[qid] = [(h.id, h.score) for h in qhits if not (ignore_identical_ids and h.id == qid)][:k]
    # Score by rank (trec_eval re-sorts by score and breaks ties by doc id, which could reorder
    # tied BM25 scores): what is measured is exactly the ranking a user of `query` sees.
    by_rank = {q: {doc: float(len(r) - i) for i, (doc, _) in enumerate(r)} for q, r in run.items()}
    aggregate, per_query = score_run(by_rank, qrels)
    result = {
        "dataset": {"path": str(dataset.resolve()), "name": dataset.name, "split": split,
                    "queries": len(qids), "fingerprint": _dataset_fingerprint(dataset, split), **report},
        "mode": mode,
        "instruction": instruction,
        "encoder": idx.manifest["encoder"] if mode != "bm25" else None,
        "index": {"name": name, "folder": str(folder), "fingerprint": idx.manifest["fingerprint"],
                  "faiss": idx.manifest.get("faiss")},
        "k": k,
        "ignore_identical_ids": ignore_identical_ids,
        "metrics": aggregate,
        "timings": {"index_seconds": round(t_index, 2), "search_seconds": round(t_search, 2),
                    "total_seconds": round(time.perf_counter() - t0, 2)},
        "library_versions": library_versions(),
    }
    if out is not None:
        _write_outputs(Path(out), result, run, per_query)
    return result


def _write_outputs(out: Path, result: dict, run: dict[str, list[tuple[str, float]]], per_query: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for qid, docs in run.items():
        for rank, (doc, score) in enumerate(docs, 1):
            lines.append(f"{qid} Q0 {doc} {rank} {score:.6f} l2v-search")
    write_text_atomic(out / "run.trec", "\n".join(lines) + "\n")
    write_json_atomic(out / "per_query.json", per_query)
    write_json_atomic(out / "metrics.json", result)  # last: its presence marks a complete run


def _dataset_fingerprint(folder: Path, split: str) -> str:
    h = hashlib.sha256()
    for f in ("corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv"):
        st = (folder / f).stat()
        h.update(f"{f}:{st.st_size}".encode())
    with open(folder / "qrels" / f"{split}.tsv", "rb") as fh:
        h.update(fh.read())
    return h.hexdigest()[:16]
