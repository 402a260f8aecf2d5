"""Contrastive losses. Each core takes embeddings, so it can be tested on random tensors.

``scale`` is 1 / temperature: SimCSE's temperature 0.05 is ``scale=20``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F


class InfoNCE(torch.nn.Module):
    """In-batch contrastive loss with optional hard negatives.

    ``q`` (B, H) anchors; ``d`` (B, H) their positives; ``negatives`` (B*n, H) or None.
    Row i's target is column i of ``[d; negatives]``: every other positive in the batch and
    every hard negative is a negative for it, except where ``exclude`` (B, B + B*n; bool) is
    True: those candidates (documents judged relevant to the anchor) drop out of its softmax.
    Embeddings are cosine-normalised here.
    """

    def __init__(self, scale: float = 20.0):
        super().__init__()
        self.scale = scale

    def forward(self, q: torch.Tensor, d: torch.Tensor, negatives: torch.Tensor | None = None,
                exclude: torch.Tensor | None = None) -> torch.Tensor:
        candidates = d if negatives is None else torch.cat([d, negatives])
        logits = self.scale * (F.normalize(q.float(), dim=-1) @ F.normalize(candidates.float(), dim=-1).T)
        if exclude is not None:
            target = torch.eye(*logits.shape, dtype=torch.bool, device=logits.device)
            logits = logits.masked_fill(exclude & ~target, float("-inf"))  # never the anchor's own positive
        return F.cross_entropy(logits, torch.arange(len(q), device=q.device))


class RandContext:
    """Capture the RNG state now; ``with ctx:`` replays it (dropout draws repeat exactly)."""

    def __init__(self, device: torch.device):
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        self.device = device

    def __enter__(self):
        self._fork = torch.random.fork_rng(devices=[self.device] if self.cuda is not None else [])
        self._fork.__enter__()
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)

    def __exit__(self, *exc):
        self._fork.__exit__(*exc)


def cached_contrastive_backward(
    embed: Callable[[Sequence], torch.Tensor],
    views: Sequence[Sequence],
    loss_fn: Callable[..., torch.Tensor],
    mini_batch: int,
    device: torch.device = torch.device("cpu"),
) -> float:
    """GradCache (Gao et al., 2021): the gradient of a large-batch contrastive loss in bounded memory.

    ``views`` are the loss's inputs (e.g. queries, positives, negatives), each a sequence that
    ``embed`` maps to (len, H) embeddings with gradients. Three passes:
    1. embed every view in mini-batches without a graph, remembering each chunk's RNG state;
    2. compute the loss on those embeddings and its gradient with respect to them;
    3. re-embed each chunk with a graph (replaying its RNG state, so dropout masks repeat) and
       backpropagate the cached gradient into the model.
    Leaves parameter gradients identical to ``loss_fn(*[embed(v) for v in views]).backward()``.
    Returns the loss value.
    """
    chunks: list[list[tuple[Sequence, RandContext]]] = []
    reps = []
    for view in views:
        parts, embs = [], []
        for i in range(0, len(view), mini_batch):
            chunk = view[i : i + mini_batch]
            ctx = RandContext(device)
            with torch.no_grad():
                embs.append(embed(chunk))
            parts.append((chunk, ctx))
        chunks.append(parts)
        reps.append(torch.cat(embs).detach().requires_grad_())
    loss = loss_fn(*reps)
    loss.backward()
    for parts, rep in zip(chunks, reps):
        offset = 0
        for chunk, ctx in parts:
            grad = rep.grad[offset : offset + len(chunk)]
            offset += len(chunk)
            with ctx:
                emb = embed(chunk)
            emb.backward(grad)
    return float(loss.detach())
