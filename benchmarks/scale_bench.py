"""Scale benchmarks, side by side.

1. ``engines``: the same corpus indexed by the local engine (one process), ``--workers 2`` and Ray
   with 2 CPU actors: wall time and whether the shards are identical.
2. ``ivf``: N clustered 576-d vectors (SmolLM2-135M's width): exact Flat vs IVF in memory vs IVF on
   disk (ondisk.py): build time, peak RSS of the build, recall@10 against Flat, QPS.

Each variant runs in its own subprocess so its peak RSS is its own.

    nice -n 10 .venv/bin/python benchmarks/scale_bench.py ivf --n 1000000
    nice -n 10 .venv/bin/python benchmarks/scale_bench.py engines --model PATH --docs 2000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

D = 576


def clustered(n: int, seed: int, centers: int = 4096, d: int = D) -> np.ndarray:
    """Unit vectors around random centers (embeddings are clustered; uniform vectors are not)."""
    rng = np.random.default_rng(1234)
    c = rng.normal(size=(centers, d)).astype(np.float32)
    rng = np.random.default_rng(seed)
    out = np.empty((n, d), np.float32)
    for i in range(0, n, 10_000):  # small steps: the float64 noise must not dominate peak RSS
        m = min(10_000, n - i)
        x = c[rng.integers(0, centers, m)] + 0.35 * rng.standard_normal(size=(m, d), dtype=np.float32)
        out[i:i + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def blocks(n: int, size: int = 100_000):
    for i, start in enumerate(range(0, n, size)):
        yield clustered(min(size, n - start), seed=10 + i)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_variant(kind: str, n: int, nq: int, nlist: int, nprobe: int, work: Path) -> dict:
    import faiss

    from llm2vec_search.ondisk import OnDiskConfig, build_ondisk, sample_rows, train_ivf

    t0 = time.perf_counter()
    if kind == "flat":
        index = faiss.IndexFlatIP(D)
        for xb in blocks(n):
            index.add(xb)
    else:
        cfg = OnDiskConfig(nlist=nlist, train_sample=min(n, 40 * nlist))
        trained = train_ivf(sample_rows(blocks(n), n, cfg.train_sample), cfg)
        if kind == "ivf":
            index = trained
            for xb in blocks(n):
                index.add(xb)
        else:
            build_ondisk(blocks(n), work / "ondisk", trained)
            del trained
    build_s = time.perf_counter() - t0
    if kind != "ondisk":
        faiss.write_index(index, str(work / f"{kind}.index"))
    return {"kind": kind, "build_s": round(build_s, 1), "build_rss_mb": round(peak_rss_mb())}


def rss_anon_mb() -> float:
    """Private (anonymous) resident memory now: mmapped index pages are page cache, not counted."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon")) / 1024


def run_query(kind: str, nq: int, nprobe: int, work: Path) -> dict:
    """In a fresh process: open the saved index (on-disk: memory-mapped) and search."""
    import faiss

    from llm2vec_search.ondisk import open_ondisk

    xq = clustered(nq, seed=1)
    base = rss_anon_mb()
    index = open_ondisk(work / "ondisk") if kind == "ondisk" else faiss.read_index(str(work / f"{kind}.index"))
    if kind != "flat":
        faiss.extract_index_ivf(index).nprobe = nprobe
    t1 = time.perf_counter()
    _, I = index.search(xq, 10)
    qps = nq / (time.perf_counter() - t1)
    np.save(work / f"{kind}.npy", I)
    return {"query_rss_mb": round(rss_anon_mb() - base), "qps": round(qps)}


