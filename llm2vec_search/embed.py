"""Corpus -> documents table -> token windows -> embeddings in Parquet shards.

Layout of ``indexes/<name>/``::

    documents.parquet          id, title, text, hash (one row per document, corpus order)
    shards/shard-00000.parquet id, chunk, start, end, vector (fixed-size list<float32>)
    manifest.json              what made it (see index.py)

Shard *i* holds the chunks of documents ``[i*S, (i+1)*S)``; each shard is written to a
temporary file and renamed, and records the run's fingerprint in its metadata, so a rerun
keeps finished shards and redoes only the missing ones. ``part=(I, N)`` makes a process do
only the shards ``i % N == I`` (several processes or machines splitting one corpus).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .corpus import Record
from .errors import UsageError

DOCS_FILE = "documents.parquet"
SHARD_DIR = "shards"
DOC_SCHEMA = pa.schema([("id", pa.string()), ("title", pa.string()), ("text", pa.string()), ("hash", pa.string())])


@dataclasses.dataclass(frozen=True)
class ChunkConfig:
    max_tokens: int | None = None  # window size in text tokens; None: all that fits beside the instruction
    overlap: int = 64  # tokens shared by consecutive windows
    docs_per_shard: int = 2048


def corpus_fingerprint(ids: Iterable[str], hashes: Iterable[str]) -> str:
    """The fingerprint of a documents table: its ids and content hashes, in order."""
    import hashlib

    digest = hashlib.sha256()
    for i, h in zip(ids, hashes):
        digest.update(f"{i}\0{h}\n".encode())
    return digest.hexdigest()[:16]


def write_documents(records: Iterable[Record], out: Path) -> tuple[int, str]:
    """Write the documents table atomically; refuse duplicate ids. Returns (count, corpus fingerprint)."""
    tmp = out.with_suffix(".parquet.tmp")
    seen: set[str] = set()
    duplicates: list[str] = []
    ids: list[str] = []
    hashes: list[str] = []
    n = 0
    writer = pq.ParquetWriter(tmp, DOC_SCHEMA)
    try:
        batch: list[Record] = []

        def flush():
            writer.write_table(pa.Table.from_pylist(
                [{"id": r.id, "title": r.title, "text": r.text, "hash": r.hash} for r in batch], schema=DOC_SCHEMA))
            batch.clear()

        for rec in records:
            if rec.id in seen:
                duplicates.append(rec.id)
                continue
            seen.add(rec.id)
            ids.append(rec.id)
            hashes.append(rec.hash)
            batch.append(rec)
            n += 1
            if len(batch) >= 4096:
                flush()
        if batch:
            flush()
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    writer.close()
    if duplicates:
        tmp.unlink(missing_ok=True)
        shown = ", ".join(repr(d) for d in duplicates[:5])
        raise UsageError(f"duplicate document ids ({len(duplicates)}), first: {shown}")
    if n == 0:
        tmp.unlink(missing_ok=True)
        raise UsageError("the corpus holds no documents with text")
    os.replace(tmp, out)
    return n, corpus_fingerprint(ids, hashes)


def read_documents(path: Path, columns: list[str] | None = None) -> pa.Table:
    return pq.read_table(path, columns=columns)


def chunk_spans(offsets: list[tuple[int, int]], window: int, overlap: int) -> list[tuple[int, int]]:
    """Character spans of overlapping token windows, from a fast tokenizer's offset mapping."""
    if len(offsets) <= window:
        return [(0, offsets[-1][1] if offsets else 0)]
    step = max(1, window - overlap)
    spans = []
    for start in range(0, len(offsets), step):
        end = min(start + window, len(offsets))
        spans.append((offsets[start][0], offsets[end - 1][1]))
        if end == len(offsets):
            break
    return spans


