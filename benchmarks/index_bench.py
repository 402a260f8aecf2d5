"""Index and query benchmark on SciFact with one encoder.

1. Index the whole corpus (BEIR folder): wall time, docs/s, tokens/s, peak RSS of this process.
2. Query latency: the SciFact test queries one at a time (encode + search), p50 / p99 in ms.

Flat vs approximate on 1M clustered 576-d vectors lives in scale_bench.py (``ivf --n 1000000``).

    nice -n 10 .venv/bin/python benchmarks/index_bench.py --data /work/shared/data/scifact
    nice -n 10 .venv/bin/python benchmarks/index_bench.py --data DIR --model PATH --limit-queries 20  # smoke
    nice -n 10 .venv/bin/python benchmarks/index_bench.py --data /work/shared/data/scifact --dtype int8

``--dtype int8`` builds (once, cached) the int8 model before the timing starts.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from llm2vec_search.encoder import load_encoder
from llm2vec_search.index import build_index
from llm2vec_search.models import DEFAULT_ENCODER
from llm2vec_search.search import SearchIndex


def test_queries(data: Path) -> list[str]:
    """Texts of the queries that have test qrels (300 for SciFact)."""
    with open(data / "qrels" / "test.tsv", encoding="utf-8") as f:
        wanted = {row[0] for row in csv.reader(f, delimiter="\t") if row and row[0] != "query-id"}
    with open(data / "queries.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r["text"] for r in rows if str(r["_id"]) in wanted]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("/work/shared/data/scifact"))
    p.add_argument("--model", default=DEFAULT_ENCODER)
    p.add_argument("--limit-queries", type=int, default=0, help="only the first N queries (0: all)")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--dtype", default="auto", help="auto | bf16 | fp32 | int8 (the encoder's dtype)")
    a = p.parse_args()

    encoder = load_encoder(a.model, dtype=a.dtype)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        folder = build_index(a.data, name="bench", index_dir=tmp, model=a.model, encoder=encoder,
                             show_progress=False)
        wall = time.perf_counter() - t0
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        index = SearchIndex.open("bench", index_dir=tmp)
        n_docs, tokens = index.size, encoder.stats.tokens
        queries = test_queries(a.data)
        if a.limit_queries:
            queries = queries[: a.limit_queries]
        index.search(queries[:1], a.k, encoder=encoder)  # warm up (FAISS, caches)
        lat = []
        for q in queries:
            t = time.perf_counter()
            index.search([q], a.k, encoder=encoder)
            lat.append((time.perf_counter() - t) * 1000)
    out = {
        "model": a.model, "dtype": str(encoder.dtype).removeprefix("torch."), "folder_name": folder.name,
        "docs": n_docs, "index_wall_s": round(wall, 1),
        "docs_per_s": round(n_docs / wall, 1), "tokens_per_s": round(tokens / wall, 1),
        "peak_rss_mb": round(rss_mb), "queries": len(lat),
        "query_p50_ms": round(float(np.percentile(lat, 50)), 1),
        "query_p99_ms": round(float(np.percentile(lat, 99)), 1),
    }
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