def bench_ivf(args) -> None:
    work = Path(tempfile.mkdtemp(prefix="scale-bench-"))
    rows = []
    try:
        for kind in ("flat", "ivf", "ondisk"):
            common = ["--n", str(args.n), "--nq", str(args.nq), "--nlist", str(args.nlist), "--nprobe",
                      str(args.nprobe), "--work", str(work)]
            row = {}
            for step in ("_variant", "_query"):
                out = subprocess.run([sys.executable, __file__, step, kind, *common], check=True,
                                     capture_output=True, text=True)
                row.update(json.loads(out.stdout.strip().splitlines()[-1]))
            rows.append(row)
        truth = np.load(work / "flat.npy")
        for r in rows:
            found = np.load(work / f"{r['kind']}.npy")
            r["recall@10"] = round(float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, found)])), 4)
        print(f"{args.n:,} x {D} clustered vectors, {args.nq} queries, IVF{args.nlist} nprobe={args.nprobe}, "
              f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
        print(f"{'index':8} {'build s':>8} {'build RSS MB':>13} {'query +anon MB':>14} {'recall@10':>10} {'QPS':>8}")
        for r in rows:
            print(f"{r['kind']:8} {r['build_s']:>8} {r['build_rss_mb']:>13} {r['query_rss_mb']:>14} "
                  f"{r['recall@10']:>10} {r['qps']:>8}")
        flat, ivf, ondisk = rows
        print(f"on-disk vs flat: query memory x{ondisk['query_rss_mb'] / max(flat['query_rss_mb'], 1):.2f}, "
              f"QPS x{ondisk['qps'] / flat['qps']:.1f}; on-disk vs IVF in memory: "
              f"query memory x{ondisk['query_rss_mb'] / max(ivf['query_rss_mb'], 1):.2f}, "
              f"QPS x{ondisk['qps'] / ivf['qps']:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench_engines(args) -> None:
    """Local engine vs --workers 2 vs Ray (2 CPU actors) on the same synthetic corpus."""
    import pyarrow.parquet as pq

    from llm2vec_search.distributed import ScaleConfig, build_index_scaled
    from llm2vec_search.embed import ChunkConfig
    from llm2vec_search.index import build_index
    from llm2vec_search.store import shard_paths

    work = Path(tempfile.mkdtemp(prefix="scale-engines-"))
    rng = np.random.default_rng(0)
    vocab = "the a of cell gene protein virus vaccine immune disease patient drug risk blood heart brain".split()
    corpus = work / "docs.jsonl"
    corpus.write_text("\n".join(json.dumps({"_id": f"d{i}", "text": " ".join(rng.choice(vocab, 60))})
                                for i in range(args.docs)))
    chunk = ChunkConfig(docs_per_shard=args.docs_per_shard)
    overrides = {"dtype": "fp32", "max_length": args.max_length}
    timings, folders = {}, {}
    try:
        t0 = time.perf_counter()
        folders["local"] = build_index(corpus, "local", work, args.model, chunk=chunk,
                                       encoder_overrides={**overrides, "device": "cpu"}, show_progress=False)
        timings["local (1 process)"] = time.perf_counter() - t0
        for label, scale in (("--workers 2", ScaleConfig(workers=2, threads_per_worker=1)),
                             ("ray, 2 CPU actors", ScaleConfig(engine="ray", workers=2))):
            t0 = time.perf_counter()
            name = label.split()[0].strip("-,")
            folders[name] = build_index_scaled(corpus, name, work, args.model, chunk=chunk,
                                               encoder_overrides=overrides, scale=scale, show_progress=False)
            timings[label] = time.perf_counter() - t0
        ref = [pq.read_table(p) for p in shard_paths(folders["local"])]
        for label, name in (("--workers 2", "workers"), ("ray, 2 CPU actors", "ray")):
            other = [pq.read_table(p) for p in shard_paths(folders[name])]
            same = len(ref) == len(other) and all(
                a.column("id").equals(b.column("id")) and np.allclose(
                    np.array(a.column("vector").to_pylist()), np.array(b.column("vector").to_pylist()), atol=1e-5)
                for a, b in zip(ref, other))
            timings[label + (" (identical)" if same else " (DIFFERENT)")] = timings.pop(label)
        base = timings["local (1 process)"]
        print(f"{args.docs} docs, {args.docs_per_shard} per shard, model {args.model}")
        for label, s in timings.items():
            print(f"{label:32} {s:8.1f} s  x{base / s:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["ivf", "engines", "_variant", "_query"])
    p.add_argument("kind", nargs="?")
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--nq", type=int, default=1000)
    p.add_argument("--nlist", type=int, default=4096)
    p.add_argument("--nprobe", type=int, default=32)
    p.add_argument("--work", type=Path)
    p.add_argument("--model", default="llm2vec-smollm2-135m")
    p.add_argument("--docs", type=int, default=2000)
    p.add_argument("--docs-per-shard", type=int, default=250)
    p.add_argument("--max-length", type=int, default=128)
    args = p.parse_args()
    if args.what == "_variant":
        print(json.dumps(run_variant(args.kind, args.n, args.nq, args.nlist, args.nprobe, args.work)))
    elif args.what == "_query":
        print(json.dumps(run_query(args.kind, args.nq, args.nprobe, args.work)))
    elif args.what == "ivf":
        bench_ivf(args)
    else:
        bench_engines(args)


if __name__ == "__main__":
    main()
