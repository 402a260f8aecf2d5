"""Quantized vectors with rescoring: FAISS holds int8 (scalar) or binary (sign) codes, and the
float vectors stay on disk, memory-mapped, for rescoring the candidates.

    build   shards ─┬─ codes ───────────── index.faiss   (read into memory: the index's RAM)
                    └─ float vectors ───── vectors.npy   (row i = FAISS id i; mapped, never read whole)
    search  xq ─ codes of xq ─ FAISS top k·M ─ exact inner product with the float rows of those
            candidates (only their pages are read) ─ top k, in that order, with those scores

Vector types (``l2v-search index --vectors``):

    float   the vectors themselves, 4·d bytes each; any FAISS factory; nothing to rescore
    int8    FAISS's 8-bit scalar quantizer (per-dimension ranges trained on a sample), d bytes each:
            ``SQ8`` (exact scan), ``IVF<n>,SQ8`` (also ``--on-disk``) or ``HNSW<M>,SQ8``
    binary  one bit per dimension, d/8 bytes each, compared by Hamming distance: ``BFlat``
            (``IndexBinaryFlat``), ``BIVF<n>`` or ``BHNSW<M>``. A document's bit is the sign of
            (x - the documents' mean), a query's the sign of x.

Why documents are centred and queries not: an encoder's document vectors share one dominant
direction (doc-doc cosine 0.46-0.58 with the default encoder, benchmarks/README.md), so plain signs
spend bits that are the same for most documents; centred, each bit splits the corpus. The Hamming
distance between sign(q) and sign(d - m) follows the angle between q and d - m, which for one query
ranks as q·d - q·m (q·m is the same for every document): the float ranking, up to the norm of
d - m. Centring the query too would rank by (q - m)·(d - m), another similarity. On the tests'
tiny encoder (100 documents, 30 queries, 40 candidates) the float top 10 was found in the
candidates 98.7% of the time this way, 97.7% with plain signs and 96.7% with both centred.

``rescore_multiplier`` M (recorded in the manifest, default 4, overridable per query): the codes'
top k·M are rescored; M = 0 returns the codes' own order and scores (int8: approximate inner
products; binary: 1 - 2·hamming/d, the cosine of the two ±1 sign vectors).
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import numpy as np

from .errors import IndexStateError, UsageError
from .manifest import atomic
from .store import FAISS_FILE, VECTORS_FILE, FaissInfo, iter_shards, shard_paths, shard_vectors

VECTOR_TYPES = ("float", "int8", "binary")
DEFAULT_RESCORE = 4  # candidates rescored per result wanted
BINARY_FLAT_LIMIT = 1_000_000  # exact Hamming scan below this many vectors (72 MB of 576-bit codes)
BINARY_NPROBE = 16  # lists a binary IVF visits by default (FAISS's own default is 1)
_STRUCTURE = re.compile(r"(B?)(?:(Flat|SQ8)|(IVF\d+|HNSW\d+)(?:,(Flat|SQ8))?)")


# -- checking options --------------------------------------------------------------------------
def check_type(vector_type: str) -> str:
    if vector_type not in VECTOR_TYPES:
        raise UsageError(f"unknown vector type {vector_type!r}; valid: {', '.join(VECTOR_TYPES)}")
    return vector_type


def check_multiplier(m: int) -> int:
    if not isinstance(m, int) or isinstance(m, bool) or m < 0:
        raise UsageError(f"--rescore-multiplier must be a whole number >= 0 (0: no rescoring), got {m!r}")
    return m


def check_build(vector_type: str, index_type: str | None, rescore_multiplier: int | None, *,
                memory_budget: int | None = None, on_disk: bool = False) -> tuple[str | None, int | None]:
    """A build's codes factory (None: chosen by corpus size when built) and rescore multiplier
    (None for float), or a UsageError naming the combination that cannot be built."""
    check_type(vector_type)
    if vector_type == "float":
        if rescore_multiplier is not None:
            raise UsageError("--rescore-multiplier applies to --vectors int8 or binary (float is not rescored)")
        return index_type, None
    m = check_multiplier(DEFAULT_RESCORE if rescore_multiplier is None else rescore_multiplier)
    if memory_budget is not None:
        raise UsageError(f"--memory-budget picks float codes itself (IVF with SQ8 or PQ): leave it out with "
                         f"--vectors {vector_type}")
    if on_disk and vector_type == "binary":
        raise UsageError("--on-disk builds a float IVF and cannot hold --vectors binary: use --vectors int8 "
                         "or leave out --on-disk")
    return codes_factory(vector_type, index_type, on_disk), m


def codes_factory(vector_type: str, index_type: str | None, on_disk: bool = False) -> str | None:
    """``--index-type`` as the factory string of ``vector_type``'s codes: the structure (Flat, IVF,
    HNSW) is kept and the codes replace the codec (``IVF64`` -> ``IVF64,SQ8`` or ``BIVF64``)."""
    if index_type is None:
        return None
    m = _STRUCTURE.fullmatch(index_type.replace(" ", ""))
    if m and vector_type == "int8" and not m[1]:
        factory = "SQ8" if m[2] else f"{m[3]},SQ8"
    elif m and vector_type == "binary" and "SQ8" not in (m[2], m[4]):
        factory = "BFlat" if m[2] else f"B{m[3]}"
    else:
        raise UsageError(f"--vectors {vector_type} brings its own codes: --index-type takes Flat, IVF<nlist> or "
                         f"HNSW<M> with it (e.g. IVF1024), not {index_type!r}")
    if on_disk and not factory.startswith("IVF"):
        raise UsageError(f"an on-disk index is an IVF: --index-type IVF<nlist> (e.g. IVF1024), not {index_type!r}")
    return factory


def default_factory(vector_type: str, n: int, on_disk: bool = False) -> str:
    """The codes' factory by corpus size, as ``index.default_factory`` chooses for float."""
    from .index import FLAT_LIMIT
    from .ondisk import default_nlist

    if vector_type == "int8":
        if on_disk:
            return f"IVF{default_nlist(n)},SQ8"
        return "SQ8" if n < FLAT_LIMIT else "HNSW32,SQ8"
    return "BFlat" if n < BINARY_FLAT_LIMIT else f"BIVF{default_nlist(n)}"


