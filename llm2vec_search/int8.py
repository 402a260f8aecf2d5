"""int8 inference (``--dtype int8``): the encoder exported to ONNX, its weights quantized to int8
and its activations quantized per batch at run time, run by ONNX Runtime, whose int8 matrix
kernels use the CPU's int8 units (VNNI on AVX-512 CPUs, AMX-int8 on Sapphire Rapids).

    $L2V_SEARCH_HOME/int8/<key>/     one quantized encoder, complete once encoder.json is there
        model.onnx       input_ids, attention_mask, pool_mask -> pooled embedding (not normalized)
        tokenizer.json   the encoder's tokenizer (the Rust ``tokenizers`` file)
        encoder.json     model identity, pooling, attention, special tokens, quantization

The key names what shapes the graph: the weights and adapters, pooling, causal or bidirectional
attention, the quantization and the ONNX Runtime version. Building an entry needs torch
(:mod:`llm2vec_search.int8_build`); using one needs only onnxruntime, tokenizers and numpy, so
a query against an index built with ``--dtype int8`` imports neither torch nor transformers.

An int8 encoder's fingerprint differs from its float encoder's (its vectors differ a little), and
it keeps the float one as ``float_fingerprint``: a query may use either with a note (search.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .encoding import (
    EncoderConfig,
    EncodeStats,
    Tokenized,
    checked_texts,
    identity_fingerprint,
    plan_batches,
    warn_truncated,
)
from .errors import UsageError
from .manifest import fingerprint, read_json
from .models import home

# Dynamic quantization: int8 weights (per output channel), activations quantized per batch from
# their observed range; SmoothQuant first (int8_build.py), calibrated on the bundled sample corpus.
# Changing any of it changes every key and every int8 fingerprint.
QUANTIZATION = {"runtime": "onnxruntime", "method": "quantize_dynamic", "weights": "QInt8", "per_channel": True,
                "smoothquant_alpha": 0.75, "calibration": "sample corpus: 128 documents, 19 queries"}
CACHE_FORMAT = 2  # 2: the graph is saved optimized (int8_build.optimize_offline); changes keys only
META, MODEL, TOKENIZER = "encoder.json", "model.onnx", "tokenizer.json"
INSTALL = "int8 inference needs onnxruntime: pip install 'llm2vec-search[int8]'"


def onnxruntime_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("onnxruntime")
    except metadata.PackageNotFoundError:
        try:
            return metadata.version("onnxruntime-gpu")
        except metadata.PackageNotFoundError:
            raise UsageError(INSTALL) from None


def int8_fingerprint(float_fingerprint: str) -> str:
    """The fingerprint of the int8 encoder made from the float encoder ``float_fingerprint``."""
    return fingerprint([float_fingerprint, QUANTIZATION])


def graph_key(identity: dict[str, Any]) -> str:
    """The cache key of an encoder ``identity``: what its quantized graph depends on."""
    model = identity["model"]
    weights = {k: v for k, v in model.items() if k not in ("base", "spec", "adapters")}
    weights["adapters"] = [a["sha256"] for a in model.get("adapters", [])]
    return fingerprint([weights, identity["pooling"], bool(identity["causal"]), QUANTIZATION,
                        onnxruntime_version(), CACHE_FORMAT])


def entry_dir(identity: dict[str, Any]) -> Path:
    return home() / "int8" / graph_key(identity)


def is_complete(entry: Path) -> bool:
    return (entry / META).is_file()


class FastTokenizer:
    """A ``tokenizers.Tokenizer`` called as a Hugging Face tokenizer (ids and offsets only)."""

    def __init__(self, path: Path):
        from tokenizers import Tokenizer

        self.backend = Tokenizer.from_file(str(path))

    def __call__(self, texts: str | Sequence[str], add_special_tokens: bool = True,
                 return_offsets_mapping: bool = False) -> dict[str, list]:
        single = isinstance(texts, str)
        encs = self.backend.encode_batch([texts] if single else list(texts), add_special_tokens=add_special_tokens)
        out = {"input_ids": [e.ids for e in encs]}
        if return_offsets_mapping:
            out["offset_mapping"] = [list(e.offsets) for e in encs]
        return {k: v[0] for k, v in out.items()} if single else out


class Int8Encoder(Tokenized):
    """An encoder run by ONNX Runtime from an int8 cache entry; the same tokenization, batching and
    pooling as :class:`~llm2vec_search.encoder.Encoder`. Build with :func:`open_int8`."""

    device = "cpu"

    def __init__(self, entry: Path, config: EncoderConfig, source: Any = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise UsageError(INSTALL) from None
        meta = read_json(entry / META)
        if config.pooling != meta["pooling"] or config.causal != meta["causal"]:
            raise UsageError(f"the int8 model in {entry} was built for pooling {meta['pooling']!r}, causal "
                             f"{meta['causal']}; asked for {config.pooling!r}, {config.causal}")
        self.entry, self.config, self.meta, self.source = entry, config, meta, source
        self.tokenizer = FastTokenizer(entry / TOKENIZER)
        self._prefix, self._suffix, self._pad_id = meta["prefix"], meta["suffix"], meta["pad_id"]
        self.stats = EncodeStats()
        self.batch_tokens = max(config.batch_tokens or 4096, config.max_length)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: ORT's graph-fusion notices are not for users
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # optimized when built
        self.session = ort.InferenceSession(str(entry / MODEL), options, providers=["CPUExecutionProvider"])
        self.dtype = "int8"

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    def identity(self) -> dict[str, Any]:
        c = self.config
        return {"model": dict(self.meta["model"]), "pooling": c.pooling, "causal": c.causal,
                "max_length": c.max_length, "normalize": c.normalize, "query_instruction": c.query_instruction,
                "document_instruction": c.document_instruction, "dim": self.dim, "dtype": "int8",
                "quantization": dict(QUANTIZATION), "float_fingerprint": self.float_fingerprint}

    @property
    def float_fingerprint(self) -> str:
        """The fingerprint of the float encoder this one was quantized from."""
        c = self.config
        return identity_fingerprint({"model": self.meta["model"], "pooling": c.pooling, "causal": c.causal,
                                     "max_length": c.max_length, "normalize": c.normalize,
                                     "query_instruction": c.query_instruction,
                                     "document_instruction": c.document_instruction, "dim": self.dim})

    @property
    def fingerprint(self) -> str:
        return int8_fingerprint(self.float_fingerprint)

    def encode(self, texts: Sequence[str], instruction: str | Sequence[str | None] | None = None, *,
               normalize: bool | None = None, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Embed ``texts`` (float32, (N, dim), input order). ``progress(n_texts, n_tokens)`` per batch."""
        texts = checked_texts(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        normalize = self.config.normalize if normalize is None else normalize
        truncated_before = self.stats.truncated
        seqs, starts = self.tokenize(texts, instruction)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        suffix = 0 if self.config.pooling == "eos" else len(self._suffix)  # eos pools the appended EOS token
        for rows in plan_batches([len(s) for s in seqs], self.batch_tokens, self.config.max_batch_size):
            width = max(len(seqs[i]) for i in rows)
            ids = np.full((len(rows), width), self._pad_id, dtype=np.int64)
            attn = np.zeros((len(rows), width), dtype=np.int64)
            pool = np.zeros((len(rows), width), dtype=np.int64)
            for r, i in enumerate(rows):
                n = len(seqs[i])
                ids[r, :n], attn[r, :n], pool[r, starts[i] : n - suffix] = seqs[i], 1, 1
            emb = self.session.run(None, {"input_ids": ids, "attention_mask": attn, "pool_mask": pool})[0]
            if normalize:
                emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
            out[rows] = emb
            n_tok = int(attn.sum())
            self.stats.texts += len(rows)
            self.stats.tokens += n_tok
            self.stats.padded_tokens += ids.size
            if progress:
                progress(len(rows), n_tok)
        warn_truncated(self.stats.truncated - truncated_before, len(texts), self.config.max_length)
        return out


    def encode_tokens(self, *args, **kw):
        raise UsageError("token vectors (--tokens, eval words) need a float dtype: the int8 model returns "
                         "pooled embeddings only")


def open_int8(identity: dict[str, Any], config: EncoderConfig) -> Int8Encoder | None:
    """The int8 encoder of a recorded encoder ``identity`` (an index manifest's), if its entry is
    cached; None otherwise (building one needs the float model: ``load_encoder(dtype="int8")``)."""
    entry = entry_dir(identity)
    return Int8Encoder(entry, config) if is_complete(entry) else None


def write_meta(entry: Path, meta: dict[str, Any]) -> None:
    (entry / META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
