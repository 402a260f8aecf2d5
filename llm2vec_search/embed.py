"""Documents -> token windows -> chunk rows (id, chunk, start, end, vector).

A long document is split into overlapping token windows that each fit the encoder, so nothing
is cut off; each window is embedded and becomes one chunk row. Where the rows go (shards of a
generation) is the store's business (store.py); which documents are embedded, and by which
process, is the build pipeline's (index.py).
"""

from __future__ import annotations

import dataclasses
import time

import pyarrow as pa

from .corpus import Record
from .errors import UsageError
from .protocols import ChunkingEncoder
from .store import DOCS_PER_SHARD, shard_schema


@dataclasses.dataclass(frozen=True)
class ChunkConfig:
    max_tokens: int | None = None  # window size in text tokens; None: all that fits beside the instruction
    overlap: int = 64  # tokens shared by consecutive windows
    docs_per_shard: int = DOCS_PER_SHARD  # documents per shard: the unit of work, resume and parallelism

    def __post_init__(self):
        if self.docs_per_shard < 1:
            raise UsageError(f"--docs-per-shard must be at least 1, got {self.docs_per_shard}")

    def windows(self) -> dict:
        """What decides the vectors of a document (the shard size does not)."""
        return {"max_tokens": self.max_tokens, "overlap": self.overlap}


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


def chunk_documents(encoder: ChunkingEncoder, texts: list[str], cfg: ChunkConfig) -> list[list[tuple[int, int]]]:
    """For each text, the (start, end) character spans to embed; nothing is cut off."""
    budget = encoder.text_budget(encoder.config.document_instruction or None)
    # A margin of 2 tokens: re-tokenizing a cut span may merge differently at its edges.
    window = min(cfg.max_tokens or budget, budget) - 2
    if window < 4:
        raise UsageError(f"chunk window of {window} tokens is too small (max_length {encoder.config.max_length})")
    overlap = min(cfg.overlap, window // 4)  # short windows (small max_length) keep most of their stride
    enc = encoder.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    return [chunk_spans(offsets, window, overlap) for offsets in enc["offset_mapping"]]


def embed_chunks(encoder: ChunkingEncoder, docs: pa.Table, cfg: ChunkConfig, progress=None) -> pa.Table:
    """The chunk rows (id, chunk, start, end, vector) of documents (id, title, text), in order."""
    ids = docs.column("id").to_pylist()
    titles = docs.column("title").to_pylist()
    texts = docs.column("text").to_pylist()
    contents = [Record(i, t, x).content for i, t, x in zip(ids, titles, texts)]
    spans = chunk_documents(encoder, contents, cfg)
    rows = [(ids[d], c, s, e) for d, doc_spans in enumerate(spans) for c, (s, e) in enumerate(doc_spans)]
    chunk_texts = [contents[d][s:e] for d, doc_spans in enumerate(spans) for (s, e) in doc_spans]
    vectors = encoder.encode_documents(chunk_texts, progress=(lambda n, t: progress(0, t)) if progress else None)
    return pa.Table.from_arrays(
        [pa.array([r[0] for r in rows], pa.string()), pa.array([r[1] for r in rows], pa.int32()),
         pa.array([r[2] for r in rows], pa.int32()), pa.array([r[3] for r in rows], pa.int32()),
         pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), vectors.shape[1])],
        schema=shard_schema(vectors.shape[1]),
    )


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
