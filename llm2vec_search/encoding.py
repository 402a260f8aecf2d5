"""What every encoder runtime shares, without torch: settings, tokenization with the instruction
kept out of pooling, and length-sorted batches under a token budget.

:class:`~llm2vec_search.encoder.Encoder` (torch) and :class:`~llm2vec_search.int8.Int8Encoder`
(ONNX Runtime) both build on :class:`Tokenized`, so a text becomes the same ids in either.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

from .devices import DTYPE_NAMES
from .errors import UsageError
from .manifest import fingerprint

POOLING_MODES = ("mean", "weighted_mean", "eos", "bos")
log = logging.getLogger("llm2vec_search.encoder")  # the name users and int8_build's calibration know


def checked_texts(texts) -> list[str]:
    """``texts`` as a list, refused with one line unless it is a sequence of strings."""
    if isinstance(texts, str):
        raise UsageError("encode() takes a list of texts, not a single string")
    texts = list(texts)
    for t in texts:
        if not isinstance(t, str):
            raise UsageError(f"texts must be strings, got {type(t).__name__}")
    return texts


def warn_truncated(cut: int, total: int, max_length: int) -> None:
    if cut > 0:
        log.warning("%d of %d texts were longer than max_length=%d tokens and were truncated", cut, total, max_length)


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    pooling: str = "mean"  # one of POOLING_MODES
    max_length: int = 512  # tokens per sequence, instruction and special tokens included
    normalize: bool = True  # L2-normalize embeddings (inner product == cosine)
    causal: bool = False  # keep the LLM's causal attention (the paper's "Uni" baseline)
    query_instruction: str = ""  # attended to, excluded from pooling
    document_instruction: str = ""
    dtype: str = "auto"  # auto: bf16 on CUDA and on CPUs where it measures faster than fp32, else fp32;
    # int8: ONNX Runtime, weights and activations in int8 (int8.py)
    device: str = "auto"  # auto: cuda if available, else cpu
    # Padded tokens per forward pass; None: 4096 on a CPU (cache-friendly: 10% more tokens/s than
    # 8192 on a 2-core EPYC, benchmarks/README.md) and 16384 on a GPU; never below max_length.
    batch_tokens: int | None = None
    max_batch_size: int = 128
    attn_implementation: str | None = None  # None: transformers' default (sdpa where supported)
    trust_remote_code: bool = False

    def __post_init__(self):
        if self.pooling not in POOLING_MODES:
            raise UsageError(f"unknown pooling {self.pooling!r}; valid pooling modes are: {', '.join(POOLING_MODES)}")
        if self.dtype != "auto" and self.dtype not in (*DTYPE_NAMES, "int8"):
            raise UsageError(f"unknown dtype {self.dtype!r}; valid: auto, {', '.join(DTYPE_NAMES)}, int8")
        if self.max_length < 8:
            raise UsageError(f"max_length must be at least 8 tokens, got {self.max_length}")
        if self.batch_tokens is not None and self.batch_tokens < self.max_length:
            raise UsageError(f"batch_tokens ({self.batch_tokens}) must be >= max_length ({self.max_length})")


@dataclasses.dataclass
class EncodeStats:
    texts: int = 0
    tokens: int = 0  # real tokens, instructions included
    padded_tokens: int = 0
    truncated: int = 0  # texts cut to max_length (reported, never silent)
    windowed: int = 0  # texts encoded token by token in overlapping windows (encode_tokens)


def plan_batches(lengths: Sequence[int], batch_tokens: int, max_batch_size: int) -> list[list[int]]:
    """Group indices, longest first, so that rows x longest row <= batch_tokens."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, current = [], []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]
        if current and ((len(current) + 1) * longest > batch_tokens or len(current) >= max_batch_size):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


class Tokenized:
    """Tokenization shared by the encoder runtimes. Needs ``tokenizer`` (called as Hugging Face's),
    ``config``, ``stats`` and the ``_prefix``/``_suffix`` special ids the tokenizer adds."""

    tokenizer: object
    config: EncoderConfig
    stats: EncodeStats
    _prefix: list[int]
    _suffix: list[int]

    def encode_queries(self, queries: Sequence[str], instruction: str | None = None, **kw):
        """Embed queries with ``instruction``, or this encoder's default query instruction."""
        return self.encode(queries, self.config.query_instruction if instruction is None else instruction, **kw)

    def encode_documents(self, docs: Sequence[str], **kw):
        return self.encode(docs, self.config.document_instruction or None, **kw)

    def _ids(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Token counts of ``texts`` alone (no instruction, no special tokens)."""
        return [len(x) for x in self._ids(texts)]

    def text_budget(self, instruction: str | None = None) -> int:
        """How many text tokens fit in one sequence next to ``instruction`` and special tokens."""
        n_instr = len(self._ids([instruction])[0]) if instruction else 0
        return self.config.max_length - n_instr - len(self._prefix) - len(self._suffix)

    def tokenize(
        self, texts: Sequence[str], instruction: str | Sequence[str | None] | None = None
    ) -> tuple[list[list[int]], list[int]]:
        """Sequences of ids and, for each, where the pooled text starts; truncation is counted.

        ``instruction`` is one string for all texts, or one (or None) per text.
        """
        per_text = [instruction] * len(texts) if instruction is None or isinstance(instruction, str) else instruction
        if len(per_text) != len(texts):
            raise UsageError(f"{len(per_text)} instructions for {len(texts)} texts")
        distinct = sorted({i for i in per_text if i})
        instr_ids = dict(zip(distinct, self._ids(distinct))) if distinct else {}
        seqs, starts = [], []
        for ids, instr in zip(self._ids(texts), per_text):
            head = self._prefix + instr_ids.get(instr, [])
            budget = self.config.max_length - len(head) - len(self._suffix)
            if budget < 1:
                raise UsageError(f"the instruction alone fills max_length={self.config.max_length} tokens")
            if len(ids) > budget:
                self.stats.truncated += 1
                ids = ids[:budget]
            seqs.append(head + ids + self._suffix)
            starts.append(len(head))
        return seqs, starts


def special_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """The ids the tokenizer itself adds around a text (e.g. Gemma's <bos>), found by asking it."""
    plain = tokenizer("x", add_special_tokens=False)["input_ids"]
    full = tokenizer("x", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return list(full[:start]), list(full[start + len(plain) :])
    return [], []


def identity_fingerprint(identity: dict) -> str:
    """The fingerprint of an encoder identity (``Encoder.identity()``): the weights (adapters by
    content hash, not path) and the settings, not the float dtype (bf16 and fp32 vectors are
    interchangeable, cosine >= 0.998)."""
    ident = {k: v for k, v in identity.items() if k != "dtype"}
    model = identity["model"]
    ident["model"] = {k: v for k, v in model.items() if k not in ("base", "spec")} | {
        "adapters": [a["sha256"] for a in model.get("adapters", [])]
    }
    return fingerprint([ident])
