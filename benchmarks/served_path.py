"""Where a lone served dense query spends its time: the same query measured at each layer, in one
process, after warm-up (median of ``--repeat`` runs each).

    forward      the model forward alone on the tokenized query (instruction included)
    encode       Encoder.encode_queries: tokenize, collate, forward, pool, normalize
    search       SearchService.search (dense): validation, generation check, batcher hand-off,
                 encode, FAISS and lookups on the service's model thread
    http         POST /search through the ASGI app in process (no sockets): + Guard, FastAPI
                 validation and JSON

With ``--compile`` the same layers are timed again after ``Encoder.compile`` (what ``serve
--compile`` does: the forward compiled for the micro-batcher's batch sizes, queries padded to a
length bucket), printed side by side with the eager ones; the compile and warm-up time is printed too.

    .venv/bin/python benchmarks/served_path.py --index scifact --index-dir indexes
    .venv/bin/python benchmarks/served_path.py --index scifact --index-dir indexes --compile
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

import httpx
import torch

from llm2vec_search.server import SearchService, ServeConfig, create_app


def timed(fn, repeat: int) -> float:
    fn()
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return 1000 * statistics.median(runs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", required=True)
    p.add_argument("--index-dir")
    p.add_argument("--queries", type=Path, default=Path("/work/shared/data/scifact/queries.jsonl"))
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--compile", action="store_true", help="time the layers eager, then compiled, side by side")
    p.add_argument("--lengths", default=None,
                   help="compile only these length buckets for one row, e.g. 32 (one graph: a quick measurement; "
                        "default: every bucket and batch size, as serve --compile)")
    a = p.parse_args()
    query = json.loads(a.queries.read_text().splitlines()[0])["text"]
    svc = SearchService([a.index], a.index_dir, ServeConfig())
    idx = svc.index(None)
    enc = svc.encoders[idx.encoder_fingerprint]
    instruction = enc.config.query_instruction
    batch = next(enc.batches([query], instruction or None))
    app = create_app(svc)
    loop = asyncio.new_event_loop()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost")

    def forward():
        with torch.inference_mode():
            enc.forward(batch)

    def on_worker(fn):  # the forward and encode rows run where the service runs them: its model thread
        return lambda: svc.worker.submit(fn).result()

    def layers() -> dict[str, float]:
        return {
            "forward": timed(on_worker(forward), a.repeat),
            "encode": timed(on_worker(lambda: enc.encode_queries([query])), a.repeat),
            "search": timed(lambda: loop.run_until_complete(svc.search(None, [query], 10, None, "dense")), a.repeat),
            "http": timed(lambda: loop.run_until_complete(client.post("/search", json={"query": query,
                                                                                       "mode": "dense"})), a.repeat),
        }

    rows, compiled_rows = layers(), None
    print(f"query: {query!r}; {batch.input_ids.shape[1]} tokens with the instruction; torch threads "
          f"{torch.get_num_threads()}, {enc.dtype}")
    if a.compile:
        if a.lengths:
            compiled = svc.worker.submit(enc.compile, [int(n) for n in a.lengths.split(",")], max_rows=1).result()
        else:  # as serve --compile does
            compiled = svc.worker.submit(enc.compile, max_rows=svc.config.max_batch).result()
        padded = compiled and compiled.bucket(1, batch.input_ids.shape[1])
        if compiled is None:
            print("compile failed (the warning above says why): eager only")
        elif padded is None:
            print(f"compiled {compiled.summary}, but this query is longer than the largest length: eager only")
        else:
            print(f"compiled {compiled.summary}; this query is padded to {padded} tokens")
            compiled_rows = layers()
    last = last_c = 0.0
    for name, ms in rows.items():
        line = f"{name:<8} {ms:7.1f} ms  (+{ms - last:5.1f})"
        if compiled_rows:
            c = compiled_rows[name]
            line += f"   compiled {c:7.1f} ms  (+{c - last_c:5.1f})  eager/compiled {ms / c:4.2f}"
            last_c = c
        print(line)
        last = ms
    loop.run_until_complete(client.aclose())
    loop.run_until_complete(svc.close())
    loop.close()


if __name__ == "__main__":
    main()
