"""Chunk window length: index time and retrieval quality at each ``--max-length``, side by side.

A document longer than the encoder's window is indexed as overlapping windows (64 tokens shared);
shorter windows pay less attention per token but embed more tokens (the overlaps) and give the
document more vectors. For each window length, in turn and ``--repeats`` times, this runs

    l2v-search eval DATA --split SPLIT --mode dense --max-length L --index-dir <fresh> --json

in a fresh process with a fresh index home, and reads from its JSON the seconds spent indexing, the
vectors made and nDCG@10 / recall@100 (the query side is short: only documents are windowed).

    hi .venv/bin/python benchmarks/window_bench.py runs/val/sub/scifact --split val --lengths 256,512
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile


def run(data: str, split: str, length: int, model: str | None, dtype: str | None) -> dict:
    with tempfile.TemporaryDirectory() as home:
        cmd = [sys.executable, "-c", "from llm2vec_search.cli import main; main()", "eval", data, "--split", split,
               "--mode", "dense", "--max-length", str(length), "--index-dir", home, "--json",
               *(["--model", model] if model else []), *(["--dtype", dtype] if dtype else [])]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"eval at --max-length {length} failed: {p.stderr.strip()[-500:]}")
        out = json.loads(p.stdout)
    return {"length": length, "index_s": out["timings"]["index_seconds"], "documents": out["index"]["documents"],
            "vectors": out["index"]["faiss"]["vectors"], "ndcg@10": out["metrics"]["ndcg@10"],
            "recall@100": out["metrics"]["recall@100"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="a BEIR folder")
    ap.add_argument("--split", default="test")
    ap.add_argument("--lengths", default="256,512", help="comma-separated --max-length values")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--model")
    ap.add_argument("--dtype")
    a = ap.parse_args()
    lengths = [int(x) for x in a.lengths.split(",")]
    rows: dict[int, list[dict]] = {n: [] for n in lengths}
    for _ in range(a.repeats):
        for n in lengths:
            r = run(a.data, a.split, n, a.model, a.dtype)
            rows[n].append(r)
            print(json.dumps(r), file=sys.stderr, flush=True)
    base = statistics.median(r["index_s"] for r in rows[lengths[-1]])
    print(f"{'max length':>10} {'index s (median)':>17} {'vs ' + str(lengths[-1]):>8} {'vectors':>8} "
          f"{'nDCG@10':>8} {'R@100':>7}")
    for n, rs in rows.items():
        s = statistics.median(r["index_s"] for r in rs)
        print(f"{n:>10} {s:>17.1f} {base / s:>7.2f}x {rs[0]['vectors']:>8} {rs[0]['ndcg@10']:>8.4f} "
              f"{rs[0]['recall@100']:>7.4f}")


if __name__ == "__main__":
    main()
