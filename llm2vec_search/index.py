"""Build an index: one pipeline for a corpus, an update, and every engine.

    stage the documents ─ run fingerprint ─ embed the pending shards (an Engine) ─ finish:
    FAISS, lookup tables, BM25, manifest ─ publish (CURRENT)

``build_index`` stages a corpus; ``update.py`` stages the current documents with new, changed or
removed ones. Either way the vectors of every document (by id and content hash) that the current
generation holds are reused when it was made with the same encoder and windows, so only new and
changed documents go through the encoder. Engines differ only in how they embed the pending
shards: in this process (:class:`InProcess`), one process per device or CPU worker
(distributed.py), or Ray actors (ray_engine.py); an interrupted run resumes with any of them.

The writer lock is held from staging to publishing; a ``part=(I, N)`` run holds it only to stage,
then embeds its shards beside the other parts (each shard file is written atomically). Nothing is
written when the current generation already is what was asked for.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .corpus import Fields, ReadStats, Record, read_corpus
from .embed import ChunkConfig, EmbedProgress, embed_chunks
from .errors import IndexStateError, L2VError, UsageError
from .manifest import library_versions
from .models import DEFAULT_ENCODER
from .store import (
    BM25_DIR,
    CHUNKS_LOOKUP,
    DOCS_FILE,
    FAISS_FILE,
    CorpusInfo,
    FaissInfo,
    IndexManifest,
    IndexStore,
    atomic,
    check_name,
    hold,
    index_home,
    iter_shards,
    read_documents,
    run_fingerprint,
    safe_name,
    shard_count,
    shard_is_done,
    shard_path,
    shard_paths,
    shard_schema,
    shard_vectors,
    write_documents,
    write_lookups,
    write_shard,
)

FLAT_LIMIT = 200_000  # exact search below this many vectors
ENCODE_GROUP_DOCS = 2048  # fresh documents encoded together: enough to sort by length and fill batches


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


def _faiss_index(dim: int, factory: str):
    import faiss

    try:
        return faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise UsageError(f"invalid FAISS factory string {factory!r}: {str(e).splitlines()[0][:200]}") from None


def build_faiss(gen: Path, factory: str | None, memory_budget: int | None = None, train_sample: int = 100_000,
                seed: int = 0):
    """Stream the shards into a FAISS inner-product index (one shard in memory at a time);
    approximate ones are trained on a sample first."""
    index, factory = trained_faiss(gen, factory, memory_budget, train_sample, seed)
    for t in iter_shards(gen, ["vector"]):
        index.add(shard_vectors(t))
    return index, factory


def trained_faiss(gen: Path, factory: str | None, memory_budget: int | None = None, train_sample: int = 100_000,
                  seed: int = 0):
    """The empty FAISS index for a generation's shards, trained on a sample where it needs training,
    and its factory string (``None``: :func:`default_factory`)."""
    from .ondisk import sample_rows

    paths = shard_paths(gen)
    n = sum(pq.read_metadata(p).num_rows for p in paths)
    if n == 0:
        raise IndexStateError(f"{gen}: no embeddings to index")
    dim = pq.read_schema(paths[0]).field("vector").type.list_size
    factory = factory or default_factory(n, dim, memory_budget)
    index = _faiss_index(dim, factory)
    if not index.is_trained:
        index.train(sample_rows((shard_vectors(t) for t in iter_shards(gen, ["vector"])), n, train_sample, seed))
    return index, factory


def check_ondisk_type(index_type: str | None) -> None:
    """``--on-disk`` builds an IVF: ``IVF<nlist>,<codec>``, or None for 4*sqrt(n) lists, Flat."""
    if index_type is not None and not re.fullmatch(r"IVF\d+,\w+", index_type):
        raise UsageError(f"an on-disk index is an IVF: --index-type IVF<nlist>,<codec> (e.g. IVF1024,Flat), "
                         f"got {index_type!r}")


def build_faiss_ondisk(gen: Path, index_type: str | None) -> FaissInfo:
    """An on-disk IVF over the generation's shards in ``<gen>/ondisk``, one shard in memory at a time.

    Trained exactly as the in-memory index of the same factory string (same sample, same k-means),
    so that both give the same results at the same nprobe.
    """
    from .ondisk import ONDISK_DIR, build_ondisk, default_nlist

    check_ondisk_type(index_type)
    n = sum(pq.read_metadata(p).num_rows for p in shard_paths(gen))
    trained, factory = trained_faiss(gen, index_type or f"IVF{default_nlist(n)},Flat")
    build_ondisk((shard_vectors(t) for t in iter_shards(gen, ["vector"])), gen / ONDISK_DIR, trained)
    return FaissInfo(factory, n, on_disk=True)


# -- embedding shards --------------------------------------------------------------------------
def _cached(maxsize: int):
    """Memoize on a file's path and identity, so a folder rewritten under the same name is read afresh."""
    def wrap(fn):
        cache: collections.OrderedDict = collections.OrderedDict()

        def get(path: Path):
            st = (path / DOCS_FILE).stat()
            key = (str(path), st.st_ino, st.st_mtime_ns)
            if key not in cache:
                cache[key] = fn(path)
                while len(cache) > maxsize:
                    cache.popitem(last=False)
            return cache[key]
        return get
    return wrap


