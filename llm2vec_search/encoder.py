"""The LLM2Vec encoder: a bidirectional decoder LLM with instruction-aware pooling.

    texts ─ tokenizer ─┐
    instruction ───────┴─ [specials | instruction ids | text ids | specials] ─ model ─ pool(text ids) ─ L2

The instruction and the text are tokenized separately and their ids concatenated, so the
pooling mask is exact (no separator strings). Batches are formed from texts sorted by token
count under a padded-token budget, which removes almost all padding work.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch

from . import lite
from .bidirectional import set_bidirectional
from .devices import DTYPE_NAMES, cpu_has_fast_bf16, select_device, select_dtype  # noqa: F401 (re-exported)
from .encoding import (  # noqa: F401 (re-exported: their home before encoding.py)
    POOLING_MODES,
    EncoderConfig,
    EncodeStats,
    Tokenized,
    checked_texts,
    identity_fingerprint,
    plan_batches,
    special_tokens,
    warn_truncated,
)
from .errors import UsageError
from .models import DEFAULT_ENCODER, ModelSource, load_model_and_tokenizer, quiet_peft, resolve  # noqa: F401 (re-exported)
from .pooling import pool

log = logging.getLogger(__name__)



@dataclasses.dataclass(frozen=True)
class Batch:
    order: list[int]  # positions in the input of each row
    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T) 1 = real token
    pool_mask: torch.Tensor  # (B, T) 1 = token pooled (text, not instruction)


class Encoder(Tokenized):
    """A decoder LLM turned text encoder. Build with :func:`load_encoder`."""

    def __init__(self, model, tokenizer, config: EncoderConfig, source: ModelSource | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.source = source
        self.device = next(model.parameters()).device
        default_tokens = 16384 if self.device.type == "cuda" else 4096
        self.batch_tokens = max(config.batch_tokens or default_tokens, config.max_length)
        self.dtype = next(model.parameters()).dtype
        self.stats = EncodeStats()
        self._prefix, self._suffix = special_tokens(tokenizer)
        if config.pooling == "eos" and tokenizer.eos_token_id is not None and not self._suffix:
            self._suffix = [tokenizer.eos_token_id]  # eos pooling needs an EOS token to pool
        self._pad_id = next(i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if i is not None)
        self._compiled = None  # a CompiledForward once compile() succeeded

    # -- identity ---------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self.model.config.get_text_config().hidden_size)

    @functools.cached_property
    def _model_identity(self) -> dict[str, Any]:
        """The weights' identity, taken once: the weights in memory do not change with the files."""
        if self.source is None:
            return {"spec": type(self.model).__name__}
        return {**self.source.identity(), "weights_sha256": self.source.weights_sha256()}

    def identity(self) -> dict[str, Any]:
        """What determines the vectors: weights, pooling, attention, length and instructions."""
        c = self.config
        return {
            "model": dict(self._model_identity),
            "pooling": c.pooling,
            "causal": c.causal,
            "max_length": c.max_length,
            "normalize": c.normalize,
            "query_instruction": c.query_instruction,
            "document_instruction": c.document_instruction,
            "dim": self.dim,
            "dtype": str(self.dtype).removeprefix("torch."),
        }

    @property
    def fingerprint(self) -> str:
        return identity_fingerprint(self.identity())

    # -- tokenization -----------------------------------------------------------------------
    def _collate(self, seqs, starts, rows: list[int]) -> Batch:
        width = max(len(seqs[i]) for i in rows)
        ids = torch.full((len(rows), width), self._pad_id, dtype=torch.long)
        attn = torch.zeros((len(rows), width), dtype=torch.long)
        pool_mask = torch.zeros((len(rows), width), dtype=torch.long)
        pool_suffix = self.config.pooling == "eos"  # eos pools the appended EOS token
        for r, i in enumerate(rows):
            n = len(seqs[i])
            ids[r, :n] = torch.tensor(seqs[i])
            attn[r, :n] = 1
            pool_mask[r, starts[i] : n - (0 if pool_suffix else len(self._suffix))] = 1
        return Batch(rows, ids, attn, pool_mask)

    def batches(self, texts: Sequence[str], instruction: str | None = None) -> Iterable[Batch]:
        seqs, starts = self.tokenize(texts, instruction)
        for rows in plan_batches([len(s) for s in seqs], self.batch_tokens, self.config.max_batch_size):
            yield self._collate(seqs, starts, rows)

    # -- encoding ---------------------------------------------------------------------------
    def forward_texts(
        self, texts: Sequence[str], instruction: str | Sequence[str | None] | None = None
    ) -> torch.Tensor:
        """Pooled embeddings (B, H) of ``texts`` in input order, one padded batch, with gradients (training)."""
        seqs, starts = self.tokenize(texts, instruction)
        batch = self._collate(seqs, starts, list(range(len(seqs))))
        self.stats.tokens += int(batch.attention_mask.sum())
        return self.forward(batch)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Pooled (not normalized) embeddings of one batch, float32 (B, H); gradients flow."""
        hidden = None if self._compiled is None else self._compiled(batch.input_ids, batch.attention_mask)
        if hidden is None:  # eager: not compiled, or a batch outside the compiled shapes, or training
            out = self.model(
                input_ids=batch.input_ids.to(self.device), attention_mask=batch.attention_mask.to(self.device)
            )
            hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return pool(hidden, batch.pool_mask.to(self.device), self.config.pooling)

    def compile(self, lengths: Sequence[int] | None = None, max_rows: int = 32, backend: str = "inductor"):
        """torch.compile the forward for batches of up to ``max_rows`` texts of at most ``max(lengths)``
        tokens (padded up to the nearest of ``lengths``, default 16, 32, 64, 128), warmed up here
        (minutes on a CPU); other batches stay eager. Returns the
        :class:`~llm2vec_search.compiled.CompiledForward` (``.seconds``, ``.summary``), or None when
        compilation failed: one warning is logged and the eager forward is kept."""
        from .compiled import LENGTHS, compile_forward

        self._compiled = compile_forward(self.model, self._pad_id, lengths=lengths or LENGTHS, max_rows=max_rows,
                                         max_length=self.config.max_length, backend=backend)
        return self._compiled

    @torch.inference_mode()
    def encode(
        self,
        texts: Sequence[str],
        instruction: str | None = None,
        *,
        normalize: bool | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """Embed ``texts`` (float32, (N, dim), input order). ``progress(n_texts, n_tokens)`` per batch."""
        texts = checked_texts(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        normalize = self.config.normalize if normalize is None else normalize
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        was_training = self.model.training
        self.model.eval()
        truncated_before = self.stats.truncated
        try:
            for batch in self.batches(texts, instruction):
                emb = self.forward(batch)
                if normalize:
                    emb = torch.nn.functional.normalize(emb, dim=-1)
                out[batch.order] = emb.cpu().numpy()
                n_tok = int(batch.attention_mask.sum())
                self.stats.texts += len(batch.order)
                self.stats.tokens += n_tok
                self.stats.padded_tokens += batch.input_ids.numel()
                if progress:
                    progress(len(batch.order), n_tok)
        finally:
            self.model.train(was_training)
        warn_truncated(self.stats.truncated - truncated_before, len(texts), self.config.max_length)
        return out

    def encode_tokens(self, inputs, *, layer: int = -1, word_pooling: str = "first",
                      instruction: str | None = None, progress=None) -> list:
        """Per-token hidden states of texts, or per-word ones of pre-split word lists, with
        character spans: see :func:`llm2vec_search.tokens.encode_tokens`."""
        from .tokens import encode_tokens

        return encode_tokens(self, inputs, layer=layer, word_pooling=word_pooling, instruction=instruction,
                             progress=progress)



def load_encoder(spec: str = DEFAULT_ENCODER, **overrides: Any):
    """Load an encoder from a ``--model`` spec; ``overrides`` are :class:`EncoderConfig` fields.

    Defaults come from the encoder's manifest when the spec names a trained encoder. ``dtype="int8"``
    gives an :class:`~llm2vec_search.int8.Int8Encoder` (ONNX Runtime), built and cached on first use.
    """
    source = resolve(spec)
    defaults = {}
    if source.encoder:
        fields = {f.name for f in dataclasses.fields(EncoderConfig)}
        defaults = {k: v for k, v in source.encoder.get("encoder", {}).items() if k in fields}
    config = EncoderConfig(**{**defaults, **{k: v for k, v in overrides.items() if v is not None}})
    if config.dtype == "int8":
        return _load_int8(source, config)
    return _load_torch(source, config)


def _load_torch(source: ModelSource, config: EncoderConfig) -> Encoder:
    device = select_device(config.device)
    dtype = select_dtype(config.dtype, device)
    entry = _lite_entry(source, config, device)
    if entry is not None and (loaded := lite.load(entry, dtype)) is not None:
        return Encoder(*loaded, config, source)  # the same bits without importing transformers (lite.py)
    model, tokenizer = load_model_and_tokenizer(
        source, dtype=dtype, device=device, attn_implementation=config.attn_implementation,
        trust_remote_code=config.trust_remote_code,
    )
    model.eval()
    set_bidirectional(model, enabled=not config.causal)
    if entry is not None:
        lite.leave_record(entry, model, tokenizer)
    return Encoder(model, tokenizer, config, source)


def _lite_entry(source: ModelSource, config: EncoderConfig, device: torch.device):
    """The merged entry a :mod:`~llm2vec_search.lite` forward may run, where the settings allow one."""
    if not source.adapters or device.type != "cpu" or config.causal or config.trust_remote_code:
        return None
    if config.attn_implementation not in (None, "sdpa") or not lite.enabled():
        return None
    from .models import merged_dir

    return merged_dir(source)


def _load_int8(source: ModelSource, config: EncoderConfig):
    """The int8 encoder of ``source``: from the cache, or built from the fp32 model (once)."""
    from . import int8

    if config.device not in ("auto", "cpu"):
        raise UsageError(f"--dtype int8 runs on the CPU (ONNX Runtime): not with --device {config.device}")
    int8.onnxruntime_version()  # a clear line now if onnxruntime is missing
    identity = {"model": {**source.identity(), "weights_sha256": source.weights_sha256()},
                "pooling": config.pooling, "causal": config.causal}
    entry = int8.entry_dir(identity)
    if not int8.is_complete(entry):
        from .int8_build import build

        float_config = dataclasses.replace(config, dtype="fp32", device="cpu", attn_implementation="eager")
        build(_load_torch(source, float_config))
    return int8.Int8Encoder(entry, config, source)
