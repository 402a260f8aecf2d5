"""Opening a large index: wall time and resident memory of ``SearchIndex.open`` on a synthetic
index of N documents with random vectors (no model: a stand-in encoder returns random unit
vectors, one window per document), built once with the package's own ``build_index``.

    build   writes the corpus (N documents of 12-28 random words) and indexes it (Flat, no BM25)
    open    in a fresh process: time to open, RSS before and after, one dense query, FAISS file size

The same script measures any version of the package that has ``build_index(..., encoder=...)``
and ``SearchIndex.open``: put the version to measure first on PYTHONPATH.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/open_bench.py build --n 1000000 --dim 256 \
        --work /tmp/open-bench
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/open_bench.py open --work /tmp/open-bench
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

WORDS = ("cell gene protein virus vaccine immune disease patient drug risk blood heart brain water food energy "
         "climate result effect increase decrease level test data model method analysis evidence claim river "
         "mountain city school book paper study treatment cancer question answer science research").split()


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


@dataclasses.dataclass
class _Stats:
    tokens: int = 0


@dataclasses.dataclass(frozen=True)
class _Config:
    max_length: int = 512
    document_instruction: str = ""
    query_instruction: str = ""


class RandomEncoder:
    """Just enough of :class:`~llm2vec_search.encoder.Encoder` to index: every text is one token
    (so one window) and gets a random unit vector."""

    def __init__(self, dim: int):
        self.dim, self.config, self.stats, self.source = dim, _Config(), _Stats(), None
        self.device = "cpu"
        self.rng = np.random.default_rng(0)
        self.fingerprint = f"random-{dim}"

    def identity(self) -> dict:
        return {"model": {"spec": "random"}, "pooling": "none", "causal": False, "max_length": 512,
                "normalize": True, "query_instruction": "", "document_instruction": "", "dim": self.dim,
                "dtype": "float32"}

    def text_budget(self, instruction=None) -> int:
        return self.config.max_length

    def tokenizer(self, texts, **kw):
        return {"offset_mapping": [[(0, len(t))] for t in texts]}

    def encode(self, texts, instruction=None, progress=None, **kw) -> np.ndarray:
        x = self.rng.standard_normal((len(texts), self.dim), dtype=np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def encode_queries(self, queries, instruction=None, **kw) -> np.ndarray:
        return self.encode(queries)


def build(a) -> None:
    from llm2vec_search.embed import ChunkConfig
    from llm2vec_search.index import build_index

    a.work.mkdir(parents=True, exist_ok=True)
    corpus = a.work / "synthetic.jsonl"
    if not corpus.is_file():
        rng = np.random.default_rng(0)
        words = np.array(WORDS)
        with open(corpus.with_suffix(".tmp"), "w") as f:
            for i in range(a.n):
                text = " ".join(words[rng.integers(0, len(words), rng.integers(12, 29))])
                f.write(json.dumps({"_id": f"doc-{i}", "title": f"title {i}", "text": text}) + "\n")
        os.replace(corpus.with_suffix(".tmp"), corpus)
    t0 = time.perf_counter()
    build_index(corpus, "synthetic", a.work / "indexes", encoder=RandomEncoder(a.dim), bm25=False,
                chunk=ChunkConfig(), index_type="Flat", show_progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"built": a.n, "dim": a.dim, "seconds": round(time.perf_counter() - t0, 1),
                      "peak_rss_mb": round(peak)}))


def open_once(a) -> None:
    """One measurement, in this (fresh) process."""
    import faiss  # noqa: F401  (imported before measuring: the libraries are not the index)

    from llm2vec_search.search import SearchIndex

    before = rss_mb()
    t0 = time.perf_counter()
    idx = SearchIndex.open("synthetic", a.work / "indexes")
    seconds = time.perf_counter() - t0
    after = rss_mb()
    xq = RandomEncoder(a.dim).encode(["q"] * 4)
    t1 = time.perf_counter()
    hits = idx.search_embedded(xq, ["q"] * 4, 10, mode="dense")
    query_ms = (time.perf_counter() - t1) * 1000
    faiss_file = next((a.work / "indexes" / "synthetic").rglob("index.faiss"))
    faiss_mb = faiss_file.stat().st_size / 2**20
    print(json.dumps({"documents": idx.size, "open_seconds": round(seconds, 2), "rss_before_mb": round(before),
                      "rss_after_mb": round(after), "faiss_file_mb": round(faiss_mb),
                      "rss_over_faiss": round(after / faiss_mb, 2), "first_query_ms": round(query_ms, 1),
                      "top_hit": hits[0][0].id}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["build", "open", "_open"])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--work", type=Path, default=Path("/tmp/open-bench"))
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    if a.what == "build":
        build(a)
    elif a.what == "_open":
        open_once(a)
    else:  # each measurement in a fresh process (RSS from zero, nothing cached in Python)
        for _ in range(a.repeat):
            out = subprocess.run([sys.executable, __file__, "_open", "--work", str(a.work), "--dim", str(a.dim)],
                                 capture_output=True, text=True, env=os.environ)
            if out.returncode != 0:
                sys.exit(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "open failed")
            print(out.stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
