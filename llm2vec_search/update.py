"""Update an index in place: add new and changed documents, remove documents by id.

Documents are matched by id and content hash (the documents table's ``hash``, of title and
text): an unchanged document is skipped, a changed one replaced where it stands, a new one
appended. The index is then rebuilt from the new documents table, **reusing the vectors** of
every document whose id and hash are unchanged, so only new and changed documents go through the
encoder; FAISS and BM25 are rebuilt from the shards and the manifest is written last.

Crash safety: the manifest is removed first (the folder then never loads), the old documents
table and shards are kept aside (``previous-documents.parquet``, ``previous-shards/``) until the
new manifest is written, and a rerun of the same update finishes the job.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .corpus import Fields, ReadStats, Record, read_corpus
from .embed import (
    DOC_SCHEMA,
    DOCS_FILE,
    SHARD_DIR,
    ChunkConfig,
    EmbedProgress,
    corpus_fingerprint,
    embed_chunks,
    read_documents,
    shard_is_done,
    shard_path,
    write_shard,
)
from .errors import IndexStateError, UsageError
from .index import MANIFEST, PENDING_UPDATE, _read_manifest, finish_index, index_home
from .manifest import fingerprint, read_json, write_json_atomic
from .search import check_encoder, load_index_encoder

PREV_DOCS, PREV_SHARDS = "previous-" + DOCS_FILE, "previous-" + SHARD_DIR


@dataclasses.dataclass
class UpdateStats:
    added: int = 0
    changed: int = 0
    unchanged: int = 0
    removed: int = 0
    embedded: int = 0  # documents that went through the encoder
    reused: int = 0  # documents whose vectors were kept

    @property
    def changes(self) -> int:
        return self.added + self.changed + self.removed


def append_documents(corpus: str | Path, name: str, index_dir: str | Path | None = None, *,
                     fields: Fields = Fields(), skip_invalid: bool = False, encoder=None,
                     show_progress: bool = True) -> tuple[Path, UpdateStats]:
    """Add the new and changed documents of ``corpus`` to index ``name`` (by id and content hash)."""
    stats = ReadStats()
    records = list(read_corpus(Path(corpus), fields, skip_invalid=skip_invalid, stats=stats))
    seen: set[str] = set()
    dupes = [r.id for r in records if r.id in seen or seen.add(r.id)]
    if dupes:
        raise UsageError(f"duplicate document ids ({len(dupes)}), first: {', '.join(map(repr, dupes[:5]))}")
    if not records:
        raise UsageError("the corpus holds no documents with text")
    return _update(name, index_dir, add=records, remove=(), encoder=encoder, show_progress=show_progress)


def remove_documents(ids: Iterable[str], name: str, index_dir: str | Path | None = None, *,
                     show_progress: bool = True) -> tuple[Path, UpdateStats]:
    """Remove documents by id; every id must be in the index (nothing changes otherwise)."""
    ids = list(dict.fromkeys(ids))
    if not ids:
        raise UsageError("no document ids to remove")
    return _update(name, index_dir, add=[], remove=ids, encoder=None, show_progress=show_progress)


def _update(name: str, index_dir, *, add: list[Record], remove: list[str], encoder,
            show_progress: bool) -> tuple[Path, UpdateStats]:
    t0 = time.perf_counter()
    out = index_home(index_dir) / name
    manifest = _read_manifest(out)
    resuming = manifest is None
    if manifest is not None:  # a finished index: what an earlier update left behind is stale
        shutil.rmtree(out / PREV_SHARDS, ignore_errors=True)
        (out / PREV_DOCS).unlink(missing_ok=True)
    else:
        manifest = _read_pending(out)
    if manifest is None:
        raise IndexStateError(f"no finished index {name!r} in {index_home(index_dir)} to update")
    if manifest.get("faiss") is None:
        raise UsageError(f"index {name!r} is BM25-only: rebuild it with `l2v-search index`")
    if encoder is not None:
        check_encoder(manifest, encoder)
    docs = read_documents(out / DOCS_FILE)
    table, stats = _merge(docs, add, remove, resuming)
    if stats.changes == 0 and not resuming:
        return out, stats  # nothing to do

    # From here on the folder is an unfinished build: keep what it had aside until the end.
    (out / MANIFEST).unlink(missing_ok=True)
    write_json_atomic(out / PENDING_UPDATE, manifest)  # what to finish with, should this be interrupted
    if not (out / PREV_SHARDS).is_dir():
        shutil.copyfile(out / DOCS_FILE, out / (PREV_DOCS + ".tmp"))
        os.replace(out / (PREV_DOCS + ".tmp"), out / PREV_DOCS)
        os.replace(out / SHARD_DIR, out / PREV_SHARDS)
    tmp = out / (DOCS_FILE + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, out / DOCS_FILE)

    ids, hashes = table.column("id").to_pylist(), table.column("hash").to_pylist()
    corpus_fp = corpus_fingerprint(ids, hashes)
    chunk = ChunkConfig(**manifest["chunking"])
    run_fp = fingerprint([corpus_fp, manifest["encoder"]["fingerprint"], dataclasses.asdict(chunk)])
    previous = _PreviousVectors(out)
    if encoder is None and any(not previous.has(i, h) for i, h in zip(ids, hashes)):
        encoder = load_index_encoder(manifest)
    t1 = time.perf_counter()
    _rewrite_shards(out, table, chunk, run_fp, previous, encoder, stats, show_progress)
    timings = {"embed_seconds": round(time.perf_counter() - t1, 2)}
    corpus = {**manifest["corpus"], "fingerprint": corpus_fp, "documents": table.num_rows}
    history = [*manifest.get("updates", []),
               {**dataclasses.asdict(stats), "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}]
    base = {k: manifest[k] for k in ("kind", "name", "encoder", "chunking")}
    finish_index(out, {**base, "corpus": corpus, "fingerprint": run_fp, "updates": history},
                 manifest["faiss"]["factory"], None, bool(manifest.get("bm25")), timings, t0)
    shutil.rmtree(out / PREV_SHARDS, ignore_errors=True)
    (out / PREV_DOCS).unlink(missing_ok=True)
    (out / PENDING_UPDATE).unlink(missing_ok=True)
    return out, stats


def _read_pending(out: Path) -> dict[str, Any] | None:
    """The manifest an interrupted update saved, so that rerunning it finishes the job."""
    path = out / PENDING_UPDATE
    return read_json(path) if path.is_file() else None


def _merge(docs: pa.Table, add: list[Record], remove: list[str], resuming: bool) -> tuple[pa.Table, UpdateStats]:
    """The new documents table: changed rows replaced in place, new rows appended, removed rows dropped."""
    stats = UpdateStats()
    rows = docs.to_pylist()
    position = {r["id"]: i for i, r in enumerate(rows)}
    missing = [i for i in remove if i not in position]
    if missing and not resuming:  # an interrupted removal, rerun, finds its ids already gone
        raise UsageError(f"{len(missing)} id(s) not in the index, nothing removed: "
                         f"{', '.join(map(repr, missing[:5]))}")
    for rec in add:
        new = {"id": rec.id, "title": rec.title, "text": rec.text, "hash": rec.hash}
        if rec.id not in position:
            position[rec.id] = len(rows)
            rows.append(new)
            stats.added += 1
        elif rows[position[rec.id]]["hash"] != rec.hash:
            rows[position[rec.id]] = new
            stats.changed += 1
        else:
            stats.unchanged += 1
    gone = set(remove) - set(missing)
    stats.removed = len(gone)
    return pa.Table.from_pylist([r for r in rows if r["id"] not in gone], schema=DOC_SCHEMA), stats


class _PreviousVectors:
    """The chunk rows of the documents as they were before the update, by (id, hash)."""

    def __init__(self, out: Path):
        self.hash: dict[str, str] = {}
        self.where: dict[str, tuple[Path, list[int]]] = {}
        self._cache: tuple[Path, pa.Table] | None = None
        if (out / PREV_DOCS).is_file():
            old = read_documents(out / PREV_DOCS, ["id", "hash"])
            self.hash = dict(zip(old.column("id").to_pylist(), old.column("hash").to_pylist()))
        for path in sorted((out / PREV_SHARDS).glob("shard-*.parquet")):
            for row, doc in enumerate(pq.read_table(path, columns=["id"]).column("id").to_pylist()):
                self.where.setdefault(doc, (path, []))[1].append(row)

    def has(self, doc: str, doc_hash: str) -> bool:
        return self.hash.get(doc) == doc_hash and doc in self.where

    def rows(self, doc: str) -> pa.Table:
        path, rows = self.where[doc]
        if self._cache is None or self._cache[0] != path:  # documents keep their order: one file at a time
            self._cache = (path, pq.read_table(path))
        return self._cache[1].take(rows)


def _rewrite_shards(out: Path, table: pa.Table, chunk: ChunkConfig, run_fp: str, previous: _PreviousVectors,
                    encoder, stats: UpdateStats, show_progress: bool) -> None:
    """Write every shard of the new table, reusing previous vectors and embedding only the rest."""
    n_shards = max(1, -(-table.num_rows // chunk.docs_per_shard))
    pending = [s for s in range(n_shards) if not shard_is_done(shard_path(out, s), run_fp)]
    todo = sum(min(chunk.docs_per_shard, table.num_rows - s * chunk.docs_per_shard) for s in pending)
    with EmbedProgress(todo, show_progress) as bar:
        for s in pending:
            docs = table.slice(s * chunk.docs_per_shard, chunk.docs_per_shard)
            ids, hashes = docs.column("id").to_pylist(), docs.column("hash").to_pylist()
            fresh = [i for i, (d, h) in enumerate(zip(ids, hashes)) if not previous.has(d, h)]
            embedded = _by_id(embed_chunks(encoder, docs.take(fresh), chunk)) if fresh else {}
            parts = [embedded[d] if d in embedded else previous.rows(d) for d in ids]
            schema = parts[0].schema.remove_metadata()
            write_shard(pa.concat_tables([p.cast(schema) for p in parts]), shard_path(out, s), run_fp)
            stats.embedded += len(fresh)
            stats.reused += len(ids) - len(fresh)
            bar.advance(len(ids), 0)


def _by_id(rows: pa.Table) -> dict[str, pa.Table]:
    """Split chunk rows into one table per document id (rows of a document are contiguous)."""
    ids = rows.column("id").to_pylist()
    out, start = {}, 0
    for end in range(1, len(ids) + 1):
        if end == len(ids) or ids[end] != ids[start]:
            out[ids[start]] = rows.slice(start, end - start)
            start = end
    return out
