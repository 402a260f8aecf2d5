"""Query an index: dense (FAISS), BM25, or hybrid (the two fused), chunks folded into documents.

    query ─ encoder.encode_queries ─ FAISS top-(k·m) chunks ─ best chunk per document ─┐
          └──────────────────────── BM25 top-k' ─────────────────────────────────────── fuse ─ top-k Hits

The default mode is hybrid where the index has both sides (:func:`SearchIndex.default_mode`). An
index of int8 or binary codes gets its top chunks from :class:`vectors.Rescorer` (the codes' top
k·M, rescored with the float vectors) instead of FAISS alone.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import IndexStateError, UsageError
from .fusion import DEFAULT_FUSION, Fusion, fuse
from .names import resolve_index_name
from .protocols import TextEncoder
from .store import (
    BM25_DIR,
    FAISS_FILE,
    IndexManifest,
    IndexStore,
    Lookups,
    Opened,
    index_home,
)

log = logging.getLogger(__name__)
MODES = ("dense", "bm25", "hybrid")
HYBRID_DEPTH = 100  # hits taken from each side before fusing (k where k is larger)


@dataclasses.dataclass(frozen=True)
class Hit:
    id: str
    score: float
    title: str
    text: str  # the best-matching chunk of the document (the whole text when chunk is None)
    chunk: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "score": self.score, "title": self.title, "text": self.text}


class SearchIndex:
    """An opened generation of an index (build one with :func:`llm2vec_search.index.build_index`).

    Documents and chunks are looked up by row in the generation's memory-mapped Arrow tables;
    only FAISS is read into memory. The generation is held until :meth:`close` (or until this
    object is collected): a writer publishing a newer one leaves it in place, and
    :meth:`is_current` says whether a newer one is out.
    """

    def __init__(self, store: IndexStore, opened: Opened, vectors: bool = True):
        self.store, self._hold = store, opened.hold
        self.folder, self.manifest, self.name = opened.path, opened.manifest, opened.manifest.name
        self.dense = self.manifest.dense
        self._faiss = self._rescorer = None
        try:
            self.lookups = Lookups(self.folder)
        except Exception as e:  # pyarrow raises many types for damaged files
            raise IndexStateError(f"index {self.name!r} is corrupt: {type(e).__name__}: {str(e)[:200]}") from None
        if self.dense and vectors:
            self._faiss = self._read_faiss()
        n_vectors = (self.faiss.ntotal if vectors else self.manifest.faiss.vectors) if self.dense else 0
        if self.lookups.chunks != n_vectors or self.lookups.documents != self.manifest.corpus.documents:
            raise IndexStateError(f"index {self.name!r} is inconsistent: {n_vectors} vectors for "
                                  f"{self.lookups.chunks} chunks, {self.lookups.documents} documents for "
                                  f"{self.manifest.corpus.documents} in the manifest; rebuild it")
        self.chunked = self.lookups.chunks > self.lookups.documents  # long documents were split
        self._bm25 = None
        self._encoder = None

    @classmethod
    def open(cls, name: str | None = None, index_dir: str | Path | None = None, *,
             vectors: bool = True) -> SearchIndex:
        """The published generation of index ``name`` (the only index, for None). With ``vectors``
        False, FAISS (and the faiss library) is read at the first dense search, not here: a BM25
        query does not wait for it."""
        home = index_home(index_dir)
        store = IndexStore(home, resolve_index_name(name, home))
        return cls(store, store.open(), vectors)

    @property
    def faiss(self):
        """The FAISS index of the vectors (read on first use when opened without ``vectors``)."""
        if self._faiss is None and self.dense:
            self._faiss = self._read_faiss()
        return self._faiss

    def _read_faiss(self):
        info = self.manifest.faiss
        try:
            if info.on_disk:
                from .ondisk import ONDISK_DIR, open_ondisk

                index = open_ondisk(self.folder / ONDISK_DIR)  # lists memory-mapped, not read
            else:
                from .vectors import read_index

                index = read_index(self.folder / FAISS_FILE, info)  # float, int8 or binary codes
            if info.vector_type != "float":
                from .vectors import Rescorer

                self._rescorer = Rescorer(self.folder, info, index)  # maps vectors.npy
            return index
        except Exception as e:  # faiss raises many types for damaged files
            raise IndexStateError(f"index {self.name!r} is corrupt: {type(e).__name__}: {str(e)[:200]}") from None

    def is_current(self) -> bool:
        """False once a writer has published a newer generation of this index."""
        try:
            return self.store.current() == self.folder
        except IndexStateError:
            return True

    def close(self) -> None:
        """Let writers remove this generation once it is no longer the current one."""
        self._hold.release()

    @property
    def size(self) -> int:
        return self.lookups.documents

    @property
    def encoder_spec(self) -> str:
        if not self.dense:
            raise UsageError(f"index {self.name!r} is BM25-only: use --mode bm25")
        return self.manifest.encoder["spec"]

    @property
    def encoder_fingerprint(self) -> str:
        return self.manifest.encoder["fingerprint"]

    def load_encoder(self, note: Callable[[str], None] | None = None, **overrides) -> TextEncoder:
        """The encoder recorded in the manifest (loaded once), checked against the index."""
        if self._encoder is None:
            self._encoder = load_index_encoder(self.manifest, note, **overrides)
        return self._encoder

    def check_encoder(self, encoder: TextEncoder) -> None:
        self.manifest.check(encoder)

    @property
    def has_bm25(self) -> bool:
        return self.manifest.bm25 and (self.folder / BM25_DIR).is_dir()

    @property
    def default_mode(self) -> str:
        """hybrid where the index has vectors and BM25, else the one side it has."""
        if self.dense:
            return "hybrid" if self.has_bm25 else "dense"
        return "bm25"

    def resolve_mode(self, mode: str | None) -> str:
        """``mode``, or the index's default for None."""
        return self.default_mode if mode is None else mode

    def bm25(self):
        if self._bm25 is None:
            from .bm25 import BM25Index

            if not (self.folder / BM25_DIR).is_dir():
                raise IndexStateError(f"index {self.name!r} has no BM25 index (built with --no-bm25)")
            self._bm25 = BM25Index.load(self.folder / BM25_DIR, ids=False)  # results are rows
        return self._bm25

    # -- search --------------------------------------------------------------------------------
    def search(self, queries: Sequence[str], k: int = 10, *, encoder: TextEncoder | None = None,
               instruction: str | None = None, mode: str | None = None, fusion: Fusion | None = None,
               nprobe: int | None = None, ef_search: int | None = None, vectors: str | None = None,
               rescore_multiplier: int | None = None) -> list[list[Hit]]:
        """Top-``k`` hits per query; ``mode`` None is the index's :attr:`default_mode`. ``vectors``
        (float | int8 | binary) must be the index's vector type when given; ``rescore_multiplier``
        overrides the one recorded in an int8 or binary index."""
        mode = self.resolve_mode(mode)
        _check(queries, k, mode)
        self.check_vectors(vectors, rescore_multiplier)
        xq = None
        if mode != "bm25":
            encoder = encoder or self.load_encoder()
            xq = encoder.encode_queries(list(queries), instruction)
        return self.search_embedded(xq, queries, k, mode=mode, fusion=fusion, nprobe=nprobe, ef_search=ef_search,
                                    vectors=vectors, rescore_multiplier=rescore_multiplier)

    def check_vectors(self, vectors: str | None = None, rescore_multiplier: int | None = None) -> None:
        """Refuse a vector type other than the index's, or a rescore multiplier it cannot use."""
        if vectors is not None or rescore_multiplier is not None:
            from .vectors import check_query

            check_query(self.manifest.faiss, self.name, vectors, rescore_multiplier)

    def search_embedded(self, xq: np.ndarray | None, queries: Sequence[str], k: int = 10, *,
                        mode: str | None = None, fusion: Fusion | None = None, nprobe: int | None = None,
                        ef_search: int | None = None, vectors: str | None = None,
                        rescore_multiplier: int | None = None) -> list[list[Hit]]:
        """Search with query vectors already computed (``None`` for BM25), e.g. by a micro-batcher."""
        mode = self.resolve_mode(mode)
        _check(queries, k, mode)
        self.check_vectors(vectors, rescore_multiplier)
        if mode != "bm25" and not self.dense:
            raise UsageError(f"index {self.name!r} is BM25-only: use --mode bm25")
        k = min(k, self.size)
        depth = max(k, HYBRID_DEPTH) if mode == "hybrid" else k
        dense = self._dense(xq, depth, nprobe, ef_search, rescore_multiplier) if mode != "bm25" else None
        sparse = self._sparse(queries, depth) if mode != "dense" else None
        out = []
        for qi in range(len(queries)):
            if mode == "dense":
                ranked = dense[qi][:k]
            elif mode == "bm25":
                ranked = [(doc, score, None) for doc, score in sparse[qi][:k]]
            else:
                ranked = fuse(dense[qi], [(d, s, None) for d, s in sparse[qi]], fusion or DEFAULT_FUSION)[:k]
            out.append([self._hit(doc, score, chunk) for doc, score, chunk in ranked])
        return out

    @property
    def tunable(self) -> frozenset[str]:
        """The search-time knobs this index's FAISS type takes: nprobe (IVF), ef_search (HNSW)."""
        return frozenset(k for k in ("nprobe", "ef_search") if self.dense and _knob(self.faiss, k) is not None)

    def _dense(self, xq: np.ndarray, k: int, nprobe, ef_search, rescore_multiplier=None
               ) -> list[list[tuple[int, float, int]]]:
        """(document row, score, chunk row) of the best chunk of each of the top-k documents."""
        params = search_params(self.faiss, nprobe, ef_search, self.manifest.faiss.factory)
        # Several chunks of one document may rank high: fetch more chunks than documents wanted.
        fetch = min(self.faiss.ntotal, k * 4 if self.chunked else k)
        xq = np.ascontiguousarray(xq, dtype=np.float32)
        if self._rescorer is not None:  # int8/binary codes: k·M candidates rescored with float vectors
            D, I = self._rescorer.search(xq, fetch, rescore_multiplier, params)
        else:
            D, I = self.faiss.search(xq, fetch, params=params)  # (nq, fetch)
        results = []
        for scores, rows in zip(D.tolist(), I.tolist()):
            best: dict[int, tuple[float, int]] = {}
            for score, row in zip(scores, rows):
                if row >= 0 and (doc := int(self.lookups.doc[row])) not in best:
                    best[doc] = (score, row)
            results.append([(doc, s, row) for doc, (s, row) in best.items()][:k])
        return results

    def _sparse(self, queries: Sequence[str], k: int) -> list[list[tuple[int, float]]]:
        return self.bm25().search_rows(list(queries), k)

    def _hit(self, doc: int, score: float, chunk_row: int | None) -> Hit:
        doc_id, title, text = self.lookups.document(doc)
        chunk = None
        if chunk_row is not None:
            chunk = int(self.lookups.chunk[chunk_row])
            if self.chunked:  # show the matching window
                content = f"{title} {text}".strip() if title else text
                text = content[int(self.lookups.start[chunk_row]) : int(self.lookups.end[chunk_row])]
        return Hit(doc_id, float(score), title, text, chunk)


