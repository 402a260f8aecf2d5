"""Update an index: add new and changed documents, remove documents by id.

Documents are matched by id and content hash (the documents table's ``hash``, of title and
text): an unchanged document is skipped, a changed one replaced where it stands, a new one
appended. The new documents table then goes through the build pipeline (index.py) like a corpus:
a new generation that reuses the vectors of every document whose id and hash are unchanged (only
new and changed documents go through the encoder), with FAISS and BM25 rebuilt, published in one
atomic switch. The current generation answers queries until then; an interrupted update leaves it
as it was, and rerunning the same command resumes the staged generation.

The documents table is merged under the index's writer lock, so two updates never lose each
other's changes: the second one waits and starts from what the first one published.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa

from .corpus import Fields, ReadStats, Record, read_corpus
from .embed import ChunkConfig
from .errors import IndexStateError, UsageError
from .index import InProcess, Plan, run_pipeline
from .store import (
    DOC_SCHEMA,
    DOCS_FILE,
    IndexManifest,
    IndexStore,
    corpus_fingerprint,
    index_home,
    read_documents,
    write_table,
)


@dataclasses.dataclass
class UpdateStats:
    added: int = 0
    changed: int = 0
    unchanged: int = 0
    removed: int = 0
    embedded: int = 0  # documents that go through the encoder
    reused: int = 0  # documents whose vectors are kept

    @property
    def changes(self) -> int:
        return self.added + self.changed + self.removed


def append_documents(corpus: str | Path, name: str, index_dir: str | Path | None = None, *,
                     fields: Fields = Fields(), skip_invalid: bool = False, encoder=None, wait: bool = True,
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
    return _update(name, index_dir, add=records, remove=(), encoder=encoder, wait=wait, show_progress=show_progress)


def remove_documents(ids: Iterable[str], name: str, index_dir: str | Path | None = None, *, wait: bool = True,
                     show_progress: bool = True) -> tuple[Path, UpdateStats]:
    """Remove documents by id; every id must be in the index, and some document must stay
    (nothing changes otherwise)."""
    ids = list(dict.fromkeys(ids))
    if not ids:
        raise UsageError("no document ids to remove")
    return _update(name, index_dir, add=[], remove=ids, encoder=None, wait=wait, show_progress=show_progress)


def _update(name: str, index_dir, *, add: list[Record], remove: list[str], encoder, wait: bool,
            show_progress: bool) -> tuple[Path, UpdateStats]:
    from .search import load_index_encoder

    t0 = time.perf_counter()
    store = IndexStore(index_home(index_dir), name)
    seen: dict = {}

    def plan(current: IndexManifest | None) -> Plan:
        if current is None:
            raise IndexStateError(f"no finished index {name!r} in {store.home} to update" + (
                f" (it was built by an older llm2vec-search: rebuild it with `l2v-search index CORPUS --name {name}`)"
                if store.legacy() else ""))
        opened = store.open()
        try:
            m = opened.manifest
            if not m.dense:
                raise UsageError(f"index {name!r} is BM25-only: rebuild it with `l2v-search index`")
            if encoder is not None:
                m.check(encoder)
            table, stats = _merge(read_documents(opened.path / DOCS_FILE), add, remove)
        finally:
            opened.hold.release()
        stats.embedded = stats.added + stats.changed
        stats.reused = table.num_rows - stats.embedded
        seen.update(manifest=m, stats=stats)
        ids, hashes = table.column("id").to_pylist(), table.column("hash").to_pylist()
        corpus = dataclasses.replace(m.corpus, fingerprint=corpus_fingerprint(ids, hashes), documents=table.num_rows)
        entry = {**dataclasses.asdict(stats), "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        return Plan(m.name, corpus, m.encoder, ChunkConfig(**m.chunking), lambda out: write_table(table, out),
                    m.faiss.factory, None, m.bm25, (*m.updates, entry), on_disk=m.faiss.on_disk,
                    vectors=m.faiss.vector_type, rescore_multiplier=m.faiss.rescore_multiplier)

    engine = InProcess(encoder, load=lambda: load_index_encoder(seen["manifest"]))
    gen = run_pipeline(store, plan, engine, wait=wait, show_progress=show_progress, t0=t0)
    return gen, seen["stats"]


def _merge(docs: pa.Table, add: list[Record], remove: list[str]) -> tuple[pa.Table, UpdateStats]:
    """The new documents table: changed rows replaced in place, new rows appended, removed rows dropped."""
    stats = UpdateStats()
    rows = docs.to_pylist()
    position = {r["id"]: i for i, r in enumerate(rows)}
    missing = [i for i in remove if i not in position]
    if missing:
        raise UsageError(f"{len(missing)} id(s) not in the index, nothing removed: "
                         f"{', '.join(map(repr, missing[:5]))}")
    if len(set(remove)) == len(rows):
        raise UsageError(f"removing all {len(rows)} documents would leave the index empty; nothing removed "
                         "(delete the index's folder to drop it)")
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
    gone = set(remove)
    stats.removed = len(gone)
    return pa.Table.from_pylist([r for r in rows if r["id"] not in gone], schema=DOC_SCHEMA), stats