@_cached(maxsize=2)
def _documents(gen: Path) -> pa.Table:
    return read_documents(gen / DOCS_FILE)


@_cached(maxsize=1)
def _previous(gen: Path) -> _Previous:
    return _Previous(gen)


class _Previous:
    """The chunk rows of a complete generation's documents, by (id, content hash)."""

    def __init__(self, gen: Path):
        import pyarrow.ipc as ipc

        docs = read_documents(gen / DOCS_FILE, ["id", "hash"])
        self.row = {d: (i, h) for i, (d, h) in enumerate(zip(docs.column("id").to_pylist(),
                                                             docs.column("hash").to_pylist()))}
        doc = ipc.open_file(pa.memory_map(str(gen / CHUNKS_LOOKUP))).get_batch(0).column("doc").to_numpy()
        self.first = np.searchsorted(doc, np.arange(docs.num_rows + 1))  # chunk rows of doc r: first[r]:first[r+1]
        self.paths = shard_paths(gen)
        self.offsets = np.cumsum([0] + [pq.read_metadata(p).num_rows for p in self.paths])
        self._shards: collections.OrderedDict = collections.OrderedDict()

    def has(self, doc: str, doc_hash: str) -> bool:
        return (entry := self.row.get(doc)) is not None and entry[1] == doc_hash

    def rows(self, doc: str) -> pa.Table:
        r = self.row[doc][0]
        lo, hi = int(self.first[r]), int(self.first[r + 1])
        s = int(np.searchsorted(self.offsets, lo, side="right")) - 1
        if s not in self._shards:  # documents mostly keep their order: a few shards at a time
            self._shards[s] = pq.read_table(self.paths[s]).replace_schema_metadata(None)
            if len(self._shards) > 4:
                self._shards.popitem(last=False)
        return self._shards[s].slice(lo - int(self.offsets[s]), hi - lo)