def _knob(index, knob: str):
    """The FAISS index inside ``index`` that takes ``knob`` (IVF for nprobe, HNSW for ef_search), or None."""
    import faiss

    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexPreTransform) else index
    kind = (faiss.IndexIVF, faiss.IndexBinaryIVF) if knob == "nprobe" else (faiss.IndexHNSW, faiss.IndexBinaryHNSW)
    return inner if isinstance(inner, kind) else None


def search_params(index, nprobe: int | None, ef_search: int | None, factory: str = "this"):
    """Per-call FAISS search parameters: nothing shared is changed, so concurrent searches with
    different values are safe (setting ``index.nprobe`` would leak into the next search)."""
    import faiss

    if nprobe is None and ef_search is None:
        return None
    params = None
    for knob, value in (("nprobe", nprobe), ("ef_search", ef_search)):
        if value is None:
            continue
        if value < 1:
            raise UsageError(f"{knob} must be positive, got {value}")
        if _knob(index, knob) is None:
            kind = "IVF" if knob == "nprobe" else "HNSW"
            raise UsageError(f"{knob} applies to {kind} indexes; the index is {factory}")
        if knob == "nprobe":
            params = faiss.SearchParametersIVF()
            params.nprobe = value
        else:
            params = faiss.SearchParametersHNSW()
            params.efSearch = value
    if isinstance(index, faiss.IndexPreTransform):
        params = faiss.SearchParametersPreTransform(index_params=params)
    return params


