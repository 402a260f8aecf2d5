"""Load test of ``l2v-search serve``: QPS and latency with micro-batching on vs off, side by side.

Starts the server twice on loopback (``--no-micro-batching`` the second time) over the same
index, and each time sends a bounded number of ``POST /search`` requests (SciFact test claims,
cycled) from N concurrent clients after a short warm-up. Prints QPS, p50/p99 latency and errors
for both, and the QPS ratio. Traffic goes to 127.0.0.1 only; every loop is bounded.

    # an index of SciFact with the default encoder (or reuse one that `l2v-search eval` cached)
    .venv/bin/l2v-search index /work/shared/data/scifact --name scifact
    nice -n 10 .venv/bin/python benchmarks/serve_load.py --index scifact --clients 16 --requests 800
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

CLI = [sys.executable, "-c", "from llm2vec_search.cli import main; main()"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(index: str, index_dir: str | None, port: int, extra: list[str]) -> subprocess.Popen:
    cmd = [*CLI, "serve", "--index", index, "--port", str(port), *extra]
    if index_dir:
        cmd += ["--index-dir", index_dir]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            sys.exit(f"server failed: {proc.stderr.read().strip()[-2000:]}")
        time.sleep(0.5)
    proc.kill()
    sys.exit("server did not start within 300 s")


async def load(url: str, queries: list[str], clients: int, requests: int, k: int) -> dict:
    latencies: list[float] = []
    errors = 0
    counter = iter(range(requests))

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal errors
        for i in counter:  # shared: each request is sent once, by whichever client is free
            t0 = time.perf_counter()
            try:
                r = await http.post(f"{url}/search", json={"query": queries[i % len(queries)], "k": k})
                ok = r.status_code == 200 and len(r.json()["results"]) == k
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - t0)
            errors += not ok

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - t0
    latencies.sort()
    return {"requests": requests, "clients": clients, "wall_seconds": round(wall, 2),
            "qps": round(requests / wall, 1), "p50_ms": round(1000 * statistics.median(latencies), 1),
            "p99_ms": round(1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 1),
            "errors": errors}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", required=True, help="name of the index to serve")
    p.add_argument("--index-dir", help="index home (default ./indexes)")
    p.add_argument("--queries", type=Path, default=Path("/work/shared/data/scifact/queries.jsonl"))
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=800)
    p.add_argument("--warmup", type=int, default=32)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--max-batch", type=int, help="the server's --max-batch (default: its own)")
    p.add_argument("--batch-window-ms", type=float, help="the server's --batch-window-ms (default: its own)")
    p.add_argument("--json", type=Path, help="also write the results here")
    a = p.parse_args()
    queries = [json.loads(line)["text"] for line in a.queries.read_text().splitlines() if line.strip()]

    batching = [*(["--max-batch", str(a.max_batch)] if a.max_batch else []),
                *(["--batch-window-ms", str(a.batch_window_ms)] if a.batch_window_ms is not None else [])]
    rows = {}
    for name, extra in (("micro-batching", batching), ("one query per forward", ["--no-micro-batching"])):
        port = free_port()
        proc = start(a.index, a.index_dir, port, extra)
        try:
            url = f"http://127.0.0.1:{port}"
            asyncio.run(load(url, queries[::-1], a.clients, a.warmup, a.k))
            rows[name] = asyncio.run(load(url, queries, a.clients, a.requests, a.k))
            print(f"{name}: {rows[name]}", file=sys.stderr)
        finally:
            proc.terminate()
            proc.wait(timeout=60)

    print(f"\nindex {a.index}, {a.clients} concurrent clients, {a.requests} requests, k={a.k}; "
          f"{os.cpu_count()} CPUs")
    print(f"{'server':<24} {'QPS':>7} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for name, r in rows.items():
        print(f"{name:<24} {r['qps']:>7.1f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['errors']:>7}")
    on, off = rows["micro-batching"], rows["one query per forward"]
    print(f"micro-batching / one per forward: {on['qps'] / off['qps']:.2f}x QPS")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
