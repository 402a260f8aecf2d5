"""Token and word representations: the per-token hidden states of an encoder, with character spans.

    text ─ tokenizer (offsets) ─ windows of max_length ─ model ─ hidden_states[layer] ─ (T, dim)
    words ─ " ".join ─ the same ─ tokens overlapping each word's span ─ first | mean ─ (W, dim)

Pre-split words are joined with single spaces and aligned to tokens by the character offsets
the tokenizer reports (a token belongs to every word its span overlaps), never by tokenizing
words one by one, which would change how a BPE splits them. A text longer than the encoder's
max length is encoded in overlapping windows (half a window of overlap), each token taken from
the window where it has the most context, and counted in ``encoder.stats.windowed``: nothing is
cut off.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch

from .encoder import plan_batches
from .errors import ModelError, UsageError

log = logging.getLogger(__name__)

WORD_POOLING = ("first", "mean")


@dataclasses.dataclass(frozen=True)
class TokenStates:
    """One text's representations: tokens (or the given words), their spans and vectors."""

    text: str  # the text encoded (pre-split words joined by single spaces)
    tokens: list[str]  # the tokenizer's pieces, or the words given
    spans: list[tuple[int, int]]  # character spans: text[start:end] is what each token or word covers
    vectors: np.ndarray  # (T, dim) float32, hidden states of the chosen layer (not normalized)
    alignment: list[list[int]] | None = None  # words only: the positions of each word's tokens
    windows: int = 1  # forward passes the text took (> 1: longer than max_length)


def num_layers(encoder) -> int:
    return int(encoder.model.config.get_text_config().num_hidden_layers)


def resolve_layer(encoder, layer: int) -> int:
    """A ``hidden_states`` index (0: embeddings, L: last layer; negative from the end) as 0..L."""
    n = num_layers(encoder)
    if not -(n + 1) <= layer <= n:
        raise UsageError(f"layer {layer} does not exist: this model has hidden states 0 (embeddings) to {n} "
                         f"(last), or -1 to -{n + 1} from the end")
    return layer % (n + 1)