def empty_index(vector_type: str, factory: str, dim: int):
    """The empty FAISS index of ``factory`` for ``dim``-d vectors (a UsageError for a bad string)."""
    import faiss

    if vector_type != "binary":
        from .index import _faiss_index

        return _faiss_index(dim, factory)
    try:
        return faiss.index_binary_factory(code_bits(dim), factory)
    except RuntimeError as e:
        raise UsageError(f"invalid FAISS factory string {factory!r}: {str(e).splitlines()[0][:200]}") from None


def check_query(info: FaissInfo | None, name: str, vector_type: str | None = None,
                rescore_multiplier: int | None = None) -> None:
    """Refuse a query that asks for another vector type than the index holds, or a rescore
    multiplier for an index that has nothing to rescore."""
    built = info.vector_type if info is not None else None
    if vector_type is not None and check_type(vector_type) != built:
        holds = f"{built} vectors" if built else "no vectors (BM25 only)"
        raise UsageError(f"index {name!r} holds {holds}, not {vector_type}: leave out --vectors, or rebuild it "
                         f"with `l2v-search index ... --vectors {vector_type}`")
    if rescore_multiplier is not None:
        check_multiplier(rescore_multiplier)
        if built not in ("int8", "binary"):
            raise UsageError(f"index {name!r} holds {built or 'no'} vectors: --rescore-multiplier applies to "
                             "int8 and binary indexes")


# -- codes -------------------------------------------------------------------------------------
def code_bits(dim: int) -> int:
    """Bits of a binary code: ``dim`` rounded up to whole bytes (the padding bits are always 0)."""
    return 8 * math.ceil(dim / 8)


def binarize(x: np.ndarray, center: np.ndarray | None = None) -> np.ndarray:
    """(n, d) floats -> (n, ceil(d/8)) uint8: bit j is 1 where x[:, j] > center[j] (0 when None:
    queries' codes)."""
    x = np.asarray(x, dtype=np.float32)
    return np.packbits(x > (0 if center is None else center), axis=1)


# -- building ----------------------------------------------------------------------------------
def write_float_vectors(gen: Path) -> tuple[int, int]:
    """``vectors.npy``: the shards' vectors in order, streamed one shard at a time. Returns (n, dim)."""
    import pyarrow.parquet as pq

    paths = shard_paths(gen)
    n = sum(pq.read_metadata(p).num_rows for p in paths)
    if n == 0:
        raise IndexStateError(f"{gen}: no embeddings to index")
    dim = pq.read_schema(paths[0]).field("vector").type.list_size
    with atomic(gen / VECTORS_FILE) as tmp:
        xb = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, dim))
        start = 0
        for t in iter_shards(gen, ["vector"]):
            x = shard_vectors(t)
            xb[start:start + len(x)] = x
            start += len(x)
        xb.flush()
        del xb
    return n, dim


