"""Wall time of ``l2v-search eval`` on a BEIR split: first run (index built) vs second (index reused).

Each run is a fresh ``l2v-search eval ... --json`` process, so the times are what a user waits
for, model loading included. The index lives in a temporary folder: the first run always builds
it, the second finds it. BM25 is measured the same way for scale. Prints a table and the ratio
first/second, and writes the raw results as JSON (``--save``).

    nice -n 10 .venv/bin/python benchmarks/eval_bench.py                        # SciFact test, default encoder
    nice -n 10 .venv/bin/python benchmarks/eval_bench.py --model PATH --no-bm25 --save bench-eval.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llm2vec_search.models import DEFAULT_ENCODER

CLI = [sys.executable, "-c", "from llm2vec_search.cli import main; main()"]


def run_eval(data: Path, split: str, index_dir: Path, out: Path, *extra: str) -> dict:
    """One ``eval`` process: its wall time, the timings it reports, and its metrics."""
    cmd = [*CLI, "eval", str(data), "--split", split, "--index-dir", str(index_dir), "--out", str(out), "--json",
           *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | {"TOKENIZERS_PARALLELISM": "false"})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"eval failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    result = json.loads(proc.stdout)
    return {"wall_seconds": round(wall, 2), **result["timings"], "ndcg@10": result["metrics"]["ndcg@10"],
            "recall@100": result["metrics"]["recall@100"], "queries": result["dataset"]["queries"],
            "documents": result["index"]["documents"], "index_reused": result["index"]["reused"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("/work/shared/data/scifact"))
    p.add_argument("--split", default="test")
    p.add_argument("--model", default=DEFAULT_ENCODER)
    p.add_argument("--mode", default="dense", choices=["dense", "hybrid"])
    p.add_argument("--no-bm25", action="store_true", help="skip the BM25 reference runs")
    p.add_argument("--save", type=Path, help="write the results as JSON here")
    a = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="eval-bench-"))
    rows = {}
    try:
        variants = [("dense", ["--model", a.model, "--mode", a.mode])]
        if not a.no_bm25:
            variants.append(("bm25", ["--mode", "bm25"]))
        for name, extra in variants:
            for attempt in ("first", "second"):
                rows[f"{name} {attempt}"] = run_eval(a.data, a.split, tmp / "indexes", tmp / f"{name}-{attempt}",
                                                     *extra)
                print(f"{name} {attempt}: {rows[f'{name} {attempt}']}", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n{a.data.name} / {a.split}, model {a.model} ({a.mode}); {os.cpu_count()} CPUs")
    print(f"{'run':<14} {'wall s':>8} {'load s':>7} {'index s':>8} {'search s':>9} {'reused':>7} {'nDCG@10':>8}")
    for name, r in rows.items():
        print(f"{name:<14} {r['wall_seconds']:>8.1f} {r['load_seconds']:>7.1f} {r['index_seconds']:>8.1f} "
              f"{r['search_seconds']:>9.1f} {r['index_reused']!s:>7} {r['ndcg@10']:>8.4f}")
    for name in ("dense", "bm25"):
        if f"{name} second" in rows:
            first, second = rows[f"{name} first"], rows[f"{name} second"]
            print(f"{name}: first / second run = {first['wall_seconds'] / second['wall_seconds']:.1f}x; "
                  f"same metrics: {first['ndcg@10'] == second['ndcg@10']}")
    if a.save:
        a.save.write_text(json.dumps({"data": str(a.data), "split": a.split, "model": a.model, "mode": a.mode,
                                      "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
