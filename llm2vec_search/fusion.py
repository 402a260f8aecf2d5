"""Hybrid search: fuse a dense ranking and a BM25 ranking of the same query into one.

- ``rrf``: reciprocal rank fusion, score = sum over lists of 1 / (``rrf_k`` + rank) (Cormack et
  al., 2009). Needs no scores, but gives both lists equal say: where one side is much weaker, the
  fusion falls below the better side alone (SQuAD dev's val half with v4: RRF 0.811 against BM25's 0.875).
- ``convex``: ``alpha * dense + (1 - alpha) * bm25`` over scores min-max normalized per query and
  list (Bruch et al., 2023, "An Analysis of Fusion Functions for Hybrid Retrieval": a convex
  combination with a tuned weight beats RRF in and out of domain, and needs few examples to tune).
  The minimum and maximum are those of each list's top ``norm_depth`` (100) hits, lower scores
  count 0, and so does a document missing from a list: the fused top of the ranking is the same
  whether 10 hits are asked for (the lists are 100 deep) or 1,000 (as ``eval`` asks).

The defaults were chosen on validation splits only (``benchmarks/fusion_sweep.py``; numbers in
``benchmarks/README.md``).

Rankings are lists of ``(doc id, score, chunk)`` in rank order; so is the fused result.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from .errors import UsageError

FUSIONS = ("rrf", "convex")
Ranked = Sequence[tuple[str, float, "int | None"]]


@dataclasses.dataclass(frozen=True)
class Fusion:
    method: str = "convex"  # rrf | convex
    alpha: float = 0.4  # convex: the dense side's weight (BM25 gets 1 - alpha); chosen on validation splits
    rrf_k: int = 60  # rrf: rank offset (Cormack et al., 2009)
    norm_depth: int = 100  # convex: min-max statistics over each list's top norm_depth hits

    def __post_init__(self):
        if self.method not in FUSIONS:
            raise UsageError(f"unknown fusion {self.method!r}; valid fusions are: {', '.join(FUSIONS)}")
        if not 0.0 <= self.alpha <= 1.0:
            raise UsageError(f"--alpha must be between 0 and 1, got {self.alpha}")
        if self.rrf_k < 1 or self.norm_depth < 1:
            raise UsageError(f"rrf_k and norm_depth must be >= 1, got {self.rrf_k}, {self.norm_depth}")

    def describe(self) -> str:
        return f"convex(alpha={self.alpha:g})" if self.method == "convex" else f"rrf(k={self.rrf_k})"


DEFAULT_FUSION = Fusion()


def fuse(dense: Ranked, sparse: Ranked, fusion: Fusion = DEFAULT_FUSION) -> list[tuple[str, float, int | None]]:
    """One ranking from the two: best first; equal scores keep dense order, then BM25 order."""
    scores: dict[str, float] = {}
    chunk: dict[str, int | None] = {}
    if fusion.method == "rrf":
        parts = [(dense, lambda rank, _: 1.0 / (fusion.rrf_k + rank)),
                 (sparse, lambda rank, _: 1.0 / (fusion.rrf_k + rank))]
    else:
        parts = [(dense, _minmax(dense, fusion.alpha, fusion.norm_depth)),
                 (sparse, _minmax(sparse, 1.0 - fusion.alpha, fusion.norm_depth))]
    for ranking, score_of in parts:
        for rank, (doc, score, c) in enumerate(ranking, 1):
            scores[doc] = scores.get(doc, 0.0) + score_of(rank, score)
            chunk.setdefault(doc, c)
    order = sorted(scores, key=lambda d: -scores[d])  # stable: ties keep insertion order
    return [(d, scores[d], chunk[d]) for d in order]


def _minmax(ranking: Ranked, weight: float, depth: int):
    """``weight`` times the score scaled to [0, 1] by the top ``depth`` hits' minimum and maximum
    (lower scores clipped to 0; all 1 when those scores are equal)."""
    if not ranking:
        return lambda rank, score: 0.0
    values = [s for _, s, _ in ranking[:depth]]
    lo, hi = min(values), max(values)
    if hi <= lo:
        return lambda rank, score: weight if rank <= depth else 0.0
    return lambda rank, score: weight * min(1.0, max(0.0, (score - lo) / (hi - lo)))