def chunk_documents(encoder, texts: list[str], cfg: ChunkConfig) -> list[list[tuple[int, int]]]:
    """For each text, the (start, end) character spans to embed; nothing is cut off."""
    budget = encoder.text_budget(encoder.config.document_instruction or None)
    # A margin of 2 tokens: re-tokenizing a cut span may merge differently at its edges.
    window = min(cfg.max_tokens or budget, budget) - 2
    if window < 4:
        raise UsageError(f"chunk window of {window} tokens is too small (max_length {encoder.config.max_length})")
    overlap = min(cfg.overlap, window // 4)  # short windows (small max_length) keep most of their stride
    enc = encoder.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    return [chunk_spans(offsets, window, overlap) for offsets in enc["offset_mapping"]]


def shard_path(index_dir: Path, shard: int) -> Path:
    return index_dir / SHARD_DIR / f"shard-{shard:05d}.parquet"


def shard_schema(dim: int) -> pa.Schema:
    return pa.schema([("id", pa.string()), ("chunk", pa.int32()), ("start", pa.int32()), ("end", pa.int32()),
                      ("vector", pa.list_(pa.float32(), dim))])


def shard_is_done(path: Path, fingerprint: str) -> bool:
    if not path.is_file():
        return False
    try:
        meta = pq.read_schema(path).metadata or {}
    except Exception:  # a torn or foreign file: redo it
        return False
    return meta.get(b"l2v_fingerprint", b"").decode() == fingerprint


def embed_chunks(encoder, docs: pa.Table, cfg: ChunkConfig, progress=None) -> pa.Table:
    """The chunk rows (id, chunk, start, end, vector) of documents (id, title, text), in order."""
    ids = docs.column("id").to_pylist()
    titles = docs.column("title").to_pylist()
    texts = docs.column("text").to_pylist()
    contents = [Record(i, t, x).content for i, t, x in zip(ids, titles, texts)]
    spans = chunk_documents(encoder, contents, cfg)
    rows = [(ids[d], c, s, e) for d, doc_spans in enumerate(spans) for c, (s, e) in enumerate(doc_spans)]
    chunk_texts = [contents[d][s:e] for d, doc_spans in enumerate(spans) for (s, e) in doc_spans]
    vectors = encoder.encode(chunk_texts, encoder.config.document_instruction or None,
                             progress=(lambda n, t: progress(0, t)) if progress else None)
    return pa.Table.from_arrays(
        [pa.array([r[0] for r in rows], pa.string()), pa.array([r[1] for r in rows], pa.int32()),
         pa.array([r[2] for r in rows], pa.int32()), pa.array([r[3] for r in rows], pa.int32()),
         pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), vectors.shape[1])],
        schema=shard_schema(vectors.shape[1]),
    )


def write_shard(table: pa.Table, path: Path, fingerprint: str) -> None:
    """Write a shard atomically, stamped with the fingerprint of the run that made it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(table.replace_schema_metadata({"l2v_fingerprint": fingerprint}), tmp)
    os.replace(tmp, path)


def embed_shard(encoder, docs: pa.Table, cfg: ChunkConfig, path: Path, fingerprint: str,
                progress=None) -> int:
    """Embed one shard's documents (all their chunks) and write the shard atomically. Returns chunks."""
    table = embed_chunks(encoder, docs, cfg, progress)
    write_shard(table, path, fingerprint)
    if progress:
        progress(docs.num_rows, 0)
    return table.num_rows


def embed_documents(encoder, index_dir: Path, cfg: ChunkConfig, fingerprint: str, *,
                    part: tuple[int, int] = (0, 1), shards: Iterable[int] | None = None,
                    show_progress: bool = True) -> dict:
    """Embed the documents table of ``index_dir`` into shards, skipping finished ones. Returns timings."""
    docs = read_documents(index_dir / DOCS_FILE, ["id", "title", "text"])
    n_shards = max(1, -(-docs.num_rows // cfg.docs_per_shard))
    todo = [s for s in (range(n_shards) if shards is None else shards) if s % part[1] == part[0]]
    pending = [s for s in todo if not shard_is_done(shard_path(index_dir, s), fingerprint)]
    t0 = time.perf_counter()
    tokens_before = encoder.stats.tokens
    n_docs = sum(min(cfg.docs_per_shard, docs.num_rows - s * cfg.docs_per_shard) for s in pending)
    with EmbedProgress(n_docs, show_progress) as bar:
        for s in pending:
            chunk = docs.slice(s * cfg.docs_per_shard, cfg.docs_per_shard)
            embed_shard(encoder, chunk, cfg, shard_path(index_dir, s), fingerprint, progress=bar.advance)
    return {"shards": n_shards, "embedded_shards": len(pending), "reused_shards": len(todo) - len(pending),
            "seconds": round(time.perf_counter() - t0, 2), "tokens": encoder.stats.tokens - tokens_before}


def iter_shards(index_dir: Path) -> Iterator[pa.Table]:
    for path in sorted((index_dir / SHARD_DIR).glob("shard-*.parquet")):
        yield pq.read_table(path)


def shard_vectors(table: pa.Table) -> np.ndarray:
    col = table.column("vector").combine_chunks()
    return col.values.to_numpy(zero_copy_only=False).reshape(len(col), -1).astype(np.float32, copy=False)


class EmbedProgress:
    """docs/s, tokens/s and ETA on stderr (rich)."""

    def __init__(self, total_docs: int, enabled: bool):
        self.total, self.enabled = total_docs, enabled and total_docs > 0
        self.docs = self.tokens = 0
        self.t0 = time.perf_counter()

    def __enter__(self):
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("[bold]embedding"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                                console=Console(stderr=True))
            self.bar.start()
            self.task = self.bar.add_task("embed", total=self.total, rate="")
        return self

    def advance(self, docs: int, tokens: int) -> None:
        self.docs += docs
        self.tokens += tokens
        if self.enabled:
            dt = max(time.perf_counter() - self.t0, 1e-6)
            self.bar.update(self.task, completed=self.docs,
                            rate=f"{self.docs / dt:,.1f} docs/s {self.tokens / dt:,.0f} tok/s")

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.stop()
