"""BM25 with bm25s: English Snowball stemming and English stopwords, as BEIR baselines use."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path


def import_bm25s():
    """bm25s, its logger quieted: importing it sets the "bm25s" logger to DEBUG, which printed
    "DEBUG: Building index from IDs objects" in the middle of progress output."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


def _tokenize(texts: Sequence[str]):
    import Stemmer

    bm25s = import_bm25s()

    return bm25s.tokenize(list(texts), stopwords="en", stemmer=Stemmer.Stemmer("english"), show_progress=False)


class BM25Index:
    """A BM25 index over ``ids``/``texts``; ``search`` returns ``[(id, score), ...]`` per query,
    ``search_rows`` ``[(row, score), ...]`` (the position in ``ids``)."""

    def __init__(self, retriever, ids: list[str] | None):
        self.retriever, self.ids = retriever, ids

    @classmethod
    def build(cls, ids: Sequence[str], texts: Sequence[str]) -> BM25Index:
        bm25s = import_bm25s()
        retriever = bm25s.BM25()
        retriever.index(_tokenize(texts), show_progress=False)
        return cls(retriever, list(ids))

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.retriever.save(str(folder))
        (folder / "ids.json").write_text(json.dumps(self.ids), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path, ids: bool = True) -> BM25Index:
        """Load a saved index, its arrays memory-mapped; ``ids=False`` skips the ids (``search_rows`` only)."""
        bm25s = import_bm25s()
        doc_ids = json.loads((folder / "ids.json").read_text(encoding="utf-8")) if ids else None
        return cls(bm25s.BM25.load(str(folder), mmap=True), doc_ids)

    def search_rows(self, queries: Sequence[str], k: int = 10) -> list[list[tuple[int, float]]]:
        k = min(k, self.retriever.scores["num_docs"])
        if not queries or k <= 0:
            return [[] for _ in queries]
        docs, scores = self.retriever.retrieve(_tokenize(queries), k=k, show_progress=False)
        return [[(int(j), float(s)) for j, s in zip(row, srow) if s > 0] for row, srow in zip(docs, scores)]

    def search(self, queries: Sequence[str], k: int = 10) -> list[list[tuple[str, float]]]:
        return [[(self.ids[j], s) for j, s in hits] for hits in self.search_rows(queries, k)]
