"""Step 1 of LLM2Vec: let every token attend to every other token.

Transformers decides the attention mask from the config: with ``config.is_causal = False`` its
mask builders (``create_causal_mask`` and ``create_sliding_window_causal_mask``) return a
bidirectional mask (padding still masked; sliding-window layers get a symmetric window), and
the eager, sdpa, flex and flash attention paths follow it. So no modeling code is copied or
patched here: we switch the public flag, then *check* on a probe input that the first token's
state depends on the last one, and refuse the model if it does not.
"""

from __future__ import annotations

import torch

from .errors import ModelError

# Families checked by tests/test_bidirectional.py with every attention implementation present.
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text")


def text_config(config):
    """The decoder's config (multimodal configs nest it as ``text_config``)."""
    return getattr(config, "text_config", None) or config


def check_supported(config) -> None:
    model_type = text_config(config).model_type
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelError(
            f"architecture {model_type!r} is not supported for bidirectional attention; supported: "
            f"{', '.join(SUPPORTED_MODEL_TYPES)} (or pass --causal to keep the model causal)"
        )


def set_bidirectional(model: torch.nn.Module, enabled: bool = True, verify: bool = True) -> None:
    """Switch ``model`` (a transformers decoder, possibly wrapped by peft) to bidirectional attention.

    ``enabled=False`` restores causal attention (the paper's "Uni" baseline).
    """
    config = model.config
    if enabled:
        check_supported(config)
    for cfg in {id(config): config, id(text_config(config)): text_config(config)}.values():
        cfg.is_causal = not enabled
    if verify:
        if is_bidirectional(model) != enabled:
            state = "bidirectional" if enabled else "causal"
            raise ModelError(f"{text_config(config).model_type}: could not make the model {state}")


@torch.inference_mode()
def is_bidirectional(model: torch.nn.Module) -> bool:
    """Probe: does changing the last token change the first token's hidden state?"""
    device = next(model.parameters()).device
    vocab = text_config(model.config).vocab_size
    ids = torch.arange(3, 9, device=device).remainder(vocab).unsqueeze(0)  # (1, 6)
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % vocab
    mask = torch.ones_like(ids)
    was_training = model.training
    model.eval()
    try:
        a = _hidden(model, ids, mask)[0, 0].float()
        b = _hidden(model, changed, mask)[0, 0].float()
    finally:
        model.train(was_training)
    return not torch.allclose(a, b, atol=1e-5, rtol=0)


def _hidden(model, ids, mask):
    out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    return out.hidden_states[-1] if getattr(out, "hidden_states", None) else out.last_hidden_state