def _check(queries: Sequence[str], k: int, mode: str) -> None:
    if mode not in MODES:
        raise UsageError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    if k <= 0:
        raise UsageError(f"k must be positive, got {k}")
    if isinstance(queries, str):
        raise UsageError("queries must be a list of strings")
    if any(not q.strip() for q in queries):
        raise UsageError("empty query")


def load_index_encoder(manifest: IndexManifest, note: Callable[[str], None] | None = None,
                       **overrides) -> TextEncoder:
    """Load the encoder an index manifest records, with its settings, and check it is the same.

    The dtype follows the index: an index built with int8 gets the int8 encoder (from its cache,
    without torch), any other the float one (``auto``). A ``dtype`` override of the other kind
    (float on an int8 index, int8 on a float one) is allowed, since both come from the same
    weights, and reported through ``note`` (default: a logged warning)."""
    recorded = manifest.encoder
    settings = {k: recorded[k] for k in ("pooling", "max_length", "causal", "normalize", "query_instruction",
                                         "document_instruction") if k in recorded}
    asked = overrides.pop("dtype", None)
    built_int8 = recorded.get("dtype") == "int8"
    use_int8 = asked == "int8" or (asked in (None, "auto") and built_int8)
    enc = None
    if use_int8 and built_int8:
        from .encoding import EncoderConfig
        from .int8 import open_int8

        config = EncoderConfig(**{**settings, **{k: v for k, v in overrides.items() if v is not None}, "dtype": "int8"})
        if config.device in ("auto", "cpu"):
            enc = open_int8(recorded, config)  # torch-free when the int8 model is cached
    if enc is None:
        from .encoder import load_encoder

        enc = load_encoder(recorded["spec"], **{**settings, **overrides, "dtype": "int8" if use_int8 else asked})
    if use_int8 == built_int8:
        manifest.check(enc)
        return enc
    found = enc.identity()["dtype"]
    if getattr(enc, "float_fingerprint", enc.fingerprint) != recorded.get("float_fingerprint", recorded["fingerprint"]):
        manifest.check(enc)  # a different encoder altogether: the usual error, naming what differs
    line = (f"note: index {manifest.name!r} was built with {recorded.get('dtype')} vectors; "
            f"these queries are encoded in {found} (--dtype)")
    (note or log.warning)(line)
    return enc