def build_codes(gen: Path, vector_type: str, factory: str | None, rescore_multiplier: int, *,
                on_disk: bool = False, train_sample: int = 100_000, seed: int = 0) -> FaissInfo:
    """The codes index of a generation's shards (``index.faiss``, or ``ondisk/`` for an on-disk
    int8 IVF) and the float vectors rescoring reads (``vectors.npy``); returns the manifest's record."""
    import faiss

    from .index import build_faiss, build_faiss_ondisk
    from .ondisk import sample_rows

    n, dim = write_float_vectors(gen)
    factory = factory or default_factory(vector_type, n, on_disk)
    extra = {"vector_type": vector_type, "rescore_multiplier": rescore_multiplier}
    if vector_type == "int8":
        if on_disk:
            return dataclasses.replace(build_faiss_ondisk(gen, factory), **extra)
        index, _ = build_faiss(gen, factory, train_sample=train_sample, seed=seed)  # SQ8 trains its ranges
        with atomic(gen / FAISS_FILE) as tmp:
            faiss.write_index(index, str(tmp))
        return FaissInfo(factory, int(index.ntotal), **extra)
    xt = sample_rows((shard_vectors(t) for t in iter_shards(gen, ["vector"])), n, train_sample, seed)
    center = xt.mean(axis=0, dtype=np.float64).astype(np.float32)  # (d,): the documents' mean
    index = empty_index("binary", factory, dim)
    if not index.is_trained:
        index.train(binarize(xt, center))
    if isinstance(index, faiss.IndexBinaryIVF):
        index.nprobe = min(BINARY_NPROBE, index.nlist)
    del xt
    for t in iter_shards(gen, ["vector"]):
        index.add(binarize(shard_vectors(t), center))
    with atomic(gen / FAISS_FILE) as tmp:
        faiss.write_index_binary(index, str(tmp))
    return FaissInfo(factory, int(index.ntotal), metric="hamming", **extra)


def requantize(name: str, index_dir: str | Path | None, vector_type: str, rescore_multiplier: int | None = None,
               index_type: str | None = None, *, wait: bool = True, show_progress: bool = False) -> Path:
    """Publish a generation of index ``name`` with other codes over the vectors it already holds
    (nothing is embedded: every document keeps its vectors); returns its folder."""
    from .embed import ChunkConfig
    from .index import InProcess, Plan, run_pipeline
    from .search import load_index_encoder
    from .store import DOCS_FILE, IndexStore, index_home, read_documents, write_table

    store = IndexStore(index_home(index_dir), name)
    factory, multiplier = check_build(vector_type, index_type, rescore_multiplier)

    def plan(m):
        if m is None or not m.dense:
            raise IndexStateError(f"index {name!r} in {store.home} has no published vectors to requantize")
        docs = store.current() / DOCS_FILE  # under the writer lock when the pipeline writes it
        return Plan(m.name, m.corpus, m.encoder, ChunkConfig(**m.chunking),
                    lambda out: write_table(read_documents(docs), out), factory, None, m.bm25, m.updates,
                    vectors=vector_type, rescore_multiplier=multiplier)

    engine = InProcess(None, load=lambda: load_index_encoder(store.manifest()))  # loaded only if a vector is missing
    return run_pipeline(store, plan, engine, wait=wait, show_progress=show_progress)


# -- searching ---------------------------------------------------------------------------------
def read_index(path: Path, info: FaissInfo):
    import faiss

    return faiss.read_index_binary(str(path)) if info.vector_type == "binary" else faiss.read_index(str(path))


class Rescorer:
    """Search an int8 or binary index: the codes give k·M candidates, their float vectors (mapped
    from ``vectors.npy``, only the candidates' rows read) give the order."""

    def __init__(self, gen: Path, info: FaissInfo, index):
        self.vector_type, self.multiplier, self.index = info.vector_type, info.rescore_multiplier, index
        self.xb = np.load(gen / VECTORS_FILE, mmap_mode="r")  # (n, d) float32, mapped
        if self.xb.shape[0] != index.ntotal:
            raise IndexStateError(f"{gen}: {self.xb.shape[0]} float vectors for {index.ntotal} codes")

    def search(self, xq: np.ndarray, k: int, multiplier: int | None = None, params=None):
        """(D, I) of the top ``k`` (k <= the index's size) by rescored inner product; with
        multiplier 0, by the codes."""
        m = self.multiplier if multiplier is None else check_multiplier(multiplier)
        xq = np.ascontiguousarray(xq, dtype=np.float32)
        codes = binarize(xq) if self.vector_type == "binary" else xq  # queries: plain signs
        D, I = self.index.search(codes, min(self.index.ntotal, k * max(m, 1)), params=params)  # (nq, k·M)
        if m == 0:
            return (1 - 2 * D / xq.shape[1] if self.vector_type == "binary" else D), I
        return rescore(self.xb, xq, I, k)


def rescore(xb: np.ndarray, xq: np.ndarray, I: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` of each query's candidates ``I`` (nq, c) by exact inner product with their
    rows of ``xb`` (n, d), which may be memory-mapped: only the candidates' rows are read.
    Ties keep the candidates' order; missing candidates (-1) come last."""
    valid = I >= 0
    rows = np.unique(I[valid])  # sorted: the mapped file is read in order
    D = np.full(I.shape, -np.inf, dtype=np.float32)
    if rows.size:
        vecs = np.asarray(xb[rows], dtype=np.float32)  # (u, d)
        pos = np.searchsorted(rows, np.where(valid, I, rows[0]))  # (nq, c) rows of vecs
        for i in range(len(I)):
            D[i, valid[i]] = vecs[pos[i, valid[i]]] @ xq[i]
    order = np.argsort(-D, axis=1, kind="stable")[:, :k]
    D, I = np.take_along_axis(D, order, 1), np.take_along_axis(I, order, 1)
    return D, np.where(np.isfinite(D), I, -1)
