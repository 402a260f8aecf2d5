"""Pool token states into one vector per text, over real (non-instruction, non-padding) tokens.

Every function takes ``hidden`` (B, T, H) and ``mask`` (B, T) with 1 for the tokens to pool and
0 for padding and instruction tokens, whatever side the padding is on, and returns (B, H).
"""

from __future__ import annotations

import torch

from .encoding import POOLING_MODES


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    if mode not in POOLING_MODES:
        raise ValueError(f"unknown pooling {mode!r}; valid pooling modes are: {', '.join(POOLING_MODES)}")
    hidden = hidden.float()
    mask = mask.to(hidden.dtype)
    if mode == "mean":
        return (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
    if mode == "weighted_mean":
        # SGPT's position weights: the k-th pooled token weighs k, so later tokens (which have
        # seen more context in a causal model) count more.
        weights = mask.cumsum(1) * mask
        return (hidden * weights.unsqueeze(-1)).sum(1) / weights.sum(1, keepdim=True).clamp(min=1)
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    if mode == "eos":  # last pooled token
        index = torch.where(mask > 0, positions, -1).amax(1)
    else:  # "bos": first pooled token
        index = torch.where(mask > 0, positions, mask.shape[1]).amin(1)
    index = index.clamp(0, mask.shape[1] - 1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]
