"""Query an index: dense (FAISS), BM25, or hybrid (the two fused), chunks folded into documents.

    query ─ encoder.encode_queries ─ FAISS top-(k·m) chunks ─ best chunk per document ─┐
          └──────────────────────── BM25 top-k' ─────────────────────────────────────── fuse ─ top-k Hits

The default mode is hybrid where the index has both sides (:func:`SearchIndex.default_mode`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .embed import DOCS_FILE, iter_shards, read_documents
from .errors import IndexStateError, UsageError
from .fusion import DEFAULT_FUSION, Fusion, fuse
from .index import BM25_DIR, FAISS_FILE, MANIFEST, PENDING_UPDATE, _read_manifest, index_home, list_indexes

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
    """An opened index. Build one with :func:`llm2vec_search.index.build_index`."""

    def __init__(self, folder: Path, manifest: dict[str, Any]):
        import faiss

        self.folder, self.manifest, self.name = folder, manifest, manifest["name"]
        self.dense = manifest.get("faiss") is not None
        try:
            self.faiss = faiss.read_index(str(folder / FAISS_FILE)) if self.dense else None
            docs = read_documents(folder / DOCS_FILE, ["id", "title", "text"])
            chunks = [t.select(["id", "chunk", "start", "end"]) for t in iter_shards(folder)] if self.dense else []
        except Exception as e:  # faiss/pyarrow raise many types for damaged files
            raise IndexStateError(f"index {self.name!r} is corrupt: {type(e).__name__}: {str(e)[:200]}") from None
        self.doc_ids = docs.column("id").to_pylist()
        self._docs = {i: (t, x) for i, t, x in zip(self.doc_ids, docs.column("title").to_pylist(),
                                                  docs.column("text").to_pylist())}
        self._rows = [row for t in chunks for row in zip(*(t.column(c).to_pylist() for c in t.column_names))]
        vectors = self.faiss.ntotal if self.dense else 0
        if len(self._rows) != vectors or len(self._docs) != manifest["corpus"]["documents"]:
            raise IndexStateError(f"index {self.name!r} is inconsistent: {self.faiss.ntotal} vectors for "
                                  f"{len(self._rows)} chunks, {len(self._docs)} documents for "
                                  f"{manifest['corpus']['documents']} in the manifest; rebuild it")
        self._bm25 = None
        self._encoder = None

    @classmethod
    def open(cls, name: str | None = None, index_dir: str | Path | None = None) -> SearchIndex:
        home = index_home(index_dir)
        name = resolve_index_name(name, home)
        folder = home / name
        if not folder.is_dir():
            raise IndexStateError(f"no index {name!r} in {home}")
        manifest = _read_manifest(folder)
        if manifest is None:
            if (folder / PENDING_UPDATE).exists():
                state = "unfinished (rerun the interrupted `--append` or `remove` to finish it)"
            elif (folder / DOCS_FILE).exists():
                state = "unfinished (rerun `l2v-search index` to resume)"
            else:
                state = "corrupt"
            raise IndexStateError(f"index {name!r} in {home} is {state}: {MANIFEST} is missing or invalid")
        return cls(folder, manifest)

    @property
    def size(self) -> int:
        return len(self._docs)

    @property
    def encoder_spec(self) -> str:
        if not self.dense:
            raise UsageError(f"index {self.name!r} is BM25-only: use --mode bm25")
        return self.manifest["encoder"]["spec"]

    @property
    def encoder_fingerprint(self) -> str:
        return self.manifest["encoder"]["fingerprint"]

    def load_encoder(self, **overrides):
        """The encoder recorded in the manifest (loaded once), checked against the index."""
        if self._encoder is None:
            self._encoder = load_index_encoder(self.manifest, **overrides)
        return self._encoder

    def check_encoder(self, encoder) -> None:
        check_encoder(self.manifest, encoder)

    @property
    def has_bm25(self) -> bool:
        return bool(self.manifest.get("bm25")) and (self.folder / BM25_DIR).is_dir()

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
            self._bm25 = BM25Index.load(self.folder / BM25_DIR)
        return self._bm25

    # -- search --------------------------------------------------------------------------------
    def search(self, queries: Sequence[str], k: int = 10, *, encoder=None, instruction: str | None = None,
               mode: str | None = None, fusion: Fusion | None = None, nprobe: int | None = None,
               ef_search: int | None = None) -> list[list[Hit]]:
        """Top-``k`` hits per query; ``mode`` None is the index's :attr:`default_mode`."""
        mode = self.resolve_mode(mode)
        _check(queries, k, mode)
        xq = None
        if mode != "bm25":
            encoder = encoder or self.load_encoder()
            xq = encoder.encode_queries(list(queries), instruction)
        return self.search_embedded(xq, queries, k, mode=mode, fusion=fusion, nprobe=nprobe, ef_search=ef_search)

    def search_embedded(self, xq: np.ndarray | None, queries: Sequence[str], k: int = 10, *,
                        mode: str | None = None, fusion: Fusion | None = None, nprobe: int | None = None,
                        ef_search: int | None = None) -> list[list[Hit]]:
        """Search with query vectors already computed (``None`` for BM25), e.g. by a micro-batcher."""
        mode = self.resolve_mode(mode)
        _check(queries, k, mode)
        if mode != "bm25" and not self.dense:
            raise UsageError(f"index {self.name!r} is BM25-only: use --mode bm25")
        k = min(k, self.size)
        depth = max(k, HYBRID_DEPTH) if mode == "hybrid" else k
        dense = self._dense(xq, depth, nprobe, ef_search) if mode != "bm25" else None
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

    def _dense(self, xq: np.ndarray, k: int, nprobe, ef_search) -> list[list[tuple[str, float, int]]]:
        import faiss

        params = None
        if nprobe is not None or ef_search is not None:
            params = faiss.ParameterSpace()
            for key, value in (("nprobe", nprobe), ("efSearch", ef_search)):
                if value is not None:
                    params.set_index_parameter(self.faiss, key, value)
        # Several chunks of one document may rank high: fetch more chunks than documents wanted.
        fetch = min(self.faiss.ntotal, k * 4 if len(self._rows) > self.size else k)
        D, I = self.faiss.search(np.ascontiguousarray(xq, dtype=np.float32), fetch)  # (nq, fetch)
        results = []
        for scores, rows in zip(D, I):
            best: dict[str, tuple[float, int]] = {}
            for score, row in zip(scores, rows):
                if row < 0:
                    continue
                doc, chunk = self._rows[row][0], self._rows[row][1]
                if doc not in best:
                    best[doc] = (float(score), chunk)
            results.append([(doc, s, c) for doc, (s, c) in best.items()][:k])
        return results

    def _sparse(self, queries: Sequence[str], k: int) -> list[list[tuple[str, float]]]:
        return self.bm25().search(list(queries), k)

    def _hit(self, doc: str, score: float, chunk: int | None) -> Hit:
        title, text = self._docs[doc]
        if chunk is not None and len(self._rows) > self.size:  # chunked: show the matching chunk
            span = next((r for r in self._chunk_index().get(doc, []) if r[1] == chunk), None)
            if span is not None:
                content = f"{title} {text}".strip() if title else text
                text = content[span[2] : span[3]]
        return Hit(doc, float(score), title, text, chunk)

    def _chunk_index(self) -> dict[str, list[tuple]]:
        if not hasattr(self, "_by_doc"):
            by_doc: dict[str, list[tuple]] = {}
            for r in self._rows:
                by_doc.setdefault(r[0], []).append(r)
            self._by_doc = by_doc
        return self._by_doc