@dataclasses.dataclass(frozen=True)
class ShardJob:
    """Embedding the shards of one staged generation (picklable: worker processes get it).

    Shard ``s`` holds the chunk rows of documents ``[s*S, (s+1)*S)``: those of documents the
    ``previous`` generation holds with the same content are copied from it, the others come from
    the encoder (:meth:`fresh` says which, :meth:`write` puts the shard together)."""

    gen: Path
    run_fp: str
    chunk: ChunkConfig
    previous: Path | None = None  # a complete generation made by the same encoder and windows

    def pending(self, shards: Iterable[int]) -> list[int]:
        return [s for s in shards if not shard_is_done(shard_path(self.gen, s), self.run_fp)]

    def documents(self, s: int) -> pa.Table:
        return _documents(self.gen).slice(s * self.chunk.docs_per_shard, self.chunk.docs_per_shard)

    def fresh(self, s: int) -> pa.Table:
        """The documents of shard ``s`` that need the encoder (id, title, text)."""
        docs = self.documents(s)
        if self.previous is not None:
            prev = _previous(self.previous)
            keep = [i for i, (d, h) in enumerate(zip(docs.column("id").to_pylist(), docs.column("hash").to_pylist()))
                    if not prev.has(d, h)]
            docs = docs.take(pa.array(keep, pa.int64()))
        return docs.select(["id", "title", "text"])

    def embed(self, encoder: Callable[[], Any], shards: list[int], progress=None) -> Iterator[tuple[int, int, int]]:
        """Embed and write ``shards``, yielding (shard, documents embedded, documents reused) as
        each is written; ``encoder()`` gives the encoder, called only when a document needs it.
        Consecutive shards are encoded together, up to :data:`ENCODE_GROUP_DOCS` fresh documents
        at a time, so that the encoder sorts enough texts by length to fill its batches (one small
        shard at a time pads more and leaves a part-full batch per shard)."""
        group: list[tuple[int, pa.Table]] = []
        n_fresh = 0
        for i, s in enumerate(shards):
            group.append((s, self.fresh(s)))
            n_fresh += group[-1][1].num_rows
            if i + 1 < len(shards) and n_fresh < ENCODE_GROUP_DOCS:
                continue
            fresh = pa.concat_tables([t for _, t in group])
            embedded = embed_chunks(encoder(), fresh, self.chunk, progress=progress) if n_fresh else None
            for s_, rows in _split_rows(embedded, group):
                yield (s_, *self.write(s_, rows))
            group, n_fresh = [], 0

    def write(self, s: int, embedded: pa.Table | None) -> tuple[int, int]:
        """Write shard ``s`` from ``embedded`` (the chunk rows of :meth:`fresh`) and the previous
        vectors of its other documents. Returns (documents embedded, documents reused)."""
        docs = self.documents(s)
        n_fresh = 0 if embedded is None else len(set(embedded.column("id").to_pylist()))
        if n_fresh == docs.num_rows:
            table = embedded
        else:
            prev, parts, start = _previous(self.previous), {}, 0
            ids = [] if embedded is None else embedded.column("id").to_pylist()
            for end in range(1, len(ids) + 1):  # a document's rows are contiguous
                if end == len(ids) or ids[end] != ids[start]:
                    parts[ids[start]] = embedded.slice(start, end - start)
                    start = end
            tables = [parts[d] if d in parts else prev.rows(d) for d in docs.column("id").to_pylist()]
            schema = shard_schema(tables[0].schema.field("vector").type.list_size)
            table = pa.concat_tables([t.select(schema.names).cast(schema) for t in tables])
        write_shard(table, shard_path(self.gen, s), self.run_fp)
        return n_fresh, docs.num_rows - n_fresh


def _split_rows(embedded: pa.Table | None, group: list[tuple[int, pa.Table]]):
    """(shard, its chunk rows or None) for each shard of ``group``, cut from ``embedded``: the chunk
    rows of the group's fresh documents in order, each document's rows contiguous and non-empty."""
    ids = [] if embedded is None else embedded.column("id").to_pylist()
    start = 0
    for s, fresh in group:
        end, docs = start, 0
        while docs < fresh.num_rows:
            end += 1
            docs += end == len(ids) or ids[end] != ids[end - 1]
        yield s, (embedded.slice(start, end - start) if end > start else None)
        start = end


class Engine(Protocol):
    """How a build embeds its pending shards; everything else is the pipeline's."""

    def embed(self, job: ShardJob, shards: list[int], show_progress: bool) -> dict[str, int]:
        """Write ``shards`` of ``job``; returns counts (e.g. ``tokens``)."""

    def describe(self) -> dict[str, Any]:
        """What the manifest records under ``engine``."""