def join_words(words: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """The text of pre-split words joined by single spaces, and each word's character span."""
    spans, pos = [], 0
    for w in words:
        spans.append((pos, pos + len(w)))
        pos += len(w) + 1
    return " ".join(words), spans


def align_words(word_spans: Sequence[tuple[int, int]], token_spans: Sequence[tuple[int, int]]) -> list[list[int]]:
    """For each word span, the tokens whose spans overlap it (both sorted by start)."""
    out: list[list[int]] = [[] for _ in word_spans]
    t0 = 0
    for w, (ws, we) in enumerate(word_spans):
        while t0 < len(token_spans) and token_spans[t0][1] <= ws:
            t0 += 1  # tokens wholly before this word cannot overlap any later word
        t = t0
        while t < len(token_spans) and token_spans[t][0] < we:
            if token_spans[t][1] > ws and token_spans[t][1] > token_spans[t][0]:
                out[w].append(t)
            t += 1
    return out


def windows(n: int, size: int) -> list[tuple[int, int]]:
    """Token ranges covering ``n`` tokens in windows of ``size`` that overlap by half a window."""
    if n <= size:
        return [(0, n)] if n else []
    step = max(1, size // 2)
    starts = list(range(0, n - size, step)) + [n - size]
    return [(s, s + size) for s in starts]


def owner_windows(n: int, wins: Sequence[tuple[int, int]], causal: bool) -> np.ndarray:
    """For each token, the window it is taken from: the one with the most context around it
    (causal attention: the most context on its left, the only side it sees)."""
    best = np.zeros(n, dtype=np.int64)
    score = np.full(n, -1)
    pos = np.arange(n)
    for k, (s, e) in enumerate(wins):
        inside = (pos >= s) & (pos < e)
        ctx = pos - s if causal else np.minimum(pos - s, e - 1 - pos)
        better = inside & (ctx > score)
        best[better], score[better] = k, ctx[better]
    return best


@torch.inference_mode()
def encode_tokens(
    encoder,
    inputs: Sequence[str] | Sequence[Sequence[str]],
    *,
    layer: int = -1,
    word_pooling: str = "first",
    instruction: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[TokenStates]:
    """Per-token (texts) or per-word (lists of words) hidden states of ``encoder``, in input order.

    ``layer`` indexes ``hidden_states`` (0: embeddings, -1: the last layer, as pooled);
    ``word_pooling`` makes one vector of a word's tokens: ``first`` or ``mean``. An
    ``instruction`` is attended to but returns no vectors. ``progress(n_texts, n_tokens)`` per batch.
    """
    if isinstance(inputs, str):
        raise UsageError("encode_tokens() takes a list of texts (or of word lists), not a single string")
    if word_pooling not in WORD_POOLING:
        raise UsageError(f"unknown word pooling {word_pooling!r}; valid: {', '.join(WORD_POOLING)}")
    if not getattr(encoder.tokenizer, "is_fast", False):
        raise ModelError("token spans need a fast tokenizer (character offsets); this model's is not")
    layer = resolve_layer(encoder, layer)
    texts, word_spans = [], []
    for i, item in enumerate(inputs):
        if isinstance(item, str):
            texts.append(item)
            word_spans.append(None)
        elif isinstance(item, Sequence) and all(isinstance(w, str) for w in item):
            if any(not w.strip() for w in item):
                raise UsageError(f"input {i}: words must not be empty or whitespace")
            text, spans = join_words(item)
            texts.append(text)
            word_spans.append(spans)
        else:
            raise UsageError(f"input {i}: expected a text or a list of words, got {type(item).__name__}")
    if not texts:
        return []

    tok = encoder.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    ids_all, offsets_all = tok["input_ids"], [[tuple(o) for o in offs] for offs in tok["offset_mapping"]]
    head = encoder._prefix + (encoder._ids([instruction])[0] if instruction else [])
    size = encoder.config.max_length - len(head) - len(encoder._suffix)
    if size < 2:
        raise UsageError(f"the instruction alone fills max_length={encoder.config.max_length} tokens")
    # One sequence per window: (text, window number, window start, window end).
    text_windows = [windows(len(ids), size) for ids in ids_all]
    pieces = [(t, k, s, e) for t, wins in enumerate(text_windows) for k, (s, e) in enumerate(wins)]
    seqs = [head + ids_all[t][s:e] + encoder._suffix for t, _, s, e in pieces]
    starts = [len(head)] * len(seqs)
    states = [np.zeros((len(ids), encoder.dim), dtype=np.float32) for ids in ids_all]
    owners = [owner_windows(len(ids), wins, encoder.config.causal) for ids, wins in zip(ids_all, text_windows)]

    was_training = encoder.model.training
    encoder.model.eval()
    try:
        for rows in plan_batches([len(s) for s in seqs], encoder.batch_tokens, encoder.config.max_batch_size):
            batch = encoder._collate(seqs, starts, rows)
            hidden = _hidden_states(encoder, batch, layer)  # (B, T, H)
            for r, p in enumerate(rows):
                t, k, s, e = pieces[p]
                h = hidden[r, len(head) : len(head) + (e - s)].float().cpu().numpy()
                mine = owners[t][s:e] == k  # the tokens this window is best placed to represent
                states[t][s:e][mine] = h[mine]
            n_tok = int(batch.attention_mask.sum())
            encoder.stats.tokens += n_tok
            encoder.stats.padded_tokens += batch.input_ids.numel()
            if progress:
                progress(len({pieces[p][0] for p in rows}), n_tok)
    finally:
        encoder.model.train(was_training)
    encoder.stats.texts += len(texts)
    long = sum(len(w) > 1 for w in text_windows)
    if long:
        encoder.stats.windowed += long
        log.warning("%d of %d texts were longer than max_length=%d tokens and were encoded in overlapping windows",
                    long, len(texts), encoder.config.max_length)

    out = []
    for t, text in enumerate(texts):
        pieces_t = encoder.tokenizer.convert_ids_to_tokens(ids_all[t])
        if word_spans[t] is None:
            out.append(TokenStates(text, pieces_t, offsets_all[t], states[t], None, len(text_windows[t])))
            continue
        alignment = align_words(word_spans[t], offsets_all[t])
        for w, toks in enumerate(alignment):
            if not toks:
                s, e = word_spans[t][w]
                raise ModelError(f"input {t}: word {w} ({text[s:e]!r}) maps to no token (the tokenizer drops it)")
        if word_pooling == "first":
            vectors = states[t][[a[0] for a in alignment]]
        else:
            vectors = np.stack([states[t][a].mean(0) for a in alignment])
        words = [text[s:e] for s, e in word_spans[t]]
        out.append(TokenStates(text, words, list(word_spans[t]), vectors.astype(np.float32, copy=False),
                               alignment, len(text_windows[t])))
    return out


def _hidden_states(encoder, batch, layer: int) -> torch.Tensor:
    """Hidden states (B, T, H) of ``layer`` (0..L) for one batch."""
    last = layer == num_layers(encoder)
    out = encoder.model(input_ids=batch.input_ids.to(encoder.device),
                        attention_mask=batch.attention_mask.to(encoder.device), output_hidden_states=not last)
    if last:
        return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    return out.hidden_states[layer]
