"""Build an index: corpus -> documents table -> Parquet shards -> FAISS (+ BM25) -> manifest.

The manifest is written last, so a folder without one is an unfinished build (it resumes) and
never loads. A rebuild with the same corpus, encoder and options reuses everything.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from .corpus import Fields, ReadStats, read_corpus
from .embed import DOCS_FILE, SHARD_DIR, ChunkConfig, embed_documents, iter_shards, read_documents, shard_vectors
from .errors import IndexStateError, UsageError
from .manifest import fingerprint, library_versions, read_json, write_json_atomic
from .models import DEFAULT_ENCODER

MANIFEST = "manifest.json"
PENDING_UPDATE = "update.json"  # beside an unfinished update: the manifest it started from
FAISS_FILE = "index.faiss"
BM25_DIR = "bm25"
FLAT_LIMIT = 200_000  # exact search below this many vectors
KIND = "llm2vec-search.index"


def index_home(index_dir: str | Path | None = None) -> Path:
    """``--index-dir``, else ``$L2V_SEARCH_INDEX_DIR``, else ``./indexes``."""
    return Path(index_dir or os.environ.get("L2V_SEARCH_INDEX_DIR") or "indexes")


def sample_dataset() -> Path:
    """The bundled BEIR folder: 400 SciFact abstracts and the 19 test claims judged on them."""
    from importlib import resources

    return Path(str(resources.files("llm2vec_search") / "samples" / "scifact"))


def sample_corpus() -> Path:
    """The bundled corpus that ``l2v-search index --sample`` indexes."""
    return sample_dataset() / "corpus.jsonl"


def default_factory(n: int, dim: int, memory_budget: int | None = None) -> str:
    """Exact search for small corpora; above that HNSW, or IVF with scalar/product quantization
    when the vectors would not fit the memory budget (bytes)."""
    if n < FLAT_LIMIT:
        return "Flat"
    nlist = int(4 * math.sqrt(n))
    if memory_budget is not None and n * dim * 4 > memory_budget:
        return f"IVF{nlist},SQ8" if n * dim > memory_budget else f"IVF{nlist},PQ{max(8, dim // 8)}"
    return "HNSW32,Flat"


def build_faiss(index_dir: Path, factory: str | None, memory_budget: int | None = None,
                train_sample: int = 100_000, seed: int = 0):
    """Stream the shards into a FAISS inner-product index; train approximate ones on a sample."""
    import faiss

    tables = list(iter_shards(index_dir))
    n = sum(t.num_rows for t in tables)
    if n == 0:
        raise IndexStateError(f"{index_dir}: no embeddings to index")
    dim = len(tables[0].column("vector")[0])
    factory = factory or default_factory(n, dim, memory_budget)
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise UsageError(f"invalid FAISS factory string {factory!r}: {str(e).splitlines()[0][:200]}") from None
    if not index.is_trained:
        rng = np.random.default_rng(seed)
        xs = np.concatenate([shard_vectors(t) for t in tables])
        xs = xs[rng.choice(len(xs), min(train_sample, len(xs)), replace=False)]
        index.train(xs)
    for t in tables:
        index.add(shard_vectors(t))
    return index, factory


def build_index(
    corpus: str | Path,
    name: str | None = None,
    index_dir: str | Path | None = None,
    model: str = DEFAULT_ENCODER,
    index_type: str | None = None,
    *,
    fields: Fields = Fields(),
    skip_invalid: bool = False,
    chunk: ChunkConfig = ChunkConfig(),
    memory_budget: int | None = None,
    bm25: bool = True,
    dense: bool = True,
    part: tuple[int, int] = (0, 1),
    encoder=None,
    encoder_overrides: dict[str, Any] | None = None,
    show_progress: bool = True,
) -> Path:
    """Index ``corpus`` under ``<index_dir>/<name>``; returns the index folder.

    With ``part=(I, N)``, only embed shards ``i % N == I`` and stop (run N such processes,
    then one without ``part`` to finish the index).
    """
    corpus = Path(corpus)
    name = name or (corpus.name if corpus.is_dir() else corpus.stem)
    out = index_home(index_dir) / name
    t0 = time.perf_counter()
    stats = ReadStats()
    out.mkdir(parents=True, exist_ok=True)
    n_docs, corpus_fp = _documents(corpus, out, fields, skip_invalid, stats)
    if not dense:
        return _build_sparse_only(out, name, corpus, corpus_fp, n_docs, stats, t0)
    if encoder is None:
        from .encoder import load_encoder

        encoder = load_encoder(model, **(encoder_overrides or {}))
    run_fp = fingerprint([corpus_fp, encoder.fingerprint, dataclasses.asdict(chunk)])
    old = _read_manifest(out)
    if old and old.get("fingerprint") == run_fp and (index_type or old["faiss"]["factory"]) == old["faiss"]["factory"]:
        return out  # nothing changed: reuse
    (out / MANIFEST).unlink(missing_ok=True)  # from here on the folder is an unfinished build
    timings = {"read_seconds": round(time.perf_counter() - t0, 2)}
    timings.update(embed_documents(encoder, out, chunk, run_fp, part=part, show_progress=show_progress))
    if part != (0, 1):
        return out
    manifest = {
        "kind": KIND,
        "name": name,
        "corpus": {"path": str(corpus.resolve()), "fingerprint": corpus_fp, "documents": n_docs,
                   "empty_skipped": stats.empty, "invalid_skipped": stats.invalid},
        "encoder": {"spec": _spec(encoder, model), "fingerprint": encoder.fingerprint,
                    **encoder.identity()},
        "chunking": dataclasses.asdict(chunk),
        "fingerprint": run_fp,
    }
    return finish_index(out, manifest, index_type, memory_budget, bm25, timings, t0)


def finish_index(out: Path, manifest: dict[str, Any], index_type: str | None, memory_budget: int | None,
                 bm25: bool, timings: dict[str, Any], t0: float) -> Path:
    """After the shards: drop shards past the corpus's end, build FAISS and BM25, write the manifest last."""
    import faiss

    n_shards = max(1, -(-manifest["corpus"]["documents"] // manifest["chunking"]["docs_per_shard"]))
    for path in (out / SHARD_DIR).glob("shard-*.parquet"):  # left by an earlier, larger corpus
        if int(path.stem.split("-")[1]) >= n_shards:
            path.unlink()
    t1 = time.perf_counter()
    index, factory = build_faiss(out, index_type, memory_budget)
    faiss.write_index(index, str(out / (FAISS_FILE + ".tmp")))
    os.replace(out / (FAISS_FILE + ".tmp"), out / FAISS_FILE)
    timings["faiss_seconds"] = round(time.perf_counter() - t1, 2)
    if bm25:
        t2 = time.perf_counter()
        _build_bm25(out)
        timings["bm25_seconds"] = round(time.perf_counter() - t2, 2)
    manifest = {
        **manifest,
        "faiss": {"factory": factory, "vectors": int(index.ntotal), "metric": "inner_product"},
        "bm25": bm25,
        "timings": {**timings, "total_seconds": round(time.perf_counter() - t0, 2)},
        "library_versions": library_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json_atomic(out / MANIFEST, manifest)
    return out


def _spec(encoder, model: str) -> str:
    """The spec that reloads ``encoder``: its source's, made absolute when it is a local path."""
    if encoder.source is None:
        return str(model)
    spec = encoder.source.spec
    return str(Path(spec).resolve()) if Path(spec).exists() else spec


def _build_sparse_only(out: Path, name: str, corpus: Path, corpus_fp: str, n_docs: int, stats: ReadStats,
                       t0: float) -> Path:
    """A BM25-only index (no encoder, no FAISS)."""
    old = _read_manifest(out)
    if old and old.get("fingerprint") == corpus_fp and old.get("faiss") is None:
        return out
    (out / MANIFEST).unlink(missing_ok=True)
    _build_bm25(out)
    write_json_atomic(out / MANIFEST, {
        "kind": KIND, "name": name,
        "corpus": {"path": str(corpus.resolve()), "fingerprint": corpus_fp, "documents": n_docs,
                   "empty_skipped": stats.empty, "invalid_skipped": stats.invalid},
        "encoder": None, "faiss": None, "bm25": True, "fingerprint": corpus_fp,
        "timings": {"total_seconds": round(time.perf_counter() - t0, 2)},
        "library_versions": library_versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    return out


def _documents(corpus: Path, out: Path, fields: Fields, skip_invalid: bool, stats: ReadStats) -> tuple[int, str]:
    """Write the documents table; an existing manifest goes first if the corpus changed, so a crash
    never leaves a manifest beside a documents table it does not describe."""
    from .embed import write_documents

    staged = out / ("next-" + DOCS_FILE)
    n, corpus_fp = write_documents(read_corpus(corpus, fields, skip_invalid=skip_invalid, stats=stats), staged)
    old = _read_manifest(out)
    if old is None or old["corpus"]["fingerprint"] != corpus_fp:
        (out / MANIFEST).unlink(missing_ok=True)
    os.replace(staged, out / DOCS_FILE)
    return n, corpus_fp


def _build_bm25(out: Path) -> None:
    from .bm25 import BM25Index
    from .corpus import Record

    docs = read_documents(out / DOCS_FILE, ["id", "title", "text"]).to_pylist()
    tmp = out / (BM25_DIR + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    BM25Index.build([d["id"] for d in docs], [Record(d["id"], d["title"], d["text"]).content for d in docs]).save(tmp)
    shutil.rmtree(out / BM25_DIR, ignore_errors=True)
    os.replace(tmp, out / BM25_DIR)


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = read_json(path)
    except ValueError:
        return None
    return manifest if manifest.get("kind") == KIND else None


def list_indexes(index_dir: str | Path | None = None) -> list[dict[str, Any]]:
    home = index_home(index_dir)
    found = []
    for d in sorted(home.iterdir()) if home.is_dir() else []:
        if (m := _read_manifest(d)) is not None:
            found.append(m)
    return found
