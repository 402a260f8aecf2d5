"""The encoder as the rest of the pipeline sees it (as mteb's ``Encoder`` protocol).

Search and the server only embed queries; indexing embeds documents in token windows, so it also
needs the tokenizer. :class:`~llm2vec_search.encoder.Encoder` implements both; anything else with
these members (a toy model in a test, a remote embedding service) can stand in for it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from .encoder import EncoderConfig


@runtime_checkable
class TextEncoder(Protocol):
    """Embeds queries and documents into one space: float32 (N, dim), rows in input order."""

    config: EncoderConfig  # its settings: default instructions, max length, pooling, normalization

    @property
    def dim(self) -> int: ...

    @property
    def fingerprint(self) -> str:
        """Names the weights and settings: an index refuses query vectors of another encoder."""
        ...

    def identity(self) -> dict[str, Any]:
        """What the index manifest records of the encoder (model, pooling, instructions, dim...)."""
        ...

    def encode_queries(self, queries: Sequence[str], instruction: str | None = None) -> np.ndarray:
        """``instruction`` None: the encoder's default query instruction."""
        ...

    def encode_documents(self, docs: Sequence[str]) -> np.ndarray: ...


@runtime_checkable
class ChunkingEncoder(TextEncoder, Protocol):
    """A :class:`TextEncoder` whose token budget indexing can cut long documents to."""

    tokenizer: Any  # a Hugging Face tokenizer: character offsets of each token

    def text_budget(self, instruction: str | None = None) -> int:
        """Tokens left for the text once the instruction and special tokens are counted."""
        ...

    def encode_documents(self, docs: Sequence[str], *,
                         progress: Callable[[int, int], None] | None = None) -> np.ndarray: ...
