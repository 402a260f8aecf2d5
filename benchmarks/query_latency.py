"""One-shot ``l2v-search query`` latency: wall time and peak RSS of the whole command, each in a
fresh process, as a person typing queries meets it.

    merge each call   L2V_SEARCH_MERGED_CACHE=0: the adapters merged at every load (the old path)
    cache cold        the merged-encoder entry removed first: this call merges and writes it
    cache warm        the entry there: one set of weights read, no peft
    bm25              --mode bm25 (no torch, no FAISS)
    via server        `l2v-search serve` running on the same index home: the CLI finds its record
    int8 one-shot     with ``--int8-index NAME``: the same query against an index built with
                      ``--dtype int8`` (its int8 model cached; no torch, no transformers)

Each row is the median of --runs calls (cache cold: one call per run, the entry removed before
each); peak RSS is the child's ``ru_maxrss``. Needs a dense index built with the encoder to
measure, e.g.:

    l2v-search index corpus.jsonl --name bench --index-dir /tmp/qbench
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/query_latency.py --index-dir /tmp/qbench --index bench
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

CLI = [sys.executable, "-c", "from llm2vec_search.cli import main; main()"]


def timed(args: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one CLI call, in a fresh process."""
    t = time.perf_counter()
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, **(env or {})})
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: l2v-search {' '.join(args)}: {proc.stderr.read().decode()[-500:]}")
    return wall, usage.ru_maxrss / 1024


def merged_entry(index_dir: str, index: str) -> Path | None:
    from llm2vec_search.models import merged_dir, resolve
    from llm2vec_search.store import IndexStore, index_home

    manifest = IndexStore(index_home(index_dir), index).manifest()
    return merged_dir(resolve(manifest.encoder["spec"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index-dir", required=True)
    ap.add_argument("--index", required=True)
    ap.add_argument("--query", default="statins and breast cancer")
    ap.add_argument("--mode", default="dense")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--int8-index", help="an index of the same corpus built with --dtype int8, timed alongside")
    ap.add_argument("--skip-merge", action="store_true", help="leave out the merge-each-call and cache-cold rows")
    a = ap.parse_args()
    base = ["query", a.query, "--index-dir", a.index_dir, "--index", a.index, "--json"]
    local = [*base, "--mode", a.mode, "--no-server"]
    entry = merged_entry(a.index_dir, a.index)
    rows: dict[str, list[tuple[float, float]]] = {}

    def measure(name: str, args: list[str], env=None, before=None) -> None:
        for _ in range(a.runs):
            if before:
                before()
            rows.setdefault(name, []).append(timed(args, env))
        wall, rss = (statistics.median(x) for x in zip(*rows[name]))
        print(f"{name:<16} wall {wall:6.2f} s   peak RSS {rss:7.0f} MB   ({a.runs} runs: "
              f"{', '.join(f'{w:.2f}' for w, _ in rows[name])} s)", flush=True)

    timed([*base, "--mode", "bm25", "--no-server"])  # warms the OS file cache
    if not a.skip_merge:
        measure("merge each call", local, {"L2V_SEARCH_MERGED_CACHE": "0"})
        measure("cache cold", local, before=lambda: entry and shutil.rmtree(entry, ignore_errors=True))
    measure("cache warm", local)
    if a.int8_index:
        int8 = ["query", a.query, "--index-dir", a.index_dir, "--index", a.int8_index, "--json", "--mode", a.mode,
                "--no-server"]
        timed(int8)  # builds the int8 model if it is not cached yet
        measure("int8 one-shot", int8)
    measure("bm25", [*base, "--mode", "bm25", "--no-server"])
    server = subprocess.Popen([*CLI, "serve", "--index-dir", a.index_dir, "--index", a.index, "--port", str(a.port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        from llm2vec_search.serve_record import healthy

        while not healthy(f"http://127.0.0.1:{a.port}"):
            if server.poll() is not None:
                sys.exit("the server did not start")
            time.sleep(0.2)
        timed([*base, "--mode", a.mode])  # the server's first request
        measure("via server", [*base, "--mode", a.mode])
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
