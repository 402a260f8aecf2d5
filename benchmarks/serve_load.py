"""Load and abuse test of ``l2v-search serve``: well-formed traffic with malformed requests mixed
in, micro-batching on vs off side by side, then an overload run that must shed load with 503s.

For each mode (``dense`` and the index's default) the server is started twice on loopback (micro-
batching on, then ``--no-micro-batching``) over the same index. Each time: one client sending
sequential queries (the latency of a lone request), then N clients for ``--duration`` seconds, of
whose requests a share ``--malformed`` is malformed (a lone surrogate, an oversize body, an
oversize chunked body, k too large, an unknown index). Reported: QPS and p50/p99 of the
well-formed requests, their errors (must be 0), how the malformed ones were answered (all 4xx),
and the server's RSS in the first and last 20 s. Then the overload run: ``--overload-clients``
clients against a server with ``--overload-max-queue``; the accepted requests' p99 and the 503s.
Traffic goes to 127.0.0.1 only; every loop is bounded in time.

    # an index of SciFact with the default encoder (or a subset of it)
    .venv/bin/l2v-search index /work/shared/data/scifact --name scifact
    nice -n 10 .venv/bin/python benchmarks/serve_load.py --index scifact --clients 16 --duration 60
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

CLI = [sys.executable, "-c", "from llm2vec_search.cli import main; main()"]
MALFORMED = ("surrogate", "oversize", "chunked_oversize", "k_too_large", "unknown_index")
OVERSIZE = 3 << 19  # 1.5 MiB: over the server's 1 MiB body limit


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(index: str, index_dir: str | None, port: int, extra: list[str]) -> subprocess.Popen:
    cmd = [*CLI, "serve", "--index", index, "--port", str(port), *extra]
    if index_dir:
        cmd += ["--index-dir", index_dir]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
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
    sys.exit("server did not start within 600 s")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


async def send_malformed(http: httpx.AsyncClient, url: str, kind: str, query: str, k: int) -> int:
    headers = {"content-type": "application/json"}
    if kind == "surrogate":
        r = await http.post(f"{url}/search", content=json.dumps({"query": query[:40] + " \ud800"}), headers=headers)
    elif kind == "oversize":
        r = await http.post(f"{url}/search", content=b" " * OVERSIZE, headers=headers)
    elif kind == "chunked_oversize":
        async def chunks():
            for _ in range(OVERSIZE // 65536):
                yield b" " * 65536

        r = await http.post(f"{url}/search", content=chunks(), headers=headers)
    elif kind == "k_too_large":
        r = await http.post(f"{url}/search", json={"query": query, "k": 100_000})
    else:
        r = await http.post(f"{url}/search", json={"query": query, "k": k, "index": "no-such-index"})
    return r.status_code


async def load(url: str, queries: list[str], clients: int, duration: float, k: int, mode: str | None,
               malformed: float, pid: int) -> dict:
    """``clients`` loops for ``duration`` seconds; a share ``malformed`` of requests is malformed."""
    latencies, bad_answers, good_errors, shed = [], collections.Counter(), collections.Counter(), 0
    rss: list[tuple[float, float]] = []
    rng = random.Random(0)
    t0 = time.perf_counter()
    stop = t0 + duration
    body = {"k": k} | ({"mode": mode} if mode else {})

    async def client(http: httpx.AsyncClient, n: int) -> None:
        nonlocal shed
        while time.perf_counter() < stop:
            n += clients
            query = queries[n % len(queries)]
            if rng.random() < malformed:
                kind = MALFORMED[n % len(MALFORMED)]
                try:
                    status = await send_malformed(http, url, kind, query, k)
                except httpx.HTTPError as e:
                    status = type(e).__name__
                bad_answers[f"{kind}:{status}"] += 1
                continue
            t = time.perf_counter()
            try:
                r = await http.post(f"{url}/search", json={"query": query, **body})
                status = r.status_code
                ok = status == 200 and len(r.json()["results"]) > 0
            except httpx.HTTPError as e:
                status, ok = type(e).__name__, False
            if status == 503:
                shed += 1
            elif ok:
                latencies.append(time.perf_counter() - t)
            else:
                good_errors[str(status)] += 1

    async def watch() -> None:
        while time.perf_counter() < stop:
            rss.append((time.perf_counter() - t0, rss_mb(pid)))
            await asyncio.sleep(1)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        await asyncio.gather(watch(), *(client(http, n) for n in range(clients)))
        wall = time.perf_counter() - t0
    first = [m for t, m in rss if t <= 20]
    last = [m for t, m in rss if t >= wall - 20]
    non_4xx = {key: v for key, v in bad_answers.items() if not key.split(":")[1].startswith("4")}
    return {"clients": clients, "seconds": round(wall, 1), "answered": len(latencies),
            "qps": round(len(latencies) / wall, 1),
            "p50_ms": round(1000 * statistics.median(latencies), 1) if latencies else None,
            "p99_ms": round(1000 * percentile(latencies, 0.99), 1) if latencies else None,
            "errors": sum(good_errors.values()), "error_kinds": dict(good_errors), "shed_503": shed,
            "malformed": sum(bad_answers.values()), "malformed_not_4xx": sum(non_4xx.values()),
            "malformed_answers": dict(sorted(bad_answers.items())),
            "rss_first_20s_mb": round(statistics.mean(first), 1) if first else None,
            "rss_last_20s_mb": round(statistics.mean(last), 1) if last else None}


async def one_client(url: str, queries: list[str], n: int, k: int, mode: str | None) -> dict:
    """``n`` sequential requests from one client: what a lone request costs."""
    latencies = []
    async with httpx.AsyncClient(timeout=120) as http:
        for q in queries[:n]:
            t = time.perf_counter()
            r = await http.post(f"{url}/search", json={"query": q, "k": k} | ({"mode": mode} if mode else {}))
            r.raise_for_status()
            latencies.append(time.perf_counter() - t)
    return {"requests": n, "p50_ms": round(1000 * statistics.median(latencies), 1),
            "p99_ms": round(1000 * percentile(latencies, 0.99), 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", required=True, help="name of the index to serve")
    p.add_argument("--index-dir", help="index home (default ./indexes)")
    p.add_argument("--queries", type=Path, default=Path("/work/shared/data/scifact/queries.jsonl"))
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--duration", type=float, default=60, help="seconds of load per server")
    p.add_argument("--malformed", type=float, default=0.1, help="share of malformed requests")
    p.add_argument("--modes", default="dense,default", help="comma-separated: dense, bm25, hybrid, default")
    p.add_argument("--single", type=int, default=40, help="sequential one-client requests per server (0: none)")
    p.add_argument("--warmup", type=int, default=32)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--dtypes", default="index",
                   help="comma-separated server --dtype values, each served in turn (index: the index's own)")
    p.add_argument("--batching", default="on,off", help="micro-batching servers to run: on, off or both")
    p.add_argument("--max-batch", type=int, help="the server's --max-batch (default: its own)")
    p.add_argument("--batch-window-ms", type=float, help="the server's --batch-window-ms (default: its own)")
    p.add_argument("--overload-clients", type=int, default=64, help="0: no overload run")
    p.add_argument("--overload-max-queue", type=int, default=16)
    p.add_argument("--overload-duration", type=float, default=30)
    p.add_argument("--json", type=Path, help="also write the results here")
    a = p.parse_args()
    queries = [json.loads(line)["text"] for line in a.queries.read_text().splitlines() if line.strip()]

    batching = [*(["--max-batch", str(a.max_batch)] if a.max_batch else []),
                *(["--batch-window-ms", str(a.batch_window_ms)] if a.batch_window_ms is not None else [])]
    servers = [(name, extra) for key, name, extra in (("on", "micro-batching", batching),
                                                      ("off", "one per forward", ["--no-micro-batching"]))
               if key in a.batching.split(",")]
    dtypes = a.dtypes.split(",")
    rows: dict[str, dict] = {}
    for mode, dtype, (name, extra) in ((m, d, s) for m in a.modes.split(",") for d in dtypes for s in servers):
        if dtype != "index":
            name, extra = f"{dtype}, {name}", [*extra, "--dtype", dtype]
        port = free_port()
        proc = start(a.index, a.index_dir, port, ["--max-queue", "1024", *extra])
        try:
            url, m = f"http://127.0.0.1:{port}", None if mode == "default" else mode
            asyncio.run(one_client(url, queries[::-1], a.warmup, a.k, m))
            row = {"single": asyncio.run(one_client(url, queries, a.single, a.k, m)) if a.single else None}
            row |= asyncio.run(load(url, queries, a.clients, a.duration, a.k, m, a.malformed, proc.pid))
            rows[f"{mode} / {name}"] = row
            print(f"{mode} / {name}: {row}", file=sys.stderr)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    if a.overload_clients:
        port = free_port()
        proc = start(a.index, a.index_dir, port, ["--max-queue", str(a.overload_max_queue), *batching])
        try:
            url = f"http://127.0.0.1:{port}"
            asyncio.run(one_client(url, queries[::-1], a.warmup, a.k, "dense"))
            row = asyncio.run(load(url, queries, a.overload_clients, a.overload_duration, a.k, "dense", 0, proc.pid))
            rows[f"overload dense / max-queue {a.overload_max_queue}"] = row
            print(f"overload: {row}", file=sys.stderr)
        finally:
            proc.terminate()
            proc.wait(timeout=60)

    print(f"\nindex {a.index}, {a.clients} clients x {a.duration:g} s, {a.malformed:.0%} malformed, k={a.k}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"{'server':<40} {'1-client p50':>12} {'QPS':>6} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} "
          f"{'503':>5} {'bad':>5} {'bad!4xx':>7} {'RSS MB first/last':>18}")
    for name, r in rows.items():
        single = r.get("single") or {}
        print(f"{name:<40} {single.get('p50_ms', '-'):>12} {r['qps']:>6} {r['p50_ms']!s:>7} {r['p99_ms']!s:>7} "
              f"{r['errors']:>6} {r['shed_503']:>5} {r['malformed']:>5} {r['malformed_not_4xx']:>7} "
              f"{r['rss_first_20s_mb']!s:>8}/{r['rss_last_20s_mb']!s:<8}")
    for mode in a.modes.split(","):
        on, off = rows.get(f"{mode} / micro-batching"), rows.get(f"{mode} / one per forward")  # index dtype
        if on and off and off["qps"]:
            print(f"{mode}: micro-batching / one per forward: {on['qps'] / off['qps']:.2f}x QPS")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