class InProcess:
    """Embed in this process with one encoder; ``load`` gives it when a shard first needs one
    (an update that only removes documents never loads a model)."""

    def __init__(self, encoder=None, load: Callable[[], Any] | None = None):
        self.encoder, self.load = encoder, load

    def embed(self, job: ShardJob, shards: list[int], show_progress: bool) -> dict[str, int]:
        before = self.encoder.stats.tokens if self.encoder is not None else 0
        with EmbedProgress(sum(job.documents(s).num_rows for s in shards), show_progress) as bar:
            for _, n_fresh, n_reused in job.embed(self._encoder, shards, progress=bar.advance):
                bar.advance(n_fresh + n_reused, 0)
        return {"tokens": self.encoder.stats.tokens - before if self.encoder is not None else 0}

    def _encoder(self):
        if self.encoder is None:
            self.encoder = self.load()
        return self.encoder

    def describe(self) -> dict[str, Any]:
        devices = [str(self.encoder.device)] if self.encoder is not None else []
        return {"engine": "local", "devices": devices, "workers": 1, "ray_address": None}


# -- the pipeline ------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Plan:
    """What a build or an update makes: the documents it stages (``write_docs(path)`` writes the
    table) and what the run fingerprint and the finish need."""

    name: str
    corpus: CorpusInfo
    encoder: dict | None  # the encoder's record for the manifest; None: BM25 only
    chunk: ChunkConfig | None
    write_docs: Callable[[Path], Any]
    index_type: str | None = None
    memory_budget: int | None = None
    bm25: bool = True
    updates: tuple = ()
    on_disk: bool = False  # FAISS as an on-disk IVF (ondisk.py): the lists are memory-mapped
    vectors: str = "float"  # float | int8 | binary codes in FAISS (vectors.py)
    rescore_multiplier: int | None = None  # int8/binary: candidates rescored per result (None: float)

    @property
    def run_fp(self) -> str:
        return run_fingerprint(self.corpus.fingerprint, self.encoder and self.encoder["fingerprint"],
                               self.chunk and dataclasses.asdict(self.chunk))

    def accepts(self, m: IndexManifest) -> bool:
        """Whether generation ``m`` already is what this plan makes."""
        return (m.fingerprint == self.run_fp and (m.bm25 or not self.bm25)
                and (self.index_type is None or (m.faiss is not None and m.faiss.factory == self.index_type))
                and (m.faiss is None or (m.faiss.on_disk == self.on_disk and m.faiss.vector_type == self.vectors
                                         and m.faiss.rescore_multiplier == self.rescore_multiplier)))

    def reuses(self, m: IndexManifest | None) -> bool:
        """Whether generation ``m`` holds vectors this plan's encoder and windows would make."""
        return (m is not None and m.dense and self.encoder is not None and self.chunk is not None
                and m.encoder["fingerprint"] == self.encoder["fingerprint"]
                and ChunkConfig(**m.chunking).windows() == self.chunk.windows())


