"""Offline retrieval evaluation on BEIR-format datasets, through the same index and search code
that serves queries, scored with pytrec_eval (see :mod:`llm2vec_search.metrics`).

Only queries present in the split's qrels are run; a query that retrieves nothing scores 0
(it is not dropped from the average).

Library use, e.g. for a training ablation::

    from llm2vec_search.evaluate import evaluate_beir
    result = evaluate_beir("../shared/data/scifact", "test", model="runs/my-encoder")
    result["metrics"]["ndcg@10"]
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .corpus import read_beir
from .errors import UsageError
from .fusion import DEFAULT_FUSION, Fusion
from .instructions import instruction_for
from .manifest import library_versions, write_json_atomic, write_text_atomic
from .metrics import METRICS, run_from_rankings, score_run
from .models import DEFAULT_ENCODER
from .runs import trec_lines

__all__ = ["BeirSplit", "METRICS", "evaluate_beir", "load_beir", "score_run"]
MODES = ("dense", "bm25", "hybrid")
RUN_FILE, PER_QUERY_FILE, METRICS_FILE = "run.trec", "per_query.json", "metrics.json"


@dataclass(frozen=True)
class BeirSplit:
    """The judged queries of one split and their qrels, with what was skipped on loading."""

    queries: dict[str, str]  # qid -> text, only queries with at least one usable qrels row
    qrels: dict[str, dict[str, int]]  # qid -> {doc id: grade}
    skipped: dict[str, int]  # unknown_queries, unknown_documents (qrels rows), empty_queries


def load_beir(folder: str | Path, split: str) -> tuple[dict[str, str], dict[str, dict[str, int]], dict[str, int]]:
    """``(queries, qrels, skipped)`` of a split. Unknown query/document ids and empty queries are
    counted in ``skipped``, not fatal; a split with nothing left to evaluate is an error."""
    s = _load(Path(folder), split)
    return s.queries, s.qrels, s.skipped


def _load(folder: Path, split: str) -> BeirSplit:
    corpus, queries, raw = read_beir(folder, split)
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    skipped = {"unknown_queries": 0, "unknown_documents": 0, "empty_queries": 0}
    for qid, docs in raw.items():
        for did, grade in docs.items():
            if qid not in queries:
                skipped["unknown_queries"] += 1
            elif did not in corpus:
                skipped["unknown_documents"] += 1
            else:
                qrels[qid][did] = grade
    for qid in list(qrels):
        if not queries[qid].strip():
            skipped["empty_queries"] += 1
            del qrels[qid]
    if not qrels:
        raise UsageError(f"{folder / 'qrels' / f'{split}.tsv'}: no judged queries left to evaluate "
                         f"({_describe(skipped)})")
    return BeirSplit({q: queries[q] for q in qrels}, dict(qrels), skipped)


def _describe(skipped: dict[str, int]) -> str:
    return ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in skipped.items() if v) or "nothing skipped"


def evaluate_beir(
    dataset: str | Path,
    split: str = "test",
    *,
    model: str = DEFAULT_ENCODER,
    mode: str | None = None,
    instruction: str | None = None,
    fusion: Fusion | None = None,
    k: int = 1000,
    ignore_identical_ids: bool = False,
    index_dir: str | Path | None = None,
    out: str | Path | None = None,
    encoder=None,
    encoder_overrides: dict[str, Any] | None = None,
    show_progress: bool = True,
    index_type: str | None = None,
    on_disk: bool = False,
    nprobe: int | None = None,
    ef_search: int | None = None,
    vectors: str = "float",
    rescore_multiplier: int | None = None,
) -> dict[str, Any]:
    """Index ``dataset`` (cached per corpus and encoder), search the split's judged queries, score them.

    ``model`` is any spec :func:`~llm2vec_search.encoder.load_encoder` takes (alias, encoder
    directory, ...); pass ``encoder`` to reuse a loaded one. ``instruction`` overrides the task
    instruction of :mod:`~llm2vec_search.instructions` (``""``: none). Returns the content of
    ``metrics.json``; ``result["metrics"]`` maps :data:`METRICS` keys to values, and
    ``result["per_query"]`` holds each query's values (written to ``per_query.json``, not to
    ``metrics.json``). With ``out``, writes ``run.trec``, ``per_query.json`` and ``metrics.json``.
    ``mode`` None is the default of ``query``: hybrid (the cached index always has BM25), fused
    by ``fusion`` (default :data:`~llm2vec_search.fusion.DEFAULT_FUSION`). ``index_type`` and
    ``on_disk`` choose the cached index's FAISS (as ``l2v-search index`` does), and ``vectors`` its
    codes (float, int8, binary); ``nprobe``, ``ef_search`` and ``rescore_multiplier`` (int8/binary;
    None: the index's) tune its search.
    """
    from .search import SearchIndex

    mode = "hybrid" if mode is None else mode
    fusion = fusion or DEFAULT_FUSION
    if mode not in MODES:
        raise UsageError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    if k <= 0:
        raise UsageError(f"k must be positive, got {k}")
    if mode == "bm25" and (vectors != "float" or rescore_multiplier is not None):
        raise UsageError("--vectors and --rescore-multiplier apply to the dense side: not with --mode bm25")
    from .vectors import check_build

    check_build(vectors, index_type, rescore_multiplier, on_disk=on_disk)  # before any model loads
    dataset = Path(dataset)
    t0 = time.perf_counter()
    data = _load(dataset, split)
    if mode == "bm25":
        instruction, source = None, None  # BM25 ignores instructions: record none
    elif instruction is not None:
        source = "override"
    else:
        instruction = instruction_for(dataset.name)
        source = "table" if instruction is not None else None
    if mode != "bm25":
        if encoder is None:
            from .encoder import load_encoder

            encoder = load_encoder(model, **(encoder_overrides or {}))
    else:
        encoder = None
    t_load = time.perf_counter() - t0
    name, folder, reused = cached_index(dataset, index_dir, model, encoder, show_progress=show_progress,
                                        index_type=index_type, on_disk=on_disk, vectors=vectors)
    t_index = time.perf_counter() - t0 - t_load
    idx = SearchIndex.open(name, index_dir)
    qids = list(data.queries)
    t1 = time.perf_counter()
    depth = k + 1 if ignore_identical_ids else k  # one hit may be the query itself
    hits = idx.search([data.queries[q] for q in qids], depth, encoder=encoder, instruction=instruction, mode=mode,
                      fusion=fusion, nprobe=nprobe, ef_search=ef_search, rescore_multiplier=rescore_multiplier)
    t_search = time.perf_counter() - t1
    run = {  # qid -> [(doc, score)] in rank order
        qid: [(h.id, h.score) for h in qhits if not (ignore_identical_ids and h.id == qid)][:k]
        for qid, qhits in zip(qids, hits)
    }
    aggregate, per_query = score_run(run_from_rankings({q: [d for d, _ in r] for q, r in run.items()}), data.qrels)
    result = {
        "dataset": {"path": str(dataset.resolve()), "name": dataset.name, "split": split,
                    "queries": len(qids), "qrels": sum(len(v) for v in data.qrels.values()),
                    "fingerprint": _dataset_fingerprint(dataset, split), **data.skipped},
        "mode": mode,
        "fusion": dataclasses.asdict(fusion) if mode == "hybrid" else None,
        "instruction": instruction,
        "instruction_source": source,  # "table", "override", or None (none used)
        "encoder": idx.manifest.encoder if mode != "bm25" else None,
        "index": {"name": name, "folder": str(folder), "generation": idx.folder.name,
                  "fingerprint": idx.manifest.fingerprint, "documents": idx.manifest.corpus.documents,
                  "faiss": dataclasses.asdict(idx.manifest.faiss) if idx.manifest.dense else None,
                  "bm25": idx.manifest.bm25, "reused": reused},
        "rescore_multiplier": rescore_multiplier,  # None: the index's own (index.faiss.rescore_multiplier)
        "k": k,
        "ignore_identical_ids": ignore_identical_ids,
        "metrics": aggregate,
        "timings": {"load_seconds": round(t_load, 2), "index_seconds": round(t_index, 2),
                    "search_seconds": round(t_search, 2),
                    "total_seconds": round(time.perf_counter() - t0, 2)},
        "library_versions": library_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if out is not None:
        _write_outputs(Path(out), result, run, per_query)
    return {**result, "per_query": per_query}


def eval_index_name(dataset: Path, encoder=None) -> str:
    """The name of the index ``eval`` caches for a BEIR corpus and an encoder (BM25 alone: None);
    the dataset folder's name is made a valid index name."""
    from .store import safe_name

    return safe_name(f"eval-{dataset.name}-{encoder.fingerprint[:10] if encoder is not None else 'bm25'}")


def cached_index(dataset: Path, index_dir: str | Path | None, model: str, encoder=None, *,
                 show_progress: bool = True, index_type: str | None = None,
                 on_disk: bool = False, vectors: str = "float") -> tuple[str, Path, bool]:
    """The index of a BEIR corpus that ``eval`` keeps per encoder (BM25 only when ``encoder`` is
    None), built on first use: returns its name, folder, and whether it was reused as it was."""
    from .index import build_index
    from .store import IndexStore, index_home

    name = eval_index_name(dataset, encoder)
    store = IndexStore(index_home(index_dir), name)
    before = store.current()
    dense = encoder is not None  # BM25 is cheap: always built, so that hybrid reuses the index
    generation = build_index(dataset, name, index_dir, model, index_type if dense else None, encoder=encoder,
                             show_progress=show_progress, bm25=True, dense=dense, on_disk=on_disk and dense,
                             vectors=vectors if dense else "float")
    return name, store.folder, before is not None and generation == before  # the same generation: nothing built


def _write_outputs(out: Path, result: dict, run: dict[str, list[tuple[str, float]]], per_query: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / METRICS_FILE).unlink(missing_ok=True)  # its presence marks a complete run: gone while rewriting
    write_text_atomic(out / RUN_FILE, "\n".join(trec_lines(run.items(), f"l2v-{result['mode']}")) + "\n")
    write_json_atomic(out / PER_QUERY_FILE, per_query)
    write_json_atomic(out / METRICS_FILE, result)  # last


def _dataset_fingerprint(folder: Path, split: str) -> str:
    """Sizes of corpus and queries plus the split's qrels bytes: cheap, and changes with the data.
    (The index fingerprint in ``index`` covers the corpus content itself.)"""
    h = hashlib.sha256()
    for f in ("corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv"):
        h.update(f"{f}:{(folder / f).stat().st_size}".encode())
    h.update((folder / "qrels" / f"{split}.tsv").read_bytes())
    return h.hexdigest()[:16]
