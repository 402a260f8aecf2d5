"""The index store: the on-disk layout of ``indexes/<name>/`` and the only code that reads or
writes it (names, generations, locks, the documents table, shards, lookup tables, manifest).

    indexes/<name>/
        LOCK                 the writer lock (flock); names its holder's pid and command
        CURRENT              the published generation's folder name, replaced atomically
        gen-000007/          a generation, complete once manifest.json is in it
            build.json       the run it holds (fingerprint), written when it is staged
            documents.parquet            id, title, text, hash, in corpus order
            shards/shard-00000.parquet   id, chunk, start, end, vector: documents [i*S, (i+1)*S)
            index.faiss      the shards' vectors (row i = row i of the shards read in order), as float,
                             int8 or binary codes (vectors.py)
            vectors.npy      int8/binary indexes: the float vectors, row i = FAISS id i (memory-mapped
                             for rescoring)
            documents.arrow  id, title, text   (Arrow IPC, memory-mapped by readers)
            chunks.arrow     doc row, chunk, start, end of each vector (Arrow IPC, memory-mapped)
            bm25/            BM25 over the documents, in table order
            manifest.json    written last
            .readers         readers hold a shared flock on it while they use the generation

A writer (build, ``--append``, ``remove``) takes the lock, stages a new generation beside the
current one, fills it and publishes it by replacing ``CURRENT``; readers (query, eval, serve)
open the generation ``CURRENT`` names, so they never see a half-written one. A generation that no
reader holds is removed at the next publish. Every file is written under a unique temporary name
and renamed into place (``manifest.atomic``), so a killed writer leaves whole files only, and a rerun
resumes the staged generation of the same run fingerprint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import IndexStateError, UsageError
from .manifest import as_dict, atomic, diff, fingerprint, write_json_atomic
from .names import (  # noqa: F401 (re-exported: the store's layout and names)
    CURRENT,
    FORMAT,
    KIND,
    MANIFEST,
    check_name,
    index_home,
    safe_name,
)
from .names import GENERATION_RE as _GENERATION
from .names import NAME_RE as _NAME

LOCK, READERS, BUILD = "LOCK", ".readers", "build.json"
DOCS_FILE, SHARD_DIR, FAISS_FILE, BM25_DIR = "documents.parquet", "shards", "index.faiss", "bm25"
DOCS_LOOKUP, CHUNKS_LOOKUP = "documents.arrow", "chunks.arrow"
VECTORS_FILE = "vectors.npy"  # the float vectors beside the codes of an int8/binary index
DOCS_PER_SHARD = 128  # small: a few hundred documents give two workers work, a crash loses little
LEGACY = (MANIFEST, DOCS_FILE, SHARD_DIR, FAISS_FILE, BM25_DIR, "update.json", "previous-documents.parquet",
          "previous-shards", "next-documents.parquet", "documents.staged.parquet")  # format 1, at the top
DOC_SCHEMA = pa.schema([("id", pa.string()), ("title", pa.string()), ("text", pa.string()), ("hash", pa.string())])
CHUNK_SCHEMA = pa.schema([("doc", pa.int64()), ("chunk", pa.int32()), ("start", pa.int32()), ("end", pa.int32())])


# -- formulas ----------------------------------------------------------------------------------
def run_fingerprint(corpus_fp: str, encoder_fp: str | None, chunking: dict | None) -> str:
    """What a generation's shards hold: the documents, the encoder and the chunking (shard size
    included). A BM25-only index has neither encoder nor chunking."""
    return fingerprint([corpus_fp, encoder_fp, chunking])


def shard_count(n_docs: int, docs_per_shard: int) -> int:
    return max(1, -(-n_docs // docs_per_shard))


# -- writing files: every write goes through manifest.atomic (unique temporary name, then rename) --
def _read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _sweep_temps(folder: Path) -> None:
    """Remove temporary files that a killed process left (its pid is gone)."""
    for tmp in folder.glob(".*.tmp"):
        try:
            os.kill(int(tmp.name.split(".")[-3]), 0)
        except (ValueError, IndexError, ProcessLookupError):
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        except PermissionError:  # alive, someone else's
            pass


# -- the documents table -----------------------------------------------------------------------
class _CorpusDigest:
    """The fingerprint of a documents table: its ids and content hashes, in order."""

    def __init__(self):
        self.h = hashlib.sha256()

    def add(self, doc_id: str, doc_hash: str) -> None:
        self.h.update(f"{doc_id}\0{doc_hash}\n".encode())

    def hexdigest(self) -> str:
        return self.h.hexdigest()[:16]


def corpus_fingerprint(ids: Iterable[str], hashes: Iterable[str]) -> str:
    digest = _CorpusDigest()
    for i, h in zip(ids, hashes):
        digest.add(i, h)
    return digest.hexdigest()


def write_documents(records: Iterable, out: Path | None) -> tuple[int, str]:
    """Write the documents table of ``records`` (``corpus.Record``) atomically, or only read them
    through when ``out`` is None; refuse duplicate ids and an empty corpus. Returns (count, fingerprint)."""
    seen: set[str] = set()
    duplicates: list[str] = []
    digest, batch, n = _CorpusDigest(), [], 0
    with contextlib.ExitStack() as stack:
        writer = None
        if out is not None:
            writer = stack.enter_context(pq.ParquetWriter(stack.enter_context(atomic(out)), DOC_SCHEMA))

        def flush():
            if writer is not None:
                writer.write_table(pa.Table.from_pylist(batch, schema=DOC_SCHEMA))
            batch.clear()

        for rec in records:
            if rec.id in seen:
                duplicates.append(rec.id)
                continue
            seen.add(rec.id)
            digest.add(rec.id, rec.hash)
            batch.append({"id": rec.id, "title": rec.title, "text": rec.text, "hash": rec.hash})
            n += 1
            if len(batch) >= 4096:
                flush()
        flush()
        if duplicates:
            raise UsageError(f"duplicate document ids ({len(duplicates)}), first: "
                             f"{', '.join(repr(d) for d in duplicates[:5])}")
        if n == 0:
            raise UsageError("the corpus holds no documents with text")
    return n, digest.hexdigest()


def write_table(table: pa.Table, out: Path) -> None:
    with atomic(out) as tmp:
        pq.write_table(table, tmp)


def read_documents(path: Path, columns: list[str] | None = None) -> pa.Table:
    return pq.read_table(path, columns=columns)


# -- shards ------------------------------------------------------------------------------------
def shard_path(gen: Path, shard: int) -> Path:
    return gen / SHARD_DIR / f"shard-{shard:05d}.parquet"


def shard_schema(dim: int) -> pa.Schema:
    return pa.schema([("id", pa.string()), ("chunk", pa.int32()), ("start", pa.int32()), ("end", pa.int32()),
                      ("vector", pa.list_(pa.float32(), dim))])


def shard_is_done(path: Path, run_fp: str) -> bool:
    if not path.is_file():
        return False
    try:
        meta = pq.read_schema(path).metadata or {}
    except Exception:  # a torn or foreign file: redo it
        return False
    return meta.get(b"l2v_fingerprint", b"").decode() == run_fp


def write_shard(table: pa.Table, path: Path, run_fp: str) -> None:
    """Write a shard atomically, stamped with the fingerprint of the run that made it."""
    with atomic(path) as tmp:
        pq.write_table(table.replace_schema_metadata({"l2v_fingerprint": run_fp}), tmp)


def shard_paths(gen: Path) -> list[Path]:
    return sorted((gen / SHARD_DIR).glob("shard-*.parquet"))


def iter_shards(gen: Path, columns: list[str] | None = None) -> Iterator[pa.Table]:
    for path in shard_paths(gen):
        yield pq.read_table(path, columns=columns)


def shard_vectors(table: pa.Table) -> np.ndarray:
    col = table.column("vector").combine_chunks()
    return col.values.to_numpy(zero_copy_only=False).reshape(len(col), -1).astype(np.float32, copy=False)


# -- lookup tables: what readers memory-map ----------------------------------------------------
def write_lookups(gen: Path, batch_rows: int = 65536) -> int:
    """``documents.arrow`` and ``chunks.arrow`` from the documents table and the shards. Returns the
    number of chunks (vectors). Refuses shards that do not follow the documents table."""
    docs = pq.ParquetFile(gen / DOCS_FILE)
    schema = pa.schema([DOC_SCHEMA.field(c) for c in ("id", "title", "text")])
    with atomic(gen / DOCS_LOOKUP) as tmp, pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema) as w:
        for batch in docs.iter_batches(batch_size=batch_rows, columns=["id", "title", "text"]):
            w.write_batch(batch)
    tables = list(iter_shards(gen, ["id", "chunk", "start", "end"]))
    batch = pa.RecordBatch.from_pylist([], schema=CHUNK_SCHEMA)  # a BM25-only index has no chunks
    if tables:
        chunks = pa.concat_tables(tables)
        first = chunks.column("chunk").to_numpy() == 0  # a document's rows start at its chunk 0
        if not chunks.filter(pa.array(first)).column("id").equals(read_documents(gen / DOCS_FILE, ["id"]).column("id")):
            raise IndexStateError(f"{gen}: the shards do not hold the documents of its documents table")
        batch = pa.record_batch([pa.array(np.cumsum(first) - 1), *(chunks.column(c).combine_chunks()
                                                                   for c in ("chunk", "start", "end"))],
                                schema=CHUNK_SCHEMA)
    with atomic(gen / CHUNKS_LOOKUP) as tmp, pa.OSFile(str(tmp), "wb") as sink, \
            pa.ipc.new_file(sink, CHUNK_SCHEMA) as w:
        w.write_batch(batch)
    return batch.num_rows


_NUMPY = {pa.int64(): np.dtype(np.int64), pa.int32(): np.dtype(np.int32)}


def _view(column: pa.Array) -> np.ndarray:
    """A read-only numpy view of an integer column without nulls, no copy. (Arrow's own ``to_numpy``
    imports pandas, half a second of a one-shot query.)"""
    if column.null_count:
        raise IndexStateError("a lookup table holds nulls: rerun `l2v-search index` to rebuild the index")
    dtype = _NUMPY[column.type]
    return np.frombuffer(column.buffers()[1], dtype=dtype, count=len(column), offset=column.offset * dtype.itemsize)


class Lookups:
    """Documents and chunks by row, from the memory-mapped Arrow files of a generation: opening
    costs the file metadata, and a lookup touches only the pages of its rows."""

    def __init__(self, gen: Path):
        reader = pa.ipc.open_file(pa.memory_map(str(gen / DOCS_LOOKUP)))
        self._batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
        self._starts = np.cumsum([0] + [b.num_rows for b in self._batches])
        chunks = pa.ipc.open_file(pa.memory_map(str(gen / CHUNKS_LOOKUP))).get_batch(0)
        # (n_chunks,) views on the mapped file, no copy
        self.doc, self.chunk, self.start, self.end = (_view(chunks.column(c)) for c in ("doc", "chunk", "start", "end"))

    @property
    def documents(self) -> int:
        return int(self._starts[-1])

    @property
    def chunks(self) -> int:
        return len(self.doc)

    def document(self, row: int) -> tuple[str, str, str]:
        """(id, title, text) of document ``row``."""
        b = int(np.searchsorted(self._starts, row, side="right")) - 1
        batch, i = self._batches[b], row - int(self._starts[b])
        return tuple(batch.column(c)[i].as_py() for c in (0, 1, 2))


# -- the manifest ------------------------------------------------------------------------------
ENCODER_SETTINGS = ("pooling", "causal", "max_length", "normalize", "query_instruction", "document_instruction",
                    "dim")


@dataclasses.dataclass(frozen=True)
class CorpusInfo:
    path: str
    fingerprint: str  # of the documents table (ids and content hashes, in order)
    documents: int
    empty_skipped: int = 0
    invalid_skipped: int = 0


@dataclasses.dataclass(frozen=True)
class FaissInfo:
    factory: str
    vectors: int
    metric: str = "inner_product"
    on_disk: bool = False  # an IVF whose lists stay on disk (<generation>/ondisk, see ondisk.py)
    vector_type: str = "float"  # float | int8 | binary: the codes FAISS holds (vectors.py)
    rescore_multiplier: int | None = None  # int8/binary: k x this candidates rescored with float vectors


@dataclasses.dataclass(frozen=True, kw_only=True)
class IndexManifest:
    """What made a generation; written last into it, so its presence marks a complete generation."""

    kind: str = KIND
    format: int = FORMAT
    name: str
    corpus: CorpusInfo
    encoder: dict | None = None  # spec, fingerprint and identity of the encoder; None: BM25 only
    chunking: dict | None = None  # the ChunkConfig (docs_per_shard included)
    fingerprint: str  # run_fingerprint(): what the shards hold
    faiss: FaissInfo | None = None
    bm25: bool = True
    engine: dict | None = None  # how the shards were embedded
    updates: tuple = ()  # one entry per --append or remove
    timings: dict = dataclasses.field(default_factory=dict)
    library_versions: dict = dataclasses.field(default_factory=dict)
    created: str = ""

    @property
    def dense(self) -> bool:
        return self.faiss is not None

    def as_dict(self) -> dict[str, Any]:
        return as_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IndexManifest:
        d = dict(d)
        d["corpus"] = CorpusInfo(**d["corpus"])
        d["faiss"] = FaissInfo(**d["faiss"]) if d.get("faiss") else None
        d["updates"] = tuple(d.get("updates", ()))
        return cls(**d)

    @classmethod
    def read(cls, gen: Path) -> IndexManifest | None:
        """The manifest of generation ``gen``; None when it is missing or not one of ours."""
        d = _read_json(gen / MANIFEST)
        if not isinstance(d, dict) or d.get("kind") != KIND or d.get("format") != FORMAT:
            return None
        try:
            return cls.from_dict(d)
        except (TypeError, KeyError):
            return None

    def write(self, gen: Path) -> None:
        write_json_atomic(gen / MANIFEST, self.as_dict())

    def diff(self, encoder) -> list[str]:
        """What differs between the encoder recorded here and ``encoder``, as ``key: recorded != found``."""
        if self.encoder is None or encoder.fingerprint == self.encoder["fingerprint"]:
            return []
        found = encoder.identity()
        out = diff(self.encoder, found, ENCODER_SETTINGS)
        model, found_model = self.encoder.get("model", {}), found.get("model", {})
        out += diff(model, found_model, ("weights_sha256", "base_config_sha256"))
        adapters = [[a.get("sha256") for a in m.get("adapters", [])] for m in (model, found_model)]
        if adapters[0] != adapters[1]:
            out.append(f"adapters: {adapters[0]} != {adapters[1]}")
        return out or ["different weights or adapters"]

    def check(self, encoder) -> None:
        """Refuse an encoder other than the one that built the index, naming what differs."""
        if diffs := self.diff(encoder):
            raise IndexStateError(f"index {self.name!r} was built with a different encoder ({'; '.join(diffs)})")


# -- locks -------------------------------------------------------------------------------------
def _command() -> str:
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300] if sys.argv else "python"


class WriterLock:
    """The index's writer lock: an exclusive flock on ``LOCK``, which records who holds it. The
    kernel drops the lock when its holder dies, so the lock of a killed writer is free at once."""

    def __init__(self, folder: Path, name: str, wait: bool = True):
        folder.mkdir(parents=True, exist_ok=True)
        self.fd: int | None = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._holder()
                if not wait:
                    raise IndexStateError(f"index {name!r} is being written by {holder}; rerun when it has "
                                          "finished, or without --no-wait to wait for it") from None
                print(f"waiting for index {name!r}: it is being written by {holder}", file=sys.stderr, flush=True)
                fcntl.flock(self.fd, fcntl.LOCK_EX)
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, json.dumps({"pid": os.getpid(), "command": _command(),
                                           "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
        except BaseException:
            self.release()
            raise

    def _holder(self) -> str:
        try:
            h = json.loads(os.pread(self.fd, 4096, 0) or b"{}")
            return f"pid {h['pid']} ({h['command']}, since {h['since']})"
        except (ValueError, KeyError, TypeError):
            return "another process"

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


class Hold:
    """A reader's shared flock on a generation: a writer removes a generation only under an
    exclusive one, so a held generation stays until released (or this process ends)."""

    def __init__(self, fd: int):
        self._finalizer = weakref.finalize(self, os.close, fd)

    def release(self) -> None:
        self._finalizer()


def hold(gen: Path) -> Hold | None:
    """Hold generation ``gen`` (None when it is gone)."""
    try:
        fd = os.open(gen / READERS, os.O_RDONLY)
    except FileNotFoundError:
        return None
    fcntl.flock(fd, fcntl.LOCK_SH)
    if not (gen / READERS).exists():  # removed while we waited for the flock
        os.close(fd)
        return None
    return Hold(fd)


def _remove_unheld(gen: Path) -> bool:
    try:
        fd = os.open(gen / READERS, os.O_RDONLY)
    except FileNotFoundError:  # a generation killed before it was set up
        shutil.rmtree(gen, ignore_errors=True)
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    try:
        (gen / READERS).unlink()
        shutil.rmtree(gen, ignore_errors=True)
    finally:
        os.close(fd)
    return True


# -- one index ---------------------------------------------------------------------------------
@dataclasses.dataclass
class Opened:
    """A complete generation opened for reading: its folder, manifest and hold."""

    path: Path
    manifest: IndexManifest
    hold: Hold


class IndexStore:
    """The folder of one index: its generations, ``CURRENT``, and its locks."""

    def __init__(self, home: str | Path, name: str):
        self.name = check_name(name)
        self.home = Path(home)
        self.folder = self.home / name

    # reading
    def current(self) -> Path | None:
        """The published generation's folder (None when nothing was published)."""
        try:
            text = (self.folder / CURRENT).read_text(encoding="utf-8").strip()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not _GENERATION.fullmatch(text):
            raise IndexStateError(f"index {self.name!r} in {self.home} is corrupt: {CURRENT} names {text[:40]!r}")
        return self.folder / text

    def manifest(self) -> IndexManifest | None:
        """The published generation's manifest, if it is complete."""
        gen = self.current()
        return IndexManifest.read(gen) if gen is not None else None

    def generations(self) -> list[Path]:
        found = [p for p in self.folder.glob("gen-*") if _GENERATION.fullmatch(p.name)] if self.folder.is_dir() else []
        return sorted(found, key=lambda p: int(p.name[4:]))

    def open(self) -> Opened:
        """The published generation, held, with its manifest; an IndexStateError saying why not."""
        for _ in range(20):  # a writer may publish and remove generations between our steps
            gen = self.current()
            if gen is None:
                raise self._why_not()
            held = hold(gen)
            if held is None or gen != self.current():
                if held is not None:
                    held.release()
                continue
            manifest = IndexManifest.read(gen)
            if manifest is None:
                held.release()
                raise IndexStateError(f"index {self.name!r} in {self.home} is corrupt: {MANIFEST} is missing or "
                                      "invalid (rerun `l2v-search index` to rebuild it)")
            return Opened(gen, manifest, held)
        raise IndexStateError(f"index {self.name!r} in {self.home} keeps changing; try again")

    def legacy(self) -> bool:
        """Whether the folder holds an index of the layout before generations (format 1), unpublished since."""
        return (self.folder / MANIFEST).is_file() and not (self.folder / CURRENT).exists()

    def _why_not(self) -> IndexStateError:
        where = f"index {self.name!r} in {self.home}"
        if not self.folder.is_dir():
            return IndexStateError(f"no index {self.name!r} in {self.home}")
        if self.legacy():
            return IndexStateError(f"{where} was built by an older llm2vec-search (one folder, no generations): "
                                   f"rebuild it with `l2v-search index CORPUS --name {self.name}`")
        if self.generations():
            return IndexStateError(f"{where} is unfinished (rerun `l2v-search index` to resume): "
                                   "no generation was published")
        return IndexStateError(f"{where} is corrupt: {MANIFEST} is missing or invalid")

    # writing (under the writer lock)
    def lock(self, wait: bool = True) -> WriterLock:
        return WriterLock(self.folder, self.name, wait)

    def finished(self, accept: Callable[[IndexManifest], bool]) -> Path | None:
        """The current generation if ``accept`` takes its manifest, else a complete unpublished one
        it takes (a writer killed before publishing), else None."""
        current = self.current()
        if current is not None and (m := IndexManifest.read(current)) is not None and accept(m):
            return current
        for gen in reversed(self.generations()):
            if gen != current and (m := IndexManifest.read(gen)) is not None and accept(m):
                return gen
        return None

    def stage(self, run_fp: str, write_docs: Callable[[Path], None]) -> tuple[Path, bool]:
        """The unfinished generation of run ``run_fp``, or a new one whose documents table
        ``write_docs(path)`` writes. Returns (folder, resumed)."""
        for gen in self.generations():
            build = _read_json(gen / BUILD)
            if isinstance(build, dict) and build.get("fingerprint") == run_fp and not (gen / MANIFEST).exists():
                _sweep_temps(gen)
                _sweep_temps(gen / SHARD_DIR)
                return gen, True
        _sweep_temps(self.folder)
        seq = max((int(g.name[4:]) for g in self.generations()), default=0) + 1
        gen = self.folder / f"gen-{seq:06d}"
        gen.mkdir()
        (gen / READERS).touch()
        write_docs(gen / DOCS_FILE)
        write_json_atomic(gen / BUILD, {"fingerprint": run_fp,
                                        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        return gen, False

    def publish(self, gen: Path) -> None:
        """Make ``gen`` the current generation (one atomic rename), then remove the generations
        no reader holds, and what an older version left at the top of the folder."""
        with atomic(self.folder / CURRENT) as tmp:
            tmp.write_text(gen.name + "\n", encoding="utf-8")
        for old in self.generations():
            if old != gen:
                _remove_unheld(old)
        for name in LEGACY:
            path = self.folder / name
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        _sweep_temps(self.folder)


def list_indexes(index_dir: str | Path | None = None) -> list[IndexManifest]:
    """The manifests of the published indexes in the index home, by name."""
    home = index_home(index_dir)
    found = []
    for d in sorted(home.iterdir()) if home.is_dir() else []:
        if d.is_dir() and _NAME.fullmatch(d.name) and d.name not in (".", ".."):
            try:
                m = IndexStore(home, d.name).manifest()
            except IndexStateError:
                m = None
            if m is not None:
                found.append(m)
    return found