def run_pipeline(store: IndexStore, make_plan: Callable[[IndexManifest | None], Plan], engine: Engine, *,
                 part: tuple[int, int] = (0, 1), wait: bool = True, show_progress: bool = True,
                 t0: float | None = None) -> Path:
    """Stage, embed, finish and publish what ``make_plan(current manifest)`` asks for; returns the
    generation's folder (the staged one for a ``part`` run, which only embeds its shards).

    Nothing is locked or written when the current generation already is what the plan makes.
    Otherwise the writer lock is taken (``wait=False``: fail at once when another writer has it),
    the plan made again from what is current then, and a generation staged (or an interrupted
    one of the same run resumed); a part run holds that generation and drops the lock to embed.
    """
    t0 = time.perf_counter() if t0 is None else t0
    whole = part == (0, 1)
    if whole:
        done = store.finished(make_plan(store.manifest()).accepts)
        if done is not None and done == store.current():
            return done  # complete: no lock taken, nothing written
    lock, holds = store.lock(wait), []
    try:
        current = store.manifest()
        plan = make_plan(current)  # again, under the lock: another writer may have published meanwhile
        if (done := store.finished(plan.accepts)) is not None:  # nothing to embed (a part run too)
            if whole and done != store.current():
                store.publish(done)  # finished by a writer killed before it published
            return done
        gen, _ = store.stage(plan.run_fp, plan.write_docs)
        previous = store.current() if plan.reuses(current) else None
        timings: dict[str, Any] = {"read_seconds": round(time.perf_counter() - t0, 2)}
        engine_record = None
        if not whole:  # keep both generations while the other writers may publish
            holds = [hold(gen), *([hold(previous)] if previous else [])]
            lock.release()
        if plan.encoder is not None:
            job = ShardJob(gen, plan.run_fp, plan.chunk, previous)
            engine_record = _embed(job, plan, engine, part, timings, show_progress)
        if whole:
            _finish(store, gen, plan, timings, engine_record, t0)
        return gen
    finally:
        lock.release()
        for h in holds:
            if h is not None:
                h.release()


def _embed(job: ShardJob, plan: Plan, engine: Engine, part: tuple[int, int], timings: dict,
           show_progress: bool) -> dict[str, Any]:
    """Embed the pending shards of this part with ``engine``; returns the manifest's engine record."""
    n_shards = shard_count(plan.corpus.documents, plan.chunk.docs_per_shard)
    todo = [s for s in range(n_shards) if s % part[1] == part[0]]
    pending = job.pending(todo)
    t1 = time.perf_counter()
    counts = engine.embed(job, pending, show_progress) if pending else {}
    seconds = round(time.perf_counter() - t1, 2)
    timings.update(shards=n_shards, embedded_shards=len(pending), reused_shards=len(todo) - len(pending),
                   seconds=seconds, tokens=counts.get("tokens", 0))
    if part == (0, 1) and (missing := job.pending(range(n_shards))):
        raise IndexStateError(f"index {plan.name!r}: {len(missing)} shard(s) were not written; rerun")
    return {**engine.describe(), "embedded_shards": len(pending), "shards": n_shards, "embed_seconds": seconds}


def _finish(store: IndexStore, gen: Path, plan: Plan, timings: dict, engine: dict | None, t0: float) -> None:
    """FAISS, lookup tables and BM25 from the shards and documents, the manifest last, then publish."""
    import faiss

    info = None
    if plan.encoder is not None:
        t1 = time.perf_counter()
        if plan.vectors != "float":
            from .vectors import build_codes

            info = build_codes(gen, plan.vectors, plan.index_type, plan.rescore_multiplier, on_disk=plan.on_disk)
        elif plan.on_disk:
            info = build_faiss_ondisk(gen, plan.index_type)
        else:
            index, factory = build_faiss(gen, plan.index_type, plan.memory_budget)
            with atomic(gen / FAISS_FILE) as tmp:
                faiss.write_index(index, str(tmp))
            info = FaissInfo(factory, int(index.ntotal))
            del index
        timings["faiss_seconds"] = round(time.perf_counter() - t1, 2)
    chunks = write_lookups(gen)
    if chunks != (info.vectors if info else 0):
        raise IndexStateError(f"{gen}: {chunks} chunk rows for {info.vectors if info else 0} vectors")
    if plan.bm25:
        t2 = time.perf_counter()
        _build_bm25(gen)
        timings["bm25_seconds"] = round(time.perf_counter() - t2, 2)
    IndexManifest(name=plan.name, corpus=plan.corpus, encoder=plan.encoder,
                  chunking=plan.chunk and dataclasses.asdict(plan.chunk), fingerprint=plan.run_fp, faiss=info,
                  bm25=plan.bm25, engine=engine, updates=plan.updates,
                  timings={**timings, "total_seconds": round(time.perf_counter() - t0, 2)},
                  library_versions=library_versions(),
                  created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())).write(gen)
    store.publish(gen)