def _check(queries: Sequence[str], k: int, mode: str) -> None:
    if mode not in MODES:
        raise UsageError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    if k <= 0:
        raise UsageError(f"k must be positive, got {k}")
    if isinstance(queries, str):
        raise UsageError("queries must be a list of strings")
    if any(not q.strip() for q in queries):
        raise UsageError("empty query")


def load_index_encoder(manifest: dict, **overrides):
    """Load the encoder an index manifest records, with its settings, and check it is the same."""
    from .encoder import load_encoder

    recorded = manifest["encoder"]
    settings = {k: recorded[k] for k in ("pooling", "max_length", "causal", "normalize", "query_instruction",
                                         "document_instruction") if k in recorded}
    enc = load_encoder(recorded["spec"], **{**settings, **overrides})
    check_encoder(manifest, enc)
    return enc


def check_encoder(manifest: dict, encoder) -> None:
    """Refuse an encoder other than the one that built the index, naming the settings that differ."""
    recorded = manifest["encoder"]
    if encoder.fingerprint != recorded["fingerprint"]:
        found = encoder.identity()
        keys = ("pooling", "causal", "max_length", "normalize", "document_instruction", "dim")
        diffs = [f"{k}: {recorded.get(k)!r} != {found.get(k)!r}" for k in keys if recorded.get(k) != found.get(k)]
        raise IndexStateError(f"index {manifest['name']!r} was built with a different encoder "
                              f"({'; '.join(diffs) or 'different weights or adapters'})")


def resolve_index_name(name: str | None, index_dir: str | Path | None = None) -> str:
    """``name``, or the only finished index in the index home (an error naming them otherwise)."""
    if name is not None:
        return name
    home = index_home(index_dir)
    found = list_indexes(home)
    if len(found) != 1:
        names = ", ".join(m["name"] for m in found) or "none"
        raise UsageError(f"{len(found)} indexes in {home} ({names}): choose one with --index")
    return found[0]["name"]