def _build_bm25(gen: Path) -> None:
    from .bm25 import BM25Index

    docs = read_documents(gen / DOCS_FILE, ["id", "title", "text"]).to_pylist()
    with atomic(gen / BM25_DIR) as tmp:
        BM25Index.build([d["id"] for d in docs], [Record(d["id"], d["title"], d["text"]).content for d in docs]
                        ).save(tmp)


# -- building from a corpus --------------------------------------------------------------------
def encoder_record(encoder, model: str) -> dict[str, Any]:
    """How the manifest records an encoder: the spec that reloads it, its fingerprint and identity."""
    spec = str(model)
    if encoder.source is not None:
        spec = encoder.source.spec
        spec = str(Path(spec).resolve()) if Path(spec).exists() else spec
    return {"spec": spec, "fingerprint": encoder.fingerprint, **encoder.identity()}


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
    engine: Engine | None = None,
    wait: bool = True,
    show_progress: bool = True,
    on_disk: bool = False,
    vectors: str = "float",
    rescore_multiplier: int | None = None,
) -> Path:
    """Index ``corpus`` as ``<index_dir>/<name>`` and publish it; returns the generation's folder.

    When the current generation already holds this corpus with this encoder and options, nothing
    is written; otherwise a new generation reuses the vectors of its unchanged documents. With
    ``part=(I, N)``, only embed shards ``i % N == I`` and return the staged generation (run N
    such processes, then one without ``part`` to finish and publish the index). ``engine``
    embeds the shards (default: this process, with ``encoder``); ``wait=False`` fails at once
    when another writer holds the index. ``vectors`` int8 or binary stores those codes in FAISS
    and rescores each query's top k x ``rescore_multiplier`` with the float vectors (vectors.py).
    """
    from .vectors import check_build, empty_index

    t0 = time.perf_counter()
    if not dense and (vectors != "float" or rescore_multiplier is not None):
        raise UsageError("a BM25-only index holds no vectors: --vectors and --rescore-multiplier do not apply")
    index_type, rescore_multiplier = check_build(vectors, index_type, rescore_multiplier,
                                                 memory_budget=memory_budget, on_disk=on_disk)
    if on_disk:  # ``on_disk``: FAISS is an IVF whose lists stay on disk (see ondisk.py)
        if not dense:
            raise UsageError("an on-disk index holds vectors: it cannot be BM25-only")
        check_ondisk_type(index_type)
    corpus = Path(corpus)
    name = check_name(name) if name is not None else safe_name(corpus.name if corpus.is_dir() else corpus.stem)
    store = IndexStore(index_home(index_dir), name)
    stats = ReadStats()
    # Read the corpus through once for its fingerprint: if the index already holds it, that is all.
    n_docs, corpus_fp = write_documents(read_corpus(corpus, fields, skip_invalid=skip_invalid, stats=stats), None)
    if dense and encoder is None:
        from .encoder import load_encoder

        encoder = load_encoder(model, **(encoder_overrides or {}))
    if dense and index_type:
        empty_index(vectors, index_type, encoder.dim)  # a bad factory string fails before anything is written

    def write_docs(out: Path) -> None:
        if write_documents(read_corpus(corpus, fields, skip_invalid=skip_invalid), out) != (n_docs, corpus_fp):
            raise L2VError(f"{corpus} changed while it was being indexed; rerun")

    plan = Plan(name, CorpusInfo(str(corpus.resolve()), corpus_fp, n_docs, stats.empty, stats.invalid),
                encoder_record(encoder, model) if dense else None, chunk if dense else None, write_docs,
                index_type if dense else None, memory_budget, bm25 or not dense, on_disk=on_disk, vectors=vectors,
                rescore_multiplier=rescore_multiplier)
    return run_pipeline(store, lambda current: plan, engine or InProcess(encoder), part=part, wait=wait,
                        show_progress=show_progress, t0=t0)
